"""The sections of a monitoring configuration: one pydantic model per part of the set-up.

Each section's defaults are read from what it configures — the monitors' signatures, the
thresholds' and the alert policy's dataclass fields, the logger's and the sinks'
signatures, and the Lightning callbacks' defaults in
:mod:`geno_lewm.integrations._callback_defaults` — so a default changed there changes
here too. See :mod:`geno_lewm.config`.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import re
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, GetJsonSchemaHandler, model_validator
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from geno_lewm.errors import InputError
from geno_lewm.integrations import _callback_defaults as callback_defaults
from geno_lewm.integrations import sinks
from geno_lewm.observability import RUN_ID_PATTERN, get_logger
from geno_lewm.training.alerting import AlertPolicy, OnAlert
from geno_lewm.training.collapse import (
    CalibratedThresholds,
    CollapseMonitor,
    CollapseThresholds,
    Criteria,
    DistributedMode,
)
from geno_lewm.training.dynamics import PredictionMonitor, PredictionThresholds
from geno_lewm.training.gradients import GradientGeometry, LineAggregation, RangeAggregation, check_gradient_options
from geno_lewm.training.output_metrics import Mode, OutputMetrics, define_metrics

if TYPE_CHECKING:
    from geno_lewm._protocols import MetricSink
    from geno_lewm.metrics import MetricRegistry

__all__ = [
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
    "Section",
    "SinkConfig",
    "TensorBoardSinkConfig",
    "WandbSinkConfig",
    "build_sink",
    "build_sinks",
    "default_of",
]

PositiveInt = Annotated[int, Field(gt=0)]
NonNegativeInt = Annotated[int, Field(ge=0)]
PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
UnitFloat = Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)]
Rename = Literal["none", "short"]
_IMPORT_PATH = re.compile(
    r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*(:[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_]\w*)*)?"
)
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def default_of(owner: Any, name: str) -> Any:
    """The default of field ``name`` of a dataclass, or of parameter ``name`` of a callable
    (a class: its constructor): the one place a configuration's defaults come from.

    Example
    -------
    >>> default_of(CollapseThresholds, "kl_reg_max"), default_of(CollapseMonitor, "log_every_steps")
    (10.0, 500)
    """
    if dataclasses.is_dataclass(owner):
        for field in dataclasses.fields(owner):
            if field.name == name and field.default is not dataclasses.MISSING:
                return field.default
    parameter = inspect.signature(owner).parameters[name]
    if parameter.default is inspect.Parameter.empty:
        raise KeyError(f"{name!r} of {owner!r} has no default")
    return parameter.default


def _listed(owner: Any, name: str) -> Callable[[], list[Any]]:
    """A default factory for a list field whose owner's default is a tuple."""
    return lambda: list(default_of(owner, name))


def _library_error(error: InputError) -> ValueError:
    """A constructor's refusal as a validation error (pydantic then adds the path)."""
    return ValueError(str(error))


class Section(BaseModel):
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
class LogConfig(Section):
    """The JSON-lines run log (:func:`geno_lewm.observability.get_logger`, component ``training``)."""

    enabled: bool = Field(default=True, description="Write the run log.")
    dir: str | None = Field(
        default=default_of(get_logger, "log_dir"),
        description="Directory of the log; GENO_LEWM_LOG_DIR, else ~/.geno-lewm/logs, when null.",
        min_length=1,
    )
    run_id: str | None = Field(
        default=default_of(get_logger, "run_id"),
        description=(
            "Run id and file name (1 to 128 letters, digits, '.', '_', '-', not starting with the last three); "
            "GENO_LEWM_RUN_ID, else a fresh id, when null."
        ),
        min_length=1,
        max_length=128,
        pattern=f"^{RUN_ID_PATTERN}$",
    )
    level: Literal["debug", "info", "warn", "warning", "error"] | None = Field(
        default=default_of(get_logger, "level"),
        description="Least severe level written; GENO_LEWM_LOG_LEVEL, else info, when null.",
    )
    pretty: bool | None = Field(
        default=default_of(get_logger, "pretty"),
        description=(
            "The human-readable mirror on standard error: on (true) or off (false); when null, on when "
            "GENO_LEWM_LOG_FORMAT=pretty or standard error is a terminal."
        ),
    )
    mirror: bool = Field(
        default=default_of(get_logger, "mirror"),
        description="Also write a short line per record to standard error, whatever 'pretty' says.",
    )
    fsync: bool = Field(default=default_of(get_logger, "fsync"), description="Force each record to stable storage.")


