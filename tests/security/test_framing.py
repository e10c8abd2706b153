"""Framing with old and odd clients (issue 11, section 4), against a real corsproxy process
fed raw bytes: HTTP/1.0 keep-alive clients, Transfer-Encoding other than a lone `chunked`,
request heads over `limits.max_header_size`, and the answers corsproxy writes itself (CORS
for an allowed origin, none for a refused one, never a `Server` header naming versions).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.faults.harness import APP, POLICY, Proxy, proxy
from tests.net import (
    Recorder,
    head_and_body,
    header_values,
    raw_upstream,
    replies,
    running_app,
    scripted_upstream,
)

EVIL = "https://evil.example"
# Far below the idle timeout below: a client that gets its answer within this did not wait
# for the proxy to give up on an idle connection.
BOUND = 5.0
IDLE = "60s"


@dataclass
class Answer:
    raw: bytes
    closed: bool  # the proxy closed the connection within BOUND

    @property
    def lines(self) -> list[str]:
        return head_and_body(self.raw)[0]

    @property
    def status_line(self) -> str:
        return self.lines[0]

    @property
    def status(self) -> int:
        line = self.status_line
        return int(line.split()[1]) if line.startswith("HTTP/1.") else 0

    @property
    def body(self) -> bytes:
        return head_and_body(self.raw)[1]

    def values(self, name: str) -> list[str]:
        return header_values(self.lines, name)

    @property
    def cors(self) -> list[str]:
        return [h for h in self.lines[1:] if h.lower().startswith("access-control-")]

    @property
    def answers(self) -> int:
        """Status lines on the wire: one request, one answer, nothing after it."""
        return len(re.findall(rb"(?:^|\r\n)HTTP/1\.[01] \d{3} ", self.raw))


async def converse(url: str, data: bytes, bound: float = BOUND) -> Answer:
    """Send `data`, read until the proxy closes (or `bound` passes)."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    chunks: list[bytes] = []
    closed = False
    try:
        writer.write(data)
        await writer.drain()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(bound):
                try:
                    while chunk := await reader.read(65536):
                        chunks.append(chunk)
                except ConnectionResetError:
                    pass
                closed = True
    finally:
        writer.close()
    return Answer(b"".join(chunks), closed)


def req(line: str, *fields: str, body: bytes = b"") -> bytes:
    return (line + "\r\n" + "".join(f"{f}\r\n" for f in fields) + "\r\n").encode() + body


def assert_own(answer: Answer, origin: str | None) -> None:
    """An answer corsproxy wrote itself: CORS exactly when the origin is allowed, `nosniff`,
    and no `Server` header (aiohttp's names the Python and aiohttp versions)."""
    assert answer.values("Server") == [], answer.raw[:400]
    assert answer.values("X-Content-Type-Options") == ["nosniff"], answer.raw[:400]
    if origin == APP:
        assert answer.values("Access-Control-Allow-Origin") == [APP], answer.raw[:400]
        assert answer.values("Access-Control-Allow-Credentials") == ["true"]
        assert "Origin" in ",".join(answer.values("Vary"))
    else:
        assert answer.cors == [], answer.raw[:400]


@contextlib.asynccontextmanager
async def recorded(tmp_path: Path, **doc: Any) -> AsyncIterator[tuple[Proxy, Recorder]]:
    """A corsproxy process in front of a recording upstream, under POLICY (APP allowed, with
    credentials), with a route per kind of self-made answer."""
    upstream = Recorder()
    async with running_app(upstream.app()) as url:
        upstream.url = url
        config: dict[str, Any] = {
            "upstream": url,
            "cors": POLICY,
            "limits": {"max_body_size": "1KiB", "idle_timeout": IDLE},
            "routes": [
                {"path_prefix": "/down", "upstream": "http://127.0.0.1:1"},
                {"path_prefix": "/slow", "timeouts": {"read": "1s"}},
                {"path_prefix": "/closed", "cors": False},
            ],
            **doc,
        }
        async with proxy(tmp_path, config) as px:
            yield px, upstream


# --- HTTP/1.0 keep-alive and answers without a length ---------------------------------------

