"""The Lightning callbacks, run in a real ``lightning.Trainer`` on the CPU with tiny models:
what reaches ``pl_module.log`` (and a Lightning CSV logger), the registry and the JSON log.
"""

from __future__ import annotations

import csv
import io
import logging
import sys
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

torch = pytest.importorskip("torch")
lightning = pytest.importorskip("lightning")

from conftest import FamilyLogger  # noqa: E402
from lightning.pytorch import LightningModule, Trainer  # noqa: E402
from lightning.pytorch.loggers import CSVLogger  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

from geno_lewm.errors import CollapseDetectedError, InputError  # noqa: E402
from geno_lewm.integrations.lightning import (  # noqa: E402
    CollapseMonitorCallback,
    GradientGeometryCallback,
    PredictionDynamicsCallback,
)
from geno_lewm.integrations.sinks import MemorySink  # noqa: E402
from geno_lewm.logs import read_log  # noqa: E402
from geno_lewm.metrics import MetricRegistry  # noqa: E402
from geno_lewm.observability import get_logger  # noqa: E402
from geno_lewm.training.collapse import METRIC_NAMES, CollapseMonitor, compute_collapse_metrics  # noqa: E402
from geno_lewm.training.dynamics import PredictionMonitor  # noqa: E402

if TYPE_CHECKING:
    from pathlib import Path

TRAIN_BATCHES = 2
VAL_BATCH = 6

warnings.filterwarnings("ignore", message=".*does not have many workers.*")


class TinyJEPA(LightningModule):
    """An encoder and a predictor; validation returns predictions, targets and a regulariser."""

    def __init__(self, *, collapsed: bool = False) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.encoder = nn.Linear(8, 4)
        self.predictor = nn.Linear(4, 4)
        self.collapsed = collapsed

    def embed(self, batch: Any) -> tuple[Any, Any]:
        """Predictions of the second view from the first, and the detached targets."""
        x, y = batch
        prediction = self.predictor(self.encoder(x))
        if self.collapsed:
            prediction = prediction * 0.0 + prediction.mean(dim=0, keepdim=True)
        return prediction, self.encoder(y).detach()

    def training_step(self, batch: Any, batch_idx: int) -> Any:
        """Mean squared prediction error."""
        prediction, target = self.embed(batch)
        return nn.functional.mse_loss(prediction, target)

    def validation_step(self, batch: Any, batch_idx: int) -> dict[str, Any]:
        """Outputs under names of the user's choosing."""
        prediction, target = self.embed(batch)
        return {"pred": prediction, "target": target, "loss_reg": torch.tensor(0.25 + batch_idx)}

    def configure_optimizers(self) -> Any:
        """Plain SGD."""
        return torch.optim.SGD(self.parameters(), lr=0.01)


