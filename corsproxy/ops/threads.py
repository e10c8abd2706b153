"""Work off the event loop that must never hold up the process's exit.

A reload reads and compiles the configuration on a thread: a large policy takes seconds
(thousands of `regex:` origins). When a stop comes during one, its result is of no use, so
nothing may wait for it: not the default executor's shutdown at the end of `asyncio.run`
(a worker would then outlive the supervisor's shutdown deadline and be killed), and not the
interpreter's finalization either, which ends a daemon thread that is inside C++ code (RE2)
by unwinding it: `terminate called without an active exception`, SIGABRT. So such work runs
on a daemon thread, and `exit_process` ends the process without finalization while one is
still running, after the exit hooks (the log writer's flush among them) have run.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import sys
import threading
from collections.abc import Callable
from typing import NoReturn, TypeVar

T = TypeVar("T")

OFF_LOOP = "corsproxy-offloop"  # the name prefix of such threads


async def off_loop(fn: Callable[[], T], name: str = "work") -> T:
    """`fn()` on a daemon thread of its own; its result or exception, on the loop."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, error: BaseException | None) -> None:
        if future.done():
            return  # the awaiting task was cancelled
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]

    def run() -> None:
        try:
            result: T | None = fn()
            error: BaseException | None = None
        except BaseException as exc:  # handed to the loop, raised there
            result, error = None, exc
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=run, name=f"{OFF_LOOP}-{name}", daemon=True).start()
    return await future


def busy() -> bool:
    """Whether off-loop work is still running (its result no longer wanted)."""
    return any(t.is_alive() and t.name.startswith(OFF_LOOP) for t in threading.enumerate())


def exit_process(code: int) -> NoReturn:
    """sys.exit(code), or, while off-loop work is still running, the exit hooks and then
    os._exit(code): see the module's docstring."""
    if not busy():
        sys.exit(code)
    atexit._run_exitfuncs()  # the log writer's flush, the supervisor's clean-up
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)
