"""Run the exchange-isolation fuzzer against a real `corsproxy serve` process.

    python -m tests.differential.fuzz --seconds 60            # rounds of 10 s, random seeds
    python -m tests.differential.fuzz --seed 1234 --seconds 10 # replay one round
    python -m tests.differential.fuzz --well-behaved --seconds 300  # no misbehaving upstream

Each round prints its seed and a summary; any violation is printed with the seed, the request
and connection ids and the bytes, and the exit status is 1. A seed fixes every request and
every upstream answer; timing (and so which races happen) is the machine's.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.differential.check import Outcome, check
from tests.differential.client import Driver
from tests.differential.model import APP
from tests.differential.upstream import ScriptedUpstream
from tests.faults.harness import BAD_LOG, proxy

SHOW = 20  # violations printed per round


def proxy_config(upstream_port: int) -> dict[str, Any]:
    return {
        "upstream": f"http://127.0.0.1:{upstream_port}",
        "timeouts": {"connect": "2s", "read": "5s"},
        "cors": {
            "allow_origins": [APP],
            "allow_credentials": True,
            "allow_methods": ["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS"],
            "allow_headers": ["Content-Type", "X-Req-Id"],
            "expose_headers": ["X-Req-Id"],
        },
    }


@dataclass
class Round:
    seed: int
    seconds: float
    well_behaved: bool
    outcome: Outcome
    elapsed: float
    log_problems: list[str] = field(default_factory=list)

    def summary(self) -> str:
        s = self.outcome.stats
        mode = ", well-behaved upstream" if self.well_behaved else ""
        parts = [
            f"seed {self.seed} ({self.seconds:g} s{mode}, took {self.elapsed:.1f} s):",
            f"{s['client requests']} requests ({s['sent']} sent whole),",
            f"{s['upstream requests']} reached the upstream,",
            f"{s['own answers']} own answers, {s['proxy errors']} proxy errors,",
            f"{s['no answer (closed, reset, aborted)']} without an answer,",
            f"{s['forged answers sent']} forged answers sent,",
            f"{s['retries (idempotent, no clean answer before)']} allowed retries,",
            f"{s['late bytes skipped (connection already reused)']} late bytes skipped,",
            f"{s['undecidable late-bytes races']} undecidable races,",
            f"{s['violations']} violations",
        ]
        return " ".join(parts)


async def run_round(
    seed: int, seconds: float, *, clients: int = 8, well_behaved: bool = False, tmp: Path
) -> Round:
    started = time.monotonic()
    upstream = ScriptedUpstream(seed)
    await upstream.start()
    try:
        async with proxy(tmp, proxy_config(upstream.port)) as px:
            driver = Driver(px.url, seed, clients, well_behaved)
            # Every socket operation has its own timeout; this bounds the round as a whole.
            async with asyncio.timeout(seconds + 90):
                await driver.run(seconds)
            log_problems = [line for line in px.log if any(word in line for word in BAD_LOG)]
    finally:
        await upstream.stop()
    outcome = check(
        driver.requests, upstream.requests, upstream.oddities, list(driver.framing), driver.stray
    )
    outcome.violations.sort(key=lambda v: v.at or float("inf"))
    return Round(seed, seconds, well_behaved, outcome, time.monotonic() - started, log_problems)


def report(result: Round, out: Any = sys.stdout, show: int = SHOW) -> None:
    print(result.summary(), file=out)
    violations = result.outcome.violations
    for violation in violations[:show]:
        print(violation.render(result.seed), file=out)
    if len(violations) > show:
        print(f"... and {len(violations) - show} more", file=out)
    for line in result.log_problems[:5]:
        print(f"[seed {result.seed}] proxy log: {line.rstrip()}", file=out)
    if violations:
        flag = " --well-behaved" if result.well_behaved else ""
        print(
            f"replay: python -m tests.differential.fuzz --seed {result.seed}"
            f" --seconds {result.seconds:g}{flag}",
            file=out,
        )
    out.flush()


async def main_async(args: argparse.Namespace) -> int:
    failed = False
    with tempfile.TemporaryDirectory(prefix="corsproxy-differential-") as tmp:
        if args.seed is not None:
            plan = [(args.seed, args.seconds)]
        else:
            base = random.SystemRandom().randrange(1, 2**31)
            rounds = max(1, round(args.seconds / args.round))
            plan = [(base + i, args.seconds / rounds) for i in range(rounds)]
        print(f"seeds: {', '.join(str(seed) for seed, _ in plan)}", flush=True)
        for seed, seconds in plan:
            result = await run_round(
                seed, seconds, clients=args.clients, well_behaved=args.well_behaved, tmp=Path(tmp)
            )
            report(result, show=args.show)
            # A traceback or leak in the proxy's log fails the run too (a bad answer must
            # never crash the protocol, e.g. a 1xx with a body).
            failed = failed or bool(result.outcome.violations) or bool(result.log_problems)
    return 1 if failed else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="total time of requests")
    parser.add_argument("--seed", type=int, help="replay one round with this seed")
    parser.add_argument("--round", type=float, default=10.0, help="seconds per seed")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients")
    parser.add_argument("--show", type=int, default=SHOW, help="violations printed per round")
    parser.add_argument("--well-behaved", action="store_true", help="only correct upstream answers")
    sys.exit(asyncio.run(main_async(parser.parse_args())))


if __name__ == "__main__":
    main()
