"""Logging off the event loop: a writer thread behind a bounded queue. Nothing is lost at
exit, a burst cannot grow memory without bound (drops are counted and said), and the last
access line before SIGTERM reaches stderr."""

from __future__ import annotations

import io
import json
import logging
import signal
import threading

import pytest

from corsproxy.ops import logs
from corsproxy.ops.logs import LogWriter
from tests.net import raw_exchange, start_cli


class Stream(io.StringIO):
    """Records which threads wrote; `gate` (when set up) holds the first write until opened."""

    def __init__(self, gate: bool = False) -> None:
        super().__init__()
        self.threads: set[str] = set()
        self.entered = threading.Event()
        self.gate = threading.Event()
        if not gate:
            self.gate.set()

    def write(self, text: str) -> int:
        self.threads.add(threading.current_thread().name)
        self.entered.set()
        assert self.gate.wait(10), "the test never opened the gate"
        return super().write(text)


def logger(writer: LogWriter) -> logging.Logger:
    log = logging.getLogger(f"test.logs.{id(writer)}")
    log.propagate = False
    log.handlers[:] = [writer.enqueue]
    log.setLevel(logging.INFO)
    return log


def test_every_line_is_written_in_order_by_the_writer_thread_and_at_stop() -> None:
    stream = Stream()
    writer = LogWriter(stream, json_lines=False)
    writer.start()
    log = logger(writer)
    for i in range(1000):
        log.info("line %d", i)
    writer.stop()
    log.info("after stop")  # written at once: logging at exit is not lost either
    lines = [line.split(None, 2)[2] for line in stream.getvalue().splitlines()]
    assert lines == [f"line {i}" for i in range(1000)] + ["after stop"]
    assert threading.current_thread().name in stream.threads  # only the line after stop
    assert len(stream.threads) == 2
    writer.stop()  # idempotent


def test_a_burst_beyond_the_queue_is_dropped_counted_and_reported() -> None:
    stream = Stream(gate=True)
    writer = LogWriter(stream, json_lines=True, size=10)
    writer.start()
    log = logger(writer)
    log.info("first")
    assert stream.entered.wait(10)  # the writer thread is stuck in write(): the stream is slow
    for i in range(25):
        log.info("burst %d", i)  # never blocks the caller
    assert writer.enqueue.dropped == 15
    stream.gate.set()
    writer.stop()
    records = [json.loads(line) for line in stream.getvalue().splitlines()]
    messages = [r["message"] for r in records]
    assert messages[:11] == ["first"] + [f"burst {i}" for i in range(10)]
    assert records[-1]["level"] == "warning"
    assert messages[-1].startswith("logging: 15 log records dropped")
    assert len(records) == 12


async def test_a_full_stderr_pipe_blocks_no_request_and_loses_no_line_at_sigterm() -> None:
    # Nothing listens on port 1: each request is a 502 logged with its access line. Nobody
    # reads the proxy's stderr until SIGTERM, so the pipe (64 KiB) fills: requests must still
    # be answered, and every line, the last access line and "stopped" included, must come
    # out once the pipe is read again.
    proc, url = start_cli("--listen", "127.0.0.1:0", "--upstream", "http://127.0.0.1:1")
    count = 600  # about 180 KiB of JSON lines
    try:
        for i in range(count):
            reply = await raw_exchange(
                url, f"GET /line-{i} HTTP/1.1\r\nHost: p\r\nConnection: close\r\n\r\n".encode()
            )
            assert reply.startswith(b"HTTP/1.1 502"), (i, reply[:100])
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)
    assert proc.returncode == 0, err[-2000:]
    records = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    paths = [r["path"] for r in records if r.get("logger") == "corsproxy.access"]
    assert paths == [f"/line-{i}" for i in range(count)]
    assert records[-1]["message"] == "stopped", err[-2000:]


def test_stop_waits_for_the_lines_still_queued() -> None:
    stream = Stream(gate=True)
    writer = LogWriter(stream, json_lines=False)
    writer.start()
    log = logger(writer)
    log.info("first")
    assert stream.entered.wait(10)  # the writer thread is in write(); the rest is queued
    for i in range(5):
        log.info("queued %d", i)
    threading.Timer(0.3, stream.gate.set).start()
    writer.stop()
    lines = [line.split(None, 2)[2] for line in stream.getvalue().splitlines()]
    assert lines == ["first"] + [f"queued {i}" for i in range(5)]


def test_stop_is_bounded_when_the_stream_is_stuck(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = Stream(gate=True)
    writer = LogWriter(stream, json_lines=False, size=2)
    writer.start()
    log = logger(writer)
    log.info("stuck")
    assert stream.entered.wait(10)
    for i in range(4):
        log.info("queued or dropped %d", i)
    monkeypatch.setattr(logs, "STOP_TIMEOUT", 0.2)
    try:
        writer.stop()  # returns although the writer thread cannot finish its write
    finally:
        stream.gate.set()
    assert writer.enqueue.dropped == 2
