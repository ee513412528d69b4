"""The metric registry: kinds, thread safety, snapshots and the Prometheus text file, read
back with prometheus_client's own parser.
"""

from __future__ import annotations

import doctest
import math
import os
import stat
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from conftest import parse_prometheus

from geno_lewm import metrics as metrics_module
from geno_lewm.errors import InputError
from geno_lewm.metrics import (
    CATALOGUE,
    DEFAULT_SECONDS_BUCKETS,
    MetricRegistry,
    MetricSpec,
    declare_metric,
    default_registry,
    export_prometheus_textfile,
    prometheus_name,
    snapshot_all,
    snapshot_values,
)
from geno_lewm.training.collapse import METRIC_NAMES, metric_name

PREFIX = "geno_lewm.training.collapse"

# A private catalogue, so these tests never touch the process-wide declarations.
SPECS = {
    spec.name: spec
    for spec in (
        MetricSpec("test.events", "counter", "1", "Events seen."),
        MetricSpec("test.level", "gauge", "1", 'A level with "quotes", a back\\slash\nand a newline.'),
        MetricSpec("test.latency", "histogram", "seconds", "Latency.", buckets=(0.1, 1.0, 10.0)),
        MetricSpec("test.already_seconds", "histogram", "seconds", "Default buckets."),
        MetricSpec("test.total_total", "counter", "1", "A counter already ending in _total."),
    )
}


@pytest.fixture
def private() -> MetricRegistry:
    """A registry over the private catalogue above."""
    return MetricRegistry(SPECS)


# ------------------------------------------------------------------ catalogue
def test_catalogue_declares_every_collapse_metric() -> None:
    """Seven collapse gauges, the alert and checks counters and the timing histogram are declared."""
    for field in METRIC_NAMES:
        assert CATALOGUE[metric_name(field)].kind == "gauge"
    assert CATALOGUE[f"{PREFIX}.alert"].kind == "counter"
    assert CATALOGUE[f"{PREFIX}.checks"].kind == "counter"
    assert CATALOGUE[f"{PREFIX}.compute_seconds"].kind == "histogram"
    assert all(spec.unit and spec.summary for spec in CATALOGUE.values())


def test_declaring_the_same_spec_twice_is_harmless() -> None:
    """Re-declaring an identical spec returns it and changes nothing."""
    spec = CATALOGUE[f"{PREFIX}.kl_reg"]
    assert declare_metric(MetricSpec(spec.name, spec.kind, spec.unit, spec.summary)) == spec
    assert CATALOGUE[spec.name] == spec


def test_declaring_a_name_with_another_meaning_is_refused() -> None:
    """A name cannot be declared a second time with a different kind or unit."""
    spec = CATALOGUE[f"{PREFIX}.kl_reg"]
    with pytest.raises(InputError, match="already declared differently"):
        declare_metric(MetricSpec(spec.name, "counter", spec.unit, spec.summary))
    assert CATALOGUE[spec.name] == spec


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"name": "9starts.with.digit"}, "name"),
        ({"name": "has space"}, "name"),
        ({"name": ""}, "name"),
        ({"kind": "summary"}, "kind"),
        ({"kind": "histogram", "buckets": (1.0, 0.5)}, "buckets"),
        ({"kind": "histogram", "buckets": (1.0, 1.0)}, "buckets"),
        ({"kind": "histogram", "buckets": (1.0, math.inf)}, "buckets"),
    ],
)
def test_bad_specs_are_refused(kwargs: dict[str, Any], field: str) -> None:
    """Names must be dotted identifiers, kinds known, buckets strictly increasing and finite."""
    arguments: dict[str, Any] = {"name": "x.y", "kind": "gauge", "unit": "1", "summary": "s"} | kwargs
    with pytest.raises(InputError) as info:
        MetricSpec(**arguments)
    assert info.value.details["field"] == field


def test_histogram_spec_gets_default_buckets() -> None:
    """A histogram declared without buckets uses the default seconds buckets."""
    assert SPECS["test.already_seconds"].buckets == DEFAULT_SECONDS_BUCKETS


