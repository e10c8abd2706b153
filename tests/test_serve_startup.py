"""What `serve` says about what it loaded, as an operator meets it (real processes): the
summary line at start, the background probe of the upstreams, the reload's changes, every
line JSON in JSON mode, and bind errors that say which listener, where it was set and why."""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from corsproxy.commands.listen_errors import listen_source
from tests.net import ROOT, TIMEOUT, free_port
from tests.test_upstream_tls import blackhole

APP = "https://app.example.com"
LOG_KEYS = {"time", "level", "logger", "message"}  # the shape of every JSON line


class Serve:
    """`corsproxy serve ARGS` with every line of stdout and stderr collected."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "corsproxy", "serve", "--shutdown-timeout", "5", *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
            env={**os.environ, "CORSPROXY_PROBE_TIMEOUT": "1", **(env or {})},
        )  # fmt: skip
        self.lines: list[str] = []
        self.readers = [
            threading.Thread(target=self._read, args=(stream,), daemon=True)
            for stream in (self.proc.stdout, self.proc.stderr)
        ]
        for reader in self.readers:
            reader.start()

    def _read(self, stream: Any) -> None:
        for line in stream:
            self.lines.append(line.rstrip("\n"))

    def records(self) -> list[dict[str, Any]]:
        records = []
        for line in list(self.lines):
            with contextlib.suppress(json.JSONDecodeError):
                records.append(json.loads(line))
        return records

    def messages(self) -> list[str]:
        return [str(r.get("message", "")) for r in self.records()]

    def wait(self, what: Callable[[], Any], timeout: float = TIMEOUT) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = what()
            if value:
                return value
            if self.proc.poll() is not None:
                time.sleep(0.2)  # the last lines
                value = what()
                if value:
                    return value
                raise AssertionError(f"corsproxy exited {self.proc.returncode}: {self.lines}")
            time.sleep(0.05)
        raise AssertionError(f"timed out; output: {self.lines}")

    def url(self) -> str:
        found = self.wait(
            lambda: [m.split()[3].rstrip(",") for m in self.messages() if " listening on " in m]
        )
        return str(found[0])

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(TIMEOUT)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            for reader in self.readers:
                reader.join(TIMEOUT)
            for stream in (self.proc.stdout, self.proc.stderr):
                assert stream is not None
                stream.close()
        return code

    def exited(self) -> int:
        """Its status once it exits on its own (within the bound)."""
        try:
            self.proc.wait(TIMEOUT * 3)
        finally:
            code = self.stop(signal.SIGKILL)
        return code


@contextlib.contextmanager
def listening() -> Iterator[int]:
    """A port that accepts connections (the kernel completes them) and answers nothing."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield sock.getsockname()[1]


class _Ok(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: Any) -> None:
        pass


@contextlib.contextmanager
def http_upstream() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def refusing_port() -> int:
    return free_port()  # nothing listens there: connect is refused


def get(url: str, origin: str | None = None) -> int:
    request = urllib.request.Request(url, headers={"Origin": origin} if origin else {})
    with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
        return int(response.status)


def summaries(proc: Serve) -> list[dict[str, Any]]:
    return [r for r in proc.records() if r.get("message") == "configuration loaded"]


# --- the summary line ----------------------------------------------------------------


