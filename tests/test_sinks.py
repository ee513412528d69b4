"""The MetricSink protocol: the built-in CSV and memory sinks, the tracker adapters, and
what the collapse monitor sends to its sinks.
"""

from __future__ import annotations

import csv
import math
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import pytest

from geno_lewm.errors import InputError
from geno_lewm.integrations.sinks import (
    CSVSink,
    MemorySink,
    MetricSink,
    MLflowSink,
    SinkUnavailableError,
    TensorBoardSink,
    WandbSink,
    check_sinks,
    publish_metrics,
    short_metric_name,
)
from geno_lewm.metrics import MetricRegistry
from geno_lewm.training.collapse import METRIC_NAMES, CollapseMonitor, metric_name

if TYPE_CHECKING:
    from pathlib import Path

    from conftest import RecordingLogger

TARGET = [[1.0, 0.0, 2.0], [0.0, 1.0, -1.0], [-1.0, 0.5, 0.0], [2.0, -2.0, 1.0]]


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as stream:
        return list(csv.DictReader(stream))


class ListTracker:
    """A user's own tracker: no base class, just a log_metrics method."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, dict[str, float]]] = []

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Keep the call."""
        self.seen.append((step, dict(metrics)))


class FailingTracker:
    """A tracker whose service is down."""

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Fail as an unreachable service does."""
        raise ConnectionError("tracker unreachable")


# --------------------------------------------------------------- protocol
def test_any_object_with_log_metrics_is_a_sink() -> None:
    """The protocol is structural: a plain class qualifies, and check_sinks accepts one sink or several."""
    tracker = ListTracker()
    assert isinstance(tracker, MetricSink)
    assert check_sinks(tracker) == (tracker,)
    assert check_sinks([tracker, MemorySink()])[0] is tracker
    assert check_sinks(None) == ()


def test_check_sinks_names_the_item_that_is_not_a_sink() -> None:
    """Something without log_metrics is refused with its position."""
    with pytest.raises(InputError, match="'sinks' item 1 has no log_metrics") as caught:
        check_sinks([MemorySink(), object()])
    assert caught.value.details["index"] == 1
    with pytest.raises(InputError, match="'sinks' must be a sequence"):
        check_sinks("wandb")


def test_publish_gives_each_sink_its_own_copy() -> None:
    """A sink that edits its mapping does not change what the next sink receives."""

    class Greedy:
        def log_metrics(self, metrics: dict[str, float], step: int) -> None:
            """Empty the mapping received."""
            metrics.clear()

    memory = MemorySink()
    publish_metrics([Greedy(), memory], {"a": 1.0}, step=3)
    assert memory.calls == [(3, {"a": 1.0})]


def test_short_metric_name_groups_by_family() -> None:
    """Library names become family/rest; other names pass unchanged."""
    assert short_metric_name(metric_name("pred_var_per_dim")) == "collapse/pred_var_per_dim"
    assert short_metric_name("geno_lewm.training.gradients.fc.l2.mean") == "gradients/fc.l2.mean"
    assert short_metric_name("loss") == "loss"


@pytest.mark.parametrize(
    ("metrics", "step", "message"),
    [
        ({"a": "high"}, 1, "'metrics' value of 'a' must be a real number"),
        ({"a": True}, 1, "'metrics' value of 'a' must be a real number"),
        ([("a", 1.0)], 1, "'metrics' must be a mapping"),
        ({"a": 1.0}, -1, "'step' must be a non-negative integer: got -1"),
        ({"": 1.0}, 1, "'metrics' has a key that is not a name"),
    ],
)
def test_built_in_sinks_refuse_bad_calls(tmp_path: Path, metrics: Any, step: Any, message: str) -> None:
    """Bad metrics or steps raise InputError and write nothing."""
    sink = CSVSink(tmp_path / "m.csv")
    with pytest.raises(InputError, match=message):
        sink.log_metrics(metrics, step)
    assert not sink.path.exists()


# -------------------------------------------------------------------- CSV
def test_csv_sink_appends_long_rows_with_one_header(tmp_path: Path) -> None:
    """Rows are time,step,name,value; a second sink on the same file appends without a second header."""
    path = tmp_path / "nested" / "metrics.csv"
    CSVSink(path).log_metrics({"a": 0.25, "b": -3.0}, step=10)
    CSVSink(path).log_metrics({"a": 0.5}, step=20)
    rows = read_rows(path)
    assert [(r["step"], r["name"], float(r["value"])) for r in rows] == [
        ("10", "a", 0.25),
        ("10", "b", -3.0),
        ("20", "a", 0.5),
    ]
    assert path.read_text().count("time,step,name,value") == 1
    assert all(float(r["time"]) > 0 for r in rows)


def test_csv_sink_round_trips_non_finite_and_exact_values(tmp_path: Path) -> None:
    """NaN and infinities are written so float() reads them back; finite values round-trip exactly."""
    sink = CSVSink(tmp_path / "m.csv")
    values = {"nan": math.nan, "inf": math.inf, "ninf": -math.inf, "tiny": 5e-324, "third": 1 / 3}
    sink.log_metrics(values, step=0)
    back = {r["name"]: float(r["value"]) for r in read_rows(sink.path)}
    assert math.isnan(back.pop("nan"))
    assert back == {k: v for k, v in values.items() if k != "nan"}


def test_csv_sink_renames_and_refuses_a_directory(tmp_path: Path) -> None:
    """The rename function applies to every name; a directory is not a file to append to."""
    sink = CSVSink(tmp_path / "m.csv", rename=short_metric_name)
    sink.log_metrics({metric_name("kl_reg"): 1.0}, step=5)
    assert [r["name"] for r in read_rows(sink.path)] == ["collapse/kl_reg"]
    with pytest.raises(InputError, match="is a directory"):
        CSVSink(tmp_path)
    with pytest.raises(InputError, match="'rename' must be callable"):
        CSVSink(tmp_path / "x.csv", rename="short")  # type: ignore[arg-type]


# ------------------------------------------------------------- monitor use
def test_monitor_sends_every_check_to_every_sink(tmp_path: Path, registry: MetricRegistry) -> None:
    """Each check reaches each sink by registry name with the check's values; unscheduled steps send nothing."""
    memory, tracker = MemorySink(), ListTracker()
    csv_sink = CSVSink(tmp_path / "collapse.csv")
    monitor = CollapseMonitor(
        log_every_steps=10, backend="python", registry=registry, sinks=[memory, tracker, csv_sink]
    )
    checks = []
    for step in range(1, 31):
        check = monitor.observe(TARGET, TARGET, kl_reg=0.5, step=step)
        if check is not None:
            checks.append(check)
    assert [step for step, _ in memory.calls] == [10, 20, 30]
    assert tracker.seen == memory.calls
    for (step, values), check in zip(memory.calls, checks):
        assert values == {metric_name(name): getattr(check.metrics, name) for name in METRIC_NAMES}
        assert step == check.step
    assert len(read_rows(csv_sink.path)) == 3 * len(METRIC_NAMES)


