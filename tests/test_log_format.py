"""The access line built directly (ops/log_format.py) against the formatter it replaces.

`OldFormatter` below is the access-line path of `corsproxy/ops/logs.py` at 4f845a8, kept
verbatim as the reference: a `LogRecord` formatted with `json.dumps` of a dict. For generated
field sets (values a client chooses: quotes, backslashes, control characters, lone
surrogates from non-UTF-8 bytes, non-ASCII, long values, lists, bools, None and empty), at
any time, the new formatter must write the same line, byte for byte, in both formats.
"""

from __future__ import annotations

import itertools
import json
import logging
import re
import time
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from corsproxy.http.access_line import MAX_PATH, capped, json_line
from corsproxy.http.access_line import access_fields as fields_of
from corsproxy.http.relay import Exchange
from corsproxy.ops import logs
from corsproxy.ops.log_format import AccessFormatter
from corsproxy.policy.cors import Kind, Reason, ReasonCode

# ---- the reference: corsproxy/ops/logs.py at 4f845a8, verbatim (the access-line part) ----
_BARE = re.compile(r"[!#-<>-\[\]-~]+\Z")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class OldFormatter(logging.Formatter):
    def __init__(self, json_lines: bool) -> None:
        super().__init__()
        self.json_lines = json_lines

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = getattr(record, "fields", {})
        message = record.getMessage()
        if self.json_lines:
            line: dict[str, Any] = {
                "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
                + f".{int(record.msecs):03d}Z",
                "level": record.levelname.lower(),
                "logger": record.name,
                "message": message,
                **fields,
            }
            if record.exc_info:
                line["exception"] = self.formatException(record.exc_info)
            text = json.dumps(line, separators=(",", ":"), default=str)
            if "\\ud" in text:  # maybe a lone surrogate (a client's non-UTF-8 byte): rare
                text = json.dumps(_valid(line), separators=(",", ":"), default=str)
            return text
        # Messages quote request data too (method, path, a bad request's reason): one line.
        message = _CONTROL.sub(_escape, _utf8(message))
        if record.exc_info:
            message += "\n" + self.formatException(record.exc_info)
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        extra = " ".join(
            f"{k}={_text(v)}" for k, v in fields.items() if v not in ("", None) and v != []
        )
        return f"{stamp} {record.levelname:<7} {message}" + (f" {extra}" if extra else "")


def _text(value: Any) -> str:
    if isinstance(value, list):  # a list field (every refusal reason): joined with commas
        value = ",".join(map(str, value))
    elif isinstance(value, bool):
        value = "true" if value else "false"
    text = str(value)
    return text if _BARE.match(text) else json.dumps(_utf8(text))


def _utf8(text: str) -> str:
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        raw = text.encode("utf-8", "surrogateescape" if _escaped_only(text) else "backslashreplace")
        return raw.decode("utf-8", "backslashreplace")


def _escaped_only(text: str) -> bool:
    return all(not "\ud800" <= c <= "\udfff" or "\udc80" <= c <= "\udcff" for c in text)


def _valid(value: Any) -> Any:
    if isinstance(value, str):
        return _utf8(value)
    if isinstance(value, dict):
        return {_utf8(str(k)): _valid(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_valid(v) for v in value]
    return value


def _escape(match: re.Match[str]) -> str:
    return json.dumps(match.group())[1:-1]


# ---- end of the reference ----


def old_line(json_lines: bool, levelno: int, fields: dict[str, Any], now: float) -> str:
    """What 4f845a8 wrote: `ACCESS.log(level, "%s %s %d", method, path, status, extra=...)`
    (http/server.py `_finish`), the record made at `now`."""
    record = logging.LogRecord(
        "corsproxy.access", levelno, __file__, 0, "%s %s %d",
        (fields["method"], fields["path"], fields["status"]), None,
    )  # fmt: skip
    record.created = now
    record.msecs = int((now - int(now)) * 1000) + 0.0  # as LogRecord computes it (3.11+)
    record.fields = fields
    return OldFormatter(json_lines).format(record)


# Client-chosen text: the characters that need escaping, bytes that were not UTF-8 (lone
# surrogates, as aiohttp's surrogateescape decoding makes them, and others), non-ASCII.
_SPECIAL = st.sampled_from(
    ['"', "\\", "\x00", "\x07", "\t", "\n", "\r", "\x1b", "\x7f", " ", "=", ",", "\udcff",
     "\udc80", "\ud800", "\udfff", "\ud83d", "é", "€", "😀", "\u2028", "\ufeff", "\x85"]
)  # fmt: skip
_TEXT = st.one_of(
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40),  # plain
    st.lists(st.one_of(_SPECIAL, st.characters()), max_size=20).map("".join),
    st.text(max_size=30),
    st.just(""),
    st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=2000, max_size=2600),
)
_SCALAR = st.one_of(
    _TEXT,
    # What `_finish` really passes: `reason` is a `Reason` (a str subclass), codes StrEnums.
    st.builds(Reason, st.sampled_from(list(ReasonCode)), st.one_of(st.just(""), _TEXT)),
    st.sampled_from(list(ReasonCode)),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
)
_VALUE = st.one_of(_SCALAR, st.lists(_TEXT, max_size=4), st.just([]))

