"""Output-gradient geometry: per-layer gradient magnitudes and correlations against
autograd, epoch aggregation, hooks, memory bound, logs, plotting and DDP.
"""

from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from geno_lewm.errors import InputError  # noqa: E402
from geno_lewm.metrics import MetricRegistry  # noqa: E402
from geno_lewm.training.gradients import (  # noqa: E402
    GradientGeometry,
    gradient_metric_name,
    gradient_series,
    plot_gradient_geometry,
)


def _mlp(seed: int = 0, inplace: bool = False) -> torch.nn.Sequential:
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(5, 16),
        torch.nn.Tanh(),
        torch.nn.Linear(16, 8),
        torch.nn.ReLU(inplace=inplace),
        torch.nn.Linear(8, 3),
    )


def _batches(count: int, rows: int = 6) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(123)
    return [
        (torch.randn(rows, 5, generator=generator), torch.randn(rows, 3, generator=generator)) for _ in range(count)
    ]


def _reference_output_gradients(
    model: torch.nn.Sequential, x: torch.Tensor, y: torch.Tensor
) -> dict[str, torch.Tensor]:
    """The gradients of the loss with respect to each Linear's output, by retain_grad and a manual forward."""
    outputs = {}
    current = x
    for name, module in model.named_children():
        weight_bias = (module.weight, module.bias) if isinstance(module, torch.nn.Linear) else None
        if weight_bias is not None:
            current = torch.nn.functional.linear(current, *weight_bias)
            current.retain_grad()
            outputs[name] = current
        else:
            current = torch.tanh(current) if isinstance(module, torch.nn.Tanh) else torch.relu(current)
    torch.nn.functional.mse_loss(current, y).backward()
    return {name: tensor.grad.detach().clone() for name, tensor in outputs.items()}


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.reshape(1, -1).double(), b.reshape(1, -1).double()).item())


# ---------------------------------------------------------------- against autograd
@pytest.mark.parametrize("inplace", [False, True])
def test_layer_gradients_match_autograd(inplace: bool, registry: MetricRegistry) -> None:
    """Per-pass L2 norms and consecutive cosines equal those of the output gradients autograd computes."""
    model = _mlp(inplace=inplace)
    twin = _mlp(inplace=inplace)
    batches = _batches(4)
    geometry = GradientGeometry(model, compute_correlation=True, keep_values=True, registry=registry)
    expected: dict[str, list[torch.Tensor]] = {"0": [], "2": [], "4": []}
    for x, y in batches:
        torch.nn.functional.mse_loss(model(x), y).backward()
        for name, grad in _reference_output_gradients(twin, x, y).items():
            expected[name].append(grad)
    summary = geometry.end_epoch()
    assert [s.layer for s in summary.layers] == ["4", "2", "0"]
    for stats in summary.layers:
        grads = expected[stats.layer]
        assert stats.value.values == pytest.approx([float(g.norm()) for g in grads], rel=1e-5)
        cosines = [_cosine(a, b) for a, b in zip(grads[1:], grads[:-1])]
        assert stats.correlation is not None
        assert stats.correlation.values == pytest.approx(cosines, abs=1e-5)


def test_rms_and_log_scale_transform_the_norm(registry: MetricRegistry) -> None:
    """normalize_by_size divides by sqrt(numel); log_scale takes log10 of that."""
    model = _mlp()
    twin = _mlp()
    x, y = _batches(1)[0]
    geometry = GradientGeometry(model, normalize_by_size=True, log_scale=True, keep_values=True, registry=registry)
    torch.nn.functional.mse_loss(model(x), y).backward()
    summary = geometry.end_epoch()
    assert summary.quantity == "log10_rms"
    for name, grad in _reference_output_gradients(twin, x, y).items():
        rms = float(grad.norm()) / math.sqrt(grad.numel())
        assert summary.layer(name).value.values == pytest.approx([math.log10(rms)], rel=1e-5)


