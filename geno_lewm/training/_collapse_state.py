"""Restoring a collapse monitor's checkpoint: every field of a saved initial spectrum is
checked as the constructor checks its arguments, so a damaged or hand-edited state is
refused at ``load_state_dict`` (naming the field) rather than surfacing later as a raw
``TypeError`` in ``observe`` or a NaN in the next ``state_dict``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import fields
from typing import TYPE_CHECKING, Any

from geno_lewm._validation import check_non_negative_int, fail
from geno_lewm.errors import InputError

if TYPE_CHECKING:
    from geno_lewm.training._spectral import CollapseSpectrum, SpectralMetrics

__all__ = ["spectrum_from_state"]

_SHARES = ("top_k_share", "spread_share")
_COUNTS = ("numerical_rank", "top_k", "batch_size", "dim")


def _state_number(name: str, value: object, *, upper: float = math.inf) -> float:
    """A restored float field: a real number in ``[0, upper]`` (``total_variance`` may be
    ``+inf``, what an overflowing spectrum saturates to; nothing may be NaN).
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise fail(name, "a number", value)
    number = float(value)
    if not 0.0 <= number <= upper or (math.isinf(number) and not name.endswith("total_variance")):
        raise fail(name, f"a finite number in [0, {upper:g}]" if upper < math.inf else "a finite number >= 0", value)
    return number


def _spectral_from_state(name: str, data: object) -> SpectralMetrics:
    """One side's restored :class:`SpectralMetrics`, every field checked."""
    from geno_lewm.training._spectral import SpectralMetrics

    if not isinstance(data, Mapping):
        raise fail(name, "a mapping of spectral metrics", data)
    expected = [f.name for f in fields(SpectralMetrics)]
    if set(data) != set(expected):
        missing, unknown = sorted(set(expected) - set(data)), sorted(set(data) - set(expected), key=str)
        raise InputError(
            f"{name!r} must have the fields of SpectralMetrics: missing {missing}, unknown {unknown}",
            details={"field": name, "missing": missing, "unknown": [str(key) for key in unknown]},
        )
    values: dict[str, Any] = {}
    for key in expected:
        where = f"{name}.{key}"
        if key in _COUNTS:
            values[key] = check_non_negative_int(where, data[key])
        else:
            values[key] = _state_number(where, data[key], upper=1.0 if key in _SHARES else math.inf)
    if values["top_k"] == 0 or values["dim"] == 0:
        raise fail(f"{name}.{'top_k' if values['top_k'] == 0 else 'dim'}", "a positive integer", 0)
    return SpectralMetrics(**values)


def spectrum_from_state(data: object) -> CollapseSpectrum | None:
    """Rebuild a :class:`CollapseSpectrum` from ``dataclasses.asdict`` output, refusing
    anything :meth:`CollapseMonitor.state_dict` could not have written with an
    :class:`InputError` that names the field.
    """
    if data is None:
        return None
    from geno_lewm.training._spectral import CollapseSpectrum

    name = "state.initial_spectrum"
    if not isinstance(data, Mapping):
        raise fail(name, "a mapping written by CollapseMonitor.state_dict", data)
    unknown = sorted(set(data) - {"prediction", "target", "backend", "compute_seconds"}, key=str)
    if unknown:
        raise InputError(f"{name!r} has unknown fields {unknown}", details={"field": name, "unknown": unknown})
    backend = data.get("backend")
    if backend not in ("python", "numpy", "torch"):
        raise fail(f"{name}.backend", "'python', 'numpy' or 'torch'", backend)
    return CollapseSpectrum(
        prediction=_spectral_from_state(f"{name}.prediction", data.get("prediction")),
        target=_spectral_from_state(f"{name}.target", data.get("target")),
        backend=backend,
        compute_seconds=_state_number(f"{name}.compute_seconds", data.get("compute_seconds")),
    )
