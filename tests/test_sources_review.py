"""The outside review of issue 15's sections 2 and 3 (configuration sources and start-up),
each finding as a user meets it: the `config` and `check` commands in process, `serve` and
`healthcheck` as real processes where the behaviour is the process's."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from corsproxy.commands.cli import cli
from tests.net import ROOT, TIMEOUT, free_port
from tests.test_serve_startup import Serve, summaries

UPSTREAM = "http://127.0.0.1:9"
APP = "https://app.example.com"


def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
    """The command in process, with no CORSPROXY_* variable but those given."""
    unset: dict[str, str | None] = {k: None for k in os.environ if k.startswith("CORSPROXY_")}
    return CliRunner().invoke(cli, list(args), env={**unset, **(env or {})})


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return str(path)


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`corsproxy ARGS` as a real process (its own stderr, tty or not)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CORSPROXY_")}
    return subprocess.run(
        [sys.executable, "-m", "corsproxy", *args],
        capture_output=True, text=True, timeout=TIMEOUT * 3, check=False, cwd=ROOT,
        env={**clean, **(env or {})},
    )  # fmt: skip


# --- 1. a flag never hides the file's own error ----------------------------------------


@pytest.mark.parametrize(
    ("text", "args", "env", "message"),
    [
        ("cors: [a]", ["--allow-origin", APP], {}, "c.yaml:2: cors: expected a mapping"),
        ("cors: 5", ["--allow-origin", APP], {}, "c.yaml:2: cors: expected false or a mapping"),
        ("cors:", ["--max-age", "5"], {}, "c.yaml:2: cors: `cors:` is empty"),
        ("admin: [1]", [], {"CORSPROXY_ADMIN_LISTEN": ":0"}, "c.yaml:2: admin: expected a"),
        ("listen: {a: 1}", [], {"CORSPROXY_LISTEN": ":0"}, "c.yaml:2: listen: expected a single"),
        (
            "cors:\n  allow_origins: {a: 1}",
            ["--allow-origin", APP],
            {},
            "c.yaml:3: cors.allow_origins: expected a list, got a mapping",
        ),
    ],
)
@pytest.mark.parametrize("command", ["config", "check"])
def test_a_flag_or_variable_does_not_hide_the_files_error(
    tmp_path: Path, command: str, text: str, args: list[str], env: dict[str, str], message: str
) -> None:
    path = write(tmp_path, f"upstream: {UPSTREAM}\n{text}\n")
    if command == "check":  # the file alone: the same error
        result = invoke("check", "-c", path)
    else:
        result = invoke("config", "-c", path, *args, env=env)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_a_flag_over_cors_false_turns_cors_on_with_a_warning_naming_both(tmp_path: Path) -> None:
    path = write(tmp_path, f"upstream: {UPSTREAM}\ncors: false\n")
    result = invoke("config", "--format", "json", "-c", path, "--allow-origin", APP)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["cors"]["allow_origins"] == [APP]
    assert (
        "c.yaml:2: cors: warning: the file's `false` is overridden by --allow-origin"
        in result.stderr
    )


# --- 2. a route's aliased cors block keeps the file's values ----------------------------


def test_a_flag_does_not_rewrite_a_routes_aliased_cors_block(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"upstream: {UPSTREAM}\n"
        "cors: &shared\n  allow_origins: [https://file.example]\n  max_age: 60\n"
        "routes:\n  - path_prefix: /partner\n    cors: *shared\n",
    )
    result = invoke(
        "config", "--format", "json", "-c", path, "--allow-origin", APP, "--max-age", "5"
    )
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["cors"]["allow_origins"] == [APP]
    assert document["cors"]["max_age"] == 5
    route = document["routes"][0]["cors"]
    assert route["allow_origins"] == ["https://file.example"]
    assert route["max_age"] == 60


# --- 3. durations are finite and bounded -------------------------------------------------


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (".nan", "a duration must be a number of seconds"),
        (".inf", "a duration must be at most 1 day (86400 s)"),
        ("99999999999999999999h", "a duration must be at most 1 day (86400 s)"),
        ("86401", "a duration must be at most 1 day"),
    ],
)
def test_a_duration_in_the_file_is_finite_and_at_most_a_day(
    tmp_path: Path, value: str, message: str
) -> None:
    path = write(tmp_path, f"upstream: {UPSTREAM}\ntimeouts:\n  read: {value}\n")
    result = invoke("check", "-c", path)
    assert result.exit_code == 2, result.output
    assert f"c.yaml:3: timeouts.read: {message}" in result.output


def test_a_day_is_the_longest_duration(tmp_path: Path) -> None:
    path = write(tmp_path, f"upstream: {UPSTREAM}\ncors: false\ntimeouts:\n  read: 24h\n")
    result = invoke("check", "-c", path)
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(
    "args",
    [
        [
            "healthcheck",
            "--url",
            "http://127.0.0.1:9/healthz",
            "--timeout",
            "99999999999999999999h",
        ],
        ["healthcheck", "--url", "http://127.0.0.1:9/healthz", "--timeout", "0"],
        ["serve", "--upstream", UPSTREAM, "--shutdown-timeout", "99999999999999999999h"],
        ["serve", "--upstream", UPSTREAM, "--drain-delay", "2000000"],
    ],
)
def test_a_duration_flag_out_of_bounds_is_a_usage_error(args: list[str]) -> None:
    if args[0] == "serve":
        args = [*args, "--listen", f"127.0.0.1:{free_port()}", "--log-format", "text"]
    result = run(*args)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "Invalid value for --" in result.stderr
    assert "more than zero" in result.stderr or "at most 1 day" in result.stderr


# --- 4. serve's usage errors are JSON lines in JSON mode ----------------------------------


def _json_lines(stderr: str) -> list[dict[str, Any]]:
    records = []
    for line in stderr.splitlines():
        record = json.loads(line)  # every line, or the test fails here naming it
        assert isinstance(record, dict)
        assert {"time", "level", "logger", "message"} <= set(record), line
        records.append(record)
    return records


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--drain-delay", "5x"], {}, "Invalid value for --drain-delay"),
        ([], {"CORSPROXY_ALLOW_CREDENTIALS": "maybe"}, "CORSPROXY_ALLOW_CREDENTIALS"),
        (["--workers", "abc"], {}, "Invalid value for --workers"),
        (["--workers", "0"], {}, "Invalid value for --workers"),
        (["--bogus"], {}, "No such option '--bogus'"),
        (["--shutdown-timeout", "1e308"], {}, "Invalid value for --shutdown-timeout"),
    ],
)
@pytest.mark.parametrize("how", ["flag", "variable", "not a terminal"])
def test_in_json_mode_a_usage_error_is_a_json_line(
    how: str, args: list[str], env: dict[str, str], message: str
) -> None:
    given = {"flag": ["--log-format", "json"], "variable": [], "not a terminal": []}[how]
    variables = {"CORSPROXY_LOG_FORMAT": "json"} if how == "variable" else {}
    result = run(
        "serve", *given, "--upstream", UPSTREAM, "--listen", f"127.0.0.1:{free_port()}", *args,
        env={**variables, **env},
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    errors = [r for r in _json_lines(result.stderr) if r["level"] == "error"]
    assert len(errors) == 1, result.stderr
    assert message in errors[0]["message"]
    assert errors[0]["usage"] == "Usage: corsproxy serve [OPTIONS]"


def test_in_text_mode_a_usage_error_is_clicks_text() -> None:
    result = run("serve", "--log-format", "text", "--drain-delay", "5x")
    assert result.returncode == 2
    assert "Usage: corsproxy serve [OPTIONS]" in result.stderr
    assert "Error: Invalid value for --drain-delay" in result.stderr


# --- 5, 6. the demo: its summary and probe, and where it listens -----------------------


def test_demo_with_workers_announces_no_placeholder_and_warns_once(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("cors: {mode: report-only}\n")  # one warning
    proc = Serve(
        "--log-format", "json", "-c", str(config), "--demo", "--workers", "2",
        "--listen", f"127.0.0.1:{free_port()}",
    )  # fmt: skip
    try:
        proc.wait(lambda: sum(" ready" in m for m in proc.messages()) == 2)
        time.sleep(2.5)  # the supervisor's probe (1 s to connect) would have said it by now
    finally:
        assert proc.stop() == 0
    (summary,) = summaries(proc)
    assert summary["routes"][0]["upstream"] == "the built-in demo upstream"
    messages = proc.messages()
    assert not [m for m in messages if "not reachable" in m], messages
    warnings = [r for r in proc.records() if r.get("key") == "cors.mode"]
    assert len(warnings) == 1, proc.lines


def test_config_demo_shows_where_serve_demo_listens() -> None:
    result = invoke("config", "--demo", "--format", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["listen"] == "127.0.0.1:8080"
    given = invoke("config", "--demo", "--format", "json", "--listen", ":9000")
    assert json.loads(given.stdout)["listen"] == "0.0.0.0:9000"


# --- 7. a listen host that is no address, or does not resolve ----------------------------


@pytest.mark.parametrize("host", ["256.1.1.1", "1.2.3", "127.000.0.1"])
def test_digits_and_dots_that_are_no_ipv4_address_are_refused_at_load(host: str) -> None:
    result = invoke("config", "--upstream", UPSTREAM, "--listen", f"{host}:8080")
    assert result.exit_code == 2, result.output
    assert f"--listen: listen: '{host}' is not an IPv4 address" in result.output


def test_a_listen_host_that_does_not_resolve_is_said_in_words() -> None:
    result = run(
        "serve", "--log-format", "json", "--upstream", UPSTREAM,
        "--listen", f"no-such-host.invalid:{free_port()}",
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    (error,) = [r for r in _json_lines(result.stderr) if r["level"] == "error"]
    assert error["error"].startswith("the host name does not resolve")
    assert error["hint"] == "write an IP address, or a name this host resolves"
    assert "unknown error" not in result.stderr


# --- 10. a password in the upstream URL is never echoed ---------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://user:s3cret@127.0.0.1:99999",
        "ftp://user:s3cret@127.0.0.1:9",
        "http://user:s3cret@[zz]:9",
        "http://user:s3cret@bad_host!:9",
    ],
)
def test_an_upstream_urls_password_is_not_in_its_error(url: str) -> None:
    result = invoke("config", env={"CORSPROXY_UPSTREAM": url})
    assert result.exit_code == 2, result.output
    assert "CORSPROXY_UPSTREAM: upstream:" in result.output
    assert "s3cret" not in result.output
    assert "user" not in result.output


def test_an_upstream_urls_password_is_not_in_the_files_error(tmp_path: Path) -> None:
    path = write(tmp_path, "upstream: 'http://user:s3cret@127.0.0.1:99999'\n")
    result = invoke("check", "-c", path)
    assert result.exit_code == 2
    assert "http://***@127.0.0.1:99999" in result.output
    assert "s3cret" not in result.output


# --- 12. listen and admin.listen on one address -------------------------------------------


@pytest.mark.parametrize(
    ("listen", "admin", "problem"),
    [
        ("127.0.0.1:{p}", "127.0.0.1:{p}", "is the same address as listen"),
        ("{p}", "127.0.0.1:{p}", "overlaps listen (0.0.0.0:{p})"),
        ("127.0.0.1:{p}", ":{p}", "overlaps listen (127.0.0.1:{p})"),
        ("[::]:{p}", "127.0.0.1:{p}", "overlaps listen ([::]:{p})"),
    ],
)
def test_admin_listen_on_the_address_of_listen_is_refused_at_load(
    tmp_path: Path, listen: str, admin: str, problem: str
) -> None:
    port = free_port()
    path = write(
        tmp_path,
        f"upstream: {UPSTREAM}\ncors: false\nlisten: '{listen.format(p=port)}'\n"
        f"admin:\n  listen: '{admin.format(p=port)}'\n",
    )
    result = invoke("check", "-c", path)
    assert result.exit_code == 2, result.output
    assert "c.yaml:5: admin.listen: " in result.output
    assert problem.format(p=port) in result.output
    assert "give admin.listen a port of its own" in result.output


@pytest.mark.parametrize(
    ("listen", "admin"),
    [("127.0.0.1:{p}", "127.0.0.2:{p}"), ("[::1]:{p}", "0.0.0.0:{p}"), ("127.0.0.1:0", ":0")],
)
def test_distinct_listeners_on_one_port_are_fine(listen: str, admin: str) -> None:
    port = free_port()
    result = invoke(
        "config", "--upstream", UPSTREAM, "--listen", listen.format(p=port),
        "--admin-listen", admin.format(p=port),
    )  # fmt: skip
    assert result.exit_code == 0, result.output


# --- 11. a regex origin's commas -----------------------------------------------------------

REGEX = r"regex:https://[a-z]{1,20}\.example\.com"


def test_a_regex_origin_flag_is_not_split_at_its_comma() -> None:
    result = invoke(
        "config", "--format", "json", "--upstream", UPSTREAM,
        "--allow-origin", REGEX, "--allow-origin", "https://a.example,https://b.example",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["cors"]["allow_origins"] == [
        REGEX, "https://a.example", "https://b.example",
    ]  # fmt: skip


def test_a_list_variable_does_not_split_inside_braces() -> None:
    result = invoke(
        "config", "--format", "json", "--upstream", UPSTREAM,
        env={"CORSPROXY_ALLOW_ORIGINS": f"{REGEX},https://b.example"},
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["cors"]["allow_origins"] == [REGEX, "https://b.example"]


# --- 14. a number flag reads as the file's; SIGHUP early at start ---------------------------


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("10m", "expected a whole number of seconds, got '10m' (in whole seconds: write 600)"),
        ("1_000", "'1_000' is not a plain decimal number"),
        ("0x10", "'0x10' is not a plain decimal number"),
        ("010", "'010' has a leading 0"),
    ],
)
@pytest.mark.parametrize("where", ["--max-age", "CORSPROXY_MAX_AGE"])
def test_a_max_age_flag_or_variable_gets_the_files_messages(
    where: str, value: str, message: str
) -> None:
    if where.startswith("--"):
        result = invoke("config", "--upstream", UPSTREAM, where, value)
    else:
        result = invoke("config", "--upstream", UPSTREAM, env={where: value})
    assert result.exit_code == 2, result.output
    assert f"{where}: cors.max_age: {message}" in result.output


def test_a_plain_max_age_flag_still_works() -> None:
    result = invoke("config", "--format", "json", "--upstream", UPSTREAM, "--max-age", " 600 ")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["cors"]["max_age"] == 600


def _catches_sighup(pid: int) -> bool:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) & (1 << (signal.SIGHUP - 1)))
    return False


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_sighup_early_at_start_is_one_reload_once_serving(tmp_path: Path, workers: str) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(f"upstream: {UPSTREAM}\ncors: false\nlisten: 127.0.0.1:{free_port()}\n")
    proc = Serve("--log-format", "json", "-c", str(config), "--workers", workers)
    try:
        deadline = time.monotonic() + TIMEOUT
        while not _catches_sighup(proc.proc.pid):  # as soon as anything catches it
            assert time.monotonic() < deadline and proc.proc.poll() is None, proc.lines
            time.sleep(0.001)
        proc.proc.send_signal(signal.SIGHUP)
        done = ("config reloaded", "supervisor: configuration reloaded")  # workers: said once
        proc.wait(lambda: [m for m in proc.messages() if m.startswith(done)])
        assert proc.proc.poll() is None
    finally:
        code = proc.stop()
    assert code == 0, proc.lines
    messages = proc.messages()
    assert messages.count("SIGHUP during start-up: reloading now") == 1, messages
    # Replayed once the reload handler is in place: the server's, or the supervisor's.
    mark = " listening on " if workers == "1" else ": started 2 workers"
    started = min(i for i, m in enumerate(messages) if mark in m)
    assert messages.index("SIGHUP during start-up: reloading now") > started
