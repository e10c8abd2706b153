"""The access line at 3 a.m. (issue 15, section 5): where the request went (`upstream_url`),
what failed in plain words (`error`), every refusal reason (`reasons`), corsproxy's own body
bytes, a preflight's `request_method` and `request_headers`, a `pid` that is never null, and
the decision's details at `--log-level debug` only. Real `corsproxy serve` processes logging
JSON lines, upstreams on loopback; the error words' mapping is tested as a table."""

from __future__ import annotations

import asyncio
import calendar
import contextlib
import errno
import json
import logging
import re
import signal
import socket
import ssl
import struct
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.client_reqrep import ConnectionKey

from corsproxy.commands.demo import ENDPOINTS
from corsproxy.http import error_words as words
from corsproxy.http import errors
from corsproxy.http.error_words import error_words
from corsproxy.http.errors import UpstreamFailure
from corsproxy.ops.logs import _Formatter
from tests.net import free_port, head_and_body, header_values, raw_exchange, running_app, start_cli

APP = "https://app.example"
DEBUG_KEYS = {"action", "route_prefix", "origin_rule", "headers_added", "headers_stripped"}


# --- the words: a pure mapping ---------------------------------------------------------------


def _from(failure: errors.Failure, detail: str, cause: BaseException | None) -> UpstreamFailure:
    exc = UpstreamFailure(failure, detail)
    exc.__cause__ = cause
    return exc


def _cert_error() -> ssl.SSLCertVerificationError:
    exc = ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify")
    exc.verify_message = "self-signed certificate"
    return exc


def _connector_error(os_error: OSError) -> aiohttp.ClientConnectorError:
    key = ConnectionKey("api.internal", 443, True, True, None, None, None)
    return aiohttp.ClientConnectorError(key, os_error)


REFUSED = ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")
RESET = ConnectionResetError(errno.ECONNRESET, "Connection reset by peer")

NO_NAME = socket.gaierror(socket.EAI_NONAME, "Name or service not known")
E = errors
CERTIFICATE_REQUIRED = "TLS failed: tlsv13 alert certificate required"

WORDS: list[tuple[BaseException, str]] = [
    (REFUSED, "connection refused"),
    (_from(E.UPSTREAM_UNREACHABLE, repr(REFUSED), REFUSED), "connection refused"),
    (_from(E.UPSTREAM_CONNECT_TIMEOUT, "connect timeout", TimeoutError()), "timed out connecting"),
    (
        _from(E.UPSTREAM_CONNECT_TIMEOUT, "no free upstream connection", TimeoutError()),
        "timed out connecting: no free upstream connection",
    ),
    (OSError(errno.ETIMEDOUT, "Connection timed out"), "timed out connecting"),
    (_from(E.UPSTREAM_TIMEOUT, "read timeout", None), "timed out waiting for the answer"),
    (_from(E.UPSTREAM_DISCONNECTED, f"closed: {RESET!r}", RESET), "connection reset"),
    (_from(E.UPSTREAM_DISCONNECTED, "connection closed", None), words.CLOSED_WITHOUT_ANSWER),
    (_from(E.UPSTREAM_BAD_RESPONSE, "head too large", None), "invalid answer: head too large"),
    (_from(E.UPSTREAM_UNREACHABLE, repr(NO_NAME), NO_NAME), "name not resolved"),
    (
        _from(E.UPSTREAM_TLS, "TLS handshake failed: x", _cert_error()),
        "TLS: certificate verify failed: self-signed certificate",
    ),
    (_from(E.UPSTREAM_TLS, CERTIFICATE_REQUIRED, None), "TLS: tlsv13 alert certificate required"),
    (OSError(errno.EHOSTUNREACH, "No route to host"), "host unreachable"),
    (OSError(errno.ENETUNREACH, "Network is unreachable"), "network unreachable"),
    (_connector_error(REFUSED), "connection refused"),
    (_connector_error(NO_NAME), "name not resolved"),
    (aiohttp.ServerDisconnectedError(), "connection closed without an answer"),
    (aiohttp.ConnectionTimeoutError(), "timed out connecting"),
    (
        words.cut_short(_from(E.UPSTREAM_DISCONNECTED, "connection closed", None), 3, 100),
        "body cut short (3 of 100 bytes)",
    ),
    (
        words.cut_short(_from(E.UPSTREAM_DISCONNECTED, f"closed: {RESET!r}", RESET), 7, None),
        "body cut short (after 7 bytes): connection reset",
    ),
    (RuntimeError("uvloop said no"), "RuntimeError: uvloop said no"),
]  # fmt: skip


