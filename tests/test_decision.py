"""The CORS decision, case by case.

Each case is named after its source row: `O`, `C`, `P`, `U`, `R` rows of
shared/reference/cors-anchors.md section 4, and `A` rows of security-anchors.md table A.
Where corsproxy deliberately differs from an anchor's recommendation, the case says why.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import pytest

from corsproxy.policy.cors import (
    ACAC,
    ACAH,
    ACAM,
    ACAO,
    ACAPN,
    ACEH,
    ACMA,
    ACTUAL_VARY,
    MEMO_ENTRIES,
    PREFLIGHT_VARY,
    Action,
    CorsPolicy,
    Kind,
    Reason,
    ReasonCode,
    RequestView,
    decide,
    decide_cached,
    merge_vary,
    response_headers,
)
from tests.helpers import aca, policy, request

APP = "https://app.example.com"
PNA_VARY = (*PREFLIGHT_VARY, "Access-Control-Request-Private-Network")

# Policy fixtures of security-anchors.md section 3, in corsproxy's YAML terms.
FIXTURES: dict[str, dict[str, Any]] = {
    "P1": {
        "allow_origins": [APP],
        "allow_credentials": True,
        "allow_methods": ["GET", "POST", "PUT", "PATCH", "DELETE"],
        "allow_headers": ["content-type", "x-requested-with", "authorization"],
        "expose_headers": ["x-request-id"],
        "max_age": 600,
    },
    "P2": {
        "allow_origins": ["https://*.example.com"],
        "allow_credentials": True,
        "allow_methods": ["GET", "PUT"],
    },
    "P3": {"allow_origins": ["*"], "allow_methods": ["GET"], "allow_headers": "*"},
    "P5": {"allow_origins": [APP], "allow_private_network": True},
    "P6": {"allow_origins": ["https://foo.com", "https://bar.com"]},
    "P7": {"allow_origins": ["http://[::1]:3000", "http://127.0.0.1:3000"]},
    "foobar": {"allow_origins": ["http://foobar.com"]},
    "foobar-put": {"allow_origins": ["http://foobar.com"], "allow_methods": ["PUT", "DELETE"]},
    "foobar-creds": {
        "allow_origins": ["http://foobar.com"],
        "allow_credentials": True,
        "allow_insecure_origins": True,  # rs/cors's rows use http origins
    },
    "wild-bar": {"allow_origins": ["http://*.bar.com"]},
    "wild-example": {"allow_origins": ["https://*.example.com"]},
    "regex-org": {"allow_origins": [r"regex:https://.*\.example\.org"]},
    "regex-app": {"allow_origins": [r"regex:https://app\.example\.com"]},
    "client1": {"allow_origins": ["http://client1.example.org"]},
    "upper": {"allow_origins": ["http://DOMAIN2.com"]},
    "any": {"allow_origins": ["*"]},
    "any-headers": {"allow_origins": ["*"], "allow_headers": "*"},
    "creds-any-headers": {
        "allow_origins": [APP],
        "allow_credentials": True,
        "allow_headers": "*",
    },
    "headers-3": {
        "allow_origins": ["http://foobar.com"],
        "allow_headers": ["X-Header-1", "x-header-2", "X-HEADER-3"],
    },
    "headers-ca": {
        "allow_origins": ["http://foobar.com"],
        "allow_headers": ["Content-Type", "Authorization"],
    },
    "headers-example": {
        "allow_origins": ["http://foobar.com"],
        "allow_headers": ["X-Example", "Content-Type"],
    },
    "patch": {"allow_origins": ["http://foobar.com"], "allow_methods": ["PATCH"]},
    "methods-any": {"allow_origins": ["http://foobar.com"], "allow_methods": "*"},
    "max-age-10": {"allow_origins": ["http://foobar.com"], "max_age": 10},
    "max-age-0": {"allow_origins": ["http://foobar.com"], "max_age": 0},
    "expose": {
        "allow_origins": ["http://foobar.com"],
        "expose_headers": ["X-Header-1", "x-header-2"],
    },
    "reject": {"allow_origins": ["https://a.example"], "on_disallowed": "reject"},
    "report": {"allow_origins": ["https://a.example"], "mode": "report-only"},
    "null": {"allow_origins": ["null"]},
    "punycode": {"allow_origins": ["https://xn--bcher-kva.example"], "allow_credentials": True},
    "localhost": {"allow_origins": ["http://localhost:*"]},
    "spring": {
        "allow_origins": ["*"],
        "allow_methods": ["GET", "PUT"],
        "allow_headers": ["header1", "header2"],
    },
    "starlette": {"allow_origins": ["https://example.org"], "allow_headers": ["X-Example"]},
}


@cache
def fixture(name: str) -> CorsPolicy:
    return policy(**FIXTURES[name])


NONE: dict[str, str] = {}


@dataclass(frozen=True)
class Case:
    id: str
    policy: str
    request: RequestView
    action: Action
    aca: dict[str, str] | None = None  # exact Access-Control-* headers (None: not checked)
    vary: tuple[str, ...] | None = None
    reasons: tuple[str, ...] | None = None
    status: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def get(origin: str | None = None, method: str = "GET", **headers: str | list[str]) -> RequestView:
    if origin is not None:
        headers["origin"] = origin
    return request(method, "/api/r", **headers)


def preflight(origin: str, acrm: str = "GET", **headers: str | list[str]) -> RequestView:
    return request("OPTIONS", "/api/r", origin=origin, acrm=acrm, **headers)


FWD, PRE, REF = Action.FORWARD, Action.PREFLIGHT, Action.REFUSE

ORIGIN_CASES = [
    Case("O1", "foobar", get("http://foobar.com"), FWD, {ACAO: "http://foobar.com"}, ACTUAL_VARY),
    Case("O2", "foobar", get("http://barbaz.com"), FWD, NONE, ACTUAL_VARY, ("origin_not_allowed",)),
    Case("O3", "foobar", get(), FWD, NONE, ACTUAL_VARY, ("no_origin",)),
    Case("O4", "wild-bar", get("http://foo.bar.com"), FWD, {ACAO: "http://foo.bar.com"}),
    Case("O5", "wild-bar", get("http://foo.baz.com"), FWD, NONE),
    Case("O6-suffix", "wild-example", get("https://evil-example.com"), FWD, NONE),
    Case("O6-prefix", "wild-example", get("https://example.com.evil.net"), FWD, NONE),
    Case("O6-apex", "wild-example", get("https://example.com"), FWD, NONE),
    # Decision (documented): `*.` stands for one or more labels, as in rs/cors and Spring.
    Case(
        "O7", "wild-example", get("https://a.b.example.com"), FWD, {ACAO: "https://a.b.example.com"}
    ),
    Case("O8", "regex-org", get("https://subdomain.example.org.hacker.com"), FWD, NONE),
    Case("O9", "regex-app", get("https://appXexample.com"), FWD, NONE),
    # Issue #2 rule 5: a default port equals none (anchor O10 expects no match; the
    # browser never sends `:80`, and the echo is exactly what was sent).
    Case(
        "O10",
        "client1",
        get("http://client1.example.org:80"),
        FWD,
        {ACAO: "http://client1.example.org:80"},
    ),
    Case("O11", "client1", get("https://client1.example.org"), FWD, NONE),
    Case("O12", "upper", get("http://domain2.com"), FWD, {ACAO: "http://domain2.com"}),
    Case("O13", "P1", get("null"), FWD, NONE, ACTUAL_VARY),
    Case("O14", "any", get("null"), FWD, {ACAO: "*"}),
    # U6/O15 pinned: `*` answers still carry `Vary: Origin` (no-Origin answers differ).
    Case("O15", "any", get("http://foobar.com"), FWD, {ACAO: "*"}, ACTUAL_VARY),
    Case("O16", "any", get(), FWD, NONE, ACTUAL_VARY, ("no_origin",)),
    Case("O17", "foobar", get("https://other.example"), FWD, NONE),
    Case("O18", "P6", get(""), FWD, NONE, ACTUAL_VARY, ("no_origin",)),
]

CREDENTIAL_CASES = [
    Case(
        "C3",
        "foobar-creds",
        preflight("http://foobar.com"),
        PRE,
        {ACAO: "http://foobar.com", ACAC: "true", ACAM: "GET, HEAD, POST", ACMA: "600"},
        PREFLIGHT_VARY,
        status=204,
    ),
    Case(
        "C4",
        "foobar-creds",
        get("http://foobar.com"),
        FWD,
        {ACAO: "http://foobar.com", ACAC: "true"},
    ),
    Case("C5", "P1", get("https://evil.example"), FWD, NONE, ACTUAL_VARY),
    Case(
        "C6",
        "creds-any-headers",
        preflight(APP, acrh="x-a"),
        PRE,
        {ACAO: APP, ACAC: "true", ACAM: "GET, HEAD, POST", ACAH: "x-a", ACMA: "600"},
    ),
    Case(
        "C7",
        "any-headers",
        preflight("http://x.test", acrh="Header1, Header2"),
        PRE,
        {ACAO: "*", ACAM: "GET, HEAD, POST", ACAH: "header1, header2", ACMA: "600"},
    ),
    Case(
        "C8",
        "P1",
        preflight(APP, acrpn="true"),
        REF,
        NONE,
        PREFLIGHT_VARY,
        ("private_network_not_allowed",),
        status=403,
    ),
]

PREFLIGHT_CASES = [
    Case(
        "P1",
        "foobar-put",
        preflight("http://foobar.com", "PUT"),
        PRE,
        {ACAO: "http://foobar.com", ACAM: "PUT, DELETE", ACMA: "600"},
        PREFLIGHT_VARY,
        status=204,
    ),
    Case(
        "P2",
        "foobar-put",
        preflight("http://foobar.com", "PATCH"),
        REF,
        NONE,
        PREFLIGHT_VARY,
        ("method_not_allowed:PATCH",),
        status=403,
    ),
    Case(
        "P3",
        "patch",
        preflight("http://foobar.com", "patch"),
        REF,
        NONE,
        reasons=("method_not_allowed:patch",),
    ),
    Case(
        "P4",
        "headers-3",
        preflight("http://foobar.com", acrh="x-header-1,x-header-2"),
        PRE,
        {
            ACAO: "http://foobar.com",
            ACAM: "GET, HEAD, POST",
            ACAH: "x-header-1, x-header-2",
            ACMA: "600",
        },
    ),
    Case(
        "P5",
        "headers-3",
        preflight("http://foobar.com", acrh="x-header-1,x-header-4"),
        REF,
        NONE,
        reasons=("header_not_allowed:x-header-4",),
    ),
    Case(
        "P6",
        "headers-ca",
        preflight("http://foobar.com", acrh=["authorization", "content-type"]),
        PRE,
        extra={ACAH: "authorization, content-type"},
    ),
    Case(
        "P7",
        "headers-ca",
        preflight("http://foobar.com", acrh=["authorization\t", " ", " content-type"]),
        PRE,
        extra={ACAH: "authorization, content-type"},
    ),
    Case(
        "P8",
        "headers-example",
        preflight("http://foobar.com", acrh="X-Example, Content-Type"),
        PRE,
        extra={ACAH: "x-example, content-type"},
    ),
    Case("P9", "P1", preflight(APP, acrh="," * (1 << 20)), REF, NONE, reasons=("headers_invalid",)),
    Case(
        "P9-lines", "P1", preflight(APP, acrh=[","] * 1000), REF, NONE, reasons=("headers_invalid",)
    ),
    Case(
        "P10",
        "any-headers",
        preflight("http://a.test", acrh="x-header-1,x-header-2"),
        PRE,
        extra={ACAH: "x-header-1, x-header-2"},
    ),
    # P11: the default allows the CORS-safelisted names only.
    Case(
        "P11",
        "foobar",
        preflight("http://foobar.com", acrh="x-requested-with"),
        REF,
        reasons=("header_not_allowed:x-requested-with",),
    ),
    Case(
        "P11-safelisted",
        "foobar",
        preflight("http://foobar.com", acrh="content-type"),
        PRE,
        extra={ACAH: "content-type"},
    ),
    Case("P12", "max-age-10", preflight("http://foobar.com"), PRE, extra={ACMA: "10"}),
    Case("P13", "max-age-0", preflight("http://foobar.com"), PRE, extra={ACMA: "0"}),
    # P14 differs by design: issue #2 makes 600 the default, so ACMA is always sent.
    Case("P14", "foobar", preflight("http://foobar.com"), PRE, extra={ACMA: "600"}),
    Case(
        "P15",
        "P5",
        preflight(APP, acrpn="true"),
        PRE,
        {ACAO: APP, ACAM: "GET, HEAD, POST", ACMA: "600", ACAPN: "true"},
        PNA_VARY,
    ),
    Case(
        "P16",
        "foobar",
        preflight("http://foobar.com", acrpn="true"),
        REF,
        NONE,
        reasons=("private_network_not_allowed",),
    ),
    Case(
        "P17", "foobar", preflight("http://b.example"), REF, NONE, reasons=("origin_not_allowed",)
    ),
    Case(
        "P19",
        "foobar",
        request("OPTIONS", "/r", origin="http://foobar.com"),
        FWD,
        {ACAO: "http://foobar.com"},
        ACTUAL_VARY,
    ),
    Case(
        "P20",
        "foobar",
        request("OPTIONS", "/r", acrm="GET"),
        FWD,
        NONE,
        ACTUAL_VARY,
        ("no_origin",),
    ),
    Case(
        "P21",
        "starlette",
        preflight("https://another.org", "PUT", acrh="X-Nope"),
        REF,
        NONE,
        reasons=("origin_not_allowed", "method_not_allowed:PUT", "header_not_allowed:x-nope"),
    ),
    Case("P22", "methods-any", preflight("http://foobar.com", "POST"), PRE, extra={ACAM: "POST"}),
    Case(
        "P22-echo",
        "methods-any",
        preflight("http://foobar.com", "PROPFIND"),
        PRE,
        extra={ACAM: "PROPFIND"},
    ),
    Case(
        "P23", "foobar", preflight("http://foobar.com", "GET"), PRE, extra={ACAM: "GET, HEAD, POST"}
    ),
    Case(
        "P24",
        "client1",
        preflight("http://client1.example.org"),
        PRE,
        {ACAO: "http://client1.example.org", ACAM: "GET, HEAD, POST", ACMA: "600"},
    ),
    Case(
        "P26",
        "spring",
        preflight("http://x.test", acrh="Header1"),
        PRE,
        {ACAO: "*", ACAM: "GET, PUT", ACAH: "header1", ACMA: "600"},
    ),
]

SECURITY_CASES = [
    Case(
        "A1",
        "P1",
        get(APP, Cookie="s=1"),
        FWD,
        {ACAO: APP, ACAC: "true", ACEH: "x-request-id"},
        ACTUAL_VARY,
    ),
    Case("A2", "P1", get("https://evil.example"), FWD, NONE, ACTUAL_VARY),
    Case("A3", "P1", get("https://example.com"), FWD, NONE),
    Case("A4", "P1", get("https://app.example.com.evil.com"), FWD, NONE),
    *[
        Case(f"A5-{o}", "P1", get(o), FWD, NONE)
        for o in (
            "https://d3vapp.example.com",
            "https://evilexample.com",
            "https://evilapp.example.com",
        )
    ],
    *[
        Case(f"A6-{o}", "P1", get(o), FWD, NONE)
        for o in ("https://xample.com", "https://pp.example.com")
    ],
    *[
        Case(f"A7-{o}", "P1", get(o), FWD, NONE)
        for o in ("https://appxexample.com", "https://app.exampleacom")
    ],
    Case("A8", "P1", get("https://app.example.com_.evil.com"), FWD, NONE),
    Case("A9", "P1", get("https://app.example.com%60.evil.com"), FWD, NONE),
    *[
        Case(f"A10-{c!r}", "P1", get(f"https://app.example.com{c}.evil.com"), FWD, NONE)
        for c in [
            "_",
            "-",
            '"',
            "{",
            "}",
            "+",
            "^",
            "%60",
            "!",
            "~",
            "`",
            ";",
            "|",
            "&",
            "'",
            "(",
            ")",
            "*",
            ",",
            "$",
            "=",
            "%0b",
        ]
    ],
    Case("A11", "P1", get("https://evil.app.example.com"), FWD, NONE),
    Case("A12", "P1", get("http://app.example.com"), FWD, NONE),
    *[
        Case(f"A13-{o}", "P1", get(o), FWD, NONE)
        for o in (
            "https://whatever.github.io",
            "http://jsbin.com",
            "https://codepen.io",
            "https://jsfiddle.net",
            "http://www.webdevout.net",
            "https://repl.it",
        )
    ],
    Case("A14", "P1", get("null"), FWD, NONE),
    Case("A15-NULL", "null", get("NULL"), FWD, NONE),
    Case("A15-Null", "null", get("Null"), FWD, NONE),
    Case("A15-null-listed", "null", get("null"), FWD, {ACAO: "null"}),
    Case("A17", "P1", get("https://app.example.com:8443"), FWD, NONE),
    *[
        Case(f"A19-{o}", "P1", get(o), FWD, NONE)
        for o in ("https://app.example.com/", "https://app.example.com/x?y")
    ],
    Case("A20", "P1", get("https://app.example.com."), FWD, NONE),
    *[
        Case(f"A21-{o}", "P1", get(o), FWD, NONE)
        for o in ("https://app.example.com@evil.com", "https://evil.com#@app.example.com")
    ],
    Case("A22", "P1", get(f"{APP}, https://evil.com"), FWD, NONE),
    Case(
        "A23",
        "P1",
        get([APP, "https://evil.com"]),
        Action.BAD_REQUEST,
        NONE,
        reasons=("origin_multiple",),
        status=400,
    ),
    Case("A23-reverse", "P1", get(["https://evil.com", APP]), Action.BAD_REQUEST, NONE, status=400),
    Case("A24", "P1", get(""), FWD, NONE, ACTUAL_VARY),
    Case("A25", "P1", get(f"   {APP} \t"), FWD, extra={ACAO: APP}),
    Case("A26-utf8", "punycode", get("https://bücher.example"), FWD, NONE),
    Case(
        "A26-punycode",
        "punycode",
        get("https://xn--bcher-kva.example"),
        FWD,
        {ACAO: "https://xn--bcher-kva.example", ACAC: "true"},
    ),
    Case("A27", "P1", get("https://app.example.com\udce4"), FWD, NONE),
    Case("A28", "P1", get("https://a\rSet-Cookie: x"), FWD, NONE),
    Case("A29", "P1", get("https://" + "a" * 8000 + ".example.com"), FWD, NONE),
    Case("A30", "P7", get("http://[::1]:3000"), FWD, {ACAO: "http://[::1]:3000"}),
    *[
        Case(f"A30-{o}", "P7", get(o), FWD, NONE)
        for o in ("http://[0:0:0:0:0:0:0:1]:3000", "http://[::0001]:3000", "http://[::1]")
    ],
    *[
        Case(f"A31-{o}", "P7", get(o), FWD, NONE)
        for o in (
            "http://2130706433:3000",
            "http://0x7f.0.0.1:3000",
            "http://127.1:3000",
            "http://127.0.0.1.:3000",
        )
    ],
    *[
        Case(f"A32-{p}", "P1", get(f"{APP}{p}"), FWD, NONE)
        for p in (":", ":0", ":65536", ":abc", ":123ab")
    ],
    *[
        Case(f"A33-{o}", "P2", get(o), FWD, {ACAO: o, ACAC: "true"}, ACTUAL_VARY)
        for o in ("https://a.example.com", "https://a.b.example.com")
    ],
    Case("A34", "P2", get("https://example.com"), FWD, NONE),
    *[
        Case(f"A35-{o}", "P2", get(o), FWD, NONE)
        for o in (
            "https://evilexample.com",
            "https://example.com.evil.com",
            "https://a.example.com.evil.com",
            "https://a.example.com%2eevil.com",
        )
    ],
    Case("A36", "P2", get("http://a.example.com"), FWD, NONE),
    *[
        Case(f"A37-{o}", "P2", get(o), FWD, NONE)
        for o in ("https://.example.com", "https://a..example.com")
    ],
    Case("A38", "P2", get("https://a.example.com:8443"), FWD, NONE),
    *[
        Case(f"A39-{o}", "P6", get(o), FWD, NONE, ACTUAL_VARY)
        for o in ("https://barfoo.com", "https://foobar.com")
    ],
    Case("A40", "P3", get("https://anyone.test"), FWD, {ACAO: "*"}),
    # A41/A56 differ by design (issue #2 rule 4): `*` echoes what was requested, so it
    # covers Authorization, and works with credentials because the answer is never `*`.
    Case(
        "A41",
        "P3",
        preflight("https://x.test", acrh="authorization"),
        PRE,
        extra={ACAH: "authorization"},
    ),
    Case("A42", "P3", get("https://x.test", Cookie="a=1"), FWD, {ACAO: "*"}),
    Case(
        "A49",
        "P1",
        preflight(APP, "PUT", acrh="content-type,x-requested-with"),
        PRE,
        {
            ACAO: APP,
            ACAC: "true",
            ACAM: "GET, POST, PUT, PATCH, DELETE",
            ACAH: "content-type, x-requested-with",
            ACMA: "600",
        },
        PREFLIGHT_VARY,
        status=204,
    ),
    Case(
        "A50", "P1", preflight("https://evil.example", "PUT"), REF, NONE, PREFLIGHT_VARY, status=403
    ),
    Case("A51", "P1", preflight(APP, "PURGE"), REF, NONE, reasons=("method_not_allowed:PURGE",)),
    Case("A52", "P1", preflight(APP, "patch"), REF, NONE),
    *[
        Case(f"A53-{m}", "methods-any", preflight("http://foobar.com", m), REF, NONE)
        for m in ("CONNECT", "TRACE", "TRACK", "connect")
    ],
    *[
        Case(f"A54-{m}", "foobar-put", preflight("http://foobar.com", m), PRE)
        for m in ("GET", "HEAD", "POST")
    ],
    Case("A55", "P1", preflight(APP, acrh="x-evil"), REF, NONE),
    Case(
        "A56",
        "creds-any-headers",
        preflight(APP, acrh="authorization"),
        PRE,
        extra={ACAH: "authorization", ACAC: "true"},
    ),
    Case("A57", "P1", preflight(APP, acrh="Content-Type , X-Requested-With"), PRE),
    Case(
        "A58-commas",
        "P1",
        preflight(APP, acrh="," * 20000),
        REF,
        NONE,
        reasons=("headers_invalid",),
    ),
    Case(
        "A58-lines", "P1", preflight(APP, acrh=["x"] * 500), REF, NONE, reasons=("headers_invalid",)
    ),
    Case(
        "A58-token", "P1", preflight(APP, acrh="x" * 8000), REF, NONE, reasons=("headers_invalid",)
    ),
    Case(
        "A59",
        "P1",
        request("OPTIONS", "/api/r", origin=APP),
        FWD,
        {ACAO: APP, ACAC: "true", ACEH: "x-request-id"},
        ACTUAL_VARY,
    ),
    Case("A60", "P1", request("OPTIONS", "/api/r", acrm="PUT"), FWD, NONE),
    Case("A65", "P5", preflight(APP, acrpn="true"), PRE, extra={ACAPN: "true"}),
    Case("A66", "P1", preflight(APP, acrpn="true"), REF, NONE),
    Case("A67", "P5", preflight("https://evil.example", acrpn="true"), REF, NONE),
    Case("A72", "P1", get(APP), FWD, extra={ACAC: "true"}),
    Case("A74", "P1", get("null"), FWD, NONE),
    Case("A76", "P1", get("https://proxy.example", "POST"), FWD, NONE),
    Case("A77", "P1", get(APP, "HEAD"), FWD, {ACAO: APP, ACAC: "true", ACEH: "x-request-id"}),
    Case(
        "U1",
        "expose",
        get("http://foobar.com"),
        FWD,
        {ACAO: "http://foobar.com", ACEH: "X-Header-1, x-header-2"},
    ),
    Case("U2", "foobar", get("http://foobar.com"), FWD, {ACAO: "http://foobar.com"}),
    Case(
        "U13",
        "reject",
        get("https://b.example"),
        REF,
        NONE,
        ACTUAL_VARY,
        ("origin_not_allowed",),
        status=403,
    ),
    Case("U13-no-origin", "reject", get(), FWD, NONE, ACTUAL_VARY, ("no_origin",)),
    Case("U13-allowed", "reject", get("https://a.example"), FWD, {ACAO: "https://a.example"}),
    Case(
        "localhost-default-port",
        "localhost",
        get("http://localhost"),
        FWD,
        {ACAO: "http://localhost"},
    ),
    Case(
        "localhost-any-port",
        "localhost",
        get("http://localhost:5173"),
        FWD,
        {ACAO: "http://localhost:5173"},
    ),
    Case("localhost-not-https", "localhost", get("https://localhost:5173"), FWD, NONE),
    Case("localhost-not-sub", "localhost", get("http://a.localhost:5173"), FWD, NONE),
]

ALL_CASES = ORIGIN_CASES + CREDENTIAL_CASES + PREFLIGHT_CASES + SECURITY_CASES


@pytest.mark.parametrize("case", ALL_CASES, ids=[c.id for c in ALL_CASES])
def test_decision(case: Case) -> None:
    decision = decide(fixture(case.policy), case.request)
    assert decision.action is case.action
    if case.aca is not None:
        assert aca(decision) == case.aca
    if case.vary is not None:
        assert decision.vary == case.vary
    if case.reasons is not None:
        assert decision.reasons == case.reasons
    if case.status is not None:
        assert decision.status == case.status
    for name, value in case.extra.items():
        assert aca(decision).get(name) == value
    if decision.action is Action.REFUSE:
        assert aca(decision) == {}
        assert decision.body().startswith(b"CORS ")


def test_O19_no_state_leaks_between_requests() -> None:
    pol = policy(allow_origins=["https://example.org"])
    seen = [
        aca(decide(pol, get(o))).get(ACAO)
        for o in ("https://example.org", "https://other.org", "https://example.org")
    ]
    assert seen == ["https://example.org", None, "https://example.org"]


def test_P25_report_only_forwards_and_reports_what_enforce_would_do() -> None:
    pre = decide(fixture("report"), preflight("https://evil.example"))
    assert pre.action is Action.FORWARD
    assert pre.headers == () and pre.vary == () and not pre.strip_upstream_cors
    assert pre.would is not None and pre.would.action is Action.REFUSE
    assert pre.verdict == "would_refuse"
    assert pre.reason == "origin_not_allowed"
    actual = decide(fixture("report"), get("https://evil.example"))
    assert actual.verdict == "would_refuse" and actual.headers == ()
    ok = decide(fixture("report"), get("https://a.example"))
    assert ok.verdict == "allowed" and ok.headers == ()
    upstream = [("Access-Control-Allow-Origin", "*"), ("Vary", "Accept")]
    assert response_headers(pre, upstream) == upstream


def test_cors_false_refuses_preflights_and_strips_upstream_headers() -> None:
    from tests.helpers import config

    cfg = config({"upstream": "http://127.0.0.1:9", "cors": False})
    pre = decide(cfg.cors, preflight(APP))
    assert pre.action is Action.REFUSE and pre.reason == "cors_disabled" and aca(pre) == {}
    actual = decide(cfg.cors, get(APP))
    assert actual.action is Action.FORWARD and actual.strip_upstream_cors
    out = response_headers(actual, [("Access-Control-Allow-Origin", "*"), ("X-A", "1")])
    assert out == [("X-A", "1")]


def test_verdicts_for_metrics() -> None:
    assert decide(fixture("P1"), get(APP)).verdict == "allowed"
    assert decide(fixture("P1"), get("https://evil.example")).verdict == "refused"
    assert decide(fixture("P1"), get()).verdict == "none"
    assert decide(fixture("P1"), preflight(APP)).kind is Kind.PREFLIGHT


# --- applying a decision to the upstream's response (U and A7 rows) -------------------

ALLOWED = decide(policy(**FIXTURES["P1"]), get(APP))
DISALLOWED = decide(policy(**FIXTURES["P1"]), get("https://evil.example"))

RESPONSE_CASES = [
    ("U3", ALLOWED, [("Vary", "Accept-Encoding")], "Accept-Encoding, Origin"),
    ("U4", ALLOWED, [("Vary", "origin")], "origin"),
    ("U5", ALLOWED, [("Vary", "*")], "*"),
    (
        "A69-lines",
        ALLOWED,
        [("Vary", "Accept"), ("vary", "Accept-Encoding, accept")],
        "Accept, Accept-Encoding, Origin",
    ),
    ("A69-star-late", ALLOWED, [("Vary", "Accept"), ("Vary", "*")], "*"),
    ("A70", decide(policy(**FIXTURES["P1"]), get()), [], "Origin"),
    ("A71/U7", DISALLOWED, [], "Origin"),
]


@pytest.mark.parametrize(
    ("decision", "upstream", "vary"),
    [c[1:] for c in RESPONSE_CASES],
    ids=[c[0] for c in RESPONSE_CASES],
)
def test_vary_merge(decision: Any, upstream: list[tuple[str, str]], vary: str) -> None:
    out = response_headers(decision, upstream)
    assert [v for n, v in out if n.lower() == "vary"] == [vary]


def test_U8_A68_upstream_cors_headers_are_replaced_by_the_decision() -> None:
    upstream = [
        ("Access-Control-Allow-Origin", "*"),
        ("Access-Control-Allow-Credentials", "true"),
        ("access-control-allow-origin", "https://evil.example"),
        ("Access-Control-Expose-Headers", "X-Secret"),
        ("Access-Control-Allow-Methods", "PUT"),  # U11: preflight-only headers go too
        ("Set-Cookie", "a=1"),
        ("Set-Cookie", "b=2"),
        ("Content-Type", "application/json"),
    ]
    out = response_headers(ALLOWED, upstream)
    assert out == [
        ("Set-Cookie", "a=1"),
        ("Set-Cookie", "b=2"),
        ("Content-Type", "application/json"),
        (ACAO, APP),
        (ACAC, "true"),
        (ACEH, "x-request-id"),
        ("Vary", "Origin"),
    ]


def test_U9_disallowed_origin_gets_every_upstream_cors_header_removed() -> None:
    out = response_headers(DISALLOWED, [("Access-Control-Allow-Origin", "*"), ("X", "1")])
    assert out == [("X", "1"), ("Vary", "Origin")]


def test_A78_proxy_generated_errors_carry_cors_for_allowed_origins_only() -> None:
    body = [("Content-Type", "text/plain; charset=utf-8")]
    assert (ACAO, APP) in response_headers(ALLOWED, body)
    assert all(n != ACAO for n, _ in response_headers(DISALLOWED, body))


def test_merge_vary_table() -> None:
    assert merge_vary([], ["Origin"]) == "Origin"
    assert merge_vary(["a, ,b,,"], ["B", "c"]) == "a, b, c"
    assert merge_vary(["*"], ["Origin"]) == "*"
    assert merge_vary([" Origin "], PREFLIGHT_VARY) == ", ".join(PREFLIGHT_VARY)


# --- WebSocket handshakes: CORS does not protect them, so the decision checks Origin ------

PROXY = "http://api.example.com:8080"  # the proxy's own origin, as a client addressed it


def ws(origin: str | None = None, own: str = PROXY) -> RequestView:
    return dataclasses.replace(get(origin), websocket=True, own_origin=own)


def cors_false() -> CorsPolicy:
    from tests.helpers import config

    return config({"upstream": "http://127.0.0.1:9", "cors": False}).cors


@pytest.mark.parametrize(
    ("origin", "own", "action", "reason"),
    [
        ("https://evil.example", PROXY, Action.REFUSE, "websocket_cross_origin"),
        ("https://api.example.com:8080", PROXY, Action.REFUSE, "websocket_cross_origin"),
        ("http://api.example.com", PROXY, Action.REFUSE, "websocket_cross_origin"),  # port
        ("null", PROXY, Action.REFUSE, "websocket_cross_origin"),  # sandboxed page
        ("http://api.example.com:8080", "http://", Action.REFUSE, "websocket_cross_origin"),
        ("http://api.example.com:8080", PROXY, Action.FORWARD, "websocket_same_origin"),
        # Host is case-insensitive and a default port may be written out.
        ("http://api.example.com", "http://API.example.com:80", Action.FORWARD,
         "websocket_same_origin"),
        ("https://api.example.com", "https://api.example.com:443", Action.FORWARD,
         "websocket_same_origin"),
        (None, PROXY, Action.FORWARD, "no_origin"),  # not a browser
    ],
)  # fmt: skip
def test_websocket_on_a_route_without_cors_is_same_origin_only(
    origin: str | None, own: str, action: Action, reason: str
) -> None:
    decision = decide(cors_false(), ws(origin, own))
    assert (decision.action, decision.reason) == (action, reason)
    assert aca(decision) == {} and decision.vary == ()
    if action is Action.REFUSE:
        assert decision.status == 403 and decision.verdict == "refused"
        assert decision.body().startswith(b"WebSocket refused: cross-origin WebSocket")
    # An ordinary request with the same Origin is still forwarded (cors_disabled).
    if origin is not None:
        plain = decide(cors_false(), get(origin))
        assert (plain.action, plain.reason) == (Action.FORWARD, "cors_disabled")


@pytest.mark.parametrize("on_disallowed", ["forward", "reject"])
def test_websocket_from_an_origin_a_cors_route_does_not_allow_is_refused(
    on_disallowed: str,
) -> None:
    pol = policy(allow_origins=[APP], allow_credentials=True, on_disallowed=on_disallowed)
    refused = decide(pol, ws("https://evil.example"))
    assert (refused.action, refused.reason, refused.status) == (
        Action.REFUSE,
        "websocket_origin_not_allowed",
        403,
    )
    assert aca(refused) == {} and refused.vary == ACTUAL_VARY
    assert refused.body() == b"WebSocket refused: origin not allowed\n"
    allowed = decide(pol, ws(APP))
    assert allowed.action is Action.FORWARD and aca(allowed)[ACAO] == APP
    # The own origin does not matter on a CORS route: only the allow-list does.
    assert decide(pol, ws(PROXY)).reason == "websocket_origin_not_allowed"
    assert decide(pol, ws(None)).action is Action.FORWARD


def test_report_only_forwards_a_websocket_it_would_refuse() -> None:
    decision = decide(policy(allow_origins=[APP], mode="report-only"), ws("https://evil.ex"))
    assert decision.action is Action.FORWARD and not decision.strip_upstream_cors
    assert decision.verdict == "would_refuse"
    assert decision.reason == "websocket_origin_not_allowed"


def test_memoized_websocket_decisions_read_the_own_origin() -> None:
    pol = cors_false()
    origin = "http://api.example.com:8080"
    assert decide_cached(pol, ws(origin)).action is Action.FORWARD
    assert decide_cached(pol, ws(origin, own="http://other.example")).action is Action.REFUSE
    assert decide_cached(pol, ws(origin)).action is Action.FORWARD
    # A long Host is decided but never memoized.
    long_host = "http://" + "a" * 600 + ".example"
    pol.decisions.clear()
    assert decide_cached(pol, ws("https://evil.example", own=long_host)).action is Action.REFUSE
    assert len(pol.decisions) == 0


@pytest.mark.parametrize(
    ("cors", "origin", "strip"),
    [
        # Browsers attach cookies to a WebSocket handshake whatever CORS says, and nothing
        # stops the page reading it: without allow_credentials a cross-origin one loses them.
        ({"allow_origins": ["*"]}, "https://evil.example", True),
        ({"allow_origins": ["null"]}, "null", True),
        ({"allow_origins": [APP]}, APP, True),
        ({"allow_origins": [APP], "allow_credentials": True}, APP, False),
        ({"allow_origins": ["*"]}, PROXY, False),  # the proxy's own origin keeps them
        ({"allow_origins": ["*"]}, None, False),  # not a browser
    ],
)
def test_a_cross_origin_websocket_on_a_policy_without_credentials_is_forwarded_without_them(
    cors: dict[str, Any], origin: str | None, strip: bool
) -> None:
    pol = policy(**cors)
    decision = decide(pol, ws(origin))
    assert decision.action is Action.FORWARD
    assert decision.strip_credentials is strip
    assert decide_cached(pol, ws(origin)).strip_credentials is strip
    # Ordinary requests never strip (the browser decides what it sends).
    assert not decide(pol, get(origin)).strip_credentials
    # Report-only changes nothing on the wire, but says what enforce mode would do.
    shadow = decide(policy(**cors, mode="report-only"), ws(origin))
    assert not shadow.strip_credentials
    assert shadow.would is not None and shadow.would.strip_credentials is strip


def test_a_same_origin_websocket_on_a_route_without_cors_keeps_its_credentials() -> None:
    assert not decide(cors_false(), ws(PROXY)).strip_credentials


@pytest.mark.parametrize(
    ("reason", "text", "words"),
    [
        (Reason(ReasonCode.ORIGIN_ALLOWED), "origin_allowed", "origin_allowed"),
        (Reason(ReasonCode.NO_ORIGIN), "no_origin", "no_origin"),
        (Reason(ReasonCode.ORIGIN_NOT_ALLOWED), "origin_not_allowed", "origin not allowed"),
        (Reason(ReasonCode.ORIGIN_MULTIPLE), "origin_multiple", "more than one Origin header"),
        (Reason(ReasonCode.METHOD_NOT_ALLOWED, "PUT"), "method_not_allowed:PUT",
         "method 'PUT' not allowed"),
        (Reason(ReasonCode.HEADER_NOT_ALLOWED, "x-a"), "header_not_allowed:x-a",
         "header 'x-a' not allowed"),
        (Reason(ReasonCode.WEBSOCKET_CROSS_ORIGIN), "websocket_cross_origin",
         "cross-origin WebSocket to a path without cross-origin access"),
    ],
)  # fmt: skip
def test_a_reason_renders_as_the_code_string_of_logs_and_metrics(
    reason: Reason, text: str, words: str
) -> None:
    """Reason codes are an interface: the typed reason is exactly today's `code[:detail]`."""
    assert reason == text and str(reason) == text and type(str(reason)) is str
    assert json.dumps({"reason": reason}) == json.dumps({"reason": text})
    code, _, detail = text.partition(":")
    assert (reason.code.value, reason.detail) == (code, detail)
    assert reason.describe() == words


