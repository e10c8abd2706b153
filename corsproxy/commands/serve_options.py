"""`serve`'s own options (how it logs, stops and runs), not the configuration's: defined once
here, and taken by `check` and `config` too, which read their flags and variables as
`serve` will and refuse, with serve's words and exit status 2, a `--workers 0` or
`CORSPROXY_LOG_FORMAT=xml` that would stop `serve` (a serve command line with `serve`
changed to `check`, or a `docker run -e ...` line, is then checked whole)."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import Any, TypeVar

import click
from click.core import ParameterSource

from corsproxy.commands.sources import Boolean, Duration, SourceOption

F = TypeVar("F", bound=Callable[..., Any])

PROBE_TIMEOUT_ENV = "CORSPROXY_PROBE_TIMEOUT"  # read by http/startup.py: probe_timeout

_OPTIONS = (
    click.option(
        "--log-format",
        cls=SourceOption,
        type=click.Choice(["text", "json"]),
        envvar="CORSPROXY_LOG_FORMAT",
        show_envvar=True,
        help="Default: text on a terminal, JSON lines otherwise.",
    ),
    click.option(
        "--log-level",
        cls=SourceOption,
        type=click.Choice(["debug", "info", "warning", "error"]),
        default="info",
        envvar="CORSPROXY_LOG_LEVEL",
        show_envvar=True,
    ),
    click.option(
        "--shutdown-timeout",
        cls=SourceOption,
        type=Duration(zero_ok=True),
        default=30.0,
        show_default=True,
        envvar="CORSPROXY_SHUTDOWN_TIMEOUT",
        show_envvar=True,
        help="How long to let requests in flight finish on SIGTERM (seconds, or 30s, 2m).",
    ),
    click.option(
        "--drain-delay",
        cls=SourceOption,
        type=Duration(zero_ok=True),
        default=0.0,
        show_default=True,
        envvar="CORSPROXY_DRAIN_DELAY",
        show_envvar=True,
        help="On SIGTERM, answer /readyz 503 and keep serving this long first (seconds, or 5s).",
    ),
    click.option(
        "--workers",
        cls=SourceOption,
        default="1",
        show_default=True,
        envvar="CORSPROXY_WORKERS",
        show_envvar=True,
        help="Processes sharing the port (SO_REUSEPORT), or 'auto' for one per CPU.",
    ),
    click.option(
        "--uvloop/--no-uvloop",
        "use_uvloop",
        cls=SourceOption,
        type=Boolean(),
        default=True,
        show_default=True,
        envvar="CORSPROXY_UVLOOP",
        show_envvar=True,
        help="Use uvloop's event loop when it is installed.",
    ),
)


def serve_options() -> Callable[[F], F]:
    def decorate(function: F) -> F:
        for option in reversed(_OPTIONS):
            function = option(function)
        return function

    return decorate


def worker_count_of(ctx: click.Context) -> int:
    """--workers (or CORSPROXY_WORKERS) as a count; a usage error naming where it came from."""
    from corsproxy.ops.workers import worker_count

    try:
        return worker_count(ctx.params["workers"])
    except ValueError as exc:
        from_env = ctx.get_parameter_source("workers") is ParameterSource.ENVIRONMENT
        hint = "CORSPROXY_WORKERS" if from_env else "--workers"
        raise click.BadParameter(str(exc), param_hint=hint) from None


def check_probe_timeout() -> None:
    """CORSPROXY_PROBE_TIMEOUT, when set: seconds (a number, 0 turns the probe off)."""
    value = os.environ.get(PROBE_TIMEOUT_ENV, "").strip()
    if not value:
        return
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not (0 <= seconds < math.inf):
        raise click.BadParameter(
            f"'{value}' is not a number of seconds (write 1.5, or 0 to turn the probe off)",
            param_hint=PROBE_TIMEOUT_ENV,
        )


def check_serve_options(ctx: click.Context) -> None:
    """`serve`'s own options on `check` and `config` (flags, else variables), read as `serve`
    reads them: a usage error (exit 2) with serve's message for one that would stop it (the
    choices and durations are click's own, in the shared definitions above)."""
    worker_count_of(ctx)
    try:
        check_probe_timeout()
    except click.BadParameter as exc:
        raise click.UsageError(exc.format_message()) from None
