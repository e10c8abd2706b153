"""The listeners' TLS: one context per listener for its whole life, whose SNI callback hands
every new handshake the context of the configuration in force, so a reload (SIGHUP or a
watched change) serves a new certificate without closing anything.

OpenSSL calls the server-name callback for every ClientHello (with `None` when the client
sent no SNI), before the certificate is chosen; assigning `SSLObject.context` there is the
documented way to switch certificates (Python's `SSLContext.sni_callback`). Connections
already open keep the session they negotiated.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable

from corsproxy.config.tls import ListenerTls


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
    return listener
