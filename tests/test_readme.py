"""The README's Quickstart and CI stay in step, and every code block in it runs as written."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
_FENCE = re.compile(r"^```(\w*)\n(.*?)^```", flags=re.S | re.M)


def _readme() -> str:
    return (ROOT / "README.md").read_text(encoding="utf-8")


def _quickstart_commands() -> list[str]:
    section = _readme().split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", section, flags=re.S)]


def _blocks_after_quickstart() -> list[tuple[str, str]]:
    """(language, code) of each fenced block after the Quickstart, in reading order."""
    text = _readme()
    rest = text[text.index("## In a training loop") :]
    return [(match.group(1), match.group(2)) for match in _FENCE.finditer(rest)]


def _command_line() -> list[str]:
    """How to run ``.venv/bin/geno-lewm``: the installed script beside this interpreter, else the module."""
    script = Path(sys.executable).parent / "geno-lewm"
    return [str(script)] if script.exists() else [sys.executable, "-m", "geno_lewm"]


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


def test_the_command_the_readme_names_is_the_installed_cli() -> None:
    """`geno-lewm` is the package's console script, and where the suite runs in a virtual environment
    (as the Quickstart sets it up) the script is in that environment's bin/, as the README says.
    """
    (script,) = entry_points(group="console_scripts", name="geno-lewm")
    assert script.value == "geno_lewm.cli:main"
    assert ".venv/bin/geno-lewm report" in _readme()
    if sys.prefix != sys.base_prefix:
        assert (Path(sys.executable).parent / "geno-lewm").exists()


def test_every_code_block_is_python_bash_or_yaml() -> None:
    """Every fenced block after the Quickstart is one the README test knows how to run, besides the layout tree."""
    languages = [language for language, _ in _blocks_after_quickstart()]
    assert set(languages) <= {"python", "bash", "yaml", ""}
    assert languages.count("") == 1  # the layout tree, not code
    assert languages.count("python") >= 7 and languages.count("bash") >= 1 and languages.count("yaml") >= 1


def _run_commands(block: str, cwd: Path) -> list[tuple[list[str], subprocess.CompletedProcess[str]]]:
    """Run each line of a bash block (comments dropped), ``.venv/bin/geno-lewm`` as this environment's CLI."""
    results = []
    for line in block.splitlines():
        words = shlex.split(line, comments=True)
        if not words:
            continue
        assert words[0] == ".venv/bin/geno-lewm", line
        command = _command_line() + words[1:]
        completed = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300, check=False)
        results.append((words[1:], completed))
    return results


def _any_alert(log: Path) -> bool:
    lines = log.read_text(encoding="utf-8").splitlines()
    return any(json.loads(line)["event"].endswith(".alert") for line in lines)


