"""Config loading: every error with its exact FILE:LINE: key output, env interpolation."""

from __future__ import annotations

import json
import os
import textwrap
import time
from pathlib import Path

import jsonschema
import pytest
import yaml

from corsproxy.config import ConfigError, json_schema, load_config, parse_config
from corsproxy.config.spec import shown
from corsproxy.policy.cors import Mode, OnDisallowed
from corsproxy.policy.origins import compile_origin_entry

ROOT = Path(__file__).resolve().parent.parent


def problems(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(textwrap.dedent(text), "cfg.yaml", env or {})
    return [str(d) for d in info.value.diagnostics]


def warnings(text: str, env: dict[str, str] | None = None) -> list[str]:
    config = parse_config(textwrap.dedent(text), "cfg.yaml", env or {})
    return [str(d) for d in config.warnings]


ERRORS = [
    (
        "wildcard-with-credentials",
        """\
        upstream: http://u:1
        cors:
          allow_origins: ["*"]
          allow_credentials: true
        """,
        "cfg.yaml:3: cors.allow_origins[0]: '*' cannot be used with allow_credentials: true "
        "(line 4) (browsers refuse '*' with credentials; list the origins, e.g. "
        "'https://app.example.com')",
    ),
    (
        "expose-wildcard-with-credentials",
        """\
        upstream: http://u:1
        cors:
          allow_origins: [https://a.example]
          allow_credentials: true
          expose_headers: "*"
        """,
        "cfg.yaml:5: cors.expose_headers: '*' cannot be used with allow_credentials: true "
        "(line 4) (browsers read '*' literally with credentials; list the headers to expose)",
    ),
    (
        "route-inherits-credentials",
        """\
        upstream: http://u:1
        cors:
          allow_origins: [https://a.example]
          allow_credentials: true
        routes:
          - path_prefix: /pub
            cors:
              allow_origins: ["*"]
        """,
        "cfg.yaml:8: routes[0].cors.allow_origins[0]: '*' cannot be used with "
        "allow_credentials: true (line 4) (browsers refuse '*' with credentials; list the "
        "origins, e.g. 'https://app.example.com')",
    ),
    (
        "null-with-credentials",
        """\
        upstream: http://u:1
        cors: {allow_origins: ["null"], allow_credentials: true}
        """,
        "cfg.yaml:2: cors.allow_origins[0]: 'null' cannot be used with allow_credentials: true "
        "(line 2) (any page can send Origin: null from a sandboxed iframe)",
    ),
    (
        "origin-with-path",
        """\
        upstream: http://u:1
        cors:
          allow_origins:
            - https://app.example.com/
        """,
        "cfg.yaml:4: cors.allow_origins[0]: 'https://app.example.com/' is not a serialized "
        "origin (path, query, fragment or credentials) (an origin is scheme://host[:port] "
        "only; write 'https://app.example.com')",
    ),
    (
        "origin-without-scheme",
        """\
        upstream: http://u:1
        cors:
          allow_origins: [app.example.com]
        """,
        "cfg.yaml:3: cors.allow_origins[0]: 'app.example.com' is not a serialized origin "
        "(no scheme) (add the scheme, e.g. 'https://app.example.com')",
    ),
    (
        "origin-with-query",
        """\
        upstream: http://u:1
        cors:
          allow_origins: ["https://a.example?x=1"]
        """,
        "cfg.yaml:3: cors.allow_origins[0]: 'https://a.example?x=1' is not a serialized "
        "origin (path, query, fragment or credentials) (an origin is scheme://host[:port] "
        "only; write 'https://a.example')",
    ),
    (
        "regex-does-not-compile",
        """\
        upstream: http://u:1
        cors:
          allow_origins: ["regex:https://(a"]
        """,
        "cfg.yaml:3: cors.allow_origins[0]: regex does not compile: missing ), unterminated "
        "subpattern at position 8 (check the pattern's brackets and escapes)",
    ),
    (
        "glob-bare-tld",
        """\
        upstream: http://u:1
        cors:
          allow_origins: ["https://*.com"]
        """,
        "cfg.yaml:3: cors.allow_origins[0]: 'https://*.com' matches every site under the "
        "top-level domain '.com' (name your own domain, e.g. 'https://*.example.com')",
    ),
    (
        "glob-private-suffix",
        """\
        upstream: http://u:1
        cors:
          allow_origins: ["https://*.s3.amazonaws.com"]
        """,
        "cfg.yaml:3: cors.allow_origins[0]: 'https://*.s3.amazonaws.com' matches sites of "
        "anyone who can register under '.s3.amazonaws.com' (list your own sites under it one "
        "by one)",
    ),
    (
        "glob-above-a-private-suffix",
        """\
        upstream: http://u:1
        cors:
          allow_origins: ["https://*.amazonaws.com"]
        """,
        "cfg.yaml:3: cors.allow_origins[0]: 'https://*.amazonaws.com' matches sites of "
        "anyone who can register under '.compute-1.amazonaws.com' (list your own sites under "
        "it one by one)",
    ),
    (
        "ipv6-not-canonical",
        """\
        upstream: http://u:1
        cors:
          allow_origins: ["http://[0:0:0:0:0:0:0:1]:3000"]
        """,
        "cfg.yaml:3: cors.allow_origins[0]: 'http://[0:0:0:0:0:0:0:1]:3000' writes the address "
        "[::1] in a form browsers never send (write 'http://[::1]:3000')",
    ),
    (
        "ipv4-hex",
        """\
        upstream: http://u:1
        cors:
          allow_origins: ["https://app.example.com", "http://0x7f.0.0.1"]
        """,
        "cfg.yaml:3: cors.allow_origins[1]: 'http://0x7f.0.0.1' writes the address 127.0.0.1 "
        "in a form browsers never send (write 'http://127.0.0.1')",
    ),
    (
        "ipv4-short",
        """\
        upstream: http://u:1
        cors:
          allow_origins: ["http://127.1:*"]
        """,
        "cfg.yaml:3: cors.allow_origins[0]: 'http://127.1:*' writes the address 127.0.0.1 in a "
        "form browsers never send (write 'http://127.0.0.1:*')",
    ),
    (
        "ipv4-octal",
        """\
        upstream: http://u:1
        routes:
          - path_prefix: /a
            cors: {allow_origins: ["http://017.0.0.1:8080"]}
        """,
        "cfg.yaml:4: routes[0].cors.allow_origins[0]: 'http://017.0.0.1:8080' writes the "
        "address 15.0.0.1 in a form browsers never send (write 'http://15.0.0.1:8080')",
    ),
    (
        "ipv4-invalid",
        """\
        upstream: http://u:1
        cors:
          allow_origins: ["http://10.0.0.256"]
        """,
        "cfg.yaml:3: cors.allow_origins[0]: 'http://10.0.0.256' is not a valid IPv4 address "
        "(browsers refuse a host that ends in a number otherwise) (write four decimal numbers "
        "from 0 to 255, e.g. 'http://192.168.0.10:8080')",
    ),
    (
        "bad-upstream",
        """\
        upstream: legacy:9000
        """,
        "cfg.yaml:1: upstream: upstream URL 'legacy:9000' must start with http:// or https:// "
        "(write an http(s) URL such as 'http://legacy:9000'; a base path may follow)",
    ),
    (
        "upstream-with-query",
        """\
        upstream: http://legacy:9000/?a=1
        """,
        "cfg.yaml:1: upstream: the upstream URL must not have a query or fragment (write an "
        "http(s) URL such as 'http://legacy:9000'; a base path may follow)",
    ),
    (
        "bad-duration",
        """\
        upstream: http://u:1
        timeouts: {connect: 5 seconds}
        """,
        "cfg.yaml:2: timeouts.connect: '5 seconds' is not a duration (seconds as a number, or "
        "a string like 500ms, 5s, 2m)",
    ),
    (
        "zero-duration",
        """\
        upstream: http://u:1
        timeouts:
          read: 0
        """,
        "cfg.yaml:3: timeouts.read: a duration must be more than zero",
    ),
    (
        "bad-size",
        """\
        upstream: http://u:1
        limits: {max_body_size: 10 megs}
        """,
        "cfg.yaml:2: limits.max_body_size: '10 megs' is not a size (bytes as a number, or a "
        "string like 512KiB, 10MiB, 1GB)",
    ),
    (
        "empty-methods",
        """\
        upstream: http://u:1
        cors:
          allow_methods: []
        """,
        "cfg.yaml:3: cors.allow_methods: must not be empty (list at least one value)",
    ),
    (
        "unknown-key",
        """\
        upstream: http://u:1
        cors:
          allow_origin: [https://a.example]
        """,
        "cfg.yaml:3: cors.allow_origin: unknown key (did you mean 'allow_origins'?)",
    ),
    (
        "unknown-top-level-key",
        """\
        upstream: http://u:1
        upstreams: http://u:2
        """,
        "cfg.yaml:2: upstreams: unknown key (did you mean 'upstream'?)",
    ),
    (
        "duplicate-key",
        """\
        upstream: http://u:1
        upstream: http://u:2
        """,
        "cfg.yaml:2: upstream: duplicate key (first set on line 1) (keep one)",
    ),
    (
        "bad-enum",
        """\
        upstream: http://u:1
        cors: {on_disallowed: rejct}
        """,
        "cfg.yaml:2: cors.on_disallowed: 'rejct' is not one of forward | reject (did you mean "
        "'reject'?)",
    ),
    (
        "wrong-type",
        """\
        upstream: http://u:1
        cors:
          allow_credentials: "yes please"
        """,
        "cfg.yaml:3: cors.allow_credentials: expected true or false, got 'yes please'",
    ),
    (
        "scalar-for-list",
        """\
        upstream: http://u:1
        cors:
          allow_origins: https://a.example
        """,
        "cfg.yaml:3: cors.allow_origins: expected a list (write [https://a.example])",
    ),
    (
        "missing-upstream",
        """\
        listen: 0.0.0.0:8080
        """,
        "cfg.yaml:1: upstream: no upstream is configured (set upstream: http://HOST:PORT, or "
        "--upstream / CORSPROXY_UPSTREAM)",
    ),
    (
        "route-without-upstream",
        """\
        routes:
          - path_prefix: /a
            upstream: http://u:1
          - path_prefix: /b
        """,
        "cfg.yaml:4: routes[1]: this route has no upstream and there is no top-level upstream "
        "(add upstream: to the route or at the top level)",
    ),
    (
        "route-prefix-not-normalized",
        """\
        upstream: http://u:1
        routes:
          - path_prefix: /api/
        """,
        "cfg.yaml:3: routes[0].path_prefix: '/api/' is not a normalized path prefix "
        "(write '/api'; prefixes match whole segments, so it also covers everything below)",
    ),
    (
        "route-prefix-duplicate",
        """\
        upstream: http://u:1
        routes:
          - path_prefix: /api
          - path_prefix: /api
        """,
        "cfg.yaml:4: routes[1].path_prefix: '/api' is already the prefix of the route on "
        "line 3 (merge the two routes)",
    ),
    (
        "route-prefix-duplicate-case",
        """\
        upstream: http://u:1
        routes:
          - path_prefix: /Api
          - path_prefix: /api
        """,
        "cfg.yaml:4: routes[1].path_prefix: '/api' is already the prefix of the route on "
        "line 3 ('/Api': routes match case-insensitively) (merge the two routes, or set "
        "routes_case_sensitive: true)",
    ),
    (
        "route-missing-prefix",
        """\
        upstream: http://u:1
        routes:
          - strip_prefix: true
        """,
        "cfg.yaml:3: routes[0]: missing required key 'path_prefix'",
    ),
    (
        "bad-listen",
        """\
        upstream: http://u:1
        listen: "localhost"
        """,
        "cfg.yaml:2: listen: 'localhost' is not HOST:PORT (write HOST:PORT, e.g. '0.0.0.0:8080' "
        "or '[::1]:8080', or :PORT for all interfaces)",
    ),
    (
        "forbidden-method",
        """\
        upstream: http://u:1
        cors: {allow_methods: [GET, TRACE]}
        """,
        "cfg.yaml:2: cors.allow_methods[1]: browsers never send TRACE cross-origin (remove it)",
    ),
    (
        "forbidden-expose",
        """\
        upstream: http://u:1
        cors: {expose_headers: [Set-Cookie]}
        """,
        "cfg.yaml:2: cors.expose_headers[0]: browsers never expose Set-Cookie to scripts "
        "(remove it)",
    ),
    (
        "bad-version",
        """\
        version: 2
        upstream: http://u:1
        """,
        "cfg.yaml:1: version: unsupported config version 2 (this corsproxy reads version 1)",
    ),
    (
        "cors-true",
        """\
        upstream: http://u:1
        cors: true
        """,
        "cfg.yaml:2: cors: expected false or a mapping (write false, or keys)",
    ),
    (
        "yaml-syntax",
        """\
        upstream: http://u:1
        cors:
          allow_origins: [https://a.example
        """,
        "cfg.yaml:3:18: YAML syntax error: the '[' opened here is never closed (the list runs "
        "on to the end of the file) (close it with ']', and separate entries with ', ')",
    ),
    (
        "empty-document",
        "",
        "cfg.yaml:1: the config is empty (start with upstream: http://HOST:PORT)",
    ),
    (
        "top-level-list",
        "- a\n",
        "cfg.yaml:1: (top level): expected a mapping of keys to values",
    ),
    (
        "unset-env",
        """\
        upstream: ${LEGACY_URL}
        """,
        "cfg.yaml:1: upstream: environment variable LEGACY_URL is not set (set it, or give a "
        "default: ${LEGACY_URL:-value})",
    ),
    (
        "insecure-origin-with-credentials",
        """\
        upstream: http://legacy:9000
        cors:
          allow_credentials: true
          allow_origins: [http://app.example.com, http://localhost:3000, "http://[::1]:*"]
        """,
        "cfg.yaml:4: cors.allow_origins[0]: 'http://app.example.com' is plain http and "
        "allow_credentials is true (line 3) (anyone on the network path can send requests as an "
        "http origin and read the answers; use https, or set allow_insecure_origins: true (or "
        "--allow-insecure-origins / CORSPROXY_ALLOW_INSECURE_ORIGINS) if you "
        "accept that (loopback origins such as http://localhost:3000 are always allowed))",
    ),
    (
        "malformed-env",
        """\
        upstream: http://${HOST
        """,
        "cfg.yaml:1: upstream: malformed variable reference (write ${NAME} or ${NAME:-default})",
    ),
]


@pytest.mark.parametrize(("text", "expected"), [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS])
def test_config_error_messages(text: str, expected: str) -> None:
    found = problems(text)
    assert expected in found, "\n".join(found)


def test_all_errors_are_reported_at_once() -> None:
    found = problems(
        """\
        upstream: ftp://x
        timeouts: {connect: soon}
        cors:
          allow_origins: ["*", "https://a.example/"]
          allow_credentials: true
          max_age: many
        routes:
          - path_prefix: nope
        """
    )
    assert [line.split(": ")[0] + ": " + line.split(": ")[1] for line in found] == [
        "cfg.yaml:1: upstream",
        "cfg.yaml:2: timeouts.connect",
        "cfg.yaml:4: cors.allow_origins[0]",
        "cfg.yaml:4: cors.allow_origins[1]",
        "cfg.yaml:6: cors.max_age",
        "cfg.yaml:8: routes[0].path_prefix",
    ]


WARNINGS = [
    (
        "max-age-safari",
        "upstream: http://u:1\ncors: {allow_origins: [https://a.example], max_age: 3600}\n",
        "cfg.yaml:2: cors.max_age: warning: max_age 3600 is above Safari's cap of 600 "
        "(Safari uses 600 instead)",
    ),
    (
        "max-age-chromium",
        "upstream: http://u:1\ncors: {allow_origins: [https://a.example], max_age: 86400}\n",
        "cfg.yaml:2: cors.max_age: warning: max_age 86400 is above the caps of Chromium (7200) "
        "and Safari (600) (browsers use their cap instead)",
    ),
    (
        "unescaped-dot",
        "upstream: http://u:1\ncors:\n  allow_origins: ['regex:https://app.example.com']\n",
        "cfg.yaml:3: cors.allow_origins[0]: warning: an unescaped '.' in an origin regex "
        "matches any character (write '\\.' for a literal dot)",
    ),
    (
        "report-only",
        "upstream: http://u:1\ncors: {allow_origins: [https://a.example], mode: report-only}\n",
        "cfg.yaml:2: cors.mode: warning: report-only: corsproxy changes no CORS header and only "
        "reports decisions (set mode: enforce before going live)",
    ),
    (
        "lower-case-method",
        "upstream: http://u:1\ncors: {allow_origins: [https://a.example], allow_methods: [patch]}"
        "\n",
        "cfg.yaml:2: cors.allow_methods[0]: warning: methods are case-sensitive: 'patch' is not "
        "'PATCH' (write PATCH)",
    ),
    (
        "no-origins",
        "upstream: http://u:1\n",
        "cfg.yaml:1: cors.allow_origins: warning: no origin is allowed: every cross-origin "
        "request is refused (add allow_origins, or write cors: false)",
    ),
]


@pytest.mark.parametrize(
    ("text", "expected"), [w[1:] for w in WARNINGS], ids=[w[0] for w in WARNINGS]
)
def test_config_warnings(text: str, expected: str) -> None:
    assert expected in warnings(text)


def test_env_interpolation() -> None:
    env = {
        "UP": "http://legacy:9000",
        "AGE": "120",
        "ORIGINS": "https://a.example, https://b.example",
    }
    config = parse_config(
        textwrap.dedent(
            """\
            upstream: ${UP}
            listen: "${HOST:-127.0.0.1}:${PORT:-8081}"
            cors:
              allow_origins: ${ORIGINS}
              max_age: ${AGE}
              allow_credentials: ${CREDS:-true}
              allow_headers: ["X-Price-$$"]
            """
        ),
        "cfg.yaml",
        env,
    )
    assert str(config.upstream) == "http://legacy:9000"
    assert str(config.listen) == "127.0.0.1:8081"
    assert config.cors.max_age == 120
    assert config.cors.allow_credentials is True
    assert config.cors.origins.match("https://b.example").allowed
    assert config.cors.allow_headers == frozenset({"x-price-$"})


def test_env_values_cannot_inject_structure() -> None:
    env = {"UP": "http://u:1\ncors: {allow_origins: ['*']}", "O": "[https://evil.example]"}
    found = problems("upstream: ${UP}\n", env)
    assert found[0].startswith("cfg.yaml:1: upstream: ")
    # A list item from ${VAR} stays one string (here not an origin), never a YAML list.
    found = problems("upstream: http://u:1\ncors:\n  allow_origins: ['${O}']\n", env)
    assert found[0].startswith(
        "cfg.yaml:3: cors.allow_origins[0]: '[https://evil.example]' is not a serialized origin"
    )


def test_quoted_interpolation_stays_a_string() -> None:
    found = problems("upstream: http://u:1\ncors:\n  max_age: '${AGE}'\n", {"AGE": "5"})
    assert found == [
        "cfg.yaml:3: cors.max_age: expected a whole number of seconds, got '5' (from ${AGE}) "
        "(remove the quotes: a quoted value is a string)"
    ]


def test_an_escaped_reference_names_no_variable() -> None:
    """`$$` is an escape: `$${X}` is the text ${X}, and X was never read."""
    found = problems("upstream: http://u:1\ncors:\n  max_age: '$${X}'\n", {"X": "5"})
    assert found == ["cfg.yaml:3: cors.max_age: expected a whole number of seconds, got '${X}'"]
    found = problems("upstream: http://u:1\ncors:\n  max_age: '$${X}${Y}'\n", {"Y": "5"})
    assert found == [
        "cfg.yaml:3: cors.max_age: expected a whole number of seconds, got '${X}5' (from ${Y})"
    ]


def test_example_config_is_valid_and_compiles() -> None:
    config = load_config(ROOT / "config.example.yaml", env={})
    assert config.warnings == ()
    assert [r.path_prefix for r in config.routes.routes] == ["/api/public", "/reports", "/internal"]
    assert config.admin is not None and str(config.admin.listen) == "127.0.0.1:9901"
    assert config.limits.max_body_size == 10 * 1024 * 1024
    assert config.routes.routes[1].timeouts.read == 300
    assert config.routes.routes[2].cors.enabled is False
    assert config.cors.mode is Mode.ENFORCE and config.cors.on_disallowed is OnDisallowed.FORWARD


def test_missing_and_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.yaml")
    assert str(info.value).startswith(f"{tmp_path / 'nope.yaml'}: cannot read the config: ")
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"upstream: \xff\xfe\n")
    with pytest.raises(ConfigError) as info:
        load_config(binary)
    assert "not UTF-8" in str(info.value)


