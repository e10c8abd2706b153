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
from corsproxy.policy.cors import Kind

# Client-chosen values as logged, at most (characters; then `…(+N chars)`).
MAX_VALUE = 512  # the Origin, a preflight's request_method and request_headers
MAX_PATH = 2048  # the request target (`path`)


def capped(value: str, limit: int) -> str:
    """`value` cut to `limit` characters, saying how many more there were."""
    if len(value) <= limit:
        return value
    return f"{value[:limit]}…(+{len(value) - limit} chars)"


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
