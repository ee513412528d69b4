"""Careless and hostile use of the user-facing surface: class_dim, quantiles, the lens seed, plot --out,
logs that are devices. Each bad input is an InputError naming what and where, never a stray exception
or a wrong number.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geno_lewm import cli
from geno_lewm.errors import InputError
from geno_lewm.metrics import MetricRegistry
from geno_lewm.observability import get_logger

torch = pytest.importorskip("torch")
numpy = pytest.importorskip("numpy")

from geno_lewm.training.dynamics import logits_as_rows  # noqa: E402
from geno_lewm.training.gradients import GradientGeometry, check_gradient_options, quantile  # noqa: E402


# ------------------------------------------------------------------ logits_as_rows
@pytest.mark.parametrize("class_dim", [True, False, 1.0, "1", numpy.bool_(True)])
def test_logits_as_rows_refuses_a_class_dim_that_is_not_an_integer(class_dim: object) -> None:
    """A bool, float or text class_dim is an InputError naming class_dim, for tensors, arrays and lists alike."""
    for logits in (torch.zeros(2, 3, 4), numpy.zeros((2, 3, 4)), [[0.0, 1.0]]):
        with pytest.raises(InputError, match="'class_dim' must be an integer or None") as caught:
            logits_as_rows(logits, class_dim)  # type: ignore[arg-type]
        assert caught.value.details["field"] == "class_dim"


def test_logits_as_rows_takes_a_numpy_integer_class_dim_as_the_int() -> None:
    """numpy.int64(-1) reads the logits as int -1 does."""
    logits = numpy.arange(24.0).reshape(2, 3, 4)
    assert numpy.array_equal(logits_as_rows(logits, numpy.int64(-1)), logits_as_rows(logits, -1))  # type: ignore[arg-type]


@pytest.mark.parametrize("shape", [(2, 0, 4), (0, 3, 4), (2, 3, 0)])
def test_logits_as_rows_of_an_empty_batch_or_no_classes_keeps_every_size(shape: tuple[int, ...]) -> None:
    """Logits with a zero-size dimension come back as [rows, classes] with the sizes of the other dimensions."""
    expected = (shape[0] * shape[2], shape[1])
    assert tuple(logits_as_rows(torch.zeros(shape), 1).shape) == expected
    assert logits_as_rows(numpy.zeros(shape), 1).shape == expected


# ------------------------------------------------------------------ quantile
@pytest.mark.parametrize(
    ("ordered", "fraction", "field"),
    [
        ([], 0.5, "ordered"),
        ([1.0, 2.0], -0.25, "fraction"),
        ([1.0, 2.0], 1.5, "fraction"),
        ([1.0, 2.0], math.nan, "fraction"),
        ([1.0, 2.0], True, "fraction"),
        ([1.0, math.nan], 0.5, "ordered[1]"),
        ([-math.inf, 1.0], 0.5, "ordered[0]"),
        ([1.0, 3.0, 2.0], 0.5, "ordered[2]"),
    ],
)
def test_quantile_refuses_what_has_no_quantile(ordered: list[float], fraction: float, field: str) -> None:
    """Empty, non-finite or unsorted values and fractions outside [0, 1] are InputErrors naming the position."""
    with pytest.raises(InputError) as caught:
        quantile(ordered, fraction)
    assert caught.value.details["field"] == field


@settings(max_examples=500, deadline=None)
@given(
    st.lists(st.floats(min_value=-1e300, max_value=1e300), min_size=1, max_size=8),
    st.floats(min_value=0.0, max_value=1.0),
)
def test_quantile_agrees_with_numpy_linear(values: list[float], fraction: float) -> None:
    """The quantile equals numpy.quantile(method='linear') exactly and lies between its two neighbours."""
    ordered = sorted(values)
    got = quantile(ordered, fraction)
    assert got == float(numpy.quantile(ordered, fraction, method="linear"))
    position = (len(ordered) - 1) * fraction
    assert ordered[math.floor(position)] <= got <= ordered[math.ceil(position)]


def test_the_lens_median_of_two_huge_gradients_is_finite() -> None:
    """Two passes whose gradient norms sum past the float range still have their finite mean as the median."""
    model = torch.nn.Linear(1, 1).double()
    geometry = GradientGeometry(model, keep_values=True, registry=MetricRegistry())
    scales = (1.0e308, 1.5e308)
    for scale in scales:
        (model(torch.ones(1, 1, dtype=torch.float64)) * scale).sum().backward()
    (stats,) = geometry.end_epoch().layers
    assert stats.value.median == scales[0] / 2 + scales[1] / 2
    assert math.isfinite(stats.value.median)


# ------------------------------------------------------------------ the lens seed
def test_a_seed_past_a_torch_generator_is_refused_when_the_lens_is_built() -> None:
    """A seed >= 2**64 is an InputError naming 'seed' from the options check and the constructor."""
    with pytest.raises(InputError, match="'seed'"):
        check_gradient_options({"seed": 2**64})
    with pytest.raises(InputError, match="'seed'"):
        GradientGeometry(torch.nn.Linear(2, 2), seed=2**64, registry=MetricRegistry())


def test_the_largest_seed_works_for_every_layer_of_a_sketched_lens() -> None:
    """The seed 2**64 - 1 with several sketched layers records every pass (layer seeds wrap, not overflow)."""
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 8))
    geometry = GradientGeometry(
        model, seed=2**64 - 1, compute_correlation=True, correlation_sketch_size=4, registry=MetricRegistry()
    )
    passes = 3
    for _ in range(passes):
        model(torch.ones(5, 4)).sum().backward()
    layers = geometry.end_epoch().layers
    assert len(layers) == 2
    assert all(stats.value.count == passes and stats.nonfinite == 0 for stats in layers)


# ------------------------------------------------------------------ plot --out, device logs
@pytest.fixture
def small_log(tmp_path: Path) -> Path:
    """A log of one run with one metric at two steps."""
    log = get_logger("training", log_dir=tmp_path / "logs", run_id="small")
    for step in (1, 2):
        log.info("training.metric", name="x", value=float(step), unit="1", kind="gauge", step=step)
    log.close()
    return log.path


def _main(capsys: Any, *args: str) -> tuple[int, str, str]:
    code = cli.main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("name", ["figure.svg", "figure", "existing.png"])
def test_plot_refuses_an_out_that_is_not_a_png_file(name: str, small_log: Path, tmp_path: Path, capsys: Any) -> None:
    """A plot --out with another suffix, no suffix or a directory exits 2 naming --out, and writes nothing."""
    pytest.importorskip("matplotlib")
    (tmp_path / "existing.png").mkdir()
    before = sorted(os.listdir(tmp_path))
    code, out, err = _main(capsys, "plot", str(small_log), "--out", str(tmp_path / name))
    assert code == cli.EXIT_USAGE
    assert "--out" in err and ".png" in err and out == ""
    assert sorted(os.listdir(tmp_path)) == before


def test_plot_into_a_path_under_a_file_exits_2_naming_it(small_log: Path, capsys: Any) -> None:
    """A plot --out under a regular file (no folder can be made) exits 2 with the path, no traceback."""
    pytest.importorskip("matplotlib")
    target = small_log / "figure.png"
    code, _, err = _main(capsys, "plot", str(small_log), "--out", str(target))
    assert code == cli.EXIT_USAGE
    assert "cannot write the plot" in err and str(target) in err


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
def test_report_of_a_device_is_refused_without_reading_it(capsys: Any) -> None:
    """Reporting /dev/zero exits 3 saying it is a device (reading it would never end)."""
    code, _, err = _main(capsys, "report", "/dev/zero")
    assert code == cli.EXIT_UNREADABLE
    assert "/dev/zero" in err and "device" in err


# ------------------------------------------------------------------ alerts of other families
@pytest.mark.parametrize(
    "data",
    [{"criterion": "var", "value": None, "threshold": 0.5}, {"value": 3}, {}],
    ids=["null-value", "no-criterion", "no-fields"],
)
def test_an_alert_event_without_a_criterion_or_value_still_fails_the_ci_check(
    data: dict[str, Any], tmp_path: Path, capsys: Any
) -> None:
    """Any *.alert event is an alert: --fail-on-alert exits 6 (text and JSON agree) and the report lists it."""
    path = tmp_path / "other.jsonl"
    line = {"ts": "2026-01-01T00:00:00Z", "severity": "warn", "event": "other.alert", "run_id": "other"}
    path.write_text(json.dumps({**line, "component": "training", "data": data}) + "\n")
    code, out, err = _main(capsys, "report", "--fail-on-alert", str(path))
    assert code == cli.EXIT_ALERT
    assert "alerts: 1" in out and "other" in err
    code, out, _ = _main(capsys, "report", "--fail-on-alert", "--json", str(path))
    payload = json.loads(out)
    assert code == payload["exit_code"] == cli.EXIT_ALERT
    assert payload["alerted_runs"] == ["other"] and len(payload["runs"][0]["alerts"]) == 1


# ------------------------------------------------------------------ gradients section of a configuration
@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"line_aggregation": "iqr"}, "'line_aggregation' 'iqr' needs keep_values"),
        ({"line_aggregation": "q3"}, "'line_aggregation' 'q3' needs keep_values"),
        ({"range_aggregation": ["q1q3"]}, "'range_aggregation' 'q1q3' needs keep_values"),
        ({"seed": 2**64}, "'seed' must be an integer in"),
    ],
)
def test_a_gradients_section_that_would_not_build_is_refused_when_loaded(section: dict[str, Any], message: str) -> None:
    """load_config refuses, under the path 'gradients', what GradientGeometry would refuse at build()."""
    from geno_lewm.config import load_config

    with pytest.raises(InputError, match=f"gradients: {message}"):
        load_config({"gradients": section})
    load_config({"gradients": {**section, "keep_values": True, "seed": 0}}).build(lightning=True)


# ------------------------------------------------------------------ terminal control characters in a log
def test_report_escapes_what_a_terminal_would_act_on(tmp_path: Path, capsys: Any) -> None:
    """Escape sequences and line breaks in a log's run id, component and metric name reach neither stream raw."""
    path = tmp_path / "hostile.jsonl"
    run_id = "r\x1b[31m\nrun fake"
    line = {
        "schema_version": 1,
        "timestamp": "2026-01-01T00:00:00Z",
        "level": "info",
        "event": "training.metric",
        "component": "train\x1b[2J",
        "run_id": run_id,
        "step": 1,
        "name": "m\u202e\x07",
        "value": 1.0,
        "unit": "1",
        "kind": "gauge",
    }
    path.write_text(json.dumps(line) + "\n")
    code, out, err = _main(capsys, "report", str(path), "--run", "other")
    assert code == cli.EXIT_UNREADABLE
    for stream in (out, err):
        assert not any(character in stream for character in "\x1b\x07\u202e")
    assert "\nrun fake" not in out + err and "r\\x1b[31m\\nrun fake" in err
    code, out, _ = _main(capsys, "report", str(path))
    assert code == cli.EXIT_OK and "\x1b" not in out and "m\\u202e\\x07" in out
    assert [line for line in out.splitlines() if line.startswith("run ")] == ["run r\\x1b[31m\\nrun fake"]