def test_monitor_sends_spectral_gauges_when_spectra_are_on(registry: MetricRegistry) -> None:
    """With spectrum=True the sinks also get the six spectral gauges, equal to the check's spectrum."""
    memory = MemorySink()
    monitor = CollapseMonitor(log_every_steps=1, backend="python", registry=registry, spectrum=True, sinks=memory)
    check = monitor.observe(TARGET, TARGET, kl_reg=0.5, step=1)
    assert check is not None and check.spectrum is not None
    ((_, values),) = memory.calls
    assert values[metric_name("pred_effective_rank")] == check.spectrum.prediction.effective_rank
    assert values[metric_name("target_normalized_std")] == check.spectrum.target.normalized_std
    assert len(values) == len(METRIC_NAMES) + 6


def test_a_failing_sink_raises_after_registry_and_log(
    registry: MetricRegistry, recording_logger: RecordingLogger
) -> None:
    """A sink's exception propagates, but the registry and the log already hold the check."""
    monitor = CollapseMonitor(log_every_steps=1, backend="python", registry=registry, sinks=[FailingTracker()])
    with pytest.raises(ConnectionError, match="tracker unreachable"):
        monitor.observe(TARGET, TARGET, kl_reg=0.5, step=1, logger=recording_logger)
    assert registry.value(metric_name("kl_reg")) == 0.5
    assert len(recording_logger.events("info", "training.metric")) == len(METRIC_NAMES)