def test_epoch_aggregates_are_population_statistics(registry: MetricRegistry) -> None:
    """The running mean, std (population), min and max equal those of the kept values."""
    model = _mlp()
    geometry = GradientGeometry(model, keep_values=True, registry=registry)
    for x, y in _batches(7):
        torch.nn.functional.mse_loss(model(x), y).backward()
    for stats in geometry.end_epoch().layers:
        values = stats.value.values
        assert values is not None and stats.value.count == 7
        assert stats.value.mean == pytest.approx(statistics.fmean(values), rel=1e-12)
        assert stats.value.std == pytest.approx(statistics.pstdev(values), rel=1e-9)
        assert (stats.value.min, stats.value.max) == (min(values), max(values))
        assert stats.value.median == statistics.median(values)


def test_identical_passes_have_correlation_one(registry: MetricRegistry) -> None:
    """The same batch twice without an update gives the same gradients: cosine exactly 1, std 0."""
    model = _mlp()
    x, y = _batches(1)[0]
    geometry = GradientGeometry(model, compute_correlation=True, registry=registry)
    for _ in range(3):
        torch.nn.functional.mse_loss(model(x), y).backward()
    for stats in geometry.end_epoch().layers:
        assert stats.correlation is not None
        assert (stats.correlation.count, stats.correlation.mean, stats.correlation.std) == (2, 1.0, 0.0)
        assert stats.value.std == 0.0


# --------------------------------------------------------------------- layer set
def test_activations_are_skipped_unless_asked(registry: MetricRegistry) -> None:
    """Leaf layers are watched output first; activations join with skip_activation=False."""
    model = _mlp()
    assert GradientGeometry(model, registry=registry).layers == ("4", "2", "0")
    assert GradientGeometry(model, skip_activation=False, registry=registry).layers == ("4", "3", "2", "1", "0")
    assert GradientGeometry(model, layers=["", "2"], registry=registry).layers == ("2", "root")


def test_attention_can_be_watched_by_name(registry: MetricRegistry) -> None:
    """MultiheadAttention never calls its out_proj leaf, which stays silent; named, it is watched."""
    model = torch.nn.ModuleDict({"attn": torch.nn.MultiheadAttention(4, 1), "act": torch.nn.GELU()})
    default = GradientGeometry(model, registry=registry)
    named = GradientGeometry(model, layers=["attn"], keep_values=True, registry=registry)
    assert default.layers == ("attn.out_proj",)
    x = torch.randn(3, 2, 4, requires_grad=True)
    output, _ = model["attn"](x, x, x)
    output.sum().backward()
    assert default.end_epoch().silent_layers == ("attn.out_proj",)
    stats = named.end_epoch().layer("attn")
    assert stats.value.values == pytest.approx([math.sqrt(output.numel())], rel=1e-6)


def test_layer_options_are_validated() -> None:
    """Unknown layer names, a non-module, a median without values and a zero sketch size are refused."""
    model = _mlp()
    with pytest.raises(InputError, match=r"names modules the model does not have: \['9'\]"):
        GradientGeometry(model, layers=["0", "9"])
    with pytest.raises(InputError, match=r"'model' must be a torch\.nn\.Module"):
        GradientGeometry(lambda x: x)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="needs keep_values=True"):
        GradientGeometry(model, line_aggregation="median")
    with pytest.raises(InputError, match="'correlation_sketch_size' must be a positive integer: got 0"):
        GradientGeometry(model, correlation_sketch_size=0)
    with pytest.raises(InputError, match="no layer to watch"):
        GradientGeometry(torch.nn.Sequential(torch.nn.ReLU()))


