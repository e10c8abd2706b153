"""The URLs and cookies an upstream puts in its answer, rewritten for the client. Pure.

As nginx's `proxy_redirect default` and Apache's `ProxyPassReverse` do: `Location`,
`Content-Location`, the URL of `Refresh` and every target URL of `Link` that points at the
route's upstream are put back on the public side:

- an absolute URL on the upstream's origin (scheme, host and port compared as URLs compare:
  host without case, default ports filled in), under its base path if it has one, becomes an
  absolute URL on the public origin the client used, the base path taken off and the route's
  prefix put back when `strip_prefix` is on;
- a path-absolute URL (`/get`) stays relative: the base path is taken off when it is under
  it, and the stripped prefix is put back (unless the path is already under it: an upstream
  that reads X-Forwarded-Prefix built it so, and rewriting twice changes nothing);
- every other URL (other origins, the public origin itself, relative `x/y`, `//other-host`,
  `data:`, anything this strict parser does not read) is left byte for byte.

`Set-Cookie` gets nginx's `proxy_cookie_path` (the first mapping whose `from` is a prefix of
the Path attribute replaces that prefix) and `proxy_cookie_domain` (a Domain attribute equal
to `from` without case, a leading dot kept, becomes `to`); the rest of the line is untouched.

No rewritten value can hold CR, LF or another control byte: the inputs are field values
that hygiene already checked, and what is spliced in is the public origin (a checked Host,
or the listener's address), the route's normalized prefix and checked config values. A final
check keeps the upstream's value whenever a rewritten one would not be a clean field value.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from corsproxy.policy.forwarded import join_prefix
from corsproxy.policy.routes import Route, Upstream, no_mapping

# Scheme (RFC 3986 3.1) and the authority forms read here: a bracketed IP literal or a plain
# host, then an optional port. Userinfo, backslashes, whitespace or controls: not parsed.
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*):")
_AUTHORITY = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~%]+)(?::([0-9]*))?\Z")
_UNPARSED = re.compile(r"[\x00-\x20\x7f\\]")
# What a rewritten header value may hold (RFC 9110 5.5: VCHAR, obs-text, SP, HTAB inside).
_FIELD_VALUE = re.compile(r"[\t\x20-\x7e\x80-\xff]*\Z")
_DEFAULT_PORTS = {"http": 80, "https": 443}
# HTML's "ASCII whitespace" (the Refresh parser) and what the URL parser trims at each end.
_HTML_SPACE = " \t\n\f\r"
_URL_TRIM = "".join(map(chr, range(0x21)))

URL_HEADERS = frozenset({"location", "content-location", "refresh", "link"})
REWRITTEN_HEADERS = URL_HEADERS | {"set-cookie"}


@dataclass(frozen=True, slots=True)
class Origin:
    scheme: str  # lower case
    host: str  # lower case; IPv6 literals keep their brackets
    port: int


def parse_origin(text: str) -> Origin | None:
    """`scheme://host[:port]` (an http or https origin), or None."""
    parts = _split(text)
    if parts is None or parts[0] is None or parts[2] or parts[3]:
        return None
    return parts[0]


def _split(url: str) -> tuple[Origin | None, bool, str, str] | None:
    """(origin or None, network-path, path, rest from '?' or '#') of a URL this module reads,
    or None. A network-path reference (`//host/x`) gets scheme "" in its origin."""
    if _UNPARSED.search(url):
        return None
    scheme = ""
    rest = url
    if match := _SCHEME.match(url):
        scheme = match.group(1).lower()
        if scheme not in _DEFAULT_PORTS or not url.startswith("//", match.end()):
            return None
        rest = url[match.end() :]
    if not rest.startswith("//"):
        if scheme:
            return None
        cut = _cut(rest)
        return None, False, rest[:cut], rest[cut:]
    end = _cut(rest, 2, "/")
    authority = _AUTHORITY.match(rest, 2, end)
    if authority is None:
        return None
    port_text = authority.group(2)
    default = _DEFAULT_PORTS.get(scheme, 0)
    port = int(port_text) if port_text else default
    if port > 65535:
        return None
    origin = Origin(scheme, authority.group(1).lower(), port)
    cut = _cut(rest, end)
    return origin, not scheme, rest[end:cut], rest[cut:]


def _cut(text: str, start: int = 0, also: str = "") -> int:
    """Where the part from `start` ends: at the first '?', '#' (or `also`), else the end."""
    ends = [i for c in "?#" + also if (i := text.find(c, start)) >= 0]
    return min(ends, default=len(text))


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + "/")


def _under_folded(path: str, prefix: str) -> bool:
    # Route prefixes match without ASCII case by default; so does "already prefixed".
    return _under(path[: len(prefix) + 1].lower(), prefix.lower())


@dataclass(frozen=True, slots=True)
class UrlMap:
    """From the upstream's URLs to the client's, for one answer."""

    upstream: Origin
    base_path: str  # the upstream's base path, without a trailing slash; "" for none
    prefix: str  # the route's stripped prefix, put back; "" when not stripped (or "/")
    public: Origin | None  # the origin the client used, parsed
    public_text: str  # ... as written into rewritten URLs

    def path(self, path: str, absolute: bool) -> str | None:
        """The public path for an upstream path; None for an absolute URL's path that is not
        under the base path (it is not this route's). A path-absolute reference not under
        the base keeps its path: the upstream did not count its base in it."""
        if self.base_path:
            if _under(path, self.base_path):
                path = path[len(self.base_path) :]
            elif absolute:
                return None
        if self.prefix and not _under_folded(path, self.prefix):
            path = self.prefix + path
        return path

    def url(self, url: str) -> str:
        """The rewritten URL reference, or `url` itself (the same object) when it does not
        point at the upstream."""
        parts = _split(url)
        if parts is None:
            return url
        origin, network_path, path, rest = parts
        if origin is None:  # relative: only a path-absolute one is mapped
            if not path.startswith("/"):
                return url
            mapped = self.path(path, absolute=False)
            if mapped is None or mapped == path:
                return url
            return (mapped or "/") + rest
        if network_path:
            # Resolved against the public URL; it is the upstream's when host and port are.
            origin = Origin(self.upstream.scheme, origin.host, origin.port or self.upstream.port)
        if origin == self.public or origin != self.upstream or not self.public_text:
            return url
        mapped = self.path((path or "/") if self.base_path else path, absolute=True)
        if mapped is None:
            return url
        head = self.public_text.split(":", 1)[1] if network_path else self.public_text
        return head + mapped + rest


def url_map(upstream: Upstream, prefix: str, public_origin: str) -> UrlMap | None:
    """The map for a route's upstream and stripped prefix ("" if none) seen from
    `public_origin`; None when the upstream's own address cannot be read (never: it is
    checked when loaded) or the public origin is not an origin."""
    own = parse_origin(upstream.origin)
    public = parse_origin(public_origin)
    if own is None or public is None:
        return None
    return UrlMap(own, upstream.base_path, prefix.rstrip("/"), public, public_origin)


# --- where the URLs are in each header ------------------------------------------------


def _rewrite_span(value: str, start: int, end: int, urls: UrlMap) -> str:
    """`value` with the URL in [start, end) rewritten; C0 and spaces at its ends are kept,
    as the URL parser trims them."""
    while start < end and value[start] in _URL_TRIM:
        start += 1
    while end > start and value[end - 1] in _URL_TRIM:
        end -= 1
    url = value[start:end]
    new = urls.url(url)
    return value if new is url else value[:start] + new + value[end:]


def rewrite_location(value: str, urls: UrlMap) -> str:
    """`Location` and `Content-Location`: the whole value is one URL reference."""
    return _rewrite_span(value, 0, len(value), urls)


def refresh_url_span(value: str) -> tuple[int, int] | None:
    """Where the URL of a `Refresh` value is, as HTML's "shared declarative refresh steps"
    read it (`5; url=/x`, `0;URL='/x'`, `3, /x`, `1 /x`), or None (no URL, or not a
    refresh)."""
    n = len(value)
    i = 0
    while i < n and value[i] in _HTML_SPACE:
        i += 1
    digits = i
    while i < n and value[i].isascii() and value[i].isdigit():
        i += 1
    if i == digits and (i >= n or value[i] != "."):
        return None
    while i < n and (value[i] == "." or (value[i].isascii() and value[i].isdigit())):
        i += 1
    if i < n:
        if value[i] not in ";," + _HTML_SPACE:
            return None
        while i < n and value[i] in _HTML_SPACE:
            i += 1
        if i < n and value[i] in ";,":
            i += 1
        while i < n and value[i] in _HTML_SPACE:
            i += 1
    if i >= n:
        return None
    start = i
    if value[i : i + 3].lower() == "url":
        j = i + 3
        while j < n and value[j] in _HTML_SPACE:
            j += 1
        if j < n and value[j] == "=":
            j += 1
            while j < n and value[j] in _HTML_SPACE:
                j += 1
            start = i = j
    elif value[i] not in "uU":
        start = i  # "skip quotes" below
    if i < n and start == i and value[i] in "'\"":
        quote = value[i]
        start = i + 1
        close = value.find(quote, start)
        return start, n if close < 0 else close
    return start, n


def rewrite_refresh(value: str, urls: UrlMap) -> str:
    span = refresh_url_span(value)
    return value if span is None else _rewrite_span(value, *span, urls)


def link_url_spans(value: str) -> list[tuple[int, int]]:
    """Where each link's target URI is in a `Link` value (RFC 8288 3: `<uri>; params`,
    comma-separated, commas inside quoted parameters ignored). A link-value that does not
    start with `<` is skipped to the next comma; an unclosed `<` or quote ends the scan."""
    spans: list[tuple[int, int]] = []
    n = len(value)
    i = 0
    expect_link = True
    while i < n:
        c = value[i]
        if expect_link:
            if c in " \t,":
                i += 1
                continue
            expect_link = False
            if c == "<":
                close = value.find(">", i + 1)
                if close < 0:
                    break
                spans.append((i + 1, close))
                i = close + 1
            continue
        if c == '"':
            i += 1
            while i < n and value[i] != '"':
                i += 2 if value[i] == "\\" else 1
            if i >= n:
                break
        elif c == ",":
            expect_link = True
        i += 1
    return spans


def rewrite_link(value: str, urls: UrlMap) -> str:
    # Right to left, so the spans still to rewrite keep their places.
    for start, end in reversed(link_url_spans(value)):
        url = value[start:end]
        new = urls.url(url)
        if new is not url:
            value = value[:start] + new + value[end:]
    return value


# --- cookies --------------------------------------------------------------------------

CookieMap = Mapping[str, str]


def map_cookie_path(path: str, mapping: CookieMap) -> str:
    """nginx's proxy_cookie_path: the first `from` that is a prefix of the path (compared
    as written) is replaced by its `to`."""
    for old, new in mapping.items():
        if path.startswith(old):
            return new + path[len(old) :]
    return path


def map_cookie_domain(domain: str, mapping: CookieMap) -> str:
    """nginx's proxy_cookie_domain: a domain equal to `from` without ASCII case (a leading
    dot on either ignored) becomes `to`; the attribute's own leading dot is kept."""
    dot = domain.startswith(".")
    bare = domain[1:] if dot else domain
    for old, new in mapping.items():
        if bare.lower() == old.lstrip(".").lower():
            return "." + new.lstrip(".") if dot else new
    return domain


