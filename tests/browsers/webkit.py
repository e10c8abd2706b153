"""The WebKit engine of the browser suite: WebKitGTK's MiniBrowser, without WebDriver.

Why no WebDriver: only a MiniBrowser run standalone with
`--enable-write-console-messages-to-stdout=true` writes WebKit's console, and so its CORS
messages, to stdout (in WebDriver's automation mode they are lost, and WebKitWebDriver has no
BiDi). So the driver controls pages itself:

- one Xvfb per `Engine` (`-displayfd`: a free display, no TCP);
- one MiniBrowser process per `Tab` with its own, new HOME/XDG dirs (a fresh browsing
  context; not `--private`, which silences the console), in its own process group, killed
  with it;
- the tab opens the suite's tab page (engine.py `TAB_PATH`, tests/browsers/tab.html) on the
  page origin, which long-polls a control server this module runs on 127.0.0.1 for scripts
  and posts their results back;
- a thread reads the MiniBrowser's output (WebKitGTK 2.50 writes the console to stderr):
  `CONSOLE SECURITY ERROR <why>` followed by
  `CONSOLE JS ERROR Fetch API cannot load <URL> due to access control checks.` (or
  XMLHttpRequest / EventSource) becomes `CorsError("", <why>, <URL>)`.
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import concurrent.futures
import contextlib
import glob
import itertools
import json
import os
import re
import select
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import weakref
from pathlib import Path
from typing import Any
from urllib.parse import quote

from aiohttp import web

from tests.browsers.engine import TAB_PATH, CorsError, ScriptError

NAME = "webkit"
# Where distributions put WebKitGTK's MiniBrowser (Debian/Ubuntu multiarch, Fedora, Arch).
MINIBROWSER_GLOBS = (
    "/usr/lib/*/webkit2gtk-4.1/MiniBrowser",
    "/usr/lib/*/webkit2gtk-4.0/MiniBrowser",
    "/usr/libexec/webkit2gtk-4.1/MiniBrowser",
    "/usr/libexec/webkit2gtk-4.0/MiniBrowser",
    "/usr/lib/webkit2gtk-4.1/MiniBrowser",
    "/usr/lib/webkit2gtk-4.0/MiniBrowser",
)
INSTALL = (
    "install WebKitGTK's MiniBrowser and Xvfb: `apt-get install --no-install-recommends "
    "webkit2gtk-driver xvfb xauth` (Debian/Ubuntu; MiniBrowser comes with libwebkit2gtk-4.1-0)"
)

# MiniBrowser's default, said out loud: a third-party fetch neither stores nor sends cookies
# (measured: not even `SameSite=None`), as in Safari, which blocks third-party cookies.
COOKIES_POLICY = "no-third-party"
START_TIMEOUT = 20.0  # Xvfb ready, MiniBrowser's version, a tab page polling
POLL_HOLD = 20.0  # how long the control server holds a long poll with nothing to send
QUIET = 0.5  # cors_errors(): no output line for this long means the engine went quiet
QUIET_BOUND = 5.0  # ... but never wait longer than this

CONSOLE = re.compile(r"CONSOLE (SECURITY|JS) ERROR (.*)$")
BLOCKED = re.compile(
    r"^(?:Fetch API|XMLHttpRequest|EventSource) cannot load (\S+) due to access control checks"
)
ABOUT_CORS = re.compile(r"access[- ]control|cross-origin|preflight|\bCORS\b", re.IGNORECASE)


def minibrowser() -> str | None:
    for pattern in MINIBROWSER_GLOBS:
        for path in sorted(glob.glob(pattern)):
            if os.access(path, os.X_OK):
                return path
    return None


def missing() -> str | None:
    absent = []
    if minibrowser() is None:
        absent.append(f"no MiniBrowser (looked for {', '.join(MINIBROWSER_GLOBS)})")
    if shutil.which("Xvfb") is None:
        absent.append("no Xvfb on PATH")
    if not absent:
        return None
    return "; ".join(absent) + f": {INSTALL}"


# Engines not closed yet: closed at exit, so an interrupted run leaves no browser behind.
_RUNNING: weakref.WeakSet[WebKit] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    for engine in list(_RUNNING):
        engine.close()


def launch() -> WebKit:
    return WebKit()


def _kill_group(process: subprocess.Popen[bytes], grace: float = 3.0) -> None:
    """End `process` and everything it started (its own session), bounded."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(grace)
    # Children (WebKit's web and network processes) may outlive their parent: sweep the group.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(grace)


