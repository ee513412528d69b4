"""The W&B and MLflow sinks against the real packages, read back from what the trackers wrote.

W&B runs in offline mode; its run directory holds no history file then, only the run's
transaction log (``run-<id>.wandb``), which :func:`wandb_history` reads. MLflow writes to a
local file store and is read back with ``MlflowClient.get_metric_history``. Everything the
trackers write goes under the test's temporary directory (home, caches, configuration and
the working directory included; checked at the end of each test), and nothing reaches the
network: W&B is offline and reports no errors, MLflow sends no telemetry.
"""

from __future__ import annotations

import importlib
import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from geno_lewm.integrations.sinks import MemorySink, MLflowSink, WandbSink, short_metric_name
from geno_lewm.metrics import MetricRegistry
from geno_lewm.training.collapse import CollapseMonitor

TARGET = [[1.0, 0.0, 2.0], [0.0, 1.0, -1.0], [-1.0, 0.5, 0.0], [2.0, -2.0, 1.0], [0.5, 0.25, -0.75]]
# Values whose float64 must survive the trip exactly: a third, the smallest subnormal, the largest finite.
AWKWARD = {"edge/third": 1 / 3, "edge/tiny": 5e-324, "edge/huge": 1.7976931348623157e308, "edge/negative": -2.5}


@pytest.fixture
def sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Point every place the trackers write (home, caches, run directories, the working
    directory) into ``tmp_path``, keep them offline and quiet, and yield ``tmp_path``.
    """
    home = tmp_path / "home"
    for folder in ("home", "work", "wandb"):
        (tmp_path / folder).mkdir()
    settings = {
        "HOME": home,
        "XDG_CACHE_HOME": home / ".cache",
        "XDG_CONFIG_HOME": home / ".config",
        "XDG_DATA_HOME": home / ".local" / "share",
        "WANDB_MODE": "offline",
        "WANDB_DIR": tmp_path / "wandb",
        "WANDB_CACHE_DIR": tmp_path / "wandb-cache",
        "WANDB_CONFIG_DIR": tmp_path / "wandb-config",
        "WANDB_DATA_DIR": tmp_path / "wandb-data",
        "WANDB_ARTIFACT_DIR": tmp_path / "wandb-artifacts",
        "WANDB_SILENT": "true",
        "WANDB_CONSOLE": "off",
        "WANDB_ERROR_REPORTING": "false",
        "WANDB_DISABLE_GIT": "true",
        "WANDB_DISABLE_CODE": "true",
        "WANDB__DISABLE_STATS": "true",
        "MLFLOW_TRACKING_URI": (tmp_path / "mlruns").as_uri(),
        "MLFLOW_ALLOW_FILE_STORE": "true",  # MLflow 3 refuses a file store without it
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "true",
    }
    for name, value in settings.items():
        monkeypatch.setenv(name, str(value))
    for name in ("WANDB_API_KEY", "WANDB_BASE_URL", "WANDB_PROJECT", "WANDB_ENTITY", "MLFLOW_EXPERIMENT_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path / "work")
    yield tmp_path


def assert_nothing_written_outside(sandbox: Path) -> None:
    """Nothing in the fake home nor in the working directory: the trackers wrote only where they were told."""
    assert [str(path.relative_to(sandbox)) for path in (sandbox / "home").rglob("*")] == []
    assert list((sandbox / "work").iterdir()) == []


def observed_checks(monitor: CollapseMonitor) -> None:
    """Three scheduled checks (steps 10, 20, 30) on predictions that shrink towards zero."""
    for step in range(1, 31):
        scale = 1.0 / step
        prediction = [[scale * value for value in row] for row in TARGET]
        monitor.observe(prediction, TARGET, kl_reg=0.25 * step, step=step)


# ------------------------------------------------------------------ W&B
def wandb_records(path: Path) -> Iterator[bytes]:
    """The records of a W&B transaction log, in order.

    The file starts with a 7-byte header (``:W&B``, a 2-byte magic, a version byte); the
    rest is cut into 32 KiB blocks of chunks, each with a 7-byte header: CRC, length
    (little-endian, 2 bytes) and kind (1 whole record; 2, 3, 4 its first, middle and last
    pieces). Fewer than 7 bytes left in a block, or a zero header, is padding.
    """
    data = path.read_bytes()
    assert data[:4] == b":W&B", f"not a W&B transaction log: {data[:7]!r}"
    block, header = 32 * 1024, 7
    position, pieces = header, bytearray()
    while position + header <= len(data):
        left = block - position % block
        if left < header:
            position += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[position : position + header])
        if kind == 0:
            position += left
            continue
        pieces += data[position + header : position + header + length]
        position += header + length
        if kind in (1, 4):
            yield bytes(pieces)
            pieces.clear()


def wandb_history(run_dir: Path) -> list[tuple[int, dict[str, float]]]:
    """``(step, {name: value})`` of each history row of an offline run, without W&B's own
    ``_step``, ``_runtime`` and ``_timestamp`` entries.
    """
    messages: Any = importlib.import_module("wandb.proto.wandb_internal_pb2")  # W&B's protobuf classes
    (log,) = run_dir.glob("run-*.wandb")
    rows = []
    for payload in wandb_records(log):
        record = messages.Record()
        record.ParseFromString(payload)
        if record.WhichOneof("record_type") != "history":
            continue
        row: dict[str, float] = {}
        for item in record.history.item:
            name = ".".join(item.nested_key) or item.key
            if not name.startswith("_"):
                row[name] = float(json.loads(item.value_json)) if item.value_json else item.number
        rows.append((record.history.step.num, row))
    return rows


def test_wandb_offline_run_holds_exactly_what_the_sinks_logged(sandbox: Path) -> None:
    """Steps and exact values sent by WandbSink() and WandbSink(run) come back from the offline run's log."""
    wandb = pytest.importorskip("wandb")
    memory = MemorySink()
    current = WandbSink(rename=short_metric_name)  # built before the run exists, as a configuration does
    monitor = CollapseMonitor(log_every_steps=10, backend="python", registry=MetricRegistry(), sinks=[current, memory])
    run = wandb.init(project="geno-lewm-tests", mode="offline")
    try:
        observed_checks(monitor)
        WandbSink(run).log_metrics(AWKWARD, step=40)
    finally:
        run.finish()
        wandb.teardown()
    expected = [
        (step, {short_metric_name(name): value for name, value in values.items()}) for step, values in memory.calls
    ]
    assert [step for step, _ in expected] == [10, 20, 30]
    run_dirs = list((sandbox / "wandb" / "wandb").glob("offline-run-*"))
    assert len(run_dirs) == 1
    assert wandb_history(run_dirs[0]) == [*expected, (40, AWKWARD)]
    assert_nothing_written_outside(sandbox)


