"""Chromium over TLS both sides: an https page origin (a trustme-signed static server) calls
an https corsproxy API (`tls:` on the listener) with credentials, in test_browser.py's style.

Chromium reads its trust store from NSS (`~/.pki/nssdb`), which needs NSS's `certutil` to
write (not installed here, and not in the image). Instead the browser is launched with
`--ignore-certificate-errors-spki-list` naming the SHA-256 of the one test certificate's
public key: only that key is accepted without a chain (every other certificate error still
fails), which is narrower than `--ignore-certificate-errors`. The certificate is what
corsproxy serves, so the handshake, ALPN and the profile are Chromium's real ones.

Chromium only: this tests our TLS listener (and the forwarded proto behind it), not how an
engine enforces CORS (tests/test_browser.py runs that in every engine); the pinned-key flag is
Chromium's.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.browsers.chromium import ChromiumEngine, missing
from tests.browsers.engine import REQUIRE
from tests.browsers.servers import PAGE
from tests.net import free_port, start_cli
from tests.test_browser import FETCH

if (reason := missing()) is not None:
    if REQUIRE:
        raise RuntimeError(f"CORSPROXY_REQUIRE_BROWSER=1 but chromium: {reason}")
    pytest.skip(f"BROWSER ENGINE chromium SKIPPED: {reason}", allow_module_level=True)


class _Api(BaseHTTPRequestHandler):
    """The legacy API behind corsproxy: sets a cookie, echoes the cookie it gets."""

    protocol_version = "HTTP/1.1"

    def _answer(self, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(200)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path == "/api/set-cookie":
            self._answer(b"set", {"Set-Cookie": "session=s1; SameSite=None; Secure; Path=/"})
        else:
            proto = self.headers.get("X-Forwarded-Proto", "")
            self._answer(f"cookie={self.headers.get('Cookie', '')} proto={proto}".encode(), {})

    def do_PUT(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        self._answer(b"put " + self.rfile.read(length), {})

    def log_message(self, *args: object) -> None:
        pass


class _Page(_Api):
    def do_GET(self) -> None:
        self._answer(PAGE.encode(), {"Content-Type": "text/html"})


@contextlib.contextmanager
def _server(handler: type[BaseHTTPRequestHandler], tls: ssl.SSLContext | None) -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def _spki_sha256(pem: bytes) -> str:
    key = x509.load_pem_x509_certificate(pem).public_key()
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


@pytest.fixture(scope="module")
def https_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    where = tmp_path_factory.mktemp("browser-tls")
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    cert_file, key_file = where / "tls.crt", where / "tls.key"
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    page_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cert.configure_cert(page_tls)
    with _server(_Page, page_tls) as page_port, _server(_Api, None) as api_port:
        page = f"https://localhost:{page_port}"
        config = where / "corsproxy.yaml"
        config.write_text(
            f"upstream: http://127.0.0.1:{api_port}\n"
            f"tls: {{cert_file: tls.crt, key_file: tls.key}}\n"
            f"cors:\n  allow_origins: ['{page}']\n  allow_credentials: true\n"
            "  allow_methods: [GET, PUT]\n  allow_headers: [Content-Type, X-Custom]\n"
        )
        proxy_port = free_port()
        proc, url = start_cli("--config", str(config), "--listen", f"127.0.0.1:{proxy_port}")
        try:
            assert url.startswith("https://")
            yield {
                "page": page,
                "api": f"https://localhost:{proxy_port}",
                "spki": _spki_sha256(cert.cert_chain_pems[0].bytes()),
            }
        finally:
            proc.terminate()
            proc.communicate(timeout=10)


def test_an_https_page_calls_the_https_api_with_credentials(https_world: dict[str, Any]) -> None:
    spki = f"--ignore-certificate-errors-spki-list={https_world['spki']}"
    engine = ChromiumEngine(args=[spki])
    try:
        tab = engine.open(https_world["page"])  # no ignore_https_errors: only the pinned key
        api = https_world["api"]
        assert tab.evaluate(FETCH, [f"{api}/api/set-cookie", {"credentials": "include"}])["ok"]
        got = tab.evaluate(FETCH, [f"{api}/api/me", {"credentials": "include"}])
        assert got["ok"], got
        assert got["status"] == 200
        # The cookie went over TLS both ways; the upstream learned the client used https.
        assert got["body"] == "cookie=session=s1 proto=https"
        put = tab.evaluate(
            FETCH,
            [
                f"{api}/api/put",
                {"method": "PUT", "body": "x", "credentials": "include",
                 "headers": {"X-Custom": "1"}},
            ],
        )  # fmt: skip
        assert put["ok"] and put["body"] == "put x", put
        tab.close()
    finally:
        engine.close()
