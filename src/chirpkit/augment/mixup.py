"""Mixup: an example mixed with a random partner of the batch; its target alike."""

from __future__ import annotations

import numpy as np
import torch

from chirpkit.augment.base import Transform
from chirpkit.config import MixupConfig

__all__ = ["Mixup"]

Weights = tuple[torch.Tensor, torch.Tensor] | None  # (weight of each example (batch,), partner indices)


class Mixup(Transform[Weights]):
    """``x·λ + x[partner]·(1 − λ)`` with λ ~ Beta(alpha, alpha), the larger share kept by the example;
    the same draw is applied to the waveforms and to their probability targets."""

    name, stage = "mixup", "mixup"
    config: MixupConfig

    def draw(self, x: torch.Tensor, gen: torch.Generator) -> Weights:
        b = x.shape[0]
        chosen = self.chosen(b, gen)
        if not chosen.any() or b < 2:
            return None
        lam = torch.ones(b)
        seed = int(torch.randint(0, 2**31, (1,), generator=gen))  # Beta draws: numpy, seeded from gen
        draws = torch.from_numpy(
            np.random.default_rng(seed).beta(self.config.alpha, self.config.alpha, int(chosen.sum()))
        )
        lam[chosen] = torch.maximum(draws.float(), 1 - draws.float())
        return lam, torch.randperm(b, generator=gen)

    def apply(self, x: torch.Tensor, params: Weights) -> torch.Tensor:
        if params is None:
            return x
        lam, partner = params[0].to(x.device)[:, None], params[1].to(x.device)
        return lam * x + (1 - lam) * x[partner]
