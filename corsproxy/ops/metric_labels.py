"""The label values the metrics use that the request path computes (`method_label`), apart
from ops/admin.py so a worker without an admin listener never imports prometheus_client."""

from __future__ import annotations

from corsproxy.policy.http_grammar import STANDARD_METHODS


def method_label(method: str) -> str:
    return method if method in STANDARD_METHODS else "OTHER"
