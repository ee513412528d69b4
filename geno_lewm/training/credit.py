"""Credit-assignment diagnostics: whether a learning signal points where the loss goes down.

A training method that does not backpropagate end to end (local losses, synthetic
gradients, costate or value estimates, target propagation) hands each hidden state ``h``
``[B, ...]`` a credit signal ``a`` of the same shape in place of the true gradient. Given
a differentiable per-sample loss ``f(h)`` (shape ``[B]``), these checks measure how good
that signal is:

* :func:`backprop_cosine` — mean cosine between ``a`` and the true gradient ``df/dh``;
  :func:`gradient_cosine` the same against a gradient given directly (a closed-form
  costate, a gradient computed elsewhere);
* :func:`nudging_test` — the mean change in loss after a small step against the
  RMS-normalised ``a`` (negative: the signal points downhill);
* :func:`perturbation_correlation` — Pearson correlation between the changes ``a``
  predicts, ``<a, eps v>``, and the true changes ``f(h + eps v) - f(h)`` over seeded
  random unit directions ``v``;
* :func:`feature_drift` — per parameter, how far the weights moved from their start,
  ``||W_t - W_0||_F / ||W_0||_F``;
* :func:`bridge_residual` — how far a value network is from its soft-min bootstrap
  target over K noisy next states.

Each returns a Python float (or a dict of floats): nothing returned holds an autograd
graph, the inputs are never modified, and the model's ``.grad`` buffers are left alone
(gradients are taken with :func:`torch.autograd.grad` with respect to a copy of ``h``
only). Randomness comes from a private generator seeded by ``seed``, so results are
reproducible and the global random state is untouched. :func:`evaluate_credit` runs the
first three and :func:`record_credit_diagnostics` publishes them as gauges and log
events. Definitions: ``rfcs/0009-training-dynamics.md``.

Example
-------
>>> import torch
>>> h = torch.tensor([[1.0, 2.0], [0.5, -1.0]])
>>> loss = lambda x: 0.5 * (x**2).sum(dim=1)  # gradient: h itself
>>> backprop_cosine(h, h.clone(), loss), nudging_test(h, h.clone(), loss) < 0
(1.0, True)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

from geno_lewm._protocols import MetricLogger, adapt_logger
from geno_lewm._torch import require_torch
from geno_lewm._validation import (
    check_callable,
    check_instance,
    check_non_negative_int,
    check_positive_finite,
    check_positive_int,
    wrong_type,
)
from geno_lewm.errors import InputError
from geno_lewm.metrics import MetricRegistry
from geno_lewm.training._family import MetricRow, MetricTable
from geno_lewm.training._float_range import (
    ldexp_or_inf,
    max_exponent,
    mean_difference,
    rows_unit_scaled,
    scaled_below,
    soft_min,
    times_power_of_two,
    unit_scaled,
)
from geno_lewm.training._recording import log_metric_events, set_gauges

if TYPE_CHECKING:
    import torch

    LossFn = Callable[[torch.Tensor], torch.Tensor]

__all__ = [
    "NUDGE_RMS_EPS",
    "CreditDiagnostics",
    "backprop_cosine",
    "bridge_residual",
    "evaluate_credit",
    "feature_drift",
    "gradient_cosine",
    "nudging_test",
    "perturbation_correlation",
    "record_credit_diagnostics",
]


NUDGE_RMS_EPS = 1e-6
"""Added to each row's RMS before normalising the signal in :func:`nudging_test`."""


