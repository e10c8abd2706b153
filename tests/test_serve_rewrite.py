"""Redirects, links and cookies an upstream sends, as a client of a running corsproxy sees
them (policy/url_rewrite.py applied by the relay), and preserve_host's new default."""

from __future__ import annotations

import asyncio
import signal
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from multidict import CIMultiDict

from tests.net import (
    TIMEOUT,
    head_and_body,
    header_values,
    raw_exchange,
    running_app,
    running_proxy,
    start_cli,
)

# What the upstream answers, by path; `{up}` is its own origin.
ANSWERS: dict[str, list[tuple[str, str]]] = {
    "/redirect": [("Location", "{up}/api/me?x=1")],
    "/relative": [("Location", "/get")],
    "/other": [("Location", "http://other.example/x")],
    "/all": [
        ("Location", "{up}/base/a"),
        ("Content-Location", "{up}/b"),  # not under the base path: not this route's
        ("Refresh", "5; URL='/c'"),
        ("Link", '</d>; rel="next"; title="x, y", <{up}/base/e>; rel=prev'),
        ("Set-Cookie", "sid=1; Path=/; Domain=legacy.internal; HttpOnly"),
        ("Set-Cookie", "pref=dark; path=/admin; SameSite=Lax"),
        ("X-Location", "{up}/untouched"),
    ],
    # The upstream's own (same-origin) paths that a careless rewrite turns into another host
    # or a path outside the prefix.
    "/evil": [
        ("Location", "/base//evil.example/"),
        ("Content-Location", "/base//evil.example/x"),
        ("Refresh", "0; url=/base//evil.example/"),
        ("Link", "</base//evil.example/>; rel=next"),
        ("Vary", "Accept"),
    ],
    "/dots": [("Location", "{up}/base/../admin"), ("Content-Location", "/base/%2e%2e/admin")],
    "/absolute": [("Location", "{up}/base/a"), ("Vary", "Accept")],
    # A login that sets a cookie for the whole app and redirects (Flask).
    "/login": [("Location", "/me"), ("Set-Cookie", "sid=1; Path=/; HttpOnly")],
    # An app told its mount point (Django's FORCE_SCRIPT_NAME=/djp): URLs start with it.
    "/djp/admin/": [
        ("Location", "/djp/admin/login/?next=/djp/admin/"),
        ("Content-Location", "{up}/base/djp/admin/"),
        ("Link", "</djp/static/a.css>; rel=preload"),
    ],
    # An app that builds absolute URLs from the Host it got and its own scheme (http).
    "/self": [("Location", "http://{host}/me"), ("Content-Location", "http://{host}/plain/x")],
}


@pytest.fixture
async def upstream() -> AsyncIterator[tuple[str, list[str]]]:
    hosts: list[str] = []
    base: list[str] = []

    async def handle(request: web.Request) -> web.StreamResponse:
        hosts.append(request.headers.get("Host", ""))
        path = request.path.removeprefix("/base")
        host = request.headers.get("Host", "")
        headers = CIMultiDict(
            (name, value.format(up=base[0], host=host)) for name, value in ANSWERS.get(path, [])
        )
        status = 302 if "Location" in headers else 200
        if path == "/big":  # streamed, not read whole: the other branch of the relay
            response = web.StreamResponse(status=302, headers={"Location": "/big-target"})
            response.enable_chunked_encoding()
            await response.prepare(request)
            await response.write(b"x" * 200_000)
            await response.write_eof()
            return response
        return web.Response(status=status, headers=headers, text="body")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    async with running_app(app) as url:
        base.append(url)
        yield url, hosts


def location(response: bytes) -> list[str]:
    return header_values(head_and_body(response)[0], "Location")


async def get(proxy: str, path: str, host: str | None = "public.example:8443") -> bytes:
    head = f"GET {path} HTTP/1.1\r\n" if host is not None else f"GET {path} HTTP/1.0\r\n"
    if host is not None:
        head += f"Host: {host}\r\nConnection: close\r\n"
    return await raw_exchange(proxy, (head + "\r\n").encode(), wait=5)


async def test_an_upstream_redirect_lands_on_the_address_the_client_used(upstream: Any) -> None:
    url, hosts = upstream
    async with running_proxy({"upstream": url}) as proxy:
        assert location(await get(proxy, "/redirect")) == ["http://public.example:8443/api/me?x=1"]
        assert location(await get(proxy, "/relative")) == ["/get"]
        assert location(await get(proxy, "/other")) == ["http://other.example/x"]
        # No Host (HTTP/1.0): the listener's own address.
        assert location(await get(proxy, "/redirect", host=None)) == [f"{proxy}/api/me?x=1"]
        # A Host that is valid but makes no clean origin: the listener's address too.
        assert location(await get(proxy, "/redirect", host="a,b")) == [f"{proxy}/api/me?x=1"]
    # preserve_host is the default now: the upstream saw the client's Host.
    assert hosts[:3] == ["public.example:8443"] * 3


