"""Spectrogram features as pure tensor functions with thin ``nn.Module`` wrappers.

Input waveforms are ``(batch, samples)`` (or ``(samples,)``); spectrograms are
``(batch, 1, n_bins, frames)``. Kinds: ``logmel`` (dB), ``stft`` (dB power), ``mfcc``, ``pcen``.
Filterbanks and windows are registered buffers, so ``.to(device)`` moves them and the same code
runs batched on CPU or GPU. The mel filterbank is librosa's (Slaney scale and norm), and frames
are centred with zero padding as in ``librosa.stft``, so :class:`LogMel` matches
``librosa.power_to_db(librosa.feature.melspectrogram(...))``, :class:`MFCC` matches
``librosa.feature.mfcc`` on the same dB mel, and :class:`PCEN` matches ``librosa.pcen``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import librosa
import numpy as np
import torch
from torch import nn

from chirpkit.config import FeatureConfig

__all__ = [
    "MFCC",
    "PCEN",
    "LogMel",
    "Spectrogram",
    "build_frontend",
    "dct_matrix",
    "mel_filterbank",
    "pcen",
    "power_to_db",
    "stft_power",
]


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


class _Frontend(nn.Module):
    """Shared STFT part: ``(batch, samples)`` → power ``(batch, n_fft // 2 + 1, frames)``.

    ``power_hook`` (training only) may transform the linear power spectrogram, e.g. a pitch shift
    that warps the frequency axis, before the bins are mapped and compressed.
    """

    window: torch.Tensor

    def __init__(self, *, sample_rate: int, n_fft: int, hop_length: int, win_length: int | None) -> None:
        super().__init__()
        if hop_length <= 0:
            raise ValueError(f"hop_length={hop_length} must be a positive integer")
        self.sample_rate = sample_rate
        self.n_fft = n_fft
        self.hop_length = hop_length
        win = win_length or n_fft
        window = torch.hann_window(win, periodic=True)
        if win < n_fft:  # centre the shorter window in n_fft, as librosa does
            left = (n_fft - win) // 2
            window = nn.functional.pad(window, (left, n_fft - win - left))
        self.register_buffer("window", window, persistent=False)
        self.n_bins = n_fft // 2 + 1

    def frames(self, samples: int) -> int:
        """Number of frames for an input of ``samples`` samples."""
        return samples // self.hop_length + 1

    def power(self, y: torch.Tensor, power_hook: PowerHook | None = None) -> torch.Tensor:
        if y.ndim == 1:
            y = y[None]
        p = stft_power(y.float(), n_fft=self.n_fft, hop_length=self.hop_length, window=self.window)
        return power_hook(p) if power_hook is not None else p


PowerHook = Callable[[torch.Tensor], torch.Tensor]


class Spectrogram(_Frontend):
    """STFT power in dB (``scale="db"``, the default), power, or magnitude:
    ``(batch, samples)`` → ``(batch, 1, n_fft // 2 + 1, frames)``."""

    def __init__(self, *, scale: str = "db", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if scale not in ("db", "power", "magnitude"):
            raise ValueError(f"scale={scale!r} must be db, power or magnitude")
        self.scale = scale

    def forward(self, y: torch.Tensor, power_hook: PowerHook | None = None) -> torch.Tensor:
        p = self.power(y, power_hook)
        if self.scale == "db":
            p = power_to_db(p)
        elif self.scale == "magnitude":
            p = p.sqrt()
        return p[:, None]


class LogMel(_Frontend):
    """Log-mel spectrogram in dB: ``(batch, samples)`` → ``(batch, 1, n_mels, frames)``."""

    mel_fb: torch.Tensor

    def __init__(
        self,
        *,
        sample_rate: int,
        n_fft: int = 1024,
        hop_length: int = 640,
        win_length: int | None = None,
        n_mels: int = 64,
        fmin_hz: float = 50.0,
        fmax_hz: float | None = None,
    ) -> None:
        super().__init__(sample_rate=sample_rate, n_fft=n_fft, hop_length=hop_length, win_length=win_length)
        self.n_mels = self.n_bins = n_mels
        fb = mel_filterbank(
            sample_rate=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin_hz=fmin_hz, fmax_hz=fmax_hz
        )
        self.register_buffer("mel_fb", fb, persistent=False)

    def mel_power(self, y: torch.Tensor, power_hook: PowerHook | None = None) -> torch.Tensor:
        """Mel power ``(batch, n_mels, frames)``."""
        return torch.matmul(self.mel_fb, self.power(y, power_hook))

    def forward(self, y: torch.Tensor, power_hook: PowerHook | None = None) -> torch.Tensor:
        return power_to_db(self.mel_power(y, power_hook))[:, None]


def dct_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """Orthonormal DCT-II matrix ``(n_out, n_in)`` (as ``scipy.fft.dct(type=2, norm='ortho')``)."""
    k = torch.arange(n_out, dtype=torch.float64)[:, None]
    n = torch.arange(n_in, dtype=torch.float64)[None, :]
    m = torch.cos(torch.pi / n_in * (n + 0.5) * k) * (2.0 / n_in) ** 0.5
    m[0] /= 2**0.5
    return m.float()


class MFCC(LogMel):
    """MFCCs (DCT-II of the dB log-mel): ``(batch, samples)`` → ``(batch, 1, n_mfcc, frames)``."""

    dct: torch.Tensor

    def __init__(self, *, n_mfcc: int = 20, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not 0 < n_mfcc <= self.n_mels:
            raise ValueError(f"n_mfcc={n_mfcc} must be between 1 and n_mels={self.n_mels}")
        self.register_buffer("dct", dct_matrix(self.n_mels, n_mfcc), persistent=False)
        self.n_bins = n_mfcc

    def forward(self, y: torch.Tensor, power_hook: PowerHook | None = None) -> torch.Tensor:
        db = power_to_db(self.mel_power(y, power_hook))
        return torch.matmul(self.dct, db)[:, None]


def pcen(
    mel: torch.Tensor,
    *,
    sample_rate: int,
    hop_length: int,
    gain: float = 0.98,
    bias: float = 2.0,
    power: float = 0.5,
    time_constant_s: float = 0.4,
    eps: float = 1e-6,
) -> torch.Tensor:
    """Per-channel energy normalisation of ``(..., bins, frames)`` power (librosa's ``pcen``).

    The smoother ``M[t] = (1 - b) M[t-1] + b E[t]`` starts in steady state on the first frame
    (librosa's ``zi=lfilter_zi(...) * S[..., :1]``; librosa's default assumes a past input of 1,
    which makes every window start with a transient). It runs as a causal convolution with the
    exponential kernel truncated below 1e-7.
    """
    t_frames = time_constant_s * sample_rate / hop_length
    b = ((1 + 4 * t_frames**2) ** 0.5 - 1) / (2 * t_frames**2)
    length = int(np.ceil(np.log(1e-7) / np.log(1 - b)))
    kernel = b * (1 - b) ** torch.arange(length, dtype=mel.dtype, device=mel.device)
    shape = mel.shape
    x = mel.reshape(-1, 1, shape[-1])
    padded = torch.cat([x[..., :1].expand(-1, -1, length - 1), x], dim=-1)  # steady state before t=0
    smooth = nn.functional.conv1d(padded, kernel.flip(0)[None, None]).reshape(shape)
    smooth = smooth / kernel.sum()  # the truncated kernel sums to 1 - 1e-7; keep DC gain exact
    return (mel / (eps + smooth) ** gain + bias) ** power - bias**power


class PCEN(LogMel):
    """PCEN of mel power (scaled by 2**31 as librosa recommends for float audio):
    ``(batch, samples)`` → ``(batch, 1, n_mels, frames)``; robust to level and stationary noise."""

    def __init__(
        self,
        *,
        pcen_time_constant_s: float = 0.4,
        pcen_gain: float = 0.98,
        pcen_bias: float = 2.0,
        pcen_power: float = 0.5,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.params = {
            "time_constant_s": pcen_time_constant_s,
            "gain": pcen_gain,
            "bias": pcen_bias,
            "power": pcen_power,
        }

    def forward(self, y: torch.Tensor, power_hook: PowerHook | None = None) -> torch.Tensor:
        mel = self.mel_power(y, power_hook) * 2.0**31
        return pcen(mel, sample_rate=self.sample_rate, hop_length=self.hop_length, **self.params)[:, None]


def build_frontend(features: FeatureConfig, sample_rate: int) -> _Frontend:
    """The feature module a :class:`~chirpkit.config.FeatureConfig` describes (``n_bins`` tells
    its output height)."""
    stft: dict[str, Any] = {
        "sample_rate": sample_rate,
        "n_fft": features.n_fft,
        "hop_length": features.hop_length,
        "win_length": features.win_length,
    }
    mel: dict[str, Any] = {
        **stft,
        "n_mels": features.n_mels,
        "fmin_hz": features.fmin_hz,
        "fmax_hz": features.fmax_hz,
    }
    if features.kind == "logmel":
        return LogMel(**mel)
    if features.kind == "stft":
        return Spectrogram(scale=features.stft_scale, **stft)
    if features.kind == "mfcc":
        return MFCC(n_mfcc=features.n_mfcc, **mel)
    if features.kind == "pcen":
        return PCEN(
            pcen_time_constant_s=features.pcen_time_constant_s,
            pcen_gain=features.pcen_gain,
            pcen_bias=features.pcen_bias,
            pcen_power=features.pcen_power,
            **mel,
        )
    raise ValueError(f"unknown feature kind {features.kind!r}")
