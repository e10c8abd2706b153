"""The two listeners against each other: `admin.listen` on the address of `listen` (or one
a wildcard of the other covers, `0.0.0.0:P` and `127.0.0.1:P`) is refused at load, not left
to fail at bind as "another process listens there" (pure)."""

from __future__ import annotations

import ipaddress

from corsproxy.config.schema import Listen
from corsproxy.config.spec import Context, Section


def _family(host: str) -> int | None:
    """4 or 6 for an address, None for a host name."""
    try:
        return ipaddress.ip_address(host).version
    except ValueError:
        return None


def overlap(a: Listen, b: Listen) -> bool:
    """Whether binding both would conflict (a port of 0 is the kernel's pick: never)."""
    if a.port != b.port or a.port == 0:
        return False
    if a.host == b.host:
        return True
    for one, other in ((a.host, b.host), (b.host, a.host)):
        if one == "::":  # every address, IPv4 too on a dual-stack socket
            return True
        if one == "0.0.0.0" and _family(other) != 6:  # noqa: S104 - comparing, not binding
            return True
    return False


def check_listeners(top: Section, admin: Section | None, ctx: Context) -> None:
    if admin is None:
        return
    listen: Listen | None = top.value("listen")
    admin_listen: Listen | None = admin.value("listen")
    if listen is None or admin_listen is None or not overlap(listen, admin_listen):
        return
    if listen == admin_listen:
        problem = f"{admin_listen} is the same address as listen"
    else:
        problem = f"{admin_listen} overlaps listen ({listen}): a wildcard covers the other"
    ctx.error(
        admin.lines.get("listen", admin.line),
        "admin.listen",
        f"{problem}; the two listeners cannot share a port",
        "give admin.listen a port of its own",
        admin.files.get("listen"),
    )
