"""The outside review of listener TLS and `--watch`, each finding as its reviewer met it,
against a real `corsproxy` process: a half-done rotation plus dead workers, PEM pasted where
a path goes, a config naming files that come later, handshakes that never finish, and a
server name that is not ASCII.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.net import ROOT, free_port
from tests.test_serve_tls import (
    TIMEOUT,
    Pki,
    reloads,
    serial_of,
    serving,
    wait_for,
    write_config,
)
from tests.test_serve_tls import upstream as serve_upstream


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path)


upstream = serve_upstream  # the same fixture: a plain HTTP upstream echoing the path


def failed_reloads(messages: list[str]) -> int:
    return sum(m.startswith("reload failed") for m in messages)


# --- 1. a respawned worker starts from the last good files, not from disk -----------------


def test_respawned_workers_serve_the_last_good_certificate_after_a_half_done_rotation(
    pki: Pki, upstream: int, tmp_path: Path
) -> None:
    first = pki.issue(tmp_path / "tls.crt", tmp_path / "tls.key")
    port = free_port()
    config = tmp_path / "config.yaml"
    write_config(config, upstream, port, first)
    # At debug level each worker says it reloaded (at info only the supervisor does).
    with serving(config, "--workers", "2", "--log-level", "debug") as proxy:
        wait_for(lambda: len(proxy.serving()) >= 2, proxy)
        # The reviewer's repro: a new certificate over tls.crt, its key not written yet.
        other = pki.issue(tmp_path / "b.crt", tmp_path / "b.key")
        os.replace(other.cert, tmp_path / "tls.crt")
        proxy.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: failed_reloads(proxy.messages()) >= 1, proxy)
        assert serial_of(port, pki) == first.serial
        old = proxy.serving()
        for pid in old:
            os.kill(pid, signal.SIGKILL)
        wait_for(lambda: len(proxy.serving() - old) >= 2, proxy, timeout=40)
        assert proxy.proc.poll() is None, proxy.messages()
        for _ in range(8):  # new connections reach both replacements
            assert serial_of(port, pki) == first.serial
        assert not any("cannot start workers" in m for m in proxy.messages())
        # The snapshot is private: the supervisor's directory and the copies.
        copies = [
            Path(f"/proc/{pid}/environ").read_bytes().split(b"\0") for pid in proxy.serving() - old
        ]
        index = next(
            v.split(b"=", 1)[1].decode()
            for v in copies[0]
            if v.startswith(b"CORSPROXY_FILES_SNAPSHOT=")
        )
        folder = Path(index).parent / "files"
        assert oct(os.stat(index).st_mode & 0o777) == "0o600"
        for copy in folder.iterdir():
            assert oct(copy.stat().st_mode & 0o777) == "0o600"

        # Then the key arrives: a good reload, and everyone (respawns too) serves it.
        os.replace(other.key, tmp_path / "tls.key")
        proxy.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: reloads(proxy) >= 2, proxy)
        for _ in range(8):
            assert serial_of(port, pki) == other.serial


def test_a_failed_supervisor_reload_is_not_passed_to_the_workers(
    pki: Pki, upstream: int, tmp_path: Path
) -> None:
    port = free_port()
    config = tmp_path / "config.yaml"
    write_config(config, upstream, port, pki.issue())
    with serving(config, "--workers", "2") as proxy:
        wait_for(lambda: len(proxy.serving()) >= 2, proxy)
        config.write_text(config.read_text() + "nonsense: [\n")
        proxy.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: failed_reloads(proxy.messages()) >= 1, proxy)
        time.sleep(2)  # a worker told to reload would have logged by now
        assert failed_reloads(proxy.messages()) == 1, proxy.messages()


# --- 2. PEM content given as a path is never echoed ------------------------------------


@pytest.mark.parametrize("section", ["tls", "upstream_tls"])
def test_pem_pasted_as_a_path_is_refused_without_echoing_it(
    pki: Pki, upstream: int, tmp_path: Path, section: str
) -> None:
    pair = pki.issue()
    secret = pair.key.read_text()
    block = "\n".join("    " + line for line in secret.splitlines())
    if section == "tls":
        text = f"tls:\n  cert_file: {pair.cert}\n  key_file: |\n{block}\n"
        head = f"upstream: http://127.0.0.1:{upstream}\n"
    else:
        text = f"upstream_tls:\n  cert_file: {pair.cert}\n  key_file: |\n{block}\n"
        head = "upstream: https://127.0.0.1:9\n"
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"{head}cors: false\n{text}")
    body = secret.splitlines()[1]  # a line of the key itself
    result = subprocess.run(
        [sys.executable, "-m", "corsproxy", "check", "-c", str(bad)],
        capture_output=True, text=True, timeout=TIMEOUT, cwd=ROOT, check=False,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "the value is not a path: it looks like PEM or key content" in result.stderr, (
        result.stderr
    )
    assert f"{section}.key_file" in result.stderr
    assert "give the path of a file holding it" in result.stderr
    assert body not in result.stdout + result.stderr
    assert "BEGIN" not in result.stdout + result.stderr

    # The same in a reload's log.
    port = free_port()
    config = tmp_path / "config.yaml"
    write_config(config, upstream, port, pki.issue())
    with serving(config) as proxy:
        good = config.read_text()
        if section == "tls":
            config.write_text(good.split("tls:")[0] + text)
        else:
            https = good.replace(f"http://127.0.0.1:{upstream}", "https://127.0.0.1:9")
            config.write_text(https + text)
        proxy.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: failed_reloads(proxy.messages()) >= 1, proxy)
        logged = "\n".join(proxy.messages())
        assert "the value is not a path: it looks like PEM or key content" in logged, logged
        assert body not in logged
        assert "BEGIN" not in logged


@pytest.mark.parametrize("form", ["body", "base64"])
@pytest.mark.parametrize("section", ["tls", "upstream_tls"])
def test_a_key_body_pasted_as_a_path_is_never_echoed(
    pki: Pki, upstream: int, tmp_path: Path, section: str, form: str
) -> None:
    """A key's base64 body without its PEM lines, or `base64 -w0 key.pem` (a Kubernetes
    Secret's data), is key material too (second outside review: echoed in full)."""
    import base64

    pair = pki.issue()
    secret = pair.key.read_text()
    lines = [line for line in secret.splitlines() if "-----" not in line]
    value = "".join(lines) if form == "body" else base64.b64encode(secret.encode()).decode()
    head = (
        f"upstream: http://127.0.0.1:{upstream}\n"
        if section == "tls"
        else "upstream: https://127.0.0.1:9\n"
    )
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        f'{head}cors: false\n{section}:\n  cert_file: {pair.cert}\n  key_file: "{value}"\n'
    )
    result = subprocess.run(
        [sys.executable, "-m", "corsproxy", "check", "-c", str(bad)],
        capture_output=True, text=True, timeout=TIMEOUT, cwd=ROOT, check=False,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "the value is not a path" in result.stderr, result.stderr
    for chunk in (value[:24], value[-24:], lines[0][:16]):
        assert chunk not in result.stdout + result.stderr


# --- 3. the files a failed reload named are watched --------------------------------------


@pytest.mark.parametrize("workers", ["1", "2"])
def test_watch_sees_files_named_by_a_config_that_failed_to_load(
    pki: Pki, upstream: int, tmp_path: Path, workers: str
) -> None:
    port = free_port()
    config = tmp_path / "config.yaml"
    write_config(config, upstream, port, pki.issue())
    with serving(config, "--watch", "--workers", workers) as proxy:
        wait_for(lambda: len(proxy.serving()) >= 2 if workers == "2" else True, proxy)
        # The ConfigMap first: it names a Secret not mounted yet.
        cert, key = tmp_path / "w2.crt", tmp_path / "w2.key"
        text = config.read_text().split("tls:")[0]
        config.write_text(text + f"tls:\n  cert_file: {cert}\n  key_file: {key}\n")
        wait_for(lambda: failed_reloads(proxy.messages()) >= 1, proxy)
        # Then the Secret, the certificate a moment before its key.
        fresh = pki.issue(tmp_path / "fresh.crt", tmp_path / "fresh.key")
        os.replace(fresh.cert, cert)
        time.sleep(1.5)
        os.replace(fresh.key, key)
        wait_for(lambda: serial_of(port, pki) == fresh.serial, proxy)
        for _ in range(6):
            assert serial_of(port, pki) == fresh.serial


# --- 4. TLS handshakes are bounded by limits.idle_timeout --------------------------------


@pytest.mark.parametrize("sent", [b"", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"])
def test_a_handshake_that_never_finishes_is_closed_after_idle_timeout(
    pki: Pki, upstream: int, tmp_path: Path, sent: bytes
) -> None:
    port = free_port()
    config = tmp_path / "config.yaml"
    write_config(config, upstream, port, pki.issue(), "limits:\n  idle_timeout: 2\n")
    with serving(config):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            raw.sendall(sent)  # nothing, or the start of a ClientHello
            raw.settimeout(30)  # asyncio's own default is 60 s
            started = time.monotonic()
            try:
                data = raw.recv(1024)
            except ConnectionResetError:
                data = b""
            elapsed = time.monotonic() - started
        assert data == b"" and elapsed < 20, (data, elapsed)  # 2 s, generous margin


# --- 5. a server name that is not ASCII: no traceback, one line at most ----------------


def test_a_non_ascii_server_name_logs_one_line_and_no_traceback(
    pki: Pki, upstream: int, tmp_path: Path
) -> None:
    port = free_port()
    config = tmp_path / "config.yaml"
    write_config(config, upstream, port, pki.issue())
    with serving(config) as proxy:
        for _ in range(5):
            result = subprocess.run(
                [b"openssl", b"s_client", b"-connect", f"127.0.0.1:{port}".encode(),
                 b"-servername", b"caf\xc3\xa9"],
                input=b"", capture_output=True, timeout=TIMEOUT, check=False,
            )  # fmt: skip
            assert b"CONNECTED" in result.stdout, result.stdout + result.stderr
        assert serial_of(port, pki)  # still serving ASCII names
        time.sleep(1)
        wait_for(lambda: any("not ASCII" in m for m in proxy.messages()), proxy)
        text = "\n".join(proxy.messages())
        assert "Traceback" not in text and "UnicodeDecodeError" not in text, text
        assert "Exception ignored" not in text, text
        assert sum("not ASCII" in m for m in proxy.messages()) == 1, text
        assert all("level" in line for line in proxy.lines), proxy.lines  # JSON lines only


# --- a FIFO or a directory as tls.cert_file never blocks a reload ------------------------


def test_a_fifo_or_directory_as_the_listener_certificate_fails_the_reload_at_once(
    pki: Pki, upstream: int, tmp_path: Path
) -> None:
    good = pki.issue()
    port = free_port()
    config = tmp_path / "config.yaml"
    write_config(config, upstream, port, good)
    fifo, folder = tmp_path / "fifo.pem", tmp_path / "folder.pem"
    os.mkfifo(fifo)  # nobody writes: an ordinary open waits forever
    folder.mkdir()
    with serving(config, "--workers", "2") as proxy:
        wait_for(lambda: len(proxy.serving()) >= 2, proxy)
        for number, (target, kind) in enumerate(((fifo, "a FIFO"), (folder, "a directory")), 1):
            text = config.read_text().replace(str(good.cert), str(target))
            config.write_text(text)
            proxy.proc.send_signal(signal.SIGHUP)
            wait_for(lambda n=number: failed_reloads(proxy.messages()) >= n, proxy)  # type: ignore[misc]
            assert any(f"it is {kind}, not a regular file" in m for m in proxy.messages())
            config.write_text(text.replace(str(target), str(good.cert)))
        assert serial_of(port, pki) == good.serial
        started = time.monotonic()
        assert proxy.stop() == 0
        assert time.monotonic() - started < 15


# --- 6. `corsproxy healthcheck --ca-file` with admin.tls ---------------------------------


def test_healthcheck_probes_a_tls_admin_listener_with_a_ca_file(
    pki: Pki, upstream: int, tmp_path: Path
) -> None:
    port, admin = free_port(), free_port()
    config = tmp_path / "config.yaml"
    admin_pair = pki.issue()
    extra = (
        f"admin:\n  listen: 0.0.0.0:{admin}\n  tls:\n    cert_file: {admin_pair.cert}\n"
        f"    key_file: {admin_pair.key}\n"
    )
    write_config(config, upstream, port, pki.issue(), extra)

    def probe(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "corsproxy", "healthcheck", *args],
            capture_output=True, text=True, timeout=TIMEOUT, cwd=ROOT, check=False,
            env={**os.environ, "CORSPROXY_ADMIN_LISTEN": f"0.0.0.0:{admin}", **(env or {})},
        )  # fmt: skip

    with serving(config):
        plain = probe()
        assert plain.returncode == 1, plain.stdout + plain.stderr
        for result in (
            probe("--ca-file", str(pki.ca_file)),
            probe(env={"CORSPROXY_HEALTHCHECK_CA_FILE": str(pki.ca_file)}),
            probe("--ca-file", str(pki.ca_file), "--url", f"https://127.0.0.1:{admin}/healthz"),
        ):
            assert result.returncode == 0, result.stdout + result.stderr
            assert result.stdout.startswith("healthy: https://"), result.stdout
        (tmp_path / "other").mkdir()
        other = Pki(tmp_path / "other")
        untrusted = probe("--ca-file", str(other.ca_file))  # another CA: refused
        assert untrusted.returncode == 1, untrusted.stdout
