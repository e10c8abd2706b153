"""The tightest allow-lists that would have allowed what the front ends sent (pure).

Shared by `corsproxy suggest FILE` (from a JSON access log) and the admin console (from the
ring of refusals, on top of the loaded policy). What was seen is a list of `Observation`s;
`suggest()` folds them per route into origins, methods and headers; `render_yaml()` writes
one `cors:` block per route. Malformed origins and `null` are never suggested: they are
listed apart. Every value shown is written as a JSON string (a YAML double-quoted scalar), so
no origin a client chose can end a line or start a key.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from corsproxy.config.schema import check_header_name, check_method
from corsproxy.config.spec import SpecError
from corsproxy.policy.cors import (
    SAFELISTED_HEADER_NAMES,
    SAFELISTED_METHODS,
    ReasonCode,
    parse_request_headers,
)
from corsproxy.policy.origins import OriginEntryError, compile_origin_entry

# Bounds on what one suggestion keeps (a log's content is the clients' choice).
MAX_ROUTES = 1000
MAX_ORIGINS_PER_ROUTE = 1000
MAX_NAMES_PER_ROUTE = 200  # methods, and header names, each
MAX_LINE_CHARS = 64 * 1024  # longer log lines are skipped
MAX_SHOWN_CHARS = 200  # a malformed origin is shown cut to this


@dataclass(frozen=True, slots=True)
class Observation:
    """One request (or `count` alike) with an Origin, as seen on a route."""

    route: str
    origin: str
    method: str = ""  # the request's own method
    request_method: str = ""  # a preflight's Access-Control-Request-Method
    request_headers: tuple[str, ...] = ()  # a preflight's requested header names
    refused: bool = False
    count: int = 1
    # Values a refusal reason names (`method_not_allowed:PUT`, `header_not_allowed:x-a`).
    reasons: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Base:
    """A route's current lists (the console suggests on top of the loaded policy)."""

    origins: tuple[str, ...] = ()
    methods: tuple[str, ...] = ()
    headers: tuple[str, ...] = ()
    any_origin: bool = False
    any_method: bool = False
    any_header: bool = False


@dataclass
class RouteSuggestion:
    route: str
    base: Base = field(default_factory=Base)
    origins: Counter[str] = field(default_factory=Counter)  # serialized origin -> requests
    refused: Counter[str] = field(default_factory=Counter)  # of those, refused
    methods: set[str] = field(default_factory=set)
    headers: set[str] = field(default_factory=set)
    not_suggested: Counter[str] = field(default_factory=Counter)  # malformed, null
    # Methods corsproxy's HTTP parser refuses (400 before any CORS): never suggested.
    unparsable: set[str] = field(default_factory=set)
    requests: int = 0
    refusals: int = 0
    dropped_origins: int = 0  # distinct origins beyond MAX_ORIGINS_PER_ROUTE

    def allow_origins(self) -> list[str]:
        if self.base.any_origin:
            return list(self.base.origins)
        seen = sorted(o for o in self.origins if o not in self.base.origins)
        return [*self.base.origins, *seen]

    def allow_methods(self) -> list[str]:
        if self.base.any_method:
            return list(self.base.methods)
        return [*self.base.methods, *sorted(m for m in self.methods if m not in self.base.methods)]

    def allow_headers(self) -> list[str]:
        if self.base.any_header:
            return list(self.base.headers)
        base = {h.lower() for h in self.base.headers}
        return [*self.base.headers, *sorted(h for h in self.headers if h not in base)]

    def to_json(self) -> dict[str, Any]:
        return {
            "route": self.route,
            "allow_origins": self.allow_origins(),
            "allow_methods": self.allow_methods(),
            "allow_headers": self.allow_headers(),
            "not_suggested": sorted(self.not_suggested),
            "unparsable_methods": sorted(self.unparsable),
            "requests": self.requests,
            "refused": self.refusals,
        }


def serialized_origin(text: str) -> str | None:
    """The origin as an allow-list entry, or None when no browser sends it (malformed).

    Suggestible means: an exact entry `check` accepts in allow_origins (policy/origins.py's
    own validation: IP addresses as browsers write them, no path, ASCII only) and written
    exactly as browsers serialize it (lower case, no default port), byte for byte."""
    if text in ("*", "null") or "*" in text or text.startswith("regex:"):
        return None
    try:
        entry, _ = compile_origin_entry(0, text)
    except OriginEntryError:
        return None
    origin = entry.exact
    if entry.kind != "exact" or origin is None:
        return None
    serialized = f"{origin.scheme}://{origin.host}" + (f":{origin.port}" if origin.port else "")
    return text if serialized == text else None


