"""Side-by-side benchmark: corsproxy as users run it against what they would otherwise deploy,
and against aiohttp's own floors, every target of issue 16 in one run.

    python bench/run.py [--rounds 3] [--seconds 5] [--quick] [--only TEXT] [--write FILE]

Installs what it needs (Debian nginx and wrk, cors-anywhere from npm and corsproxy itself with
`pip install .` into a venv, both in bench/.cache), starts everything on loopback ports,
measures, stops everything, prints the targets table and one table per workload.

Upstream: nginx, one worker, serving a ~200-byte JSON, a 1 MiB file and answering POSTs.
Contenders: direct to the upstream (the ceiling); nginx as a CORS reverse proxy (the limit);
cors-anywhere with a keep-alive agent and in its stock configuration; aiohttp-floor (a bare
aiohttp low-level server answering preflights with a fixed 204) and aiohttp-relay-floor (the
same relaying through corsproxy's upstream client), both in bench/floors.py; corsproxy as
installed (default settings: info level, JSON lines to a pipe read by a process outside its
tree, uvloop), and with access logs off, 1 and 2 workers. Workloads (wrk, 50 connections):
small GET with an Origin; a preflight; 1 MiB GET; small POST with a 4 KiB body. Rounds run
every contender in turn (A B C ... A B C ...); each figure is the median over rounds, and
ratios are taken per round, then the median. wrk is pinned to CPU 1; the servers are not
pinned. CPU per request is the contender's own CPU time (its whole process tree, from /proc)
divided by the requests it answered; req/s per CPU is requests per CPU-second of that tree.
RSS is sampled every 50 ms during each run (the peak) and after it; in the last round,
corsproxy as installed also holds 10,000 idle keep-alive connections (bench/connections.py's
code) and its RSS is read before and with them.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "bench" / ".cache"
ORIGIN = "https://app.example.com"
TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise SystemExit(f"nothing listening on 127.0.0.1:{port}")


def tree(pid: int) -> list[int]:
    pids = [pid]
    for p in pids:
        try:
            children = Path(f"/proc/{p}/task/{p}/children").read_text().split()
        except OSError:
            continue
        pids.extend(int(c) for c in children)
    return pids


def cpu_seconds(pid: int) -> float:
    total = 0
    for p in tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / TICK


def rss_mib(pid: int) -> float:
    total = 0
    for p in tree(pid):
        try:
            total += int(Path(f"/proc/{p}/statm").read_text().split()[1]) * PAGE
        except OSError:
            continue
    return total / 2**20


def ensure_tools(cors_anywhere: bool = True) -> None:
    missing = [
        t for t in ("nginx", "wrk") if not (shutil.which(t) or Path(f"/usr/sbin/{t}").exists())
    ]
    if missing:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=True, env=env)
    if cors_anywhere and not (CACHE / "node_modules" / "cors-anywhere").exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                "npm",
                "install",
                "--silent",
                "--no-audit",
                "--no-fund",
                "--prefix",
                str(CACHE),
                "cors-anywhere@0.4.4",
            ],
            check=True,
        )


NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def nginx(workdir: Path, name: str, http_block: str) -> subprocess.Popen[bytes]:
    conf = workdir / f"{name}.conf"
    conf.write_text(
        f"worker_processes 1;\nerror_log {workdir}/{name}.error.log;\npid {workdir}/{name}.pid;\n"
        f"events {{ worker_connections 8192; }}\n"
        f"http {{\n access_log off;\n keepalive_requests 1000000;\n{http_block}\n}}\n"
    )
    return subprocess.Popen([NGINX, "-c", str(conf), "-p", str(workdir), "-g", "daemon off;"])


def upstream_block(workdir: Path, port: int) -> str:
    www = workdir / "www"
    www.mkdir(exist_ok=True)
    (www / "small.json").write_text('{"id": 42, "name": "' + "x" * 170 + '"}\n')
    (www / "big.bin").write_bytes(os.urandom(2**20))
    return f"""
 server {{
  listen 127.0.0.1:{port};
  root {www};
  client_max_body_size 1m;
  location = /post {{ return 200 '{{"ok":true}}'; }}
 }}"""


def nginx_cors_block(port: int, upstream: int) -> str:
    return f"""
 upstream up {{ server 127.0.0.1:{upstream}; keepalive 64; }}
 map $http_origin $cors {{ default ""; "{ORIGIN}" $http_origin; }}
 server {{
  listen 127.0.0.1:{port};
  client_max_body_size 1m;
  location / {{
   if ($request_method = OPTIONS) {{
    add_header Access-Control-Allow-Origin $cors always;
    add_header Access-Control-Allow-Methods "GET, HEAD, POST, PUT" always;
    add_header Access-Control-Allow-Headers "content-type, x-token" always;
    add_header Access-Control-Max-Age 600 always;
    add_header Vary "Origin, Access-Control-Request-Method, Access-Control-Request-Headers" always;
    return 204;
   }}
   proxy_pass http://up;
   proxy_http_version 1.1;
   proxy_set_header Connection "";
   proxy_hide_header Access-Control-Allow-Origin;
   add_header Access-Control-Allow-Origin $cors always;
   add_header Vary Origin always;
  }}
 }}"""


CORS_ANYWHERE = """
const http = require('http');
const keepAlive = process.argv[3] === 'keepalive';
const options = {{originWhitelist: [], requireHeader: [], removeHeaders: []}};
const agent = new http.Agent({{keepAlive: true, maxSockets: 256}});
if (keepAlive) options.httpProxyOptions = {{agent}};
require('cors-anywhere').createServer(options).listen(Number(process.argv[2]), '127.0.0.1');
"""


@dataclass
class Contender:
    name: str
    start: object  # callable(port) returning a Popen, or None (nothing to start)
    url: object  # callable(port, path) -> url
    workloads: frozenset[str] | None = None  # None: every workload
    needs: str = ""  # "cors-anywhere" or "corsproxy": what ensure_tools must install


@dataclass
class Sample:
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    mb_s: float
    cpu_s: float  # the contender's whole tree's CPU time during the run
    rss_mib: float  # after the run
    rss_peak_mib: float  # the highest of the samples taken during the run
    upstream_share: float

    @property
    def cpu_us(self) -> float:
        return 1e6 * self.cpu_s / max(self.requests, 1)

    @property
    def req_per_cpu(self) -> float:
        """Requests per CPU-second of the contender's own tree."""
        return self.requests / self.cpu_s if self.cpu_s > 0 else 0.0

    @property
    def mb_per_cpu(self) -> float:
        """MB (MiB, wrk's transfer) per CPU-second of the contender's own tree."""
        return self.mb_s * self.seconds / self.cpu_s if self.cpu_s > 0 else 0.0


