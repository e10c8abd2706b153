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
