"""The state of one HTTP/1.1 upstream connection, without I/O (in the style of h11).

`ResponseReader` is fed what happens on the connection (the request went out, bytes came in,
EOF, a local failure) and keeps the connection in one named `State`. Every change goes
through `TRANSITIONS`, an explicit table of (state, event) -> state; a pair missing from it is
a bug in the caller and raises `LocalProtocolError`. Peer input never raises: whatever the
upstream sends maps to an event in the table. The asyncio protocol above it (upstream.py)
does the I/O and asks one question, `reusable`, before a connection goes back to the pool.

The reuse rule (the invariant: each request gets the answer the upstream produced for it, or
an error, never bytes of another exchange). A connection goes back to the pool only when:
- its answer ended exactly at a message boundary of its own framing: llhttp's message end for
  a body framed by Content-Length or chunked, read to its end. An answer whose end is given by
  the request method or the status instead (HEAD, 204, 304) never is, whatever it announced:
  that is where upstream apps write stray bodies (`do_HEAD = do_GET`, a handler that writes a
  body after its 204 in a second write), and nothing tells their bytes from the next answer's.
  Those answers are whole at their head and the connection closes after them;
- both sides allow keep-alive (HTTP/1.1 without `Connection: close`, or 1.0 with
  keep-alive; llhttp's verdict);
- the request carried no body: whether the upstream read a body cannot be seen, and one
  that answers without reading it takes the body's bytes for the next request (a CL.0
  desync: an attacker's body becomes a request whose answer the next client gets);
- no byte followed the answer in the same read, none arrived before the caller released it,
  and the caller read the whole body;
- nothing failed.
Anything else is MUST_CLOSE (the answer is whole, the connection is not) or FAILED. Bytes on
an idle connection move it to MUST_CLOSE too; the pool also asks the kernel for unread bytes
(FIONREAD) before it hands an idle connection out.

The residual window, honestly: bytes an upstream sends after a complete answer and that arrive
after the next request was written on the connection cannot be told from that request's
answer; HTTP/1.1 has no request ids. Go's and nginx's pools share it. What this module
guarantees is that nothing that arrived before is ever handed to a later exchange.

A large body framed by Content-Length is counted, not parsed: once llhttp has read the head
(and whatever of the body came with it), the rest of the body is exactly the next
`content_length - received` bytes, and llhttp would only count them too, copying each into a
new bytes object for `on_body`. `_counted` counts them and keeps the bytes objects the
transport delivered (a 1 MiB answer costs no copy here); the message ends where llhttp's would,
and the keep-alive verdict is llhttp's, taken at the head. Bytes after the body's end are
surplus (MUST_CLOSE), but for blank lines (CR, LF) that came with the end, which llhttp skips.
The parser is then mid-body, so the next answer on the connection gets a new one.
tests/test_streaming.py checks it against llhttp on generated bodies and splits.

Trailer fields of a chunked body are bounded like a head and dropped: never relayed, and never
merged into the header section (RFC 9110 6.5). An interim (1xx) answer with framing headers is
a bad answer: llhttp would read a body for some of them.
"""

from __future__ import annotations

import enum
from typing import Final

import httptools

from corsproxy.http import errors
from corsproxy.http.errors import UpstreamFailure

MAX_LINE = 8190  # status line, and each header line (aiohttp's and nginx's limit)
MAX_HEAD = 64 * 1024  # a whole response head
# A Content-Length body with more than this still to come once its head is parsed is counted
# here rather than fed to llhttp (see `ResponseReader._counted`).
COUNT_FROM = 64 * 1024


class LocalProtocolError(RuntimeError):
    """An event the table has no transition for: a bug in the code that drives the reader."""


# IntEnums: their hash is int's, not a Python-level method (3.11), and they index lists.
# Values start at 1, so no state or event is falsy.
class State(enum.IntEnum):
    IDLE = 1  # no exchange; nothing may arrive
    SENDING = 2  # request head out, body still being sent, no answer yet
    AWAITING_HEAD = 3  # request sent, final answer's head not complete yet
    READING_BODY = 4  # a framed body (Content-Length or chunked)
    READING_TO_EOF = 5  # a body without length: it ends with the connection
    DONE = 6  # the answer ended at a message boundary: the only reusable state
    MUST_CLOSE = 7  # the answer is whole, the connection carries nothing more
    FAILED = 8  # the exchange failed; `error` says how
    CLOSED = 9


