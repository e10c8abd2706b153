"""WebSocket upgrades through the proxy."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import re
import signal
import struct
import time
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
from aiohttp import WSMsgType, web

from corsproxy.commands.explain import explain, websocket_url
from tests.helpers import config as compile_config
from tests.net import Recorder, raw_upstream, rss_kib, running_app, running_proxy, start_cli

APP = "https://app.example.com"
EVIL = "https://evil.example"
LIMIT = 1024


@pytest.fixture
async def proxy() -> Any:
    recorder = Recorder()
    async with running_app(recorder.app()) as upstream:
        doc = {
            "upstream": upstream,
            "cors": {"allow_origins": [APP]},
            "routes": [{"path_prefix": "/open", "cors": False, "strip_prefix": True}],
        }
        async with running_proxy(doc) as url:
            yield url.replace("http://", "ws://")


async def test_messages_pings_and_protocols_flow_both_ways(proxy: str) -> None:
    async with aiohttp.ClientSession() as client:
        async with client.ws_connect(
            f"{proxy}/ws", headers={"Origin": APP}, protocols=("a", "b"), autoping=False
        ) as ws:
            assert ws.protocol == "b"  # the upstream's choice reaches the client
            await ws.send_str("hi")
            assert (await ws.receive(timeout=3)).data == "echo:hi"
            await ws.send_bytes(b"abc")
            assert (await ws.receive(timeout=3)).data == b"cba"
            await ws.ping(b"payload")
            pong = await ws.receive(timeout=3)
            assert pong.type is aiohttp.WSMsgType.PONG and pong.data == b"payload"


async def test_close_code_and_reason_are_relayed(proxy: str) -> None:
    async with aiohttp.ClientSession() as client:
        async with client.ws_connect(f"{proxy}/ws", headers={"Origin": APP}) as ws:
            await ws.send_str("close-4001")
            message = await ws.receive(timeout=3)
            assert message.type is aiohttp.WSMsgType.CLOSE
            assert message.data == 4001
            assert message.extra == "bye"


async def test_upstream_refusal_is_relayed_not_101(proxy: str) -> None:
    async with aiohttp.ClientSession() as client:
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await client.ws_connect(f"{proxy}/ws-refuse", headers={"Origin": APP})
        assert info.value.status == 403


async def test_disallowed_origin_cannot_open_a_websocket(proxy: str) -> None:
    async with aiohttp.ClientSession() as client:
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await client.ws_connect(f"{proxy}/ws", headers={"Origin": EVIL})
        assert info.value.status == 403
        # No Origin (not a browser) is forwarded.
        async with client.ws_connect(f"{proxy}/ws") as ws:
            await ws.send_str("x")
            assert (await ws.receive(timeout=3)).data == "echo:x"


# --- an upstream that records what reaches it ----------------------------------------


@dataclass
class Upstream:
    """A WebSocket upstream: records messages and the close it received, and on request
    sends a message of a given size or closes with a given code (raw frames allowed)."""

    received: list[tuple[WSMsgType, int]] = field(default_factory=list)  # type, size
    closes: list[tuple[int, str]] = field(default_factory=list)
    closed_by_proxy: list[int | None] = field(default_factory=list)
    handshakes: int = 0
    headers: list[dict[str, str]] = field(default_factory=list)  # of each handshake
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/{tail:.*}", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.handshakes += 1
        self.headers.append(dict(request.headers))
        # No limit here: whatever the proxy relays must reach this list.
        ws = web.WebSocketResponse(autoclose=False, autoping=False, max_msg_size=0)
        await ws.prepare(request)
        answer = int(request.query.get("answer", "1000"))
        try:
            while True:
                message = await ws.receive()
                if message.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                    self.received.append((message.type, len(message.data)))
                    await self.command(ws, message.data)
                elif message.type is WSMsgType.CLOSE:
                    self.closes.append((message.data, message.extra))
                    await ws.close(code=answer, message=b"answer")
                    break
                else:
                    self.closed_by_proxy.append(ws.close_code)
                    break
        finally:
            self.done.set()
        return ws

    async def command(self, ws: web.WebSocketResponse, data: Any) -> None:
        if not isinstance(data, str):
            return
        if data.startswith("send:"):  # send:<type>:<size>
            _, kind, size = data.split(":")
            if kind == "text":
                await ws.send_str("t" * int(size))
            else:
                await ws.send_bytes(b"b" * int(size))
        elif data.startswith("close:"):  # close:<code>:<reason>
            _, code, reason = data.split(":", 2)
            await ws.close(code=int(code), message=reason.encode())
        elif data == "close-without-code":
            await ws.send_frame(b"", WSMsgType.CLOSE)


@contextlib.asynccontextmanager
async def tunnel_through(
    limits: dict[str, Any] | None = None, timeouts: dict[str, Any] | None = None
) -> AsyncIterator[tuple[str, Upstream]]:
    upstream = Upstream()
    async with running_app(upstream.app()) as url:
        doc: dict[str, Any] = {
            "upstream": url,
            "cors": {"allow_origins": [APP]},
            "routes": [
                {"path_prefix": "/open", "cors": False},
                {"path_prefix": "/shadow", "cors": {"mode": "report-only"}},
                {"path_prefix": "/any", "cors": {"allow_origins": ["*", "null"]}},
                {"path_prefix": "/creds", "cors": {"allow_credentials": True}},
                {
                    "path_prefix": "/shadow-any",
                    "cors": {"allow_origins": ["*"], "mode": "report-only"},
                },
            ],
            "limits": limits or {},
        }
        if timeouts:
            doc["timeouts"] = timeouts
        async with running_proxy(doc) as proxy:
            yield proxy.replace("http://", "ws://"), upstream


async def wait_for(event: asyncio.Event) -> None:
    await asyncio.wait_for(event.wait(), 10)


# --- close codes -------------------------------------------------------------------


async def test_a_client_close_code_and_reason_reach_the_upstream_and_its_answer_comes_back() -> (
    None
):
    async with tunnel_through() as (proxy, upstream), aiohttp.ClientSession() as client:
        ws = await client.ws_connect(f"{proxy}/ws?answer=4005", headers={"Origin": APP})
        await ws.close(code=4001, message=b"bye")
        await wait_for(upstream.done)
        assert upstream.closes == [(4001, "bye")]
        assert ws.close_code == 4005  # the upstream's answer, not one the proxy made up


@pytest.mark.parametrize(
    ("command", "code", "reason"),
    [
        ("close:4002:server says bye", 4002, "server says bye"),
        ("close:1011:oops", 1011, "oops"),
        ("close:1006:lost", 1001, "lost"),  # 1006 may not be sent on the wire
        ("close:1015:tls", 1001, "upstream error"),  # aiohttp takes 1015 as a protocol error
        ("close-without-code", 1000, ""),  # no code (1005 when reported) becomes 1000
    ],
)
async def test_an_upstream_close_reaches_the_client_with_a_valid_code(
    command: str, code: int, reason: str
) -> None:
    async with tunnel_through() as (proxy, _), aiohttp.ClientSession() as client:
        async with client.ws_connect(f"{proxy}/ws", headers={"Origin": APP}) as ws:
            await ws.send_str(command)
            message = await ws.receive(timeout=5)
            assert message.type is WSMsgType.CLOSE
            assert (message.data, message.extra) == (code, reason)


async def test_a_client_close_with_a_code_invalid_on_the_wire_is_mapped() -> None:
    async with tunnel_through() as (proxy, upstream), aiohttp.ClientSession() as client:
        ws = await client.ws_connect(f"{proxy}/ws", headers={"Origin": APP})
        await ws.close(code=1006, message=b"x")  # aiohttp sends it; a proxy must not
        await wait_for(upstream.done)
        assert upstream.closes == [(1001, "x")]


# --- message size ------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["text", "binary"])
async def test_a_client_message_over_the_limit_closes_with_1009_and_never_reaches_upstream(
    kind: str,
) -> None:
    limits = {"max_ws_message_size": LIMIT}
    async with tunnel_through(limits) as (proxy, upstream), aiohttp.ClientSession() as client:
        async with client.ws_connect(f"{proxy}/ws", headers={"Origin": APP}) as ws:
            send = ws.send_str if kind == "text" else ws.send_bytes
            await send(("x" if kind == "text" else b"x") * LIMIT)  # type: ignore[operator]
            await send(("y" if kind == "text" else b"y") * (LIMIT + 1))  # type: ignore[operator]
            message = await ws.receive(timeout=5)
            assert message.type is WSMsgType.CLOSE
            assert message.data == 1009
        await wait_for(upstream.done)
        # The message at the limit went through, the one over it did not.
        assert [size for _, size in upstream.received] == [LIMIT]
        assert upstream.closes == [(1009, "client message too big")]


@pytest.mark.parametrize("kind", ["text", "binary"])
async def test_an_upstream_message_over_the_limit_closes_with_1009_and_never_reaches_the_client(
    kind: str,
) -> None:
    limits = {"max_ws_message_size": LIMIT}
    async with tunnel_through(limits) as (proxy, upstream), aiohttp.ClientSession() as client:
        async with client.ws_connect(f"{proxy}/ws", headers={"Origin": APP}, max_msg_size=0) as ws:
            await ws.send_str(f"send:{kind}:{LIMIT}")
            assert len((await ws.receive(timeout=5)).data) == LIMIT
            await ws.send_str(f"send:{kind}:{LIMIT + 1}")
            message = await ws.receive(timeout=5)
            assert message.type is WSMsgType.CLOSE, message
            assert (message.data, message.extra) == (1009, "upstream message too big")
        await wait_for(upstream.done)


def _deflated(data: bytes) -> bytes:
    """A permessage-deflate payload (RFC 7692 7.2.1: the trailing 00 00 ff ff removed)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    return (compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]


