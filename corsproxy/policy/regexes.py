"""Operator regexes for origins: a static check for super-linear patterns, and the engine.

Pure code, no I/O. Python's `re` backtracks: `(a+)+` takes seconds on 28 characters. So a
pattern runs on RE2 (the `google-re2` package: linear time, no backtracking) whenever RE2
reads it the way Python does, and on `re` otherwise (RE2 is not installed, or the pattern
needs `re` features such as backreferences or lookaround). Whatever the engine, the input
is capped at `MAX_REGEX_INPUT` characters, and `analyse()` names the worst construct that can
make a backtracking engine slow: only patterns it deems linear may run on `re`.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from functools import cache
from typing import Any

# The longest serialized origin: a scheme (the longest in use, `safari-web-extension`, has
# 20 characters; 32 leaves room), "://", a host of at most 253 characters (RFC 1035; an
# IPv6 literal is at most 47 with brackets), ":" and a 5-digit port. Longer values are never
# origins and are never fed to a regex.
MAX_REGEX_INPUT = 32 + 3 + 253 + 1 + 5


@cache
def _re2_module() -> Any:
    """RE2, imported by the first regex (about 2.5 MiB per process: a configuration without
    regex origins never loads it), or None when it is not installed."""
    try:
        return importlib.import_module("re2")
    except ImportError:  # pragma: no cover - google-re2 has wheels for the usual platforms
        return None


# Syntax both engines accept but read differently: POSIX classes (`[[:alpha:]]` is a set of
# characters to `re`), `{,n}` (a repeat to `re`, literal text to RE2) and `\s` (`re` also
# counts \v and \x1c-\x1f as space). Regexes only ever see ASCII, so `\d`, `\w` agree.
_DIVERGENT = re.compile(r"\[:|\{,|\\[sS]")


def _re2_spelling(source: str) -> str:
    """`source` with Python-only escapes spelled as RE2 spells the same thing: Python's `\\Z`
    (end of text only) is RE2's `\\z`. RE2 refuses what is left that it does not read."""
    out: list[str] = []
    i = 0
    while i < len(source):
        pair = source[i : i + 2]
        if pair[:1] == "\\":
            out.append("\\z" if pair == "\\Z" else pair)
            i += 2
        else:
            out.append(source[i])
            i += 1
    return "".join(out)


def compile_fullmatch(source: str, flags: int = 0) -> tuple[Callable[[str], bool], str]:
    """A full-match predicate for `source` and the engine's name ('re2' or 're').

    `source` must already compile with `re` (that is the syntax operators write)."""
    fallback = re.compile(source, flags)
    _re2 = _re2_module()
    if _re2 is not None and not flags and not _DIVERGENT.search(source):
        options = _re2.Options()
        options.log_errors = False  # RE2 would log every pattern it cannot read to stderr
        options.never_capture = True
        try:
            compiled = _re2.compile(_re2_spelling(source), options=options)
        except _re2.error:
            pass
        else:
            return (lambda value: compiled.fullmatch(value) is not None), "re2"
    return (lambda value: fallback.fullmatch(value) is not None), "re"


def re2_available() -> bool:
    return _re2_module() is not None


# --- the static check ---------------------------------------------------------------

_parser: Any = importlib.import_module("re._parser")
_c: Any = importlib.import_module("re._constants")

_ALL = (1 << 129) - 1  # character sets: a bit per ASCII code, bit 128 for all others
_OTHER = 1 << 128


def _range(low: int, high: int) -> int:
    bits = 0
    for code in range(low, min(high, 127) + 1):
        bits |= 1 << code
    return bits | (_OTHER if high > 127 else 0)


_CATEGORIES = {
    "CATEGORY_DIGIT": _range(48, 57) | _OTHER,
    "CATEGORY_WORD": _range(48, 57) | _range(65, 90) | _range(97, 122) | (1 << 95) | _OTHER,
    "CATEGORY_SPACE": _range(9, 13) | _range(28, 32) | _OTHER,
}


