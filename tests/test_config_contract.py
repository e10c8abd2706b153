"""The config's contract: each default has one home (its dataclass), and the compiler reports
every concern's problems in one pass, each with a typed reason."""

from __future__ import annotations

import dataclasses
import re
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

import corsproxy.config
from corsproxy.config import (
    ADMIN_SPEC,
    CONFIG_SPEC,
    LIMITS_SPEC,
    POLICY_SPEC,
    ROUTE_SPEC,
    TIMEOUTS_SPEC,
    ConfigError,
    Problem,
    json_schema,
    parse_config,
)
from corsproxy.config.spec import (
    NO_DEFAULT,
    FalseOr,
    Field,
    ListOf,
    Obj,
    Scalar,
    integer,
    json_value,
)
from corsproxy.policy.cors import CorsPolicy

EMPTY = "upstream: http://u:1\nroutes: [{path_prefix: /r}]\n"


def _schema_properties() -> dict[Obj, dict[str, Any]]:
    """Each spec's properties as `corsproxy schema` prints them."""
    top = json_schema()["properties"]
    route = top["routes"]["items"]["properties"]
    return {
        CONFIG_SPEC: top,
        ADMIN_SPEC: top["admin"]["properties"],
        LIMITS_SPEC: top["limits"]["properties"],
        TIMEOUTS_SPEC: top["timeouts"]["properties"],
        POLICY_SPEC: top["cors"]["anyOf"][1]["properties"],
        ROUTE_SPEC: route,
    }


def _compiled() -> dict[Obj, Any]:
    """The object each spec compiles into, for a config that writes nothing optional."""
    config = parse_config(EMPTY, "cfg.yaml", {})
    route = config.routes.routes[0]
    return {
        CONFIG_SPEC: config,
        LIMITS_SPEC: config.limits,
        TIMEOUTS_SPEC: route.timeouts,
        POLICY_SPEC: route.cors,
        ROUTE_SPEC: route,
    }


def _dataclass_default(target: type, name: str) -> Any:
    for f in dataclasses.fields(target):
        if f.name == name:
            if f.default is not dataclasses.MISSING:
                return f.default
            if f.default_factory is not dataclasses.MISSING:
                return f.default_factory()
    return dataclasses.MISSING


SPECS = [CONFIG_SPEC, ADMIN_SPEC, LIMITS_SPEC, TIMEOUTS_SPEC, POLICY_SPEC, ROUTE_SPEC]
KEYS = [(spec, name) for spec in SPECS for name in spec.fields]


@pytest.mark.parametrize(
    ("spec", "name"), KEYS, ids=[f"{getattr(s.target, '__name__', '?')}.{n}" for s, n in KEYS]
)
def test_schema_default_is_the_dataclass_default_is_what_the_loader_gives(
    spec: Obj, name: str
) -> None:
    assert spec.target is not None, "every mapping names the dataclass it compiles into"
    prop = _schema_properties()[spec][name]
    field = spec.fields[name]
    nested = isinstance(field.spec, (Obj, FalseOr, ListOf))
    default = _dataclass_default(spec.target, name)
    own = field.default is not NO_DEFAULT
    if name in spec.defaults and spec.defaults[name] is not None:
        # Shown in the schema exactly as the dataclass (or, for a key it lacks, the spec) has it.
        assert prop["default"] == json_value(spec.defaults[name])
        if not own:
            assert spec.defaults[name] == default
            compiled = _compiled().get(spec)
            if compiled is not None:
                assert getattr(compiled, name) == default, f"the loader's {name}"
    else:
        assert "default" not in prop, f"{name}: a default the dataclass does not have"
        if default is not dataclasses.MISSING and default is not None:
            # Only a nested mapping or a key inherited from the level above has none.
            assert nested or field.inherited, name


def test_keys_the_dataclass_lacks_are_the_only_spec_written_defaults() -> None:
    own = {
        (spec.target.__name__, name)
        for spec in SPECS
        if spec.target is not None
        for name in spec.defaults
        if name not in {f.name for f in dataclasses.fields(spec.target)}
    }
    # allow_origins compiles into an OriginMatcher, allow_insecure_origins is load-time only.
    assert own == {("CorsPolicy", "allow_origins"), ("CorsPolicy", "allow_insecure_origins")}


def test_a_default_written_beside_the_dataclass_is_refused_at_import() -> None:
    with pytest.raises(TypeError, match="max_age"):
        Obj({"max_age": Field(integer(), "doc", default=5)}, target=CorsPolicy)


