"""Where a configuration comes from: the file, the policy flags and their `CORSPROXY_*`
variables, and the demo policy, defined once for `serve`, `explain` and `config`.

Each flag overrides one config key and has one environment variable; a value from either is
spliced into the document as an `Override` named by the flag or the variable, so it gets the
file's checks and messages that point at it (`CORSPROXY_MODE: cors.mode: ...`). A value click
itself cannot read (`--max-age abc`, `CORSPROXY_ALLOW_CREDENTIALS=maybe`) is a usage error
naming the flag or the variable too.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import click
from click.core import ParameterSource

from corsproxy.config import Override, parse_listen
from corsproxy.config.spec import SpecError, parse_duration

DEFAULT_CONFIG = "/etc/corsproxy/config.yaml"
ADMIN_LISTEN_ENV = "CORSPROXY_ADMIN_LISTEN"
# `serve --demo` starts its upstream on a port known only then; elsewhere this stands in.
DEMO_PLACEHOLDER_UPSTREAM = "http://127.0.0.1:1"

F = TypeVar("F", bound=Callable[..., Any])

if TYPE_CHECKING:  # generic from click 8.4 on; click>=8.1 is supported
    _SecondsType = click.ParamType[float]
else:
    _SecondsType = click.ParamType


class SourceOption(click.Option):
    """An option whose errors name where the bad value came from: the flag as typed, or the
    environment variable when the value came from there."""

    def get_error_hint(self, ctx: click.Context | None) -> str:
        name = self.name
        if (
            ctx is not None
            and name is not None
            and isinstance(self.envvar, str)
            and ctx.get_parameter_source(name) is click.core.ParameterSource.ENVIRONMENT
        ):
            return self.envvar
        return max(self.opts, key=len)

    def resolve_envvar_value(self, ctx: click.Context) -> str | None:
        """An empty variable (or one of blanks only) is unset, whatever its kind."""
        value = super().resolve_envvar_value(ctx)
        return value if value is not None and value.strip() else None


class Boolean(click.types.BoolParamType):
    """A boolean flag's variable: true/false, 1/0, yes/no, on/off (any case)."""

    STATES: ClassVar[dict[str, bool]] = {"true": True, "1": True, "yes": True, "on": True}
    STATES |= {"false": False, "0": False, "no": False, "off": False}

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> bool:
        # Exactly these (click's BOOL also takes t, f, y and n).
        normalized = (
            value if isinstance(value, bool) else self.STATES.get(str(value).strip().lower())
        )
        if normalized is None:
            self.fail(
                f"'{value}' is not true or false (true/false, 1/0, yes/no, on/off)", param, ctx
            )
        return normalized


class Duration(_SecondsType):
    """Seconds, written as the config file writes durations: `30`, `1.5`, `30s`, `500ms`,
    `2m`, `1h` (config/spec.py: parse_duration); `zero_ok` also admits 0 (none)."""

    name = "duration"

    def __init__(self, zero_ok: bool = False) -> None:
        self.zero_ok = zero_ok

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        text = str(value).strip()
        if self.zero_ok and re.fullmatch(r"0+(\.0+)?\s*(ms|s|m|h)?", text):
            return 0.0
        try:
            number = re.fullmatch(r"[0-9]+(\.[0-9]+)?", text)
            return parse_duration(float(text) if number else text)
        except SpecError as exc:
            hint = exc.hint or "seconds as a number, or a string like 500ms, 30s, 2m"
            self.fail(f"{exc.message} ({hint})", param, ctx)

    def get_metavar(self, param: click.Parameter, ctx: click.Context) -> str:
        return "DURATION"


