"""App wiring: the request handler, config reload, signals and graceful shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import logging
import os
import signal
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web
from aiohttp.http import HttpVersion10, HttpVersion11
from aiohttp.http_exceptions import BadHttpMessage, HttpProcessingError, LineTooLong

from corsproxy.config import Config, ConfigError
from corsproxy.config.files import recording
from corsproxy.config.spec import logged
from corsproxy.config.upstream_tls import insecure_warnings
from corsproxy.http import errors, preflight_answer
from corsproxy.http import headers as hygiene
from corsproxy.http.access_line import MAX_PATH, access_fields, capped, json_line
from corsproxy.http.aiohttp_private import (
    HandlerClassServer,
    HandshakeTimeoutSite,
    RequestHandler,
    bound_sockets,
    parser_accepts_method,
    send_interim,
    set_version,
)
from corsproxy.http.bad_request_line import read_refusal
from corsproxy.http.error_words import error_words
from corsproxy.http.preflight_answer import PreflightAnswer
from corsproxy.http.public_origin import local_authority
from corsproxy.http.relay import (
    ClientTooSlow,
    Exchange,
    OwnResponse,
    Target,
    error_response,
    forward,
)
from corsproxy.http.route_memo import RouteMemo, route_target
from corsproxy.http.shared_port import refuse_shared_port
from corsproxy.http.startup import ListenFailed, log_changes, log_summary, probe_in_background
from corsproxy.http.tls_listener import handshake_timeout, rotating_context
from corsproxy.http.upstream import UpstreamClient
from corsproxy.http.websocket import make_session, tunnel
from corsproxy.ops import heap
from corsproxy.ops.logs import ACCESS, bind_loop, json_writer, log_access, where
from corsproxy.ops.metric_labels import method_label
from corsproxy.ops.refusals import RefusalRing
from corsproxy.ops.threads import off_loop
from corsproxy.ops.watch import Watcher
from corsproxy.ops.workers import WORKER_ENV
from corsproxy.policy.cors import (
    Action,
    Decision,
    Kind,
    RequestView,
    decide_cached,
    is_preflight,
    response_headers,
)
from corsproxy.policy.forwarded import ClientView, resolve
from corsproxy.policy.paths import PathError, normalize_path, split_target

if TYPE_CHECKING:  # imported where an admin listener is made: a worker without one never does
    from corsproxy.ops.admin import Metrics
    from corsproxy.ops.console import Explainer

log = logging.getLogger("corsproxy")


# Request ids: a random per-process prefix and a counter (unique, and no syscall per request).
_ID_PREFIX = os.urandom(8).hex()
_id_counter = itertools.count(1)


# Logged with each access line (fixed per process; every worker is a process of its own).
_WORKER_PID = os.getpid()


def tune_gc() -> None:
    """For the process that serves, once it is up: what start-up allocated lives as long as
    the process, so keep the collector off it, and collect less often (a proxy makes many
    short-lived objects per request). Process-wide, so the process owner calls it."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
    heap.trim()  # what start-up freed goes back to the kernel (ops/heap.py)


def _new_id() -> str:
    return f"{_ID_PREFIX}{next(_id_counter):016x}"


def _text_response(status: int, text: str, decision: Decision | None = None) -> web.StreamResponse:
    failure = errors.Failure(status, "", text)
    return error_response(failure, decision)


def _max_forwards(request: web.BaseRequest) -> errors.Failure | None:
    headers = request.headers
    # The decision's own test (non-empty values), or an OPTIONS with an empty Origin would
    # be neither answered here nor a preflight, and go upstream with Max-Forwards: 0.
    preflight = is_preflight(
        RequestView.from_pairs(request.method, request.raw_path, headers.items())
    )
    return hygiene.max_forwards_answer(
        request.method, headers.getall("Max-Forwards", ()), preflight
    )