def test_the_loader_takes_the_dataclass_defaults_for_an_empty_config() -> None:
    config = parse_config("upstream: http://u:1\n", "cfg.yaml", {})
    assert str(config.listen) == json_schema()["properties"]["listen"]["default"]
    assert config.cors.allow_methods == ("GET", "HEAD", "POST")
    assert config.cors.max_age == 600
    assert config.workers_timeout == 30.0
    assert config.limits == type(config.limits)()
    assert config.timeouts == type(config.timeouts)()


def _reasons(text: str) -> tuple[set[Problem], set[Problem]]:
    with pytest.raises(ConfigError) as info:
        parse_config(textwrap.dedent(text), "cfg.yaml", {})
    diagnostics = info.value.diagnostics
    errors = {d.reason for d in diagnostics if not d.warning and isinstance(d.reason, Problem)}
    warnings = {d.reason for d in diagnostics if d.warning and isinstance(d.reason, Problem)}
    return errors, warnings


def test_one_pass_reports_every_concerns_errors_and_warnings() -> None:
    errors, warnings = _reasons(
        """\
        upstream: http://u:1
        cors:
          allow_credentials: true
          allow_origins:
            - "*"
            - "null"
            - http://app.example.com
            - "regex:https://.*"
            - example.com
          expose_headers: "*"
          allow_methods: [get]
          max_age: 7300
          mode: report-only
        routes:
          - path_prefix: /open
            cors:
              allow_credentials: false
              expose_headers: []
              allow_methods: [GET]
              max_age: 600
              mode: enforce
              allow_origins: ["*", "https://a.example", "regex:https://.+"]
              allow_private_network: true
        """
    )
    assert errors == {
        Problem.ORIGIN_ENTRY,
        Problem.WILDCARD_WITH_CREDENTIALS,
        Problem.NULL_WITH_CREDENTIALS,
        Problem.INSECURE_WITH_CREDENTIALS,
        Problem.BROAD_REGEX_WITH_CREDENTIALS,
        Problem.EXPOSE_WILDCARD_WITH_CREDENTIALS,
    }
    # The first policy's warnings come with its errors: the route overrides those keys.
    assert warnings == {
        Problem.METHOD_CASE,
        Problem.MAX_AGE_ABOVE_CAP,
        Problem.REPORT_ONLY,
        Problem.BROAD_REGEX,
        Problem.PRIVATE_NETWORK_WILDCARD,
        Problem.REDUNDANT_ORIGINS,
    }


def test_no_origin_is_only_said_when_nothing_else_failed() -> None:
    config = parse_config("upstream: http://u:1\n", "cfg.yaml", {})
    assert [d.reason for d in config.warnings] == [Problem.NO_ORIGIN]
    errors, warnings = _reasons("upstream: http://u:1\ncors: {allow_origins: [example.com]}\n")
    assert errors == {Problem.ORIGIN_ENTRY} and Problem.NO_ORIGIN not in warnings


def test_route_problems_have_reasons_too() -> None:
    errors, _ = _reasons("routes: [{path_prefix: /a}, {path_prefix: /A}]\n")
    assert errors == {Problem.NO_UPSTREAM, Problem.DUPLICATE_PREFIX}
    errors, _ = _reasons("cors: false\n")
    assert errors == {Problem.NO_UPSTREAM}
    errors, _ = _reasons(
        "upstream: http://u:1\ncors: false\n"
        "routes: [{path_prefix: /a, name: x}, {path_prefix: /b, name: x}, {path_prefix: /c}]\n"
    )
    assert errors == {Problem.DUPLICATE_ROUTE_NAME}


def test_trusting_every_peer_has_a_reason() -> None:
    config = parse_config("upstream: http://u:1\ncors: false\ntrusted_proxies: ['::/0']\n",
                          "cfg.yaml", {})  # fmt: skip
    assert [d.reason for d in config.warnings] == [Problem.TRUST_EVERYONE]
    assert str(config.warnings[0]).startswith("cfg.yaml:3: trusted_proxies[0]: warning:")


def test_a_route_naming_the_default_upstream_without_its_tls_has_a_reason() -> None:
    config = parse_config(
        "upstream: https://api.internal\nupstream_tls: {server_name: api.internal}\ncors: false\n"
        "routes: [{path_prefix: /a, upstream: 'https://api.internal/v2'}]\n",
        "cfg.yaml",
        {},
    )
    assert [d.reason for d in config.warnings] == [Problem.UPSTREAM_TLS_NOT_INHERITED]


