"""Training-time augmentations, batched in torch on the training device, seeded.

Each transform draws its random parameters (``sample``) separately from applying them (``apply``),
has an explicit probability ``p`` (per example) and ranges with units in their names. They run
only inside the training step (:class:`Augmenter` is owned by the training task, never by the
model), so evaluation, detection and export skip them by construction.

Stages, in order:

1. **waveform** — ``(batch, window + 2·margin)`` segments from the store → ``(batch, window)``:
   time shift (±``max_shift_fraction`` of the window, taken from the stored margin so no zeros
   are pulled in while the margin suffices) and speed (resampling by ``min_speed``…``max_speed``),
   both as one interpolated read; time-stretch (tempo without pitch) and, with
   ``pitch_mode: waveform``, pitch shift (pitch without tempo), both by a phase vocoder on the
   segment before that read; gain (dB); pink-to-brown noise at an SNR (dB); recorded background
   noise from a folder (preloaded once) at an SNR; mixup (labels mixed too).
2. **power** — the linear power spectrogram: pitch shift (±``max_semitones``) by warping the
   frequency axis (``pitch_mode: spectrogram``, the default: no phase vocoder, nearly free).
3. **spectrogram** — the normalised features: frequency and time masking (SpecAugment; masked
   cells are set to 0, the mean after the input normalisation).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn

from chirpkit.config import AugmentConfig

__all__ = [
    "Augmenter",
    "colored_noise_batch",
    "mix_at_snr",
    "phase_vocoder",
    "pitch_shift",
    "read_shifted",
    "time_stretch",
    "warp_pitch",
]

log = logging.getLogger("chirpkit")


def _uniform(gen: torch.Generator, n: int, lo: float, hi: float) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=gen)


def _chosen(gen: torch.Generator, n: int, p: float) -> torch.Tensor:
    return torch.rand(n, generator=gen) < p


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
    slow = _fit_centre(time_stretch(y, 1.0 / r, n_fft=n_fft, hop_length=n_fft // 4), y.shape[-1])
    return read_shifted(slow[None], y.shape[-1], torch.zeros(1), torch.tensor([r]))[0]


def _fit_centre(y: torch.Tensor, length: int) -> torch.Tensor:
    """Crop or zero-pad ``(samples,)`` to ``length`` about its centre."""
    extra = y.shape[-1] - length
    if extra >= 0:
        return y[extra // 2 : extra // 2 + length]
    return nn.functional.pad(y, (-extra // 2, -extra - (-extra // 2)))


def _load_background(folder: str, sample_rate: int, max_minutes: float) -> torch.Tensor:
    from chirpkit.audio import decode, is_audio_path

    root = Path(folder)
    if not root.is_dir():
        from chirpkit.errors import MissingPathError

        raise MissingPathError(f"augment.background_dir not found: {root}")
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
        from chirpkit.errors import DataError

        raise DataError(f"augment.background_dir {root} holds no readable audio")
    log.info("background noise: %.1f min from %s loaded", total / sample_rate / 60, root)
    return torch.from_numpy(np.concatenate(pieces))


class Augmenter:
    """All augmentations of an :class:`~chirpkit.config.AugmentConfig`, for one training run.

    Args:
        config: probabilities and ranges.
        sample_rate: of the windows.
        window_samples: model input length.
        margin_samples: real audio stored on each side of a window (room for shifts and speed).
        seed: seeds the parameter draws (add the process rank under DDP).
    """

    def __init__(
        self, config: AugmentConfig, *, sample_rate: int, window_samples: int, margin_samples: int, seed: int
    ) -> None:
        self.cfg = config
        self.sr = sample_rate
        self.window = window_samples
        self.margin = margin_samples
        self._vocoder_fft = 1 << max(8, round(np.log2(sample_rate * 0.032)))  # ~32 ms: 1024 at 32 kHz
        self.gen = torch.Generator().manual_seed(seed)
        self._background: torch.Tensor | None = None
        if config.background_p > 0:
            if not config.background_dir:
                from chirpkit.errors import ConfigError

                raise ConfigError(
                    "augment.background_p > 0 needs augment.background_dir (a folder of noise audio)"
                )
            self._background = _load_background(config.background_dir, sample_rate, config.background_minutes)
        wanted = config.max_shift_fraction * window_samples
        if config.time_shift_p > 0 and margin_samples < wanted:
            log.info(
                "time shift limited to ±%.2f s by the stored margin (audio.margin_s); ±%.2f s asked",
                margin_samples / sample_rate,
                wanted / sample_rate,
            )

    @property
    def active(self) -> bool:
        c = self.cfg
        return any(
            v > 0
            for v in (
                c.time_shift_p,
                c.speed_p,
                c.gain_p,
                c.noise_p,
                c.background_p,
                c.mixup_p,
                c.pitch_p,
                c.stretch_p,
                c.freq_mask_p,
                c.time_mask_p,
            )
        )

    def _device_gen(self, device: torch.device) -> torch.Generator:
        g = torch.Generator(device=device)
        g.manual_seed(int(torch.randint(0, 2**62, (1,), generator=self.gen)))
        return g

    # -- stage 1: waveform -------------------------------------------------------------------
    def read(self, segments: torch.Tensor) -> torch.Tensor:
        """``(batch, window + 2·margin)`` → ``(batch, window)`` with per-example shift and speed."""
        b = segments.shape[0]
        c = self.cfg
        shift = torch.zeros(b)
        room = min(self.margin, int(c.max_shift_fraction * self.window))
        chosen = _chosen(self.gen, b, c.time_shift_p)
        shift[chosen] = torch.round(_uniform(self.gen, int(chosen.sum()), -room, room))
        rate = torch.ones(b)
        chosen = _chosen(self.gen, b, c.speed_p)
        rate[chosen] = _uniform(self.gen, int(chosen.sum()), c.min_speed, c.max_speed)
        segments, pitch = self._vocode(segments)
        rate = rate * pitch
        if not bool((shift != 0).any() or (rate != 1).any()):
            return segments[:, self.margin : self.margin + self.window]
        if not bool((rate != 1).any()):  # whole-sample shifts only: copy slices, no interpolation
            starts = (self.margin + shift).long().tolist()
            return torch.stack([seg[s : s + self.window] for seg, s in zip(segments, starts, strict=True)])
        return read_shifted(segments, self.window, shift, rate)

    def _vocode(self, segments: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Time-stretch (tempo ``s``) and waveform pitch shift (ratio ``r``): each segment is
        phase-vocoded by ``s / r``; returns the segments and ``r``, by which the read must speed up."""
        c = self.cfg
        b = segments.shape[0]
        tempo = torch.ones(b)
        if c.stretch_p > 0:  # no draws when off: runs without it keep their random stream
            chosen = _chosen(self.gen, b, c.stretch_p)
            tempo[chosen] = _uniform(self.gen, int(chosen.sum()), c.min_stretch, c.max_stretch)
        pitch = torch.ones(b)
        if c.pitch_mode == "waveform" and c.pitch_p > 0:
            chosen = _chosen(self.gen, b, c.pitch_p)
            semis = _uniform(self.gen, int(chosen.sum()), -c.max_semitones, c.max_semitones)
            pitch[chosen] = 2.0 ** (semis / 12.0)
        todo = ((tempo != 1) | (pitch != 1)).nonzero()[:, 0].tolist()
        if not todo:
            return segments, pitch
        out = segments.clone()
        n_fft = self._vocoder_fft
        for i in todo:
            q = float(tempo[i] / pitch[i])
            out[i] = _fit_centre(
                time_stretch(segments[i], q, n_fft=n_fft, hop_length=n_fft // 4), segments.shape[1]
            )
        return out, pitch

    def waveform(self, x: torch.Tensor) -> torch.Tensor:
        """Gain, coloured noise and recorded background noise on ``(batch, window)``."""
        c = self.cfg
        b = x.shape[0]
        dev = x.device
        chosen = _chosen(self.gen, b, c.gain_p)
        if chosen.any():
            gain_db = torch.zeros(b)
            gain_db[chosen] = _uniform(self.gen, int(chosen.sum()), c.min_gain_db, c.max_gain_db)
            x = x * (10 ** (gain_db / 20)).to(dev)[:, None]
        chosen = _chosen(self.gen, b, c.noise_p)
        if chosen.any():
            idx = chosen.nonzero()[:, 0]
            exps = _uniform(self.gen, len(idx), c.min_noise_exponent, c.max_noise_exponent)
            snr = _uniform(self.gen, len(idx), c.min_snr_db, c.max_snr_db)
            noise = colored_noise_batch(len(idx), x.shape[1], exps, generator=self.gen, device=dev)
            x = x.clone()
            x[idx.to(dev)] = mix_at_snr(x[idx.to(dev)], noise, snr)
        chosen = _chosen(self.gen, b, c.background_p)
        if chosen.any() and self._background is not None:
            bank = self._background
            if bank.device != dev:
                bank = self._background = bank.to(dev)
            idx = chosen.nonzero()[:, 0]
            n = x.shape[1]
            starts = torch.randint(0, max(1, bank.numel() - n), (len(idx),), generator=self.gen)
            noise = torch.stack(
                [
                    bank[s : s + n] if bank.numel() >= n else nn.functional.pad(bank, (0, n - bank.numel()))
                    for s in starts.tolist()
                ]
            )
            snr = _uniform(self.gen, len(idx), c.min_background_snr_db, c.max_background_snr_db)
            x = x.clone()
            x[idx.to(dev)] = mix_at_snr(x[idx.to(dev)], noise, snr)
        return x

    def mixup(self, x: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mix chosen examples with a random partner; ``target`` (probabilities) is mixed alike."""
        c = self.cfg
        b = x.shape[0]
        chosen = _chosen(self.gen, b, c.mixup_p)
        if not chosen.any() or b < 2:
            return x, target
        lam = torch.ones(b)
        draws = _beta(self.gen, int(chosen.sum()), c.mixup_alpha)
        lam[chosen] = torch.maximum(draws, 1 - draws)  # the example keeps the larger share
        partner = torch.randperm(b, generator=self.gen)
        lam_d = lam.to(x.device)
        x = lam_d[:, None] * x + (1 - lam_d[:, None]) * x[partner.to(x.device)]
        target = lam_d[:, None] * target + (1 - lam_d[:, None]) * target[partner.to(x.device)]
        return x, target

    # -- stage 2: power spectrogram ----------------------------------------------------------
    def power(self, power: torch.Tensor) -> torch.Tensor:
        """Pitch shift of ``(batch, freq_bins, frames)`` linear power by frequency warping."""
        c = self.cfg
        b = power.shape[0]
        if c.pitch_mode != "spectrogram":
            return power
        chosen = _chosen(self.gen, b, c.pitch_p)
        if not chosen.any():
            return power
        semis = torch.zeros(b)
        semis[chosen] = _uniform(self.gen, int(chosen.sum()), -c.max_semitones, c.max_semitones)
        return warp_pitch(power, semis)

    # -- stage 3: normalised spectrogram -----------------------------------------------------
    def spectrogram(self, spec: torch.Tensor) -> torch.Tensor:
        """Frequency and time masks on ``(batch, 1, bins, frames)`` (masked cells = 0)."""
        c = self.cfg
        b, _, f, t = spec.shape
        keep = torch.ones(b, f, t, dtype=torch.bool)
        for p, n_masks, width, axis, size in (
            (c.freq_mask_p, c.freq_masks, c.max_freq_bins, 1, f),
            (c.time_mask_p, c.time_masks, c.max_time_frames, 2, t),
        ):
            chosen = _chosen(self.gen, b, p)
            for i in chosen.nonzero()[:, 0].tolist():
                for _ in range(n_masks):
                    w = int(torch.randint(0, min(width, size) + 1, (1,), generator=self.gen))
                    s = int(torch.randint(0, max(1, size - w + 1), (1,), generator=self.gen))
                    if axis == 1:
                        keep[i, s : s + w, :] = False
                    else:
                        keep[i, :, s : s + w] = False
        if bool(keep.all()):
            return spec
        return spec * keep[:, None].to(spec.device)


def _beta(gen: torch.Generator, n: int, alpha: float) -> torch.Tensor:
    """``n`` Beta(alpha, alpha) draws, seeded from ``gen``."""
    seed = int(torch.randint(0, 2**31, (1,), generator=gen))
    return torch.from_numpy(np.random.default_rng(seed).beta(alpha, alpha, size=n)).float()
