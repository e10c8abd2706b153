"""The `corsproxy` command line."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click

from corsproxy import __version__
from corsproxy.commands import sources
from corsproxy.commands.probe_url import check_probe_url
from corsproxy.commands.serve_options import (
    check_probe_timeout,
    check_serve_options,
    serve_options,
    worker_count_of,
)
from corsproxy.commands.serve_usage import LogFormatCommand
from corsproxy.commands.sources import (
    DEMO_PLACEHOLDER_UPSTREAM,
    Duration,
    SourceOption,
    demo_policy,
    policy_sources,
)
from corsproxy.commands.suggest import suggest_command
from corsproxy.config import (
    Config,
    ConfigError,
    Override,
    json_schema,
    load_config,
    parse_config,
    read_config_text,
)
from corsproxy.config.spec import MAX_SHOWN, Diagnostic, shown
from corsproxy.ops import early_hup, event_loop
from corsproxy.ops.threads import exit_process
from corsproxy.policy.http_grammar import TOKEN

EXIT_BLOCKED = 1
EXIT_CONFIG = 2


def _load(
    config_path: str | None,
    strict: bool = False,
    overrides: Sequence[Override] = (),
    document: str | None = None,
    log: bool = False,
    warnings: bool = True,
) -> Config:
    """Load (or parse `document`, the file's text) or exit with every problem on stderr
    (never a traceback). `log`: through the log writer (`serve`: JSON lines in JSON mode);
    `warnings`: say the warnings (a worker's are the supervisor's, said once)."""

    def echo(line: str, level: int, diagnostic: Diagnostic | None = None) -> None:
        if not log:
            click.echo(line, err=True)
            return
        from corsproxy.ops.logs import say

        where: dict[str, Any] = {}
        if diagnostic is not None:
            where = diagnostic.fields()
        say(line, level, **where)

    try:
        if document is not None and config_path is not None:
            config = parse_config(document, config_path, None, overrides)
        else:
            config = load_config(config_path, overrides=overrides)
    except ConfigError as exc:
        for line, diagnostic in _shown(exc.diagnostics, excerpts=not log):
            warning = diagnostic is not None and diagnostic.warning
            echo(line, logging.WARNING if warning else logging.ERROR, diagnostic)
        count = len(exc.errors)
        where = config_path or "command line"
        echo(f"{where}: {count} error{'s' if count != 1 else ''}", logging.ERROR)
        sys.exit(EXIT_CONFIG)
    for line, diagnostic in _shown(config.warnings if warnings else (), excerpts=not log):
        echo(line, logging.WARNING, diagnostic)
    if strict and config.warnings:
        click.echo(f"{config_path or 'command line'}: warnings are errors with --strict", err=True)
        sys.exit(EXIT_CONFIG)
    return config


def _shown(
    diagnostics: Sequence[Diagnostic], excerpts: bool
) -> list[tuple[str, Diagnostic | None]]:
    """shown()'s lines, each with its diagnostic (None for an excerpt line and the "and N
    more" line). `excerpts`: a syntax error's line and caret follow it (for a terminal; a
    log line carries the column instead)."""
    lines: list[tuple[str, Diagnostic | None]] = []
    for diagnostic in diagnostics[:MAX_SHOWN]:
        lines.append((str(diagnostic), diagnostic))
        if excerpts and diagnostic.excerpt:
            lines.extend((line, None) for line in diagnostic.excerpt.splitlines())
    if len(diagnostics) > MAX_SHOWN:
        lines.append((f"... and {len(diagnostics) - MAX_SHOWN} more", None))
    return lines


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", "-V", prog_name="corsproxy")
def cli() -> None:
    """corsproxy: a reverse proxy that adds correct CORS to any HTTP API."""


@cli.command()
@policy_sources()
@serve_options()  # a serve command line with `serve` changed to `check` is checked whole
@click.option("--strict", is_flag=True, help="Treat warnings as errors.")
@click.pass_context
def check(ctx: click.Context, /, strict: bool, **_sources: Any) -> None:
    """Validate a configuration (exit 0 when valid, 2 with the errors).

    Reads the same sources as serve: --config (optional), the policy flags and their
    variables, or --demo; and serve's own options and their variables (--workers,
    CORSPROXY_LOG_FORMAT, ...), so exit 0 means serve will start with them.
    """
    check_serve_options(ctx)
    config_path = sources.config_path(ctx)
    config = _load(config_path, strict, overrides=sources.checked_overrides(ctx))
    routes = len(config.routes.routes)
    upstream = config.upstream or "none (routes only)"
    # The default policy is the route `/` of the start summary, the console and the logs.
    default = ", the default policy on /" if config.upstream else ""
    click.echo(
        f"{config_path or 'command line'}: OK: upstream {upstream}, "
        f"{routes} route{'s' if routes != 1 else ''}{default}"
        + (f", {len(config.warnings)} warning(s)" if config.warnings else "")
    )


def _parse_header(
    ctx: click.Context, param: click.Parameter, values: tuple[str, ...]
) -> list[tuple[str, str]]:
    headers: list[tuple[str, str]] = []
    for value in values:
        name, _, rest = value.partition(":")
        name = name.strip()
        if not TOKEN.match(name):
            raise click.BadParameter(f"'{value}' is not NAME or NAME:VALUE", ctx, param)
        headers.append((name, rest.strip(" \t")))  # fetch() strips only these (and CR, LF)
    return headers


@cli.command("explain")
@policy_sources(listeners=False)
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
    "--websocket",
    is_flag=True,
    help="A WebSocket handshake (new WebSocket(...)); also implied by a ws:// or wss:// --path.",
)
@click.option(
    "--proxy-origin",
    default="",
    help="The proxy's origin as the page addresses it, e.g. https://api.example.com (for "
    "WebSockets: cors: false routes and credentials; default: from a ws:// --path, else "
    "unknown).",
)
@click.option(
    "--browser",
    "engine",
    type=click.Choice(["chromium", "firefox", "webkit"]),
    default="chromium",
    show_default=True,
    help="The engine whose console messages, fetch() error and preflight cache to predict "
    "(Chromium: Chrome, Edge; Firefox; WebKit: Safari).",
)
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
)
@click.pass_context
def explain_command(
    ctx: click.Context,
    /,
    origin: str,
    method: str,
    path: str,
    headers: list[tuple[str, str]],
    credentials: bool,
    private_network: bool,
    websocket: bool,
    proxy_origin: str,
    engine: str,
    output_format: str,
    **_sources: Any,
) -> None:
    """Walk through what a browser does with one cross-origin request.

    Runs the proxy's own decision code. The policy comes from the same sources as serve's:
    --config (optional), the policy flags and their variables, or --demo. Exit 0 when the
    page could read the response, 1 when the browser would block it (in report-only mode:
    what enforce mode would do), 2 for a bad configuration.
    """
    from corsproxy.commands.explain import explain, rechecker, render_text, websocket_url

    config = _load_sources(ctx)
    url = websocket_url(path)
    if url is not None:  # the URL the page passes to new WebSocket()
        websocket = True
        path, proxy_origin = url[0], proxy_origin or url[1]
    if not path.startswith("/"):
        path = "/" + path
    result = explain(
        config,
        origin,
        method,
        path,
        headers,
        credentials,
        private_network,
        websocket=websocket,
        proxy_origin=proxy_origin,
        recheck=rechecker(sources.config_path(ctx), sources.checked_overrides(ctx)),
        engine=engine,
    )
    if output_format == "json":
        click.echo(json.dumps(result.to_json(), indent=2))
    else:
        click.echo(render_text(result), nl=False)
    sys.exit(0 if result.allowed else EXIT_BLOCKED)


def _load_sources(ctx: click.Context) -> Config:
    """The configuration `explain` and `config` read: serve's sources (commands/sources.py),
    with the demo policy over a placeholder upstream for --demo."""
    return _load(sources.config_path(ctx), overrides=sources.checked_overrides(ctx))


@cli.command(cls=LogFormatCommand)
@policy_sources()
@serve_options()
@click.pass_context
def serve(
    ctx: click.Context,
    /,
    log_format: str | None,
    log_level: str,
    shutdown_timeout: float,
    drain_delay: float,
    workers: str,
    use_uvloop: bool,
    demo: bool,
    **_sources: Any,
) -> None:
    """Run the proxy. Flags override the file; each flag has an environment variable.

    SIGHUP reloads the config (an invalid one is logged and the old one kept), and so does
    a change of a watched file with --watch; SIGTERM finishes requests in flight, then exits.
    """
    from corsproxy.ops import logs

    # Written by a thread; stopped (the queue written out) as the command ends, however.
    ctx.call_on_close(logs.configure(log_format, log_level).stop)
    _require_c_parser(logs.say)
    config_path = sources.config_path(ctx)  # else a mounted file, as in the container image
    overrides = sources.overrides(ctx)
    if demo:
        overrides += sources.demo_listen(overrides)
    from corsproxy.ops.workers import EXIT_MEMORY, SNAPSHOT_ENV, WORKER_ENV, supervise

    is_worker = os.environ.get(WORKER_ENV) == "1"
    # A worker starts from the supervisor's copy of the last file that loaded (workers.py).
    snapshot = os.environ.get(SNAPSHOT_ENV) if is_worker else None
    document = None
    if snapshot:
        try:
            document = Path(snapshot).read_text(encoding="utf-8")
        except OSError as exc:  # e.g. a /tmp cleaner removed it: read the file itself
            logs.say(
                f"corsproxy: no configuration snapshot ({exc}): reading the file", logging.WARNING
            )
    checked = overrides
    if demo:
        # The demo's upstream address is only known once it runs; check the rest now.
        demo_overrides = [
            Override(("upstream",), DEMO_PLACEHOLDER_UPSTREAM, "--demo"),
            *demo_policy(overrides),
        ]
        checked = [*overrides, *demo_overrides]
    loaded = _load(
        config_path, overrides=checked, document=document, log=True, warnings=not is_worker
    )
    count = worker_count_of(ctx)
    check_probe_timeout()
    runner = event_loop.choose(
        use_uvloop,
        ctx.get_parameter_source("use_uvloop") is not click.core.ParameterSource.DEFAULT,
        None if is_worker else logs.say,  # the supervisor says it once
    )
    if count > 1 and not is_worker:
        arguments = _worker_arguments(ctx)

        def read_config() -> tuple[str | None, Config]:
            text = read_config_text(config_path) if config_path is not None else None
            return text, parse_config(text, config_path or "command line", None, checked)

        from corsproxy.commands.listen_errors import (
            SOURCE_ENV,
            listen_source,
            refuse_held_listeners,
        )

        for key, variable in SOURCE_ENV.items():  # for a worker's bind error
            os.environ[variable] = listen_source(key, config_path, document, checked)
        refuse_held_listeners(loaded.listen, loaded.admin.listen if loaded.admin else None)
        from corsproxy.http.startup import log_changes, log_summary, probe_on_thread

        # With --demo each worker runs its own demo upstream: not the placeholder's address.
        placeholder = DEMO_PLACEHOLDER_UPSTREAM if demo else None

        def announce(old: Config | None, new: Config) -> None:  # once, not per worker
            if old is None:
                log_summary(new, placeholder)
                early_hup.replay()  # the supervisor's handler is in place now
            else:
                log_changes(old, new)
            probe_on_thread(new, old, skip=placeholder)

        exit_process(
            supervise(count, arguments, shutdown_timeout, read_config, loaded.watch, announce)
        )
    main = _serve(
        config_path,
        overrides,
        demo,
        shutdown_timeout=shutdown_timeout,
        drain_delay=drain_delay,
        reuse_port=is_worker,
        document=document,
        watch=loaded.watch and not is_worker,  # with workers, the supervisor watches
        announce=not is_worker,
        sources=(config_path, document),
    )
    exit_process(EXIT_MEMORY if runner(main) else 0)  # EXIT_MEMORY: the memory guard stopped it


def _worker_arguments(ctx: click.Context) -> list[str]:
    """The `serve` options given on the command line, as flags for a worker (those from the
    environment reach it through the environment; `--workers` is the supervisor's)."""
    arguments: list[str] = []
    for param in ctx.command.params:
        name = param.name
        if not isinstance(param, click.Option) or name is None or name == "workers":
            continue
        if ctx.get_parameter_source(name) is not click.core.ParameterSource.COMMANDLINE:
            continue
        value = ctx.params[name]
        flag = max(param.opts, key=len)  # the long spelling
        if param.is_flag:
            if value or param.secondary_opts:
                arguments.append(flag if value else max(param.secondary_opts, key=len))
        else:
            for one in value if param.multiple else (value,):
                arguments += [flag, str(one)]
    return arguments


def _require_c_parser(say: Callable[[str, int], None]) -> None:
    """Refuse to serve on aiohttp's pure-Python request parser: most of aiohttp's request
    smuggling advisories were in that parser only (AIOHTTP_NO_EXTENSIONS, or no wheel)."""
    from corsproxy.http.aiohttp_private import uses_c_parser

    if not uses_c_parser():
        say(
            "corsproxy: aiohttp's C parser is not in use (AIOHTTP_NO_EXTENSIONS is set, or "
            "aiohttp has no compiled wheel for this platform); refusing to serve with the "
            "pure-Python parser (unset AIOHTTP_NO_EXTENSIONS, or install aiohttp from a wheel)",
            logging.ERROR,
        )
        sys.exit(2)


async def _serve(
    config_path: str | None,
    overrides: list[Override],
    demo: bool,
    *,
    shutdown_timeout: float,
    drain_delay: float,
    reuse_port: bool,
    document: str | None = None,
    watch: bool = False,
    announce: bool = True,
    sources: tuple[str | None, str | None] = (None, None),
) -> bool:
    """Serve until stopped; True when the memory guard stopped it. `announce`: the summary
    line and the upstream probe (not a worker's: the supervisor's); `sources`: the file and
    its text, to say where a listener's address came from if it cannot bind."""
    from corsproxy.http.server import serve as run_server
    from corsproxy.http.server import tune_gc
    from corsproxy.http.startup import ListenFailed
    from corsproxy.ops.workers import WorkerLink, pinned

    demo_runner: Any = None
    if demo:
        from corsproxy.commands.demo import start_demo_upstream

        demo_runner, demo_url = await start_demo_upstream()
        overrides = [
            *overrides,
            Override(("upstream",), demo_url, "--demo"),
            *demo_policy(overrides),
        ]

    def loader() -> Config:
        return load_config(config_path, env=os.environ, overrides=overrides)

    if document is not None and config_path is not None:
        config = parse_config(document, config_path, os.environ, overrides)
    else:
        config = loader()
    config = pinned(config)  # a respawn binds what the supervisor started with
    stop = asyncio.Event()
    link = WorkerLink(config, stop.set)  # heartbeat and memory guard

    def ready(url: str) -> None:
        tune_gc()
        link.start()
        early_hup.replay()  # the server's SIGHUP handler is in place now
        if demo:
            _say_demo_banner(url)

    try:
        await run_server(
            config,
            loader,
            ready=ready,
            stop=stop,
            shutdown_timeout=shutdown_timeout,
            drain_delay=drain_delay,
            reuse_port=reuse_port,
            watch=watch,
            explainer=_explain_for_console,
            announce=announce,
        )
    except ListenFailed as failed:
        from corsproxy.commands.listen_errors import SOURCE_ENV, listen_source, report

        source = os.environ.get(SOURCE_ENV[failed.key]) if reuse_port else None
        report(failed, source or listen_source(failed.key, *sources, overrides), config.listen)
        raise SystemExit(1) from None
    finally:
        if demo_runner is not None:
            await demo_runner.cleanup()
    return link.retired


def _explain_for_console(config: Config, query: Any) -> dict[str, Any]:
    """commands/console.py's, imported on the console's first question: a worker without an
    admin listener never imports `explain`."""
    from corsproxy.commands.console import explain_for_console

    return explain_for_console(config, query)


def _say_demo_banner(url: str) -> None:
    """The banner as text; in JSON mode one object with the URL and the commands to try."""
    from corsproxy.commands.demo import DEMO_POLICY_ORIGINS
    from corsproxy.ops.logs import say

    text = _demo_banner(url)
    tries = [
        line.strip() for line in text.splitlines() if line.strip().startswith(("curl", "await"))
    ]
    say(
        f"corsproxy demo: {url} forwards to a built-in demo upstream",
        text=text,
        url=url,
        allowed_origins=list(DEMO_POLICY_ORIGINS),
        examples=tries,
        next=next(line for line in text.splitlines() if "Your first config" in line),
    )


def _demo_banner(url: str) -> str:
    preflight = "-X OPTIONS -H 'Access-Control-Request-Method: PUT'"
    return f"""
corsproxy demo: {url} forwards to a built-in demo upstream.
Allowed origins: http://localhost:* and http://127.0.0.1:* (any port). Try:

  curl -i -H 'Origin: http://localhost:3000' {url}/api/hello
  curl -i {preflight} -H 'Origin: http://localhost:3000' {url}/api/echo
  curl -i -H 'Origin: https://evil.example' {url}/api/hello    # no CORS headers

or, in the console of any page served from http://localhost:
  await (await fetch('{url}/api/hello')).json()

Next, your own API and policy: "Your first config" in the README.
Stop with Ctrl-C.
"""


@cli.command()
@click.option(
    "--url",
    callback=check_probe_url,
    help="The URL to probe (default: /healthz on CORSPROXY_ADMIN_LISTEN, else 127.0.0.1:9901).",
)
@click.option(
    "--timeout",
    cls=SourceOption,
    type=Duration(),
    default=2.0,
    show_default=True,
    help="How long to wait (seconds, or 500ms, 2s).",
)
@click.option(
    "--ca-file",
    envvar="CORSPROXY_HEALTHCHECK_CA_FILE",
    help="The admin listener has TLS (admin.tls): probe https, trusting this CA bundle (PEM). "
    "The default URL's certificate name is not checked (it is probed on its local address).",
)
def healthcheck(url: str | None, timeout: float, ca_file: str | None) -> None:
    """Probe the admin listener's /healthz: exit 0 when healthy, 1 otherwise.

    For container HEALTHCHECKs: images need no curl or wget.
    """
    context = None
    if ca_file is not None:
        import ssl

        try:
            context = ssl.create_default_context(cafile=ca_file)
        except (OSError, ssl.SSLError) as exc:
            click.echo(f"unhealthy: cannot load --ca-file '{ca_file}': {exc}", err=True)
            sys.exit(1)
    if url is None:
        host, port = sources.admin_probe_address()
        url = f"{'https' if context else 'http'}://{host}:{port}/healthz"
        if context is not None:
            context.check_hostname = False  # the chain is verified; the name is the public one
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as response:  # noqa: S310
            healthy = response.status == 200
    except (OSError, ValueError) as exc:
        click.echo(f"unhealthy: {url}: {_probe_error(exc)}", err=True)
        sys.exit(1)
    click.echo(f"{'healthy' if healthy else 'unhealthy'}: {url}")
    sys.exit(0 if healthy else 1)


@cli.command("config")
@policy_sources()
@serve_options()  # checked as serve checks them; not configuration keys, so not shown
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["yaml", "json"]),
    default="yaml",
    show_default=True,
)
@click.pass_context
def config_command(ctx: click.Context, /, output_format: str, **_sources: Any) -> None:
    """Print the effective configuration (as nginx -T, caddy adapt).

    The default policy and every route with its effective values, after defaults,
    inheritance, ${VAR} expansion, flags and variables (the same sources as serve). The
    output is itself a config that loads to the same policy. Exit 2 for a bad configuration.
    """
    from corsproxy.config.effective import effective_document, render

    check_serve_options(ctx)  # those that would stop serve: exit 2 as serve
    config_path = sources.config_path(ctx)
    overrides = sources.checked_overrides(ctx)
    _load(config_path, overrides=overrides)  # every problem on stderr, exit 2
    try:
        text = read_config_text(config_path) if config_path is not None else None
        document = effective_document(text, config_path or "command line", None, overrides)
    except ConfigError as exc:  # the file changed in between
        for line in shown(exc.diagnostics):
            click.echo(line, err=True)
        sys.exit(EXIT_CONFIG)
    if ctx.params.get("demo") and document.get("upstream") == DEMO_PLACEHOLDER_UPSTREAM:
        click.echo(
            f"corsproxy config: --demo: serve --demo starts its upstream on a free port; "
            f"shown as {DEMO_PLACEHOLDER_UPSTREAM}",
            err=True,
        )
    click.echo(render(document, output_format), nl=False)


def _probe_error(exc: BaseException) -> str:
    """A failed probe in plain words (`connection refused`, `HTTP 503 Service Unavailable`),
    as the access line says them, not urllib's nested repr."""
    import urllib.error

    from corsproxy.http.error_words import error_words

    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError) and isinstance(exc.reason, BaseException):
        return error_words(exc.reason)
    if isinstance(exc, urllib.error.URLError):
        return str(exc.reason)
    return error_words(exc)


@cli.command()
def schema() -> None:
    """Print the JSON Schema of the configuration (for editors)."""
    click.echo(json.dumps(json_schema(), indent=2))


cli.add_command(suggest_command)


def main() -> None:
    cli(prog_name="corsproxy")


if __name__ == "__main__":
    main()
