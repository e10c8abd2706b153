"""Header hygiene and error mapping for forwarding: pure functions, no I/O.

Outbound request headers are built Go-`Rewrite` style: copy, strip hop-by-hop and every
name listed in `Connection`, then add the proxy's own headers last, so a client can never
make the proxy drop them (golang/go#50580).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from corsproxy.http import errors
from corsproxy.policy.forwarded import ClientView, resolve
from corsproxy.policy.http_grammar import HOP_BY_HOP, TCHARS, TOKEN

# Never forwarded upstream: `Expect` (server.py answers 100-continue itself, once every check
# that could refuse the body has passed), and Host and X-Forwarded-Proto/-Host, which the
# proxy computes itself.
# `Forwarded` and `X-Real-IP` are dropped rather than passed on: the proxy sets the
# X-Forwarded-* family itself, and an upstream must never see client-made values of them.
# Headers some upstreams read as the real path instead of the request line's: a client
# sending them could have the route decided on one path and the upstream serve another
# (a page allowed `*` headers on a lenient route could read a `cors: false` one).
# - X-Original-URL, X-Rewrite-URL: set by IIS URL Rewrite and ISAPI_Rewrite; read by
#   Symfony before 2.7.49/3.4.14/4.1.3 (CVE-2018-14773, so Drupal and Laravel of that
#   time), Zend Framework 1 (still in Magento 1 and Matomo) and zend-http before ZF2018-01.
# - X-Original-URI, X-Forwarded-URI: the path nginx `auth_request` setups and Traefik
#   ForwardAuth hand to auth services (oauth2-proxy, Authelia), which decide on it.
# - X-Forwarded-Prefix, X-Forwarded-Path: a path base Spring's ForwardedHeaderFilter,
#   ASP.NET Core and Symfony (as a trusted header) put in front of the request path.
# - X-Envoy-Original-Path: Envoy's record of a rewritten path.
# - X-Override-URL, X-HTTP-DestinationURL, X-Proxy-URL, X-Request-URI: read by some
#   legacy connectors and filters; in every "403 bypass" header list.
# - X-Script-Name: the widely copied Flask "ReverseProxied" snippet (and apps built on it:
#   klaus, Tandoor) strips it from the path; mod_wsgi's WSGITrustedProxyHeaders takes it
#   as SCRIPT_NAME.
# - X-Forwarded-Script-Name, X-Traversal-Path: Plack::Middleware::ReverseProxyPath and
#   Paste's WSGIProxy (X-Traversal-Path is cut from the front of the path), mod_wsgi.
# - X-Ingress-Path: Home Assistant's ingress; add-ons strip it from the path.
# - X-Forwarded-Context, X-ProxyContextPath: Apache Knox's path base, honoured by NiFi,
#   Spark and Impala for the links they build.
# (Gunicorn reads a `SCRIPT_NAME` header the same way: every name with `_` is dropped.)
PATH_OVERRIDES = frozenset(
    {
        "x-original-url",
        "x-rewrite-url",
        "x-original-uri",
        "x-forwarded-uri",
        "x-forwarded-prefix",
        "x-forwarded-path",
        "x-envoy-original-path",
        "x-override-url",
        "x-http-destinationurl",
        "x-proxy-url",
        "x-request-uri",
        "x-script-name",
        "x-forwarded-script-name",
        "x-traversal-path",
        "x-ingress-path",
        "x-forwarded-context",
        "x-proxycontextpath",
    }
)
# Headers frameworks read as the scheme or port the client used (Rack: X-Forwarded-Scheme,
# -Ssl, -Port; Flask's ReverseProxied snippet: X-Scheme; IIS/OWA: Front-End-Https; IIS ARR:
# X-ARR-SSL; Werkzeug/Tornado: X-Scheme, X-Forwarded-Protocol). Apps build absolute URLs and
# decide secure-cookie and redirect questions on them: a client must not be able to claim
# https, or another port, through corsproxy, which sets X-Forwarded-Proto itself.
SCHEME_OVERRIDES = frozenset(
    {
        "x-forwarded-scheme",
        "x-scheme",
        "x-forwarded-ssl",
        "front-end-https",
        "x-url-scheme",
        "x-forwarded-protocol",
        "x-forwarded-port",
        "x-arr-ssl",
    }
)
# Headers frameworks and CDNs take as the client's address, besides X-Forwarded-For (which
# corsproxy appends to) and X-Real-IP: Rails' remote_ip reads Client-IP; Akamai sets
# True-Client-IP, Cloudflare CF-Connecting-IP (and True-Client-IP), Fastly Fastly-Client-IP;
# X-Client-IP, X-Cluster-Client-IP (Rackspace, Riverbed), X-Originating-IP (Exchange) and
# X-Remote-IP/-Addr are read by request-ip, PHP and Java libraries. Apps rate-limit, allow
# and log by them: a client must not be able to name its own address through corsproxy.
CLIENT_IP_OVERRIDES = frozenset(
    {
        "true-client-ip",
        "x-client-ip",
        "client-ip",
        "cf-connecting-ip",
        "x-cluster-client-ip",
        "fastly-client-ip",
        "x-originating-ip",
        "x-remote-ip",
        "x-remote-addr",
        # request-ip and remix-utils read these too: X-Forwarded (Forwarded-style
        # `for=`), Forwarded-For, Google App Engine's, Fly.io's, DigitalOcean App
        # Platform's and Netlify's client address.
        "x-forwarded",
        "forwarded-for",
        "x-appengine-user-ip",
        "fly-client-ip",
        "do-connecting-ip",
        "x-nf-client-connection-ip",
    }
)
REQUEST_DROP = HOP_BY_HOP | PATH_OVERRIDES | SCHEME_OVERRIDES | CLIENT_IP_OVERRIDES | {
    "expect", "host", "x-forwarded-proto", "x-forwarded-host", "forwarded", "x-real-ip",
    "x-forwarded-port", "x-forwarded-prefix",  # set from policy/forwarded.py's view
    "sec-websocket-origin",  # the hybi drafts' Origin: upstreams of that era check it
    # Read as the host the client used: X-Host (Express's `req.host` setups, Zend),
    # X-Original-Host (IIS/ARR, ASP.NET), X-Forwarded-Server (Apache mod_proxy's, read by
    # Symfony-era code): apps build links and redirects from them.
    "x-host", "x-original-host", "x-forwarded-server",
}  # fmt: skip
# A client's `Connection` header may not remove these: they are end to end, carry framing,
# or are the proxy's own.
PROTECTED = frozenset(
    {
        "content-length",
        "content-type",
        "content-encoding",
        "host",
        "origin",
        "authorization",
        "cookie",
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
    }
)
# Alt-Svc would advertise the upstream's own endpoints to clients.
RESPONSE_DROP = HOP_BY_HOP | {"alt-svc", "content-length"}
# Headers aiohttp's client would invent if the client did not send them.
SKIP_AUTO_HEADERS = frozenset({"User-Agent", "Accept", "Accept-Encoding", "Content-Type"})

# Field values: visible ASCII, SP, HTAB and obs-text; no CR, LF, NUL or other controls.
_FIELD_VALUE = re.compile(r"[\t\x20-\x7e\x80-\xff]*\Z")
# The same rules over names or values joined by LF (which neither may contain).
_TCHARS = TCHARS.encode()
_TOKEN_LINES = re.compile(_TCHARS + rb"(?:\n" + _TCHARS + rb")*\Z")
_VALUE_LINES = re.compile(rb"[\t\n\x20-\x7e\x80-\xff]*\Z")
_VALUE_BYTES = re.compile(rb"[\t\x20-\x7e\x80-\xff]*\Z")


def connection_tokens(headers: Iterable[tuple[str, str]]) -> set[str]:
    """Lower-case names listed in every `Connection` field line."""
    names: set[str] = set()
    for name, value in headers:
        if name.lower() == "connection":
            names.update(t.strip(" \t").lower() for t in value.split(",") if t.strip(" \t"))
    return names


# Headers that make many frameworks run another method than the request line's. A browser
# preflights them, so only a refused origin's request can carry them: it must not turn a
# simple POST into a DELETE upstream (CORS is not CSRF protection).
METHOD_OVERRIDES = frozenset({"x-http-method-override", "x-http-method", "x-method-override"})


@dataclass(frozen=True, slots=True)
class Forwarding:
    """What the proxy adds: the peer, the scheme it was reached by, the client's Host."""

    peer: str | None
    scheme: str
    host: str | None
    preserve_host: bool
    request_id: str = ""
    drop_method_overrides: bool = False  # set for requests from a disallowed origin
    # The client's view (policy/forwarded.py); None: resolved here, no proxy trusted.
    view: ClientView | None = None
    stripped_prefix: str = ""  # the route's path_prefix when it strips it

    def proxy_headers(self) -> list[tuple[str, str]]:
        """X-Forwarded-Proto/-Host/-Port/-Prefix and Forwarded, as policy/forwarded.py says."""
        view = self.view or resolve(self.peer, self.scheme == "https", self.host)
        return view.upstream_headers(self.stripped_prefix)