def test_yaml_tags_and_aliases_are_harmless() -> None:
    found = problems("upstream: !!python/object:os.system echo\n")
    assert found and found[0].startswith("cfg.yaml:1: upstream: cannot read this value")
    bomb = "a: &a [x, x, x]\nb: &b [*a, *a, *a]\nupstream: http://u:1\ncors: {allow_origins: *b}\n"
    assert any("unknown key" in p for p in problems(bomb))


def test_config_objects_are_immutable() -> None:
    config = load_config(ROOT / "config.example.yaml", env={})
    with pytest.raises(AttributeError):
        config.cors.allow_credentials = False  # type: ignore[misc]
    with pytest.raises(TypeError):
        config.routes.routes[0].cors_sources["x"] = "y"  # type: ignore[index]


def test_schema_and_loader_agree() -> None:
    schema = json_schema()
    json.dumps(schema)
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    example = yaml.safe_load((ROOT / "config.example.yaml").read_text())
    assert list(validator.iter_errors(example)) == []
    bad = {"upstream": "http://u:1", "cors": {"allow_origin": []}}
    assert list(validator.iter_errors(bad))
    assert list(validator.iter_errors({"upstream": "http://u:1", "cors": {"mode": "x"}}))
    # Route names: what the loader takes (a name, or a variable), not what it refuses.
    for name, ok in [("api-v1", True), ("/api/v2.0:x_y", True), ("${ROUTE}", True),
                     ("", False), ("-", False), ("a b", False), ("api\u202e", False)]:  # fmt: skip
        doc = {"upstream": "http://u:1", "routes": [{"path_prefix": "/a", "name": name}]}
        assert (not list(validator.iter_errors(doc))) is ok, name


