"""The monitor's opt-in spectra: RFC behaviour unchanged when they are off, rank baselines and
criteria, spectral gauges and events, validation, and a real JSON-lines log.
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from geno_lewm.errors import InputError
from geno_lewm.metrics import MetricRegistry
from geno_lewm.training.collapse import (
    CollapseMonitor,
    CollapseThresholds,
    detect_collapse,
    metric_name,
    record_collapse_metrics,
)
from geno_lewm.training.spectrum import SPECTRAL_GAUGES, CollapseSpectrum, collapse_spectrum

N, D = 32, 8


def hadamard(order: int) -> list[list[int]]:
    """Sylvester's Hadamard matrix: +-1 entries, orthogonal rows and columns."""
    matrix = [[1]]
    while len(matrix) < order:
        matrix = [row + row for row in matrix] + [row + [-x for x in row] for row in matrix]
    return matrix


H = hadamard(N)
ISOTROPIC = [[float(H[r][c + 1]) for c in range(D)] for r in range(N)]
RANK_TWO = [[float(H[r][1] if c % 2 else H[r][2]) for c in range(D)] for r in range(N)]
SMALL = [[0.3 * x for x in row] for row in ISOTROPIC]
IDENTICAL = [[1.0 + c for c in range(D)]] * N
STEPS = [
    (ISOTROPIC, ISOTROPIC, 0.5),
    ([[-x for x in row] for row in ISOTROPIC], ISOTROPIC, 12.0),
    (RANK_TWO, ISOTROPIC, 0.5),
    (SMALL, ISOTROPIC, 0.5),
    (IDENTICAL, ISOTROPIC, 0.5),
    (IDENTICAL, IDENTICAL, 0.5),
]
"""Healthy, a kl_reg alert, dimensional collapse, scale drift, complete collapse, trivial agreement."""


