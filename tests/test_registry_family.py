"""The GenoLeWM family's names over the registry: METRICS, the cached handles of
get_counter / get_gauge / get_histogram, snapshot_all's shape, metrics_path and the default
Prometheus text file. Every test runs against a fresh default registry, so the process's
own is left as it was found.
"""

from __future__ import annotations

import math
import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import parse_prometheus

from geno_lewm.errors import InputError
from geno_lewm.metrics import (
    CATALOGUE,
    DEFAULT_BYTES_BUCKETS,
    DEFAULT_MILLISECONDS_BUCKETS,
    DEFAULT_SECONDS_BUCKETS,
    METRICS,
    Counter,
    Gauge,
    Histogram,
    MetricRegistry,
    MetricSpec,
    declare_metric,
    declare_metrics,
    default_registry,
    export_prometheus_textfile,
    get_counter,
    get_gauge,
    get_histogram,
    metrics_path,
    prometheus_name,
    snapshot_all,
    snapshot_values,
)

REQUESTS = "tests.family.requests"
DEPTH = "tests.family.depth"
STEP_MS = "tests.family.step_ms"
PAYLOAD = "tests.family.payload"
WAIT = "tests.family.wait"
WAIT_BOUNDS = (0.5, 2.0, 8.0)

declare_metrics(
    (
        MetricSpec(REQUESTS, "counter", "1", "Requests served."),
        MetricSpec(DEPTH, "gauge", "1", "Items waiting."),
        MetricSpec(STEP_MS, "histogram", "ms", "Time of one step."),
        MetricSpec(PAYLOAD, "histogram", "bytes", "Size of one payload."),
        MetricSpec(WAIT, "histogram", "seconds", "Time waited.", buckets=WAIT_BOUNDS),
    )
)

ACCESSORS: dict[str, Callable[[str], Any]] = {"counter": get_counter, "gauge": get_gauge, "histogram": get_histogram}
DECLARED = {"counter": REQUESTS, "gauge": DEPTH, "histogram": WAIT}


@pytest.fixture(autouse=True)
def default(fresh_default: MetricRegistry) -> MetricRegistry:
    """Every test here runs over a fresh default registry (conftest's ``fresh_default``)."""
    return fresh_default


def exported_value(text: str, name: str) -> float:
    """The single sample of counter or gauge ``name`` in exposition ``text``."""
    family = prometheus_name(CATALOGUE[name]).removesuffix("_total")
    (sample,) = parse_prometheus(text)[family].samples
    return float(sample.value)


# ------------------------------------------------------------------ METRICS
def test_metrics_is_the_catalogue_seen_read_only() -> None:
    """METRICS holds exactly CATALOGUE's specs, later declarations included, and refuses writes."""
    assert dict(METRICS) == CATALOGUE
    assert METRICS[DEPTH] is CATALOGUE[DEPTH]
    late = declare_metric(MetricSpec("tests.family.declared_late", "gauge", "1", "Declared after import."))
    assert METRICS[late.name] is late
    with pytest.raises(TypeError):
        METRICS["tests.family.sneaked_in"] = late  # type: ignore[index]
    assert "tests.family.sneaked_in" not in CATALOGUE
    assert isinstance(CATALOGUE, dict)


# ------------------------------------------------------------------ handles
@pytest.mark.parametrize("kind", ["counter", "gauge", "histogram"])
def test_accessors_return_one_cached_handle_per_name(kind: str) -> None:
    """Asking twice for one name gives the same object, of the kind's class, naming the metric."""
    accessor, name = ACCESSORS[kind], DECLARED[kind]
    handle = accessor(name)
    assert accessor(name) is handle
    assert type(handle) is {"counter": Counter, "gauge": Gauge, "histogram": Histogram}[kind]
    assert handle.name == name
    assert name in repr(handle)


def test_different_names_get_different_handles() -> None:
    """Two histograms get two handles, each updating its own metric."""
    wait, step = get_histogram(WAIT), get_histogram(STEP_MS)
    assert wait is not step
    wait.observe(1.0)
    assert wait.snapshot()["count"] == 1
    assert step.snapshot()["count"] == 0


