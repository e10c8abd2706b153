"""trusted_proxies through a real server: what the upstream sees from a trusted peer and from
anyone else, in one process and with --workers, before and after a reload."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from tests.net import Recorder, running_app, running_proxy, start_cli

SPOOF = {
    "Host": "proxy.example:8080",
    "X-Forwarded-Proto": "https",
    "X-Forwarded-Host": "api.example.com",
    "X-Forwarded-Port": "443",
    "X-Forwarded-Prefix": "/edge",
    "X-Forwarded-For": "203.0.113.9",
}


def forwarding(seen: dict[str, Any]) -> dict[str, str]:
    return {
        n.lower(): v
        for n, v in seen["headers"]
        if n.lower().startswith("x-forwarded-") or n.lower() == "forwarded"
    }


async def get(url: str, headers: dict[str, str]) -> int:
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as response:
        await response.read()
        return response.status


async def test_trusted_peer_headers_are_kept_and_others_replaced(recorder: Recorder) -> None:
    routes = [{"path_prefix": "/svc", "strip_prefix": True}]
    doc = {"upstream": recorder.url, "cors": False, "routes": routes}
    async with running_proxy({**doc, "trusted_proxies": ["127.0.0.0/8"]}) as proxy:
        assert await get(f"{proxy}/svc/a", SPOOF) == 200
    assert forwarding(recorder.seen[-1]) == {
        "x-forwarded-for": "203.0.113.9, 127.0.0.1",
        "x-forwarded-proto": "https",
        "x-forwarded-host": "api.example.com",
        "x-forwarded-port": "443",
        "x-forwarded-prefix": "/edge/svc",
    }
    async with running_proxy({**doc, "trusted_proxies": ["10.0.0.0/8", "::1"]}) as proxy:
        assert await get(f"{proxy}/svc/a", SPOOF) == 200
        assert await get(f"{proxy}/b", SPOOF) == 200
    assert forwarding(recorder.seen[-2]) == {
        "x-forwarded-for": "203.0.113.9, 127.0.0.1",
        "x-forwarded-proto": "http",
        "x-forwarded-host": "proxy.example:8080",
        "x-forwarded-prefix": "/svc",
    }
    assert "x-forwarded-prefix" not in forwarding(recorder.seen[-1])  # no prefix stripped


async def test_access_log_client_field(recorder: Recorder, tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(f"upstream: {recorder.url}\ncors: false\ntrusted_proxies: [127.0.0.1]\n")
    proc, url = start_cli("--config", str(config), "--listen", "127.0.0.1:0")
    try:
        assert await get(f"{url}/a", {"X-Forwarded-For": "6.6.6.6, 198.51.100.4"}) == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.to_thread(proc.communicate, timeout=10)
    access = [json.loads(line) for line in err.splitlines() if '"corsproxy.access"' in line]
    assert [(a["peer"], a["client"]) for a in access] == [("127.0.0.1", "198.51.100.4")]


@contextlib.asynccontextmanager
async def echo_upstream() -> AsyncIterator[str]:
    async def handle(request: web.Request) -> web.Response:
        return web.Response(text=request.headers.get("X-Forwarded-Proto", ""))

    app = web.Application()
    app.router.add_get("/{tail:.*}", handle)
    async with running_app(app) as url:
        yield url


async def protos(url: str, n: int) -> set[str]:
    """The X-Forwarded-Proto the upstream saw for n requests, each on a new connection (so
    they spread over the workers)."""
    seen = set()
    for _ in range(n):
        connector = aiohttp.TCPConnector(force_close=True)
        async with (
            aiohttp.ClientSession(connector=connector) as session,
            session.get(f"{url}/x", headers={"X-Forwarded-Proto": "https"}) as response,
        ):
            seen.add(await response.text())
    return seen


async def test_reload_changes_trust_in_every_worker(tmp_path: Path) -> None:
    async with echo_upstream() as upstream:
        config = tmp_path / "c.yaml"
        config.write_text(f"upstream: {upstream}\ncors: false\n")
        proc, url = start_cli("--config", str(config), "--listen", "127.0.0.1:0", "--workers", "2")
        try:
            assert await protos(url, 8) == {"http"}
            config.write_text(f"upstream: {upstream}\ncors: false\ntrusted_proxies: [127.0.0.1]\n")
            proc.send_signal(signal.SIGHUP)
            for _ in range(100):  # bounded: 10 s for every worker to have reloaded
                if await protos(url, 6) == {"https"}:
                    break
                await asyncio.sleep(0.1)
            assert await protos(url, 12) == {"https"}
            config.write_text(f"upstream: {upstream}\ncors: false\ntrusted_proxies: []\n")
            proc.send_signal(signal.SIGHUP)
            for _ in range(100):
                if await protos(url, 6) == {"http"}:
                    break
                await asyncio.sleep(0.1)
            assert await protos(url, 12) == {"http"}
        finally:
            proc.send_signal(signal.SIGTERM)
            await asyncio.to_thread(proc.communicate, timeout=15)


async def test_ipv6_trusted_peer_appends_a_quoted_forwarded_element(recorder: Recorder) -> None:
    doc = {"upstream": recorder.url, "cors": False, "listen": "[::1]:0"}
    chain = 'for=203.0.113.9;proto=https;host="api.example.com"'
    trust = {"trusted_proxies": ["::1/128"], "forwarded_headers": "forwarded"}
    async with running_proxy({**doc, **trust}) as proxy:
        port = proxy.rsplit(":", 1)[1]
        spoof = {"Forwarded": chain, "X-Forwarded-Port": "1", "X-Forwarded-For": "6.6.6.6"}
        assert await get(f"{proxy}/a", spoof) == 200
    assert forwarding(recorder.seen[-1]) == {
        "x-forwarded-for": "203.0.113.9, ::1",  # from Forwarded, the peer appended
        "x-forwarded-proto": "https",
        "x-forwarded-host": "api.example.com",
        "forwarded": f'{chain}, for="[::1]";proto=http;host="[::1]:{port}"',
    }


# Client-address claims that request-ip, remix-utils and the PaaS platforms read: never sent
# on, from an untrusted peer or a trusted one (corsproxy's X-Forwarded-For says who it is).
CLIENT_IP_CLAIMS = {
    "X-Forwarded": "for=6.6.6.6",
    "Forwarded-For": "6.6.6.6",
    "X-AppEngine-User-IP": "6.6.6.6",
    "Fly-Client-IP": "6.6.6.6",
    "DO-Connecting-IP": "6.6.6.6",
    "X-NF-Client-Connection-IP": "6.6.6.6",
    "True-Client-IP": "6.6.6.6",
    "CF-Connecting-IP": "6.6.6.6",
    "X-Client-IP": "6.6.6.6",
    "X-Cluster-Client-IP": "6.6.6.6",
    "Fastly-Client-IP": "6.6.6.6",
    "X-Real-IP": "6.6.6.6",
    # Read as the host the client used (found by the outside review of the whole issue).
    "X-Host": "6.6.6.6",
    "X-Original-Host": "6.6.6.6",
    "X-Forwarded-Server": "6.6.6.6",
}


async def test_client_address_claims_never_reach_the_upstream(recorder: Recorder) -> None:
    doc = {"upstream": recorder.url, "cors": False}
    for trusted in ([], ["127.0.0.1"]):
        async with running_proxy({**doc, "trusted_proxies": trusted}) as proxy:
            assert await get(f"{proxy}/a", CLIENT_IP_CLAIMS) == 200
        names = {n.lower() for n, _ in recorder.seen[-1]["headers"]}
        assert not names & {n.lower() for n in CLIENT_IP_CLAIMS}, (trusted, names)
        assert "6.6.6.6" not in repr(recorder.seen[-1]["headers"])


async def test_ipv4_mapped_entries_trust_the_ipv4_peer(recorder: Recorder) -> None:
    """`::ffff:127.0.0.1` and `::ffff:0:0/96` name IPv4 peers (read at load as 127.0.0.1
    and 0.0.0.0/0): a request from 127.0.0.1 is a trusted proxy's."""
    doc = {"upstream": recorder.url, "cors": False}
    for entry in ("::ffff:127.0.0.1", "::ffff:0:0/96"):
        async with running_proxy({**doc, "trusted_proxies": [entry]}) as proxy:
            assert await get(f"{proxy}/a", {"X-Forwarded-Proto": "https"}) == 200
        assert forwarding(recorder.seen[-1])["x-forwarded-proto"] == "https", entry