class Recorder:
    """A structlog-shaped logger keeping ``(level, event, fields)``."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, dict[str, Any]]] = []

    def info(self, event: str, **fields: Any) -> None:
        """Record an informational event."""
        self.calls.append(("info", event, fields))

    def warning(self, event: str, **fields: Any) -> None:
        """Record a warning event."""
        self.calls.append(("warning", event, fields))


def run(monitor: CollapseMonitor, steps: list[tuple[Any, Any, float]] = STEPS) -> tuple[Recorder, list[Any]]:
    logger = Recorder()
    checks = [monitor.observe(p, t, kl_reg=kl, step=i, logger=logger) for i, (p, t, kl) in enumerate(steps, 1)]
    return logger, checks


def without_timing(calls: list[tuple[str, str, dict[str, Any]]]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(lv, ev, {k: v for k, v in f.items() if k != "compute_seconds"}) for lv, ev, f in calls]


def is_spectral(call: tuple[str, str, dict[str, Any]]) -> bool:
    return call[1] == "training.metric" and call[2]["name"].split(".")[-1] in SPECTRAL_GAUGES


# ------------------------------------------------------------- RFC unchanged
def test_default_monitor_logs_exactly_what_the_rfc_functions_log() -> None:
    """With spectra off, each check's log calls equal those of record_collapse_metrics on the same
    metrics, alerts and batch, argument for argument (the RFC path), and no check has a spectrum.
    """
    registry = MetricRegistry()
    logger, checks = run(CollapseMonitor(1, backend="python", registry=registry))
    reference = Recorder()
    baseline = None
    for check in checks:
        assert check.spectrum is None and check.diagnosis is None
        baseline = check.metrics.pairwise_pred_dist_mean if baseline is None else baseline
        assert check.alerts == detect_collapse(check.metrics, initial_pairwise_pred_dist_mean=baseline)
        record_collapse_metrics(
            check.metrics,
            alerts=check.alerts,
            logger=reference,
            step=check.step,
            batch=check.batch,
            thresholds=CollapseThresholds(),
            initial_pairwise_pred_dist_mean=baseline,
            registry=MetricRegistry(),
        )
    assert logger.calls == reference.calls
    assert not any("diagnosis" in fields for _, _, fields in logger.calls)
    assert not any(name.endswith(tuple(SPECTRAL_GAUGES)) for name in registry.snapshot())


def test_turning_spectra_on_adds_to_the_rfc_record_without_changing_it() -> None:
    """The spectra-on log, minus the spectral events and the diagnosis field, is the spectra-off
    log call for call (compute times aside); the RFC gauges and counters are the same too.
    """
    off_registry, on_registry = MetricRegistry(), MetricRegistry()
    off, off_checks = run(CollapseMonitor(1, backend="python", registry=off_registry))
    on, on_checks = run(
        CollapseMonitor(1, CollapseThresholds(effective_rank_to_initial=0.5), backend="python", registry=on_registry)
    )
    stripped = [(lv, ev, {k: v for k, v in f.items() if k != "diagnosis"}) for lv, ev, f in on.calls]
    rfc_calls = [
        call
        for call in stripped
        if not is_spectral(call) and not str(call[2].get("criterion", "")).endswith("effective_rank")
    ]
    assert without_timing(rfc_calls) == without_timing(off.calls)
    rank_criteria = ("pred_effective_rank", "target_effective_rank")
    rfc_alerts = [[a for a in c.alerts if a.criterion not in rank_criteria] for c in on_checks]
    assert [list(c.alerts) for c in off_checks] == rfc_alerts
    assert [c.metrics for c in off_checks] == [c.metrics for c in on_checks]
    rfc_names = {metric_name(f) for f in ("pred_cos_mean", "kl_reg", "pred_var_per_dim", "pairwise_pred_dist_mean")}
    on_snapshot, off_snapshot = on_registry.snapshot(), off_registry.snapshot()
    assert all(on_snapshot[name] == off_snapshot[name] for name in rfc_names)
    assert on_snapshot["geno_lewm.training.collapse.checks"] == off_snapshot["geno_lewm.training.collapse.checks"]


def test_a_default_monitor_never_imports_the_spectral_module(repo_root: Path) -> None:
    """Checks with spectra off cost nothing extra: the spectral module is not even imported."""
    code = (
        "import sys\n"
        "from geno_lewm.training.collapse import CollapseMonitor, CollapseThresholds\n"
        "m = CollapseMonitor(1, CollapseThresholds(effective_rank_to_initial=None), spectrum=False)\n"
        "batch = [[1.0, 2.0], [3.0, 5.0], [0.0, 1.0]]\n"
        "for step in range(1, 4):\n"
        "    m.observe(batch, [[1.0, 2.0], [3.0, 4.0], [1.0, 1.0]], kl_reg=0.1, step=step)\n"
        "spectral = ('geno_lewm.training.spectrum', 'geno_lewm.training._spectral', 'geno_lewm.training.diagnosis',\n"
        "            'geno_lewm.backends._python_spectrum')\n"
        "print(*(name in sys.modules for name in spectral))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=repo_root)
    assert result.stdout.split() == ["False", "False", "False", "False"]


# ------------------------------------------------------------- spectra on
def test_spectra_are_on_when_asked_or_when_the_rank_threshold_is_set() -> None:
    """spectrum=True turns spectra on; setting effective_rank_to_initial does too; default is off."""
    assert not CollapseMonitor().spectrum
    assert CollapseMonitor(spectrum=True).spectrum
    assert CollapseMonitor(thresholds=CollapseThresholds(effective_rank_to_initial=0.25)).spectrum
    assert "spectrum=True" in repr(CollapseMonitor(spectrum=True))
    assert "spectrum" not in repr(CollapseMonitor())


def test_rank_baseline_comes_from_the_first_batch_with_two_rows() -> None:
    """A one-row batch does not set the baseline; the next batch does, and it then stays."""
    monitor = CollapseMonitor(1, spectrum=True, backend="python", registry=MetricRegistry())
    monitor.observe([ISOTROPIC[0]], [ISOTROPIC[1]], kl_reg=0.0, step=1)
    assert monitor.initial_spectrum is None
    monitor.observe(ISOTROPIC, ISOTROPIC, kl_reg=0.0, step=2)
    first = monitor.initial_spectrum
    assert first is not None and math.isclose(first.prediction.effective_rank, D)
    monitor.observe(RANK_TWO, RANK_TWO, kl_reg=0.0, step=3)
    assert monitor.initial_spectrum is first


def test_rank_alerts_fire_strictly_below_the_fraction_of_the_baseline() -> None:
    """With ratio r, an alert fires when rank < r * initial, not at equality; the bound is the threshold."""
    initial = collapse_spectrum(ISOTROPIC, ISOTROPIC)
    exact_ratio = 2.0 / D  # RANK_TWO has effective rank 2 exactly
    for ratio, fires in [(exact_ratio, False), (exact_ratio * 1.0001, True), (0.5, True)]:
        monitor = CollapseMonitor(
            1,
            CollapseThresholds(effective_rank_to_initial=ratio),
            backend="python",
            registry=MetricRegistry(),
            initial_spectrum=initial,
        )
        check = monitor.observe(RANK_TWO, RANK_TWO, kl_reg=0.0, step=1)
        assert check is not None
        rank_alerts = [a for a in check.alerts if a.criterion.endswith("effective_rank")]
        assert bool(rank_alerts) is fires
        for alert in rank_alerts:
            assert math.isclose(alert.threshold, ratio * D)


def test_spectral_gauges_and_events_follow_the_rfc_ones(recording_logger: Any) -> None:
    """Spectra on: six gauges in the registry, and six training.metric events after the seven RFC
    ones, with unit, variant, the rank bound in force and the batch context.
    """
    registry = MetricRegistry()
    monitor = CollapseMonitor(1, CollapseThresholds(effective_rank_to_initial=0.5), backend="python", registry=registry)
    check = monitor.observe(ISOTROPIC, RANK_TWO, kl_reg=0.0, step=1, logger=recording_logger)
    assert check is not None and check.spectrum is not None
    metric_events = recording_logger.events("info", "training.metric")
    assert len(metric_events) == 13
    spectral = metric_events[7:]
    assert [e["name"] for e in spectral] == [f"geno_lewm.training.collapse.{s}" for s in SPECTRAL_GAUGES]
    by_name = {e["name"].rsplit(".", 1)[1]: e for e in spectral}
    assert by_name["pred_effective_rank"]["value"] == check.spectrum.prediction.effective_rank
    assert by_name["target_effective_rank"]["value"] == check.spectrum.target.effective_rank
    assert math.isclose(by_name["pred_effective_rank"]["threshold"], 0.5 * D)
    assert math.isclose(by_name["target_effective_rank"]["threshold"], 1.0)
    assert by_name["pred_top_k_share"]["threshold"] is None
    assert by_name["pred_top_k_share"]["variant"] == "top_8,centred,variance"
    assert all(e["batch_size"] == N and e["dim"] == D and e["backend"] == "python" for e in spectral)
    assert all(e["compute_seconds"] == check.spectrum.compute_seconds for e in spectral)
    snapshot = registry.snapshot()
    for suffix in SPECTRAL_GAUGES:
        assert f"geno_lewm.training.collapse.{suffix}" in snapshot
    assert snapshot["geno_lewm.training.collapse.target_effective_rank"] == check.spectrum.target.effective_rank


def test_a_rejected_batch_changes_nothing() -> None:
    """A bad batch on a spectra-on monitor raises and leaves baselines, last check and registry as they were."""
    registry = MetricRegistry()
    monitor = CollapseMonitor(1, spectrum=True, backend="python", registry=registry)
    with pytest.raises(InputError):
        monitor.observe(ISOTROPIC, [[float("nan")] * D] * (N - 1), kl_reg=0.0, step=1)
    assert monitor.initial_spectrum is None
    assert monitor.initial_pairwise_pred_dist_mean is None
    assert monitor.last_check is None
    assert registry.snapshot() == {}


def test_unscheduled_steps_do_not_look_at_the_batch() -> None:
    """With spectra on, an unscheduled step still returns None without reading the batch."""
    monitor = CollapseMonitor(10, spectrum=True)
    assert monitor.observe(object(), object(), kl_reg=0.0, step=3) is None


@pytest.mark.parametrize("value", [0, -0.5, float("nan"), float("inf"), "0.5", True])
def test_bad_rank_threshold_is_refused(value: Any) -> None:
    """effective_rank_to_initial must be None or a finite number > 0."""
    with pytest.raises(InputError, match=r"^'effective_rank_to_initial' must be"):
        CollapseThresholds(effective_rank_to_initial=value)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"spectrum": 1}, "'spectrum' must be True or False: got 1"),
        ({"initial_spectrum": 3.0}, "'initial_spectrum' must be a CollapseSpectrum: got float"),
    ],
)
def test_bad_monitor_arguments_are_refused(arguments: dict[str, Any], message: str) -> None:
    """The new monitor arguments are validated at construction."""
    with pytest.raises(InputError, match=message):
        CollapseMonitor(**arguments)


def test_record_refuses_bad_spectral_arguments_before_writing(registry: MetricRegistry) -> None:
    """record_collapse_metrics checks spectrum/diagnosis types before touching the registry."""
    check = CollapseMonitor(1, backend="python", registry=MetricRegistry()).observe(
        ISOTROPIC, ISOTROPIC, kl_reg=0.0, step=1
    )
    assert check is not None
    with pytest.raises(InputError, match="'diagnosis' must be a Diagnosis: got str"):
        record_collapse_metrics(check.metrics, registry=registry, diagnosis="dimensional_collapse")  # type: ignore[arg-type]
    assert registry.snapshot() == {}


def test_spectra_with_the_numpy_backend_match_python() -> None:
    """The monitor's spectra are the same on the NumPy backend as on the reference."""
    np = pytest.importorskip("numpy")
    python = CollapseMonitor(1, spectrum=True, backend="python", registry=MetricRegistry())
    vectorised = CollapseMonitor(1, spectrum=True, backend="numpy", registry=MetricRegistry())
    a = python.observe(RANK_TWO, ISOTROPIC, kl_reg=0.0, step=1)
    b = vectorised.observe(np.array(RANK_TWO), np.array(ISOTROPIC), kl_reg=0.0, step=1)
    assert a is not None and b is not None and a.spectrum is not None and b.spectrum is not None
    assert b.spectrum.backend == "numpy"
    for x, y in ((a.spectrum.prediction, b.spectrum.prediction), (a.spectrum.target, b.spectrum.target)):
        assert x.numerical_rank == y.numerical_rank
        assert math.isclose(x.effective_rank, y.effective_rank, rel_tol=1e-9)