def test_compiled_matchers_and_tables_are_immutable() -> None:
    config = load_config(ROOT / "config.example.yaml", env={})
    with pytest.raises(AttributeError):
        config.routes.default = None  # type: ignore[misc]
    with pytest.raises(AttributeError):
        config.cors.origins.any = None  # type: ignore[misc]


def test_insecure_origins_with_credentials_are_an_explicit_opt_in() -> None:
    text = textwrap.dedent(
        """\
        upstream: http://legacy:9000
        cors:
          allow_credentials: true
          allow_insecure_origins: true
          allow_origins: [http://app.example.com, "http://*.example.org"]
        """
    )
    config = parse_config(text, "cfg.yaml")
    assert config.cors.allow_credentials
    problems_found = problems(text.replace("  allow_insecure_origins: true\n", ""))
    assert sum("is plain http" in p for p in problems_found) == 2


def test_a_match_everything_regex_is_refused_like_star_with_credentials() -> None:
    found = problems(
        """\
        upstream: http://u:1
        cors:
          allow_origins: ['https://app.example.com', 'regex:https?://.*']
          allow_credentials: true
        """
    )
    assert found == [
        "cfg.yaml:3: cors.allow_origins[1]: 'regex:https?://.*' matches "
        "'https://attacker.invalid', so it is like '*', which cannot be used with "
        "allow_credentials: true (line 4) (any site could read answers with the user's "
        "cookies; anchor the regex to your own sites, e.g. "
        "'regex:https://[a-z0-9-]+\\.example\\.com')"
    ]
    # Suffix tricks and plain http strangers are probed too.
    for regex, probe in (
        (r"https://.*example\.com.*", "https://evil.example.com.attacker.invalid"),
        (r"http://[a-z.]+", "http://attacker.invalid"),
        (r"https://[a-z.]+(:[0-9]+)?", "https://attacker.invalid"),
    ):
        text = f"upstream: http://u:1\ncors:\n  allow_origins: ['regex:{regex}']\n"
        found = problems(text + "  allow_credentials: true\n")
        assert len(found) == 1 and f"matches {probe!r}, so it is like '*'" in found[0], found
    # An anchored regex passes.
    text = "upstream: http://u:1\ncors:\n  allow_origins: ['regex:https://[a-z0-9-]+\\.example\\.com']\n"
    assert warnings(text + "  allow_credentials: true\n") == []