def split_list(text: str) -> list[str]:
    """A comma list. In an item that starts with `regex:` a comma inside `[...]`, `{...}` or
    `(...)` does not split (`regex:https://[a,b]{1,20}\\.x` stays one origin); an escaped
    bracket (`\\[`) is no bracket, nor is one inside a class (`[(]`)."""
    items: list[str] = []
    start = depth = 0
    in_class = escaped = False
    regex = _starts_regex(text, 0)
    for i, char in enumerate(text):
        if escaped:
            escaped = False
        elif regex and char == "\\":
            escaped = True
        elif regex and in_class:
            in_class = char != "]"
        elif regex and char == "[":
            in_class = True
        elif regex and char in "({":
            depth += 1
        elif regex and char in ")}":
            depth = max(depth - 1, 0)
        elif char == "," and depth == 0:
            items.append(text[start:i])
            start, depth = i + 1, 0
            regex = _starts_regex(text, start)
    return [*items, text[start:]]


def _starts_regex(text: str, start: int) -> bool:
    while start < len(text) and text[start].isspace():
        start += 1
    return text.startswith("regex:", start)


class _Text(click.types.StringParamType):
    """A list flag's value; its variable splits at commas only (click's default splits at
    whitespace: `CORSPROXY_ALLOW_METHODS="GE T"` would pass as two methods), and not at a
    comma inside `{...}` (a regex origin's `{1,20}`)."""

    envvar_list_splitter = ","

    def split_envvar_value(self, rv: str) -> Sequence[str]:
        return split_list(rv or "")


