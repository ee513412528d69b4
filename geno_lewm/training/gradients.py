"""Output-gradient geometry: how large the gradient reaching each layer's output is, and
how it turns from one backward pass to the next.

:class:`GradientGeometry` watches the leaf modules of a torch model (activation modules
skipped by default). On every backward pass it records, per layer, the L2 norm of the
gradient with respect to the layer's output — or its RMS (norm / sqrt(numel)), either
optionally in log10 — and, when asked, the cosine between this gradient and the one the
layer received on the previous backward pass. :meth:`GradientGeometry.end_epoch`
aggregates the epoch per layer into a line (mean, or median) and bands (std, min-max),
returned as data, set as registry gauges, logged as events, and drawn by
:func:`plot_gradient_geometry`. Layers are listed output layer first.

How the gradients are caught: a forward hook registers a gradient hook on the layer's
output tensor. Unlike ``register_full_backward_hook`` this does not wrap the output in a
custom autograd function, so models with in-place activations (``ReLU(inplace=True)``)
work unchanged, and the gradient seen is the one with respect to the value the layer
returned, before any in-place change.

Cost and memory: each backward pass adds one norm reduction per layer (and for the
correlation one dot product); the values stay on the device and come back to the host in
one transfer per device every :data:`FLUSH_EVERY` records and at the end of an epoch.
The correlation needs the previous gradient of every layer. A gradient with at most
``correlation_sketch_size`` elements is kept as it is (exact cosine); a larger one is
kept as a sign-randomised count sketch of exactly ``correlation_sketch_size`` float32
values, whose cosine estimates the true one without bias (error about
``1 / sqrt(correlation_sketch_size)``). The state is therefore bounded by
``layers * correlation_sketch_size * 4`` bytes (16 MiB for 64 layers at the default
65,536); ``correlation_sketch_size=None`` keeps full gradients (exact, as much memory as
one set of activations). :attr:`GradientGeometry.correlation_state_bytes` says what is
held. Definitions: ``rfcs/0009-training-dynamics.md``.

Example
-------
>>> import torch
>>> model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
>>> with GradientGeometry(model, normalize_by_size=True) as geometry:
...     for _ in range(3):
...         model(torch.randn(5, 3)).sum().backward()
...     summary = geometry.end_epoch()
>>> [(s.layer, s.value.count) for s in summary.layers]
[('2', 3), ('0', 3)]
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from geno_lewm._events import FieldSpec, declare_event
from geno_lewm._protocols import MetricLogger
from geno_lewm._torch import require_torch
from geno_lewm._validation import check_non_negative_int, check_positive_int
from geno_lewm.errors import InputError
from geno_lewm.metrics import MetricRegistry, MetricSpec, declare_metric, default_registry

if TYPE_CHECKING:
    import torch

__all__ = [
    "FLUSH_EVERY",
    "LAYER_EVENT",
    "GradientEpochSummary",
    "GradientGeometry",
    "LayerGradientStats",
    "LayerSeries",
    "SeriesStats",
    "gradient_metric_name",
    "gradient_series",
    "plot_gradient_geometry",
]

_PREFIX = "geno_lewm.training.gradients"

FLUSH_EVERY = 4096
"""Records held on the device before they are brought to the host in one transfer."""

DEFAULT_SKETCH_SIZE = 65536

LineAggregation = Literal["mean", "median"]
RangeAggregation = Literal["std", "minmax"]
_BAND_STATS: dict[str, tuple[str, ...]] = {"std": ("std",), "minmax": ("min", "max")}
_ALL_BANDS: tuple[RangeAggregation, ...] = ("std", "minmax")
_STATS = ("mean", "std", "min", "max")

LAYER_EVENT = "training.gradients.layer"
"""The log event of one layer's epoch: its line and bands (fields declared below)."""


def _number(description: str, *, nullable: bool = False) -> FieldSpec:
    return FieldSpec("number", required=not nullable, nullable=nullable, description=description)


