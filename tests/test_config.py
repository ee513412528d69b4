"""The monitoring configuration: plain mappings from YAML, JSON and TOML validated, unknown
keys and bad values refused with their path, the JSON Schema (also from the command line),
and build() producing monitors and Lightning callbacks that work.
"""

from __future__ import annotations

import io
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from geno_lewm.config import (
    MonitoringConfig,
    config_json_schema,
    load_config,
)
from geno_lewm.errors import CollapseDetectedError, InputError
from geno_lewm.logs import read_log
from geno_lewm.metrics import MetricRegistry
from geno_lewm.training.alerting import AlertPolicy
from geno_lewm.training.collapse import CollapseMonitor, CollapseThresholds
from geno_lewm.training.dynamics import PredictionMonitor, PredictionThresholds

pytestmark = pytest.mark.filterwarnings("ignore:.*LeafSpec")

TOML = """
[log]
dir = "runs/logs"
run_id = "exp-1"

[[sinks]]
type = "csv"
path = "runs/metrics.csv"
rename = "short"

[collapse]
every_n_steps = 200
keys = { prediction = "pred", kl_reg = "loss_reg" }
thresholds = { kl_reg_max = 8.0, effective_rank_to_initial = 0.25 }
policy = { on_alert = "raise", warmup_steps = 1000, patience = 3, hysteresis = 0.1 }

[dynamics]
every_n_steps = 25

[metrics]
mode = "epoch"
stages = ["val"]

[metrics.metrics]
acc = "sklearn.metrics:accuracy_score"

[metrics.metrics.f1]
target = "torchmetrics:F1Score"
kwargs = { task = "multiclass", num_classes = 3 }
needs = ["class_scores", "classes"]
"""

YAML = """
log: {dir: runs/logs, run_id: exp-1}
sinks:
  - {type: csv, path: runs/metrics.csv, rename: short}
collapse:
  every_n_steps: 200
  keys: {prediction: pred, kl_reg: loss_reg}
  thresholds: {kl_reg_max: 8.0, effective_rank_to_initial: 0.25}
  policy: {on_alert: raise, warmup_steps: 1000, patience: 3, hysteresis: 0.1}
dynamics: {every_n_steps: 25}
metrics:
  mode: epoch
  stages: [val]
  metrics:
    acc: sklearn.metrics:accuracy_score
    f1:
      target: torchmetrics:F1Score
      kwargs: {task: multiclass, num_classes: 3}
      needs: [class_scores, classes]
"""


