"""`explain`'s fixes: the key to edit, as a dotted key with FILE:LINE, and the edit itself.

Each fix names where the value comes from: the route's own `cors:` block, or the top-level
one it inherits (with a warning that a route-level list replaces the inherited one, it is
not merged), or the block to add a key under when the key is not written (a default). A fix
is also given as edits (`Edit`, in `explain --format json`), and only when `check` accepts the
result: a fix that would trade one refusal for a config error is never suggested.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from corsproxy.config.spec import Diagnostic
from corsproxy.policy.config_places import Place, PolicyPlaces
from corsproxy.policy.cors import CorsPolicy, Reason, ReasonCode
from corsproxy.policy.origins import parse_origin
from corsproxy.policy.routes import Route

# Browsers treat these as secure: check allows them with credentials over plain http.
_LOOPBACK = re.compile(r"(localhost|[^/]*\.localhost|127(\.\d{1,3}){3}|\[::1\])\Z")


@dataclass(frozen=True, slots=True)
class Edit:
    """One change to the config: `add` appends `value` to the list at `key` (making the
    list when the key is not written), `set` writes `value` at `key`. `file` and `line` say
    where the key is written, or the block it goes under (line 0: a flag or variable, or
    not in the file)."""

    op: str  # "add" | "set"
    key: str
    value: Any
    file: str
    line: int

    def to_json(self) -> dict[str, Any]:
        return {"op": self.op, "key": self.key, "value": self.value, "file": self.file,
                "line": self.line}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Fix:
    text: str = ""
    edits: tuple[Edit, ...] = ()
    # When the edits cannot be run through check (no document at hand) and a guess says
    # check may refuse them: the words to give instead, with no edits.
    withheld: str = ""


NO_FIX = Fix()


# The start of the warning a source gives when a flag or variable turns a file's `false` on.
TURNED_ON = "the file's `false` is overridden by"


def places_of(route: Route, source: str, warnings: Sequence[Diagnostic] = ()) -> PolicyPlaces:
    """Where the route's policy is written; `warnings`: the loaded config's, which say which
    `cors: false` blocks flags or variables turned on."""
    places = route.cors_places or PolicyPlaces(file=source)
    turned_on = frozenset(f"{w.file}:{w.line}" for w in warnings if w.message.startswith(TURNED_ON))
    return replace(places, turned_on=turned_on) if turned_on else places


def _yaml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(_yaml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_yaml(v)}" for k, v in value.items()) + "}"
    text = str(value)
    return f"'{text}'" if ":" in text or text in ("*", "null") else text


def _where_absent(places: PolicyPlaces, name: str, value: Any) -> tuple[str, str, Place]:
    """A key that is not written: its dotted key, the words saying where to add it, and the
    place of the block it goes under."""
    block = places.block
    if block is not None and not block.line:  # made by a flag or variable: not in the file
        key = f"{block.key}.{name}"
        text = f"add {name}: {_yaml(value)} under the top-level cors: of the config"
        if places.file == NO_FILE:
            text = _on_the_command_line(name, value) or text
        return key, text, block
    if block is not None and f"{block.file}:{block.line}" in places.turned_on:
        key = f"{block.key}.{name}"
        return (
            key,
            (
                f"replace `false` at {block} with a block: {block.key.rsplit('.', 1)[-1]}: "
                f"{{{name}: {_yaml(value)}}} (the file says false; flags or variables turn it on, "
                "with the keys they set)"
            ),
            block,
        )
    if block is not None:
        key = f"{block.key}.{name}"
        return key, f"add {name}: {_yaml(value)} under {block}", block
    if places.route:
        place = Place(places.route, places.file, places.route_line)
        return (
            f"{places.route}.cors.{name}",
            f"add cors: {{{name}: {_yaml(value)}}} to {place}",
            place,
        )
    place = Place("cors", places.file, 0)
    text = f"add a top-level cors: {{{name}: {_yaml(value)}}} to {places.file}"
    if places.file == NO_FILE:
        text = _on_the_command_line(name, value) or text
    return f"cors.{name}", text, place


NO_FILE = "command line"  # the source's name when flags and variables alone make the config


def _on_the_command_line(name: str, value: Any, replaces: str = "") -> str:
    """How to set `cors.<name>` without a file: its flag and variable (sources.py), or ""
    for a key no flag sets."""
    from corsproxy.commands.sources import SOURCES

    for source in SOURCES:
        if source.path != ("cors", name):
            continue
        values = value if isinstance(value, list) else [value]
        if source.kind == "bool":
            flag = source.flag if value else "--no-" + source.flag.removeprefix("--")
            given, variable = flag, f"{source.envvar}={_yaml(value)}"
        else:
            given = " ".join(f"{source.flag} {shlex.quote(str(v))}" for v in values)
            variable = f"{source.envvar}={shlex.quote(','.join(str(v) for v in values))}"
        words = f"give {given} (or {variable})"
        if replaces:
            words += f"; it replaces {replaces}'s {name}, so list every entry you need"
        elif source.kind == "list":
            words += f", with every entry of {name} you need"
        return words + f" (in a config file: {name} under cors:)"
    return ""


def _inherited_warning(places: PolicyPlaces, name: str, is_list: bool) -> str:
    if not places.inherited(name):
        return ""
    route = places.route
    if is_list:
        return (
            f" ({route} inherits it from the top-level cors: block, as does every route that "
            f"does not write {name}; warning: {name} written under {route}.cors replaces the "
            "inherited list, it is not merged: copy its entries there to change this route "
            "alone)"
        )
    return (
        f" ({route} inherits it from the top-level cors: block, as does every route that does "
        f"not write {name}; write {name} under {route}.cors to change this route alone)"
    )


def add_to(places: PolicyPlaces, name: str, value: str) -> Fix:
    """Add `value` to the list `name` where this route's policy takes it from."""
    written = places.keys.get(name)
    if written is not None and written.file == "--demo":  # not something the user can edit
        text = _on_the_command_line(name, [value], replaces="--demo")
        if text:
            return Fix(text, (Edit("add", written.key, value, written.file, written.line),))
    if written is not None:
        text = f"add {_yaml(value)} to {written}" + _inherited_warning(places, name, True)
        text += places.shared_warning(name)
        return Fix(text, (Edit("add", written.key, value, written.file, written.line),))
    key, text, block = _where_absent(places, name, [value])
    text += places.shared_warning(name)
    return Fix(text, (Edit("add", key, value, block.file, block.line),))


