"""`explain`: the browser's walk-through against a policy, with the browser's error names."""

from __future__ import annotations

import pytest

from corsproxy.commands.explain import explain, render_text, websocket_url
from corsproxy.config import Config
from corsproxy.policy.browser import is_safelisted_request_header, preflight_need
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
        "CORSPreflightDidNotSucceed",
    ),
    (
        "method-not-allowed",
        {"origin": APP, "method": "DELETE"},
        False,
        "method_not_allowed:DELETE",
        "CORSPreflightDidNotSucceed",
    ),
    (
        "header-not-allowed",
        {"origin": APP, "headers": [("X-Trace-Id", "1")]},
        False,
        "header_not_allowed:x-trace-id",
        "CORSPreflightDidNotSucceed",
    ),
    (
        "wildcard-with-credentials",
        {"origin": APP, "path": "/public/x", "credentials": True},
        False,
        "CORSNotSupportingCredentials",
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
        "CORSMIssingAllowCredentials",
        "CORSMIssingAllowCredentials",
    ),
    (
        "cors-false",
        {"origin": APP, "path": "/internal/x", "method": "PUT"},
        False,
        "cors_disabled",
        "CORSPreflightDidNotSucceed",
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
    (
        "private-network-allowed",
        {"origin": APP, "path": "/device", "private_network": True, "method": "PUT"},
        True,
        "origin_allowed",
        None,
    ),
    (
        "private-network-refused",
        {"origin": APP, "private_network": True, "method": "PUT"},
        False,
        "private_network_not_allowed",
        "CORSPreflightDidNotSucceed",
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
        "bad-path",
        {"origin": APP, "path": "/a/../../etc"},
        False,
        "path_escapes_root",
        "CORSMissingAllowOrigin",
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
    assert explain(CONFIG, APP, path="/x#frag").reason == "path_fragment"


def test_explain_report_only_says_the_wire_is_unchanged() -> None:
    assert "changes nothing on the wire" in render_text(explain(CONFIG, APP, path="/shadow"))


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
        "     FAIL  method DELETE: not in allow_methods (methods are case-sensitive)",
        "     FAIL  header x-trace-id: not in allow_headers",
        "       Vary: Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
        "VERDICT: BLOCKED (method_not_allowed:DELETE)",
        "  Firefox: CORSPreflightDidNotSucceed",
        "  Chrome:  PreflightMissingAllowOriginHeader: Response to preflight request doesn't "
        "pass access control check: No 'Access-Control-Allow-Origin' header is present on the "
        "requested resource.",
        "  Cause:   method 'DELETE' not allowed (the cause Firefox names CORSMethodNotFound)",
        "  Fix:     add DELETE to cors.allow_methods (test.yaml:6)",
    ]
    assert result.to_json()["reason"] == "method_not_allowed:DELETE"
    assert result.to_json()["cause"] == (
        "method 'DELETE' not allowed (the cause Firefox names CORSMethodNotFound)"
    )
    ws = explain(CONFIG, "https://evil.example", websocket=True, proxy_origin="http://p.local")
    assert render_text(ws).splitlines()[-2:] == [
        "VERDICT: BLOCKED (websocket_origin_not_allowed)",
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
