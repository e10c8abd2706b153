"""A lean HTTP/1.1 client for the upstream: keep-alive pools on asyncio protocols, llhttp
(through httptools) for parsing.

aiohttp's ClientSession cost about 60 µs of CPU per proxied request, more than the rest of
the proxy together, mostly in request objects and features a proxy never uses. This client
does only what forwarding needs: send the head the caller built, stream a body with
backpressure, parse the answer strictly, stream it back, and reuse the connection only when
the exchange ended cleanly.

Rules it keeps (each has a test):
- framing comes from llhttp in strict mode: conflicting or negative Content-Length, CL with
  TE, bad header bytes and oversized heads are errors, never guesses;
- the protocol state of a connection lives in `h1response.ResponseReader`, a sans-I/O state
  machine with an explicit transition table; this module only does the I/O around it, and a
  connection goes back to the pool, or out of it, only when `ResponseReader.reusable` says so:
  after an answer framed by Content-Length or chunked that ended exactly at its boundary with
  keep-alive both ways, the whole request body sent, and no byte after it (a HEAD, 204 or 304
  answer is never reused: a body may still come after it). Cancellation, timeouts, early
  answers and stray bytes close it. Bytes on an idle connection close it, and an idle one
  is handed out only when the kernel holds no unread byte for it (FIONREAD). h1response.py
  states the rule and its one residual window (bytes that arrive after the next request was
  written);
- an idempotent request without a body is retried once on a fresh connection when a pooled
  one turns out closed before any byte of the answer (RFC 9112 9.3.1); never one with a body;
- 1xx answers are skipped (one with framing headers is a bad answer); trailers are dropped;
  a body without length or chunking ends at EOF and is never reused;
- nothing the upstream sends raises out of `data_received`: peer input maps to the reader's
  states, and a bug there fails the exchange (502) with one log line, never a transport error;
- a pool holds the connections of one `Upstream`, and its identity includes the compiled
  `upstream_tls` (CA, client certificate, server name, verification): a connection made with
  one route's TLS settings never serves another's. A pool with no connection (idle or in use) and no
  request acquiring one is dropped by the sweep (reloads make new pools), and a connection
  released into a dropped pool is closed. Connecting (DNS cache, Happy Eyeballs,
  the TLS handshake) is `connect.py`'s.
"""

from __future__ import annotations

import array
import asyncio
import fcntl
import logging
import ssl
import time
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator
from termios import FIONREAD
from typing import cast

from corsproxy.config.upstream_tls import UpstreamTLS, default_context
from corsproxy.http import errors
from corsproxy.http.connect import Resolver, open_connection, tls_reason
from corsproxy.http.errors import RequestRefused, UpstreamFailure
from corsproxy.http.h1response import MAX_HEAD as MAX_HEAD
from corsproxy.http.h1response import MAX_LINE as MAX_LINE
from corsproxy.http.h1response import ResponseReader, State
from corsproxy.policy.http_grammar import IDEMPOTENT_METHODS, NO_BODY_METHODS
from corsproxy.policy.routes import Upstream

log = logging.getLogger("corsproxy")

# Pause reading the upstream once this much of its body waits for the client.
HIGH_WATER = 256 * 1024
# Body pieces that waited together are joined below this size (one write, not many small
# ones); larger ones are written as they came, without a copy.
JOIN_BELOW = 16 * 1024
# Upstream reads land in one buffer of this size (asyncio.BufferedProtocol), copied out at
# once: a read never allocates more than this, where uvloop's own reads allocate up to
# 256 KiB each. One buffer serves every connection: the loop calls get_buffer(), reads,
# and calls buffer_updated() without running anything else in between (one loop thread).
READ_SIZE = 128 * 1024
_READ_VIEW = memoryview(bytearray(READ_SIZE))
_COUNT = array.array("i", [0])  # FIONREAD's answer (a C int); one loop thread uses it