def test_threads_asking_at_once_get_one_handle() -> None:
    """Concurrent first calls for one name all receive the same handle."""
    threads = 8
    start = threading.Barrier(threads)
    found: list[Gauge] = []

    def ask() -> None:
        start.wait()
        found.append(get_gauge(DEPTH))

    workers = [threading.Thread(target=ask) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert len(found) == threads
    assert all(handle is found[0] for handle in found)


def test_a_gauge_set_through_its_handle_is_what_the_registry_and_export_show(default: MetricRegistry) -> None:
    """A value set with get_gauge is the default registry's value and the exported sample."""
    get_gauge(DEPTH).set(2.75)
    assert default_registry() is default
    assert default_registry().value(DEPTH) == 2.75
    assert exported_value(default_registry().to_prometheus(), DEPTH) == 2.75


def test_the_handles_read_what_the_registry_was_given() -> None:
    """Values written through the default registry are what the handles read."""
    default_registry().set_gauge(DEPTH, -4)
    default_registry().inc(REQUESTS, 3)
    default_registry().observe(WAIT, 1.5)
    assert get_gauge(DEPTH).value() == -4.0
    assert get_counter(REQUESTS).value() == 3.0
    assert get_histogram(WAIT).snapshot()["sum"] == 1.5


def test_counter_increments_reads_and_resets() -> None:
    """A counter reads 0.0 untouched, adds 1 by default or the amount, and reset starts it over."""
    requests = get_counter(REQUESTS)
    assert requests.value() == 0.0
    requests.inc()
    requests.inc(2.5)
    assert requests.value() == 3.5
    requests.reset()
    assert requests.value() == 0.0
    assert REQUESTS not in snapshot_all()
    requests.inc()
    assert requests.value() == 1.0


@pytest.mark.parametrize("amount", [-1.0, math.nan, math.inf, "1", True], ids=repr)
def test_counter_handle_keeps_the_registry_checks(amount: Any) -> None:
    """A handle's increment is checked as the registry's: bad amounts are refused and change nothing."""
    requests = get_counter(REQUESTS)
    requests.inc(2)
    with pytest.raises(InputError, match="'amount' must be"):
        requests.inc(amount)
    assert requests.value() == 2.0


def test_counter_handle_refuses_to_overflow() -> None:
    """An increment that would make the total infinite is refused; the total stays finite."""
    requests = get_counter(REQUESTS)
    requests.inc(1e308)
    with pytest.raises(InputError, match="finite"):
        requests.inc(1e308)
    assert requests.value() == 1e308


def test_gauge_sets_moves_reads_and_resets() -> None:
    """A gauge reads None unset, counts inc/dec from zero, set replaces it, reset unsets it."""
    depth = get_gauge(DEPTH)
    assert depth.value() is None
    depth.inc()
    assert depth.value() == 1.0
    depth.dec(3)
    assert depth.value() == -2.0
    depth.inc(0.5)
    assert depth.value() == -1.5
    depth.set(7)
    assert depth.value() == 7.0
    depth.reset()
    assert depth.value() is None
    assert DEPTH not in snapshot_values()


@pytest.mark.parametrize("amount", [math.nan, math.inf, -math.inf, "1", None, False], ids=repr)
@pytest.mark.parametrize("move", ["inc", "dec"])
def test_gauge_moves_refuse_what_is_not_a_finite_number(move: str, amount: Any) -> None:
    """A gauge's inc and dec take a finite real amount; anything else is refused and the value stays."""
    depth = get_gauge(DEPTH)
    depth.set(1.0)
    with pytest.raises(InputError, match="'amount' must be") as info:
        getattr(depth, move)(amount)
    assert info.value.details["field"] == "amount"
    assert depth.value() == 1.0


def test_gauge_moves_refuse_to_overflow_but_keep_explicit_infinities() -> None:
    """inc/dec cannot take a finite gauge to an infinity; a gauge set to inf or NaN stays so."""
    depth = get_gauge(DEPTH)
    depth.set(-1e308)
    with pytest.raises(InputError, match="finite"):
        depth.dec(1e308)
    assert depth.value() == -1e308
    depth.set(math.inf)
    depth.dec(5)
    assert depth.value() == math.inf
    depth.set(math.nan)
    depth.inc()
    assert math.isnan(depth.value() or 0.0)


def test_histogram_snapshot_counts_match_a_plain_count() -> None:
    """Cumulative counts equal, per bound, the number of observations at or below it; sum and count agree."""
    observations = [0.25, 0.5, 0.75, 2.0, 2.0, 3.0, 8.0, 9.5, 100.0, -1.0]
    wait = get_histogram(WAIT)
    for value in observations:
        wait.observe(value)
    snapshot = wait.snapshot()
    assert snapshot["buckets"] == [*WAIT_BOUNDS, math.inf]
    assert snapshot["counts"] == [sum(1 for v in observations if v <= bound) for bound in snapshot["buckets"]]
    assert snapshot["counts"] == sorted(snapshot["counts"])
    assert snapshot["counts"][-1] == snapshot["count"] == len(observations)
    assert snapshot["sum"] == math.fsum(observations)


def test_histogram_snapshot_matches_the_export() -> None:
    """The handle's buckets and counts are the exported _bucket samples; sum and count the same."""
    wait = get_histogram(WAIT)
    for value in (0.1, 1.0, 1.0, 50.0):
        wait.observe(value)
    snapshot = wait.snapshot()
    family = parse_prometheus(default_registry().to_prometheus())[prometheus_name(CATALOGUE[WAIT])]
    exported = {(s.name.rsplit("_", 1)[-1], s.labels.get("le")): s.value for s in family.samples}
    for bound, count in zip(snapshot["buckets"], snapshot["counts"]):
        label = "+Inf" if math.isinf(bound) else repr(bound)
        assert exported[("bucket", label)] == count
    assert exported[("sum", None)] == snapshot["sum"]
    assert exported[("count", None)] == snapshot["count"]


def test_histogram_reset_and_untouched_snapshot_are_empty() -> None:
    """An unobserved or reset histogram snapshots its buckets with zero counts, sum and count."""
    wait = get_histogram(WAIT)
    empty = wait.snapshot()
    wait.observe(1.0)
    wait.reset()
    assert wait.snapshot() == empty
    assert empty["counts"] == [0] * (len(WAIT_BOUNDS) + 1)
    assert (empty["sum"], empty["count"]) == (0.0, 0)
    assert WAIT not in snapshot_all()


def test_histogram_handle_refuses_nan() -> None:
    """A NaN observation is refused and counted nowhere."""
    wait = get_histogram(WAIT)
    with pytest.raises(InputError, match="NaN"):
        wait.observe(math.nan)
    assert wait.snapshot()["count"] == 0


def test_resetting_one_metric_leaves_the_others() -> None:
    """A handle's reset forgets its own metric only."""
    get_counter(REQUESTS).inc(4)
    get_gauge(DEPTH).set(1.0)
    get_histogram(WAIT).observe(1.0)
    get_gauge(DEPTH).reset()
    assert set(snapshot_all()) == {REQUESTS, WAIT}
    assert get_counter(REQUESTS).value() == 4.0


# ------------------------------------------------------------------- refusals
@pytest.mark.parametrize("kind", ["counter", "gauge", "histogram"])
def test_an_undeclared_name_is_refused_naming_it(kind: str) -> None:
    """An unknown name raises InputError that names it, with details for programs."""
    with pytest.raises(InputError) as info:
        ACCESSORS[kind]("tests.family.never_declared")
    message = str(info.value)
    assert message.startswith(f"'name' must be a declared {kind}: got 'tests.family.never_declared'")
    assert "not declared" in message
    assert info.value.details["field"] == "name"
    assert info.value.details["value"] == "tests.family.never_declared"
    assert info.value.details["kind"] is None


@pytest.mark.parametrize(
    ("kind", "name", "actual"),
    [
        ("gauge", REQUESTS, "counter"),
        ("counter", DEPTH, "gauge"),
        ("histogram", DEPTH, "gauge"),
        ("gauge", WAIT, "histogram"),
    ],
)
def test_a_name_of_another_kind_is_refused_naming_both_kinds(kind: str, name: str, actual: str) -> None:
    """get_gauge on a counter (and the like) raises InputError naming the name and what it is."""
    with pytest.raises(InputError) as info:
        ACCESSORS[kind](name)
    assert str(info.value) == f"'name' must be a declared {kind}: got {name!r} (a {actual})"
    assert dict(info.value.details) == {"field": "name", "value": name, "expected": kind, "kind": actual}


def test_a_near_miss_suggests_the_declared_name() -> None:
    """A misspelt name is refused with the closest declared metric of the asked kind."""
    with pytest.raises(InputError, match=rf"did you mean {DEPTH!r}\?"):
        get_gauge("tests.family.dpeth")


@pytest.mark.parametrize("name", [None, 3, b"tests.family.depth"], ids=repr)
def test_a_name_that_is_not_a_string_is_refused(name: Any) -> None:
    """Only strings name metrics; anything else is an InputError, not a TypeError."""
    with pytest.raises(InputError, match="not a string") as info:
        get_gauge(name)
    assert info.value.details["field"] == "name"


# ------------------------------------------------------------------ snapshots
def test_snapshot_all_gives_every_kind_its_shape() -> None:
    """Counters and gauges map to {"kind", float value}; histograms to their snapshot dict."""
    get_counter(REQUESTS).inc(2)
    get_gauge(DEPTH).set(0.5)
    get_histogram(WAIT).observe(1.0)
    snapshot = snapshot_all()
    assert snapshot[REQUESTS] == {"kind": "counter", "value": 2.0}
    assert snapshot[DEPTH] == {"kind": "gauge", "value": 0.5}
    assert snapshot[WAIT] == {"kind": "histogram", "value": get_histogram(WAIT).snapshot()}
    assert set(snapshot[WAIT]["value"]) == {"buckets", "counts", "sum", "count"}  # type: ignore[arg-type]
    assert all(type(entry["value"]) is float for entry in snapshot.values() if entry["kind"] != "histogram")
    assert list(snapshot) == sorted(snapshot)


def test_snapshot_all_leaves_out_what_was_never_updated() -> None:
    """An empty registry snapshots to {}; a gauge that was never set does not appear."""
    assert snapshot_all() == {}
    get_counter(REQUESTS).inc()
    assert set(snapshot_all()) == {REQUESTS}


def test_snapshot_values_is_the_flat_float_view() -> None:
    """snapshot_values maps names to floats, a histogram as .count and .sum, as the registry's snapshot."""
    get_counter(REQUESTS).inc(3)
    get_gauge(DEPTH).set(-1)
    get_histogram(WAIT).observe(0.25)
    get_histogram(WAIT).observe(4.0)
    values = snapshot_values()
    assert values == default_registry().snapshot()
    assert values == {REQUESTS: 3.0, DEPTH: -1.0, f"{WAIT}.count": 2.0, f"{WAIT}.sum": 4.25}


def test_snapshots_of_another_registry() -> None:
    """snapshot_all and snapshot_values read a given registry instead of the default."""
    other = MetricRegistry()
    other.set_gauge(DEPTH, 9.0)
    assert snapshot_all(registry=other) == {DEPTH: {"kind": "gauge", "value": 9.0}}
    assert snapshot_values(registry=other) == {DEPTH: 9.0}
    assert snapshot_all() == {}


# ------------------------------------------------------------- default buckets
def test_a_milliseconds_histogram_gets_the_milliseconds_ladder() -> None:
    """Declared in ms without buckets: 1 ms up to one minute, increasing; the snapshot shows them."""
    bounds = CATALOGUE[STEP_MS].buckets
    assert bounds == DEFAULT_MILLISECONDS_BUCKETS
    assert (bounds[0], bounds[-1]) == (1.0, 60_000.0)
    assert list(bounds) == sorted(set(bounds))
    assert get_histogram(STEP_MS).snapshot()["buckets"] == [*bounds, math.inf]


def test_a_bytes_histogram_gets_the_bytes_ladder() -> None:
    """Declared in bytes without buckets: powers of two from 1 KiB to 1 GiB, increasing."""
    bounds = CATALOGUE[PAYLOAD].buckets
    assert bounds == DEFAULT_BYTES_BUCKETS
    assert (bounds[0], bounds[-1]) == (2.0**10, 2.0**30)
    assert all(math.log2(bound).is_integer() for bound in bounds)
    assert list(bounds) == sorted(set(bounds))


@pytest.mark.parametrize(("unit", "ladder"), [("milliseconds", "ms"), ("By", "bytes"), ("B", "bytes"), ("1", "s")])
def test_other_spellings_of_a_unit_get_its_ladder(unit: str, ladder: str) -> None:
    """Unit spellings pick the ladder; a unit that is neither time in ms nor bytes keeps the seconds one."""
    expected = {"ms": DEFAULT_MILLISECONDS_BUCKETS, "bytes": DEFAULT_BYTES_BUCKETS, "s": DEFAULT_SECONDS_BUCKETS}
    assert MetricSpec("tests.family.spelling", "histogram", unit, "s").buckets == expected[ladder]


def test_declared_buckets_are_kept() -> None:
    """A histogram declared with buckets keeps them whatever its unit; the package's timing keeps seconds."""
    assert CATALOGUE[WAIT].buckets == WAIT_BOUNDS
    assert MetricSpec("tests.family.own", "histogram", "ms", "s", buckets=(3, 30)).buckets == (3.0, 30.0)
    timing = CATALOGUE.get("geno_lewm.training.collapse.compute_seconds")
    if timing is not None:
        assert timing.buckets == DEFAULT_SECONDS_BUCKETS


# ---------------------------------------------------------------- text file
def test_metrics_path_follows_the_environment_variable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """With GENO_LEWM_LOG_DIR set, the file is metrics.prom inside it, read at each call."""
    monkeypatch.setenv("GENO_LEWM_LOG_DIR", str(tmp_path / "one"))
    assert metrics_path() == tmp_path / "one" / "metrics.prom"
    monkeypatch.setenv("GENO_LEWM_LOG_DIR", str(tmp_path / "two"))
    assert metrics_path() == tmp_path / "two" / "metrics.prom"


@pytest.mark.parametrize("unset", [True, False], ids=["unset", "empty"])
def test_metrics_path_defaults_under_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, unset: bool) -> None:
    """Without the variable (or with it empty), the file is ~/.geno-lewm/logs/metrics.prom."""
    if unset:
        monkeypatch.delenv("GENO_LEWM_LOG_DIR", raising=False)
    else:
        monkeypatch.setenv("GENO_LEWM_LOG_DIR", "")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert metrics_path() == tmp_path / ".geno-lewm" / "logs" / "metrics.prom"