def test_every_reason_is_reachable() -> None:
    # The tests above between them meet every Problem: a new one needs a test.
    met = {
        Problem.NO_UPSTREAM,
        Problem.DUPLICATE_PREFIX,
        Problem.DUPLICATE_ROUTE_NAME,
        Problem.ORIGIN_ENTRY,
        Problem.WILDCARD_WITH_CREDENTIALS,
        Problem.NULL_WITH_CREDENTIALS,
        Problem.INSECURE_WITH_CREDENTIALS,
        Problem.BROAD_REGEX_WITH_CREDENTIALS,
        Problem.EXPOSE_WILDCARD_WITH_CREDENTIALS,
        Problem.METHOD_CASE,
        Problem.MAX_AGE_ABOVE_CAP,
        Problem.REPORT_ONLY,
        Problem.BROAD_REGEX,
        Problem.PRIVATE_NETWORK_WILDCARD,
        Problem.REDUNDANT_ORIGINS,
        Problem.NO_ORIGIN,
        Problem.TRUST_EVERYONE,
        Problem.UPSTREAM_TLS_NOT_INHERITED,
    }
    assert met == set(Problem)


# What `corsproxy.config` offered before it was split; other modules and tests import these.
PUBLIC = [
    "ATTACKER_PROBES",
    "CHROMIUM_MAX_AGE",
    "CONFIG_SPEC",
    "FORBIDDEN_RESPONSE_HEADERS",
    "INSECURE_PROBES",
    "MAX_ALIAS_NODES",
    "MAX_CONFIG_SIZE",
    "MAX_EXPANDED_BYTES",
    "MAX_EXPANDED_NODES",
    "POLICY_SPEC",
    "ROUTE_SPEC",
    "SAFARI_MAX_AGE",
    "TIMEOUTS_SPEC",
    "Admin",
    "Config",
    "ConfigError",
    "Limits",
    "Listen",
    "Override",
    "check_expose_name",
    "check_header_name",
    "check_method",
    "check_path_prefix",
    "check_version",
    "compile_config",
    "json_schema",
    "load_config",
    "parse_config",
    "parse_listen",
    "parse_upstream",
    "read_config_text",
]


def test_the_facade_keeps_the_public_names() -> None:
    missing = [name for name in PUBLIC if not hasattr(corsproxy.config, name)]
    assert missing == []


README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def _readme_defaults() -> list[tuple[str, str, str | None]]:
    """(table, key, default as written) of the README's key tables; None: no default."""
    rows = []
    for table in ("### Top-level keys", "### Policy keys"):
        section = README.split(table, 1)[1].split("\n### ", 1)[0]
        for line in section.splitlines():
            cells = [c.strip() for c in line.strip("|").split(" | ")]
            if len(cells) < 4 or not cells[0].startswith("`"):
                continue
            keys = re.findall(r"`([a-z_.]+)`", cells[0])
            values = re.findall(r"`([^`]*)`", cells[2]) or [None]
            if len(values) == 1:
                values = values * len(keys)
            rows += [(table, key, value) for key, value in zip(keys, values, strict=True)]
    return rows


def _key_spec(table: str, key: str) -> tuple[Obj, str]:
    if table == "### Policy keys":
        return POLICY_SPEC, key
    *heads, name = key.split(".")
    spec: Any = CONFIG_SPEC
    for head in heads:  # a nested key (admin.tls.cert_file): down its mappings
        spec = spec.fields[head].spec
        spec = spec.inner if isinstance(spec, FalseOr) else spec
    return spec, name


@pytest.mark.parametrize(("table", "key", "written"), _readme_defaults())
def test_the_readme_states_the_dataclass_defaults(
    table: str, key: str, written: str | None
) -> None:
    spec, name = _key_spec(table, key)
    field = spec.fields[name]
    if isinstance(field.spec, (Obj, FalseOr, ListOf)):
        return  # a nested mapping or list: its keys have rows of their own
    default = spec.defaults.get(name)
    if written is None:
        assert default is None, f"{key}: the README says none, the code {default!r}"
        return
    value = yaml.safe_load(written)
    if isinstance(field.spec, Scalar):
        assert field.spec.convert(value) == default, key
    else:
        assert value == json_value(default), key