def _own_origin(request: web.BaseRequest, view: ClientView | None) -> str:
    """The proxy's own origin as the client addressed it (for WebSocket handshakes): behind
    a trusted proxy, the origin it says the client used."""
    if view is not None and view.trusted and view.origin.host:
        return view.origin.serialize()
    scheme = "https" if request.secure else "http"
    return f"{scheme}://{request.headers.get('Host', '')}"


NOSNIFF = ("X-Content-Type-Options", "nosniff")


def _bodiless(status: int, decision: Decision, base: list[tuple[str, str]]) -> OwnResponse:
    """An answer without a body that corsproxy writes itself, with the decision's headers."""
    response = OwnResponse(status=status)
    for name, value in response_headers(decision, base):
        response.headers.add(name, value)
    return response


def _early_response(answer: errors.Failure, decision: Decision) -> web.StreamResponse:
    """TRACE's 405 and the OPTIONS that Max-Forwards: 0 makes ours carry `Allow`; like every
    answer corsproxy writes, with CORS for an allowed origin and no `Server` header."""
    if answer.status == 200:
        response: web.StreamResponse = _bodiless(200, decision, [NOSNIFF])
    else:
        response = error_response(answer, decision)
    response.headers["Allow"] = hygiene.ALLOW
    return response


def header_cap(max_header_size: int) -> int:
    """aiohttp's own per-line limit: above `limits.max_header_size`, which corsproxy enforces
    on the parsed head (so its 431 can carry CORS headers); a line over this cap is refused
    by the parser itself, before any header is known."""
    return max(2 * max_header_size, 16 * 1024)


def _fallback_decision(request: web.BaseRequest, config: Config) -> Decision:
    """CORS for an answer made before the route's own decision: the route's policy when the
    path selects one, else the default policy (what applies to `/`). Decided as a plain
    request: an error is never a successful preflight."""
    policy = config.cors
    with contextlib.suppress(PathError):
        route = config.routes.match(normalize_path(split_target(request.raw_path)[0]))
        if route is not None:
            policy = route.cors
    origin = tuple(request.headers.getall("Origin", ()))
    return decide_cached(policy, RequestView("GET", "/", origin))


class _RequestHandler(RequestHandler):
    """Answers to requests aiohttp's parser refuses (and to crashes). aiohttp's own would
    echo the offending bytes, name its version in `Server` and answer `HTTP/1.0` (its
    placeholder request's version): corsproxy writes its own, closes the connection, and
    says 431 for a head over the parser's size limits."""

    app: ProxyApp | None = None  # set by serve(): the app whose access log and metrics count

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if not isinstance(exc, HttpProcessingError):  # a crash: logged with its traceback
            super().handle_error(request, status, exc, message)  # raises if too late
        # A request the parser refused gets an access line instead (aiohttp's own log says
        # the same over several lines, with a traceback at debug); nothing was sent yet.
        if isinstance(exc, LineTooLong) or (
            isinstance(exc, BadHttpMessage) and "Too many headers" in exc.message
        ):
            failure = errors.HEAD_TOO_LARGE
        elif status == 500:
            failure = errors.Failure(500, "", "internal error")
        else:
            failure = errors.Failure(status, "", "Bad request: the request could not be parsed")
        set_version(request, HttpVersion11)
        response = error_response(failure, None)
        response.force_close()
        if isinstance(exc, HttpProcessingError) and self.app is not None:
            response.headers["X-Request-Id"] = self.app.log_refused(request, exc, failure, response)
        return response

    def log_exception(self, *args: Any, **kw: Any) -> None:
        # A malformed request is the client's fault, and scanners send many: one warning
        # line each, not an error with a traceback.
        exc = kw.get("exc_info")
        if isinstance(exc, HttpProcessingError):
            log.warning("bad request from %s: %s", _peer(self.transport), exc.message)
            return
        super().log_exception(*args, **kw)


