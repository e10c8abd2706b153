"""Run a WSGI app under a real gunicorn on a free loopback port, for black-box tests.

`gunicorn_app("tests.realworld.flask_app:app")` starts gunicorn (one sync worker), waits
until the port answers, and always terminates it. A gunicorn that exits or does not answer
in time fails the test with its stderr instead of hanging.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 30.0  # a loaded 2-core CI machine imports Django slowly


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _answers(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
        return True
    return False


@contextlib.contextmanager
def gunicorn_app(target: str, env: dict[str, str] | None = None) -> Iterator[str]:
    """Serve `module:app` with gunicorn; yields its base URL (http://127.0.0.1:PORT)."""
    port = _free_port()
    with tempfile.TemporaryFile("w+") as stderr:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                "1",
                "--graceful-timeout",
                "2",
                "--log-level",
                "warning",
                target,
            ],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        )
        try:
            deadline = time.monotonic() + START_TIMEOUT
            while not _answers(port):
                if proc.poll() is not None or time.monotonic() > deadline:
                    stderr.seek(0)
                    state = "exited" if proc.poll() is not None else "did not answer"
                    raise AssertionError(f"gunicorn {target} {state}:\n{stderr.read()}")
                time.sleep(0.1)
            yield f"http://127.0.0.1:{port}"
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
