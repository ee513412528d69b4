"""The Lightning callbacks, run in a real ``lightning.Trainer`` on the CPU with tiny models:
what reaches ``pl_module.log`` (and a Lightning CSV logger), the registry and the JSON log.
"""

from __future__ import annotations

import csv
import warnings
from typing import TYPE_CHECKING, Any

import pytest

torch = pytest.importorskip("torch")
lightning = pytest.importorskip("lightning")

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
