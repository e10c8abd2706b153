"""Findings of the outside review of upstream TLS (issue 14, sections 5 and 7), each through a
real `corsproxy` process where the user met it: a wss upstream's failed handshake, a TLS 1.2
upstream that refuses the client certificate, a FIFO named as a certificate file, a route
whose upstream silently loses the top-level upstream_tls; and the pools left by reloads."""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from collections.abc import AsyncIterator

import aiohttp
import trustme
from aiohttp import web

from tests.net import TIMEOUT
from tests.test_upstream_tls import APP, CORS, PKI, corsproxy, get, pki, tls_upstream

__all__ = ["pki"]  # the fixture, imported for the tests below


@contextlib.asynccontextmanager
async def wss_upstream(context: ssl.SSLContext) -> AsyncIterator[str]:
    """A WebSocket echo server over TLS; yields its https:// URL."""

    async def echo(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for message in ws:
            await ws.send_str(message.data)
        return ws

    app = web.Application()
    app.router.add_get("/{tail:.*}", echo)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    server = site._server
    assert server is not None
    port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
    try:
        yield f"https://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def ws_status(url: str) -> int:
    """The status of a WebSocket handshake through corsproxy (101 when it opened)."""
    async with aiohttp.ClientSession() as client:
        try:
            async with client.ws_connect(url, headers={"Origin": APP}) as ws:
                await ws.send_str("ping")
                message = await asyncio.wait_for(ws.receive(), TIMEOUT)
                assert message.data == "ping"
                return 101
        except aiohttp.WSServerHandshakeError as exc:
            return exc.status


# --- 1. a wss upstream's failed TLS handshake is upstream_tls_failed ------------------------


async def test_a_wss_upstream_with_a_certificate_of_another_ca_is_upstream_tls_failed(
    pki: PKI,
) -> None:
    stranger = trustme.CA()  # the upstream's certificate is from a CA corsproxy does not trust
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    stranger.issue_cert("127.0.0.1").configure_cert(context)
    async with (
        wss_upstream(context) as stranger_url,
        wss_upstream(pki.server_context("127.0.0.1")) as trusted_url,
    ):
        doc = {
            "cors": CORS,
            "routes": [
                {"path_prefix": "/stranger", "upstream": stranger_url,
                 "upstream_tls": {"ca_file": "ca.pem"}},
                {"path_prefix": "/trusted", "upstream": trusted_url,
                 "upstream_tls": {"ca_file": "ca.pem"}},
            ],
        }  # fmt: skip
        async with corsproxy(doc, pki.dir) as (url, logs):
            assert await ws_status(f"{url}/trusted/ws") == 101
            assert await ws_status(f"{url}/stranger/ws") == 502
    failed = [line for line in logs if "TLS handshake failed" in line]
    assert failed, "\n".join(logs)
    assert (
        f"upstream {stranger_url}: TLS handshake failed: certificate verify failed" in (failed[0])
    ), failed[0]
    access = [line for line in logs if "/stranger/ws" in line]
    assert any("upstream_tls_failed" in line for line in access), "\n".join(logs)
    assert not any("upstream_unreachable" in line for line in logs), "\n".join(logs)


# --- 3. a TLS 1.2 upstream refusing the client certificate: words, not ConnectionResetError --


async def test_a_tls12_upstream_refusing_the_client_certificate_is_said_in_words(
    pki: PKI,
) -> None:
    client_ca = trustme.CA()
    context = pki.server_context("127.0.0.1", client_ca=client_ca)
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    async with tls_upstream(context) as up:
        doc = {"cors": CORS, "upstream": up.url, "upstream_tls": {"ca_file": "ca.pem"}}
        async with corsproxy(doc, pki.dir) as (url, logs):
            status, _, acao = await get(f"{url}/x")
            assert (status, acao) == (502, APP)
            # The same through the WebSocket tunnel (aiohttp's connector).
            assert await ws_status(f"{url}/ws") == 502
    failed = [line for line in logs if '"message":"upstream https://' in line]
    assert len(failed) == 2, "\n".join(logs)
    words = (
        f"upstream {up.url}: TLS handshake failed: connection reset during the TLS handshake "
        "(the upstream may have refused the client certificate, or speaks no TLS)"
    )
    for line in failed:
        assert words in line, line
    access = [line for line in logs if '"reason":"origin_allowed"' in line]
    assert [json.loads(line)["error"].split(":")[0] for line in access] == [
        "upstream_tls_failed"
    ] * 2, "\n".join(logs)
