"""TLS to the upstream (`upstream_tls`), Happy Eyeballs and the DNS cache, against real TLS
upstreams made with a `trustme` CA: through a real `corsproxy` process where the user meets
it (config file, log lines, `check`), in process where a resolver must be counted."""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import trustme
import yaml
from aiohttp import web

from corsproxy.config import ConfigError
from corsproxy.config.upstream_tls import UpstreamTLS
from corsproxy.http import connect
from corsproxy.http.connect import Resolver
from tests.helpers import config as compile_config
from tests.net import ROOT, TIMEOUT, running_proxy, start_cli

APP = "https://app.example.com"
CORS = {"allow_origins": [APP]}


@dataclass
class Seen:
    """What a TLS upstream saw: the SNI of each handshake, the client certificate's CN of
    each request, and the number of connections."""

    url: str = ""
    port: int = 0
    sni: list[str | None] = field(default_factory=list)
    clients: list[str | None] = field(default_factory=list)
    connections: int = 0


def _cn(cert: dict[str, Any] | None) -> str | None:
    if not cert:
        return None
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None


@contextlib.asynccontextmanager
async def tls_upstream(
    context: ssl.SSLContext, host: str = "127.0.0.1", port: int = 0, close: bool = False
) -> AsyncIterator[Seen]:
    """An aiohttp server over TLS on `host`; each answer says the SNI its connection had."""
    seen = Seen()
    by_conn: dict[int, str | None] = {}

    def on_sni(sslobj: Any, name: str | None, _ctx: ssl.SSLContext) -> None:
        seen.connections += 1  # one handshake per connection
        seen.sni.append(name)
        by_conn[id(sslobj)] = name

    context.sni_callback = on_sni

    async def handle(request: web.Request) -> web.Response:
        transport = request.transport
        assert transport is not None
        sslobj = transport.get_extra_info("ssl_object")
        client = _cn(transport.get_extra_info("peercert"))
        seen.clients.append(client)
        body = {"sni": by_conn.get(id(sslobj), "?"), "client": client}
        headers = {"Connection": "close"} if close else {}
        return web.json_response(body, headers=headers)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1)
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=context)
    await site.start()
    server = site._server
    assert server is not None
    seen.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
    seen.url = f"https://{f'[{host}]' if ':' in host else host}:{seen.port}"
    try:
        yield seen
    finally:
        await runner.cleanup()


@dataclass
class PKI:
    ca: trustme.CA
    dir: Path

    def server_context(self, *names: str, client_ca: trustme.CA | None = None) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ca.issue_cert(*names).configure_cert(ctx)
        if client_ca is not None:
            ctx.verify_mode = ssl.CERT_REQUIRED
            client_ca.configure_trust(ctx)
        return ctx

    def write(self, name: str, blob: trustme.Blob) -> str:
        blob.write_to_path(str(self.dir / name))
        return name  # relative to the config file, which lives in the same directory


@pytest.fixture
def pki(tmp_path: Path) -> PKI:
    ca = trustme.CA()
    pki = PKI(ca, tmp_path)
    pki.write("ca.pem", ca.cert_pem)
    return pki


@contextlib.asynccontextmanager
async def corsproxy(doc: dict[str, Any], directory: Path) -> AsyncIterator[tuple[str, list[str]]]:
    """A real `corsproxy serve --config FILE` (run from the repository, so relative paths
    prove they are read relative to the config file); yields its URL and, once it stopped,
    its log lines."""
    path = directory / "corsproxy.yaml"
    path.write_text(yaml.safe_dump({"listen": "127.0.0.1:0", **doc}, sort_keys=False))
    proc, url = await asyncio.to_thread(start_cli, "--config", str(path))
    logs: list[str] = []
    try:
        yield url, logs
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        await asyncio.to_thread(proc.wait, TIMEOUT)
        assert proc.stderr is not None and proc.stdout is not None
        # read(), not communicate(): start_cli's readline may hold lines in the buffer.
        logs.extend(proc.stderr.read().splitlines())
        proc.stderr.close()
        proc.stdout.close()


