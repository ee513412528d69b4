"""The torch spectral kernels: the reference's definitions on the tensor's own device.

Same steps and conventions as :mod:`geno_lewm.backends._python_spectrum`. Work is done
in float64 wherever the device has it (CPU, CUDA; float32 on Apple's MPS, with the floor
set by float32's epsilon), so float32, float16 and bfloat16 batches get float64 spectra,
and the global TF32 switch cannot touch the Gram product. Nothing but the final numbers
leaves the device, in one synchronisation per call (SIGReg first finds, in one more, the
rows it projects in the reference's order).

Solvers: ``torch.linalg.eigvalsh`` of the smaller Gram side on the device; if it fails
(a ``LinAlgError``, e.g. a convergence failure of the GPU solver), the same matrix in
float64 on the CPU; and if that fails too, the pure-Python eigen-solver.

The Gaussian KL and SIGReg have differentiable variants (:func:`gaussian_kl_tensor`,
:func:`sigreg_tensor`) that return 0-d tensors and keep the autograd graph of an input
that requires grad, so they can be used as training losses.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

import torch

from geno_lewm.backends._contract import GaussianKLTerms, SpectralValues
from geno_lewm.backends._python_spectrum import ORDERED_NORM, PHASELESS, sigreg_directions, sigreg_quadrature

__all__ = [
    "NAME",
    "covariance_eigenvalues",
    "gaussian_kl_tensor",
    "gaussian_kl_terms",
    "gaussian_kl_value",
    "sigreg_result",
    "sigreg_tensor",
    "sigreg_value",
    "spectral_values",
]

NAME = "torch"

_NO_FLOAT64 = frozenset({"mps"})
_SIGREG_BLOCK_ELEMENTS = 1 << 22


def _work_dtype(device: torch.device) -> torch.dtype:
    """float64 where the device supports it, else float32."""
    return torch.float32 if device.type in _NO_FLOAT64 else torch.float64


def _output_dtype(dtype: torch.dtype) -> torch.dtype:
    """The input's floating dtype, at least float32."""
    return torch.promote_types(dtype, torch.float32) if dtype.is_floating_point else torch.float32


_FLOAT_BITS = {torch.float64: (52, 1023, torch.int64), torch.float32: (23, 127, torch.int32)}