def upstream_request_headers(
    inbound: Sequence[tuple[str, str]], forwarding: Forwarding
) -> list[tuple[str, str]]:
    """The headers to send upstream, in the client's order, duplicates kept.

    Header names with `_` are dropped (nginx does the same): CGI-style upstreams map `_` and
    `-` to one name, so `X_Forwarded_For` could pass for `X-Forwarded-For` there.
    """
    listed = connection_tokens(inbound) - PROTECTED
    out: list[tuple[str, str]] = []
    forwarded_for: list[str] = []
    for name, value in inbound:
        lower = name.lower()
        if lower in REQUEST_DROP or lower in listed or "_" in name:
            continue
        if forwarding.drop_method_overrides and lower in METHOD_OVERRIDES:
            continue
        if lower == "x-request-id" and forwarding.request_id:
            continue  # replaced by the id the proxy logs
        if lower == "x-forwarded-for":
            forwarded_for.append(value)
            continue
        if lower == "max-forwards":
            value = _decrement(value)
        out.append((name, value))
    if forwarding.preserve_host and forwarding.host:
        out.append(("Host", forwarding.host))
    if forwarding.peer:
        forwarded_for.append(forwarding.peer)
    if forwarding.view is not None and forwarding.view.forwarded_for is not None:
        forwarded_for = [forwarding.view.forwarded_for]  # believed from `Forwarded` instead
    if forwarded_for:
        out.append(("X-Forwarded-For", ", ".join(forwarded_for)))
    out.extend(forwarding.proxy_headers())
    if forwarding.request_id:
        out.append(("X-Request-Id", forwarding.request_id))
    return out


