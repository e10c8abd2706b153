"""Response queue poisoning through the upstream pool (issue 11, section 1), against a real
`corsproxy serve` process: bytes an upstream sends after an answer is complete must never be
read as another request's answer. Every victim request carries a token the upstream echoes,
so a victim knows its own answer; a forged one says FORGED.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import fcntl
import random
import termios
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, urlsplit

import aiohttp
import pytest

from tests.faults.harness import APP, POLICY, Proxy, proxy
from tests.net import TIMEOUT, raw_server

# A whole response, readable cross-origin, that a victim must never get.
FORGED = (
    b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nAccess-Control-Allow-Origin: *\r\n"
    b"Access-Control-Allow-Credentials: true\r\n\r\nFORGED"
)


class Reflecting(BaseHTTPRequestHandler):
    """Python's http.server as many APIs run it: HTTP/1.1 keep-alive, the query reflected
    into the body, and the reported mistake, `do_HEAD = do_GET` (a HEAD answer with a body)."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body = parse_qs(urlsplit(self.path).query).get("echo", [""])[0].encode("latin-1")
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_HEAD = do_GET

    def log_message(self, format: str, *args: object) -> None:
        pass


class IgnoringBodies(Reflecting):
    """A handler that answers a POST without reading its body: the body's bytes then start
    the next request the server reads on that connection (a CL.0 desync)."""

    do_POST = Reflecting.do_GET


@contextlib.contextmanager
def http_server(handler: type[BaseHTTPRequestHandler] = Reflecting) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


async def _acknowledged(writer: asyncio.StreamWriter) -> None:
    """Until the peer has acknowledged every byte written (Linux TIOCOUTQ), at most 2 s."""
    sock = writer.get_extra_info("socket")
    unsent = array.array("i", [0])
    for _ in range(2000):
        await writer.drain()
        try:
            fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, unsent, True)
        except OSError:
            return
        if unsent[0] == 0:
            return
        await asyncio.sleep(0.001)


def echo_of(head: bytes) -> bytes:
    """The `echo` query value of a request head (the victim's token)."""
    target = head.split(b" ", 2)[1].decode("latin-1")
    return parse_qs(urlsplit(target).query).get("echo", [""])[0].encode("latin-1")


