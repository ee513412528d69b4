"""Criteria as table rows: the bound rules, the one alert type, the evaluation, and a new
criterion added to a family as one row (the example of rfcs/0012-architecture.md).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import pytest

from geno_lewm.errors import CollapseDetectedError, InputError
from geno_lewm.metrics import MetricRegistry
from geno_lewm.training._collapse_metrics import COLLAPSE, COLLAPSE_CRITERIA
from geno_lewm.training._criteria import (
    Alert,
    Criterion,
    Fixed,
    RatioOfBaseline,
    RatioOfMetric,
    bounds_by_metric,
    evaluate,
)
from geno_lewm.training.collapse import CollapseAlert, CollapseMonitor, CollapseThresholds
from geno_lewm.training.dynamics import DYNAMICS_CRITERIA, PredictionAlert


@dataclasses.dataclass(frozen=True)
class Limits:
    """A family's thresholds, as the bound rules read them."""

    ceiling: float | None = 10.0
    ratio: float | None = 0.5


ROWS = (
    Criterion("high", "x", "above", Fixed("ceiling")),
    Criterion("relative", "x", "below", RatioOfMetric("ratio", "y")),
    Criterion("fallen", "y", "below", RatioOfBaseline("ratio", "y0"), min_rows=2),
)


def _readings(values: dict[str, float], limits: Limits = Limits(), rows: int = 5, **baselines: float) -> list[Any]:
    found = evaluate(ROWS, values, thresholds=limits, baselines=baselines, rows=rows, alert_type=Alert)
    return [(a.criterion, a.value, a.threshold, a.direction, a.tripped) for a in found]


def test_each_bound_rule_derives_its_bound() -> None:
    """Fixed is the threshold, RatioOfMetric the threshold times a metric of the check,
    RatioOfBaseline the threshold times a learned baseline.
    """
    assert _readings({"x": 12.0, "y": 30.0}, y0=4.0) == [
        ("high", 12.0, 10.0, "above", True),
        ("relative", 12.0, 15.0, "below", True),
        ("fallen", 30.0, 2.0, "below", False),
    ]


def test_criteria_that_cannot_be_evaluated_are_left_out() -> None:
    """A threshold switched off (None), an unknown baseline, a missing metric or too few
    rows leaves the row out; the others are still evaluated, in table order.
    """
    assert [r[0] for r in _readings({"x": 1.0, "y": 1.0}, Limits(ceiling=None))] == ["relative"]
    assert [r[0] for r in _readings({"x": 1.0}, y0=1.0)] == ["high"]
    assert [r[0] for r in _readings({"x": 1.0, "y": 1.0}, rows=1, y0=1.0)] == ["high", "relative"]


def test_an_infinite_bound_is_compared_and_a_nan_value_never_trips() -> None:
    """A bound that overflowed to infinity is a comparison like any other; NaN trips nothing."""
    assert _readings({"x": 1e300, "y": math.inf}) == [
        ("high", 1e300, 10.0, "above", True),
        ("relative", 1e300, math.inf, "below", True),
    ]
    assert not any(r[4] for r in _readings({"x": math.nan, "y": 1.0}))


def test_a_metric_with_two_criteria_logs_no_single_threshold() -> None:
    """bounds_by_metric gives a metric the bound of its one criterion; a band of two has none."""
    bounds = bounds_by_metric(ROWS, {"x": 1.0, "y": 3.0}, thresholds=Limits(), baselines={"y0": 8.0})
    assert bounds == {"y": 4.0}


