"""Lightning callbacks: the collapse monitor on validation batches, and the dynamics lenses.

* :class:`CollapseMonitorCallback` runs a
  :class:`~geno_lewm.training.collapse.CollapseMonitor` on the first validation batch(es)
  of each validation run (or of the runs that cross a multiple of ``every_n_steps``),
  reading prediction, target and ``kl_reg`` from what ``validation_step`` returns;
* :class:`PredictionDynamicsCallback` feeds the logits a ``training_step`` returns to a
  :class:`~geno_lewm.training.dynamics.PredictionMonitor` every ``log_every_n_steps``
  optimizer steps;
* :class:`GradientGeometryCallback` watches the output gradients of the module's layers
  with :class:`~geno_lewm.training.gradients.GradientGeometry` and summarises each
  training epoch.

Every number goes to ``pl_module.log`` (so every Lightning logger, the progress bar and
callbacks such as ``EarlyStopping`` see it, under ``collapse/...``, ``dynamics/...`` and
``gradients/...``) and to this library's registry and JSON run log. The run log goes,
unless a logger or ``GENO_LEWM_LOG_DIR`` says otherwise, to the Trainer's own log
directory: ``<trainer.log_dir>/geno_lewm/<run_id>.jsonl``, named in one line on rank 0
when the fit starts. Importing this module imports ``lightning``; install it with
``pip install 'geno-lewm[lightning]'``.

Under DDP the collapse monitor gathers the ranks' shards of the validation batch (see
:mod:`geno_lewm.integrations.distributed`), so every rank logs the same numbers (synced
exactly, without Lightning's warning); the dynamics and gradient lenses describe each
rank's own data, and only the global-zero rank writes their log.

Example
-------
::

    trainer = lightning.Trainer(
        val_check_interval=500,
        callbacks=[CollapseMonitorCallback(keys={"prediction": "pred", "kl_reg": "loss_reg"})],
    )

with a ``validation_step`` that returns ``{"pred": ..., "target": ..., "loss_reg": ...}``.
"""

from __future__ import annotations

import math
import os
import sys
import warnings
from collections.abc import Callable, Mapping
from typing import Any, Literal

from geno_lewm._protocols import MetricLogger, check_logger
from geno_lewm._validation import check_bool, check_instance, check_positive_int, wrong_type
from geno_lewm.errors import CollapseDetectedError, InputError
from geno_lewm.integrations._callback_defaults import (
    COLLAPSE_LOG_PREFIX,
    COLLAPSE_NUM_BATCHES,
    DYNAMICS_LOG_PREFIX,
    GRADIENTS_LOG_PREFIX,
    PROG_BAR,
    auto_log_pretty,
)
from geno_lewm.training.collapse import METRIC_NAMES, CollapseCheck, CollapseMonitor, check_kl_reg

try:
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import Callback
    from lightning.pytorch.utilities import rank_zero_info
except ImportError as _error:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "geno_lewm.integrations.lightning needs the 'lightning' package: pip install 'geno-lewm[lightning]'",
        name="lightning",
    ) from _error

__all__ = [
    "COLLAPSE_KEYS",
    "CollapseMonitorCallback",
    "GradientGeometryCallback",
    "OutputKey",
    "PredictionDynamicsCallback",
]

OutputKey = str | Callable[[Any], Any]
"""How to find a value in a step's output: a key of the returned mapping, or a function
of the whole output."""

COLLAPSE_KEYS: tuple[str, ...] = ("prediction", "target", "kl_reg")
"""The values a collapse check reads from each validation step's output."""

LoggerChoice = MetricLogger | Literal["auto"] | None


LOG_SUBDIR = "geno_lewm"
"""The folder of the ``"auto"`` JSON run log inside the Trainer's log directory."""

_announced: set[str] = set()  # log paths already announced by this process