class _SinkSection(Section):
    rename: Rename = Field(
        default="none", description="'short' turns geno_lewm.training.<family>.<x> into <family>/<x>."
    )


class CSVSinkConfig(_SinkSection):
    """Rows ``time,step,name,value`` appended to a CSV file."""

    type: Literal["csv"]
    path: str = Field(min_length=1, description="The CSV file (its directory is created when missing).")


class TensorBoardSinkConfig(_SinkSection):
    """TensorBoard scalars (needs the ``torch`` and ``tensorboard`` packages, checked by ``build()``)."""

    type: Literal["tensorboard"]
    log_dir: str | None = Field(
        default=default_of(sinks.TensorBoardSink, "log_dir"),
        min_length=1,
        description="The writer's directory; runs/... when null.",
    )


class WandbSinkConfig(_SinkSection):
    """Weights & Biases: the current run at each check (needs ``wandb``, checked by ``build()``)."""

    type: Literal["wandb"]


class MLflowSinkConfig(_SinkSection):
    """MLflow: the active run (needs ``mlflow``, checked by ``build()``)."""

    type: Literal["mlflow"]


class MemorySinkConfig(Section):
    """Calls kept in memory (notebooks, tests)."""

    type: Literal["memory"]


SinkConfig = Annotated[
    Union[CSVSinkConfig, TensorBoardSinkConfig, WandbSinkConfig, MLflowSinkConfig, MemorySinkConfig],  # noqa: UP007
    Field(discriminator="type"),
]
_SINK_TYPES = ("csv", "tensorboard", "wandb", "mlflow", "memory")


def build_sink(config: Any) -> MetricSink:
    """The sink a sink section describes (a tracker's package is imported now)."""
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


def build_sinks(configs: Sequence[Any]) -> tuple[MetricSink, ...]:
    """The sinks of a configuration's ``sinks`` list, in order.

    A sink that cannot be built fails here, with its path: a missing tracker package as
    :class:`~geno_lewm.integrations.sinks.SinkUnavailableError` (``sinks[0]: WandbSink
    needs the 'wandb' package, ...``), any other refusal as ``InputError``.
    """
    built: list[MetricSink] = []
    for index, config in enumerate(configs):
        where = f"sinks[{index}]"
        try:
            built.append(build_sink(config))
        except sinks.SinkUnavailableError as error:
            raise sinks.SinkUnavailableError(error.backend, error.packages, where=where) from error
        except InputError as error:
            field = error.details.get("field")
            raise InputError(
                f"{where}: {error}", details={**error.details, "field": f"{where}.{field}" if field else where}
            ) from error
    return tuple(built)


# ------------------------------------------------------------------ policies and thresholds
class AlertPolicyConfig(Section):
    """When tripped criteria become alerts (:class:`~geno_lewm.training.alerting.AlertPolicy`)."""

    on_alert: OnAlert = Field(
        default=default_of(AlertPolicy, "on_alert"), description="'raise' stops training once a check is recorded."
    )
    warmup_steps: NonNegativeInt = Field(
        default=default_of(AlertPolicy, "warmup_steps"), description="No alert at checks before this step."
    )
    patience: PositiveInt = Field(
        default=default_of(AlertPolicy, "patience"), description="Consecutive tripped checks that raise an alert."
    )
    hysteresis: Annotated[float, Field(ge=0, allow_inf_nan=False)] = Field(
        default=default_of(AlertPolicy, "hysteresis"),
        description="Relative margin past the bound before an alert clears.",
    )

    def build(self) -> AlertPolicy:
        """The :class:`~geno_lewm.training.alerting.AlertPolicy`."""
        return AlertPolicy(
            on_alert=self.on_alert, warmup_steps=self.warmup_steps, patience=self.patience, hysteresis=self.hysteresis
        )


