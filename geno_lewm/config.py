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
        thresholds: {kl_reg_max: 10.0}
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

import difflib
import importlib
import inspect
import re
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Annotated, Any, Final, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, GetJsonSchemaHandler, ValidationError, model_validator
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from geno_lewm.errors import InputError

if TYPE_CHECKING:
    from geno_lewm._protocols import MetricSink
    from geno_lewm.metrics import MetricRegistry
    from geno_lewm.observability import GenoLeWMLogger
    from geno_lewm.training.alerting import AlertPolicy
    from geno_lewm.training.collapse import CollapseMonitor
    from geno_lewm.training.dynamics import PredictionMonitor
    from geno_lewm.training.gradients import GradientGeometry
    from geno_lewm.training.output_metrics import OutputMetrics

__all__ = [
    "CONFIG_VERSION",
    "AlertPolicyConfig",
    "CSVSinkConfig",
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

CONFIG_VERSION: Final = 1
"""Version of the configuration format; a configuration may state it as ``version: 1``."""

PositiveInt = Annotated[int, Field(gt=0)]
NonNegativeInt = Annotated[int, Field(ge=0)]
PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
UnitFloat = Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)]
Rename = Literal["none", "short"]
_IMPORT_PATH = re.compile(
    r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*(:[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_]\w*)*)?"
)
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _library_error(error: InputError) -> ValueError:
    """A constructor's refusal as a validation error (pydantic then adds the path)."""
    return ValueError(str(error))


