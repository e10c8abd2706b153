"""YAML configuration: validated once, compiled into immutable objects.

`load_config()` returns a `Config` or raises `ConfigError` carrying every problem found, one
`FILE:LINE: dotted.key: what is wrong (hint)` each. The same `CONFIG_SPEC` produces the JSON
Schema printed by `corsproxy schema`.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from corsproxy.cors import (
    FORBIDDEN_METHODS,
    TOKEN,
    CorsPolicy,
    Mode,
    OnDisallowed,
)
from corsproxy.origins import (
    OriginEntry,
    OriginEntryError,
    OriginMatcher,
    compile_origin_entry,
    downgrades,
    near_misses,
    probe,
)
from corsproxy.paths import PathError, normalize_path
from corsproxy.routes import Route, RouteTable, Timeouts, Upstream
from corsproxy.spec import (
    INVALID,
    STAR,
    Context,
    Diagnostic,
    FalseOr,
    Field,
    Invalid,
    Item,
    ListOf,
    Obj,
    Scalar,
    Section,
    SpecError,
    StrList,
    boolean,
    choice,
    duration,
    integer,
    size,
    text,
)

STR_TAG = "tag:yaml.org,2002:str"
BOOL_TAG = "tag:yaml.org,2002:bool"
SEQ_TAG = "tag:yaml.org,2002:seq"
MAP_TAG = "tag:yaml.org,2002:map"
SAFARI_MAX_AGE = 600
CHROMIUM_MAX_AGE = 7200
DEFAULT_MAX_AGE = 600
DEFAULT_METHODS = ("GET", "HEAD", "POST")
MIN_WORKERS_TIMEOUT = 2.0
MIN_WORKER_RSS = 64 * 1024 * 1024  # below: about what an idle worker holds (a warning)
_HOST = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.\-]*[A-Za-z0-9])?\Z")
# Response headers a browser never exposes to scripts, whatever the server says.
FORBIDDEN_RESPONSE_HEADERS = frozenset({"set-cookie", "set-cookie2"})


@dataclass(frozen=True, slots=True)
class Listen:
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Admin:
    listen: Listen


@dataclass(frozen=True, slots=True)
class Limits:
    max_body_size: int | None = None
    idle_timeout: float = 30.0  # idle keep-alive clients, and unfinished request heads
    # A request body is received up to this much (or whole) before an upstream connection is
    # taken, so a client that trickles a small body holds no upstream connection.
    request_buffer: int = 64 * 1024
    # Kestrel's minimum request body data rate, enforced after the grace period (408 below it).
    min_body_rate: int = 240
    min_body_rate_grace: float = 5.0
    # The same for a streamed answer the client takes (Kestrel's MinResponseDataRate).
    min_response_rate: int = 240
    # Open upstream connections per process (connecting ones count).
    upstream_connections: int = 512
    # The largest request line or header field line; a larger request head is a 431.
    max_header_size: int = 8190
    # The largest WebSocket message either way; a larger one closes with 1009.
    max_ws_message_size: int = 4 * 1024 * 1024
    # A worker above this resident memory drains and is replaced (None: no guard).
    max_worker_rss: int | None = None


@dataclass(frozen=True, slots=True)
class Config:
    source: str
    listen: Listen
    upstream: Upstream | None
    admin: Admin | None
    timeouts: Timeouts
    preserve_host: bool
    limits: Limits
    cors: CorsPolicy
    routes: RouteTable
    warnings: tuple[Diagnostic, ...] = ()
    version: int = 1
    # Route prefixes match case-insensitively unless the upstream is known to be case-sensitive.
    routes_case_sensitive: bool = False
    # With --workers: a worker whose event loop gives no heartbeat this long is replaced.
    workers_timeout: float = 30.0


class ConfigError(Exception):
    """Every problem in a config, in file order."""

    def __init__(self, diagnostics: list[Diagnostic]) -> None:
        self.diagnostics = tuple(diagnostics)
        super().__init__("\n".join(str(d) for d in self.errors))

    @property
    def errors(self) -> tuple[Diagnostic, ...]:
        return tuple(d for d in self.diagnostics if not d.warning)

    @property
    def warnings(self) -> tuple[Diagnostic, ...]:
        return tuple(d for d in self.diagnostics if d.warning)


# --- value checks -------------------------------------------------------------------


def parse_listen(value: str) -> Listen:
    hint = "write HOST:PORT, e.g. '0.0.0.0:8080' or '[::1]:8080'"
    if value.startswith("["):
        host, sep, port_text = value[1:].partition("]:")
        if not sep or not host or not re.fullmatch(r"[0-9A-Fa-f:.]+", host):
            raise SpecError(f"'{value}' is not HOST:PORT", hint)
    else:
        host, sep, port_text = value.rpartition(":")
        if not sep or not host or ":" in host or not _HOST.match(host):
            raise SpecError(f"'{value}' is not HOST:PORT", hint)
    if not port_text.isdigit() or int(port_text) > 65535:
        raise SpecError(f"bad port '{port_text}'", "a port is a number from 0 to 65535")
    return Listen(host, int(port_text))


def parse_upstream(value: str) -> Upstream:
    hint = "write an http(s) URL such as 'http://legacy:9000'; a base path may follow"
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError as exc:
        raise SpecError(f"bad upstream URL '{value}': {exc}", hint) from None
    if parts.scheme not in ("http", "https"):
        raise SpecError(f"upstream URL '{value}' must start with http:// or https://", hint)
    if parts.username is not None or parts.password is not None:
        raise SpecError("credentials in the upstream URL are not supported", hint)
    if parts.query or parts.fragment or "?" in value or "#" in value:
        raise SpecError("the upstream URL must not have a query or fragment", hint)
    host = parts.hostname or ""
    bracketed = parts.netloc.rpartition("@")[2].startswith("[")
    if bracketed:
        if not re.fullmatch(r"[0-9a-f:.]+", host):
            raise SpecError(f"bad IPv6 address in '{value}'", hint)
        host = f"[{host}]"
    elif not _HOST.match(host):
        raise SpecError(f"upstream URL '{value}' has no valid host", hint)
    base = parts.path.rstrip("/")
    if base:
        try:
            if normalize_path(base).route_path != base:
                raise SpecError(f"the upstream base path '{base}' is not normalized", hint)
        except PathError as exc:
            raise SpecError(f"bad upstream base path: {exc}", hint) from None
    default_port = 443 if parts.scheme == "https" else 80
    return Upstream(parts.scheme, host, port or default_port, base)


def check_path_prefix(value: str) -> str:
    if not value.startswith("/"):
        raise SpecError(f"'{value}' does not start with '/'", f"write '/{value.lstrip('/')}'")
    try:
        normalized = normalize_path(value).route_path
    except PathError as exc:
        raise SpecError(f"bad path prefix: {exc}", "write a plain path such as /api/v1") from None
    if normalized != value or (value != "/" and value.endswith("/")):
        raise SpecError(
            f"'{value}' is not a normalized path prefix",
            f"write '{normalized.rstrip('/') or '/'}'; prefixes match whole segments, so it "
            "also covers everything below",
        )
    return value


def check_method(value: str) -> str:
    if not TOKEN.match(value):
        raise SpecError(f"'{value}' is not an HTTP method name", "e.g. GET, PUT, PATCH")
    if value.upper() in FORBIDDEN_METHODS:
        raise SpecError(f"browsers never send {value.upper()} cross-origin", "remove it")
    return value


def check_header_name(value: str) -> str:
    if not TOKEN.match(value):
        raise SpecError(f"'{value}' is not a header name", "e.g. Content-Type, X-Request-Id")
    return value


def check_expose_name(value: str) -> str:
    check_header_name(value)
    if value.lower() in FORBIDDEN_RESPONSE_HEADERS:
        raise SpecError(f"browsers never expose {value} to scripts", "remove it")
    return value


def check_version(value: Any) -> int:
    if value != 1 or isinstance(value, bool):
        raise SpecError(f"unsupported config version {value!r}", "this corsproxy reads version 1")
    return 1


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


# --- the schema ---------------------------------------------------------------------

POLICY_SPEC = Obj(
    {
        "allow_origins": Field(
            StrList(str),  # entries are compiled with the policy, which knows credentials
            "Origins allowed to read responses: exact ('https://app.example.com'), "
            "subdomains ('https://*.example.com'), any port ('http://localhost:*'), "
            "'regex:' full-match patterns, 'null' (only when listed) or '*' (any origin, "
            "no credentials).",
            default=[],
        ),
        "allow_methods": Field(
            StrList(check_method, star_ok=True, min_items=1),
            "Methods a preflight may approve, or '*' (echoes the requested method). "
            "GET, HEAD and POST never need a preflight.",
            default=list(DEFAULT_METHODS),
        ),
        "allow_headers": Field(
            StrList(check_header_name, star_ok=True),
            "Request headers a preflight may approve beyond the CORS-safelisted ones, "
            "or '*' (echoes the requested headers, Authorization included).",
            default=[],
        ),
        "expose_headers": Field(
            StrList(check_expose_name, star_ok=True),
            "Response headers scripts may read beyond the safelisted ones, or '*' "
            "(only without credentials).",
            default=[],
        ),
        "allow_credentials": Field(
            boolean(), "Allow cookies and HTTP authentication (never with '*').", default=False
        ),
        "allow_insecure_origins": Field(
            boolean(),
            "Allow plain-http origins other than loopback together with credentials (anyone "
            "on the network path can impersonate them).",
            default=False,
        ),
        "max_age": Field(
            integer(0, 86400),
            "Seconds browsers may cache a preflight (Safari caps at 600, Chromium at 7200).",
            default=DEFAULT_MAX_AGE,
        ),
        "allow_private_network": Field(
            boolean(), "Answer Private Network Access preflights (legacy Chrome).", default=False
        ),
        "on_disallowed": Field(
            choice("forward", "reject"),
            "A request with a disallowed Origin: 'forward' it without CORS headers, or "
            "'reject' it with 403 here.",
            default="forward",
        ),
        "mode": Field(
            choice("enforce", "report-only"),
            "'report-only' changes nothing on the wire and only reports decisions.",
            default="enforce",
        ),
    },
    doc="A CORS policy; a route's keys override the default policy's one by one.",
)

TIMEOUTS_SPEC = Obj(
    {
        "connect": Field(duration(), "Connecting to the upstream.", default=5),
        "read": Field(duration(), "Waiting for upstream data.", default=60),
        "send": Field(
            duration(),
            "How long a write of a streamed answer may wait with the client taking nothing "
            "(nginx's send_timeout); then the connection is reset.",
            default=60,
        ),
    }
)

ROUTE_SPEC = Obj(
    {
        "path_prefix": Field(
            text(check_path_prefix, {"pattern": "^/"}),
            "Requests under this path (at segment boundaries) use this route.",
            required=True,
        ),
        "name": Field(text(), "A name for logs and metrics (default: the path prefix)."),
        "upstream": Field(text(parse_upstream), "This route's upstream URL."),
        "strip_prefix": Field(boolean(), "Remove path_prefix before forwarding.", default=False),
        "timeouts": Field(TIMEOUTS_SPEC, "Overrides the top-level timeouts key by key."),
        "preserve_host": Field(boolean(), "Forward the client's Host header."),
        "cors": Field(
            FalseOr(POLICY_SPEC),
            "Overrides of the default policy, or false: no cross-origin access.",
        ),
    }
)

CONFIG_SPEC = Obj(
    {
        "version": Field(
            Scalar(check_version, {"const": 1}), "The config format version.", default=1
        ),
        "listen": Field(text(parse_listen), "Proxy listen address.", default="0.0.0.0:8080"),
        "upstream": Field(
            text(parse_upstream), "The default upstream; required unless every route has one."
        ),
        "admin": Field(
            Obj(
                {
                    "listen": Field(
                        text(parse_listen),
                        "Admin listen address (/healthz, /readyz, /metrics).",
                        required=True,
                    )
                }
            ),
            "The admin listener; absent means none.",
        ),
        "timeouts": Field(TIMEOUTS_SPEC, "Timeouts in seconds or '500ms', '5s', '2m'."),
        "preserve_host": Field(
            boolean(), "Forward the client's Host instead of the upstream's.", default=False
        ),
        "routes_case_sensitive": Field(
            boolean(),
            "Match route path prefixes case-sensitively (only for upstreams that are).",
            default=False,
        ),
        "limits": Field(
            Obj(
                {
                    "max_body_size": Field(size(), "Largest request body, bytes or '10MiB'."),
                    "idle_timeout": Field(
                        duration(),
                        "How long a client connection may sit idle, or take to send a "
                        "request head (slowloris), before it is closed.",
                        default=30,
                    ),
                    "request_buffer": Field(
                        size(),
                        "How much of a request body is received before an upstream connection "
                        "is taken (a smaller body is received whole first).",
                        default=64 * 1024,
                    ),
                    "min_body_rate": Field(
                        integer(minimum=0),
                        "Minimum request body data rate in bytes/s, over a sliding window of "
                        "min_body_rate_grace (408 below it); 0 turns it off.",
                        default=240,
                    ),
                    "min_body_rate_grace": Field(
                        duration(),
                        "The grace period and window of min_body_rate and min_response_rate: "
                        "how far a body may fall behind the rate.",
                        default=5,
                    ),
                    "min_response_rate": Field(
                        integer(minimum=0),
                        "Minimum rate in bytes/s at which a client takes a streamed answer, "
                        "over the same window (the connection is reset below it); 0: off.",
                        default=240,
                    ),
                    "upstream_connections": Field(
                        integer(minimum=1),
                        "Open upstream connections per process; a request waiting for one "
                        "longer than timeouts.connect gets a 504.",
                        default=512,
                    ),
                    "max_header_size": Field(
                        size(),
                        "Largest request line or header line; a larger request head is a 431.",
                        default=8190,
                    ),
                    "max_ws_message_size": Field(
                        size(),
                        "Largest WebSocket message either way; a larger one closes with 1009.",
                        default=4 * 1024 * 1024,
                    ),
                    "max_worker_rss": Field(
                        size(),
                        "Resident memory above which a worker stops accepting, drains and "
                        "exits (with --workers the supervisor replaces it first); absent: no "
                        "guard. Read when a worker starts.",
                    ),
                }
            ),
            "Request limits.",
        ),
        "workers_timeout": Field(
            duration(
                MIN_WORKERS_TIMEOUT,
                "a worker beats every min(1s, workers_timeout / 4): a shorter timeout kills "
                "workers for one slow turn of their loop",
            ),
            "With --workers: a worker whose event loop gives no heartbeat for this long (a "
            "blocking call, a deadlock) is killed and replaced.",
            default=30,
        ),
        "cors": Field(
            FalseOr(POLICY_SPEC), "The default CORS policy, or false: no cross-origin access."
        ),
        "routes": Field(
            ListOf(ROUTE_SPEC), "Per-path routes; the longest matching path_prefix wins."
        ),
    },
    doc="corsproxy configuration",
)


def json_schema() -> dict[str, Any]:
    schema = CONFIG_SPEC.schema()
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://corsproxy.dev/schema/config-v1.json",
        "title": "corsproxy configuration",
        **schema,
    }


# --- compiling ----------------------------------------------------------------------


@dataclass
class _Layer:
    """One level of policy keys (the default policy or a route's overrides)."""

    section: Section | None
    disabled: bool = False


def _effective(name: str, layers: list[_Layer]) -> tuple[Any, Section | None]:
    for layer in reversed(layers):
        if layer.section is not None and layer.section.has(name):
            return layer.section.get(name), layer.section
    return None, None


def _compile_policy(
    layers: list[_Layer], ctx: Context, where: str
) -> tuple[CorsPolicy, dict[str, str]] | Invalid:
    """The effective policy of the last layer over the earlier ones; all checks here."""
    enabled = not layers[-1].disabled
    sources: dict[str, str] = {}

    def get(name: str, default: Any) -> Any:
        value, section = _effective(name, layers)
        if section is None:
            return default
        file, line = section.files[name], section.lines[name]
        sources[name] = f"{file}:{line}" if line else file
        return value

    def blame(name: str) -> tuple[int, str, str]:
        _, section = _effective(name, layers)
        if section is None:
            return 0, f"{where}.{name}" if where else name, ctx.file
        return section.lines[name], section.child_key(name), section.files[name]

    origin_items: list[Item[str]] = get("allow_origins", [])
    methods = get("allow_methods", None)
    headers = get("allow_headers", [])
    expose = get("expose_headers", [])
    credentials: bool = get("allow_credentials", False)
    max_age: int = get("max_age", DEFAULT_MAX_AGE)
    failed = False

    entries: list[OriginEntry] = []
    for i, item in enumerate(origin_items):
        try:
            entry, warnings = compile_origin_entry(i, item.value)
        except OriginEntryError as exc:
            ctx.error(item.line, item.key, exc.message, exc.hint, file=item.file)
            failed = True
            continue
        for warning in warnings:
            ctx.warn(item.line, item.key, warning, file=item.file)
        entries.append(entry)
    matcher = OriginMatcher(tuple(entries))

    if enabled and credentials:
        cred_line, _, cred_file = blame("allow_credentials")
        for entry in entries:
            item = origin_items[entry.index]
            if entry.kind == "any":
                ctx.error(
                    item.line,
                    item.key,
                    "'*' cannot be used with allow_credentials: true "
                    f"({ctx.place(cred_file, cred_line, item.file)})",
                    "browsers refuse '*' with credentials; list the origins, e.g. "
                    "'https://app.example.com'",
                    file=item.file,
                )
                failed = True
            elif _insecure(entry) and not get("allow_insecure_origins", False):
                plain = _insecure_match(entry)
                ctx.error(
                    item.line,
                    item.key,
                    (f"{entry.text!r} matches {plain!r}, which" if plain else f"{entry.text!r}")
                    + " is plain http and allow_credentials is true "
                    f"({ctx.place(cred_file, cred_line, item.file)})",
                    "anyone on the network path can send requests as an http origin and read "
                    "the answers; use https, or set allow_insecure_origins: true if you accept "
                    "that (loopback origins such as http://localhost:3000 are always allowed)",
                    file=item.file,
                )
                failed = True
            elif (found := probe(entry, _probes(entry, True))) is not None:
                ctx.error(
                    item.line,
                    item.key,
                    f"{entry.text!r} matches {found!r}, so it is like '*', which cannot be used "
                    f"with allow_credentials: true ({ctx.place(cred_file, cred_line, item.file)})",
                    "any site could read answers with the user's cookies; anchor the regex to "
                    "your own sites, e.g. 'regex:https://[a-z0-9-]+\\.example\\.com'",
                    file=item.file,
                )
                failed = True
            elif entry.kind == "null":
                ctx.error(
                    item.line,
                    item.key,
                    "'null' cannot be used with allow_credentials: true "
                    f"({ctx.place(cred_file, cred_line, item.file)})",
                    "any page can send Origin: null from a sandboxed iframe",
                    file=item.file,
                )
                failed = True
        if expose is STAR:
            line, key, file = blame("expose_headers")
            ctx.error(
                line,
                key,
                "'*' cannot be used with allow_credentials: true "
                f"({ctx.place(cred_file, cred_line, file)})",
                "browsers read '*' literally with credentials; list the headers to expose",
                file=file,
            )
            failed = True
    if enabled and not credentials:
        for entry in entries:
            found = probe(entry, _probes(entry, False))
            if found is not None:
                item = origin_items[entry.index]
                ctx.warn(
                    item.line,
                    item.key,
                    f"{entry.text!r} matches {found!r}: it allows nearly any origin",
                    "write '*' if any origin is meant, or anchor the regex to your own sites",
                    file=item.file,
                )
    if enabled and matcher.any is not None and get("allow_private_network", False):
        line, key, file = blame("allow_private_network")
        item = origin_items[matcher.any.index]
        ctx.warn(
            line,
            key,
            "allow_private_network: true with '*' in allow_origins "
            f"({ctx.place(item.file, item.line, file)}): every public site can reach "
            "this private-network API",
            "list the origins that may reach it",
            file=file,
        )
    if matcher.any is not None and len(entries) > 1:
        item = origin_items[matcher.any.index]
        ctx.warn(
            item.line,
            item.key,
            "'*' allows every origin; the other entries do nothing",
            file=item.file,
        )
    if enabled and not entries and not failed and not ctx.failed:
        line, key, file = blame("allow_origins")
        ctx.warn(
            line or (layers[-1].section.line if layers[-1].section else 1),
            key,
            "no origin is allowed: every cross-origin request is refused",
            "add allow_origins, or write cors: false",
            file=file,
        )
    if methods is not None and methods is not STAR:
        for item in methods:
            if item.value != item.value.upper() and item.value.upper() in (
                "DELETE",
                "GET",
                "HEAD",
                "OPTIONS",
                "POST",
                "PUT",
                "PATCH",
            ):
                ctx.warn(
                    item.line,
                    item.key,
                    f"methods are case-sensitive: '{item.value}' is not '{item.value.upper()}'",
                    f"write {item.value.upper()}",
                    file=item.file,
                )
    if enabled and max_age > SAFARI_MAX_AGE:
        line, key, file = blame("max_age")
        if max_age > CHROMIUM_MAX_AGE:
            ctx.warn(
                line,
                key,
                f"max_age {max_age} is above the caps of Chromium ({CHROMIUM_MAX_AGE}) "
                f"and Safari ({SAFARI_MAX_AGE})",
                "browsers use their cap instead",
                file=file,
            )
        else:
            ctx.warn(
                line,
                key,
                f"max_age {max_age} is above Safari's cap of {SAFARI_MAX_AGE}",
                "Safari uses 600 instead",
                file=file,
            )
    mode = Mode(get("mode", "enforce"))
    if mode is Mode.REPORT_ONLY:
        line, key, file = blame("mode")
        ctx.warn(
            line,
            key,
            "report-only: corsproxy changes no CORS header and only reports decisions",
            "set mode: enforce before going live",
            file=file,
        )
    if failed:
        return INVALID
    policy = CorsPolicy(
        origins=matcher,
        allow_methods=DEFAULT_METHODS
        if methods is None or methods is STAR
        else tuple(dict.fromkeys(i.value for i in methods)),
        any_method=methods is STAR,
        allow_headers=frozenset()
        if headers is STAR
        else frozenset(i.value.lower() for i in headers),
        any_header=headers is STAR,
        expose_headers=() if expose is STAR else tuple(dict.fromkeys(i.value for i in expose)),
        expose_any=expose is STAR,
        allow_credentials=credentials,
        max_age=max_age,
        allow_private_network=get("allow_private_network", False),
        on_disallowed=OnDisallowed(get("on_disallowed", "forward")),
        mode=mode,
        enabled=enabled,
    )
    return policy, sources


def _layer(value: Any) -> _Layer:
    if value is False:
        return _Layer(None, disabled=True)
    return _Layer(value if isinstance(value, Section) else None)


def _timeouts(base: Timeouts, section: Section | None) -> Timeouts:
    if section is None:
        return base
    return Timeouts(
        connect=section.get("connect", base.connect),
        read=section.get("read", base.read),
        send=section.get("send", base.send),
    )


def compile_config(top: Section, ctx: Context) -> Config | None:
    upstream: Upstream | None = top.get("upstream")
    timeouts = _timeouts(Timeouts(), top.get("timeouts"))
    preserve_host: bool = top.get("preserve_host", False)
    default_layer = _layer(top.get("cors"))
    default_policy = _compile_policy([default_layer], ctx, "cors")
    routes: list[Route] = []
    seen: dict[str, tuple[int, str]] = {}
    sections: list[Section] = top.get("routes", [])
    upstream_written = "upstream" in top.lines  # when invalid, that error is enough
    if not upstream_written and not sections:
        ctx.error(
            top.line,
            "upstream",
            "no upstream is configured",
            "set upstream: http://HOST:PORT, or --upstream / CORSPROXY_UPSTREAM",
        )
    case_sensitive: bool = top.get("routes_case_sensitive", False)
    for i, section in enumerate(sections):
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
            )
            continue
        seen[same] = (section.lines["path_prefix"], prefix)
        route_upstream: Upstream | None = section.get("upstream", upstream)
        if route_upstream is None and not upstream_written and "upstream" not in section.lines:
            ctx.error(
                section.line,
                key,
                "this route has no upstream and there is no top-level upstream",
                "add upstream: to the route or at the top level",
            )
        route_cors = section.get("cors")
        compiled: tuple[CorsPolicy, dict[str, str]] | Invalid
        if route_cors is None and not isinstance(default_policy, Invalid):
            # Nothing of its own: the default policy, compiled (and its regexes probed) once,
            # not again per route (10,000 origins x 1,000 routes took minutes).
            compiled = default_policy
        else:
            compiled = _compile_policy([default_layer, _layer(route_cors)], ctx, f"{key}.cors")
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
                strip_prefix=section.get("strip_prefix", False),
                line=section.line,
                cors_sources=MappingProxyType(sources),
            )
        )
    if ctx.failed or isinstance(default_policy, Invalid):
        return None
    policy, sources = default_policy
    default_route = None
    if upstream is not None:
        default_route = Route(
            name="default",
            path_prefix="/",
            upstream=upstream,
            cors=policy,
            timeouts=timeouts,
            preserve_host=preserve_host,
            cors_sources=MappingProxyType(sources),
        )
    admin_section: Section | None = top.get("admin")
    limits_section: Section | None = top.get("limits")
    max_rss = limits_section.get("max_worker_rss") if limits_section else None
    if limits_section and max_rss is not None and max_rss < MIN_WORKER_RSS:
        ctx.warn(
            limits_section.lines.get("max_worker_rss", limits_section.line),
            "limits.max_worker_rss",
            f"{max_rss / 2**20:g} MiB is below {MIN_WORKER_RSS >> 20} MiB, about what an idle "
            "worker holds: every worker would be replaced as soon as it starts",
            "set it well above a worker's usual resident memory",
        )
    return Config(
        source=ctx.file,
        version=top.get("version", 1),
        listen=top.get("listen", Listen("0.0.0.0", 8080)),  # noqa: S104 - a proxy listens publicly
        upstream=upstream,
        admin=Admin(admin_section.get("listen")) if admin_section else None,
        timeouts=timeouts,
        preserve_host=preserve_host,
        # The spec admits exactly Limits' fields; absent keys keep the dataclass defaults.
        limits=Limits(**limits_section.values) if limits_section else Limits(),
        cors=policy,
        routes=RouteTable(tuple(routes), default_route, case_sensitive),
        warnings=tuple(dict.fromkeys(d for d in ctx.diagnostics if d.warning)),
        routes_case_sensitive=case_sensitive,
        workers_timeout=top.get("workers_timeout", 30.0),
    )


