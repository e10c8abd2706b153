"""Logging off the event loop: lines handed on in batches to a writer thread, bounded.
Nothing is lost at exit (SIGTERM, SIGINT, a reload on the way), a burst cannot grow memory
without bound (drops are counted, in a metric too, and said once the stream drains), the
event loop never waits for a pipe nobody reads, lines keep their order, and workers that
share one pipe never cut each other's lines."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from corsproxy.ops import log_writer
from corsproxy.ops.logs import LogWriter
from tests.net import ROOT, TIMEOUT, free_port, raw_exchange, start_cli
from tests.test_serve_admin import samples


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
    log.handlers[:] = [writer.handler]
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


def test_a_burst_beyond_the_limit_is_dropped_counted_and_reported() -> None:
    stream = Stream(gate=True)
    writer = LogWriter(stream, json_lines=True)
    log = logger(writer)
    record = log.makeRecord(log.name, logging.INFO, __file__, 0, "burst 0", (), None)
    size = len(writer.formatter.format(record)) + 1  # "burst 1".."burst 9" too; then +1
    writer.lines.limit = 11 * size + size // 2  # burst 0 (being written) and 10 more
    writer.start()
    log.info("burst 0")
    assert stream.entered.wait(10)  # the writer thread is stuck in write(): the stream is slow
    for i in range(1, 26):
        log.info("burst %d", i)  # never blocks the caller
    assert writer.dropped == 15  # burst 0 is being written: 10 more fit
    stream.gate.set()
    writer.stop()
    records = [json.loads(line) for line in stream.getvalue().splitlines()]
    messages = [r["message"] for r in records]
    assert messages[:11] == [f"burst {i}" for i in range(11)]
    assert records[-1]["level"] == "warning"
    assert messages[-1].startswith("logging: 15 log lines dropped")
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
    writer = LogWriter(stream, json_lines=False, limit=100)
    writer.start()
    log = logger(writer)
    log.info("stuck")
    assert stream.entered.wait(10)
    for i in range(4):
        log.info("queued or dropped %d", i)
    monkeypatch.setattr(log_writer, "STOP_TIMEOUT", 0.2)
    try:
        writer.stop()  # returns although the writer thread cannot finish its write
    finally:
        stream.gate.set()
    assert writer.dropped == 2


def test_the_loop_never_waits_for_a_pipe_nobody_reads() -> None:
    """Lines logged on the event loop while nobody reads the pipe: the loop goes on (drops
    beyond the limit, each counted by the hook the metric uses); once the pipe is read, every
    line kept comes out in order, then the warning with the number dropped."""
    read_end, write_end = os.pipe()
    stream = os.fdopen(write_end, "w")
    writer = LogWriter(stream, json_lines=True, limit=256 * 1024)
    writer.start()
    counted: list[int] = []
    total, pad = 3000, "x" * 400  # 1.3 MB: far beyond the pipe (64 KiB) and the limit

    async def log_many() -> None:
        writer.lines.bind(asyncio.get_running_loop())
        writer.lines.on_drop = lambda: counted.append(1)
        for i in range(total):
            fields = {"method": "GET", "path": f"/{i}/{pad}", "status": 200}
            logs_line = writer.access.line(logging.INFO, fields, time.time())
            writer.lines.write(logs_line + "\n")
            if i % 50 == 0:
                await asyncio.sleep(0)  # loop iterations: the batches are handed on
        writer.lines.bind(None)

    loop_thread = threading.Thread(target=asyncio.run, args=(log_many(),), daemon=True)
    loop_thread.start()
    loop_thread.join(60)
    if loop_thread.is_alive():  # blocked in a write: unblock it (EPIPE) and fail
        os.close(read_end)
        raise AssertionError("the event loop waited for the pipe")
    assert writer.dropped > 0 and len(counted) == writer.dropped
    chunks: list[bytes] = []
    reader = threading.Thread(
        target=lambda: chunks.extend(iter(lambda: os.read(read_end, 1 << 16), b""))
    )
    reader.start()
    writer.stop()
    stream.close()
    reader.join(TIMEOUT)
    records = [json.loads(line) for line in b"".join(chunks).decode().splitlines()]
    paths = [int(r["path"].split("/")[1]) for r in records[:-1]]
    assert paths == sorted(paths) and len(set(paths)) == len(paths)  # in order, none twice
    assert len(paths) + writer.dropped == total
    assert records[-1]["message"].startswith(f"logging: {writer.dropped} log lines dropped")


def test_a_non_blocking_stream_that_stays_full_drops_counted_lines_after_the_stall(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A write to a non-blocking stderr that finds no room waits STALL for it, then drops
    what is left, counted (lines, not bytes): never lost silently."""
    monkeypatch.setattr(log_writer, "STALL", 0.2)
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    stream = os.fdopen(write_end, "w")
    writer = LogWriter(stream, json_lines=True)
    writer.start()
    counted: list[int] = []
    writer.lines.on_drop = lambda: counted.append(1)
    total, pad = 300, "x" * 1000  # 300 KB: far beyond the pipe (64 KiB)
    for i in range(total):
        fields = {"method": "GET", "path": f"/{i}/{pad}", "status": 200}
        line = writer.access.line(logging.INFO, fields, time.time())
        writer.lines.write(line + "\n")
    deadline = time.monotonic() + 30
    while writer.dropped == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert writer.dropped > 0 and len(counted) == writer.dropped
    chunks: list[bytes] = []
    reader = threading.Thread(
        target=lambda: chunks.extend(iter(lambda: os.read(read_end, 1 << 16), b""))
    )
    reader.start()
    writer.stop()
    stream.close()
    reader.join(TIMEOUT)
    records = [json.loads(line) for line in b"".join(chunks).decode().splitlines()]
    access = [r for r in records if "path" in r]
    said = [r["message"] for r in records if "log lines dropped" in r["message"]]
    assert len(access) + writer.dropped == total
    assert said == [
        f"logging: {writer.dropped} log lines dropped" + said[0].partition("log lines dropped")[2]
    ]


