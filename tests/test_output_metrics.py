"""OutputMetrics, the framework-free core of the metrics callback: naming, ``needs``
inference and its errors, per-step batch-weighted averaging, exact per-epoch computation,
torchmetrics driven through their own update/compute/reset, and two gloo ranks with
shards of unequal sizes compared with one process.
"""

from __future__ import annotations

import itertools
import json
import math
from fractions import Fraction
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from geno_lewm.errors import InputError
from geno_lewm.training.output_metrics import (
    MetricDefinition,
    Needs,
    OutputMetrics,
    define_metrics,
    infer_metric_name,
    resolve_needs,
)

try:
    from hypothesis import given, settings
    from hypothesis import strategies as st
except ImportError:  # pragma: no cover - hypothesis is a test extra
    given = None


# ------------------------------------------------------------------ helpers
def mean_abs_error(preds: Any, target: Any) -> float:
    """A decomposable metric: mean of |p - t| over rows (plain Python)."""
    return math.fsum(abs(float(p) - float(t)) for p, t in zip(preds, target)) / len(preds)


def max_abs_error(preds: Any, target: Any) -> float:
    """A metric that is not a mean over rows, so per-step and per-epoch differ."""
    return max(abs(float(p) - float(t)) for p, t in zip(preds, target))


def exact_weighted_mean(values: list[float], sizes: list[int]) -> Fraction:
    """sum(v_b n_b) / sum(n_b), exactly."""
    return sum((Fraction(v) * n for v, n in zip(values, sizes)), Fraction(0)) / sum(sizes)


def split(rows: list[Any], sizes: list[int]) -> list[list[Any]]:
    out, start = [], 0
    for size in sizes:
        out.append(rows[start : start + size])
        start += size
    return out


PREDS = [0.5, 1.0, 4.0, -2.0, 3.0, 0.0, 7.5]
TARGET = [0.0, 1.0, 1.0, -1.0, 3.5, 2.0, 7.0]
SIZES = [3, 3, 1]  # an uneven last batch


# ------------------------------------------------------------------ names and definitions
def test_names_are_inferred_from_functions_partials_and_classes() -> None:
    """A function gives its __name__ (through partial), an object its class name in snake case."""

    class MulticlassAccuracyLike:
        def __call__(self, preds: Any, target: Any) -> float:
            return 0.0

    assert infer_metric_name(mean_abs_error) == "mean_abs_error"
    assert infer_metric_name(partial(partial(mean_abs_error), target=[1])) == "mean_abs_error"
    assert infer_metric_name(MulticlassAccuracyLike()) == "multiclass_accuracy_like"
    assert OutputMetrics([mean_abs_error, max_abs_error]).names == ("mean_abs_error", "max_abs_error")
    assert OutputMetrics(mean_abs_error).names == ("mean_abs_error",)


def test_a_lambda_needs_a_name() -> None:
    """A lambda has no usable name: the error asks for a mapping; in a mapping it is fine."""
    with pytest.raises(InputError, match="give the metrics as a mapping"):
        OutputMetrics([lambda preds, target: 0.0])
    assert OutputMetrics({"zero": lambda preds, target: 0.0}).names == ("zero",)


@pytest.mark.parametrize(
    ("metrics", "message"),
    [
        ([mean_abs_error, mean_abs_error], "would both be called 'mean_abs_error'"),
        ({"not a name": mean_abs_error}, "must be identifiers"),
        ({}, "at least one metric"),
        ([], "at least one metric"),
        ([mean_abs_error, 3], "got int"),
        ({"x": "accuracy"}, "must be a torchmetrics Metric"),
        ({"cls": dict}, "is a class"),
    ],
)
def test_malformed_metrics_are_refused(metrics: Any, message: str) -> None:
    """Duplicate names, non-identifiers, nothing, non-callables and classes are refused."""
    with pytest.raises(InputError, match=message):
        OutputMetrics(metrics)


def test_settings_are_validated() -> None:
    """mode, collect_on_cpu and distributed are checked, with the field in the details."""
    with pytest.raises(InputError, match="'mode' must be 'step' or 'epoch'") as error:
        OutputMetrics(mean_abs_error, mode="batch")  # type: ignore[arg-type]
    assert error.value.details["field"] == "mode"
    with pytest.raises(InputError, match="'collect_on_cpu' must be True or False"):
        OutputMetrics(mean_abs_error, collect_on_cpu=1)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="'batch_size' must be a positive integer: got 0"):
        OutputMetrics(mean_abs_error).update({"preds": [1.0], "target": [1.0]}, batch_size=0)


# ------------------------------------------------------------------ needs
def test_inference_uses_the_key_of_the_same_name_then_synonyms() -> None:
    """'preds'/'target' feed y_pred/y_true by synonym; an exact key wins over synonyms."""

    def scikit_style(y_true: Any, y_pred: Any) -> float:
        return mean_abs_error(y_pred, y_true)

    (definition,) = define_metrics(scikit_style)
    assert resolve_needs(definition, ("target", "preds", "loss")) == Needs(("target", "preds"))
    assert resolve_needs(definition, ("y_pred", "logits", "labels")) == Needs(("labels", "y_pred"))


