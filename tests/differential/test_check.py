"""The checker accepts exactly what a correct proxy may do, and the client parser is strict:
both without sockets, so a false positive or a blind spot shows here first."""

from __future__ import annotations

import asyncio

import pytest

from tests.differential.check import check
from tests.differential.client import Framing, read_answer
from tests.differential.model import (
    Answer,
    ClientRequest,
    UpstreamOddity,
    UpstreamRequest,
    tag_body,
)


def client(rid: str, method: str = "GET", body: bytes = b"", script: str = "cl") -> ClientRequest:
    target = f"/d/{rid}?id={rid}&s={script}"
    req = ClientRequest(
        rid, "c0", method, target, body, "cl" if body else "none", None, script, "normal"
    )
    req.sent = True
    return req


def seen(
    req: ClientRequest, conn: int = 1, *, status: int = 200, clean: bool = True, size: int = 20
) -> UpstreamRequest:
    up = UpstreamRequest(conn, 0, req.method, req.target, [], req.body, req.rid, req.script)
    up.status, up.answer_body, up.clean = status, tag_body(req.rid, size), clean
    return up


def answer(tag: str, status: int = 200, size: int = 20) -> Answer:
    body = tag_body(tag, size)
    raw = (
        f"HTTP/1.1 {status} X\r\nX-Req-Id: {tag}\r\nContent-Length: {size}\r\n\r\n".encode() + body
    )
    return Answer(status, [("X-Req-Id", tag)], body, raw)


def untagged(status: int) -> Answer:
    raw = f"HTTP/1.1 {status} X\r\nContent-Length: 4\r\n\r\nerr\n".encode()
    return Answer(status, [], b"err\n", raw)


def invariants(
    clients: list[ClientRequest],
    ups: list[UpstreamRequest],
    oddities: list[UpstreamOddity] | None = None,
) -> list[str]:
    return [v.invariant for v in check(clients, ups, oddities or [], [], []).violations]


def test_own_answer_and_proxy_errors_pass() -> None:
    a, b, c = client("a"), client("b"), client("c")
    a.answer = answer("a")
    b.answer = untagged(502)  # the upstream failed: corsproxy's own error
    c.error = "closed"  # or no answer at all
    assert invariants([a, b, c], [seen(a), seen(b, clean=False)]) == []


def test_another_requests_bytes_are_a_violation() -> None:
    a, b = client("a"), client("b")
    a.answer, b.answer = answer("a"), answer("a")
    assert invariants([a, b], [seen(a), seen(b)]) == ["own-answer"]


def test_a_forged_answer_after_a_bodiless_one_is_a_violation_whenever_it_came() -> None:
    a, b = client("a", "HEAD", script="bodiless_late"), client("b")
    up_a = seen(a, clean=False)
    up_a.forged = ["forged-1"]
    a.answer, b.answer = answer("a", size=0), answer("forged-1")
    assert invariants([a, b], [up_a, seen(b)]) == ["own-answer"]


@pytest.mark.parametrize(
    ("gap", "raced", "found"), [(0.5, False, ["own-answer"]), (0.001, False, []), (0.5, True, [])]
)
def test_late_bytes_count_only_when_the_proxy_had_time_to_see_them(
    gap: float, raced: bool, found: list[str]
) -> None:
    a, b = client("a", script="late"), client("b")
    up_a = seen(a, clean=False)
    up_a.forged, up_a.forged_at, up_a.next_seen_at, up_a.forged_raced = (
        ["forged-1"],
        10.0,
        10.0 + gap,
        raced,
    )
    a.answer, b.answer = answer("a"), answer("forged-1")
    assert invariants([a, b], [up_a, seen(b)]) == found


def test_an_untagged_success_is_a_violation() -> None:
    a = client("a")
    a.answer = untagged(200)
    assert invariants([a], [seen(a)]) == ["own-answer"]


def test_a_tagged_answer_must_be_what_the_upstream_sent() -> None:
    a = client("a")
    a.answer = answer("a", size=7)  # cut short, yet framed as complete
    assert invariants([a], [seen(a, size=20)]) == ["own-answer"]


def test_retries_only_for_idempotent_requests_without_a_clean_answer_before() -> None:
    get, put, post = client("g"), client("p", "PUT"), client("o", "POST", b"x")
    ok = [seen(get, 1, clean=False), seen(get, 2)]
    assert invariants([get], ok) == []
    assert invariants([put], [seen(put, 1), seen(put, 2)]) == ["one-to-one"]  # answered before
    assert invariants([post], [seen(post, 1, clean=False), seen(post, 2)]) == ["one-to-one"]


def test_the_upstream_sees_only_whole_requests_clients_sent() -> None:
    a, b = client("a", "POST", b"body"), client("b", "POST", b"body")
    b.sent = False  # the client gave up in the middle of the body
    mangled = seen(a)
    mangled.body = b"bo"
    stranger = seen(client("zzz"))
    odd = UpstreamOddity(1, 1, "bad request line", b"dy")
    assert sorted(invariants([a, b], [mangled, seen(b), stranger], [odd])) == [
        "one-to-one", "upstream-boundary", "upstream-boundary", "upstream-boundary",
    ]  # fmt: skip


async def parse(data: bytes, method: str = "GET") -> Answer:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    return await read_answer(reader, method)


async def test_the_client_parser_reads_interim_chunked_and_bodiless_answers() -> None:
    chunked = await parse(
        b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nX-T: 1\r\n\r\n"
    )
    assert (chunked.status, chunked.body, chunked.interim) == (200, b"abcde", [103])
    head = await parse(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", "HEAD")
    assert head.body == b""


@pytest.mark.parametrize(
    "data",
    [
        b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n",
        b"junk\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n Folded: x\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ],
)
async def test_the_client_parser_refuses_what_is_not_well_formed(data: bytes) -> None:
    with pytest.raises(Framing):
        await parse(data)
