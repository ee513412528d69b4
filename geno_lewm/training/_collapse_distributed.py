"""The collapse check of a validation batch held in shards by the ranks of a process group.

In data-parallel training each rank holds a shard of the validation batch. When the
default ``torch.distributed`` process group is initialised with more than one rank,
:class:`~geno_lewm.training.collapse.CollapseMonitor` hands its scheduled checks to
:func:`distributed_collapse_metrics`, which every rank calls on the same step with its
own shard (shards may have different numbers of rows). Two modes:

``"gather"`` (default, exact)
    Rank 0 receives every shard (one ``gather`` of the prediction and target shards,
    ``2 x N x D`` values, padded to the largest shard), computes the check on their
    concatenation in rank order — exactly what one process computes on the whole batch,
    through the same backend — and broadcasts the result, so every rank gets the same
    metrics, bit for bit, and decides the same alerts.
``"statistics"`` (one small all-gather)
    Each rank reduces its shard to sufficient statistics (:class:`CollapseStatistics`:
    row count, sums of cosines and distances, column means and centred second moments,
    ``2 D + 8`` float64 values) and all ranks merge them the same way. Cosine, distance,
    variances and correlation equal the whole batch's up to float64 rounding; the mean
    pairwise distance has no sufficient statistic, so it is the mean over pairs *within*
    shards (an unbiased estimate under random sharding; logged with the variant
    ``within_shard_pairs``). No spectra.

Before any data moves, every rank validates its shard locally and all ranks exchange a
small header (verdict, rows, width, ``kl_reg``, element size, step) in one
``all_gather``: a bad shard on one rank makes *every* rank raise together (the failing
rank its own :class:`~geno_lewm.errors.InputError`, the others one naming that rank and
its message), instead of leaving the others waiting in a collective. Ranks whose widths
or steps differ are refused the same way.

``kl_reg`` is the mean of the values the ranks pass (the regulariser a data-parallel
run optimises; equal values give that value exactly).

This is collapse mathematics; the data moves through :mod:`geno_lewm._distributed`, the
one home of ``torch.distributed`` calls. torch is imported only when a process group is
in use. Design: ``rfcs/0010-integrations.md``.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from operator import mul, sub
from typing import TYPE_CHECKING, Any, Literal

from geno_lewm import _distributed
from geno_lewm._torch import array_kind, require_torch
from geno_lewm._validation import check_choice, check_non_negative_int
from geno_lewm.backends import check_backend_name, load_backend, prepare_each
from geno_lewm.errors import InputError
from geno_lewm.training._collapse_metrics import BatchInfo, CollapseMetrics, check_kl_reg, measure
from geno_lewm.training._divergence import NonFinite, find_non_finite

if TYPE_CHECKING:
    from geno_lewm.training._spectral import CollapseSpectrum

__all__ = [
    "DISTRIBUTED_MODES",
    "WITHIN_SHARD_VARIANT",
    "CollapseStatistics",
    "DistributedMode",
    "collapse_statistics",
    "distributed_collapse_metrics",
    "distributed_non_finite",
    "merge_statistics",
]

DistributedMode = Literal["gather", "statistics", "off"]
DISTRIBUTED_MODES: tuple[DistributedMode, ...] = ("gather", "statistics", "off")
"""``gather`` (exact), ``statistics`` (sufficient statistics) or ``off`` (each rank checks its own shard)."""

WITHIN_SHARD_VARIANT = "unordered_pairs_within_shards,single_row_is_0"
"""The ``variant`` of ``pairwise_pred_dist_mean`` computed in ``statistics`` mode."""

_DOING = "check its shard of the validation batch"


def _mean_kl(values: Sequence[float]) -> float | None:
    """The ranks' ``kl_reg`` (NaN standing for ``None``): ``None`` when no rank passed one,
    their mean otherwise; a mix is refused on every rank alike.
    """
    absent = [math.isnan(v) for v in values]
    if all(absent):
        return None
    if any(absent):
        shown = ", ".join(f"rank {i}: {'None' if a else v}" for i, (a, v) in enumerate(zip(absent, values)))
        raise InputError(
            f"every rank must pass a kl_reg, or every rank None, to a distributed check: got {shown}",
            details={"field": "kl_reg"},
        )
    if all(v == values[0] for v in values):
        return values[0]
    return math.fsum(values) / len(values)


def _header_kl(kl: float | None) -> float:
    return math.nan if kl is None else kl


# ------------------------------------------------------------- statistics
@dataclass(frozen=True, slots=True)
class CollapseStatistics:
    """Sufficient statistics of the collapse metrics of one or more shards, in float64.

    Everything except the mean pairwise distance merges exactly (up to rounding): the
    merge recentres each shard's second moments on the common column means (Chan et
    al.'s parallel formula), so a large common offset does not cancel away the spread.

    Attributes
    ----------
    rows, dim:
        ``N`` and ``D``.
    cos_sum, l2_sum:
        Sums over rows of the prediction-target cosine and distance.
    pair_sum, pair_count:
        Sum of the distances between prediction rows of the same shard, and the number
        of such pairs.
    pred_m2, target_m2:
        Sum over columns of the squared deviations from the column means.
    cross_m2:
        Sum over columns of the products of prediction and target deviations.
    pred_mean, target_mean:
        The column means.
    """

    rows: int
    dim: int
    cos_sum: float
    l2_sum: float
    pair_sum: float
    pair_count: int
    pred_m2: float
    target_m2: float
    cross_m2: float
    pred_mean: tuple[float, ...]
    target_mean: tuple[float, ...]

    def as_vector(self) -> list[float]:
        """The statistics as ``2 D + 8`` floats (for a collective); see :meth:`from_vector`."""
        head = [
            float(self.rows),
            self.cos_sum,
            self.l2_sum,
            self.pair_sum,
            float(self.pair_count),
            self.pred_m2,
            self.target_m2,
            self.cross_m2,
        ]
        return head + list(self.pred_mean) + list(self.target_mean)

    @classmethod
    def from_vector(cls, vector: Sequence[float], dim: int) -> CollapseStatistics:
        """Inverse of :meth:`as_vector`."""
        rows, cos_sum, l2_sum, pair_sum, pair_count, pred_m2, target_m2, cross_m2 = vector[:8]
        return cls(
            int(rows),
            dim,
            cos_sum,
            l2_sum,
            pair_sum,
            int(pair_count),
            pred_m2,
            target_m2,
            cross_m2,
            tuple(vector[8 : 8 + dim]),
            tuple(vector[8 + dim : 8 + 2 * dim]),
        )

    def merge(self, other: CollapseStatistics) -> CollapseStatistics:
        """The statistics of both shards together (see :func:`merge_statistics`)."""
        return merge_statistics([self, other])

    def finalize(self, kl_reg: float | None) -> CollapseMetrics:
        """The :class:`~geno_lewm.training.collapse.CollapseMetrics` these statistics
        describe; ``pairwise_pred_dist_mean`` is the within-shard mean (0 without pairs).
        """
        kl = check_kl_reg(kl_reg)
        n, d = self.rows, self.dim
        grand_p = math.fsum(self.pred_mean) / d
        grand_t = math.fsum(self.target_mean) / d
        offsets_p = [m - grand_p for m in self.pred_mean]
        offsets_t = [m - grand_t for m in self.target_mean]
        ss_p = self.pred_m2 + n * math.fsum(map(mul, offsets_p, offsets_p))
        ss_t = self.target_m2 + n * math.fsum(map(mul, offsets_t, offsets_t))
        cross = self.cross_m2 + n * math.fsum(map(mul, offsets_p, offsets_t))
        corr = 0.0 if ss_p <= 0.0 or ss_t <= 0.0 else min(1.0, max(-1.0, cross / math.sqrt(ss_p) / math.sqrt(ss_t)))
        pairwise = self.pair_sum / self.pair_count if self.pair_count else 0.0
        return CollapseMetrics(
            self.cos_sum / n,
            self.l2_sum / n,
            max(0.0, self.target_m2) / (n * d),
            max(0.0, self.pred_m2) / (n * d),
            corr,
            pairwise,
            kl,
        )


def merge_statistics(parts: Sequence[CollapseStatistics]) -> CollapseStatistics:
    """Merge the statistics of several shards (in any order) into those of their union.

    Each column's second moment is ``sum_r M2_r + sum_r n_r (mean_r - mean)^2`` about
    the common mean, and the cross moment likewise; sums are compensated
    (``math.fsum``), so the result does not depend on the order of the parts beyond the
    final rounding.

    Raises :class:`InputError` for no parts or parts of different widths.
    """
    if not parts:
        raise InputError("'parts' must hold at least one CollapseStatistics", details={"field": "parts"})
    for part in parts:
        if not isinstance(part, CollapseStatistics):
            raise InputError(
                f"'parts' must hold CollapseStatistics: got {type(part).__name__}",
                details={"field": "parts", "type": type(part).__name__},
            )
    d = parts[0].dim
    if any(part.dim != d for part in parts):
        raise InputError(
            f"cannot merge statistics of different widths: {[part.dim for part in parts]}",
            details={"field": "parts", "dims": [part.dim for part in parts]},
        )
    if len(parts) == 1:
        return parts[0]
    n = sum(part.rows for part in parts)
    pred_mean = tuple(math.fsum(part.rows * part.pred_mean[j] for part in parts) / n for j in range(d))
    target_mean = tuple(math.fsum(part.rows * part.target_mean[j] for part in parts) / n for j in range(d))
    pred_m2 = [part.pred_m2 for part in parts]
    target_m2 = [part.target_m2 for part in parts]
    cross_m2 = [part.cross_m2 for part in parts]
    for part in parts:
        dp = list(map(sub, part.pred_mean, pred_mean))
        dt = list(map(sub, part.target_mean, target_mean))
        pred_m2.append(part.rows * math.fsum(map(mul, dp, dp)))
        target_m2.append(part.rows * math.fsum(map(mul, dt, dt)))
        cross_m2.append(part.rows * math.fsum(map(mul, dp, dt)))
    return CollapseStatistics(
        n,
        d,
        math.fsum(part.cos_sum for part in parts),
        math.fsum(part.l2_sum for part in parts),
        math.fsum(part.pair_sum for part in parts),
        sum(part.pair_count for part in parts),
        math.fsum(pred_m2),
        math.fsum(target_m2),
        math.fsum(cross_m2),
        pred_mean,
        target_mean,
    )


def _shard_statistics(prediction: Any, target: Any, backend: str) -> tuple[CollapseStatistics, BatchInfo]:
    """Validate one shard and reduce it to statistics: the backend's own (careful)
    per-row and pairwise values, plus column means and centred moments in float64.
    """
    metrics, info, _, prepared = measure(prediction, target, 0.0, backend)
    started = time.perf_counter()
    torch = require_torch()
    p = _as_float64(torch, prepared.prediction)
    t = _as_float64(torch, prepared.target)
    n, d = int(p.shape[0]), int(p.shape[1])
    with torch.no_grad():
        mean_p, mean_t = p.mean(dim=0), t.mean(dim=0)
        cp, ct = p - mean_p, t - mean_t
        sum_p, sum_t = cp.sum(dim=0), ct.sum(dim=0)
        # The corrected two-pass formula: the column sums of the centred data are the
        # rounding error of the means, whose square would otherwise inflate the moments.
        moments = torch.stack(
            [
                (cp * cp).sum() - (sum_p * sum_p).sum() / n,
                (ct * ct).sum() - (sum_t * sum_t).sum() / n,
                (cp * ct).sum() - (sum_p * sum_t).sum() / n,
            ]
        )
        host = torch.cat([moments, mean_p, mean_t]).cpu().tolist()
    pairs = n * (n - 1) // 2
    stats = CollapseStatistics(
        n,
        d,
        metrics.pred_cos_mean * n,
        metrics.pred_l2_mean * n,
        metrics.pairwise_pred_dist_mean * pairs,
        pairs,
        max(0.0, host[0]),
        max(0.0, host[1]),
        host[2],
        tuple(host[3 : 3 + d]),
        tuple(host[3 + d :]),
    )
    elapsed = info.compute_seconds + time.perf_counter() - started
    return stats, BatchInfo(n, d, info.dtype, info.backend, info.device, elapsed)


def _as_float64(torch: Any, matrix: Any) -> Any:
    if isinstance(matrix, torch.Tensor):
        device = matrix.device if matrix.device.type != "mps" else torch.device("cpu")
        return matrix.detach().to(device=device, dtype=torch.float64)
    numpy = sys.modules.get("numpy")
    if numpy is not None and isinstance(matrix, numpy.ndarray):
        return torch.from_numpy(numpy.ascontiguousarray(matrix, dtype=numpy.float64))
    return torch.tensor(matrix, dtype=torch.float64)


def collapse_statistics(prediction: Any, target: Any, *, backend: str = "auto") -> CollapseStatistics:
    """Sufficient statistics of one ``[N, D]`` shard (validated as the monitor does).

    Needs torch (the moments are computed in float64 with it). Merge shards with
    :func:`merge_statistics` and turn the result into metrics with
    :meth:`CollapseStatistics.finalize`.

    Example
    -------
    >>> a = collapse_statistics([[0.0, 1.0], [2.0, 1.0]], [[0.0, 2.0], [2.0, 2.0]])
    >>> b = collapse_statistics([[4.0, 1.0]], [[4.0, 2.0]])
    >>> round(merge_statistics([a, b]).finalize(0.0).pred_var_per_dim, 12)
    1.333333333333
    """
    return _shard_statistics(prediction, target, backend)[0]


# ------------------------------------------------------------------ gather
def _rebuild(tensor: Any, like: Any) -> Any:
    """The gathered batch in the form of rank 0's own input: a tensor on its device, a
    NumPy array, or nested lists, so the backend chosen for it is the one a single
    process would choose for the whole batch.
    """
    kind = array_kind(like)
    if kind == "torch":
        return tensor.to(device=like.device)
    if kind == "numpy":
        return tensor.cpu().numpy()
    return tensor.cpu().tolist()


def _validated_shard(torch: Any, prediction: Any, target: Any) -> tuple[Any, Any]:
    """Both shards validated as the reference does, as tensors of one work dtype."""
    kernels = load_backend("torch")
    p, t, _ = prepare_each(kernels.prepare, kernels.describe, prediction, target)
    if t.dtype != p.dtype:
        common = torch.promote_types(p.dtype, t.dtype)
        p, t = p.to(common), t.to(common)
    return p, t


def _rows_and_width(value: Any) -> tuple[int, int]:
    """A shard's ``(n, D)`` as far as it can be read without validating it (``(0, 0)`` if not)."""
    shape = getattr(value, "shape", None)
    if shape is not None and len(shape) == 2:
        return int(shape[0]), int(shape[1])
    try:
        return len(value), len(value[0]) if len(value) else 0
    except TypeError:
        return 0, 0


