"""Log lines to stderr in batches, off the request path, in the order they were logged.

A line (the access line, built by ops/log_format.py, or an operational message formatted by
`logging`) is appended to a buffer under a lock. On the event loop's thread the buffer is
handed on `LINGER` after its first line (`call_later`: the lines of many loop iterations in
one write under load), or at once past `FLUSH_LINES`; from any
other thread (or with no loop running) at once. On a pipe (stderr to a log collector: the
default in containers) the loop writes its batch itself through a non-blocking descriptor of
its own (`/proc/self/fd/N` opened again: the flag is not shared with the other writers of
the pipe) when nothing is waiting ahead of it: one `write()` per batch, no thread
woken, no GIL handed over. What the pipe has no room for (`EAGAIN`), and every line on other
streams or from other threads, is handed to a writer thread, so the event loop never waits
for the stream: a slow or stuck reader of stderr holds up the writer thread only.

- Bounded: at most `limit` characters wait (buffered or handed on, not yet written). A line
  beyond that is dropped and counted (`dropped`, and the `on_drop` hook: the metric
  `corsproxy_log_lines_dropped_total`); once the stream takes lines again a WARNING says how
  many were dropped.
- Whole lines: on a pipe or socket (with `--workers`, several processes write to one pipe)
  every `write()` is at most `PIPE_BUF` bytes of whole lines, which the kernel writes in one
  piece, never interleaved with another writer's; a single line longer than that is one
  `write()` of its own (Linux writes it whole unless the pipe fills in the middle of it).
- `stop()` (at exit) writes everything still waiting, then writes each later line at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import select
import stat
import threading
import time
from collections.abc import Callable
from typing import Any

STALL = 5.0  # seconds a write waits for room on a non-blocking stderr before dropping
LIMIT = 4 << 20  # characters waiting at most (buffered and handed on); beyond: dropped
FLUSH_LINES = 256  # lines buffered on the loop before they are handed on without waiting
PIPE_BUF = 4096  # bytes a pipe writes in one piece (POSIX's minimum, Linux's value)
STOP_TIMEOUT = 5.0  # seconds stop() waits for the writer: a stuck stream cannot hold up exit
# Seconds the loop's lines wait to be handed on, and the writer thread after waking: a
# burst in one write, few writes and wakes.
LINGER = 0.01


class LineWriter:
    """See the module docstring. `report(n)` makes the line that says `n` lines were dropped."""

    def __init__(self, stream: Any, report: Callable[[int], str], limit: int = LIMIT) -> None:
        self.stream = stream
        self.report = report
        self.limit = limit
        self.dropped = 0
        self.on_drop: Callable[[], Any] | None = None
        self._reported = 0
        self._lock = threading.RLock()  # re-entered: a direct write that drops counts under it
        self._lines: list[str] = []
        self._waiting = 0  # characters buffered or handed on, not yet written
        self._scheduled = False  # a flush is coming on the loop
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        # What the thread writes: text, or the bytes of a batch the loop began (None: stop).
        self._batches: queue.SimpleQueue[str | bytes | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._direct = False  # stopped: each line is written at once, by its caller
        self._write_lock = threading.Lock()
        self._fd, self._chunked = self._target(stream)
        self._nonblocking = -1  # the loop's own descriptor of the pipe (start(): a FIFO only)
        self._encoding = getattr(stream, "encoding", None) or "utf-8"

    @staticmethod
    def _target(stream: Any) -> tuple[int, bool]:
        """The stream's descriptor (-1: write through the stream) and whether writes must be
        cut into whole-line chunks of at most PIPE_BUF (a pipe or socket others share)."""
        try:
            fd = stream.fileno()
            mode = os.fstat(fd).st_mode
        except (AttributeError, OSError, ValueError):
            return -1, False
        return fd, stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)

    def start(self) -> None:
        if self._fd >= 0:  # what the stream buffered goes first
            with contextlib.suppress(OSError, ValueError):
                self.stream.flush()
        if self._fd >= 0 and self._nonblocking < 0 and stat.S_ISFIFO(os.fstat(self._fd).st_mode):
            with contextlib.suppress(OSError):  # no /proc, no permission: the thread writes
                flags = os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC
                self._nonblocking = os.open(f"/proc/self/fd/{self._fd}", flags)
        self._thread = threading.Thread(target=self._run, name="corsproxy-log", daemon=True)
        self._thread.start()

    def bind(self, loop: asyncio.AbstractEventLoop | None) -> None:
        """Batch the lines logged on `loop`'s thread every `LINGER` on `loop` (None: no
        longer; what is buffered is handed on)."""
        self.flush()
        self._loop = loop
        self._loop_thread = threading.get_ident() if loop is not None else 0

    def write(self, line: str) -> None:
        """Queue one whole line (ending in a newline). Never blocks on the stream."""
        with self._lock:
            if self._direct:
                self._write_now(line)
                return
            size = len(line)
            if self._waiting + size > self.limit:
                self.dropped += 1
                if self.on_drop is not None:
                    self.on_drop()
                return
            self._waiting += size
            lines = self._lines
            lines.append(line)
            loop = self._loop
            if len(lines) < FLUSH_LINES and loop is not None and loop.is_running():
                if self._scheduled:
                    return  # the loop hands this line on with the others
                if threading.get_ident() == self._loop_thread:
                    self._scheduled = True
                    loop.call_later(LINGER, self.flush)
                    return
            self._scheduled = False  # (a flush still pending finds nothing: harmless)
            batch = "".join(lines)
            self._lines = []
            self._hand_on(batch)

    def flush(self) -> None:
        """Hand what is buffered on (written at once by the loop, or to the writer thread)."""
        with self._lock:
            self._scheduled = False
            if self._lines:
                batch = "".join(self._lines)
                self._lines = []
                if self._direct:
                    self._write_now(batch)
                else:
                    self._hand_on(batch)

    def _hand_on(self, batch: str) -> None:
        """`batch` (whole lines; the lock held) to the pipe at once when on the loop's thread,
        nothing waits ahead of it and the pipe has room, else (what is left) to the thread."""
        if (
            self._nonblocking >= 0
            and self._waiting == len(batch)  # nothing ahead: buffered, handed on or writing
            and threading.get_ident() == self._loop_thread
        ):
            data = batch.encode(self._encoding, "backslashreplace")
            try:
                done = _write_whole_lines(self._nonblocking, data)
            except OSError:  # the stream is gone (a closed pipe), as the thread would find
                done = len(data)
            if done == len(data):
                self._waiting -= len(batch)
                return
            rest = data[done:]  # the pipe is full: the thread writes the rest, blocking
            self._waiting -= len(batch) - len(rest)
            self._batches.put(rest)
            return
        self._batches.put(batch)

    def _run(self) -> None:
        batches = self._batches
        stopping = False
        while not stopping:
            first = batches.get()
            if first is None:
                break
            parts: list[str | bytes] = [first]
            time.sleep(LINGER)  # a burst in one write rather than many wakes
            while True:
                try:
                    part = batches.get_nowait()
                except queue.Empty:
                    break
                if part is None:
                    stopping = True
                    break
                parts.append(part)
            size = sum(map(len, parts))
            self._write_parts(parts)
            with self._lock:
                dropped = 0
                if batches.empty():  # drained: what waited before the drops is written
                    dropped = self.dropped - self._reported
                    self._reported += dropped
            if dropped:  # the stream took lines again: say how many it missed
                self._write(self.report(dropped))
            with self._lock:  # only now may the loop write again itself (the order kept)
                self._waiting -= size

    def _write_now(self, text: str) -> None:
        with self._write_lock:
            self._write(text)

    def _write_parts(self, parts: list[str | bytes]) -> None:
        texts = [part for part in parts if isinstance(part, str)]
        if len(texts) == len(parts):
            self._write("".join(texts))
        else:
            self._write_bytes(b"".join(map(self._encode, parts)))

    def _encode(self, part: str | bytes) -> bytes:
        if isinstance(part, bytes):
            return part
        return part.encode(getattr(self.stream, "encoding", None) or "utf-8", "backslashreplace")

    def _write(self, text: str) -> None:
        if self._fd < 0:
            try:
                self.stream.write(text)
                self.stream.flush()
            except (OSError, ValueError):  # the stream is gone: nothing to keep
                pass
            return
        self._write_bytes(self._encode(text))

    def _write_bytes(self, data: bytes) -> None:
        try:
            if not self._chunked or len(data) <= PIPE_BUF:
                self._lost(data, _write_all(self._fd, data))
                return
            start, end = 0, len(data)
            while start < end:
                cut = data.rfind(b"\n", start, start + PIPE_BUF) + 1
                if cut <= start:  # one line longer than PIPE_BUF: written whole, alone
                    cut = data.find(b"\n", start) + 1 or end
                unwritten = _write_all(self._fd, data[start:cut])
                if unwritten:
                    self._lost(data, end - cut + unwritten)
                    return
                start = cut
        except (OSError, ValueError):  # the stream is gone (a closed pipe): nothing to keep
            pass

    def _lost(self, data: bytes, unwritten: int) -> None:
        """The last `unwritten` bytes of `data` found no room within STALL: dropped, counted
        (a stderr someone else made non-blocking must not lose lines silently)."""
        if not unwritten:
            return
        lines = data[len(data) - unwritten :].count(b"\n") or 1
        with self._lock:
            self.dropped += lines
        if self.on_drop is not None:
            for _ in range(lines):
                self.on_drop()

    def stop(self) -> None:
        """Write what waits, then write each later line at once. Idempotent; bounded: a
        stuck stream cannot hold up the exit (what waits is then lost)."""
        thread = self._thread
        if thread is None:
            return
        self._thread = None
        self.flush()
        self._batches.put(None)
        thread.join(STOP_TIMEOUT)
        if thread.is_alive():
            return
        with self._lock:
            self._direct = True
            if self._nonblocking >= 0:  # (used under this lock only)
                with contextlib.suppress(OSError):
                    os.close(self._nonblocking)
                self._nonblocking = -1
            parts: list[str | bytes] = []
            with contextlib.suppress(queue.Empty):
                while True:
                    part = self._batches.get_nowait()
                    if part is not None:
                        parts.append(part)
            parts += self._lines
            self._lines = []
            dropped = self.dropped - self._reported
            self._reported += dropped
            if dropped:
                parts.append(self.report(dropped))
            if parts:
                with self._write_lock:
                    self._write_parts(parts)


def _write_whole_lines(fd: int, data: bytes) -> int:
    """Write `data` (whole lines) to a non-blocking pipe in whole-line `write()`s of at most
    PIPE_BUF (each written whole or not at all); how many bytes went, up to the first that
    found no room. A line longer than PIPE_BUF is left to the writer thread."""
    if len(data) <= PIPE_BUF:
        try:
            return os.write(fd, data)  # all of it: at most PIPE_BUF on a pipe is atomic
        except BlockingIOError:
            return 0
    start, end = 0, len(data)
    while start < end:
        cut = data.rfind(b"\n", start, start + PIPE_BUF) + 1
        if cut <= start:  # a line longer than PIPE_BUF: a non-blocking write could cut it
            return start
        try:
            os.write(fd, data[start:cut])
        except BlockingIOError:
            return start
        start = cut
    return start


def _write_all(fd: int, data: bytes) -> int:
    """Write all of `data`; how many bytes were left unwritten (0: all went). A descriptor
    that is non-blocking (stderr shares its flags with whoever started corsproxy) is waited
    on for room, at most STALL seconds at a time: this runs on the writer thread."""
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except BlockingIOError:
            poller = select.poll()
            poller.register(fd, select.POLLOUT)
            if not poller.poll(STALL * 1000):
                return len(view)
    return 0
