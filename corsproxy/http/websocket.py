"""The WebSocket tunnel: executes a decision, never makes policy.

The upstream handshake comes first, so an upstream refusal reaches the client as itself,
never as a 101 followed by a close; a redirect is a refusal too (502), never followed.
Then messages are relayed one by one, each bounded by `limits.max_ws_message_size`, and the
closing handshake is relayed with its codes.

Closing: neither side's CLOSE is answered by aiohttp (`autoclose=False`). A CLOSE from one
side is relayed to the other with its code and reason; the other side's answer code then
answers the first side. A message over the limit closes its sender with 1009 (aiohttp does
that itself) and the other side with 1009 too, with a reason naming the sender; the message
is never relayed.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import aiohttp
from aiohttp import WSMsgType, web
from aiohttp.http import HttpVersion11
from yarl import URL

from corsproxy.config.upstream_tls import upstream_tls_of
from corsproxy.http import errors
from corsproxy.http import headers as hygiene
from corsproxy.http.aiohttp_private import DefaultHeadersHook, LingeringCloseHook
from corsproxy.http.connect import tls_reason
from corsproxy.http.error_words import error_words
from corsproxy.http.relay import Exchange, Target, error_response
from corsproxy.policy.cors import Decision, response_headers

log = logging.getLogger("corsproxy")

# Connections of the WebSocket session: each open WebSocket holds one for its whole life.
CONNECTIONS = 512
# How long a closing handshake may take on each side before the connection is dropped.
CLOSE_TIMEOUT = 10.0

_WS_HANDSHAKE = frozenset(
    {"sec-websocket-key", "sec-websocket-version", "sec-websocket-extensions",
     "sec-websocket-accept", "sec-websocket-protocol"}
)  # fmt: skip

# Stripped from the upstream handshake when the decision says so (a cross-origin page on a
# policy without credentials); Proxy-Authorization is hop-by-hop and never forwarded.
_CREDENTIALS = frozenset({"cookie", "authorization"})

TOO_BIG = aiohttp.WSCloseCode.MESSAGE_TOO_BIG
GOING_AWAY = aiohttp.WSCloseCode.GOING_AWAY

Socket = web.WebSocketResponse[bool] | aiohttp.ClientWebSocketResponse[bool]

# --- the handshake ----------------------------------------------------------------

# Where the upstream handshake is, for the log line of a timeout (set by trace callbacks,
# which run in the handshake's own task).
_phase: contextvars.ContextVar[list[str]] = contextvars.ContextVar("ws_phase")


def _tracer(phase: str) -> Callable[[aiohttp.ClientSession, SimpleNamespace, Any], Awaitable[None]]:
    async def on_event(session: aiohttp.ClientSession, ctx: SimpleNamespace, params: Any) -> None:
        holder = _phase.get(None)
        if holder is not None:
            holder[0] = phase

    return on_event


_QUEUED = "still waiting for a free upstream connection"
_CONNECTING = "still connecting to the upstream"
_SENT = "the upstream did not answer the handshake"


def _trace_config() -> aiohttp.TraceConfig:
    trace = aiohttp.TraceConfig()
    trace.on_connection_queued_start.append(_tracer(_QUEUED))
    trace.on_connection_create_start.append(_tracer(_CONNECTING))
    trace.on_request_headers_sent.append(_tracer(_SENT))
    trace.freeze()
    return trace


async def _no_redirects(
    request: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType
) -> aiohttp.ClientResponse:
    """ws_connect follows redirects and cannot be told not to: a Location would get the
    handshake, forwarding headers included, sent to any host or path the upstream names.
    A 3xx ends the handshake here, as a refusal (tunnel() answers 502)."""
    response = await handler(request)
    if 300 <= response.status <= 399:
        response.close()
        raise aiohttp.WSServerHandshakeError(
            response.request_info,
            (),
            status=response.status,
            message="redirect not followed",
            headers=response.headers,
        )
    return response


def make_session(
    *, max_field_size: int = 8190, max_line_size: int = 8190, connections: int = 0
) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(
        limit=connections or CONNECTIONS,
        # A WebSocket holds its connection for life; a refused handshake's connection must
        # not carry the next handshake (its answer may not have been read to the end).
        force_close=True,
        ttl_dns_cache=10,
        enable_cleanup_closed=False,
    )
    return aiohttp.ClientSession(
        connector=connector,
        auto_decompress=False,
        cookie_jar=aiohttp.DummyCookieJar(),
        trust_env=False,
        timeout=aiohttp.ClientTimeout(total=None),
        skip_auto_headers=hygiene.SKIP_AUTO_HEADERS,  # each only when the client did not send it
        max_field_size=max_field_size,
        max_line_size=max_line_size,
        raise_for_status=False,
        trace_configs=[_trace_config()],
        middlewares=(_no_redirects,),
    )


def _tls_failure(exc: BaseException, tls_upstream: bool) -> str | None:
    """OpenSSL's reason, in the words http's connect uses, when `exc` is a failed TLS
    handshake to the upstream (a reset while connecting to a wss upstream counts: a refused
    TCP connect is ECONNREFUSED, a reset comes once connected, in the handshake)."""
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return tls_reason(exc.certificate_error)
    if isinstance(exc, aiohttp.ClientConnectorSSLError):
        return tls_reason(exc.os_error)
    if (
        tls_upstream
        and isinstance(exc, aiohttp.ClientConnectorError)
        and isinstance(exc.os_error, (ConnectionResetError, ConnectionAbortedError))
    ):
        return tls_reason(exc.os_error)
    return None


def _classify(exc: BaseException) -> errors.Failure:
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return errors.UPSTREAM_CONNECT_TIMEOUT
    if isinstance(exc, (aiohttp.ServerTimeoutError, TimeoutError)):
        return errors.UPSTREAM_TIMEOUT
    if isinstance(exc, aiohttp.ClientConnectorError):
        return errors.UPSTREAM_UNREACHABLE
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return errors.UPSTREAM_DISCONNECTED
    if isinstance(exc, (aiohttp.ClientResponseError, aiohttp.ClientPayloadError)):
        return errors.UPSTREAM_BAD_RESPONSE
    return errors.UPSTREAM_DISCONNECTED


async def tunnel(
    request: web.BaseRequest,
    target: Target,
    decision: Decision,
    session: aiohttp.ClientSession,
    exchange: Exchange,
    registry: set[web.WebSocketResponse],
    max_msg_size: int,
) -> web.StreamResponse:
    """Connect upstream first; only then accept the client (so refusals are relayed).

    The upstream handshake, waiting for a connection slot included, is bounded by the
    route's connect + read timeouts (504). Open client sockets are kept in `registry`, so
    shutdown can close them with 1001."""
    failure = hygiene.websocket_handshake_failure(
        request.version == HttpVersion11, request.headers.items()
    )
    if failure is not None:  # answered here: nothing reaches the upstream
        exchange.reason = failure.reason
        response = error_response(failure, decision)
        if failure is errors.WS_BAD_VERSION:
            response.headers["Sec-WebSocket-Version"] = "13"
        return response
    protocols = [
        p.strip()
        for value in request.headers.getall("Sec-WebSocket-Protocol", ())
        for p in value.split(",")
        if p.strip()
    ]
    drop = _WS_HANDSHAKE | _CREDENTIALS if decision.strip_credentials else _WS_HANDSHAKE
    headers = [(n, v) for n, v in target.headers if n.lower() not in drop]
    would = decision.would  # report-only: nothing changes on the wire, the log says it
    has_credentials = any(n.lower() in _CREDENTIALS for n, _ in target.headers)
    if would is not None and would.strip_credentials and has_credentials:
        log.info(
            "report-only: enforce mode would strip Cookie and Authorization from the "
            "WebSocket handshake %s (request id %s)",
            request.raw_path[:200],
            exchange.request_id,
        )
    ws_url = URL(target.url, encoded=True)
    ws_url = ws_url.with_scheme("wss" if ws_url.scheme == "https" else "ws")
    bound = target.connect_timeout + target.read_timeout
    # A wss upstream gets the route's upstream_tls (aiohttp's connector, not upstream.py's).
    tls = upstream_tls_of(target.upstream)
    phase = ["starting the handshake"]
    _phase.set(phase)
    try:
        async with asyncio.timeout(bound):
            upstream = await session.ws_connect(
                ws_url,
                headers=headers,
                protocols=protocols,
                autoping=False,
                autoclose=False,
                max_msg_size=_aiohttp_limit(max_msg_size),
                decode_text=False,
                compress=0,  # no permessage-deflate offered (see the client side)
                timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=CLOSE_TIMEOUT),
                ssl=tls.context if tls is not None and tls.context is not None else True,
                server_hostname=tls.server_name if tls is not None else None,
            )
    except aiohttp.WSServerHandshakeError as exc:
        exchange.upstream_status = exc.status
        status = exc.status if 400 <= exc.status <= 599 else 502
        exchange.error = f"upstream refused the WebSocket handshake: {exc.status}"
        if 300 <= exc.status <= 399:
            location = exc.headers.get("Location", "")[:200] if exc.headers else ""
            exchange.error += f" (a redirect to {location!r}, never followed)"
        reason = "upstream_ws_refused"
        return error_response(
            errors.Failure(status, reason, "WebSocket handshake refused"), decision
        )
    except TimeoutError:  # the bound above (aiohttp's own timeouts are not set)
        connecting = phase[0] in (_QUEUED, _CONNECTING)
        failure = errors.UPSTREAM_CONNECT_TIMEOUT if connecting else errors.UPSTREAM_TIMEOUT
        exchange.upstream_error = failure.reason
        exchange.error = (
            f"{failure.reason}: WebSocket handshake not done within {bound:g} s "
            f"(timeouts.connect + timeouts.read): {phase[0]}"
        )
        return error_response(failure, decision)
    except aiohttp.ClientError as exc:
        failure = _classify(exc)
        tls_failed = _tls_failure(exc, ws_url.scheme == "wss")
        if tls_failed is not None:
            failure = errors.UPSTREAM_TLS
            label = target.upstream.origin
            if tls is not None and tls.server_name:
                label = f"{label} (server name {tls.server_name})"
            log.warning("upstream %s: TLS handshake failed: %s", label, tls_failed)
        exchange.upstream_error = failure.reason
        exchange.error = f"{failure.reason}: {error_words(exc)}"[:300]
        return error_response(failure, decision)
    exchange.upstream_status = 101
    client = _ClientSocket(
        protocols=(upstream.protocol,) if upstream.protocol else (),
        autoping=False,
        autoclose=False,
        max_msg_size=_aiohttp_limit(max_msg_size),
        decode_text=False,
        timeout=CLOSE_TIMEOUT,
        # No permessage-deflate: a deflated frame of 4 KB can inflate to a whole message,
        # so memory would follow the limit, not what the client sends. (The upstream leg
        # offers none either: ws_connect's compress=0.)
        compress=False,
    )
    for name, value in response_headers(decision, []):
        client.headers.add(name, value)
    client.headers["X-Request-Id"] = exchange.request_id
    registry.add(client)
    try:
        await client.prepare(request)
        exchange.status = 101
        relay = asyncio.create_task(_relay(client, upstream, exchange, max_msg_size))
        try:
            await asyncio.shield(relay)
        except asyncio.CancelledError:
            # aiohttp cancels the handler once the client's connection is closed: that is how
            # every tunnel ends, sometimes before the upstream was told (a message over the
            # limit closes the client first). Let the relay finish (its closing is bounded);
            # then the tunnel ended as the relay says, not as a request the client abandoned.
            with contextlib.suppress(Exception):
                await relay
            task = asyncio.current_task()
            if task is None or relay.cancelled():
                raise
            task.uncancel()
        await client.lingered()
    finally:
        registry.discard(client)
        await upstream.close(code=aiohttp.WSCloseCode.GOING_AWAY)
        await client.close(code=aiohttp.WSCloseCode.GOING_AWAY)
    return client


class _ClientSocket(LingeringCloseHook, DefaultHeadersHook, web.WebSocketResponse):
    """The client's side of a tunnel: aiohttp's default `Server` header (naming Python and
    aiohttp versions) is not sent; the upstream's 101 headers are not relayed either; a
    connection failed for a message over the limit closes lingering, so that the client
    reads the 1009 instead of a reset (Firefox reported 1006)."""


def _aiohttp_limit(limit: int) -> int:
    # aiohttp refuses a message of exactly max_msg_size bytes; ours is the largest allowed.
    return limit + 1


# --- relaying ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ending:
    """How one side's stream of messages ended."""

    code: int  # the close code to pass on (valid on the wire)
    reason: bytes
    closed_by_peer: bool  # the side sent a CLOSE frame that still needs an answer
    why: str  # for the access log


