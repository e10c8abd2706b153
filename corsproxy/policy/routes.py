"""The route table: longest `path_prefix` wins, at segment boundaries. Pure code."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from corsproxy.policy.config_places import PolicyPlaces
from corsproxy.policy.cors import CorsPolicy
from corsproxy.policy.paths import (
    ALL_READINGS,
    NormalizedPath,
    PathError,
    Reading,
    climbing_reading,
    fold_ascii,
    fold_unicode,
    has_other_readings,
    may_be_short_name,
    readings_of,
)


def no_mapping() -> Mapping[str, str]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Upstream:
    """Where requests go. Only ever combined with a request's path and query."""

    scheme: str
    host: str  # IPv6 literals keep their brackets
    port: int
    base_path: str = ""  # no trailing slash
    # The compiled `upstream_tls` (config/upstream_tls.py: UpstreamTLS), opaque here; part of
    # the identity: the upstream client pools connections per Upstream.
    tls: object | None = None

    @property
    def authority(self) -> str:
        default = 443 if self.scheme == "https" else 80
        return self.host if self.port == default else f"{self.host}:{self.port}"

    @property
    def origin(self) -> str:
        return f"{self.scheme}://{self.authority}"

    def target(self, forward_path: str, raw_query: str | None = None) -> str:
        """The request target (origin-form) for a normalized path and the raw query, as sent:
        None is no `?`, "" an empty query (`/x?`, kept: an upstream may tell them apart)."""
        query = "" if raw_query is None else f"?{raw_query}"
        return f"{self.base_path}{forward_path}{query}"

    def url(self, forward_path: str, raw_query: str | None = None) -> str:
        """The upstream URL for an already-normalized path and the raw query, as sent."""
        return f"{self.origin}{self.target(forward_path, raw_query)}"

    def __str__(self) -> str:
        return f"{self.origin}{self.base_path}"


@dataclass(frozen=True, slots=True)
class Timeouts:
    connect: float = 5.0
    read: float = 60.0
    send: float = 60.0  # the longest a write to the client may wait with no byte taken


@dataclass(frozen=True, slots=True)
class Route:
    """A compiled route. The implicit default route has `path_prefix="/"`, `line=0`."""

    name: str
    path_prefix: str
    upstream: Upstream | None
    cors: CorsPolicy
    timeouts: Timeouts = Timeouts()
    preserve_host: bool = True
    strip_prefix: bool = False
    line: int = 0
    # What the answers get rewritten (policy/url_rewrite.py): URLs pointing at the upstream,
    # and cookies' Path and Domain attributes (from -> to, in the order written).
    rewrite_redirects: bool = True
    cookie_path: Mapping[str, str] = field(default_factory=no_mapping)
    cookie_domain: Mapping[str, str] = field(default_factory=no_mapping)
    # Where each effective CORS key was set ("config.yaml:27"), for explanations.
    cors_sources: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    # Where each policy key is written, as dotted keys with file:line (for `explain`'s fixes).
    cors_places: PolicyPlaces | None = field(default=None, compare=False)

    @property
    def segments(self) -> tuple[str, ...]:
        return tuple(s for s in self.path_prefix.split("/") if s)

    def forward_path(self, path: NormalizedPath) -> str:
        return path.forward_path(len(self.segments) if self.strip_prefix else 0)

    @property
    def below_root(self) -> bool:
        """Whether the path is forwarded below a root of its own (a stripped prefix or an
        upstream base path), which an upstream's `..` could leave."""
        return self.strip_prefix or bool(self.upstream and self.upstream.base_path)


class AmbiguousPath(PathError):
    """A path that another reading puts on another route: `route` is corsproxy's own
    choice, `other` the route of the reading described by `reading`."""

    def __init__(self, route: Route | None, other: Route | None, reading: str) -> None:
        super().__init__(
            "path_ambiguous",
            f"the path reads as another route on servers that read it {reading}",
        )
        self.route = route
        self.other = other
        self.reading = reading


