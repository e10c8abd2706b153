"""Paired A/B: this tree's corsproxy against another revision's, both serving at once.

    python bench/ab.py --base 5ac7dea [--rounds 10] [--seconds 4] [--workload get ...]

For a change's own cost, where bench/run.py's rounds (one contender after the other) drown in
the noise of a shared machine: each round starts both revisions, loads them at the same time
with two wrk processes (25 connections each) through the same upstream nginx, and takes each
one's CPU time per request from /proc. Both see the same neighbours, so the per-round ratio
(this / base) is far steadier than either figure alone; the report is the median ratio with
its spread. The base revision is checked out into a temporary git worktree and runs on this
tree's interpreter and packages (`PYTHONPATH`), so no second install is needed. Start order
alternates between rounds. Access logs are off (warning level), as in bench/run.py.

    python bench/ab.py --pair logs [--base REV] [--rounds 10] [--workload get ...]

The access line's own cost (issue 16): one revision (this tree, or `--base REV`) twice at
once, access logs on at the default settings (info, JSON lines to a pipe a reader drains)
against off (`--log-level warning`); ratio = on / off.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run  # bench/run.py: the upstream, wrk and the ports

PATHS = {"get": "/small.json", "preflight": "/small.json", "1mib": "/big.bin", "post": "/post"}


def wrk_args(workload: str, work: Path) -> list[str]:
    if workload == "preflight":
        (work / "options.lua").write_text('wrk.method = "OPTIONS"\n')
        return [
            "-H",
            "Access-Control-Request-Method: PUT",
            "-H",
            "Access-Control-Request-Headers: content-type,x-token",
            "-s",
            str(work / "options.lua"),
        ]
    if workload == "post":
        (work / "post.lua").write_text(
            'wrk.method = "POST"\nwrk.body = string.rep("x", 4096)\n'
            'wrk.headers["Content-Type"] = "text/plain"\n'
        )
        return ["-s", str(work / "post.lua")]
    return []


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / run.TICK


def start(tree: Path, policy: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    command = [sys.executable, "-m", "corsproxy", "serve", "--config", str(policy)]
    command += ["--listen", f"127.0.0.1:{port}"]
    if log.stem.endswith("logs-on"):  # --pair logs: the default level, JSON lines to a pipe
        proc = subprocess.Popen(command, cwd=tree, env=env, stderr=subprocess.PIPE)
        threading.Thread(target=drain, args=(proc,), daemon=True).start()
        return proc
    command += ["--log-level", "warning"]
    with log.open("ab") as stderr:  # the child keeps its own descriptor
        return subprocess.Popen(command, cwd=tree, env=env, stderr=stderr)


def drain(proc: subprocess.Popen[bytes]) -> None:
    """Read a proxy's stderr pipe as a log collector would, discarding it."""
    assert proc.stderr is not None
    while proc.stderr.read1(1 << 16):  # type: ignore[attr-defined]
        pass


def measure(
    trees: dict[str, Path], policy: Path, workload: str, work: Path, seconds: int, order: int
) -> dict[str, float]:
    extra = wrk_args(workload, work)
    header = ["-H", f"Origin: {run.ORIGIN}"]
    names = list(trees) if order % 2 == 0 else list(reversed(trees))
    procs = {
        name: (start(trees[name], policy, port := run.free_port(), work / f"{name}.log"), port)
        for name in names
    }
    try:
        for name, (_, port) in procs.items():
            try:
                run.wait_port(port)
            except SystemExit:
                raise SystemExit(f"{name} did not start; see {work / name}.log") from None
            url = f"http://127.0.0.1:{port}{PATHS[workload]}"
            subprocess.run(
                ["wrk", "-t1", "-c25", "-d1s", *header, *extra, url], capture_output=True
            )
        before = {name: cpu_seconds(proc.pid) for name, (proc, _) in procs.items()}
        loads = {
            name: subprocess.Popen(
                [
                    *["wrk", "-t1", "-c25", f"-d{seconds}s", *header, *extra],
                    f"http://127.0.0.1:{port}{PATHS[workload]}",
                ],
                stdout=subprocess.PIPE,
                text=True,
            )
            for name, (_, port) in procs.items()
        }
        outputs = {name: load.communicate()[0] for name, load in loads.items()}
        result = {}
        for name, (proc, _) in procs.items():
            found = re.search(r"(\d+) requests in", outputs[name])
            if found is None or "Non-2xx" in outputs[name]:
                raise SystemExit(f"{name}: wrk failed or saw errors:\n{outputs[name]}")
            result[name] = (cpu_seconds(proc.pid) - before[name]) / int(found.group(1)) * 1e6
        return result
    finally:
        for proc, _ in procs.values():
            proc.terminate()
            proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", help="the revision to compare with (--pair logs: to measure)")
    parser.add_argument(
        "--pair", choices=["revisions", "logs"], default="revisions",
        help="logs: one revision, access logs on (default settings) against off",
    )  # fmt: skip
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--seconds", type=int, default=4)
    parser.add_argument("--workload", action="append", choices=list(PATHS))
    args = parser.parse_args()
    if args.pair == "revisions" and not args.base:
        parser.error("--base is required (unless --pair logs)")
    run.ensure_tools()
    work = Path(tempfile.mkdtemp(prefix="corsproxy-ab-"))
    work.chmod(0o755)  # nginx's workers run as nobody and must read the files
    base = work / "base"
    git = ["git", "-C", str(run.ROOT), "worktree"]
    if args.base:
        subprocess.run([*git, "add", "-q", "--detach", str(base), args.base], check=True)
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
        if args.pair == "logs":
            tree = base if args.base else run.ROOT
            trees = {"logs-off": tree, "logs-on": tree}
            a, b = "logs-off", "logs-on"
            print(f"{args.base or 'this tree'}: access logs on / off; CPU µs per request")
        else:
            trees = {"base": base, "this": run.ROOT}
            a, b = "base", "this"
            print(f"{args.base} (base) against this tree; CPU µs per request; ratio = this / base")
        for workload in args.workload or ["get", "preflight", "1mib"]:
            figures: dict[str, list[float]] = {a: [], b: []}
            ratios = []
            for order in range(args.rounds):
                result = measure(trees, policy, workload, work, args.seconds, order)
                for name, value in result.items():
                    figures[name].append(value)
                ratios.append(result[b] / result[a])
            print(
                f"{workload:>9}: {a} {statistics.median(figures[a]):8.1f}"
                f"  {b} {statistics.median(figures[b]):8.1f}"
                f"  ratio {statistics.median(ratios):.3f}"
                f" (rounds {min(ratios):.2f}-{max(ratios):.2f})",
                flush=True,
            )
    finally:
        upstream.terminate()
        upstream.wait()
        if args.base:
            subprocess.run([*git, "remove", "--force", str(base)], check=False)


if __name__ == "__main__":
    main()
