"""Origins: strict parsing of the `Origin` request header and the compiled allow-list.

Pure code, no I/O. A request origin is only ever compared as a parsed serialized origin
(`scheme "://" host [":" port]`); anything that does not parse is simply not allowed, so
malformed values can never be reflected into `Access-Control-Allow-Origin`.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from types import MappingProxyType

from publicsuffixlist import PSLFILE, PublicSuffixList

from corsproxy.policy.regexes import (
    BACKREFERENCE,
    EXPONENTIAL,
    MAX_REGEX_INPUT,
    analyse,
    compile_fullmatch,
    literal_runs,
    re2_available,
)

DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}

# A host name label as browsers serialize it (lower-case after our folding).
_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?\Z")
# Labels a `*.` wildcard may stand for: stricter than hosts in general (no `_`).
_WILDCARD_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?\Z")
_SCHEME = re.compile(r"[a-z][a-z0-9+.\-]*\Z")
_IPV6_BODY = re.compile(r"[0-9a-f:.]+\Z")
_PORT = re.compile(r"[1-9][0-9]{0,4}\Z")

# Longer than any real origin (253-byte host, scheme, port); bounds all matching work.
MAX_ORIGIN_LENGTH = 1024


@dataclass(frozen=True, slots=True)
class _SuffixList:
    """The Public Suffix List, ICANN and private sections: names under which anyone can get
    a subdomain (`co.uk`, `github.io`, `s3.amazonaws.com`)."""

    psl: PublicSuffixList
    # A name with public suffixes below it (`amazonaws.com`), with the shortest of them.
    above: Mapping[str, str]


@cache
def _suffix_list() -> _SuffixList:
    """Loaded once, on the first `*.` entry (about 0.1 s): the list bundled with the
    `publicsuffixlist` release, which tracks publicsuffix.org."""
    with open(PSLFILE, encoding="utf-8") as source:
        lines = source.read().splitlines()
    above: dict[str, str] = {}
    for line in lines:
        rule = line.split(" ", 1)[0].strip().lower()
        if not rule or rule.startswith(("//", "!")):
            continue  # an exception (`!city.kawasaki.jp`) is registrable, not a suffix
        rule = rule.removeprefix("*.")
        try:
            rule = rule.encode("idna").decode("ascii")  # origins carry punycode
        except UnicodeError:
            continue
        labels = rule.split(".")
        for i in range(1, len(labels)):
            parent = ".".join(labels[i:])
            known = above.get(parent)
            if known is None or (known.count("."), known) > (rule.count("."), rule):
                above[parent] = rule
    return _SuffixList(PublicSuffixList(lines), MappingProxyType(above))


def shared_suffix(host: str) -> str | None:
    """The public suffix a `*.host` wildcard would reach into, or None: `host` itself when
    it is one (`github.io`), else the shortest one below it (`s3.amazonaws.com` for
    `amazonaws.com`, where `*.` matches anyone's bucket)."""
    suffixes = _suffix_list()
    if suffixes.psl.is_public(host):
        return host
    return suffixes.above.get(host)


@dataclass(frozen=True, slots=True)
class Origin:
    """A parsed serialized origin. `port` is None when absent or the scheme's default."""

    scheme: str
    host: str
    port: int | None

    def key(self) -> tuple[str, str, int | None]:
        return (self.scheme, self.host, self.port)


def _parse_host(host: str) -> str | None:
    host = host.lower()
    if host.startswith("["):
        if not host.endswith("]") or not _IPV6_BODY.match(host[1:-1]) or "::::" in host:
            return None
        # An IPv6 literal must be an address (`[c:1:]` is not): browsers refuse the URL.
        return host if browser_ipv6(host[1:-1]) is not None else None
    labels = host.split(".")
    if not all(_LABEL.match(label) for label in labels):
        return None
    return host


def _parse_port(text: str, scheme: str) -> int | None:
    """The port, or None for the scheme's default one. Raises ValueError when malformed."""
    if not _PORT.match(text) or int(text) > 65535:
        raise ValueError(text)
    port = int(text)
    return None if DEFAULT_PORTS.get(scheme) == port else port


def parse_origin(value: str) -> Origin | None:
    """Parse a request's `Origin` value; None when it is not a serialized origin.

    Scheme and host compare case-insensitively (they are folded here); a default port
    written out equals none. `null` is not an origin in this sense: callers handle it.
    """
    if len(value) > MAX_ORIGIN_LENGTH:
        return None
    scheme, sep, rest = value.partition("://")
    if not sep:
        return None
    scheme = scheme.lower()
    if not _SCHEME.match(scheme) or not rest:
        return None
    if rest.startswith("["):
        end = rest.find("]")
        if end < 0:
            return None
        host_text, tail = rest[: end + 1], rest[end + 1 :]
    else:
        host_text, colon, port_text = rest.partition(":")
        tail = colon + port_text
    host = _parse_host(host_text)
    if host is None:
        return None
    port: int | None = None
    if tail:
        if not tail.startswith(":"):
            return None
        try:
            port = _parse_port(tail[1:], scheme)
        except ValueError:
            return None
    return Origin(scheme, host, port)


def ends_in_a_number(host: str) -> bool:
    """WHATWG URL's test: browsers read such a host as an IPv4 address, or refuse the URL."""
    last = host.rpartition(".")[2]
    return bool(last) and (last.isdigit() or _ipv4_number(last) is not None)


def _ipv4_number(part: str) -> int | None:
    """One part of an IPv4 address as browsers read it: decimal, `0x` hex or `0` octal."""
    radix = 10
    if part[:2] in ("0x", "0X"):
        part, radix = part[2:], 16
    elif len(part) > 1 and part.startswith("0"):
        part, radix = part[1:], 8
    if not part:
        return 0 if radix != 10 else None
    try:
        return int(part, radix) if part.isalnum() and part.isascii() else None
    except ValueError:
        return None


def browser_ipv4(host: str) -> str | None:
    """The dotted-decimal address browsers make of a host that ends in a number (`127.1`,
    `0x7f.0.0.1`, `017.0.0.1` are all `127.0.0.1`, as in WHATWG URL), None if they refuse it."""
    parts = host.split(".")
    numbers = [_ipv4_number(p) for p in parts]
    if len(parts) > 4 or None in numbers:
        return None
    values = [n for n in numbers if n is not None]
    if any(n > 255 for n in values[:-1]) or values[-1] >= 256 ** (5 - len(values)):
        return None
    address = values[-1] + sum(n << (8 * (3 - i)) for i, n in enumerate(values[:-1]))
    return str(ipaddress.IPv4Address(address))


def browser_ipv6(body: str) -> str | None:
    """The form browsers serialize an IPv6 address in (lower-case, no leading zeros, the
    first longest run of two or more zero pieces as `::`), None when it is not one."""
    if "%" in body:
        return None  # a zone id: `ipaddress` reads it, browsers refuse it
    try:
        pieces = [int(p, 16) for p in ipaddress.IPv6Address(body).exploded.split(":")]
    except ValueError:
        return None
    start, length, i = -1, 1, 0
    while i < 8:
        j = i
        while j < 8 and pieces[j] == 0:
            j += 1
        if j - i > length:
            start, length = i, j - i
        i = max(j, i + 1)
    if start < 0:
        return ":".join(f"{p:x}" for p in pieces)
    head = ":".join(f"{p:x}" for p in pieces[:start])
    tail = ":".join(f"{p:x}" for p in pieces[start + length :])
    return f"{head}::{tail}"


def _check_ip_host(text: str, scheme: str, host: str, port_text: str) -> None:
    """Refuse an IP address written other than as browsers send it in `Origin`: such an
    entry would never match a browser (only hand-made requests)."""
    if host.startswith("["):
        canonical = browser_ipv6(host[1:-1])
        if canonical is None:
            raise OriginEntryError(
                f"'{text}' is not a valid IPv6 address",
                "write it as browsers send it, e.g. 'http://[::1]:3000'",
            )
        canonical = f"[{canonical}]"
    elif ends_in_a_number(host):
        canonical_v4 = browser_ipv4(host)
        if canonical_v4 is None:
            raise OriginEntryError(
                f"'{text}' is not a valid IPv4 address (browsers refuse a host that ends in a "
                "number otherwise)",
                "write four decimal numbers from 0 to 255, e.g. 'http://192.168.0.10:8080'",
            )
        canonical = canonical_v4
    else:
        return
    if host != canonical:
        raise OriginEntryError(
            f"'{text}' writes the address {canonical} in a form browsers never send",
            f"write '{scheme}://{canonical}{port_text}'",
        )


class OriginEntryError(ValueError):
    """A configured origin entry that cannot be compiled. `hint` tells how to fix it."""

    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


@dataclass(frozen=True, slots=True)
class OriginPattern:
    """`https://*.example.com`, `http://localhost:*` or both kinds of wildcard at once."""

    scheme: str
    host: str  # for a subdomain wildcard, the fixed suffix without the leading dot
    any_subdomain: bool
    port: int | None
    any_port: bool

    def matches(self, origin: Origin) -> bool:
        if origin.scheme != self.scheme:
            return False
        if not self.any_port and origin.port != self.port:
            return False
        if not self.any_subdomain:
            return origin.host == self.host
        prefix, dot, suffix = origin.host.rpartition("." + self.host)
        if not dot or suffix or not prefix:
            return False
        return all(_WILDCARD_LABEL.match(label) for label in prefix.split("."))


@dataclass(frozen=True, slots=True)
class OriginEntry:
    """One compiled `allow_origins` entry, with its position for explanations."""

    index: int
    text: str
    kind: str  # "any" | "null" | "exact" | "pattern" | "regex"
    exact: Origin | None = None
    pattern: OriginPattern | None = None
    regex: re.Pattern[str] | None = None
    # The regex's full match on its engine (RE2 when it reads the pattern, else `re`).
    fullmatch: Callable[[str], bool] | None = field(default=None, compare=False, repr=False)
    engine: str = ""


def _entry_hint(text: str) -> str:
    scheme, sep, rest = text.partition("://")
    if not sep:
        return f"add the scheme, e.g. 'https://{text.strip('/')}'"
    authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
    if "@" in authority:
        authority = authority.rsplit("@", 1)[1]
    return f"an origin is scheme://host[:port] only; write '{scheme.lower()}://{authority}'"


def compile_origin_entry(index: int, text: str) -> tuple[OriginEntry, list[str]]:
    """Compile one `allow_origins` entry. Returns the entry and warnings; raises on errors."""
    warnings: list[str] = []
    if text == "*":
        return OriginEntry(index, text, "any"), warnings
    if text == "null":
        return OriginEntry(index, text, "null"), warnings
    if text.startswith("regex:"):
        source = text[len("regex:") :]
        if not source:
            raise OriginEntryError("empty regex", "write 'regex:https://app[0-9]+\\.example\\.com'")
        try:
            compiled = re.compile(source)
        except re.error as exc:
            raise OriginEntryError(
                f"regex does not compile: {exc}", "check the pattern's brackets and escapes"
            ) from None
        if _has_literal_looking_dot(source):
            warnings.append(
                "an unescaped '.' in an origin regex matches any character "
                "(write '\\.' for a literal dot)"
            )
        fullmatch, engine = compile_fullmatch(source)
        problem = analyse(source)
        if problem is not None:
            _superlinear(*problem, engine, warnings)
        entry = OriginEntry(
            index, text, "regex", regex=compiled, fullmatch=fullmatch, engine=engine
        )
        return entry, warnings
    if text != text.strip() or not text:
        raise OriginEntryError("origin has surrounding whitespace or is empty", "remove spaces")
    if any(ord(ch) > 127 for ch in text):
        raise OriginEntryError(
            "origin contains non-ASCII characters",
            "browsers send internationalized names in punycode (xn--...); write that form",
        )
    scheme, sep, rest = text.partition("://")
    if not sep or not _SCHEME.match(scheme.lower()):
        raise OriginEntryError(
            f"'{text}' is not a serialized origin (no scheme)", _entry_hint(text)
        )
    if any(ch in rest for ch in "/?#@\\"):
        raise OriginEntryError(
            f"'{text}' is not a serialized origin (path, query, fragment or credentials)",
            _entry_hint(text),
        )
    if "*" not in rest:
        origin = parse_origin(text)
        bracket = rest.find("]")
        if origin is None and rest.startswith("[") and bracket > 0:
            _check_ip_host(text, scheme, rest[: bracket + 1], "")  # says why, with a hint
        if origin is None:
            raise OriginEntryError(
                f"'{text}' is not a serialized origin",
                "expected scheme://host[:port], e.g. 'https://app.example.com:8443'",
            )
        port = "" if origin.port is None else f":{origin.port}"
        _check_ip_host(text, origin.scheme, origin.host, port)
        return OriginEntry(index, text, "exact", exact=origin), warnings
    return OriginEntry(index, text, "pattern", pattern=_compile_pattern(text)), warnings


def _superlinear(severity: int, problem: str, engine: str, warnings: list[str]) -> None:
    """Warn about a super-linear regex RE2 runs; on Python's backtracking engine only a
    pattern the analysis deems linear may run (a lone backreference is a warning), since one
    request could stall the whole process: even n^7 on 294 characters is hours."""
    simpler = "write it without nesting, e.g. 'regex:https://[a-z0-9-]+\\.example\\.com'"
    if engine == "re2":
        if severity == EXPONENTIAL:
            warnings.append(
                f"the regex has {problem}, which takes a backtracking engine exponential time "
                f"(corsproxy matches it with RE2, in linear time; {simpler})"
            )
        return  # polynomial patterns are only reported for `re`: RE2 runs them in linear time
    if severity == BACKREFERENCE:
        warnings.append(
            "the regex has a backreference: it runs on Python's backtracking engine, in more "
            f"than linear time (up to {MAX_REGEX_INPUT} characters of input); write it without"
        )
        return
    why = "RE2 cannot read this pattern" if re2_available() else "RE2 is not installed"
    if severity == EXPONENTIAL:
        raise OriginEntryError(
            f"the regex has {problem}, and {why}: one request could take minutes to match",
            f"{simpler}; or install google-re2" if not re2_available() else simpler,
        )
    hint = (
        "make neighbouring parts match different characters, e.g. "
        "'regex:https://[a-z0-9]+(-[a-z0-9]+)*\\.example\\.com'"
    )
    if re2_available():
        hint += ", or drop what RE2 cannot read (lookaround, backreferences)"
    else:
        hint += "; or install google-re2"
    raise OriginEntryError(
        f"the regex has {problem}, and {why}: each way to split a run of such characters "
        "is tried, so one request could take seconds to match",
        hint,
    )


def _compile_pattern(text: str) -> OriginPattern:
    scheme, _, rest = text.partition("://")
    scheme = scheme.lower()
    host_text, colon, port_text = rest.partition(":")
    any_port = colon and port_text == "*"
    port: int | None = None
    if colon and not any_port:
        try:
            port = _parse_port(port_text, scheme)
        except ValueError:
            raise OriginEntryError(
                f"bad port in '{text}'", "a port is a number from 1 to 65535, or '*' for any port"
            ) from None
    any_subdomain = host_text.startswith("*.")
    fixed = host_text[2:] if any_subdomain else host_text
    if "*" in fixed:
        raise OriginEntryError(
            f"wildcard in '{text}' is not a whole leading label",
            "write 'https://*.example.com' (one or more subdomains) or 'http://localhost:*'",
        )
    host = _parse_host(fixed)
    if host is None or host.startswith("["):
        raise OriginEntryError(f"bad host in '{text}'", "expected a name like '*.example.com'")
    if any_subdomain and ends_in_a_number(host):
        raise OriginEntryError(
            f"'{text}' puts a wildcard into an IP address, which matches no origin",
            "list the address itself, e.g. 'http://127.0.0.1:*'",
        )
    if not any_subdomain:
        _check_ip_host(text, scheme, host, ":*" if any_port else port_text and f":{port_text}")
    if any_subdomain:
        labels = host.split(".")
        if len(labels) < 2:
            raise OriginEntryError(
                f"'{text}' matches every site under the top-level domain '.{host}'",
                "name your own domain, e.g. 'https://*.example.com'",
            )
        shared = shared_suffix(host)
        if shared is not None:
            raise OriginEntryError(
                f"'{text}' matches sites of anyone who can register under '.{shared}'",
                "list your own sites under it one by one",
            )
    return OriginPattern(scheme, host, any_subdomain, port, bool(any_port))


def _has_literal_looking_dot(source: str) -> bool:
    """An unescaped `.` outside a class, followed by a name character: `example.com`."""
    escaped = in_class = False
    for i, ch in enumerate(source):
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif in_class:
            in_class = ch != "]"
        elif ch == "[":
            in_class = True
        elif ch == "." and i + 1 < len(source) and source[i + 1].isalnum():
            return True
    return False


@dataclass(frozen=True, slots=True)
class OriginMatch:
    allowed: bool
    entry: OriginEntry | None  # the entry that allowed it
    parsed: Origin | None


# Patterns that cannot join one alternation without changing meaning: backreferences (their
# numbers shift) and inline global flags (only valid at the start of a pattern).
_UNCOMBINABLE = re.compile(r"\\[1-9]|\(\?P=|\(\?[aiLmsux]+\)")


def _combine(regexes: tuple[OriginEntry, ...]) -> Callable[[str], bool] | None:
    sources = [e.regex.pattern for e in regexes if e.regex is not None]
    if not sources or any(_UNCOMBINABLE.search(s) for s in sources):
        return None
    try:
        return compile_fullmatch("|".join(f"(?:{s})" for s in sources))[0]
    except re.error:
        return None


def probe(entry: OriginEntry, values: tuple[str, ...]) -> str | None:
    """The first of `values` a regex entry matches: origins no policy should allow, so a
    match means the regex allows (nearly) anyone."""
    if entry.fullmatch is None:
        return None
    return next((v for v in values if entry.fullmatch(v)), None)


_DOMAIN = re.compile(r"[a-z0-9-]+(?:\.[a-z0-9-]+)+")


def near_misses(entry: OriginEntry) -> tuple[str, ...]:
    """Origins a CORS scanner would try against a regex, from the names written in it
    (`example.com` in `https://.*example\\.com`): the name with a prefix
    (`evilexample.com`, `evil-example.com`, a subdomain of the latter), with a suffix
    (`example.com.attacker.com`, `example.computer`). Someone else can register each."""
    if entry.regex is None:
        return ()
    names: dict[str, None] = {}
    for run in literal_runs(entry.regex.pattern):
        for found in _DOMAIN.findall(run.lower()):
            labels = found.strip(".-").split(".")
            for i in range(len(labels) - 1):  # `example.com` of `preview.example.com` too
                names.setdefault(".".join(labels[i:]), None)
    probes: list[str] = []
    for name in names:
        probes += [
            f"https://evil{name}",
            f"https://evil-{name}",
            f"https://x.evil-{name}",
            f"https://{name}.attacker.com",
            f"https://{name}-attacker.com",
            f"https://{name}puter",
        ]
    return tuple(probes)


def downgrades(entry: OriginEntry) -> tuple[str, ...]:
    """The plain-http twins of the https names written in a regex (`http://example.com`)."""
    if entry.regex is None:
        return ()
    names = {
        found.strip(".-")
        for run in literal_runs(entry.regex.pattern)
        for found in _DOMAIN.findall(run.lower())
    }
    return tuple(f"http://{name}" for name in sorted(names))


@dataclass(frozen=True, slots=True)
class OriginMatcher:
    """The compiled allow-list, looked up rather than scanned.

    Exact origins are one dict lookup; `host:*` patterns a lookup by (scheme, host);
    `*.suffix` patterns a lookup per parent domain of the origin's host (a few labels);
    regexes one combined full match (a scan only finds which entry matched).
    """

    entries: tuple[OriginEntry, ...]
    any: OriginEntry | None = field(init=False)
    null: OriginEntry | None = field(init=False)
    regexes: tuple[OriginEntry, ...] = field(init=False)
    _exact: Mapping[tuple[str, str, int | None], OriginEntry] = field(init=False, repr=False)
    _hosts: Mapping[tuple[str, str], tuple[OriginEntry, ...]] = field(init=False, repr=False)
    _suffixes: Mapping[tuple[str, str], tuple[OriginEntry, ...]] = field(init=False, repr=False)
    # RE2 entries in one alternation: a quick "none of them"; the others are tried one by one.
    _combined: Callable[[str], bool] | None = field(init=False, repr=False)
    _separate: tuple[OriginEntry, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        entries = self.entries
        exact: dict[tuple[str, str, int | None], OriginEntry] = {}
        hosts: dict[tuple[str, str], list[OriginEntry]] = {}
        suffixes: dict[tuple[str, str], list[OriginEntry]] = {}
        for entry in entries:
            if entry.exact is not None:
                exact.setdefault(entry.exact.key(), entry)
            elif entry.pattern is not None:
                key = (entry.pattern.scheme, entry.pattern.host)
                table = suffixes if entry.pattern.any_subdomain else hosts
                table.setdefault(key, []).append(entry)
        regexes = tuple(e for e in entries if e.regex is not None)
        linear = (  # no regexes: RE2 is not asked for (nor imported, policy/regexes.py)
            regexes
            if not regexes or not re2_available()
            else tuple(e for e in regexes if e.engine == "re2")
        )
        derived = {
            "any": next((e for e in entries if e.kind == "any"), None),
            "null": next((e for e in entries if e.kind == "null"), None),
            "regexes": regexes,
            "_exact": MappingProxyType(exact),
            "_hosts": MappingProxyType({k: tuple(v) for k, v in hosts.items()}),
            "_suffixes": MappingProxyType({k: tuple(v) for k, v in suffixes.items()}),
            "_combined": _combine(linear),
            "_separate": tuple(e for e in regexes if e not in linear),
        }
        for name, value in derived.items():
            object.__setattr__(self, name, value)

    @property
    def allows_any(self) -> bool:
        return self.any is not None

    def match(self, value: str) -> OriginMatch:
        if self.any is not None:
            # `*` is answered literally (never reflected) and is never combined with
            # credentials, so it is safe for any value, as browsers apply it to any origin.
            return OriginMatch(True, self.any, parse_origin(value))
        if value == "null":
            # Opaque origins (sandboxed frames, file:) are only trusted when listed as such.
            return OriginMatch(self.null is not None, self.null, None)
        origin = parse_origin(value)
        if origin is None:
            return OriginMatch(False, None, None)
        entry = self._exact.get(origin.key()) or self._pattern_entry(origin)
        if entry is None and self.regexes:
            entry = self._regex_entry(value)
        return OriginMatch(entry is not None, entry, origin)

    def _pattern_entry(self, origin: Origin) -> OriginEntry | None:
        found: list[OriginEntry] = []
        if self._hosts:
            found += self._hosts.get((origin.scheme, origin.host), ())
        if self._suffixes:
            host = origin.host
            dot = host.find(".")
            while dot >= 0:  # every parent domain: a.b.example.com -> b.example.com, ...
                found += self._suffixes.get((origin.scheme, host[dot + 1 :]), ())
                dot = host.find(".", dot + 1)
        matches = [e for e in found if e.pattern is not None and e.pattern.matches(origin)]
        return min(matches, key=lambda e: e.index) if matches else None

    def _regex_entry(self, value: str) -> OriginEntry | None:
        if len(value) > MAX_REGEX_INPUT or not value.isascii():
            return None  # never an origin browsers send, and it bounds the matching work
        candidates = self.regexes
        if self._combined is not None and not self._combined(value):
            candidates = self._separate
        for entry in candidates:  # which one, for explanations (or no combined pattern)
            if entry.fullmatch is not None and entry.fullmatch(value):
                return entry
        return None
