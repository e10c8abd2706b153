"""The CORS console on the admin listener: `GET /` and everything under `/console/`.

A static page (HTML, CSS and a little JavaScript shipped in the package, no build step, no
CDN) that reads four JSON documents: the loaded policy per route, `explain` for a request
typed into a form, the ring of refusals (ops/refusals.py) and a suggestion
(ops/suggest.py). Read-only: GET (and HEAD) only, nothing changes any state. Origins are the
clients' choice, so the page writes every value with `textContent`, and a strict
Content-Security-Policy (no inline script) backs that up.

`explain` lives in the command layer, which ops may not import: the server hands in a
callable (`Explainer`) made there, and the HTTP layer's test of which methods its parser
reads (`parsable`).

A guard against DNS rebinding: the console's paths answer only when the Host header is an IP
address, `localhost` (or a name under `.localhost`) or the host of admin.listen when that is a
name (`host_allowed`); a page on an attacker's name that resolves to this listener gets 421.
/healthz, /readyz and /metrics do not look at Host (kubelet and Prometheus use pod IPs and
service names) and show nothing of the policy.
"""

from __future__ import annotations

import ipaddress
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any

from aiohttp import web

from corsproxy.config import Config
from corsproxy.ops.refusals import RefusalRing
from corsproxy.ops.suggest import Base, Observation, render_yaml, serialized_origin, suggest
from corsproxy.policy.cors import CorsPolicy
from corsproxy.policy.http_grammar import TOKEN
from corsproxy.policy.routes import Route

log = logging.getLogger("corsproxy")

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
# The files of the page, by the path they are served at.
STATIC = {
    "/": ("index.html", "text/html"),
    "/console/app.js": ("app.js", "text/javascript"),
    "/console/console.css": ("console.css", "text/css"),
    "/console/favicon.svg": ("favicon.svg", "image/svg+xml"),
}
MISDIRECTED = (
    "corsproxy console: this Host is not an address of the admin listener.\n"
    "The console answers only to an IP address, localhost, or the host of admin.listen (a guard\n"
    "against DNS rebinding: a web page on another name must not read the policy).\n"
    "Reach it from your machine with, e.g.:\n"
    "  kubectl port-forward pod/NAME 9901:9901   (or: ssh -L 9901:127.0.0.1:9901 HOST)\n"
    "then open http://127.0.0.1:9901/\n"
)


def is_console_path(path: str) -> bool:
    return path == "/" or path == "/console" or path.startswith("/console/")


def host_allowed(host: str | None, admin_host: str | None) -> bool:
    """Whether a request's Host names this listener in a way no other site can: an IP
    literal (v4, or v6 in brackets; any port), `localhost` or `*.localhost` (browsers resolve
    those to loopback themselves), or admin.listen's host when it is a name."""
    if not host:
        return False
    host = host.lower()
    if host.startswith("["):
        end = host.find("]")
        if end < 0:
            return False
        name, port = host[1:end], host[end + 1 :]
        try:
            ipaddress.IPv6Address(name)
        except ValueError:
            return False
        return not port or (port[0] == ":" and port[1:].isdigit())
    name, colon, port = host.rpartition(":")
    if not colon:
        name, port = host, ""
    elif not port.isdigit():
        return False
    try:
        ipaddress.IPv4Address(name)
        return True
    except ValueError:
        pass
    if name == "localhost" or name.endswith(".localhost"):
        return True
    return admin_host is not None and name == admin_host.lower()


# Bounds on the explain form's input (a query string the admin listener's client chose).
MAX_ORIGIN = 2048
MAX_PATH = 8192
MAX_HEADERS = 64
MAX_HEADER_CHARS = 8192


@dataclass(frozen=True, slots=True)
class ExplainQuery:
    origin: str
    method: str = "GET"
    path: str = "/"
    headers: tuple[tuple[str, str], ...] = ()
    credentials: bool = False


