"""`explain` for the admin console's form: the command layer's walk-through, handed to the
server as a callable (ops may not import commands)."""

from __future__ import annotations

from typing import Any

from corsproxy.commands.explain import explain, render_text
from corsproxy.config import Config
from corsproxy.ops.console import ExplainQuery


def explain_for_console(config: Config, query: ExplainQuery) -> dict[str, Any]:
    """`corsproxy explain --format json` for one request, with the text form as `text`."""
    result = explain(
        config,
        query.origin,
        method=query.method,
        path=query.path,
        headers=query.headers,
        credentials=query.credentials,
    )
    return {**result.to_json(), "text": render_text(result)}
