"""Sending a monitor's numbers to any experiment tracker: the :class:`MetricSink` protocol.

A sink is anything with ``log_metrics(metrics, step)``: a mapping of metric name to float
and the training step. Monitors call each of their sinks once per observed check, after
the registry and the run log, with the metrics' registry names (e.g.
``geno_lewm.training.collapse.pred_var_per_dim``), so a tracker plugs in with one line::

    monitor = CollapseMonitor(sinks=[WandbSink()])

Adapters for W&B (:class:`WandbSink`), MLflow (:class:`MLflowSink`) and TensorBoard
(:class:`TensorBoardSink`) import their package when they are constructed, unless they are
given the tracker's own object (a run, a client, a writer), and raise
:class:`SinkUnavailableError` naming what to install when it is missing: a run set up with
a sink it cannot use stops before training starts, not at its first check. Two built-in
sinks need nothing: :class:`CSVSink` appends rows to a CSV file
(readable by any spreadsheet or ``pandas.read_csv``) and :class:`MemorySink` keeps the
calls in a list (notebooks, tests). A user's own tracker needs no base class: any object
with a matching ``log_metrics`` method is a sink.

Each adapter takes ``rename``, a function applied to every name (for example
:func:`short_metric_name`, which turns ``geno_lewm.training.collapse.kl_reg`` into
``collapse/kl_reg``, the grouping most dashboards expect). An exception raised by a
sink propagates to the monitor's caller, after the registry and the log have the check.

Example
-------
>>> sink = MemorySink()
>>> publish_metrics([sink], {"geno_lewm.training.collapse.kl_reg": 0.5}, step=500)
>>> sink.calls
[(500, {'geno_lewm.training.collapse.kl_reg': 0.5})]
>>> short_metric_name("geno_lewm.training.collapse.kl_reg")
'collapse/kl_reg'
"""

from __future__ import annotations

import csv
import importlib
import importlib.util
import inspect
import math
import numbers
import os
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from geno_lewm._protocols import MetricSink, check_sinks, publish_metrics
from geno_lewm._validation import check_callable, check_non_negative_int
from geno_lewm.errors import BackendUnavailableError, InputError
from geno_lewm.metrics import METRIC_NAMESPACE

__all__ = [
    "CSVSink",
    "MLflowSink",
    "MemorySink",
    "MetricSink",
    "SinkUnavailableError",
    "TensorBoardSink",
    "WandbSink",
    "check_sinks",
    "publish_metrics",
    "short_metric_name",
]

_LIBRARY_PREFIX = f"{METRIC_NAMESPACE}."


class SinkUnavailableError(BackendUnavailableError, InputError):
    """A sink's tracker package is not installed; the message says what to install.

    Raised when the sink is constructed (and by ``MonitoringConfig.build()``, with the
    path of the sink in the configuration, e.g. ``sinks[0]``). It is an ``ImportError``
    (``name`` is the first missing package) and an :class:`~geno_lewm.errors.InputError`
    whose ``details`` hold ``sink``, ``packages``, ``install`` and, from a configuration,
    ``field``.

    Parameters
    ----------
    sink:
        The sink's class name, e.g. ``"WandbSink"``.
    packages:
        The missing package or packages, by their pip names.
    where:
        The sink's place in a configuration, put in front of the message.

    Example
    -------
    >>> str(SinkUnavailableError("WandbSink", "wandb", where="sinks[0]"))
    "sinks[0]: WandbSink needs the 'wandb' package, which is not installed: pip install wandb"
    """

    def __init__(self, sink: str, packages: str | Sequence[str], *, where: str | None = None) -> None:
        missing = (packages,) if isinstance(packages, str) else tuple(packages)
        if not missing:
            raise ValueError("SinkUnavailableError needs at least one package")
        named = " and ".join(repr(package) for package in missing)
        noun = "package, which is" if len(missing) == 1 else "packages, which are"
        install = "pip install " + " ".join(missing)
        message = f"{sink} needs the {named} {noun} not installed: {install}"
        details: dict[str, Any] = {"sink": sink, "packages": missing, "install": install}
        if where is not None:
            message = f"{where}: {message}"
            details["field"] = where
        InputError.__init__(self, message, details=details)
        self.name = missing[0]
        self.backend = sink
        self.extra = missing[0]
        self.packages = missing
        self.where = where