def test_two_candidate_keys_are_an_error_naming_both() -> None:
    """Two synonyms present: the error names the parameter, both keys and how to choose."""
    metrics = OutputMetrics(mean_abs_error)
    with pytest.raises(InputError) as error:
        metrics.update({"predictions": [1.0], "logits": [2.0], "target": [1.0]})
    message = str(error.value)
    assert "'predictions'" in message and "'logits'" in message and "parameter 'preds'" in message
    assert "needs={'mean_abs_error': {'preds': ..., 'target': ...}}" in message
    assert error.value.details["keys"] == ["predictions", "logits"]
    assert metrics.updates == 0


def test_a_missing_key_is_an_error_listing_the_keys_there_are() -> None:
    """No key for a parameter: the error names the metric, the parameter and the outputs' keys."""
    metrics = OutputMetrics({"mae": mean_abs_error})
    with pytest.raises(InputError, match=r"metric 'mae': no output key 'target'.*the outputs have 'preds', 'y_hat'"):
        metrics.update({"preds": [1.0], "y_hat": [2.0]})


def test_two_parameters_fed_by_one_key_are_refused() -> None:
    """Parameters 'preds' and 'y_hat' would both read 'pred': ambiguous, refused."""

    def both(preds: Any, y_hat: Any) -> float:
        return 0.0

    with pytest.raises(InputError, match="would both be fed by output key 'pred'"):
        OutputMetrics(both).update({"pred": [1.0]})


def test_only_required_parameters_are_inferred() -> None:
    """Parameters with defaults are left alone, keyword-only required ones are passed by keyword."""
    seen: dict[str, Any] = {}

    def metric(preds: Any, *, target: Any, scale: float = 1.0) -> float:
        seen.update(preds=preds, target=target, scale=scale)
        return 0.0

    OutputMetrics(metric).update({"preds": [1.0], "target": [2.0], "scale": 5.0})
    assert seen == {"preds": [1.0], "target": [2.0], "scale": 1.0}


def test_explicit_needs_positional_keyword_and_callables() -> None:
    """A list feeds positions, a dict keywords; a callable source gets the outputs mapping."""
    outputs = {"a": [1.0, 2.0], "b": [1.0, 5.0]}
    positional = OutputMetrics({"m": mean_abs_error}, needs=["a", "b"])
    keyword = OutputMetrics({"m": mean_abs_error}, needs={"target": "a", "preds": lambda out: out["b"]})
    for metrics in (positional, keyword):
        metrics.update(outputs)
        assert metrics.compute() == {"m": 1.5}


def test_per_metric_needs_and_inference_for_the_rest() -> None:
    """A mapping keyed by metric names gives those metrics their needs; others are inferred."""
    metrics = OutputMetrics(
        {"named": mean_abs_error, "inferred": max_abs_error},
        needs={"named": {"preds": "other", "target": "target"}, "inferred": None},
    )
    metrics.update({"preds": [0.0, 0.0], "other": [3.0, 1.0], "target": [1.0, 1.0]})
    assert metrics.compute() == {"named": 1.0, "inferred": 1.0}


@pytest.mark.parametrize(
    ("needs", "message"),
    [
        ({"mae": ["preds", "target"], "preds": "x"}, r"mixes metric names \('mae'\) with other keys \('preds'\)"),
        (["preds", "target", "extra"], "does not fit its signature"),
        ({"prediction": "p", "target": "t"}, "does not fit its signature"),
        ({"preds": "p"}, "does not fit its signature"),
        (["preds", 3], "must give output keys or callables on the outputs: got 3 at position 1"),
        ("preds", "must be None, a sequence"),
        (Needs(("preds",), (("target", "t"),)), "not both"),
    ],
)
def test_malformed_needs_are_refused_at_construction(needs: Any, message: str) -> None:
    """Mixed mappings, signature mismatches and bad sources are refused before any step."""
    with pytest.raises(InputError, match=message):
        OutputMetrics({"mae": mean_abs_error}, needs=needs)


def test_a_signature_without_required_parameters_needs_explicit_needs() -> None:
    """*args-only metrics cannot be inferred; given needs they work."""

    def variadic(*values: Any) -> float:
        return float(len(values))

    with pytest.raises(InputError, match="no required parameters"):
        OutputMetrics(variadic)
    metrics = OutputMetrics(variadic, needs=["x", "y"])
    metrics.update({"x": [1], "y": [2]})
    assert metrics.compute() == {"variadic": 2.0}