Key = tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RouteTable:
    """Routes by segment prefix; lookup walks the path's prefixes from longest to shortest.

    Prefixes match case-insensitively (ASCII) unless `case_sensitive`; the forwarded path
    keeps the client's bytes either way.
    """

    routes: tuple[Route, ...]
    default: Route | None
    case_sensitive: bool = False
    _primary: Mapping[Key, Route] = field(init=False, repr=False)
    # For each reading (and, when case-insensitive, each folding: False ASCII, True wide):
    # the prefixes as that reading sees them.
    _readings: Mapping[tuple[Reading, bool], Mapping[Key, Route]] = field(init=False, repr=False)
    _always_read: bool = field(init=False, repr=False)  # a prefix has other readings itself
    _root_only: bool = field(init=False, repr=False)  # one prefix, `/`: no reading can differ
    _wide: bool = field(init=False, repr=False)  # a prefix reads as non-ASCII
    _depth: int = field(init=False, repr=False)  # segments beyond it never decide
    # For each position, the prefix segments there (folded): only a segment whose stem is one
    # of them can lose a '.ext' suffix onto another route.
    _stems: tuple[frozenset[str], ...] = field(init=False, repr=False)
    _below_root: bool = field(init=False, repr=False)  # a route forwards below a base

    def __post_init__(self) -> None:
        object.__setattr__(self, "_depth", 1 << 30)  # no cut while the tables are built
        entries: list[tuple[Key, Route]] = [((), self.default)] if self.default else []
        entries += [(route.segments, route) for route in self.routes]
        primary = {self._key(segments): route for segments, route in entries}
        folds: tuple[bool, ...] = (False,) if self.case_sensitive else (False, True)
        readings: dict[tuple[Reading, bool], Mapping[Key, Route]] = {}
        # A prefix without other readings reads the same in all of them, and most tables
        # come out equal: build each distinct one once.
        plain = [not has_other_readings(segments) for segments, _ in entries]
        built: dict[tuple[tuple[Key, ...], bool], Mapping[Key, Route]] = {}
        for reading in ALL_READINGS:
            keys = tuple(
                segments if same else reading.segments("/".join(segments))
                for (segments, _), same in zip(entries, plain, strict=True)
            )
            for wide in folds:
                if (keys, wide) not in built:
                    built[keys, wide] = MappingProxyType(
                        {
                            self._fold(key, wide): route
                            for key, (_, route) in zip(keys, entries, strict=True)
                        }
                    )
                readings[reading, wide] = built[keys, wide]
        wide_prefix = any(
            not seg.isascii()
            for segments, _ in entries
            for seg in Reading().segments("/".join(segments))
        )
        object.__setattr__(self, "_primary", MappingProxyType(primary))
        object.__setattr__(self, "_root_only", list(primary) == [()])
        object.__setattr__(self, "_readings", MappingProxyType(readings))
        object.__setattr__(
            self, "_always_read", any(has_other_readings(segments) for segments, _ in entries)
        )
        object.__setattr__(self, "_wide", wide_prefix and not self.case_sensitive)
        depth = max((len(key) for table in readings.values() for key in table), default=0)
        object.__setattr__(self, "_depth", max(depth, *(len(key) for key in primary), 0))
        stems = [set[str]() for _ in range(max((len(key) for key in primary), default=0))]
        for key in primary:
            for i, seg in enumerate(key):
                stems[i].add(seg)
        object.__setattr__(self, "_stems", tuple(map(frozenset, stems)))
        below = any(route.below_root for _, route in entries)
        object.__setattr__(self, "_below_root", below)

    def _key(self, segments: Key) -> Key:
        # Normalized segments are ASCII (escapes stay encoded), so lower() is ASCII folding.
        segments = segments[: self._depth]
        return segments if self.case_sensitive else tuple(map(str.lower, segments))

    def _fold(self, segments: Key, wide: bool) -> Key:
        segments = segments[: self._depth]
        if self.case_sensitive:
            return segments
        fold = fold_unicode if wide else fold_ascii
        return tuple(fold(s) for s in segments)

    @staticmethod
    def _lookup(table: Mapping[Key, Route], segments: Key) -> Route | None:
        """`segments` are already cut to the table's depth."""
        for length in range(len(segments), -1, -1):
            route = table.get(segments[:length])
            if route is not None:
                return route
        return None

    def match(self, path: NormalizedPath) -> Route | None:
        """The route for a normalized path; None when no route (and no default) applies.

        Raises AmbiguousPath (`path_ambiguous`) when another reading of the same path that
        some upstreams use (see paths.Reading, and case folding) lands on a different
        route: the decision must hold for the path the upstream will act on.
        """
        route: Route | None
        if self._root_only:
            # Every reading of every path lands on the one route (a single-upstream config,
            # the common case): only a climb above its base path is left to check.
            route = self._primary[()]
        else:
            key = self._key(path.segments)
            route = self._lookup(self._primary, key)
            if self._always_read or has_other_readings(path.raw_segments):
                self._check_readings(path, route)
            bare = self._without_suffixes(key)
            if bare is not None and (other := self._lookup(self._primary, bare)) is not route:
                raise AmbiguousPath(route, other, _SUFFIX)
        if self._below_root and route is not None and route.below_root:
            remainder = path.raw_segments[len(route.segments) if route.strip_prefix else 0 :]
            reading = climbing_reading(remainder)
            if reading is not None:
                raise PathError(
                    "path_ambiguous",
                    "the path climbs above the route's upstream base path on servers that "
                    f"read it {reading.describe()}",
                )
        return route

    def _without_suffixes(self, key: Key) -> Key | None:
        """`key` with a '.ext' dropped from each segment whose stem is a prefix segment at
        its position, or None when there is none (the common case: a scan of the segments
        that could be a prefix's)."""
        out: list[str] | None = None
        stems = self._stems
        for i, seg in enumerate(key[: len(stems)]):
            dot = seg.rfind(".")
            if dot > 0 and seg[:dot] in stems[i] and _EXT.match(seg, dot + 1):
                out = out or list(key)
                out[i] = seg[:dot]
        return None if out is None else tuple(out)

    def _check_readings(self, path: NormalizedPath, route: Route | None) -> None:
        for reading, read in readings_of(path.raw_segments):
            segments = read[: self._depth]
            bare = self._without_suffixes(self._fold(segments, False))
            if bare is not None and (other := self._lookup(self._primary, bare)) is not route:
                raise AmbiguousPath(route, other, reading.describe() + ", " + _SUFFIX)
            wide_too = not self.case_sensitive and (
                self._wide or not all(s.isascii() for s in segments)
            )
            for wide in (False, True) if wide_too else (False,):
                table = self._readings[reading, wide]
                folded = self._fold(segments, wide)
                other = self._lookup(table, folded)
                if other is route and reading.windows and any("~" in s for s in folded):
                    others = (
                        r for k, r in table.items() if r is not route and _short_names(k, folded)
                    )
                    other = next(others, route)
                if other is not route:
                    how = reading.describe()
                    if wide:
                        how += ", letters compared beyond ASCII (case folding, best fit, Latin-1)"
                    raise AmbiguousPath(route, other, how)


# Rails' optional `(.:format)` and Spring MVC's suffix pattern matching (the default before
# 5.3) serve the `/internal` handler for `/internal.json`.
_SUFFIX = "with a trailing '.ext' dropped (Rails formats, Spring suffix patterns)"
_EXT = re.compile(r"[A-Za-z0-9]{1,10}\Z")


def _short_names(prefix: Key, segments: Key) -> bool:
    """Whether `segments` start with `prefix` once some of them are read as 8.3 short names."""
    if len(prefix) > len(segments) or prefix == segments[: len(prefix)]:
        return False
    return all(p == s or may_be_short_name(s, p) for p, s in zip(prefix, segments, strict=False))