class UpstreamResponse:
    """The head of an upstream answer; the body is read through `read()` or `chunks()`."""

    __slots__ = ("_conn", "chunked", "content_length", "raw_headers", "reason", "status")

    def __init__(
        self,
        conn: _Connection,
        status: int,
        reason: str,
        raw_headers: list[tuple[bytes, bytes]],
        content_length: int | None,
        chunked: bool,
    ) -> None:
        self._conn = conn
        self.status = status
        self.reason = reason
        self.raw_headers = raw_headers
        self.content_length = content_length
        self.chunked = chunked

    async def read(self) -> bytes:
        """The whole body (callers use this for bodies known to be small)."""
        parts = [chunk async for chunk in self.chunks()]
        return b"".join(parts)

    def whole_body(self) -> bytes | None:
        """The whole body when it has all arrived already (a small answer usually comes with
        its head), else None: what `chunks()` would yield, joined, without a generator."""
        conn = self._conn
        if not conn.reader.complete:
            return None
        return conn.take_body()

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives; raises UpstreamFailure when it is cut short. The bytes
        objects the transport delivered pass through as they are (a large body is counted,
        not copied, by the reader); only many small pieces are joined, for fewer writes."""
        conn = self._conn
        reader = conn.reader
        while True:
            parts = conn.take_parts()
            if parts:
                if len(parts) == 1:
                    yield parts[0]
                elif sum(map(len, parts)) < JOIN_BELOW:
                    yield b"".join(parts)
                else:
                    for part in parts:
                        yield part
                continue
            if reader.complete:
                return
            await conn.wait()

    def release(self) -> None:
        """Return the connection to its pool if the exchange ended cleanly, else close it."""
        self._conn.finish()


class _Connection(asyncio.BufferedProtocol):
    """One upstream connection: the I/O around its ResponseReader, one exchange at a time.
    Whether it may be reused is the reader's answer alone (`ResponseReader.reusable`)."""

    def __init__(self, pool: _Pool) -> None:
        self.pool = pool
        self.loop = pool.loop
        self.transport: asyncio.Transport | None = None
        self.reader = ResponseReader()
        self.closed = False
        self.closed_here = False  # close() ran: a connection_lost after it is not the upstream's
        self.idle_since = 0.0
        self.reused = False
        self.active = False
        self._fd = -1
        self._waiter: asyncio.Future[None] | None = None
        self._drain_waiter: asyncio.Future[None] | None = None
        self._write_paused = False
        self._read_paused = False
        self._timeout = 60.0
        self._body_task: asyncio.Task[None] | None = None

    # --- asyncio.Protocol ----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's do not subclass it
        # The fd, for FIONREAD: uvloop's socket object is a pseudo-socket, but has fileno().
        sock = transport.get_extra_info("socket")
        if sock is not None:
            self._fd = sock.fileno()

    def get_buffer(self, sizehint: int) -> memoryview:
        return _READ_VIEW

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(_READ_VIEW[:nbytes].tobytes())

    def data_received(self, data: bytes) -> None:
        reader = self.reader
        try:
            reader.feed(data)
        except Exception as exc:  # a bug in the reader: fail this exchange, not the loop
            log.error("upstream answer parser error: %r", exc, exc_info=True)
            self._fail(UpstreamFailure(errors.UPSTREAM_BAD_RESPONSE, f"parser error: {exc!r}"))
            return
        state = reader.state
        if state is State.MUST_CLOSE or state is State.FAILED:
            self.close()  # the answer, when whole, stays readable in the reader
        elif reader.buffered >= HIGH_WATER and not self._read_paused and self.transport:
            self._read_paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool | None:
        return None  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.forget(self)
        reader = self.reader
        reader.eof(exc)
        if isinstance(exc, ssl.SSLError) and not reader.received_any and reader.error is not None:
            # TLS 1.3: a refused client certificate is an alert after our handshake ended.
            reason = tls_reason(exc)
            log.warning("upstream %s: TLS failed: %s", self.pool.label, reason)
            reader.error = UpstreamFailure(errors.UPSTREAM_TLS, f"TLS failed: {reason}")
        elif (
            self.pool.context is not None
            and not self.closed_here  # the proxy closed it (a client gone mid-upload): no blame
            and not self.reused
            and not reader.received_any
            and reader.error is not None
        ):  # a new TLS connection closed with no alert, before any answer byte
            log.warning(
                "upstream %s closed a new TLS connection before answering (a server that "
                "refuses the client certificate under TLS 1.3 may do this without an alert)",
                self.pool.label,
            )
        self._wake()
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_result(None)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_result(None)

    # --- the exchange ------------------------------------------------------------------

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, exc: BaseException) -> None:
        """The connection is broken; the exchange too, unless its answer was complete."""
        self.reader.fail(exc)
        self.close()
        self._wake()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.closed_here = True
            # Whatever is unfinished fails; a whole answer stays readable.
            self.reader.fail(UpstreamFailure(errors.UPSTREAM_DISCONNECTED, "closed by the proxy"))
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()
        self.pool.forget(self)  # at once: the slot is free before connection_lost runs

    def unread(self) -> int:
        """Bytes the kernel holds for this socket that asyncio has not delivered yet."""
        if self._fd < 0:
            return 0
        try:
            fcntl.ioctl(self._fd, FIONREAD, _COUNT, True)
            return _COUNT[0]
        except OSError:
            return 1  # a socket we cannot ask about is not handed out

    async def wait(self) -> None:
        """Until the parser makes progress, with the read timeout between arrivals."""
        reader = self.reader
        if reader.error is not None:
            raise reader.error
        waiter: asyncio.Future[None] = self.loop.create_future()
        self._waiter = waiter
        # The upstream may rightly wait for the rest of the body: its read timeout starts
        # once the body is sent (sending has its own timeouts, on both sides).
        timer = (
            self.loop.call_later(self._timeout, _expire, waiter) if reader.request_sent else None
        )
        try:
            await waiter
        finally:
            if timer is not None:
                timer.cancel()
            self._waiter = None
        if reader.error is not None:
            raise reader.error

    def take_body(self) -> bytes:
        chunk = self.reader.take_body()
        self._resume()
        return chunk

    def take_parts(self) -> list[bytes]:
        parts = self.reader.take_parts()
        self._resume()
        return parts

    def _resume(self) -> None:
        """What was buffered is taken: reading may go on if it was paused (HIGH_WATER)."""
        if self._read_paused and self.transport is not None:
            self._read_paused = False
            self.transport.resume_reading()

    async def send(
        self,
        head: bytes,
        body: bytes | AsyncIterable[bytes] | None,
        chunked: bool,
        read_timeout: float,
        head_only: bool,
    ) -> UpstreamResponse:
        transport = self.transport
        assert transport is not None
        reader = self.reader
        streamed = body is not None and not isinstance(body, bytes)
        reader.start(head_only, body_follows=streamed, has_body=body is not None)
        self.active = True
        self._timeout = read_timeout
        if isinstance(body, bytes):
            # A whole body (with its Content-Length) leaves with the head, in one write.
            assert not chunked
            transport.write(head + body)
        else:
            transport.write(head)
        if streamed:
            self._body_task = asyncio.ensure_future(
                self._send_body(cast(AsyncIterable[bytes], body), chunked)
            )
        try:
            while not reader.head_ready:
                await self.wait()
            if reader.state is State.FAILED:
                raise reader.error or UpstreamFailure(errors.UPSTREAM_BAD_RESPONSE)
        except BaseException:  # cancelled, timed out or failed: never back to the pool
            self.finish()
            raise
        return UpstreamResponse(
            self,
            reader.status,
            reader.reason.decode("latin-1"),
            reader.headers,
            reader.content_length,
            reader.chunked,
        )

    async def _send_body(self, body: AsyncIterable[bytes], chunked: bool) -> None:
        transport = self.transport
        assert transport is not None
        try:
            async for chunk in body:
                if self.closed:
                    raise UpstreamFailure(errors.UPSTREAM_DISCONNECTED, "closed while sending")
                if not chunk:
                    continue
                if chunked:
                    transport.writelines((b"%x\r\n" % len(chunk), chunk, b"\r\n"))
                else:
                    transport.write(chunk)
                if self._write_paused:
                    await self._drain()
            if chunked:
                transport.write(b"0\r\n\r\n")
            self.reader.sent()
            self._wake()  # the head waiter may now start its read timeout
        except BaseException as exc:
            # The client's body failed (timeout, limit, gone) or the upstream went away:
            # the exchange cannot complete on this connection.
            if not isinstance(exc, asyncio.CancelledError):
                self._fail(exc)
                return
            self.close()
            raise

    async def _drain(self) -> None:
        while self._write_paused and not self.closed:
            waiter: asyncio.Future[None] = self.loop.create_future()
            self._drain_waiter = waiter
            timer = self.loop.call_later(self._timeout, _expire, waiter)
            try:
                await waiter
            finally:
                timer.cancel()
                self._drain_waiter = None

    def finish(self) -> None:
        """End the exchange: back to the pool when the reader says it ended cleanly."""
        if not self.active:
            return
        self.active = False
        task, self._body_task = self._body_task, None
        if task is not None and not task.done():
            task.cancel()
        if self.reader.release():
            self.pool.release(self)
        else:
            self.close()


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(UpstreamFailure(errors.UPSTREAM_TIMEOUT, "read timeout"))


