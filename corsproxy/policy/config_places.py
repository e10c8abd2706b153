"""Where a route's policy keys are written in the configuration, for `explain`'s fixes.

Pure data, filled by the config compiler: each key as a dotted key with its file and line
(or the flag or variable that set it), and the `cors:` blocks a key would be added under.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType


@dataclass(frozen=True, slots=True)
class Place:
    """A dotted key and where it is written. `line` 0: set by a flag or variable (`file`
    names it), or not written at all."""

    key: str  # "routes[2].cors.allow_methods"
    file: str
    line: int = 0

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{self.key} ({where})" if where else self.key


@dataclass(frozen=True, slots=True)
class PolicyPlaces:
    """A route's policy in the file: `route` is `routes[2]` ("" for the default policy),
    `keys` where each written key's value comes from (the route's own `cors:` block or the
    top-level one it inherits), `own` the route's own `cors:` (a block or `false`),
    `default` the top-level `cors:`, `route_line` the route's line."""

    file: str
    route: str = ""
    keys: Mapping[str, Place] = field(default_factory=lambda: MappingProxyType({}))
    own: Place | None = None
    default: Place | None = None
    route_line: int = 0
    # Keys (and "" for the route's own `cors:` block) written inside another route's block
    # and reached through a YAML anchor: the route they are written in ("routes[0]").
    shared: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    # Blocks ("FILE:LINE") the file writes as `cors: false` that flags or variables turned on.
    turned_on: frozenset[str] = frozenset()

    def shared_warning(self, name: str) -> str:
        """For an edit of `name` (absent: added under the block): a warning when the line
        belongs to another route's block, reached through a YAML anchor."""
        owner = self.shared.get(name) if name in self.keys else self.shared.get("")
        if not owner:
            return ""
        return (
            f" (warning: that line is written in {owner} and reaches {self.route} through a "
            f"YAML anchor and alias: the edit also changes {owner}, and anything else that "
            f"uses the anchor; to change {self.route} alone, give it a cors: block of its own "
            "instead of the alias)"
        )

    def inherited(self, name: str) -> bool:
        """Whether a route takes this key from the top-level `cors:`."""
        place = self.keys.get(name)
        return bool(self.route) and place is not None and not place.key.startswith(self.route + ".")

    @property
    def block(self) -> Place | None:
        """The `cors:` block that sets this route's policy: its own, else the top-level one."""
        return self.own if self.own is not None else self.default