def _peer(transport: asyncio.BaseTransport | None) -> str:
    peer = transport.get_extra_info("peername") if transport is not None else None
    return str(peer[0]) if peer else "-"


def _tls_changed(old: Config, new: Config) -> bool:
    """TLS turned on or off on a listener (a new certificate pair is no such change)."""
    old_admin = old.admin is not None and old.admin.tls is not None
    new_admin = new.admin is not None and new.admin.tls is not None
    return (old.tls is None) != (new.tls is None) or old_admin != new_admin


class ProxyApp:
    """Serves requests under the current config; a reload swaps it atomically."""

    def __init__(
        self,
        config: Config,
        loader: Callable[[], Config] | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.config = config
        self.loader = loader
        self.attempted_files: tuple[str, ...] = ()  # named by the last reload (--watch)
        # Metrics cost CPU on every request: kept only when an admin listener can serve them.
        if metrics is None and config.admin:
            from corsproxy.ops.admin import Metrics

            metrics = Metrics()
        self.metrics: Metrics | None = metrics
        # The console's latest refusals: kept only when an admin listener can show them.
        self.refusals: RefusalRing | None = RefusalRing() if config.admin else None
        self.session: aiohttp.ClientSession | None = None  # for WebSockets
        self.upstreams: UpstreamClient | None = None
        self.websockets: set[web.WebSocketResponse] = set()
        self.draining = False
        self._reloading: asyncio.Task[None] | None = None
        self._reload_again = False
        # The parser's own line limit is fixed at start (see header_cap).
        self.header_cap = header_cap(config.limits.max_header_size)
        self.announce = False  # log what a reload changed, probe new upstreams (http/startup.py)
        # A worker of `--workers`: the supervisor says a reload's success and warnings, once.
        self.supervised = os.environ.get(WORKER_ENV) == "1"
        self.probes: set[asyncio.Task[None]] = set()
        self.routing = RouteMemo()  # http/route_memo.py

    async def start(self) -> None:
        # Read at start only: a reload does not resize the pools. Open WebSockets are capped
        # at the same number (each holds a connection of its own pool), which bounds their
        # memory too.
        self.session = make_session(connections=self.config.limits.upstream_connections)
        self.upstreams = UpstreamClient(limit=self.config.limits.upstream_connections)

    async def close_websockets(self) -> None:
        """Close open WebSockets with 1001, so they do not hold shutdown until its timeout."""
        for ws in list(self.websockets):
            with contextlib.suppress(Exception):
                await ws.close(code=aiohttp.WSCloseCode.GOING_AWAY, message=b"server shutdown")

    async def close(self) -> None:
        for task in list(self.probes):
            task.cancel()
        await self.close_websockets()
        if self.session is not None:
            await self.session.close()
        if self.upstreams is not None:
            await self.upstreams.close()

    def request_reload(self) -> None:
        """SIGHUP: reload off the event loop (reading and compiling a file can take time, or
        hang on a slow filesystem), one reload at a time; a signal during one runs another."""
        self._reload_again = True
        if self._reloading is None or self._reloading.done():
            self._reloading = asyncio.get_running_loop().create_task(self._reload_in_thread())

    async def _reload_in_thread(self) -> None:
        while self._reload_again:
            self._reload_again = False
            await self.reload_async()

    async def reload_async(self) -> bool:
        """Re-read and validate the config; keep the old one when the new one is invalid."""
        if self.loader is None:
            return False
        loader = self.loader

        def attempt() -> Config:  # the files a failed load named are watched too
            with recording() as files:
                try:
                    config = loader()
                except BaseException:
                    self.attempted_files = tuple(files)
                    raise
            self.attempted_files = ()
            return config

        try:
            config = await off_loop(attempt, "reload")
        except ConfigError as exc:
            return self._reloaded(exc)
        return self._reloaded(config)  # the swap happens here, on the loop

    def _reloaded(self, result: Config | ConfigError) -> bool:
        if isinstance(result, ConfigError):
            exc = result
            for line, d in logged(exc.diagnostics):  # bounded: logging runs on the loop
                level = logging.WARNING if d and d.warning else logging.ERROR
                log.log(level, "reload: %s", line, extra=where(d.fields() if d else {}))
            log.error("reload failed: keeping the running config (%s)", self.config.source)
            if self.metrics is not None:
                self.metrics.reloads.labels("failure").inc()
            return False
        config = result
        if self.metrics is not None:
            self.metrics.reloads.labels("success").inc()
        for line, d in [] if self.supervised else logged(config.warnings):
            log.warning("reload: %s", line, extra=where(d.fields() if d else {}))
        for line in [] if self.supervised else insecure_warnings(config.routes):
            log.warning("reload: %s", line)
        if config.listen != self.config.listen or config.admin != self.config.admin:
            log.warning("reload: new listen or admin addresses take effect only after a restart")
        if _tls_changed(self.config, config):
            log.warning("reload: turning TLS on or off takes effect only after a restart")
        if config.limits.max_header_size > self.header_cap:
            log.warning(
                "reload: limits.max_header_size above %d takes effect only after a restart",
                self.header_cap,
            )
        old, self.config = self.config, config  # one reference swap: requests keep theirs
        log.log(
            logging.DEBUG if self.supervised else logging.INFO,
            "config reloaded from %s",
            config.source,
        )
        if self.announce:
            log_changes(old, config)
            self._probe(config, old)
        return True

    def _probe(self, config: Config, previous: Config | None = None) -> None:
        task = probe_in_background(config, previous)
        self.probes.add(task)
        task.add_done_callback(self.probes.discard)

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        config = self.config  # one snapshot for the whole request
        exchange = Exchange(request.method, request.raw_path, request.remote or "")
        exchange.request_id = hygiene.request_id(request.headers.get("X-Request-Id"), _new_id)
        exchange.resolve_view = _LazyView(request, config)
        if not preflight_answer.ENABLED:
            _client_view(exchange)
        if self.metrics is not None:
            self.metrics.in_flight.inc()
        try:
            response = await self._dispatch(request, config, exchange)
        except asyncio.CancelledError:
            exchange.error = exchange.error or "client went away"
            self._finish(exchange, 499)
            raise
        except Exception as exc:
            if not exchange.status:
                self._finish(exchange, 500)
                raise
            status = exchange.status
            if isinstance(exc, ConnectionError) and not isinstance(exc, errors.ProxyFailure):
                # Writing the answer failed: the client reset or closed its connection (the
                # upstream's failures are ProxyFailures). Its end, as a cancelled handler's.
                exchange.error = exchange.error or "client went away"
                status = 499
            elif not isinstance(exc, ClientTooSlow):  # then the relay said why, and reset
                # The upstream failed after the headers went out: close the connection so the
                # client sees a truncated body, never a complete one.
                words = error_words(exc)
                exchange.error = f"upstream_body_cut_short: {words}; client connection closed"
                exchange.upstream_error = "upstream_body_cut_short"
            if request.transport is not None:
                request.transport.close()
            self._finish(exchange, status)
            return web.StreamResponse(status=exchange.status)
        if type(response) is PreflightAnswer:  # its head is whole (http/preflight_answer.py)
            self._finish(exchange, 204)
            return response
        if not response.prepared and "X-Request-Id" not in response.headers:
            response.headers["X-Request-Id"] = exchange.request_id
        if type(response) is OwnResponse and not exchange.bytes_out and request.method != "HEAD":
            body = response.body  # corsproxy's own answer: bytes, or None (a 204)
            exchange.bytes_out = len(body) if isinstance(body, bytes) else 0
        self._finish(exchange, response.status)
        return response

    async def _dispatch(
        self, request: web.BaseRequest, config: Config, exchange: Exchange
    ) -> web.StreamResponse:
        method = request.method
        if (method == "OPTIONS" and "Max-Forwards" in request.headers) or (
            method.upper() in hygiene.REFUSED_METHODS
        ):
            early = _max_forwards(request)
            if early is not None:
                exchange.reason = early.reason
                if early.status >= 400:
                    _refused_here(exchange, request, "bad_request" if early.status == 400 else "")
                return _early_response(early, _fallback_decision(request, config))
        if request.version not in (HttpVersion10, HttpVersion11):
            exchange.reason = errors.BAD_VERSION.reason
            _refused_here(exchange, request, "bad_request")
            # aiohttp echoes the request's version in the status line ("HTTP/2.0 505"):
            # answer as what we speak, then close.
            set_version(request, HttpVersion11)
            response = error_response(errors.BAD_VERSION, _fallback_decision(request, config))
            response.force_close()
            return response
        failure = None
        if "Transfer-Encoding" in request.headers:
            failure = hygiene.framing_failure(
                request.version == HttpVersion10, request.headers.getall("Transfer-Encoding")
            )
        if failure is None and hygiene.head_too_large(
            request.raw_path, request.raw_headers, config.limits.max_header_size
        ):
            failure = errors.HEAD_TOO_LARGE
        if failure is not None:
            # Where the body ends is in doubt (or it was never read): answer, then close.
            exchange.reason = failure.reason
            _refused_here(exchange, request, "bad_request")
            response = error_response(failure, _fallback_decision(request, config))
            response.force_close()
            return response
        host = request.headers.get("Host")
        if host is not None and not hygiene.valid_host(host):
            exchange.reason = "bad_host"
            _refused_here(exchange, request, "bad_request")
            decision = _fallback_decision(request, config)
            return _text_response(400, "Bad request: invalid Host header", decision)
        try:
            if preflight_answer.ENABLED:
                path, query, route = self.routing.lookup(config, request.raw_path)
            else:
                path, query, route = route_target(config, request.raw_path)
        except PathError as exc:
            exchange.reason = exc.reason
            _refused_here(exchange, request, "bad_request")
            decision = _fallback_decision(request, config)  # the default policy
            return _text_response(400, f"Bad request: {exc} ({exc.reason})", decision)
        if route is None or route.upstream is None:
            exchange.reason = errors.NO_ROUTE.reason
            return error_response(errors.NO_ROUTE, _fallback_decision(request, config))
        exchange.route = route.name
        headers = request.headers
        websocket = "Upgrade" in headers and hygiene.is_websocket_upgrade(
            request.method, list(headers.items())
        )
        view = RequestView(
            request.method,
            path.route_path,
            tuple(headers.getall("Origin", ())),
            tuple(headers.getall("Access-Control-Request-Method", ())),
            tuple(headers.getall("Access-Control-Request-Headers", ())),
            tuple(headers.getall("Access-Control-Request-Private-Network", ())),
            websocket,
            _own_origin(request, _client_view(exchange)) if websocket else "",
        )
        decision = decide_cached(route.cors, view)
        exchange.decision, exchange.cors_view, exchange.matched_route = decision, view, route
        answer = None  # a successful preflight's head, built once per decision
        if decision.action is Action.PREFLIGHT and preflight_answer.ENABLED:
            answer = preflight_answer.prepared(decision)
        exchange.origin = view.origin[0] if view.origin else ""
        if answer is not None:
            exchange.verdict, exchange.kind = answer.verdict, answer.kind
        else:
            exchange.verdict, exchange.kind = decision.verdict, decision.kind.value
        exchange.reason = decision.reason
        if not decision.allowed and decision.kind is not Kind.NONE and self.refusals is not None:
            # Refused, or would be in report-only mode: one ring update, refusals only.
            self.refusals.record(
                exchange.origin, route.name, decision.reasons, exchange.verdict, exchange.kind
            )
        if answer is not None:
            return PreflightAnswer(answer, exchange.request_id)
        if decision.action is Action.PREFLIGHT:
            return _bodiless(decision.status, decision, [])  # a whole response: one write
        if decision.action is not Action.FORWARD:  # refused (403) or malformed (400) here
            return _text_response(decision.status, decision.body().decode().strip(), decision)

        _client_view(exchange)  # forwarded: the upstream is told who the client is
        limit = config.limits.max_body_size
        if limit is not None and (request.content_length or 0) > limit:
            exchange.reason = errors.BODY_TOO_LARGE.reason
            return error_response(errors.BODY_TOO_LARGE, decision)
        if decision.drop_method_overrides and ACCESS.isEnabledFor(logging.DEBUG):
            exchange.overrides_dropped = any(
                name.lower() in hygiene.METHOD_OVERRIDES for name in headers
            )
        forwarding = hygiene.Forwarding(
            peer=request.remote,
            scheme="https" if request.secure else "http",
            host=headers.get("Host"),
            preserve_host=route.preserve_host,
            request_id=exchange.request_id,
            drop_method_overrides=decision.drop_method_overrides,
            view=exchange.view,
            stripped_prefix=route.path_prefix if route.strip_prefix else "",
        )
        target = Target(
            upstream=route.upstream,
            request_target=route.upstream.target(route.forward_path(path), query),
            headers=hygiene.upstream_request_headers(list(headers.items()), forwarding),
            connect_timeout=route.timeouts.connect,
            read_timeout=route.timeouts.read,
            max_body_size=limit,
            request_buffer=config.limits.request_buffer,
            min_body_rate=config.limits.min_body_rate,
            min_body_rate_grace=config.limits.min_body_rate_grace,
            send_timeout=route.timeouts.send,
            min_response_rate=config.limits.min_response_rate,
            route=route,
        )
        exchange.target = target
        assert self.session is not None
        if websocket:
            return await tunnel(
                request,
                target,
                decision,
                self.session,
                exchange,
                self.websockets,
                config.limits.max_ws_message_size,
            )
        if request.version == HttpVersion11 and "100-continue" in headers.get("Expect", "").lower():
            # Every check that could refuse the body is done: now invite it.
            await send_interim(request, b"HTTP/1.1 100 Continue\r\n\r\n")
        assert self.upstreams is not None
        return await forward(request, target, decision, self.upstreams, exchange)

    def log_refused(
        self,
        request: web.BaseRequest,
        exc: HttpProcessingError,
        failure: errors.Failure,
        response: web.Response,
    ) -> str:
        """Count and log a request the parser refused, like any answer corsproxy writes;
        returns its request id (for the answer's X-Request-Id)."""
        refused = read_refusal(exc.message)
        exchange = Exchange(refused.method or "-", refused.path or "-", request.remote or "")
        exchange.request_id = _new_id()
        exchange.origin = refused.origin
        exchange.reason = failure.reason or "bad_request"
        exchange.error = f"{exchange.reason}: {refused.words}"
        exchange.action = "bad_request"
        body = response.body
        exchange.bytes_out = len(body) if isinstance(body, bytes) else 0
        self._finish(exchange, failure.status, in_flight=False)
        return exchange.request_id

    def _finish(self, exchange: Exchange, status: int, in_flight: bool = True) -> None:
        """Count and log one request."""
        duration = time.monotonic() - exchange.started
        route = exchange.route
        metrics = self.metrics
        if metrics is not None:
            if in_flight:
                metrics.in_flight.dec()
            metrics.count_request(route, method_label(exchange.method), status, duration)
            if exchange.upstream_error:
                metrics.upstream_errors.labels(route, exchange.upstream_error).inc()
            if exchange.kind != "none" and exchange.verdict != "none":
                metrics.count_decision(route, exchange.kind, exchange.verdict, exchange.reason)
        refused = exchange.verdict in ("refused", "would_refuse") or exchange.action
        failed = status >= 500 or exchange.upstream_error  # or a body cut short after the head
        level = logging.WARNING if refused or failed else logging.INFO
        if not ACCESS.isEnabledFor(level):
            return
        path = exchange.path
        if len(path) > MAX_PATH:
            path = capped(path, MAX_PATH)
        debug = ACCESS.isEnabledFor(logging.DEBUG)
        view = exchange.view
        client = view.client if view is not None else _log_client(exchange)
        writer = json_writer()
        if writer is not None and not debug:  # the default: JSON lines, built straight
            head = writer.access.json_head(level, time.time())
            duration_ms = round(duration * 1000, 2)
            line = json_line(head, exchange, _WORKER_PID, client, path, status, duration_ms)
            if line is not None:  # (None: a text to make valid first, as below)
                writer.lines.write(line + "\n")
                return
        fields = access_fields(exchange, _WORKER_PID, client, path, status, duration, debug)
        log_access(level, fields)  # ops/logs.py: the line built directly, written in batches


def _resolve_view(request: web.BaseRequest, config: Config) -> ClientView:
    host = request.headers.get("Host")
    return resolve(
        request.remote,
        request.secure,
        host,
        request.headers.items(),
        config.trusted_proxies,
        None if host else local_authority(request),
        config.forwarded_headers,
    )


class _LazyView:
    """`exchange.resolve_view`: the client's view of `request`, computed when first needed;
    `client()` alone (the access line's field) without it when the peer is no trusted proxy."""

    __slots__ = ("config", "request")

    def __init__(self, request: web.BaseRequest, config: Config) -> None:
        self.request = request
        self.config = config

    def __call__(self) -> ClientView:
        return _resolve_view(self.request, self.config)

    def client(self) -> str:
        peer = self.request.remote
        trusted = self.config.trusted_proxies
        if not trusted or not trusted.trusts(peer):
            return peer or ""  # what resolve() says for an untrusted peer
        return self().client


def _log_client(exchange: Exchange) -> str:
    """The access line's `client`: the view's, resolved only if a trusted proxy may say it."""
    view = exchange.view
    if view is not None:
        return view.client
    lazy = exchange.resolve_view
    if isinstance(lazy, _LazyView):  # a preflight's view, not needed for its answer
        return lazy.client()
    return view.client if (view := _client_view(exchange)) else exchange.peer


def _client_view(exchange: Exchange) -> ClientView | None:
    """The client behind trusted proxies, computed once, when first needed."""
    if exchange.view is None and exchange.resolve_view is not None:
        exchange.view = exchange.resolve_view()
        exchange.resolve_view = None
    return exchange.view


def _refused_here(exchange: Exchange, request: web.BaseRequest, action: str) -> None:
    """An answer corsproxy writes before any decision (a bad path, Host, framing...): the
    access line names the Origin, is a WARNING, and says the action at debug."""
    exchange.origin = request.headers.get("Origin", "")
    exchange.action = action or "refuse"


async def serve(
    config: Config,
    loader: Callable[[], Config] | None = None,
    *,
    shutdown_timeout: float = 30.0,
    drain_delay: float = 0.0,
    keepalive_timeout: float | None = None,
    reuse_port: bool = False,
    ready: Callable[[str], None] | None = None,
    stop: asyncio.Event | None = None,
    signals: bool = True,
    watch: bool = False,
    explainer: Explainer | None = None,
    announce: bool = False,
) -> None:
    """Run until SIGTERM/SIGINT (or `stop`), reloading on SIGHUP (and, with `watch`, when
    the files the configuration names change). `explainer`: `explain` for the admin
    console's form (made by the command layer). `announce`: log the summary line and probe
    the upstreams (http/startup.py), the process's own say, not a worker's."""
    app = ProxyApp(config, loader)
    app.announce = announce
    await app.start()
    server = HandlerClassServer(
        app.handle,
        handler_class=type("_AppRequestHandler", (_RequestHandler,), {"app": app}),
        max_line_size=app.header_cap,  # the request target
        max_field_size=app.header_cap,  # a header field's name and value
        handler_cancellation=True,  # a client that goes away cancels its upstream request
        access_log=None,
        # Idle keep-alive and header reading share this timer in aiohttp (default 3630 s).
        keepalive_timeout=keepalive_timeout or config.limits.idle_timeout,
        auto_decompress=False,  # forward compressed request bodies untouched
    )
    runner = web.ServerRunner(server, shutdown_timeout=shutdown_timeout)
    await runner.setup()
    tls = config.tls
    site = HandshakeTimeoutSite(
        runner,
        config.listen.host,
        config.listen.port,
        reuse_address=True,
        reuse_port=reuse_port,
        ssl_context=rotating_context(tls, lambda: app.config.tls) if tls else None,
        ssl_handshake_timeout=handshake_timeout(config),
    )
    admin_runner: web.AppRunner | None = None
    listener = ("listen", config.listen)
    try:
        await site.start()
        if config.admin is not None:
            listener = ("admin.listen", config.admin.listen)
            from corsproxy.ops.admin import admin_app
            from corsproxy.ops.console import Console

            assert app.metrics is not None and app.refusals is not None  # made with admin
            console = Console(lambda: app.config, app.refusals, explainer, parser_accepts_method)
            admin_runner = web.AppRunner(
                admin_app(app.metrics, lambda: app.draining, console), access_log=None
            )
            await admin_runner.setup()
            admin = config.admin.listen
            admin_tls = config.admin.tls
            await refuse_shared_port(runner.addresses, admin)  # http/shared_port.py
            await HandshakeTimeoutSite(
                admin_runner,
                admin.host,
                admin.port,
                reuse_address=True,
                reuse_port=reuse_port,
                ssl_context=rotating_context(
                    admin_tls, lambda: app.config.admin.tls if app.config.admin else None
                )
                if admin_tls
                else None,
                ssl_handshake_timeout=handshake_timeout(config),
            ).start()
    except OSError as exc:
        await runner.cleanup()
        if admin_runner is not None:
            await admin_runner.cleanup()
        await app.close()
        raise ListenFailed(*listener, exc) from None
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    bind_loop(loop, app.metrics.log_lines_dropped.inc if app.metrics else None)
    if signals:
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        loop.add_signal_handler(signal.SIGHUP, app.request_reload)
    sockets = bound_sockets(site)
    address = sockets[0].getsockname() if sockets else (config.listen.host, config.listen.port)
    host = f"[{address[0]}]" if ":" in address[0] else address[0]
    url = f"{'https' if tls else 'http'}://{host}:{address[1]}"
    log.info("corsproxy listening on %s, upstream %s", url, config.upstream or "(per route)")
    for line in insecure_warnings(config.routes):
        log.warning("%s", line)
    if announce:
        log_summary(config)
        app._probe(config)
    watcher = None
    if watch:
        watcher = Watcher(
            lambda: (*app.config.watched_files(), *app.attempted_files),
            lambda _: loop.call_soon_threadsafe(app.request_reload),
        )
        watcher.start()
    if ready is not None:
        ready(url)
    await stop.wait()
    if watcher is not None:
        watcher.stop()
    app.draining = True  # /readyz answers 503 from now on
    if drain_delay > 0:
        log.info("draining: /readyz is 503; still serving for %.1f s", drain_delay)
        await asyncio.sleep(drain_delay)
    log.info("shutting down: finishing requests in flight (at most %.0f s)", shutdown_timeout)
    await app.close_websockets()
    await runner.cleanup()
    await app.close()
    if admin_runner is not None:
        await admin_runner.cleanup()
    log.info("stopped")
    bind_loop(None)  # what waits is handed on to the writer (ops/log_writer.py)
