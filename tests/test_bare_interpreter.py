"""The dependency-free rule, checked in real subprocesses: the core runs in an interpreter
that sees only the standard library and the repository, and importing the package in a
normal interpreter loads none of the optional or declared heavy dependencies.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from geno_lewm.training.collapse import compute_collapse_metrics

FORBIDDEN = ("numpy", "torch", "structlog", "pydantic")

PREDICTION = [[1.0, 0.5, -0.25], [0.0, 2.0, 1.0], [-1.5, 0.25, 0.75], [0.5, -1.0, 2.0]]
TARGET = [[0.75, 0.5, 0.0], [0.25, 1.5, 1.25], [-1.0, 0.0, 0.5], [1.0, -0.5, 1.5]]

BARE_SCRIPT = """
import json, sys
root, prom = sys.argv[1], sys.argv[2]
sys.path.insert(0, root)
import geno_lewm
import geno_lewm.errors
import geno_lewm.metrics as gm
from geno_lewm.training.collapse import CollapseMonitor, compute_collapse_metrics
from geno_lewm.errors import InputError

prediction, target = json.loads(sys.argv[3])
forbidden = tuple(json.loads(sys.argv[4]))
metrics = compute_collapse_metrics(prediction, target, kl_reg=0.5)

class Logger:
    def __init__(self):
        self.events = []
    def info(self, event, **fields):
        self.events.append(event)
    def warning(self, event, **fields):
        self.events.append(event)

logger = Logger()
monitor = CollapseMonitor(log_every_steps=2)
checks = []
for step, factor in enumerate((1.0, 1.0, 0.9, 0.4, 0.3, 0.1), start=1):
    shrunk = [[factor * v for v in row] for row in prediction]
    check = monitor.observe(shrunk, target, kl_reg=0.5, step=step, logger=logger)
    checks.append(None if check is None else [a.criterion for a in check.alerts])
try:
    compute_collapse_metrics([[1.0, float("nan")]], [[1.0, 2.0]], kl_reg=0.0)
    refused = False
except InputError:
    refused = True
gm.export_prometheus_textfile(prom)
print(json.dumps({
    "metrics": metrics.as_dict(),
    "checks": checks,
    "events": len(logger.events),
    "refused": refused,
    "snapshot_checks": gm.snapshot_values()["geno_lewm.training.collapse.checks"],
    "loaded": sorted(name for name in sys.modules if name.split(".")[0] in forbidden),
    "path": sys.path,
    "flags": [sys.flags.isolated, sys.flags.no_site],
}))
"""


def run_python(args: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None) -> dict[str, object]:
    """Run ``python args...`` and return the JSON object it prints last."""
    completed = subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=120, env=env, cwd=cwd, check=False
    )
    assert completed.returncode == 0, completed.stderr
    result: dict[str, object] = json.loads(completed.stdout.strip().splitlines()[-1])
    return result


def test_core_runs_in_a_bare_interpreter(repo_root: Path, tmp_path: Path) -> None:
    """With `python -I -S` and only the repository added to sys.path, the core computes, monitors
    and exports, and numpy, torch, structlog and pydantic are never imported.
    """
    prom = tmp_path / "collapse.prom"
    payload = json.dumps([PREDICTION, TARGET])
    args = ["-I", "-S", "-c", BARE_SCRIPT, str(repo_root), str(prom), payload, json.dumps(FORBIDDEN)]
    result = run_python(args, cwd=tmp_path)
    assert result["flags"] == [1, 1]
    assert not any("site-packages" in entry for entry in result["path"])  # type: ignore[union-attr]
    assert result["loaded"] == []
    expected = compute_collapse_metrics(PREDICTION, TARGET, kl_reg=0.5, backend="python")
    assert result["metrics"] == expected.as_dict()
    assert result["checks"] == [
        None,
        [],
        None,
        ["pred_var_per_dim", "pairwise_pred_dist_mean"],
        None,
        ["pred_var_per_dim", "pairwise_pred_dist_mean"],
    ]
    assert result["events"] == 3 * 7 + 4
    assert result["refused"] is True
    assert result["snapshot_checks"] == 3.0
    text = prom.read_text(encoding="utf-8")
    assert "# TYPE geno_lewm_training_collapse_pred_var_per_dim gauge" in text
    assert "geno_lewm_training_collapse_alert_total 4.0" in text


def test_importing_the_package_loads_no_heavy_dependency(repo_root: Path, tmp_path: Path) -> None:
    """In a normal interpreter (site-packages visible), importing geno_lewm and its collapse module
    and computing on small lists imports none of numpy, torch, structlog or pydantic.
    """
    code = (
        "import json, sys\n"
        "import geno_lewm, geno_lewm.training.collapse as c, geno_lewm.metrics, geno_lewm.errors\n"
        "c.compute_collapse_metrics([[1.0, 2.0], [3.0, 4.0]], [[1.0, 0.0], [0.0, 1.0]], kl_reg=0.0)\n"
        "c.CollapseMonitor(log_every_steps=1).observe([[1.0], [2.0]], [[1.0], [3.0]], kl_reg=0.0, step=1)\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r})))\n"
    )
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(repo_root), env.get("PYTHONPATH")]))
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path, check=False
    )
    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout.strip().splitlines()[-1]) == []
    probe = subprocess.run(
        [sys.executable, "-c", "import numpy, torch"], capture_output=True, timeout=120, env=env, check=False
    )
    assert probe.returncode == 0, "numpy and torch must be importable here, or this test proves nothing"
