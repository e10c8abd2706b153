"""Reading a file the config names (a certificate, a key, a CA bundle): at load only, whole,
bounded, and never blocking.

`read_config_file(path, key, limit)` follows symlinks (a Kubernetes secret mount is a chain of
them) and then accepts only a regular file: a FIFO, a directory, a device or a socket is
refused at once with a `ConfigFileError` saying which, never opened in a way that waits for a
writer (O_NONBLOCK) or read forever (`limit`). The caller turns the error into a diagnostic
naming the config file, line and `key`. A value that is not a path at all (PEM content
pasted in place of one) is refused without being echoed: it may be a private key.

With `--workers`, a worker reads these files from the supervisor's snapshot of the last good
configuration (`FILES_SNAPSHOT_ENV`: a JSON map from the path as resolved to a private copy
of the bytes the supervisor loaded), so a respawn never fails on a file broken since; paths
the map does not hold are read from where they are. `recording()` collects, for the
supervisor, every path a load tried to read and the bytes it got (None: it could not).
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import os
import re
import ssl
import stat
from collections.abc import Callable, Iterator

FILES_SNAPSHOT_ENV = "CORSPROXY_FILES_SNAPSHOT"
MAX_PATH_SHOWN = 512  # a longer value is no path anyone typed: never echoed
NOT_A_PATH = "the value is not a path: it looks like PEM or key content"
NOT_A_PATH_HINT = "give the path of a file holding it"
_RECORDING: contextvars.ContextVar[dict[str, bytes | None] | None] = contextvars.ContextVar(
    "corsproxy_files_recording", default=None
)


class ConfigFileError(Exception):
    """A file named by config key `key` cannot be used; `reason` says why, in words."""

    def __init__(self, key: str, path: str, reason: str) -> None:
        super().__init__(reason if reason == NOT_A_PATH else f"cannot read '{path}': {reason}")
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


# Base64 only, with a run of 32 characters or more that is no path segment anyone names: a
# key's body pasted without its PEM lines, or `base64 -w0 key.pem` (a Kubernetes Secret's
# data). (A file named by a bare 32+ character hash is refused as well: the message says why.)
_KEY_BODY = re.compile(r"[A-Za-z0-9+/=]*[A-Za-z0-9+=]{32}[A-Za-z0-9+/=]*\Z")


def not_a_path(value: str) -> bool:
    """Whether a file key's value is content rather than a path (PEM, a key's base64 body,
    several lines, or too long to be one): such a value is never shown in a message."""
    return (
        "-----BEGIN" in value
        or "\n" in value
        or len(value) > MAX_PATH_SHOWN
        or bool(_KEY_BODY.match(value))
    )


@contextlib.contextmanager
def recording() -> Iterator[dict[str, bytes | None]]:
    """Within it (this thread), every read is recorded: path -> bytes, or None if it failed."""
    files: dict[str, bytes | None] = {}
    token = _RECORDING.set(files)
    try:
        yield files
    finally:
        _RECORDING.reset(token)


def attempted(*paths: str) -> None:
    """Record paths a load names but may not get to read (a pair refused at its first file)."""
    files = _RECORDING.get()
    if files is not None:
        for path in paths:
            files.setdefault(path, None)


def snapshot_of(path: str) -> str:
    """Where a worker reads `path` from: the supervisor's copy, when it has one."""
    index = os.environ.get(FILES_SNAPSHOT_ENV)
    if not index:
        return path
    try:
        with open(index, encoding="utf-8") as file:
            copies = json.load(file)
    except (OSError, ValueError):
        return path  # no snapshot (yet, or removed): the file itself
    copy = copies.get(path) if isinstance(copies, dict) else None
    return copy if isinstance(copy, str) else path


def read_config_file(path: str, key: str, limit: int) -> bytes:
    """The bytes of the regular file at `path` (symlinks followed), at most `limit` of them.

    Raises ConfigFileError (never blocks): missing or unreadable, not a regular file, or
    larger than `limit`."""
    if not_a_path(path):
        raise ConfigFileError(key, "", NOT_A_PATH)
    files = _RECORDING.get()
    if files is not None:
        files[path] = None
    data = _read(snapshot_of(path), key, limit, path)
    if files is not None:
        files[path] = data
    return data


def _read(source: str, key: str, limit: int, path: str) -> bytes:
    try:
        # stat before open: a FIFO is never opened, so no writer is awaited and no reader
        # is seen by one. O_NONBLOCK covers a file swapped in between (checked again below).
        mode = os.stat(source).st_mode
        if not stat.S_ISREG(mode):
            raise ConfigFileError(key, path, f"it is {file_kind(mode)}, not a regular file")
        fd = os.open(source, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
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


def load_cert_chain(
    context: ssl.SSLContext, cert: bytes, key: bytes, password: Callable[[], bytes]
) -> None:
    """`context.load_cert_chain` from the bytes already read and checked, not from the paths
    again (a rotation in between would load a pair nobody checked). Linux: anonymous memory
    files, nothing written to disk; elsewhere, a private temporary directory."""
    if hasattr(os, "memfd_create") and os.path.isdir("/proc/self/fd"):
        fds = [os.memfd_create("corsproxy-pem"), os.memfd_create("corsproxy-pem")]
        try:
            for fd, data in zip(fds, (cert, key), strict=True):
                os.write(fd, data)
            context.load_cert_chain(f"/proc/self/fd/{fds[0]}", f"/proc/self/fd/{fds[1]}", password)
        finally:
            for fd in fds:
                os.close(fd)
        return
    import tempfile

    with tempfile.TemporaryDirectory(prefix="corsproxy-pem-") as where:
        names = [os.path.join(where, "cert.pem"), os.path.join(where, "key.pem")]
        for name, data in zip(names, (cert, key), strict=True):
            fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as file:
                file.write(data)
        context.load_cert_chain(names[0], names[1], password)