def test_metrics_path_of_a_given_directory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A given directory wins over the variable; ~ in it is the home directory."""
    monkeypatch.setenv("GENO_LEWM_LOG_DIR", str(tmp_path / "ignored"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert metrics_path(tmp_path / "run") == tmp_path / "run" / "metrics.prom"
    assert metrics_path(str(tmp_path / "run")) == tmp_path / "run" / "metrics.prom"
    assert metrics_path("~/runs") == tmp_path / "home" / "runs" / "metrics.prom"
    with pytest.raises(InputError, match="'log_dir' must be a path: got int"):
        metrics_path(3)  # type: ignore[arg-type]


def test_export_writes_the_default_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Without a path, the default registry is written to metrics_path(), folders created, and parses back."""
    monkeypatch.setenv("GENO_LEWM_LOG_DIR", str(tmp_path / "logs"))
    get_gauge(DEPTH).set(1.25)
    get_counter(REQUESTS).inc(5)
    written = export_prometheus_textfile()
    assert written == metrics_path() == tmp_path / "logs" / "metrics.prom"
    text = written.read_text(encoding="utf-8")
    assert exported_value(text, DEPTH) == 1.25
    assert exported_value(text, REQUESTS) == 5.0


def test_export_of_another_registry_to_the_default_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """registry= writes that registry, still to the default path when none is given."""
    monkeypatch.setenv("GENO_LEWM_LOG_DIR", str(tmp_path))
    other = MetricRegistry()
    other.set_gauge(DEPTH, 6.0)
    get_gauge(DEPTH).set(1.0)
    written = export_prometheus_textfile(registry=other)
    assert written == tmp_path / "metrics.prom"
    assert exported_value(written.read_text(encoding="utf-8"), DEPTH) == 6.0


