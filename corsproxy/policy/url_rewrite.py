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
- the prefix put back is the inherited one (a trusted proxy's X-Forwarded-Prefix) then the
  route's: a path already under both is left, one under the route's own prefix only (an app
  told its mount point, Django's FORCE_SCRIPT_NAME) gets the inherited prefix alone, any
  other both (`/edge/djp/x` stays, `/djp/x` and `/x` become `/edge/djp/x`);
- with preserve_host the upstream believes its origin is `<its scheme>://<the Host it was
  sent>`: absolute URLs on that origin (under the base path) are mapped exactly as those on
  its own origin, even when it is the public origin (the prefix goes back); a URL whose
  mapping changes nothing is left byte for byte;
- every other URL (other origins, the public origin itself, relative `x/y`, `//other-host`,
  `data:`, anything this strict parser does not read) is left byte for byte.

Hosts compare as addresses when they are IP literals (`[0:0::1]` is `[::1]`), as names
without case otherwise; a network-path reference (`//host/x`) has the upstream's scheme, so
no port means that scheme's default port. Never rewritten, so that no rewrite can point
outside the prefix or at another host: a URL whose path holds a dot segment (`.`, `..`,
`%2e` in any case), and a path-absolute result that would start with `//` or `/\\` (a
browser reads that as another host: `/base//evil.example/` with the base taken off).

`Set-Cookie` gets nginx's `proxy_cookie_path` (the first mapping whose `from` is a prefix of
the Path attribute replaces that prefix; the `to` is in corsproxy's URL space, so a trusted
proxy's inherited prefix goes in front of it; an unmapped Path is left) and
`proxy_cookie_domain` (a Domain attribute equal to `from` without case, a leading dot kept,
becomes `to`); the rest of the line is untouched.

No rewritten value can hold CR, LF or another control byte: the inputs are field values
that hygiene already checked, and what is spliced in is the public origin (a checked Host,
or the listener's address), the route's normalized prefix and checked config values. A final
check keeps the upstream's value whenever a rewritten one would not be a clean field value.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from corsproxy.policy.cors import merge_vary
from corsproxy.policy.forwarded import join_prefix
from corsproxy.policy.routes import Route, Upstream, no_mapping

# Scheme (RFC 3986 3.1) and the authority forms read here: a bracketed IP literal or a plain
# host, then an optional port. Userinfo, backslashes, whitespace or controls: not parsed.
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*):")
_AUTHORITY = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~%]+)(?::([0-9]*))?\Z")
_UNPARSED = re.compile(r"[\x00-\x20\x7f\\]")
# What a rewritten header value may hold (RFC 9110 5.5: VCHAR, obs-text, SP, HTAB inside).
_FIELD_VALUE = re.compile(r"[\t\x20-\x7e\x80-\U0010ffff]*\Z")
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
    if parts is None or parts[0] is None or parts[1] or parts[2] or parts[3]:
        return None
    return parts[0]


def _host(text: str) -> str | None:
    """A host as compared: an IP literal as its address (`[0:0::1]` is `[::1]`), a name
    in lower case; None for a bracketed literal that is no IPv6 address."""
    if text.startswith("["):
        try:
            return f"[{ipaddress.IPv6Address(text[1:-1]).compressed}]"
        except ValueError:
            return None
    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        return text.lower()


def _split(url: str, network_scheme: str = "") -> tuple[Origin | None, bool, str, str] | None:
    """(origin or None, network-path, path, rest from '?' or '#') of a URL this module reads,
    or None. A network-path reference (`//host/x`) takes `network_scheme` (none: not read)
    and that scheme's default port when it has none."""
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
    network_path = not scheme
    if network_path:
        scheme = network_scheme
        if scheme not in _DEFAULT_PORTS:
            return None
    end = _cut(rest, 2, "/")
    authority = _AUTHORITY.match(rest, 2, end)
    if authority is None:
        return None
    port_text = authority.group(2)
    port = int(port_text) if port_text else _DEFAULT_PORTS[scheme]
    host = _host(authority.group(1))
    if port > 65535 or host is None:
        return None
    origin = Origin(scheme, host, port)
    cut = _cut(rest, end)
    return origin, network_path, rest[end:cut], rest[cut:]


def _cut(text: str, start: int = 0, also: str = "") -> int:
    """Where the part from `start` ends: at the first '?', '#' (or `also`), else the end."""
    ends = [i for c in "?#" + also if (i := text.find(c, start)) >= 0]
    return min(ends, default=len(text))


