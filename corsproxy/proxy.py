"""The forwarding transport: executes a decision, never makes policy.

One shared `ClientSession` per process with the defaults a proxy needs (no decompression,
no cookie jar, no redirects, no invented headers), streaming both ways with backpressure.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from aiohttp import web
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


def error_response(failure: fw.Failure, decision: Decision | None) -> web.Response:
    """A proxy-generated error that carries CORS headers for an allowed origin."""
    base = [
        ("Content-Type", "text/plain; charset=utf-8"),
        ("X-Content-Type-Options", "nosniff"),
    ]
    headers = response_headers(decision, base) if decision is not None else base
    response = web.Response(status=failure.status, body=f"{failure.message}\n".encode())
    for name, value in headers:
        response.headers.add(name, value)
    return response


async def _request_body(
    request: web.BaseRequest, limit: int | None, read_timeout: float, exchange: Exchange
) -> AsyncIterator[bytes]:
    total = 0
    while True:
        try:
            async with asyncio.timeout(read_timeout):
                chunk = await request.content.readany()
        except TimeoutError:
            exchange.body_error = fw.BODY_TIMEOUT
            raise
        if not chunk:
            return
        total += len(chunk)
        if limit is not None and total > limit:
            exchange.body_error = fw.BODY_TOO_LARGE
            raise ValueError("request body over the limit")
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
    length = request.content_length
    try:
        if request.body_exists:
            body = _request_body(request, target.max_body_size, target.read_timeout, exchange)
            if length is not None and length <= SMALL_BODY:
                # Small bodies are read whole, then leave with the request head in one write.
                body = b"".join([chunk async for chunk in body])
        upstream = await client.request(
            target.upstream,
            request.method,
            target.target,
            target.headers,
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
        return error_response(failure, decision)


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