UPSTREAM_WITHOUT_LENGTH = {
    # The upstream keeps its connection open after the last chunk: the close the client
    # needs can only come from the proxy.
    "chunked": replies(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        then_close=False,
    ),
    "close-delimited": replies(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nhello"),
}


@pytest.mark.parametrize("script", UPSTREAM_WITHOUT_LENGTH.values(), ids=UPSTREAM_WITHOUT_LENGTH)
async def test_http10_keep_alive_client_sees_the_close_right_after_a_body_without_length(
    tmp_path: Path, script: Any
) -> None:
    async with (
        raw_upstream(script) as up,
        proxy(tmp_path, {"upstream": up, "cors": POLICY, "limits": {"idle_timeout": IDLE}}) as px,
    ):
        answer = await converse(
            px.url,
            req("GET /x HTTP/1.0", "Host: p", "Connection: keep-alive", f"Origin: {APP}"),
        )
    # Without a length, the end of the body is the close: it comes at once, not after the
    # idle timeout (60 s here), and the proxy does not promise keep-alive.
    assert answer.closed, answer.raw[:300]
    assert answer.status == 200 and answer.body == b"hello", answer.raw[:300]
    assert answer.values("Connection") in ([], ["close"])
    assert answer.values("Access-Control-Allow-Origin") == [APP]


async def test_http10_keep_alive_stays_open_when_the_answer_has_a_length(tmp_path: Path) -> None:
    async with recorded(tmp_path) as (px, upstream):
        host, port = px.url.removeprefix("http://").rsplit(":", 1)
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            for n in range(2):
                writer.write(req(f"GET /x{n} HTTP/1.0", "Host: p", "Connection: keep-alive"))
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), BOUND)
                lines = head.decode("latin-1").split("\r\n")
                assert lines[0].startswith("HTTP/1.0 200"), head
                assert header_values(lines, "Connection") == ["keep-alive"]
                length = int(header_values(lines, "Content-Length")[0])
                await asyncio.wait_for(reader.readexactly(length), BOUND)
        finally:
            writer.close()
        assert [seen["raw_path"] for seen in upstream.seen] == ["/x0", "/x1"]


# --- Transfer-Encoding ------------------------------------------------------------------------

PIPELINED = req("GET /smuggled HTTP/1.1", "Host: p")


async def test_http10_with_transfer_encoding_is_400_and_the_connection_closes(
    tmp_path: Path,
) -> None:
    async with recorded(tmp_path) as (px, upstream):
        answer = await converse(
            px.url,
            req("POST /api/r HTTP/1.0", "Host: p", "Connection: keep-alive", f"Origin: {APP}",
                "Transfer-Encoding: chunked", body=b"3\r\nabc\r\n0\r\n\r\n") + PIPELINED,
        )  # fmt: skip
        assert upstream.seen == []  # neither the request nor the one pipelined behind it
    assert answer.status == 400 and answer.closed and answer.answers == 1, answer.raw[:300]
    assert_own(answer, APP)


NOT_IMPLEMENTED = ["gzip, chunked", "identity, chunked", ",chunked", "deflate, chunked",
                   "x-custom, chunked", "chunked;q=1, chunked"]  # fmt: skip
# RFC 9112 6.3: when `chunked` is not the final coding, the body's length cannot be known:
# 400 and close (aiohttp's parser refuses these before corsproxy sees them). A malformed
# list (`chunked,`, parameters on `chunked`) is a 400 for the same reason.
MALFORMED = ["chunked, identity", "gzip", "identity", "chunked, chunked", "chunked,",
             "chunked;q=1", ""]  # fmt: skip


@pytest.mark.parametrize("coding", NOT_IMPLEMENTED)
async def test_transfer_codings_before_chunked_are_501_and_never_forwarded(
    tmp_path: Path, coding: str
) -> None:
    async with recorded(tmp_path) as (px, upstream):
        answer = await converse(
            px.url,
            req("POST /api/r HTTP/1.1", "Host: p", f"Origin: {APP}",
                f"Transfer-Encoding: {coding}", body=b"3\r\nabc\r\n0\r\n\r\n") + PIPELINED,
        )  # fmt: skip
        assert upstream.seen == []
    assert answer.status == 501 and answer.closed and answer.answers == 1, answer.raw[:300]
    assert answer.status_line.startswith("HTTP/1.1 ")
    assert_own(answer, APP)


@pytest.mark.parametrize("coding", MALFORMED)
async def test_transfer_codings_not_ending_in_chunked_are_400_and_never_forwarded(
    tmp_path: Path, coding: str
) -> None:
    async with recorded(tmp_path) as (px, upstream):
        answer = await converse(
            px.url,
            req("POST /api/r HTTP/1.1", "Host: p", f"Origin: {APP}",
                f"Transfer-Encoding: {coding}", body=b"3\r\nabc\r\n0\r\n\r\n") + PIPELINED,
        )  # fmt: skip
        assert upstream.seen == []
    assert answer.status == 400 and answer.closed and answer.answers == 1, answer.raw[:300]
    assert answer.status_line.startswith("HTTP/1.1 ")
    assert_own(answer, None)  # the parser refused it: no header, so no CORS, was read
    assert b"chunked" not in answer.body  # the offending bytes are not echoed