def test_a_real_json_log_accepts_spectral_events_and_diagnoses(tmp_path: Path) -> None:
    """Through the JSON-lines logger, the spectral metric events and the diagnosis on alerts are
    written and read back by the log reader.
    """
    pytest.importorskip("structlog")
    pytest.importorskip("pydantic")
    from geno_lewm.logs import read_log
    from geno_lewm.observability import get_logger

    logger = get_logger("training", log_dir=tmp_path, run_id="spectra")
    monitor = CollapseMonitor(
        1, CollapseThresholds(effective_rank_to_initial=0.5), backend="python", registry=MetricRegistry()
    )
    monitor.observe(ISOTROPIC, ISOTROPIC, kl_reg=0.0, step=1, logger=logger)
    check = monitor.observe(RANK_TWO, ISOTROPIC, kl_reg=0.0, step=2, logger=logger)
    assert check is not None and check.diagnosis is not None
    records = list(read_log(tmp_path / "spectra.jsonl", strict=True))
    names = [getattr(r, "name", None) for r in records if r.event == "training.metric"]
    assert names.count("geno_lewm.training.collapse.pred_effective_rank") == 2
    alerts = [r for r in records if r.event == "training.collapse.alert"]
    assert alerts and all(getattr(r, "diagnosis", None) == "dimensional_collapse" for r in alerts)


def test_initial_spectrum_can_be_restored() -> None:
    """A baseline given at construction (e.g. from a checkpoint) is used from the first check."""
    initial = collapse_spectrum(ISOTROPIC, ISOTROPIC)
    monitor = CollapseMonitor(
        1, CollapseThresholds(effective_rank_to_initial=0.5), initial_spectrum=initial, registry=MetricRegistry()
    )
    check = monitor.observe(RANK_TWO, RANK_TWO, kl_reg=0.0, step=1)
    assert check is not None
    assert isinstance(monitor.initial_spectrum, CollapseSpectrum)
    assert monitor.initial_spectrum is initial
    assert {a.criterion for a in check.alerts} >= {"pred_effective_rank", "target_effective_rank"}