# Characters that would hide or reorder what is shown (controls, bidirectional overrides and
# isolates, line separators): written as \uXXXX wherever a client's value is displayed.
_INVISIBLE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]")


def visible(text: str) -> str:
    """`text` on one line, with controls and bidirectional marks escaped (`\\u202e`)."""
    return _INVISIBLE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def _method(text: str) -> str | None:
    """A method worth listing: one `check` accepts in allow_methods (a token, not `*`, not
    forbidden), not safelisted (never needs listing)."""
    if not text or len(text) > 64:
        return None
    try:
        check_method(text)
    except SpecError:
        return None
    upper = text.upper()
    if upper in ("DELETE", "GET", "HEAD", "OPTIONS", "POST", "PUT"):
        text = upper  # normalized by fetch
    if text in SAFELISTED_METHODS:  # OPTIONS is not: fetch(url, {method: "OPTIONS"}) needs it
        return None
    return text


def _header(name: str) -> str | None:
    name = name.strip().lower()
    if not name or len(name) > 256 or name in SAFELISTED_HEADER_NAMES:
        return None
    try:
        check_header_name(name)  # what `check` accepts in allow_headers (a token, not `*`)
    except SpecError:
        return None
    return name


def suggest(
    observations: Iterable[Observation],
    bases: Mapping[str, Base] | None = None,
    parsable: Callable[[str], bool] | None = None,
) -> list[RouteSuggestion]:
    """Fold what was seen per route, on top of each route's `bases` entry when given.

    `parsable(method)`: whether corsproxy's HTTP parser reads a request with that method (it
    answers 400 to others, lower-case `patch` among them, before any CORS): such methods are
    listed apart, never suggested."""
    routes: dict[str, RouteSuggestion] = {}
    readable: dict[str, bool] = {}
    for name, base in (bases or {}).items():
        routes[name] = RouteSuggestion(name, base)
    for seen in observations:
        route = routes.get(seen.route)
        if route is None:
            if len(routes) >= MAX_ROUTES:
                continue
            route = routes[seen.route] = RouteSuggestion(seen.route)
        route.requests += seen.count
        route.refusals += seen.count if seen.refused else 0
        origin = serialized_origin(seen.origin) if seen.origin != "null" else None
        if origin is None:
            text = seen.origin
            shown = text if len(text) <= MAX_SHOWN_CHARS else text[:MAX_SHOWN_CHARS] + "\u2026"
            if shown in route.not_suggested or len(route.not_suggested) < MAX_ORIGINS_PER_ROUTE:
                route.not_suggested[shown] += seen.count
            continue
        if origin not in route.origins and len(route.origins) >= MAX_ORIGINS_PER_ROUTE:
            route.dropped_origins += 1
            continue
        route.origins[origin] += seen.count
        if seen.refused:
            route.refused[origin] += seen.count
        methods = [seen.request_method, seen.method]
        headers = list(seen.request_headers)
        for reason in seen.reasons:
            code, _, detail = reason.partition(":")
            if code == ReasonCode.METHOD_NOT_ALLOWED.value:
                methods.append(detail)
            elif code == ReasonCode.HEADER_NOT_ALLOWED.value:
                headers.append(detail)
        for text in methods:
            method = _method(text)
            if (
                method is None
                or method in route.methods
                or len(route.methods) >= MAX_NAMES_PER_ROUTE
            ):
                continue
            if parsable is not None:
                if method not in readable:
                    readable[method] = parsable(method)
                if not readable[method]:
                    if len(route.unparsable) < MAX_NAMES_PER_ROUTE:
                        route.unparsable.add(method)
                    continue
            route.methods.add(method)
        for text in headers:
            header = _header(text)
            if header is not None and len(route.headers) < MAX_NAMES_PER_ROUTE:
                route.headers.add(header)
    return sorted(routes.values(), key=lambda r: r.route)


def _q(text: str) -> str:
    return json.dumps(text, ensure_ascii=True)


def _flow(items: Sequence[str]) -> str:
    return "[" + ", ".join(_q(i) for i in items) + "]"