@pytest.mark.slow
def test_every_readme_code_block_runs_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The README's Python blocks run in order in one namespace (the stand-ins first), its YAML is the file the
    next block loads, and its commands exit as documented on the log the training-loop example wrote.
    """
    pytest.importorskip("torch")
    pytest.importorskip("lightning")
    pytest.importorskip("yaml")
    pytest.importorskip("matplotlib")
    for variable in ("GENO_LEWM_LOG_DIR", "GENO_LEWM_RUN_ID"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, Any] = {"__name__": "readme"}
    commands: list[tuple[list[str], subprocess.CompletedProcess[str]]] = []
    for index, (language, code) in enumerate(_blocks_after_quickstart()):
        if language == "python":
            exec(compile(code, f"README.md code block {index}", "exec"), namespace)
        elif language == "yaml":
            first = code.splitlines()[0]
            assert first.startswith("# "), "a YAML block names its file in its first line"
            (tmp_path / first[2:].strip()).write_text(code, encoding="utf-8")
        elif language == "bash":
            commands += _run_commands(code, tmp_path)
    printed = capsys.readouterr().out

    from geno_lewm.logs import load_log

    log = tmp_path / "logs" / "run-1.jsonl"
    loaded = load_log(log)
    assert loaded.problems == ()
    events = [record.event for record in loaded.records]
    assert events[0] == "run.start" and events[-1] == "run.end"
    assert loaded.records[-1].status == "completed"
    assert sum(event == "training.metric" for event in events) == 2 * 7  # checks at steps 500 and 1000
    assert "training.metric 500" in printed and "run.end None" in printed  # the read_log example's output
    family_run = load_log(tmp_path / "logs" / "run-2.jsonl")  # the logged_run example
    assert family_run.problems == ()
    assert [record.event for record in family_run.records] == ["run.start", *["training.metric"] * 7, "run.end"]
    assert family_run.records[-1].status == "completed"
    kl_gauge = namespace["kl_gauge"]
    assert f"{namespace['get_gauge'](kl_gauge).value()} {{'kind': 'gauge', 'value': " in printed
    assert namespace["config"].build(lightning=True).callbacks  # the config example built callbacks
    assert isinstance(namespace["trainer"], namespace["lightning"].Trainer)

    by_command = {" ".join(args): completed for args, completed in commands}
    for args, completed in by_command.items():
        expected = 6 if "--fail-on-alert" in args and _any_alert(log) else 0
        assert completed.returncode == expected, (args, completed.stderr)
    assert "run-1" in by_command["report logs/run-1.jsonl"].stdout
    assert json.loads(by_command["report logs/run-1.jsonl --json"].stdout)
    assert (tmp_path / "run.png").stat().st_size > 0
    assert json.loads(by_command["schema"].stdout)


@pytest.mark.slow
def test_the_quickstart_demo_runs_as_written(tmp_path: Path) -> None:
    """The first Quickstart command's run step (``-m geno_lewm demo --out demo-output``) exits 0 and writes its log."""
    run_step = _quickstart_commands()[0].split("&&")[-1].split()
    assert run_step[0] == ".venv/bin/python"
    completed = subprocess.run(
        [sys.executable, *run_step[1:]], cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False
    )
    assert completed.returncode == 0, completed.stderr
    assert "collapse detected" in completed.stdout
    assert list((tmp_path / "demo-output" / "logs").glob("*.jsonl"))


def _good_to_know() -> str:
    return _readme().split("## Good to know", 1)[1].split("\n## ", 1)[0]


def test_good_to_know_covers_the_first_hour() -> None:
    """The Good to know section answers what a new user asks first, one bullet each."""
    topics = re.findall(r"^- \*\*(.+?)\*\*", _good_to_know(), flags=re.M)
    assert topics == [
        "Thresholds.",
        "Validation batch.",
        "No Gaussian term in your loss",
        "Close the run",
        "Where logs go.",
        "Resuming.",
        "Sequence latents",
        "The schedule's names.",
        "Divergence.",
    ]


def test_good_to_know_states_the_default_thresholds() -> None:
    """The thresholds the README states are the ones the monitor uses by default."""
    from geno_lewm.training.collapse import CalibratedThresholds, CollapseThresholds

    text = " ".join(_good_to_know().split())
    rfc, calibrated = CollapseThresholds(), CalibratedThresholds()
    assert f"`pred_var_per_dim` falls below {rfc.pred_var_to_target_var:g} x `target_var_per_dim`" in text
    assert f"`pairwise_pred_dist_mean` falls below {rfc.pairwise_to_initial:g} x its first value" in text
    assert f"`kl_reg` exceeds {rfc.kl_reg_max:g}" in text
    assert f"total variance falls below {calibrated.spread_ratio:g} x" in text
    assert f"direction spread below {calibrated.direction_ratio:g} x" in text
    assert f"effective rank below {calibrated.rank_ratio:g} x" in text
    assert f"one false alarm in {round(1 / calibrated.false_alarm_rate):,} healthy checks" in text
