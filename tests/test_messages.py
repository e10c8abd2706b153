"""The messages for the mistakes people make (issue 15, section 4), one row each.

Each config row is a document (and the environment it is loaded with) and the fragments the
user must see, as `corsproxy check` prints them: `FILE:LINE[:COLUMN]: key: message (hint)`,
then for a YAML syntax error the line and a caret. Rows marked CLI also run `corsproxy check`
as a real process; the rest run in-process through the same printing code.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from click.testing import CliRunner

from corsproxy.commands.cli import cli
from corsproxy.config import ConfigError, parse_config
from corsproxy.config.spec import shown


@dataclass(frozen=True)
class Row:
    id: str
    document: str
    expected: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    cli: bool = False


U = "upstream: http://u:1\n"
STARLETTE = (
    "did you mean 'allow_origins'? Starlette's allow_origin_regex: corsproxy takes patterns in "
    "allow_origins: 'https://*.example.com', or 'regex:^https://(a|b)\\.example\\.com$'"
)

ROWS = [
    # --- YAML syntax, in plain words, with line, column and a caret -------------------
    Row(
        "tab-indentation",
        U + "cors:\n\tallow_origins: [https://a.example]\n",
        (
            "cfg.yaml:3:1: YAML syntax error: a tab in the indentation (YAML does not allow "
            "tabs for indentation: use spaces)\n"
            "    \\tallow_origins: [https://a.example]\n"
            "    ^\n",
        ),
        cli=True,
    ),
    Row(
        "key-indented-too-far",
        U + "cors:\n  allow_origins: [https://a.example]\n    allow_methods: [PUT]\n",
        (
            "cfg.yaml:4:5: YAML syntax error: `allow_methods` is indented more than "
            "`allow_origins` (line 3), a key of the same mapping (keys of one mapping start in "
            "the same column: indent it by 2 spaces)\n"
            "        allow_methods: [PUT]\n"
            "        ^\n",
        ),
    ),
    Row(
        "key-indented-too-little",
        U + "cors:\n    allow_origins: [https://a.example]\n  allow_methods: [PUT]\n",
        (
            "cfg.yaml:4:3: YAML syntax error: `allow_methods` is indented less than "
            "`allow_origins` (line 3) but more than `upstream` (line 1) (line it up with "
            "`allow_origins`, 4 spaces in, or with `upstream`, 0 spaces in)",
        ),
    ),
    Row(
        "key-indented-under-a-value",
        U + "cors:\n  allow_origins: https://a.example\n    allow_methods: [PUT]\n",
        (
            "cfg.yaml:4:18: YAML syntax error: `allow_methods` is indented more than "
            "`allow_origins` (line 3), so YAML reads it as part of that key's value (indent it "
            "by 2 spaces, like `allow_origins`)",
        ),
    ),
    Row(
        "key-without-colon",
        U + "cors:\n  allow_methods [PUT]\n  max_age: 5\n",
        (
            "cfg.yaml:4:10: YAML syntax error: line 3 has no ':', so YAML reads this line as part "
            "of its text (write `key: value` on line 3)",
        ),
    ),
    Row(
        "first-line-indented",
        "  upstream: http://u:1\ncors:\n  max_age: 5\n",
        (
            "cfg.yaml:2:1: YAML syntax error: line 1 is indented and `cors` is not, so YAML reads "
            "`cors` as the start of a second document (top-level keys start in column 1",
        ),
    ),
    Row(
        "list-entry-indented-too-far",
        U + "cors:\n  allow_methods:\n    - PUT\n  allow_headers: [X-A]\n   - DELETE\n",
        ("cfg.yaml:6:4: YAML syntax error: the list entry is indented more than `allow_methods`",),
    ),
    Row(
        "unclosed-double-quote",
        'upstream: "http://u:1\ncors:\n  max_age: 5\n',
        (
            'cfg.yaml:1:11: YAML syntax error: the quote " opened here is never closed (end the '
            'value with " on the same line)\n'
            '    upstream: "http://u:1\n'
            "              ^\n",
        ),
        cli=True,
    ),
    Row(
        "unclosed-single-quote",
        U + "cors:\n  allow_origins: ['https://a.example]\n  max_age: 5\n",
        ("cfg.yaml:3:19: YAML syntax error: the quote ' opened here is never closed",),
    ),
    Row(
        "unclosed-bracket",
        U + "cors:\n  allow_origins: [https://a.example\n  allow_methods: [PUT]\n",
        (
            "cfg.yaml:3:18: YAML syntax error: the '[' opened here is never closed (the list runs "
            "on to line 4) (close it with ']', and separate entries with ', ')",
        ),
    ),
    Row(
        "unclosed-brace",
        U + "timeouts: {connect: 5, read: 60\nlisten: ':8080'\n",
        ("cfg.yaml:2:11: YAML syntax error: the '{' opened here is never closed",),
    ),
    Row(
        "regex-escape-in-double-quotes",
        U + 'cors:\n  allow_origins: ["regex:^https://.*\\.a\\.example$"]\n',
        (
            "cfg.yaml:3:38: YAML syntax error: unknown escape character '.' in a double-quoted "
            "value (inside double quotes a backslash starts an escape: use single quotes",
        ),
    ),
    Row(
        "value-starting-with-at",
        U + "cors:\n  allow_headers: @all\n",
        ("cfg.yaml:3:18: YAML syntax error: a value cannot start with '@' (quote it: 'value')",),
    ),
    Row(
        "list-on-the-key-line",
        U + "cors:\n  allow_methods: - PUT\n",
        ("cfg.yaml:3:18: YAML syntax error: a list entry '- ' on the same line as its key",),
    ),
    Row(
        "duplicate-key",
        U + "cors:\n  max_age: 10\n  max_age: 20\n",
        ("cfg.yaml:4: cors.max_age: duplicate key (first set on line 3) (keep one)",),
    ),
    # --- keys at the wrong level ------------------------------------------------------
    Row(
        "policy-key-at-top-level",
        U + "cors:\n  allow_origins: [https://a.example]\nallow_methods: [PUT]\n",
        (
            "cfg.yaml:4: allow_methods: `allow_methods` belongs under `cors:` (indent it under "
            "`cors:`, adding `cors:` if there is none)",
        ),
        cli=True,
    ),
    Row(
        "policy-key-directly-under-a-route",
        U + "routes:\n  - path_prefix: /api\n    allow_headers: [X-A]\n",
        ("cfg.yaml:4: routes[0].allow_headers: `allow_headers` belongs under `cors:`",),
    ),
    Row(
        "empty-cors-with-keys-under-indented",
        U + "cors:\nallow_origins: [https://a.example]\n",
        (
            "cfg.yaml:2: cors: `cors:` is empty (indent its keys under it, or write false)",
            "cfg.yaml:3: allow_origins: `allow_origins` belongs under `cors:`",
        ),
    ),
    Row(
        "top-level-key-under-cors",
        "cors:\n  upstream: http://u:1\n",
        (
            "cfg.yaml:2: cors.upstream: `upstream` belongs at the top level or in a `routes:` "
            "entry (move `upstream` to the top level (no indentation))",
        ),
    ),
    Row(
        "timeout-key-at-top-level",
        U + "connect: 5s\n",
        ("cfg.yaml:2: connect: `connect` belongs under `timeouts:`",),
    ),
    Row(
        "misspelt-key-known-elsewhere",
        U + "max_body_sise: 10MiB\n",
        (
            "cfg.yaml:2: max_body_sise: unknown key (did you mean 'max_body_size'? It belongs "
            "under `limits:`)",
        ),
    ),
    Row(
        "singular-key-known-elsewhere",
        U + "allow_method: [PUT]\n",
        (
            "cfg.yaml:2: allow_method: unknown key (corsproxy's key is 'allow_methods', under "
            "`cors:`)",
        ),
    ),
    # --- type errors: the value, and the ${VAR} it came from ----------------------------
    Row(
        "max-age-from-variable",
        U + "cors:\n  allow_origins: [https://a.example]\n  max_age: ${MAX_AGE}\n",
        (
            "cfg.yaml:4: cors.max_age: expected a whole number of seconds, got 'ten' "
            "(from ${MAX_AGE})",
        ),
        env={"MAX_AGE": "ten"},
        cli=True,
    ),
    Row(
        "max-age-as-duration",
        U + "cors:\n  max_age: 1h\n",
        (
            "cfg.yaml:3: cors.max_age: expected a whole number of seconds, got '1h' "
            "(in whole seconds: write 3600)",
        ),
    ),
    Row(
        "max-age-quoted-number",
        U + "cors:\n  max_age: '600'\n",
        (
            "cfg.yaml:3: cors.max_age: expected a whole number of seconds, got '600' (remove "
            "the quotes: a quoted value is a string)",
        ),
    ),
    Row(
        "boolean-from-variable",
        U + "cors:\n  allow_credentials: ${CREDS}\n",
        (
            "cfg.yaml:3: cors.allow_credentials: expected true or false, got 'yes please' "
            "(from ${CREDS})",
        ),
        env={"CREDS": "yes please"},
    ),
    Row(
        "duration-from-variable",
        U + "timeouts:\n  connect: ${CONNECT:-5s}\n",
        ("cfg.yaml:3: timeouts.connect: 'ten' is not a duration (from ${CONNECT:-5s})",),
        env={"CONNECT": "ten"},
    ),
    Row(
        "list-item-from-variable",
        U + "cors:\n  allow_methods: ${METHODS}\n",
        (
            "cfg.yaml:3: cors.allow_methods[1]: browsers never send TRACE cross-origin "
            "(from ${METHODS}) (remove it)",
        ),
        env={"METHODS": "PUT,TRACE"},
    ),
    # --- other tools' key names ---------------------------------------------------------
    Row(
        "starlette-allow-origin-regex",
        U + "cors:\n  allow_origin_regex: 'https://.*\\.a\\.example'\n",
        (f"cfg.yaml:3: cors.allow_origin_regex: unknown key ({STARLETTE}",),
        cli=True,
    ),
    Row(
        "route-path",
        U + "routes:\n  - path: /api\n",
        ("cfg.yaml:3: routes[0].path: unknown key (did you mean 'path_prefix'?",),
    ),
    Row(
        "rs-cors-names",
        U + "cors:\n  allowedOrigins: [https://a.example]\n  allowedHeaders: [X-A]\n"
        "  allowedMethods: [PUT]\n  exposedHeaders: [X-B]\n  maxAge: 10\n"
        "  allowCredentials: true\n",
        (
            "cfg.yaml:3: cors.allowedOrigins: unknown key (did you mean 'allow_origins'?",
            "cfg.yaml:4: cors.allowedHeaders: unknown key (did you mean 'allow_headers'?)",
            "cfg.yaml:5: cors.allowedMethods: unknown key (did you mean 'allow_methods'?)",
            "cfg.yaml:6: cors.exposedHeaders: unknown key (did you mean 'expose_headers'?)",
            "cfg.yaml:7: cors.maxAge: unknown key (did you mean 'max_age'? corsproxy's keys are "
            "snake_case)",
            "cfg.yaml:8: cors.allowCredentials: unknown key (did you mean 'allow_credentials'? "
            "corsproxy's keys are snake_case)",
        ),
    ),
    Row(
        "gin-allow-origins",
        U + "cors:\n  AllowOrigins: [https://a.example]\n",
        ("cfg.yaml:3: cors.AllowOrigins: unknown key (did you mean 'allow_origins'? corsproxy",),
    ),
    Row(
        "flask-cors-names",
        U + "cors:\n  origins: [https://a.example]\n  supports_credentials: true\n",
        (
            "cfg.yaml:3: cors.origins: unknown key (did you mean 'allow_origins'?)",
            "cfg.yaml:4: cors.supports_credentials: unknown key (did you mean "
            "'allow_credentials'? Flask-CORS's supports_credentials)",
        ),
    ),
    Row(
        "flask-cors-origins-at-top-level",
        U + "origins: [https://a.example]\n",
        ("cfg.yaml:2: origins: unknown key (corsproxy's key is 'allow_origins', under `cors:`)",),
    ),
    Row(
        "nginx-header-as-key",
        U + "cors:\n  Access-Control-Allow-Origin: https://a.example\n",
        (
            "cfg.yaml:3: cors.Access-Control-Allow-Origin: unknown key (did you mean "
            "'allow_origins'? corsproxy writes the Access-Control-* headers itself",
        ),
    ),
    Row(
        "traefik-origin-list",
        U + "cors:\n  accessControlAllowOriginList: [https://a.example]\n",
        (
            "cfg.yaml:3: cors.accessControlAllowOriginList: unknown key (did you mean "
            "'allow_origins'? Traefik's accessControlAllowOriginList)",
        ),
    ),
    Row(
        "envoy-shadow-enabled",
        U + "cors:\n  shadow_enabled: true\n",
        (
            "cfg.yaml:3: cors.shadow_enabled: unknown key (did you mean 'mode'? write mode: "
            "report-only)",
        ),
    ),
    Row(
        "singular-allow-origin",
        U + "cors:\n  allow_origin: https://a.example\n",
        ("cfg.yaml:3: cors.allow_origin: unknown key (did you mean 'allow_origins'?)\n",),
    ),
    Row(
        "http-proxy-target",
        "routes:\n  - path_prefix: /api\n    target: http://u:1\n",
        ("cfg.yaml:3: routes[0].target: unknown key (did you mean 'upstream'? an http(s) URL)",),
    ),
]


def printed(document: str, env: dict[str, str]) -> str:
    """What `check` prints for a document, in-process (the same `shown` as the command)."""
    with pytest.raises(ConfigError) as info:
        parse_config(document, "cfg.yaml", env)
    return "".join(f"{line}\n" for line in shown(info.value.diagnostics, excerpts=True))


@pytest.mark.parametrize("row", ROWS, ids=[row.id for row in ROWS])
def test_config_message(row: Row) -> None:
    output = printed(row.document, row.env)
    assert "Traceback" not in output
    for fragment in row.expected:
        assert fragment in output, output


@pytest.mark.parametrize("row", [r for r in ROWS if r.cli], ids=[r.id for r in ROWS if r.cli])
def test_config_message_from_check(row: Row, tmp_path: Path) -> None:
    (tmp_path / "cfg.yaml").write_text(row.document, encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "corsproxy", "check", "--config", "cfg.yaml"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", **row.env},
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    for fragment in row.expected:
        assert fragment in result.stderr, result.stderr
    assert result.stderr.endswith("cfg.yaml: 1 error\n")


def test_every_row_is_a_mistake_that_was_fixed_once() -> None:
    """Each row's document fails only for its mistake: the intended config loads."""
    fixed = textwrap.dedent(
        """\
        upstream: http://u:1
        cors:
          allow_origins: [https://a.example]
          allow_methods: [PUT]
          max_age: 600
        """
    )
    parse_config(fixed, "cfg.yaml", {})