class TinyClassifier(LightningModule):
    """A linear classifier whose training_step returns its logits with the loss."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 3))

    def training_step(self, batch: Any, batch_idx: int) -> dict[str, Any]:
        """Cross-entropy on labels derived from the inputs."""
        x, _ = batch
        logits = self.body(x)
        labels = (x[:, 0] > 0).long()
        return {"loss": nn.functional.cross_entropy(logits, labels), "logits": logits.detach()}

    def configure_optimizers(self) -> Any:
        """Plain SGD."""
        return torch.optim.SGD(self.parameters(), lr=0.05)


def loader(batches: int, seed: int) -> DataLoader[Any]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batches * VAL_BATCH, 8, generator=generator)
    y = x + 0.1 * torch.randn(batches * VAL_BATCH, 8, generator=generator)
    return DataLoader(TensorDataset(x, y), batch_size=VAL_BATCH)


def fit(module: LightningModule, callback: Any, tmp_path: Path, *, epochs: int = 2, **kwargs: Any) -> Trainer:
    trainer = Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=epochs,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        log_every_n_steps=1,
        callbacks=[callback],
        **kwargs,
    )
    trainer.fit(module, loader(TRAIN_BATCHES, 1), loader(2, 2))
    return trainer


# ----------------------------------------------------------------- collapse
def test_collapse_callback_logs_through_lightning_registry_and_json_log(tmp_path: Path) -> None:
    """Each validation run is checked; its numbers reach pl_module.log, a CSVLogger, the registry and the JSON log."""
    registry = MetricRegistry()
    log = get_logger("training", log_dir=tmp_path / "logs", run_id="lightning")
    sink = MemorySink()
    callback = CollapseMonitorCallback(
        CollapseMonitor(registry=registry, sinks=[sink]),
        keys={"prediction": "pred", "target": lambda out: out["target"].detach(), "kl_reg": "loss_reg"},
        logger=log,
    )
    trainer = fit(TinyJEPA(), callback, tmp_path, logger=CSVLogger(tmp_path, name="csv"))

    check = callback.last_check
    assert check is not None and check.step == trainer.global_step == 2 * TRAIN_BATCHES
    for name in METRIC_NAMES:
        assert trainer.callback_metrics[f"collapse/{name}"].item() == pytest.approx(getattr(check.metrics, name))
    assert trainer.callback_metrics["collapse/alerts"].item() == float(len(check.alerts))
    assert check.metrics.kl_reg == 0.25  # the first validation batch's value
    assert [step for step, _ in sink.calls] == [TRAIN_BATCHES, 2 * TRAIN_BATCHES]  # no sanity-check run
    assert registry.value("geno_lewm.training.collapse.checks") == 2.0
    assert registry.value("geno_lewm.training.collapse.pred_cos_mean") == check.metrics.pred_cos_mean
    metric_steps = {r.step for r in read_log(log.path) if r.event == "training.metric"}
    assert metric_steps == {TRAIN_BATCHES, 2 * TRAIN_BATCHES}
    with open(trainer.logger.log_dir + "/metrics.csv", newline="") as stream:  # type: ignore[union-attr]
        rows = list(csv.DictReader(stream))
    logged = [float(row["collapse/pred_var_per_dim"]) for row in rows if row.get("collapse/pred_var_per_dim")]
    assert logged[-1] == pytest.approx(check.metrics.pred_var_per_dim)


def test_collapse_callback_checks_the_batch_it_was_given(tmp_path: Path) -> None:
    """The check's metrics equal the metrics of the first validation batch computed directly."""
    module = TinyJEPA()
    callback = CollapseMonitorCallback(
        CollapseMonitor(registry=MetricRegistry()), keys={"prediction": "pred", "kl_reg": "loss_reg"}, logger=None
    )
    fit(module, callback, tmp_path, epochs=1, logger=False)
    first = next(iter(loader(2, 2)))
    with torch.no_grad():
        prediction, target = module.embed(first)
    expected = compute_collapse_metrics(prediction, target, kl_reg=0.25)
    assert callback.last_check is not None and callback.last_check.metrics == expected


def test_collapse_callback_every_n_steps_and_num_batches(tmp_path: Path) -> None:
    """every_n_steps=4 checks the runs at steps 4 and 8 only; num_batches=2 checks both batches' rows, mean kl."""
    sink = MemorySink()
    callback = CollapseMonitorCallback(
        CollapseMonitor(registry=MetricRegistry(), sinks=sink),
        keys={"prediction": "pred", "kl_reg": "loss_reg"},
        every_n_steps=4,
        num_batches=2,
        logger=None,
    )
    fit(TinyJEPA(), callback, tmp_path, epochs=4, logger=False)
    assert [step for step, _ in sink.calls] == [4, 8]
    check = callback.last_check
    assert check is not None and check.batch is not None and check.batch.batch_size == 2 * VAL_BATCH
    assert check.metrics.kl_reg == pytest.approx(0.75)
    assert callback.state_dict()["last_step"] == 8


def test_resumed_fit_keeps_the_monitors_baseline(tmp_path: Path) -> None:
    """A fit resumed from a real checkpoint compares with the original baseline, so a collapse after resume alerts."""
    keys = {"prediction": "pred", "kl_reg": "loss_reg"}
    before = CollapseMonitorCallback(CollapseMonitor(registry=MetricRegistry()), keys=keys, logger=None)
    trainer = fit(TinyJEPA(), before, tmp_path, epochs=1, logger=False)
    checkpoint = tmp_path / "resume.ckpt"
    trainer.save_checkpoint(checkpoint)
    baseline = before.monitor.initial_pairwise_pred_dist_mean
    assert baseline is not None and baseline > 0

    after = CollapseMonitorCallback(CollapseMonitor(registry=MetricRegistry()), keys=keys, logger=None)
    resumed = Trainer(
        accelerator="cpu",
        max_epochs=2,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        logger=False,
        callbacks=[after],
    )
    resumed.fit(TinyJEPA(collapsed=True), loader(TRAIN_BATCHES, 1), loader(2, 2), ckpt_path=checkpoint)
    assert after.monitor.initial_pairwise_pred_dist_mean == baseline
    check = after.last_check
    assert check is not None and check.step == 2 * TRAIN_BATCHES
    assert "pairwise_pred_dist_mean" in [alert.criterion for alert in check.alerts]