def _tail(path: Path, limit: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-limit:]
    except OSError:
        return ""


class ConsoleParser:
    """WebKit's console lines -> `CorsError`s.

    A block is `CONSOLE SECURITY ERROR <why>` then `CONSOLE JS ERROR <API> cannot load <URL>
    due to access control checks.` (API: Fetch API, XMLHttpRequest, EventSource). Nothing
    about CORS is dropped: a "cannot load" line without a SECURITY ERROR before it, and a
    SECURITY or JS ERROR that mentions access control, are kept on their own."""

    def __init__(self) -> None:
        self.found: list[CorsError] = []
        self.security: str | None = None  # a SECURITY ERROR waiting for its JS ERROR

    def feed(self, line: str) -> None:
        console = CONSOLE.search(line)
        if console is None:
            return
        kind, text = console.groups()
        if kind == "SECURITY":
            self._flush()
            self.security = text
            return
        blocked = BLOCKED.match(text)
        if blocked is not None:
            message, self.security = (self.security or text), None
            self.found.append(CorsError(code="", message=message, url=blocked.group(1)))
            return
        self._flush()
        if ABOUT_CORS.search(text):
            self.found.append(CorsError(code="", message=text, url=None))

    def errors(self) -> list[CorsError]:
        """What was found so far (a SECURITY ERROR still waiting is settled first)."""
        self._flush()
        return list(self.found)

    def _flush(self) -> None:
        if self.security is not None and ABOUT_CORS.search(self.security):
            self.found.append(CorsError(code="", message=self.security, url=None))
        self.security = None


class _Channel:
    """One tab's side of the control server: scripts to send, results awaited."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[str] = asyncio.Queue()  # JSON commands
        self.pending: dict[int, concurrent.futures.Future[dict[str, Any]]] = {}
        self.ready = threading.Event()


class _Control:
    """The control server the tab pages poll: aiohttp on 127.0.0.1, on its own thread loop.

    Every answer carries `Access-Control-Allow-Origin: *` (the tab page is on another origin
    and must read it without a console message); results arrive as text/plain (no preflight).
    """

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.channels: dict[str, _Channel] = {}
        self.runner: web.AppRunner | None = None
        self.url = ""

    def start(self) -> None:
        self.thread.start()
        future = asyncio.run_coroutine_threadsafe(self._start(), self.loop)
        self.url = future.result(START_TIMEOUT)

    async def _start(self) -> str:
        @web.middleware
        async def allow_any_origin(request: web.Request, handler: Any) -> web.StreamResponse:
            response: web.StreamResponse = await handler(request)
            response.headers["Access-Control-Allow-Origin"] = "*"
            response.headers["Cache-Control"] = "no-store"
            return response

        app = web.Application(middlewares=[allow_any_origin])
        app.router.add_get("/poll", self._poll)
        app.router.add_post("/result", self._result)
        # handler_cancellation: a long poll whose page went away (closed, navigated) is
        # cancelled, so it does not take a script off the queue for nobody.
        self.runner = web.AppRunner(
            app, access_log=None, shutdown_timeout=1, handler_cancellation=True
        )
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return f"http://127.0.0.1:{port}"

    def channel(self, tab: str) -> _Channel:
        """Created on the loop's thread (asyncio.Queue binds to the running loop)."""

        async def make() -> _Channel:
            return self.channels.setdefault(tab, _Channel())

        return asyncio.run_coroutine_threadsafe(make(), self.loop).result(START_TIMEOUT)

    def drop(self, tab: str) -> None:
        channel = self.channels.pop(tab, None)
        if channel is not None:
            for future in channel.pending.values():
                future.cancel()

    def send(self, tab: str, command: str) -> None:
        channel = self.channels.get(tab)
        if channel is None:
            raise RuntimeError(f"webkit: tab {tab} is closed")
        self.loop.call_soon_threadsafe(channel.queue.put_nowait, command)

    async def _poll(self, request: web.Request) -> web.Response:
        channel = self.channels.get(request.query.get("tab", ""))
        if channel is None:
            return web.Response(status=404, text="no such tab")
        channel.ready.set()
        try:
            first = await asyncio.wait_for(channel.queue.get(), POLL_HOLD)
        except TimeoutError:
            return web.json_response([])
        commands = [first]
        while not channel.queue.empty():
            commands.append(channel.queue.get_nowait())
        return web.Response(text=f"[{','.join(commands)}]", content_type="application/json")

    async def _result(self, request: web.Request) -> web.Response:
        channel = self.channels.get(request.query.get("tab", ""))
        if channel is None:
            return web.Response(status=404, text="no such tab")
        try:
            result = json.loads(await request.text())
            future = channel.pending.pop(int(result["id"]))
        except (ValueError, KeyError, TypeError):
            return web.Response(status=400, text="not a result")
        if not future.done():
            future.set_result(result)
        return web.Response(status=204)

    def stop(self) -> None:
        async def cleanup() -> None:
            if self.runner is not None:
                await self.runner.cleanup()
            # Long polls of tabs already gone (aiohttp does not cancel a handler whose client
            # left): end them here, so no task outlives the loop.
            others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in others:
                task.cancel()
            await asyncio.gather(*others, return_exceptions=True)

        if self.thread.is_alive():
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(cleanup(), self.loop).result(10)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)
        if not self.loop.is_running():
            self.loop.close()