def _pow2(exponent: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``2**exponent`` built from its bits (exact), for a normal-range integer exponent."""
    mantissa_bits, bias, integer = _FLOAT_BITS[dtype]
    return ((exponent + bias) << mantissa_bits).to(integer).view(dtype)


def _ldexp(x: torch.Tensor, exponent: torch.Tensor) -> torch.Tensor:
    """``x * 2**exponent`` in two exact steps, so that exponents beyond the normal range
    (e.g. scaling subnormal data up) do not overflow the factor itself.
    """
    half = torch.div(exponent, 2, rounding_mode="floor")
    return x * _pow2(half, x.dtype) * _pow2(exponent - half, x.dtype)


def _exponent(value: torch.Tensor) -> torch.Tensor:
    """``e`` with ``value * 2**-e`` in ``[0.5, 1)`` (0 for 0), as a tensor on the device."""
    return torch.frexp(value).exponent.to(torch.int64)


def _eigvalsh(matrix: torch.Tensor) -> torch.Tensor:
    """Ascending eigenvalues, falling back to float64 on the CPU, then to pure Python."""
    try:
        values: torch.Tensor = torch.linalg.eigvalsh(matrix)
    except RuntimeError:  # torch.linalg.LinAlgError, or a device without the solver
        pass
    else:
        return values
    host = matrix.detach().to("cpu", torch.float64)
    try:
        values = torch.linalg.eigvalsh(host)
    except RuntimeError:
        from geno_lewm._linalg import symmetric_eigenvalues

        values = torch.tensor(symmetric_eigenvalues(host.tolist()), dtype=torch.float64)
    # (the fallbacks are computed off the autograd graph)
    return values.to(matrix.device, matrix.dtype)


class _Centred:
    """The batch scaled below 1 (``e0``), centred (constant columns exactly), scaled again (``e1``)."""

    __slots__ = ("centred", "e0", "e1", "means")

    def __init__(self, x: torch.Tensor) -> None:
        self.e0 = _exponent(x.abs().amax())
        scaled = _ldexp(x, -self.e0)
        constant = scaled.amax(dim=0) == scaled.amin(dim=0)
        self.means = torch.where(constant, scaled[0], scaled.mean(dim=0))
        centred = scaled - self.means
        self.e1 = _exponent(centred.abs().amax())
        self.centred = _ldexp(centred, -self.e1)


def _kept_eigenvalues(x: torch.Tensor, centred: _Centred) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Descending Gram eigenvalues with those at or below the floor set to 0, the mask of
    kept ones, and the Gram trace (scaled units).
    """
    n, d = x.shape
    c = centred.centred
    gram = c @ c.T if n <= d else c.T @ c
    eigenvalues = _eigvalsh(gram).flip(0)
    eps = torch.finfo(x.dtype).eps
    unit = _ldexp(torch.ones((), dtype=x.dtype, device=x.device), -centred.e1)
    noise = 4.0 * eps * unit
    floor = torch.maximum(max(n, d) * eps * eigenvalues[0], n * d * noise * noise)
    kept = eigenvalues > floor
    return torch.where(kept, eigenvalues, 0.0), kept, torch.diagonal(gram).sum()


def _normalized_std(x: torch.Tensor) -> torch.Tensor:
    peak = x.abs().amax(dim=1, keepdim=True)
    rows = x / torch.where(peak > 0.0, peak, 1.0)
    norms = torch.linalg.vector_norm(rows, dim=1, keepdim=True)
    units = rows / torch.where(norms > 0.0, norms, 1.0)
    stds = units.std(dim=0, correction=0)
    stds = torch.where(units.amax(dim=0) == units.amin(dim=0), 0.0, stds)
    return stds.mean()


def _ldexp_saturating(value: float, exponent: int) -> float:
    try:
        return math.ldexp(value, exponent)
    except OverflowError:
        return math.inf


def covariance_eigenvalues(tensor: torch.Tensor) -> list[float]:
    """Eigenvalues of the population covariance above the floor, descending."""
    x = tensor.detach().to(_work_dtype(tensor.device))
    centred = _Centred(x)
    eigenvalues, kept, _ = _kept_eigenvalues(x, centred)
    values = eigenvalues[kept] / x.shape[0]
    shift = int(2 * (centred.e0 + centred.e1))
    return [_ldexp_saturating(v, shift) for v in values.tolist()]


def spectral_values(tensor: torch.Tensor, top_k: int) -> SpectralValues:
    """The spectral metrics of a prepared tensor (see the reference's ``spectral_values``)."""
    x = tensor.detach().to(_work_dtype(tensor.device))
    n = x.shape[0]
    centred = _Centred(x)
    eigenvalues, kept, trace = _kept_eigenvalues(x, centred)
    singular = eigenvalues.sqrt()
    total = singular.sum()
    probabilities = singular / torch.where(total > 0.0, total, 1.0)
    logs = torch.where(probabilities > 0.0, probabilities, 1.0).log()
    entropy = -(probabilities * logs).sum()
    effective_rank = torch.where(total > 0.0, entropy.exp(), 0.0)
    variance = eigenvalues.sum()
    share = torch.where(variance > 0.0, eigenvalues[:top_k].sum() / torch.where(variance > 0.0, variance, 1.0), 1.0)
    stacked = torch.stack(
        [
            effective_rank,
            share.clamp(max=1.0),
            _normalized_std(x),
            kept.sum().to(x.dtype),
            trace / n,
            (centred.means * centred.means).sum(),
            centred.e0.to(x.dtype),
            centred.e1.to(x.dtype),
        ]
    )
    rank_value, share_value, std_value, rank, scaled_trace, mean_square, e0, e1 = stacked.tolist()
    if rank == 0:
        return SpectralValues(0.0, 1.0, std_value, 0, 0.0, 0.0)
    total_variance = _ldexp_saturating(scaled_trace, int(2 * (e0 + e1)))
    spread = _ldexp_saturating(scaled_trace, int(2 * e1))
    spread_share = spread / (spread + mean_square) if spread > 0.0 else 0.0
    return SpectralValues(rank_value, share_value, std_value, int(rank), total_variance, spread_share)


# ---------------------------------------------------------------- Gaussian KL
def _peak(values: torch.Tensor) -> torch.Tensor:
    """The largest magnitude of ``values`` (off the autograd graph), in one pass."""
    low, high = torch.aminmax(values.detach())
    return torch.maximum(high, -low)


def _kl_parts(x: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, str]:
    """``(mean_sq_norm, trace, log_det, method)`` as tensors (autograd kept), one sync.

    Centred as the reference centres: on the first row, then on the mean of those offsets
    (exact differences for a small spread around a large offset, and exactly 0 in a column
    whose entries are all equal), and scaled by a power of two for the Gram product (the
    column means too, for their squared norm), branch-free. A batch of identical rows gives
    ``trace = 0`` and ``log_det = D log(eps)`` exactly.
    """
    n, d = x.shape
    # centring on a constant (the first row's values) changes no derivative: x - c - mean(x - c)
    # is x - mean(x) for any c; detached, row 0's gradient has no cancellation in it
    first = x[0].detach()
    offsets = x - first
    shift = offsets.mean(dim=0)
    means = first + shift
    # the offsets' largest magnitude is within a factor of 2 of the centred values', and
    # 0 exactly when they are all 0; the exponents are clamped so that 2**-e is normal
    peaks = torch.stack([_peak(offsets), _peak(means)])
    limit = _FLOAT_BITS[x.dtype][1] - 1
    exponents = _exponent(peaks).clamp(-limit, limit)
    down, up = _pow2(-exponents, x.dtype), _pow2(exponents, x.dtype)
    # in place: no operation saves the offsets for the backward pass, and one [N, D] buffer is
    # much cheaper than two (each new one costs page faults on the CPU)
    scaled = offsets.sub_(shift).mul_(down[0])  # (offsets - shift) * 2**-e, exactly
    gram = (scaled @ scaled.T if n <= d else scaled.T @ scaled) / n
    size = gram.shape[0]
    trace = torch.diagonal(gram).sum() * up[0] * up[0]
    side = gram * up[0] * up[0]
    scaled_means = means * down[1]
    mean_sq_norm = (scaled_means * scaled_means).sum() * up[1] * up[1]
    extra = (d - size) * math.log(eps)
    machine = torch.finfo(x.dtype).eps
    identity = torch.eye(size, dtype=x.dtype, device=x.device)
    factor, info = torch.linalg.cholesky_ex(side + eps * identity)
    diagonal = torch.diagonal(factor)
    finite = torch.isfinite(mean_sq_norm + trace)
    trusted = (info == 0) & (max(n, d) * machine * trace < eps) & (diagonal > 0.0).all()
    is_finite, is_trusted, is_zero = torch.stack([finite, trusted & finite, peaks[0] == 0.0]).tolist()
    if not is_finite:
        inf = torch.full((), math.inf, dtype=x.dtype, device=x.device)
        return inf, inf, inf, "overflow"
    if is_zero:  # every row the same: no direction has variance
        return mean_sq_norm, trace, torch.full((), d * math.log(eps), dtype=x.dtype, device=x.device), "cholesky"
    if is_trusted:
        return mean_sq_norm, trace, 2.0 * diagonal.log().sum() + extra, "cholesky"
    eigenvalues = _eigvalsh(side)
    floor = max(n, d) * machine * eigenvalues[-1].detach().clamp(min=0.0)
    log_det = torch.log(torch.where(eigenvalues > floor, eigenvalues, 0.0) + eps).sum() + extra
    return mean_sq_norm, trace, log_det, "eigenvalues"


def gaussian_kl_terms(tensor: torch.Tensor, eps: float) -> GaussianKLTerms:
    """``(mean_sq_norm, trace, log_det, method)`` as in the reference, as Python floats."""
    x = tensor.detach().to(_work_dtype(tensor.device))
    mean_sq_norm, trace, log_det, method = _kl_parts(x, eps)
    a, b, c = torch.stack([mean_sq_norm, trace, log_det]).tolist()
    return GaussianKLTerms(a, b, c, method)


def gaussian_kl_tensor(tensor: torch.Tensor, eps: float) -> torch.Tensor:
    """``0.5 * (||mu||^2 + tr(Sigma) - log det(Sigma + eps I) - D)`` as a 0-d tensor.

    Differentiable when ``tensor`` requires grad; computed in float64 where the device
    has it and returned in the input's dtype (at least float32).
    """
    x = tensor.to(_work_dtype(tensor.device))
    mean_sq_norm, trace, log_det, method = _kl_parts(x, eps)
    if method == "overflow":
        return torch.full((), math.inf, dtype=_output_dtype(tensor.dtype), device=tensor.device)
    value = 0.5 * (mean_sq_norm + trace - log_det - x.shape[1])
    return value.to(_output_dtype(tensor.dtype))


# --------------------------------------------------------------------- SIGReg
@lru_cache(maxsize=8)
def _directions(seed: int, dim: int, slices: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """The reference's directions as a ``[D, slices]`` tensor on ``device``."""
    return torch.tensor(sigreg_directions(seed, dim, slices), dtype=dtype, device=device).T.contiguous()


def _ordered_projections(rows: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
    """``rows @ directions`` with every sum taken as the reference's
    :func:`~geno_lewm.backends._python_spectrum.ordered_dot` takes it: products rounded,
    then added column by column, left to right (separate multiply and add kernels, so no
    fused multiply-add), for the reference's bits. Differentiable; ``D`` small kernels.
    """
    total = rows[:, :1] * directions[0] + 0.0  # 0 + a_0 b_0, as the reference starts
    for j in range(1, rows.shape[1]):
        total = total + rows[:, j : j + 1] * directions[j]
    return total


def _sigreg(x: torch.Tensor, seed: int, slices: int, knots: int, t_max: float) -> torch.Tensor:
    """The statistic as a 0-d tensor (autograd kept). Rows of norm at least
    :data:`~geno_lewm.backends._python_spectrum.ORDERED_NORM` are projected in the
    reference's order; finding them costs one host synchronisation.
    """
    n, d = x.shape
    t_values, phi_values, weight_values = sigreg_quadrature(knots, t_max)
    options: dict[str, Any] = {"dtype": x.dtype, "device": x.device}
    t = torch.tensor(t_values, **options)
    phi = torch.tensor(phi_values, **options)
    weights = torch.tensor(weight_values, **options) * (t > 0.0)
    directions = _directions(seed, d, slices, x.device, x.dtype)
    detached = x.detach()
    squares = (detached * detached).sum(dim=1)
    large = torch.nonzero(~(squares < ORDERED_NORM * ORDERED_NORM)).flatten()  # an overflowed norm counts
    large_rows = x[large] if large.numel() else None
    block = max(1, _SIGREG_BLOCK_ELEMENTS // (n * knots))
    statistics = []
    for start in range(0, slices, block):
        projections = x @ directions[:, start : start + block]  # [N, block]
        if large_rows is not None:
            ordered = _ordered_projections(large_rows, directions[:, start : start + block])
            projections = projections.index_copy(0, large, ordered)
        usable = (projections.abs() < PHASELESS).unsqueeze(-1)  # False for inf and nan too
        angles = torch.where(usable, projections.unsqueeze(-1), 0.0) * t  # [N, block, knots]
        cos_mean = torch.where(usable, angles.cos(), 0.0).sum(dim=0) / n
        sin_mean = torch.where(usable, angles.sin(), 0.0).sum(dim=0) / n
        error = (cos_mean - phi).square() + sin_mean.square()
        statistics.append(n * (error @ weights))
    return torch.cat(statistics).mean()


def sigreg_value(tensor: torch.Tensor, seed: int, slices: int, knots: int, t_max: float) -> float:
    """The SIGReg statistic of a prepared tensor, as a Python float."""
    x = tensor.detach().to(_work_dtype(tensor.device))
    return float(_sigreg(x, seed, slices, knots, t_max).item())


def sigreg_tensor(tensor: torch.Tensor, seed: int, slices: int, knots: int, t_max: float) -> torch.Tensor:
    """The SIGReg statistic as a 0-d tensor, differentiable when ``tensor`` requires grad."""
    x = tensor.to(_work_dtype(tensor.device))
    return _sigreg(x, seed, slices, knots, t_max).to(_output_dtype(tensor.dtype))


# ------------------------------------------------------------ natural results
def _differentiable(source: Any, prepared: torch.Tensor) -> torch.Tensor:
    """The tensor to compute on: the caller's own when it requires grad (the prepared
    one is detached), else the prepared one.
    """
    if isinstance(source, torch.Tensor) and source.requires_grad and source.shape == prepared.shape:
        return source
    return prepared


def gaussian_kl_value(source: Any, tensor: torch.Tensor, eps: float) -> torch.Tensor:
    """:func:`gaussian_kl_tensor` of ``source`` when it requires grad, else of the prepared tensor."""
    return gaussian_kl_tensor(_differentiable(source, tensor), eps)


def sigreg_result(
    source: Any, tensor: torch.Tensor, *, seed: int, slices: int, knots: int, t_max: float
) -> torch.Tensor:
    """:func:`sigreg_tensor` of ``source`` when it requires grad, else of the prepared tensor."""
    return sigreg_tensor(_differentiable(source, tensor), seed, slices, knots, t_max)