def rewrite_set_cookie(value: str, paths: CookieMap, domains: CookieMap) -> str:
    """A `Set-Cookie` line with its Path and Domain attributes mapped. Attributes are read
    as RFC 6265 5.2 reads them (split at ';', the name up to '=' without case, both sides
    trimmed of spaces and tabs); the cookie's name and value and every other attribute
    stay byte for byte."""
    parts = value.split(";")
    changed = False
    for k in range(1, len(parts)):
        name, eq, attr = parts[k].partition("=")
        if not eq:
            continue
        kind = name.strip(" \t").lower()
        mapping = paths if kind == "path" else domains if kind == "domain" else None
        if not mapping:
            continue
        core = attr.strip(" \t")
        if not core:
            continue
        new = map_cookie_path(core, paths) if kind == "path" else map_cookie_domain(core, domains)
        if new != core:
            lead = attr[: len(attr) - len(attr.lstrip(" \t"))]
            trail = attr[len(attr.rstrip(" \t")) :]
            parts[k] = f"{name}={lead}{new}{trail}"
            changed = True
    return ";".join(parts) if changed else value


# --- one answer's headers -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ResponseRewrite:
    """What to rewrite in one answer: URLs (None: off) and cookie attributes."""

    urls: UrlMap | None
    cookie_path: CookieMap = field(default_factory=no_mapping)
    cookie_domain: CookieMap = field(default_factory=no_mapping)

    def header(self, name: str, value: str) -> str:
        """One header's value, rewritten; the upstream's own value when nothing applies or
        when the result would not be a clean field value."""
        lower = name.lower()
        if lower == "set-cookie":
            if not (self.cookie_path or self.cookie_domain):
                return value
            new = rewrite_set_cookie(value, self.cookie_path, self.cookie_domain)
        elif self.urls is None or lower not in URL_HEADERS:
            return value
        elif lower == "refresh":
            new = rewrite_refresh(value, self.urls)
        elif lower == "link":
            new = rewrite_link(value, self.urls)
        else:
            new = rewrite_location(value, self.urls)
        return new if _FIELD_VALUE.match(new) else value

    def headers(self, headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
        return [(name, self.header(name, value)) for name, value in headers]


def response_rewrite(
    route: Route, public_origin: str, inherited_prefix: str = ""
) -> ResponseRewrite | None:
    """The rewrite of a route's answers for a client that used `public_origin`
    (`scheme://host[:port]`), or None when the route rewrites nothing. `inherited_prefix` is
    the path a trusted proxy in front strips (its X-Forwarded-Prefix): put back first."""
    urls = None
    if route.rewrite_redirects and route.upstream is not None:
        prefix = join_prefix(inherited_prefix, route.path_prefix if route.strip_prefix else "")
        urls = url_map(route.upstream, prefix, public_origin)
    if urls is None and not (route.cookie_path or route.cookie_domain):
        return None
    return ResponseRewrite(urls, route.cookie_path, route.cookie_domain)