async def get(url: str, origin: str = APP) -> tuple[int, dict[str, Any] | str, str | None]:
    async with aiohttp.ClientSession() as client:
        async with client.get(url, headers={"Origin": origin}) as response:
            text = await response.text()
            body: dict[str, Any] | str = (
                await response.json() if response.content_type == "application/json" else text
            )
            return response.status, body, response.headers.get("Access-Control-Allow-Origin")


# --- a private CA, through a real corsproxy ------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
async def test_ca_file_trusts_a_private_ca_and_without_it_the_answer_is_a_502(
    pki: PKI, host: str
) -> None:
    async with tls_upstream(pki.server_context("localhost", "127.0.0.1", "::1"), host) as up:
        doc = {
            "cors": CORS,
            "routes": [
                {"path_prefix": "/trusted", "upstream": up.url,
                 "upstream_tls": {"ca_file": "ca.pem"}},
                {"path_prefix": "/untrusted", "upstream": up.url},
            ],
        }  # fmt: skip
        async with corsproxy(doc, pki.dir) as (url, logs):
            status, body, acao = await get(f"{url}/trusted/x")
            assert (status, acao) == (200, APP)
            assert isinstance(body, dict) and body["client"] is None
            status, body, acao = await get(f"{url}/untrusted/x")
            assert status == 502
            assert acao == APP  # the error answer still lets the page read it
    failed = [line for line in logs if "TLS handshake failed" in line]
    assert failed, logs
    assert up.url.split("//")[1] in failed[0], failed[0]
    assert "certificate verify failed" in failed[0], failed[0]
    access = [line for line in logs if "upstream_tls_failed" in line]
    assert access, logs


async def test_server_name_is_sent_as_sni_and_verified(pki: PKI) -> None:
    async with tls_upstream(pki.server_context("api.internal")) as up:
        tls = {"ca_file": "ca.pem"}
        doc = {
            "cors": CORS,
            "routes": [
                {"path_prefix": "/named", "upstream": up.url,
                 "upstream_tls": {**tls, "server_name": "api.internal"}},
                {"path_prefix": "/ip", "upstream": up.url, "upstream_tls": tls},
                {"path_prefix": "/other", "upstream": up.url,
                 "upstream_tls": {**tls, "server_name": "other.internal"}},
            ],
        }  # fmt: skip
        async with corsproxy(doc, pki.dir) as (url, logs):
            status, body, _ = await get(f"{url}/named/x")
            assert status == 200 and isinstance(body, dict)
            assert body["sni"] == "api.internal"
            # The certificate names api.internal, not the URL's 127.0.0.1, nor other.internal.
            assert (await get(f"{url}/ip/x"))[0] == 502
            assert (await get(f"{url}/other/x"))[0] == 502
        assert "api.internal" in up.sni and "other.internal" in up.sni
    mismatch = [line for line in logs if "TLS handshake failed" in line]
    assert any("mismatch" in line for line in mismatch), mismatch
    assert any("server name other.internal" in line for line in mismatch), mismatch


async def test_mutual_tls_sends_the_client_certificate_and_a_refusal_is_a_502(pki: PKI) -> None:
    client_ca = trustme.CA()
    client = client_ca.issue_cert("proxy.internal", common_name="corsproxy-client")
    pki.write("client.pem", client.cert_chain_pems[0])
    pki.write("client.key", client.private_key_pem)
    context = pki.server_context("127.0.0.1", client_ca=client_ca)
    async with tls_upstream(context) as up:
        doc = {
            "cors": CORS,
            "routes": [
                {"path_prefix": "/mtls", "upstream": up.url, "upstream_tls": {
                    "ca_file": "ca.pem", "cert_file": "client.pem", "key_file": "client.key"}},
                {"path_prefix": "/anon", "upstream": up.url,
                 "upstream_tls": {"ca_file": "ca.pem"}},
            ],
        }  # fmt: skip
        async with corsproxy(doc, pki.dir) as (url, logs):
            status, body, _ = await get(f"{url}/mtls/x")
            assert status == 200 and isinstance(body, dict)
            assert body["client"] == "corsproxy-client"
            # The same host:port right after: the pooled connection (with the client
            # certificate) is not the anonymous route's, and the upstream refuses it.
            status, _, acao = await get(f"{url}/anon/x")
            assert (status, acao) == (502, APP)
            assert (await get(f"{url}/mtls/y"))[0] == 200
    assert up.clients == ["corsproxy-client", "corsproxy-client"]
    assert any("closed a new TLS connection" in line for line in logs), "\n".join(logs)


