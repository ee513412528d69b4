"""The whole monitoring set-up (:class:`MonitoringConfig`), what building it gives
(:class:`Monitoring`), and reading one from plain data (:func:`load_config`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Literal

from pydantic import Field, ValidationError

from geno_lewm._distributed import rank
from geno_lewm._validation import check_bool
from geno_lewm.backends import BackendName
from geno_lewm.config._errors import describe_error
from geno_lewm.config._sections import (
    CollapseConfig,
    DynamicsConfig,
    GradientsConfig,
    LogConfig,
    MetricsConfig,
    Section,
    SinkConfig,
    build_sinks,
    default_of,
)
from geno_lewm.errors import InputError
from geno_lewm.observability import GenoLeWMLogger, get_logger
from geno_lewm.training.collapse import CollapseMonitor
from geno_lewm.training.gradients import GradientGeometry
from geno_lewm.training.output_metrics import OutputMetrics

if TYPE_CHECKING:
    from geno_lewm._protocols import MetricSink
    from geno_lewm.metrics import MetricRegistry
    from geno_lewm.training.dynamics import PredictionMonitor

__all__ = ["CONFIG_VERSION", "Monitoring", "MonitoringConfig", "config_json_schema", "load_config"]

CONFIG_VERSION: Final = 1
"""Version of the configuration format; a configuration may state it as ``version: 1``."""


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

    geno_lewm_full_records = True  # it wraps this package's own logger: the full records, as that one gets

    def __init__(self, logger: GenoLeWMLogger) -> None:
        self._logger = logger

    def info(self, event: str, **fields: Any) -> None:
        """Record an informational event on rank 0."""
        if rank() == 0:
            self._logger.info(event, **fields)

    def warning(self, event: str, **fields: Any) -> None:
        """Record a warning on rank 0."""
        if rank() == 0:
            self._logger.warning(event, **fields)


def _active(section: Any) -> bool:
    return section is not None and bool(section.enabled)


class MonitoringConfig(Section):
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
    backend: BackendName = Field(
        default=default_of(CollapseMonitor, "backend"), description="Compute backend of the lenses."
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
        SinkUnavailableError
            When a sink's tracker package is not installed (an ``InputError`` and an
            ``ImportError`` naming the sink's path, e.g. ``sinks[0]``, and what to install).
        """
        check_bool("lightning", lightning)
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
        sinks = build_sinks(self.sinks)  # before the logger: a sink whose package is missing fails first
        logger = None
        if self.log.enabled:
            logger = get_logger(
                "training",
                log_dir=self.log.dir,
                run_id=self.log.run_id,
                level=self.log.level,
                pretty=self.log.pretty,
                mirror=self.log.mirror,
                fsync=self.log.fsync,
            )
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
                metrics = OutputMetrics(
                    resolved_metrics[0],
                    needs=resolved_metrics[1],
                    mode=self.metrics.mode,
                    collect_on_cpu=self.metrics.collect_on_cpu,
                )
            gradients = None  # last: it attaches hooks to the model
            if _active(self.gradients) and self.gradients is not None:
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
                    reference_check=self.collapse.reference_check,
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
        problems = [describe_error(MonitoringConfig, item) for item in error.errors(include_url=False)]  # type: ignore[arg-type]
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