# ------------------------------------------------------------------- values
def test_gauge_keeps_the_last_value(private: MetricRegistry) -> None:
    """A gauge holds whatever was set last, converted to float."""
    assert private.value("test.level") is None
    private.set_gauge("test.level", 3)
    private.set_gauge("test.level", -0.25)
    assert private.value("test.level") == -0.25
    assert type(private.value("test.level")) is float


def test_gauge_keeps_nan_and_infinities(private: MetricRegistry) -> None:
    """NaN and infinities are legitimate gauge values (an overflowing variance is inf)."""
    private.set_gauge("test.level", math.inf)
    assert private.value("test.level") == math.inf
    private.set_gauge("test.level", math.nan)
    assert math.isnan(private.value("test.level") or 0.0)


def test_counter_accumulates(private: MetricRegistry) -> None:
    """Incrementing adds the amount (1 by default) to the counter."""
    private.inc("test.events")
    private.inc("test.events", 2.5)
    private.inc("test.events", 0)
    assert private.value("test.events") == 3.5


@pytest.mark.parametrize("amount", [-1.0, math.nan, math.inf, "2", None, True], ids=repr)
def test_counter_refuses_bad_amounts(private: MetricRegistry, amount: Any) -> None:
    """Negative, non-finite, non-numeric and boolean amounts are refused and change nothing."""
    private.inc("test.events", 1.0)
    with pytest.raises(InputError, match="'amount' must be"):
        private.inc("test.events", amount)
    assert private.value("test.events") == 1.0


@pytest.mark.parametrize("value", ["1.5", None, True, 2j, [1.0]], ids=repr)
def test_gauge_refuses_non_numbers(private: MetricRegistry, value: Any) -> None:
    """A gauge value must be a real number: strings, None, bools, complex and lists are refused."""
    with pytest.raises(InputError, match="'value' must be a real number"):
        private.set_gauge("test.level", value)
    assert private.value("test.level") is None


def test_unknown_metric_is_refused(private: MetricRegistry) -> None:
    """A name missing from the catalogue is refused with a hint to declare it."""
    with pytest.raises(InputError, match=r"unknown metric 'test\.nope'"):
        private.set_gauge("test.nope", 1.0)
    assert private.snapshot() == {}


def test_metric_used_as_the_wrong_kind_is_refused(private: MetricRegistry) -> None:
    """A gauge cannot be incremented, a counter not set, a gauge not observed."""
    with pytest.raises(InputError, match="is a gauge, not a counter"):
        private.inc("test.level")
    with pytest.raises(InputError, match="is a counter, not a gauge"):
        private.set_gauge("test.events", 1.0)
    with pytest.raises(InputError, match="is a gauge, not a histogram"):
        private.observe("test.level", 1.0)


def test_histogram_buckets_count_values_at_or_below_each_bound(private: MetricRegistry) -> None:
    """Observations land in the first bucket whose bound they do not exceed (le semantics)."""
    for value in (0.05, 0.1, 0.5, 1.0, 3.0, 100.0, math.inf):
        private.observe("test.latency", value)
    families = parse_prometheus(private.to_prometheus())
    buckets = {s.labels["le"]: s.value for s in families["test_latency_seconds"].samples if s.name.endswith("_bucket")}
    assert buckets == {"0.1": 2.0, "1.0": 4.0, "10.0": 5.0, "+Inf": 7.0}


def test_histogram_refuses_nan(private: MetricRegistry) -> None:
    """A NaN observation fits no bucket; it is refused rather than miscounted."""
    with pytest.raises(InputError, match="must not be NaN"):
        private.observe("test.latency", math.nan)
    assert private.snapshot() == {}


def test_snapshot_lists_counters_gauges_and_histogram_totals(private: MetricRegistry) -> None:
    """A snapshot maps names to values, a histogram as .count and .sum, sorted by name."""
    private.set_gauge("test.level", 2.0)
    private.inc("test.events", 3)
    private.observe("test.latency", 0.25)
    private.observe("test.latency", 0.5)
    snapshot = private.snapshot()
    assert snapshot == {
        "test.events": 3.0,
        "test.latency.count": 2.0,
        "test.latency.sum": 0.75,
        "test.level": 2.0,
    }
    assert list(snapshot) == sorted(snapshot)


