"""Any metric on what training, validation and test steps return: the framework-free core.

:class:`OutputMetrics` takes the metrics a user cares about (accuracy, F1, an
alignment score of embeddings, a scikit-learn score) and computes them from each step's
outputs, so a plain training loop needs three calls::

    metrics = OutputMetrics({"acc": accuracy_score}, needs={"acc": ["target", "label_pred"]})
    for batch in loader:
        outputs = step(batch)            # a mapping: {"label_pred": ..., "target": ...}
        metrics.update(outputs)
    print(metrics.compute())             # {'acc': 0.93}
    metrics.reset()

The Lightning :class:`~geno_lewm.integrations.metrics_callback.MetricsCallback` is a thin
layer over it. Definitions and conventions: ``rfcs/0011-metrics-callback-and-config.md``.

What a metric can be
    A torchmetrics ``Metric`` (driven through its own ``update`` / ``compute`` /
    ``reset``, so its accumulation and its distributed synchronisation apply unchanged), a
    scikit-learn metric function (tensors reach it as NumPy arrays), or any callable
    returning a number. Metrics come as a mapping ``name -> metric``, a sequence, or one
    metric; names are inferred from a function's ``__name__`` or, for an object, from its
    class name in snake case (``MulticlassAccuracy`` -> ``multiclass_accuracy``).

What feeds it (``needs``)
    ``None`` infers each required parameter of the metric's signature (``update`` for a
    torchmetrics metric) from the output keys: the key of the same name, else the one key
    among its synonyms (:data:`PREDICTION_KEYS`, :data:`TARGET_KEYS`: ``y_pred`` finds
    ``preds``, ``target`` finds ``labels``). A missing key or two candidates is an
    :class:`~geno_lewm.errors.InputError` naming the metric, the parameter and the keys.
    A sequence gives positional sources, a mapping keyword sources; a source is an output
    key or a callable applied to the outputs mapping. A mapping whose keys are all metric
    names gives each named metric its own ``needs`` (the others are inferred).

How it is computed (``mode``)
    ``"step"`` (cheap): a callable is evaluated on every batch and the epoch's value is
    the mean of the batch values weighted by the batch sizes (not a mean of means).
    ``"epoch"`` (exact, more memory): each source is collected, detached (on the CPU with
    ``collect_on_cpu=True``), and the metric is evaluated once on the concatenation. A
    torchmetrics metric is exact in both modes: its own state accumulates.

Distributed
    When a ``torch.distributed`` group of more than one rank is initialised,
    :meth:`OutputMetrics.compute` is collective (every rank must call it): per-step
    values are combined as sums of ``value x batch size`` and of batch sizes over all
    ranks; collected outputs are gathered from all ranks (shards of unequal sizes, in
    rank order) and the metric is evaluated on the whole; every rank gets the same
    numbers. A rank whose own data cannot be concatenated makes every rank raise.

Only the standard library is imported here; torch, NumPy and torchmetrics are looked up
in ``sys.modules`` (a tensor cannot exist without its module having been imported).
"""

from __future__ import annotations

import inspect
import math
import numbers
import re
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal, NamedTuple

from geno_lewm import _distributed
from geno_lewm._validation import check_positive_int
from geno_lewm.errors import DistributedError, InputError

__all__ = [
    "PREDICTION_KEYS",
    "TARGET_KEYS",
    "DistributedMetricsError",
    "MetricDefinition",
    "MetricValue",
    "Mode",
    "Needs",
    "OutputMetrics",
    "Source",
    "define_metrics",
    "infer_metric_name",
    "resolve_needs",
]

Mode = Literal["step", "epoch"]
"""``"step"``: per-batch values averaged with batch-size weights; ``"epoch"``: exact on collected outputs."""

Source = str | Callable[[Mapping[str, Any]], Any]
"""Where one argument of a metric comes from: an output key, or a callable on the outputs mapping."""

PREDICTION_KEYS: tuple[str, ...] = (
    "preds",
    "pred",
    "predictions",
    "prediction",
    "y_pred",
    "y_hat",
    "y_score",
    "y_prob",
    "probs",
    "probas_pred",
    "logits",
    "scores",
    "output",
    "outputs",
)
"""Synonyms of a prediction: a parameter with one of these names is fed by the output key
with any of them, when exactly one such key is present."""

TARGET_KEYS: tuple[str, ...] = ("target", "targets", "y_true", "y", "labels", "label", "truth")
"""Synonyms of a target, used like :data:`PREDICTION_KEYS`."""

_SYNONYMS: dict[str, tuple[str, ...]] = {
    **dict.fromkeys(PREDICTION_KEYS, PREDICTION_KEYS),
    **dict.fromkeys(TARGET_KEYS, TARGET_KEYS),
}
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_BATCH_KEY = "batch"
_OUTPUT_KEY = "output"

Kind = Literal["torchmetrics", "sklearn", "callable"]


