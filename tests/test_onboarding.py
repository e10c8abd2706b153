"""Onboarding (issue 15, section 7): the README's "Your first config" commands really work, the
table of contents is true, shell completion works as documented, the published JSON Schema
is `corsproxy schema` and the `$schema` lines find it, the demo banner points to the README,
the Kubernetes example names its placeholders, and the image's version label is the package's.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import yaml
from click.testing import CliRunner

from corsproxy import __version__
from corsproxy.commands.cli import _demo_banner, cli
from tests.net import free_port

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
BIN = Path(sys.executable).parent  # the venv's bin: `corsproxy` as the README calls it
TIMEOUT = 60


def section(title: str) -> str:
    return README.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def first_config_commands() -> list[str]:
    return re.findall(r"```sh\n(.*?)\n```", section("Your first config"), re.S)


def run(command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", command],
        cwd=cwd,
        env={**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"},
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


def test_your_first_config_comes_right_after_set_up() -> None:
    headings = re.findall(r"^## (.+)$", README, re.M)
    assert headings[headings.index("Set-up") + 1] == "Your first config"


def test_your_first_config_commands_work(tmp_path: Path) -> None:
    write, check, explain, serve = first_config_commands()
    assert write.startswith("cat > corsproxy.yaml <<'EOF'")
    assert run(write, tmp_path).returncode == 0
    checked = run(check, tmp_path)
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.startswith("corsproxy.yaml: OK: upstream http://127.0.0.1:9000")
    assert checked.stderr == ""  # no warnings in a first config
    explained = run(explain, tmp_path)
    assert explained.returncode == 0, explained.stdout + explained.stderr
    assert "preflight" in explained.stdout.lower()
    # `serve` as written, on a free port (the variable wins over the file's listen).
    port = free_port()
    proc = subprocess.Popen(
        ["bash", "-c", f"exec {serve}"],
        cwd=tmp_path,
        env={
            **os.environ,
            "PATH": f"{BIN}:{os.environ['PATH']}",
            "CORSPROXY_LISTEN": f"127.0.0.1:{port}",
            "CORSPROXY_LOG_FORMAT": "json",
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        deadline = time.monotonic() + TIMEOUT
        started = False
        while not started and time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            with contextlib.suppress(json.JSONDecodeError):
                started = "listening on" in json.loads(line).get("message", "")
        if not started:
            proc.kill()
            raise AssertionError(f"serve did not start: {proc.communicate(timeout=TIMEOUT)}")
        preflight = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/items",
            method="OPTIONS",
            headers={
                "Origin": "http://localhost:5173",
                "Access-Control-Request-Method": "PUT",
                "Access-Control-Request-Headers": "content-type",
            },
        )
        with urllib.request.urlopen(preflight, timeout=TIMEOUT) as answer:
            assert answer.status == 204
            assert answer.headers["Access-Control-Allow-Origin"] == "http://localhost:5173"
            assert answer.headers["Access-Control-Allow-Credentials"] == "true"
    finally:
        proc.terminate()
        proc.communicate(timeout=TIMEOUT)


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_table_of_contents_lists_every_section() -> None:
    contents = README.split("**Contents:**", 1)[1].split("\n## ", 1)[0]
    links = re.findall(r"\[([^\]]+)\]\(#([^)]+)\)", contents)
    headings = re.findall(r"^## (.+)$", README, re.M)
    assert [title for title, _ in links] == headings, "README: add the section to **Contents:**"
    for title, anchor in links:
        assert anchor == _slug(title), title


def test_shell_completion_works_as_documented() -> None:
    completion = section("Your first config").split("**Shell completion**", 1)[1]
    for shell in ("bash", "zsh", "fish"):
        assert f"_CORSPROXY_COMPLETE={shell}_source corsproxy" in completion
        script = run(f"_CORSPROXY_COMPLETE={shell}_source corsproxy", ROOT)
        assert script.returncode == 0
        assert "_CORSPROXY_COMPLETE" in script.stdout, shell
    # What the bash script asks for when the user types `corsproxy se<TAB>`.
    asked = run(
        "COMP_WORDS='corsproxy se' COMP_CWORD=1 _CORSPROXY_COMPLETE=bash_complete corsproxy", ROOT
    )
    assert asked.stdout.split() == ["plain,serve"]
    asked = run(
        "COMP_WORDS='corsproxy serve --log-format ' COMP_CWORD=3 "
        "_CORSPROXY_COMPLETE=bash_complete corsproxy",
        ROOT,
    )
    assert asked.stdout.split() == ["plain,text", "plain,json"]
    # The README promises flags and their choices: --mode and --on-disallowed complete too.
    for flag, typed, expected in (
        ("--mode", "", ["plain,enforce", "plain,report-only"]),
        ("--mode", "r", ["plain,report-only"]),
        ("--on-disallowed", "", ["plain,forward", "plain,reject"]),
    ):
        asked = run(
            f"COMP_WORDS='corsproxy serve {flag} {typed}' COMP_CWORD=3 "
            "_CORSPROXY_COMPLETE=bash_complete corsproxy",
            ROOT,
        )
        assert asked.stdout.split() == expected, (flag, typed, asked.stdout)


# --- the published JSON Schema ---------------------------------------------------------------

SCHEMA = ROOT / "schema" / "corsproxy.schema.json"


def test_published_schema_is_corsproxy_schema() -> None:
    printed = CliRunner().invoke(cli, ["schema"])
    assert printed.exit_code == 0
    assert SCHEMA.read_text() == printed.output, (
        "the config's spec changed: corsproxy schema > schema/corsproxy.schema.json"
    )


def test_every_schema_line_finds_the_published_schema() -> None:
    lines = 0
    for path in [ROOT / "config.example.yaml", *sorted((ROOT / "examples").rglob("*.yaml"))]:
        first = path.read_text().splitlines()[0]
        found = re.fullmatch(r"# yaml-language-server: \$schema=(\S+)", first)
        if path.name == "compose.yaml":  # Docker Compose's own file, not a corsproxy config
            continue
        assert found, f"{path}: the first line should be the $schema line"
        assert (path.parent / found.group(1)).resolve() == SCHEMA.resolve(), path
        lines += 1
    assert lines >= 2
    assert "$schema=./schema/corsproxy.schema.json" in README


def test_demo_banner_points_to_your_first_config() -> None:
    assert '"Your first config" in the README' in _demo_banner("http://127.0.0.1:8080")


# --- deployment -----------------------------------------------------------------------------


def test_image_version_label_is_the_package_version() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    final_stage = dockerfile.rsplit("\nFROM ", 1)[1]
    assert f"\nARG VERSION={__version__}\n" in final_stage
    assert 'org.opencontainers.image.version="${VERSION}"' in final_stage
    build = (ROOT / "tests" / "docker" / "run.sh").read_text()
    assert '--build-arg VERSION="$VERSION"' in build
    version = run(
        """sed -n 's/^__version__ = "\\(.*\\)"$/\\1/p' corsproxy/__init__.py""", ROOT
    ).stdout.strip()
    assert version == __version__  # the line run.sh uses reads the package's version
    assert '[ "$LABEL" = "$VERSION" ]' in build  # and run.sh checks the built image's label
    deployment = yaml.safe_load((ROOT / "deploy" / "kubernetes" / "deployment.yaml").read_text())
    containers = deployment["spec"]["template"]["spec"]["containers"]
    image = next(c["image"] for c in containers if c["name"] == "corsproxy")
    assert image.endswith(f":{__version__}")


def test_kubernetes_example_names_its_placeholders() -> None:
    text = (ROOT / "deploy" / "kubernetes" / "deployment.yaml").read_text()
    for value in (
        "registry.example.com/legacy-api:1.0.0",
        "containerPort: 9000",
        "ghcr.io/example/corsproxy",
    ):
        line = next(
            line for line in text.splitlines() if value in line and not line.startswith("#")
        )
        assert "placeholder" in line, line
    assert "runAsNonRoot applies to the API container too" in text
    configmap = (ROOT / "deploy" / "kubernetes" / "configmap.yaml").read_text()
    assert "placeholders: your front ends' origins" in configmap
    assert "`runAsNonRoot: true` applies to the API container too" in README