async def _raw_handshake(
    proxy: str, head: str
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]:
    """Send a raw request head (`{host}` is filled in); the reader, writer and answer head."""
    host, port = re.match(r"ws://([^:]+):(\d+)", proxy).groups()  # type: ignore[union-attr]
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(head.replace("{host}", f"{host}:{port}").encode())
    answer = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    return reader, writer, answer


async def test_permessage_deflate_is_never_negotiated_so_memory_follows_the_bytes_sent() -> None:
    """4 KB of deflated zeros would inflate to a whole 4 MiB message: a client leg with
    compression lets 100 connections grow the process by 1.4 GB for 2 MB sent. Neither leg
    negotiates it; a compressed frame is a protocol error (1002), never inflated."""
    limit = 4 * 1024 * 1024
    async with tunnel_through({"max_ws_message_size": limit}) as (proxy, upstream):
        async with aiohttp.ClientSession() as client:
            async with client.ws_connect(f"{proxy}/ws", headers={"Origin": APP}, compress=15) as ws:
                assert ws.compress == 0
        assert "Sec-WebSocket-Extensions" not in upstream.headers[-1]  # none offered upstream
        upstream.done.clear()
        key = base64.b64encode(os.urandom(16)).decode()
        reader, writer, head = await _raw_handshake(
            proxy,
            "GET /ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            "Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n",
        )
        try:
            assert head.startswith(b"HTTP/1.1 101")
            assert b"sec-websocket-extensions" not in head.lower()
            payload = _deflated(b"\0" * limit)
            assert len(payload) < 5000
            mask = os.urandom(4)
            masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            # FIN + RSV1 (compressed) + BINARY, masked, 16-bit length.
            writer.write(bytes([0xC2, 0x80 | 126]) + struct.pack("!H", len(payload)) + mask)
            writer.write(masked)
            await writer.drain()
            frame = await asyncio.wait_for(reader.readexactly(4), 5)
            assert frame[0] == 0x88
            assert struct.unpack("!H", frame[2:4])[0] == 1002  # protocol error
        finally:
            writer.close()
        await wait_for(upstream.done)
        assert upstream.received == []


