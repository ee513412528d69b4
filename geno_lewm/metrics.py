"""A dependency-free, thread-safe metric registry with Prometheus text exposition.

Every metric is declared once in a catalogue (:class:`MetricSpec`: name, kind, unit,
summary), so a name cannot be used with two meanings or two spellings; each metric
family declares its own when its module is imported (this module knows no family). A registry holds
the current values; one registry per process is the default (:func:`default_registry`),
and tests or embedded uses can build their own.

Kinds: ``counter`` (monotonic, :meth:`MetricRegistry.inc`), ``gauge`` (last value,
:meth:`MetricRegistry.set_gauge`) and ``histogram`` (cumulative buckets, sum and count,
:meth:`MetricRegistry.observe`).

Two declarations never share a Prometheus name: ``a.b`` and ``a_b``, a counter ``c`` and a
metric ``c_total``, a histogram ``h`` and a metric ``h_sum`` would all export one series for
two metrics, so the second is refused when it is declared. Counters and histogram sums refuse
the update that would overflow to infinity; only a gauge set to NaN or an infinity, or an
infinite histogram observation, exports a non-finite value.

The GenoLeWM family's registry code reads this module through a small set of names, so it
runs unchanged over this package: :data:`METRICS` (the catalogue, read-only),
:func:`get_counter`, :func:`get_gauge` and :func:`get_histogram` (one cached handle per
metric over the default registry), :func:`snapshot_all` (every metric with its kind and
value), :func:`metrics_path` and :func:`export_prometheus_textfile` (the Prometheus text
file, by default ``metrics.prom`` in the run-log directory). :func:`snapshot_values` is the
flat ``{name: float}`` view.

Example
-------
>>> spec = MetricSpec("queue_depth", "gauge", "1", "Items waiting.")
>>> registry = MetricRegistry({spec.name: spec})  # its own catalogue; the default is CATALOGUE
>>> registry.set_gauge("queue_depth", 3)
>>> registry.snapshot()["queue_depth"]
3.0
>>> depth = Gauge("queue_depth", registry)  # get_gauge(name) is this over the default registry
>>> depth.inc(2)
>>> snapshot_all(registry=registry)
{'queue_depth': {'kind': 'gauge', 'value': 5.0}}
"""

from __future__ import annotations

import contextlib
import math
import numbers
import os
import re
import tempfile
import threading
from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

from geno_lewm._metric_handles import (
    DEFAULT_BYTES_BUCKETS,
    DEFAULT_MILLISECONDS_BUCKETS,
    DEFAULT_SECONDS_BUCKETS,
    METRICS_FILENAME,
    Counter,
    Gauge,
    Histogram,
    HistogramSnapshot,
    MetricKind,
    MetricSnapshot,
    declared_as,
    default_buckets,
    histogram_snapshot,
    metrics_path,
)
from geno_lewm._validation import check_choice
from geno_lewm.errors import InputError

__all__ = [
    "CATALOGUE",
    "DEFAULT_BYTES_BUCKETS",
    "DEFAULT_MILLISECONDS_BUCKETS",
    "DEFAULT_SECONDS_BUCKETS",
    "METRICS",
    "METRICS_FILENAME",
    "METRIC_NAMESPACE",
    "Counter",
    "Gauge",
    "Histogram",
    "HistogramSnapshot",
    "MetricKind",
    "MetricRegistry",
    "MetricSnapshot",
    "MetricSpec",
    "declare_metric",
    "declare_metrics",
    "default_registry",
    "export_prometheus_textfile",
    "get_counter",
    "get_gauge",
    "get_histogram",
    "metrics_path",
    "prometheus_name",
    "snapshot_all",
    "snapshot_values",
]


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """The declaration of one metric: what it is called, measures, and in which unit.

    A histogram declared without ``buckets`` gets its unit's ladder:
    :data:`DEFAULT_MILLISECONDS_BUCKETS`, :data:`DEFAULT_BYTES_BUCKETS`, else
    :data:`DEFAULT_SECONDS_BUCKETS`.
    """

    name: str
    kind: MetricKind
    unit: str
    summary: str
    buckets: tuple[float, ...] = field(default=())

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.]*", self.name):
            raise InputError(
                f"'name' must be dotted identifiers: got {self.name!r}", details={"field": "name", "value": self.name}
            )
        check_choice("kind", self.kind, ("counter", "gauge", "histogram"))
        if self.kind == "histogram":
            buckets = self.buckets or default_buckets(self.unit)
            if list(buckets) != sorted(set(buckets)) or not all(math.isfinite(b) for b in buckets):
                raise InputError(
                    f"'buckets' must be strictly increasing finite numbers: got {buckets!r}",
                    details={"field": "buckets", "value": buckets},
                )
            object.__setattr__(self, "buckets", tuple(float(b) for b in buckets))