def distributed_non_finite(prediction: Any, target: Any, kl_reg: Any) -> NonFinite | None:
    """Whether any rank's shard or ``kl_reg`` holds non-finite values; call on every rank.

    Each rank counts its own (:func:`~geno_lewm.training._divergence.find_non_finite`) and
    the counts are gathered, so every rank takes the same path: a diverged check
    everywhere, or the usual collective check. The result sums the counts over ranks and
    names the first rank that has any (with its location, on that rank).
    """
    dist = _distributed.require_group()
    torch = require_torch()
    preferred = next((v.device for v in (prediction, target) if isinstance(v, torch.Tensor)), None)
    device = _distributed.comm_device(dist, torch, preferred)
    local = find_non_finite(prediction, target, kl_reg)
    rows, dim = _rows_and_width(prediction)
    mine = [0.0, 0.0, 0.0] if local is None else [local.prediction, local.target, float(local.kl_reg)]
    mine += [float(rows), float(dim)]
    counts = _distributed.all_gather_floats(dist, torch, device, mine)
    bad = [index for index, row in enumerate(counts) if row[0] or row[1] or row[2]]
    if not bad:
        return None
    first = f"on rank {bad[0]}" + (f": {local.first}" if local is not None and _distributed.rank() == bad[0] else "")
    return NonFinite(
        prediction=int(sum(row[0] for row in counts)),
        target=int(sum(row[1] for row in counts)),
        kl_reg=any(row[2] for row in counts),
        first=first,
        rows=int(sum(row[3] for row in counts)),
        dim=int(max(row[4] for row in counts)),
    )


