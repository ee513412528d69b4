"""Any metric on what a LightningModule's steps return: :class:`MetricsCallback`.

A thin Lightning layer over :class:`~geno_lewm.training.output_metrics.OutputMetrics`
(one per stage: ``train``, ``val``, ``test``). The callback feeds each step's outputs to
the metrics and, on its schedule, computes them and sends the values to four places:
``pl_module.log`` (so loggers, checkpoint monitors and, with ``prog_bar=True``, the
progress bar see them), this library's metric registry (gauges
``geno_lewm.training.metrics.<stage>.<name>``), a run log (``training.metric`` events)
and :class:`~geno_lewm.integrations.sinks.MetricSink` objects.

Schedules
    Training metrics every ``train_every_n_epochs`` epochs (default: each epoch), over
    that epoch's steps, or every ``train_every_n_steps`` optimiser steps, over the steps
    since the last report. Validation metrics every ``val_every_n_epochs`` epochs (and
    whenever ``trainer.validate`` runs); the sanity check is ignored. Test metrics at the
    end of ``trainer.test``. Steps outside a scheduled period are not even read. Each
    stage has its own mode: ``mode={"train": "step", "val": "epoch"}`` averages cheap
    per-batch values while training and computes validation metrics exactly.

Distributed
    Under DDP, the underlying ``compute`` is collective and every rank gets the same
    values (per-step values weighted by batch size over all ranks; per-epoch metrics on
    the gathered outputs of all ranks); only rank 0 writes the registry, the run log and
    the sinks unless ``record_on="all"``.

Example
-------
>>> from sklearn.metrics import accuracy_score  # doctest: +SKIP
>>> callback = MetricsCallback(  # doctest: +SKIP
...     {"acc": accuracy_score},
...     needs={"acc": {"y_true": "target", "y_pred": lambda out: out["logits"].argmax(1)}},
...     mode="epoch",
...     prog_bar=True,
... )
>>> trainer = lightning.Trainer(callbacks=[callback])  # doctest: +SKIP

Importing this module imports ``lightning``. Design: ``rfcs/0011-metrics-callback-and-config.md``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import lightning.pytorch as pl

from geno_lewm._distributed import rank
from geno_lewm._protocols import EventLogger, MetricLogger, MetricSink, adapt_logger, check_sinks, publish_metrics
from geno_lewm._validation import check_bool, check_choice, check_positive_int
from geno_lewm.errors import InputError
from geno_lewm.integrations._callback_defaults import (
    METRICS_LOG_TO_MODULE,
    METRICS_NAME_FORMAT,
    METRICS_VAL_EVERY_N_EPOCHS,
    PROG_BAR,
    RECORD_ON,
    STAGES,
    Stage,
    auto_log_pretty,
)
from geno_lewm.metrics import CATALOGUE, METRIC_NAMESPACE, MetricRegistry, MetricSpec, declare_metrics, default_registry
from geno_lewm.training.output_metrics import MetricValue, Mode, OutputMetrics

__all__ = ["METRIC_PREFIX", "STAGES", "MetricsCallback", "Stage", "registry_name"]

METRIC_PREFIX = f"{METRIC_NAMESPACE}.metrics"
"""Registry names of the callback's gauges start with this, then the stage and the metric."""

_STAGE_WORDS = {"train": "training", "val": "validation", "test": "test"}
_MODES: tuple[Mode, ...] = ("step", "epoch")
_DEFAULT_MODE: Mode = "step"
"""The mode of a stage that a per-stage ``mode`` mapping does not name (the single mode's default)."""


def registry_name(stage: str, name: str) -> str:
    """The registry and run-log name of metric ``name`` of ``stage``, e.g.
    ``geno_lewm.training.metrics.val.acc``.
    """
    return f"{METRIC_PREFIX}.{stage}.{name}"


def _check_every(name: str, value: object) -> int | None:
    return None if value is None else check_positive_int(name, value)


