"""The effective configuration (`corsproxy config`): the document after defaults,
inheritance, `${VAR}` expansion, flags and variables, written out as a config that loads to
the same policy.

It is read from the specs, so a key added to a spec is shown without a change here: every
key of the top level and of each route takes its value as written, else the level it
inherits from (a route's `cors` keys, `timeouts`, `preserve_host`, the rewrite keys and its
upstream), else its default. Durations are shown in seconds and sizes in bytes; a relative
`*_file` path is made absolute (it was relative to the config file); a `$` is written `$$`
so that nothing is expanded twice. Only a configuration that loads is rendered, so a key
file's content pasted as a path (refused at load) is never echoed; no key holds a secret
value (TLS keys are paths).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from enum import Enum
from ipaddress import IPv4Network, IPv6Network
from typing import Any

import yaml

from corsproxy.config.compiler import compile_config
from corsproxy.config.schema import CONFIG_SPEC, ROUTE_SPEC, Listen
from corsproxy.config.source import ConfigError, Override, compose_document
from corsproxy.config.spec import STAR, Context, FalseOr, Invalid, Item, ListOf, Obj, Section
from corsproxy.config.tls import resolve
from corsproxy.policy.routes import Upstream

# The keys a route takes from the top level when it does not write them.
_INHERITED = ("preserve_host", "rewrite_redirects", "cookie_path", "cookie_domain")


def effective_document(
    text: str | None,
    file: str,
    env: Mapping[str, str] | None = None,
    overrides: Sequence[Override] = (),
) -> dict[str, Any]:
    """The effective configuration as a plain document (mappings, lists, scalars).

    Raises ConfigError with every problem, as `parse_config` does."""
    ctx = Context(file, os.environ if env is None else env)
    root = compose_document(text, file, overrides, ctx.diagnostics)
    top = CONFIG_SPEC.parse(root, "", ctx)
    config = None if isinstance(top, Invalid) else compile_config(top, ctx)
    if config is None or isinstance(top, Invalid) or ctx.failed:
        unique = dict.fromkeys(ctx.diagnostics)
        raise ConfigError(sorted(unique, key=lambda d: (d.file, d.line, d.warning, d.key)))
    return _Renderer(file).top(top)


def render(document: dict[str, Any], output_format: str) -> str:
    """YAML (block style, keys in the spec's order) or JSON text of a document."""
    if output_format == "json":
        return json.dumps(document, indent=2) + "\n"
    return yaml.safe_dump(document, sort_keys=False, default_flow_style=False, allow_unicode=True)


class _Renderer:
    def __init__(self, file: str) -> None:
        self.file = file

    def top(self, top: Section) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, field in CONFIG_SPEC.fields.items():
            if name == "routes":
                out[name] = [self.route(route, top) for route in top.get("routes", [])]
            elif name == "cors":
                out[name] = self.policy([top.get("cors")])
            else:
                self.put(out, CONFIG_SPEC, top, name, field.spec)
        return out

    def route(self, route: Section, top: Section) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, field in ROUTE_SPEC.fields.items():
            if name == "name":
                out[name] = self.scalar(route.get("name", route.get("path_prefix")), name)
            elif name == "upstream":
                upstream = route.get("upstream", top.get("upstream"))
                if upstream is not None:
                    out[name] = self.scalar(upstream, name)
            elif name == "upstream_tls":
                # The default upstream carries the top-level upstream_tls; a route's own
                # upstream does not (config/compiler.py).
                inherits = not route.has("upstream") and top.has("upstream_tls")
                section = (
                    route.get(name) if route.has(name) else top.get(name) if inherits else None
                )
                if isinstance(section, Section):
                    out[name] = self.obj(field.spec, section)  # type: ignore[arg-type]
            elif name == "timeouts":
                out[name] = self.obj(field.spec, route.get(name), top.get(name))  # type: ignore[arg-type]
            elif name in _INHERITED:
                out[name] = self.scalar(route.get(name, top.value(name)), name)
            elif name == "cors":
                cors = route.get("cors")
                layers = [top.get("cors")] if cors is None else [top.get("cors"), cors]
                out[name] = self.policy(layers)
            else:
                self.put(out, ROUTE_SPEC, route, name, field.spec)
        return out

    def policy(self, layers: list[Any]) -> Any:
        """A policy's keys: the last layer's over the earlier ones' over the defaults, or
        false when the last layer is `cors: false`."""
        if layers[-1] is False:
            return False
        spec = CONFIG_SPEC.fields["cors"].spec
        assert isinstance(spec, FalseOr)
        sections = [layer for layer in layers if isinstance(layer, Section)]
        return self.obj(spec.inner, *reversed(sections))

    def obj(self, spec: Obj, *sections: Section | None) -> dict[str, Any]:
        """A mapping's keys: from the first section that wrote each, else the default."""
        out: dict[str, Any] = {}
        for name, field in spec.fields.items():
            written = next((s for s in sections if s is not None and s.has(name)), None)
            self.put(out, spec, written, name, field.spec)
        return out

    def put(
        self, out: dict[str, Any], spec: Obj, section: Section | None, name: str, inner: Any
    ) -> None:
        """Key `name` of `spec` into `out`: as written in `section`, else its default
        (a section whose default is none, such as admin or tls, is left out)."""
        if section is not None and section.has(name):
            value = section.get(name)
            if isinstance(inner, Obj):
                out[name] = self.obj(inner, value)
            elif isinstance(inner, FalseOr):
                out[name] = False if value is False else self.obj(inner.inner, value)
            elif isinstance(inner, ListOf):
                out[name] = [self.obj(inner.inner, item) for item in value]
            else:
                out[name] = self.scalar(value, name)
            return
        if isinstance(inner, (Obj, FalseOr)):
            if self.default_of(spec, name) is not None:  # timeouts, limits: a mapping of defaults
                out[name] = self.obj(inner if isinstance(inner, Obj) else inner.inner)
            return
        if isinstance(inner, ListOf):
            out[name] = []
            return
        default = spec.defaults.get(name)
        if default is not None:
            out[name] = self.scalar(default, name)

    @staticmethod
    def default_of(spec: Obj, name: str) -> Any:
        import dataclasses

        if spec.target is None:
            return None
        for field in dataclasses.fields(spec.target):
            if field.name == name:
                if field.default is not dataclasses.MISSING:
                    return field.default
                if field.default_factory is not dataclasses.MISSING:
                    return field.default_factory()
        return None

    def scalar(self, value: Any, name: str) -> Any:
        if value is STAR:
            return "*"
        if isinstance(value, Item):
            return self.scalar(value.value, name)
        if isinstance(value, bool):
            return value
        if isinstance(value, Enum):
            return value.value
        if isinstance(value, int):
            return value
        if isinstance(value, float):
            return int(value) if value.is_integer() else value
        if isinstance(value, str):
            if name.endswith("_file"):
                value = resolve(value, self.file)
            return value.replace("$", "$$")
        if isinstance(value, (Listen, Upstream, IPv4Network, IPv6Network)):
            return str(value).replace("$", "$$")
        if isinstance(value, Mapping):
            return {self.scalar(k, name): self.scalar(v, name) for k, v in value.items()}
        if isinstance(value, frozenset):
            return sorted(self.scalar(v, name) for v in value)
        if isinstance(value, (list, tuple)):
            return [self.scalar(v, name) for v in value]
        raise TypeError(f"{name}: no rendering for {type(value).__name__}")