@pytest.mark.parametrize(("exc", "expected"), WORDS, ids=[w for _, w in WORDS])
def test_failures_read_as_plain_words(exc: BaseException, expected: str) -> None:
    assert error_words(exc) == expected


@pytest.mark.parametrize("exc", [exc for exc, _ in WORDS], ids=[w for _, w in WORDS])
def test_no_words_are_a_nested_repr(exc: BaseException) -> None:
    said = error_words(exc)
    assert (
        not re.search(r"\w\(", said)
        and "ConnectionKey" not in said
        and "Error" not in said.split(":")[-1]
    )


def test_words_are_bounded() -> None:
    assert len(error_words(RuntimeError("x" * 10_000))) == 300


def test_a_list_field_is_joined_in_a_text_line() -> None:
    record = logging.LogRecord("corsproxy.access", logging.WARNING, __file__, 0, "m", None, None)
    record.fields = {"reasons": ["method_not_allowed:PUT", "header_not_allowed:x-token"], "x": []}
    line = _Formatter(json_lines=False).format(record)
    assert line.endswith(" reasons=method_not_allowed:PUT,header_not_allowed:x-token")
    as_json = json.loads(_Formatter(json_lines=True).format(record))
    assert as_json["reasons"] == ["method_not_allowed:PUT", "header_not_allowed:x-token"]


# --- a real process, JSON lines -----------------------------------------------------------


@contextlib.asynccontextmanager
async def proxy(
    *args: str, raw: list[str] | None = None
) -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    """`corsproxy serve` with `args`; after the block, the access records it wrote (and in
    `raw`, every line of its stderr)."""
    proc, url = start_cli("--listen", "127.0.0.1:0", *args)
    records: list[dict[str, Any]] = []
    try:
        yield url, records
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            _, err = proc.communicate(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate(timeout=10)
    if raw is not None:
        raw += err.splitlines()
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert not [r for r in lines if r.get("level") == "error"], err[-3000:]
    records += [r for r in lines if r.get("logger") == "corsproxy.access"]
    for record in lines:  # no line of the process ever says `pid: null`
        assert record.get("pid", 0) is not None, record


def config_file(tmp_path: Path, upstream: str, cors: str = "", **extra: str) -> str:
    path = tmp_path / "corsproxy.yaml"
    lines = [f"upstream: {upstream}", "cors:", f"  allow_origins: [{APP}]"]
    lines += [f"  {cors}"] if cors else []
    lines += [f"{key}: {value}" for key, value in extra.items()]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def get(path: str, origin: str = APP) -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: p\r\nOrigin: {origin}\r\nConnection: close\r\n\r\n".encode()
    )


def preflight(method: str, headers: str = "") -> bytes:
    lines = [
        "OPTIONS /api/x HTTP/1.1",
        "Host: p",
        f"Origin: {APP}",
        f"Access-Control-Request-Method: {method}",
    ]
    if headers:
        lines.append(f"Access-Control-Request-Headers: {headers}")
    return ("\r\n".join([*lines, "Connection: close", "", ""])).encode()


def status_and_body(reply: bytes) -> tuple[int, bytes]:
    head, body = head_and_body(reply)
    return int(head[0].split()[1]), body


