"""Black box: real nginx terminates TLS in front of a real corsproxy process, which forwards to
a real Flask app under gunicorn behind werkzeug's ProxyFix (x_proto, x_host, x_prefix), or to
an aiohttp app with a WebSocket and redirects.

Through nginx (a trusted proxy) the app must build `https://` URLs on nginx's host and port,
under nginx's prefix and the route's; forwarding headers a client sends through nginx (of
either family) or straight to corsproxy (an untrusted peer) must never reach the app nor
change the client in the log. The x-forwarded test runs the README's nginx block, read from
README.md.

nginx connects from 127.0.0.2 (`proxy_bind`), the only address in `trusted_proxies`, so one
corsproxy process sees both a trusted peer and an untrusted one (127.0.0.1).
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.net import ROOT, running_app, start_cli
from tests.realworld.nginx import Nginx, free_port, nginx_binary

trustme = pytest.importorskip("trustme")
pytest.importorskip("flask")
pytest.importorskip("gunicorn")

TIMEOUT = 15.0
ORIGIN = "https://app.example.com"
SPOOF = {
    "X-Forwarded-Proto": "https",
    "X-Forwarded-Host": "evil.example",
    "X-Forwarded-Port": "4443",
    "X-Forwarded-Prefix": "/evil",
    "Forwarded": 'for=6.6.6.6;proto=https;host="evil.example:4443"',
    "X-Forwarded-For": "6.6.6.6",
}


def readme_nginx(corsproxy_port: int) -> str:
    """The README's nginx block ("Behind a TLS terminator or load balancer"), exactly, but
    for the address of corsproxy and `proxy_bind 127.0.0.2` (the trusted address) after
    each `proxy_pass`: the test runs what users copy, so the two cannot drift."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("### Behind a TLS terminator or load balancer", 1)[1]
    block = section.split("```nginx\n", 1)[1].split("```", 1)[0]
    assert block.count("http://corsproxy:8080") == block.count("proxy_pass") >= 2, block
    # Every location sets every header of the family (a header it leaves alone is the
    # client's) and clears Forwarded (corsproxy ignores it; an app behind might not).
    for location in re.findall(r"location [^{]*\{[^}]*\}", block):
        for name in ("Proto", "Host", "Port", "For", "Prefix"):
            assert f"proxy_set_header X-Forwarded-{name} " in location, (name, location)
        assert 'proxy_set_header Forwarded "";' in location, location
    block = block.replace("http://corsproxy:8080", f"http://127.0.0.1:{corsproxy_port}")
    return re.sub(r"(proxy_pass [^;]*;)", r"\1 proxy_bind 127.0.0.2;", block)


def certificate(tmp_path: Path) -> tuple[Path, Path, ssl.SSLContext]:
    """A trustme certificate for 127.0.0.1 (cert and key files) and a client context."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    client_tls = ssl.create_default_context()
    ca.configure_trust(client_tls)
    return cert_file, key_file, client_tls


def _wait_port(port: int, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    proc.kill()
    _, err = proc.communicate(timeout=TIMEOUT)
    pytest.fail(f"{what} did not start on port {port}:\n{err.decode(errors='replace')}")


@contextlib.contextmanager
def gunicorn_app() -> Iterator[int]:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "gunicorn", "--workers", "1", "--bind", f"127.0.0.1:{port}",
            "--chdir", str(ROOT / "tests" / "realworld"), "--log-level", "warning",
            "proxyfix_app:app",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        _wait_port(port, proc, "gunicorn")
        yield port
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(TIMEOUT)
        if proc.stderr is not None:
            proc.stderr.close()


@contextlib.contextmanager
def corsproxy(config: Path) -> Iterator[tuple[subprocess.Popen[str], int]]:
    proc, url = start_cli("--config", str(config))
    try:
        yield proc, int(url.rsplit(":", 1)[1].rstrip("/"))
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(TIMEOUT)


def get(
    port: int, path: str, headers: dict[str, str], context: ssl.SSLContext | None = None
) -> tuple[int, dict[str, str], bytes]:
    conn: http.client.HTTPConnection
    if context is not None:
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=TIMEOUT, context=context)
    else:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
    try:
        conn.request("GET", path, headers={"Origin": ORIGIN, **headers})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def access_lines(proc: subprocess.Popen[str]) -> list[dict[str, Any]]:
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=TIMEOUT)
    lines = []
    for line in err.splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            record = json.loads(line)
            if record.get("logger") == "corsproxy.access":
                lines.append(record)
    return lines


def forwarding_sent(seen: dict[str, Any]) -> dict[str, str]:
    return {n.lower(): v for n, v in seen["headers"]}


def test_nginx_tls_terminator_then_corsproxy_then_proxyfix_app(tmp_path: Path) -> None:
    """The default family (x-forwarded) behind the README's nginx block, attacked with every
    forwarding header a client can send; and behind a minimal location that sets only
    X-Forwarded-For, attacked with `Forwarded`."""
    nginx_binary()  # skip (or fail in CI) before starting anything
    cert_file, key_file, client_tls = certificate(tmp_path)

    with gunicorn_app() as app_port:
        config = tmp_path / "corsproxy.yaml"
        config.write_text(
            f"listen: 127.0.0.1:0\n"
            f"upstream: http://127.0.0.1:{app_port}\n"
            "trusted_proxies: [127.0.0.2]\n"
            f"cors: {{allow_origins: ['{ORIGIN}']}}\n"
            "routes:\n"
            "  - path_prefix: /svc\n"
            "    strip_prefix: true\n"
        )
        with corsproxy(config) as (proc, proxy_port):
            edge = (
                readme_nginx(proxy_port)
                + f"""
        location /xff-only/ {{
            proxy_pass http://127.0.0.1:{proxy_port}/;
            proxy_bind 127.0.0.2;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        }}
