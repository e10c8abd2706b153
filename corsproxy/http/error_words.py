"""A failed exchange in a few plain words, for the access log's `error` field.

`error_words()` maps what the I/O raised (an `UpstreamFailure` and its cause, an OSError, an
ssl or aiohttp exception) to words an operator reads at a glance: `connection refused`,
`timed out connecting`, `connection reset`, `TLS: certificate verify failed: ...`,
`name not resolved`. Never a nested repr (`ClientConnectorError(ConnectionKey(...))`): an
exception it does not know is its class name and its message, bounded. Pure: no I/O.
"""

from __future__ import annotations

import errno
import socket
import ssl

import aiohttp

from corsproxy.http import errors
from corsproxy.http.connect import tls_reason

MAX_CHARS = 300

CONNECTION_REFUSED = "connection refused"
CONNECTION_RESET = "connection reset"
TIMED_OUT_CONNECTING = "timed out connecting"
TIMED_OUT_READING = "timed out waiting for the answer"
NAME_NOT_RESOLVED = "name not resolved"
CLOSED_WITHOUT_ANSWER = "connection closed without an answer"
BODY_CUT_SHORT = "body cut short"  # the head came, then the body ended early (cut_short())

_ERRNO = {
    errno.ECONNREFUSED: CONNECTION_REFUSED,
    errno.ECONNRESET: CONNECTION_RESET,
    errno.ECONNABORTED: "connection aborted",
    errno.EPIPE: "connection closed while sending",
    errno.ETIMEDOUT: TIMED_OUT_CONNECTING,
    errno.EHOSTUNREACH: "host unreachable",
    errno.ENETUNREACH: "network unreachable",
    errno.EADDRNOTAVAIL: "address not available",
}

# The failure's own words, when its cause says nothing more precise.
_FAILURE = {
    errors.UPSTREAM_UNREACHABLE.reason: "upstream unreachable",
    errors.UPSTREAM_CONNECT_TIMEOUT.reason: TIMED_OUT_CONNECTING,
    errors.UPSTREAM_TIMEOUT.reason: TIMED_OUT_READING,
    errors.UPSTREAM_DISCONNECTED.reason: CLOSED_WITHOUT_ANSWER,
    errors.UPSTREAM_BAD_RESPONSE.reason: "invalid answer",
}
# Details that only repeat the failure (or are a repr of its cause): not appended.
_PLAIN_DETAILS = frozenset({"connect timeout", "read timeout", "connection closed", ""})


def error_words(exc: BaseException) -> str:
    """What went wrong, in plain words (at most MAX_CHARS)."""
    return _words(exc, 0)[:MAX_CHARS]


def _words(exc: BaseException, depth: int) -> str:
    if isinstance(exc, errors.ProxyFailure):
        return _failure_words(exc, depth)
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return f"TLS: {tls_reason(exc.certificate_error)}"
    if isinstance(exc, aiohttp.ClientConnectorSSLError):
        return f"TLS: {tls_reason(exc.os_error)}"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return _words(exc.os_error, depth + 1)
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return TIMED_OUT_CONNECTING
    if isinstance(exc, aiohttp.ServerTimeoutError):
        return TIMED_OUT_READING
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return CLOSED_WITHOUT_ANSWER
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "answer body cut short"
    if isinstance(exc, aiohttp.ClientResponseError):
        return f"invalid answer: {exc.message}" if exc.message else "invalid answer"
    if isinstance(exc, ssl.SSLError):  # before OSError: it is one
        return f"TLS: {tls_reason(exc)}"
    if isinstance(exc, socket.gaierror):
        return NAME_NOT_RESOLVED
    if isinstance(exc, OSError) and exc.errno in _ERRNO:
        return _ERRNO[exc.errno]
    if isinstance(exc, ConnectionResetError):
        return CONNECTION_RESET
    if isinstance(exc, ConnectionRefusedError):
        return CONNECTION_REFUSED
    if isinstance(exc, TimeoutError):
        return str(exc) or "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror[0].lower() + exc.strerror[1:]
    text = str(exc)
    name = type(exc).__name__
    return f"{name}: {text}" if text else name


def cut_short(exc: errors.ProxyFailure, received: int, length: int | None) -> errors.ProxyFailure:
    """`exc`, raised while an answer's body was read, said as a body cut short after
    `received` of `length` bytes (the head was read: "without an answer" would be false)."""
    if exc.failure is not errors.UPSTREAM_DISCONNECTED:
        return exc
    of = f"{received} of {length} bytes" if length is not None else f"after {received} bytes"
    said = errors.UpstreamFailure(exc.failure, f"{BODY_CUT_SHORT} ({of})")
    said.__cause__ = exc.__cause__
    return said


def _failure_words(exc: errors.ProxyFailure, depth: int) -> str:
    failure = exc.failure
    cause = exc.__cause__
    if exc.detail.startswith(BODY_CUT_SHORT):  # cut_short(): the cause, if any, after it
        if cause is None or depth >= 4 or isinstance(cause, TimeoutError):
            return exc.detail
        return f"{exc.detail}: {_words(cause, depth + 1)}"
    if failure is errors.UPSTREAM_TLS:
        if isinstance(cause, BaseException):
            return f"TLS: {tls_reason(cause)}"
        detail = exc.detail.removeprefix("TLS handshake failed: ").removeprefix("TLS failed: ")
        return f"TLS: {detail}" if detail else "TLS: handshake failed"
    if cause is not None and depth < 4 and not isinstance(cause, TimeoutError):
        # A connect timeout is raised from asyncio's TimeoutError: the failure says more.
        return _words(cause, depth + 1)
    words = _FAILURE.get(failure.reason) or failure.message or failure.reason
    detail = exc.detail
    if detail in _PLAIN_DETAILS or "Error(" in detail:
        return words
    return f"{words}: {detail}"
