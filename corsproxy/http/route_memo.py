"""Routing memoized per configuration: a request target's normalized path, query and route.

Splitting, normalizing and matching a path is a pure function of the request target and the
compiled routes (policy/paths.py, policy/routes.py), and clients send the same few targets
again and again (a browser's preflights above all), so the answers are kept per loaded
configuration: a bounded memo (two generations, like the decision memo in policy/cors.py),
keys up to 512 characters, so hostile traffic can only make it miss. A path that is refused
(PathError) is never kept: it is computed, and refused, each time.
"""

from __future__ import annotations

from corsproxy.config import Config
from corsproxy.policy.paths import NormalizedPath, normalize_path, split_target
from corsproxy.policy.routes import Route

__all__ = ["ENTRIES", "KEY_CHARS", "RouteMemo", "route_target"]

ENTRIES = 1024
KEY_CHARS = 512

Routed = tuple[NormalizedPath, str | None, Route | None]


def route_target(config: Config, target: str) -> Routed:
    """The straightforward lookup: raises PathError for a path corsproxy refuses."""
    path_text, query = split_target(target)
    path = normalize_path(path_text)
    return path, query, config.routes.match(path)


class RouteMemo:
    """`route_target()`, memoized for one configuration at a time (a reload starts afresh)."""

    __slots__ = ("_config", "_old", "_young")

    def __init__(self) -> None:
        self._config: Config | None = None
        self._young: dict[str, Routed] = {}
        self._old: dict[str, Routed] = {}

    def lookup(self, config: Config, target: str) -> Routed:
        if config is not self._config:
            self._config, self._young, self._old = config, {}, {}
        routed = self._young.get(target)
        if routed is not None:
            return routed
        routed = self._old.pop(target, None)
        if routed is None:
            routed = route_target(config, target)  # raises for a refused path: not kept
            if len(target) > KEY_CHARS:
                return routed
        if len(self._young) >= ENTRIES // 2:
            self._old, self._young = self._young, {}
        self._young[target] = routed
        return routed