def answer(body: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


class Gate:
    """Counts client requests in flight; `quiet()` holds new ones back until none is."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.open = asyncio.Event()
        self.idle = asyncio.Event()
        self.open.set()
        self.idle.set()

    @contextlib.asynccontextmanager
    async def request(self) -> AsyncIterator[None]:
        await self.open.wait()
        self.in_flight += 1
        self.idle.clear()
        try:
            yield
        finally:
            self.in_flight -= 1
            if not self.in_flight:
                self.idle.set()

    @contextlib.asynccontextmanager
    async def quiet(self) -> AsyncIterator[None]:
        self.open.clear()
        try:
            await asyncio.wait_for(self.idle.wait(), TIMEOUT)
            yield
        finally:
            self.open.set()


NO_GATE = Gate()


async def victims(
    px: Proxy, count: int, concurrency: int, pause: float = 0.0, gate: Gate = NO_GATE
) -> list[tuple[str, int, bytes]]:
    """`count` GETs, each with its own token; returns (token, status, body) of each."""
    results: list[tuple[str, int, bytes]] = []
    tokens = iter(range(count))

    async def one(session: aiohttp.ClientSession) -> None:
        for number in tokens:
            token = f"victim-{number}"
            if pause:
                await asyncio.sleep(random.uniform(0, pause))
            async with (
                gate.request(),
                session.get(f"{px.url}/v?echo={token}", headers={"Origin": APP}) as response,
            ):
                results.append((token, response.status, await response.read()))

    timeout = aiohttp.ClientTimeout(total=TIMEOUT)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        await asyncio.gather(*(one(session) for _ in range(concurrency)))
    return results


def check(results: list[tuple[str, int, bytes]], count: int) -> None:
    assert len(results) == count
    forged = [r for r in results if b"FORGED" in r[2]]
    assert not forged, f"{len(forged)} of {count} victims got a forged answer"
    wrong = [r for r in results if r[1:] != (200, r[0].encode())]
    assert not wrong, f"{len(wrong)} of {count} victims did not get their own answer: {wrong[:3]}"


async def test_a_head_answer_body_from_http_server_never_reaches_another_client(
    tmp_path: Path,
) -> None:
    """The reported case: HEAD with a query that http.server reflects into a body shaped like
    a whole response. Before the fix about one victim answer in six was the forged one."""
    with http_server() as up:
        async with proxy(tmp_path, {"upstream": up, "cors": POLICY}) as px:

            async def attack() -> None:
                async with aiohttp.ClientSession() as session:
                    for _ in range(150):
                        url = f"{px.url}/a?echo={quote(FORGED)}"
                        async with session.head(url, headers={"Origin": APP}) as response:
                            assert response.status == 200

            results, _ = await asyncio.gather(victims(px, 300, 6), attack())
            check(results, 300)
            await px.healthy()


@pytest.mark.parametrize(
    "bodiless",
    [
        b"HTTP/1.1 204 No Content\r\nContent-Length: %d\r\n\r\n" % len(FORGED),
        b"HTTP/1.1 304 Not Modified\r\nContent-Length: %d\r\n\r\n" % len(FORGED),
        b"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n",
    ],
    ids=["204-content-length", "304-content-length", "304-chunked"],
)
async def test_c_a_body_after_a_204_or_304_never_reaches_another_client(
    tmp_path: Path, bodiless: bytes
) -> None:
    """A 204 or 304 that announced a body, then sent it a moment later in its own write."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
            if b" /a" in head.split(b"\r\n", 1)[0]:
                writer.write(bodiless)
                await writer.drain()
                await asyncio.sleep(random.uniform(0, 0.003))
                body = FORGED
                if b"chunked" in bodiless:
                    body = b"%x\r\n%s\r\n0\r\n\r\n" % (len(FORGED), FORGED)
                writer.write(body)
            else:
                writer.write(answer(echo_of(head)))
            await writer.drain()

    async with raw_server(handle) as up, proxy(tmp_path, {"upstream": up, "cors": POLICY}) as px:
        answers: list[tuple[int, bytes]] = []

        async def attack() -> None:
            async with aiohttp.ClientSession() as session:
                for _ in range(100):
                    async with session.get(f"{px.url}/a", headers={"Origin": APP}) as response:
                        answers.append((response.status, await response.read()))

        results, _ = await asyncio.gather(victims(px, 300, 6), attack())
        check(results, 300)
        assert set(answers) == {(int(bodiless[9:12]), b"")}
        await px.healthy()


@pytest.mark.parametrize(
    ("method", "bodiless", "gap"),
    [
        ("GET", b"HTTP/1.1 204 OK\r\n\r\n", 0.0),
        ("GET", b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n", 0.05),
        ("GET", b"HTTP/1.1 304 Not Modified\r\n\r\n", 0.05),
        ("HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 0.05),
    ],
    ids=["204-second-write", "204-cl0-50ms", "304-50ms", "head-cl0-50ms"],
)
async def test_d_a_body_after_a_204_304_or_head_that_announced_none_never_reaches_another_client(
    tmp_path: Path, method: str, bodiless: bytes, gap: float
) -> None:
    """A HEAD, 204 or 304 answer that announced no body (no framing, or `Content-Length: 0`),
    then a whole forged answer in a second write: at once, as a naive http.server handler
    with an unbuffered wfile does, or up to 50 ms later. Before the fix the connection went
    back to the pool at the end of the head: 6 of 600 victims got the forged answer (at
    once), 24 of 225 with the 50 ms gap."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
            if b" /a" in head.split(b"\r\n", 1)[0]:
                writer.write(bodiless)
                await writer.drain()
                await asyncio.sleep(random.uniform(0, gap))
                writer.write(FORGED)
            else:
                writer.write(answer(echo_of(head)))
            await writer.drain()

    async with raw_server(handle) as up, proxy(tmp_path, {"upstream": up, "cors": POLICY}) as px:
        answers: list[tuple[int, bytes]] = []

        async def attack() -> None:
            async with aiohttp.ClientSession() as session:
                for _ in range(100):
                    url = f"{px.url}/a"
                    async with session.request(method, url, headers={"Origin": APP}) as response:
                        answers.append((response.status, await response.read()))

        results, _ = await asyncio.gather(victims(px, 300, 6), attack())
        check(results, 300)
        assert set(answers) == {(int(bodiless[9:12]), b"")}
        await px.healthy()


async def test_b_late_bytes_after_a_complete_answer_never_reach_another_client(
    tmp_path: Path,
) -> None:
    """An upstream that answers completely, then 50-300 ms later writes a response-shaped
    surplus on the same connection. The surplus is written only while no client request is
    in flight, and requests resume the moment it is written: they race the proxy's handling
    of it, but none can have been sent upstream before it (that is the residual window
    HTTP/1.1 cannot close, see h1response.py)."""
    gate = Gate()
    written = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async def late() -> None:
            nonlocal written
            await asyncio.sleep(random.uniform(0.05, 0.3))
            async with gate.quiet():
                if not writer.is_closing():
                    writer.write(FORGED)
                    written += 1
                    # Requests resume once the proxy's kernel holds the surplus (the peer
                    # acknowledged it): before that, it would be the residual window. On a
                    # loaded machine loopback delivery can lag the write.
                    await _acknowledged(writer)

        tasks: set[asyncio.Task[None]] = set()
        try:
            while True:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
                writer.write(answer(echo_of(head)))
                await writer.drain()
                if b" /a" in head.split(b"\r\n", 1)[0]:
                    task = asyncio.create_task(late())
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
        finally:
            for task in tasks:
                task.cancel()

    async with raw_server(handle) as up, proxy(tmp_path, {"upstream": up, "cors": POLICY}) as px:

        async def attack() -> None:
            async with aiohttp.ClientSession() as session:
                for _ in range(60):
                    async with (
                        gate.request(),
                        session.get(f"{px.url}/a?echo=a", headers={"Origin": APP}) as response,
                    ):
                        assert (response.status, await response.read()) == (200, b"a")
                    await asyncio.sleep(0.03)

        results, _ = await asyncio.gather(victims(px, 300, 4, pause=0.03, gate=gate), attack())
        await asyncio.sleep(0.35)  # the last surplus, too
        check(results, 300)
        assert written >= 10  # the attack ran (each surplus ends its connection)
        await px.healthy()


async def test_a_request_waiting_for_a_free_connection_is_a_504_that_says_why(
    tmp_path: Path,
) -> None:
    """`limits.upstream_connections` bounds open upstream connections per process; a request
    that waits for one longer than `timeouts.connect` gets a 504, and its log line says so."""
    release = asyncio.Event()

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
        await asyncio.wait_for(release.wait(), TIMEOUT)
        writer.write(answer(b"held"))
        await writer.drain()

    doc = {
        "upstream": "",
        "cors": POLICY,
        "limits": {"upstream_connections": 1},
        "timeouts": {"connect": "300ms", "read": "5s"},
    }
    async with raw_server(hold) as up:
        doc["upstream"] = up
        async with proxy(tmp_path, doc) as px:
            timeout = aiohttp.ClientTimeout(total=TIMEOUT)
            async with aiohttp.ClientSession(timeout=timeout) as session:
                first = asyncio.create_task(session.get(f"{px.url}/first"))
                await asyncio.sleep(0.3)  # it holds the one connection
                async with session.get(f"{px.url}/second", headers={"Origin": APP}) as response:
                    assert response.status == 504
                    assert response.headers["Access-Control-Allow-Origin"] == APP
                release.set()
                async with await first as response:
                    assert (response.status, await response.read()) == (200, b"held")
            for _ in range(50):
                lines = [line for line in px.log if "GET /second 504" in line]
                if lines:
                    break
                await asyncio.sleep(0.1)
            assert lines and "upstream_connect_timeout" in lines[0], px.log[-5:]
            assert "no free upstream connection" in lines[0]
            await px.healthy()


async def test_a_body_the_upstream_never_read_never_answers_another_client(
    tmp_path: Path,
) -> None:
    """Found by an outside review: an upstream that answers a POST without reading its body
    takes the body for the next request on that connection. The attacker's body starts a
    request whose last header swallows the next client's request line, so that client got
    the answer to the attacker's request (30 of 30 before the fix). A connection that
    carried a body is never reused."""
    smuggled = b"GET /v?echo=FORGED HTTP/1.1\r\nHost: x\r\nX-Ignore: "
    with http_server(IgnoringBodies) as up:
        async with proxy(tmp_path, {"upstream": up, "cors": POLICY}) as px:

            async def attack() -> None:
                async with aiohttp.ClientSession() as session:
                    for _ in range(100):
                        async with session.post(
                            f"{px.url}/a", data=smuggled, headers={"Origin": APP}
                        ) as response:
                            assert response.status == 200
                            await response.read()

            results, _ = await asyncio.gather(victims(px, 200, 4), attack())
            check(results, 200)
            await px.healthy()