async def test_a_stripped_prefix_and_base_path_are_mapped_back_in_every_header(
    upstream: Any,
) -> None:
    url, _ = upstream
    doc = {
        "upstream": url,
        "routes": [
            {
                "path_prefix": "/svc",
                "upstream": f"{url}/base",
                "strip_prefix": True,
                "cookie_path": {"/": "/svc/"},
                "cookie_domain": {"legacy.internal": "api.example.com"},
            }
        ],
    }
    async with running_proxy(doc) as proxy:
        lines, _ = head_and_body(await get(proxy, "/svc/all"))
        big = await get(proxy, "/svc/big")
    assert header_values(lines, "Location") == ["http://public.example:8443/svc/a"]
    assert header_values(lines, "Content-Location") == [f"{url}/b"]
    assert header_values(lines, "Refresh") == ["5; URL='/svc/c'"]
    assert header_values(lines, "Link") == [
        '</svc/d>; rel="next"; title="x, y", <http://public.example:8443/svc/e>; rel=prev'
    ]
    assert header_values(lines, "Set-Cookie") == [
        "sid=1; Path=/svc/; Domain=api.example.com; HttpOnly",
        "pref=dark; path=/svc/admin; SameSite=Lax",
    ]
    assert header_values(lines, "X-Location") == [f"{url}/untouched"]  # not a URL header
    assert location(big) == ["/svc/big-target"]
    assert len(head_and_body(big)[1]) > 200_000  # chunked body relayed whole


async def test_rewrite_redirects_false_and_preserve_host_false(upstream: Any) -> None:
    url, hosts = upstream
    doc = {
        "upstream": url,
        "rewrite_redirects": False,  # the default for routes ...
        "routes": [
            {"path_prefix": "/off", "strip_prefix": True},
            {
                "path_prefix": "/on",
                "strip_prefix": True,
                "rewrite_redirects": True,  # ... which a route overrides
                "preserve_host": False,
            },
        ],
    }
    async with running_proxy(doc) as proxy:
        assert location(await get(proxy, "/off/relative")) == ["/get"]
        assert location(await get(proxy, "/off/redirect")) == [f"{url}/api/me?x=1"]
        assert location(await get(proxy, "/on/relative")) == ["/on/get"]
        assert location(await get(proxy, "/on/redirect")) == [
            "http://public.example:8443/on/api/me?x=1"
        ]
    assert hosts == ["public.example:8443"] * 2 + [url.removeprefix("http://")] * 2