class CollapseThresholdsConfig(Section):
    """Alert thresholds of RFC-0005 (:class:`~geno_lewm.training.collapse.CollapseThresholds`)."""

    pred_var_to_target_var: PositiveFloat = Field(
        default=default_of(CollapseThresholds, "pred_var_to_target_var"),
        description="Alert when pred_var < this x target_var.",
    )
    pairwise_to_initial: PositiveFloat = Field(
        default=default_of(CollapseThresholds, "pairwise_to_initial"),
        description="Alert when pairwise distance < this x initial.",
    )
    kl_reg_max: PositiveFloat = Field(
        default=default_of(CollapseThresholds, "kl_reg_max"), description="Alert when kl_reg > this."
    )
    effective_rank_to_initial: PositiveFloat | None = Field(
        default=default_of(CollapseThresholds, "effective_rank_to_initial"),
        description="Opt-in: alert when an effective rank < this x its initial value (turns spectra on).",
    )

    def build(self) -> Any:
        """The :class:`~geno_lewm.training.collapse.CollapseThresholds`."""
        return CollapseThresholds(**self.model_dump())


class CalibratedThresholdsConfig(Section):
    """Settings of the calibrated criteria (:class:`~geno_lewm.training.collapse.CalibratedThresholds`)."""

    false_alarm_rate: Annotated[float, Field(gt=0, lt=1, allow_inf_nan=False)] = Field(
        default=default_of(CalibratedThresholds, "false_alarm_rate"),
        description="Chance per check that an isotropic Gaussian batch trips any criterion.",
    )
    spread_ratio: Annotated[float, Field(gt=0, lt=1, allow_inf_nan=False)] = Field(
        default=default_of(CalibratedThresholds, "spread_ratio"),
        description="Complete collapse: the targets' total variance below this fraction of its largest value.",
    )
    direction_ratio: Annotated[float, Field(gt=0, lt=1, allow_inf_nan=False)] = Field(
        default=default_of(CalibratedThresholds, "direction_ratio"),
        description="Complete collapse: the targets' direction spread below this fraction of its largest value.",
    )
    rank_ratio: Annotated[float, Field(gt=0, lt=1, allow_inf_nan=False)] = Field(
        default=default_of(CalibratedThresholds, "rank_ratio"),
        description="Dimensional collapse: the targets' normalised effective rank below this fraction of its largest.",
    )
    kl_rise: PositiveFloat = Field(
        default=default_of(CalibratedThresholds, "kl_rise"),
        description="kl_reg: a rise of this many nats per dimension above its lowest excess.",
    )
    kl_weight: PositiveFloat = Field(
        default=default_of(CalibratedThresholds, "kl_weight"), description="The weight gamma in kl_reg = gamma KL."
    )
    kl_eps: PositiveFloat = Field(
        default=default_of(CalibratedThresholds, "kl_eps"), description="The ridge of the KL's log-determinant."
    )
    agreement_ratio: Annotated[float, Field(gt=0, lt=1, allow_inf_nan=False)] = Field(
        default=default_of(CalibratedThresholds, "agreement_ratio"),
        description="Diagnosis: trivial agreement below this fraction of the lowest healthy prediction error.",
    )

    def build(self) -> Any:
        """The :class:`~geno_lewm.training.collapse.CalibratedThresholds`."""
        return CalibratedThresholds(**self.model_dump())