@dataclass(frozen=True, slots=True)
class Override:
    """A value from a command-line flag or environment variable; wins over the file."""

    path: tuple[str, ...]  # ("upstream",) or ("cors", "allow_origins")
    value: str | bool | list[str]
    source: str  # "--upstream", "CORSPROXY_UPSTREAM": named in messages instead of a line


def _node(value: str | bool | list[str], source: str) -> Node:
    mark = yaml.error.Mark(source, 0, -1, -1, None, 0)
    if isinstance(value, bool):
        return ScalarNode(BOOL_TAG, "true" if value else "false", mark, mark)
    if isinstance(value, list):
        return SequenceNode(SEQ_TAG, [_node(v, source) for v in value], mark, mark)
    # `$` is literal in flags and variables: no second round of interpolation.
    return ScalarNode(STR_TAG, value.replace("$", "$$"), mark, mark, style='"')


def _apply_overrides(root: MappingNode, overrides: Sequence[Override]) -> None:
    for override in overrides:
        mapping = root
        for name in override.path[:-1]:
            child = next((v for k, v in mapping.value if k.value == name), None)
            if not isinstance(child, MappingNode):
                fresh = MappingNode(MAP_TAG, [], child.start_mark if child else root.start_mark)
                mapping.value = [(k, v) for k, v in mapping.value if k.value != name]
                mapping.value.append((_node(name, override.source), fresh))
                child = fresh
            mapping = child
        leaf = override.path[-1]
        mapping.value = [(k, v) for k, v in mapping.value if k.value != leaf]
        mapping.value.append((_node(leaf, override.source), _node(override.value, override.source)))


