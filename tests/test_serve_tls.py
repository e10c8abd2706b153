"""TLS on the listeners and `--watch`, as an operator meets them: a real `corsproxy serve`
with a `trustme` CA, driven by curl, httpx and Python's ssl.

The profile (TLS 1.3 and 1.2, no TLS 1.1, no CBC) is checked against clients that can speak
the refused settings (each proven against a permissive server first); certificates rotate
on SIGHUP and on a watched change, new handshakes see the new certificate's serial while an
open keep-alive connection keeps working; bad pairs are refused at load and at reload.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
import trustme
from cryptography import x509

from corsproxy.ops.watch import Watcher
from tests.net import ROOT, free_port
from tests.test_serve_workers import Supervised

TIMEOUT = 20.0


@dataclass
class Pair:
    cert: Path
    key: Path
    serial: int


class Pki:
    """A trustme CA and the certificate pairs it issues for 127.0.0.1."""

    def __init__(self, where: Path) -> None:
        self.where = where
        self.ca = trustme.CA()
        self.ca_file = where / "ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        self.count = 0

    def issue(self, cert: Path | None = None, key: Path | None = None) -> Pair:
        self.count += 1
        issued = self.ca.issue_cert("127.0.0.1", "localhost")
        cert = cert or self.where / f"cert{self.count}.pem"
        key = key or self.where / f"key{self.count}.pem"
        # Written whole and renamed into place, as cert-manager's writers do.
        for path, blob in ((cert, issued.cert_chain_pems[0]), (key, issued.private_key_pem)):
            blob.write_to_path(str(path) + ".tmp")
            os.replace(str(path) + ".tmp", path)
        loaded = x509.load_pem_x509_certificate(issued.cert_chain_pems[0].bytes())
        return Pair(cert, key, loaded.serial_number)

    def client(self, **versions: ssl.TLSVersion) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        for name, version in versions.items():
            setattr(context, name, version)
        return context


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path)


@pytest.fixture
def upstream() -> Iterator[int]:
    """A tiny upstream answering 200 with the path."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            body = f"upstream saw {self.path}".encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def write_config(path: Path, upstream: int, port: int, pair: Pair | None, extra: str = "") -> None:
    text = f"upstream: http://127.0.0.1:{upstream}\nlisten: 127.0.0.1:{port}\ncors: false\n"
    if pair is not None:
        text += f"tls:\n  cert_file: {pair.cert}\n  key_file: {pair.key}\n"
    partial = path.with_suffix(".partial")
    partial.write_text(text + extra)
    os.replace(partial, path)


def wait_for(what: object, proxy: Supervised, timeout: float = TIMEOUT) -> None:
    proxy.wait(what, timeout)  # type: ignore[arg-type]


def listening(proxy: Supervised) -> bool:
    return any(m.startswith("corsproxy listening on https://") for m in proxy.messages())


def reloads(proxy: Supervised) -> int:
    return sum(m.startswith("config reloaded from") for m in proxy.messages())


@contextlib.contextmanager
def serving(config: Path, *args: str) -> Iterator[Supervised]:
    proxy = Supervised(config, *args)
    try:
        wait_for(lambda: listening(proxy) or proxy.proc.poll() is not None, proxy)
        assert proxy.proc.poll() is None, proxy.messages()
        yield proxy
    finally:
        proxy.stop()


def handshake(port: int, context: ssl.SSLContext) -> tuple[str, str, str, int]:
    """(version, cipher, ALPN protocol, peer certificate serial) of one new connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            cipher = tls.cipher()
            assert cipher is not None
            peer = tls.getpeercert()
            return (
                str(tls.version()),
                cipher[0],
                str(tls.selected_alpn_protocol()),
                int(str(peer["serialNumber"]), 16),
            )


def alpn_client(pki: Pki, **versions: ssl.TLSVersion) -> ssl.SSLContext:
    context = pki.client(**versions)
    context.set_alpn_protocols(["h2", "http/1.1"])
    return context


def serial_of(port: int, pki: Pki) -> int:
    return handshake(port, pki.client())[3]


@contextlib.contextmanager
def permissive_server(pair: Pair) -> Iterator[int]:
    """A TLS server that accepts TLS 1.0 and every cipher: proves a client can speak what
    corsproxy refuses (so a refusal is corsproxy's, not the client's)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1
    context.set_ciphers("ALL:@SECLEVEL=0")
    context.load_cert_chain(pair.cert, pair.key)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(5)

    def accept() -> None:
        with contextlib.suppress(OSError):
            conn, _ = listener.accept()
            with contextlib.suppress(OSError, ssl.SSLError), conn:
                context.wrap_socket(conn, server_side=True).close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()
        thread.join(6)