def render_yaml(suggestions: Sequence[RouteSuggestion], header: Sequence[str] = ()) -> str:
    """One `cors:` block per route, as YAML documents; comments say where each came from."""
    out = [f"# {line}" for line in header]
    out.append("# One cors: block per route: paste it into that route (the route named")
    out.append('# "default" is the top-level cors:). GET, HEAD and POST never need listing.')
    if not suggestions:
        out.append("# Nothing seen: no request with an Origin on any route.")
    for route in suggestions:
        out.append("---")
        out.append(
            f"# route {_q(route.route)}: {route.requests} request(s) with an Origin seen, "
            f"{route.refusals} refused or would-refuse"
        )
        origins = route.allow_origins()
        if origins:
            out.append("cors:")
            out.append("  allow_origins:")
            for origin in origins:
                note = ""
                if origin in route.origins:
                    count, refused = route.origins[origin], route.refused[origin]
                    note = f"  # {count} request(s)" + (f", {refused} refused" if refused else "")
                    if origin not in route.base.origins and route.base.origins:
                        note += " (new)"
                out.append(f"    - {_q(origin)}{note}")
            methods = route.allow_methods()
            if methods:
                out.append(f"  allow_methods: {_flow(methods)}")
            headers = route.allow_headers()
            if headers:
                out.append(f"  allow_headers: {_flow(headers)}")
        else:
            out.append("# nothing to suggest: no well-formed origin seen")
        if route.dropped_origins:
            out.append(
                f"# {route.dropped_origins} more distinct origin(s) not kept "
                f"(at most {MAX_ORIGINS_PER_ROUTE} per route)"
            )
        if route.not_suggested:
            out.append("# not suggested: malformed origins (no browser sends them) and null:")
            for text, count in sorted(route.not_suggested.items()):
                out.append(f"#   {_q(text)}  ({count} request(s))")
        for method in sorted(route.unparsable):
            upper = method.upper()
            if upper != method:
                why = f"the page must send it in upper case ({_q(upper)})"
            else:
                why = "it is not a method the parser knows"
            out.append(
                f"# not suggested: method {_q(method)}: corsproxy's HTTP parser answers 400 to "
                f"it before any CORS; {why}"
            )
    return "\n".join(out) + "\n"


@dataclass
class LogStats:
    lines: int = 0
    used: int = 0  # access lines of requests with an Origin on a route
    skipped: int = 0  # not JSON, not an access line, or too long
    json_lines: int = 0  # lines that are JSON objects (access lines or not)


def _names(value: Any) -> tuple[str, ...]:
    """A preflight's requested headers, as the log writes them (a comma list or a list)."""
    if isinstance(value, list):
        value = ",".join(str(v) for v in value)
    if not isinstance(value, str) or not value:
        return ()
    return parse_request_headers([value[:4096]]) or ()


def _reasons(value: Any) -> tuple[str, ...]:
    if isinstance(value, list):
        return tuple(str(v) for v in value[:64])
    if isinstance(value, str) and value:
        return tuple(r.strip() for r in value.replace(";", ",").split(",")[:64] if r.strip())
    return ()


def observations_from_log(lines: Iterable[str], stats: LogStats) -> Iterable[Observation]:
    """The access lines of a JSON log (`--log-format json`) with an Origin on a route.

    Reads `route`, `origin`, `method`, `cors` and `reason`, and a preflight's
    `request_method` and `request_headers` when the log has them."""
    for line in lines:
        stats.lines += 1
        if len(line) > MAX_LINE_CHARS:
            stats.skipped += 1
            continue
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):  # not JSON, or nested too deep to read
            stats.skipped += 1
            continue
        stats.json_lines += isinstance(record, dict)
        if not isinstance(record, dict) or "cors" not in record or "route" not in record:
            stats.skipped += 1  # not an access line (a start-up message, a warning)
            continue
        origin, route, verdict = record.get("origin"), record.get("route"), record.get("cors")
        if not isinstance(origin, str) or not origin or not isinstance(route, str) or not route:
            continue  # not a CORS request, or no route took it
        if verdict not in ("allowed", "refused", "would_refuse"):
            continue
        method = record.get("method")
        request_method = record.get("request_method")
        stats.used += 1
        yield Observation(
            route=route,
            origin=origin,
            method=method if isinstance(method, str) and method != "OPTIONS" else "",
            request_method=request_method if isinstance(request_method, str) else "",
            request_headers=_names(record.get("request_headers")),
            refused=verdict != "allowed",
            reasons=_reasons(record.get("reason")),
        )