class _Inferred:
    """Marker of a metric whose inputs are inferred from its signature and the output keys."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "INFER"


_INFER = _Inferred()


@dataclass(frozen=True, slots=True)
class Needs:
    """What feeds one metric: sources of its positional and of its keyword arguments."""

    positional: tuple[Source, ...] = ()
    keyword: tuple[tuple[str, Source], ...] = ()

    def sources(self) -> tuple[Source, ...]:
        """Every source, positional ones first."""
        return self.positional + tuple(source for _, source in self.keyword)


@dataclass(frozen=True, slots=True)
class MetricDefinition:
    """One metric, validated: its name, the object, its kind and what feeds it.

    Attributes
    ----------
    name:
        An identifier (letters, digits, ``_``), unique within a set of metrics.
    metric:
        The torchmetrics ``Metric``, scikit-learn function or callable.
    kind:
        ``"torchmetrics"``, ``"sklearn"`` or ``"callable"``.
    needs:
        ``None`` when inferred from the signature and the output keys; else the
        :class:`Needs` given.
    parameters:
        The required parameters read from the signature (what inference looks for); empty
        when ``needs`` is given.
    """

    name: str
    metric: Any
    kind: Kind
    needs: Needs | None
    parameters: tuple[tuple[str, bool], ...] = ()

    @property
    def stateful(self) -> bool:
        """Whether the metric keeps its own state (a torchmetrics metric)."""
        return self.kind == "torchmetrics"


@dataclass(frozen=True, slots=True)
class MetricValue:
    """One computed metric.

    Attributes
    ----------
    name:
        The metric's name.
    value:
        Its value (NaN and infinities are kept: they are the metric's answer).
    rows:
        Rows the value covers, over all ranks (``None`` when the inputs have no length).
    variant:
        How it was computed: ``"batch_weighted_mean"`` (per-step values weighted by batch
        size), ``"exact_on_collected"`` (once on all collected outputs) or
        ``"torchmetrics"`` (the metric's own accumulation).
    """

    name: str
    value: float
    rows: int | None
    variant: str


# ------------------------------------------------------------------ definitions
def _kind(metric: Any) -> Kind:
    torchmetrics = sys.modules.get("torchmetrics")
    if torchmetrics is not None and isinstance(metric, torchmetrics.Metric):
        return "torchmetrics"
    function = metric
    while isinstance(function, partial):
        function = function.func
    module = getattr(function, "__module__", None) or ""
    return "sklearn" if module == "sklearn" or module.startswith("sklearn.") else "callable"


def _snake(name: str) -> str:
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name)
    return spaced.lower()


def infer_metric_name(metric: Any) -> str:
    """The name a metric gets when none is given.

    A function's ``__name__`` (through ``functools.partial``), else the snake-case name of
    the object's class. Raises :class:`InputError` when that is not an identifier (a
    ``lambda``): give such a metric in a mapping with a name.

    Example
    -------
    >>> def alignment(x, y):
    ...     return 0.0
    >>> infer_metric_name(alignment), infer_metric_name(partial(alignment, y=1))
    ('alignment', 'alignment')
    """
    function = metric
    while isinstance(function, partial):
        function = function.func
    if inspect.isfunction(function) or inspect.isbuiltin(function) or inspect.ismethod(function):
        name = str(getattr(function, "__name__", ""))
    else:
        name = _snake(type(function).__name__)
    if not _NAME.fullmatch(name):
        raise InputError(
            f"cannot infer a name for metric {metric!r} (it would be {name!r}): give the metrics as a mapping "
            "of names to metrics",
            details={"field": "metrics", "value": name},
        )
    return name


def _signature_of(metric: Any, kind: Kind) -> inspect.Signature | None:
    target = metric.update if kind == "torchmetrics" else metric
    try:
        return inspect.signature(target)
    except (TypeError, ValueError):
        return None


def _required(signature: inspect.Signature) -> tuple[tuple[str, bool], ...]:
    """``(name, positional)`` of each parameter without a default, in order."""
    out = []
    for parameter in signature.parameters.values():
        if parameter.default is not inspect.Parameter.empty:
            continue
        if parameter.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD):
            out.append((parameter.name, True))
        elif parameter.kind is inspect.Parameter.KEYWORD_ONLY:
            out.append((parameter.name, False))
    return tuple(out)


def _check_source(name: str, where: str, source: object) -> Source:
    if isinstance(source, str) and source:
        return source
    if callable(source):
        return source
    raise InputError(
        f"'needs' of metric {name!r} must give output keys or callables on the outputs: got {source!r} at {where}",
        details={"field": "needs", "metric": name, "value": repr(source)},
    )


def _normalise_needs(name: str, needs: object, signature: inspect.Signature | None) -> Needs:
    """Check one metric's explicit ``needs`` and that its signature accepts them."""
    if isinstance(needs, Needs):
        needs = {**dict(needs.keyword)} if not needs.positional else _positional_only(name, needs)
    if isinstance(needs, Mapping):
        keyword = []
        for parameter, source in needs.items():
            if not isinstance(parameter, str) or not parameter.isidentifier():
                raise InputError(
                    f"'needs' of metric {name!r} must map parameter names to sources: got key {parameter!r}",
                    details={"field": "needs", "metric": name, "value": repr(parameter)},
                )
            keyword.append((parameter, _check_source(name, repr(parameter), source)))
        placeholders: tuple[tuple[Any, ...], dict[str, Any]] = ((), {p: None for p, _ in keyword})
        result = Needs(keyword=tuple(keyword))
    elif isinstance(needs, (list, tuple)):
        positional = tuple(_check_source(name, f"position {i}", source) for i, source in enumerate(needs))
        placeholders = ((None,) * len(positional), {})
        result = Needs(positional=positional)
    else:
        raise InputError(
            f"'needs' of metric {name!r} must be None, a sequence (positional) or a mapping (keyword) of output keys "
            f"or callables: got {type(needs).__name__}",
            details={"field": "needs", "metric": name, "type": type(needs).__name__},
        )
    if signature is not None:
        try:
            signature.bind(*placeholders[0], **placeholders[1])
        except TypeError as error:
            raise InputError(
                f"'needs' of metric {name!r} does not fit its signature {signature}: {error}",
                details={"field": "needs", "metric": name},
            ) from None
    return result


def _positional_only(name: str, needs: Needs) -> tuple[Source, ...]:
    if needs.keyword:
        raise InputError(
            f"'needs' of metric {name!r} must be positional or keyword sources, not both",
            details={"field": "needs", "metric": name},
        )
    return needs.positional


def _named(metrics: object) -> list[tuple[str, Any]]:
    """``metrics`` as ``(name, metric)`` pairs: a mapping, a sequence or one metric."""
    if isinstance(metrics, Mapping):
        pairs = list(metrics.items())
        for key, _ in pairs:
            if not isinstance(key, str) or not _NAME.fullmatch(key):
                raise InputError(
                    f"metric names must be identifiers (letters, digits, '_'): got {key!r}",
                    details={"field": "metrics", "value": repr(key)},
                )
        return pairs
    if isinstance(metrics, (list, tuple)):
        items = list(metrics)
    elif isinstance(metrics, (str, bytes)) or metrics is None:
        items = [metrics]
    else:
        items = [metrics]
    pairs = []
    for index, metric in enumerate(items):
        if not callable(metric):
            where = f" (item {index})" if isinstance(metrics, (list, tuple)) else ""
            raise InputError(
                f"a metric must be a torchmetrics Metric, a scikit-learn metric function or a callable: got "
                f"{type(metric).__name__}{where}",
                details={"field": "metrics", "type": type(metric).__name__},
            )
        pairs.append((infer_metric_name(metric), metric))
    names = [name for name, _ in pairs]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise InputError(
            f"two metrics would both be called {', '.join(map(repr, twice))}: give the metrics as a mapping of names",
            details={"field": "metrics", "value": twice},
        )
    return pairs


def _per_metric_needs(needs: object, names: Sequence[str]) -> dict[str, object]:
    """``needs`` for each metric name (``_INFER`` where inferred)."""
    if needs is None:
        return dict.fromkeys(names, _INFER)
    if isinstance(needs, Mapping) and needs:
        keys = list(needs)
        named = [key for key in keys if key in names]
        if named and len(named) == len(keys):
            return {
                name: (_INFER if needs[name] is None else needs[name]) if name in needs else _INFER for name in names
            }
        if named:
            others = [key for key in keys if key not in names]
            raise InputError(
                f"'needs' mixes metric names ({', '.join(map(repr, named))}) with other keys "
                f"({', '.join(map(repr, others))}): give one mapping of parameter -> source for every metric, or one "
                f"entry per metric name (metrics: {', '.join(map(repr, names))})",
                details={"field": "needs", "value": others},
            )
    return dict.fromkeys(names, needs)


def define_metrics(metrics: object, needs: object = None) -> tuple[MetricDefinition, ...]:
    """Validate ``metrics`` and ``needs`` into one :class:`MetricDefinition` per metric.

    Everything that can be checked without outputs is checked here: names, kinds, the
    form of ``needs`` and that each explicit ``needs`` fits the metric's signature, and
    that a metric whose inputs are to be inferred has an inspectable signature.

    Raises
    ------
    InputError
        Naming the metric and what is wrong.

    Example
    -------
    >>> def alignment(x, y):
    ...     return 0.0
    >>> [d.name for d in define_metrics([alignment], needs=["z1", "z2"])]
    ['alignment']
    """
    pairs = _named(metrics)
    if not pairs:
        raise InputError("'metrics' must hold at least one metric: got none", details={"field": "metrics"})
    per_metric = _per_metric_needs(needs, [name for name, _ in pairs])
    torchmetrics = sys.modules.get("torchmetrics")
    definitions = []
    for name, metric in pairs:
        if inspect.isclass(metric):
            hint = (
                " (pass an instance, not the class)" if torchmetrics and issubclass(metric, torchmetrics.Metric) else ""
            )
            raise InputError(
                f"metric {name!r} is a class{hint}: got {metric.__name__}",
                details={"field": "metrics", "metric": name},
            )
        if not callable(metric):
            raise InputError(
                f"metric {name!r} must be a torchmetrics Metric, a scikit-learn metric function or a callable: got "
                f"{type(metric).__name__}",
                details={"field": "metrics", "metric": name, "type": type(metric).__name__},
            )
        kind = _kind(metric)
        signature = _signature_of(metric, kind)
        wanted = per_metric[name]
        if wanted is _INFER:
            if signature is None:
                raise InputError(
                    f"cannot read the signature of metric {name!r} to infer its inputs: give its 'needs'",
                    details={"field": "needs", "metric": name},
                )
            parameters = _required(signature)
            if not parameters:
                raise InputError(
                    f"cannot infer the inputs of metric {name!r} from its signature {signature} (no required "
                    f"parameters): give its 'needs'",
                    details={"field": "needs", "metric": name},
                )
            definitions.append(MetricDefinition(name, metric, kind, None, parameters))
        else:
            definitions.append(MetricDefinition(name, metric, kind, _normalise_needs(name, wanted, signature)))
    return tuple(definitions)


def _keys_text(keys: Iterable[str]) -> str:
    shown = ", ".join(repr(k) for k in keys)
    return shown or "none"


def resolve_needs(definition: MetricDefinition, keys: Sequence[str]) -> Needs:
    """How ``definition`` is fed from outputs with ``keys``.

    Explicit ``needs`` are used as given (a key that is missing is reported when the
    outputs are read). Inferred ones look up each required parameter: the key of the same
    name, else the only key among its synonyms.

    Raises
    ------
    InputError
        When a parameter has no key (the message lists the keys there are) or two
        candidate keys (it names both and asks for ``needs``).
    """
    if definition.needs is not None:
        return definition.needs
    positional: list[Source] = []
    keyword: list[tuple[str, Source]] = []
    used: dict[str, str] = {}
    for parameter, is_positional in definition.parameters:
        if parameter in keys:
            key = parameter
        else:
            synonyms = _SYNONYMS.get(parameter, ())
            candidates = [k for k in keys if k in synonyms]
            if len(candidates) > 1:
                suggestion = ", ".join(f"{p!r}: ..." for p, _ in definition.parameters)
                raise InputError(
                    f"metric {definition.name!r}: parameter {parameter!r} could be fed by any of the output keys "
                    f"{_keys_text(candidates)}; say which with needs={{{definition.name!r}: {{{suggestion}}}}}",
                    details={"field": "needs", "metric": definition.name, "parameter": parameter, "keys": candidates},
                )
            if not candidates:
                also = f" or one of its synonyms ({', '.join(synonyms)})" if synonyms else ""
                raise InputError(
                    f"metric {definition.name!r}: no output key {parameter!r}{also} for its parameter {parameter!r}; "
                    f"the outputs have {_keys_text(keys)}: return it from the step or give the metric's 'needs'",
                    details={"field": "needs", "metric": definition.name, "parameter": parameter, "keys": list(keys)},
                )
            key = candidates[0]
        if key in used:
            raise InputError(
                f"metric {definition.name!r}: parameters {used[key]!r} and {parameter!r} would both be fed by output "
                f"key {key!r}; say which key feeds which with the metric's 'needs'",
                details={"field": "needs", "metric": definition.name, "parameter": parameter, "keys": [key]},
            )
        used[key] = parameter
        if is_positional:
            positional.append(key)
        else:
            keyword.append((parameter, key))
    return Needs(tuple(positional), tuple(keyword))


# ------------------------------------------------------------------ values
def _torch() -> Any:
    return sys.modules.get("torch")


def _is_tensor(value: Any) -> bool:
    torch = _torch()
    return torch is not None and isinstance(value, torch.Tensor)


def _is_array(value: Any) -> bool:
    numpy = sys.modules.get("numpy")
    return numpy is not None and isinstance(value, numpy.ndarray)


def _rows(value: Any) -> int | None:
    """Leading length of an argument: rows of a tensor or array, length of a list."""
    if _is_tensor(value) or _is_array(value):
        return int(value.shape[0]) if value.ndim >= 1 else None
    if isinstance(value, (list, tuple)):
        return len(value)
    return None


def _as_number(name: str, value: Any) -> float:
    """A metric's result as a float (a real number, or a one-element tensor or array)."""
    scalar = value
    if not isinstance(value, numbers.Number) and hasattr(value, "item"):
        size = getattr(value, "numel", None)
        count = size() if callable(size) else getattr(value, "size", 1)
        if count != 1:
            shape = tuple(getattr(value, "shape", ()))
            raise InputError(
                f"metric {name!r} must return one number: got a {type(value).__name__} of shape {shape}",
                details={"field": "metrics", "metric": name, "type": type(value).__name__},
            )
        scalar = value.item()
    if isinstance(scalar, bool) or type(scalar).__name__ == "bool_" or not isinstance(scalar, numbers.Real):
        raise InputError(
            f"metric {name!r} must return a real number: got {value!r}",
            details={"field": "metrics", "metric": name, "type": type(value).__name__},
        )
    try:
        return float(scalar)
    except OverflowError:
        return math.copysign(math.inf, scalar)


def _for_sklearn(value: Any) -> Any:
    """A tensor as a NumPy array (scikit-learn reads arrays); anything else unchanged."""
    if not _is_tensor(value):
        return value
    torch = _torch()
    data = value.detach()
    if data.dtype in (torch.bfloat16,):
        data = data.float()
    return data.cpu().numpy()


def _detached(value: Any) -> Any:
    return value.detach() if _is_tensor(value) else value


def _collected(value: Any, on_cpu: bool) -> Any:
    """A private copy of one step's argument, safe to keep until the epoch ends."""
    if _is_tensor(value):
        device = "cpu" if on_cpu else value.device
        return value.detach().to(device=device, copy=True)
    if _is_array(value):
        return value.copy()
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, numbers.Number) or (hasattr(value, "item") and hasattr(value, "dtype")):
        return value
    raise InputError(
        f"cannot collect a {type(value).__name__} over an epoch: a metric's inputs must be tensors, arrays, "
        "sequences or numbers",
        details={"field": "outputs", "type": type(value).__name__},
    )


