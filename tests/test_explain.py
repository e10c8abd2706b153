"""`explain`: the browser's walk-through against a policy, with the browser's error names."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from corsproxy.commands.cli import cli
from corsproxy.commands.explain import explain, render_text, websocket_url
from corsproxy.commands.explain_fixes import Edit
from corsproxy.config import Config, Override, parse_config
from corsproxy.policy.browser import (
    is_safelisted_request_header,
    normalize_method,
    preflight_need,
    serialized_origin,
)
from tests.helpers import config

APP = "https://app.example.com"

CONFIG = config(
    {
        "upstream": "http://legacy:9000",
        "cors": {
            "allow_origins": [APP, "http://localhost:*"],
            "allow_methods": ["GET", "POST", "PUT"],
            "allow_headers": ["Content-Type", "Authorization"],
            "expose_headers": ["X-Request-Id"],
            "allow_credentials": True,
        },
        "routes": [
            {
                "path_prefix": "/public",
                "cors": {"allow_origins": ["*"], "allow_credentials": False},
            },
            {"path_prefix": "/nocreds", "cors": {"allow_credentials": False}},
            {"path_prefix": "/internal", "cors": False},
            {"path_prefix": "/strict", "cors": {"on_disallowed": "reject"}},
            {"path_prefix": "/device", "cors": {"allow_private_network": True}},
            {
                "path_prefix": "/shadow",
                "cors": {"mode": "report-only", "allow_origins": ["https://other.example"]},
            },
            {"path_prefix": "/reports", "upstream": "http://reports:8000", "strip_prefix": True},
        ],
    }
)

CASES = [
    # id, kwargs, allowed, reason, firefox error
    ("simple-get", {"origin": APP}, True, "origin_allowed", None),
    (
        "credentialed-put-json",
        {
            "origin": APP,
            "method": "PUT",
            "headers": [("Content-Type", "application/json"), ("Authorization", "Bearer x")],
            "credentials": True,
        },
        True,
        "origin_allowed",
        None,
    ),
    (
        "disallowed-simple-get",
        {"origin": "https://evil.example"},
        False,
        "origin_not_allowed",
        "CORSMissingAllowOrigin",
    ),
    (
        "disallowed-preflighted-put",
        {"origin": "https://evil.example", "method": "PUT", "credentials": True},
        False,
        "origin_not_allowed",
        "CORSMissingAllowOrigin",  # Firefox checks ACAO before the status
    ),
    (
        "method-not-allowed",
        {"origin": APP, "method": "DELETE"},
        False,
        "method_not_allowed:DELETE",
        "CORSMissingAllowOrigin",  # Firefox checks ACAO before the status
    ),
    (
        "header-not-allowed",
        {"origin": APP, "headers": [("X-Trace-Id", "1")]},
        False,
        "header_not_allowed:x-trace-id",
        "CORSMissingAllowOrigin",  # Firefox checks ACAO before the status
    ),
    (
        "wildcard-with-credentials",
        {"origin": APP, "path": "/public/x", "credentials": True},
        False,
        "credentials_with_wildcard_origin",
        "CORSNotSupportingCredentials",
    ),
    (
        "wildcard-without-credentials",
        {"origin": APP, "path": "/public/x"},
        True,
        "origin_allowed",
        None,
    ),
    (
        "credentials-not-allowed",
        {"origin": APP, "path": "/nocreds/x", "credentials": True},
        False,
        "allow_credentials_missing",
        "CORSMIssingAllowCredentials",
    ),
    (
        "cors-false",
        {"origin": APP, "path": "/internal/x", "method": "PUT"},
        False,
        "cors_disabled",
        "CORSMissingAllowOrigin",  # Firefox checks ACAO before the status
    ),
    (
        "cors-false-simple",
        {"origin": APP, "path": "/internal/x"},
        False,
        "cors_disabled",
        "CORSMissingAllowOrigin",
    ),
    (
        "reject-disallowed",
        {"origin": "https://evil.example", "path": "/strict"},
        False,
        "origin_not_allowed",
        "CORSMissingAllowOrigin",
    ),
    # Chromium 142+ (Local Network Access) sends nothing without the user's permission,
    # whatever allow_private_network says (tests/test_browser_local_network.py).
    (
        "private-network-chromium-allowed-route",
        {"origin": APP, "path": "/device", "private_network": True, "method": "PUT"},
        False,
        "local_network_access_denied",
        "(none: Chromium's Local Network Access block; see --browser firefox)",
    ),
    (
        "private-network-chromium",
        {"origin": APP, "private_network": True, "method": "PUT"},
        False,
        "local_network_access_denied",
        "(none: Chromium's Local Network Access block; see --browser firefox)",
    ),
    (
        "private-network-firefox",  # no PNA preflight, no permission: CORS alone decides
        {"origin": APP, "private_network": True, "method": "PUT", "engine": "firefox"},
        True,
        "origin_allowed",
        None,
    ),
    (
        "post-text-plain-no-preflight",
        {
            "origin": APP,
            "method": "POST",
            "headers": [("Content-Type", "text/plain;charset=UTF-8")],
        },
        True,
        "origin_allowed",
        None,
    ),
    ("null-origin", {"origin": "null"}, False, "origin_not_allowed", "CORSMissingAllowOrigin"),
    ("localhost-any-port", {"origin": "http://localhost:5173"}, True, "origin_allowed", None),
    (
        "bad-path",  # a browser sends %00 as written; corsproxy refuses it with 400
        {"origin": APP, "path": "/a/%00"},
        False,
        "path_nul",
        "CORSMissingAllowOrigin",
    ),
    # The browser resolves the dot segments (also %2e ones): it sends /etc.
    (
        "dot-segments-resolved",
        {"origin": APP, "path": "/a/../../etc"},
        True,
        "origin_allowed",
        None,
    ),
    (
        "encoded-dots-resolved",
        {"origin": APP, "path": "/x/%2e%2e/%2E%2e/etc"},
        True,
        "origin_allowed",
        None,
    ),
    (
        "report-only-is-explained-as-enforce",
        {"origin": APP, "path": "/shadow"},
        False,
        "origin_not_allowed",
        "CORSMissingAllowOrigin",
    ),
]


@pytest.mark.parametrize(
    ("kwargs", "allowed", "reason", "firefox"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_explain_verdicts(kwargs: dict, allowed: bool, reason: str, firefox: str | None) -> None:
    result = explain(CONFIG, **kwargs)
    assert result.allowed is allowed
    assert result.reason == reason
    assert re.fullmatch(r"[a-z_]+(:.+)?", reason)  # a reason code, never a browser's name
    if firefox is None:
        assert result.failure is None
    else:
        assert result.failure is not None and result.failure.firefox == firefox
        assert result.fix or reason.startswith("path_")
    text = render_text(result)
    assert ("VERDICT: ALLOWED" in text) is allowed


def test_explain_names_the_cause_and_the_fix() -> None:
    result = explain(CONFIG, APP, headers=[("X-Trace-Id", "1")])
    text = render_text(result)
    assert "CORSMissingAllowHeaderFromPreflight" in text
    assert "Fix:     add X-Trace-Id to cors.allow_headers (test.yaml:" in text
    assert "Access-Control-Request-Headers: x-trace-id" in text


def test_explain_shows_the_headers_corsproxy_sends() -> None:
    result = explain(
        CONFIG, APP, method="PUT", headers=[("Content-Type", "application/json")], credentials=True
    )
    preflight = next(s for s in result.steps if s.title == "Preflight")
    assert ("Access-Control-Allow-Origin", APP) in preflight.headers
    assert ("Access-Control-Allow-Credentials", "true") in preflight.headers
    assert result.readable[-1] == "X-Request-Id"
    as_json = result.to_json()
    assert as_json["verdict"] == "allowed"
    assert [s["title"] for s in as_json["steps"]] == [
        "Route",
        "Origin",
        "Preflight needed?",
        "Preflight",
        "Actual request",
        "Script can read",
    ]


def test_explain_shows_the_forwarded_url() -> None:
    result = explain(CONFIG, APP, path="/reports/2026/q3?x=1")
    assert "forwarded to http://reports:8000/2026/q3?x=1" in render_text(result)


@pytest.mark.parametrize(
    ("path", "reading"),
    [
        ("/internal./x", "trailing dots, spaces and '::$DATA'-style stream suffixes dropped"),
        ("/public/%252e%252e/internal/x", "decoded twice"),
        ("/internal::$DATA/x", "stream suffixes dropped"),
    ],
)
def test_explain_shows_which_reading_puts_a_path_on_another_route(path: str, reading: str) -> None:
    result = explain(CONFIG, APP, path=path)
    assert not result.allowed and result.reason == "path_ambiguous"
    text = render_text(result)
    assert "corsproxy answers 400" in text and "(path_ambiguous)" in text
    assert reading in text
    assert "route '/internal' (path_prefix /internal, test.yaml:" in text
    assert "VERDICT: BLOCKED (path_ambiguous)" in text


def test_explain_shows_a_case_insensitive_match_and_the_query_as_sent() -> None:
    text = render_text(explain(CONFIG, APP, path="/INTERNAL/x?"))
    assert "route '/internal' (path_prefix /internal" in text
    assert "matched case-insensitively" in text
    assert "forwarded to http://legacy:9000/INTERNAL/x?\n" in text
    # The browser drops the fragment before sending: never a path_fragment refusal.
    fragment = explain(CONFIG, APP, path="/x#frag")
    assert (fragment.allowed, fragment.path) == (True, "/x")


def test_explain_report_only_says_the_wire_is_unchanged() -> None:
    text = render_text(explain(CONFIG, APP, path="/shadow"))
    assert "passes the upstream's own Access-Control-* headers unchanged" in text


@pytest.mark.parametrize(
    ("name", "value", "safe"),
    [
        ("Accept", "application/json", True),
        ("Accept", "a(b)", False),
        ("Accept-Language", "en-US,en;q=0.9", True),
        ("Content-Language", "de/ch", False),
        ("Content-Type", "text/plain", True),
        ("Content-Type", "multipart/form-data; boundary=x", True),
        ("Content-Type", "application/json", False),
        ("Content-Type", 'text/plain; x="a"', False),
        ("Range", "bytes=0-99", True),
        ("Range", "bytes=-500", False),
        ("Accept", "x" * 129, False),
        ("X-Custom", "1", False),
    ],
)
def test_safelisted_request_headers(name: str, value: str, safe: bool) -> None:
    assert is_safelisted_request_header(name, value) is safe


def test_preflight_need() -> None:
    assert not preflight_need("GET", []).needed
    assert not preflight_need("POST", [("Content-Type", "text/plain")]).needed
    assert preflight_need("PUT", []).needed
    assert preflight_need("patch", []).needed
    need = preflight_need("GET", [("X-B", "1"), ("X-A", "1"), ("Cookie", "a=1")])
    assert need.request_header_names == ("x-a", "x-b")  # sorted, lower-case; Cookie ignored
    big = preflight_need("GET", [("Accept", "a" * 100)] + [("Accept-Language", "b" * 100)] * 10)
    assert big.needed and "1024" in big.reasons[-1]


def test_explain_lists_each_preflight_check() -> None:
    result = explain(
        CONFIG,
        APP,
        method="PUT",
        headers=[
            ("Content-Type", "application/json"),
            ("Accept-Language", "x" * 200),
            ("X-No", "1"),
        ],
    )
    preflight = next(s for s in result.steps if s.title == "Preflight")
    assert preflight.lines[2:] == [
        "ok    origin: allowed",
        "ok    method PUT: listed in allow_methods",
        "ok    header accept-language: a CORS-safelisted name, always allowed",
        "ok    header content-type: listed in allow_headers",
        "FAIL  header x-no: not in allow_headers",
    ]


# --- WebSockets: no preflight, no CORS in the browser; the decision checks Origin ----------

PROXY = "http://api.example.com"
TLS_PROXY = "https://api.example.com"  # behind a TLS terminator: corsproxy sees http

WEBSOCKET_CASES = [
    # id, origin, path, allowed, reason
    ("allowed-origin", APP, "/chat", True, "origin_allowed"),
    ("disallowed-origin", "https://evil.example", "/chat", False, "websocket_origin_not_allowed"),
    ("cors-false-cross-site", APP, "/internal/ws", False, "websocket_cross_origin"),
    ("cors-false-same-origin", PROXY, "/internal/ws", True, "websocket_same_origin"),
    ("cors-false-https-page", TLS_PROXY, "/internal/ws", False, "websocket_cross_origin"),
    ("cors-false-null", "null", "/internal/ws", False, "websocket_cross_origin"),
    ("report-only-as-enforce", APP, "/shadow/ws", False, "websocket_origin_not_allowed"),
]


@pytest.mark.parametrize(
    ("origin", "path", "allowed", "reason"),
    [c[1:] for c in WEBSOCKET_CASES],
    ids=[c[0] for c in WEBSOCKET_CASES],
)
def test_explain_websocket_verdicts(origin: str, path: str, allowed: bool, reason: str) -> None:
    result = explain(CONFIG, origin, path=path, websocket=True, proxy_origin=PROXY)
    assert (result.allowed, result.reason) == (allowed, reason)
    titles = [s.title for s in result.steps]
    assert "Preflight needed?" not in titles and "WebSocket handshake" in titles
    text = render_text(result)
    assert ("VERDICT: ALLOWED" in text) is allowed
    if not allowed:
        assert "refuses the handshake with 403" in text and result.fix


def test_explain_websocket_fixes_name_the_config() -> None:
    result = explain(CONFIG, "https://evil.example", path="/chat", websocket=True)
    assert result.fix.startswith("add 'https://evil.example' to cors.allow_origins (test.yaml:")
    result = explain(CONFIG, APP, path="/internal/ws", websocket=True, proxy_origin=PROXY)
    assert "routes[2].cors (test.yaml:26) is false" in result.fix
    assert f"own origin ({PROXY})" in result.fix
    allowed = explain(CONFIG, APP, path="/chat", websocket=True)
    handshake = next(s for s in allowed.steps if s.title == "WebSocket handshake")
    assert ("Access-Control-Allow-Origin", APP) in handshake.headers
    assert "forwarded to ws://legacy:9000/chat" in render_text(allowed)


def test_explain_websocket_own_origin_is_what_the_server_sees() -> None:
    """Without `tls:` and without trusted_proxies, a page on https://api.example.com opening
    wss://api.example.com reaches corsproxy (behind a TLS terminator) as http with that
    Host: a cross-origin handshake."""
    result = explain(CONFIG, TLS_PROXY, path="/internal/ws", websocket=True, proxy_origin=TLS_PROXY)
    assert (result.allowed, result.reason) == (False, "websocket_cross_origin")
    text = render_text(result)
    assert "the proxy's own origin: http://api.example.com" in text
    assert "corsproxy does not terminate TLS" in text
    # A port is kept, userinfo is not part of it.
    own = "http://u:p@api.example.com:8443"
    result = explain(CONFIG, "http://api.example.com:8443", path="/internal/ws",
                     websocket=True, proxy_origin=own)  # fmt: skip
    assert (result.allowed, result.reason) == (True, "websocket_same_origin")


def test_explain_websocket_without_the_proxy_origin_says_it_is_unknown() -> None:
    """Was: the listen address (http://0.0.0.0:8080 in most configs), which blocked every
    same-origin page. Now: unknown, and the output names the flag that sets it."""
    result = explain(CONFIG, PROXY, path="/internal/ws", websocket=True)
    assert (result.allowed, result.reason) == (False, "websocket_cross_origin")
    text = render_text(result)
    assert "own origin" in text and "is unknown: pass --proxy-origin" in text
    assert "0.0.0.0" not in text and str(CONFIG.listen) not in text
    assert "(unknown)" in result.fix


@pytest.mark.parametrize(
    ("url", "path", "own"),
    [
        ("ws://u:p@127.0.0.1:18800/priv/ws/a", "/priv/ws/a", "http://127.0.0.1:18800"),
        ("wss://api.example.com/x?y=1", "/x?y=1", "https://api.example.com"),
        ("ws://api.example.com", "/", "http://api.example.com"),
        ("WS://h:80?q", "/?q", "http://h:80"),
        ("http://h/x", None, None),
        ("/x", None, None),
    ],
)
def test_websocket_url(url: str, path: str | None, own: str | None) -> None:
    expected = None if path is None else (path, own)
    assert websocket_url(url) == expected


def test_explain_websocket_shows_credentials_stripped() -> None:
    """A cross-origin handshake on a policy without credentials loses Cookie and
    Authorization; explain says so (text and JSON)."""
    result = explain(CONFIG, "https://evil.example", path="/public/ws", websocket=True)
    assert result.allowed and result.strips_credentials
    assert result.to_json()["strips_credentials"] is True
    assert "WITHOUT the page's Cookie and Authorization" in render_text(result)
    kept = explain(CONFIG, APP, path="/chat", websocket=True)  # credentials allowed
    assert kept.allowed and not kept.strips_credentials
    assert "WITHOUT" not in render_text(kept)
    own = explain(CONFIG, PROXY, path="/public/ws", websocket=True, proxy_origin=PROXY)
    assert own.allowed and not own.strips_credentials


def test_a_refused_preflight_reads_as_before_reasons_were_typed() -> None:
    """Golden text, recorded before reasons became typed: the verdict's code:detail, the
    checks, the cause in words and the fix all come from the decision's Reason values."""
    result = explain(CONFIG, APP, "DELETE", "/x", [("X-Trace-Id", "1")])
    assert render_text(result).splitlines()[10:] == [
        "     answered by corsproxy (never forwarded): 403",
        "     ok    origin: allowed",
        "     FAIL  method DELETE: not in allow_methods",  # fetch() upper-cases DELETE
        "     FAIL  header x-trace-id: not in allow_headers",
        "       Vary: Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
        "VERDICT: BLOCKED (method_not_allowed:DELETE)",
        "  Browser: Chromium (--browser)",
        "  Firefox: CORSMissingAllowOrigin",
        "  Chrome:  PreflightMissingAllowOriginHeader: Response to preflight request doesn't "
        "pass access control check: No 'Access-Control-Allow-Origin' header is present on the "
        "requested resource.",
        "  Chromium console:",
        "    Access to fetch at '<proxy>/x' from origin 'https://app.example.com' has been "
        "blocked by CORS policy: Response to preflight request doesn't pass access control "
        "check: No 'Access-Control-Allow-Origin' header is present on the requested resource.",
        "    Failed to load resource: net::ERR_FAILED",
        "  fetch() rejects with TypeError: Failed to fetch",
        "  Cause:   method 'DELETE' not allowed (the cause Firefox names CORSMethodNotFound)",
        "  Fix:     (1) add DELETE to cors.allow_methods (test.yaml:6); (2) add X-Trace-Id to "
        "cors.allow_headers (test.yaml:10)",
    ]
    assert result.to_json()["reason"] == "method_not_allowed:DELETE"
    assert result.to_json()["cause"] == (
        "method 'DELETE' not allowed (the cause Firefox names CORSMethodNotFound)"
    )
    ws = explain(CONFIG, "https://evil.example", websocket=True, proxy_origin="http://p.local")
    assert render_text(ws).splitlines()[-6:] == [
        "VERDICT: BLOCKED (websocket_origin_not_allowed)",
        "  Browser: Chromium (--browser)",
        "  Chromium console:",
        "    WebSocket connection to 'ws://p.local/' failed: Error during WebSocket handshake: "
        "Unexpected response code: 403",
        "  the page sees an error event, then a close event with code 1006",
        "  Fix:     add 'https://evil.example' to cors.allow_origins (test.yaml:3)",
    ]


def _internal_ws(extra: dict[str, object]) -> Config:
    return config(
        {"upstream": "http://legacy:9000", **extra,
         "routes": [{"path_prefix": "/internal", "cors": False}]}
    )  # fmt: skip


def test_explain_websocket_behind_a_trusted_terminator_takes_the_reported_scheme() -> None:
    """With trusted_proxies the server takes the scheme and host the terminator reports
    (server.py _own_origin from the ClientView): a same-origin https page is same-origin.
    explain said "does not terminate TLS" and predicted the opposite of the server."""
    trusted = _internal_ws({"trusted_proxies": ["10.0.0.1"]})
    result = explain(trusted, TLS_PROXY, path="/internal/ws", websocket=True,
                     proxy_origin=TLS_PROXY)  # fmt: skip
    assert (result.allowed, result.reason) == (True, "websocket_same_origin")
    assert "as a proxy in trusted_proxies reports it" in render_text(result)


def test_explain_websocket_with_tls_on_the_listener_is_https(tmp_path: object) -> None:
    import pathlib

    import trustme

    base = pathlib.Path(str(tmp_path))
    ca = trustme.CA()
    cert = ca.issue_cert("api.example.com")
    cert.private_key_and_cert_chain_pem.write_to_path(str(base / "pair.pem"))
    tls = _internal_ws({"tls": {"cert_file": str(base / "pair.pem"),
                                "key_file": str(base / "pair.pem")}})  # fmt: skip
    result = explain(tls, TLS_PROXY, path="/internal/ws", websocket=True, proxy_origin=TLS_PROXY)
    assert (result.allowed, result.reason) == (True, "websocket_same_origin")
    text = render_text(result)
    assert "corsproxy terminates TLS" in text and "does not terminate" not in text
    plain = explain(tls, "http://api.example.com", path="/internal/ws", websocket=True,
                    proxy_origin=TLS_PROXY)  # fmt: skip
    assert (plain.allowed, plain.reason) == (False, "websocket_cross_origin")


# --- issue 15: explain must never be wrong ----------------------------------------------


@pytest.mark.parametrize(
    ("written", "sent"),
    [("put", "PUT"), ("Put", "PUT"), ("delete", "DELETE"), ("options", "OPTIONS"),
     ("get", "GET"), ("patch", "patch"), ("Patch", "Patch"), ("PATCH", "PATCH"),
     ("foo", "foo")],
)  # fmt: skip
def test_methods_are_normalized_as_fetch_does(written: str, sent: str) -> None:
    assert normalize_method(written) == sent


def test_explain_lower_case_put_is_what_chromium_sends() -> None:
    """`-X put`: Chromium preflights PUT (the policy lists PUT) and sends PUT."""
    result = explain(CONFIG, APP, method="put")
    assert result.allowed, render_text(result)
    assert result.method == "PUT"
    preflight = next(s for s in result.steps if s.title == "Preflight")
    assert "OPTIONS / with Access-Control-Request-Method: PUT" in preflight.lines[0]
    assert "fetch() sends PUT" in render_text(result)
    refused = explain(CONFIG, APP, method="delete")
    assert refused.reason == "method_not_allowed:DELETE"
    assert refused.fix.startswith("add DELETE to cors.allow_methods (test.yaml:")


LOWER = config(
    {
        "upstream": "http://legacy:9000",
        "cors": {"allow_origins": [APP], "allow_methods": ["PATCH", "patch", "QUERY"]},
        "routes": [{"path_prefix": "/upper", "cors": {"allow_methods": ["PATCH"]}}],
    }
)


def test_explain_a_lower_case_custom_method_is_sent_as_written() -> None:
    """`patch` is sent as written: the preflight asks for `patch` (allowed here, listed
    exactly), then corsproxy's HTTP parser answers the request line `patch` with 400."""
    listed = explain(LOWER, APP, method="patch")
    assert not listed.allowed and listed.reason == "method_unparsable"
    assert listed.method == "patch"
    assert listed.failure is not None and listed.failure.chrome == "MissingAllowOriginHeader"
    assert next(s for s in listed.steps if s.title == "Preflight").outcome == "ok"
    assert listed.fix.startswith("write the method as 'PATCH' in the page")
    # Listed only as PATCH: the preflight for `patch` fails first; the fix is still the page's.
    upper = explain(LOWER, APP, method="patch", path="/upper")
    assert upper.reason == "method_not_allowed:patch"
    assert upper.fix.startswith("write the method as 'PATCH'")
    assert explain(LOWER, APP, method="PATCH", path="/upper").allowed
    assert explain(LOWER, APP, method="QUERY").allowed  # registered: llhttp reads it


def test_explain_a_method_fetch_refuses() -> None:
    for method in ("trace", "CONNECT", "track", "GE T", "a:b"):
        result = explain(CONFIG, APP, method=method)
        assert not result.allowed and result.reason == "fetch_method_refused", method
        assert result.failure is None and not result.fix_edits
        assert "fetch() throws TypeError" in render_text(result)


@pytest.mark.parametrize(
    ("origin", "suggestion"),
    [
        ("https://app.example.com/", APP),
        ("app.example.com", APP),
        ("https://app.example.com/login?x=1", APP),
        ("https://APP.example.com", APP),
        ("HTTPS://app.example.com", APP),
        ("https://app.example.com:443", APP),
        ("http://localhost:5173/", "http://localhost:5173"),
        ("localhost:5173", "http://localhost:5173"),
        ("http://127.1:8080", "http://127.0.0.1:8080"),
        ("NULL", "null"),
        ("file:///home/me/index.html", "null"),
        ("https://app.example.com:99999", None),
        ("https://", None),
    ],
)
def test_explain_a_malformed_origin_is_blocked_with_the_one_a_browser_sends(
    origin: str, suggestion: str | None
) -> None:
    result = explain(CONFIG, origin)
    assert not result.allowed and result.reason == "origin_malformed"
    assert result.did_you_mean == suggestion
    assert result.to_json()["did_you_mean"] == suggestion
    text = render_text(result)
    assert "is not an Origin a browser sends" in text
    if suggestion is not None:
        assert f"did you mean `{suggestion}`?" in result.fix
    # Never a fix naming the malformed value (check refuses it in allow_origins).
    assert f"'{origin}'" not in result.fix
    assert all(e.value != origin for e in result.fix_edits)


def test_explain_a_malformed_origin_of_a_websocket_is_blocked() -> None:
    result = explain(CONFIG, "https://app.example.com/", path="/chat", websocket=True)
    assert result.reason == "origin_malformed" and result.did_you_mean == APP
    assert "explain --origin https://app.example.com: allowed" in result.fix


def test_explain_null_and_serialized_origins_are_legal() -> None:
    assert explain(CONFIG, "null").reason == "origin_not_allowed"
    assert explain(CONFIG, "http://[::1]:3000").reason != "origin_malformed"
    assert serialized_origin("https://xn--bcher-kva.de").valid
    assert serialized_origin("https://bücher.de").suggestion == "https://xn--bcher-kva.de"


def test_explain_a_malformed_origin_carries_the_fix_for_the_right_one() -> None:
    result = explain(CONFIG, "https://new.example.com/", method="PUT")
    assert "did you mean `https://new.example.com`?" in result.fix
    assert "add 'https://new.example.com' to cors.allow_origins (test.yaml:" in result.fix
    assert [(e.op, e.key, e.value) for e in result.fix_edits] == [
        ("add", "cors.allow_origins", "https://new.example.com")
    ]


def _path(key: str) -> list[str | int]:
    parts: list[str | int] = []
    for part in key.split("."):
        name, _, index = part.partition("[")
        parts.append(name)
        if index:
            parts.append(int(index.rstrip("]")))
    return parts


def apply_edits(doc: dict[str, Any], edits: Sequence[Edit]) -> None:
    """Apply explain's edits to a config document, as a user following the fix would."""
    for edit in edits:
        *parents, last = _path(edit.key)
        node: Any = doc
        for part in parents:
            if isinstance(part, str) and not isinstance(node.get(part), (dict, list)):
                node[part] = {}
            node = node[part]
        if edit.op == "add":
            current = node.get(last)
            node[last] = [*(current if isinstance(current, list) else []), edit.value]
        else:
            node[last] = edit.value


BASE: dict[str, Any] = {
    "upstream": "http://legacy:9000",
    "cors": {
        "allow_origins": [APP],
        "allow_methods": ["GET", "POST", "PUT"],
        "allow_credentials": True,
    },
    "routes": [
        {"path_prefix": "/own", "cors": {"allow_origins": ["https://other.example"]}},
        {"path_prefix": "/inherits"},
        {"path_prefix": "/nocreds", "cors": {"allow_credentials": False}},
        {"path_prefix": "/public", "cors": {"allow_origins": ["*"], "allow_credentials": False}},
        {"path_prefix": "/off", "cors": False},
        {"path_prefix": "/device", "cors": {"allow_methods": ["DELETE"]}},
    ],
}
NO_TOP: dict[str, Any] = {"upstream": "http://legacy:9000", "routes": [{"path_prefix": "/r"}]}
TOP_OFF: dict[str, Any] = {"upstream": "http://legacy:9000", "cors": False}

# id, document, request, the key the first fix edits, a word of its text
REFUSALS: list[tuple[str, dict[str, Any], dict[str, Any], str, str]] = [
    ("method-top", BASE, {"method": "DELETE"}, "cors.allow_methods", ""),
    ("method-inherited", BASE, {"method": "patch", "path": "/inherits"}, "", "'PATCH'"),
    ("method-inherited-upper", BASE, {"method": "PATCH", "path": "/inherits"},
     "cors.allow_methods", "not merged"),
    ("method-own-block-inherits", BASE, {"method": "PATCH", "path": "/nocreds"},
     "cors.allow_methods", "not merged"),
    ("method-route", BASE, {"method": "PATCH", "path": "/device"},
     "routes[5].cors.allow_methods", ""),
    ("header-absent", BASE, {"headers": [("X-Trace-Id", "1")], "path": "/inherits"},
     "cors.allow_headers", "under cors (test.yaml:"),
    ("header-absent-own-block", BASE, {"headers": [("X-Trace-Id", "1")], "path": "/device"},
     "routes[5].cors.allow_headers", "under routes[5].cors (test.yaml:"),
    ("origin-route", BASE, {"path": "/own"}, "routes[0].cors.allow_origins", ""),
    ("origin-inherited", BASE, {"origin": "https://new.example", "path": "/inherits"},
     "cors.allow_origins", "not merged"),
    ("origin-plain-http-with-credentials", BASE, {"origin": "http://intranet.example"},
     "cors.allow_origins", "over https"),
    ("origin-malformed", BASE, {"origin": "https://new.example/", "method": "PUT"},
     "cors.allow_origins", "did you mean"),
    ("credentials-wildcard", BASE, {"path": "/public", "credentials": True},
     "routes[3].cors.allow_origins", "instead of '*'"),
    ("credentials-off", BASE, {"path": "/nocreds", "credentials": True},
     "routes[2].cors.allow_credentials", ""),
    ("private-network", BASE, {"method": "PUT", "private_network": True},
     "", "targetAddressSpace"),
    ("cors-false-route", BASE, {"path": "/off/x", "method": "PUT"}, "routes[4].cors",
     "is false"),
    ("cors-false-top", TOP_OFF, {}, "cors", "cors (test.yaml:2) is false"),
    ("no-cors-block", NO_TOP, {"path": "/r"}, "routes[0].cors.allow_origins",
     "add cors: {allow_origins: ['https://app.example.com']} to routes[0] (test.yaml:3)"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("doc", "request_", "key", "words"), [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS]
)
def test_following_the_fixes_passes_check_and_then_explain_allows(
    doc: dict[str, Any], request_: dict[str, Any], key: str, words: str
) -> None:
    """Each fix names the key to edit with the line it is on (or the block it goes under),
    and its edits, applied to the document, load without error (`check` accepts them);
    following the fixes ends in ALLOWED."""
    doc = copy.deepcopy(doc)
    request_ = {"origin": APP, **request_}
    text = yaml.safe_dump(doc, sort_keys=False)
    result = explain(config(text), **request_)
    assert not result.allowed
    assert words in result.fix, result.fix
    if not key:  # a fix in the page, not the config
        assert not result.fix_edits
        return
    assert result.fix_edits[0].key == key, result.fix
    lines = text.splitlines()
    for edit in result.fix_edits:
        if edit.line:  # the line named holds the key, or the block it goes under
            assert f"({edit.file}:{edit.line}" in result.fix
            assert (
                lines[edit.line - 1]
                .lstrip(" -")
                .startswith((edit.key.rsplit(".", 1)[-1] + ":", "cors:", "path_prefix:"))
            ), (edit, lines[edit.line - 1])
    for _ in range(4):
        if result.allowed:
            break
        assert result.fix_edits, render_text(result)
        apply_edits(doc, result.fix_edits)
        request_["origin"] = result.did_you_mean or request_["origin"]
        result = explain(config(doc), **request_)  # raises ConfigError if check refuses
    assert result.allowed, render_text(result)


def test_a_key_set_by_a_flag_is_named_by_the_flag() -> None:
    loaded = parse_config(
        yaml.safe_dump(BASE, sort_keys=False),
        "config.yaml",
        {},
        [Override(("cors", "allow_origins"), [APP], "--allow-origin")],
    )
    result = explain(loaded, "https://new.example")
    assert result.fix.startswith("add 'https://new.example' to cors.allow_origins (--allow-origin)")


def test_explain_json_carries_the_suggestion_and_the_edits(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(TOP_OFF, sort_keys=False))
    runner = CliRunner()
    base = ["explain", "-c", str(path), "--format", "json", "--origin"]
    result = runner.invoke(cli, [*base, "https://app.example.com/"])
    assert result.exit_code == 1, result.output
    data = json.loads(result.stdout)
    assert data["verdict"] == "blocked" and data["reason"] == "origin_malformed"
    assert data["did_you_mean"] == APP
    assert data["fix_edits"] == [
        {"op": "set", "key": "cors", "value": {"allow_origins": [APP]}, "file": str(path),
         "line": 2}
    ]  # fmt: skip
    text = runner.invoke(cli, ["explain", "-c", str(path), "--origin", APP])
    assert text.exit_code == 1
    assert f"Fix:     cors ({path}:2) is false" in text.stdout
    put = runner.invoke(cli, [*base, APP, "-X", "put"])
    assert json.loads(put.stdout)["method"] == "PUT"


@pytest.mark.parametrize(
    ("headers", "dropped"),
    [
        ([("Origin", "https://evil.example")], "Origin"),
        ([("Cookie", "a=1")], "Cookie"),
        ([("Sec-Fetch-Mode", "cors")], "Sec-Fetch-Mode"),
        ([("Proxy-Authorization", "Basic x")], "Proxy-Authorization"),
        ([("X-HTTP-Method-Override", "get, trace")], "X-HTTP-Method-Override"),
        ([("X-Method-Override", "Track")], "X-Method-Override"),
    ],
)
def test_explain_leaves_out_the_headers_fetch_drops(
    headers: list[tuple[str, str]], dropped: str
) -> None:
    """Forbidden request headers: fetch() drops them silently (an Origin the page writes
    is not a second Origin, a method override naming TRACE is no unlisted header)."""
    result = explain(CONFIG, APP, "GET", "/x", headers)
    assert result.allowed, render_text(result)
    assert f"fetch() drops the header {dropped} (a forbidden header)" in render_text(result)
    assert [s.outcome for s in result.steps if s.title == "Headers"] == ["info"]


def test_explain_keeps_a_method_override_naming_an_allowed_method() -> None:
    result = explain(CONFIG, APP, "GET", "/x", [("X-HTTP-Method-Override", "PATCH")])
    assert not result.allowed and result.reason == "header_not_allowed:x-http-method-override"


@pytest.mark.parametrize("value", ["a\x00b", "a\nb", "a\rb", "caf\u0113"])
def test_explain_a_header_value_fetch_refuses(value: str) -> None:
    result = explain(CONFIG, APP, "GET", "/x", [("X-Custom", value)])
    assert not result.allowed and result.reason == "fetch_header_refused"
    assert result.failure is None  # no request: no CORS error either
    assert "fetch() throws TypeError" in render_text(result)


def test_explain_strips_the_whitespace_fetch_strips() -> None:
    result = explain(CONFIG, APP, "POST", "/x", [("Content-Type", "\ttext/plain \n")])
    assert result.allowed and "Preflight" not in [s.title for s in result.steps]


@pytest.mark.parametrize("value", ["text/plain\x7f", "text/plain\x01"])
def test_explain_a_header_value_corsproxys_parser_refuses_is_a_400(value: str) -> None:
    """fetch() sends DEL and the other controls but tab; llhttp answers 400 to them."""
    result = explain(CONFIG, APP, "POST", "/x", [("Content-Type", value)])
    assert not result.allowed and result.reason == "header_unparsable"
    assert result.failure is not None and result.failure.chrome == "MissingAllowOriginHeader"
    assert "invalid header value char" in render_text(result)


def test_a_top_level_false_turned_on_by_a_variable_is_fixed_by_replacing_it(
    tmp_path: Path,
) -> None:
    """`cors: false` with CORSPROXY_ALLOW_METHODS set: the flag turns cors on; nothing can go
    *under* `false`, so the fix replaces it with a block, and following it passes."""
    path = tmp_path / "cf.yaml"
    path.write_text(
        "upstream: http://127.0.0.1:9\ncors: false\nroutes:\n"
        "  - path_prefix: /api\n    cors: {allow_origins: [https://a.example]}\n"
    )
    env = {"CORSPROXY_ALLOW_METHODS": "PUT"}
    args = ["explain", "-c", str(path), "--origin", "https://a.example", "-X", "PUT"]
    text = CliRunner().invoke(cli, [*args, "--path", "/y"], env=env)
    assert text.exit_code == 1, text.output
    assert f"cors ({path}:2) is false in the file, but flags or variables" in text.stdout
    assert "under cors" not in text.stdout
    assert (
        f"Fix:     replace `false` at cors ({path}:2) with a block: cors: "
        "{allow_origins: ['https://a.example']}"
    ) in text.stdout
    data = json.loads(
        CliRunner().invoke(cli, [*args, "--path", "/y", "--format", "json"], env=env).stdout
    )
    assert data["fix_edits"] == [
        {"op": "add", "key": "cors.allow_origins", "value": "https://a.example",
         "file": str(path), "line": 2}
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("method", "allowed", "said"),
    [
        ("DELETE", ["PUT"], False),  # fetch() upper-cases delete: case plays no part
        ("PATCH", ["PUT"], True),  # sent as written: patch would not be PATCH
        ("patch", ["PATCH"], True),  # differs from a listed one only by case
        ("PATCH", ["patch"], True),
    ],
)
def test_case_sensitivity_is_mentioned_only_where_it_matters(
    method: str, allowed: list[str], said: bool
) -> None:
    loaded = config(
        {
            "upstream": "http://legacy:9000",
            "cors": {"allow_origins": [APP], "allow_methods": allowed},
        }
    )
    text = render_text(explain(loaded, APP, method, "/x"))
    assert "not in allow_methods" in text
    assert ("(methods are case-sensitive)" in text) is said, text


def test_explain_on_the_command_line_keeps_a_trailing_control_character() -> None:
    """Only spaces and tabs around -H's value go (as fetch() strips them): a trailing \\x1f
    (whitespace to Python) is sent by fetch() and refused by corsproxy's parser."""
    path = "/x"
    args = ["explain", "--upstream", "http://127.0.0.1:9", "--allow-origin", APP]
    result = CliRunner().invoke(
        cli, [*args, "--origin", APP, "--path", path, "-H", "Content-Type: text/plain\x1f"]
    )
    assert result.exit_code == 1, result.output
    assert "VERDICT: BLOCKED (header_unparsable)" in result.stdout