async def test_a_client_gone_mid_upload_does_not_blame_a_new_tls_upstream(pki: PKI) -> None:
    """The client leaves while its body streams to a new TLS connection: the proxy closes
    that connection itself, so no warning may say the upstream closed it (an outside check
    found one, hinting at a refused client certificate)."""
    read_some = asyncio.Event()

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            while await reader.read(65536):  # reads the upload, never answers
                read_some.set()
        writer.close()

    server = await asyncio.start_server(
        swallow, "127.0.0.1", 0, ssl=pki.server_context("127.0.0.1")
    )
    port = server.sockets[0].getsockname()[1]
    doc = {
        "cors": CORS,
        "upstream": f"https://127.0.0.1:{port}",
        "upstream_tls": {"ca_file": "ca.pem"},
    }
    try:
        async with corsproxy(doc, pki.dir) as (url, logs):
            host, proxy_port = url.removeprefix("http://").rsplit(":", 1)
            _reader, writer = await asyncio.open_connection(host, int(proxy_port))
            writer.write(
                b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 10000000\r\n\r\n" + b"x" * 500_000
            )
            await writer.drain()
            await asyncio.wait_for(read_some.wait(), TIMEOUT)
            await asyncio.sleep(0.3)
            writer.close()
            await asyncio.sleep(0.5)  # the proxy sees the client gone and closes upstream
    finally:
        server.close()
        await server.wait_closed()
    access = [line for line in logs if "POST /up " in line]
    assert access and "499" in access[0], "\n".join(logs)
    assert not any("closed a new TLS connection" in line for line in logs), "\n".join(logs)