def _concatenate(label: str, parts: Sequence[Any]) -> Any:
    """One epoch's collected values of one source joined along the first dimension."""
    first = parts[0]
    if _is_tensor(first):
        torch = _torch()
        if not all(_is_tensor(p) for p in parts):
            raise _mixed(label, parts)
        if all(p.ndim == 0 for p in parts):
            return torch.stack(list(parts))
        shapes = {tuple(p.shape[1:]) for p in parts if p.ndim}
        if any(p.ndim == 0 for p in parts) or len(shapes) > 1:
            raise InputError(
                f"{label}: the steps returned tensors whose shapes cannot be joined along the first dimension: "
                f"{sorted({tuple(p.shape) for p in parts})}",
                details={"field": "outputs", "source": label},
            )
        devices = {p.device for p in parts}
        if len(devices) > 1:
            parts = [p.to(first.device) for p in parts]
        return torch.cat(list(parts))
    if _is_array(first):
        numpy = sys.modules["numpy"]
        if not all(_is_array(p) for p in parts):
            raise _mixed(label, parts)
        if all(p.ndim == 0 for p in parts):
            return numpy.stack(list(parts))
        if any(p.ndim == 0 for p in parts) or len({p.shape[1:] for p in parts}) > 1:
            raise InputError(
                f"{label}: the steps returned arrays whose shapes cannot be joined along the first dimension: "
                f"{sorted({p.shape for p in parts})}",
                details={"field": "outputs", "source": label},
            )
        return numpy.concatenate(list(parts))
    if all(isinstance(p, list) for p in parts):
        return [item for part in parts for item in part]
    if all(not isinstance(p, list) for p in parts):
        return list(parts)
    raise _mixed(label, parts)