def _fold(bits: int) -> int:
    """Both cases of every ASCII letter in the set (for IGNORECASE)."""
    for low in range(97, 123):
        if bits & (1 << low) or bits & (1 << (low - 32)):
            bits |= (1 << low) | (1 << (low - 32))
    return bits


def _chars(op: Any, arg: Any) -> int | None:
    """The characters one single-character item can match, or None if it is not one."""
    name = str(op)
    if name == "LITERAL":
        return _range(arg, arg)
    if name == "NOT_LITERAL":
        return _ALL & ~_range(arg, arg) | _OTHER
    if name == "ANY":
        return _ALL
    if name != "IN":
        return None
    bits, negate = 0, False
    for item_op, item_arg in arg:
        kind = str(item_op)
        if kind == "NEGATE":
            negate = True
        elif kind == "LITERAL":
            bits |= _range(item_arg, item_arg)
        elif kind == "RANGE":
            bits |= _range(*item_arg)
        elif kind == "CATEGORY":
            category = str(item_arg)
            positive = category.replace("CATEGORY_NOT_", "CATEGORY_")
            found = _CATEGORIES.get(positive, _ALL)
            bits |= (_ALL & ~found | _OTHER) if positive != category else found
        else:
            bits = _ALL
    return (_ALL & ~bits | _OTHER) if negate else bits


def _unwrap(items: Any) -> Any:
    """The items of a group that is a whole sequence: `(x)` is `x` here."""
    while len(items) == 1 and str(items[0][0]) == "SUBPATTERN":
        items = items[0][1][-1]
    return items


