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
    )
