"""Findings of the outside review of upstream TLS (issue 14, sections 5 and 7), each through a
real `corsproxy` process where the user met it: a wss upstream's failed handshake, a TLS 1.2
upstream that refuses the client certificate, a FIFO named as a certificate file, a route
whose upstream silently loses the top-level upstream_tls; and the pools left by reloads."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import trustme
import yaml
from aiohttp import web

from corsproxy.http.upstream import UpstreamClient, UpstreamResponse
from corsproxy.policy.routes import Upstream
from tests.helpers import config as compile_config
from tests.net import ROOT, TIMEOUT, start_cli
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
    # (not the start-up probe's warning, which says the same of the upstream)
    failed = [line for line in logs if "TLS handshake failed" in line and "reachable" not in line]
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
    failed = [line for line in failed if "reachable" not in line]  # the start-up probe's
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


# --- 2. a FIFO named as a certificate file never blocks check, reload or exit ---------------


def _check_quickly(directory: Path, doc: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    path = directory / "check.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return subprocess.run(
        [sys.executable, "-m", "corsproxy", "check", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,  # a FIFO opened for reading would wait here for a writer
        cwd=ROOT,
    )


@pytest.mark.parametrize("key", ["ca_file", "cert_file", "key_file"])
def test_a_fifo_as_a_tls_file_is_refused_by_check_at_once(pki: PKI, key: str) -> None:
    client = pki.ca.issue_cert("proxy.internal")
    pki.write("client.pem", client.cert_chain_pems[0])
    pki.write("client.key", client.private_key_pem)
    os.mkfifo(pki.dir / "fifo.pem")
    tls = {"ca_file": "ca.pem", "cert_file": "client.pem", "key_file": "client.key"}
    doc = {"upstream": "https://api.internal", "cors": CORS,
           "upstream_tls": {**tls, key: "fifo.pem"}}  # fmt: skip
    result = _check_quickly(pki.dir, doc)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert re.search(
        rf"check.yaml:\d+: upstream_tls.{key}: cannot read '[^']*fifo.pem': it is a FIFO, "
        "not a regular file",
        result.stderr,
    ), result.stderr


def test_a_symlinked_tls_file_is_read_as_kubernetes_mounts_it(pki: PKI) -> None:
    """A Secret volume: ca.pem -> ..data/ca.pem, ..data -> ..2026_11_30/ (a directory)."""
    stamped = pki.dir / "..2026_11_30"
    stamped.mkdir()
    (pki.dir / "ca.pem").rename(stamped / "ca.pem")
    (pki.dir / "..data").symlink_to(stamped.name)
    (pki.dir / "ca.pem").symlink_to("..data/ca.pem")
    doc = {"upstream": "https://api.internal", "cors": CORS, "upstream_tls": {"ca_file": "ca.pem"}}
    result = _check_quickly(pki.dir, doc)
    assert result.returncode == 0, result.stderr
    (pki.dir / "dir.pem").symlink_to(stamped.name)  # a symlink to a directory is refused
    result = _check_quickly(pki.dir, {**doc, "upstream_tls": {"ca_file": "dir.pem"}})
    assert result.returncode == 2 and "it is a directory" in result.stderr, result.stderr


async def test_a_reload_naming_a_fifo_fails_and_later_reloads_and_exit_still_work(
    pki: PKI,
) -> None:
    os.mkfifo(pki.dir / "fifo.pem")
    other = "https://other.example.com"
    async with tls_upstream(pki.server_context("127.0.0.1")) as up:
        path = pki.dir / "corsproxy.yaml"

        def write(ca_file: str, *origins: str) -> None:
            doc = {
                "listen": "127.0.0.1:0",
                "upstream": up.url,
                "upstream_tls": {"ca_file": ca_file},
                "cors": {"allow_origins": list(origins)},
            }
            path.write_text(yaml.safe_dump(doc, sort_keys=False))

        write("ca.pem", APP)
        proc, url = await asyncio.to_thread(start_cli, "--config", str(path))
        try:
            assert (await get(f"{url}/x"))[0] == 200
            write("fifo.pem", APP, other)
            proc.send_signal(signal.SIGHUP)
            await asyncio.sleep(0.5)
            assert (await get(f"{url}/x"))[:1] == (200,)  # the old config still serves
            assert (await get(f"{url}/x", other))[2] is None
            write("ca.pem", APP, other)
            proc.send_signal(signal.SIGHUP)
            for _ in range(100):  # bounded: until the next reload took effect
                if (await get(f"{url}/x", other))[2] == other:
                    break
                await asyncio.sleep(0.1)
            assert (await get(f"{url}/x", other))[2] == other
            proc.send_signal(signal.SIGTERM)
            await asyncio.to_thread(proc.wait, TIMEOUT)  # it exits (no thread stuck on a FIFO)
        finally:
            if proc.poll() is None:
                proc.kill()
            _, err = await asyncio.to_thread(proc.communicate, timeout=TIMEOUT)
    failed = [line for line in err.splitlines() if "reload failed" in line]
    assert failed and "it is a FIFO" in err, err
    assert proc.returncode == 0, err


# --- 5. a route naming the default upstream itself does not inherit upstream_tls: check says so


def test_check_warns_when_a_route_names_the_default_upstream_without_its_tls(pki: PKI) -> None:
    top = {"upstream": "https://api.internal:8443", "upstream_tls": {"ca_file": "ca.pem"},
           "cors": CORS}  # fmt: skip
    routes = [
        {"path_prefix": "/same", "upstream": "https://api.internal:8443"},
        {"path_prefix": "/v2", "upstream": "https://api.internal:8443/v2"},
        {"path_prefix": "/own", "upstream": "https://api.internal:8443",
         "upstream_tls": {"ca_file": "ca.pem"}},
        {"path_prefix": "/other", "upstream": "https://other.internal"},
        {"path_prefix": "/default"},
    ]  # fmt: skip
    result = _check_quickly(pki.dir, {**top, "routes": routes})
    assert result.returncode == 0, result.stderr
    warned = re.findall(r"check.yaml:(\d+): (routes\[\d\]\.upstream): warning: (.*)", result.stderr)
    assert [key for _, key, _ in warned] == ["routes[0].upstream", "routes[1].upstream"], (
        result.stderr
    )
    lines = (pki.dir / "check.yaml").read_text().splitlines()
    for line, _, _ in warned:  # the line is the route's upstream line
        assert lines[int(line) - 1].strip().startswith("upstream: https://api.internal:8443")
    assert "does not inherit the top-level upstream_tls" in warned[0][2]
    assert (
        "give the route its own upstream_tls or drop its upstream to use the default's"
        in result.stderr
    )
    # Without a top-level upstream_tls there is nothing to inherit: no warning.
    plain_top = {k: v for k, v in top.items() if k != "upstream_tls"}
    plain = _check_quickly(pki.dir, {**plain_top, "routes": routes[:1]})
    assert plain.returncode == 0 and "warning" not in plain.stderr, plain.stderr


# --- 6. pools of settings no config uses any more are dropped --------------------------------


async def test_pools_of_old_tls_settings_are_dropped_and_a_busy_pool_is_kept(pki: PKI) -> None:
    """Each round is a reload that changed the CA file (a new digest, so a new Upstream and a
    new pool); the pools left behind go once they have no connection, idle or in use."""
    extra = [trustme.CA().cert_pem.bytes() for _ in range(3)]
    ca = pki.dir / "ca.pem"

    def reload(round_: int) -> Upstream:
        ca.write_bytes(pki.ca.cert_pem.bytes() + extra[round_ % 3] + b"\n" * round_)
        config = compile_config(
            {"upstream": up.url, "upstream_tls": {"ca_file": str(ca)}, "cors": CORS}
        )
        assert config.upstream is not None
        return config.upstream

    async def fetch(upstream: Upstream) -> UpstreamResponse:
        return await c.request(upstream, "GET", "/x", [], None, connect_timeout=5, read_timeout=5)

    async with tls_upstream(pki.server_context("127.0.0.1")) as up:
        c = UpstreamClient(keepalive=0.2)
        try:
            most = 0
            for round_ in range(60):
                response = await fetch(reload(round_))
                assert response.status == 200
                await response.read()
                response.release()
                most = max(most, len(c.pools))
                if round_ % 20 == 19:
                    await asyncio.sleep(1.5)  # the sweeper runs (every second)
            assert most <= 21, most
            await asyncio.sleep(1.5)
            assert (len(c.pools), len(c.all)) == (0, 0)
            # A pool with a connection in use is kept through sweeps, and the connection
            # goes back to it when released.
            upstream = reload(100)
            busy = await fetch(upstream)
            pool = c.pools[upstream]
            await asyncio.sleep(1.5)
            assert c.pools.get(upstream) is pool and not pool.dropped
            await busy.read()
            busy.release()
            assert list(pool.idle) and len(c.all) == 1
            await asyncio.sleep(1.5)
            assert pool.dropped and (len(c.pools), len(c.all)) == (0, 0)
            # A connection released into a pool that was dropped is closed, not kept.
            upstream = reload(101)
            late = await fetch(upstream)
            pool = c.pools.pop(upstream)
            pool.dropped = True
            await late.read()
            late.release()
            assert not pool.idle and len(c.all) == 0
        finally:
            await c.close()