def _auto_log_dir(trainer: pl.Trainer) -> str | None:
    """Where the ``"auto"`` JSON run log goes under Lightning: ``<trainer.log_dir>/geno_lewm``
    (the run's own folder, e.g. ``lightning_logs/version_0``), else
    ``<trainer.default_root_dir>/geno_lewm``. ``None`` (the library's own default) when
    ``GENO_LEWM_LOG_DIR`` names a directory, which then wins, or when the Trainer's
    directory is not a local path (``s3://...``).

    ``trainer.log_dir`` is broadcast from rank 0, so every rank must call this, whether it
    writes or not.
    """
    from geno_lewm.observability import LOG_DIR_ENV

    base = trainer.log_dir  # a collective under DDP: called on every rank
    if os.environ.get(LOG_DIR_ENV):
        return None
    if base is None:
        base = trainer.default_root_dir
    if base is None or "://" in str(base):
        return None
    return os.path.join(str(base), LOG_SUBDIR)


def _resolve_logger(choice: LoggerChoice, writes: bool, trainer: pl.Trainer) -> MetricLogger | None:
    """``"auto"``: the library's JSON logger (``get_logger("training")``) in the directory
    :func:`_auto_log_dir` chooses, where this process writes, announced once per file on
    rank 0; else ``choice`` as given.
    """
    if choice != "auto":
        return choice
    directory = _auto_log_dir(trainer)
    if not writes:
        return None
    from geno_lewm.observability import get_logger

    logger = get_logger("training", log_dir=directory, pretty=auto_log_pretty())
    path = str(logger.path)
    if path not in _announced:
        _announced.add(path)
        rank_zero_info(f"geno_lewm: writing the JSON run log to {path}")
    return logger


def _check_logger(logger: object) -> LoggerChoice:
    """``"auto"``, ``None`` or any logger :func:`~geno_lewm._protocols.adapt_logger` accepts
    (this package's, a GenoLeWM family logger, structlog, ``logging``), checked at
    construction so a wrong one fails before the Trainer starts.
    """
    if isinstance(logger, str) and logger == "auto":
        return "auto"
    if isinstance(logger, str):
        raise InputError(
            f"'logger' must be 'auto', None or a logger with info() and warning() (or warn()): got {logger!r}",
            details={"field": "logger", "type": "str", "value": logger},
        )
    return check_logger(logger)


def _check_prefix(prefix: object) -> str:
    return check_instance("log_prefix", prefix, str, "a string")


def _detached(value: Any) -> Any:
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(value, torch.Tensor):
        return value.detach()
    return value


def _lookup(outputs: Any, spec: OutputKey, role: str, hook: str) -> Any:
    """The value ``spec`` designates in a step's ``outputs``, with an error naming ``role``
    and the missing key (and the keys that are there) when it cannot be found.
    """
    if callable(spec):
        try:
            return _detached(spec(outputs))
        except Exception as error:
            raise InputError(
                f"the function given for {role!r} failed on the {hook} output: {type(error).__name__}: {error}",
                details={"field": role, "error": type(error).__name__},
            ) from error
    if not isinstance(outputs, Mapping):
        raise InputError(
            f"{hook} must return a mapping with a {spec!r} entry (the {role!r} of the check), "
            f"or give a function for {role!r}: got {type(outputs).__name__}",
            details={"field": role, "key": spec, "type": type(outputs).__name__},
        )
    if spec not in outputs:
        present = ", ".join(map(repr, outputs)) or "none"
        raise InputError(
            f"the {hook} output has no key {spec!r} (the {role!r} of the check); its keys: {present}",
            details={"field": role, "key": spec, "keys": list(outputs)},
        )
    return _detached(outputs[spec])