"""
            )
            with Nginx(edge, str(cert_file), str(key_file)) as nginx:
                public = f"https://127.0.0.1:{nginx.port}"
                # Through nginx: every forwarding header the client sent is overwritten or
                # cleared (X-Forwarded-For is appended to, and the client is its rightmost
                # untrusted entry).
                status, _, body = get(nginx.port, "/edge/svc/whoami", SPOOF, client_tls)
                assert status == 200, body
                seen = json.loads(body)
                assert seen["scheme"] == "https" and seen["secure"] is True, seen
                assert seen["host"] == f"127.0.0.1:{nginx.port}", seen
                assert seen["script_root"] == "/edge/svc", seen
                assert seen["external"] == f"{public}/edge/svc/whoami", seen
                assert "evil" not in body.decode() and "4443" not in body.decode(), seen
                sent = forwarding_sent(seen)
                assert sent["x-forwarded-for"] == "6.6.6.6, 127.0.0.1, 127.0.0.2", sent
                assert sent["x-forwarded-prefix"] == "/edge/svc", sent
                assert sent["x-forwarded-port"] == str(nginx.port), sent
                assert "forwarded" not in sent  # nginx cleared it; corsproxy starts none

                status, headers, _ = get(nginx.port, "/edge/svc/go", {}, client_tls)
                assert status == 302
                assert headers["Location"] == f"{public}/edge/svc/whoami"

                # The location that strips nothing: the client's X-Forwarded-Prefix is
                # dropped by nginx (set to ""), the app's prefix is the route's alone.
                status, _, body = get(nginx.port, "/svc/whoami", SPOOF, client_tls)
                assert status == 200, body
                seen = json.loads(body)
                assert seen["script_root"] == "/svc", seen
                assert seen["external"] == f"{public}/svc/whoami", seen
                assert "evil" not in body.decode() and "4443" not in body.decode(), seen
                assert "forwarded" not in forwarding_sent(seen)

                # A front that sets only X-Forwarded-For passes the client's Forwarded on:
                # corsproxy neither believes nor sends it (the family is x-forwarded).
                forged = {"Forwarded": SPOOF["Forwarded"], "X-Forwarded-For": "6.6.6.6"}
                status, _, body = get(nginx.port, "/xff-only/svc/whoami", forged, client_tls)
                assert status == 200, body
                seen = json.loads(body)
                assert seen["scheme"] == "http", seen  # nginx said nothing of https
                assert seen["host"] == f"127.0.0.1:{proxy_port}", seen
                assert "evil" not in body.decode(), seen
                sent = forwarding_sent(seen)
                assert "forwarded" not in sent, sent
                assert sent["x-forwarded-for"] == "6.6.6.6, 127.0.0.1, 127.0.0.2", sent

                # Straight to corsproxy: an untrusted peer's forwarding headers never arrive.
                status, _, body = get(proxy_port, "/svc/whoami", SPOOF)
                assert status == 200, body
                seen = json.loads(body)
                assert seen["scheme"] == "http" and seen["secure"] is False, seen
                assert seen["host"] == f"127.0.0.1:{proxy_port}", seen
                assert seen["script_root"] == "/svc", seen
                assert seen["external"] == f"http://127.0.0.1:{proxy_port}/svc/whoami", seen
                assert "evil" not in body.decode() and "4443" not in body.decode(), seen
                sent = forwarding_sent(seen)
                assert set(sent) == {
                    "x-forwarded-for",
                    "x-forwarded-proto",
                    "x-forwarded-host",
                    "x-forwarded-prefix",
                }, sent
                assert sent["x-forwarded-for"] == "6.6.6.6, 127.0.0.1"
            assert nginx.proc is not None
        lines = access_lines(proc)
    # The log's client: the rightmost X-Forwarded-For entry that is not a trusted proxy, never
    # the 6.6.6.6 the client claimed (nor Forwarded's for=); `peer` stays the connection's.
    whoami = [(line["peer"], line["client"]) for line in lines if line["path"] == "/svc/whoami"]
    assert whoami == [("127.0.0.2", "127.0.0.1")] * 3 + [("127.0.0.1",) * 2]
    go = [(line["peer"], line["client"]) for line in lines if line["path"] == "/svc/go"]
    assert go == [("127.0.0.2", "127.0.0.1")]


def test_nginx_speaking_rfc7239_with_forwarded_headers_forwarded(tmp_path: Path) -> None:
    """`forwarded_headers: forwarded` behind an nginx that writes `Forwarded`, overwriting
    it (/set/) or appending to the client's (/append/): a client's X-Forwarded-Host,
    X-Forwarded-For or a malformed `Forwarded` never change the origin the app builds URLs
    on nor the client in the log."""
    nginx_binary()
    cert_file, key_file, client_tls = certificate(tmp_path)
    element = 'for=$remote_addr;proto=$scheme;host=\\"$host:$server_port\\"'
    attacks: list[dict[str, str]] = [
        {"X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "http",
         "X-Forwarded-For": "6.6.6.6", "X-Forwarded-Prefix": "/evil"},
        {"Forwarded": 'for=6.6.6.6;proto=http;host="evil.example"'},
        {"Forwarded": 'for="6.6.6.6'},  # unterminated: must not swallow nginx's element
        {"Forwarded": "for=6.6.6.6;for=7.7.7.7, garbage"},
        {},
    ]  # fmt: skip
    with gunicorn_app() as app_port:
        config = tmp_path / "corsproxy.yaml"
        config.write_text(
            f"listen: 127.0.0.1:0\nupstream: http://127.0.0.1:{app_port}\n"
            "trusted_proxies: [127.0.0.2]\nforwarded_headers: forwarded\n"
            f"cors: {{allow_origins: ['{ORIGIN}']}}\n"
            "routes: [{path_prefix: /svc, strip_prefix: true}]\n"
        )
        with corsproxy(config) as (proc, proxy_port):
            edge = f"""
        location /set/ {{
            proxy_pass http://127.0.0.1:{proxy_port}/;
            proxy_bind 127.0.0.2;
            proxy_set_header Forwarded "{element}";
        }}
        location /append/ {{
            proxy_pass http://127.0.0.1:{proxy_port}/;
            proxy_bind 127.0.0.2;
            proxy_set_header Forwarded "$http_forwarded, {element}";
        }}
