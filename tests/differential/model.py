"""What the clients sent and got, and what the upstream saw and answered: the checker's input."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

APP = "https://app.example.com"  # the origin the policy allows, with credentials
OTHER = "https://evil.example"  # an origin it does not allow (forwarded, unreadable)

# Upstream scripts that are correct HTTP/1.1 (a connection may still end at a boundary).
WELL_BEHAVED = ("cl", "chunked", "close", "info", "bodiless", "error", "slow", "half_close")
# Scripts where the upstream misbehaves on purpose. `bodiless_late` and `late` are the
# section-1 shapes: bytes after a complete answer, sent 0-300 ms later as a forged answer.
MISBEHAVING = (
    "bodiless_now", "bodiless_late", "bodiless_split", "info_body", "late", "reset_before",
    "reset_mid", "cut",
)  # fmt: skip
# Bodiless answers (HEAD, 204, 304), whatever they announce, may be followed by a body: a
# correct proxy closes after them. `info_body`: a 1xx with framing and a body.
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})

TAG = re.compile(rb"tag=([A-Za-z0-9._-]+);")


def tag_body(rid: str, size: int) -> bytes:
    """A body of `size` bytes made of this request's tag (so any slice of it names its owner)."""
    unit = f"tag={rid};".encode()
    return (unit * (size // len(unit) + 1))[:size]


@dataclass
class Answer:
    """One final answer as a client parsed it (interim 1xx answers are listed apart)."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes
    raw: bytes
    interim: list[int] = field(default_factory=list)

    def header(self, name: str) -> list[str]:
        lower = name.lower()
        return [v for n, v in self.headers if n.lower() == lower]


@dataclass
class ClientRequest:
    rid: str
    conn: str  # the client connection id
    method: str
    target: str
    body: bytes
    framing: str  # none | cl | chunked
    origin: str | None
    script: str
    action: str  # normal | abort_body | abort_after_send | abort_response
    sent: bool = False  # every byte of it was written
    answer: Answer | None = None
    error: str = ""  # why there is no answer (closed, reset, timeout, framing ...)
    at: float = 0.0  # when the answer (or the error) came, in seconds since the run began


@dataclass
class UpstreamRequest:
    """One complete request as the upstream parsed it off one of its connections."""

    conn: int
    index: int  # its place on that connection
    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes
    rid: str | None
    script: str = ""
    status: int = 0  # what the upstream answered (0: nothing)
    answer_body: bytes = b""
    clean: bool = False  # a complete, well-formed answer was written and not reset
    forged: list[str] = field(default_factory=list)  # forged tags written after the answer
    # For `late`: when the forged bytes left, and when the next request was read (monotonic).
    forged_at: float = 0.0
    next_seen_at: float = 0.0
    forged_skipped: bool = False  # the next request was already waiting: nothing sent
    forged_raced: bool = False  # the next request had arrived just as the forged bytes left


@dataclass
class UpstreamOddity:
    """Bytes on an upstream connection that do not parse as a request."""

    conn: int
    index: int
    reason: str
    data: bytes


@dataclass
class Violation:
    invariant: str
    detail: str
    rid: str = ""
    conn: str = ""
    data: bytes = b""
    at: float = 0.0  # seconds into the run (0 when unknown)

    def render(self, seed: int) -> str:
        shown = self.data[:600]
        more = f" (+{len(self.data) - 600} bytes)" if len(self.data) > 600 else ""
        return (
            f"[seed {seed}] {self.invariant}: {self.detail}"
            f" (request {self.rid or '-'}, client connection {self.conn or '-'}"
            f"{f', at {self.at:.1f} s' if self.at else ''})\n"
            f"    bytes: {shown!r}{more}"
        )