def distributed_collapse_metrics(
    prediction: Any,
    target: Any,
    *,
    kl_reg: Any,
    step: int = 0,
    backend: str = "auto",
    mode: str = "gather",
    spectrum: bool = False,
) -> tuple[CollapseMetrics, BatchInfo, CollapseSpectrum | None]:
    """The collapse metrics of the batch whose shards the ranks hold; call on every rank.

    Parameters
    ----------
    prediction, target:
        This rank's shard (``[n_r, D]``, any number of rows, the same ``D`` everywhere).
    kl_reg:
        This rank's value; the result carries the mean over ranks.
    step:
        The step of the check; every rank must pass the same one.
    backend:
        The backend of the computation (as for ``compute_collapse_metrics``).
    mode:
        ``"gather"`` or ``"statistics"`` (see the module documentation).
    spectrum:
        Also compute the spectra of the whole batch (``gather`` only).

    Returns
    -------
    tuple
        ``(metrics, batch, spectrum)``, the same metrics and spectrum on every rank;
        ``batch`` describes the whole batch (its ``batch_size`` is the total rows).

    Raises
    ------
    InputError
        On every rank, when any rank's shard is bad, when widths or steps differ, or
        when no process group is initialised.
    """
    chosen = check_choice("mode", mode, ("gather", "statistics"))
    if spectrum and chosen == "statistics":
        raise InputError(
            "spectra need the whole batch: use distributed='gather' with spectrum=True",
            details={"field": "distributed", "value": mode},
        )
    step = check_non_negative_int("step", step)
    dist = _distributed.require_group()
    torch = require_torch()
    preferred = next((v.device for v in (prediction, target) if isinstance(v, torch.Tensor)), None)
    device = _distributed.comm_device(dist, torch, preferred)
    if chosen == "statistics":
        return _statistics_mode(
            dist, torch, device, prediction=prediction, target=target, kl_reg=kl_reg, step=step, backend=backend
        )
    return _gather_mode(
        dist,
        torch,
        device,
        prediction=prediction,
        target=target,
        kl_reg=kl_reg,
        step=step,
        backend=backend,
        spectrum=spectrum,
    )


