"""YAML configuration: validated once, compiled into immutable objects.

`load_config()` returns a `Config` or raises `ConfigError` carrying every problem found, one
`FILE:LINE: dotted.key: what is wrong (hint)` each. The work is split by what each part owns:

- `config_source`: the document (file and YAML read within bounds, flag and env overrides),
- `config_schema`: the dataclasses, the value checks and the specs, defaults in the dataclasses
  (the same `CONFIG_SPEC` prints the JSON Schema of `corsproxy schema`),
- `config_compile`: sections into immutable objects, one validator per policy concern.

This module is the public face: import from here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from corsproxy.config.compiler import (
    ATTACKER_PROBES,
    CHROMIUM_MAX_AGE,
    INSECURE_PROBES,
    SAFARI_MAX_AGE,
    Problem,
    compile_config,
)
from corsproxy.config.schema import (
    ADMIN_SPEC,
    CONFIG_SPEC,
    FORBIDDEN_RESPONSE_HEADERS,
    LIMITS_SPEC,
    POLICY_SPEC,
    ROUTE_SPEC,
    TIMEOUTS_SPEC,
    Admin,
    Config,
    Limits,
    Listen,
    check_expose_name,
    check_header_name,
    check_method,
    check_path_prefix,
    check_version,
    json_schema,
    parse_listen,
    parse_upstream,
)
from corsproxy.config.source import (
    MAX_ALIAS_NODES,
    MAX_CONFIG_SIZE,
    MAX_EXPANDED_BYTES,
    MAX_EXPANDED_NODES,
    ConfigError,
    Override,
    compose_document,
    read_config_text,
)
from corsproxy.config.spec import Context, Invalid

__all__ = [
    "ADMIN_SPEC",
    "ATTACKER_PROBES",
    "CHROMIUM_MAX_AGE",
    "CONFIG_SPEC",
    "FORBIDDEN_RESPONSE_HEADERS",
    "INSECURE_PROBES",
    "LIMITS_SPEC",
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
    "Problem",
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


def parse_config(
    text_: str | None,
    file: str,
    env: Mapping[str, str] | None = None,
    overrides: Sequence[Override] = (),
) -> Config:
    """Parse and compile a config document (None: overrides only).

    Raises ConfigError with every problem.
    """
    ctx = Context(file, os.environ if env is None else env, has_lines=text_ is not None)
    root = compose_document(text_, file, overrides, ctx.diagnostics)
    top = CONFIG_SPEC.parse(root, "", ctx)
    config = None if isinstance(top, Invalid) else compile_config(top, ctx)
    if config is None or ctx.failed:
        unique = dict.fromkeys(ctx.diagnostics)  # a default policy is checked once per route
        raise ConfigError(sorted(unique, key=lambda d: (d.file, d.line, d.warning, d.key)))
    return config


def load_config(
    path: str | os.PathLike[str] | None,
    env: Mapping[str, str] | None = None,
    overrides: Sequence[Override] = (),
) -> Config:
    """Read and compile a config file with flag and environment overrides applied.

    With no path the overrides alone describe the config. Raises ConfigError, never
    another exception.
    """
    if path is None:
        return parse_config(None, "command line", env, overrides)
    name = os.fspath(path)
    return parse_config(read_config_text(name), name, env, overrides)
