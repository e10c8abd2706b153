"""The HTTP relay: executes a decision, never makes policy.

Requests go to the upstream through corsproxy's own client (upstream.py); bodies stream both
ways with backpressure, and answers keep no header the upstream did not send. WebSockets are
tunnelled in websocket.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from aiohttp import web
from aiohttp.http import HttpVersion10
from multidict import CIMultiDict

from corsproxy import forwarding as fw
from corsproxy.cors import Decision, response_headers
from corsproxy.routes import Upstream
from corsproxy.upstream import UpstreamClient, UpstreamFailure, UpstreamResponse

log = logging.getLogger("corsproxy")

CHUNK = 64 * 1024
SMALL_BODY = 64 * 1024


@dataclass
class Exchange:
    """What happened to one request, for the access log and metrics."""

    method: str
    path: str
    peer: str
    route: str = "-"
    origin: str = ""
    verdict: str = "none"
    reason: str = ""
    status: int = 0
    upstream_status: int = 0
    bytes_out: int = 0
    error: str = ""
    kind: str = "none"  # preflight | actual | none, as in the decision
    upstream_error: str = ""  # a failure kind, for metrics
    request_id: str = ""
    body_error: fw.Failure | None = None
    # time.monotonic, not loop.time(): get_running_loop() costs a getpid() syscall.
    started: float = field(default_factory=time.monotonic)


class _NoInventedHeaders:
    """Mixed into aiohttp responses: no Content-Type or Server the upstream did not send."""

    _upstream_names: set[str]
    headers: CIMultiDict[str]

    async def _prepare_headers(self) -> None:
        await super()._prepare_headers()  # type: ignore[misc]
        for name in ("content-type", "server"):
            if name not in self._upstream_names:
                self.headers.popall(name, None)


class ProxyResponse(_NoInventedHeaders, web.StreamResponse):
    """A streamed upstream body."""

    def __init__(self, *, status: int, reason: str | None, upstream_names: set[str]) -> None:
        super().__init__(status=status, reason=reason)
        self._upstream_names = upstream_names


class SmallProxyResponse(_NoInventedHeaders, web.Response):
    """A whole small body: headers and body leave in one write."""

    def __init__(
        self, *, status: int, reason: str | None, body: bytes, upstream_names: set[str]
    ) -> None:
        super().__init__(status=status, reason=reason, body=body)
        self._upstream_names = upstream_names


class OwnResponse(web.Response):
    """An answer corsproxy writes itself: aiohttp's default `Server` header would name
    versions (Python, aiohttp) to every client, so it goes."""

    async def _prepare_headers(self) -> None:
        await super()._prepare_headers()
        self.headers.popall("server", None)


def error_response(failure: fw.Failure, decision: Decision | None) -> web.Response:
    """A proxy-generated error that carries CORS headers for an allowed origin."""
    base = [
        ("Content-Type", "text/plain; charset=utf-8"),
        ("X-Content-Type-Options", "nosniff"),
    ]
    headers = response_headers(decision, base) if decision is not None else base
    response = OwnResponse(status=failure.status, body=f"{failure.message}\n".encode())
    for name, value in headers:
        response.headers.add(name, value)
    if failure.status == 408:
        # RFC 9110 15.5.9: the server gave up waiting for the request; the rest of it (if it
        # ever comes) is not read.
        response.force_close()
    return response


class _Body:
    """The client's request body as the proxy reads it: the size limit, the read timeout
    between arrivals, and Kestrel's minimum data rate (MinRequestBodyDataRate): once
    `grace` seconds were spent waiting for the client, the average rate over that time must
    stay at `rate` bytes/s or more. Only time spent waiting for the client counts, never
    time the proxy itself did not read (a slow upstream must not make a fast client look
    slow). One timer per arrival, as the read timeout alone needs: no extra timer."""

    __slots__ = ("content", "exchange", "target", "total", "waited")

    def __init__(self, request: web.BaseRequest, target: Target, exchange: Exchange) -> None:
        self.content = request.content
        self.target = target
        self.exchange = exchange
        self.total = 0
        self.waited = 0.0  # seconds spent waiting for the client's bytes

    async def read(self) -> bytes:
        """The next chunk, b"" at the end."""
        target = self.target
        timeout = target.read_timeout
        rate = target.min_body_rate
        slow = False
        if rate:
            # The average falls below `rate` once the time waited passes both the grace
            # period and the time the bytes so far would take at `rate`.
            left = max(target.min_body_rate_grace, self.total / rate) - self.waited
            if left <= timeout:  # at or below 0: only bytes already here are in time
                timeout, slow = left, True
        started = time.monotonic()
        try:
            async with asyncio.timeout(timeout):
                chunk = await self.content.readany()
        except TimeoutError:
            if slow:
                self.waited += timeout
                self._too_slow()
            self.exchange.body_error = fw.BODY_TIMEOUT
            raise
        self.waited += time.monotonic() - started
        self.total += len(chunk)
        limit = target.max_body_size
        if limit is not None and self.total > limit:
            self.exchange.body_error = fw.BODY_TOO_LARGE
            raise ValueError("request body over the limit")
        return chunk

    def _too_slow(self) -> None:
        self.exchange.body_error = fw.BODY_TOO_SLOW
        raise TimeoutError(
            f"request body below min_body_rate: {self.total} bytes in {self.waited:.1f} s"
        )

    async def gather(self, size: int) -> tuple[list[bytes], bool]:
        """At least `size` bytes of the body, or all of it; and whether that is all."""
        parts: list[bytes] = []
        received = 0
        while received < size:
            chunk = await self.read()
            if not chunk:
                return parts, True
            parts.append(chunk)
            received += len(chunk)
        return parts, self.content.at_eof()

    async def stream(self, first: list[bytes]) -> AsyncIterator[bytes]:
        """What was gathered, then the rest as it arrives."""
        for chunk in first:
            yield chunk
        del first[:]
        while chunk := await self.read():
            yield chunk


@dataclass(frozen=True, slots=True)
class Target:
    """Where and how to forward one request (all decided before any I/O)."""

    upstream: Upstream
    target: str  # origin-form: the upstream's base path, the forwarded path, the raw query
    headers: list[tuple[str, str]]
    connect_timeout: float
    read_timeout: float
    max_body_size: int | None
    request_buffer: int = 64 * 1024
    min_body_rate: int = 0  # bytes/s; 0: not enforced
    min_body_rate_grace: float = 5.0

    @property
    def url(self) -> str:
        return f"{self.upstream.origin}{self.target}"


async def forward(
    request: web.BaseRequest,
    target: Target,
    decision: Decision,
    client: UpstreamClient,
    exchange: Exchange,
) -> web.StreamResponse:
    body: bytes | AsyncIterator[bytes] | None = None
    headers = target.headers
    try:
        if request.body_exists:
            # No upstream connection until the request is ready to go: the body is received
            # whole, or up to request_buffer (then the rest streams), so a client that
            # trickles a small body holds no upstream connection at all (nginx, Kestrel).
            reader = _Body(request, target, exchange)
            parts, whole = await reader.gather(target.request_buffer)
            if whole:  # it leaves with the request head in one write, with its length
                body = b"".join(parts)
                if request.content_length is None:  # it came chunked
                    headers = [*headers, ("Content-Length", str(len(body)))]
            else:
                body = reader.stream(parts)
        upstream = await client.request(
            target.upstream,
            request.method,
            target.target,
            headers,
            body,
            connect_timeout=target.connect_timeout,
            read_timeout=target.read_timeout,
        )
        try:
            return await _relay(request, upstream, decision, exchange)
        finally:
            upstream.release()
    except (UpstreamFailure, TimeoutError, ValueError) as exc:
        if exchange.status:  # headers already went out: abort, never fake completion
            raise
        failure = exchange.body_error or (
            exc.failure if isinstance(exc, UpstreamFailure) else fw.UPSTREAM_TIMEOUT
        )
        if exchange.body_error is None:
            exchange.upstream_error = failure.reason
        exchange.error = f"{failure.reason}: {exc!r}"[:300]
        response = error_response(failure, decision)
        if failure.status == 408:
            await _answer_and_close(request, response, exchange)
        return response


async def _answer_and_close(
    request: web.BaseRequest, response: web.StreamResponse, exchange: Exchange
) -> None:
    """Send the answer, then close: the rest of the body will not be read (aiohttp would
    otherwise keep reading it for up to 10 s, for a client already found too slow)."""
    if exchange.request_id:
        response.headers["X-Request-Id"] = exchange.request_id
    response.force_close()
    with contextlib.suppress(ConnectionError):
        await response.prepare(request)
        await response.write_eof()
    request.protocol.force_close()  # after the answer left: the transport flushes it first


async def _relay(
    request: web.BaseRequest,
    upstream: UpstreamResponse,
    decision: Decision,
    exchange: Exchange,
) -> web.StreamResponse:
    exchange.upstream_status = upstream.status
    if not 200 <= upstream.status <= 599:
        exchange.upstream_error = fw.UPSTREAM_BAD_RESPONSE.reason
        exchange.error = f"upstream status {upstream.status}"
        return error_response(fw.UPSTREAM_BAD_RESPONSE, decision)
    relayed, invalid = fw.response_headers(upstream.raw_headers)
    if invalid:
        log.warning("dropped %d invalid header(s) from the upstream for %s", invalid, exchange.path)
    headers = response_headers(decision, relayed)
    names = {n.lower() for n, _ in headers}
    reason = fw.clean_reason(upstream.reason)
    empty = _empty_body(request.method, upstream.status)
    length = upstream.content_length
    chunked = upstream.chunked
    response: web.StreamResponse
    if not empty and length is not None and length <= SMALL_BODY and not chunked:
        # Small bodies are read whole and leave with the headers in one write. A body cut
        # short raises here, before anything was sent: the client gets a clean 502.
        body = await upstream.read()
        response = SmallProxyResponse(
            status=upstream.status, reason=reason, body=body, upstream_names=names
        )
        _add_headers(response, headers, exchange)
        exchange.status = upstream.status
        exchange.bytes_out = len(body)
        return response
    response = ProxyResponse(status=upstream.status, reason=reason, upstream_names=names)
    _add_headers(response, headers, exchange)
    if length is not None and not chunked:
        response.content_length = length
    elif request.version == HttpVersion10 and not empty:
        # Only the close tells an HTTP/1.0 client where a body without a length ends;
        # aiohttp would keep a keep-alive connection open and leave the client waiting.
        response.force_close()
    exchange.status = upstream.status
    await response.prepare(request)
    if empty:  # HEAD, 204, 304: nothing more on the wire
        await response.write_eof()
        return response
    async for chunk in upstream.chunks():
        await response.write(chunk)
        exchange.bytes_out += len(chunk)
    await response.write_eof()
    return response


def _add_headers(
    response: web.StreamResponse, headers: list[tuple[str, str]], exchange: Exchange
) -> None:
    add = response.headers.add
    for name, value in headers:
        add(name, value)
    if exchange.request_id and "X-Request-Id" not in response.headers:
        response.headers["X-Request-Id"] = exchange.request_id


def _empty_body(method: str, status: int) -> bool:
    return method == "HEAD" or status in (204, 304) or 100 <= status < 200