class Event(enum.IntEnum):
    SEND = 1  # the request head was written
    SENT = 2  # the request (head and body) is fully written
    HEAD = 3  # final answer head; a framed body follows
    HEAD_TO_EOF = 4  # final answer head; the body ends at EOF
    HEAD_CLOSES = 5  # a HEAD, 204 or 304 answer (whole at its head), or a 101
    END = 6  # llhttp's message end of a framed body
    NO_REUSE = 7  # the answer ended, but keep-alive is off or the request was not sent
    SURPLUS = 8  # bytes that belong to no exchange
    EOF = 9  # the peer closed
    ERROR = 10  # bad bytes, a timeout, the request body failed
    RELEASE = 11  # the caller is done; only from DONE
    CLOSE = 12  # we close the connection


S, E = State, Event
_WAITING = (S.SENDING, S.AWAITING_HEAD)
_AFTER_HEAD = (S.READING_BODY, S.READING_TO_EOF, S.DONE, S.MUST_CLOSE, S.FAILED, S.CLOSED)

TRANSITIONS: Final[dict[tuple[State, Event], State]] = {
    (S.IDLE, E.SEND): S.SENDING,
    (S.IDLE, E.SURPLUS): S.MUST_CLOSE,  # bytes on an idle connection
    (S.IDLE, E.EOF): S.MUST_CLOSE,
    (S.IDLE, E.ERROR): S.MUST_CLOSE,
    (S.SENDING, E.SENT): S.AWAITING_HEAD,
    **{(s, E.SENT): s for s in _AFTER_HEAD},  # an early answer; the body went out after it
    **{(s, E.HEAD): S.READING_BODY for s in _WAITING},
    **{(s, E.HEAD_TO_EOF): S.READING_TO_EOF for s in _WAITING},
    **{(s, E.HEAD_CLOSES): S.MUST_CLOSE for s in _WAITING},
    **{(s, E.EOF): S.FAILED for s in (*_WAITING, S.READING_BODY)},
    **{(s, E.ERROR): S.FAILED for s in (*_WAITING, S.READING_BODY, S.READING_TO_EOF)},
    (S.READING_BODY, E.END): S.DONE,
    (S.READING_TO_EOF, E.EOF): S.MUST_CLOSE,  # EOF ends this body; never reused
    (S.DONE, E.NO_REUSE): S.MUST_CLOSE,
    (S.DONE, E.SURPLUS): S.MUST_CLOSE,
    (S.DONE, E.EOF): S.MUST_CLOSE,
    (S.DONE, E.ERROR): S.MUST_CLOSE,  # the caller keeps its whole answer
    (S.DONE, E.RELEASE): S.IDLE,
    **{(S.MUST_CLOSE, e): S.MUST_CLOSE for e in (E.SURPLUS, E.EOF, E.ERROR)},
    **{(S.FAILED, e): S.FAILED for e in (E.SURPLUS, E.EOF, E.ERROR)},
    **{(S.CLOSED, e): S.CLOSED for e in (E.SURPLUS, E.EOF, E.ERROR)},
    **{(s, E.CLOSE): S.CLOSED for s in State},
}
# The same table as a list of lists: a lookup per event without building a key tuple.
_NEXT: Final[list[list[State | None]]] = [[None] * (len(Event) + 1) for _ in range(len(State) + 1)]
for (_state, _event), _target in TRANSITIONS.items():
    _NEXT[_state][_event] = _target

_ANSWER_WHOLE = frozenset({S.DONE, S.MUST_CLOSE})
_BODILESS_STATUSES = frozenset({204, 304})
_FRAMING = frozenset({b"content-length", b"transfer-encoding"})


