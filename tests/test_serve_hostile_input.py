"""Hostile input, as an attacker meets a real process (the second outside review, issue 11,
section 6): origins against catastrophic operator regexes, header values that would forge log
lines, hostile files on reload, TRACE and Max-Forwards, Sec-WebSocket-Origin."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

from corsproxy.ops import logs
from tests.net import (
    ROOT,
    Recorder,
    free_port,
    head_and_body,
    header_values,
    raw_exchange,
    running_proxy,
    start_cli,
)

APP = "https://app.example.com"


@contextlib.asynccontextmanager
async def serving(*args: str) -> AsyncIterator[tuple[Any, str]]:
    proc, url = await asyncio.to_thread(start_cli, "--listen", "127.0.0.1:0", *args)
    try:
        yield proc, url
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(proc.wait, 10)
            except Exception:
                proc.kill()
                await asyncio.to_thread(proc.wait, 10)
        proc.stdout.close()
        proc.stderr.close()


async def test_a_catastrophic_regex_does_not_block_the_process(
    recorder: Recorder, tmp_path: Path
) -> None:
    admin = free_port()
    config = tmp_path / "c.yaml"
    config.write_text(
        f"upstream: {recorder.url}\nadmin: {{listen: '127.0.0.1:{admin}'}}\n"
        "cors:\n  allow_origins: ['regex:https://(a+)+\\.example\\.com']\n"
    )
    async with serving("--config", str(config)) as (_, url), aiohttp.ClientSession() as client:
        timeout = aiohttp.ClientTimeout(total=5)

        async def attack(n: int) -> float:
            started = time.monotonic()
            origin = "https://" + "a" * n + ".example.con"  # almost: the worst case
            async with client.get(f"{url}/x", headers={"Origin": origin}, timeout=timeout) as r:
                assert r.status == 200 and "Access-Control-Allow-Origin" not in r.headers
            return time.monotonic() - started

        async def health() -> None:
            async with client.get(f"http://127.0.0.1:{admin}/healthz", timeout=timeout) as r:
                assert r.status == 200

        # 28 `a`s took 9 s on the backtracking engine; 60 would take centuries.
        attacks = [asyncio.create_task(attack(n)) for n in (30, 40, 60)]
        await health()  # answered meanwhile
        assert max(await asyncio.gather(*attacks)) < 5
        ok = "https://" + "a" * 60 + ".example.com"
        async with client.get(f"{url}/x", headers={"Origin": ok}, timeout=timeout) as r:
            assert r.headers["Access-Control-Allow-Origin"] == ok


def text_fields(line: str) -> dict[str, str]:
    """`key=value` fields of a text log line, split as a naive consumer would (on any
    whitespace); a forged field would repeat a key."""
    found: dict[str, str] = {}
    for match in re.finditer(r'(?<!\S)([a-z_]+)=("(?:[^"\\]|\\.)*"|[^\s"]*)', line):
        key, raw = match.groups()
        assert key not in found, f"field {key} twice in {line!r}"
        found[key] = json.loads(raw) if raw.startswith('"') else raw
    return found


async def test_text_log_values_cannot_forge_fields(recorder: Recorder) -> None:
    proc = await asyncio.to_thread(
        subprocess.Popen,
        [sys.executable, "-m", "corsproxy", "serve", "--log-format", "text", "--listen",
         "127.0.0.1:0", "--upstream", recorder.url, "--allow-origin", APP],
        stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip
    assert proc.stderr is not None
    try:
        url = ""
        while not url:
            line = await asyncio.wait_for(asyncio.to_thread(proc.stderr.readline), 10)
            assert line, "corsproxy did not start"
            found = re.search(r"listening on (http://\S+),", line)
            url = found.group(1) if found else ""
        forged = [
            "https://a.example\tcors=allowed",
            'https://b.example" cors=allowed reason="x',
            "https://c.example\\\tcors=allowed",
            "https://d.example=x\t\tstatus=500",
        ]
        for origin in forged:
            request = f"GET /x HTTP/1.1\r\nHost: h\r\nOrigin: {origin}\r\nConnection: close\r\n\r\n"
            assert (await raw_exchange(url, request.encode())).startswith(b"HTTP/1.1 200")
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.to_thread(proc.communicate, timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)
    access = [line for line in err.splitlines() if " GET /x 200" in line]
    assert len(access) == len(forged)
    for line, origin in zip(access, forged, strict=True):
        fields = text_fields(line)
        assert fields["origin"] == origin  # the value, whole, read back
        assert fields["cors"] == "refused" and fields["status"] == "200"


def test_text_log_escapes_every_value_that_is_not_a_plain_token() -> None:
    formatter = logs._Formatter(json_lines=False)
    values = {"a": "tab\there", "b": "cr\rlf\nend", "c": 'quote"', "d": "back\\slash",
              "e": "k=v", "f": "caf\u00e9", "g": "bell\x07", "h": "plain-token/1.0:x"}  # fmt: skip
    record = logging.LogRecord("corsproxy.access", logging.INFO, __file__, 1, "GET %s 200",
                               ("/x\r\nforged",), None)  # fmt: skip
    record.fields = values
    line = formatter.format(record)
    assert "\n" not in line and "\r" not in line and "\t" not in line and "\x07" not in line
    assert line.isascii()
    assert " GET /x\\r\\nforged 200 " in line
    assert text_fields(line) == values
    assert "h=plain-token/1.0:x" in line  # tokens stay bare
    json_line = logs._Formatter(json_lines=True).format(record)
    assert {k: json.loads(json_line)[k] for k in values} == values  # JSON stays JSON


async def test_reload_refuses_fifos_devices_and_alias_bombs_while_serving(
    recorder: Recorder, tmp_path: Path
) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(f"upstream: {recorder.url}\ncors:\n  allow_origins: [{APP}]\n")
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)  # nobody writes: reading it the ordinary way waits forever
    levels = ["a0: &a0 [" + ", ".join(["x"] * 10) + "]"]
    levels += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(
        "\n".join(levels) + f"\nupstream: {recorder.url}\ncors: {{allow_origins: *a8}}\n"
    )
    config = tmp_path / "config.yaml"
    config.symlink_to(good)

    def point_at(target: Path) -> None:
        config.unlink()
        config.symlink_to(target)

    async with serving("--config", str(config)) as (proc, url):
        async with aiohttp.ClientSession() as client:

            async def still_serving() -> None:
                timeout = aiohttp.ClientTimeout(total=5)
                headers = {"Origin": APP}
                async with client.get(f"{url}/x", headers=headers, timeout=timeout) as r:
                    assert r.status == 200
                    assert r.headers["Access-Control-Allow-Origin"] == APP  # the old config

            for target in (fifo, Path("/dev/zero"), bomb):
                point_at(target)
                proc.send_signal(signal.SIGHUP)
                await asyncio.sleep(0.3)
                await still_serving()
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.to_thread(proc.communicate, timeout=10)
    messages = [json.loads(line)["message"] for line in err.splitlines() if line.startswith("{")]
    assert f"reload: {config}: cannot read the config: it is a FIFO, not a regular file" in messages
    assert (
        f"reload: {config}: cannot read the config: it is a device, not a regular file" in messages
    )
    assert any(
        m.startswith(f"reload: {config}:1: YAML aliases expand the config to ") for m in messages
    )
    assert sum("reload failed: keeping the running config" in m for m in messages) == 3


async def test_a_slow_reload_runs_off_the_event_loop(recorder: Recorder, tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(f"upstream: {recorder.url}\ncors:\n  allow_origins: [{APP}]\n")
    async with serving("--config", str(config)) as (proc, url):
        # Just under the size cap: compiling it takes a second or more.
        origins = "".join(f"    - https://app{i}.example.com\n" for i in range(25000))
        config.write_text(f"upstream: {recorder.url}\ncors:\n  allow_origins:\n{origins}")
        async with aiohttp.ClientSession() as client:
            proc.send_signal(signal.SIGHUP)
            await asyncio.sleep(0.05)
            async with client.get(f"{url}/during-reload") as r:
                assert r.status == 200
            for _ in range(100):  # the new config arrives
                async with client.get(
                    f"{url}/x", headers={"Origin": "https://app7.example.com"}
                ) as r:
                    if "Access-Control-Allow-Origin" in r.headers:
                        break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError("the reload never completed")
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.to_thread(proc.communicate, timeout=10)
    messages = [json.loads(line)["message"] for line in err.splitlines() if line.startswith("{")]
    answered = messages.index("GET /during-reload 200")
    assert answered < messages.index(f"config reloaded from {config}")  # served meanwhile


async def test_trace_is_refused_and_max_forwards_honoured(recorder: Recorder) -> None:
    doc = {"upstream": recorder.url, "cors": {"allow_origins": [APP], "allow_methods": ["PUT"]}}
    async with running_proxy(doc) as url:

        async def send(method: str, *headers: str) -> tuple[list[str], bytes]:
            lines = "".join(f"{h}\r\n" for h in headers)
            request = f"{method} /x HTTP/1.1\r\nHost: h\r\n{lines}Connection: close\r\n\r\n"
            return head_and_body(await raw_exchange(url, request.encode()))

        for method in ("TRACE",):  # aiohttp refuses TRACK and `trace` itself (400)
            head, body = await send(method, "Cookie: session=secret", "Max-Forwards: 5")
            assert head[0] == "HTTP/1.1 405 Method Not Allowed", head
            assert header_values(head, "Allow") == ["GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"]
            assert b"secret" not in body
        assert recorder.seen == []  # never forwarded

        head, body = await send("OPTIONS", "Max-Forwards: 0")  # this hop is the last one
        assert head[0] == "HTTP/1.1 200 OK" and body == b""
        assert header_values(head, "Allow") == ["GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"]
        for bad in (
            ("Max-Forwards: -1",),
            ("Max-Forwards: 1x",),
            ("Max-Forwards: 1", "Max-Forwards: 2"),
        ):
            head, _ = await send("OPTIONS", *bad)
            assert head[0].endswith(" 400 Bad Request"), (bad, head)  # aiohttp: duplicates
        assert recorder.seen == []

        head, _ = await send("OPTIONS", "Max-Forwards: 3")
        assert head[0] == "HTTP/1.1 200 OK"
        assert recorder.seen[-1]["method"] == "OPTIONS"
        assert upstream_values(recorder, "Max-Forwards") == ["2"]  # decremented
        head, _ = await send("OPTIONS", "Max-Forwards: 0", f"Origin: {APP}",
                             "Access-Control-Request-Method: PUT")  # fmt: skip
        assert head[0] == "HTTP/1.1 204 No Content"  # a preflight: the CORS answer
        assert header_values(head, "Access-Control-Allow-Origin") == [APP]
        forwarded = len(recorder.seen)
        for empty in (("Origin:", "Access-Control-Request-Method: PUT"),
                      (f"Origin: {APP}", "Access-Control-Request-Method:")):  # fmt: skip
            # Not a preflight to the CORS decision (empty values), so not to Max-Forwards either.
            head, _ = await send("OPTIONS", "Max-Forwards: 0", *empty)
            assert head[0] == "HTTP/1.1 200 OK", (empty, head)
            assert header_values(head, "Allow") == ["GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"]
        assert len(recorder.seen) == forwarded  # answered here, never forwarded with 0


async def test_sec_websocket_origin_never_reaches_the_upstream(recorder: Recorder) -> None:
    async with running_proxy({"upstream": recorder.url}) as url:
        request = (
            "GET /x HTTP/1.1\r\nHost: h\r\nSec-WebSocket-Origin: https://trusted.example\r\n"
            "Connection: close\r\n\r\n"
        )
        head, _ = head_and_body(await raw_exchange(url, request.encode()))
        assert head[0] == "HTTP/1.1 200 OK"
    assert upstream_values(recorder, "Sec-WebSocket-Origin") == []


def upstream_values(recorder: Recorder, name: str) -> list[str]:
    return [v for n, v in recorder.seen[-1]["headers"] if n.lower() == name.lower()]