def test_an_explicit_key_missing_from_the_outputs_changes_nothing() -> None:
    """A key named in needs but not returned: InputError naming it, and no state recorded."""
    metrics = OutputMetrics({"good": mean_abs_error, "bad": max_abs_error}, needs={"bad": ["preds", "absent"]})
    with pytest.raises(InputError, match="metric 'bad' needs output 'absent'"):
        metrics.update({"preds": [1.0], "target": [1.0]})
    assert metrics.updates == 0 and metrics.compute() == {}


def test_outputs_that_are_not_a_mapping_are_the_output_key_and_the_batch_is_reachable() -> None:
    """A bare value is {'output': value}; the input batch is available as 'batch'."""
    metrics = OutputMetrics({"mae": mean_abs_error}, needs=["output", lambda out: out["batch"][1]])
    metrics.update([1.0, 3.0], batch=([0.0, 0.0], [1.0, 1.0]))
    assert metrics.compute() == {"mae": 1.0}
    with pytest.raises(InputError, match="returned no outputs"):
        metrics.update(None)
    with pytest.raises(InputError, match="keys must be strings"):
        metrics.update({1: [1.0]})


# ------------------------------------------------------------------ per-step averaging
def test_per_step_values_are_weighted_by_batch_size_not_averaged_as_means() -> None:
    """With an uneven last batch, the result is sum(v_b n_b) / sum(n_b), not the mean of means."""
    metrics = OutputMetrics(max_abs_error, mode="step")
    values = []
    for p, t in zip(split(PREDS, SIZES), split(TARGET, SIZES)):
        metrics.update({"preds": p, "target": t})
        values.append(max_abs_error(p, t))
    (result,) = metrics.compute_values()
    assert result.value == pytest.approx(float(exact_weighted_mean(values, SIZES)), rel=1e-15)
    assert result.value != pytest.approx(sum(values) / len(values))
    assert (result.rows, result.variant) == (sum(SIZES), "batch_weighted_mean")


def test_a_decomposable_metric_per_step_equals_the_whole_epoch() -> None:
    """For a mean over rows, the batch-weighted mean is the metric on all rows."""
    metrics = OutputMetrics(mean_abs_error, mode="step")
    for p, t in zip(split(PREDS, SIZES), split(TARGET, SIZES)):
        metrics.update({"preds": p, "target": t})
    expected = sum(Fraction(abs(Fraction(p) - Fraction(t))) for p, t in zip(PREDS, TARGET)) / len(PREDS)
    assert metrics.compute()["mean_abs_error"] == pytest.approx(float(expected), rel=1e-15)


def test_batch_size_is_given_when_inputs_have_no_length() -> None:
    """Scalar inputs cannot be weighed: the error asks for batch_size, which then weighs."""

    def identity(value: float) -> float:
        return value

    metrics = OutputMetrics(identity, needs=["loss"])
    with pytest.raises(InputError, match="pass batch_size"):
        metrics.update({"loss": 2.0})
    metrics.update({"loss": 2.0}, batch_size=3)
    metrics.update({"loss": 6.0}, batch_size=1)
    assert metrics.compute() == {"identity": 3.0}


def test_empty_batches_and_non_numbers_are_refused() -> None:
    """A 0-row step, a non-scalar result and a non-number result raise InputError."""
    with pytest.raises(InputError, match="empty batch"):
        OutputMetrics(mean_abs_error).update({"preds": [], "target": []})
    with pytest.raises(InputError, match="must return a real number: got 'high'"):
        OutputMetrics({"word": lambda preds: "high"}).update({"preds": [1.0]})
    with pytest.raises(InputError, match="must return a real number: got True"):
        OutputMetrics({"flag": lambda preds: True}).update({"preds": [1.0]})


def test_non_finite_results_are_kept_as_the_metrics_answer() -> None:
    """A NaN from a metric is reported as NaN, not dropped or replaced."""
    metrics = OutputMetrics({"nan": lambda preds: float("nan")})
    metrics.update({"preds": [1.0]})
    assert math.isnan(metrics.compute()["nan"])


def test_compute_before_any_step_is_empty_and_reset_starts_over() -> None:
    """No step: {} (nothing to report); reset forgets the period."""
    metrics = OutputMetrics(mean_abs_error)
    assert metrics.compute() == {}
    metrics.update({"preds": [1.0], "target": [3.0]})
    assert metrics.compute() == {"mean_abs_error": 2.0}
    metrics.reset()
    assert metrics.updates == 0 and metrics.compute() == {}
    metrics.update({"preds": [1.0], "target": [1.5]})
    assert metrics.compute() == {"mean_abs_error": 0.5}


# ------------------------------------------------------------------ per-epoch
def test_per_epoch_equals_the_metric_on_all_collected_outputs() -> None:
    """Epoch mode calls the metric once on the concatenation: exactly the whole-epoch value."""
    metrics = OutputMetrics(max_abs_error, mode="epoch")
    for p, t in zip(split(PREDS, SIZES), split(TARGET, SIZES)):
        metrics.update({"preds": p, "target": t})
    (result,) = metrics.compute_values()
    assert result.value == max_abs_error(PREDS, TARGET)
    assert (result.rows, result.variant) == (len(PREDS), "exact_on_collected")


