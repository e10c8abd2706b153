"""The latest refused and would-refuse requests, for the admin console: a bounded ring.

One entry per (origin, route, reasons), with a count and when it was first and last seen;
the least recently seen entry goes when the ring is full. Origins and reasons are the
client's choice, so everything kept is bounded: at most MAX_ENTRIES entries, an origin cut at
MAX_ORIGIN_CHARS characters, at most MAX_REASONS reasons of MAX_REASON_CHARS each. A client
spraying origins can only push older entries out (counted in `evicted`), never grow memory:
at most about MAX_ENTRIES * (MAX_ORIGIN_CHARS + MAX_REASONS * MAX_REASON_CHARS) characters.

The server records a request only when its decision refuses it (or would, in report-only
mode): allowed requests cost nothing here. Each process has its own ring (with `--workers N`
each worker records what it served).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

MAX_ENTRIES = 200
# A serialized origin is at most scheme://(253-character host):65535; longer is cut.
MAX_ORIGIN_CHARS = 300
MAX_REASONS = 8
MAX_REASON_CHARS = 256
TRUNCATED = "\u2026"  # appended to a cut origin or reason: never suggested, shown as cut


@dataclass(slots=True)
class Refusal:
    origin: str
    route: str
    # The decision's Reason objects (str with `code` and `detail`), or plain text when cut.
    reasons: tuple[str, ...]
    verdict: str  # "refused" | "would_refuse" (the last one seen)
    kind: str  # "preflight" | "actual" (the last one seen)
    count: int
    first_seen: float
    last_seen: float

    @property
    def truncated(self) -> bool:
        return self.origin.endswith(TRUNCATED)


def _bounded_reasons(reasons: Sequence[str]) -> tuple[str, ...]:
    kept = tuple(reasons[:MAX_REASONS])
    if len(reasons) <= MAX_REASONS and all(len(r) <= MAX_REASON_CHARS for r in kept):
        return kept
    cut = tuple(r if len(r) <= MAX_REASON_CHARS else r[:MAX_REASON_CHARS] + TRUNCATED for r in kept)
    return cut + ((f"and {len(reasons) - MAX_REASONS} more",) if len(reasons) > MAX_REASONS else ())


class RefusalRing:
    """Bounded, deduplicated, least recently seen out. Used on the event loop only."""

    def __init__(self, size: int = MAX_ENTRIES) -> None:
        self.size = size
        self.total = 0  # refusals recorded since start
        self.evicted = 0  # entries pushed out by newer ones
        self._entries: OrderedDict[tuple[str, str, tuple[str, ...]], Refusal] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def record(
        self, origin: str, route: str, reasons: Sequence[str], verdict: str, kind: str
    ) -> None:
        if len(origin) > MAX_ORIGIN_CHARS:
            origin = origin[:MAX_ORIGIN_CHARS] + TRUNCATED
        bounded = _bounded_reasons(reasons)
        key = (origin, route, bounded)
        now = time.time()
        self.total += 1
        entry = self._entries.get(key)
        if entry is not None:
            entry.count += 1
            entry.last_seen = now
            entry.verdict = verdict
            entry.kind = kind
            self._entries.move_to_end(key)
            return
        if len(self._entries) >= self.size:
            self._entries.popitem(last=False)
            self.evicted += 1
        self._entries[key] = Refusal(origin, route, bounded, verdict, kind, 1, now, now)

    def latest(self) -> list[Refusal]:
        """The entries, most recently seen first."""
        return list(reversed(self._entries.values()))
