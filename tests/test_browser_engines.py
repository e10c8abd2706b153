"""The contract every browser engine driver keeps (tests/browsers/engine.py), per engine.

A page origin and an API origin on loopback; each selected engine (CORSPROXY_BROWSERS) must
evaluate page scripts, report a script's exception and a script that never settles, report
its own CORS block for a refused fetch (and none for an allowed one), and give each tab a
fresh browsing context. A missing engine skips (fails under CORSPROXY_REQUIRE_BROWSER=1).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from aiohttp import web

from tests.browsers.engine import Engine, ScriptError, launched, selected
from tests.browsers.servers import ThreadedServers, page_app

# What fetch() rejects with when CORS blocks it, per engine (the table).
FETCH_ERRORS = {
    "chromium": "TypeError: Failed to fetch",
    "firefox": "TypeError: NetworkError when attempting to fetch resource.",
    "webkit": "TypeError: Load failed",
}


async def _api(request: web.Request) -> web.Response:
    allow = {"Access-Control-Allow-Origin": "*"} if request.path == "/allow" else {}
    return web.Response(text="api", headers=allow)


@pytest.fixture(scope="module")
def origins() -> Iterator[tuple[str, str]]:
    """A page origin and an API origin (ACAO on /allow only)."""
    servers, api = ThreadedServers(), web.Application()
    api.router.add_get("/{tail:.*}", _api)
    yield servers.origin(page_app()), servers.origin(api)
    servers.stop()


@pytest.fixture(scope="module", params=selected())
def engine(request: pytest.FixtureRequest) -> Iterator[Engine]:
    name: str = request.param
    for running in launched(name):
        assert running.name == name and running.version
        yield running


FETCH = """async (url) => {
  try { const r = await fetch(url); return {ok: true, body: await r.text()}; }
  catch (e) { return {ok: false, error: String(e)}; }
}"""


def test_evaluate_returns_json_and_reports_throws_and_hangs(
    engine: Engine, origins: tuple[str, str]
) -> None:
    page, _ = origins
    tab = engine.open(page)
    try:
        assert tab.engine == engine.name and tab.origin == page
        assert tab.evaluate("(x) => x + 1", 41) == 42
        assert tab.evaluate("async ([a, b]) => ({sum: a + b, where: location.origin})", [1, 2]) == {
            "sum": 3,
            "where": page,
        }
        with pytest.raises(ScriptError, match="boom"):
            tab.evaluate("() => { throw new Error('boom'); }")
        with pytest.raises(ScriptError, match="async boom"):
            tab.evaluate("async () => { throw new Error('async boom'); }")
        with pytest.raises(TimeoutError):
            tab.evaluate("() => new Promise(() => {})", timeout=1)
        assert tab.evaluate("() => 'still usable'") == "still usable"
    finally:
        tab.close()


def test_a_refused_fetch_is_reported_and_an_allowed_one_is_not(
    engine: Engine, origins: tuple[str, str]
) -> None:
    page, api = origins
    tab = engine.open(page)
    try:
        assert tab.evaluate(FETCH, f"{api}/allow") == {"ok": True, "body": "api"}
        assert tab.cors_errors() == []
        refused = tab.evaluate(FETCH, f"{api}/deny")
        assert refused == {"ok": False, "error": FETCH_ERRORS[engine.name]}
        errors = tab.cors_errors()
        assert errors, "the engine's CORS message was not captured"
        if engine.name in ("chromium", "firefox"):
            assert errors[0].code in ("MissingAllowOriginHeader", "CORSMissingAllowOrigin")
        if engine.name in ("firefox", "webkit"):
            assert "Access-Control-Allow-Origin" in errors[0].message
        assert tab.cors_errors() == errors  # reading them again changes nothing
    finally:
        tab.close()


def test_each_tab_is_a_fresh_browsing_context(engine: Engine, origins: tuple[str, str]) -> None:
    page, _ = origins
    first = engine.open(page)
    try:
        first.evaluate("() => { document.cookie = 'c=1; path=/'; localStorage.setItem('k', 'v'); }")
        assert first.evaluate("() => [document.cookie, localStorage.getItem('k')]") == ["c=1", "v"]
        second = engine.open(page)  # open while the first is still open
        try:
            state = second.evaluate("() => [document.cookie, localStorage.getItem('k')]")
            assert state == ["", None]
            assert first.evaluate("() => document.cookie") == "c=1"
        finally:
            second.close()
    finally:
        first.close()