def test_per_epoch_collects_a_shared_source_once_and_calls_callables_once() -> None:
    """Two metrics on the same outputs: the callable source runs once per step."""
    calls = []

    def doubled(out: Any) -> list[float]:
        calls.append(1)
        return [2 * v for v in out["preds"]]

    metrics = OutputMetrics({"a": mean_abs_error, "b": max_abs_error}, needs=[doubled, "target"], mode="epoch")
    metrics.update({"preds": [1.0, 2.0], "target": [2.0, 2.0]})
    metrics.update({"preds": [0.0], "target": [3.0]})
    assert len(calls) == 2
    assert metrics.compute() == {"a": pytest.approx(5.0 / 3.0), "b": 3.0}


def test_per_epoch_refuses_outputs_whose_keys_change_the_feeding() -> None:
    """Inferred needs must feed the same outputs at every step of an epoch."""
    metrics = OutputMetrics(mean_abs_error, mode="epoch")
    metrics.update({"preds": [1.0], "target": [1.0]})
    with pytest.raises(InputError, match="keys changed within the period"):
        metrics.update({"predictions": [1.0], "target": [1.0]})
    assert metrics.updates == 1


def test_per_epoch_refuses_steps_that_cannot_be_joined() -> None:
    """Collected values of different kinds cannot be concatenated: compute raises InputError."""
    metrics = OutputMetrics(mean_abs_error, mode="epoch")
    metrics.update({"preds": [1.0], "target": [1.0]})
    metrics.update({"preds": 2.0, "target": 1.0})
    with pytest.raises(InputError, match="values of different kinds"):
        metrics.compute()


def test_per_epoch_with_numpy_arrays_matches_the_concatenation() -> None:
    """NumPy arrays are copied when collected and concatenated at the end."""
    np = pytest.importorskip("numpy")
    rng = np.random.default_rng(0)
    preds, target = rng.normal(size=(9, 2)), rng.normal(size=(9, 2))

    def frobenius_gap(preds: Any, target: Any) -> float:
        return float(np.linalg.norm(preds - target))

    metrics = OutputMetrics(frobenius_gap, mode="epoch")
    for lo, hi in ((0, 4), (4, 8), (8, 9)):
        batch = {"preds": preds[lo:hi].copy(), "target": target[lo:hi]}
        metrics.update(batch)
        batch["preds"][:] = 0.0  # the caller reuses its buffer: the collected copy is unaffected
    assert metrics.compute()["frobenius_gap"] == pytest.approx(frobenius_gap(preds, target), rel=1e-14)
    with pytest.raises(InputError, match="shapes cannot be joined"):
        bad = OutputMetrics(frobenius_gap, mode="epoch")
        bad.update({"preds": preds[:2], "target": target[:2]})
        bad.update({"preds": preds[:2, :1], "target": target[:2, :1]})
        bad.compute()


def test_tensors_reach_metrics_detached_and_collected_as_private_copies() -> None:
    """Tensors with gradients arrive detached (autograd off); epoch mode keeps its own copy."""
    torch = pytest.importorskip("torch")
    seen = []

    def total(preds: Any, target: Any) -> float:
        seen.append(preds.requires_grad or torch.is_grad_enabled())
        return float(preds.sum())

    for mode in ("step", "epoch"):
        weights = torch.ones(3, requires_grad=True)
        metrics = OutputMetrics(total, mode=mode, collect_on_cpu=True)  # type: ignore[arg-type]
        buffer = (weights * 2.0).detach()
        metrics.update({"preds": buffer, "target": torch.zeros(3)})
        buffer.zero_()  # the caller reuses its buffer after the step
        metrics.update({"preds": weights * 1.0, "target": torch.zeros(3)})
        assert metrics.compute() == {"total": 4.5 if mode == "step" else 9.0}
    assert seen == [False, False, False]


def test_epoch_mode_concatenates_tensors_and_stacks_scalars() -> None:
    """Batches of tensors are joined along dim 0; 0-d tensors become a vector."""
    torch = pytest.importorskip("torch")

    def total(values: Any) -> float:
        return float(values.sum())

    def count(values: Any) -> float:
        return float(values.numel())

    metrics = OutputMetrics({"total": total, "count": count}, needs=["values"], mode="epoch")
    metrics.update({"values": torch.tensor(1.5)}, batch_size=1)
    metrics.update({"values": torch.tensor(2.5)}, batch_size=1)
    assert metrics.compute() == {"total": 4.0, "count": 2.0}
    metrics = OutputMetrics({"total": total}, needs=["values"], mode="epoch")
    metrics.update({"values": torch.ones(2, 3)})
    metrics.update({"values": torch.ones(1, 3)})
    assert metrics.compute() == {"total": 9.0}