class _Section(BaseModel):
    """Every section: unknown keys refused, scalars strict, immutable once validated."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, validate_default=True)

    @model_validator(mode="before")
    @classmethod
    def _tuples_as_lists(cls, data: Any) -> Any:
        """Accept tuples where a list is expected (Python callers build mappings too)."""
        if isinstance(data, Mapping):
            return {key: list(value) if isinstance(value, tuple) else value for key, value in data.items()}
        return data


# ------------------------------------------------------------------ log and sinks
class LogConfig(_Section):
    """The JSON-lines run log (:func:`geno_lewm.observability.get_logger`, component ``training``)."""

    enabled: bool = Field(default=True, description="Write the run log.")
    dir: str | None = Field(
        default=None, description="Directory of the log; GENO_LEWM_LOG_DIR, else ./logs, when null.", min_length=1
    )
    run_id: str | None = Field(
        default=None, description="Run id and file name; GENO_LEWM_RUN_ID, else a fresh id, when null.", min_length=1
    )
    mirror: bool = Field(default=False, description="Also write a short line per record to standard error.")
    fsync: bool = Field(default=False, description="Force each record to stable storage.")


class _SinkSection(_Section):
    rename: Rename = Field(
        default="none", description="'short' turns geno_lewm.training.<family>.<x> into <family>/<x>."
    )


class CSVSinkConfig(_SinkSection):
    """Rows ``time,step,name,value`` appended to a CSV file."""

    type: Literal["csv"]
    path: str = Field(min_length=1, description="The CSV file (its directory is created when missing).")


class TensorBoardSinkConfig(_SinkSection):
    """TensorBoard scalars (needs the ``tensorboard`` package)."""

    type: Literal["tensorboard"]
    log_dir: str | None = Field(default=None, min_length=1, description="The writer's directory; runs/... when null.")


class WandbSinkConfig(_SinkSection):
    """Weights & Biases: the current run (``wandb.init()`` first)."""

    type: Literal["wandb"]


class MLflowSinkConfig(_SinkSection):
    """MLflow: the active run."""

    type: Literal["mlflow"]


class MemorySinkConfig(_Section):
    """Calls kept in memory (notebooks, tests)."""

    type: Literal["memory"]


SinkConfig = Annotated[
    Union[CSVSinkConfig, TensorBoardSinkConfig, WandbSinkConfig, MLflowSinkConfig, MemorySinkConfig],  # noqa: UP007
    Field(discriminator="type"),
]
_SINK_TYPES = ("csv", "tensorboard", "wandb", "mlflow", "memory")


def _build_sink(config: Any) -> MetricSink:
    from geno_lewm.integrations import sinks

    rename = sinks.short_metric_name if getattr(config, "rename", "none") == "short" else None
    if isinstance(config, CSVSinkConfig):
        return sinks.CSVSink(config.path, rename=rename)
    if isinstance(config, TensorBoardSinkConfig):
        return sinks.TensorBoardSink(log_dir=config.log_dir, rename=rename)
    if isinstance(config, WandbSinkConfig):
        return sinks.WandbSink(rename=rename)
    if isinstance(config, MLflowSinkConfig):
        return sinks.MLflowSink(rename=rename)
    return sinks.MemorySink()


# ------------------------------------------------------------------ policies and thresholds
class AlertPolicyConfig(_Section):
    """When tripped criteria become alerts (:class:`~geno_lewm.training.alerting.AlertPolicy`)."""

    on_alert: Literal["log", "raise"] = Field(
        default="log", description="'raise' stops training once a check is recorded."
    )
    warmup_steps: NonNegativeInt = Field(default=0, description="No alert at checks before this step.")
    patience: PositiveInt = Field(default=1, description="Consecutive tripped checks that raise an alert.")
    hysteresis: Annotated[float, Field(ge=0, allow_inf_nan=False)] = Field(
        default=0.0, description="Relative margin past the bound before an alert clears."
    )

    def build(self) -> AlertPolicy:
        """The :class:`~geno_lewm.training.alerting.AlertPolicy`."""
        from geno_lewm.training.alerting import AlertPolicy

        return AlertPolicy(
            on_alert=self.on_alert, warmup_steps=self.warmup_steps, patience=self.patience, hysteresis=self.hysteresis
        )


class CollapseThresholdsConfig(_Section):
    """Alert thresholds of RFC-0005 (:class:`~geno_lewm.training.collapse.CollapseThresholds`)."""

    pred_var_to_target_var: PositiveFloat = Field(default=0.5, description="Alert when pred_var < this x target_var.")
    pairwise_to_initial: PositiveFloat = Field(
        default=0.5, description="Alert when pairwise distance < this x initial."
    )
    kl_reg_max: PositiveFloat = Field(default=10.0, description="Alert when kl_reg > this.")
    effective_rank_to_initial: PositiveFloat | None = Field(
        default=None, description="Opt-in: alert when an effective rank < this x its initial value (turns spectra on)."
    )

    def build(self) -> Any:
        """The :class:`~geno_lewm.training.collapse.CollapseThresholds`."""
        from geno_lewm.training.collapse import CollapseThresholds

        return CollapseThresholds(**self.model_dump())


class DynamicsThresholdsConfig(_Section):
    """Prediction-dynamics thresholds (:class:`~geno_lewm.training.dynamics.PredictionThresholds`)."""

    min_normalized_entropy: UnitFloat = Field(default=0.05, description="Mode collapse below this normalised entropy.")
    max_normalized_entropy: UnitFloat = Field(default=0.95, description="Random guessing above this (1.0: off).")
    max_top_class_fraction: UnitFloat = Field(default=0.9, description="Class dominance above this share (1.0: off).")

    @model_validator(mode="after")
    def _consistent(self) -> DynamicsThresholdsConfig:
        try:
            self.build()
        except InputError as error:
            raise _library_error(error) from None
        return self

    def build(self) -> Any:
        """The :class:`~geno_lewm.training.dynamics.PredictionThresholds`."""
        from geno_lewm.training.dynamics import PredictionThresholds

        return PredictionThresholds(**self.model_dump())


# ------------------------------------------------------------------ lenses
class CollapseConfig(_Section):
    """The collapse monitor (RFC-0005) and, under Lightning, its callback."""

    enabled: bool = Field(default=True, description="Run this lens.")
    every_n_steps: PositiveInt | None = Field(
        default=500,
        description="Check period in training steps; null (Lightning only): every validation run.",
    )
    num_batches: PositiveInt = Field(
        default=1, description="Lightning: validation batches that make up a checked batch."
    )
    keys: dict[Literal["prediction", "target", "kl_reg"], Annotated[str, Field(min_length=1)]] = Field(
        default_factory=dict, description="Lightning: validation_step output key of each value (default: its name)."
    )
    thresholds: CollapseThresholdsConfig = CollapseThresholdsConfig()
    initial_pairwise_pred_dist_mean: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = Field(
        default=None, description="A known pairwise baseline, e.g. from a checkpoint."
    )
    spectrum: bool = Field(
        default=False, description="Also compute spectral metrics (effective rank...) at each check."
    )
    policy: AlertPolicyConfig | None = Field(default=None, description="Alert policy; null: the RFC behaviour.")
    distributed: Literal["gather", "statistics", "off"] = Field(
        default="gather", description="Under torch.distributed."
    )
    record_on: Literal["rank0", "all"] = Field(default="rank0", description="Ranks that write registry, log and sinks.")
    log_prefix: str = Field(default="collapse/", description="Lightning: prefix of the names given to pl_module.log.")
    prog_bar: bool = Field(default=False, description="Lightning: show the metrics in the progress bar.")

    @model_validator(mode="after")
    def _consistent(self) -> CollapseConfig:
        if self.distributed == "statistics" and (self.spectrum or self.thresholds.effective_rank_to_initial):
            raise ValueError("spectra need the whole batch: use distributed 'gather' with spectrum or rank thresholds")
        return self

    def build(self, *, backend: str, registry: MetricRegistry | None, sinks: tuple[MetricSink, ...]) -> CollapseMonitor:
        """The :class:`~geno_lewm.training.collapse.CollapseMonitor`."""
        from geno_lewm.training.collapse import CollapseMonitor

        return CollapseMonitor(
            log_every_steps=500 if self.every_n_steps is None else self.every_n_steps,
            thresholds=self.thresholds.build(),
            initial_pairwise_pred_dist_mean=self.initial_pairwise_pred_dist_mean,
            backend=backend,
            registry=registry,
            spectrum=self.spectrum,
            policy=None if self.policy is None else self.policy.build(),
            sinks=sinks,
            distributed=self.distributed,
            record_on=self.record_on,
        )


class DynamicsConfig(_Section):
    """The prediction-dynamics monitor of a classifier's logits."""

    enabled: bool = Field(default=True, description="Run this lens.")
    every_n_steps: PositiveInt = Field(default=50, description="Check period in training steps.")
    key: Annotated[str, Field(min_length=1)] | None = Field(
        default=None, description="Lightning: training_step output key of the logits (default: logits, out, preds)."
    )
    thresholds: DynamicsThresholdsConfig = DynamicsThresholdsConfig()
    policy: AlertPolicyConfig | None = Field(
        default=None, description="Alert policy; null: every tripped check is an alert, nothing raises."
    )
    log_prefix: str = Field(default="dynamics/", description="Lightning: prefix of the names given to pl_module.log.")

    def build(self, *, backend: str, registry: MetricRegistry | None) -> PredictionMonitor:
        """The :class:`~geno_lewm.training.dynamics.PredictionMonitor` (its sinks are a
        programmatic option: it has no rank-0 logic under ``torch.distributed``).
        """
        from geno_lewm.training.dynamics import PredictionMonitor

        return PredictionMonitor(
            log_every_steps=self.every_n_steps,
            thresholds=self.thresholds.build(),
            backend=backend,
            registry=registry,
            policy=None if self.policy is None else self.policy.build(),
        )