def test_a_refused_preflight_carries_typed_reasons_in_the_order_checked() -> None:
    pol = policy(allow_origins=[APP])
    decision = decide(pol, preflight("https://evil.example", "PUT", acrh="x-a, x-b"))
    assert [(r.code, r.detail) for r in decision.reasons] == [
        (ReasonCode.ORIGIN_NOT_ALLOWED, ""),
        (ReasonCode.METHOD_NOT_ALLOWED, "PUT"),
        (ReasonCode.HEADER_NOT_ALLOWED, "x-a"),
        (ReasonCode.HEADER_NOT_ALLOWED, "x-b"),
    ]
    assert decision.body() == (
        b"CORS preflight refused: origin not allowed; method 'PUT' not allowed; "
        b"header 'x-a' not allowed; header 'x-b' not allowed\n"
    )
    assert decision.status == 403 and decision.drop_method_overrides


def test_hot_decisions_outlive_a_flood_of_one_off_origins() -> None:
    """The memo is an LRU (two generations): an entry used once per half the memo's size
    stays memoized however many unique keys hostile traffic sends, and the memo stays bounded."""
    pol = policy(allow_origins=[APP])
    hot = [get(APP), preflight(APP, "GET")]
    first = [decide_cached(pol, r) for r in hot]
    for i in range(20 * MEMO_ENTRIES):
        decide_cached(pol, get(f"https://e{i}.evil.example"))
        assert len(pol.decisions) <= MEMO_ENTRIES
        if i % 100 == 0:
            # The same objects: memoized, not decided afresh after a flush.
            assert all(decide_cached(pol, r) is d for r, d in zip(hot, first, strict=True))
