"""The upstream connection's state machine, without sockets: the transition table, and the
one reuse question (`ResponseReader.reusable`) for every way an exchange can end."""

from __future__ import annotations

import random

import pytest

from corsproxy.http import errors
from corsproxy.http.h1response import (
    MAX_LINE,
    TRANSITIONS,
    Event,
    LocalProtocolError,
    ResponseReader,
    State,
    UpstreamFailure,
)

S, E = State, Event
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def reader_in(state: State) -> ResponseReader:
    reader = ResponseReader()
    reader.state = state
    return reader


# --- the table -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("row", "target"),
    list(TRANSITIONS.items()),
    ids=lambda v: getattr(v, "name", None) or "-".join(x.name for x in v),
)
def test_every_row_of_the_table_is_followed(row: tuple[State, Event], target: State) -> None:
    reader = reader_in(row[0])
    reader._to(row[1])
    assert reader.state is target


MISSING = [(s, e) for s in State for e in Event if (s, e) not in TRANSITIONS]


@pytest.mark.parametrize("pair", MISSING, ids=lambda p: f"{p[0].name}-{p[1].name}")
def test_every_pair_outside_the_table_raises(pair: tuple[State, Event]) -> None:
    reader = reader_in(pair[0])
    with pytest.raises(LocalProtocolError):
        reader._to(pair[1])
    assert reader.state is pair[0]


def test_the_only_way_back_to_the_pool_is_a_release_after_a_clean_end() -> None:
    into_idle = [row for row, target in TRANSITIONS.items() if target is S.IDLE]
    assert into_idle == [(S.DONE, E.RELEASE)]
    into_done = {row for row, target in TRANSITIONS.items() if target is S.DONE}
    # Only the end of a framed body: never the head of a HEAD, 204 or 304 answer.
    assert into_done == {(S.READING_BODY, E.END), (S.DONE, E.SENT)}


def test_closing_and_failing_states_never_lead_back() -> None:
    for (state, _), target in TRANSITIONS.items():
        if state in (S.MUST_CLOSE, S.FAILED, S.CLOSED):
            assert target in (state, S.CLOSED)
    assert all((s, E.CLOSE) in TRANSITIONS for s in State)


def test_only_idle_and_a_clean_end_are_reusable() -> None:
    for state in State:
        assert reader_in(state).reusable is (state in (S.IDLE, S.DONE))
    done = reader_in(S.DONE)
    done.body.append(b"unread")  # the caller did not read the whole body
    assert not done.reusable


# --- exchanges fed as bytes ------------------------------------------------------------


def exchange(
    *replies: bytes, head_only: bool = False, body_follows: bool = False
) -> ResponseReader:
    reader = ResponseReader()
    reader.start(head_only, body_follows)
    for data in replies:
        reader.feed(data)
    return reader


def test_a_framed_answer_ends_at_its_boundary_and_is_reusable_once_read() -> None:
    reader = exchange(OK)
    assert reader.state is S.DONE and reader.status == 200
    assert not reader.reusable  # its body still waits for the caller
    assert reader.take_body() == b"ok"
    assert reader.reusable
    assert reader.release() and reader.state is S.IDLE
    reader.start(head_only=False, body_follows=False)  # the next exchange
    reader.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n")
    assert reader.take_body() == b"hi" and reader.state is S.DONE