def _upgrade_head() -> str:
    """A plain WebSocket upgrade of /ws (for `_raw_handshake`)."""
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        "GET /ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )


def _masked_frame_header(opcode: int, length: int) -> bytes:
    return bytes([0x80 | opcode, 0x80 | 127]) + struct.pack("!Q", length) + os.urandom(4)


@pytest.mark.parametrize("length", [LIMIT + 1, 1 << 20, 1 << 40])
async def test_a_frame_announcing_a_length_over_the_limit_is_refused_before_its_payload(
    length: int,
) -> None:
    """Raw bytes: the frame header alone gets a 1009 close, the payload is never awaited."""
    async with tunnel_through({"max_ws_message_size": LIMIT}) as (proxy, upstream):
        host, port = re.match(r"ws://([^:]+):(\d+)", proxy).groups()  # type: ignore[union-attr]
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            key = base64.b64encode(os.urandom(16)).decode()
            writer.write(
                (
                    f"GET /ws HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                    f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                    "Sec-WebSocket-Version: 13\r\n\r\n"
                ).encode()
            )
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert head.startswith(b"HTTP/1.1 101")
            writer.write(_masked_frame_header(0x2, length) + b"x" * 100)
            await writer.drain()
            frame = await asyncio.wait_for(reader.readexactly(4), 5)
            assert frame[0] == 0x88  # FIN + CLOSE, unmasked from a server
            assert struct.unpack("!H", frame[2:4])[0] == 1009
        finally:
            writer.close()
        await wait_for(upstream.done)
        assert upstream.received == []
        assert upstream.closes == [(1009, "client message too big")]


