"""The Firefox driver (tests/browsers/firefox.py): Firefox's CORS messages become MDN reason
codes, every reason Firefox 153 can be made to log is provoked against a tiny local API and
read back with its code and URL, a browser that cannot start fails with its error, and
closing the engine leaves no process behind.

The message table is checked offline against Gecko's own message templates; the rest needs
firefox-esr, node and `npm ci --prefix tests/browsers` (skips without them, fails under
CORSPROXY_REQUIRE_BROWSER=1 when firefox is among CORSPROXY_BROWSERS).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator

import pytest
from aiohttp import web

from tests.browsers import firefox
from tests.browsers.engine import CorsError, need
from tests.browsers.servers import ThreadedServers, page_app

U = "http://127.0.0.1:1/x"
BLOCKED = f"Cross-Origin Request Blocked: The Same Origin Policy disallows reading the remote resource at {U}."  # noqa: E501

# Gecko's templates (dom/locales/en-US/chrome/security/security.properties, CORS* keys) with
# %1$S = U, as Firefox prints them (curly quotes), and the code each must map to.
TEMPLATES = [
    ("CORSDisabled", f"{BLOCKED} (Reason: CORS disabled)."),
    (
        "CORSDidNotSucceed",
        f"{BLOCKED} (Reason: CORS request did not succeed). Status code: (null).",
    ),
    (
        "CORSOriginHeaderNotAdded",
        f"{BLOCKED} (Reason: CORS header \u2018Origin\u2019 cannot be added).",
    ),
    (
        "CORSExternalRedirectNotAllowed",
        f"{BLOCKED} (Reason: CORS request external redirect not allowed).",
    ),
    ("CORSRequestNotHttp", f"{BLOCKED} (Reason: CORS request not http)."),
    (
        "CORSMissingAllowOrigin",
        f"{BLOCKED} (Reason: CORS header \u2018Access-Control-Allow-Origin\u2019 missing). "
        "Status code: 403.",
    ),
    (
        "CORSMultipleAllowOriginNotAllowed",
        f"{BLOCKED} (Reason: Multiple CORS header \u2018Access-Control-Allow-Origin\u2019 not "
        "allowed).",
    ),
    (
        "CORSAllowOriginNotMatchingOrigin",
        f"{BLOCKED} (Reason: CORS header \u2018Access-Control-Allow-Origin\u2019 does not match "
        "\u2018http://a.example, http://b.example\u2019).",
    ),
    (
        "CORSNotSupportingCredentials",
        "Cross-Origin Request Blocked: The Same Origin Policy disallows reading the remote "
        f"resource at \u2018{U}\u2019. (Reason: Credential is not supported if the CORS header "
        "\u2018Access-Control-Allow-Origin\u2019 is \u2018*\u2019).",
    ),
    (
        "CORSMethodNotFound",
        f"{BLOCKED} (Reason: Did not find method in CORS header "
        "\u2018Access-Control-Allow-Methods\u2019).",
    ),
    (
        "CORSMIssingAllowCredentials",
        f"{BLOCKED} (Reason: expected \u2018true\u2019 in CORS header "
        "\u2018Access-Control-Allow-Credentials\u2019).",
    ),
    (
        "CORSPreflightDidNotSucceed",
        f"{BLOCKED} (Reason: CORS preflight response did not succeed). Status code: 500.",
    ),
    (
        "CORSInvalidAllowMethod",
        f"{BLOCKED} (Reason: invalid token \u2018P(UT\u2019 in CORS header "
        "\u2018Access-Control-Allow-Methods\u2019).",
    ),
    (
        "CORSInvalidAllowHeader",
        f"{BLOCKED} (Reason: invalid token \u2018x(one)\u2019 in CORS header "
        "\u2018Access-Control-Allow-Headers\u2019).",
    ),
    (
        "CORSMissingAllowHeaderFromPreflight",
        f"{BLOCKED} (Reason: header \u2018x-other\u2019 is not allowed according to header "
        "\u2018Access-Control-Allow-Headers\u2019 from CORS preflight response).",
    ),
    (
        "CORSAllowHeaderFromPreflightDeprecation",
        "Cross-Origin Request Warning: The Same Origin Policy will disallow reading the remote "
        f"resource at {U} soon. (Reason: When the `Access-Control-Allow-Headers` is `*`, the "
        "`Authorization` header is not covered. To include the `Authorization` header, it must "
        "be explicitly listed in CORS header `Access-Control-Allow-Headers`).",
    ),
]


@pytest.mark.parametrize(("code", "text"), TEMPLATES, ids=[c for c, _ in TEMPLATES])
def test_every_firefox_cors_message_maps_to_its_mdn_reason(code: str, text: str) -> None:
    assert firefox.cors_error(text) == CorsError(code, text, U)


def test_an_unknown_cors_message_is_kept_as_unknown_and_others_are_not_cors() -> None:
    strange = f"{BLOCKED} (Reason: something Firefox 200 says)."
    assert firefox.cors_error(strange) == CorsError("unknown", strange, U)
    bare = "Cross-Origin Request Blocked: a text with no reason"
    assert firefox.cors_error(bare) == CorsError("unknown", bare, None)
    assert firefox.cors_error("Uncaught Error: boom") is None
    assert firefox.cors_error("Cookie \u201cc\u201d has been rejected as third-party.") is None


# ---------------------------------------------------------------- the real engine


def _api_response(request: web.Request) -> web.StreamResponse:
    origin = request.headers.get("Origin", "")
    preflight = request.method == "OPTIONS"
    own = [("Access-Control-Allow-Origin", origin)]
    headers: list[tuple[str, str]] = {
        "/missing": [],
        "/multiple": own + own,
        "/mismatch": [("Access-Control-Allow-Origin", "http://other.example")],
        "/star": [("Access-Control-Allow-Origin", "*")],
        "/no-credentials": own,
        "/preflight-403": [] if preflight else own,
        "/preflight-500": [*own, ("Access-Control-Allow-Methods", "PUT")],
        "/method": [*own, ("Access-Control-Allow-Methods", "POST")],
        "/bad-method": [*own, ("Access-Control-Allow-Methods", "P(UT")],
        "/bad-header": [*own, ("Access-Control-Allow-Headers", "x(one")],
        "/header": [*own, ("Access-Control-Allow-Headers", "x-one")],
    }.get(request.path, [])
    status = 200
    if preflight and request.path == "/preflight-403":
        status = 403
    if preflight and request.path == "/preflight-500":
        status = 500
    response = web.Response(status=status, text="" if preflight else "api")
    for name, value in headers:
        response.headers.add(name, value)
    return response


async def _api(request: web.Request) -> web.StreamResponse:
    return _api_response(request)


def _need_firefox() -> None:
    need("firefox")


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[str, str]]:
    """A page origin and the API, on loopback."""
    running, api = ThreadedServers(), web.Application()
    api.router.add_route("*", "/{tail:.*}", _api)
    yield running.origin(page_app()), running.origin(api)
    running.stop()


@pytest.fixture(scope="module")
def engine() -> Iterator[firefox.FirefoxEngine]:
    _need_firefox()
    running = firefox.launch()
    yield running
    running.close()


FETCH = """async ([url, init]) => {
  try { const r = await fetch(url, init); return 'status ' + r.status; }
  catch (e) { return String(e); }
}"""

# What Firefox 153 logs, in order, for each way a server can refuse a cross-origin fetch.
CASES = [
    ("/missing", {}, ["CORSMissingAllowOrigin"]),
    ("/multiple", {}, ["CORSMultipleAllowOriginNotAllowed"]),
    ("/mismatch", {}, ["CORSAllowOriginNotMatchingOrigin"]),
    ("/star", {"credentials": "include"}, ["CORSNotSupportingCredentials"]),
    ("/no-credentials", {"credentials": "include"}, ["CORSMIssingAllowCredentials"]),
    # A refused preflight: the missing ACAO is reported before the status (as in Chromium).
    ("/preflight-403", {"method": "PUT"}, ["CORSMissingAllowOrigin", "CORSDidNotSucceed"]),
    ("/preflight-500", {"method": "PUT"}, ["CORSPreflightDidNotSucceed", "CORSDidNotSucceed"]),
    ("/method", {"method": "PUT"}, ["CORSMethodNotFound", "CORSDidNotSucceed"]),
    ("/bad-method", {"method": "PUT"}, ["CORSInvalidAllowMethod", "CORSDidNotSucceed"]),
    (
        "/bad-header",
        {"headers": {"x-one": "1"}},
        ["CORSInvalidAllowHeader", "CORSDidNotSucceed"],
    ),
    (
        "/header",
        {"headers": {"x-other": "1"}},
        ["CORSMissingAllowHeaderFromPreflight", "CORSDidNotSucceed"],
    ),
]


@pytest.mark.parametrize(("path", "init", "codes"), CASES, ids=[c[0] for c in CASES])
def test_firefox_reports_each_refusal_with_its_reason(
    engine: firefox.FirefoxEngine,
    servers: tuple[str, str],
    path: str,
    init: dict[str, object],
    codes: list[str],
) -> None:
    page, api = servers
    tab = engine.open(page)
    try:
        outcome = tab.evaluate(FETCH, [f"{api}{path}", init])
        assert outcome == "TypeError: NetworkError when attempting to fetch resource."
        errors = tab.cors_errors()
        assert [e.code for e in errors] == codes, [e.message for e in errors]
        assert {e.url for e in errors} == {f"{api}{path}"}
        assert all(e.message.startswith("Cross-Origin Request Blocked") for e in errors)
    finally:
        tab.close()


def test_a_request_that_is_not_http_is_reported(
    engine: firefox.FirefoxEngine, servers: tuple[str, str]
) -> None:
    page, _ = servers
    tab = engine.open(page)
    try:
        tab.evaluate(FETCH, ["ftp://127.0.0.1:9/x", {}])
        assert [(e.code, e.url) for e in tab.cors_errors()] == [
            ("CORSRequestNotHttp", "ftp://127.0.0.1:9/x")
        ]
    finally:
        tab.close()


def test_a_hanging_script_does_not_hold_up_another_tab(
    engine: firefox.FirefoxEngine, servers: tuple[str, str]
) -> None:
    """A hanging script does not hold up another tab's script (commands run concurrently)."""
    page, _ = servers
    first, second = engine.open(page), engine.open(page)
    try:
        result: list[object] = []

        def hang() -> None:
            try:
                first.evaluate("() => new Promise(() => {})", timeout=5)
            except TimeoutError as exc:
                result.append(exc)

        waiter = threading.Thread(target=hang)
        waiter.start()
        started = time.monotonic()
        assert second.evaluate("(x) => x * 2", 21) == 42
        assert time.monotonic() - started < 4  # did not wait for the 5 s hang
        waiter.join(30)
        assert result and isinstance(result[0], TimeoutError)
    finally:
        first.close()
        second.close()


def test_a_browser_that_cannot_start_fails_with_its_error() -> None:
    _need_firefox()
    with pytest.raises(RuntimeError, match="Firefox did not start"):
        firefox.FirefoxEngine(executable="/bin/false")


def test_closing_the_engine_leaves_no_process_behind(servers: tuple[str, str]) -> None:
    _need_firefox()
    page, _ = servers
    running = firefox.launch()
    pid = running.browser_pid
    assert pid
    tab = running.open(page)
    assert tab.evaluate("() => 1") == 1
    running.close()  # with a tab still open
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"Firefox's process group {pid} is still alive after close()")
