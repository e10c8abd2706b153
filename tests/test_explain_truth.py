"""`explain` against what the server and the browser really do (issue 15, section 1 review):
report-only verdicts, the path fetch() sends, fixes tried through check, every refusal fixed,
top-level `cors: false`, YAML anchors, origins as browsers spell them."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from click.testing import CliRunner

from corsproxy.commands.cli import cli
from corsproxy.commands.explain import explain, render_text
from corsproxy.policy import browser
from tests.helpers import config
from tests.net import TIMEOUT, running_app, running_proxy

APP = "https://app.example.com"


def _cli(tmp_path: Path, yaml_text: str, *args: str) -> tuple[int, str]:
    path = tmp_path / "c.yaml"
    path.write_text(yaml_text)
    result = CliRunner().invoke(cli, ["explain", "-c", str(path), *args], env={})
    return result.exit_code, result.output


def _json(tmp_path: Path, yaml_text: str, *args: str) -> tuple[int, dict[str, Any]]:
    code, out = _cli(tmp_path, yaml_text, *args, "--format", "json")
    return code, json.loads(out[out.index("{") :])


# --- 1. report-only: the upstream's own CORS headers decide ------------------------------

REPORT_ONLY = {
    "cors": {"allow_origins": [APP]},
    "routes": [
        {
            "path_prefix": "/shadow",
            "cors": {"mode": "report-only", "allow_origins": ["https://o.example"]},
        }
    ],
}


async def _report_only_on_the_wire() -> tuple[bool, int]:
    """What a browser gets from a report-only route whose upstream answers with its own
    `Access-Control-Allow-Origin: *`, and the status of a WebSocket handshake the policy
    would refuse."""

    async def handler(request: web.Request) -> web.StreamResponse:
        if request.headers.get("Upgrade", "").lower() == "websocket":
            ws = web.WebSocketResponse()
            await ws.prepare(request)
            await ws.close()
            return ws
        return web.Response(text="ok", headers={"Access-Control-Allow-Origin": "*"})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    async with (
        running_app(app) as upstream,
        running_proxy({"upstream": upstream, **REPORT_ONLY}) as proxy,
    ):
        timeout = aiohttp.ClientTimeout(total=TIMEOUT)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            async with session.get(f"{proxy}/shadow/x", headers={"Origin": APP}) as response:
                passes = browser.cors_check(list(response.headers.items()), APP, False) is None
            async with session.get(
                f"{proxy}/shadow/ws",
                headers={
                    "Origin": APP,
                    "Connection": "Upgrade",
                    "Upgrade": "websocket",
                    "Sec-WebSocket-Version": "13",
                    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
                },
            ) as response:
                status = response.status
    return passes, status


def test_report_only_verdict_says_the_upstream_decides_as_on_the_wire(tmp_path: Path) -> None:
    """The server passes the upstream's ACAO: the browser reads the answer the enforce
    policy would block, and a handshake the policy would refuse gets 101. explain must not
    call either BLOCKED: the upstream decides; enforce mode's verdict is given as such."""
    passes, status = asyncio.run(_report_only_on_the_wire())
    assert passes and status == 101
    loaded = config({"upstream": "http://up:1", **REPORT_ONLY})
    for result in (
        explain(loaded, APP, path="/shadow/x"),
        explain(loaded, APP, path="/shadow/ws", websocket=True, proxy_origin="http://p:1"),
    ):
        text = render_text(result)
        assert "VERDICT: BLOCKED" not in text and "VERDICT (report-only): " in text
        assert "With mode: enforce: BLOCKED" in text
        data = result.to_json()
        assert (data["verdict"], data["mode"], data["enforce_verdict"]) == (
            "upstream_decides", "report-only", "blocked",
        )  # fmt: skip
    assert "the upstream's answer decides whether the socket opens" in text
    enforce = explain(config({"upstream": "http://up:1", "cors": {"allow_origins": [APP]}}), APP)
    assert enforce.to_json()["verdict"] == "allowed" and enforce.mode == "enforce"


def test_report_only_exit_status_is_enforce_modes(tmp_path: Path) -> None:
    doc = json.dumps({"upstream": "http://up:1", **REPORT_ONLY})
    code, out = _cli(tmp_path, doc, "--origin", APP, "--path", "/shadow/x")
    assert code == 1 and "With mode: enforce: BLOCKED (origin_not_allowed)" in out
    code, _ = _cli(tmp_path, doc, "--origin", "https://o.example", "--path", "/shadow/x")
    assert code == 0


# --- 2. the path as fetch() sends it -----------------------------------------------------


def test_fetch_target_is_what_chromium_sends() -> None:
    """Recorded from Chromium's `new URL(path, base)` (pathname + search)."""
    cases = {
        "/x/../../etc": "/etc",
        "/x/%2e%2e/%2e%2e/etc": "/etc",
        "/x/.%2E/y": "/y",
        "/x/%2E": "/x/",
        "/x/..": "/",
        "/x y": "/x%20y",
        "/ü": "/%C3%BC",
        "/x#frag": "/x",
        "/a\\b": "/a/b",
        "/p\"<>`{}|^[]'": "/p%22%3C%3E%60%7B%7D%7C%5E[]'",
        "/q?a b'ü\"<>`{}|^#f": "/q?a%20b%27%C3%BC%22%3C%3E`{}|^",
        "/%zz/%41": "/%zz/%41",
    }
    assert {k: browser.fetch_target(k) for k in cases} == cases


