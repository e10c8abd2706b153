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


def test_private_network_is_blocked_by_chromium_only() -> None:
    """Chromium 142+ sends nothing to a local address without the user's permission
    (Local Network Access); for Firefox and WebKit explain lets it pass on its CORS headers
    (WebKit implements neither; Firefox 153 ESR's own permission prompt is not modeled, and
    its note says so)."""
    args = [*REFUSED[:-4], "--private-network"]
    assert _json(*args)["reason"] == "local_network_access_denied"
    for engine in ("firefox", "webkit"):
        data = _json(*args, "--browser", engine, code=0)
        assert data["verdict"] == "allowed"
        assert data["with_permission"] is None
        steps = {s["title"]: s for s in data["steps"]}
        assert (
            "no Access-Control-Request-Private-Network" in steps["Local Network Access"]["lines"][0]
        )
        assert "Private-Network" not in steps["Preflight"]["lines"][0]


# The outside check's case (Chromium 156 showed exactly this: tests/test_browser_local_network.py).
PAGE = "http://8.8.8.8:47010"  # a public page (a loopback one is not checked)
PROXY = "http://localhost:47100"
CONFIG = (
    "upstream: http://127.0.0.1:9\n"
    "routes:\n"
    "  - path_prefix: /d\n"
    "    cors:\n"
    "      allow_origins: ['*']\n"
    "      allow_methods: [GET, POST, PUT]\n"
)


def _lna(tmp_path: Path, *args: str, proxy: str = PROXY, code: int = 1) -> dict[str, Any]:
    path = tmp_path / "p2.yaml"
    if not path.exists():
        path.write_text(CONFIG)
    return _json(
        "explain", "-c", str(path), "--origin", PAGE, "--path", "/d/echo?c=70",
        "--private-network", "--proxy-origin", proxy, *args, code=code,
    )  # fmt: skip


@pytest.mark.parametrize("method", ["GET", "PUT"])
def test_chromium_blocks_a_public_pages_request_to_loopback(tmp_path: Path, method: str) -> None:
    data = _lna(tmp_path, "--method", method, "--browser", "chromium")
    assert data["verdict"] == "blocked" and data["enforce_verdict"] == "blocked"
    assert data["reason"] == "local_network_access_denied"
    error = data["browser_error"]
    assert error["code"] == error["chrome"] == "LocalNetworkAccessPermissionDenied"
    assert error["messages"] == [
        f"Access to fetch at '{PROXY}/d/echo?c=70' from origin '{PAGE}' has been blocked by "
        "CORS policy: Permission was denied for this request to access the `loopback` "
        "address space.",
        "Failed to load resource: net::ERR_FAILED",
    ]
    assert error["fetch_error"] == "TypeError: Failed to fetch"
    assert data["with_permission"]["verdict"] == "allowed"  # the CORS side is right
    assert data["readable_headers"] == []
    step = next(s for s in data["steps"] if s["title"] == "Local Network Access")
    assert step["outcome"] == "blocked"
    assert "before any byte reaches corsproxy" in step["lines"][0]
    assert any("Chromium 104 to 141" in line for line in step["lines"])  # the history stays
    assert "targetAddressSpace: 'loopback'" in data["fix"]
    assert "'loopback-network' permission" in data["fix"]
    assert data["fix_edits"] == []


def test_the_text_verdict_says_it(tmp_path: Path) -> None:
    path = tmp_path / "p2.yaml"
    path.write_text(CONFIG)
    result = CliRunner().invoke(
        cli,
        ["explain", "-c", str(path), "--origin", PAGE, "--path", "/d/echo?c=70",
         "--private-network", "--proxy-origin", PROXY, "--browser", "chromium"],
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    assert "VERDICT: BLOCKED (local_network_access_denied)\n" in result.stdout
    assert "  With the user's Local Network Access permission: ALLOWED\n" in result.stdout
    assert "  Chrome:  LocalNetworkAccessPermissionDenied: Permission was denied" in result.stdout
    assert "  fetch() rejects with TypeError: Failed to fetch\n" in result.stdout


@pytest.mark.parametrize(
    ("proxy", "space"),
    [
        ("http://localhost:47100", "`loopback`"),
        ("http://app.localhost:47100", "`loopback`"),
        ("http://127.0.0.5:47100", "`loopback`"),
        ("http://[::1]:47100", "`loopback`"),
        ("http://192.168.1.20:8080", "`local`"),
        ("http://10.0.0.7", "`local`"),
        ("http://172.16.3.4", "`local`"),
        ("http://printer.local", "`local`"),
        ("http://api.internal.example", "`<local or loopback>`"),
    ],
)
def test_the_address_space_follows_the_proxy_origin(tmp_path: Path, proxy: str, space: str) -> None:
    data = _lna(tmp_path, "--browser", "chromium", proxy=proxy)
    message = data["browser_error"]["message"]
    assert message == f"Permission was denied for this request to access the {space} address space."
    if space.startswith("`<"):
        step = next(s for s in data["steps"] if s["title"] == "Local Network Access")
        assert "depends on what its name resolves to" in step["lines"][0]


def test_without_proxy_origin_the_space_is_unknown(tmp_path: Path) -> None:
    path = tmp_path / "p2.yaml"
    path.write_text(CONFIG)
    data = _json(
        "explain", "-c", str(path), "--origin", PAGE, "--path", "/d/x", "--private-network",
    )  # fmt: skip
    assert data["reason"] == "local_network_access_denied"
    assert "`<local or loopback>`" in data["browser_error"]["message"]
    step = next(s for s in data["steps"] if s["title"] == "Local Network Access")
    assert "no --proxy-origin: the address space" in step["lines"][0]


def test_a_public_proxy_address_is_not_checked(tmp_path: Path) -> None:
    data = _lna(tmp_path, "--browser", "chromium", proxy="http://8.8.8.8", code=0)
    assert data["verdict"] == "allowed" and data["with_permission"] is None
    step = next(s for s in data["steps"] if s["title"] == "Local Network Access")
    assert "public address: Chromium makes no Local Network Access check" in step["lines"][0]


def test_allow_private_network_does_not_change_it(tmp_path: Path) -> None:
    (tmp_path / "p2.yaml").write_text(CONFIG + "      allow_private_network: true\n")
    data = _lna(tmp_path, "--method", "PUT", "--browser", "chromium")
    assert data["reason"] == "local_network_access_denied"
    assert data["with_permission"]["verdict"] == "allowed"


def test_a_cors_refusal_behind_it_is_in_the_fix(tmp_path: Path) -> None:
    """With the permission the request would still be refused: the fix says both."""
    data = _lna(tmp_path, "--method", "DELETE", "--browser", "chromium")
    assert data["reason"] == "local_network_access_denied"
    permitted = data["with_permission"]
    assert permitted["verdict"] == "blocked" and permitted["reason"] == "method_not_allowed:DELETE"
    assert "; once the permission is granted: " in data["fix"]
    assert data["fix_edits"] and data["fix_edits"][0]["key"].endswith("allow_methods")


@pytest.mark.parametrize("engine", ["firefox", "webkit"])
def test_firefox_and_webkit_let_it_through(tmp_path: Path, engine: str) -> None:
    data = _lna(tmp_path, "--method", "PUT", "--browser", engine, code=0)
    assert data["verdict"] == "allowed" and data["browser_error"] is None


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
