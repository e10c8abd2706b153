"""The per-engine browser model (policy/engines.py) against what the real engines printed.

tests/data/engine_messages.json was recorded from Chromium 156, Firefox 153 ESR and WebKitGTK
2.50 (how: its "recorded" key): for each kind of CORS block, the response the engine checked,
its console lines, its DevTools name (Chromium) and fetch()'s rejection. The model must give
the same, message for message.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from corsproxy.policy import browser, engines

TABLE = json.loads((Path(__file__).parent / "data" / "engine_messages.json").read_text())
ORIGIN = TABLE["origin"]
CASES = [(name, engine) for name in TABLE["cases"] for engine in engines.ENGINES]


def _predicted_block(case: dict[str, Any]) -> browser.Block | None:
    """The model's block for the recorded scenario: the preflight's check, else the
    response's."""
    if case["preflight"] is not None:
        pre = case["preflight"]
        return browser.preflight_check(
            pre["status"],
            [tuple(h) for h in pre["headers"]],
            ORIGIN,
            case["credentials"],
            case["method"],
            case["header_names"],
        )
    response = case["response"]
    return browser.cors_check(
        [tuple(h) for h in response["headers"]],
        ORIGIN,
        case["credentials"],
        status=response["status"],
    )


@pytest.mark.parametrize(("case_name", "engine"), CASES, ids=[f"{c}-{e}" for c, e in CASES])
def test_the_model_shows_what_the_engine_showed(case_name: str, engine: str) -> None:
    case = TABLE["cases"][case_name]
    seen = case["engines"][engine]
    block = _predicted_block(case)
    assert block is not None, "every recorded case was blocked by every engine"
    shown = engines.engine_block(engine, block, case["url"], ORIGIN)
    assert list(shown.messages) == seen["messages"]
    assert shown.fetch_error == seen["fetch"]
    if engine == "chromium":
        assert shown.code == seen["code"] == block.chrome
    if engine == "webkit":
        assert shown.code is None


def test_a_refused_preflight_is_an_origin_error_in_firefox_and_a_status_error_in_webkit() -> None:
    """The issue's case: a 403 preflight without CORS headers (as corsproxy refuses one)."""
    case = TABLE["cases"]["refused"]
    block = _predicted_block(case)
    assert block is not None
    firefox = engines.engine_block("firefox", block, case["url"], ORIGIN)
    assert firefox.code == "CORSMissingAllowOrigin"
    assert "Status code: 403." in firefox.messages[0]
    assert "CORS request did not succeed" in firefox.messages[1]
    webkit = engines.engine_block("webkit", block, case["url"], ORIGIN)
    assert webkit.messages[0] == "Preflight response is not successful. Status code: 403"
    assert engines.engine_block("chromium", block, case["url"], ORIGIN).code == (
        "PreflightMissingAllowOriginHeader"
    )


def test_preflight_cache_caps_and_private_network_per_engine() -> None:
    assert "7200 s" in engines.preflight_cache_note("chromium", 86400)
    assert "caches the preflight 86400 s" in engines.preflight_cache_note("firefox", 86400)
    assert "caches the preflight 600 s" in engines.preflight_cache_note("webkit", 86400)
    # Firefox keeps a credentialed preflight for credentialed requests (tests/test_browser.py
    # test_which_later_request_reuses_a_cached_preflight shows it); the others share it.
    assert "preflighted again" in engines.preflight_cache_note("firefox", 600, credentials=True)
    assert "again" not in engines.preflight_cache_note("firefox", 600, credentials=False)
    for other in ("chromium", "webkit"):
        assert "again" not in engines.preflight_cache_note(other, 600, credentials=True)
    assert engines.private_network_note("chromium") is None
    for engine in ("firefox", "webkit"):
        note = engines.private_network_note(engine)
        assert note is not None and "no Access-Control-Request-Private-Network" in note


@pytest.mark.parametrize("engine", engines.ENGINES)
def test_a_refused_websocket_shows_what_the_engine_showed(engine: str) -> None:
    recorded = TABLE["websocket_refused"]
    shown = engines.websocket_refusal(engine, recorded["url"], recorded["status"])
    assert list(shown.messages) == recorded["engines"][engine]
    assert shown.close_code == 1006 and "close 1006 false" in recorded["page_events"]


def test_the_console_url_keeps_the_fragment_as_the_engines_encode_it() -> None:
    """All three engines named the same URL: the fragment's space, quote, <, > and backquote
    percent-encoded, the apostrophe kept; the request itself went without the fragment."""
    recorded = TABLE["fragment"]
    assert engines.console_url(recorded["sent"], recorded["written"]) == recorded["console_url"]
    assert engines.console_url(recorded["sent"], "/z/echo2?c=122") == recorded["sent"]
    assert engines.console_url("http://h/p", "/p#\u00e9\t") == "http://h/p#%C3%A9"


@pytest.mark.parametrize(
    ("engine", "line"),
    [
        ("firefox", "Status code: 400."),
        ("webkit", "Status code: 400"),
    ],
)
def test_a_known_status_is_named_and_an_unknown_one_is_an_explicit_placeholder(
    engine: str, line: str
) -> None:
    known = browser.cors_check([], ORIGIN, False, status=400)
    unknown = browser.cors_check([], ORIGIN, False)
    assert known is not None and unknown is not None
    assert engines.engine_block(engine, known, "http://h/x", ORIGIN).messages[0].endswith(line)
    assert (
        engines.engine_block(engine, unknown, "http://h/x", ORIGIN)
        .messages[0]
        .endswith(line.replace("400", engines.UPSTREAM_STATUS))
    )


def test_chromium_and_webkit_keep_one_preflight_cache_entry_per_url() -> None:
    """tests/test_browser.py test_which_later_request_reuses_a_cached_preflight: PUT+X-A,
    DELETE+X-B, PUT+X-A take 3 preflights in Chromium and WebKit, 2 in Firefox."""
    for engine in ("chromium", "webkit"):
        note = engines.preflight_cache_note(engine, 600)
        assert "one preflight cache entry per URL" in note
        assert "another method or header list on the same URL replaces it" in note
    firefox = engines.preflight_cache_note("firefox", 600)
    assert "one preflight cache entry" not in firefox and "beside it" in firefox
