"""MetricsCallback in a real ``lightning.Trainer`` on the CPU: torchmetrics, scikit-learn and
plain callables on a tiny classifier's step outputs, compared with the same metrics
computed directly; schedules; what reaches ``pl_module.log``, the progress bar, a CSV
logger, the registry, the JSON log and sinks; and two DDP ranks with uneven shards.
"""

from __future__ import annotations

import csv
import json
import os
import warnings
from fractions import Fraction
from functools import partial
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
lightning = pytest.importorskip("lightning")
torchmetrics = pytest.importorskip("torchmetrics")
sklearn_metrics = pytest.importorskip("sklearn.metrics")

from lightning.pytorch import LightningModule, Trainer  # noqa: E402
from lightning.pytorch.loggers import CSVLogger  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

from geno_lewm.errors import InputError  # noqa: E402
from geno_lewm.integrations.metrics_callback import MetricsCallback, Stage, registry_name  # noqa: E402
from geno_lewm.integrations.sinks import MemorySink  # noqa: E402
from geno_lewm.logs import read_log  # noqa: E402
from geno_lewm.metrics import CATALOGUE, MetricRegistry  # noqa: E402
from geno_lewm.observability import get_logger  # noqa: E402

pytestmark = [
    pytest.mark.filterwarnings("ignore:.*does not have many workers"),
    pytest.mark.filterwarnings("ignore:.*LeafSpec"),
    pytest.mark.filterwarnings("ignore:.*smaller than the logging interval"),
]

TRAIN_ROWS, VAL_ROWS, BATCH = 22, 14, 4  # both end in a short batch
FEATURES, CLASSES = 5, 3


class TinyClassifier(LightningModule):
    """A linear classifier; every step returns its logits and the labels."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.head = nn.Linear(FEATURES, CLASSES)

    def forward(self, x: Any) -> Any:
        """Logits."""
        return self.head(x)

    def training_step(self, batch: Any, batch_idx: int) -> dict[str, Any]:
        """Cross-entropy, with the logits and labels for the metrics."""
        x, y = batch
        logits = self(x)
        return {"loss": nn.functional.cross_entropy(logits, y), "logits": logits, "target": y}

    def validation_step(self, batch: Any, batch_idx: int) -> dict[str, Any]:
        """Logits and labels."""
        x, y = batch
        return {"logits": self(x), "target": y}

    test_step = validation_step

    def configure_optimizers(self) -> Any:
        """Plain SGD."""
        return torch.optim.SGD(self.parameters(), lr=0.5)


def dataset(rows: int, seed: int) -> TensorDataset:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, FEATURES, generator=generator)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 1).long()
    return TensorDataset(x, y)


TRAIN, VAL = dataset(TRAIN_ROWS, 1), dataset(VAL_ROWS, 2)


def loader(data: TensorDataset) -> DataLoader[Any]:
    return DataLoader(data, batch_size=BATCH)


def trainer_for(callback: MetricsCallback, tmp_path: Path, *, epochs: int = 2, **kwargs: Any) -> Trainer:
    options: dict[str, Any] = {
        "accelerator": "cpu",
        "devices": 1,
        "max_epochs": epochs,
        "enable_progress_bar": False,
        "enable_checkpointing": False,
        "enable_model_summary": False,
        "default_root_dir": tmp_path,
        "logger": False,
        "num_sanity_val_steps": 2,
        "callbacks": [callback],
    }
    options.update(kwargs)
    return Trainer(**options)


def predicted(out: Any) -> Any:
    """Class labels from the logits."""
    return out["logits"].argmax(1)


macro_f1 = partial(sklearn_metrics.f1_score, average="macro")


def classifier_metrics() -> dict[str, Any]:
    return {
        "acc": sklearn_metrics.accuracy_score,
        "f1": macro_f1,
        "tm_f1": torchmetrics.F1Score(task="multiclass", num_classes=CLASSES, average="macro"),
        "rows": lambda target: float(len(target)),
    }


NEEDS = {
    "acc": {"y_true": "target", "y_pred": predicted},
    "f1": {"y_true": "target", "y_pred": predicted},
    "tm_f1": None,
    "rows": None,
}


def direct(model: TinyClassifier, data: TensorDataset) -> tuple[Any, Any, list[tuple[Any, Any]]]:
    """The model's labels on all of ``data`` and per batch, computed without the callback."""
    model.eval()
    with torch.no_grad():
        logits = model(data.tensors[0])
    batches = [(logits[lo : lo + BATCH], data.tensors[1][lo : lo + BATCH]) for lo in range(0, len(data), BATCH)]
    return logits, data.tensors[1], batches


