"""End to end in every browser engine: what a page's script can read through corsproxy.

Origins: the allowed page http://127.0.0.1:P1, a page the policy does not allow
http://127.0.0.1:P3, a same-site page http://localhost:P4, and the proxy http://localhost:P2
(a `corsproxy serve` subprocess) in front of a recording upstream. Every scenario runs in each
engine CORSPROXY_BROWSERS selects (tests/browsers/engine.py; default all three) and asserts on
outcomes: what the script could read, what reached the upstream, and how many preflights
corsproxy answered (counted from its own access log, as an outsider sees them). Where the
engines differ, the tables below say what each does.

A missing engine skips loudly; CORSPROXY_REQUIRE_BROWSER=1 (set by .ci/run) turns that skip
into a failure. The `explain` comparison and the CORS console tests run in Chromium only (see
their comments).
"""

from __future__ import annotations

import asyncio
import http.client
import re
import signal
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest
from aiohttp import web

from tests.browsers.access_log import AccessLog
from tests.browsers.engine import Engine, Tab, add_tab_page, launched, selected
from tests.browsers.servers import ThreadedServers, page_app
from tests.net import free_port, start_cli

if TYPE_CHECKING:
    from playwright.sync_api import Page as PlaywrightPage

# --- what each engine does differently (README "In Chromium, Firefox and WebKit") -----
# Every entry observed on this machine with corsproxy in front (max_age 600): Chromium by this
# suite, firefox-esr 153 (puppeteer over WebDriver BiDi) and WebKitGTK 2.50 (MiniBrowser) by
# a page running the same requests, before their drivers joined the suite.

# All three keep an allowed preflight for max_age (one OPTIONS for two PUTs); none caches a
# refused one.
CACHES_PREFLIGHT = {"chromium": True, "firefox": True, "webkit": True}
# Which later request (same URL, same tab, max_age 600) reuses an earlier one's preflight, as
# OPTIONS counts for the sequence. The Fetch standard's cache: an entry made with credentials
# serves a request without them, not the other way round; a header the entry lacks needs a
# new preflight; corsproxy lists every allowed method, so another method needs none.
# Firefox keeps entries made with and without credentials apart: it preflights again.
PREFLIGHT_PAIRS: dict[str, tuple[list[dict[str, Any]], dict[str, int]]] = {
    "same request": ([{}, {}], {"chromium": 1, "firefox": 1, "webkit": 1}),
    "another allowed method": (
        [{}, {"method": "DELETE"}], {"chromium": 1, "firefox": 1, "webkit": 1}
    ),
    "fewer headers": (
        [{"headers": {"X-Custom": "1"}}, {}], {"chromium": 1, "firefox": 1, "webkit": 1}
    ),
    "one more header": (
        [{}, {"headers": {"X-Custom": "1"}}], {"chromium": 2, "firefox": 2, "webkit": 2}
    ),
    "another header": (
        [{"headers": {"X-Custom": "1"}}, {"headers": {"Content-Type": "application/json"}}],
        {"chromium": 2, "firefox": 2, "webkit": 2},
    ),
    "with credentials, then without": (
        [{"credentials": "include"}, {}], {"chromium": 1, "firefox": 2, "webkit": 1}
    ),
    "without credentials, then with": (
        [{}, {"credentials": "include"}], {"chromium": 2, "firefox": 2, "webkit": 2}
    ),
    # Chromium and WebKit keep one entry per URL: the second preflight (another header)
    # replaces the first, so the first request needs a third. Firefox keeps both (found by
    # an outside check).
    "a header, another header, the first again": (
        [
            {"headers": {"X-Custom": "1"}},
            {"method": "DELETE", "headers": {"Content-Type": "application/json"}},
            {"headers": {"X-Custom": "1"}},
        ],
        {"chromium": 3, "firefox": 2, "webkit": 3},
    ),
}  # fmt: skip
# A `SameSite=None; Secure` cookie set by the http://localhost API for a page on
# http://127.0.0.1 (cross-site): Chromium blocks third-party cookies (not stored); Firefox
# stores it (presumably partitioned, Total Cookie Protection: not checked) and sends it back; WebKit
# blocks third-party cookies (a plain `p=1` is not sent back cross-site either).
THIRD_PARTY_COOKIES = {"chromium": False, "firefox": True, "webkit": False}
# The same cookie for a page on http://localhost:other-port (same-site): Chromium and Firefox
# treat http://localhost as secure and keep it; WebKit does not keep a Secure cookie set over
# plain http, even on localhost (a plain `p=1` is sent back same-site).
SAME_SITE_COOKIES = {"chromium": True, "firefox": True, "webkit": False}
# What fetch() rejects with when CORS blocks it.
FETCH_ERRORS = {
    "chromium": "TypeError: Failed to fetch",
    "firefox": "TypeError: NetworkError when attempting to fetch resource.",
    "webkit": "TypeError: Load failed",
}
# The engine's own block reasons for a disallowed GET then PUT, where the engine has codes
# (Chromium checks Access-Control-Allow-Origin before the preflight's 403 status).
# Firefox too (its reason names, read from its console), and it adds CORSDidNotSucceed after
# a failed preflight; WebKit has no codes (its console text is checked by
# tests/test_browser_explain.py).
DISALLOWED_CODES = {
    "chromium": ["MissingAllowOriginHeader", "PreflightMissingAllowOriginHeader"],
    "firefox": ["CORSMissingAllowOrigin", "CORSMissingAllowOrigin", "CORSDidNotSucceed"],
}