@dataclass
class Results:
    samples: dict[tuple[str, str], list[Sample]] = field(default_factory=dict)
    rest_mib: dict[str, list[float]] = field(default_factory=dict)  # RSS before any load
    idle: dict[str, float] | None = None  # the idle keep-alive connections test


WORKLOADS = {
    "small GET": ("GET", "/small.json", {}, None),
    "preflight": (
        "OPTIONS",
        "/small.json",
        {
            "Access-Control-Request-Method": "PUT",
            "Access-Control-Request-Headers": "content-type,x-token",
        },
        None,
    ),
    "1 MiB GET": ("GET", "/big.bin", {}, None),
    "POST 4 KiB": ("POST", "/post", {"Content-Type": "application/json"}, "x" * 4096),
}

# The contenders the targets compare (bench/floors.py holds the floors' servers).
DIRECT = "direct (ceiling)"
NGINX_CORS = "nginx + CORS"
CA_KEEPALIVE = "cors-anywhere + keep-alive"
CA_STOCK = "cors-anywhere (stock)"
FLOOR = "aiohttp-floor"
RELAY_FLOOR = "aiohttp-relay-floor"
INSTALLED = "corsproxy as installed"
LOG_OFF = "corsproxy, access log off"
LOG_OFF_2 = "corsproxy, access log off, 2 workers"
RATIO_REFS = (CA_KEEPALIVE, NGINX_CORS)


def lua_script(
    workdir: Path, name: str, method: str, headers: dict[str, str], body: str | None
) -> Path:
    lines = [f'wrk.method = "{method}"', f'wrk.headers["Origin"] = "{ORIGIN}"']
    lines += [f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items()]
    if body is not None:
        lines.append(f'wrk.body = "{body}"')
    path = workdir / f"{name.replace(' ', '_')}.lua"
    path.write_text("\n".join(lines) + "\n")
    return path