# ------------------------------------------------------------------ validation
def _check_state(th: Any, value: Any, name: str) -> torch.Tensor:
    """``value`` as a detached tensor of shape ``[B, ...]`` with ``B >= 1``, finite and floating."""
    if not isinstance(value, th.Tensor):
        raise InputError(
            f"{name!r} must be a torch.Tensor of shape [B, ...]: got {type(value).__name__}",
            details={"field": name, "type": type(value).__name__},
        )
    if not value.is_floating_point():
        raise InputError(
            f"{name!r} must hold floating-point numbers: got dtype {str(value.dtype).removeprefix('torch.')}",
            details={"field": name, "dtype": str(value.dtype)},
        )
    if value.ndim < 2 or value.shape[0] == 0 or value.numel() == 0:
        raise InputError(
            f"{name!r} must have shape [B, ...] with B >= 1 and at least one feature: got {list(value.shape)}",
            details={"field": name, "shape": list(value.shape)},
        )
    tensor: torch.Tensor = value.detach()
    _check_finite(th, tensor, name)
    return tensor


def _check_finite(th: Any, tensor: torch.Tensor, name: str) -> None:
    bad = ~th.isfinite(tensor)
    if bool(bad.any()):
        index = [int(i) for i in th.nonzero(bad)[0].tolist()]
        raise InputError(
            f"{name!r} has a non-finite value {float(tensor[tuple(index)].item())!r} at index {index}",
            details={"field": name, "index": index},
        )


def _check_pair(th: Any, h: Any, a: Any, names: tuple[str, str] = ("h", "a")) -> tuple[torch.Tensor, torch.Tensor]:
    """Both tensors checked, the second of the first's shape and moved to its device."""
    first, second = names
    state = _check_state(th, h, first)
    signal = _check_state(th, a, second)
    if signal.shape != state.shape:
        raise InputError(
            f"{second!r} must have the shape of {first!r}: got {list(signal.shape)} and {list(state.shape)}",
            details={"field": second, "shape": list(signal.shape), "expected": list(state.shape)},
        )
    return state, signal.to(device=state.device)


def _per_sample(th: Any, output: Any, rows: int, name: str) -> torch.Tensor:
    """The ``[B]`` losses returned by ``name`` (``[B, 1]`` is accepted), checked finite."""
    if not isinstance(output, th.Tensor):
        raise InputError(
            f"{name!r} must return a tensor of per-sample values, shape [{rows}]: got {type(output).__name__}",
            details={"field": name, "type": type(output).__name__},
        )
    if output.shape not in ((rows,), (rows, 1)):
        raise InputError(
            f"{name!r} must return one value per sample, shape [{rows}]: got {list(output.shape)}",
            details={"field": name, "shape": list(output.shape), "rows": rows},
        )
    values: torch.Tensor = output.reshape(rows)
    _check_finite(th, values.detach(), f"{name}(...)")
    return values


