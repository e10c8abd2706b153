"""The contracts corsproxy/http/aiohttp_private.py relies on, checked against the installed aiohttp.

Each test exercises one seam for real (a server on loopback, raw bytes where the wire
matters), so an aiohttp release that renames or changes a private attribute or method fails
here, by name, instead of somewhere in the proxy's behaviour.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import re
import socket
import ssl
import textwrap
import time

import trustme
from aiohttp import web
from aiohttp.http import HttpVersion10, HttpVersion11
from aiohttp.test_utils import make_mocked_request

from corsproxy.http.aiohttp_private import (
    DefaultHeadersHook,
    HandlerClassServer,
    HandshakeTimeoutSite,
    RequestHandler,
    bound_sockets,
    http_date,
    parser_accepts_header,
    parser_accepts_method,
    send_interim,
    serialize_head,
    set_version,
    uses_c_parser,
)
from corsproxy.http.preflight_answer import PreflightAnswer, Prepared


async def _raw_exchange(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(reader.read(65536), 5)
    finally:
        writer.close()


async def _serve(
    handler: object, handler_class: type[RequestHandler] = RequestHandler
) -> tuple[web.ServerRunner, web.TCPSite, int]:
    server = HandlerClassServer(handler, handler_class=handler_class)  # type: ignore[arg-type]
    runner = web.ServerRunner(server)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    sockets = bound_sockets(site)
    assert sockets and all(
        isinstance(s, socket.socket) or hasattr(s, "getsockname") for s in sockets
    )
    return runner, site, sockets[0].getsockname()[1]


def test_set_version_changes_the_cached_version() -> None:
    request = make_mocked_request("GET", "/", version=HttpVersion10)
    assert request.version == HttpVersion10
    set_version(request, HttpVersion11)
    assert request.version == HttpVersion11


def test_the_handler_hook_keeps_aiohttp_signature() -> None:
    parameters = list(inspect.signature(RequestHandler.handle_error).parameters)
    assert parameters[:5] == ["self", "request", "status", "exc", "message"]
    assert callable(RequestHandler.log_exception)


async def test_connections_run_the_handler_class_with_the_server_arguments() -> None:
    made: list[RequestHandler] = []

    class Recording(RequestHandler):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)  # type: ignore[arg-type]
            made.append(self)

    async def handler(request: web.BaseRequest) -> web.StreamResponse:
        return web.Response(text="ok")

    server = HandlerClassServer(handler, handler_class=Recording, max_field_size=1234)
    runner = web.ServerRunner(server)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = bound_sockets(site)[0].getsockname()[1]
        answer = await _raw_exchange(
            port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        assert answer.startswith(b"HTTP/1.1 200")
        assert len(made) == 1
        # The server's keyword arguments reach the handler: a field over max_field_size fails.
        long = b"X-Long: " + b"a" * 2000 + b"\r\n"
        answer = await _raw_exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\n" + long + b"\r\n")
        assert not answer.startswith(b"HTTP/1.1 200"), answer[:80]
    finally:
        await runner.cleanup()


async def test_the_default_headers_hook_runs_after_aiohttp_adds_server() -> None:
    class Plain(DefaultHeadersHook, web.Response):
        pass

    class KeepsServer(DefaultHeadersHook, web.Response):
        def after_default_headers(self) -> None:
            self.headers["X-Hooked"] = "1"

    async def handler(request: web.BaseRequest) -> web.StreamResponse:
        kind = Plain if request.path == "/plain" else KeepsServer
        return kind(text="ok")

    runner, _, port = await _serve(handler)
    try:
        plain = await _raw_exchange(port, b"GET /plain HTTP/1.1\r\nHost: x\r\n\r\n")
        hooked = await _raw_exchange(port, b"GET /hooked HTTP/1.1\r\nHost: x\r\n\r\n")
    finally:
        await runner.cleanup()
    assert b"\r\nserver:" not in plain.lower(), plain  # aiohttp's own default was dropped
    assert b"\r\nserver:" in hooked.lower() and b"X-Hooked: 1" in hooked, hooked


async def test_an_interim_answer_leaves_before_the_final_one() -> None:
    async def handler(request: web.BaseRequest) -> web.StreamResponse:
        await send_interim(request, b"HTTP/1.1 100 Continue\r\n\r\n")
        return web.Response(text="ok")

    runner, _, port = await _serve(handler)
    try:
        answer = await _raw_exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    finally:
        await runner.cleanup()
    assert answer.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n"), answer


def test_the_c_parser_is_detected() -> None:
    # CI installs aiohttp from a wheel: the C parser is what serves.
    assert uses_c_parser()


async def test_the_parser_probe_agrees_with_the_server() -> None:
    """`parser_accepts_method` (for explain) says what a real server's parser does with a
    request line: llhttp reads registered upper-case methods and answers others with 400."""

    async def ok(request: web.Request) -> web.Response:
        return web.Response(text=request.method)

    server = web.Server(ok)
    runner = web.ServerRunner(server)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        for method in ("GET", "PUT", "PATCH", "QUERY", "PROPFIND", "put", "patch", "FOO", "Get"):
            head = f"{method} / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            answer = await _raw_exchange(port, head.encode())
            parsed = answer.split(b" ", 2)[1] != b"400"
            assert parser_accepts_method(method) is parsed, (method, answer[:40])
    finally:
        await runner.cleanup()
    assert parser_accepts_method("PUT") and not parser_accepts_method("put")


async def test_the_header_value_probe_agrees_with_the_server() -> None:
    """`parser_accepts_header` (for explain) says what a real server's parser does with a
    header value fetch() sends: tab and obs-text pass, DEL and other controls get 400."""

    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    server = web.Server(ok)
    runner = web.ServerRunner(server)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    values = ["text/plain", "a\tb", "caf\xe9", "text/plain\x7f", "a\x01b", "\x1bx", "a\x0bb"]
    try:
        for value in values:
            head = f"GET / HTTP/1.1\r\nHost: x\r\nX-A: {value}\r\nConnection: close\r\n\r\n"
            answer = await _raw_exchange(port, head.encode("latin-1"))
            parsed = answer.split(b" ", 2)[1] != b"400"
            assert parser_accepts_header("X-A", value) is parsed, (value, answer[:40])
    finally:
        await runner.cleanup()
    assert parser_accepts_header("X-A", "a\tb") and not parser_accepts_header("X-A", "a\x7f")


def test_tcpsite_start_passes_only_the_arguments_the_handshake_site_repeats() -> None:
    """HandshakeTimeoutSite.start() repeats TCPSite.start()'s create_server call: a new
    argument there (one we would drop) fails here."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(web.TCPSite.start)))
    calls = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "create_server"
    ]
    assert len(calls) == 1
    assert {k.arg for k in calls[0].keywords} == {"ssl", "backlog", "reuse_address", "reuse_port"}
    assert [ast.unparse(a) for a in calls[0].args] == ["server", "self._host", "self._port"]
    for name in ("_host", "_port", "_bound_port", "_reuse_address", "_reuse_port"):
        assert name in web.TCPSite.__slots__
    for name in ("_ssl_context", "_backlog", "_runner", "_server"):
        assert name in web.BaseSite.__slots__