def test_missing_output_key_is_named(tmp_path: Path) -> None:
    """A key that validation_step does not return raises InputError naming it, the role and the keys present."""
    callback = CollapseMonitorCallback(
        CollapseMonitor(registry=MetricRegistry()), keys={"prediction": "prediction_z", "kl_reg": "loss_reg"}
    )
    with pytest.raises(InputError) as caught:
        fit(TinyJEPA(), callback, tmp_path, epochs=1, logger=False)
    message = str(caught.value)
    assert "no key 'prediction_z'" in message and "'prediction'" in message
    assert "'pred', 'target', 'loss_reg'" in message
    assert caught.value.details["key"] == "prediction_z"


def test_bad_keys_are_refused_at_construction() -> None:
    """Unknown roles and keys that are neither names nor functions are refused before training."""
    with pytest.raises(InputError, match="'keys' has an unknown entry 'pred'"):
        CollapseMonitorCallback(keys={"pred": "p"})
    with pytest.raises(InputError, match="'keys' entry 'target' must be an output key or a function"):
        CollapseMonitorCallback(keys={"target": 3})  # type: ignore[dict-item]
    with pytest.raises(InputError, match="'num_batches' must be a positive integer: got 0"):
        CollapseMonitorCallback(num_batches=0)


def test_raise_policy_stops_fit_after_logging(tmp_path: Path) -> None:
    """A collapsed predictor under on_alert='raise' stops fit with CollapseDetectedError once the log has the alert."""
    log = get_logger("training", log_dir=tmp_path / "logs", run_id="stop")
    callback = CollapseMonitorCallback(
        CollapseMonitor(registry=MetricRegistry(), on_alert="raise"),
        keys={"prediction": "pred", "kl_reg": "loss_reg"},
        logger=log,
    )
    with pytest.raises(CollapseDetectedError) as caught:
        fit(TinyJEPA(collapsed=True), callback, tmp_path, epochs=3, logger=False)
    assert caught.value.step == TRAIN_BATCHES
    assert [a.criterion for a in caught.value.alerts] == ["pred_var_per_dim"]
    alerts = [r for r in read_log(log.path) if r.event == "training.collapse.alert"]
    assert [(r.criterion, r.step) for r in alerts] == [("pred_var_per_dim", TRAIN_BATCHES)]


# ----------------------------------------------------------------- dynamics
def test_prediction_dynamics_callback_logs_every_n_steps(tmp_path: Path) -> None:
    """Logits from training_step are observed at steps 2 and 4 and logged as dynamics/... and in the registry."""
    registry = MetricRegistry()
    log = get_logger("training", log_dir=tmp_path / "logs", run_id="dynamics")
    callback = PredictionDynamicsCallback(PredictionMonitor(log_every_steps=2, registry=registry), logger=log)
    trainer = fit(TinyClassifier(), callback, tmp_path, epochs=2, logger=False, limit_val_batches=0)
    check = callback.monitor.last_check
    assert check is not None and check.step == 4
    assert trainer.callback_metrics["dynamics/pred_entropy"].item() == pytest.approx(check.metrics.pred_entropy)
    assert trainer.callback_metrics["dynamics/pred_confidence"].item() == pytest.approx(check.metrics.pred_confidence)
    assert registry.value("geno_lewm.training.dynamics.checks") == 2.0
    steps = sorted({r.step for r in read_log(log.path) if r.event == "training.metric"})
    assert steps == [2, 4]


def test_prediction_dynamics_callback_warns_when_no_logits(tmp_path: Path) -> None:
    """A training_step returning only a loss is skipped with one warning; an explicit missing key is an error."""
    callback = PredictionDynamicsCallback(log_every_n_steps=1, logger=None)
    with pytest.warns(UserWarning, match="holds no logits"):
        fit(TinyJEPA(), callback, tmp_path, epochs=1, logger=False, limit_val_batches=0)
    assert callback.skipped == TRAIN_BATCHES and callback.monitor.last_check is None
    keyed = PredictionDynamicsCallback(log_every_n_steps=1, key="scores", logger=None)
    with pytest.raises(InputError, match="no key 'scores'"):
        fit(TinyClassifier(), keyed, tmp_path, epochs=1, logger=False, limit_val_batches=0)


