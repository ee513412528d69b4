"""Diagnosing a tripped check: each failure kind on a batch built to show it, directly and
through the monitor, and the precedence between kinds.
"""

from __future__ import annotations

from typing import Any

import pytest

from geno_lewm.errors import InputError
from geno_lewm.metrics import MetricRegistry
from geno_lewm.training.collapse import CollapseAlert, CollapseMonitor, CollapseThresholds, compute_collapse_metrics
from geno_lewm.training.spectrum import DIAGNOSES, Diagnosis, collapse_spectrum, diagnose_collapse

N, D = 32, 16


def hadamard(order: int) -> list[list[int]]:
    """Sylvester's Hadamard matrix: +-1 entries, orthogonal rows and columns."""
    matrix = [[1]]
    while len(matrix) < order:
        matrix = [row + row for row in matrix] + [row + [-x for x in row] for row in matrix]
    return matrix


H = hadamard(N)
ISOTROPIC = [[float(H[r][c + 1]) for c in range(D)] for r in range(N)]
"""Zero-mean, uncorrelated, unit-variance columns: covariance I, effective rank D."""
RANK_TWO = [[float(H[r][1] if c % 2 else H[r][2]) for c in range(D)] for r in range(N)]
"""Unit variance in every column (like BatchNorm output), but only two directions."""
IDENTICAL = [[0.5 + 0.25 * c for c in range(D)]] * N


def scaled(rows: list[list[float]], factor: float) -> list[list[float]]:
    return [[factor * x for x in row] for row in rows]


def diagnose(prediction: list[list[float]], target: list[list[float]], **kwargs: Any) -> Diagnosis:
    """Diagnosis of the check (prediction, target) against an isotropic first check."""
    metrics = compute_collapse_metrics(prediction, target, kl_reg=0.0)
    initial = collapse_spectrum(ISOTROPIC, ISOTROPIC)
    return diagnose_collapse(metrics, collapse_spectrum(prediction, target), initial=initial, **kwargs)


def test_identical_targets_matched_by_predictions_are_trivial_agreement() -> None:
    """Predictions equal to targets whose rows are all alike: trivial agreement, about the target."""
    diagnosis = diagnose(IDENTICAL, IDENTICAL)
    assert (diagnosis.kind, diagnosis.subject) == ("trivial_agreement", "target")
    assert "mean cosine 1.000" in diagnosis.summary


def test_targets_losing_rank_matched_by_predictions_are_trivial_agreement() -> None:
    """Predictions proportional to targets whose effective rank fell from 16 to 2: trivial agreement."""
    diagnosis = diagnose(scaled(RANK_TWO, 0.9), RANK_TWO)
    assert diagnosis.kind == "trivial_agreement"
    assert "effective rank fell to 2.0, was 16.0" in diagnosis.summary


def test_identical_predictions_are_complete_collapse() -> None:
    """Predictions all the same vector, targets healthy (low cosine): complete collapse of the prediction."""
    diagnosis = diagnose(IDENTICAL, ISOTROPIC)
    assert (diagnosis.kind, diagnosis.subject) == ("complete_collapse", "prediction")


def test_nearly_identical_targets_with_unrelated_predictions_are_complete_collapse() -> None:
    """Targets alike up to 1e-9 noise, predictions unrelated to them: complete collapse of the target."""
    target = [[x + 1e-9 * h for x, h in zip(IDENTICAL[0], row)] for row in ISOTROPIC]
    diagnosis = diagnose(scaled(ISOTROPIC, -1.0), target)
    assert (diagnosis.kind, diagnosis.subject) == ("complete_collapse", "target")


def test_rank_two_predictions_with_unit_variance_are_dimensional_collapse() -> None:
    """Predictions folded into two directions with per-dimension variance 1: dimensional collapse,
    although the RFC's variance ratio is 1.
    """
    metrics = compute_collapse_metrics(RANK_TWO, ISOTROPIC, kl_reg=0.0)
    assert metrics.pred_var_per_dim == metrics.target_var_per_dim
    diagnosis = diagnose(RANK_TWO, ISOTROPIC)
    assert (diagnosis.kind, diagnosis.subject) == ("dimensional_collapse", "prediction")
    assert "effective rank fell to 2.0, was 16.0" in diagnosis.summary


def test_both_losing_rank_without_agreement_is_dimensional_collapse_of_both() -> None:
    """Both sides at rank 2 but predicting the wrong one (cosine 0): dimensional collapse of both."""
    prediction = [[float(H[r][3] if c % 2 else H[r][4]) for c in range(D)] for r in range(N)]
    diagnosis = diagnose(prediction, RANK_TWO)
    assert (diagnosis.kind, diagnosis.subject) == ("dimensional_collapse", "both")


def test_smaller_predictions_of_the_same_shape_are_scale_drift() -> None:
    """Predictions 0.3x their targets, shape intact: scale drift (what the RFC variance criterion trips on)."""
    diagnosis = diagnose(scaled(ISOTROPIC, 0.3), ISOTROPIC)
    assert (diagnosis.kind, diagnosis.subject) == ("scale_drift", "prediction")
    assert "0.09x of the targets'" in diagnosis.summary