async def test_the_handshake_site_bounds_a_handshake_and_still_serves_tls() -> None:
    ca = trustme.CA()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1").configure_cert(context)

    async def handler(request: web.BaseRequest) -> web.StreamResponse:
        return web.Response(text="ok")

    runner = web.ServerRunner(web.Server(handler))
    await runner.setup()
    site = HandshakeTimeoutSite(
        runner, "127.0.0.1", 0, ssl_context=context, ssl_handshake_timeout=1.0
    )
    await site.start()
    try:
        port = bound_sockets(site)[0].getsockname()[1]
        assert site.port == port
        client = ssl.create_default_context()
        ca.configure_trust(client)
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert (await asyncio.wait_for(reader.read(), 5)).endswith(b"ok")
        writer.close()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)  # no handshake
        started = time.monotonic()
        assert await asyncio.wait_for(reader.read(), 20) == b""
        assert time.monotonic() - started < 15  # 1 s; asyncio's default would be 60 s
        writer.close()
    finally:
        await runner.cleanup()


async def test_serialize_head_writes_what_a_response_writes() -> None:
    pairs = [("Access-Control-Allow-Origin", "https://a.example"), ("Vary", "Origin"), ("X-A", "é")]

    async def handler(request: web.BaseRequest) -> web.StreamResponse:
        response = web.Response(status=204)
        for name, value in pairs:
            response.headers.add(name, value)
        return response

    runner, _, port = await _serve(handler)
    try:
        answer = await _raw_exchange(port, b"OPTIONS / HTTP/1.1\r\nHost: x\r\n\r\n")
    finally:
        await runner.cleanup()
    ours = serialize_head("HTTP/1.1 204 No Content", pairs)
    assert ours.endswith(b"\r\n\r\n")
    assert answer.startswith(ours[:-2] + b"Date: "), (answer, ours)
    try:
        serialize_head("X", [("X-A", "a\r\nX-B: b")])
    except ValueError:
        pass
    else:
        raise AssertionError("a CRLF in a value was serialized")