_Band = Literal["std", "minmax"]
_BANDS: tuple[_Band, ...] = ("std", "minmax")


class GradientsConfig(_Section):
    """Output-gradient geometry per layer, summarised per epoch."""

    enabled: bool = Field(default=True, description="Run this lens.")
    module: Annotated[str, Field(min_length=1)] | None = Field(
        default=None, description="Lightning: the submodule to watch (default: the whole LightningModule)."
    )
    normalize_by_size: bool = Field(default=False, description="Record the RMS instead of the L2 norm.")
    log_scale: bool = Field(default=False, description="Record log10 of the norm.")
    compute_correlation: bool = Field(default=False, description="Cosine with the previous pass's gradient.")
    correlation_sketch_size: PositiveInt | None = Field(
        default=65536, description="Count-sketch size for the correlation."
    )
    skip_activation: bool = Field(default=True, description="Leave activation modules out of the default layers.")
    layers: list[Annotated[str, Field(min_length=1)]] | None = Field(
        default=None, description="Modules to watch, by name."
    )
    keep_values: bool = Field(default=False, description="Keep every value of the epoch (needed for the median).")
    line_aggregation: Literal["mean", "median"] = Field(default="mean", description="The line: mean or median.")
    range_aggregation: list[_Band] = Field(
        default_factory=lambda: list(_BANDS),
        min_length=1,
        description="The bands around the line: std (line ± standard deviation) and/or minmax.",
    )
    seed: NonNegativeInt = Field(default=0, description="Seed of the count sketch.")
    log_prefix: str = Field(default="gradients/", description="Lightning: prefix of the names given to pl_module.log.")

    @model_validator(mode="after")
    def _consistent(self) -> GradientsConfig:
        if self.line_aggregation == "median" and not self.keep_values:
            raise ValueError("'line_aggregation' 'median' needs keep_values: true (running aggregates have no median)")
        if len(set(self.range_aggregation)) != len(self.range_aggregation):
            raise ValueError(f"'range_aggregation' names a band twice: {self.range_aggregation}")
        return self

    def options(self, registry: MetricRegistry | None) -> dict[str, Any]:
        """Keyword arguments of :class:`~geno_lewm.training.gradients.GradientGeometry`."""
        options = self.model_dump(exclude={"enabled", "module", "log_prefix"})
        options["registry"] = registry
        return options


