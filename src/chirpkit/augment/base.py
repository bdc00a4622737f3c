"""The base of every augmentation (as audiomentations' ``BaseTransform``, batched in torch).

A transform has its config block (``p`` and ranges with units), draws its random parameters for a
batch (:meth:`Transform.draw`, from an explicit ``torch.Generator``, never global state) and
applies them (:meth:`Transform.apply`, deterministic). Each belongs to one stage:

========== ================================================= ======================================
stage      input → output                                     draw returns
========== ================================================= ======================================
read       ``(batch, window + 2·margin)`` segments →          a ``(batch,)`` tensor of one
           ``(batch, window)``                                :func:`~.functional.read_window`
                                                              parameter (``param``)
waveform   ``(batch, samples)``, same shape                   anything ``apply`` takes
mixup      ``(batch, samples)`` and ``(batch, classes)``      weights and partners, applied alike
           targets, same shapes                               to waveforms and targets
power      ``(batch, freq_bins, frames)`` linear power        anything ``apply`` takes
spectrogram ``(batch, 1, bins, frames)`` normalised features  anything ``apply`` takes
========== ================================================= ======================================
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Generic, Literal, TypeVar

import numpy as np
import torch

__all__ = ["Context", "Stage", "Transform"]

Stage = Literal["read", "waveform", "mixup", "power", "spectrogram"]
P = TypeVar("P")


@dataclass(frozen=True)
class Context:
    """The windows a transform augments."""

    sample_rate: int
    window_samples: int  # model input length
    margin_samples: int  # real audio stored on each side of a window (room for shifts and speed)

    @property
    def vocoder_fft(self) -> int:
        """Phase-vocoder frame: a power of two near 32 ms (1024 at 32 kHz)."""
        return 1 << max(8, round(np.log2(self.sample_rate * 0.032)))


def uniform(gen: torch.Generator, n: int, lo: float, hi: float) -> torch.Tensor:
    """``n`` draws from U(lo, hi)."""
    return lo + (hi - lo) * torch.rand(n, generator=gen)


class Transform(Generic[P]):
    """One augmentation, configured by its block of :class:`~chirpkit.config.AugmentConfig`.

    Subclasses set ``name`` (the block), ``stage`` and implement :meth:`draw` and :meth:`apply`;
    ``applies`` says whether the class serves a block (the ``pitch`` block has one class per mode).
    """

    name: ClassVar[str]
    stage: ClassVar[Stage]
    # Draw the per-example choice even at p = 0, as the first transforms did: a change would
    # change the random stream, so the results, of every seeded run that has them off.
    draws_at_p0: ClassVar[bool] = True

    def __init__(self, config: Any, context: Context) -> None:
        self.config = config
        self.context = context

    @classmethod
    def applies(cls, config: Any) -> bool:
        return True

    @property
    def p(self) -> float:
        return float(self.config.p)

    def chosen(self, n: int, gen: torch.Generator) -> torch.Tensor:
        """Which of ``n`` examples to augment, each with probability ``p``: ``(n,)`` bool."""
        if self.p == 0 and not self.draws_at_p0:
            return torch.zeros(n, dtype=torch.bool)
        return torch.rand(n, generator=gen) < self.p

    def draw(self, x: torch.Tensor, gen: torch.Generator) -> P:
        """Random parameters for the batch ``x`` (its shape and device; not its values)."""
        raise NotImplementedError

    def apply(self, x: torch.Tensor, params: P) -> torch.Tensor:
        """Apply drawn parameters to ``x``; deterministic."""
        raise NotImplementedError

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        return self.apply(x, self.draw(x, gen))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config!r})"
