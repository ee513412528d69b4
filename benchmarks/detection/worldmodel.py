"""A latent world model with actions over sequences: the JEPA-style family of the suite.

The world: a latent state ``s`` in R^8 moves under actions ``a`` in R^2,
``s' = tanh(W s + B a) + 0.05 noise`` (``W`` a rotation scaled by 0.95), over sequences of
eight steps from ``s ~ N(0, I)``; the model sees only observations ``x = g(s) + 0.1 noise``
with ``g`` a fixed random two-layer network into R^64.

The model: an encoder ``E`` (64 -> 128 -> 32) and a predictor ``P(E(x_t), a_t)`` of
``E(x_{t+1})``, trained with RFC-0005 §3.1's prediction loss on transitions (AdamW, learning
rate 3e-3, weight decay 0.05, batches of 256). Regimes:

* ``healthy_vicreg`` — plus variance and covariance terms on the embeddings (no Gaussian
  term: the monitor is given ``kl_reg=None``);
* ``healthy_kl`` — plus ``0.02 * gaussian_kl`` of the targets, passed as ``kl_reg``
  (weighted 0.5, as RFC-0005 §3.2 writes it);
* ``complete`` — the prediction loss alone, gradients through both branches: the
  embeddings gather around a point and shrink towards it;
* ``dimensional`` — the prediction loss alone with an encoder ending in BatchNorm (no affine
  parameters): every dimension keeps unit variance, so the embeddings fold into a few
  directions instead.

At every check the validation batch (512 held-out transitions) gives the monitor's
predictions and targets, and the verification embeds 2,048 other states and probes them
for the latent state (R² of a linear probe).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from detection.records import Check, RunRecord, Truth, train
from detection.verify import probe_score, spectrum_statistics
from geno_lewm.training.spectrum import gaussian_kl

LATENT, ACTIONS, OBSERVED, EMBEDDING, HIDDEN = 8, 2, 64, 32, 128
HORIZON, BATCH, VALIDATION, EVALUATION = 8, 256, 512, 2048
STEPS, EVERY = 400, 25
REGIMES: dict[str, Truth] = {
    "healthy_vicreg": "healthy",
    "healthy_kl": "healthy",
    "complete": "complete_collapse",
    "dimensional": "dimensional_collapse",
}


@dataclass
class World:
    """The hidden dynamics and the fixed observation map."""

    transition: torch.Tensor
    control: torch.Tensor
    render: nn.Module
    generator: torch.Generator

    @classmethod
    def make(cls, seed: int) -> World:
        """A world drawn from ``seed``."""
        generator = torch.Generator().manual_seed(10_000 + seed)
        rotation, _ = torch.linalg.qr(torch.randn(LATENT, LATENT, generator=generator))
        control = torch.randn(ACTIONS, LATENT, generator=generator) * 0.5
        render = nn.Sequential(nn.Linear(LATENT, 48), nn.Tanh(), nn.Linear(48, OBSERVED))
        with torch.no_grad():
            for parameter in render.parameters():
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.6)
        return cls(0.95 * rotation, control, render.requires_grad_(False), generator)

    def step(self, state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """The next latent states."""
        noise = 0.05 * torch.randn(state.shape, generator=self.generator)
        return torch.tanh(state @ self.transition + action @ self.control) + noise

    def observe(self, state: torch.Tensor) -> torch.Tensor:
        """Observations of latent states."""
        with torch.no_grad():
            rendered: torch.Tensor = self.render(state)
            return rendered + 0.1 * torch.randn(state.shape[0], OBSERVED, generator=self.generator)

    def transitions(self, count: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``count`` transitions ``(x_t, a_t, x_{t+1}, s_t)`` from random points of random sequences."""
        state = torch.randn(count, LATENT, generator=self.generator)
        depth = torch.randint(0, HORIZON, (count,), generator=self.generator)
        for t in range(HORIZON):
            moving = depth > t
            action = torch.randn(count, ACTIONS, generator=self.generator)
            state = torch.where(moving[:, None], self.step(state, action), state)
        action = torch.randn(count, ACTIONS, generator=self.generator)
        following = self.step(state, action)
        return self.observe(state), action, self.observe(following), state


def _encoder(batchnorm: bool) -> nn.Module:
    layers: list[nn.Module] = [nn.Linear(OBSERVED, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, EMBEDDING)]
    if batchnorm:
        layers.append(nn.BatchNorm1d(EMBEDDING, affine=False))
    return nn.Sequential(*layers)


def _prediction_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    cosine = nn.functional.cosine_similarity(prediction, target, dim=1)
    return (1.0 - cosine + 0.1 * (prediction - target).square().mean(dim=1)).mean()


def _vicreg(z: torch.Tensor) -> torch.Tensor:
    centred = z - z.mean(dim=0)
    std = torch.sqrt(centred.var(dim=0) + 1e-4)
    covariance = centred.T @ centred / (z.shape[0] - 1)
    off_diagonal = covariance - torch.diag(torch.diag(covariance))
    return torch.relu(1.0 - std).mean() + off_diagonal.square().sum() / z.shape[1]


def run(regime: str, seed: int, *, steps: int = STEPS, every: int = EVERY) -> RunRecord:
    """Train one model of ``regime`` and record its checks."""
    torch.manual_seed(seed)
    world = World.make(seed)
    encoder = _encoder(batchnorm=regime == "dimensional")
    predictor = nn.Sequential(nn.Linear(EMBEDDING + ACTIONS, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, EMBEDDING))
    optimiser = torch.optim.AdamW([*encoder.parameters(), *predictor.parameters()], lr=3e-3, weight_decay=0.05)
    validation = world.transitions(VALIDATION)
    evaluation = world.transitions(EVALUATION)

    def loss() -> torch.Tensor:
        encoder.train()
        x, action, following, _ = world.transitions(BATCH)
        z, z_next = encoder(x), encoder(following)
        target = z_next if regime == "complete" else z_next.detach()
        value = _prediction_loss(predictor(torch.cat([z, action], dim=1)), target)
        if regime == "healthy_vicreg":
            value = value + _vicreg(z) + _vicreg(z_next)
        elif regime == "healthy_kl":
            value = value + 0.02 * gaussian_kl(z_next, backend="torch")
        return value

    def check(step: int) -> Check:
        return _check(
            step, regime=regime, encoder=encoder, predictor=predictor, validation=validation, evaluation=evaluation
        )

    return train(
        RunRecord("worldmodel", regime, seed, REGIMES[regime]),
        steps=steps,
        every=every,
        check=check,
        loss=loss,
        optimiser=optimiser,
    )


def _check(
    step: int,
    *,
    regime: str,
    encoder: nn.Module,
    predictor: nn.Module,
    validation: tuple[torch.Tensor, ...],
    evaluation: tuple[torch.Tensor, ...],
) -> Check:
    encoder.eval()
    with torch.no_grad():
        x, action, following, _ = validation
        prediction = predictor(torch.cat([encoder(x), action], dim=1))
        target = encoder(following)
        kl_reg = 0.5 * float(gaussian_kl(target, backend="torch")) if regime == "healthy_kl" else None
        embedded = encoder(evaluation[0])
        verification = spectrum_statistics(embedded)
        verification["probe"] = probe_score(embedded, evaluation[3])
    return Check(step, prediction.clone(), target.clone(), kl_reg, verification)
