"""Request paths: one normalization for both the route decision and the forwarded path.

The route is chosen on a normalized form (unreserved percent-escapes decoded once, dot
segments removed, repeated slashes merged). The forwarded path is built from the *same*
segment list, keeping each segment's bytes as the client sent them, so the two can never
disagree about which segments the path has. Pure code.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from urllib.parse import unquote

_HEX = "0123456789ABCDEFabcdef"
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
# Characters an origin-form path may hold besides percent-escapes (RFC 3986 pchar + "/").
_PATH_CHARS = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=:@/%]*\Z")


class PathError(ValueError):
    """A request path that is refused with 400. `reason` is a stable code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _decode_unreserved(segment: str) -> str:
    """Decode %XX escapes of unreserved characters once; upper-case the hex of the rest."""
    if "%" not in segment:
        return segment
    out: list[str] = []
    i, n = 0, len(segment)
    while i < n:
        ch = segment[i]
        if ch == "%":
            code = segment[i + 1 : i + 3]
            char = chr(int(code, 16))
            out.append(char if char in _UNRESERVED else "%" + code.upper())
            i += 3
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def _check_escapes(path: str) -> None:
    i = path.find("%")
    while i >= 0:
        code = path[i + 1 : i + 3]
        if len(code) != 2 or code[0] not in _HEX or code[1] not in _HEX:
            raise PathError("path_malformed_escape", f"malformed percent-escape at offset {i}")
        if code == "00":
            raise PathError("path_nul", "encoded NUL in the path")
        i = path.find("%", i + 3)


@dataclass(frozen=True, slots=True)
class NormalizedPath:
    """`segments` decide the route; `raw_segments` (same length) are forwarded."""

    segments: tuple[str, ...]
    raw_segments: tuple[str, ...]
    trailing_slash: bool

    @property
    def route_path(self) -> str:
        return _join(self.segments, self.trailing_slash)

    def forward_path(self, strip_segments: int = 0) -> str:
        """The path to send upstream, without the first `strip_segments` segments."""
        return _join(self.raw_segments[strip_segments:], self.trailing_slash)


def _join(segments: tuple[str, ...], trailing_slash: bool) -> str:
    if not segments:
        return "/"
    return "/" + "/".join(segments) + ("/" if trailing_slash else "")


def _resolve(
    raw_segments: list[str], clamp: bool = False, decode: bool = True
) -> tuple[list[str], list[str], bool]:
    """Merge empty segments and remove dot segments (RFC 3986 5.2.4) on decoded forms.

    A `..` at the root is an error, or with `clamp` dropped as RFC 3986 does.
    """
    decoded: list[str] = []
    raw: list[str] = []
    trailing = False
    for seg in raw_segments:
        dec = _decode_unreserved(seg) if decode else seg
        trailing = False
        if dec == "" or dec == ".":
            trailing = True
            continue
        if dec == "..":
            if not decoded:
                if clamp:
                    trailing = True
                    continue
                raise PathError("path_escapes_root", "the path climbs above the root with '..'")
            decoded.pop()
            raw.pop()
            trailing = True
            continue
        decoded.append(dec)
        raw.append(seg)
    return decoded, raw, trailing


def normalize_path(path: str) -> NormalizedPath:
    """Normalize the path part of an origin-form request target (no query).

    Raises PathError for anything that is not an origin-form path, holds a malformed
    escape or NUL, contains a fragment, or climbs above the root.
    """
    if not path.startswith("/"):
        raise PathError("path_not_origin_form", "the request target is not an absolute path")
    if "#" in path:
        raise PathError("path_fragment", "a fragment ('#') in the request target")
    if not _PATH_CHARS.match(path):
        if "\x00" in path:
            raise PathError("path_nul", "NUL in the path")
        raise PathError("path_bad_character", "the path holds a character that must be escaped")
    _check_escapes(path)
    decoded, raw, trailing = _resolve(path[1:].split("/"))
    if not decoded:
        trailing = False
    return NormalizedPath(tuple(decoded), tuple(raw), trailing)


def split_target(target: str) -> tuple[str, str | None]:
    """The path and the raw query (None without a `?`, "" for an empty one) of a target.

    A `#` anywhere is refused: a fragment is never sent in a request target (RFC 9112
    3.2), and some servers would cut the path or query at it, others would not.
    """
    if "#" in target:
        raise PathError("path_fragment", "a fragment ('#') in the request target")
    path, sep, query = target.partition("?")
    return path, query if sep else None


