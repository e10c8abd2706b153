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

from json.encoder import encode_basestring_ascii as _json
from typing import Any

from corsproxy.http.relay import Exchange
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
) -> str | None:
    """The JSON access line (without its newline) of `exchange`, at info or warning, built
    straight from it: the text `AccessFormatter.line` writes for the fields `_finish` and
    `add_fields` (not at debug) would make, with no dict, no per-field loop and one C call
    per text; `head` is `AccessFormatter.json_head`. None when a text held a surrogate
    (maybe a lone one, from bytes that were not UTF-8): then the general path, which makes
    it valid. tests/test_log_format.py checks the two, byte for byte."""
    m = _json(exchange.method)
    p = _json(path)  # escaping is per character: the message is the two escaped, joined
    upstream_status = exchange.upstream_status
    line = (
        f'{head}"message":{m[:-1]} {p[1:-1]} {status}","pid":{pid}'
        f',"request_id":{_json(exchange.request_id)},"peer":{_json(exchange.peer)}'
        f',"client":{_json(client)},"method":{m},"path":{p},"status":{status}'
        f',"upstream_status":{upstream_status if upstream_status else "null"}'
        f',"bytes":{exchange.bytes_out},"duration_ms":{duration_ms!r}'
        f',"route":{_json(exchange.route)},"cors":{_json(exchange.verdict)}'
        f',"reason":{_json(exchange.reason)}'
    )
    # The optional fields, in add_fields' order; each present only when it applies.
    origin = exchange.origin
    if origin:
        if len(origin) > MAX_VALUE:
            origin = capped(origin, MAX_VALUE)
        line += ',"origin":' + _json(origin)
    if exchange.error:
        line += ',"error":' + _json(exchange.error)
    target = exchange.target
    if target is not None:
        url = target.upstream.origin + target.request_target.partition("?")[0]
        line += ',"upstream_url":' + _json(url)
    decision = exchange.decision
    if decision is not None:
        if exchange.verdict in ("refused", "would_refuse"):
            line += ',"reasons":[' + ",".join(map(_json, decision.reasons)) + "]"
        view = exchange.cors_view
        if decision.kind is Kind.PREFLIGHT and view is not None:
            asked = ", ".join(view.request_method)
            if len(asked) > MAX_VALUE:
                asked = capped(asked, MAX_VALUE)
            line += ',"request_method":' + _json(asked)
            if view.request_headers:
                asked = ", ".join(view.request_headers)
                if len(asked) > MAX_VALUE:
                    asked = capped(asked, MAX_VALUE)
                line += ',"request_headers":' + _json(asked)
    if "\\ud" in line:  # json writes a surrogate so: maybe a lone one (rare)
        return None
    return line + "}"
