"""A scripted raw upstream: HTTP/1.1 by hand, so it can misbehave on purpose.

It parses every request it receives (strictly: anything else is recorded as an oddity, a
request boundary corsproxy must never have produced), reads the script the client chose from
the query (`?id=<rid>&s=<script>`), and answers with the request's id in an `X-Req-Id` header
and in every byte of the body (`tag=<rid>;` repeated). Forged answers carry a tag of no
request (`forged-...`). Details (sizes, chunk extensions, delays) come from an RNG seeded by
the run's seed and the request id, so a seed replays the same answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import random
import re
import socket
import struct
import time
from urllib.parse import parse_qs, urlsplit

from tests.differential.model import APP, UpstreamOddity, UpstreamRequest, tag_body

IO_TIMEOUT = 15.0  # any single read or write
IDLE_TIMEOUT = 30.0  # waiting for the next request on a connection (the proxy's is 4 s)
REASONS = {200: "OK", 204: "No Content", 304: "Not Modified", 500: "Internal Server Error",
           503: "Service Unavailable", 100: "Continue", 103: "Early Hints", 150: "Odd",
           199: "Odd"}  # fmt: skip
SIZES = (0, 7, 300, 5000, 70_000)  # 70 000: over the proxy's 64 KiB small-body path


class Oddity(Exception):
    def __init__(self, reason: str, data: bytes) -> None:
        super().__init__(reason)
        self.reason = reason
        self.data = data


class ScriptedUpstream:
    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.requests: list[UpstreamRequest] = []
        self.oddities: list[UpstreamOddity] = []
        self.partial = 0  # requests cut short by the proxy (allowed: it gave up on them)
        self.connections = 0
        self._conn_ids = itertools.count(1)
        self._forged_ids = itertools.count(1)
        self.server: asyncio.Server | None = None
        self.port = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._on_connect, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        # Aborting the sockets ends every connection's task (cancelling them would make
        # asyncio log the cancellation as an error of start_server's callback).
        for writer in list(self._writers):
            writer.transport.abort()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)
        if self.server is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.server.wait_closed(), 2)

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        conn = next(self._conn_ids)
        self.connections += 1
        previous: UpstreamRequest | None = None
        try:
            for index in itertools.count():
                try:
                    parsed = await read_request(reader)
                except Oddity as odd:
                    self.oddities.append(UpstreamOddity(conn, index, odd.reason, odd.data))
                    return
                if parsed is None:
                    return
                method, target, headers, body, head_at = parsed
                if previous is not None and previous.forged_at:
                    previous.next_seen_at = head_at
                query = parse_qs(urlsplit(target).query)
                rid = query.get("id", [None])[0]
                script = query.get("s", ["cl"])[0]
                req = UpstreamRequest(conn, index, method, target, headers, body, rid, script)
                self.requests.append(req)
                header_id = [v for n, v in headers if n.lower() == "x-req-id"]
                if rid is None or header_id != [rid]:
                    # The target and the header disagree: one request's head joined another's.
                    self.oddities.append(
                        UpstreamOddity(
                            conn, index, "target id and X-Req-Id differ", target.encode()
                        )
                    )
                    return
                rng = random.Random(f"{self.seed}/{rid}")  # a retry gets the same answer
                if not await self._answer(req, rng, reader, writer):
                    return
                previous = req
        except (asyncio.IncompleteReadError, OSError, TimeoutError):
            pass  # the proxy went away (its right); what it sent so far is recorded
        except Partial:
            self.partial += 1
        finally:
            writer.close()
            self._tasks.discard(task)
            self._writers.discard(writer)

    def _forged(self) -> tuple[str, bytes]:
        tag = f"forged-{next(self._forged_ids)}"
        body = tag_body(tag, 40)
        head = (
            f"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
            f"X-Req-Id: {tag}\r\nAccess-Control-Allow-Origin: {APP}\r\n"
            "Access-Control-Allow-Credentials: true\r\nSet-Cookie: session=attacker\r\n\r\n"
        )
        return tag, head.encode() + body

    async def _answer(
        self,
        req: UpstreamRequest,
        rng: random.Random,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> bool:
        """Answer `req` by its script; False when the connection is done."""
        rid, script, head_only = req.rid or "", req.script, req.method == "HEAD"

        async def send(*parts: bytes) -> None:
            for part in parts:
                writer.write(part)
            await asyncio.wait_for(writer.drain(), IO_TIMEOUT)

        def record(status: int, body: bytes) -> None:
            req.status, req.answer_body = status, b"" if head_only else body

        if script in ("cl", "error", "slow", "late", "half_close"):
            status = rng.choice((500, 503)) if script == "error" else 200
            body = tag_body(rid, rng.choice(SIZES))
            head = _head(status, rid, [f"Content-Length: {len(body)}"])
            record(status, body)
            if head_only:
                await send(head)
            elif script == "slow":
                await send(head)
                for piece in _split(body, 3):
                    await asyncio.sleep(rng.uniform(0.005, 0.04))
                    await send(piece)
            else:
                await send(head, body)
            req.clean = True
            if script == "half_close":
                writer.write_eof()
                with contextlib.suppress(TimeoutError):
                    while await asyncio.wait_for(reader.read(65536), 5):
                        pass  # requests after our FIN are never answered, so not recorded
                return False
            if script == "late":
                await asyncio.sleep(rng.choice((0.001, 0.01, 0.05, 0.3)) * rng.random())
                if _pending(reader, writer):
                    req.forged_skipped = True  # the proxy already reused it: undecidable
                    return True
                req.clean = False
                tag, forged = self._forged()
                req.forged.append(tag)
                writer.write(forged)  # no await between the two looks and the write
                req.forged_at = time.monotonic()
                # A request that arrived by now may have left the proxy before our bytes
                # reached it: no client can tell those apart from its answer.
                req.forged_raced = _pending(reader, writer)
                await asyncio.wait_for(writer.drain(), IO_TIMEOUT)
            return True
        if script == "chunked" or script == "info":
            if script == "info":
                if rng.random() < 0.7:
                    await send(b"HTTP/1.1 100 Continue\r\n\r\n")
                if rng.random() < 0.7:
                    await send(
                        b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n"
                        + f"X-Req-Id: {rid}\r\n\r\n".encode()
                    )
                await asyncio.sleep(rng.uniform(0, 0.02))
            body = tag_body(rid, rng.choice(SIZES))
            record(200, body)
            if script == "info" and rng.random() < 0.5:
                await send(
                    _head(200, rid, [f"Content-Length: {len(body)}"]), b"" if head_only else body
                )
            else:
                head = _head(200, rid, ["Transfer-Encoding: chunked"])
                if head_only:
                    await send(head)
                elif rng.random() < 0.5:
                    await send(head + _chunked(body, rng))  # trailers in the head's segment
                else:
                    await send(head)
                    await send(_chunked(body, rng))
            req.clean = True
            return True
        if script == "info_body":
            # An interim answer with framing and a forged answer as its body (llhttp reads one
            # after 104-199; after 100 or 103 the forged bytes would parse as the next answer),
            # then the request's own answer.
            tag, forged = self._forged()
            req.forged.append(tag)
            status = rng.choice((100, 103, 150, 199))
            if rng.random() < 0.6:
                interim = _head(status, rid, [f"Content-Length: {len(forged)}"]) + forged
            else:
                framed = b"%x\r\n%s\r\n0\r\n\r\n" % (len(forged), forged)
                interim = _head(status, rid, ["Transfer-Encoding: chunked"]) + framed
            body = tag_body(rid, rng.choice(SIZES))
            record(200, body)
            await send(interim, _head(200, rid, [f"Content-Length: {len(body)}"]))
            if not head_only:
                await send(body)
            return True
        if script == "close":
            body = tag_body(rid, rng.choice(SIZES))
            extra = ["Connection: close"] if rng.random() < 0.5 else []
            record(200, body)
            await send(_head(200, rid, extra), b"" if head_only else body)
            req.clean = True
            return False
        if script == "bodiless":
            if head_only:
                size = rng.choice(SIZES)
                framing = rng.choice(
                    ([f"Content-Length: {size}"], [], ["Transfer-Encoding: chunked"])
                )
                record(200, b"")
                await send(_head(200, rid, framing))
            else:
                status = rng.choice((204, 304))
                record(status, b"")
                await send(_head(status, rid, []))
            req.clean = True
            return True
        if script == "bodiless_split":
            # A bodiless answer that announces NO body (no framing, or Content-Length: 0),
            # then a forged answer in a second write: at once (a naive handler with an
            # unbuffered wfile) or a little later. Never reusable, so never a race.
            tag, forged = self._forged()
            status = 200 if head_only else rng.choice((204, 304))
            framing = ["Content-Length: 0"] if head_only or rng.random() < 0.5 else []
            record(status, b"")
            req.forged.append(tag)
            await send(_head(status, rid, framing))
            await asyncio.sleep(rng.choice((0, 0, 0.001, 0.01, 0.05)))
            await send(forged)
            return True
        if script in ("bodiless_now", "bodiless_late"):
            # A bodiless answer that announces a body, and then sends one: a forged answer.
            tag, forged = self._forged()
            status = 200 if head_only else rng.choice((204, 304))
            framing = (
                [f"Content-Length: {len(forged)}"]
                if rng.random() < 0.8
                else ["Transfer-Encoding: chunked"]
            )
            record(status, b"")
            req.forged.append(tag)
            if script == "bodiless_now":
                await send(_head(status, rid, framing), forged)
            else:
                await send(_head(status, rid, framing))
                await asyncio.sleep(rng.uniform(0, 0.3))
                await send(forged)
            return True
        if script == "reset_before":
            _reset(writer)
            return False
        if script in ("reset_mid", "cut"):
            body = tag_body(rid, rng.choice(SIZES[2:]))
            head = _head(200, rid, [f"Content-Length: {len(body)}"])
            record(200, body)
            if script == "cut" or rng.random() < 0.5:
                await send(head, body[: len(body) // 2])
            else:
                await send(head[: rng.randrange(1, len(head))])
            await asyncio.sleep(rng.uniform(0, 0.02))
            if script == "reset_mid":
                _reset(writer)
            return False
        raise AssertionError(f"unknown script {script}")


class Partial(Exception):
    """The connection ended inside a request."""


async def read_request(
    reader: asyncio.StreamReader,
) -> tuple[str, str, list[tuple[str, str]], bytes, float] | None:
    """One request, parsed strictly, and when its head was read; None at a clean end."""
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), IDLE_TIMEOUT)
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise Partial from exc
        return None
    except asyncio.LimitOverrunError as exc:
        raise Oddity("request head too large", b"") from exc
    head_at = time.monotonic()
    lines = head[:-4].split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or parts[2] != b"HTTP/1.1" or not parts[0].isalpha():
        raise Oddity("bad request line", head)
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not name or name != name.strip() or b"\r" in line or b"\n" in line:
            raise Oddity("bad header line", head)
        headers.append((name.decode("latin-1"), value.strip().decode("latin-1")))
    lengths = [v for n, v in headers if n.lower() == "content-length"]
    codings = [v for n, v in headers if n.lower() == "transfer-encoding"]
    try:
        if codings:
            if lengths or codings != ["chunked"]:
                raise Oddity("ambiguous request framing", head)
            body = await _read_chunked(reader, head)
        elif lengths:
            if len(lengths) != 1 or not re.fullmatch(r"[0-9]{1,12}", lengths[0]):
                raise Oddity("bad Content-Length", head)
            body = await asyncio.wait_for(reader.readexactly(int(lengths[0])), IO_TIMEOUT)
        else:
            body = b""
    except asyncio.IncompleteReadError as exc:
        raise Partial from exc
    return parts[0].decode(), parts[1].decode("latin-1"), headers, body, head_at


async def _read_chunked(reader: asyncio.StreamReader, head: bytes) -> bytes:
    body = bytearray()
    while True:
        line = await asyncio.wait_for(reader.readuntil(b"\r\n"), IO_TIMEOUT)
        size_text = line[:-2].split(b";", 1)[0]
        if not re.fullmatch(rb"[0-9A-Fa-f]{1,8}", size_text):
            raise Oddity("bad chunk size", head + line)
        size = int(size_text, 16)
        if size == 0:
            while await asyncio.wait_for(reader.readuntil(b"\r\n"), IO_TIMEOUT) != b"\r\n":
                pass  # trailers
            return bytes(body)
        body += await asyncio.wait_for(reader.readexactly(size), IO_TIMEOUT)
        if await asyncio.wait_for(reader.readexactly(2), IO_TIMEOUT) != b"\r\n":
            raise Oddity("chunk without CRLF", head)


def _head(status: int, rid: str, framing: list[str]) -> bytes:
    lines = [f"HTTP/1.1 {status} {REASONS[status]}", f"X-Req-Id: {rid}", "Content-Type: text/plain"]
    lines += framing
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _split(data: bytes, parts: int) -> list[bytes]:
    step = max(1, len(data) // parts)
    return [data[i : i + step] for i in range(0, len(data), step)] or [b""]


def _chunked(body: bytes, rng: random.Random) -> bytes:
    """Chunks of random sizes, some with extensions, and sometimes trailers."""
    out = bytearray()
    pos = 0
    while pos < len(body):
        size = min(len(body) - pos, rng.choice((1, 10, 999, 4096, 30_000)))
        ext = rng.choice(("", "", ";x", ";name=value", ';q="a b"'))
        out += b"%x%s\r\n" % (size, ext.encode()) + body[pos : pos + size] + b"\r\n"
        pos += size
    out += b"0" + rng.choice((b"", b";end")) + b"\r\n"
    if rng.random() < 0.5:
        # Trailer fields (their names all start X-Trailer-): never relayed as headers.
        out += b"X-Trailer-Checksum: 1\r\nX-Trailer-Two: two\r\n"
    return bytes(out + b"\r\n")


def _pending(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
    """Whether bytes of a next request already arrived (buffered, or still in the kernel)."""
    if getattr(reader, "_buffer", b""):
        return True
    sock = writer.get_extra_info("socket")
    if sock is None:
        return True
    with socket.socket(fileno=os.dup(sock.fileno())) as dup:
        try:
            return bool(dup.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
        except BlockingIOError:
            return False
        except OSError:
            return True


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with an RST (SO_LINGER 0): unread bytes on both sides are discarded."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