# The command layer's `explain`, as JSON (the walk-through's steps, verdict and its text).
Explainer = Callable[[Config, ExplainQuery], dict[str, Any]]


def _static(name: str) -> bytes:
    return (resources.files("corsproxy.ops") / "console_static" / name).read_bytes()


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, headers=SECURITY_HEADERS)


def _names(values: frozenset[str] | tuple[str, ...], any_value: bool) -> list[str]:
    return ["*"] if any_value else sorted(values) if isinstance(values, frozenset) else list(values)


def policy_json(policy: CorsPolicy) -> dict[str, Any]:
    return {
        "enabled": policy.enabled,
        "mode": policy.mode.value,
        "allow_origins": [e.text for e in policy.origins.entries],
        "allow_methods": _names(policy.allow_methods, policy.any_method),
        "allow_headers": _names(policy.allow_headers, policy.any_header),
        "expose_headers": _names(policy.expose_headers, policy.expose_any),
        "allow_credentials": policy.allow_credentials,
        "max_age": policy.max_age,
        "allow_private_network": policy.allow_private_network,
        "on_disallowed": policy.on_disallowed.value,
    }


def _base(policy: CorsPolicy) -> Base:
    return Base(
        origins=tuple(e.text for e in policy.origins.entries),
        methods=policy.allow_methods if not policy.any_method else ("*",),
        headers=tuple(sorted(policy.allow_headers)) if not policy.any_header else ("*",),
        any_origin=policy.origins.allows_any,
        any_method=policy.any_method,
        any_header=policy.any_header,
    )


def parse_explain_query(query: Any) -> ExplainQuery | str:
    """The form's fields (`origin`, `method`, `path`, `header` lines `Name: value`,
    `credentials`), or what is wrong with them. Values go to `explain` as typed (spaces
    included, as `corsproxy explain` takes them); only their size is bounded."""
    origin = query.get("origin", "")
    method = query.get("method", "") or "GET"
    path = query.get("path", "") or "/"
    if not origin:
        return "origin is required (the page's origin, e.g. https://app.example.com)"
    if len(origin) > MAX_ORIGIN or len(path) > MAX_PATH:
        return f"origin or path too long (at most {MAX_ORIGIN} and {MAX_PATH} characters)"
    if len(method) > 64:
        return "method too long (at most 64 characters)"
    lines = [line for value in query.getall("header", ()) for line in value.splitlines()]
    if len(lines) > MAX_HEADERS or sum(map(len, lines)) > MAX_HEADER_CHARS:
        return f"at most {MAX_HEADERS} headers and {MAX_HEADER_CHARS} characters"
    headers: list[tuple[str, str]] = []
    for line in lines:
        if not line.strip():
            continue
        name, _, value = line.partition(":")
        if not TOKEN.match(name.strip()):
            return f"a header is NAME or NAME: VALUE, not {line[:100]!r}"
        headers.append((name.strip(), value.strip(" \t")))
    credentials = query.get("credentials", "") in ("1", "true", "on", "yes")
    return ExplainQuery(origin, method, path, tuple(headers), credentials)