def test_lines_from_the_loop_and_other_threads_keep_their_order() -> None:
    stream = Stream()
    writer = LogWriter(stream, json_lines=False)
    writer.start()
    log = logger(writer)

    async def mixed() -> None:
        writer.lines.bind(asyncio.get_running_loop())
        for i in range(200):
            fields = {"method": "GET", "path": f"/{3 * i}", "status": 200}
            writer.lines.write(writer.access.line(logging.INFO, fields, time.time()) + "\n")
            log.info("GET /%d op", 3 * i + 1)  # an operational message on the loop
            thread = threading.Thread(target=log.info, args=("GET /%d thread", 3 * i + 2))
            thread.start()
            thread.join()  # logged from another thread while the loop's batch waits
            if i % 7 == 0:
                await asyncio.sleep(0)
        writer.lines.bind(None)

    asyncio.run(mixed())
    writer.stop()
    numbers = [int(line.split()[3][1:]) for line in stream.getvalue().splitlines()]
    assert numbers == list(range(600))


def test_writes_to_a_pipe_are_whole_lines_of_at_most_pipe_buf(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    writes: list[bytes] = []
    real = log_writer._write_all

    def recording(fd: int, data: bytes) -> None:
        writes.append(bytes(data))
        real(fd, data)

    monkeypatch.setattr(log_writer, "_write_all", recording)
    read_end, write_end = os.pipe()
    stream = os.fdopen(write_end, "w")
    chunks: list[bytes] = []
    reader = threading.Thread(
        target=lambda: chunks.extend(iter(lambda: os.read(read_end, 1 << 16), b""))
    )
    reader.start()
    writer = LogWriter(stream, json_lines=False)
    sizes = [10, 4000, 4095, 4096, 9000, 1, 300, 2500, 2500, 50] * 20
    lines = [f"{i:05d}" + "y" * size + "\n" for i, size in enumerate(sizes)]
    for line in lines:  # all before the thread starts: one batch, cut into chunks
        writer.lines.write(line)
    writer.start()
    writer.stop()
    stream.close()
    reader.join(TIMEOUT)
    assert b"".join(chunks).decode() == "".join(lines)
    assert len(writes) > 1
    for data in writes:
        assert data.endswith(b"\n")
        assert len(data) <= log_writer.PIPE_BUF or data.count(b"\n") == 1  # a long line: alone


def send_requests(url: str, count: int, path: str = "/line-") -> None:
    async def go() -> None:
        for i in range(count):
            request = f"GET {path}{i} HTTP/1.1\r\nHost: p\r\nConnection: close\r\n\r\n"
            reply = await raw_exchange(url, request.encode())
            assert reply.startswith(b"HTTP/1.1 502"), (i, reply[:100])

    asyncio.run(go())


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_every_access_line_reaches_stderr_at_exit_with_a_reload_on_the_way(
    stop: signal.Signals, tmp_path: Path
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("upstream: http://127.0.0.1:1\n")  # nothing listens: 502s, logged
    proc, url = start_cli("-c", str(config), "--listen", "127.0.0.1:0")
    count = 150
    try:
        send_requests(url, count // 2, "/a-")
        config.write_text("upstream: http://127.0.0.1:1/v2\n")
        proc.send_signal(signal.SIGHUP)
        send_requests(url, count - count // 2, "/b-")
        proc.send_signal(stop)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)
    assert proc.returncode == 0, err[-2000:]
    records = [json.loads(line) for line in err.splitlines()]  # every line whole JSON
    paths = [r["path"] for r in records if r.get("logger") == "corsproxy.access"]
    expected = [f"/a-{i}" for i in range(count // 2)]
    expected += [f"/b-{i}" for i in range(count - count // 2)]
    assert paths == expected
    assert any("reload" in r["message"] for r in records), err[-2000:]
    assert records[-1]["message"] == "stopped", err[-2000:]


def test_a_pipe_nobody_reads_drops_lines_counts_them_and_says_so(tmp_path: Path) -> None:
    """A real `serve` whose stderr nobody reads: requests and /metrics are still answered
    (the loop never waits on the pipe); lines beyond the limit are dropped and counted in
    corsproxy_log_lines_dropped_total; once stderr is read, a warning says how many, and
    every access line kept plus every one dropped is every request."""
    admin = free_port()
    proc, url = start_cli(
        "--listen", "127.0.0.1:0", "--upstream", "http://127.0.0.1:1",
        "--admin-listen", f"127.0.0.1:{admin}",
    )  # fmt: skip
    long = "/" + "p" * 2000  # about 2.5 KB a line: the limit (4 MiB) in under 2,000 requests
    count, batch = 2400, 100
    try:
        host, port = url.removeprefix("http://").rsplit(":", 1)
        for start in range(0, count, batch):  # pipelined on one connection: quick
            with socket.create_connection((host, int(port)), timeout=TIMEOUT) as sock:
                sock.sendall(b"".join(
                    f"GET {long}?n={i} HTTP/1.1\r\nHost: p\r\n\r\n".encode()
                    for i in range(start, start + batch)
                ))  # fmt: skip
                data = b""
                while data.count(b"cannot be reached\n") < batch:
                    chunk = sock.recv(1 << 16)
                    assert chunk, data[-300:]
                    data += chunk
            assert data.count(b"HTTP/1.1 502 ") == batch, data[-300:]
        with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=TIMEOUT) as r:
            metrics = r.read().decode()
        dropped = samples(metrics, "corsproxy_log_lines_dropped_total")[""]
        assert dropped > 0
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)
    assert proc.returncode == 0, err[-2000:]
    records = [json.loads(line) for line in err.splitlines()]
    access = [r["path"] for r in records if r.get("logger") == "corsproxy.access"]
    numbers = [int(path.rpartition("=")[2]) for path in access]
    assert numbers == sorted(numbers)
    assert len(access) + dropped == count
    said = [r["message"] for r in records if "log lines dropped" in r["message"]]
    assert said and said[0].startswith(f"logging: {int(dropped)} log lines dropped"), said


def test_a_stderr_made_non_blocking_by_the_parent_loses_no_line_silently(
    tmp_path: Path,
) -> None:
    """stderr shares its flags with whoever started corsproxy: a supervisor may hand it a
    non-blocking pipe. A full pipe then answers the writer thread EAGAIN; the lines it could
    not write are waited for, or dropped and counted, never lost silently (found by an
    outside check: 137 lines of 3,000, none counted)."""
    port, admin = free_port(), free_port()
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    proc = subprocess.Popen(
        [sys.executable, "-m", "corsproxy", "serve", "--listen", f"127.0.0.1:{port}",
         "--upstream", "http://127.0.0.1:1", "--admin-listen", f"127.0.0.1:{admin}",
         "--log-format", "json"],
        cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=write_end,
        env={**os.environ, "CORSPROXY_PROBE_TIMEOUT": "0"},
    )  # fmt: skip
    os.close(write_end)
    chunks: list[bytes] = []

    def drain() -> None:
        while data := os.read(read_end, 1 << 16):
            chunks.append(data)

    reader = threading.Thread(target=drain, daemon=True)
    long = "/" + "p" * 2000
    count, batch = 1200, 100
    try:
        deadline = time.monotonic() + TIMEOUT
        while True:  # the port opens (nothing reads stderr yet: a few lines fit the pipe)
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.05)
        for start in range(0, count, batch):
            with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
                sock.sendall(b"".join(
                    f"GET {long}?n={i} HTTP/1.1\r\nHost: p\r\n\r\n".encode()
                    for i in range(start, start + batch)
                ))  # fmt: skip
                data = b""
                while data.count(b"cannot be reached\n") < batch:
                    chunk = sock.recv(1 << 16)
                    assert chunk, data[-300:]
                    data += chunk
        reader.start()
        seen, deadline = -1, time.monotonic() + 30
        while time.monotonic() < deadline:  # until the lines stop coming (the writer caught up)
            time.sleep(1.0)
            now = sum(c.count(b"\n") for c in chunks)
            if now == seen:
                break
            seen = now
        with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=TIMEOUT) as r:
            metrics = r.read().decode()
        dropped = samples(metrics, "corsproxy_log_lines_dropped_total")[""]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        reader.join(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        os.close(read_end)
    records = [json.loads(line) for line in b"".join(chunks).decode().splitlines()]
    access = [r for r in records if r.get("logger") == "corsproxy.access"]
    said = [
        int(m.group(1))
        for r in records
        if (m := re.match(r"logging: (\d+) log lines dropped", r["message"]))
    ]
    assert len(access) + dropped == count, (len(access), dropped)
    assert sum(said) == dropped


def test_two_workers_on_one_pipe_never_cut_each_others_lines(tmp_path: Path) -> None:
    """`--workers 2` writing to one stderr pipe under concurrent load, lines long enough
    that a batch is several PIPE_BUF chunks: every line read back is one whole JSON line."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "corsproxy", "serve", "--log-format", "json", "--workers", "2",
         "--listen", f"127.0.0.1:{(port := free_port())}", "--upstream", "http://127.0.0.1:1"],
        stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip
    count = 600
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None, "did not start"
                time.sleep(0.1)
        time.sleep(1)  # both workers up (the kernel spreads connections over both)
        long = "/" + "w" * 1000  # in path, message and upstream_url: 3.4 KB, under PIPE_BUF

        async def load() -> None:
            url = f"http://127.0.0.1:{port}"

            async def one(i: int) -> None:
                request = f"GET {long}?n={i} HTTP/1.1\r\nHost: p\r\nConnection: close\r\n\r\n"
                reply = await raw_exchange(url, request.encode())
                assert reply.startswith(b"HTTP/1.1 502"), reply[:100]

            for start in range(0, count, 50):  # 50 at once
                await asyncio.gather(*(one(i) for i in range(start, start + 50)))

        asyncio.run(load())
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)
    assert proc.returncode == 0, err[-2000:]
    records = [json.loads(line) for line in err.splitlines()]  # a cut line would not parse
    access = [r for r in records if r.get("logger") == "corsproxy.access"]
    assert sorted(int(r["path"].rpartition("=")[2]) for r in access) == list(range(count))
    assert len({r["pid"] for r in access}) == 2  # both workers wrote


def test_on_a_terminal_the_access_line_is_text_and_reaches_it() -> None:
    """No `--log-format`: stderr a terminal means text lines, written by the same writer."""
    master, slave = os.openpty()
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "corsproxy", "serve", "--listen", f"127.0.0.1:{port}",
         "--upstream", "http://127.0.0.1:1"],
        stderr=slave, stdout=subprocess.DEVNULL, cwd=ROOT,
    )  # fmt: skip
    os.close(slave)
    output = b""

    def read_until(needle: bytes) -> None:
        nonlocal output
        deadline = time.monotonic() + 30
        while needle not in output:
            assert time.monotonic() < deadline and proc.poll() is None, output[-2000:]
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                output += os.read(master, 1 << 16)

    try:
        read_until(b"listening on")
        send_requests(f"http://127.0.0.1:{port}", 3, "/t=x-")  # `=`: quoted in text lines
        proc.send_signal(signal.SIGTERM)
        read_until(b"stopped")
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        os.close(master)
    lines = output.decode().replace("\r\n", "\n").splitlines()
    access = [line for line in lines if " GET /t" in line]
    assert len(access) == 3, lines
    for i, line in enumerate(access):
        stamp, level, rest = line.split(None, 2)
        assert re.fullmatch(r"\d\d:\d\d:\d\d", stamp) and level == "WARNING"
        assert rest.startswith(f"GET /t=x-{i} 502 pid=") and f'path="/t=x-{i}"' in rest


def test_the_loop_writes_its_batches_to_a_pipe_with_room_itself_in_whole_lines(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On a pipe with room, each loop iteration's lines go out in the loop's own non-blocking
    write (no thread woken), cut into whole lines of at most PIPE_BUF; nothing is lost, in
    order; the pipe's own descriptor stays blocking (other writers of the pipe share it)."""
    read_end, write_end = os.pipe()
    stream = os.fdopen(write_end, "w")
    chunks: list[bytes] = []
    reader = threading.Thread(
        target=lambda: chunks.extend(iter(lambda: os.read(read_end, 1 << 16), b""))
    )
    reader.start()
    writer = LogWriter(stream, json_lines=False)
    writer.start()
    threads: list[str] = []
    direct: list[bytes] = []
    real_all, real_write = log_writer._write_all, os.write

    def by_thread(fd: int, data: bytes) -> None:
        threads.append(threading.current_thread().name)
        real_all(fd, data)

    def recording(fd: int, data: bytes) -> int:
        if fd == writer.lines._nonblocking:
            direct.append(bytes(data))
        return real_write(fd, data)

    monkeypatch.setattr(log_writer, "_write_all", by_thread)
    monkeypatch.setattr(log_writer.os, "write", recording)
    sizes = [10, 900, 3000, 1200, 1, 300, 2500, 2500, 50, 4000] * 10
    lines = [f"{i:05d}" + "y" * size + "\n" for i, size in enumerate(sizes)]

    async def log_all() -> None:
        writer.lines.bind(asyncio.get_running_loop())
        for i, line in enumerate(lines):
            writer.lines.write(line)
            if i % 10 == 9:
                await asyncio.sleep(0.01)  # an iteration: its batch, and the reader reads
        writer.lines.bind(None)

    asyncio.run(log_all())
    assert not threads  # the writer thread never wrote: the loop did, at once
    assert b"".join(direct).decode() == "".join(lines)
    assert len(direct) > 10
    for data in direct:
        assert data.endswith(b"\n") and len(data) <= log_writer.PIPE_BUF
    assert os.get_blocking(write_end)  # the shared descriptor: untouched
    monkeypatch.undo()
    writer.stop()
    stream.close()
    reader.join(TIMEOUT)
    assert b"".join(chunks).decode() == "".join(lines)
