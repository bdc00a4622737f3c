"""What the reviewer sees and hears: a detection's clip with context, as a spectrogram PNG and a WAV.

The clip is the detection's span plus ``context_s`` on each side (cut at the ends of the
recording), decoded with :func:`chirpkit.audio.load` (mono, the file's own rate). The spectrogram
is drawn by matplotlib (its object API, no pyplot, so requests may render on several threads):
time in seconds of the recording, frequency in kHz, the detection's span boxed.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass

import numpy as np
import soundfile as sf

from chirpkit.audio import load

__all__ = ["Clip", "read_clip", "spectrogram_png", "wav_bytes"]


@dataclass(frozen=True)
class Clip:
    """Mono audio ``y`` (samples,) float32 at ``sample_rate``, starting ``offset_s`` into the recording."""

    y: np.ndarray
    sample_rate: int
    offset_s: float


def read_clip(path: str | os.PathLike[str], start_s: float, end_s: float, *, context_s: float = 1.5) -> Clip:
    """Decode ``[start_s - context_s, end_s + context_s]`` of a recording (clipped at its start).

    Raises:
        AudioDecodeError: the file cannot be decoded.
    """
    offset = max(0.0, float(start_s) - context_s)
    duration = float(end_s) + context_s - offset
    y, sr = load(path, offset_s=offset, duration_s=duration)
    return Clip(y[0].astype(np.float32, copy=False), int(sr), offset)


def wav_bytes(clip: Clip) -> bytes:
    """The clip as a 16-bit PCM WAV file, peak-normalised to -1 dBFS when it is quieter (easier to hear)."""
    y = clip.y
    peak = float(np.max(np.abs(y))) if y.size else 0.0
    if 0 < peak < 0.89:
        y = y * (0.89 / peak)
    buf = io.BytesIO()
    sf.write(buf, np.clip(y, -1.0, 1.0), clip.sample_rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def _stft_db(y: np.ndarray, sr: int) -> tuple[np.ndarray, float, int]:
    n_fft = 1024 if sr > 24000 else 512
    hop = n_fft // 4
    if y.size < n_fft:
        y = np.pad(y, (0, n_fft - y.size))
    frames = np.lib.stride_tricks.sliding_window_view(y, n_fft)[::hop]
    spec = np.abs(np.fft.rfft(frames * np.hanning(n_fft), axis=1)) ** 2
    db = 10 * np.log10(spec.T + 1e-12)
    return db, hop / sr, n_fft


def spectrogram_png(
    clip: Clip,
    start_s: float,
    end_s: float,
    *,
    title: str = "",
    width_px: int = 960,
    height_px: int = 340,
    dynamic_range_db: float = 80.0,
    max_freq_hz: float | None = None,
) -> bytes:
    """A PNG of the clip's spectrogram with the detection ``[start_s, end_s]`` boxed, from 0 Hz up to
    ``max_freq_hz`` (default: the file's Nyquist frequency)."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    db, hop_s, n_fft = _stft_db(clip.y, clip.sample_rate)
    nyq_khz = clip.sample_rate / 2000
    if max_freq_hz is not None and 0 < max_freq_hz / 1000 < nyq_khz:
        rows = int(np.ceil(max_freq_hz / clip.sample_rate * n_fft)) + 1
        db, nyq_khz = db[:rows], (rows - 1) * clip.sample_rate / n_fft / 1000
    top = float(db.max()) if db.size else 0.0
    t0 = clip.offset_s
    t1 = clip.offset_s + max(clip.y.size / clip.sample_rate, hop_s)
    dpi = 100
    fig = Figure(figsize=(width_px / dpi, height_px / dpi), dpi=dpi)
    ax = fig.add_subplot(111)
    ax.imshow(
        db,
        origin="lower",
        aspect="auto",
        cmap="magma",
        vmin=top - dynamic_range_db,
        vmax=top,
        extent=(t0, t1, 0.0, nyq_khz),
        interpolation="nearest",
    )
    ax.add_patch(
        Rectangle(
            (start_s, 0.0),
            end_s - start_s,
            nyq_khz,
            fill=False,
            edgecolor="#40e0d0",
            linewidth=2.0,
            linestyle="--",
        )
    )
    ax.set_xlim(t0, t1)
    ax.set_xlabel("time in the recording (s)")
    ax.set_ylabel("frequency (kHz)")
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout(pad=0.4)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
