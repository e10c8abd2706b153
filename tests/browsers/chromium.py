"""The Chromium driver (tests/browsers/engine.py): Playwright with the system Chromium.

Each tab is a fresh Playwright BrowserContext (its own cookies, HTTP cache and preflight
cache) with one page. Chromium's CORS verdicts come from the DevTools protocol:
`Network.loadingFailed.corsErrorStatus.corsError` is `CorsError.code`, the request's URL (from
`Network.requestWillBeSent`) is `url`; the console text is built by the DevTools front end, so
`message` is "". A page script is raced against a timer in the page, so one that never settles
raises TimeoutError and leaves the tab usable.

Chromium-only tests (our CORS console, the TLS listener) reach Playwright itself through
`playwright_page(tab)` and `ChromiumEngine.browser`.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tests.browsers.engine import CorsError, ScriptError, Tab

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Page, Playwright

CHROMIUM = os.environ.get("CORSPROXY_CHROMIUM", "/usr/bin/chromium")
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
_TIMEOUT = "__corsproxy_evaluate_timeout__"
QUIET = 0.15  # seconds without a new DevTools event before cors_errors() answers
QUIET_BOUND = 5.0


def missing() -> str | None:
    if not Path(CHROMIUM).exists():
        return f"Chromium not found at {CHROMIUM} (apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright for Python is not installed (pip install playwright)"
    return None


class ChromiumTab:
    def __init__(self, context: BrowserContext, origin: str) -> None:
        self.engine = "chromium"
        self.origin = origin
        self.context = context
        self.page: Page = context.new_page()
        self.urls: dict[str, str] = {}
        self.pending: set[str] = set()  # sent, neither finished nor failed yet
        self.errors: list[CorsError] = []
        self.last_event = time.monotonic()
        cdp = context.new_cdp_session(self.page)
        cdp.send("Network.enable")
        cdp.on("Network.requestWillBeSent", self._sent)
        cdp.on("Network.loadingFailed", self._failed)
        cdp.on("Network.loadingFinished", self._finished)
        self.page.goto(f"{origin}/")

    def _sent(self, event: dict[str, Any]) -> None:
        self.last_event = time.monotonic()
        self.urls[event["requestId"]] = event["request"]["url"]
        self.pending.add(event["requestId"])

    def _finished(self, event: dict[str, Any]) -> None:
        self.last_event = time.monotonic()
        self.pending.discard(event["requestId"])

    def _failed(self, event: dict[str, Any]) -> None:
        self.last_event = time.monotonic()
        self.pending.discard(event["requestId"])
        status = event.get("corsErrorStatus")
        if status:
            url = self.urls.get(event["requestId"])
            self.errors.append(CorsError(status["corsError"], "", url))

    def evaluate(self, script: str, arg: Any = None, timeout: float = 15.0) -> Any:
        from playwright.sync_api import Error

        raced = (
            "(arg) => Promise.race([Promise.resolve().then(() => (" + script + ")(arg)), "
            "new Promise((_, reject) => setTimeout(() => reject(new Error("
            + json.dumps(_TIMEOUT)
            + f")), {int(timeout * 1000)}))])"
        )
        try:
            return self.page.evaluate(raced, arg)
        except Error as exc:
            if _TIMEOUT in exc.message:
                raise TimeoutError(f"the page script did not settle within {timeout} s") from None
            raise ScriptError(exc.message) from None

    def cors_errors(self) -> list[CorsError]:
        # Quiet: every request the tab sent has finished or failed, and no event came for
        # QUIET seconds (a WebSocket or an EventSource still open keeps it waiting: bounded).
        # Events arrive on Playwright's dispatcher, which runs while we wait on the page.
        deadline = time.monotonic() + QUIET_BOUND
        while time.monotonic() < deadline and (
            self.pending or time.monotonic() - self.last_event < QUIET
        ):
            self.page.wait_for_timeout(50)
        return list(self.errors)

    def close(self) -> None:
        self.context.close()


def playwright_page(tab: Tab) -> Page:
    """The Playwright page behind a Chromium tab (for Chromium-only tests)."""
    assert isinstance(tab, ChromiumTab), f"{tab.engine} tab: Playwright drives Chromium only"
    return tab.page


class ChromiumEngine:
    def __init__(self, args: list[str] | None = None) -> None:
        from playwright.sync_api import sync_playwright

        self.name = "chromium"
        self._manager = sync_playwright()
        self.playwright: Playwright = self._manager.start()
        try:
            self.browser: Browser = self.playwright.chromium.launch(
                executable_path=CHROMIUM, args=[*LAUNCH_ARGS, *(args or [])], timeout=30_000
            )
        except BaseException:
            self._manager.__exit__(None, None, None)
            raise
        self.version = self.browser.version
        self.tabs: list[ChromiumTab] = []

    def open(self, origin: str) -> ChromiumTab:
        tab = ChromiumTab(self.browser.new_context(), origin)
        self.tabs.append(tab)
        return tab

    def close(self) -> None:
        try:
            self.browser.close()  # Playwright kills the browser's process group if it must
        finally:
            self._manager.__exit__(None, None, None)


def launch() -> ChromiumEngine:
    return ChromiumEngine()
