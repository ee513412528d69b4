"""A simulated training run that collapses part-way, watched by the monitor (``geno-lewm demo``).

The simulation stands in for a JEPA predictor trained against a frozen target encoder:
a fixed validation batch of targets, and predictions that first learn to follow them
(alignment rises, noise falls) and then, from ``collapse_at`` of the run on, shrink
towards their batch mean, the signature of representation collapse. Only the checked
steps are simulated, as a training loop would compute validation predictions only when
:meth:`~geno_lewm.training.collapse.CollapseMonitor.should_log` says so.

Everything a real run would produce lands under the output directory:
``logs/<run_id>.jsonl`` (the JSON-lines log), ``collapse.png`` (when matplotlib is
installed) and ``metrics.prom`` (the Prometheus text file). Standard library only;
NumPy or torch compute the metrics when installed and the backend allows.

Example
-------
>>> import io, tempfile
>>> result = run_demo(tempfile.mkdtemp(), steps=1000, every=100, backend="python", plot=False, stream=io.StringIO())
>>> result.first_alert_step is not None and result.first_alert_step > result.collapse_step
True
"""

from __future__ import annotations

import importlib.util
import math
import os
import random
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from geno_lewm._validation import check_non_negative_int, check_positive_int, fail
from geno_lewm.backends import check_backend_name, load_backend
from geno_lewm.errors import InputError
from geno_lewm.metrics import MetricRegistry
from geno_lewm.training.collapse import CollapseCheck, CollapseMonitor
from geno_lewm.training.spectrum import gaussian_kl

if TYPE_CHECKING:
    from geno_lewm.logs import LoadedLog

__all__ = ["DemoResult", "run_demo"]

_GAMMA = 0.5
"""Weight of the Gaussian regulariser in ``kl_reg`` (RFC-0005 §3.2 default)."""


@dataclass(frozen=True, slots=True)
class DemoResult:
    """What a demo run produced and found."""

    log_path: Path
    plot_path: Path | None
    prometheus_path: Path
    backend: str
    checks: int
    checks_with_alerts: int
    collapse_step: int
    first_alert_step: int | None


class _Simulation:
    """Predictions for a fixed target batch at any step of the simulated run."""

    def __init__(self, steps: int, batch_size: int, dim: int, collapse_step: int, seed: int) -> None:
        rng = random.Random(seed)
        self.targets = [[rng.gauss(0.0, 1.0) for _ in range(dim)] for _ in range(batch_size)]
        self.steps = steps
        self.collapse_step = collapse_step
        self.seed = seed

    def predictions(self, step: int) -> list[list[float]]:
        rng = random.Random(self.seed * 1_000_003 + step)
        progress = step / self.steps
        alignment = 0.35 + 0.55 * (1.0 - math.exp(-progress / 0.15))
        noise = math.exp(-progress / 0.2) + 0.25
        raw = [[alignment * t + noise * rng.gauss(0.0, 1.0) for t in row] for row in self.targets]
        if step <= self.collapse_step:
            return raw
        shrink = max(0.02, math.exp(-(step - self.collapse_step) / (0.12 * self.steps)))
        means = [math.fsum(column) / len(raw) for column in zip(*raw)]
        return [[m + shrink * (x - m) for x, m in zip(row, means)] for row in raw]


def _choose_backend(requested: str) -> str:
    """The backend to compute with: ``auto`` prefers torch, then NumPy, when they load."""
    check_backend_name(requested)
    if requested != "auto":
        if requested != "python":
            load_backend(requested)
        return requested
    for name in ("torch", "numpy"):
        if importlib.util.find_spec(name) is None:
            continue
        try:
            load_backend(name)
        except ImportError:
            continue
        return name
    return "python"


def _as_backend_input(rows: list[list[float]], backend: str) -> Any:
    if backend == "torch":
        import torch

        return torch.tensor(rows, dtype=torch.float32)
    if backend == "numpy":
        import numpy

        return numpy.asarray(rows, dtype=numpy.float64)
    return rows


_HEADER = f"{'step':>6}  {'cos':>6}  {'l2':>6}  {'pred_var':>8}  {'tgt_var':>7}  {'pairwise':>8}  {'kl_reg':>6}  status"


def _check_line(check: CollapseCheck) -> str:
    m = check.metrics
    line = (
        f"{check.step:>6}  {m.pred_cos_mean:>6.3f}  {m.pred_l2_mean:>6.3f}  {m.pred_var_per_dim:>8.3f}  "
        f"{m.target_var_per_dim:>7.3f}  {m.pairwise_pred_dist_mean:>8.3f}  {m.kl_reg:>6.3f}  "
    )
    if not check.alerts:
        return line + "ok"
    crossed = ", ".join(
        f"{a.criterion} {a.value:.3g} {'>' if a.criterion == 'kl_reg' else '<'} {a.threshold:.3g}" for a in check.alerts
    )
    return line + f"COLLAPSE: {crossed}"