async def test_http_date_is_the_date_aiohttp_writes() -> None:
    async def handler(request: web.BaseRequest) -> web.StreamResponse:
        return web.Response(status=204)

    runner, _, port = await _serve(handler)
    try:
        for _ in range(5):  # the second may turn between the two readings
            answer = await _raw_exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            if b"\r\nDate: " + http_date() + b"\r\n" in answer:
                break
        else:
            raise AssertionError(answer)
    finally:
        await runner.cleanup()


async def test_a_response_that_writes_its_head_in_prepare_keeps_the_connection() -> None:
    """PreflightAnswer: aiohttp calls `prepare()` then `write_eof()` on what a handler
    returns, reads `keep_alive` to keep the connection, and the connection's writer sends
    `write_eof(head)` as it is."""
    answer = Prepared(b" 204 No Content\r\n", b"X-A: 1\r\n", "allowed", "preflight")

    async def handler(request: web.BaseRequest) -> web.StreamResponse:
        return PreflightAnswer(answer, "id1")

    runner, _, port = await _serve(handler)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        heads = []
        for last in (False, True):
            close = b"Connection: close\r\n" if last else b""
            writer.write(b"OPTIONS / HTTP/1.1\r\nHost: x\r\n" + close + b"\r\n")
            heads.append(await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5))
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed after the second
        writer.close()
    finally:
        await runner.cleanup()
    first = re.sub(rb"\r\nDate: [^\r]+\r\n", b"\r\nDate: -\r\n", heads[0])
    assert first == b"HTTP/1.1 204 No Content\r\nX-A: 1\r\nX-Request-Id: id1\r\nDate: -\r\n\r\n"
    assert heads[1].endswith(b"\r\nConnection: close\r\n\r\n"), heads


async def test_a_response_s_headers_are_not_read_after_write_eof() -> None:
    """relay.py's responses clear their headers once written (an idle keep-alive connection
    would hold them: RequestHandler.start() keeps its last response): aiohttp must read
    nothing of them after `write_eof()` but `keep_alive`, which still keeps the connection
    for the next request and closes it after a `Connection: close` one."""

    class Released(web.Response):
        async def write_eof(self, data: bytes = b"") -> None:
            await super().write_eof(data)
            self.headers.clear()

    async def handler(request: web.BaseRequest) -> web.StreamResponse:
        response = Released(body=b"hello")
        response.headers["X-A"] = "1"
        return response

    runner, _, port = await _serve(handler)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        heads = []
        for last in (False, False, True):
            close = b"Connection: close\r\n" if last else b""
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n" + close + b"\r\n")
            heads.append(await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5))
            assert await asyncio.wait_for(reader.readexactly(5), 5) == b"hello"
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed after the last
        writer.close()
    finally:
        await runner.cleanup()
    for head in heads:
        assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"\r\nX-A: 1\r\n" in head, head
    assert b"Connection: close" not in heads[1] and b"Connection: close" in heads[2]


def test_the_lingering_close_hook_overrides_how_aiohttp_closes_a_websocket() -> None:
    """LingeringCloseHook replaces WebSocketResponse._close_transport (called by close() and
    receive()) and reads `_exception` and `_req`, which aiohttp sets in __init__/prepare."""
    from corsproxy.http.aiohttp_private import LingeringCloseHook

    assert callable(getattr(web.WebSocketResponse, "_close_transport", None))
    for caller in (web.WebSocketResponse.close, web.WebSocketResponse._set_code_close_transport):
        assert "_close_transport" in inspect.getsource(caller)
    ws = web.WebSocketResponse()
    assert ws._exception is None and ws._req is None
    assert "_close_transport" in LingeringCloseHook.__dict__
