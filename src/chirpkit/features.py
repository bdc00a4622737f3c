"""Spectrogram features as pure tensor functions with thin ``nn.Module`` wrappers.

Input waveforms are ``(batch, samples)`` (or ``(samples,)``); spectrograms are
``(batch, 1, n_bins, frames)``. Filterbanks and windows are registered buffers, so ``.to(device)``
moves them and the same code runs batched on CPU or GPU. The mel filterbank is librosa's
(Slaney scale and norm), and frames are centred with zero padding as in ``librosa.stft``, so
:class:`LogMel` matches ``librosa.power_to_db(librosa.feature.melspectrogram(...))``.
"""

from __future__ import annotations

import librosa
import numpy as np
import torch
from torch import nn

from chirpkit.config import FeatureConfig

__all__ = ["LogMel", "build_frontend", "mel_filterbank", "power_to_db", "stft_power"]


def mel_filterbank(
    *, sample_rate: int, n_fft: int, n_mels: int, fmin_hz: float = 0.0, fmax_hz: float | None = None
) -> torch.Tensor:
    """Mel filterbank ``(n_mels, n_fft // 2 + 1)`` (librosa's Slaney mel, area-normalised)."""
    fmax = fmax_hz if fmax_hz is not None else sample_rate / 2
    if fmax > sample_rate / 2 + 1e-6:
        raise ValueError(f"fmax_hz={fmax} is above the Nyquist frequency {sample_rate / 2} Hz")
    fb = librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=fmin_hz, fmax=fmax)
    return torch.from_numpy(np.ascontiguousarray(fb, dtype=np.float32))


def stft_power(y: torch.Tensor, *, n_fft: int, hop_length: int, window: torch.Tensor) -> torch.Tensor:
    """Power spectrogram ``|STFT|²`` of ``(..., samples)`` → ``(..., n_fft // 2 + 1, frames)``.

    Frames are centred (``samples // hop_length + 1`` frames), zero-padded at the edges.
    """
    shape = y.shape
    flat = y.reshape(-1, shape[-1])
    spec = torch.stft(
        flat,
        n_fft=n_fft,
        hop_length=hop_length,
        win_length=window.shape[0],
        window=window,
        center=True,
        pad_mode="constant",
        return_complex=True,
    )
    power = spec.real.square() + spec.imag.square()
    return power.reshape(*shape[:-1], *power.shape[-2:])


def power_to_db(power: torch.Tensor, *, amin: float = 1e-10) -> torch.Tensor:
    """``10 * log10(max(power, amin))``, i.e. dB relative to 1 (``librosa.power_to_db(ref=1)``)."""
    return 10.0 * torch.log10(torch.clamp(power, min=amin))


class LogMel(nn.Module):
    """Log-mel spectrogram in dB: ``(batch, samples)`` → ``(batch, 1, n_mels, frames)``."""

    window: torch.Tensor
    mel_fb: torch.Tensor

    def __init__(
        self,
        *,
        sample_rate: int,
        n_fft: int = 1024,
        hop_length: int = 320,
        win_length: int | None = None,
        n_mels: int = 64,
        fmin_hz: float = 50.0,
        fmax_hz: float | None = None,
    ) -> None:
        super().__init__()
        if hop_length <= 0:
            raise ValueError(f"hop_length={hop_length} must be a positive integer")
        self.sample_rate = sample_rate
        self.n_fft = n_fft
        self.hop_length = hop_length
        self.n_mels = n_mels
        win = win_length or n_fft
        window = torch.hann_window(win, periodic=True)
        if win < n_fft:  # centre the shorter window in n_fft, as librosa does
            left = (n_fft - win) // 2
            window = nn.functional.pad(window, (left, n_fft - win - left))
        self.register_buffer("window", window, persistent=False)
        fb = mel_filterbank(
            sample_rate=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin_hz=fmin_hz, fmax_hz=fmax_hz
        )
        self.register_buffer("mel_fb", fb, persistent=False)

    def frames(self, samples: int) -> int:
        """Number of frames for an input of ``samples`` samples."""
        return samples // self.hop_length + 1

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        if y.ndim == 1:
            y = y[None]
        power = stft_power(y.float(), n_fft=self.n_fft, hop_length=self.hop_length, window=self.window)
        mel = torch.matmul(self.mel_fb, power)
        return power_to_db(mel)[:, None]


def build_frontend(features: FeatureConfig, sample_rate: int) -> nn.Module:
    """The feature module a :class:`~chirpkit.config.FeatureConfig` describes."""
    if features.kind == "logmel":
        return LogMel(
            sample_rate=sample_rate,
            n_fft=features.n_fft,
            hop_length=features.hop_length,
            win_length=features.win_length,
            n_mels=features.n_mels,
            fmin_hz=features.fmin_hz,
            fmax_hz=features.fmax_hz,
        )
    raise ValueError(f"unknown feature kind {features.kind!r}")
