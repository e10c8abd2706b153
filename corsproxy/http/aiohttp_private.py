"""Every use of aiohttp's private API, in one place, each with the contract it relies on.

aiohttp gives a server no public way to do a few things a proxy must: answer a request its
parser refused with our own response, drop the `Server` and `Content-Type` headers it adds by
default, fix the version of an answer it would echo, find the sockets a site bound, write an
interim `100 Continue`. Those seams live here and nowhere else; tests/test_aiohttp_contract.py
checks each against the installed aiohttp, so a release that changes one fails loudly in CI
(and pyproject.toml keeps an upper bound on aiohttp's version).
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Sequence
from typing import Any

from aiohttp import web
from aiohttp.http import HttpVersion
from aiohttp.web_protocol import RequestHandler

__all__ = [
    "DefaultHeadersHook",
    "HandlerClassServer",
    "RequestHandler",
    "bound_sockets",
    "send_interim",
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
