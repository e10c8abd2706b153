"""Smoke tests of the benchmark code (bench/run.py, bench/floors.py), so it cannot rot: the
floors answer real requests, the report and the targets table render from samples, the
markers of docs/performance.md are filled, and a `--quick` run of the aiohttp-floor works.
Never the full benchmark, and no figure is asserted (`-m bench` runs these alone)."""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.net import ROOT, TIMEOUT, free_port

sys.path.insert(0, str(ROOT / "bench"))

import floors
import run

pytestmark = pytest.mark.bench


@contextlib.contextmanager
def floor_server(*args: str) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "floors.py"), args[0], str(port), *args[1:]],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + TIMEOUT
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"{args[0]} did not start: {proc.communicate()}")
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert time.monotonic() < deadline, "the floor did not answer"
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            _, err = proc.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise AssertionError("the floor did not stop on SIGTERM") from None
    assert proc.returncode == 0, err
    assert "Traceback" not in err, err


def test_the_aiohttp_floor_answers_a_preflight_with_the_nginx_contenders_headers() -> None:
    with floor_server("aiohttp-floor") as url:
        request = urllib.request.Request(
            f"{url}/small.json",
            method="OPTIONS",
            headers={"Origin": floors.ORIGIN, "Access-Control-Request-Method": "PUT"},
        )
        with urllib.request.urlopen(request, timeout=TIMEOUT) as answer:
            assert answer.status == 204
            for name, value in floors.PREFLIGHT_HEADERS.items():
                assert answer.headers[name] == value
    # The same five headers as the nginx + CORS contender's preflight.
    block = run.nginx_cors_block(1, 2)
    for name, value in floors.PREFLIGHT_HEADERS.items():
        wanted = "$cors" if name == "Access-Control-Allow-Origin" else f'"{value}"'
        if name == "Access-Control-Max-Age":
            wanted = value
        assert f"add_header {name} {wanted} always;" in block, name
    assert floors.ORIGIN == run.ORIGIN


class Upstream(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    big = os.urandom(2**20)

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.big)))
        self.send_header("X-Upstream", "yes")
        self.end_headers()
        self.wfile.write(self.big)

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        digest = hashlib.sha256(body).hexdigest().encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(digest)))
        self.end_headers()
        self.wfile.write(digest)

    def log_message(self, *args: object) -> None:
        pass


@contextlib.contextmanager
def upstream() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(TIMEOUT)


def test_the_relay_floor_streams_bodies_both_ways_through_the_upstream_client() -> None:
    with upstream() as up, floor_server("aiohttp-relay-floor", str(up)) as url:
        for _ in range(3):  # the pooled connection is reused
            with urllib.request.urlopen(f"{url}/big.bin", timeout=TIMEOUT) as answer:
                assert answer.status == 200
                assert answer.headers["X-Upstream"] == "yes"
                assert answer.read() == Upstream.big
        # A client that goes away mid-answer and one mid-body, as wrk's at the end of a run:
        # no traceback (checked as the floor stops), and the next request is answered.
        port = int(url.rsplit(":", 1)[1])
        for request in (
            b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n",
            b"POST /post HTTP/1.1\r\nHost: x\r\nContent-Length: 4096\r\n\r\nabc",
        ):
            with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
                sock.sendall(request)
                if request.startswith(b"GET"):
                    sock.recv(1000)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
            time.sleep(0.3)
        body = os.urandom(4096)
        request = urllib.request.Request(f"{url}/post", data=body, method="POST")
        with urllib.request.urlopen(request, timeout=TIMEOUT) as answer:
            assert answer.read().decode() == hashlib.sha256(body).hexdigest()


def sample(rps: float, cpu_us: float, *, mb_s: float = 1.0, p99: float = 2.0) -> run.Sample:
    requests = int(rps * 5)
    return run.Sample(
        requests=requests, seconds=5, rps=rps, p50_ms=1.0, p99_ms=p99, mb_s=mb_s,
        cpu_s=cpu_us * requests / 1e6, rss_mib=40.0, rss_peak_mib=45.0, upstream_share=0.1,
    )  # fmt: skip


def fake_results() -> run.Results:
    """Three rounds; corsproxy meets some targets and misses others, on purpose."""
    results = run.Results()
    for _ in range(3):
        add = results.samples.setdefault
        add(("small GET", run.INSTALLED), []).append(sample(10_000, 100, p99=12.0))
        add(("small GET", run.LOG_OFF), []).append(sample(11_000, 95))
        add(("small GET", run.CA_KEEPALIVE), []).append(sample(8_000, 130))
        add(("small GET", run.RELAY_FLOOR), []).append(sample(20_000, 50))
        add(("preflight", run.INSTALLED), []).append(sample(15_000, 40))
        add(("preflight", run.LOG_OFF), []).append(sample(16_000, 30))
        add(("preflight", run.FLOOR), []).append(sample(30_000, 25))
        add(("1 MiB GET", run.INSTALLED), []).append(sample(500, 1000, mb_s=500))
        add(("1 MiB GET", run.NGINX_CORS), []).append(sample(1000, 300, mb_s=1000))
        results.rest_mib.setdefault(run.INSTALLED, []).append(38.0)
    results.idle = {"count": 10_000, "rss_before": 40.0, "rss_after": 90.0}
    return results