async def test_a_client_still_sending_a_message_over_the_limit_reads_the_1009_not_a_reset() -> None:
    """A browser sends the rest of a message that is too big after the proxy's 1009 (Firefox
    reported 1006 for it): a socket closed with data still arriving answers with a reset.
    The proxy closes lingering: the client sends the whole message without an error, then
    reads the CLOSE 1009 and an orderly end of stream."""
    async with tunnel_through({"max_ws_message_size": LIMIT}) as (proxy, upstream):
        reader, writer, head = await _raw_handshake(proxy, _upgrade_head())
        try:
            assert head.startswith(b"HTTP/1.1 101")
            size = 2 * 1024 * 1024
            writer.write(_masked_frame_header(0x2, size))
            for _ in range(size // 65536):  # paced, so the proxy has answered long before
                writer.write(b"x" * 65536)
                await writer.drain()  # a reset raises here (ConnectionResetError, EPIPE)
                await asyncio.sleep(0.005)
            frame = await asyncio.wait_for(reader.readexactly(4), 5)
            assert frame[0] == 0x88 and struct.unpack("!H", frame[2:4])[0] == 1009
            assert await asyncio.wait_for(reader.read(), 10) == b""  # FIN, not a reset
        finally:
            writer.close()
        await wait_for(upstream.done)
        assert upstream.received == []
        assert upstream.closes == [(1009, "client message too big")]


async def test_a_lingering_close_ends_after_its_timeout_if_the_client_never_closes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The linger is bounded: a client that keeps sending after the 1009 and never closes
    has its connection closed once LINGER_TIMEOUT is over (then its writes meet a reset)."""
    from corsproxy.http.aiohttp_private import LingeringCloseHook

    monkeypatch.setattr(LingeringCloseHook, "LINGER_TIMEOUT", 0.5)
    async with tunnel_through({"max_ws_message_size": LIMIT}) as (proxy, upstream):
        reader, writer, _head = await _raw_handshake(proxy, _upgrade_head())
        try:
            writer.write(_masked_frame_header(0x2, 1 << 30))
            frame = await asyncio.wait_for(reader.readexactly(4), 5)
            assert struct.unpack("!H", frame[2:4])[0] == 1009
            started = time.monotonic()
            with pytest.raises(ConnectionError):
                while time.monotonic() - started < 10:
                    writer.write(b"x" * 4096)
                    await writer.drain()
                    await asyncio.sleep(0.05)
            assert 0.4 < time.monotonic() - started < 5
        finally:
            writer.close()
        await wait_for(upstream.done)


# --- handshake timeout -------------------------------------------------------------


def _access_records(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [r.fields for r in caplog.records if r.name == "corsproxy.access"]  # type: ignore[attr-defined]


async def test_an_upstream_that_never_answers_the_handshake_gets_a_504_in_time(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(30)

    async with raw_upstream(silent) as url:
        doc = {
            "upstream": url,
            "cors": {"allow_origins": [APP]},
            "timeouts": {"connect": 0.5, "read": 1},
        }
        async with running_proxy(doc) as proxy, aiohttp.ClientSession() as client:
            with caplog.at_level("INFO", logger="corsproxy.access"):
                started = time.monotonic()
                with pytest.raises(aiohttp.WSServerHandshakeError) as info:
                    await asyncio.wait_for(
                        client.ws_connect(
                            f"{proxy.replace('http', 'ws')}/ws", headers={"Origin": APP}
                        ),
                        15,
                    )
                elapsed = time.monotonic() - started
    assert info.value.status == 504
    assert info.value.headers is not None
    assert info.value.headers["Access-Control-Allow-Origin"] == APP  # the page sees the 504
    assert 1.4 <= elapsed < 10
    fields = _access_records(caplog)[-1]
    assert fields["status"] == 504
    assert "did not answer the handshake" in fields["error"]
    assert "1.5 s" in fields["error"]


async def test_a_websocket_waiting_for_a_connection_slot_gets_a_504_in_time(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Open WebSockets per process are capped by limits.upstream_connections (so is their
    memory): one more waits for a slot, then gets 504."""
    timeouts = {"connect": 0.5, "read": 0.5}
    limits = {"upstream_connections": 1}
    async with tunnel_through(limits, timeouts) as (proxy, upstream):
        async with aiohttp.ClientSession() as client:
            async with client.ws_connect(f"{proxy}/ws", headers={"Origin": APP}) as first:
                with caplog.at_level("INFO", logger="corsproxy.access"):
                    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
                        await asyncio.wait_for(
                            client.ws_connect(f"{proxy}/ws", headers={"Origin": APP}), 15
                        )
                assert info.value.status == 504
                fields = _access_records(caplog)[-1]
                assert fields["reason"] == "origin_allowed"
                assert "waiting for a free upstream connection" in fields["error"]
                assert fields["error"].startswith("upstream_connect_timeout")
                # The open one still works, and the slot is free again once it closes.
                await first.send_str("x")
                await first.close()
            async with client.ws_connect(f"{proxy}/ws", headers={"Origin": APP}) as again:
                await again.send_str("y")
        assert upstream.handshakes == 2


# --- cross-site WebSocket hijacking ------------------------------------------------


async def _handshake(
    proxy: str, path: str, headers: dict[str, str]
) -> tuple[int, dict[str, str], str]:
    """A handshake; the status, headers and body of the answer."""
    url = proxy.replace("ws://", "http://") + path
    key = base64.b64encode(os.urandom(16)).decode()
    ws_headers = {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": key,
        "Sec-WebSocket-Version": "13",
        **headers,
    }
    async with aiohttp.ClientSession(auto_decompress=False) as client:
        async with client.get(url, headers=ws_headers) as response:
            body = "" if response.status == 101 else await response.text()
            return response.status, dict(response.headers), body


async def test_cross_site_websocket_hijacking_is_refused_on_a_route_without_cors(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with tunnel_through() as (proxy, upstream):
        host = proxy.removeprefix("ws://")
        with caplog.at_level("INFO", logger="corsproxy.access"):
            status, headers, body = await _handshake(proxy, "/open/ws", {"Origin": EVIL})
        assert status == 403
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert "Access-Control-Allow-Origin" not in headers
        assert body.startswith("WebSocket refused:")
        fields = _access_records(caplog)[-1]
        assert (fields["cors"], fields["reason"]) == ("refused", "websocket_cross_origin")
        # Another scheme or port is another origin; `null` (sandboxed pages) is refused too.
        for origin in (f"https://{host}", "http://127.0.0.1:1", "null"):
            assert (await _handshake(proxy, "/open/ws", {"Origin": origin}))[0] == 403, origin
        assert upstream.handshakes == 0
        # Not a browser (no Origin), and the proxy's own origin as the client addressed it.
        assert (await _handshake(proxy, "/open/ws", {}))[0] == 101
        assert (await _handshake(proxy, "/open/ws", {"Origin": f"http://{host}"}))[0] == 101
        same = {"Host": "Proxy.Example:80", "Origin": "http://proxy.example"}
        assert (await _handshake(proxy, "/open/ws", same))[0] == 101
        assert upstream.handshakes == 3


async def test_a_cors_route_refuses_a_websocket_from_an_origin_it_does_not_allow(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with tunnel_through() as (proxy, upstream):
        with caplog.at_level("INFO", logger="corsproxy.access"):
            status, headers, body = await _handshake(proxy, "/ws", {"Origin": EVIL})
        assert status == 403
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert body == "WebSocket refused: origin not allowed\n"
        assert _access_records(caplog)[-1]["reason"] == "websocket_origin_not_allowed"
        status, headers, _ = await _handshake(proxy, "/ws", {"Origin": APP})
        assert status == 101 and headers["Access-Control-Allow-Origin"] == APP
        assert upstream.handshakes == 1


async def test_report_only_forwards_the_handshake_and_logs_would_refuse(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with tunnel_through() as (proxy, upstream):
        with caplog.at_level("INFO", logger="corsproxy.access"):
            status, _, _ = await _handshake(proxy, "/shadow/ws", {"Origin": EVIL})
            await wait_for(upstream.done)
            for _ in range(50):  # the access line is written when the tunnel ends
                if _access_records(caplog):
                    break
                await asyncio.sleep(0.1)
        assert status == 101
        fields = _access_records(caplog)[-1]
        assert (fields["cors"], fields["reason"]) == (
            "would_refuse",
            "websocket_origin_not_allowed",
        )
        assert upstream.handshakes == 1


# --- credentials: a cross-origin page on a policy without them gets none ----------------

CREDENTIALS = {"Cookie": "session=SECRET", "Authorization": "Bearer SECRET"}


async def test_a_cross_origin_handshake_on_a_policy_without_credentials_loses_them(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Browsers attach cookies to every WebSocket handshake and nothing stops the page from
    reading the messages: `*` without credentials must not hand evil.example the session
    (for HTTP the loader refuses `*` with credentials)."""
    async with tunnel_through() as (proxy, upstream):
        host = proxy.removeprefix("ws://")
        cases = [
            # path, origin, credentials forwarded
            ("/any/ws", EVIL, False),
            ("/any/ws", "null", False),
            ("/ws", APP, False),  # listed, but the policy has no credentials
            ("/creds/ws", APP, True),
            ("/any/ws", f"http://{host}", True),  # the proxy's own origin
            ("/open/ws", f"http://{host}", True),  # cors: false, same origin
            ("/any/ws", None, True),  # not a browser
        ]
        for path, origin, kept in cases:
            headers = {**CREDENTIALS, **({"Origin": origin} if origin else {})}
            status, _, _ = await _handshake(proxy, path, headers)
            assert status == 101, (path, origin)
            seen = upstream.headers[-1]
            got = {n: seen.get(n) for n in CREDENTIALS}
            assert got == (CREDENTIALS if kept else dict.fromkeys(CREDENTIALS)), (path, origin)
        # Report-only changes nothing on the wire; the log says what enforce mode would do.
        with caplog.at_level("INFO", logger="corsproxy"):
            status, _, _ = await _handshake(
                proxy, "/shadow-any/ws", {**CREDENTIALS, "Origin": EVIL}
            )
        assert status == 101
        assert upstream.headers[-1]["Cookie"] == "session=SECRET"
        assert any("would strip Cookie and Authorization" in r.getMessage() for r in caplog.records)


# --- the client's handshake is checked before anything goes upstream -------------------

_BAD_HANDSHAKES = [
    # id, request line version, extra header lines, status
    ("version-99", "HTTP/1.1", "Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 99\r\n", 426),
    ("no-version", "HTTP/1.1", "Sec-WebSocket-Key: {key}\r\n", 426),
    ("no-key", "HTTP/1.1", "Sec-WebSocket-Version: 13\r\n", 400),
    ("short-key", "HTTP/1.1", "Sec-WebSocket-Key: AAAA\r\nSec-WebSocket-Version: 13\r\n", 400),
    (
        "two-keys",
        "HTTP/1.1",
        "Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n",
        400,
    ),
    ("http-1.0", "HTTP/1.0", "Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n", 400),
]


@pytest.mark.parametrize(
    ("version", "lines", "status"),
    [c[1:] for c in _BAD_HANDSHAKES],
    ids=[c[0] for c in _BAD_HANDSHAKES],
)
async def test_a_malformed_client_handshake_is_answered_here_and_never_reaches_the_upstream(
    version: str, lines: str, status: int, caplog: pytest.LogCaptureFixture
) -> None:
    """Was: the upstream handshake done (its app ran), then a 500 without CORS and a
    traceback per request. Now: 400, or 426 naming version 13 (RFC 6455 4.4), with CORS."""
    key = base64.b64encode(os.urandom(16)).decode()
    async with tunnel_through() as (proxy, upstream):
        with caplog.at_level("INFO"):
            _, writer, head = await _raw_handshake(
                proxy,
                f"GET /ws {version}\r\nHost: {{host}}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nOrigin: {APP}\r\n{lines.format(key=key)}\r\n",
            )
            writer.close()
        text = head.decode("latin-1")
        assert re.match(rf"HTTP/1\.[01] {status} ", text), text
        assert f"Access-Control-Allow-Origin: {APP}" in text
        assert "X-Request-Id: " in text
        assert ("Sec-WebSocket-Version: 13" in text) is (status == 426)
        assert upstream.handshakes == 0
        assert [r for r in caplog.records if r.levelname == "ERROR" or r.exc_info] == []
        fields = _access_records(caplog)[-1]
        assert fields["status"] == status


async def test_the_101_names_no_server_and_carries_the_request_id() -> None:
    """The upstream sends no Server header: none is invented (aiohttp's would name Python
    and aiohttp versions). X-Request-Id comes back as on every other answer."""
    async with tunnel_through() as (proxy, _):
        status, headers, _ = await _handshake(proxy, "/ws", {"Origin": APP, "X-Request-Id": "r-42"})
        names = {n.lower(): v for n, v in headers.items()}
        assert status == 101
        assert "server" not in names
        assert names["x-request-id"] == "r-42"
        status, headers, _ = await _handshake(proxy, "/ws", {"Origin": APP})
        assert len({n.lower(): v for n, v in headers.items()}["x-request-id"]) >= 8


# --- endings without a closing handshake ---------------------------------------------


async def test_a_client_that_drops_its_connection_closes_the_upstream_with_1001() -> None:
    async with tunnel_through() as (proxy, upstream):
        host, port = re.match(r"ws://([^:]+):(\d+)", proxy).groups()  # type: ignore[union-attr]
        reader, writer = await asyncio.open_connection(host, int(port))
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            (
                f"GET /ws HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        assert (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)).startswith(
            b"HTTP/1.1 101"
        )
        writer.close()  # no close frame
        await wait_for(upstream.done)
        assert upstream.closes == [(1001, "")]


async def test_shutdown_closes_open_websockets_with_1001() -> None:
    upstream = Upstream()
    async with running_app(upstream.app()) as url, aiohttp.ClientSession() as client:
        async with running_proxy({"upstream": url}) as proxy:
            ws = await client.ws_connect(f"{proxy.replace('http', 'ws')}/ws")
            await ws.send_str("x")
        # The proxy has stopped: both sides were told it went away.
        message = await ws.receive(timeout=5)
        assert (message.type, message.data) == (WSMsgType.CLOSE, 1001)
        await wait_for(upstream.done)
        assert upstream.closes == [(1001, "")]


# --- memory ------------------------------------------------------------------------


async def _echo(request: web.Request) -> web.StreamResponse:
    ws = web.WebSocketResponse(max_msg_size=0)
    await ws.prepare(request)
    async for message in ws:
        if message.type is WSMsgType.BINARY:
            await ws.send_bytes(message.data)
    return ws


async def _wave(proxy: str, pid: int, count: int, size: int) -> int:
    """`count` WebSockets each echo three messages of `size` bytes; the proxy's peak RSS."""
    peak = rss_kib(pid)
    finished = asyncio.Event()

    async def sample() -> None:
        nonlocal peak
        while not finished.is_set():
            peak = max(peak, rss_kib(pid))
            await asyncio.sleep(0.02)

    async def run(ws: aiohttp.ClientWebSocketResponse) -> None:
        for _ in range(3):
            await ws.send_bytes(b"m" * size)
            message = await ws.receive(timeout=60)
            assert message.type is WSMsgType.BINARY and len(message.data) == size
        await ws.close()

    sampler = asyncio.create_task(sample())
    async with aiohttp.ClientSession() as client:
        url = f"{proxy.replace('http', 'ws')}/ws"
        sockets = [await client.ws_connect(url) for _ in range(count)]
        await asyncio.wait_for(asyncio.gather(*(run(ws) for ws in sockets)), 120)
    finished.set()
    await sampler
    return peak


async def test_memory_stays_bounded_with_many_websockets_at_the_limit(tmp_path: Any) -> None:
    """A real process: 50 WebSockets each echo messages of exactly the limit both ways, in
    two waves. The proxy holds a few copies of a message per connection in flight (reader,
    relayed bytes, masked copy), never a queue of them, and a second wave costs no more.
    Measured at the default 4 MiB: about 11 MiB per connection at the peak, back to the
    baseline after."""
    limit, count = 1024 * 1024, 50
    app = web.Application()
    app.router.add_get("/ws", _echo)
    async with running_app(app) as url:
        config = tmp_path / "c.yaml"
        config.write_text(f"upstream: {url}\nlimits:\n  max_ws_message_size: {limit}\n")
        proc, proxy = await asyncio.to_thread(
            start_cli, "--config", str(config), "--listen", "127.0.0.1:0"
        )
        try:
            baseline = rss_kib(proc.pid)
            peaks = [await _wave(proxy, proc.pid, count, limit) for _ in range(2)]
        finally:
            proc.send_signal(signal.SIGTERM)
            await asyncio.to_thread(proc.wait, 20)
            assert proc.stdout is not None and proc.stderr is not None
            proc.stdout.close()
            proc.stderr.close()
    growth = [round((peak - baseline) / 1024) for peak in peaks]
    print(f"proxy RSS growth with {count} WebSockets at {limit} bytes: {growth} MiB")
    # Four copies per connection in flight would be 200 MiB; a queue of messages far more.
    assert max(growth) < 4 * count * limit / 2**20, growth
    assert growth[1] < growth[0] * 1.5 + 32, growth


# --- the access log --------------------------------------------------------------------


async def test_the_access_line_of_a_websocket_says_how_it_ended(
    caplog: pytest.LogCaptureFixture,
) -> None:
    limits = {"max_ws_message_size": LIMIT}
    async with tunnel_through(limits) as (proxy, upstream), aiohttp.ClientSession() as client:
        with caplog.at_level("INFO", logger="corsproxy.access"):
            for _ in range(5):  # the client's connection closes as the tunnel ends: no race
                upstream.done.clear()
                async with client.ws_connect(f"{proxy}/ws", headers={"Origin": APP}) as ws:
                    await ws.send_str("hi")
                await wait_for(upstream.done)
            ws = await client.ws_connect(f"{proxy}/ws", headers={"Origin": APP})
            await ws.send_str(f"send:binary:{LIMIT + 1}")
            assert (await ws.receive(timeout=5)).data == 1009
            await ws.close()
            for _ in range(50):
                if len(_access_records(caplog)) == 6:
                    break
                await asyncio.sleep(0.1)
    records = _access_records(caplog)
    assert [(r["status"], r.get("error", "")) for r in records[:5]] == [(101, "")] * 5
    assert records[5]["status"] == 101
    assert records[5]["error"].startswith("upstream message too big")


# --- explain predicts what the server does ---------------------------------------------

_EXPLAIN_TABLE = [
    # the URL the page opens ({port}: the proxy's), the page's origin
    ("ws://127.0.0.1:{port}/open/ws", "http://127.0.0.1:{port}"),
    ("ws://u:p@127.0.0.1:{port}/open/ws", "http://127.0.0.1:{port}"),  # userinfo
    ("ws://127.0.0.1:{port}/open/ws?x=1", "http://127.0.0.1:{port}"),
    ("ws://LOCALHOST:{port}/open/ws", "http://localhost:{port}"),
    ("ws://api.example.com/open/ws", "http://api.example.com"),
    ("wss://api.example.com/open/ws", "https://api.example.com"),  # behind a TLS terminator
    ("wss://api.example.com:8443/open/ws", "https://api.example.com:8443"),
    ("ws://127.0.0.1:{port}/open/ws", "null"),
    ("ws://127.0.0.1:{port}/open/ws", EVIL),
    ("ws://127.0.0.1:{port}/ws", APP),  # allowed, no credentials
    ("ws://127.0.0.1:{port}/ws", EVIL),
    ("ws://127.0.0.1:{port}/ws", "http://127.0.0.1:{port}"),  # own origin, not listed
    ("ws://127.0.0.1:{port}/any/ws", EVIL),
    ("ws://127.0.0.1:{port}/any/ws", "http://127.0.0.1:{port}"),
    ("wss://api.example.com/any/ws", "https://api.example.com"),
    ("ws://127.0.0.1:{port}/creds/ws", APP),
]


def _browser_host(url: str) -> str:
    """The Host a browser sends for a ws:// or wss:// URL (a TLS terminator passes it on)."""
    split = urlsplit(url)
    assert split.hostname is not None
    default = 443 if split.scheme == "wss" else 80
    host = f"[{split.hostname}]" if ":" in split.hostname else split.hostname
    return host if split.port in (None, default) else f"{host}:{split.port}"


async def test_explain_predicts_the_servers_verdict_for_a_table_of_handshakes() -> None:
    """`explain --path <ws URL>` against the very config the server runs: the verdict, and
    whether the upstream gets the page's cookie, as the real server decides."""
    async with tunnel_through() as (proxy, upstream):
        port = proxy.rsplit(":", 1)[1]
        url = proxy.replace("ws://", "http://")
        config = compile_config(
            {
                "listen": "0.0.0.0:8080",  # what explain must not take as the own origin
                "upstream": url,
                "cors": {"allow_origins": [APP]},
                "routes": [
                    {"path_prefix": "/open", "cors": False},
                    {"path_prefix": "/any", "cors": {"allow_origins": ["*", "null"]}},
                    {"path_prefix": "/creds", "cors": {"allow_credentials": True}},
                ],
            }
        )
        rows = []
        for template, origin_template in _EXPLAIN_TABLE:
            page_url, origin = template.format(port=port), origin_template.format(port=port)
            parsed = websocket_url(page_url)
            assert parsed is not None
            path, own = parsed
            predicted = explain(config, origin, path=path, websocket=True, proxy_origin=own)
            before = upstream.handshakes
            headers = {"Host": _browser_host(page_url), "Origin": origin, "Cookie": "s=SECRET"}
            status, _, _ = await _handshake(proxy, path, headers)
            got_cookie = upstream.handshakes > before and "Cookie" in upstream.headers[-1]
            rows.append(
                (
                    page_url,
                    origin,
                    (predicted.allowed, predicted.allowed and not predicted.strips_credentials),
                    (status == 101, got_cookie),
                )
            )
    wrong = [row for row in rows if row[2] != row[3]]
    assert wrong == [], wrong
    # The table covers both verdicts and both credential outcomes.
    assert {row[3] for row in rows} == {(False, False), (True, False), (True, True)}
