"""End to end in headless Chromium: what a page's script can read through corsproxy.

Origins: the allowed page http://127.0.0.1:P1, a page the policy does not allow
http://127.0.0.1:P3, a same-site page http://localhost:P4, and the proxy http://localhost:P2
(a `corsproxy serve` subprocess) in front of a recording upstream. Preflights are counted and
Chromium's own block reasons read through the DevTools protocol.

Without Chromium and Playwright the suite skips loudly; CORSPROXY_REQUIRE_BROWSER=1 (set by
.ci/run) turns that skip into a failure.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.net import free_port, start_cli

CHROMIUM = os.environ.get("CORSPROXY_CHROMIUM", "/usr/bin/chromium")
REQUIRE = os.environ.get("CORSPROXY_REQUIRE_BROWSER") == "1"
LAUNCH_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _missing() -> str | None:
    if not Path(CHROMIUM).exists():
        return f"Chromium not found at {CHROMIUM} (apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright for Python is not installed (pip install playwright)"
    return None


if (reason := _missing()) is not None:
    if REQUIRE:
        raise RuntimeError(f"CORSPROXY_REQUIRE_BROWSER=1 but {reason}")
    pytest.skip(f"BROWSER SUITE SKIPPED: {reason}", allow_module_level=True)

from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright  # noqa: E402


class Upstream:
    """The legacy API: knows nothing of CORS (except where a test says so); records all."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app

    def requests(self, path: str) -> list[dict[str, Any]]:
        return [s for s in self.seen if s["path"] == path]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.path == "/ws":
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
        path = request.path
        if path == "/api/redirect":
            return web.Response(status=302, headers={"Location": "/api/target"})
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
            text=f"{request.method} {path} {body}",
            headers={"X-Exposed": "visible", "X-Hidden": "secret"},
        )


PAGE = "<!doctype html><html><head><title>page</title></head><body>page</body></html>"