class _Analysis:
    def __init__(self, ignorecase: bool) -> None:
        self.ignorecase = ignorecase
        self.problem: tuple[int, str] | None = None

    def chars(self, items: Any) -> int:
        """Every character a sequence could consume anywhere (conservative)."""
        bits = 0
        for op, arg in items:
            single = _chars(op, arg)
            if single is not None:
                bits |= single
            elif str(op) in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
                bits |= self.chars(arg[2])
            elif str(op) in ("SUBPATTERN", "ATOMIC_GROUP"):
                bits |= self.chars(arg[-1])
            elif str(op) == "BRANCH":
                for alternative in arg[1]:
                    bits |= self.chars(alternative)
            elif str(op) not in ("AT",):
                bits = _ALL
        return _fold(bits) if self.ignorecase else bits

    def first(self, items: Any) -> tuple[int, bool]:
        """The characters a sequence can start with, and whether it can match empty."""
        bits = 0
        for op, arg in items:
            name = str(op)
            single = _chars(op, arg)
            if single is not None:
                return bits | (_fold(single) if self.ignorecase else single), False
            if name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
                inner, empty = self.first(arg[2])
                bits |= inner
                if arg[0] > 0 and not empty:
                    return bits, False
            elif name in ("SUBPATTERN", "ATOMIC_GROUP"):
                inner, empty = self.first(arg[-1])
                bits |= inner
                if not empty:
                    return bits, False
            elif name == "BRANCH":
                any_empty = False
                for alternative in arg[1]:
                    inner, empty = self.first(alternative)
                    bits |= inner
                    any_empty = any_empty or empty
                if not any_empty:
                    return bits, False
            elif name == "AT":
                continue
            else:  # backreferences, lookaround: anything
                return _ALL, True
        return bits, True

    def variable(self, items: Any) -> bool:
        """Whether a sequence contains a repeat of varying count or an alternation."""
        for op, arg in items:
            name = str(op)
            if name in ("MAX_REPEAT", "MIN_REPEAT") and (arg[0] != arg[1] or self.variable(arg[2])):
                return True
            if name == "BRANCH":
                return True
            if name in ("SUBPATTERN", "ATOMIC_GROUP") and self.variable(arg[-1]):
                return True
        return False

    def separated(self, body: Any) -> bool:
        """`([a-z0-9]+\\.)+`: every pass ends (or starts) with a character none of the
        varying parts can match, so the passes can be split only one way."""
        items = list(body)
        varying = [i for i, (op, arg) in enumerate(items) if self.variable([(op, arg)])]
        if not varying:
            return True
        inner = 0
        for i in varying:
            inner |= self.chars([items[i]])
        edges = items[varying[-1] + 1 :] + items[: varying[0]]
        for op, arg in edges:
            single = _chars(op, arg)
            if single is not None and not ((_fold(single) if self.ignorecase else single) & inner):
                return True
        return False

    def report(self, severity: int, problem: str) -> None:
        """Keep the worst problem: a backreference must not hide an exponential repeat."""
        if self.problem is None or severity > self.problem[0]:
            self.problem = (severity, problem)

    def walk(self, items: Any, repeated: bool) -> None:
        self.check_sequence(items)
        for op, arg in items:
            name = str(op)
            if name in ("GROUPREF", "GROUPREF_EXISTS"):
                self.report(BACKREFERENCE, "a backreference")
                if name == "GROUPREF_EXISTS":
                    for branch in arg[1:]:
                        if branch is not None:
                            self.walk(branch, repeated)
            elif name in ("MAX_REPEAT", "MIN_REPEAT"):
                body = _unwrap(arg[2])
                self.walk(body, repeated or arg[1] > 1)
                if arg[1] > 1:
                    self.check_repeat(body)
            elif name == "BRANCH":
                if repeated:
                    self.check_branch(arg[1])
                for alternative in arg[1]:
                    self.walk(alternative, repeated)
            elif name in ("SUBPATTERN", "ATOMIC_GROUP", "POSSESSIVE_REPEAT"):
                self.walk(arg[-1], repeated if name != "POSSESSIVE_REPEAT" else False)
            elif name in ("ASSERT", "ASSERT_NOT"):
                self.walk(arg[1], repeated)

    def check_repeat(self, body: Any) -> None:
        if self.first(body)[1]:
            self.report(
                EXPONENTIAL, "a repeated group that can match the empty string, as in '(a*)*'"
            )
        elif self.variable(body) and not self.separated(body):
            self.report(EXPONENTIAL, "nested quantifiers, as in '(a+)+'")

    def check_branch(self, alternatives: Any) -> None:
        seen, empties = 0, 0
        for alternative in alternatives:
            bits, empty = self.first(alternative)
            empties += empty
            if bits & seen or empties > 1:
                self.report(
                    EXPONENTIAL, "overlapping alternatives under a quantifier, as in '(a|a)*'"
                )
                return
            seen |= bits

    def flatten(self, items: Any) -> list[tuple[Any, Any]]:
        """A sequence with its plain groups spliced in: `(a*b)a*` is `a* b a*` here."""
        flat: list[tuple[Any, Any]] = []
        for op, arg in items:
            body = arg[-1] if str(op) == "SUBPATTERN" else None
            if body is not None and not any(str(o) == "BRANCH" for o, _ in body):
                flat.extend(self.flatten(body))
            else:
                flat.append((op, arg))
        return flat

    def item(self, op: Any, arg: Any) -> tuple[bool, bool, int, bool]:
        """How one item of a sequence backtracks: whether it can give back characters (a
        start of a polynomial run), whether trying it costs more than a step after each
        give-back (an end of one), the characters it can consume, and whether it can be empty."""
        name = str(op)
        single = _chars(op, arg)
        if single is not None:
            return False, False, _fold(single) if self.ignorecase else single, False
        if name == "AT":
            return False, False, 0, True
        if name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
            varies = (arg[0] != arg[1] or self.variable(arg[2])) and name != "POSSESSIVE_REPEAT"
            empty = arg[0] == 0 or self.first(arg[2])[1]
            return varies, varies, self.chars(arg[2]), empty
        if name in ("SUBPATTERN", "ATOMIC_GROUP", "BRANCH"):
            body = [(op, arg)] if name == "BRANCH" else arg[-1]
            varies = self.variable(body) and name != "ATOMIC_GROUP"
            return varies, varies, self.chars(body), self.first(body)[1]
        if name in ("ASSERT", "ASSERT_NOT"):
            # Zero-width, but a variable lookaround is re-run after every give-back.
            return False, self.variable(arg[1]), self.chars(arg[1]), True
        # Backreferences (a compare as long as the group), anything else: assume the worst.
        return name != "GROUPREF", True, _ALL, True

    def within(self, op: Any, arg: Any, run: int) -> bool:
        """Whether an item can take characters of `run` only (`(-[a-z]+)*` cannot, for a
        run of letters: each pass starts with '-'). Lookarounds and backreferences: yes."""
        name = str(op)
        if name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
            return self.within_all(arg[2], run)
        if name in ("SUBPATTERN", "ATOMIC_GROUP"):
            return self.within_all(arg[-1], run)
        if name == "BRANCH":
            return any(self.within_all(alternative, run) for alternative in arg[1])
        single = _chars(op, arg)
        if single is not None:
            return bool((_fold(single) if self.ignorecase else single) & run)
        return True

    def within_all(self, items: Any, run: int) -> bool:
        """A sequence: every part it cannot skip can take characters of `run`."""
        for op, arg in items:
            name = str(op)
            optional = name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT") and arg[0] == 0
            if not optional and name != "AT" and not self.within(op, arg, run):
                return False
        return True

    def check_sequence(self, items: Any) -> None:
        """`a*a*`, `\\d+0?\\d+`, `.*x.*`: two quantified items that can take the same
        characters, with nothing between them that stops a run of those characters. Each
        split of such a run is tried in turn: polynomial time, a degree per such item."""
        flat = self.flatten(items)
        parts = [self.item(op, arg) for op, arg in flat]
        for i, (starts, _, bits, _) in enumerate(parts):
            if not starts:
                continue
            run = bits
            for (op, arg), (_, ends, chars, empty) in zip(
                flat[i + 1 :], parts[i + 1 :], strict=True
            ):
                if ends and run & chars and self.within(op, arg, run):
                    self.report(
                        POLYNOMIAL,
                        "adjacent quantifiers that can match the same characters, as in 'a*a*'",
                    )
                    return
                if not empty:
                    run &= chars
                    if not run:
                        break


