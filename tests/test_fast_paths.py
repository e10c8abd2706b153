"""The small-answer fast paths (http/headers.py: `clean_head`, http/response_head.py) against
the plain code, as a client and an upstream meet them: generated requests and upstream answers
go through a real corsproxy once with the fast paths and once without (the private switch
`headers._FAST_PATHS`), and the bytes the upstream received and the bytes the client got must
be the same. Headers include hop-by-hop ones and names a `Connection` lists, duplicates,
forwarding headers, odd casing, upstream CORS and Vary headers, URL and cookie headers the
route rewrites, and non-ASCII values."""

from __future__ import annotations

import asyncio
import re
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from corsproxy.http import headers as hygiene
from corsproxy.http import server
from tests.net import TIMEOUT, running_proxy

ORIGIN = "https://app.example.com"


@dataclass
class _Upstream:
    """A raw upstream: records each request head, answers with `answer` (keep-alive)."""

    answer: bytes = b"HTTP/1.1 204 No Content\r\n\r\n"
    heads: list[bytes] = field(default_factory=list)
    port: int = 0
    writers: set[asyncio.StreamWriter] = field(default_factory=set)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.add(writer)
        try:
            while True:
                async with asyncio.timeout(TIMEOUT):
                    head = await reader.readuntil(b"\r\n\r\n")
                self.heads.append(head)
                writer.write(self.answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, TimeoutError):
            pass
        finally:
            self.writers.discard(writer)
            writer.close()


@dataclass
class _Rig:
    url: str
    upstream: _Upstream
    loop: asyncio.AbstractEventLoop


@pytest.fixture(scope="module")
def rig() -> Iterator[_Rig]:
    """corsproxy and the raw upstream on a loop of their own (hypothesis drives the test
    from this thread, one request at a time)."""
    loop = asyncio.new_event_loop()
    upstream = _Upstream()
    started: dict[str, str] = {}
    ready = threading.Event()
    stop = asyncio.Event()

    async def main() -> None:
        listener = await asyncio.start_server(upstream.handle, "127.0.0.1", 0)
        upstream.port = listener.sockets[0].getsockname()[1]
        doc = {
            "upstream": f"http://127.0.0.1:{upstream.port}",
            "cors": {"allow_origins": [ORIGIN], "allow_methods": ["GET", "PUT"], "max_age": 600},
        }
        async with running_proxy(doc) as url:
            started["url"] = url
            ready.set()
            await stop.wait()
        listener.close()
        for writer in list(upstream.writers):
            writer.close()
        await asyncio.sleep(0.1)  # the handlers see their connections closed and end

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    assert ready.wait(TIMEOUT), "corsproxy did not start"
    try:
        yield _Rig(started["url"], upstream, loop)
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(TIMEOUT)
        loop.close()


def _exchange(url: str, request: bytes) -> bytes:
    """One request on a fresh connection; the answer, read to its Content-Length."""
    host, port = re.match(r"http://([^:/]+):(\d+)", url).groups()  # type: ignore[union-attr]
    with socket.create_connection((host, int(port)), timeout=TIMEOUT) as sock:
        sock.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                return data
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        found = re.search(rb"(?im)^content-length:\s*(\d+)", head)
        length = int(found.group(1)) if found else 0
        while len(body) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
        return head + b"\r\n\r\n" + body


_ID = re.compile(re.escape(server._ID_PREFIX).encode() + rb"[0-9a-f]{16}")
_DATE = re.compile(rb"(?im)^(date:)[^\r\n]*")


def _normal(data: bytes) -> bytes:
    """The proxy's own request ids and a Date aiohttp adds differ between two requests."""
    return _DATE.sub(rb"\1 -", _ID.sub(b"<id>", data))


def _cased(name: str) -> st.SearchStrategy[str]:
    return st.sampled_from([name, name.lower(), name.upper(), name.title()])


_VALUE_TEXT = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=0, max_size=20
).map(str.strip)
_REQUEST_NAMES = [
    "Accept", "Cookie", "Authorization", "X-Token", "X-Forwarded-For", "X-Forwarded-Host",
    "Forwarded", "X-Real-IP", "X-Request-Id", "Max-Forwards", "Keep-Alive", "TE", "Trailer",
    "Proxy-Authorization", "X-Http-Method-Override", "X_Forwarded_For", "X-Original-URL",
    "Content-Type", "Accept-Encoding", "Via",
]  # fmt: skip
_request_header = st.tuples(
    st.sampled_from(_REQUEST_NAMES).flatmap(_cased),
    st.one_of(_VALUE_TEXT, st.sampled_from(["1", "0", "req-123", "10.0.0.1, 10.0.0.2"])),
)
_connection = st.lists(st.sampled_from([*_REQUEST_NAMES, "keep-alive", "close"]), max_size=3).map(
    lambda names: ("Connection", ", ".join(names))
)


