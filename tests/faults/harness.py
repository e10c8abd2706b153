"""Fault injection against a real `corsproxy serve` process: the process, a raw client, and
the leak checks of security-anchors.md section 7 after every scenario (open fds back to
baseline, no "Unclosed" or traceback lines, the process alive and serving). The scriptable
raw upstream is tests/net.py's `scripted_upstream`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import yaml

from tests.net import ROOT, TIMEOUT, head_and_body, header_values, raw_exchange

APP = "https://app.example.com"
POLICY = {"allow_origins": [APP], "allow_credentials": True}
# What must never appear in the proxy's log: leaks, unretrieved errors, crashes.
BAD_LOG = (
    "Unclosed", "ResourceWarning", "Exception ignored", "Traceback", "Task was destroyed",
    "Task exception was never retrieved", "never awaited", "Fatal error",
)  # fmt: skip


class Proxy:
    """A `corsproxy serve` process with its log collected by a thread (so a full pipe can
    never block it)."""

    def __init__(self, proc: subprocess.Popen[str], url: str) -> None:
        self.proc = proc
        self.url = url
        self.log: list[str] = []
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.log.append(line)

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def rss_mib(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no VmRSS")

    async def settle(self, baseline: int, slack: int = 2, limit: float = 5.0) -> None:
        """Open fds back to baseline (+ slack, for pooled upstream connections)."""
        deadline = time.monotonic() + limit
        while self.fds() > baseline + slack and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.1)  # polling /proc: there is nothing to wait on
        assert self.fds() <= baseline + slack, f"fds {self.fds()} > baseline {baseline}"

    async def healthy(self) -> None:
        """Alive, serving, and nothing bad in its log."""
        assert self.proc.poll() is None, "the proxy exited"
        # A preflight: answered by the proxy itself (204 or 403), whatever the upstream does.
        reply = await raw_exchange(
            self.url,
            b"OPTIONS /probe HTTP/1.1\r\nHost: p\r\nConnection: close\r\n"
            b"Origin: https://probe.example\r\nAccess-Control-Request-Method: PUT\r\n\r\n",
            5,
        )
        assert reply.startswith(b"HTTP/1.1 "), reply[:100]
        bad = [line for line in self.log if any(word in line for word in BAD_LOG)]
        assert not bad, "".join(bad)


@contextlib.asynccontextmanager
async def proxy(tmp: Path, doc: dict[str, Any], *flags: str) -> AsyncIterator[Proxy]:
    """A corsproxy process for `doc` (YAML written to tmp), with ResourceWarnings as errors."""
    config = tmp / "corsproxy.yaml"
    config.write_text(yaml.safe_dump({"listen": "127.0.0.1:0", **doc}))
    env = {**os.environ, "PYTHONWARNINGS": "error::ResourceWarning"}
    proc = subprocess.Popen(  # noqa: ASYNC220 - starting it does not block; output is read in a thread
        [sys.executable, "-m", "corsproxy", "serve", "--config", str(config),
         "--log-format", "text", *flags],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT,
    )  # fmt: skip
    assert proc.stderr is not None
    url = ""
    deadline = time.monotonic() + TIMEOUT
    first: list[str] = []
    while time.monotonic() < deadline and not url:
        line = await asyncio.to_thread(proc.stderr.readline)
        if not line:
            break
        first.append(line)
        if "listening on http://" in line:
            url = line.split("listening on ", 1)[1].split(",", 1)[0]
    if not url:
        proc.kill()
        raise AssertionError("corsproxy did not start:\n" + "".join(first))
    px = Proxy(proc, url)
    px.log.extend(first)
    try:
        yield px
    finally:
        if proc.poll() is None:
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                await asyncio.to_thread(proc.wait, 10)
        if proc.poll() is None:
            proc.kill()
            await asyncio.to_thread(proc.wait, 5)
        px._reader.join(5)
        proc.stderr.close()


async def get(url: str, path: str = "/x", origin: str | None = APP, extra: str = "") -> bytes:
    head = f"GET {path} HTTP/1.1\r\nHost: p\r\nConnection: close\r\n"
    if origin:
        head += f"Origin: {origin}\r\n"
    return await raw_exchange(url, (head + extra + "\r\n").encode(), wait=TIMEOUT)


def status(response: bytes) -> int:
    lines, _ = head_and_body(response)
    return int(lines[0].split()[1]) if lines and lines[0].startswith("HTTP/1.") else 0


def header(response: bytes, name: str) -> list[str]:
    return header_values(head_and_body(response)[0], name)