def test_one_summary_line_says_what_is_loaded(tmp_path: Path) -> None:
    with listening() as up, listening() as api_up:
        config = tmp_path / "c.yaml"
        config.write_text(
            f"upstream: http://127.0.0.1:{up}\n"
            f"cors: {{allow_origins: [{APP}], allow_credentials: true}}\n"
            "routes:\n"
            f"  - path_prefix: /api\n    upstream: http://127.0.0.1:{api_up}/v1\n"
            "    cors: {allow_origins: ['https://a.example'], mode: report-only}\n"
            "  - path_prefix: /open\n    cors: false\n"
        )
        port, admin = free_port(), free_port()
        proc = Serve(
            "--log-format", "json", "-c", str(config),
            "--listen", f"127.0.0.1:{port}", "--admin-listen", f"127.0.0.1:{admin}",
        )  # fmt: skip
        try:
            proc.url()
            (record,) = proc.wait(lambda: summaries(proc))
        finally:
            proc.stop()
        text = Serve("--log-format", "text", "-c", str(config), "--listen", "127.0.0.1:0")
        try:
            line = text.wait(lambda: [x for x in text.lines if " loaded " in x])
        finally:
            text.stop()
    assert set(record) == LOG_KEYS | {"config", "listen", "admin", "routes", "loop"}
    assert record["loop"] in {"uvloop", "asyncio"}  # tests/test_uvloop_default.py: which
    assert record["level"] == "info"
    assert {k: record[k] for k in ("config", "listen", "admin", "routes")} == {
        "config": str(config),
        "listen": f"127.0.0.1:{port}",
        "admin": f"127.0.0.1:{admin}",
        "routes": [
            {"path_prefix": "/", "upstream": f"http://127.0.0.1:{up}", "origins": [APP],
             "credentials": True, "mode": "enforce"},
            {"path_prefix": "/api", "upstream": f"http://127.0.0.1:{api_up}/v1",
             "origins": ["https://a.example"], "credentials": True, "mode": "report-only"},
            {"path_prefix": "/open", "upstream": f"http://127.0.0.1:{up}", "origins": [],
             "credentials": False, "mode": "off"},
        ],
    }  # fmt: skip
    assert len(line) == 1
    assert line[0].split(None, 2)[1] == "INFO"
    assert f"loaded {config}: listen 127.0.0.1:0, admin none; routes: / -> " in line[0]
    assert (
        f"/api -> http://127.0.0.1:{api_up}/v1 (origins https://a.example; credentials on; "
        "report-only), /open -> " in line[0]
    )
    # Every upstream listens: no probe warning.
    assert not [m for m in proc.messages() + text.lines if "not reachable" in m]


# --- the probe -----------------------------------------------------------------------


def test_the_probe_warns_in_the_background_and_never_holds_up_serving(tmp_path: Path) -> None:
    """A refusing upstream is named at once; a blackholed one holds its probe (30 s here)
    while /healthz and requests to a live route are answered, and SIGTERM is not held up."""
    with blackhole() as hole, http_upstream() as live:
        refused = refusing_port()
        config = tmp_path / "c.yaml"
        config.write_text(
            f"upstream: http://127.0.0.1:{refused}\n"
            "cors: {allow_origins: ['https://app.example.com']}\n"
            "routes:\n"
            f"  - {{path_prefix: /hole, upstream: 'http://127.0.0.1:{hole}'}}\n"
            f"  - {{path_prefix: /live, upstream: 'http://127.0.0.1:{live}'}}\n"
        )
        admin = free_port()
        proc = Serve(
            "--log-format", "json", "-c", str(config),
            "--listen", "127.0.0.1:0", "--admin-listen", f"127.0.0.1:{admin}",
            env={"CORSPROXY_PROBE_TIMEOUT": "30"},
        )  # fmt: skip
        try:
            url = proc.url()
            warning = proc.wait(
                lambda: [r for r in proc.records() if "not reachable" in r.get("message", "")]
            )
            assert get(f"http://127.0.0.1:{admin}/healthz") == 200
            assert get(f"{url}/live/x", APP) == 200
            started = time.monotonic()
            assert proc.stop() == 0
            assert time.monotonic() - started < TIMEOUT
        finally:
            proc.stop()
    assert warning[0]["level"] == "warning"
    assert warning[0]["upstream"] == f"http://127.0.0.1:{refused}"
    assert warning[0]["error"] == "connection refused"
    assert (
        f"upstream http://127.0.0.1:{refused} is not reachable at start: connection refused"
        in (warning[0]["message"])
    )
    # The blackhole's probe was still waiting when the proxy stopped; the live one answered.
    named = [r.get("upstream") for r in proc.records() if "not reachable" in r.get("message", "")]
    assert named == [f"http://127.0.0.1:{refused}"]


def test_a_probe_timeout_of_zero_turns_the_probe_off() -> None:
    """For an upstream that logs an empty connection as an error: no connection is made."""
    with blackhole() as hole:
        proc = Serve(
            "--log-format", "json", "--upstream", f"http://127.0.0.1:{hole}",
            "--allow-origin", APP, "--listen", "127.0.0.1:0",
            env={"CORSPROXY_PROBE_TIMEOUT": "0"},
        )  # fmt: skip
        try:
            proc.url()
            time.sleep(2.5)  # the probe would say "no connect within 1 s" by now
            assert proc.stop() == 0
        finally:
            proc.stop()
    assert not [r for r in proc.records() if "not reachable" in r.get("message", "")]


