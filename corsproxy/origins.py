"""Origins: strict parsing of the `Origin` request header and the compiled allow-list.

Pure code, no I/O. A request origin is only ever compared as a parsed serialized origin
(`scheme "://" host [":" port]`); anything that does not parse is simply not allowed, so
malformed values can never be reflected into `Access-Control-Allow-Origin`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from corsproxy.regexes import (
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

# Suffixes under which anyone can get a subdomain: `*.github.io` trusts every GitHub user.
SHARED_SUFFIXES = frozenset(
    {
        "github.io",
        "gitlab.io",
        "herokuapp.com",
        "vercel.app",
        "netlify.app",
        "pages.dev",
        "workers.dev",
        "web.app",
        "firebaseapp.com",
        "appspot.com",
        "azurewebsites.net",
        "cloudfront.net",
        "amazonaws.com",
        "onrender.com",
        "fly.dev",
        "glitch.me",
        "repl.co",
        "ngrok.io",
        "ngrok-free.app",
        "blogspot.com",
    }
)
_SECOND_LEVEL = frozenset({"co", "com", "net", "org", "gov", "edu", "ac", "or", "ne", "go"})


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
        return host
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
        if origin is None:
            raise OriginEntryError(
                f"'{text}' is not a serialized origin",
                "expected scheme://host[:port], e.g. 'https://app.example.com:8443'",
            )
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
    if any_subdomain:
        labels = host.split(".")
        if len(labels) < 2:
            raise OriginEntryError(
                f"'{text}' matches every site under the top-level domain '.{host}'",
                "name your own domain, e.g. 'https://*.example.com'",
            )
        if host in SHARED_SUFFIXES or (len(labels) == 2 and labels[0] in _SECOND_LEVEL):
            raise OriginEntryError(
                f"'{text}' matches sites of anyone who can register under '.{host}'",
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
        linear = regexes if not re2_available() else tuple(e for e in regexes if e.engine == "re2")
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