def weighted(values: list[float], sizes: list[int]) -> float:
    return float(sum((Fraction(v) * n for v, n in zip(values, sizes)), Fraction(0)) / sum(sizes))


def values_of(callback: MetricsCallback, stage: str) -> dict[str, float]:
    return {value.name: value.value for value in callback.results[stage][1]}


# ------------------------------------------------------------------ fitted runs, shared
@pytest.fixture(scope="module")
def epoch_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Two epochs with per-epoch metrics, a CSV logger, a JSON log, a registry and a sink; then a test run."""
    tmp_path = tmp_path_factory.mktemp("epoch")
    registry, sink = MetricRegistry(), MemorySink()
    log = get_logger("training", log_dir=tmp_path / "logs", run_id="metrics-callback")
    callback = MetricsCallback(
        classifier_metrics(),
        needs=NEEDS,
        mode="epoch",
        prog_bar=True,
        registry=registry,
        logger=log,
        sinks=[sink],
        units={"rows": "rows"},
    )
    model = TinyClassifier()
    trainer = trainer_for(callback, tmp_path, logger=CSVLogger(tmp_path, name="csv"))
    trainer.fit(model, loader(TRAIN), loader(VAL))
    after_fit = {
        "val": values_of(callback, "val"),
        "train": values_of(callback, "train"),
        "progress_bar": dict(trainer.progress_bar_metrics),
        "callback_metrics": {k: float(v) for k, v in trainer.callback_metrics.items()},
    }
    trainer.test(model, loader(VAL), verbose=False)
    return {
        "callback": callback,
        "model": model,
        "trainer": trainer,
        "registry": registry,
        "sink": sink,
        "log": log,
        "after_fit": after_fit,
        "csv": Path(trainer.logger.log_dir) / "metrics.csv",  # type: ignore[union-attr]
    }


@pytest.fixture(scope="module")
def step_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One epoch with per-step metrics."""
    tmp_path = tmp_path_factory.mktemp("step")
    callback = MetricsCallback(
        classifier_metrics(), needs=NEEDS, mode="step", registry=MetricRegistry(), units={"rows": "rows"}, logger=None
    )
    model = TinyClassifier()
    trainer_for(callback, tmp_path, epochs=1).fit(model, loader(TRAIN), loader(VAL))
    return {"callback": callback, "model": model}


# ------------------------------------------------------------------ values
def test_per_epoch_validation_metrics_equal_the_metrics_on_all_outputs(epoch_run: dict[str, Any]) -> None:
    """Scikit-learn accuracy and macro F1, torchmetrics F1: exactly the values on the whole validation set."""
    logits, target, _ = direct(epoch_run["model"], VAL)
    labels = logits.argmax(1)
    values = epoch_run["after_fit"]["val"]
    assert values["acc"] == sklearn_metrics.accuracy_score(target.numpy(), labels.numpy())
    assert values["f1"] == macro_f1(target.numpy(), labels.numpy())
    expected = torchmetrics.functional.f1_score(logits, target, task="multiclass", num_classes=CLASSES, average="macro")
    assert values["tm_f1"] == pytest.approx(float(expected), abs=1e-7)
    assert values["rows"] == VAL_ROWS  # the sanity check's batches were not counted


