"""Log lines as text: the escaping every line shares, and the access line built directly.

`AccessFormatter.line` writes the access line with no `LogRecord` and no `json.dumps` of a
dict: the time's seconds part is cached (one `strftime` a second), each field's key is
written once per process, and a value that is plain ASCII without `"`, `\\` or a control
character is written as it is. Any other value takes the exact escaping `ops/logs.py`'s
`_Formatter` gives it (tests/test_log_format.py checks the two give the same line, byte for
byte, for generated fields).
"""

from __future__ import annotations

import json
import logging
import re
import time
from json.encoder import encode_basestring_ascii
from typing import Any

# A value written bare in a text line: visible ASCII but the characters that delimit or quote
# (space, `"`, `\`, `=`). Anything else is written as a JSON string, so no value (a header a
# client chose) can end a field, start another (`\tcors=allowed`) or another line.
BARE = re.compile(r"[!#-<>-\[\]-~]+\Z")
CONTROL = re.compile(r"[\x00-\x1f\x7f]")

ACCESS_LOGGER = "corsproxy.access"
# Keys the JSON line writes first: a field of that name would replace them in place.
_HEAD_KEYS = frozenset({"time", "level", "logger", "message"})


def utf8(text: str) -> str:
    """`text` as valid Unicode: the bytes a client sent that were not UTF-8 (which reach
    Python as lone surrogates, `\\udcff`, invalid in JSON and in a UTF-8 stream) written as
    `\\xff`. Everything else as it was."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        raw = text.encode("utf-8", "surrogateescape" if _escaped_only(text) else "backslashreplace")
        return raw.decode("utf-8", "backslashreplace")


def _escaped_only(text: str) -> bool:
    """Whether every surrogate in `text` is one surrogateescape makes (U+DC80..U+DCFF)."""
    return all(not "\ud800" <= c <= "\udfff" or "\udc80" <= c <= "\udcff" for c in text)


def valid(value: Any) -> Any:
    """`value` with every string in it made valid Unicode (`utf8`)."""
    if isinstance(value, str):
        return utf8(value)
    if isinstance(value, dict):
        return {utf8(str(k)): valid(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [valid(v) for v in value]
    return value


def escape_control(match: re.Match[str]) -> str:
    return json.dumps(match.group())[1:-1]


def text_value(value: Any) -> str:
    """A field's value in a text line: bare when a plain token, else a JSON string."""
    if isinstance(value, list):  # a list field (every refusal reason): joined with commas
        value = ",".join(map(str, value))
    elif isinstance(value, bool):
        value = "true" if value else "false"
    text = str(value)
    return text if BARE.match(text) else json.dumps(utf8(text))


def json_string(text: str) -> str:
    """`text` as a JSON string, as `json.dumps` writes it once made valid (`utf8`)."""
    if text.isascii() and text.isprintable() and '"' not in text and "\\" not in text:
        return f'"{text}"'  # nothing to escape: the common case
    return encode_basestring_ascii(utf8(text))


def json_value(value: Any) -> str:
    """`value` as `json.dumps(..., separators=(",", ":"), default=str)` writes it, strings
    made valid first (what `_Formatter` does when a line holds a lone surrogate)."""
    kind = type(value)
    if kind is str:
        return json_string(value)
    if kind is int:
        return int.__repr__(value)
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if kind is float and value - value == 0:  # finite (NaN and infinities: json's words)
        return float.__repr__(value)
    if kind is list:
        return "[" + ",".join(map(json_value, value)) + "]"
    text = json.dumps(value, separators=(",", ":"), default=str)
    if "\\ud" in text:  # maybe a lone surrogate
        text = json.dumps(valid(value), separators=(",", ":"), default=str)
    return text


class AccessFormatter:
    """The access line of one format (text or JSON lines), built directly from its fields."""

    def __init__(self, json_lines: bool) -> None:
        self.json_lines = json_lines
        self._second = -1  # the second the cached stamp is for
        self._stamp = ""
        self._keys: dict[str, str] = {}  # a field's name as written before its value
        self._levels: dict[int, str] = {}  # a level as written

    def line(self, levelno: int, fields: dict[str, Any], now: float) -> str:
        """The line (without its newline) `_Formatter` writes for an access record logged
        at `now` with `fields`, its message `METHOD PATH STATUS`."""
        second = int(now)
        if second != self._second:
            self._second = second
            if self.json_lines:
                self._stamp = time.strftime('{"time":"%Y-%m-%dT%H:%M:%S.', time.gmtime(now))
            else:
                self._stamp = time.strftime("%H:%M:%S ", time.localtime(now))
        message = f"{fields['method']} {fields['path']} {fields['status']:d}"
        keys = self._keys
        level = self._levels.get(levelno) or self._level(levelno)
        if self.json_lines:
            parts = [
                f'{self._stamp}{int((now - second) * 1000):03d}Z","level":"{level}'
                f'","logger":"corsproxy.access","message":{json_string(message)}'
            ]
            append = parts.append
            for key, value in fields.items():
                head = keys.get(key) or self._key(key)
                kind = type(value)
                if kind is not str and isinstance(value, str):  # a `Reason`, a `StrEnum`
                    value = str.__str__(value)  # what json.dumps writes: the text itself
                    kind = str
                if kind is str:
                    if (
                        value.isascii()
                        and value.isprintable()
                        and '"' not in value
                        and "\\" not in value
                    ):
                        append(f'{head}"{value}"')
                    else:
                        append(head + encode_basestring_ascii(utf8(value)))
                elif kind is int:
                    append(head + int.__repr__(value))
                else:
                    append(head + json_value(value))
            append("}")
            return "".join(parts)
        if not (message.isascii() and message.isprintable()):
            message = CONTROL.sub(escape_control, utf8(message))
        parts = [self._stamp, level, message]
        append = parts.append
        for key, value in fields.items():
            if value in ("", None) or value == []:
                continue
            head = keys.get(key) or self._key(key)
            kind = type(value)
            if kind is int or kind is float:
                append(head + str(value))  # digits, `.`, `-`, `e`, `inf`, `nan`: always bare
            elif isinstance(value, str):
                text = str(value)
                append(head + (text if BARE.match(text) else json.dumps(utf8(text))))
            else:
                append(head + text_value(value))
        return "".join(parts)

    def json_head(self, levelno: int, now: float) -> str:
        """A JSON line's start up to its message: `{"time":...,"logger":"corsproxy.access",`
        (the same text `line` writes first; http/access_line.py: `json_line`)."""
        second = int(now)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime('{"time":"%Y-%m-%dT%H:%M:%S.', time.gmtime(now))
        level = self._levels.get(levelno) or self._level(levelno)
        return (
            f'{self._stamp}{int((now - second) * 1000):03d}Z","level":"{level}'
            '","logger":"corsproxy.access",'
        )

    def _level(self, levelno: int) -> str:
        name = logging.getLevelName(levelno)
        level = self._levels[levelno] = name.lower() if self.json_lines else f"{name:<7} "
        return level

    def _key(self, key: str) -> str:
        """A field's name as written before its value (once per name and process)."""
        if not self.json_lines:
            head = self._keys[key] = f" {key}="
        elif key in _HEAD_KEYS:
            raise ValueError(f"an access field may not be named {key!r}")
        else:
            head = self._keys[key] = "," + json_string(key) + ":"
        return head