def untagged(path: str) -> str:
    """The path without the engine tag each test appends (`/api/x.firefox` -> `/api/x`)."""
    return re.sub(r"\.(chromium|firefox|webkit)$", "", path)


class Upstream:
    """The legacy API: knows nothing of CORS (except where a test says so); records all."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []

    def app(self) -> web.Application:
        app = web.Application()
        add_tab_page(app)  # the proxy's own origin (/internal, strip_prefix) is a page too
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app

    def requests(self, path: str) -> list[dict[str, Any]]:
        return [s for s in self.seen if s["path"] == path]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if untagged(request.path) == "/ws":
            ws = web.WebSocketResponse()
            await ws.prepare(request)
            async for message in ws:
                await ws.send_str(f"echo:{message.data}")
            return ws
        body = await request.text()
        self.seen.append(
            {"method": request.method, "path": request.path, "headers": dict(request.headers),
             "body": body}
        )  # fmt: skip
        path, tag = untagged(request.path), request.path.removeprefix(untagged(request.path))
        if path == "/api/redirect":
            return web.Response(status=302, headers={"Location": f"/api/target{tag}"})
        if path.startswith("/api/events"):
            stream = web.StreamResponse(
                headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
            )
            await stream.prepare(request)
            await stream.write(b"data: one\n\ndata: two\n\n")
            await asyncio.sleep(0.5)  # the page closes the stream after the second event
            return stream
        if path == "/api/error":
            return web.Response(status=500, text="upstream error")
        if path == "/api/upstream-cors":
            return web.Response(
                text="own cors",
                headers={
                    "Access-Control-Allow-Origin": "*",
                    "Access-Control-Allow-Credentials": "true",
                },
            )
        if path == "/api/cacheable":
            return web.Response(text="cacheable", headers={"Cache-Control": "public, max-age=600"})
        if path == "/api/set-cookie":
            return web.Response(
                text="set", headers={"Set-Cookie": "c=1; SameSite=None; Secure; Path=/"}
            )
        if path == "/api/cookie":
            return web.Response(text=request.headers.get("Cookie", ""))
        return web.Response(
            text=f"{request.method} {request.path} {body}",
            headers={"X-Exposed": "visible", "X-Hidden": "secret"},
        )


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    servers, upstream = ThreadedServers(), Upstream()
    ports = {
        "upstream": servers.serve(upstream.app()),
        "allowed": servers.serve(page_app()),
        "disallowed": servers.serve(page_app()),
        "same_site": servers.serve(page_app()),
    }
    allowed = f"http://127.0.0.1:{ports['allowed']}"
    same_site = f"http://localhost:{ports['same_site']}"
    config = tmp_path_factory.mktemp("browser") / "corsproxy.yaml"
    config.write_text(
        f"""
