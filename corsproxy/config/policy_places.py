"""Where a route's policy keys are written (`PolicyPlaces`), read off the parsed sections."""

from __future__ import annotations

from types import MappingProxyType

from corsproxy.config.schema import POLICY_SPEC
from corsproxy.config.spec import Section
from corsproxy.policy.config_places import Place, PolicyPlaces


def _block(section: Section, file: str) -> Place | None:
    if "cors" not in section.lines:
        return None
    return Place(section.child_key("cors"), section.files.get("cors", file), section.lines["cors"])


def policy_places(file: str, top: Section, route: Section | None = None) -> PolicyPlaces:
    """The places of the default policy (`route` None) or of one route's."""
    own = None if route is None else _block(route, file)
    # The route's own block over the top-level one; `cors: false` on the route stops there.
    chain = [top.get("cors")] if route is None else [route.get("cors"), top.get("cors")]
    layers: list[Section] = []
    for block in chain:
        if block is False:
            break
        if isinstance(block, Section):
            layers.append(block)
    keys: dict[str, Place] = {}
    for name in POLICY_SPEC.fields:
        section = next((s for s in layers if s.has(name)), None)
        if section is not None:
            line = section.lines[name]
            keys[name] = Place(section.child_key(name), section.files.get(name, file), line)
    return PolicyPlaces(
        file=file,
        route=route.key if route is not None else "",
        keys=MappingProxyType(keys),
        own=own,
        default=_block(top, file),
        route_line=route.line if route is not None else 0,
        shared=MappingProxyType(_shared(file, top, route, keys)),
    )


def _shared(
    file: str, top: Section, route: Section | None, keys: dict[str, Place]
) -> dict[str, str]:
    """The keys of `route`'s own block written inside another route's lines (a YAML anchor
    there, an alias here): the route that holds the line. "" stands for the block itself."""
    own = None if route is None else route.get("cors")
    if route is None or not isinstance(own, Section):
        return {}
    spans = sorted(
        (r.line, r.key) for r in top.get("routes") or [] if isinstance(r, Section) and r.line
    )

    def owner(line: int) -> str:
        holder = ""
        for start, key in spans:
            if start <= line:
                holder = key
        return "" if holder == route.key else holder or "the top level"

    found: dict[str, str] = {}
    if (holder := owner(own.line)) and own.line < route.lines.get("cors", 0):
        found[""] = holder
    for name, place in keys.items():
        mine = place.key.startswith(route.key + ".") and place.file == file
        if mine and place.line and (holder := owner(place.line)):
            found[name] = holder
    return found
