"""The registry's Prometheus names are unique and its sums stay finite: metrics whose exported
names would collide are refused at declaration, and counters and histograms refuse the update
that would overflow; the export is read back with prometheus_client's own parser.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Callable, Iterable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import geno_lewm.training.collapse  # noqa: F401  declares the package's collapse metrics
from geno_lewm.errors import InputError
from geno_lewm.metrics import CATALOGUE, MetricKind, MetricRegistry, MetricSpec, declare_metric

prometheus_parse: Callable[[str], Iterable[Any]] | None
try:
    from prometheus_client.parser import text_string_to_metric_families as prometheus_parse
except ImportError:  # a test extra; without it the export is checked by read_export below only
    prometheus_parse = None

KL_REG = "geno_lewm.training.collapse.kl_reg"
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
_SERIAL = itertools.count()


def unique_prefix() -> str:
    """A dotted prefix no other test uses, for declarations in the process-wide catalogue."""
    return f"tests.collisions.n{next(_SERIAL)}"


def spec(name: str, kind: MetricKind = "gauge", unit: str = "1") -> MetricSpec:
    """A spec with a summary that says what it is."""
    return MetricSpec(name, kind, unit, f"A {kind} in {unit} for the collision tests.")


def give_value(registry: MetricRegistry, metric: MetricSpec) -> None:
    """Give ``metric`` a value in ``registry``, so the export writes it."""
    if metric.kind == "counter":
        registry.inc(metric.name)
    elif metric.kind == "gauge":
        registry.set_gauge(metric.name, 1.0)
    else:
        registry.observe(metric.name, 0.5)


def read_export(text: str) -> dict[str, tuple[str, list[str]]]:
    """Parse exposition text strictly: family name -> (type, sample names), failing the test on
    a duplicated ``# TYPE`` name or a sample that belongs to no family or to more than one.
    """
    families: dict[str, tuple[str, list[str]]] = {}
    current: str | None = None
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert name not in families, f"two # TYPE lines for {name!r}"
            families[name] = (kind, [])
            current = name
        elif line and not line.startswith("#"):
            assert current is not None, f"a sample before any # TYPE line: {line!r}"
            families[current][1].append(re.split(r"[{ ]", line, maxsplit=1)[0])
    allowed = {
        family: {family + suffix for suffix in HISTOGRAM_SUFFIXES} if kind == "histogram" else {family}
        for family, (kind, _) in families.items()
    }
    for family, (_, samples) in families.items():
        for sample in samples:
            owners = [other for other, names in allowed.items() if sample in names]
            assert owners == [family], f"sample {sample!r} belongs to {owners}, written under {family!r}"
    return families


def parse_with_prometheus_client(text: str) -> list[Any]:
    """prometheus_client's families of ``text`` (its parser must raise nothing); [] without it."""
    if prometheus_parse is None:
        return []
    return list(prometheus_parse(text))


def check_export(registry: MetricRegistry) -> dict[str, tuple[str, list[str]]]:
    """Export ``registry`` and check it: unique names, parseable, one parsed family per family."""
    text = registry.to_prometheus()
    families = read_export(text)
    parsed = [family.name for family in parse_with_prometheus_client(text)]
    assert len(parsed) == len(set(parsed)), f"prometheus_client reads duplicated families: {parsed}"
    if prometheus_parse is not None:
        assert len(parsed) == len(families)
    return families


def names_alone(metric: MetricSpec) -> set[str]:
    """Every name the export of ``metric`` alone uses: ``# TYPE`` names, sample names, and the
    family name a reader gives a counter (the ``# TYPE`` name without ``_total``).
    """
    registry = MetricRegistry({metric.name: metric})
    give_value(registry, metric)
    names: set[str] = set()
    for family, (kind, samples) in read_export(registry.to_prometheus()).items():
        names |= {family, *samples}
        if kind == "counter":
            names.add(family.removesuffix("_total"))
    return names


def collision_message(first: str, second: str, series: str) -> str:
    """A pattern for the refusal naming both metrics and the colliding exported name."""
    return rf"{re.escape(repr(second))}.*{re.escape(repr(first))}.*{re.escape(repr(series))}"