# ---------------------------------------------------------------- detach, state
def test_detach_removes_every_hook_and_frees_state(registry: MetricRegistry) -> None:
    """After detach no module has a hook, no tensor is held, and later backward passes record nothing."""
    model = _mlp()
    batches = _batches(3)
    geometry = GradientGeometry(model, compute_correlation=True, registry=registry)
    x, y = batches[0]
    torch.nn.functional.mse_loss(model(x), y).backward()
    assert geometry.correlation_state_bytes > 0
    x, y = batches[1]
    pending_loss = torch.nn.functional.mse_loss(model(x), y)  # gradient hooks already registered
    geometry.detach()
    assert not geometry.attached
    assert all(len(module._forward_hooks) == 0 for module in model.modules())
    assert geometry.correlation_state_bytes == 0
    pending_loss.backward()
    x, y = batches[2]
    torch.nn.functional.mse_loss(model(x), y).backward()
    summary = geometry.end_epoch()
    assert all(stats.value.count == 1 for stats in summary.layers)
    geometry.detach()


def test_sketch_bounds_memory_and_estimates_the_cosine(registry: MetricRegistry) -> None:
    """Above the sketch size the state is sketch_size floats per layer and the cosine stays close."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 512))
    size = 4096
    geometry = GradientGeometry(model, compute_correlation=True, correlation_sketch_size=size, registry=registry)
    exact = GradientGeometry(model, compute_correlation=True, correlation_sketch_size=None, registry=registry)
    generator = torch.Generator().manual_seed(5)
    x = torch.randn(32, 64, generator=generator)
    grads = []
    for scale in (1.0, 0.3):
        target = torch.randn(32, 512, generator=generator)
        output = model(x)
        grad = 2 * (output.detach() - scale * target) / output.numel()
        grads.append(grad)
        torch.nn.functional.mse_loss(output, scale * target).backward()
    assert geometry.correlation_state_bytes == size * 4 == geometry.correlation_state_limit_bytes
    assert exact.correlation_state_bytes == 32 * 512 * 4
    true_cosine = _cosine(grads[1], grads[0])
    sketched = geometry.end_epoch().layers[0].correlation
    whole = exact.end_epoch().layers[0].correlation
    assert sketched is not None and whole is not None
    assert whole.mean == pytest.approx(true_cosine, abs=1e-5)
    assert sketched.mean == pytest.approx(true_cosine, abs=4 / math.sqrt(size))
    assert sketched.mean != whole.mean


def test_changed_gradient_shape_skips_the_correlation(registry: MetricRegistry) -> None:
    """A smaller last batch has no predecessor of its shape: the cosine is skipped and counted."""
    model = _mlp()
    geometry = GradientGeometry(model, compute_correlation=True, registry=registry)
    for x, y in _batches(2) + _batches(1, rows=2):
        torch.nn.functional.mse_loss(model(x), y).backward()
    stats = geometry.end_epoch().layer("0")
    assert stats.correlation is not None
    assert (stats.value.count, stats.correlation.count, stats.correlation_skipped) == (3, 1, 1)


def test_non_finite_and_zero_gradients_are_counted_not_aggregated(registry: MetricRegistry) -> None:
    """An infinite gradient is one nonfinite pass (norm and cosine); in log scale a zero gradient goes to zeros."""
    model = torch.nn.Sequential(torch.nn.Linear(2, 2))
    geometry = GradientGeometry(model, log_scale=True, compute_correlation=True, registry=registry)
    x = torch.ones(1, 2)
    model(x).sum().backward()
    (model(x) * math.inf).sum().backward()
    (model(x) * 0.0).sum().backward()
    stats = geometry.end_epoch().layers[0]
    assert (stats.value.count, stats.nonfinite, stats.zeros) == (1, 1, 1)
    assert stats.value.mean == pytest.approx(math.log10(math.sqrt(2)), rel=1e-6)
    assert stats.correlation is not None
    assert (stats.correlation.count, stats.correlation.mean) == (1, 0.0)


def test_layers_without_gradients_are_silent(registry: MetricRegistry) -> None:
    """A layer that received no gradient this epoch is listed as silent, not given zeros."""
    model = _mlp()
    geometry = GradientGeometry(model, registry=registry)
    x, _ = _batches(1)[0]
    model[4](torch.randn(2, 8)).sum().backward()
    with torch.no_grad():
        model(x)
    summary = geometry.end_epoch()
    assert [s.layer for s in summary.layers] == ["4"]
    assert summary.silent_layers == ("2", "0")


# ------------------------------------------------------------ publish and plot
def test_end_epoch_sets_gauges_and_writes_layer_events(tmp_path: object, registry: MetricRegistry) -> None:
    """Gauges per layer and aggregate; one readable training.gradients.layer record per layer per epoch."""
    pytest.importorskip("structlog")
    pytest.importorskip("pydantic")
    from geno_lewm.logs import read_log
    from geno_lewm.observability import get_logger

    logger = get_logger("training", log_dir=tmp_path, run_id="gradients")
    model = _mlp()
    geometry = GradientGeometry(model, compute_correlation=True, registry=registry)
    for epoch in range(3):
        for x, y in _batches(2 + epoch):
            torch.nn.functional.mse_loss(model(x), y).backward()
        summary = geometry.end_epoch(step=10 * epoch, logger=logger)
    stats = summary.layer("2")
    assert registry.value(gradient_metric_name("2", "l2", "mean")) == stats.value.mean
    assert stats.correlation is not None
    assert registry.value(gradient_metric_name("2", "correlation", "min")) == stats.correlation.min
    records = [r for r in read_log(logger.path) if r.event == "training.gradients.layer"]
    assert len(records) == 9
    assert [r.step for r in records] == [0] * 3 + [10] * 3 + [20] * 3
    from_log = gradient_series(records)
    from_memory = gradient_series(geometry)
    assert from_log == from_memory
    assert from_memory["0"].epochs == (0, 1, 2)
    assert from_memory["0"].aggregates["mean"] == tuple(s.layer("0").value.mean for s in geometry.history)
    correlations = gradient_series(records, correlation=True)
    assert correlations["4"].aggregates["max"][2] == geometry.history[2].layer("4").correlation.max  # type: ignore[union-attr]


def test_plot_draws_a_line_and_two_bands_per_layer(registry: MetricRegistry) -> None:
    """Each layer gets one line and a std and a min-max band on the given Axes."""
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    model = _mlp()
    geometry = GradientGeometry(model, registry=registry)
    for _ in range(2):
        for x, y in _batches(3):
            torch.nn.functional.mse_loss(model(x), y).backward()
        geometry.end_epoch()
    figure, ax = plt.subplots()
    try:
        assert plot_gradient_geometry(ax, geometry) is ax
        assert [line.get_label() for line in ax.lines] == ["4", "2", "0"]
        assert len(ax.collections) == 6
        assert list(ax.lines[2].get_ydata()) == [s.layer("0").value.mean for s in geometry.history]
        with pytest.raises(InputError, match="'bands' must be 'std', 'minmax' or both"):
            plot_gradient_geometry(ax, geometry, bands=("iqr",))
    finally:
        plt.close(figure)


def test_range_aggregation_chooses_the_published_and_drawn_bands(registry: MetricRegistry, tmp_path: Any) -> None:
    """range_aggregation=("std",) sets std gauges but no min/max ones, names the band in the log, and plots it alone."""
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from geno_lewm.logs import read_log
    from geno_lewm.observability import get_logger

    model = _mlp()
    logger = get_logger("training", log_dir=tmp_path, run_id="bands")
    geometry = GradientGeometry(model, registry=registry, range_aggregation=("std",))
    for x, y in _batches(3):
        torch.nn.functional.mse_loss(model(x), y).backward()
    summary = geometry.end_epoch(logger=logger)
    assert summary.range_aggregation == ("std",)
    names = set(registry.snapshot())
    assert any(name.endswith(".l2.std") for name in names)
    assert not any(name.endswith((".l2.min", ".l2.max")) for name in names)
    records = [r for r in read_log(tmp_path / "bands.jsonl") if r.event == "training.gradients.layer"]
    assert records and all(r.model_dump()["bands"] == "std" and "min" in r.model_dump() for r in records)
    for source in (geometry, records):
        figure, ax = plt.subplots()
        try:
            plot_gradient_geometry(ax, source)
            assert len(ax.collections) == len(summary.layers)  # one std band per layer, no min-max band
        finally:
            plt.close(figure)


@pytest.mark.parametrize("bands", [(), ("iqr",), ("std", "std"), "range", None])
def test_bad_range_aggregation_is_refused(bands: Any) -> None:
    """range_aggregation must be a non-empty selection of 'std', 'minmax' and 'q1q3', each once."""
    with pytest.raises(InputError, match="'range_aggregation' must be a non-empty selection of 'std', 'minmax'"):
        GradientGeometry(_mlp(), range_aggregation=bands)


def test_metric_names_are_sanitised_and_distinct(registry: MetricRegistry) -> None:
    """Module names with symbols become valid metric names; two that sanitise alike stay distinct."""
    model = torch.nn.ModuleDict({"a-b": torch.nn.Linear(2, 2), "a_b": torch.nn.Linear(2, 2)})
    geometry = GradientGeometry(model, registry=registry)
    x = torch.ones(1, 2)
    (model["a-b"](x).sum() + model["a_b"](x).sum()).backward()
    geometry.end_epoch()
    names = {n for n in registry.snapshot() if n.startswith("geno_lewm.training.gradients.a_b")}
    assert {n.rsplit(".", 2)[0] for n in names} == {
        "geno_lewm.training.gradients.a_b",
        "geno_lewm.training.gradients.a_b_1",
    }


# ------------------------------------------------------------------------- DDP
_GLOO_DDP_SCRIPT = """
import json, os, sys
sys.path.insert(0, sys.argv[1])
import torch
from test_gradients import _batches, _mlp
from geno_lewm.metrics import MetricRegistry
from geno_lewm.training.gradients import GradientGeometry