def test_monitor_refuses_a_non_sink(registry: MetricRegistry) -> None:
    """A sink list with something that is not a sink is refused at construction."""
    with pytest.raises(InputError, match="'sinks' item 0 has no log_metrics"):
        CollapseMonitor(sinks=[print], registry=registry)


# ---------------------------------------------------------------- adapters
class RunLike:
    """Stands for a W&B run: keeps what log() receives."""

    def __init__(self) -> None:
        self.logged: list[tuple[dict[str, float], int]] = []

    def log(self, data: dict[str, float], step: int) -> None:
        """Keep the call."""
        self.logged.append((data, step))


class ClientLike:
    """Stands for an MlflowClient: keeps what log_metric() receives."""

    def __init__(self) -> None:
        self.logged: list[tuple[str, str, float, int]] = []

    def log_metric(self, run_id: str, key: str, value: float, step: int) -> None:
        """Keep the call."""
        self.logged.append((run_id, key, value, step))


class WriterLike:
    """Stands for a SummaryWriter: keeps what add_scalar() receives."""

    def __init__(self) -> None:
        self.scalars: list[tuple[str, float, int]] = []

    def add_scalar(self, tag: str, value: float, global_step: int) -> None:
        """Keep the call."""
        self.scalars.append((tag, value, global_step))


def test_wandb_sink_logs_one_dict_per_step() -> None:
    """WandbSink calls run.log(metrics, step=step), renamed."""
    run = RunLike()
    WandbSink(run, rename=short_metric_name).log_metrics({metric_name("kl_reg"): 2.0}, step=500)
    assert run.logged == [({"collapse/kl_reg": 2.0}, 500)]
    with pytest.raises(InputError, match="'run' must be a W&B run"):
        WandbSink(object())


def test_mlflow_sink_with_a_client_logs_each_metric() -> None:
    """MLflowSink(client=..., run_id=...) calls client.log_metric once per metric."""
    client = ClientLike()
    MLflowSink("run-1", client=client).log_metrics({"a": 1.0, "b": 2.0}, step=7)
    assert client.logged == [("run-1", "a", 1.0, 7), ("run-1", "b", 2.0, 7)]
    with pytest.raises(InputError, match="'run_id' must name the run"):
        MLflowSink(client=client)


def test_tensorboard_sink_adds_one_scalar_per_metric() -> None:
    """TensorBoardSink calls writer.add_scalar(name, value, global_step=step); a given writer is not closed."""
    writer = WriterLike()
    sink = TensorBoardSink(writer)
    sink.log_metrics({"a": 1.5}, step=3)
    sink.close()
    assert writer.scalars == [("a", 1.5, 3)]
    assert sink.writer is writer
    with pytest.raises(InputError, match="not both"):
        TensorBoardSink(writer, log_dir="runs")


def test_tensorboard_sink_writes_event_files_tensorboard_reads_back(tmp_path: Path) -> None:
    """With the real tensorboard package, the scalars written through the sink are read back by TensorBoard itself."""
    pytest.importorskip("tensorboard")
    pytest.importorskip("torch")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    sink = TensorBoardSink(log_dir=tmp_path / "tb", rename=short_metric_name)
    sink.log_metrics({"geno_lewm.training.collapse.kl_reg": 0.5, "geno_lewm.training.collapse.pred_cos_mean": 0.9}, 10)
    sink.log_metrics({"geno_lewm.training.collapse.kl_reg": 0.25}, 20)
    sink.close()
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    assert sorted(events.Tags()["scalars"]) == ["collapse/kl_reg", "collapse/pred_cos_mean"]
    assert [(e.step, e.value) for e in events.Scalars("collapse/kl_reg")] == [(10, 0.5), (20, 0.25)]