_DOT_SEGMENT = re.compile(r"(?:\A|/)(?:\.|%2e){1,2}(?:/|\Z)", re.IGNORECASE)


def _has_dot_segment(path: str) -> bool:
    """Whether a path holds a `.` or `..` segment, percent-encoded or not: where it
    resolves is not where its text says (`/api/../admin` is not under `/api`)."""
    return _DOT_SEGMENT.search(path) is not None


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
    inherited: str = ""  # the part of `prefix` a trusted proxy in front strips ("" none)
    # The origin the upstream believes it has (its scheme, the Host it was sent), if other.
    alias: Origin | None = None

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
            own = self.prefix[len(self.inherited) :]  # the route's own prefix
            if self.inherited and own and _under_folded(path, own):
                path = self.inherited + path  # the app built it with its mount point
            else:
                path = self.prefix + path
        return path

    def url(self, url: str) -> str:
        """The rewritten URL reference, or `url` itself (the same object) when it does not
        point at the upstream."""
        # A network-path reference has the scheme of the URL it is resolved against: the
        # upstream's, as the upstream built it for its own address.
        parts = _split(url, self.upstream.scheme)
        if parts is None or _has_dot_segment(parts[2]):
            return url
        origin, network_path, path, rest = parts
        if origin is None:  # relative: only a path-absolute one is mapped
            if not path.startswith("/"):
                return url
            mapped = self.path(path, absolute=False)
            if mapped is None or mapped == path:
                return url
            mapped = mapped or "/"
            if mapped.startswith(("//", "/\\")):
                return url  # a browser would read a host there (`/base//evil.example/`)
            return mapped + rest
        # The client's own origin is read as a path-absolute reference is: the app may have
        # built it from the Host or X-Forwarded-Host it was sent, without the prefix (so
        # whether the app honours X-Forwarded-Proto changes nothing).
        on_public = origin == self.public
        believed = on_public or (self.alias is not None and origin == self.alias)
        if not self.public_text or not (believed or origin == self.upstream):
            return url
        mapped = self.path((path or "/") if self.base_path else path, absolute=not on_public)
        if mapped is None or (on_public and (mapped or "/") == (path or "/")):
            return url  # already the client's URL: byte for byte
        head = self.public_text.split(":", 1)[1] if network_path else self.public_text
        return head + mapped + rest


def url_map(
    upstream: Upstream,
    prefix: str,
    public_origin: str,
    inherited: str = "",
    upstream_host: str | None = None,
) -> UrlMap | None:
    """The map for a route's upstream and stripped prefix ("" if none; it starts with the
    `inherited` one) seen from `public_origin`; None when the upstream's own address cannot
    be read (never: it is checked when loaded) or the public origin is not an origin.
    `upstream_host`: the Host sent upstream (preserve_host), the upstream's idea of itself."""
    own = parse_origin(upstream.origin)
    public = parse_origin(public_origin)
    if own is None or public is None:
        return None
    prefix = prefix.rstrip("/")
    inherited = inherited.rstrip("/")
    if not prefix.startswith(inherited):
        inherited = ""
    alias = parse_origin(f"{own.scheme}://{upstream_host}") if upstream_host else None
    if alias == own:
        alias = None
    return UrlMap(own, upstream.base_path, prefix, public, public_origin, inherited, alias)


# --- where the URLs are in each header ------------------------------------------------


class UrlRewriter(Protocol):
    def url(self, url: str) -> str: ...


@dataclass(slots=True)
class _Recorder:
    """A UrlMap that notes whether it wrote the public origin into a URL (the answer then
    depends on the client's Host: `Vary: Host`)."""

    urls: UrlMap
    absolute: bool = False

    def url(self, url: str) -> str:
        new = self.urls.url(url)
        if new is not url and (not new.startswith("/") or new.startswith("//")):
            self.absolute = True
        return new


def _rewrite_span(value: str, start: int, end: int, urls: UrlRewriter) -> str:
    """`value` with the URL in [start, end) rewritten; C0 and spaces at its ends are kept,
    as the URL parser trims them."""
    while start < end and value[start] in _URL_TRIM:
        start += 1
    while end > start and value[end - 1] in _URL_TRIM:
        end -= 1
    url = value[start:end]
    new = urls.url(url)
    return value if new is url else value[:start] + new + value[end:]


