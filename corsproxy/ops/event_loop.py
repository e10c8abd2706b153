"""Which event loop `serve` runs on, and its name for the start summary (`loop`).

uvloop is a default dependency where it has wheels (CPython, not Windows); `--no-uvloop` (or
`CORSPROXY_UVLOOP=false`) chooses asyncio's loop. When uvloop cannot be imported (another
platform, a trimmed install), `serve` runs on asyncio's loop and says so in one line: a
warning when uvloop was asked for by flag or variable, else an info line. Never a traceback,
never a failed start.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

_T = TypeVar("_T")

UVLOOP = "uvloop"
ASYNCIO = "asyncio"

_chosen: str | None = None  # set by `choose()`; the summary line reads it


def _import_uvloop() -> Any:
    import uvloop  # a module-level function, so a test can make the import fail

    return uvloop


def choose(
    wanted: bool, explicit: bool, say: Callable[[str, int], None] | None = None
) -> Callable[[Coroutine[Any, Any, _T]], _T]:
    """The runner for `serve`'s main coroutine: uvloop's when wanted and importable, else
    asyncio's. `explicit`: uvloop was asked for by flag or variable (not the default);
    `say`: where the fallback line goes (None: nowhere, as in a worker, whose supervisor
    already said it)."""
    global _chosen
    if wanted:
        try:
            uvloop = _import_uvloop()
        except ImportError as exc:
            if say is not None:
                how = "--uvloop was given" if explicit else "it is the default"
                say(
                    f"corsproxy: uvloop is not installed ({exc.msg}); running on asyncio's "
                    f"event loop, which works but costs more CPU per request ({how}; "
                    "`pip install uvloop` to get it, or --no-uvloop to choose asyncio's loop "
                    "and silence this line)",
                    logging.WARNING if explicit else logging.INFO,
                )
        else:
            _chosen = UVLOOP
            run: Callable[[Coroutine[Any, Any, _T]], _T] = uvloop.run
            return run
    _chosen = ASYNCIO
    return asyncio.run


def name() -> str:
    """The loop this process serves on: the running loop's kind (what the summary line shows
    is the loop that runs, not the flag), else what `choose()` chose (the supervisor of
    `--workers` runs no loop: its workers' choice), else asyncio's."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return _chosen or ASYNCIO
    return UVLOOP if type(loop).__module__.startswith("uvloop") else ASYNCIO