# A config is a few KiB; these bound what a reload can cost (a FIFO, /dev/zero, a YAML bomb).
MAX_CONFIG_SIZE = 1024 * 1024
# Nodes that aliases may add beyond the document's own (`<<: *defaults` in every route is a
# few hundred); a "billion laughs" file multiplies them into millions.
MAX_ALIAS_NODES = 10_000
# What the document may expand to, aliases followed: compiling is linear in these, and every
# diagnostic may quote a value. 10,000 origins and 1,000 routes take about 30,000 nodes.
MAX_EXPANDED_NODES = 100_000
MAX_EXPANDED_BYTES = 1024 * 1024


def _expanded_sizes(root: Node) -> dict[int, tuple[int, int]] | None:
    """Per node: nodes and scalar bytes with aliases expanded (a shared node counted each
    time it is reached), or None for a recursive alias. Linear in the distinct nodes."""
    sizes: dict[int, tuple[int, int]] = {}
    pending: set[int] = set()

    def size(node: Node) -> tuple[int, int] | None:
        known = sizes.get(id(node))
        if known is not None:
            return known
        if id(node) in pending:
            return None
        pending.add(id(node))
        nodes, size_bytes = 1, len(node.value) if isinstance(node, ScalarNode) else 0
        for child in _children(node):
            inner = size(child)
            if inner is None:
                return None
            nodes, size_bytes = nodes + inner[0], size_bytes + inner[1]
        pending.discard(id(node))
        sizes[id(node)] = (nodes, size_bytes)
        return nodes, size_bytes

    return sizes if size(root) is not None else None