# ----------------------------------------------------------------- reproductions
COLLIDING_PAIRS = [
    pytest.param(("x.y", "gauge", "1"), ("x_y", "gauge", "1"), "x_y", id="dot-vs-underscore"),
    pytest.param(("c", "counter", "1"), ("c_total", "gauge", "1"), "c_total", id="counter-vs-its-total"),
    pytest.param(("c", "counter", "1"), ("c_total", "counter", "1"), "c_total", id="two-counters-one-total"),
    pytest.param(("h", "histogram", "1"), ("h_sum", "gauge", "1"), "h_sum", id="histogram-vs-its-sum"),
    pytest.param(("h", "histogram", "1"), ("h_count", "gauge", "1"), "h_count", id="histogram-vs-its-count"),
    pytest.param(("h", "histogram", "1"), ("h_bucket", "gauge", "1"), "h_bucket", id="histogram-vs-its-buckets"),
    pytest.param(("d", "gauge", "seconds"), ("d_seconds", "gauge", "1"), "d_seconds", id="unit-suffix"),
    pytest.param(("h_sum", "gauge", "1"), ("h", "histogram", "1"), "h_sum", id="histogram-after-its-sum"),
    pytest.param(("m.k", "gauge", "1"), ("m_k", "counter", "1"), "m_k", id="gauge-vs-counter-family"),
]


def test_user_metric_spelled_like_a_package_metric_is_refused() -> None:
    """A user's geno_lewm_training_collapse_kl_reg is refused: the package's kl_reg exports that name."""
    user = MetricSpec("geno_lewm_training_collapse_kl_reg", "gauge", "nats", "The user's own KL term.")
    with pytest.raises(InputError, match=collision_message(KL_REG, user.name, "geno_lewm_training_collapse_kl_reg")):
        declare_metric(user)
    assert user.name not in CATALOGUE


@pytest.mark.parametrize(("first", "second", "series"), COLLIDING_PAIRS)
def test_declaring_a_metric_with_a_taken_exported_name_is_refused(
    first: tuple[str, MetricKind, str], second: tuple[str, MetricKind, str], series: str
) -> None:
    """declare_metric refuses a metric whose Prometheus series another declared metric exports."""
    prefix = unique_prefix()
    dotted, flat = f"{prefix}.", prefix.replace(".", "_") + "_"
    one, two = (spec(dotted + name, kind, unit) for name, kind, unit in (first, second))
    declare_metric(one)
    with pytest.raises(InputError, match=collision_message(one.name, two.name, flat + series)) as refused:
        declare_metric(two)
    assert refused.value.details["field"] == "name"
    assert two.name not in CATALOGUE
    assert CATALOGUE[one.name] == one


@pytest.mark.parametrize(("first", "second", "series"), COLLIDING_PAIRS)
def test_registry_refuses_a_catalogue_with_colliding_exported_names(
    first: tuple[str, MetricKind, str], second: tuple[str, MetricKind, str], series: str
) -> None:
    """A registry built over its own catalogue refuses two specs that would export one name."""
    one, two = (spec(name, kind, unit) for name, kind, unit in (first, second))
    with pytest.raises(InputError, match=collision_message(one.name, two.name, series)):
        MetricRegistry({one.name: one, two.name: two})


def test_counter_does_not_overflow_to_infinity() -> None:
    """A counter refuses the increment that would make it infinite, keeps its value and exports it finite."""
    counter = spec("big.counter", "counter")
    registry = MetricRegistry({counter.name: counter})
    registry.inc(counter.name, 1e308)
    with pytest.raises(InputError, match=r"counter 'big\.counter'.*not finite") as refused:
        registry.inc(counter.name, 1e308)
    assert refused.value.details["field"] == "amount"
    assert registry.value(counter.name) == 1e308
    assert registry.to_prometheus().splitlines()[-1] == "big_counter_total 1e+308"
    check_export(registry)


@pytest.mark.parametrize("value", [1e308, -1e308], ids=repr)
def test_histogram_sum_does_not_overflow_to_infinity(value: float) -> None:
    """A histogram refuses the finite observation that would make its sum infinite, counting nothing."""
    histogram = MetricSpec("big.histogram", "histogram", "1", "Large values.", buckets=(0.0,))
    registry = MetricRegistry({histogram.name: histogram})
    registry.observe(histogram.name, value)
    before = registry.to_prometheus()
    with pytest.raises(InputError, match=r"histogram 'big\.histogram'.*not finite"):
        registry.observe(histogram.name, value)
    assert registry.to_prometheus() == before
    assert registry.snapshot() == {"big.histogram.count": 1.0, "big.histogram.sum": value}
    assert f"big_histogram_sum {value!r}" in before


