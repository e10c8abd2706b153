"""What is loaded, in one line: the summary `serve` logs at start (pure).

The default policy appears as the route with `path_prefix` "/" (the catch-all, which
forwards to the top-level `upstream`); with no top-level upstream there is no catch-all
(other paths answer 404) and no "/" entry. A route with `cors: false` shows `mode` "off"
and no origins.
"""

from __future__ import annotations

from typing import Any

from corsproxy.config.schema import Config
from corsproxy.policy.routes import Route

TEXT_ORIGINS = 5  # origins named per route in the text line; the rest are counted
# Origins listed per route in the JSON line, the last item then "... and N more": one line
# must stay within what log shippers take (Docker splits lines at 16 KiB), and `corsproxy
# check` or the file has the whole list.
JSON_ORIGINS = 100


def all_routes(config: Config) -> list[Route]:
    """The catch-all (when there is one) first, then the routes as written."""
    default = config.routes.default
    return ([default] if default is not None else []) + list(config.routes.routes)


def route_summary(route: Route) -> dict[str, Any]:
    cors = route.cors
    return {
        "path_prefix": route.path_prefix,
        "upstream": str(route.upstream) if route.upstream is not None else None,
        "origins": _listed([entry.text for entry in cors.origins.entries] if cors.enabled else []),
        "credentials": cors.enabled and cors.allow_credentials,
        "mode": str(cors.mode) if cors.enabled else "off",
    }


def _listed(origins: list[str]) -> list[str]:
    if len(origins) <= JSON_ORIGINS:
        return origins
    return [*origins[: JSON_ORIGINS - 1], f"... and {len(origins) - JSON_ORIGINS + 1} more"]


def summary(config: Config) -> dict[str, Any]:
    """The fields of the start line: `config`, `listen`, `admin`, `routes`."""
    return {
        "config": config.source,
        "listen": str(config.listen),
        "admin": str(config.admin.listen) if config.admin is not None else None,
        "routes": [route_summary(route) for route in all_routes(config)],
    }


def summary_text(fields: dict[str, Any]) -> str:
    """The same, as one readable line."""
    routes = []
    for route in fields["routes"]:
        origins = route["origins"]
        if route["mode"] == "off":
            policy = "cors off"
        else:
            named = "origins " + ", ".join(origins[:TEXT_ORIGINS]) if origins else "no origins"
            more = len(origins) - TEXT_ORIGINS
            if more > 0 and origins[-1].startswith("... and "):  # JSON_ORIGINS already cut
                more += int(origins[-1].split()[2]) - 1
            if more > 0:
                named += f" and {more} more"
            policy = f"{named}; credentials {'on' if route['credentials'] else 'off'}"
            policy += f"; {route['mode']}"
        routes.append(f"{route['path_prefix']} -> {route['upstream'] or 'none'} ({policy})")
    admin = fields["admin"] or "none"
    return f"loaded {fields['config']}: listen {fields['listen']}, admin {admin}; " + (
        f"routes: {', '.join(routes)}" if routes else "no routes"
    )


def _source(config: str) -> str:
    return "from flags and variables" if config == "command line" else config