# Other readings of one path. Some upstreams decode every escape, some twice (`%252f`
# is `/` there); Windows servers split on `\`; Tomcat and Jetty drop `;params`; IIS and
# other Windows servers drop trailing dots and spaces of a segment (`/internal./x` is
# `/internal/x`) and NTFS stream suffixes (`::$DATA`, `:$I30:$INDEX_ALLOCATION`; nginx
# on Win32 refuses every ':$' for that reason); Express and ASP.NET Core match routes
# case-insensitively, .NET also for non-ASCII letters. Windows also opens a file by its 8.3
# short name (`INTERN~1` for `internal-api`), which nginx on Win32 refuses for that reason.
# Paths without these characters have no other reading: the common case stays a scan.
_MAYBE_OTHER = re.compile(r"[%;:]|\.(?:/|\Z)|~[0-9]")
# Where Windows drops a stream suffix: at the first ':' when a '$type' follows, or a
# trailing ':'.
_STREAM = re.compile(r":(?:.*\$.*)?\Z", re.DOTALL)
_WINDOWS_SEGMENT = re.compile(r"[. ](?:[/\\;]|\Z)|:|~[0-9]")
# An NTFS 8.3 short name (`INTERN~1`, `IN1A2B~1.TXT`): Windows serves the long name for it.
_SHORT_NAME = re.compile(r"([^~]{1,8})~[0-9]+(?:\.[^.]*)?\Z")
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


@dataclass(frozen=True, slots=True)
class Reading:
    """One way an upstream may read a path; every reading decodes all escapes once."""

    twice: bool = False  # decodes a second time: %252f is '/'
    backslash: bool = False  # '\' separates segments
    params: bool = False  # ';params' dropped from each segment (Tomcat, Jetty)
    # 1: trailing dots and spaces and NTFS stream suffixes dropped (IIS, Windows);
    # 2: the same, and a segment of only dots and spaces ('. .', '.. ') climbs like '..'
    windows: int = 0

    def describe(self) -> str:
        parts = ["with every escape decoded " + ("twice" if self.twice else "once")]
        if self.backslash:
            parts.append("'\\' as '/'")
        if self.params:
            parts.append("';params' dropped (Tomcat, Jetty)")
        if self.windows:
            parts.append(
                "trailing dots, spaces and '::$DATA'-style stream suffixes dropped, 8.3 short "
                "names (IIS, Windows)"
            )
        if self.windows == 2:
            parts.append("dots-and-spaces segments read as '..'")
        return ", ".join(parts)

    def segments(self, joined: str) -> tuple[str, ...]:
        """The segments of `joined` (a path without its leading '/') in this reading."""
        text = unquote(joined, errors="replace")
        if self.twice:
            text = unquote(text, errors="replace")
        if self.backslash:
            text = text.replace("\\", "/")
        segments = text.split("/")
        if self.params:
            segments = [seg.split(";", 1)[0] for seg in segments]
        if self.windows:
            segments = [_windows_segment(seg, self.windows == 2) for seg in segments]
        decoded, _, _ = _resolve(segments, clamp=True, decode=False)
        return tuple(decoded)


def _windows_segment(segment: str, dots_climb: bool) -> str:
    if segment in (".", ".."):
        return segment
    colon = segment.find(":")
    if colon >= 0 and _STREAM.match(segment, colon):
        segment = segment[:colon]
    stripped = segment.rstrip(". ")
    if stripped or not segment:
        return stripped
    return ".." if dots_climb and segment.count(".") >= 2 else "."


ALL_READINGS = tuple(
    Reading(twice, backslash, params, windows)
    for twice in (False, True)
    for backslash in (False, True)
    for params in (False, True)
    for windows in (0, 1, 2)
)


def has_other_readings(raw_segments: tuple[str, ...]) -> bool:
    """Whether any reading could differ from the primary one (the fast check)."""
    return bool(_MAYBE_OTHER.search("/".join(raw_segments)))


def readings_of(raw_segments: tuple[str, ...]) -> list[tuple[Reading, tuple[str, ...]]]:
    """The readings that can differ for this path, with the segments each sees."""
    joined = "/".join(raw_segments)
    once = unquote(joined, errors="replace")
    twice = unquote(once, errors="replace") if "%" in once else once
    options = [
        Reading(t, b, p, w)
        for t in ((False, True) if twice != once else (False,))
        for b in ((False, True) if "\\" in twice else (False,))
        for p in ((False, True) if ";" in twice else (False,))
        for w in ((0, 1, 2) if _WINDOWS_SEGMENT.search(twice) else (0,))
    ]
    return [(reading, reading.segments(joined)) for reading in options]


def may_be_short_name(segment: str, name: str) -> bool:
    """Whether `segment` could be the 8.3 short name Windows made for the long `name`.

    Wider than NTFS on purpose (only the first two characters must agree, as in the hashed
    forms like `IN1A2B~1`): it only ever adds refusals.
    """
    found = _SHORT_NAME.match(segment)
    if found is None or segment.lower() == name.lower():
        return False
    basis = name.lower().replace(" ", "").replace(".", "")
    return basis.startswith(found.group(1).lower()[:2])


def fold_ascii(segment: str) -> str:
    """ASCII case folding: what Express and ASP.NET Core do for ASCII letters."""
    return segment.translate(_ASCII_LOWER)


def fold_unicode(segment: str) -> str:
    """A wide case folding: .NET folds non-ASCII letters too (dotless i is `I` there), and
    Windows' best-fit mappings read compatibility forms (fullwidth letters) as ASCII.
    Wider than any one server on purpose: it only ever adds refusals.
    """
    folded = unicodedata.normalize("NFKC", segment).upper().casefold()
    return folded.replace("\u0307", "")  # 'İ' folds to 'i' plus a combining dot