# --- healthcheck --url --------------------------------------------------------------------

HEALTHCHECK_ROWS = [
    ("localhost:9901/healthz", "'localhost:9901/healthz' has no scheme"),
    ("ftp://127.0.0.1:9901/healthz", "the scheme must be http or https"),
    ("http:///healthz", "'http:///healthz' has no host"),
    ("garbage", "'garbage' has no scheme"),
    ("http://127.0.0.1:99999/healthz", "is not a URL: Port out of range"),
    ("http://127.0.0.1:port/healthz", "is not a URL"),
    ("http://127.0.0.1:9901/health z", "holds a space or a control character"),
]


@pytest.mark.parametrize(("url", "expected"), HEALTHCHECK_ROWS)
def test_healthcheck_url_that_cannot_be_probed_is_a_usage_error(url: str, expected: str) -> None:
    result = CliRunner().invoke(cli, ["healthcheck", "--url", url, "--timeout", "1"])
    assert result.exit_code == 2, result.output
    assert "Invalid value for '--url'" in result.output
    assert expected in result.output
    assert "write http://HOST:PORT/healthz or https://HOST:PORT/healthz" in result.output


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_healthcheck_usage_error_as_a_process_and_unhealthy_stays_1() -> None:
    bad = subprocess.run(
        [sys.executable, "-m", "corsproxy", "healthcheck", "--url", "127.0.0.1:9901/healthz"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert bad.returncode == 2, bad.stderr
    assert "has no scheme" in bad.stderr
    url = f"http://127.0.0.1:{_closed_port()}/healthz"
    down = subprocess.run(
        [sys.executable, "-m", "corsproxy", "healthcheck", "--url", url, "--timeout", "5"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert down.returncode == 1, down.stderr
    assert down.stderr.startswith(f"unhealthy: {url}")