async def test_an_upstream_that_refuses_is_connection_refused_with_its_url(
    tmp_path: Path,
) -> None:
    port = free_port()  # nothing listens there
    async with proxy("--config", config_file(tmp_path, f"http://127.0.0.1:{port}/base")) as (
        url,
        records,
    ):
        reply = await raw_exchange(url, get("/api/items?api_key=secret"))
    status, body = status_and_body(reply)
    assert status == 502
    (line,) = records
    assert line["error"] == "upstream_unreachable: connection refused"
    # Where it went, the query left out (it may hold keys); `path` is what the client sent.
    assert line["upstream_url"] == f"http://127.0.0.1:{port}/base/api/items"
    assert line["path"] == "/api/items?api_key=secret"
    assert line["bytes"] == len(body) > 0  # corsproxy's own 502 body
    assert isinstance(line["pid"], int)


@contextlib.contextmanager
def blackhole() -> Iterator[int]:
    """127.0.0.1:port listening with a full backlog nobody accepts: a connect hangs."""
    server = socket.socket()
    fillers: list[socket.socket] = []
    try:
        server.bind(("127.0.0.1", 0))
        server.listen(0)
        port = server.getsockname()[1]
        for _ in range(4):
            filler = socket.socket()
            fillers.append(filler)
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(("127.0.0.1", port))
        yield port
    finally:
        for filler in fillers:
            filler.close()
        server.close()


async def test_an_upstream_that_never_accepts_is_timed_out_connecting(tmp_path: Path) -> None:
    with blackhole() as port:
        doc = config_file(tmp_path, f"http://127.0.0.1:{port}", timeouts="{connect: 0.5}")
        async with proxy("--config", doc) as (url, records):
            reply = await raw_exchange(url, get("/slow"))
    assert status_and_body(reply)[0] == 504
    (line,) = records
    assert line["error"] == "upstream_connect_timeout: timed out connecting"
    assert line["upstream_url"] == f"http://127.0.0.1:{port}/slow"


