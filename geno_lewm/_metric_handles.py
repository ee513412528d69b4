"""The GenoLeWM family's view of the registry: handles on one metric (:class:`Counter`,
:class:`Gauge`, :class:`Histogram`), the shapes of their snapshots, the default histogram
buckets by unit and the path of the Prometheus text file. :mod:`geno_lewm.metrics` gives
every public name of this module; import them from there.

:func:`geno_lewm.metrics.get_counter`, :func:`~geno_lewm.metrics.get_gauge` and
:func:`~geno_lewm.metrics.get_histogram` hand these out over the default registry, the way the
GenoLeWM family's registry code expects to hold a metric: an object with ``inc``, ``set`` or
``observe``, rather than a name passed to the registry at every call.

A handle stores nothing but the metric's name and its registry: every update goes through
the registry's own methods, so the checks they make (declared name and kind, real and finite
numbers, sums that refuse to overflow, one lock) apply to a handle's updates too, and a value
written through a handle is the one the registry's snapshots and Prometheus export show.

This module knows the registry only by the methods a handle calls (:class:`_Registry`) and
the catalogue only as a mapping it is given, so :mod:`geno_lewm.metrics` imports it and not
the reverse.
"""

from __future__ import annotations

import difflib
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar, Literal, Protocol, TypedDict

from geno_lewm._paths import default_log_dir
from geno_lewm.errors import InputError

__all__ = [
    "DEFAULT_BYTES_BUCKETS",
    "DEFAULT_MILLISECONDS_BUCKETS",
    "DEFAULT_SECONDS_BUCKETS",
    "METRICS_FILENAME",
    "Counter",
    "Gauge",
    "Histogram",
    "HistogramSnapshot",
    "MetricKind",
    "MetricSnapshot",
    "declared_as",
    "default_buckets",
    "histogram_snapshot",
    "metrics_path",
]

MetricKind = Literal["counter", "gauge", "histogram"]

DEFAULT_SECONDS_BUCKETS: tuple[float, ...] = (1e-4, 2.5e-4, 1e-3, 2.5e-3, 1e-2, 2.5e-2, 0.1, 0.25, 1.0, 2.5, 10.0)
"""Upper bounds of a histogram declared without buckets whose unit is neither milliseconds
nor bytes (the library's own timings are in seconds): 100 µs to 10 s."""

DEFAULT_MILLISECONDS_BUCKETS: tuple[float, ...] = (
    1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0, 20000.0, 60000.0
)  # fmt: skip
"""Upper bounds of a histogram in milliseconds (unit ``ms``, ``millisecond`` or
``milliseconds``) declared without buckets: a 1-2-5 ladder from 1 ms to 20 s, then one
minute, so a step, a validation pass and a checkpoint save each fall in buckets of their size."""

DEFAULT_BYTES_BUCKETS: tuple[float, ...] = tuple(float(1024 * 4**k) for k in range(11))
"""Upper bounds of a histogram in bytes (unit ``bytes``, ``byte``, ``By`` or ``B``) declared
without buckets: powers of 4 from 1 KiB to 1 GiB, eleven buckets over six orders of magnitude."""

_MILLISECOND_UNITS = frozenset({"ms", "millisecond", "milliseconds"})
_BYTE_UNITS = frozenset({"B", "By", "byte", "bytes"})

METRICS_FILENAME = "metrics.prom"
"""The name of the Prometheus text file in the log directory (see :func:`metrics_path`)."""


def default_buckets(unit: str) -> tuple[float, ...]:
    """The buckets of a histogram in ``unit`` declared without any: milliseconds and bytes get
    their own ladder, any other unit the seconds ladder.

    >>> default_buckets("ms")[:4], default_buckets("bytes")[-1] == 2**30, default_buckets("seconds")[-1]
    ((1.0, 2.0, 5.0, 10.0), True, 10.0)
    """
    if unit in _MILLISECOND_UNITS:
        return DEFAULT_MILLISECONDS_BUCKETS
    if unit in _BYTE_UNITS:
        return DEFAULT_BYTES_BUCKETS
    return DEFAULT_SECONDS_BUCKETS


