"""The RFC-0005 alert criteria: strict inequalities, fixed order, thresholds equal to the
products they are compared with.
"""

from __future__ import annotations

import dataclasses
import math

import pytest

from geno_lewm.training.collapse import (
    CollapseAlert,
    CollapseCheck,
    CollapseMetrics,
    CollapseThresholds,
    detect_collapse,
)


def metrics(
    *, target_var: float = 1.0, pred_var: float = 1.0, pairwise: float = 1.0, kl_reg: float = 0.0
) -> CollapseMetrics:
    """A CollapseMetrics where only the fields the criteria read are chosen."""
    return CollapseMetrics(
        pred_cos_mean=0.9,
        pred_l2_mean=0.1,
        target_var_per_dim=target_var,
        pred_var_per_dim=pred_var,
        pred_target_corr=0.8,
        pairwise_pred_dist_mean=pairwise,
        kl_reg=kl_reg,
    )


def criteria(alerts: tuple[CollapseAlert, ...]) -> list[str]:
    return [alert.criterion for alert in alerts]


def test_default_thresholds_are_the_rfc_values() -> None:
    """Defaults: 0.5 of the target variance, 0.5 of the initial spread, kl_reg above 10."""
    assert CollapseThresholds() == CollapseThresholds(0.5, 0.5, 10.0)


def test_healthy_metrics_raise_nothing() -> None:
    """Variance and spread at their references and a small kl_reg raise no alert."""
    assert detect_collapse(metrics(), initial_pairwise_pred_dist_mean=1.0) == ()


# -------------------------------------------------------------------- variance
def test_variance_alert_at_the_threshold_is_not_raised() -> None:
    """pred_var exactly ratio * target_var does not alert: the inequality is strict."""
    assert detect_collapse(metrics(target_var=3.0, pred_var=1.5)) == ()


def test_variance_alert_just_below_the_threshold_is_raised() -> None:
    """pred_var one float below ratio * target_var alerts, with the product as threshold."""
    m = metrics(target_var=3.0, pred_var=math.nextafter(1.5, 0.0))
    assert detect_collapse(m) == (CollapseAlert("pred_var_per_dim", m.pred_var_per_dim, 1.5),)


@pytest.mark.parametrize(("ratio", "target_var"), [(0.3, 0.7), (0.1, 1e-300), (2.0, 1e300), (0.9, 123.456)])
def test_variance_threshold_is_the_product(ratio: float, target_var: float) -> None:
    """The alert's threshold is exactly ratio * target_var_per_dim, as computed in floats."""
    m = metrics(target_var=target_var, pred_var=0.0)
    (alert,) = detect_collapse(m, thresholds=CollapseThresholds(pred_var_to_target_var=ratio))
    assert alert.threshold == ratio * target_var
    assert alert.value == 0.0


def test_zero_target_variance_never_trips_the_variance_criterion() -> None:
    """With constant targets the bound is 0, and a variance cannot be below 0."""
    assert detect_collapse(metrics(target_var=0.0, pred_var=0.0)) == ()


def test_infinite_target_variance_trips_a_finite_prediction_variance() -> None:
    """A target variance too large for a float (inf) still compares as the larger one."""
    (alert,) = detect_collapse(metrics(target_var=math.inf, pred_var=1e300))
    assert alert.threshold == math.inf
    assert detect_collapse(metrics(target_var=math.inf, pred_var=math.inf)) == ()


# -------------------------------------------------------------------- pairwise
def test_pairwise_criterion_needs_an_initial_value() -> None:
    """Without an initial value, a tiny spread raises no pairwise alert."""
    assert detect_collapse(metrics(pairwise=1e-12)) == ()


def test_pairwise_alert_at_the_threshold_is_not_raised() -> None:
    """A spread exactly ratio * initial does not alert."""
    assert detect_collapse(metrics(pairwise=2.0), initial_pairwise_pred_dist_mean=4.0) == ()


def test_pairwise_alert_just_below_the_threshold_is_raised() -> None:
    """A spread one float below ratio * initial alerts, with the product as threshold."""
    m = metrics(pairwise=math.nextafter(2.0, 0.0))
    alerts = detect_collapse(m, initial_pairwise_pred_dist_mean=4.0)
    assert alerts == (CollapseAlert("pairwise_pred_dist_mean", m.pairwise_pred_dist_mean, 2.0),)


