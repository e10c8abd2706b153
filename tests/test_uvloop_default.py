"""uvloop is a default dependency (issue 16): the wheel requires it where it has wheels, and
`corsproxy serve` as the README starts it runs on it; `--no-uvloop` (and its variable) keeps
asyncio's loop; without uvloop installed `serve` says so in one line and runs on asyncio's."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement

from tests.net import ROOT, TIMEOUT, free_port

ORIGIN = "https://app.example"


def test_the_wheel_requires_uvloop_on_cpython_outside_windows(tmp_path: Path) -> None:
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path), str(ROOT)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert build.returncode == 0, build.stdout + build.stderr
    [wheel] = tmp_path.glob("corsproxy-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        [name] = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        metadata = archive.read(name).decode()
    requires = [
        Requirement(line.split(":", 1)[1].strip())
        for line in metadata.splitlines()
        if line.startswith("Requires-Dist:")
    ]
    # A default requirement: no `extra == ...` in its marker.
    default = [r for r in requires if r.name == "uvloop" and "extra" not in str(r.marker)]
    assert len(default) == 1, metadata
    (uvloop,) = default
    assert str(uvloop.specifier) == ">=0.19"
    assert uvloop.marker is not None
    assert uvloop.marker == Marker(
        "sys_platform != 'win32' and platform_python_implementation == 'CPython'"
    ) or uvloop.marker == Marker(
        "platform_python_implementation == 'CPython' and sys_platform != 'win32'"
    ), uvloop.marker
    for platform, implementation, wanted in [
        ("linux", "CPython", True),
        ("darwin", "CPython", True),
        ("win32", "CPython", False),
        ("linux", "PyPy", False),
    ]:
        env = {"sys_platform": platform, "platform_python_implementation": implementation}
        assert uvloop.marker.evaluate(env) is wanted, env
    # The `speed` extra stays (users name it in `pip install corsproxy[speed]`).
    assert "Provides-Extra: speed" in metadata


def _corsproxy() -> list[str]:
    """The console script as the README runs it (`pip install . && corsproxy serve`)."""
    script = Path(sys.executable).parent / "corsproxy"
    return [str(script)] if script.exists() else [sys.executable, "-m", "corsproxy"]


@contextlib.contextmanager
def serving(
    tmp_path: Path, *flags: str, env: dict[str, str] | None = None
) -> Iterator[tuple[list[dict[str, Any]], str]]:
    """`corsproxy serve` with default logging (JSON lines: stderr is a pipe); yields the
    records up to and with the summary line, and the URL."""
    config = tmp_path / "c.yaml"
    config.write_text(
        f"upstream: http://127.0.0.1:{free_port()}\ncors:\n  allow_origins: [{ORIGIN}]\n"
    )
    port = free_port()
    proc = subprocess.Popen(
        [*_corsproxy(), "serve", "-c", str(config), "--listen", f"127.0.0.1:{port}", *flags],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        env={**os.environ, "CORSPROXY_PROBE_TIMEOUT": "0", **(env or {})},
    )  # fmt: skip
    records: list[dict[str, Any]] = []
    lines: list[str] = []
    try:
        assert proc.stderr is not None
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            lines.append(line)
            records.append(json.loads(line))  # every line is JSON: no traceback
            if records[-1].get("message") == "configuration loaded":
                break
        else:
            raise AssertionError("no summary line:\n" + "".join(lines))
        if not records or records[-1].get("message") != "configuration loaded":
            proc.kill()
            _, err = proc.communicate(timeout=TIMEOUT)
            raise AssertionError("corsproxy did not start:\n" + "".join(lines) + err)
        while time.monotonic() < deadline:  # with --workers the summary comes first
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)
        yield records, f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            _, rest = proc.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, rest = proc.communicate(timeout=TIMEOUT)
    assert "Traceback" not in "".join(lines) + rest, "".join(lines) + rest


def _serves(url: str) -> None:
    """A request is answered (a 502: the upstream is not there, but the loop serves)."""
    request = urllib.request.Request(f"{url}/x", headers={"Origin": ORIGIN})
    with pytest.raises(urllib.error.HTTPError) as answer:
        urllib.request.urlopen(request, timeout=TIMEOUT)
    answer.value.close()
    assert answer.value.code == 502


@pytest.mark.parametrize(
    ("flags", "env", "loop"),
    [
        ((), {}, "uvloop"),
        (("--no-uvloop",), {}, "asyncio"),
        ((), {"CORSPROXY_UVLOOP": "false"}, "asyncio"),
        (("--uvloop",), {}, "uvloop"),
        # With workers the supervisor says the summary line: its workers' loop.
        (("--workers", "2"), {}, "uvloop"),
        (("--workers", "2", "--no-uvloop"), {}, "asyncio"),
    ],
)
def test_serve_runs_on_uvloop_by_default(
    tmp_path: Path, flags: tuple[str, ...], env: dict[str, str], loop: str
) -> None:
    pytest.importorskip("uvloop")
    with serving(tmp_path, *flags, env=env) as (records, url):
        _serves(url)
    assert records[-1]["loop"] == loop
    assert not [r for r in records if "uvloop" in r["message"]], records


@pytest.fixture
def without_uvloop(tmp_path: Path) -> dict[str, str]:
    """An environment where `import uvloop` fails, as on a platform without its wheels."""
    shadow = tmp_path / "no-uvloop"
    shadow.mkdir()
    (shadow / "uvloop.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'uvloop'\", name='uvloop')\n"
    )
    path = os.environ.get("PYTHONPATH")
    return {"PYTHONPATH": str(shadow) + (os.pathsep + path if path else "")}


@pytest.mark.parametrize(
    ("flags", "level"), [((), "info"), (("--uvloop",), "warning"), (("--no-uvloop",), None)]
)
def test_without_uvloop_serve_says_so_and_runs_on_asyncio(
    tmp_path: Path, without_uvloop: dict[str, str], flags: tuple[str, ...], level: str | None
) -> None:
    with serving(tmp_path, *flags, env=without_uvloop) as (records, url):
        _serves(url)
    assert records[-1]["loop"] == "asyncio"
    said = [r for r in records if "uvloop is not installed" in r["message"]]
    if level is None:  # asked for asyncio's loop: nothing to say
        assert not said, records
        return
    (line,) = said
    assert line["level"] == level
    assert "running on asyncio's event loop" in line["message"]
    assert "--no-uvloop" in line["message"]