# The fields `_finish` always writes, in its order, then optional ones (access_line.py).
_ALWAYS = {
    "pid": st.integers(1, 4_000_000),
    "request_id": st.text(st.sampled_from("0123456789abcdef"), min_size=32, max_size=32),
    "peer": _TEXT,
    "client": _TEXT,
    "method": _TEXT,
    "path": _TEXT,
    "status": st.integers(100, 599),
    "upstream_status": st.one_of(st.none(), st.integers(100, 599)),
    "bytes": st.integers(0, 2**40),
    "duration_ms": st.floats(0, 1e6).map(lambda v: round(v, 2)),
    "route": _TEXT,
    "cors": st.sampled_from(["allowed", "refused", "would_refuse", "none"]),
    "reason": st.one_of(
        _TEXT, st.builds(Reason, st.sampled_from(list(ReasonCode)), st.one_of(st.just(""), _TEXT))
    ),
}
_OPTIONAL = [
    "origin", "error", "upstream_url", "reasons", "request_method", "request_headers",
    "action", "would_action", "route_prefix", "origin_rule", "headers_added",
    "headers_stripped", "method_overrides_dropped", "x-other_field",
]  # fmt: skip


@st.composite
def access_fields(draw: st.DrawFn) -> dict[str, Any]:
    fields = {key: draw(strategy) for key, strategy in _ALWAYS.items()}
    for key in draw(st.lists(st.sampled_from(_OPTIONAL), unique=True, max_size=6)):
        fields[key] = draw(_VALUE)
    return fields


_NOW = st.one_of(
    st.floats(min_value=0, max_value=4e9, allow_nan=False),
    st.integers(0, 4_000_000_000).map(float),
    st.integers(0, 4_000_000_000).map(lambda s: s + 0.9995),
)


@settings(max_examples=500, deadline=None)
@given(
    fields=access_fields(),
    levelno=st.sampled_from([logging.INFO, logging.WARNING, logging.DEBUG]),
    json_lines=st.booleans(),
    now=_NOW,
)
def test_the_direct_access_line_is_the_old_line_byte_for_byte(
    fields: dict[str, Any], levelno: int, json_lines: bool, now: float
) -> None:
    formatter = AccessFormatter(json_lines)
    new = formatter.line(levelno, fields, now)
    assert new == old_line(json_lines, levelno, fields, now)
    assert formatter.line(levelno, fields, now) == new  # the cached stamp: the same again
    if json_lines:
        json.loads(new)  # valid JSON text
    new.encode("utf-8")  # valid UTF-8: no lone surrogate reaches the stream


def test_the_stamp_cache_follows_the_second() -> None:
    fields = {"method": "GET", "path": "/", "status": 200}
    for json_lines in (True, False):
        formatter = AccessFormatter(json_lines)
        for now in (1000.999, 1001.0, 1001.5, 1000.2, 86400 * 365 + 0.001):
            expected = old_line(json_lines, logging.INFO, fields, now)
            assert formatter.line(logging.INFO, fields, now) == expected


def test_operational_messages_keep_the_old_format() -> None:
    """`_Formatter` (operational messages) is still the reference's access-line path."""
    fields = {"method": "GET", "path": '/a"\udcff\t', "status": 200, "origin": "é x"}
    for json_lines in (True, False):
        record = logging.LogRecord(
            "corsproxy.access",
            logging.INFO,
            __file__,
            0,
            "%s %s %d",
            ("GET", fields["path"], 200),
            None,
        )
        record.fields = fields
        assert logs._Formatter(json_lines).format(record) == OldFormatter(json_lines).format(record)


# ---- the JSON line built straight from the exchange (http/access_line.py `json_line`) ----
# The default settings (JSON lines, info) skip the fields dict: the line is written from the
# exchange. Against the reference above, for generated exchanges with every optional field
# present or absent: the same line as the dict `_finish` builds for the old formatter.

_REASON = st.builds(Reason, st.sampled_from(list(ReasonCode)), st.one_of(st.just(""), _TEXT))
_MAYBE_TEXT = st.one_of(st.just(""), _TEXT)