def test_the_probe_names_an_upstream_that_does_not_answer_within_a_second() -> None:
    with blackhole() as hole:
        proc = Serve(
            "--log-format", "json", "--listen", "127.0.0.1:0",
            "--upstream", f"http://127.0.0.1:{hole}",
        )  # fmt: skip
        try:
            proc.url()
            (warning,) = proc.wait(
                lambda: [r for r in proc.records() if "not reachable" in r.get("message", "")]
            )
        finally:
            proc.stop()
    assert warning["error"] == "no connect within 1 s"


# --- reloads ---------------------------------------------------------------------------


def test_sighup_logs_what_changed(tmp_path: Path) -> None:
    with listening() as up, listening() as api_up:
        refused = refusing_port()
        config = tmp_path / "c.yaml"
        config.write_text(
            f"upstream: http://127.0.0.1:{up}\ncors: {{allow_origins: [{APP}]}}\nroutes:\n"
            f"  - path_prefix: /api\n    upstream: http://127.0.0.1:{api_up}\n"
            "    cors: {allow_origins: ['https://a.example', 'https://b.example']}\n"
            "  - {path_prefix: /old, cors: false}\n"
        )
        proc = Serve("--log-format", "json", "-c", str(config), "--listen", "127.0.0.1:0")
        try:
            proc.url()
            proc.wait(lambda: summaries(proc))
            config.write_text(
                f"upstream: http://127.0.0.1:{up}\ncors: {{allow_origins: [{APP}]}}\n"
                "limits: {max_body_size: 1000}\nroutes:\n"
                f"  - path_prefix: /api\n    upstream: http://127.0.0.1:{api_up}\n"
                "    cors: {allow_origins: ['https://a.example', 'https://c.example'],"
                " allow_methods: [GET, PUT]}\n"
                f"  - {{path_prefix: /new, upstream: 'http://127.0.0.1:{refused}'}}\n"
            )
            proc.proc.send_signal(signal.SIGHUP)
            proc.wait(lambda: any(m.startswith("config reloaded") for m in proc.messages()))
            proc.wait(lambda: [m for m in proc.messages() if "after the reload" in m])
            first = [m for m in proc.messages() if m.startswith("reload: ")]
            proc.proc.send_signal(signal.SIGHUP)
            proc.wait(lambda: "reload: no changes" in proc.messages())
        finally:
            proc.stop()
    assert first == [
        "reload: route /new added",
        "reload: route /old removed",
        "reload: route /api: origins added: https://c.example",
        "reload: route /api: origins removed: https://b.example",
        "reload: route /api: changed cors.allow_methods",
        "reload: changed limits.max_body_size",
    ]
    # Only the upstream the reload brought is probed again.
    probed = [r["upstream"] for r in proc.records() if "not reachable" in r.get("message", "")]
    assert probed == [f"http://127.0.0.1:{refused}"]


# --- with workers: said once -----------------------------------------------------------


def _preflight_allows(url: str, origin: str) -> bool:
    request = urllib.request.Request(
        url, method="OPTIONS", headers={"Origin": origin, "Access-Control-Request-Method": "GET"}
    )
    with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
        return response.headers.get("Access-Control-Allow-Origin") == origin


def test_with_workers_the_supervisor_says_it_once(tmp_path: Path) -> None:
    refused = refusing_port()
    port = free_port()
    config = tmp_path / "c.yaml"
    config.write_text(  # max_age above the browsers' caps: a warning
        f"listen: 127.0.0.1:{port}\nupstream: http://127.0.0.1:{refused}\n"
        f"cors: {{allow_origins: [{APP}], max_age: 7200}}\n"
    )
    proc = Serve("--log-format", "json", "-c", str(config), "--workers", "2")
    try:
        proc.wait(lambda: sum(" ready" in m for m in proc.messages()) == 2)
        proc.wait(lambda: [m for m in proc.messages() if "not reachable" in m])
        config.write_text(config.read_text().replace(f"[{APP}]", f"[{APP}, 'https://b.example']"))
        proc.proc.send_signal(signal.SIGHUP)
        proc.wait(lambda: "supervisor: configuration reloaded; new workers start from it"
                  in proc.messages())  # fmt: skip
        # Both workers have the new policy (the kernel spreads new connections over them).
        url = f"http://127.0.0.1:{port}/x"
        proc.wait(lambda: all(_preflight_allows(url, "https://b.example") for _ in range(12)))
        time.sleep(0.5)  # anything a worker would add
    finally:
        code = proc.stop()
    assert code == 0
    messages = proc.messages()
    assert sum(" listening on " in m for m in messages) == 2  # each worker's, as before
    assert len(summaries(proc)) == 1
    assert sum("not reachable" in m for m in messages) == 1
    assert messages.count("reload: route /: origins added: https://b.example") == 1
    # The workers leave the reload's success and its warnings to the supervisor: said once.
    assert not [m for m in messages if m.startswith("config reloaded from")], messages
    warned = [r for r in proc.records() if "above" in r["message"] and "max_age" in r["message"]]
    assert [r["message"].startswith("reload: ") for r in warned] == [False, True], warned
    assert warned[1]["level"] == "warning"
    assert (warned[1]["file"], warned[1]["line"], warned[1]["key"]) == (
        str(config),
        3,
        "cors.max_age",
    )
    assert all(_is_log_line(line) for line in proc.lines), proc.lines