class _Pool:
    """Connections to one upstream origin: idle ones are reused newest first."""

    def __init__(self, clients: UpstreamClient, upstream: Upstream) -> None:
        self.clients = clients
        self.loop = clients.loop
        self.host = upstream.host.strip("[]")
        self.port = upstream.port
        self.label = upstream.origin
        self.context: ssl.SSLContext | None = None
        self.server_name: str | None = None
        if upstream.scheme == "https":
            tls = upstream.tls if isinstance(upstream.tls, UpstreamTLS) else None
            self.context = tls.context if tls and tls.context else clients.ssl_context()
            self.server_name = (tls.server_name if tls else None) or self.host
            if tls and tls.server_name:
                self.label += f" (server name {tls.server_name})"
        self.idle: deque[_Connection] = deque()
        # Requests between finding this pool and holding a connection of it (waiting for a
        # slot, connecting): the pool is not dropped under them.
        self.acquiring = 0
        self.dropped = False  # out of UpstreamClient.pools: nothing comes back to it

    def release(self, conn: _Connection) -> None:
        if self.dropped:  # no one will take it from here: close, do not keep
            conn.close()
            return
        conn.idle_since = time.monotonic()
        self.idle.append(conn)
        self.clients.slot_freed()

    def forget(self, conn: _Connection) -> None:
        if conn in self.idle:
            self.idle.remove(conn)
        if conn in self.clients.all:  # its value is None: pop() cannot tell
            del self.clients.all[conn]
            self.clients.slot_freed()

    def take_idle(self) -> _Connection | None:
        expiry = time.monotonic() - self.clients.keepalive
        while self.idle:
            conn = self.idle.pop()
            if conn.closed or conn.idle_since < expiry:
                conn.close()
                continue
            # Bytes the kernel holds but asyncio has not delivered yet belong to no
            # exchange: they would be read as the next request's answer.
            conn.reader.unread(conn.unread())
            if not conn.reader.reusable:
                conn.close()
                continue
            conn.reused = True
            return conn
        return None

    async def connect(self, connect_timeout: float) -> _Connection:
        conn = _Connection(self)
        try:
            await open_connection(
                lambda: conn,
                self.clients.resolver,
                self.host,
                self.port,
                context=self.context,
                server_name=self.server_name,
                label=self.label,
                connect_timeout=connect_timeout,
            )
        except BaseException:
            conn.close()
            raise
        return conn

    def sweep(self) -> None:
        expiry = time.monotonic() - self.clients.keepalive
        while self.idle and self.idle[0].idle_since < expiry:
            self.idle.popleft().close()


