"""What a serving worker imports (issue 16: at most 50 MiB of RSS per worker at rest).

Each module a worker imports costs resident memory in every worker, so the pieces only some
configurations or other commands use are imported where they are used: prometheus_client
and the console with an admin listener, RE2 with a regex origin, `explain` and `suggest`
with their commands (docs/performance.md, "Streaming and memory"). A real `corsproxy serve`
runs with `-X importtime` (PYTHONPROFILEIMPORTTIME, inherited by `--workers`' workers), answers
a request, and stops; its stderr names every module any of its processes imported.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from tests.net import ROOT, TIMEOUT, Recorder, free_port

APP = "https://app.example.com"

# Imported only where a configuration or a command needs them.
LAZY = (
    "prometheus_client",  # the admin listener's /metrics (ops/admin.py)
    "re2",  # regex origins (policy/regexes.py)
    "corsproxy.ops.admin",
    "corsproxy.ops.console",  # the admin listener's console
    "corsproxy.ops.suggest",  # `corsproxy suggest`, the console's suggestions
    "corsproxy.commands.explain",  # `corsproxy explain`, the console's form
    "corsproxy.commands.console",
    "corsproxy.policy.browser",  # explain's browser model
)
NEVER = ("hypothesis", "pytest", "_pytest")  # test-only: never in a served process


def serve_imports(tmp_path: Path, config: str, *args: str, request: str = "/x") -> set[str]:
    """The modules `corsproxy serve` (every process of it) imported by the time it had
    answered `request` on its listener."""
    path = tmp_path / "corsproxy.yaml"
    path.write_text(config)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "corsproxy",
            "serve",
            "--log-format",
            "json",
            "-c",
            str(path),
            *args,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPROFILEIMPORTTIME": "1"},
        cwd=ROOT,
    )
    assert proc.stderr is not None
    lines: list[str] = []
    url = None
    try:
        deadline = time.monotonic() + TIMEOUT
        while url is None and time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            lines.append(line)
            with contextlib.suppress(json.JSONDecodeError):
                found = re.search(
                    r"listening on (https?://\S+),", json.loads(line).get("message", "")
                )
                url = found.group(1) if found else None
        if url is None:
            proc.kill()
            raise AssertionError("corsproxy did not start:\n" + "".join(lines[-40:]))
        asyncio.run(_ask(url + request))
        proc.send_signal(signal.SIGTERM)
        lines += proc.communicate(timeout=TIMEOUT)[1].splitlines()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=TIMEOUT)
    names = {
        line.rsplit("|", 1)[1].strip()
        for line in lines
        if line.startswith("import time:") and "|" in line
    }
    assert "corsproxy.http.server" in names, "no -X importtime output"
    return names


def _under(name: str, modules: tuple[str, ...]) -> bool:
    """`name` is one of `modules` or a submodule of one."""
    return any(name == m or name.startswith(m + ".") for m in modules)


async def _ask(url: str) -> None:
    async with aiohttp.ClientSession() as client:
        for _ in range(3):  # several, so any worker of --workers 2 may answer
            async with client.get(url, headers={"Origin": APP}) as response:
                await response.read()
                assert response.status == 200


@pytest.mark.parametrize("workers", ["1", "2"])
async def test_a_worker_imports_no_admin_regex_or_command_modules(
    recorder: Recorder, tmp_path: Path, workers: str
) -> None:
    config = (
        f"upstream: {recorder.url}\ncors:\n  allow_origins: [{APP}, 'https://*.app.example.com']\n"
    )
    names = await asyncio.to_thread(
        serve_imports, tmp_path, config, "--listen", "127.0.0.1:0", "--workers", workers
    )
    imported = sorted(n for n in names if n.split(".")[0] in NEVER or _under(n, LAZY))
    assert not imported, f"serve imported {imported} (import them where they are used)"
    assert recorder.seen  # the request went through


async def test_an_admin_listener_and_a_regex_origin_import_theirs(
    recorder: Recorder, tmp_path: Path
) -> None:
    """The same probe sees what a configuration that needs them imports (or the test above
    would pass for a probe that sees nothing)."""
    config = (
        f"upstream: {recorder.url}\n"
        f"admin:\n  listen: 127.0.0.1:{free_port()}\n"
        f"cors:\n  allow_origins: [{APP}, 'regex:https://pr-[0-9]+\\.preview\\.example\\.com']\n"
    )
    names = await asyncio.to_thread(serve_imports, tmp_path, config, "--listen", "127.0.0.1:0")
    for name in ("prometheus_client", "re2", "corsproxy.ops.admin", "corsproxy.ops.console"):
        assert any(_under(n, (name,)) for n in names), name