@pytest.mark.parametrize("coding", ["chunked", "Chunked", " chunked "])
async def test_a_lone_chunked_is_forwarded(tmp_path: Path, coding: str) -> None:
    async with recorded(tmp_path) as (px, upstream):
        answer = await converse(
            px.url,
            req("POST /api/r HTTP/1.1", "Host: p", "Connection: close",
                f"Transfer-Encoding: {coding}", body=b"3\r\nabc\r\n0\r\n\r\n"),
        )  # fmt: skip
        assert answer.status == 200, answer.raw[:300]
        assert [seen["body"] for seen in upstream.seen] == [b"abc"]


# --- request heads over the limit ----------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "origin", "with_cors"),
    [("/api/r", APP, True), ("/api/r", EVIL, False), ("/closed/r", APP, False)],
)
async def test_a_header_over_max_header_size_is_431_with_the_routes_cors(
    tmp_path: Path, path: str, origin: str, with_cors: bool
) -> None:
    async with recorded(tmp_path) as (px, upstream):
        answer = await converse(
            px.url,
            req(f"GET {path} HTTP/1.1", "Host: p", f"Origin: {origin}",
                "X-Big: " + "a" * 9000) + PIPELINED,
        )  # fmt: skip
        assert upstream.seen == []
    assert answer.status == 431 and answer.closed and answer.answers == 1, answer.raw[:300]
    assert answer.status_line.startswith("HTTP/1.1 431")
    assert_own(answer, APP if with_cors else None)
    assert b"aaaa" not in answer.raw


HEADS_OVER_THE_PARSERS_CAP = {
    "field": req("GET /api/r HTTP/1.1", "Host: p", f"Origin: {APP}", "X-Big: " + "a" * 40_000),
    "target": req("GET /api/" + "a" * 40_000 + " HTTP/1.1", "Host: p", f"Origin: {APP}"),
    "many-fields": req("GET /api/r HTTP/1.1", "Host: p", f"Origin: {APP}",
                       *[f"X-H{i}: {i}" for i in range(200)]),
}  # fmt: skip


@pytest.mark.parametrize(
    "data", HEADS_OVER_THE_PARSERS_CAP.values(), ids=HEADS_OVER_THE_PARSERS_CAP
)
async def test_a_head_the_parser_refuses_for_its_size_is_431(tmp_path: Path, data: bytes) -> None:
    async with recorded(tmp_path) as (px, upstream):
        answer = await converse(px.url, data + PIPELINED)
        assert upstream.seen == []
    # The parser stopped before the headers were known: no CORS is possible, but the answer
    # is still corsproxy's own (HTTP/1.1, nosniff, no Server, nothing echoed), then close.
    assert answer.status_line.startswith("HTTP/1.1 431"), answer.raw[:300]
    assert answer.closed and answer.answers == 1
    assert_own(answer, None)
    assert b"aaaa" not in answer.raw and b"X-H1" not in answer.raw


async def test_a_long_target_over_max_header_size_is_431(tmp_path: Path) -> None:
    async with recorded(tmp_path) as (px, upstream):
        answer = await converse(
            px.url, req("GET /api/" + "a" * 9000 + " HTTP/1.1", "Host: p", f"Origin: {APP}")
        )
        assert upstream.seen == []
    assert answer.status == 431 and answer.closed, answer.raw[:300]
    assert_own(answer, APP)