torch.distributed.init_process_group("gloo", init_method=f"file://{sys.argv[2]}/rendezvous", rank=0, world_size=1)
wrapped = torch.nn.parallel.DistributedDataParallel(_mlp())
bare = _mlp()
registry = MetricRegistry()
with_ddp = GradientGeometry(wrapped, keep_values=True, registry=registry)
without = GradientGeometry(bare, keep_values=True, registry=registry)
for x, y in _batches(2):
    torch.nn.functional.mse_loss(wrapped(x), y).backward()
    torch.nn.functional.mse_loss(bare(x), y).backward()
summaries = (with_ddp.end_epoch(), without.end_epoch())
layers = [list(with_ddp.layers), list(without.layers)]
with_ddp.detach()
hooks = sum(len(module._forward_hooks) for module in wrapped.module.modules())
values = [[list(layer.value.values) for layer in summary.layers] for summary in summaries]
print(json.dumps({"layers": layers, "values": values, "hooks": hooks}), flush=True)
os._exit(0)  # skip the gloo group's teardown: its worker-thread join can hang inside torch
"""


def test_works_through_a_gloo_ddp_wrapper(tmp_path: Path) -> None:
    """A single-process gloo DDP model is unwrapped: same layer names and values as the bare model.

    Run in a fresh interpreter with a time limit: the process group is the process's own, and torch's gloo
    teardown can hang, which must not stall the suite.
    """
    if not torch.distributed.is_available():
        pytest.skip("torch.distributed is unavailable")
    tests = str(Path(__file__).resolve().parent)
    completed = subprocess.run(
        [sys.executable, "-c", _GLOO_DDP_SCRIPT, tests, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    assert result["layers"] == [["4", "2", "0"], ["4", "2", "0"]]
    for with_ddp, without in zip(*result["values"]):
        assert with_ddp == pytest.approx(without, rel=1e-6)
    assert len(result["values"][0]) == 3
    assert result["hooks"] == 0


def test_layers_whose_names_differ_only_by_dots_get_distinct_exported_names(registry: MetricRegistry) -> None:
    """Modules 'enc.0' and 'enc_0' would export as one Prometheus series; the lens keeps their gauges apart."""
    from geno_lewm.metrics import CATALOGUE, prometheus_name

    model = torch.nn.ModuleDict({"enc": torch.nn.Sequential(torch.nn.Linear(2, 2)), "enc_0": torch.nn.Linear(2, 2)})
    geometry = GradientGeometry(model, layers=["enc.0", "enc_0"], registry=registry)
    x = torch.randn(4, 2)
    (model["enc_0"](model["enc"](x))).sum().backward()
    summary = geometry.end_epoch()
    assert {stats.layer for stats in summary.layers} == {"enc.0", "enc_0"}
    names = [n for n in CATALOGUE if ".gradients." in n and ("enc.0" in n or "enc_0" in n)]
    exported = [prometheus_name(CATALOGUE[n]) for n in names]
    assert len(exported) == len(set(exported)) >= 2
    assert "enc_0" in registry.to_prometheus()


# ------------------------------------------------ quartiles, IQR, min/max lines, aliases
@pytest.mark.parametrize("passes", [1, 2, 5, 8])
def test_quartiles_interpolate_linearly_and_the_median_averages_the_middle(
    passes: int, registry: MetricRegistry
) -> None:
    """q1/q3 equal numpy's default quantiles and statistics' inclusive ones; the median is statistics.median."""
    numpy = pytest.importorskip("numpy")
    model = _mlp()
    geometry = GradientGeometry(model, keep_values=True, compute_correlation=True, registry=registry)
    for x, y in _batches(passes + 1):
        torch.nn.functional.mse_loss(model(x), y).backward()
    for stats in geometry.end_epoch().layers:
        for series in (stats.value, stats.correlation):
            assert series is not None and series.values is not None
            values = list(series.values)
            if len(values) >= 2:
                q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
                assert series.q1 == pytest.approx(q1, rel=1e-12, abs=1e-15)
                assert series.q3 == pytest.approx(q3, rel=1e-12, abs=1e-15)
            assert series.q1 == pytest.approx(float(numpy.quantile(values, 0.25)), rel=1e-12, abs=1e-15)
            assert series.q3 == pytest.approx(float(numpy.quantile(values, 0.75)), rel=1e-12, abs=1e-15)
            assert series.median == statistics.median(values)
            assert series.iqr == series.aggregate("IQR") == series.q3 - series.q1  # type: ignore[operator]


def test_quantile_matches_the_textbook_examples_and_differs_from_closest_observation() -> None:
    """On 1..4 the quartiles are 1.75 and 3.25 and the median 2.5, where monitorch's median picks an observation."""
    from geno_lewm.training.gradients import SeriesStats, quantile

    ordered = [1.0, 2.0, 3.0, 4.0]
    assert (quantile(ordered, 0.25), quantile(ordered, 0.5), quantile(ordered, 0.75)) == (1.75, 2.5, 3.25)
    assert quantile([7.0], 0.25) == quantile([7.0], 0.75) == 7.0
    stats = SeriesStats(4, 2.5, 1.118, 1.0, 4.0, 2.5, tuple(ordered), 1.75, 3.25)
    assert stats.aggregate("median") == 2.5 and stats.median not in ordered
    assert stats.aggregate("q1") == 1.75 and stats.aggregate("Q3") == 3.25 and stats.iqr == 1.5


