"""Side-by-side benchmark: corsproxy against what users would otherwise deploy.

    python bench/run.py [--rounds 3] [--seconds 5] [--write docs/performance.md]

Installs what it needs (Debian nginx and wrk, cors-anywhere from npm into bench/.cache),
starts everything on loopback ports, measures, stops everything, prints tables and ratios.

Upstream: nginx, one worker, serving a ~200-byte JSON, a 1 MiB file and answering POSTs.
Contenders: direct to the upstream (the ceiling); nginx as a CORS reverse proxy (the limit);
cors-anywhere with a keep-alive agent and in its stock configuration; corsproxy with 1 and 2
workers. Workloads (wrk, 50 connections): small GET with an Origin; a preflight; 1 MiB GET;
small POST with a 4 KiB body. Rounds run every contender in turn (A B C ... A B C ...); each
figure is the median over rounds, and ratios are taken per round, then the median. wrk is
pinned to CPU 1; the servers are not pinned. CPU per request is the contender's own CPU time
(its whole process tree, from /proc) divided by the requests it answered.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
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


def ensure_tools() -> None:
    missing = [
        t for t in ("nginx", "wrk") if not (shutil.which(t) or Path(f"/usr/sbin/{t}").exists())
    ]
    if missing:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=True, env=env)
    if not (CACHE / "node_modules" / "cors-anywhere").exists():
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
    start: object  # callable returning a Popen
    url: object  # callable(path) -> url
    proc: subprocess.Popen[bytes] | None = None


@dataclass
class Sample:
    rps: float
    p50_ms: float
    p99_ms: float
    mb_s: float
    cpu_us: float
    rss_mib: float
    upstream_share: float


@dataclass
class Results:
    samples: dict[tuple[str, str], list[Sample]] = field(default_factory=dict)


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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--write", type=Path, help="write the tables into this Markdown file")
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="TEXT",
        help="run only contenders and workloads whose names contain TEXT (repeatable; a quick"
        " look while working, never for the published table)",
    )
    args = parser.parse_args()
    ensure_tools()
    work = Path(tempfile.mkdtemp(prefix="corsproxy-bench-"))
    work.chmod(0o755)  # nginx's workers run as nobody and must read the files
    up_port = free_port()
    upstream = nginx(work, "upstream", upstream_block(work, up_port))
    wait_port(up_port)
    (work / "ca.js").write_text(CORS_ANYWHERE.replace("{{", "{").replace("}}", "}"))
    env = {**os.environ, "NODE_PATH": str(CACHE / "node_modules")}

    # The same policy as the nginx + CORS contender: PUT and these headers are allowed.
    policy = work / "corsproxy.yaml"
    policy.write_text(
        f"upstream: http://127.0.0.1:{up_port}\n"
        f"cors:\n  allow_origins: [{ORIGIN}]\n  allow_methods: [GET, HEAD, POST, PUT]\n"
        "  allow_headers: [Content-Type, X-Token]\n  max_age: 600\n"
    )

    def corsproxy(workers: int) -> object:
        def start(port: int) -> subprocess.Popen[bytes]:
            # Access logs off (warning level), as in the nginx contender (access_log off).
            return subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "corsproxy",
                    "serve",
                    "--config",
                    str(policy),
                    "--listen",
                    f"127.0.0.1:{port}",
                    "--workers",
                    str(workers),
                    "--log-format",
                    "json",
                    "--log-level",
                    "warning",
                ],
                stderr=subprocess.DEVNULL,
                cwd=ROOT,
            )

        return start

    contenders = [
        Contender(
            "direct (ceiling)",
            lambda port: None,
            lambda port, path: f"http://127.0.0.1:{up_port}{path}",
        ),
        Contender(
            "nginx + CORS",
            lambda port: nginx(work, f"cors{port}", nginx_cors_block(port, up_port)),
            lambda port, path: f"http://127.0.0.1:{port}{path}",
        ),
        Contender(
            "cors-anywhere + keep-alive",
            lambda port: subprocess.Popen(
                ["node", str(work / "ca.js"), str(port), "keepalive"], env=env
            ),
            lambda port, path: f"http://127.0.0.1:{port}/http://127.0.0.1:{up_port}{path}",
        ),
        Contender(
            "cors-anywhere (stock)",
            lambda port: subprocess.Popen(
                ["node", str(work / "ca.js"), str(port), "stock"], env=env
            ),
            lambda port, path: f"http://127.0.0.1:{port}/http://127.0.0.1:{up_port}{path}",
        ),
        Contender(
            "corsproxy, 1 worker", corsproxy(1), lambda port, path: f"http://127.0.0.1:{port}{path}"
        ),
        Contender(
            "corsproxy, 2 workers",
            corsproxy(2),
            lambda port, path: f"http://127.0.0.1:{port}{path}",
        ),
    ]
    if args.only:
        contenders = [c for c in contenders if any(o in c.name for o in args.only)] or contenders
    workloads = {
        name: spec
        for name, spec in WORKLOADS.items()
        if not args.only or any(o in name for o in args.only)
    } or WORKLOADS
    scripts = {
        name: lua_script(work, name, spec[0], spec[2], spec[3]) for name, spec in WORKLOADS.items()
    }
    results = Results()
    try:
        for round_ in range(args.rounds):
            for contender in contenders:
                port = free_port()
                proc = contender.start(port)  # type: ignore[operator]
                if proc is not None:
                    wait_port(port)
                    time.sleep(1.5)
                pid = proc.pid if proc is not None else upstream.pid
                try:
                    for workload, (_, path, _, _) in workloads.items():
                        url = contender.url(port, path)  # type: ignore[operator]
                        warm_up(url, scripts[workload])
                        c0, u0 = cpu_seconds(pid), cpu_seconds(upstream.pid)
                        requests, rps, p50, p99, mb_s = run_wrk(
                            url, scripts[workload], args.seconds
                        )
                        c1, u1 = cpu_seconds(pid), cpu_seconds(upstream.pid)
                        share = (u1 - u0) / args.seconds
                        results.samples.setdefault((workload, contender.name), []).append(
                            Sample(
                                rps,
                                p50,
                                p99,
                                mb_s,
                                1e6 * (c1 - c0) / max(requests, 1),
                                rss_mib(pid),
                                share,
                            )
                        )
                    print(f"round {round_ + 1}: {contender.name} done", file=sys.stderr)
                finally:
                    if proc is not None:
                        proc.terminate()
                        proc.wait(30)
    finally:
        upstream.terminate()
        upstream.wait(10)
        shutil.rmtree(work, ignore_errors=True)
    report = render(results, contenders, args)
    print(report)
    if args.write:
        write_doc(args.write, report)


def med(values: list[float]) -> float:
    return statistics.median(values)


def render(results: Results, contenders: list[Contender], args: argparse.Namespace) -> str:
    lines = [
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Linux {platform.release()}, "
        f"Python {platform.python_version()}; {args.rounds} rounds of {args.seconds} s per "
        "figure, wrk -t1 -c50 pinned to CPU 1, servers unpinned.",
        "",
    ]
    for workload in WORKLOADS:
        if not any((workload, c.name) in results.samples for c in contenders):
            continue
        lines += [
            f"### {workload}",
            "",
            "| contender | req/s | p50 ms | p99 ms | MB/s | CPU µs/request | RSS MiB "
            "| upstream CPU | vs cors-anywhere + keep-alive | vs nginx + CORS |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for contender in contenders:
            samples = results.samples.get((workload, contender.name), [])
            if not samples:
                continue
            ratio = {}
            for ref in ("cors-anywhere + keep-alive", "nginx + CORS"):
                refs = results.samples.get((workload, ref), [])
                ratios = [s.rps / r.rps for s, r in zip(samples, refs, strict=False) if r.rps]
                ratio[ref] = f"{med(ratios):.2f}x" if ratios else "-"
            lines.append(
                f"| {contender.name} | {med([s.rps for s in samples]):,.0f} "
                f"| {med([s.p50_ms for s in samples]):.2f} "
                f"| {med([s.p99_ms for s in samples]):.2f} "
                f"| {med([s.mb_s for s in samples]):,.1f} | {med([s.cpu_us for s in samples]):.0f} "
                f"| {med([s.rss_mib for s in samples]):.0f} "
                f"| {100 * med([s.upstream_share for s in samples]):.0f}% "
                f"| {ratio['cors-anywhere + keep-alive']} | {ratio['nginx + CORS']} |"
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
