"""The admin listener, metrics, request ids, `corsproxy healthcheck` and workers."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import re
import signal
import subprocess
import sys

import aiohttp
from yarl import URL

from corsproxy.ops.logs import _Formatter
from corsproxy.policy.cors import Reason, ReasonCode
from tests.net import ROOT, Recorder, free_port, rss_kib, running_proxy, start_cli

APP = "https://app.example.com"


def upstream_header(recorder: Recorder, name: str) -> str:
    return next(v for n, v in recorder.seen[-1]["headers"] if n.lower() == name.lower())


def samples(text: str, name: str) -> dict[str, float]:
    """`{labels: value}` for one metric in the exposition text."""
    found: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            labels, _, value = line.rpartition(" ")
            found[labels[len(name) :]] = float(value)
    return found


async def test_health_readiness_and_metrics(recorder: Recorder) -> None:
    admin = free_port()
    doc = {
        "upstream": recorder.url,
        "admin": {"listen": f"127.0.0.1:{admin}"},
        "cors": {"allow_origins": [APP], "allow_methods": ["GET", "PUT"]},
        "routes": [
            {"path_prefix": "/down", "name": "down", "upstream": f"http://127.0.0.1:{free_port()}"}
        ],
    }
    async with running_proxy(doc) as proxy, aiohttp.ClientSession() as client:
        base = f"http://127.0.0.1:{admin}"
        async with client.get(f"{base}/healthz") as r:
            assert r.status == 200 and await r.text() == "ok\n"
        async with client.get(f"{base}/readyz") as r:
            assert r.status == 200
        await (await client.get(f"{proxy}/x", headers={"Origin": APP})).read()
        await (await client.get(f"{proxy}/x", headers={"Origin": "https://evil.example"})).read()
        preflight = {"Origin": APP, "Access-Control-Request-Method": "PUT",
                     "Access-Control-Request-Headers": "x-attacker-chosen"}  # fmt: skip
        await (await client.options(f"{proxy}/x", headers=preflight)).read()
        await (await client.request("PROPFIND", f"{proxy}/x")).read()
        await (await client.get(f"{proxy}/down/x")).read()
        async with client.get(f"{base}/metrics") as r:
            assert r.status == 200
            assert r.headers["Content-Type"].startswith("text/plain")
            text = await r.text()
    requests = samples(text, "corsproxy_requests_total")
    assert requests['{code="200",method="GET",route="default"}'] == 2
    assert requests['{code="403",method="OPTIONS",route="default"}'] == 1
    assert requests['{code="200",method="OTHER",route="default"}'] == 1  # bounded methods
    assert requests['{code="502",method="GET",route="down"}'] == 1
    decisions = samples(text, "corsproxy_cors_decisions_total")
    assert (
        decisions['{decision="allowed",kind="actual",reason="origin_allowed",route="default"}'] == 1
    )
    assert (
        decisions['{decision="refused",kind="actual",reason="origin_not_allowed",route="default"}']
        == 1
    )
    assert (
        decisions[
            '{decision="refused",kind="preflight",reason="header_not_allowed",route="default"}'
        ]
        == 1
    )
    errors = samples(text, "corsproxy_upstream_errors_total")
    assert errors == {'{kind="upstream_unreachable",route="down"}': 1.0}
    assert samples(text, "corsproxy_requests_in_flight") == {"": 0.0}
    assert samples(text, "corsproxy_request_duration_seconds_count")['{route="default"}'] == 4
    assert any(k.startswith('{aiohttp="') for k in samples(text, "corsproxy_build_info"))
    assert "evil.example" not in text and "x-attacker-chosen" not in text  # never labels


async def test_request_ids_are_kept_or_made_forwarded_and_returned(recorder: Recorder) -> None:
    async with (
        running_proxy({"upstream": recorder.url}) as proxy,
        aiohttp.ClientSession() as client,
    ):
        async with client.get(f"{proxy}/x", headers={"X-Request-Id": "abc-123"}) as r:
            assert r.headers["X-Request-Id"] == "abc-123"
        assert upstream_header(recorder, "X-Request-Id") == "abc-123"
        async with client.get(f"{proxy}/x") as r:
            made = r.headers["X-Request-Id"]
        assert re.fullmatch(r"[0-9a-f]{32}", made)
        assert upstream_header(recorder, "X-Request-Id") == made
        async with client.get(f"{proxy}/x", headers={"X-Request-Id": "bad id\twith spaces"}) as r:
            assert re.fullmatch(r"[0-9a-f]{32}", r.headers["X-Request-Id"])
        bad = URL(f"{proxy}/bad%zz", encoded=True)  # a malformed escape: 400 from the proxy
        async with client.get(bad, headers={"X-Request-Id": "e-1"}) as r:
            assert r.status == 400 and r.headers["X-Request-Id"] == "e-1"  # errors carry it too


def test_healthcheck_command() -> None:
    closed = subprocess.run(
        [sys.executable, "-m", "corsproxy", "healthcheck", "--url", f"http://127.0.0.1:{free_port()}/healthz"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert closed.returncode == 1 and "unhealthy" in closed.stderr


async def test_healthcheck_and_drain(recorder: Recorder) -> None:
    admin = free_port()
    args = ("--listen", "127.0.0.1:0", "--upstream", recorder.url, "--admin-listen",
            f"127.0.0.1:{admin}", "--drain-delay", "1.5")  # fmt: skip
    proc, url = await asyncio.to_thread(start_cli, *args)
    try:
        check = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "corsproxy", "healthcheck",
            env={"CORSPROXY_ADMIN_LISTEN": f"127.0.0.1:{admin}", "PATH": ""}, cwd=ROOT,
        )  # fmt: skip
        assert await check.wait() == 0
        proc.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.5)
        async with aiohttp.ClientSession() as client:
            async with client.get(f"http://127.0.0.1:{admin}/readyz") as r:
                assert r.status == 503  # load balancers stop sending...
            async with client.get(f"{url}/x") as r:
                assert r.status == 200  # ...while the proxy still serves
        assert await asyncio.to_thread(proc.wait, 10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)


async def test_workers_share_the_port_signals_and_metrics(recorder: Recorder) -> None:
    admin = free_port()
    port = free_port()
    args = ("--listen", f"127.0.0.1:{port}", "--upstream", recorder.url, "--admin-listen",
            f"127.0.0.1:{admin}", "--workers", "2")  # fmt: skip
    proc = await asyncio.to_thread(
        subprocess.Popen,
        [sys.executable, "-m", "corsproxy", "serve", "--log-format", "json", *args],
        stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip
    try:
        async with aiohttp.ClientSession() as client:
            for _ in range(100):  # both workers listening?
                try:
                    async with client.get(f"http://127.0.0.1:{admin}/healthz") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientError:
                    await asyncio.sleep(0.1)
            await asyncio.sleep(1)
            for _ in range(40):  # a new connection each time: the kernel spreads them
                async with aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(force_close=True)
                ) as c:
                    async with c.get(f"http://127.0.0.1:{port}/x") as r:
                        assert r.status == 200
            proc.send_signal(signal.SIGHUP)
            await asyncio.sleep(1)
            async with client.get(f"http://127.0.0.1:{admin}/metrics") as r:
                text = await r.text()
        total = sum(samples(text, "corsproxy_requests_total").values())
        assert total == 40  # all workers counted, whichever answered /metrics
        assert samples(text, "corsproxy_config_reloads_total") == {'{result="success"}': 2.0}
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.to_thread(proc.communicate, timeout=20)
        assert proc.returncode == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)
    access = [json.loads(line) for line in err.splitlines() if '"corsproxy.access"' in line]
    assert len(access) == 40
    assert len({line["pid"] for line in access}) == 2


async def test_metrics_memory_stays_flat_under_random_refusal_details(recorder: Recorder) -> None:
    """Refusal reasons carry the client's header name or method (`header_not_allowed:x-...`);
    the metrics keep only the bounded label, so random details add neither memory nor series."""
    admin = free_port()
    args = ("--listen", "127.0.0.1:0", "--upstream", recorder.url, "--allow-origin", APP,
            "--admin-listen", f"127.0.0.1:{admin}")  # fmt: skip
    proc, url = await asyncio.to_thread(start_cli, *args)
    assert proc.stderr is not None
    # Every refusal logs a line: drain them, or the pipe fills and the proxy blocks.
    drain = asyncio.create_task(asyncio.to_thread(proc.stderr.read))
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"

    async def send(client: aiohttp.ClientSession, count: int, seed: int) -> None:
        rng = random.Random(seed)
        for i in range(count):
            name = "x-" + "".join(rng.choices(alphabet, k=60))
            method = "M" + "".join(rng.choices(alphabet, k=30)).upper()
            headers = {"Origin": APP, "Access-Control-Request-Method": method if i % 2 else "GET",
                       "Access-Control-Request-Headers": name}  # fmt: skip
            async with client.options(f"{url}/x", headers=headers) as r:
                assert r.status == 403
                await r.read()

    async def burst(total: int, seed: int) -> None:
        async with aiohttp.ClientSession() as client:
            await asyncio.gather(*(send(client, total // 8, seed * 100 + n) for n in range(8)))

    try:
        await burst(4000, 1)  # warm-up: allocator arenas, caches, the decision memo
        before = rss_kib(proc.pid)
        await burst(40000, 2)
        growth = rss_kib(proc.pid) - before
        async with aiohttp.ClientSession() as client:
            async with client.get(f"http://127.0.0.1:{admin}/metrics") as r:
                text = await r.text()
        decisions = samples(text, "corsproxy_cors_decisions_total")
        assert len(decisions) <= 4, decisions  # label cardinality: bounded labels only
        assert sum(decisions.values()) == 44000
        print(f"RSS growth over 40,000 refusals: {growth} KiB")
        assert growth < 5 * 1024, f"RSS grew by {growth} KiB over 40,000 refusals"
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.to_thread(proc.wait, 20)
        await drain
        proc.stderr.close()
        assert proc.stdout is not None
        proc.stdout.close()


async def test_reason_codes_in_logs_metrics_and_bodies_are_byte_for_byte_the_interface(
    recorder: Recorder,
) -> None:
    """The typed reason renders as `code[:detail]` in the access log, as `code` in the
    metrics label and in words in the answer body, exactly as operators' alerts expect."""
    admin = free_port()
    args = ("--listen", "127.0.0.1:0", "--upstream", recorder.url, "--allow-origin", APP,
            "--admin-listen", f"127.0.0.1:{admin}")  # fmt: skip
    proc, url = await asyncio.to_thread(start_cli, *args)
    ws = {"Origin": "https://evil.example", "Connection": "Upgrade", "Upgrade": "websocket",
          "Sec-WebSocket-Version": "13",
          "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}  # fmt: skip
    try:
        async with aiohttp.ClientSession() as client:
            preflight = {"Origin": APP, "Access-Control-Request-Method": "PUT",
                         "Access-Control-Request-Headers": "X-A"}  # fmt: skip
            async with client.options(f"{url}/x", headers=preflight) as r:
                assert r.status == 403
                assert await r.text() == (
                    "CORS preflight refused: method 'PUT' not allowed; header 'x-a' not allowed\n"
                )
            async with client.get(f"{url}/ws", headers=ws) as r:
                assert r.status == 403
                assert await r.text() == "WebSocket refused: origin not allowed\n"
            async with client.get(f"{url}/plain") as r:
                assert r.status == 200
            async with client.get(f"http://127.0.0.1:{admin}/metrics") as r:
                text = await r.text()
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.to_thread(proc.communicate, timeout=20)
    access = [json.loads(line) for line in err.splitlines() if '"corsproxy.access"' in line]
    assert [(a["path"], a["cors"], a["reason"]) for a in access] == [
        ("/x", "refused", "method_not_allowed:PUT"),
        ("/ws", "refused", "websocket_origin_not_allowed"),
        ("/plain", "none", "no_origin"),
    ]
    decisions = samples(text, "corsproxy_cors_decisions_total")
    labels = '{{decision="refused",kind="{}",reason="{}",route="default"}}'
    assert decisions == {
        labels.format("preflight", "method_not_allowed"): 1,
        labels.format("actual", "websocket_origin_not_allowed"): 1,
    }


def test_the_text_access_log_prints_a_reason_as_its_code_string() -> None:
    record = logging.LogRecord("corsproxy.access", logging.WARNING, __file__, 1, "x", None, None)
    record.fields = {"reason": Reason(ReasonCode.HEADER_NOT_ALLOWED, "x-a"), "cors": "refused"}
    assert (
        _Formatter(False).format(record).endswith(" x reason=header_not_allowed:x-a cors=refused")
    )
    assert json.loads(_Formatter(True).format(record))["reason"] == "header_not_allowed:x-a"
