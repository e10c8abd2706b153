"""Logging: one access line per request, as text or JSON lines, on stderr, written by a
thread (the stdlib QueueHandler/QueueListener) so the event loop never waits on the stream."""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import logging.handlers
import queue
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


def _text(value: Any) -> str:
    if isinstance(value, list):  # a list field (every refusal reason): joined with commas
        value = ",".join(map(str, value))
    elif isinstance(value, bool):
        value = "true" if value else "false"
    text = str(value)
    return text if _BARE.match(text) else json.dumps(_utf8(text))


def _utf8(text: str) -> str:
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


def _valid(value: Any) -> Any:
    """`value` with every string in it made valid Unicode (`_utf8`)."""
    if isinstance(value, str):
        return _utf8(value)
    if isinstance(value, dict):
        return {_utf8(str(k)): _valid(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_valid(v) for v in value]
    return value


def _escape(match: re.Match[str]) -> str:
    return json.dumps(match.group())[1:-1]


QUEUE_SIZE = 10_000  # records waiting for the writer thread; a burst beyond it is dropped
BATCH = 256  # lines per write at most, so a steady flood still reaches the stream
STOP_TIMEOUT = 5.0  # seconds stop() waits for the writer: a stuck stream cannot hold up exit


class _Enqueue(logging.handlers.QueueHandler):
    """On the logging thread (the event loop): hand the record to the writer thread, never
    blocking. A full queue drops the record and counts it; once the writer has stopped
    (exit), records are written at once instead."""

    def __init__(self, records: queue.Queue[logging.LogRecord]) -> None:
        super().__init__(records)
        self.records = records
        self.dropped = 0  # counted here (under the handler's lock); the writer reports it
        self.direct: logging.Handler | None = None

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        # Merge the message now (its arguments may change later); formatting, the costly
        # part, is the writer thread's.
        record.msg, record.args = record.getMessage(), None
        return record

    def emit(self, record: logging.LogRecord) -> None:
        if self.direct is not None:
            self.direct.handle(record)
            return
        try:
            self.records.put_nowait(self.prepare(record))
        except queue.Full:
            self.dropped += 1


class _Writer(logging.StreamHandler):  # type: ignore[type-arg]
    """In the writer thread: formats each record and writes once the queue is empty (or
    BATCH lines are pending), one write for a burst; says how many records were dropped."""

    def __init__(self, stream: Any, source: _Enqueue) -> None:
        super().__init__(stream)
        self.source = source
        self.reported = 0  # drops already reported
        self.pending: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.pending.append(self.format(record) + self.terminator)
        except Exception:
            self.handleError(record)
            return
        if len(self.pending) >= BATCH or self.source.records.empty():
            self.flush()

    def flush(self) -> None:
        dropped = self.source.dropped - self.reported
        if dropped:
            self.reported += dropped
            warning = logging.LogRecord(
                "corsproxy", logging.WARNING, __file__, 0,
                "logging: %d log records dropped (more than %d were waiting for a slow log "
                "stream)", (dropped, self.source.records.maxsize), None,
            )  # fmt: skip
            self.pending.append(self.format(warning) + self.terminator)
        if not self.pending:
            return
        text, self.pending = "".join(self.pending), []
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):  # the stream is gone (closed pipe): nothing to keep
            pass


class LogWriter(logging.handlers.QueueListener):
    """The writer thread (stdlib QueueListener). `stop()` writes everything queued, then
    switches logging to direct writes, so lines logged at exit are not lost either."""

    def __init__(self, stream: Any, json_lines: bool, size: int = QUEUE_SIZE) -> None:
        self.enqueue = _Enqueue(queue.Queue(size))
        self.writer = _Writer(stream, self.enqueue)
        self.writer.setFormatter(_Formatter(json_lines))
        super().__init__(self.enqueue.queue, self.writer)

    def enqueue_sentinel(self) -> None:
        # Blocking, unlike the stdlib's put_nowait: a full queue drains, unless the stream
        # itself is stuck (then stop() gives up after its bound).
        self.enqueue.records.put(self._sentinel, timeout=STOP_TIMEOUT)  # type: ignore[attr-defined]

    def stop(self) -> None:
        """Idempotent; bounded, so a stuck stream cannot hold up the exit."""
        thread = self._thread
        if thread is None:
            return
        self._thread = None
        with contextlib.suppress(queue.Full):
            self.enqueue_sentinel()
        thread.join(STOP_TIMEOUT)
        if thread.is_alive():  # stuck in a write: drop what is queued rather than hang the exit
            return
        self.enqueue.direct = self.writer
        while True:  # records queued behind the sentinel, before `direct` was set
            try:
                self.writer.handle(self.enqueue.records.get_nowait())
            except queue.Empty:
                break
        with self.writer.lock:  # type: ignore[union-attr]
            self.writer.flush()


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


def configure(log_format: str | None = None, level: str = "info") -> LogWriter:
    """Text on a terminal, JSON lines otherwise (containers), unless told. Records are
    written by a thread, so a slow stderr never blocks the event loop; call `stop()` on the
    result at exit (also done by an atexit hook) to write what is still queued."""
    global _running
    if _running is not None:
        _running.stop()
    json_lines = log_format == "json" or (log_format is None and not sys.stderr.isatty())
    _running = LogWriter(sys.stderr, json_lines)
    root = logging.getLogger()
    root.handlers[:] = [_running.enqueue]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").disabled = True
    logging.captureWarnings(True)  # Python's warnings too: one format for every line
    _running.start()
    atexit.register(_running.stop)
    return _running
