"""Chaos soak: `serve --workers 2` under steady load while workers are killed.

    python bench/chaos.py [--seconds 180] [--kill-every 5] [--rate 300] [--write docs/hardening.md]

Keep-alive clients send small GETs at a fixed rate, each with its own X-Request-Id, through
two workers to a small aiohttp upstream. Every few seconds the script kills a random ready
worker with SIGKILL (what the OOM killer sends), sends SIGHUP between kills (alternating two
valid policies), and restarts the upstream once, half-way. Afterwards it matches the clients'
errors against the workers' access logs: a request that got no answer must have been on a
connection of the killed worker (its earlier answers carry that worker's pid) or, on a fresh
connection, in the kill's second (connections waiting in the dead worker's accept queue are
reset with it); a 5xx must fall in the upstream's restart. It reports sent, answered and
failed, how fast each worker was replaced, RSS and fds of the supervisor and of the workers,
and exits non-zero when a check fails.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGE = os.sysconf("SC_PAGE_SIZE")
ORIGIN = "https://app.example.com"
RNG = random.Random()  # noqa: S311 - chaos, not secrets
UPSTREAM = """
import asyncio, sys
from aiohttp import web
async def handle(request):
    await asyncio.sleep(int(request.query.get("ms", "0")) / 1000)
    return web.json_response({"ok": True, "pad": "x" * 150})
app = web.Application()
app.router.add_get("/{tail:.*}", handle)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
"""
POLICY = """listen: 127.0.0.1:{port}
upstream: http://127.0.0.1:{up}
admin: {{listen: "127.0.0.1:{admin}"}}
workers_timeout: 10s
cors:
  allow_origins: [{origin}]
  max_age: {max_age}
"""


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def children(pid: int) -> set[int]:
    try:
        return {int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}
    except OSError:
        return set()


def rss_fds(pid: int) -> tuple[float, int]:
    try:
        rss = int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE / 2**20
        return rss, len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0.0, 0


@dataclass
class Outcome:
    conn: int
    fresh: bool  # the first request on its connection
    start: float
    end: float
    status: int = 0  # 0: no answer


@dataclass
class Log:
    """The proxy's JSON log lines, read as they come."""

    path: Path
    offset: int = 0
    lines: list[dict[str, object]] = field(default_factory=list)

    def read(self) -> None:
        with self.path.open("rb") as file:
            file.seek(self.offset)
            data = file.read()
        end = data.rfind(b"\n") + 1
        self.offset += end
        for raw in data[:end].splitlines():
            try:
                self.lines.append(json.loads(raw))
            except json.JSONDecodeError:
                self.lines.append({"message": raw.decode(errors="replace")})

    def ready(self) -> dict[int, float]:
        """Pid -> when its 'worker N ready' line was read (as seen by this script)."""
        return self._ready

    _ready: dict[int, float] = field(default_factory=dict)

    def poll(self) -> None:
        before = len(self.lines)
        self.read()
        now = time.monotonic()
        for line in self.lines[before:]:
            message = str(line.get("message", ""))
            if message.startswith("worker ") and message.endswith(" ready"):
                self._ready[int(message.split()[1])] = now


async def client(conn: int, port: int, interval: float, until: float, out: dict[str, Outcome]):
    seq = 0
    reader = writer = None
    fresh = True
    while time.monotonic() < until:
        seq += 1
        rid = f"c{conn}-{seq}"
        outcome = Outcome(conn, fresh, time.monotonic(), 0.0)
        out[rid] = outcome
        try:
            if writer is not None and (reader is None or reader.at_eof() or writer.is_closing()):
                writer.close()  # closed while idle: a client reconnects, as HTTP clients do
                reader = writer = None
            if writer is None:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                fresh = outcome.fresh = True
            assert reader is not None
            ms = RNG.randint(0, 20)  # so that requests are in flight when a worker dies
            writer.write(
                f"GET /x?ms={ms} HTTP/1.1\r\nHost: proxy\r\nOrigin: {ORIGIN}\r\n"
                f"X-Request-Id: {rid}\r\n\r\n".encode()
            )
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            lines = head.decode("latin-1").split("\r\n")
            length = next(
                int(h.split(":", 1)[1]) for h in lines if h.lower().startswith("content-length:")
            )
            await asyncio.wait_for(reader.readexactly(length), 10)
            outcome.status = int(lines[0].split()[1])
            fresh = False
            if any(h.lower() == "connection: close" for h in lines):
                writer.close()
                reader = writer = None
        except (OSError, asyncio.IncompleteReadError, TimeoutError, StopIteration, ValueError):
            if writer is not None:
                writer.close()
            reader = writer = None
        outcome.end = time.monotonic()
        await asyncio.sleep(interval)
    if writer is not None:
        writer.close()