def short_metric_name(name: str) -> str:
    """``geno_lewm.training.<family>.<rest>`` as ``<family>/<rest>``; other names unchanged.

    Example
    -------
    >>> short_metric_name("geno_lewm.training.dynamics.pred_entropy")
    'dynamics/pred_entropy'
    """
    if not name.startswith(_LIBRARY_PREFIX):
        return name
    family, _, rest = name[len(_LIBRARY_PREFIX) :].partition(".")
    return f"{family}/{rest}" if rest else family


def _checked(metrics: object, step: object) -> tuple[dict[str, float], int]:
    """Validate a ``log_metrics`` call: string names, real values, a non-negative step."""
    if not isinstance(metrics, Mapping):
        raise InputError(
            f"'metrics' must be a mapping of names to numbers: got {type(metrics).__name__}",
            details={"field": "metrics", "type": type(metrics).__name__},
        )
    out: dict[str, float] = {}
    for name, value in metrics.items():
        if not isinstance(name, str) or not name:
            raise InputError(f"'metrics' has a key that is not a name: {name!r}", details={"field": "metrics"})
        scalar = value.item() if hasattr(value, "item") and not isinstance(value, numbers.Number) else value
        if isinstance(scalar, bool) or not isinstance(scalar, numbers.Real):
            raise InputError(
                f"'metrics' value of {name!r} must be a real number: got {value!r}",
                details={"field": "metrics", "name": name, "type": type(value).__name__},
            )
        out[name] = float(scalar)
    return out, check_non_negative_int("step", step)


def _renamed(metrics: Mapping[str, float], rename: Callable[[str], str] | None) -> dict[str, float]:
    return dict(metrics) if rename is None else {rename(name): value for name, value in metrics.items()}


def _check_rename(rename: object) -> Callable[[str], str] | None:
    return None if rename is None else check_callable("rename", rename)


# ------------------------------------------------------------------ built-in
class MemorySink:
    """Keep every call as ``(step, metrics)`` in :attr:`calls`, in order.

    For notebooks and tests; memory grows by one small dict per check.
    """

    __slots__ = ("_lock", "calls")

    def __init__(self) -> None:
        self.calls: list[tuple[int, dict[str, float]]] = []
        self._lock = threading.Lock()

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Append ``(step, metrics)``."""
        values, checked_step = _checked(metrics, step)
        with self._lock:
            self.calls.append((checked_step, values))

    def series(self, name: str) -> list[tuple[int, float]]:
        """``(step, value)`` of metric ``name`` in call order."""
        with self._lock:
            return [(step, values[name]) for step, values in self.calls if name in values]

    def __repr__(self) -> str:
        return f"MemorySink(calls={len(self.calls)})"


class CSVSink:
    """Append one row per metric to a CSV file: ``time,step,name,value``.

    The long format keeps one file valid whatever set of metrics each call brings. The
    header is written when the file is new or empty; each call opens the file in append
    mode, writes its rows in one ``write`` and closes it, so a crash loses at most the
    call in progress. ``time`` is the wall-clock time of the call (Unix seconds);
    non-finite values are written as ``nan``, ``inf`` and ``-inf``, which
    ``pandas.read_csv`` and ``float()`` read back.

    Parameters
    ----------
    path:
        The file; its directory is created when missing.
    rename:
        Applied to each metric name before writing.

    Example
    -------
    >>> import tempfile, pathlib
    >>> sink = CSVSink(pathlib.Path(tempfile.mkdtemp()) / "metrics.csv")
    >>> sink.log_metrics({"loss": 0.25}, step=10)
    >>> sink.path.read_text().splitlines()[0]
    'time,step,name,value'
    """

    __slots__ = ("_lock", "_rename", "path")

    HEADER = ("time", "step", "name", "value")

    def __init__(self, path: str | os.PathLike[str], *, rename: Callable[[str], str] | None = None) -> None:
        try:
            self.path = Path(path)
        except TypeError:
            raise InputError(
                f"'path' must be a path: got {type(path).__name__}",
                details={"field": "path", "type": type(path).__name__},
            ) from None
        if self.path.is_dir():
            raise InputError(
                f"'path' must be a file: {str(self.path)!r} is a directory",
                details={"field": "path", "value": str(self.path)},
            )
        self._rename = _check_rename(rename)
        self._lock = threading.Lock()

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Append one row per metric."""
        values, checked_step = _checked(metrics, step)
        now = repr(time.time())
        rows = [
            (now, str(checked_step), name, _csv_number(value)) for name, value in _renamed(values, self._rename).items()
        ]
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            new = not self.path.exists() or self.path.stat().st_size == 0
            lines: list[str] = []
            writer = csv.writer(_LineCollector(lines), lineterminator="\n")
            if new:
                writer.writerow(self.HEADER)
            writer.writerows(rows)
            with open(self.path, "a", encoding="utf-8", newline="") as stream:
                stream.write("".join(lines))

    def __repr__(self) -> str:
        return f"CSVSink(path={str(self.path)!r})"


