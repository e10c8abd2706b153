"""Request paths: one normalization for both the route decision and the forwarded path.

The route is chosen on a normalized form (unreserved percent-escapes decoded once, dot
segments removed, repeated slashes merged). The forwarded path is built from the *same*
segment list, keeping each segment's bytes as the client sent them, so the two can never
disagree about which segments the path has. Pure code.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from dataclasses import dataclass
from urllib.parse import unquote, unquote_to_bytes

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


# Overlong UTF-8, decoded once or twice: C0/C1 leads, E0 80-9F, F0 80-8F and the old five-
# and six-byte forms. RFC 3629 forbids them and no client sends them, but lenient decoders
# (old IIS, Tomcat, Java's modified UTF-8) read %C0%AE as '.' and %C0%AF as '/': refused
# rather than guessed at, which also keeps `..%c0%af` away from the upstream itself.
_OVERLONG = re.compile(
    rb"[\xc0\xc1][\x80-\xbf]|\xe0[\x80-\x9f]|\xf0[\x80-\x8f]|\xf8[\x80-\x87]|\xfc[\x80-\x83]"
)

# Their lead bytes, or an escaped '%' (whose hex digits may be escaped too).
_MAYBE_OVERLONG = re.compile(r"%(?:C[01]|[EF]0|F8|FC|25)", re.IGNORECASE)


def _check_escapes(path: str) -> None:
    i = path.find("%")
    if i < 0:
        return  # no escape, so nothing overlong either: the path is ASCII (_PATH_CHARS)
    while i >= 0:
        code = path[i + 1 : i + 3]
        if len(code) != 2 or code[0] not in _HEX or code[1] not in _HEX:
            raise PathError("path_malformed_escape", f"malformed percent-escape at offset {i}")
        if code == "00":
            raise PathError("path_nul", "encoded NUL in the path")
        i = path.find("%", i + 3)
    if not _MAYBE_OVERLONG.search(path):
        return
    once = unquote_to_bytes(path)
    if _OVERLONG.search(once) or (b"%" in once and _OVERLONG.search(unquote_to_bytes(once))):
        raise PathError("path_bad_encoding", "overlong UTF-8 in the path")


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
    escape, NUL or overlong UTF-8, contains a fragment, or climbs above the root.
    """
    if not path.startswith("/"):
        raise PathError("path_not_origin_form", "the request target is not an absolute path")
    if not _PATH_CHARS.match(path):  # '#' is not among them: checked only then
        if "#" in path:
            raise PathError("path_fragment", "a fragment ('#') in the request target")
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
# Java's String.trim() drops every character up to U+0020 from both ends of a segment
# (Spring's AntPathMatcher trims its tokens: CVE-2016-5007), .NET Trim(), Python strip()
# and JavaScript trim() Unicode whitespace and U+FEFF, older .NET also the zero-width ones.
# An upstream that decodes the path and parses it again as a URL ends it at '?' or '#',
# and C and PHP code at a NUL (`%2500` once decoded twice).
# ASP.NET (System.Web) removes cookieless-session segments such as `(S(x))`, `(A(x))`,
# `(F(x))` or `(S(x)A(y))` from the path before routing (CVE-2023-36899, CVE-2023-36560).
# Paths without these characters have no other reading: the common case stays a scan.
_MAYBE_OTHER = re.compile(r"[%;:]|\.(?:/|\Z)|~[0-9]|\([A-Za-z]\(")
_COOKIELESS = re.compile(r"\((?:[A-Za-z]\([^()/]*\))+\)\Z")
# Where Windows drops a stream suffix: at the first ':' when a '$type' follows, or a
# trailing ':'.
_STREAM = re.compile(r":(?:.*\$.*)?\Z", re.DOTALL)
# An NTFS 8.3 short name (`INTERN~1`, `IN1A2B~1.TXT`): Windows serves the long name for it.
_SHORT_NAME = re.compile(r"([^~]{1,8})~[0-9]+(?:\.[^.]*)?\Z")
_TRIM = (
    "".join(map(chr, range(0x21)))
    + "\x7f\x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    + "\u2028\u2029\u202f\u205f\u3000"  # str.isspace() beyond ASCII
    + "\u200b\u200c\u200d\u2060\ufeff"
)
_T = "[" + re.escape(_TRIM) + "]"
# A trimmable character at either end of a segment, also once params, a stream suffix or
# trailing dots are dropped or the path is cut: only then can trimming change anything.
_TRIMMABLE = re.compile(r"(?:\A|[/\\])" + _T + "|" + _T + r"[. ]*(?:[/\\;?#:\x00]|\Z)")
_CUT = re.compile(r"[?#\x00]")
# Where the Windows reading may drop something, also once trimmed or cut.
_WINDOWS_SEGMENT = re.compile(r"[. ]" + _T + r"*(?:[/\\;?#\x00]|\Z)|:|~[0-9]|\([A-Za-z]\(")
# Bytes that are not UTF-8 read as Latin-1, as Tomcat and Jetty fall back to (`%AA` is 'ª',
# which folds to 'a'), rather than as U+FFFD.
_LATIN1 = {0xDC80 + b: 0x80 + b for b in range(128)}
_ESCAPED = re.compile("[\udc80-\udcff]")  # what surrogateescape makes of them
# Windows best fit beyond NFKC (which already reads U+FF0F, U+FF3C and U+FF0E, the fullwidth
# '/', '\\' and '.', as ASCII): the yen and won signs are '\\' in the Japanese and Korean code
# pages, the division and fraction slashes '/'. Before the split they make separators and
# dot segments.
_BEST_FIT = str.maketrans("\u00a5\u20a9\u2215\u2044", "\\\\//")
_SYNTAX = re.compile(r"[/\\.;:?#]")
# Letters with a stroke or bar, which have no decomposition but best-fit to the bare letter.
_STROKES = str.maketrans("łđħŧƀƚɨ", "ldhtbli")
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


