"""What the WebKit driver (tests/browsers/webkit.py) promises beyond the engine contract.

Its console parser turns WebKit's lines into CorsErrors and drops nothing about CORS; the tab
page it drives is invisible to what tests observe (one request, to the control server only,
nothing on the console); a script may navigate the tab to another origin's tab page and the
next script runs there; closing the engine leaves no process behind, even of a browser that
ignores SIGTERM; a machine without MiniBrowser is told what to install.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.browsers import webkit
from tests.browsers.engine import TAB_PATH, CorsError, need
from tests.browsers.servers import ThreadedServers, page_app

PAGE = "http://127.0.0.1:1111"
API = "http://127.0.0.1:2222"


def test_the_console_parser_pairs_each_reason_with_its_url_and_drops_nothing_about_cors() -> None:
    parser = webkit.ConsoleParser()
    for line in [
        f"{PAGE}/:1:35: CONSOLE LOG hello",
        f"CONSOLE SECURITY ERROR Origin {PAGE} is not allowed by Access-Control-Allow-Origin."
        " Status code: 200",
        f"CONSOLE JS ERROR Fetch API cannot load {API}/a due to access control checks.",
        "CONSOLE SECURITY ERROR Preflight response is not successful. Status code: 403",
        f"{PAGE}/:1:9: CONSOLE LOG between the two lines",
        f"CONSOLE JS ERROR XMLHttpRequest cannot load {API}/b due to access control checks.",
        f"CONSOLE JS ERROR EventSource cannot load {API}/c due to access control checks.",
        "CONSOLE SECURITY ERROR Request header field x-a is not allowed by "
        "Access-Control-Allow-Headers.",
        "CONSOLE SECURITY ERROR Refused to load because it violates a Content Security Policy",
        "CONSOLE JS ERROR ReferenceError: Can't find variable: x",
        "CONSOLE NETWORK ERROR WebSocket connection to 'ws://127.0.0.1:2222/' failed",
    ]:
        parser.feed(line)
    assert parser.errors() == [
        CorsError(
            "",
            f"Origin {PAGE} is not allowed by Access-Control-Allow-Origin. Status code: 200",
            f"{API}/a",
        ),
        CorsError("", "Preflight response is not successful. Status code: 403", f"{API}/b"),
        CorsError("", f"EventSource cannot load {API}/c due to access control checks.", f"{API}/c"),
        CorsError("", "Request header field x-a is not allowed by Access-Control-Allow-Headers."),
    ]
    assert parser.errors() == parser.errors()


def test_missing_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(webkit, "MINIBROWSER_GLOBS", ("/nonexistent/*/MiniBrowser",))
    reason = webkit.missing()
    assert reason is not None
    assert "no MiniBrowser" in reason and "apt-get install" in reason
    assert "webkit2gtk-driver" in reason and "xvfb" in reason


class Pages:
    """Two page origins (127.0.0.1 and localhost) serving the tab page, counting requests."""

    def __init__(self) -> None:
        self.seen: list[str] = []

        @web.middleware
        async def count(request: web.Request, handler: Any) -> web.StreamResponse:
            self.seen.append(f"{request.method} {request.path}")
            response: web.StreamResponse = await handler(request)
            return response

        self.servers = ThreadedServers()
        self.origins = (
            self.servers.origin(page_app([count]), "127.0.0.1"),
            self.servers.origin(page_app([count]), "localhost"),
        )


@pytest.fixture(scope="module")
def pages() -> Iterator[Pages]:
    servers = Pages()
    yield servers
    servers.servers.stop()


def _origins(pages: Pages) -> tuple[str, str]:
    return pages.origins


@pytest.fixture(scope="module")
def engine() -> Iterator[webkit.WebKit]:
    need("webkit")
    running = webkit.launch()
    yield running
    running.close()


def test_the_tab_page_makes_one_request_and_writes_nothing_to_the_console(
    engine: webkit.WebKit, pages: Pages
) -> None:
    page, _ = _origins(pages)
    pages.seen.clear()
    tab = engine.open(page)
    try:
        assert tab.evaluate("async () => { await new Promise(r => setTimeout(r, 300)); return 1; }")
        assert [tab.evaluate("(n) => n * 2", n) for n in range(3)] == [0, 2, 4]
        with pytest.raises(TypeError):
            tab.evaluate("(x) => x", object())  # not JSON: refused here, nothing sent
        assert tab.evaluate("() => 'still usable'") == "still usable"
        assert tab.cors_errors() == []
        assert tab.console() == []
        assert pages.seen == [f"GET {TAB_PATH}"]  # no favicon, nothing else
    finally:
        tab.close()


def test_a_script_may_navigate_the_tab_and_the_next_script_runs_on_the_new_page(
    engine: webkit.WebKit, pages: Pages
) -> None:
    page, other = _origins(pages)
    tab = engine.open(page)
    try:
        here = tab.evaluate("() => location.href")
        there = here.replace(page, other)
        assert there != here
        pages.seen.clear()
        tab.evaluate("(url) => { setTimeout(() => { location.href = url; }, 50); }", there)
        deadline = time.monotonic() + 20
        while f"GET {TAB_PATH}" not in pages.seen[-1:]:
            assert time.monotonic() < deadline, "the tab never loaded the new page"
            time.sleep(0.1)
        time.sleep(1)  # the new page's first poll
        # The old page's long poll must not take this script away with it.
        assert tab.evaluate("() => location.origin", timeout=10) == other
    finally:
        tab.close()


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z"


def _group(pgid: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                members.append(int(entry.name))
    return members


def test_closing_the_engine_leaves_no_process_behind(pages: Pages) -> None:
    need("webkit")
    page, _ = _origins(pages)
    running = webkit.launch()
    try:
        tab, hung = running.open(page), running.open(page)
        assert tab.evaluate("() => 1") == hung.evaluate("() => 1") == 1
        assert running.xvfb is not None
        groups = [running.xvfb.pid, tab.process.pid, hung.process.pid]
        browser = _group(tab.process.pid) + _group(hung.process.pid)
        assert len(browser) >= 4, "MiniBrowser and its web/network processes, twice"
        os.kill(hung.process.pid, signal.SIGSTOP)  # a browser that ignores SIGTERM
    finally:
        running.close()
    deadline = time.monotonic() + 10
    while any(_group(pgid) for pgid in groups) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [pid for pgid in groups for pid in _group(pgid)] == []
    assert not any(_alive(pid) for pid in browser)
    assert not os.path.exists(tab.home) and not os.path.exists(hung.home)