declare_event(
    LAYER_EVENT,
    summary="One layer's output-gradient geometry over one epoch: a line and bands.",
    fields={
        "layer": FieldSpec("string", required=True, description="Module name in the unwrapped model"),
        "quantity": FieldSpec(
            "string",
            required=True,
            choices=("l2", "rms", "log10_l2", "log10_rms"),
            description="What was measured per backward pass",
        ),
        "epoch": FieldSpec("integer", required=True, description="Epoch number"),
        "line": FieldSpec("string", required=True, choices=("mean", "median"), description="The line's aggregate"),
        "bands": FieldSpec(
            "string",
            choices=("std", "minmax", "std+minmax"),
            description="The bands the monitor was asked for (range_aggregation); every statistic is logged",
        ),
        "count": FieldSpec("integer", required=True, description="Finite values aggregated"),
        "mean": _number("Mean of the values"),
        "std": _number("Population standard deviation of the values"),
        "min": _number("Smallest value"),
        "max": _number("Largest value"),
        "median": _number("Median of the values (kept values only)", nullable=True),
        "nonfinite": FieldSpec("integer", required=True, description="Passes with a NaN or infinite value"),
        "zeros": FieldSpec("integer", required=True, description="Zero gradients left out of a log scale"),
        "correlation_count": FieldSpec("integer", description="Cosines aggregated"),
        "correlation_mean": _number("Mean cosine with the previous pass's gradient", nullable=True),
        "correlation_std": _number("Population standard deviation of the cosines", nullable=True),
        "correlation_min": _number("Smallest cosine", nullable=True),
        "correlation_max": _number("Largest cosine", nullable=True),
        "correlation_skipped": FieldSpec("integer", description="Passes whose gradient changed shape"),
    },
)


def _check_bands(name: str, bands: object) -> tuple[str, ...]:
    """``bands`` as a tuple: a non-empty selection of ``"std"`` and ``"minmax"``, each once."""
    chosen = (bands,) if isinstance(bands, str) else bands
    if (
        not isinstance(chosen, (list, tuple))
        or not chosen
        or any(band not in _ALL_BANDS for band in chosen)
        or len(set(chosen)) != len(chosen)
    ):
        raise InputError(
            f"{name!r} must be 'std', 'minmax' or both: got {bands!r}", details={"field": name, "value": bands}
        )
    return tuple(band for band in _ALL_BANDS if band in chosen)


# --------------------------------------------------------------------- results
@dataclass(frozen=True, slots=True)
class SeriesStats:
    """Aggregates of the finite values one layer recorded in one epoch.

    ``std`` is the population standard deviation (divide by ``count``). When ``count`` is
    0 every aggregate is NaN (the layer received only non-finite values). ``median`` and
    ``values`` are present only when the values were kept (``keep_values=True``).
    """

    count: int
    mean: float
    std: float
    min: float
    max: float
    median: float | None = None
    values: tuple[float, ...] | None = None

    def aggregate(self, name: str) -> float:
        """The aggregate called ``name`` (``mean``, ``std``, ``min``, ``max``, ``median``)."""
        if name == "median":
            if self.median is None:
                raise InputError(
                    "the median needs the values: build GradientGeometry with keep_values=True",
                    details={"field": "line_aggregation", "value": name},
                )
            return self.median
        if name not in _STATS:
            raise InputError(
                f"'name' must be one of 'mean', 'std', 'min', 'max', 'median': got {name!r}",
                details={"field": "name", "value": name},
            )
        value: float = getattr(self, name)
        return value


@dataclass(frozen=True, slots=True)
class LayerGradientStats:
    """One layer's epoch: its output-gradient magnitudes and, optionally, correlations.

    Attributes
    ----------
    layer:
        The module's name in the (unwrapped) model, ``"root"`` for a model that is itself
        a leaf.
    quantity:
        What was measured: ``l2``, ``rms``, ``log10_l2`` or ``log10_rms``.
    value:
        Aggregates of the per-backward-pass magnitudes.
    correlation:
        Aggregates of the cosines with the previous pass's gradient; ``None`` when the
        correlation is not computed.
    nonfinite:
        Passes whose gradient norm (or cosine) was NaN or infinite, left out of the
        aggregates and counted here instead.
    zeros:
        In log scale, passes with a zero gradient (log10 of 0 is not a number), left out
        of the aggregates and counted here; always 0 in linear scale.
    correlation_skipped:
        Passes whose gradient had a different shape from the previous one (e.g. a
        smaller last batch), so no cosine was defined.
    """

    layer: str
    quantity: str
    value: SeriesStats
    correlation: SeriesStats | None
    nonfinite: int = 0
    zeros: int = 0
    correlation_skipped: int = 0


