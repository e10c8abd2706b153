"""Oracle for the preflight fast path (http/preflight_answer.py, issue 16): generated
preflights are sent to a real proxy twice on a raw socket, once answered from the head
built per memoized decision and once the straightforward way (`web.Response` with the
decision's headers, the client's view resolved eagerly), and the answers must be the same
bytes; so must their access lines (at debug, every field) and what they add to /metrics.
Only `Date` (the clock) and a generated `X-Request-Id` (a counter) may differ.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from corsproxy.http import preflight_answer
from corsproxy.http.server import serve
from corsproxy.ops.logs import ACCESS
from tests.helpers import config as compile_config
from tests.net import TIMEOUT, free_port

ALLOWED = "https://app.example.com"


class _Proxy:
    """A proxy (with an admin listener) and its upstream, on a loop in a thread of their
    own, so the generated requests run on blocking sockets, one at a time."""

    def __init__(self) -> None:
        self.port = free_port()
        self.admin = free_port()
        self.up_port = free_port()
        self.loop = asyncio.new_event_loop()
        self.stop: asyncio.Event | None = None
        self.ready = threading.Event()
        self.failed: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def config(self) -> dict[str, Any]:
        policy = {
            "allow_origins": [ALLOWED, "https://*.example.com"],
            "allow_methods": ["GET", "HEAD", "POST", "PUT"],
            "allow_headers": ["Content-Type", "X-Token"],
            "max_age": 600,
        }
        return {
            "listen": f"127.0.0.1:{self.port}",
            "admin": {"listen": f"127.0.0.1:{self.admin}"},
            "upstream": f"http://127.0.0.1:{self.up_port}",
            "trusted_proxies": ["127.0.0.1"],
            "cors": policy,
            "routes": [
                {"path_prefix": "/wild", "cors": {"allow_origins": ["*"], "max_age": 5}},
                {
                    "path_prefix": "/creds",
                    "cors": {
                        **policy,
                        "allow_credentials": True,
                        "allow_headers": ["*"],
                        "allow_methods": ["*"],
                    },
                },
                {"path_prefix": "/pna", "cors": {**policy, "allow_private_network": True}},
                {"path_prefix": "/reject", "cors": {**policy, "on_disallowed": "reject"}},
                {"path_prefix": "/report", "cors": {**policy, "mode": "report-only"}},
                {"path_prefix": "/off", "cors": False},
            ],
        }

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._main())
        except BaseException as exc:
            self.failed = exc
            self.ready.set()

    async def _main(self) -> None:
        async def upstream(request: web.BaseRequest) -> web.StreamResponse:
            return web.Response(status=200, text="from upstream", headers={"X-Up": "1"})

        up = web.ServerRunner(web.Server(upstream, access_log=None))
        await up.setup()
        await web.TCPSite(up, "127.0.0.1", self.up_port).start()
        self.stop = asyncio.Event()
        config = compile_config(self.config())
        try:
            await serve(
                config,
                stop=self.stop,
                ready=lambda _: self.ready.set(),
                signals=False,
                shutdown_timeout=2,
            )
        finally:
            await up.cleanup()

    def start(self) -> None:
        self.thread.start()
        if not self.ready.wait(TIMEOUT) or self.failed is not None:
            raise RuntimeError(f"the proxy did not start: {self.failed!r}")

    def close(self) -> None:
        if self.stop is not None:
            self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(TIMEOUT)


class _AccessLines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[tuple[int, str, dict[str, Any]]] = []

    def emit(self, record: logging.LogRecord) -> None:
        fields = dict(getattr(record, "fields", {}))
        fields.pop("duration_ms", None)
        if fields.get("request_id") and re.fullmatch(r"[0-9a-f]{32}", fields["request_id"]):
            fields["request_id"] = "generated"
        self.lines.append((record.levelno, record.getMessage(), fields))


@pytest.fixture(scope="module")
def proxy() -> Iterator[tuple[_Proxy, _AccessLines]]:
    server = _Proxy()
    handler = _AccessLines()
    level = ACCESS.level
    ACCESS.setLevel(logging.DEBUG)
    ACCESS.addHandler(handler)
    try:
        server.start()
        yield server, handler
    finally:
        ACCESS.removeHandler(handler)
        ACCESS.setLevel(level)
        server.close()
        preflight_answer.ENABLED = True


def _exchange(port: int, data: bytes) -> bytes:
    """One request on a new connection: the answer's head and its Content-Length body."""
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        sock.sendall(data)
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = sock.recv(65536)
            if not chunk:
                return buf
            buf += chunk
        head, _, body = buf.partition(b"\r\n\r\n")
        length = re.search(rb"\r\nContent-Length: (\d+)", head)
        want = int(length.group(1)) if length else 0
        while len(body) < want:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
        return head + b"\r\n\r\n" + body