class UpstreamClient:
    """Every upstream pool of one process, with a bound on open connections."""

    def __init__(self, *, limit: int = 512, keepalive: float = 4.0) -> None:
        self.loop = asyncio.get_running_loop()
        self.limit = limit
        self.keepalive = keepalive  # below common upstream idle timeouts (uvicorn: 5 s)
        # By Upstream: scheme, host, port, base path and the compiled upstream_tls.
        self.pools: dict[Upstream, _Pool] = {}
        self.resolver = Resolver()
        self.all: dict[_Connection, None] = {}
        self._slot_waiters: deque[asyncio.Future[None]] = deque()
        self._connecting = 0
        self._ssl: ssl.SSLContext | None = None
        self._sweeper = self.loop.call_later(1.0, self._sweep)

    def ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = default_context()
        return self._ssl

    def _sweep(self) -> None:
        for pool in self.pools.values():
            pool.sweep()
        self._drop_unused_pools()
        self._sweeper = self.loop.call_later(1.0, self._sweep)

    def _drop_unused_pools(self) -> None:
        """Forget the pools with no connection, idle or in use, and no request acquiring one:
        pools are keyed on the whole Upstream with its TLS settings, so every reload that
        changes an upstream or a certificate makes new ones, and the old would stay for ever.
        A pool still in use is recreated on its next request (an empty pool costs nothing)."""
        used = {conn.pool for conn in self.all}
        for upstream, pool in list(self.pools.items()):
            if not pool.idle and not pool.acquiring and pool not in used:
                pool.dropped = True
                del self.pools[upstream]

    def slot_freed(self) -> None:
        while self._slot_waiters:
            waiter = self._slot_waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def _acquire(self, pool: _Pool, connect_timeout: float, fresh: bool) -> _Connection:
        if not fresh:
            conn = pool.take_idle()
            if conn is not None:
                return conn
        deadline = self.loop.time() + connect_timeout
        while len(self.all) + self._connecting >= self.limit:
            # At the bound: close an idle connection of another upstream, or wait for a slot.
            if not self._evict_idle():
                waiter: asyncio.Future[None] = self.loop.create_future()
                self._slot_waiters.append(waiter)
                try:
                    async with asyncio.timeout_at(deadline):
                        await waiter
                except BaseException as exc:
                    if waiter.done() and not waiter.cancelled():
                        self.slot_freed()  # we were woken but leave: pass the slot on
                    if isinstance(exc, TimeoutError):
                        raise UpstreamFailure(
                            errors.UPSTREAM_CONNECT_TIMEOUT,
                            "no free upstream connection within timeouts.connect"
                            " (limits.upstream_connections)",
                        ) from exc
                    raise
                if not fresh:
                    conn = pool.take_idle()
                    if conn is not None:
                        return conn
        self._connecting += 1  # counted against the bound while it connects
        try:
            conn = await pool.connect(max(0.0, deadline - self.loop.time()))
        except BaseException:
            self._connecting -= 1
            self.slot_freed()
            raise
        self._connecting -= 1
        self.all[conn] = None
        return conn

    async def _acquire_from(self, pool: _Pool, connect_timeout: float, fresh: bool) -> _Connection:
        pool.acquiring += 1
        try:
            return await self._acquire(pool, connect_timeout, fresh)
        finally:
            pool.acquiring -= 1

    def _evict_idle(self) -> bool:
        for pool in self.pools.values():
            if pool.idle:
                pool.idle.popleft().close()
                return True
        return False

    async def request(
        self,
        upstream: Upstream,
        method: str,
        target: str,
        headers: list[tuple[str, str]],
        body: bytes | AsyncIterable[bytes] | None,
        *,
        connect_timeout: float,
        read_timeout: float,
    ) -> UpstreamResponse:
        """Send one request; the caller must `release()` the answer it gets."""
        pool = self.pools.get(upstream)
        if pool is None:
            pool = self.pools[upstream] = _Pool(self, upstream)
        head, chunked = encode_head(method, target, upstream.authority, headers, body is not None)
        # An idle connection is taken here, with no await between finding the pool and
        # holding it (so no `acquiring` count is needed): the common case makes no coroutine.
        conn = pool.take_idle() or await self._acquire_from(pool, connect_timeout, fresh=False)
        try:
            return await conn.send(head, body, chunked, read_timeout, method == "HEAD")
        except UpstreamFailure as exc:
            stale = (
                conn.reused
                and not conn.reader.received_any
                and exc.failure is errors.UPSTREAM_DISCONNECTED
                and body is None
                and method in IDEMPOTENT_METHODS
            )
            if not stale:
                raise
        conn = await self._acquire_from(pool, connect_timeout, fresh=True)
        return await conn.send(head, body, chunked, read_timeout, method == "HEAD")

    async def close(self) -> None:
        self._sweeper.cancel()
        for conn in list(self.all):
            conn.close()
        for pool in self.pools.values():
            for conn in pool.idle:
                conn.close()
            pool.idle.clear()
        # Let the transports run connection_lost, so nothing is left for the loop's end.
        await asyncio.sleep(0)


