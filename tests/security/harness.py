"""Black-box probes for the security tables: a running proxy in front of a recording
upstream, fed raw bytes, with the answer parsed as a client sees it.

The policies are the fixtures of ../shared/reference/security-anchors.md section 3, one
route each, so a row names its policy by its path prefix.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from tests.net import Recorder, head_and_body, raw_exchange, running_app, running_proxy

APP = "https://app.example.com"

P1: dict[str, Any] = {
    "allow_origins": [APP],
    "allow_credentials": True,
    "allow_methods": ["GET", "POST", "PUT", "PATCH", "DELETE"],
    "allow_headers": ["content-type", "x-requested-with", "authorization"],
    "expose_headers": ["x-request-id"],
    "max_age": 600,
}

# Routes inherit P1's keys one by one (credentials included) unless they set them.
# P1 is also the default policy, so the recording upstream's test endpoints (/cors,
# /redirect, /status/N) answer under it.
ROUTES: list[dict[str, Any]] = [
    {"path_prefix": "/api", "name": "P1-cred", "cors": P1},
    # Proxy-made errors under P1: nothing listens on port 1.
    {"path_prefix": "/down", "name": "P1-down", "upstream": "http://127.0.0.1:1", "cors": P1},
    {
        "path_prefix": "/sub",
        "name": "P2-sub",
        "cors": {
            "allow_origins": ["https://*.example.com"],
            "allow_credentials": True,
            "allow_methods": ["GET", "PUT"],
        },
    },
    {
        "path_prefix": "/public",
        "name": "P3-pub",
        "cors": {
            "allow_origins": ["*"],
            "allow_credentials": False,
            "allow_methods": ["GET"],
            "allow_headers": "*",
        },
    },
    {"path_prefix": "/internal", "name": "P4-none", "cors": False},
    {
        "path_prefix": "/device",
        "name": "P5-pna",
        "cors": {"allow_origins": [APP], "allow_private_network": True},  # credentials: P1
    },
    {
        "path_prefix": "/two",
        "name": "P6-two",
        "cors": {
            "allow_origins": ["https://foo.com", "https://bar.com"],
            "allow_credentials": False,
        },
    },
    {
        "path_prefix": "/dev",
        "name": "P7-loop",
        "cors": {
            "allow_origins": ["http://[::1]:3000", "http://127.0.0.1:3000"],
            "allow_credentials": False,
        },
    },
    {
        "path_prefix": "/star",
        "name": "P8-star",
        "cors": {
            "allow_origins": [APP],
            "allow_credentials": True,
            "allow_methods": "*",
            "allow_headers": "*",
        },
    },
]


@dataclass
class Reply:
    status: int
    lines: list[str]  # the head's field lines, as sent
    body: bytes
    forwarded: int  # requests the upstream received for this probe
    raw: bytes

    def values(self, name: str) -> list[str]:
        prefix = name.lower() + ":"
        return [
            line.split(":", 1)[1].strip() for line in self.lines if line.lower().startswith(prefix)
        ]

    def one(self, name: str) -> str | None:
        values = self.values(name)
        assert len(values) <= 1, f"{name} sent {len(values)} times: {values}"
        return values[0] if values else None

    @property
    def cors(self) -> list[str]:
        return [line for line in self.lines if line.lower().startswith("access-control-")]

    @property
    def vary(self) -> set[str]:
        return {t.strip().lower() for v in self.values("Vary") for t in v.split(",") if t.strip()}


class Probe:
    def __init__(self, proxy: str, upstream: Recorder) -> None:
        self.proxy = proxy
        self.upstream = upstream

    async def raw(self, data: bytes, wait: float = 3) -> Reply:
        before = len(self.upstream.seen)
        response = await raw_exchange(self.proxy, data, wait=wait)
        lines, body = head_and_body(response)
        status = int(lines[0].split()[1]) if lines and lines[0].startswith("HTTP/1.") else 0
        return Reply(status, lines[1:], body, len(self.upstream.seen) - before, response)

    async def request(
        self,
        path: str = "/api/r",
        origin: str | None = APP,
        method: str = "GET",
        headers: tuple[tuple[str, str], ...] = (),
        body: bytes = b"",
    ) -> Reply:
        lines = [f"{method} {path} HTTP/1.1", "Host: proxy.test", "Connection: close"]
        if origin is not None:
            lines.append(f"Origin: {origin}")
        lines += [f"{n}: {v}" for n, v in headers]
        if body:
            lines.append(f"Content-Length: {len(body)}")
        data = ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape") + body
        return await self.raw(data)

    async def preflight(
        self,
        path: str = "/api/r",
        origin: str | None = APP,
        method: str = "PUT",
        request_headers: str | None = None,
        extra: tuple[tuple[str, str], ...] = (),
    ) -> Reply:
        headers = [("Access-Control-Request-Method", method)] if method else []
        if request_headers is not None:
            headers.append(("Access-Control-Request-Headers", request_headers))
        return await self.request(path, origin, "OPTIONS", (*headers, *extra))


@contextlib.asynccontextmanager
async def probe(**doc: Any) -> AsyncIterator[Probe]:
    upstream = Recorder()
    async with running_app(upstream.app()) as url:
        upstream.url = url
        config = {
            "upstream": url,
            "cors": P1,
            "routes": ROUTES,
            "limits": {"max_body_size": "1KiB"},
            **doc,
        }
        async with running_proxy(config) as proxy:
            yield Probe(proxy, upstream)


# --- expectations ----------------------------------------------------------------------


def assert_no_cors(reply: Reply, forwarded: bool = True) -> None:
    """A disallowed or non-CORS request: nothing readable granted, and caches told why."""
    assert reply.cors == [], reply.raw[:600]
    assert "origin" in reply.vary, reply.raw[:600]
    if forwarded:
        assert reply.status == 200 and reply.forwarded == 1, reply.raw[:300]


def assert_allowed(reply: Reply, origin: str, credentials: bool = True) -> None:
    assert reply.status == 200 and reply.forwarded == 1, reply.raw[:300]
    assert reply.one("Access-Control-Allow-Origin") == origin
    assert reply.one("Access-Control-Allow-Credentials") == ("true" if credentials else None)
    assert "origin" in reply.vary


def assert_refused_preflight(reply: Reply) -> None:
    assert reply.status == 403 and reply.forwarded == 0, reply.raw[:400]
    assert reply.cors == []
