"""Waveform-stage transforms.

Read stage (segments from the store → windows), composed into one read by the pipeline: time shift
(from the stored margin, so no zeros are pulled in while the margin suffices), speed (resampling),
time-stretch and, with ``pitch.mode: waveform``, pitch shift (one phase-vocoder pass for both).
Then, on the windows: gain (dB), pink-to-brown noise at an SNR (dB), recorded background noise
from a folder (preloaded once) at an SNR.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from chirpkit.audio import decode, is_audio_path
from chirpkit.augment.base import Context, Transform, uniform
from chirpkit.augment.functional import colored_noise_batch, mix_at_snr, read_window
from chirpkit.config import (
    BackgroundConfig,
    GainConfig,
    NoiseConfig,
    PitchConfig,
    SpeedConfig,
    StretchConfig,
    TimeShiftConfig,
)
from chirpkit.errors import ConfigError, DataError, MissingPathError

__all__ = ["Background", "Gain", "Noise", "PitchShift", "ReadTransform", "Speed", "Stretch", "TimeShift"]

log = logging.getLogger("chirpkit")

Chosen = tuple[torch.Tensor, ...] | None  # (indices of the chosen examples, their parameters...)


# the read_window parameters, and the value that leaves an example alone
IDENTITY = {"shift": 0.0, "rate": 1.0, "tempo": 1.0, "pitch": 1.0}


def read(segments: torch.Tensor, context: Context, moves: dict[str, torch.Tensor]) -> torch.Tensor:
    """:func:`~chirpkit.augment.functional.read_window` for windows of ``context``, with the
    given ``(batch,)`` parameters (the others at their identity)."""
    full = {k: moves.get(k, torch.full((segments.shape[0],), v)) for k, v in IDENTITY.items()}
    c = context
    return read_window(segments, c.window_samples, c.margin_samples, n_fft=c.vocoder_fft, **full)


class ReadTransform(Transform[torch.Tensor]):
    """Draws one :func:`~chirpkit.augment.functional.read_window` parameter (``param``) per
    example: its identity where the example is not chosen."""

    stage = "read"
    param: ClassVar[str]

    def draw(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        out = torch.full((x.shape[0],), IDENTITY[self.param])
        chosen = self.chosen(x.shape[0], gen)
        out[chosen] = self.values(int(chosen.sum()), gen)  # no draw for none chosen
        return out

    def values(self, n: int, gen: torch.Generator) -> torch.Tensor:
        raise NotImplementedError

    def apply(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        return read(x, self.context, {self.param: params})


class TimeShift(ReadTransform):
    name, param = "time_shift", "shift"
    config: TimeShiftConfig

    def __init__(self, config: TimeShiftConfig, context: Context) -> None:
        super().__init__(config, context)
        wanted = config.max_fraction * context.window_samples
        self.room = min(context.margin_samples, int(wanted))  # samples
        if config.p > 0 and context.margin_samples < wanted:
            log.info(
                "time shift limited to ±%.2f s by the stored margin (audio.margin_s); ±%.2f s asked",
                context.margin_samples / context.sample_rate,
                wanted / context.sample_rate,
            )

    def values(self, n: int, gen: torch.Generator) -> torch.Tensor:
        return torch.round(uniform(gen, n, -self.room, self.room))


class Speed(ReadTransform):
    name, param = "speed", "rate"
    config: SpeedConfig

    def values(self, n: int, gen: torch.Generator) -> torch.Tensor:
        return uniform(gen, n, self.config.min_rate, self.config.max_rate)


class Stretch(ReadTransform):
    name, param, draws_at_p0 = "stretch", "tempo", False  # added later: runs without it keep their stream
    config: StretchConfig

    def values(self, n: int, gen: torch.Generator) -> torch.Tensor:
        return uniform(gen, n, self.config.min_rate, self.config.max_rate)


class PitchShift(ReadTransform):
    """Pitch shift on the waveform (``pitch.mode: waveform``): phase vocoder, then a faster read."""

    name, param, draws_at_p0 = "pitch", "pitch", False
    config: PitchConfig

    @classmethod
    def applies(cls, config: PitchConfig) -> bool:
        return config.mode == "waveform"

    def values(self, n: int, gen: torch.Generator) -> torch.Tensor:
        semitones = uniform(gen, n, -self.config.max_semitones, self.config.max_semitones)
        return 2.0 ** (semitones / 12.0)


class Gain(Transform[torch.Tensor | None]):
    name, stage = "gain", "waveform"
    config: GainConfig

    def draw(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor | None:
        chosen = self.chosen(x.shape[0], gen)
        if not chosen.any():
            return None
        gain_db = torch.zeros(x.shape[0])
        gain_db[chosen] = uniform(gen, int(chosen.sum()), self.config.min_db, self.config.max_db)
        return gain_db

    def apply(self, x: torch.Tensor, params: torch.Tensor | None) -> torch.Tensor:
        return x if params is None else x * (10 ** (params / 20)).to(x.device)[:, None]


def _mix(x: torch.Tensor, idx: torch.Tensor, noise: torch.Tensor, snr_db: torch.Tensor) -> torch.Tensor:
    x = x.clone()
    x[idx.to(x.device)] = mix_at_snr(x[idx.to(x.device)], noise, snr_db)
    return x


class Noise(Transform[Chosen]):
    """Pink-to-brown noise at an SNR: (examples, noise, SNR) are drawn, the mixing is applied."""

    name, stage = "noise", "waveform"
    config: NoiseConfig

    def draw(self, x: torch.Tensor, gen: torch.Generator) -> Chosen:
        chosen = self.chosen(x.shape[0], gen)
        if not chosen.any():
            return None
        c, idx = self.config, chosen.nonzero()[:, 0]
        exponents = uniform(gen, len(idx), c.min_exponent, c.max_exponent)
        snr_db = uniform(gen, len(idx), c.min_snr_db, c.max_snr_db)
        noise = colored_noise_batch(len(idx), x.shape[1], exponents, generator=gen, device=x.device)
        return idx, noise, snr_db

    def apply(self, x: torch.Tensor, params: Chosen) -> torch.Tensor:
        return x if params is None else _mix(x, *params)


class Background(Transform[Chosen]):
    """Recorded noise from ``background.dir`` (up to ``minutes``, preloaded once) at an SNR."""

    name, stage = "background", "waveform"
    config: BackgroundConfig

    def __init__(self, config: BackgroundConfig, context: Context) -> None:
        super().__init__(config, context)
        self.bank: torch.Tensor | None = None
        if config.p > 0:
            if not config.dir:
                raise ConfigError(
                    "augment.background.p > 0 needs augment.background.dir (a folder of noise audio)"
                )
            self.bank = _load_background(config.dir, context.sample_rate, config.minutes)

    def draw(self, x: torch.Tensor, gen: torch.Generator) -> Chosen:
        chosen = self.chosen(x.shape[0], gen)
        if not chosen.any() or self.bank is None:
            return None
        idx = chosen.nonzero()[:, 0]
        starts = torch.randint(0, max(1, self.bank.numel() - x.shape[1]), (len(idx),), generator=gen)
        return idx, starts, uniform(gen, len(idx), self.config.min_snr_db, self.config.max_snr_db)

    def apply(self, x: torch.Tensor, params: Chosen) -> torch.Tensor:
        if params is None or self.bank is None:
            return x
        idx, starts, snr_db = params
        if self.bank.device != x.device:
            self.bank = self.bank.to(x.device)
        bank, n = self.bank, x.shape[1]
        short = bank.numel() < n
        noise = torch.stack(
            [
                nn.functional.pad(bank, (0, n - bank.numel())) if short else bank[s : s + n]
                for s in starts.tolist()
            ]
        )
        return _mix(x, idx, noise, snr_db)


def _load_background(folder: str, sample_rate: int, max_minutes: float) -> torch.Tensor:
    root = Path(folder)
    if not root.is_dir():
        raise MissingPathError(f"augment.background.dir not found: {root}")
    budget = int(max_minutes * 60 * sample_rate)
    pieces: list[np.ndarray] = []
    total = 0
    for f in sorted(p for p in root.rglob("*") if p.is_file() and is_audio_path(p)):
        try:
            y = decode(f, sample_rate=sample_rate).y[0]
        except Exception as exc:  # a bad noise file must not stop training
            log.warning("background noise: skipped %s (%s)", f, exc)
            continue
        pieces.append(y[: budget - total])
        total += pieces[-1].size
        if total >= budget:
            break
    if not pieces:
        raise DataError(f"augment.background.dir {root} holds no readable audio")
    log.info("background noise: %.1f min from %s loaded", total / sample_rate / 60, root)
    return torch.from_numpy(np.concatenate(pieces))
