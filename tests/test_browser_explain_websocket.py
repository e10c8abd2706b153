"""`explain --browser` for a refused WebSocket handshake, against the real engines: each
engine's console line and the close code the page sees must be what explain predicts.

The engine interface reports CORS errors only; a WebSocket's console line is read from each
driver's raw console (Playwright's console event, the Firefox driver's log entries, the
MiniBrowser's output).
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from aiohttp import web

from tests.browsers.engine import Engine, Tab, launched, selected
from tests.browsers.servers import ThreadedServers, page_app
from tests.net import free_port, start_cli

OPEN = """(url) => new Promise((resolve) => {
  const events = [];
  const ws = new WebSocket(url);
  ws.onerror = () => events.push('error');
  ws.onclose = (e) => { events.push('close ' + e.code); resolve(events); };
  setTimeout(() => resolve(events.concat('timeout')), 10000);
})"""


async def _upstream(request: web.Request) -> web.Response:
    return web.Response(text="ok")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    servers, api = ThreadedServers(), web.Application()
    api.router.add_route("*", "/{tail:.*}", _upstream)
    upstream, page = servers.serve(api), servers.origin(page_app())
    config = tmp_path_factory.mktemp("explain-ws") / "corsproxy.yaml"
    config.write_text(
        f"upstream: http://127.0.0.1:{upstream}\n"
        "routes:\n  - path_prefix: /z\n    cors:\n      allow_origins: [https://other.example]\n"
    )
    port = free_port()
    proc, _ = start_cli("--config", str(config), "--listen", f"127.0.0.1:{port}")
    try:
        yield {"config": config, "page": page, "ws": f"ws://localhost:{port}/z/ws"}
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=10)  # (and closes its pipes)
        servers.stop()


@pytest.fixture(scope="module", params=selected())
def engine(request: pytest.FixtureRequest) -> Iterator[Engine]:
    yield from launched(request.param)


def _console_reader(engine: str, tab: Tab) -> Callable[[], list[str]]:
    """The tab's console lines so far, whatever they are (not only CORS errors)."""
    if engine == "chromium":
        from tests.browsers.chromium import playwright_page

        lines: list[str] = []
        playwright_page(tab).on("console", lambda message: lines.append(message.text))
        return lambda: list(lines)
    if engine == "firefox":
        driver, number = tab._driver, tab._id  # type: ignore[attr-defined]
        return lambda: list(driver.call("logs", 10, tab=number, quiet=0.5, max=3.0))
    marker = "CONSOLE "

    def webkit() -> list[str]:
        tab.cors_errors()  # waits until the MiniBrowser's output is quiet (bounded)
        lines = tab.console()  # type: ignore[attr-defined]
        return [line.split(" ERROR ", 1)[-1] for line in lines if marker in line]

    return webkit


def test_a_refused_websocket_shows_the_predicted_console_and_close(
    engine: Engine, world: dict[str, Any]
) -> None:
    from corsproxy.commands.cli import cli  # noqa: F401 (the command's imports, as users run)
    from corsproxy.commands.explain import websocket_url

    url = websocket_url(world["ws"])
    assert url is not None
    predicted = _explained(world, url, engine)
    refused = predicted.websocket_failure
    assert not predicted.allowed and refused is not None
    tab = engine.open(world["page"])
    try:
        console = _console_reader(engine.name, tab)
        events = tab.evaluate(OPEN, world["ws"])
        assert events == ["error", f"close {refused.close_code}"]
        deadline = time.monotonic() + 10
        seen = console()
        while not set(refused.messages) <= set(seen) and time.monotonic() < deadline:
            time.sleep(0.2)
            seen = console()
        assert set(refused.messages) <= set(seen), (seen, refused.messages)
    finally:
        tab.close()


def _explained(world: dict[str, Any], url: tuple[str, str], engine: Engine) -> Any:
    """explain's prediction for the page's `new WebSocket()` to the split URL `url`."""
    from corsproxy.commands.explain import explain
    from corsproxy.config import load_config

    return explain(
        load_config(world["config"], env={}),
        world["page"],
        path=url[0],
        websocket=True,
        proxy_origin=url[1],
        engine=engine.name,
    )


THROW = """(url) => { try { new WebSocket(url); return 'opened'; }
  catch (e) { return String(e); } }"""


def test_a_websocket_url_with_a_fragment_throws_as_predicted(
    engine: Engine, world: dict[str, Any]
) -> None:
    """new WebSocket() with a #fragment throws a SyntaxError (nothing is sent): explain's
    websocket_url_fragment, the engine's exception text and its console line (WebKit)."""
    from corsproxy.commands.explain import websocket_url

    written = world["ws"] + '?q=1#fr ag"x'
    url = websocket_url(written)
    assert url is not None
    predicted = _explained(world, url, engine)
    thrown = predicted.websocket_thrown
    assert predicted.reason == "websocket_url_fragment" and thrown is not None
    tab = engine.open(world["page"])
    try:
        console = _console_reader(engine.name, tab)
        assert tab.evaluate(THROW, written) == thrown.exception
        deadline = time.monotonic() + 10
        seen = console()
        while not set(thrown.messages) <= set(seen) and time.monotonic() < deadline:
            time.sleep(0.2)
            seen = console()
        assert set(thrown.messages) <= set(seen), (seen, thrown.messages)
    finally:
        tab.close()