def _check_keys(keys: object) -> dict[str, OutputKey | None]:
    chosen: dict[str, OutputKey | None] = {name: name for name in COLLAPSE_KEYS}
    if keys is None:
        return chosen
    if not isinstance(keys, Mapping):
        raise InputError(
            f"'keys' must be a mapping of {', '.join(COLLAPSE_KEYS)} to output keys or functions: "
            f"got {type(keys).__name__}",
            details={"field": "keys", "type": type(keys).__name__},
        )
    for name, spec in keys.items():
        if name not in COLLAPSE_KEYS:
            raise InputError(
                f"'keys' has an unknown entry {name!r}: the check reads {', '.join(map(repr, COLLAPSE_KEYS))}",
                details={"field": "keys", "value": name},
            )
        if name == "kl_reg" and spec is None:  # the loss has no Gaussian term
            chosen[name] = None
            continue
        if not (isinstance(spec, str) or callable(spec)):
            raise InputError(
                f"'keys' entry {name!r} must be an output key or a function: got {type(spec).__name__}",
                details={"field": "keys", "value": name, "type": type(spec).__name__},
            )
        chosen[name] = spec
    return chosen


def _mean_kl(values: list[float | None]) -> float | None:
    """The ``kl_reg`` of several validation batches: their mean, or ``None`` when none has one."""
    present = [value for value in values if value is not None]
    if not present:
        return None
    if len(present) != len(values):
        raise InputError(
            "'kl_reg' is None in some validation batches of a check and a number in others: return it from every "
            "validation_step, or from none",
            details={"field": "kl_reg"},
        )
    return present[0] if len(present) == 1 else math.fsum(present) / len(present)


def _concatenate(parts: list[Any], role: str) -> Any:
    """Rows of several batches as one batch, in the form they came in."""
    if len(parts) == 1:
        return parts[0]
    torch = sys.modules.get("torch")
    if torch is not None and all(isinstance(part, torch.Tensor) for part in parts):
        return torch.cat(parts, dim=0)
    numpy = sys.modules.get("numpy")
    if numpy is not None and all(isinstance(part, numpy.ndarray) for part in parts):
        return numpy.concatenate(parts, axis=0)
    rows: list[Any] = []
    for part in parts:
        data = part.detach().cpu() if hasattr(part, "detach") else part
        rows.extend(data.tolist() if hasattr(data, "tolist") else data)
    return rows


