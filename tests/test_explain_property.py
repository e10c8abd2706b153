"""Property: for random policies and requests, `explain`'s verdict is what happens when a
browser sends that request to the real server.

Each example compiles up to eight random policies as routes of one config, starts the
in-process server in front of an upstream that knows nothing of CORS, and plays the browser
over raw sockets: the method as fetch() normalizes it (sent byte for byte on the request
line), the preflight Chromium would send (Access-Control-Request-Method/-Headers as it writes
them), then the actual request. The browser model (`policy/browser.py`) judges the server's
actual answers; `explain`, which never talks to a server, must reach the same verdict and
the same readable headers. In report-only mode corsproxy changes no CORS header, so the
browser's verdict there is the upstream's: explain says so (`verdict` "upstream_decides",
`mode` "report-only") and gives what enforce mode would do as `enforce_verdict` (and
`allowed`, the exit status): that is compared with an enforce twin of the policy on the wire.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import yaml
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from corsproxy.commands.explain import MODE_INDEPENDENT, explain
from corsproxy.config import ConfigError
from corsproxy.policy import browser, local_network
from corsproxy.policy.cors import ACRH, ACRM
from tests.helpers import config
from tests.net import TIMEOUT, running_app, running_proxy

APP = "https://app.example.com"
ORIGIN_ENTRIES = [
    APP,
    "https://*.example.com",
    "http://localhost:*",
    "regex:https://[a-z]+\\.example\\.org",
    "null",
    "http://app.example.com",
    "*",
]
ORIGINS = [
    APP,
    "https://a.example.com",
    "https://b.c.example.com",
    "http://localhost:5173",
    "https://x.example.org",
    "https://evil.example",
    "null",
    "http://app.example.com",
    # never sent by a browser: explain must block them whatever the policy
    "https://app.example.com/",
    "https://APP.example.com",
    "app.example.com",
]
METHODS = ["get", "GET", "post", "Put", "put", "PUT", "DELETE", "delete", "PATCH", "patch",
           "QUERY", "FOO", "foo", "options", "HEAD", "trace"]  # fmt: skip
POLICY_METHODS = ["GET", "PUT", "DELETE", "PATCH", "patch", "QUERY", "FOO", "foo"]
HEADERS = [
    ("Content-Type", "application/json"),
    ("Content-Type", "text/plain"),
    ("X-Custom", "1"),
    ("Authorization", "Bearer x"),
    ("Accept", "*/*"),
]


def _list_or_star(items: list[str], min_size: int = 0) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.just("*"), st.lists(st.sampled_from(items), min_size=min_size, max_size=4, unique=True)
    )


@st.composite
def policies(draw: st.DrawFn) -> dict[str, Any]:
    credentials = draw(st.booleans())
    origins = draw(st.lists(st.sampled_from(ORIGIN_ENTRIES), max_size=4, unique=True))
    if APP not in origins and draw(st.booleans()):
        origins = [APP, *origins]
    if credentials:  # what check refuses with credentials; an empty list is allowed
        origins = [o for o in origins if o not in ("*", "null", "http://app.example.com")]
    elif "*" in origins:
        origins = ["*"]  # the other entries would only warn
    policy: dict[str, Any] = {
        "allow_origins": origins or [APP],
        "allow_credentials": credentials,
        "allow_methods": draw(_list_or_star(POLICY_METHODS, 1)),
        "allow_private_network": draw(st.booleans()),
        "on_disallowed": draw(st.sampled_from(["forward", "reject"])),
        "mode": draw(st.sampled_from(["enforce", "enforce", "report-only"])),
    }
    if draw(st.booleans()):
        policy["allow_headers"] = draw(_list_or_star(["Content-Type", "X-Custom", "Authorization"]))
    expose = draw(st.sampled_from([None, "*", ["X-Exposed"]]))
    if expose is not None and not (expose == "*" and credentials):
        policy["expose_headers"] = expose
    return policy


@dataclass(frozen=True)
class Request:
    origin: str
    method: str
    headers: tuple[tuple[str, str], ...]
    credentials: bool
    private_network: bool


requests = st.builds(
    Request,
    origin=st.one_of(st.just(APP), st.sampled_from(ORIGINS)),  # mostly one that may pass
    method=st.sampled_from(METHODS),
    headers=st.lists(st.sampled_from(HEADERS), max_size=3, unique_by=lambda h: h[0]).map(tuple),
    credentials=st.booleans(),
    private_network=st.booleans(),
)


async def _exchange(base: str, head: str) -> tuple[int, list[tuple[str, str]]]:
    """Send one request head over a fresh connection; the answer's status and headers."""
    host, port = base.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), TIMEOUT)
    try:
        writer.write(head.encode("latin-1"))
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), TIMEOUT)
    finally:
        writer.close()
    text = raw.decode("latin-1")
    lines = text.split("\r\n\r\n", 1)[0].split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = [(n.strip(), v.strip()) for n, _, v in (line.partition(":") for line in lines[1:])]
    return status, headers