def _gather_mode(
    dist: Any,
    torch: Any,
    device: Any,
    *,
    prediction: Any,
    target: Any,
    kl_reg: Any,
    step: int,
    backend: str,
    spectrum: bool,
) -> tuple[CollapseMetrics, BatchInfo, CollapseSpectrum | None]:
    error: BaseException | None = None
    header = [0.0, 0.0, 0.0, 0.0, float(step)]
    shards = None
    try:
        check_backend_name(backend)
        kl = check_kl_reg(kl_reg)
        p, t = _validated_shard(torch, prediction, target)
        shards = torch.stack([p, t])
        header = [float(p.shape[0]), float(p.shape[1]), _header_kl(kl), float(p.element_size()), float(step)]
    except Exception as caught:  # every rank must learn of it before any data moves
        error = caught
    headers = _distributed.agree(dist, torch, device, error, header, doing=_DOING)
    _distributed.check_uniform(headers, 1, "width D")
    _distributed.check_uniform(headers, 4, "step")
    counts = [int(h[0]) for h in headers]
    itemsize = int(max(h[3] for h in headers))
    kl = _mean_kl([h[2] for h in headers])
    whole = _distributed.gather_to_rank0(dist, torch, device, shards, rows=counts, itemsize=itemsize)
    result: tuple[Any, ...] = ("pending",)
    if whole is not None:
        try:
            full_p, full_t = _rebuild(whole[0], prediction), _rebuild(whole[1], target)
            metrics, batch, kernels, prepared = measure(full_p, full_t, kl, backend)
            spectra = None
            if spectrum:
                from geno_lewm.training._spectral import DEFAULT_TOP_K, prepared_spectrum

                spectra = prepared_spectrum(
                    kernels, prepared.prediction, prepared.target, prepared.shape, DEFAULT_TOP_K
                )
            result = ("ok", metrics, batch, spectra)
        except Exception as caught:
            result = ("error", _distributed.describe_error(caught))
            error = caught
    outcome: Any = _distributed.broadcast_object(dist, device, result)
    if outcome[0] == "error":
        failures = [outcome[1]] + [None] * (dist.get_world_size() - 1)
        _distributed.raise_for_failures(failures, error, doing="compute the check of the gathered batch")
    _, metrics, batch, spectra = outcome
    return metrics, batch, spectra