@pytest.mark.parametrize(
    ("options", "line", "stats"),
    [
        ({"line_aggregation": "min"}, "min", {"mean", "min", "std", "max"}),
        ({"line_aggregation": "max", "range_aggregation": "std"}, "max", {"mean", "max", "std"}),
        ({"line_aggregation": "Q1", "keep_values": True}, "q1", {"mean", "q1", "std", "min", "max"}),
        (
            {"line_aggregation": "IQR", "keep_values": True, "range_aggregation": ["Q1-Q3"]},
            "iqr",
            {"mean", "iqr", "q1", "q3"},
        ),
        (
            {"line_aggregation": "q3", "keep_values": True, "range_aggregation": ("min-max", "q1q3")},
            "q3",
            {"mean", "q3", "min", "max", "q1"},
        ),
    ],
)
def test_new_lines_and_bands_set_their_gauges_and_accept_reference_spellings(
    options: dict[str, Any], line: str, stats: set[str], registry: MetricRegistry, tmp_path: Any
) -> None:
    """Lines min/max/q1/q3/iqr and the q1q3 band publish their aggregates; 'Q1', 'IQR', 'min-max', 'Q1-Q3' work."""
    from geno_lewm.logs import read_log
    from geno_lewm.observability import get_logger

    model = _mlp()
    geometry = GradientGeometry(model, registry=registry, **options)
    for x, y in _batches(5):
        torch.nn.functional.mse_loss(model(x), y).backward()
    logger = get_logger("training", log_dir=tmp_path, run_id="lines")
    summary = geometry.end_epoch(logger=logger)
    assert summary.line_aggregation == line
    names = registry.snapshot()
    for layer in summary.layers:
        published = {
            name.rsplit(".", 1)[1]
            for name in names
            if name.startswith(f"geno_lewm.training.gradients.{layer.layer}.l2.")
        }
        assert published == stats
        assert names[gradient_metric_name(layer.layer, "l2", line)] == layer.value.aggregate(line)
    records = [r.model_dump() for r in read_log(tmp_path / "lines.jsonl") if r.event == "training.gradients.layer"]
    assert {r["line"] for r in records} == {line}
    assert all(r["bands"] == "+".join(summary.range_aggregation) for r in records)
    if options.get("keep_values"):
        assert [(r["q1"], r["q3"]) for r in records] == [(s.value.q1, s.value.q3) for s in summary.layers]


