"""The torch kernel for prediction dynamics: the reference's softmax statistics on the
logits' own device.

Same definitions and edge conventions as :mod:`geno_lewm.backends._python_dynamics`.
Validation and conversion (``prepare``, ``describe``) are the torch collapse backend's:
float64 and integer logits are computed in float64, every other floating type (float32,
float16, bfloat16) in float32, which is what such logits carry anyway; the per-row
results are summed in float64. The two sums and the class counts come back to the host
in one transfer.
"""

from __future__ import annotations

import torch

from geno_lewm.backends._torch import describe, prepare

__all__ = ["NAME", "describe", "prediction_sums", "prepare"]

NAME = "torch"


def prediction_sums(logits: torch.Tensor) -> tuple[float, float, tuple[int, ...]]:
    """``(entropy_sum, confidence_sum, class_counts)`` of a prepared ``[N, C]`` tensor."""
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
    return packed[0], packed[1], tuple(int(c) for c in packed[2:])