"""
            with Nginx(edge, str(cert_file), str(key_file)) as nginx:
                public = f"https://127.0.0.1:{nginx.port}"
                ours = f'for=127.0.0.2;proto=http;host="127.0.0.1:{proxy_port}"'
                nginx_element = f'for=127.0.0.1;proto=https;host="127.0.0.1:{nginx.port}"'
                for location in ("set", "append"):
                    for attack in attacks:
                        status, _, body = get(
                            nginx.port, f"/{location}/svc/whoami", attack, client_tls
                        )
                        assert status == 200, body
                        seen = json.loads(body)
                        what = (location, attack, seen)
                        assert seen["scheme"] == "https" and seen["secure"] is True, what
                        assert seen["host"] == f"127.0.0.1:{nginx.port}", what
                        assert seen["external"] == f"{public}/svc/whoami", what
                        assert seen["script_root"] == "/svc", what
                        assert "evil" not in body.decode(), what
                        sent = forwarding_sent(seen)
                        assert sent["x-forwarded-for"] == "127.0.0.1, 127.0.0.2", what
                        assert sent["forwarded"] == f"{nginx_element}, {ours}", what
        lines = access_lines(proc)
    clients = {(line["peer"], line["client"]) for line in lines if line["path"] == "/svc/whoami"}
    assert clients == {("127.0.0.2", "127.0.0.1")}
    assert len([line for line in lines if line["path"] == "/svc/whoami"]) == 2 * len(attacks)


def _ws_and_redirect_app() -> web.Application:
    """An upstream with a WebSocket echo and the redirects apps write: a path-absolute one
    and an absolute one on the upstream's own origin (as it sees itself: its socket)."""

    async def echo(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for message in ws:
            await ws.send_str(f"echo {message.data}")
        return ws

    async def relative(request: web.Request) -> web.Response:
        return web.Response(status=302, headers={"Location": "/get"})

    async def absolute(request: web.Request) -> web.Response:
        assert request.transport is not None
        host, port = request.transport.get_extra_info("sockname")[:2]
        return web.Response(status=302, headers={"Location": f"http://{host}:{port}/get"})

    app = web.Application()
    app.router.add_get("/ws", echo)
    app.router.add_get("/rel", relative)
    app.router.add_get("/abs", absolute)
    return app


async def test_websocket_and_redirects_behind_nginx_with_a_prefix(tmp_path: Path) -> None:
    """nginx at /edge/ (TLS, strips /edge, sends X-Forwarded-Prefix: /edge), a corsproxy
    route /svc that strips its prefix and has `cors: false`: a same-origin `https` page's
    WebSocket handshake is same-origin (the origin is the one nginx reports, not the
    connection's http), `http://` on the same host is refused; the app's redirects come
    back under /edge/svc on nginx's https origin."""
    nginx_binary()
    cert_file, key_file, client_tls = certificate(tmp_path)
    async with running_app(_ws_and_redirect_app()) as upstream:
        config = tmp_path / "corsproxy.yaml"
        config.write_text(
            f"listen: 127.0.0.1:0\nupstream: {upstream}\ntrusted_proxies: [127.0.0.2]\n"
            "cors: false\nroutes: [{path_prefix: /svc, strip_prefix: true}]\n"
        )
        with corsproxy(config) as (proc, proxy_port):
            edge = f"""
        location /edge/ {{
            proxy_pass http://127.0.0.1:{proxy_port}/;
            proxy_bind 127.0.0.2;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection "upgrade";
            proxy_set_header Host $host:$server_port;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host $host:$server_port;
            proxy_set_header X-Forwarded-Port $server_port;
            proxy_set_header X-Forwarded-Prefix /edge;
            proxy_set_header Forwarded "";
        }}
"""
            with Nginx(edge, str(cert_file), str(key_file)) as nginx:
                public = f"https://127.0.0.1:{nginx.port}"
                wss = f"wss://127.0.0.1:{nginx.port}/edge/svc/ws"
                timeout = aiohttp.ClientTimeout(total=TIMEOUT)
                async with aiohttp.ClientSession(timeout=timeout) as session:
                    async with session.ws_connect(
                        wss, ssl=client_tls, headers={"Origin": public}
                    ) as ws:
                        await ws.send_str("hi")
                        assert (await ws.receive(timeout=TIMEOUT)).data == "echo hi"
                    http_page = f"http://127.0.0.1:{nginx.port}"
                    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                        await session.ws_connect(wss, ssl=client_tls, headers={"Origin": http_page})
                    assert refused.value.status == 403

                    for path, location in (
                        ("/edge/svc/rel", "/edge/svc/get"),
                        ("/edge/svc/abs", f"{public}/edge/svc/get"),
                    ):
                        async with session.get(
                            f"{public}{path}", ssl=client_tls, allow_redirects=False
                        ) as response:
                            assert response.status == 302, path
                            assert response.headers["Location"] == location, path
        lines = await asyncio.to_thread(access_lines, proc)
    ws_lines = [(line["status"], line["peer"], line["client"]) for line in lines
                if line["path"] == "/svc/ws"]  # fmt: skip
    assert ws_lines == [(101, "127.0.0.2", "127.0.0.1"), (403, "127.0.0.2", "127.0.0.1")]
