"""The batching log handler: many access lines, one write; nothing lost on flush."""

from __future__ import annotations

import asyncio
import io
import logging

from corsproxy.logs import BatchingHandler


class CountingStream(io.StringIO):
    writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


def record(message: str) -> logging.LogRecord:
    return logging.LogRecord("corsproxy.access", logging.INFO, __file__, 1, message, None, None)


def test_without_a_running_loop_lines_are_written_at_once() -> None:
    stream = CountingStream()
    handler = BatchingHandler(stream)
    handler.emit(record("one"))
    assert stream.getvalue() == "one\n" and stream.writes == 1


async def test_with_a_running_loop_lines_are_batched() -> None:
    stream = CountingStream()
    handler = BatchingHandler(stream, interval=0.05)
    for i in range(100):
        handler.emit(record(f"line {i}"))
    assert stream.writes == 0  # nothing yet: one write comes after the interval
    await asyncio.sleep(0.2)
    assert stream.writes == 1
    assert stream.getvalue().splitlines() == [f"line {i}" for i in range(100)]


async def test_flush_writes_what_is_pending() -> None:
    stream = CountingStream()
    handler = BatchingHandler(stream, interval=10)
    handler.emit(record("pending"))
    handler.flush()  # as logging's exit hook does
    assert stream.getvalue() == "pending\n"