@contextlib.asynccontextmanager
async def tcp_upstream(
    then: str,
) -> AsyncIterator[str]:
    """An upstream that reads the request head, then stays silent or resets the connection."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            if then == "reset":
                sock = writer.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            else:
                await asyncio.wait_for(reader.read(), 10)  # until the proxy gives up
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()
        await server.wait_closed()


async def test_a_silent_upstream_is_timed_out_waiting_for_the_answer(tmp_path: Path) -> None:
    async with tcp_upstream("silent") as upstream:
        doc = config_file(tmp_path, upstream, timeouts="{read: 0.5}")
        async with proxy("--config", doc) as (url, records):
            reply = await raw_exchange(url, get("/x"))
    assert status_and_body(reply)[0] == 504
    assert records[0]["error"] == "upstream_timeout: timed out waiting for the answer"


async def test_an_upstream_that_resets_is_connection_reset(tmp_path: Path) -> None:
    async with tcp_upstream("reset") as upstream:
        async with proxy("--config", config_file(tmp_path, upstream)) as (url, records):
            reply = await raw_exchange(url, get("/x"))
    assert status_and_body(reply)[0] == 502
    assert records[0]["error"] == "upstream_disconnected: connection reset"


async def ok(request: web.Request) -> web.Response:
    # An upstream with CORS of its own: corsproxy replaces it (logged at debug).
    return web.Response(text="ok", headers={"Access-Control-Allow-Origin": "*"})


@pytest.fixture
async def upstream() -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", ok)
    async with running_app(app) as url:
        yield url


async def test_a_preflight_refused_for_two_reasons_logs_both_and_what_it_asked(
    upstream: str, tmp_path: Path
) -> None:
    async with proxy("--config", config_file(tmp_path, upstream)) as (url, records):
        refused = await raw_exchange(url, preflight("PUT", "x-token, content-type"))
        allowed = await raw_exchange(url, preflight("GET"))
    status, body = status_and_body(refused)
    assert status == 403
    assert body.startswith(b"CORS preflight refused")
    line = records[0]
    assert line["cors"] == "refused"
    assert line["reason"] == "method_not_allowed:PUT"  # the first, as before
    assert line["reasons"] == ["method_not_allowed:PUT", "header_not_allowed:x-token"]
    assert line["request_method"] == "PUT"
    assert line["request_headers"] == "x-token, content-type"
    assert line["bytes"] == len(body)  # the refusal's own body, counted
    assert "upstream_url" not in line  # it never went upstream
    ok_line = records[1]
    assert status_and_body(allowed)[0] == 204
    assert (ok_line["request_method"], ok_line["bytes"]) == ("GET", 0)
    assert "request_headers" not in ok_line and "reasons" not in ok_line


async def test_corsproxys_own_403_body_is_counted_in_bytes(upstream: str, tmp_path: Path) -> None:
    doc = config_file(tmp_path, upstream, cors="on_disallowed: reject")
    async with proxy("--config", doc) as (url, records):
        reply = await raw_exchange(url, get("/x", origin="https://evil.example"))
    status, body = status_and_body(reply)
    assert status == 403 and body == b"CORS request refused: origin not allowed\n"
    (line,) = records
    assert (line["bytes"], line["reasons"]) == (len(body), ["origin_not_allowed"])
    assert "request_method" not in line  # not a preflight


async def test_the_decisions_details_are_logged_at_debug_only(
    upstream: str, tmp_path: Path
) -> None:
    doc = config_file(tmp_path, upstream)
    async with proxy("--config", doc) as (url, info):
        await raw_exchange(url, get("/x"))
    async with proxy("--config", doc, "--log-level", "debug") as (url, debug):
        reply = await raw_exchange(url, get("/x"))
        await raw_exchange(url, preflight("PUT"))
    assert not DEBUG_KEYS & set(info[0]), info[0]
    assert info[0]["upstream_url"] == f"{upstream}/x"
    head, _ = head_and_body(reply)
    assert header_values(head, "Access-Control-Allow-Origin") == [APP]
    forwarded, refused = debug
    assert forwarded["action"] == "forward"
    assert forwarded["route_prefix"] == "/"
    assert forwarded["origin_rule"] == APP
    assert forwarded["headers_added"] == [f"Access-Control-Allow-Origin: {APP}", "Vary: Origin"]
    assert forwarded["headers_stripped"] == ["Access-Control-Allow-Origin"]  # the upstream's
    assert refused["action"] == "refuse"
    assert "method_overrides_dropped" not in refused  # none was sent


async def test_the_demo_lists_its_endpoints_and_echoes_the_request_id() -> None:
    async with proxy("--demo") as (url, _):
        async with aiohttp.ClientSession() as client:
            async with client.get(f"{url}/") as response:
                assert response.status == 200
                listing = await response.json()
            ids = []
            for sent in ("my-id-1", None, None):
                headers = {"Origin": "http://localhost:3000"}
                if sent:
                    headers["X-Request-Id"] = sent
                async with client.get(f"{url}/api/hello", headers=headers) as response:
                    assert response.status == 200
                    ids.append(response.headers["X-Request-Id"])
    assert listing["endpoints"] == ENDPOINTS
    assert set(ENDPOINTS) >= {"GET /", "GET /api/hello", "ANY /api/echo"}
    assert ids[0] == "my-id-1"  # the client's id, through corsproxy, back from the demo
    assert len(set(ids)) == 3 and "demo-1" not in ids


# --- the reviewer's findings (issue 15, section 5 follow-up) ---------------------------------


def valid_json_line(line: str) -> dict[str, Any]:
    """`line` is one JSON object of valid Unicode: no lone surrogate, escaped or not."""
    assert "\\ud" not in line.lower(), line  # json.dumps writes a lone surrogate as \udcff
    line.encode("utf-8")  # strict: a raw lone surrogate fails here
    parsed: dict[str, Any] = json.loads(line)
    return parsed


PARSER_REFUSED = [
    # (request, method, path, origin, error)
    (
        f"purge /x HTTP/1.1\r\nHost: p\r\nOrigin: {APP}\r\n\r\n".encode(),
        "purge", "/x", None, "bad_request: invalid method",
    ),
    (
        b"G\x1bET /x HTTP/1.1\r\nHost: p\r\n\r\n",
        "-", "-", None, "bad_request: invalid method",
    ),
    (
        f"GET /x HTTP/1.1\r\nHost: p\r\nOrigin: {APP}\x1b[31m\r\n\r\n".encode(),
        "-", "-", f"{APP}\x1b[31m", "bad_request: invalid header value char",
    ),
    (
        f"GET /x HTTP/1.1\r\nHost: p\r\nOrigin: {APP}\r\nX-A: a\rb\r\n\r\n".encode(),
        "-", "-", None, "bad_request: missing expected lf after header value",
    ),
    (  # the parser's words have an apostrophe: they are not cut there
        b"POST /x HTTP/1.1\r\nHost: p\r\nContent-Length: 3\r\n"
        b"Transfer-Encoding: chunked\r\n\r\nabc",
        "-", "-", None, "bad_request: transfer-encoding can't be present with content-length",
    ),
]  # fmt: skip


async def test_requests_the_parser_refuses_get_one_access_line_each(
    upstream: str, tmp_path: Path
) -> None:
    raw: list[str] = []
    doc = config_file(tmp_path, upstream)
    async with proxy("--config", doc, "--log-level", "debug", raw=raw) as (url, records):
        replies = [await raw_exchange(url, request) for request, *_ in PARSER_REFUSED]
    assert len(records) == len(PARSER_REFUSED), records
    for reply, line, (_, method, path, origin, error) in zip(
        replies, records, PARSER_REFUSED, strict=True
    ):
        status, body = status_and_body(reply)
        head, _ = head_and_body(reply)
        assert status == 400
        assert line["level"] == "warning" and line["status"] == 400
        assert (line["method"], line["path"], line["error"]) == (method, path, error)
        assert line["reason"] == "bad_request" and line["action"] == "bad_request"
        assert line.get("origin") == origin
        assert line["bytes"] == len(body) > 0 and line["peer"] == "127.0.0.1"
        assert header_values(head, "X-Request-Id") == [line["request_id"]]
    # Every line of the process is one JSON object: no aiohttp message over several lines,
    # no traceback even at debug, no separate "bad request from" warning.
    assert raw and all(line.startswith("{") for line in raw), raw
    parsed = [valid_json_line(line) for line in raw]
    assert not [p for p in parsed if "exception" in p or "bad request" in p["message"]], parsed


async def test_a_path_refusal_logs_the_origin_at_warning_with_its_action(
    upstream: str, tmp_path: Path
) -> None:
    doc = tmp_path / "routes.yaml"
    doc.write_text(
        f"cors: {{allow_origins: [{APP}]}}\nroutes:\n"
        f"  - {{path_prefix: /star, upstream: {upstream}, cors: {{allow_origins: ['*']}}}}\n"
        f"  - {{path_prefix: /ro2, upstream: {upstream}}}\n"
    )
    async with proxy("--config", str(doc), "--log-level", "debug") as (url, records):
        reply = await raw_exchange(url, get("/star%2f..%2fro2/x"))
    assert status_and_body(reply)[0] == 400
    (line,) = records
    assert (line["reason"], line["origin"]) == ("path_ambiguous", APP)
    assert line["level"] == "warning"
    assert line["action"] == "bad_request"


async def test_fields_that_do_not_apply_are_left_out(upstream: str, tmp_path: Path) -> None:
    request = b"GET /x HTTP/1.1\r\nHost: p\r\nConnection: close\r\n\r\n"  # no Origin
    async with proxy("--config", config_file(tmp_path, upstream)) as (url, records):
        await raw_exchange(url, request)
        await raw_exchange(url, get("/x"))
    plain, with_origin = records
    assert "origin" not in plain and "error" not in plain, plain
    assert plain["cors"] == "none" and plain["upstream_status"] == 200
    assert with_origin["origin"] == APP and "error" not in with_origin


async def test_method_overrides_dropped_only_when_one_was_sent(
    upstream: str, tmp_path: Path
) -> None:
    evil = "https://evil.example"
    sent = get("/x", origin=evil).replace(b"\r\n\r\n", b"\r\nX-HTTP-Method-Override: PUT\r\n\r\n")
    doc = config_file(tmp_path, upstream)
    async with proxy("--config", doc, "--log-level", "debug") as (url, records):
        await raw_exchange(url, get("/x", origin=evil))
        await raw_exchange(url, sent)
    without, with_override = records
    assert without["cors"] == with_override["cors"] == "refused"
    assert "method_overrides_dropped" not in without
    assert with_override["method_overrides_dropped"] is True


@contextlib.asynccontextmanager
async def truncating_upstream(length: int, sent: int) -> AsyncIterator[str]:
    """An upstream that answers 200 with Content-Length `length`, sends `sent` bytes of the
    body, then closes."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            writer.write(f"HTTP/1.1 200 OK\r\nContent-Length: {length}\r\n\r\n".encode())
            writer.write(b"x" * sent)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()
        await server.wait_closed()


