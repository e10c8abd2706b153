"""Soak with reloads under load: a bounded run that must lose nothing.

    python bench/soak.py [--minutes 3] [--rate 1000] [--reload-every 5] [--write docs/hardening.md]

wrk sends small GETs at a fixed rate (each connection waits between requests) through one
corsproxy worker in front of nginx, while the script rewrites the config between two valid
policies and sends SIGHUP every few seconds. It reports errors (non-2xx answers and socket
errors, which must be 0), the reloads the proxy counted, RSS and open fds after warm-up and
at the end (RSS growth must stay under 10 %), and exits non-zero when a check fails.
"""

from __future__ import annotations

import argparse
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from run import (
    ORIGIN,
    ROOT,
    ensure_tools,
    free_port,
    nginx,
    rss_mib,
    upstream_block,
    wait_port,
    write_doc,
)

POLICY = """upstream: http://127.0.0.1:{up}
admin: {{listen: "127.0.0.1:{admin}"}}
cors:
  allow_origins: [{origin}, "https://*.example.org"]
  allow_methods: [GET, POST, PUT]
  max_age: {max_age}
  expose_headers: [{expose}]
routes:
  - path_prefix: /small.json
    name: {name}
"""


def policy(variant: int, up: int, admin: int) -> str:
    return POLICY.format(
        up=up,
        admin=admin,
        origin=ORIGIN,
        max_age=600 if variant else 300,
        expose="ETag" if variant else "Content-Length",
        name=f"small-{variant}",
    )


def reloads(admin: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=5) as response:
        text = response.read().decode()
    found = re.search(r'^corsproxy_config_reloads_total\{result="success"\} (\S+)$', text, re.M)
    return int(float(found.group(1))) if found else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=3)
    parser.add_argument("--rate", type=int, default=1000, help="requests per second")
    parser.add_argument("--reload-every", type=float, default=5, help="seconds between SIGHUPs")
    parser.add_argument("--warm-up", type=float, default=15, help="seconds before RSS is taken")
    parser.add_argument("--write", type=Path, help="write the result into this Markdown file")
    args = parser.parse_args()
    ensure_tools()
    work = Path(tempfile.mkdtemp(prefix="corsproxy-soak-"))
    work.chmod(0o755)
    up_port, port, admin = free_port(), free_port(), free_port()
    upstream = nginx(work, "upstream", upstream_block(work, up_port))
    wait_port(up_port)
    config = work / "corsproxy.yaml"
    config.write_text(policy(0, up_port, admin))
    proxy = subprocess.Popen(
        [sys.executable, "-m", "corsproxy", "serve", "--config", str(config),
         "--listen", f"127.0.0.1:{port}", "--log-level", "warning"],
        stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip
    connections = 20
    script = work / "rate.lua"
    # wrk has no fixed-rate mode: each connection waits `delay` ms between its requests.
    script.write_text(
        f'wrk.headers["Origin"] = "{ORIGIN}"\n'
        f"function delay() return {1000 * connections / args.rate:.3f} end\n"
    )
    seconds = int(args.minutes * 60)
    try:
        wait_port(port)
        wait_port(admin)
        load = subprocess.Popen(
            ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "-s", str(script),
             f"http://127.0.0.1:{port}/small.json"],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        started = time.monotonic()
        rss_start = fds_start = 0.0
        sent = 0
        while load.poll() is None and time.monotonic() - started < seconds + 30:
            time.sleep(args.reload_every)
            if not rss_start and time.monotonic() - started >= args.warm_up:
                rss_start, fds_start = (
                    rss_mib(proxy.pid),
                    len(list(Path(f"/proc/{proxy.pid}/fd").iterdir())),
                )
            if time.monotonic() - started < seconds - args.reload_every:
                sent += 1
                config.write_text(policy(sent % 2, up_port, admin))
                proxy.send_signal(signal.SIGHUP)
        out, _ = load.communicate(timeout=60)
        rss_end = rss_mib(proxy.pid)
        fds_end = len(list(Path(f"/proc/{proxy.pid}/fd").iterdir()))
        counted = reloads(admin)
        alive = proxy.poll() is None
    finally:
        proxy.terminate()
        try:
            _, log = proxy.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proxy.kill()
            _, log = proxy.communicate()
        upstream.terminate()
        upstream.wait(10)
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    non_2xx = int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", out)) else 0
    socket_errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    growth = 100 * (rss_end - rss_start) / rss_start if rss_start else float("nan")
    bad_log = [line for line in log.splitlines() if "Traceback" in line or "Unclosed" in line]
    checks = {
        "errors = 0": non_2xx + socket_errors == 0,
        "RSS growth < 10 %": growth < 10,
        "every SIGHUP reloaded": counted == sent,
        "alive at the end": alive,
        "nothing bad in the log": not bad_log,
    }
    report = "\n".join(
        [
            f"{args.minutes:g} min at {args.rate} req/s ({connections} connections), SIGHUP "
            f"every {args.reload_every:g} s alternating two policies; RSS taken after "
            f"{args.warm_up:g} s of warm-up.",
            "",
            "| requests | errors (non-2xx + socket) | reloads sent / counted | RSS MiB start → end "
            "| growth | open fds start → end |",
            "|---|---|---|---|---|---|",
            f"| {requests:,} | {non_2xx} + {socket_errors} | {sent} / {counted} "
            f"| {rss_start:.1f} → {rss_end:.1f} | {growth:+.1f} % | {fds_start:.0f} → {fds_end} |",
            "",
            "Checks: "
            + ", ".join(f"{name}: {'pass' if ok else 'FAIL'}" for name, ok in checks.items()),
        ]
    )
    print(report)
    if args.write:
        write_doc(args.write, report, marker="soak")
    sys.exit(0 if all(checks.values()) else 1)


if __name__ == "__main__":
    main()
