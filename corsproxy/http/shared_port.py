"""admin.listen on the port `listen` has bound, by another name (`localhost:P` and
`127.0.0.1:P`): the load's check compares addresses, not names. Without SO_REUSEPORT the
bind fails on its own; with it (`--workers`) both would bind and the kernel would share
connections between the proxy and the admin listener. Refused as the bind error it is."""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import os
import socket
from collections.abc import Iterable
from typing import Any

from corsproxy.config.schema import Listen


def _unspecified(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False


async def refuse_shared_port(bound: Iterable[Any], admin: Listen) -> None:
    """Raise EADDRINUSE when `admin` resolves to an address among `bound` (the proxy's
    sockets' names) on the same port; a name that does not resolve is left to the bind."""
    taken = {str(name[0]) for name in bound if isinstance(name, tuple) and name[1] == admin.port}
    if not taken or admin.port == 0:
        return
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(
            admin.host, admin.port, type=socket.SOCK_STREAM
        )
    except OSError:
        return
    wanted = {str(info[4][0]) for info in infos}
    if wanted & taken or any(_unspecified(h) for h in wanted | taken):
        raise OSError(errno.EADDRINUSE, os.strerror(errno.EADDRINUSE))


def held_elsewhere(address: Listen) -> OSError | None:
    """EADDRINUSE when another socket holds `address`, SO_REUSEPORT or not: a throwaway
    socket binds it with SO_REUSEADDR only (as a single process binds), then closes. The
    supervisor asks before its workers (SO_REUSEPORT) bind, or they would share the port
    with another instance's workers. None when it binds, on port 0, and for any other
    error (a name that does not resolve, a privilege): the workers' own bind reports those."""
    if address.port == 0:
        return None
    try:
        infos = socket.getaddrinfo(
            address.host or None, address.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except OSError:
        return None
    for family, kind, proto, _, where in infos:
        try:
            with socket.socket(family, kind, proto) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:  # as asyncio's create_server binds
                    probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                probe.bind(where)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return exc
    return None