def test_pairwise_threshold_is_the_product() -> None:
    """The alert's threshold is ratio * initial with a custom ratio."""
    thresholds = CollapseThresholds(pairwise_to_initial=0.3)
    (alert,) = detect_collapse(metrics(pairwise=0.0), thresholds=thresholds, initial_pairwise_pred_dist_mean=0.7)
    assert alert.threshold == 0.3 * 0.7


def test_zero_initial_pairwise_makes_the_criterion_inert() -> None:
    """A baseline of 0 gives a bound of 0, which no distance can be below."""
    assert detect_collapse(metrics(pairwise=0.0), initial_pairwise_pred_dist_mean=0.0) == ()


# ---------------------------------------------------------------------- kl_reg
def test_kl_reg_at_the_maximum_is_not_raised() -> None:
    """kl_reg exactly kl_reg_max does not alert."""
    assert detect_collapse(metrics(kl_reg=10.0)) == ()


def test_kl_reg_just_above_the_maximum_is_raised() -> None:
    """kl_reg one float above kl_reg_max alerts, with kl_reg_max as threshold."""
    m = metrics(kl_reg=math.nextafter(10.0, math.inf))
    assert detect_collapse(m) == (CollapseAlert("kl_reg", m.kl_reg, 10.0),)


def test_custom_kl_reg_max_is_used() -> None:
    """A custom maximum moves the bound."""
    assert detect_collapse(metrics(kl_reg=3.0), thresholds=CollapseThresholds(kl_reg_max=2.5)) == (
        CollapseAlert("kl_reg", 3.0, 2.5),
    )
    assert detect_collapse(metrics(kl_reg=3.0), thresholds=CollapseThresholds(kl_reg_max=30.0)) == ()


# ----------------------------------------------------------------------- order
def test_alerts_come_in_contract_order() -> None:
    """All three tripped: variance, then pairwise, then kl_reg."""
    m = metrics(target_var=1.0, pred_var=0.1, pairwise=0.1, kl_reg=12.0)
    alerts = detect_collapse(m, initial_pairwise_pred_dist_mean=1.0)
    assert criteria(alerts) == ["pred_var_per_dim", "pairwise_pred_dist_mean", "kl_reg"]
    assert [a.value for a in alerts] == [0.1, 0.1, 12.0]
    assert [a.threshold for a in alerts] == [0.5, 0.5, 10.0]


@pytest.mark.parametrize(
    ("pred_var", "pairwise", "kl_reg", "expected"),
    [
        (0.1, 1.0, 0.0, ["pred_var_per_dim"]),
        (1.0, 0.1, 0.0, ["pairwise_pred_dist_mean"]),
        (1.0, 1.0, 11.0, ["kl_reg"]),
        (0.1, 1.0, 11.0, ["pred_var_per_dim", "kl_reg"]),
        (1.0, 0.1, 11.0, ["pairwise_pred_dist_mean", "kl_reg"]),
    ],
)
def test_each_criterion_trips_independently(
    pred_var: float, pairwise: float, kl_reg: float, expected: list[str]
) -> None:
    """A criterion alerts on its own metric only, and subsets keep the order."""
    m = metrics(pred_var=pred_var, pairwise=pairwise, kl_reg=kl_reg)
    assert criteria(detect_collapse(m, initial_pairwise_pred_dist_mean=1.0)) == expected


# ------------------------------------------------------------------ dataclasses
def test_check_is_tripped_exactly_when_it_has_alerts() -> None:
    """CollapseCheck.tripped is True with alerts and False without."""
    m = metrics()
    assert CollapseCheck(m).tripped is False
    assert CollapseCheck(m, (CollapseAlert("kl_reg", 11.0, 10.0),)).tripped is True


def test_result_types_are_frozen() -> None:
    """Alerts, checks and thresholds cannot be altered after construction."""
    alert = CollapseAlert("kl_reg", 11.0, 10.0)
    for obj, name in ((alert, "value"), (CollapseCheck(metrics()), "alerts"), (CollapseThresholds(), "kl_reg_max")):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(obj, name, 0.0)