# ------------------------------------------------------------------ real metric libraries
def test_scikit_learn_metrics_get_arrays_and_match_direct_calls() -> None:
    """accuracy_score and macro f1_score on tensors: per-epoch equals sklearn on all rows."""
    torch = pytest.importorskip("torch")
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    generator = torch.Generator().manual_seed(1)
    preds = torch.randint(0, 4, (23,), generator=generator)
    target = torch.randint(0, 4, (23,), generator=generator)
    f1 = partial(sklearn_metrics.f1_score, average="macro")
    for mode in ("step", "epoch"):
        metrics = OutputMetrics({"acc": sklearn_metrics.accuracy_score, "f1": f1}, mode=mode)  # type: ignore[arg-type]
        assert {d.kind for d in metrics.definitions} == {"sklearn"}
        batch_values, sizes = [], []
        for lo in range(0, 23, 8):
            p, t = preds[lo : lo + 8], target[lo : lo + 8]
            metrics.update({"preds": p, "target": t})
            batch_values.append(f1(t.numpy(), p.numpy()))
            sizes.append(len(p))
        result = metrics.compute()
        assert result["acc"] == pytest.approx(sklearn_metrics.accuracy_score(target.numpy(), preds.numpy()))
        if mode == "epoch":
            assert result["f1"] == f1(target.numpy(), preds.numpy())
        else:
            assert result["f1"] == pytest.approx(float(exact_weighted_mean(batch_values, sizes)), rel=1e-14)


def test_torchmetrics_are_driven_by_their_own_update_compute_and_reset() -> None:
    """A torchmetrics metric accumulates its own state: exact in both modes, reset by reset()."""
    torch = pytest.importorskip("torch")
    torchmetrics = pytest.importorskip("torchmetrics")
    generator = torch.Generator().manual_seed(2)
    logits = torch.randn(19, 3, generator=generator)
    target = torch.randint(0, 3, (19,), generator=generator)
    expected = torchmetrics.functional.f1_score(logits, target, task="multiclass", num_classes=3, average="macro")
    for mode in ("step", "epoch"):
        f1 = torchmetrics.F1Score(task="multiclass", num_classes=3, average="macro")
        metrics = OutputMetrics(f1, mode=mode)  # type: ignore[arg-type]
        assert metrics.names == ("multiclass_f1_score",)
        for lo in range(0, 19, 5):
            metrics.update({"logits": logits[lo : lo + 5], "target": target[lo : lo + 5]})
        (result,) = metrics.compute_values()
        assert result.value == pytest.approx(float(expected), abs=1e-7)
        assert (result.variant, result.rows) == ("torchmetrics", 19)
        assert f1._update_count == 4
        metrics.reset()
        assert f1._update_count == 0


def test_fresh_clones_torchmetrics_so_stages_accumulate_apart() -> None:
    """fresh() gives an empty copy whose torchmetrics metric is a different object."""
    pytest.importorskip("torch")
    torchmetrics = pytest.importorskip("torchmetrics")
    import torch

    original = OutputMetrics({"acc": torchmetrics.Accuracy(task="binary")})
    copy = original.fresh()
    assert copy.definitions[0].metric is not original.definitions[0].metric
    original.update({"preds": torch.tensor([1, 1]), "target": torch.tensor([1, 0])})
    copy.update({"preds": torch.tensor([1, 1]), "target": torch.tensor([1, 1])})
    assert original.compute() == {"acc": 0.5} and copy.compute() == {"acc": 1.0}


def test_definitions_can_be_passed_back_in() -> None:
    """OutputMetrics accepts MetricDefinition objects (without a second needs)."""
    definitions = define_metrics({"mae": mean_abs_error}, needs=["p", "t"])
    assert isinstance(definitions[0], MetricDefinition)
    metrics = OutputMetrics(definitions)
    metrics.update({"p": [1.0], "t": [0.0]})
    assert metrics.compute() == {"mae": 1.0}
    with pytest.raises(InputError, match="carry their own"):
        OutputMetrics(definitions, needs=["p", "t"])


# ------------------------------------------------------------------ properties
if given is not None:

    @settings(max_examples=40)
    @given(
        rows=st.lists(
            st.tuples(st.floats(-1e3, 1e3, allow_nan=False), st.floats(-1e3, 1e3, allow_nan=False)),
            min_size=1,
            max_size=30,
        ),
        cuts=st.lists(st.integers(1, 29), max_size=5),
    )
    def test_how_rows_are_split_into_batches_does_not_change_the_result(
        rows: list[tuple[float, float]], cuts: list[int]
    ) -> None:
        """Per-step (decomposable metric) and per-epoch results do not depend on batch boundaries."""
        bounds = sorted({c for c in cuts if c < len(rows)} | {0, len(rows)})
        preds, target = [p for p, _ in rows], [t for _, t in rows]
        step = OutputMetrics(mean_abs_error, mode="step")
        epoch = OutputMetrics(max_abs_error, mode="epoch")
        for lo, hi in itertools.pairwise(bounds):
            for metrics in (step, epoch):
                metrics.update({"preds": preds[lo:hi], "target": target[lo:hi]})
        assert step.compute()["mean_abs_error"] == pytest.approx(mean_abs_error(preds, target), rel=1e-12, abs=1e-9)
        assert epoch.compute()["max_abs_error"] == max_abs_error(preds, target)