@dataclass(frozen=True, slots=True)
class GradientEpochSummary:
    """The per-layer aggregates of one epoch, output layer first.

    ``layers`` holds the watched layers that received at least one gradient this epoch;
    ``silent_layers`` the others (e.g. frozen or unused branches).
    """

    epoch: int
    step: int | None
    quantity: str
    line_aggregation: str
    layers: tuple[LayerGradientStats, ...]
    silent_layers: tuple[str, ...] = ()
    range_aggregation: tuple[str, ...] = _ALL_BANDS

    def layer(self, name: str) -> LayerGradientStats:
        """The statistics of layer ``name``; :class:`InputError` if it has none this epoch."""
        for stats in self.layers:
            if stats.layer == name:
                return stats
        raise InputError(
            f"no gradient statistics for layer {name!r} in epoch {self.epoch}",
            details={"field": "name", "value": name},
        )


# -------------------------------------------------------------- accumulation
class _Running:
    """Welford's running mean and sum of squared deviations, with min, max and
    optionally every value.
    """

    __slots__ = ("count", "high", "low", "m2", "mean", "values")

    def __init__(self, keep_values: bool) -> None:
        self.count = 0
        self.mean = 0.0
        self.m2 = 0.0
        self.low = math.inf
        self.high = -math.inf
        self.values: list[float] | None = [] if keep_values else None

    def add(self, value: float) -> None:
        self.count += 1
        delta = value - self.mean
        self.mean += delta / self.count
        self.m2 += delta * (value - self.mean)
        self.low = min(self.low, value)
        self.high = max(self.high, value)
        if self.values is not None:
            self.values.append(value)

    def stats(self) -> SeriesStats:
        if self.count == 0:
            nan = math.nan
            if self.values is None:
                return SeriesStats(0, nan, nan, nan, nan)
            return SeriesStats(0, nan, nan, nan, nan, nan, ())
        median = None
        values = None
        if self.values is not None:
            values = tuple(self.values)
            ordered = sorted(values)
            middle = len(ordered) // 2
            median = ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2
        std = math.sqrt(max(self.m2, 0.0) / self.count)
        return SeriesStats(self.count, self.mean, std, self.low, self.high, median, values)


class _Layer:
    """What is watched and accumulated for one module."""

    __slots__ = (
        "correlation",
        "correlation_skipped",
        "key",
        "name",
        "nonfinite",
        "previous",
        "previous_shape",
        "received",
        "seed",
        "value",
        "zeros",
    )

    def __init__(self, name: str, key: str, seed: int, keep_values: bool) -> None:
        self.name = name
        self.key = key
        self.seed = seed
        self.previous: Any = None
        self.previous_shape: tuple[int, ...] | None = None
        self.value = _Running(keep_values)
        self.correlation = _Running(keep_values)
        self.nonfinite = 0
        self.zeros = 0
        self.correlation_skipped = 0
        self.received = 0

    def reset(self, keep_values: bool) -> None:
        self.value = _Running(keep_values)
        self.correlation = _Running(keep_values)
        self.nonfinite = self.zeros = self.correlation_skipped = self.received = 0


def _first_tensor(output: Any, torch: Any) -> Any:
    """The tensor a layer returned: the output itself, else the first tensor found
    depth-first in a tuple, list or mapping.
    """
    if isinstance(output, torch.Tensor):
        return output
    items: Iterable[Any] = ()
    if isinstance(output, (tuple, list)):
        items = output
    elif isinstance(output, Mapping):
        items = output.values()
    for item in items:
        found = _first_tensor(item, torch)
        if found is not None:
            return found
    return None


def _metric_key(name: str) -> str:
    """A module name as a metric-name segment: every character outside ``[A-Za-z0-9_.]``
    becomes ``_`` and empty dot-separated parts become ``_``.
    """
    parts = [re.sub(r"[^A-Za-z0-9_]", "_", part) or "_" for part in name.split(".")]
    return ".".join(parts)