@pytest.mark.parametrize(
    ("regex", "probe"),
    [
        (r"https://[a-z0-9.-]+\.[a-z]{2,3}", "https://attacker.com"),
        (r"https?://.*\.(com|net|org|io)", "https://attacker.com"),
        (r"https://.*example\.com", "https://evilexample.com"),
        (r"https?://(?!.*invalid).*", "https://attacker.com"),
        (r"https://[a-z]+-example\.com", "https://evil-example.com"),
        (r"https://app\.example\.com(\.[a-z]+)*", "https://app.example.com.attacker.com"),
        (r"https://app\.example\.com[a-z]*", "https://app.example.computer"),
        (r"https://[a-z0-9]+\.[a-z]+-example\.com", "https://x.evil-example.com"),
        (r"null|https://app\.example\.com", "null"),
    ],
)
def test_regexes_that_match_what_cors_scanners_try_are_like_star(regex: str, probe: str) -> None:
    text = f"upstream: http://u:1\ncors:\n  allow_origins: ['regex:{regex}']\n"
    found = problems(text + "  allow_credentials: true\n")
    assert len(found) == 1 and f"matches {probe!r}, so it is like '*'" in found[0], found
    found = warnings(text)
    assert len(found) == 1 and f"matches {probe!r}: it allows nearly any origin" in found[0]


