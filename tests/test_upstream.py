"""The upstream client: pooling, framing and failure rules, against scripted raw upstreams."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest
import trustme

from corsproxy.http import errors
from corsproxy.http.errors import RequestRefused, UpstreamFailure
from corsproxy.http.upstream import MAX_LINE, UpstreamClient, encode_head
from corsproxy.policy.routes import Upstream
from tests.net import head_and_body, raw_exchange, raw_upstream, replies, running_proxy

# (connection number, request number on it, request head) -> reply bytes, or None to close.
Responder = Callable[[int, int, bytes], bytes | None]


@dataclass
class Scripted:
    """A raw upstream that reads whole requests (Content-Length bodies) and answers by script."""

    respond: Responder
    connections: int = 0
    heads: list[bytes] = field(default_factory=list)
    closed_by_peer: int = 0
    port: int = 0

    @property
    def upstream(self) -> Upstream:
        return Upstream("http", "127.0.0.1", self.port)

    async def on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        number = self.connections
        try:
            for index in range(100):
                try:
                    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
                except asyncio.IncompleteReadError:
                    self.closed_by_peer += 1
                    return
                self.heads.append(head)
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        await reader.readexactly(int(line.split(b":")[1]))
                reply = self.respond(number, index, head)
                if reply is None:
                    return
                writer.write(reply)
                await writer.drain()
        except (ConnectionError, TimeoutError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


@contextlib.asynccontextmanager
async def scripted(respond: Responder) -> AsyncIterator[Scripted]:
    upstream = Scripted(respond)
    server = await asyncio.start_server(upstream.on_connect, "127.0.0.1", 0)
    upstream.port = server.sockets[0].getsockname()[1]
    try:
        yield upstream
    finally:
        server.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(server.wait_closed(), 2)


@contextlib.asynccontextmanager
async def client(**kwargs: float) -> AsyncIterator[UpstreamClient]:
    c = UpstreamClient(**kwargs)  # type: ignore[arg-type]
    try:
        yield c
    finally:
        await c.close()


async def get(
    c: UpstreamClient,
    up: Upstream,
    method: str = "GET",
    body: list[bytes] | None = None,
    headers: list[tuple[str, str]] | None = None,
    read_timeout: float = 5,
) -> tuple[int, bytes]:
    async def chunks() -> AsyncIterator[bytes]:
        for chunk in body or []:
            yield chunk

    response = await c.request(
        up,
        method,
        "/x",
        headers or [],
        chunks() if body is not None else None,
        connect_timeout=2,
        read_timeout=read_timeout,
    )
    try:
        return response.status, await response.read()
    finally:
        response.release()


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


async def test_a_clean_answer_keeps_the_connection_for_the_next_request() -> None:
    async with scripted(lambda c, i, h: OK) as up, client() as c:
        for _ in range(3):
            assert await get(c, up.upstream) == (200, b"ok")
    assert up.connections == 1 and len(up.heads) == 3


@pytest.mark.parametrize(
    "reply",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
        b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA",  # stray bytes after the answer
    ],
    ids=["connection-close", "http-1.0", "stray-bytes"],
)
async def test_answers_that_end_the_connection_are_not_reused(reply: bytes) -> None:
    async with scripted(lambda c, i, h: reply) as up, client() as c:
        for _ in range(2):
            assert await get(c, up.upstream) == (200, b"ok")
            await asyncio.sleep(0.05)
    assert up.connections == 2


async def test_a_body_without_length_ends_at_eof_and_is_not_reused() -> None:
    reply = b"HTTP/1.1 200 OK\r\n\r\nuntil the end"
    async with raw_upstream(replies(reply)) as url, client() as c:
        up = Upstream("http", "127.0.0.1", int(url.rsplit(":", 1)[1]))
        assert await get(c, up) == (200, b"until the end")
        assert not c.all
        assert await get(c, up) == (200, b"until the end")


@pytest.mark.parametrize(
    ("method", "reply"),
    [
        ("HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
        ("HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"),
        ("HEAD", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"),
        ("HEAD", b"HTTP/1.1 200 OK\r\n\r\n"),
        ("GET", b"HTTP/1.1 204 No Content\r\n\r\n"),
        ("GET", b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n"),
        ("GET", b"HTTP/1.1 304 Not Modified\r\n\r\n"),
        ("GET", b"HTTP/1.1 304 Not Modified\r\nContent-Length: 0\r\n\r\n"),
    ],
    ids=[
        "head-cl-0", "head-cl-1000", "head-chunked", "head-unframed",
        "204", "204-cl-0", "304", "304-cl-0",
    ],
)  # fmt: skip
async def test_head_204_and_304_answers_have_no_body_and_never_keep_the_connection(
    method: str, reply: bytes
) -> None:
    """Their end is the method's or the status's, not their framing's, and that is where
    upstream apps write stray bodies (`do_HEAD = do_GET`, a body written after a 204): the
    connection is closed after them, even when they announced no body."""

    def respond(conn: int, index: int, head: bytes) -> bytes:
        return reply if (conn, index) == (1, 0) else OK

    async with scripted(respond) as up, client() as c:
        status = int(reply[9:12])
        assert await get(c, up.upstream, method) == (status, b"")
        assert not c.all  # closed at once, not pooled
        assert await get(c, up.upstream) == (200, b"ok")
        assert await get(c, up.upstream) == (200, b"ok")
    assert up.connections == 2  # the framed answers after it share one connection


async def test_informational_answers_are_skipped() -> None:
    reply = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" + OK
    async with scripted(lambda c, i, h: reply) as up, client() as c:
        assert await get(c, up.upstream) == (200, b"ok")
        assert await get(c, up.upstream) == (200, b"ok")
    assert up.connections == 1


@pytest.mark.parametrize(
    "reply",
    [
        b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * (MAX_LINE + 1) + b"\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n"
        + b"".join(b"X-H%d: %s\r\n" % (n, b"c" * 1000) for n in range(70))
        + b"Content-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 " + b"R" * (MAX_LINE + 1) + b"\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2, 3\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ],
    ids=["long-header", "head-over-64k", "long-reason", "bad-content-length", "bad-chunk"],
)
async def test_oversized_or_malformed_answers_fail_as_bad_responses(reply: bytes) -> None:
    async with scripted(lambda c, i, h: reply) as up, client() as c:
        with pytest.raises(UpstreamFailure) as caught:
            await get(c, up.upstream)
    assert caught.value.failure is errors.UPSTREAM_BAD_RESPONSE


async def test_a_read_timeout_between_arrivals_fails_the_body() -> None:
    async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        await writer.drain()
        await asyncio.sleep(5)

    async with raw_upstream(stall) as url, client() as c:
        port = int(url.rsplit(":", 1)[1])
        with pytest.raises(UpstreamFailure) as caught:
            await get(c, Upstream("http", "127.0.0.1", port), read_timeout=0.3)
    assert caught.value.failure is errors.UPSTREAM_TIMEOUT


async def test_an_early_answer_during_an_upload_is_relayed_and_the_connection_dropped() -> None:
    async def refuse_early(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 3\r\n\r\nbig")
        await writer.drain()
        await asyncio.sleep(5)  # never reads the body

    async with raw_upstream(refuse_early) as url, client() as c:
        port = int(url.rsplit(":", 1)[1])
        body = [b"x" * 65536] * 320  # 20 MiB: far more than the socket buffers hold
        headers = [("Content-Length", str(65536 * 320))]
        status, answer = await asyncio.wait_for(
            get(c, Upstream("http", "127.0.0.1", port), "POST", body, headers), 5
        )
        assert (status, answer) == (413, b"big")
        assert not c.all  # the half-sent request's connection was closed, not pooled


async def test_request_bodies_without_length_go_chunked() -> None:
    seen: list[bytes] = []

    async def record(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await reader.readuntil(b"0\r\n\r\n"))
        writer.write(OK)
        await writer.drain()

    async with raw_upstream(record) as url, client() as c:
        port = int(url.rsplit(":", 1)[1])
        assert await get(c, Upstream("http", "127.0.0.1", port), "POST", [b"abc", b"", b"de"]) == (
            200,
            b"ok",
        )
    assert seen == [b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"]


async def test_idle_connections_are_closed_after_the_keepalive_time() -> None:
    async with scripted(lambda c, i, h: OK) as up, client(keepalive=0.2) as c:
        assert await get(c, up.upstream) == (200, b"ok")
        for _ in range(40):
            if up.closed_by_peer:
                break
            await asyncio.sleep(0.1)
        assert up.closed_by_peer == 1
        assert not c.all


async def test_the_connection_bound_queues_requests_and_times_out_waiting() -> None:
    release = asyncio.Event()

    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for _ in range(5):
            await release.wait()
            writer.write(OK)
            await writer.drain()
            with contextlib.suppress(asyncio.IncompleteReadError):
                await reader.readuntil(b"\r\n\r\n")

    async with raw_upstream(slow) as url, client(limit=1) as c:
        up = Upstream("http", "127.0.0.1", int(url.rsplit(":", 1)[1]))
        first = asyncio.create_task(get(c, up))
        await asyncio.sleep(0.1)
        response = c.request(up, "GET", "/", [], None, connect_timeout=0.3, read_timeout=5)
        with pytest.raises(UpstreamFailure) as caught:
            await response
        assert caught.value.failure is errors.UPSTREAM_CONNECT_TIMEOUT
        second = asyncio.create_task(get(c, up))
        await asyncio.sleep(0.1)
        release.set()
        assert await first == (200, b"ok")
        assert await second == (200, b"ok")
        assert len(c.all) == 1


async def test_a_cancelled_exchange_closes_its_connection() -> None:
    async with scripted(lambda c, i, h: None if i else b"HTTP/1.1 200 OK\r\n") as up:
        async with client() as c:
            task = asyncio.create_task(get(c, up.upstream, read_timeout=5))
            await asyncio.sleep(0.2)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert not c.all
            await asyncio.sleep(0.1)
        assert up.connections == 1


async def test_a_101_to_a_plain_request_is_a_502() -> None:
    reply = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: upgrade\r\n\r\n"
    async with raw_upstream(replies(reply)) as up, running_proxy({"upstream": up}) as proxy:
        response = await raw_exchange(proxy, b"GET /x HTTP/1.1\r\nHost: p\r\n\r\n", wait=3)
    assert head_and_body(response)[0][0].startswith("HTTP/1.1 502")


# --- the request head ------------------------------------------------------------------

HEAD_CASES = [
    # (method, headers, has body) -> expected head lines after the request line, chunked
    ("GET", [("Accept", "*/*")], False, ["Host: up:8080", "Accept: */*"], False),
    ("GET", [("Host", "client.example")], False, ["Host: client.example"], False),
    ("POST", [], False, ["Host: up:8080", "Content-Length: 0"], False),
    ("DELETE", [], False, ["Host: up:8080"], False),
    ("POST", [("Content-Length", "3")], True, ["Host: up:8080", "Content-Length: 3"], False),
    ("PUT", [], True, ["Host: up:8080", "Transfer-Encoding: chunked"], True),
]


@pytest.mark.parametrize(("method", "headers", "has_body", "lines", "chunked"), HEAD_CASES)
def test_request_heads(
    method: str, headers: list[tuple[str, str]], has_body: bool, lines: list[str], chunked: bool
) -> None:
    head, is_chunked = encode_head(method, "/a?b=1", "up:8080", headers, has_body)
    assert head.decode().split("\r\n") == [f"{method} /a?b=1 HTTP/1.1", *lines, "", ""]
    assert is_chunked is chunked


@pytest.mark.parametrize(
    ("target", "headers"),
    [("/a\r\nX: y", []), ("/a", [("X", "a\r\nInjected: 1")]), ("/a", [("X", "a\nb")]),
     ("/a", [("X", "a\x00b")])],
)  # fmt: skip
def test_request_heads_never_split(target: str, headers: list[tuple[str, str]]) -> None:
    with pytest.raises(RequestRefused, match="CR, LF or NUL"):
        encode_head("GET", target, "up", headers, False)


async def test_concurrent_connects_never_exceed_the_bound() -> None:
    open_now = peak = 0

    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal open_now, peak
        open_now += 1
        peak = max(peak, open_now)
        try:
            while True:
                await asyncio.sleep(0.05)
                writer.write(OK)
                await writer.drain()
                await reader.readuntil(b"\r\n\r\n")
        finally:
            open_now -= 1

    async with raw_upstream(slow) as url, client(limit=2) as c:
        up = Upstream("http", "127.0.0.1", int(url.rsplit(":", 1)[1]))
        results = await asyncio.gather(*(get(c, up) for _ in range(8)))
    assert results == [(200, b"ok")] * 8
    assert peak == 2


# --- bytes that reached the kernel but not yet the protocol -----------------------------


async def unread_bytes_scenario(tls: bool) -> tuple[list[bytes], int]:
    """Three requests on one pooled connection, then response-shaped bytes reach it while the
    loop is blocked (they are in the kernel, data_received has not run), then a request takes
    a connection at once: it must not be that one."""
    writers: list[asyncio.StreamWriter] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                token = head.split(b" ")[1]
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(token), token)
                )
        writer.close()

    server_ctx = client_ctx = None
    if tls:
        ca = trustme.CA()
        server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
        client_ctx = ssl.create_default_context()
        ca.configure_trust(client_ctx)
    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]
    up = Upstream("https" if tls else "http", "127.0.0.1", port)
    c = UpstreamClient()
    c._ssl = client_ctx
    answers: list[bytes] = []

    async def fetch(target: str) -> None:
        response = await c.request(up, "GET", target, [], None, connect_timeout=2, read_timeout=5)
        try:
            answers.append(await response.read())
        finally:
            response.release()

    try:
        for target in ("/1", "/2", "/3"):
            await fetch(target)
            await asyncio.sleep(0.02)  # the upstream side is idle again
        writers[0].write(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nFORGED")
        time.sleep(0.1)  # noqa: ASYNC251 - blocks the loop on purpose: nothing is delivered
        await fetch("/4")
        return answers, len(writers)
    finally:
        await c.close()
        server.close()
        for writer in writers:
            writer.close()
            with contextlib.suppress(ConnectionError, ssl.SSLError, TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), 2)


@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
async def test_an_idle_connection_with_unread_bytes_in_the_kernel_is_not_handed_out(
    tls: bool,
) -> None:
    assert await unread_bytes_scenario(tls) == ([b"/1", b"/2", b"/3", b"/4"], 2)


@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
def test_the_unread_bytes_check_works_under_uvloop(tls: bool) -> None:
    uvloop = pytest.importorskip("uvloop")
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        assert runner.run(unread_bytes_scenario(tls)) == ([b"/1", b"/2", b"/3", b"/4"], 2)