def legacy_clients(pki: Pki) -> dict[str, ssl.SSLContext]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        tls11 = pki.client(
            minimum_version=ssl.TLSVersion.TLSv1_1, maximum_version=ssl.TLSVersion.TLSv1_1
        )
    tls11.set_ciphers("ALL:@SECLEVEL=0")
    cbc = pki.client(maximum_version=ssl.TLSVersion.TLSv1_2)
    cbc.set_ciphers(
        "ECDHE-ECDSA-AES128-SHA256:ECDHE-ECDSA-AES256-SHA384:ECDHE-ECDSA-AES128-SHA:"
        "ECDHE-ECDSA-AES256-SHA:ECDHE-RSA-AES128-SHA256:ECDHE-RSA-AES128-SHA"
    )
    return {"TLS 1.1": tls11, "CBC only": cbc}


# --- the profile ----------------------------------------------------------------------


def test_tls13_and_tls12_serve_curl_httpx_and_python(
    pki: Pki, upstream: int, tmp_path: Path
) -> None:
    pair = pki.issue()
    port = free_port()
    config = tmp_path / "config.yaml"
    write_config(config, upstream, port, pair)
    with serving(config):
        url = f"https://127.0.0.1:{port}/hello"
        curl = subprocess.run(
            ["curl", "-sS", "--cacert", str(pki.ca_file), "-w", "\n%{http_version}", url],
            capture_output=True, text=True, timeout=TIMEOUT, check=False,
        )  # fmt: skip
        assert curl.returncode == 0, curl.stderr
        assert curl.stdout == "upstream saw /hello\n1.1"
        with httpx.Client(verify=pki.client(), timeout=5) as client:
            answer = client.get(url)
        assert (answer.status_code, answer.text) == (200, "upstream saw /hello")
        assert answer.http_version == "HTTP/1.1"

        version, _, alpn, serial = handshake(port, alpn_client(pki))
        assert (version, alpn, serial) == ("TLSv1.3", "http/1.1", pair.serial)
        version, cipher, alpn, _ = handshake(
            port, alpn_client(pki, maximum_version=ssl.TLSVersion.TLSv1_2)
        )
        assert (version, alpn) == ("TLSv1.2", "http/1.1")
        assert cipher.startswith("ECDHE-") and ("GCM" in cipher or "CHACHA20" in cipher)


def test_tls11_and_cbc_only_clients_are_refused(pki: Pki, upstream: int, tmp_path: Path) -> None:
    pair = pki.issue()
    port = free_port()
    config = tmp_path / "config.yaml"
    write_config(config, upstream, port, pair)
    clients = legacy_clients(pki)
    for client in clients.values():  # each speaks its settings to a permissive server
        with permissive_server(pair) as permissive:
            handshake(permissive, client)
    with serving(config) as proxy:
        for name, client in clients.items():
            with pytest.raises((ssl.SSLError, ConnectionError)):
                handshake(port, client)
                pytest.fail(f"a {name} client was served")
        assert handshake(port, pki.client())[0] == "TLSv1.3"  # and the proxy still serves
        curl = subprocess.run(
            ["curl", "-sS", "--cacert", str(pki.ca_file), "--tls-max", "1.2", "--ciphers",
             "ECDHE-ECDSA-AES128-SHA256:ECDHE-ECDSA-AES128-SHA", f"https://127.0.0.1:{port}/"],
            capture_output=True, text=True, timeout=TIMEOUT, check=False,
        )  # fmt: skip
        assert curl.returncode != 0, curl.stdout
        assert proxy.proc.poll() is None


