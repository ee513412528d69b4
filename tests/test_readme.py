"""The README's Quickstart and CI stay in step."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _quickstart_commands() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", section, flags=re.S)]


def test_quickstart_has_exactly_two_commands() -> None:
    """The Quickstart shows one set-up-and-run command and one test command, each a single line."""
    commands = _quickstart_commands()
    assert len(commands) == 2
    assert all("\n" not in command for command in commands)


def test_ci_runs_the_readme_test_command() -> None:
    """.ci/run executes exactly the README's second Quickstart command."""
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()]
    assert _quickstart_commands()[1] in ci_lines


def test_main_job_runs_the_demo() -> None:
    """The first Quickstart command runs the demonstration of the monitor."""
    assert _quickstart_commands()[0].endswith("-m geno_lewm demo --out demo-output")