@pytest.mark.parametrize("failing", ["replace", "fsync"])
def test_a_failed_export_leaves_the_old_file_whole(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, failing: str
) -> None:
    """When writing or renaming fails, the previous file keeps its content and no temporary remains."""
    monkeypatch.setenv("GENO_LEWM_LOG_DIR", str(tmp_path))
    get_gauge(DEPTH).set(1.0)
    old_text = export_prometheus_textfile().read_text(encoding="utf-8")
    get_gauge(DEPTH).set(2.0)

    def broken(*args: Any, **kwargs: Any) -> None:
        raise OSError(f"{failing} failed")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(os, failing, broken)
        with pytest.raises(OSError, match=f"{failing} failed"):
            export_prometheus_textfile()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.prom"]
    assert (tmp_path / "metrics.prom").read_text(encoding="utf-8") == old_text
    assert exported_value(old_text, DEPTH) == 1.0


# ------------------------------------------------------------- thread safety
def test_handles_lose_no_update_under_contention() -> None:
    """Counter increments, gauge inc/dec and observations from many threads give exact totals."""
    threads, per_thread = 8, 1500
    start = threading.Barrier(threads)

    def work(index: int) -> None:
        requests, depth, wait = get_counter(REQUESTS), get_gauge(DEPTH), get_histogram(WAIT)
        start.wait()
        for _ in range(per_thread):
            requests.inc()
            if index % 2:
                depth.inc(2)
            else:
                depth.dec()
            wait.observe(1.0)

    switch_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible, to expose races
    try:
        workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
    finally:
        sys.setswitchinterval(switch_interval)
    ups = sum(1 for i in range(threads) if i % 2)
    assert get_counter(REQUESTS).value() == threads * per_thread
    assert get_gauge(DEPTH).value() == per_thread * (2 * ups - (threads - ups))
    assert get_histogram(WAIT).snapshot()["count"] == threads * per_thread
