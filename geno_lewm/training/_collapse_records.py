"""Publishing collapse checks made outside a monitor: the RFC metrics, spectra and
diagnoses of one check into the registry and a logger, and the measurement a monitor
hands to the shared pipeline (``_pipeline.py``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from geno_lewm._protocols import adapt_logger
from geno_lewm._validation import check_instance, check_non_negative_int, wrong_type
from geno_lewm.metrics import MetricRegistry
from geno_lewm.training._collapse_metrics import (
    COLLAPSE,
    COLLAPSE_METRICS,
    SPECTRAL_GAUGES,
    BatchInfo,
    CollapseAlert,
    CollapseLogger,
    CollapseMetrics,
    CollapseThresholds,
    Diagnosis,
    baselines_of,
    check_initial,
    check_values,
    spectral_gauge_values,
    spectral_variants,
)
from geno_lewm.training._recording import Measurement, batch_fields, log_metric_events, record_check, set_gauges

if TYPE_CHECKING:
    from geno_lewm.training._spectral import CollapseSpectrum

__all__ = ["check_spectrum", "log_spectral_metrics", "measurement_of", "record_collapse_metrics", "set_spectral_gauges"]


def check_spectrum(name: str, value: object) -> CollapseSpectrum | None:
    """``value`` if it is ``None`` or a :class:`CollapseSpectrum` (the spectral module is
    imported only when it is not ``None``).
    """
    if value is None:
        return None
    from geno_lewm.training._spectral import CollapseSpectrum

    return check_instance(name, value, CollapseSpectrum)


def _spectral_contexts(spectrum: CollapseSpectrum | None, context: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The spectral gauges' events carry the spectra's own compute time."""
    if spectrum is None or "compute_seconds" not in context:
        return {}
    return {name: {"compute_seconds": spectrum.compute_seconds} for name in SPECTRAL_GAUGES}


def measurement_of(
    metrics: CollapseMetrics,
    batch: BatchInfo | None,
    spectrum: CollapseSpectrum | None,
    variants: Mapping[str, str],
    step: int | None = None,
) -> Measurement:
    """One check as the pipeline publishes it."""
    context = batch_fields(batch)
    return Measurement(
        values=check_values(metrics, spectrum),
        batch=batch,
        rows=0 if batch is None else batch.batch_size,
        context=context,
        variants={**(spectral_variants(spectrum) if spectrum is not None else {}), **variants},
        contexts=_spectral_contexts(spectrum, context),
        source=(metrics, spectrum),
        step=step,
    )


def record_collapse_metrics(
    metrics: CollapseMetrics,
    *,
    alerts: Sequence[CollapseAlert] = (),
    logger: CollapseLogger | None = None,
    step: int | None = None,
    batch: BatchInfo | None = None,
    thresholds: CollapseThresholds | None = None,
    initial_pairwise_pred_dist_mean: float | None = None,
    registry: MetricRegistry | None = None,
    spectrum: CollapseSpectrum | None = None,
    diagnosis: Diagnosis | None = None,
    initial_spectrum: CollapseSpectrum | None = None,
    variants: Mapping[str, str] | None = None,
) -> None:
    """Publish one check: gauges and counters in the registry, events in ``logger``.

    Sets the gauge ``geno_lewm.training.collapse.<field>`` for each metric, adds the
    number of alerts to the ``geno_lewm.training.collapse.alert`` counter and, when
    ``batch`` is known, the compute time to a histogram. With a logger, emits one
    ``training.metric`` event (info) per metric and one ``training.collapse.alert`` event
    (warning) per alert. Metric events carry the unit, the convention (``variant``), the
    threshold in force (from ``thresholds`` and the pairwise baseline) and, when
    ``batch`` is given, the batch's shape, dtype, backend, device and compute time.

    With a ``spectrum``, its gauges are set too and their ``training.metric`` events
    follow the RFC metrics' (the effective-rank thresholds come from ``thresholds`` and
    ``initial_spectrum``); with a ``diagnosis``, each alert event carries its kind. Without
    them, nothing differs from the RFC behaviour. ``variants`` replaces the ``variant`` of
    the fields it names (a metric computed by another convention, e.g. across ranks).

    All of that describes this package's own logger. Any other accepted logger (a
    GenoLeWM family logger, structlog, ``logging``) gets exactly the family's records: one
    ``training.metric`` (``name``, ``value``, ``unit``, ``kind``, ``step`` when known) per
    metric and one ``training.collapse.alert`` (``criterion``, ``value``, ``threshold``,
    ``step``) per alert. A logger that is neither is an :class:`InputError` before
    anything is recorded.
    """
    logger = adapt_logger(logger)
    check_instance("metrics", metrics, CollapseMetrics)
    if isinstance(alerts, (str, bytes)) or not isinstance(alerts, Sequence):
        raise wrong_type("alerts", "a sequence of CollapseAlert", alerts)
    for alert in alerts:
        check_instance("alerts", alert, CollapseAlert, "a sequence of CollapseAlert")
    if batch is not None:
        check_instance("batch", batch, BatchInfo)
    chosen = (
        CollapseThresholds() if thresholds is None else check_instance("thresholds", thresholds, CollapseThresholds)
    )
    checked_step = None if step is None else check_non_negative_int("step", step)
    check_spectrum("spectrum", spectrum)
    check_spectrum("initial_spectrum", initial_spectrum)
    if diagnosis is not None:
        check_instance("diagnosis", diagnosis, Diagnosis)
    initial = check_initial(initial_pairwise_pred_dist_mean)
    record_check(
        COLLAPSE,
        measurement_of(metrics, batch, spectrum, variants or {}),
        alerts,
        step=checked_step,
        registry=registry,
        logger=logger,
        thresholds=chosen,
        baselines=baselines_of(initial, initial_spectrum),
        alert_fields={} if diagnosis is None else {"diagnosis": diagnosis.kind},
    )


def set_spectral_gauges(spectrum: CollapseSpectrum, registry: MetricRegistry | None = None) -> None:
    """Set one gauge ``geno_lewm.training.collapse.<name>`` per
    :data:`~geno_lewm.training._collapse_metrics.SPECTRAL_GAUGES` entry (in the process
    default registry when ``registry`` is omitted).
    """
    from geno_lewm.training._spectral import CollapseSpectrum

    set_gauges(
        COLLAPSE_METRICS, spectral_gauge_values(check_instance("spectrum", spectrum, CollapseSpectrum)), registry
    )


def log_spectral_metrics(
    spectrum: CollapseSpectrum,
    logger: CollapseLogger,
    *,
    step: int | None = None,
    context: Mapping[str, Any] | None = None,
    bounds: Mapping[str, float | None] | None = None,
) -> None:
    """Emit one ``training.metric`` event (info) per spectral gauge.

    ``context`` holds the batch fields of the RFC metrics' events (shape, dtype, backend,
    device, compute time); its ``compute_seconds`` is replaced by the spectra's own time.
    ``bounds`` maps ``pred_effective_rank`` / ``target_effective_rank`` to the bound in
    force (``threshold`` is null for the others).
    """
    from geno_lewm.training._spectral import CollapseSpectrum

    logger = adapt_logger(logger)
    check_instance("spectrum", spectrum, CollapseSpectrum)
    fields = dict(context or {})
    if "compute_seconds" in fields:
        fields["compute_seconds"] = spectrum.compute_seconds
    log_metric_events(
        COLLAPSE_METRICS,
        spectral_gauge_values(spectrum),
        logger,
        step=step,
        context=fields,
        variants=spectral_variants(spectrum),
        bounds=dict(bounds or {}),
    )
