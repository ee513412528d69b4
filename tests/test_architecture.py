"""The architecture of rfcs/0012-architecture.md holds: layers point one way (the
import-linter contracts in pyproject.toml), no module takes part in an import cycle, every
module is placed in a layer, no module grows past 700 lines, and the package's face gives
the names users reach for without importing any heavy dependency.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import geno_lewm

grimp = pytest.importorskip("grimp")
try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser as a package
    tomllib: Any = pytest.importorskip("tomli")  # type: ignore[no-redef]

MAX_MODULE_LINES = 700
HEAVY = ("numpy", "torch", "structlog", "pydantic", "lightning", "matplotlib")


def _graph() -> object:
    return grimp.build_graph("geno_lewm", cache_dir=None)


def _contracts(repo_root: Path) -> list[dict[str, object]]:
    config = tomllib.loads((repo_root / "pyproject.toml").read_text(encoding="utf-8"))
    contracts: list[dict[str, object]] = config["tool"]["importlinter"]["contracts"]
    return contracts


def test_import_linter_contracts_are_kept(repo_root: Path) -> None:
    """`lint-imports` finds every contract of pyproject.toml kept."""
    runner = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"
    result = subprocess.run(
        [sys.executable, "-c", runner, "--no-cache", "pyproject.toml"],
        cwd=repo_root,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert " 0 broken" in result.stdout


def _cycles(graph: object) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    modules = sorted(graph.modules)  # type: ignore[attr-defined]
    edges = {m: sorted(graph.find_modules_directly_imported_by(m)) for m in modules}  # type: ignore[attr-defined]
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in edges.get(node, []):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for module in modules:
        if module not in index:
            visit(module)
    return found


def test_no_module_takes_part_in_an_import_cycle() -> None:
    """Between any two modules of the package (parents and children included, imports for
    type checking included) there is no cycle of imports.
    """
    assert _cycles(_graph()) == []


def test_every_module_is_placed_in_a_layer(repo_root: Path) -> None:
    """Each module of the package falls under a module named by the layers or the telemetry
    and reading contracts, so a new module cannot escape the contracts unnoticed.
    """
    named: set[str] = set()
    for contract in _contracts(repo_root):
        if contract["id"] == "stack":
            for layer in contract["layers"]:  # type: ignore[union-attr]
                named.update(part.strip() for part in str(layer).replace(":", "|").split("|"))
        if contract["id"] in ("telemetry", "reading"):
            named.update(contract["source_modules"])  # type: ignore[arg-type]
    modules = _graph().modules  # type: ignore[attr-defined]
    unplaced = sorted(
        m for m in modules if m != "geno_lewm" and not any(m == n or m.startswith(n + ".") for n in named)
    )
    assert unplaced == []


def test_no_module_is_over_700_lines(repo_root: Path) -> None:
    """Every module of the package has at most 700 lines: split by job before that."""
    sizes = {
        str(path.relative_to(repo_root)): len(path.read_text(encoding="utf-8").splitlines())
        for path in (repo_root / "geno_lewm").rglob("*.py")
    }
    assert {path: lines for path, lines in sizes.items() if lines > MAX_MODULE_LINES} == {}


def test_the_face_gives_each_name_from_its_own_module() -> None:
    """Every name in geno_lewm.__all__ is the very object its defining module holds."""
    for name in geno_lewm.__all__:
        if name == "__version__":
            continue
        module = importlib.import_module(geno_lewm._EXPORTS[name])
        assert getattr(geno_lewm, name) is getattr(module, name), name
    assert set(geno_lewm.__all__) == {"__version__", *geno_lewm._EXPORTS}
    with pytest.raises(AttributeError, match="no attribute 'nonexistent'"):
        _ = geno_lewm.nonexistent


def test_the_face_imports_nothing_heavy_until_used(repo_root: Path) -> None:
    """`import geno_lewm` and using its collapse core import none of numpy, torch, structlog,
    pydantic, lightning or matplotlib; asking for the logger then brings structlog only.
    """
    code = (
        "import json, sys\n"
        "import geno_lewm\n"
        "heavy = " + repr(HEAVY) + "\n"
        "def loaded():\n"
        "    return sorted(m for m in sys.modules if m.split('.')[0] in heavy)\n"
        "first = loaded()\n"
        "monitor = geno_lewm.CollapseMonitor(log_every_steps=1, registry=geno_lewm.MetricRegistry())\n"
        "check = monitor.observe([[1.0, 0.0], [0.0, 1.0]], [[1.0, 0.0], [0.0, 1.0]], kl_reg=0.0, step=1)\n"
        "second = loaded()\n"
        "geno_lewm.get_logger\n"
        "print(json.dumps([first, second, loaded(), check.tripped]))\n"
    )
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(repo_root), env.get("PYTHONPATH")]))
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env, cwd=repo_root, check=False
    )
    assert result.returncode == 0, result.stderr
    first, second, third, tripped = json.loads(result.stdout.strip().splitlines()[-1])
    assert (first, second, tripped) == ([], [], False)
    assert {name.split(".")[0] for name in third} == {"structlog"}