@st.composite
def _requests(draw: st.DrawFn) -> bytes:
    headers = draw(st.lists(st.one_of(_request_header, _connection), max_size=8))
    origin = draw(st.sampled_from([[ORIGIN], ["https://evil.example"], [], ["null"]]))
    lines = [("Host", "proxy.example"), *(("Origin", o) for o in origin), *headers]
    # A value the client sent as UTF-8 (aiohttp hands it on as text).
    if draw(st.booleans()):
        lines.append(("X-Note", draw(st.sampled_from(["caf\u00e9", "\u2603 snow", "na\u00efve"]))))
    path = draw(st.sampled_from(["/small.json", "/a/b?x=1&y=%20", "/%7Euser/"]))
    head = f"GET {path} HTTP/1.1\r\n" + "".join(f"{n}: {v}\r\n" for n, v in lines) + "\r\n"
    return head.encode("utf-8")


_RESPONSE_NAMES = [
    "Server", "Date", "Content-Type", "Cache-Control", "ETag", "Last-Modified", "Vary",
    "Access-Control-Allow-Origin", "Access-Control-Expose-Headers", "Set-Cookie", "Location",
    "Link", "Alt-Svc", "Keep-Alive", "Proxy-Authenticate", "Trailer", "Upgrade",
    "X-Powered-By", "X-Custom", "Strict-Transport-Security", "X-Request-Id",
]  # fmt: skip
_response_value = st.one_of(
    _VALUE_TEXT.map(str.encode),
    st.sampled_from(
        [
            b"Origin",
            b"Accept-Encoding, Origin",
            b"*",
            b"id=1; Path=/; HttpOnly",
            b"http://127.0.0.1:1/next",
            b"</next>; rel=next",
            "caf\u00e9".encode(),  # UTF-8
            b"caf\xe9",  # latin-1
            b"a\x7fb",  # DEL: not a field-value byte
        ]
    ),
)
_response_header = st.tuples(
    st.sampled_from(_RESPONSE_NAMES).flatmap(_cased).map(str.encode), _response_value
)
_response_connection = st.lists(
    st.sampled_from([*_RESPONSE_NAMES, "keep-alive"]), min_size=1, max_size=3
).map(lambda names: (b"Connection", ", ".join(names).encode()))


@st.composite
def _answers(draw: st.DrawFn) -> bytes:
    status = draw(st.sampled_from([b"200 OK", b"201 Created", b"404 Not Found", b"500 Oops"]))
    headers = draw(st.lists(st.one_of(_response_header, _response_connection), max_size=9))
    body = draw(st.binary(max_size=40))
    lines = [*headers, (b"Content-Length", str(len(body)).encode())]
    head = b"HTTP/1.1 " + status + b"\r\n" + b"".join(n + b": " + v + b"\r\n" for n, v in lines)
    return head + b"\r\n" + body


def _through(rig: _Rig, request: bytes, answer: bytes, fast: bool) -> tuple[bytes, bytes]:
    rig.upstream.answer = answer
    rig.upstream.heads.clear()
    hygiene._FAST_PATHS = fast
    try:
        got = _exchange(rig.url, request)
    finally:
        hygiene._FAST_PATHS = True
    sent = b"".join(rig.upstream.heads)
    return _normal(sent), _normal(got)


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(request=_requests(), answer=_answers())
def test_fast_paths_change_no_byte(rig: _Rig, request: bytes, answer: bytes) -> None:
    plain = _through(rig, request, answer, fast=False)
    fast = _through(rig, request, answer, fast=True)
    assert fast[0] == plain[0]  # what the upstream received
    assert fast[1] == plain[1]  # what the client got
    assert plain[1].startswith(b"HTTP/1.1 ")


def test_the_fast_path_is_taken_for_a_clean_head() -> None:
    """The oracle compares something: a clean ASCII head takes the fast path, and one the
    plain path must judge (a control byte, non-ASCII) does not."""
    clean = [(b"Server", b"nginx"), (b"Connection", b"keep-alive, X-Hop"), (b"X-Hop", b"1")]
    head = hygiene.clean_head(clean)
    assert head is not None
    assert head.headers == [("Server", "nginx")]
    assert hygiene.relayable_response_headers(clean) == ([("Server", "nginx")], 0)
    assert hygiene.clean_head([(b"X-A", b"caf\xc3\xa9")]) is None
    assert hygiene.clean_head([(b"X-A", b"a\x01b")]) is None
    hygiene._FAST_PATHS = False
    try:
        assert hygiene.clean_head(clean) is None
    finally:
        hygiene._FAST_PATHS = True