# ---------------------------------------------------------------- gradients
def test_gradient_geometry_callback_summarises_each_epoch(tmp_path: Path) -> None:
    """Each epoch's per-layer line is logged as gradients/<layer>/<quantity>; hooks are gone after fit."""
    registry = MetricRegistry()
    callback = GradientGeometryCallback(
        normalize_by_size=True, compute_correlation=True, registry=registry, logger=None
    )
    trainer = fit(TinyClassifier(), callback, tmp_path, epochs=2, logger=False, limit_val_batches=0)
    geometry = callback.geometry
    assert geometry is not None and not geometry.attached
    history = geometry.history
    assert [summary.epoch for summary in history] == [0, 1]
    last = history[-1]
    assert [stats.layer for stats in last.layers] == ["body.2", "body.0"]
    for stats in last.layers:
        assert trainer.callback_metrics[f"gradients/{stats.layer}/rms"].item() == pytest.approx(stats.value.mean)
        assert stats.correlation is not None
        assert trainer.callback_metrics[f"gradients/{stats.layer}/correlation"].item() == pytest.approx(
            stats.correlation.mean
        )
        assert stats.value.count == TRAIN_BATCHES


def test_gradient_geometry_callback_on_a_submodule(tmp_path: Path) -> None:
    """module= watches one submodule only; an unknown name is an InputError at fit start."""
    callback = GradientGeometryCallback(module="body", registry=MetricRegistry(), logger=None)
    fit(TinyClassifier(), callback, tmp_path, epochs=1, logger=False, limit_val_batches=0)
    assert callback.geometry is not None and callback.geometry.layers == ("2", "0")
    with pytest.raises(InputError, match="names no submodule"):
        fit(TinyClassifier(), GradientGeometryCallback(module="head", logger=None), tmp_path, epochs=1, logger=False)


def test_calibrated_callback_takes_its_reference_from_the_sanity_check(tmp_path: Path) -> None:
    """With calibrated criteria the sanity-check run before the first update is checked at step 0 and becomes the
    reference; the rfc default still skips it, and reference_check=False turns it off.
    """
    calibrated = CollapseMonitorCallback(
        CollapseMonitor(registry=MetricRegistry(), criteria="calibrated", sinks=MemorySink()),
        keys={"prediction": "pred", "kl_reg": None},
        logger=None,
    )
    fit(TinyJEPA(), calibrated, tmp_path, epochs=1, logger=False, num_sanity_val_steps=1)
    assert calibrated.monitor.reference_step == 0
    assert [step for step, _ in calibrated.monitor.sinks[0].calls] == [0, TRAIN_BATCHES]

    for monitor, choice in (
        (CollapseMonitor(registry=MetricRegistry(), sinks=MemorySink()), None),
        (CollapseMonitor(registry=MetricRegistry(), criteria="calibrated", sinks=MemorySink()), False),
    ):
        callback = CollapseMonitorCallback(
            monitor, keys={"prediction": "pred", "kl_reg": None}, logger=None, reference_check=choice
        )
        fit(TinyJEPA(), callback, tmp_path, epochs=1, logger=False, num_sanity_val_steps=1)
        assert [step for step, _ in monitor.sinks[0].calls] == [TRAIN_BATCHES]


# ------------------------------------------------------- where the run log goes
class _ReturningPrediction(TinyJEPA):
    """TinyJEPA whose training_step also returns its predictions (as 4-class logits for the dynamics lens)."""

    def training_step(self, batch: Any, batch_idx: int) -> Any:
        """The loss and the detached predictions."""
        prediction, target = self.embed(batch)
        return {"loss": nn.functional.mse_loss(prediction, target), "pred": prediction.detach()}


