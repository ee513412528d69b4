"""Rendering logs' metrics as a PNG: one panel per metric over steps (needs matplotlib).

Every run of the records gets its own line (its own colour, then its own line style
once the colours are used up) and its own legend entry, so runs from several logs can
be compared in one figure. matplotlib is imported inside :func:`draw_records` and only
through its object-oriented API (``Figure`` and the Agg canvas), so plotting neither
needs a display nor changes the caller's pyplot state or backend.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from geno_lewm._layer_series import LayerSeries, draw_layer_series, layer_series
from geno_lewm.errors import InputError
from geno_lewm.logs import Alert, LogRecord, MetricSeries, alerts, metric_series

__all__ = ["PLOT_EXTRA_MESSAGE", "check_png_path", "draw_records", "plot_records"]

PLOT_EXTRA_MESSAGE = "plotting needs matplotlib, an optional extra: pip install 'geno-lewm[plot]'"

_VALUE_COLOURS = ("#1f77b4", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#ff7f0e", "#bcbd22", "#7f7f7f")
"""Run lines, in run order; red is kept for thresholds and alerts."""
_RUN_LINE_STYLES = ("-", ":", "-.")
"""Line styles of the runs past each round of colours (dashed is the threshold's)."""
_LEGEND_COLUMNS = 6
_THRESHOLD_COLOUR = "#d62728"
_ALERT_COLOUR = "#d62728"
_LOG_SCALE_RATIO = 100.0
"""A panel whose positive values span this factor or more gets a logarithmic y axis."""


def _common_prefix(names: Sequence[str]) -> str:
    """The longest dotted prefix shared by every name (``""`` when none, or one name)."""
    if len(names) < 2:
        return ""
    split = [name.split(".")[:-1] for name in names]
    prefix: list[str] = []
    for parts in zip(*split):
        if len(set(parts)) != 1:
            break
        prefix.append(parts[0])
    return ".".join(prefix)


def _finite_or_nan(values: Sequence[float]) -> list[float]:
    return [v if math.isfinite(v) else math.nan for v in values]


def _alert_spans(checked: Sequence[int], alerted: set[int]) -> list[tuple[float, float]]:
    """Shaded x-ranges: each maximal run of consecutive checked steps that raised alerts,
    widened by half the distance to the neighbouring checks.
    """
    spans: list[tuple[float, float]] = []
    for index, step in enumerate(checked):
        if step not in alerted:
            continue
        before = checked[index - 1] if index > 0 else None
        after = checked[index + 1] if index + 1 < len(checked) else None
        gap = min(step - before if before is not None else math.inf, after - step if after is not None else math.inf)
        half = 0.5 if math.isinf(gap) else gap / 2
        start, end = step - half, step + half
        if spans and before is not None and before in alerted:
            start = spans.pop()[0]
        spans.append((start, end))
    return spans


def _criterion_matches(alert: Alert, metric: str) -> bool:
    return alert.criterion == metric or metric.endswith("." + alert.criterion)


def _run_style(index: int) -> tuple[str, str]:
    """The colour and line style of the ``index``-th run: every colour, then each again in the next style."""
    colour = _VALUE_COLOURS[index % len(_VALUE_COLOURS)]
    return colour, _RUN_LINE_STYLES[(index // len(_VALUE_COLOURS)) % len(_RUN_LINE_STYLES)]


def _gradient_series(records: Sequence[LogRecord], runs: Sequence[str], correlation: bool) -> dict[str, LayerSeries]:
    """Per-layer gradient series; with several runs, each run's layers apart as ``run: layer``
    (layers of the same name in two runs would otherwise be merged into one line).
    """
    if len(runs) <= 1:
        return layer_series(records, correlation=correlation)
    named: dict[str, LayerSeries] = {}
    for run in runs:
        own = layer_series([r for r in records if r.run_id == run], correlation=correlation)
        named.update({f"{run}: {layer}": series for layer, series in own.items()})
    return named


def plot_records(records: Sequence[LogRecord], out: str | os.PathLike[str], *, run_id: str | None = None) -> Path:
    """Draw each metric of ``records`` over steps into the PNG ``out`` and return its path.

    What is drawn is :func:`draw_records`'s figure; the folder of ``out`` is created when
    missing.

    Raises
    ------
    ImportError
        When matplotlib is not installed (the message names the ``plot`` extra).
    InputError
        When there is neither a ``training.metric`` record with a step nor a
        gradient-geometry record to draw; when ``out`` does not end in ``.png`` or is a
        directory (checked before drawing); when the file cannot be written (details
        field ``out``).
    """
    target = check_png_path(out)
    figure = draw_records(records, run_id=run_id)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(target, dpi=110, format="png")
    except OSError as error:
        raise InputError(
            f"cannot write the plot to {str(target)!r}: {error.strerror or error}",
            details={"field": "out", "path": str(target)},
        ) from error
    return target


def check_png_path(out: str | os.PathLike[str]) -> Path:
    """``out`` as a path if it names a ``.png`` file that is not a directory, else
    :class:`InputError` (details field ``out``). matplotlib would otherwise write another
    format for another suffix, or add ``.png`` to a name without one (and overwrite that
    file while the command names another).
    """
    target = Path(out)
    wrong = "got" if target.suffix.lower() != ".png" else "a directory:" if target.is_dir() else None
    if wrong is not None:
        raise InputError(
            f"'out' must name a .png file: {wrong} {str(target)!r}", details={"field": "out", "path": str(target)}
        )
    return target


def draw_records(records: Sequence[LogRecord], *, run_id: str | None = None) -> Any:
    """The matplotlib ``Figure`` of each metric of ``records`` over steps.

    Every run in ``records`` (or only ``run_id``) gets its own line, labelled with its run
    id when there are several, so the records of several logs can be drawn together and
    compared. The threshold in force is drawn as a dashed red step line, values that
    raised an alert are marked with a red cross, and every step with an alert (in any
    run) is shaded on all panels. When the records hold output-gradient geometry
    (``training.gradients.layer`` records), a second row shows each layer's per-epoch
    line and bands, and the cosines when they were logged.

    Raises
    ------
    ImportError
        When matplotlib is not installed (the message names the ``plot`` extra).
    InputError
        When there is neither a ``training.metric`` record with a step nor a
        gradient-geometry record to draw.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError(PLOT_EXTRA_MESSAGE, name="matplotlib") from error
    runs = list(dict.fromkeys(r.run_id for r in records if run_id is None or r.run_id == run_id))
    by_run: dict[str, dict[str, MetricSeries]] = {run: metric_series(records, run_id=run) for run in runs}
    names = list(dict.fromkeys(name for series in by_run.values() for name in series))
    chosen = [r for r in records if r.run_id in runs]
    gradients = {flag: _gradient_series(chosen, runs, flag) for flag in (False, True)}
    gradient_panels = [flag for flag in (False, True) if gradients[flag]]
    if not names and not gradient_panels:
        raise InputError(
            "there is nothing to plot: no training.metric record with a step and no gradient-geometry record"
            + (f" in run {run_id!r}" if run_id else ""),
            details={"field": "records"},
        )
    figure = Figure(figsize=(12.8, 0.9), layout="constrained")
    FigureCanvasAgg(figure)
    parts = figure.subfigures(int(bool(names)) + int(bool(gradient_panels)), 1, squeeze=False)[:, 0]
    if gradient_panels:
        _draw_gradient_panels(parts[-1], {flag: gradients[flag] for flag in gradient_panels})
        figure.set_figheight(figure.get_figheight() + 3.2)
    if names:
        _draw_metric_panels(parts[0], figure, by_run=by_run, runs=runs, names=names, records=records)
    return figure


def _draw_gradient_panels(part: Any, panels: dict[bool, dict[str, LayerSeries]]) -> None:
    """Per-layer output-gradient lines and bands over epochs (magnitude, then cosine)."""
    from matplotlib.ticker import MaxNLocator

    axes = part.subplots(1, len(panels), squeeze=False)[0]
    for ax, (correlation, series) in zip(axes, panels.items()):
        draw_layer_series(ax, series)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(
            "cosine with the previous backward pass" if correlation else "output-gradient magnitude per layer",
            fontsize=10,
        )
        ax.grid(alpha=0.3)


def _draw_metric_panels(
    part: Any,
    figure: Any,
    *,
    by_run: dict[str, dict[str, MetricSeries]],
    runs: Sequence[str],
    names: Sequence[str],
    records: Sequence[LogRecord],
) -> None:
    """One panel per metric over steps, thresholds, alert marks and shaded alert spans."""
    run_alerts = {run: alerts(records, run_id=run) for run in runs}
    checked = sorted({step for series in by_run.values() for one in series.values() for step in one.steps})
    alerted = {a.step for found in run_alerts.values() for a in found if a.step is not None}
    spans = _alert_spans(checked, alerted)
    prefix = _common_prefix(names)

    columns = 1 if len(names) == 1 else 2
    rows = math.ceil(len(names) / columns)
    figure.set_figheight(figure.get_figheight() + 2.6 * rows)
    axes = part.subplots(rows, columns, squeeze=False, sharex=True)
    # Keyed by (what, label): a run named like a marker ("alert") keeps its own entry.
    handles: dict[tuple[str, str], Any] = {}
    for index, name in enumerate(names):
        ax = axes[index // columns][index % columns]
        for start, end in spans:
            shade = ax.axvspan(start, end, color=_ALERT_COLOUR, alpha=0.08, linewidth=0, zorder=0)
            handles.setdefault(("mark", "checks with alerts"), shade)
        plotted: list[float] = []
        unit = ""
        for colour_index, run in enumerate(runs):
            series = by_run[run].get(name)
            if series is None:
                continue
            unit = series.unit
            colour, style = _run_style(colour_index)
            label = run if len(runs) > 1 else "value"
            (line,) = ax.plot(
                series.steps,
                _finite_or_nan(series.values),
                color=colour,
                linestyle=style,
                marker="o",
                markersize=3,
                linewidth=1.4,
            )
            handles.setdefault(("run", label), line)
            plotted += [v for v in series.values if math.isfinite(v)]
            bounded = [(s, t) for s, t in zip(series.steps, series.thresholds) if t is not None and math.isfinite(t)]
            if bounded:
                (bound,) = ax.plot(
                    [s for s, _ in bounded],
                    [t for _, t in bounded],
                    color=_THRESHOLD_COLOUR,
                    linestyle="--",
                    linewidth=1.2,
                    drawstyle="steps-post",
                )
                handles.setdefault(("mark", "threshold"), bound)
            tripped = [a for a in run_alerts[run] if a.step is not None and _criterion_matches(a, name)]
            if tripped:
                marks = ax.scatter(
                    [a.step for a in tripped],
                    _finite_or_nan([a.value for a in tripped]),
                    color=_ALERT_COLOUR,
                    marker="x",
                    s=36,
                    linewidths=1.6,
                    zorder=5,
                )
                handles.setdefault(("mark", "alert"), marks)
        if plotted and min(plotted) > 0 and max(plotted) >= _LOG_SCALE_RATIO * min(plotted):
            ax.set_yscale("log")
        ax.set_title(name[len(prefix) + 1 :] if prefix else name, fontsize=10)
        ax.set_ylabel("" if unit == "1" else unit)
        ax.grid(alpha=0.3)
        if index // columns == rows - 1 or index + columns >= len(names):
            ax.set_xlabel("step")
            ax.tick_params(labelbottom=True)
    for index in range(len(names), rows * columns):
        axes[index // columns][index % columns].set_visible(False)
    run_text = f"run {runs[0]}" if len(runs) == 1 else f"{len(runs)} runs"
    part.suptitle(f"{prefix or 'metrics'} - {run_text}", fontsize=11)
    part.legend(
        list(handles.values()),
        [label for _, label in handles],
        loc="outside lower center",
        ncols=min(len(handles), _LEGEND_COLUMNS),
        fontsize=9,
    )