def parse_duration(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def warm_up(url: str, script: Path) -> None:
    subprocess.run(
        ["taskset", "-c", "1", "wrk", "-t1", "-c50", "-d1s", "-s", str(script), url],
        capture_output=True,
        check=True,
        timeout=60,
    )


def run_wrk(url: str, script: Path, seconds: int) -> tuple[int, float, float, float, float]:
    out = subprocess.run(
        [
            "taskset",
            "-c",
            "1",
            "wrk",
            "-t1",
            "-c50",
            f"-d{seconds}s",
            "--latency",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 60,
    ).stdout
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    # The "Latency Distribution" lines, not the thread stats (which also print percents).
    p50 = parse_duration(re.search(r"^\s+50%\s+(\S+)\s*$", out, re.M).group(1))  # type: ignore[union-attr]
    p99 = parse_duration(re.search(r"^\s+99%\s+(\S+)\s*$", out, re.M).group(1))  # type: ignore[union-attr]
    transfer = re.search(r"Transfer/sec:\s+([\d.]+)(\w+)", out)
    scale = {"B": 1 / 2**20, "KB": 1 / 1024, "MB": 1.0, "GB": 1024.0}[transfer.group(2)]  # type: ignore[union-attr]
    return requests, rps, p50, p99, float(transfer.group(1)) * scale  # type: ignore[union-attr]


VENV = CACHE / "venv"


def install_corsproxy() -> Path:
    """corsproxy as the README installs it: `pip install .` (not editable) into a fresh venv
    in the bench cache (made once, this tree reinstalled into it each run); its console
    script."""
    python = VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True)
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(ROOT)],
        check=True,
        cwd=CACHE,
    )
    return VENV / "bin" / "corsproxy"


def raise_fd_limit(wanted: int = 30_000) -> int:
    """`ulimit -n` raised (as far as the hard limit allows) for the idle connections: this
    process opens them and the proxy (a child) inherits the limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class PeakRSS:
    """The highest RSS of a process tree, sampled every 50 ms while a run lasts."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = rss_mib(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, rss_mib(self.pid))

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mib(self.pid))