# ------------------------------------------------------------------ collapse
class CollapseMonitorCallback(Callback):
    """Check validation batches for representation collapse (RFC-0005) during ``fit``.

    At each scheduled validation run the callback takes the outputs of the first
    ``num_batches`` validation steps (of the first dataloader), reads prediction, target
    and ``kl_reg`` from them through ``keys``, and at the end of the run calls
    ``monitor.observe`` on their rows together, at ``trainer.global_step``. It then logs
    ``collapse/<metric>`` for the seven metrics and ``collapse/alerts`` (the number of
    alerts in force) through ``pl_module.log``; the monitor records its registry, JSON
    log and sinks as usual. The sanity-check validation is skipped, except as the
    reference check of calibrated criteria (``reference_check``).

    Parameters
    ----------
    monitor:
        The monitor to run (its thresholds, policy, sinks, distributed mode...);
        ``CollapseMonitor()`` when omitted. Its own ``log_every_steps`` is not used: the
        callback decides which validation runs are checked.
    keys:
        Where each value is in a ``validation_step`` output: for ``prediction``, ``target``
        and ``kl_reg``, a key of the returned mapping or a function of the whole output,
        e.g. ``{"prediction": "pred", "target": lambda out: out["target"].detach(),
        "kl_reg": "loss_reg"}``. Entries left out use their own name as the key;
        ``"kl_reg": None`` says the loss has no Gaussian term (no ``kl_reg`` is read, and
        its criterion is not evaluated), as does a ``None`` value in the output.
    every_n_steps:
        ``None`` (default): check every validation run. An integer N: check the first
        validation run at or after each multiple of N training steps (RFC-0005's
        schedule when validation runs every N steps, e.g. ``val_check_interval=N``).
    num_batches:
        Validation batches whose rows make up the checked batch (default 1: the first).
        ``kl_reg`` is then the mean of their values.
    logger:
        The JSON run logger: ``"auto"`` (default) for ``get_logger("training")`` in the
        Trainer's log directory, ``<trainer.log_dir>/geno_lewm/<run_id>.jsonl`` (e.g.
        ``lightning_logs/version_0/geno_lewm/``; ``<default_root_dir>/geno_lewm/`` when the
        Trainer has no logger), announced in one line on rank 0 — or in
        ``GENO_LEWM_LOG_DIR`` when that is set; ``None`` for none, or any logger with
        ``info`` and ``warning`` or ``warn`` (a GenoLeWM family logger, structlog,
        ``logging``), used as it is; a logger this package did not create gets the
        family's minimal metric and alert records (RFC-0006).
    log_prefix:
        Prefix of the names given to ``pl_module.log`` (default ``"collapse/"``).
    prog_bar:
        Also show the metrics in the progress bar.
    reference_check:
        Whether the sanity-check validation before the first update is checked, at step 0,
        as the run's reference (RFC-0013 §2). ``None`` (default): when the monitor's
        criteria are ``"calibrated"`` and it has no reference yet (a monitor restored from a
        checkpoint keeps its own). With ``num_sanity_val_steps=0`` there is no such run, and
        the first checked validation run becomes the reference.

    A monitor whose policy says ``on_alert="raise"`` stops ``fit`` with
    :class:`~geno_lewm.errors.CollapseDetectedError`, after the metrics are logged.
    """

    def __init__(
        self,
        monitor: CollapseMonitor | None = None,
        *,
        keys: Mapping[str, OutputKey | None] | None = None,
        every_n_steps: int | None = None,
        num_batches: int = COLLAPSE_NUM_BATCHES,
        logger: LoggerChoice = "auto",
        log_prefix: str = COLLAPSE_LOG_PREFIX,
        prog_bar: bool = PROG_BAR,
        reference_check: bool | None = None,
    ) -> None:
        super().__init__()
        self.monitor = CollapseMonitor() if monitor is None else check_instance("monitor", monitor, CollapseMonitor)
        self.reference_check = None if reference_check is None else check_bool("reference_check", reference_check)
        self.keys = _check_keys(keys)
        self.every_n_steps = None if every_n_steps is None else check_positive_int("every_n_steps", every_n_steps)
        self.num_batches = check_positive_int("num_batches", num_batches)
        self._logger_choice = _check_logger(logger)
        self._logger: MetricLogger | None = None
        self.log_prefix = _check_prefix(log_prefix)
        self.prog_bar = bool(prog_bar)
        self._last_step: int | None = None
        self._collecting = False
        self._parts: list[tuple[Any, Any, float | None]] = []

    @property
    def last_check(self) -> CollapseCheck | None:
        """The monitor's most recent check."""
        return self.monitor.last_check

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Resolve the logger (the monitor decides which rank writes)."""
        self._logger = _resolve_logger(self._logger_choice, writes=True, trainer=trainer)

    def _scheduled(self, step: int) -> bool:
        if self.every_n_steps is None:
            return True
        if step <= 0:
            return False
        last = 0 if self._last_step is None else self._last_step
        return step // self.every_n_steps > last // self.every_n_steps

    def _takes_reference(self, trainer: pl.Trainer) -> bool:
        """Whether this sanity-check run is the reference check (see ``reference_check``)."""
        if int(trainer.global_step) != 0:
            return False
        if self.reference_check is None:
            return self.monitor.criteria == "calibrated" and self.monitor.reference_step is None
        return self.reference_check

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Decide whether this validation run is checked."""
        self._parts = []
        if trainer.sanity_checking:
            self._collecting = self._takes_reference(trainer)
        else:
            self._collecting = self._scheduled(int(trainer.global_step))

    def on_validation_batch_end(  # noqa: PLR0917 - Lightning's hook signature
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        """Keep the values of the first ``num_batches`` steps of a checked run."""
        if not self._collecting or dataloader_idx != 0 or len(self._parts) >= self.num_batches:
            return
        prediction = _lookup(outputs, self._key("prediction"), "prediction", "validation_step")
        target = _lookup(outputs, self._key("target"), "target", "validation_step")
        kl_key = self.keys["kl_reg"]
        kl_reg = None if kl_key is None else _lookup(outputs, kl_key, "kl_reg", "validation_step")
        self._parts.append((prediction, target, check_kl_reg(kl_reg)))

    def _key(self, role: str) -> OutputKey:
        spec = self.keys[role]
        assert spec is not None  # only kl_reg may be None (_check_keys)
        return spec

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Run the check and log its numbers."""
        if not self._collecting or not self._parts:
            return
        parts, self._parts, self._collecting = self._parts, [], False
        prediction = _concatenate([p for p, _, _ in parts], "prediction")
        target = _concatenate([t for _, t, _ in parts], "target")
        kl_reg = _mean_kl([kl for _, _, kl in parts])
        step = int(trainer.global_step)
        self._last_step = step
        try:
            check = self.monitor.observe(prediction, target, kl_reg=kl_reg, step=step, logger=self._logger, force=True)
        except CollapseDetectedError as error:
            if isinstance(error.check, CollapseCheck):
                self._log(pl_module, error.check)
            raise
        if check is not None:
            self._log(pl_module, check)

    def _log_options(self) -> dict[str, Any]:
        """How the check's numbers are given to ``pl_module.log``.

        Under a process group the monitor gathers the shards (``distributed="gather"``) or
        merges their statistics (``"statistics"``), so every rank holds the same numbers.
        They are logged with ``sync_dist=True`` and ``reduce_fx="max"``: the maximum of
        identical values is each of them, bit for bit, on any number of ranks (a mean
        would divide a sum by the world size and may round), and Lightning's advice to
        sync epoch-level values under DDP does not fire. ``distributed="off"`` gives each
        rank the numbers of its own shard; those are logged unsynced, as they are.
        Outside a process group the sync does nothing.
        """
        # CollapseMonitor exposes its distributed mode only as this attribute.
        identical = getattr(self.monitor, "_distributed", "gather") != "off"
        return {"on_step": False, "on_epoch": True, "sync_dist": identical, "reduce_fx": "max"}

    def _log(self, pl_module: pl.LightningModule, check: CollapseCheck) -> None:
        values = check.metrics.as_dict()
        options = self._log_options()
        for name in METRIC_NAMES:
            if name not in values:  # kl_reg when the loss has no Gaussian term
                continue
            pl_module.log(f"{self.log_prefix}{name}", values[name], prog_bar=self.prog_bar, **options)
        pl_module.log(f"{self.log_prefix}alerts", float(len(check.alerts)), **options)

    def state_dict(self) -> dict[str, Any]:
        """The step of the last check (the ``every_n_steps`` schedule resumes from it) and
        the monitor's baselines and alert streaks (:meth:`CollapseMonitor.state_dict`), so
        a resumed run compares with the start of the run, not with its first batch after
        the restart.
        """
        return {"last_step": self._last_step, "monitor": self.monitor.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        last = state_dict.get("last_step")
        if "monitor" in state_dict:
            self.monitor.load_state_dict(state_dict["monitor"])
        self._last_step = None if last is None else int(last)


# ------------------------------------------------------------------ dynamics
class PredictionDynamicsCallback(Callback):
    """Watch a classifier's prediction dynamics from the logits ``training_step`` returns.

    Every ``log_every_n_steps`` optimizer steps (``trainer.global_step``, once per step
    under gradient accumulation) the logits are read from the ``training_step`` output —
    by ``key``, or else as the ``logits``, ``out`` or ``preds`` entry of a mapping or
    the first element of a tuple — and observed, as rows of classes (``class_dim``), by a
    :class:`~geno_lewm.training.dynamics.PredictionMonitor`; the five metrics are logged
    as ``dynamics/<metric>`` through ``pl_module.log``.

    Parameters
    ----------
    monitor:
        The monitor (thresholds, backend, registry); ``PredictionMonitor(log_every_steps=
        log_every_n_steps)`` when omitted.
    log_every_n_steps:
        Period when no monitor is given (default 50).
    key:
        Where the logits are: an output key or a function of the output. ``None`` looks
        them up as described above; an output without usable logits is then skipped (a
        warning names the first one).
    class_dim:
        The classes' dimension of the logits (tensors and arrays). The softmax is taken
        over it; every other dimension becomes rows, so segmentation logits ``[B, C, H, W]``
        give one row per pixel and sequence logits ``[B, T, C]`` (``class_dim=-1``) one
        row per position. ``None`` (default) is dimension 1, the ``[N, C, ...]``
        convention of PyTorch's losses and of the reference's softmax over dimension 1,
        but 3-D logits are then refused with an :class:`InputError` at the first checked
        step: ``[B, C, L]`` and ``[B, T, C]`` are both common, and reading ``T`` as the
        classes would give wrong metrics silently. Pass ``class_dim=1`` or ``-1`` for them.
    logger, log_prefix:
        As for :class:`CollapseMonitorCallback` (prefix ``"dynamics/"``); under DDP only the
        global-zero rank writes the JSON log.
    """

    def __init__(
        self,
        monitor: Any = None,
        *,
        log_every_n_steps: int | None = None,
        key: OutputKey | None = None,
        class_dim: int | None = None,
        logger: LoggerChoice = "auto",
        log_prefix: str = DYNAMICS_LOG_PREFIX,
    ) -> None:
        super().__init__()
        from geno_lewm.training.dynamics import PredictionMonitor, check_class_dim

        if monitor is None:
            monitor = (
                PredictionMonitor()
                if log_every_n_steps is None
                else PredictionMonitor(log_every_steps=check_positive_int("log_every_n_steps", log_every_n_steps))
            )
        elif not isinstance(monitor, PredictionMonitor):
            raise wrong_type("monitor", "a PredictionMonitor", monitor)
        elif log_every_n_steps is not None:
            raise InputError(
                "give 'log_every_n_steps' or a 'monitor' (with its own period), not both",
                details={"field": "log_every_n_steps", "value": log_every_n_steps},
            )
        if key is not None and not (isinstance(key, str) or callable(key)):
            raise InputError(
                f"'key' must be an output key or a function: got {type(key).__name__}",
                details={"field": "key", "type": type(key).__name__},
            )
        self.monitor = monitor
        self.key = key
        self.class_dim = check_class_dim(class_dim)
        self._logger_choice = _check_logger(logger)
        self._logger: MetricLogger | None = None
        self.log_prefix = _check_prefix(log_prefix)
        self._last_step: int | None = None
        self.skipped = 0

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Resolve the logger: only the global-zero rank writes."""
        self._logger = _resolve_logger(self._logger_choice, writes=bool(trainer.is_global_zero), trainer=trainer)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """Observe the logits on scheduled steps and log the metrics."""
        from geno_lewm.training.dynamics import extract_logits, logits_as_rows

        step = int(trainer.global_step)
        if step == self._last_step or not self.monitor.should_log(step):
            return
        if self.key is None:
            logits = extract_logits(outputs, class_dim=self.class_dim)
            if logits is None:
                self.skipped += 1
                if self.skipped == 1:
                    warnings.warn(
                        f"PredictionDynamicsCallback: the training_step output at step {step} holds no logits "
                        "(return them as 'logits', 'out' or 'preds', or pass key=); nothing is observed",
                        stacklevel=2,
                    )
                return
        else:
            logits = logits_as_rows(_lookup(outputs, self.key, "logits", "training_step"), self.class_dim)
        self._last_step = step
        check = self.monitor.observe(logits, step=step, logger=self._logger, force=True)
        if check is None:
            return
        for name, value in check.metrics.as_dict().items():
            pl_module.log(f"{self.log_prefix}{name}", value, on_step=True, on_epoch=False)


# ------------------------------------------------------------------ gradients
class GradientGeometryCallback(Callback):
    """Record the output-gradient geometry of the module's layers and summarise each epoch.

    At ``fit`` start a :class:`~geno_lewm.training.gradients.GradientGeometry` is attached
    to the LightningModule (or to its submodule ``module``), with ``options`` passed on
    (``normalize_by_size``, ``log_scale``, ``compute_correlation``, ``layers``,
    ``line_aggregation``, ``range_aggregation``...). The options are checked here, when
    the callback is built (:func:`~geno_lewm.training.gradients.check_gradient_options`):
    an unknown name or a bad value raises :class:`InputError` before any training, and
    the reference's spellings (``"min-max"``, ``"Q1-Q3"``, ``"IQR"``...) are stored under
    their canonical names in :attr:`options`. At the end of each training epoch the
    summary is published (registry gauges and, on the global-zero rank, the JSON log)
    and each layer's line (``line_aggregation``, the mean by default) is logged as
    ``gradients/<layer>/<quantity>`` (and the mean cosine as
    ``gradients/<layer>/correlation`` with correlations) through ``pl_module.log``. The
    hooks are removed when ``fit`` ends.
    """

    def __init__(
        self,
        *,
        module: str | None = None,
        logger: LoggerChoice = "auto",
        log_prefix: str = GRADIENTS_LOG_PREFIX,
        **options: Any,
    ) -> None:
        super().__init__()
        if module is not None and not isinstance(module, str):
            raise InputError(
                f"'module' must name a submodule: got {type(module).__name__}",
                details={"field": "module", "type": type(module).__name__},
            )
        from geno_lewm.training.gradients import check_gradient_options

        self.module = module
        self.options = check_gradient_options(options)
        self._logger_choice = _check_logger(logger)
        self._logger: MetricLogger | None = None
        self.log_prefix = _check_prefix(log_prefix)
        self.geometry: Any = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Resolve the logger: only the global-zero rank writes."""
        self._logger = _resolve_logger(self._logger_choice, writes=bool(trainer.is_global_zero), trainer=trainer)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Attach the hooks."""
        from geno_lewm.training.gradients import GradientGeometry

        target: Any = pl_module
        if self.module is not None:
            try:
                target = pl_module.get_submodule(self.module)
            except AttributeError as error:
                raise InputError(
                    f"'module' names no submodule of {type(pl_module).__name__}: {self.module!r}",
                    details={"field": "module", "value": self.module},
                ) from error
        if self.geometry is not None:
            self.geometry.detach()
        self.geometry = GradientGeometry(target, **self.options)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Publish the epoch's summary and log each layer's line."""
        if self.geometry is None:
            return
        summary = self.geometry.end_epoch(
            epoch=int(trainer.current_epoch), step=int(trainer.global_step), logger=self._logger
        )
        for stats in summary.layers:
            base = f"{self.log_prefix}{stats.layer}/"
            pl_module.log(
                base + stats.quantity, stats.value.aggregate(summary.line_aggregation), on_step=False, on_epoch=True
            )
            if stats.correlation is not None:
                pl_module.log(base + "correlation", stats.correlation.aggregate("mean"), on_step=False, on_epoch=True)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Remove the hooks."""
        if self.geometry is not None:
            self.geometry.detach()

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Remove the hooks also when ``fit`` stopped on an exception."""
        if self.geometry is not None:
            self.geometry.detach()
