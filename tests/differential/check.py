"""The invariants of issue 11, section 7, checked on what the clients got and the upstream saw.

What a correct proxy may do, and the checker accepts: answer with its own error (502/504,
untagged) or close the connection instead of relaying an answer; not forward a request at all
(after an error, or when the client went away); retry an idempotent request without a body
when the attempt before got no clean answer (RFC 9112 9.3.1). Nothing else.

One race no HTTP/1.1 client can win is not counted against the proxy: bytes an upstream sends
after a complete answer whose framing was right (script `late`) that reach the proxy *after*
it already wrote the next request on that connection are indistinguishable from that
request's answer. The upstream sends them only when no byte of a next request has arrived
(it looks in its buffer and the kernel's), and looks again right after the write. A forged
answer that reaches a client is a violation when both looks were empty and the next request
reached the upstream at least RACE_MARGIN after the forged bytes left: the proxy held them on
an idle connection and still handed it out. Otherwise it is counted as an undecidable race.
A bodiless answer (HEAD, 204, 304) gets no such allowance, whatever it announced: a correct
proxy never reuses that connection, whenever the rest arrives. Trailer fields (the scripted
upstream names them all X-Trailer-*) must never reach a client as response headers.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from tests.differential.model import (
    IDEMPOTENT,
    TAG,
    ClientRequest,
    UpstreamOddity,
    UpstreamRequest,
    Violation,
)

RACE_MARGIN = 0.02  # seconds
HEADER_TAG = re.compile(rb"(?im)^x-req-id:[ \t]*([^\r\n]*?)[ \t]*\r$")


@dataclass
class Outcome:
    violations: list[Violation] = field(default_factory=list)
    stats: Counter[str] = field(default_factory=Counter)


def tags_in(raw: bytes) -> set[str]:
    """Every request id named in these bytes: X-Req-Id headers and body tags."""
    found = {m.decode("latin-1") for m in HEADER_TAG.findall(raw)}
    return found | {m.decode() for m in TAG.findall(raw)}


def check(
    clients: list[ClientRequest],
    upstream: list[UpstreamRequest],
    oddities: list[UpstreamOddity],
    framing: list[tuple[ClientRequest, Exception]],
    stray: list[tuple[str, bytes]],
) -> Outcome:
    out = Outcome()
    bad = out.violations.append
    stats = out.stats
    by_rid = {c.rid: c for c in clients}
    seen: defaultdict[str, list[UpstreamRequest]] = defaultdict(list)
    forged_by: dict[str, UpstreamRequest] = {}
    for up in upstream:
        for tag in up.forged:
            forged_by[tag] = up
        stats["forged answers sent"] += len(up.forged)
        stats["late bytes skipped (connection already reused)"] += up.forged_skipped

    # The upstream never sees a request boundary that corsproxy did not see.
    for odd in oddities:
        bad(
            Violation(
                "upstream-boundary",
                f"upstream connection {odd.conn} request {odd.index}: {odd.reason}",
                data=odd.data,
            )
        )
    for up in upstream:
        stats["upstream requests"] += 1
        client = by_rid.get(up.rid or "")
        where = f"upstream connection {up.conn} request {up.index}"
        if client is None:
            bad(
                Violation(
                    "upstream-boundary", f"{where}: no client sent it", data=up.target.encode()
                )
            )
            continue
        if not client.sent:
            bad(
                Violation(
                    "upstream-boundary",
                    f"{where}: forwarded as complete although the client never finished sending it",
                    client.rid,
                    client.conn,
                    up.body,
                )
            )
        if (up.method, up.target, up.body) != (client.method, client.target, client.body):
            bad(
                Violation(
                    "one-to-one",
                    f"{where}: method, target or body differ from the "
                    f"client's ({client.method} {client.target}, {len(client.body)} bytes)",
                    client.rid,
                    client.conn,
                    f"{up.method} {up.target}\r\n\r\n".encode() + up.body,
                )
            )
        seen[client.rid].append(up)

    # Each client request maps to at most one upstream request (bar an allowed retry).
    for rid, ups in seen.items():
        if len(ups) < 2:
            continue
        client = by_rid[rid]
        retry = (
            client.method in IDEMPOTENT and not client.body and not any(up.clean for up in ups[:-1])
        )
        if retry:
            stats["retries (idempotent, no clean answer before)"] += len(ups) - 1
        else:
            where = ", ".join(f"upstream connection {u.conn}#{u.index}" for u in ups)
            bad(Violation("one-to-one", f"forwarded {len(ups)} times ({where})", rid, client.conn))

    # Each client receives only its own request's answer, or an error.
    for client in clients:
        stats["client requests"] += 1
        stats["sent"] += client.sent
        answer = client.answer
        if answer is None:
            stats["no answer (closed, reset, aborted)"] += 1
            continue
        tags = tags_in(answer.raw)
        foreign = tags - {client.rid}
        if foreign:
            if all(_raced(tag, forged_by) for tag in foreign):
                stats["undecidable late-bytes races"] += 1
                continue
            owners = ", ".join(sorted(foreign))
            sources = [forged_by[t] for t in sorted(foreign) if t in forged_by]
            shaped = "".join(
                f" (a forged answer the upstream sent after its answer to {u.method} {u.rid},"
                f" script {u.script}, on its connection {u.conn})"
                for u in sources
            )
            bad(
                Violation(
                    "own-answer",
                    f"received bytes of {owners}{shaped} (script {client.script}, {client.method})",
                    client.rid,
                    client.conn,
                    answer.raw,
                    client.at,
                )
            )
            continue
        if not tags:
            # Only corsproxy itself answers without a tag: an error of its own (502/504 when
            # the upstream failed; 4xx for the client's side), never a success.
            if 400 <= answer.status <= 599:
                stats[f"proxy errors ({answer.status})"] += 1
                stats["proxy errors"] += 1
            else:
                bad(
                    Violation(
                        "own-answer",
                        f"an untagged {answer.status} answer",
                        client.rid,
                        client.conn,
                        answer.raw,
                    )
                )
            continue
        stats["own answers"] += 1
        trailers = [n for n, _ in answer.headers if n.lower().startswith("x-trailer-")]
        if trailers:
            bad(
                Violation(
                    "trailers",
                    f"trailer fields relayed as response headers: {', '.join(trailers)}",
                    client.rid,
                    client.conn,
                    answer.raw,
                )
            )
        bodiless = client.method == "HEAD" or answer.status in (204, 304)
        if not any(
            up.status == answer.status and (bodiless or up.answer_body == answer.body)
            for up in seen.get(client.rid, [])
        ):
            bad(
                Violation(
                    "own-answer",
                    f"status or body differ from every answer the upstream "
                    f"gave this request (script {client.script}, {client.method})",
                    client.rid,
                    client.conn,
                    answer.raw,
                )
            )

    for client, exc in framing:
        bad(
            Violation(
                "framing",
                f"not a well-formed answer: {exc}",
                client.rid,
                client.conn,
                getattr(exc, "data", b""),
            )
        )
    for conn, data in stray:
        bad(
            Violation(
                "framing", "bytes after the last answer on a connection", conn=conn, data=data
            )
        )
    stats["violations"] = len(out.violations)
    return out


def _raced(tag: str, forged_by: dict[str, UpstreamRequest]) -> bool:
    up = forged_by.get(tag)
    if up is None or up.script != "late":
        return False
    if up.forged_raced or not up.next_seen_at:
        return True  # the next request was on its way, or never came whole: no evidence
    return up.next_seen_at - up.forged_at < RACE_MARGIN
