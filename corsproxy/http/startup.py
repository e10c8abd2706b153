"""What `serve` says about its configuration: the summary line at start, the upstreams probed
in the background (at start, and after a reload those it did not have), what a reload
changed, and a listener that cannot bind.

With `--workers` the supervisor says it once (the workers stay quiet): the summary and the
probe at start, the probe of new upstreams after a reload. The probe never delays or blocks
serving: one connection attempt per distinct upstream (scheme, host, port and TLS settings),
`PROBE_TIMEOUT` to connect and as long again for an https upstream's TLS handshake (with the
context its requests use), then closed; a failure is one warning naming the upstream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import ssl
import threading

import aiohappyeyeballs

from corsproxy.config import Config, Listen
from corsproxy.config.changes import changes
from corsproxy.config.summary import all_routes, summary, summary_text
from corsproxy.config.upstream_tls import UpstreamTLS, default_context
from corsproxy.http.connect import HAPPY_EYEBALLS_DELAY, tls_reason
from corsproxy.http.error_words import error_words
from corsproxy.ops import event_loop
from corsproxy.ops.logs import say
from corsproxy.policy.routes import Upstream

log = logging.getLogger("corsproxy")

PROBE_TIMEOUT = 1.0  # seconds to connect, and as long again for TLS
# Another value, for slow networks; 0 turns the probe off (an upstream that logs an empty
# connection as an error, or a test that counts the upstream's connections).
PROBE_TIMEOUT_ENV = "CORSPROXY_PROBE_TIMEOUT"


def probe_timeout() -> float:
    """Seconds per step; 0 when the probe is off."""
    try:
        seconds = float(os.environ.get(PROBE_TIMEOUT_ENV) or PROBE_TIMEOUT)
    except ValueError:
        return PROBE_TIMEOUT
    if seconds == 0:
        return 0.0
    return seconds if 0 < seconds < float("inf") else PROBE_TIMEOUT


class ListenFailed(SystemExit):
    """A listener could not bind: which (`listen` or `admin.listen`), where, and why. A
    SystemExit (status 1, its message on stderr) unless `serve` words it (commands/)."""

    def __init__(self, key: str, address: Listen, error: OSError) -> None:
        super().__init__(f"corsproxy: cannot listen: {error.strerror or error}")
        self.key = key
        self.address = address
        self.error = error


DEMO_UPSTREAM_WORDS = "the built-in demo upstream"


def log_summary(config: Config, demo_placeholder: str | None = None) -> None:
    """The one line that says what is loaded (config/summary.py). `demo_placeholder`: the
    upstream that stands for `serve --demo`'s (the supervisor's, with --workers: each worker
    runs its own demo upstream), said as such."""
    fields = summary(config)
    for route in fields["routes"]:
        if demo_placeholder is not None and route["upstream"] == demo_placeholder:
            route["upstream"] = DEMO_UPSTREAM_WORDS
    loop = event_loop.name()  # uvloop by default; asyncio's with --no-uvloop or without it
    text = f"{summary_text(fields)}; loop {loop}"
    say("configuration loaded", text=text, prefix=True, **fields, loop=loop)


def log_changes(old: Config, new: Config) -> None:
    """What a reload changed, one line each (or "no changes")."""
    for line in changes(old, new).lines():
        log.info("reload: %s", line)


def _key(upstream: Upstream) -> tuple[str, str, int, object]:
    return upstream.scheme, upstream.host, upstream.port, upstream.tls


def upstreams(config: Config) -> dict[tuple[str, str, int, object], Upstream]:
    """The distinct upstreams the configuration's routes forward to."""
    found: dict[tuple[str, str, int, object], Upstream] = {}
    for route in all_routes(config):
        if route.upstream is not None:
            found.setdefault(_key(route.upstream), route.upstream)
    return found


def _connect_error(exc: BaseException) -> str:
    """The access line's words (`connection refused`); a failed lookup also says the
    resolver's reason, which tells a typo from a DNS outage at start-up."""
    words = error_words(exc)
    if isinstance(exc, socket.gaierror) and exc.strerror:
        return f"{words} ({exc.strerror})"
    return words


def _label(upstream: Upstream) -> str:
    tls = upstream.tls if isinstance(upstream.tls, UpstreamTLS) else None
    if tls is not None and tls.server_name:
        return f"{upstream.origin} (server name {tls.server_name})"
    return upstream.origin


async def probe(upstream: Upstream, seconds: float | None = None) -> str | None:
    """Connect once (and shake hands, for https); None when it worked, else why not."""
    loop = asyncio.get_running_loop()
    seconds = seconds or probe_timeout()
    host = upstream.host.strip("[]")
    sock: socket.socket | None = None
    step = "connect"
    try:
        async with asyncio.timeout(seconds):
            infos = await loop.getaddrinfo(host, upstream.port, type=socket.SOCK_STREAM)
            sock = await aiohappyeyeballs.start_connection(
                infos, happy_eyeballs_delay=HAPPY_EYEBALLS_DELAY, interleave=1, loop=loop
            )
        if upstream.scheme != "https":
            return None
        tls = upstream.tls if isinstance(upstream.tls, UpstreamTLS) else None
        context = tls.context if tls is not None and tls.context else default_context()
        step = "TLS handshake"
        async with asyncio.timeout(seconds):
            transport, _ = await loop.create_connection(
                asyncio.Protocol,
                sock=sock,
                ssl=context,
                server_hostname=(tls.server_name if tls else None) or host,
            )
        sock = None  # the transport's now
        transport.close()
        return None
    except TimeoutError:
        return f"no {step} within {seconds:g} s"
    except ssl.SSLError as exc:  # before OSError: it is one
        return f"TLS handshake failed: {tls_reason(exc)}"
    except (OSError, RuntimeError, ValueError) as exc:
        if step != "connect":
            return f"TLS handshake failed: {tls_reason(exc)}"
        return _connect_error(exc)
    finally:
        if sock is not None:
            sock.close()


async def probe_upstreams(
    config: Config, previous: Config | None = None, skip: str | None = None
) -> None:
    """Probe each distinct upstream (not those `previous` had, nor `skip`, the demo's
    placeholder) at once; a warning for each failure as soon as it is known."""
    if probe_timeout() == 0:
        return
    known = upstreams(previous) if previous is not None else {}
    when = "at start" if previous is None else "after the reload"
    fresh = [u for key, u in upstreams(config).items() if key not in known and str(u) != skip]
    await asyncio.gather(*(_probe_and_say(u, when) for u in fresh), return_exceptions=True)


async def _probe_and_say(upstream: Upstream, when: str) -> None:
    error = await probe(upstream)
    if error is None:
        return
    label = _label(upstream)
    log.warning(
        "upstream %s is not reachable %s: %s (serving anyway: its requests fail until it answers)",
        label,
        when,
        error,
        extra={"fields": {"upstream": label, "error": error}},
    )


def probe_in_background(config: Config, previous: Config | None = None) -> asyncio.Task[None]:
    """On the running loop: a task nothing waits for (cancel it at shutdown)."""
    return asyncio.get_running_loop().create_task(probe_upstreams(config, previous))


def probe_on_thread(
    config: Config, previous: Config | None = None, skip: str | None = None
) -> None:
    """For the supervisor, which has no event loop: a daemon thread with its own."""

    def run() -> None:
        with contextlib.suppress(Exception):
            asyncio.run(probe_upstreams(config, previous, skip))

    threading.Thread(target=run, name="corsproxy-probe", daemon=True).start()
