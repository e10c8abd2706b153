"""`serve`'s usage errors in the log format: in JSON mode every line the process writes is
JSON, a bad flag or variable (`--max-age abc`, `CORSPROXY_WORKERS=0`, an unknown flag)
included. The format is read the way `serve` reads it, before its options are parsed:
`--log-format`, else CORSPROXY_LOG_FORMAT, else JSON when stderr is not a terminal. Exit
status 2 as click's; text mode is click's text, unchanged."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import click

LOG_FORMAT_ENV = "CORSPROXY_LOG_FORMAT"
FORMATS = ("text", "json")


def log_format_of(args: Sequence[str]) -> str:
    """ "json" or "text", as `serve` will resolve it (the last --log-format given wins)."""
    chosen: str | None = None
    for i, arg in enumerate(args):
        if arg == "--":
            break
        value = None
        if arg == "--log-format" and i + 1 < len(args):
            value = args[i + 1]
        elif arg.startswith("--log-format="):
            value = arg.partition("=")[2]
        if value in FORMATS:
            chosen = value
    if chosen is None and os.environ.get(LOG_FORMAT_ENV) in FORMATS:
        chosen = os.environ[LOG_FORMAT_ENV]
    if chosen is None:
        chosen = "text" if sys.stderr.isatty() else "json"
    return chosen


def _say_usage_error(
    error: click.ClickException, ctx: click.Context | None, logging_started: bool
) -> None:
    message = error.format_message()
    fields: dict[str, Any] = {"error": "usage"}
    if ctx is not None:
        fields["usage"] = ctx.get_usage()
        fields["hint"] = f"'{ctx.command_path} --help' lists the options"
    from corsproxy.ops import logs

    if logging_started:  # the command has begun: keep the line's place among the others
        logs.say(message, logging.ERROR, **fields)
        return
    now = time.time()
    line = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now))
        + f".{int(now * 1000) % 1000:03d}Z",
        "level": "error",
        "logger": "corsproxy",
        "message": message,
        **fields,
    }
    sys.stderr.write(json.dumps(line, separators=(",", ":")) + "\n")
    sys.stderr.flush()


class LogFormatCommand(click.Command):
    """A command whose usage errors are one JSON line in JSON mode."""

    _json = False

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        self._json = log_format_of(args) == "json"
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.ClickException as error:
            if not self._json:
                raise
            usage_ctx = getattr(error, "ctx", None)
            where = usage_ctx if isinstance(usage_ctx, click.Context) else None
            _say_usage_error(error, where, logging_started=False)
            sys.exit(error.exit_code)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.ClickException as error:
            if not getattr(self, "_json", False):
                raise
            _say_usage_error(error, ctx, logging_started=True)
            sys.exit(error.exit_code)
