"""The HTTP relay: executes a decision, never makes policy.

Requests go to the upstream through corsproxy's own client (upstream.py); bodies stream both
ways with backpressure, and answers keep no header the upstream did not send. WebSockets are
tunnelled in websocket.py.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import fcntl
import logging
import socket
import struct
import termios
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from dataclasses import dataclass, field

from aiohttp import web
from aiohttp.http import HttpVersion10
from multidict import CIMultiDict

from corsproxy.http import errors
from corsproxy.http import headers as hygiene
from corsproxy.http.aiohttp_private import DefaultHeadersHook
from corsproxy.http.error_words import cut_short, error_words
from corsproxy.http.public_origin import local_authority
from corsproxy.http.response_head import decided
from corsproxy.http.upstream import UpstreamClient, UpstreamResponse
from corsproxy.ops.logs import ACCESS
from corsproxy.policy.cors import Decision, RequestView, response_headers
from corsproxy.policy.forwarded import ClientView
from corsproxy.policy.forwarded import public_origin as forwarded_origin
from corsproxy.policy.routes import Route, Upstream
from corsproxy.policy.url_rewrite import REWRITTEN_HEADERS, response_rewrite, with_vary_host

log = logging.getLogger("corsproxy")

SMALL_BODY = 64 * 1024
_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends a reset
_OUTQ = array.array("i", [0])  # TIOCOUTQ's answer (a C int); one loop thread uses it
# Linux: bytes the peer has not acknowledged; elsewhere only the proxy's own buffer counts.
_TIOCOUTQ: int | None = getattr(termios, "TIOCOUTQ", None)


@dataclass(slots=True)  # one per request: no instance dict
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
    body_error: errors.Failure | None = None
    view: ClientView | None = None  # the client behind trusted proxies (policy/forwarded.py)
    # Computes `view` when first needed (a preflight's only when its access line is written).
    resolve_view: Callable[[], ClientView] | None = None
    # For the access line (http/access_line.py): references only, read when it is written.
    decision: Decision | None = None
    cors_view: RequestView | None = None
    matched_route: Route | None = None
    target: Target | None = None
    stripped: tuple[str, ...] = ()  # the upstream's CORS headers replaced (at debug only)
    overrides_dropped: bool = False  # a method override header was not forwarded (debug only)
    action: str = ""  # corsproxy refused before any decision: `bad_request` (http/server.py)
    # time.monotonic, not loop.time(): get_running_loop() costs a getpid() syscall.
    started: float = field(default_factory=time.monotonic)


_NO_NAMES: frozenset[str] = frozenset()


class _NoInventedHeaders(DefaultHeadersHook):
    """Mixed into aiohttp responses: no Content-Type or Server the upstream did not send."""

    _upstream_names: set[str] | frozenset[str]
    headers: CIMultiDict[str]

    def after_default_headers(self) -> None:
        for name in ("content-type", "server"):
            if name not in self._upstream_names:
                self.headers.popall(name, None)

    async def write_eof(self, data: bytes = b"") -> None:
        await super().write_eof(data)  # type: ignore[misc]
        # aiohttp's connection loop keeps its last answer until the next request comes
        # (RequestHandler.start()'s locals): an idle keep-alive connection would hold these
        # headers and their name set for as long. Once written nothing reads them (aiohttp
        # reads `keep_alive`; tests/test_aiohttp_contract.py).
        self._upstream_names = _NO_NAMES
        self.headers.clear()


class ProxyResponse(_NoInventedHeaders, web.StreamResponse):
    """A streamed upstream body."""

    def __init__(self, *, status: int, reason: str | None, upstream_names: set[str]) -> None:
        super().__init__(status=status, reason=reason)
        self._upstream_names = upstream_names


class SmallProxyResponse(_NoInventedHeaders, web.Response):
    """A whole small body: headers and body leave in one write."""

    def __init__(
        self,
        *,
        status: int,
        reason: str | None,
        body: bytes,
        upstream_names: set[str],
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        super().__init__(status=status, reason=reason, body=body, headers=headers)
        self._upstream_names = upstream_names

    async def write_eof(self, data: bytes = b"") -> None:
        await super().write_eof(data)
        # aiohttp's connection loop keeps its last answer until the next request comes:
        # an idle keep-alive connection would hold this body (up to SMALL_BODY) for as long.
        self.body = None


class OwnResponse(DefaultHeadersHook, web.Response):
    """An answer corsproxy writes itself: aiohttp's default `Server` header would name
    versions (Python, aiohttp) to every client, so it goes."""


def error_response(failure: errors.Failure, decision: Decision | None) -> web.Response:
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
    between arrivals, and a minimum data rate over a sliding window (limits.min_body_rate).

    The rate is a token bucket over the time spent waiting for the client: it starts with
    `rate * grace` bytes of credit, loses `rate` per second waited, gains every byte
    received, and never holds more than `rate * grace`; below zero the body is too slow.
    So in every span of waiting time, d seconds long, at least `rate * (d - grace)` bytes
    arrive: a burst buys at most `grace` seconds (an average since the start, as Kestrel
    keeps, would let 64 KiB buy 4.5 minutes of a held upstream connection at 240 B/s). Only
    time spent waiting for the client counts, never time the proxy itself did not read (a
    slow upstream must not make a fast client look slow). The deadline folds into the read
    timer each arrival needs anyway: no extra timer."""

    __slots__ = ("cap", "content", "credit", "exchange", "target", "total", "waited")

    def __init__(self, request: web.BaseRequest, target: Target, exchange: Exchange) -> None:
        self.content = request.content
        self.target = target
        self.exchange = exchange
        self.total = 0
        self.waited = 0.0  # seconds spent waiting for the client's bytes
        self.cap = target.min_body_rate * target.min_body_rate_grace
        self.credit = self.cap  # bytes the client may still fall behind the rate

    async def read(self) -> bytes:
        """The next chunk, b"" at the end."""
        target = self.target
        timeout = target.read_timeout
        rate = target.min_body_rate
        slow = False
        if rate:
            left = self.credit / rate  # at or below 0: only bytes already here are in time
            if left <= timeout:
                timeout, slow = left, True
        started = time.monotonic()
        try:
            async with asyncio.timeout(timeout):
                chunk = await self.content.readany()
        except TimeoutError:
            if slow:
                self.waited += max(timeout, 0.0)
                self._too_slow()
            self.exchange.body_error = errors.BODY_TIMEOUT
            raise
        waited = time.monotonic() - started
        self.waited += waited
        self.total += len(chunk)
        if rate:
            self.credit = min(self.cap, self.credit - waited * rate + len(chunk))
        limit = target.max_body_size
        if limit is not None and self.total > limit:
            self.exchange.body_error = errors.BODY_TOO_LARGE
            raise errors.RequestRefused(errors.BODY_TOO_LARGE, "request body over the limit")
        return chunk

    def _too_slow(self) -> None:
        self.exchange.body_error = errors.BODY_TOO_SLOW
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