def _masked(answer: bytes) -> bytes:
    answer = re.sub(rb"\r\nDate: [^\r]*", b"\r\nDate: -", answer)
    return re.sub(rb"\r\nX-Request-Id: [0-9a-f]{32}\r\n", b"\r\nX-Request-Id: -\r\n", answer)


_COUNTED = ("corsproxy_requests_total", "corsproxy_cors_decisions_total")


def _counters(admin: int) -> dict[str, float]:
    answer = _exchange(admin, b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    out = {}
    for line in answer.decode().splitlines():
        if line.startswith(_COUNTED):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def _delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: v - before.get(k, 0.0) for k, v in after.items() if v != before.get(k, 0.0)}


_ORIGINS = st.sampled_from(
    [
        [ALLOWED],
        ["https://api.example.com"],
        ["https://evil.example.org"],
        ["null"],
        [ALLOWED + "/"],
        ["htp:/x"],
        [""],
        [ALLOWED, ALLOWED],
        [],
    ]
)
_METHODS = st.sampled_from(
    [
        ["PUT"],
        ["GET"],
        ["POST"],
        ["DELETE"],
        ["put"],
        ["CONNECT"],
        [""],
        ["A B"],
        ["PUT", "PUT"],
        [],
    ]
)
_NAMES = st.lists(
    st.sampled_from(["content-type", "X-Token", "x-other", "authorization", "Accept", "bad name"]),
    max_size=3,
)
_HEADER_LISTS = st.one_of(
    st.just([]),
    _NAMES.map(lambda names: [",".join(names)]),
    _NAMES.map(lambda names: [", ".join(names)]),
    st.tuples(_NAMES, _NAMES).map(lambda two: [",".join(two[0]), ",".join(two[1])]),
)
_PATHS = st.sampled_from(
    ["/small.json", "/", "/wild/x", "/creds/a?b=c", "/pna", "/reject/1", "/report/r", "/off/o",
     "/%2e%2e/x", "/a//b", "/CREDS/x", "/small.json?q=1", "/x/" + "a" * 600]
)  # fmt: skip


@st.composite
def preflights(draw: st.DrawFn) -> bytes:
    version = draw(st.sampled_from(["1.1", "1.1", "1.0"]))
    lines = [f"OPTIONS {draw(_PATHS)} HTTP/{version}", "Host: proxy.test"]
    lines += [f"Origin: {o}" for o in draw(_ORIGINS)]
    lines += [f"Access-Control-Request-Method: {m}" for m in draw(_METHODS)]
    lines += [f"Access-Control-Request-Headers: {h}" for h in draw(_HEADER_LISTS)]
    pna = draw(st.sampled_from([None, "true", "false"]))
    if pna is not None:
        lines.append(f"Access-Control-Request-Private-Network: {pna}")
    connection = draw(st.sampled_from([None, "close", "keep-alive"]))
    if connection is not None:
        lines.append(f"Connection: {connection}")
    request_id = draw(st.sampled_from([None, "abc-123", "not valid!"]))
    if request_id is not None:
        lines.append(f"X-Request-Id: {request_id}")
    if draw(st.booleans()):
        lines.append("X-Forwarded-For: 203.0.113.7")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _answer(server: _Proxy, handler: _AccessLines, fast: bool, data: bytes) -> tuple[Any, ...]:
    preflight_answer.ENABLED = fast
    before = _counters(server.admin)
    handler.lines.clear()
    answer = _masked(_exchange(server.port, data))
    line = handler.lines[:]  # written before the answer is sent
    return answer, line, _delta(before, _counters(server.admin))


@settings(
    max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=preflights())
def test_fast_preflights_are_the_straightforward_answers(
    proxy: tuple[_Proxy, _AccessLines], data: bytes
) -> None:
    server, handler = proxy
    try:
        fast = _answer(server, handler, True, data)
        slow = _answer(server, handler, False, data)
    finally:
        preflight_answer.ENABLED = True
    assert fast[0] == slow[0], data
    assert fast[1] == slow[1], data
    assert fast[2] == slow[2], data


def test_the_fast_path_answers_the_bench_preflight(proxy: tuple[_Proxy, _AccessLines]) -> None:
    """The oracle above means something only if the fast path is taken: the bench's
    preflight is answered from a prepared head (its decision is cached there)."""
    server, _ = proxy
    preflight_answer._cache.clear()
    data = (
        b"OPTIONS /small.json HTTP/1.1\r\nHost: x\r\nOrigin: https://app.example.com\r\n"
        b"Access-Control-Request-Method: PUT\r\n"
        b"Access-Control-Request-Headers: content-type,x-token\r\n\r\n"
    )
    answer = _exchange(server.port, data)
    assert answer.startswith(b"HTTP/1.1 204 No Content\r\n")
    assert any(a is not None for _, a in preflight_answer._cache.values())