class _Messages(logging.Handler):
    """Keeps the messages Lightning's rank-zero logger is given."""

    def __init__(self) -> None:
        super().__init__(level=logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def rank_zero_messages() -> Iterator[list[str]]:
    """The info lines printed through lightning's rank_zero_info during the test."""
    handler = _Messages()
    target = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    level = target.level
    target.addHandler(handler)
    target.setLevel(logging.INFO)
    try:
        yield handler.messages
    finally:
        target.removeHandler(handler)
        target.setLevel(level)


def test_auto_log_goes_to_the_trainers_log_dir_and_is_announced_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rank_zero_messages: list[str]
) -> None:
    """logger='auto' writes <trainer.log_dir>/geno_lewm/<run>.jsonl (not ./logs), named in one rank-zero line."""
    monkeypatch.delenv("GENO_LEWM_LOG_DIR", raising=False)
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    collapse = CollapseMonitorCallback(
        CollapseMonitor(registry=MetricRegistry()), keys={"prediction": "pred", "kl_reg": "loss_reg"}
    )
    dynamics = PredictionDynamicsCallback(PredictionMonitor(log_every_steps=1, registry=MetricRegistry()), key="pred")
    trainer = Trainer(
        accelerator="cpu",
        max_epochs=1,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        default_root_dir=tmp_path / "root",
        logger=CSVLogger(tmp_path / "root", name="csv"),
        log_every_n_steps=1,
        callbacks=[collapse, dynamics],
    )
    trainer.fit(_ReturningPrediction(), loader(TRAIN_BATCHES, 1), loader(2, 2))
    expected = tmp_path / "root" / "csv" / "version_0" / "geno_lewm"
    [log] = list(expected.glob("*.jsonl"))
    events = {r.event for r in read_log(log)}
    assert "training.metric" in events
    assert not (work / "logs").exists()
    announced = [m for m in rank_zero_messages if "geno_lewm" in m]
    assert announced == [f"geno_lewm: writing the JSON run log to {log}"]


class _Terminal(io.StringIO):
    """A standard error that says it is a terminal."""

    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("log_format", [None, "pretty"])
def test_auto_log_mirrors_to_a_terminal_only_when_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, log_format: str | None
) -> None:
    """The callbacks' own run log stays off a terminal's standard error (beside the progress bar) unless
    GENO_LEWM_LOG_FORMAT=pretty asks for the mirror; the JSON file is written either way.
    """
    if log_format is None:
        monkeypatch.delenv("GENO_LEWM_LOG_FORMAT", raising=False)
    else:
        monkeypatch.setenv("GENO_LEWM_LOG_FORMAT", log_format)
    monkeypatch.setenv("GENO_LEWM_RUN_ID", f"mirror-{log_format}")
    monkeypatch.delenv("GENO_LEWM_LOG_DIR", raising=False)
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    keys = {"prediction": "pred", "kl_reg": "loss_reg"}
    callback = CollapseMonitorCallback(CollapseMonitor(registry=MetricRegistry()), keys=keys)
    fit(TinyJEPA(), callback, tmp_path / "root", epochs=1, logger=False)
    [log] = list((tmp_path / "root" / "geno_lewm").glob("*.jsonl"))
    written = sum(record.event == "training.metric" for record in read_log(log))
    assert written > 0
    mirrored = terminal.getvalue().count("training.metric")
    assert mirrored == (written if log_format == "pretty" else 0)