def _split_commas(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> list[str]:
    """A repeated flag, each value (and the variable) also a comma list; a value that starts
    with `regex:` is one origin, whole (its commas are the pattern's)."""
    return [
        v.strip()
        for value in values
        for v in ([value] if value.strip().startswith("regex:") else split_list(value))
        if v.strip()
    ]


@dataclass(frozen=True, slots=True)
class Source:
    """One flag that overrides one config key, with its environment variable."""

    param: str
    flag: str
    envvar: str
    path: tuple[str, ...]
    help: str
    kind: str = "text"  # text, list, bool or int
    metavar: str | None = None
    listener: bool = False  # where the proxy listens: not a policy (explain has no use for it)
    choices: tuple[str, ...] = ()  # offered by shell completion only: the config checks values

    def option(self) -> Callable[[F], F]:
        common: dict[str, Any] = {
            "cls": SourceOption,
            "envvar": self.envvar,
            "show_envvar": True,
            "help": self.help,
        }
        if self.kind == "bool":
            negative = "--no-" + self.flag.removeprefix("--")
            return click.option(
                f"{self.flag}/{negative}", self.param, type=Boolean(), default=None, **common
            )
        if self.kind == "list":
            return click.option(
                self.flag,
                self.param,
                multiple=True,
                type=_Text(),
                callback=_split_commas,
                metavar=self.metavar,
                **common,
            )
        # A number is read by the config's checks, as the file's is (`10m`: "write 600").
        return click.option(
            self.flag, self.param, type=str, metavar=self.metavar, **common,
            shell_complete=lambda _c, _p, typed: [c for c in self.choices if c.startswith(typed)],
        )  # fmt: skip


def _list_help(what: str, key: str) -> str:
    return f"{what} (repeatable; the variable takes a comma list; overrides {key})."


# Every flag that overrides the file: the README's flags table lists each one.
SOURCES = (
    Source("listen", "--listen", "CORSPROXY_LISTEN", ("listen",),
           "HOST:PORT, or :PORT / PORT for all interfaces (0.0.0.0).", metavar="HOST:PORT",
           listener=True),
    Source("admin_listen", "--admin-listen", "CORSPROXY_ADMIN_LISTEN", ("admin", "listen"),
           "HOST:PORT (or :PORT) of the console (/), /healthz, /readyz and /metrics.",
           metavar="HOST:PORT",
           listener=True),
    Source("upstream", "--upstream", "CORSPROXY_UPSTREAM", ("upstream",), "Upstream URL.",
           metavar="URL"),
    Source("allow_origins", "--allow-origin", "CORSPROXY_ALLOW_ORIGINS",
           ("cors", "allow_origins"), _list_help("An allowed origin", "cors.allow_origins"),
           kind="list", metavar="ORIGIN"),
    Source("allow_credentials", "--allow-credentials", "CORSPROXY_ALLOW_CREDENTIALS",
           ("cors", "allow_credentials"), "Allow cookies and HTTP authentication.",
           kind="bool"),
    Source("allow_insecure_origins", "--allow-insecure-origins",
           "CORSPROXY_ALLOW_INSECURE_ORIGINS", ("cors", "allow_insecure_origins"),
           "Allow plain-http origins other than loopback with credentials (overrides "
           "cors.allow_insecure_origins).", kind="bool"),
    Source("allow_methods", "--allow-method", "CORSPROXY_ALLOW_METHODS",
           ("cors", "allow_methods"),
           _list_help("A method a preflight may approve, or '*'", "cors.allow_methods"),
           kind="list", metavar="METHOD"),
    Source("allow_headers", "--allow-header", "CORSPROXY_ALLOW_HEADERS",
           ("cors", "allow_headers"),
           _list_help("A request header a preflight may approve, or '*'", "cors.allow_headers"),
           kind="list", metavar="HEADER"),
    Source("expose_headers", "--expose-header", "CORSPROXY_EXPOSE_HEADERS",
           ("cors", "expose_headers"),
           _list_help("A response header scripts may read, or '*'", "cors.expose_headers"),
           kind="list", metavar="HEADER"),
    Source("max_age", "--max-age", "CORSPROXY_MAX_AGE", ("cors", "max_age"),
           "Seconds browsers may cache a preflight (overrides cors.max_age).", kind="int",
           metavar="SECONDS"),
    Source("allow_private_network", "--allow-private-network",
           "CORSPROXY_ALLOW_PRIVATE_NETWORK", ("cors", "allow_private_network"),
           "Answer Private Network Access preflights (overrides cors.allow_private_network).",
           kind="bool"),
    Source("mode", "--mode", "CORSPROXY_MODE", ("cors", "mode"),
           "enforce or report-only (overrides cors.mode).", metavar="enforce|report-only",
           choices=("enforce", "report-only")),
    Source("on_disallowed", "--on-disallowed", "CORSPROXY_ON_DISALLOWED",
           ("cors", "on_disallowed"),
           "What a disallowed Origin gets: forward or reject (overrides cors.on_disallowed).",
           metavar="forward|reject", choices=("forward", "reject")),
    Source("preserve_host", "--preserve-host", "CORSPROXY_PRESERVE_HOST", ("preserve_host",),
           "Forward the client's Host header (overrides preserve_host).", kind="bool"),
    Source("watch", "--watch", "CORSPROXY_WATCH", ("watch",),
           "Reload when the config file or a file it names changes (config key: watch).",
           kind="bool", listener=True),
)  # fmt: skip


def config_option(required: bool = False) -> Callable[[F], F]:
    help_text = (
        "The YAML configuration file."
        if required
        else f"The YAML configuration file (default: {DEFAULT_CONFIG} when it exists; "
        "optional: flags alone describe a one-route proxy)."
    )
    return click.option(
        "--config",
        "-c",
        "config_path",
        required=required,
        envvar="CORSPROXY_CONFIG",
        show_envvar=True,
        type=click.Path(dir_okay=False),
        help=help_text,
    )


def policy_sources(listeners: bool = True, demo: bool = True) -> Callable[[F], F]:
    """The options of every configuration source: `--config`, each flag of SOURCES (those
    about listeners only with `listeners`), and `--demo`."""

    def decorate(function: F) -> F:
        if demo:
            function = click.option(
                "--demo", is_flag=True, help="The demo policy (serve: with its demo upstream)."
            )(function)
        for source in reversed(SOURCES):
            if listeners or not source.listener:
                function = source.option()(function)
        return config_option()(function)

    return decorate


def config_path(ctx: click.Context) -> str | None:
    """--config or CORSPROXY_CONFIG, else the image's mounted file when it exists."""
    path: str | None = ctx.params.get("config_path")
    if path is None and Path(DEFAULT_CONFIG).is_file():
        return DEFAULT_CONFIG
    return path


def overrides(ctx: click.Context) -> list[Override]:
    """The flags given, as config overrides, each named by where it came from (the flag or
    its environment variable), so config messages point there."""
    found: list[Override] = []
    for source in SOURCES:
        if source.param not in ctx.params:
            continue
        value = ctx.params[source.param]
        given = ctx.get_parameter_source(source.param)
        if value is None or given not in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT):
            continue  # an empty list given (`CORSPROXY_ALLOW_METHODS=,`) gets the file's checks
        from_env = given is ParameterSource.ENVIRONMENT
        name = source.envvar if from_env else source.flag
        if source.kind == "int":
            value = value.strip()
        # An origin cut apart is the surprise (a regex's comma): its messages say so.
        split = (
            from_env
            and source.param == "allow_origins"
            and len(split_list(os.environ.get(source.envvar, ""))) > 1
        )
        found.append(Override(source.path, value, name, plain=source.kind == "int", split=split))
    return found