_NOT_IN_PROMETHEUS_NAMES = re.compile(r"[^A-Za-z0-9_:]")
"""What :func:`prometheus_name` replaces by ``_``; compiled once, as every declaration and export uses it."""

_HISTOGRAM_SAMPLE_SUFFIXES = ("_bucket", "_sum", "_count")
"""The samples of a histogram family, appended to its family name, in the order they are written."""

METRIC_NAMESPACE = "geno_lewm.training"
"""The namespace of the library's own metric names: a family's metrics are called
``geno_lewm.training.<family>.<metric>``. A stable string, not a module path."""

CATALOGUE: dict[str, MetricSpec] = {}
"""Every declared metric, by name. Extend it with :func:`declare_metric` (which also keeps the
Prometheus names unique); writing to it directly skips both checks."""
METRICS: Mapping[str, MetricSpec] = MappingProxyType(CATALOGUE)
""":data:`CATALOGUE` read-only, under the name the GenoLeWM family reads: the same specs, later
declarations included, but no way to write past :func:`declare_metric`'s checks."""
_CATALOGUE_SERIES: dict[str, str] = {}
"""Prometheus name -> the declared metric that owns it, for every name of :data:`CATALOGUE`'s
metrics (see :func:`_claimed_names`), so a declaration checks a few names, not every metric."""
_CATALOGUE_LOCK = threading.Lock()


def declare_metric(spec: MetricSpec) -> MetricSpec:
    """Add ``spec`` to :data:`CATALOGUE`; declaring the same spec twice is harmless.

    Raises :class:`InputError` when the name is already declared differently, or when the
    export would write one of ``spec``'s Prometheus names for another declared metric too
    (``a.b`` next to ``a_b``, a counter ``c`` next to a metric ``c_total``, a histogram ``h``
    next to a metric ``h_sum``): two metrics would become one series. A refused declaration
    changes nothing.
    """
    declare_metrics((spec,))
    return spec


def declare_metrics(specs: Iterable[MetricSpec]) -> tuple[MetricSpec, ...]:
    """Declare several metrics at once, all or none: each is checked as
    :func:`declare_metric` checks it, against the catalogue and against the others, before
    any is added. A family or callback that declares its gauges together so never leaves
    half of them behind when one is refused.
    """
    chosen = tuple(specs)
    with _CATALOGUE_LOCK:
        pending: dict[str, str] = {}
        fresh: dict[str, MetricSpec] = {}
        for spec in chosen:
            existing = CATALOGUE.get(spec.name, fresh.get(spec.name))
            if existing is not None:
                if existing != spec:
                    raise InputError(
                        f"metric {spec.name!r} is already declared differently: {existing!r}",
                        details={"field": "name", "value": spec.name},
                    )
                continue
            for series in _claimed_names(spec):
                owner = _CATALOGUE_SERIES.get(series, pending.get(series, spec.name))
                if owner != spec.name:
                    raise _collision(spec.name, owner, series)
            for series in _claimed_names(spec):
                pending[series] = spec.name
            fresh[spec.name] = spec
        _CATALOGUE_SERIES.update(pending)
        CATALOGUE.update(fresh)
    return chosen


def prometheus_name(spec: MetricSpec) -> str:
    """The Prometheus family name of ``spec``: dots and other symbols become ``_``,
    counters end in ``_total`` and a ``seconds`` unit is appended when missing.
    """
    name = _NOT_IN_PROMETHEUS_NAMES.sub("_", spec.name)
    if spec.unit == "seconds" and not name.endswith("_seconds"):
        name += "_seconds"
    if spec.kind == "counter" and not name.endswith("_total"):
        name += "_total"
    return name


