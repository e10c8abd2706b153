"""A built-in demo upstream, so `corsproxy serve --demo` works with nothing else installed."""

from __future__ import annotations

import json
import uuid

from aiohttp import web

from corsproxy.http.aiohttp_private import bound_sockets

DEMO_POLICY_ORIGINS = ["http://localhost:*", "http://127.0.0.1:*"]


ENDPOINTS = {
    "GET /": "this list",
    "GET /api/hello": "a JSON greeting, with the Origin it received",
    "ANY /api/echo": "the method, headers and body it received, as JSON",
}


def _request_id(request: web.Request) -> dict[str, str]:
    """The request's own id: the one corsproxy sent (it always sends one), else a new one."""
    return {"X-Request-Id": request.headers.get("X-Request-Id") or uuid.uuid4().hex}


async def _index(request: web.Request) -> web.Response:
    body = {
        "message": "the corsproxy demo upstream; try these through the proxy",
        "endpoints": ENDPOINTS,
    }
    return web.Response(
        text=json.dumps(body, indent=2) + "\n",
        content_type="application/json",
        headers=_request_id(request),
    )


async def _hello(request: web.Request) -> web.Response:
    body = {
        "message": "hello from the demo upstream",
        "you_sent_origin": request.headers.get("Origin"),
    }
    return web.json_response(body, headers=_request_id(request))


async def _echo(request: web.Request) -> web.Response:
    body = await request.read()
    headers = {k: v for k, v in request.headers.items()}
    return web.Response(
        text=json.dumps(
            {"method": request.method, "headers": headers, "body": body.decode(errors="replace")}
        ),
        content_type="application/json",
        headers=_request_id(request),
    )


def demo_app() -> web.Application:
    app = web.Application()
    app.router.add_get("/", _index)
    app.router.add_get("/api/hello", _hello)
    app.router.add_route("*", "/api/echo", _echo)
    return app


async def start_demo_upstream() -> tuple[web.AppRunner, str]:
    """Start the demo upstream on a free loopback port; returns the runner and its URL."""
    runner = web.AppRunner(demo_app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = bound_sockets(site)[0].getsockname()[1]
    return runner, f"http://127.0.0.1:{port}"
