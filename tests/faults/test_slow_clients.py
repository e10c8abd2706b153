"""Slow clients must not starve everyone (issue 11, section 3), against a real corsproxy
process: request bodies are received before an upstream connection is taken (up to
`limits.request_buffer`), a body below `limits.min_body_rate` is a 408, and a request that
waits for a free upstream connection past `timeouts.connect` is a 504 that says why.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.faults.harness import APP, POLICY, Proxy, get, header, proxy, status
from tests.net import TIMEOUT, head_and_body

BLOCK = b"0123456789abcdef" * 4096  # 64 KiB


@dataclass
class Seen:
    """One request as the upstream received it; `body` grows while it arrives."""

    path: str
    headers: dict[str, str]
    body: bytearray = field(default_factory=bytearray)
    complete: bool = False


@dataclass
class Upstream:
    """A keep-alive HTTP/1.1 upstream that records bodies as they arrive (Content-Length or
    chunked), answers 200 `ok` once a body is complete (after `delay` seconds for /slow),
    and can stop reading bodies for `stall` seconds after their first `stall_after` bytes.
    /huge gets an `answer` bytes long body instead, written with backpressure."""

    delay: float = 0.0
    answer: int = 0
    stall: float = 0.0
    stall_after: int = 0
    connections: int = 0
    open: int = 0
    most_open: int = 0
    seen: list[Seen] = field(default_factory=list)
    cut: asyncio.Event = field(default_factory=asyncio.Event)  # a body ended early
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def paths(self) -> list[str]:
        return [s.path for s in self.seen]

    async def on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open += 1
        self.most_open = max(self.most_open, self.open)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                fields = [line.split(":", 1) for line in lines[1:] if ":" in line]
                seen = Seen(lines[0].split()[1], {k.lower(): v.strip() for k, v in fields})
                self.seen.append(seen)
                await self._body(reader, seen)
                seen.complete = True
                if seen.path == "/slow":
                    await asyncio.sleep(self.delay)
                if seen.path == "/huge":
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % self.answer)
                    for _ in range(self.answer // len(BLOCK)):
                        writer.write(BLOCK)
                        await writer.drain()
                    continue
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            self.cut.set()
        finally:
            self.open -= 1
            writer.close()

    async def _body(self, reader: asyncio.StreamReader, seen: Seen) -> None:
        if "content-length" in seen.headers:
            await self._read(reader, seen, int(seen.headers["content-length"]))
        elif seen.headers.get("transfer-encoding") == "chunked":
            while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
                await self._read(reader, seen, size)
                await reader.readexactly(2)
            await reader.readuntil(b"\r\n")  # no trailers

    async def _read(self, reader: asyncio.StreamReader, seen: Seen, size: int) -> None:
        end = len(seen.body) + size
        while len(seen.body) < end:
            if self.stall and len(seen.body) >= self.stall_after:
                await asyncio.sleep(self.stall)
                self.stall = 0.0
            chunk = await reader.read(min(65536, end - len(seen.body)))
            if not chunk:
                raise asyncio.IncompleteReadError(b"", size)
            seen.body += chunk


@contextlib.asynccontextmanager
async def recording(**kwargs: float) -> AsyncIterator[Upstream]:
    up = Upstream(**kwargs)  # type: ignore[arg-type]
    server = await asyncio.start_server(up.on_connect, "127.0.0.1", 0)
    up.port = server.sockets[0].getsockname()[1]
    try:
        yield up
    finally:
        server.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(server.wait_closed(), 2)


async def connect(px: Proxy) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = px.url[7:].split(":")
    return await asyncio.open_connection(host, int(port))


async def answer(reader: asyncio.StreamReader, limit: float = TIMEOUT) -> bytes:
    """One whole answer (a Content-Length body), bounded in time."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), limit)
    length = [line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")]
    body = await asyncio.wait_for(reader.readexactly(int(length[0].split(b":")[1])), limit)
    return head + body


async def closed(reader: asyncio.StreamReader, limit: float = 5.0) -> bool:
    """Whether the proxy closes the connection within `limit` seconds."""
    try:
        async with asyncio.timeout(limit):
            while await reader.read(65536):
                pass
    except ConnectionError:
        return True
    except TimeoutError:
        return False
    return True


def access_lines(px: Proxy, path: str, code: int) -> list[str]:
    return [line for line in px.log if f"{path} {code}" in line]


async def eventually(condition: Callable[[], object], limit: float = TIMEOUT) -> None:
    """Poll what another process or connection does: there is nothing to wait on."""
    deadline = time.monotonic() + limit
    while not condition() and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    assert condition(), "condition not met in time"


async def test_drippers_hold_no_upstream_connection_while_others_are_served(
    tmp_path: Path,
) -> None:
    doc = {
        "cors": POLICY,
        "timeouts": {"connect": "2s", "read": "10s"},
        # The rate is off: this proves the buffering alone keeps the pool free.
        "limits": {"upstream_connections": 4, "min_body_rate": 0},
    }
    async with recording() as up, proxy(tmp_path, {"upstream": up.url, **doc}) as px:
        drippers = [await connect(px) for _ in range(40)]
        for _, writer in drippers:
            writer.write(b"POST /drip HTTP/1.1\r\nHost: p\r\nTransfer-Encoding: chunked\r\n\r\n")
        for second in range(4):
            for _, writer in drippers:
                writer.write(b"1\r\n%d\r\n" % second)
            # Without buffering, 4 drippers would hold every upstream connection and these
            # would wait for one past timeouts.connect: 504.
            replies = await asyncio.gather(*(get(px.url, f"/ok{second}") for _ in range(5)))
            assert [status(r) for r in replies] == [200] * 5
            await asyncio.sleep(1)
        assert "/drip" not in up.paths()  # not one connection or byte from a dripper yet
        for _, writer in drippers:
            writer.write(b"0\r\n\r\n")
        for reader, writer in drippers:
            assert status(await answer(reader)) == 200
            writer.close()
        drips = [s for s in up.seen if s.path == "/drip"]
        assert len(drips) == 40
        assert all(bytes(s.body) == b"0123" for s in drips)
        assert all(s.headers.get("content-length") == "4" for s in drips)
        # The pool holds at most 4. The upstream sees a closed connection's EOF after the
        # proxy has freed its slot and connected anew, and every request with a body has a
        # connection of its own (closed after its answer): on a slow run (asyncio debug
        # mode in CI) a few closes lag, so the upstream's own count may run a little over.
        assert up.most_open <= 8
        await px.healthy()


async def test_a_body_below_min_body_rate_is_408_and_the_connection_closed(
    tmp_path: Path,
) -> None:
    doc = {
        "cors": POLICY,
        "timeouts": {"read": "10s"},  # the idle timeout never fires here: each gap is 0.25 s
        "limits": {"min_body_rate": 100, "min_body_rate_grace": "2s"},
    }
    async with recording() as up, proxy(tmp_path, {"upstream": up.url, **doc}) as px:
        reader, writer = await connect(px)
        writer.write(
            f"POST /trickle HTTP/1.1\r\nHost: p\r\nOrigin: {APP}\r\n"
            "Content-Length: 1000\r\n\r\n".encode()
        )
        started = time.monotonic()
        received = asyncio.create_task(answer(reader))
        while not received.done() and time.monotonic() - started < TIMEOUT:
            writer.write(b"x" * 5)  # 20 bytes/s: below 100 bytes/s
            await asyncio.sleep(0.25)
        response = await received
        assert status(response) == 408
        assert 1.8 < time.monotonic() - started < 6  # after the grace period, not before
        assert header(response, "Access-Control-Allow-Origin") == [APP]
        with contextlib.suppress(ConnectionError):
            writer.write(b"x" * 5)  # still sending: the proxy closes anyway
        assert await closed(reader)
        writer.close()
        assert up.connections == 0  # the body never reached the upstream
        await eventually(lambda: access_lines(px, "/trickle", 408))
        assert "request body below min_body_rate" in access_lines(px, "/trickle", 408)[0]
        await px.healthy()


async def test_a_body_slow_at_first_but_above_the_rate_on_average_is_forwarded(
    tmp_path: Path,
) -> None:
    doc = {"limits": {"min_body_rate": 100, "min_body_rate_grace": "2s"}}
    async with recording() as up, proxy(tmp_path, {"upstream": up.url, **doc}) as px:
        reader, writer = await connect(px)
        writer.write(b"POST /late HTTP/1.1\r\nHost: p\r\nContent-Length: 1600\r\n\r\n")
        await asyncio.sleep(1)  # nothing during half the grace period
        writer.write(b"a" * 1000)
        for _ in range(10):  # then 120 bytes/s for 5 s: 1600 bytes in 6 s on average
            await asyncio.sleep(0.5)
            writer.write(b"b" * 60)
        assert status(await answer(reader)) == 200
        writer.close()
        assert [bytes(s.body) for s in up.seen] == [b"a" * 1000 + b"b" * 600]
        await px.healthy()


async def test_a_streaming_body_that_falls_below_the_rate_aborts_the_upstream_exchange(
    tmp_path: Path,
) -> None:
    doc = {
        "cors": POLICY,
        "timeouts": {"read": "10s"},
        "limits": {"min_body_rate": 50_000, "min_body_rate_grace": "1s"},
    }
    async with recording() as up, proxy(tmp_path, {"upstream": up.url, **doc}) as px:
        reader, writer = await connect(px)
        writer.write(
            f"POST /big HTTP/1.1\r\nHost: p\r\nOrigin: {APP}\r\n"
            "Content-Length: 1000000\r\n\r\n".encode()
        )
        writer.write(b"p" * 100_000)  # over the buffer: streamed; 2 s of credit at 50 kB/s
        await eventually(lambda: up.seen and len(up.seen[0].body) == 100_000)
        received = asyncio.create_task(answer(reader))
        started = time.monotonic()
        while not received.done() and time.monotonic() - started < TIMEOUT:
            writer.write(b"x" * 10)
            await asyncio.sleep(0.25)
        response = await received
        assert status(response) == 408
        assert header(response, "Access-Control-Allow-Origin") == [APP]
        assert await closed(reader)
        writer.close()
        await asyncio.wait_for(up.cut.wait(), 3)  # the upstream exchange was aborted
        assert not up.seen[0].complete
        await eventually(lambda: access_lines(px, "/big", 408))
        assert "request body below min_body_rate" in access_lines(px, "/big", 408)[0]
        await px.healthy()


async def test_a_slow_upstream_does_not_make_a_fast_client_look_slow(tmp_path: Path) -> None:
    # The upstream stops reading for 4 s after 1 MiB: the proxy stops reading the client
    # (backpressure). That time is not the client's: at 4 MB/s over wall-clock time, the
    # few MiB in socket buffers would fall below the rate.
    size = 40 * 1024 * 1024
    doc = {
        "timeouts": {"read": "20s"},
        "limits": {"min_body_rate": 4_000_000, "min_body_rate_grace": "1s"},
    }
    async with (
        recording(stall=4.0, stall_after=1024 * 1024) as up,
        proxy(tmp_path, {"upstream": up.url, **doc}) as px,
    ):
        reader, writer = await connect(px)
        writer.write(b"POST /fast HTTP/1.1\r\nHost: p\r\nContent-Length: %d\r\n\r\n" % size)
        block = os.urandom(1024 * 1024)
        for _ in range(size // len(block)):
            writer.write(block)
            await writer.drain()
        response = await answer(reader, 30)
        assert status(response) == 200, head_and_body(response)[1]
        writer.close()
        assert len(up.seen[0].body) == size
        await px.healthy()


async def test_a_request_waiting_for_a_free_upstream_connection_is_504_and_says_why(
    tmp_path: Path,
) -> None:
    doc = {
        "cors": POLICY,
        "timeouts": {"connect": "1s", "read": "10s"},
        "limits": {"upstream_connections": 1},
    }
    async with recording(delay=3.0) as up, proxy(tmp_path, {"upstream": up.url, **doc}) as px:
        slow = asyncio.create_task(get(px.url, "/slow"))
        await eventually(lambda: "/slow" in up.paths())  # it holds the only connection
        started = time.monotonic()
        response = await get(px.url, "/waits")
        assert status(response) == 504
        assert time.monotonic() - started > 0.8  # it waited (and gave up before /slow ended)
        assert header(response, "Access-Control-Allow-Origin") == [APP]
        assert status(await slow) == 200
        assert up.paths() == ["/slow"]
        await eventually(lambda: access_lines(px, "/waits", 504))
        line = access_lines(px, "/waits", 504)[0]
        assert "no free upstream connection" in line, line
        assert status(await get(px.url, "/after")) == 200  # the slot is free again
        await px.healthy()


async def test_a_small_chunked_body_arrives_whole_with_a_content_length(tmp_path: Path) -> None:
    parts = [os.urandom(1000), os.urandom(20_000), os.urandom(5)]
    async with recording() as up, proxy(tmp_path, {"upstream": up.url}) as px:
        reader, writer = await connect(px)
        writer.write(b"POST /small HTTP/1.1\r\nHost: p\r\nTransfer-Encoding: chunked\r\n\r\n")
        for part in parts:
            writer.write(b"%x\r\n%s\r\n" % (len(part), part))
            await asyncio.sleep(0.2)
        writer.write(b"0\r\n\r\n")
        assert status(await answer(reader)) == 200
        writer.close()
        (seen,) = up.seen
        assert bytes(seen.body) == b"".join(parts)
        assert seen.headers.get("content-length") == "21005"
        assert "transfer-encoding" not in seen.headers
        await px.healthy()


async def test_a_body_over_the_buffer_streams_before_the_client_finished(tmp_path: Path) -> None:
    first, rest = os.urandom(100_000), os.urandom(50_000)
    async with recording() as up, proxy(tmp_path, {"upstream": up.url}) as px:
        for framing in ("chunked", "length"):
            before = len(up.seen)
            reader, writer = await connect(px)
            if framing == "chunked":
                head = b"Transfer-Encoding: chunked\r\n\r\n"
                data = [
                    b"%x\r\n%s\r\n" % (len(first), first),
                    b"%x\r\n%s\r\n0\r\n\r\n" % (len(rest), rest),
                ]
            else:
                head = b"Content-Length: 150000\r\n\r\n"
                data = [first, rest]
            writer.write(b"POST /%s HTTP/1.1\r\nHost: p\r\n%s" % (framing.encode(), head) + data[0])
            # The upstream gets the first 100 kB while the client holds back the rest.
            await eventually(lambda n=before: len(up.seen) > n and len(up.seen[-1].body) >= 65536)
            assert not up.seen[-1].complete
            writer.write(data[1])
            assert status(await answer(reader)) == 200
            writer.close()
            assert bytes(up.seen[-1].body) == first + rest
            expected = "chunked" if framing == "chunked" else None
            assert up.seen[-1].headers.get("transfer-encoding") == expected
        await px.healthy()


async def test_limits_and_the_read_timeout_apply_while_a_body_is_buffered(tmp_path: Path) -> None:
    doc = {
        "cors": POLICY,
        "timeouts": {"read": "1s"},
        "limits": {"max_body_size": 1000, "min_body_rate": 0},
    }
    async with recording() as up, proxy(tmp_path, {"upstream": up.url, **doc}) as px:
        chunked = (
            f"POST /{{}} HTTP/1.1\r\nHost: p\r\nOrigin: {APP}\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        reader, writer = await connect(px)
        writer.write(chunked.format("big").encode() + b"7d0\r\n" + b"b" * 2000 + b"\r\n")
        response = await answer(reader)
        assert status(response) == 413
        assert header(response, "Access-Control-Allow-Origin") == [APP]
        writer.close()
        reader, writer = await connect(px)
        writer.write(chunked.format("stalled").encode() + b"2\r\nab\r\n")  # then nothing
        response = await answer(reader)
        assert status(response) == 408
        assert header(response, "Access-Control-Allow-Origin") == [APP]
        assert await closed(reader)
        writer.close()
        assert up.connections == 0  # neither took an upstream connection
        await eventually(lambda: access_lines(px, "/stalled", 408))
        assert "body_timeout" in access_lines(px, "/stalled", 408)[0]
        await px.healthy()


async def test_a_burst_then_a_drip_cannot_hold_the_pool(tmp_path: Path) -> None:
    # The reviewer's attack, scaled down: a burst over request_buffer takes an upstream
    # connection, then one byte a second. Under an average since the start, 65,537 bytes
    # would be credit for 11 minutes at 100 bytes/s; in a window of 2 s they are worth 2 s.
    doc = {
        "cors": POLICY,
        "timeouts": {"connect": "8s", "read": "30s"},
        "limits": {"upstream_connections": 4, "min_body_rate": 100, "min_body_rate_grace": "2s"},
    }
    async with recording() as up, proxy(tmp_path, {"upstream": up.url, **doc}) as px:
        attackers = [await connect(px) for _ in range(4)]
        for _, writer in attackers:
            writer.write(b"POST /drip HTTP/1.1\r\nHost: p\r\nContent-Length: 1000000\r\n\r\n")
            writer.write(b"a" * 65537)
        await eventually(lambda: up.open == 4)  # they hold the whole pool
        started = time.monotonic()
        answers = [asyncio.create_task(answer(reader, 20)) for reader, _ in attackers]
        probe = asyncio.create_task(get(px.url, "/probe"))  # waits for a free connection
        while not all(a.done() for a in answers) and time.monotonic() - started < 20:
            for _, writer in attackers:
                writer.write(b"a")
            await asyncio.sleep(1)
        assert [status(await a) for a in answers] == [408] * 4
        assert time.monotonic() - started < 8  # the window, not the banked credit
        assert status(await probe) == 200  # within timeouts.connect
        for reader, writer in attackers:
            assert await closed(reader)
            writer.close()
        await asyncio.wait_for(up.cut.wait(), 3)
        assert not any(s.complete for s in up.seen if s.path == "/drip")
        replies = await asyncio.gather(*(get(px.url, "/after") for _ in range(4)))
        assert [status(r) for r in replies] == [200] * 4
        await eventually(lambda: len(access_lines(px, "/drip", 408)) == 4)
        assert "request body below min_body_rate" in access_lines(px, "/drip", 408)[0]
        await px.healthy()


async def test_a_bursty_body_with_pauses_shorter_than_the_window_is_forwarded(
    tmp_path: Path,
) -> None:
    doc = {"limits": {"min_body_rate": 1000, "min_body_rate_grace": "2s"}}
    bursts = [os.urandom(100_000) for _ in range(3)]
    async with recording() as up, proxy(tmp_path, {"upstream": up.url, **doc}) as px:
        reader, writer = await connect(px)
        writer.write(b"POST /bursty HTTP/1.1\r\nHost: p\r\nContent-Length: 300000\r\n\r\n")
        for burst in bursts:
            writer.write(burst)
            await writer.drain()
            await asyncio.sleep(1.2)  # nothing for 1.2 s of a 2 s window
        assert status(await answer(reader)) == 200
        writer.close()
        assert [bytes(s.body) for s in up.seen] == [b"".join(bursts)]
        await px.healthy()


async def reading_slowly(
    px: Proxy, path: str, pace: float, size: int, limit: float, small_buffer: bool = False
) -> tuple[int, bool]:
    """GET `path`, reading `size` bytes every `pace` seconds until the proxy closes or
    `limit` seconds pass; the bytes received, and whether the answer arrived whole. A small
    receive buffer (4 KiB) also slows the client's TCP to some 40 KB/s on loopback."""
    reader, writer = await connect(px)
    if small_buffer:
        writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: p\r\n\r\n".encode())
    received = bytearray()
    expected = -1  # the whole answer's length, once the head is here
    chunk = b""
    deadline = time.monotonic() + limit
    with contextlib.suppress(ConnectionError, TimeoutError):
        while time.monotonic() < deadline and len(received) != expected:
            goal = len(received) + size
            while len(received) < goal and len(received) != expected:
                chunk = await asyncio.wait_for(reader.read(goal - len(received)), limit)
                if not chunk:
                    break
                received += chunk
                if expected < 0 and b"\r\n\r\n" in received:
                    head, _, _ = bytes(received).partition(b"\r\n\r\n")
                    (length,) = header(head + b"\r\n\r\n", "Content-Length")
                    expected = len(head) + 4 + int(length)
            if not chunk:
                break
            await asyncio.sleep(pace)
    whole = len(received) == expected
    writer.close()
    return len(received), whole


@pytest.mark.parametrize("loop", ["--uvloop", "--no-uvloop"])
async def test_a_client_that_never_reads_a_large_answer_is_cut_off_and_frees_the_slot(
    tmp_path: Path, loop: str
) -> None:
    size = 32 * 1024 * 1024  # more than any socket buffers hold
    doc = {
        "cors": POLICY,
        "timeouts": {"connect": "15s", "read": "30s", "send": "1s"},
        "limits": {"upstream_connections": 1, "min_response_rate": 0},
    }
    async with (
        recording(answer=size) as up,
        proxy(tmp_path, {"upstream": up.url, **doc}, loop) as px,
    ):
        reader, writer = await connect(px)
        writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        writer.write(b"GET /huge HTTP/1.1\r\nHost: p\r\n\r\n")
        await eventually(lambda: "/huge" in up.paths())
        started = time.monotonic()
        # The only upstream connection is the non-reader's until timeouts.send cuts it off.
        assert status(await get(px.url, "/probe")) == 200
        assert time.monotonic() - started < 12
        await asyncio.wait_for(up.cut.wait(), 3)  # the upstream exchange was aborted
        received = bytearray()
        with contextlib.suppress(ConnectionError):
            while chunk := await asyncio.wait_for(reader.read(1 << 20), TIMEOUT):
                received += chunk
        writer.close()
        assert len(received) < size  # cut short, never complete
        await eventually(lambda: access_lines(px, "/huge", 200))
        assert "timeouts.send" in access_lines(px, "/huge", 200)[0]
        await px.healthy()


async def test_an_answer_taken_below_min_response_rate_is_cut_off(tmp_path: Path) -> None:
    # The client keeps reading (so timeouts.send never trips), at 40 to 64 KB/s: below
    # 500 KB/s over a window of 1 s.
    doc = {
        "timeouts": {"read": "30s", "send": "20s"},
        "limits": {"min_response_rate": 500_000, "min_body_rate_grace": "1s"},
    }
    size = 64 * 1024 * 1024
    async with recording(answer=size) as up, proxy(tmp_path, {"upstream": up.url, **doc}) as px:
        started = time.monotonic()
        received, whole = await reading_slowly(px, "/huge", 1.0, 65536, 40, small_buffer=True)
        assert not whole
        assert received < size
        assert time.monotonic() - started < 30
        await asyncio.wait_for(up.cut.wait(), 3)
        await eventually(lambda: access_lines(px, "/huge", 200))
        assert "min_response_rate" in access_lines(px, "/huge", 200)[0]
        await px.healthy()


async def test_a_client_reading_above_min_response_rate_gets_the_whole_answer(
    tmp_path: Path,
) -> None:
    doc = {
        "timeouts": {"send": "2s"},
        "limits": {"min_response_rate": 1_000_000, "min_body_rate_grace": "1s"},
    }
    size = 24 * 1024 * 1024  # more than socket buffers hold; about 10 s at 2.6 MB/s
    async with recording(answer=size) as up, proxy(tmp_path, {"upstream": up.url, **doc}) as px:
        received, whole = await reading_slowly(px, "/huge", 0.1, 256 * 1024, 40)
        assert whole, received
        assert status(await get(px.url, "/after")) == 200
        assert not up.cut.is_set()
        await px.healthy()