class ClientTooSlow(Exception):
    """The client did not take the answer in time: its connection is already reset."""


class _Sender:
    """Writes a streamed answer to the client under timeouts.send (nginx's send_timeout:
    the longest a write may wait with the client taking nothing) and limits.min_response_rate
    (the token bucket of _Body, over the time spent waiting for the client to take bytes).
    A byte is taken when the client's TCP acknowledged it: the kernel's send buffer can hold
    megabytes, and lets the proxy write again only once a third of it is free, so what left
    the proxy's own buffer says little. One timer per write, armed at the nearer deadline
    and re-armed while the client keeps taking bytes.

    A write cannot be resumed once cancelled (aiohttp's drain waiter is not shielded), so
    the first expiry that finds the client too slow is final: the connection is reset, and
    the caller's abort closes the upstream connection (the slot is free at once)."""

    __slots__ = (
        "cap",
        "credit",
        "exchange",
        "fd",
        "handle",
        "loop",
        "mark",
        "progress",
        "rate",
        "request",
        "response",
        "send",
        "taken",
        "task",
        "tripped",
        "written",
    )

    def __init__(
        self,
        request: web.BaseRequest,
        response: web.StreamResponse,
        target: Target,
        exchange: Exchange,
    ) -> None:
        self.request = request
        self.response = response
        self.exchange = exchange
        self.send = target.send_timeout
        self.rate = target.min_response_rate
        self.cap = self.rate * target.min_body_rate_grace
        self.credit = self.cap
        self.written = 0  # bytes handed to the transport
        self.taken = 0  # of those, bytes the transport passed on to the kernel
        self.mark = self.progress = 0.0
        self.tripped = ""
        self.loop = asyncio.get_running_loop()
        self.task = asyncio.current_task()
        self.handle: asyncio.TimerHandle | None = None
        # uvloop's socket object is a pseudo-socket, but has fileno().
        sock = request.transport.get_extra_info("socket") if request.transport else None
        self.fd = sock.fileno() if sock is not None else -1

    async def write(self, chunk: bytes) -> None:
        self.written += len(chunk)
        await self._timed(self.response.write(chunk))

    async def write_eof(self) -> None:
        await self._timed(self.response.write_eof())

    async def _timed(self, write: Coroutine[object, object, None]) -> None:
        self.mark = self.progress = time.monotonic()
        self.handle = self.loop.call_later(self._left(self.mark), self._expire)
        try:
            await write
        except asyncio.CancelledError:
            if self.tripped and self.task is not None and not self.task.uncancel():
                self._reset()
                raise ClientTooSlow(self.tripped) from None
            raise
        finally:
            self.handle.cancel()
            now = time.monotonic()
            if now - self.mark > 0.001:  # it waited: a write that did not costs no syscall
                self._account(now)

    def _left(self, now: float) -> float:
        left = self.progress + self.send - now
        if self.rate:
            left = min(left, self.credit / self.rate)
        return max(left, 0.0)

    def _account(self, now: float) -> None:
        transport = self.request.transport
        buffered = transport.get_write_buffer_size() if transport is not None else 0
        if self.fd >= 0 and _TIOCOUTQ is not None:
            try:
                fcntl.ioctl(self.fd, _TIOCOUTQ, _OUTQ, True)
                buffered += _OUTQ[0]
            except OSError:  # not Linux, or the socket is gone: the proxy's buffer alone
                pass
        taken = max(self.taken, self.written - buffered)
        if taken > self.taken:
            self.progress = now
        if self.rate:
            gained = taken - self.taken
            self.credit = min(self.cap, self.credit - (now - self.mark) * self.rate + gained)
        self.taken, self.mark = taken, now

    def _expire(self) -> None:
        now = time.monotonic()
        self._account(now)
        if now - self.progress >= self.send - 0.001:
            self.tripped = f"client took no answer bytes for timeouts.send ({self.send:g} s)"
        elif self.rate and self.credit <= self.rate * 0.001:
            self.tripped = f"answer below min_response_rate: the client took {self.taken} bytes"
        if self.tripped and self.task is not None:
            self.task.cancel()
        else:
            self.handle = self.loop.call_later(self._left(now), self._expire)

    def _reset(self) -> None:
        """Close at once, with a reset: what the client has is cut short, never complete,
        and no buffered answer waits for a client that does not read."""
        self.exchange.error = self.tripped
        transport = self.request.transport
        if transport is not None:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
            transport.abort()


