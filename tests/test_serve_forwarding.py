"""`corsproxy serve` forwarding, against a real upstream on loopback."""

from __future__ import annotations

import asyncio
import gzip
import json
from typing import Any

import aiohttp
import pytest

from tests.net import (
    Recorder,
    Sentinel,
    head_and_body,
    header_values,
    raw_exchange,
    running_proxy,
)

APP = "https://app.example.com"
POLICY = {"allow_origins": [APP], "allow_credentials": True, "expose_headers": ["X-Request-Id"]}


def headers_of(seen: dict[str, Any]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, value in seen["headers"]:
        out.setdefault(name.lower(), []).append(value)
    return out


@pytest.fixture
async def upstream(recorder: Recorder) -> Recorder:
    return recorder


async def test_get_and_post_are_forwarded_with_cors(upstream: Any) -> None:
    async with running_proxy({"upstream": upstream.url, "cors": POLICY}) as proxy:
        async with aiohttp.ClientSession() as client:
            async with client.get(f"{proxy}/x", headers={"Origin": APP}) as response:
                assert response.status == 200
                assert response.headers["Access-Control-Allow-Origin"] == APP
                assert response.headers["Access-Control-Allow-Credentials"] == "true"
                assert response.headers["Vary"] == "Origin"
            async with client.post(f"{proxy}/x", data=b"payload") as response:
                assert (await response.json())["body"] == "payload"
                assert "Access-Control-Allow-Origin" not in response.headers
    assert [s["method"] for s in upstream.seen] == ["GET", "POST"]


async def test_path_and_query_are_forwarded_byte_for_byte(upstream: Any) -> None:
    target = "/files/a%2Fb/report%281%29.pdf;v=1/%7Euser+x?a=1&a=2&b=%2B&c=+;d=%zz"
    async with running_proxy({"upstream": upstream.url}) as proxy:
        await raw_exchange(proxy, f"GET {target} HTTP/1.1\r\nHost: p\r\n\r\n".encode(), wait=3)
    assert upstream.seen[-1]["raw_path"] == target


async def test_dot_segments_are_resolved_and_strip_prefix_removes_only_the_prefix(
    upstream: Any,
) -> None:
    doc = {
        "upstream": upstream.url,
        "routes": [
            {"path_prefix": "/svc", "upstream": f"{upstream.url}/base", "strip_prefix": True}
        ],
    }
    async with running_proxy(doc) as proxy:
        for target in ("/svc/a/./b/../c%2Fd?q=%7E", "//svc//a/c%2Fd?q=%7E"):
            await raw_exchange(proxy, f"GET {target} HTTP/1.1\r\nHost: p\r\n\r\n".encode(), wait=3)
    assert [s["raw_path"] for s in upstream.seen] == ["/base/a/c%2Fd?q=%7E"] * 2


@pytest.mark.parametrize(
    "request_line",
    [
        "GET http://127.0.0.1:{sentinel}/x HTTP/1.1",  # absolute-form
        "GET 127.0.0.1:{sentinel} HTTP/1.1",  # authority-form
        "CONNECT 127.0.0.1:{sentinel} HTTP/1.1",
        "OPTIONS * HTTP/1.1",
        "GET http://good@127.0.0.1:{sentinel}/a HTTP/1.1",
    ],
)
async def test_request_targets_never_reach_another_host(upstream: Any, request_line: str) -> None:
    async with Sentinel() as sentinel, running_proxy({"upstream": upstream.url}) as proxy:
        line = request_line.format(sentinel=sentinel.port)
        response = await raw_exchange(
            proxy, f"{line}\r\nHost: 127.0.0.1:{sentinel.port}\r\n\r\n".encode(), wait=3
        )
        status = response.split(b" ", 2)[1]
        assert status in (b"400", b"404", b"405"), response
        assert b"Access-Control-Allow-Origin" not in response
    assert sentinel.connections == 0
    assert upstream.seen == []


async def test_host_tricks_and_double_slashes_go_to_the_configured_upstream(upstream: Any) -> None:
    async with Sentinel() as sentinel, running_proxy({"upstream": upstream.url}) as proxy:
        for host in (f"127.0.0.1:{sentinel.port}", f"good@127.0.0.1:{sentinel.port}", "evil.com"):
            response = await raw_exchange(
                proxy,
                f"GET //127.0.0.1:{sentinel.port}/x HTTP/1.1\r\nHost: {host}\r\n\r\n".encode(),
                wait=3,
            )
            # A Host with userinfo is malformed (RFC 9112 3.2): 400, never forwarded.
            assert response.startswith(b"HTTP/1.1 400" if "@" in host else b"HTTP/1.1 200")
    assert sentinel.connections == 0
    # The client's Host is passed on (preserve_host, the default since issue 14), never used.
    assert [headers_of(s)["host"] for s in upstream.seen] == [
        [f"127.0.0.1:{sentinel.port}"],
        ["evil.com"],
    ]
    assert [s["raw_path"] for s in upstream.seen] == [f"/127.0.0.1:{sentinel.port}/x"] * 2


async def test_upstream_redirects_are_relayed_not_followed(upstream: Any) -> None:
    async with (
        Sentinel() as sentinel,
        running_proxy({"upstream": upstream.url, "cors": POLICY}) as proxy,
    ):
        location = f"http://127.0.0.1:{sentinel.port}/stolen"
        async with aiohttp.ClientSession() as client:
            async with client.get(
                f"{proxy}/redirect?to={location}", allow_redirects=False, headers={"Origin": APP}
            ) as response:
                assert response.status == 302
                assert response.headers["Location"] == location
                assert response.headers["Access-Control-Allow-Origin"] == APP
    assert sentinel.connections == 0


async def test_request_header_hygiene(upstream: Any) -> None:
    request = (
        "GET /x HTTP/1.1\r\n"
        "Host: proxy.example:8080\r\n"
        "Connection: keep-alive, X-Fake-Token, Origin, X-Forwarded-For\r\n"
        "Connection: X-Some-Conn\r\n"
        "X-Fake-Token: a\r\n"
        "X-Some-Conn: b\r\n"
        "Keep-Alive: timeout=5\r\n"
        "Proxy-Connection: keep-alive\r\n"
        "Proxy-Authorization: Basic eA==\r\n"
        "Upgrade: foo\r\n"
        "TE: trailers, deflate\r\n"
        "Trailer: X-T\r\n"
        "Expect: 100-continue\r\n"
        "X-Forwarded-For: 203.0.113.9\r\n"
        "X-Forwarded-Proto: https\r\n"
        "X-Forwarded-Host: evil.example\r\n"
        "X_Forwarded_For: 6.6.6.6\r\n"
        "Origin: https://app.example.com\r\n"
        "X-Multi: 1\r\n"
        "X-Multi: 2\r\n"
        "\r\n"
    )
    async with running_proxy({"upstream": upstream.url}) as proxy:
        await raw_exchange(proxy, request.encode(), wait=3)
    got = headers_of(upstream.seen[-1])
    for name in (
        "x-fake-token",
        "x-some-conn",
        "keep-alive",
        "proxy-connection",
        "proxy-authorization",
        "upgrade",
        "te",
        "trailer",
        "expect",
        "x_forwarded_for",
    ):
        assert name not in got, name
    assert got["origin"] == [APP]  # `Connection: Origin` cannot remove it
    assert got["x-forwarded-for"] == ["203.0.113.9, 127.0.0.1"]
    assert got["x-forwarded-proto"] == ["http"]
    assert got["x-forwarded-host"] == ["proxy.example:8080"]
    assert got["host"] == ["proxy.example:8080"]  # preserve_host: the default since issue 14
    assert got["x-multi"] == ["1", "2"]
    # aiohttp's client must not invent headers the client did not send
    for name in ("user-agent", "accept", "accept-encoding", "content-type"):
        assert name not in got, name


async def test_preserve_host(upstream: Any) -> None:
    """true is the default (issue 14); false sends the upstream's own name, per route too."""
    doc = {
        "upstream": upstream.url,
        "routes": [{"path_prefix": "/own", "preserve_host": False}],
    }
    async with running_proxy(doc) as proxy:
        for path in ("/x", "/own/x"):
            request = f"GET {path} HTTP/1.1\r\nHost: api.example:8080\r\n\r\n"
            await raw_exchange(proxy, request.encode(), wait=3)
    assert [headers_of(s)["host"] for s in upstream.seen] == [
        ["api.example:8080"],
        [upstream.url.removeprefix("http://")],
    ]
    async with running_proxy({"upstream": upstream.url, "preserve_host": False}) as proxy:
        await raw_exchange(proxy, b"GET /x HTTP/1.1\r\nHost: api.example:8080\r\n\r\n", wait=3)
    assert headers_of(upstream.seen[-1])["host"] == [upstream.url.removeprefix("http://")]


async def test_body_headers_are_forwarded_unchanged(upstream: Any) -> None:
    body = gzip.compress(b'{"a": 1}')
    request = (
        b"POST /upload HTTP/1.1\r\nHost: p\r\nContent-Type: application/json\r\n"
        b"Content-Encoding: gzip\r\nUser-Agent: test/1\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )
    async with running_proxy({"upstream": upstream.url}) as proxy:
        response = await raw_exchange(proxy, request, wait=3)
    assert head_and_body(response)[1] == str(len(body)).encode()  # compressed bytes untouched
    got = headers_of(upstream.seen[-1])
    assert got["content-length"] == [str(len(body))]  # not re-chunked
    assert got["content-encoding"] == ["gzip"]
    assert got["user-agent"] == ["test/1"]
    assert "transfer-encoding" not in got


async def test_response_header_hygiene_and_duplicates(upstream: Any) -> None:
    async with running_proxy({"upstream": upstream.url, "cors": POLICY}) as proxy:
        response = await raw_exchange(
            proxy, f"GET /cookies HTTP/1.1\r\nHost: p\r\nOrigin: {APP}\r\n\r\n".encode(), wait=3
        )
        lines, _ = head_and_body(response)
        assert header_values(lines, "Set-Cookie") == ["a=1; Path=/", "b=2; Path=/"]
        response = await raw_exchange(
            proxy, f"GET /cors HTTP/1.1\r\nHost: p\r\nOrigin: {APP}\r\n\r\n".encode(), wait=3
        )
        lines, _ = head_and_body(response)
        assert header_values(lines, "Access-Control-Allow-Origin") == [APP]
        assert header_values(lines, "Access-Control-Allow-Credentials") == ["true"]
        assert header_values(lines, "Access-Control-Expose-Headers") == ["X-Request-Id"]
        assert header_values(lines, "Vary") == ["Accept-Encoding, Origin"]


async def test_gzip_responses_pass_compressed(upstream: Any) -> None:
    async with running_proxy({"upstream": upstream.url}) as proxy:
        response = await raw_exchange(
            proxy, b"GET /gzip HTTP/1.1\r\nHost: p\r\nAccept-Encoding: gzip\r\n\r\n", wait=3
        )
    lines, body = head_and_body(response)
    assert header_values(lines, "Content-Encoding") == ["gzip"]
    assert header_values(lines, "Content-Length") == [str(len(body))]
    assert gzip.decompress(body) == b"x" * 1000
    assert "accept-encoding" in headers_of(upstream.seen[-1])  # the client's own, forwarded


async def test_no_cookie_jar_between_clients(upstream: Any) -> None:
    # `localhost`, not 127.0.0.1: aiohttp's default jar ignores IP hosts and would hide a leak.
    local = upstream.url.replace("127.0.0.1", "localhost")
    async with running_proxy({"upstream": local}) as proxy:
        async with aiohttp.ClientSession() as first:
            await (await first.get(f"{proxy}/cookies")).read()
        async with aiohttp.ClientSession() as second:
            await (await second.get(f"{proxy}/x")).read()
    assert "cookie" not in headers_of(upstream.seen[-1])


async def test_upstream_errors_pass_through_unchanged(upstream: Any) -> None:
    async with running_proxy({"upstream": upstream.url, "cors": POLICY}) as proxy:
        async with aiohttp.ClientSession() as client:
            for status in (404, 418, 500):
                async with client.get(f"{proxy}/status/{status}", headers={"Origin": APP}) as r:
                    assert r.status == status
                    assert await r.text() == f"status {status}"
                    assert r.headers["Access-Control-Allow-Origin"] == APP


async def test_head_204_304_have_no_body_and_keep_alive_works(upstream: Any) -> None:
    pipelined = (
        b"HEAD /x HTTP/1.1\r\nHost: p\r\n\r\n"
        b"GET /status/204 HTTP/1.1\r\nHost: p\r\n\r\n"
        b"GET /status/304 HTTP/1.1\r\nHost: p\r\n\r\n"
        b"GET /x HTTP/1.1\r\nHost: p\r\n\r\n"
    )
    async with running_proxy({"upstream": upstream.url}) as proxy:
        response = await raw_exchange(proxy, pipelined, wait=3)
    parts = response.split(b"HTTP/1.1 ")
    assert [p[:3] for p in parts[1:]] == [b"200", b"204", b"304", b"200"]
    head, _, rest = parts[1].partition(b"\r\n\r\n")
    assert rest == b""  # HEAD: the upstream's Content-Length, no body
    assert b"Content-Length: " in head
    assert parts[2].endswith(b"\r\n\r\n") and parts[3].endswith(b"\r\n\r\n")
    assert json.loads(parts[4].partition(b"\r\n\r\n")[2])["method"] == "GET"


async def test_http2_request_line_is_505(upstream: Any) -> None:
    async with running_proxy({"upstream": upstream.url}) as proxy:
        response = await raw_exchange(proxy, b"GET /x HTTP/2.0\r\nHost: p\r\n\r\n", wait=3)
    assert response.startswith((b"HTTP/1.1 505", b"HTTP/2.0 505"))
    assert upstream.seen == []


async def test_server_sent_events_flush_immediately(upstream: Any) -> None:
    async with running_proxy({"upstream": upstream.url}) as proxy:
        async with aiohttp.ClientSession() as client:
            async with client.get(f"{proxy}/sse?gap=3") as response:
                first = await asyncio.wait_for(response.content.readline(), 2)
                assert first == b"data: one\n"


async def test_http10_with_transfer_encoding_is_400(upstream: Any) -> None:
    request = (
        b"POST /x HTTP/1.0\r\nHost: p\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    )
    async with running_proxy({"upstream": upstream.url}) as proxy:
        response = await raw_exchange(proxy, request, wait=3)
    assert response.startswith(b"HTTP/1.0 400"), response[:80]
    assert upstream.seen == []