# RFC 6455 7.4: codes a close frame may carry. 1005, 1006 and 1015 are only ever reported
# locally; 1004 and 1016-2999 are reserved; 5000 and up are not codes.
def wire_code(code: int) -> int:
    """A close code fit to send: a received one as is, a local report mapped sensibly."""
    if 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999:
        return code
    if code in (0, 1005):  # a CLOSE without a code: the peer closed normally
        return aiohttp.WSCloseCode.OK
    return aiohttp.WSCloseCode.GOING_AWAY  # 1006 (connection lost), 1015 (TLS) and the rest


async def _pump(source: Socket, sink: Socket, name: str, exchange: Exchange, limit: int) -> Ending:
    """Relay messages one way until `source` ends; say how it ended."""
    while True:
        message = await source.receive()
        kind = message.type
        if kind in (WSMsgType.TEXT, WSMsgType.BINARY) and len(message.data) > limit:
            # Defensive: aiohttp lets an inflated message of limit + 1 bytes through, were
            # compression ever negotiated (see _aiohttp_limit).
            await source.close(code=TOO_BIG)
            why = f"{name} message too big"
            return Ending(TOO_BIG, why.encode(), False, why)
        if kind is WSMsgType.TEXT:
            await sink.send_frame(message.data, WSMsgType.TEXT)  # bytes: decode_text=False
            if name == "upstream":
                exchange.bytes_out += len(message.data)
        elif kind is WSMsgType.BINARY:
            await sink.send_bytes(message.data)
            if name == "upstream":
                exchange.bytes_out += len(message.data)
        elif kind is WSMsgType.PING:
            await sink.ping(message.data)
        elif kind is WSMsgType.PONG:
            await sink.pong(message.data)
        elif kind is WSMsgType.CLOSE:
            reason = message.extra.encode() if isinstance(message.extra, str) else b""
            return Ending(wire_code(int(message.data)), reason, True, f"{name} closed")
        elif kind is WSMsgType.ERROR:
            # aiohttp has already closed `source` with the error's code (1009, 1002).
            error = message.data
            if isinstance(error, aiohttp.WebSocketError) and error.code == TOO_BIG:
                why = f"{name} message too big"
                return Ending(TOO_BIG, why.encode(), False, f"{why}: {error}")
            why = f"{name} error"
            return Ending(GOING_AWAY, why.encode(), False, f"{why}: {error!r}")
        else:  # CLOSING, CLOSED: the source is gone without a close frame, or closed by us
            return Ending(GOING_AWAY, b"", False, f"{name} went away")


