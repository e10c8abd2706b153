"""Every configuration source as a user meets it (issue 15, section 2): the policy flags and
their `CORSPROXY_*` variables on `serve`, `explain` and `config`; durations and sizes in one
form everywhere; `:PORT` listen forms; `corsproxy config` and its round trip."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import aiohttp
import jsonschema
import pytest
import trustme
from click.testing import CliRunner, Result
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from corsproxy.commands import sources
from corsproxy.commands.cli import cli
from corsproxy.commands.sources import SOURCES, Duration
from corsproxy.config import (
    Config,
    ConfigError,
    Listen,
    json_schema,
    load_config,
    parse_config,
    parse_listen,
)
from corsproxy.config.effective import effective_document, render
from corsproxy.config.spec import SpecError, parse_size
from tests.net import ROOT, Recorder, free_port, running_app, start_cli

APP = "https://app.example.com"
OTHER = "https://other.example"
UPSTREAM = "http://127.0.0.1:9"
EXAMPLE = ROOT / "config.example.yaml"


def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
    """The command in process, with no CORSPROXY_* variable but those given."""
    unset: dict[str, str | None] = {k: None for k in os.environ if k.startswith("CORSPROXY_")}
    return CliRunner().invoke(cli, list(args), env={**unset, **(env or {})})


def effective(*args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    result = invoke("config", "--format", "json", *args, env=env)
    assert result.exit_code == 0, result.output
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def dig(document: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        document = document[part]
    return document


# --- every flag and its variable ----------------------------------------------------------

# flag arguments, the variable and its value, the effective key, the value expected
FLAGS: list[tuple[list[str], str, str, str, Any]] = [
    (["--allow-method", "PUT", "--allow-method", "PATCH"], "CORSPROXY_ALLOW_METHODS",
     "PUT, PATCH", "cors.allow_methods", ["PUT", "PATCH"]),
    (["--allow-method", "*"], "CORSPROXY_ALLOW_METHODS", "*", "cors.allow_methods", "*"),
    (["--allow-header", "Authorization", "--allow-header", "X-Trace-Id"],
     "CORSPROXY_ALLOW_HEADERS", "Authorization,X-Trace-Id", "cors.allow_headers",
     ["Authorization", "X-Trace-Id"]),
    (["--expose-header", "X-Request-Id,ETag"], "CORSPROXY_EXPOSE_HEADERS", "X-Request-Id,ETag",
     "cors.expose_headers", ["X-Request-Id", "ETag"]),
    (["--max-age", "120"], "CORSPROXY_MAX_AGE", "120", "cors.max_age", 120),
    (["--allow-private-network"], "CORSPROXY_ALLOW_PRIVATE_NETWORK", "yes",
     "cors.allow_private_network", True),
    (["--no-allow-private-network"], "CORSPROXY_ALLOW_PRIVATE_NETWORK", "0",
     "cors.allow_private_network", False),
    (["--mode", "report-only"], "CORSPROXY_MODE", "report-only", "cors.mode", "report-only"),
    (["--on-disallowed", "reject"], "CORSPROXY_ON_DISALLOWED", "reject", "cors.on_disallowed",
     "reject"),
    (["--no-preserve-host"], "CORSPROXY_PRESERVE_HOST", "false", "preserve_host", False),
    (["--preserve-host"], "CORSPROXY_PRESERVE_HOST", "TRUE", "preserve_host", True),
    (["--allow-origin", APP], "CORSPROXY_ALLOW_ORIGINS", f"{APP}, {OTHER}",
     "cors.allow_origins", {"flag": [OTHER, APP], "variable": [APP, OTHER]}),
    (["--allow-credentials"], "CORSPROXY_ALLOW_CREDENTIALS", "on", "cors.allow_credentials",
     True),
    (["--allow-insecure-origins"], "CORSPROXY_ALLOW_INSECURE_ORIGINS", "yes",
     "cors.allow_insecure_origins", True),
    (["--listen", ":8081"], "CORSPROXY_LISTEN", "8081", "listen", "0.0.0.0:8081"),
    (["--admin-listen", "127.0.0.1:9902"], "CORSPROXY_ADMIN_LISTEN", ":9902", "admin.listen",
     {"flag": "127.0.0.1:9902", "variable": "0.0.0.0:9902"}),
    (["--upstream", "http://x:1/base"], "CORSPROXY_UPSTREAM", "https://y", "upstream",
     {"flag": "http://x:1/base", "variable": "https://y"}),
    (["--watch"], "CORSPROXY_WATCH", "1", "watch", True),
]  # fmt: skip


def test_the_table_covers_every_flag_and_the_readme_documents_each() -> None:
    readme = (ROOT / "README.md").read_text()
    tested = {args[0].removeprefix("--no-").removeprefix("--") for args, *_ in FLAGS}
    for source in SOURCES:
        assert source.flag.removeprefix("--") in tested, source.flag
        assert f"`{source.envvar}`" in readme, source.envvar
        assert f"`{source.flag}" in readme, source.flag
    assert {s.envvar for s in SOURCES} == {envvar for _, envvar, *_ in FLAGS}


@pytest.mark.parametrize("given", ["flag", "variable"])
@pytest.mark.parametrize(("args", "envvar", "env_value", "key", "expected"), FLAGS)
def test_each_flag_and_its_variable_set_their_key(
    given: str, args: list[str], envvar: str, env_value: str, key: str, expected: Any
) -> None:
    if given == "flag":
        document = effective("--upstream", UPSTREAM, "--allow-origin", OTHER, *args)
    else:
        env = {"CORSPROXY_UPSTREAM": UPSTREAM, "CORSPROXY_ALLOW_ORIGINS": OTHER, envvar: env_value}
        document = effective(env=env)
    if isinstance(expected, dict):
        expected = expected[given]
    assert dig(document, key) == expected


def test_a_flag_wins_over_its_variable_and_both_over_the_file(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("upstream: http://u:1\ncors:\n  allow_origins: [https://a.example]\n"
                      "  allow_methods: [GET]\n  max_age: 60\n")  # fmt: skip
    env = {"CORSPROXY_ALLOW_METHODS": "DELETE", "CORSPROXY_MAX_AGE": "30"}
    document = effective("-c", str(config), "--max-age", "10", env=env)
    assert document["cors"]["allow_methods"] == ["DELETE"]
    assert document["cors"]["max_age"] == 10
    assert document["cors"]["allow_origins"] == ["https://a.example"]


def test_flags_set_the_default_policy_that_routes_inherit(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(
        "upstream: http://u:1\ncors: {allow_origins: [https://a.example]}\nroutes:\n"
        "  - {path_prefix: /inherits}\n"
        "  - {path_prefix: /own, cors: {allow_methods: [GET]}}\n"
    )
    document = effective("-c", str(config), "--allow-method", "PUT", "--no-preserve-host")
    inherits, own = document["routes"]
    assert inherits["cors"]["allow_methods"] == ["PUT"]
    assert own["cors"]["allow_methods"] == ["GET"]  # a route's own key stays its own
    assert inherits["preserve_host"] is own["preserve_host"] is False


# args, variables, what the message says (exit 2, no traceback, one line naming the source)
BAD: list[tuple[list[str], dict[str, str], str]] = [
    (["--max-age", "abc"], {}, "--max-age: cors.max_age: expected a whole number of seconds"),
    ([], {"CORSPROXY_MAX_AGE": "abc"}, "CORSPROXY_MAX_AGE: cors.max_age: expected a whole number"),
    (["--max-age", "90000"], {}, "--max-age: cors.max_age: must be at most 86400, got 90000"),
    ([], {"CORSPROXY_MAX_AGE": "-1"}, "CORSPROXY_MAX_AGE: cors.max_age: must be at least 0"),
    ([], {"CORSPROXY_MODE": "bogus"},
     "CORSPROXY_MODE: cors.mode: 'bogus' is not one of enforce | report-only"),
    (["--mode", "report_only"], {},
     "--mode: cors.mode: 'report_only' is not one of enforce | report-only (did you mean "
     "'report-only'?)"),
    (["--on-disallowed", "drop"], {},
     "--on-disallowed: cors.on_disallowed: 'drop' is not one of forward | reject"),
    ([], {"CORSPROXY_ON_DISALLOWED": "Reject"},
     "CORSPROXY_ON_DISALLOWED: cors.on_disallowed: 'Reject' is not one of forward | reject"),
    (["--allow-method", "GE T"], {},
     "--allow-method: cors.allow_methods[0]: 'GE T' is not an HTTP method name"),
    ([], {"CORSPROXY_ALLOW_METHODS": "GET,CONNECT"},
     "CORSPROXY_ALLOW_METHODS: cors.allow_methods[1]: browsers never send CONNECT cross-origin"),
    (["--allow-header", "X Y"], {},
     "--allow-header: cors.allow_headers[0]: 'X Y' is not a header name"),
    ([], {"CORSPROXY_ALLOW_HEADERS": "Authorization,(x)"},
     "CORSPROXY_ALLOW_HEADERS: cors.allow_headers[1]: '(x)' is not a header name"),
    (["--expose-header", "Set-Cookie"], {},
     "--expose-header: cors.expose_headers[0]: browsers never expose Set-Cookie to scripts"),
    ([], {"CORSPROXY_EXPOSE_HEADERS": "a b"},
     "CORSPROXY_EXPOSE_HEADERS: cors.expose_headers[0]: 'a b' is not a header name"),
    ([], {"CORSPROXY_ALLOW_METHODS": ","},
     "CORSPROXY_ALLOW_METHODS: cors.allow_methods: must not be empty"),
    (["--expose-header", "*", "--allow-credentials"], {"CORSPROXY_ALLOW_ORIGINS": APP},
     "--expose-header: cors.expose_headers"),
    ([], {"CORSPROXY_ALLOW_PRIVATE_NETWORK": "maybe"},
     "Invalid value for CORSPROXY_ALLOW_PRIVATE_NETWORK: 'maybe' is not true or false"),
    ([], {"CORSPROXY_PRESERVE_HOST": "2"},
     "Invalid value for CORSPROXY_PRESERVE_HOST: '2' is not true or false"),
    ([], {"CORSPROXY_ALLOW_CREDENTIALS": "si"},
     "Invalid value for CORSPROXY_ALLOW_CREDENTIALS: 'si' is not true or false"),
    (["--listen", ":99999"], {}, "--listen: listen: bad port '99999'"),
    ([], {"CORSPROXY_ADMIN_LISTEN": "localhost"},
     "CORSPROXY_ADMIN_LISTEN: admin.listen: 'localhost' is not HOST:PORT"),
]  # fmt: skip


@pytest.mark.parametrize(("args", "env", "message"), BAD)
@pytest.mark.parametrize("command", ["config", "explain"])
def test_a_bad_value_names_its_flag_or_variable(
    command: str, args: list[str], env: dict[str, str], message: str
) -> None:
    if command == "explain" and any("LISTEN" in k for k in env) | ("--listen" in args):
        pytest.skip("explain has no listener options")
    extra = ["--origin", APP] if command == "explain" else []
    result = invoke(command, *extra, *args, env={"CORSPROXY_UPSTREAM": UPSTREAM, **env})
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)
    assert message.lower() in result.output.lower()
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--max-age", "abc"], {}, "--max-age: cors.max_age: expected a whole number"),
        ([], {"CORSPROXY_MODE": "bogus"}, "CORSPROXY_MODE: cors.mode: 'bogus' is not one of"),
        (["--allow-method", "GE T"], {}, "--allow-method: cors.allow_methods[0]: 'GE T'"),
        ([], {"CORSPROXY_DRAIN_DELAY": "5x"}, "Invalid value for CORSPROXY_DRAIN_DELAY"),
    ],
)
def test_serve_refuses_a_bad_value_before_binding(
    args: list[str], env: dict[str, str], message: str
) -> None:
    port = free_port()
    result = subprocess.run(
        [sys.executable, "-m", "corsproxy", "serve", "--listen", f"127.0.0.1:{port}",
         "--upstream", UPSTREAM, *args],
        capture_output=True, text=True, timeout=30, check=False, cwd=ROOT,
        env={**os.environ, **env},
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


async def _preflight(
    url: str, origin: str, method: str, headers: str = "", private: bool = False
) -> aiohttp.ClientResponse:
    request_headers = {"Origin": origin, "Access-Control-Request-Method": method}
    if headers:
        request_headers["Access-Control-Request-Headers"] = headers
    if private:
        request_headers["Access-Control-Request-Private-Network"] = "true"
    async with aiohttp.ClientSession() as client:
        async with client.options(f"{url}/api/x", headers=request_headers) as response:
            await response.read()
            return response


async def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        await asyncio.to_thread(proc.wait, 10)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    proc.stderr.close()


async def test_serve_configured_only_by_variables_allows_a_put_with_authorization() -> None:
    recorder = Recorder()
    async with running_app(recorder.app()) as upstream:
        env = {
            "CORSPROXY_LISTEN": "127.0.0.1:0",
            "CORSPROXY_UPSTREAM": upstream,
            "CORSPROXY_ALLOW_ORIGINS": APP,
            "CORSPROXY_ALLOW_METHODS": "GET,PUT",
            "CORSPROXY_ALLOW_HEADERS": "Authorization, Content-Type",
            "CORSPROXY_EXPOSE_HEADERS": "X-Request-Id",
            "CORSPROXY_MAX_AGE": "120",
            "CORSPROXY_ALLOW_CREDENTIALS": "true",
            "CORSPROXY_ALLOW_PRIVATE_NETWORK": "yes",
            "CORSPROXY_ON_DISALLOWED": "reject",
            "CORSPROXY_PRESERVE_HOST": "false",
        }
        proc, url = await asyncio.to_thread(start_cli, env=env)
        try:
            ok = await _preflight(url, APP, "PUT", "authorization", private=True)
            assert ok.status == 204
            assert ok.headers["Access-Control-Allow-Origin"] == APP
            assert "PUT" in ok.headers["Access-Control-Allow-Methods"]
            assert "authorization" in ok.headers["Access-Control-Allow-Headers"].lower()
            assert ok.headers["Access-Control-Max-Age"] == "120"
            assert ok.headers["Access-Control-Allow-Credentials"] == "true"
            assert ok.headers["Access-Control-Allow-Private-Network"] == "true"
            refused = await _preflight(url, APP, "DELETE")
            assert "Access-Control-Allow-Origin" not in refused.headers
            async with aiohttp.ClientSession() as client:
                put = {"Origin": APP, "Authorization": "Bearer t"}
                async with client.put(f"{url}/api/x", headers=put, data=b"{}") as response:
                    assert response.status == 200
                    assert response.headers["Access-Control-Expose-Headers"] == "X-Request-Id"
                async with client.get(f"{url}/api/x", headers={"Origin": OTHER}) as response:
                    assert response.status == 403  # on_disallowed: reject
            (seen,) = recorder.seen
            assert seen["method"] == "PUT"
            host = dict((k.lower(), v) for k, v in seen["headers"])["host"]
            assert host == upstream.removeprefix("http://")  # preserve_host: false
        finally:
            await _stop(proc)
        env["CORSPROXY_MODE"] = "report-only"
        proc, url = await asyncio.to_thread(start_cli, env=env)
        try:
            async with aiohttp.ClientSession() as client:
                async with client.get(f"{url}/api/x", headers={"Origin": OTHER}) as response:
                    assert response.status == 200  # report-only changes nothing on the wire
        finally:
            await _stop(proc)


def _capture_workers(monkeypatch: pytest.MonkeyPatch) -> list[tuple[list[str], float]]:
    import logging

    from corsproxy.ops import workers

    captured: list[tuple[list[str], float]] = []

    def supervise(count: int, argv: list[str], shutdown_timeout: float, *rest: object) -> int:
        captured.append((list(argv), shutdown_timeout))
        return 0

    monkeypatch.setattr(workers, "supervise", supervise)
    root, access = logging.getLogger(), logging.getLogger("aiohttp.access")
    for logger, attribute in ((root, "handlers"), (root, "level"), (access, "disabled")):
        monkeypatch.setattr(logger, attribute, getattr(logger, attribute))  # serve sets them
    monkeypatch.delenv(workers.WORKER_ENV, raising=False)
    return captured


def test_workers_receive_every_new_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    captured = _capture_workers(monkeypatch)
    result = invoke(
        "serve", "--upstream", UPSTREAM, "--listen", ":0", "--workers", "2",
        "--allow-origin", APP, "--allow-method", "PUT,PATCH", "--allow-header", "Authorization",
        "--expose-header", "X-Request-Id", "--max-age", "120", "--no-allow-private-network",
        "--mode", "report-only", "--on-disallowed", "reject", "--no-preserve-host",
        "--shutdown-timeout", "500ms", "--drain-delay", "1.5m", "--log-format", "text",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert captured == [
        (
            [
                "--listen", ":0", "--upstream", UPSTREAM, "--allow-origin", APP,
                "--allow-method", "PUT", "--allow-method", "PATCH",
                "--allow-header", "Authorization", "--expose-header", "X-Request-Id",
                "--max-age", "120", "--no-allow-private-network", "--mode", "report-only",
                "--on-disallowed", "reject", "--no-preserve-host", "--log-format", "text",
                "--shutdown-timeout", "0.5", "--drain-delay", "90.0",
            ],
            0.5,
        )
    ]  # fmt: skip
    # What a worker parses from them is the supervisor's policy.
    serve_only = {"--log-format", "--shutdown-timeout", "--drain-delay"}
    argv = captured[0][0]
    policy_args = [a for i, a in enumerate(argv) if a not in serve_only and
                   (i == 0 or argv[i - 1] not in serve_only)]  # fmt: skip
    assert effective(*policy_args)["cors"]["allow_methods"] == ["PUT", "PATCH"]


# --- durations and sizes ---------------------------------------------------------------------

DURATIONS = [("30s", 30.0), ("1.5s", 1.5), ("500ms", 0.5), ("2m", 120.0), ("5", 5.0),
             ("0.25", 0.25), ("1h", 3600.0)]  # fmt: skip


@pytest.mark.parametrize(("text", "seconds"), DURATIONS)
def test_shutdown_timeout_and_drain_delay_take_durations(
    monkeypatch: pytest.MonkeyPatch, text: str, seconds: float
) -> None:
    captured = _capture_workers(monkeypatch)
    env = {"CORSPROXY_DRAIN_DELAY": text}
    result = invoke(
        "serve", "--upstream", UPSTREAM, "--listen", "127.0.0.1:0", "--workers", "2",
        "--shutdown-timeout", text, "--log-format", "text", env=env,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    ((argv, shutdown_timeout),) = captured
    assert shutdown_timeout == seconds
    assert argv[argv.index("--shutdown-timeout") + 1] == str(seconds)


@pytest.mark.parametrize(("text", "seconds"), DURATIONS)
def test_healthcheck_timeout_takes_durations(
    monkeypatch: pytest.MonkeyPatch, text: str, seconds: float
) -> None:
    import urllib.request

    timeouts: list[float] = []

    def urlopen(url: str, timeout: float, context: object) -> Any:
        timeouts.append(timeout)
        raise OSError("nobody home")

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    result = invoke("healthcheck", "--timeout", text)
    assert result.exit_code == 1, result.output  # unhealthy, after the probe
    assert timeouts == [seconds]


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["serve", "--shutdown-timeout", "abc"], {}, "Invalid value for --shutdown-timeout"),
        (["serve", "--shutdown-timeout", "-1"], {}, "Invalid value for --shutdown-timeout"),
        (["serve"], {"CORSPROXY_SHUTDOWN_TIMEOUT": "30 sec"},
         "Invalid value for CORSPROXY_SHUTDOWN_TIMEOUT: '30 sec' is not a duration"),
        (["serve", "--drain-delay", "5x"], {}, "Invalid value for --drain-delay: '5x'"),
        (["serve"], {"CORSPROXY_DRAIN_DELAY": "1e3"}, "Invalid value for CORSPROXY_DRAIN_DELAY"),
        (["healthcheck", "--timeout", "0"], {},
         "Invalid value for --timeout: a duration must be more than zero"),
        (["healthcheck", "--timeout", "soon"], {}, "Invalid value for --timeout: 'soon'"),
    ],
)  # fmt: skip
def test_a_bad_duration_is_a_usage_error_naming_the_flag(
    args: list[str], env: dict[str, str], message: str
) -> None:
    result = invoke(*args, env=env)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_zero_is_no_drain_delay_and_no_shutdown_wait() -> None:
    assert Duration(zero_ok=True).convert("0", None, None) == 0.0
    assert Duration(zero_ok=True).convert("0s", None, None) == 0.0
    with pytest.raises(Exception, match="more than zero"):
        Duration().convert("0", None, None)


SIZES = [("10mb", 10_000_000), ("10MB", 10_000_000), ("10Mb", 10_000_000),
         ("10MiB", 10 * 2**20), ("10mib", 10 * 2**20), ("10MIB", 10 * 2**20),
         ("512kib", 512 * 1024), ("1gb", 10**9), ("1GiB", 2**30), ("5b", 5), ("5 B", 5),
         ("1.5kb", 1500), ("64", 64)]  # fmt: skip


@pytest.mark.parametrize(("text", "size"), SIZES)
def test_size_units_in_any_case(text: str, size: int) -> None:
    assert parse_size(text) == size
    document = {"upstream": "http://u:1", "limits": {"max_body_size": text}}
    jsonschema.validate(document, json_schema())  # editors agree with the loader
    config = parse_config(json.dumps(document), "c.yaml")
    assert config.limits.max_body_size == size


@pytest.mark.parametrize("text", ["10 megs", "10mibs", "10ib", "MB", "1e3kb"])
def test_a_size_the_loader_refuses_the_schema_refuses(text: str) -> None:
    with pytest.raises(SpecError):
        parse_size(text)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"limits": {"max_body_size": text}}, json_schema())


# --- listen forms --------------------------------------------------------------------------

LISTENS: list[tuple[str | int, Listen]] = [
    (":8080", Listen("0.0.0.0", 8080)),
    ("8080", Listen("0.0.0.0", 8080)),
    (8080, Listen("0.0.0.0", 8080)),
    (":0", Listen("0.0.0.0", 0)),
    ("127.0.0.1:8080", Listen("127.0.0.1", 8080)),
    ("[::]:8080", Listen("::", 8080)),
    ("[::1]:8080", Listen("::1", 8080)),
    ("localhost:8080", Listen("localhost", 8080)),
]


@pytest.mark.parametrize(("value", "listen"), LISTENS)
def test_listen_forms(value: str | int, listen: Listen) -> None:
    assert parse_listen(value) == listen
    for key in ("listen", "admin"):
        doc: dict[str, Any] = {"upstream": "http://u:1"}
        doc[key] = value if key == "listen" else {"listen": value}
        if key == "admin":  # not on the default listen's port: refused at load
            doc["listen"] = "127.0.0.1:1"
        jsonschema.validate(doc, json_schema())
        config = parse_config(json.dumps(doc), "c.yaml")
        assert (config.listen if key == "listen" else config.admin.listen) == listen  # type: ignore[union-attr]


def test_yaml_listen_number_and_variable(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path, "upstream: http://u:1\nlisten: 8080\n"))
    assert config.listen == Listen("0.0.0.0", 8080)
    text = "upstream: http://u:1\nlisten: ${PORT}\nadmin: {listen: ':${ADMIN}'}\n"
    config = load_config(_write(tmp_path, text), env={"PORT": "8081", "ADMIN": "9901"})
    assert config.listen == Listen("0.0.0.0", 8081)
    assert config.admin is not None and config.admin.listen == Listen("0.0.0.0", 9901)


@pytest.mark.parametrize(
    ("value", "message"),
    [(":", "is not HOST:PORT"), (":70000", "bad port '70000'"), ("80 80", "is not HOST:PORT"),
     ("[::1]", "is not HOST:PORT"), ("-1", "is not HOST:PORT"), ("8080.5", "is not HOST:PORT")],
)  # fmt: skip
def test_bad_listen_forms(value: str, message: str) -> None:
    with pytest.raises(SpecError, match=message.replace("[", r"\[")):
        parse_listen(value)


def test_yaml_listen_true_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="listen: expected HOST:PORT or a port, got True"):
        load_config(_write(tmp_path, "upstream: http://u:1\nlisten: true\n"))


async def test_a_colon_port_listen_binds_and_healthcheck_finds_the_admin_listener() -> None:
    async with running_app(Recorder().app()) as upstream:
        port, admin = free_port(), free_port()
        args = ("--listen", f":{port}", "--admin-listen", str(admin), "--upstream", upstream)
        proc, url = await asyncio.to_thread(start_cli, *args)
        try:
            assert url == f"http://0.0.0.0:{port}"
            async with aiohttp.ClientSession() as client:
                async with client.get(f"http://127.0.0.1:{port}/x") as response:
                    assert response.status == 200
            for form in (f":{admin}", str(admin), f"0.0.0.0:{admin}"):
                probe = await asyncio.to_thread(
                    subprocess.run,
                    [sys.executable, "-m", "corsproxy", "healthcheck", "--timeout", "5s"],
                    capture_output=True, text=True, timeout=30, check=False, cwd=ROOT,
                    env={**os.environ, "CORSPROXY_ADMIN_LISTEN": form},
                )  # fmt: skip
                assert probe.returncode == 0, probe.stderr
                assert probe.stdout == f"healthy: http://127.0.0.1:{admin}/healthz\n"
        finally:
            await _stop(proc)


def test_healthcheck_refuses_an_admin_listen_that_is_no_address() -> None:
    result = invoke("healthcheck", env={"CORSPROXY_ADMIN_LISTEN": "admin"})
    assert result.exit_code == 2
    assert "CORSPROXY_ADMIN_LISTEN: 'admin' is not HOST:PORT" in result.output


# --- explain takes serve's sources ---------------------------------------------------------


def test_explain_demo_needs_no_file_and_no_running_upstream() -> None:
    allowed = invoke("explain", "--demo", "--origin", "http://localhost:3000", "-X", "PUT")
    assert allowed.exit_code == 0, allowed.output
    assert "VERDICT: ALLOWED" in allowed.stdout
    blocked = invoke("explain", "--demo", "--origin", "https://evil.example")
    assert blocked.exit_code == 1, blocked.output
    # A flag given with --demo replaces the demo's value of its key.
    narrowed = invoke("explain", "--demo", "--allow-method", "GET", "--origin",
                      "http://localhost:3000", "-X", "PUT")  # fmt: skip
    assert narrowed.exit_code == 1, narrowed.output


@pytest.mark.parametrize("given", ["flags", "variables"])
def test_explain_with_flags_or_variables_only(given: str) -> None:
    request = ["--origin", APP, "-X", "PUT", "-H", "Authorization:Bearer x"]
    policy = {"CORSPROXY_UPSTREAM": UPSTREAM, "CORSPROXY_ALLOW_ORIGINS": APP,
              "CORSPROXY_ALLOW_METHODS": "PUT"}  # fmt: skip
    if given == "flags":
        args = ["--upstream", UPSTREAM, "--allow-origin", APP, "--allow-method", "PUT"]
        blocked = invoke("explain", *args, *request)
        allowed = invoke("explain", *args, "--allow-header", "Authorization", *request)
    else:
        blocked = invoke("explain", *request, env=policy)
        allowed = invoke(
            "explain", *request, env={**policy, "CORSPROXY_ALLOW_HEADERS": "Authorization"}
        )
    assert blocked.exit_code == 1, blocked.output
    assert "header_not_allowed:authorization" in blocked.stdout
    assert allowed.exit_code == 0, allowed.output


def test_explain_and_config_read_the_default_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _write(tmp_path, f"upstream: {UPSTREAM}\ncors: {{allow_origins: [{APP}]}}\n")
    monkeypatch.setattr(sources, "DEFAULT_CONFIG", path)
    assert invoke("explain", "--origin", APP).exit_code == 0
    assert effective()["cors"]["allow_origins"] == [APP]


# --- corsproxy config ----------------------------------------------------------------------


def _write(tmp_path: Path, text: str, name: str = "c.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def _policy(p: Any) -> Any:
    return tuple(e.text for e in p.origins.entries), replace(p, origins=None)


def _route(r: Any) -> Any:
    if r is None:
        return None
    skip = ("line", "cors_sources", "cors_places", "cors")
    return (
        *((f.name, getattr(r, f.name)) for f in fields(r) if f.name not in skip),
        _policy(r.cors),
    )


def view(config: Config) -> Any:
    """What a configuration does (not where each value was written)."""
    skip = ("source", "warnings", "routes", "cors")
    top = tuple((f.name, getattr(config, f.name)) for f in fields(config) if f.name not in skip)
    table = config.routes
    routes = tuple(_route(r) for r in table.routes)
    return top, _policy(config.cors), routes, _route(table.default), table.case_sensitive


RICH = """\
upstream: ${UPSTREAM:-http://legacy:9000}
listen: 8080
admin: {listen: ":9901"}
timeouts: {connect: 500ms, read: 2m}
limits: {max_body_size: 10mib, idle_timeout: 45s}
preserve_host: false
cookie_path: {"/": "/svc/"}
trusted_proxies: [10.0.0.0/8, "::1"]
cors:
  allow_origins: [https://app.example.com, "https://*.example.com", "regex:https://pr-[0-9]+\\\\.x\\\\.dev$"]
  allow_methods: [GET, PUT]
  allow_headers: ["*"]
  max_age: 300
routes:
  - path_prefix: /inherits
  - path_prefix: /partial
    upstream: http://other:1/base
    timeouts: {read: 5s}
    preserve_host: true
    cors: {allow_methods: [DELETE], allow_credentials: true, expose_headers: [X-A]}
  - path_prefix: /off
    cors: false
    cookie_domain: {legacy.internal: api.example.com}
"""


@pytest.mark.parametrize("output_format", ["yaml", "json"])
@pytest.mark.parametrize("source", ["example", "rich", "cors-false", "flags-only", "demo"])
def test_config_output_is_a_config_that_loads_to_the_same_policy(
    tmp_path: Path, source: str, output_format: str
) -> None:
    env = {"UPSTREAM": "http://api:8000"}
    args: list[str] = []
    if source == "example":
        args = ["-c", str(EXAMPLE)]
    elif source == "rich":
        args = ["-c", _write(tmp_path, RICH), "--allow-origin", APP, "--max-age", "60"]
    elif source == "cors-false":
        text = "upstream: http://u:1\ncors: false\nroutes:\n  - {path_prefix: /on, cors: {allow_origins: ['*']}}\n"  # noqa: E501
        args = ["-c", _write(tmp_path, text)]
    elif source == "flags-only":
        args = ["--upstream", UPSTREAM, "--listen", ":8081", "--allow-origin", APP,
                "--allow-method", "PUT", "--mode", "report-only"]  # fmt: skip
    else:
        args = ["--demo"]
    result = invoke("config", "--format", output_format, *args, env=env)
    assert result.exit_code == 0, result.output
    out = _write(tmp_path, result.stdout, f"out.{output_format}")
    checked = invoke("check", "--config", out)
    assert checked.exit_code == 0, checked.output
    # The same sources as the command, through the loader serve uses.
    from corsproxy.commands.sources import checked_overrides

    ctx = cli.commands["config"].make_context("config", list(args))
    original = load_config(
        sources.config_path(ctx), env={**os.environ, **env}, overrides=checked_overrides(ctx)
    )
    assert view(load_config(out, env={})) == view(original)
    # And printing it again prints the same.
    assert effective("-c", out) == effective(*args, env=env)


def test_config_shows_values_expanded_flags_applied_and_routes_effective(tmp_path: Path) -> None:
    document = effective(
        "-c", _write(tmp_path, RICH), "--allow-origin", APP, env={"UPSTREAM": "http://api:8000"}
    )
    assert document["upstream"] == "http://api:8000"
    assert document["listen"] == "0.0.0.0:8080"
    assert document["timeouts"] == {"connect": 0.5, "read": 120, "send": 60}
    assert document["limits"]["max_body_size"] == 10 * 2**20
    assert document["cors"]["allow_origins"] == [APP]  # the flag replaced the file's list
    inherits, partial, off = document["routes"]
    assert inherits["upstream"] == "http://api:8000"
    assert inherits["cors"] == document["cors"]
    assert inherits["preserve_host"] is False and inherits["cookie_path"] == {"/": "/svc/"}
    assert partial["upstream"] == "http://other:1/base"
    assert partial["timeouts"] == {"connect": 0.5, "read": 5, "send": 60}
    assert partial["cors"]["allow_methods"] == ["DELETE"]
    assert partial["cors"]["allow_headers"] == "*"  # inherited key by key
    assert partial["cors"]["max_age"] == 300 and partial["preserve_host"] is True
    assert off["cors"] is False and off["cookie_domain"] == {"legacy.internal": "api.example.com"}


def test_config_writes_dollars_so_nothing_expands_twice(tmp_path: Path) -> None:
    text = "upstream: http://u:1\ncors:\n  allow_origins: ['regex:https://a\\.example(:8443)?$$', '${O}']\n"  # noqa: E501
    document = effective("-c", _write(tmp_path, text), env={"O": "https://b.example"})
    assert document["cors"]["allow_origins"] == [
        "regex:https://a\\.example(:8443)?$$",
        "https://b.example",
    ]


def test_config_makes_relative_file_paths_absolute(tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("localhost")
    (tmp_path / "tls").mkdir()
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "tls" / "c.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "tls" / "k.pem"))
    ca.cert_pem.write_to_path(str(tmp_path / "tls" / "ca.pem"))
    text = (
        "upstream: https://u:1\nupstream_tls: {ca_file: tls/ca.pem}\n"
        "tls: {cert_file: tls/c.pem, key_file: tls/k.pem}\nroutes:\n  - {path_prefix: /a}\n"
    )
    path = _write(tmp_path, text)
    document = effective("-c", path)
    assert document["tls"] == {
        "cert_file": str(tmp_path / "tls" / "c.pem"),
        "key_file": str(tmp_path / "tls" / "k.pem"),
    }
    route = document["routes"][0]
    assert route["upstream_tls"]["ca_file"] == str(tmp_path / "tls" / "ca.pem")  # inherited
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = _write(elsewhere, render(document, "yaml"))
    assert view(load_config(out)) == view(load_config(path))


def test_config_reports_a_bad_config_like_check(tmp_path: Path) -> None:
    result = invoke("config", "-c", _write(tmp_path, "upstream: nope\n"))
    assert result.exit_code == 2
    assert "c.yaml:1: upstream: upstream URL 'nope' must start with http://" in result.output
    assert result.stdout == ""


# A random policy: top-level keys and routes that override some of them.
_origins = st.lists(
    st.sampled_from([APP, OTHER, "https://*.example.org", "http://localhost:*", "null",
                     "regex:https://pr-[0-9]+\\.x\\.dev"]),
    unique=True, max_size=4,
)  # fmt: skip
_methods = st.one_of(
    st.just("*"), st.lists(st.sampled_from(["GET", "PUT", "PATCH", "DELETE", "POST"]),
                           unique=True, min_size=1, max_size=3)
)  # fmt: skip
_headers = st.one_of(
    st.just("*"),
    st.lists(st.sampled_from(["Authorization", "X-A", "Content-Type"]), unique=True, max_size=2),
)
_policy_keys = st.fixed_dictionaries(
    {},
    optional={
        "allow_origins": _origins,
        "allow_methods": _methods,
        "allow_headers": _headers,
        "expose_headers": st.lists(st.sampled_from(["X-A", "ETag"]), unique=True, max_size=2),
        "max_age": st.integers(0, 7200),
        "allow_private_network": st.booleans(),
        "on_disallowed": st.sampled_from(["forward", "reject"]),
        "mode": st.sampled_from(["enforce", "report-only"]),
    },
)
_cors = st.one_of(st.just(False), _policy_keys, _policy_keys, _policy_keys)
_route_doc = st.fixed_dictionaries(
    {"cors": st.one_of(st.none(), _cors)},  # None: not written (dropped below)
    optional={
        "preserve_host": st.booleans(),
        "strip_prefix": st.booleans(),
        "upstream": st.sampled_from(["http://b:2", "https://c/base"]),
        "timeouts": st.fixed_dictionaries(
            {}, optional={"read": st.sampled_from([1, "500ms", "2m"])}
        ),
    },
)
_documents = st.fixed_dictionaries(
    {
        "upstream": st.just("http://a:1"),
        "cors": st.one_of(st.none(), _cors),
        "routes": st.lists(_route_doc, min_size=1, max_size=3),
    },
    optional={
        "preserve_host": st.booleans(),
        "limits": st.fixed_dictionaries(
            {}, optional={"request_buffer": st.sampled_from(["1kb", "2KiB", 4096])}
        ),
    },
)


def _without_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_none(v) for v in value]
    return value


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(document=_documents)
def test_config_round_trip_for_random_policies(document: dict[str, Any]) -> None:
    for i, route in enumerate(document["routes"]):
        route["path_prefix"] = f"/r{i}"
    text = json.dumps(_without_none(document))
    try:
        original = parse_config(text, "c.yaml", {})
    except ConfigError:
        return  # e.g. '*' with credentials: refused, nothing to print
    effective_text = render(effective_document(text, "c.yaml", {}), "yaml")
    assert view(parse_config(effective_text, "out.yaml", {})) == view(original)