def test_everything_growing_is_scale_drift_against_the_initial_value() -> None:
    """Predictions and targets both 3x their initial size: scale drift, measured against the first check."""
    diagnosis = diagnose(scaled(ISOTROPIC, 3.0), scaled(ISOTROPIC, 3.0))
    assert diagnosis.kind == "scale_drift"
    assert "9x of its initial value" in diagnosis.summary


def test_intact_shape_and_scale_is_unclassified_and_names_the_alert() -> None:
    """Healthy predictions and targets with a kl_reg alert: unclassified, naming the criterion."""
    alerts = (CollapseAlert("kl_reg", 12.0, 10.0),)
    diagnosis = diagnose(scaled(ISOTROPIC, -1.0), ISOTROPIC, alerts=alerts)
    assert diagnosis.kind == "unclassified"
    assert "kl_reg" in diagnosis.summary


def test_without_an_initial_spectrum_rank_loss_cannot_be_judged() -> None:
    """Without a first check, a rank-2 prediction of unchanged scale is not called dimensional collapse."""
    metrics = compute_collapse_metrics(RANK_TWO, ISOTROPIC, kl_reg=0.0)
    diagnosis = diagnose_collapse(metrics, collapse_spectrum(RANK_TWO, ISOTROPIC))
    assert diagnosis.kind == "unclassified"


def test_every_kind_is_declared() -> None:
    """The kinds produced above are exactly the declared ones."""
    assert DIAGNOSES == (
        "trivial_agreement",
        "complete_collapse",
        "dimensional_collapse",
        "scale_drift",
        "unclassified",
    )


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"metrics": "m"}, "'metrics' must be a CollapseMetrics: got str"),
        ({"spectrum": None}, "'spectrum' must be a CollapseSpectrum: got NoneType"),
        ({"initial": 3}, "'initial' must be a CollapseSpectrum: got int"),
        ({"rank_ratio": 0}, "'rank_ratio' must be > 0: got 0"),
        ({"agreement_cosine": -1.0}, "'agreement_cosine' must be > 0: got -1.0"),
    ],
)
def test_bad_arguments_are_refused(arguments: dict[str, Any], message: str) -> None:
    """Each argument is checked, with the common message shape."""
    call: dict[str, Any] = {
        "metrics": compute_collapse_metrics(ISOTROPIC, ISOTROPIC, kl_reg=0.0),
        "spectrum": collapse_spectrum(ISOTROPIC, ISOTROPIC),
    }
    call.update(arguments)
    metrics, spectrum = call.pop("metrics"), call.pop("spectrum")
    with pytest.raises(InputError, match=message):
        diagnose_collapse(metrics, spectrum, **call)


# ------------------------------------------------------------------ the monitor
@pytest.mark.parametrize(
    ("prediction", "target", "kind", "criterion"),
    [
        (IDENTICAL, IDENTICAL, "trivial_agreement", "pairwise_pred_dist_mean"),
        (IDENTICAL, ISOTROPIC, "complete_collapse", "pred_var_per_dim"),
        (RANK_TWO, ISOTROPIC, "dimensional_collapse", "pred_effective_rank"),
        (scaled(ISOTROPIC, 0.3), ISOTROPIC, "scale_drift", "pred_var_per_dim"),
    ],
)
def test_the_monitor_diagnoses_tripped_checks_and_logs_the_diagnosis(
    prediction: list[list[float]], target: list[list[float]], kind: str, criterion: str, recording_logger: Any
) -> None:
    """After a healthy first check, a failing batch trips a criterion; the check carries the
    diagnosis and every alert event names its kind.
    """
    monitor = CollapseMonitor(
        1, CollapseThresholds(effective_rank_to_initial=0.5), backend="python", registry=MetricRegistry()
    )
    first = monitor.observe(ISOTROPIC, ISOTROPIC, kl_reg=0.0, step=1)
    assert first is not None and first.diagnosis is None and not first.tripped
    check = monitor.observe(prediction, target, kl_reg=0.0, step=2, logger=recording_logger)
    assert check is not None and check.diagnosis is not None
    assert check.diagnosis.kind == kind
    assert criterion in [a.criterion for a in check.alerts]
    events = recording_logger.events("warning", "training.collapse.alert")
    assert len(events) == len(check.alerts)
    assert all(event["diagnosis"] == kind for event in events)


def test_a_check_that_does_not_trip_has_no_diagnosis() -> None:
    """A healthy check with spectra on carries its spectrum but no diagnosis."""
    monitor = CollapseMonitor(1, spectrum=True, backend="python", registry=MetricRegistry())
    monitor.observe(ISOTROPIC, ISOTROPIC, kl_reg=0.0, step=1)
    check = monitor.observe(scaled(ISOTROPIC, -1.0), ISOTROPIC, kl_reg=0.0, step=2)
    assert check is not None and check.spectrum is not None
    assert not check.tripped and check.diagnosis is None
