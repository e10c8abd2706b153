"""The listener's own address, for the origin of a request whose `Host` gives none.

The origin the client used is `policy/forwarded.py`'s (`resolve`, once per request, kept in
the exchange's `ClientView`): the forwarding headers of a trusted peer, else the connection's
scheme and the `Host`. Only when there is no `Host` (HTTP/1.0), or one that makes no clean
origin, is the listener's own `host:port` used: that needs the transport, so it is here.
"""

from __future__ import annotations

from aiohttp import web


def local_authority(request: web.BaseRequest) -> str | None:
    """The listener's own `host:port` (an IPv6 address bracketed, without a zone), or None
    for a Unix socket or a closed transport."""
    transport = request.transport
    sockname = transport.get_extra_info("sockname") if transport is not None else None
    if not isinstance(sockname, tuple) or len(sockname) < 2:
        return None
    host = str(sockname[0])
    if ":" in host:
        return f"[{host.partition('%')[0]}]:{sockname[1]}"
    return f"{host}:{sockname[1]}"