def rewrite_location(value: str, urls: UrlRewriter) -> str:
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


def rewrite_refresh(value: str, urls: UrlRewriter) -> str:
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


def rewrite_link(value: str, urls: UrlRewriter) -> str:
    # Right to left, so the spans still to rewrite keep their places.
    for start, end in reversed(link_url_spans(value)):
        url = value[start:end]
        new = urls.url(url)
        if new is not url:
            value = value[:start] + new + value[end:]
    return value


# --- cookies --------------------------------------------------------------------------

CookieMap = Mapping[str, str]


def map_cookie_path(path: str, mapping: CookieMap, inherited: str = "") -> str:
    """nginx's proxy_cookie_path: the first `from` that is a prefix of the path (compared
    as written) is replaced by its `to`, which is a path of corsproxy's URL space: the
    `inherited` prefix a trusted proxy in front strips goes before it."""
    for old, new in mapping.items():
        if path.startswith(old):
            return inherited + new + path[len(old) :]
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


def rewrite_set_cookie(
    value: str, paths: CookieMap, domains: CookieMap, inherited: str = ""
) -> str:
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
        new = (
            map_cookie_path(core, paths, inherited)
            if kind == "path"
            else map_cookie_domain(core, domains)
        )
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
    cookie_prefix: str = ""  # the inherited prefix, put before a mapped cookie Path

    def header(self, name: str, value: str) -> str:
        """One header's value, rewritten; the upstream's own value when nothing applies or
        when the result would not be a clean field value."""
        return self._header(name, value, self.urls)

    def _header(self, name: str, value: str, urls: UrlRewriter | None) -> str:
        lower = name.lower()
        if lower == "set-cookie":
            if not (self.cookie_path or self.cookie_domain):
                return value
            new = rewrite_set_cookie(
                value, self.cookie_path, self.cookie_domain, self.cookie_prefix
            )
        elif urls is None or lower not in URL_HEADERS:
            return value
        elif lower == "refresh":
            new = rewrite_refresh(value, urls)
        elif lower == "link":
            new = rewrite_link(value, urls)
        else:
            new = rewrite_location(value, urls)
        return new if _FIELD_VALUE.match(new) else value

    def headers(self, headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
        return self.rewritten(headers)[0]

    def rewritten(self, headers: list[tuple[str, str]]) -> tuple[list[tuple[str, str]], bool]:
        """The headers rewritten, and whether the public origin (from the client's Host or
        a trusted proxy's view) was written into one of them: a cache must then key the
        answer on it, as it does not with a path-absolute rewrite (`Vary: Host`)."""
        recorder = None if self.urls is None else _Recorder(self.urls)
        out = []
        for name, value in headers:
            before = recorder is not None and recorder.absolute
            new = self._header(name, value, recorder)
            if new is value and recorder is not None:
                recorder.absolute = before  # nothing written (or the rewrite was refused)
            out.append((name, new))
        return out, recorder is not None and recorder.absolute


def with_vary_host(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """`headers` with `Host` merged into its `Vary` (one line, where the first was)."""
    lines = [value for name, value in headers if name.lower() == "vary"]
    merged = merge_vary(lines, ("Host",))
    out = [h for h in headers if h[0].lower() != "vary"]
    where = next((i for i, h in enumerate(headers) if h[0].lower() == "vary"), len(out))
    out.insert(where, ("Vary", merged))
    return out


def response_rewrite(
    route: Route, public_origin: str, inherited_prefix: str = "", upstream_host: str | None = None
) -> ResponseRewrite | None:
    """The rewrite of a route's answers for a client that used `public_origin`
    (`scheme://host[:port]`), or None when the route rewrites nothing. `inherited_prefix` is
    the path a trusted proxy in front strips (its X-Forwarded-Prefix): put back first.
    `upstream_host` is the Host sent upstream (preserve_host; None: the upstream's own)."""
    urls = None
    if route.rewrite_redirects and route.upstream is not None:
        prefix = join_prefix(inherited_prefix, route.path_prefix if route.strip_prefix else "")
        urls = url_map(route.upstream, prefix, public_origin, inherited_prefix, upstream_host)
    if urls is None and not (route.cookie_path or route.cookie_domain):
        return None
    return ResponseRewrite(urls, route.cookie_path, route.cookie_domain, inherited_prefix)
