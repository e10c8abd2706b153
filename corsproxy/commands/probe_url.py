"""`healthcheck --url`: a URL that cannot be probed is a usage error (exit 2), not
"unhealthy" (exit 1), so a typo in a HEALTHCHECK line is not mistaken for a sick proxy."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import click

HINT = "write http://HOST:PORT/healthz or https://HOST:PORT/healthz"


def check_probe_url(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """A click callback: the URL unchanged, or click.BadParameter naming what is wrong."""
    if value is None:
        return None
    if re.match(r"[^:/?#]*://[^/?#]*@", value):  # never echo it: a password may follow
        raise click.BadParameter(
            f"the URL holds a user name or password (USER:PASSWORD@): /healthz needs none ({HINT})"
        )
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise click.BadParameter(f"'{value}' holds a space or a control character ({HINT})")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a port out of range or not a number
    except ValueError as exc:
        raise click.BadParameter(f"'{value}' is not a URL: {exc} ({HINT})") from None
    if not parts.scheme or "://" not in value:
        raise click.BadParameter(f"'{value}' has no scheme ({HINT})")
    if parts.scheme.lower() not in ("http", "https"):
        raise click.BadParameter(f"'{value}': the scheme must be http or https ({HINT})")
    if not parts.hostname:
        raise click.BadParameter(f"'{value}' has no host ({HINT})")
    if parts.path in ("", "/"):  # `/` on the admin listener is the console: always 200
        raise click.BadParameter(
            f"'{value}' has no path: it would probe / (the console), not the health check "
            f"(add /healthz: {parts.scheme}://{parts.netloc}/healthz)"
        )
    return value