async def test_a_refused_client_certificate_is_logged_with_the_tls_alert(pki: PKI) -> None:
    """asyncio's server above drops the connection without an alert; OpenSSL's own server
    sends it (as nginx and Go do), and the log line names it."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is not installed")
    client_ca = trustme.CA()
    pki.write("server.pem", pki.ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem)
    pki.write("client-ca.pem", client_ca.cert_pem)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = await asyncio.create_subprocess_exec(
        openssl, "s_server", "-accept", f"127.0.0.1:{port}", "-cert", "server.pem",
        "-CAfile", "client-ca.pem", "-Verify", "1", "-verify_return_error", "-www", "-quiet",
        cwd=pki.dir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        for _ in range(100):  # bounded: until it listens
            with socket.socket() as probe, contextlib.suppress(OSError):
                probe.connect(("127.0.0.1", port))
                break
            await asyncio.sleep(0.05)
        doc = {"cors": CORS, "upstream": f"https://127.0.0.1:{port}",
               "upstream_tls": {"ca_file": "ca.pem"}}  # fmt: skip
        async with corsproxy(doc, pki.dir) as (url, logs):
            status, _, acao = await get(f"{url}/x")
            assert (status, acao) == (502, APP)
    finally:
        server.kill()
        await asyncio.wait_for(server.wait(), TIMEOUT)
    tls = [line for line in logs if "TLS failed" in line]
    assert tls and "certificate required" in tls[0], "\n".join(logs)
    assert f"127.0.0.1:{port}" in tls[0]
    assert any("upstream_tls_failed" in line for line in logs), "\n".join(logs)


async def test_insecure_skip_verify_connects_and_is_logged_as_insecure(pki: PKI) -> None:
    stranger = trustme.CA()  # a CA nobody trusts
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    stranger.issue_cert("somewhere.else").configure_cert(context)
    async with tls_upstream(context) as up:
        doc = {"cors": CORS, "upstream": up.url, "upstream_tls": {"insecure_skip_verify": True}}
        async with corsproxy(doc, pki.dir) as (url, logs):
            assert (await get(f"{url}/x"))[0] == 200
    warnings = [line for line in logs if '"level":"warning"' in line and "insecure" in line]
    assert warnings, "\n".join(logs)
    assert up.url.split("//")[1] in warnings[0]


def _check(directory: Path, doc: dict[str, Any], *flags: str) -> subprocess.CompletedProcess[str]:
    path = directory / "check.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return subprocess.run(
        [sys.executable, "-m", "corsproxy", "check", "--config", str(path), *flags],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )


def test_check_warns_about_insecure_skip_verify_and_strict_refuses_it(pki: PKI) -> None:
    doc = {
        "upstream": "https://api.internal",
        "cors": CORS,
        "upstream_tls": {"insecure_skip_verify": True},
    }
    result = _check(pki.dir, doc)
    assert result.returncode == 0, result.stderr
    assert re.search(r"check.yaml:\d+: upstream_tls.insecure_skip_verify: warning:", result.stderr)
    strict = _check(pki.dir, doc, "--strict")
    assert strict.returncode == 2, strict.stderr
    assert "insecure_skip_verify" in strict.stderr


def test_bad_files_are_load_errors_naming_file_line_and_key(pki: PKI) -> None:
    other = pki.ca.issue_cert("x.internal")
    mine = pki.ca.issue_cert("y.internal")
    pki.write("cert.pem", mine.cert_chain_pems[0])
    pki.write("other.key", other.private_key_pem)
    (pki.dir / "junk.pem").write_text("not a certificate\n")
    cases = {
        "missing": ({"ca_file": "nope.pem"}, "upstream_tls.ca_file", "cannot read"),
        "not-pem": ({"ca_file": "junk.pem"}, "upstream_tls.ca_file", "no PEM certificate"),
        "mismatch": (
            {"cert_file": "cert.pem", "key_file": "other.key"},
            "upstream_tls.key_file",
            "is not the key of",
        ),
        "half": ({"cert_file": "cert.pem"}, "upstream_tls.cert_file", "without key_file"),
    }
    for name, (tls, key, words) in cases.items():
        doc = {"upstream": "https://api.internal", "cors": CORS, "upstream_tls": tls}
        result = _check(pki.dir, doc)
        assert result.returncode == 2, (name, result.stderr)
        assert "Traceback" not in result.stderr, (name, result.stderr)
        assert re.search(rf"check.yaml:\d+: {re.escape(key)}: ", result.stderr), result.stderr
        assert words in result.stderr, (name, result.stderr)


def test_equal_settings_share_one_context_and_list_their_files(pki: PKI) -> None:
    path = str(pki.dir / "ca.pem")
    tls = {"ca_file": path}
    config = compile_config(
        {
            "upstream": "https://a.internal",
            "upstream_tls": tls,
            "cors": CORS,
            "routes": [
                {"path_prefix": "/b", "upstream": "https://b.internal", "upstream_tls": tls},
                {
                    "path_prefix": "/c",
                    "upstream": "https://b.internal",
                    "upstream_tls": {**tls, "server_name": "c.internal"},
                },
                {"path_prefix": "/d"},
            ],
        }
    )
    routes = {r.path_prefix: r for r in config.routes.routes}
    a, b, c = (
        config.upstream.tls if config.upstream else None,
        routes["/b"].upstream.tls if routes["/b"].upstream else None,
        routes["/c"].upstream.tls if routes["/c"].upstream else None,
    )
    assert isinstance(a, UpstreamTLS) and isinstance(b, UpstreamTLS) and isinstance(c, UpstreamTLS)
    assert a is b and a.context is b.context  # one SSLContext per distinct settings
    assert c != b and c.context is not b.context
    assert routes["/d"].upstream == config.upstream  # the default upstream, with its TLS
    assert a.files == (path,)
    assert a.context is not None and a.context.minimum_version is ssl.TLSVersion.TLSv1_2
    assert a.context.check_hostname and a.context.verify_mode is ssl.CERT_REQUIRED
    # A route's own upstream does not inherit the top-level settings.
    other = compile_config(
        {"upstream": "https://a.internal", "upstream_tls": tls, "cors": CORS,
         "routes": [{"path_prefix": "/e", "upstream": "https://e.internal"}]}
    )  # fmt: skip
    route_upstream = other.routes.routes[0].upstream
    assert route_upstream is not None and route_upstream.tls is None


def test_upstream_tls_on_plain_http_is_a_warning() -> None:
    config = compile_config(
        {"upstream": "http://a.internal", "upstream_tls": {"server_name": "a"}, "cors": CORS}
    )
    assert any("is not https" in str(w) for w in config.warnings)
    with pytest.raises(ConfigError):
        compile_config({"upstream": "https://a", "upstream_tls": {"bogus": 1}, "cors": CORS})


# --- pools, in process ------------------------------------------------------------------


async def test_a_pooled_connection_never_serves_other_tls_settings(pki: PKI) -> None:
    """Two routes to one host:port with other server names: each request arrives on a
    connection whose handshake carried its own route's name, though both keep pooling."""
    ca = str(pki.dir / "ca.pem")
    async with tls_upstream(pki.server_context("a.internal", "b.internal")) as up:
        doc = {
            "cors": CORS,
            "routes": [
                {"path_prefix": "/a", "upstream": up.url,
                 "upstream_tls": {"ca_file": ca, "server_name": "a.internal"}},
                {"path_prefix": "/b", "upstream": up.url,
                 "upstream_tls": {"ca_file": ca, "server_name": "b.internal"}},
            ],
        }  # fmt: skip
        async with running_proxy(doc) as url:
            for _ in range(3):
                for name in ("a", "b"):
                    status, body, _ = await get(f"{url}/{name}/x")
                    assert status == 200 and isinstance(body, dict)
                    assert body["sni"] == f"{name}.internal", body
        assert up.connections == 2  # reused within each route: one connection each


