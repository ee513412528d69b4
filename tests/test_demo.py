"""The demo: a simulated run that collapses part-way, caught by the monitor, with its outputs."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from geno_lewm.demo import run_demo
from geno_lewm.errors import InputError
from geno_lewm.logs import AlertRecord, MetricRecord, load_log, metric_series
from geno_lewm.training.collapse import METRIC_NAMES, metric_name

ROOT = Path(__file__).resolve().parent.parent


def test_demo_catches_the_collapse_after_it_begins(tmp_path: Path) -> None:
    """Alerts start after the simulated collapse begins and never before; the log is whole and
    its alerts are the ones printed.
    """
    stream = io.StringIO()
    result = run_demo(tmp_path, steps=1500, every=100, backend="python", plot=False, stream=stream)
    assert result.checks == 15
    assert result.first_alert_step is not None and result.first_alert_step > result.collapse_step
    loaded = load_log(result.log_path)
    assert loaded.problems == ()
    logged_alerts = [r for r in loaded.records if isinstance(r, AlertRecord)]
    assert {r.step for r in logged_alerts} == {s for s in range(100, 1501, 100) if s >= result.first_alert_step}
    assert all(r.step is not None and r.step > result.collapse_step for r in logged_alerts)
    metrics = [r for r in loaded.records if isinstance(r, MetricRecord)]
    assert len(metrics) == 15 * len(METRIC_NAMES)
    printed = stream.getvalue()
    assert printed.count("COLLAPSE:") == result.checks_with_alerts == len({r.step for r in logged_alerts})
    assert f"first alert at step {result.first_alert_step}" in printed
    assert "alerts: " in printed and "every line readable" in printed


def test_demo_writes_a_prometheus_file_the_official_parser_reads(tmp_path: Path) -> None:
    """metrics.prom parses with prometheus_client and holds the last check's gauges."""
    parser = pytest.importorskip("prometheus_client.parser")
    result = run_demo(tmp_path, steps=600, every=200, backend="python", plot=False, stream=io.StringIO())
    text = result.prometheus_path.read_text(encoding="utf-8")
    samples = {s.name: s.value for family in parser.text_string_to_metric_families(text) for s in family.samples}
    last = metric_series(load_log(result.log_path).records)
    for field in METRIC_NAMES:
        name = metric_name(field)
        assert samples[name.replace(".", "_")] == last[name].values[-1]
    assert samples["geno_lewm_training_collapse_checks_total"] == 3


def test_demo_is_reproducible_from_its_seed(tmp_path: Path) -> None:
    """The same seed gives the same metric values; another seed gives others."""

    def values(out: Path, seed: int) -> list[float]:
        result = run_demo(out, steps=300, every=100, seed=seed, backend="python", plot=False, stream=io.StringIO())
        return [v for s in metric_series(load_log(result.log_path).records).values() for v in s.values]

    first = values(tmp_path / "a", 1)
    assert values(tmp_path / "b", 1) == first
    assert values(tmp_path / "c", 2) != first


def test_demo_draws_the_plot_when_matplotlib_is_installed(tmp_path: Path) -> None:
    """With matplotlib the demo writes collapse.png and says where."""
    pytest.importorskip("matplotlib")
    stream = io.StringIO()
    result = run_demo(tmp_path, steps=400, every=100, backend="python", stream=stream)
    assert result.plot_path == tmp_path / "collapse.png"
    assert result.plot_path.read_bytes()[:4] == b"\x89PNG"
    assert f"plot: {result.plot_path}" in stream.getvalue()


@pytest.mark.parametrize(
    ("arguments", "field"),
    [({"steps": 0}, "steps"), ({"every": 5000}, "every"), ({"collapse_at": 1.0}, "collapse_at")],
)
def test_demo_refuses_bad_parameters(tmp_path: Path, arguments: dict[str, float], field: str) -> None:
    """Bad demo parameters raise InputError naming them, before anything is written."""
    with pytest.raises(InputError) as caught:
        run_demo(tmp_path / "out", stream=io.StringIO(), **arguments)  # type: ignore[arg-type]
    assert caught.value.details["field"] == field
    assert not (tmp_path / "out").exists()


_WITHOUT_EXTRAS = """
import sys
sys.modules.update(numpy=None, torch=None, matplotlib=None)
from geno_lewm.cli import main
raise SystemExit(main(sys.argv[1:]))
"""


def test_demo_command_runs_quickly_without_numpy_torch_or_matplotlib(tmp_path: Path) -> None:
    """`geno-lewm demo --out DIR` with the default run and none of the optional libraries exits 0
    well inside a minute, prints the alerts, says how to get the plot, and writes the log and
    the Prometheus file.
    """
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-c", _WITHOUT_EXTRAS, "demo", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    elapsed = time.perf_counter() - started
    assert result.returncode == 0, result.stderr
    assert elapsed < 60
    out = result.stdout
    assert "backend: python" in out
    assert "COLLAPSE: pred_var_per_dim" in out and "collapse detected: first alert at step" in out
    assert "plot: skipped" in out and "geno-lewm[plot]" in out
    (log_path,) = (tmp_path / "logs").glob("*.jsonl")
    assert load_log(log_path).problems == ()
    assert (tmp_path / "metrics.prom").stat().st_size > 0
    assert not (tmp_path / "collapse.png").exists()
