"""`explain` fixes from the second outside check: a header the page sets twice (fetch()
combines it), a ws:// URL with a #fragment (new WebSocket() throws), and `--private-network`
from a page that is itself on loopback or the local network (no Local Network Access check).
The engines' behaviour is proven live in tests/test_browser_explain.py,
tests/test_browser_explain_websocket.py and tests/test_browser_local_network.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from corsproxy.commands.cli import cli
from corsproxy.policy import local_network
from corsproxy.policy.browser import combine_headers

CONFIG = (
    "upstream: http://127.0.0.1:9\n"
    "routes:\n"
    "  - path_prefix: /min\n"
    "    cors:\n"
    "      allow_origins: [https://app.example]\n"
    "      allow_methods: [GET]\n"
    "      allow_headers: []\n"
    "  - path_prefix: /rng\n"
    "    cors:\n"
    "      allow_origins: [https://app.example]\n"
    "      allow_headers: [Range]\n"
    "  - path_prefix: /x\n"
    "    cors:\n"
    "      allow_origins: ['*']\n"
    "      allow_methods: [GET, PUT]\n"
)


@pytest.fixture
def conf(tmp_path: Path) -> str:
    path = tmp_path / "corsproxy.yaml"
    path.write_text(CONFIG)
    return str(path)


def _run(conf: str, *args: str, code: int | None = None) -> dict[str, Any]:
    result = CliRunner().invoke(cli, ["explain", "-c", conf, *args, "--format", "json"])
    if code is not None:
        assert result.exit_code == code, result.output
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def _step(data: dict[str, Any], title: str) -> dict[str, Any]:
    return next(s for s in data["steps"] if s["title"] == title)


# --- 1. a header set twice -------------------------------------------------------------------


def test_combine_keeps_the_first_place_and_spelling() -> None:
    pairs = [("X-A", "1"), ("range", "bytes=0-1"), ("X-B", "2"), ("Range", "bytes=2-3")]
    assert combine_headers(pairs) == [
        ("X-A", "1"),
        ("range", "bytes=0-1, bytes=2-3"),
        ("X-B", "2"),
    ]


def test_range_twice_is_preflighted_and_refused(conf: str) -> None:
    data = _run(
        conf, "--origin", "https://app.example", "--path", "/min/n1",
        "-H", "Range:bytes=0-1", "-H", "Range:bytes=2-3", code=1,
    )  # fmt: skip
    assert data["reason"] == "header_not_allowed:range"
    assert data["browser_error"]["chrome"] == "PreflightMissingAllowOriginHeader"
    assert data["browser_error"]["firefox"] == "CORSMissingAllowOrigin"
    pre = _step(data, "Preflight")
    assert "Access-Control-Request-Headers: range" in pre["lines"][0]
    headers = _step(data, "Headers")
    assert any("'bytes=0-1, bytes=2-3'" in line for line in headers["lines"])
    assert _step(data, "Preflight needed?")["lines"] == [
        "yes: Range: 'bytes=0-1, bytes=2-3' is not a CORS-safelisted value"
    ]


def test_range_once_needs_no_preflight(conf: str) -> None:
    data = _run(
        conf, "--origin", "https://app.example", "--path", "/min/n1", "-H", "Range:bytes=0-1",
        code=0,
    )  # fmt: skip
    assert not any(s["title"] == "Preflight" for s in data["steps"])
    assert not any(s["title"] == "Headers" for s in data["steps"])


def test_the_combined_header_once_in_acrh_and_allowed_when_listed(conf: str) -> None:
    data = _run(
        conf, "--origin", "https://app.example", "--path", "/rng/a",
        "-H", "Range:bytes=0-1", "-H", "range:bytes=2-3", code=0,
    )  # fmt: skip
    assert "Access-Control-Request-Headers: range" in _step(data, "Preflight")["lines"][0]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("Accept-Language", "a" * 70),  # 70 bytes each, 142 combined: over 128
        ("Accept", "b" * 100),
        ("Content-Type", "text/plain"),  # 'text/plain, text/plain' is no MIME type
    ],
)
def test_safelisted_twice_is_not_safelisted(conf: str, name: str, value: str) -> None:
    data = _run(
        conf, "--origin", "https://app.example", "--path", "/x/y", "--method", "POST",
        "-H", f"{name}:{value}", "-H", f"{name}:{value}", code=0,
    )  # fmt: skip
    pre = _step(data, "Preflight")
    assert f"Access-Control-Request-Headers: {name.lower()}" in pre["lines"][0]
    once = _run(
        conf, "--origin", "https://app.example", "--path", "/x/y", "--method", "POST",
        "-H", f"{name}:{value}", code=0,
    )  # fmt: skip
    assert not any(s["title"] == "Preflight" for s in once["steps"])


# --- 2. a ws:// URL with a fragment ----------------------------------------------------------

THROWN = {
    "chromium": (
        "SyntaxError: Failed to construct 'WebSocket': The URL contains a fragment identifier "
        "('fr%20ag%22x'). Fragment identifiers are not allowed in WebSocket URLs.",
        [],
    ),
    "firefox": ("SyntaxError: An invalid or illegal string was specified", []),
    "webkit": (
        "SyntaxError: The string did not match the expected pattern.",
        ["URL has fragment component ws://localhost:47111/x/ws?q=1#fr%20ag%22x"],
    ),
}


@pytest.mark.parametrize("engine", sorted(THROWN))
def test_a_websocket_url_with_a_fragment_throws(conf: str, engine: str) -> None:
    data = _run(
        conf, "--origin", "https://app.example", "--browser", engine,
        "--path", 'ws://localhost:47111/x/ws?q=1#fr ag"x', code=1,
    )  # fmt: skip
    assert data["verdict"] == "blocked" and data["reason"] == "websocket_url_fragment"
    exception, console = THROWN[engine]
    assert data["websocket_exception"] == {
        "exception": exception,
        "messages": console,
        "console": "\n".join(console),
    }
    assert data["websocket_error"] is None and data["browser_error"] is None
    assert [s["title"] for s in data["steps"]] == ["new WebSocket()"]
    assert "drop the fragment" in data["fix"]
    text = CliRunner().invoke(
        cli,
        ["explain", "-c", conf, "--origin", "https://app.example", "--browser", engine,
         "--path", 'ws://localhost:47111/x/ws?q=1#fr ag"x'],
    ).stdout  # fmt: skip
    assert "VERDICT: BLOCKED (websocket_url_fragment)\n" in text
    assert f"  new WebSocket() throws {exception}\n" in text


def test_an_empty_fragment_throws_too_and_none_does_not(conf: str) -> None:
    data = _run(conf, "--origin", "https://app.example", "--path", "ws://localhost:1/x/ws#")
    assert data["reason"] == "websocket_url_fragment"
    data = _run(conf, "--origin", "https://app.example", "--path", "ws://localhost:1/x/ws")
    assert data["reason"] != "websocket_url_fragment"


def test_report_only_does_not_change_it(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "upstream: http://127.0.0.1:9\ncors:\n  mode: report-only\n"
        "  allow_origins: [https://app.example]\n"
    )
    data = _run(str(path), "--origin", "https://o.example", "--path", "ws://h:1/ws#a", code=1)
    assert data["verdict"] == "blocked" and data["reason"] == "websocket_url_fragment"


# --- 3. --private-network from a page that is itself local -----------------------------------


@pytest.mark.parametrize(
    ("page", "proxy", "checked"),
    [
        ("http://127.0.0.1:47112", "http://localhost:47111", False),  # loopback -> loopback
        ("http://localhost:3000", "http://127.0.0.1:47111", False),
        ("http://[::1]:3000", "http://localhost:47111", False),
        ("http://127.0.0.1:3000", "http://192.168.1.5", False),  # loopback -> local
        ("http://127.0.0.1:3000", "http://api.internal", False),  # loopback -> anything
        ("http://192.168.1.9:3000", "http://10.0.0.2", False),  # local -> local
        # local -> loopback: Chromium 156 lets it through (tests/test_browser_local_network.py)
        ("http://192.168.1.9:3000", "http://localhost:47111", False),
        ("http://192.168.1.9:3000", "http://api.internal", False),
        ("http://8.8.8.8", "http://10.0.0.2", True),  # public -> local
        ("http://8.8.8.8", "http://localhost:47111", True),
        ("https://app.example", "http://localhost:47111", True),  # a name: public, as today
        ("https://app.example", "http://10.1.2.3", True),
        ("https://printer.local", "http://localhost:47111", False),  # local -> loopback
        ("https://printer.local", "http://192.168.1.5", False),
    ],
)
def test_only_a_more_private_target_is_checked(
    conf: str, page: str, proxy: str, checked: bool
) -> None:
    data = _run(
        conf, "--origin", page, "--proxy-origin", proxy, "--path", "/x/a", "--method", "PUT",
        "--private-network", "--browser", "chromium",
    )  # fmt: skip
    step = _step(data, "Local Network Access")
    if checked:
        assert data["reason"] == "local_network_access_denied"
        assert step["outcome"] == "blocked"
    else:
        assert data["verdict"] == "allowed" and data["with_permission"] is None
        space = local_network.address_space(page)
        assert step["lines"][0].startswith(
            f"the page at {page} is itself in the `{space}` address space: no Local Network "
            "Access check"
        )


def test_the_verdict_is_then_cors_alone(conf: str) -> None:
    data = _run(
        conf, "--origin", "http://127.0.0.1:47112", "--proxy-origin", "http://localhost:47111",
        "--path", "/min/a", "--private-network", code=1,
    )  # fmt: skip
    assert data["reason"] == "origin_not_allowed"
    assert data["browser_error"]["chrome"] == "MissingAllowOriginHeader"
