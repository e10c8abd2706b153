"""Network helpers for integration tests: loopback only, every wait bounded."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from corsproxy.http.server import serve
from tests.helpers import config as compile_config

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 10.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def running_proxy(doc: dict[str, Any], **kwargs: Any) -> AsyncIterator[str]:
    """A corsproxy server in this process; yields its base URL."""
    config = compile_config({"listen": "127.0.0.1:0", **doc})
    stop = asyncio.Event()
    ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        serve(
            config, stop=stop, ready=ready.set_result, signals=False, shutdown_timeout=2, **kwargs
        )
    )
    try:
        yield await asyncio.wait_for(ready, TIMEOUT)
    finally:
        stop.set()
        await asyncio.wait_for(task, TIMEOUT)


@contextlib.asynccontextmanager
async def running_app(app: web.Application, host: str = "127.0.0.1") -> AsyncIterator[str]:
    # An upstream that sees request bodies exactly as they arrive.
    # Handlers are cancelled when the proxy drops the connection, so tests can see it.
    runner = web.AppRunner(
        app, access_log=None, shutdown_timeout=1, auto_decompress=False, handler_cancellation=True
    )
    await runner.setup()
    site = web.TCPSite(runner, host, 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


@dataclass
class Sentinel:
    """A listener that must see no connection (open-proxy and redirect checks)."""

    port: int = 0
    connections: int = 0
    server: asyncio.Server | None = None

    async def __aenter__(self) -> Sentinel:
        async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            writer.close()

        self.server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class RawUpstream:
    """A raw upstream: each connection runs `script` after the request head was read.
    `connections` counts them, `heads` keeps the heads read, and `closed_by_proxy` is set
    once the proxy closed a connection first."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.connections = 0
        self.heads: list[bytes] = []
        self.closed_by_proxy = asyncio.Event()
        self.url = ""

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            self.heads.append(await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT))
            await self.script(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError, TimeoutError):
            self.closed_by_proxy.set()
            raise  # raw_server closes the connection


@contextlib.asynccontextmanager
async def scripted_upstream(script: Script) -> AsyncIterator[RawUpstream]:
    """A RawUpstream on loopback, for tests that count or read what it received."""
    upstream = RawUpstream(script)
    async with raw_server(upstream.handle) as url:
        upstream.url = url
        yield upstream


@contextlib.asynccontextmanager
async def raw_upstream(script: Script) -> AsyncIterator[str]:
    """The URL of a scripted upstream, for tests that need only its address."""
    async with scripted_upstream(script) as upstream:
        yield upstream.url


async def until_closed(reader: asyncio.StreamReader, limit: float = TIMEOUT) -> None:
    """In a script: wait (bounded) until the proxy closes its side of the connection."""
    with contextlib.suppress(ConnectionError, TimeoutError):
        async with asyncio.timeout(limit):
            while await reader.read(65536):
                pass
    raise ConnectionResetError("closed by the proxy")


