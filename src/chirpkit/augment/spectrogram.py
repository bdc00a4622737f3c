"""Spectrogram-stage transforms: pitch shift by warping the linear power's frequency axis
(``pitch.mode: spectrogram``, the default: no phase vocoder, nearly free), and frequency and
time masks on the normalised features (SpecAugment; masked cells are set to 0, the mean after
the input normalisation)."""

from __future__ import annotations

from typing import ClassVar

import torch

from chirpkit.augment.base import Transform, uniform
from chirpkit.augment.functional import warp_pitch
from chirpkit.config import FreqMaskConfig, PitchConfig, TimeMaskConfig

__all__ = ["FreqMask", "PitchWarp", "TimeMask"]


class PitchWarp(Transform[torch.Tensor | None]):
    """Pitch shift of ``(batch, freq_bins, frames)`` linear power by ±``max_semitones``."""

    name, stage = "pitch", "power"
    config: PitchConfig

    @classmethod
    def applies(cls, config: PitchConfig) -> bool:
        return config.mode == "spectrogram"

    def draw(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor | None:
        chosen = self.chosen(x.shape[0], gen)
        if not chosen.any():
            return None
        semitones = torch.zeros(x.shape[0])
        semitones[chosen] = uniform(
            gen, int(chosen.sum()), -self.config.max_semitones, self.config.max_semitones
        )
        return semitones

    def apply(self, x: torch.Tensor, params: torch.Tensor | None) -> torch.Tensor:
        return x if params is None else warp_pitch(x, params)


class _Mask(Transform[torch.Tensor]):
    """Up to ``masks`` bands of random width (0 to the maximum) on one axis of
    ``(batch, 1, bins, frames)``; draws the ``(batch, bins, frames)`` cells kept."""

    stage = "spectrogram"
    axis: ClassVar[int]  # of the (batch, bins, frames) mask

    def width(self) -> int:
        raise NotImplementedError

    def draw(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        b, _, f, t = x.shape
        keep = torch.ones(b, f, t, dtype=torch.bool)
        size = keep.shape[self.axis]
        for i in self.chosen(b, gen).nonzero()[:, 0].tolist():
            for _ in range(self.config.masks):
                w = int(torch.randint(0, min(self.width(), size) + 1, (1,), generator=gen))
                s = int(torch.randint(0, max(1, size - w + 1), (1,), generator=gen))
                keep[i].narrow(self.axis - 1, s, w).fill_(False)
        return keep

    def apply(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        return x if bool(params.all()) else x * params[:, None].to(x.device)


class FreqMask(_Mask):
    name, axis = "freq_mask", 1
    config: FreqMaskConfig

    def width(self) -> int:
        return self.config.max_bins


class TimeMask(_Mask):
    name, axis = "time_mask", 2
    config: TimeMaskConfig

    def width(self) -> int:
        return self.config.max_frames
