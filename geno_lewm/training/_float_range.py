"""Arithmetic at the ends of the float64 range, for the credit diagnostics: exact scaling
by powers of two (also by factors that are not themselves floats), exact comparisons of
scaled values, means of differences whose sum overflows, and a soft-min that never forms
``v / lam``. Each keeps a finite input's result finite and accurate where the direct
formula would give ``inf``, ``nan`` or a silent zero (``rfcs/0009-training-dynamics.md`` §4).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

__all__ = [
    "ldexp_or_inf",
    "max_exponent",
    "mean_difference",
    "rows_unit_scaled",
    "scaled_below",
    "soft_min",
    "times_power_of_two",
    "unit_scaled",
]

# Exponents ``e`` for which ``2.0**e`` is a finite, normal float64: one multiplication by
# such a power of two is exact (short of underflow in the result).
_MIN_NORMAL_EXPONENT = -1022
_MAX_FINITE_EXPONENT = 1023


def times_power_of_two(tensor: torch.Tensor, exponent: int) -> torch.Tensor:
    """``tensor * 2**exponent``, for any ``exponent`` a float64 scaling can need.

    Bringing a subnormal maximum (down to ``2**-1074``) up to 1 needs ``2**1074``, which
    is not a float64: the factor is then applied in two halves, each finite.
    """
    if _MIN_NORMAL_EXPONENT <= exponent <= _MAX_FINITE_EXPONENT:
        return tensor * math.ldexp(1.0, exponent)
    half = exponent // 2
    return (tensor * math.ldexp(1.0, half)) * math.ldexp(1.0, exponent - half)


def max_exponent(tensor: torch.Tensor) -> int | None:
    """The ``e`` with ``max|tensor|`` in ``[2**(e-1), 2**e)``; ``None`` for an empty or
    all-zero ``tensor`` (which must be finite).
    """
    if not tensor.numel():
        return None
    bounds = tensor.aminmax()  # one pass, and no |tensor| copy
    largest = float((-bounds.min).maximum(bounds.max).item())
    return None if largest == 0.0 else math.frexp(largest)[1]


def unit_scaled(tensor: torch.Tensor) -> tuple[torch.Tensor, int] | None:
    """``(tensor * 2**-e, e)`` with the largest magnitude of the result in ``[0.5, 1)``;
    ``None`` for an empty or all-zero ``tensor`` (which must be finite).
    """
    exponent = max_exponent(tensor)
    return None if exponent is None else (times_power_of_two(tensor, -exponent), exponent)


def _powers_of_two(th: Any, exponents: torch.Tensor) -> torch.Tensor:
    """``2.0**k`` for each integer ``k`` in ``[-1022, 1023]``, built from its float64 bit
    pattern (biased exponent, zero mantissa), so exact on every device.
    """
    bits: torch.Tensor = (exponents.to(th.int64) + 1023) << 52
    return bits.view(th.float64)


def rows_unit_scaled(th: Any, rows: torch.Tensor) -> torch.Tensor:
    """Each row of a finite float64 ``[B, F]`` tensor times its own power of two, so that its
    largest magnitude lies in ``[0.5, 1)``; an all-zero row stays zero.

    Per row, not per tensor: a batch may hold rows near ``1e300`` beside subnormal ones,
    and one common factor would overflow the first or flush the second to zero. Scaling by
    a power of two changes only exponents, so it is exact, short of entries more than
    ``2**1021`` times smaller than their row's largest (which flush towards zero, far
    below what the row's norm or dot products resolve). A factor up to ``2**1073`` (for a
    subnormal row) is not a float64: every factor is applied in two halves, each a normal
    power of two, the larger step first, so no intermediate overflows, and one that
    underflows belongs to an entry that the whole factor flushes anyway.
    """
    _, exponents = th.frexp(rows.abs().amax(dim=1))  # 0 for an all-zero row: factor 1
    shift = -exponents.to(th.int64)
    half = th.div(shift, 2, rounding_mode="floor")
    first = _powers_of_two(th, half).unsqueeze(1)
    second = _powers_of_two(th, shift - half).unsqueeze(1)
    scaled: torch.Tensor = (rows * first) * second
    return scaled


def ldexp_or_inf(value: float, exponent: int) -> float:
    """``value * 2**exponent`` as IEEE arithmetic rounds it: ``±inf`` past the float range,
    where :func:`math.ldexp` raises ``OverflowError``.
    """
    try:
        return math.ldexp(value, exponent)
    except OverflowError:
        return math.copysign(math.inf, value)


def scaled_below(value: float, exponent: int, threshold: float) -> bool:
    """Whether ``value * 2**exponent < threshold`` (both positive), decided exactly,
    without forming the product (which may lie outside the float range).
    """
    value_fraction, value_exponent = math.frexp(value)
    bound_fraction, bound_exponent = math.frexp(threshold)
    return (value_exponent + exponent, value_fraction) < (bound_exponent, bound_fraction)


def mean_difference(left: torch.Tensor, right: torch.Tensor, *, absolute: bool = False) -> float:
    """``mean(left - right)`` (or ``mean|left - right|``) of finite float64 tensors.

    The plain mean is returned when it is finite. Otherwise a difference or the sum
    overflowed (values near ``±1.8e308``): the halves are subtracted instead, which cannot
    overflow, and their mean is taken at a power-of-two scale. The result is then ``±inf``
    only when the mean itself lies outside the float range.
    """
    difference = left - right
    mean = float((difference.abs() if absolute else difference).mean().item())
    if math.isfinite(mean):
        return mean
    halves = left * 0.5 - right * 0.5
    scaled = unit_scaled(halves.abs() if absolute else halves)
    if scaled is None:
        return 0.0
    unit, exponent = scaled
    return ldexp_or_inf(float(unit.mean().item()), exponent + 1)


# Below this largest ``x_k = (v_k - v_min) / lam`` the soft-min offset equals the mean gap to
# within float64 rounding (the next term of its expansion is smaller by a factor ``x_max``).
_SOFT_MIN_LINEAR_LIMIT = 2.0**-53


def soft_min(th: Any, values: torch.Tensor, lam: float) -> torch.Tensor:
    """``-lam * log(mean_k exp(-v_k / lam))`` over dim 0 of finite float64 ``values`` ``[K, B]``.

    Written as ``v_min + lam * c`` with ``x_k = (v_k - v_min) / lam >= 0`` and
    ``c = -log(mean_k exp(-x_k))`` in ``[0, min(log K, mean x)]``, so no ``-v / lam`` or
    ``1 / lam`` is ever formed: a gap too large for ``lam`` gives ``x = inf`` and a term
    ``exp(-inf) = 0``, never ``inf - inf``. ``c`` is computed three ways by the size of
    ``x_max``, each accurate where it is used:

    * ``x_max >= 1``: ``log K - log(sum_k exp(-x_k))``, the sum in ``[1, K]`` (the minimum
      contributes 1). For ``lam`` so small that every other term underflows this is
      ``log(K / #minima)``, and ``v_min + lam * c`` rounds to ``v_min``;
    * ``2**-53 <= x_max < 1``: ``-log1p(mean_k expm1(-x_k))``, which keeps the relative
      accuracy that ``log(sum exp) - log K`` loses to cancellation when ``lam`` is large;
    * ``x_max < 2**-53``: the offset is the mean gap ``mean_k (v_k - v_min)`` (``x`` itself
      may have underflowed).

    Gaps past the float range (values of both signs near ``1.8e308``) are taken from the
    halved values, and an offset ``lam * c`` past it is added at half scale; the result is
    clamped to ``[v_min, v_max]``, where the exact value lies.
    """
    count = values.shape[0]
    low = values.amin(dim=0)
    high = values.amax(dim=0)
    gaps = values - low
    x = th.where(th.isinf(gaps), (values * 0.5 - low * 0.5) / lam * 2.0, gaps / lam)
    x_max = x.amax(dim=0)
    steep = math.log(count) - th.log(th.exp(-x).sum(dim=0))
    gentle = -th.log1p(th.expm1(-x).mean(dim=0))
    c = th.where(x_max >= 1.0, steep, gentle)
    offset = lam * c
    target = th.where(th.isinf(offset), (low * 0.5 + (lam * 0.5) * c) * 2.0, low + offset)
    target = th.where(x_max < _SOFT_MIN_LINEAR_LIMIT, low + gaps.mean(dim=0), target)
    bounded: torch.Tensor = th.minimum(th.maximum(target, low), high)
    return bounded
