"""The torch backend: RFC-0005 collapse metrics on the tensor's own device.

Gives the pure-Python reference's numbers with the same conventions at the edges and the
same :class:`~geno_lewm.errors.InputError` for the same bad input, computed where the
tensors already are (CPU, CUDA, ...). ``rfcs/0007-vectorized-backends.md`` has the
design; in short:

* float64 tensors (and integer ones, converted exactly) are computed in float64 and agree
  with the reference to about 1e-9 relative; float32, float16 and bfloat16 tensors are
  computed in float32 (the reduced formats are widened first), with the tolerances the
  RFC documents;
* every scaling that keeps squares away from overflow and underflow is an exact power of
  two chosen on the device, so nothing is copied to the host to decide it;
* the mean pairwise distance comes from centred Gram blocks, one block of rows against
  the rows from its first row on (each pair once, bounded memory), computed in full
  float32 precision even when the caller turned on TF32 or reduced-precision float32
  products globally; the caller's settings are restored afterwards;
* no autograd graph is built (tensors that require grad are fine), and the host receives
  one small vector of numbers in a single synchronisation per call. Only two rare
  events cost more: a non-finite input (its position is then fetched for the error
  message) and nearly duplicate rows (their distances are then recomputed exactly,
  block by block).

This module imports torch at import time; :mod:`geno_lewm.backends` imports it only when
the ``torch`` backend is chosen.
"""

from __future__ import annotations

import contextlib
import math
from array import array
from collections.abc import Iterator
from itertools import chain
from typing import Any

import torch

from geno_lewm._inputs import (
    as_python_matrix,
    dtype_error,
    empty_batch_error,
    empty_rows_error,
    non_finite_error,
    not_2d_error,
    shape_mismatch_error,
)
from geno_lewm.backends import FLAG_RATIO_FLOAT32, FLAG_RATIO_FLOAT64, pairwise_block_rows
from geno_lewm.errors import BackendUnavailableError, InputError

__all__ = ["NAME", "collapse_values", "describe", "full_precision_matmul", "prepare", "prepare_pair"]

NAME = "torch"

_REFINE_CHUNK_BYTES = 32 * 2**20
_NO_FLOAT64_DEVICES = frozenset({"mps"})


# ------------------------------------------------------------------ conversion
def _work_dtype(dtype: torch.dtype, device: torch.device) -> torch.dtype:
    """float64 for float64 and integer data (integers convert exactly), float32 for the
    other floating formats; float32 throughout on devices without float64.
    """
    if device.type in _NO_FLOAT64_DEVICES:
        return torch.float32
    if dtype == torch.float64 or not dtype.is_floating_point:
        return torch.float64
    return torch.float32


def _check_tensor(value: torch.Tensor, name: str) -> None:
    """The structural checks of the reference, in its order (finiteness comes later)."""
    if value.ndim != 2:
        raise not_2d_error(name, value.ndim)
    if value.dtype.is_complex or value.dtype == torch.bool:
        raise dtype_error(name, str(value.dtype))
    if value.shape[0] == 0:
        raise empty_batch_error(name)
    if value.shape[1] == 0:
        raise empty_rows_error(name)


def _host_matrix(value: Any, name: str) -> torch.Tensor:
    """Validate a non-tensor input completely on the host and return a float64 CPU tensor."""
    try:
        from geno_lewm.backends import load_backend

        numpy_backend = load_backend("numpy")
    except BackendUnavailableError:
        matrix = as_python_matrix(value, name)
        flat = array("d", chain.from_iterable(matrix))
        return torch.frombuffer(flat, dtype=torch.float64).reshape(len(matrix), len(matrix[0]))
    return torch.from_numpy(numpy_backend.prepare(value, name))


def _convert(value: Any, name: str, device: torch.device | None) -> torch.Tensor:
    """Validate ``value`` (all but the finiteness of a tensor) and return it detached,
    on ``device`` (the input's own device when ``None``), in its work dtype.
    """
    if isinstance(value, torch.Tensor):
        _check_tensor(value, name)
        tensor = value.detach()
    else:
        tensor = _host_matrix(value, name)
    where = tensor.device if device is None else device
    return tensor.to(device=where, dtype=_work_dtype(tensor.dtype, where))