def test_auto_log_without_a_lightning_logger_uses_default_root_dir_unless_told_otherwise(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With logger=False the log is <default_root_dir>/geno_lewm/<run>.jsonl; GENO_LEWM_LOG_DIR and an explicit
    logger still decide where it goes.
    """
    monkeypatch.delenv("GENO_LEWM_LOG_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    keys = {"prediction": "pred", "kl_reg": "loss_reg"}
    callback = CollapseMonitorCallback(CollapseMonitor(registry=MetricRegistry()), keys=keys)
    fit(TinyJEPA(), callback, tmp_path / "root", epochs=1, logger=False)
    assert len(list((tmp_path / "root" / "geno_lewm").glob("*.jsonl"))) == 1
    assert not (tmp_path / "logs").exists()

    monkeypatch.setenv("GENO_LEWM_LOG_DIR", str(tmp_path / "env"))
    callback = CollapseMonitorCallback(CollapseMonitor(registry=MetricRegistry()), keys=keys)
    fit(TinyJEPA(), callback, tmp_path / "two", epochs=1, logger=False)
    assert len(list((tmp_path / "env").glob("*.jsonl"))) == 1
    assert not (tmp_path / "two" / "geno_lewm").exists()

    log = get_logger("training", log_dir=tmp_path / "mine", run_id="explicit")
    explicit = CollapseMonitorCallback(CollapseMonitor(registry=MetricRegistry()), keys=keys, logger=log)
    fit(TinyJEPA(), explicit, tmp_path / "three", epochs=1, logger=False)
    assert log.path.exists() and not (tmp_path / "three" / "geno_lewm").exists()


# ------------------------------------------------------ N-D logits in the dynamics callback
class _DenseLogits(LightningModule):
    """Returns segmentation logits [B, 3, 2, 2] or sequence logits [B, 4, 3] from its training_step."""

    def __init__(self, layout: str) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.layout = layout
        self.head = nn.Conv2d(2, 3, kernel_size=1) if layout == "segmentation" else nn.Linear(2, 3)
        self.last_logits: Any = None

    def training_step(self, batch: Any, batch_idx: int) -> dict[str, Any]:
        """The logits of the batch's rows read as 2x2 maps of 2 channels, or as 4 positions of 2 features."""
        x, _ = batch
        shape = (-1, 2, 2, 2) if self.layout == "segmentation" else (-1, 4, 2)
        logits = self.head(x.reshape(shape))
        self.last_logits = logits.detach().clone()
        return {"loss": logits.square().mean(), "scores": logits.detach()}

    def configure_optimizers(self) -> Any:
        """Plain SGD."""
        return torch.optim.SGD(self.parameters(), lr=0.05)


@pytest.mark.parametrize(("layout", "class_dim", "softmax_dim"), [("segmentation", None, 1), ("sequence", -1, -1)])
def test_dynamics_callback_reads_nd_logits_along_class_dim(
    layout: str, class_dim: int | None, softmax_dim: int, tmp_path: Path
) -> None:
    """[B, C, H, W] (default) and [B, T, C] (class_dim=-1) logits give the metrics of a softmax over the classes."""
    module = _DenseLogits(layout)
    callback = PredictionDynamicsCallback(
        PredictionMonitor(log_every_steps=1, registry=MetricRegistry()), key="scores", class_dim=class_dim, logger=None
    )
    fit(module, callback, tmp_path, epochs=1, logger=False, limit_val_batches=0)
    check = callback.monitor.last_check
    assert check is not None and check.step == TRAIN_BATCHES
    probabilities = torch.softmax(module.last_logits.double(), dim=softmax_dim)
    entropy = -(probabilities * probabilities.log()).sum(dim=softmax_dim)
    positions = module.last_logits.numel() // 3
    assert check.batch is not None and check.batch.batch_size == positions and check.batch.dim == 3
    assert check.metrics.pred_entropy == pytest.approx(entropy.mean().item(), rel=1e-5)
    confidence = probabilities.amax(dim=softmax_dim).mean().item()
    assert check.metrics.pred_confidence == pytest.approx(confidence, rel=1e-5)
    counts = torch.bincount(probabilities.argmax(dim=softmax_dim).reshape(-1), minlength=3)
    assert list(check.metrics.class_counts) == counts.tolist()


def test_dynamics_callback_refuses_3d_logits_without_class_dim(tmp_path: Path) -> None:
    """[B, T, C] logits with the default class_dim stop the fit with an error naming the ambiguity and the fix."""
    callback = PredictionDynamicsCallback(
        PredictionMonitor(log_every_steps=1, registry=MetricRegistry()), key="scores", logger=None
    )
    with pytest.raises(InputError, match=r"3-D logits of shape \[6, 4, 3\] are ambiguous.*class_dim=-1"):
        fit(_DenseLogits("sequence"), callback, tmp_path, epochs=1, logger=False, limit_val_batches=0)
    with pytest.raises(InputError, match="'class_dim' must be an integer or None"):
        PredictionDynamicsCallback(class_dim="last")  # type: ignore[arg-type]


# ------------------------------------------------------ gradient options at construction
def test_gradient_callback_checks_options_when_built_and_takes_reference_spellings(tmp_path: Path) -> None:
    """Bad options fail in the constructor; 'min-max', 'Q1-Q3' and 'IQR' are stored canonical and used in the fit."""
    with pytest.raises(InputError, match="no option 'normalise_by_size'; did you mean 'normalize_by_size'"):
        GradientGeometryCallback(normalise_by_size=True)
    with pytest.raises(InputError, match="'line_aggregation' 'median' needs keep_values=True"):
        GradientGeometryCallback(line_aggregation="median")
    with pytest.raises(InputError, match="'range_aggregation' must be a non-empty selection"):
        GradientGeometryCallback(range_aggregation=("std", "iqr"))
    callback = GradientGeometryCallback(
        range_aggregation=["min-max", "Q1-Q3"],
        line_aggregation="IQR",
        keep_values=True,
        registry=MetricRegistry(),
        logger=None,
    )
    assert callback.options["range_aggregation"] == ("minmax", "q1q3")
    assert callback.options["line_aggregation"] == "iqr"
    trainer = fit(TinyClassifier(), callback, tmp_path, epochs=1, logger=False, limit_val_batches=0)
    assert callback.geometry is not None
    last = callback.geometry.history[-1]
    assert last.range_aggregation == ("minmax", "q1q3")
    for stats in last.layers:
        assert stats.value.iqr is not None
        assert trainer.callback_metrics[f"gradients/{stats.layer}/l2"].item() == pytest.approx(stats.value.iqr)


# -------------------------------------------------------------- DDP: exact and silent
DDP_WORKER = "ddp-collapse"


# ----------------------------------------------------------------- loggers this package did not create
class _HighRegulariser(TinyJEPA):
    """Validation reports a regulariser of 20, which trips kl_reg > 10."""

    def validation_step(self, batch: Any, batch_idx: int) -> dict[str, Any]:
        """Outputs with loss_reg = 20."""
        return {**super().validation_step(batch, batch_idx), "loss_reg": torch.tensor(20.0)}


def test_collapse_callback_sends_a_family_logger_exactly_the_family_records(tmp_path: Path) -> None:
    """CollapseMonitorCallback with a family logger: per check one minimal metric per field and one warn per alert."""
    logger = FamilyLogger()
    callback = CollapseMonitorCallback(
        CollapseMonitor(registry=MetricRegistry()), keys={"prediction": "pred", "kl_reg": "loss_reg"}, logger=logger
    )
    fit(_HighRegulariser(), callback, tmp_path, epochs=1, logger=False)
    check = callback.monitor.last_check
    assert check is not None and "kl_reg" in [a.criterion for a in check.alerts]
    step = {"step": check.step}
    expected = [
        (
            "info",
            "training.metric",
            {"name": f"geno_lewm.training.collapse.{n}", "value": v, "unit": "unitless", "kind": "gauge", **step},
        )
        for n, v in check.metrics.as_dict().items()
    ] + [
        (
            "warn",
            "training.collapse.alert",
            {"criterion": a.criterion, "value": a.value, "threshold": a.threshold, **step},
        )
        for a in check.alerts
    ]
    assert logger.calls == expected


def test_dynamics_and_gradient_callbacks_send_a_family_logger_minimal_records(tmp_path: Path) -> None:
    """PredictionDynamicsCallback and GradientGeometryCallback give a family logger only the family's shapes."""
    dynamics_logger, gradients_logger = FamilyLogger(), FamilyLogger()
    dynamics = PredictionDynamicsCallback(
        PredictionMonitor(log_every_steps=2, registry=MetricRegistry()), logger=dynamics_logger
    )
    gradients = GradientGeometryCallback(registry=MetricRegistry(), logger=gradients_logger)
    trainer = Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=1,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        logger=False,
        limit_val_batches=0,
        callbacks=[dynamics, gradients],
    )
    trainer.fit(TinyClassifier(), loader(TRAIN_BATCHES, 1))
    check = dynamics.monitor.last_check
    assert check is not None and check.step == 2
    metric = {"name", "value", "unit", "kind", "step"}
    alert = {"criterion", "value", "threshold", "step"}
    assert dynamics_logger.calls and all(
        ((method, event) == ("info", "training.metric") and set(fields) == metric)
        or ((method, event) == ("warn", "training.dynamics.alert") and set(fields) == alert)
        for method, event, fields in dynamics_logger.calls
    )
    at_last = [f["value"] for m, _, f in dynamics_logger.calls if m == "info" and f["step"] == check.step]
    assert at_last == list(check.metrics.as_dict().values())
    assert gradients_logger.calls and all(
        (method, event) == ("info", "training.metric")
        and set(fields) == metric
        and fields["name"].startswith("geno_lewm.training.gradients.")
        for method, event, fields in gradients_logger.calls
    )


