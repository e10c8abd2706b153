"""The config's shape: the compiled dataclasses, the checks of single values, and the specs
that read YAML into them and print the JSON Schema (`corsproxy schema`).

Each spec names its target dataclass, so a key's default is written once, as the field's
default: the loader, the schema and the compiled objects all read it from there.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from corsproxy.config.rewrite_keys import rewrite_fields
from corsproxy.config.spec import (
    Diagnostic,
    FalseOr,
    Field,
    ListOf,
    Obj,
    Scalar,
    SpecError,
    StrList,
    boolean,
    choice,
    duration,
    integer,
    size,
    text,
)
from corsproxy.config.tls import ListenerTls
from corsproxy.config.upstream_tls import UPSTREAM_TLS_SPEC, UpstreamTLS
from corsproxy.policy.cors import FORBIDDEN_METHODS, CorsPolicy, Mode, OnDisallowed
from corsproxy.policy.forwarded import (
    NO_PROXIES,
    ForwardedHeaders,
    Network,
    TrustedProxies,
    parse_network,
)
from corsproxy.policy.http_grammar import TOKEN
from corsproxy.policy.paths import PathError, normalize_path
from corsproxy.policy.routes import Route, RouteTable, Timeouts, Upstream, no_mapping

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
    tls: ListenerTls | None = None


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


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    source: str
    listen: Listen = Listen("0.0.0.0", 8080)  # noqa: S104 - a proxy listens publicly
    upstream: Upstream | None = None
    admin: Admin | None = None
    timeouts: Timeouts = Timeouts()  # noqa: RUF009 - frozen
    preserve_host: bool = True
    rewrite_redirects: bool = True
    cookie_path: Mapping[str, str] = field(default_factory=no_mapping)
    cookie_domain: Mapping[str, str] = field(default_factory=no_mapping)
    limits: Limits = Limits()
    cors: CorsPolicy
    routes: RouteTable
    warnings: tuple[Diagnostic, ...] = ()
    version: int = 1
    # Route prefixes match case-insensitively unless the upstream is known to be case-sensitive.
    routes_case_sensitive: bool = False
    # With --workers: a worker whose event loop gives no heartbeat this long is replaced.
    workers_timeout: float = 30.0
    # Peers whose X-Forwarded-*/Forwarded headers are believed (policy/forwarded.py).
    trusted_proxies: TrustedProxies = NO_PROXIES
    # The one family of forwarding headers read from those peers.
    forwarded_headers: ForwardedHeaders = ForwardedHeaders.X_FORWARDED
    tls: ListenerTls | None = None
    # Reload when the config file or a file it names changes (read at start).
    watch: bool = False

    def watched_files(self) -> tuple[str, ...]:
        """The files `--watch` follows: the config file and every file it names. A new key
        naming a file adds its path here (one line)."""
        files = [self.source] if self.source != "command line" else []
        if self.tls is not None:
            files += self.tls.files()
        if self.admin is not None and self.admin.tls is not None:
            files += self.admin.tls.files()
        upstreams = [self.upstream, *(route.upstream for route in self.routes.routes)]
        for upstream in upstreams:
            if upstream is not None and isinstance(upstream.tls, UpstreamTLS):
                files += upstream.tls.files
        return tuple(dict.fromkeys(files))


# --- value checks -------------------------------------------------------------------


# `:8080`, `8080` (or the number): every IPv4 interface, as the default listen (Go and Caddy
# bind IPv6 too; write [::]:8080 for IPv6).
ALL_INTERFACES = "0.0.0.0"  # noqa: S104 - what the operator asked for


def parse_listen(value: str | int) -> Listen:
    hint = "write HOST:PORT, e.g. '0.0.0.0:8080' or '[::1]:8080', or :PORT for all interfaces"
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise SpecError(f"expected HOST:PORT or a port, got {value!r}", hint)
    if re.fullmatch(r":?[0-9]+", value):
        host, port_text = ALL_INTERFACES, value.lstrip(":")
    elif value.startswith("["):
        host, sep, port_text = value[1:].partition("]:")
        if not sep or not host or not re.fullmatch(r"[0-9A-Fa-f:.]+", host):
            raise SpecError(f"'{value}' is not HOST:PORT", hint)
        mapped = _ipv4_mapped(host)
        if mapped:  # binds, then fails `invalid argument`
            raise SpecError(
                f"'{host}' is an IPv4-mapped IPv6 address", f"write {mapped}:{port_text}"
            )
    else:
        host, sep, port_text = value.rpartition(":")
        if not sep or not host or ":" in host or not _HOST.match(host):
            raise SpecError(f"'{value}' is not HOST:PORT", hint)
    if not port_text.isdigit() or int(port_text) > 65535:
        raise SpecError(f"bad port '{port_text}'", "a port is a number from 0 to 65535")
    not_ipv4(host)
    return Listen(host, int(port_text))


def _ipv4_mapped(host: str) -> str | None:
    try:
        mapped = ipaddress.IPv6Address(host).ipv4_mapped
    except ValueError:
        return None
    return str(mapped) if mapped else None


def not_ipv4(host: str) -> None:
    """A host of digits and dots is meant as an IPv4 address: refused unless it is one
    (`256.1.1.1` would go to the resolver as a name)."""
    if re.fullmatch(r"[0-9.]+", host):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise SpecError(
                f"'{host}' is not an IPv4 address",
                "write four numbers from 0 to 255 (127.0.0.1), or a host name",
            ) from None


def redacted(url: str) -> str:
    """A URL as messages show it: a user name and password in it written `***`."""
    return re.sub(r"\A([A-Za-z][A-Za-z0-9+.-]*:)?//[^/?#]*@", lambda m: f"{m[1] or ''}//***@", url)


def listen_address() -> Scalar[Listen]:
    """`HOST:PORT`, `:PORT`, `PORT`, or the port as a number (`listen: 8080`)."""

    def convert(value: Any) -> Listen:
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise SpecError(f"expected HOST:PORT or a port, got {value!r}", "quote the value")
        return parse_listen(value)

    schema = {"anyOf": [{"type": "string"}, {"type": "integer", "minimum": 0, "maximum": 65535}]}
    return Scalar(convert, schema, env_ok=False)


def parse_upstream(value: str) -> Upstream:
    hint = "write an http(s) URL such as 'http://legacy:9000'; a base path may follow"
    shown = redacted(value)  # never a password in a message
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError as exc:
        raise SpecError(f"bad upstream URL '{shown}': {exc}", hint) from None
    if parts.scheme not in ("http", "https"):
        raise SpecError(f"upstream URL '{shown}' must start with http:// or https://", hint)
    if parts.username is not None or parts.password is not None:
        raise SpecError("credentials in the upstream URL are not supported", hint)
    if parts.query or parts.fragment or "?" in value or "#" in value:
        raise SpecError("the upstream URL must not have a query or fragment", hint)
    host = parts.hostname or ""
    bracketed = parts.netloc.rpartition("@")[2].startswith("[")
    if bracketed:
        if not re.fullmatch(r"[0-9a-f:.]+", host):
            raise SpecError(f"bad IPv6 address in '{shown}'", hint)
        host = f"[{host}]"
    elif not _HOST.match(host):
        raise SpecError(f"upstream URL '{shown}' has no valid host", hint)
    else:
        not_ipv4(host)
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


def _not_star(value: str) -> None:
    # `["*"]` alone means any (StrList reads it before the items); `*` among names would be
    # sent as is, and browsers read it as "any" in some cases and as a name in others.
    if value == "*":
        raise SpecError(
            '`*` means any: write ["*"] alone, or list the names',
            "remove `*` from the list",
        )


def check_method(value: str) -> str:
    _not_star(value)
    if not TOKEN.match(value):
        raise SpecError(f"'{value}' is not an HTTP method name", "e.g. GET, PUT, PATCH")
    if value.upper() in FORBIDDEN_METHODS:
        raise SpecError(f"browsers never send {value.upper()} cross-origin", "remove it")
    return value


def check_header_name(value: str) -> str:
    _not_star(value)
    if not TOKEN.match(value):
        raise SpecError(f"'{value}' is not a header name", "e.g. Content-Type, X-Request-Id")
    return value


ROUTE_NAME_CHARS = "letters, digits and - _ . / :"
_ROUTE_NAME = re.compile(r"[A-Za-z0-9_./:-]+")
ROUTE_NAME_PATTERN = r"^(?!-$)[A-Za-z0-9_./:-]+$"


def check_route_name(value: str) -> str:
    """A name that logs, metrics and `suggest` print bare and tell apart: not empty, not `-`
    (what they write when no route was chosen), nothing invisible or look-alike."""
    hint = f"a route name is {ROUTE_NAME_CHARS}, e.g. api-v1 or /api"
    if value == "":
        raise SpecError("a route name cannot be empty", f"leave name: out, or: {hint}")
    if value == "-":
        raise SpecError("'-' is not a route name: logs and metrics write - for no route", hint)
    if not _ROUTE_NAME.fullmatch(value):
        char = next(c for c in value if not _ROUTE_NAME.fullmatch(c))
        shown = "".join(_shown(c) for c in value)
        if char == " ":
            what = "a space"
        elif char.isascii() and char.isprintable():
            what = f"'{char}'"
        else:
            what = f"U+{ord(char):04X} ({unicodedata.name(char, 'a control character')})"
        raise SpecError(f"the route name '{shown}' has {what}", hint)
    return value


def _shown(char: str) -> str:
    return char if char.isascii() and char.isprintable() else char.encode("unicode_escape").decode()


def check_expose_name(value: str) -> str:
    check_header_name(value)
    if value.lower() in FORBIDDEN_RESPONSE_HEADERS:
        raise SpecError(f"browsers never expose {value} to scripts", "remove it")
    return value


def check_trusted_proxy(value: str) -> Network:
    try:
        return parse_network(value)
    except ValueError as exc:
        raise SpecError(
            str(exc),
            "write an address or a CIDR: '10.0.0.0/8', '192.168.1.10', 'fd00::/8'",
        ) from None


def check_version(value: Any) -> int:
    if value != 1 or isinstance(value, bool):
        raise SpecError(f"unsupported config version {value!r}", "this corsproxy reads version 1")
    return 1


# --- the schema ---------------------------------------------------------------------

POLICY_SPEC = Obj(
    {
        "allow_origins": Field(
            StrList(str),  # entries are compiled with the policy, which knows credentials
            "Origins allowed to read responses: exact ('https://app.example.com'), "
            "subdomains ('https://*.example.com'), any port ('http://localhost:*'), "
            "'regex:' full-match patterns, 'null' (only when listed) or '*' (any origin, "
            "no credentials).",
            default=(),
        ),
        "allow_methods": Field(
            StrList(check_method, star_ok=True, min_items=1),
            "Methods a preflight may approve, or '*' (echoes the requested method). "
            "GET, HEAD and POST never need a preflight.",
        ),
        "allow_headers": Field(
            StrList(check_header_name, star_ok=True),
            "Request headers a preflight may approve beyond the CORS-safelisted ones, "
            "or '*' (echoes the requested headers, Authorization included).",
        ),
        "expose_headers": Field(
            StrList(check_expose_name, star_ok=True),
            "Response headers scripts may read beyond the safelisted ones, or '*' "
            "(only without credentials).",
        ),
        "allow_credentials": Field(
            boolean(), "Allow cookies and HTTP authentication (never with '*')."
        ),
        "allow_insecure_origins": Field(
            boolean(),
            "Allow plain-http origins other than loopback together with credentials (anyone "
            "on the network path can impersonate them).",
            default=False,
        ),
        "max_age": Field(
            integer(0, 86400, unit="seconds"),
            "Seconds browsers may cache a preflight (Safari caps at 600, Chromium at 7200).",
        ),
        "allow_private_network": Field(
            boolean(), "Answer Private Network Access preflights (legacy Chrome)."
        ),
        "on_disallowed": Field(
            choice(OnDisallowed),
            "A request with a disallowed Origin: 'forward' it without CORS headers, or "
            "'reject' it with 403 here.",
        ),
        "mode": Field(
            choice(Mode),
            "'report-only' changes nothing on the wire and only reports decisions.",
        ),
    },
    doc="A CORS policy; a route's keys override the default policy's one by one.",
    target=CorsPolicy,
)

TIMEOUTS_SPEC = Obj(
    {
        "connect": Field(duration(), "Connecting to the upstream."),
        "read": Field(duration(), "Waiting for upstream data."),
        "send": Field(
            duration(),
            "How long a write of a streamed answer may wait with the client taking nothing "
            "(nginx's send_timeout); then the connection is reset.",
        ),
    },
    target=Timeouts,
)

ROUTE_SPEC = Obj(
    {
        "path_prefix": Field(
            text(check_path_prefix, {"pattern": "^/"}),
            "Requests under this path (at segment boundaries) use this route.",
            required=True,
        ),
        "name": Field(
            text(check_route_name, {"pattern": ROUTE_NAME_PATTERN}),
            f"A name for logs and metrics ({ROUTE_NAME_CHARS}; default: the path prefix).",
        ),
        "upstream": Field(text(parse_upstream), "This route's upstream URL."),
        "upstream_tls": Field(
            UPSTREAM_TLS_SPEC, "TLS to this route's upstream (not inherited from the top level)."
        ),
        "strip_prefix": Field(boolean(), "Remove path_prefix before forwarding."),
        "timeouts": Field(TIMEOUTS_SPEC, "Overrides the top-level timeouts key by key."),
        "preserve_host": Field(boolean(), "Forward the client's Host header.", inherited=True),
        **rewrite_fields(inherited=True),
        "cors": Field(
            FalseOr(POLICY_SPEC),
            "Overrides of the default policy, or false: no cross-origin access.",
        ),
    },
    target=Route,
)

TLS_SPEC = Obj(
    {
        "cert_file": Field(
            text(),
            "PEM certificate chain, the server's certificate first (relative paths start at "
            "the config file's directory). Re-read on reload.",
            required=True,
        ),
        "key_file": Field(text(), "PEM private key of the certificate.", required=True),
    },
    doc="Serve this listener over TLS 1.2 and 1.3 (Mozilla's intermediate profile).",
    target=ListenerTls,
)

ADMIN_SPEC = Obj(
    {
        "listen": Field(
            listen_address(),
            "Admin listen address (/healthz, /readyz, /metrics).",
            required=True,
        ),
        "tls": Field(TLS_SPEC, "Serve the admin listener over TLS."),
    },
    target=Admin,
)

LIMITS_SPEC = Obj(
    {
        "max_body_size": Field(size(), "Largest request body, bytes or '10MiB'."),
        "idle_timeout": Field(
            duration(),
            "How long a client connection may sit idle, or take to send a "
            "request head (slowloris), before it is closed.",
        ),
        "request_buffer": Field(
            size(),
            "How much of a request body is received before an upstream connection "
            "is taken (a smaller body is received whole first).",
        ),
        "min_body_rate": Field(
            integer(minimum=0),
            "Minimum request body data rate in bytes/s, over a sliding window of "
            "min_body_rate_grace (408 below it); 0 turns it off.",
        ),
        "min_body_rate_grace": Field(
            duration(),
            "The grace period and window of min_body_rate and min_response_rate: "
            "how far a body may fall behind the rate.",
        ),
        "min_response_rate": Field(
            integer(minimum=0),
            "Minimum rate in bytes/s at which a client takes a streamed answer, "
            "over the same window (the connection is reset below it); 0: off.",
        ),
        "upstream_connections": Field(
            integer(minimum=1),
            "Open upstream connections per process; a request waiting for one "
            "longer than timeouts.connect gets a 504.",
        ),
        "max_header_size": Field(
            size(),
            "Largest request line or header line; a larger request head is a 431.",
        ),
        "max_ws_message_size": Field(
            size(),
            "Largest WebSocket message either way; a larger one closes with 1009.",
        ),
        "max_worker_rss": Field(
            size(),
            "Resident memory above which a worker stops accepting, drains and "
            "exits (with --workers the supervisor replaces it first); absent: no "
            "guard. Read when a worker starts.",
        ),
    },
    target=Limits,
)

CONFIG_SPEC = Obj(
    {
        "version": Field(Scalar(check_version, {"const": 1}), "The config format version."),
        "listen": Field(
            listen_address(), "Proxy listen address: HOST:PORT, or :PORT for all interfaces."
        ),
        "upstream": Field(
            text(parse_upstream), "The default upstream; required unless every route has one."
        ),
        "upstream_tls": Field(UPSTREAM_TLS_SPEC, "TLS to the default upstream."),
        "admin": Field(ADMIN_SPEC, "The admin listener; absent means none."),
        "timeouts": Field(TIMEOUTS_SPEC, "Timeouts in seconds or '500ms', '5s', '2m'."),
        "preserve_host": Field(
            boolean(),
            "Forward the client's Host (the default, as Traefik and Caddy do); false: the "
            "upstream's own.",
        ),
        **rewrite_fields(inherited=False),
        "routes_case_sensitive": Field(
            boolean(),
            "Match route path prefixes case-sensitively (only for upstreams that are).",
        ),
        "limits": Field(LIMITS_SPEC, "Request limits."),
        "tls": Field(TLS_SPEC, "Serve the proxy's listener over TLS (HTTPS)."),
        "watch": Field(
            boolean(),
            "Reload when the config file or a file it names changes (as on SIGHUP); read "
            "at start. Same as serve --watch.",
        ),
        "workers_timeout": Field(
            duration(
                MIN_WORKERS_TIMEOUT,
                "a worker beats every min(1s, workers_timeout / 4): a shorter timeout kills "
                "workers for one slow turn of their loop",
            ),
            "With --workers: a worker whose event loop gives no heartbeat for this long (a "
            "blocking call, a deadlock) is killed and replaced.",
        ),
        "trusted_proxies": Field(
            StrList(check_trusted_proxy),
            "Addresses or CIDRs of the proxies in front (a TLS terminator, a load balancer) "
            "whose forwarding headers (the family forwarded_headers names) are kept and "
            "believed; from any other peer they are replaced.",
        ),
        "forwarded_headers": Field(
            choice(ForwardedHeaders),
            "The forwarding headers believed from a peer in trusted_proxies: x-forwarded "
            "(X-Forwarded-Proto/-Host/-Port/-Prefix/-For, as nginx, Traefik, HAProxy and the "
            "cloud load balancers send) or forwarded (RFC 7239 Forwarded only). The other "
            "family is never believed.",
        ),
        "cors": Field(
            FalseOr(POLICY_SPEC), "The default CORS policy, or false: no cross-origin access."
        ),
        "routes": Field(
            ListOf(ROUTE_SPEC), "Per-path routes; the longest matching path_prefix wins."
        ),
    },
    doc="corsproxy configuration",
    target=Config,
)


def json_schema() -> dict[str, Any]:
    schema = CONFIG_SPEC.schema()
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://corsproxy.dev/schema/config-v1.json",
        "title": "corsproxy configuration",
        **schema,
    }
