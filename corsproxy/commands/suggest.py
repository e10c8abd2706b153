"""`corsproxy suggest FILE`: the tightest allow-lists that would have allowed what the front
ends sent, from a JSON access log (ops/suggest.py does the folding)."""

from __future__ import annotations

import sys
from typing import TextIO

import click


@click.command("suggest")
@click.argument(
    "log_file", metavar="FILE", type=click.File("r", encoding="utf-8", errors="replace")
)
def suggest_command(log_file: TextIO) -> None:
    """Suggest cors: blocks per route from a JSON access log (FILE, or - for stdin).

    Reads the access lines of `serve --log-format json` (other lines are skipped) and prints,
    as YAML, one cors: block per route: the origins, methods and headers that requests with
    an Origin used, so that they all would have been allowed. Malformed origins and null are
    never suggested; they are listed as comments. Review before use: a refused origin may be
    a stranger's. Exit 1 when no line of FILE is JSON (a text-format log: said on stderr),
    2 when the file cannot be read.
    """
    # Here, not at the top: `serve` imports this module for the command line only.
    from corsproxy.http.aiohttp_private import parser_accepts_method
    from corsproxy.ops.suggest import LogStats, observations_from_log, render_yaml, suggest, visible

    stats = LogStats()
    name = "standard input" if log_file.name == "<stdin>" else visible(log_file.name)
    try:
        routes = suggest(observations_from_log(log_file, stats), parsable=parser_accepts_method)
    except OSError as exc:
        click.echo(f"corsproxy suggest: cannot read {name}: {exc.strerror or exc}", err=True)
        sys.exit(2)
    if stats.lines and not stats.json_lines:
        click.echo(
            f"corsproxy suggest: no JSON lines in {name} ({stats.lines} line(s)): suggest reads "
            "the JSON access log: run serve with --log-format json",
            err=True,
        )
        sys.exit(1)
    header = [
        "corsproxy suggest: the tightest allow-lists that would have allowed what was seen",
        f"(from {name}: {stats.lines} line(s), {stats.used} request(s) with an Origin on a "
        f"route, {stats.skipped} line(s) not access lines)",
    ]
    click.echo(render_yaml(routes, header), nl=False)
