"""What the browser suite asks of a browser engine, whichever drives it.

An `Engine` opens `Tab`s: a page on one origin in a fresh browsing context (its own cookies,
HTTP cache and preflight cache), where the suite evaluates page scripts and reads the
engine's own CORS messages. One module per engine implements it (`chromium.py` with
Playwright and the DevTools protocol, `firefox.py` over WebDriver BiDi, `webkit.py` with
WebKitGTK's MiniBrowser); `launch()` picks it. Scenarios assert on outcomes (what the script
could read), never on message text; `explain --browser` is checked against the messages.

Which engines run: CORSPROXY_BROWSERS (comma list, default all three). A missing engine
skips with a message saying how to install it; CORSPROXY_REQUIRE_BROWSER=1 (set by .ci/run)
turns that into a failure.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from aiohttp import web

ENGINES = ("chromium", "firefox", "webkit")
REQUIRE = os.environ.get("CORSPROXY_REQUIRE_BROWSER") == "1"


def selected() -> tuple[str, ...]:
    """The engines this run asks for (CORSPROXY_BROWSERS, default all)."""
    names = os.environ.get("CORSPROXY_BROWSERS", ",".join(ENGINES))
    wanted = tuple(n.strip().lower() for n in names.split(",") if n.strip())
    unknown = [n for n in wanted if n not in ENGINES]
    if unknown:
        raise ValueError(f"CORSPROXY_BROWSERS names unknown engines {unknown}: use {ENGINES}")
    return wanted


@dataclass(frozen=True, slots=True)
class CorsError:
    """One CORS block as the engine reports it.

    `code`: Chromium's DevTools `corsError` name (`MissingAllowOriginHeader`, ...); Firefox's
    reason name as MDN lists it (`CORSMissingAllowOrigin`, `CORSDidNotSucceed`, ...), read
    from the console text; WebKit has no codes: "". `message`: the console text as the engine
    shows it (Chromium's is built by the DevTools front end, so it is "" there).
    `url`: the request's URL when the engine names it."""

    code: str
    message: str
    url: str | None = None


class Tab(Protocol):
    engine: str
    origin: str

    def evaluate(self, script: str, arg: Any = None, timeout: float = 15.0) -> Any:
        """Run `script`, a JavaScript function expression (`async (arg) => ...`), in the
        page with `arg` (JSON) and return its JSON result. A script that throws raises
        `ScriptError`; one that does not settle within `timeout` raises TimeoutError."""

    def cors_errors(self) -> list[CorsError]:
        """Every CORS block the engine reported for this tab so far, in order. Waits until
        the engine has gone quiet (messages may arrive after the fetch settled), bounded."""

    def close(self) -> None: ...


class Engine(Protocol):
    name: str
    version: str

    def open(self, origin: str) -> Tab:
        """A fresh browsing context with one page navigated to `origin` + "/"."""

    def close(self) -> None: ...


class ScriptError(Exception):
    """A page script threw."""


# Every page server of the suite serves the tab page here: a driver that cannot inject a
# script into a page (WebKit's MiniBrowser runs without WebDriver, so that its console reaches
# stdout) opens this page instead of "/"; it has the same origin and runs what the driver sends.
TAB_PATH = "/__tab__"


def add_tab_page(app: web.Application) -> None:
    """Serve tests/browsers/tab.html at TAB_PATH (add before any catch-all route)."""
    html = (Path(__file__).parent / "tab.html").read_text()

    async def tab(request: web.Request) -> web.Response:
        return web.Response(text=html, content_type="text/html")

    app.router.add_get(TAB_PATH, tab)


def missing(name: str) -> str | None:
    """Why `name` cannot run here (and how to install it), or None."""
    try:
        module = importlib.import_module(f"tests.browsers.{name}")
    except ModuleNotFoundError as exc:
        return f"no driver for it ({exc})"
    result: str | None = module.missing()
    return result


def launch(name: str) -> Engine:
    module = importlib.import_module(f"tests.browsers.{name}")
    engine: Engine = module.launch()
    return engine


def need(name: str) -> None:
    """Skip the test unless `name` is selected and can run here; the skip says how to
    install it (a failure instead when CI requires every engine)."""
    import pytest

    if name not in selected():
        pytest.skip(f"CORSPROXY_BROWSERS does not select {name}")
    reason = missing(name)
    if reason is not None:
        if REQUIRE:
            pytest.fail(f"CORSPROXY_REQUIRE_BROWSER=1 but {name}: {reason}")
        pytest.skip(f"BROWSER ENGINE {name} SKIPPED: {reason}")


def launched(name: str) -> Iterator[Engine]:
    """For an engine fixture (`yield from launched(name)`): the running engine, closed after
    (see `need` for an engine that cannot run)."""
    need(name)
    running = launch(name)
    try:
        yield running
    finally:
        running.close()