class Console:
    """The console's routes, reading the current configuration at each request."""

    def __init__(
        self,
        current: Callable[[], Config],
        refusals: RefusalRing,
        explainer: Explainer | None = None,
        parsable: Callable[[str], bool] | None = None,
    ) -> None:
        self.current = current
        self.refusals = refusals
        self.explainer = explainer
        self.parsable = parsable
        self.files = {path: (_static(name), kind) for path, (name, kind) in STATIC.items()}

    def add_routes(self, router: web.UrlDispatcher) -> None:
        for path in STATIC:
            router.add_get(path, self.static)
        router.add_get("/console/api/policy", self.policy)
        router.add_get("/console/api/refusals", self.refusals_handler)
        router.add_get("/console/api/suggest", self.suggestion)
        router.add_get("/console/api/explain", self.explain)

    def _routes(self, config: Config) -> list[Route]:
        table = config.routes
        return [*table.routes, *([table.default] if table.default is not None else [])]

    def host_allowed(self, host: str | None) -> bool:
        admin = self.current().admin
        return host_allowed(host, admin.listen.host if admin else None)

    def _current_entries(self, config: Config) -> tuple[list[Any], int]:
        """The ring's entries of routes in the loaded config, and how many others (routes a
        reload renamed or removed): those are left out of the list and the suggestion both."""
        names = {r.name for r in self._routes(config)}
        entries = self.refusals.latest()
        kept = [e for e in entries if e.route in names]
        return kept, len(entries) - len(kept)

    def _process(self) -> dict[str, Any]:
        worker = os.environ.get("CORSPROXY_WORKER") == "1"
        return {"pid": os.getpid(), "worker": worker}

    async def static(self, request: web.Request) -> web.Response:
        body, kind = self.files[request.path]
        return web.Response(body=body, content_type=kind, charset="utf-8", headers=SECURITY_HEADERS)

    async def policy(self, request: web.Request) -> web.Response:
        config = self.current()
        routes = [
            {
                "name": route.name,
                "path_prefix": route.path_prefix,
                "upstream": (route.upstream.origin + route.upstream.base_path)
                if route.upstream
                else None,
                "where": f"{config.source}:{route.line}" if route.line else "top level",
                "cors": policy_json(route.cors),
            }
            for route in self._routes(config)
        ]
        return _json({**self._process(), "source": str(config.source), "routes": routes})

    async def refusals_handler(self, request: web.Request) -> web.Response:
        ring = self.refusals
        current, stale = self._current_entries(self.current())
        entries = [
            {
                "origin": e.origin,
                "route": e.route,
                "reasons": [str(r) for r in e.reasons],
                "verdict": e.verdict,
                "kind": e.kind,
                "count": e.count,
                "first_seen": e.first_seen,
                "last_seen": e.last_seen,
                "truncated": e.truncated,
                # Not a serialized origin: no browser sends it (a script, a scanner).
                "malformed": e.origin != "null" and serialized_origin(e.origin) is None,
            }
            for e in current
        ]
        return _json(
            {
                **self._process(),
                # Entries of routes no longer in the config (renamed or removed by a reload).
                "stale": stale,
                "capacity": ring.size,
                "total": ring.total,
                "evicted": ring.evicted,
                "entries": entries,
            }
        )

    async def suggestion(self, request: web.Request) -> web.Response:
        config = self.current()
        bases = {r.name: _base(r.cors) for r in self._routes(config) if r.cors.enabled}
        current, stale = self._current_entries(config)
        seen = [
            Observation(
                route=e.route,
                origin=e.origin,
                refused=True,
                count=e.count,
                reasons=tuple(str(r) for r in e.reasons),
            )
            for e in current
            if not e.truncated and e.route in bases
        ]
        routes = suggest(seen, bases, self.parsable)
        header = [
            "corsproxy console: the loaded allow-lists plus what the refused and would-refuse",
            f"requests in this process's ring needed (pid {os.getpid()}).",
        ]
        if stale:
            header.append(
                f"{stale} entry(ies) of routes no longer in the config (renamed or removed by a "
                "reload) left out, here and in the list."
            )
        return _json(
            {
                **self._process(),
                "yaml": render_yaml(routes, header),
                "routes": [r.to_json() for r in routes],
            }
        )

    async def explain(self, request: web.Request) -> web.Response:
        if self.explainer is None:
            return _json({"error": "explain is not available in this process"}, 501)
        query = parse_explain_query(request.query)
        if isinstance(query, str):
            return _json({"error": query}, 400)
        try:
            result = self.explainer(self.current(), query)
        except Exception:
            log.exception("console: explain failed")
            return _json({"error": "explain failed (see the log)"}, 500)
        return _json(result)