class DynamicsThresholdsConfig(Section):
    """Prediction-dynamics thresholds (:class:`~geno_lewm.training.dynamics.PredictionThresholds`)."""

    min_normalized_entropy: UnitFloat = Field(
        default=default_of(PredictionThresholds, "min_normalized_entropy"),
        description="Mode collapse below this normalised entropy.",
    )
    max_normalized_entropy: UnitFloat = Field(
        default=default_of(PredictionThresholds, "max_normalized_entropy"),
        description="Random guessing above this (1.0: off).",
    )
    max_top_class_fraction: UnitFloat = Field(
        default=default_of(PredictionThresholds, "max_top_class_fraction"),
        description="Class dominance above this share (1.0: off).",
    )

    @model_validator(mode="after")
    def _consistent(self) -> DynamicsThresholdsConfig:
        try:
            self.build()
        except InputError as error:
            raise _library_error(error) from None
        return self

    def build(self) -> Any:
        """The :class:`~geno_lewm.training.dynamics.PredictionThresholds`."""
        return PredictionThresholds(**self.model_dump())


# ------------------------------------------------------------------ lenses
class CollapseConfig(Section):
    """The collapse monitor (RFC-0005) and, under Lightning, its callback."""

    enabled: bool = Field(default=True, description="Run this lens.")
    every_n_steps: PositiveInt | None = Field(
        default=default_of(CollapseMonitor, "log_every_steps"),
        description="Check period in training steps; null (Lightning only): every validation run.",
    )
    num_batches: PositiveInt = Field(
        default=callback_defaults.COLLAPSE_NUM_BATCHES,
        description="Lightning: validation batches that make up a checked batch.",
    )
    keys: dict[Literal["prediction", "target", "kl_reg"], Annotated[str, Field(min_length=1)] | None] = Field(
        default_factory=dict,
        description=(
            "Lightning: validation_step output key of each value (default: its name); kl_reg: null when the loss "
            "has no Gaussian term."
        ),
    )
    criteria: Criteria = Field(
        default=default_of(CollapseMonitor, "criteria"),
        description="'rfc' (RFC-0005's criteria) or 'calibrated' (RFC-0013's, read from 'calibration').",
    )
    thresholds: CollapseThresholdsConfig = CollapseThresholdsConfig()
    calibration: CalibratedThresholdsConfig = CalibratedThresholdsConfig()
    initial_pairwise_pred_dist_mean: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = Field(
        default=default_of(CollapseMonitor, "initial_pairwise_pred_dist_mean"),
        description="A known pairwise baseline, e.g. from a checkpoint.",
    )
    spectrum: bool = Field(
        default=default_of(CollapseMonitor, "spectrum"),
        description="Also compute spectral metrics (effective rank...) at each check.",
    )
    policy: AlertPolicyConfig | None = Field(default=None, description="Alert policy; null: the RFC behaviour.")
    distributed: DistributedMode = Field(
        default=default_of(CollapseMonitor, "distributed"), description="Under torch.distributed."
    )
    record_on: Literal["rank0", "all"] = Field(
        default=default_of(CollapseMonitor, "record_on"), description="Ranks that write registry, log and sinks."
    )
    log_prefix: str = Field(
        default=callback_defaults.COLLAPSE_LOG_PREFIX,
        description="Lightning: prefix of the names given to pl_module.log.",
    )
    prog_bar: bool = Field(
        default=callback_defaults.PROG_BAR, description="Lightning: show the metrics in the progress bar."
    )
    reference_check: bool | None = Field(
        default=None,
        description=(
            "Lightning: check the sanity-check validation at step 0 as the run's reference; null: with calibrated "
            "criteria."
        ),
    )

    @model_validator(mode="after")
    def _consistent(self) -> CollapseConfig:
        missing = [role for role in ("prediction", "target") if role in self.keys and self.keys[role] is None]
        if missing:
            raise ValueError(f"keys: {', '.join(missing)} must name an output key; only kl_reg may be null")
        spectra = self.spectrum or self.thresholds.effective_rank_to_initial or self.criteria == "calibrated"
        if self.distributed == "statistics" and spectra:
            raise ValueError(
                "spectra need the whole batch: use distributed 'gather' with spectrum, rank thresholds or calibrated "
                "criteria"
            )
        return self

    def build(self, *, backend: str, registry: MetricRegistry | None, sinks: tuple[MetricSink, ...]) -> CollapseMonitor:
        """The :class:`~geno_lewm.training.collapse.CollapseMonitor` (``every_n_steps: null``,
        every validation run under Lightning, leaves the monitor its own default period).
        """
        every = default_of(CollapseMonitor, "log_every_steps") if self.every_n_steps is None else self.every_n_steps
        return CollapseMonitor(
            log_every_steps=every,
            thresholds=self.calibration.build() if self.criteria == "calibrated" else self.thresholds.build(),
            criteria=self.criteria,
            initial_pairwise_pred_dist_mean=self.initial_pairwise_pred_dist_mean,
            backend=backend,
            registry=registry,
            spectrum=self.spectrum,
            policy=None if self.policy is None else self.policy.build(),
            sinks=sinks,
            distributed=self.distributed,
            record_on=self.record_on,
        )


