"""Chromium's Local Network Access against `explain --private-network --browser chromium`.

Everything here runs on loopback, so Chromium is told which pages are public with
`--ip-address-space-overrides`: the page is public, the proxy is on loopback (or, for the
second proxy, in the private `local` space). Chromium 142+ then sends nothing without the
user's permission (a headless Chromium denies the prompt): fetch() fails, DevTools names
`LocalNetworkAccessPermissionDenied`, the console names the address space, and corsproxy's
access log shows that no request reached it. `explain` must predict exactly that. A page in
the proxy's own address space (no override) is the control: it reaches corsproxy and reads
the answer, as explain says without --private-network. Chromium only: Firefox and WebKit
have no such override flag (see the report in README's *Local Network Access*).
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from corsproxy.commands.explain import explain
from corsproxy.config import load_config
from tests.browsers.access_log import AccessLog
from tests.browsers.chromium import ChromiumEngine, ChromiumTab, playwright_page
from tests.browsers.engine import need
from tests.browsers.servers import ThreadedServers, page_app
from tests.net import free_port, start_cli

FETCH = (
    "async ([url, method]) => { try { const r = await fetch(url, {method}); "
    "return {ok: true, status: r.status, body: await r.text()}; } "
    "catch (e) { return {ok: false, error: String(e)}; } }"
)
# (the path names the case, so each request is counted on its own in the access log)
CASES = [
    ("loopback-name", "GET", "/d/echo/1?c=70"),
    ("loopback-name", "PUT", "/d/echo/2?c=70"),
    ("loopback-ip", "GET", "/d/echo/3?c=70"),
    ("loopback-ip", "PUT", "/pn/echo/4?c=70"),  # allow_private_network: true changes nothing
    ("local", "GET", "/d/echo/5?c=70"),
    ("local", "PUT", "/pn/echo/6?c=70"),
]
# What explain is told the proxy's address is, for the proxy Chromium puts in `local` (it
# really listens on 127.0.0.1: the override makes Chromium treat it as a private address).
PRIVATE_HOST = "192.168.7.7"
PUBLIC_HOST = "8.8.8.8"  # what explain is told the public page's address is
LOCAL_PAGE_HOST = "192.168.7.8"  # and the page Chromium puts in `local`


async def _upstream(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(text="from upstream")


def _serve(config: Path) -> tuple[Any, AccessLog, int]:
    port = free_port()
    proc, _ = start_cli("--config", str(config), "--listen", f"127.0.0.1:{port}")
    return proc, AccessLog(proc), port


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    need("chromium")
    servers, api = ThreadedServers(), web.Application()
    api.router.add_route("*", "/{tail:.*}", _upstream)
    upstream = servers.serve(api)
    public_port, control_port = servers.serve(page_app()), servers.serve(page_app())
    local_page_port = servers.serve(page_app())
    config = tmp_path_factory.mktemp("lna") / "p2.yaml"
    config.write_text(
        f"upstream: http://127.0.0.1:{upstream}\n"
        "routes:\n"
        "  - path_prefix: /d\n"
        "    cors:\n"
        "      allow_origins: ['*']\n"
        "      allow_methods: [GET, POST, PUT]\n"
        "  - path_prefix: /pn\n"
        "    cors:\n"
        "      allow_origins: ['*']\n"
        "      allow_methods: [GET, POST, PUT]\n"
        "      allow_private_network: true\n"
    )
    running: list[tuple[Any, AccessLog]] = []
    try:
        loop_proc, loop_log, loop_port = _serve(config)
        running.append((loop_proc, loop_log))
        local_proc, local_log, local_port = _serve(config)
        running.append((local_proc, local_log))
        overrides = (
            f"127.0.0.1:{public_port}=public,127.0.0.1:{local_port}=local,"
            f"127.0.0.1:{local_page_port}=local"
        )
        engine = ChromiumEngine(args=[f"--ip-address-space-overrides={overrides}"])
        try:
            yield {
                "config": load_config(str(config)),
                "engine": engine,
                "public": f"http://127.0.0.1:{public_port}",
                "control": f"http://127.0.0.1:{control_port}",
                "local_page": (f"http://127.0.0.1:{local_page_port}", local_page_port),
                "public_port": public_port,
                "loopback": (loop_log, loop_port),
                "local": (local_log, local_port),
            }
        finally:
            engine.close()
    finally:
        for proc, log in running:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=10)
            log.close()
        servers.stop()


def _console(tab: ChromiumTab, lines: list[str], count: int) -> list[str]:
    """The console's error lines once `count` have arrived (bounded)."""
    deadline = time.monotonic() + 10
    while len(lines) < count and time.monotonic() < deadline:
        playwright_page(tab).wait_for_timeout(50)
    return list(lines)