def _head(method: str, path: str, pairs: list[tuple[str, str]]) -> str:
    lines = [f"{method} {path} HTTP/1.1", "Host: proxy.test", *(f"{n}: {v}" for n, v in pairs)]
    if method not in ("GET", "HEAD", "OPTIONS"):
        lines.append("Content-Length: 0")
    return "\r\n".join([*lines, "Connection: close", "", ""])


async def _browser(base: str, path: str, req: Request) -> tuple[bool, tuple[str, ...]]:
    """What the page gets: whether it can read the answer, and which headers."""
    method = browser.normalize_method(req.method)
    if browser.fetch_method_error(method) is not None:
        return False, ()  # fetch() throws before any request
    need = browser.preflight_need(method, list(req.headers))
    origin = [("Origin", req.origin)]
    if need.needed:
        pre = [*origin, (ACRM, method)]
        if need.request_header_names:
            pre.append((ACRH, ",".join(need.request_header_names)))
        # (no Access-Control-Request-Private-Network: Chromium 142+ sends none, and explain
        # compares its verdict once the Local Network Access permission is granted)
        status, answer = await _exchange(base, _head("OPTIONS", path, pre))
        names = need.request_header_names
        if browser.preflight_check(status, answer, req.origin, req.credentials, method, names):
            return False, ()
    status, answer = await _exchange(base, _head(method, path, [*origin, *req.headers]))
    if browser.cors_check(answer, req.origin, req.credentials) is not None:
        return False, ()
    return True, browser.readable_headers(answer, req.credentials)


def _doc(upstream: str, cases: list[tuple[dict[str, Any], Request]], enforce: bool) -> Any:
    routes = []
    for i, (policy, _) in enumerate(cases):
        cors = {**policy, "mode": "enforce"} if enforce else policy
        routes.append({"path_prefix": f"/r{i}", "cors": cors})
    return {"upstream": upstream, "cors": {"allow_origins": [APP]}, "routes": routes}


async def _check(cases: list[tuple[dict[str, Any], Request]]) -> None:
    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="ok", headers={"X-Exposed": "1"})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", ok)
    async with running_app(app) as upstream:
        try:
            loaded = config(yaml.safe_dump(_doc(upstream, cases, enforce=False)))
        except ConfigError as exc:  # a generated policy check refuses: not a case
            raise AssertionError(f"the generator made a config check refuses: {exc}") from None
        async with running_proxy(_doc(upstream, cases, enforce=True)) as proxy:
            for i, (policy, req) in enumerate(cases):
                path = f"/r{i}/x"
                predicted = explain(
                    loaded,
                    req.origin,
                    req.method,
                    path,
                    list(req.headers),
                    req.credentials,
                    req.private_network,
                )
                if not browser.serialized_origin(req.origin).valid:
                    assert not predicted.allowed and predicted.reason == "origin_malformed"
                    continue
                # Chromium blocks it without the permission (a page itself on loopback or
                # the local network is not checked: CORS alone decides)
                page_space = local_network.address_space(req.origin)
                if req.private_network and page_space not in ("local", "loopback"):
                    assert predicted.reason in (
                        "local_network_access_denied",
                        "fetch_method_refused",
                        "fetch_header_refused",
                    ), predicted.reason
                    predicted = predicted.with_permission or predicted
                allowed, readable = await _browser(proxy, path, req)  # the enforce twin
                where = f"policy {policy}, request {req}: explain says {predicted.reason}"
                verdicts = predicted.to_json()
                assert verdicts["mode"] == policy["mode"], where
                assert verdicts["enforce_verdict"] == ("allowed" if allowed else "blocked"), where
                report_only = policy["mode"] == "report-only"
                assert (verdicts["verdict"] == "upstream_decides") is (
                    report_only and predicted.reason not in MODE_INDEPENDENT
                ), where
                assert predicted.allowed is allowed, where
                if allowed:
                    assert predicted.readable == readable, where


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.lists(st.tuples(policies(), requests), min_size=1, max_size=8))
def test_explain_agrees_with_the_server_and_the_browser_model(
    cases: list[tuple[dict[str, Any], Request]],
) -> None:
    asyncio.run(_check(cases))