def _claimed_names(spec: MetricSpec) -> tuple[str, ...]:
    """Every Prometheus name the export of ``spec`` uses: its family name, its sample names
    and, for a counter, the family name without ``_total``.

    That last one is not written, but it is the counter's family name in OpenMetrics and in
    prometheus_client's parser, so a gauge ``c`` next to a counter ``c`` (read back as two
    families ``c``) is a collision too, as prometheus_client's own registry judges it.
    """
    family = prometheus_name(spec)
    if spec.kind == "histogram":
        return (family, *(family + suffix for suffix in _HISTOGRAM_SAMPLE_SUFFIXES))
    if spec.kind == "counter":
        return (family, family.removesuffix("_total"))
    return (family,)


def _collision(name: str, owner: str, series: str) -> InputError:
    return InputError(
        f"metric {name!r} collides with metric {owner!r}: both would be exported as {series!r}; give one of them "
        "another name",
        details={"field": "name", "value": name, "series": series, "collides_with": owner},
    )


def _claim_names(spec: MetricSpec, owners: dict[str, str]) -> None:
    """Record in ``owners`` (Prometheus name -> metric name) that ``spec`` owns its names, or
    raise :class:`InputError`, leaving ``owners`` as it was, when another metric owns one.
    """
    names = _claimed_names(spec)
    for series in names:
        owner = owners.get(series, spec.name)
        if owner != spec.name:
            raise _collision(spec.name, owner, series)
    for series in names:
        owners[series] = spec.name