def test_per_step_validation_metrics_are_batch_size_weighted_means(step_run: dict[str, Any]) -> None:
    """Per-step macro F1 is sum(F1_b n_b) / sum(n_b) over the batches (uneven last one); torchmetrics stays exact."""
    logits, target, batches = direct(step_run["model"], VAL)
    values = values_of(step_run["callback"], "val")
    sizes = [len(t) for _, t in batches]
    f1s = [macro_f1(t.numpy(), z.argmax(1).numpy()) for z, t in batches]
    assert values["f1"] == pytest.approx(weighted(f1s, sizes), rel=1e-14)
    assert values["acc"] == pytest.approx(
        sklearn_metrics.accuracy_score(target.numpy(), logits.argmax(1).numpy()), rel=1e-14
    )
    assert values["rows"] == pytest.approx(weighted([float(n) for n in sizes], sizes), rel=1e-14)
    expected = torchmetrics.functional.f1_score(logits, target, task="multiclass", num_classes=CLASSES, average="macro")
    assert values["tm_f1"] == pytest.approx(float(expected), abs=1e-7)
    variants = {value.name: value.variant for value in step_run["callback"].results["val"][1]}
    assert variants == {
        "acc": "batch_weighted_mean",
        "f1": "batch_weighted_mean",
        "tm_f1": "torchmetrics",
        "rows": "batch_weighted_mean",
    }


def test_training_metrics_cover_the_epochs_steps(epoch_run: dict[str, Any]) -> None:
    """The training report of the last epoch covers its 22 rows, under the weights of each step."""
    assert epoch_run["after_fit"]["train"]["rows"] == TRAIN_ROWS
    assert epoch_run["callback"].results["train"][0] == 2 * 6


def test_test_metrics_are_reported_at_the_end_of_testing(epoch_run: dict[str, Any]) -> None:
    """trainer.test reports the test stage with the final weights, exactly."""
    logits, target, _ = direct(epoch_run["model"], VAL)
    values = values_of(epoch_run["callback"], "test")
    assert values["acc"] == sklearn_metrics.accuracy_score(target.numpy(), logits.argmax(1).numpy())
    assert float(epoch_run["trainer"].callback_metrics["test/acc"]) == pytest.approx(values["acc"], abs=1e-7)


# ------------------------------------------------------------------ destinations
def test_values_reach_module_log_and_the_progress_bar(epoch_run: dict[str, Any]) -> None:
    """Every value is logged as '<stage>/<name>' and, with prog_bar=True, shown in the progress bar."""
    values = epoch_run["after_fit"]["val"]
    for name, value in values.items():
        assert epoch_run["after_fit"]["callback_metrics"][f"val/{name}"] == pytest.approx(value, abs=1e-6)
        assert float(epoch_run["after_fit"]["progress_bar"][f"val/{name}"]) == pytest.approx(value, abs=1e-6)
    assert "train/acc" in epoch_run["after_fit"]["callback_metrics"]


def test_values_reach_a_lightning_csv_logger(epoch_run: dict[str, Any]) -> None:
    """The CSV logger's file has one val/acc value per epoch, the last one the reported value."""
    with open(epoch_run["csv"], newline="") as stream:
        rows = [row for row in csv.DictReader(stream) if row.get("val/acc")]
    assert len(rows) == 2
    assert float(rows[-1]["val/acc"]) == pytest.approx(epoch_run["after_fit"]["val"]["acc"], abs=1e-6)


def test_values_reach_the_registry_the_json_log_and_the_sinks(epoch_run: dict[str, Any]) -> None:
    """Gauges by registry name, training.metric events with unit, variant and rows, and sink calls."""
    registry, sink = epoch_run["registry"], epoch_run["sink"]
    test_values = values_of(epoch_run["callback"], "test")
    assert registry.value(registry_name("test", "f1")) == test_values["f1"]
    steps = [step for step, _ in sink.calls]
    assert steps == [6, 6, 12, 12, 12]  # val, train per epoch, then test
    assert set(sink.calls[0][1]) == {registry_name("val", name) for name in ("acc", "f1", "tm_f1", "rows")}
    records = [r for r in read_log(epoch_run["log"].path) if r.event == "training.metric"]
    assert len(records) == 5 * 4
    rows_record = next(r for r in records if r.name == registry_name("val", "rows"))
    assert (rows_record.unit, rows_record.step, rows_record.batch_size) == ("rows", 6, VAL_ROWS)
    assert {r.variant for r in records} == {"exact_on_collected", "torchmetrics"}