# The fast path below gives the same answers as the plain code beside it; tests/test_fast_paths.py
# holds it to byte-identical results through the proxy with this switch on and off.
_FAST_PATHS = True


def fast_paths() -> bool:
    """Whether the small-answer fast paths are on (always, but in tests/test_fast_paths.py)."""
    return _FAST_PATHS


# RFC 9110 7.2: uri-host [":" port]; an IP literal or a reg-name (no userinfo, no path).
_HOST = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~!$&'()*+,;=%]*)(?::(\d{0,5}))?\Z")


def valid_host(value: str) -> bool:
    """Whether a Host field value is well-formed (RFC 9112 3.2: a server answers 400 if not)."""
    match = _HOST.match(value)
    return match is not None and int(match.group(1) or 0) <= 65535


_REQUEST_ID = re.compile(r"[A-Za-z0-9._:/+=@-]{1,128}\Z")


def request_id(inbound: str | None, generate: Callable[[], str]) -> str:
    """The client's X-Request-Id when it is a sane token, else a new one."""
    if inbound and _REQUEST_ID.match(inbound):
        return inbound
    return generate()


def relayable_response_headers(
    raw: Iterable[tuple[bytes, bytes]],
) -> tuple[list[tuple[str, str]], int]:
    """The upstream response headers worth relaying, and how many were dropped as invalid.

    Hop-by-hop headers and every name the upstream listed in `Connection` go; so does a
    header whose name is not a token or whose value holds control bytes (aiohttp's client
    accepts them, and its server would then refuse to send anything). Content-Length is
    dropped here and set by the caller from the parsed response.
    """
    raw = list(raw)
    head = clean_head(raw)
    if head is not None:
        return head.headers, 0
    # One scan of all names and one of all values first: nearly every answer is clean.
    names = b"\n".join(n for n, _ in raw)
    values = b"\n".join(v for _, v in raw)
    lines = len(raw) - 1
    clean = not raw or bool(
        # The counts make sure that no LF hides inside a name or a value.
        names.count(b"\n") == lines
        and values.count(b"\n") == lines
        and _TOKEN_LINES.match(names)
        and _VALUE_LINES.match(values)
    )
    decoded = [(n.decode("latin-1"), _text(v)) for n, v in raw]
    listed = connection_tokens(decoded)
    out: list[tuple[str, str]] = []
    invalid = 0
    for (name, value), (_, raw_value) in zip(decoded, raw, strict=True):
        lower = name.lower()
        if lower in RESPONSE_DROP or lower in listed:
            continue
        if not clean and (not TOKEN.match(name) or not _VALUE_BYTES.match(raw_value)):
            invalid += 1
            continue
        out.append((name, value))
    return out, invalid


