"""The failure catalogue: every error answer corsproxy writes itself (status, a stable
reason code for logs and metrics, the message), and the exceptions that carry one through
the I/O shell instead of a bare ValueError. Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Failure:
    """A proxy-generated error answer: status and a stable reason code."""

    status: int
    reason: str
    message: str


UPSTREAM_UNREACHABLE = Failure(502, "upstream_unreachable", "the upstream cannot be reached")
UPSTREAM_CONNECT_TIMEOUT = Failure(
    504, "upstream_connect_timeout", "connecting to the upstream timed out"
)
UPSTREAM_TIMEOUT = Failure(504, "upstream_timeout", "the upstream did not answer in time")
UPSTREAM_DISCONNECTED = Failure(
    502, "upstream_disconnected", "the upstream closed the connection without an answer"
)
UPSTREAM_BAD_RESPONSE = Failure(502, "upstream_bad_response", "the upstream sent an invalid answer")
UPSTREAM_TLS = Failure(502, "upstream_tls_failed", "the TLS handshake with the upstream failed")
BODY_TOO_LARGE = Failure(413, "body_too_large", "the request body is too large")
BODY_TIMEOUT = Failure(408, "body_timeout", "the request body stalled")
BODY_TOO_SLOW = Failure(408, "body_too_slow", "the request body arrived too slowly")
NO_ROUTE = Failure(404, "no_route", "no route for this path")
BAD_VERSION = Failure(505, "http_version_not_supported", "only HTTP/1.0 and HTTP/1.1 are served")
WS_BAD_VERSION = Failure(426, "websocket_bad_version", "only WebSocket version 13 is served")
WS_BAD_HANDSHAKE = Failure(400, "websocket_bad_handshake", "not a valid WebSocket handshake")
TRACE_REFUSED = Failure(405, "trace_refused", "TRACE is not served here")
BAD_MAX_FORWARDS = Failure(400, "bad_max_forwards", "Max-Forwards must be one decimal number")
MAX_FORWARDS_REACHED = Failure(200, "max_forwards_reached", "")
HEAD_TOO_LARGE = Failure(431, "header_too_large", "the request line or header fields are too large")
HTTP10_TRANSFER_ENCODING = Failure(400, "bad_framing", "Transfer-Encoding in an HTTP/1.0 request")
TRANSFER_CODING_NOT_IMPLEMENTED = Failure(
    501, "transfer_coding_not_implemented", "only the transfer coding 'chunked' is accepted"
)
HEAD_UNSENDABLE = Failure(400, "bad_request", "a header or the target cannot be forwarded")


class ProxyFailure(Exception):
    """An exchange that cannot go on; `failure` is the answer the client gets."""

    def __init__(self, failure: Failure, detail: str = "") -> None:
        super().__init__(f"{failure.reason}: {detail}" if detail else failure.reason)
        self.failure = failure
        self.detail = detail


class UpstreamFailure(ProxyFailure):
    """The exchange with the upstream failed; `failure` says how, for the client's answer."""


class RequestRefused(ProxyFailure):
    """The client's request cannot be forwarded: its body is over the limit, or a header or
    the target could not be written without splitting the head."""