def test_the_admin_listener_over_tls(pki: Pki, upstream: int, tmp_path: Path) -> None:
    pair, admin_pair = pki.issue(), pki.issue()
    port, admin = free_port(), free_port()
    config = tmp_path / "config.yaml"
    extra = (
        f"admin:\n  listen: 127.0.0.1:{admin}\n  tls:\n    cert_file: {admin_pair.cert.name}\n"
        f"    key_file: {admin_pair.key.name}\n"
    )  # relative: to the config file's directory
    write_config(config, upstream, port, pair, extra)
    with serving(config):
        with httpx.Client(verify=pki.client(), timeout=5) as client:
            assert client.get(f"https://127.0.0.1:{admin}/healthz").status_code == 200
            assert client.get(f"https://127.0.0.1:{admin}/readyz").status_code == 200
        assert serial_of(admin, pki) == admin_pair.serial
        assert serial_of(port, pki) == pair.serial
        with pytest.raises(httpx.HTTPError):  # plain HTTP gets no answer
            httpx.get(f"http://127.0.0.1:{admin}/healthz", timeout=5)


# --- bad pairs at load ----------------------------------------------------------------


def test_bad_pairs_are_refused_at_load_naming_the_file_and_key(pki: Pki, tmp_path: Path) -> None:
    good, other = pki.issue(), pki.issue()
    not_pem = tmp_path / "cert.der"
    not_pem.write_bytes(b"\x30\x82\x01\x0a binary")
    encrypted = tmp_path / "encrypted.pem"
    encrypted.write_text(
        "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n"
    )
    cases = {
        "missing": (f"{tmp_path}/nope.pem", good.key, "cert_file", "cannot read"),
        "not PEM": (not_pem, good.key, "cert_file", "is not a PEM certificate"),
        "key not PEM": (good.cert, not_pem, "key_file", "is not a PEM private key"),
        "mismatch": (good.cert, other.key, "key_file", "does not match the certificate"),
        "encrypted": (good.cert, encrypted, "key_file", "is an encrypted private key"),
    }
    for name, (cert, key, field, message) in cases.items():
        config = tmp_path / "config.yaml"
        config.write_text(
            f"upstream: http://127.0.0.1:9\ncors: false\ntls:\n  cert_file: {cert}\n"
            f"  key_file: {key}\n"
        )
        serve = ["serve", "--log-format", "text", "--listen", f"127.0.0.1:{free_port()}"]
        for command in (["check"], serve):
            result = subprocess.run(
                [sys.executable, "-m", "corsproxy", *command, "-c", str(config)],
                capture_output=True, text=True, timeout=TIMEOUT, cwd=ROOT, check=False,
            )  # fmt: skip
            assert result.returncode == 2, (name, command, result.stderr)
            line = 4 if field == "cert_file" else 5
            expected = f"{config}:{line}: tls.{field}: "
            found = [x for x in result.stderr.splitlines() if x.startswith(expected)]
            assert found, (name, result.stderr)
            assert message in found[0], (name, found)
            assert str(cert if field == "cert_file" else key) in found[0], (name, found)
            assert "(" in found[0]  # a hint
            assert "Traceback" not in result.stderr


# --- rotation on SIGHUP ---------------------------------------------------------------


@pytest.mark.parametrize("loop", ["--uvloop", "--no-uvloop"])
def test_sighup_rotates_the_certificate_and_keeps_open_connections(
    pki: Pki, upstream: int, tmp_path: Path, loop: str
) -> None:
    first = pki.issue(tmp_path / "tls.crt", tmp_path / "tls.key")
    port = free_port()
    config = tmp_path / "config.yaml"
    write_config(config, upstream, port, first)
    with serving(config, loop) as proxy:  # uvloop's SSL protocol and asyncio's
        kept = http.client.HTTPSConnection("127.0.0.1", port, context=pki.client(), timeout=5)
        kept.request("GET", "/before")
        assert kept.getresponse().read() == b"upstream saw /before"

        second = pki.issue(tmp_path / "tls.crt", tmp_path / "tls.key")
        proxy.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: reloads(proxy) >= 1, proxy)
        assert serial_of(port, pki) == second.serial  # a new handshake: the new certificate
        kept.request("GET", "/after")  # the open connection: still served, its session kept
        assert kept.getresponse().read() == b"upstream saw /after"
        assert kept.sock is not None
        peer = kept.sock.getpeercert()  # type: ignore[union-attr]
        assert int(peer["serialNumber"], 16) == first.serial  # type: ignore[index]
        kept.close()

        # A bad new pair: the reload fails and says why; the certificate in use stays.
        pki.issue(tmp_path / "other.crt", tmp_path / "tls.key")  # the key of another cert
        proxy.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: any(m.startswith("reload failed") for m in proxy.messages()), proxy)
        why = [m for m in proxy.messages() if m.startswith("reload: ")]
        assert any("tls.key_file" in m and "does not match" in m for m in why), why
        assert serial_of(port, pki) == second.serial
        assert reloads(proxy) == 1


