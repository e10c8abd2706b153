"""Opening an upstream connection: DNS answers cached briefly, Happy Eyeballs, then TLS.

- Names are resolved off the loop (`loop.getaddrinfo`, the default executor) and the answer
  is cached for `DNS_TTL` seconds per (host, port, family), as aiohttp's connector did
  (`ttl_dns_cache=10`); the cache is bounded (least recently used entries go first) and a
  failed lookup is not cached. Concurrent lookups of one name share one query.
- The addresses are tried as RFC 8305 says (`aiohappyeyeballs.start_connection`): families
  interleaved, the next attempt started after `HAPPY_EYEBALLS_DELAY` while the previous one
  is still pending, so an address that blackholes or refuses costs at most that delay.
- TLS runs over the connected socket with the route's context and server name; a handshake
  failure (unknown CA, name mismatch, client certificate refused) is its own failure
  (`errors.UPSTREAM_TLS`) and one log line naming the upstream and OpenSSL's reason.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import aiohappyeyeballs

from corsproxy.http import errors
from corsproxy.http.errors import UpstreamFailure

log = logging.getLogger("corsproxy")

DNS_TTL = 10.0
DNS_CACHE_SIZE = 1024
HAPPY_EYEBALLS_DELAY = 0.25  # RFC 8305's recommended Connection Attempt Delay

AddrInfo = tuple[int, int, int, str, tuple[Any, ...]]


class Resolver:
    """getaddrinfo answers, cached for `ttl` seconds, at most `size` names."""

    def __init__(self, ttl: float = DNS_TTL, size: int = DNS_CACHE_SIZE) -> None:
        self.ttl = ttl
        self.size = size
        self._cache: OrderedDict[tuple[str, int, int], tuple[float, list[AddrInfo]]] = OrderedDict()
        self._pending: dict[tuple[str, int, int], asyncio.Task[list[AddrInfo]]] = {}

    async def resolve(self, host: str, port: int, family: int = socket.AF_UNSPEC) -> list[AddrInfo]:
        key = (host, port, family)
        hit = self._cache.get(key)
        if hit is not None:
            if hit[0] > time.monotonic():
                self._cache.move_to_end(key)
                return hit[1]
            del self._cache[key]
        task = self._pending.get(key)
        if task is None:
            task = asyncio.ensure_future(self._lookup(key))
            self._pending[key] = task
            task.add_done_callback(lambda t: self._done(key, t))
        # Shielded: one caller's timeout or cancellation does not fail the others' lookup.
        return await asyncio.shield(task)

    async def _lookup(self, key: tuple[str, int, int]) -> list[AddrInfo]:
        host, port, family = key
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(host, port, family=family, type=socket.SOCK_STREAM)
        if not infos:
            raise socket.gaierror(socket.EAI_NONAME, "no address")
        return [(f, t, p, c, tuple(a)) for f, t, p, c, a in infos]

    def _done(self, key: tuple[str, int, int], task: asyncio.Task[list[AddrInfo]]) -> None:
        self._pending.pop(key, None)
        if task.cancelled() or task.exception() is not None:
            return  # failures are not cached (and the exception counts as retrieved)
        self._cache[key] = (time.monotonic() + self.ttl, task.result())
        self._cache.move_to_end(key)
        while len(self._cache) > self.size:
            self._cache.popitem(last=False)

    def clear(self) -> None:
        self._cache.clear()


RESET_DURING_HANDSHAKE = (
    "connection reset during the TLS handshake (the upstream may have refused the client "
    "certificate, or speaks no TLS)"
)


def tls_reason(exc: BaseException) -> str:
    """OpenSSL's reason for a failed handshake, in words."""
    if isinstance(exc, (ConnectionResetError, ConnectionAbortedError, BrokenPipeError)):
        return RESET_DURING_HANDSHAKE
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate verify failed: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        reason = exc.reason or exc.strerror or str(exc)
        return str(reason).replace("_", " ").lower()
    return repr(exc)


async def open_connection(
    protocol: Callable[[], asyncio.BaseProtocol],
    resolver: Resolver,
    host: str,
    port: int,
    *,
    context: ssl.SSLContext | None,
    server_name: str | None,
    label: str,
    connect_timeout: float,
) -> None:
    """Connect `protocol` to host:port (TLS when `context` is given) within `connect_timeout`.

    Raises UpstreamFailure: connect timeout (504), unreachable (502) or TLS failed (502)."""
    loop = asyncio.get_running_loop()
    sock: socket.socket | None = None
    try:
        async with asyncio.timeout(connect_timeout):
            infos = await resolver.resolve(host, port)
            sock = await aiohappyeyeballs.start_connection(
                infos, happy_eyeballs_delay=HAPPY_EYEBALLS_DELAY, interleave=1, loop=loop
            )
            await loop.create_connection(
                protocol,
                sock=sock,
                ssl=context,
                server_hostname=server_name if context is not None else None,
            )
    except TimeoutError as exc:
        if sock is not None:
            sock.close()
        raise UpstreamFailure(errors.UPSTREAM_CONNECT_TIMEOUT, "connect timeout") from exc
    except ssl.SSLError as exc:  # before OSError: it is one
        if sock is not None:
            sock.close()
        reason = tls_reason(exc)
        log.warning("upstream %s: TLS handshake failed: %s", label, reason)
        raise UpstreamFailure(errors.UPSTREAM_TLS, f"TLS handshake failed: {reason}") from exc
    except (OSError, RuntimeError, ValueError) as exc:  # uvloop may raise RuntimeError
        if sock is not None:
            sock.close()
        if context is not None and sock is not None and isinstance(exc, ConnectionError):
            # Connected, then reset during the handshake: a TLS refusal more often than not.
            reason = tls_reason(exc)
            log.warning("upstream %s: TLS handshake failed: %s", label, reason)
            raise UpstreamFailure(errors.UPSTREAM_TLS, f"TLS handshake failed: {reason}") from exc
        raise UpstreamFailure(errors.UPSTREAM_UNREACHABLE, repr(exc)) from exc
