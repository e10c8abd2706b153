"""Every use of aiohttp's private API, in one place, each with the contract it relies on.

aiohttp gives a server no public way to do a few things a proxy must: answer a request its
parser refused with our own response, drop the `Server` and `Content-Type` headers it adds by
default, fix the version of an answer it would echo, find the sockets a site bound, write an
interim `100 Continue`. Those seams live here and nowhere else; tests/test_aiohttp_contract.py
checks each against the installed aiohttp, so a release that changes one fails loudly in CI
(and pyproject.toml keeps an upper bound on aiohttp's version).
"""

from __future__ import annotations

import asyncio
import functools
import socket
from collections.abc import Callable, Sequence
from typing import Any

from aiohttp import WebSocketError, web
from aiohttp.helpers import rfc822_formatted_time
from aiohttp.http import HttpVersion
from aiohttp.http_writer import _serialize_headers
from aiohttp.web_protocol import RequestHandler
from multidict import CIMultiDict

__all__ = [
    "DefaultHeadersHook",
    "HandlerClassServer",
    "HandshakeTimeoutSite",
    "LingeringCloseHook",
    "RequestHandler",
    "bound_sockets",
    "http_date",
    "parser_accepts_header",
    "parser_accepts_method",
    "send_interim",
    "serialize_head",
    "set_version",
    "uses_c_parser",
]


class DefaultHeadersHook:
    """Mixed into a response: `after_default_headers()` runs once aiohttp has added its
    defaults (`Server`, a `Content-Type` for a body) and before the head is encoded.

    Contract: `StreamResponse._prepare_headers()` is the coroutine `prepare()` awaits to fill
    the defaults, before `_write_headers()` encodes `self.headers`.
    """

    headers: Any

    async def _prepare_headers(self) -> None:
        await super()._prepare_headers()  # type: ignore[misc]
        self.after_default_headers()

    def after_default_headers(self) -> None:
        """Edit `self.headers` after aiohttp's defaults; the base class drops `Server`."""
        self.headers.popall("server", None)


class LingeringCloseHook:
    """Mixed into a WebSocketResponse: a connection aiohttp fails (a message over the limit, a
    protocol error) is closed the way nginx closes an HTTP connection it refused, lingering.

    aiohttp sends its CLOSE (1009, 1002) and closes the socket at once, while the client is
    usually still sending the rest of the message that was too big: the kernel answers that
    with a reset, and a browser that meets the reset while writing (Firefox) reports 1006
    instead of the code it was sent. Here the write side is shut after the CLOSE (a FIN), and
    what the client still sends is read and discarded until it closes too, or
    `LINGER_TIMEOUT` ends. Over TLS (no half-close) the socket is closed as before.

    Contract: `WebSocketResponse._close_transport()` is how aiohttp closes the socket (from
    `close()` and `receive()`); `_exception` holds the reader's `WebSocketError` when it
    failed the connection; `_req.transport` is the connection. After the reader failed,
    `RequestHandler.data_received()` drops what arrives (its parser answers eof: close()).
    """

    LINGER_TIMEOUT = 5.0
    _lingering = False
    _exception: BaseException | None
    _req: web.BaseRequest | None

    def _close_transport(self) -> None:
        transport = None if self._req is None else self._req.transport
        if (
            transport is None
            or transport.is_closing()
            or not isinstance(self._exception, WebSocketError)
            or not transport.can_write_eof()
        ):
            super()._close_transport()  # type: ignore[misc]
            return
        self._lingering = True
        transport.write_eof()  # after the CLOSE frame still in the buffer
        if not transport.is_reading():  # paused while messages were queued
            transport.resume_reading()
        asyncio.get_running_loop().call_later(self.LINGER_TIMEOUT, transport.close)

    async def lingered(self) -> None:
        """Return once a lingering close is over: the client closed, or the time is up.
        aiohttp cancels the handler when the client closes; that ends the wait too."""
        transport = None if self._req is None else self._req.transport
        if transport is None or not self._lingering:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.LINGER_TIMEOUT
        try:
            # aiohttp says nothing when the client closes an upgraded connection (bar
            # cancelling the handler): a short poll, bounded by LINGER_TIMEOUT.
            while not transport.is_closing() and loop.time() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is None or not transport.is_closing():
                raise
            task.uncancel()


class HandlerClassServer(web.Server):
    """A low-level server whose connections run `handler_class`, a RequestHandler subclass.

    Contract: `web.Server.__call__()` makes the protocol of each new connection as
    `RequestHandler(self, loop=self._loop, **self._kwargs)`, and `_kwargs` holds the
    keyword arguments the server was made with.
    """

    def __init__(
        self,
        handler: Callable[[web.BaseRequest], Any],
        *,
        handler_class: type[RequestHandler],
        **kwargs: Any,
    ) -> None:
        super().__init__(handler, **kwargs)
        self._handler_class = handler_class

    def __call__(self) -> RequestHandler:
        return self._handler_class(self, loop=self._loop, **self._kwargs)