def test_the_default_logger_is_the_librarys_run_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """logger='auto' writes training.metric events to <GENO_LEWM_LOG_DIR>/<run id>.jsonl."""
    monkeypatch.setenv("GENO_LEWM_LOG_DIR", str(tmp_path / "auto-logs"))
    monkeypatch.setenv("GENO_LEWM_RUN_ID", "auto-run")
    callback = MetricsCallback({"count": lambda target: float(len(target))}, stages=["val"])
    trainer_for(callback, tmp_path).validate(TinyClassifier(), loader(VAL), verbose=False)
    records = list(read_log(tmp_path / "auto-logs" / "auto-run.jsonl"))
    assert [(r.event, r.name) for r in records] == [("training.metric", registry_name("val", "count"))]
    assert records[0].value == values_of(callback, "val")["count"]


def test_gauges_are_declared_when_the_callback_is_built() -> None:
    """Each stage's gauge is in the catalogue as soon as the callback exists, with its unit."""
    MetricsCallback({"declared_early": sklearn_metrics.accuracy_score}, stages=["val"], units={"declared_early": "1"})
    spec = CATALOGUE[registry_name("val", "declared_early")]
    assert (spec.kind, spec.unit) == ("gauge", "1")
    assert registry_name("train", "declared_early") not in CATALOGUE


# ------------------------------------------------------------------ schedules
def test_training_metrics_every_n_steps_cover_the_steps_since_the_last_report(tmp_path: Path) -> None:
    """Every 2 optimiser steps: reports at steps 2, 4, ..., each over its own steps' rows."""
    logger_records: list[dict[str, Any]] = []

    class Recorder:
        geno_lewm_full_records = True  # stands in for the package's own logger, which also gets the rows

        def info(self, event: str, **fields: Any) -> None:
            logger_records.append(fields)

        def warning(self, event: str, **fields: Any) -> None:
            logger_records.append(fields)

    callback = MetricsCallback(
        {"acc": sklearn_metrics.accuracy_score},
        needs=[lambda out: out["target"], predicted],
        stages=["train"],
        train_every_n_steps=2,
        registry=MetricRegistry(),
        logger=Recorder(),
    )
    trainer = trainer_for(callback, tmp_path, logger=CSVLogger(tmp_path, name="csv"), log_every_n_steps=1)
    trainer.fit(TinyClassifier(), loader(TRAIN), loader(VAL))
    assert [(r["step"], r["batch_size"]) for r in logger_records] == [
        (2, 8),
        (4, 8),
        (6, 6),  # the short last batch of the epoch
        (8, 8),
        (10, 8),
        (12, 6),
    ]
    with open(Path(trainer.logger.log_dir) / "metrics.csv", newline="") as stream:  # type: ignore[union-attr]
        logged = {int(row["step"]): float(row["train/acc"]) for row in csv.DictReader(stream) if row.get("train/acc")}
    for record in logger_records:  # Lightning's on-step rows are 0-based
        assert logged[record["step"] - 1] == pytest.approx(record["value"], abs=1e-7)