class CleanHead(NamedTuple):
    """A clean, ASCII upstream head as relayable_response_headers keeps it, with the lower-case
    names beside it (one per kept header) for the relay's own tests."""

    headers: list[tuple[str, str]]
    lowers: list[str]
    joined: str  # "\n" before each lower-case name: a prefix test over all is one `in`


def clean_head(raw: Sequence[tuple[bytes, bytes]]) -> CleanHead | None:
    """relayable_response_headers's answer for a clean, ASCII head (nearly every one), else
    None (then the caller takes the plain path): the joined names and values are checked
    once, decoded once and split at the LFs, which the counts prove are separators only."""
    if not _FAST_PATHS or not raw:
        return None
    names_raw, values_raw = zip(*raw, strict=True)
    names = b"\n".join(names_raw)
    values = b"\n".join(values_raw)
    lines = len(raw) - 1
    if not (
        values.isascii()
        and names.count(b"\n") == lines
        and values.count(b"\n") == lines
        and _TOKEN_LINES.match(names)
        and _VALUE_LINES.match(values)
    ):
        return None
    text = names.decode("ascii")
    all_lowers = text.lower().split("\n")
    words = values.decode("ascii").split("\n")
    drop: frozenset[str] | set[str] = RESPONSE_DROP
    if "connection" in all_lowers:
        drop = RESPONSE_DROP | connection_tokens(zip(all_lowers, words, strict=True))
    headers: list[tuple[str, str]] = []
    lowers: list[str] = []
    for name, lower, value in zip(text.split("\n"), all_lowers, words, strict=True):
        if lower not in drop:
            headers.append((name, value))
            lowers.append(lower)
    return CleanHead(headers, lowers, "\n" + "\n".join(lowers))


def _text(value: bytes) -> str:
    """A header value as text that aiohttp writes back as the same bytes: aiohttp encodes
    header values as UTF-8, so a UTF-8 value (a `filename*`-less Content-Disposition, a
    Link title) is decoded as UTF-8 and leaves byte for byte (as latin-1 it left
    double-encoded). Other non-ASCII bytes (obsolete latin-1 text) cannot pass aiohttp
    unchanged: they leave as the UTF-8 encoding of their latin-1 reading."""
    if value.isascii():
        return value.decode("ascii")
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value.decode("latin-1")


def clean_reason(reason: str | None) -> str | None:
    """The upstream's reason phrase if it is safe to relay, else None (use the default)."""
    if reason and _FIELD_VALUE.match(reason) and "\t" not in reason:
        return reason
    return None


