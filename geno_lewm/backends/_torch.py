"""The torch backend: RFC-0005 collapse metrics (and the prediction-dynamics softmax
statistics) on the tensor's own device.

Gives the pure-Python reference's numbers with the same conventions at the edges and the
same :class:`~geno_lewm.errors.InputError` for the same bad input, computed where the
tensors already are (CPU, CUDA, ...). ``rfcs/0007-vectorized-backends.md`` has the
design; in short:

* float64 tensors (and integer ones, converted exactly) are computed in float64 and agree
  with the reference to 1e-9 relative; float32, float16 and bfloat16 tensors are widened
  to float64 for the O(N * D) statistics and their Gram blocks computed in float32, with
  the tolerance the RFC documents (1e-5 relative; about 1e-8 observed);
* float64 data is kept away from overflow and underflow by exact powers of two chosen on
  the device, so nothing is copied to the host to decide them (float32-range data needs
  no rescaling once widened);
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
from geno_lewm.backends._contract import (
    FLAG_RATIO_FLOAT32,
    FLAG_RATIO_FLOAT64,
    BatchShape,
    CollapseValues,
    PredictionSums,
    PreparedPair,
    SpectralKernels,
    pairwise_block_rows,
)
from geno_lewm.errors import InputError

__all__ = [
    "NAME",
    "collapse_values",
    "describe",
    "full_precision_matmul",
    "prediction_sums",
    "prepare",
    "prepare_pair",
    "spectral",
]

NAME = "torch"

_REFINE_CHUNK_BYTES = 32 * 2**20
_SAFE_EXPONENT = {torch.float64: 400, torch.float32: 44}
"""A matrix whose largest row norm lies within ``[2**-b, 2**b]`` is used as it is: its
squares and their sums (over up to 2**40 elements in float32) neither overflow nor lose
precision to underflow. float64's bound is the reference's."""
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
        from geno_lewm.backends import _numpy
    except ImportError:  # NumPy is an optional extra: validate in pure Python instead
        matrix = as_python_matrix(value, name)
        flat = array("d", chain.from_iterable(matrix))
        return torch.frombuffer(flat, dtype=torch.float64).reshape(len(matrix), len(matrix[0]))
    return torch.from_numpy(_numpy.prepare(value, name))


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


def prepare_pair(prediction: Any, target: Any) -> PreparedPair:
    """Validate and convert a prediction/target pair for :func:`collapse_values`.

    Both end up on one device: the prediction's if it is a tensor, else the target's
    (anything else is converted onto it). Errors come in the reference's order
    (prediction, then target, then a shape mismatch). The finiteness of tensors is
    *not* checked here but in :func:`collapse_values`, inside its single host
    synchronisation; it raises the same error the reference would have raised here.
    Use :func:`prepare` where the tensors must be known finite on return.

    Returns the two tensors and the prediction's shape (:func:`describe`).
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
    return PreparedPair(p, t, describe(p))


def describe(matrix: torch.Tensor) -> BatchShape:
    """Shape, dtype (the one computed in) and device of a prepared tensor."""
    n, d = matrix.shape
    return BatchShape(int(n), int(d), str(matrix.dtype).removeprefix("torch."), str(matrix.device))


def spectral() -> SpectralKernels:
    """The torch spectral kernels (:mod:`geno_lewm.backends._torch_spectrum`)."""
    from geno_lewm.backends import _torch_spectrum

    return _torch_spectrum


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


def _divisor(values: torch.Tensor) -> torch.Tensor:
    """``values`` with zeros replaced by 1: what to divide by to bring data of that largest
    magnitude near 1 (an all-zero block stays zero). Subnormal values are kept, so the
    quotient and the factor multiplied back agree exactly.
    """
    return values.masked_fill(values == 0, 1.0)


