"""Black box: real nginx terminates TLS in front of a real corsproxy process, which forwards to
a real Flask app under gunicorn behind werkzeug's ProxyFix (x_proto, x_host, x_prefix).

Through nginx (a trusted proxy) the app must build `https://` URLs on nginx's host and port,
under nginx's prefix and the route's; the same forwarding headers sent by a client straight
to corsproxy (an untrusted peer) must never reach the app.

nginx connects from 127.0.0.2 (`proxy_bind`), the only address in `trusted_proxies`, so one
corsproxy process sees both a trusted peer and an untrusted one (127.0.0.1).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.net import ROOT, start_cli
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


def test_nginx_tls_terminator_then_corsproxy_then_proxyfix_app(tmp_path: Path) -> None:
    nginx_binary()  # skip (or fail in CI) before starting anything
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    client_tls = ssl.create_default_context()
    ca.configure_trust(client_tls)

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
            # The README's snippet, plus proxy_bind so that nginx's address is the trusted one.
            edge = f"""
        location /edge/ {{
            proxy_pass http://127.0.0.1:{proxy_port}/;
            proxy_bind 127.0.0.2;
            proxy_set_header Host $host:$server_port;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host $host:$server_port;
            proxy_set_header X-Forwarded-Port $server_port;
            proxy_set_header X-Forwarded-Prefix /edge;
        }}
        location /rfc7239/ {{
            proxy_pass http://127.0.0.1:{proxy_port}/;
            proxy_bind 127.0.0.2;
            proxy_set_header Forwarded
                "for=$remote_addr;proto=$scheme;host=\\"$host:$server_port\\"";
        }}
"""
            with Nginx(edge, str(cert_file), str(key_file)) as nginx:
                public = f"https://127.0.0.1:{nginx.port}"
                # Through nginx: the client's own forwarding headers are nginx's business
                # (it overwrites them, and appends to X-Forwarded-For).
                status, _, body = get(nginx.port, "/edge/svc/whoami", SPOOF, client_tls)
                assert status == 200, body
                seen = json.loads(body)
                assert seen["scheme"] == "https" and seen["secure"] is True, seen
                assert seen["host"] == f"127.0.0.1:{nginx.port}", seen
                assert seen["script_root"] == "/edge/svc", seen
                assert seen["external"] == f"{public}/edge/svc/whoami", seen
                sent = dict((n.lower(), v) for n, v in seen["headers"])
                assert sent["x-forwarded-for"] == "6.6.6.6, 127.0.0.1, 127.0.0.2", sent
                assert "forwarded" not in sent  # nginx started no chain; corsproxy starts none

                status, headers, _ = get(nginx.port, "/edge/svc/go", {}, client_tls)
                assert status == 302
                assert headers["Location"] == f"{public}/edge/svc/whoami"

                # An edge that speaks only RFC 7239: the app, which reads X-Forwarded-*,
                # still learns the scheme and host, and the chain goes on with our element.
                status, _, body = get(nginx.port, "/rfc7239/svc/whoami", {}, client_tls)
                assert status == 200, body
                seen = json.loads(body)
                assert seen["external"] == f"{public}/svc/whoami", seen
                sent = dict((n.lower(), v) for n, v in seen["headers"])
                assert sent["forwarded"] == (
                    f'for=127.0.0.1;proto=https;host="127.0.0.1:{nginx.port}", '
                    f'for=127.0.0.2;proto=http;host="127.0.0.1:{proxy_port}"'
                ), sent

                # Straight to corsproxy: an untrusted peer's forwarding headers never arrive.
                status, _, body = get(proxy_port, "/svc/whoami", SPOOF)
                assert status == 200, body
                seen = json.loads(body)
                assert seen["scheme"] == "http" and seen["secure"] is False, seen
                assert seen["host"] == f"127.0.0.1:{proxy_port}", seen
                assert seen["script_root"] == "/svc", seen
                assert seen["external"] == f"http://127.0.0.1:{proxy_port}/svc/whoami", seen
                assert "evil" not in body.decode() and "4443" not in body.decode(), seen
                sent = dict((n.lower(), v) for n, v in seen["headers"])
                assert set(sent) == {
                    "x-forwarded-for",
                    "x-forwarded-proto",
                    "x-forwarded-host",
                    "x-forwarded-prefix",
                }, sent
                assert sent["x-forwarded-for"] == "6.6.6.6, 127.0.0.1"
            assert nginx.proc is not None
        lines = access_lines(proc)
    # The log's client: the rightmost X-Forwarded-For entry (or Forwarded for=) that is not a
    # trusted proxy, never the 6.6.6.6 the client claimed; `peer` stays the connection's.
    whoami = [(line["peer"], line["client"]) for line in lines if line["path"] == "/svc/whoami"]
    assert whoami == [("127.0.0.2", "127.0.0.1"), ("127.0.0.2", "127.0.0.1"), ("127.0.0.1",) * 2]
    go = [(line["peer"], line["client"]) for line in lines if line["path"] == "/svc/go"]
    assert go == [("127.0.0.2", "127.0.0.1")]