async def test_a_body_cut_short_says_so_before_the_head_went_out(tmp_path: Path) -> None:
    async with truncating_upstream(100, 3) as up:
        async with proxy("--config", config_file(tmp_path, up)) as (url, records):
            reply = await raw_exchange(url, get("/x"))
    assert status_and_body(reply)[0] == 502
    (line,) = records
    assert (line["status"], line["upstream_status"]) == (502, 200)
    assert line["error"] == "upstream_disconnected: body cut short (3 of 100 bytes)"


async def test_a_body_cut_short_after_the_head_says_the_client_connection_was_cut(
    tmp_path: Path,
) -> None:
    length, sent = 200_000, 100_000  # over SMALL_BODY: streamed, the head leaves first
    async with truncating_upstream(length, sent) as up:
        async with proxy("--config", config_file(tmp_path, up)) as (url, records):
            reply = await raw_exchange(url, get("/x"))
    status, body = status_and_body(reply)
    assert status == 200 and len(body) == sent < length  # cut short, never complete
    (line,) = records
    assert (line["status"], line["upstream_status"], line["bytes"]) == (200, 200, sent)
    assert line["error"] == (
        f"upstream_body_cut_short: body cut short ({sent} of {length} bytes); "
        "client connection closed"
    )
    assert line["level"] == "warning"


