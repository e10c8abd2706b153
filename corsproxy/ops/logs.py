"""Logging: one access line per request, as text or JSON lines, on stderr, written in
batches by a thread (ops/log_writer.py) so the event loop never waits on the stream.

The access line is built directly (ops/log_format.py; `log_access()`), with no `LogRecord`;
operational messages go through `logging`, formatted here (`_Formatter`) on the thread that
logs them, into the same writer, so every line keeps its place.
"""

from __future__ import annotations

import atexit
import json
import logging
import sys
import time
from typing import Any

from corsproxy.ops.log_format import CONTROL as _CONTROL
from corsproxy.ops.log_format import AccessFormatter
from corsproxy.ops.log_format import escape_control as _escape
from corsproxy.ops.log_format import text_value as _text
from corsproxy.ops.log_format import utf8 as _utf8
from corsproxy.ops.log_format import valid as _valid
from corsproxy.ops.log_writer import LIMIT, LineWriter

ACCESS = logging.getLogger("corsproxy.access")


class _Formatter(logging.Formatter):
    def __init__(self, json_lines: bool) -> None:
        super().__init__()
        self.json_lines = json_lines

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = getattr(record, "fields", {})
        message = record.getMessage()
        plain: tuple[str, bool] | None = getattr(record, "plain", None)
        if plain is not None and not self.json_lines:  # say(): written as the text says
            if not plain[1]:
                return plain[0]
            stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
            return f"{stamp} {record.levelname:<7} {plain[0]}"
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
        if getattr(record, "json_only", False):  # the text already says them (`where()`)
            fields = {}
        # Messages quote request data too (method, path, a bad request's reason): one line.
        message = _CONTROL.sub(_escape, _utf8(message))
        if record.exc_info:
            message += "\n" + self.formatException(record.exc_info)
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        extra = " ".join(
            f"{k}={_text(v)}" for k, v in fields.items() if v not in ("", None) and v != []
        )
        return f"{stamp} {record.levelname:<7} {message}" + (f" {extra}" if extra else "")


def where(fields: dict[str, Any]) -> dict[str, Any]:
    """`extra=` for a record whose message already names its place (a config diagnostic,
    `config.yaml:4: key: ...`): the place as fields in JSON lines, not repeated in text."""
    return {"fields": fields, "json_only": True}


class _Handler(logging.Handler):
    """Formats each record on the thread that logs it and queues the line (in order)."""

    def __init__(self, lines: LineWriter) -> None:
        super().__init__()
        self.lines = lines

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + "\n"
        except Exception:
            self.handleError(record)
            return
        self.lines.write(line)


class LogWriter:
    """Every line `serve` writes: access lines (`log_access()`) and `logging`'s records (through
    `handler`), in batches by a thread (ops/log_writer.py). `stop()` writes what waits."""

    def __init__(self, stream: Any, json_lines: bool, limit: int = LIMIT) -> None:
        self.formatter = _Formatter(json_lines)
        self.access = AccessFormatter(json_lines)
        self.lines = LineWriter(stream, self._dropped_line, limit)
        self.handler = _Handler(self.lines)
        self.handler.setFormatter(self.formatter)
        self.stopped = False  # then access lines go through `logging` too

    def _dropped_line(self, count: int) -> str:
        record = logging.LogRecord(
            "corsproxy", logging.WARNING, __file__, 0,
            "logging: %d log lines dropped (more than %d characters were waiting for a slow "
            "log stream)", (count, self.lines.limit), None,
        )  # fmt: skip
        return self.formatter.format(record) + "\n"

    @property
    def dropped(self) -> int:
        return self.lines.dropped

    def start(self) -> None:
        self.lines.start()

    def stop(self) -> None:
        self.stopped = True
        self.lines.stop()


_running: LogWriter | None = None
_SAY = logging.getLogger("corsproxy")


def say(
    message: str,
    level: int = logging.INFO,
    *,
    text: str | None = None,
    prefix: bool = False,
    **fields: Any,
) -> None:
    """A line for the operator beyond the log records: config warnings and errors, the demo
    banner, the start summary, a listener that cannot bind. Through the log writer (so it
    keeps its place among the other lines): in JSON mode one JSON object like every line
    (`message` and `fields`), in text mode `text` (default: the message) as written, with
    the time and level first when `prefix`. Always written, whatever `--log-level` says
    (as a command's output is). Without `configure()` (not serving): `text` on stderr."""
    shown = message if text is None else text
    if _running is None:
        sys.stderr.write(shown + "\n")
        sys.stderr.flush()
        return
    record = _SAY.makeRecord(
        _SAY.name, level, __file__, 0, "%s", (message,), None,
        extra={"fields": fields, "plain": (shown, prefix)},
    )  # fmt: skip
    _SAY.handle(record)  # handle(), not log(): the level filter does not apply


def log_access(levelno: int, fields: dict[str, Any]) -> None:
    """Log one access line (http/server.py; the level already checked): built directly when
    serving (`configure()`), else an ordinary record on `corsproxy.access` with `fields`."""
    writer = _running
    if writer is None or writer.stopped:  # not serving (in-process use, tests' caplog)
        message = "%s %s %d"
        args = (fields["method"], fields["path"], fields["status"])
        ACCESS.log(levelno, message, *args, extra={"fields": fields})
        return
    writer.lines.write(writer.access.line(levelno, fields, time.time()) + "\n")


def json_writer() -> LogWriter | None:
    """The running writer when it writes JSON lines (the access line then built straight
    from the exchange: http/access_line.py `json_line`), else None."""
    writer = _running
    if writer is None or writer.stopped or not writer.access.json_lines:
        return None
    return writer


def bind_loop(loop: Any, on_drop: Any = None) -> None:
    """Batch the lines logged on `loop` every 10 ms on it (None: stop, handing on what
    waits); `on_drop()` is called for each line dropped (the metric)."""
    if _running is not None and not _running.stopped:
        _running.lines.bind(loop)
        _running.lines.on_drop = on_drop


def configure(log_format: str | None = None, level: str = "info") -> LogWriter:
    """Text on a terminal, JSON lines otherwise (containers), unless told. Lines are
    written by a thread, so a slow stderr never blocks the event loop; call `stop()` on the
    result at exit (also done by an atexit hook) to write what is still waiting."""
    global _running
    if _running is not None:
        _running.stop()
    json_lines = log_format == "json" or (log_format is None and not sys.stderr.isatty())
    _running = LogWriter(sys.stderr, json_lines)
    root = logging.getLogger()
    root.handlers[:] = [_running.handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").disabled = True
    logging.captureWarnings(True)  # Python's warnings too: one format for every line
    _running.start()
    atexit.register(_running.stop)
    return _running