def test_a_skipped_training_step_is_skipped_and_a_silent_validation_step_is_an_error(tmp_path: Path) -> None:
    """training_step returning None skips the batch; validation_step returning None cannot be measured."""

    class Skipping(TinyClassifier):
        def training_step(self, batch: Any, batch_idx: int) -> Any:
            return None if batch_idx == 0 else super().training_step(batch, batch_idx)

        def validation_step(self, batch: Any, batch_idx: int) -> Any:
            return None

    callback = MetricsCallback({"count": lambda target: float(len(target))}, stages=["train"], logger=None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Lightning warns that training_step returned None
        trainer_for(callback, tmp_path, epochs=1).fit(Skipping(), loader(TRAIN), loader(VAL))
    assert callback.results["train"][1][0].rows == TRAIN_ROWS - BATCH
    strict = MetricsCallback({"count": lambda target: float(len(target))}, stages=["val"], logger=None)
    with pytest.raises(InputError, match="returned no outputs"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer_for(strict, tmp_path, epochs=1).fit(Skipping(), loader(TRAIN), loader(VAL))


def test_every_n_epochs_schedules_training_and_validation(tmp_path: Path) -> None:
    """Training every 2 epochs and validation every 3: only the scheduled epochs report."""
    sink = MemorySink()
    callback = MetricsCallback(
        {"count": lambda target: float(len(target))},
        train_every_n_epochs=2,
        val_every_n_epochs=3,
        registry=MetricRegistry(),
        sinks=sink,
        logger=None,
    )
    trainer_for(callback, tmp_path, epochs=4).fit(TinyClassifier(), loader(TRAIN), loader(VAL))
    reports = [(step, sorted(values)) for step, values in sink.calls]
    assert reports == [
        (12, [registry_name("train", "count")]),
        (18, [registry_name("val", "count")]),
        (24, [registry_name("train", "count")]),
    ]


def test_validate_alone_reports_whatever_the_epoch_schedule(tmp_path: Path) -> None:
    """trainer.validate always reports the validation metrics."""
    callback = MetricsCallback({"count": lambda target: float(len(target))}, val_every_n_epochs=5, logger=None)
    trainer_for(callback, tmp_path).validate(TinyClassifier(), loader(VAL), verbose=False)
    assert values_of(callback, "val") == {"count": pytest.approx(weighted([4.0, 4.0, 4.0, 2.0], [4, 4, 4, 2]))}


def test_torchmetrics_are_cloned_per_stage() -> None:
    """The user's torchmetrics object is not touched; each stage has its own copy."""
    user_metric = torchmetrics.Accuracy(task="binary")
    callback = MetricsCallback({"acc": user_metric})
    copies = [callback.metrics(stage).definitions[0].metric for stage in ("train", "val", "test")]
    assert len({id(user_metric), *map(id, copies)}) == 4
    with pytest.raises(InputError, match="one of the stages watched"):
        callback.metrics("predict")  # type: ignore[arg-type]


# ------------------------------------------------------------------ errors
def test_a_missing_output_key_stops_training_naming_the_metric(tmp_path: Path) -> None:
    """A metric needing a key the steps do not return: InputError from fit, naming metric and keys."""
    callback = MetricsCallback({"acc": sklearn_metrics.accuracy_score}, needs=["target", "labels_pred"], logger=None)
    with pytest.raises(InputError, match=r"metric 'acc' needs output 'labels_pred'.*'loss', 'logits', 'target'"):
        trainer_for(callback, tmp_path).fit(TinyClassifier(), loader(TRAIN), loader(VAL))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"train_every_n_steps": 2, "train_every_n_epochs": 1}, "not both"),
        ({"train_every_n_steps": 0}, "'train_every_n_steps' must be a positive integer: got 0"),
        ({"val_every_n_epochs": -1}, "'val_every_n_epochs' must be a positive integer: got -1"),
        ({"stages": ["train", "predict"]}, "only 'train', 'val' and 'test'"),
        ({"stages": "val"}, "must be a sequence"),
        ({"stages": []}, "at least one stage"),
        ({"name_format": "{stage}"}, "must use {name}"),
        ({"name_format": "{epoch}/{name}"}, "must use {name}"),
        ({"units": {"other": "1"}}, "which is not a metric"),
        ({"prog_bar": "yes"}, "'prog_bar' must be True or False"),
        ({"record_on": "rank1"}, "'record_on' must be 'rank0' or 'all'"),
        ({"sinks": [object()]}, "has no log_metrics"),
        ({"mode": "batch"}, "'mode' must be 'step' or 'epoch'"),
        ({"logger": "stderr"}, "'logger' must be 'auto', None or a logger"),
    ],
)
def test_malformed_settings_are_refused(kwargs: dict[str, Any], message: str) -> None:
    """Each setting is checked when the callback is built."""
    with pytest.raises(InputError, match=message):
        MetricsCallback({"acc": sklearn_metrics.accuracy_score}, **kwargs)