def as_json(mapping: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(json.dumps(mapping))
    return result


def toml_mapping() -> dict[str, Any]:
    tomllib = pytest.importorskip("tomllib")
    result: dict[str, Any] = tomllib.loads(TOML)
    return result


def walk(node: Any) -> list[dict[str, Any]]:
    """Every JSON object (mapping) nested in ``node``, ``node`` included."""
    found: list[dict[str, Any]] = []
    if isinstance(node, dict):
        found.append(node)
        for value in node.values():
            found.extend(walk(value))
    elif isinstance(node, list):
        for value in node:
            found.extend(walk(value))
    return found


def problem(mapping: Any) -> InputError:
    with pytest.raises(InputError) as error:
        load_config(mapping)
    return error.value


# ------------------------------------------------------------------ validation
def test_an_empty_mapping_is_the_rfc_default() -> None:
    """{}: the collapse lens on with RFC-0005's period and thresholds, the other lenses off."""
    config = load_config({})
    assert config.collapse is not None and config.collapse.every_n_steps == 500
    assert config.collapse.thresholds.build() == CollapseThresholds()
    assert (config.dynamics, config.gradients, config.metrics, config.sinks) == (None, None, None, [])
    assert config.version == 1 and config.log.enabled


def test_toml_yaml_and_json_give_the_same_configuration() -> None:
    """The same set-up loaded from TOML, YAML and JSON validates to equal models."""
    yaml = pytest.importorskip("yaml")
    from_toml = load_config(toml_mapping())
    from_yaml = load_config(yaml.safe_load(YAML))
    from_json = load_config(as_json(yaml.safe_load(YAML)))
    assert from_toml == from_yaml == from_json
    assert from_toml.collapse is not None and from_toml.collapse.policy is not None
    assert from_toml.collapse.policy.build() == AlertPolicy("raise", 1000, 3, 0.1)
    assert from_toml.metrics is not None and from_toml.metrics.metrics["acc"].target == "sklearn.metrics:accuracy_score"


def test_a_dumped_configuration_loads_back_and_is_immutable() -> None:
    """model_dump() (JSON mode) round-trips; a validated configuration cannot be changed."""
    config = load_config(toml_mapping())
    assert load_config(config.model_dump(mode="json")) == config
    assert load_config(config) is config
    with pytest.raises(Exception, match="frozen"):
        config.backend = "python"  # type: ignore[misc]


def test_tuples_are_accepted_where_lists_are_expected() -> None:
    """A mapping built in Python may use tuples for lists."""
    config = load_config({"metrics": {"metrics": {"acc": "sklearn.metrics:accuracy_score"}, "stages": ("val",)}})
    assert config.metrics is not None and config.metrics.stages == ["val"]


@pytest.mark.parametrize(
    ("mapping", "path", "hint"),
    [
        ({"colapse": {}}, "colapse", "did you mean 'collapse'?"),
        ({"collapse": {"thresholds": {"kl_reg_mx": 3.0}}}, "collapse.thresholds.kl_reg_mx", "'kl_reg_max'"),
        ({"collapse": {"policy": {"patients": 2}}}, "collapse.policy.patients", "'patience'"),
        ({"sinks": [{"type": "memory"}, {"type": "csv", "path": "m.csv", "pth": 1}]}, "sinks[1].pth", "'path'"),
        ({"metrics": {"metrics": {"acc": {"target": "a.b", "kwarg": {}}}}}, "metrics.metrics.acc.kwarg", "'kwargs'"),
        ({"gradients": {"normalise_by_size": True}}, "gradients.normalise_by_size", "'normalize_by_size'"),
        ({"log": {"directory": "x"}}, "log.directory", "known keys: enabled, dir, run_id"),
    ],
)
def test_unknown_keys_are_refused_with_their_path(mapping: dict[str, Any], path: str, hint: str) -> None:
    """Every section forbids unknown keys; the error names the path and the nearest known key."""
    error = problem(mapping)
    assert f"{path}: unknown key" in str(error)
    assert hint in str(error)
    assert error.details["field"] == path
    assert error.details["errors"][0]["type"] == "extra_forbidden"


@pytest.mark.parametrize(
    ("mapping", "path", "fragment"),
    [
        ({"collapse": {"every_n_steps": "500"}}, "collapse.every_n_steps", "got '500'"),
        ({"collapse": {"every_n_steps": 0}}, "collapse.every_n_steps", "greater than 0"),
        ({"collapse": {"num_batches": True}}, "collapse.num_batches", "valid integer"),
        ({"collapse": {"thresholds": {"kl_reg_max": math.inf}}}, "collapse.thresholds.kl_reg_max", "finite"),
        ({"collapse": {"thresholds": {"pairwise_to_initial": -0.5}}}, "collapse.thresholds.pairwise_to_initial", ""),
        ({"collapse": {"policy": {"hysteresis": -0.1}}}, "collapse.policy.hysteresis", "greater than or equal"),
        ({"collapse": {"policy": {"on_alert": "stop"}}}, "collapse.policy.on_alert", "'log' or 'raise'"),
        ({"collapse": {"keys": {"logits": "z"}}}, "collapse.keys.logits", ""),
        ({"collapse": {"distributed": "statistics", "spectrum": True}}, "collapse", "spectra need the whole batch"),
        (
            {"dynamics": {"thresholds": {"min_normalized_entropy": 0.9, "max_normalized_entropy": 0.5}}},
            "dynamics.thresholds",
            "must be < 'max_normalized_entropy'",
        ),
        (
            {"dynamics": {"thresholds": {"max_top_class_fraction": 1.5}}},
            "dynamics.thresholds.max_top_class_fraction",
            "",
        ),
        ({"gradients": {"line_aggregation": "median"}}, "gradients", "needs keep_values"),
        ({"gradients": {"range_aggregation": []}}, "gradients.range_aggregation", "at least 1 item"),
        ({"gradients": {"range_aggregation": ["iqr"]}}, "gradients.range_aggregation[0]", ""),
        ({"gradients": {"range_aggregation": ["std", "std"]}}, "gradients", "names a band twice"),
        ({"sinks": [{"type": "neptune"}]}, "sinks[0]", "does not match any of the expected tags"),
        ({"sinks": [{"type": "csv"}]}, "sinks[0].path", "Field required"),
        ({"backend": "jax"}, "backend", "'auto', 'python', 'numpy' or 'torch'"),
        ({"version": 2}, "version", "got 2"),
        ({"metrics": {"metrics": {}}}, "metrics.metrics", "at least 1 item"),
        ({"metrics": {"metrics": {"acc": "not a path"}}}, "metrics.metrics.acc.target", "match pattern"),
        ({"metrics": {"metrics": {"my-acc": "a.b"}}}, "metrics", "must be identifiers"),
        ({"metrics": {"metrics": {"acc": "a.b"}, "units": {"f1": "1"}}}, "metrics", "'f1', which are not metrics"),
        (
            {"metrics": {"metrics": {"acc": "a.b"}, "train_every_n_steps": 5, "train_every_n_epochs": 1}},
            "metrics",
            "not both",
        ),
    ],
)
def test_bad_values_are_refused_with_their_path(mapping: dict[str, Any], path: str, fragment: str) -> None:
    """Types are strict and values are checked as the library's constructors check them."""
    error = problem(mapping)
    paths = [item["path"] for item in error.details["errors"]]
    assert path in paths, error
    assert fragment in str(error)


def test_every_problem_is_listed_and_non_mappings_are_refused() -> None:
    """All errors are in details['errors']; a list or a string is not a configuration."""
    error = problem({"collapse": {"every_n_steps": -1, "policy": {"patience": 0}}, "extra": 1})
    assert {item["path"] for item in error.details["errors"]} == {
        "collapse.every_n_steps",
        "collapse.policy.patience",
        "extra",
    }
    for value in (["collapse"], "collapse: {}", None):
        with pytest.raises(InputError, match="must be a mapping"):
            load_config(value)  # type: ignore[arg-type]


# ------------------------------------------------------------------ schema
def test_the_json_schema_forbids_unknown_keys_everywhere() -> None:
    """Every object in the schema has additionalProperties false; defaults are documented."""
    schema = config_json_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    sections = [o for o in walk(schema) if o.get("type") == "object" and "properties" in o]
    assert len(sections) >= 14
    assert all(o["additionalProperties"] is False for o in sections)
    thresholds = schema["$defs"]["CollapseThresholdsConfig"]["properties"]
    assert thresholds["kl_reg_max"]["default"] == 10.0


def test_the_schema_accepts_valid_configurations_and_refuses_unknown_keys() -> None:
    """The jsonschema package agrees with the model on a full configuration and on an unknown key."""
    jsonschema = pytest.importorskip("jsonschema")
    schema = config_json_schema()
    jsonschema.validate(toml_mapping(), schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"collapse": {"thresholds": {"kl_reg_mx": 3.0}}}, schema)