async def test_a_base_path_taken_off_never_makes_a_url_to_another_host(
    upstream: Any, tmp_path: Path
) -> None:
    """A real corsproxy process, upstream with a base path, no prefix put back: the
    upstream's `/base//evil.example/` would become `//evil.example/` (a browser leaves for
    evil.example); a path with dot segments would resolve elsewhere. Both stay as sent.
    An answer whose URL got the client's origin varies on Host."""
    url, _ = upstream
    config = tmp_path / "corsproxy.yaml"
    config.write_text(
        "listen: 127.0.0.1:0\n"
        f"upstream: {url}/base\n"
        "routes:\n"
        "  - path_prefix: /\n"
        "    strip_prefix: true\n"
    )
    proc, proxy = await asyncio.to_thread(start_cli, "--config", str(config))
    try:
        lines, _ = head_and_body(await get(proxy, "/evil"))
        dots, _ = head_and_body(await get(proxy, "/dots"))
        absolute, _ = head_and_body(await get(proxy, "/absolute"))
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(proc.communicate, timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            await asyncio.to_thread(proc.communicate, timeout=TIMEOUT)
    assert lines[0].startswith("HTTP/1.1 302"), lines
    assert header_values(lines, "Location") == ["/base//evil.example/"]
    assert header_values(lines, "Content-Location") == ["/base//evil.example/x"]
    assert header_values(lines, "Refresh") == ["0; url=/base//evil.example/"]
    assert header_values(lines, "Link") == ["</base//evil.example/>; rel=next"]
    assert header_values(lines, "Vary") == ["Accept, Origin"]  # nothing rewritten: no Host
    assert header_values(dots, "Location") == [f"{url}/base/../admin"]
    assert header_values(dots, "Content-Location") == ["/base/%2e%2e/admin"]
    assert header_values(absolute, "Location") == ["http://public.example:8443/a"]
    assert header_values(absolute, "Vary") == ["Accept, Host, Origin"]


# What nginx at /edge/ (TLS, `X-Forwarded-Prefix: /edge`, the README's block) sends.
EDGE = (
    "Host: localhost:45444\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: localhost:45444\r\n"
    "X-Forwarded-Prefix: /edge\r\n"
)


async def via_edge(proxy: str, path: str, extra: str = EDGE) -> list[str]:
    head = f"GET {path} HTTP/1.1\r\n{extra}Connection: close\r\n\r\n"
    return head_and_body(await raw_exchange(proxy, head.encode(), wait=5))[0]


async def test_behind_a_trusted_prefix_cookies_and_mount_points_stay_in_the_client_url_space(
    upstream: Any,
) -> None:
    """A trusted front strips /edge. Route /fl (strip_prefix, `cookie_path: {"/": "/fl/"}`):
    the login redirect and its cookie both land under /edge/fl, so the browser sends the
    cookie back. Route /djp (strip_prefix) to an app that writes /djp itself: its URLs
    get /edge in front, not /edge/djp/djp."""
    url, _ = upstream
    doc = {
        "upstream": url,
        "trusted_proxies": ["127.0.0.1"],
        "routes": [
            {"path_prefix": "/fl", "strip_prefix": True, "cookie_path": {"/": "/fl/"}},
            {"path_prefix": "/djp", "upstream": f"{url}/base", "strip_prefix": True},
        ],
    }
    async with running_proxy(doc) as proxy:
        login = await via_edge(proxy, "/fl/login")
        admin = await via_edge(proxy, "/djp/djp/admin/")
        direct = await via_edge(proxy, "/fl/login", "Host: localhost:45444\r\n")
    assert header_values(login, "Location") == ["/edge/fl/me"]
    assert header_values(login, "Set-Cookie") == ["sid=1; Path=/edge/fl/; HttpOnly"]
    assert header_values(admin, "Location") == ["/edge/djp/admin/login/?next=/djp/admin/"]
    assert header_values(admin, "Content-Location") == ["https://localhost:45444/edge/djp/admin/"]
    assert header_values(admin, "Link") == ["</edge/djp/static/a.css>; rel=preload"]
    # No prefix inherited (the front sent none): the mapped Path as configured.
    assert header_values(direct, "Set-Cookie") == ["sid=1; Path=/fl/; HttpOnly"]
    assert header_values(direct, "Location") == ["/fl/me"]


async def test_preserve_host_an_apps_self_built_urls_behind_a_trusted_tls_front(
    upstream: Any,
) -> None:
    """The app builds `http://<Host it got>/me`. With preserve_host (the default) that Host
    is the client's: the URL is put on the public https origin with the prefix, as it is
    with `preserve_host: false` (the app then builds on the upstream's own address)."""
    url, hosts = upstream
    doc = {
        "upstream": url,
        "trusted_proxies": ["127.0.0.1"],
        "routes": [
            {"path_prefix": "/plain", "strip_prefix": True},
            {"path_prefix": "/nohost", "strip_prefix": True, "preserve_host": False},
        ],
    }
    front = EDGE.replace("X-Forwarded-Prefix: /edge\r\n", "")
    async with running_proxy(doc) as proxy:
        kept = await via_edge(proxy, "/plain/self", front)
        plain = await via_edge(proxy, "/nohost/self", front)
        edge = await via_edge(proxy, "/plain/self")
    assert hosts == ["localhost:45444", url.removeprefix("http://"), "localhost:45444"]
    assert header_values(kept, "Location") == ["https://localhost:45444/plain/me"]
    assert header_values(kept, "Content-Location") == ["https://localhost:45444/plain/x"]
    assert header_values(plain, "Location") == ["https://localhost:45444/nohost/me"]
    assert header_values(edge, "Location") == ["https://localhost:45444/edge/plain/me"]
    assert header_values(kept, "Vary") == ["Host, Origin"]


async def test_preserve_host_an_apps_self_built_urls_on_a_tls_listener(
    upstream: Any, tmp_path: Path
) -> None:
    """corsproxy's own `tls:` listener, the client's `Host: localhost:<port>`: the app's
    `http://localhost:<port>/me` reaches the client as `https://localhost:<port>/plain/me`;
    on a plain listener with no prefix, the same URL is the client's already: unchanged."""
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1", "localhost")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    issued.cert_chain_pems[0].write_to_path(str(cert))
    issued.private_key_pem.write_to_path(str(key))
    client = ssl.create_default_context()
    ca.configure_trust(client)
    url, _ = upstream
    doc = {
        "upstream": url,
        "tls": {"cert_file": str(cert), "key_file": str(key)},
        "routes": [{"path_prefix": "/plain", "strip_prefix": True}],
    }
    async with running_proxy(doc) as proxy:
        port = proxy.rsplit(":", 1)[1]
        timeout = aiohttp.ClientTimeout(total=TIMEOUT)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            async with session.get(
                f"https://127.0.0.1:{port}/plain/self",
                ssl=client,
                headers={"Host": f"localhost:{port}"},
                allow_redirects=False,
            ) as response:
                assert response.status == 302
                assert response.headers["Location"] == f"https://localhost:{port}/plain/me"
    async with running_proxy({"upstream": url}) as proxy:
        port = proxy.rsplit(":", 1)[1]
        lines = await via_edge(proxy, "/self", f"Host: localhost:{port}\r\n")
    assert header_values(lines, "Location") == [f"http://localhost:{port}/me"]
    assert header_values(lines, "Vary") == ["Origin"]  # nothing rewritten