# ------------------------------------------------------------------ two gloo ranks
WORLD = 2
SHARDS = {0: [3, 2], 1: [3]}  # rank 0 has 5 rows in two batches, rank 1 has 3 rows in one
ROWS = sum(sum(s) for s in SHARDS.values())


def _data() -> tuple[Any, Any, Any]:
    import torch

    generator = torch.Generator().manual_seed(7)
    logits = torch.randn(ROWS, 3, generator=generator)
    target = torch.randint(0, 3, (ROWS,), generator=generator)
    return logits, logits.argmax(1), target


def _batches(rank: int, *tensors: Any) -> list[list[Any]]:
    start = sum(sum(SHARDS[r]) for r in range(rank))
    out = []
    for size in SHARDS[rank]:
        out.append([t[start : start + size] for t in tensors])
        start += size
    return out


def _capture(action: Any) -> dict[str, Any]:
    try:
        return {"value": action()}
    except Exception as error:
        return {"error": type(error).__name__, "message": str(error)}


def _rank_worker(rank: int, init: str, out: str) -> None:
    """One rank of the gloo job: every scenario, results written as JSON."""
    from datetime import timedelta

    import torch.distributed as dist
    import torchmetrics
    from sklearn.metrics import accuracy_score, f1_score

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=WORLD, timeout=timedelta(seconds=60))
    logits, labels, target = _data()
    f1 = partial(f1_score, average="macro")
    results: dict[str, Any] = {}

    def run(metrics: OutputMetrics, batches: list[list[Any]], keys: tuple[str, ...]) -> dict[str, Any]:
        for batch in batches:
            metrics.update(dict(zip(keys, batch)))
        return _capture(lambda: [[v.name, v.value, v.rows, v.variant] for v in metrics.compute_values()])

    mine = _batches(rank, labels, target)
    results["step"] = run(OutputMetrics({"acc": accuracy_score, "f1": f1}, mode="step"), mine, ("preds", "target"))
    results["epoch"] = run(OutputMetrics({"acc": accuracy_score, "f1": f1}, mode="epoch"), mine, ("preds", "target"))
    results["epoch_lists"] = run(
        OutputMetrics({"f1": f1}, mode="epoch"), [[p.tolist(), t.tolist()] for p, t in mine], ("preds", "target")
    )
    tm = OutputMetrics({"tm_f1": torchmetrics.F1Score(task="multiclass", num_classes=3, average="macro")})
    results["torchmetrics"] = run(tm, _batches(rank, logits, target), ("logits", "target"))
    only_rank0 = mine if rank == 0 else []
    results["idle_rank"] = run(
        OutputMetrics({"f1": f1}, mode="epoch", collect_on_cpu=True), only_rank0, ("preds", "target")
    )
    results["idle_rank_step"] = run(OutputMetrics({"acc": accuracy_score}), only_rank0, ("preds", "target"))
    nobody = OutputMetrics({"acc": accuracy_score}, mode="epoch")
    results["nobody"] = _capture(nobody.compute)
    broken = OutputMetrics({"f1": f1}, mode="epoch")
    for p, t in mine:
        broken.update({"preds": p, "target": t})
    if rank == 1:
        broken.update({"preds": p.reshape(-1, 1), "target": t})  # cannot be joined with the 1-d batches
    results["broken"] = _capture(broken.compute)
    local = OutputMetrics({"acc": accuracy_score}, mode="epoch", distributed=False)
    results["local"] = run(local, mine, ("preds", "target"))
    Path(out, f"rank{rank}.json").write_text(json.dumps(results))
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """Run the two-rank gloo job once (torch.multiprocessing spawn); each rank's results."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("torchmetrics")
    pytest.importorskip("sklearn")
    import torch.distributed as dist
    import torch.multiprocessing as mp

    if not dist.is_available():
        pytest.skip("torch.distributed is not available")
    assert torch is not None
    out = tmp_path_factory.mktemp("gloo")
    mp.spawn(_rank_worker, args=(f"file://{out / 'rendezvous'}", str(out)), nprocs=WORLD, join=True)
    return [json.loads((out / f"rank{rank}.json").read_text()) for rank in range(WORLD)]


def _single_process() -> dict[str, Any]:
    from sklearn.metrics import accuracy_score, f1_score

    _logits, labels, target = _data()
    batches = [b for rank in range(WORLD) for b in _batches(rank, labels, target)]
    sizes = [len(p) for p, _ in batches]
    macro = partial(f1_score, average="macro")
    return {
        "acc": accuracy_score(target.numpy(), labels.numpy()),
        "f1": macro(target.numpy(), labels.numpy()),
        "f1_steps": float(exact_weighted_mean([macro(t.numpy(), p.numpy()) for p, t in batches], sizes)),
        "acc_steps": float(exact_weighted_mean([accuracy_score(t.numpy(), p.numpy()) for p, t in batches], sizes)),
        "rank0_f1": macro(target[:5].numpy(), labels[:5].numpy()),
        "rank0_acc": accuracy_score(target[:5].numpy(), labels[:5].numpy()),
    }


def test_two_ranks_weigh_per_step_values_by_batch_size_over_all_ranks(ranks: list[dict[str, Any]]) -> None:
    """Uneven shards: the per-step result equals one process's weighted mean over every batch."""
    reference = _single_process()
    for result in ranks:
        (acc, f1) = result["step"]["value"]
        assert acc[1] == pytest.approx(reference["acc_steps"], rel=1e-14) and acc[2] == ROWS
        assert f1[1] == pytest.approx(reference["f1_steps"], rel=1e-14)
    assert ranks[0]["step"] == ranks[1]["step"]


