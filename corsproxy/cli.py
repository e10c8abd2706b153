"""The `corsproxy` command line."""

from __future__ import annotations

import json
import sys

import click

from corsproxy import __version__
from corsproxy.config import Config, ConfigError, json_schema, load_config
from corsproxy.explain import explain, render_text

EXIT_BLOCKED = 1
EXIT_CONFIG = 2

config_option = click.option(
    "--config",
    "-c",
    "config_path",
    required=True,
    envvar="CORSPROXY_CONFIG",
    show_envvar=True,
    type=click.Path(dir_okay=False),
    help="The YAML configuration file.",
)


def _load(config_path: str, strict: bool = False) -> Config:
    """Load or exit with every problem on stderr (never a traceback)."""
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        for diagnostic in exc.diagnostics:
            click.echo(str(diagnostic), err=True)
        count = len(exc.errors)
        click.echo(f"{config_path}: {count} error{'s' if count != 1 else ''}", err=True)
        sys.exit(EXIT_CONFIG)
    for warning in config.warnings:
        click.echo(str(warning), err=True)
    if strict and config.warnings:
        click.echo(f"{config_path}: warnings are errors with --strict", err=True)
        sys.exit(EXIT_CONFIG)
    return config


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", "-V", prog_name="corsproxy")
def cli() -> None:
    """corsproxy: a reverse proxy that adds correct CORS to any HTTP API."""


@cli.command()
@config_option
@click.option("--strict", is_flag=True, help="Treat warnings as errors.")
def check(config_path: str, strict: bool) -> None:
    """Validate a configuration file (exit 0 when valid, 2 with the errors)."""
    config = _load(config_path, strict)
    routes = len(config.routes.routes)
    upstream = config.upstream or "none (routes only)"
    click.echo(
        f"{config_path}: OK: upstream {upstream}, {routes} route{'s' if routes != 1 else ''}"
        + (f", {len(config.warnings)} warning(s)" if config.warnings else "")
    )


def _parse_header(
    ctx: click.Context, param: click.Parameter, values: tuple[str, ...]
) -> list[tuple[str, str]]:
    headers: list[tuple[str, str]] = []
    for value in values:
        name, _, rest = value.partition(":")
        name = name.strip()
        if not name or any(c in name for c in ' \t()<>@,;\\"/[]?={}'):
            raise click.BadParameter(f"'{value}' is not NAME or NAME:VALUE", ctx, param)
        headers.append((name, rest.strip()))
    return headers


@cli.command("explain")
@config_option
@click.option("--origin", required=True, help="The page's origin, e.g. https://app.example.com.")
@click.option("--method", "-X", default="GET", show_default=True, help="The fetch() method.")
@click.option("--path", default="/", show_default=True, help="The path (and query) requested.")
@click.option(
    "--header",
    "-H",
    "headers",
    multiple=True,
    callback=_parse_header,
    help="A request header the page sets, NAME or NAME:VALUE (repeatable).",
)
@click.option("--credentials", is_flag=True, help="fetch() with credentials: 'include'.")
@click.option(
    "--private-network", is_flag=True, help="A Private Network Access request (legacy Chrome)."
)
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
)
def explain_command(
    config_path: str,
    origin: str,
    method: str,
    path: str,
    headers: list[tuple[str, str]],
    credentials: bool,
    private_network: bool,
    output_format: str,
) -> None:
    """Walk through what a browser does with one cross-origin request.

    Runs the proxy's own decision code. Exit 0 when the page could read the response,
    1 when the browser would block it, 2 for a bad configuration.
    """
    config = _load(config_path)
    if not path.startswith("/"):
        path = "/" + path
    result = explain(config, origin, method, path, headers, credentials, private_network)
    if output_format == "json":
        click.echo(json.dumps(result.to_json(), indent=2))
    else:
        click.echo(render_text(result), nl=False)
    sys.exit(0 if result.allowed else EXIT_BLOCKED)


@cli.command()
def schema() -> None:
    """Print the JSON Schema of the configuration (for editors)."""
    click.echo(json.dumps(json_schema(), indent=2))


def main() -> None:
    cli(prog_name="corsproxy")


if __name__ == "__main__":
    main()
