"""The repository passes its own linters: ruff (lint and format) and mypy --strict, run as
subprocesses with the configuration in pyproject.toml.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


def tool_command(module: str) -> list[str]:
    """How to run ``module``: as ``python -m module`` when importable here, else from PATH."""
    if importlib.util.find_spec(module) is not None:
        return [sys.executable, "-m", module]
    executable = shutil.which(module)
    if executable is None:
        pytest.skip(f"{module} is not installed (pip install '.[test]' provides it)")
    return [executable]


def run_tool(command: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=600, check=False)


def test_ruff_check_passes(repo_root: Path) -> None:
    """`ruff check .` reports nothing."""
    result = run_tool([*tool_command("ruff"), "check", "--no-cache", "."], repo_root)
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format_check_passes(repo_root: Path) -> None:
    """`ruff format --check .` finds nothing to reformat."""
    result = run_tool([*tool_command("ruff"), "format", "--check", "--no-cache", "."], repo_root)
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_passes(repo_root: Path) -> None:
    """`mypy --strict` on the configured files (the package and the benchmarks) reports no error."""
    result = run_tool([*tool_command("mypy"), "--strict"], repo_root)
    assert result.returncode == 0, result.stdout + result.stderr