def test_every_worker_serves_the_new_certificate_after_sighup(
    pki: Pki, upstream: int, tmp_path: Path
) -> None:
    first = pki.issue(tmp_path / "tls.crt", tmp_path / "tls.key")
    port = free_port()
    config = tmp_path / "config.yaml"
    write_config(config, upstream, port, first)
    # At debug level each worker says it reloaded (at info only the supervisor does).
    with serving(config, "--workers", "2", "--log-level", "debug") as proxy:
        wait_for(lambda: len(proxy.ready()) >= 2, proxy)
        second = pki.issue(tmp_path / "tls.crt", tmp_path / "tls.key")
        proxy.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: reloads(proxy) >= 2, proxy)  # each worker reloaded
        for _ in range(16):  # the kernel spreads new connections across the workers
            with httpx.Client(verify=pki.client(), timeout=5) as client:
                answer = client.get(f"https://127.0.0.1:{port}/x")
            assert answer.status_code == 200
            assert serial_of(port, pki) == second.serial
        logged = {int(line["pid"]) for line in proxy.lines if line.get("pid")}
        assert len(logged) == 2, logged  # both workers answered requests


# --- --watch ---------------------------------------------------------------------------


def test_watch_reloads_a_rotated_certificate_within_seconds(
    pki: Pki, upstream: int, tmp_path: Path
) -> None:
    first = pki.issue(tmp_path / "tls.crt", tmp_path / "tls.key")
    port = free_port()
    config = tmp_path / "config.yaml"
    write_config(config, upstream, port, first)
    with serving(config, "--watch") as proxy:
        kept = http.client.HTTPSConnection("127.0.0.1", port, context=pki.client(), timeout=5)
        kept.request("GET", "/before")
        assert kept.getresponse().read() == b"upstream saw /before"
        second = pki.issue(tmp_path / "tls.crt", tmp_path / "tls.key")
        changed = time.monotonic()
        wait_for(lambda: reloads(proxy) >= 1, proxy)
        assert time.monotonic() - changed < 10  # the issue asks 5 s; generous on a busy CI
        assert serial_of(port, pki) == second.serial
        kept.request("GET", "/after")
        assert kept.getresponse().read() == b"upstream saw /after"
        kept.close()
        assert any("tls.crt" in m and "changed: reloading" in m for m in proxy.messages())


def test_watch_debounces_a_burst_into_one_reload_and_keeps_a_bad_file_out(
    pki: Pki, upstream: int, tmp_path: Path
) -> None:
    port = free_port()
    config = tmp_path / "config.yaml"
    write_config(config, upstream, port, pki.issue(), "watch: true\n")
    with serving(config) as proxy:
        for i in range(8):  # a burst of writes over more than one poll (0.5 s)
            write_config(config, upstream, port, pki.issue(), f"watch: true\n# {i}\n")
            time.sleep(0.08)
        wait_for(lambda: reloads(proxy) >= 1, proxy)
        time.sleep(3)  # several polls: no second reload comes
        assert reloads(proxy) == 1, proxy.messages()

        config.write_text(config.read_text() + "nonsense: [\n")
        wait_for(lambda: any(m.startswith("reload failed") for m in proxy.messages()), proxy)
        assert reloads(proxy) == 1
        with httpx.Client(verify=pki.client(), timeout=5) as client:
            assert client.get(f"https://127.0.0.1:{port}/still").text == "upstream saw /still"


def configmap_version(
    root: Path, name: str, pki: Pki, origin: str, upstream: int, port: int
) -> Pair:
    """A kubelet-style timestamped directory holding the config and its certificate."""
    version = root / name
    version.mkdir()
    pair = pki.issue(version / "tls.crt", version / "tls.key")
    (version / "config.yaml").write_text(
        f"upstream: http://127.0.0.1:{upstream}\nlisten: 127.0.0.1:{port}\n"
        f"cors:\n  allow_origins: ['{origin}']\n"
        "tls:\n  cert_file: tls.crt\n  key_file: tls.key\n"
    )
    return pair


def swap_data(root: Path, name: str) -> None:
    """The kubelet's atomic update: `..data` re-pointed by renaming a new symlink over it."""
    tmp = root / "..data_tmp"
    tmp.symlink_to(name)
    os.replace(tmp, root / "..data")