def _children(node: Node) -> list[Node]:
    if isinstance(node, SequenceNode):
        return list(node.value)
    if isinstance(node, MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def _too_large(root: Node, sizes: dict[int, tuple[int, int]], index: int, cap: int) -> Node:
    """The innermost node that alone exceeds the cap: the line to name."""
    node = root
    while True:
        big = next((c for c in _children(node) if sizes[id(c)][index] > cap), None)
        if big is None:
            return node
        node = big


def _check_aliases(root: Node, file: str) -> None:
    distinct: set[int] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if id(node) in distinct:
            continue
        distinct.add(id(node))
        stack.extend(_children(node))
    sizes = _expanded_sizes(root)
    if sizes is None:
        raise ConfigError(
            [Diagnostic(file, 1, "", "a YAML alias refers to itself", "remove the recursion")]
        )
    expanded, size_bytes = sizes[id(root)]
    if expanded - len(distinct) > MAX_ALIAS_NODES:
        raise ConfigError(
            [
                Diagnostic(
                    file,
                    1,
                    "",
                    f"YAML aliases expand the config to {expanded} values "
                    f"(more than {MAX_ALIAS_NODES} beyond the file's own)",
                    "write the repeated parts out, or use fewer aliases",
                )
            ]
        )
    for index, total, cap, what in (
        (0, expanded, MAX_EXPANDED_NODES, "values"),
        (1, size_bytes, MAX_EXPANDED_BYTES, "bytes of text"),
    ):
        if total > cap:
            where = _too_large(root, sizes, index, cap)
            raise ConfigError(
                [
                    Diagnostic(
                        file,
                        where.start_mark.line + 1,
                        "",
                        f"the config holds {total} {what}, YAML aliases followed (more than {cap})",
                        "a config is a few KiB; write shorter values, or use fewer aliases",
                    )
                ]
            )


class _BoundedLoader(yaml.SafeLoader):
    """Stops composing at MAX_EXPANDED_NODES nodes: 340,000 one-character values fit in
    the file cap and take seconds and hundreds of MB to compose."""

    def __init__(self, stream: str, file: str) -> None:
        super().__init__(stream)
        self.file, self.nodes = file, 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        self.nodes += 1
        if self.nodes > MAX_EXPANDED_NODES:
            line = self.peek_event().start_mark.line + 1  # type: ignore[no-untyped-call]
            raise ConfigError(
                [
                    Diagnostic(
                        self.file,
                        line,
                        "",
                        f"the config holds more than {MAX_EXPANDED_NODES} values",
                        "a config is a few KiB; is this the right file?",
                    )
                ]
            )
        return super().compose_node(parent, index)


def _compose(text_: str, file: str) -> Node | None:
    loader = _BoundedLoader(text_, file)
    try:
        return loader.get_single_node()
    finally:
        loader.dispose()


def _empty_root(file: str) -> MappingNode:
    mark = yaml.error.Mark(file, 0, 0, 0, None, 0)
    return MappingNode(MAP_TAG, [], mark, mark)


def parse_config(
    text_: str | None,
    file: str,
    env: Mapping[str, str] | None = None,
    overrides: Sequence[Override] = (),
) -> Config:
    """Parse and compile a config document (None: overrides only).

    Raises ConfigError with every problem.
    """
    ctx = Context(file, os.environ if env is None else env)
    root: Node | None
    if text_ is None:
        root = _empty_root(file)
    else:
        try:
            root = _compose(text_, file)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = mark.line + 1 if mark is not None else 1
            problem = exc.problem or "invalid YAML"
            hint = exc.context or "check indentation and quoting"
            raise ConfigError(
                [Diagnostic(file, line, "", f"YAML syntax error: {problem}", hint)]
            ) from None
        except yaml.YAMLError as exc:
            raise ConfigError([Diagnostic(file, 1, "", f"YAML error: {exc}")]) from None
        except RecursionError:
            raise ConfigError(
                [Diagnostic(file, 1, "", "YAML error: the document is nested too deeply")]
            ) from None
        if root is not None:
            _check_aliases(root, file)
        if root is None and overrides:
            root = _empty_root(file)
    if root is None:
        raise ConfigError(
            [
                Diagnostic(
                    file, 1, "", "the config is empty", "start with upstream: http://HOST:PORT"
                )
            ]
        )
    if isinstance(root, MappingNode):
        _apply_overrides(root, overrides)
    top = CONFIG_SPEC.parse(root, "", ctx)
    config = None if isinstance(top, Invalid) else compile_config(top, ctx)
    if config is None or ctx.failed:
        unique = dict.fromkeys(ctx.diagnostics)  # a default policy is checked once per route
        raise ConfigError(sorted(unique, key=lambda d: (d.file, d.line, d.warning, d.key)))
    return config


def load_config(
    path: str | os.PathLike[str] | None,
    env: Mapping[str, str] | None = None,
    overrides: Sequence[Override] = (),
) -> Config:
    """Read and compile a config file with flag and environment overrides applied.

    With no path the overrides alone describe the config. Raises ConfigError, never
    another exception.
    """
    if path is None:
        return parse_config(None, "command line", env, overrides)
    name = os.fspath(path)
    return parse_config(read_config_text(name), name, env, overrides)


def read_config_text(name: str) -> str:
    """A config file's text, with the checks of load_config; raises ConfigError."""
    try:
        return _read_regular_file(name).decode("utf-8")
    except OSError as exc:
        raise ConfigError(
            [Diagnostic(name, 0, "", f"cannot read the config: {exc.strerror or exc}")]
        ) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            [Diagnostic(name, 1, "", f"the config is not UTF-8 text: {exc.reason}")]
        ) from None


def _file_kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    return "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a socket"


def _read_regular_file(name: str) -> bytes:
    """The bytes of a regular file of at most MAX_CONFIG_SIZE. Opened without blocking, so a
    FIFO (or a device) is refused at once instead of waiting for a writer or reading forever."""
    fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            problem = f"cannot read the config: it is {_file_kind(mode)}, not a regular file"
            raise ConfigError([Diagnostic(name, 0, "", problem)])
        chunks: list[bytes] = []
        left = MAX_CONFIG_SIZE + 1
        while left > 0 and (chunk := os.read(fd, left)):
            chunks.append(chunk)
            left -= len(chunk)
    finally:
        os.close(fd)
    if left <= 0:
        raise ConfigError(
            [
                Diagnostic(
                    name,
                    0,
                    "",
                    f"cannot read the config: it is larger than {MAX_CONFIG_SIZE // 1024} KiB",
                    "a config is a few KiB; is this the right file?",
                )
            ]
        )
    return b"".join(chunks)