def set_key(places: PolicyPlaces, name: str, value: Any) -> Fix:
    """Write `value` at the key `name` where this route's policy takes it from."""
    written = places.keys.get(name)
    if written is not None:
        text = f"set {written} to {_yaml(value)}" + _inherited_warning(
            places, name, isinstance(value, list)
        )
        text += places.shared_warning(name)
        return Fix(text, (Edit("set", written.key, value, written.file, written.line),))
    key, text, block = _where_absent(places, name, value)
    text = text.replace(f"add {name}:", f"set {name}:", 1) if text.startswith("add ") else text
    text += places.shared_warning(name)
    return Fix(text, (Edit("set", key, value, block.file, block.line),))


def both(first: Fix, second: Fix, joiner: str = " and ") -> Fix:
    withheld = " and ".join(f.withheld for f in (first, second) if f.withheld)
    return Fix(first.text + joiner + second.text, first.edits + second.edits, withheld)


def every(fixes: list[Fix]) -> Fix:
    """All of `fixes` (each with its key and FILE:LINE), as one."""
    fixes = [f for i, f in enumerate(fixes) if f.text and f not in fixes[:i]]
    if len(fixes) <= 1:
        return fixes[0] if fixes else NO_FIX
    text = "; ".join(f"({i}) {f.text}" for i, f in enumerate(fixes, 1))
    withheld = "; ".join(f.withheld for f in fixes if f.withheld)
    return Fix(text, tuple(e for f in fixes for e in f.edits), withheld)


def insecure(origin: str) -> bool:
    """A plain-http origin that is not loopback: check refuses it with credentials unless
    allow_insecure_origins is true."""
    parsed = parse_origin(origin)
    return parsed is not None and parsed.scheme == "http" and not _LOOPBACK.match(parsed.host)


def origin_fix(places: PolicyPlaces, policy: CorsPolicy, origin: str) -> Fix:
    """Allow `origin`: add it to allow_origins (and, with credentials over plain http, say
    what check demands)."""
    if origin == "null":
        where = places.keys.get("allow_origins") or places.block
        return Fix(
            "'null' comes from sandboxed frames and file: pages; serve the page from a real "
            f"origin (listing 'null' in {where or 'allow_origins'} would trust every "
            "sandboxed page)"
        )
    if parse_origin(origin) is None:  # a browser's, not one allow_origins can list
        return Fix(
            f"corsproxy's allow_origins cannot list {origin} (check refuses a host name "
            "ending in a dot), and only '*' matches it; serve the page at "
            f"{origin.rstrip('.')} instead"
        )
    fix = add_to(places, "allow_origins", origin)
    if policy.allow_credentials and insecure(origin) and not _insecure_allowed(policy):
        fix = both(fix, set_key(places, "allow_insecure_origins", True))
        return Fix(
            "serve the page over https (allow_credentials is true, and check refuses a "
            f"plain-http origin other than loopback); or {fix.text} (anyone on the network "
            "path can then act as that origin)",
            fix.edits,
        )
    return fix


