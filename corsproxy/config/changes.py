"""What a reload changed: the difference between two compiled configurations (pure).

Routes are matched by `path_prefix` (the catch-all, the default policy with the top-level
upstream, is the route "/"): added, removed, or changed, with the origins added and removed
and the other keys that differ, as dotted names (`cors.allow_methods`, `timeouts.read`).
The other top-level keys are compared by their dotted names too (`limits.max_body_size`,
`admin.listen`). Values are compared as compiled: a key rewritten with the same meaning
(`30s` for `30`) is no change; a certificate file's new contents under the same name is
(`upstream_tls.files`).
"""

from __future__ import annotations

import dataclasses
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

from corsproxy.config.schema import Config, Listen
from corsproxy.config.summary import all_routes
from corsproxy.policy.origins import OriginMatcher
from corsproxy.policy.routes import Route, Upstream

MAX_NAMED = 20  # origins named per line; the rest are counted

# Compiled field names that differ from the config key they come from.
_KEY_NAMES = {
    "origins": "allow_origins",
    "any_method": "allow_methods",
    "any_header": "allow_headers",
    "expose_any": "expose_headers",
    "digest": "files",
}
# Not configuration: where things were written, derived lookups, the top-level keys that
# the catch-all route "/" already shows (its upstream and policy), and each route's own.
_SKIP_ROUTE = {"line", "cors_sources", "path_prefix"}
_SKIP_CONFIG = {"source", "warnings", "routes", "cors", "upstream"}


@dataclass(frozen=True)
class RouteChange:
    path_prefix: str
    origins_added: tuple[str, ...] = ()
    origins_removed: tuple[str, ...] = ()
    keys: tuple[str, ...] = ()  # other dotted keys that changed
    cors_turned: str = ""  # "off" (the route now says cors: false) or "on", else ""


@dataclass(frozen=True)
class Changes:
    routes_added: tuple[str, ...] = ()
    routes_removed: tuple[str, ...] = ()
    routes_changed: tuple[RouteChange, ...] = ()
    keys: tuple[str, ...] = ()  # top-level dotted keys that changed

    def __bool__(self) -> bool:
        return bool(self.routes_added or self.routes_removed or self.routes_changed or self.keys)

    def lines(self) -> list[str]:
        """One line per change, or "no changes"."""
        if not self:
            return ["no changes"]
        lines = [f"route {prefix} added" for prefix in self.routes_added]
        lines += [f"route {prefix} removed" for prefix in self.routes_removed]
        for change in self.routes_changed:
            if change.cors_turned == "off":
                lines.append(f"route {change.path_prefix}: cors turned off (cors: false)")
            elif change.cors_turned == "on":
                lines.append(f"route {change.path_prefix}: cors turned on (was cors: false)")
            if change.origins_added:
                lines.append(
                    f"route {change.path_prefix}: origins added: {_named(change.origins_added)}"
                )
            if change.origins_removed:
                lines.append(
                    f"route {change.path_prefix}: origins removed: {_named(change.origins_removed)}"
                )
            if change.keys:
                lines.append(f"route {change.path_prefix}: changed {', '.join(change.keys)}")
        if self.keys:
            lines.append(f"changed {', '.join(self.keys)}")
        return lines


def _named(items: tuple[str, ...]) -> str:
    named = ", ".join(items[:MAX_NAMED])
    return named + (f" and {len(items) - MAX_NAMED} more" if len(items) > MAX_NAMED else "")


def flatten(
    value: Any, prefix: str = "", skip: frozenset[str] | set[str] = frozenset()
) -> dict[str, Any]:
    """A compiled value as {dotted key: comparable leaf}."""
    if isinstance(value, OriginMatcher):
        return {prefix: tuple(entry.text for entry in value.entries)}
    if isinstance(value, Listen):
        return {prefix: str(value)}
    if isinstance(value, Upstream):
        out: dict[str, Any] = {prefix: str(value)}
        if value.tls is not None:
            tls_key = f"{prefix}_tls" if prefix else "upstream_tls"
            out.update(flatten(value.tls, tls_key))
        return out
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out = {}
        for field in dataclasses.fields(value):
            if not field.init or not field.compare or field.name in skip:
                continue
            name = _KEY_NAMES.get(field.name, field.name)
            for key, leaf in flatten(
                getattr(value, field.name), f"{prefix}.{name}" if prefix else name
            ).items():
                # Two compiled fields of one key (`allow_methods` and its `*`): both count.
                out[key] = (out[key], leaf) if key in out else leaf
        return out
    if isinstance(value, ssl.SSLContext):
        return {}
    if isinstance(value, Enum):
        return {prefix: value.value}
    if isinstance(value, Mapping):
        return {prefix: tuple(sorted((str(k), str(v)) for k, v in value.items()))}
    if isinstance(value, (tuple, list, frozenset, set)):
        items = [str(item) for item in value]
        return {prefix: tuple(sorted(items) if isinstance(value, (frozenset, set)) else items)}
    return {prefix: value}


def _differing(old: dict[str, Any], new: dict[str, Any]) -> tuple[str, ...]:
    """The keys whose values differ (present on one side only included), sorted."""
    return tuple(
        sorted(k for k in old.keys() | new.keys() if old.get(k, _MISSING) != new.get(k, _MISSING))
    )


_MISSING = object()


def _route_change(old: Route, new: Route) -> RouteChange | None:
    old_origins = _origins(old)
    new_origins = _origins(new)
    old_set, new_set = set(old_origins), set(new_origins)
    added = tuple(o for o in new_origins if o not in old_set)
    removed = tuple(o for o in old_origins if o not in new_set)
    old_keys = flatten(old, skip=_SKIP_ROUTE)
    new_keys = flatten(new, skip=_SKIP_ROUTE)
    # Origins are said as added and removed (their order decides nothing); `cors.enabled`
    # is no key: `cors: false` turns the policy off (its origins go with it) or back on.
    keys = tuple(
        k for k in _differing(old_keys, new_keys) if k not in ("cors.allow_origins", "cors.enabled")
    )
    turned = ""
    if old.cors.enabled != new.cors.enabled:
        turned = "on" if new.cors.enabled else "off"
        removed = ()  # with the policy, and its other cors keys: not changed one by one
        keys = tuple(k for k in keys if not k.startswith("cors."))
    elif not new.cors.enabled:
        # Off before and after: the inherited policy it ignores may change, the route does not.
        keys = tuple(k for k in keys if not k.startswith("cors."))
    if not (added or removed or keys or turned):
        return None
    return RouteChange(new.path_prefix, added, removed, keys, turned)


def _origins(route: Route) -> tuple[str, ...]:
    return tuple(entry.text for entry in route.cors.origins.entries) if route.cors.enabled else ()


def changes(old: Config, new: Config) -> Changes:
    """What differs from `old` to `new`."""
    old_routes = {route.path_prefix: route for route in all_routes(old)}
    new_routes = {route.path_prefix: route for route in all_routes(new)}
    changed = []
    for prefix, route in new_routes.items():
        if prefix in old_routes:
            change = _route_change(old_routes[prefix], route)
            if change is not None:
                changed.append(change)
    return Changes(
        routes_added=tuple(p for p in new_routes if p not in old_routes),
        routes_removed=tuple(p for p in old_routes if p not in new_routes),
        routes_changed=tuple(changed),
        keys=_differing(flatten(old, skip=_SKIP_CONFIG), flatten(new, skip=_SKIP_CONFIG)),
    )