# --- JSON mode: every line -------------------------------------------------------------


def _is_log_line(line: str) -> bool:
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return False
    return isinstance(record, dict) and set(record) >= LOG_KEYS


def test_in_json_mode_every_line_is_json(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("cors: {mode: report-only}\n")  # a warning; the demo's origins
    admin = free_port()
    proc = Serve(
        "--log-format", "json", "-c", str(config), "--demo", "--listen", "127.0.0.1:0",
        "--admin-listen", f"127.0.0.1:{admin}",
    )  # fmt: skip
    try:
        url = proc.url()
        assert get(f"{url}/api/hello", "http://localhost:3000") == 200
        config.write_text("cors: {mode: enforce}\n")
        proc.proc.send_signal(signal.SIGHUP)
        proc.wait(lambda: [m for m in proc.messages() if m.startswith("reload: route /")])
        # Another one on the same port and admin port: the bind conflict, as JSON too.
        port = url.rsplit(":", 1)[1]
        conflict = Serve("--log-format", "json", "-c", str(config), "--demo", "--listen",
                         f"127.0.0.1:{port}")  # fmt: skip
        assert conflict.exited() == 1
    finally:
        assert proc.stop() == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text("upstream: nope\ncors: {allow_origins: [x]}\n")
    broken = Serve("--log-format", "json", "-c", str(bad))
    assert broken.exited() == 2
    # A worker that finds no configuration snapshot (removed by a /tmp cleaner) says so.
    orphan = Serve(
        "--log-format", "json", "-c", str(config), "--upstream", "http://127.0.0.1:9",
        "--listen", "127.0.0.1:0",
        env={"CORSPROXY_WORKER": "1", "CORSPROXY_CONFIG_SNAPSHOT": str(tmp_path / "gone")},
    )  # fmt: skip
    try:
        orphan.url()
    finally:
        orphan.stop()

    for run in (proc, conflict, broken, orphan):
        assert run.lines
        assert all(_is_log_line(line) for line in run.lines), run.lines
    messages = proc.messages()
    assert any("warning: report-only" in m for m in messages)
    (banner,) = [r for r in proc.records() if r["message"].startswith("corsproxy demo: ")]
    assert banner["url"] == url
    assert any(
        e.startswith("curl -i -H 'Origin: http://localhost:3000'") for e in banner["examples"]
    )
    assert "reload: route /: changed cors.mode" in messages
    assert messages[-1] == "stopped"
    (error,) = [r for r in conflict.records() if r["level"] == "error"]
    assert error["listener"] == "listen"
    assert error["source"] == "--listen"
    errors = [r for r in broken.records() if r["level"] == "error"]
    assert [(r.get("line"), r.get("key")) for r in errors] == [
        (1, "upstream"),
        (2, "cors.allow_origins[0]"),
        (None, None),  # the count
    ]
    assert any("no configuration snapshot" in m for m in orphan.messages())
    # `check` stays human text.
    check = subprocess.run(
        [sys.executable, "-m", "corsproxy", "check", "-c", str(bad)],
        capture_output=True, text=True, timeout=TIMEOUT * 3, cwd=ROOT, check=False,
    )  # fmt: skip
    assert check.returncode == 2
    assert check.stderr.startswith(f"{bad}:1: upstream: ")


@pytest.mark.parametrize("workers", ["1", "2"])
def test_reload_errors_carry_file_line_and_key_as_start_up_ones_do(
    tmp_path: Path, workers: str
) -> None:
    config = tmp_path / "c.yaml"
    good = f"upstream: http://127.0.0.1:{refusing_port()}\ncors: {{allow_origins: [{APP}]}}\n"
    config.write_text(good)
    proc = Serve("--log-format", "json", "-c", str(config), "--listen", "127.0.0.1:0",
                 "--workers", workers)  # fmt: skip

    def failed(count: int) -> list[dict[str, Any]]:
        return proc.wait(
            lambda: (
                len([m for m in proc.messages() if m.startswith("reload failed")]) >= count
                and [r for r in proc.records() if r["message"].startswith("reload: ")]
            )
        )

    try:
        proc.wait(lambda: sum(" ready" in m for m in proc.messages()) == int(workers) > 1
                  or (int(workers) == 1 and " listening on " in str(proc.messages())))  # fmt: skip
        config.write_text(good + "cors: [\n")  # a YAML syntax error: a line and a column
        proc.proc.send_signal(signal.SIGHUP)
        failed(1)
        config.write_text(good.replace("cors: {", "cors: {max_age: 5x, "))  # a key's error
        proc.proc.send_signal(signal.SIGHUP)
        reloads = failed(2)
    finally:
        assert proc.stop() == 0
    syntax, value = [r for r in reloads if r["level"] == "error"][:2]
    assert "YAML" in syntax["message"], reloads
    assert syntax["file"] == str(config) and syntax["line"] >= 3 and syntax["column"] >= 1
    assert "key" not in syntax  # none for a syntax error: no `"key": ""`
    assert value["message"].startswith(f"reload: {config}:2: cors.max_age: "), value
    assert (value["file"], value["line"], value["key"]) == (str(config), 2, "cors.max_age")


def test_flags_and_variables_have_no_line_number(tmp_path: Path) -> None:
    """No file: `command line: upstream: ...`, not `command line:1:`; no `"line": 0`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CORSPROXY_")}
    nothing = subprocess.run(
        [sys.executable, "-m", "corsproxy", "serve", "--log-format", "json"],
        capture_output=True, text=True, timeout=TIMEOUT * 3, cwd=ROOT, check=False, env=env,
    )  # fmt: skip
    assert nothing.returncode == 2, nothing.stderr
    records = [json.loads(line) for line in nothing.stderr.splitlines()]
    first = records[0]
    assert first["message"].startswith("command line: upstream: no upstream"), records
    assert (first["file"], first["key"], "line" in first) == ("command line", "upstream", False)
    warning = [r for r in records if "no origin is allowed" in r["message"]]
    assert warning and warning[0]["level"] == "warning", records
    assert warning[0]["message"].startswith("command line: cors.allow_origins: warning: ")
    env["CORSPROXY_ALLOW_ORIGINS"] = "nope"
    variable = subprocess.run(
        [sys.executable, "-m", "corsproxy", "serve", "--log-format", "json"],
        capture_output=True, text=True, timeout=TIMEOUT * 3, cwd=ROOT, check=False, env=env,
    )  # fmt: skip
    (bad,) = [json.loads(line) for line in variable.stderr.splitlines() if "nope" in line]
    assert bad["message"].startswith("CORSPROXY_ALLOW_ORIGINS: cors.allow_origins[0]: "), bad
    assert bad["file"] == "CORSPROXY_ALLOW_ORIGINS" and "line" not in bad


# --- bind errors -----------------------------------------------------------------------


def _bind_error(proc: Serve) -> tuple[int, dict[str, Any]]:
    code = proc.exited()
    errors = [r for r in proc.records() if r.get("level") == "error" and "listener" in r]
    assert errors, proc.lines
    return code, errors[0]


@contextlib.contextmanager
def taken() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_a_port_in_use_names_the_flag_and_who_to_ask() -> None:
    with taken() as port:
        code, error = _bind_error(
            Serve(
                "--log-format",
                "json",
                "--upstream",
                "http://127.0.0.1:9",
                "--listen",
                f"127.0.0.1:{port}",
            )
        )
    assert code == 1  # as before
    assert error["message"] == (
        f"corsproxy: cannot listen: listen 127.0.0.1:{port} (set by --listen): address already "
        f"in use; another process listens there (`ss -ltnp 'sport = :{port}'`)"
    )
    assert (error["listener"], error["address"], error["error"]) == (
        "listen", f"127.0.0.1:{port}", "address already in use"
    )  # fmt: skip


def test_the_admin_listener_names_its_line_in_the_file(tmp_path: Path) -> None:
    with taken() as port:
        config = tmp_path / "c.yaml"
        config.write_text(
            "upstream: http://127.0.0.1:9\nlisten: 127.0.0.1:0\n"
            f"admin:\n  listen: 127.0.0.1:{port}\n"
        )
        code, error = _bind_error(Serve("--log-format", "json", "-c", str(config)))
    assert code == 1
    assert error["listener"] == "admin.listen"
    assert error["source"] == f"{config}:4"


def test_the_variable_is_named_and_workers_name_the_file(tmp_path: Path) -> None:
    with taken() as port:
        code, error = _bind_error(
            Serve(
                "--log-format",
                "json",
                "--upstream",
                "http://127.0.0.1:9",
                env={"CORSPROXY_LISTEN": f"127.0.0.1:{port}"},
            )
        )
        assert (code, error["source"]) == (1, "CORSPROXY_LISTEN")
        # A worker gets its address pinned in CORSPROXY_LISTEN: it still names the file.
        config = tmp_path / "c.yaml"
        config.write_text(f"upstream: http://127.0.0.1:9\nlisten: 127.0.0.1:{port}\n")
        code, error = _bind_error(
            Serve("--log-format", "json", "-c", str(config), "--workers", "2")
        )
    assert code == 1
    assert error["source"] == f"{config}:2"


def test_an_address_this_host_does_not_have() -> None:
    code, error = _bind_error(
        Serve(
            "--log-format",
            "text",
            "--upstream",
            "http://127.0.0.1:9",
            "--listen",
            "192.0.2.1:8080",
            "--log-format",
            "json",
        )
    )
    assert code == 1
    assert error["error"] == "cannot assign requested address"
    assert error["hint"] == "this host has no such address (0.0.0.0 listens on all of them)"


def test_a_low_port_without_the_privilege_says_which_capability() -> None:
    port = 81
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            pytest.skip("port 81 is in use here")
    prefix: list[str] = []
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv to drop CAP_NET_BIND_SERVICE")
        prefix = ["setpriv", "--inh-caps=-net_bind_service", "--bounding-set=-net_bind_service"]
    if int(Path("/proc/sys/net/ipv4/ip_unprivileged_port_start").read_text()) <= port:
        pytest.skip("low ports need no privilege on this host")
    proc = subprocess.run(
        [*prefix, sys.executable, "-m", "corsproxy", "serve", "--log-format", "text",
         "--upstream", "http://127.0.0.1:9", "--listen", f"127.0.0.1:{port}"],
        capture_output=True, text=True, timeout=TIMEOUT * 3, cwd=ROOT, check=False,
    )  # fmt: skip
    assert proc.returncode == 1
    assert (
        f"corsproxy: cannot listen: listen 127.0.0.1:{port} (set by --listen): permission "
        "denied; ports below 1024 need a privilege" in proc.stderr
    )
    assert "CAP_NET_BIND_SERVICE" in proc.stderr


def test_where_a_listen_address_came_from(tmp_path: Path) -> None:
    from corsproxy.config import Override

    config = tmp_path / "c.yaml"
    config.write_text("upstream: http://u:1\n\nlisten: 127.0.0.1:1\n")
    flag = Override(("admin", "listen"), "127.0.0.1:2", "--admin-listen")
    assert listen_source("listen", str(config), None, ()) == f"{config}:3"
    assert listen_source("admin.listen", str(config), None, [flag]) == "--admin-listen"
    assert listen_source("listen", None, None, ()) == "the default"
    assert listen_source("admin.listen", str(config), None, ()) == "the default"


def test_the_json_demo_banner_points_to_your_first_config() -> None:
    """The JSON banner carries what the text one says: the next step, in its own field."""
    proc = Serve("--log-format", "json", "--demo", "--listen", "127.0.0.1:0")
    try:
        banner = proc.wait(
            lambda: [
                r for r in proc.records() if str(r.get("message", "")).startswith("corsproxy demo:")
            ]
        )[0]
        assert '"Your first config" in the README' in banner["next"]
    finally:
        assert proc.stop() == 0