def is_websocket_upgrade(method: str, headers: Iterable[tuple[str, str]]) -> bool:
    pairs = list(headers)
    upgrade = any(n.lower() == "upgrade" and v.strip().lower() == "websocket" for n, v in pairs)
    return method == "GET" and upgrade and "upgrade" in connection_tokens(pairs)


def websocket_handshake_failure(
    http11: bool, headers: Iterable[tuple[str, str]]
) -> errors.Failure | None:
    """What is wrong with a client's WebSocket handshake (RFC 6455 4.2.1), checked before
    anything goes upstream: HTTP/1.1, one `Sec-WebSocket-Version: 13` (else 426, which
    names the version served, 4.4) and one key of 16 bytes in base64."""
    pairs = [(n.lower(), v.strip(" \t")) for n, v in headers]
    versions = [v for n, v in pairs if n == "sec-websocket-version"]
    keys = [v for n, v in pairs if n == "sec-websocket-key"]
    if not http11:
        return errors.WS_BAD_HANDSHAKE
    if versions != ["13"]:
        return errors.WS_BAD_VERSION
    if len(keys) != 1 or not _WS_KEY.match(keys[0]):
        return errors.WS_BAD_HANDSHAKE
    return None


# 16 bytes in base64 (the upstream handshake uses a key of the proxy's own).
_WS_KEY = re.compile(r"[A-Za-z0-9+/]{22}==\Z")


# --- TRACE and Max-Forwards (RFC 9110 7.6.2, 9.3.8) ----------------------------------

# TRACE (and IIS's TRACK) echo the request, cookies and credentials included, to whoever can
# read the answer (cross-site tracing): never forwarded. Browsers never send them.
REFUSED_METHODS = frozenset({"TRACE", "TRACK"})
ALLOW = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"


def _decrement(value: str) -> str:
    """Max-Forwards minus one for the next hop (an unusable value passes unchanged)."""
    if value.isascii() and value.isdigit() and len(value) <= 18 and int(value) > 0:
        return str(int(value) - 1)
    return value


def max_forwards_answer(
    method: str, values: Sequence[str], preflight: bool
) -> errors.Failure | None:
    """What the proxy answers itself before routing: a refused TRACE, or for an OPTIONS
    with `Max-Forwards: 0` (this hop is its final recipient) a 200 carrying `Allow`, here
    a Failure with status 200. A CORS preflight is left to the CORS decision."""
    if method.upper() in REFUSED_METHODS:
        return errors.TRACE_REFUSED
    if method != "OPTIONS" or not values or preflight:
        return None
    value = values[0]
    if len(values) > 1 or not (value.isascii() and value.isdigit()):
        return errors.BAD_MAX_FORWARDS
    return errors.MAX_FORWARDS_REACHED if not value.lstrip("0") else None


def framing_failure(http10: bool, transfer_encoding: Sequence[str]) -> errors.Failure | None:
    """A request body framed in a way some hop may read differently: refused, then the
    connection is closed (the body's end is in doubt).

    aiohttp's parser already refuses a Transfer-Encoding whose last coding is not `chunked`
    (400, RFC 9112 6.3). What it lets through with codings before `chunked` (`gzip, chunked`,
    `identity, chunked`, `,chunked`) is a coding corsproxy does not implement (501, RFC 9112
    6.1), and other servers disagree on how such lists frame a body.
    """
    if not transfer_encoding:
        return None
    if http10:  # RFC 9112 6.1: a 1.0 recipient reads no TE, so the framing is faulty
        return errors.HTTP10_TRANSFER_ENCODING
    if len(transfer_encoding) != 1 or transfer_encoding[0].strip(" \t").lower() != "chunked":
        return errors.TRANSFER_CODING_NOT_IMPLEMENTED
    return None


def head_too_large(target: str, raw_headers: Iterable[tuple[bytes, bytes]], limit: int) -> bool:
    """A request target or a header field (name and value) over `limit` bytes: the sizes
    aiohttp's parser measures, so the default limit refuses what it refused before."""
    if len(target) > limit:
        return True
    for name, value in raw_headers:  # noqa: SIM110 (a loop, not any(): on every request)
        if len(name) + len(value) > limit:
            return True
    return False
