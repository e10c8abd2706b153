"""A model of the browser's side of CORS (Fetch standard), for `corsproxy explain`.

Pure functions: when a request needs a preflight, and whether a response passes the CORS
check. Failures carry the names browsers use (Firefox's reason, Chrome's DevTools
`corsErrorStatus`) and Chrome's console text, so users can search for what they see.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import quote, unquote

from corsproxy.policy.cors import (
    ACAC,
    ACAH,
    ACAM,
    ACAO,
    ACAPN,
    ACEH,
    FORBIDDEN_METHODS,
    SAFELISTED_METHODS,
)
from corsproxy.policy.http_grammar import TOKEN
from corsproxy.policy.origins import (
    DEFAULT_PORTS,
    browser_ipv4,
    browser_ipv6,
    ends_in_a_number,
    parse_origin,
)

SAFELISTED_RESPONSE_HEADERS = (
    "Cache-Control",
    "Content-Language",
    "Content-Length",
    "Content-Type",
    "Expires",
    "Last-Modified",
    "Pragma",
)
_SIMPLE_CONTENT_TYPES = frozenset(
    {"application/x-www-form-urlencoded", "multipart/form-data", "text/plain"}
)
# Set by the browser itself; a page cannot send them, so they never affect CORS.
FORBIDDEN_REQUEST_HEADERS = frozenset(
    {
        "accept-charset",
        "accept-encoding",
        "access-control-request-headers",
        "access-control-request-method",
        "connection",
        "content-length",
        "cookie",
        "cookie2",
        "date",
        "dnt",
        "expect",
        "host",
        "keep-alive",
        "origin",
        "referer",
        "set-cookie",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "via",
    }
)
_UNSAFE_BYTES = re.compile(r'[\x00-\x08\x0a-\x1f"():<>?@\[\\\]{}\x7f]')
_LANGUAGE = re.compile(r"[0-9A-Za-z *,\-.;=]*\Z")
_RANGE = re.compile(r"bytes=[0-9]+-(?:[0-9]+)?\Z")


def is_forbidden_request_header(name: str) -> bool:
    lower = name.lower()
    return lower in FORBIDDEN_REQUEST_HEADERS or lower.startswith(("proxy-", "sec-"))


# Fetch: these name the method for some servers; a value naming a forbidden method (after
# splitting on commas, case-insensitively) makes the header forbidden.
_METHOD_OVERRIDE_HEADERS = frozenset(
    {"x-http-method", "x-http-method-override", "x-method-override"}
)
# Fetch's HTTP whitespace, which "normalize" strips from both ends of a header value.
_HTTP_WHITESPACE = " \t\n\r"


def normalize_header_value(value: str) -> str:
    """A header value as fetch() keeps it: leading and trailing HTTP whitespace removed."""
    return value.strip(_HTTP_WHITESPACE)


def fetch_header_error(name: str, value: str) -> str | None:
    """Why fetch() throws a TypeError for this header before any request, or None: a name
    that is not a token, or a value (normalized) with NUL, CR or LF or a code point above
    U+00FF (a ByteString)."""
    if not TOKEN.match(name):
        return f"'{name}' is not a valid HTTP header field name."
    value = normalize_header_value(value)
    if any(c in "\x00\n\r" or ord(c) > 0xFF for c in value):
        return f"{value!r} is not a valid value for the header {name}."
    return None


def fetch_drops_header(name: str, value: str) -> bool:
    """A forbidden request-header (Fetch): fetch() leaves it out without an error."""
    if is_forbidden_request_header(name):
        return True
    if name.lower() not in _METHOD_OVERRIDE_HEADERS:
        return False
    named = (m.strip(" \t").upper() for m in normalize_header_value(value).split(","))
    return any(m.isascii() and m in FORBIDDEN_METHODS for m in named)


def combine_headers(headers: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """The headers as fetch() sends them when the page sets one name more than once
    (Headers.append, then Fetch's "combine"): one header per name (case-insensitive), at the
    first occurrence's place and with its spelling, the values joined with ", "."""
    combined: dict[str, tuple[str, list[str]]] = {}
    for name, value in headers:
        combined.setdefault(name.lower(), (name, []))[1].append(value)
    return [(name, ", ".join(values)) for name, values in combined.values()]


def is_safelisted_request_header(name: str, value: str) -> bool:
    """Fetch's CORS-safelisted request-header check for one header."""
    lower = name.lower()
    if len(value.encode()) > 128:
        return False
    if lower == "accept":
        return not _UNSAFE_BYTES.search(value)
    if lower in ("accept-language", "content-language"):
        return bool(_LANGUAGE.match(value))
    if lower == "content-type":
        if _UNSAFE_BYTES.search(value):
            return False
        essence = value.split(";", 1)[0].strip(" \t").lower()
        return essence in _SIMPLE_CONTENT_TYPES
    if lower == "range":
        return bool(_RANGE.match(value))
    return False


# Fetch's "normalize a method": these six are upper-cased when they match byte-case-
# insensitively; every other method is sent byte for byte as the page wrote it (`patch` stays
# `patch`, and a preflight asks for `patch`).
NORMALIZED_METHODS = frozenset({"DELETE", "GET", "HEAD", "OPTIONS", "POST", "PUT"})


def normalize_method(method: str) -> str:
    """The method as fetch() and XMLHttpRequest send it."""
    upper = method.upper()
    return upper if method.isascii() and upper in NORMALIZED_METHODS else method


def fetch_method_error(method: str) -> str | None:
    """Why fetch() throws a TypeError for this method before any request, or None."""
    if not TOKEN.match(method):
        return f"'{method}' is not a valid HTTP method."
    if method.isascii() and method.upper() in FORBIDDEN_METHODS:
        return f"'{method.upper()}' HTTP method is unsupported."
    return None


@dataclass(frozen=True, slots=True)
class SerializedOrigin:
    """An `--origin` as a browser would send it: `valid` when it is exactly a serialized
    origin, else `suggestion` is the one a page at that address sends (None if none)."""

    valid: bool
    suggestion: str | None = None
    problem: str = ""


_AUTHORITY_END = re.compile(r"[/?#\\]")
# Schemes the URL parser reads with any number of slashes or backslashes after the colon.
_SPECIAL_SCHEME = re.compile(r"(https?|wss?|ftp):([/\\]*)", re.IGNORECASE)
_PERCENT_OK = re.compile(r"(?:[^%]|%[0-9A-Fa-f]{2})*\Z")
_LOOPBACK_HOSTS = re.compile(r"(localhost|.*\.localhost|127\.[0-9.]+|\[::1\])\Z")


def serialized_origin(value: str) -> SerializedOrigin:
    """Whether a browser could send `value` as `Origin` (`null` included), and if not, the
    serialized origin (RFC 6454, WHATWG URL) of the page it most likely names: scheme and
    host lower-case, no default port, no path, no trailing slash."""
    if value == "null":
        return SerializedOrigin(True)
    text = value.strip()
    if text.lower() == "null":
        return SerializedOrigin(False, "null", "'null' is written in lower case")
    problem = ""
    if text[:5].lower() == "blob:":  # a blob: URL's origin is the one of the URL inside
        inner = serialized_origin(text[5:])
        inner_origin = text[5:] if inner.valid else inner.suggestion
        if inner_origin is None or not inner_origin.startswith(("http://", "https://")):
            inner_origin = "null"
        why = "a page (or worker) at a blob: URL sends the origin of the URL inside it"
        return SerializedOrigin(False, inner_origin, why)
    special = _SPECIAL_SCHEME.match(text)
    if special is not None:  # WHATWG URL: http:/x, https:\\x and https:x all read as ://x
        scheme, rest = special.group(1), text[special.end() :]
        if special.group(2) != "//":
            problem = (
                f"browsers read {scheme}: followed by any number of '/' or '\\' as "
                f"{scheme.lower()}://"
            )
    else:
        scheme, sep, rest = text.partition("://")
        if not sep:
            rest, scheme = text, ""
            problem = "it has no scheme"
    scheme = scheme.lower()
    scheme = {"ws": "http", "wss": "https"}.get(scheme, scheme)
    if scheme == "file":
        return SerializedOrigin(False, "null", "pages on file: URLs send Origin: null")
    authority = _AUTHORITY_END.split(rest, maxsplit=1)[0]
    if len(authority) < len(rest):
        problem = problem or "an origin has no path (not even a trailing '/')"
    authority = authority.rpartition("@")[2]
    if authority.startswith("["):
        end = authority.find("]")
        host, port_text = authority[: end + 1], authority[end + 1 :]
        if end < 0 or (port_text and not port_text.startswith(":")):
            return SerializedOrigin(False, None, "the IPv6 address is not closed by ']'")
        v6 = browser_ipv6(host[1:-1])
        if v6 is None:
            return SerializedOrigin(False, None, f"{host} is not an IPv6 address")
        host, port_text = f"[{v6}]", port_text[1:]
    else:
        host, _, port_text = authority.partition(":")
        if "%" in host:  # the URL parser percent-decodes a host before IDNA
            decoded = unquote(host, errors="strict") if _PERCENT_OK.match(host) else None
            if decoded is None:
                return SerializedOrigin(False, None, f"'{host}' is not a valid host name")
            host = decoded
            problem = problem or "browsers percent-decode the host name"
        try:
            host = host.encode("idna").decode("ascii").lower() if not host.isascii() else host
        except UnicodeError:
            return SerializedOrigin(False, None, f"'{host}' is not a valid host name")
        host = host.lower()
        if host and ends_in_a_number(host):
            v4 = browser_ipv4(host)
            if v4 is None:
                return SerializedOrigin(False, None, f"'{host}' is not a valid IPv4 address")
            host = v4
    if not scheme:
        scheme = "http" if _LOOPBACK_HOSTS.match(host) else "https"
    port = ""
    if port_text:
        if not port_text.isdigit() or not port_text.isascii() or int(port_text) > 65535:
            return SerializedOrigin(False, None, f"'{port_text}' is not a port")
        if DEFAULT_PORTS.get(scheme) != int(port_text):
            port = f":{int(port_text)}"
    candidate = f"{scheme}://{host}{port}"
    # A host name ending in one dot (a page at https://a.example./) is sent as written.
    undotted = f"{scheme}://{host[:-1]}{port}" if host.endswith(".") and host != "." else ""
    if parse_origin(candidate) is None and (not undotted or parse_origin(undotted) is None):
        return SerializedOrigin(False, None, problem or "it is not scheme://host[:port]")
    if candidate == value:
        return SerializedOrigin(True)
    if not problem:
        if value != text:
            problem = "it has surrounding spaces"
        elif port_text and not port:
            problem = f"browsers leave out the default port {port_text}"
        elif port_text and port != f":{port_text}":
            problem = f"browsers write the port as {port[1:]}"
        else:
            problem = (
                "browsers send the scheme and host in lower case (IP addresses and "
                "international names in one canonical form)"
            )
    return SerializedOrigin(False, candidate, problem)


@dataclass(frozen=True, slots=True)
class PreflightNeed:
    needed: bool
    reasons: tuple[str, ...]
    request_header_names: tuple[str, ...]  # what the browser puts in ACRH: sorted, lower


# Names whose values decide whether they are safelisted.
_VALUE_CHECKED = ("accept", "accept-language", "content-language", "content-type", "range")


def preflight_need(method: str, headers: Sequence[tuple[str, str]]) -> PreflightNeed:
    """Whether a fetch() with this method and these headers is preceded by a preflight."""
    reasons: list[str] = []
    if method not in SAFELISTED_METHODS:
        reasons.append(f"{method} is not GET, HEAD or POST")
    page_headers = [(n, v) for n, v in headers if not fetch_drops_header(n, v)]
    safelisted_total = sum(
        len(v.encode()) for n, v in page_headers if is_safelisted_request_header(n, v)
    )
    unsafe: set[str] = set()
    for name, value in page_headers:
        if not is_safelisted_request_header(name, value):
            unsafe.add(name.lower())
            if name.lower() in _VALUE_CHECKED:
                reasons.append(f"{name}: {value!r} is not a CORS-safelisted value")
            else:
                reasons.append(f"{name} is not a CORS-safelisted request header")
    if safelisted_total > 1024:
        reasons.append("the safelisted headers add up to more than 1024 bytes")
        unsafe.update(n.lower() for n, v in page_headers if is_safelisted_request_header(n, v))
    return PreflightNeed(bool(reasons), tuple(reasons), tuple(sorted(unsafe)))


@dataclass(frozen=True, slots=True)
class Block:
    """Why the browser blocks: Firefox's reason, Chrome's DevTools name and console text."""

    firefox: str
    chrome: str
    message: str
    # For the per-engine model (policy/engines.py): the preflight's or response's status
    # (None: the upstream's, unknown), whether it was the preflight, and the value named
    # (the Access-Control-Allow-Origin value, the method or the header).
    status: int | None = None
    preflight: bool = False
    value: str = ""


# `explain`'s reason for a browser's block when corsproxy's decision allowed the request
# (snake_case like every other reason code; the Firefox name stays in the Block).
BLOCK_CODES = {
    "CORSMissingAllowOrigin": "allow_origin_missing",
    "CORSMultipleAllowOriginNotAllowed": "allow_origin_multiple",
    "CORSNotSupportingCredentials": "credentials_with_wildcard_origin",
    "CORSAllowOriginNotMatchingOrigin": "allow_origin_not_matching",
    "CORSMIssingAllowCredentials": "allow_credentials_missing",
    "CORSPreflightDidNotSucceed": "preflight_status_not_ok",
    "CORSMethodNotFound": "method_not_in_allow_methods",
    "CORSMissingAllowHeaderFromPreflight": "header_not_in_allow_headers",
}


def block_code(block: Block) -> str:
    """The snake_case reason code of a browser's block (see BLOCK_CODES)."""
    if block.chrome == "PreflightMissingAllowPrivateNetwork":
        return "allow_private_network_missing"
    return BLOCK_CODES.get(block.firefox, "browser_blocked")


def _values(headers: Sequence[tuple[str, str]], name: str) -> list[str]:
    lower = name.lower()
    return [v for n, v in headers if n.lower() == lower]


def _joined(headers: Sequence[tuple[str, str]], name: str) -> str | None:
    values = _values(headers, name)
    return ", ".join(values) if values else None


def _list(headers: Sequence[tuple[str, str]], name: str) -> list[str]:
    joined = _joined(headers, name) or ""
    return [t.strip(" \t") for t in joined.split(",") if t.strip(" \t")]


def cors_check(
    headers: Sequence[tuple[str, str]],
    origin: str,
    credentials: bool,
    preflight: bool = False,
    status: int | None = None,
) -> Block | None:
    """Fetch's CORS check of a response (the preflight's, or the actual one)."""
    pre = "Preflight" if preflight else ""
    subject = (
        "Response to preflight request doesn't pass access control check: " if preflight else ""
    )
    acao = _joined(headers, ACAO)
    if acao is None:
        return Block(
            "CORSMissingAllowOrigin",
            f"{pre}MissingAllowOriginHeader",
            f"{subject}No '{ACAO}' header is present on the requested resource.",
            status,
            preflight,
        )
    if len(_values(headers, ACAO)) > 1 or "," in acao:
        return Block(
            "CORSMultipleAllowOriginNotAllowed",
            f"{pre}MultipleAllowOriginValues",
            f"{subject}The '{ACAO}' header contains multiple values '{acao}', "
            "but only one is allowed.",
            status,
            preflight,
            acao,
        )
    if acao == "*" and not credentials:
        return None
    if acao == "*":
        return Block(
            "CORSNotSupportingCredentials",
            f"{pre}WildcardOriginNotAllowed",
            f"{subject}The value of the '{ACAO}' header in the response must not be the "
            "wildcard '*' when the request's credentials mode is 'include'.",
            status,
            preflight,
            acao,
        )
    if acao != origin:
        return Block(
            "CORSAllowOriginNotMatchingOrigin",
            f"{pre}AllowOriginMismatch",
            f"{subject}The '{ACAO}' header has a value '{acao}' that is not equal to the "
            "supplied origin.",
            status,
            preflight,
            acao,
        )
    if credentials and _joined(headers, ACAC) != "true":
        value = _joined(headers, ACAC) or ""
        return Block(
            "CORSMIssingAllowCredentials",
            f"{pre}InvalidAllowCredentials",
            f"{subject}The value of the '{ACAC}' header in the response is '{value}' which "
            "must be 'true' when the request's credentials mode is 'include'.",
            status,
            preflight,
            value,
        )
    return None


def preflight_check(
    status: int,
    headers: Sequence[tuple[str, str]],
    origin: str,
    credentials: bool,
    method: str,
    header_names: Sequence[str],
    private_network: bool = False,
) -> Block | None:
    """The browser's verdict on a preflight response (CORS-preflight fetch, steps 6-7).

    Both the CORS check and an ok status are required. Chromium and Firefox report the CORS
    check first (a refused 403 preflight without headers: `PreflightMissingAllowOriginHeader`,
    `CORSMissingAllowOrigin`), the bad status only when the CORS check passed (recorded in
    tests/data/engine_messages.json); WebKit reports the status first (policy/engines.py).
    """
    failure = cors_check(headers, origin, credentials, preflight=True, status=status)
    if failure is not None:
        return failure
    if not 200 <= status <= 299:
        return Block(
            "CORSPreflightDidNotSucceed",
            "PreflightInvalidStatus",
            "Response to preflight request doesn't pass access control check: "
            "It does not have HTTP ok status.",
            status,
            True,
        )
    methods = _list(headers, ACAM)
    wildcard_ok = not credentials
    if (
        method not in SAFELISTED_METHODS
        and method not in methods
        and not (wildcard_ok and "*" in methods)
    ):
        return Block(
            "CORSMethodNotFound",
            "MethodDisallowedByPreflightResponse",
            f"Method {method} is not allowed by {ACAM} in preflight response.",
            status,
            True,
            method,
        )
    allowed = {h.lower() for h in _list(headers, ACAH)}
    for name in header_names:
        star = wildcard_ok and "*" in allowed and name != "authorization"
        if name not in allowed and not star:
            return Block(
                "CORSMissingAllowHeaderFromPreflight",
                "HeaderDisallowedByPreflightResponse",
                f"Request header field {name} is not allowed by {ACAH} in preflight response.",
                status,
                True,
                name,
            )
    if private_network and _joined(headers, ACAPN) != "true":
        return Block(
            "(none: Firefox does not implement Private Network Access)",
            "PreflightMissingAllowPrivateNetwork",
            f"No '{ACAPN}' header was present in the preflight response for this private "
            "network request.",
            status,
            True,
        )
    return None


def readable_headers(headers: Sequence[tuple[str, str]], credentials: bool) -> tuple[str, ...]:
    """Response header names a script may read: safelisted ones plus exposed ones.
    `("*",)` stands for every header (except Set-Cookie)."""
    exposed = _list(headers, ACEH)
    if "*" in exposed and not credentials:
        return ("*",)
    extra = [
        h for h in exposed if h.lower() not in {s.lower() for s in SAFELISTED_RESPONSE_HEADERS}
    ]
    return SAFELISTED_RESPONSE_HEADERS + tuple(extra)


# --- Local Network Access (formerly Private Network Access) ------------------------------
# Checked for issue 14 against these sources:
PNA_PREFLIGHT_SOURCE = "https://developer.chrome.com/blog/private-network-access-preflight"
PNA_ON_HOLD_SOURCE = "https://developer.chrome.com/blog/pna-on-hold"
LNA_SOURCE = "https://developer.chrome.com/blog/local-network-access"
LNA_EXPLAINER = "https://github.com/WICG/local-network-access/blob/main/explainer.md"
LNA_SPEC = "https://wicg.github.io/local-network-access/"
LNA_STATUS = "https://chromestatus.com/feature/5152728072060928"
LNA_POLICY_MDN = (
    "https://developer.mozilla.org/en-US/docs/Web/HTTP/Reference/Headers/Permissions-Policy/"
    "local-network"
)
LNA_WEBTRANSPORT_STATUS = "https://chromestatus.com/feature/5126430912544768"
LNA_WEBSOCKETS_INTENT = "https://groups.google.com/a/chromium.org/g/blink-dev/c/7v-JbvYUClg"
# The last Chromium that sends the PNA preflight, and the first that prompts instead.
LAST_PNA_PREFLIGHT_CHROMIUM = 141
FIRST_LNA_CHROMIUM = 142
# The first Chromium with the two permissions 'local-network' and 'loopback-network'.
SPLIT_LNA_CHROMIUM = 145


def local_network_access_notes(allow_private_network: bool) -> list[str]:
    """What a browser does with a request from a public page to a local or loopback address
    (or from a local page to loopback), by Chromium version, and what the server in front of
    it can still do (for `explain`)."""
    answered = (
        "corsproxy answers it with Access-Control-Allow-Private-Network: true "
        "(allow_private_network is true)"
        if allow_private_network
        else "corsproxy does not allow it (allow_private_network is false): those versions "
        "only warn in DevTools unless enforcement was turned on by flag or enterprise policy"
    )
    return [
        f"Chromium 104 to {LAST_PNA_PREFLIGHT_CHROMIUM} (Private Network Access) send a "
        "preflight with Access-Control-Request-Private-Network: true before a public page's "
        "request to a private or loopback address, even before a simple request that needs "
        f"no CORS preflight; {answered} ({PNA_PREFLIGHT_SOURCE}; "
        f"enforcement was put on hold: {PNA_ON_HOLD_SOURCE})",
        f"Chromium {FIRST_LNA_CHROMIUM} and later (Local Network Access) send no such "
        "preflight: a public page's request to a local (private) or loopback address, and a "
        "local (intranet) page's request to loopback, need the user's permission instead "
        "(Chromium 156 was seen checking only the public page's), and no response header "
        f"can grant it ({LNA_SOURCE}; {LNA_EXPLAINER}; {LNA_STATUS})",
        f"the permission: 'local-network-access' in Chromium {FIRST_LNA_CHROMIUM} to "
        f"{SPLIT_LNA_CHROMIUM - 1}; from Chromium {SPLIT_LNA_CHROMIUM} two permissions, "
        "'local-network' (private addresses) and 'loopback-network' (localhost), with "
        f"'local-network-access' kept as an alias for both ({LNA_STATUS})",
        "the permission can only be granted to a secure context (an https page); requests "
        "from an http page to a local address are blocked",
        "an https page may call an http local address only with fetch(url, "
        "{targetAddressSpace: 'local'}) (or 'loopback'), or to a private IP literal or "
        "a .local name; serving this API over https avoids mixed content altogether",
        "a cross-origin iframe needs the permission delegated by its embedder: "
        'allow="local-network" or allow="loopback-network" (the Permissions-Policy directives '
        'of the same names), allow="local-network-access" before Chromium '
        f"{SPLIT_LNA_CHROMIUM} ({LNA_POLICY_MDN}; {LNA_SPEC})",
        "Local Network Access does not yet cover WebSockets, WebTransport or WebRTC: each is "
        f"its own, later Chromium feature ({LNA_WEBSOCKETS_INTENT}; {LNA_WEBTRANSPORT_STATUS})",
        "the CORS response headers still decide whether the page may read the answer; "
        "Firefox and Safari implement neither",
    ]


def websocket_local_network_notes() -> list[str]:
    """Local Network Access and a WebSocket (for `explain --private-network` of a ws:// path):
    neither mechanism gates it yet."""
    return [
        "not covered: a WebSocket to a local or loopback address gets no preflight of any "
        f"kind (none in Chromium 104 to {LAST_PNA_PREFLIGHT_CHROMIUM} either) and, so far, no "
        f"Local Network Access permission prompt (Chromium {FIRST_LNA_CHROMIUM} and later "
        "gate fetches, subresources and iframes; WebSockets, WebTransport and WebRTC are "
        f"separate, later features: {LNA_WEBSOCKETS_INTENT}; {LNA_WEBTRANSPORT_STATUS})",
        "so allow_private_network plays no part here: the Origin check of the handshake "
        "below is what protects the private API",
    ]


# --- the path and query as fetch() sends them (WHATWG URL parser, as Chromium applies it) ---
# Bytes Chromium percent-encodes in a path (checked in Chromium 14x with `new URL()`): the
# WHATWG path percent-encode set plus '|' and '^'; and in the query of an http(s) URL, the
# special-query set. Controls, DEL and non-ASCII (as UTF-8) are encoded in both.
_PATH_ENCODED = ' "#<>?`{}|^'
_QUERY_ENCODED = " \"#<>'"
_SINGLE_DOT = (".", "%2e")
_DOUBLE_DOT = ("..", ".%2e", "%2e.", "%2e%2e")


def _encode(text: str, encoded: str) -> str:
    out: list[str] = []
    for ch in text:
        if ch in encoded or ord(ch) < 0x20 or ord(ch) >= 0x7F:
            out.append(quote(ch, safe="", encoding="utf-8", errors="surrogatepass"))
        else:
            out.append(ch)
    return "".join(out)


def fetch_target(target: str) -> str:
    """The path and query a browser sends for a URL whose path (and query, fragment) is
    `target` as a page writes it after the origin: tabs and newlines removed, trailing spaces
    trimmed, the fragment dropped, `\\` read as `/`, `.` and `..` segments (also written
    `%2e`) resolved, and what the URL parser percent-encodes encoded (`%` is kept as is)."""
    text = re.sub(r"[\t\n\r]", "", target).rstrip("".join(map(chr, range(0x21))))
    text = text.split("#", 1)[0]
    path, sep, query = text.partition("?")
    segments: list[str] = []
    parts = path.replace("\\", "/").split("/")[1:] if path.startswith(("/", "\\")) else [path]
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        lower = part.lower()
        if lower in _DOUBLE_DOT:
            if segments:
                segments.pop()
            if last:
                segments.append("")
        elif lower in _SINGLE_DOT:
            if last:
                segments.append("")
        else:
            segments.append(_encode(part, _PATH_ENCODED))
    sent = "/" + "/".join(segments)
    return sent + (sep + _encode(query, _QUERY_ENCODED) if sep else "")