# ------------------------------------------------------------------ two DDP ranks
WORLD = 2
SHARD_ROWS = (9, 5)  # uneven, and each ends in a short batch


def _shard(rank: int) -> TensorDataset:
    start = sum(SHARD_ROWS[:rank])
    x, y = VAL.tensors
    return TensorDataset(x[start : start + SHARD_ROWS[rank]], y[start : start + SHARD_ROWS[rank]])


def _ddp_worker(rank: int, init: str, out: str) -> None:
    """One rank: trainer.validate under DDP on its own uneven shard, per-step and per-epoch."""
    from datetime import timedelta

    import torch.distributed as dist

    os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(WORLD), "NODE_RANK": "0"})
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=WORLD, timeout=timedelta(seconds=60))
    warnings.filterwarnings("ignore")
    results: dict[str, Any] = {}
    for mode in ("epoch", "step"):
        sink = MemorySink()
        callback = MetricsCallback(
            {"acc": sklearn_metrics.accuracy_score, "f1": macro_f1, "rows": lambda target: float(len(target))},
            needs={"acc": ["target", predicted], "f1": ["target", predicted], "rows": None},
            units={"rows": "rows"},
            mode=mode,  # type: ignore[arg-type]
            stages=["val"],
            registry=MetricRegistry(),
            sinks=[sink],
            logger=None,
        )
        trainer = Trainer(
            accelerator="cpu",
            devices=WORLD,
            strategy="ddp",
            use_distributed_sampler=False,
            enable_progress_bar=False,
            enable_checkpointing=False,
            enable_model_summary=False,
            logger=False,
            default_root_dir=out,
            callbacks=[callback],
        )
        trainer.validate(TinyClassifier(), loader(_shard(rank)), verbose=False)
        results[mode] = {"values": values_of(callback, "val"), "sink_calls": len(sink.calls)}
    Path(out, f"rank{rank}.json").write_text(json.dumps(results))
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def ddp_ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """Run the two-rank DDP validation once (torch.multiprocessing spawn, gloo, file:// rendezvous)."""
    import torch.distributed as dist
    import torch.multiprocessing as mp

    if not dist.is_available():
        pytest.skip("torch.distributed is not available")
    out = tmp_path_factory.mktemp("ddp")
    mp.spawn(_ddp_worker, args=(f"file://{out / 'rendezvous'}", str(out)), nprocs=WORLD, join=True)
    return [json.loads((out / f"rank{rank}.json").read_text()) for rank in range(WORLD)]


def test_two_ddp_ranks_report_the_whole_validation_set(ddp_ranks: list[dict[str, Any]]) -> None:
    """Uneven shards under DDP: per-epoch equals one process on all rows, per-step the weighted mean of all batches."""
    logits, target, _ = direct(TinyClassifier(), VAL)
    labels = logits.argmax(1)
    batches = []
    for rank in range(WORLD):
        shard = _shard(rank)
        _, _, shard_batches = direct(TinyClassifier(), shard)
        batches.extend(shard_batches)
    sizes = [len(t) for _, t in batches]
    for result in ddp_ranks:
        epoch, step = result["epoch"]["values"], result["step"]["values"]
        assert epoch["acc"] == sklearn_metrics.accuracy_score(target.numpy(), labels.numpy())
        assert epoch["f1"] == macro_f1(target.numpy(), labels.numpy())
        assert epoch["rows"] == VAL_ROWS
        f1s = [macro_f1(t.numpy(), z.argmax(1).numpy()) for z, t in batches]
        assert step["f1"] == pytest.approx(weighted(f1s, sizes), rel=1e-14)
        assert step["rows"] == pytest.approx(weighted([float(n) for n in sizes], sizes), rel=1e-14)
    assert ddp_ranks[0]["epoch"]["values"] == ddp_ranks[1]["epoch"]["values"]


def test_only_rank_zero_records_under_ddp(ddp_ranks: list[dict[str, Any]]) -> None:
    """Both ranks get the values; only rank 0 calls the sinks."""
    assert [r["epoch"]["sink_calls"] for r in ddp_ranks] == [1, 0]
    assert ddp_ranks[0]["step"]["values"] == ddp_ranks[1]["step"]["values"]


