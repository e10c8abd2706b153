"""Shared helpers: compile policies through the real config loader."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml

from corsproxy.config import Config, parse_config
from corsproxy.policy.cors import CorsPolicy, Decision, RequestView, decide

UPSTREAM = "http://127.0.0.1:9"


def config(doc: Mapping[str, Any] | str, env: Mapping[str, str] | None = None) -> Config:
    """Compile a config document (a mapping or YAML text) as `corsproxy check` would."""
    text = doc if isinstance(doc, str) else yaml.safe_dump(dict(doc), sort_keys=False)
    return parse_config(text, "test.yaml", env or {})


def policy(**cors: Any) -> CorsPolicy:
    """The default policy of a config whose `cors:` section is `cors`."""
    return config({"upstream": UPSTREAM, "cors": cors}).cors


def request(method: str = "GET", path: str = "/", **headers: str | list[str]) -> RequestView:
    """A request view; header keyword `request_method` means Access-Control-Request-Method."""
    names = {
        "origin": "Origin",
        "acrm": "Access-Control-Request-Method",
        "acrh": "Access-Control-Request-Headers",
        "acrpn": "Access-Control-Request-Private-Network",
    }
    pairs: list[tuple[str, str]] = []
    for key, value in headers.items():
        for line in [value] if isinstance(value, str) else value:
            pairs.append((names.get(key, key), line))
    return RequestView.from_pairs(method, path, pairs)


def aca(decision: Decision) -> dict[str, str]:
    """The Access-Control-* headers a decision sends, by name."""
    return {n: v for n, v in decision.headers if n.lower().startswith("access-control-")}


def run(pol: CorsPolicy, req: RequestView) -> Decision:
    return decide(pol, req)
