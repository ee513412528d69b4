"""Monitoring switched on from a configuration file: one pydantic model of the whole set-up.

A training configuration (YAML, JSON or TOML) gets a section for this library; its
mapping is validated by :func:`load_config` into a :class:`MonitoringConfig`, and
:meth:`MonitoringConfig.build` turns it into working monitors (for a plain training
loop) or Lightning callbacks::

    # train.yaml
    monitoring:
      log: {dir: runs/logs}
      sinks: [{type: csv, path: runs/metrics.csv}]
      collapse:
        every_n_steps: 500
        keys: {prediction: pred, kl_reg: loss_reg}
        thresholds: {kl_reg_max: 10.0}      # or criteria: calibrated, with a calibration section
        policy: {warmup_steps: 1000, patience: 3, on_alert: raise}
      dynamics: {every_n_steps: 50}
      metrics:
        mode: epoch
        metrics:
          acc: sklearn.metrics:accuracy_score
          f1: {target: torchmetrics:F1Score, kwargs: {task: multiclass, num_classes: 10}}

    config = load_config(yaml.safe_load(open("train.yaml"))["monitoring"])
    trainer = lightning.Trainer(callbacks=list(config.build(lightning=True).callbacks))

What is checked: every section forbids unknown keys, and a wrong key or value is an
:class:`~geno_lewm.errors.InputError` naming its path (``collapse.thresholds.kl_reg_mx:
unknown key; did you mean 'kl_reg_max'?``). Numbers are checked as the library's own
constructors check them (thresholds, schedules, policies), so a configuration that
validates builds. Scalars are strict: ``"500"`` is not a number of steps.

Sections: ``log`` (the JSON run log), ``sinks`` (experiment trackers), ``backend``, and
one per lens: ``collapse`` (RFC-0005, on by default), ``dynamics`` (prediction dynamics),
``gradients`` (output-gradient geometry) and ``metrics`` (any metric on step outputs,
:mod:`geno_lewm.training.output_metrics`); a lens is off when its section is absent
(``collapse: null`` turns the default one off) or says ``enabled: false``.

Metrics are named by import path (``package.module:attribute``); a class is
instantiated with ``kwargs``, a function gets them bound with ``functools.partial``.
Importing happens in :meth:`~MonitoringConfig.build`, so only trusted configuration
files should be used, as with any configuration that names code.

:func:`config_json_schema` (``python -m geno_lewm config-schema``) exports the JSON
Schema, for editors and for validating configurations elsewhere. Design:
``rfcs/0011-metrics-callback-and-config.md``.
"""

from __future__ import annotations

from geno_lewm.config._monitoring import (
    CONFIG_VERSION,
    Monitoring,
    MonitoringConfig,
    config_json_schema,
    load_config,
)
from geno_lewm.config._sections import (
    AlertPolicyConfig,
    CalibratedThresholdsConfig,
    CollapseConfig,
    CollapseThresholdsConfig,
    CSVSinkConfig,
    DynamicsConfig,
    DynamicsThresholdsConfig,
    GradientsConfig,
    LogConfig,
    MemorySinkConfig,
    MetricEntry,
    MetricsConfig,
    MLflowSinkConfig,
    TensorBoardSinkConfig,
    WandbSinkConfig,
)

__all__ = [
    "CONFIG_VERSION",
    "AlertPolicyConfig",
    "CSVSinkConfig",
    "CalibratedThresholdsConfig",
    "CollapseConfig",
    "CollapseThresholdsConfig",
    "DynamicsConfig",
    "DynamicsThresholdsConfig",
    "GradientsConfig",
    "LogConfig",
    "MLflowSinkConfig",
    "MemorySinkConfig",
    "MetricEntry",
    "MetricsConfig",
    "Monitoring",
    "MonitoringConfig",
    "TensorBoardSinkConfig",
    "WandbSinkConfig",
    "config_json_schema",
    "load_config",
]