# How bad a problem is, worst last.
BACKREFERENCE, POLYNOMIAL, EXPONENTIAL = 1, 2, 3


def analyse(source: str, flags: int = 0) -> tuple[int, str] | None:
    """The worst thing in a pattern that can take a backtracking engine more than linear
    time (its severity and a description), or None."""
    try:
        tree = _parser.parse(source, flags)
    except Exception:  # the caller compiled it already; nothing more to say
        return None
    analysis = _Analysis(bool((tree.state.flags | flags) & re.IGNORECASE))
    analysis.walk(tree, False)
    return analysis.problem


def literal_runs(source: str) -> list[str]:
    """The runs of literal text in a pattern (`example.com` from `.*example\\.com`), in
    every branch and group: the operator's own names, for probing near misses."""
    try:
        tree = _parser.parse(source, 0)
    except Exception:
        return []
    runs: list[str] = []

    def visit(items: Any) -> None:
        run: list[str] = []
        for op, arg in items:
            name = str(op)
            if name == "LITERAL":
                run.append(chr(arg))
                continue
            runs.append("".join(run))
            run = []
            if name in (
                "MAX_REPEAT",
                "MIN_REPEAT",
                "POSSESSIVE_REPEAT",
                "ATOMIC_GROUP",
                "SUBPATTERN",
            ):
                visit(arg[-1])
            elif name == "BRANCH":
                for alternative in arg[1]:
                    visit(alternative)
        runs.append("".join(run))

    visit(tree)
    return [run for run in runs if run]
