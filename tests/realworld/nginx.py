"""nginx as a TLS terminator in front of a server under test, as users configure it.

`Nginx` writes a config into a temporary directory, starts nginx on a free loopback port
(no root, no system paths: every path nginx writes is in that directory) and stops it again.
A missing nginx skips the test with a message, unless CORSPROXY_REQUIRE_NGINX=1 (CI) makes
it fail. An nginx that does not start fails the test with its error log.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

import pytest

TIMEOUT = 10.0
CANDIDATES = ("/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx")


def nginx_binary() -> str:
    """The nginx executable; skips (or fails, with CORSPROXY_REQUIRE_NGINX=1) without one."""
    found = shutil.which("nginx") or next((c for c in CANDIDATES if os.access(c, os.X_OK)), None)
    if found:
        return found
    message = "nginx is not installed (apt-get install nginx); CI installs it in .ci/run"
    if os.environ.get("CORSPROXY_REQUIRE_NGINX") == "1":
        pytest.fail(message + " and sets CORSPROXY_REQUIRE_NGINX=1")
    pytest.skip(message)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class Nginx:
    """nginx serving `server_body` (the inside of one `server { }` block, without `listen`)
    on https://127.0.0.1:PORT with the given certificate and key (PEM files)."""

    def __init__(self, server_body: str, cert_file: str, key_file: str) -> None:
        self.binary = nginx_binary()
        self.dir = Path(tempfile.mkdtemp(prefix="corsproxy-nginx-"))
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        d = self.dir
        for sub in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (d / sub).mkdir()
        self.conf = d / "nginx.conf"
        self.conf.write_text(
            f"""
daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 64; }}
http {{
    access_log {d}/access.log;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    server {{
        listen 127.0.0.1:{self.port} ssl;
        server_name localhost;
        ssl_certificate {cert_file};
        ssl_certificate_key {key_file};
{server_body}
    }}
}}
"""
        )

    def __enter__(self) -> Nginx:
        check = subprocess.run(
            [self.binary, "-t", *self.args()],
            capture_output=True,
            timeout=TIMEOUT,
            check=False,
        )
        if check.returncode != 0:
            self.cleanup()
            pytest.fail(f"nginx refused its config:\n{check.stderr.decode(errors='replace')}")
        self.proc = subprocess.Popen(
            [self.binary, *self.args()],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.05)
        log = self.error_log()
        self.stop()
        self.cleanup()
        pytest.fail(f"nginx did not start on port {self.port}:\n{log}")

    def args(self) -> list[str]:
        # -e: the error log before the config is read (else the compiled-in path under
        # /var/log, which a user other than root cannot open).
        return ["-p", str(self.dir), "-c", str(self.conf), "-e", str(self.dir / "error.log")]

    def error_log(self) -> str:
        path = self.dir / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(TIMEOUT)
        if self.proc is not None and self.proc.stderr is not None:
            self.proc.stderr.close()

    def cleanup(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        self.cleanup()
