"""The floors of bench/run.py: what aiohttp itself costs, without corsproxy's own work.

    python bench/floors.py aiohttp-floor PORT
    python bench/floors.py aiohttp-relay-floor PORT UPSTREAM_PORT

`aiohttp-floor`: aiohttp's low-level server (`aiohttp.web_server.Server`, no application, no
router, no middlewares) answering every request with a fixed 204 and the same five CORS
headers the nginx contender's preflight sends: the least aiohttp can spend on a preflight.

`aiohttp-relay-floor`: the same low-level server relaying every request through corsproxy's
own upstream client (`corsproxy/http/upstream.py`, its public `UpstreamClient.request` and
`UpstreamResponse.chunks`/`release`), bodies streamed both ways; no policy, no header hygiene,
no CORS, no access line: the least corsproxy's design can spend on a proxied request.

Both run on uvloop's event loop as `corsproxy serve` does by default, access log off, on
127.0.0.1; SIGTERM (or SIGINT) stops them.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web, web_server

ORIGIN = "https://app.example.com"

# The five headers of the nginx + CORS contender's preflight answer (bench/run.py).
PREFLIGHT_HEADERS = {
    "Access-Control-Allow-Origin": ORIGIN,
    "Access-Control-Allow-Methods": "GET, HEAD, POST, PUT",
    "Access-Control-Allow-Headers": "content-type, x-token",
    "Access-Control-Max-Age": "600",
    "Vary": "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
}

# Hop-by-hop and framing headers: the relay does not pass them on (the client and aiohttp
# frame each side themselves); everything else goes through untouched.
HOP = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "te", "upgrade", "proxy-connection", "host"}
)

Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


async def preflight(request: web.BaseRequest) -> web.StreamResponse:
    return web.Response(status=204, headers=PREFLIGHT_HEADERS)


def relay(upstream_port: int) -> tuple[Handler, Callable[[], Awaitable[None]]]:
    """The relay handler, and the function that closes its upstream client."""
    from corsproxy.http.upstream import UpstreamClient
    from corsproxy.policy.routes import Upstream

    upstream = Upstream("http", "127.0.0.1", upstream_port)
    client: list[UpstreamClient] = []

    async def body(request: web.BaseRequest) -> AsyncIterator[bytes]:
        async for chunk in request.content.iter_any():
            yield chunk

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        try:
            return await forward(request)
        except ConnectionError:  # the client went away (wrk stops mid-exchange): not ours
            return web.Response(status=499)

    async def forward(request: web.BaseRequest) -> web.StreamResponse:
        if not client:
            client.append(UpstreamClient())
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in HOP]
        answer = await client[0].request(
            upstream,
            request.method,
            request.raw_path,
            headers,
            body(request) if request.body_exists else None,
            connect_timeout=5.0,
            read_timeout=30.0,
        )
        try:
            response = web.StreamResponse(status=answer.status, reason=answer.reason)
            for name, value in answer.raw_headers:
                text = name.decode("latin-1")
                if text.lower() not in HOP and text.lower() != "content-length":
                    response.headers.add(text, value.decode("latin-1"))
            if answer.content_length is not None:
                response.content_length = answer.content_length
            await response.prepare(request)
            async for chunk in answer.chunks():
                await response.write(chunk)
            await response.write_eof()
        finally:
            answer.release()
        return response

    async def close() -> None:
        if client:
            await client[0].close()

    return handle, close


async def serve(handler: Handler, port: int, on_close: Callable[[], Awaitable[None]]) -> None:
    loop = asyncio.get_running_loop()
    server = web_server.Server(handler, access_log=None)
    listener = await loop.create_server(server, "127.0.0.1", port, backlog=1024)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        listener.close()
        await server.shutdown(1.0)
        await on_close()


async def _nothing() -> None:
    return None


def main(argv: list[str]) -> None:
    if len(argv) < 2 or argv[0] not in {"aiohttp-floor", "aiohttp-relay-floor"}:
        raise SystemExit(__doc__)
    port = int(argv[1])
    if argv[0] == "aiohttp-floor":
        main_coro = serve(preflight, port, _nothing)
    else:
        handler, close = relay(int(argv[2]))
        main_coro = serve(handler, port, close)
    try:
        import uvloop
    except ImportError:  # as corsproxy: asyncio's loop when uvloop is not there
        asyncio.run(main_coro)
    else:
        uvloop.run(main_coro)


if __name__ == "__main__":
    main(sys.argv[1:])
