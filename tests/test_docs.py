"""The README's promises: the two set-up commands, and a reference for every config key."""

from __future__ import annotations

import ast
import re
import shlex
from pathlib import Path

import pytest
from click.testing import CliRunner

from corsproxy.commands.cli import cli
from corsproxy.config import CONFIG_SPEC, POLICY_SPEC, ROUTE_SPEC
from corsproxy.policy.cors import ReasonCode

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def setup_commands() -> list[str]:
    section = README.split("## Set-up", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.*?)\n```", section, re.S)


def test_readme_has_exactly_two_setup_commands() -> None:
    commands = setup_commands()
    assert len(commands) == 2
    assert all("\n" not in c for c in commands), "each is one line a newcomer can paste"


def test_ci_runs_the_readme_test_command() -> None:
    test_command = setup_commands()[1]
    assert "pytest" in test_command
    assert test_command in (ROOT / ".ci" / "run").read_text().splitlines()


def test_every_config_key_is_documented() -> None:
    for spec in (CONFIG_SPEC, POLICY_SPEC, ROUTE_SPEC):
        for key in spec.fields:
            assert f"`{key}`" in README or f"{key}:" in README, key


def test_every_decision_reason_code_is_documented() -> None:
    """Reason codes are an interface (logs, metrics, explain): the README lists each one."""
    section = README.split("**Reason codes**", 1)[1].split("\n\n", 1)[0]
    documented = set(re.findall(r"`([a-z_]+)(?::[A-Za-z]+)?`", section))
    codes = {code.value for code in ReasonCode}
    assert codes <= documented, codes - documented


def test_explains_own_reason_codes_are_documented() -> None:
    """The codes only `explain` gives (no request, or a browser's own refusal) are listed too."""
    from corsproxy.commands.explain import MODE_INDEPENDENT

    section = README.split("**Reason codes**", 1)[1].split("\n\n", 1)[0]
    documented = set(re.findall(r"`([a-z_]+)(?::[A-Za-z]+)?`", section))
    assert documented >= MODE_INDEPENDENT, MODE_INDEPENDENT - documented


def _has_code(path: Path) -> bool:
    body = ast.parse(path.read_text()).body
    return any(not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant)) for n in body)


def test_the_module_table_lists_every_module() -> None:
    architecture = (ROOT / "docs" / "architecture.md").read_text()
    table = architecture.split("| module | owns |", 1)[1].split("\n\n", 1)[0]
    listed = set(re.findall(r"^\| `(corsproxy/[\w/]+\.py)` \|", table, re.M))
    modules = {
        str(path.relative_to(ROOT))
        for path in (ROOT / "corsproxy").rglob("*.py")
        if path.name != "__init__.py" or _has_code(path)  # a package's docstring is no module
    }
    assert listed == modules


def test_the_readme_explain_example_is_what_explain_prints(monkeypatch: pytest.MonkeyPatch) -> None:
    """The example's command, run against config.example.yaml, prints the lines shown after
    `...` (a line number in the fix, a header the policy adds: kept true)."""
    section = README.split("## Checking and explaining a policy", 1)[1]
    block = re.search(r"```console\n(.*?)\n```", section, re.S)
    assert block is not None
    example = block.group(1).split("$ corsproxy explain ", 1)[1]
    command, shown = example.split("\n...\n", 1)
    monkeypatch.chdir(ROOT)
    result = CliRunner().invoke(cli, ["explain", *shlex.split(command.replace("\\\n", " "))])
    assert result.exit_code == 1, result.output
    expected = shown.splitlines()
    assert result.stdout.splitlines()[-len(expected) :] == expected