def encode_head(
    method: str, target: str, authority: str, headers: list[tuple[str, str]], has_body: bool
) -> tuple[bytes, bool]:
    """The request head as bytes, and whether the body goes chunked.

    The caller's headers are already clean (hygiene.request_headers); this adds Host when the
    caller did not, and the framing: the client's Content-Length when it sent one (the body is
    relayed as it comes), else chunked for a body of unknown length.
    """
    has_host = has_length = False
    lines = [f"{method} {target} HTTP/1.1\r\n"]
    for name, value in headers:
        lower = name.lower()
        if lower == "host":
            has_host = True
        elif lower == "content-length":
            has_length = True
        lines.append(f"{name}: {value}\r\n")
    if not has_host:
        lines.insert(1, f"Host: {authority}\r\n")
    chunked = has_body and not has_length
    if chunked:
        lines.append("Transfer-Encoding: chunked\r\n")
    elif not has_body and not has_length and method not in NO_BODY_METHODS:
        lines.append("Content-Length: 0\r\n")
    lines.append("\r\n")
    text = "".join(lines)
    # Every CR and LF must be a line end we wrote: a value may never split the head.
    if text.count("\r") != len(lines) or text.count("\n") != len(lines) or "\0" in text:
        raise RequestRefused(
            errors.HEAD_UNSENDABLE, "a request header or target holds CR, LF or NUL"
        )
    return text.encode("utf-8", "surrogateescape"), chunked
