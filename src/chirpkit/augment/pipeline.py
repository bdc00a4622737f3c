"""The composing pipeline: every transform of an :class:`~chirpkit.config.AugmentConfig`, stage by
stage, for one training run (:class:`Augmenter`)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from chirpkit.augment import mixup, spectrogram, waveform
from chirpkit.augment.base import Context, Stage, Transform
from chirpkit.augment.waveform import ReadTransform, read
from chirpkit.config import AugmentConfig

__all__ = ["TRANSFORMS", "Augmenter", "build_transforms"]

# Every registered transform, in the order the pipeline draws for them within a stage (the order
# is part of the seeded random stream). The ``pitch`` block is served by one class per mode.
TRANSFORMS: tuple[type[Transform], ...] = (
    *(waveform.TimeShift, waveform.Speed, waveform.Stretch, waveform.PitchShift),  # read
    *(waveform.Gain, waveform.Noise, waveform.Background, mixup.Mixup),
    *(spectrogram.PitchWarp, spectrogram.FreqMask, spectrogram.TimeMask),
)


def build_transforms(config: AugmentConfig, context: Context) -> list[Transform]:
    """One transform per block of ``config`` (``p = 0`` included: it still draws, see
    :attr:`Transform.draws_at_p0`)."""
    blocks = [(cls, getattr(config, cls.name)) for cls in TRANSFORMS]
    return [cls(block, context) for cls, block in blocks if cls.applies(block)]


class Augmenter:
    """All augmentations of a config, for one training run, as four stage methods that the
    training step calls in order: :meth:`read` and :meth:`waveform` (with :meth:`mixup`) on the
    audio, :meth:`power` inside the front-end, :meth:`spectrogram` after the input normalisation.

    Args:
        config: one block per transform (probabilities and ranges).
        sample_rate: of the windows.
        window_samples: model input length.
        margin_samples: real audio stored on each side of a window (room for shifts and speed).
        seed: seeds the parameter draws (add the process rank under DDP).
        transforms: compose these instead of the config's (``config`` is then ignored).
    """

    def __init__(
        self,
        config: AugmentConfig,
        *,
        sample_rate: int,
        window_samples: int,
        margin_samples: int,
        seed: int,
        transforms: Sequence[Transform] | None = None,
    ) -> None:
        self.context = Context(sample_rate, window_samples, margin_samples)
        self.transforms = (
            list(transforms) if transforms is not None else build_transforms(config, self.context)
        )
        self.gen = torch.Generator().manual_seed(seed)

    def stage(self, stage: Stage) -> list[Transform]:
        return [t for t in self.transforms if t.stage == stage]

    @property
    def active(self) -> bool:
        """Whether any transform has ``p > 0``."""
        return any(t.p > 0 for t in self.transforms)

    def read(self, segments: torch.Tensor) -> torch.Tensor:
        """``(batch, window + 2·margin)`` → ``(batch, window)``: the read-stage transforms draw
        their parameters, then one read applies them all."""
        moves: dict[str, torch.Tensor] = {}
        for t in self.transforms:
            if isinstance(t, ReadTransform):
                value = t.draw(segments, self.gen)
                if t.param in moves:  # two transforms of one parameter: shifts add up, rates multiply
                    value = moves[t.param] + value if t.param == "shift" else moves[t.param] * value
                moves[t.param] = value
        return read(segments, self.context, moves)

    def waveform(self, x: torch.Tensor) -> torch.Tensor:
        """Gain, noise and background noise on ``(batch, window)``."""
        for t in self.stage("waveform"):
            x = t(x, self.gen)
        return x

    def mixup(self, x: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mix chosen examples with a random partner; ``target`` (probabilities) is mixed alike."""
        for t in self.stage("mixup"):
            params = t.draw(x, self.gen)
            x, target = t.apply(x, params), t.apply(target, params)
        return x, target

    def power(self, power: torch.Tensor) -> torch.Tensor:
        """Pitch shift of ``(batch, freq_bins, frames)`` linear power (``pitch.mode: spectrogram``)."""
        for t in self.stage("power"):
            power = t(power, self.gen)
        return power

    def spectrogram(self, spec: torch.Tensor) -> torch.Tensor:
        """Frequency and time masks on ``(batch, 1, bins, frames)`` (masked cells = 0)."""
        for t in self.stage("spectrogram"):
            spec = t(spec, self.gen)
        return spec

    def __repr__(self) -> str:
        return f"Augmenter({', '.join(map(repr, self.transforms))})"
