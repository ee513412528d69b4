"""A siamese self-supervised model (SimSiam) on scikit-learn's handwritten digits: the
family where the stop-gradient is what keeps a run alive.

The data: the 1,797 8x8 digits that scikit-learn ships, split once by the seed into 1,100
training images, 256 validation images (the monitor's batch, with two fixed random views
each) and 441 evaluation images (the verification's, unaugmented). A view shifts the
image by up to one pixel, scales its intensity by 0.8-1.2, blanks 20% of its pixels and
adds noise.

The model: an encoder ``f`` (64 -> 128 -> 64 -> 32, BatchNorm after each layer, the last
one's affine as SimSiam's projector has it) and a bottleneck predictor ``h``
(32 -> 16 -> 32), trained with the symmetric negative cosine of ``h(f(view 1))`` and
``f(view 2)``. Regimes:

* ``healthy`` — with the stop-gradient on the target branch;
* ``complete`` — without it: the encoder's output shrinks to a point (SimSiam's Figure 2);
* ``dimensional`` — without it, and with the last BatchNorm's affine removed so the
  output's per-dimension scale cannot shrink: its variance folds into a few directions.

The monitor sees ``h(f(view 1))`` as predictions and ``f(view 2)`` as targets of the
validation images; the verification embeds the evaluation images and probes them for
the digit's class (accuracy of a linear probe; chance is 0.1). Checks use batch statistics
(BatchNorm stays in training mode, without gradients): a few hundred steps of running
averages are not yet a fair picture of the network.
"""

from __future__ import annotations

import torch
from sklearn.datasets import load_digits
from torch import nn

from detection.records import Check, RunRecord, Truth, train
from detection.verify import probe_score, spectrum_statistics

TRAIN, VALIDATION = 1100, 256
EMBEDDING, BATCH, STEPS, EVERY = 32, 256, 400, 25
REGIMES: dict[str, Truth] = {
    "healthy": "healthy",
    "complete": "complete_collapse",
    "dimensional": "dimensional_collapse",
}


def _view(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One random view of ``[B, 64]`` images in [0, 1]."""
    count = images.shape[0]
    grid = images.view(count, 1, 8, 8)
    padded = nn.functional.pad(grid, (1, 1, 1, 1))
    dx = torch.randint(0, 3, (count,), generator=generator)
    dy = torch.randint(0, 3, (count,), generator=generator)
    rows = (dy[:, None] + torch.arange(8)[None, :])[:, :, None].expand(count, 8, 8)
    cols = (dx[:, None] + torch.arange(8)[None, :])[:, None, :].expand(count, 8, 8)
    shifted = padded[torch.arange(count)[:, None, None], 0, rows, cols].reshape(count, 64)
    scale = 0.8 + 0.4 * torch.rand(count, 1, generator=generator)
    kept = (torch.rand(count, 64, generator=generator) > 0.2).float()
    return shifted * scale * kept + 0.05 * torch.randn(count, 64, generator=generator)


def _encoder(output_batchnorm: bool) -> nn.Module:
    layers: list[nn.Module] = [
        nn.Linear(64, 128),
        nn.BatchNorm1d(128),
        nn.ReLU(),
        nn.Linear(128, 64),
        nn.BatchNorm1d(64),
        nn.ReLU(),
        nn.Linear(64, EMBEDDING),
    ]
    if output_batchnorm:
        layers.append(nn.BatchNorm1d(EMBEDDING, affine=False))
    return nn.Sequential(*layers)


def _negative_cosine(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return -nn.functional.cosine_similarity(prediction, target, dim=1).mean()


def run(regime: str, seed: int, *, steps: int = STEPS, every: int = EVERY) -> RunRecord:
    """Train one model of ``regime`` and record its checks."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(30_000 + seed)
    digits = load_digits()
    images = torch.tensor(digits.data, dtype=torch.float32) / 16.0
    labels = torch.tensor(digits.target)
    order = torch.randperm(images.shape[0], generator=generator)
    training = images[order[:TRAIN]]
    validation = images[order[TRAIN : TRAIN + VALIDATION]]
    evaluation, evaluation_labels = images[order[TRAIN + VALIDATION :]], labels[order[TRAIN + VALIDATION :]]
    views = (_view(validation, generator), _view(validation, generator))
    encoder = _encoder(output_batchnorm=regime == "dimensional")
    predictor = nn.Sequential(nn.Linear(EMBEDDING, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, EMBEDDING))
    parameters = [*encoder.parameters(), *predictor.parameters()]
    optimiser = torch.optim.SGD(parameters, lr=0.05, momentum=0.9, weight_decay=1e-4)

    def loss() -> torch.Tensor:
        encoder.train()
        predictor.train()
        batch = training[torch.randint(0, TRAIN, (BATCH,), generator=generator)]
        z1, z2 = encoder(_view(batch, generator)), encoder(_view(batch, generator))
        p1, p2 = predictor(z1), predictor(z2)
        if regime == "healthy":
            z1, z2 = z1.detach(), z2.detach()
        return 0.5 * (_negative_cosine(p1, z2) + _negative_cosine(p2, z1))

    def check(step: int) -> Check:
        return _check(
            step, encoder=encoder, predictor=predictor, views=views, evaluation=evaluation, labels=evaluation_labels
        )

    record = RunRecord("siamese", regime, seed, REGIMES[regime])
    return train(record, steps=steps, every=every, check=check, loss=loss, optimiser=optimiser)


def _check(
    step: int,
    *,
    encoder: nn.Module,
    predictor: nn.Module,
    views: tuple[torch.Tensor, torch.Tensor],
    evaluation: torch.Tensor,
    labels: torch.Tensor,
) -> Check:
    with torch.no_grad():
        prediction = predictor(encoder(views[0]))
        target = encoder(views[1])
        embedded = encoder(evaluation)
        verification = spectrum_statistics(embedded)
        verification["probe"] = probe_score(embedded, labels, classes=10)
    return Check(step, prediction.clone(), target.clone(), None, verification)