@pytest.mark.parametrize(("space", "method", "path"), CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_chromium_blocks_it_as_explain_says(
    world: dict[str, Any], space: str, method: str, path: str
) -> None:
    log, port = world["local" if space == "local" else "loopback"]
    host = {"loopback-name": "localhost", "loopback-ip": "127.0.0.1", "local": "127.0.0.1"}[space]
    url = f"http://{host}:{port}{path}"
    page = world["public"]
    tab = world["engine"].open(page)
    lines: list[str] = []
    playwright_page(tab).on(
        "console", lambda m: lines.append(m.text) if m.type == "error" else None
    )
    try:
        got = tab.evaluate(FETCH, [url, method])
        errors = tab.cors_errors()
        console = _console(tab, lines, 2)
    finally:
        tab.close()
    told = f"http://{PRIVATE_HOST}:{port}" if space == "local" else f"http://{host}:{port}"
    # (the page is public only by the override: explain is told a public address for it)
    told_page = f"http://{PUBLIC_HOST}:{world['public_port']}"
    predicted = explain(
        world["config"], told_page, method, path, private_network=True, proxy_origin=told,
        engine="chromium",
    )  # fmt: skip
    assert not predicted.allowed and predicted.reason == "local_network_access_denied"
    shown = predicted.engine_failure
    assert shown is not None
    assert got == {"ok": False, "error": shown.fetch_error}
    # One DevTools failure per request Chromium refused to send (a PUT: preflight and PUT).
    assert errors and {e.code for e in errors} == {shown.code}, errors
    assert all(e.url == url for e in errors)
    expected = [
        line.replace(told, f"http://{host}:{port}").replace(told_page, page)
        for line in shown.messages
    ]
    assert console == expected
    assert log.count(f"http://127.0.0.1:{port}", "OPTIONS", path.split("?")[0]) == 0
    assert log.count(f"http://127.0.0.1:{port}", method, path.split("?")[0]) == 0
    # With the permission, corsproxy's CORS would let it through.
    assert predicted.with_permission is not None and predicted.with_permission.allowed


def test_a_page_in_the_same_address_space_reaches_corsproxy(world: dict[str, Any]) -> None:
    """The control: no override for this page, so page and proxy are both loopback."""
    log, port = world["loopback"]
    path = "/d/echo/control"
    tab = world["engine"].open(world["control"])
    try:
        got = tab.evaluate(FETCH, [f"http://localhost:{port}{path}", "PUT"])
        errors = tab.cors_errors()
    finally:
        tab.close()
    predicted = explain(world["config"], world["control"], "PUT", path, engine="chromium")
    assert predicted.allowed
    # --private-network changes nothing for a page itself on loopback (no LNA check).
    flagged = explain(
        world["config"], world["control"], "PUT", path, private_network=True,
        proxy_origin=f"http://localhost:{port}", engine="chromium",
    )  # fmt: skip
    assert flagged.allowed and flagged.with_permission is None, flagged.reason
    step = next(s for s in flagged.steps if s.title == "Local Network Access")
    assert "is itself in the `loopback` address space" in step.lines[0]
    assert got == {"ok": True, "status": 200, "body": "from upstream"}
    assert errors == []
    assert log.count(f"http://127.0.0.1:{port}", "OPTIONS", path) == 1
    assert log.count(f"http://127.0.0.1:{port}", "PUT", path) == 1


@pytest.mark.parametrize("target", ["local", "loopback"])
def test_a_local_page_is_not_checked(world: dict[str, Any], target: str) -> None:
    """A page in `local` (by override; Chromium's DevTools confirm it) reaches the proxy in
    `local` and, in Chromium 156, the one on loopback too, with no permission asked: as
    explain says (observed: Chromium 156 checks only a public page's requests)."""
    page, page_port = world["local_page"]
    log, port = world[target]
    path = f"/d/echo/from-local-{target}"
    tab = world["engine"].open(page)
    states: list[Any] = []  # what Chromium says the page's space is (DevTools protocol)
    cdp = playwright_page(tab).context.new_cdp_session(playwright_page(tab))
    cdp.on("Network.requestWillBeSentExtraInfo", lambda e: states.append(e["clientSecurityState"]))
    cdp.send("Network.enable")
    try:
        got = tab.evaluate(FETCH, [f"http://127.0.0.1:{port}{path}", "PUT"])
        errors = tab.cors_errors()
    finally:
        tab.close()
    assert states and {s["initiatorIPAddressSpace"] for s in states} == {"Local"}, states
    told = f"http://{PRIVATE_HOST if target == 'local' else '127.0.0.1'}:{port}"
    predicted = explain(
        world["config"], f"http://{LOCAL_PAGE_HOST}:{page_port}", "PUT", path,
        private_network=True, proxy_origin=told, engine="chromium",
    )  # fmt: skip
    assert predicted.allowed and predicted.with_permission is None, predicted.reason
    assert got == {"ok": True, "status": 200, "body": "from upstream"}
    assert errors == []
    assert log.count(f"http://127.0.0.1:{port}", "PUT", path) == 1