@contextlib.asynccontextmanager
async def raw_server(handle: Script) -> AsyncIterator[str]:
    """A loopback server that runs `handle` on each connection, then closes it."""

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await handle(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError, TimeoutError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(server.wait_closed(), 2)


def replies(data: bytes, then_close: bool = True) -> Script:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(data)
        await writer.drain()
        if not then_close:
            await asyncio.sleep(TIMEOUT)

    return script


async def raw_exchange(url: str, data: bytes, wait: float = TIMEOUT) -> bytes:
    """Send raw bytes to host:port of `url`; read until the server closes or goes quiet."""
    host, port = re.match(r"http://\[?([^\]/]+?)\]?:(\d+)", url).groups()  # type: ignore[union-attr]
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(data)
        await writer.drain()
        chunks: list[bytes] = []
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                chunk = await asyncio.wait_for(reader.read(65536), 0.5)
            except TimeoutError:
                if chunks:
                    break
                continue
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        writer.close()


def head_and_body(response: bytes) -> tuple[list[str], bytes]:
    head, _, body = response.partition(b"\r\n\r\n")
    return head.decode("latin-1").split("\r\n"), body


def header_values(lines: list[str], name: str) -> list[str]:
    prefix = name.lower() + ":"
    return [h.split(":", 1)[1].strip() for h in lines[1:] if h.lower().startswith(prefix)]


@dataclass
class Recorder:
    """An aiohttp upstream that records what it received and offers test endpoints."""

    seen: list[dict[str, Any]] = field(default_factory=list)
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    url: str = ""

    def app(self) -> web.Application:
        app = web.Application(client_max_size=1024**3)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        if path.startswith("/ws"):
            return await self.websocket(request)
        if path == "/upload":
            total = 0
            async for chunk in request.content.iter_any():
                total += len(chunk)
            self.seen.append(
                {"path": path, "size": total, "headers": list(request.headers.items())}
            )
            return web.Response(text=str(total))
        body = await request.read()
        self.seen.append(
            {
                "method": request.method,
                "raw_path": request.raw_path,
                "headers": list(request.headers.items()),
                "body": body,
            }
        )
        if path == "/cookies":
            response = web.Response(text="ok")
            response.headers.add("Set-Cookie", "a=1; Path=/")
            response.headers.add("Set-Cookie", "b=2; Path=/")
            return response
        if path == "/cors":
            return web.Response(
                text="ok",
                headers={
                    "Access-Control-Allow-Origin": "*",
                    "Access-Control-Allow-Credentials": "true",
                    "Access-Control-Expose-Headers": "X-Secret",
                    "Vary": "Accept-Encoding",
                },
            )
        if path.startswith("/status/"):
            status = int(path.rsplit("/", 1)[1])
            return web.Response(
                status=status, text=f"status {status}" if status not in (204, 304) else None
            )
        if path.startswith("/redirect"):
            return web.Response(status=302, headers={"Location": request.query["to"]})
        if path == "/gzip":
            return web.Response(
                body=gzip.compress(b"x" * 1000),
                headers={"Content-Encoding": "gzip", "Content-Type": "text/plain"},
            )
        if path == "/slow":
            try:
                await asyncio.sleep(float(request.query.get("s", "5")))
            except asyncio.CancelledError:
                self.cancelled.set()
                raise
            return web.Response(text="slow")
        if path == "/sse":
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await response.prepare(request)
            await response.write(b"data: one\n\n")
            await asyncio.sleep(float(request.query.get("gap", "1")))
            await response.write(b"data: two\n\n")
            await response.write_eof()
            return response
        if path == "/big":
            size = int(request.query["mib"]) * 1024 * 1024
            response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
            response.content_length = size
            await response.prepare(request)
            block = b"z" * (1024 * 1024)
            for _ in range(size // len(block)):
                await response.write(block)
            await response.write_eof()
            return response
        return web.json_response(
            {"method": request.method, "raw_path": request.raw_path, "body": body.decode("latin-1")}
        )

    async def websocket(self, request: web.Request) -> web.StreamResponse:
        if request.path == "/ws-refuse":
            return web.Response(status=403, text="no")
        ws = web.WebSocketResponse(protocols=("b", "c"), autoping=False)
        await ws.prepare(request)
        async for message in ws:
            if message.type.name == "TEXT":
                if message.data == "close-4001":
                    await ws.close(code=4001, message=b"bye")
                    break
                await ws.send_str("echo:" + message.data)
            elif message.type.name == "BINARY":
                await ws.send_bytes(message.data[::-1])
            elif message.type.name == "PING":
                await ws.pong(message.data)
        return ws


def start_cli(*args: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen[str], str]:
    """`corsproxy serve ...` as a subprocess; returns it and the URL it listens on."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "corsproxy", "serve", "--log-format", "json", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=ROOT,
    )
    deadline = time.monotonic() + TIMEOUT
    assert proc.stderr is not None
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        with contextlib.suppress(json.JSONDecodeError):
            record = json.loads(line)
            found = re.search(r"listening on (https?://\S+),", record.get("message", ""))
            if found:
                return proc, found.group(1)
    proc.kill()
    out, err = proc.communicate(timeout=TIMEOUT)
    raise AssertionError(f"corsproxy did not start: {out}{err}")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))
