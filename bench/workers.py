"""What `--workers 2` gains on this machine: corsproxy with 1 and 2 workers, side by side.

Upstream: nginx (one worker) serving a small JSON. The reference in the same run is wrk
straight to nginx (the ceiling). Rounds alternate 1 and 2 workers (A B A B ...); each figure is
the median of the rounds, and the ratio is taken per round, then the median.

    python bench/workers.py [--rounds 3] [--seconds 8]

Installs nginx and wrk from Debian when missing. Loopback only; every run is bounded.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ORIGIN = "https://app.example.com"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise SystemExit(f"nothing listening on {port}")


def ensure_tools() -> None:
    missing = [
        t for t in ("nginx", "wrk") if not shutil.which(t) and not Path(f"/usr/sbin/{t}").exists()
    ]
    if missing:
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=True,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})  # fmt: skip


def start_nginx(workdir: Path, port: int) -> subprocess.Popen[bytes]:
    (workdir / "www").mkdir()
    (workdir / "www" / "small.json").write_text('{"id": 1, "name": "' + "x" * 160 + '"}\n')
    conf = workdir / "nginx.conf"
    conf.write_text(f"""
worker_processes 1;
error_log {workdir}/error.log;
pid {workdir}/nginx.pid;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  keepalive_requests 100000;
  server {{
    listen 127.0.0.1:{port};
    root {workdir}/www;
  }}
}}
""")
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    proc = subprocess.Popen([nginx, "-c", str(conf), "-p", str(workdir), "-g", "daemon off;"])
    wait_port(port)
    return proc


def wrk(url: str, seconds: int) -> float:
    out = subprocess.run(
        ["wrk", "-t2", "-c50", f"-d{seconds}s", "-H", f"Origin: {ORIGIN}", url],
        capture_output=True, text=True, check=True, timeout=seconds + 30,
    ).stdout  # fmt: skip
    match = re.search(r"Requests/sec:\s+([0-9.]+)", out)
    assert match, out
    return float(match.group(1))


def corsproxy(workers: int, upstream: int, port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "corsproxy", "serve", "--listen", f"127.0.0.1:{port}",
         "--upstream", f"http://127.0.0.1:{upstream}", "--allow-origin", ORIGIN,
         "--workers", str(workers), "--log-format", "json"],
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    wait_port(port)
    time.sleep(1.0)  # every worker bound
    return proc


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=8)
    args = parser.parse_args()
    ensure_tools()
    results: dict[str, list[float]] = {"nginx direct": [], "1 worker": [], "2 workers": []}
    with tempfile.TemporaryDirectory() as tmp:
        upstream = free_port()
        nginx = start_nginx(Path(tmp), upstream)
        try:
            for _ in range(args.rounds):
                results["nginx direct"].append(
                    wrk(f"http://127.0.0.1:{upstream}/small.json", args.seconds)
                )
                for workers in (1, 2):
                    port = free_port()
                    proc = corsproxy(workers, upstream, port)
                    try:
                        url = f"http://127.0.0.1:{port}/small.json"
                        wrk(url, 2)  # warm-up
                        results[f"{workers} worker{'s' if workers > 1 else ''}"].append(
                            wrk(url, args.seconds)
                        )
                    finally:
                        proc.terminate()
                        proc.wait(30)
        finally:
            nginx.terminate()
            nginx.wait(10)
    ratios = [b / a for a, b in zip(results["1 worker"], results["2 workers"], strict=True)]
    print(f"machine: {os.cpu_count()} CPUs, {args.rounds} rounds of {args.seconds} s, wrk -t2 -c50")
    print("| contender | req/s (median) | rounds |")
    print("|---|---|---|")
    for name, values in results.items():
        rounds = ", ".join(f"{v:,.0f}" for v in values)
        print(f"| {name} | {statistics.median(values):,.0f} | {rounds} |")
    print(f"2 workers / 1 worker, median of per-round ratios: {statistics.median(ratios):.2f}x")


if __name__ == "__main__":
    main()
