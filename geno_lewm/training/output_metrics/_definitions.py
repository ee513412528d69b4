"""Metrics as validated definitions: their names, kinds, and what feeds each argument.

:func:`define_metrics` checks everything that can be checked before any output exists
(names, kinds, the form of ``needs``, that explicit ``needs`` fit each metric's
signature); :func:`resolve_needs` binds a definition to the keys a step returned, by
name or by a name of the same meaning, never by a guess. See
:mod:`geno_lewm.training.output_metrics`.
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

_MEANINGS: tuple[tuple[str, ...], ...] = (
    ("preds", "pred", "predictions", "prediction", "y_pred", "y_hat"),
    ("y_score", "scores"),
    ("y_prob", "y_proba", "probs", "probas_pred"),
    ("logits",),
    ("output", "outputs"),
    ("target", "targets", "y_true", "y", "labels", "label", "truth"),
)
"""Names of the same thing, one group per meaning: predicted values or labels, scores,
probabilities, raw logits, a step's bare output, and targets."""

PREDICTION_KEYS: tuple[str, ...] = tuple(name for group in _MEANINGS[:5] for name in group)
"""The names a prediction goes by. Inference feeds a parameter named one of these from the
one output key of the *same meaning* (``y_pred`` from ``preds``; a score parameter also
from probabilities; a torchmetrics metric's ``preds`` from any of them); a key of another
meaning (``logits`` for ``y_pred``) would be a guess, and is an error naming it."""

TARGET_KEYS: tuple[str, ...] = _MEANINGS[5]
"""The names a target goes by, all of one meaning (``y_true`` is fed from ``labels``)."""

_FAMILIES: dict[str, tuple[str, ...]] = {
    **dict.fromkeys(PREDICTION_KEYS, PREDICTION_KEYS),
    **dict.fromkeys(TARGET_KEYS, TARGET_KEYS),
}
_ACCEPTED: dict[str, tuple[str, ...]] = {
    **{name: group for group in _MEANINGS for name in group},
    **dict.fromkeys(_MEANINGS[1], _MEANINGS[1] + _MEANINGS[2]),  # probabilities are scores too
}
"""Parameter name -> the key names inference may feed it from: its own meaning's (a score
also takes probabilities)."""
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


def _is_source(value: object) -> bool:
    """Whether ``value`` is one source (an output key or a callable), not a list or mapping of them."""
    return (isinstance(value, str) and bool(value)) or (callable(value) and not isinstance(value, Needs))


def _is_spec(value: object) -> bool:
    """Whether ``value`` has the form of one metric's whole ``needs`` (a list, a mapping, ``None``)."""
    return value is None or isinstance(value, (list, tuple, Mapping, Needs))