def test_config_schema_command_prints_the_schema(repo_root: Path) -> None:
    """`python -m geno_lewm config-schema` exits 0 and prints config_json_schema() as JSON."""
    done = subprocess.run(
        [sys.executable, "-m", "geno_lewm", "config-schema"],
        cwd=repo_root,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == config_json_schema()


def test_importing_the_configuration_imports_no_framework(repo_root: Path) -> None:
    """geno_lewm.config imports pydantic, not torch or numpy, even when building a collapse monitor."""
    script = (
        "import sys, json; from geno_lewm.config import load_config; "
        "built = load_config({'log': {'enabled': False}}).build(); "
        "print(json.dumps([m for m in ('torch', 'numpy', 'lightning') if m in sys.modules]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=repo_root, capture_output=True, text=True, timeout=120, check=True
    )
    assert json.loads(done.stdout) == []


# ------------------------------------------------------------------ build, plain loop
def test_build_gives_working_monitors_for_a_plain_loop(tmp_path: Path) -> None:
    """Collapse under a raising policy, dynamics, a CSV sink and the run log, from one mapping."""
    registry = MetricRegistry()
    config = load_config(
        {
            "log": {"dir": str(tmp_path / "logs"), "run_id": "plain"},
            "sinks": [{"type": "csv", "path": str(tmp_path / "metrics.csv"), "rename": "short"}, {"type": "memory"}],
            "backend": "python",
            "collapse": {"every_n_steps": 10, "policy": {"on_alert": "raise", "patience": 2}},
            "dynamics": {"every_n_steps": 10, "thresholds": {"max_top_class_fraction": 1.0}},
        }
    )
    built = config.build(registry=registry)
    assert isinstance(built.collapse, CollapseMonitor) and isinstance(built.dynamics, PredictionMonitor)
    assert built.collapse.policy == AlertPolicy("raise", 0, 2, 0.0)
    assert built.dynamics.thresholds == PredictionThresholds(max_top_class_fraction=1.0)
    spread = [[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]]
    collapsed = [[0.01 * v for v in row] for row in spread]
    built.collapse.observe(spread, spread, kl_reg=0.1, step=10, logger=built.logger)
    built.collapse.observe(collapsed, spread, kl_reg=0.1, step=20, logger=built.logger)
    with pytest.raises(CollapseDetectedError):
        built.collapse.observe(collapsed, spread, kl_reg=0.1, step=30, logger=built.logger)
    check = built.dynamics.observe([[3.0, 0.0], [0.0, 3.0]], step=10, logger=built.logger)
    assert check is not None and check.metrics.argmax_spread == 1.0
    assert built.logger is not None
    events = [r.event for r in read_log(tmp_path / "logs" / "plain.jsonl")]
    assert "training.alert.raised" in events and "training.dynamics.alert" not in events
    rows = (tmp_path / "metrics.csv").read_text().splitlines()
    assert rows[0] == "time,step,name,value" and any(",collapse/kl_reg," in row for row in rows)
    memory = built.sinks[1]
    assert [step for step, _ in memory.calls] == [10, 20, 30]  # type: ignore[attr-defined]
    assert registry.value("geno_lewm.training.collapse.checks") == 3.0


def test_build_resolves_metrics_by_import_path(tmp_path: Path) -> None:
    """A scikit-learn function, a torchmetrics class with kwargs and per-metric needs, in a plain loop."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("torchmetrics")
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    config = load_config(toml_mapping()).model_copy(update={"log": load_config({"log": {"enabled": False}}).log})
    built = config.build()
    assert built.metrics is not None and built.metrics.names == ("acc", "f1")
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 2.0], [2.0, 0.0, 0.0]])
    target = torch.tensor([0, 1, 1, 0])
    built.metrics.update({"preds": logits.argmax(1), "target": target, "class_scores": logits, "classes": target})
    values = built.metrics.compute()
    assert values["acc"] == sklearn_metrics.accuracy_score(target.numpy(), logits.argmax(1).numpy())
    assert 0.0 < values["f1"] < 1.0


def test_build_reports_metrics_that_cannot_be_made_with_their_path() -> None:
    """A missing module, a missing attribute, bad kwargs and a non-callable are InputErrors naming the entry."""
    cases = [
        ({"target": "no_such_module_xyz:metric"}, "metrics.metrics.m.target: cannot import"),
        ({"target": "math:no_such_function"}, "metrics.metrics.m.target: cannot import"),
        (
            {"target": "fractions:Fraction", "kwargs": {"base": 2}},
            "metrics.metrics.m.kwargs: fractions:Fraction rejected",
        ),
        ({"target": "math:pi"}, "is a float, not a metric"),
        ({"target": "operator:add", "needs": {"a": "x", "b": "y"}}, "metrics: 'needs' of metric 'm' does not fit"),
    ]
    for entry, message in cases:
        config = load_config({"log": {"enabled": False}, "metrics": {"metrics": {"m": entry}}})
        with pytest.raises(InputError, match=message):
            config.build()


def test_build_needs_a_model_for_gradients_and_a_period_for_collapse_in_a_plain_loop() -> None:
    """The gradient lens watches a model; 'every validation run' exists only under Lightning."""
    with pytest.raises(InputError, match=r"gradients: the lens watches a model: pass build\(model=\.\.\.\)"):
        load_config({"gradients": {}}).build()
    with pytest.raises(InputError, match=r"collapse\.every_n_steps: null"):
        load_config({"collapse": {"every_n_steps": None}}).build()
    torch = pytest.importorskip("torch")
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    built = load_config({"log": {"enabled": False}, "gradients": {"normalize_by_size": True}}).build(model=model)
    assert built.gradients is not None
    model(torch.randn(5, 3)).sum().backward()
    summary = built.gradients.end_epoch(epoch=0, step=1)
    built.gradients.detach()
    assert [layer.quantity for layer in summary.layers] == ["rms", "rms"]


def test_a_disabled_or_null_lens_is_not_built() -> None:
    """enabled: false and null both turn a lens off."""
    assert load_config({"collapse": None, "log": {"enabled": False}}).build().collapse is None
    built = load_config({"collapse": {"enabled": False}, "dynamics": {"enabled": False}, "log": {"enabled": False}})
    assert (built.build().collapse, built.build().dynamics) == (None, None)


# ------------------------------------------------------------------ build, Lightning
def test_build_gives_lightning_callbacks_that_run_in_a_trainer(tmp_path: Path) -> None:
    """All four lenses' callbacks from one mapping run in a real Trainer and write the configured log."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("lightning")
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    from lightning.pytorch import LightningModule, Trainer
    from torch.utils.data import DataLoader, TensorDataset

    class Model(LightningModule):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.encoder = torch.nn.Linear(4, 3)

        def training_step(self, batch: Any, batch_idx: int) -> Any:
            x, y = batch
            logits = self.encoder(x)
            return {"loss": torch.nn.functional.cross_entropy(logits, y), "logits": logits}

        def validation_step(self, batch: Any, batch_idx: int) -> Any:
            x, y = batch
            z = self.encoder(x)
            return {"pred": z, "target": z + 0.1, "loss_reg": torch.tensor(0.5), "labels": y, "label_pred": z.argmax(1)}

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=0.1)

    config = load_config(
        {
            "log": {"dir": str(tmp_path / "logs"), "run_id": "lightning"},
            "collapse": {"every_n_steps": None, "keys": {"prediction": "pred", "kl_reg": "loss_reg"}},
            "dynamics": {"every_n_steps": 2},
            "gradients": {},
            "metrics": {
                "stages": ["val"],
                "mode": "epoch",
                "metrics": {"acc": {"target": "sklearn.metrics:accuracy_score", "needs": ["labels", "label_pred"]}},
            },
        }
    )
    built = config.build(lightning=True, registry=MetricRegistry())
    assert (built.gradients, built.metrics) == (None, None)
    assert [type(c).__name__ for c in built.callbacks] == [
        "CollapseMonitorCallback",
        "PredictionDynamicsCallback",
        "GradientGeometryCallback",
        "MetricsCallback",
    ]
    x = torch.randn(8, 4, generator=torch.Generator().manual_seed(1))
    y = (x[:, 0] > 0).long()
    model = Model()
    trainer = Trainer(
        accelerator="cpu",
        max_epochs=2,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        logger=False,
        num_sanity_val_steps=0,
        default_root_dir=tmp_path,
        callbacks=list(built.callbacks),
    )
    trainer.fit(model, DataLoader(TensorDataset(x, y), batch_size=4), DataLoader(TensorDataset(x, y), batch_size=4))
    everything = list(read_log(tmp_path / "logs" / "lightning.jsonl"))
    records = [r for r in everything if r.event == "training.metric"]
    names = {r.name for r in records}
    assert {"geno_lewm.training.collapse.kl_reg", "geno_lewm.training.metrics.val.acc"} <= names
    assert any(name.startswith("geno_lewm.training.dynamics.") for name in names)
    assert sum(r.event == "training.gradients.layer" for r in everything) == 2  # one layer, two epochs
    model.eval()
    with torch.no_grad():
        expected = sklearn_metrics.accuracy_score(y.numpy(), model.encoder(x).argmax(1).numpy())
    last_acc = [r.value for r in records if r.name == "geno_lewm.training.metrics.val.acc"][-1]
    assert last_acc == expected


