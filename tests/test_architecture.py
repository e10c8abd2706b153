"""The layers of docs/architecture.md, enforced: imports only run down
commands -> http -> config -> policy (ops beside), and pure modules do no I/O."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "corsproxy"
# What each layer may import of corsproxy (besides itself and the package root).
ALLOWED = {
    "policy": set(),
    "config": {"policy"},
    "ops": {"config", "policy"},
    "http": {"config", "policy", "ops"},
    "commands": {"http", "config", "policy", "ops"},
}
# No I/O and no event loop in the pure core.
IMPURE = {"aiohttp", "asyncio", "socket", "ssl", "subprocess", "multidict", "yarl", "uvloop"}
PURE = [
    *sorted(p for p in (PACKAGE / "policy").glob("*.py")),
    PACKAGE / "http" / "headers.py",
    PACKAGE / "http" / "errors.py",
    PACKAGE / "http" / "h1response.py",
]


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module)
            if node.module == "corsproxy":
                found += [f"corsproxy.{alias.name}" for alias in node.names]
    return found


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "corsproxy" and parts[1] in ALLOWED else None


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if p.parent != PACKAGE)


def test_every_module_lives_in_a_layer() -> None:
    flat = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert flat == ["__init__.py", "__main__.py"], flat
    assert {p.parent.name for p in MODULES} == set(ALLOWED)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_imports_only_run_down_the_layers(path: Path) -> None:
    own = path.parent.name
    for module in _imports(path):
        layer = _layer(module)
        if layer is not None and layer != own:
            assert layer in ALLOWED[own], f"{own}/{path.name} imports {module}"


@pytest.mark.parametrize("path", PURE, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_pure_modules_do_no_io(path: Path) -> None:
    for module in _imports(path):
        assert module.split(".")[0] not in IMPURE, f"{path.name} imports {module}"