def _normalise_needs(
    name: str, needs: object, signature: inspect.Signature | None, *, one_source: bool = False
) -> Needs:
    """Check one metric's explicit ``needs`` and that its signature accepts them.

    With ``one_source`` (a value of a mapping keyed by metric names), a single output key
    or callable is the metric's one positional source.
    """
    single = one_source and _is_source(needs)
    if single:
        needs = [needs]
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
            f"or callables: got {type(needs).__name__}; {NEEDS_FORMS}",
            details={"field": "needs", "metric": name, "type": type(needs).__name__},
        )
    if signature is not None:
        try:
            signature.bind(*placeholders[0], **placeholders[1])
        except TypeError as error:
            hint = " (one source feeds the first argument alone: give a list or a mapping for more)" if single else ""
            raise InputError(
                f"'needs' of metric {name!r} does not fit its signature {signature}: {error}{hint}",
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


NEEDS_FORMS = (
    "'needs' may be None (inferred from the signatures and the output keys), a list of sources (positional) or a "
    "mapping parameter -> source (keyword) for every metric, or a mapping metric name -> that metric's own needs "
    "(one source, a list, a mapping, or None to infer); a source is an output key or a callable on the outputs"
)
"""The accepted forms of ``needs``, as error messages state them."""


def _binds(signature: inspect.Signature | None, args: Sequence[object], kwargs: Mapping[str, object]) -> bool:
    """Whether ``signature`` is known and accepts these arguments."""
    if signature is None:
        return False
    try:
        signature.bind(*args, **kwargs)
    except TypeError:
        return False
    return True


def _arguments(signature: inspect.Signature, args: Sequence[object], kwargs: Mapping[str, object]) -> dict[str, Any]:
    """Parameter -> source as ``signature`` binds these arguments (they must fit)."""
    return dict(signature.bind(*args, **kwargs).arguments)


def _one_source_each(needs: Mapping[str, object], signatures: Mapping[str, inspect.Signature | None]) -> bool:
    """Whether a mapping of metric names to one source each gives each metric its source.

    Such a mapping says "metric ``m`` is fed from this source" (the reference's form) or,
    read as keyword sources for every metric, "parameter ``m`` of every metric is fed
    from it". The first reading is taken unless only the second fits the signatures;
    when both fit and would feed some metric differently, the mapping is refused as
    ambiguous.
    """
    if not all(_binds(signature, (), needs) for signature in signatures.values()):
        return True
    one_fits = all(
        signature is None or _binds(signature, (needs[name],), {})
        for name, signature in signatures.items()
        if name in needs
    )
    if not one_fits:
        return False
    same = all(
        name in needs
        and signature is not None
        and _arguments(signature, (needs[name],), {}) == _arguments(signature, (), needs)
        for name, signature in signatures.items()
    )
    if same:
        return True
    example = next(iter(needs))
    source = _shown(needs[example])
    raise InputError(
        f"'needs' {_shown(needs)} is ambiguous: its keys are metric names and also parameters of every metric, and "
        f"the two readings feed the metrics differently. Say which: needs={{{example!r}: [{source}]}} feeds metric "
        f"{example!r} its first argument, needs={{{example!r}: {{{example!r}: {source}}}}} its parameter "
        f"{example!r}. {NEEDS_FORMS}",
        details={"field": "needs", "value": list(needs)},
    )


def _shown(value: object) -> str:
    """A mapping or source as an error message shows it (callables by name)."""
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k!r}: {_shown(v)}" for k, v in value.items()) + "}"
    if isinstance(value, str):
        return repr(value)
    return f"<{getattr(value, '__name__', type(value).__name__)}>"


def _per_metric_needs(
    needs: object, signatures: Mapping[str, inspect.Signature | None]
) -> dict[str, tuple[object, bool]]:
    """``(needs, own)`` for each metric name: ``_INFER`` where inferred; ``own`` when the
    value is the metric's own entry of a mapping keyed by metric names (where one source
    alone is accepted).

    A mapping is read as per-metric ``needs`` when its keys are metric names, else as
    keyword sources for every metric; see :func:`_one_source_each` for a mapping that
    could be either.
    """
    names = list(signatures)
    if needs is None:
        return dict.fromkeys(names, (_INFER, False))
    if not isinstance(needs, Mapping) or not needs:
        return dict.fromkeys(names, (needs, False))
    keys = list(needs)
    named = [key for key in keys if key in signatures]
    others = [key for key in keys if key not in signatures]
    listed = ", ".join(map(repr, names))
    if not named:
        key = next((k for k in keys if _is_spec(needs[k])), None)
        if key is None:  # keyword sources for every metric (a bad source is reported with its metric)
            return dict.fromkeys(names, (needs, False))
        raise InputError(
            f"'needs' key {key!r} is not a metric name (metrics: {listed}), and in a mapping of parameters to "
            f"sources its value must be an output key or a callable: got {type(needs[key]).__name__}. "
            f"{NEEDS_FORMS}",
            details={"field": "needs", "value": others},
        )
    if others:
        specs = any(_is_spec(value) for value in needs.values())
        if not specs and all(_binds(signature, (), needs) for signature in signatures.values()):
            return dict.fromkeys(names, (needs, False))  # parameters of every metric, one named like a metric
        raise InputError(
            f"'needs' mixes metric names ({', '.join(map(repr, named))}) with other keys "
            f"({', '.join(map(repr, others))}): give one mapping of parameter -> source for every metric, or one "
            f"entry per metric name (metrics: {listed}). {NEEDS_FORMS}",
            details={"field": "needs", "value": others},
        )
    if all(_is_source(value) for value in needs.values()) and not _one_source_each(needs, signatures):
        return dict.fromkeys(names, (needs, False))
    return {name: (_INFER, True) if needs.get(name) is None else (needs[name], True) for name in names}