def _statistics_mode(
    dist: Any, torch: Any, device: Any, *, prediction: Any, target: Any, kl_reg: Any, step: int, backend: str
) -> tuple[CollapseMetrics, BatchInfo, None]:
    error: BaseException | None = None
    header = [0.0, 0.0, 0.0, 0.0, float(step)]
    local: tuple[CollapseStatistics, BatchInfo] | None = None
    try:
        kl = check_kl_reg(kl_reg)
        local = _shard_statistics(prediction, target, backend)
        header = [float(local[0].rows), float(local[0].dim), _header_kl(kl), 8.0, float(step)]
    except Exception as caught:
        error = caught
    headers = _distributed.agree(dist, torch, device, error, header, doing=_DOING)
    _distributed.check_uniform(headers, 1, "width D")
    _distributed.check_uniform(headers, 4, "step")
    assert local is not None  # every rank succeeded, or agree raised
    stats, info = local
    started = time.perf_counter()
    vectors = _distributed.all_gather_floats(dist, torch, device, stats.as_vector())
    merged = merge_statistics([CollapseStatistics.from_vector(vector, stats.dim) for vector in vectors])
    metrics = merged.finalize(_mean_kl([h[2] for h in headers]))
    elapsed = info.compute_seconds + time.perf_counter() - started
    return metrics, BatchInfo(merged.rows, merged.dim, info.dtype, info.backend, info.device, elapsed), None
