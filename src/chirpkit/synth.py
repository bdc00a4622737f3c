"""Synthetic bird-like calls and field-like noise with known answers (demo and tests).

Calls are ``float32`` 1-D arrays at ``sample_rate`` with peak 1; every random draw comes from the
``numpy.random.Generator`` passed in.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.signal import butter, sosfilt
from scipy.signal.windows import tukey

__all__ = ["CALL_TYPES", "colored_noise", "make_call", "mix_at_snr"]


def _exp_chirp(f0: float, f1: float, dur: float, sr: int) -> np.ndarray:
    t = np.arange(int(dur * sr)) / sr
    k = f1 / f0
    if abs(k - 1.0) < 1e-6:
        phase = 2 * np.pi * f0 * t
    else:
        phase = 2 * np.pi * f0 * dur / np.log(k) * (k ** (t / dur) - 1.0)
    return np.sin(phase)


def _env(y: np.ndarray, alpha: float = 0.3) -> np.ndarray:
    return y * tukey(y.size, alpha) if y.size > 2 else y


def _up_sweep(rng: np.random.Generator, sr: int, pitch: float) -> np.ndarray:
    f0 = rng.uniform(1500, 3000) * pitch
    return _env(_exp_chirp(f0, f0 * rng.uniform(1.6, 2.4), rng.uniform(0.25, 0.6), sr))


def _down_sweep(rng: np.random.Generator, sr: int, pitch: float) -> np.ndarray:
    f0 = rng.uniform(3500, 6000) * pitch
    return _env(_exp_chirp(f0, f0 / rng.uniform(1.6, 2.4), rng.uniform(0.25, 0.6), sr))


def _trill(rng: np.random.Generator, sr: int, pitch: float) -> np.ndarray:
    rate = rng.uniform(8, 16)
    n_notes = max(3, int(rng.uniform(0.6, 1.4) * rate))
    f0 = rng.uniform(3000, 5000) * pitch
    note = _env(_exp_chirp(f0, f0 * 0.8, 0.6 / rate, sr), 0.5)
    gap = np.zeros(int(0.4 / rate * sr))
    return np.concatenate([np.concatenate([note, gap]) for _ in range(n_notes)])


def _two_note(rng: np.random.Generator, sr: int, pitch: float) -> np.ndarray:
    f1 = rng.uniform(2200, 4000) * pitch
    f2 = f1 * rng.uniform(0.65, 0.8)
    d1, d2 = rng.uniform(0.15, 0.3), rng.uniform(0.15, 0.3)

    def tone(f: float, d: float) -> np.ndarray:
        t = np.arange(int(d * sr)) / sr
        return _env(np.sin(2 * np.pi * f * t + 0.002 * f * np.sin(2 * np.pi * 6 * t)))

    return np.concatenate([tone(f1, d1), np.zeros(int(rng.uniform(0.05, 0.12) * sr)), tone(f2, d2)])


def _harmonic_stack(rng: np.random.Generator, sr: int, pitch: float) -> np.ndarray:
    f0 = rng.uniform(600, 1200) * pitch
    dur = rng.uniform(0.3, 0.8)
    t = np.arange(int(dur * sr)) / sr
    inst = f0 * (1 + 0.02 * np.sin(2 * np.pi * rng.uniform(4, 7) * t))
    phase = 2 * np.pi * np.cumsum(inst) / sr
    y = sum(np.sin(h * phase) / h for h in range(1, 6) if h * f0 < sr / 2 - 500)
    return _env(np.asarray(y))


def _buzz(rng: np.random.Generator, sr: int, pitch: float) -> np.ndarray:
    dur = rng.uniform(0.3, 0.8)
    n = int(dur * sr)
    centre = rng.uniform(3500, 6000) * pitch
    sos = butter(4, [centre - 700, centre + 700], btype="bandpass", fs=sr, output="sos")
    band = sosfilt(sos, rng.standard_normal(n + 2048))[2048:]
    t = np.arange(n) / sr
    am = 0.5 * (1 + np.sin(2 * np.pi * rng.uniform(40, 120) * t))
    return _env(band * am)


#: The six call types of the demo, by class name.
CALL_TYPES: dict[str, Callable[[np.random.Generator, int, float], np.ndarray]] = {
    "up_sweep": _up_sweep,
    "down_sweep": _down_sweep,
    "trill": _trill,
    "two_note": _two_note,
    "harmonic_stack": _harmonic_stack,
    "buzz": _buzz,
}


def make_call(kind: str, rng: np.random.Generator, *, sample_rate: int, pitch: float = 1.0) -> np.ndarray:
    """One call of ``kind`` (a key of :data:`CALL_TYPES`), peak-normalised to 1."""
    y = CALL_TYPES[kind](rng, sample_rate, pitch * rng.uniform(0.92, 1.08))
    return (y / (np.abs(y).max() + 1e-12)).astype(np.float32)


def colored_noise(n: int, rng: np.random.Generator, *, exponent: float = 1.0) -> np.ndarray:
    """Noise with power ∝ 1/f^exponent (0 white, 1 pink, 2 brown), unit RMS, ``(n,)`` float32."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n)
    f[0] = f[1] if n > 1 else 1.0
    y = np.fft.irfft(spec / f ** (exponent / 2.0), n)
    y -= y.mean()
    return (y / (np.sqrt(np.mean(y**2)) + 1e-12)).astype(np.float32)


def mix_at_snr(background: np.ndarray, call: np.ndarray, offset: int, snr_db: float) -> None:
    """Add ``call`` into ``background`` (in place) at ``offset`` with the given SNR in dB.

    The SNR compares the call's power with the background's power over the call's samples.
    """
    seg = background[offset : offset + call.size]
    call = call[: seg.size]
    p_noise = float(np.mean(seg**2)) + 1e-12
    p_call = float(np.mean(call**2)) + 1e-12
    seg += call * np.sqrt(p_noise / p_call * 10 ** (snr_db / 10.0))