def run_demo(
    out: str | os.PathLike[str] = "demo-output",
    *,
    steps: int = 3000,
    every: int = 100,
    batch_size: int = 48,
    dim: int = 16,
    collapse_at: float = 0.45,
    seed: int = 0,
    backend: str = "auto",
    plot: bool = True,
    stream: TextIO | None = None,
) -> DemoResult:
    """Simulate a training run whose predictions collapse, monitor it, and report.

    Parameters
    ----------
    out:
        Output directory for the log, the plot and the Prometheus text file.
    steps, every:
        Length of the simulated run and the monitor's schedule.
    batch_size, dim:
        Shape ``[N, D]`` of the validation batch.
    collapse_at:
        Fraction of the run (in ``(0, 1)``) after which predictions start to collapse.
    seed:
        Seed of the simulation; the same seed gives the same numbers.
    backend:
        ``auto`` (torch, else NumPy, else pure Python), ``python``, ``numpy`` or ``torch``.
    plot:
        Draw ``collapse.png`` when matplotlib is installed.
    stream:
        Where the progress and the report are printed (default: standard output).

    Raises
    ------
    InputError
        For a bad parameter. ``BackendUnavailableError`` when the backend named is not
        installed.
    """
    from geno_lewm._report import format_report
    from geno_lewm.logs import load_log
    from geno_lewm.observability import get_logger, new_run_id

    steps = check_positive_int("steps", steps)
    every = check_positive_int("every", every)
    batch_size = check_positive_int("batch_size", batch_size)
    dim = check_positive_int("dim", dim)
    seed = check_non_negative_int("seed", seed)
    if batch_size < 2:
        raise fail("batch_size", ">= 2", batch_size)
    if not isinstance(collapse_at, (int, float)) or not 0.0 < collapse_at < 1.0:
        raise InputError(
            f"'collapse_at' must be in (0, 1): got {collapse_at!r}",
            details={"field": "collapse_at", "value": collapse_at},
        )
    if every > steps:
        raise InputError(
            f"'every' must be <= 'steps' ({steps}): got {every!r}", details={"field": "every", "value": every}
        )
    stream = sys.stdout if stream is None else stream
    chosen = _choose_backend(backend)
    directory = Path(out)
    collapse_step = int(collapse_at * steps)
    simulation = _Simulation(steps, batch_size, dim, collapse_step, seed)
    targets = _as_backend_input(simulation.targets, chosen)
    kl_reg = _GAMMA * gaussian_kl(simulation.targets, backend="python")
    registry = MetricRegistry()
    monitor = CollapseMonitor(log_every_steps=every, backend=chosen, registry=registry)
    # The demo prints its own account of the run; the log's stderr mirror would repeat it.
    log = get_logger("training", log_dir=directory / "logs", run_id=f"demo-{new_run_id()}", pretty=False)

    print(
        f"geno_lewm demo: {steps} simulated training steps, validation batch {batch_size} x {dim}, "
        f"collapse check every {every} steps; predictions start to collapse after step {collapse_step}",
        file=stream,
    )
    print(f"backend: {chosen}   log: {log.path}", file=stream)
    print(file=stream)
    print(_HEADER, file=stream)
    checks = tripped = 0
    first_alert: int | None = None
    config = {
        "steps": steps,
        "every": every,
        "batch_size": batch_size,
        "dim": dim,
        "collapse_at": collapse_at,
        "seed": seed,
        "backend": chosen,
    }
    with log.run(config=config, description="geno_lewm demo: simulated training with a collapse"):
        for step in range(1, steps + 1):
            # ... a training step would run here ...
            if not monitor.should_log(step):
                continue
            predictions = _as_backend_input(simulation.predictions(step), chosen)
            check = monitor.observe(predictions, targets, kl_reg=kl_reg, step=step, logger=log)
            assert check is not None  # should_log said this step is scheduled
            checks += 1
            if check.tripped:
                tripped += 1
                first_alert = step if first_alert is None else first_alert
            print(_check_line(check), file=stream)
    log.close()

    print(file=stream)
    if first_alert is None:
        print(f"no collapse detected in {checks} checks", file=stream)
    else:
        print(
            f"collapse detected: first alert at step {first_alert}, {first_alert - collapse_step} steps after the "
            f"collapse began; {tripped} of {checks} checks raised alerts",
            file=stream,
        )
    print(file=stream)
    print("=" * 30 + " report (geno-lewm report) " + "=" * 30, file=stream)
    loaded = load_log(log.path)
    print(format_report([loaded]), file=stream, end="")
    print(file=stream)

    plot_path = _plot(loaded, directory / "collapse.png", stream) if plot else None
    prometheus_path = registry.export_prometheus_textfile(directory / "metrics.prom")
    print(f"Prometheus text file: {prometheus_path}", file=stream)
    print(f"read it again with:   geno-lewm report {log.path}", file=stream)
    return DemoResult(log.path, plot_path, prometheus_path, chosen, checks, tripped, collapse_step, first_alert)


def _plot(loaded: LoadedLog, target: Path, stream: TextIO) -> Path | None:
    from geno_lewm._plot import plot_records

    try:
        written = plot_records(loaded.records, target)
    except ImportError as error:
        print(f"plot: skipped, {error}", file=stream)
        return None
    print(f"plot: {written}", file=stream)
    return written
