"""Pure header hygiene for forwarding, table by table."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from corsproxy.http import headers as hygiene

PEER = hygiene.Forwarding(
    peer="192.0.2.7", scheme="http", host="proxy.example", preserve_host=False
)


def names(headers: list[tuple[str, str]]) -> list[str]:
    return [n.lower() for n, _ in headers]


@pytest.mark.parametrize(
    ("inbound", "dropped"),
    [
        ([("Connection", "close"), ("Keep-Alive", "5"), ("Proxy-Connection", "x")], 3),
        ([("Connection", "X-A, X-B"), ("X-A", "1"), ("X-B", "2"), ("X-C", "3")], 3),
        ([("Connection", "Origin, Cookie, Authorization, Content-Length, Host")], 1),
        ([("TE", "trailers"), ("Trailer", "X"), ("Expect", "100-continue"), ("Upgrade", "h2c")], 4),
        (
            [
                ("HTTP2-Settings", "x"),
                ("Proxy-Authorization", "x"),
                ("Transfer-Encoding", "chunked"),
            ],
            3,
        ),
        ([("X_Forwarded_For", "6.6.6.6"), ("Content_Length", "1")], 2),
    ],
)
def test_request_headers_drop(inbound: list[tuple[str, str]], dropped: int) -> None:
    out = hygiene.upstream_request_headers(inbound, PEER)
    kept = [
        h for h in out if h[0] not in ("X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host")
    ]
    assert len(inbound) - len(kept) == dropped


def test_protected_headers_survive_connection() -> None:
    inbound = [
        ("Connection", "origin, cookie, x-forwarded-for"),
        ("Origin", "https://a.example"),
        ("Cookie", "a=1"),
        ("X-Forwarded-For", "203.0.113.1"),
    ]
    out = hygiene.upstream_request_headers(inbound, PEER)
    assert ("Origin", "https://a.example") in out and ("Cookie", "a=1") in out
    assert ("X-Forwarded-For", "203.0.113.1, 192.0.2.7") in out


def test_forwarding_headers_are_the_proxys_own_and_last() -> None:
    inbound = [
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-Host", "evil.example"),
        ("Host", "proxy.example"),
        ("X-Forwarded-For", "1.1.1.1"),
        ("X-Forwarded-For", "2.2.2.2"),
        ("Accept", "*/*"),
    ]
    out = hygiene.upstream_request_headers(inbound, PEER)
    assert out == [
        ("Accept", "*/*"),
        ("X-Forwarded-For", "1.1.1.1, 2.2.2.2, 192.0.2.7"),
        ("X-Forwarded-Proto", "http"),
        ("X-Forwarded-Host", "proxy.example"),
    ]
    keep = hygiene.Forwarding(peer=None, scheme="https", host="api.example", preserve_host=True)
    assert ("Host", "api.example") in hygiene.upstream_request_headers(
        [("Host", "api.example")], keep
    )


@pytest.mark.parametrize(
    ("raw", "expected", "invalid"),
    [
        (
            [(b"Set-Cookie", b"a=1"), (b"Set-Cookie", b"b=2")],
            [("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")],
            0,
        ),
        (
            [(b"Connection", b"X-Up"), (b"X-Up", b"v"), (b"Keep-Alive", b"1"), (b"Trailers", b"t")],
            [("Trailers", "t")],
            0,
        ),
        (
            [
                (b"Alt-Svc", b'h3=":443"'),
                (b"Transfer-Encoding", b"chunked"),
                (b"Content-Length", b"3"),
            ],
            [],
            0,
        ),
        (
            [
                (b"X-Bad", b"a\x01b"),
                (b"Content-Length ", b"2"),
                (b"X(Y)", b"1"),
                (b"X-Ok", b"caf\xe9"),
            ],
            [("X-Ok", "caf\xe9")],
            3,
        ),
        ([(b"Proxy-Authenticate", b"Basic"), (b"Upgrade", b"foo")], [], 0),
    ],
)
def test_response_headers(
    raw: list[tuple[bytes, bytes]], expected: list[tuple[str, str]], invalid: int
) -> None:
    assert hygiene.relayable_response_headers(raw) == (expected, invalid)


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("OK", "OK"),
        ("Not Found", "Not Found"),
        ("A\rB", None),
        ("A\x01", None),
        ("", None),
        (None, None),
    ],
)
def test_clean_reason(reason: str | None, expected: str | None) -> None:
    assert hygiene.clean_reason(reason) == expected


@pytest.mark.parametrize(
    ("method", "headers", "upgrade"),
    [
        ("GET", [("Connection", "keep-alive, Upgrade"), ("Upgrade", "websocket")], True),
        ("GET", [("Connection", "upgrade"), ("Upgrade", "WebSocket")], True),
        ("GET", [("Upgrade", "websocket")], False),
        ("POST", [("Connection", "upgrade"), ("Upgrade", "websocket")], False),
        ("GET", [("Connection", "upgrade"), ("Upgrade", "h2c")], False),
    ],
)
def test_websocket_upgrade_detection(
    method: str, headers: list[tuple[str, str]], upgrade: bool
) -> None:
    assert hygiene.is_websocket_upgrade(method, headers) is upgrade


_HEADER_BYTES = st.binary(max_size=12) | st.sampled_from(
    [b"X-Ok", b"Vary", b"Set-Cookie", b"Connection", b"", b"a\nb", b"v\r", b"\x7f", b"caf\xe9"]
)


@settings(max_examples=500, deadline=None)
@given(raw=st.lists(st.tuples(_HEADER_BYTES, _HEADER_BYTES), max_size=6))
def test_response_header_checks_agree_with_one_header_at_a_time(
    raw: list[tuple[bytes, bytes]],
) -> None:
    # The fast path scans all names and values at once; each pair alone takes the slow one.
    kept, invalid = hygiene.relayable_response_headers(raw)
    singly = [hygiene.relayable_response_headers([pair]) for pair in raw]
    if not any(n.lower() == b"connection" for n, _ in raw):
        assert kept == [h for out, _ in singly for h in out]
        assert invalid == sum(bad for _, bad in singly)
