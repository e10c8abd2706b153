"""A WebSocket handshake is never redirected: the upstream's 3xx is a refusal (502).

Following one would send the handshake, X-Forwarded-* included, to any host or path the
upstream names and hand the client a tunnel there (an open proxy; a way around a
`cors: false` route)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.net import raw_server, running_proxy
from tests.test_serve_websocket import APP, EVIL, _access_records, _handshake


@dataclass
class RawUpstream:
    """Answers every request head with `status` (and `location`); records each request as
    (connection number, request target), so a reused connection shows."""

    status: int
    location: str = ""
    seen: list[tuple[int, str]] = field(default_factory=list)
    connections: int = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        number = self.connections
        self.connections += 1
        for _ in range(20):  # bounded: aiohttp follows at most 10 redirects
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            self.seen.append((number, head.split(b" ")[1].decode()))
            location = f"Location: {self.location}\r\n" if self.location else ""
            writer.write(
                f"HTTP/1.1 {self.status} X\r\n{location}Content-Length: 4\r\n\r\nnope".encode()
            )
            await writer.drain()


@dataclass
class Sentinel:
    """A listener no request may reach."""

    connections: list[bytes] = field(default_factory=list)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections.append(b"")
        self.connections[-1] = await asyncio.wait_for(reader.read(4096), 5)


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_a_redirect_to_another_host_is_never_followed(
    status: int, caplog: pytest.LogCaptureFixture
) -> None:
    sentinel = Sentinel()
    async with raw_server(sentinel.handle) as elsewhere:
        upstream = RawUpstream(status, f"{elsewhere}/evil")
        async with raw_server(upstream.handle) as url:
            doc = {"upstream": url, "cors": {"allow_origins": [APP]}}
            async with running_proxy(doc) as proxy:
                with caplog.at_level("INFO", logger="corsproxy.access"):
                    answer, headers, _ = await _handshake(proxy, "/ws", {"Origin": APP})
                await asyncio.sleep(0.2)  # a followed redirect would have connected by now
    assert answer == 502  # never 101
    assert headers["Access-Control-Allow-Origin"] == APP  # the page sees the 502
    assert sentinel.connections == []
    assert upstream.seen == [(0, "/ws")]
    fields = _access_records(caplog)[-1]
    assert fields["status"] == 502
    assert fields["upstream_status"] == status, fields
    assert f"refused the WebSocket handshake: {status}" in fields["error"]
    assert "/evil" in fields["error"] and "never followed" in fields["error"]


async def test_a_relative_redirect_cannot_reach_a_route_without_cors() -> None:
    """A cross-site page may open /public (allow_origins `*`), never /internal (cors: false);
    the upstream's 307 to /internal/socket is not followed."""
    upstream = RawUpstream(307, "/internal/socket")
    async with raw_server(upstream.handle) as url:
        doc: dict[str, Any] = {
            "upstream": url,
            "cors": {"allow_origins": ["*"]},
            "routes": [{"path_prefix": "/internal", "cors": False}],
        }
        async with running_proxy(doc) as proxy:
            answer, _, _ = await _handshake(proxy, "/public/ws", {"Origin": EVIL})
            assert answer == 502
            assert upstream.seen == [(0, "/public/ws")]


@pytest.mark.parametrize("status", [307, 403])
async def test_a_refused_handshake_s_connection_never_carries_the_next(status: int) -> None:
    upstream = RawUpstream(status, "/ws" if status == 307 else "")
    async with raw_server(upstream.handle) as url:
        doc = {"upstream": url, "cors": {"allow_origins": [APP]}}
        async with running_proxy(doc) as proxy:
            for _ in range(2):
                answer, _, _ = await _handshake(proxy, "/ws", {"Origin": APP})
                assert answer in (502, 403)
    assert upstream.seen == [(0, "/ws"), (1, "/ws")]