class WebKitTab:
    """One MiniBrowser process showing the tab page on `origin`."""

    engine = NAME

    def __init__(self, owner: WebKit, origin: str, number: int) -> None:
        self.owner = owner
        self.origin = origin.rstrip("/")
        self.key = str(number)
        self.ids = itertools.count(1)
        self.lock = threading.Lock()
        self.parser = ConsoleParser()
        self.lines: collections.deque[str] = collections.deque(maxlen=200)
        self.last_line = time.monotonic()
        self.home = Path(tempfile.mkdtemp(prefix=f"corsproxy-webkit-tab{number}-"))
        self.channel = owner.control.channel(self.key)
        url = f"{self.origin}{TAB_PATH}?control={quote(owner.control.url, safe='')}&tab={self.key}"
        env = dict(owner.env)
        env.update(
            HOME=str(self.home),
            XDG_CONFIG_HOME=str(self.home / "config"),
            XDG_DATA_HOME=str(self.home / "data"),
            XDG_CACHE_HOME=str(self.home / "cache"),
        )
        command = [
            # Not --private: MiniBrowser then ignores the settings given on its command line
            # (the console stays silent). The fresh HOME/XDG dirs make the context fresh.
            owner.binary,
            "--enable-write-console-messages-to-stdout=true",
            f"--cookies-policy={COOKIES_POLICY}",
            url,
        ]
        # WebKitGTK 2.50 writes the console to stderr, despite the setting's name (and
        # unbuffered); stdout joins it, in order.
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        deadline = time.monotonic() + START_TIMEOUT
        while not self.channel.ready.wait(0.1):
            if self.process.poll() is not None or time.monotonic() > deadline:
                why = (
                    f"exited with {self.process.returncode}"
                    if self.process.poll() is not None
                    else f"did not load {url} within {START_TIMEOUT:.0f} s (does the page "
                    "server serve the tab page? engine.add_tab_page)"
                )
                self.close()
                raise RuntimeError(f"MiniBrowser {why}; its output: {self._output()}")

    # -- output --------------------------------------------------------------------------

    def _read(self) -> None:
        assert self.process.stdout is not None
        with self.process.stdout as out:
            for raw in out:
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                with self.lock:
                    self.lines.append(line)
                    self.last_line = time.monotonic()
                    self.parser.feed(line)

    # -- Tab -----------------------------------------------------------------------------

    def evaluate(self, script: str, arg: Any = None, timeout: float = 15.0) -> Any:
        command_id = next(self.ids)
        # Serialized here, so an `arg` that is not JSON fails in the caller, not in the server.
        command = json.dumps({"id": command_id, "src": script, "arg": arg})
        future: concurrent.futures.Future[dict[str, Any]] = concurrent.futures.Future()
        self.channel.pending[command_id] = future
        self.owner.control.send(self.key, command)
        deadline = time.monotonic() + timeout
        while True:
            try:
                result = future.result(min(0.25, max(0.0, deadline - time.monotonic())))
                break
            except concurrent.futures.CancelledError:
                raise RuntimeError(f"webkit: tab {self.key} was closed") from None
            except concurrent.futures.TimeoutError:
                if self.process.poll() is not None:
                    self.channel.pending.pop(command_id, None)
                    raise RuntimeError(
                        f"MiniBrowser exited with {self.process.returncode}; "
                        f"its output: {self._output()}"
                    ) from None
                if time.monotonic() >= deadline:
                    self.channel.pending.pop(command_id, None)
                    raise TimeoutError(
                        f"webkit: the script did not settle within {timeout} s"
                    ) from None
        if "error" in result:
            raise ScriptError(str(result["error"]))
        return result.get("value")

    def cors_errors(self) -> list[CorsError]:
        start = time.monotonic()
        while time.monotonic() - start < QUIET_BOUND:
            with self.lock:
                quiet = time.monotonic() - self.last_line
            if quiet >= QUIET and time.monotonic() - start >= QUIET:
                break
            time.sleep(0.05)
        with self.lock:
            return self.parser.errors()

    def _output(self) -> str:
        with self.lock:
            return "\n".join(list(self.lines)[-40:])

    def console(self) -> list[str]:
        """The MiniBrowser's last 200 lines of output: for a test's failure message."""
        with self.lock:
            return list(self.lines)

    def close(self) -> None:
        _kill_group(self.process)
        self.reader.join(5)
        self.owner.control.drop(self.key)
        self.owner.tabs.discard(self)
        shutil.rmtree(self.home, ignore_errors=True)