def test_quartile_lines_and_band_need_the_values() -> None:
    """q1, q3, iqr lines and the q1q3 band are refused without keep_values, like the median; typos are named."""
    model = _mlp()
    for options in ({"line_aggregation": "iqr"}, {"line_aggregation": "Q3"}, {"range_aggregation": ("std", "Q1-Q3")}):
        with pytest.raises(InputError, match="needs keep_values=True"):
            GradientGeometry(model, **options)
    with pytest.raises(InputError, match="'line_aggregation' must be one of 'mean', 'median', 'min', 'max', 'q1'"):
        GradientGeometry(model, line_aggregation="mode")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="'range_aggregation' must be a non-empty selection"):
        GradientGeometry(model, range_aggregation=("minmax", "min-max"))  # the same band twice


def test_check_gradient_options_validates_without_a_model() -> None:
    """Unknown names get a suggestion; types are checked; spellings come back canonical; only given keys return."""
    from geno_lewm.training.gradients import check_gradient_options

    assert check_gradient_options({"range_aggregation": "min-max", "line_aggregation": "max"}) == {
        "range_aggregation": ("minmax",),
        "line_aggregation": "max",
    }
    with pytest.raises(InputError, match="no option 'normalise_by_size'; did you mean 'normalize_by_size'"):
        check_gradient_options({"normalise_by_size": True})
    with pytest.raises(InputError, match="'log_scale' must be True or False"):
        check_gradient_options({"log_scale": "yes"})
    with pytest.raises(InputError, match="'layers' must be a sequence of module names"):
        check_gradient_options({"layers": "encoder"})
    with pytest.raises(InputError, match="'seed' must be a non-negative integer"):
        check_gradient_options({"seed": -1})