def _raise_if_non_finite(tensor: torch.Tensor, name: str) -> None:
    """Raise the reference's error for the first NaN or infinity, in row-major order.

    Costs one host synchronisation (two when there is a bad value, to fetch it).
    """
    bad = ~torch.isfinite(tensor)
    if bool(bad.any()):
        row, column = (int(i) for i in bad.nonzero()[0].tolist())
        raise non_finite_error(name, row, column, float(tensor[row, column].item()))


def prepare(value: Any, name: str, *, device: torch.device | str | None = None) -> torch.Tensor:
    """Validate ``value`` as a 2-D batch of finite reals and return it as a tensor.

    Accepts tensors (of any device; ``requires_grad`` is fine), NumPy arrays, nested
    sequences of real numbers and other objects with ``tolist()``, and raises the
    reference's :class:`~geno_lewm.errors.InputError` for the same bad input. The
    finiteness of a tensor is checked on its device: only the verdict (and, when there
    is one, the position of the first bad value) reaches the host.

    Parameters
    ----------
    value:
        The batch. It is only read.
    name:
        The argument's name, used in error messages.
    device:
        Where to put the result; by default a tensor stays on its device and anything
        else goes to the CPU.

    Returns
    -------
    torch.Tensor
        A detached ``[N, D]`` tensor: float64 for float64 and integer input, float32 for
        float32, float16 and bfloat16 input (float32 on devices without float64). It may
        share memory with ``value``: treat it as read-only.

    Example
    -------
    >>> prepare([[1, 2.5], [3, 4]], "prediction")
    tensor([[1.0000, 2.5000],
            [3.0000, 4.0000]], dtype=torch.float64)
    """
    target_device = None if device is None else torch.device(device)
    with torch.no_grad():
        tensor = _convert(value, name, target_device)
        if isinstance(value, torch.Tensor):
            _raise_if_non_finite(tensor, name)
    return tensor


def _pair_device(prediction: Any, target: Any) -> torch.device | None:
    for value in (prediction, target):
        if isinstance(value, torch.Tensor):
            return value.device
    return None


def prepare_pair(prediction: Any, target: Any) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int, str, str]]:
    """Validate and convert a prediction/target pair for :func:`collapse_values`.

    Both end up on one device: the prediction's if it is a tensor, else the target's
    (anything else is converted onto it). Errors come in the reference's order
    (prediction, then target, then a shape mismatch). The finiteness of tensors is
    *not* checked here but in :func:`collapse_values`, inside its single host
    synchronisation; it raises the same error the reference would have raised here.
    Use :func:`prepare` where the tensors must be known finite on return.

    Returns the two tensors and :func:`describe` of the prediction.
    """
    device = _pair_device(prediction, target)
    with torch.no_grad():
        p = _convert(prediction, "prediction", device)
        try:
            t = _convert(target, "target", device)
        except InputError:
            _raise_if_non_finite(p, "prediction")
            raise
    if p.shape != t.shape:
        _raise_if_non_finite(p, "prediction")
        _raise_if_non_finite(t, "target")
        (pn, pd), (tn, td) = p.shape, t.shape
        raise shape_mismatch_error((pn, pd), (tn, td))
    return p, t, describe(p)


def describe(matrix: torch.Tensor) -> tuple[int, int, str, str]:
    """Return ``(N, D, dtype, device)`` of a prepared tensor (the dtype computed in)."""
    n, d = matrix.shape
    return int(n), int(d), str(matrix.dtype).removeprefix("torch."), str(matrix.device)


# ------------------------------------------------------------------- precision
@contextlib.contextmanager
def full_precision_matmul() -> Iterator[None]:
    """Run float32 matrix products in full IEEE float32 inside the block.

    Training scripts often allow TF32 (CUDA) or bfloat16 (oneDNN on CPUs) for float32
    products globally; a Gram-based distance computed that way loses about three
    decimal digits. This sets the precision for CUDA and oneDNN products to ``ieee``
    (``torch.set_float32_matmul_precision("highest")`` on older torch) and restores the
    caller's exact settings on exit, even on error. The settings are process-wide:
    another thread's products run in full precision while the block runs.
    """
    holders = [
        holder
        for holder in (torch.backends.cuda.matmul, getattr(torch.backends.mkldnn, "matmul", None))
        if holder is not None and hasattr(holder, "fp32_precision")
    ]
    if holders:
        saved = [(holder, holder.fp32_precision) for holder in holders]
        changed = [(holder, value) for holder, value in saved if value != "ieee"]
        try:
            for holder, _ in changed:
                holder.fp32_precision = "ieee"
            yield
        finally:
            for holder, value in changed:
                holder.fp32_precision = value
        return
    legacy = torch.get_float32_matmul_precision()
    allow_tf32 = torch.backends.cuda.matmul.allow_tf32
    try:
        torch.set_float32_matmul_precision("highest")
        yield
    finally:
        torch.set_float32_matmul_precision(legacy)
        torch.backends.cuda.matmul.allow_tf32 = allow_tf32


