"""The config compiler: the sections the specs read, compiled into immutable objects.

A policy is checked by one validator per concern, each appending to the context's one list of
diagnostics, so one pass reports every problem (as jub0bs/cors's config.go does). A key that
is not written is not given a value here: the spec's target dataclass default applies.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import StrEnum
from types import MappingProxyType
from typing import Any

from corsproxy.config.listeners import check_listeners
from corsproxy.config.policy_places import policy_places
from corsproxy.config.rewrite_keys import REWRITE_KEYS
from corsproxy.config.schema import MIN_WORKER_RSS, POLICY_SPEC, Admin, Config, Limits
from corsproxy.config.spec import INVALID, STAR, Context, Invalid, Item, Section
from corsproxy.config.tls import compile_tls
from corsproxy.config.upstream_tls import with_upstream_tls
from corsproxy.policy.cors import CorsPolicy, Mode
from corsproxy.policy.forwarded import Network, TrustedProxies
from corsproxy.policy.origins import (
    OriginEntry,
    OriginEntryError,
    OriginMatcher,
    compile_origin_entry,
    downgrades,
    near_misses,
    probe,
)
from corsproxy.policy.routes import Route, RouteTable, Timeouts, Upstream

SAFARI_MAX_AGE = 600
CHROMIUM_MAX_AGE = 7200
# Methods whose lower-case spelling is surely a typo (methods are case-sensitive).
_CASED_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH")


class Problem(StrEnum):
    """What a compiler diagnostic is about: its `reason`."""

    ORIGIN_ENTRY = "origin-entry"
    WILDCARD_WITH_CREDENTIALS = "wildcard-with-credentials"
    INSECURE_WITH_CREDENTIALS = "insecure-with-credentials"
    BROAD_REGEX_WITH_CREDENTIALS = "broad-regex-with-credentials"
    NULL_WITH_CREDENTIALS = "null-with-credentials"
    EXPOSE_WILDCARD_WITH_CREDENTIALS = "expose-wildcard-with-credentials"
    BROAD_REGEX = "broad-regex"
    PRIVATE_NETWORK_WILDCARD = "private-network-wildcard"
    REDUNDANT_ORIGINS = "redundant-origins"
    NO_ORIGIN = "no-origin"
    METHOD_CASE = "method-case"
    MAX_AGE_ABOVE_CAP = "max-age-above-cap"
    REPORT_ONLY = "report-only"
    NO_UPSTREAM = "no-upstream"
    DUPLICATE_PREFIX = "duplicate-prefix"
    DUPLICATE_ROUTE_NAME = "duplicate-route-name"
    TRUST_EVERYONE = "trust-everyone"
    UPSTREAM_TLS_NOT_INHERITED = "upstream-tls-not-inherited"


_LOOPBACK = re.compile(r"(localhost|[^/]*\.localhost|127(\.\d{1,3}){3}|\[::1\])\Z")


# Origins no policy should allow: a regex that matches one of them allows (nearly) anyone.
# With `near_misses()` (names in the regex, prefixed and suffixed), what CORS scanners try.
ATTACKER_PROBES = (
    "https://attacker.invalid",
    "https://evil.example.com.attacker.invalid",
    "https://attacker.invalid:8443",
    "https://localhost.attacker.invalid",
    "https://attacker.com",
    "https://evil.net",
    "https://x.org",
    "https://a.io",
    "https://attacker.co.uk",
    "https://evil.dev",
    "https://a.app",
    "https://x.co",
    "null",
)
# With credentials, a regex must not match plain-http origins of strangers either.
INSECURE_PROBES = (
    "http://attacker.invalid",
    "http://evil.example.com.attacker.invalid",
    "http://attacker.com",
    "http://evil.net",
)


def _probes(entry: OriginEntry, credentials: bool) -> tuple[str, ...]:
    near = near_misses(entry)
    if not credentials:
        return ATTACKER_PROBES + near
    insecure = tuple(p.replace("https://", "http://", 1) for p in near)
    return ATTACKER_PROBES + INSECURE_PROBES + near + insecure


def _insecure_match(entry: OriginEntry) -> str | None:
    """The plain-http origin of its own names a regex matches (`http://example.com` for
    `https?://example\\.com`), loopback aside."""
    plain = tuple(d for d in downgrades(entry) if not _LOOPBACK.match(d[len("http://") :]))
    return probe(entry, plain)


def _insecure(entry: OriginEntry) -> bool:
    """A plain-http origin that is not loopback (browsers treat loopback as secure)."""
    if entry.regex is not None:
        return _insecure_match(entry) is not None
    target = entry.exact or entry.pattern
    if target is None or target.scheme != "http":
        return False
    host = target.host
    if entry.pattern is not None and entry.pattern.any_subdomain:
        host = "x." + host
    return not _LOOPBACK.match(host)


# --- one policy -----------------------------------------------------------------------


@dataclass
class _Layer:
    """One level of policy keys (the default policy or a route's overrides)."""

    section: Section | None
    disabled: bool = False


def _layer(value: Any) -> _Layer:
    if value is False:
        return _Layer(None, disabled=True)
    return _Layer(value if isinstance(value, Section) else None)


@dataclass
class PolicyKeys:
    """The keys of one policy: the last layer's over the earlier ones', and where each was set."""

    layers: list[_Layer]
    where: str  # the dotted key of the last layer ("cors", "routes[2].cors")
    file: str

    @property
    def enabled(self) -> bool:
        return not self.layers[-1].disabled

    def _section(self, name: str) -> Section | None:
        for layer in reversed(self.layers):
            if layer.section is not None and layer.section.has(name):
                return layer.section
        return None

    def written(self, name: str) -> Any:
        """The value of the nearest layer that wrote the key, or None."""
        section = self._section(name)
        return None if section is None else section.get(name)

    def get(self, name: str) -> Any:
        """The value written, else the default (CorsPolicy's field, or the spec's)."""
        section = self._section(name)
        return POLICY_SPEC.defaults.get(name) if section is None else section.get(name)

    def unreadable(self, name: str) -> bool:
        """The nearest layer that writes the key wrote a value with an error (already
        reported): the earlier layers' value does not apply."""
        for layer in reversed(self.layers):
            if layer.section is not None and name in layer.section.lines:
                return not layer.section.has(name)
        return False

    def blame(self, name: str) -> tuple[int, str, str]:
        """Line, dotted key and file of the key's value (line 0: not written)."""
        section = self._section(name)
        if section is None:
            return 0, f"{self.where}.{name}" if self.where else name, self.file
        return section.lines[name], section.child_key(name), section.files[name]

    def sources(self) -> dict[str, str]:
        """Where each written key was set ("config.yaml:27", or a flag), for explanations."""
        out: dict[str, str] = {}
        for name in POLICY_SPEC.fields:
            section = self._section(name)
            if section is not None:
                file, line = section.files[name], section.lines[name]
                out[name] = f"{file}:{line}" if line else file
        return out


@dataclass(frozen=True, slots=True)
class _Origins:
    items: list[Item[str]]  # as written, by index
    entries: list[OriginEntry]  # those that compiled
    matcher: OriginMatcher


def _compile_origins(keys: PolicyKeys, ctx: Context) -> _Origins:
    items: list[Item[str]] = keys.get("allow_origins")
    entries: list[OriginEntry] = []
    for i, item in enumerate(items):
        try:
            entry, warnings = compile_origin_entry(i, item.value)
        except OriginEntryError as exc:
            message = exc.message + item.variables
            ctx.error(item.line, item.key, message, exc.hint, item.file, Problem.ORIGIN_ENTRY)
            continue
        for warning in warnings:
            ctx.warn(item.line, item.key, warning, file=item.file, reason=Problem.ORIGIN_ENTRY)
        entries.append(entry)
    return _Origins(items, entries, OriginMatcher(tuple(entries)))


def _check_credentials(keys: PolicyKeys, origins: _Origins, ctx: Context) -> None:
    """With credentials: no '*', no plain http, no regex matching strangers, no 'null'."""
    if not keys.enabled or not keys.get("allow_credentials"):
        return
    cred_line, _, cred_file = keys.blame("allow_credentials")
    for entry in origins.entries:
        item = origins.items[entry.index]
        at = ctx.place(cred_file, cred_line, item.file)
        if entry.kind == "any":
            ctx.error(
                item.line,
                item.key,
                f"'*' cannot be used with allow_credentials: true ({at})",
                "browsers refuse '*' with credentials; list the origins, e.g. "
                "'https://app.example.com'",
                item.file,
                Problem.WILDCARD_WITH_CREDENTIALS,
            )
        elif _insecure(entry) and not keys.get("allow_insecure_origins"):
            plain = _insecure_match(entry)
            ctx.error(
                item.line,
                item.key,
                (f"{entry.text!r} matches {plain!r}, which" if plain else f"{entry.text!r}")
                + f" is plain http and allow_credentials is true ({at})",
                "anyone on the network path can send requests as an http origin and read "
                "the answers; use https, or set allow_insecure_origins: true (or "
                "--allow-insecure-origins / CORSPROXY_ALLOW_INSECURE_ORIGINS) if you accept "
                "that (loopback origins such as http://localhost:3000 are always allowed)",
                item.file,
                Problem.INSECURE_WITH_CREDENTIALS,
            )
        elif (found := probe(entry, _probes(entry, True))) is not None:
            ctx.error(
                item.line,
                item.key,
                f"{entry.text!r} matches {found!r}, so it is like '*', which cannot be used "
                f"with allow_credentials: true ({at})",
                "any site could read answers with the user's cookies; anchor the regex to "
                "your own sites, e.g. 'regex:https://[a-z0-9-]+\\.example\\.com'",
                item.file,
                Problem.BROAD_REGEX_WITH_CREDENTIALS,
            )
        elif entry.kind == "null":
            ctx.error(
                item.line,
                item.key,
                f"'null' cannot be used with allow_credentials: true ({at})",
                "any page can send Origin: null from a sandboxed iframe",
                item.file,
                Problem.NULL_WITH_CREDENTIALS,
            )
    if keys.get("expose_headers") is STAR and not keys.unreadable("expose_headers"):
        line, key, file = keys.blame("expose_headers")
        ctx.error(
            line,
            key,
            "'*' cannot be used with allow_credentials: true "
            f"({ctx.place(cred_file, cred_line, file)})",
            "browsers read '*' literally with credentials; list the headers to expose",
            file,
            Problem.EXPOSE_WILDCARD_WITH_CREDENTIALS,
        )


def _check_broad_regexes(keys: PolicyKeys, origins: _Origins, ctx: Context) -> None:
    """Without credentials a regex that matches strangers is allowed, but likely a mistake."""
    if not keys.enabled or keys.get("allow_credentials"):
        return
    for entry in origins.entries:
        found = probe(entry, _probes(entry, False))
        if found is not None:
            item = origins.items[entry.index]
            ctx.warn(
                item.line,
                item.key,
                f"{entry.text!r} matches {found!r}: it allows nearly any origin",
                "write '*' if any origin is meant, or anchor the regex to your own sites",
                item.file,
                Problem.BROAD_REGEX,
            )


def _check_private_network(keys: PolicyKeys, origins: _Origins, ctx: Context) -> None:
    any_origin = origins.matcher.any
    if not keys.enabled or any_origin is None or not keys.get("allow_private_network"):
        return
    line, key, file = keys.blame("allow_private_network")
    item = origins.items[any_origin.index]
    ctx.warn(
        line,
        key,
        "allow_private_network: true with '*' in allow_origins "
        f"({ctx.place(item.file, item.line, file)}): every public site can reach "
        "this private-network API",
        "list the origins that may reach it",
        file,
        Problem.PRIVATE_NETWORK_WILDCARD,
    )


def _check_redundant_origins(keys: PolicyKeys, origins: _Origins, ctx: Context) -> None:
    any_origin = origins.matcher.any
    if any_origin is None or len(origins.entries) < 2:
        return
    item = origins.items[any_origin.index]
    ctx.warn(
        item.line,
        item.key,
        "'*' allows every origin; the other entries do nothing",
        file=item.file,
        reason=Problem.REDUNDANT_ORIGINS,
    )


def _check_no_origin(keys: PolicyKeys, origins: _Origins, ctx: Context) -> None:
    # After an error the empty list may be its consequence: say nothing more.
    if not keys.enabled or origins.entries or ctx.failed:
        return
    line, key, file = keys.blame("allow_origins")
    last = keys.layers[-1].section
    ctx.warn(
        line or (last.line if last else 1),
        key,
        "no origin is allowed: every cross-origin request is refused",
        "add allow_origins, or write cors: false",
        file,
        Problem.NO_ORIGIN,
    )


def _check_method_case(keys: PolicyKeys, origins: _Origins, ctx: Context) -> None:
    methods = keys.written("allow_methods")
    if methods is None or methods is STAR:
        return
    for item in methods:
        upper = item.value.upper()
        if item.value != upper and upper in _CASED_METHODS:
            ctx.warn(
                item.line,
                item.key,
                f"methods are case-sensitive: '{item.value}' is not '{upper}'",
                f"write {upper}",
                item.file,
                Problem.METHOD_CASE,
            )


def _check_max_age(keys: PolicyKeys, origins: _Origins, ctx: Context) -> None:
    max_age: int = keys.get("max_age")
    if not keys.enabled or max_age <= SAFARI_MAX_AGE:
        return
    line, key, file = keys.blame("max_age")
    if max_age > CHROMIUM_MAX_AGE:
        message = (
            f"max_age {max_age} is above the caps of Chromium ({CHROMIUM_MAX_AGE}) "
            f"and Safari ({SAFARI_MAX_AGE})"
        )
        ctx.warn(
            line, key, message, "browsers use their cap instead", file, Problem.MAX_AGE_ABOVE_CAP
        )
    else:
        message = f"max_age {max_age} is above Safari's cap of {SAFARI_MAX_AGE}"
        ctx.warn(line, key, message, "Safari uses 600 instead", file, Problem.MAX_AGE_ABOVE_CAP)


def _check_mode(keys: PolicyKeys, origins: _Origins, ctx: Context) -> None:
    if keys.get("mode") is not Mode.REPORT_ONLY:
        return
    line, key, file = keys.blame("mode")
    ctx.warn(
        line,
        key,
        "report-only: corsproxy changes no CORS header and only reports decisions",
        "set mode: enforce before going live",
        file,
        Problem.REPORT_ONLY,
    )


PolicyCheck = Callable[[PolicyKeys, _Origins, Context], None]
# In this order: diagnostics on the same line keep it.
POLICY_CHECKS: tuple[PolicyCheck, ...] = (
    _check_credentials,
    _check_broad_regexes,
    _check_private_network,
    _check_redundant_origins,
    _check_no_origin,
    _check_method_case,
    _check_max_age,
    _check_mode,
)


def compile_policy(
    layers: list[_Layer], ctx: Context, where: str
) -> tuple[CorsPolicy, dict[str, str]] | Invalid:
    """The effective policy of the last layer over the earlier ones, and where each key was
    set; INVALID after reporting its errors (with every other check's) in the context."""
    keys = PolicyKeys(layers, where, ctx.file)
    errors = ctx.error_count
    origins = _compile_origins(keys, ctx)
    for check in POLICY_CHECKS:
        check(keys, origins, ctx)
    if ctx.error_count > errors:
        return INVALID
    return _policy(keys, origins), keys.sources()


# Keys passed to CorsPolicy as read, when written.
_PLAIN_KEYS = ("allow_credentials", "max_age", "allow_private_network", "on_disallowed", "mode")


def _policy(keys: PolicyKeys, origins: _Origins) -> CorsPolicy:
    """The keys written, converted; the others keep CorsPolicy's defaults."""
    fields: dict[str, Any] = {
        name: keys.written(name) for name in _PLAIN_KEYS if keys.written(name) is not None
    }
    methods = keys.written("allow_methods")
    if methods is STAR:
        fields["any_method"] = True
    elif methods is not None:
        fields["allow_methods"] = tuple(dict.fromkeys(i.value for i in methods))
    headers = keys.written("allow_headers")
    if headers is STAR:
        fields["any_header"] = True
    elif headers is not None:
        fields["allow_headers"] = frozenset(i.value.lower() for i in headers)
    expose = keys.written("expose_headers")
    if expose is STAR:
        fields["expose_any"] = True
    elif expose is not None:
        fields["expose_headers"] = tuple(dict.fromkeys(i.value for i in expose))
    return CorsPolicy(origins=origins.matcher, enabled=keys.enabled, **fields)


# --- the whole config -----------------------------------------------------------------


def _timeouts(base: Timeouts, section: Section | None) -> Timeouts:
    """`base` with the keys the section wrote."""
    return base if section is None else replace(base, **section.values)


def _check_upstream(top: Section, ctx: Context) -> None:
    if "upstream" not in top.lines and not top.get("routes"):
        ctx.error(
            top.line,
            "upstream",
            "no upstream is configured",
            "set upstream: http://HOST:PORT, or --upstream / CORSPROXY_UPSTREAM",
            reason=Problem.NO_UPSTREAM,
        )


def _warn_tls_not_inherited(
    route_upstream: Upstream | None,
    default: Upstream | None,
    section: Section,
    key: str,
    ctx: Context,
) -> None:
    """A route that names the default upstream's server itself gets none of the top-level
    upstream_tls (documented), which is easily missed: say so."""
    if route_upstream is None or default is None or default.tls is None:
        return
    if route_upstream.tls is None and route_upstream.origin == default.origin:
        ctx.warn(
            section.lines["upstream"],
            f"{key}.upstream",
            f"the route's upstream {route_upstream} is the default upstream's server, but a "
            "route's own upstream does not inherit the top-level upstream_tls: it is used "
            "without those TLS settings",
            "give the route its own upstream_tls or drop its upstream to use the default's",
            reason=Problem.UPSTREAM_TLS_NOT_INHERITED,
        )


def _check_route_name(
    section: Section, key: str, prefix: str, names: dict[str, tuple[int, bool]], ctx: Context
) -> None:
    """Route names are unique (logs, metrics, the console and `suggest` tell routes apart by
    name), and `default` names the top-level policy. An unnamed route is named by its
    path_prefix, so a name equal to another route's prefix collides too."""
    written = "name" in section.lines
    name: str = section.get("name", prefix)
    line = section.lines.get("name", section.lines["path_prefix"])
    where = f"{key}.name" if written else f"{key}.path_prefix"
    if name == "default":
        ctx.error(
            line,
            where,
            "the route name 'default' is reserved: it names the top-level policy",
            "give this route another name",
            reason=Problem.DUPLICATE_ROUTE_NAME,
        )
    elif name in names:
        other, other_written = names[name]
        ctx.error(
            line,
            where,
            f"the route name '{name}' is already the name of the route on line {other}"
            + (
                ""
                if written and other_written
                else " (an unnamed route is named by its path_prefix)"
            ),
            "give each route its own name: logs, metrics and the console tell routes apart by it",
            reason=Problem.DUPLICATE_ROUTE_NAME,
        )
    else:
        names[name] = (line, written)


def _compile_routes(
    top: Section,
    default_layer: _Layer,
    default_policy: tuple[CorsPolicy, dict[str, str]] | Invalid,
    timeouts: Timeouts,
    ctx: Context,
) -> list[Route]:
    upstream: Upstream | None = top.value("upstream")
    upstream_written = "upstream" in top.lines  # when invalid, that error is enough
    preserve_host: bool = top.value("preserve_host")
    case_sensitive: bool = top.value("routes_case_sensitive")
    routes: list[Route] = []
    seen: dict[str, tuple[int, str]] = {}
    names: dict[str, tuple[int, bool]] = {}  # route name -> its line, whether written
    for i, section in enumerate(top.get("routes", [])):
        key = f"routes[{i}]"
        prefix: str | None = section.get("path_prefix")
        if prefix is None:
            continue
        # Prefixes differing only in case are one route unless routes are case-sensitive.
        same = prefix if case_sensitive else prefix.lower()
        if same in seen:
            line, spelled = seen[same]
            folded = spelled != prefix
            ctx.error(
                section.lines["path_prefix"],
                f"{key}.path_prefix",
                f"'{prefix}' is already the prefix of the route on line {line}"
                + (f" ('{spelled}': routes match case-insensitively)" if folded else ""),
                "merge the two routes" + (", or set routes_case_sensitive: true" if folded else ""),
                reason=Problem.DUPLICATE_PREFIX,
            )
            continue
        seen[same] = (section.lines["path_prefix"], prefix)
        _check_route_name(section, key, prefix, names, ctx)
        route_upstream: Upstream | None = section.get("upstream", upstream)
        if section.has("upstream_tls"):  # its own settings (for its own or the default upstream)
            route_upstream = with_upstream_tls(route_upstream, section.get("upstream_tls"), ctx)
        elif "upstream" in section.lines:
            _warn_tls_not_inherited(route_upstream, upstream, section, key, ctx)
        if route_upstream is None and not upstream_written and "upstream" not in section.lines:
            ctx.error(
                section.line,
                key,
                "this route has no upstream and there is no top-level upstream",
                "add upstream: to the route or at the top level",
                reason=Problem.NO_UPSTREAM,
            )
        route_cors = section.get("cors")
        compiled: tuple[CorsPolicy, dict[str, str]] | Invalid
        if route_cors is None and not isinstance(default_policy, Invalid):
            # Nothing of its own: the default policy, compiled (and its regexes probed) once,
            # not again per route (10,000 origins x 1,000 routes took minutes).
            compiled = default_policy
        else:
            compiled = compile_policy([default_layer, _layer(route_cors)], ctx, f"{key}.cors")
        if isinstance(compiled, Invalid) or route_upstream is None:
            continue
        policy, sources = compiled
        routes.append(
            Route(
                name=section.get("name", prefix),
                path_prefix=prefix,
                upstream=route_upstream,
                cors=policy,
                timeouts=_timeouts(timeouts, section.get("timeouts")),
                preserve_host=section.get("preserve_host", preserve_host),
                strip_prefix=section.value("strip_prefix"),
                **{k: section.get(k, top.value(k)) for k in REWRITE_KEYS},
                line=section.line,
                cors_sources=MappingProxyType(sources),
                cors_places=policy_places(ctx.file, top, section),
            )
        )
    return routes


def _check_worker_rss(limits: Section | None, ctx: Context) -> None:
    max_rss = limits.get("max_worker_rss") if limits else None
    if limits and max_rss is not None and max_rss < MIN_WORKER_RSS:
        ctx.warn(
            limits.lines.get("max_worker_rss", limits.line),
            "limits.max_worker_rss",
            f"{max_rss / 2**20:g} MiB is below {MIN_WORKER_RSS >> 20} MiB, about what an idle "
            "worker holds: every worker would be replaced as soon as it starts",
            "set it well above a worker's usual resident memory",
        )


def _trusted_proxies(top: Section, ctx: Context) -> TrustedProxies:
    items: list[Item[Network]] | TrustedProxies = top.value("trusted_proxies")
    if isinstance(items, TrustedProxies):  # not written: the default
        return items
    for item in items:
        if item.value.prefixlen == 0:
            ctx.warn(
                item.line,
                item.key,
                f"'{item.value}' trusts every peer: any client can set the scheme, host and "
                "address the upstream sees",
                "list only the addresses of the proxies in front of corsproxy",
                file=item.file,
                reason=Problem.TRUST_EVERYONE,
            )
    return TrustedProxies(dict.fromkeys(i.value for i in items))


def compile_config(top: Section, ctx: Context) -> Config | None:
    """The Config, or None after reporting every problem in the context."""
    timeouts = _timeouts(Timeouts(), top.get("timeouts"))
    default_layer = _layer(top.get("cors"))
    default_policy = compile_policy([default_layer], ctx, "cors")
    if top.has("upstream_tls"):  # the default upstream carries its TLS settings, for routes too
        upstream_tls = with_upstream_tls(top.get("upstream"), top.get("upstream_tls"), ctx)
        if upstream_tls is not None:
            top.values["upstream"] = upstream_tls
    _check_upstream(top, ctx)
    routes = _compile_routes(top, default_layer, default_policy, timeouts, ctx)
    admin: Section | None = top.get("admin")
    check_listeners(top, admin, ctx)
    tls, admin_tls = compile_tls(top.get("tls"), ctx), compile_tls(admin and admin.get("tls"), ctx)
    if ctx.failed or isinstance(default_policy, Invalid):
        return None
    policy, sources = default_policy
    upstream: Upstream | None = top.value("upstream")
    default_route = None
    if upstream is not None:
        default_route = Route(
            name="default",
            path_prefix="/",
            upstream=upstream,
            cors=policy,
            timeouts=timeouts,
            preserve_host=top.value("preserve_host"),
            cors_sources=MappingProxyType(sources),
            cors_places=policy_places(ctx.file, top),
            **{k: top.value(k) for k in REWRITE_KEYS},
        )
    limits: Section | None = top.get("limits")
    _check_worker_rss(limits, ctx)
    case_sensitive: bool = top.value("routes_case_sensitive")
    trusted = _trusted_proxies(top, ctx)
    return Config(
        source=ctx.file,
        version=top.value("version"),
        listen=top.value("listen"),
        upstream=upstream,
        admin=Admin(**{**admin.values, "tls": admin_tls}) if admin else None,
        timeouts=timeouts,
        preserve_host=top.value("preserve_host"),
        **{k: top.value(k) for k in REWRITE_KEYS},
        # The spec admits exactly Limits' fields; absent keys keep the dataclass defaults.
        limits=Limits(**limits.values) if limits else Limits(),
        cors=policy,
        routes=RouteTable(tuple(routes), default_route, case_sensitive),
        warnings=tuple(dict.fromkeys(d for d in ctx.diagnostics if d.warning)),
        routes_case_sensitive=case_sensitive,
        workers_timeout=top.value("workers_timeout"),
        trusted_proxies=trusted,
        forwarded_headers=top.value("forwarded_headers"),
        tls=tls,
        watch=top.value("watch"),
    )