def test_callbacks_refuse_a_logger_without_warning_or_warn_when_built() -> None:
    """A logger with info() only is refused by every callback that warns, naming warning() or warn()."""

    class InfoOnly:
        def info(self, event: str, **fields: Any) -> None:
            """Accept an event."""

    for build in (
        lambda: CollapseMonitorCallback(logger=InfoOnly()),
        lambda: PredictionDynamicsCallback(logger=InfoOnly()),
        lambda: GradientGeometryCallback(logger=InfoOnly()),
    ):
        with pytest.raises(InputError, match=r"InfoOnly without warning\(\) or warn\(\)"):
            build()


class _RecordingLog(TinyJEPA):
    """TinyJEPA that keeps the keyword arguments of every self.log call (then logs as usual)."""

    def __init__(self) -> None:
        super().__init__()
        self.log_calls: dict[str, dict[str, Any]] = {}

    def log(self, name: str, value: Any, *args: Any, **kwargs: Any) -> None:
        """Record, then log."""
        self.log_calls[name] = dict(kwargs)
        super().log(name, value, *args, **kwargs)


@pytest.mark.parametrize(("distributed", "synced"), [("gather", True), ("statistics", True), ("off", False)])
def test_collapse_values_are_logged_synced_by_max_when_every_rank_holds_them(
    distributed: str, synced: bool, tmp_path: Path
) -> None:
    """Gathered or merged checks are logged with sync_dist=True, reduce_fx='max' (exact for identical values);
    per-rank checks (distributed='off') are not synced.
    """
    module = _RecordingLog()
    callback = CollapseMonitorCallback(
        CollapseMonitor(registry=MetricRegistry(), distributed=distributed),  # type: ignore[arg-type]
        keys={"prediction": "pred", "kl_reg": "loss_reg"},
        logger=None,
    )
    fit(module, callback, tmp_path, epochs=1, logger=False)
    collapse = {name: kwargs for name, kwargs in module.log_calls.items() if name.startswith("collapse/")}
    assert set(collapse) == {f"collapse/{name}" for name in METRIC_NAMES} | {"collapse/alerts"}
    for kwargs in collapse.values():
        assert kwargs["sync_dist"] is synced and kwargs["reduce_fx"] == "max"
        assert kwargs["on_epoch"] is True and kwargs["on_step"] is False