def start_upstream(port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, "-c", UPSTREAM, str(port)])
    wait_port(port)
    return proc


def wait_port(port: int, timeout: float = 15) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise SystemExit(f"nothing listening on 127.0.0.1:{port}")


def restarts(admin: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=5) as response:
        text = response.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("corsproxy_worker_restarts_total{")
    )


def start_proxy(config: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "corsproxy", "serve", "-c", str(config), "--workers", "2",
             "--log-format", "json", "--shutdown-timeout", "5"],
            stderr=sink, cwd=ROOT,
        )  # fmt: skip


async def chaos(args: argparse.Namespace) -> int:
    work = Path(tempfile.mkdtemp(prefix="corsproxy-chaos-"))
    up, port, admin = free_port(), free_port(), free_port()
    config = work / "corsproxy.yaml"
    config.write_text(POLICY.format(port=port, up=up, admin=admin, origin=ORIGIN, max_age=600))
    upstream = start_upstream(up)
    log = Log(work / "proxy.log")
    proxy = start_proxy(config, log.path)
    kills: list[tuple[float, int]] = []
    spawned: list[float] = []  # seconds from a kill to a new worker process
    ready_in: list[float] = []  # ... to that worker ready
    upstream_window = (0.0, 0.0)
    outcomes: dict[str, Outcome] = {}
    try:
        deadline = time.monotonic() + 20
        while len(set(log.ready()) & children(proxy.pid)) < 2:
            if time.monotonic() > deadline or proxy.poll() is not None:
                raise SystemExit(f"corsproxy did not start: {log.path.read_text()[-2000:]}")
            await asyncio.sleep(0.05)
            log.poll()
        started = time.monotonic()
        until = started + args.seconds
        interval = args.connections / args.rate
        tasks = [
            asyncio.create_task(client(c, port, interval, until, outcomes))
            for c in range(args.connections)
        ]
        await asyncio.sleep(min(5, args.kill_every))
        sup_start = rss_fds(proxy.pid)
        pool_start = [rss_fds(p) for p in children(proxy.pid)]
        hups = 0
        upstream_restarted = False
        while time.monotonic() < until - args.kill_every:
            log.poll()
            ready = set(log.ready()) & children(proxy.pid)
            victim = RNG.choice(sorted(ready))
            before = children(proxy.pid)
            os.kill(victim, signal.SIGKILL)
            killed = time.monotonic()
            kills.append((killed, victim))
            fresh: set[int] = set()
            while not fresh and time.monotonic() - killed < 10:
                await asyncio.sleep(0.01)
                fresh = children(proxy.pid) - before
            spawned.append(time.monotonic() - killed)
            while time.monotonic() - killed < 20:
                log.poll()
                if fresh and fresh <= set(log.ready()):
                    break
                await asyncio.sleep(0.02)
            ready_in.append(min(log.ready().get(p, 99.0) for p in fresh or {0}) - killed)
            await asyncio.sleep(args.kill_every / 2)
            hups += 1
            config.write_text(
                POLICY.format(port=port, up=up, admin=admin, origin=ORIGIN, max_age=600 - hups % 2)
            )
            proxy.send_signal(signal.SIGHUP)
            if not upstream_restarted and time.monotonic() > started + args.seconds / 2:
                upstream_restarted = True
                begin = time.monotonic()
                upstream.terminate()
                upstream.wait(10)
                upstream = start_upstream(up)
                upstream_window = (begin, time.monotonic())
            await asyncio.sleep(args.kill_every / 2)
        await asyncio.gather(*tasks)
        log.poll()
        sup_end = rss_fds(proxy.pid)
        pool_end = [rss_fds(p) for p in children(proxy.pid)]
        counted = restarts(admin)
        alive = proxy.poll() is None
        proxy.send_signal(signal.SIGTERM)
        code = proxy.wait(30)
    finally:
        if proxy.poll() is None:
            proxy.kill()
            proxy.wait(10)
        upstream.terminate()
        upstream.wait(10)
    log.poll()

    # Which worker answered each connection, from the access log.
    pid_of: dict[str, int] = {}
    for line in log.lines:
        if line.get("logger") == "corsproxy.access" and isinstance(line.get("pid"), int):
            pid_of[str(line["request_id"])] = int(line["pid"])  # type: ignore[call-overload]
    last_pid: dict[int, int] = {}
    in_flight = after = accept_queue = unexplained = bad_5xx = answered = 0
    kill_pids = {pid: t for t, pid in kills}
    for rid, outcome in sorted(outcomes.items(), key=lambda item: item[1].start):
        if outcome.status:
            answered += 1
            if outcome.status >= 500 and not (
                upstream_window[0] - 0.5 <= outcome.end <= upstream_window[1] + 1
            ):
                bad_5xx += 1
            if rid in pid_of:
                last_pid[outcome.conn] = pid_of[rid]
            continue
        pid = last_pid.get(outcome.conn)
        if pid in kill_pids and outcome.end >= kill_pids[pid] and not outcome.fresh:
            # In flight when it died, or sent on its keep-alive connection just after.
            if outcome.start <= kill_pids[pid]:
                in_flight += 1
            else:
                after += 1
        elif outcome.fresh and any(0 <= outcome.end - t <= 1.5 for t, _ in kills):
            accept_queue += 1
        else:
            unexplained += 1
        last_pid.pop(outcome.conn, None)
    sent = len(outcomes)
    failed = sent - answered
    fives = sum(1 for o in outcomes.values() if o.status >= 500)
    bad_log = [
        str(line.get("message"))
        for line in log.lines
        if "Traceback" in str(line.get("exception", "")) or "Unclosed" in str(line.get("message"))
    ]
    pool_rss = (sum(r for r, _ in pool_start), sum(r for r, _ in pool_end))
    pool_fds = (sum(f for _, f in pool_start), sum(f for _, f in pool_end))
    checks = {
        "failures only on killed workers": unexplained == 0,
        "5xx only while the upstream restarted": bad_5xx == 0,
        "each worker replaced within 1 s": bool(spawned) and max(spawned) <= 1.0,
        "every kill counted": counted == len(kills),
        "supervisor fds flat": sup_end[1] == sup_start[1],
        "RSS flat (< 10 %)": sup_end[0] < 1.1 * sup_start[0] and pool_rss[1] < 1.1 * pool_rss[0],
        "alive, then exit 0 on SIGTERM": alive and code == 0,
        "nothing bad in the log": not bad_log,
    }
    report = "\n".join(
        [
            f"{args.seconds:g} s at {args.rate} req/s ({args.connections} keep-alive "
            f"connections) through 2 workers; SIGKILL to a random worker every "
            f"{args.kill_every:g} s with a SIGHUP between kills; the upstream restarted once.",
            "",
            "| sent | answered (5xx while the upstream restarted) | failed: in flight on the "
            "killed worker + sent on its closed keep-alive connection + in its accept queue + "
            "unexplained | kills / counted restarts | new worker after a kill: process, ready "
            "(max) |",
            "|---|---|---|---|---|",
            f"| {sent:,} | {answered:,} ({fives}) | {failed} = {in_flight} + {after} + "
            f"{accept_queue} + {unexplained} | {len(kills)} / {counted:g} "
            f"| {max(spawned, default=0) * 1000:.0f} ms, {max(ready_in, default=0):.2f} s |",
            "",
            "| | RSS MiB start → end | open fds start → end |",
            "|---|---|---|",
            f"| supervisor | {sup_start[0]:.1f} → {sup_end[0]:.1f} "
            f"| {sup_start[1]} → {sup_end[1]} |",
            f"| workers (both) | {pool_rss[0]:.1f} → {pool_rss[1]:.1f} "
            f"| {pool_fds[0]} → {pool_fds[1]} |",
            "",
            "Checks: "
            + ", ".join(f"{name}: {'pass' if ok else 'FAIL'}" for name, ok in checks.items()),
        ]
    )
    print(report)
    if bad_log:
        print("\n".join(bad_log[:20]))
    if args.write:
        sys.path.insert(0, str(ROOT / "bench"))
        from run import write_doc

        write_doc(args.write, report, marker="chaos")
    return 0 if all(checks.values()) else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=180)
    parser.add_argument("--kill-every", type=float, default=5, help="seconds between kills")
    parser.add_argument("--rate", type=int, default=300, help="requests per second")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--write", type=Path, help="write the result into this Markdown file")
    args = parser.parse_args()
    RNG.seed(args.seed)
    sys.exit(asyncio.run(chaos(args)))


if __name__ == "__main__":
    main()
