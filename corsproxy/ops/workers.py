"""`--workers N`: a supervisor running N `corsproxy serve` processes on one port.

Each worker binds with SO_REUSEPORT (the kernel spreads connections across them) and owns
its upstream pool. The supervisor, in the spirit of gunicorn's arbiter and nginx's master:

- forwards SIGTERM and SIGINT to every worker; on SIGHUP reads the file on a thread (its
  loop keeps reading heartbeats; SIGHUPs meanwhile make one more reload), then passes a good one on;
  with `--watch` it watches the files the configuration names and reloads as on SIGHUP (the
  workers do not watch: each reloads on the SIGHUP it passes on);
- replaces a worker that dies at once (a worker that dies before it is ready, with
  exponential backoff, one step per round), logs why, and counts it in
  `corsproxy_worker_restarts_total`;
- kills and replaces a worker whose event loop stops sending heartbeats for
  `workers_timeout` (a byte on a pipe from a periodic callback: a blocked loop stops it),
  judged only on freshly read beats, and by the larger of its start-time and current timeout;
- starts a replacement first when a worker's memory guard (`limits.max_worker_rss`) trips,
  then lets the old one drain (at most N retiring workers; a guard tripping right after
  start counts as a failed start, with backoff);
- starts every worker from the configuration that last loaded successfully (a snapshot of
  the file it keeps, and of the bytes of every file it names: certificates, keys, CA
  bundles, as the supervisor read them; config/files.py), with the listen and admin
  addresses it started with, so a respawn never fails on a file broken since (a rotation
  half done), nor serves a different policy from the others;
- gives up (drains the rest, exits 1) only when fresh workers cannot start and none
  serves: the first worker fails before any was ready, or MAX_START_FAILURES exit on their
  own in a row (a worker killed for a slow boot is no such failure).

The workers share one PROMETHEUS_MULTIPROC_DIR so /metrics, whichever worker answers it,
counts all; a dead worker's live gauges are removed so they stop counting.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from types import FrameType
from typing import Any

from corsproxy.config import Config, ConfigError
from corsproxy.config.files import FILES_SNAPSHOT_ENV, recording
from corsproxy.config.spec import logged
from corsproxy.config.upstream_tls import insecure_warnings
from corsproxy.ops.logs import where
from corsproxy.ops.threads import OFF_LOOP
from corsproxy.ops.watch import Watcher

log = logging.getLogger("corsproxy")
WORKER_ENV = "CORSPROXY_WORKER"
HEARTBEAT_ENV = "CORSPROXY_HEARTBEAT_FD"
SNAPSHOT_ENV = "CORSPROXY_CONFIG_SNAPSHOT"
MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"  # as in admin.py (not imported: see _restarts)
EXIT_MEMORY = 3  # a worker that drained because of limits.max_worker_rss

BEAT, RETIRE = b".", b"M"  # heartbeat; "replace me" from the memory guard
BACKOFF = 0.5  # first delay after a worker died before it was ready; doubles, up to 8 s
MAX_START_FAILURES = 5  # in a row, no worker ready in between: give up (about 8 s of tries)
BOOT_ENV = "CORSPROXY_BOOT_TIMEOUT"  # seconds; the minimum below, for slow hosts (and tests)
BOOT_TIMEOUT = 10.0  # at least this long for a new worker to become ready
# A worker compiles the configuration before its loop can beat, and a large policy takes
# seconds: a new worker also gets this many times what loading it took the supervisor,
# times the workers per CPU that may be compiling at once.
BOOT_LOAD_FACTOR = 3.0
RETIRE_WAIT = 10.0  # a memory-guarded worker drains once its replacement is ready, or then
RETIRE_GRACE = 10.0  # a memory guard tripping this soon after ready counts as a failed start
REASONS = ("exit", "signal", "timeout", "memory")
WORKERS_PER_CPU = 8  # --workers above this many per CPU is refused (a typo, not a plan)
MAX_WORKERS = 1024
TEMP_PREFIX = "corsproxy-"
NO_ADMIN_ENV = "CORSPROXY_WORKER_NO_ADMIN"  # the supervisor started without admin: keep none


def cpus() -> int:
    """The CPUs this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def max_workers() -> int:
    return min(MAX_WORKERS, WORKERS_PER_CPU * cpus())


