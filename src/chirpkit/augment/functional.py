"""Augmentation functions on batched tensors: pure, seeded through an explicit generator where random.

The transforms of :mod:`chirpkit.augment` draw their parameters and call these.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = [
    "colored_noise_batch",
    "fit_centre",
    "mix_at_snr",
    "phase_vocoder",
    "pitch_shift",
    "read_shifted",
    "read_window",
    "time_stretch",
    "warp_pitch",
]


def colored_noise_batch(
    n: int, samples: int, exponents: torch.Tensor, *, generator: torch.Generator, device: torch.device
) -> torch.Tensor:
    """Noise with power ∝ 1/f^exponent per row (0 white, 1 pink, 2 brown), unit RMS: ``(n, samples)``."""
    white = torch.randn(n, samples, generator=generator).to(device)
    spec = torch.fft.rfft(white, dim=1)
    f = torch.fft.rfftfreq(samples, device=device)
    f[0] = f[1]
    spec = spec / f[None, :] ** (exponents.to(device)[:, None] / 2)
    y = torch.fft.irfft(spec, n=samples, dim=1)
    y = y - y.mean(dim=1, keepdim=True)
    return y / y.pow(2).mean(dim=1, keepdim=True).sqrt().clamp_min(1e-12)


def mix_at_snr(signal: torch.Tensor, noise: torch.Tensor, snr_db: torch.Tensor) -> torch.Tensor:
    """``signal + noise`` scaled so that signal power / noise power = ``snr_db`` per row."""
    p_sig = signal.pow(2).mean(dim=1, keepdim=True).clamp_min(1e-10)
    p_noise = noise.pow(2).mean(dim=1, keepdim=True).clamp_min(1e-12)
    scale = torch.sqrt(p_sig / p_noise / (10 ** (snr_db.to(signal.device)[:, None] / 10)))
    return signal + noise * scale


def read_shifted(
    segments: torch.Tensor, window: int, shift: torch.Tensor, rate: torch.Tensor
) -> torch.Tensor:
    """Read a ``window``-sample excerpt from the middle of each ``(batch, samples)`` segment,
    moved by ``shift`` samples and played at ``rate`` (>1 faster and higher), with linear
    interpolation; positions outside a segment read as zeros."""
    total = segments.shape[1]
    dev = segments.device
    centre = (total - 1) / 2.0
    t = torch.arange(window, device=dev, dtype=torch.float32) - (window - 1) / 2.0
    pos = centre + shift.to(dev, torch.float32)[:, None] + t[None, :] * rate.to(dev, torch.float32)[:, None]
    lo = pos.floor().long()
    frac = pos - lo
    inside_lo = (lo >= 0) & (lo < total)
    inside_hi = (lo + 1 >= 0) & (lo + 1 < total)
    a = segments.gather(1, lo.clamp(0, total - 1)) * inside_lo
    bb = segments.gather(1, (lo + 1).clamp(0, total - 1)) * inside_hi
    return a * (1 - frac) + bb * frac


def warp_pitch(power: torch.Tensor, semitones: torch.Tensor) -> torch.Tensor:
    """Shift ``(batch, freq_bins, frames)`` linear power up or down by ``semitones`` per example
    (a component at f moves to f · 2^(s/12)); the total power is kept approximately."""
    b, f, t = power.shape
    ratio = 2.0 ** (semitones.to(power.device, torch.float32) / 12.0)
    src = torch.arange(f, device=power.device, dtype=torch.float32)[None, :] / ratio[:, None]
    y = 2.0 * src / max(1, f - 1) - 1.0  # grid_sample coordinates in [-1, 1]
    x = torch.linspace(-1.0, 1.0, t, device=power.device)
    grid = torch.stack([x[None, None, :].expand(b, f, t), y[:, :, None].expand(b, f, t)], dim=-1)
    warped = nn.functional.grid_sample(
        power[:, None], grid, mode="bilinear", padding_mode="zeros", align_corners=True
    )[:, 0]
    return warped / ratio[:, None, None]


def phase_vocoder(spec: torch.Tensor, rate: float, hop_length: int) -> torch.Tensor:
    """Time-stretch a complex STFT ``(..., freq, frames)`` by ``rate`` (> 1 faster): frames are
    read at steps of ``rate``, magnitudes interpolated, phases advanced by each bin's measured
    instantaneous frequency (as ``librosa.phase_vocoder`` / ``torchaudio.functional.phase_vocoder``)."""
    n_freq, n_frames = spec.shape[-2], spec.shape[-1]
    dev = spec.device
    steps = torch.arange(0, n_frames, rate, device=dev, dtype=torch.float64)
    advance = torch.linspace(0, torch.pi * hop_length, n_freq, device=dev, dtype=torch.float64)[:, None]
    padded = nn.functional.pad(spec, (0, 2))
    i0 = steps.floor().long()
    s0, s1 = padded[..., i0], padded[..., i0 + 1]
    alpha = (steps - i0).to(spec.real.dtype)
    mag = (1 - alpha) * s0.abs() + alpha * s1.abs()
    dphi = (s1.angle() - s0.angle()).double() - advance
    dphi = dphi - 2 * torch.pi * torch.round(dphi / (2 * torch.pi)) + advance
    phase = torch.cat([spec[..., :1].angle().double(), dphi[..., :-1]], dim=-1).cumsum(-1)
    phase = torch.remainder(phase, 2 * torch.pi)  # accumulated in float64, wrapped before float32
    return torch.polar(mag, phase.to(mag.dtype))


def time_stretch(y: torch.Tensor, rate: float, *, n_fft: int = 1024, hop_length: int = 256) -> torch.Tensor:
    """``(samples,)`` audio played ``rate`` times faster at the same pitch: ``round(samples / rate)``
    samples."""
    if rate == 1.0:
        return y
    window = torch.hann_window(n_fft, device=y.device)
    spec = torch.stft(
        y.float(), n_fft, hop_length, window=window, center=True, pad_mode="constant", return_complex=True
    )
    length = round(y.shape[-1] / rate)
    return torch.istft(phase_vocoder(spec, rate, hop_length), n_fft, hop_length, window=window, length=length)


def pitch_shift(y: torch.Tensor, semitones: float, *, n_fft: int = 1024) -> torch.Tensor:
    """``(samples,)`` audio shifted by ``semitones`` at the same tempo and length: time-stretched
    by 2^(-s/12), then read 2^(s/12) times faster (the augmenter does the same inside its read)."""
    r = 2.0 ** (semitones / 12.0)
    slow = fit_centre(time_stretch(y, 1.0 / r, n_fft=n_fft, hop_length=n_fft // 4), y.shape[-1])
    return read_shifted(slow[None], y.shape[-1], torch.zeros(1), torch.tensor([r]))[0]


def fit_centre(y: torch.Tensor, length: int) -> torch.Tensor:
    """Crop or zero-pad ``(samples,)`` to ``length`` about its centre."""
    extra = y.shape[-1] - length
    if extra >= 0:
        return y[extra // 2 : extra // 2 + length]
    return nn.functional.pad(y, (-extra // 2, -extra - (-extra // 2)))


def read_window(
    segments: torch.Tensor,
    window: int,
    margin: int,
    *,
    shift: torch.Tensor,
    rate: torch.Tensor,
    tempo: torch.Tensor,
    pitch: torch.Tensor,
    n_fft: int,
) -> torch.Tensor:
    """``(batch, window + 2·margin)`` segments → ``(batch, window)``, each moved by ``shift``
    samples, played at ``rate`` (tempo and pitch together), time-stretched by ``tempo`` and
    pitch-shifted by the ratio ``pitch`` (all ``(batch,)``; 0 and 1 leave an example alone).

    Tempo and pitch are one phase-vocoder pass (by ``tempo / pitch``, frame ``n_fft``) on the
    whole segment; then one interpolated read at ``rate · pitch`` (a copy of slices when every
    example only moves by whole samples)."""
    todo = ((tempo != 1) | (pitch != 1)).nonzero()[:, 0].tolist()
    if todo:
        out = segments.clone()
        for i in todo:
            q = float(tempo[i] / pitch[i])
            stretched = time_stretch(segments[i], q, n_fft=n_fft, hop_length=n_fft // 4)
            out[i] = fit_centre(stretched, segments.shape[1])
        segments = out
    rate = rate * pitch
    if not bool((shift != 0).any() or (rate != 1).any()):
        return segments[:, margin : margin + window]
    if not bool((rate != 1).any()):  # whole-sample shifts only: copy slices, no interpolation
        starts = (margin + shift).long().tolist()
        return torch.stack([seg[s : s + window] for seg, s in zip(segments, starts, strict=True)])
    return read_shifted(segments, window, shift, rate)