def _mixed(label: str, parts: Sequence[Any]) -> InputError:
    kinds = sorted({type(p).__name__ for p in parts})
    return InputError(
        f"{label}: the steps returned values of different kinds ({', '.join(kinds)}), which cannot be joined",
        details={"field": "outputs", "source": label, "types": kinds},
    )


# ------------------------------------------------------------------ plans
class _Plan(NamedTuple):
    """How one metric is called, with each source named by a stable id: ``key:<name>`` for
    an output key, ``fn:<metric index>:<slot>`` for a callable (the same on every rank, and
    a plain tuple on the wire).
    """

    positional: tuple[str, ...]
    keyword: tuple[tuple[str, str], ...]

    def ids(self) -> tuple[str, ...]:
        return self.positional + tuple(source for _, source in self.keyword)


def _callable_ids(definitions: Sequence[MetricDefinition]) -> dict[int, str]:
    """A stable id for each callable source (one id per object, however often it is used)."""
    ids: dict[int, str] = {}
    for index, definition in enumerate(definitions):
        if definition.needs is None:
            continue
        for slot, source in enumerate(definition.needs.sources()):
            if not isinstance(source, str):
                ids.setdefault(id(source), f"fn:{index}:{slot}")
    return ids


def _describe_source(source_id: str, names: Sequence[str]) -> str:
    kind, _, rest = source_id.partition(":")
    if kind == "key":
        return f"output {rest!r}"
    index, _, slot = rest.partition(":")
    return f"the callable feeding argument {slot} of metric {names[int(index)]!r}"