def test_a_regex_matching_its_own_names_over_http_needs_insecure_origins() -> None:
    text = "upstream: http://u:1\ncors:\n  allow_origins: ['regex:https?://app\\.example\\.com']\n"
    assert problems(text + "  allow_credentials: true\n") == [
        "cfg.yaml:3: cors.allow_origins[0]: 'regex:https?://app\\\\.example\\\\.com' matches "
        "'http://app.example.com', which is plain http and allow_credentials is true (line 4) "
        "(anyone on the network path can send requests as an http origin and read the answers; "
        "use https, or set allow_insecure_origins: true (or --allow-insecure-origins / "
        "CORSPROXY_ALLOW_INSECURE_ORIGINS) if you accept that (loopback origins "
        "such as http://localhost:3000 are always allowed))"
    ]
    more = "  allow_credentials: true\n  allow_insecure_origins: true\n"
    assert warnings(text + more) == []


@pytest.mark.parametrize(
    "regex",
    [
        r"https://pr-[0-9]+\.preview\.example\.com",
        r"https://([a-z0-9-]+\.)*example\.com",
        r"https://[a-z0-9-]+\.example\.com(:[0-9]+)?",
        r"https://(app|admin)\.example\.com",
        r"http://localhost:[0-9]+",
        r"https://app[0-9]{1,3}\.example\.co\.uk",
    ],
)
def test_anchored_regexes_pass_the_probes_quietly(regex: str) -> None:
    text = f"upstream: http://u:1\ncors:\n  allow_origins: ['regex:{regex}']\n"
    assert warnings(text + "  allow_credentials: true\n") == []
    assert warnings(text) == []


