"""The config document: a file read within bounds, YAML composed within bounds, and the
command-line and environment overrides spliced in as nodes.

Everything here runs before a key is read; `config_schema` reads the nodes this returns.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from corsproxy.config.messages import (
    invisible_indentation,
    not_utf8,
    syntax_error,
    unacceptable_character,
)
from corsproxy.config.spec import Diagnostic

STR_TAG = "tag:yaml.org,2002:str"
BOOL_TAG = "tag:yaml.org,2002:bool"
INT_TAG = "tag:yaml.org,2002:int"
SEQ_TAG = "tag:yaml.org,2002:seq"
MAP_TAG = "tag:yaml.org,2002:map"


class ConfigError(Exception):
    """Every problem in a config, in file order."""

    def __init__(self, diagnostics: list[Diagnostic]) -> None:
        self.diagnostics = tuple(diagnostics)
        super().__init__("\n".join(str(d) for d in self.errors))

    @property
    def errors(self) -> tuple[Diagnostic, ...]:
        return tuple(d for d in self.diagnostics if not d.warning)

    @property
    def warnings(self) -> tuple[Diagnostic, ...]:
        return tuple(d for d in self.diagnostics if d.warning)


@dataclass(frozen=True, slots=True)
class Override:
    """A value from a command-line flag or environment variable; wins over the file."""

    path: tuple[str, ...]  # ("upstream",) or ("cors", "allow_origins")
    value: str | bool | int | list[str]
    source: str  # "--upstream", "CORSPROXY_UPSTREAM": named in messages instead of a line
    # A number as typed (`--max-age 600`): read as the file reads a plain value, so `10m`,
    # `1_000` or `0x10` get the file's messages and hints.
    plain: bool = False
    # A list variable split at commas: a message about one item says so (a regex cut apart).
    split: bool = False


_RESOLVER = yaml.resolver.Resolver()


def _node(
    value: str | bool | int | list[str], source: str, plain: bool = False, split: bool = False
) -> Node:
    mark = yaml.error.Mark(source, 0, -1, -1, None, 0)
    if plain and isinstance(value, str) and "$" not in value:
        tag = _RESOLVER.resolve(ScalarNode, value, (True, False))  # type: ignore[no-untyped-call]
        return ScalarNode(tag, value, mark, mark)
    if isinstance(value, bool):
        return ScalarNode(BOOL_TAG, "true" if value else "false", mark, mark)
    if isinstance(value, int):
        return ScalarNode(INT_TAG, str(value), mark, mark)
    if isinstance(value, list):
        item = f"{source} (split at commas)" if split else source
        return SequenceNode(SEQ_TAG, [_node(v, item) for v in value], mark, mark)
    # `$` is literal in flags and variables: no second round of interpolation.
    return ScalarNode(STR_TAG, value.replace("$", "$$"), mark, mark, style='"')


def _apply_overrides(
    root: MappingNode,
    overrides: Sequence[Override],
    file: str,
    notes: list[Diagnostic] | None = None,
) -> None:
    """Splice each override into the document. A mapping on the way is copied first (a YAML
    alias shares it: `cors: *shared` in a route keeps the file's values). A key the file
    wrote as something other than a mapping keeps the file's value, so its own error is
    reported; `cors: false` alone gives way, with a warning in `notes` naming both."""
    notes = notes if notes is not None else []
    for override in overrides:
        mapping = root
        for name in override.path[:-1]:
            child = next((v for k, v in mapping.value if k.value == name), None)
            if isinstance(child, MappingNode):
                fresh = MappingNode(
                    child.tag, list(child.value), child.start_mark, child.end_mark,
                    child.flow_style,
                )  # fmt: skip
            elif child is None:
                fresh = MappingNode(MAP_TAG, [], root.start_mark)
            elif _is_false(child):
                fresh = MappingNode(MAP_TAG, [], child.start_mark)
                notes.append(
                    Diagnostic(
                        file, child.start_mark.line + 1, name,
                        f"the file's `false` is overridden by {override.source}: {name} is on, "
                        "with the keys flags and variables set and the others at their defaults",
                        f"remove {name}: false from the file, or {override.source}",
                        warning=True,
                    )
                )  # fmt: skip
            else:
                break  # the file's own value stays, and its error is reported
            mapping.value = [(k, fresh if v is child else v) for k, v in mapping.value]
            if child is None:
                mapping.value.append((_node(name, override.source), fresh))
            mapping = fresh
        else:
            leaf = override.path[-1]
            old = next((v for k, v in mapping.value if k.value == leaf), None)
            wrong = _wrong_shape(old, override.value)
            if old is not None and wrong:
                key = ".".join(override.path)
                notes.append(Diagnostic(file, old.start_mark.line + 1, key, wrong))
            mapping.value = [(k, v) for k, v in mapping.value if k.value != leaf]
            mapping.value.append(
                (
                    _node(leaf, override.source),
                    _node(override.value, override.source, override.plain, override.split),
                )
            )


def _wrong_shape(node: Node | None, value: str | bool | int | list[str]) -> str:
    """The file's error for a value an override replaces, when its shape is wrong for the
    key (the spec's words): the flag wins, but the file is still wrong."""
    kind = "a mapping" if isinstance(node, MappingNode) else "a list"
    if isinstance(value, list):
        return "expected a list, got a mapping" if isinstance(node, MappingNode) else ""
    if isinstance(node, (MappingNode, SequenceNode)):
        return f"expected a single value, got {kind}"
    return ""


def _is_false(node: Node) -> bool:
    return isinstance(node, ScalarNode) and node.style is None and node.value == "false"


# A config is a few KiB; these bound what a reload can cost (a FIFO, /dev/zero, a YAML bomb).
MAX_CONFIG_SIZE = 1024 * 1024
# Nodes that aliases may add beyond the document's own (`<<: *defaults` in every route is a
# few hundred); a "billion laughs" file multiplies them into millions.
MAX_ALIAS_NODES = 10_000
# What the document may expand to, aliases followed: compiling is linear in these, and every
# diagnostic may quote a value. 10,000 origins and 1,000 routes take about 30,000 nodes.
MAX_EXPANDED_NODES = 100_000
MAX_EXPANDED_BYTES = 1024 * 1024


def _expanded_sizes(root: Node) -> dict[int, tuple[int, int]] | None:
    """Per node: nodes and scalar bytes with aliases expanded (a shared node counted each
    time it is reached), or None for a recursive alias. Linear in the distinct nodes."""
    sizes: dict[int, tuple[int, int]] = {}
    pending: set[int] = set()

    def size(node: Node) -> tuple[int, int] | None:
        known = sizes.get(id(node))
        if known is not None:
            return known
        if id(node) in pending:
            return None
        pending.add(id(node))
        nodes, size_bytes = 1, len(node.value) if isinstance(node, ScalarNode) else 0
        for child in _children(node):
            inner = size(child)
            if inner is None:
                return None
            nodes, size_bytes = nodes + inner[0], size_bytes + inner[1]
        pending.discard(id(node))
        sizes[id(node)] = (nodes, size_bytes)
        return nodes, size_bytes

    return sizes if size(root) is not None else None


def _children(node: Node) -> list[Node]:
    if isinstance(node, SequenceNode):
        return list(node.value)
    if isinstance(node, MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def _too_large(root: Node, sizes: dict[int, tuple[int, int]], index: int, cap: int) -> Node:
    """The innermost node that alone exceeds the cap: the line to name."""
    node = root
    while True:
        big = next((c for c in _children(node) if sizes[id(c)][index] > cap), None)
        if big is None:
            return node
        node = big


def _check_aliases(root: Node, file: str) -> None:
    distinct: set[int] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if id(node) in distinct:
            continue
        distinct.add(id(node))
        stack.extend(_children(node))
    sizes = _expanded_sizes(root)
    if sizes is None:
        raise ConfigError(
            [Diagnostic(file, 1, "", "a YAML alias refers to itself", "remove the recursion")]
        )
    expanded, size_bytes = sizes[id(root)]
    if expanded - len(distinct) > MAX_ALIAS_NODES:
        raise ConfigError(
            [
                Diagnostic(
                    file,
                    1,
                    "",
                    f"YAML aliases expand the config to {expanded} values "
                    f"(more than {MAX_ALIAS_NODES} beyond the file's own)",
                    "write the repeated parts out, or use fewer aliases",
                )
            ]
        )
    for index, total, cap, what in (
        (0, expanded, MAX_EXPANDED_NODES, "values"),
        (1, size_bytes, MAX_EXPANDED_BYTES, "bytes of text"),
    ):
        if total > cap:
            where = _too_large(root, sizes, index, cap)
            raise ConfigError(
                [
                    Diagnostic(
                        file,
                        where.start_mark.line + 1,
                        "",
                        f"the config holds {total} {what}, YAML aliases followed (more than {cap})",
                        "a config is a few KiB; write shorter values, or use fewer aliases",
                    )
                ]
            )


class _BoundedLoader(yaml.SafeLoader):
    """Stops composing at MAX_EXPANDED_NODES nodes: 340,000 one-character values fit in
    the file cap and take seconds and hundreds of MB to compose."""

    def __init__(self, stream: str, file: str) -> None:
        super().__init__(stream)
        self.file, self.nodes = file, 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        self.nodes += 1
        if self.nodes > MAX_EXPANDED_NODES:
            line = self.peek_event().start_mark.line + 1  # type: ignore[no-untyped-call]
            raise ConfigError(
                [
                    Diagnostic(
                        self.file,
                        line,
                        "",
                        f"the config holds more than {MAX_EXPANDED_NODES} values",
                        "a config is a few KiB; is this the right file?",
                    )
                ]
            )
        return super().compose_node(parent, index)


def _compose(text_: str, file: str) -> Node | None:
    loader = _BoundedLoader(text_, file)
    try:
        return loader.get_single_node()
    finally:
        loader.dispose()


def _empty_root(file: str) -> MappingNode:
    mark = yaml.error.Mark(file, 0, 0, 0, None, 0)
    return MappingNode(MAP_TAG, [], mark, mark)


def compose_document(
    text_: str | None,
    file: str,
    overrides: Sequence[Override] = (),
    notes: list[Diagnostic] | None = None,
) -> Node:
    """The document's root node with the overrides applied (None: overrides only); warnings
    about the overrides go to `notes`.

    Raises ConfigError for unreadable YAML, an empty document or one too large.
    """
    root: Node | None
    if text_ is None:
        root = _empty_root(file)
    else:
        # A BOM is not part of the document: without it columns and excerpts are true.
        text_ = text_.removeprefix("\ufeff")
        invisible = invisible_indentation(text_, file)
        if invisible is not None:
            raise ConfigError([invisible])
        try:
            root = _compose(text_, file)
        except yaml.reader.ReaderError as exc:
            raise ConfigError([unacceptable_character(exc, text_, file)]) from None
        except yaml.MarkedYAMLError as exc:
            raise ConfigError([syntax_error(exc, text_, file)]) from None
        except yaml.YAMLError as exc:
            raise ConfigError([Diagnostic(file, 1, "", f"YAML error: {exc}")]) from None
        except RecursionError:
            raise ConfigError(
                [Diagnostic(file, 1, "", "YAML error: the document is nested too deeply")]
            ) from None
        if root is not None:
            _check_aliases(root, file)
        if root is None and overrides:
            root = _empty_root(file)
    if root is None:
        raise ConfigError(
            [
                Diagnostic(
                    file, 1, "", "the config is empty", "start with upstream: http://HOST:PORT"
                )
            ]
        )
    if isinstance(root, MappingNode):
        _apply_overrides(root, overrides, file, notes)
    return root


def read_config_text(name: str) -> str:
    """A config file's text, with the checks of load_config; raises ConfigError."""
    try:
        data = _read_regular_file(name)
        return data.decode("utf-8")
    except OSError as exc:
        raise ConfigError(
            [Diagnostic(name, 0, "", f"cannot read the config: {exc.strerror or exc}")]
        ) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([not_utf8(exc, data, name)]) from None


def _file_kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    return "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a socket"


def _read_regular_file(name: str) -> bytes:
    """The bytes of a regular file of at most MAX_CONFIG_SIZE. Opened without blocking, so a
    FIFO (or a device) is refused at once instead of waiting for a writer or reading forever."""
    fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            problem = f"cannot read the config: it is {_file_kind(mode)}, not a regular file"
            raise ConfigError([Diagnostic(name, 0, "", problem)])
        chunks: list[bytes] = []
        left = MAX_CONFIG_SIZE + 1
        while left > 0 and (chunk := os.read(fd, left)):
            chunks.append(chunk)
            left -= len(chunk)
    finally:
        os.close(fd)
    if left <= 0:
        raise ConfigError(
            [
                Diagnostic(
                    name,
                    0,
                    "",
                    f"cannot read the config: it is larger than {MAX_CONFIG_SIZE // 1024} KiB",
                    "a config is a few KiB; is this the right file?",
                )
            ]
        )
    return b"".join(chunks)