class DynamicsConfig(Section):
    """The prediction-dynamics monitor of a classifier's logits."""

    enabled: bool = Field(default=True, description="Run this lens.")
    every_n_steps: PositiveInt = Field(
        default=default_of(PredictionMonitor, "log_every_steps"), description="Check period in training steps."
    )
    key: Annotated[str, Field(min_length=1)] | None = Field(
        default=None, description="Lightning: training_step output key of the logits (default: logits, out, preds)."
    )
    thresholds: DynamicsThresholdsConfig = DynamicsThresholdsConfig()
    policy: AlertPolicyConfig | None = Field(
        default=None, description="Alert policy; null: every tripped check is an alert, nothing raises."
    )
    log_prefix: str = Field(
        default=callback_defaults.DYNAMICS_LOG_PREFIX,
        description="Lightning: prefix of the names given to pl_module.log.",
    )

    def build(self, *, backend: str, registry: MetricRegistry | None) -> PredictionMonitor:
        """The :class:`~geno_lewm.training.dynamics.PredictionMonitor` (its sinks are a
        programmatic option: it has no rank-0 logic under ``torch.distributed``).
        """
        return PredictionMonitor(
            log_every_steps=self.every_n_steps,
            thresholds=self.thresholds.build(),
            backend=backend,
            registry=registry,
            policy=None if self.policy is None else self.policy.build(),
        )