def test_a_match_everything_regex_without_credentials_is_a_warning() -> None:
    assert warnings(
        """\
        upstream: http://u:1
        cors:
          allow_origins: ['regex:https://.+']
        """
    ) == [
        "cfg.yaml:3: cors.allow_origins[0]: warning: 'regex:https://.+' matches "
        "'https://attacker.invalid': it allows nearly any origin (write '*' if any origin is "
        "meant, or anchor the regex to your own sites)"
    ]


def test_private_network_with_any_origin_is_a_warning() -> None:
    assert warnings(
        """\
        upstream: http://u:1
        cors:
          allow_origins: ['*']
          allow_private_network: true
        """
    ) == [
        "cfg.yaml:4: cors.allow_private_network: warning: allow_private_network: true with '*' "
        "in allow_origins (line 3): every public site can reach this private-network API "
        "(list the origins that may reach it)"
    ]
    assert (
        warnings(
            "upstream: http://u:1\ncors:\n  allow_origins: [https://a.example]\n"
            "  allow_private_network: true\n"
        )
        == []
    )


@pytest.mark.parametrize(
    ("regex", "problem"),
    [
        (r"https://(a+)+\.example\.com", "nested quantifiers, as in '(a+)+'"),
        (r"https://(\w+-?)+\.example\.com", "nested quantifiers, as in '(a+)+'"),
        (r"https://(a*)*\.example\.com", "a repeated group that can match the empty string"),
        (r"https://(a|a)*\.example\.com", "overlapping alternatives under a quantifier"),
        (r"https://(ab|a.)+\.example\.com", "overlapping alternatives under a quantifier"),
    ],
)
def test_superlinear_regexes_are_a_warning(regex: str, problem: str) -> None:
    found = warnings(f"upstream: http://u:1\ncors:\n  allow_origins: ['regex:{regex}']\n")
    assert len(found) == 1, found
    assert found[0].startswith(
        f"cfg.yaml:3: cors.allow_origins[0]: warning: the regex has {problem}"
    )
    assert "(corsproxy matches it with RE2, in linear time; write it without nesting" in found[0]


