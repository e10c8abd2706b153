"""Raw-socket clients: seeded request sequences (keep-alive, pipelining, aborts) and a small
strict HTTP/1.1 response parser, so every byte a client receives is accounted for."""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import socket
import struct

from tests.differential.model import (
    APP,
    MISBEHAVING,
    OTHER,
    WELL_BEHAVED,
    Answer,
    ClientRequest,
    tag_body,
)

IO_TIMEOUT = 20.0  # one answer (the proxy's own read timeout is 5 s)
STATUS_LINE = re.compile(rb"HTTP/1\.1 ([1-5][0-9][0-9])(?: [^\r\n]*)?\r\n")
HEX = re.compile(rb"[0-9A-Fa-f]{1,8}")
DIGITS = re.compile(r"[0-9]{1,12}")
METHODS = ("GET", "GET", "GET", "HEAD", "HEAD", "POST", "POST", "PUT", "DELETE", "OPTIONS")
BODY_SIZES = (0, 10, 2000, 70_000)


class Closed(Exception):
    """No (complete) answer: the connection ended, reset, or stalled."""


class Framing(Exception):
    """Bytes that are not a well-formed HTTP/1.1 answer."""

    def __init__(self, reason: str, data: bytes) -> None:
        super().__init__(reason)
        self.data = data


def choose_script(rng: random.Random, well_behaved: bool) -> str:
    if well_behaved or rng.random() < 0.55:
        return rng.choice(WELL_BEHAVED)
    # The section-1 shapes come up most: they are the ones a broken pool turns into a leak.
    return rng.choice((*MISBEHAVING, "bodiless_late", "bodiless_split", "late"))


def build_request(
    rng: random.Random, rid: str, conn: str, well_behaved: bool
) -> tuple[ClientRequest, bytes]:
    method = rng.choice(METHODS)
    script = choose_script(rng, well_behaved)
    origin = rng.choice((APP, APP, OTHER, None))
    target = f"/d/{rid}?id={rid}&s={script}"
    body, framing = b"", "none"
    if method in ("POST", "PUT"):
        body = tag_body(f"b-{rid}", rng.choice(BODY_SIZES))
        framing = rng.choice(("cl", "chunked"))
    lines = [f"{method} {target} HTTP/1.1", "Host: proxy.test", f"X-Req-Id: {rid}"]
    if origin:
        lines.append(f"Origin: {origin}")
    if rng.random() < 0.3:
        lines.append("Cookie: user=" + rid)
    if framing == "cl":
        lines += ["Content-Type: text/plain", f"Content-Length: {len(body)}"]
    elif framing == "chunked":
        lines += ["Content-Type: text/plain", "Transfer-Encoding: chunked"]
    data = ("\r\n".join(lines) + "\r\n\r\n").encode()
    data += chunk(body, rng) if framing == "chunked" else body
    req = ClientRequest(rid, conn, method, target, body, framing, origin, script, "normal")
    return req, data


def chunk(body: bytes, rng: random.Random) -> bytes:
    out = bytearray()
    for pos in range(0, len(body), step := rng.choice((1000, 7000, 40_000))):
        piece = body[pos : pos + step]
        ext = rng.choice(("", ";a=b", ";x"))
        out += b"%x%s\r\n" % (len(piece), ext.encode()) + piece + b"\r\n"
    out += b"0\r\n"
    if rng.random() < 0.3:
        out += b"X-Client-Trailer: t\r\n"
    return bytes(out + b"\r\n")


async def read_answer(reader: asyncio.StreamReader, method: str) -> Answer:
    """One final answer (1xx interim answers before it are kept in `raw`)."""
    raw = bytearray()
    interim: list[int] = []
    try:
        async with asyncio.timeout(IO_TIMEOUT):
            while True:
                status, headers = await _read_head(reader, raw)
                if 100 <= status < 200:
                    interim.append(status)
                    continue
                body = b""
                if method != "HEAD" and status not in (204, 304):
                    body = await _read_body(reader, raw, headers)
                return Answer(status, headers, body, bytes(raw), interim)
    except asyncio.IncompleteReadError as exc:
        raw += exc.partial
        raise Closed("truncated" if raw else "closed") from exc
    except (ConnectionError, OSError) as exc:
        raise Closed(f"reset after {len(raw)} bytes") from exc
    except TimeoutError as exc:
        raise Closed(f"no answer in {IO_TIMEOUT} s after {len(raw)} bytes") from exc
    except asyncio.LimitOverrunError as exc:
        raise Framing("a line over 64 KiB", bytes(raw)) from exc
    except Framing as exc:
        raise Framing(str(exc), bytes(raw)) from exc


async def _line(reader: asyncio.StreamReader, raw: bytearray) -> bytes:
    line = await reader.readuntil(b"\r\n")
    raw += line
    return line


async def _read_head(
    reader: asyncio.StreamReader, raw: bytearray
) -> tuple[int, list[tuple[str, str]]]:
    first = await _line(reader, raw)
    match = STATUS_LINE.fullmatch(first)
    if not match:
        raise Framing("bad status line", b"")
    headers: list[tuple[str, str]] = []
    while (line := await _line(reader, raw)) != b"\r\n":
        name, colon, value = line[:-2].partition(b":")
        if not colon or not name or name != name.strip() or b"\r" in value or b"\n" in value:
            raise Framing("bad header line", b"")
        headers.append((name.decode("latin-1"), value.strip().decode("latin-1")))
    return int(match.group(1)), headers