class MetricEntry(_Section):
    """One metric named by import path; a plain string is short for ``{target: <string>}``."""

    target: str = Field(
        pattern=f"^{_IMPORT_PATH.pattern}$",
        description="Import path, e.g. 'sklearn.metrics:accuracy_score' or 'torchmetrics.F1Score'.",
    )
    kwargs: dict[str, Any] = Field(
        default_factory=dict, description="Arguments: a class is instantiated with them, a function gets them bound."
    )
    needs: list[Annotated[str, Field(min_length=1)]] | dict[str, Annotated[str, Field(min_length=1)]] | None = Field(
        default=None,
        description="Output keys feeding the metric: a list (positional) or mapping (keyword); null: inferred.",
    )

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        return {"target": data} if isinstance(data, str) else data

    @classmethod
    def __get_pydantic_json_schema__(cls, schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        """The entry's schema, or the import path alone (the shorthand)."""
        entry = handler(schema)
        path = {"type": "string", "pattern": f"^{_IMPORT_PATH.pattern}$", "description": "Import path alone."}
        return {"anyOf": [path, entry]}

    def resolve(self, where: str) -> Any:
        """Import the target and apply ``kwargs``; :class:`InputError` naming ``where`` on failure."""
        module_name, _, attribute = self.target.partition(":")
        if not attribute:
            module_name, _, attribute = self.target.rpartition(".")
        try:
            obj: Any = importlib.import_module(module_name)
            for part in attribute.split("."):
                obj = getattr(obj, part)
        except (ImportError, AttributeError) as error:
            raise InputError(
                f"{where}.target: cannot import {self.target!r}: {type(error).__name__}: {error}",
                details={"field": f"{where}.target", "value": self.target},
            ) from None
        if inspect.isclass(obj):
            try:
                return obj(**self.kwargs)
            except Exception as error:
                raise InputError(
                    f"{where}.kwargs: {self.target} rejected its arguments: {type(error).__name__}: {error}",
                    details={"field": f"{where}.kwargs", "value": self.target},
                ) from None
        if not callable(obj):
            raise InputError(
                f"{where}.target: {self.target!r} is a {type(obj).__name__}, not a metric (a class or a function)",
                details={"field": f"{where}.target", "value": self.target},
            )
        return partial(obj, **self.kwargs) if self.kwargs else obj


def _all_stages() -> list[Literal["train", "val", "test"]]:
    return ["train", "val", "test"]


class MetricsConfig(_Section):
    """Any metric on step outputs (:class:`~geno_lewm.integrations.metrics_callback.MetricsCallback`)."""

    enabled: bool = Field(default=True, description="Run this lens.")
    metrics: dict[str, MetricEntry] = Field(min_length=1, description="Metric name -> import path or entry.")
    needs: list[Annotated[str, Field(min_length=1)]] | dict[str, Annotated[str, Field(min_length=1)]] | None = Field(
        default=None, description="Output keys feeding every metric without its own needs; null: inferred."
    )
    mode: Literal["step", "epoch"] = Field(default="step", description="Per-step weighted mean, or exact per epoch.")
    collect_on_cpu: bool = Field(default=False, description="Epoch mode: keep collected outputs in host memory.")
    stages: list[Literal["train", "val", "test"]] = Field(
        default_factory=_all_stages, min_length=1, description="Stages watched (Lightning)."
    )
    train_every_n_steps: PositiveInt | None = Field(default=None, description="Training report period in steps.")
    train_every_n_epochs: PositiveInt | None = Field(
        default=None, description="Training report period in epochs (default 1)."
    )
    val_every_n_epochs: PositiveInt = Field(default=1, description="Validation report period in epochs.")
    prog_bar: bool = Field(default=False, description="Show the values in the progress bar.")
    log_to_module: bool = Field(default=True, description="Send the values to pl_module.log.")
    name_format: str = Field(default="{stage}/{name}", description="Name given to pl_module.log.")
    units: dict[str, Annotated[str, Field(min_length=1)]] = Field(
        default_factory=dict, description="Metric name -> unit."
    )
    record_on: Literal["rank0", "all"] = Field(default="rank0", description="Ranks that write registry, log and sinks.")

    @model_validator(mode="after")
    def _consistent(self) -> MetricsConfig:
        for name in self.metrics:
            if not _IDENTIFIER.fullmatch(name):
                raise ValueError(f"metric names must be identifiers (letters, digits, '_'): got {name!r}")
        unknown = [name for name in self.units if name not in self.metrics]
        if unknown:
            raise ValueError(f"'units' names {', '.join(map(repr, unknown))}, which are not metrics")
        if self.train_every_n_steps is not None and self.train_every_n_epochs is not None:
            raise ValueError("give 'train_every_n_steps' or 'train_every_n_epochs', not both")
        return self

    def _metrics_and_needs(self) -> tuple[dict[str, Any], Any]:
        """The imported metrics and the ``needs`` argument, checked against their signatures."""
        from geno_lewm.training.output_metrics import define_metrics

        metrics = {name: entry.resolve(f"metrics.metrics.{name}") for name, entry in self.metrics.items()}
        needs: Any = self.needs
        if any(entry.needs is not None for entry in self.metrics.values()):
            needs = {name: self.needs if e.needs is None else e.needs for name, e in self.metrics.items()}
        try:
            define_metrics(metrics, needs)
        except InputError as error:
            raise InputError(f"metrics: {error}", details={**error.details, "field": "metrics"}) from None
        return metrics, needs

    def build(self) -> OutputMetrics:
        """The framework-free :class:`~geno_lewm.training.output_metrics.OutputMetrics`."""
        from geno_lewm.training.output_metrics import OutputMetrics

        metrics, needs = self._metrics_and_needs()
        return OutputMetrics(metrics, needs=needs, mode=self.mode, collect_on_cpu=self.collect_on_cpu)


# ------------------------------------------------------------------ the whole
@dataclass(frozen=True, slots=True)
class Monitoring:
    """What :meth:`MonitoringConfig.build` returns.

    Attributes
    ----------
    config:
        The configuration it was built from.
    logger:
        The JSON run log (``None`` when ``log.enabled`` is false); pass it to the monitors'
        ``observe(..., logger=...)`` in a plain loop.
    sinks:
        The configured sinks (already given to the collapse monitor and the metrics).
    collapse, dynamics:
        The collapse and prediction-dynamics monitors, when enabled.
    gradients:
        A plain loop's :class:`~geno_lewm.training.gradients.GradientGeometry` on the
        model passed to ``build`` (Lightning builds its own at fit start).
    metrics:
        A plain loop's :class:`~geno_lewm.training.output_metrics.OutputMetrics`
        (``None`` under Lightning, where the callback holds one per stage).
    callbacks:
        With ``lightning=True``, the Lightning callbacks of the enabled lenses, in the
        order collapse, dynamics, gradients, metrics.
    """

    config: MonitoringConfig = field(repr=False)
    logger: GenoLeWMLogger | None
    sinks: tuple[MetricSink, ...]
    collapse: CollapseMonitor | None = None
    dynamics: PredictionMonitor | None = None
    gradients: GradientGeometry | None = None
    metrics: OutputMetrics | None = None
    callbacks: tuple[Any, ...] = ()


class _RankZeroLogger:
    """A run log that only rank 0 of a ``torch.distributed`` group writes to, for the
    lenses that describe each rank's own data (as their callbacks do with ``"auto"``).
    """

    __slots__ = ("_logger",)

    def __init__(self, logger: GenoLeWMLogger) -> None:
        self._logger = logger

    def info(self, event: str, **fields: Any) -> None:
        """Record an informational event on rank 0."""
        from geno_lewm._distributed import rank

        if rank() == 0:
            self._logger.info(event, **fields)

    def warning(self, event: str, **fields: Any) -> None:
        """Record a warning on rank 0."""
        from geno_lewm._distributed import rank

        if rank() == 0:
            self._logger.warning(event, **fields)


def _active(section: Any) -> bool:
    return section is not None and bool(section.enabled)


class MonitoringConfig(_Section):
    """The whole monitoring set-up: run log, sinks, backend and lenses.

    Build one from a plain mapping with :func:`load_config` (errors name the path of the
    offending key), then call :meth:`build`.

    Example
    -------
    >>> config = load_config({"collapse": {"every_n_steps": 100}, "log": {"enabled": False}})
    >>> built = config.build()
    >>> built.collapse.log_every_steps, built.logger is None
    (100, True)
    """

    version: Literal[1] = Field(default=CONFIG_VERSION, description="Version of this configuration format.")
    log: LogConfig = LogConfig()
    sinks: list[SinkConfig] = Field(default_factory=list, description="Experiment trackers the values go to.")
    backend: Literal["auto", "python", "numpy", "torch"] = Field(
        default="auto", description="Compute backend of the lenses."
    )
    collapse: CollapseConfig | None = Field(default=CollapseConfig(), description="On by default; null turns it off.")
    dynamics: DynamicsConfig | None = Field(default=None, description="Prediction dynamics; off when absent.")
    gradients: GradientsConfig | None = Field(default=None, description="Output-gradient geometry; off when absent.")
    metrics: MetricsConfig | None = Field(default=None, description="Metrics on step outputs; off when absent.")

    def build(
        self, *, lightning: bool = False, model: Any = None, registry: MetricRegistry | None = None
    ) -> Monitoring:
        """The configured monitors, or Lightning callbacks with ``lightning=True``.

        Parameters
        ----------
        lightning:
            Also build the Lightning callbacks (imports ``lightning``).
        model:
            A plain loop's ``torch.nn.Module`` for the ``gradients`` lens (unused under
            Lightning, where the callback watches the LightningModule).
        registry:
            Where gauges go; the process default when omitted.

        Raises
        ------
        InputError
            When a metric cannot be imported or rejects its arguments, or when the
            ``gradients`` lens is on in a plain loop without a ``model``.
        """
        if not isinstance(lightning, bool):
            raise InputError(
                f"'lightning' must be True or False: got {lightning!r}",
                details={"field": "lightning", "value": lightning},
            )
        if _active(self.gradients) and not lightning and model is None:
            raise InputError(
                "gradients: the lens watches a model: pass build(model=...) in a plain loop, or lightning=True",
                details={"field": "gradients", "value": None},
            )
        if (
            _active(self.collapse)
            and not lightning
            and self.collapse is not None
            and self.collapse.every_n_steps is None
        ):
            raise InputError(
                "collapse.every_n_steps: null (every validation run) needs Lightning; give a period for a plain loop",
                details={"field": "collapse.every_n_steps", "value": None},
            )
        resolved_metrics = self.metrics._metrics_and_needs() if _active(self.metrics) and self.metrics else None
        logger = None
        if self.log.enabled:
            from geno_lewm.observability import get_logger

            logger = get_logger(
                "training", log_dir=self.log.dir, run_id=self.log.run_id, mirror=self.log.mirror, fsync=self.log.fsync
            )
        sinks = tuple(_build_sink(sink) for sink in self.sinks)
        collapse = (
            self.collapse.build(backend=self.backend, registry=registry, sinks=sinks)
            if _active(self.collapse) and self.collapse
            else None
        )
        dynamics = (
            self.dynamics.build(backend=self.backend, registry=registry)
            if _active(self.dynamics) and self.dynamics
            else None
        )
        if not lightning:
            metrics = None
            if resolved_metrics is not None and self.metrics is not None:
                from geno_lewm.training.output_metrics import OutputMetrics

                metrics = OutputMetrics(
                    resolved_metrics[0],
                    needs=resolved_metrics[1],
                    mode=self.metrics.mode,
                    collect_on_cpu=self.metrics.collect_on_cpu,
                )
            gradients = None  # last: it attaches hooks to the model
            if _active(self.gradients) and self.gradients is not None:
                from geno_lewm.training.gradients import GradientGeometry

                gradients = GradientGeometry(model, **self.gradients.options(registry))
            return Monitoring(self, logger, sinks, collapse, dynamics, gradients, metrics)
        callbacks = self._callbacks(
            collapse=collapse,
            dynamics=dynamics,
            resolved_metrics=resolved_metrics,
            logger=logger,
            sinks=sinks,
            registry=registry,
        )
        return Monitoring(self, logger, sinks, collapse, dynamics, None, None, callbacks)

    def _callbacks(
        self,
        *,
        collapse: CollapseMonitor | None,
        dynamics: PredictionMonitor | None,
        resolved_metrics: tuple[dict[str, Any], Any] | None,
        logger: GenoLeWMLogger | None,
        sinks: tuple[MetricSink, ...],
        registry: MetricRegistry | None,
    ) -> tuple[Any, ...]:
        from geno_lewm.integrations import lightning as integration
        from geno_lewm.integrations.metrics_callback import MetricsCallback

        callbacks: list[Any] = []
        if collapse is not None and self.collapse is not None:
            callbacks.append(
                integration.CollapseMonitorCallback(
                    collapse,
                    keys={str(role): key for role, key in self.collapse.keys.items()},
                    every_n_steps=self.collapse.every_n_steps,
                    num_batches=self.collapse.num_batches,
                    logger=logger,
                    log_prefix=self.collapse.log_prefix,
                    prog_bar=self.collapse.prog_bar,
                )
            )
        rank_zero = None if logger is None else _RankZeroLogger(logger)
        if dynamics is not None and self.dynamics is not None:
            callbacks.append(
                integration.PredictionDynamicsCallback(
                    dynamics, key=self.dynamics.key, logger=rank_zero, log_prefix=self.dynamics.log_prefix
                )
            )
        if _active(self.gradients) and self.gradients is not None:
            callbacks.append(
                integration.GradientGeometryCallback(
                    module=self.gradients.module,
                    logger=rank_zero,
                    log_prefix=self.gradients.log_prefix,
                    **self.gradients.options(registry),
                )
            )
        if resolved_metrics is not None and self.metrics is not None:
            section = self.metrics
            callbacks.append(
                MetricsCallback(
                    resolved_metrics[0],
                    needs=resolved_metrics[1],
                    mode=section.mode,
                    collect_on_cpu=section.collect_on_cpu,
                    stages=list(section.stages),
                    train_every_n_steps=section.train_every_n_steps,
                    train_every_n_epochs=section.train_every_n_epochs,
                    val_every_n_epochs=section.val_every_n_epochs,
                    prog_bar=section.prog_bar,
                    log_to_module=section.log_to_module,
                    name_format=section.name_format,
                    units=dict(section.units) or None,
                    registry=registry,
                    logger=logger,
                    sinks=sinks,
                    record_on=section.record_on,
                )
            )
        return tuple(callbacks)


# ------------------------------------------------------------------ errors and schema
def _is_section(value: Any) -> bool:
    return inspect.isclass(value) and issubclass(value, BaseModel)


def _unwrap(annotation: Any) -> Any:
    """``Annotated[X, ...]`` and ``X | None`` as ``X``."""
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
            continue
        if origin in (Union, types.UnionType):
            members = [a for a in get_args(annotation) if a is not type(None)]
            if len(members) == 1:
                annotation = members[0]
                continue
        return annotation


def _model_at(location: tuple[Any, ...]) -> type[BaseModel] | None:
    """The section model that ``location`` (a pydantic error location) points into."""
    current: Any = MonitoringConfig
    for part in location:
        current = _unwrap(current)
        if _is_section(current):
            spec = current.model_fields.get(part) if isinstance(part, str) else None
            if spec is None:
                return None
            current = spec.annotation
            continue
        origin, args = get_origin(current), get_args(current)
        if origin is list and isinstance(part, int):
            current = args[0]
        elif origin is dict and isinstance(part, str):
            current = args[1]
        elif origin in (Union, types.UnionType):
            tagged = [
                member
                for member in map(_unwrap, args)
                if _is_section(member)
                and "type" in member.model_fields
                and get_args(member.model_fields["type"].annotation) == (part,)
            ]
            if not tagged:
                return None
            current = tagged[0]
        else:
            return None
    current = _unwrap(current)
    return current if _is_section(current) else None


def _readable_path(location: tuple[Any, ...]) -> str:
    """``('sinks', 0, 'csv', 'path')`` as ``sinks[0].path``: list indices in brackets,
    without the tags pydantic adds for unions.
    """
    parts: list[str] = []
    for index, part in enumerate(location):
        if isinstance(part, int):
            if parts:
                parts[-1] += f"[{part}]"
            else:
                parts.append(f"[{part}]")
        elif "[" in str(part):
            continue  # a union member's name, e.g. 'list[str]'
        elif index >= 2 and location[index - 2] == "sinks" and isinstance(location[index - 1], int):
            continue  # the sink's type tag
        else:
            parts.append(str(part))
    return ".".join(parts)


def _describe(error: dict[str, Any]) -> dict[str, Any]:
    location = tuple(error["loc"])
    path = _readable_path(location)
    message = str(error["msg"])
    if error["type"] == "extra_forbidden":
        section = _model_at(location[:-1])
        allowed = list(section.model_fields) if section is not None else []
        close = difflib.get_close_matches(str(location[-1]), allowed, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        known = f" (known keys: {', '.join(allowed)})" if allowed else ""
        message = f"unknown key{hint}{known}"
    else:
        if message.startswith("Value error, "):
            message = message[len("Value error, ") :]
        given = error.get("input")
        if isinstance(given, (str, int, float, bool)) and len(repr(given)) <= 60 and error["type"] != "missing":
            message += f": got {given!r}"
    return {"path": path or "(top level)", "message": message, "type": error["type"]}


def load_config(data: Mapping[str, Any] | MonitoringConfig) -> MonitoringConfig:
    """Validate a plain mapping (from YAML, JSON or TOML) into a :class:`MonitoringConfig`.

    Raises
    ------
    InputError
        Listing every problem with the path of its key, e.g. ``collapse.thresholds.
        kl_reg_mx: unknown key; did you mean 'kl_reg_max'?``; ``details["errors"]`` holds
        them as ``{"path", "message", "type"}`` mappings.

    Example
    -------
    >>> try:
    ...     load_config({"collapse": {"every_n_step": 100}})
    ... except InputError as error:
    ...     print(error.details["errors"][0]["path"])
    collapse.every_n_step
    """
    if isinstance(data, MonitoringConfig):
        return data
    if not isinstance(data, Mapping):
        raise InputError(
            f"the monitoring configuration must be a mapping: got {type(data).__name__}",
            details={"field": "config", "type": type(data).__name__},
        )
    try:
        return MonitoringConfig.model_validate(dict(data))
    except ValidationError as error:
        problems = [_describe(item) for item in error.errors(include_url=False)]  # type: ignore[arg-type]
        shown = "; ".join(f"{p['path']}: {p['message']}" for p in problems[:5])
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise InputError(
            f"invalid monitoring configuration: {shown}{more}",
            details={"field": problems[0]["path"], "errors": problems},
        ) from None


def config_json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a monitoring configuration.

    Example
    -------
    >>> schema = config_json_schema()
    >>> schema["additionalProperties"], "collapse" in schema["properties"]
    (False, True)
    """
    schema = MonitoringConfig.model_json_schema()
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "geno_lewm monitoring configuration",
        "description": (
            f"The monitoring section of a training configuration, version {CONFIG_VERSION} "
            "(see rfcs/0011-metrics-callback-and-config.md). Unknown keys are refused."
        ),
        **{key: value for key, value in schema.items() if key not in ("title", "description")},
    }