class _LineCollector:
    """A write-only text target that keeps what ``csv.writer`` gives it."""

    __slots__ = ("lines",)

    def __init__(self, lines: list[str]) -> None:
        self.lines = lines

    def write(self, text: str) -> int:
        self.lines.append(text)
        return len(text)


def _csv_number(value: float) -> str:
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return repr(value)


# ------------------------------------------------------------------ adapters
def _installed(name: str) -> bool:
    """Whether top-level package ``name`` can be imported, without importing it."""
    if name in sys.modules:
        return sys.modules[name] is not None  # None: imports of it are blocked
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _require(sink: str, module: str, packages: Sequence[tuple[str, str]]) -> Any:
    """Import ``module`` for ``sink`` now, or raise :class:`SinkUnavailableError`.

    ``packages`` are the ``(top-level module, pip name)`` pairs the module needs; each
    is looked up with ``importlib.util.find_spec`` first, which imports nothing, so the
    error names every missing package and not only the first one an import would meet.
    An installed package that fails to import raises its own error.
    """
    missing = [pip_name for top_level, pip_name in packages if not _installed(top_level)]
    if missing:
        raise SinkUnavailableError(sink, missing)
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as error:
        if error.name is not None and (error.name == module or module.startswith(error.name + ".")):
            raise SinkUnavailableError(sink, [pip_name for _, pip_name in packages]) from error
        raise


_WANDB = (("wandb", "wandb"),)
_MLFLOW = (("mlflow", "mlflow"),)
_TENSORBOARD = (("torch", "torch"), ("tensorboard", "tensorboard"))


class WandbSink:
    """Send the metrics to Weights & Biases: ``run.log(metrics, step=step)``.

    Parameters
    ----------
    run:
        A W&B run (``wandb.init()``'s result). When omitted, ``wandb`` is imported here
        (:class:`SinkUnavailableError` when it is not installed) and each call logs to the
        current run, ``wandb.run``, so the sink may be built before ``wandb.init()``.
    rename:
        Applied to each metric name, e.g. :func:`short_metric_name`.

    W&B wants steps that never decrease within a run; the monitor's steps are the
    training steps, so log other data with the same step counter.
    """

    __slots__ = ("_rename", "_run", "_wandb")

    def __init__(self, run: Any = None, *, rename: Callable[[str], str] | None = None) -> None:
        if run is not None and not callable(getattr(run, "log", None)):
            raise InputError(
                f"'run' must be a W&B run (with a log method): got {type(run).__name__}",
                details={"field": "run", "type": type(run).__name__},
            )
        self._rename = _check_rename(rename)
        self._run = run
        self._wandb = _require("WandbSink", "wandb", _WANDB) if run is None else None

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """``run.log(metrics, step=step)``."""
        values, checked_step = _checked(metrics, step)
        run = self._run if self._wandb is None else self._wandb.run
        if run is None:
            raise InputError("WandbSink has no run: call wandb.init() first or pass run=", details={"field": "run"})
        run.log(_renamed(values, self._rename), step=checked_step)