def test_reset_forgets_values_but_not_declarations(private: MetricRegistry) -> None:
    """After reset the registry is empty and still accepts the declared metrics."""
    private.set_gauge("test.level", 1.0)
    private.observe("test.latency", 1.0)
    private.reset()
    assert private.snapshot() == {}
    private.inc("test.events")
    assert private.value("test.events") == 1.0


def test_snapshot_all_reads_the_default_registry(fresh_default: MetricRegistry) -> None:
    """snapshot_all is the default registry's kind-and-value snapshot; snapshot_values its float snapshot."""
    assert default_registry() is fresh_default
    default_registry().set_gauge(f"{PREFIX}.pred_l2_mean", 0.123456789)
    assert snapshot_all()[f"{PREFIX}.pred_l2_mean"] == {"kind": "gauge", "value": 0.123456789}
    assert snapshot_all() == default_registry().snapshot_all()
    assert snapshot_values()[f"{PREFIX}.pred_l2_mean"] == 0.123456789
    assert snapshot_values() == default_registry().snapshot()


def test_snapshot_all_of_a_registry_agrees_with_its_float_snapshot(private: MetricRegistry) -> None:
    """Each kind's entry carries the value the float snapshot shows (a histogram's sum and count)."""
    private.set_gauge("test.level", 2.0)
    private.inc("test.events", 3)
    for value in (0.05, 0.5, 5.0, 50.0):
        private.observe("test.latency", value)
    entries, floats = private.snapshot_all(), private.snapshot()
    assert list(entries) == ["test.events", "test.latency", "test.level"]
    assert entries["test.events"] == {"kind": "counter", "value": floats["test.events"]}
    assert entries["test.level"] == {"kind": "gauge", "value": floats["test.level"]}
    histogram = entries["test.latency"]
    assert histogram["kind"] == "histogram"
    assert histogram["value"] == {
        "buckets": [0.1, 1.0, 10.0, math.inf],
        "counts": [1, 2, 3, 4],
        "sum": floats["test.latency.sum"],
        "count": int(floats["test.latency.count"]),
    }


def test_histogram_state_is_read_without_changing_it(private: MetricRegistry) -> None:
    """histogram() reads zeros before any observation and refuses a metric of another kind."""
    assert private.histogram("test.latency") == {
        "buckets": [0.1, 1.0, 10.0, math.inf],
        "counts": [0, 0, 0, 0],
        "sum": 0.0,
        "count": 0,
    }
    assert private.snapshot() == {}
    with pytest.raises(InputError, match="is a gauge, not a histogram"):
        private.histogram("test.level")


def test_adding_to_a_gauge_counts_from_zero(private: MetricRegistry) -> None:
    """add_to_gauge adds or subtracts from the current value, from 0.0 when unset."""
    private.add_to_gauge("test.level", 2.5)
    private.add_to_gauge("test.level", 1, subtract=True)
    private.add_to_gauge("test.level", -3)
    assert private.value("test.level") == -1.5
    with pytest.raises(InputError, match="is a counter, not a gauge"):
        private.add_to_gauge("test.events", 1.0)
    assert private.value("test.events") is None


def test_resetting_one_metric_forgets_it_alone(private: MetricRegistry) -> None:
    """reset(name) forgets that metric's value only; an undeclared name is refused."""
    private.set_gauge("test.level", 1.0)
    private.inc("test.events")
    private.observe("test.latency", 1.0)
    private.reset("test.latency")
    private.reset("test.level")
    private.reset("test.total_total")  # declared, never set: nothing to forget
    assert private.snapshot() == {"test.events": 1.0}
    with pytest.raises(InputError, match=r"unknown metric 'test\.nope'"):
        private.reset("test.nope")
    assert private.snapshot() == {"test.events": 1.0}


def test_registry_built_without_catalogue_sees_later_declarations() -> None:
    """A registry over the global catalogue accepts metrics declared after it was built."""
    registry = MetricRegistry()
    declare_metric(MetricSpec("tests.registry.late_gauge", "gauge", "1", "Declared after the registry."))
    registry.set_gauge("tests.registry.late_gauge", 4.0)
    assert registry.value("tests.registry.late_gauge") == 4.0


