"""``kl_reg=None``: a loss without a Gaussian term. Every entry point accepts it, the KL metric
is recorded as absent (no gauge, no log record, no sink value) and its criterion is not
evaluated, whatever its bound.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from geno_lewm.config import load_config
from geno_lewm.integrations.sinks import MemorySink
from geno_lewm.metrics import MetricRegistry
from geno_lewm.training.collapse import (
    METRIC_NAMES,
    CollapseMonitor,
    CollapseThresholds,
    compute_collapse_metrics,
    detect_collapse,
    metric_name,
    record_collapse_metrics,
)

PREDICTION = [[0.1, 0.2, 0.3], [0.0, 0.1, 0.0], [0.2, 0.0, 0.1], [0.1, 0.1, 0.2]]
TARGET = [[1.0, 2.0, 0.5], [-1.0, 0.5, 1.5], [0.5, -1.5, -0.5], [2.0, 0.0, -1.0]]
TINY_KL_BOUND = CollapseThresholds(kl_reg_max=1e-12)


@pytest.mark.parametrize("backend", ["python", "numpy", "torch"])
def test_compute_collapse_metrics_leaves_kl_out(backend: str) -> None:
    """The metrics carry kl_reg=None and as_dict has every other field, unchanged."""
    if backend != "python":
        pytest.importorskip(backend)
    absent = compute_collapse_metrics(PREDICTION, TARGET, kl_reg=None, backend=backend)
    present = compute_collapse_metrics(PREDICTION, TARGET, kl_reg=3.0, backend=backend)
    assert absent.kl_reg is None
    assert list(absent.as_dict()) == [name for name in METRIC_NAMES if name != "kl_reg"]
    assert absent.as_dict() == {k: v for k, v in present.as_dict().items() if k != "kl_reg"}


def test_detect_collapse_does_not_evaluate_an_absent_kl() -> None:
    """With kl_reg absent no bound, however small, raises a kl_reg alert; the others still apply."""
    metrics = compute_collapse_metrics(PREDICTION, TARGET, kl_reg=None)
    criteria = [a.criterion for a in detect_collapse(metrics, thresholds=TINY_KL_BOUND)]
    assert criteria == ["pred_var_per_dim"]
    with_kl = compute_collapse_metrics(PREDICTION, TARGET, kl_reg=1.0)
    assert "kl_reg" in [a.criterion for a in detect_collapse(with_kl, thresholds=TINY_KL_BOUND)]


def test_the_monitor_records_kl_as_absent(recording_logger: Any) -> None:
    """No kl_reg gauge, log record or sink value; the other six are all there; no kl_reg alert."""
    registry, sink = MetricRegistry(), MemorySink()
    monitor = CollapseMonitor(1, TINY_KL_BOUND, registry=registry, sinks=sink, backend="python")
    check = monitor.observe(PREDICTION, TARGET, kl_reg=None, step=1, logger=recording_logger)
    assert check is not None and check.metrics.kl_reg is None
    assert "kl_reg" not in [a.criterion for a in check.alerts]
    assert registry.value(metric_name("kl_reg")) is None
    assert registry.value(metric_name("pred_cos_mean")) == check.metrics.pred_cos_mean
    names = [e["name"] for e in recording_logger.events("info", "training.metric")]
    assert names == [metric_name(n) for n in METRIC_NAMES if n != "kl_reg"]
    [(step, values)] = sink.calls
    assert step == 1 and metric_name("kl_reg") not in values and len(values) == len(METRIC_NAMES) - 1


def test_record_collapse_metrics_accepts_absent_kl(recording_logger: Any) -> None:
    """record_collapse_metrics publishes metrics without kl_reg the same way."""
    registry = MetricRegistry()
    metrics = compute_collapse_metrics(PREDICTION, TARGET, kl_reg=None)
    record_collapse_metrics(metrics, logger=recording_logger, step=4, registry=registry)
    assert registry.value(metric_name("kl_reg")) is None
    assert registry.value(metric_name("checks")) == 1.0
    assert metric_name("kl_reg") not in [e["name"] for e in recording_logger.events("info", "training.metric")]


def test_statistics_finalize_with_absent_kl() -> None:
    """Merged sufficient statistics finalise to metrics without kl_reg."""
    pytest.importorskip("torch")
    from geno_lewm.training.collapse import collapse_statistics, merge_statistics

    parts = [collapse_statistics(PREDICTION[:2], TARGET[:2]), collapse_statistics(PREDICTION[2:], TARGET[2:])]
    metrics = merge_statistics(parts).finalize(None)
    assert metrics.kl_reg is None and "kl_reg" not in metrics.as_dict()


def test_config_accepts_a_null_kl_key() -> None:
    """keys: {kl_reg: null} validates; a null prediction or target key is refused with its path."""
    config = load_config({"collapse": {"keys": {"prediction": "pred", "kl_reg": None}}, "log": {"enabled": False}})
    assert config.collapse is not None and config.collapse.keys["kl_reg"] is None
    with pytest.raises(ValueError, match="only kl_reg may be null"):
        load_config({"collapse": {"keys": {"target": None}}})


def test_lightning_callback_without_kl(tmp_path: Path) -> None:
    """keys={'kl_reg': None} runs checks in a real Trainer with kl_reg absent, logging the other six."""
    pytest.importorskip("lightning")
    from test_lightning import TinyJEPA, fit

    from geno_lewm.integrations.lightning import CollapseMonitorCallback

    registry = MetricRegistry()
    callback = CollapseMonitorCallback(
        CollapseMonitor(registry=registry, thresholds=TINY_KL_BOUND),
        keys={"prediction": "pred", "kl_reg": None},
        logger=None,
    )
    trainer = fit(TinyJEPA(), callback, tmp_path, epochs=1, logger=False)
    check = callback.last_check
    assert check is not None and check.metrics.kl_reg is None
    assert "kl_reg" not in [a.criterion for a in check.alerts]
    assert "collapse/kl_reg" not in trainer.callback_metrics and "collapse/pred_cos_mean" in trainer.callback_metrics