class MLflowSink:
    """Send the metrics to MLflow.

    Without a ``client``, ``mlflow`` is imported here (:class:`SinkUnavailableError` when
    it is not installed) and each call is ``mlflow.log_metrics(metrics, step=step)``: to
    the run ``run_id`` when given, else to the active run (MLflow starts one if there is
    none). With a ``client`` (``mlflow.MlflowClient``) and a ``run_id``, each metric goes
    through ``client.log_metric(run_id, name, value, step=step)``.

    MLflow accepts letters, digits, ``_``, ``-``, ``.``, ``/`` and spaces in names, so the
    registry names pass unchanged.
    """

    __slots__ = ("_client", "_mlflow", "_rename", "_run_id")

    def __init__(
        self, run_id: str | None = None, *, client: Any = None, rename: Callable[[str], str] | None = None
    ) -> None:
        if client is not None and not callable(getattr(client, "log_metric", None)):
            raise InputError(
                f"'client' must be an MLflow client (with log_metric): got {type(client).__name__}",
                details={"field": "client", "type": type(client).__name__},
            )
        if run_id is None and client is not None:
            raise InputError(
                "'run_id' must name the run when a client is given: got None",
                details={"field": "run_id", "value": None},
            )
        if run_id is not None and (not isinstance(run_id, str) or not run_id):
            raise InputError(
                f"'run_id' must name the run (a non-empty string): got {run_id!r}",
                details={"field": "run_id", "value": run_id},
            )
        self._rename = _check_rename(rename)
        self._client = client
        self._run_id = run_id
        self._mlflow = _require("MLflowSink", "mlflow", _MLFLOW) if client is None else None
        if self._mlflow is not None and run_id is not None:
            try:
                takes_run_id = "run_id" in inspect.signature(self._mlflow.log_metrics).parameters
            except (TypeError, ValueError):
                takes_run_id = False
            if not takes_run_id:
                raise InputError(
                    "'run_id': this mlflow's log_metrics cannot name a run; pass client=mlflow.MlflowClient() too",
                    details={"field": "run_id", "value": run_id},
                )

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Log every metric at ``step``."""
        checked, checked_step = _checked(metrics, step)
        values = _renamed(checked, self._rename)
        if self._mlflow is not None:
            if self._run_id is None:
                self._mlflow.log_metrics(values, step=checked_step)
            else:
                self._mlflow.log_metrics(values, step=checked_step, run_id=self._run_id)
            return
        for name, value in values.items():
            self._client.log_metric(self._run_id, name, value, step=checked_step)


class TensorBoardSink:
    """Write the metrics as TensorBoard scalars: ``writer.add_scalar(name, value, step)``.

    Parameters
    ----------
    writer:
        A ``SummaryWriter`` (``torch.utils.tensorboard`` or ``tensorboardX``). When
        omitted, ``torch.utils.tensorboard`` is imported here (:class:`SinkUnavailableError`
        when ``torch`` or ``tensorboard`` is not installed) and a writer on ``log_dir`` is
        created on first use, so building the sink creates no directory.
    log_dir:
        Directory of the writer created here (TensorBoard's default ``runs/...`` when
        ``None``).
    rename:
        Applied to each metric name; :func:`short_metric_name` groups the scalars by family.
    """

    __slots__ = ("_lock", "_log_dir", "_owned", "_rename", "_tensorboard", "_writer")

    def __init__(
        self,
        writer: Any = None,
        *,
        log_dir: str | os.PathLike[str] | None = None,
        rename: Callable[[str], str] | None = None,
    ) -> None:
        if writer is not None and not callable(getattr(writer, "add_scalar", None)):
            raise InputError(
                f"'writer' must be a SummaryWriter (with add_scalar): got {type(writer).__name__}",
                details={"field": "writer", "type": type(writer).__name__},
            )
        if writer is not None and log_dir is not None:
            raise InputError("give 'writer' or 'log_dir', not both", details={"field": "log_dir"})
        self._rename = _check_rename(rename)
        self._writer = writer
        self._owned = writer is None
        self._log_dir = None if log_dir is None else os.fspath(log_dir)
        self._lock = threading.Lock()
        self._tensorboard: Any = (
            _require("TensorBoardSink", "torch.utils.tensorboard", _TENSORBOARD) if writer is None else None
        )

    @property
    def writer(self) -> Any:
        """The writer, created on first use when none was given."""
        with self._lock:
            if self._writer is None:
                self._writer = self._tensorboard.SummaryWriter(log_dir=self._log_dir)
            return self._writer

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """One ``add_scalar`` per metric."""
        values, checked_step = _checked(metrics, step)
        writer = self.writer
        for name, value in _renamed(values, self._rename).items():
            writer.add_scalar(name, value, global_step=checked_step)

    def close(self) -> None:
        """Flush and close the writer created here (a writer passed in is left to its owner)."""
        with self._lock:
            if self._writer is not None and self._owned:
                self._writer.close()
                self._writer = None