# ------------------------------------------------------------------ needs keyed by metric name, no guessed inputs
def class_zero_share(values: Any) -> float:
    """The share of rows of class 0: a metric of one argument, whatever its parameter's name."""
    return float((values == 0).double().mean())


def test_needs_keyed_by_metric_name_feed_a_real_fit(tmp_path: Path) -> None:
    """needs={'share': 'target', ...}: one source, a mapping and a list, each for its own metric, in a fit."""
    callback = MetricsCallback(
        {
            "share": class_zero_share,
            "acc": sklearn_metrics.accuracy_score,
            "tm_acc": torchmetrics.Accuracy(task="multiclass", num_classes=CLASSES),
        },
        needs={"share": "target", "acc": {"y_true": "target", "y_pred": predicted}, "tm_acc": ["logits", "target"]},
        mode="epoch",
        stages=["val"],
        registry=MetricRegistry(),
        logger=None,
    )
    model = TinyClassifier()
    trainer_for(callback, tmp_path, epochs=1).fit(model, loader(TRAIN), loader(VAL))
    logits, target, _ = direct(model, VAL)
    values = values_of(callback, "val")
    assert values["share"] == class_zero_share(target)
    assert values["acc"] == sklearn_metrics.accuracy_score(target.numpy(), logits.argmax(1).numpy())
    assert values["tm_acc"] == pytest.approx(values["acc"], abs=1e-7)


@pytest.mark.parametrize("stage", ["train", "val"])
def test_inferred_needs_never_feed_logits_to_scikit_learn(tmp_path: Path, stage: Stage) -> None:
    """accuracy_score inferred on steps returning 'logits': fit stops at the first step with an InputError."""
    callback = MetricsCallback(
        {"acc": sklearn_metrics.accuracy_score}, stages=[stage], registry=MetricRegistry(), logger=None
    )
    trainer = trainer_for(callback, tmp_path, epochs=1, num_sanity_val_steps=0)
    with pytest.raises(InputError) as error:
        trainer.fit(TinyClassifier(), loader(TRAIN), loader(VAL))
    assert error.value.details == {"field": "needs", "metric": "acc", "parameter": "y_pred", "keys": ["logits"]}
    assert "'logits' could feed it only as a guess" in str(error.value)
    assert callback.metrics(stage).updates == 0
    assert trainer.global_step == (1 if stage == "train" else len(loader(TRAIN)))


# ------------------------------------------------------------------ a mode per stage
def test_a_mode_per_stage_averages_training_steps_and_computes_validation_exactly(tmp_path: Path) -> None:
    """mode={'train': 'step', 'val': 'epoch'}: train rows weighted by batch, val on all rows, test by default."""
    rows = {"rows": lambda target: float(len(target)), "f1": macro_f1}
    needs = {"rows": None, "f1": {"y_true": "target", "y_pred": predicted}}
    callback = MetricsCallback(
        rows,
        needs=needs,
        mode={"train": "step", "val": "epoch"},
        units={"rows": "rows"},
        registry=MetricRegistry(),
        logger=None,
    )
    assert callback.modes == {"train": "step", "val": "epoch", "test": "step"}
    assert "mode={'train': 'step', 'val': 'epoch', 'test': 'step'}" in repr(callback)
    model = TinyClassifier()
    trainer = trainer_for(callback, tmp_path, epochs=1)
    trainer.fit(model, loader(TRAIN), loader(VAL))
    trainer.test(model, loader(VAL), verbose=False)
    train_sizes = [len(y) for _, y in loader(TRAIN)]
    val_sizes = [len(y) for _, y in loader(VAL)]
    assert values_of(callback, "train")["rows"] == pytest.approx(weighted([float(n) for n in train_sizes], train_sizes))
    assert values_of(callback, "val")["rows"] == VAL_ROWS
    assert values_of(callback, "test")["rows"] == pytest.approx(weighted([float(n) for n in val_sizes], val_sizes))
    logits, target, _ = direct(model, VAL)
    assert values_of(callback, "val")["f1"] == macro_f1(target.numpy(), logits.argmax(1).numpy())
    variants = {stage: {v.variant for v in callback.results[stage][1]} for stage in ("train", "val", "test")}
    assert variants == {
        "train": {"batch_weighted_mean"},
        "val": {"exact_on_collected"},
        "test": {"batch_weighted_mean"},
    }


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mode": {"val": "batch"}}, r"'mode\.val' must be 'step' or 'epoch': got 'batch'"),
        ({"mode": {"predict": "step"}}, "'mode' names 'predict', which is not a stage"),
        ({"mode": {"train": "epoch"}, "stages": ["val"]}, "'mode' names 'train', which is not watched"),
        ({"mode": {}}, "'mode' per stage must name at least one stage"),
    ],
)
def test_malformed_modes_per_stage_are_refused(kwargs: dict[str, Any], message: str) -> None:
    """A per-stage mode names watched stages only, each with 'step' or 'epoch'."""
    with pytest.raises(InputError, match=message):
        MetricsCallback({"acc": sklearn_metrics.accuracy_score}, **kwargs)