class Servers:
    """The upstream and the page servers, on a private event loop in a thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.upstream = Upstream()
        self.runners: list[web.AppRunner] = []

    def start(self) -> dict[str, int]:
        self.thread.start()
        return asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)

    async def _serve(self, app: web.Application, host: str) -> int:
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1)
        await runner.setup()
        site = web.TCPSite(runner, host, 0)
        await site.start()
        self.runners.append(runner)
        return int(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]

    async def _start(self) -> dict[str, int]:
        async def page(request: web.Request) -> web.Response:
            return web.Response(text=PAGE, content_type="text/html")

        def page_app() -> web.Application:
            app = web.Application()
            app.router.add_get("/{tail:.*}", page)
            return app

        return {
            "upstream": await self._serve(self.upstream.app(), "127.0.0.1"),
            "allowed": await self._serve(page_app(), "127.0.0.1"),
            "disallowed": await self._serve(page_app(), "127.0.0.1"),
            "same_site": await self._serve(page_app(), "127.0.0.1"),
        }

    def stop(self) -> None:
        async def cleanup() -> None:
            for runner in self.runners:
                await runner.cleanup()

        asyncio.run_coroutine_threadsafe(cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    servers = Servers()
    ports = servers.start()
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
    try:
        yield {
            "servers": servers,
            "upstream": servers.upstream,
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
        proc.communicate(timeout=10)
        servers.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        yield chromium
        chromium.close()


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


class Tab:
    """A page on one origin in a fresh browser context, with DevTools network events."""

    def __init__(self, context: BrowserContext, origin: str) -> None:
        self.context = context
        self.page: Page = context.new_page()
        self.events: list[tuple[str, dict[str, Any]]] = []
        cdp = context.new_cdp_session(self.page)
        cdp.send("Network.enable")
        for name in ("Network.requestWillBeSent", "Network.loadingFailed"):
            cdp.on(name, lambda event, name=name: self.events.append((name, event)))
        self.page.goto(f"{origin}/")

    def fetch(self, url: str, **init: Any) -> dict[str, Any]:
        result: dict[str, Any] = self.page.evaluate(FETCH, [url, init])
        self.page.wait_for_timeout(50)  # let the DevTools events arrive
        return result

    def xhr(
        self, url: str, method: str = "GET", body: str | None = None,
        headers: dict[str, str] | None = None, credentials: bool = False,
    ) -> dict[str, Any]:  # fmt: skip
        result: dict[str, Any] = self.page.evaluate(
            XHR, [url, method, body, headers or {}, credentials]
        )
        self.page.wait_for_timeout(50)
        return result

    def preflights(self) -> int:
        return sum(
            1
            for name, event in self.events
            if name == "Network.requestWillBeSent" and event["request"]["method"] == "OPTIONS"
        )

    def cors_errors(self) -> list[str]:
        return [
            event["corsErrorStatus"]["corsError"]
            for name, event in self.events
            if name == "Network.loadingFailed" and event.get("corsErrorStatus")
        ]


@pytest.fixture
def tab(browser: Browser, world: dict[str, Any]) -> Iterator[Any]:
    contexts: list[BrowserContext] = []

    def open_tab(origin: str = "allowed") -> Tab:
        context = browser.new_context()
        contexts.append(context)
        return Tab(context, world[origin])

    yield open_tab
    for context in contexts:
        context.close()


# --- scenarios ---------------------------------------------------------------------


def test_simple_get_reads_body_and_only_exposed_headers(tab: Any, world: dict[str, Any]) -> None:
    page = tab()
    result = page.fetch(f"{world['api']}/api/simple")
    assert result["ok"] and result["status"] == 200
    assert result["body"] == "GET /api/simple "
    assert result["headers"].get("x-exposed") == "visible"
    assert "x-hidden" not in result["headers"]
    assert page.preflights() == 0


def test_post_text_plain_needs_no_preflight(tab: Any, world: dict[str, Any]) -> None:
    page = tab()
    result = page.fetch(
        f"{world['api']}/api/text", method="POST", body="hi", headers={"Content-Type": "text/plain"}
    )
    assert result["ok"] and result["status"] == 200 and result["body"] == "POST /api/text hi"
    assert page.preflights() == 0


@pytest.mark.parametrize("method", ["POST-JSON", "PUT", "PATCH", "DELETE"])
def test_preflighted_methods_make_one_preflight(
    tab: Any, world: dict[str, Any], method: str
) -> None:
    page = tab()
    init: dict[str, Any] = {"method": method.split("-")[0]}
    if method == "POST-JSON":
        init.update(body='{"a":1}', headers={"Content-Type": "application/json"})
    path = f"/api/{method.lower()}"
    result = page.fetch(f"{world['api']}{path}", **init)
    assert result["ok"] and result["status"] == 200
    assert result["body"].startswith(f"{init['method']} {path}")
    assert page.preflights() == 1
    assert [s["method"] for s in world["upstream"].requests(path)] == [init["method"]]


def test_custom_request_header_is_preflighted_and_reaches_the_upstream(
    tab: Any, world: dict[str, Any]
) -> None:
    page = tab()
    result = page.fetch(f"{world['api']}/api/custom", headers={"X-Custom": "42"})
    assert result["ok"] and result["status"] == 200
    assert page.preflights() == 1
    assert world["upstream"].requests("/api/custom")[-1]["headers"]["X-Custom"] == "42"


def test_credentialed_get_and_put_from_the_allowed_origin(tab: Any, world: dict[str, Any]) -> None:
    page = tab()
    get = page.fetch(f"{world['api']}/api/cred-get", credentials="include")
    assert get["ok"] and get["status"] == 200
    put = page.fetch(f"{world['api']}/api/cred-put", method="PUT", credentials="include")
    assert put["ok"] and put["status"] == 200
    assert page.preflights() == 1


def test_the_disallowed_origin_is_blocked(tab: Any, world: dict[str, Any]) -> None:
    page = tab("disallowed")
    get = page.fetch(f"{world['api']}/api/evil-get", credentials="include")
    assert not get["ok"] and "Failed to fetch" in get["error"]
    put = page.fetch(f"{world['api']}/api/evil-put", method="PUT", credentials="include")
    assert not put["ok"]
    assert page.preflights() == 1
    # Chromium checks Access-Control-Allow-Origin before the preflight's 403 status.
    assert page.cors_errors() == ["MissingAllowOriginHeader", "PreflightMissingAllowOriginHeader"]
    assert world["upstream"].requests("/api/evil-put") == []  # the real PUT never left


def test_upstream_wildcard_with_credentials_is_replaced(tab: Any, world: dict[str, Any]) -> None:
    page = tab()
    result = page.fetch(f"{world['api']}/api/upstream-cors", credentials="include")
    assert result["ok"] and result["body"] == "own cors"
    assert page.cors_errors() == []


def test_preflights_are_cached_for_max_age(tab: Any, world: dict[str, Any]) -> None:
    page = tab()
    for _ in range(2):
        assert page.fetch(f"{world['api']}/api/cached-preflight", method="PUT")["status"] == 200
    assert page.preflights() == 1


def test_upstream_redirect_is_followed_by_the_browser(tab: Any, world: dict[str, Any]) -> None:
    result = tab().fetch(f"{world['api']}/api/redirect")
    assert result["ok"] and result["status"] == 200 and result["redirected"]
    assert result["body"] == "GET /api/target "


def test_upstream_500_is_readable(tab: Any, world: dict[str, Any]) -> None:
    result = tab().fetch(f"{world['api']}/api/error", credentials="include")
    assert result["ok"] and result["status"] == 500 and result["body"] == "upstream error"


def test_upstream_down_gives_a_readable_502(tab: Any, world: dict[str, Any]) -> None:
    result = tab().fetch(f"{world['api']}/down/x", credentials="include")
    assert result["ok"] and result["status"] == 502
    assert "cannot be reached" in result["body"]


def test_cached_response_never_leaks_across_origins(tab: Any, world: dict[str, Any]) -> None:
    page = tab()
    url = f"{world['api']}/api/cacheable"
    opaque = page.fetch(url, mode="no-cors")  # no Origin: answered without ACAO, cacheable
    assert opaque["ok"] and opaque["status"] == 0
    cors = page.fetch(url)  # Vary: Origin makes the cache miss instead of serving the above
    assert cors["ok"] and cors["status"] == 200 and cors["body"] == "cacheable"
    assert len(world["upstream"].requests("/api/cacheable")) == 2
    other = tab("disallowed")
    assert not other.fetch(url)["ok"]


def test_xmlhttprequest_flows(tab: Any, world: dict[str, Any]) -> None:
    page = tab()
    simple = page.xhr(f"{world['api']}/api/xhr")
    assert simple == {"ok": True, "status": 200, "body": "GET /api/xhr ",
                      "exposed": "visible", "hidden": None}  # fmt: skip
    put = page.xhr(f"{world['api']}/api/xhr-put", "PUT", "x", {"X-Custom": "1"}, credentials=True)
    assert put["ok"] and put["status"] == 200
    assert page.preflights() == 1
    blocked = tab("disallowed").xhr(f"{world['api']}/api/xhr-evil", credentials=True)
    assert blocked == {"ok": False, "status": 0}


def test_websockets_follow_the_allow_list(tab: Any, world: dict[str, Any]) -> None:
    ws_url = world["api"].replace("http://", "ws://") + "/ws"
    assert tab().page.evaluate(WEBSOCKET, ws_url) == {"ok": True, "data": "echo:hi"}
    assert tab("disallowed").page.evaluate(WEBSOCKET, ws_url) == {"ok": False}


def test_websockets_on_a_route_without_cors_are_same_origin_only(
    tab: Any, world: dict[str, Any]
) -> None:
    ws_url = world["api"].replace("http://", "ws://") + "/internal/ws"
    assert tab("allowed").page.evaluate(WEBSOCKET, ws_url) == {"ok": False}
    assert tab("api_page").page.evaluate(WEBSOCKET, ws_url) == {"ok": True, "data": "echo:hi"}


def test_a_websocket_message_over_the_limit_closes_with_1009(
    tab: Any, world: dict[str, Any]
) -> None:
    ws_url = world["api"].replace("http://", "ws://") + "/ws"
    # The echo ("echo:" + message) of a message 5 bytes under the limit is exactly at it.
    at_limit = [ws_url, 1024 * 1024 - 5]
    assert tab().page.evaluate(WEBSOCKET_CLOSE, at_limit) == {"timeout": True}
    result = tab().page.evaluate(WEBSOCKET_CLOSE, [ws_url, 1024 * 1024 + 1])
    assert result.get("code") == 1009, result


def test_cookies_cross_site_and_same_site(tab: Any, world: dict[str, Any]) -> None:
    """Recorded Chromium behaviour: a 127.0.0.1 page calling the localhost API is cross-site,
    and its third-party cookies are not stored even with SameSite=None; Secure. A localhost
    page on another port is same-site, and the Secure cookie works over http://localhost."""
    for origin, stored in (("allowed", False), ("same_site", True)):
        page = tab(origin)
        assert page.fetch(f"{world['api']}/api/set-cookie", credentials="include")["ok"]
        result = page.fetch(f"{world['api']}/api/cookie", credentials="include")
        assert result["ok"]
        assert (result["body"] == "c=1") is stored, origin


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


