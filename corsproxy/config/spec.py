"""Declarative config specs: one definition validates YAML nodes and emits the JSON Schema.

Specs read PyYAML nodes (which carry line marks), interpolate `${VAR}` in string scalars
after parsing (so a value can never inject structure), and report every problem as a
`Diagnostic` naming the file, line and dotted key path, with a hint.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from fractions import Fraction
from typing import Any, Generic, TypeVar

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

T = TypeVar("T")
E = TypeVar("E", bound=StrEnum)

STR_TAG = "tag:yaml.org,2002:str"
_RETYPED_TAGS = {
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:null",
}
_ENV = re.compile(r"\$(?:\$|\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\})")
ENV_PATTERN = r"\$\{[A-Za-z_][A-Za-z0-9_]*(:-[^}]*)?\}"


@dataclass(frozen=True, slots=True)
class Diagnostic:
    file: str
    line: int
    key: str
    message: str
    hint: str = ""
    warning: bool = False
    # What kind of problem, for code and tests (not printed; the message says it for people).
    reason: StrEnum | None = field(default=None, compare=False)
    # For a YAML syntax error: the column (1-based), and the line with a caret under it.
    column: int = 0
    excerpt: str = ""

    def __str__(self) -> str:
        level = "warning: " if self.warning else ""
        hint = f" ({_shorten(_escaped(self.hint))})" if self.hint else ""
        key = f"{_escaped(self.key)}: " if self.key else ""
        where = f"{self.file}:{self.line}" if self.line else self.file
        if self.line and self.column:
            where += f":{self.column}"
        return f"{where}: {key}{level}{_shorten(_escaped(self.message))}{hint}"

    def fields(self) -> dict[str, Any]:
        """Where, as log fields (JSON lines): the file (or flag or variable), and the line,
        column and key when there is one."""
        out: dict[str, Any] = {"file": self.file}
        if self.line:
            out["line"] = self.line
            if self.column:
                out["column"] = self.column
        if self.key:
            out["key"] = self.key
        return out


_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _escaped(text: str) -> str:
    """Control characters as escapes (a value holding a newline stays on one line)."""
    return _CONTROL.sub(lambda m: m.group(0).encode("unicode_escape").decode("ascii"), str(text))


# A message quotes values; a 500 KB value quoted in each of 1,000 messages is a gigabyte.
MAX_QUOTED = 80
_LONG_QUOTE = re.compile(rf"""(['"])([^'"]{{{MAX_QUOTED}}})[^'"]{{4,}}\1""")


def _shorten(text: str) -> str:
    if len(text) <= 4 * MAX_QUOTED:
        return text
    text = _LONG_QUOTE.sub(lambda m: f"{m[1]}{m[2]}...{m[1]}", text)
    return text if len(text) <= 16 * MAX_QUOTED else text[: 16 * MAX_QUOTED] + "..."


# At most this many diagnostics are printed (`check`, a failed reload), then "and N more".
MAX_SHOWN = 50


def logged(diagnostics: Sequence[Diagnostic]) -> list[tuple[str, Diagnostic | None]]:
    """shown()'s lines for a log, each with its diagnostic (None for the "and N more" line):
    its level, and its place as fields in JSON lines."""
    lines: list[tuple[str, Diagnostic | None]] = [(str(d), d) for d in diagnostics[:MAX_SHOWN]]
    if len(diagnostics) > MAX_SHOWN:
        lines.append((f"... and {len(diagnostics) - MAX_SHOWN} more", None))
    return lines


def shown(diagnostics: Sequence[Diagnostic], excerpts: bool = False) -> list[str]:
    """The lines to print for diagnostics: the first MAX_SHOWN, then how many are left.
    With `excerpts` (a terminal), a syntax error is followed by its line and a caret."""
    lines: list[str] = []
    for d in diagnostics[:MAX_SHOWN]:
        lines.append(str(d))
        if excerpts and d.excerpt:
            lines.extend(d.excerpt.splitlines())
    if len(diagnostics) > MAX_SHOWN:
        lines.append(f"... and {len(diagnostics) - MAX_SHOWN} more")
    return lines


class SpecError(ValueError):
    """Raised by value checks; becomes a Diagnostic at the value's line."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class Invalid:
    """The result of a value that produced an error (already reported). Use `INVALID`."""

    def __repr__(self) -> str:
        return "INVALID"


INVALID = Invalid()


def line_of(node: Node) -> int:
    return int(node.start_mark.line) + 1


@dataclass
class Context:
    """Collects diagnostics while specs read a document."""

    file: str
    env: Mapping[str, str]
    diagnostics: list[Diagnostic] = field(default_factory=list)
    error_count: int = 0  # of the diagnostics, errors (not warnings)
    # One constructor per document: it caches constructed nodes.
    constructor: yaml.constructor.SafeConstructor = field(
        default_factory=yaml.constructor.SafeConstructor
    )
    # False without a document (flags and variables alone, `file` is "command line"): no
    # message names a line of it (`command line: upstream: ...`, not `command line:1:`).
    has_lines: bool = True

    def source(self, node: Node) -> str:
        """The file a node came from, or the flag or variable that overrode it."""
        name = str(node.start_mark.name)
        return self.file if name.startswith("<") else name

    def _where(self, node: Node | int, file: str | None) -> tuple[str, int]:
        if isinstance(node, int):
            where, line = file or self.file, node
        else:
            where, line = self.source(node), line_of(node)
        return where, line if self.has_lines or where != self.file else 0

    def error(
        self,
        node: Node | int,
        key: str,
        message: str,
        hint: str = "",
        file: str | None = None,
        reason: StrEnum | None = None,
    ) -> Invalid:
        where, line = self._where(node, file)
        self.diagnostics.append(Diagnostic(where, line, key, message, hint, reason=reason))
        self.error_count += 1
        return INVALID

    def warn(
        self,
        node: Node | int,
        key: str,
        message: str,
        hint: str = "",
        file: str | None = None,
        reason: StrEnum | None = None,
    ) -> None:
        where, line = self._where(node, file)
        self.diagnostics.append(
            Diagnostic(where, line, key, message, hint, warning=True, reason=reason)
        )

    def place(self, file: str, line: int, seen_from: str) -> str:
        """How a message about `seen_from` points at a value: 'line 4' in the same file,
        'config.yaml:4' from elsewhere, or a flag such as '--allow-credentials'."""
        if not line or (file == self.file and not self.has_lines):
            return file
        return f"line {line}" if file == seen_from else f"{file}:{line}"

    @property
    def failed(self) -> bool:
        return any(not d.warning for d in self.diagnostics)

    def interpolate(self, text: str, node: Node, key: str) -> str | Invalid:
        missing: list[str] = []

        def substitute(m: re.Match[str]) -> str:
            if m.group(0) == "$$":
                return "$"
            name, default = m.group(1), m.group(2)
            value = self.env.get(name, "")
            if value:
                return value
            if default is not None:
                return default
            if name not in self.env:
                missing.append(name)
            return ""

        result = _ENV.sub(substitute, text)
        if "${" in _ENV.sub("", text):
            return self.error(
                node, key, "malformed variable reference", "write ${NAME} or ${NAME:-default}"
            )
        if missing:
            return self.error(
                node,
                key,
                f"environment variable {missing[0]} is not set",
                f"set it, or give a default: ${{{missing[0]}:-value}}",
            )
        return result


_RESOLVER = yaml.resolver.Resolver()


def read_scalar(node: Node, key: str, ctx: Context) -> Any:
    """A scalar's value, interpolated. A plain scalar that was interpolated is re-typed
    (`max_age: ${AGE:-600}` is an int), never re-parsed as YAML structure."""
    if not isinstance(node, ScalarNode):
        kind = "a list" if isinstance(node, SequenceNode) else "a mapping"
        return ctx.error(node, key, f"expected a single value, got {kind}")
    try:
        value = ctx.constructor.construct_object(node, deep=True)
    except yaml.YAMLError as exc:
        return ctx.error(node, key, f"cannot read this value: {exc}".splitlines()[0])
    if node.style is None and isinstance(value, str) and value[:1] in _TYPOGRAPHIC:
        return ctx.error(
            node, key, f"typographic quotes around {_escaped(value)}", "use plain \" or '"
        )
    if node.tag != STR_TAG or not isinstance(value, str) or "$" not in value:
        return _yaml11(node.value, value, node, key, ctx) if node.style is None else value
    text = ctx.interpolate(value, node, key)
    if isinstance(text, Invalid) or node.style is not None or text == value:
        return text
    tag = _RESOLVER.resolve(ScalarNode, text, (True, False))  # type: ignore[no-untyped-call]
    if tag in _RETYPED_TAGS:
        retyped = ctx.constructor.construct_object(ScalarNode(tag, text), deep=True)
        return _yaml11(text, retyped, node, key, ctx)
    return text


_TYPOGRAPHIC = "\u201c\u201d\u2018\u2019\u201e\u00ab\u00bb"
_DECIMAL = re.compile(r"[-+]?(0|[1-9][0-9]*)(\.[0-9]*)?([eE][-+]?[0-9]+)?\Z")


def _yaml11(written: str, value: Any, node: Node, key: str, ctx: Context) -> Any:
    """YAML 1.1 reads 010 as 8, 1:00 as 60, 0x10, 1_000, yes and on: refused, each with the
    plain form to write (a number means what it reads as; a boolean is true or false)."""
    if isinstance(value, bool):
        if written.lower() in ("true", "false"):
            return value
        return ctx.error(
            node,
            key,
            f"'{written}' is YAML 1.1's spelling of {describe(value)}" + from_variables(node),
            f"write {describe(value)}",
        )
    if isinstance(value, (int, float)) and not _DECIMAL.match(written.strip()):
        typed = node.start_mark.line < 0  # a flag or variable: no YAML in the words
        if re.fullmatch(r"[-+]?0[0-7_]+", written.strip()):
            plain = written.strip().lstrip("+-0").replace("_", "") or "0"
            sign = "-" if written.strip().startswith("-") else ""
            if typed:
                return ctx.error(node, key, f"'{written}' has a leading 0", f"write {sign}{plain}")
            return ctx.error(
                node,
                key,
                f"'{written}' has a leading 0: YAML 1.1 reads it as octal {value}"
                + from_variables(node),
                f"write {sign}{plain}, or {value} if octal was meant",
            )
        if written.strip().lower().lstrip("+-") in (".inf", ".nan"):
            return value
        return ctx.error(
            node,
            key,
            f"'{written}' is not a plain decimal number"
            + ("" if typed else f" (YAML 1.1 reads it as {value})")
            + from_variables(node),
            f"write {value}",
        )
    return value


def _type_name(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string"}.get(
        type(value), type(value).__name__
    )


def describe(value: Any) -> str:
    """A scalar as a message quotes it: 'ten', the number 1.5, true, nothing (null)."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return f"the number {value}"
    if isinstance(value, str):
        return f"'{value}'"
    return _type_name(value)


_REFERENCE = re.compile(r"\$\$|\$\{[^}]*\}")


def from_variables(node: Node) -> str:
    """' (from ${MAX_AGE})' for a scalar written as variable references, else ''."""
    raw = node.value if isinstance(node, ScalarNode) else ""
    # `$$` is an escape, never a reference: `$${X}` is the text ${X}, and X was never read.
    found = (m.group(0) for m in _REFERENCE.finditer(raw) if m.group(0) != "$$")
    refs = list(dict.fromkeys(found))
    return f" (from {', '.join(refs)})" if refs else ""


def _quoted_hint(node: Node, value: Any, hint: str) -> str:
    """A quoted value that would be a number or a boolean unquoted: say so."""
    if (
        not isinstance(node, ScalarNode)
        or node.style not in ("'", '"')
        or not isinstance(value, str)
    ):
        return hint
    tag = _RESOLVER.resolve(ScalarNode, value, (True, False))  # type: ignore[no-untyped-call]
    if tag in _RETYPED_TAGS - {"tag:yaml.org,2002:null"}:
        return "remove the quotes: a quoted value is a string"
    return hint


class Spec(Generic[T]):
    """Reads one node into a value of type T, or INVALID after reporting."""

    def parse(self, node: Node, key: str, ctx: Context) -> T | Invalid:
        raise NotImplementedError

    def schema(self) -> dict[str, Any]:
        raise NotImplementedError


class Scalar(Spec[T]):
    """A scalar checked and converted by `convert`, which raises SpecError."""

    def __init__(
        self, convert: Callable[[Any], T], schema: dict[str, Any], env_ok: bool = True
    ) -> None:
        self.convert = convert
        self._schema = schema
        self._env_ok = env_ok

    def parse(self, node: Node, key: str, ctx: Context) -> T | Invalid:
        value = read_scalar(node, key, ctx)
        if isinstance(value, Invalid):
            return value
        try:
            return self.convert(value)
        except SpecError as exc:
            message = exc.message + from_variables(node)
            hint = exc.hint
            if exc.message.startswith("expected "):  # a type error: maybe only the quotes
                hint = _quoted_hint(node, value, hint)
            return ctx.error(node, key, message, hint)

    def schema(self) -> dict[str, Any]:
        if not self._env_ok or self._schema == {"type": "string"}:  # any string: ${X} too
            return dict(self._schema)
        return {"anyOf": [self._schema, {"type": "string", "pattern": ENV_PATTERN}]}


def boolean() -> Scalar[bool]:
    def convert(value: Any) -> bool:
        if isinstance(value, bool):
            return value
        raise SpecError(f"expected true or false, got {describe(value)}")

    return Scalar(convert, {"type": "boolean"})


def integer(minimum: int | None = None, maximum: int | None = None, unit: str = "") -> Scalar[int]:
    def convert(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            hint = ""
            if unit == "seconds" and isinstance(value, str) and _DURATION.match(value):
                hint = f"in whole seconds: write {round(parse_duration(value))}"
            of = f" of {unit}" if unit else ""
            raise SpecError(f"expected a whole number{of}, got {describe(value)}", hint)
        if minimum is not None and value < minimum:
            raise SpecError(f"must be at least {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise SpecError(f"must be at most {maximum}, got {value}")
        return value

    schema: dict[str, Any] = {"type": "integer"}
    if minimum is not None:
        schema["minimum"] = minimum
    if maximum is not None:
        schema["maximum"] = maximum
    return Scalar(convert, schema)


def text(
    check: Callable[[str], T] | None = None, schema: dict[str, Any] | None = None
) -> Scalar[T]:
    def convert(value: Any) -> T:
        if not isinstance(value, str):
            raise SpecError(f"expected a string, got {describe(value)}", "quote the value")
        if check is None:
            return value  # type: ignore[return-value]
        return check(value)

    return Scalar(convert, {"type": "string", **(schema or {})})


def choice(options: type[E]) -> Scalar[E]:
    """One of a string enum's values, read as its member."""
    values = [option.value for option in options]

    def convert(value: Any) -> E:
        if value not in values:
            listed = " | ".join(values)
            # Only a misspelling is suggested (rejct): a different word that looks alike may
            # mean the opposite (forbid is not forward).
            spelt = re.sub(r"[-_\s]", "", str(value).lower())
            same = [v for v in values if re.sub(r"[-_\s]", "", v) == spelt]
            same = same or difflib.get_close_matches(str(value).lower(), values, n=1, cutoff=0.8)
            hint = f"did you mean '{same[0]}'?" if same else ""
            raise SpecError(f"'{value}' is not one of {listed}", hint)
        return options(value)

    return Scalar(convert, {"enum": values}, env_ok=False)


_DURATION = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*(ms|s|m|h)\s*\Z")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


# Every duration (timeouts, grace periods, flags): finite and at most a day. `.inf`, `.nan`
# or `99999999999999999999h` would time out every request at once or overflow a timer.
MAX_DURATION = 86400.0
MAX_DURATION_TEXT = "1 day"


def parse_duration(value: Any) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        seconds = float(m.group(1)) * _DURATION_UNITS[m.group(2)]
    else:
        raise SpecError(
            f"'{value}' is not a duration", "seconds as a number, or a string like 500ms, 5s, 2m"
        )
    if seconds != seconds:  # .nan: compares false to everything
        raise SpecError("a duration must be a number of seconds, got .nan")
    if seconds <= 0:
        raise SpecError("a duration must be more than zero")
    if seconds > MAX_DURATION:
        raise SpecError(
            f"a duration must be at most {MAX_DURATION_TEXT} ({MAX_DURATION:g} s), got {value}",
            "no wait of this proxy needs longer; a larger number is a typo",
        )
    return seconds


# Units in any case: `10mb` is 10 MB and `10mib` 10 MiB (the `i` decides, not the case).
_SIZE = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*(B|KB|MB|GB|KiB|MiB|GiB)?\s*\Z", re.IGNORECASE)
_SIZE_UNITS = {
    None: 1,
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
}


MAX_SIZE = 1024**4
MAX_SIZE_TEXT = "1 TiB"


def parse_size(value: Any) -> int:
    """Bytes, a whole number (`1.5KB` is 1500, exactly: no float rounding), more than zero
    and at most MAX_SIZE."""
    if isinstance(value, int) and not isinstance(value, bool):
        size = value
    elif isinstance(value, str) and (m := _SIZE.match(value)):
        unit = m.group(2).lower() if m.group(2) else None
        whole = m.group(1).partition(".")[0].lstrip("0")
        # Past 20 digits it is over the maximum whatever the unit (and int() has a limit).
        size = MAX_SIZE + 1 if len(whole) > 20 else int(Fraction(m.group(1)) * _SIZE_UNITS[unit])
    else:
        raise SpecError(
            f"'{value}' is not a size", "bytes as a number, or a string like 512KiB, 10MiB, 1GB"
        )
    if size <= 0:
        raise SpecError("a size must be more than zero")
    if size > MAX_SIZE:
        raise SpecError(
            f"a size must be at most {MAX_SIZE_TEXT} ({MAX_SIZE} bytes), got {value}",
            "no body or buffer of this proxy needs more; a larger number is a typo",
        )
    return size


DURATION_SCHEMA = {
    "anyOf": [
        {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_DURATION},
        {"type": "string", "pattern": r"^\s*[0-9]+(\.[0-9]+)?\s*(ms|s|m|h)\s*$"},
        {"type": "string", "pattern": ENV_PATTERN},
    ]
}
SIZE_SCHEMA = {
    "anyOf": [
        {"type": "integer", "exclusiveMinimum": 0, "maximum": MAX_SIZE},
        {
            "type": "string",
            "pattern": r"^\s*[0-9]+(\.[0-9]+)?\s*([Bb]|[KkMmGg][Ii]?[Bb])?\s*$",
        },
        {"type": "string", "pattern": ENV_PATTERN},
    ]
}


def duration(minimum: float = 0.0, hint: str = "") -> Scalar[float]:
    if not minimum:
        return Scalar(parse_duration, DURATION_SCHEMA, env_ok=False)

    def convert(value: Any) -> float:
        seconds = parse_duration(value)
        if seconds < minimum:
            raise SpecError(f"must be at least {minimum:g}s, got {seconds:g}s", hint)
        return seconds

    return Scalar(convert, DURATION_SCHEMA, env_ok=False)


def size() -> Scalar[int]:
    return Scalar(parse_size, SIZE_SCHEMA, env_ok=False)


class Star:
    """`"*"` given where a list was expected. Use `STAR`."""

    def __repr__(self) -> str:
        return "STAR"


STAR = Star()


@dataclass(frozen=True, slots=True)
class Item(Generic[T]):
    value: T
    line: int
    key: str
    file: str
    variables: str = ""  # " (from ${ORIGINS})" for an entry from a variable, for messages


_PLAIN_ITEM = re.compile(r"[A-Za-z0-9_./:+-][^,\[\]{}#&*!|>'\"%@`]*\Z")


def _flow_item(node: ScalarNode) -> str:
    """A scalar as an entry of an inline list: quoted unless it is plain text there."""
    value = str(node.value)
    if _PLAIN_ITEM.match(value) and ": " not in value and not value.endswith(":"):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class StrList(Spec[list[Item[T]] | Star]):
    """A list of strings, each checked by `check`. A string from `${VAR}` may hold a
    comma-separated list; `star_ok` also accepts the single value `"*"`."""

    def __init__(
        self,
        check: Callable[[str], T],
        item_schema: dict[str, Any] | None = None,
        star_ok: bool = False,
        min_items: int = 0,
    ) -> None:
        self.check = check
        self.item_schema = item_schema or {"type": "string"}
        self.star_ok = star_ok
        self.min_items = min_items

    def parse(self, node: Node, key: str, ctx: Context) -> list[Item[T]] | Star | Invalid:
        if isinstance(node, ScalarNode):
            raw = read_scalar(node, key, ctx)
            if isinstance(raw, Invalid):
                return raw
            if self.star_ok and raw == "*":
                return STAR
            variables = from_variables(node)
            if variables and raw is None:  # ${VAR} set to nothing: YAML's null, re-typed
                raw = ""
            if isinstance(raw, str) and node.value != raw:  # came from ${VAR}
                parts = [p.strip() for p in raw.split(",") if p.strip()]
                if len(parts) < self.min_items:
                    return ctx.error(
                        node,
                        key,
                        f"must not be empty{variables}",
                        "set the variable to a comma-separated list, e.g. GET,PUT",
                    )
                return self._items([(p, node, f"{key}[{i}]") for i, p in enumerate(parts)], ctx)
            star = ' or "*"' if self.star_ok else ""
            return ctx.error(node, key, f"expected a list{star}", f"write [{_flow_item(node)}]")
        if not isinstance(node, SequenceNode):
            return ctx.error(node, key, "expected a list, got a mapping")
        entries: list[tuple[str, Node, str]] = []
        failed = False
        for i, child in enumerate(node.value):
            value = read_scalar(child, f"{key}[{i}]", ctx)
            if isinstance(value, Invalid):
                failed = True
            elif not isinstance(value, str):
                ctx.error(child, f"{key}[{i}]", f"expected a string, got {describe(value)}")
                failed = True
            else:
                entries.append((value, child, f"{key}[{i}]"))
        if self.star_ok and len(entries) == 1 and entries[0][0] == "*" and not failed:
            return STAR
        items = self._items(entries, ctx)
        if not isinstance(items, Invalid) and len(node.value) < self.min_items:
            return ctx.error(node, key, "must not be empty", "list at least one value")
        return INVALID if failed else items

    def _items(self, entries: list[tuple[str, Node, str]], ctx: Context) -> list[Item[T]] | Invalid:
        items: list[Item[T]] = []
        failed = False
        for value, node, key in entries:
            try:
                checked = self.check(value)
                variables = from_variables(node)
                items.append(Item(checked, line_of(node), key, ctx.source(node), variables))
            except SpecError as exc:
                ctx.error(node, key, exc.message + from_variables(node), exc.hint)
                failed = True
        return INVALID if failed else items

    def schema(self) -> dict[str, Any]:
        array: dict[str, Any] = {"type": "array", "items": self.item_schema}
        if self.min_items:
            array["minItems"] = self.min_items
        options: list[dict[str, Any]] = [array, {"type": "string", "pattern": ENV_PATTERN}]
        if self.star_ok:
            options.insert(1, {"const": "*"})
        return {"anyOf": options}


class _NoDefault:
    def __repr__(self) -> str:
        return "NO_DEFAULT"


NO_DEFAULT: Any = _NoDefault()


@dataclass(frozen=True)
class Field:
    spec: Spec[Any]
    doc: str
    # Only for a key its Obj's target dataclass lacks: the others take the dataclass's default.
    default: Any = NO_DEFAULT
    required: bool = False
    # Absent, the key takes the enclosing level's value (a route's preserve_host): no default.
    inherited: bool = False


def json_value(value: Any) -> Any:
    """A Python default as the schema shows it: enums by value, 5.0 as 5, Listen as text."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (tuple, list)):
        return [json_value(v) for v in value]
    if isinstance(value, frozenset):
        return sorted(json_value(v) for v in value)
    if isinstance(value, Mapping):
        return {str(k): json_value(v) for k, v in value.items()}
    return str(value)


@dataclass
class Section:
    """A validated mapping: values by key, and the line each key was written on."""

    key: str
    line: int
    values: dict[str, Any] = field(default_factory=dict)
    lines: dict[str, int] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)  # where each key was set
    defaults: Mapping[str, Any] = field(default_factory=dict)  # the spec's, by key

    def get(self, name: str, default: Any = None) -> Any:
        return self.values.get(name, default)

    def value(self, name: str) -> Any:
        """The value written, else the default (its target dataclass field's)."""
        return self.values[name] if name in self.values else self.defaults.get(name)

    def has(self, name: str) -> bool:
        return name in self.values

    def child_key(self, name: str) -> str:
        return f"{self.key}.{name}" if self.key else name


def _defaults(fields: Mapping[str, Field], target: type | None) -> dict[str, Any]:
    """Each key's default: the target dataclass field's, or the Field's own for a key the
    target lacks. Written in both places is an error, so each default has one home."""
    targets = {f.name: f for f in dataclasses.fields(target)} if target else {}
    defaults: dict[str, Any] = {}
    for name, spec_field in fields.items():
        target_field = targets.get(name)
        if spec_field.default is not NO_DEFAULT:
            if target_field is not None:
                raise TypeError(f"{name}: the default belongs to the target dataclass")
            defaults[name] = spec_field.default
        elif isinstance(spec_field.spec, (Obj, FalseOr, ListOf)) or spec_field.inherited:
            continue  # nested keys carry their own defaults
        elif target_field is not None and target_field.default is not dataclasses.MISSING:
            defaults[name] = target_field.default
        elif target_field is not None and target_field.default_factory is not dataclasses.MISSING:
            defaults[name] = target_field.default_factory()
    return defaults


def _glued(node: Node, key: str, ctx: Context) -> Invalid | None:
    """A mapping expected and `key:value` found, one string for want of a space: say so."""
    from corsproxy.config.messages import missing_space

    if not isinstance(node, ScalarNode) or node.style is not None:
        return None
    glued = missing_space(str(node.value))
    if glued is None:
        return None
    return ctx.error(
        node,
        key,
        f"no space after `{glued}:`, so YAML reads `{_escaped(node.value)}` as one string",
        f"put a space after `{glued}:`",
    )


class Obj(Spec[Section]):
    """A mapping of known keys. `target` is the dataclass the keys compile into: an absent
    key takes its field default, in the loader and in the schema alike."""

    def __init__(self, fields: dict[str, Field], doc: str = "", target: type | None = None) -> None:
        self.fields = fields
        self.doc = doc
        self.target = target
        self.defaults = _defaults(fields, target)

    def parse(self, node: Node, key: str, ctx: Context) -> Section | Invalid:
        if not isinstance(node, MappingNode):
            glued = _glued(node, key or "(top level)", ctx)
            if glued is not None:
                return glued
            return ctx.error(node, key or "(top level)", "expected a mapping of keys to values")
        section = Section(key, line_of(node), defaults=self.defaults)
        for key_node, value_node in node.value:
            name = key_node.value if isinstance(key_node, ScalarNode) else None
            if name is None:
                what = "a list" if isinstance(key_node, SequenceNode) else "a mapping"
                ctx.error(key_node, key or "(top level)", f"a key is {what}", "a key is one word")
                continue
            child = f"{key}.{name}" if key else str(name)
            if name not in self.fields:
                from corsproxy.config.messages import unknown_key

                message, hint = unknown_key(str(name), key, list(self.fields))
                ctx.error(key_node, child, message, hint)
                continue
            if name in section.lines:
                ctx.error(
                    key_node,
                    child,
                    f"duplicate key (first set on line {section.lines[name]})",
                    "keep one",
                )
                continue
            section.lines[name] = line_of(key_node)
            section.files[name] = ctx.source(key_node)
            value = self.fields[name].spec.parse(value_node, child, ctx)
            if not isinstance(value, Invalid):
                section.values[name] = value
        for name, spec_field in self.fields.items():
            if spec_field.required and name not in section.lines:
                ctx.error(node, key or name, f"missing required key '{name}'")
        # Partial on errors (they are in ctx), so later checks still report theirs.
        return section

    def schema(self) -> dict[str, Any]:
        properties: dict[str, Any] = {}
        for name, spec_field in self.fields.items():
            prop = spec_field.spec.schema()
            prop["description"] = spec_field.doc
            if self.defaults.get(name) is not None:
                prop["default"] = json_value(self.defaults[name])
            properties[name] = prop
        schema: dict[str, Any] = {
            "type": "object",
            "additionalProperties": False,
            "properties": properties,
        }
        required = [n for n, f in self.fields.items() if f.required]
        if required:
            schema["required"] = required
        if self.doc:
            schema["description"] = self.doc
        return schema


class FalseOr(Spec[Section | bool]):
    """`false`, or the wrapped mapping (`cors: false` turns cross-origin access off)."""

    def __init__(self, inner: Obj) -> None:
        self.inner = inner

    def parse(self, node: Node, key: str, ctx: Context) -> Section | bool | Invalid:
        if isinstance(node, ScalarNode):
            value = read_scalar(node, key, ctx)
            if value is False:
                return False
            if isinstance(value, Invalid):
                return value
            if value is None:
                return ctx.error(
                    node,
                    key,
                    f"`{key.rsplit('.', 1)[-1]}:` is empty",
                    "indent its keys under it, or write false",
                )
            glued = _glued(node, key, ctx)
            if glued is not None:
                return glued
            return ctx.error(node, key, "expected false or a mapping", "write false, or keys")
        return self.inner.parse(node, key, ctx)

    def schema(self) -> dict[str, Any]:
        return {"anyOf": [{"const": False}, self.inner.schema()]}


class ListOf(Spec[list[Section]]):
    def __init__(self, inner: Obj) -> None:
        self.inner = inner

    def parse(self, node: Node, key: str, ctx: Context) -> list[Section] | Invalid:
        if not isinstance(node, SequenceNode):
            return ctx.error(node, key, "expected a list", "start each entry with '- '")
        out: list[Section] = []
        for i, child in enumerate(node.value):
            section = self.inner.parse(child, f"{key}[{i}]", ctx)
            if not isinstance(section, Invalid):
                out.append(section)
        return out

    def schema(self) -> dict[str, Any]:
        return {"type": "array", "items": self.inner.schema()}