async def _relay(client: Socket, upstream: Socket, exchange: Exchange, limit: int) -> None:
    from_client = asyncio.create_task(_pump(client, upstream, "client", exchange, limit))
    from_upstream = asyncio.create_task(_pump(upstream, client, "upstream", exchange, limit))
    try:
        done, _ = await asyncio.wait(
            (from_client, from_upstream), return_when=asyncio.FIRST_COMPLETED
        )
        first = from_client if from_client in done else from_upstream
        ending = first.result()  # a pump that failed (a send to a lost peer) raises here
        exchange.error = "" if ending.closed_by_peer else ending.why[:300]
        source, sink = (client, upstream) if first is from_client else (upstream, client)
        # The client's pump is stopped before the client is closed: close() then reads the
        # client's answer itself (WebSocketResponse.receive() is cancel-safe). The upstream's
        # pump is not cancelled (that marks an aiohttp client socket as lost, 1006): close()
        # breaks its receive() and reads the answer.
        from_client.cancel()
        async with asyncio.timeout(3 * CLOSE_TIMEOUT):
            await asyncio.wait((from_client,))
            # Pass the close on, then answer the side that closed with the other's answer.
            await sink.close(code=ending.code, message=ending.reason)
            if ending.closed_by_peer:
                answer = sink.close_code
                if answer is None or wire_code(answer) != answer:
                    answer = ending.code  # no answer (timeout, connection lost): echo
                reason = ending.reason if answer == ending.code else b""
                await source.close(code=answer, message=reason)
            await from_upstream
    except Exception as exc:  # a send to a side that is gone, or a hung close
        exchange.error = exchange.error or f"WebSocket relay ended: {exc!r}"[:300]
    finally:
        for task in (from_client, from_upstream):
            task.cancel()
        for task in (from_client, from_upstream):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