def test_two_ranks_compute_per_epoch_metrics_on_the_gathered_outputs(ranks: list[dict[str, Any]]) -> None:
    """Per-epoch metrics on tensors and on lists equal one process on the concatenation."""
    reference = _single_process()
    for result in ranks:
        acc, f1 = result["epoch"]["value"]
        assert (acc[1], f1[1]) == (reference["acc"], reference["f1"])
        assert acc[2] == ROWS and acc[3] == "exact_on_collected"
        assert result["epoch_lists"]["value"][0][1] == reference["f1"]


def test_two_ranks_use_torchmetrics_own_synchronisation(ranks: list[dict[str, Any]]) -> None:
    """A torchmetrics metric syncs its states across ranks: the whole batch's value."""
    import torchmetrics

    logits, _, target = _data()
    expected = float(
        torchmetrics.functional.f1_score(logits, target, task="multiclass", num_classes=3, average="macro")
    )
    for result in ranks:
        (value,) = result["torchmetrics"]["value"]
        assert value[1] == pytest.approx(expected, abs=1e-7) and value[2] == ROWS


def test_a_rank_without_steps_still_takes_part(ranks: list[dict[str, Any]]) -> None:
    """Rank 1 saw no batch: both ranks get the metrics of rank 0's outputs; nothing anywhere gives {}."""
    reference = _single_process()
    for result in ranks:
        assert result["idle_rank"]["value"][0][1] == reference["rank0_f1"]
        assert result["idle_rank_step"]["value"][0][1] == pytest.approx(reference["rank0_acc"], rel=1e-14)
        assert result["nobody"] == {"value": {}}


def test_a_rank_that_cannot_join_its_outputs_makes_every_rank_raise(ranks: list[dict[str, Any]]) -> None:
    """Rank 1's bad data: it raises its own InputError, rank 0 one naming rank 1; none hangs."""
    assert ranks[1]["broken"]["error"] == "InputError"
    assert "cannot be joined" in ranks[1]["broken"]["message"]
    assert ranks[0]["broken"]["error"] == "InputError"
    assert ranks[0]["broken"]["message"].startswith("rank 1 of 2 could not compute its part of the metrics")


def test_distributed_false_computes_each_ranks_own_data(ranks: list[dict[str, Any]]) -> None:
    """With distributed=False, rank 0 reports its 5 rows only."""
    reference = _single_process()
    assert ranks[0]["local"]["value"][0][1:3] == [reference["rank0_acc"], 5]
    assert ranks[1]["local"]["value"][0][2] == 3


# ------------------------------------------------------------------ needs keyed by metric name
def row_mean(z: Any) -> float:
    """A metric of one argument: the mean of its rows."""
    return math.fsum(float(v) for v in z) / len(z)


def scaled_sum(x: Any, y: float = 1.0) -> float:
    """A metric whose parameters are named like the metrics of the ambiguity test."""
    return math.fsum(float(v) for v in x) * float(y)


@pytest.mark.parametrize("spec", ["z1", lambda out: out["z1"]], ids=["key", "callable"])
def test_a_metric_name_key_takes_one_source_for_that_metric(spec: Any) -> None:
    """needs={'x': 'z1'} (or a callable) feeds metric 'x', of one argument, from output 'z1'."""
    metrics = OutputMetrics({"x": row_mean}, needs={"x": spec})
    metrics.update({"z1": [1.0, 3.0], "z": [10.0, 10.0]})
    assert metrics.compute() == {"x": 2.0}


