"""A SIGHUP while `serve` starts: Python's default for it ends the process (status 129, no
line), and importing, reading the config and binding take a few hundred milliseconds before
the reload handler is in place. So the launcher installs this first, before any slow
import: a SIGHUP meanwhile is remembered, and replayed (one reload, with a log line) once
the real handler is installed (the server's, or the supervisor's with --workers)."""

from __future__ import annotations

import logging
import os
import signal
from types import FrameType

_pending = False


def _remember(signum: int, frame: FrameType | None) -> None:
    global _pending
    _pending = True


def install_for(argv: list[str]) -> None:
    """For `serve` only (the first word that is not an option); other commands keep the
    default. Nothing where there is no SIGHUP."""
    command = next((arg for arg in argv if not arg.startswith("-")), None)
    if command == "serve" and hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, _remember)


def replay() -> None:
    """Once the reload handler is installed: a SIGHUP that came before it, delivered now."""
    global _pending
    if not _pending:
        return
    _pending = False
    logging.getLogger("corsproxy").info("SIGHUP during start-up: reloading now")
    os.kill(os.getpid(), signal.SIGHUP)