async def test_bytes_that_are_not_utf8_are_logged_as_escapes(upstream: str, tmp_path: Path) -> None:
    request = (
        b"OPTIONS /x HTTP/1.1\r\nHost: p\r\nOrigin: http://\xff\xfe.example\r\n"
        b"Access-Control-Request-Method: PUT\r\nAccess-Control-Request-Headers: a\xc3\x28\r\n"
        b"Connection: close\r\n\r\n"
    )
    raw: list[str] = []
    async with proxy("--config", config_file(tmp_path, upstream), raw=raw) as (url, _):
        await raw_exchange(url, request)
    (line,) = [line for line in raw if "OPTIONS /x" in line]
    record = valid_json_line(line)
    assert record["origin"] == "http://\\xff\\xfe.example"
    assert record["request_headers"] == "a\\xc3("


def test_a_text_line_escapes_bytes_that_are_not_utf8() -> None:
    # What aiohttp makes of `Origin: http://\xff.example` (surrogateescape).
    origin = b"http://\xff.example".decode("utf-8", "surrogateescape")
    record = logging.LogRecord(
        "corsproxy.access", logging.INFO, __file__, 0, "GET %s 200", ("/\udcfe",), None
    )
    record.fields = {"origin": origin, "plain": "caf\u00e9"}
    line = _Formatter(json_lines=False).format(record)
    line.encode("utf-8")  # strict: no lone surrogate left
    assert "GET /\\xfe 200" in line
    assert 'origin="http://\\\\xff.example"' in line and 'plain="caf\\u00e9"' in line


