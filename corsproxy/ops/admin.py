"""The admin listener (/healthz, /readyz, /metrics, and the console: ops/console.py) and
the Prometheus metrics.

Label values are bounded: routes come from the config, methods outside the standard set
become OTHER, and reason codes lose their detail (`header_not_allowed:x-foo` is counted as
`header_not_allowed`). Origins are never labels: they are attacker-controlled.

With several workers (PROMETHEUS_MULTIPROC_DIR set by the supervisor), every worker writes
its samples to that directory and /metrics, whichever worker answers, sums all of them.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Callable
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as prometheus_multiprocess

from corsproxy import __version__
from corsproxy.ops.console import CSP, MISDIRECTED, Console, is_console_path
from corsproxy.policy.cors import Reason

MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"


def reason_label(reason: str) -> str:
    """A decision's reason code (its detail would make labels unbounded); a failure's code
    (`body_too_large`, set after the decision) as it is."""
    if isinstance(reason, Reason):
        return reason.code.value
    return reason or "none"


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "corsproxy_requests", "Requests answered.", ["route", "method", "code"], registry=r
        )
        self.duration = Histogram(
            "corsproxy_request_duration_seconds",
            "Time to answer a request, streaming included.",
            ["route"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )
        self.upstream_errors = Counter(
            "corsproxy_upstream_errors", "Upstream failures.", ["route", "kind"], registry=r
        )
        self.cors_decisions = Counter(
            "corsproxy_cors_decisions",
            "CORS decisions on requests with an Origin.",
            ["route", "kind", "decision", "reason"],
            registry=r,
        )
        self.in_flight = Gauge(
            "corsproxy_requests_in_flight",
            "Requests being answered.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.reloads = Counter(
            "corsproxy_config_reloads", "Config reloads.", ["result"], registry=r
        )
        self.log_lines_dropped = Counter(
            "corsproxy_log_lines_dropped",
            "Log lines dropped: more were waiting than the limit, for a slow log stream.",
            registry=r,
        )
        self.build_info = Gauge(
            "corsproxy_build_info",
            "Build information.",
            ["version", "python", "aiohttp"],
            registry=r,
            multiprocess_mode="max",
        )
        self.build_info.labels(__version__, platform.python_version(), aiohttp.__version__).set(1)
        self._request_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self._decision_children: dict[tuple[str, str, str, str], Any] = {}

    def count_request(self, route: str, method: str, status: int, duration: float) -> None:
        # Labelled children are cached: labels() validates and locks on every call.
        key = (route, method, status)
        children = self._request_children.get(key)
        if children is None:
            children = (
                self.requests.labels(route, method, str(status)),
                self.duration.labels(route),
            )
            self._request_children[key] = children
        children[0].inc()
        children[1].observe(duration)

    def count_decision(self, route: str, kind: str, decision: str, reason: str) -> None:
        # Keyed by the bounded label, never the reason itself: its detail (a header name, a
        # method) is the client's choice, and a cache keyed by it grows without bound.
        key = (route, kind, decision, reason_label(reason))
        child = self._decision_children.get(key)
        if child is None:
            child = self.cors_decisions.labels(*key)
            self._decision_children[key] = child
        child.inc()

    def exposition(self) -> bytes:
        directory = os.environ.get(MULTIPROCESS_DIR)
        if directory:
            registry = CollectorRegistry()
            prometheus_multiprocess.MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
            return generate_latest(registry)
        return generate_latest(self.registry)


def admin_app(
    metrics: Metrics, draining: Callable[[], bool], console: Console | None = None
) -> web.Application:
    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(request: web.Request) -> web.Response:
        if draining():
            return web.Response(status=503, text="draining\n")
        return web.Response(text="ready\n")

    async def metrics_handler(request: web.Request) -> web.Response:
        body = metrics.exposition()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    @web.middleware
    async def guard_host(request: web.Request, handler: Any) -> web.StreamResponse:
        # The console's paths only (see ops/console.py): a DNS-rebinding page must not read
        # them. The probes and /metrics keep answering to any Host.
        path, host = request.path, request.headers.get("Host")
        if console is not None and is_console_path(path) and not console.host_allowed(host):
            return web.Response(status=421, text=MISDIRECTED)
        response: web.StreamResponse = await handler(request)
        return response

    async def harden(request: web.Request, response: web.StreamResponse) -> None:
        # Every answer, errors and probes included: no content sniffing, and a page that can
        # run nothing when it is HTML or an error body.
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        if response.content_type in ("text/html", "text/plain") or response.status >= 400:
            response.headers.setdefault("Content-Security-Policy", CSP)

    app = web.Application(middlewares=[guard_host])
    app.on_response_prepare.append(harden)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_handler)
    if console is not None:
        console.add_routes(app.router)
    return app