def _power_of_two(exponents: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``2 ** exponents`` exactly, in ``dtype``."""
    return torch.ldexp(torch.ones((), dtype=dtype, device=exponents.device), exponents.to(dtype))


Head = dict[str, "torch.Tensor | float"]
"""What a path of :class:`_Kernel` produces for the host: named 0-d tensors (sent in the
single transfer) and Python floats (known without looking at the data).

``pred_finite`` / ``target_finite`` are finite exactly when the input is;
``cosine_mean``; ``l2_mean`` in units of ``l2_size * 2**l2_exponent``; the correlation's
sums ``within_*`` (dot products of the flattened centred matrices) and ``between_*``
(those of the column-mean offsets, to be multiplied by N), in each matrix's own scale;
``pred_squares`` / ``target_squares`` the sums of squared centred values in units of
``(unit * 2**exponent)**2``; the Gram block sums in units of
``gram_unit * 2**pred_exponent``."""


class _Kernel:
    """The device-side part of one call: everything up to the single transfer.

    Inputs whose values fit float32 (float32, float16, bfloat16) are widened to float64
    where the device has it, and then need no rescaling at all: their squares and sums
    cannot overflow or underflow there. Everything else (float64 input, or a device
    without float64) is rescaled by exact powers of two, chosen on the device.

    ``payload`` is the vector sent to the host: the tensor entries of ``head`` (named by
    ``fields``), then one distance sum and one close-pair count per Gram block.
    """

    def __init__(self, prediction: torch.Tensor, target: torch.Tensor) -> None:
        work = torch.promote_types(prediction.dtype, target.dtype)
        self.acc = _accumulation_dtype(prediction.device)
        self.n, self.d = prediction.shape
        widened = work == torch.float32 and self.acc == torch.float64
        self.prediction = prediction
        x = torch.stack((prediction, target)).to(self.acc if widened else work)
        self.head = self._widened(x) if widened else self._scaled(x, work)
        self.gram_squares = torch.einsum("nd,nd->n", self.gram_rows, self.gram_rows)
        self.block_rows = pairwise_block_rows(self.n, self.gram_rows.element_size())
        self.ratio = FLAG_RATIO_FLOAT32 if self.gram_rows.dtype == torch.float32 else FLAG_RATIO_FLOAT64
        sums, counts = [], []
        for start in range(0, self.n - 1, self.block_rows):
            block_sum, count, _ = self._block(start, min(self.n, start + self.block_rows), exact=False)
            sums.append(block_sum)
            counts.append(count)
        tensors = {name: value for name, value in self.head.items() if isinstance(value, torch.Tensor)}
        self.fields = tuple(tensors)
        acc = self.acc
        head = [value if value.dtype == acc else value.to(acc) for value in tensors.values()]
        self.payload = torch.stack(head + sums + counts)

    # ----------------------------------------------------------- the two paths
    def _widened(self, x: torch.Tensor) -> Head:
        """float32-range values in float64: no scaling anywhere but for the Gram rows."""
        squares = torch.einsum("knd,knd->kn", x, x)
        dots = torch.einsum("nd,nd->n", x[0], x[1])
        cosine = (dots / (squares[0] * squares[1]).sqrt()).nan_to_num_(0.0).clamp_(-1.0, 1.0).mean()
        l2_mean = torch.linalg.vector_norm(x[0] - x[1], dim=1).mean()
        within, between = self._centre(x)
        centred = x[0]
        unit = centred.abs().amax()
        # float32-range data: the largest centred magnitude is 0 or far above float64's subnormals
        self.gram_rows = (centred / unit.clamp_min(torch.finfo(self.acc).tiny)).to(torch.float32)
        self.refine_factor: torch.Tensor | None = None
        self.gram_unit = unit
        pp, pt, _, tt = within.flatten()
        bpp, bpt, _, btt = between.flatten()
        return {
            "pred_finite": pp,
            "target_finite": tt,
            "cosine_mean": cosine,
            "l2_mean": l2_mean,
            "l2_size": 1.0,
            "l2_exponent": 0.0,
            "within_pp": pp,
            "within_pt": pt,
            "within_tt": tt,
            "between_pp": bpp,
            "between_pt": bpt,
            "between_tt": btt,
            "pred_squares": pp,
            "target_squares": tt,
            "pred_unit": 1.0,
            "target_unit": 1.0,
            "pred_exponent": 0.0,
            "target_exponent": 0.0,
            "gram_unit": unit,
        }

    def _scaled(self, x: torch.Tensor, work: torch.dtype) -> Head:
        """Any range: rows divided by their own largest magnitude for the cosine, the row
        differences by theirs for the distance (both on the data as given), then each
        matrix divided by a power of two that brings its largest magnitude near 1 and,
        once centred, by its largest centred magnitude.
        """
        largest = _max_abs(x, 2, keepdim=True)
        rows = x / _divisor(largest)
        norms = torch.linalg.vector_norm(rows, dim=2)
        dots = torch.einsum("nd,nd->n", rows[0], rows[1])
        cosine = (dots / (norms[0] * norms[1])).nan_to_num_(0.0).clamp_(-1.0, 1.0).to(self.acc).mean()
        del rows
        l2_mean, l2_exponent = self._row_distance(x)

        # the reference's rule: rescale a matrix only when its largest row norm (or, where
        # that overflows, the row's largest magnitude) lies outside [2**-b, 2**b]
        largest = largest[..., 0]
        sizes = norms * largest
        magnitude = torch.where(torch.isinf(sizes), largest, sizes).amax(dim=1)
        bound = _SAFE_EXPONENT[work]
        exponent = torch.frexp(magnitude).exponent.clamp_min(3 - math.frexp(torch.finfo(work).max)[1])
        inside = (magnitude >= 2.0**-bound) & (magnitude <= 2.0**bound)
        exponent = torch.where(inside, torch.zeros_like(exponent), exponent)
        x.mul_(_power_of_two(-exponent, work)[:, None, None])
        within, between = self._centre(x)
        spread = _max_abs(x, (1, 2))
        x.div_(_divisor(spread)[:, None, None])
        squares = torch.einsum("knd,knd->k", x, x)
        self.gram_rows = x[0]
        self.refine_factor = _power_of_two(-exponent[0], work)
        self.gram_unit = spread[0]
        pp, pt, _, tt = within.flatten()
        bpp, bpt, _, btt = between.flatten()
        return {
            "pred_finite": magnitude[0],
            "target_finite": magnitude[1],
            "cosine_mean": cosine,
            "l2_mean": l2_mean,
            "l2_size": 1.0,
            "l2_exponent": l2_exponent,
            "within_pp": pp,
            "within_pt": pt,
            "within_tt": tt,
            "between_pp": bpp,
            "between_pt": bpt,
            "between_tt": btt,
            "pred_squares": squares[0],
            "target_squares": squares[1],
            "pred_unit": spread[0],
            "target_unit": spread[1],
            "pred_exponent": exponent[0],
            "target_exponent": exponent[1],
            "gram_unit": spread[0],
        }

    def _row_distance(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean ``|p_i - t_i|`` as ``(mean, exponent)``, the mean in units of ``2**exponent``.

        Each difference row is divided by its largest magnitude before squaring and its
        norm added back at a common exponent; a row whose difference overflows (values
        near the largest float, of opposite signs) is taken between the halved rows.
        """
        direct = x[0] - x[1]
        overflow = torch.isinf(direct).any(dim=1, keepdim=True)
        difference = torch.where(overflow, x[0] * 0.5 - x[1] * 0.5, direct)
        largest = _max_abs(difference, 1, keepdim=True)
        norms = torch.linalg.vector_norm(difference / _divisor(largest), dim=1)
        mantissa, exponent = torch.frexp(largest[:, 0])
        exponent = exponent + overflow[:, 0]
        top = exponent.max()
        terms = norms * mantissa * _power_of_two(exponent - top, x.dtype)
        return terms.to(self.acc).sum() / self.n, top

    def _centre(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Centre ``x`` in place on its column means; return the 2 x 2 matrices of the
        correlation's sums: ``within`` (dot products of the flattened centred matrices)
        and ``between`` (dot products of the column means' offsets from their mean; the
        host multiplies them by N).

        Means are accumulated as offsets from the first row, so a large common level
        costs no digits and a constant column centres to exactly 0; the column means
        are likewise taken relative to the first element before their offsets.
        """
        first = x[:, :1].clone()
        x.sub_(first)
        shift = x.mean(dim=1, keepdim=True)
        x.sub_(shift)
        flat = x.reshape(2, -1)
        within = flat @ flat.T
        relative = (first[:, 0] - first[:, 0, :1]) + shift[:, 0]
        offsets = relative - relative.mean(dim=1, keepdim=True)
        return within, offsets @ offsets.T

    # -------------------------------------------------------------- Gram blocks
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
        # on CPUs a float64 sum of float32 makes a float64 copy: sum the rows first
        total = d2.sum(dim=1).to(self.acc).sum() if d2.device.type == "cpu" else d2.sum(dtype=self.acc)
        pairs = None
        if exact:
            pairs = close.nonzero()
            pairs += start
        return total, close.sum(dtype=self.acc), pairs

    def refined_block_sum(self, start: int) -> float:
        """Block ``start``'s distance sum with its close pairs recomputed from the rows'
        differences (in the units of the Gram rows), a few rows at a time so that the
        pairs' indices stay within the memory bound. Synchronises with the host.
        """
        stop = min(self.n, start + self.block_rows)
        step = max(1, _REFINE_CHUNK_BYTES // (16 * (self.n - start)))
        unit = _divisor(self.gram_unit).to(self.acc)
        totals = []
        for first in range(start, stop, step):
            total, _, pairs = self._block(first, min(stop, first + step), exact=True)
            assert pairs is not None
            exact = _pair_distance_sum(self.prediction, pairs, self.refine_factor, self.acc) / unit
            totals.extend(torch.stack([total, exact]).tolist())
        return math.fsum(totals)


def _pair_distance_sum(
    rows: torch.Tensor, pairs: torch.Tensor, factor: torch.Tensor | None, acc: torch.dtype
) -> torch.Tensor:
    """Sum of ``|rows[i] - rows[j]| * factor`` over ``pairs`` (``[k, 2]`` indices), from
    the differences (each chunk divided by its largest magnitude before squaring), in
    chunks of bounded size. ``factor`` is an exact power of two, or ``None`` for 1.
    """
    chunk = max(1, _REFINE_CHUNK_BYTES // (rows.element_size() * rows.shape[1]))
    total = torch.zeros((), dtype=acc, device=rows.device)
    for begin in range(0, len(pairs), chunk):
        part = pairs[begin : begin + chunk]
        first, second = rows[part[:, 0]], rows[part[:, 1]]
        if factor is not None:
            first, second = first * factor, second * factor
        difference = first - second
        size = _max_abs(difference)
        difference.div_(_divisor(size))
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


def _correlation(head: dict[str, float], n: int) -> float:
    """Pearson correlation from the centred sums, with the reference's conventions."""
    ss_p = head["within_pp"] + n * head["between_pp"]
    ss_t = head["within_tt"] + n * head["between_tt"]
    if ss_p == 0.0 or ss_t == 0.0:
        return 0.0
    cross = head["within_pt"] + n * head["between_pt"]
    return min(1.0, max(-1.0, cross / math.sqrt(ss_p) / math.sqrt(ss_t)))


def collapse_values(prediction: torch.Tensor, target: torch.Tensor) -> CollapseValues:
    """The six batch statistics of RFC-0005 §3.6 of two prepared tensors of equal shape
    on one device. Raises :class:`~geno_lewm.errors.InputError` for a NaN or infinite
    element (the prediction's first), as :func:`prepare` would have.

    Everything runs on the tensors' device; the host receives one small vector (a few
    sums per statistic and two numbers per Gram block) in a single synchronisation and
    finishes the arithmetic in Python floats.
    """
    with torch.inference_mode(), full_precision_matmul():
        kernel = _Kernel(prediction, target)
        values = kernel.payload.tolist()
        head = {name: float(value) for name, value in kernel.head.items() if not isinstance(value, torch.Tensor)}
        head.update(zip(kernel.fields, values))
        if not math.isfinite(head["pred_finite"]):
            _raise_if_non_finite(prediction, "prediction")
        if not math.isfinite(head["target_finite"]):
            _raise_if_non_finite(target, "target")
        blocks = values[len(kernel.fields) :]
        sums, counts = blocks[: len(blocks) // 2], blocks[len(blocks) // 2 :]
        totals = [
            kernel.refined_block_sum(index * kernel.block_rows) if count else block_sum
            for index, (block_sum, count) in enumerate(zip(sums, counts))
        ]
    n, d = kernel.n, kernel.d
    pred_exponent, target_exponent = int(head["pred_exponent"]), int(head["target_exponent"])
    l2_mean = _times(head["l2_mean"], head["l2_size"], int(head["l2_exponent"]))
    target_var = _times_square(head["target_squares"] / (n * d), head["target_unit"], target_exponent)
    pred_var = _times_square(head["pred_squares"] / (n * d), head["pred_unit"], pred_exponent)
    pairwise = 0.0
    if n >= 2:
        mean = math.fsum(totals) / (n * (n - 1) // 2)
        pairwise = _times(mean, head["gram_unit"], pred_exponent)
    cosine = min(1.0, max(-1.0, head["cosine_mean"]))
    return CollapseValues(cosine, l2_mean, target_var, pred_var, _correlation(head, n), pairwise)


# ------------------------------------------------------------ prediction dynamics
def prediction_sums(logits: torch.Tensor) -> PredictionSums:
    """Softmax statistics of prepared logits ``[N, C]`` on their own device, with the
    reference's definitions and edge conventions.

    Float64 and integer logits are computed in float64, every other floating type
    (float32, float16, bfloat16) in float32, which is what such logits carry anyway; the
    per-row results are summed in float64. The two sums and the class counts come back to
    the host in one transfer.
    """
    with torch.no_grad():
        shifted = logits - logits.amax(dim=1, keepdim=True)
        weights = torch.exp(shifted)
        total = weights.sum(dim=1)
        # Terms whose weight underflowed to 0 are dropped: 0 * (-inf) would otherwise be NaN.
        terms = torch.where(weights > 0.0, weights * shifted, 0.0)
        entropy = torch.clamp(torch.log(total) - terms.sum(dim=1) / total, min=0.0)
        counts = torch.bincount(logits.argmax(dim=1), minlength=logits.shape[1])
        sums = torch.stack([entropy.sum(dtype=torch.float64), total.reciprocal().sum(dtype=torch.float64)])
        packed = torch.cat([sums, counts.to(torch.float64)]).tolist()
    return PredictionSums(packed[0], packed[1], tuple(int(c) for c in packed[2:]))
