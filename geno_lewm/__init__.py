"""geno_lewm: diagnostics for JEPA-style world models, above all representation collapse.

The names users reach for are available from the package itself, imported on first use
(so ``import geno_lewm`` imports none of NumPy, torch, structlog or pydantic, and a
script that uses only the collapse core never does):

* monitoring — :class:`CollapseMonitor`, :class:`CollapseThresholds`,
  :func:`compute_collapse_metrics`, :func:`detect_collapse`, :class:`AlertPolicy`,
  :class:`PredictionMonitor`, :class:`GradientGeometry`, :class:`OutputMetrics`, and the
  spectral measures :func:`spectral_metrics`, :func:`gaussian_kl`, :func:`sigreg`;
* writing and reading — :func:`get_logger`, :func:`logged_run`, :func:`shutdown_run`,
  :class:`MetricRegistry`, :func:`read_log`,
  :func:`load_log`, :func:`load_config`, the sinks;
* frameworks — :class:`CollapseMonitorCallback`, :class:`PredictionDynamicsCallback`,
  :class:`GradientGeometryCallback`, :class:`MetricsCallback` (these import Lightning);
* errors — :class:`GenoLeWMError`, :class:`InputError`, :class:`CollapseDetectedError`, ...

Every name stays importable from its own module too (``geno_lewm.training.collapse`` and
the others), which is where its documentation lives. The layers behind them:
``rfcs/0012-architecture.md``.

Example
-------
>>> import geno_lewm
>>> m = geno_lewm.compute_collapse_metrics([[1.0, 0.0], [0.0, 1.0]], [[1.0, 0.0], [0.0, 1.0]], kl_reg=0.0)
>>> m.pred_cos_mean
1.0
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from geno_lewm._version import __version__

if TYPE_CHECKING:
    from geno_lewm.config import load_config
    from geno_lewm.errors import (
        BackendUnavailableError,
        CollapseDetectedError,
        DistributedError,
        GenoLeWMError,
        InputError,
        TrainingAlertError,
    )
    from geno_lewm.integrations.lightning import (
        CollapseMonitorCallback,
        GradientGeometryCallback,
        PredictionDynamicsCallback,
    )
    from geno_lewm.integrations.metrics_callback import MetricsCallback
    from geno_lewm.integrations.sinks import CSVSink, MemorySink, MLflowSink, TensorBoardSink, WandbSink
    from geno_lewm.logs import load_log, read_log
    from geno_lewm.metrics import MetricRegistry, default_registry
    from geno_lewm.observability import get_logger, logged_run, shutdown_run
    from geno_lewm.training.alerting import AlertPolicy
    from geno_lewm.training.collapse import (
        CollapseCheck,
        CollapseMetrics,
        CollapseMonitor,
        CollapseThresholds,
        compute_collapse_metrics,
        detect_collapse,
        record_collapse_metrics,
    )
    from geno_lewm.training.dynamics import PredictionMonitor, compute_prediction_metrics, watch_predictions
    from geno_lewm.training.gradients import GradientGeometry
    from geno_lewm.training.output_metrics import OutputMetrics
    from geno_lewm.training.spectrum import diagnose_collapse, gaussian_kl, sigreg, spectral_metrics

_EXPORTS: dict[str, str] = {
    **dict.fromkeys(
        (
            "CollapseCheck",
            "CollapseMetrics",
            "CollapseMonitor",
            "CollapseThresholds",
            "compute_collapse_metrics",
            "detect_collapse",
            "record_collapse_metrics",
        ),
        "geno_lewm.training.collapse",
    ),
    **dict.fromkeys(
        ("PredictionMonitor", "compute_prediction_metrics", "watch_predictions"), "geno_lewm.training.dynamics"
    ),
    **dict.fromkeys(("diagnose_collapse", "gaussian_kl", "sigreg", "spectral_metrics"), "geno_lewm.training.spectrum"),
    "AlertPolicy": "geno_lewm.training.alerting",
    "GradientGeometry": "geno_lewm.training.gradients",
    "OutputMetrics": "geno_lewm.training.output_metrics",
    **dict.fromkeys(
        (
            "BackendUnavailableError",
            "CollapseDetectedError",
            "DistributedError",
            "GenoLeWMError",
            "InputError",
            "TrainingAlertError",
        ),
        "geno_lewm.errors",
    ),
    **dict.fromkeys(("MetricRegistry", "default_registry"), "geno_lewm.metrics"),
    **dict.fromkeys(("get_logger", "logged_run", "shutdown_run"), "geno_lewm.observability"),
    **dict.fromkeys(("load_log", "read_log"), "geno_lewm.logs"),
    "load_config": "geno_lewm.config",
    **dict.fromkeys(
        ("CSVSink", "MLflowSink", "MemorySink", "TensorBoardSink", "WandbSink"), "geno_lewm.integrations.sinks"
    ),
    **dict.fromkeys(
        ("CollapseMonitorCallback", "GradientGeometryCallback", "PredictionDynamicsCallback"),
        "geno_lewm.integrations.lightning",
    ),
    "MetricsCallback": "geno_lewm.integrations.metrics_callback",
}
"""Name -> the module that defines it, for :func:`__getattr__`."""

__all__ = [
    "AlertPolicy",
    "BackendUnavailableError",
    "CSVSink",
    "CollapseCheck",
    "CollapseDetectedError",
    "CollapseMetrics",
    "CollapseMonitor",
    "CollapseMonitorCallback",
    "CollapseThresholds",
    "DistributedError",
    "GenoLeWMError",
    "GradientGeometry",
    "GradientGeometryCallback",
    "InputError",
    "MLflowSink",
    "MemorySink",
    "MetricRegistry",
    "MetricsCallback",
    "OutputMetrics",
    "PredictionDynamicsCallback",
    "PredictionMonitor",
    "TensorBoardSink",
    "TrainingAlertError",
    "WandbSink",
    "__version__",
    "compute_collapse_metrics",
    "compute_prediction_metrics",
    "default_registry",
    "detect_collapse",
    "diagnose_collapse",
    "gaussian_kl",
    "get_logger",
    "load_config",
    "load_log",
    "logged_run",
    "read_log",
    "record_collapse_metrics",
    "shutdown_run",
    "sigreg",
    "spectral_metrics",
    "watch_predictions",
]


def __getattr__(name: str) -> Any:
    """Import the module that holds ``name`` on first use (PEP 562) and keep the name."""
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module 'geno_lewm' has no attribute {name!r}")
    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