# ------------------------------------------------------------------- the kernel
def _accumulation_dtype(device: torch.device) -> torch.dtype:
    """Where the final reductions over rows happen: float64 wherever it exists."""
    return torch.float32 if device.type in _NO_FLOAT64_DEVICES else torch.float64


def _max_abs(x: torch.Tensor, dim: int | tuple[int, ...] | None = None, *, keepdim: bool = False) -> torch.Tensor:
    """Largest magnitude along ``dim`` (all dims by default); NaN if any element is NaN.

    ``max(amax, -amin)``: on CPUs much faster than an infinity norm, and no temporary.
    """
    if dim is None:
        return torch.maximum(x.amax(), x.amin().neg())
    return torch.maximum(x.amax(dim=dim, keepdim=keepdim), x.amin(dim=dim, keepdim=keepdim).neg())


def _power_of_two(exponents: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``2 ** exponents`` exactly, in ``dtype``."""
    return torch.ldexp(torch.ones((), dtype=dtype, device=exponents.device), exponents.to(dtype))


class _Statistics:
    """The device-side computation of one call, kept for the host-side finishing steps.

    ``payload`` is the single vector sent to the host: see :data:`_FIELDS` for its
    head; then one distance sum and one close-pair count per Gram block.
    """

    def __init__(self, prediction: torch.Tensor, target: torch.Tensor) -> None:
        work = torch.promote_types(prediction.dtype, target.dtype)
        acc = _accumulation_dtype(prediction.device)
        self.prediction = prediction.to(work)
        self.n, self.d = prediction.shape
        tiny = torch.finfo(work).tiny
        x = torch.stack((self.prediction, target.to(work)))

        magnitude = _max_abs(x, (1, 2))
        finite = torch.isfinite(magnitude)
        exponent = torch.frexp(magnitude).exponent.clamp_min(3 - math.frexp(torch.finfo(work).max)[1])
        x.mul_(_power_of_two(-exponent, work)[:, None, None])
        self.exponent = exponent

        cosine_mean = self._cosine_mean(x, tiny, acc)
        l2_scaled, l2_size, l2_exponent = self._row_distance(x, exponent, tiny, acc)
        corr, spread, variance_scaled = self._centre(x, tiny, acc)
        self.spread = spread
        self.block_rows = pairwise_block_rows(self.n, x.element_size())
        self.ratio = FLAG_RATIO_FLOAT64 if work == torch.float64 else FLAG_RATIO_FLOAT32
        self.gram_rows = x[0]
        sums, counts = [], []
        for start in range(0, self.n - 1, self.block_rows):
            block_sum, count, _ = self._block(start, min(self.n, start + self.block_rows), exact=False)
            sums.append(block_sum)
            counts.append(count.to(acc))
        head = torch.stack(
            [
                cosine_mean,
                l2_scaled,
                l2_size.to(acc),
                l2_exponent.to(acc),
                variance_scaled[1],
                variance_scaled[0],
                corr,
                spread[1].to(acc),
                spread[0].to(acc),
                exponent[1].to(acc),
                exponent[0].to(acc),
                finite[1].to(acc),
                finite[0].to(acc),
            ]
        )
        self.payload = torch.cat([head, *(torch.stack(part) for part in (sums, counts) if part)])

    @staticmethod
    def _cosine_mean(x: torch.Tensor, tiny: float, acc: torch.dtype) -> torch.Tensor:
        """Mean row cosine, each row first divided by its largest magnitude."""
        largest = _max_abs(x, 2, keepdim=True)
        rows = x / largest.clamp_min(tiny)
        norms = torch.linalg.vector_norm(rows, dim=2)
        dots = torch.einsum("nd,nd->n", rows[0], rows[1])
        denominator = norms[0] * norms[1]
        cosine = torch.where(denominator > 0, dots / denominator, 0.0).clamp(-1.0, 1.0)
        return cosine.to(acc).mean()

    @staticmethod
    def _row_distance(
        x: torch.Tensor, exponent: torch.Tensor, tiny: float, acc: torch.dtype
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mean ``|p_i - t_i|`` as ``(mean in units of size, size, exponent)``: the
        difference is taken at the larger matrix's scale, then divided by its own
        largest magnitude before squaring.
        """
        common = exponent.max()
        factors = _power_of_two(exponent - common, x.dtype)
        difference = x[0] * factors[0]
        difference.addcmul_(x[1], -factors[1])
        size = _max_abs(difference)
        difference.div_(size.clamp_min(tiny))
        mean = torch.linalg.vector_norm(difference, dim=1).to(acc).mean()
        return mean, size, common

    def _centre(self, x: torch.Tensor, tiny: float, acc: torch.dtype) -> tuple[torch.Tensor, ...]:
        """Centre ``x`` in place; return the correlation, each matrix's largest centred
        magnitude and its variance in units of that magnitude squared. Leaves ``x``
        holding the centred rows divided by that magnitude (for the Gram blocks) and
        sets ``self.gram_squares``.

        Means are accumulated as offsets from the first row, so a large common level
        costs no digits and constant columns centre to exactly 0.
        """
        n, d = self.n, self.d
        first = x[:, :1].clone()
        x.sub_(first)
        shift = x.mean(dim=1, keepdim=True)
        x.sub_(shift)
        within = torch.einsum("knd,knd->kn", x, x).to(acc).sum(dim=1)
        cross = torch.einsum("nd,nd->n", x[0], x[1]).to(acc).sum()
        relative = (first[:, 0] - first[:, 0, :1]).to(acc) + shift[:, 0].to(acc)
        anchor = relative[:, :1]
        offsets = relative - (anchor + (relative - anchor).mean(dim=1, keepdim=True))
        between = n * torch.einsum("kd,kd->k", offsets, offsets)
        cross = cross + n * torch.dot(offsets[0], offsets[1])
        total = within + between
        denominator = total[0].sqrt() * total[1].sqrt()
        corr = torch.where(denominator > 0, cross / denominator, 0.0).clamp(-1.0, 1.0)

        spread = _max_abs(x, (1, 2))
        x.div_(spread.clamp_min(tiny)[:, None, None])
        squares = torch.einsum("knd,knd->kn", x, x)
        self.gram_squares = squares[0]
        variance = squares.to(acc).sum(dim=1) / (n * d)
        return corr, spread, variance

    def _block(self, start: int, stop: int, *, exact: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Distances of rows ``[start, stop)`` to the rows from ``start`` on.

        Returns the sum over the block's pairs ``i < j`` of the Gram-based distance,
        leaving out the close pairs (squared distance below ``ratio * (|a|^2 + |b|^2)``),
        the number of close pairs and, with ``exact``, their indices (``[k, 2]``).
        """
        b = stop - start
        rows, squares = self.gram_rows, self.gram_squares
        scale = squares[start:stop, None] + squares[None, start:]
        d2 = torch.addmm(scale, rows[start:stop], rows[start:].T, alpha=-2.0)
        close = d2 < scale.mul_(self.ratio)
        del scale
        close[:, :b].triu_(1)
        d2.clamp_min_(0.0).sqrt_()
        d2.masked_fill_(close, 0.0)
        d2[:, :b].triu_(1)
        total = d2.sum(dim=1).to(_accumulation_dtype(d2.device)).sum()
        pairs = None
        if exact:
            pairs = close.nonzero()
            pairs += start
        return total, close.sum(), pairs

    def refined_block_sum(self, start: int) -> float:
        """Block ``start``'s distance sum with its close pairs recomputed from the rows'
        differences (in the units of the Gram rows), a few rows at a time so that the
        pairs' indices stay within the memory bound. Synchronises with the host.
        """
        stop = min(self.n, start + self.block_rows)
        step = max(1, _REFINE_CHUNK_BYTES // (16 * (self.n - start)))
        scale = self.spread[0].clamp_min(torch.finfo(self.spread.dtype).tiny)
        totals = []
        for first in range(start, stop, step):
            total, _, pairs = self._block(first, min(stop, first + step), exact=True)
            assert pairs is not None
            exact = _pair_distance_sum(self.prediction, pairs, self.exponent[0]) / scale
            totals.extend(torch.stack([total, exact.to(total.dtype)]).tolist())
        return math.fsum(totals)


_FIELDS = (
    "cosine_mean",
    "l2_scaled",
    "l2_size",
    "l2_exponent",
    "target_variance_scaled",
    "pred_variance_scaled",
    "corr",
    "target_spread",
    "pred_spread",
    "target_exponent",
    "pred_exponent",
    "target_finite",
    "pred_finite",
)


def _pair_distance_sum(rows: torch.Tensor, pairs: torch.Tensor, exponent: torch.Tensor) -> torch.Tensor:
    """Sum of ``|rows[i] - rows[j]| * 2**-exponent`` over ``pairs`` (``[k, 2]`` indices),
    from the differences, in chunks of bounded size.
    """
    acc = _accumulation_dtype(rows.device)
    factor = _power_of_two(-exponent, rows.dtype)
    chunk = max(1, _REFINE_CHUNK_BYTES // (rows.element_size() * rows.shape[1]))
    total = torch.zeros((), dtype=acc, device=rows.device)
    tiny = torch.finfo(rows.dtype).tiny
    for begin in range(0, len(pairs), chunk):
        part = pairs[begin : begin + chunk]
        difference = rows[part[:, 0]] * factor - rows[part[:, 1]] * factor
        size = _max_abs(difference)
        difference.div_(size.clamp_min(tiny))
        total = total + torch.linalg.vector_norm(difference, dim=1).to(acc).sum() * size.to(acc)
    return total


def _unscale(value: float, exponent: int) -> float:
    """``value * 2**exponent``, saturating at infinity when the true result overflows."""
    try:
        return math.ldexp(value, exponent)
    except OverflowError:
        return math.inf


def _times_square(value: float, size: float, exponent: int) -> float:
    """``value * size**2 * 2**(2 * exponent)`` without intermediate under- or overflow."""
    mantissa, extra = math.frexp(size)
    return _unscale(value * mantissa * mantissa, 2 * (exponent + extra))


def _times(value: float, size: float, exponent: int) -> float:
    """``value * size * 2**exponent`` without intermediate under- or overflow."""
    mantissa, extra = math.frexp(size)
    return _unscale(value * mantissa, exponent + extra)


def collapse_values(prediction: torch.Tensor, target: torch.Tensor) -> tuple[float, float, float, float, float, float]:
    """The six batch statistics of RFC-0005 §3.6, in ``CollapseMetrics`` order.

    Returns ``(pred_cos_mean, pred_l2_mean, target_var_per_dim, pred_var_per_dim,
    pred_target_corr, pairwise_pred_dist_mean)`` for two prepared tensors of equal shape
    on one device. Raises :class:`~geno_lewm.errors.InputError` for a NaN or infinite
    element (the prediction's first), as :func:`prepare` would have.
    """
    with torch.inference_mode(), full_precision_matmul():
        stats = _Statistics(prediction, target)
        values = stats.payload.tolist()
        head = dict(zip(_FIELDS, values))
        if not head["pred_finite"]:
            _raise_if_non_finite(prediction, "prediction")
        if not head["target_finite"]:
            _raise_if_non_finite(target, "target")
        blocks = len(values) - len(_FIELDS)
        sums, counts = values[len(_FIELDS) :][: blocks // 2], values[len(_FIELDS) :][blocks // 2 :]
        totals = [
            stats.refined_block_sum(index * stats.block_rows) if count else block_sum
            for index, (block_sum, count) in enumerate(zip(sums, counts))
        ]
    n = stats.n
    pred_exponent, target_exponent = int(head["pred_exponent"]), int(head["target_exponent"])
    l2_mean = _times(head["l2_scaled"], head["l2_size"], int(head["l2_exponent"]))
    target_var = _times_square(head["target_variance_scaled"], head["target_spread"], target_exponent)
    pred_var = _times_square(head["pred_variance_scaled"], head["pred_spread"], pred_exponent)
    pairwise = 0.0
    if n >= 2:
        mean = math.fsum(totals) / (n * (n - 1) // 2)
        pairwise = _times(mean, head["pred_spread"], pred_exponent)
    return head["cosine_mean"], l2_mean, target_var, pred_var, head["corr"], pairwise
