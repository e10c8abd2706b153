"""`--watch` / `watch: true`: reload when the config file or a file it names changes.

Polling, not inotify: a thread stats each path every POLL_INTERVAL seconds, following
symlinks, and compares (device, inode, size, mtime, ctime, the path it resolves to). That one
test sees the three ways files change in practice: written in place (size, mtime), replaced
by a rename (inode), and Kubernetes' ConfigMap and Secret volumes, where `config.yaml` is a
symlink through `..data`, itself a symlink that the kubelet swaps to a new timestamped
directory (the resolved path and inode). inotify watches an inode, so it misses that swap
unless the parent directory is watched and the links re-resolved; it is Linux-only, needs a
new dependency (or ctypes), and polling a handful of paths twice a second costs nothing.
Traefik's file provider and Caddy's `--watch` poll for the same reasons.

A change is debounced: the reload runs once the files have been still for one poll, and at
most MAX_DELAY after the first change, so an editor's or kubelet's burst of writes gives one
reload. The paths come from the configuration in force (`Config.watched_files()`), read again
at every poll, so a reload that names new files watches them from then on.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence

log = logging.getLogger("corsproxy")

POLL_INTERVAL = 0.5
MAX_DELAY = 1.0  # from the first change of a burst to the reload, at most (plus one poll)

Signature = tuple[int, int, int, int, int, str] | None


def signature(path: str) -> Signature:
    """What identifies a file's content without reading it; None when it cannot be stat'ed."""
    try:
        st = os.stat(path)
        real = os.path.realpath(path)
    except (OSError, ValueError):
        return None
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, real


class Watcher:
    """Calls `changed(paths)` (from its own thread) after the watched files change."""

    def __init__(
        self,
        paths: Callable[[], Sequence[str]],
        changed: Callable[[list[str]], object],
        interval: float = POLL_INTERVAL,
        max_delay: float = MAX_DELAY,
    ) -> None:
        self.paths = paths
        self.changed = changed
        self.interval = interval
        self.max_delay = max_delay
        self.known: dict[str, Signature] = {}
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name="corsproxy-watch", daemon=True)

    def start(self) -> None:
        self.known = {path: signature(path) for path in self.paths()}
        log.info("watching %s for changes", ", ".join(self.known) or "nothing")
        self.thread.start()

    def stop(self) -> None:
        """Ends the thread at its next poll (no wait: callers may be an event loop)."""
        self.stopped.set()

    def _poll(self) -> list[str]:
        """The paths that changed since the last poll; a path new to the list (named by a
        reload) is recorded, not reported."""
        seen: dict[str, Signature] = {}
        changed: list[str] = []
        for path in self.paths():
            seen[path] = signature(path)
            if path in self.known and seen[path] != self.known[path]:
                changed.append(path)
        self.known = seen
        return changed

    def _run(self) -> None:
        first: float | None = None  # when the pending burst began
        pending: list[str] = []
        while not self.stopped.wait(self.interval):
            try:
                changed = self._poll()
            except Exception:  # a bug here must not end the watching silently
                log.exception("watch: polling failed")
                continue
            now = time.monotonic()
            if changed:
                pending += [p for p in changed if p not in pending]
                first = first if first is not None else now
                if now - first < self.max_delay:
                    continue  # still changing: wait for a quiet poll
            if first is None or self.stopped.is_set():
                continue
            log.info("watch: %s changed: reloading", ", ".join(pending))
            try:
                self.changed(pending)
            except Exception:
                log.exception("watch: starting the reload failed")
            first, pending = None, []