# ------------------------------------------------------------------ MLflow
def metric_history(client: Any, run_id: str, names: list[str]) -> dict[str, list[tuple[int, float]]]:
    """``{name: [(step, value), ...]}`` of a run, in step order, as the tracking store returns it."""
    history = {}
    for name in names:
        entries = sorted(client.get_metric_history(run_id, name), key=lambda metric: (metric.step, metric.timestamp))
        history[name] = [(metric.step, metric.value) for metric in entries]
    return history


def test_mlflow_client_run_holds_exactly_what_the_sink_logged(sandbox: Path) -> None:
    """Steps and exact values sent by MLflowSink(run_id, client=...) come back from the file store, renamed."""
    pytest.importorskip("mlflow")
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=(sandbox / "mlruns").as_uri())
    run_id = client.create_run(client.create_experiment("geno-lewm-tests")).info.run_id
    memory = MemorySink()
    sink = MLflowSink(run_id, client=client, rename=short_metric_name)
    monitor = CollapseMonitor(log_every_steps=10, backend="python", registry=MetricRegistry(), sinks=[sink, memory])
    observed_checks(monitor)
    sink.log_metrics(AWKWARD, step=40)
    client.set_terminated(run_id)
    names = sorted(memory.calls[0][1])
    expected = {short_metric_name(name): memory.series(name) for name in names}
    assert all(len(series) == 3 for series in expected.values())
    assert metric_history(client, run_id, list(expected)) == expected
    assert metric_history(client, run_id, list(AWKWARD)) == {name: [(40, value)] for name, value in AWKWARD.items()}
    assert_nothing_written_outside(sandbox)


def test_mlflow_fluent_sink_logs_to_the_active_run_or_the_named_one(sandbox: Path) -> None:
    """MLflowSink() logs to the active run, MLflowSink(run_id) to the named one even while another is active."""
    mlflow = pytest.importorskip("mlflow")
    client = mlflow.MlflowClient()  # the MLFLOW_TRACKING_URI of the sandbox, as the fluent API uses
    experiment = client.create_experiment("geno-lewm-tests")
    named = client.create_run(experiment).info.run_id
    with mlflow.start_run(experiment_id=experiment) as active:
        MLflowSink().log_metrics({"a": 0.1, "b": -7.0}, step=5)
        MLflowSink().log_metrics({"a": 1 / 3}, step=6)
        MLflowSink(named).log_metrics(AWKWARD, step=7)
    assert metric_history(client, active.info.run_id, ["a", "b"]) == {"a": [(5, 0.1), (6, 1 / 3)], "b": [(5, -7.0)]}
    assert metric_history(client, named, list(AWKWARD)) == {name: [(7, value)] for name, value in AWKWARD.items()}
    assert metric_history(client, active.info.run_id, list(AWKWARD)) == {name: [] for name in AWKWARD}
    assert_nothing_written_outside(sandbox)