async def test_max_header_size_is_configurable(tmp_path: Path) -> None:
    # A raw upstream: aiohttp's (the recording one) would itself refuse a 12 KiB header.
    async with scripted_upstream(replies(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")) as up:
        doc = {"upstream": up.url, "cors": POLICY, "limits": {"max_header_size": 16384}}
        async with proxy(tmp_path, doc) as px:
            big = "b" * 12 * 1024
            answer = await converse(
                px.url,
                req("GET /api/r HTTP/1.1", "Host: p", "Connection: close", f"X-Big: {big}"),
            )
            assert answer.status == 200, answer.raw[:300]
            assert f"X-Big: {big}\r\n".encode() in up.heads[-1]
            over = await converse(
                px.url,
                req("GET /api/r HTTP/1.1", "Host: p", f"Origin: {APP}", "X-Big: " + "b" * 17_000),
            )
            assert over.status == 431 and over.closed, over.raw[:300]
            assert_own(over, APP)
            assert len(up.heads) == 1


# --- every answer corsproxy writes itself ------------------------------------------------------

OWN_ANSWERS = {
    "400-bad-path": (400, req("GET /api/bar% HTTP/1.1", "Host: p", "Connection: close")),
    "400-bad-host": (400, req("GET /api/r HTTP/1.1", "Host: x:99999", "Connection: close")),
    "408-stalled-body": (408, req("POST /slow HTTP/1.1", "Host: p", "Content-Length: 100",
                                  body=b"ab")),
    "413-body-too-large": (413, req("POST /api/r HTTP/1.1", "Host: p", "Connection: close",
                                    "Content-Length: 2000", body=b"x" * 2000)),
    "431-head-too-large": (431, req("GET /api/r HTTP/1.1", "Host: p", "X-Big: " + "a" * 9000)),
    "501-transfer-coding": (501, req("POST /api/r HTTP/1.1", "Host: p",
                                     "Transfer-Encoding: gzip, chunked", body=b"0\r\n\r\n")),
    "502-upstream-down": (502, req("GET /down/x HTTP/1.1", "Host: p", "Connection: close")),
    "504-upstream-silent": (504, req("GET /slow?s=5 HTTP/1.1", "Host: p", "Connection: close")),
    # Answered before routing (an outside review found these without CORS, or with Server).
    "405-trace": (405, req("TRACE /api/r HTTP/1.1", "Host: p", "Connection: close")),
    "400-bad-max-forwards": (400, req("OPTIONS /api/r HTTP/1.1", "Host: p", "Connection: close",
                                      "Max-Forwards: x")),
    "200-max-forwards-0": (200, req("OPTIONS /api/r HTTP/1.1", "Host: p", "Connection: close",
                                    "Max-Forwards: 0")),
    "505-version": (505, req("GET /api/r HTTP/2.0", "Host: p", "Connection: close")),
}  # fmt: skip


def with_origin(data: bytes, origin: str) -> bytes:
    line, _, rest = data.partition(b"\r\n")
    return line + f"\r\nOrigin: {origin}".encode() + b"\r\n" + rest


@pytest.mark.parametrize("origin", [APP, EVIL])
async def test_every_answer_corsproxy_writes_carries_cors_for_an_allowed_origin_only(
    tmp_path: Path, origin: str
) -> None:
    async with recorded(tmp_path) as (px, _):
        for name, (expected, data) in OWN_ANSWERS.items():
            # A stalled body's connection closes only after aiohttp's lingering read (10 s).
            bound = 4 if expected == 408 else 8
            answer = await converse(px.url, with_origin(data, origin), bound=bound)
            assert answer.status == expected, (name, answer.raw[:300])
            # Closed after the answer: asked for, or the request was cut off (408).
            assert answer.closed or expected == 408, name
            assert answer.values("Connection") == ["close"], name
            assert_own(answer, origin)
        # A refused preflight is answered here too, and a relayed answer keeps the upstream's
        # own Server header (the recording upstream is aiohttp, which sends one).
        preflight = await converse(
            px.url,
            req("OPTIONS /api/r HTTP/1.1", "Host: p", "Connection: close", f"Origin: {origin}",
                "Access-Control-Request-Method: POST"),
        )  # fmt: skip
        assert preflight.status == (204 if origin == APP else 403)
        assert preflight.values("Server") == []
        relayed = await converse(px.url, with_origin(req("GET /api/r HTTP/1.1", "Host: p",
                                                         "Connection: close"), origin))  # fmt: skip
        assert relayed.status == 200
        assert relayed.values("Server") != []


@pytest.mark.parametrize("origin", [APP, EVIL])
async def test_404_without_a_route_carries_the_default_policys_cors(
    tmp_path: Path, origin: str
) -> None:
    upstream = Recorder()
    async with running_app(upstream.app()) as url:
        doc = {"cors": POLICY, "routes": [{"path_prefix": "/only", "upstream": url}]}
        async with proxy(tmp_path, doc) as px:
            answer = await converse(
                px.url, req("GET /elsewhere HTTP/1.1", "Host: p", "Connection: close",
                            f"Origin: {origin}"),
            )  # fmt: skip
    assert answer.status == 404, answer.raw[:300]
    assert_own(answer, origin)


async def test_the_parsers_own_400_is_corsproxys_answer(tmp_path: Path) -> None:
    async with recorded(tmp_path) as (px, upstream):
        answer = await converse(px.url, b"GET /api/r HTTP/1.1\nHost: p\nX-Evil: <script>\n\n")
        assert upstream.seen == []
    assert answer.status_line.startswith("HTTP/1.1 400"), answer.raw[:300]
    assert answer.closed
    assert_own(answer, None)
    assert b"<script>" not in answer.raw