def _ddp_worker(out: str) -> None:
    """Run as a script: a two-process DDP fit on the CPU; each rank writes what it logged and what it checked."""
    import json
    import os

    callback = CollapseMonitorCallback(
        CollapseMonitor(registry=MetricRegistry()), keys={"prediction": "pred", "kl_reg": "loss_reg"}, logger=None
    )
    trainer = Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp",
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=out,
        callbacks=[callback],
    )
    trainer.fit(TinyJEPA(), loader(TRAIN_BATCHES, 1), loader(2, 2))
    check = callback.last_check
    assert check is not None
    result = {
        "logged": {k: v.item() for k, v in trainer.callback_metrics.items() if k.startswith("collapse/")},
        "checked": {**check.metrics.as_dict(), "alerts": float(len(check.alerts))},
    }
    with open(os.path.join(out, f"rank{trainer.global_rank}.json"), "w") as stream:
        json.dump(result, stream)


@pytest.mark.slow
def test_collapse_callback_under_two_process_ddp_logs_exact_values_without_sync_warnings(tmp_path: Path) -> None:
    """A real 2-process DDP fit: no 'sync_dist=True' advice for collapse/..., and every rank logs the check's values."""
    import json
    import os
    import subprocess
    from pathlib import Path as _Path

    if not torch.distributed.is_available():
        pytest.skip("torch.distributed is not available")
    repo = _Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(repo), os.environ.get("PYTHONPATH", "")])}
    env.pop("GENO_LEWM_LOG_DIR", None)
    done = subprocess.run(
        [sys.executable, __file__, DDP_WORKER, str(tmp_path)],
        check=False,
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert "All distributed processes registered. Starting with 2 processes" in output
    assert "self.log('collapse/" not in output
    results = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in range(2)]
    assert results[0] == results[1]
    for result in results:
        checked = {f"collapse/{name}": value for name, value in result["checked"].items()}
        assert set(result["logged"]) == set(checked)
        for name, value in checked.items():  # Lightning keeps logged floats as float32
            assert result["logged"][name] == torch.tensor(value, dtype=torch.float32).item()


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == DDP_WORKER:
    _ddp_worker(sys.argv[2])