def worker_count(value: str) -> int:
    """`--workers`: a count, or 'auto'; ValueError (saying why) for anything else."""
    if value == "auto":
        return cpus()
    try:
        count = int(value)
    except ValueError:
        raise ValueError("a number of at least 1, or 'auto'") from None
    if count < 1:
        raise ValueError("a number of at least 1, or 'auto'")
    if count > max_workers():
        raise ValueError(
            f"{value} is more than {max_workers()} (at most {WORKERS_PER_CPU} per CPU, "
            f"{cpus()} CPUs here, and at most {MAX_WORKERS})"
        )
    return count


def pinned(config: Config) -> Config:
    """A worker's first configuration keeps the supervisor's start-time addresses: listen
    and admin come pinned in its environment, and "no admin" by NO_ADMIN_ENV (a reloaded
    file that adds one must not make a respawned worker bind it; a new address needs a
    restart, as without workers)."""
    if os.environ.get(WORKER_ENV) == "1" and os.environ.get(NO_ADMIN_ENV) == "1":
        return replace(config, admin=None)
    return config


# --- in the worker ------------------------------------------------------------------


def rss_bytes() -> int | None:
    """This process's resident memory (Linux), or None where /proc is missing."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def heartbeat_interval(timeout: float) -> float:
    return min(1.0, timeout / 4)


class WorkerLink:
    """The heartbeat to the supervisor and the memory guard, both run by one periodic
    callback on the event loop: a loop that stops turning stops the heartbeat."""

    def __init__(self, config: Config, stop: Callable[[], None]) -> None:
        fd = os.environ.get(HEARTBEAT_ENV)
        self.fd = int(fd) if fd and os.environ.get(WORKER_ENV) == "1" else None
        self.interval = heartbeat_interval(config.workers_timeout)
        self.max_rss = config.limits.max_worker_rss
        self.stop = stop
        self.retired = False  # the memory guard tripped: exit with EXIT_MEMORY
        self.lock = -1  # a shared flock on the supervisor's directory while this worker lives
        if self.fd is not None:
            os.set_blocking(self.fd, False)
            self.lock = _share(os.environ.get(MULTIPROCESS_DIR, ""))
        if self.max_rss is not None and rss_bytes() is None:
            log.warning("limits.max_worker_rss: no /proc/self/statm here, the guard is off")
            self.max_rss = None

    def start(self) -> None:
        """Once listening: the first beat tells the supervisor this worker is ready."""
        self._tick()

    def _tick(self) -> None:
        if self.max_rss is not None and not self.retired:
            rss = rss_bytes() or 0
            if rss > self.max_rss:
                self.retired = True
                log.warning(
                    "memory guard: resident memory %d MiB is above limits.max_worker_rss "
                    "(%d MiB): %s",
                    rss >> 20,
                    self.max_rss >> 20,
                    "draining and exiting"
                    if self.fd is None
                    else "asking the supervisor for a replacement (this worker drains once "
                    "it is ready)",
                )
                if self.fd is None:
                    self.stop()
                else:  # the supervisor starts a replacement, then sends SIGTERM
                    self._send(RETIRE)
        self._send(BEAT)
        asyncio.get_running_loop().call_later(self.interval, self._tick)

    def _send(self, data: bytes) -> None:
        if self.fd is None:
            return
        try:
            os.write(self.fd, data)
        except BlockingIOError:
            pass  # the pipe is full of beats the supervisor has not read yet
        except OSError:
            log.error("the supervisor is gone: stopping")
            self.fd = None
            atexit.register(_orphaned, self.lock, os.environ.get(MULTIPROCESS_DIR, ""))
            self.stop()


def _base(metrics: str) -> str | None:
    """The supervisor's private directory (holding the metrics directory), or None."""
    base = os.path.dirname(metrics.rstrip("/"))
    if os.path.basename(metrics.rstrip("/")) != "metrics":
        return None
    if not os.path.basename(base).startswith(TEMP_PREFIX):
        return None
    return base


