"""Streaming and memory (issue 16): CPU per MiB and RSS of one corsproxy worker on 1 MiB answers.

    python bench/streaming.py [--seconds 4] [--rounds 3] [--idle 10000] [--no-uvloop]
                              [--tree PATH] [--env NAME=VALUE ...]

One corsproxy worker (access logs off) in front of nginx serving a 1 MiB file, as in
bench/run.py, and nginx as a CORS proxy beside it as the anchor. Each round: wrk -c50 on
/big.bin for `--seconds`, the proxy's CPU µs per MiB delivered (from /proc, not MB/s), the
same for nginx + CORS, and the proxy's RSS sampled every 50 ms during the run (the peak is
reported). Then RSS at rest (after the load, 2 s later), and with `--idle` keep-alive
connections that each made one small request and stay open (bench/connections.py's).
`--tree` runs another checkout's corsproxy (PYTHONPATH), for a before/after on the same
interpreter; `--env` sets variables for the proxy (e.g. MALLOC_ARENA_MAX=2).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from connections import open_idle  # the idle keep-alive connections
from run import (  # the helpers of the main benchmark
    ORIGIN,
    ROOT,
    cpu_seconds,
    ensure_tools,
    free_port,
    nginx,
    nginx_cors_block,
    rss_mib,
    upstream_block,
    wait_port,
)


def wrk(url: str, seconds: int, connections: int = 50) -> tuple[int, float]:
    """Requests and MiB delivered."""
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s",
         "-H", f"Origin: {ORIGIN}", url],
        capture_output=True, text=True, check=True, timeout=seconds + 60,
    ).stdout  # fmt: skip
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    if "Non-2xx" in out:
        raise SystemExit(f"wrk saw errors:\n{out}")
    return requests, requests * 1.0  # each answer is 1 MiB


def load(pid: int, url: str, seconds: int) -> tuple[float, float]:
    """CPU µs per MiB and the peak RSS (MiB) sampled during the run."""
    peak = 0.0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, rss_mib(pid))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample)
    before = cpu_seconds(pid)
    sampler.start()
    try:
        _, mib = wrk(url, seconds)
    finally:
        done.set()
        sampler.join()
    return (cpu_seconds(pid) - before) / mib * 1e6, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--idle", type=int, default=10_000)
    parser.add_argument("--no-uvloop", action="store_true")
    parser.add_argument("--tree", type=Path, default=ROOT)
    parser.add_argument("--env", action="append", default=[])
    args = parser.parse_args()
    ensure_tools()
    work = Path(tempfile.mkdtemp(prefix="corsproxy-stream-"))
    work.chmod(0o755)  # nginx's workers run as nobody and must read the files
    up_port, port, cors_port = free_port(), free_port(), free_port()
    upstream = nginx(work, "upstream", upstream_block(work, up_port))
    anchor = nginx(work, "cors", nginx_cors_block(cors_port, up_port))
    policy = work / "corsproxy.yaml"
    policy.write_text(f"upstream: http://127.0.0.1:{up_port}\ncors:\n  allow_origins: [{ORIGIN}]\n")
    env = {**os.environ, "PYTHONPATH": str(args.tree.resolve())}
    env.update(item.split("=", 1) for item in args.env)
    command = [sys.executable, "-m", "corsproxy", "serve", "--config", str(policy), "--listen",
               f"127.0.0.1:{port}", "--log-level", "warning"]  # fmt: skip
    if args.no_uvloop:
        command.append("--no-uvloop")
    proxy = subprocess.Popen(command, stderr=subprocess.DEVNULL, cwd=args.tree, env=env)
    try:
        for p in (up_port, port, cors_port):
            wait_port(p)
        url = f"http://127.0.0.1:{port}/big.bin"
        anchor_url = f"http://127.0.0.1:{cors_port}/big.bin"
        wrk(url, 1)  # warm up: the upstream pool, the allocator's arenas
        time.sleep(1)
        rest_before = rss_mib(proxy.pid)
        cpu, peaks, anchor_cpu = [], [], []
        anchor_pid = int((work / "cors.pid").read_text())
        for _ in range(args.rounds):
            per_mib, peak = load(proxy.pid, url, args.seconds)
            cpu.append(per_mib)
            peaks.append(peak)
            anchor_cpu.append(load(anchor_pid, anchor_url, args.seconds)[0])
        time.sleep(2)
        rest_after = rss_mib(proxy.pid)
        idle_before = rss_mib(proxy.pid)
        idle_after = idle_before
        if args.idle:

            async def idle() -> float:
                writers = await open_idle(port, args.idle)
                await asyncio.sleep(1)
                rss = rss_mib(proxy.pid)
                for writer in writers:
                    writer.close()
                return rss

            idle_after = asyncio.run(idle())
    finally:
        proxy.terminate()
        proxy.wait(30)
        anchor.terminate()
        upstream.terminate()
        anchor.wait(10)
        upstream.wait(10)
    ratio = statistics.median(a / c for a, c in zip(anchor_cpu, cpu, strict=True))
    print(
        f"1 MiB, wrk -c50: corsproxy {statistics.median(cpu):,.0f} µs CPU per MiB "
        f"(rounds {min(cpu):,.0f}-{max(cpu):,.0f}), nginx + CORS "
        f"{statistics.median(anchor_cpu):,.0f}; MB/s per CPU vs nginx {ratio:.2f}x\n"
        f"RSS: {rest_before:.1f} MiB at rest before, peak {max(peaks):.1f} MiB with 50 streams "
        f"(rounds {', '.join(f'{p:.1f}' for p in peaks)}), {rest_after:.1f} MiB at rest after\n"
        f"{args.idle:,} idle keep-alive connections: {idle_before:.1f} -> {idle_after:.1f} MiB "
        f"(+{idle_after - idle_before:.1f} MiB, "
        f"{(idle_after - idle_before) * 2**20 / max(args.idle, 1):,.0f} bytes each)"
    )


if __name__ == "__main__":
    main()