# ---------------------------------------------------------- what is left alone
def test_refused_declaration_changes_nothing(registry: MetricRegistry) -> None:
    """After a refused declaration the catalogue and the export are exactly what they were."""
    registry.set_gauge(KL_REG, 0.25)
    registry.inc("geno_lewm.training.collapse.checks")
    registry.observe("geno_lewm.training.collapse.compute_seconds", 0.003)
    catalogue, text = dict(CATALOGUE), registry.to_prometheus()
    intruder = spec("geno_lewm_training_collapse_checks", "counter")  # exports ..._checks_total too
    with pytest.raises(InputError, match="geno_lewm_training_collapse_checks_total"):
        declare_metric(intruder)
    assert catalogue == CATALOGUE
    assert registry.to_prometheus() == text
    with pytest.raises(InputError, match="unknown metric"):
        registry.inc(intruder.name)
    with pytest.raises(InputError, match="geno_lewm_training_collapse_checks_total"):
        declare_metric(intruder)  # refused again: the first refusal claimed nothing


def test_redeclaring_the_same_metric_still_works() -> None:
    """Declaring an already declared spec again returns it and changes nothing."""
    counter = declare_metric(spec(f"{unique_prefix()}.events", "counter"))
    catalogue = dict(CATALOGUE)
    assert declare_metric(spec(counter.name, "counter")) == counter
    assert declare_metric(CATALOGUE[KL_REG]) == CATALOGUE[KL_REG]
    assert catalogue == CATALOGUE


@pytest.mark.parametrize(
    ("first", "second"),
    [
        pytest.param(("x.y", "gauge", "1"), ("x.yy", "gauge", "1"), id="longer-name"),
        pytest.param(("c", "counter", "1"), ("c_totals", "gauge", "1"), id="not-quite-total"),
        pytest.param(("h", "histogram", "1"), ("h_summary", "gauge", "1"), id="not-quite-sum"),
        pytest.param(("d", "gauge", "1"), ("d_seconds", "gauge", "1"), id="no-unit-suffix-added"),
        pytest.param(("h", "histogram", "seconds"), ("h_sum", "gauge", "1"), id="suffix-after-the-unit"),
    ],
)
def test_near_miss_names_are_still_accepted(
    first: tuple[str, MetricKind, str], second: tuple[str, MetricKind, str]
) -> None:
    """Names that export distinct series are accepted, in both catalogues, and export both metrics."""
    prefix = unique_prefix()
    one, two = (spec(f"{prefix}.{name}", kind, unit) for name, kind, unit in (first, second))
    assert declare_metric(one) == one
    assert declare_metric(two) == two
    registry = MetricRegistry({one.name: one, two.name: two})
    give_value(registry, one)
    give_value(registry, two)
    assert len(check_export(registry)) == 2


def test_explicit_infinities_are_kept_but_never_cancelled() -> None:
    """An infinite observation is counted and makes the sum infinite; the opposite infinity (NaN) is refused."""
    histogram = MetricSpec("edge.histogram", "histogram", "1", "Edge values.", buckets=(0.0,))
    registry = MetricRegistry({histogram.name: histogram})
    registry.observe(histogram.name, math.inf)
    registry.observe(histogram.name, -1.0)  # a finite value after an infinite one is still fine
    with pytest.raises(InputError, match=r"histogram 'edge\.histogram'.*NaN"):
        registry.observe(histogram.name, -math.inf)
    assert registry.snapshot() == {"edge.histogram.count": 2.0, "edge.histogram.sum": math.inf}
    check_export(registry)


# --------------------------------------------------------------------- properties
_TOKENS = st.lists(st.sampled_from(["a", "b"]), min_size=1, max_size=3)
_SUFFIXES = st.sampled_from(["", "_total", "_seconds", "_sum", "_count", "_bucket"])
_KINDS: st.SearchStrategy[MetricKind] = st.sampled_from(["counter", "gauge", "histogram"])


@st.composite
def _specs(draw: st.DrawFn) -> MetricSpec:
    """Small names (so that collisions are frequent) with every kind and both unit spellings."""
    separators = draw(st.lists(st.sampled_from([".", "_"]), min_size=3, max_size=3))
    tokens = draw(_TOKENS)
    name = "".join(token + separator for token, separator in zip(tokens, separators))[:-1] + draw(_SUFFIXES)
    return spec(name, draw(_KINDS), draw(st.sampled_from(["1", "seconds"])))


