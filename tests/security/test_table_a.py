"""Table A of security-anchors.md (CORS adversarial cases), black-box against a running
proxy with raw sockets. Each test is named after its row; rows where corsproxy chose
otherwise on purpose say so and assert what it does instead.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.net import Sentinel
from tests.security.harness import (
    APP,
    assert_allowed,
    assert_no_cors,
    assert_refused_preflight,
    probe,
)

SCANNER_CHARS = [
    "_", "-", '"', "{", "}", "+", "^", "%60", "!", "~", "`", ";", "|", "&", "'", "(", ")",
    "*", ",", "$", "=", "+", "%0b",
]  # fmt: skip
THIRD_PARTIES = [
    "https://whatever.github.io", "http://jsbin.com", "https://codepen.io",
    "https://jsfiddle.net", "http://www.webdevout.net", "https://repl.it",
]  # fmt: skip

# Origins P1 (only https://app.example.com, with credentials) must answer without CORS.
NOT_ALLOWED = [
    ("A2", "https://evil.example"),
    ("A3", "https://example.com"),
    ("A4", "https://app.example.com.evil.com"),
    ("A5", "https://d3vapp.example.com"),
    ("A5", "https://evilexample.com"),
    ("A5", "https://evilapp.example.com"),
    ("A6", "https://xample.com"),
    ("A6", "https://pp.example.com"),
    ("A7", "https://appxexample.com"),
    ("A7", "https://app.exampleacom"),
    ("A8", "https://app.example.com_.evil.com"),
    ("A9", "https://app.example.com%60.evil.com"),
    *[("A10", f"https://app.example.com{c}.evil.com") for c in SCANNER_CHARS],
    ("A11", "https://evil.app.example.com"),
    ("A12", "http://app.example.com"),
    *[("A13", origin) for origin in THIRD_PARTIES],
    ("A14", "null"),
    ("A15", "NULL"),
    ("A15", "Null"),
    ("A17", "https://app.example.com:8443"),
    ("A19", "https://app.example.com/"),
    ("A19", "https://app.example.com/x?y"),
    ("A20", "https://app.example.com."),
    ("A21", "https://app.example.com@evil.com"),
    ("A21", "https://evil.com#@app.example.com"),
    ("A22", "https://app.example.com, https://evil.com"),
    ("A24", ""),
    ("A29", "https://" + "a" * 7990 + ".com"),
    ("A32", "https://app.example.com:"),
    ("A32", "https://app.example.com:0"),
    ("A32", "https://app.example.com:65536"),
    ("A32", "https://app.example.com:abc"),
    ("A32", "https://app.example.com:123ab"),
    ("A74", "null"),
]


@pytest.mark.parametrize(
    ("row", "origin"), NOT_ALLOWED, ids=[f"{r}-{o[:40]}" for r, o in NOT_ALLOWED]
)
async def test_a2_to_a32_origin_mutations_get_no_cors(row: str, origin: str) -> None:
    async with probe() as p:
        started = time.monotonic()
        reply = await p.request(origin=origin, headers=(("Cookie", "s=1"),))
        assert time.monotonic() - started < 2  # bounded, whatever the input (A29: no ReDoS)
    assert_no_cors(reply)
    assert APP not in reply.raw.decode("latin-1")


async def test_a1_allowed_credentialed_origin() -> None:
    async with probe() as p:
        reply = await p.request(headers=(("Cookie", "s=1"),))
    assert_allowed(reply, APP)
    assert reply.one("Access-Control-Expose-Headers") == "x-request-id"
    assert reply.vary >= {"origin"}


@pytest.mark.parametrize("origin", ["https://app.example.com:443", "https://APP.Example.com"])
async def test_a16_a18_deliberate_default_port_and_case_rule_echoes_the_request_exactly(
    origin: str,
) -> None:
    # Issue 2, rule 5: a written-out default port equals none, and scheme and host compare
    # case-insensitively. Browsers never send either form, so the echo is the request's own
    # value and can only ever match the origin that sent it.
    async with probe() as p:
        reply = await p.request(origin=origin)
    assert_allowed(reply, origin)


async def test_a23_two_origin_lines_are_400_in_both_orders() -> None:
    async with probe() as p:
        for first, second in [(APP, "https://evil.example"), ("https://evil.example", APP)]:
            reply = await p.request(origin=first, headers=(("Origin", second),))
            assert reply.status == 400 and reply.forwarded == 0
            assert reply.cors == []


async def test_a25_optional_whitespace_around_the_origin_is_not_echoed() -> None:
    async with probe() as p:
        reply = await p.raw(
            b"GET /api/r HTTP/1.1\r\nHost: p\r\nConnection: close\r\n"
            b"Origin:   https://app.example.com \t\r\n\r\n"
        )
    assert_allowed(reply, APP)


async def test_a26_unicode_origins_never_match_their_punycode_entry() -> None:
    policy = {"allow_origins": ["https://xn--bcher-kva.example"], "allow_credentials": True}
    async with probe(cors=policy) as p:
        utf8 = await p.request("/x", origin="https://bücher.example")
        puny = await p.request("/x", origin="https://xn--bcher-kva.example")
    assert_no_cors(utf8)
    assert_allowed(puny, "https://xn--bcher-kva.example")


async def test_a27_latin1_byte_in_origin_is_no_cors_never_500() -> None:
    async with probe() as p:
        reply = await p.raw(
            b"GET /api/r HTTP/1.1\r\nHost: p\r\nConnection: close\r\n"
            b"Origin: https://app.example.com\xe4\r\n\r\n"
        )
    assert_no_cors(reply)


async def test_a28_bare_cr_in_origin_is_400_from_the_parser() -> None:
    async with probe() as p:
        reply = await p.raw(
            b"GET /api/r HTTP/1.1\r\nHost: p\r\nOrigin: https://a\rSet-Cookie: x\r\n\r\n"
        )
    assert reply.status == 400 and reply.forwarded == 0
    assert reply.values("Set-Cookie") == [] and reply.cors == []


async def test_a29_origin_over_the_line_limit_is_400() -> None:
    async with probe() as p:
        reply = await p.request(origin="https://" + "a" * 9000 + ".com")
    assert reply.status in (400, 431) and reply.forwarded == 0


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        ("http://[::1]:3000", True),
        ("http://[0:0:0:0:0:0:0:1]:3000", False),
        ("http://[::0001]:3000", False),
        ("http://[::1]", False),
        ("http://127.0.0.1:3000", True),
        ("http://2130706433:3000", False),
        ("http://0x7f.0.0.1:3000", False),
        ("http://127.1:3000", False),
        ("http://127.0.0.1.:3000", False),
    ],
)
async def test_a30_a31_ip_literals_match_only_in_serialized_form(
    origin: str, allowed: bool
) -> None:
    async with probe() as p:
        reply = await p.request("/dev/x", origin=origin)
    if allowed:
        assert_allowed(reply, origin, credentials=False)
    else:
        assert_no_cors(reply)


@pytest.mark.parametrize("origin", ["https://a.example.com", "https://a.b.example.com"])
async def test_a33_subdomain_wildcard_allows_subdomains(origin: str) -> None:
    async with probe() as p:
        assert_allowed(await p.request("/sub/x", origin=origin), origin)


@pytest.mark.parametrize(
    ("row", "origin"),
    [
        ("A34", "https://example.com"),
        ("A35", "https://evilexample.com"),
        ("A35", "https://example.com.evil.com"),
        ("A35", "https://a.example.com.evil.com"),
        ("A35", "https://a.example.com%2eevil.com"),
        ("A36", "http://a.example.com"),
        ("A37", "https://.example.com"),
        ("A37", "https://a..example.com"),
        ("A38", "https://a.example.com:8443"),
    ],
)
async def test_a34_to_a38_subdomain_wildcard_refusals(row: str, origin: str) -> None:
    async with probe() as p:
        assert_no_cors(await p.request("/sub/x", origin=origin))


@pytest.mark.parametrize("origin", ["https://barfoo.com", "https://foobar.com"])
async def test_a39_two_exact_origins_never_combine(origin: str) -> None:
    async with probe() as p:
        assert_no_cors(await p.request("/two/x", origin=origin))


async def test_a40_a42_public_policy_answers_a_literal_star_without_credentials() -> None:
    async with probe() as p:
        reply = await p.request(
            "/public/x", origin="https://any.example", headers=(("Cookie", "s=1"),)
        )
    assert_allowed(reply, "*", credentials=False)


async def test_a41_public_policy_lists_authorization_explicitly() -> None:
    async with probe() as p:
        reply = await p.preflight(
            "/public/x", "https://any.example", "GET", request_headers="authorization"
        )
    assert reply.status == 204
    assert reply.one("Access-Control-Allow-Headers") == "authorization"


# --- A4: config validation, through `corsproxy check` ---------------------------------

BAD_POLICIES = {
    "A43": ['"*"'],
    "A44": ['"null"'],
    "A45": ['"https://*.com"', '"https://*.co.uk"', '"https://*.github.io"'],
    "A46": [
        '"https://example.com/"',
        '"https://bücher.example"',
        '"https://.*\\\\.example\\\\.com"',
        '"https://*example.com"',
    ],
    "A47": ['"http://app.example.com"'],
}


@pytest.mark.parametrize(("row", "entries"), BAD_POLICIES.items(), ids=BAD_POLICIES.keys())
def test_a43_to_a47_unsafe_origin_lists_are_refused_at_load(
    row: str, entries: list[str], tmp_path: Path
) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(
        "upstream: http://127.0.0.1:9\n"
        f"cors:\n  allow_credentials: true\n  allow_origins: [{', '.join(entries)}]\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "corsproxy", "check", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0, result.stdout
    errors = [line for line in result.stderr.splitlines() if line.startswith(f"{config}:4:")]
    assert len(errors) == len(entries), result.stderr
    assert "Traceback" not in result.stderr


def test_a48_forbidden_response_header_names_cannot_be_exposed(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(
        "upstream: http://127.0.0.1:9\ncors:\n  allow_origins: [https://a.example]\n"
        "  expose_headers: [Set-Cookie]\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "corsproxy", "check", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0 and "Set-Cookie" in result.stderr


# --- A5: preflights ----------------------------------------------------------------------


async def test_a49_allowed_preflight_is_answered_here() -> None:
    async with probe() as p:
        reply = await p.preflight(request_headers="content-type,x-requested-with")
    assert reply.status == 204 and reply.forwarded == 0
    assert reply.one("Access-Control-Allow-Origin") == APP
    assert reply.one("Access-Control-Allow-Credentials") == "true"
    assert "PUT" in reply.one("Access-Control-Allow-Methods").split(", ")  # type: ignore[union-attr]
    allowed = {h.strip() for h in reply.one("Access-Control-Allow-Headers").split(",")}  # type: ignore[union-attr]
    assert allowed >= {"content-type", "x-requested-with"}
    assert reply.one("Access-Control-Max-Age") == "600"
    assert reply.vary >= {
        "origin", "access-control-request-method", "access-control-request-headers"
    }  # fmt: skip


@pytest.mark.parametrize(
    ("row", "path", "origin", "method", "headers"),
    [
        ("A50", "/api/r", "https://evil.example", "PUT", None),
        ("A51", "/api/r", APP, "PURGE", None),
        ("A52", "/api/r", APP, "patch", None),
        ("A53", "/star/r", APP, "CONNECT", None),
        ("A53", "/star/r", APP, "TRACE", None),
        ("A53", "/star/r", APP, "TRACK", None),
        ("A55", "/api/r", APP, "PUT", "x-evil"),
        ("A58", "/api/r", APP, "PUT", "," * 20_000),
        ("A58", "/api/r", APP, "PUT", "x" * 8000),
        ("A61", "/internal/x", APP, "GET", None),
        ("A67", "/device/x", "https://evil.example", "GET", None),
    ],
)
async def test_a50_to_a61_refused_preflights_never_reach_the_upstream(
    row: str, path: str, origin: str, method: str, headers: str | None
) -> None:
    async with probe() as p:
        started = time.monotonic()
        extra = (("Access-Control-Request-Private-Network", "true"),) if row == "A67" else ()
        reply = await p.preflight(path, origin, method, headers, extra)
        assert time.monotonic() - started < 2
    if row == "A58" and reply.status in (400, 431):  # a field over the parser's cap: 431
        assert reply.forwarded == 0 and reply.cors == []
    else:
        assert_refused_preflight(reply)


async def test_a58_hundreds_of_request_header_lines_are_400() -> None:
    lines = "".join(f"Access-Control-Request-Headers: x-{i}\r\n" for i in range(500))
    async with probe() as p:
        reply = await p.raw(
            f"OPTIONS /api/r HTTP/1.1\r\nHost: p\r\nOrigin: {APP}\r\n"
            f"Access-Control-Request-Method: PUT\r\n{lines}\r\n".encode()
        )
    assert reply.status in (400, 431) and reply.forwarded == 0 and reply.cors == []


@pytest.mark.parametrize(
    ("path", "method"), [("/sub/x", "GET"), ("/sub/x", "HEAD"), ("/sub/x", "POST")]
)
async def test_a54_safelisted_methods_need_no_listing(path: str, method: str) -> None:
    async with probe() as p:
        reply = await p.preflight(path, "https://a.example.com", method)
    assert reply.status == 204 and reply.forwarded == 0


async def test_a56_star_headers_with_credentials_echo_names_never_a_star() -> None:
    # Issue 2, rule 4: `*` in allow_headers echoes the requested names (so it works with
    # credentials and covers Authorization), and never answers a literal `*`.
    async with probe() as p:
        reply = await p.preflight("/star/r", APP, "PUT", request_headers="authorization")
    assert reply.status == 204
    assert reply.one("Access-Control-Allow-Headers") == "authorization"
    assert reply.one("Access-Control-Allow-Credentials") == "true"


async def test_a57_request_headers_with_case_and_whitespace() -> None:
    async with probe() as p:
        reply = await p.preflight(request_headers="Content-Type , X-Requested-With")
    assert reply.status == 204
    allowed = {h.strip().lower() for h in reply.one("Access-Control-Allow-Headers").split(",")}  # type: ignore[union-attr]
    assert allowed == {"content-type", "x-requested-with"}


async def test_a59_options_without_request_method_is_an_actual_request() -> None:
    async with probe() as p:
        reply = await p.request(method="OPTIONS")
    assert_allowed(reply, APP)
    assert reply.values("Access-Control-Allow-Methods") == []
    assert reply.values("Access-Control-Allow-Headers") == []


async def test_a60_options_with_request_method_but_no_origin_is_not_cors() -> None:
    async with probe() as p:
        reply = await p.preflight(origin=None)
    assert_no_cors(reply)


async def test_a62_preflights_are_never_redirected() -> None:
    async with probe() as p:
        for path in ("/api/r", "/api/r/", "/api"):
            reply = await p.preflight(path)
            assert reply.status == 204, path


async def test_a63_preflight_body_is_discarded_and_a_pipelined_request_parsed_alone() -> None:
    async with probe() as p:
        reply = await p.raw(
            f"OPTIONS /api/r HTTP/1.1\r\nHost: p\r\nOrigin: {APP}\r\n"
            "Access-Control-Request-Method: PUT\r\nContent-Length: 5\r\n\r\nhello"
            "GET /api/two HTTP/1.1\r\nHost: p\r\nConnection: close\r\n\r\n".encode()
        )
    assert reply.raw.count(b"HTTP/1.1 204") == 1 and reply.raw.count(b"HTTP/1.1 200") == 1
    assert reply.forwarded == 1
    assert p.upstream.seen[-1]["raw_path"] == "/api/two"


@pytest.mark.parametrize(
    "path", ["/public/../api/r", "/public/%2e%2e/api/r", "/public/%2E%2E/api/r"]
)
async def test_a64_the_decision_uses_the_normalized_path(path: str) -> None:
    async with probe() as p:
        reply = await p.preflight(path, "https://any.example", "GET")
    # Decided under P1 (/api), which refuses this origin; never P3's `*`.
    assert reply.status in (400, 403) and reply.forwarded == 0
    assert reply.values("Access-Control-Allow-Origin") == []


# --- A6: Private Network Access ------------------------------------------------------------

PNA = (("Access-Control-Request-Private-Network", "true"),)


async def test_a65_private_network_preflight_when_enabled() -> None:
    async with probe() as p:
        reply = await p.preflight("/device/x", APP, "GET", extra=PNA)
    assert reply.status == 204
    assert reply.one("Access-Control-Allow-Private-Network") == "true"


async def test_a66_no_private_network_answer_when_not_enabled() -> None:
    async with probe() as p:
        reply = await p.preflight("/api/r", APP, "GET", extra=PNA)
    assert reply.values("Access-Control-Allow-Private-Network") == []


# --- A7: response rewriting -----------------------------------------------------------------


async def test_a68_a69_upstream_cors_headers_are_replaced_and_vary_merged() -> None:
    async with probe() as p:
        reply = await p.request("/cors")
    assert_allowed(reply, APP)
    assert reply.values("Access-Control-Expose-Headers") == ["x-request-id"]  # not X-Secret
    assert reply.vary >= {"accept-encoding", "origin"}


async def test_a70_no_origin_still_varies_on_origin() -> None:
    async with probe() as p:
        reply = await p.request(origin=None)
    assert_no_cors(reply)


async def test_a72_credentials_value_is_exactly_true() -> None:
    async with probe() as p:
        reply = await p.request()
    assert "Access-Control-Allow-Credentials: true" in reply.lines


async def test_a73_upstream_redirects_are_relayed_with_cors_never_followed() -> None:
    async with Sentinel() as sentinel, probe() as p:
        reply = await p.request(f"/redirect?to=http://127.0.0.2:{sentinel.port}/x")
    assert reply.status == 302
    assert reply.one("Location") == f"http://127.0.0.2:{sentinel.port}/x"
    assert reply.one("Access-Control-Allow-Origin") == APP
    assert sentinel.connections == 0


OVERRIDES = ["X-HTTP-Method-Override", "X-HTTP-Method", "X-Method-Override"]


async def test_a75_method_overrides_from_disallowed_origins_are_stripped() -> None:
    headers = tuple((name, "DELETE") for name in OVERRIDES)
    async with probe() as p:
        await p.request(
            method="POST",
            origin="https://evil.example",
            headers=(("Content-Type", "text/plain"), *headers),
            body=b"x",
        )
        refused = {n.lower() for n, _ in p.upstream.seen[-1]["headers"]}
        await p.request(
            method="POST", headers=(("Content-Type", "text/plain"), *headers), body=b"x"
        )
        allowed = {n.lower() for n, _ in p.upstream.seen[-1]["headers"]}
    assert not refused & {o.lower() for o in OVERRIDES}
    assert allowed >= {o.lower() for o in OVERRIDES}  # an allowed origin was preflighted


async def test_a75_report_only_keeps_method_overrides_since_it_changes_nothing_on_the_wire() -> (
    None
):
    headers = tuple((name, "DELETE") for name in OVERRIDES)
    policy = {"allow_origins": [APP], "mode": "report-only"}
    async with probe(cors=policy) as p:
        await p.request("/x", "https://evil.example", "POST", headers, body=b"x")
        seen = {n.lower() for n, _ in p.upstream.seen[-1]["headers"]}
    assert seen >= {o.lower() for o in OVERRIDES}


async def test_a76_same_origin_post_is_forwarded_without_cors() -> None:
    async with probe() as p:
        reply = await p.request(method="POST", origin="http://proxy.test", body=b"x")
    assert_no_cors(reply)


async def test_a77_head_gets_the_same_cors_headers_and_no_body() -> None:
    async with probe() as p:
        get = await p.request()
        head = await p.request(method="HEAD")
    assert head.body == b""
    assert head.cors == get.cors


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [("/down/x", b"", 502), ("/api/r", b"x" * 2048, 413)],
    ids=["502", "413"],
)
async def test_a78_proxy_made_errors_carry_cors_only_for_allowed_origins(
    path: str, body: bytes, status: int
) -> None:
    method = "POST" if body else "GET"
    async with probe() as p:
        allowed = await p.request(path, method=method, body=body)
        refused = await p.request(path, origin="https://evil.example", method=method, body=body)
    assert allowed.status == refused.status == status
    assert allowed.one("Access-Control-Allow-Origin") == APP
    assert allowed.one("Access-Control-Allow-Credentials") == "true"
    assert refused.cors == [] and "origin" in refused.vary


async def test_a58_a_megabyte_of_commas_over_many_lines_is_refused_in_bounded_time() -> None:
    # The per-line limit (8190 bytes) keeps one line short, so spread it: 120 lines of 8000
    # commas, just under a megabyte, under the parser's 128-header cap.
    lines = "".join("Access-Control-Request-Headers: " + "," * 8000 + "\r\n" for _ in range(120))
    async with probe() as p:
        started = time.monotonic()
        reply = await p.raw(
            f"OPTIONS /api/r HTTP/1.1\r\nHost: p\r\nOrigin: {APP}\r\n"
            f"Access-Control-Request-Method: PUT\r\n{lines}\r\n".encode()
        )
        assert time.monotonic() - started < 2
    assert reply.status in (400, 403, 431) and reply.forwarded == 0
    assert reply.values("Access-Control-Allow-Origin") == []