def demo_policy(given: Sequence[Override]) -> list[Override]:
    """The demo's policy, under the flags given: a flag (or its variable) replaces the
    demo's value of its key (--allow-origin replaces the demo's origins)."""
    from corsproxy.commands.demo import DEMO_POLICY_ORIGINS

    named = {o.path for o in given}
    policy = [
        Override(("cors", "allow_methods"), ["GET", "HEAD", "POST", "PUT", "DELETE"], "--demo"),
        Override(("cors", "expose_headers"), ["X-Request-Id"], "--demo"),
        Override(("cors", "allow_origins"), DEMO_POLICY_ORIGINS, "--demo"),
    ]
    return [o for o in policy if o.path not in named]


DEMO_LISTEN = "127.0.0.1:8080"


def demo_listen(given: Sequence[Override]) -> list[Override]:
    """Where `serve --demo` listens unless --listen (or its variable) says: loopback only."""
    if any(o.path == ("listen",) for o in given):
        return []
    return [Override(("listen",), DEMO_LISTEN, "--demo")]


def checked_overrides(ctx: click.Context) -> list[Override]:
    """The overrides a configuration is loaded with outside `serve`: the flags, and with
    --demo the demo's listen address and policy over a placeholder upstream (a flag given
    wins over the demo)."""
    given = overrides(ctx)
    if not ctx.params.get("demo"):
        return given
    upstream = (
        []
        if any(o.path == ("upstream",) for o in given)
        else [Override(("upstream",), DEMO_PLACEHOLDER_UPSTREAM, "--demo")]
    )
    return [*demo_listen(given), *upstream, *demo_policy(given), *given]


def admin_probe_address() -> tuple[str, int]:
    """Where `healthcheck` finds the admin listener by default: CORSPROXY_ADMIN_LISTEN in
    any form `admin.listen` takes (`:9901`, `9901`, `[::]:9901`), a wildcard probed on
    loopback. A value that is no address is a usage error naming the variable."""
    value = os.environ.get(ADMIN_LISTEN_ENV) or "127.0.0.1:9901"
    try:
        listen = parse_listen(value)
    except SpecError as exc:
        hint = f" ({exc.hint})" if exc.hint else ""
        raise click.UsageError(f"{ADMIN_LISTEN_ENV}: {exc.message}{hint}") from None
    if listen.host == "0.0.0.0":  # noqa: S104 - a wildcard bind, probed on loopback
        return "127.0.0.1", listen.port
    if ":" in listen.host:
        return (
            "[::1]" if ipaddress.ip_address(listen.host).is_unspecified else f"[{listen.host}]"
        ), listen.port
    return listen.host, listen.port