@pytest.mark.parametrize(
    ("head_only", "reply"),
    [
        (True, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
        (True, b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"),
        (True, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"),
        (True, b"HTTP/1.1 200 OK\r\n\r\n"),
        (False, b"HTTP/1.1 204 No Content\r\n\r\n"),
        (False, b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n"),
        (False, b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n"),
        (False, b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n"),
        (False, b"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n"),
        (False, b"HTTP/1.1 304 Not Modified\r\n\r\n"),
        (False, b"HTTP/1.1 304 Not Modified\r\nContent-Length: 0\r\n\r\n"),
        (True, b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n"),
    ],
    ids=[
        "head-cl0", "head-cl1000", "head-chunked", "head-unframed", "204", "204-cl0",
        "204-cl5", "304-cl5", "304-chunked", "304", "304-cl0", "head-204-cl5",
    ],
)  # fmt: skip
def test_head_204_and_304_answers_are_whole_at_their_head_and_never_reused(
    head_only: bool, reply: bytes
) -> None:
    """Their end is the method's or the status's, not their framing's: an upstream may still
    write a body after them (at once, or in a later write), even after `Content-Length: 0`
    or no framing at all. So the connection closes after them, whatever they announced."""
    reader = exchange(reply, head_only=head_only)
    assert reader.state is S.MUST_CLOSE
    assert reader.error is None and reader.complete
    assert reader.take_body() == b""
    assert not reader.reusable
    reader.feed(OK)  # the body a naive handler writes after its 204, in a second write
    assert reader.state is S.MUST_CLOSE and reader.take_body() == b""
    assert not reader.release() and reader.state is S.CLOSED


@pytest.mark.parametrize(
    ("head_only", "reply"),
    [
        (True, b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\n" + OK[:8]),
        (True, b"HTTP/1.1 200 OK\r\n\r\n" + OK),
        (False, b"HTTP/1.1 204 No Content\r\nContent-Length: %d\r\n\r\n%s" % (len(OK), OK)),
        (False, b"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nHTTP/\r\n"),
    ],
    ids=["head-with-body", "head-unframed-with-body", "204-with-body", "304-with-chunks"],
)
def test_a_body_after_a_bodiless_answer_is_surplus_never_an_answer(
    head_only: bool, reply: bytes
) -> None:
    reader = exchange(reply, head_only=head_only)
    assert reader.state is S.MUST_CLOSE
    assert reader.error is None and reader.take_body() == b""
    reader.feed(OK)  # more of it later: still nobody's answer
    assert reader.state is S.MUST_CLOSE and not reader.release()
    assert reader.state is S.CLOSED


def test_surplus_in_the_same_read_or_later_closes_the_connection() -> None:
    same_read = exchange(OK + b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nFORGED")
    assert same_read.state is S.MUST_CLOSE and same_read.take_body() == b"ok"
    later = exchange(OK)
    later.feed(b"x")
    assert later.state is S.MUST_CLOSE and later.take_body() == b"ok"
    assert later.error is None and not later.reusable


def test_bytes_on_an_idle_connection_or_unread_in_the_kernel_close_it() -> None:
    for arrive in (lambda r: r.feed(OK), lambda r: r.unread(5)):
        reader = exchange(OK)
        reader.take_body()
        assert reader.release()
        arrive(reader)
        assert reader.state is S.MUST_CLOSE and not reader.reusable
    quiet = ResponseReader()
    quiet.unread(0)
    assert quiet.reusable


def test_an_answer_that_ends_before_the_request_body_was_sent_is_not_reusable() -> None:
    reader = exchange(OK, body_follows=True)
    assert reader.state is S.MUST_CLOSE and reader.take_body() == b"ok"
    reader.sent()
    assert reader.state is S.MUST_CLOSE and not reader.reusable


def test_an_early_head_whose_body_ends_after_the_request_was_sent_is_not_reusable() -> None:
    # The request had a body: whether the upstream read it cannot be seen (a CL.0 desync).
    reader = exchange(OK[:-2], body_follows=True)
    assert reader.state is S.READING_BODY
    reader.sent()
    reader.feed(b"ok")
    assert reader.state is S.MUST_CLOSE and reader.take_body() == b"ok"
    assert not reader.reusable


def test_a_connection_that_carried_a_request_body_is_never_reused() -> None:
    reader = ResponseReader()
    reader.start(head_only=False, body_follows=False, has_body=True)  # a whole body, sent
    reader.feed(OK)
    assert reader.complete and reader.take_body() == b"ok"
    assert reader.state is S.MUST_CLOSE and not reader.reusable
    without = ResponseReader()
    without.start(head_only=False, body_follows=False)
    without.feed(OK)
    assert without.take_body() == b"ok" and without.reusable


def test_the_request_side_moves_from_sending_to_awaiting_the_head() -> None:
    reader = ResponseReader()
    reader.start(head_only=False, body_follows=True)
    assert reader.state is S.SENDING and not reader.request_sent and not reader.head_ready
    reader.sent()
    assert reader.state is S.AWAITING_HEAD and reader.request_sent
    reader.feed(OK[:20])
    assert reader.state is S.AWAITING_HEAD and reader.received_any


def test_a_body_to_eof_ends_there_and_is_never_reused() -> None:
    reader = exchange(b"HTTP/1.1 200 OK\r\n\r\nuntil the end")
    assert reader.state is S.READING_TO_EOF and not reader.complete
    reader.eof()
    assert reader.state is S.MUST_CLOSE and reader.error is None
    assert reader.take_body() == b"until the end" and not reader.reusable


def test_eof_before_the_end_of_a_framed_body_fails_after_what_arrived() -> None:
    reader = exchange(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab")
    reader.eof()
    assert reader.state is S.FAILED
    assert reader.take_body() == b"ab"
    with pytest.raises(UpstreamFailure) as caught:
        reader.take_body()
    assert caught.value.failure is errors.UPSTREAM_DISCONNECTED


def test_informational_answers_are_skipped() -> None:
    reader = exchange(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
    )
    assert reader.state is S.AWAITING_HEAD
    reader.feed(OK)
    assert reader.status == 200 and reader.headers == [(b"Content-Length", b"2")]
    assert reader.take_body() == b"ok" and reader.reusable


@pytest.mark.parametrize(
    ("reply", "state"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok", S.MUST_CLOSE),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", S.MUST_CLOSE),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok", S.DONE),
    ],
    ids=["connection-close", "http-1.0", "http-1.0-keep-alive"],
)
def test_keep_alive_must_be_allowed(reply: bytes, state: State) -> None:
    assert exchange(reply).state is state


def test_a_101_to_a_plain_request_is_whole_but_never_reused() -> None:
    reader = exchange(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: upgrade\r\n\r\n"
    )
    assert reader.state is S.MUST_CLOSE and reader.status == 101 and reader.error is None


@pytest.mark.parametrize(
    ("reply", "detail"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok", ""),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", "unsupported transfer coding"),
        (b"HTTP/1.1 200 OK\r\nX: " + b"a" * MAX_LINE + b"\r\n\r\n", "header line too long"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", ""),
        (b"NOT HTTP\r\n\r\n", ""),
    ],
    ids=["two-lengths", "gzip-coding", "long-header", "bad-chunk", "garbage"],
)
def test_malformed_answers_fail_as_bad_responses(reply: bytes, detail: str) -> None:
    reader = exchange(reply)
    assert reader.state is S.FAILED and not reader.reusable
    assert isinstance(reader.error, UpstreamFailure)
    assert reader.error.failure is errors.UPSTREAM_BAD_RESPONSE
    assert detail in str(reader.error)


def test_a_failure_after_a_whole_answer_keeps_the_answer_but_not_the_connection() -> None:
    reader = exchange(OK)
    reader.fail(UpstreamFailure(errors.UPSTREAM_TIMEOUT))
    assert reader.state is S.MUST_CLOSE and reader.error is None
    assert reader.take_body() == b"ok"
    unfinished = exchange(OK[:-1])
    unfinished.fail(UpstreamFailure(errors.UPSTREAM_TIMEOUT))
    assert unfinished.state is S.FAILED and unfinished.error is not None


def test_misuse_by_the_io_layer_raises() -> None:
    reader = exchange(OK[:10])
    with pytest.raises(LocalProtocolError):
        reader.start(head_only=False, body_follows=False)  # a second exchange at once
    idle = ResponseReader()
    with pytest.raises(LocalProtocolError):
        idle.release()  # nothing to release


# --- interim answers with framing (a 1xx never has a body) -------------------------------


@pytest.mark.parametrize(
    "interim",
    [
        b"HTTP/1.1 150 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(OK), OK),
        b"HTTP/1.1 199 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        b"HTTP/1.1 104 OK\r\nContent-Length: 3\r\n\r\nabc",
        b"HTTP/1.1 100 Continue\r\nContent-Length: 3\r\n\r\n",  # llhttp reads no body here
        b"HTTP/1.1 103 Early Hints\r\nTransfer-Encoding: chunked\r\n\r\n",
    ],
    ids=["150-cl-body", "199-chunked-body", "104-cl-body", "100-cl", "103-chunked"],
)
@pytest.mark.parametrize("split", [False, True], ids=["one-read", "byte-by-byte"])
def test_an_interim_answer_with_framing_is_a_bad_answer_never_a_local_error(
    interim: bytes, split: bool
) -> None:
    reader = ResponseReader()
    reader.start(head_only=False, body_follows=False)
    data = interim + OK
    for piece in [data[i : i + 1] for i in range(len(data))] if split else [data]:
        reader.feed(piece)  # never raises
    assert reader.state is S.FAILED and not reader.reusable
    assert isinstance(reader.error, UpstreamFailure)
    assert reader.error.failure is errors.UPSTREAM_BAD_RESPONSE
    assert reader.status == 0 and reader.body == []  # the 200 after it is never read


# --- trailers ----------------------------------------------------------------------------

CHUNKED_HEAD = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Up: 1\r\n\r\n"
TRAILERS = b"0;x=y\r\nTrailer-A: 1\r\nSet-Cookie: t=1\r\n\r\n"


@pytest.mark.parametrize("later", [False, True], ids=["same-read", "later-read"])
def test_trailer_fields_are_dropped_never_merged_into_the_headers(later: bool) -> None:
    reader = ResponseReader()
    reader.start(head_only=False, body_follows=False)
    parts = (
        [CHUNKED_HEAD + b"2\r\nok\r\n", TRAILERS]
        if later
        else [CHUNKED_HEAD + b"2\r\nok\r\n" + TRAILERS]
    )
    headers = reader.headers
    for part in parts:
        reader.feed(part)
    assert reader.headers is headers  # the list the caller relays
    assert headers == [(b"Transfer-Encoding", b"chunked"), (b"X-Up", b"1")]
    assert reader.state is S.DONE and reader.take_body() == b"ok" and reader.reusable


def test_a_trailer_section_is_bounded_like_a_head() -> None:
    line = b"T: " + b"a" * 1000 + b"\r\n"
    within = exchange(CHUNKED_HEAD + b"2\r\nok\r\n0\r\n" + line * 60 + b"\r\n")
    assert within.state is S.DONE and within.take_body() == b"ok"
    over = exchange(CHUNKED_HEAD + b"2\r\nok\r\n0\r\n" + line * 70 + b"\r\n")
    assert over.state is S.FAILED and not over.reusable
    assert over.take_body() == b"ok"
    with pytest.raises(UpstreamFailure, match="trailer section too large"):
        over.take_body()
    long_line = exchange(CHUNKED_HEAD + b"0\r\nT: " + b"a" * MAX_LINE + b"\r\n\r\n")
    assert long_line.state is S.FAILED


# --- any bytes: never an exception, never reusable after garbage --------------------------

VALID = [
    OK,
    b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    CHUNKED_HEAD + b"2\r\nok\r\n" + TRAILERS,
    b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3;e\r\nabc\r\n0\r\n\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" + OK,
    b"HTTP/1.1 204 No Content\r\n\r\n",
    b"HTTP/1.1 304 Not Modified\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n",
    b"HTTP/1.1 200 OK\r\n\r\nto the end",
    b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok",
    b"HTTP/1.1 150 OK\r\nContent-Length: 2\r\n\r\nok" + OK,
]
PIECES = [
    b"\r\n", b"\n", b"\r", b"\x00", b" ", b":", b";", b"0", b"9", b"ffffffffffffffff",
    b"HTTP/1.1 ", b"200", b"Content-Length: ", b"Transfer-Encoding: chunked\r\n", b"\r\n\r\n",
    b"\xff", b"\t", b"HTTP/1.1 204 No Content\r\n\r\n", OK,
]  # fmt: skip


def _mutate(rng: random.Random, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        where = rng.randrange(len(out) + 1)
        action = rng.randrange(4)
        if action == 0 and out:
            del out[where : where + rng.randint(1, 8)]
        elif action == 1 and where < len(out):
            out[where] = rng.randrange(256)
        elif action == 2:
            out[where:where] = rng.choice(PIECES)
        else:
            out += rng.choice(VALID)[: rng.randint(0, 60)]
    return bytes(out)


def _splits(rng: random.Random, data: bytes) -> list[bytes]:
    cuts = sorted(rng.sample(range(1, len(data)), min(len(data) - 1, rng.randint(0, 6))))
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]


def _run(data: list[bytes], head_only: bool, then_eof: bool) -> ResponseReader:
    reader = ResponseReader()
    reader.start(head_only, body_follows=False)
    for piece in data:
        reader.feed(piece)
        if reader.body:
            reader.take_body()  # as the relay does
    if then_eof:
        reader.eof()
    return reader


@pytest.mark.parametrize("seed", range(8))
def test_any_bytes_from_the_upstream_end_in_a_state_never_in_an_exception(seed: int) -> None:
    """Garbled answers, random bytes and random read boundaries: `feed` and `eof` never
    raise, a failure is always an UpstreamFailure, and the connection is reusable only when
    the bytes were exactly one framed answer: one byte less leaves it unfinished, one more
    closes it, and without keep-alive, a framed body or a final status it never is."""
    rng = random.Random(seed)
    for _ in range(1500):
        if rng.random() < 0.15:
            data = bytes(rng.randrange(256) for _ in range(rng.randint(1, 200)))
        else:
            data = _mutate(rng, rng.choice(VALID))
        if not data:
            continue
        head_only = rng.random() < 0.15
        reader = _run(_splits(rng, data), head_only, then_eof=rng.random() < 0.3)
        assert reader.state in State
        if reader.state is S.FAILED:
            assert isinstance(reader.error, UpstreamFailure), (data, reader.error)
        if not reader.reusable:
            continue
        assert reader.state is S.DONE and not head_only, data
        assert not 100 <= reader.status < 200, data  # 1xx never ends an answer
        assert reader.status not in (101, 204, 304), data
        assert reader.content_length is not None or reader.chunked, data
        # The answer ended exactly at the last byte, or before bare CR and LF (see below).
        end = len(data)
        while (
            data[end - 1 : end] in (b"\r", b"\n")
            and _run([data[: end - 1]], head_only, False).complete
        ):
            end -= 1
        assert not _run([data[: end - 1]], head_only, then_eof=False).complete, data
        # One byte more closes it; llhttp skips bare CR and LF between messages (RFC 9112
        # 2.2), which is harmless: they are consumed, nothing of them is left for a next answer.
        extra = rng.choice([p for p in PIECES if p.strip(b"\r\n")])
        longer = _run([data + extra], head_only, then_eof=False)
        assert not longer.reusable, data
    # The same bytes in one read or many end in the same state, with the same body.
    for _ in range(300):
        data = _mutate(rng, rng.choice(VALID))
        if len(data) < 2:
            continue
        whole, pieces = ResponseReader(), ResponseReader()
        for reader, parts in ((whole, [data]), (pieces, _splits(rng, data))):
            reader.start(head_only=False, body_follows=False)
            for part in parts:
                reader.feed(part)
        assert whole.state is pieces.state, data
        assert b"".join(whole.body) == b"".join(pieces.body), data


def _observed(reader: ResponseReader) -> tuple[object, ...]:
    body = reader.take_body() if reader.body else b""
    return (reader.state, reader.status, reader.reason, reader.headers, body, reader.reusable)


@pytest.mark.parametrize("seed", range(4))
def test_a_reused_connection_reads_each_answer_as_a_fresh_one_would(seed: int) -> None:
    """One llhttp parser serves a connection for as long as it is reused: over random
    sequences of answers, every answer reads exactly as it does on a new connection (the
    oracle), and the connection is reused only while the fresh reader says it may be."""
    rng = random.Random(seed)
    for _ in range(300):
        kept = ResponseReader()
        for _ in range(rng.randint(1, 6)):
            data = rng.choice(VALID) if rng.random() < 0.8 else _mutate(rng, rng.choice(VALID))
            head_only = rng.random() < 0.1
            fresh = ResponseReader()
            fresh.start(head_only, body_follows=False)
            kept.start(head_only, body_follows=False)
            for piece in _splits(rng, data) if len(data) > 1 else [data]:
                fresh.feed(piece)
                kept.feed(piece)
            assert _observed(kept) == _observed(fresh), data
            if not kept.release():
                break