# ------------------------------------------------ packages checked when a sink is built
# (sink, its pip packages, the modules blocked to make them look uninstalled)
ADAPTERS_AND_PACKAGES = [
    (WandbSink, ("wandb",), ("wandb",)),
    (MLflowSink, ("mlflow",), ("mlflow",)),
    (TensorBoardSink, ("tensorboard",), ("tensorboard",)),
    (TensorBoardSink, ("torch", "tensorboard"), ("torch", "tensorboard")),
]


def block_modules(monkeypatch: pytest.MonkeyPatch, *names: str) -> None:
    """Make ``import name`` fail for each name, as when the package is not installed."""
    for name in names:
        monkeypatch.setitem(sys.modules, name, None)


@pytest.mark.parametrize(("sink", "packages", "blocked"), ADAPTERS_AND_PACKAGES)
def test_adapter_without_its_package_fails_at_construction(
    sink: Any, packages: tuple[str, ...], blocked: tuple[str, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Building an adapter without its packages raises SinkUnavailableError naming them and the pip command."""
    block_modules(monkeypatch, *blocked)
    with pytest.raises(SinkUnavailableError) as caught:
        sink()
    error = caught.value
    named = " and ".join(repr(package) for package in packages)
    assert str(error).startswith(f"{sink.__name__} needs the {named} package")
    assert str(error).endswith(f"not installed: pip install {' '.join(packages)}")
    assert isinstance(error, ImportError) and isinstance(error, InputError)
    assert error.name == packages[0]
    assert error.details["packages"] == packages and error.details["sink"] == sink.__name__


@pytest.mark.parametrize(
    ("sink", "package"), [(WandbSink, "wandb"), (MLflowSink, "mlflow"), (TensorBoardSink, "tensorboard")]
)
def test_adapter_checks_its_package_without_importing_it(
    sink: Any, package: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A package that importlib.util.find_spec cannot find is reported missing, and nothing is imported to learn it."""
    import importlib.util

    real_find_spec = importlib.util.find_spec
    asked: list[str] = []

    def find_spec(name: str, package_: str | None = None) -> Any:
        asked.append(name)
        return None if name == package else real_find_spec(name, package_)

    for name in [name for name in sys.modules if name == package or name.startswith(package + ".")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(SinkUnavailableError, match=f"pip install .*{package}"):
        sink()
    assert package in asked
    assert package not in sys.modules


def test_adapters_given_their_own_object_need_no_package(monkeypatch: pytest.MonkeyPatch) -> None:
    """A run, a client or a writer passed in is used as it is: no tracker package needs to be installed."""
    block_modules(monkeypatch, "wandb", "mlflow", "torch", "tensorboard", "torch.utils.tensorboard")
    run, client, writer = RunLike(), ClientLike(), WriterLike()
    for sink in (WandbSink(run), MLflowSink("run-1", client=client), TensorBoardSink(writer)):
        sink.log_metrics({"a": 0.5}, step=4)
    assert run.logged == [({"a": 0.5}, 4)]
    assert client.logged == [("run-1", "a", 0.5, 4)]
    assert writer.scalars == [("a", 0.5, 4)]


def test_wandb_sink_without_a_run_logs_to_the_current_run_of_each_call(monkeypatch: pytest.MonkeyPatch) -> None:
    """WandbSink() looks up wandb.run at every call: before wandb.init() it refuses, afterwards it logs there."""
    import types

    wandb = types.ModuleType("wandb")
    wandb.run = None  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "wandb", wandb)
    sink = WandbSink(rename=short_metric_name)
    with pytest.raises(InputError, match=r"WandbSink has no run: call wandb.init\(\) first"):
        sink.log_metrics({metric_name("kl_reg"): 1.0}, step=1)
    first, second = RunLike(), RunLike()
    wandb.run = first  # type: ignore[attr-defined]
    sink.log_metrics({metric_name("kl_reg"): 1.0}, step=1)
    wandb.run = second  # type: ignore[attr-defined]
    sink.log_metrics({metric_name("kl_reg"): 2.0}, step=2)
    assert first.logged == [({"collapse/kl_reg": 1.0}, 1)]
    assert second.logged == [({"collapse/kl_reg": 2.0}, 2)]


class FluentMlflow:
    """Stands for the mlflow module's fluent log_metrics; keeps the calls."""

    def __init__(self) -> None:
        self.logged: list[tuple[dict[str, float], int, str | None]] = []

    def log_metrics(self, metrics: dict[str, float], step: int | None = None, run_id: str | None = None) -> None:
        """Keep the call."""
        self.logged.append((metrics, step if step is not None else -1, run_id))


def test_mlflow_sink_with_a_run_id_and_no_client_logs_to_that_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """MLflowSink(run_id) without a client passes the run id to mlflow.log_metrics; without one, the active run."""
    import types

    fluent = FluentMlflow()
    mlflow = types.ModuleType("mlflow")
    mlflow.log_metrics = fluent.log_metrics  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "mlflow", mlflow)
    MLflowSink("run-7").log_metrics({"a": 1.0}, step=3)
    MLflowSink().log_metrics({"a": 2.0}, step=4)
    assert fluent.logged == [({"a": 1.0}, 3, "run-7"), ({"a": 2.0}, 4, None)]
    with pytest.raises(InputError, match="'run_id' must name the run"):
        MLflowSink("")


def test_mlflow_sink_refuses_a_run_id_its_mlflow_cannot_route(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where mlflow.log_metrics takes no run_id, MLflowSink(run_id) fails when built instead of logging elsewhere."""
    import types

    mlflow = types.ModuleType("mlflow")

    def log_metrics(metrics: dict[str, float], step: int | None = None) -> None:
        raise AssertionError("must not be called")

    mlflow.log_metrics = log_metrics  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "mlflow", mlflow)
    with pytest.raises(InputError, match=r"pass client=mlflow\.MlflowClient\(\)"):
        MLflowSink("run-7")
    MLflowSink()  # the active run needs no run_id


@pytest.mark.parametrize(
    ("sink_type", "sink", "blocked"),
    [
        ("wandb", "WandbSink", ("wandb",)),
        ("mlflow", "MLflowSink", ("mlflow",)),
        ("tensorboard", "TensorBoardSink", ("tensorboard",)),
    ],
)
def test_config_build_names_the_sink_whose_package_is_missing(
    sink_type: str, sink: str, blocked: tuple[str, ...], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """build() fails on a sink whose package is missing, naming sinks[i], the package and pip, with no run log."""
    from geno_lewm.config import load_config

    block_modules(monkeypatch, *blocked)
    config = load_config(
        {"log": {"dir": str(tmp_path / "logs"), "run_id": "r"}, "sinks": [{"type": "memory"}, {"type": sink_type}]}
    )
    with pytest.raises(SinkUnavailableError) as caught:
        config.build(registry=MetricRegistry())
    message = str(caught.value)
    assert message.startswith(f"sinks[1]: {sink} needs the {blocked[0]!r} package")
    assert message.endswith(f"pip install {blocked[0]}")
    assert caught.value.details["field"] == "sinks[1]"
    assert isinstance(caught.value, InputError)
    assert not (tmp_path / "logs").exists()


def test_config_build_names_the_sink_that_refuses_its_arguments(tmp_path: Path) -> None:
    """A sink constructor's own refusal (a CSV path that is a directory) comes back with the sink's path."""
    from geno_lewm.config import load_config

    config = load_config({"log": {"enabled": False}, "sinks": [{"type": "csv", "path": str(tmp_path)}]})
    with pytest.raises(InputError, match=r"^sinks\[0\]: 'path' must be a file") as caught:
        config.build(registry=MetricRegistry())
    assert caught.value.details["field"] == "sinks[0].path"
