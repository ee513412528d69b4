"""Catching each layer's output gradient on every backward pass, and aggregating an epoch.

:class:`GradientGeometry` (documented in :mod:`geno_lewm.training.gradients`) registers a
forward hook per watched layer that puts a gradient hook on the layer's output tensor,
measures the gradient's norm (and its cosine with the previous pass's), keeps the values
on the device, and folds them into running statistics on the host in batches.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import math
import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from geno_lewm._layer_series import BANDS
from geno_lewm._protocols import EventLogger, MetricLogger, adapt_logger
from geno_lewm._torch import require_torch
from geno_lewm._validation import check_bool, check_instance, check_non_negative_int, check_positive_int, fail
from geno_lewm.errors import InputError
from geno_lewm.metrics import MetricRegistry, MetricSpec, declare_metrics, default_registry
from geno_lewm.training.gradients._summary import (
    BAND_STATS,
    LAYER_EVENT,
    GradientEpochSummary,
    LayerGradientStats,
    LineAggregation,
    LineAlias,
    RangeAggregation,
    RangeAlias,
    RunningStats,
    check_line_aggregation,
    check_range_aggregation,
    gradient_metric_name,
    layer_event_fields,
)

if TYPE_CHECKING:
    import torch

__all__ = ["DEFAULT_SKETCH_SIZE", "FLUSH_EVERY", "GradientGeometry", "check_gradient_options"]

FLUSH_EVERY = 4096
"""Records held on the device before they are brought to the host in one transfer."""

DEFAULT_SKETCH_SIZE = 65536
"""Gradients with more elements are kept as a count sketch of this many values for the correlation."""


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
        self.value = RunningStats(keep_values)
        self.correlation = RunningStats(keep_values)
        self.nonfinite = 0
        self.zeros = 0
        self.correlation_skipped = 0
        self.received = 0

    def reset(self, keep_values: bool) -> None:
        self.value = RunningStats(keep_values)
        self.correlation = RunningStats(keep_values)
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


@functools.cache
def _option_defaults() -> dict[str, Any]:
    """The keyword options of :class:`GradientGeometry` and their defaults, from its signature
    (the one place they are written). Cached: callers copy before changing it.
    """
    parameters = inspect.signature(GradientGeometry.__init__).parameters
    return {
        name: parameter.default
        for name, parameter in parameters.items()
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY
    }


SEED_LIMIT = 2**64
"""Seeds are below this: a torch generator takes no larger one."""


def _check_seed(value: Any) -> int:
    """``value`` as a seed: a non-negative integer below :data:`SEED_LIMIT`."""
    seed = check_non_negative_int("seed", value)
    if seed >= SEED_LIMIT:
        raise fail("seed", "an integer in [0, 2**64) (a torch generator's seeds)", value)
    return seed


def check_gradient_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """Validate keyword options of :class:`GradientGeometry` before any model exists.

    Everything the constructor checks except the model and whether the ``layers`` it
    names exist: unknown names (with the closest known one suggested), types, ranges, and
    the pairs that depend on each other (the median, quartiles, IQR and the ``q1q3`` band
    need ``keep_values=True``). Lines and bands come back under their canonical names
    (``"min-max"`` -> ``"minmax"``, ``"Q1-Q3"`` -> ``"q1q3"``, ``"IQR"`` -> ``"iqr"``...),
    bands as a tuple in canonical order. Returns the given options only, checked; the
    Lightning callback calls it at construction so that a bad option fails there, not
    when ``fit`` starts.

    Raises
    ------
    InputError
        Naming the option and the value refused.

    Example
    -------
    >>> check_gradient_options({"keep_values": True, "range_aggregation": ["min-max", "Q1-Q3"]})
    {'keep_values': True, 'range_aggregation': ('minmax', 'q1q3')}
    """
    if not isinstance(options, Mapping):
        raise InputError(
            f"'options' must be a mapping of option names to values: got {type(options).__name__}",
            details={"field": "options", "type": type(options).__name__},
        )
    defaults = _option_defaults()
    for name in options:
        if name not in defaults:
            close = difflib.get_close_matches(str(name), list(defaults), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; the options are {', '.join(map(repr, defaults))}"
            raise InputError(
                f"GradientGeometry has no option {name!r}{hint}",
                details={"field": "options", "value": name},
            )
    merged = {**defaults, **options}
    keep_values = check_bool("keep_values", merged["keep_values"])
    layers = merged["layers"]
    if layers is not None and (
        isinstance(layers, str) or not isinstance(layers, Sequence) or not all(isinstance(n, str) for n in layers)
    ):
        raise fail("layers", "a sequence of module names (strings)", layers)
    sketch = merged["correlation_sketch_size"]
    registry = merged["registry"]
    checked: dict[str, Any] = {
        "normalize_by_size": check_bool("normalize_by_size", merged["normalize_by_size"]),
        "log_scale": check_bool("log_scale", merged["log_scale"]),
        "compute_correlation": check_bool("compute_correlation", merged["compute_correlation"]),
        "correlation_sketch_size": None if sketch is None else check_positive_int("correlation_sketch_size", sketch),
        "skip_activation": check_bool("skip_activation", merged["skip_activation"]),
        "layers": None if layers is None else list(layers),
        "keep_values": keep_values,
        "line_aggregation": check_line_aggregation(merged["line_aggregation"], keep_values=keep_values),
        "range_aggregation": check_range_aggregation(merged["range_aggregation"], keep_values=keep_values),
        "seed": _check_seed(merged["seed"]),
        "registry": None if registry is None else check_instance("registry", registry, MetricRegistry),
    }
    return {name: checked[name] for name in options}


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
        Keep every recorded value of the epoch (needed for the median and the quartiles;
        memory grows with the number of passes) instead of running aggregates only.
    line_aggregation:
        The line logged (``line``, its gauge, the Lightning callback's value): ``"mean"``
        (default), ``"min"``, ``"max"``, or with ``keep_values=True`` ``"median"``,
        ``"q1"``, ``"q3"`` (first and third quartiles) or ``"iqr"`` (``q3 - q1``). The
        reference's spellings ``"Q1"``, ``"Q3"`` and ``"IQR"`` are accepted. Quantiles
        interpolate linearly between the sorted values (numpy's default method), so the
        median of an even count is the mean of the two middle values
        (:class:`~geno_lewm.training.gradients.SeriesStats` says why).
        :func:`plot_gradient_geometry` draws the mean or median line.
    range_aggregation:
        The bands around the line: ``"std"`` (line ± standard deviation), ``"minmax"``
        (smallest to largest value) and/or ``"q1q3"`` (first to third quartile, needs
        ``keep_values=True``); ``("std", "minmax")`` by default. The reference's spellings
        ``"min-max"`` and ``"Q1-Q3"`` are accepted. They choose the band gauges set and
        the bands :func:`plot_gradient_geometry` draws (it draws ``std`` and ``minmax``);
        the log events carry every statistic whatever is chosen, and name the chosen
        bands.
    seed:
        Seed of the count sketch's random signs (deterministic across passes and runs),
        in ``[0, 2**64)``; layer ``i`` uses ``(seed + i) mod 2**64``.
    registry:
        Where :meth:`end_epoch` sets gauges; the process default when omitted.

    Raises
    ------
    InputError
        For a model that is not a ``torch.nn.Module``, an unknown layer name, no layer to
        watch, or a bad option (:func:`check_gradient_options` checks the options alone,
        before any model exists).

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
        line_aggregation: LineAggregation | LineAlias = "mean",
        range_aggregation: RangeAggregation | RangeAlias | Sequence[RangeAggregation | RangeAlias] = BANDS,
        seed: int = 0,
        registry: MetricRegistry | None = None,
    ) -> None:
        torch = require_torch()
        check_instance("model", model, torch.nn.Module, "a torch.nn.Module")
        options = check_gradient_options(
            {
                "normalize_by_size": normalize_by_size,
                "log_scale": log_scale,
                "compute_correlation": compute_correlation,
                "correlation_sketch_size": correlation_sketch_size,
                "skip_activation": skip_activation,
                "layers": layers,
                "keep_values": keep_values,
                "line_aggregation": line_aggregation,
                "range_aggregation": range_aggregation,
                "seed": seed,
                "registry": registry,
            }
        )
        line: LineAggregation = options["line_aggregation"]
        bands: tuple[RangeAggregation, ...] = options["range_aggregation"]
        self._sketch_size: int | None = options["correlation_sketch_size"]
        seed = options["seed"]
        skip_activation = options["skip_activation"]
        layers = options["layers"]
        self._torch = torch
        self._normalize: bool = options["normalize_by_size"]
        self._log_scale: bool = options["log_scale"]
        self.compute_correlation: bool = options["compute_correlation"]
        self._keep_values: bool = options["keep_values"]
        self._line = line
        self._bands = bands
        # The mean is always published; then the line and the bands' aggregates, each once.
        self._stats = tuple(dict.fromkeys(("mean", line, *(stat for band in bands for stat in BAND_STATS[band]))))
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
            unknown = [name for name in layers if name not in named]
            if unknown:
                raise InputError(
                    f"'layers' names modules the model does not have: {unknown!r}",
                    details={"field": "layers", "value": unknown},
                )
            chosen = list(dict.fromkeys(layers))
        if not chosen:
            raise InputError("the model has no layer to watch", details={"field": "layers", "value": []})

        keys: set[str] = set()  # as exported: 'a.b' and 'a_b' would be one Prometheus series
        self._layers: list[_Layer] = []
        for index, name in enumerate(chosen):
            display = name or "root"
            key = _metric_key(display)
            if key.replace(".", "_") in keys:
                key = f"{key}_{index}"
            keys.add(key.replace(".", "_"))
            # Each layer its own seed, kept in a torch generator's range (seeds below 2**64).
            self._layers.append(_Layer(display, key, (seed + index) % SEED_LIMIT, self._keep_values))
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
        specs: list[MetricSpec] = []
        for layer in self._layers:
            for stat in self._stats:
                specs.append(
                    MetricSpec(
                        gradient_metric_name(layer.key, self._quantity, stat),
                        "gauge",
                        unit,
                        f"Per-epoch {stat} of the {what} of the gradient at layer {layer.key}'s output.",
                    )
                )
                if not self.compute_correlation:
                    continue
                specs.append(
                    MetricSpec(
                        gradient_metric_name(layer.key, "correlation", stat),
                        "gauge",
                        "1",
                        f"Per-epoch {stat} of the cosine between consecutive output gradients of layer {layer.key}.",
                    )
                )
        declare_metrics(specs)  # all or nothing

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
        ``...<layer>.correlation.<stat>``) for ``stat`` in mean, the line's aggregate and
        the chosen bands' aggregates (std; min and max; q1 and q3), and with a logger emits
        one ``training.gradients.layer`` event per layer with all of that layer's
        aggregates (see :data:`LAYER_EVENT`). The previous gradients kept for the
        correlation carry over to the next epoch.

        Parameters
        ----------
        epoch:
            The epoch's number; one more than the last summary's (from 0) when omitted.
        step:
            The global step, for the log events.
        logger:
            Optional structured logger. This package's own gets the
            ``training.gradients.layer`` events; any other accepted logger (a GenoLeWM
            family logger, structlog, ``logging``) gets the family's minimal
            ``training.metric`` record (name, value, unit, kind, step when known) per gauge
            set. A logger that is neither is an :class:`InputError` before anything is done.
        """
        adapted = adapt_logger(logger, warnings=False)
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
        self._publish(summary, adapted)
        return summary

    def _publish(self, summary: GradientEpochSummary, logger: EventLogger | None) -> None:
        registry = default_registry() if self._registry is None else self._registry
        unit = "log10(gradient)" if self._log_scale else "gradient"
        foreign = logger if logger is not None and not logger.full else None
        keys = {layer.name: layer.key for layer in self._layers}
        for stats in summary.layers:
            series = [(self._quantity, stats.value)]
            if stats.correlation is not None:
                series.append(("correlation", stats.correlation))
            for quantity, aggregates in series:
                for stat in self._stats:
                    name = gradient_metric_name(keys[stats.layer], quantity, stat)
                    value = aggregates.aggregate(stat)
                    registry.set_gauge(name, value)
                    if foreign is not None:
                        fields = {"name": name, "value": value, "unit": "1" if quantity == "correlation" else unit}
                        step = {} if summary.step is None else {"step": summary.step}
                        foreign.info("training.metric", **fields, kind="gauge", **step)
            if logger is not None and logger.full:
                logger.info(LAYER_EVENT, step=summary.step, **layer_event_fields(summary, stats))

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