class GradientsConfig(Section):
    """Output-gradient geometry per layer, summarised per epoch."""

    enabled: bool = Field(default=True, description="Run this lens.")
    module: Annotated[str, Field(min_length=1)] | None = Field(
        default=None, description="Lightning: the submodule to watch (default: the whole LightningModule)."
    )
    normalize_by_size: bool = Field(
        default=default_of(GradientGeometry, "normalize_by_size"), description="Record the RMS instead of the L2 norm."
    )
    log_scale: bool = Field(default=default_of(GradientGeometry, "log_scale"), description="Record log10 of the norm.")
    compute_correlation: bool = Field(
        default=default_of(GradientGeometry, "compute_correlation"),
        description="Cosine with the previous pass's gradient.",
    )
    correlation_sketch_size: PositiveInt | None = Field(
        default=default_of(GradientGeometry, "correlation_sketch_size"),
        description="Count-sketch size for the correlation.",
    )
    skip_activation: bool = Field(
        default=default_of(GradientGeometry, "skip_activation"),
        description="Leave activation modules out of the default layers.",
    )
    layers: list[Annotated[str, Field(min_length=1)]] | None = Field(
        default=default_of(GradientGeometry, "layers"), description="Modules to watch, by name."
    )
    keep_values: bool = Field(
        default=default_of(GradientGeometry, "keep_values"),
        description="Keep every value of the epoch (needed for the median).",
    )
    line_aggregation: LineAggregation = Field(
        default=default_of(GradientGeometry, "line_aggregation"), description="The line: mean or median."
    )
    range_aggregation: list[RangeAggregation] = Field(
        default_factory=_listed(GradientGeometry, "range_aggregation"),
        min_length=1,
        description="The bands around the line: std (line ± standard deviation) and/or minmax.",
    )
    seed: NonNegativeInt = Field(default=default_of(GradientGeometry, "seed"), description="Seed of the count sketch.")
    log_prefix: str = Field(
        default=callback_defaults.GRADIENTS_LOG_PREFIX,
        description="Lightning: prefix of the names given to pl_module.log.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> GradientsConfig:
        if len(set(self.range_aggregation)) != len(self.range_aggregation):
            raise ValueError(f"'range_aggregation' names a band twice: {self.range_aggregation}")
        # The lens's own check, so that a section that validates builds (quartiles and the IQR need
        # keep_values, the seed a torch generator's range).
        options = ("keep_values", "line_aggregation", "range_aggregation", "seed")
        try:
            check_gradient_options({name: getattr(self, name) for name in options})
        except InputError as error:
            raise ValueError(str(error)) from None
        return self

    def options(self, registry: MetricRegistry | None) -> dict[str, Any]:
        """Keyword arguments of :class:`~geno_lewm.training.gradients.GradientGeometry`."""
        options = self.model_dump(exclude={"enabled", "module", "log_prefix"})
        options["registry"] = registry
        return options


class MetricEntry(Section):
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


class MetricsConfig(Section):
    """Any metric on step outputs (:class:`~geno_lewm.integrations.metrics_callback.MetricsCallback`)."""

    enabled: bool = Field(default=True, description="Run this lens.")
    metrics: dict[str, MetricEntry] = Field(min_length=1, description="Metric name -> import path or entry.")
    needs: list[Annotated[str, Field(min_length=1)]] | dict[str, Annotated[str, Field(min_length=1)]] | None = Field(
        default=None, description="Output keys feeding every metric without its own needs; null: inferred."
    )
    mode: Mode | dict[callback_defaults.Stage, Mode] = Field(
        default=default_of(OutputMetrics, "mode"),
        description="Per-step weighted mean, or exact per epoch; or stage -> mode (stages not named: step).",
    )
    collect_on_cpu: bool = Field(
        default=default_of(OutputMetrics, "collect_on_cpu"),
        description="Epoch mode: keep collected outputs in host memory.",
    )
    stages: list[callback_defaults.Stage] = Field(
        default_factory=lambda: list(callback_defaults.STAGES), min_length=1, description="Stages watched (Lightning)."
    )
    train_every_n_steps: PositiveInt | None = Field(default=None, description="Training report period in steps.")
    train_every_n_epochs: PositiveInt | None = Field(
        default=None, description="Training report period in epochs (default 1)."
    )
    val_every_n_epochs: PositiveInt = Field(
        default=callback_defaults.METRICS_VAL_EVERY_N_EPOCHS, description="Validation report period in epochs."
    )
    prog_bar: bool = Field(default=callback_defaults.PROG_BAR, description="Show the values in the progress bar.")
    log_to_module: bool = Field(
        default=callback_defaults.METRICS_LOG_TO_MODULE, description="Send the values to pl_module.log."
    )
    name_format: str = Field(default=callback_defaults.METRICS_NAME_FORMAT, description="Name given to pl_module.log.")
    units: dict[str, Annotated[str, Field(min_length=1)]] = Field(
        default_factory=dict, description="Metric name -> unit."
    )
    record_on: Literal["rank0", "all"] = Field(
        default=callback_defaults.RECORD_ON, description="Ranks that write registry, log and sinks."
    )

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
        if isinstance(self.mode, dict):
            unwatched = [stage for stage in self.mode if stage not in self.stages]
            if not self.mode or unwatched:
                raise ValueError(
                    f"'mode' per stage must name stages watched ({', '.join(self.stages)}): got {self.mode}"
                )
        return self

    def _metrics_and_needs(self) -> tuple[dict[str, Any], Any]:
        """The imported metrics and the ``needs`` argument, checked against their signatures."""
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
        metrics, needs = self._metrics_and_needs()
        return OutputMetrics(metrics, needs=needs, mode=self.mode, collect_on_cpu=self.collect_on_cpu)