upstream: http://127.0.0.1:{ports["upstream"]}
cors:
  allow_origins: ["{allowed}", "{same_site}"]
  allow_credentials: true
  allow_methods: [GET, HEAD, POST, PUT, PATCH, DELETE]
  allow_headers: [Content-Type, X-Custom]
  expose_headers: [X-Exposed]
  max_age: 600
routes:
  - path_prefix: /down
    upstream: http://127.0.0.1:{free_port()}
  - path_prefix: /public
    cors: {{allow_origins: ["*"], allow_credentials: false}}
  - path_prefix: /nocreds
    cors: {{allow_credentials: false}}
  - path_prefix: /internal
    cors: false
    strip_prefix: true
  - path_prefix: /lower  # methods sent as written, listed exactly (check warns about patch)
    cors: {{allow_methods: [patch, FOO, PUT]}}
limits:
  max_ws_message_size: 1MiB  # the upstream's own limit is aiohttp's 4 MiB
"""
    )
    proxy_port, admin_port = free_port(), free_port()
    proc, _ = start_cli(
        "--config", str(config), "--listen", f"127.0.0.1:{proxy_port}",
        "--admin-listen", f"127.0.0.1:{admin_port}",
    )  # fmt: skip
    access = AccessLog(proc)
    try:
        yield {
            "servers": servers,
            "upstream": upstream,
            "access": access,
            "allowed": allowed,
            "disallowed": f"http://127.0.0.1:{ports['disallowed']}",
            "same_site": same_site,
            "api": f"http://localhost:{proxy_port}",
            "api_page": f"http://localhost:{proxy_port}/internal",  # the proxy's own origin
            "config": config,
            "admin": f"http://127.0.0.1:{admin_port}",  # the CORS console
        }
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
        access.close()
        servers.stop()


@pytest.fixture(scope="module", params=selected())
def engine(request: pytest.FixtureRequest) -> Iterator[Engine]:
    # (Chromium-only tests ask for "chromium" even when CORSPROXY_BROWSERS leaves it out.)
    yield from launched(request.param)


CHROMIUM_ONLY = pytest.mark.parametrize("engine", ["chromium"], indirect=True)


FETCH = """async ([url, init]) => {
  try {
    const r = await fetch(url, init);
    const headers = {};
    r.headers.forEach((v, k) => { headers[k] = v; });
    return {ok: true, status: r.status, body: await r.text(), headers, redirected: r.redirected};
  } catch (e) { return {ok: false, error: String(e)}; }
}"""

XHR = """([url, method, body, headers, credentials]) => new Promise((resolve) => {
  const x = new XMLHttpRequest();
  x.open(method, url);
  x.withCredentials = credentials;
  for (const [k, v] of Object.entries(headers)) x.setRequestHeader(k, v);
  x.onload = () => resolve({ok: true, status: x.status, body: x.responseText,
                            exposed: x.getResponseHeader('X-Exposed'),
                            hidden: x.getResponseHeader('X-Hidden')});
  x.onerror = () => resolve({ok: false, status: x.status});
  x.send(body);
})"""

WEBSOCKET = """(url) => new Promise((resolve) => {
  const ws = new WebSocket(url);
  ws.onopen = () => ws.send('hi');
  ws.onmessage = (m) => { resolve({ok: true, data: m.data}); ws.close(); };
  ws.onerror = () => resolve({ok: false});
  setTimeout(() => resolve({ok: false, timeout: true}), 5000);
})"""

WEBSOCKET_CLOSE = """([url, size]) => new Promise((resolve) => {
  const ws = new WebSocket(url);
  ws.onopen = () => ws.send('x'.repeat(size));
  ws.onclose = (e) => resolve({code: e.code, reason: e.reason});
  setTimeout(() => resolve({timeout: true}), 5000);
})"""

EVENT_SOURCE = """([url, withCredentials]) => new Promise((resolve) => {
  const source = new EventSource(url, {withCredentials});
  const data = [];
  source.onmessage = (m) => {
    data.push(m.data);
    if (data.length === 2) { source.close(); resolve({ok: true, data}); }
  };
  source.onerror = () => { source.close(); resolve({ok: false, data}); };
  setTimeout(() => { source.close(); resolve({ok: false, data, timeout: true}); }, 5000);
})"""


class Page:
    """A tab on one origin, with the page scripts the scenarios use."""

    def __init__(self, tab: Tab) -> None:
        self.tab = tab
        self.engine = tab.engine

    def fetch(self, url: str, **init: Any) -> dict[str, Any]:
        result: dict[str, Any] = self.tab.evaluate(FETCH, [url, init])
        return result

    def xhr(
        self, url: str, method: str = "GET", body: str | None = None,
        headers: dict[str, str] | None = None, credentials: bool = False,
    ) -> dict[str, Any]:  # fmt: skip
        result: dict[str, Any] = self.tab.evaluate(
            XHR, [url, method, body, headers or {}, credentials]
        )
        return result

    def websocket(self, url: str) -> dict[str, Any]:
        result: dict[str, Any] = self.tab.evaluate(WEBSOCKET, url)
        return result

    def websocket_close(self, url: str, size: int) -> dict[str, Any]:
        result: dict[str, Any] = self.tab.evaluate(WEBSOCKET_CLOSE, [url, size], timeout=30)
        return result

    def event_source(self, url: str, credentials: bool) -> dict[str, Any]:
        result: dict[str, Any] = self.tab.evaluate(EVENT_SOURCE, [url, credentials])
        return result

    def cors_errors(self) -> list[str]:
        return [error.code for error in self.tab.cors_errors()]


@pytest.fixture
def tab(engine: Engine, world: dict[str, Any]) -> Iterator[Any]:
    tabs: list[Tab] = []

    def open_tab(origin: str = "allowed") -> Page:
        opened = engine.open(world[origin])
        tabs.append(opened)
        return Page(opened)

    yield open_tab
    for opened in tabs:
        opened.close()


@pytest.fixture
def api(engine: Engine, world: dict[str, Any]) -> Any:
    """`api("/api/x")`: the path tagged with the engine (each engine's requests are its own in
    the upstream's record and the access log) and its URL on the proxy."""

    def tagged(path: str) -> tuple[str, str]:
        path = f"{path}.{engine.name}"
        return path, f"{world['api']}{path}"

    return tagged


def preflights(world: dict[str, Any], path: str) -> int:
    """The OPTIONS requests corsproxy answered for `path` (its access log)."""
    access: AccessLog = world["access"]
    return access.count(world["api"], "OPTIONS", path)


# --- scenarios (every engine) ----------------------------------------------------------


def test_simple_get_reads_body_and_only_exposed_headers(
    tab: Any, api: Any, world: dict[str, Any]
) -> None:
    path, url = api("/api/simple")
    result = tab().fetch(url)
    assert result["ok"] and result["status"] == 200
    assert result["body"] == f"GET {path} "
    assert result["headers"].get("x-exposed") == "visible"
    assert "x-hidden" not in result["headers"]
    assert preflights(world, path) == 0


def test_post_text_plain_needs_no_preflight(tab: Any, api: Any, world: dict[str, Any]) -> None:
    path, url = api("/api/text")
    result = tab().fetch(url, method="POST", body="hi", headers={"Content-Type": "text/plain"})
    assert result["ok"] and result["status"] == 200 and result["body"] == f"POST {path} hi"
    assert preflights(world, path) == 0


@pytest.mark.parametrize("method", ["POST-JSON", "PUT", "PATCH", "DELETE"])
def test_preflighted_methods_make_one_preflight(
    tab: Any, api: Any, world: dict[str, Any], method: str
) -> None:
    init: dict[str, Any] = {"method": method.split("-")[0]}
    if method == "POST-JSON":
        init.update(body='{"a":1}', headers={"Content-Type": "application/json"})
    path, url = api(f"/api/{method.lower()}")
    result = tab().fetch(url, **init)
    assert result["ok"] and result["status"] == 200
    assert result["body"].startswith(f"{init['method']} {path}")
    assert preflights(world, path) == 1
    assert [s["method"] for s in world["upstream"].requests(path)] == [init["method"]]


def test_custom_request_header_is_preflighted_and_reaches_the_upstream(
    tab: Any, api: Any, world: dict[str, Any]
) -> None:
    path, url = api("/api/custom")
    result = tab().fetch(url, headers={"X-Custom": "42"})
    assert result["ok"] and result["status"] == 200
    assert preflights(world, path) == 1
    assert world["upstream"].requests(path)[-1]["headers"]["X-Custom"] == "42"


def test_credentialed_get_and_put_from_the_allowed_origin(
    tab: Any, api: Any, world: dict[str, Any]
) -> None:
    page = tab()
    get_path, get_url = api("/api/cred-get")
    put_path, put_url = api("/api/cred-put")
    get = page.fetch(get_url, credentials="include")
    assert get["ok"] and get["status"] == 200
    put = page.fetch(put_url, method="PUT", credentials="include")
    assert put["ok"] and put["status"] == 200
    assert (preflights(world, get_path), preflights(world, put_path)) == (0, 1)


def test_the_disallowed_origin_is_blocked(
    tab: Any, api: Any, world: dict[str, Any], engine: Engine
) -> None:
    page = tab("disallowed")
    get_path, get_url = api("/api/evil-get")
    put_path, put_url = api("/api/evil-put")
    get = page.fetch(get_url, credentials="include")
    assert get == {"ok": False, "error": FETCH_ERRORS[engine.name]}
    put = page.fetch(put_url, method="PUT", credentials="include")
    assert not put["ok"]
    assert (preflights(world, get_path), preflights(world, put_path)) == (0, 1)
    assert len(world["upstream"].requests(get_path)) == 1  # sent, but the script read nothing
    assert world["upstream"].requests(put_path) == []  # the real PUT never left
    errors = page.cors_errors()
    assert errors, "the engine reported no CORS block"
    if engine.name in DISALLOWED_CODES:
        assert errors == DISALLOWED_CODES[engine.name]


def test_upstream_wildcard_with_credentials_is_replaced(tab: Any, api: Any) -> None:
    page = tab()
    _, url = api("/api/upstream-cors")
    result = page.fetch(url, credentials="include")
    assert result["ok"] and result["body"] == "own cors"
    assert page.cors_errors() == []


def test_preflights_are_cached_for_max_age(
    tab: Any, api: Any, world: dict[str, Any], engine: Engine
) -> None:
    page = tab()
    path, url = api("/api/cached-preflight")
    for _ in range(2):
        assert page.fetch(url, method="PUT")["status"] == 200
    assert len(world["upstream"].requests(path)) == 2
    assert preflights(world, path) == (1 if CACHES_PREFLIGHT[engine.name] else 2)


@pytest.mark.parametrize("pair", list(PREFLIGHT_PAIRS))
def test_which_later_request_reuses_a_cached_preflight(
    tab: Any, api: Any, world: dict[str, Any], engine: Engine, pair: str
) -> None:
    requests, expected = PREFLIGHT_PAIRS[pair]
    page = tab()
    path, url = api(f"/api/pair-{pair.replace(' ', '-').replace(',', '')}")
    for init in requests:
        result = page.fetch(url, **{"method": "PUT", **init})
        assert result["ok"] and result["status"] == 200, result
    assert preflights(world, path) == expected[engine.name]


def test_a_refused_preflight_is_not_cached(tab: Any, api: Any, world: dict[str, Any]) -> None:
    page = tab("disallowed")
    path, url = api("/api/refused-preflight")
    for _ in range(2):
        assert not page.fetch(url, method="PUT")["ok"]
    assert preflights(world, path) == 2
    assert world["upstream"].requests(path) == []


def test_upstream_redirect_is_followed_by_the_browser(tab: Any, api: Any) -> None:
    path, url = api("/api/redirect")
    result = tab().fetch(url)
    assert result["ok"] and result["status"] == 200 and result["redirected"]
    assert result["body"] == f"GET {path.replace('redirect', 'target')} "


def test_upstream_500_is_readable(tab: Any, api: Any) -> None:
    _, url = api("/api/error")
    result = tab().fetch(url, credentials="include")
    assert result["ok"] and result["status"] == 500 and result["body"] == "upstream error"


def test_upstream_down_gives_a_readable_502(tab: Any, api: Any) -> None:
    _, url = api("/down/x")
    result = tab().fetch(url, credentials="include")
    assert result["ok"] and result["status"] == 502
    assert "cannot be reached" in result["body"]


def test_cached_response_never_leaks_across_origins(
    tab: Any, api: Any, world: dict[str, Any]
) -> None:
    page = tab()
    path, url = api("/api/cacheable")
    opaque = page.fetch(url, mode="no-cors")  # no Origin: answered without ACAO, cacheable
    assert opaque["ok"] and opaque["status"] == 0
    cors = page.fetch(url)  # Vary: Origin makes the cache miss instead of serving the above
    assert cors["ok"] and cors["status"] == 200 and cors["body"] == "cacheable"
    assert len(world["upstream"].requests(path)) == 2
    other = tab("disallowed")
    assert not other.fetch(url)["ok"]


def test_xmlhttprequest_flows(tab: Any, api: Any, world: dict[str, Any]) -> None:
    page = tab()
    path, url = api("/api/xhr")
    simple = page.xhr(url)
    assert simple == {"ok": True, "status": 200, "body": f"GET {path} ",
                      "exposed": "visible", "hidden": None}  # fmt: skip
    put_path, put_url = api("/api/xhr-put")
    put = page.xhr(put_url, "PUT", "x", {"X-Custom": "1"}, credentials=True)
    assert put["ok"] and put["status"] == 200
    assert (preflights(world, path), preflights(world, put_path)) == (0, 1)
    _, evil_url = api("/api/xhr-evil")
    blocked = tab("disallowed").xhr(evil_url, credentials=True)
    assert blocked == {"ok": False, "status": 0}


@pytest.mark.parametrize("credentials", [False, True])
def test_event_source_reads_events_from_the_allowed_origin(
    tab: Any, api: Any, world: dict[str, Any], credentials: bool
) -> None:
    path, url = api(f"/api/events-{'cred' if credentials else 'anon'}")
    assert tab().event_source(url, credentials) == {"ok": True, "data": ["one", "two"]}
    seen = world["upstream"].requests(path)
    assert seen and seen[0]["headers"]["Accept"] == "text/event-stream"
    assert seen[0]["headers"]["Origin"] == world["allowed"]
    assert preflights(world, path) == 0  # EventSource is a simple GET


@pytest.mark.parametrize("credentials", [False, True])
def test_event_source_from_the_disallowed_origin_gets_an_error(
    tab: Any, api: Any, world: dict[str, Any], credentials: bool
) -> None:
    path, url = api(f"/api/events-evil-{'cred' if credentials else 'anon'}")
    result = tab("disallowed").event_source(url, credentials)
    assert result == {"ok": False, "data": []}  # an error event, not a single event read
    assert len(world["upstream"].requests(path)) == 1  # it was sent; the page read nothing


def test_websockets_follow_the_allow_list(tab: Any, api: Any) -> None:
    ws_url = api("/ws")[1].replace("http://", "ws://")
    assert tab().websocket(ws_url) == {"ok": True, "data": "echo:hi"}
    assert tab("disallowed").websocket(ws_url) == {"ok": False}


def test_websockets_on_a_route_without_cors_are_same_origin_only(tab: Any, api: Any) -> None:
    ws_url = api("/internal/ws")[1].replace("http://", "ws://")
    assert tab("allowed").websocket(ws_url) == {"ok": False}
    assert tab("api_page").websocket(ws_url) == {"ok": True, "data": "echo:hi"}


def test_a_websocket_message_over_the_limit_closes_with_1009(tab: Any, api: Any) -> None:
    ws_url = api("/ws")[1].replace("http://", "ws://")
    # The echo ("echo:" + message) of a message 5 bytes under the limit is exactly at it.
    assert tab().websocket_close(ws_url, 1024 * 1024 - 5) == {"timeout": True}
    result = tab().websocket_close(ws_url, 1024 * 1024 + 1)
    assert result.get("code") == 1009, result


def test_cookies_cross_site_and_same_site(
    tab: Any, api: Any, world: dict[str, Any], engine: Engine
) -> None:
    """The API on http://localhost sets `c=1; SameSite=None; Secure`; does the engine send it
    back? A 127.0.0.1 page is cross-site (THIRD_PARTY_COOKIES), a localhost page on another
    port same-site (SAME_SITE_COOKIES): what each engine does is in those tables."""
    stored_for = {
        "allowed": THIRD_PARTY_COOKIES[engine.name],
        "same_site": SAME_SITE_COOKIES[engine.name],
    }
    for origin, stored in stored_for.items():
        page = tab(origin)
        _, set_url = api("/api/set-cookie")
        assert page.fetch(set_url, credentials="include")["ok"]
        path, url = api("/api/cookie")
        result = page.fetch(url, credentials="include")
        assert result["ok"]
        assert (result["body"] == "c=1") is stored, origin  # what the upstream got, echoed
        sent = world["upstream"].requests(path)[-1]["headers"].get("Cookie", "")
        assert ("c=1" in sent) is stored, origin


# --- explain, in Chromium only ----------------------------------------------------------
# The table holds Chromium's DevTools codes (`failure.chrome`); `explain --browser` (another
# section of issue 17) brings the other engines' reasons, and this comparison per engine.

EXPLAINED = [
    # page, method, path, headers, credentials
    ("allowed", "GET", "/api/e1", {}, True),
    ("disallowed", "GET", "/api/e2", {}, False),
    ("disallowed", "PUT", "/api/e3", {}, True),
    ("allowed", "PUT", "/api/e4", {"X-Other": "1"}, False),
    ("allowed", "GET", "/public/e5", {}, True),
    ("allowed", "GET", "/public/e6", {}, False),
    ("allowed", "GET", "/nocreds/e7", {}, True),
    ("allowed", "PUT", "/nocreds/e8", {}, True),
    # fetch() upper-cases put (and delete, ...): Chromium preflights PUT, which is allowed
    ("allowed", "put", "/api/e9", {}, True),
    ("allowed", "delete", "/api/e10", {}, False),
    ("allowed", "put", "/lower/e11", {"X-Custom": "1"}, False),
    # other methods are sent as written: `patch` is not PATCH, so the preflight is refused
    ("allowed", "patch", "/api/e12", {}, False),
    # listed exactly, the preflight passes; corsproxy's parser then answers `patch` with 400
    ("allowed", "patch", "/lower/e13", {}, False),
    ("allowed", "FOO", "/lower/e14", {}, True),
    ("allowed", "foo", "/lower/e15", {}, False),
    ("disallowed", "put", "/lower/e16", {}, False),
    # --path as the page writes it: Chromium resolves dot segments (also %2e), encodes spaces
    # and non-ASCII, drops the fragment; corsproxy answers what it sends
    ("allowed", "GET", "/x/../../api/e17", {}, True),
    ("allowed", "GET", "/x/%2e%2e/%2E%2e/api/e18", {}, True),
    ("allowed", "GET", "/api/e 19", {}, True),
    ("allowed", "GET", "/api/\u00fc20", {}, True),
    ("allowed", "GET", "/api/e21#frag", {}, True),
    # forbidden request headers: fetch() drops them without a word (no second Origin; a
    # method override naming TRACE is not sent, so PUT's preflight lists no header)
    ("allowed", "GET", "/api/e22", {"Origin": "https://x.example"}, False),
    ("allowed", "PUT", "/api/e23", {"X-HTTP-Method-Override": "get, Trace"}, False),
    ("allowed", "GET", "/api/e24", {"Sec-Custom": "1", "Cookie": "a=1"}, True),
    # fetch() throws for NUL (no request); sends DEL, which corsproxy's parser answers with 400
    ("allowed", "GET", "/api/e25", {"X-Custom": "a\x00b"}, False),
    ("allowed", "POST", "/api/e26", {"Content-Type": "text/plain\x7f"}, False),
]


@CHROMIUM_ONLY
@pytest.mark.parametrize(("origin", "method", "path", "headers", "credentials"), EXPLAINED)
def test_explain_predicts_what_chromium_reports(
    tab: Any,
    world: dict[str, Any],
    origin: str,
    method: str,
    path: str,
    headers: dict[str, str],
    credentials: bool,
) -> None:
    from corsproxy.commands.explain import explain
    from corsproxy.config import load_config

    predicted = explain(
        load_config(world["config"], env={}),
        world[origin],
        method,
        path,
        list(headers.items()),
        credentials,
    )
    page = tab(origin)
    result = page.fetch(
        f"{world['api']}{path}",
        method=method,
        headers=headers,
        credentials="include" if credentials else "same-origin",
    )
    assert result["ok"] is predicted.allowed
    expected = [] if predicted.failure is None else [predicted.failure.chrome]
    assert page.cors_errors() == expected


# --- the CORS console on the admin listener, in Chromium only -----------------------------
# These test our own UI on the admin listener (escaping, CSP, the explain form), not how an
# engine enforces CORS, so one engine is enough; they drive Playwright's page directly.

HOSTILE = 'https://x.example"><img src=x onerror=window.__pwned=1>'


def _console(engine: Engine, world: dict[str, Any]) -> tuple[Tab, PlaywrightPage]:
    from tests.browsers.chromium import playwright_page

    context = engine.open(world["admin"])
    page = playwright_page(context)
    errors: list[str] = []  # a CSP violation, a missing file: the console says so
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.reload()
    page.wait_for_selector("body[data-loaded='1']", timeout=10_000)
    page.wait_for_timeout(200)
    assert errors == []
    return context, page


@CHROMIUM_ONLY
def test_console_loads_and_its_form_explains_a_refusal(
    engine: Engine, world: dict[str, Any]
) -> None:
    context, page = _console(engine, world)
    try:
        page.wait_for_selector(f"#policy td:has-text('{world['allowed']}')", timeout=10_000)
        page.fill("#explain-origin", world["disallowed"])
        page.fill("#explain-method", "PUT")
        page.fill("#explain-path", "/api/console")
        page.click("#explain-submit")
        page.wait_for_selector("#explain-verdict.blocked", timeout=10_000)
        assert page.text_content("#explain-verdict") == "BLOCKED (origin_not_allowed)"
        output = page.text_content("#explain-output") or ""
        assert "4. Preflight  [BLOCKED]" in output
        assert f"add '{world['disallowed']}' to cors.allow_origins" in output
    finally:
        context.close()


@CHROMIUM_ONLY
def test_console_lists_refusals_and_shows_a_hostile_origin_as_text(
    tab: Any, engine: Engine, world: dict[str, Any]
) -> None:
    refused = tab("disallowed").fetch(f"{world['api']}/api/console-refused")
    assert refused["ok"] is False
    host, port = world["api"].removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    connection.request("GET", "/api/console-hostile", headers={"Origin": HOSTILE})
    connection.getresponse().read()
    connection.close()
    context, page = _console(engine, world)
    try:
        origins = [td.text_content() for td in page.query_selector_all("#refusals td.origin")]
        assert world["disallowed"] in origins and HOSTILE in origins
        # Written as text: no element was made from it, and its handler never ran.
        assert page.query_selector_all("img") == []
        assert page.evaluate("typeof window.__pwned") == "undefined"
        suggestion = page.text_content("#suggestion") or ""
        assert f'"{world["disallowed"]}"' in suggestion  # suggested
        assert "onerror=window.__pwned=1" in suggestion  # listed as malformed, as text
    finally:
        context.close()


@CHROMIUM_ONLY
def test_console_shows_bidirectional_controls_escaped(
    engine: Engine, world: dict[str, Any]
) -> None:
    # U+202E reverses what follows on screen: `https://a\u202eelpmaxe.evil` would read as
    # `https://alive.example`-like text. Sent as UTF-8 bytes by a script, not a browser.
    sneaky = "https://a\u202eelpmaxe.evil"
    host, port = world["api"].removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    connection.putrequest("GET", "/api/console-bidi")
    connection.putheader("Origin", sneaky.encode())
    connection.endheaders()
    connection.getresponse().read()
    connection.close()
    context, page = _console(engine, world)
    try:
        origins = [td.text_content() or "" for td in page.query_selector_all("#refusals td.origin")]
        assert "https://a\\u202eelpmaxe.evil" in origins, origins
        assert not any("\u202e" in o for o in origins)
        page.fill("#explain-origin", sneaky)
        page.fill("#explain-method", "GET")
        page.fill("#explain-path", "/api/console")
        page.click("#explain-submit")
        page.wait_for_selector("#explain-verdict.blocked", timeout=10_000)
        output = page.text_content("#explain-output") or ""
        assert "\\u202e" in output and "\u202e" not in output
    finally:
        context.close()