# -------------------------------------------------------------- thread safety
def test_concurrent_increments_lose_nothing(private: MetricRegistry) -> None:
    """Many threads incrementing one counter and observing one histogram give exact totals."""
    threads, per_thread = 8, 2000
    start = threading.Barrier(threads)

    def work() -> None:
        start.wait()
        for _ in range(per_thread):
            private.inc("test.events")
            private.observe("test.latency", 0.5)

    switch_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible, to expose races
    try:
        workers = [threading.Thread(target=work) for _ in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
    finally:
        sys.setswitchinterval(switch_interval)
    snapshot = private.snapshot()
    assert snapshot["test.events"] == threads * per_thread
    assert snapshot["test.latency.count"] == threads * per_thread
    assert snapshot["test.latency.sum"] == 0.5 * threads * per_thread


# ----------------------------------------------------------------- exposition
def test_prometheus_names_are_sanitized() -> None:
    """Dots become underscores; counters end in _total; a seconds unit is named once."""
    assert prometheus_name(SPECS["test.events"]) == "test_events_total"
    assert prometheus_name(SPECS["test.total_total"]) == "test_total_total"
    assert prometheus_name(SPECS["test.latency"]) == "test_latency_seconds"
    assert prometheus_name(SPECS["test.already_seconds"]) == "test_already_seconds"
    assert prometheus_name(CATALOGUE[f"{PREFIX}.alert"]) == "geno_lewm_training_collapse_alert_total"


def test_exposition_parses_back_with_prometheus_client(private: MetricRegistry) -> None:
    """HELP, TYPE and every value survive a round trip through prometheus_client's parser."""
    private.set_gauge("test.level", 1e300)
    private.inc("test.events", 4)
    private.observe("test.latency", 0.5)
    private.observe("test.latency", 20.0)
    text = private.to_prometheus()
    sample_names = [line.split("{")[0].split()[0] for line in text.splitlines() if not line.startswith("#")]
    assert all("." not in name for name in sample_names)
    families = parse_prometheus(text)
    assert set(families) == {"test_events", "test_level", "test_latency_seconds"}
    assert families["test_level"].type == "gauge"
    assert families["test_level"].documentation == SPECS["test.level"].summary
    assert [(s.name, s.value) for s in families["test_level"].samples] == [("test_level", 1e300)]
    assert families["test_events"].type == "counter"
    assert [(s.name, s.value) for s in families["test_events"].samples] == [("test_events_total", 4.0)]
    histogram = families["test_latency_seconds"]
    assert histogram.type == "histogram"
    samples = {(s.name, s.labels.get("le")): s.value for s in histogram.samples}
    assert samples == {
        ("test_latency_seconds_bucket", "0.1"): 0.0,
        ("test_latency_seconds_bucket", "1.0"): 1.0,
        ("test_latency_seconds_bucket", "10.0"): 1.0,
        ("test_latency_seconds_bucket", "+Inf"): 2.0,
        ("test_latency_seconds_sum", None): 20.5,
        ("test_latency_seconds_count", None): 2.0,
    }


def test_histogram_buckets_are_cumulative_and_end_at_the_count(private: MetricRegistry) -> None:
    """Bucket counts never decrease with the bound, and the +Inf bucket equals the count."""
    for value in (0.001, 0.2, 0.2, 2.0, 7.0, 50.0, 1e9):
        private.observe("test.latency", value)
    histogram = parse_prometheus(private.to_prometheus())["test_latency_seconds"]
    buckets = [s.value for s in histogram.samples if s.name.endswith("_bucket")]
    count = next(s.value for s in histogram.samples if s.name.endswith("_count"))
    assert buckets == sorted(buckets)
    assert buckets[-1] == count == 7.0


def test_nan_and_infinite_gauges_are_exposed_as_prometheus_spells_them(private: MetricRegistry) -> None:
    """NaN, +Inf and -Inf are written as Prometheus spells them and read back as such."""
    outcomes = []
    for value in (math.nan, math.inf, -math.inf):
        private.set_gauge("test.level", value)
        text = private.to_prometheus()
        (sample,) = parse_prometheus(text)["test_level"].samples
        outcomes.append((text.splitlines()[-1].split()[-1], sample.value))
    assert outcomes[0][0] == "NaN"
    assert math.isnan(outcomes[0][1])
    assert outcomes[1:] == [("+Inf", math.inf), ("-Inf", -math.inf)]


def test_empty_registry_exposes_nothing(private: MetricRegistry) -> None:
    """A registry without values writes an empty exposition."""
    assert private.to_prometheus() == ""
    assert parse_prometheus("") == {}


def test_collapse_metrics_round_trip_through_the_text_file(registry: MetricRegistry, tmp_path: Path) -> None:
    """The collapse gauges and counters written by a check are read back with their values."""
    for i, field in enumerate(METRIC_NAMES):
        registry.set_gauge(metric_name(field), i / 8)
    registry.inc(f"{PREFIX}.alert", 2)
    path = export_prometheus_textfile(tmp_path / "collapse.prom", registry=registry)
    families = parse_prometheus(path.read_text(encoding="utf-8"))
    for i, field in enumerate(METRIC_NAMES):
        (sample,) = families[f"geno_lewm_training_collapse_{field}"].samples
        assert sample.value == i / 8
    assert families["geno_lewm_training_collapse_alert"].samples[0].value == 2.0


# -------------------------------------------------------------- atomic writing
def test_export_replaces_the_old_file_and_leaves_no_temporary(private: MetricRegistry, tmp_path: Path) -> None:
    """Exporting over an existing file replaces its content; only the target remains in the folder."""
    path = tmp_path / "metrics.prom"
    path.write_text("stale content\n", encoding="utf-8")
    private.set_gauge("test.level", 1.0)
    assert private.export_prometheus_textfile(path) == path
    private.set_gauge("test.level", 2.0)
    private.export_prometheus_textfile(str(path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.prom"]
    assert path.read_text(encoding="utf-8") == private.to_prometheus()
    assert parse_prometheus(path.read_text(encoding="utf-8"))["test_level"].samples[0].value == 2.0


def test_export_replaces_the_directory_entry(private: MetricRegistry, tmp_path: Path) -> None:
    """The file is replaced by a new inode (a reader holding the old one sees a complete old file)."""
    path = tmp_path / "metrics.prom"
    private.set_gauge("test.level", 1.0)
    private.export_prometheus_textfile(path)
    with path.open(encoding="utf-8") as reader:
        old_text = private.to_prometheus()
        private.set_gauge("test.level", 2.0)
        private.export_prometheus_textfile(path)
        assert reader.read() == old_text
    assert path.read_text(encoding="utf-8") == private.to_prometheus()


def test_export_creates_missing_folders(private: MetricRegistry, tmp_path: Path) -> None:
    """The target's parent folders are created when missing."""
    private.inc("test.events")
    path = private.export_prometheus_textfile(tmp_path / "a" / "b" / "m.prom")
    assert path.read_text(encoding="utf-8") == private.to_prometheus()


def test_failed_export_leaves_no_temporary(
    private: MetricRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the final rename fails, the temporary file is removed and the old file stays whole."""
    target = tmp_path / "metrics.prom"
    target.write_text("old\n")
    private.inc("test.events")

    def refuse(source: object, destination: object) -> None:
        raise PermissionError(13, "Permission denied", str(destination))

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OSError):
        private.export_prometheus_textfile(target)
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.prom"]
    assert target.read_text() == "old\n"


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_exported_file_is_readable_by_other_users(private: MetricRegistry, tmp_path: Path) -> None:
    """The file is world-readable, so a collector running as another user can read it."""
    private.inc("test.events")
    mode = private.export_prometheus_textfile(tmp_path / "m.prom").stat().st_mode
    assert mode & stat.S_IRGRP
    assert mode & stat.S_IROTH


def test_module_level_export_uses_the_default_registry(fresh_default: MetricRegistry, tmp_path: Path) -> None:
    """export_prometheus_textfile without a registry writes the default registry."""
    default_registry().set_gauge(f"{PREFIX}.pred_cos_mean", 0.375)
    path = export_prometheus_textfile(tmp_path / "default.prom")
    (sample,) = parse_prometheus(path.read_text(encoding="utf-8"))["geno_lewm_training_collapse_pred_cos_mean"].samples
    assert sample.value == 0.375


def test_metrics_module_examples_hold() -> None:
    """The examples in the registry module's docstrings run as written."""
    result = doctest.testmod(metrics_module)
    assert result.attempted > 0
    assert result.failed == 0