@pytest.mark.parametrize("workers", ["1", "2"])
def test_watch_follows_a_configmap_symlink_swap(
    pki: Pki, upstream: int, tmp_path: Path, workers: str
) -> None:
    root = tmp_path / "mounted"
    root.mkdir()
    port = free_port()
    configmap_version(root, "..2026_01_01_00_00_00.1", pki, "https://a.example", upstream, port)
    swap_data(root, "..2026_01_01_00_00_00.1")
    for name in ("config.yaml", "tls.crt", "tls.key"):
        (root / name).symlink_to(f"..data/{name}")

    def allowed(origin: str) -> str | None:
        with httpx.Client(verify=pki.client(), timeout=5) as client:
            answer = client.get(f"https://127.0.0.1:{port}/x", headers={"Origin": origin})
        return answer.headers.get("Access-Control-Allow-Origin")

    # At debug level each worker says it reloaded (at info only the supervisor does).
    args = ("--watch", "--workers", workers, "--log-level", "debug")
    with serving(root / "config.yaml", *args) as proxy:
        if workers == "2":
            wait_for(lambda: len(proxy.ready()) >= 2, proxy)
        assert allowed("https://a.example") == "https://a.example"
        new = configmap_version(
            root, "..2026_01_01_00_01_00.2", pki, "https://b.example", upstream, port
        )
        swap_data(root, "..2026_01_01_00_01_00.2")
        shutil.rmtree(root / "..2026_01_01_00_00_00.1")  # as the kubelet does
        wait_for(lambda: reloads(proxy) >= int(workers), proxy)
        for _ in range(8):  # with workers: new connections reach each
            assert allowed("https://b.example") == "https://b.example"
            assert allowed("https://a.example") is None
            assert serial_of(port, pki) == new.serial
        time.sleep(1.5)
        assert reloads(proxy) == int(workers)  # one swap, one reload (per worker)


# --- the watcher on its own --------------------------------------------------------------


def test_the_watcher_sees_writes_renames_and_symlink_swaps(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("one")
    (tmp_path / "v1").mkdir()
    (tmp_path / "v1" / "f").write_text("x")
    (tmp_path / "v2").mkdir()
    (tmp_path / "v2" / "f").write_text("x")  # same size, same content: only the inode differs
    (tmp_path / "data").symlink_to("v1")
    linked = tmp_path / "linked"
    linked.symlink_to("data/f")
    calls: list[list[str]] = []
    event = threading.Event()

    def changed(paths: list[str]) -> None:
        calls.append(paths)
        event.set()

    watcher = Watcher(lambda: (str(target), str(linked)), changed, interval=0.05, max_delay=0.2)
    watcher.start()
    try:

        def renamed() -> None:
            (tmp_path / "new").write_text("three")
            os.replace(tmp_path / "new", target)

        steps = [
            lambda: target.write_text("two, longer"),  # in place
            renamed,  # replaced by a rename
            lambda: swap_data_plain(tmp_path),  # a symlink swap
            target.unlink,  # removed: reported (the reload then fails and says so)
        ]
        for step in steps:
            event.clear()
            step()
            assert event.wait(5), calls
        assert calls[2] == [str(linked)]
        assert calls[0] == calls[1] == calls[3] == [str(target)]
    finally:
        watcher.stop()


def swap_data_plain(root: Path) -> None:
    tmp = root / "data_tmp"
    tmp.symlink_to("v2")
    os.replace(tmp, root / "data")


def test_config_watched_files_lists_the_config_and_its_certificates(
    pki: Pki, tmp_path: Path
) -> None:
    from corsproxy.config import load_config

    pair, admin = pki.issue(), pki.issue()
    config = tmp_path / "config.yaml"
    config.write_text(
        f"upstream: http://127.0.0.1:9\ncors: false\ntls: {{cert_file: {pair.cert.name}, "
        f"key_file: {pair.key.name}}}\nadmin:\n  listen: 127.0.0.1:0\n  tls: "
        f"{{cert_file: {admin.cert}, key_file: {admin.key}}}\n"
    )
    loaded = load_config(config)
    assert loaded.watched_files() == (
        str(config), str(pair.cert), str(pair.key), str(admin.cert), str(admin.key)
    )  # fmt: skip
    assert not loaded.watch
    assert json.dumps(loaded.watched_files())  # plain strings