@settings(max_examples=100, deadline=None)
@given(first=_specs(), second=_specs())
def test_a_catalogue_is_refused_exactly_when_its_exports_would_collide(first: MetricSpec, second: MetricSpec) -> None:
    """A two-metric registry is refused iff the two exports share a name; otherwise its export is clean."""
    if first.name == second.name:
        return  # one catalogue key: the second spec simply replaces the first
    collide = bool(names_alone(first) & names_alone(second))
    try:
        registry = MetricRegistry({first.name: first, second.name: second})
    except InputError:
        assert collide, "refused two metrics whose exports share no name"
        return
    assert not collide, "accepted two metrics whose exports share a name"
    give_value(registry, first)
    give_value(registry, second)
    assert len(check_export(registry)) == 2


@settings(max_examples=100, deadline=None)
@given(first=_specs(), second=_specs())
def test_declarations_either_refuse_or_export_distinct_series(first: MetricSpec, second: MetricSpec) -> None:
    """declare_metric refuses the second metric, changing nothing, or both export cleanly."""
    prefix = unique_prefix()
    one, two = (spec(f"{prefix}.{s.name}", s.kind, s.unit) for s in (first, second))
    if one.name == two.name:
        return
    declare_metric(one)
    registry = MetricRegistry()
    give_value(registry, one)
    catalogue, text = dict(CATALOGUE), registry.to_prometheus()
    try:
        declare_metric(two)
    except InputError as refused:
        assert one.name in str(refused)
        assert two.name in str(refused)
        assert catalogue == CATALOGUE
        assert registry.to_prometheus() == text
        assert names_alone(one) & names_alone(two)
        return
    give_value(registry, two)
    assert len(check_export(registry)) == 2


_UPDATES = st.lists(
    st.tuples(
        st.sampled_from(["inc", "observe"]),
        st.one_of(
            st.floats(min_value=-1.7e308, max_value=1.7e308),
            st.sampled_from([1e308, -1e308, math.inf, -math.inf]),
        ),
    ),
    max_size=12,
)


@settings(max_examples=100, deadline=None)
@given(updates=_UPDATES)
def test_counters_and_histograms_only_export_infinities_they_were_given(updates: list[tuple[str, float]]) -> None:
    """Updates export finite counters and sums unless an infinity was observed; refusals change nothing."""
    counter = spec("fuzz.counter", "counter")
    histogram = MetricSpec("fuzz.histogram", "histogram", "1", "Any values.", buckets=(-1.0, 0.0, 1.0))
    registry = MetricRegistry({counter.name: counter, histogram.name: histogram})
    observed_infinity = False
    for operation, value in updates:
        before = registry.snapshot()
        try:
            if operation == "inc":
                registry.inc(counter.name, value)
            else:
                registry.observe(histogram.name, value)
        except InputError:
            assert registry.snapshot() == before
            continue
        observed_infinity |= operation == "observe" and math.isinf(value)
    check_export(registry)
    values = {
        sample.name: sample.value
        for family in parse_with_prometheus_client(registry.to_prometheus())
        for sample in family.samples
    }
    for name, number in registry.snapshot().items():
        assert not math.isnan(number), name
        assert math.isfinite(number) or (name == "fuzz.histogram.sum" and observed_infinity), name
    for name, number in values.items():
        assert math.isfinite(number) or (name == "fuzz_histogram_sum" and observed_infinity), name


def test_declaring_several_metrics_is_all_or_nothing() -> None:
    """declare_metrics refuses a batch with two colliding specs, or one colliding with the catalogue, declaring none."""
    from geno_lewm.metrics import declare_metrics

    fresh = MetricSpec("tests.collisions.batch.fresh", "gauge", "1", "Declared only with its batch.")
    clash = MetricSpec("tests.collisions.batch.a.b", "gauge", "1", "One of two.")
    twin = MetricSpec("tests.collisions.batch.a_b", "gauge", "1", "The other.")
    before = dict(CATALOGUE)
    with pytest.raises(InputError, match=re.escape("collides with metric 'tests.collisions.batch.a.b'")):
        declare_metrics([fresh, clash, twin])
    assert before == CATALOGUE
    declare_metric(clash)
    with pytest.raises(InputError, match="collides"):
        declare_metrics([fresh, twin])
    assert fresh.name not in CATALOGUE
    assert declare_metrics([fresh, clash]) == (fresh, clash) and CATALOGUE[fresh.name] == fresh