@st.composite
def exchanges(draw: st.DrawFn) -> Exchange:
    exchange = Exchange(draw(_TEXT), draw(_TEXT), draw(_TEXT))
    exchange.request_id = draw(_TEXT)
    exchange.route = draw(_TEXT)
    exchange.origin = draw(_MAYBE_TEXT)
    exchange.verdict = draw(st.sampled_from(["allowed", "refused", "would_refuse", "none"]))
    exchange.reason = draw(st.one_of(_TEXT, _REASON))
    exchange.upstream_status = draw(st.one_of(st.just(0), st.integers(100, 599)))
    exchange.bytes_out = draw(st.integers(0, 2**40))
    exchange.error = draw(_MAYBE_TEXT)
    if draw(st.booleans()):
        exchange.target = SimpleNamespace(  # type: ignore[assignment]
            upstream=SimpleNamespace(origin=draw(_TEXT)), request_target=draw(_TEXT)
        )
    if draw(st.booleans()):
        exchange.decision = SimpleNamespace(  # type: ignore[assignment]
            reasons=tuple(draw(st.lists(_REASON, max_size=3))),
            kind=draw(st.sampled_from(list(Kind))),
        )
    if draw(st.booleans()):
        exchange.cors_view = SimpleNamespace(  # type: ignore[assignment]
            request_method=tuple(draw(st.lists(_TEXT, max_size=2))),
            request_headers=tuple(draw(st.lists(_TEXT, max_size=3))),
        )
    return exchange


def _both(exchange: Exchange, levelno: int, now: float, client: str, status: int) -> str | None:
    duration = 0.0123456
    path = exchange.path
    if len(path) > MAX_PATH:
        path = capped(path, MAX_PATH)
    formatter = AccessFormatter(json_lines=True)
    head = formatter.json_head(levelno, now)
    fast = json_line(head, exchange, 4242, client, path, status, round(duration * 1000, 2))
    fields = fields_of(exchange, 4242, client, path, status, duration, False)
    new = fast if fast is not None else formatter.line(levelno, fields, now)  # as _finish
    assert new == old_line(True, levelno, fields, now)
    if fast is None:  # only for a text that held a surrogate (escaped `\ud...`)
        assert "\\ud" in json.dumps(fields)
    assert new == formatter.line(levelno, fields, now)
    json.loads(new)
    new.encode("utf-8")
    return fast


@settings(max_examples=700, deadline=None)
@given(
    exchange=exchanges(),
    levelno=st.sampled_from([logging.INFO, logging.WARNING]),
    now=_NOW,
    client=_TEXT,
    status=st.integers(100, 599),
)
def test_the_json_line_from_the_exchange_is_the_old_line_byte_for_byte(
    exchange: Exchange, levelno: int, now: float, client: str, status: int
) -> None:
    _both(exchange, levelno, now, client, status)


@pytest.mark.parametrize("shape", list(itertools.product([False, True], repeat=8)))
def test_every_shape_of_the_json_line_is_the_old_line(shape: tuple[bool, ...]) -> None:
    """Each optional field present or absent, in every combination (a client's hard values:
    quotes, a control character, non-ASCII; and with a lone surrogate, the general path)."""
    origin, error, target, decision, refused, view, asked_headers, surrogate = shape
    exchange = Exchange("GET", '/a"\\\t€' + ("\udcff" if surrogate else ""), "127.0.0.1")
    exchange.request_id = "0123456789abcdef"
    exchange.route = "api"
    exchange.reason = Reason(ReasonCode.ORIGIN_NOT_ALLOWED, 'x"y') if refused else ""
    exchange.verdict = "refused" if refused else "allowed"
    exchange.origin = "http://é\x7f.example" if origin else ""
    exchange.error = "upstream_timeout: timed out\n" if error else ""
    if target:
        exchange.target = SimpleNamespace(  # type: ignore[assignment]
            upstream=SimpleNamespace(origin="http://up:8080"), request_target="/a?key=secret"
        )
    if decision:
        exchange.decision = SimpleNamespace(  # type: ignore[assignment]
            reasons=(Reason(ReasonCode.ORIGIN_NOT_ALLOWED, "é"),), kind=Kind.PREFLIGHT
        )
    if view:
        exchange.cors_view = SimpleNamespace(  # type: ignore[assignment]
            request_method=("PUT",),
            request_headers=("x-token", 'a"b') if asked_headers else (),
        )
    level = logging.WARNING if refused else logging.INFO
    fast = _both(exchange, level, 1e9 + 0.5, "10.0.0.1", 200)
    assert (fast is None) == surrogate  # the line straight from the exchange, unless one
