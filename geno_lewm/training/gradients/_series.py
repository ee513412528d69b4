"""The lens's per-layer series over epochs, from the monitor itself or from a run log, and
their drawing.

Series and drawing are the reading layer's (:mod:`geno_lewm._layer_series`); what this
module adds is turning the lens's own summaries into the same rows, so a live monitor and
a log read back plot alike.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from geno_lewm._layer_series import (
    STATISTICS,
    LayerSeries,
    SeriesRow,
    build_series,
    check_bands,
    draw_layer_series,
    layer_series,
)
from geno_lewm._validation import check_choice
from geno_lewm.training.gradients._hooks import GradientGeometry
from geno_lewm.training.gradients._summary import GradientEpochSummary

__all__ = ["gradient_series", "plot_gradient_geometry"]


def _rows_from_summaries(summaries: Iterable[GradientEpochSummary], correlation: bool) -> Iterator[SeriesRow]:
    for summary in summaries:
        for stats in summary.layers:
            aggregates = stats.correlation if correlation else stats.value
            if aggregates is None:
                continue
            quantity = "correlation" if correlation else stats.quantity
            for stat in STATISTICS:
                if stat == "median" and aggregates.median is None:
                    continue
                yield stats.layer, quantity, summary.epoch, stat, aggregates.aggregate(stat)


def gradient_series(data: Any, *, correlation: bool = False) -> dict[str, LayerSeries]:
    """Per-layer series (layer -> :class:`~geno_lewm._layer_series.LayerSeries`, output
    layer first) from a :class:`GradientGeometry`, a sequence of
    :class:`GradientEpochSummary`, or logged ``training.gradients.layer`` records
    (mappings, or the objects :func:`geno_lewm.logs.read_log` yields); other records are
    ignored.

    With ``correlation=True`` the series are the cosines instead of the magnitudes.
    A value logged as ``null`` (a non-finite number) comes back as NaN.
    """
    if isinstance(data, GradientGeometry):
        data = data.history
    items = list(data)
    if items and all(isinstance(item, GradientEpochSummary) for item in items):
        bands = {band for summary in items for band in summary.range_aggregation}
        return build_series(_rows_from_summaries(items, correlation), bands)
    return layer_series(items, correlation=correlation)


def plot_gradient_geometry(
    ax: Any,
    data: Any,
    *,
    line: str = "mean",
    bands: Sequence[str] | None = None,
    correlation: bool = False,
    layers: Sequence[str] | None = None,
) -> Any:
    """Draw per-layer lines and bands of the output-gradient geometry on a matplotlib Axes.

    For each layer (output layer first), the ``line`` aggregate (``mean`` or ``median``)
    over epochs, a ``std`` band (line ± std) and a ``minmax`` band (min to max) in the
    line's colour — by default the bands the monitor was asked for (its
    ``range_aggregation``), or those named in ``bands``. ``data`` is anything
    :func:`gradient_series` accepts: the monitor, its summaries, or the records of a
    JSON-lines log. Returns ``ax``.

    Example
    -------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import matplotlib.pyplot as plt
    >>> fig, ax = plt.subplots()
    >>> events = [
    ...     {"event": "training.gradients.layer", "layer": "fc", "quantity": "l2", "epoch": epoch,
    ...      "mean": 1.0 + epoch, "std": 0.1, "min": 0.8 + epoch, "max": 1.3 + epoch}
    ...     for epoch in (0, 1, 2)
    ... ]
    >>> plot_gradient_geometry(ax, events) is ax, len(ax.lines)
    (True, 1)
    """
    requested = None if bands is None else check_bands("bands", bands)
    check_choice("line", line, ("mean", "median"))
    series = gradient_series(data, correlation=correlation)
    return draw_layer_series(ax, series, line=line, bands=requested, layers=layers)
