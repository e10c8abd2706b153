"""The upstream connection's state machine, without sockets: the transition table, and the
one reuse question (`ResponseReader.reusable`) for every way an exchange can end."""

from __future__ import annotations

import pytest

from corsproxy import forwarding as fw
from corsproxy.h1response import (
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
    assert into_done == {
        (S.SENDING, E.HEAD_BODILESS),
        (S.AWAITING_HEAD, E.HEAD_BODILESS),
        (S.READING_BODY, E.END),
        (S.DONE, E.SENT),
    }


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
    ("head_only", "reply", "state"),
    [
        (True, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", S.DONE),
        (True, b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n", S.MUST_CLOSE),
        (True, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", S.MUST_CLOSE),
        (True, b"HTTP/1.1 200 OK\r\n\r\n", S.MUST_CLOSE),  # llhttp: it would end at EOF
        (False, b"HTTP/1.1 204 No Content\r\n\r\n", S.DONE),
        (False, b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n", S.DONE),
        (False, b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n", S.MUST_CLOSE),
        (False, b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n", S.MUST_CLOSE),
        (False, b"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n", S.MUST_CLOSE),
        (False, b"HTTP/1.1 304 Not Modified\r\n\r\n", S.DONE),
        (True, b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n", S.MUST_CLOSE),
    ],
    ids=[
        "head-cl0", "head-cl1000", "head-chunked", "head-unframed", "204", "204-cl0",
        "204-cl5", "304-cl5", "304-chunked", "304", "head-204-cl5",
    ],
)  # fmt: skip
def test_bodiless_answers_are_reusable_only_when_they_announced_no_body(
    head_only: bool, reply: bytes, state: State
) -> None:
    reader = exchange(reply, head_only=head_only)
    assert reader.state is state
    assert reader.error is None and reader.complete
    assert reader.take_body() == b""
    assert reader.reusable is (state is S.DONE)


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


def test_an_early_head_whose_body_ends_after_the_request_was_sent_is_reusable() -> None:
    reader = exchange(OK[:-2], body_follows=True)
    assert reader.state is S.READING_BODY
    reader.sent()
    reader.feed(b"ok")
    assert reader.state is S.DONE and reader.take_body() == b"ok" and reader.reusable


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
    assert caught.value.failure is fw.UPSTREAM_DISCONNECTED


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
        (b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n", S.MUST_CLOSE),
    ],
    ids=["connection-close", "http-1.0", "http-1.0-keep-alive", "204-close"],
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
    assert reader.error.failure is fw.UPSTREAM_BAD_RESPONSE
    assert detail in str(reader.error)


def test_a_failure_after_a_whole_answer_keeps_the_answer_but_not_the_connection() -> None:
    reader = exchange(OK)
    reader.fail(UpstreamFailure(fw.UPSTREAM_TIMEOUT))
    assert reader.state is S.MUST_CLOSE and reader.error is None
    assert reader.take_body() == b"ok"
    unfinished = exchange(OK[:-1])
    unfinished.fail(UpstreamFailure(fw.UPSTREAM_TIMEOUT))
    assert unfinished.state is S.FAILED and unfinished.error is not None


def test_misuse_by_the_io_layer_raises() -> None:
    reader = exchange(OK[:10])
    with pytest.raises(LocalProtocolError):
        reader.start(head_only=False, body_follows=False)  # a second exchange at once
    idle = ResponseReader()
    with pytest.raises(LocalProtocolError):
        idle.release()  # nothing to release
