"""Messages for the mistakes people make in a config: YAML syntax errors in plain words with
the line, column and a caret; keys written at the wrong level ("`allow_methods` belongs under
`cors:`"); other tools' key names (Starlette, rs/cors, Flask-CORS, Traefik, Envoy, nginx)
pointing to corsproxy's; and the `${VAR}` a bad value came from.

Only the error paths of `source.py` and `spec.py` call this module.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Sequence
from functools import cache

import yaml

from corsproxy.config.spec import Diagnostic

# --- where a line is: the excerpt and the caret ----------------------------------------

_BREAKS = "\r\n\x85\u2028\u2029"
# The excerpt shows at most this much of a line around the column.
_EXCERPT_WIDTH = 100
# Characters that look like a space, or nothing, in an editor; shown as escapes.
_INVISIBLE_CHARS = "\u00a0\u2007\u202f\u3000\u200b\ufeff"


def _visible(char: str) -> str:
    if char == "\t":
        return "\\t"
    if ord(char) < 0x20 or 0x7F <= ord(char) <= 0xA0 or char in "\u2028\u2029" + _INVISIBLE_CHARS:
        return char.encode("unicode_escape").decode("ascii")
    return char


def excerpt(text: str, line: int, column: int) -> str:
    """Line `line` (0-based) of `text` and a caret under `column`, control characters and
    tabs made visible (a tab shows as \\t), cut to a window around the column."""
    lines = re.split(r"\r\n|[\r\n\x85\u2028\u2029]", text)
    if not 0 <= line < len(lines):
        return ""
    source = lines[line]
    start = max(0, min(column - _EXCERPT_WIDTH // 2, len(source) - _EXCERPT_WIDTH))
    shown = source[start : start + _EXCERPT_WIDTH]
    before = "".join(_visible(c) for c in shown[: column - start])
    body = "".join(_visible(c) for c in shown)
    lead = "..." if start else ""
    tail = "..." if start + _EXCERPT_WIDTH < len(source) else ""
    return f"    {lead}{body}{tail}\n    {' ' * (len(lead) + len(before))}^"


# --- YAML syntax errors -------------------------------------------------------------------

_KEY = re.compile(r"\s*(?:-\s+)?([^\s:#'\"\[\]{},][^:#]*?)\s*:(?:\s|$)")


def _line(text: str, line: int) -> str:
    lines = re.split(r"\r\n|[\r\n\x85\u2028\u2029]", text)
    return lines[line] if 0 <= line < len(lines) else ""


def _indent(source: str) -> int:
    return len(source) - len(source.lstrip(" "))


def _key_on(source: str) -> str | None:
    m = _KEY.match(source)
    return m.group(1) if m else None


def _label(source: str) -> str:
    """How a message names a line: `its key`, the list entry, or this line."""
    key = _key_on(source)
    if key is not None:
        return f"`{key}`"
    return "the list entry" if source.lstrip().startswith("-") else "this line"


def _previous_line(text: str, line: int) -> int | None:
    """The nearest line above `line` holding something other than a comment."""
    for index in range(line - 1, -1, -1):
        stripped = _line(text, index).strip()
        if stripped and not stripped.startswith("#"):
            return index
    return None


_NO_SPACE = re.compile(r"\s*(?:-\s+)?([A-Za-z_][A-Za-z0-9_-]*):(?=[^\s/])")


def missing_space(value: str) -> str | None:
    """The known key of `key:value` written with no space after the ':' (YAML reads it as
    one string), else None."""
    m = _NO_SPACE.match(value)
    return m.group(1) if m and m.group(1) in _places() else None


def _parent_key(text: str, line: int, column: int) -> tuple[int, str] | None:
    """The nearest key above `line` indented less than `column`: (its indent, its name)."""
    for index in range(line - 1, -1, -1):
        source = _line(text, index)
        if not source.strip() or source.lstrip().startswith("#"):
            continue
        key = _key_on(source)
        if key is not None and _indent(source) < column:
            return _indent(source), key
    return None


def _block_end(
    text: str, mark: yaml.Mark, start: yaml.Mark, source: str
) -> tuple[yaml.Mark | None, str, str]:
    """`expected <block end>`: a line YAML cannot place in the mapping or list above. Only
    claims an indentation difference the file has; else plain words."""
    char = source[mark.column : mark.column + 1]
    if char in ("]", "}"):
        return (
            mark,
            f"an extra `{char}`",
            f"remove it: each {'[' if char == ']' else '{'} is closed once",
        )
    key = _label(source)
    column = mark.column
    start_source = _line(text, start.line)
    first = _key_on(start_source[start.column :])
    outer = f"`{first}` (line {start.line + 1})" if first else f"line {start.line + 1}"
    previous = _previous_line(text, mark.line)
    above = _line(text, previous) if previous is not None else ""
    above_key = _key_on(above)
    if column == start.column:
        parent = _parent_key(text, mark.line, column)
        if start_source[start.column : start.column + 1] == "-":
            message = (
                f"{key} is in the column of the list entries above (line {start.line + 1}), "
                "so YAML expects another '- ' entry there"
            )
            hint = (
                f"line it up with `{parent[1]}`, {parent[0]} spaces in"
                if parent
                else "indent it as much as the key it belongs under"
            )
            return mark, message, hint
        if source.lstrip().startswith("-"):
            return (
                mark,
                f"a list entry where YAML expects a key of the mapping of {outer}",
                "an inline list keeps its entries inside [ ]; a list of '- ' lines starts "
                "on the line after its key, indented more than the key",
            )
        if source.lstrip().startswith(":"):
            return mark, "a ':' with no key before it", "write `key: value`"
        return mark, "YAML expects a key of the mapping here", "write `key: value`"
    if first and previous is not None and above_key and _indent(above) > column > start.column:
        inner = f"`{above_key}` (line {previous + 1})"
        message = f"{key} is indented less than {inner} but more than {outer}"
        hint = (
            f"line it up with `{above_key}`, {_indent(above)} spaces in, "
            f"or with `{first}`, {start.column} spaces in"
        )
        return mark, message, hint
    if first and column > start.column:
        message = f"{key} is indented more than {outer}, a key of the same mapping"
        hint = f"keys of one mapping start in the same column: indent it by {start.column} spaces"
        return mark, message, hint
    if first and column < start.column:
        message = (
            f"{key} is indented less than {outer} but does not line up with a key of an "
            "enclosing mapping either"
        )
        hint = f"indent it by {start.column} spaces, or as much as the key it belongs under"
        return mark, message, hint
    return (
        mark,
        "YAML cannot place this line in the mapping or list above",
        ("check its indentation against the lines above"),
    )


def _plain(exc: yaml.MarkedYAMLError, text: str) -> tuple[yaml.Mark | None, str, str]:
    """Where to point, what went wrong and a hint, in plain words; ("", "") when this error
    has none (the parser's own words are used)."""
    problem = exc.problem or ""
    context = exc.context or ""
    mark, start = exc.problem_mark, exc.context_mark
    if mark is None:
        return start, "", ""
    source = _line(text, mark.line)
    for where in (start, mark):
        glued = missing_space(_line(text, where.line)) if where is not None else None
        if where is not None and glued is not None:
            line = _line(text, where.line)
            at = line.index(f"{glued}:")
            spot = yaml.Mark(where.name, 0, where.line, at, None, 0)
            return spot, f"no space after `{glued}:`", f"put a space after `{glued}:`"
    alias = start is not None and _line(text, start.line)[start.column : start.column + 1]
    if "while scanning an alias" in context and alias == "*":
        return (
            start,
            "an unquoted `*`: YAML reads * as the start of an alias (*NAME)",
            'quote `*`: write ["*"]',
        )
    if "\\t" in problem or "tab character" in problem:
        if not source[: mark.column].strip(" \t"):
            return (
                mark,
                "a tab in the indentation",
                ("YAML does not allow tabs for indentation: use spaces"),
            )
        return mark, "a tab where YAML expects a value", "replace the tab with spaces"
    if "quoted scalar" in context and "end of stream" in problem and start is not None:
        quote = _line(text, start.line)[start.column : start.column + 1] or '"'
        return (
            start,
            f"the quote {quote} opened here is never closed",
            (f"end the value with {quote} on the same line"),
        )
    if "unknown escape character" in problem and start is not None:
        return (
            mark,
            f"{problem[6:]} in a double-quoted value",
            (
                "inside double quotes a backslash starts an escape: use single quotes for "
                "regexes ('^https://.*\\.example\\.com$'), or write \\\\"
            ),
        )
    if "expected escape sequence of" in problem:
        digits = re.search(r"of (\d+) hexadecimal", problem)
        return (
            mark,
            f"an escape \\x, \\u or \\U needs {digits.group(1) if digits else 'more'} hex "
            "digits in a double-quoted value",
            "inside double quotes a backslash starts an escape: use single quotes, or write \\\\",
        )
    if "but found another document" in problem:
        return (
            mark,
            f"a second document starts on line {mark.line + 1} (`---`)",
            "a config is one document: remove the `---` line, and merge what follows into it",
        )
    flow = re.match(r"expected ',' or '([\]}])', but got '?(.*?)'?$", problem)
    if flow and start is not None:
        ref = re.search(r"\$\{[^}\s]*\}?", _line(text, start.line)[start.column :])
        if ref:
            column = start.column + ref.start()
            return (
                yaml.Mark(start.name, 0, start.line, column, None, 0),
                f"`{ref.group(0)}` inside [ ] or {{ }} is read as YAML: its '{{' starts a mapping",
                f'quote it: "{ref.group(0)}"',
            )
        opener = "[" if flow.group(1) == "]" else "{"
        what = "list" if opener == "[" else "mapping"
        ran = "the end of the file" if "stream end" in flow.group(2) else f"line {mark.line + 1}"
        return (
            start,
            f"the '{opener}' opened here is never closed (the {what} runs on to {ran})",
            (f"close it with '{flow.group(1)}', and separate entries with ', '"),
        )
    if problem.startswith("expected <block end>") and start is not None:
        return _block_end(text, mark, start, source)
    if problem == "mapping values are not allowed here":
        previous = _previous_line(text, mark.line)
        name = _key_on(source)
        if source[: mark.column].count(": ") or previous is None:
            return (
                mark,
                "a second ': ' on one line",
                ("quote the value if the ':' belongs to it: key: \"a: b\""),
            )
        above = _line(text, previous)
        above_key = _key_on(above)
        if above_key is not None and name is not None:
            return (
                mark,
                (
                    f"`{name}` is indented more than `{above_key}` (line {previous + 1}), so YAML "
                    "reads it as part of that key's value"
                ),
                f"indent it by {_indent(above)} spaces, like `{above_key}`",
            )
        return (
            mark,
            (f"line {previous + 1} has no ':', so YAML reads this line as part of its text"),
            f"write `key: value` on line {previous + 1}",
        )
    if problem.startswith("expected '<document start>'"):
        top = next((i for i in range(mark.line) if _line(text, i).strip()[:1] not in ("", "#")), 0)
        label = _label(source)
        message = (
            f"line {top + 1} is indented and {label} is not, so YAML reads {label} as the start "
            "of a second document"
        )
        return mark, message, "top-level keys start in column 1, with no spaces before them"
    if "could not find expected ':'" in problem and start is not None:
        return (
            start,
            "a key without ':' (or a value on a line of its own)",
            ("write `key: value`; a list entry starts with '- '"),
        )
    token = re.match(r"found character '(.)' that cannot start any token", problem)
    if token:
        return mark, f"a value cannot start with '{token.group(1)}'", "quote it: 'value'"
    if "entries are not allowed here" in problem:
        return (
            mark,
            "a list entry '- ' on the same line as its key",
            ("start the list on the next line, indented, or write [a, b]"),
        )
    if problem.startswith("found undefined alias"):
        return mark, f"{problem[6:]}: no anchor &NAME above defines it", "define &NAME first"
    return mark, "", ""


def _at(text: str, position: int) -> tuple[int, int]:
    """The 0-based line and column of a character offset."""
    before = re.split(r"\r\n|[\r\n\x85\u2028\u2029]", text[:position])
    return len(before) - 1, len(before[-1])


def _diagnostic(file: str, text: str, position: int, message: str, hint: str) -> Diagnostic:
    line, column = _at(text, position)
    return Diagnostic(
        file, line + 1, "", message, hint, column=column + 1, excerpt=excerpt(text, line, column)
    )


def not_utf8(exc: UnicodeDecodeError, data: bytes, file: str) -> Diagnostic:
    """Bytes that are not UTF-8, at their line and column (the line shown as decoded)."""
    text = data.decode("utf-8", errors="replace")
    position = len(data[: exc.start].decode("utf-8", errors="replace"))
    bad = data[exc.start : exc.end].hex(" ")
    return _diagnostic(
        file,
        text,
        position,
        f"the config is not UTF-8 text: byte {bad} ({exc.reason})",
        "save the file as UTF-8",
    )


def unacceptable_character(exc: yaml.reader.ReaderError, text: str, file: str) -> Diagnostic:
    """A character YAML does not allow (NUL, other control characters), where it is."""
    code = exc.character if isinstance(exc.character, int) else ord(str(exc.character)[:1] or "?")
    return _diagnostic(
        file,
        text,
        exc.position,
        f"the invisible character U+{code:04X} is not allowed in YAML",
        "remove it",
    )


# Characters that look like a space in an editor and are not one to YAML.
_INVISIBLE = {
    "\u00a0": "a no-break space",
    "\u2007": "a figure space",
    "\u202f": "a narrow no-break space",
    "\u3000": "an ideographic space",
    "\u200b": "a zero-width space",
    "\ufeff": "a zero-width no-break space (BOM)",
}


def invisible_indentation(text: str, file: str) -> Diagnostic | None:
    """The first line indented with a character that looks like a space and is not one."""
    position = 0
    for source in text.splitlines(keepends=True):
        lead = re.match(r"[ \t\u00a0\u2007\u202f\u3000\u200b\ufeff]*", source)
        spaces = lead.group(0) if lead else ""
        for index, char in enumerate(spaces):
            if char in _INVISIBLE:
                return _diagnostic(
                    file,
                    text,
                    position + index,
                    f"{_INVISIBLE[char]} (U+{ord(char):04X}) in the indentation",
                    "indent with plain spaces",
                )
        position += len(source)
    return None


def syntax_error(exc: yaml.MarkedYAMLError, text: str, file: str) -> Diagnostic:
    """A YAML syntax error as a Diagnostic: line, column, plain words, the line and a caret."""
    mark, message, hint = _plain(exc, text)
    if not message:
        mark = exc.problem_mark or exc.context_mark
        message = str(exc.problem or "invalid YAML")
        hint = str(exc.context or "check indentation and quoting")
    if mark is None:
        return Diagnostic(file, 1, "", f"YAML syntax error: {message}", hint)
    return Diagnostic(
        file,
        mark.line + 1,
        "",
        f"YAML syntax error: {message}",
        hint,
        column=mark.column + 1,
        excerpt=excerpt(text, mark.line, mark.column),
    )


# --- keys at the wrong level, and other tools' names ----------------------------------------

# Other tools' names for corsproxy's keys, by their normalized spelling (lower case, no '_' or
# '-'): the key corsproxy uses, and what to know. Names that differ from corsproxy's only in
# case or separators (AllowOrigins, maxAge, allowCredentials) need no row.
_PATTERNS = (
    "corsproxy takes patterns in allow_origins: 'https://*.example.com', or "
    "'regex:^https://(a|b)\\.example\\.com$' (a full match)"
)
_HEADERS = "corsproxy writes the Access-Control-* headers itself from its keys"
_OTHER_HEADERS = (
    "corsproxy writes only the Access-Control-* headers and Vary, from its cors: keys; it "
    "does not add or remove other headers: set them in the upstream"
)
FOREIGN_KEYS: dict[str, tuple[str, str]] = {
    # Starlette / FastAPI
    "alloworiginregex": ("allow_origins", f"Starlette's allow_origin_regex: {_PATTERNS}"),
    "alloworiginpatterns": ("allow_origins", _PATTERNS),
    "allowedoriginpatterns": ("allow_origins", f"Spring's allowedOriginPatterns: {_PATTERNS}"),
    "originregex": ("allow_origins", _PATTERNS),
    "originpatterns": ("allow_origins", _PATTERNS),
    # rs/cors (Go), gorilla/handlers, Spring
    "allowedorigins": ("allow_origins", "a list of origins, or patterns"),
    "allowedmethods": ("allow_methods", ""),
    "allowedheaders": ("allow_headers", ""),
    "exposedheaders": ("expose_headers", ""),
    "allowedcredentials": ("allow_credentials", ""),
    # Flask-CORS, Kong, cors-anywhere
    "origins": ("allow_origins", ""),
    "origin": ("allow_origins", ""),
    "originwhitelist": ("allow_origins", ""),
    "methods": ("allow_methods", ""),
    "allowmethod": ("allow_methods", ""),
    "headers": ("allow_headers", ""),
    "allowheader": ("allow_headers", ""),
    "exposeheader": ("expose_headers", ""),
    "supportscredentials": ("allow_credentials", "Flask-CORS's supports_credentials"),
    "credentials": ("allow_credentials", ""),
    "withcredentials": ("allow_credentials", ""),
    "corsmaxage": ("max_age", "in seconds"),
    "preflightmaxage": ("max_age", "in seconds"),
    # nginx habit: header names as keys
    "accesscontrolalloworigin": ("allow_origins", _HEADERS),
    "accesscontrolallowmethods": ("allow_methods", _HEADERS),
    "accesscontrolallowheaders": ("allow_headers", _HEADERS),
    "accesscontrolexposeheaders": ("expose_headers", _HEADERS),
    "accesscontrolallowcredentials": ("allow_credentials", _HEADERS),
    "accesscontrolmaxage": ("max_age", _HEADERS),
    "accesscontrolallowprivatenetwork": ("allow_private_network", _HEADERS),
    # Traefik's headers middleware
    "accesscontrolalloworiginlist": ("allow_origins", "Traefik's accessControlAllowOriginList"),
    "accesscontrolalloworiginlistregex": ("allow_origins", _PATTERNS),
    "addvaryheader": ("", "corsproxy always sends the right Vary: remove it"),
    # Envoy's CORS filter
    "alloworiginstringmatch": ("allow_origins", _PATTERNS),
    "shadowenabled": ("mode", "write mode: report-only"),
    "filterenabled": ("", "CORS is on when `cors:` is written; cors: false turns it off"),
    "reportonly": ("mode", "write mode: report-only"),
    "dryrun": ("mode", "write mode: report-only"),
    # routes: nginx location, Traefik PathPrefix, http-proxy target, local-cors-proxy
    "path": ("path_prefix", "a prefix matched at segment boundaries"),
    "prefix": ("path_prefix", ""),
    "location": ("path_prefix", ""),
    "route": ("routes", "a list of entries, each with a path_prefix"),
    "upstreamurl": ("upstream", "an http(s) URL"),
    # Headers set or removed by other proxies: corsproxy writes only the CORS headers
    "removeheaders": ("", _OTHER_HEADERS),
    "setheaders": ("", _OTHER_HEADERS),
    "addheader": ("", _OTHER_HEADERS),
    "header": ("", _OTHER_HEADERS),
    "varyheader": ("", "corsproxy always sends the right Vary: remove it"),
    # Django's setting names, and TLS keys of other tools
    "corsallowedorigins": ("allow_origins", "django-cors-headers' CORS_ALLOWED_ORIGINS"),
    "corsalloworigins": ("allow_origins", ""),
    "key": ("key_file", "a PEM file path"),
    "cert": ("cert_file", "a PEM file path"),
    "certificate": ("cert_file", "a PEM file path"),
    "match": ("path_prefix", ""),
    "target": ("upstream", "an http(s) URL"),
    "proxyurl": ("upstream", "an http(s) URL"),
    "proxypass": ("upstream", "an http(s) URL"),
    "backend": ("upstream", "an http(s) URL"),
    "url": ("upstream", "an http(s) URL"),
    "strippath": ("strip_prefix", ""),
    "port": ("listen", "HOST:PORT, e.g. '0.0.0.0:8080'"),
    "bind": ("listen", "HOST:PORT, e.g. '0.0.0.0:8080'"),
    "address": ("listen", "HOST:PORT, e.g. '0.0.0.0:8080'"),
    "timeout": ("timeouts", "timeouts: {connect: 5s, read: 60s, send: 60s}"),
}


def _normalized(name: str) -> str:
    return re.sub(r"[-_\s]", "", name).lower()


@cache
def _places() -> dict[str, tuple[str, ...]]:
    """Every key corsproxy knows, with the places it may be written ('under `cors:`', 'at the
    top level', 'in a `routes:` entry'), read from the spec itself."""
    from corsproxy.config.schema import CONFIG_SPEC
    from corsproxy.config.spec import FalseOr, ListOf, Obj

    places: dict[str, list[str]] = {}

    def walk(spec: Obj, where: str) -> None:
        for name, spec_field in spec.fields.items():
            places.setdefault(name, [])
            if where not in places[name]:
                places[name].append(where)
            inner = spec_field.spec
            if isinstance(inner, FalseOr):
                walk(inner.inner, f"under `{name}:`")
            elif isinstance(inner, ListOf):
                walk(inner.inner, f"in a `{name}:` entry")
            elif isinstance(inner, Obj):
                walk(inner, f"under `{name}:`")

    walk(CONFIG_SPEC, "at the top level")
    return {name: tuple(where) for name, where in places.items()}


def place_of(key_path: str) -> str:
    """The place of a dotted key path's mapping, as _places() names it."""
    parts = [p for p in re.sub(r"\[\d+\]", "[]", key_path).split(".") if p]
    if not parts:
        return "at the top level"
    last = parts[-1]
    if last.endswith("[]"):
        return f"in a `{last[:-2]}:` entry"
    return f"under `{last}:`"


def _join(places: Iterable[str]) -> str:
    items = list(places)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " or " + items[-1]


def _nearest(places: Sequence[str], key_path: str, known: Sequence[str]) -> str:
    """Of the places a key may be written, the one nearest the mapping at `key_path` (whose
    keys are `known`): a mapping inside it, then its enclosing ones from the nearest out."""
    parts = [p for p in re.sub(r"\[\d+\]", "[]", key_path).split(".") if p]
    ancestors = [place_of(".".join(parts[:i])) for i in range(len(parts) - 1, -1, -1)]

    def rank(where: str) -> int:
        inside = re.fullmatch(r"(?:under|in a) `([^`]+):`(?: entry)?", where)
        if inside and inside.group(1) in known:
            return 0
        return 1 + ancestors.index(where) if where in ancestors else len(ancestors) + 2

    return min(places, key=rank)


def _move_hint(where: str, name: str, key_path: str) -> str:
    if where == "at the top level":
        return f"move `{name}` to the top level (no indentation)"
    if where.startswith("in a `") and name == "path_prefix":
        return f"start an entry of {where[5:-6]} with it: - path_prefix: /api"
    if where.startswith("in a `"):
        if where in [place_of(p) for p in _prefixes(key_path)]:
            return f"move it up into the {where[5:-6]} entry, indented like its path_prefix"
        return f"move it into an entry of {where[5:-6]}, indented like its path_prefix"
    return f"indent it under {where[6:]}, adding {where[6:]} if there is none"


def _prefixes(key_path: str) -> list[str]:
    parts = [p for p in key_path.split(".") if p]
    return [".".join(parts[:i]) for i in range(1, len(parts))]


_NEGATIONS = ("in", "un", "non", "dis", "no", "not")


def _opposite(name: str, other: str) -> bool:
    """Whether two key names differ only by a negation (routes_case_insensitive and
    routes_case_sensitive): suggesting one for the other would invert the meaning."""
    a, b = name.lower().split("_"), other.lower().split("_")
    if len(a) != len(b):
        a, b = [w for w in a if w not in _NEGATIONS], [w for w in b if w not in _NEGATIONS]
        return a == b and name.lower() != other.lower()
    diff = [(x, y) for x, y in zip(a, b, strict=True) if x != y]
    return len(diff) == 1 and any(
        x == n + y or y == n + x or x == n + "-" + y or y == n + "-" + x
        for x, y in diff
        for n in _NEGATIONS
    )


def _close(name: str, candidates: Sequence[str], cutoff: float) -> tuple[str, str]:
    """The close match to suggest, or ('', hint) for one of opposite meaning."""
    for close in difflib.get_close_matches(name, list(candidates), n=3, cutoff=cutoff):
        if _opposite(name, close):
            return "", (
                f"corsproxy's key is '{close}', of the opposite meaning: write "
                f"{close}: false for {name}: true"
            )
        return close, ""
    return "", ""


def unknown_key(name: str, key_path: str, known: Sequence[str]) -> tuple[str, str]:
    """The message and hint for a key `name` that the mapping at `key_path` (whose keys are
    `known`) does not have."""
    places = _places()
    here = place_of(key_path)
    elsewhere = [p for p in places.get(name, ()) if p != here]
    if elsewhere:
        nearest = _nearest(elsewhere, key_path, known)
        return f"`{name}` belongs {_join(elsewhere)}", _move_hint(nearest, name, key_path)
    if name == "<<":
        return (
            "corsproxy does not support YAML merge keys (`<<`)",
            "repeat the keys, or reuse the whole mapping with an alias (cors: *NAME)",
        )
    normalized = _normalized(name)
    same = [k for k in known if _normalized(k) == normalized]
    if same:
        return "unknown key", f"did you mean '{same[0]}'? corsproxy's keys are snake_case"
    target, note = FOREIGN_KEYS.get(normalized, ("", ""))
    if not target and note:
        return "unknown key", note
    if not target:
        target = next((k for k in places if _normalized(k) == normalized), "")
    if target:
        if target in known:
            return "unknown key", f"did you mean '{target}'?" + (f" {note}" if note else "")
        where = _join(places.get(target, ()))
        return "unknown key", f"corsproxy's key is '{target}', {where}" + (
            f"; {note}" if note else ""
        )
    close, opposite = _close(name, known, 0.6)
    if opposite:
        return "unknown key", opposite
    if close:
        return "unknown key", f"did you mean '{close}'?"
    # A key of another mapping only when the spelling is very near: a loose match there
    # names an unrelated key (server: is not upstream_tls.server_name).
    close, opposite = _close(name, list(places), 0.8)
    if opposite:
        return "unknown key", opposite
    if close:
        return "unknown key", f"did you mean '{close}'? It belongs {_join(places[close])}"
    return "unknown key", "known keys: " + ", ".join(known)