def idle_connections(port: int, pid: int, count: int) -> dict[str, float]:
    """bench/connections.py's idle test: `count` keep-alive connections that each made one
    request and stay open; the proxy's RSS before and with them."""
    from connections import open_idle  # bench/connections.py

    async def run() -> dict[str, float]:
        before = rss_mib(pid)
        writers = await open_idle(port, count)
        after = rss_mib(pid)
        for writer in writers:
            writer.close()
        return {"count": count, "rss_before": before, "rss_after": after}

    return asyncio.run(run())


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument(
        "--quick", action="store_true", help="1 round of 2 s (a smoke run; the figures mean little)"
    )
    parser.add_argument(
        "--no-install",
        action="store_true",
        help="use the running interpreter's corsproxy and aiohttp instead of `pip install .` into"
        " bench/.cache/venv (the smoke test; never for the published table)",
    )
    parser.add_argument("--idle", type=int, default=10_000, help="idle keep-alive connections")
    parser.add_argument("--write", type=Path, help="write the tables into this Markdown file")
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="TEXT",
        help="run only contenders and workloads whose names contain TEXT (repeatable; a quick"
        " look while working, never for the published table)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.seconds = 1, 2
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="corsproxy-bench-"))
    work.chmod(0o755)  # nginx's workers run as nobody and must read the files
    up_port = free_port()
    (work / "ca.js").write_text(CORS_ANYWHERE.replace("{{", "{").replace("}}", "}"))
    env = {**os.environ, "NODE_PATH": str(CACHE / "node_modules")}
    sidecars: list[subprocess.Popen[bytes]] = []  # stopped with their contender
    # corsproxy's console script and the interpreter of the floors, once installed.
    script: dict[str, Path] = {"python": VENV / "bin" / "python"}

    # The same policy as the nginx + CORS contender: PUT and these headers are allowed.
    policy = work / "corsproxy.yaml"
    policy.write_text(
        f"upstream: http://127.0.0.1:{up_port}\n"
        f"cors:\n  allow_origins: [{ORIGIN}]\n  allow_methods: [GET, HEAD, POST, PUT]\n"
        "  allow_headers: [Content-Type, X-Token]\n  max_age: 600\n"
    )

    def corsproxy(workers: int, log_off: bool) -> object:
        def start(port: int) -> subprocess.Popen[bytes]:
            command = [str(script["corsproxy"]), "serve", "--config", str(policy)]
            command += ["--listen", f"127.0.0.1:{port}", "--workers", str(workers)]
            if log_off:
                # Access logs off (warning level), as in the nginx contender (access_log off).
                return subprocess.Popen(
                    [*command, "--log-level", "warning"], stderr=subprocess.DEVNULL, cwd=work
                )
            # As users run it: the defaults (info, JSON lines: stderr is a pipe), read by a
            # process outside the proxy's tree (its CPU is not the proxy's).
            read, write = os.pipe()
            sidecars.append(subprocess.Popen(["cat"], stdin=read, stdout=subprocess.DEVNULL))
            try:
                return subprocess.Popen(command, stderr=write, cwd=work)
            finally:
                os.close(read)
                os.close(write)

        return start

    def floor(*extra: str) -> object:
        def start(port: int) -> subprocess.Popen[bytes]:
            # The same aiohttp and uvloop as corsproxy's.
            return subprocess.Popen(
                [
                    str(script["python"]),
                    str(ROOT / "bench" / "floors.py"),
                    *extra[:1],
                    str(port),
                    *extra[1:],
                ]
            )

        return start

    def at(port: int, path: str) -> str:
        return f"http://127.0.0.1:{port}{path}"

    def via_ca(port: int, path: str) -> str:
        return f"http://127.0.0.1:{port}/http://127.0.0.1:{up_port}{path}"

    proxied = frozenset(WORKLOADS) - {"preflight"}
    contenders = [
        Contender(DIRECT, lambda port: None, lambda port, path: at(up_port, path)),
        Contender(
            NGINX_CORS, lambda port: nginx(work, f"cors{port}", nginx_cors_block(port, up_port)), at
        ),
        Contender(
            CA_KEEPALIVE,
            lambda port: subprocess.Popen(
                ["node", str(work / "ca.js"), str(port), "keepalive"], env=env
            ),
            via_ca,
            needs="cors-anywhere",
        ),
        Contender(
            CA_STOCK,
            lambda port: subprocess.Popen(
                ["node", str(work / "ca.js"), str(port), "stock"], env=env
            ),
            via_ca,
            needs="cors-anywhere",
        ),
        Contender(FLOOR, floor("aiohttp-floor"), at, frozenset({"preflight"}), "corsproxy"),
        Contender(
            RELAY_FLOOR, floor("aiohttp-relay-floor", str(up_port)), at, proxied, "corsproxy"
        ),
        Contender(INSTALLED, corsproxy(1, log_off=False), at, needs="corsproxy"),
        Contender(LOG_OFF, corsproxy(1, log_off=True), at, needs="corsproxy"),
        Contender(LOG_OFF_2, corsproxy(2, log_off=True), at, needs="corsproxy"),
    ]
    if args.only:
        contenders = [c for c in contenders if any(o in c.name for o in args.only)] or contenders
    workloads = {
        name: spec
        for name, spec in WORKLOADS.items()
        if not args.only or any(o in name for o in args.only)
    } or WORKLOADS
    ensure_tools(cors_anywhere=any(c.needs == "cors-anywhere" for c in contenders))
    if args.no_install:
        script["python"] = Path(sys.executable)
        script["corsproxy"] = Path(sys.executable).parent / "corsproxy"
    elif any(c.needs == "corsproxy" for c in contenders):
        script["corsproxy"] = install_corsproxy()
    raise_fd_limit(2 * args.idle + 2000)
    upstream = nginx(work, "upstream", upstream_block(work, up_port))
    wait_port(up_port)
    scripts = {
        name: lua_script(work, name, spec[0], spec[2], spec[3]) for name, spec in WORKLOADS.items()
    }
    results = Results()
    try:
        for round_ in range(args.rounds):
            for contender in contenders:
                wanted = contender.workloads
                mine = [w for w in workloads if wanted is None or w in wanted]
                if not mine:
                    continue
                port = free_port()
                proc = contender.start(port)  # type: ignore[operator]
                if proc is not None:
                    wait_port(port)
                    time.sleep(1.5)
                pid = proc.pid if proc is not None else upstream.pid
                results.rest_mib.setdefault(contender.name, []).append(rss_mib(pid))
                try:
                    for workload in mine:
                        url = contender.url(port, WORKLOADS[workload][1])  # type: ignore[operator]
                        warm_up(url, scripts[workload])
                        c0, u0 = cpu_seconds(pid), cpu_seconds(upstream.pid)
                        with PeakRSS(pid) as peak:
                            requests, rps, p50, p99, mb_s = run_wrk(
                                url, scripts[workload], args.seconds
                            )
                        c1, u1 = cpu_seconds(pid), cpu_seconds(upstream.pid)
                        results.samples.setdefault((workload, contender.name), []).append(
                            Sample(
                                requests,
                                args.seconds,
                                rps,
                                p50,
                                p99,
                                mb_s,
                                c1 - c0,
                                rss_mib(pid),
                                peak.peak,
                                (u1 - u0) / args.seconds,
                            )
                        )
                    last = round_ == args.rounds - 1
                    if contender.name == INSTALLED and last and args.idle > 0:
                        results.idle = idle_connections(port, pid, args.idle)
                    print(f"round {round_ + 1}: {contender.name} done", file=sys.stderr)
                finally:
                    if proc is not None:
                        proc.terminate()
                        proc.wait(30)
                    for sidecar in sidecars:
                        sidecar.terminate()
                        sidecar.wait(10)
                    sidecars.clear()
    finally:
        upstream.terminate()
        upstream.wait(10)
        shutil.rmtree(work, ignore_errors=True)
    report = render(results, [c.name for c in contenders], args.rounds, args.seconds)
    print(report)
    if args.write:
        write_doc(args.write, report)


