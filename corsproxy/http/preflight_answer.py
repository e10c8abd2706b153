"""A successful preflight's answer, written from a head built once per memoized decision.

A preflight is answered here, never forwarded, and browsers send a handful of distinct
preflights per route: the decision memo (policy/cors.py: `decide_cached`) returns the same
`Decision` object for each of them, so the head's header lines are serialized once per
decision (by aiohttp's own serializer, so the bytes and its checks are aiohttp's) and each
answer only adds what changes per request: the status line's version, `X-Request-Id`,
`Date` and the `Connection` line aiohttp would add. The whole head leaves in one write
through the connection's aiohttp writer, without building a `web.Response`, its header
multidict and its `prepare()` chain.

The bytes are those `web.Response(status=204)` with the decision's headers writes (the
straightforward path in http/server.py, kept for `ENABLED = False`); tests/test_preflight_fast.py
compares both on a raw socket for generated preflights.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web
from aiohttp.http import HttpVersion10, HttpVersion11

from corsproxy.http.aiohttp_private import http_date, serialize_head
from corsproxy.policy.cors import Action, Decision, response_headers

__all__ = ["ENABLED", "PreflightAnswer", "Prepared", "prepared"]

# The fast path's switch, for the oracle test only: False answers every preflight the
# straightforward way (and http/server.py then resolves the client's view eagerly and routes
# without the memo of http/route_memo.py).
ENABLED = True

# Decisions are few and live in their policy's memo; a bound keeps hostile traffic (whose
# decisions miss the memo) from growing this one.
_ENTRIES = 1024


@dataclass(frozen=True, slots=True)
class Prepared:
    """What one decision's answers share: the head's fixed part and the access line's words."""

    status_line: bytes  # " 204 No Content\r\n", after `HTTP/1.x`
    lines: bytes  # the decision's header lines, each ending in CRLF
    verdict: str
    kind: str


# id(decision) -> (decision, its answer): holding the decision keeps its id from being reused.
_cache: dict[int, tuple[Decision, Prepared | None]] = {}


def prepared(decision: Decision) -> Prepared | None:
    """The shared part of `decision`'s answer, or None when it is not answered here (not a
    successful preflight, or headers aiohttp's serializer would refuse)."""
    entry = _cache.get(id(decision))
    if entry is not None and entry[0] is decision:
        return entry[1]
    answer = _build(decision)
    if len(_cache) >= _ENTRIES:
        _cache.clear()
    _cache[id(decision)] = (decision, answer)
    return answer


def _build(decision: Decision) -> Prepared | None:
    if decision.action is not Action.PREFLIGHT or decision.status != 204:
        return None
    try:
        head = serialize_head("X", response_headers(decision, []))
    except (ValueError, UnicodeError):  # aiohttp would refuse to send them: its answer, not ours
        return None
    # `X\r\n` + lines + `\r\n`: keep the lines only.
    lines = head[len(b"X\r\n") : -2]
    reason = web.StreamResponse(status=decision.status).reason
    return Prepared(
        f" {decision.status} {reason}\r\n".encode(),
        lines,
        decision.verdict,
        decision.kind.value,
    )


_VERSIONS = {HttpVersion11: b"HTTP/1.1", HttpVersion10: b"HTTP/1.0"}


class PreflightAnswer(web.StreamResponse):
    """A 204 whose head `prepare()` writes whole; no body follows.

    What aiohttp's `web.Response(status=204)` adds is added the same way: `Date`, and
    `Connection: close` to an HTTP/1.1 request that does not keep the connection alive
    (`Connection: keep-alive` to an HTTP/1.0 one that does). `Server` is never sent (every
    answer corsproxy writes drops it).
    """

    def __init__(self, answer: Prepared, request_id: str) -> None:
        super().__init__(status=204)
        self._answer = answer
        self._request_id = request_id
        self._alive: bool | None = None
        self._written = False

    @property
    def keep_alive(self) -> bool | None:
        return self._alive

    async def prepare(self, request: web.BaseRequest) -> None:
        if self._written:
            return
        self._written = True
        alive = self._alive = request.keep_alive
        version = request.version
        if alive:
            connection = b"Connection: keep-alive\r\n" if version == HttpVersion10 else b""
        else:
            connection = b"Connection: close\r\n" if version == HttpVersion11 else b""
        answer = self._answer
        head = b"".join(
            (
                _VERSIONS[version],
                answer.status_line,
                answer.lines,
                b"X-Request-Id: ",
                self._request_id.encode(),
                b"\r\nDate: ",
                http_date(),
                b"\r\n",
                connection,
                b"\r\n",
            )
        )
        await request.writer.write_eof(head)

    async def write_eof(self, data: bytes = b"") -> None:
        return  # the head was the whole answer
