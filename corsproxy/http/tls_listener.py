"""The listeners' TLS: one context per listener for its whole life, whose SNI callback hands
every new handshake the context of the configuration in force, so a reload (SIGHUP or a
watched change) serves a new certificate without closing anything.

OpenSSL calls the server-name callback for every ClientHello (with `None` when the client
sent no SNI), before the certificate is chosen; assigning `SSLObject.context` there is the
documented way to switch certificates (Python's `SSLContext.sni_callback`). Connections
already open keep the session they negotiated.

A handshake is bounded by `limits.idle_timeout` (at most asyncio's 60 s default): a client
that connects and sends nothing, or half a ClientHello, is closed then. A server name that is
not ASCII makes Python's ssl module fail to decode it before our callback runs; it reports
that as an "unraisable" exception (a traceback on stderr per handshake, which anyone could
use to flood the log). `quiet_bad_server_names()` turns those into one log line a minute at
most; the handshake is refused either way.
"""

from __future__ import annotations

import logging
import ssl
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from corsproxy.config import Config
from corsproxy.config.tls import ListenerTls

log = logging.getLogger("corsproxy")
MAX_HANDSHAKE_TIMEOUT = 60.0  # asyncio's default
BAD_NAME_LOG_INTERVAL = 60.0


def handshake_timeout(config: Config) -> float:
    return min(config.limits.idle_timeout, MAX_HANDSHAKE_TIMEOUT)


class _BadServerNames:
    """An unraisable hook: Python's ssl module failing to decode a client's server name is
    counted and logged once per interval; anything else goes to the previous hook."""

    def __init__(self, previous: Callable[[Any], object]) -> None:
        self.previous = previous
        self.lock = threading.Lock()
        self.count = 0
        self.logged = -BAD_NAME_LOG_INTERVAL

    def __call__(self, unraisable: Any) -> None:
        if not (
            isinstance(unraisable.exc_value, UnicodeError) and isinstance(unraisable.object, bytes)
        ):
            self.previous(unraisable)
            return
        with self.lock:
            self.count += 1
            now = time.monotonic()
            if now - self.logged < BAD_NAME_LOG_INTERVAL:
                return
            count, self.count, self.logged = self.count, 0, now
        log.warning(
            "TLS: refused %d handshake%s with a server name (SNI) that is not ASCII "
            "(logged at most once a minute)",
            count,
            "" if count == 1 else "s",
        )


def quiet_bad_server_names() -> None:
    """Install the hook above (once per process)."""
    if not isinstance(sys.unraisablehook, _BadServerNames):
        sys.unraisablehook = _BadServerNames(sys.unraisablehook)


def rotating_context(
    first: ListenerTls, current: Callable[[], ListenerTls | None]
) -> ssl.SSLContext:
    """The context to listen with: `first`'s, switching each handshake to `current()`'s.

    `current()` returning None (TLS removed by a reload: that needs a restart) keeps the
    certificate the listener has."""
    listener = first.context
    assert listener is not None

    def switch(connection: ssl.SSLObject, server_name: str | None, _: ssl.SSLContext) -> None:
        tls = current()
        if tls is not None and tls.context is not None and tls.context is not connection.context:
            connection.context = tls.context

    listener.sni_callback = switch
    quiet_bad_server_names()
    return listener
