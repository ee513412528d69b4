"""Metrics as validated definitions: their names, kinds, and what feeds each argument.

:func:`define_metrics` checks everything that can be checked before any output exists
(names, kinds, the form of ``needs``, that explicit ``needs`` fit each metric's
signature); :func:`resolve_needs` binds a definition to the keys a step returned, with
synonyms for predictions and targets. See :mod:`geno_lewm.training.output_metrics`.
"""

from __future__ import annotations

import inspect
import re
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

from geno_lewm.errors import InputError

__all__ = [
    "PREDICTION_KEYS",
    "TARGET_KEYS",
    "Kind",
    "MetricDefinition",
    "MetricValue",
    "Mode",
    "Needs",
    "Source",
    "define_metrics",
    "infer_metric_name",
    "keys_text",
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


def keys_text(keys: Iterable[str]) -> str:
    """Output keys as a message lists them (``none`` when there are none)."""
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
                    f"{keys_text(candidates)}; say which with needs={{{definition.name!r}: {{{suggestion}}}}}",
                    details={"field": "needs", "metric": definition.name, "parameter": parameter, "keys": candidates},
                )
            if not candidates:
                also = f" or one of its synonyms ({', '.join(synonyms)})" if synonyms else ""
                raise InputError(
                    f"metric {definition.name!r}: no output key {parameter!r}{also} for its parameter {parameter!r}; "
                    f"the outputs have {keys_text(keys)}: return it from the step or give the metric's 'needs'",
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
