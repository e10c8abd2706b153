"""The command line, through click's runner and as a real subprocess."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from corsproxy import __version__
from corsproxy.commands.cli import cli

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = str(ROOT / "config.example.yaml")


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return str(path)


def test_version(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert result.output == f"corsproxy, version {__version__}\n"


def test_check_accepts_the_example(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["check", "--config", EXAMPLE])
    assert result.exit_code == 0, result.output
    assert (
        result.stdout
        == f"{EXAMPLE}: OK: upstream http://legacy:9000, 3 routes, the default policy on /\n"
    )


def test_check_prints_every_error_and_exits_2(runner: CliRunner, tmp_path: Path) -> None:
    path = write(tmp_path, "upstream: ftp://x\ncors:\n  allow_origin: []\n")
    result = runner.invoke(cli, ["check", "-c", path])
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"{path}:1: upstream: upstream URL 'ftp://x' must start with http:// or https:// "
        "(write an http(s) URL such as 'http://legacy:9000'; a base path may follow)",
        f"{path}:3: cors.allow_origin: unknown key (did you mean 'allow_origins'?)",
        f"{path}: 2 errors",
    ]


def test_check_warnings_exit_0_unless_strict(runner: CliRunner, tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "upstream: http://u:1\ncors:\n  allow_origins: [https://a.example]\n  max_age: 3600\n",
    )
    result = runner.invoke(cli, ["check", "-c", path])
    assert result.exit_code == 0
    assert "warning: max_age 3600 is above Safari's cap" in result.stderr
    assert "1 warning(s)" in result.stdout
    assert runner.invoke(cli, ["check", "-c", path, "--strict"]).exit_code == 2


def test_check_missing_file(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(cli, ["check", "-c", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2
    assert "cannot read the config" in result.stderr


def test_config_from_environment(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["check"], env={"CORSPROXY_CONFIG": EXAMPLE})
    assert result.exit_code == 0


def test_explain_exit_codes(runner: CliRunner, tmp_path: Path) -> None:
    base = ["explain", "-c", EXAMPLE]
    allowed = runner.invoke(
        cli,
        [
            *base,
            "--origin",
            "https://app.example.com",
            "-X",
            "PUT",
            "-H",
            "Content-Type: application/json",
            "--credentials",
        ],
    )
    assert allowed.exit_code == 0, allowed.output
    assert "VERDICT: ALLOWED" in allowed.stdout
    blocked = runner.invoke(cli, [*base, "--origin", "https://evil.example"])
    assert blocked.exit_code == 1
    assert "VERDICT: BLOCKED (origin_not_allowed)" in blocked.stdout
    assert "Firefox: CORSMissingAllowOrigin" in blocked.stdout
    bad = write(tmp_path, "upstream: nope\n")
    assert runner.invoke(cli, ["explain", "-c", bad, "--origin", "https://a"]).exit_code == 2
    assert runner.invoke(cli, [*base]).exit_code == 2  # --origin is required
    bad_header = runner.invoke(cli, [*base, "--origin", "https://a", "-H", "a b:c"])
    assert bad_header.exit_code == 2


def test_explain_a_websocket_by_its_url(runner: CliRunner) -> None:
    base = ["explain", "-c", EXAMPLE, "--path", "wss://api.example.com/internal/ws"]
    cross = runner.invoke(cli, [*base, "--origin", "https://app.example.com"])
    assert cross.exit_code == 1, cross.output
    assert "VERDICT: BLOCKED (websocket_cross_origin)" in cross.stdout
    # corsproxy never terminates TLS: it sees the wss:// handshake as http, so a page on
    # https://api.example.com is cross-origin there, as the server decides.
    tls = runner.invoke(cli, [*base, "--origin", "https://api.example.com"])
    assert tls.exit_code == 1, tls.output
    assert "does not terminate TLS" in tls.stdout
    # The page's origin is the proxy's own (from the ws:// URL, userinfo dropped).
    plain = ["explain", "-c", EXAMPLE, "--path", "ws://u:p@api.example.com/internal/ws"]
    same = runner.invoke(cli, [*plain, "--origin", "http://api.example.com"])
    assert same.exit_code == 0, same.output
    assert "WebSocket handshake  [ok]" in same.stdout
    other = ["--origin", "http://app.example.com", "--proxy-origin", "http://app.example.com"]
    assert runner.invoke(cli, [*base, *other]).exit_code == 0
    flag = ["explain", "-c", EXAMPLE, "--websocket", "--path", "/api/chat"]
    result = runner.invoke(cli, [*flag, "--origin", "https://evil.example", "--format", "json"])
    assert result.exit_code == 1
    assert json.loads(result.stdout)["reason"] == "websocket_origin_not_allowed"


def test_explain_json(runner: CliRunner) -> None:
    result = runner.invoke(
        cli,
        [
            "explain",
            "-c",
            EXAMPLE,
            "--origin",
            "https://evil.example",
            "--path",
            "api/public/x",
            "--credentials",
            "--format",
            "json",
        ],
    )
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert data["verdict"] == "blocked"
    assert data["browser_error"]["firefox"] == "CORSNotSupportingCredentials"
    assert data["reason"] == "credentials_with_wildcard_origin"  # snake_case, like the others
    assert data["browser_error"]["chrome"] == "WildcardOriginNotAllowed"


def test_schema_is_json_schema(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["schema"])
    assert result.exit_code == 0
    schema = json.loads(result.stdout)
    assert schema["$schema"].endswith("2020-12/schema")
    assert schema["additionalProperties"] is False
    assert "allow_origins" in schema["properties"]["cors"]["anyOf"][1]["properties"]


def _console_script() -> str:
    script = Path(sys.executable).parent / "corsproxy"
    found = str(script) if script.exists() else shutil.which("corsproxy")
    if found is None:
        pytest.fail("the corsproxy console script is not installed (pip install -e .)")
    return found


def test_subprocess_console_script_and_module(tmp_path: Path) -> None:
    env = {**os.environ, "LEGACY_API_URL": "http://127.0.0.1:9000"}
    ok = subprocess.run(
        [_console_script(), "check", "--config", EXAMPLE],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    assert "OK: upstream http://127.0.0.1:9000" in ok.stdout
    bad = write(tmp_path, "upstream: [oops\n")
    failed = subprocess.run(
        [sys.executable, "-m", "corsproxy", "check", "-c", bad],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert failed.returncode == 2
    assert "Traceback" not in failed.stderr
    assert failed.stderr.startswith(f"{bad}:1:11: YAML syntax error: the '[' opened here")


@pytest.mark.parametrize(
    "cors",
    [
        "  allow_origins: ['regex:https://(a+)+\\.example\\.com']\n",
        "  allow_origins: ['regex:https://.+']\n",
        "  allow_origins: ['*']\n  allow_private_network: true\n",
    ],
    ids=["superlinear-regex", "match-everything-regex", "private-network-any-origin"],
)
def test_check_warns_about_risky_origins_and_strict_refuses(
    runner: CliRunner, tmp_path: Path, cors: str
) -> None:
    path = write(tmp_path, "upstream: http://u:1\ncors:\n" + cors)
    result = runner.invoke(cli, ["check", "-c", path])
    assert result.exit_code == 0, result.output
    assert ": warning: " in result.stderr and "1 warning(s)" in result.stdout
    strict = runner.invoke(cli, ["check", "-c", path, "--strict"])
    assert strict.exit_code == 2
    assert "warnings are errors with --strict" in strict.stderr


def test_explain_names_the_reading_of_an_ambiguous_path(runner: CliRunner) -> None:
    base = ["explain", "-c", EXAMPLE, "--origin", "https://app.example.com", "--path"]
    result = runner.invoke(cli, [*base, "/internal::$DATA/x", "--format", "json"])
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert data["reason"] == "path_ambiguous"
    lines = data["steps"][0]["lines"]
    assert any("stream suffixes dropped" in line and "'/internal'" in line for line in lines)
    routed = runner.invoke(cli, [*base, "/INTERNAL/x"])
    assert "route '/internal' (path_prefix /internal" in routed.stdout
    assert "VERDICT: BLOCKED (cors_disabled)" in routed.stdout


def test_workers_get_the_parsed_serve_options_not_sys_argv(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # In process, sys.argv is pytest's: the arguments must come from what click parsed.
    import logging

    from corsproxy.ops import workers

    captured: list[list[str]] = []

    def supervise(count: int, argv: list[str], *rest: object) -> int:
        captured.append(list(argv))
        return 0

    monkeypatch.setattr(workers, "supervise", supervise)
    root, access = logging.getLogger(), logging.getLogger("aiohttp.access")
    for logger, attribute in ((root, "handlers"), (root, "level"), (access, "disabled")):
        monkeypatch.setattr(logger, attribute, getattr(logger, attribute))  # serve sets them
    monkeypatch.setenv("CORSPROXY_DRAIN_DELAY", "3")  # reaches workers by the environment
    monkeypatch.delenv(workers.WORKER_ENV, raising=False)
    path = write(tmp_path, "upstream: http://127.0.0.1:1\n")
    result = runner.invoke(
        cli,
        [
            "serve", "-c", path, "--listen", "127.0.0.1:0", "--workers", "2",
            "--allow-origin", "https://a.example,https://b.example", "--no-allow-credentials",
            "--log-format", "text", "--shutdown-timeout", "7", "--no-uvloop",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert captured == [
        [
            "--config", path, "--listen", "127.0.0.1:0",
            "--allow-origin", "https://a.example", "--allow-origin", "https://b.example",
            "--no-allow-credentials", "--log-format", "text", "--shutdown-timeout", "7.0",
            "--no-uvloop",
        ]
    ]  # fmt: skip
