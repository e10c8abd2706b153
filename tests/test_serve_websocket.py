"""WebSocket upgrades through the proxy."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from tests.net import Recorder, running_app, running_proxy

APP = "https://app.example.com"


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
            await client.ws_connect(f"{proxy}/ws", headers={"Origin": "https://evil.example"})
        assert info.value.status == 403
        # No Origin (not a browser) and routes without CORS are forwarded.
        async with client.ws_connect(f"{proxy}/ws") as ws:
            await ws.send_str("x")
            assert (await ws.receive(timeout=3)).data == "echo:x"
        async with client.ws_connect(
            f"{proxy}/open/ws", headers={"Origin": "https://evil.example"}
        ):
            pass
