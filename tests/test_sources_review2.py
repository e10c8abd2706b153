"""The second outside review of issue 15's sources: `check` and `config` say whether `serve`
will start (its sources and its own variables), bad variables named, empty ones ignored,
regex origins kept whole, sizes bounded, listener mistakes said in words, and a healthcheck
URL without a path refused. Commands in process; `serve` as a real process where the
behaviour is the process's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from corsproxy.commands.cli import cli
from tests.net import ROOT, TIMEOUT, free_port

UPSTREAM = "http://127.0.0.1:9"
APP = "https://app.example.com"
CREDENTIALED = """upstream: http://127.0.0.1:9
cors:
  allow_origins: [http://localhost:5173]
  allow_credentials: true
"""


def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
    """The command in process, with no CORSPROXY_* variable but those given."""
    unset: dict[str, str | None] = {k: None for k in os.environ if k.startswith("CORSPROXY_")}
    return CliRunner().invoke(cli, list(args), env={**unset, **(env or {})})


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CORSPROXY_")}
    return subprocess.run(
        [sys.executable, "-m", "corsproxy", *args],
        capture_output=True, text=True, timeout=TIMEOUT * 3, check=False, cwd=ROOT,
        env={**clean, **(env or {})},
    )  # fmt: skip


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return str(path)


# --- W3. check reads serve's sources and variables ----------------------------------------


def test_check_reads_the_policy_variables_serve_reads(tmp_path: Path) -> None:
    config = write(tmp_path, CREDENTIALED)
    env = {"CORSPROXY_CONFIG": config, "CORSPROXY_ALLOW_ORIGINS": "*", "CORSPROXY_MAX_AGE": "10m"}
    result = invoke("check", env=env)
    assert result.exit_code == 2, result.output
    assert "CORSPROXY_ALLOW_ORIGINS: cors.allow_origins[0]: '*' cannot be used" in result.output
    assert "CORSPROXY_MAX_AGE: cors.max_age: expected a whole number" in result.output
    served = run("serve", "--log-format", "text", env={**env, "CORSPROXY_LISTEN": "127.0.0.1:0"})
    assert served.returncode == 2, served.stderr  # what check said: serve refuses it too


def test_check_without_a_file_reads_flags_and_variables() -> None:
    result = invoke("check", "--allow-origin", APP, env={"CORSPROXY_UPSTREAM": UPSTREAM})
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"command line: OK: upstream {UPSTREAM}, 0 routes")
    nothing = invoke("check")
    assert nothing.exit_code == 2
    assert "Missing option" not in nothing.output
    assert "no upstream is configured" in nothing.output


def test_check_config_file_works_as_before(tmp_path: Path) -> None:
    config = write(tmp_path, CREDENTIALED)
    result = invoke("check", "--config", config)
    assert result.exit_code == 0, result.output
    assert (
        result.output
        == f"{config}: OK: upstream http://127.0.0.1:9, 0 routes, the default policy on /\n"
    )


SERVE_VARIABLES = [
    ("CORSPROXY_WORKERS", "0", "Invalid value for CORSPROXY_WORKERS: a number of at least 1"),
    ("CORSPROXY_LOG_FORMAT", "xml", "Invalid value for CORSPROXY_LOG_FORMAT: 'xml' is not one"),
    ("CORSPROXY_LOG_LEVEL", "loud", "Invalid value for CORSPROXY_LOG_LEVEL: 'loud' is not one"),
    ("CORSPROXY_SHUTDOWN_TIMEOUT", "5x", "Invalid value for CORSPROXY_SHUTDOWN_TIMEOUT: '5x'"),
    ("CORSPROXY_DRAIN_DELAY", "-1", "Invalid value for CORSPROXY_DRAIN_DELAY: '-1'"),
    ("CORSPROXY_UVLOOP", "maybe", "Invalid value for CORSPROXY_UVLOOP: 'maybe' is not true"),
    ("CORSPROXY_PROBE_TIMEOUT", "abc", "Invalid value for CORSPROXY_PROBE_TIMEOUT: 'abc' is not"),
]


@pytest.mark.parametrize(("variable", "value", "message"), SERVE_VARIABLES)
@pytest.mark.parametrize("command", ["check", "config"])
def test_check_and_config_refuse_a_serve_variable_serve_refuses(
    command: str, variable: str, value: str, message: str
) -> None:
    result = invoke(command, "--upstream", UPSTREAM, env={variable: value})
    assert result.exit_code == 2, result.output
    assert message in result.output


@pytest.mark.parametrize(("variable", "value", "message"), SERVE_VARIABLES)
def test_serve_refuses_them_with_the_same_message(variable: str, value: str, message: str) -> None:
    env = {variable: value, "CORSPROXY_LISTEN": f"127.0.0.1:{free_port()}"}
    result = run("serve", "--upstream", UPSTREAM, env=env)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr


def test_good_serve_variables_pass_check() -> None:
    env = {
        "CORSPROXY_WORKERS": "2", "CORSPROXY_LOG_FORMAT": "json", "CORSPROXY_LOG_LEVEL": "debug",
        "CORSPROXY_SHUTDOWN_TIMEOUT": "5s", "CORSPROXY_DRAIN_DELAY": "0",
        "CORSPROXY_UVLOOP": "off", "CORSPROXY_PROBE_TIMEOUT": "0",
    }  # fmt: skip
    result = invoke("check", "--upstream", UPSTREAM, env=env)
    assert result.exit_code == 0, result.output


# --- F2. check and config take serve's own flags ------------------------------------------

SERVE_LINE = [
    "--workers", "2", "--shutdown-timeout", "5s", "--drain-delay", "1", "--log-format", "json",
    "--log-level", "debug", "--no-uvloop",
]  # fmt: skip
SERVE_FLAGS = [
    ("--workers", "0", "Invalid value for --workers: a number of at least 1"),
    ("--log-format", "xml", "Invalid value for --log-format: 'xml' is not one"),
    ("--log-level", "loud", "Invalid value for --log-level: 'loud' is not one"),
    ("--shutdown-timeout", "5x", "Invalid value for --shutdown-timeout: '5x'"),
    ("--drain-delay", "-1", "Invalid value for --drain-delay: '-1'"),
]


def test_a_serve_command_line_with_serve_changed_to_check_or_config_is_read_whole() -> None:
    assert invoke("check", "--upstream", UPSTREAM, *SERVE_LINE).exit_code == 0
    plain = invoke("config", "--upstream", UPSTREAM)
    flagged = invoke("config", "--upstream", UPSTREAM, *SERVE_LINE, "--uvloop")
    assert flagged.exit_code == 0, flagged.output
    assert flagged.stdout == plain.stdout  # process options, not configuration keys


@pytest.mark.parametrize(("flag", "value", "message"), SERVE_FLAGS)
@pytest.mark.parametrize("command", ["check", "config"])
def test_check_and_config_refuse_a_serve_flag_serve_refuses(
    command: str, flag: str, value: str, message: str
) -> None:
    result = invoke(command, "--upstream", UPSTREAM, flag, value)
    assert result.exit_code == 2, result.output
    assert message in result.output


@pytest.mark.parametrize(("flag", "value", "message"), SERVE_FLAGS[:2])
def test_serve_refuses_those_flags_with_the_same_message(
    flag: str, value: str, message: str
) -> None:
    listen = f"127.0.0.1:{free_port()}"
    result = run("serve", "--upstream", UPSTREAM, "--listen", listen, flag, value)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr


# --- R8. allow_insecure_origins has its flag and variable ----------------------------------


@pytest.mark.parametrize(
    ("args", "env"),
    [(["--allow-insecure-origins"], {}), ([], {"CORSPROXY_ALLOW_INSECURE_ORIGINS": "true"})],
)
def test_insecure_origins_with_credentials_from_flags_or_variables(
    args: list[str], env: dict[str, str]
) -> None:
    base = ["--upstream", UPSTREAM, "--allow-origin", "http://app.lan", "--allow-credentials"]
    refused = invoke("check", *base)
    assert refused.exit_code == 2
    assert "or --allow-insecure-origins / CORSPROXY_ALLOW_INSECURE_ORIGINS" in refused.output
    result = invoke("check", *base, *args, env=env)
    assert result.exit_code == 0, result.output


# --- R10. regex origins in a variable ----------------------------------------------------


def test_a_regex_origin_in_a_variable_keeps_commas_in_brackets_and_parentheses() -> None:
    value = r"regex:^https://[a,b]\.example$,regex:^https://(c|d,e)\.example$,https://f.example"
    result = invoke(
        "config", "--format", "json", "--upstream", UPSTREAM,
        env={"CORSPROXY_ALLOW_ORIGINS": value},
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["cors"]["allow_origins"] == [
        r"regex:^https://[a,b]\.example$$",  # `$` written `$$`: the output is a config
        r"regex:^https://(c|d,e)\.example$$",
        "https://f.example",
    ]


def test_an_item_of_a_split_variable_that_fails_says_it_was_split() -> None:
    result = invoke(
        "check", "--upstream", UPSTREAM,
        env={"CORSPROXY_ALLOW_ORIGINS": r"regex:^https://\[a,b\]$"},
    )  # fmt: skip
    assert result.exit_code == 2
    assert "CORSPROXY_ALLOW_ORIGINS (split at commas): cors.allow_origins[1]" in result.output


# --- R14. booleans, numbers, empty variables, names --------------------------------------


@pytest.mark.parametrize("value", ["t", "y", "f", "n", "T"])
def test_a_boolean_variable_takes_only_the_documented_words(value: str) -> None:
    result = invoke("check", "--upstream", UPSTREAM, env={"CORSPROXY_PRESERVE_HOST": value})
    assert result.exit_code == 2, result.output
    assert f"CORSPROXY_PRESERVE_HOST: '{value}' is not true or false" in result.output


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("0600", "'0600' has a leading 0 (write 600)"),
        ("1_000", "'1_000' is not a plain decimal number (write 1000)"),
    ],
)
def test_a_number_variable_is_not_explained_in_yaml_words(value: str, message: str) -> None:
    result = invoke("check", "--upstream", UPSTREAM, env={"CORSPROXY_MAX_AGE": value})
    assert result.exit_code == 2
    assert f"CORSPROXY_MAX_AGE: cors.max_age: {message}" in result.output
    assert "YAML" not in result.output


@pytest.mark.parametrize(
    "variable",
    ["CORSPROXY_ALLOW_ORIGINS", "CORSPROXY_ALLOW_METHODS", "CORSPROXY_MAX_AGE", "CORSPROXY_MODE",
     "CORSPROXY_ALLOW_CREDENTIALS", "CORSPROXY_UPSTREAM"],
)  # fmt: skip
@pytest.mark.parametrize("value", ["", "  "])
def test_an_empty_variable_is_ignored(tmp_path: Path, variable: str, value: str) -> None:
    config = write(tmp_path, CREDENTIALED + "  max_age: 60\n  mode: report-only\n")
    plain = invoke("config", "--format", "json", "--config", config)
    result = invoke("config", "--format", "json", "--config", config, env={variable: value})
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == json.loads(plain.stdout)
    assert result.stderr == plain.stderr  # no warning of its own


def test_admin_listen_help_mentions_the_console() -> None:
    result = invoke("serve", "--help")
    assert "of the console (/)" in " ".join(result.output.split())


# --- R13. sizes ------------------------------------------------------------------------------


@pytest.mark.parametrize("size", ["99999999999GB", "1025GiB", "1099511627777", "9" * 30])
def test_a_size_over_a_tebibyte_is_refused(tmp_path: Path, size: str) -> None:
    config = write(tmp_path, f"upstream: {UPSTREAM}\nlimits: {{max_body_size: {size}}}\n")
    result = invoke("check", "--config", config)
    assert result.exit_code == 2, result.output
    assert "limits.max_body_size: a size must be at most 1 TiB (1099511627776 bytes)" in (
        result.output
    )


@pytest.mark.parametrize(
    ("size", "expected"), [("1024GiB", 1024**4), ("2.01KB", 2010), ("2.01GB", 2_010_000_000)]
)
def test_a_size_is_an_exact_whole_number(tmp_path: Path, size: str, expected: int) -> None:
    config = write(tmp_path, f"upstream: {UPSTREAM}\nlimits: {{max_body_size: {size}}}\n")
    result = invoke("config", "--format", "json", "--config", config)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["limits"]["max_body_size"] == expected


# --- R9. listeners --------------------------------------------------------------------------


def test_an_ipv4_mapped_listen_address_is_refused_at_load() -> None:
    result = invoke("check", "--upstream", UPSTREAM, "--listen", "[::ffff:127.0.0.1]:23093")
    assert result.exit_code == 2
    assert "'::ffff:127.0.0.1' is an IPv4-mapped IPv6 address (write 127.0.0.1:23093)" in (
        result.output
    )


@pytest.mark.parametrize("workers", ["1", "2"])
def test_admin_on_listens_port_by_another_name_is_said_to_be_corsproxys_own(workers: str) -> None:
    """With --workers both would bind (SO_REUSEPORT) and share connections: refused too."""
    port = free_port()
    result = run(
        "serve", "--log-format", "json", "--upstream", UPSTREAM, "--workers", workers,
        "--listen", f"localhost:{port}", "--admin-listen", f"127.0.0.1:{port}",
    )  # fmt: skip
    assert result.returncode != 0, result.stderr
    errors = [json.loads(line) for line in result.stderr.splitlines() if '"error"' in line]
    error = next(e for e in errors if e.get("listener") == "admin.listen")
    assert error["hint"].startswith(
        f"the same port as listen (localhost:{port}), which corsproxy itself holds"
    )


# --- R11. healthcheck URL without a path ------------------------------------------------------


@pytest.mark.parametrize("url", ["http://127.0.0.1:23091", "http://127.0.0.1:23091/"])
def test_a_healthcheck_url_without_a_path_is_a_usage_error(url: str) -> None:
    result = invoke("healthcheck", "--url", url)
    assert result.exit_code == 2
    assert "(add /healthz: http://127.0.0.1:23091/healthz)" in result.output