@dataclass(frozen=True, slots=True)
class Reading:
    """One way an upstream may read a path; every reading decodes all escapes once."""

    twice: bool = False  # decodes a second time: %252f is '/'
    backslash: bool = False  # '\' separates segments
    params: bool = False  # ';params' dropped from each segment (Tomcat, Jetty)
    # 1: trailing dots and spaces, NTFS stream suffixes and ASP.NET cookieless-session
    # segments dropped (IIS, Windows);
    # 2: the same, and a segment of only dots and spaces ('. .', '.. ') climbs like '..'
    windows: int = 0
    trim: bool = False  # whitespace and controls dropped from both ends of each segment
    cut: bool = False  # a decoded '?', '#' or NUL ends the path
    compat: bool = False  # best fit before the split (fullwidth solidus and full stop, yen)

    def describe(self) -> str:
        parts = ["with every escape decoded " + ("twice" if self.twice else "once")]
        if self.backslash:
            parts.append("'\\' as '/'")
        if self.params:
            parts.append("';params' dropped (Tomcat, Jetty)")
        if self.windows:
            parts.append(
                "trailing dots, spaces and '::$DATA'-style stream suffixes dropped, "
                "'(S(...))' cookieless-session segments too, 8.3 short names "
                "(IIS, ASP.NET, Windows)"
            )
        if self.windows == 2:
            parts.append("dots-and-spaces segments read as '..'")
        if self.trim:
            parts.append("whitespace and control characters trimmed from each segment (Java trim)")
        if self.cut:
            parts.append("a decoded '?', '#' or NUL ending the path")
        if self.compat:
            parts.append("compatibility forms read as ASCII before the split (Windows best fit)")
        return ", ".join(parts)

    def segments(self, joined: str) -> tuple[str, ...]:
        """The segments of `joined` (a path without its leading '/') in this reading."""
        once = _decode(joined)
        return self.read(_decode(once) if self.twice else once)

    def read(self, text: str) -> tuple[str, ...]:
        """The segments of a path already decoded once, or twice for a `twice` reading."""
        decoded, _, _ = _resolve(self._split(text), clamp=True, decode=False)
        return tuple(decoded)

    def climbs(self, text: str) -> bool:
        """Whether this reading of `text` (decoded as for `read`) climbs above its root."""
        try:
            _resolve(self._split(text), decode=False)
        except PathError:
            return True
        return False

    def _split(self, text: str) -> list[str]:
        if self.compat:
            text = _best_fit(text)
        if self.cut:
            text = _CUT.split(text, 1)[0]
        if self.backslash:
            text = text.replace("\\", "/")
        segments = text.split("/")
        if self.params:
            segments = [seg.split(";", 1)[0] for seg in segments]
        if self.trim:
            segments = [seg.strip(_TRIM) for seg in segments]
        if self.windows:
            segments = [_windows_segment(seg, self.windows == 2) for seg in segments]
            if self.trim:  # either order: 'x.%09' and 'x%09.' are both 'x'
                segments = [seg.strip(_TRIM) for seg in segments]
        return segments


