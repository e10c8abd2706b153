"""Errors, limits and faults: the proxy answers cleanly and never leaks."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import aiohttp
import pytest

from corsproxy.http import headers as hygiene
from tests.net import (
    Recorder,
    free_port,
    head_and_body,
    header_values,
    open_fds,
    raw_exchange,
    raw_upstream,
    replies,
    running_proxy,
)

APP = "https://app.example.com"
POLICY = {"allow_origins": [APP], "allow_credentials": True}


@pytest.fixture
async def upstream(recorder: Recorder) -> Recorder:
    return recorder


async def test_unreachable_upstream_is_502_with_cors_for_allowed_origins() -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    async with running_proxy({"upstream": dead, "cors": POLICY}) as proxy:
        async with aiohttp.ClientSession() as client:
            async with client.get(f"{proxy}/x", headers={"Origin": APP}) as response:
                assert response.status == 502
                assert response.headers["Access-Control-Allow-Origin"] == APP
                assert response.headers["Access-Control-Allow-Credentials"] == "true"
                assert response.headers["Content-Type"].startswith("text/plain")
                assert "cannot be reached" in await response.text()
            async with client.get(f"{proxy}/x", headers={"Origin": "https://evil.example"}) as r:
                assert r.status == 502
                assert "Access-Control-Allow-Origin" not in r.headers


async def test_slow_upstream_is_504(upstream: Any) -> None:
    doc = {"upstream": upstream.url, "cors": POLICY, "timeouts": {"read": "300ms"}}
    async with running_proxy(doc) as proxy, aiohttp.ClientSession() as client:
        async with client.get(f"{proxy}/slow?s=3", headers={"Origin": APP}) as response:
            assert response.status == 504
            assert response.headers["Access-Control-Allow-Origin"] == APP


async def test_declared_body_over_the_limit_is_413_before_the_upstream(upstream: Any) -> None:
    doc = {"upstream": upstream.url, "cors": POLICY, "limits": {"max_body_size": "1KiB"}}
    async with running_proxy(doc) as proxy:
        response = await raw_exchange(
            proxy,
            b"POST /upload HTTP/1.1\r\nHost: p\r\nOrigin: "
            + APP.encode()
            + b"\r\nContent-Length: 2048\r\nExpect: 100-continue\r\n\r\n",
            wait=2,
        )
    assert response.startswith(b"HTTP/1.1 413")  # and no "100 Continue" before it
    assert header_values(head_and_body(response)[0], "Access-Control-Allow-Origin") == [APP]
    assert upstream.seen == []


async def test_streamed_body_over_the_limit_is_413(upstream: Any) -> None:
    doc = {"upstream": upstream.url, "limits": {"max_body_size": "64KiB"}}
    chunk = b"x" * 16384
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(8)) + b"0\r\n\r\n"
    async with running_proxy(doc) as proxy:
        response = await raw_exchange(
            proxy,
            b"POST /upload HTTP/1.1\r\nHost: p\r\nTransfer-Encoding: chunked\r\n\r\n" + body,
            wait=3,
        )
    assert response.startswith(b"HTTP/1.1 413"), response[:200]
    assert all(s.get("size", 0) <= 64 * 1024 for s in upstream.seen)


async def test_expect_100_continue_is_answered_once_checks_pass(upstream: Any) -> None:
    async with running_proxy({"upstream": upstream.url}) as proxy:
        host, port = proxy.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(
            b"POST /upload HTTP/1.1\r\nHost: p\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
        )
        await writer.drain()
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 3)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(b"hello")
        final = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 3)
        assert final.startswith(b"HTTP/1.1 200")
        writer.close()
    assert "expect" not in {n.lower() for n, _ in upstream.seen[-1]["headers"]}


async def test_stalled_request_body_times_out(upstream: Any) -> None:
    doc = {"upstream": upstream.url, "timeouts": {"read": "500ms"}}
    async with running_proxy(doc) as proxy:
        response = await raw_exchange(
            proxy, b"POST /upload HTTP/1.1\r\nHost: p\r\nContent-Length: 100\r\n\r\nab", wait=4
        )
    assert response.startswith(b"HTTP/1.1 408"), response[:100]


MALFORMED = {
    "garbage-status-line": b"HTTX/9 OK\r\n\r\n",
    "status-999": b"HTTP/1.1 999 Weird\r\nContent-Length: 0\r\n\r\n",
    "empty-reply": b"",
    "cl-and-te": (
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    ),
    "duplicate-cl": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nab",
    "negative-cl": b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
}


@pytest.mark.parametrize("reply", MALFORMED.values(), ids=MALFORMED.keys())
async def test_malformed_upstream_answers_become_a_clean_502(reply: bytes) -> None:
    async with (
        raw_upstream(replies(reply)) as up,
        running_proxy({"upstream": up, "cors": POLICY}) as proxy,
    ):
        response = await raw_exchange(
            proxy, f"GET /x HTTP/1.1\r\nHost: p\r\nOrigin: {APP}\r\n\r\n".encode(), wait=3
        )
    assert response.startswith(b"HTTP/1.1 502"), response
    assert header_values(head_and_body(response)[0], "Access-Control-Allow-Origin") == [APP]


@pytest.mark.parametrize(
    "bad_header",
    [b"X-Bad: a\x01b", b"X-Bad : 2", b"X(Bad): 1", b"X-Bad: \x7f"],
    ids=["control-byte", "space-before-colon", "non-token-name", "del"],
)
async def test_invalid_upstream_headers_are_dropped(bad_header: bytes) -> None:
    reply = b"HTTP/1.1 200 OK\r\n" + bad_header + b"\r\nX-Good: 1\r\nContent-Length: 2\r\n\r\nok"
    async with raw_upstream(replies(reply)) as up, running_proxy({"upstream": up}) as proxy:
        response = await raw_exchange(proxy, b"GET /x HTTP/1.1\r\nHost: p\r\n\r\n", wait=3)
    lines, body = head_and_body(response)
    assert lines[0].startswith("HTTP/1.1 200") or lines[0].startswith("HTTP/1.1 502")
    if lines[0].startswith("HTTP/1.1 200"):
        assert body == b"ok"
        assert header_values(lines, "X-Good") == ["1"]
        assert not any(line.lower().startswith(("x-bad", "x(bad")) for line in lines)


async def test_no_content_type_or_server_is_added() -> None:
    reply = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    async with raw_upstream(replies(reply)) as up, running_proxy({"upstream": up}) as proxy:
        response = await raw_exchange(proxy, b"GET /x HTTP/1.1\r\nHost: p\r\n\r\n", wait=3)
    lines, body = head_and_body(response)
    assert body == b"ok"
    assert header_values(lines, "Content-Type") == []
    assert header_values(lines, "Server") == []


async def test_reason_phrase_with_control_bytes_is_not_relayed() -> None:
    reply = b"HTTP/1.1 200 Fine\x01Thanks\r\nContent-Length: 2\r\n\r\nok"
    async with raw_upstream(replies(reply)) as up, running_proxy({"upstream": up}) as proxy:
        response = await raw_exchange(proxy, b"GET /x HTTP/1.1\r\nHost: p\r\n\r\n", wait=3)
    assert response.startswith((b"HTTP/1.1 200 OK\r\n", b"HTTP/1.1 502"))


async def test_truncated_small_body_is_a_clean_502() -> None:
    # Small bodies are read whole before anything is sent, so a short one is an error.
    reply = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"a" * 50
    async with raw_upstream(replies(reply)) as up, running_proxy({"upstream": up}) as proxy:
        response = await raw_exchange(proxy, b"GET /x HTTP/1.1\r\nHost: p\r\n\r\n", wait=3)
    assert response.startswith(b"HTTP/1.1 502")


async def test_truncated_streamed_body_is_never_complete() -> None:
    size = 200_000  # over the single-write limit: streamed, so the headers already went out
    reply = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size + b"a" * 70_000
    async with raw_upstream(replies(reply)) as up, running_proxy({"upstream": up}) as proxy:
        response = await raw_exchange(proxy, b"GET /x HTTP/1.1\r\nHost: p\r\n\r\n", wait=3)
    lines, body = head_and_body(response)
    assert lines[0].startswith("HTTP/1.1 200")
    assert header_values(lines, "Content-Length") == [str(size)]
    assert len(body) < size  # and the connection was closed (raw_exchange returned)


async def test_truncated_chunked_body_has_no_final_chunk() -> None:
    reply = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
    async with raw_upstream(replies(reply)) as up, running_proxy({"upstream": up}) as proxy:
        response = await raw_exchange(proxy, b"GET /x HTTP/1.1\r\nHost: p\r\n\r\n", wait=3)
    lines, body = head_and_body(response)
    assert lines[0].startswith("HTTP/1.1 200")
    assert b"hello" in body
    assert not body.endswith(b"0\r\n\r\n")


async def test_client_going_away_cancels_the_upstream_request(upstream: Any) -> None:
    async with running_proxy({"upstream": upstream.url}) as proxy:
        await asyncio.sleep(0.1)
        baseline = open_fds()
        for _ in range(5):
            host, port = proxy.removeprefix("http://").split(":")
            _, writer = await asyncio.open_connection(host, int(port))
            writer.write(b"GET /slow?s=10 HTTP/1.1\r\nHost: p\r\n\r\n")
            await writer.drain()
            await asyncio.sleep(0.2)
            writer.close()
        await asyncio.wait_for(upstream.cancelled.wait(), 3)
        for _ in range(50):  # bounded: sockets close within a few event-loop turns
            if open_fds() <= baseline:
                break
            await asyncio.sleep(0.1)
        assert open_fds() <= baseline


async def test_idle_connections_are_closed(upstream: Any) -> None:
    async with running_proxy({"upstream": upstream.url}, keepalive_timeout=1) as proxy:
        host, port = proxy.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"GET /x HTTP/1.1\r\nHost")  # slowloris: a head that never ends
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), 4) == b""
        writer.close()


async def test_preflights_are_answered_and_never_forwarded(upstream: Any) -> None:
    policy = {**POLICY, "allow_methods": ["GET", "PUT"]}
    async with running_proxy({"upstream": upstream.url, "cors": policy}) as proxy:
        async with aiohttp.ClientSession() as client:
            headers = {"Origin": APP, "Access-Control-Request-Method": "PUT"}
            async with client.options(f"{proxy}/x", headers=headers) as response:
                assert response.status == 204
            headers["Origin"] = "https://evil.example"
            async with client.options(f"{proxy}/x", headers=headers) as response:
                assert response.status == 403
                assert "origin not allowed" in await response.text()
                assert not [h for h in response.headers if h.lower().startswith("access-control")]
    assert upstream.seen == []


async def test_on_disallowed_reject_and_report_only(upstream: Any) -> None:
    doc = {
        "upstream": upstream.url,
        "cors": {"allow_origins": [APP], "on_disallowed": "reject"},
        "routes": [{"path_prefix": "/shadow", "cors": {"mode": "report-only"}}],
    }
    async with running_proxy(doc) as proxy, aiohttp.ClientSession() as client:
        async with client.get(f"{proxy}/x", headers={"Origin": "https://evil.example"}) as r:
            assert r.status == 403
        assert upstream.seen == []
        preflight = {"Origin": "https://evil.example", "Access-Control-Request-Method": "PUT"}
        async with client.options(f"{proxy}/shadow/x", headers=preflight) as r:
            assert r.status == 200  # forwarded: report-only changes nothing on the wire
        assert upstream.seen[-1]["method"] == "OPTIONS"


async def test_report_only_logs_what_would_have_been_refused(
    upstream: Any, caplog: pytest.LogCaptureFixture
) -> None:
    doc = {"upstream": upstream.url, "cors": {"allow_origins": [APP], "mode": "report-only"}}
    async with running_proxy(doc) as proxy, aiohttp.ClientSession() as client:
        with caplog.at_level("INFO", logger="corsproxy.access"):
            async with client.get(f"{proxy}/x", headers={"Origin": "https://evil.example"}) as r:
                assert r.status == 200
    records = [r for r in caplog.records if r.name == "corsproxy.access"]
    assert records[-1].levelname == "WARNING"
    fields = records[-1].fields  # type: ignore[attr-defined]
    assert fields["cors"] == "would_refuse" and fields["reason"] == "origin_not_allowed"


def stale_after_first_answer() -> Any:
    """Connection 1 answers once with keep-alive, then drops the next request unanswered
    (an upstream whose idle timeout fired just as the proxy reused the connection)."""
    connections = 0

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        if connections == 1:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst")
            await writer.drain()
            await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            return  # close without answering
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: close\r\n\r\nsecond")
        await writer.drain()

    return script


@pytest.mark.parametrize(("method", "expected"), [("GET", 200), ("POST", 502)])
async def test_stale_pooled_connection_is_retried_once_only_without_a_body(
    method: str, expected: int
) -> None:
    async with (
        raw_upstream(stale_after_first_answer()) as up,
        running_proxy({"upstream": up}) as proxy,
        aiohttp.ClientSession() as client,
    ):
        async with client.get(f"{proxy}/one") as response:
            assert await response.text() == "first"
        async with client.request(
            method, f"{proxy}/two", data=b"abc" if method == "POST" else None
        ) as r:
            assert r.status == expected
            if expected == 200:
                assert await r.text() == "second"


async def test_connect_timeout_is_504() -> None:
    import socket

    # A listener that never accepts, with its backlog full: connect() hangs on loopback.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(4):
        filler = socket.socket()
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            filler.connect(("127.0.0.1", port))
        fillers.append(filler)
    try:
        doc = {"upstream": f"http://127.0.0.1:{port}", "timeouts": {"connect": "300ms"}}
        async with running_proxy(doc) as proxy, aiohttp.ClientSession() as client:
            async with client.get(f"{proxy}/x") as response:
                assert response.status == 504
                assert "connecting" in await response.text()
    finally:
        for sock in (*fillers, listener):
            sock.close()


async def test_utf8_header_values_leave_byte_for_byte() -> None:
    """aiohttp writes header values as UTF-8: a UTF-8 value read as latin-1 left double-encoded
    (`caf\\xc3\\xa9` as `caf\\xc3\\x83\\xc2\\xa9`); read as UTF-8 it leaves as it came."""
    reply = (
        b"HTTP/1.1 200 OK\r\nContent-Disposition: attachment; "
        b'filename="caf\xc3\xa9 \xe2\x82\xac.txt"\r\n'
        b"X-Name: caf\xc3\xa9\r\nContent-Length: 2\r\n\r\nok"
    )
    async with raw_upstream(replies(reply)) as up, running_proxy({"upstream": up}) as proxy:
        response = await raw_exchange(proxy, b"GET /x HTTP/1.1\r\nHost: p\r\n\r\n", wait=3)
    head = response.split(b"\r\n\r\n", 1)[0]
    assert b"\r\nX-Name: caf\xc3\xa9\r\n" in head, head
    assert b'filename="caf\xc3\xa9 \xe2\x82\xac.txt"\r\n' in head, head


def test_the_slow_header_path_checks_bytes_not_text() -> None:
    """A UTF-8 value decoded to characters above U+00FF is still a valid field value when
    another header sends the check down the slow path."""
    out, invalid = hygiene.relayable_response_headers(
        [(b"X-Euro", b"\xe2\x82\xac"), (b"X-Bad", b"a\x01b")]
    )
    assert out == [("X-Euro", "\u20ac")] and invalid == 1