@pytest.mark.parametrize(
    "regex",
    [
        r"https://([a-z0-9]+\.)+example\.com",
        r"https://(?:[a-z0-9-]+\.)*example\.com",
        r"https://app[0-9]{1,3}\.example\.com(:[0-9]+)?",
        r"https://(app|admin)\.example\.com",
    ],
)
def test_linear_regexes_pass_quietly(regex: str) -> None:
    assert warnings(f"upstream: http://u:1\ncors:\n  allow_origins: ['regex:{regex}']\n") == []


def test_an_exponential_regex_re2_cannot_run_is_refused() -> None:
    # RE2 has no lookaround: this pattern would run on the backtracking engine.
    found = problems(
        "upstream: http://u:1\ncors:\n  allow_origins: ['regex:(?!x)https://(a+)+\\.example\\.com']\n"
    )
    assert found == [
        "cfg.yaml:3: cors.allow_origins[0]: the regex has nested quantifiers, as in '(a+)+', "
        "and RE2 cannot read this pattern: one request could take minutes to match (write it "
        "without nesting, e.g. 'regex:https://[a-z0-9-]+\\.example\\.com')"
    ]


def test_a_backreference_does_not_hide_an_exponential_regex() -> None:
    # The analysis reports the worst problem, not the first it meets.
    found = problems(
        "upstream: http://u:1\ncors:\n  allow_origins: "
        "['regex:(https)://(?:\\1)?(a+)+\\.example\\.com']\n"
    )
    assert found == [
        "cfg.yaml:3: cors.allow_origins[0]: the regex has nested quantifiers, as in '(a+)+', "
        "and RE2 cannot read this pattern: one request could take minutes to match (write it "
        "without nesting, e.g. 'regex:https://[a-z0-9-]+\\.example\\.com')"
    ]


def test_python_only_end_anchor_runs_on_re2() -> None:
    # `\Z` is RE2's `\z`: the pattern runs in linear time, so its polynomial shape is harmless.
    entry, warned = compile_origin_entry(0, r"regex:https://a*a*a*a*a*a*a*a*\.example\.com\Z")
    assert (entry.engine, warned) == ("re2", [])
    assert entry.fullmatch is not None and entry.fullmatch("https://aa.example.com")
    assert not entry.fullmatch("https://aa.example.com\n")  # `\Z`: end of text only
    started = time.monotonic()
    assert not entry.fullmatch("https://" + "a" * 200 + ".example.org")
    assert time.monotonic() - started < 1
    # `\s` means more to `re` than to RE2: such a pattern stays on `re`.
    assert compile_origin_entry(0, r"regex:https://a\sb")[0].engine == "re"


@pytest.mark.parametrize(
    "regex",
    [
        r"(?!x)https://a*a*a*\.example\.com",
        r"https://.*x.*\.example\.com(?<!y)",
        r"https://[a-z0-9-]+-[a-z0-9-]+\.example\.com(?!x)",
        r"https://(a|b)*a*\.example\.com(?!x)",
        r"https://a+(?=.*b)\.example\.com",
        r"(https://[a-z]+)\1",
    ],
)
def test_a_polynomial_regex_on_re_is_refused(regex: str) -> None:
    found = problems(f"upstream: http://u:1\ncors:\n  allow_origins: ['regex:{regex}']\n")
    assert found == [
        "cfg.yaml:3: cors.allow_origins[0]: the regex has adjacent quantifiers that can match "
        "the same characters, as in 'a*a*', and RE2 cannot read this pattern: each way to split "
        "a run of such characters is tried, so one request could take seconds to match (make "
        "neighbouring parts match different characters, e.g. "
        "'regex:https://[a-z0-9]+(-[a-z0-9]+)*\\.example\\.com', or drop what RE2 cannot "
        "read (lookaround, backreferences))"
    ]