def metrics_path(log_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where the Prometheus text file goes: ``<log_dir>/metrics.prom``, ``log_dir`` defaulting to
    the run logs' directory (``$GENO_LEWM_LOG_DIR``, else ``~/.geno-lewm/logs``, read at each
    call); ``~`` is expanded. Nothing is created.

    >>> metrics_path("/tmp/run-7").as_posix()
    '/tmp/run-7/metrics.prom'
    """
    if log_dir is None:
        return default_log_dir() / METRICS_FILENAME
    if not isinstance(log_dir, (str, os.PathLike)):
        raise InputError(
            f"'log_dir' must be a path: got {type(log_dir).__name__}",
            details={"field": "log_dir", "type": type(log_dir).__name__},
        )
    return Path(log_dir).expanduser() / METRICS_FILENAME


def declared_as(catalogue: Mapping[str, _Spec], name: object, kind: MetricKind) -> str:
    """``name`` if ``catalogue`` declares it a ``kind``; else :class:`InputError` saying what it
    is instead: another kind, undeclared (with the closest declared ``kind`` name, if any), or
    not a string.
    """
    spec = catalogue.get(name) if isinstance(name, str) else None
    if spec is not None and spec.kind == kind:
        return spec.name
    if spec is not None:
        found = f"a {spec.kind}"
    elif isinstance(name, str):
        close = difflib.get_close_matches(name, [n for n, s in catalogue.items() if s.kind == kind], n=1)
        found = "not declared" + (f"; did you mean {close[0]!r}?" if close else "")
    else:
        found = f"not a string but {type(name).__name__}"
    raise InputError(
        f"'name' must be a declared {kind}: got {name!r} ({found})",
        details={"field": "name", "value": name, "expected": kind, "kind": None if spec is None else spec.kind},
    )


class HistogramSnapshot(TypedDict):
    """A histogram's state at one moment, as Prometheus exports it.

    ``buckets`` are the upper bounds, ending with ``inf``; ``counts[i]`` is the number of
    observations ``<= buckets[i]`` (cumulative, so ``counts[-1] == count``); ``sum`` is the
    total of the observations and ``count`` their number.
    """

    buckets: list[float]
    counts: list[int]
    sum: float
    count: int


class MetricSnapshot(TypedDict):
    """One entry of :func:`geno_lewm.metrics.snapshot_all`: the metric's kind and its value, a
    float for a counter or a gauge, a :class:`HistogramSnapshot` for a histogram.
    """

    kind: MetricKind
    value: float | HistogramSnapshot


def histogram_snapshot(bounds: tuple[float, ...], counts: list[int], total: float, count: int) -> HistogramSnapshot:
    """A :class:`HistogramSnapshot` from a registry's per-bucket ``counts`` (one more than
    ``bounds``, the last for values above them all): counts made cumulative, ``inf`` appended.

    >>> histogram_snapshot((1.0, 5.0), [2, 0, 1], 12.5, 3)
    {'buckets': [1.0, 5.0, inf], 'counts': [2, 2, 3], 'sum': 12.5, 'count': 3}
    """
    cumulative: list[int] = []
    running = 0
    for bucket_count in counts:
        running += bucket_count
        cumulative.append(running)
    return {"buckets": [*bounds, math.inf], "counts": cumulative, "sum": total, "count": count}


class _Spec(Protocol):
    """What :func:`declared_as` reads of a :class:`geno_lewm.metrics.MetricSpec`."""

    @property
    def name(self) -> str: ...

    @property
    def kind(self) -> MetricKind: ...


class _Registry(Protocol):
    """What a handle needs of :class:`geno_lewm.metrics.MetricRegistry`."""

    def inc(self, name: str, amount: float = 1.0) -> None: ...

    def set_gauge(self, name: str, value: float) -> None: ...

    def add_to_gauge(self, name: str, amount: float = 1.0, *, subtract: bool = False) -> None: ...

    def observe(self, name: str, value: float) -> None: ...

    def value(self, name: str) -> float | None: ...

    def histogram(self, name: str) -> HistogramSnapshot: ...

    def reset(self, name: str | None = None) -> None: ...


class _Handle:
    """The part every handle shares: the metric's name, its registry and :meth:`reset`.

    :func:`geno_lewm.metrics.get_counter` and its siblings make handles over the default
    registry, checking the name first; ``Counter(name, registry)`` makes one over any
    registry, and its registry checks the name at each update.
    """

    __slots__ = ("_name", "_registry")
    kind: ClassVar[MetricKind]

    def __init__(self, name: str, registry: _Registry) -> None:
        self._name = name
        self._registry = registry

    @property
    def name(self) -> str:
        """The declared name of the metric this handle updates."""
        return self._name

    def reset(self) -> None:
        """Forget this metric's value, as if it had never been updated (the declaration stays;
        the metric leaves the snapshots and the export until its next update).
        """
        self._registry.reset(self._name)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._name!r})"


class Counter(_Handle):
    """A monotonic total: :meth:`inc` adds, :meth:`value` reads (``0.0`` before the first
    increment), :meth:`reset` starts it over.
    """

    __slots__ = ()
    kind: ClassVar[MetricKind] = "counter"

    def inc(self, amount: float = 1.0) -> None:
        """Add ``amount`` (finite, >= 0) to the total; an increment that would make the total
        infinite is refused with :class:`~geno_lewm.errors.InputError` and changes nothing.
        """
        self._registry.inc(self._name, amount)

    def value(self) -> float:
        """The total so far; ``0.0`` when nothing was added since the start or the last reset."""
        current = self._registry.value(self._name)
        return 0.0 if current is None else current


class Gauge(_Handle):
    """A value that goes up and down: :meth:`set` replaces it, :meth:`inc` and :meth:`dec`
    move it, :meth:`value` reads it (``None`` before it is first set: a gauge nobody wrote
    has no reading, and ``0.0`` would be a fabricated one).
    """

    __slots__ = ()
    kind: ClassVar[MetricKind] = "gauge"

    def set(self, value: float) -> None:
        """Make ``value`` (a real number; NaN and infinities are kept) the gauge's value."""
        self._registry.set_gauge(self._name, value)

    def inc(self, amount: float = 1.0) -> None:
        """Add ``amount`` (finite) to the value, counting from ``0.0`` when the gauge was never
        set; atomic, so concurrent calls lose nothing. A finite value that the addition would
        make infinite is refused with :class:`~geno_lewm.errors.InputError`.
        """
        self._registry.add_to_gauge(self._name, amount)

    def dec(self, amount: float = 1.0) -> None:
        """Subtract ``amount`` (finite) from the value, as :meth:`inc` adds it."""
        self._registry.add_to_gauge(self._name, amount, subtract=True)

    def value(self) -> float | None:
        """The current value; ``None`` when the gauge was never set since the start or the last reset."""
        return self._registry.value(self._name)


class Histogram(_Handle):
    """A distribution in buckets: :meth:`observe` records a value, :meth:`snapshot` reads the
    cumulative bucket counts, the sum and the count.
    """

    __slots__ = ()
    kind: ClassVar[MetricKind] = "histogram"

    def observe(self, value: float) -> None:
        """Record ``value`` (NaN refused; an infinity lands in the last or the first bucket)."""
        self._registry.observe(self._name, value)

    def snapshot(self) -> HistogramSnapshot:
        """The buckets (upper bounds, ending with ``inf``), cumulative counts, sum and count;
        all counts zero when nothing was observed since the start or the last reset.
        """
        return self._registry.histogram(self._name)
