"""Generators for the bad-input corpus: small broken files of every kind, written on the fly.

Each generator writes one input into a folder and returns its path. The tests in this package
declare, per kind, the outcome chirpkit must give: it works (maybe with a report line), the input
is skipped and reported with a reason, or a clear :class:`~chirpkit.errors.ChirpkitError` names
the file/row/value. Every test also checks that no partial output is left behind.
"""

from __future__ import annotations

import io
import os
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile as sf

SR = 8000


def signal(seconds: float = 2.0, freq: float = 440.0, sr: int = SR, amp: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def wav_bytes(
    data: bytes,
    *,
    channels: int = 1,
    rate: int = SR,
    bits: int = 16,
    fmt: int = 1,
    data_size: int | None = None,
    riff_size: int | None = None,
) -> bytes:
    """A RIFF/WAVE file with a hand-written header (so that the header can lie)."""
    block = max(1, channels * bits // 8)
    fmt_chunk = struct.pack("<4sIHHIIHH", b"fmt ", 16, fmt, channels, rate, rate * block, block, bits)
    size = len(data) if data_size is None else data_size
    body = b"WAVE" + fmt_chunk + struct.pack("<4sI", b"data", size) + data
    return struct.pack("<4sI", b"RIFF", len(body) if riff_size is None else riff_size) + body


def pcm16(y: np.ndarray) -> bytes:
    return (np.clip(y, -1, 1) * 32767).astype("<i2").tobytes()


def encoded(y: np.ndarray, fmt: str, sr: int = SR, **kw: object) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, y, sr, format=fmt, **kw)
    return buf.getvalue()


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


# ---- audio files: kind -> writer(folder) -> path -------------------------------------------------


def good(folder: Path, name: str = "good.wav", freq: float = 440.0) -> Path:
    return _write(folder / name, encoded(signal(freq=freq), "WAV"))


def zero_bytes(folder: Path) -> Path:
    return _write(folder / "zero_bytes.wav", b"")


def truncated_header(folder: Path) -> Path:
    return _write(folder / "truncated_header.wav", wav_bytes(pcm16(signal()))[:30])


def random_bytes(folder: Path) -> Path:
    return _write(folder / "random_bytes.flac", np.random.default_rng(0).bytes(4000))


def text_as_audio(folder: Path) -> Path:
    return _write(folder / "notes.mp3", b"this is not audio\n" * 50)


def wrong_extension(folder: Path) -> Path:
    """FLAC content in a file named .wav: decoders look at the content, so it works."""
    return _write(folder / "really_flac.wav", encoded(signal(freq=600), "FLAC"))


def nan_samples(folder: Path) -> Path:
    y = signal(freq=700)
    y[1000:1100] = np.nan
    y[2000] = np.inf
    y[2001] = -np.inf
    return _write(folder / "nan_samples.wav", encoded(y, "WAV", subtype="FLOAT"))


def above_full_scale(folder: Path) -> Path:
    return _write(folder / "loud_float.wav", encoded(signal(freq=800, amp=4.0), "WAV", subtype="FLOAT"))


def zero_frames(folder: Path) -> Path:
    return _write(folder / "zero_frames.wav", wav_bytes(b""))


def zero_channels(folder: Path) -> Path:
    return _write(folder / "zero_channels.wav", wav_bytes(pcm16(signal()), channels=0))


def zero_sample_rate(folder: Path) -> Path:
    return _write(folder / "zero_rate.wav", wav_bytes(pcm16(signal()), rate=0))


def huge_declared_length(folder: Path) -> Path:
    """The header claims 2 GB of samples; the file holds 2 s: decoders read what is there."""
    data = pcm16(signal(freq=900))
    return _write(folder / "huge_length.wav", wav_bytes(data, data_size=0x7FFFFFF0, riff_size=0x7FFFFFFF))


def unsupported_codec(folder: Path) -> Path:
    return _write(folder / "codec_9999.wav", wav_bytes(pcm16(signal()), fmt=0x9999))


def truncated_flac(folder: Path) -> Path:
    """An interrupted copy: the header promises 4 s, the data stops near half-way."""
    data = encoded(signal(4.0, freq=1000), "FLAC")
    return _write(folder / "cut_short.flac", data[: len(data) // 2])


def dangling_symlink(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    link = folder / "gone.wav"
    link.symlink_to(folder / "no_such_target.wav")
    return link


def folder_named_wav(folder: Path) -> Path:
    """A directory whose name ends in .wav (it is not a file; files inside it still count)."""
    d = folder / "takes.wav"
    d.mkdir(parents=True, exist_ok=True)
    return d


def stereo_one_channel_nan(folder: Path) -> Path:
    y = np.stack([signal(freq=500), signal(freq=1500)], axis=1)
    y[:, 1] = np.nan
    return _write(folder / "stereo_nan.wav", encoded(y, "WAV", subtype="FLOAT"))


def tiny_file(folder: Path) -> Path:
    return _write(folder / "ten_samples.wav", encoded(signal(10 / SR), "WAV"))


def high_rate(folder: Path) -> Path:
    return _write(folder / "bat_192k.wav", encoded(signal(0.5, freq=30000, sr=192000), "WAV", sr=192000))


def unsigned_8bit(folder: Path) -> Path:
    return _write(folder / "u8.wav", encoded(signal(freq=1200), "WAV", subtype="PCM_U8"))


def ogg_vorbis(folder: Path) -> Path:
    return _write(folder / "lossy.ogg", encoded(signal(freq=1300), "OGG", subtype="VORBIS"))


AudioMaker = Callable[[Path], Path]

#: kind -> (writer, outcome, reason fragment); outcome: "works", "skipped", or "ignored"
AUDIO_KINDS: dict[str, tuple[AudioMaker, str, str]] = {
    "zero_bytes": (zero_bytes, "skipped", "empty file (0 bytes)"),
    "truncated_header": (truncated_header, "skipped", "not readable as audio"),
    "random_bytes": (random_bytes, "skipped", "not readable as audio"),
    "text_named_mp3": (text_as_audio, "skipped", "not readable as audio"),
    "wrong_extension": (wrong_extension, "works", ""),
    "nan_samples": (nan_samples, "works", "nonfinite_samples"),
    "above_full_scale": (above_full_scale, "works", "scaled_to_full_scale"),
    "zero_frames": (zero_frames, "skipped", "0 frames"),
    "zero_channels": (zero_channels, "skipped", "no audio channels"),
    "zero_sample_rate": (zero_sample_rate, "skipped", "not readable as audio"),
    "huge_declared_length": (huge_declared_length, "works", ""),
    "unsupported_codec": (unsupported_codec, "skipped", "unsupported audio codec"),
    "truncated_flac": (truncated_flac, "works", "shorter_than_catalog"),
    "dangling_symlink": (dangling_symlink, "skipped", "broken symbolic link"),
    "folder_named_wav": (folder_named_wav, "ignored", ""),
    "stereo_one_channel_nan": (stereo_one_channel_nan, "works", "nonfinite_samples"),
    "ten_samples": (tiny_file, "works", ""),
    "rate_192k": (high_rate, "works", ""),
    "unsigned_8bit": (unsigned_8bit, "works", ""),
    "ogg_vorbis": (ogg_vorbis, "works", ""),
}


def leftovers(root: Path) -> list[Path]:
    """Temporary files (``.NAME.tmp-XXXX``) anywhere under ``root``: partial outputs."""
    return list(root.rglob(".*.tmp-*")) if root.exists() else []


def as_nobody() -> bool:
    """Whether permission tests can run for real (root reads and writes anything)."""
    return hasattr(os, "geteuid") and os.geteuid() != 0
