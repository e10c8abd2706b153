"""A listener that cannot bind, in words: which one (`listen` or `admin.listen`), the
address, where that address came from (the file's line, the flag, the variable, or the
default) and a hint for the usual causes."""

from __future__ import annotations

import errno
import logging
import os
import socket
from collections.abc import Sequence

from yaml.nodes import MappingNode, Node

from corsproxy.config import ConfigError, Override, read_config_text
from corsproxy.config.schema import Listen
from corsproxy.config.source import compose_document
from corsproxy.http.startup import ListenFailed
from corsproxy.ops.logs import say

# With --workers the supervisor says where the addresses came from (a worker gets them
# pinned in CORSPROXY_LISTEN and CORSPROXY_ADMIN_LISTEN, which would be no answer).
SOURCE_ENV = {
    "listen": "CORSPROXY_WORKER_LISTEN_SOURCE",
    "admin.listen": "CORSPROXY_WORKER_ADMIN_LISTEN_SOURCE",
}


def _child(node: Node | None, name: str) -> Node | None:
    if not isinstance(node, MappingNode):
        return None
    return next((value for key, value in node.value if key.value == name), None)


def listen_source(
    key: str, config_path: str | None, document: str | None, overrides: Sequence[Override]
) -> str:
    """Where `key` ("listen" or "admin.listen") was set: FILE:LINE, the flag or variable
    that set it, or "the default"."""
    try:
        text = document
        if text is None and config_path is not None:
            text = read_config_text(config_path)
        root: Node | None = compose_document(text, config_path or "command line", overrides)
    except (ConfigError, OSError):
        return "unknown"
    node = root
    for name in key.split("."):
        node = _child(node, name)
    if node is None:
        return "the default"
    mark = node.start_mark
    if mark.line < 0:  # an override: its mark names the flag or variable
        return str(mark.name)
    return f"{config_path}:{mark.line + 1}"


def hint(error: OSError, port: int) -> str:
    if isinstance(error, socket.gaierror):
        return "write an IP address, or a name this host resolves"
    if error.errno == errno.EADDRINUSE:
        return f"another process listens there (`ss -ltnp 'sport = :{port}'`)"
    if error.errno == errno.EACCES and 0 < port < 1024:
        return (
            "ports below 1024 need a privilege: use a port of 1024 or more, or grant "
            "CAP_NET_BIND_SERVICE (`--cap-add NET_BIND_SERVICE` in Docker, "
            "`AmbientCapabilities=CAP_NET_BIND_SERVICE` in systemd)"
        )
    if error.errno == errno.EADDRNOTAVAIL:
        return "this host has no such address (0.0.0.0 listens on all of them)"
    return ""


def own_port(failed: ListenFailed, listen: Listen | None) -> str:
    """admin.listen refused as in use on the port `listen` has just bound (`localhost:P`
    and `127.0.0.1:P` pass the load's check, which compares addresses, not names)."""
    if (
        failed.key == "admin.listen"
        and listen is not None
        and listen.port == failed.address.port
        and failed.error.errno == errno.EADDRINUSE
    ):
        return (
            f"the same port as listen ({listen}), which corsproxy itself holds; "
            "give admin.listen a port of its own"
        )
    return ""


def report(failed: ListenFailed, source: str, listen: Listen | None = None) -> None:
    """One line (one JSON object in JSON mode) saying why the listener did not bind;
    `listen`: the address the proxy's own listener holds."""
    error = failed.error
    if isinstance(error, socket.gaierror):  # its errno is the resolver's (-2), not errno's
        reason = "the host name does not resolve" + (
            f" ({error.strerror})" if error.strerror else ""
        )
    else:
        reason = os.strerror(error.errno).lower() if error.errno else str(error)
    advice = own_port(failed, listen) or hint(error, failed.address.port)
    text = (
        f"corsproxy: cannot listen: {failed.key} {failed.address} (set by {source}): {reason}"
        + (f"; {advice}" if advice else "")
    )
    say(
        text,
        logging.ERROR,
        listener=failed.key,
        address=str(failed.address),
        source=source,
        error=reason,
        hint=advice,
    )


def refuse_held_listeners(listen: Listen, admin: Listen | None) -> None:
    """Before `--workers` spawns: a listener whose address another process holds is refused
    as a single process's bind is (the words above, exit status 1), though SO_REUSEPORT
    would let the workers bind beside another instance's and split its traffic. Checked
    once, at start: a respawn binds beside its own siblings."""
    from corsproxy.http.shared_port import held_elsewhere

    for key, address in (("listen", listen), ("admin.listen", admin)):
        if address is None:
            continue
        error = held_elsewhere(address)
        if error is not None:
            source = os.environ.get(SOURCE_ENV[key]) or "unknown"
            report(ListenFailed(key, address, error), source, listen)
            raise SystemExit(1)
