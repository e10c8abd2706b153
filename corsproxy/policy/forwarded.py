"""Who the client is and which URL it used, behind trusted proxies: pure code, no I/O.

One rule, `resolve()`: given the peer's address, whether the listener is TLS, the Host header
and the client's forwarding headers, it answers with the client's view (`ClientView`): the
public origin the client used (`PublicOrigin`), the client's address for the access log, the
URL prefix a trusted proxy in front already stripped, and the forwarding headers to send
upstream.

- From a peer in `trusted_proxies` (as Traefik's `forwardedHeaders.trustedIPs` and nginx's
  `set_real_ip_from`), one family of forwarding headers is read: the one `forwarded_headers`
  configures, never one guessed from what the request carries (a client controls part of
  that: a front that sets only X-Forwarded-For passes a client's `Forwarded` on).
  - `x-forwarded` (the default; what nginx's `proxy_set_header`, Traefik, HAProxy and the
    cloud load balancers send): X-Forwarded-Proto, -Host, -Port and -Prefix are kept, the
    client is the rightmost X-Forwarded-For entry that is not a trusted proxy (nginx's
    `real_ip_recursive on`). `Forwarded` is never read nor sent on (nginx's realip and
    Traefik never read it). Of a field with several values the first is used, as Spring's
    ForwardedHeaderFilter does (Werkzeug's ProxyFix counts hops from the right; both agree
    when one proxy sets the field, as `proxy_set_header` does); corsproxy sends on the one
    value it used.
  - `forwarded` (RFC 7239): `Forwarded` is walked element by element from the right; the
    client is the `for=` of the rightmost element whose `for=` is not a trusted proxy, and
    the scheme and host are those of the rightmost element (the one the peer wrote). A
    malformed element stops the walk, so what a client wrote on the left never hides what
    the proxies appended on the right. X-Forwarded-* are not read: corsproxy sends its own
    (X-Forwarded-For: the walked `for=` addresses and the peer), and appends its element
    to the elements walked (it never starts a chain).
  A value that would be unsafe (not http/https, a host with bad characters, a port out of
  range, a prefix that is not plain unreserved characters) is ignored and the connection's
  own is used.
- From anyone else, the client's values are never read nor sent: X-Forwarded-Proto and -Host
  are corsproxy's own (the connection's scheme, the Host header), and X-Forwarded-Prefix only
  names the prefix a route strips. No X-Forwarded-Port is sent (the Host the client sent
  carries its port; the listener's own port can differ behind a port mapping) and no
  `Forwarded` (X-Forwarded-* say the same, and the contract has always been that none goes).
- The client address for the log: as above from a trusted peer; the peer's own address when
  the peer is not trusted.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Iterable, Iterator, Sequence
from enum import StrEnum
from typing import NamedTuple

from corsproxy.policy.http_grammar import TCHARS, TOKEN

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

DEFAULT_PORTS = {"http": 80, "https": 443}


# --- trusted proxies ---------------------------------------------------------------------


def parse_network(entry: str) -> Network:
    """A `trusted_proxies` entry: an address or a CIDR (`10.0.0.0/8`, `fd00::/8`).

    Raises ValueError with a message saying what is wrong (host bits set, not an address).
    """
    text = entry.strip()
    if not text or text != entry or any(c.isspace() for c in text):
        raise ValueError(f"'{entry}' is not an IP address or CIDR")
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    if "%" in text:
        raise ValueError(f"'{entry}': zone indexes (%eth0) are not supported")
    try:
        network = ipaddress.ip_network(text, strict=True)
    except ValueError as exc:
        if "has host bits set" in str(exc):
            loose = ipaddress.ip_network(text, strict=False)
            raise ValueError(f"'{entry}' has host bits set (the network is {loose})") from None
        raise ValueError(f"'{entry}' is not an IP address or CIDR") from None
    return _unmapped(network)


_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")


def _unmapped(network: Network) -> Network:
    """An IPv4-mapped IPv6 entry (`::ffff:127.0.0.2`, `::ffff:0:0/96`) as the IPv4 network it
    names: peers are matched in their IPv4 form (a dual-stack listener sees `::ffff:a.b.c.d`),
    as nginx matches IPv4-mapped addresses against IPv4 entries."""
    if isinstance(network, ipaddress.IPv6Network) and network.subnet_of(_MAPPED):
        mapped = network.network_address.ipv4_mapped
        assert mapped is not None  # a subnet of ::ffff:0:0/96
        return ipaddress.IPv4Network((mapped, network.prefixlen - 96))
    return network


def _address(text: str) -> Address | None:
    """An address as peers and X-Forwarded-For write it: `1.2.3.4`, `1.2.3.4:5678`, `::1`,
    `[::1]`, `[::1]:80`; None for anything else."""
    text = text.strip(" \t")
    if text.startswith("["):
        end = text.find("]")
        rest = text[end + 1 :] if end > 0 else "x"
        if end < 0 or (rest and not (rest[0] == ":" and rest[1:].isdigit())):
            return None
        text = text[1:end]
    elif text.count(":") == 1:  # IPv4 with a port (Azure writes them so)
        text, _, port = text.partition(":")
        if not port.isdigit():
            return None
    if "%" in text:  # a zone index: only link-local, never a client's
        return None
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class TrustedProxies(tuple[Network, ...]):
    """The compiled `trusted_proxies`: the peers whose forwarding headers are believed (a
    tuple of networks, so the schema shows its default as a list)."""

    __slots__ = ()

    def trusts(self, address: str | Address | None) -> bool:
        if not self or address is None:
            return False
        parsed = _address(address) if isinstance(address, str) else address
        if parsed is None:
            return False
        return any(parsed.version == n.version and parsed in n for n in self)

    @property
    def everyone(self) -> bool:
        """Whether every address is trusted (`0.0.0.0/0`, `::/0`): `check` warns."""
        return any(n.prefixlen == 0 for n in self)


NO_PROXIES = TrustedProxies()


# --- the public origin -------------------------------------------------------------------

# A host corsproxy will put in a URL: a DNS-style name, an IPv4 address, or an IPv6 literal
# in brackets; an optional port. Nothing that could end the authority or start a path.
_NAME = r"[A-Za-z0-9_](?:[A-Za-z0-9_.\-]{0,251}[A-Za-z0-9_.])?"
_HOST_PORT = re.compile(rf"(?:({_NAME})|\[([0-9A-Fa-f:.]{{2,45}})\])(?::(\d{{1,5}}))?\Z")


def split_host(value: str) -> tuple[str, int | None] | None:
    """`host[:port]` as (lower-case host, port or None), IPv6 without brackets; None when
    the value is not one a URL may carry (bad characters, a port above 65535, a bad IPv6)."""
    match = _HOST_PORT.match(value)
    if match is None:
        return None
    name, ipv6, port_text = match.groups()
    if ipv6 is not None:
        try:
            ipaddress.IPv6Address(ipv6)
        except ValueError:
            return None
        host = ipv6.lower()
    else:
        host = name.lower()
        if ".." in host:
            return None
    port = int(port_text) if port_text else None
    if port is not None and not 0 < port <= 65535:
        return None
    return host, port


class PublicOrigin(NamedTuple):
    """The origin the client used: what an absolute URL handed back to it must start with.
    (Named tuples, here and below: built on every request, at a fifth of a frozen
    dataclass's cost.)"""

    scheme: str  # "http" or "https"
    host: str  # lower case; an IPv6 address without brackets; "" when nothing said
    port: int

    @property
    def authority(self) -> str:
        """`host[:port]`, the port omitted when it is the scheme's default, IPv6 bracketed."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if DEFAULT_PORTS.get(self.scheme) == self.port else f"{host}:{self.port}"

    def serialize(self) -> str:
        """`https://api.example.com`, `http://[::1]:8080`: an origin as browsers write it."""
        return f"{self.scheme}://{self.authority}"


@functools.lru_cache(maxsize=1024)  # the same few Host values on nearly every request
def _origin(scheme: str, host: str | None, port: str | None, fallback: str | None) -> PublicOrigin:
    """The origin from a scheme, a `host[:port]` (else the fallback's) and a port that
    overrides the host's (X-Forwarded-Port, as Werkzeug's ProxyFix does)."""
    split = split_host(host) if host else None
    if split is None and fallback:
        split = split_host(fallback)
    name, host_port = split if split is not None else ("", None)
    if port is not None:
        return PublicOrigin(scheme, name, int(port))
    return PublicOrigin(scheme, name, host_port or DEFAULT_PORTS[scheme])


# --- field values ----------------------------------------------------------------------

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _first(values: Sequence[str]) -> str | None:
    """The first comma-separated value of a field's lines, or None if empty or unsafe."""
    for value in values:
        if _CONTROL.search(value):
            return None
        for part in value.split(","):
            part = part.strip(" \t")
            if part:
                return part
    return None


def _proto(values: Sequence[str]) -> str | None:
    first = _first(values)
    return first.lower() if first is not None and first.lower() in DEFAULT_PORTS else None


def _host(values: Sequence[str]) -> str | None:
    first = _first(values)
    return first if first is not None and split_host(first) is not None else None


def _port(values: Sequence[str]) -> str | None:
    first = _first(values)
    if first is None or not first.isascii() or not first.isdigit() or len(first) > 5:
        return None
    return str(int(first)) if 0 < int(first) <= 65535 else None


# A prefix segment: unreserved and sub-delims characters (RFC 3986 2.2, 2.3) but `;` (a path
# parameter to Tomcat and Spring: `/..;/x` is `/../x` there). No `%` (`%2e%2e` is `..` to
# whoever decodes it, `%2F` a `/`), no `\` (a `/` to browsers), no `:` or `@`; no `'`, `(`,
# `)` or `,`: the prefix goes into rewritten headers, where they end a quoted Refresh URL, a
# Link parameter or a list item.
_SEGMENT = re.compile(r"[A-Za-z0-9\-._~!$&*+=]+\Z")


def clean_prefix(value: str | None) -> str | None:
    """A path prefix (`/edge`), without its trailing slash (`/` is ""), or None when it is not
    a plain absolute path: segments of unreserved and sub-delims characters only (no `%`,
    `;` or `\\`), none empty, `.` or `..`; no query or fragment."""
    if value is None or not value.startswith("/") or value.startswith("//"):
        return None
    stripped = value.rstrip("/")
    if not stripped:
        return ""
    for segment in stripped[1:].split("/"):
        if segment in (".", "..") or not _SEGMENT.match(segment):
            return None
    return stripped


def join_prefix(inherited: str, stripped: str) -> str:
    """The prefix of the client's URL space: a trusted proxy's own, then the route's
    (`/edge` and `/svc`: `/edge/svc`); "" when neither."""
    route = "" if stripped == "/" else stripped.rstrip("/")
    return inherited + route


# --- RFC 7239 ------------------------------------------------------------------------------

_QUOTED = r'"(?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*"'
_PAIR = re.compile(rf"[ \t]*({TCHARS})=({TCHARS}|{_QUOTED})[ \t]*")
_UNQUOTE = re.compile(r"\\(.)")
# How many commas inside quoted strings one element may hold before it counts as malformed
# (bounds the work the right-to-left split does on a long field).
_MAX_QUOTED_COMMAS = 4

Element = dict[str, str]


def parse_element(text: str) -> Element | None:
    """One `Forwarded` element (`for=1.2.3.4;proto=https`), parameter names lower-cased and
    quoted strings unquoted; None when it is malformed (a stray token, an empty pair, a
    parameter twice, an unterminated quote, a control byte)."""
    element: Element = {}
    pos = 0
    while True:
        match = _PAIR.match(text, pos)
        if match is None:
            return None
        name, value = match.group(1).lower(), match.group(2)
        if value.startswith('"'):
            value = _UNQUOTE.sub(r"\1", value[1:-1])
        if name in element:  # RFC 7239 4: each parameter at most once per element
            return None
        element[name] = value
        pos = match.end()
        if pos == len(text):
            return element
        if text[pos] != ";":
            return None
        pos += 1


def elements_from_right(values: Sequence[str]) -> Iterator[tuple[str, Element | None]]:
    """The elements of `Forwarded` field lines from the right, each as (its text, the
    element or None when malformed); empty list elements (`a=1, ,b=2`) are skipped.

    Each element is the shortest well-formed text after a comma (a comma inside a quoted
    string belongs to its element), so the elements trusted proxies appended on the right
    are read whatever a client wrote on the left (an unterminated quote, a stray token):
    the caller stops at the first malformed one."""
    text = ",".join(values)
    commas = [i for i, c in enumerate(text) if c == ","]
    end, left = len(text), len(commas)  # commas[:left] are those before `end`
    while end > 0:
        while left and commas[left - 1] >= end:
            left -= 1
        starts = commas[max(0, left - _MAX_QUOTED_COMMAS - 1) : left][::-1]
        if len(starts) <= _MAX_QUOTED_COMMAS:
            starts.append(-1)  # the start of the field
        found: tuple[int, str, Element] | None = None
        for start in starts:
            raw = text[start + 1 : end].strip(" \t")
            element = parse_element(raw) if raw or start != starts[0] else {}
            if element is not None:
                found = (start, raw, element)
                break
        if found is None:
            yield text[:end].strip(" \t"), None
            return
        start, raw, element = found
        if raw:
            yield raw, element
        end = start


def parse_forwarded(values: Sequence[str]) -> list[Element] | None:
    """The elements of `Forwarded` field lines (RFC 7239 4), left to right; None when any
    of them is malformed."""
    elements: list[Element] = []
    for _, element in elements_from_right(values):
        if element is None:
            return None
        elements.append(element)
    return elements[::-1]


def _node_address(value: str | None) -> Address | None:
    """A `for=` node (RFC 7239 6): an IPv4 address, a bracketed IPv6, each with an optional
    port; `unknown` and obfuscated `_names` are not addresses."""
    if value is None or value.lower() == "unknown" or value.startswith("_"):
        return None
    if ":" in value and not value.startswith("[") and value.count(":") != 1:
        return None  # RFC 7239 6: an IPv6 node must be bracketed (and then quoted)
    return _address(value)


def node(address: str) -> str:
    """A `for=` value for an address: IPv6 bracketed and quoted (RFC 7239 6)."""
    parsed = _address(address)
    if isinstance(parsed, ipaddress.IPv6Address):
        return f'"[{parsed.compressed}]"'
    if parsed is not None:
        return str(parsed)
    return "unknown"


def _quote(value: str) -> str:
    """A parameter value: the token as is, else a quoted string."""
    if TOKEN.match(value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def forwarded_element(peer: str | None, proto: str, host: str | None) -> str:
    parts = [f"for={node(peer) if peer else 'unknown'}", f"proto={proto}"]
    if host and split_host(host) is not None:
        parts.append(f"host={_quote(host)}")
    return ";".join(parts)


# --- the rule --------------------------------------------------------------------------


class ForwardedHeaders(StrEnum):
    """`forwarded_headers`: the one family of forwarding headers read from a trusted peer.
    Configured, never guessed from what a request carries (a client controls part of that)."""

    X_FORWARDED = "x-forwarded"  # X-Forwarded-Proto/-Host/-Port/-Prefix/-For
    FORWARDED = "forwarded"  # RFC 7239


class ClientView(NamedTuple):
    """The client's side of one request, as corsproxy believes it."""

    trusted: bool  # the peer is a trusted proxy
    origin: PublicOrigin
    client: str  # the client's address for the access log
    inherited_prefix: str  # the prefix a trusted proxy in front stripped ("" none)
    # X-Forwarded-Proto/-Host/-Port and Forwarded to send, in this order (no -Prefix: the
    # route's part is known only after routing, see `upstream_headers`).
    headers: tuple[tuple[str, str], ...]
    # The X-Forwarded-For to send instead of the client's with the peer appended: set when
    # the chain is believed from `Forwarded` (the client's X-Forwarded-For is not believed).
    forwarded_for: str | None = None

    def prefix(self, stripped: str = "") -> str:
        """The prefix the client's URL space starts with: the inherited one, then the
        prefix the route strips (pass its path_prefix when strip_prefix is on)."""
        return join_prefix(self.inherited_prefix, stripped)

    def upstream_headers(self, stripped: str = "") -> list[tuple[str, str]]:
        """The forwarding headers for the upstream (X-Forwarded-For aside)."""
        out = [h for h in self.headers if h[0] != "Forwarded"]
        prefix = self.prefix(stripped)
        if prefix:
            out.append(("X-Forwarded-Prefix", prefix))
        out.extend(h for h in self.headers if h[0] == "Forwarded")
        return out


def _values(headers: Iterable[tuple[str, str]], wanted: frozenset[str]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for name, value in headers:
        lower = name.lower()
        if lower in wanted:
            found.setdefault(lower, []).append(value)
    return found


_X_FORWARDED = frozenset(
    {
        "x-forwarded-proto",
        "x-forwarded-host",
        "x-forwarded-port",
        "x-forwarded-prefix",
        "x-forwarded-for",
    }
)
_FORWARDED = frozenset({"forwarded"})


def _client_from_xff(values: Sequence[str], peer: str, trusted: TrustedProxies) -> str:
    """The rightmost X-Forwarded-For entry that is not a trusted proxy; an entry that is not
    an address stops the walk at the last proxy that handed it over."""
    last = peer
    entries = [e for v in values for e in v.split(",")]
    for entry in reversed(entries):
        if not entry.strip(" \t"):
            continue
        address = _address(entry)
        if address is None:
            return last
        last = str(address)
        if not trusted.trusts(address):
            return last
    return last


class _Chain(NamedTuple):
    """What a `Forwarded` chain from a trusted peer is believed to say."""

    rightmost: Element  # the peer's own element ({} none): the scheme and host it received
    client: str  # the rightmost `for=` that is not a trusted proxy (else the last one walked)
    kept: list[str]  # the elements walked, left to right, as written: sent on
    hops: list[str]  # their `for=` addresses, left to right: the X-Forwarded-For sent


def _walk_forwarded(values: Sequence[str], peer: str, trusted: TrustedProxies) -> _Chain:
    """Walk `Forwarded` from the right, as X-Forwarded-For: each element's `for=` is who
    sent the request to the proxy that wrote it; a trusted one means the element on its left
    was written by a trusted proxy too. The walk stops at the first `for=` that is not a
    trusted proxy (the client), at one that is not an address (`unknown`, `_hidden`: the
    client is the last proxy walked) and before a malformed element (what a client wrote
    on the left never hides what the proxies appended on the right)."""
    rightmost: Element | None = None
    client = peer
    kept: list[str] = []
    hops: list[str] = []
    for raw, element in elements_from_right(values):
        if element is None:
            break
        if rightmost is None:
            rightmost = element
        kept.append(raw)
        address = _node_address(element.get("for"))
        if address is None:
            break
        client = str(address)
        hops.append(client)
        if not trusted.trusts(address):
            break
    return _Chain(rightmost or {}, client, kept[::-1], hops[::-1])


def resolve(
    peer: str | None,
    tls: bool,
    host: str | None,
    headers: Iterable[tuple[str, str]] = (),
    trusted: TrustedProxies = NO_PROXIES,
    fallback_host: str | None = None,
    family: ForwardedHeaders = ForwardedHeaders.X_FORWARDED,
) -> ClientView:
    """The client's view of a request that reached corsproxy from `peer`.

    `host` is the Host header (None if absent), `headers` the request's fields (only the
    forwarding ones of `family` are read, and only from a trusted peer), `fallback_host` the
    listener's own `host:port` for the origin of a request without a usable Host.
    """
    scheme = "https" if tls else "http"
    own: list[tuple[str, str]] = [("X-Forwarded-Proto", scheme)]
    if host:
        own.append(("X-Forwarded-Host", host))
    if not trusted.trusts(peer):
        origin = _origin(scheme, host, None, fallback_host)
        return ClientView(False, origin, peer or "", "", tuple(own))
    if family is ForwardedHeaders.FORWARDED:
        return _from_forwarded(peer or "", scheme, host, headers, trusted, fallback_host)
    found = _values(headers, _X_FORWARDED)
    proto = _proto(found.get("x-forwarded-proto", ())) or scheme
    public_host = _host(found.get("x-forwarded-host", ())) or host
    port = _port(found.get("x-forwarded-port", ()))
    prefix = clean_prefix(_first(found.get("x-forwarded-prefix", ()))) or ""
    if "x-forwarded-for" in found:
        client = _client_from_xff(found["x-forwarded-for"], peer or "", trusted)
    else:
        client = peer or ""
    origin = _origin(proto, public_host, port, fallback_host)
    # The upstream is told what corsproxy concluded, one value per field; no `Forwarded`.
    sent: list[tuple[str, str]] = [("X-Forwarded-Proto", proto)]
    if public_host:
        sent.append(("X-Forwarded-Host", public_host))
    if port:
        sent.append(("X-Forwarded-Port", port))
    return ClientView(True, origin, client, prefix, tuple(sent))


def _from_forwarded(
    peer: str,
    scheme: str,
    host: str | None,
    headers: Iterable[tuple[str, str]],
    trusted: TrustedProxies,
    fallback_host: str | None,
) -> ClientView:
    """`forwarded_headers: forwarded`: the scheme and host of the peer's own element (the
    rightmost), the client from the walk; X-Forwarded-* are corsproxy's, from these."""
    found = _values(headers, _FORWARDED)
    chain = _walk_forwarded(found.get("forwarded", ()), peer, trusted)
    f_proto = chain.rightmost.get("proto", "").lower()
    f_host = chain.rightmost.get("host")
    proto = f_proto if f_proto in DEFAULT_PORTS else scheme
    public_host = f_host if f_host and split_host(f_host) else host
    origin = _origin(proto, public_host, None, fallback_host)
    sent: list[tuple[str, str]] = [("X-Forwarded-Proto", proto)]
    if public_host:
        sent.append(("X-Forwarded-Host", public_host))
    if chain.kept:  # corsproxy appends to a chain, never starts one
        own = forwarded_element(peer, scheme, host)
        sent.append(("Forwarded", ", ".join([*chain.kept, own])))
    forwarded_for = ", ".join([*chain.hops, str(_address(peer) or peer)])
    return ClientView(True, origin, chain.client, "", tuple(sent), forwarded_for)


def public_origin(
    tls: bool,
    host: str | None,
    peer: str | None = None,
    headers: Iterable[tuple[str, str]] = (),
    trusted: TrustedProxies = NO_PROXIES,
    fallback_host: str | None = None,
    family: ForwardedHeaders = ForwardedHeaders.X_FORWARDED,
) -> PublicOrigin:
    """The origin the client used (scheme, host, port): from the forwarding headers of a
    trusted peer, else from the connection and the Host header. See `resolve`."""
    return resolve(peer, tls, host, headers, trusted, fallback_host, family).origin
