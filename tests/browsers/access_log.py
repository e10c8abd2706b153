"""corsproxy's own access log, as the browser suites read it: what reached the proxy."""

from __future__ import annotations

import http.client
import itertools
import json
import subprocess
import threading
import time
from typing import Any


class AccessLog:
    """corsproxy's JSON access lines (stderr), drained in a thread so the pipe never fills."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.records: list[dict[str, Any]] = []
        self.lines: list[str] = []
        self.lock = threading.Lock()
        self.barriers = itertools.count()
        self.thread = threading.Thread(target=self._drain, daemon=True)
        self.thread.start()

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self.lock:
                self.lines.append(line)
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(record, dict) and "method" in record and "path" in record:
                    self.records.append(record)

    def count(self, api: str, method: str, path: str) -> int:
        """How many `method path` requests corsproxy has answered. Everything the browser
        finished before this call is in the log once a later request's line is: one
        process writes its lines in order, so a barrier request settles the count."""
        barrier = f"/__barrier__/{next(self.barriers)}"
        host, port = api.removeprefix("http://").split(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=10)
        connection.request("GET", barrier)
        connection.getresponse().read()
        connection.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with self.lock:
                if any(r["path"] == barrier for r in self.records):
                    return sum(
                        1 for r in self.records if r["method"] == method and r["path"] == path
                    )
            time.sleep(0.02)
        with self.lock:
            tail = "".join(self.lines[-20:])
        raise AssertionError(f"corsproxy never logged {barrier}; its stderr ends:\n{tail}")

    def close(self) -> None:
        """After the process ended: the drain thread joined, the pipes closed."""
        self.thread.join(5)
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()
