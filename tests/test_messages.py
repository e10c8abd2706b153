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


# Rows from an outside review: each message once said something wrong or nothing useful.
REVIEW_ROWS = [
    # 3: a suggestion never has the opposite meaning
    Row(
        "enum-near-word-of-opposite-meaning",
        U + "cors:\n  on_disallowed: forbid\n",
        ("cfg.yaml:3: cors.on_disallowed: 'forbid' is not one of forward | reject\n",),
    ),
    Row(
        "enum-list-said-once",
        U + "cors:\n  mode: X\n",
        ("cfg.yaml:3: cors.mode: 'X' is not one of enforce | report-only\n",),
    ),
    Row(
        "insensitive-key",
        U + "routes_case_insensitive: true\n",
        (
            "routes_case_insensitive: unknown key (corsproxy's key is 'routes_case_sensitive', "
            "of the opposite meaning: write routes_case_sensitive: false for "
            "routes_case_insensitive: true)",
        ),
    ),
    # 1: an unquoted *
    Row(
        "star-in-flow-list",
        U + "cors:\n  allow_origins: [*]\n",
        (
            "cfg.yaml:3:19: YAML syntax error: an unquoted `*`: YAML reads * as the start of an "
            'alias (*NAME) (quote `*`: write ["*"])',
        ),
        cli=True,
    ),
    Row(
        "star-as-value",
        U + "cors:\n  allow_origins: [https://a.example]\n  allow_headers: *\n",
        ("cfg.yaml:4:18: YAML syntax error: an unquoted `*`: YAML reads * as the start",),
    ),
    Row(
        "quoted-star-where-a-list-is-needed",
        U + 'cors:\n  allow_origins: "*"\n',
        ('cfg.yaml:3: cors.allow_origins: expected a list (write ["*"])',),
    ),
    # 2: ${VAR} in a flow list, and an empty variable
    Row(
        "variable-in-flow-list",
        U + "cors:\n  allow_origins: [${NOPE}]\n",
        (
            "cfg.yaml:3:19: YAML syntax error: `${NOPE}` inside [ ] or { } is read as YAML: "
            "its '{' starts a mapping (quote it: \"${NOPE}\")",
        ),
    ),
    Row(
        "empty-variable-for-a-list",
        U + "cors:\n  allow_methods: ${METHODS}\n",
        ("cfg.yaml:3: cors.allow_methods: must not be empty (from ${METHODS})",),
        env={"METHODS": ""},
    ),
    # 4: suggestions that named an unrelated key, and garbled sentences
    Row(
        "upstream-url",
        "upstream_url: http://u:1\n",
        ("upstream_url: unknown key (did you mean 'upstream'? an http(s) URL)",),
    ),
    Row("route-singular", U + "route: []\n", ("route: unknown key (did you mean 'routes'?",)),
    Row("server-not-server-name", U + "server: x\n", ("server: unknown key (known keys:",)),
    Row(
        "other-proxies-header-keys",
        U + "cors:\n  removeHeaders: [a]\n  add_header: x\n  vary_header: true\n",
        (
            "cors.removeHeaders: unknown key (corsproxy writes only the Access-Control-* "
            "headers and Vary",
            "cors.add_header: unknown key (corsproxy writes only",
            "cors.vary_header: unknown key (corsproxy always sends the right Vary: remove it)",
        ),
    ),
    Row(
        "admin-cert-file",
        U + "admin:\n  listen: 127.0.0.1:9901\n  cert_file: x.pem\n",
        (
            "admin.cert_file: `cert_file` belongs under `upstream_tls:` or under `tls:` (indent "
            "it under `tls:`",
        ),
    ),
    Row(
        "notes-are-separate-sentences",
        U + "cors:\n  addVaryHeader: true\n  filter_enabled: true\nallowed_origins: [a]\n",
        (
            "cors.addVaryHeader: unknown key (corsproxy always sends the right Vary: remove it)",
            "cors.filter_enabled: unknown key (CORS is on when `cors:` is written; cors: false "
            "turns it off)",
            "allowed_origins: unknown key (corsproxy's key is 'allow_origins', under `cors:`; "
            "a list of origins",
        ),
    ),
    Row(
        "other-tools-tls-and-django",
        U + "tls:\n  key: k.pem\ncors:\n  CORS_ALLOWED_ORIGINS: [https://a.example]\n",
        (
            "tls.key: unknown key (did you mean 'key_file'?",
            "cors.CORS_ALLOWED_ORIGINS: unknown key (did you mean 'allow_origins'? "
            "django-cors-headers' CORS_ALLOWED_ORIGINS)",
        ),
    ),
    # 5, 6: the nearest place, and the routes: key spelt right
    Row(
        "route-cors-upstream",
        U + "routes:\n  - path_prefix: /a\n    cors:\n      upstream: http://b:1\n",
        ("(move it up into the `routes:` entry, indented like its path_prefix)",),
    ),
    Row(
        "path-prefix-at-top-level",
        U + "path_prefix: /a\n",
        ("`path_prefix` belongs in a `routes:` entry (start an entry of `routes:` with it",),
    ),
    # 7: indentation claimed only when the file has it
    Row(
        "list-entry-after-flow-list-same-column",
        U + "cors:\n  allow_origins: [https://a.example]\n  - https://b.example\n",
        (
            "cfg.yaml:4:3: YAML syntax error: a list entry where YAML expects a key of the "
            "mapping of `allow_origins` (line 3)",
        ),
    ),
    Row(
        "colon-without-key",
        U + "cors:\n  allow_origins: [https://a.example]\n  : [GET]\n",
        ("cfg.yaml:4:3: YAML syntax error: a ':' with no key before it",),
    ),
    Row(
        "list-entry-at-column-1",
        U + "- routes\n",
        ("cfg.yaml:2:1: YAML syntax error: a list entry where YAML expects a key",),
    ),
    Row(
        "key-in-the-column-of-list-entries",
        U + "cors:\n  allow_origins:\n    - https://a.example\n    allow_methods: [GET]\n",
        (
            "cfg.yaml:5:5: YAML syntax error: `allow_methods` is in the column of the list "
            "entries above (line 4), so YAML expects another '- ' entry there (line it up with "
            "`allow_origins`, 2 spaces in)",
        ),
    ),
    # 8: an extra closing bracket
    Row(
        "extra-bracket",
        U + "cors:\n  allow_origins: [http://a.example]]\n",
        ("cfg.yaml:3:36: YAML syntax error: an extra `]`",),
    ),
    Row(
        "extra-brace",
        U + "cors: {allow_origins: [http://a.example]}}\n",
        ("cfg.yaml:2:42: YAML syntax error: an extra `}`",),
    ),
    # 9: key:value with no space
    Row(
        "no-space-after-top-level-key",
        "upstream:http://127.0.0.1:9000\n",
        ("cfg.yaml:1: (top level): no space after `upstream:`", "put a space after `upstream:`"),
    ),
    Row(
        "no-space-after-only-key",
        U + "cors:\n  allow_origins:[https://a.example]\n",
        ("cfg.yaml:3: cors: no space after `allow_origins:`",),
    ),
    Row(
        "no-space-after-second-key",
        U + "cors:\n  allow_origins: [https://a.example]\n  allow_methods:[GET]\n",
        ("cfg.yaml:4:3: YAML syntax error: no space after `allow_methods:`",),
    ),
    # 10, 11: real positions
    Row(
        "nul-byte",
        U + "cors:\n  allow_origins: [https://a.example]\n  max_age: \x00\n",
        (
            "cfg.yaml:4:12: the invisible character U+0000 is not allowed in YAML (remove it)\n"
            "      max_age: \\x00\n"
            "               ^\n",
        ),
    ),
    Row(
        "bom-and-unclosed-quote",
        '\ufeffupstream: "http://u:1\n',
        (
            'cfg.yaml:1:11: YAML syntax error: the quote " opened here is never closed (end the '
            'value with " on the same line)\n'
            '    upstream: "http://u:1\n'
            "              ^\n",
        ),
    ),
    # 12: the variable named, control characters escaped
    Row(
        "origin-from-variable",
        U + "cors:\n  allow_origins: ${ORIGINS}\n",
        (
            "cfg.yaml:3: cors.allow_origins[1]: 'http://b/' is not a serialized origin (path, "
            "query, fragment or credentials) (from ${ORIGINS})",
        ),
        env={"ORIGINS": "https://a.example,http://b/"},
    ),
    Row(
        "newline-in-a-value",
        U + "cors:\n  allow_origins: ${ORIGINS}\n",
        ("cors.allow_origins[0]: 'http://b\\nx' is not",),
        env={"ORIGINS": "http://b\nx"},
    ),
    # 15: merge keys
    Row(
        "merge-key",
        U + "cors: &c\n  allow_origins: [https://a.example]\nroutes:\n  - path_prefix: /b\n"
        "    cors:\n      <<: *c\n      allow_methods: [PUT]\n",
        (
            "cfg.yaml:7: routes[0].cors.<<: corsproxy does not support YAML merge keys (`<<`) "
            "(repeat the keys",
        ),
    ),
    # 17: YAML 1.1 numbers and booleans
    Row(
        "octal-looking-number",
        U + "cors:\n  max_age: 010\n",
        (
            "cfg.yaml:3: cors.max_age: '010' has a leading 0: YAML 1.1 reads it as octal 8 "
            "(write 10",
        ),
    ),
    Row(
        "sexagesimal-from-variable",
        U + "cors:\n  max_age: ${A}\n",
        (
            "cors.max_age: '1:00' is not a plain decimal number (YAML 1.1 reads it as 60) "
            "(from ${A}) (write 60)",
        ),
        env={"A": "1:00"},
    ),
    Row(
        "hex-and-underscores",
        U + "cors:\n  max_age: 0x10\nlimits:\n  max_body_size: 1_000\n",
        ("cors.max_age: '0x10' is not a plain decimal number", "'1_000' is not a plain decimal"),
    ),
    Row(
        "yes-for-true",
        U + "cors:\n  allow_credentials: yes\n",
        ("cors.allow_credentials: 'yes' is YAML 1.1's spelling of true (write true)",),
    ),
    # 18: rough edges
    Row(
        "short-unicode-escape",
        U + 'cors:\n  allow_origins: ["\\u00"]\n',
        ("YAML syntax error: an escape \\x, \\u or \\U needs 4 hex digits",),
    ),
    Row(
        "trailing-document-marker",
        U + "---\n# more\n",
        ("cfg.yaml:2:1: YAML syntax error: a second document starts on line 2 (`---`)",),
    ),
    Row(
        "typographic-quotes",
        U + "cors:\n  allow_origins: [\u201chttps://a.example\u201d]\n",
        (
            "cors.allow_origins[0]: typographic quotes around \u201chttps://a.example\u201d (use "
            "plain \" or ')",
        ),
    ),
    Row(
        "no-break-space-indentation",
        U + "cors:\n\u00a0 allow_origins: [https://a.example]\n",
        ("cfg.yaml:3:1: a no-break space (U+00A0) in the indentation (indent with plain spaces)",),
    ),
    Row(
        "list-as-key",
        U + "cors:\n  [a]: 4\n",
        ("cfg.yaml:3: cors: a key is a list",),
    ),
]
ROWS += REVIEW_ROWS


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
    # Plain words, as the access line says them, not urllib's nested repr.
    assert down.stderr.strip() == f"unhealthy: {url}: connection refused", down.stderr


def test_healthcheck_url_with_a_password_is_refused_without_echoing_it() -> None:
    url = "http://user:s3cret@[::1]:9901/healthz"
    result = CliRunner().invoke(cli, ["healthcheck", "--url", url, "--timeout", "1"])
    assert result.exit_code == 2, result.output
    assert "holds a user name or password" in result.output
    assert "s3cret" not in result.output


def test_bytes_that_are_not_utf8_are_reported_where_they_are(tmp_path: Path) -> None:
    (tmp_path / "cfg.yaml").write_bytes(
        b"upstream: http://u:1\ncors:\n  allow_origins: [https://a.example]\n  \xff\xfe: 1\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "corsproxy", "check", "--config", "cfg.yaml"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "cfg.yaml:4:3: the config is not UTF-8 text: byte ff" in result.stderr, result.stderr