# --- Happy Eyeballs and the DNS cache, in process ------------------------------------------


@contextlib.contextmanager
def blackhole(port: int = 0) -> Iterator[int]:
    """127.0.0.1:port (a free one for 0) listening with a full backlog that nobody accepts:
    a connect there hangs (its SYN is dropped), as a blackholed address does. Yields the
    port. Every socket is closed, also when the bind fails (CI once saw the port of a ::1
    listener taken on 127.0.0.1, and the unclosed socket failed the next test)."""
    server = socket.socket()
    fillers: list[socket.socket] = []
    try:
        server.bind(("127.0.0.1", port))
        server.listen(0)
        bound = server.getsockname()[1]
        for _ in range(4):
            filler = socket.socket()
            fillers.append(filler)
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(("127.0.0.1", bound))
        yield bound
    finally:
        for filler in fillers:
            filler.close()
        server.close()


async def ok(request: web.Request) -> web.Response:
    return web.Response(text="ok")


def _answers(*hosts: str, port: int) -> list[Any]:
    return [
        (socket.AF_INET6 if ":" in h else socket.AF_INET, socket.SOCK_STREAM, 6, "", (h, port))
        for h in hosts
    ]


@pytest.fixture
async def resolved(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[dict[str, Any]]:
    """loop.getaddrinfo answering `table[host]` for names it holds; calls are counted."""
    table: dict[str, Any] = {"calls": 0, "fail": 0}
    loop = asyncio.get_running_loop()
    real = loop.getaddrinfo

    async def fake(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host in table:
            table["calls"] += 1
            if table["fail"]:
                table["fail"] -= 1
                raise socket.gaierror(socket.EAI_AGAIN, "temporary failure")
            return table[host]
        return await real(host, port, *args, **kwargs)

    monkeypatch.setattr(loop, "getaddrinfo", fake)
    yield table


async def test_happy_eyeballs_gets_past_a_blackholed_address(resolved: dict[str, Any]) -> None:
    """The name answers 127.0.0.1 (blackholed) first, then ::1 (serving): connecting one
    address after the other would wait for the connect timeout (504)."""
    app = web.Application()
    app.router.add_get("/x", ok)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        with contextlib.ExitStack() as stack:
            for _ in range(20):  # a port free on 127.0.0.1 that ::1 can take too
                port = stack.enter_context(blackhole())
                try:
                    await web.TCPSite(runner, "::1", port).start()
                    break
                except OSError:
                    stack.close()
            else:
                pytest.fail("no port free on both 127.0.0.1 and ::1")
            resolved["dual.test"] = _answers("127.0.0.1", "::1", port=port)
            doc = {"upstream": f"http://dual.test:{port}", "cors": CORS,
                   "timeouts": {"connect": 4}}  # fmt: skip
            async with running_proxy(doc) as url:
                status, body, _ = await get(f"{url}/x")
                assert (status, body) == (200, "ok")
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("listening", ["127.0.0.1", "::1"])
async def test_one_family_refusing_still_connects(resolved: dict[str, Any], listening: str) -> None:
    app = web.Application()
    app.router.add_get("/x", ok)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, listening, 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    resolved["localhost"] = _answers("::1", "127.0.0.1", port=port)  # one refuses
    try:
        async with running_proxy({"upstream": f"http://localhost:{port}", "cors": CORS}) as url:
            assert (await get(f"{url}/x"))[:2] == (200, "ok")
    finally:
        await runner.cleanup()


async def test_dns_answers_are_cached_per_name(pki: PKI, resolved: dict[str, Any]) -> None:
    """Every request needs a new connection (the upstream closes each); the name is looked
    up once."""
    ca = str(pki.dir / "ca.pem")
    async with tls_upstream(pki.server_context("cached.test"), close=True) as up:
        resolved["cached.test"] = _answers("127.0.0.1", port=up.port)
        doc = {"upstream": f"https://cached.test:{up.port}", "cors": CORS,
               "upstream_tls": {"ca_file": ca}}  # fmt: skip
        async with running_proxy(doc) as url:
            for _ in range(3):
                assert (await get(f"{url}/x"))[0] == 200
        assert up.connections == 3
    assert resolved["calls"] == 1


async def test_the_dns_cache_expires_and_does_not_keep_failures(
    resolved: dict[str, Any],
) -> None:
    resolved["name.test"] = _answers("127.0.0.1", port=80)
    resolver = Resolver(ttl=0.3)
    resolved["fail"] = 1
    with pytest.raises(socket.gaierror):
        await resolver.resolve("name.test", 80)
    assert await resolver.resolve("name.test", 80) == resolved["name.test"]  # not cached
    assert resolved["calls"] == 2
    await resolver.resolve("name.test", 80)
    assert resolved["calls"] == 2  # a hit
    await asyncio.sleep(0.5)
    await resolver.resolve("name.test", 80)
    assert resolved["calls"] == 3  # expired
    # Concurrent lookups of one name share one query; the cache is bounded.
    resolver.clear()
    await asyncio.gather(*(resolver.resolve("name.test", 80) for _ in range(5)))
    assert resolved["calls"] == 4
    small = Resolver(size=2)
    for port in (1, 2, 3):
        await small.resolve("name.test", port)
    assert len(small._cache) == 2
    assert connect.DNS_TTL == 10.0  # aiohttp's connector default