# ------------------------------------------------------------------ distributed
def _group() -> Any:
    """``torch.distributed`` when a group of more than one rank is initialised, else ``None``."""
    dist = _distributed.process_group()
    return None if dist is None or dist.get_world_size() < 2 else dist


def _descriptor(value: Any) -> tuple[Any, ...]:
    if _is_tensor(value):
        return ("tensor", str(value.dtype).removeprefix("torch."), tuple(value.shape[1:]) if value.ndim else ())
    return ("other",)


DistributedMetricsError = DistributedError
"""Another rank could not compute its part of the metrics: :class:`~geno_lewm.errors.DistributedError`."""


@dataclass(slots=True)
class _Summary:
    """What one rank brings to ``compute``: its counts, per-step sums and the form of its
    collected data, or the error that stopped it (exchanged before any data moves).
    """

    updates: int
    rows: int | None
    sums: dict[str, tuple[float, int]]
    plans: tuple[_Plan, ...] | None
    descriptors: dict[str, tuple[Any, ...]]
    error: tuple[str, str, bool] | None = None


# ------------------------------------------------------------------ the core
class OutputMetrics:
    """Compute metrics from the outputs of training, validation or test steps.

    Call :meth:`update` with each step's outputs, :meth:`compute` when the values are
    wanted (an epoch's end, every n steps) and :meth:`reset` to start over. See the
    module documentation for what ``metrics`` and ``needs`` may be.

    Parameters
    ----------
    metrics:
        A mapping ``name -> metric``, a sequence of metrics or one metric.
    needs:
        Which outputs feed which argument: ``None`` (inferred), a sequence or mapping of
        sources for every metric, or a mapping of metric names to those.
    mode:
        ``"step"`` (per-batch values averaged with batch-size weights) or ``"epoch"``
        (exact, once on all collected outputs).
    collect_on_cpu:
        In ``"epoch"`` mode, keep collected tensors in host memory instead of on their
        device (spares accelerator memory; the metric then runs on the CPU).
    distributed:
        Combine the ranks' data in :meth:`compute` when a ``torch.distributed`` group of
        more than one rank is initialised (then every rank must call it, even one that
        saw no step). ``False``: each rank computes on its own data.

    Example
    -------
    >>> def mean_abs_error(preds, target):
    ...     return sum(abs(p - t) for p, t in zip(preds, target)) / len(preds)
    >>> metrics = OutputMetrics(mean_abs_error)
    >>> metrics.update({"preds": [1.0, 2.0, 3.0], "target": [1.0, 2.0, 0.0]})
    >>> metrics.update({"preds": [5.0], "target": [5.0]})
    >>> metrics.compute()  # (1.0 * 3 rows + 0.0 * 1 row) / 4 rows
    {'mean_abs_error': 0.75}
    """

    __slots__ = (
        "_callable_ids",
        "_columns",
        "_definitions",
        "_distributed",
        "_mode",
        "_on_cpu",
        "_plan_cache",
        "_plans",
        "_rows",
        "_sources",
        "_steps",
        "_updates",
    )

    def __init__(
        self,
        metrics: object,
        *,
        needs: object = None,
        mode: Mode = "step",
        collect_on_cpu: bool = False,
        distributed: bool = True,
    ) -> None:
        if mode not in ("step", "epoch"):
            raise InputError(
                f"'mode' must be 'step' or 'epoch': got {mode!r}", details={"field": "mode", "value": mode}
            )
        for flag, value in (("collect_on_cpu", collect_on_cpu), ("distributed", distributed)):
            if not isinstance(value, bool):
                raise InputError(
                    f"{flag!r} must be True or False: got {value!r}", details={"field": flag, "value": value}
                )
        if _is_definitions(metrics):
            if needs is not None:
                raise InputError(
                    "'needs' must be None when 'metrics' are MetricDefinition objects (they carry their own)",
                    details={"field": "needs"},
                )
            definitions: tuple[MetricDefinition, ...] = metrics  # type: ignore[assignment]
        else:
            definitions = define_metrics(metrics, needs)
        self._definitions = definitions
        self._mode: Mode = mode
        self._on_cpu = collect_on_cpu
        self._distributed = distributed
        self._callable_ids = _callable_ids(definitions)
        self._plan_cache: dict[tuple[str, ...], tuple[tuple[_Plan, ...], dict[str, Source]]] = {}
        self._plans: tuple[_Plan, ...] | None = None
        self._sources: dict[str, Source] = {}
        self._steps: dict[str, tuple[list[float], list[int]]] = {}
        self._columns: dict[str, list[Any]] = {}
        self._updates = 0
        self._rows: int | None = 0

    # ------------------------------------------------------------ properties
    @property
    def definitions(self) -> tuple[MetricDefinition, ...]:
        """The metrics, in order."""
        return self._definitions

    @property
    def names(self) -> tuple[str, ...]:
        """The metrics' names, in order."""
        return tuple(d.name for d in self._definitions)

    @property
    def mode(self) -> Mode:
        """``"step"`` or ``"epoch"``."""
        return self._mode

    @property
    def collect_on_cpu(self) -> bool:
        """Whether collected tensors are kept in host memory."""
        return self._on_cpu

    @property
    def distributed(self) -> bool:
        """Whether :meth:`compute` combines the ranks of a process group."""
        return self._distributed

    @property
    def updates(self) -> int:
        """Steps accepted by :meth:`update` since the last :meth:`reset` (on this rank)."""
        return self._updates

    def fresh(self) -> OutputMetrics:
        """A new, empty ``OutputMetrics`` with the same metrics and settings; torchmetrics
        metrics are cloned, so the two accumulate separately (e.g. one per stage).
        """
        definitions = tuple(
            MetricDefinition(d.name, d.metric.clone() if d.stateful else d.metric, d.kind, d.needs, d.parameters)
            for d in self._definitions
        )
        return OutputMetrics(definitions, mode=self._mode, collect_on_cpu=self._on_cpu, distributed=self._distributed)

    # ------------------------------------------------------------ update
    def _plan(self, keys: tuple[str, ...]) -> tuple[tuple[_Plan, ...], dict[str, Source]]:
        """The call plan of every metric for outputs with ``keys`` (cached per key set)."""
        cached = self._plan_cache.get(keys)
        if cached is not None:
            return cached
        plans = []
        sources: dict[str, Source] = {}

        def identify(source: Source) -> str:
            source_id = f"key:{source}" if isinstance(source, str) else self._callable_ids[id(source)]
            sources[source_id] = source
            return source_id

        for definition in self._definitions:
            bound = resolve_needs(definition, keys)
            plans.append(
                _Plan(
                    tuple(identify(s) for s in bound.positional),
                    tuple((p, identify(s)) for p, s in bound.keyword),
                )
            )
        result = (tuple(plans), sources)
        self._plan_cache[keys] = result
        return result

    def update(self, outputs: Any, *, batch: Any = None, batch_size: int | None = None) -> None:
        """Feed one step's outputs to every metric.

        Parameters
        ----------
        outputs:
            What the step returned: a mapping of names to values (tensors, arrays,
            sequences, numbers). Anything else counts as ``{"output": outputs}``.
        batch:
            The step's input batch; a source may name it as the key ``"batch"`` (when the
            outputs have no such key), and callables find it there.
        batch_size:
            Rows of the step, the weight of its per-step values; inferred from each
            metric's first argument when omitted.

        Raises
        ------
        InputError
            For outputs that lack a key a metric needs, values that cannot be weighed or
            collected, or a metric result that is not a number. Nothing is recorded then;
            torchmetrics metrics are updated last, after every other check (an error
            raised by one of their own ``update`` methods leaves the ones before it
            updated).
        """
        if outputs is None:
            raise InputError(
                "the step returned no outputs (None): return a mapping holding what the metrics need",
                details={"field": "outputs"},
            )
        if batch_size is not None:
            batch_size = check_positive_int("batch_size", batch_size)
        view: dict[str, Any] = dict(outputs) if isinstance(outputs, Mapping) else {_OUTPUT_KEY: outputs}
        for key in view:
            if not isinstance(key, str):
                raise InputError(
                    f"the outputs' keys must be strings: got {key!r}", details={"field": "outputs", "value": repr(key)}
                )
        keys = tuple(view)
        if batch is not None and _BATCH_KEY not in view:
            view[_BATCH_KEY] = batch
        plans, sources = self._plan(keys)
        if self._mode == "epoch" and self._plans is not None and plans != self._plans:
            raise InputError(
                f"the outputs' keys changed within the period ({_keys_text(keys)}), so the metrics would be fed from "
                "other outputs than at its first step: return the same keys at every step, or give 'needs'",
                details={"field": "outputs", "keys": list(keys)},
            )
        values: dict[str, Any] = {}
        for plan, definition in zip(plans, self._definitions):
            for source_id in plan.ids():
                if source_id not in values:
                    values[source_id] = self._read(definition, sources[source_id], view)
        arguments = [([values[i] for i in plan.positional], {p: values[i] for p, i in plan.keyword}) for plan in plans]
        rows = [self._step_rows(args, kwargs, batch_size) for args, kwargs in arguments]
        torch = _torch()
        pending_steps: list[tuple[str, float, int]] = []
        pending_columns: dict[str, Any] = {}
        if self._mode == "step":
            for definition, (args, kwargs), weight in zip(self._definitions, arguments, rows):
                if definition.stateful:
                    continue
                if weight is None:
                    raise InputError(
                        f"metric {definition.name!r}: cannot tell the batch size from its inputs to weigh its value; "
                        "pass batch_size",
                        details={"field": "batch_size", "metric": definition.name},
                    )
                pending_steps.append((definition.name, self._call(definition, args, kwargs, torch), weight))
        else:
            for plan, definition in zip(plans, self._definitions):
                if not definition.stateful:
                    for source_id in plan.ids():
                        if source_id not in pending_columns:
                            pending_columns[source_id] = _collected(values[source_id], self._on_cpu)
        for definition, (args, kwargs) in zip(self._definitions, arguments):
            if definition.stateful:
                self._call(definition, args, kwargs, torch)
        for name, value, weight in pending_steps:
            step_values, step_weights = self._steps.setdefault(name, ([], []))
            step_values.append(value)
            step_weights.append(weight)
        for source_id, value in pending_columns.items():
            self._columns.setdefault(source_id, []).append(value)
        self._plans = plans
        self._updates += 1
        step_rows = batch_size if batch_size is not None else next((r for r in rows if r is not None), None)
        self._rows = None if self._rows is None or step_rows is None else self._rows + step_rows

    @staticmethod
    def _read(definition: MetricDefinition, source: Source, view: Mapping[str, Any]) -> Any:
        if not isinstance(source, str):
            return source(view)
        if source not in view:
            raise InputError(
                f"metric {definition.name!r} needs output {source!r}, which the step did not return; the outputs "
                f"have {_keys_text(view)}",
                details={"field": "outputs", "metric": definition.name, "key": source, "keys": list(view)},
            )
        return view[source]

    @staticmethod
    def _step_rows(args: Sequence[Any], kwargs: Mapping[str, Any], batch_size: int | None) -> int | None:
        if batch_size is not None:
            return batch_size
        first = args[0] if args else next(iter(kwargs.values()), None)
        count = _rows(first)
        if count == 0:
            raise InputError(
                "a step's outputs hold an empty batch (0 rows): skip such steps", details={"field": "outputs"}
            )
        return count

    @staticmethod
    def _call(definition: MetricDefinition, args: Sequence[Any], kwargs: Mapping[str, Any], torch: Any) -> float:
        """Call the metric (``update`` for torchmetrics) without autograd; its number."""
        convert = _for_sklearn if definition.kind == "sklearn" else _detached
        call_args = [convert(a) for a in args]
        call_kwargs = {k: convert(v) for k, v in kwargs.items()}
        function = definition.metric.update if definition.stateful else definition.metric
        if torch is not None:
            with torch.no_grad():
                result = function(*call_args, **call_kwargs)
        else:
            result = function(*call_args, **call_kwargs)
        return 0.0 if definition.stateful else _as_number(definition.name, result)

    # ------------------------------------------------------------ compute
    def _summary(self) -> tuple[_Summary, dict[str, Any], BaseException | None]:
        """The summary and joined columns of this rank; an error is kept to be shared, not raised."""
        summary = _Summary(self._updates, self._rows, {}, self._plans, {})
        columns: dict[str, Any] = {}
        error: BaseException | None = None
        try:
            for name, (values, weights) in self._steps.items():
                summary.sums[name] = (math.fsum(v * w for v, w in zip(values, weights)), sum(weights))
            for source_id, parts in self._columns.items():
                columns[source_id] = _concatenate(_describe_source(source_id, self.names), parts)
                summary.descriptors[source_id] = _descriptor(columns[source_id])
        except Exception as caught:  # every rank must hear of it before any data moves
            error = caught
            summary.error = _distributed.describe_error(caught)
        return summary, columns, error

    def compute_values(self) -> tuple[MetricValue, ...]:
        """Every metric's value over the steps since the last :meth:`reset`, with the rows
        it covers and how it was computed; ``()`` when no step was seen (on any rank).

        Collective under ``torch.distributed`` (see the class documentation). Nothing is
        reset.
        """
        summary, columns, error = self._summary()
        dist = _group() if self._distributed else None
        if dist is None:
            if error is not None:
                raise error
            if summary.updates == 0 or summary.plans is None:
                return ()
            return self._finish(summary.plans, columns, summary.sums, summary.rows)
        summaries = self._exchange(dist, summary, error)
        plans = next((s.plans for s in summaries if s.plans is not None), None)
        if plans is None:
            return ()
        sums: dict[str, tuple[float, int]] = {}
        for name in self.names:
            parts = [s.sums[name] for s in summaries if name in s.sums]
            if parts:
                sums[name] = (math.fsum(p[0] for p in parts), sum(p[1] for p in parts))
        counts = [s.rows for s in summaries]
        rows = None if any(c is None for c in counts) else sum(c for c in counts if c is not None)
        gathered = self._gather_columns(dist, columns, [s.descriptors for s in summaries])
        return self._finish(plans, gathered, sums, rows)

    def _exchange(self, dist: Any, summary: _Summary, error: BaseException | None) -> list[_Summary]:
        """All-gather the ranks' summaries; raise on every rank when any rank failed or
        when the ranks fed their metrics from different outputs.
        """
        gathered: list[_Summary] = _distributed.all_gather_objects(dist, summary)
        _distributed.raise_for_failures([s.error for s in gathered], error, doing="compute its part of the metrics")
        if self._mode == "epoch":
            plans = {s.plans for s in gathered if s.plans is not None}
            if len(plans) > 1:
                raise InputError(
                    "the ranks fed their metrics from different outputs (their steps returned different keys): return "
                    "the same keys on every rank, or give 'needs'",
                    details={"field": "outputs"},
                )
        return list(gathered)

    def _gather_columns(
        self, dist: Any, columns: Mapping[str, Any], descriptors: Sequence[Mapping[str, tuple[Any, ...]]]
    ) -> dict[str, Any]:
        """Each collected source joined over all ranks, in rank order (tensors through one
        padded all-gather, anything else as Python objects).
        """
        out: dict[str, Any] = {}
        ids = sorted({source_id for d in descriptors for source_id in d})
        for source_id in ids:
            present = [d[source_id] for d in descriptors if source_id in d]
            mine = columns.get(source_id)
            if present[0][0] == "tensor" and all(p == present[0] for p in present):
                torch = _torch()
                _, dtype, trailing = present[0]
                if mine is None:
                    mine = torch.empty((0, *trailing), dtype=getattr(torch, dtype))
                out[source_id] = _distributed.all_gather_rows(mine)
            else:
                parts = _distributed.all_gather_objects(dist, mine)
                joined = [p for p in parts if p is not None]
                if len({_descriptor(p)[0] for p in joined}) > 1:
                    joined = [_for_sklearn(p) for p in joined]
                out[source_id] = _concatenate(_describe_source(source_id, self.names), joined)
        return out

    def _finish(
        self,
        plans: Sequence[_Plan],
        columns: Mapping[str, Any],
        sums: Mapping[str, tuple[float, int]],
        rows: int | None,
    ) -> tuple[MetricValue, ...]:
        torch = _torch()
        results = []
        for definition, plan in zip(self._definitions, plans):
            if definition.stateful:
                value = _as_number(definition.name, definition.metric.compute())
                results.append(MetricValue(definition.name, value, rows, "torchmetrics"))
            elif self._mode == "step":
                total, weight = sums[definition.name]
                results.append(MetricValue(definition.name, total / weight, weight, "batch_weighted_mean"))
            else:
                args = [columns[i] for i in plan.positional]
                kwargs = {p: columns[i] for p, i in plan.keyword}
                value = self._call(definition, args, kwargs, torch)
                results.append(MetricValue(definition.name, value, rows, "exact_on_collected"))
        return tuple(results)

    def compute(self) -> dict[str, float]:
        """Metric name -> value over the steps since the last :meth:`reset`; ``{}`` when no
        step was seen. Collective under ``torch.distributed``.
        """
        return {value.name: value.value for value in self.compute_values()}

    def reset(self) -> None:
        """Forget every step (and reset torchmetrics metrics) to start a new period."""
        self._steps.clear()
        self._columns.clear()
        self._plans = None
        self._updates = 0
        self._rows = 0
        for definition in self._definitions:
            if definition.stateful:
                definition.metric.reset()

    def __repr__(self) -> str:
        return f"OutputMetrics(names={list(self.names)!r}, mode={self._mode!r}, updates={self._updates})"


def _is_definitions(value: object) -> bool:
    return isinstance(value, tuple) and bool(value) and all(isinstance(v, MetricDefinition) for v in value)