def _insecure_allowed(policy: CorsPolicy) -> bool:
    """allow_insecure_origins is true when a policy with credentials compiled with a
    plain-http entry (not kept on the policy otherwise: then take it as false)."""
    return policy.allow_credentials and any(
        e.kind in ("exact", "pattern") and _insecure_entry(e.text) for e in policy.origins.entries
    )


def _credential_obstacles(policy: CorsPolicy, origin: str) -> list[str]:
    """What check refuses together with allow_credentials: true, besides '*' (replaced)."""
    found: list[str] = []
    entries = [] if policy.origins.allows_any else list(policy.origins.entries)
    if policy.expose_any:
        found.append("expose_headers '*'")
    if any(e.kind == "null" for e in entries):
        found.append("'null' in allow_origins")
    if any(e.kind == "regex" for e in entries):
        found.append("regexes (check refuses one that matches strangers)")
    plain = [e.text for e in entries if e.kind in ("exact", "pattern") and _insecure_entry(e.text)]
    if policy.origins.allows_any and insecure(origin):
        plain.append(origin)
    if plain:  # allow_insecure_origins may be true: not known here, so say so
        found.append("plain-http origins (" + ", ".join(plain) + ")")
    return found


def _insecure_entry(text: str) -> bool:
    scheme, _, rest = text.partition("://")
    host = rest.rsplit(":", 1)[0] if not rest.endswith("]") else rest
    host = "x" + host[1:] if host.startswith("*") else host
    return scheme.lower() == "http" and not _LOOPBACK.match(host.lower())


def credentials_fix(places: PolicyPlaces, policy: CorsPolicy, origin: str) -> Fix:
    """The page fetches with credentials and the policy does not allow them."""
    obstacles = _credential_obstacles(policy, origin)
    withheld = (
        "fetch without credentials; allow_credentials: true may not pass check with "
        + ", ".join(obstacles)
        + f" in this route's policy ({places.block or places.file})"
        if obstacles
        else ""
    )
    fix = set_key(places, "allow_credentials", True)
    if policy.origins.allows_any:
        fix = both(set_key(places, "allow_origins", [origin]), fix)
        fix = Fix("list the allowed origins instead of '*': " + fix.text, fix.edits)
    return Fix(fix.text + ", or fetch without credentials", fix.edits, withheld)


def disabled_fix(places: PolicyPlaces, origin: str) -> Fix:
    """The route has `cors: false`."""
    place = places.own if places.route else places.default
    inherited = place is None and bool(places.route)
    place = place or places.default
    if place is None:
        return NO_FIX
    value = {"allow_origins": [origin]}
    text = (
        f"{place} is false: no cross-origin access on this path; if pages of other origins "
        f"should call it, replace false with a policy, e.g. cors: {_yaml(value)}"
    )
    if inherited:  # a top-level `cors: false` the route inherits
        at = f"{places.file}:{places.route_line}" if places.route_line else places.file
        text = (
            f"{place} is false, and {places.route} inherits it (as does every route without "
            f"a cors: of its own): no cross-origin access on this path; if pages of other "
            f"origins should call it, give {places.route} ({at}) its own cors: "
            f"{_yaml(value)}, or replace the top-level false with a policy (every route "
            "without a cors: of its own then takes it)"
        )
        return Fix(text, (Edit("set", f"{places.route}.cors", value, places.file,
                               places.route_line),))  # fmt: skip
    return Fix(
        text + places.shared_warning(""), (Edit("set", place.key, value, place.file, place.line),)
    )


def reason_fix(
    places: PolicyPlaces,
    policy: CorsPolicy,
    reason: Reason,
    origin: str,
    spelled: str = "",
) -> Fix:
    """The fix for a refusal of the decision (`spelled`: a header as the user wrote it)."""
    code = reason.code
    if code is ReasonCode.ORIGIN_NOT_ALLOWED or code is ReasonCode.WEBSOCKET_ORIGIN_NOT_ALLOWED:
        return origin_fix(places, policy, origin)
    if code is ReasonCode.METHOD_NOT_ALLOWED:
        return add_to(places, "allow_methods", reason.detail)
    if code is ReasonCode.HEADER_NOT_ALLOWED:
        return add_to(places, "allow_headers", spelled or reason.detail)
    if code is ReasonCode.PRIVATE_NETWORK_NOT_ALLOWED:
        return set_key(places, "allow_private_network", True)
    if code is ReasonCode.CORS_DISABLED:
        return disabled_fix(places, origin)
    return NO_FIX