async def test_client_chosen_values_are_capped(upstream: str, tmp_path: Path) -> None:
    long_path = "/" + "p" * 5000
    request = (
        f"GET {long_path} HTTP/1.1\r\nHost: p\r\nOrigin: http://{'a' * 8000}.example\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    async with proxy("--config", config_file(tmp_path, upstream)) as (url, records):
        await raw_exchange(url, request)
    (line,) = records
    origin_more = len("http://") + 8000 + len(".example") - 512
    assert line["origin"] == f"http://{'a' * 505}…(+{origin_more} chars)"
    assert line["path"] == f"{long_path[:2048]}…(+{len(long_path) - 2048} chars)"
    assert len(line["message"]) < 2100


# --- the line a real process writes, against the 4f845a8 formatter ----------------------------


def _reference_line(line: str) -> str:
    """`line` as the 4f845a8 formatter (tests/test_log_format.py `old_line`) writes a record
    with the same fields at the same millisecond."""
    from tests.test_log_format import old_line

    record = json.loads(line)
    stamp = record.pop("time")
    second = calendar.timegm(time.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S"))
    now = second + (int(stamp[20:23]) + 0.5) / 1000
    levelno = logging.getLevelName(record.pop("level").upper())
    assert record.pop("logger") == "corsproxy.access"
    record.pop("message")
    return old_line(True, levelno, record, now)


async def test_a_real_processs_json_lines_are_the_reference_formatters_byte_for_byte(
    upstream: str, tmp_path: Path
) -> None:
    """Every shape the default settings write (an allowed GET, preflights allowed and refused
    with what they asked, a refused origin, an upstream that fails, hard client bytes), from a
    real process: the lines built straight from the exchange are the old formatter's."""
    raw: list[str] = []
    config = config_file(
        tmp_path, upstream, "allow_methods: [GET, PUT]", routes="[{path_prefix: /down, "
        f"upstream: 'http://127.0.0.1:{free_port()}'}}, {{path_prefix: /}}]",
    )  # fmt: skip
    async with proxy("--config", config, raw=raw) as (url, _):
        await raw_exchange(url, get("/a?key=secret"))
        await raw_exchange(url, get('/q"\\%22é', origin="https://evil.example"))
        await raw_exchange(url, preflight("PUT", "x-token, content-type"))
        await raw_exchange(url, preflight("PUT"))
        await raw_exchange(url, preflight("DELETE", "x-a"))
        await raw_exchange(url, get("/down/x"))
        await raw_exchange(
            url,
            b'GET /\xff\xfe"x HTTP/1.1\r\nHost: p\r\nOrigin: http://\xc3\x28.example\r\n'
            b"X-Request-Id: my-id\r\nConnection: close\r\n\r\n",
        )
    lines = [line for line in raw if '"logger":"corsproxy.access"' in line]
    assert len(lines) == 7, raw
    for line in lines:
        assert line == _reference_line(line)


async def test_a_preflights_client_is_the_forwarded_one_only_from_a_trusted_proxy(
    upstream: str, tmp_path: Path
) -> None:
    """A preflight's answer needs no client view; its access line's `client` still says
    what a trusted proxy forwarded, and the peer when the peer is not trusted."""
    forwarded = preflight("PUT").replace(
        b"Host: p\r\n", b"Host: p\r\nX-Forwarded-For: 198.51.100.4\r\n"
    )
    for trusted, client in (("[127.0.0.1]", "198.51.100.4"), ("[10.0.0.0/8]", "127.0.0.1")):
        config = config_file(tmp_path, upstream, "allow_methods: [PUT]", trusted_proxies=trusted)
        async with proxy("--config", config) as (url, records):
            await raw_exchange(url, forwarded)
        assert [(r["method"], r["peer"], r["client"]) for r in records] == [
            ("OPTIONS", "127.0.0.1", client)
        ]
