"""A configuration with `explain`'s edits applied, checked as `check` would check it.

The edits are applied to the composed YAML node tree (flags and variables included), so a
key written through an anchor changes every place that uses it, as editing that line would;
the result is parsed and compiled like any configuration. `explain` offers a fix only when
this passes.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from corsproxy.config.compiler import compile_config
from corsproxy.config.schema import CONFIG_SPEC, Config
from corsproxy.config.source import ConfigError, Override, compose_document, read_config_text
from corsproxy.config.spec import Context, Invalid

_STEP = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


@dataclass(frozen=True, slots=True)
class EditOp:
    """`add` appends `value` to the list at the dotted `key`; `set` writes it."""

    op: str
    key: str
    value: Any


def _steps(key: str) -> list[str | int]:
    return [int(m.group(2)) if m.group(2) else m.group(1) for m in _STEP.finditer(key)]


def _node(value: Any, near: Node) -> Node:
    mark = near.start_mark
    if isinstance(value, bool):
        return ScalarNode("tag:yaml.org,2002:bool", "true" if value else "false", mark, mark)
    if isinstance(value, int):
        return ScalarNode("tag:yaml.org,2002:int", str(value), mark, mark)
    if isinstance(value, list):
        return SequenceNode("tag:yaml.org,2002:seq", [_node(v, near) for v in value], mark, mark)
    if isinstance(value, dict):
        pairs = [(_node(str(k), near), _node(v, near)) for k, v in value.items()]
        return MappingNode("tag:yaml.org,2002:map", pairs, mark, mark)
    return ScalarNode("tag:yaml.org,2002:str", str(value).replace("$", "$$"), mark, mark)


def _apply(root: Node, edit: EditOp) -> None:
    steps = _steps(edit.key)
    node = root
    for i, step in enumerate(steps):
        last = i == len(steps) - 1
        if isinstance(step, int):
            if not isinstance(node, SequenceNode) or step >= len(node.value):
                raise ValueError(f"{edit.key}: no such item")
            if last:
                raise ValueError(f"{edit.key}: cannot edit a list item")
            node = node.value[step]
            continue
        if not isinstance(node, MappingNode):
            raise ValueError(f"{edit.key}: not a mapping")
        index = next((j for j, (k, _) in enumerate(node.value) if k.value == step), None)
        if index is None:
            value: Any = edit.value if last else {}
            if last and edit.op == "add":
                value = [edit.value]
            node.value.append((_node(step, node), _node(value, node)))
            node = node.value[-1][1]
            continue
        if not last:
            child = node.value[index][1]
            if not isinstance(child, (MappingNode, SequenceNode)):  # `cors: false`: a block
                child = _node({}, child)
                node.value[index] = (node.value[index][0], child)
            node = child
            continue
        key_node, child = node.value[index]
        if edit.op == "add" and isinstance(child, SequenceNode):
            child.value.append(_node(edit.value, child))
        else:
            value = [edit.value] if edit.op == "add" else edit.value
            node.value[index] = (key_node, _node(value, child))


def load_edited(
    path: str | None,
    overrides: Sequence[Override],
    edits: Sequence[EditOp],
    env: Mapping[str, str] | None = None,
) -> Config:
    """The configuration at `path` (None: the overrides alone) with `edits` applied.
    Raises ConfigError with every problem `check` would report."""
    file = "command line" if path is None else path
    text = None if path is None else read_config_text(path)
    ctx = Context(file, os.environ if env is None else env)
    root = compose_document(text, file, overrides)
    for edit in edits:
        _apply(root, edit)
    top = CONFIG_SPEC.parse(root, "", ctx)
    config = None if isinstance(top, Invalid) else compile_config(top, ctx)
    if config is None or ctx.failed:
        unique = dict.fromkeys(ctx.diagnostics)
        raise ConfigError(sorted(unique, key=lambda d: (d.file, d.line, d.warning, d.key)))
    return config