def _layer_event_fields(summary: GradientEpochSummary, stats: LayerGradientStats) -> dict[str, Any]:
    """The fields of the :data:`LAYER_EVENT` record of one layer's epoch."""
    value = stats.value
    fields: dict[str, Any] = {
        "layer": stats.layer,
        "quantity": stats.quantity,
        "epoch": summary.epoch,
        "line": summary.line_aggregation,
        "bands": "+".join(summary.range_aggregation),
        "count": value.count,
        "mean": value.mean,
        "std": value.std,
        "min": value.min,
        "max": value.max,
        "median": value.median,
        "nonfinite": stats.nonfinite,
        "zeros": stats.zeros,
    }
    correlation = stats.correlation
    if correlation is not None:
        fields.update(
            correlation_count=correlation.count,
            correlation_mean=correlation.mean,
            correlation_std=correlation.std,
            correlation_min=correlation.min,
            correlation_max=correlation.max,
            correlation_skipped=stats.correlation_skipped,
        )
    return fields


def gradient_metric_name(layer_key: str, quantity: str, stat: str) -> str:
    """Registry name of one aggregate of one layer, e.g.
    ``geno_lewm.training.gradients.encoder.0.rms.mean`` (``quantity`` is ``correlation``
    for the cosines).
    """
    return f"{_PREFIX}.{layer_key}.{quantity}.{stat}"


def _unwrap(model: Any, torch: Any) -> Any:
    """The module inside (possibly nested) DistributedDataParallel / DataParallel wrappers."""
    wrappers = tuple(
        cls
        for cls in (getattr(torch.nn.parallel, "DistributedDataParallel", None), torch.nn.DataParallel)
        if cls is not None
    )
    while isinstance(model, wrappers):
        model = model.module
    return model


def _is_activation(module: Any) -> bool:
    """Whether ``module`` is an activation function: defined in ``torch.nn.modules.activation``
    and a leaf (``MultiheadAttention`` lives there too but has children).
    """
    return type(module).__module__ == "torch.nn.modules.activation" and not any(True for _ in module.children())


