"""`--workers N`: a supervisor running N `corsproxy serve` processes on one port.

Each worker binds with SO_REUSEPORT (the kernel spreads connections across them) and owns
its upstream pool. The supervisor forwards SIGTERM, SIGINT and SIGHUP to every worker, and
shares one PROMETHEUS_MULTIPROC_DIR so /metrics, whichever worker answers it, counts all.
If a worker dies on its own, the supervisor stops the others and exits 1, so the
orchestrator restarts the whole unit (no silent half-capacity).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from types import FrameType

from corsproxy.admin import MULTIPROCESS_DIR

log = logging.getLogger("corsproxy")
WORKER_ENV = "CORSPROXY_WORKER"


def worker_count(value: str) -> int:
    if value == "auto":
        return (
            len(os.sched_getaffinity(0))
            if hasattr(os, "sched_getaffinity")
            else os.cpu_count() or 1
        )
    count = int(value)
    if count < 1:
        raise ValueError("workers must be at least 1")
    return count


def supervise(count: int, argv: Sequence[str], shutdown_timeout: float) -> int:
    """Run `count` workers with the same arguments; returns the exit status."""
    directory = tempfile.mkdtemp(prefix="corsproxy-metrics-")
    env = {**os.environ, MULTIPROCESS_DIR: directory, WORKER_ENV: "1", "CORSPROXY_WORKERS": "1"}
    command = [sys.executable, "-m", "corsproxy", "serve", *argv, "--workers", "1"]
    workers = [subprocess.Popen(command, env=env) for _ in range(count)]  # noqa: S603
    log.info("supervisor %d: started %d workers %s", os.getpid(), count, [w.pid for w in workers])
    stopping = False

    def forward(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        if signum in (signal.SIGTERM, signal.SIGINT):
            stopping = True
        for worker in workers:
            if worker.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    worker.send_signal(signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, forward)
    status = 0
    try:
        while any(w.poll() is None for w in workers):
            for worker in workers:
                code = worker.poll()
                if code is not None and not stopping:
                    log.error("worker %d exited with %s: stopping the others", worker.pid, code)
                    stopping = True
                    status = 1
                    forward(signal.SIGTERM, None)
            time.sleep(0.2)
        deadline = time.monotonic() + shutdown_timeout + 5
        for worker in workers:
            remaining = max(0.1, deadline - time.monotonic())
            try:
                code = worker.wait(remaining)
            except subprocess.TimeoutExpired:
                worker.kill()
                code = worker.wait()
            if code != 0:
                status = status or 1
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return status