def _share(metrics: str) -> int:
    base = _base(metrics)
    if base is None:
        return -1
    try:
        fd = os.open(os.path.join(base, "workers.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    except OSError:
        return -1
    fcntl.flock(fd, fcntl.LOCK_SH)
    return fd


def _orphaned(lock: int, metrics: str) -> None:
    """At the exit of a worker whose supervisor died (SIGKILL: no cleanup of its own): the
    last such worker to exit removes the supervisor's directory (snapshot, metrics)."""
    base = _base(metrics)
    if lock < 0 or base is None:
        return
    fcntl.flock(lock, fcntl.LOCK_UN)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # no other worker holds it
    except OSError:
        return
    shutil.rmtree(base, ignore_errors=True)


# --- the supervisor -----------------------------------------------------------------

# Reads and compiles the config as the workers will: (the file's text or None, config).
ConfigReader = Callable[[], tuple[str | None, Config]]
# Says what is loaded, once for all workers: (None, config) at start, (old, new) after a
# reload (commands/cli.py: the summary line, what changed, the upstream probe).
Announce = Callable[[Config | None, Config], None]


@dataclass(eq=False)
class _Worker:
    proc: subprocess.Popen[bytes]
    fd: int  # the read end of its heartbeat pipe
    started: float
    timeout: float  # the workers_timeout it started with: its beats' pace
    beat: float | None = None  # the last heartbeat; None until ready
    ready: float | None = None  # when its first heartbeat came
    retiring: float | None = None  # when its memory guard asked for a replacement
    terminated: bool = False  # SIGTERM sent after retiring
    killed: bool = False  # by the supervisor, for missing heartbeats
    hup_pending: bool = False  # a SIGHUP came while it was starting
    boot_cpu: float = 0.0  # CPU seconds used while starting, at the last look
    progress: float = 0.0  # when that last grew (monotonic; 0: not yet looked)

    @property
    def pid(self) -> int:
        return self.proc.pid


_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _cpu_seconds(pid: int) -> float | None:
    """User plus system CPU time of a process (Linux /proc), or None where unknown."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:
            stat = file.read()
    except OSError:
        return None
    fields = stat[stat.rfind(b")") + 2 :].split()  # after the command name, which may hold spaces
    try:
        return (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime (fields 14, 15)
    except (IndexError, ValueError):
        return None


def _describe(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
        return f"killed by signal {-code}"
    return f"exited with status {code}"


class Supervisor:
    def __init__(
        self,
        count: int,
        argv: Sequence[str],
        shutdown_timeout: float,
        read_config: ConfigReader,
        watch: bool = False,
        announce: Announce | None = None,
    ) -> None:
        self.count = count
        self.announce = announce
        self.config: Config | None = None  # the last good one
        self.command = [sys.executable, "-m", "corsproxy", "serve", *argv, "--workers", "1"]
        self.shutdown_timeout = shutdown_timeout
        self.read_config = read_config
        self.workers: list[_Worker] = []
        self.selector = selectors.DefaultSelector()
        self.pending: list[int] = []  # signals received, handled in the loop
        self.stopping = False
        self.stop_signal = signal.SIGTERM
        self.status = 0
        self.ever_ready = False
        self.early_deaths = 0  # workers dead before ready since one was last ready
        self.failed_starts = 0  # of which on their own (an exit status, a spawn error)
        self.next_spawn = 0.0
        self.base = tempfile.mkdtemp(prefix=TEMP_PREFIX)  # 0700: the snapshot lives here
        self.metrics = os.path.join(self.base, "metrics")
        os.mkdir(self.metrics)
        self.snapshot = os.path.join(self.base, "config.yaml")
        self.files = os.path.join(self.base, "files")  # copies of the files it names
        os.mkdir(self.files)
        self.files_index = os.path.join(self.base, "files.json")  # path -> copy
        self.kept_copies: set[str] = set()  # the copies the previous index named
        self.timeout = 30.0
        self.boot_minimum = _seconds(os.environ.get(BOOT_ENV), BOOT_TIMEOUT)
        self.boot_limit = self.boot_minimum  # grows with the time the configuration takes to load
        self.load_seconds = 0.0  # what loading the configuration took the supervisor, last time
        self.env: dict[str, str] = {}
        self.restarts: dict[str, Any] = {}
        self.wake = -1  # the write end of the wakeup pipe (a finished reload writes to it)
        self.reloader: threading.Thread | None = None  # reads the file off the loop
        self.reloaded: tuple[str | None, Config, float] | Exception | None = None
        self.read_files: dict[str, bytes | None] = {}  # what the last load read
        self.reload_again = False  # SIGHUPs during a reload: one more, not one each
        self.watch = watch  # --watch: the supervisor watches, then reloads as on SIGHUP
        self.watched: tuple[str, ...] = ()  # the files the last good configuration names
        self.attempted: tuple[str, ...] = ()  # and those a failed reload named since
        self.files_changed = threading.Event()  # set by the watcher's thread

    # -- set-up and the loop

    def run(self) -> int:
        started = time.monotonic()
        try:
            with recording() as self.read_files:
                document, config = self.read_config()
        except ConfigError as exc:  # changed since the command checked it
            for line in exc.diagnostics:
                log.error("%s", line)
            shutil.rmtree(self.base, ignore_errors=True)
            return 2
        self._take(document, config, time.monotonic() - started)
        # Addresses are bound once: a reload cannot move a respawned worker elsewhere, nor
        # give it an admin listener the others do not have (pinned() in the worker).
        pinned = {"CORSPROXY_LISTEN": str(config.listen)}
        if config.admin is not None:
            pinned["CORSPROXY_ADMIN_LISTEN"] = str(config.admin.listen)
        else:
            pinned[NO_ADMIN_ENV] = "1"
        if self.count > cpus():
            log.warning(
                "%d workers on %d CPUs: more workers than CPUs add no throughput",
                self.count,
                cpus(),
            )
        os.environ[MULTIPROCESS_DIR] = self.metrics
        self.env = {
            **os.environ,
            **pinned,
            WORKER_ENV: "1",
            "CORSPROXY_WORKERS": "1",
            **({SNAPSHOT_ENV: self.snapshot} if document is not None else {}),
            FILES_SNAPSHOT_ENV: self.files_index,
        }
        # Counted only where an admin listener can serve them (none can appear later: pinned);
        # without one the supervisor never imports prometheus_client.
        self.restarts = _restart_counters() if config.admin is not None else {}
        wake_read, wake_write = os.pipe()
        os.set_blocking(wake_read, False)
        os.set_blocking(wake_write, False)
        self.wake = wake_write
        self.selector.register(wake_read, selectors.EVENT_READ, None)
        previous_wakeup = signal.set_wakeup_fd(wake_write)
        watcher = None
        if self.watch:
            watcher = Watcher(lambda: (*self.watched, *self.attempted), self._files_changed)
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD):
            signal.signal(signum, self._on_signal)
        try:
            for _ in range(self.count):
                self._spawn()
            log.info(
                "supervisor %d: started %d workers %s",
                os.getpid(),
                self.count,
                [w.pid for w in self.workers],
            )
            if self.announce is not None:
                self.announce(None, config)
            if watcher is not None:
                watcher.start()
            last = time.monotonic()
            while not self.stopping:
                self._wait(wake_read)
                now = time.monotonic()
                # A long gap between turns is the supervisor's own (stopped, starved): the
                # workers' silence meanwhile proves nothing. (_murder reads queued beats too.)
                if now - last > min(5.0, self.timeout / 2):
                    for worker in self.workers:
                        worker.started = now
                        if worker.beat is not None:
                            worker.beat = now
                self._signals()
                if self.files_changed.is_set():
                    self.files_changed.clear()
                    self._reload()
                self._reloaded()
                self._reap()
                self._murder()
                self._retire()
                self._fill()
                last = time.monotonic()
            return self._shutdown()
        finally:
            if watcher is not None:
                watcher.stop()
            signal.set_wakeup_fd(previous_wakeup)
            self.selector.close()
            for fd in (wake_read, wake_write):
                os.close(fd)
            for worker in self.workers:
                with contextlib.suppress(OSError):
                    os.close(worker.fd)
            shutil.rmtree(self.base, ignore_errors=True)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.pending.append(signum)  # the wakeup fd ends the select at once

    def _files_changed(self, paths: list[str]) -> None:
        """From the watcher's thread: reload on the loop, as a SIGHUP does."""
        self.files_changed.set()
        with contextlib.suppress(OSError):
            os.write(self.wake, b"w")

    def _wait(self, wake_read: int) -> None:
        now = time.monotonic()
        timeout = 0.2
        if self.next_spawn > now:
            timeout = min(timeout, self.next_spawn - now)
        for key, _ in self.selector.select(timeout):
            if key.data is None:
                with contextlib.suppress(BlockingIOError):
                    os.read(wake_read, 512)
            else:
                self._heard(key.data)

    def _drain(self) -> None:
        """Read every heartbeat already queued (before judging anyone by them)."""
        for key, _ in self.selector.select(0):
            if key.data is not None:
                self._heard(key.data)

    def _heard(self, worker: _Worker) -> None:
        try:
            data = os.read(worker.fd, 4096)
        except BlockingIOError:
            return
        if not data:  # the worker is gone; _reap collects its status
            self.selector.unregister(worker.fd)
            os.close(worker.fd)
            worker.fd = -1
            return
        now = time.monotonic()
        retire = RETIRE in data and worker.retiring is None
        if worker.beat is None:
            log.info("worker %d ready", worker.pid)
            self.ever_ready = True
            worker.ready = now
            if not retire:  # over its memory limit at once is no successful start
                self.early_deaths = self.failed_starts = 0
            if worker.hup_pending:
                self._signal(worker, signal.SIGHUP)
        worker.beat = now
        if retire:
            worker.retiring = now
            self._count("memory")
            if worker.ready is not None and now - worker.ready < RETIRE_GRACE:
                log.warning(
                    "worker %d is above limits.max_worker_rss right after it started (is the "
                    "limit below what a worker needs?): replacing it, with backoff",
                    worker.pid,
                )
                self._died_early(own=False)
            else:
                log.warning(
                    "worker %d is above limits.max_worker_rss: starting its replacement",
                    worker.pid,
                )

    # -- the steps of one turn

    def _signals(self) -> None:
        pending, self.pending = self.pending, []
        for signum in pending:
            if signum in (signal.SIGTERM, signal.SIGINT):
                self.stopping = True
                self.stop_signal = signal.Signals(signum)
            elif signum == signal.SIGHUP:
                self._reload()

    def _reap(self) -> None:
        for worker in list(self.workers):
            code = worker.proc.poll()
            if code is None:
                continue
            self.workers.remove(worker)
            if worker.fd >= 0:
                self.selector.unregister(worker.fd)
                os.close(worker.fd)
            if self.restarts:  # metrics are kept (an admin listener)
                _mark_dead(worker.pid)
            if worker.retiring is not None:
                log.info("worker %d retired (memory guard): %s", worker.pid, _describe(code))
                continue
            if worker.killed:
                reason = "timeout"
            else:
                reason = "signal" if code < 0 else "exit"
                log.error("worker %d %s: replacing it", worker.pid, _describe(code))
            self._count(reason)
            if worker.beat is None:
                # Killed (slow to boot, on an overloaded host) is no proof it cannot start.
                self._died_early(own=code > 0 and not worker.killed)

    def _murder(self) -> None:
        self._drain()
        now = time.monotonic()
        for worker in self.workers:
            if worker.killed:
                continue
            since = worker.beat or worker.started
            # A lower workers_timeout reloaded since it started: it still beats at its pace.
            limit = max(self.timeout, worker.timeout)
            if worker.beat is None:
                stuck = self._stuck_starting(worker, now, max(limit, self.boot_limit))
                if stuck:
                    log.error("worker %d %s: killing it", worker.pid, stuck)
                    worker.killed = True
                    self._signal(worker, signal.SIGKILL)
                continue
            if now - since > limit:
                log.error(
                    "worker %d gave no heartbeat for %.1f s (workers_timeout %g s): killing it",
                    worker.pid,
                    now - since,
                    self.timeout,
                )
                worker.killed = True
                self._signal(worker, signal.SIGKILL)

    def _retire(self) -> None:
        ready = sum(1 for w in self.workers if w.retiring is None and w.beat is not None)
        now = time.monotonic()
        for worker in self.workers:
            if worker.retiring is None or worker.terminated:
                continue
            # (or RETIRE_WAIT after its replacement could start: not during a backoff)
            if ready >= self.count or now - max(worker.retiring, self.next_spawn) > RETIRE_WAIT:
                worker.terminated = True
                self._signal(worker, signal.SIGTERM)

    def _fill(self) -> None:
        while not self.stopping and time.monotonic() >= self.next_spawn:
            if sum(1 for w in self.workers if w.retiring is None) >= self.count:
                return
            if len(self.workers) >= 2 * self.count:  # at most N retiring ones on top
                return
            self._spawn()

    # -- helpers

    def _spawn(self) -> None:
        write = -1
        try:
            read, write = os.pipe()
            try:
                proc = subprocess.Popen(  # noqa: S603 - our own command line
                    self.command, env={**self.env, HEARTBEAT_ENV: str(write)}, pass_fds=(write,)
                )
            except BaseException:
                os.close(read)
                raise
        except OSError as exc:
            log.error("cannot start a worker: %s", exc)
            self._died_early(own=True)
            return
        finally:
            if write >= 0:
                os.close(write)  # the worker's alone: its exit closes the pipe
        os.set_blocking(read, False)
        worker = _Worker(proc, read, time.monotonic(), self.timeout)
        self.selector.register(read, selectors.EVENT_READ, worker)
        self.workers.append(worker)
        if self.ever_ready:
            log.info("worker %d started", proc.pid)

    def _serving(self) -> bool:
        return any(w.beat is not None and not w.killed and not w.terminated for w in self.workers)

    def _died_early(self, own: bool) -> None:
        """A worker did not start (`own`: failed by itself, not killed): back off; give up
        only when they cannot start and none is serving."""
        self.failed_starts += own
        if (
            own
            and not self._serving()
            and (not self.ever_ready or self.failed_starts >= MAX_START_FAILURES)
        ):
            log.error(
                "cannot start workers (%d failed in a row%s): stopping",
                self.failed_starts,
                "" if self.ever_ready else ", none was ever ready",
            )
            self.stopping = True
            self.status = 1
            return
        now = time.monotonic()
        if now < self.next_spawn:
            return  # a backoff is already pending: one step per round, not per worker
        self.early_deaths += 1
        delay = min(BACKOFF * 2 ** (self.early_deaths - 1), 8.0)
        self.next_spawn = now + delay
        log.warning("next worker start in %.1f s", delay)

    def _reload(self) -> None:
        """Read and compile the file on a thread (a large policy takes seconds: the loop
        must keep reading heartbeats); SIGHUPs meanwhile make one more reload after it."""
        if self.reloader is not None:
            self.reload_again = True
            return

        def read() -> None:
            started = time.monotonic()
            with recording() as files:
                try:
                    self.reloaded = (*self.read_config(), time.monotonic() - started)
                except Exception as exc:  # reported on the loop
                    self.reloaded = exc
            self.read_files = files
            with contextlib.suppress(OSError):
                os.write(self.wake, b"r")

        self.reloader = threading.Thread(target=read, name=f"{OFF_LOOP}-reload", daemon=True)
        self.reloader.start()

    def _reloaded(self) -> None:
        """A finished reload: keep it for new workers, then pass the SIGHUP on."""
        if self.reloader is None or self.reloader.is_alive():
            return
        self.reloader.join()
        result, self.reloader, self.reloaded = self.reloaded, None, None
        if isinstance(result, ConfigError):
            for line, d in logged(result.diagnostics):
                level = logging.WARNING if d and d.warning else logging.ERROR
                log.log(level, "reload: %s", line, extra=where(d.fields() if d else {}))
            count = len(result.errors)
            log.error(
                "reload failed (%d error%s): new workers keep starting from the last good "
                "configuration",
                count,
                "" if count == 1 else "s",
            )
            self._named_by_failed()
        elif isinstance(result, Exception) or result is None:
            log.error("reload failed (%r): new workers keep the last good one", result)
            self._named_by_failed()
        else:
            old = self.config
            self._take(*result)
            log.info("supervisor: configuration reloaded; new workers start from it")
            if self.config is not None:  # said here once, not by each worker
                for line, d in logged(self.config.warnings):
                    log.warning("reload: %s", line, extra=where(d.fields() if d else {}))
                for line in insecure_warnings(self.config.routes):
                    log.warning("reload: %s", line)
            if self.announce is not None and old is not None and self.config is not None:
                self.announce(old, self.config)
            # Only a good reload is passed on: the workers would log the same errors again.
            for worker in self.workers:
                if worker.beat is None:  # not listening for it yet: sent once ready
                    worker.hup_pending = True
                else:
                    self._signal(worker, signal.SIGHUP)
        if self.reload_again:
            self.reload_again = False
            self._reload()

    def _stuck_starting(self, worker: _Worker, now: float, limit: float) -> str | None:
        """Why a worker that is not ready yet counts as hung, or None.

        Where the kernel tells how much CPU a process used (Linux), a starting worker is
        judged by it, not by the clock: on a busy machine compiling a large policy takes
        longer in wall time but not in CPU time. Hung is no CPU progress for the minimum
        boot time (blocked: a deadlock, a stuck read), or more CPU than loading the
        configuration took the supervisor, three times over, plus the minimum (a loop).
        Elsewhere, wall time against `limit` (the minimum plus the load time, per CPU)."""
        used = _cpu_seconds(worker.pid)
        if used is None:
            if now - worker.started <= limit:
                return None
            return (
                f"was not ready within {now - worker.started:.1f} s (loading the configuration"
                f" takes about {self.load_seconds:.1f} s per worker here)"
            )
        if used > worker.boot_cpu or not worker.progress:
            worker.boot_cpu, worker.progress = used, now
        if now - worker.progress > self.boot_minimum:
            return (
                f"was not ready within {now - worker.started:.1f} s and used no CPU for"
                f" {now - worker.progress:.1f} s (hung while starting)"
            )
        if used > self.boot_minimum + BOOT_LOAD_FACTOR * self.load_seconds:
            return (
                f"was not ready after {used:.1f} s of CPU (loading the configuration takes"
                f" about {self.load_seconds:.1f} s here)"
            )
        return None

    def _take(self, document: str | None, config: Config, load_seconds: float) -> None:
        at_once = -(-self.count // cpus())  # workers per CPU compiling together
        self.load_seconds = load_seconds
        self.boot_limit = self.boot_minimum + BOOT_LOAD_FACTOR * at_once * load_seconds
        if document is not None:
            partial = self.snapshot + ".new"
            with open(partial, "w", encoding="utf-8") as file:
                file.write(document)
            os.replace(partial, self.snapshot)  # a worker starting now reads one or the other
        self.config = config
        self.timeout = config.workers_timeout
        self.watched = config.watched_files()
        self.attempted = ()
        self._snapshot_files(config)

    def _named_by_failed(self) -> None:
        """Watch the files a failed reload named as well (a Secret mounted after the
        ConfigMap that names it): their arrival triggers the next reload."""
        self.attempted = tuple(p for p in self.read_files if p not in self.watched)

    def _snapshot_files(self, config: Config) -> None:
        """Copy the bytes this load read of every file the configuration names into the
        private directory (0600, named by their SHA-256), then swap the index workers read
        (config/files.py: snapshot_of). Copies named by neither this index nor the previous
        one are removed (a worker may be reading through the previous one)."""
        index: dict[str, str] = {}
        for path in config.watched_files():
            data = self.read_files.get(path)
            if path == config.source or data is None:
                continue
            copy = os.path.join(self.files, hashlib.sha256(data).hexdigest())
            if not os.path.exists(copy):
                fd = os.open(copy + ".new", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "wb") as file:
                    file.write(data)
                os.replace(copy + ".new", copy)
            index[path] = copy
        partial = self.files_index + ".new"
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            json.dump(index, file)
        os.replace(partial, self.files_index)
        keep = set(index.values()) | self.kept_copies
        for name in os.listdir(self.files):
            if os.path.join(self.files, name) not in keep:
                with contextlib.suppress(OSError):
                    os.remove(os.path.join(self.files, name))
        self.kept_copies = set(index.values())

    def _signal(self, worker: _Worker, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            worker.proc.send_signal(signum)

    def _count(self, reason: str) -> None:
        if self.restarts:
            self.restarts[reason].inc(1)

    def _shutdown(self) -> int:
        for worker in self.workers:
            self._signal(worker, self.stop_signal)
        deadline = time.monotonic() + self.shutdown_timeout + 5
        status = self.status
        for worker in self.workers:
            remaining = max(0.1, deadline - time.monotonic())
            try:
                code = worker.proc.wait(remaining)
            except subprocess.TimeoutExpired:
                worker.proc.kill()
                code = worker.proc.wait()
            # Killed by the stop signal: it was starting, before its handlers were set.
            if code not in (0, EXIT_MEMORY, -self.stop_signal):
                status = status or 1
        return status


def _restart_counters() -> dict[str, Any]:
    """corsproxy_worker_restarts_total{reason}, written to the shared metrics directory as a
    worker's counters are (the value class is chosen from PROMETHEUS_MULTIPROC_DIR when
    prometheus_client is imported, which may have been before it was set here)."""
    from prometheus_client.values import MultiProcessValue

    value_class = MultiProcessValue()  # type: ignore[no-untyped-call]
    return {
        reason: value_class(
            "counter",
            "corsproxy_worker_restarts",
            "corsproxy_worker_restarts_total",
            ("reason",),
            (reason,),
            "Workers replaced by the supervisor, by why: exit (status), signal, timeout "
            "(no heartbeat), memory (limits.max_worker_rss).",
        )
        for reason in REASONS
    }


def _mark_dead(pid: int) -> None:
    """Its live gauges (requests in flight) stop counting; its counters stay in the sums."""
    from prometheus_client import multiprocess

    with contextlib.suppress(OSError):
        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


def _seconds(value: str | None, default: float) -> float:
    try:
        seconds = float(value) if value else default
    except ValueError:
        return default
    return seconds if seconds > 0 else default


def supervise(
    count: int,
    argv: Sequence[str],
    shutdown_timeout: float,
    read_config: ConfigReader,
    watch: bool = False,
    announce: Announce | None = None,
) -> int:
    """Run `count` workers with the same arguments; returns the exit status."""
    return Supervisor(count, argv, shutdown_timeout, read_config, watch, announce).run()
