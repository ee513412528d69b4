"""The torch kernel for prediction dynamics: the reference's softmax statistics on the
logits' own device.

Same definitions and edge conventions as :mod:`geno_lewm.backends._python_dynamics`.
float64 logits are computed in float64; every other floating type (float32, float16,
bfloat16) in float32, which is what such logits carry anyway, with the per-row results
summed in float64. The finiteness check, the two sums and the class counts come back to
the host in one transfer, so a batch on a GPU costs one synchronisation.
"""

from __future__ import annotations

from typing import Any

import torch

from geno_lewm._inputs import (
    as_python_matrix,
    dtype_error,
    empty_batch_error,
    empty_rows_error,
    non_finite_error,
    not_2d_error,
)

__all__ = ["NAME", "describe", "prediction_sums", "prepare"]

NAME = "torch"


def prepare(value: Any, name: str) -> torch.Tensor:
    """Validate the shape and dtype of ``value`` and return a detached ``[N, C]`` tensor.

    Non-tensors are validated by the pure-Python rules and become float64 CPU tensors.
    Finiteness is checked by :func:`prediction_sums`, in the same transfer as the results.
    """
    if not isinstance(value, torch.Tensor):
        return torch.tensor(as_python_matrix(value, name), dtype=torch.float64)
    if value.dtype.is_complex or value.dtype == torch.bool:
        raise dtype_error(name, str(value.dtype))
    if value.ndim != 2:
        raise not_2d_error(name, value.ndim)
    if value.shape[0] == 0:
        raise empty_batch_error(name)
    if value.shape[1] == 0:
        raise empty_rows_error(name)
    return value.detach()


def describe(tensor: torch.Tensor) -> tuple[int, int, str, str]:
    """Return ``(N, C, dtype, device)`` of a prepared tensor."""
    return int(tensor.shape[0]), int(tensor.shape[1]), str(tensor.dtype).removeprefix("torch."), str(tensor.device)


def _compute_dtype(tensor: torch.Tensor) -> torch.dtype:
    return torch.float64 if tensor.dtype in (torch.float64, torch.int64, torch.int32) else torch.float32


def prediction_sums(tensor: torch.Tensor, name: str = "logits") -> tuple[float, float, tuple[int, ...]]:
    """``(entropy_sum, confidence_sum, class_counts)`` of a prepared ``[N, C]`` tensor.

    Raises :class:`~geno_lewm.errors.InputError` naming the first NaN or infinite element.
    """
    with torch.no_grad():
        logits = tensor.to(_compute_dtype(tensor))
        shifted = logits - logits.amax(dim=1, keepdim=True)
        weights = torch.exp(shifted)
        total = weights.sum(dim=1)
        terms = torch.where(weights > 0.0, weights * shifted, 0.0)
        entropy = torch.clamp(torch.log(total) - terms.sum(dim=1) / total, min=0.0)
        finite = torch.isfinite(tensor).all()
        counts = torch.bincount(logits.argmax(dim=1), minlength=logits.shape[1])
        packed = torch.cat(
            [
                torch.stack(
                    [
                        entropy.sum(dtype=torch.float64),
                        total.reciprocal().sum(dtype=torch.float64),
                        finite.to(torch.float64),
                    ]
                ),
                counts.to(torch.float64),
            ]
        ).tolist()
    if packed[2] != 1.0:
        row, column = (int(i) for i in torch.nonzero(~torch.isfinite(tensor))[0].tolist())
        raise non_finite_error(name, row, column, float(tensor[row, column].item()))
    return packed[0], packed[1], tuple(int(c) for c in packed[3:])
