"""What a big policy costs per request: the decision and the route lookup, in process.

    python bench/scale.py

Compares a policy with one exact origin, one glob, one regex and one route against one with
10,000 exact origins, 100 globs, 100 regexes and 1,000 routes, for an origin allowed by each
kind and for one that matches nothing. Target: the big policy costs at most 5 µs more.
"""

from __future__ import annotations

import sys
import timeit
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from corsproxy.config import parse_config
from corsproxy.policy.cors import RequestView, decide
from corsproxy.policy.paths import normalize_path


def config(exact: int, globs: int, regexes: int, routes: int) -> object:
    origins = [f"https://app{i}.example.com" for i in range(exact)]
    origins += [f"https://*.tenant{i}.example.net" for i in range(globs)]
    origins += [rf"regex:https://pr-[0-9]+\.preview{i}\.example\.org" for i in range(regexes)]
    doc = {
        "upstream": "http://127.0.0.1:9",
        "cors": {"allow_origins": origins},
        "routes": [{"path_prefix": f"/svc{i}/api"} for i in range(routes)],
    }
    return parse_config(yaml.safe_dump(doc), "scale.yaml", {})


CASES = {
    "exact origin": "https://app0.example.com",
    "glob origin": "https://a.b.tenant0.example.net",
    "regex origin": "https://pr-7.preview0.example.org",
    "no match": "https://evil.example",
}


def per_request(cfg: object, origin: str) -> float:
    path = "/svc0/api/orders/42"

    def one() -> None:
        route = cfg.routes.match(normalize_path(path))  # type: ignore[attr-defined]
        decide(route.cors, RequestView("GET", path, (origin,)))

    number = 20_000
    return min(timeit.repeat(one, number=number, repeat=5)) / number * 1e6


def main() -> None:
    small = config(1, 1, 1, 1)
    big = config(10_000, 100, 100, 1_000)
    print("| origin | small policy µs | big policy µs | difference µs |")
    print("|---|---|---|---|")
    for name, origin in CASES.items():
        a, b = per_request(small, origin), per_request(big, origin)
        print(f"| {name} | {a:.1f} | {b:.1f} | {b - a:+.1f} |")


if __name__ == "__main__":
    main()