# --- the CORS console on the admin listener -------------------------------------------

HOSTILE = 'https://x.example"><img src=x onerror=window.__pwned=1>'


def _console(browser: Browser, world: dict[str, Any]) -> tuple[BrowserContext, Page]:
    context = browser.new_context()
    page = context.new_page()
    errors: list[str] = []  # a CSP violation, a missing file: the console says so
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(f"{world['admin']}/")
    page.wait_for_selector("body[data-loaded='1']", timeout=10_000)
    page.wait_for_timeout(200)
    assert errors == []
    return context, page


def test_console_loads_and_its_form_explains_a_refusal(
    browser: Browser, world: dict[str, Any]
) -> None:
    context, page = _console(browser, world)
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


def test_console_lists_refusals_and_shows_a_hostile_origin_as_text(
    tab: Any, browser: Browser, world: dict[str, Any]
) -> None:
    import http.client

    refused = tab("disallowed").fetch(f"{world['api']}/api/console-refused")
    assert refused["ok"] is False
    host, port = world["api"].removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    connection.request("GET", "/api/console-hostile", headers={"Origin": HOSTILE})
    connection.getresponse().read()
    connection.close()
    context, page = _console(browser, world)
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


def test_console_shows_bidirectional_controls_escaped(
    browser: Browser, world: dict[str, Any]
) -> None:
    import http.client

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
    context, page = _console(browser, world)
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
