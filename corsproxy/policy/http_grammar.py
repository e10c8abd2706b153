"""HTTP's own grammar and method semantics (RFC 9110, 9112), shared by the policy and the
transport: one definition of a token, of the methods, and of the hop-by-hop fields. Pure.
"""

from __future__ import annotations

import re

# tchar (RFC 9110 5.6.2): a token is one or more of these; header names and methods are tokens.
TCHARS = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
TOKEN = re.compile(TCHARS + r"\Z")

# The methods RFC 9110 defines (9.3), the ones metrics label by name; any other is "OTHER".
STANDARD_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE"}
)
# Idempotent (9.2.2): a request of these may be retried on a fresh connection when a reused
# one was closed before any byte of the answer (RFC 9112 9.3.1).
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
# Methods without a defined meaning for a body (9.3): no `Content-Length: 0` is sent for them.
NO_BODY_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "CONNECT", "DELETE"})

# Hop-by-hop fields (7.6.1) plus the de-facto ones (Proxy-Connection, Keep-Alive,
# HTTP2-Settings): never forwarded in either direction.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "http2-settings",
    }
)
