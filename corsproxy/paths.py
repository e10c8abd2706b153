"""Request paths: one normalization for both the route decision and the forwarded path.

The route is chosen on a normalized form (unreserved percent-escapes decoded once, dot
segments removed, repeated slashes merged). The forwarded path is built from the *same*
segment list, keeping each segment's bytes as the client sent them, so the two can never
disagree about which segments the path has. Pure code.
"""

from __future__ import annotations

import re
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


def fully_decoded(segments: tuple[str, ...]) -> tuple[str, ...]:
    """Segments as a server that decodes every escape sees them (compare with readings)."""
    return _reading(unquote("/".join(segments), errors="replace").replace("\\", "/"))


def alternative_readings(path: NormalizedPath) -> list[tuple[str, ...]]:
    """Segment lists (fully decoded) a lenient upstream might see in the same path.

    Some servers decode every escape (`%2F` becomes a separator, `%2B` a `+`, `%5C` a `\\`
    that Windows servers split on), and some (Tomcat, Jetty) drop `;params` before resolving
    dot segments, so `/a/..;/b` becomes `/b` there. The route table refuses a path whose
    readings land on different routes.
    """
    joined = "/".join(path.raw_segments)
    if "%" not in joined and ";" not in joined:
        return []
    decoded = unquote(joined, errors="replace").replace("\\", "/")
    readings = [_reading(decoded)]
    if ";" in decoded:
        readings.append(_reading("/".join(seg.split(";", 1)[0] for seg in decoded.split("/"))))
    return readings


def _reading(joined: str) -> tuple[str, ...]:
    decoded, _, _ = _resolve(joined.split("/"), clamp=True, decode=False)
    return tuple(decoded)