def test_explain_reads_the_path_the_browser_sends(tmp_path: Path) -> None:
    doc = "upstream: http://up:1\ncors:\n  allow_origins: [https://a.example]\n"
    for path, sent in [("/x/../../etc", "/etc"), ("/x/%2e%2e/%2e%2e/etc", "/etc"),
                       ("/x y", "/x%20y"), ("/ü", "/%C3%BC"), ("/x#frag", "/x")]:  # fmt: skip
        code, out = _cli(tmp_path, doc, "--origin", "https://a.example", "--path", path)
        assert code == 0, out
        assert f"the browser sends {sent} for {path!r}" in out
        assert "(curl --path-as-is) gets 400 from corsproxy" in out


# --- 3. and 5. fixes tried through check, all of them -----------------------------------


def test_a_credentials_fix_is_tried_not_guessed(tmp_path: Path) -> None:
    doc = (
        "upstream: http://up:1\nroutes:\n  - path_prefix: /b\n    cors:\n"
        '      allow_origins: ["regex:http://127\\\\.0\\\\.0\\\\.1:[0-9]+"]\n'
    )
    args = ("--origin", "http://127.0.0.1:5000", "--path", "/b", "--credentials")
    code, data = _json(tmp_path, doc, *args)
    assert code == 1
    assert "would not pass check" not in data["fix"]
    assert [(e["op"], e["key"], e["value"]) for e in data["fix_edits"]] == [
        ("set", "routes[0].cors.allow_credentials", True)
    ]
    fixed = doc + "      allow_credentials: true\n"
    assert _cli(tmp_path, fixed, *args)[0] == 0
    assert CliRunner().invoke(cli, ["check", "-c", str(tmp_path / "c.yaml")]).exit_code == 0
    # A regex that matches strangers: check refuses it with credentials, explain says so.
    broad = doc.replace("127\\\\.0\\\\.0\\\\.1:[0-9]+", ".*")
    code, data = _json(tmp_path, broad, "--origin", "http://x.example", "--path", "/b",
                       "--credentials")  # fmt: skip
    assert data["fix_edits"] == [] and "check would refuse them: " in data["fix"]
    assert data["fix"].startswith("fetch without credentials; or set allow_credentials")
    assert "so it is like '*', which cannot be used with allow_credentials" in data["fix"]


def test_the_fix_covers_every_refusal(tmp_path: Path) -> None:
    doc = (
        "upstream: http://up:1\ncors:\n  allow_origins: [https://a.example]\n"
        "  allow_methods: [GET]\n"
    )
    args = ("--origin", "https://a.example", "-X", "PUT", "-H", "X-Y:1", "--credentials")
    code, data = _json(tmp_path, doc, *args)
    assert code == 1
    edits = [(e["op"], e["key"], e["value"], e["line"]) for e in data["fix_edits"]]
    assert edits == [
        ("add", "cors.allow_methods", "PUT", 4),
        ("add", "cors.allow_headers", "X-Y", 2),
        ("set", "cors.allow_credentials", True, 2),
    ]
    fixed = doc + "  allow_headers: [X-Y]\n  allow_credentials: true\n"
    fixed = fixed.replace("[GET]", "[GET, PUT]")
    assert _cli(tmp_path, fixed, *args)[0] == 0


# --- 4. a top-level cors: false ----------------------------------------------------------


def test_a_top_level_cors_false_gets_its_line(tmp_path: Path) -> None:
    doc = "upstream: http://up:1\n# c\n\ncors: false\nroutes:\n  - path_prefix: /a\n    name: a\n"
    code, out = _cli(tmp_path, doc, "--origin", "https://x.example", "--path", "/a/x")
    assert code == 1
    assert "Fix:     cors (" in out and "c.yaml:4) is false, and routes[0] inherits it" in out
    assert "headers corsproxy adds to the upstream's response:\nVERDICT" not in out
    assert "corsproxy adds no header to the upstream's response" in out
    code, data = _json(tmp_path, doc, "--origin", "https://x.example", "--path", "/a/x")
    assert [(e["key"], e["line"]) for e in data["fix_edits"]] == [("routes[0].cors", 6)]


# --- 6. an anchor shared with another route ----------------------------------------------


