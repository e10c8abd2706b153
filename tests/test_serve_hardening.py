"""The second outside review (issue 11, section 6), as an attacker meets a real process:
catastrophic operator regexes, forged log lines, reload limits, TRACE and Max-Forwards."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

from tests.net import Recorder, free_port, start_cli

APP = "https://app.example.com"


@contextlib.asynccontextmanager
async def serving(*args: str) -> AsyncIterator[tuple[Any, str]]:
    proc, url = await asyncio.to_thread(start_cli, "--listen", "127.0.0.1:0", *args)
    try:
        yield proc, url
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(proc.wait, 10)
            except Exception:
                proc.kill()
                await asyncio.to_thread(proc.wait, 10)
        proc.stdout.close()
        proc.stderr.close()


async def test_a_catastrophic_regex_does_not_block_the_process(
    recorder: Recorder, tmp_path: Path
) -> None:
    admin = free_port()
    config = tmp_path / "c.yaml"
    config.write_text(
        f"upstream: {recorder.url}\nadmin: {{listen: '127.0.0.1:{admin}'}}\n"
        "cors:\n  allow_origins: ['regex:https://(a+)+\\.example\\.com']\n"
    )
    async with serving("--config", str(config)) as (_, url), aiohttp.ClientSession() as client:
        timeout = aiohttp.ClientTimeout(total=5)

        async def attack(n: int) -> float:
            started = time.monotonic()
            origin = "https://" + "a" * n + ".example.con"  # almost: the worst case
            async with client.get(f"{url}/x", headers={"Origin": origin}, timeout=timeout) as r:
                assert r.status == 200 and "Access-Control-Allow-Origin" not in r.headers
            return time.monotonic() - started

        async def health() -> None:
            async with client.get(f"http://127.0.0.1:{admin}/healthz", timeout=timeout) as r:
                assert r.status == 200

        # 28 `a`s took 9 s on the backtracking engine; 60 would take centuries.
        attacks = [asyncio.create_task(attack(n)) for n in (30, 40, 60)]
        await health()  # answered meanwhile
        assert max(await asyncio.gather(*attacks)) < 5
        ok = "https://" + "a" * 60 + ".example.com"
        async with client.get(f"{url}/x", headers={"Origin": ok}, timeout=timeout) as r:
            assert r.headers["Access-Control-Allow-Origin"] == ok
