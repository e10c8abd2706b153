"""The access line's fields beyond the always-present ones (http/server.py: `_finish`), read
from the references the exchange kept: computed only when the line is written, and the
decision's details only at debug level.

- `upstream_url`: where the request went, `scheme://host[:port]/path`, without the query
  (a query may hold keys or tokens; the client's own target, query included, is `path`).
- `reasons`: every reason of a refusal (or of a would-refuse in report-only mode).
- `origin`, `error`: when there is one.
- `request_method`, `request_headers`: what a preflight asked for, as sent.
- at debug: `action`, `route_prefix`, `origin_rule`, `headers_added`, `headers_stripped`,
  `method_overrides_dropped`, `would_action` (report-only).
"""

from __future__ import annotations

from typing import Any

from corsproxy.http.relay import Exchange
from corsproxy.ops.log_format import json_text
from corsproxy.policy.cors import Kind

# Client-chosen values as logged, at most (characters; then `…(+N chars)`).
MAX_VALUE = 512  # the Origin, a preflight's request_method and request_headers
MAX_PATH = 2048  # the request target (`path`)


def capped(value: str, limit: int) -> str:
    """`value` cut to `limit` characters, saying how many more there were."""
    if len(value) <= limit:
        return value
    return f"{value[:limit]}…(+{len(value) - limit} chars)"


def access_fields(
    exchange: Exchange,
    pid: int,
    client: str,
    path: str,
    status: int,
    duration: float,
    debug: bool,
) -> dict[str, Any]:
    """The access line's fields (http/server.py `_finish`; text lines, debug, not serving)."""
    fields = {
        "pid": pid,
        "request_id": exchange.request_id,
        "peer": exchange.peer,
        "client": client,
        "method": exchange.method,
        "path": path,
        "status": status,
        "upstream_status": exchange.upstream_status or None,
        "bytes": exchange.bytes_out,
        "duration_ms": round(duration * 1000, 2),
        "route": exchange.route,
        "cors": exchange.verdict,
        "reason": exchange.reason,
    }
    add_fields(exchange, fields, debug)
    return fields


def add_fields(exchange: Exchange, fields: dict[str, Any], debug: bool) -> None:
    """Add the optional fields that apply to this exchange (none is ever null or empty)."""
    if exchange.origin:
        fields["origin"] = capped(exchange.origin, MAX_VALUE)
    if exchange.error:
        fields["error"] = exchange.error
    target = exchange.target
    if target is not None:
        fields["upstream_url"] = target.upstream.origin + target.request_target.partition("?")[0]
    decision = exchange.decision
    if decision is None:
        if debug and exchange.action:  # refused before any decision (http/server.py)
            fields["action"] = exchange.action
        return
    if exchange.verdict in ("refused", "would_refuse"):
        fields["reasons"] = list(decision.reasons)
    view = exchange.cors_view
    if decision.kind is Kind.PREFLIGHT and view is not None:
        fields["request_method"] = capped(", ".join(view.request_method), MAX_VALUE)
        if view.request_headers:
            fields["request_headers"] = capped(", ".join(view.request_headers), MAX_VALUE)
    if debug:
        fields.update(debug_fields(exchange))


def debug_fields(exchange: Exchange) -> dict[str, Any]:
    """The decision's details: what `--log-level debug` adds to the access line."""
    decision = exchange.decision
    assert decision is not None
    out: dict[str, Any] = {"action": decision.action.value}
    if decision.would is not None:
        out["would_action"] = decision.would.action.value
    route = exchange.matched_route
    if route is not None:
        out["route_prefix"] = route.path_prefix
        policy = route.cors
        if exchange.origin and policy.enabled:
            entry = policy.origins.match(exchange.origin).entry
            out["origin_rule"] = entry.text if entry is not None else "(none)"
    added = [f"{name}: {value}" for name, value in decision.headers]
    if decision.vary:
        added.append("Vary: " + ", ".join(decision.vary))
    out["headers_added"] = added
    out["headers_stripped"] = list(exchange.stripped)
    if exchange.overrides_dropped:  # one was sent, and not forwarded (http/server.py)
        out["method_overrides_dropped"] = True
    return out


def json_line(
    head: str,
    exchange: Exchange,
    pid: int,
    client: str,
    path: str,
    status: int,
    duration_ms: float,
) -> str:
    """The JSON access line (without its newline) of `exchange`, at info or warning, built
    straight from it: the text `AccessFormatter.line` writes for the fields `_finish` and
    `add_fields` (not at debug) would make, with no dict and no per-field loop; `head` is
    `AccessFormatter.json_head`. tests/test_log_format.py checks the two, byte for byte."""
    method = exchange.method
    m = json_text(method)
    p = json_text(path)
    if "\\ud" in m or "\\ud" in p:  # maybe a lone surrogate: made valid as one text
        message = json_text(f"{method} {path} {status:d}")
    else:  # escaping is per character: the message is the two escaped, joined
        message = f'{m[:-1]} {p[1:-1]} {status:d}"'
    upstream_status = exchange.upstream_status
    line = (
        f'{head}"message":{message},"pid":{pid:d},"request_id":{json_text(exchange.request_id)}'
        f',"peer":{json_text(exchange.peer)},"client":{json_text(client)},"method":{m}'
        f',"path":{p},"status":{status:d},"upstream_status":'
        f"{f'{upstream_status:d}' if upstream_status else 'null'},"
        f'"bytes":{exchange.bytes_out:d},"duration_ms":{float.__repr__(duration_ms)}'
        f',"route":{json_text(exchange.route)},"cors":{json_text(exchange.verdict)}'
        f',"reason":{json_text(exchange.reason)}'
    )
    # The optional fields, in add_fields' order; each present only when it applies.
    if exchange.origin:
        line += ',"origin":' + json_text(capped(exchange.origin, MAX_VALUE))
    if exchange.error:
        line += ',"error":' + json_text(exchange.error)
    target = exchange.target
    if target is not None:
        url = target.upstream.origin + target.request_target.partition("?")[0]
        line += ',"upstream_url":' + json_text(url)
    decision = exchange.decision
    if decision is None:
        return line + "}"
    if exchange.verdict in ("refused", "would_refuse"):
        line += ',"reasons":[' + ",".join(map(json_text, decision.reasons)) + "]"
    view = exchange.cors_view
    if decision.kind is Kind.PREFLIGHT and view is not None:
        asked = capped(", ".join(view.request_method), MAX_VALUE)
        line += ',"request_method":' + json_text(asked)
        if view.request_headers:
            asked = capped(", ".join(view.request_headers), MAX_VALUE)
            line += ',"request_headers":' + json_text(asked)
    return line + "}"