class MetricsCallback(pl.Callback):
    """Compute any metrics on the outputs of training, validation and test steps.

    Parameters
    ----------
    metrics:
        A mapping ``name -> metric``, a sequence of metrics or one metric: torchmetrics
        ``Metric`` objects (cloned per stage, moved to the module's device, driven
        through their own update/compute/reset), scikit-learn metric functions or
        callables returning a number.
    needs:
        Which step outputs feed which argument (see
        :mod:`geno_lewm.training.output_metrics`): ``None`` infers them from the
        signatures and the output keys, never by a guess; a list or a mapping of
        parameters for every metric; or a mapping of metric names to each one's own (one
        source, a list, a mapping). The step's input batch is available as the key
        ``"batch"``.
    mode:
        ``"step"`` (per-batch values averaged with batch-size weights; cheap) or
        ``"epoch"`` (exact, on all the period's outputs; holds them in memory), for every
        stage; or a mapping stage -> mode, e.g. ``{"train": "step", "val": "epoch"}``
        (cheap while training, exact on the validation set), where stages not named are
        ``"step"``. It may name only stages watched.
    collect_on_cpu:
        In ``"epoch"`` mode, keep the collected outputs in host memory.
    stages:
        Which of ``"train"``, ``"val"`` and ``"test"`` to watch (default: all three).
    train_every_n_steps, train_every_n_epochs:
        The training schedule: at most one of them (default: every epoch).
    val_every_n_epochs:
        Validation metrics at the end of every n-th epoch's validation (default 1).
    prog_bar:
        Show the values in the progress bar.
    log_to_module:
        Send the values to ``pl_module.log`` as ``name_format.format(stage=..., name=...)``.
    name_format:
        The name under which ``pl_module.log`` gets a value (default ``"{stage}/{name}"``).
    units:
        Metric name -> unit for the registry and the run log (default ``"1"``).
    registry:
        Where the gauges go; the process default when omitted.
    logger:
        Where ``training.metric`` events go: ``"auto"`` (default) for the library's run log
        ``get_logger("training")`` (directory from ``GENO_LEWM_LOG_DIR`` or
        ``~/.geno-lewm/logs``), ``None`` for none, or any other logger with ``info``: a
        GenoLeWM family logger, structlog, ``logging``. This package's own logger gets the
        convention (``variant``) and rows (``batch_size``) too; any other gets the
        family's minimal ``training.metric`` record (name, value, unit, kind, step).
    sinks:
        :class:`~geno_lewm.integrations.sinks.MetricSink` objects called with the values
        by registry name.
    record_on:
        Under ``torch.distributed``, which ranks write the registry, the run log and the
        sinks: ``"rank0"`` (default) or ``"all"``.

    Raises
    ------
    InputError
        At construction, for anything malformed (the metrics and ``needs`` are checked
        then; a missing output key, or inferred ``needs`` that would have to guess, at
        the first step with outputs).
    """

    def __init__(
        self,
        metrics: object,
        *,
        needs: object = None,
        mode: Mode | Mapping[Stage, Mode] = "step",
        collect_on_cpu: bool = False,
        stages: Sequence[Stage] = STAGES,
        train_every_n_steps: int | None = None,
        train_every_n_epochs: int | None = None,
        val_every_n_epochs: int = METRICS_VAL_EVERY_N_EPOCHS,
        prog_bar: bool = PROG_BAR,
        log_to_module: bool = METRICS_LOG_TO_MODULE,
        name_format: str = METRICS_NAME_FORMAT,
        units: Mapping[str, str] | None = None,
        registry: MetricRegistry | None = None,
        logger: MetricLogger | Literal["auto"] | None = "auto",
        sinks: Sequence[MetricSink] | MetricSink | None = None,
        record_on: Literal["rank0", "all"] = RECORD_ON,
    ) -> None:
        super().__init__()
        template = OutputMetrics(metrics, needs=needs, collect_on_cpu=collect_on_cpu)
        self._stages = self._check_stages(stages)
        modes = self._check_modes(mode, self._stages)
        self._per_stage: dict[str, OutputMetrics] = {stage: template.fresh(mode=modes[stage]) for stage in self._stages}
        steps = _check_every("train_every_n_steps", train_every_n_steps)
        epochs = _check_every("train_every_n_epochs", train_every_n_epochs)
        if steps is not None and epochs is not None:
            raise InputError(
                "give 'train_every_n_steps' or 'train_every_n_epochs', not both",
                details={"field": "train_every_n_steps", "value": steps},
            )
        self._train_steps = steps
        self._train_epochs = epochs if epochs is not None or steps is not None else 1
        self._val_epochs = check_positive_int("val_every_n_epochs", val_every_n_epochs)
        self._prog_bar = check_bool("prog_bar", prog_bar)
        self._log_to_module = check_bool("log_to_module", log_to_module)
        self._name_format = self._check_format(name_format)
        self._units = self._check_units(units, template.names)
        self._record_on = check_choice("record_on", record_on, ("rank0", "all"))
        if isinstance(logger, str) and logger != "auto":
            raise InputError(
                f"'logger' must be 'auto', None or a logger with info(): got {logger!r}",
                details={"field": "logger", "type": "str", "value": logger},
            )
        if logger != "auto":
            adapt_logger(logger, warnings=False)  # only info() is needed: this callback never warns
        self._registry = registry
        self._logger_choice = logger
        self._logger: EventLogger | None = None
        self._sinks = check_sinks(sinks)
        self._last_train_step: int | None = None
        self._results: dict[str, tuple[int, tuple[MetricValue, ...]]] = {}
        specs = [
            MetricSpec(
                registry_name(stage, name),
                "gauge",
                self._units.get(name, "1"),
                f"Metric {name!r} of the {_STAGE_WORDS[stage]} steps' outputs (MetricsCallback).",
            )
            for stage in self._stages
            for name in template.names
        ]
        for spec in specs:  # the unit is what a user can fix: say so before the generic refusal
            existing = CATALOGUE.get(spec.name)
            if existing is not None and existing != spec:
                raise InputError(
                    f"gauge {spec.name!r} is already declared with unit {existing.unit!r} and summary "
                    f"{existing.summary!r}: give metric {spec.name.rsplit('.', 1)[1]!r} the same unit, or another name",
                    details={"field": "units", "value": spec.name},
                )
        declare_metrics(specs)  # all or nothing: a conflict leaves the catalogue as it was

    # ------------------------------------------------------------ checks
    @staticmethod
    def _check_stages(stages: object) -> tuple[str, ...]:
        if isinstance(stages, str) or not isinstance(stages, Sequence):
            raise InputError(
                f"'stages' must be a sequence of 'train', 'val' and 'test': got {stages!r}",
                details={"field": "stages", "value": repr(stages)},
            )
        out = []
        for stage in stages:
            if stage not in STAGES:
                raise InputError(
                    f"'stages' must hold only 'train', 'val' and 'test': got {stage!r}",
                    details={"field": "stages", "value": repr(stage)},
                )
            if stage not in out:
                out.append(stage)
        if not out:
            raise InputError("'stages' must name at least one stage: got none", details={"field": "stages"})
        return tuple(out)

    @staticmethod
    def _check_modes(mode: object, stages: Sequence[str]) -> dict[str, Mode]:
        """Stage -> mode, from one mode for every stage or a mapping of stages to modes."""
        if not isinstance(mode, Mapping):
            return dict.fromkeys(stages, check_choice("mode", mode, _MODES))
        if not mode:
            raise InputError(
                "'mode' per stage must name at least one stage: got {}", details={"field": "mode", "value": {}}
            )
        modes: dict[str, Mode] = dict.fromkeys(stages, _DEFAULT_MODE)
        for stage, value in mode.items():
            if stage not in stages:
                what = "not watched" if stage in STAGES else "not a stage"
                raise InputError(
                    f"'mode' names {stage!r}, which is {what} (stages watched: {', '.join(map(repr, stages))})",
                    details={"field": "mode", "value": repr(stage)},
                )
            modes[stage] = check_choice(f"mode.{stage}", value, _MODES)
        return modes

    @staticmethod
    def _check_format(name_format: object) -> str:
        if not isinstance(name_format, str):
            raise InputError(
                f"'name_format' must be a format string: got {type(name_format).__name__}",
                details={"field": "name_format", "type": type(name_format).__name__},
            )
        fields = set(re.findall(r"{(\w*)}", name_format))
        try:
            name_format.format(stage="val", name="metric")
        except (KeyError, IndexError, ValueError):
            fields.add("?")
        if "name" not in fields or fields - {"stage", "name"}:
            raise InputError(
                f"'name_format' must use {{name}} and may use {{stage}}, nothing else: got {name_format!r}",
                details={"field": "name_format", "value": name_format},
            )
        return name_format

    @staticmethod
    def _check_units(units: object, names: Sequence[str]) -> dict[str, str]:
        if units is None:
            return {}
        if not isinstance(units, Mapping):
            raise InputError(
                f"'units' must map metric names to units: got {type(units).__name__}",
                details={"field": "units", "type": type(units).__name__},
            )
        for name, unit in units.items():
            if name not in names:
                raise InputError(
                    f"'units' names {name!r}, which is not a metric (metrics: {', '.join(map(repr, names))})",
                    details={"field": "units", "value": name},
                )
            if not isinstance(unit, str) or not unit:
                raise InputError(
                    f"'units' of {name!r} must be a non-empty string: got {unit!r}",
                    details={"field": "units", "value": repr(unit)},
                )
        return dict(units)

    # ------------------------------------------------------------ access
    @property
    def stages(self) -> tuple[str, ...]:
        """The stages watched."""
        return self._stages

    @property
    def modes(self) -> dict[str, Mode]:
        """Stage -> ``"step"`` or ``"epoch"``, for each stage watched."""
        return {stage: metrics.mode for stage, metrics in self._per_stage.items()}

    @property
    def names(self) -> tuple[str, ...]:
        """The metrics' names."""
        return next(iter(self._per_stage.values())).names

    def metrics(self, stage: Stage) -> OutputMetrics:
        """The :class:`OutputMetrics` of ``stage`` (its state is the period in progress)."""
        if stage not in self._per_stage:
            raise InputError(
                f"'stage' must be one of the stages watched ({', '.join(self._stages)}): got {stage!r}",
                details={"field": "stage", "value": stage},
            )
        return self._per_stage[stage]

    @property
    def results(self) -> dict[str, tuple[int, tuple[MetricValue, ...]]]:
        """Stage -> ``(step, values)`` of the latest report of each stage."""
        return dict(self._results)

    # ------------------------------------------------------------ recording
    def _report(self, stage: str, pl_module: pl.LightningModule, step: int, *, on_step: bool) -> None:
        """Compute the stage's metrics, reset them and send the values everywhere."""
        metrics = self._per_stage[stage]
        values = metrics.compute_values()
        metrics.reset()
        if not values:
            return
        self._results[stage] = (step, values)
        if self._log_to_module:
            for value in values:
                name = self._name_format.format(stage=stage, name=value.name)
                if on_step:
                    pl_module.log(name, value.value, prog_bar=self._prog_bar, on_step=True, on_epoch=False)
                else:
                    pl_module.log(name, value.value, prog_bar=self._prog_bar)
        if self._record_on == "rank0" and rank() != 0:
            return
        registry = default_registry() if self._registry is None else self._registry
        by_name = {registry_name(stage, value.name): value for value in values}
        for name, value in by_name.items():
            registry.set_gauge(name, value.value)
        if self._logger is not None and not self._logger.full:
            for name, value in by_name.items():
                unit = self._units.get(value.name, "1")
                self._logger.info("training.metric", name=name, value=value.value, unit=unit, kind="gauge", step=step)
        elif self._logger is not None:
            for name, value in by_name.items():
                extra: dict[str, Any] = {} if value.rows is None else {"batch_size": value.rows}
                self._logger.info(
                    "training.metric",
                    name=name,
                    value=value.value,
                    unit=self._units.get(value.name, "1"),
                    kind="gauge",
                    variant=value.variant,
                    step=step,
                    **extra,
                )
        if self._sinks:
            publish_metrics(self._sinks, {name: value.value for name, value in by_name.items()}, step)

    # ------------------------------------------------------------ schedule
    def _val_active(self, trainer: pl.Trainer) -> bool:
        if "val" not in self._per_stage or trainer.sanity_checking:
            return False
        if str(getattr(trainer.state.fn, "value", trainer.state.fn)) == "validate":
            return True
        return (trainer.current_epoch + 1) % self._val_epochs == 0

    def _train_active(self, trainer: pl.Trainer) -> bool:
        if "train" not in self._per_stage:
            return False
        return self._train_epochs is None or (trainer.current_epoch + 1) % self._train_epochs == 0

    # ------------------------------------------------------------ hooks
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Resolve the run log, move torchmetrics metrics to the module's device and start
        every stage afresh.
        """
        if self._logger_choice == "auto":
            from geno_lewm.observability import get_logger

            writes = self._record_on == "all" or rank() == 0
            self._logger = adapt_logger(get_logger("training", pretty=auto_log_pretty()) if writes else None)
        else:
            self._logger = adapt_logger(self._logger_choice, warnings=False)
        for metrics in self._per_stage.values():
            for definition in metrics.definitions:
                if definition.stateful:
                    definition.metric.to(pl_module.device)
            metrics.reset()
        self._last_train_step = None

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """Feed the step's outputs; report every ``train_every_n_steps`` optimiser steps.

        A ``training_step`` that returned ``None`` (Lightning's way to skip a batch; the
        hook then gets ``None`` or an empty mapping) is skipped here too.
        """
        if not self._train_active(trainer):
            return
        if outputs is not None and not (isinstance(outputs, Mapping) and not outputs):
            self._per_stage["train"].update(outputs, batch=batch)
        every = self._train_steps
        step = trainer.global_step
        if every is not None and step > 0 and step % every == 0 and step != self._last_train_step:
            self._last_train_step = step
            self._report("train", pl_module, step, on_step=True)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Report the epoch's training metrics when the epoch schedule says so."""
        if self._train_epochs is not None and self._train_active(trainer):
            self._report("train", pl_module, trainer.global_step, on_step=False)

    def on_validation_batch_end(  # noqa: PLR0917 - Lightning's hook signature
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        """Feed the validation step's outputs (all dataloaders together)."""
        if self._val_active(trainer):
            self._per_stage["val"].update(outputs, batch=batch)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Report the validation metrics of a scheduled epoch."""
        if self._val_active(trainer):
            self._report("val", pl_module, trainer.global_step, on_step=False)

    def on_test_batch_end(  # noqa: PLR0917 - Lightning's hook signature
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        """Feed the test step's outputs."""
        if "test" in self._per_stage:
            self._per_stage["test"].update(outputs, batch=batch)

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Report the test metrics."""
        if "test" in self._per_stage:
            self._report("test", pl_module, trainer.global_step, on_step=False)

    def __repr__(self) -> str:
        modes = self.modes
        mode: object = next(iter(modes.values())) if len(set(modes.values())) == 1 else modes
        return f"MetricsCallback(names={list(self.names)!r}, stages={list(self._stages)!r}, mode={mode!r})"