def _format_value(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _as_float(name: str, value: Any) -> float:
    """``value`` as a float: a real number or a one-element tensor-like (bools, strings,
    complex numbers and ``None`` refused; an int too large for a float becomes +/-inf).
    """
    if type(value) is float:
        return value
    refused = isinstance(value, (bool, str, bytes)) or value is None or type(value).__name__ in ("bool", "bool_")
    if not refused and not (isinstance(value, numbers.Complex) and not isinstance(value, numbers.Real)):
        try:
            return float(value)
        except OverflowError:
            return math.inf if value > 0 else -math.inf
        except (TypeError, ValueError, RuntimeError):
            pass
    raise InputError(
        f"{name!r} must be a real number: got {value!r}",
        details={"field": name, "value": value, "type": type(value).__name__},
    )


@dataclass(slots=True)
class _Histogram:
    bounds: tuple[float, ...]
    counts: list[int]
    total: float = 0.0
    count: int = 0


class MetricRegistry:
    """Current values of declared metrics; every method is safe to call from any thread.

    Parameters
    ----------
    catalogue:
        The declarations to accept; :data:`CATALOGUE` (read at each access, so metrics
        declared later are accepted) when omitted.

    Raises
    ------
    InputError
        When two specs of ``catalogue`` would be exported under one Prometheus name (as
        :func:`declare_metric` refuses for :data:`CATALOGUE`).
    """

    def __init__(self, catalogue: Mapping[str, MetricSpec] | None = None) -> None:
        self._catalogue = CATALOGUE if catalogue is None else dict(catalogue)
        if catalogue is not None:
            owners: dict[str, str] = {}
            for spec in self._catalogue.values():
                _claim_names(spec, owners)
        self._lock = threading.Lock()
        self._values: dict[str, float] = {}
        self._histograms: dict[str, _Histogram] = {}

    def _spec(self, name: str, kind: MetricKind | None) -> MetricSpec:
        spec = self._catalogue.get(name)
        if spec is None:
            raise InputError(
                f"unknown metric {name!r}: declare it with geno_lewm.metrics.declare_metric first",
                details={"field": "name", "value": name},
            )
        if kind is not None and spec.kind != kind:
            raise InputError(
                f"metric {name!r} is a {spec.kind}, not a {kind}", details={"field": "name", "value": name}
            )
        return spec

    def set_gauge(self, name: str, value: float) -> None:
        """Set gauge ``name`` to ``value`` (NaN and infinities are kept as they are)."""
        self._spec(name, "gauge")
        number = _as_float("value", value)
        with self._lock:
            self._values[name] = number

    def inc(self, name: str, amount: float = 1.0) -> None:
        """Add ``amount`` (>= 0) to counter ``name``.

        An increment that would overflow the total to infinity (two of ``1e308``) is refused
        with :class:`InputError` and the counter keeps its value: a counter stays finite, so
        its export never reads ``+Inf``.
        """
        self._spec(name, "counter")
        number = _as_float("amount", amount)
        if not number >= 0 or not math.isfinite(number):
            raise InputError(
                f"'amount' must be finite and >= 0: got {amount!r}", details={"field": "amount", "value": amount}
            )
        with self._lock:
            current = self._values.get(name, 0.0)
            total = current + number
            if math.isinf(total):
                raise InputError(
                    f"'amount' must keep counter {name!r} finite: got {number!r}, and its total "
                    f"{current!r} + {number!r} is not finite",
                    details={"field": "amount", "value": amount, "metric": name},
                )
            self._values[name] = total

    def add_to_gauge(self, name: str, amount: float = 1.0, *, subtract: bool = False) -> None:
        """Add ``amount`` (finite, either sign) to gauge ``name``, or subtract it with ``subtract``,
        counting from ``0.0`` when the gauge was never set. Read and write happen under one
        lock, so concurrent additions lose nothing.

        An addition that would take a finite value to an infinity is refused with
        :class:`InputError` and the gauge keeps its value (a gauge set to NaN or an infinity
        keeps it: adding a finite amount does not change it).
        """
        self._spec(name, "gauge")
        number = _as_float("amount", amount)
        if not math.isfinite(number):
            raise InputError(f"'amount' must be finite: got {amount!r}", details={"field": "amount", "value": amount})
        change = -number if subtract else number
        with self._lock:
            current = self._values.get(name, 0.0)
            result = current + change
            if math.isinf(result) and math.isfinite(current):
                raise InputError(
                    f"'amount' must keep gauge {name!r} finite: got {number!r}, and {current!r} "
                    f"{'-' if subtract else '+'} {number!r} is not finite",
                    details={"field": "amount", "value": amount, "metric": name},
                )
            self._values[name] = result

    def observe(self, name: str, value: float) -> None:
        """Record one observation ``value`` in histogram ``name``.

        NaN is refused. An infinite observation is counted (``inf`` in the ``+Inf`` bucket,
        ``-inf`` in the first) and makes the sum infinite, as Prometheus's own clients do, so
        the export's ``_sum`` is infinite only after an infinite observation. Refused with
        :class:`InputError`, counting nothing: a finite observation that would overflow a
        finite sum (two of ``1e308``), and the opposite infinity of an infinite sum (NaN).
        """
        spec = self._spec(name, "histogram")
        number = _as_float("value", value)
        if math.isnan(number):
            raise InputError("'value' must not be NaN: got nan", details={"field": "value", "value": value})
        with self._lock:
            histogram = self._histograms.get(name)
            current = 0.0 if histogram is None else histogram.total
            total = current + number
            if math.isnan(total):  # the opposite infinity of an infinite sum
                raise InputError(
                    f"'value' must not cancel the infinite sum of histogram {name!r}: got {number!r}, and its "
                    f"sum {current!r} + {number!r} is NaN",
                    details={"field": "value", "value": value, "metric": name},
                )
            if math.isinf(total) and math.isfinite(current) and math.isfinite(number):
                raise InputError(
                    f"'value' must keep the sum of histogram {name!r} finite: got {number!r}, and its sum "
                    f"{current!r} + {number!r} is not finite",
                    details={"field": "value", "value": value, "metric": name},
                )
            if histogram is None:
                histogram = _Histogram(spec.buckets, [0] * (len(spec.buckets) + 1))
                self._histograms[name] = histogram
            histogram.counts[bisect_left(histogram.bounds, number)] += 1
            histogram.total = total
            histogram.count += 1

    def value(self, name: str) -> float | None:
        """Current value of a counter or gauge; ``None`` if it was never set."""
        with self._lock:
            return self._values.get(name)

    def histogram(self, name: str) -> HistogramSnapshot:
        """The state of histogram ``name``: its buckets (upper bounds, ending with ``inf``), the
        cumulative count of each, the sum and the count; zeros when nothing was observed.
        """
        spec = self._spec(name, "histogram")
        with self._lock:
            histogram = self._histograms.get(name)
            if histogram is None:
                return histogram_snapshot(spec.buckets, [0] * (len(spec.buckets) + 1), 0.0, 0)
            return histogram_snapshot(histogram.bounds, histogram.counts, histogram.total, histogram.count)

    def snapshot_all(self) -> dict[str, MetricSnapshot]:
        """Name -> kind and value of every metric that has one, sorted by name, read at one instant.

        The value is a float for a counter or a gauge and a :class:`HistogramSnapshot` for a
        histogram. A metric never updated since the start or its last reset is absent, as it
        is from :meth:`snapshot` and the export (so a gauge's value is never ``None``).
        """
        result: dict[str, MetricSnapshot] = {}
        with self._lock:
            for name, number in self._values.items():
                result[name] = {"kind": self._catalogue[name].kind, "value": number}
            for name, h in self._histograms.items():
                result[name] = {"kind": "histogram", "value": histogram_snapshot(h.bounds, h.counts, h.total, h.count)}
        return dict(sorted(result.items()))

    def snapshot(self) -> dict[str, float]:
        """Name -> current value of every metric that has one.

        A histogram appears as two entries, ``<name>.count`` and ``<name>.sum``.
        """
        with self._lock:
            result = dict(self._values)
            for name, histogram in self._histograms.items():
                result[f"{name}.count"] = float(histogram.count)
                result[f"{name}.sum"] = histogram.total
        return dict(sorted(result.items()))

    def reset(self, name: str | None = None) -> None:
        """Forget every value, or only the value of metric ``name`` (which must be declared);
        the declarations stay.
        """
        if name is not None:
            self._spec(name, None)
        with self._lock:
            if name is None:
                self._values.clear()
                self._histograms.clear()
            else:
                self._values.pop(name, None)
                self._histograms.pop(name, None)

    def to_prometheus(self) -> str:
        """The registry in Prometheus text exposition format 0.0.4."""
        with self._lock:
            values = dict(self._values)
            histograms = {k: (h.bounds, list(h.counts), h.total, h.count) for k, h in self._histograms.items()}
        lines: list[str] = []
        for name in sorted(set(values) | set(histograms)):
            spec = self._catalogue[name]
            family = prometheus_name(spec)
            lines.append(f"# HELP {family} {_escape_help(spec.summary)}")
            lines.append(f"# TYPE {family} {spec.kind}")
            if spec.kind == "histogram":
                bounds, counts, total, count = histograms[name]
                bucket, sum_, count_ = (family + suffix for suffix in _HISTOGRAM_SAMPLE_SUFFIXES)
                cumulative = 0
                for bound, bucket_count in zip((*bounds, math.inf), counts):
                    cumulative += bucket_count
                    lines.append(f'{bucket}{{le="{_format_value(bound)}"}} {cumulative}')
                lines.append(f"{sum_} {_format_value(total)}")
                lines.append(f"{count_} {count}")
            else:
                lines.append(f"{family} {_format_value(values[name])}")
        return "\n".join(lines) + "\n" if lines else ""

    def export_prometheus_textfile(self, path: str | os.PathLike[str]) -> Path:
        """Write :meth:`to_prometheus` to ``path`` atomically (temporary file, then
        ``os.replace``), as the node_exporter textfile collector expects. Returns the path
        (``~`` expanded, as :func:`metrics_path` does).

        Raises :class:`InputError`, writing nothing, when ``path`` is not a path or names an
        existing directory (which the file cannot replace).
        """
        if not isinstance(path, (str, os.PathLike)):
            raise InputError(
                f"'path' must be a file path: got {type(path).__name__}",
                details={"field": "path", "type": type(path).__name__},
            )
        target = Path(path).expanduser()
        if target.is_dir():
            raise InputError(
                f"'path' must name the Prometheus text file, not a directory: {str(target)!r} is a directory "
                f"(metrics_path({str(target)!r}) names the file in it)",
                details={"field": "path", "value": str(target)},
            )
        target.parent.mkdir(parents=True, exist_ok=True)
        text = self.to_prometheus()
        handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as stream:
                stream.write(text)
                stream.flush()
                os.fsync(stream.fileno())
            # mkstemp creates the file readable by its owner only; a collector running as
            # another user must be able to read the exposition.
            os.chmod(temporary, 0o644)
            os.replace(temporary, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
        return target


_DEFAULT = MetricRegistry()


def default_registry() -> MetricRegistry:
    """The process-wide registry that monitors write to unless given another."""
    return _DEFAULT


def snapshot_all(*, registry: MetricRegistry | None = None) -> dict[str, MetricSnapshot]:
    """Every metric of the default (or given) registry that has a value, with its kind:
    ``{name: {"kind": ..., "value": ...}}``, the value a float for a counter or a gauge and a
    :class:`HistogramSnapshot` (buckets, cumulative counts, sum, count) for a histogram.

    A metric never updated since the start or its last reset is absent (a never-set gauge
    has no reading to show), so every counter's and gauge's value is a float. See
    :meth:`MetricRegistry.snapshot_all`; :func:`snapshot_values` is the flat float view.
    """
    return (_DEFAULT if registry is None else registry).snapshot_all()


def snapshot_values(*, registry: MetricRegistry | None = None) -> dict[str, float]:
    """:meth:`MetricRegistry.snapshot` of the default (or given) registry: ``{name: float}``,
    a histogram as ``<name>.count`` and ``<name>.sum``; for code that wants plain numbers.
    """
    return (_DEFAULT if registry is None else registry).snapshot()


_HandleT = TypeVar("_HandleT", Counter, Gauge, Histogram)

_COUNTERS: dict[str, Counter] = {}
_GAUGES: dict[str, Gauge] = {}
_HISTOGRAMS: dict[str, Histogram] = {}
_HANDLES_LOCK = threading.Lock()
"""Guards the three handle caches, so two threads asking for one name get one object."""


def _cached(
    cache: dict[str, _HandleT], name: object, kind: MetricKind, make: Callable[[str, MetricRegistry], _HandleT]
) -> _HandleT:
    """The handle of ``name`` from ``cache``, made over the default registry on first use."""
    declared = declared_as(CATALOGUE, name, kind)
    with _HANDLES_LOCK:
        handle = cache.get(declared)
        if handle is None:
            handle = cache[declared] = make(declared, _DEFAULT)
    return handle


def get_counter(name: str) -> Counter:
    """The :class:`Counter` of the declared counter ``name`` over the default registry; the same
    object at every call for one name.

    Raises :class:`InputError` (``details["field"] == "name"``) when ``name`` is not declared
    or is declared as another kind.

    >>> get_counter("no.such.metric")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    geno_lewm.errors.InputError: 'name' must be a declared counter: got 'no.such.metric' (not declared...)
    """
    return _cached(_COUNTERS, name, "counter", Counter)


def get_gauge(name: str) -> Gauge:
    """The :class:`Gauge` of the declared gauge ``name`` over the default registry; the same
    object at every call for one name. Raises :class:`InputError` as :func:`get_counter` does.
    """
    return _cached(_GAUGES, name, "gauge", Gauge)


def get_histogram(name: str) -> Histogram:
    """The :class:`Histogram` of the declared histogram ``name`` over the default registry; the
    same object at every call for one name. Raises :class:`InputError` as :func:`get_counter` does.
    """
    return _cached(_HISTOGRAMS, name, "histogram", Histogram)


def export_prometheus_textfile(
    path: str | os.PathLike[str] | None = None, *, registry: MetricRegistry | None = None
) -> Path:
    """Write the default (or given) registry in Prometheus text format to ``path``, by default
    :func:`metrics_path` (the log directory's ``metrics.prom``), atomically: see
    :meth:`MetricRegistry.export_prometheus_textfile`. Returns the path written.
    """
    target = metrics_path() if path is None else path
    return (_DEFAULT if registry is None else registry).export_prometheus_textfile(target)