def _best_fit(text: str) -> str:
    return unicodedata.normalize("NFKC", text).translate(_BEST_FIT)


def _decode(text: str) -> str:
    """Every escape decoded once: UTF-8, and bytes that are not UTF-8 as Latin-1."""
    text = unquote(text, errors="surrogateescape")
    return text.translate(_LATIN1) if _ESCAPED.search(text) else text


def _windows_segment(segment: str, dots_climb: bool) -> str:
    if segment in (".", ".."):
        return segment
    if _COOKIELESS.match(segment):
        return ""
    colon = segment.find(":")
    if colon >= 0 and _STREAM.match(segment, colon):
        segment = segment[:colon]
    stripped = segment.rstrip(". ")
    if stripped or not segment:
        return stripped
    return ".." if dots_climb and segment.count(".") >= 2 else "."


ALL_READINGS = tuple(
    Reading(twice, backslash, params, windows, trim, cut, compat)
    for compat in (False, True)
    for twice in (False, True)
    for backslash in (False, True)
    for params in (False, True)
    for windows in (0, 1, 2)
    for trim in (False, True)
    for cut in (False, True)
)


def has_other_readings(raw_segments: tuple[str, ...]) -> bool:
    """Whether any reading could differ from the primary one (the fast check)."""
    return bool(_MAYBE_OTHER.search("/".join(raw_segments)))


@functools.cache
def _options(
    twice: bool,
    backslash: bool,
    params: bool,
    windows: bool,
    trim: bool,
    cut: bool,
    compat: bool,
) -> tuple[Reading, ...]:
    """Every combination of the readings a path may be subject to (at most 192)."""
    return tuple(
        Reading(t, b, p, w, tr, c, co)
        for co in ((False, True) if compat else (False,))
        for t in ((False, True) if twice else (False,))
        for b in ((False, True) if backslash else (False,))
        for p in ((False, True) if params else (False,))
        for w in ((0, 1, 2) if windows else (0,))
        for tr in ((False, True) if trim else (False,))
        for c in ((False, True) if cut else (False,))
    )


def readings_of(raw_segments: tuple[str, ...]) -> list[tuple[Reading, tuple[str, ...]]]:
    """The readings that can differ for this path, with the segments each sees."""
    return [(reading, reading.read(text)) for reading, text in _texts(raw_segments)]


def climbing_reading(raw_segments: tuple[str, ...]) -> Reading | None:
    """A reading in which these segments climb above their root (`x/..%2f..%2fy`), if any.

    Only matters where the segments are forwarded below a base path: the upstream's `..`
    then leaves it.
    """
    if not has_other_readings(raw_segments):
        return None
    return next((r for r, text in _texts(raw_segments) if r.climbs(text)), None)


def _texts(raw_segments: tuple[str, ...]) -> list[tuple[Reading, str]]:
    """The readings that can differ for this path, with the decoded text each reads."""
    joined = "/".join(raw_segments)
    once = _decode(joined)
    # Decoding again never removes a '\\', ';', whitespace or '?': gate every option on it.
    twice = _decode(once) if "%" in once else once
    # Best fit may add syntax (a fullwidth solidus is '/'): then gate on both texts.
    compat = not twice.isascii() and _SYNTAX.findall(_best_fit(twice)) != _SYNTAX.findall(twice)
    gate = f"{twice}/{_best_fit(twice)}" if compat else twice
    options = _options(
        twice != once,
        "\\" in gate,
        ";" in gate,
        bool(_WINDOWS_SEGMENT.search(gate)),
        bool(_TRIMMABLE.search(gate)),
        bool(_CUT.search(gate)),
        compat,
    )
    return [(reading, twice if reading.twice else once) for reading in options]


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
    Windows' best-fit mappings read compatibility forms (fullwidth letters) and letters the
    code page lacks as ASCII (`ā` as `a`, `ł` as `l`). Wider than any one server on purpose:
    it only ever adds refusals.
    """
    if segment.isascii():
        return segment.translate(_ASCII_LOWER)
    folded = unicodedata.normalize("NFKC", segment).upper().casefold()
    # Marks dropped: 'İ' folds to 'i' plus a combining dot, 'ā' is 'a' and a macron.
    bare = "".join(c for c in unicodedata.normalize("NFKD", folded) if not unicodedata.combining(c))
    return bare.translate(_STROKES)