def define_metrics(metrics: object, needs: object = None) -> tuple[MetricDefinition, ...]:
    """Validate ``metrics`` and ``needs`` into one :class:`MetricDefinition` per metric.

    Everything that can be checked without outputs is checked here: names, kinds, the
    form of ``needs`` and that each explicit ``needs`` fits the metric's signature, and
    that a metric whose inputs are to be inferred has an inspectable signature. ``needs``
    takes the forms of :data:`NEEDS_FORMS`; in a mapping keyed by metric names, one
    output key or callable is that metric's one positional source.

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
    torchmetrics = sys.modules.get("torchmetrics")
    kinds: dict[str, Kind] = {}
    signatures: dict[str, inspect.Signature | None] = {}
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
        kinds[name] = _kind(metric)
        signatures[name] = _signature_of(metric, kinds[name])
    per_metric = _per_metric_needs(needs, signatures)
    definitions = []
    for name, metric in pairs:
        kind, signature = kinds[name], signatures[name]
        wanted, own = per_metric[name]
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
            needs_of = _normalise_needs(name, wanted, signature, one_source=own)
            definitions.append(MetricDefinition(name, metric, kind, needs_of))
    return tuple(definitions)


def keys_text(keys: Iterable[str]) -> str:
    """Output keys as a message lists them (``none`` when there are none)."""
    shown = ", ".join(repr(k) for k in keys)
    return shown or "none"


def resolve_needs(definition: MetricDefinition, keys: Sequence[str]) -> Needs:
    """How ``definition`` is fed from outputs with ``keys``.

    Explicit ``needs`` are used as given (a key that is missing is reported when the
    outputs are read). Inferred ones look up each required parameter: the key of the same
    name, else the only key of the same meaning (``y_pred`` from ``preds``, ``y_true``
    from ``labels``). Nothing else is inferred: a key that names another kind of
    prediction (``logits`` or ``probs`` for ``y_pred``) might be right for one metric and
    wrong for the next, so it is reported, not used. The exception is the ``preds`` of a
    torchmetrics metric, which torchmetrics documents to take logits, probabilities or
    labels alike: any one prediction key feeds it.

    Raises
    ------
    InputError
        Naming the metric, the parameter and the candidate keys, when a parameter has no
        key (the message lists the keys there are), several candidate keys, or only a key
        of another meaning; before any metric is called.
    """
    if definition.needs is not None:
        return definition.needs
    positional: list[Source] = []
    keyword: list[tuple[str, Source]] = []
    used: dict[str, str] = {}
    for parameter, is_positional in definition.parameters:
        key = parameter if parameter in keys else _inferred_key(definition, parameter, keys)
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


def _inferred_key(definition: MetricDefinition, parameter: str, keys: Sequence[str]) -> str:
    """The one output key of the same meaning as ``parameter`` (which no key is named after)."""
    family = _FAMILIES.get(parameter, ())
    if definition.kind == "torchmetrics" and parameter == "preds":
        same = PREDICTION_KEYS  # torchmetrics documents logits, probabilities and labels as preds, and converts them
    else:
        same = _ACCEPTED.get(parameter, ())
    candidates = [k for k in keys if k in family]
    suggestion = ", ".join(f"{p!r}: ..." for p, _ in definition.parameters)
    how = f"say which with needs={{{definition.name!r}: {{{suggestion}}}}}"
    details = {"field": "needs", "metric": definition.name, "parameter": parameter, "keys": candidates}
    if len(candidates) > 1:
        raise InputError(
            f"metric {definition.name!r}: parameter {parameter!r} could be fed by any of the output keys "
            f"{keys_text(candidates)}; {how}",
            details=details,
        )
    if not candidates:
        others = [name for name in family if name != parameter]
        also = f" or one of its synonyms ({', '.join(others)})" if others else ""
        raise InputError(
            f"metric {definition.name!r}: no output key {parameter!r}{also} for its parameter {parameter!r}; "
            f"the outputs have {keys_text(keys)}: return it from the step or give the metric's 'needs'",
            details={**details, "keys": list(keys)},
        )
    (key,) = candidates
    if key not in same:
        alike = ", ".join(repr(name) for name in same if name != parameter)
        meaning = f" or of a name of the same meaning ({alike})" if alike else ""
        raise InputError(
            f"metric {definition.name!r}: parameter {parameter!r} has no output key of its name{meaning}; output "
            f"key {key!r} could feed it only as a guess (another kind of output: right for some metrics, wrong for "
            f"others); {how}, a source being an output key or a callable on the outputs (e.g. one that turns "
            "logits into labels)",
            details=details,
        )
    return key
