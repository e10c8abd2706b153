"""`corsproxy explain --browser chromium|firefox|webkit`: each engine's console and fetch()
error, through the command as users run it (the texts are checked against the recorded
engines in tests/test_engines.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from corsproxy.commands.cli import cli

EXAMPLE = str(Path(__file__).resolve().parent.parent / "config.example.yaml")
# corsproxy refuses this preflight (x-trace-id is not allowed) with 403 and no CORS headers.
REFUSED = [
    "explain", "-c", EXAMPLE, "--origin", "https://app.example.com", "--method", "PUT",
    "--path", "/api/x", "--header", "X-Trace-Id:1", "--proxy-origin", "https://api.example.com",
]  # fmt: skip
URL = "https://api.example.com/api/x"


def _json(*args: str, code: int = 1) -> dict[str, Any]:
    result = CliRunner().invoke(cli, [*args, "--format", "json"])
    assert result.exit_code == code, result.output
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def test_default_is_chromium_and_the_old_keys_stay() -> None:
    data = _json(*REFUSED)
    assert data["browser"] == "chromium"
    error = data["browser_error"]
    assert error["chrome"] == error["code"] == "PreflightMissingAllowOriginHeader"
    assert error["firefox"] == "CORSMissingAllowOrigin"  # was CORSPreflightDidNotSucceed: wrong
    assert error["message"] in error["messages"][0]
    assert error["messages"][0].startswith(f"Access to fetch at '{URL}' from origin ")
    assert error["console"] == "\n".join(error["messages"])
    assert error["fetch_error"] == "TypeError: Failed to fetch"


def test_firefox_reports_the_missing_origin_then_the_failed_request() -> None:
    error = _json(*REFUSED, "--browser", "firefox")["browser_error"]
    assert error["code"] == "CORSMissingAllowOrigin"
    prefix = (
        "Cross-Origin Request Blocked: The Same Origin Policy disallows reading the remote "
        f"resource at {URL}."
    )
    assert error["messages"] == [
        f"{prefix} (Reason: CORS header \u2018Access-Control-Allow-Origin\u2019 missing). "
        "Status code: 403.",
        f"{prefix} (Reason: CORS request did not succeed). Status code: (null).",
    ]
    assert error["fetch_error"] == "TypeError: NetworkError when attempting to fetch resource."


def test_webkit_reports_the_status_first_and_has_no_error_name() -> None:
    result = CliRunner().invoke(cli, [*REFUSED, "--browser", "webkit"])
    assert result.exit_code == 1, result.output
    assert "  Browser: WebKit (--browser)" in result.stdout
    assert (
        "  WebKit console:\n"
        "    Preflight response is not successful. Status code: 403\n"
        f"    Fetch API cannot load {URL} due to access control checks.\n"
        "  fetch() rejects with TypeError: Load failed\n"
    ) in result.stdout
    assert _json(*REFUSED, "--browser", "webkit")["browser_error"]["code"] is None


@pytest.mark.parametrize(
    ("engine", "cap"), [("chromium", "7200"), ("firefox", "86400"), ("webkit", "600")]
)
def test_the_preflight_step_says_how_long_the_engine_caches_it(engine: str, cap: str) -> None:
    data = _json(*REFUSED[:-4], "--browser", engine, code=0)  # PUT alone passes
    lines = next(s["lines"] for s in data["steps"] if s["title"] == "Preflight")
    assert any(f"caps it at {cap} s" in line for line in lines), lines


def test_private_network_is_chromium_only() -> None:
    """allow_private_network is false in the example: Chromium's PNA preflight is refused,
    Firefox and WebKit send none, and the request passes."""
    args = [*REFUSED[:-4], "--private-network"]
    assert _json(*args)["reason"] == "private_network_not_allowed"
    for engine in ("firefox", "webkit"):
        data = _json(*args, "--browser", engine, code=0)
        assert data["verdict"] == "allowed"
        steps = {s["title"]: s for s in data["steps"]}
        assert (
            "no Access-Control-Request-Private-Network" in steps["Local Network Access"]["lines"][0]
        )
        assert "Private-Network" not in steps["Preflight"]["lines"][0]


def test_an_unknown_engine_is_a_usage_error() -> None:
    result = CliRunner().invoke(cli, [*REFUSED, "--browser", "safari"])
    assert result.exit_code == 2
    assert "'safari' is not one of 'chromium', 'firefox', 'webkit'" in result.output


@pytest.fixture
def lowercase_config(tmp_path: Path) -> str:
    config = tmp_path / "corsproxy.yaml"
    config.write_text(
        "upstream: http://127.0.0.1:9\n"
        "routes:\n"
        "  - path_prefix: /a\n"
        "    cors:\n"
        "      allow_origins: [http://127.0.0.1:8000]\n"
        "      allow_methods: [GET, POST, PUT, patch, FOO]\n"
        "  - path_prefix: /z\n"
        "    cors:\n"
        "      allow_origins: [http://127.0.0.1:8000]\n"
    )
    return str(config)


PROXY = "http://localhost:47100"


def _explain(config: str, *args: str) -> tuple[str, dict[str, Any]]:
    argv = ["explain", "-c", config, "--origin", "http://127.0.0.1:8000", *args]
    text = CliRunner().invoke(cli, argv)
    data = CliRunner().invoke(cli, [*argv, "--format", "json"])
    assert text.exit_code == data.exit_code == 1, text.output
    parsed: dict[str, Any] = json.loads(data.stdout)
    return text.stdout, parsed


@pytest.mark.parametrize("method", ["patch", "FOO"])
@pytest.mark.parametrize(("engine", "tail"), [("firefox", "400."), ("webkit", "400")])
def test_the_400_of_a_method_corsproxy_cannot_parse_is_in_the_console(
    lowercase_config: str, method: str, engine: str, tail: str
) -> None:
    """The preflight passes (allow_methods lists the method), corsproxy answers the request
    itself with 400: the engines print `Status code: 400`, and so does explain."""
    text, data = _explain(
        lowercase_config, "-X", method, "--path", "/a/echo", "--browser", engine,
        "--proxy-origin", PROXY,
    )  # fmt: skip
    error = data["browser_error"]
    assert error["status"] == 400
    assert error["messages"][0].endswith(f"Status code: {tail}"), error["messages"]
    assert "<status>" not in text and "Status code: N" not in text


@pytest.mark.parametrize("engine", ["chromium", "firefox", "webkit"])
def test_the_console_url_keeps_the_fragment(lowercase_config: str, engine: str) -> None:
    _, data = _explain(
        lowercase_config, "-X", "PUT", "--path", '/z/echo2?c=122#frag "x"', "--browser", engine,
        "--proxy-origin", PROXY,
    )  # fmt: skip
    url = f"{PROXY}/z/echo2?c=122#frag%20%22x%22"
    assert data["path"] == "/z/echo2?c=122"  # the request target has no fragment
    messages = data["browser_error"]["messages"]
    naming = [m for m in messages if "localhost" in m]
    assert naming and all(url in m for m in naming), messages


def test_an_upstream_status_is_an_explicit_placeholder(lowercase_config: str) -> None:
    """A refused origin's simple GET is forwarded: the console shows the upstream's status."""
    argv = ["--path", "/z/x", "--proxy-origin", PROXY, "--browser", "firefox"]
    argv = ["--origin", "http://127.0.0.1:8001", *argv]
    result = CliRunner().invoke(cli, ["explain", "-c", lowercase_config, *argv])
    assert "Status code: N." in result.stdout
    assert "    (N: the upstream's status)" in result.stdout
    assert "the Firefox console names the upstream's status, unknown here: 'N'" in result.stdout
    data = json.loads(
        CliRunner()
        .invoke(cli, ["explain", "-c", lowercase_config, *argv, "--format", "json"])
        .stdout
    )
    assert data["browser_error"]["status"] is None


@pytest.mark.parametrize(
    ("engine", "line"),
    [
        (
            "chromium",
            "WebSocket connection to 'ws://localhost:47100/z/ws' failed: Error during "
            "WebSocket handshake: Unexpected response code: 403",
        ),
        (
            "firefox",
            "Firefox can\u2019t establish a connection to the server at ws://localhost:47100/z/ws.",
        ),
        (
            "webkit",
            "WebSocket connection to 'ws://localhost:47100/z/ws' failed: The server did not "
            "accept the WebSocket handshake.",
        ),
    ],
)
def test_a_refused_websocket_shows_the_engines_console(
    lowercase_config: str, engine: str, line: str
) -> None:
    argv = ["explain", "-c", lowercase_config, "--origin", "http://127.0.0.1:8001"]
    argv += ["--path", "ws://localhost:47100/z/ws", "--browser", engine]
    text = CliRunner().invoke(cli, argv).stdout
    label = {"chromium": "Chromium", "firefox": "Firefox", "webkit": "WebKit"}[engine]
    assert (
        f"  Browser: {label} (--browser)\n  {label} console:\n    {line}\n"
        "  the page sees an error event, then a close event with code 1006\n"
    ) in text
    data = json.loads(CliRunner().invoke(cli, [*argv, "--format", "json"]).stdout)
    assert data["websocket_error"] == {
        "messages": [line],
        "console": line,
        "status": 403,
        "close_code": 1006,
    }
    assert data["browser_error"] is None


def test_a_path_corsproxy_refuses_fails_the_preflight_with_its_400(lowercase_config: str) -> None:
    """PUT to /a/%00x: the browser preflights the path first and corsproxy answers the
    OPTIONS with 400 (path_nul); the engines report the preflight (recorded 2026-11-30:
    Chromium PreflightMissingAllowOriginHeader, Firefox `Status code: 400.` then `CORS request
    did not succeed`, WebKit `Preflight response is not successful. Status code: 400`)."""
    args = ["-X", "PUT", "--path", "/a/%00x", "--proxy-origin", PROXY]
    _, chromium = _explain(lowercase_config, *args)
    assert chromium["reason"] == "path_nul"
    assert chromium["browser_error"]["code"] == "PreflightMissingAllowOriginHeader"
    _, firefox = _explain(lowercase_config, *args, "--browser", "firefox")
    at = f"resource at {PROXY}/a/%00x."
    assert [m.split(at)[1] for m in firefox["browser_error"]["messages"]] == [
        " (Reason: CORS header \u2018Access-Control-Allow-Origin\u2019 missing). Status code: 400.",
        " (Reason: CORS request did not succeed). Status code: (null).",
    ]
    _, webkit = _explain(lowercase_config, *args, "--browser", "webkit")
    assert webkit["browser_error"]["messages"] == [
        "Preflight response is not successful. Status code: 400",
        f"Fetch API cannot load {PROXY}/a/%00x due to access control checks.",
    ]
    _, get = _explain(lowercase_config, "--path", "/a/%00x", "--browser", "webkit")
    assert get["browser_error"]["messages"][0].endswith("Status code: 400")  # no preflight