@dataclass(frozen=True, slots=True)
class Target:
    """Where and how to forward one request (all decided before any I/O)."""

    upstream: Upstream
    # Origin-form: the upstream's base path, the forwarded path, the raw query.
    request_target: str
    headers: list[tuple[str, str]]
    # The route's timeouts and the limits, as compiled (their defaults live in the config).
    connect_timeout: float
    read_timeout: float
    max_body_size: int | None
    request_buffer: int
    min_body_rate: int  # bytes/s; 0: not enforced
    min_body_rate_grace: float
    send_timeout: float
    min_response_rate: int  # bytes/s; 0: not enforced
    # The route whose answers get their URLs and cookies rewritten (None: relayed as sent).
    route: Route | None = None

    @property
    def url(self) -> str:
        return f"{self.upstream.origin}{self.request_target}"


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
            target.request_target,
            headers,
            body,
            connect_timeout=target.connect_timeout,
            read_timeout=target.read_timeout,
        )
        try:
            return await _relay(request, upstream, decision, exchange, target)
        finally:
            upstream.release()
    except (errors.ProxyFailure, TimeoutError) as exc:
        if exchange.status:  # headers already went out: abort, never fake completion
            raise
        failure = exchange.body_error or (
            exc.failure if isinstance(exc, errors.ProxyFailure) else errors.UPSTREAM_TIMEOUT
        )
        if exchange.body_error is None and not isinstance(exc, errors.RequestRefused):
            exchange.upstream_error = failure.reason
        # The failure's code, then what happened in plain words (http/error_words.py).
        if exchange.body_error is not None and isinstance(exc, TimeoutError):
            words = str(exc) or failure.message  # the client's body, not the upstream
        else:
            words = error_words(exc)
        exchange.error = f"{failure.reason}: {words}"[:300]
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
    target: Target,
) -> web.StreamResponse:
    exchange.upstream_status = upstream.status
    if not 200 <= upstream.status <= 599:
        exchange.upstream_error = errors.UPSTREAM_BAD_RESPONSE.reason
        exchange.error = f"upstream status {upstream.status}"
        return error_response(errors.UPSTREAM_BAD_RESPONSE, decision)
    head = hygiene.clean_head(upstream.raw_headers)  # None: not clean, or fast paths off
    if head is not None:
        relayed, invalid = head.headers, 0
        rewritable = not REWRITTEN_HEADERS.isdisjoint(head.lowers)
    else:
        relayed, invalid = hygiene.relayable_response_headers(upstream.raw_headers)
        rewritable = any(n.lower() in REWRITTEN_HEADERS for n, _ in relayed)
    if invalid:
        log.warning("dropped %d invalid header(s) from the upstream for %s", invalid, exchange.path)
    if target.route is not None and rewritable:
        view = exchange.view
        # The Host sent upstream (preserve_host): the origin the upstream believes it has.
        sent = next((v for n, v in target.headers if n.lower() == "host"), None)
        # The client's origin, as the request's ClientView has it (behind a trusted proxy:
        # the scheme, host and prefix it reports); a Host that makes no clean origin: the
        # listener's own address.
        if view is not None and view.origin.host:
            origin, inherited = view.origin, view.inherited_prefix
        else:
            origin = forwarded_origin(request.secure, None, fallback_host=local_authority(request))
            inherited = ""
        public = origin.serialize() if origin.host else ""
        rewrite = response_rewrite(target.route, public, inherited, sent)
        if rewrite is not None:
            head = None  # the head changes: the plain path below
            relayed, absolute = rewrite.rewritten(relayed)
            if absolute:  # the client's Host is in the answer now: caches must key on it
                relayed = with_vary_host(relayed)
    if decision.strip_upstream_cors and ACCESS.isEnabledFor(logging.DEBUG):
        exchange.stripped = tuple(n for n, _ in relayed if n.lower().startswith("access-control-"))
    fast = decided(decision, head) if head is not None else None
    if fast is not None:
        headers, names = fast
    else:
        headers = response_headers(decision, relayed)
        names = {n.lower() for n, _ in headers}
    reason = hygiene.clean_reason(upstream.reason)
    empty = _empty_body(request.method, upstream.status)
    length = upstream.content_length
    chunked = upstream.chunked
    response: web.StreamResponse
    if not empty and length is not None and length <= SMALL_BODY and not chunked:
        # Small bodies are read whole and leave with the headers in one write. A body cut
        # short raises here, before anything was sent: the client gets a clean 502.
        parts: list[bytes] = []
        try:
            whole = upstream.whole_body() if hygiene.fast_paths() else None
            if whole is not None:
                parts.append(whole)
            else:
                async for chunk in upstream.chunks():
                    parts.append(chunk)
        except errors.ProxyFailure as exc:  # the head came: say the body was cut short
            raise cut_short(exc, sum(map(len, parts)), length) from exc.__cause__
        body = b"".join(parts)
        if fast is not None:  # the headers go in with the response: one C-level copy
            if exchange.request_id and "x-request-id" not in names:
                headers.append(("X-Request-Id", exchange.request_id))
            response = SmallProxyResponse(
                status=upstream.status,
                reason=reason,
                body=body,
                upstream_names=names,
                headers=headers,
            )
        else:
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
    # This answer streams while it holds an upstream connection: the client must take it.
    sender = _Sender(request, response, target, exchange)
    if not empty:  # HEAD, 204, 304: nothing more on the wire
        try:
            async for chunk in upstream.chunks():
                await sender.write(chunk)
                exchange.bytes_out += len(chunk)
        except errors.ProxyFailure as exc:  # the caller closes the client's connection
            raise cut_short(exc, exchange.bytes_out, None if chunked else length) from exc.__cause__
    await sender.write_eof()
    return response


def _add_headers(
    response: web.StreamResponse, headers: Sequence[tuple[str, str]], exchange: Exchange
) -> None:
    add = response.headers.add
    for name, value in headers:
        add(name, value)
    if exchange.request_id and "X-Request-Id" not in response.headers:
        response.headers["X-Request-Id"] = exchange.request_id


def _empty_body(method: str, status: int) -> bool:
    return method == "HEAD" or status in (204, 304) or 100 <= status < 200
