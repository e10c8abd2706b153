"""The route table: longest `path_prefix` wins, at segment boundaries. Pure code."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from corsproxy.cors import CorsPolicy
from corsproxy.paths import NormalizedPath, PathError, alternative_readings, fully_decoded


@dataclass(frozen=True, slots=True)
class Upstream:
    """Where requests go. Only ever combined with a request's path and query."""

    scheme: str
    host: str  # IPv6 literals keep their brackets
    port: int
    base_path: str = ""  # no trailing slash

    @property
    def authority(self) -> str:
        default = 443 if self.scheme == "https" else 80
        return self.host if self.port == default else f"{self.host}:{self.port}"

    @property
    def origin(self) -> str:
        return f"{self.scheme}://{self.authority}"

    def target(self, forward_path: str, raw_query: str = "") -> str:
        """The request target (origin-form) for a normalized path and the raw query, as sent."""
        query = f"?{raw_query}" if raw_query else ""
        return f"{self.base_path}{forward_path}{query}"

    def url(self, forward_path: str, raw_query: str = "") -> str:
        """The upstream URL for an already-normalized path and the raw query, as sent."""
        return f"{self.origin}{self.target(forward_path, raw_query)}"

    def __str__(self) -> str:
        return f"{self.origin}{self.base_path}"


@dataclass(frozen=True, slots=True)
class Timeouts:
    connect: float = 5.0
    read: float = 60.0


@dataclass(frozen=True, slots=True)
class Route:
    """A compiled route. The implicit default route has `path_prefix="/"`, `line=0`."""

    name: str
    path_prefix: str
    upstream: Upstream | None
    cors: CorsPolicy
    timeouts: Timeouts = Timeouts()
    preserve_host: bool = False
    strip_prefix: bool = False
    line: int = 0
    # Where each effective CORS key was set ("config.yaml:27"), for explanations.
    cors_sources: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def segments(self) -> tuple[str, ...]:
        return tuple(s for s in self.path_prefix.split("/") if s)

    def forward_path(self, path: NormalizedPath) -> str:
        return path.forward_path(len(self.segments) if self.strip_prefix else 0)


@dataclass(frozen=True, slots=True)
class RouteTable:
    """Routes by segment prefix; lookup walks the path's prefixes from longest to shortest."""

    routes: tuple[Route, ...]
    default: Route | None
    _by_segments: Mapping[tuple[str, ...], Route] = field(init=False, repr=False)
    _by_decoded: Mapping[tuple[str, ...], Route] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        by_segments: dict[tuple[str, ...], Route] = {}
        if self.default is not None:
            by_segments[()] = self.default
        for route in self.routes:
            by_segments[route.segments] = route
        # The same prefixes as a server that decodes every escape sees them.
        by_decoded = {fully_decoded(k): r for k, r in by_segments.items()}
        object.__setattr__(self, "_by_segments", MappingProxyType(by_segments))
        object.__setattr__(self, "_by_decoded", MappingProxyType(by_decoded))

    @staticmethod
    def _lookup(table: Mapping[tuple[str, ...], Route], segments: tuple[str, ...]) -> Route | None:
        for length in range(len(segments), -1, -1):
            route = table.get(segments[:length])
            if route is not None:
                return route
        return None

    def match(self, path: NormalizedPath) -> Route | None:
        """The route for a normalized path; None when no route (and no default) applies.

        Raises PathError when another reading of the same path that some upstreams use
        (decoded `%2F`, `\\` as `/`, `;params` dropped) would land on a different route:
        the decision must be made on the path the upstream will act on.
        """
        route = self._lookup(self._by_segments, path.segments)
        for reading in alternative_readings(path):
            if self._lookup(self._by_decoded, reading) is not route:
                raise PathError(
                    "path_ambiguous",
                    "the path reads as another route once '%2F', '\\' or ';' are interpreted",
                )
        return route
