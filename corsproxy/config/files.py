"""Reading a file the config names (a certificate, a key, a CA bundle): at load only, whole,
bounded, and never blocking.

`read_config_file(path, key, limit)` follows symlinks (a Kubernetes secret mount is a chain of
them) and then accepts only a regular file: a FIFO, a directory, a device or a socket is
refused at once with a `ConfigFileError` saying which, never opened in a way that waits for a
writer (O_NONBLOCK) or read forever (`limit`). The caller turns the error into a diagnostic
naming the config file, line and `key`.
"""

from __future__ import annotations

import os
import stat


class ConfigFileError(Exception):
    """A file named by config key `key` cannot be used; `reason` says why, in words."""

    def __init__(self, key: str, path: str, reason: str) -> None:
        super().__init__(f"cannot read '{path}': {reason}")
        self.key, self.path, self.reason = key, path, reason


def file_kind(mode: int) -> str:
    """What a file that is not regular is, in words."""
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "a socket" if stat.S_ISSOCK(mode) else "not a regular file"


def read_config_file(path: str, key: str, limit: int) -> bytes:
    """The bytes of the regular file at `path` (symlinks followed), at most `limit` of them.

    Raises ConfigFileError (never blocks): missing or unreadable, not a regular file, or
    larger than `limit`."""
    try:
        # stat before open: a FIFO is never opened, so no writer is awaited and no reader
        # is seen by one. O_NONBLOCK covers a file swapped in between (checked again below).
        mode = os.stat(path).st_mode
        if not stat.S_ISREG(mode):
            raise ConfigFileError(key, path, f"it is {file_kind(mode)}, not a regular file")
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise ConfigFileError(key, path, exc.strerror or str(exc)) from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise ConfigFileError(key, path, f"it is {file_kind(mode)}, not a regular file")
        chunks: list[bytes] = []
        left = limit + 1
        while left > 0 and (chunk := os.read(fd, left)):
            chunks.append(chunk)
            left -= len(chunk)
    except OSError as exc:
        raise ConfigFileError(key, path, exc.strerror or str(exc)) from None
    finally:
        os.close(fd)
    if left <= 0:
        raise ConfigFileError(key, path, f"it is larger than {_size(limit)}")
    return b"".join(chunks)


def _size(limit: int) -> str:
    if limit >= 1 << 20 and limit % (1 << 20) == 0:
        return f"{limit >> 20} MiB"
    return f"{limit >> 10} KiB" if limit >= 1 << 10 else f"{limit} bytes"