class HandshakeTimeoutSite(web.TCPSite):
    """A TCPSite whose TLS handshakes are bounded by `ssl_handshake_timeout` (asyncio's
    default is 60 s: a client that connects and never finishes its ClientHello holds a
    socket that long). aiohttp's TCPSite does not take it.

    Contract: `TCPSite.start()` awaits `BaseSite.start()`, then makes `self._server` with
    `loop.create_server(self._runner.server, self._host, self._port, ssl=self._ssl_context,
    backlog=, reuse_address=, reuse_port=)` from the same-named attributes, and records the
    bound port in `_bound_port` (the `port` property).
    """

    __slots__ = ("_handshake_timeout",)

    def __init__(self, *args: Any, ssl_handshake_timeout: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._handshake_timeout = ssl_handshake_timeout

    async def start(self) -> None:
        if self._ssl_context is None:
            await super().start()
            return
        await web.BaseSite.start(self)
        server = self._runner.server
        assert server is not None
        self._server = await asyncio.get_running_loop().create_server(
            server,
            self._host,
            self._port,
            ssl=self._ssl_context,
            backlog=self._backlog,
            reuse_address=self._reuse_address,
            reuse_port=self._reuse_port,
            ssl_handshake_timeout=self._handshake_timeout,
        )
        sockets = self._server.sockets
        self._bound_port = sockets[0].getsockname()[1] if sockets else self._port


def set_version(request: web.BaseRequest, version: HttpVersion) -> None:
    """Answer `request` as `version`: aiohttp writes the request's own version in the status
    line (`HTTP/2.0 505`, or `HTTP/1.0` for the placeholder of a request it could not parse).

    Contract: `BaseRequest.version` is a cached property (`reify`) stored in `_cache`.
    """
    request._cache["version"] = version


def bound_sockets(site: web.TCPSite) -> Sequence[socket.socket]:
    """The sockets a started site listens on (port 0 picks one).

    Contract: `TCPSite._server` is the `asyncio.Server` that `start()` made.
    """
    return list(getattr(site._server, "sockets", None) or ())


def uses_c_parser() -> bool:
    """Whether the server parses requests with llhttp (aiohttp's C extension), not with its
    pure-Python parser (AIOHTTP_NO_EXTENSIONS, or no compiled wheel).

    Contract: `web_protocol.HttpRequestParser` is the parser class the server uses, and is
    `http_parser.HttpRequestParserPy` when the extension is not in use.
    """
    from aiohttp import http_parser, web_protocol

    return getattr(web_protocol, "HttpRequestParser", None) is not http_parser.HttpRequestParserPy


async def send_interim(request: web.BaseRequest, head: bytes) -> None:
    """Write an interim answer (`HTTP/1.1 100 Continue`) before the final one.

    Contract: `BaseRequest.writer` is the connection's `StreamWriter`, and `write()` sends
    bytes as they are, before any response is prepared.
    """
    await request.writer.write(head)


def _parser_reads(head: str) -> bool:
    from aiohttp import web_protocol
    from aiohttp.http_exceptions import BadHttpMessage

    loop = asyncio.new_event_loop()
    try:
        parser = web_protocol.HttpRequestParser(  # type: ignore[attr-defined]
            None, loop, 2**16, max_line_size=8190, max_field_size=8190
        )
        parser.feed_data(head.encode("latin-1"))
    except (BadHttpMessage, UnicodeEncodeError):
        return False
    finally:
        loop.close()
    return True


@functools.lru_cache(maxsize=256)
def parser_accepts_header(name: str, value: str) -> bool:
    """Whether the server's request parser reads a request with this header (llhttp answers
    400 to a control character other than tab in a value, e.g. DEL, which fetch() sends),
    for `explain`. Same contract as `parser_accepts_method`."""
    return _parser_reads(f"GET / HTTP/1.1\r\nHost: x\r\n{name}: {value}\r\n\r\n")


@functools.lru_cache(maxsize=256)
def parser_accepts_method(method: str) -> bool:
    """Whether the server's request parser reads a request line with this method (llhttp
    knows a fixed list of upper-case methods and answers 400 to any other), for `explain`.

    Contract: `web_protocol.HttpRequestParser(protocol, loop, limit, max_line_size=...,
    max_field_size=...)` is the parser class the server uses; `feed_data()` raises
    `BadHttpMessage` (or a subclass) for a request line it refuses.
    """
    return _parser_reads(f"{method} / HTTP/1.1\r\nHost: x\r\n\r\n")


def serialize_head(status_line: str, headers: Sequence[tuple[str, str]]) -> bytes:
    """A response head as aiohttp's server writes it: `status_line`, each header as
    `Name: value` in order, CRLFs, UTF-8; a control character in a name or value raises
    ValueError (aiohttp refuses to send it).

    Contract: `http_writer._serialize_headers(status_line, CIMultiDict)` is the function
    `StreamWriter.write_headers()` encodes a response head with.
    """
    result: bytes = _serialize_headers(status_line, CIMultiDict(headers))
    return result


_date_text = ""
_date_bytes = b""


def http_date() -> bytes:
    """The `Date` value aiohttp's responses carry (formatted once per second), as bytes.

    Contract: `helpers.rfc822_formatted_time()` is what `StreamResponse._prepare_headers()`
    sets `Date` to, and returns the same string object until the second changes.
    """
    global _date_text, _date_bytes
    text = rfc822_formatted_time()
    if text is not _date_text:
        _date_text, _date_bytes = text, text.encode()
    return _date_bytes