async def _read_body(
    reader: asyncio.StreamReader, raw: bytearray, headers: list[tuple[str, str]]
) -> bytes:
    lengths = [v for n, v in headers if n.lower() == "content-length"]
    codings = [v for n, v in headers if n.lower() == "transfer-encoding"]
    if codings:
        if lengths or [c.lower() for c in codings] != ["chunked"]:
            raise Framing("ambiguous answer framing", b"")
        body = bytearray()
        while True:
            line = await _line(reader, raw)
            size_text = line[:-2].split(b";", 1)[0]
            if not HEX.fullmatch(size_text):
                raise Framing("bad chunk size", b"")
            size = int(size_text, 16)
            if size == 0:
                while await _line(reader, raw) != b"\r\n":
                    pass
                return bytes(body)
            piece = await reader.readexactly(size)
            raw += piece
            body += piece
            if await reader.readexactly(2) != b"\r\n":
                raise Framing("chunk without CRLF", b"")
            raw += b"\r\n"
    if lengths:
        if len(lengths) != 1 or not DIGITS.fullmatch(lengths[0]):
            raise Framing("bad Content-Length", b"")
        whole = await reader.readexactly(int(lengths[0]))
        raw += whole
        return whole
    rest = await reader.read(-1)  # close-delimited
    raw += rest
    return rest


def reset(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class Driver:
    """`clients` concurrent raw clients, each running seeded sessions until the deadline."""

    def __init__(self, url: str, seed: int, clients: int, well_behaved: bool) -> None:
        host, port = url.removeprefix("http://").rsplit(":", 1)
        self.host, self.port = host.strip("[]"), int(port)
        self.seed = seed
        self.clients = clients
        self.well_behaved = well_behaved
        self.requests: list[ClientRequest] = []
        self.framing: list[tuple[ClientRequest, Framing]] = []
        self.stray: list[tuple[str, bytes]] = []  # bytes after the last answer
        self.started = 0.0

    async def run(self, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        self.started = loop.time()
        deadline = self.started + seconds
        await asyncio.gather(*(self._client(i, deadline) for i in range(self.clients)))

    async def _client(self, index: int, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        for number in range(1_000_000):
            if loop.time() >= deadline:
                return
            rng = random.Random(f"{self.seed}/c{index}/{number}")
            await self._session(rng, f"c{index}-{number}")

    async def _session(self, rng: random.Random, conn: str) -> None:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port), IO_TIMEOUT
            )
        except (OSError, TimeoutError):
            return  # a refused connection carries no exchange
        try:
            await self._exchanges(rng, conn, reader, writer)
        finally:
            writer.close()

    async def _exchanges(
        self,
        rng: random.Random,
        conn: str,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        total = rng.randint(1, 6)
        half_close = rng.random() < 0.1
        number = 0
        while number < total:
            size = rng.randint(2, 3) if rng.random() < 0.3 else 1
            batch: list[tuple[ClientRequest, bytes]] = []
            for _ in range(min(size, total - number)):
                batch.append(build_request(rng, f"{conn}-{number}", conn, self.well_behaved))
                number += 1
            self.requests += [req for req, _ in batch]
            last = batch[-1][0]
            # Pauses vary the number of requests in flight, so older pooled connections
            # (deeper in the proxy's newest-first idle list) are reused too.
            await asyncio.sleep(rng.choice((0, 0, 0, 0, 0.03, 0.1)))
            roll = rng.random()
            if roll < 0.04 and last.body:
                last.action = "abort_body"  # part of the body, then an RST
            elif roll < 0.08:
                last.action = "abort_after_send"
            elif roll < 0.12 and last.method != "HEAD":
                last.action = "abort_response"
            try:
                for req, payload in batch:
                    if req.action == "abort_body":
                        writer.write(payload[: len(payload) - rng.randint(1, len(req.body))])
                        await asyncio.wait_for(writer.drain(), IO_TIMEOUT)
                        await asyncio.sleep(rng.uniform(0, 0.05))
                        reset(writer)
                        return
                    writer.write(payload)
                    req.sent = True  # written whole (what the proxy does with it is its part)
                await asyncio.wait_for(writer.drain(), IO_TIMEOUT)
            except (ConnectionError, TimeoutError):
                return
            if last.action == "abort_after_send":
                await asyncio.sleep(rng.uniform(0, 0.1))
                reset(writer)
                return
            if half_close and number >= total:
                with contextlib.suppress(OSError):
                    writer.write_eof()
            for position, (req, _) in enumerate(batch):
                if req.action == "abort_response":
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(reader.read(rng.randint(1, 200)), IO_TIMEOUT)
                    reset(writer)
                    return
                try:
                    req.answer = await read_answer(reader, req.method)
                    req.at = asyncio.get_running_loop().time() - self.started
                except Closed as exc:
                    req.error = str(exc)
                    for rest, _ in batch[position + 1 :]:
                        rest.error = "not answered: the connection ended"
                    return
                except Framing as exc:
                    req.error = f"framing: {exc}"
                    self.framing.append((req, exc))
                    return
        # Anything more on this connection belongs to no request.
        if rng.random() < 0.3:
            with contextlib.suppress(TimeoutError, OSError):
                extra = await asyncio.wait_for(reader.read(65536), 0.05)
                if extra:
                    self.stray.append((conn, extra))