def test_the_targets_are_computed_from_the_samples_as_per_round_ratios() -> None:
    rows = {row.what: row for row in run.targets(fake_results())}
    access = rows["access line cost: small GET CPU per request, default settings / access log off"]
    assert (access.measured, access.met) == ("1.05x", True)  # 100 / 95
    preflight = rows["preflight CPU per request vs aiohttp-floor (default settings)"]
    assert (preflight.measured, preflight.met) == ("1.60x", False)  # 40 / 25
    per_cpu = rows["small GET req/s per CPU vs cors-anywhere + keep-alive (default settings)"]
    assert (per_cpu.measured, per_cpu.met) == ("1.30x", False)  # 10,000 / 7,692
    relay = rows["small GET CPU per request vs aiohttp-relay-floor (default settings)"]
    assert (relay.measured, relay.target, relay.met) == ("2.00x", "-", None)  # shown only
    mib = rows["1 MiB GET MB/s per CPU vs nginx + CORS (default settings)"]
    assert (mib.measured, mib.met) == ("0.30x", False)  # (500/1) / (1000/0.3)
    assert (rows["RSS at rest, 1 worker"].measured, rows["RSS at rest, 1 worker"].met) == (
        "38.0 MiB",
        True,
    )
    peak = rows["RSS peak during 50 concurrent 1 MiB answers, 1 worker"]
    assert (peak.measured, peak.met) == ("45.0 MiB", True)
    idle = rows["RSS added by 10,000 idle keep-alive connections"]
    assert (idle.measured, idle.met) == ("50.0 MiB", True)
    off = rows["preflight CPU per request vs aiohttp-floor (access log off)"]
    assert (off.measured, off.target, off.met) == ("1.20x", "-", None)
    p99 = rows["p99 small GET at 50 connections (default settings)"]
    assert (p99.measured, p99.met) == ("12.0 ms", False)
    # Nothing measured: every row says so, none is met or missed.
    empty = run.targets(run.Results())
    assert {(row.measured, row.met) for row in empty} == {("not measured", None)}


def test_the_report_renders_and_fills_the_markers(tmp_path: Path) -> None:
    names = [run.INSTALLED, run.LOG_OFF, run.CA_KEEPALIVE, run.RELAY_FLOOR, run.FLOOR,
             run.NGINX_CORS]  # fmt: skip
    report = run.render(fake_results(), names, 3, 5)
    assert "### Targets (issue 16)" in report
    assert "| access line cost: small GET CPU per request, default settings / access log off " \
        "| ≤ 1.10x | 1.05x | yes |" in report  # fmt: skip
    assert "| p99 small GET at 50 connections (default settings) | < 10 ms | 12.0 ms | **no** |" \
        in report  # fmt: skip
    for workload in ("small GET", "preflight", "1 MiB GET"):
        assert f"### {workload}" in report
    assert "### POST 4 KiB" not in report  # nothing measured
    # req/s per CPU: 10,000 per 0.1 CPU-second per 1,000 requests = 10,000.
    assert f"| {run.INSTALLED} | 10,000 | 1.00 | 12.00 | 1.0 | 100 | 10,000 |" in report
    assert "10,000 idle keep-alive connections" in report
    doc = tmp_path / "performance.md"
    doc.write_text("# P\n\n<!-- bench:start -->\nold\n<!-- bench:end -->\n\nafter\n")
    run.write_doc(doc, report)
    text = doc.read_text()
    assert "old" not in text and report in text and text.endswith("after\n")


def test_quick_and_only_are_read() -> None:
    args = run.parse_args(["--quick", "--only", "floor"])
    assert (args.rounds, args.seconds, args.only) == (1, 2, ["floor"])
    assert (run.parse_args([]).rounds, run.parse_args([]).seconds) == (3, 5)


@pytest.mark.skipif(
    not (shutil.which("wrk") and (shutil.which("nginx") or Path("/usr/sbin/nginx").exists())),
    reason="wrk and nginx run the benchmark (.ci/run installs them)",
)
def test_a_quick_run_of_the_aiohttp_floor_reports_it() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--quick", "--no-install",
         "--only", "aiohttp-floor"],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "round 1: aiohttp-floor done" in done.stderr
    assert "### Targets (issue 16)" in done.stdout
    assert f"| {run.FLOOR} |" in done.stdout.split("### preflight")[1]
