"""Per-layer series over epochs, and how they are drawn: lines with std and min-max bands.

Reading layer: this module builds :class:`LayerSeries` from the per-layer epoch records
of a run log (the ``training.gradients.layer`` events of RFC-0009, read as mappings or as
:func:`geno_lewm.logs.read_log` records) or from rows a family hands it, and draws them
on a matplotlib Axes. It imports no metric family (the gradients family turns its own
summaries into rows) and nothing beyond the standard library until it draws.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from geno_lewm._validation import check_choice, fail

__all__ = [
    "BANDS",
    "LAYER_EVENT",
    "STATISTICS",
    "Band",
    "LayerSeries",
    "SeriesRow",
    "build_series",
    "check_bands",
    "draw_layer_series",
    "layer_series",
]

LAYER_EVENT = "training.gradients.layer"
"""The log event of one layer's epoch, as RFC-0009 writes it (the wire-format name)."""

Band = Literal["std", "minmax"]
"""A band around a line: ``std`` (line ± standard deviation) or ``minmax``."""

BANDS: tuple[Band, ...] = ("std", "minmax")
"""Every band, in the order they are drawn."""

STATISTICS: tuple[str, ...] = ("mean", "std", "min", "max", "median")
"""The aggregates a series may hold, in the order they are read."""

SeriesRow = tuple[Any, Any, Any, str, float]
"""``(layer, quantity, epoch, statistic, value)``: one aggregate of one layer's epoch."""


@dataclass(frozen=True, slots=True)
class LayerSeries:
    """One layer's per-epoch aggregates, ready to plot: ``epochs`` and, for each
    aggregate name (``mean``, ``std``, ``min``, ``max``, ``median`` when logged), the
    values in the same order; ``bands`` are the bands the monitor was asked for.
    """

    layer: str
    quantity: str
    epochs: tuple[int, ...]
    aggregates: Mapping[str, tuple[float, ...]]
    bands: tuple[Band, ...] = BANDS


def check_bands(name: str, bands: object) -> tuple[Band, ...]:
    """``bands`` as a tuple: a non-empty selection of ``"std"`` and ``"minmax"``, each once."""
    chosen = (bands,) if isinstance(bands, str) else bands
    if (
        not isinstance(chosen, (list, tuple))
        or not chosen
        or any(band not in BANDS for band in chosen)
        or len(set(chosen)) != len(chosen)
    ):
        raise fail(name, "'std', 'minmax' or both", bands)
    return tuple(band for band in BANDS if band in chosen)


def _record_fields(record: Any) -> Mapping[str, Any] | None:
    if isinstance(record, Mapping):
        return record
    dump = getattr(record, "model_dump", None)
    if callable(dump):
        dumped = dump()
        return dumped if isinstance(dumped, Mapping) else None
    return None


def _layer_records(records: Iterable[Any]) -> Iterator[Mapping[str, Any]]:
    for record in records:
        fields = _record_fields(record)
        if fields is not None and fields.get("event") == LAYER_EVENT:
            yield fields


def _rows_from_records(records: Sequence[Mapping[str, Any]], correlation: bool) -> Iterator[SeriesRow]:
    prefix = "correlation_" if correlation else ""
    for fields in records:
        quantity = "correlation" if correlation else fields.get("quantity")
        for stat in STATISTICS:
            key = prefix + stat
            if key not in fields or (stat == "median" and fields[key] is None):
                continue
            value = fields[key]
            yield fields.get("layer"), quantity, fields.get("epoch"), stat, math.nan if value is None else float(value)


def build_series(rows: Iterable[SeriesRow], bands: Iterable[str] = ()) -> dict[str, LayerSeries]:
    """Layer -> :class:`LayerSeries` from rows, in the order layers first appear; rows
    whose layer, epoch or statistic is not of the right type are skipped. ``bands`` are
    the bands asked for (all of them when none is named).
    """
    chosen = set(bands)
    ordered = tuple(band for band in BANDS if band in chosen) or BANDS
    table: dict[str, tuple[str, dict[int, dict[str, float]]]] = {}
    for layer, quantity, epoch, stat, value in rows:
        if not isinstance(layer, str) or not isinstance(epoch, int) or not isinstance(stat, str):
            continue
        _, by_epoch = table.setdefault(layer, (str(quantity), {}))
        by_epoch.setdefault(epoch, {})[stat] = value
    result = {}
    for layer, (quantity, by_epoch) in table.items():
        epochs = tuple(sorted(by_epoch))
        names = sorted({stat for stats in by_epoch.values() for stat in stats})
        aggregates = {stat: tuple(by_epoch[e].get(stat, math.nan) for e in epochs) for stat in names}
        result[layer] = LayerSeries(layer, quantity, epochs, aggregates, ordered)
    return result


def layer_series(records: Iterable[Any], *, correlation: bool = False) -> dict[str, LayerSeries]:
    """Per-layer series from the :data:`LAYER_EVENT` records of a log (mappings, or the
    objects :func:`geno_lewm.logs.read_log` yields); other records are ignored.

    With ``correlation=True`` the series are the cosines instead of the magnitudes. A
    value logged as ``null`` (a non-finite number) comes back as NaN.
    """
    chosen = list(_layer_records(records))
    bands = {band for fields in chosen if isinstance(fields.get("bands"), str) for band in fields["bands"].split("+")}
    return build_series(_rows_from_records(chosen, correlation), bands)


def draw_layer_series(
    ax: Any,
    series: Mapping[str, LayerSeries],
    *,
    line: str = "mean",
    bands: Sequence[str] | None = None,
    layers: Sequence[str] | None = None,
) -> Any:
    """Draw each layer's ``line`` (``mean`` or ``median``) over epochs with its bands in the
    line's colour: by default the bands each series was asked for, or those named in
    ``bands``. ``layers`` chooses and orders the layers drawn. Returns ``ax``.
    """
    requested = None if bands is None else check_bands("bands", bands)
    check_choice("line", line, ("mean", "median"))
    chosen = list(series) if layers is None else [name for name in layers if name in series]
    quantity = "correlation"
    for name in chosen:
        layer = series[name]
        quantity = layer.quantity
        centre = layer.aggregates.get(line)
        if centre is None:
            continue
        (drawn,) = ax.plot(layer.epochs, centre, marker="o", label=name)
        colour = drawn.get_color()
        drawn_bands = layer.bands if requested is None else requested
        if "std" in drawn_bands and "std" in layer.aggregates:
            spread = layer.aggregates["std"]
            ax.fill_between(
                layer.epochs,
                [c - s for c, s in zip(centre, spread)],
                [c + s for c, s in zip(centre, spread)],
                color=colour,
                alpha=0.25,
                linewidth=0,
            )
        if "minmax" in drawn_bands and "min" in layer.aggregates and "max" in layer.aggregates:
            ax.fill_between(
                layer.epochs, layer.aggregates["min"], layer.aggregates["max"], color=colour, alpha=0.1, linewidth=0
            )
    ax.set_xlabel("epoch")
    ax.set_ylabel(quantity)
    if chosen:
        ax.legend(title="layer", fontsize="small")
    return ax
