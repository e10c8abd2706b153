"""Connections: the throughput curve from 10 to 1,000 connections, and 10,000 idle ones.

    python bench/connections.py [--seconds 5] [--idle 10000] [--write docs/performance.md]

One corsproxy worker in front of nginx (as in bench/run.py). The curve: wrk at 10, 50, 100,
250, 500 and 1,000 connections on a small GET. Idle: 10,000 keep-alive connections that each
made one request and then stay open; the proxy's RSS before and after, and a wrk run at 50
connections with and without them (they must not slow the active ones).
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import (  # the helpers of the main benchmark
    ORIGIN,
    ROOT,
    ensure_tools,
    free_port,
    lua_script,
    nginx,
    rss_mib,
    run_wrk,
    upstream_block,
    wait_port,
    write_doc,
)

CURVE = (10, 50, 100, 250, 500, 1000)


def wrk_at(url: str, script: Path, connections: int, seconds: int) -> tuple[float, float, float]:
    out = subprocess.run(
        ["taskset", "-c", "1", "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency",
         "-s", str(script), url],
        capture_output=True, text=True, check=True, timeout=seconds + 60,
    ).stdout  # fmt: skip
    try:
        return _parse(out)
    except AttributeError:
        raise SystemExit(f"cannot read wrk's output at {connections} connections:\n{out}") from None


def _parse(out: str) -> tuple[float, float, float]:
    import re

    from run import parse_duration

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = parse_duration(re.search(r"^\s+50%\s+(\S+)\s*$", out, re.M).group(1))  # type: ignore[union-attr]
    p99 = parse_duration(re.search(r"^\s+99%\s+(\S+)\s*$", out, re.M).group(1))  # type: ignore[union-attr]
    return rps, p50, p99


async def open_idle(port: int, count: int) -> list[asyncio.StreamWriter]:
    """`count` connections that each made one request and now sit idle (keep-alive)."""
    request = f"GET /small.json HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: {ORIGIN}\r\n\r\n".encode()

    async def one() -> asyncio.StreamWriter:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
        await reader.readexactly(length)
        return writer

    writers: list[asyncio.StreamWriter] = []
    for start in range(0, count, 100):  # batches: the accept backlog is 128
        writers += await asyncio.gather(*(one() for _ in range(min(100, count - start))))
    return writers


async def idle_test(
    url: str, script: Path, port: int, pid: int, count: int, seconds: int
) -> dict[str, float]:
    before = rss_mib(pid)
    rps0, _, p99_0 = await asyncio.to_thread(wrk_at, url, script, 50, seconds)
    writers = await open_idle(port, count)
    after = rss_mib(pid)
    rps1, _, p99_1 = await asyncio.to_thread(wrk_at, url, script, 50, seconds)
    for writer in writers:
        writer.close()
    return {"rss_before": before, "rss_after": after, "rps_without": rps0, "p99_without": p99_0,
            "rps_with": rps1, "p99_with": p99_1}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--idle", type=int, default=10_000)
    parser.add_argument("--write", type=Path)
    args = parser.parse_args()
    ensure_tools()
    work = Path(tempfile.mkdtemp(prefix="corsproxy-conns-"))
    work.chmod(0o755)
    up_port, port = free_port(), free_port()
    upstream = nginx(work, "upstream", upstream_block(work, up_port))
    wait_port(up_port)
    policy = work / "corsproxy.yaml"
    policy.write_text(f"upstream: http://127.0.0.1:{up_port}\ncors:\n  allow_origins: [{ORIGIN}]\n")
    proxy = subprocess.Popen(
        [sys.executable, "-m", "corsproxy", "serve", "--config", str(policy), "--listen",
         f"127.0.0.1:{port}", "--log-format", "json", "--log-level", "warning"],
        stderr=subprocess.DEVNULL, cwd=ROOT,
    )  # fmt: skip
    try:
        wait_port(port)
        url = f"http://127.0.0.1:{port}/small.json"
        script = lua_script(work, "get", "GET", {}, None)
        run_wrk(url, script, 1)
        curve = [(c, *wrk_at(url, script, c, args.seconds)) for c in CURVE]
        idle = asyncio.run(idle_test(url, script, port, proxy.pid, args.idle, args.seconds))
    finally:
        proxy.terminate()
        proxy.wait(30)
        upstream.terminate()
        upstream.wait(10)
    lines = ["| connections | req/s | p50 ms | p99 ms |", "|---|---|---|---|"]
    lines += [f"| {c} | {rps:,.0f} | {p50:.2f} | {p99:.2f} |" for c, rps, p50, p99 in curve]
    lines += [
        "",
        f"With {args.idle:,} idle keep-alive connections open: proxy RSS "
        f"{idle['rss_before']:.0f} MiB before, {idle['rss_after']:.0f} MiB with them "
        f"(+{idle['rss_after'] - idle['rss_before']:.0f} MiB); 50 active connections "
        f"{idle['rps_without']:,.0f} req/s (p99 {idle['p99_without']:.1f} ms) without them, "
        f"{idle['rps_with']:,.0f} req/s (p99 {idle['p99_with']:.1f} ms) with them.",
    ]
    report = "\n".join(lines)
    print(report)
    if args.write:
        write_doc(args.write, report, marker="connections")


if __name__ == "__main__":
    main()
