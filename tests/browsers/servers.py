"""Test servers for the browser suites: aiohttp apps on loopback, on an event loop of their
own in a thread (the browsers are driven synchronously from the test's thread)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from aiohttp import web

from tests.browsers.engine import add_tab_page

T = TypeVar("T")
PAGE = "<!doctype html><html><head><title>page</title></head><body>page</body></html>"


def page_app(middlewares: list[Any] | None = None) -> web.Application:
    """A page origin: the tab page (engine.TAB_PATH) and an empty page at every other path."""

    async def page(request: web.Request) -> web.Response:
        return web.Response(text=PAGE, content_type="text/html")

    app = web.Application(middlewares=middlewares or [])
    add_tab_page(app)
    app.router.add_get("/{tail:.*}", page)
    return app


class ThreadedServers:
    """Serve apps from a private loop in a daemon thread; `stop()` cleans every one up."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.runners: list[web.AppRunner] = []

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(10)

    async def _serve(self, app: web.Application, host: str) -> int:
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1)
        await runner.setup()
        site = web.TCPSite(runner, host, 0)
        await site.start()
        self.runners.append(runner)
        return int(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]

    def serve(self, app: web.Application, host: str = "127.0.0.1") -> int:
        """Start `app` on a free port of `host`; its port."""
        return self.run(self._serve(app, host))

    def origin(self, app: web.Application, host: str = "127.0.0.1") -> str:
        """Start `app`; its origin `http://host:port`."""
        return f"http://{host}:{self.serve(app, host)}"

    def stop(self) -> None:
        async def cleanup() -> None:
            for runner in self.runners:
                await runner.cleanup()

        self.run(cleanup())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()