def test_a_mode_per_stage_from_a_configuration() -> None:
    """metrics.mode may map stages to modes: the built callback has them; a stage not watched is refused."""
    from geno_lewm.config import load_config

    section = {"metrics": {"acc": "sklearn.metrics:accuracy_score"}, "stages": ["train", "val"]}
    config = load_config({"log": {"enabled": False}, "metrics": {**section, "mode": {"val": "epoch"}}})
    built = config.build(lightning=True, registry=MetricRegistry())
    (callback,) = [c for c in built.callbacks if isinstance(c, MetricsCallback)]
    assert callback.modes == {"train": "step", "val": "epoch"}
    with pytest.raises(InputError, match="metrics") as error:
        load_config({"metrics": {**section, "mode": {"test": "epoch"}}})
    assert "'mode' per stage must name stages watched" in str(error.value)


# ------------------------------------------------------------------ loggers this package did not create
def test_a_family_logger_gets_exactly_the_family_metric_records(tmp_path: Path) -> None:
    """A GenoLeWM family logger (debug/info/warn/error) gets one minimal training.metric per value, nothing else."""
    from conftest import FamilyLogger

    logger = FamilyLogger()
    callback = MetricsCallback(
        {"family_rows": lambda target: float(len(target))},
        stages=["val"],
        units={"family_rows": "rows"},
        registry=MetricRegistry(),
        logger=logger,
    )
    trainer_for(callback, tmp_path).validate(TinyClassifier(), loader(VAL), verbose=False)
    name = registry_name("val", "family_rows")
    value = values_of(callback, "val")["family_rows"]
    fields = {"name": name, "value": value, "unit": "rows", "kind": "gauge", "step": 0}
    assert logger.calls == [("info", "training.metric", fields)]


def test_a_standard_library_logger_is_accepted_and_an_object_without_info_is_not(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A logging.Logger gets 'training.metric name=...' with the fields in extra; no info(): refused."""
    import logging

    callback = MetricsCallback(
        {"stdlib_rows": lambda target: float(len(target))},
        stages=["val"],
        registry=MetricRegistry(),
        logger=logging.getLogger("geno_lewm.test.metrics"),
    )
    with caplog.at_level(logging.INFO, logger="geno_lewm.test.metrics"):
        trainer_for(callback, tmp_path).validate(TinyClassifier(), loader(VAL), verbose=False)
    (record,) = [r for r in caplog.records if r.name == "geno_lewm.test.metrics"]
    assert record.getMessage().startswith(f"training.metric name={registry_name('val', 'stdlib_rows')} value=")
    assert record.geno_lewm["unit"] == "1" and record.geno_lewm["kind"] == "gauge"  # type: ignore[attr-defined]

    class WarnOnly:
        def warn(self, event: str, **fields: Any) -> None:
            """Accept a warning."""

    with pytest.raises(InputError, match=r"without info\(\)"):
        MetricsCallback({"stdlib_rows": lambda target: float(len(target))}, stages=["val"], logger=WarnOnly())