# --------------------------------------------------------------------- monitor
class GradientGeometry:
    """Record the output-gradient geometry of a torch model's layers on every backward pass.

    Parameters
    ----------
    model:
        A ``torch.nn.Module``; DistributedDataParallel and DataParallel wrappers are
        unwrapped, so layer names are those of the inner model.
    normalize_by_size:
        Record the RMS, ``||g|| / sqrt(numel(g))``, instead of the L2 norm ``||g||``: a
        size-free number comparable across layers of different widths and batch sizes.
    log_scale:
        Record ``log10`` of the norm or RMS (zero gradients are then counted, not
        aggregated).
    compute_correlation:
        Also record the cosine between each layer's gradient and the one it received on
        the previous backward pass (0 when either is zero). Costs the memory described in
        the module documentation.
    correlation_sketch_size:
        Gradients with more elements than this are kept as a count sketch of this many
        float32 values for the correlation; ``None`` keeps them whole.
    skip_activation:
        Leave activation modules (ReLU, GELU, Softmax...) out of the default layer set.
    layers:
        Names of the modules to watch (any module, leaf or not); by default every leaf
        module, minus activations when ``skip_activation``. A module that uses its
        children's weights without calling them (``MultiheadAttention`` and its
        ``out_proj``) leaves those children silent: name the module itself here.
    keep_values:
        Keep every recorded value of the epoch (needed for the median; memory grows with
        the number of passes) instead of running aggregates only.
    line_aggregation:
        ``"mean"`` (default) or ``"median"`` (needs ``keep_values=True``): the line drawn
        and logged as ``line``.
    range_aggregation:
        The bands around the line: ``"std"`` (line ± standard deviation) and/or
        ``"minmax"`` (smallest to largest value); both by default. They choose the band
        gauges set and the bands :func:`plot_gradient_geometry` draws; the log events
        carry every statistic whatever is chosen, and name the chosen bands.
    seed:
        Seed of the count sketch's random signs (deterministic across passes and runs).
    registry:
        Where :meth:`end_epoch` sets gauges; the process default when omitted.

    Raises
    ------
    InputError
        For a model that is not a ``torch.nn.Module``, an unknown layer name, no layer to
        watch, or a bad option.

    Notes
    -----
    A module called several times in one forward pass (a shared block) records one value
    per call. With data parallelism every rank records the gradients of its own shard;
    nothing is exchanged between ranks. Under a loss scaler (mixed precision) the
    gradients are those of the scaled loss.
    """

    __slots__ = (
        "_attached",
        "_bands",
        "_epoch",
        "_generation",
        "_handles",
        "_history",
        "_keep_values",
        "_layers",
        "_line",
        "_lock",
        "_log_scale",
        "_normalize",
        "_pending",
        "_quantity",
        "_registry",
        "_sketch_size",
        "_stats",
        "_torch",
        "compute_correlation",
    )

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        normalize_by_size: bool = False,
        log_scale: bool = False,
        compute_correlation: bool = False,
        correlation_sketch_size: int | None = DEFAULT_SKETCH_SIZE,
        skip_activation: bool = True,
        layers: Sequence[str] | None = None,
        keep_values: bool = False,
        line_aggregation: LineAggregation = "mean",
        range_aggregation: Sequence[RangeAggregation] = _ALL_BANDS,
        seed: int = 0,
        registry: MetricRegistry | None = None,
    ) -> None:
        torch = require_torch()
        if not isinstance(model, torch.nn.Module):
            raise InputError(
                f"'model' must be a torch.nn.Module: got {type(model).__name__}",
                details={"field": "model", "type": type(model).__name__},
            )
        if line_aggregation not in ("mean", "median"):
            raise InputError(
                f"'line_aggregation' must be 'mean' or 'median': got {line_aggregation!r}",
                details={"field": "line_aggregation", "value": line_aggregation},
            )
        if line_aggregation == "median" and not keep_values:
            raise InputError(
                "'line_aggregation' 'median' needs keep_values=True: running aggregates have no median",
                details={"field": "line_aggregation", "value": line_aggregation},
            )
        bands = _check_bands("range_aggregation", range_aggregation)
        if correlation_sketch_size is not None:
            correlation_sketch_size = check_positive_int("correlation_sketch_size", correlation_sketch_size)
        self._sketch_size = correlation_sketch_size
        seed = check_non_negative_int("seed", seed)
        self._torch = torch
        self._normalize = bool(normalize_by_size)
        self._log_scale = bool(log_scale)
        self.compute_correlation = bool(compute_correlation)
        self._keep_values = bool(keep_values)
        self._line = line_aggregation
        self._bands = bands
        self._stats = (
            ("mean",)
            + (("median",) if line_aggregation == "median" else ())
            + tuple(stat for band in bands for stat in _BAND_STATS[band])
        )
        self._quantity = ("log10_" if self._log_scale else "") + ("rms" if self._normalize else "l2")
        self._registry = registry
        self._lock = threading.Lock()
        self._pending: list[tuple[_Layer, Any, Any]] = []
        self._history: list[GradientEpochSummary] = []
        self._epoch = 0
        self._generation = 0

        inner = _unwrap(model, torch)
        named = dict(inner.named_modules())
        if layers is None:
            chosen = [
                name
                for name, module in named.items()
                if not any(True for _ in module.children()) and not (skip_activation and _is_activation(module))
            ]
        else:
            if isinstance(layers, str) or not isinstance(layers, Sequence):
                raise InputError(
                    f"'layers' must be a sequence of module names: got {type(layers).__name__}",
                    details={"field": "layers", "type": type(layers).__name__},
                )
            unknown = [name for name in layers if name not in named]
            if unknown:
                raise InputError(
                    f"'layers' names modules the model does not have: {unknown!r}",
                    details={"field": "layers", "value": unknown},
                )
            chosen = list(dict.fromkeys(layers))
        if not chosen:
            raise InputError("the model has no layer to watch", details={"field": "layers", "value": []})

        keys: set[str] = set()
        self._layers: list[_Layer] = []
        for index, name in enumerate(chosen):
            display = name or "root"
            key = _metric_key(display)
            if key in keys:
                key = f"{key}_{index}"
            keys.add(key)
            self._layers.append(_Layer(display, key, seed + index, self._keep_values))
        self._declare_metrics()
        self._handles = [
            named[name].register_forward_hook(self._forward_hook_for(layer))
            for name, layer in zip(chosen, self._layers)
        ]
        self._attached = True

    # ---------------------------------------------------------------- properties
    @property
    def layers(self) -> tuple[str, ...]:
        """The watched layers, output layer first (reverse registration order)."""
        return tuple(layer.name for layer in reversed(self._layers))

    @property
    def quantity(self) -> str:
        """What is recorded: ``l2``, ``rms``, ``log10_l2`` or ``log10_rms``."""
        return self._quantity

    @property
    def attached(self) -> bool:
        """Whether the hooks are still registered."""
        return self._attached

    @property
    def history(self) -> tuple[GradientEpochSummary, ...]:
        """Every summary returned by :meth:`end_epoch`, oldest first."""
        return tuple(self._history)

    @property
    def correlation_state_bytes(self) -> int:
        """Bytes currently held on the devices for the correlation (the previous gradients)."""
        return sum(
            int(layer.previous.numel()) * int(layer.previous.element_size())
            for layer in self._layers
            if layer.previous is not None
        )

    @property
    def correlation_state_limit_bytes(self) -> int | None:
        """Upper bound of :attr:`correlation_state_bytes`; ``None`` when full gradients are kept."""
        if self._sketch_size is None:
            return None
        return len(self._layers) * self._sketch_size * 4

    # --------------------------------------------------------------------- hooks
    def _declare_metrics(self) -> None:
        unit = "log10(gradient)" if self._log_scale else "gradient"
        what = ("log10 of the " if self._log_scale else "") + ("RMS" if self._normalize else "L2 norm")
        for layer in self._layers:
            for stat in self._stats:
                declare_metric(
                    MetricSpec(
                        gradient_metric_name(layer.key, self._quantity, stat),
                        "gauge",
                        unit,
                        f"Per-epoch {stat} of the {what} of the gradient at layer {layer.key}'s output.",
                    )
                )
                if not self.compute_correlation:
                    continue
                declare_metric(
                    MetricSpec(
                        gradient_metric_name(layer.key, "correlation", stat),
                        "gauge",
                        "1",
                        f"Per-epoch {stat} of the cosine between consecutive output gradients of layer {layer.key}.",
                    )
                )

    def _forward_hook_for(self, layer: _Layer) -> Any:
        torch = self._torch

        def forward_hook(module: Any, inputs: Any, output: Any) -> None:
            tensor = _first_tensor(output, torch)
            if tensor is None or not tensor.requires_grad:
                return
            generation = self._generation

            def gradient_hook(grad: Any) -> None:
                if generation == self._generation:
                    self._record(layer, grad, generation)

            tensor.register_hook(gradient_hook)

        return forward_hook

    def _sketch(self, layer: _Layer, flat: Any) -> Any:
        """``flat`` itself (as float32) when small enough, else its count sketch: each
        element times a seeded random sign, summed into ``i mod k`` buckets.
        """
        torch = self._torch
        size = self._sketch_size
        if size is None or flat.numel() <= size:
            return flat.to(torch.float32, copy=True)
        count = flat.numel()
        generator = torch.Generator(device=flat.device)
        generator.manual_seed(layer.seed)
        # Eight signs per random byte: drawing one value per sign costs about twice as much.
        packed = torch.randint(0, 256, ((count + 7) // 8,), generator=generator, device=flat.device, dtype=torch.uint8)
        shifts = torch.arange(8, dtype=torch.uint8, device=flat.device)
        bits = ((packed.unsqueeze(1) >> shifts) & 1).reshape(-1)[:count]
        signed = flat.to(torch.float32) * (bits.to(torch.float32) * 2 - 1)
        padding = -count % size
        if padding:
            signed = torch.nn.functional.pad(signed, (0, padding))
        return signed.view(-1, size).sum(dim=0)

    def _record(self, layer: _Layer, grad: Any, generation: int) -> None:
        torch = self._torch
        with torch.no_grad():
            flat = grad.detach().reshape(-1)
            accumulate = torch.float64 if flat.dtype == torch.float64 else torch.float32
            value = torch.linalg.vector_norm(flat, dtype=accumulate)
            if self._normalize:
                value = value / math.sqrt(max(flat.numel(), 1))
            cosine = current = None
            shape = tuple(grad.shape)
            previous = layer.previous
            if self.compute_correlation:
                current = self._sketch(layer, flat)
                if previous is not None and layer.previous_shape == shape:
                    # Sums in float64; sqrt(s * s) == s, so identical gradients give exactly 1.
                    f64 = torch.float64
                    dot = (current * previous).sum(dtype=f64)
                    denominator = torch.sqrt((current * current).sum(dtype=f64) * (previous * previous).sum(dtype=f64))
                    cosine = torch.where(denominator > 0, dot / denominator, 0.0).clamp(-1.0, 1.0)
        with self._lock:
            if generation != self._generation:
                return
            if current is not None:
                if previous is not None and cosine is None:
                    layer.correlation_skipped += 1
                layer.previous = current
                layer.previous_shape = shape
            self._pending.append((layer, value, cosine))
            if len(self._pending) >= FLUSH_EVERY:
                self._flush_locked()

    def _flush_locked(self) -> None:
        """Bring the pending values to the host (one transfer per device) and aggregate them."""
        pending, self._pending = self._pending, []
        if not pending:
            return
        torch = self._torch
        by_device: dict[Any, list[tuple[_Layer, Any, Any]]] = {}
        for entry in pending:
            by_device.setdefault(entry[1].device, []).append(entry)
        for entries in by_device.values():
            tensors = [value.to(torch.float64) for _, value, _ in entries]
            tensors += [cosine.to(torch.float64) for _, _, cosine in entries if cosine is not None]
            numbers = iter(torch.stack(tensors).tolist())
            values = [next(numbers) for _ in entries]
            for (layer, _, cosine), value in zip(entries, values):
                self._aggregate(layer, value, next(numbers) if cosine is not None else None)

    def _aggregate(self, layer: _Layer, value: float, cosine: float | None) -> None:
        """Add one pass to a layer's aggregates; a pass with a non-finite norm or cosine is
        counted once in ``nonfinite`` and its non-finite parts are left out.
        """
        layer.received += 1
        finite = math.isfinite(value)
        if finite and self._log_scale and value == 0.0:
            layer.zeros += 1
        elif finite:
            layer.value.add(math.log10(value) if self._log_scale else value)
        if cosine is not None:
            if math.isfinite(cosine):
                layer.correlation.add(cosine)
            else:
                finite = False
        if not finite:
            layer.nonfinite += 1

    # ------------------------------------------------------------------- epochs
    def end_epoch(
        self, *, epoch: int | None = None, step: int | None = None, logger: MetricLogger | None = None
    ) -> GradientEpochSummary:
        """Aggregate the epoch so far per layer, publish it and start a new epoch.

        Sets the gauges ``geno_lewm.training.gradients.<layer>.<quantity>.<stat>`` (and
        ``...<layer>.correlation.<stat>``) for ``stat`` in mean, std, min, max (and median
        when it is the line), and with a logger emits one ``training.gradients.layer``
        event per layer with that layer's aggregates (see :data:`LAYER_EVENT`). The
        previous gradients kept for the correlation carry over to the next epoch.

        Parameters
        ----------
        epoch:
            The epoch's number; one more than the last summary's (from 0) when omitted.
        step:
            The global step, for the log events.
        logger:
            Optional structured logger.
        """
        if epoch is None:
            epoch = self._epoch
        elif type(epoch) is not int or epoch < 0:
            epoch = check_non_negative_int("epoch", epoch)
        if step is not None and (type(step) is not int or step < 0):
            step = check_non_negative_int("step", step)
        with self._lock:
            self._flush_locked()
            layers = []
            silent = []
            for layer in reversed(self._layers):
                if layer.received == 0:
                    silent.append(layer.name)
                    continue
                layers.append(
                    LayerGradientStats(
                        layer.name,
                        self._quantity,
                        layer.value.stats(),
                        layer.correlation.stats() if self.compute_correlation else None,
                        layer.nonfinite,
                        layer.zeros,
                        layer.correlation_skipped,
                    )
                )
                layer.reset(self._keep_values)
            summary = GradientEpochSummary(
                epoch, step, self._quantity, self._line, tuple(layers), tuple(silent), self._bands
            )
            self._epoch = epoch + 1
            self._history.append(summary)
        self._publish(summary, logger)
        return summary

    def _publish(self, summary: GradientEpochSummary, logger: MetricLogger | None) -> None:
        registry = default_registry() if self._registry is None else self._registry
        keys = {layer.name: layer.key for layer in self._layers}
        for stats in summary.layers:
            series = [(self._quantity, stats.value)]
            if stats.correlation is not None:
                series.append(("correlation", stats.correlation))
            for quantity, aggregates in series:
                for stat in self._stats:
                    registry.set_gauge(
                        gradient_metric_name(keys[stats.layer], quantity, stat), aggregates.aggregate(stat)
                    )
            if logger is not None:
                logger.info(LAYER_EVENT, step=summary.step, **_layer_event_fields(summary, stats))

    def detach(self) -> None:
        """Remove every hook and free the tensors held (previous gradients, pending values).

        Values already recorded are aggregated first, so :meth:`end_epoch` after
        :meth:`detach` still summarises the partial epoch. Idempotent.
        """
        with self._lock:
            for handle in self._handles:
                handle.remove()
            self._handles = []
            self._generation += 1
            self._flush_locked()
            for layer in self._layers:
                layer.previous = None
                layer.previous_shape = None
            self._attached = False

    def __enter__(self) -> GradientGeometry:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.detach()

    def __repr__(self) -> str:
        return (
            f"GradientGeometry(layers={len(self._layers)}, quantity={self._quantity!r}, "
            f"compute_correlation={self.compute_correlation}, attached={self._attached})"
        )


# -------------------------------------------------------------------- plotting
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
    bands: tuple[str, ...] = _ALL_BANDS


def _record_fields(record: Any) -> Mapping[str, Any] | None:
    if isinstance(record, Mapping):
        return record
    dump = getattr(record, "model_dump", None)
    if callable(dump):
        dumped = dump()
        return dumped if isinstance(dumped, Mapping) else None
    return None


def _series_from_summaries(summaries: Iterable[GradientEpochSummary], correlation: bool) -> Iterator[tuple[Any, ...]]:
    for summary in summaries:
        for stats in summary.layers:
            aggregates = stats.correlation if correlation else stats.value
            if aggregates is None:
                continue
            quantity = "correlation" if correlation else stats.quantity
            for stat in (*_STATS, "median"):
                if stat == "median" and aggregates.median is None:
                    continue
                yield stats.layer, quantity, summary.epoch, stat, aggregates.aggregate(stat)


def _series_from_events(records: Iterable[Any], correlation: bool) -> Iterator[tuple[Any, ...]]:
    prefix = "correlation_" if correlation else ""
    for record in records:
        fields = _record_fields(record)
        if fields is None or fields.get("event") != LAYER_EVENT:
            continue
        quantity = "correlation" if correlation else fields.get("quantity")
        for stat in (*_STATS, "median"):
            key = prefix + stat
            if key not in fields or (stat == "median" and fields[key] is None):
                continue
            value = fields[key]
            number = math.nan if value is None else float(value)
            yield fields.get("layer"), quantity, fields.get("epoch"), stat, number


def gradient_series(data: Any, *, correlation: bool = False) -> dict[str, LayerSeries]:
    """Per-layer series (layer -> :class:`LayerSeries`, output layer first) from a
    :class:`GradientGeometry`, a sequence of :class:`GradientEpochSummary`, or logged
    logged :data:`LAYER_EVENT` records (mappings, or the objects
    :func:`geno_lewm.logs.read_log` yields); other records are ignored.

    With ``correlation=True`` the series are the cosines instead of the magnitudes.
    A value logged as ``null`` (a non-finite number) comes back as NaN.
    """
    if isinstance(data, GradientGeometry):
        data = data.history
    items = list(data)
    if items and all(isinstance(item, GradientEpochSummary) for item in items):
        rows = _series_from_summaries(items, correlation)
        chosen = {band for summary in items for band in summary.range_aggregation}
    else:
        rows = _series_from_events(items, correlation)
        chosen = set()
        for item in items:
            fields = _record_fields(item)
            if fields is not None and fields.get("event") == LAYER_EVENT and isinstance(fields.get("bands"), str):
                chosen.update(fields["bands"].split("+"))
    bands = tuple(band for band in _ALL_BANDS if band in chosen) or _ALL_BANDS
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
        result[layer] = LayerSeries(layer, quantity, epochs, aggregates, bands)
    return result


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
    requested = None if bands is None else _check_bands("bands", bands)
    if line not in ("mean", "median"):
        raise InputError(f"'line' must be 'mean' or 'median': got {line!r}", details={"field": "line", "value": line})
    series = gradient_series(data, correlation=correlation)
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