class _Surplus(Exception):
    """Raised inside a parser callback to stop llhttp at bytes that belong to no answer."""


class ResponseReader:
    """One connection's exchange state, and llhttp fed through it (one parser per answer).

    Drive it with `start`, `sent`, `feed`, `eof`, `fail`, `release` and `close`; read the
    answer's head from `status`, `reason`, `headers`, `content_length`, `chunked` once
    `head_ready`, and its body with `take_body`.
    """

    __slots__ = (
        "_had_body",
        "_head_only",
        "_head_size",
        "_informational",
        "_keep_alive",
        "_parser",
        "_remaining",
        "_trailer_size",
        "body",
        "body_received",
        "buffered",
        "chunked",
        "content_length",
        "error",
        "headers",
        "reason",
        "received_any",
        "request_sent",
        "state",
        "status",
    )

    def __init__(self) -> None:
        self.state = State.IDLE
        self.error: BaseException | None = None
        self._parser: httptools.HttpResponseParser | None = None
        self._reset(head_only=False)

    def _reset(self, head_only: bool) -> None:
        self._head_only = head_only
        self._had_body = False
        self._informational = False
        self._head_size = 0
        self._trailer_size = 0
        self.request_sent = False
        self.received_any = False
        self.status = 0
        self.reason = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.content_length: int | None = None
        self.chunked = False
        self.body: list[bytes] = []
        self.buffered = 0
        self.body_received = 0  # body bytes of this answer so far
        self._remaining = 0  # > 0: the body's rest is counted here, not parsed (_counted)
        self._keep_alive = False

    def _to(self, event: Event) -> None:
        target = _NEXT[self.state][event]
        if target is None:
            raise LocalProtocolError(f"no transition for {event.name} in {self.state.name}")
        self.state = target

    # --- the one reuse question --------------------------------------------------------

    @property
    def reusable(self) -> bool:
        """May this connection carry another exchange? At the end of one, only after an
        answer that ended cleanly and was read to its last byte; in the pool, only while
        nothing arrived on it."""
        state = self.state
        return state is State.IDLE or (state is State.DONE and not self.body)

    @property
    def head_ready(self) -> bool:
        return self.state not in _WAITING

    @property
    def complete(self) -> bool:
        """The answer is whole (its body may still wait in `body`)."""
        return self.state in _ANSWER_WHOLE

    # --- driven by the I/O layer --------------------------------------------------------

    def start(self, head_only: bool, body_follows: bool, has_body: bool = False) -> None:
        """The request head was written; `body_follows` when the body is still to be sent,
        `has_body` when the request carries one at all."""
        self._to(Event.SEND)
        self._reset(head_only)
        self._had_body = has_body or body_follows
        self.error = None
        if self._parser is None:
            # One parser per connection: a reused connection is, by the reuse rule, at a
            # message boundary of llhttp's own framing, where its parser starts the next
            # answer exactly as a new one would (and costs nothing to build).
            self._parser = httptools.HttpResponseParser(self)
        if not body_follows:
            self.request_sent = True
            self._to(Event.SENT)

    def sent(self) -> None:
        self.request_sent = True
        self._to(Event.SENT)

    def unread(self, nbytes: int) -> None:
        """The kernel holds `nbytes` not yet delivered: on an idle connection, surplus."""
        if nbytes:
            self._to(Event.SURPLUS)

    def feed(self, data: bytes) -> None:
        """Bytes from the upstream. Never raises: bad bytes move the state to FAILED."""
        if self._remaining:
            self._counted(data)
            return
        state = self.state
        if state is State.FAILED or state is State.CLOSED:
            return
        parser = self._parser
        if state is State.IDLE or state in _ANSWER_WHOLE or parser is None:
            self._to(Event.SURPLUS)
            return
        self.received_any = True
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            pass  # only after a 101, which on_headers_complete already ended
        except httptools.HttpParserError as exc:
            # httptools wraps what a callback raised; the callback's own exception is the context.
            cause = exc.__context__
            if isinstance(cause, _Surplus):
                return
            if isinstance(cause, LocalProtocolError):
                raise cause from None
            if isinstance(cause, UpstreamFailure):
                self.fail(cause)
            else:
                self.fail(UpstreamFailure(errors.UPSTREAM_BAD_RESPONSE, str(exc)))
            return
        if self.state is State.READING_BODY and not self.chunked and self.content_length:
            left = self.content_length - self.body_received
            if left > COUNT_FROM:  # the rest is counted, not parsed (the module's docstring)
                self._remaining = left
                self._keep_alive = parser.should_keep_alive()

    def _counted(self, data: bytes) -> None:
        """The next bytes of a Content-Length body whose rest is `_remaining` bytes long."""
        size = len(data)
        left = self._remaining
        self.received_any = True
        if size < left:
            self._remaining = left - size
            self.body.append(data)
            self.buffered += size
            self.body_received += size
            return
        self._remaining = 0
        self._parser = None  # mid-body in llhttp: the next answer gets a new parser
        self.body.append(data if size == left else data[:left])
        self.buffered += left
        self.body_received += left
        self._to(Event.END)
        self._ended(self._keep_alive)
        # Bytes after the answer's end belong to no exchange, but for blank lines arriving
        # with it: llhttp skips CR and LF before a message, and so does this (the connection
        # stays reusable, as it did when llhttp read the whole body).
        if size > left and data[left:].strip(b"\r\n"):
            self._to(Event.SURPLUS)

    def eof(self, exc: BaseException | None = None) -> None:
        """The connection is gone. A body without length ends here; anything unfinished fails."""
        if self.state in (State.SENDING, State.AWAITING_HEAD, State.READING_BODY):
            detail = f"connection closed: {exc!r}" if exc else "connection closed"
            self.error = UpstreamFailure(errors.UPSTREAM_DISCONNECTED, detail)
            self.error.__cause__ = exc  # the access log names it (http/error_words.py)
        self._to(Event.EOF)

    def fail(self, error: BaseException) -> None:
        """A failure: the exchange's, unless its answer was already whole."""
        if self.state not in _ANSWER_WHOLE and self.error is None:
            self.error = error
        self._to(Event.ERROR)

    def release(self) -> bool:
        """End the exchange: True when the connection may go back to the pool (it is IDLE),
        else it is CLOSED and must be closed by the caller."""
        if self.reusable:
            self._to(Event.RELEASE)
            return True
        self.close()
        return False

    def close(self) -> None:
        self._to(Event.CLOSE)
        self._parser = None
        self._remaining = 0
        self.body = []
        self.buffered = 0

    def take_parts(self) -> list[bytes]:
        """What arrived of the body since the last call, as it arrived (no join); raises
        when the exchange failed and nothing is left."""
        body = self.body
        if not body:
            if self.error is not None:
                raise self.error
            return body
        self.body = []
        self.buffered = 0
        return body

    def take_body(self) -> bytes:
        """What arrived of the body since the last call; raises when the exchange failed."""
        body = self.body
        if not body:
            if self.error is not None:
                raise self.error
            return b""
        chunk = body[0] if len(body) == 1 else b"".join(body)
        body.clear()
        self.buffered = 0
        return chunk

    # --- llhttp callbacks --------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.state is not State.SENDING and self.state is not State.AWAITING_HEAD:
            self._to(Event.SURPLUS)  # a second answer to one request
            raise _Surplus

    def on_status(self, reason: bytes) -> None:
        self._count(len(reason))
        self.reason += reason
        if len(self.reason) > MAX_LINE:
            raise UpstreamFailure(errors.UPSTREAM_BAD_RESPONSE, "status line too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        # The hot path (about ten calls per answer) tests once; `status` is set only when
        # the final head is complete, so a field after it is a trailer.
        size = len(name) + len(value)
        head_size = self._head_size + size + 4
        if size > MAX_LINE or head_size > MAX_HEAD or self.status:
            self._unusual_field(size)
            return
        self._head_size = head_size
        self.headers.append((name, value))

    def _unusual_field(self, size: int) -> None:
        if size > MAX_LINE:
            raise UpstreamFailure(errors.UPSTREAM_BAD_RESPONSE, "header line too long")
        if not self.status:
            raise UpstreamFailure(errors.UPSTREAM_BAD_RESPONSE, "response head too large")
        # After the head, llhttp reports a chunked body's trailer fields here. They are not
        # relayed (RFC 9110 6.5: never merged into the header section the caller reads),
        # only bounded like a head.
        self._trailer_size += size + 4
        if self._trailer_size > MAX_HEAD:
            raise UpstreamFailure(errors.UPSTREAM_BAD_RESPONSE, "trailer section too large")

    def on_headers_complete(self) -> None:
        parser = self._parser
        assert parser is not None
        status = parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            # 100 Continue, 103 Early Hints: not relayed; the final answer follows. An interim
            # answer has no body (RFC 9110 15.2), but llhttp reads one after 104-199 when
            # framing says so: framing on any 1xx is a bad answer, not something to skip.
            if any(name.lower() in _FRAMING for name, _ in self.headers):
                raise UpstreamFailure(errors.UPSTREAM_BAD_RESPONSE, f"framing on a {status} answer")
            self._informational = True
            self.reason, self.headers = b"", []
            return
        length: int | None = None
        chunked = False
        for name, value in self.headers:
            size = len(name)  # compared first: lower() for two names, not for every one
            if size == 14 and name.lower() == b"content-length":
                length = int(value)  # llhttp has checked it is one valid number
            elif size == 17 and name.lower() == b"transfer-encoding":
                # Any coding but chunked (gzip, or an unknown one) would have to be passed
                # on as a hop-by-hop header or decoded here: refuse, as nginx does.
                if value.strip().lower() != b"chunked":
                    raise UpstreamFailure(
                        errors.UPSTREAM_BAD_RESPONSE, "unsupported transfer coding"
                    )
                chunked = True
        self.status = status
        self.content_length = length
        self.chunked = chunked
        if status == 101:
            # Only an answer to an Upgrade request may switch protocols; the caller refuses
            # the 101 it got, and the connection is not reusable.
            self._to(Event.HEAD_CLOSES)
        elif self._head_only or status in _BODILESS_STATUSES:
            # Whole at its head, and never reused: whatever its head announced, bytes may
            # follow it (a body written anyway, at once or later) and none is an answer.
            self._to(Event.HEAD_CLOSES)
        elif length is None and not chunked:
            self._to(Event.HEAD_TO_EOF)
        else:
            self._to(Event.HEAD)

    def on_body(self, body: bytes) -> None:
        state = self.state
        if state is not State.READING_BODY and state is not State.READING_TO_EOF:
            if state is State.SENDING or state is State.AWAITING_HEAD:
                # A body before any final head (of an interim answer): framing checks in
                # on_headers_complete keep llhttp from reading one; never a local error.
                raise UpstreamFailure(errors.UPSTREAM_BAD_RESPONSE, "a body on an interim answer")
            self._to(Event.SURPLUS)  # a body after an answer that has none
            raise _Surplus
        self.body.append(body)
        size = len(body)
        self.buffered += size
        self.body_received += size

    def on_message_complete(self) -> None:
        if self._informational:
            self._informational = False
            return
        if self.state is State.READING_BODY:
            self._to(Event.END)
            assert self._parser is not None
            self._ended(self._parser.should_keep_alive())
        # Else a bodiless answer, already ended at its head.

    def _ended(self, keep_alive: bool) -> None:
        """The answer ended at a message boundary; is the connection still clean?"""
        # After a request with a body the connection is never reused: whether the upstream
        # read that body cannot be seen from here, and one that answers without reading it
        # (a handler that ignores POST bodies) would take the body's bytes as the next
        # request, so the next client would get the answer to a request an attacker wrote
        # (a CL.0 desync).
        if self._had_body or not (self.request_sent and keep_alive):
            self._to(Event.NO_REUSE)

    def _count(self, size: int) -> None:
        self._head_size += size
        if self._head_size > MAX_HEAD:
            raise UpstreamFailure(errors.UPSTREAM_BAD_RESPONSE, "response head too large")