def test_a_fix_inside_an_anchor_warns_that_the_other_route_changes(tmp_path: Path) -> None:
    doc = (
        "upstream: http://up:1\ncors:\n  allow_origins: [http://127.0.0.1:21520]\nroutes:\n"
        "  - path_prefix: /a\n    cors: &pol\n      allow_origins: [https://x.example]\n"
        "      allow_methods: [GET]\n  - path_prefix: /b\n    cors: *pol\n"
    )
    code, out = _cli(tmp_path, doc, "--origin", "https://y.example", "--path", "/b/x")
    assert code == 1
    assert (
        "routes[1].cors.allow_origins (" in out
        and "c.yaml:7) (warning: that line is "
        "written in routes[0] and reaches routes[1] through a YAML anchor"
        in out
    )
    code, out = _cli(tmp_path, doc, "--origin", "https://y.example", "--path", "/a/x")
    assert "warning: that line" not in out  # /a's own block


# --- 7. origins as browsers spell them --------------------------------------------------


def test_did_you_mean_is_what_a_browser_sends() -> None:
    """Recorded from Chromium's `new URL(value).origin`."""
    cases = {
        "https:/a.example": "https://a.example",
        "https:\\\\a.example": "https://a.example",
        "https:a.example": "https://a.example",
        "https:///a.example": "https://a.example",
        "https://%41.example": "https://a.example",
        "blob:https://a.example/uuid": "https://a.example",
    }
    assert {k: browser.serialized_origin(k).suggestion for k in cases} == cases
    assert browser.serialized_origin("https://a.example.").valid


async def _trailing_dot_on_the_wire(allow: list[str]) -> bool:
    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", ok)
    doc = {"cors": {"allow_origins": allow}}
    async with running_app(app) as upstream, running_proxy({"upstream": upstream, **doc}) as proxy:
        timeout = aiohttp.ClientTimeout(total=TIMEOUT)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            headers = {"Origin": "https://a.example."}
            async with session.get(f"{proxy}/x", headers=headers) as response:
                answer = list(response.headers.items())
    return browser.cors_check(answer, "https://a.example.", False) is None


def test_a_trailing_dot_origin_is_explained_as_the_server_treats_it() -> None:
    for allow in (["https://a.example"], ["*"]):
        on_the_wire = asyncio.run(_trailing_dot_on_the_wire(allow))
        result = explain(config({"upstream": "http://up:1", "cors": {"allow_origins": allow}}),
                         "https://a.example.")  # fmt: skip
        assert result.reason != "origin_malformed" and result.did_you_mean is None
        assert result.allowed is on_the_wire


def test_check_reports_one_error_for_a_bad_route_expose_headers(tmp_path: Path) -> None:
    """The route's expose_headers has an error: the top-level '*' it replaces is not
    checked against the route's credentials as if it applied."""
    path = tmp_path / "c.yaml"
    path.write_text(
        "upstream: http://up:1\ncors:\n  allow_origins: [https://a.example]\n"
        '  expose_headers: "*"\nroutes:\n  - path_prefix: /c\n'
        "    cors: {allow_credentials: true, expose_headers: [x-up, Set-Cookie]}\n"
    )
    result = CliRunner().invoke(cli, ["check", "-c", str(path)])
    assert result.exit_code != 0
    assert "Set-Cookie" in result.output and "1 error" in result.output
    assert "'*' cannot be used" not in result.output


def _fix_line(args: list[str], env: dict[str, str] | None = None) -> str:
    result = CliRunner().invoke(cli, ["explain", *args], env=env or {})
    assert result.exit_code == 1, result.output
    return next(line for line in result.output.splitlines() if "Fix:" in line)


def test_with_no_file_the_fix_names_the_flag_and_the_variable() -> None:
    """A policy made of flags and variables has no file to edit: the fix says which flag (or
    variable) to give, and the fix works when given."""
    up = ["--upstream", "http://127.0.0.1:9", "--origin", "https://a.example"]
    fix = _fix_line(up)
    assert "--allow-origin https://a.example" in fix, fix
    assert "CORSPROXY_ALLOW_ORIGINS=https://a.example" in fix, fix
    assert "to command line" not in fix, fix
    request = [*up, "--allow-origin", "https://a.example", "-X", "PUT", "-H", "X-Custom:1"]
    fix = _fix_line(request)
    assert "--allow-method PUT" in fix and "--allow-header X-Custom" in fix, fix
    assert "of the config" not in fix, fix
    fixed = CliRunner().invoke(
        cli, ["explain", *request, "--allow-method", "PUT", "--allow-header", "X-Custom"], env={}
    )
    assert fixed.exit_code == 0, fixed.output
    fixed = CliRunner().invoke(
        cli,
        ["explain", *request],
        env={"CORSPROXY_ALLOW_METHODS": "PUT", "CORSPROXY_ALLOW_HEADERS": "X-Custom"},
    )
    assert fixed.exit_code == 0, fixed.output


def test_the_demo_policy_fix_names_the_flag_that_replaces_it() -> None:
    fix = _fix_line(["--demo", "--origin", "https://a.example"])
    assert "--allow-origin https://a.example" in fix and "replaces --demo's" in fix, fix
    fixed = CliRunner().invoke(
        cli, ["explain", "--demo", "--origin", "https://a.example",
              "--allow-origin", "https://a.example"], env={},
    )  # fmt: skip
    assert fixed.exit_code == 0, fixed.output