def test_an_alert_describes_its_comparison_from_its_direction() -> None:
    """The message sign comes from the direction, and a metric other than the criterion is named."""
    assert Alert("kl_reg", 12.0, 10.0, "above").describe() == "kl_reg = 12 > 10"
    mode = Alert("mode_collapse", 0.01, 0.05, "below", "pred_entropy_normalized")
    assert mode.describe() == "mode_collapse: pred_entropy_normalized = 0.01 < 0.05"
    assert (mode.metric, Alert("x", 1.0, 2.0, "below").metric) == ("pred_entropy_normalized", "x")


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (("", 1.0, 1.0, "below"), "'criterion' must be a non-empty string"),
        (("x", 1.0, 1.0, "under"), "'direction' must be 'below' or 'above': got 'under'"),
        (("x", 1.0, math.nan, "below"), "'threshold' must be a number, not NaN: got nan"),
        (("x", "high", 1.0, "below"), "'value' must be a real number: got 'high'"),
        (("x", True, 1.0, "below"), "'value' must be a real number: got True"),
    ],
)
def test_a_malformed_alert_is_refused_in_the_common_shape(arguments: tuple[Any, ...], message: str) -> None:
    """Every bad field gets an InputError in the library's one error shape."""
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Alert(*arguments)


def test_family_alerts_take_their_direction_from_their_table() -> None:
    """CollapseAlert and PredictionAlert keep their call shapes and read the direction from
    their family's criteria table; an unknown criterion without a direction is refused.
    """
    rows = {row.name: row.direction for row in (*COLLAPSE_CRITERIA, *DYNAMICS_CRITERIA)}
    assert CollapseAlert("kl_reg", 12.0, 10.0).direction == rows["kl_reg"] == "above"
    assert CollapseAlert("pred_var_per_dim", 0.1, 0.5).direction == rows["pred_var_per_dim"] == "below"
    alert = PredictionAlert("class_dominance", "top_class_fraction", 0.95, 0.9)
    assert (alert.direction, alert.metric, alert.value) == (rows["class_dominance"], "top_class_fraction", 0.95)
    with pytest.raises(InputError, match="'criterion' must be a collapse criterion"):
        CollapseAlert("made_up", 1.0, 2.0)
    assert CollapseAlert("made_up", 1.0, 2.0, "above").tripped is False


# ------------------------------------------------------------ a new criterion is one row
@dataclasses.dataclass(frozen=True, slots=True)
class AgreementThresholds(CollapseThresholds):
    """The collapse thresholds plus the bound of the new criterion."""

    agreement_max: float = 0.999


class AgreementMonitor(CollapseMonitor):
    """The collapse monitor with one more row in its criteria table."""

    family = dataclasses.replace(
        COLLAPSE,
        criteria=(
            *COLLAPSE.criteria,
            Criterion("trivial_agreement", "pred_cos_mean", "above", Fixed("agreement_max")),
        ),
    )
    __slots__ = ()


def test_a_new_criterion_is_one_row_through_the_whole_pipeline(recording_logger: Any) -> None:
    """The added row is evaluated, logged as the metric's threshold and as an alert event,
    counted in the registry, sent through the policy and named in the raised message.
    """
    registry = MetricRegistry()
    monitor = AgreementMonitor(1, AgreementThresholds(), registry=registry, on_alert="raise")
    batch = [[1.0, 0.0], [0.0, 1.0], [-1.0, 0.5]]
    with pytest.raises(CollapseDetectedError, match=r"trivial_agreement: pred_cos_mean = 1 > 0\.999") as caught:
        monitor.observe(batch, batch, kl_reg=0.0, step=1, logger=recording_logger)
    assert [a.criterion for a in caught.value.alerts] == ["trivial_agreement"]
    events = {e["name"].rsplit(".", 1)[1]: e for e in recording_logger.events("info", "training.metric")}
    assert events["pred_cos_mean"]["threshold"] == 0.999
    (alert,) = recording_logger.events("warning", "training.collapse.alert")
    assert (alert["criterion"], alert["value"], alert["threshold"]) == ("trivial_agreement", 1.0, 0.999)
    (raised,) = recording_logger.events("warning", "training.alert.raised")
    assert (raised["criterion"], raised["direction"]) == ("trivial_agreement", "above")
    assert registry.value("geno_lewm.training.collapse.alert") == 1.0