class WebKit:
    """One Xvfb and one control server; a MiniBrowser per tab."""

    name = NAME

    def __init__(self) -> None:
        reason = missing()
        if reason is not None:
            raise RuntimeError(f"webkit: {reason}")
        binary = minibrowser()
        assert binary is not None
        self.binary = binary
        self.tabs: set[WebKitTab] = set()
        self.numbers = itertools.count(1)
        self.dir = Path(tempfile.mkdtemp(prefix="corsproxy-webkit-"))
        self.xvfb: subprocess.Popen[bytes] | None = None
        self.control = _Control()
        _RUNNING.add(self)
        try:
            display = self._start_xvfb()
            self.env = {
                **os.environ,
                "DISPLAY": display,
                "GDK_BACKEND": "x11",
                "NO_AT_BRIDGE": "1",  # no accessibility bus to look for
            }
            self.env.pop("WAYLAND_DISPLAY", None)
            self.version = self._version()
            self.control.start()
        except BaseException:
            self.close()
            raise

    def _start_xvfb(self) -> str:
        read_end, write_end = os.pipe()
        log = self.dir / "xvfb.log"
        try:
            with open(log, "wb") as stderr:
                self.xvfb = subprocess.Popen(
                    [
                        "Xvfb",
                        "-displayfd",
                        str(write_end),
                        "-nolisten",
                        "tcp",
                        "-screen",
                        "0",
                        "1280x1024x24",
                    ],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=stderr,
                    pass_fds=(write_end,),
                    start_new_session=True,
                )
            os.close(write_end)
            write_end = -1
            number = b""
            deadline = time.monotonic() + START_TIMEOUT
            while not number.endswith(b"\n"):
                left = deadline - time.monotonic()
                ready, _, _ = select.select([read_end], [], [], max(0.0, left))
                chunk = os.read(read_end, 64) if ready else b""
                if not chunk:
                    raise RuntimeError(
                        f"Xvfb did not start within {START_TIMEOUT:.0f} s: {_tail(log)}"
                    )
                number += chunk
            return f":{int(number)}"
        finally:
            os.close(read_end)
            if write_end >= 0:
                os.close(write_end)

    def _version(self) -> str:
        done = subprocess.run(
            [self.binary, "--version"],
            env=self.env,
            capture_output=True,
            timeout=START_TIMEOUT,
            check=False,
        )
        text = done.stdout.decode(errors="replace").strip()
        if done.returncode != 0 or not text:
            raise RuntimeError(f"MiniBrowser --version failed: {done.stderr.decode()[-2000:]}")
        return text.removeprefix("WebKitGTK ").strip()

    def open(self, origin: str) -> WebKitTab:
        tab = WebKitTab(self, origin, next(self.numbers))
        self.tabs.add(tab)
        return tab

    def close(self) -> None:
        _RUNNING.discard(self)
        for tab in list(self.tabs):
            tab.close()
        self.control.stop()
        if self.xvfb is not None:
            _kill_group(self.xvfb)
        shutil.rmtree(self.dir, ignore_errors=True)