def test_monitoring_config_is_the_pydantic_model() -> None:
    """MonitoringConfig.model_validate is what load_config wraps (its errors are pydantic's)."""
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        MonitoringConfig.model_validate({"colapse": {}})


def test_dynamics_policy_from_config_stops_on_mode_collapse() -> None:
    """A dynamics policy in the config reaches the monitor: patience 2 and on_alert raise stop at the second check."""
    from geno_lewm.errors import TrainingAlertError

    config = load_config(
        {"log": {"enabled": False}, "dynamics": {"every_n_steps": 1, "policy": {"patience": 2, "on_alert": "raise"}}}
    )
    monitor = config.build().dynamics
    assert monitor is not None
    collapsed = [[30.0, 0.0, 0.0]] * 4
    check = monitor.observe(collapsed, step=1)
    assert check is not None and check.alerts == ()
    with pytest.raises(TrainingAlertError, match="mode_collapse"):
        monitor.observe(collapsed, step=2)


@pytest.mark.parametrize("run_id", ["../../escaped", "a/b", ".hidden", "x" * 10_000_000, "run\x00id"])
def test_a_run_id_that_is_not_a_file_name_is_refused_at_load(run_id: str) -> None:
    """log.run_id is checked when the configuration is loaded, naming the key, with the value never quoted at length."""
    with pytest.raises(InputError, match=r"log\.run_id") as caught:
        load_config({"log": {"run_id": run_id}})
    assert len(str(caught.value)) < 300
    assert load_config({"log": {"run_id": "exp-1.seed_2"}}).log.run_id == "exp-1.seed_2"


@pytest.mark.parametrize("pretty", [False, True])
def test_log_level_and_pretty_come_from_the_configuration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pretty: bool
) -> None:
    """log.level drops records below it and log.pretty turns the stderr mirror on or off, even on a terminal."""

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    run_id = f"levels-{pretty}"
    config = load_config({"log": {"dir": str(tmp_path), "run_id": run_id, "level": "warn", "pretty": pretty}})
    logger = config.build().logger
    assert logger is not None
    logger.info("training.metric", name="m", value=1.0, unit="1", kind="gauge", step=1)
    logger.warning("training.collapse.alert", criterion="kl_reg", value=12.0, threshold=10.0, step=1)
    events = [record.event for record in read_log(tmp_path / f"{run_id}.jsonl")]
    assert events == ["training.collapse.alert"]
    assert ("training.collapse.alert" in terminal.getvalue()) is pretty
    assert "training.metric" not in terminal.getvalue()


def test_a_log_level_outside_the_familys_names_is_refused() -> None:
    """log.level takes debug, info, warn (or warning) and error, and names the key otherwise."""
    with pytest.raises(InputError, match=r"log\.level"):
        load_config({"log": {"level": "verbose"}})
