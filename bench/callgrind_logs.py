"""The access line's cost in instructions: callgrind counts for a fixed number of requests.

    python bench/callgrind_logs.py [--base REV] [--requests 2000] [--workload get ...]

Deterministic where bench/ab.py's CPU times are noisy (issue 16): corsproxy runs under
`valgrind --tool=callgrind` (every thread counted, the writer thread's too), once with access
logs at the default settings (info, JSON lines to a pipe another process drains) and once with
`--log-level warning`. After a warm-up the counters are zeroed (`callgrind_control -z`), a
client outside valgrind sends exactly `--requests` requests over `--connections` keep-alive
connections, and the counters are dumped: instructions per request, on / off, with start-up
and warm-up excluded. `--base REV` measures another revision (a temporary git worktree, run on
this tree's interpreter and packages).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run  # bench/run.py: the upstream and the ports

REQUESTS = {
    "get": "GET /small.json HTTP/1.1\r\nHost: x\r\nOrigin: {origin}\r\n\r\n",
    "preflight": (
        "OPTIONS /small.json HTTP/1.1\r\nHost: x\r\nOrigin: {origin}\r\n"
        "Access-Control-Request-Method: PUT\r\n"
        "Access-Control-Request-Headers: content-type,x-token\r\n\r\n"
    ),
}


async def one_connection(port: int, request: bytes, count: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for _ in range(count):
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith((b"HTTP/1.1 200", b"HTTP/1.1 204")):
            raise SystemExit(f"unexpected answer: {head[:200]!r}")
        found = re.search(rb"\r\ncontent-length: *(\d+)", head, re.I)
        if found:
            await reader.readexactly(int(found.group(1)))
    writer.close()


async def load(port: int, workload: str, total: int, connections: int) -> None:
    request = REQUESTS[workload].format(origin=run.ORIGIN).encode()
    share = [total // connections + (i < total % connections) for i in range(connections)]
    await asyncio.gather(*(one_connection(port, request, n) for n in share))


def measure(tree: Path, policy: Path, work: Path, on: bool, args: argparse.Namespace) -> float:
    port = run.free_port()
    name = f"{'on' if on else 'off'}-{args.workload_now}"
    out = work / f"cg.{name}"
    command = [
        "valgrind",
        "--tool=callgrind",
        f"--callgrind-out-file={out}.%p",
        "--dump-instr=no",
        "--separate-threads=no",
        sys.executable,
        "-m",
        "corsproxy",
        "serve",
        "--config",
        str(policy),
        "--listen",
        f"127.0.0.1:{port}",
    ]
    if not on:
        command += ["--log-level", "warning"]
    env = {**os.environ, "PYTHONPATH": str(tree)}
    drain = None
    if on:  # stderr a pipe another process drains, as a log collector would
        drain = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
        stderr = drain.stdin
    else:
        stderr = (work / f"{name}.log").open("ab")
    proc = subprocess.Popen(command, cwd=tree, env=env, stderr=stderr)
    try:
        for _ in range(600):  # start-up under valgrind: a minute or two
            if proc.poll() is not None:
                raise SystemExit(f"corsproxy exited at start-up ({name}); see {work}")
            try:
                run.wait_port(port, timeout=0.5)
                break
            except SystemExit:
                continue
        asyncio.run(load(port, args.workload_now, args.warmup, args.connections))
        subprocess.run(["callgrind_control", "-z", str(proc.pid)], capture_output=True, check=True)
        asyncio.run(load(port, args.workload_now, args.requests, args.connections))
        time.sleep(0.5)  # the writer thread's last batch (it lingers 10 ms)
        for dump in work.glob(f"cg.{name}.*"):
            dump.unlink()
        subprocess.run(["callgrind_control", "-d", str(proc.pid)], capture_output=True, check=True)
        total = 0
        for _ in range(100):
            dumps = list(work.glob(f"cg.{name}.*"))
            if dumps and (total := sum(_totals(d) for d in dumps)):
                break
            time.sleep(0.2)
        return total / args.requests
    finally:
        proc.terminate()
        proc.wait()
        if drain is not None:
            assert drain.stdin is not None
            drain.stdin.close()
            drain.wait()


def _totals(dump: Path) -> int:
    text = dump.read_text(errors="replace")
    found = re.search(r"^totals: (\d+)", text, re.M) or re.search(r"^summary: (\d+)", text, re.M)
    return int(found.group(1)) if found else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", help="the revision to measure (default: this tree)")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--workload", action="append", choices=list(REQUESTS))
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="corsproxy-cg-"))
    work.chmod(0o755)  # nginx's workers run as nobody and must read the files
    tree = run.ROOT
    git = ["git", "-C", str(run.ROOT), "worktree"]
    if args.base:
        tree = work / "base"
        subprocess.run([*git, "add", "-q", "--detach", str(tree), args.base], check=True)
    up_port = run.free_port()
    upstream = run.nginx(work, "upstream", run.upstream_block(work, up_port))
    try:
        run.wait_port(up_port)
        policy = work / "corsproxy.yaml"
        policy.write_text(
            f"upstream: http://127.0.0.1:{up_port}\n"
            f"cors:\n  allow_origins: [{run.ORIGIN}]\n  allow_methods: [GET, HEAD, POST, PUT]\n"
            "  allow_headers: [Content-Type, X-Token]\n  max_age: 600\n"
        )
        print(f"{args.base or 'this tree'}: instructions per request (callgrind, all threads)")
        for workload in args.workload or ["get", "preflight"]:
            args.workload_now = workload
            off = measure(tree, policy, work, False, args)
            on = measure(tree, policy, work, True, args)
            print(
                f"{workload:>9}: off {off:10,.0f}  on {on:10,.0f}  +{on - off:8,.0f}"
                f"  ratio {on / off:.3f}",
                flush=True,
            )
    finally:
        upstream.terminate()
        upstream.wait()
        if args.base:
            subprocess.run([*git, "remove", "--force", str(tree)], check=False)


if __name__ == "__main__":
    main()