def med(values: list[float]) -> float:
    return statistics.median(values)


def per_round(
    results: Results, workload: str, a: str, b: str, metric: Callable[[Sample], float]
) -> float | None:
    """The median over rounds of metric(a) / metric(b), each round's pair taken together."""
    pairs = zip(
        results.samples.get((workload, a), []), results.samples.get((workload, b), []), strict=False
    )
    ratios = [metric(x) / metric(y) for x, y in pairs if metric(y)]
    return med(ratios) if ratios else None


@dataclass
class Target:
    what: str
    target: str  # "≤ 1.10x", "-" when shown without a target
    measured: str  # "-" when not measured in this run
    met: bool | None  # None: no target, or not measured


def _ratio(
    what: str, value: float | None, limit: float | None, at_most: bool, note: str = ""
) -> Target:
    target = "-" if limit is None else f"{'≤' if at_most else '≥'} {limit:.2f}x"
    if value is None:
        return Target(what, target, "not measured", None)
    met = None if limit is None else (value <= limit if at_most else value >= limit)
    return Target(what, target, f"{value:.2f}x{note}", met)


def _figure(what: str, value: float | None, limit: float, unit: str, strict: bool) -> Target:
    target = f"{'<' if strict else '≤'} {limit:g} {unit}"
    if value is None:
        return Target(what, target, "not measured", None)
    return Target(what, target, f"{value:.1f} {unit}", value < limit if strict else value <= limit)


def targets(results: Results) -> list[Target]:
    """Issue 16's targets, from the samples of this run (per-round ratios, then medians)."""

    def cpu(s: Sample) -> float:
        return s.cpu_us

    def per_cpu(s: Sample) -> float:
        return s.req_per_cpu

    def mb_per_cpu(s: Sample) -> float:
        return s.mb_per_cpu

    def median_of(workload: str, name: str, metric: Callable[[Sample], float]) -> float | None:
        samples = results.samples.get((workload, name), [])
        return med([metric(s) for s in samples]) if samples else None

    rest = results.rest_mib.get(INSTALLED)
    idle = results.idle
    return [
        _ratio(
            "access line cost: small GET CPU per request, default settings / access log off",
            per_round(results, "small GET", INSTALLED, LOG_OFF, cpu),
            1.10,
            at_most=True,
        ),
        _ratio(
            "preflight CPU per request vs aiohttp-floor (default settings)",
            per_round(results, "preflight", INSTALLED, FLOOR, cpu),
            1.30,
            at_most=True,
        ),
        _ratio(
            "preflight CPU per request vs aiohttp-floor (access log off)",
            per_round(results, "preflight", LOG_OFF, FLOOR, cpu),
            None,
            at_most=True,
        ),
        _ratio(
            "small GET req/s per CPU vs cors-anywhere + keep-alive (default settings)",
            per_round(results, "small GET", INSTALLED, CA_KEEPALIVE, per_cpu),
            1.50,
            at_most=False,
        ),
        _ratio(
            "small GET CPU per request vs aiohttp-relay-floor (default settings)",
            per_round(results, "small GET", INSTALLED, RELAY_FLOOR, cpu),
            None,
            at_most=True,
        ),
        _ratio(
            "1 MiB GET CPU per request vs aiohttp-relay-floor (default settings)",
            per_round(results, "1 MiB GET", INSTALLED, RELAY_FLOOR, cpu),
            None,
            at_most=True,
        ),
        _ratio(
            "1 MiB GET MB/s per CPU vs nginx + CORS (default settings)",
            per_round(results, "1 MiB GET", INSTALLED, NGINX_CORS, mb_per_cpu),
            0.70,
            at_most=False,
        ),
        _figure("RSS at rest, 1 worker", med(rest) if rest else None, 50, "MiB", strict=False),
        _figure(
            "RSS peak during 50 concurrent 1 MiB answers, 1 worker",
            median_of("1 MiB GET", INSTALLED, lambda s: s.rss_peak_mib),
            50,
            "MiB",
            strict=False,
        ),
        _figure(
            f"RSS added by {int(idle['count']):,} idle keep-alive connections"
            if idle
            else "RSS added by 10,000 idle keep-alive connections",
            idle["rss_after"] - idle["rss_before"] if idle else None,
            100,
            "MiB",
            strict=False,
        ),
        _figure(
            "p99 small GET at 50 connections (default settings)",
            median_of("small GET", INSTALLED, lambda s: s.p99_ms),
            10,
            "ms",
            strict=True,
        ),
    ]