def test_metric_name_keys_mix_one_source_lists_mappings_and_inference() -> None:
    """One source, a list, a mapping and None side by side, each for its own metric."""
    metrics = OutputMetrics(
        {"x": row_mean, "pos": mean_abs_error, "kw": max_abs_error, "inferred": mean_abs_error},
        needs={"x": "z1", "pos": ["p", "t"], "kw": {"preds": "p", "target": "t"}, "inferred": None},
    )
    metrics.update({"z1": [2.0, 4.0], "p": [1.0, 5.0], "t": [1.0, 1.0], "preds": [0.0, 0.0], "target": [1.0, 3.0]})
    assert metrics.compute() == {"x": 3.0, "pos": 2.0, "kw": 4.0, "inferred": 2.0}


def test_a_key_naming_both_the_metric_and_its_parameter_is_read_either_way() -> None:
    """Metric 'z' with parameter 'z': needs={'z': 'z1'} means the same call in both readings."""
    metrics = OutputMetrics({"z": row_mean}, needs={"z": "z1"})
    metrics.update({"z1": [5.0], "z": [7.0]})
    assert metrics.compute() == {"z": 5.0}


def test_metric_names_that_only_fit_as_parameters_are_keyword_sources() -> None:
    """Keys naming metrics and parameters, where one source per metric cannot fit: keyword for every metric."""

    def difference(x: Any, y: Any) -> float:
        return math.fsum(float(v) for v in x) - math.fsum(float(v) for v in y)

    both_named = OutputMetrics({"x": difference, "y": difference}, needs={"x": "a", "y": "b"})
    one_named = OutputMetrics({"x": difference}, needs={"x": "a", "y": "b"})
    for metrics in (both_named, one_named):
        metrics.update({"a": [5.0], "b": [2.0]})
        assert set(metrics.compute().values()) == {3.0}


def test_a_mapping_that_reads_two_ways_is_refused_with_the_accepted_forms() -> None:
    """Metrics 'x', 'y' with parameters x, y: {'x': 'a', 'y': 'b'} could mean either; refused, forms explained."""
    with pytest.raises(InputError) as error:
        OutputMetrics({"x": scaled_sum, "y": scaled_sum}, needs={"x": "a", "y": "b"})
    message = str(error.value)
    assert "is ambiguous" in message
    assert "needs={'x': ['a']} feeds metric 'x' its first argument" in message
    assert "a mapping metric name -> that metric's own needs" in message
    assert error.value.details == {"field": "needs", "value": ["x", "y"]}


def test_one_source_for_a_metric_of_two_arguments_says_how_to_give_more() -> None:
    """needs={'mae': 'p'}: the signature wants two arguments; the error says to give a list or a mapping."""
    with pytest.raises(InputError, match=r"does not fit its signature .*give a list or a mapping for more"):
        OutputMetrics({"mae": mean_abs_error}, needs={"mae": "p"})


def test_a_key_that_is_not_a_metric_name_is_reported_as_such() -> None:
    """needs={'mae': [...]} for a metric named 'mean_abs_error': the key is named as an unknown metric name."""
    with pytest.raises(InputError) as error:
        OutputMetrics(mean_abs_error, needs={"mae": ["preds", "target"]})
    message = str(error.value)
    assert message.startswith("'needs' key 'mae' is not a metric name (metrics: 'mean_abs_error')")
    assert "a list of sources (positional)" in message
    assert error.value.details["value"] == ["mae"]


# ------------------------------------------------------------------ no guessed inputs
@pytest.mark.parametrize("mode", ["step", "epoch"])
def test_logits_are_not_guessed_as_scikit_learns_y_pred(mode: str) -> None:
    """accuracy_score with outputs 'logits' and 'target': InputError at the step naming metric, parameter and key."""
    np = pytest.importorskip("numpy")
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    metrics = OutputMetrics({"acc": sklearn_metrics.accuracy_score}, mode=mode)  # type: ignore[arg-type]
    logits = np.array([[2.0, 0.1, 0.3], [0.2, 1.5, 0.0]])
    with pytest.raises(InputError) as error:
        metrics.update({"logits": logits, "target": np.array([0, 1])})
    assert error.value.details == {"field": "needs", "metric": "acc", "parameter": "y_pred", "keys": ["logits"]}
    message = str(error.value)
    assert message.startswith("metric 'acc': parameter 'y_pred' has no output key of its name")
    assert "'logits' could feed it only as a guess" in message
    assert "needs={'acc': {'y_true': ..., 'y_pred': ...}}" in message
    assert metrics.updates == 0 and metrics.compute() == {}


def test_probabilities_are_not_guessed_as_predictions_of_a_callable() -> None:
    """A callable's 'preds' is not fed from 'probs' (another meaning); it is from 'y_hat' (the same one)."""
    with pytest.raises(InputError, match="parameter 'preds' has no output key of its name") as error:
        OutputMetrics(mean_abs_error).update({"probs": [0.5], "target": [1.0]})
    assert error.value.details["keys"] == ["probs"]
    metrics = OutputMetrics(mean_abs_error)
    metrics.update({"y_hat": [0.5], "target": [1.0]})
    assert metrics.compute() == {"mean_abs_error": 0.5}
