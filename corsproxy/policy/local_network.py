"""Chromium's Local Network Access block, for `explain --private-network --browser chromium`.

Chromium 142 and later (recorded with Chromium 156: tests/test_browser_local_network.py)
send nothing to a local or loopback address from a public page unless the user granted the
permission: the fetch fails before any byte reaches the proxy, DevTools names it
`LocalNetworkAccessPermissionDenied`, and the console names the address space of the target.
No response header changes that (Access-Control-Allow-Private-Network included), and once
the permission is granted no Private Network Access preflight is sent either. Pure.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

from corsproxy.policy.browser import Block

CODE = "local_network_access_denied"
CHROME = "LocalNetworkAccessPermissionDenied"
UNKNOWN_SPACE = "<local or loopback>"
_LOOPBACK_NAME = re.compile(r"(localhost|.+\.localhost)\.?\Z", re.IGNORECASE)


def address_space(proxy_origin: str) -> str | None:
    """The IP address space Chromium gives the API at `proxy_origin`: `loopback`
    (localhost, 127.0.0.0/8, ::1), `local` (private, link-local and unique-local addresses,
    .local names), `public` (any other IP literal), or None (a name: it depends on what it
    resolves to; or no --proxy-origin)."""
    try:
        host = urlsplit(proxy_origin.strip()).hostname or ""
    except ValueError:
        return None
    if not host:
        return None
    if _LOOPBACK_NAME.match(host):
        return "loopback"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return "local" if host.lower().rstrip(".").endswith(".local") else None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_loopback:
        return "loopback"
    if address.is_private or address.is_link_local:
        return "local"
    return "public"


def not_checked(page_space: str | None, target_space: str | None) -> bool:
    """True when a page in `page_space` (from its origin, as `address_space` reads it)
    requests the `target_space` without any Local Network Access check. Chromium 156
    (checked: tests/test_browser_local_network.py) checks only a public page's requests: a
    page on loopback or in `local` reaches `local` and `loopback` without a prompt (the
    specification also gates a `local` page's requests to `loopback`; Chromium 156 does
    not). A page of unknown space (a host name) counts as public."""
    return page_space in ("local", "loopback")


def denied(space: str | None) -> Block:
    """The block Chromium reports (its console text, DevTools name)."""
    return Block(
        "(none: Chromium's Local Network Access block; see --browser firefox)",
        CHROME,
        f"Permission was denied for this request to access the `{space or UNKNOWN_SPACE}` "
        "address space.",
        None,
        False,
    )


def step_lines(space: str | None, proxy_origin: str) -> list[str]:
    """What Chromium 156 does with the request, for explain's Local Network Access step."""
    if space is None:
        where = (
            f"the address space of {proxy_origin} depends on what its name resolves to: "
            "`loopback` (127.0.0.0/8, ::1) or `local` (private addresses)"
            if proxy_origin
            else "no --proxy-origin: the address space (`loopback` or `local`) is unknown"
        )
    else:
        where = f"{proxy_origin} is in the `{space}` address space"
    return [
        f"Chromium 156 (checked): {where}; without the user's permission it sends nothing, "
        f"not even a preflight: fetch() fails with {CHROME} before any byte reaches "
        "corsproxy, whatever corsproxy would answer (allow_private_network included)",
        "only a secure context can get the permission (an https page, or one on localhost): "
        "an http page elsewhere never can; a headless or automated Chromium denies the prompt",
        "the steps below show what happens once the permission is granted: a plain CORS "
        "request, with no Private Network Access preflight",
    ]


def fix_text(space: str | None) -> str:
    """What works instead (no config edit can)."""
    target = space if space in ("local", "loopback") else "local' or 'loopback"
    permission = {"local": "'local-network'", "loopback": "'loopback-network'"}.get(
        space or "", "'local-network' or 'loopback-network'"
    )
    return (
        "no corsproxy setting can: Chromium decides before sending anything. Serve the page "
        "from the same address space as the API (both on this machine or both on the private "
        "network), or serve the page over https so that "
        f"Chromium can ask the user for the {permission} permission (Chromium 145+; "
        "'local-network-access' before) and call fetch(url, {targetAddressSpace: "
        f"'{target}'}}); a cross-origin iframe also needs allow=\"local-network\" or "
        'allow="loopback-network" from its embedder'
    )
