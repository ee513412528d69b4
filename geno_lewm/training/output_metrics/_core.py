"""The framework-free core of output metrics: :class:`OutputMetrics`.

Update with each step's outputs, compute when values are wanted, reset for a new period;
under ``torch.distributed`` the ranks' data are combined through
:mod:`geno_lewm._distributed`. See :mod:`geno_lewm.training.output_metrics`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from geno_lewm import _distributed
from geno_lewm._validation import check_bool, check_choice, check_positive_int
from geno_lewm.errors import DistributedError, InputError
from geno_lewm.training.output_metrics._definitions import (
    MetricDefinition,
    MetricValue,
    Mode,
    Source,
    define_metrics,
    keys_text,
    resolve_needs,
)
from geno_lewm.training.output_metrics._values import (
    as_number,
    collected,
    concatenate,
    descriptor,
    detached,
    for_sklearn,
    row_count,
    torch_module,
)

__all__ = ["DistributedMetricsError", "OutputMetrics"]

_MODES: tuple[Mode, ...] = ("step", "epoch")
_BATCH_KEY = "batch"
_OUTPUT_KEY = "output"


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
        (exact, once on all collected outputs). A mapping of stages to modes, which
        :class:`~geno_lewm.integrations.metrics_callback.MetricsCallback` and the
        configuration take, is refused here with a message saying so: this object
        computes one period in one mode.
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
        mode: Mode | Mapping[Any, Mode] = "step",
        collect_on_cpu: bool = False,
        distributed: bool = True,
    ) -> None:
        if isinstance(mode, Mapping):
            raise InputError(
                f"'mode' must be 'step' or 'epoch': got a mapping {dict(mode)!r} (a mode per stage is for "
                "MetricsCallback, which has stages; OutputMetrics computes one period in one mode)",
                details={"field": "mode", "type": type(mode).__name__},
            )
        chosen = check_choice("mode", mode, _MODES)
        check_bool("collect_on_cpu", collect_on_cpu)
        check_bool("distributed", distributed)
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
        self._mode: Mode = chosen
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

    def fresh(self, *, mode: Mode | None = None) -> OutputMetrics:
        """A new, empty ``OutputMetrics`` with the same metrics and settings; torchmetrics
        metrics are cloned, so the two accumulate separately (e.g. one per stage).

        ``mode`` gives the copy another mode (a stage computed per epoch beside one
        computed per step); ``None`` keeps this one's.
        """
        definitions = tuple(
            MetricDefinition(d.name, d.metric.clone() if d.stateful else d.metric, d.kind, d.needs, d.parameters)
            for d in self._definitions
        )
        return OutputMetrics(
            definitions,
            mode=self._mode if mode is None else mode,
            collect_on_cpu=self._on_cpu,
            distributed=self._distributed,
        )

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
                f"the outputs' keys changed within the period ({keys_text(keys)}), so the metrics would be fed from "
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
        torch = torch_module()
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
                            pending_columns[source_id] = collected(values[source_id], self._on_cpu)
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
                f"have {keys_text(view)}",
                details={"field": "outputs", "metric": definition.name, "key": source, "keys": list(view)},
            )
        return view[source]

    @staticmethod
    def _step_rows(args: Sequence[Any], kwargs: Mapping[str, Any], batch_size: int | None) -> int | None:
        if batch_size is not None:
            return batch_size
        first = args[0] if args else next(iter(kwargs.values()), None)
        count = row_count(first)
        if count == 0:
            raise InputError(
                "a step's outputs hold an empty batch (0 rows): skip such steps", details={"field": "outputs"}
            )
        return count

    @staticmethod
    def _call(definition: MetricDefinition, args: Sequence[Any], kwargs: Mapping[str, Any], torch: Any) -> float:
        """Call the metric (``update`` for torchmetrics) without autograd; its number."""
        convert = for_sklearn if definition.kind == "sklearn" else detached
        call_args = [convert(a) for a in args]
        call_kwargs = {k: convert(v) for k, v in kwargs.items()}
        function = definition.metric.update if definition.stateful else definition.metric
        if torch is not None:
            with torch.no_grad():
                result = function(*call_args, **call_kwargs)
        else:
            result = function(*call_args, **call_kwargs)
        return 0.0 if definition.stateful else as_number(definition.name, result)

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
                columns[source_id] = concatenate(_describe_source(source_id, self.names), parts)
                summary.descriptors[source_id] = descriptor(columns[source_id])
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
                torch = torch_module()
                _, dtype, trailing = present[0]
                if mine is None:
                    mine = torch.empty((0, *trailing), dtype=getattr(torch, dtype))
                out[source_id] = _distributed.all_gather_rows(mine)
            else:
                parts = _distributed.all_gather_objects(dist, mine)
                joined = [p for p in parts if p is not None]
                if len({descriptor(p)[0] for p in joined}) > 1:
                    joined = [for_sklearn(p) for p in joined]
                out[source_id] = concatenate(_describe_source(source_id, self.names), joined)
        return out

    def _finish(
        self,
        plans: Sequence[_Plan],
        columns: Mapping[str, Any],
        sums: Mapping[str, tuple[float, int]],
        rows: int | None,
    ) -> tuple[MetricValue, ...]:
        torch = torch_module()
        results = []
        for definition, plan in zip(self._definitions, plans):
            if definition.stateful:
                value = as_number(definition.name, definition.metric.compute())
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