def _rows(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` as ``[B, features]`` in float64."""
    return tensor.reshape(tensor.shape[0], -1).to(dtype=require_torch().float64)


def _broadcast_rows(column: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A ``[B]`` tensor shaped to multiply ``like`` row by row."""
    return column.reshape(-1, *([1] * (like.ndim - 1)))


def _mean_row_cosine(th: Any, x: torch.Tensor, y: torch.Tensor) -> float:
    """Mean over rows of the cosine of ``x`` and ``y`` (``[B, F]``, finite float64); a row
    pair in which either row is zero contributes 0.
    """
    x, y = rows_unit_scaled(th, x), rows_unit_scaled(th, y)
    # Each non-zero row now has largest magnitude in [0.5, 1), exactly, so its squared norm
    # is in [0.25, F]: no overflow, no underflow, and sqrt(s * s) == s makes rows equal up
    # to a power of two give exactly 1.
    denominator = th.sqrt((x * x).sum(dim=1) * (y * y).sum(dim=1))
    cosine = th.where(denominator > 0, (x * y).sum(dim=1) / denominator, 0.0).clamp(-1.0, 1.0)
    return float(cosine.mean().item())


def _pearson(th: Any, x: torch.Tensor, y: torch.Tensor) -> float:
    """Pearson correlation of two float64 vectors; 0 when either has no variance.

    The correlation ignores a positive factor on either side, so each side is brought to
    a largest magnitude in ``[0.5, 1)`` by a power of two before it is centred, and again
    after: the mean, the centring and the norm then neither overflow (values near
    ``1.8e308``) nor underflow (changes near ``1e-300``), which would otherwise give
    ``inf`` or ``0`` norms and a silent 0.
    """
    x_centred = _centred_unit(x)
    y_centred = _centred_unit(y)
    if x_centred is None or y_centred is None:
        return 0.0
    sx = th.linalg.vector_norm(x_centred)
    sy = th.linalg.vector_norm(y_centred)
    return float(((x_centred / sx) * (y_centred / sy)).sum().clamp(-1.0, 1.0).item())


def _centred_unit(x: torch.Tensor) -> torch.Tensor | None:
    """``x - mean(x)`` up to a positive power of two, with largest magnitude in ``[0.5, 1)``;
    ``None`` when ``x`` has no variance.
    """
    scaled = unit_scaled(x)
    if scaled is None:
        return None
    unit = scaled[0]
    centred = unit_scaled(unit - unit.mean())
    return None if centred is None else centred[0]


# ------------------------------------------------------------------ diagnostics
def backprop_cosine(h: torch.Tensor, a: torch.Tensor, loss_fn: LossFn) -> float:
    """Mean over the batch of ``cos(a_i, g_i)``, with ``g = d(sum_i f(h)_i) / dh``.

    Rows are flattened; a row whose signal or gradient is zero contributes 0. When the
    samples do not interact in ``loss_fn`` (no batch statistics), ``g_i`` is exactly the
    gradient of sample ``i``'s own loss. 1 means the signal is the gradient up to a
    positive scale per row. Once ``g`` is known this is ``gradient_cosine(a, g)`` (see
    :func:`gradient_cosine`), whose computation it shares.

    Parameters
    ----------
    h:
        Hidden states, a floating tensor ``[B, ...]``.
    a:
        The credit signal, the same shape.
    loss_fn:
        Maps a tensor like ``h`` to per-sample losses ``[B]``, differentiably. Put a
        model with batch-norm statistics in eval mode first: the loss is evaluated on
        the states as given.

    Raises
    ------
    InputError
        For mismatched or non-finite inputs, a loss of the wrong shape or non-finite, or
        a loss that does not depend differentiably on ``h``.
    """
    th = require_torch()
    state, signal = _check_pair(th, h, a)
    check_callable("loss_fn", loss_fn)
    with th.enable_grad():
        x = state.clone().requires_grad_(True)
        losses = _per_sample(th, loss_fn(x), state.shape[0], "loss_fn")
        if not losses.requires_grad:
            raise InputError(
                "'loss_fn' must return losses that depend differentiably on its input: got a tensor without a graph",
                details={"field": "loss_fn"},
            )
        (grad,) = th.autograd.grad(losses.sum(), x, allow_unused=True)
    if grad is None:
        grad = th.zeros_like(state)
    _check_finite(th, grad, "gradient of loss_fn")
    return _mean_row_cosine(th, _rows(signal), _rows(grad))


def gradient_cosine(a: torch.Tensor, g: torch.Tensor) -> float:
    """Mean over the batch of ``cos(a_i, g_i)`` for two given tensors of one shape ``[B, ...]``.

    :func:`backprop_cosine` for a gradient known without autograd: a closed-form costate
    (the exact answer of a linear-quadratic problem), a gradient taken in another pass or
    process, a precomputed reference direction. Rows are flattened; a row pair in which
    either row is all zeros contributes 0 and still counts in the mean (the convention of
    :func:`backprop_cosine`: a signal that says nothing earns nothing). Each row is scaled
    by its own power of two before the products are taken, exactly, so any finite
    values, subnormal to ``±1.8e308``, give the cosine to rounding, and rows equal up to a
    power-of-two factor give exactly 1. Computed in float64 on ``a``'s device.

    Raises
    ------
    InputError
        For values that are not floating tensors of shape ``[B, ...]`` (``B >= 1``, at
        least one feature), not finite, or not of one shape.

    Example
    -------
    >>> import torch
    >>> gradient_cosine(torch.tensor([[1.0, 0.0], [1.0, 1.0]]), torch.tensor([[2.0, 0.0], [-1.0, -1.0]]))
    0.0
    """
    th = require_torch()
    signal, gradient = _check_pair(th, a, g, names=("a", "g"))
    return _mean_row_cosine(th, _rows(signal), _rows(gradient))


def nudging_test(h: torch.Tensor, a: torch.Tensor, loss_fn: LossFn, *, eta: float = 0.01) -> float:
    """Mean change in loss after a small step against the signal: negative is good.

    ``a_n = a / (rms(a) + 1e-6)`` row by row (RMS over each flattened row), then
    ``mean_i(f(h - eta * a_n)_i - f(h)_i)``. Normalising makes the step size ``eta`` per
    element whatever the signal's scale, so signals of different magnitudes are compared
    on direction alone. Computed without gradients, in ``h``'s dtype.

    Example
    -------
    >>> import torch
    >>> h = torch.ones(4, 3, dtype=torch.float64)
    >>> round(nudging_test(h, h.clone(), lambda x: (x**2).sum(dim=1), eta=0.1), 4)
    -0.57
    """
    th = require_torch()
    state, signal = _check_pair(th, h, a)
    check_callable("loss_fn", loss_fn)
    step = check_positive_finite("eta", eta)
    rows = state.shape[0]
    with th.no_grad():
        signal_rows = _rows(signal)
        rms = _row_rms(th, signal_rows)
        normalised = (signal_rows / (rms + NUDGE_RMS_EPS).unsqueeze(1)).reshape(state.shape).to(state.dtype)
        before = _per_sample(th, loss_fn(state), rows, "loss_fn")
        after = _per_sample(th, loss_fn(state - step * normalised), rows, "loss_fn")
        return mean_difference(after.to(th.float64), before.to(th.float64))


def _row_rms(th: Any, rows: torch.Tensor) -> torch.Tensor:
    """Root mean square of each row of a finite float64 ``[B, F]`` tensor.

    Each row is divided by its largest magnitude before squaring (zero rows by the
    smallest normal float, leaving them 0), so entries past ``1.3e154`` do not square to
    ``inf`` (which made the normalised signal 0 and the step vanish) and tiny ones do not
    square to 0.
    """
    largest = rows.abs().amax(dim=1).clamp_min(th.finfo(th.float64).tiny)
    rms: torch.Tensor = largest * th.sqrt(th.mean((rows / largest.unsqueeze(1)) ** 2, dim=1))
    return rms


def perturbation_correlation(
    h: torch.Tensor,
    a: torch.Tensor,
    loss_fn: LossFn,
    *,
    num_directions: int = 32,
    eps: float = 1e-3,
    seed: int = 0,
) -> float:
    """Pearson correlation between predicted and true loss changes under small perturbations.

    For ``num_directions`` (M) random directions ``v`` (standard normal, each row scaled
    to unit norm, drawn from a CPU generator seeded with ``seed``), the predicted change
    of sample ``i`` is ``<a_i, eps v_i>`` and the true change ``f(h + eps v)_i - f(h)_i``.
    The correlation is taken over all ``B * M`` pairs; 0 when either side has no
    variance. Near 1: the signal predicts the loss's local behaviour like the gradient
    would; near 0: it carries no first-order information. Runs ``M + 1`` forward passes of
    ``loss_fn`` without gradients.

    Example
    -------
    >>> import torch
    >>> h = torch.randn(16, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    >>> corr = perturbation_correlation(h, 2 * h, lambda x: (x**2).sum(dim=1))
    >>> corr > 0.999
    True
    """
    th = require_torch()
    state, signal = _check_pair(th, h, a)
    check_callable("loss_fn", loss_fn)
    directions = check_positive_int("num_directions", num_directions)
    step = check_positive_finite("eps", eps)
    seed = check_non_negative_int("seed", seed)
    generator = th.Generator(device="cpu")
    generator.manual_seed(seed)
    rows = state.shape[0]
    # Pearson's r ignores a common positive factor, so the predicted changes are taken as
    # <a * 2**-e, v> with eps and the signal's own power-of-two scale left out: a signal
    # near 1.8e308 or a large eps cannot overflow them.
    scaled_signal = unit_scaled(_rows(signal).cpu())
    signal_rows = th.zeros((rows, 1), dtype=th.float64) if scaled_signal is None else scaled_signal[0]
    predicted = []
    after = []
    with th.no_grad():
        base = _per_sample(th, loss_fn(state), rows, "loss_fn").to(th.float64).cpu()
        for _ in range(directions):
            v = th.randn(tuple(state.shape), generator=generator, dtype=th.float64)
            flat = v.reshape(rows, -1)
            flat = flat / th.linalg.vector_norm(flat, dim=1, keepdim=True)
            predicted.append((signal_rows * flat).sum(dim=1))
            moved = state + step * flat.reshape(state.shape).to(device=state.device, dtype=state.dtype)
            after.append(_per_sample(th, loss_fn(moved), rows, "loss_fn").to(th.float64).cpu())
    losses = th.stack(after)
    actual = losses - base
    if not bool(th.isfinite(actual).all()):
        actual = losses * 0.5 - base * 0.5  # losses of both signs near 1.8e308: the same r, no overflow
    return _pearson(th, th.cat(predicted), actual.reshape(-1))


def feature_drift(initial: Mapping[str, Any], final: Mapping[str, Any], *, min_norm: float = 1e-8) -> dict[str, float]:
    """Relative change of each parameter: ``||W_final - W_init||_F / ||W_init||_F``.

    ``initial`` and ``final`` are state dicts (name -> tensor or array) with the same
    names and shapes, e.g. ``copy.deepcopy(model.state_dict())`` taken at the start and
    ``model.state_dict()`` now. Entries that are not floating point (step counters) are
    skipped, and so are parameters whose initial norm is below ``min_norm`` (a ratio to
    nearly nothing says nothing), including all-zero and subnormal ones. Computed in
    float64 on values rescaled by powers of two (exactly), so any finite weights, from
    subnormal to ``±1.8e308``, give the ratio to rounding; a ratio past the float range
    (a parameter that grew by more than ``1e308`` times) is ``inf``.

    Returns name -> drift, in ``initial``'s order.

    Example
    -------
    >>> import torch
    >>> feature_drift({"w": torch.tensor([3.0, 4.0])}, {"w": torch.tensor([3.0, 4.5])})
    {'w': 0.1}
    """
    th = require_torch()
    for name, value in (("initial", initial), ("final", final)):
        if not isinstance(value, Mapping):
            raise InputError(
                f"{name!r} must be a mapping of parameter names to tensors: got {type(value).__name__}",
                details={"field": name, "type": type(value).__name__},
            )
    threshold = check_positive_finite("min_norm", min_norm)
    missing = [key for key in initial if key not in final]
    extra = [key for key in final if key not in initial]
    if missing or extra:
        raise InputError(
            "'initial' and 'final' must hold the same parameters: "
            f"only in initial {missing!r}, only in final {extra!r}",
            details={"field": "final", "missing": missing, "extra": extra},
        )
    drift: dict[str, float] = {}
    for key, start_value in initial.items():
        start = _as_parameter(th, start_value, f"initial[{key!r}]")
        end = _as_parameter(th, final[key], f"final[{key!r}]")
        if not start.is_floating_point():
            continue
        if start.shape != end.shape:
            raise InputError(
                f"parameter {key!r} changed shape: {list(start.shape)} to {list(end.shape)}",
                details={"field": "final", "parameter": key},
            )
        start = start.to(device="cpu", dtype=th.float64)
        end = end.to(device="cpu", dtype=th.float64)
        _check_finite(th, start, f"initial[{key!r}]")
        _check_finite(th, end, f"final[{key!r}]")
        ratio = _relative_change(th, start, end, threshold)
        if ratio is not None:
            drift[key] = ratio
    return drift


def _as_parameter(th: Any, value: Any, name: str) -> torch.Tensor:
    """``value`` (a tensor, array or nested list of numbers) as a detached tensor."""
    try:
        tensor: torch.Tensor = th.as_tensor(value).detach()
    except (TypeError, ValueError, RuntimeError):
        raise wrong_type(name, "a tensor, array or nested list of numbers", value) from None
    return tensor


def _relative_change(th: Any, start: torch.Tensor, end: torch.Tensor, threshold: float) -> float | None:
    """``||end - start|| / ||start||`` of finite float64 tensors; ``None`` when
    ``||start|| < threshold``.

    ``start`` is brought to a largest magnitude in ``[0.5, 1)`` by ``2**-e0``, so its norm
    is in ``[0.5, sqrt(n)]`` whatever its scale (a subnormal ``2**1074`` factor is applied
    in two halves) and is compared with ``threshold`` exactly at scale ``2**e0``. The
    difference is formed from both tensors brought below 1 by the same ``2**-e1``
    (``e1`` from the larger of the two), so it cannot overflow even for entries of
    opposite sign near ``1.8e308``; the ratio is moved back by ``2**(e1 - e0)``.
    """
    scaled_start = unit_scaled(start)
    if scaled_start is None:
        return None  # an all-zero (or empty) initial value
    unit_start, start_exponent = scaled_start
    start_norm = float(th.linalg.vector_norm(unit_start).item())
    if scaled_below(start_norm, start_exponent, threshold):
        return None
    end_exponent = max_exponent(end)
    exponent = start_exponent if end_exponent is None else max(start_exponent, end_exponent)
    rescaled_start = unit_start if exponent == start_exponent else times_power_of_two(start, -exponent)
    difference = times_power_of_two(end, -exponent) - rescaled_start
    ratio = float(th.linalg.vector_norm(difference).item()) / start_norm
    return ldexp_or_inf(ratio, exponent - start_exponent)


def bridge_residual(
    value_fn: Callable[[torch.Tensor], torch.Tensor],
    target_fn: Callable[[torch.Tensor], torch.Tensor],
    h: torch.Tensor,
    next_states: torch.Tensor,
    *,
    temperature: float = 0.1,
) -> float:
    """Mean ``|V(h) - V_target|`` against a soft-min bootstrap over K noisy next states.

    ``V_target = -lam * logsumexp_k(-V_bar(h_next_k) / lam) + lam * log K``: as the
    temperature ``lam`` goes to 0 this is the minimum of the K target values, as it grows
    their mean. Computed without gradients, in float64, as ``v_min`` plus a non-negative
    offset (see ``rfcs/0009``), so it stays finite and accurate for every positive finite
    ``lam``, subnormal or near ``1.8e308``: for ``lam`` far below the gaps between the
    values the target is ``v_min`` exactly, for ``lam`` far above them their mean. A
    residual past the float range (values and targets of opposite sign near ``1.8e308``)
    is ``inf``.

    Parameters
    ----------
    value_fn:
        ``V``: maps states ``[B, ...]`` to values ``[B]``. A value network with more
        inputs, ``V(h, t, s)``, is passed as ``lambda x: V(x, t, s)``.
    target_fn:
        ``V_bar``, usually the EMA copy of ``V``: maps each next state ``[B, ...]`` to
        ``[B]``, e.g. ``lambda x: V_ema(x, t + 1, s)``.
    h:
        Current states ``[B, ...]``.
    next_states:
        ``[K, B, ...]``: K noisy next states of each sample.
    temperature:
        ``lam`` > 0 and finite (default 0.1).

    Raises
    ------
    InputError
        For non-finite or misshapen states or values, non-callables, or a temperature
        that is not a positive finite number.
    """
    th = require_torch()
    state = _check_state(th, h, "h")
    nexts = _check_state(th, next_states, "next_states")
    if nexts.ndim < 3 or nexts.shape[1] != state.shape[0]:
        raise InputError(
            f"'next_states' must have shape [K, {state.shape[0]}, ...] (K next states per sample): "
            f"got {list(nexts.shape)}",
            details={"field": "next_states", "shape": list(nexts.shape)},
        )
    check_callable("value_fn", value_fn)
    check_callable("target_fn", target_fn)
    lam = check_positive_finite("temperature", temperature)
    rows, count = state.shape[0], nexts.shape[0]
    with th.no_grad():
        values = _per_sample(th, value_fn(state), rows, "value_fn").to(th.float64)
        targets = th.stack(
            [_per_sample(th, target_fn(nexts[k]), rows, "target_fn").to(th.float64) for k in range(count)]
        )
        target = soft_min(th, targets.to(values.device), lam)
        return mean_difference(values, target, absolute=True)


# -------------------------------------------------------------- diagnostics set
@dataclass(frozen=True, slots=True)
class CreditDiagnostics:
    """The three signal-quality checks of one batch.

    Attributes
    ----------
    backprop_cosine:
        :func:`backprop_cosine`, in ``[-1, 1]``; 1 is the true gradient's direction.
    nudge_delta:
        :func:`nudging_test`, in loss units; negative means the signal points downhill.
    perturbation_correlation:
        :func:`perturbation_correlation`, in ``[-1, 1]``.
    """

    backprop_cosine: float
    nudge_delta: float
    perturbation_correlation: float

    def as_dict(self) -> dict[str, float]:
        """Field name -> value, in declaration order."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


CREDIT_METRICS = MetricTable(
    family="credit",
    noun="Credit-assignment",
    rows=(
        MetricRow(
            "backprop_cosine",
            "1",
            "row_mean,flattened_rows,zero_norm_is_0",
            "Mean cosine between the credit signal and the true gradient of the loss.",
        ),
        MetricRow(
            "nudge_delta",
            "loss",
            "sample_mean,rms_normalised_signal",
            "Mean change in loss after a step against the RMS-normalised credit signal.",
        ),
        MetricRow(
            "perturbation_correlation",
            "1",
            "pearson_over_samples_and_directions,no_variance_is_0",
            "Correlation of loss changes predicted by the credit signal with true ones.",
        ),
    ),
)
"""The credit-assignment gauges: the fields of :class:`CreditDiagnostics`."""

CREDIT_METRICS.declare(bookkeeping=False)


def evaluate_credit(
    h: torch.Tensor,
    a: torch.Tensor,
    loss_fn: LossFn,
    *,
    eta: float = 0.01,
    num_directions: int = 32,
    eps: float = 1e-3,
    seed: int = 0,
) -> CreditDiagnostics:
    """Run :func:`backprop_cosine`, :func:`nudging_test` and
    :func:`perturbation_correlation` on one batch (parameters as there).
    """
    return CreditDiagnostics(
        backprop_cosine(h, a, loss_fn),
        nudging_test(h, a, loss_fn, eta=eta),
        perturbation_correlation(h, a, loss_fn, num_directions=num_directions, eps=eps, seed=seed),
    )


def record_credit_diagnostics(
    diagnostics: CreditDiagnostics,
    *,
    logger: MetricLogger | None = None,
    step: int | None = None,
    registry: MetricRegistry | None = None,
) -> None:
    """Set the gauges ``geno_lewm.training.credit.<field>`` and, with a logger, emit one
    ``training.metric`` event per field (to a logger this package did not create, the
    GenoLeWM family's minimal record: name, value, unit, kind, step when known).
    """
    logger = adapt_logger(logger, warnings=False)
    check_instance("diagnostics", diagnostics, CreditDiagnostics)
    checked_step = None if step is None else check_non_negative_int("step", step)
    values = diagnostics.as_dict()
    set_gauges(CREDIT_METRICS, values, registry)
    if logger is not None:
        log_metric_events(CREDIT_METRICS, values, logger, step=checked_step, context={}, variants={}, bounds={})
