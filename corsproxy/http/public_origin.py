"""The origin the client used to reach the proxy: what rewritten URLs are put on.

One function, called once per request by the server: the scheme from whether the listener
speaks TLS, the host and port from the client's `Host`, or the listener's own address when
there is no usable `Host` (HTTP/1.0). Never a forwarding header: those are only believed
from trusted peers, which is not this function's knowledge.
"""

from __future__ import annotations

import re

from aiohttp import web

# A Host this module writes into URLs: a bracketed IP literal or a plain name, then a port.
# (Host values with other sub-delims pass the request checks, but make no clean origin.)
_HOST = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~%]+)(?::[0-9]{1,5})?\Z")


def public_origin(request: web.BaseRequest) -> str:
    """`scheme://host[:port]` as the client addressed the proxy, or "" when neither the
    Host nor the listener's address gives one (then nothing is rewritten to it)."""
    scheme = "https" if request.secure else "http"
    host = request.headers.get("Host", "")
    if host and _HOST.match(host):
        return f"{scheme}://{host}"
    sockname = request.transport.get_extra_info("sockname") if request.transport else None
    if not isinstance(sockname, tuple) or len(sockname) < 2:
        return ""  # a Unix socket, or a closed transport
    address, port = str(sockname[0]), int(sockname[1])
    if ":" in address:
        address = f"[{address.partition('%')[0]}]"
    default = 443 if scheme == "https" else 80
    return f"{scheme}://{address}" if port == default else f"{scheme}://{address}:{port}"
