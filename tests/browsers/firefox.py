"""The Firefox engine (tests/browsers/engine.py) over WebDriver BiDi.

`/usr/bin/firefox-esr`, headless, driven by puppeteer-core from a small node helper
(`firefox_driver.mjs`, one per Engine) that speaks line-delimited JSON on stdin/stdout. Each
tab is a fresh BiDi user context (`browser.createBrowserContext()`): its own cookies, HTTP
cache and preflight cache. Firefox's CORS messages are BiDi `log.entryAdded` entries ("Cross-
Origin Request Blocked: ... (Reason: ...)"); `CorsError.code` is the reason's MDN name, read
from the text with FIREFOX_REASONS (every CORS reason in Gecko's security.properties).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import IO, Any

from tests.browsers.engine import CorsError, ScriptError

HERE = Path(__file__).parent
HELPER = HERE / "firefox_driver.mjs"
PUPPETEER = HERE / "node_modules" / "puppeteer-core" / "package.json"
FIREFOX = os.environ.get("CORSPROXY_FIREFOX", "/usr/bin/firefox-esr")
LAUNCH_TIMEOUT = 90.0  # seconds; a launch takes 2-3 s on an idle machine
COMMAND_TIMEOUT = 45.0  # seconds for open/close/logs (evaluate: its own timeout + this)

# Firefox's CORS console messages (Gecko dom/locales/en-US/chrome/security/security.properties,
# keys CORS*), by the reason in "(Reason: ...)" with Firefox's quotes made plain; the codes
# are MDN's page names (CORSMIssingAllowCredentials is MDN's spelling, as `explain` uses it).
FIREFOX_REASONS: tuple[tuple[str, str], ...] = (
    ("CORSDisabled", r"CORS disabled"),
    ("CORSDidNotSucceed", r"CORS request did not succeed"),
    ("CORSOriginHeaderNotAdded", r"CORS header 'Origin' cannot be added"),
    ("CORSExternalRedirectNotAllowed", r"CORS request external redirect not allowed"),
    ("CORSRequestNotHttp", r"CORS request not http"),
    ("CORSMissingAllowOrigin", r"CORS header 'Access-Control-Allow-Origin' missing"),
    (
        "CORSMultipleAllowOriginNotAllowed",
        r"Multiple CORS header 'Access-Control-Allow-Origin' not allowed",
    ),
    (
        "CORSAllowOriginNotMatchingOrigin",
        r"CORS header 'Access-Control-Allow-Origin' does not match '.*'",
    ),
    (
        "CORSNotSupportingCredentials",
        r"Credential is not supported if the CORS header 'Access-Control-Allow-Origin' is '\*'",
    ),
    ("CORSMethodNotFound", r"Did not find method in CORS header 'Access-Control-Allow-Methods'"),
    (
        "CORSMIssingAllowCredentials",
        r"expected 'true' in CORS header 'Access-Control-Allow-Credentials'",
    ),
    ("CORSPreflightDidNotSucceed", r"CORS preflight response did not succeed"),
    ("CORSInvalidAllowMethod", r"invalid token '.*' in CORS header 'Access-Control-Allow-Methods'"),
    ("CORSInvalidAllowHeader", r"invalid token '.*' in CORS header 'Access-Control-Allow-Headers'"),
    (
        "CORSMissingAllowHeaderFromPreflight",
        r"header '.*' is not allowed according to header 'Access-Control-Allow-Headers' "
        r"from CORS preflight response",
    ),
    (
        "CORSAllowHeaderFromPreflightDeprecation",
        r"When the `Access-Control-Allow-Headers` is `\*`, the `Authorization` header is not "
        r"covered\..*",
    ),
)
_REASONS = tuple((code, re.compile(pattern, re.S)) for code, pattern in FIREFOX_REASONS)
_CORS_MESSAGE = re.compile(r"Cross-Origin Request (Blocked|Warning): ")
_REASON = re.compile(r"\(Reason: (.*?)\)\.?(?: Status code: .*)?$", re.S)
_URL = re.compile(r"remote resource at '?(\S+?)'?(?:\.| soon\.) \(Reason:")


def _plain(text: str) -> str:
    return text.replace("\u2018", "'").replace("\u2019", "'")


def cors_error(text: str) -> CorsError | None:
    """The CorsError of one Firefox console message, or None if it is not a CORS message.
    A CORS message whose reason is not in FIREFOX_REASONS gets code "unknown"."""
    if not _CORS_MESSAGE.match(text):
        return None
    plain = _plain(text)
    reason = _REASON.search(plain)
    code = "unknown"
    if reason is not None:
        code = next((c for c, rx in _REASONS if rx.fullmatch(reason.group(1))), "unknown")
    url = _URL.search(plain)
    return CorsError(code, text, url.group(1) if url else None)


def missing() -> str | None:
    if not os.access(FIREFOX, os.X_OK):
        return (
            f"{FIREFOX} not found: apt-get install firefox-esr "
            "(or set CORSPROXY_FIREFOX to a Firefox binary)"
        )
    if shutil.which("node") is None:
        return "node not found: apt-get install nodejs npm"
    if not PUPPETEER.is_file():
        return "puppeteer-core not installed: npm ci --prefix tests/browsers --no-audit --no-fund"
    return None


class FirefoxTab:
    engine = "firefox"

    def __init__(self, driver: FirefoxEngine, tab_id: int, origin: str) -> None:
        self._driver = driver
        self._id = tab_id
        self.origin = origin
        self._closed = False

    def evaluate(self, script: str, arg: Any = None, timeout: float = 15.0) -> Any:
        return self._driver.call(
            "evaluate",
            timeout + COMMAND_TIMEOUT,
            tab=self._id,
            script=script,
            arg=arg,
            timeout=timeout,
        )

    def cors_errors(self) -> list[CorsError]:
        texts: list[str] = self._driver.call(
            "logs", COMMAND_TIMEOUT, tab=self._id, quiet=0.3, max=3.0
        )
        return [e for e in (cors_error(t) for t in texts) if e is not None]

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._driver.call("close", COMMAND_TIMEOUT, tab=self._id)


class FirefoxEngine:
    name = "firefox"

    def __init__(self, executable: str = FIREFOX) -> None:
        self._profile = tempfile.mkdtemp(prefix="corsproxy-firefox-")
        self._stderr: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 (closed in _kill)
        self._proc = subprocess.Popen(
            ["node", str(HELPER), executable, self._profile],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            start_new_session=True,  # its own process group, killed whole at close
        )
        self._ids = itertools.count(1)
        self._pending: dict[int, Future[Any]] = {}
        self._lock = threading.Lock()
        self.browser_pid: int | None = None
        self._closed = False
        ready: Future[dict[str, Any]] = Future()
        self._reader = threading.Thread(target=self._read, args=(ready,), daemon=True)
        self._reader.start()
        try:
            hello = ready.result(LAUNCH_TIMEOUT)
        except FutureTimeout:
            self._kill()
            raise RuntimeError(
                f"Firefox did not start within {LAUNCH_TIMEOUT:.0f} s: {self._stderr_text()}"
            ) from None
        if not hello.get("ready"):
            self._kill()
            raise RuntimeError(f"Firefox did not start: {hello.get('error')}")
        self.browser_pid = hello.get("pid")
        self.version = str(hello.get("version"))

    def _stderr_text(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")[-4000:] or "(no stderr)"

    def _read(self, ready: Future[dict[str, Any]]) -> None:
        assert self._proc.stdout is not None
        for raw in self._proc.stdout:
            try:
                message = json.loads(raw)
            except ValueError:
                continue
            if "ready" in message:
                ready.set_result(message)
                continue
            with self._lock:
                future = self._pending.pop(message.get("id"), None)
            if future is not None:
                future.set_result(message)
        # The helper exited: fail whoever still waits.
        gone = {"ok": False, "kind": "driver", "message": "the Firefox driver exited"}
        if not ready.done():
            ready.set_result({"ready": False, "error": f"the driver exited: {self._stderr_text()}"})
        with self._lock:
            pending, self._pending = self._pending, {}
        for future in pending.values():
            future.set_result(gone)

    def call(self, cmd: str, wait: float, **args: Any) -> Any:
        future: Future[Any] = Future()
        with self._lock:
            ident = next(self._ids)
            self._pending[ident] = future
            line = json.dumps({"id": ident, "cmd": cmd, **args}) + "\n"
            assert self._proc.stdin is not None
            try:
                self._proc.stdin.write(line.encode())
                self._proc.stdin.flush()
            except (BrokenPipeError, ValueError):
                self._pending.pop(ident, None)
                raise RuntimeError(f"the Firefox driver is gone: {self._stderr_text()}") from None
        try:
            reply = future.result(wait)
        except FutureTimeout:
            with self._lock:
                self._pending.pop(ident, None)
            raise TimeoutError(f"Firefox driver: no answer to {cmd} within {wait:.0f} s") from None
        if reply.get("ok"):
            return reply.get("result")
        kind, message = reply.get("kind"), str(reply.get("message"))
        if kind == "script":
            raise ScriptError(message)
        if kind == "timeout":
            raise TimeoutError(message)
        raise RuntimeError(f"Firefox driver: {cmd}: {message}")

    def open(self, origin: str) -> FirefoxTab:
        tab_id: int = self.call("open", COMMAND_TIMEOUT, origin=origin)
        return FirefoxTab(self, tab_id, origin)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            assert self._proc.stdin is not None
            self._proc.stdin.close()  # the helper closes Firefox and exits
            self._proc.wait(15)
        except (OSError, subprocess.TimeoutExpired):
            pass
        self._kill()

    def _kill(self) -> None:
        for pid in (self._proc.pid, self.browser_pid):
            if pid:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._proc.wait(10)
        self._reader.join(5)
        for stream in (self._proc.stdin, self._proc.stdout, self._stderr):
            if stream is not None:
                stream.close()
        shutil.rmtree(self._profile, ignore_errors=True)


def launch() -> FirefoxEngine:
    return FirefoxEngine()