@pytest.mark.parametrize(
    "regex",
    [
        r"(?!admin\.)https://[a-z0-9-]+\.example\.com",
        r"https://[a-z0-9]+(-[a-z0-9]+)*\.example\.com(?!x)",
        r"https://[a-z0-9-]+-[a-z0-9]+\.example\.com(?!x)",
        r"https://([a-z0-9-]+\.)*example\.com(?!x)",
        r"(?!x)https://app[0-9]{1,3}\.example\.com(:[0-9]+)?",
    ],
)
def test_linear_regexes_on_re_pass_quietly(regex: str) -> None:
    entry, _ = compile_origin_entry(0, f"regex:{regex}")
    assert entry.engine == "re"
    assert warnings(f"upstream: http://u:1\ncors:\n  allow_origins: ['regex:{regex}']\n") == []


def test_what_a_config_expands_to_is_bounded_in_bytes_and_values() -> None:
    # 1,000 references to one 100 KB value: far under the alias cap, 100 MB expanded.
    big = "a" * 100_000
    bomb = f"upstream: http://u:1\ncors:\n  allow_origins: [&a '{big}'" + ", *a" * 999 + "]\n"
    started = time.monotonic()
    assert problems(bomb) == [
        "cfg.yaml:3: the config holds 100000035 bytes of text, YAML aliases followed (more than "
        "1048576) (a config is a few KiB; write shorter values, or use fewer aliases)"
    ]
    many = "upstream: http://u:1\ncors:\n  allow_origins:\n" + "  - x\n" * 100_001
    assert problems(many) == [
        "cfg.yaml:99997: the config holds more than 100000 values (a config is a few KiB; is "
        "this the right file?)"
    ]
    assert time.monotonic() - started < 30


def test_diagnostics_quote_a_prefix_of_long_values() -> None:
    long = "x" * 5000
    with pytest.raises(ConfigError) as info:
        parse_config(f"upstream: http://u:1\ncors:\n  allow_origins: ['{long}']\n", "c.yaml", {})
    (line,) = shown(info.value.diagnostics)
    assert f"'{'x' * 80}...'" in line and len(line) < 700, line
    origins = "".join(f"    - bad{i}\n" for i in range(120))
    with pytest.raises(ConfigError) as info:
        parse_config(f"upstream: http://u:1\ncors:\n  allow_origins:\n{origins}", "c.yaml", {})
    lines = shown(info.value.diagnostics)
    assert len(lines) == 51 and lines[-1] == "... and 70 more"


def test_only_regular_files_of_bounded_size_are_read(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)  # no writer: an ordinary open would wait forever
    cases = {
        str(fifo): f"{fifo}: cannot read the config: it is a FIFO, not a regular file",
        "/dev/zero": "/dev/zero: cannot read the config: it is a device, not a regular file",
        str(tmp_path): f"{tmp_path}: cannot read the config: it is a directory, not a regular file",
    }
    big = tmp_path / "big.yaml"
    big.write_text("upstream: http://u:1\n" + "# padding\n" * 120_000)
    cases[str(big)] = (
        f"{big}: cannot read the config: it is larger than 1024 KiB (a config is a few KiB; "
        "is this the right file?)"
    )
    for path, expected in cases.items():
        started = time.monotonic()
        with pytest.raises(ConfigError) as info:
            load_config(path)
        assert [str(d) for d in info.value.diagnostics] == [expected]
        assert time.monotonic() - started < 5


def test_yaml_alias_bombs_are_refused_fast() -> None:
    levels = ["a0: &a0 [" + ", ".join(["x"] * 10) + "]"]
    for i in range(1, 9):
        levels.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    bomb = "\n".join(levels) + "\nupstream: http://u:1\ncors: {allow_origins: *a8}\n"
    started = time.monotonic()
    found = problems(bomb)
    assert time.monotonic() - started < 5
    assert len(found) == 1
    assert found[0].startswith("cfg.yaml:1: YAML aliases expand the config to ")
    assert found[0].endswith(
        " values (more than 10000 beyond the file's own) (write the repeated parts out, or use "
        "fewer aliases)"
    )
    assert problems("a: &a [x, *a]\nupstream: http://u:1\n") == [
        "cfg.yaml:1: a YAML alias refers to itself (remove the recursion)"
    ]
    # Aliases as configs use them (shared policy keys) still load.
    shared = """\
        upstream: http://u:1
        routes:
          - path_prefix: /a
            cors: &shared {allow_origins: [https://a.example], max_age: 60}
          - path_prefix: /b
            cors: *shared
        """
    assert parse_config(textwrap.dedent(shared), "cfg.yaml", {}).routes.routes[1].cors.max_age == 60