def render(results: Results, contenders: list[str], rounds: int, seconds: int) -> str:
    lines = [
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Linux {platform.release()}, "
        f"Python {platform.python_version()}; {rounds} rounds of {seconds} s per "
        "figure, wrk -t1 -c50 pinned to CPU 1, servers unpinned.",
        "",
        "### Targets (issue 16)",
        "",
        "| target | wanted | measured | met |",
        "|---|---|---|---|",
    ]
    for row in targets(results):
        met = {True: "yes", False: "**no**", None: "-"}[row.met]
        lines.append(f"| {row.what} | {row.target} | {row.measured} | {met} |")
    lines.append("")
    for workload in WORKLOADS:
        if not any((workload, c) in results.samples for c in contenders):
            continue
        lines += [
            f"### {workload}",
            "",
            "| contender | req/s | p50 ms | p99 ms | MB/s | CPU µs/request | req/s per CPU "
            "| MB/s per CPU | RSS MiB (peak) | upstream CPU | vs cors-anywhere + keep-alive "
            "| vs nginx + CORS |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for contender in contenders:
            samples = results.samples.get((workload, contender), [])
            if not samples:
                continue
            ratio = {}
            for ref in RATIO_REFS:
                value = per_round(results, workload, contender, ref, lambda s: s.rps)
                ratio[ref] = "-" if value is None else f"{value:.2f}x"
            lines.append(
                f"| {contender} | {med([s.rps for s in samples]):,.0f} "
                f"| {med([s.p50_ms for s in samples]):.2f} "
                f"| {med([s.p99_ms for s in samples]):.2f} "
                f"| {med([s.mb_s for s in samples]):,.1f} "
                f"| {med([s.cpu_us for s in samples]):.0f} "
                f"| {med([s.req_per_cpu for s in samples]):,.0f} "
                f"| {med([s.mb_per_cpu for s in samples]):,.0f} "
                f"| {med([s.rss_mib for s in samples]):.0f} "
                f"({med([s.rss_peak_mib for s in samples]):.0f}) "
                f"| {100 * med([s.upstream_share for s in samples]):.0f}% "
                f"| {ratio[CA_KEEPALIVE]} | {ratio[NGINX_CORS]} |"
            )
        lines.append("")
    if results.idle:
        idle = results.idle
        lines.append(
            f"{int(idle['count']):,} idle keep-alive connections to {INSTALLED}: RSS "
            f"{idle['rss_before']:.0f} MiB before, {idle['rss_after']:.0f} MiB with them."
        )
        lines.append("")
    return "\n".join(lines)


def write_doc(path: Path, report: str, marker: str = "bench") -> None:
    """Replace the block between `<!-- MARKER:start -->` and `<!-- MARKER:end -->`."""
    text = path.read_text() if path.exists() else ""
    start, end = f"<!-- {marker}:start -->", f"<!-- {marker}:end -->"
    block = f"{start}\n{report}\n{end}"
    if start in text and end in text:
        text = text[: text.index(start)] + block + text[text.index(end) + len(end) :]
    else:
        text += "\n" + block + "\n"
    path.write_text(text)


if __name__ == "__main__":
    main()
