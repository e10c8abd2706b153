"""Logging: one access line per request, as text or JSON lines, on stderr."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sys
import time
from typing import Any

ACCESS = logging.getLogger("corsproxy.access")

# A value written bare in a text line: visible ASCII but the characters that delimit or quote
# (space, `"`, `\`, `=`). Anything else is written as a JSON string, so no value (a header a
# client chose) can end a field, start another (`\tcors=allowed`) or another line.
_BARE = re.compile(r"[!#-<>-\[\]-~]+\Z")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class _Formatter(logging.Formatter):
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
            return json.dumps(line, separators=(",", ":"), default=str)
        # Messages quote request data too (method, path, a bad request's reason): one line.
        message = _CONTROL.sub(_escape, message)
        if record.exc_info:
            message += "\n" + self.formatException(record.exc_info)
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        extra = " ".join(f"{k}={_text(v)}" for k, v in fields.items() if v not in ("", None))
        return f"{stamp} {record.levelname:<7} {message}" + (f" {extra}" if extra else "")


def _text(value: Any) -> str:
    text = str(value)
    return text if _BARE.match(text) else json.dumps(text)


def _escape(match: re.Match[str]) -> str:
    return json.dumps(match.group())[1:-1]


class BatchingHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Formats each record at once but writes the stream at most every `interval` seconds
    while an event loop runs: one write for many access lines instead of one each. Without a
    running loop (start-up, shutdown) it writes at once; `flush()` (also called by logging's
    exit hook) writes whatever is pending."""

    def __init__(self, stream: Any, interval: float = 0.05) -> None:
        super().__init__(stream)
        self.interval = interval
        self.pending: list[str] = []
        self.scheduled = False

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + self.terminator
        except Exception:
            self.handleError(record)
            return
        self.pending.append(line)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
            return
        if not self.scheduled:
            self.scheduled = True
            loop.call_later(self.interval, self._scheduled_flush)

    def _scheduled_flush(self) -> None:
        self.scheduled = False
        self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        text, self.pending = "".join(self.pending), []
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):  # the stream is gone (closed pipe): nothing to keep
            pass


def configure(log_format: str | None = None, level: str = "info") -> None:
    """Text on a terminal, JSON lines otherwise (containers), unless told."""
    json_lines = log_format == "json" or (log_format is None and not sys.stderr.isatty())
    handler = BatchingHandler(sys.stderr)
    handler.setFormatter(_Formatter(json_lines))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").disabled = True
