"""The C heap: give back to the kernel what start-up freed (glibc's `malloc_trim`).

Start-up (imports, the configuration, the compiled policy) leaves free memory in the heap
that glibc keeps; `trim()` returns the free pages (about 1.4 MiB per worker, measured in
docs/performance.md). A no-op where the C library has no `malloc_trim` (musl, macOS)."""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from functools import cache


@cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        # The process's own symbols: the C library Python runs on (no ldconfig, no gcc).
        trim: Callable[[int], int] = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    return trim


def trim() -> bool:
    """Return free heap pages to the kernel; False where that is not available."""
    malloc_trim = _malloc_trim()
    if malloc_trim is None:
        return False
    malloc_trim(0)
    return True
