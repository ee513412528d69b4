"""What a run of the suite leaves behind: its validation batches at every check, what an
independent verification found at each check, and the truth derived from it; and the
training loop that records them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

Truth = Literal["healthy", "complete_collapse", "dimensional_collapse"]
"""What a run really does, as its regime intends and its verification confirms."""


@dataclass
class Check:
    """One scheduled check of a run: the validation predictions and targets the monitor
    sees, the ``kl_reg`` it is given (``None`` without a Gaussian term), and the
    verification's statistics of the same model on its own, larger evaluation set.
    """

    step: int
    prediction: torch.Tensor
    target: torch.Tensor
    kl_reg: float | None
    verification: dict[str, float] = field(default_factory=dict)


@dataclass
class RunRecord:
    """One run: its family, regime and seed, its checks (the first at step 0, before any
    update), the truth and, for a collapse, the index of the check where it began.
    """

    family: str
    regime: str
    seed: int
    truth: Truth
    checks: list[Check] = field(default_factory=list)
    onset: int | None = None
    verified: bool = False
    note: str = ""
    seconds: float = 0.0

    @property
    def name(self) -> str:
        """``family/regime/seed``."""
        return f"{self.family}/{self.regime}/{self.seed}"

    def summary(self) -> dict[str, Any]:
        """The record without its tensors, for the JSON results."""
        return {
            "family": self.family,
            "regime": self.regime,
            "seed": self.seed,
            "truth": self.truth,
            "onset": self.onset,
            "verified": self.verified,
            "note": self.note,
            "seconds": round(self.seconds, 2),
            "steps": [check.step for check in self.checks],
            "verification": [check.verification for check in self.checks],
        }


def train(
    record: RunRecord,
    *,
    steps: int,
    every: int,
    check: Callable[[int], Check],
    loss: Callable[[], torch.Tensor],
    optimiser: torch.optim.Optimizer,
) -> RunRecord:
    """Train for ``steps`` updates of ``loss``, with a ``check`` every ``every`` steps (the
    first at step 0, before any update, the last after the final one), into ``record``.
    """
    started = time.perf_counter()
    for step in range(steps + 1):
        if step % every == 0:
            record.checks.append(check(step))
        if step == steps:
            break
        value = loss()
        optimiser.zero_grad()
        value.backward()  # type: ignore[no-untyped-call]
        optimiser.step()
    record.seconds = time.perf_counter() - started
    return record
