"""`corsproxy serve` as users run it: a subprocess, configured by file, flags or environment."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.net import ROOT, Recorder, free_port, rss_kib, running_app, start_cli

APP = "https://app.example.com"
OTHER = "https://other.example"


@pytest.fixture
async def upstream() -> AsyncIterator[str]:
    async with running_app(Recorder().app()) as url:
        yield url


@contextlib.asynccontextmanager
async def cli(*args: str, env: dict[str, str] | None = None) -> AsyncIterator[tuple[Any, str]]:
    proc, url = await asyncio.to_thread(start_cli, *args, env=env)
    try:
        yield proc, url
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            await asyncio.to_thread(proc.wait, 10)
        proc.stdout.close()
        proc.stderr.close()


async def acao(url: str, origin: str) -> str | None:
    async with aiohttp.ClientSession() as client:
        async with client.get(f"{url}/x", headers={"Origin": origin}) as response:
            assert response.status == 200
            return response.headers.get("Access-Control-Allow-Origin")


async def test_flags_alone_describe_a_proxy(upstream: str) -> None:
    async with cli("--listen", "127.0.0.1:0", "--upstream", upstream, "--allow-origin", APP) as (
        _,
        url,
    ):
        assert await acao(url, APP) == APP
        assert await acao(url, OTHER) is None


async def test_environment_alone_describes_a_proxy(upstream: str) -> None:
    env = {
        "CORSPROXY_LISTEN": "127.0.0.1:0",
        "CORSPROXY_UPSTREAM": upstream,
        "CORSPROXY_ALLOW_ORIGINS": f"{APP}, {OTHER}",
        "CORSPROXY_ALLOW_CREDENTIALS": "true",
    }
    async with cli(env=env) as (_, url):
        assert await acao(url, OTHER) == OTHER
        async with aiohttp.ClientSession() as client:
            async with client.get(f"{url}/x", headers={"Origin": APP}) as response:
                assert response.headers["Access-Control-Allow-Credentials"] == "true"


async def test_precedence_flags_over_environment_over_file(upstream: str, tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(f"upstream: http://127.0.0.1:1\ncors:\n  allow_origins: [{OTHER}]\n")
    env = {"CORSPROXY_UPSTREAM": upstream, "CORSPROXY_ALLOW_ORIGINS": "https://env.example"}
    args = ("--config", str(config), "--listen", "127.0.0.1:0")
    async with cli(*args, env=env) as (_, url):
        assert await acao(url, "https://env.example") == "https://env.example"
        assert await acao(url, OTHER) is None
    async with cli(*args, "--allow-origin", APP, env=env) as (_, url):
        assert await acao(url, APP) == APP
        assert await acao(url, "https://env.example") is None


def test_bad_config_exits_before_binding(tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "bad.yaml"
    config.write_text(f'listen: "127.0.0.1:{port}"\nupstream: nope\ncors: {{allow_origin: []}}\n')
    result = subprocess.run(
        [sys.executable, "-m", "corsproxy", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert f"{config}:2: upstream: upstream URL 'nope' must start with http://" in result.stderr
    assert f"{config}:3: cors.allow_origin: unknown key" in result.stderr
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))  # still free: nothing was bound


def test_bad_flags_name_the_flag() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "corsproxy", "serve", "--upstream", "http://u:1",
         "--allow-origin", "*", "--allow-credentials"],
        capture_output=True, text=True, timeout=30, check=False, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 2
    assert "--allow-origin: cors.allow_origins[0]: '*' cannot be used with " in result.stderr
    assert "(--allow-credentials)" in result.stderr


async def test_sighup_reloads_and_keeps_the_old_config_when_invalid(
    upstream: str, tmp_path: Path
) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(f"upstream: {upstream}\ncors:\n  allow_origins: [{APP}]\n")
    async with cli("--config", str(config), "--listen", "127.0.0.1:0") as (proc, url):
        assert await acao(url, OTHER) is None
        config.write_text(f"upstream: {upstream}\ncors:\n  allow_origins: [{APP}, {OTHER}]\n")
        proc.send_signal(signal.SIGHUP)
        for _ in range(50):
            if await acao(url, OTHER) == OTHER:
                break
            await asyncio.sleep(0.1)
        assert await acao(url, OTHER) == OTHER
        config.write_text("upstream: [broken\n")
        proc.send_signal(signal.SIGHUP)
        await asyncio.sleep(0.5)
        assert await acao(url, OTHER) == OTHER  # the old config still serves
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.to_thread(proc.communicate, timeout=10)
    messages = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert any(m["message"] == f"config reloaded from {config}" for m in messages)
    assert any("reload failed: keeping the running config" in m["message"] for m in messages)


async def test_sigterm_finishes_requests_in_flight(upstream: str) -> None:
    async with cli("--listen", "127.0.0.1:0", "--upstream", upstream) as (proc, url):
        async with aiohttp.ClientSession() as client:
            slow = asyncio.create_task(client.get(f"{url}/slow?s=1.5"))
            await asyncio.sleep(0.5)
            proc.send_signal(signal.SIGTERM)
            response = await asyncio.wait_for(slow, 10)
            assert response.status == 200
            assert await response.text() == "slow"
        assert await asyncio.to_thread(proc.wait, 10) == 0


async def test_access_log_lines(upstream: str) -> None:
    async with cli("--listen", "127.0.0.1:0", "--upstream", upstream, "--allow-origin", APP) as (
        proc,
        url,
    ):
        await acao(url, OTHER)
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.to_thread(proc.communicate, timeout=10)
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    access = [line for line in lines if line["logger"] == "corsproxy.access"]
    assert len(access) == 1
    entry = access[0]
    assert entry["level"] == "warning"  # a refusal
    assert entry["method"] == "GET" and entry["path"] == "/x" and entry["status"] == 200
    assert entry["upstream_status"] == 200 and entry["route"] == "default"
    assert entry["origin"] == OTHER and entry["cors"] == "refused"
    assert entry["reason"] == "origin_not_allowed"
    assert entry["bytes"] > 0 and entry["duration_ms"] >= 0


MIB = 1024 * 1024


async def test_200_mib_each_way_in_bounded_memory(upstream: str) -> None:
    async with cli("--listen", "127.0.0.1:0", "--upstream", upstream) as (proc, url):
        async with aiohttp.ClientSession() as client:
            async with client.get(f"{url}/x") as response:
                await response.read()  # warm up
            baseline = rss_kib(proc.pid)
            peak = baseline
            received = 0
            async with client.get(f"{url}/big?mib=200") as response:
                async for chunk in response.content.iter_chunked(MIB):
                    received += len(chunk)
                    peak = max(peak, rss_kib(proc.pid))
            assert received == 200 * MIB

            async def upload() -> AsyncIterator[bytes]:
                nonlocal peak
                block = b"u" * MIB
                for _ in range(200):
                    peak = max(peak, rss_kib(proc.pid))
                    yield block

            async with client.post(f"{url}/upload", data=upload()) as response:
                assert await response.text() == str(200 * MIB)
    growth_mib = (peak - baseline) / 1024
    print(f"proxy RSS growth: {growth_mib:.1f} MiB")
    assert growth_mib < 16, f"proxy grew by {growth_mib:.1f} MiB"


async def test_demo_mode_serves_without_an_api() -> None:
    port = free_port()
    async with cli("--demo", "--listen", f"127.0.0.1:{port}") as (_, url):
        async with aiohttp.ClientSession() as client:
            async with client.get(
                f"{url}/api/hello", headers={"Origin": "http://localhost:3000"}
            ) as response:
                assert response.status == 200
                assert response.headers["Access-Control-Allow-Origin"] == "http://localhost:3000"
                assert (await response.json())["message"] == "hello from the demo upstream"


async def test_requests_in_flight_keep_the_policy_they_started_with(
    upstream: str, tmp_path: Path
) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(f"upstream: {upstream}\ncors:\n  allow_origins: [{APP}]\n")
    async with cli("--config", str(config), "--listen", "127.0.0.1:0") as (proc, url):
        async with aiohttp.ClientSession() as client:
            slow = asyncio.create_task(client.get(f"{url}/slow?s=1.5", headers={"Origin": APP}))
            await asyncio.sleep(0.5)
            config.write_text(f"upstream: {upstream}\ncors:\n  allow_origins: [{OTHER}]\n")
            proc.send_signal(signal.SIGHUP)
            response = await asyncio.wait_for(slow, 10)
            assert response.headers["Access-Control-Allow-Origin"] == APP
            assert await acao(url, APP) is None  # new requests: the new policy


def test_bad_environment_values_name_the_variable() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "corsproxy", "serve", "--allow-credentials"],
        capture_output=True, text=True, timeout=30, check=False, cwd=ROOT,
        env={**os.environ, "CORSPROXY_UPSTREAM": "ftp://nope", "CORSPROXY_ALLOW_ORIGINS": "*"},
    )  # fmt: skip
    assert result.returncode == 2
    assert "CORSPROXY_UPSTREAM: upstream: upstream URL 'ftp://nope' must start" in result.stderr
    assert "CORSPROXY_ALLOW_ORIGINS: cors.allow_origins[0]: '*' cannot be used" in result.stderr
