"""Audio I/O: probe, decode (soundfile first, FFmpeg through PyAV as the per-file fallback),
mix to mono, resample (soxr) and stream long files in blocks.

Waveforms are ``float32`` arrays of shape ``(channels, samples)``; ``mono=True`` gives
``(1, samples)``. Times are in seconds (``offset_s``, ``duration_s``), rates in Hz.

Decoded samples are always finite: NaN and infinite samples (float files can hold them) are set
to 0 before mixing and resampling, in :func:`decode` and :func:`stream` alike, so a store and a
detection run see the same audio. Samples beyond ±1.0 (float files, some lossy decodes) are kept
as they are — clipping would distort the waveform (a float file at four times full scale lost
two thirds of its level) — and counted; a store on int16 scales such a file to fit (see
:mod:`chirpkit.data.parts`). :class:`Decoded` and :class:`Repairs` count both so that callers can
report the file.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import soundfile as sf
import soxr

from chirpkit.errors import AudioDecodeError

__all__ = [
    "AUDIO_EXTENSIONS",
    "AudioInfo",
    "Decoded",
    "Repairs",
    "decode",
    "info",
    "is_audio_path",
    "load",
    "repair",
    "resample",
    "stream",
    "to_mono",
]

#: File endings ingest treats as audio (anything FFmpeg reads can also be listed in a label CSV).
AUDIO_EXTENSIONS = frozenset(
    {
        ".wav",
        ".flac",
        ".ogg",
        ".oga",
        ".opus",
        ".mp3",
        ".m4a",
        ".aac",
        ".aif",
        ".aiff",
        ".wma",
        ".webm",
        ".mp4",
    }
)

_SF_BITS = {
    "PCM_S8": 8,
    "PCM_U8": 8,
    "PCM_16": 16,
    "PCM_24": 24,
    "PCM_32": 32,
    "FLOAT": 32,
    "DOUBLE": 64,
}
_SF_CODEC = {"VORBIS": "vorbis", "OPUS": "opus", "MPEG_LAYER_III": "mp3", "ALAC_16": "alac"}
_LOSSLESS_AV = ("flac", "alac", "wavpack", "ape", "tta")
_PREROLL_S = 0.5  # decoded and dropped before a seek point (FFmpeg path)


@dataclass(frozen=True)
class AudioInfo:
    """Facts about one audio file, read from its header (no full decode)."""

    path: str
    duration_s: float
    sample_rate: int
    channels: int
    frames: int
    container: str  #: e.g. "wav", "flac", "mp3", "ogg", "mov,mp4,m4a,3gp,3g2,mj2"
    codec: str  #: e.g. "pcm_16", "flac", "mp3", "vorbis", "aac"
    bit_depth: int | None  #: bits per sample of lossless audio; None for lossy codecs
    decoder: str  #: "soundfile" or "pyav" (FFmpeg fallback)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Decoded(NamedTuple):
    """What :func:`decode` returns (a named tuple: ``y, sample_rate, decoder`` come first)."""

    y: np.ndarray  #: (channels, samples) float32
    sample_rate: int
    decoder: str  #: "soundfile" or "pyav"
    nonfinite: int = 0  #: NaN/±inf samples found in the file's audio and set to 0
    over_full_scale: int = 0  #: samples beyond full scale (|x| > 1), kept as they are


@dataclass
class Repairs:
    """Samples :func:`stream` repaired so far (pass one in to learn about a file)."""

    nonfinite: int = 0  #: NaN/±inf samples set to 0
    over_full_scale: int = 0  #: samples beyond full scale (|x| > 1), kept

    def describe(self) -> str:
        """A one-line account for reports; empty when nothing was repaired."""
        parts = []
        if self.nonfinite:
            parts.append(f"{self.nonfinite} NaN/infinite sample(s) set to 0")
        if self.over_full_scale:
            parts.append(f"{self.over_full_scale} sample(s) beyond full scale (kept as they are)")
        return "; ".join(parts)


def repair(y: np.ndarray) -> tuple[np.ndarray, int, int]:
    """``(y, nonfinite, over_full_scale)``: NaN/±inf set to 0 (in place when ``y`` is writable);
    samples beyond ±1 counted and kept. Costs two reductions when there is nothing to count."""
    if y.size == 0:
        return y, 0, 0
    lo, hi = float(y.min()), float(y.max())
    if lo >= -1.0 and hi <= 1.0:  # False for NaN too
        return y, 0, 0
    if not y.flags.writeable:
        y = y.copy()
    bad = ~np.isfinite(y)
    nonfinite = int(bad.sum())
    if nonfinite:
        y[bad] = 0.0
    return y, nonfinite, int(np.count_nonzero(np.abs(y) > 1.0))


def is_audio_path(path: str | os.PathLike[str]) -> bool:
    return Path(path).suffix.lower() in AUDIO_EXTENSIONS


def _short(exc: BaseException, path: Path | None = None) -> str:
    """The first line of a decoder's message, without the path (the report names the file) and
    without FFmpeg's error number."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if path is not None:
        text = text.replace(f"Error opening '{path}': ", "").replace(f": '{path}'", "")
    text = re.sub(r"^\[Errno -?\d+\] ", "", text)
    return text[:200]


def _check_file(path: Path) -> None:
    if not path.exists():
        if path.is_symlink():
            raise AudioDecodeError(str(path), f"broken symbolic link (it points to {path.readlink()})")
        raise AudioDecodeError(str(path), "file does not exist")
    if path.is_dir():
        raise AudioDecodeError(str(path), "is a folder, not a file")
    if not os.access(path, os.R_OK):
        raise AudioDecodeError(str(path), "permission denied (the file is not readable)")
    if path.stat().st_size == 0:
        raise AudioDecodeError(str(path), "empty file (0 bytes)")


def _sf_info(path: Path) -> AudioInfo:
    i = sf.info(str(path))
    codec = _SF_CODEC.get(i.subtype, "flac" if i.format == "FLAC" else i.subtype.lower())
    return AudioInfo(
        path=str(path),
        duration_s=float(i.frames) / float(i.samplerate),
        sample_rate=int(i.samplerate),
        channels=int(i.channels),
        frames=int(i.frames),
        container=i.format.lower(),
        codec=codec,
        bit_depth=_SF_BITS.get(i.subtype),
        decoder="soundfile",
    )


def _av_info(path: Path) -> AudioInfo:
    import av

    with av.open(str(path)) as container:
        if not container.streams.audio:
            raise ValueError("no audio stream")
        st = container.streams.audio[0]
        cc = st.codec_context
        if cc is None:
            raise ValueError("unsupported audio codec (FFmpeg has no decoder for it)")
        rate = int(cc.sample_rate or st.rate or 0)
        if rate <= 0:
            raise ValueError("unknown sample rate")
        if st.duration is not None and st.time_base is not None:
            duration = float(st.duration * st.time_base)
        elif container.duration is not None:
            duration = container.duration / 1_000_000
        else:
            duration = 0.0
        if not cc.name:
            raise ValueError("unknown audio codec")
        codec = "mp3" if cc.name.startswith("mp3") else cc.name
        bits = cc.format.bits if cc.format is not None and codec.startswith((*_LOSSLESS_AV, "pcm")) else None
        return AudioInfo(
            path=str(path),
            duration_s=duration,
            sample_rate=rate,
            channels=int(cc.channels or st.channels),
            frames=round(duration * rate),
            container=container.format.name,
            codec=codec,
            bit_depth=bits,
            decoder="pyav",
        )


def info(path: str | os.PathLike[str]) -> AudioInfo:
    """Read a file's header: duration, rate, channels, codec, bit depth.

    Raises:
        AudioDecodeError: the file is missing, empty, or neither libsndfile nor FFmpeg reads it.
    """
    p = Path(path)
    _check_file(p)
    try:
        return _sf_info(p)
    except Exception as sf_exc:
        try:
            return _av_info(p)
        except Exception as av_exc:
            raise AudioDecodeError(
                str(p),
                f"not readable as audio (soundfile: {_short(sf_exc, p)}; ffmpeg: {_short(av_exc, p)})",
            ) from av_exc


def _sf_read(path: Path, offset_s: float, duration_s: float | None) -> tuple[np.ndarray, int]:
    with sf.SoundFile(str(path)) as f:
        sr = int(f.samplerate)
        start = max(0, round(offset_s * sr))
        if start > 0:
            if start >= f.frames:
                return np.zeros((f.channels, 0), np.float32), sr
            f.seek(start)
        n = -1 if duration_s is None else max(0, round(duration_s * sr))
        y = f.read(frames=n, dtype="float32", always_2d=True)
    return np.ascontiguousarray(y.T), sr


def _av_frames(path: Path, offset_s: float) -> Iterator[tuple[np.ndarray, int, float | None]]:
    """Yield ``(block (channels, n) float32, sample_rate, block_start_s or None)`` from FFmpeg."""
    import av

    with av.open(str(path)) as container:
        if not container.streams.audio:
            raise ValueError("no audio stream")
        st = container.streams.audio[0]
        if offset_s > _PREROLL_S:
            # lossy codecs need the frames before a seek point to decode it (overlap-add):
            # seek early, the caller trims by timestamp
            time_base = float(st.time_base) if st.time_base else 1e-6
            container.seek(int((offset_s - _PREROLL_S) / time_base), stream=st, backward=True)
        resampler = av.AudioResampler(format="fltp")
        for frame in _av_decode(container, st):
            t = frame.time
            for out in resampler.resample(frame):
                yield out.to_ndarray().astype(np.float32, copy=False), int(out.sample_rate), t
                t = None
        for out in resampler.resample(None):
            yield out.to_ndarray().astype(np.float32, copy=False), int(out.sample_rate), None


def _av_decode(container: Any, stream: Any) -> Iterator[Any]:
    """``container.decode(stream)``, except that a file cut short (an interrupted copy or
    download) ends at its last good frame instead of failing: once audio has been decoded, a
    damaged packet ends the stream. The caller sees the audio end early (``prepare`` reports a
    file shorter than its catalog entry)."""
    import av

    decoded = False
    try:
        for packet in container.demux(stream):
            try:
                frames = packet.decode()
            except av.error.FFmpegError:
                if decoded:
                    return
                raise
            for frame in frames:
                decoded = True
                yield frame
    except av.error.FFmpegError:
        if not decoded:
            raise


def _av_read(path: Path, offset_s: float, duration_s: float | None) -> tuple[np.ndarray, int]:
    blocks: list[np.ndarray] = []
    sr = 0
    pos: int | None = None  # sample index of the next decoded sample
    start = 0
    stop: int | None = None
    for block, rate, t in _av_frames(path, offset_s):
        if pos is None:
            sr = rate
            start = max(0, round(offset_s * sr))
            stop = None if duration_s is None else start + max(0, round(duration_s * sr))
            pos = round(t * sr) if (t is not None and offset_s > _PREROLL_S) else 0
        n = block.shape[1]
        lo, hi = max(start, pos), pos + n if stop is None else min(stop, pos + n)
        if hi > lo:
            blocks.append(block[:, lo - pos : hi - pos])
        pos += n
        if stop is not None and pos >= stop:
            break
    if pos is None:
        raise ValueError("no audio frames decoded")
    if not blocks:
        channels = 1
        return np.zeros((channels, 0), np.float32), sr
    return np.concatenate(blocks, axis=1), sr


def to_mono(y: np.ndarray) -> np.ndarray:
    """Average channels: ``(channels, samples)`` → ``(1, samples)``."""
    if y.ndim == 1:
        return y[None, :]
    if y.shape[0] == 1:
        return y
    return y.mean(axis=0, keepdims=True, dtype=np.float32)


def resample(y: np.ndarray, *, orig_sr: int, target_sr: int, quality: str = "HQ") -> np.ndarray:
    """Resample ``(channels, samples)`` audio with soxr (a no-op when the rates match)."""
    if orig_sr <= 0 or target_sr <= 0:
        raise ValueError(
            f"sample rates must be positive integers, got orig_sr={orig_sr}, target_sr={target_sr}"
        )
    if orig_sr == target_sr or y.shape[-1] == 0:
        return y.astype(np.float32, copy=False)
    out = soxr.resample(np.ascontiguousarray(y.T), orig_sr, target_sr, quality=quality)
    out = out.reshape(out.shape[0], -1)
    return np.ascontiguousarray(out.T, dtype=np.float32)


def decode(
    path: str | os.PathLike[str],
    *,
    sample_rate: int | None = None,
    mono: bool = True,
    offset_s: float = 0.0,
    duration_s: float | None = None,
) -> Decoded:
    """Decode a file (or the part ``[offset_s, offset_s + duration_s)``) and say which decoder did.

    libsndfile is tried first (fast, sample-exact seeks); any failure falls back to FFmpeg through
    PyAV, which reads m4a/aac/wma and FLACs that libsndfile rejects.

    Samples are repaired as the module docstring says (NaN/inf → 0; beyond ±1 kept, counted).

    Returns:
        ``Decoded(y, sample_rate, decoder, nonfinite, over_full_scale)`` with ``y`` of shape
        ``(channels, samples)``; ``nonfinite`` counts the repaired samples, ``over_full_scale``
        those beyond ±1.

    Raises:
        AudioDecodeError: neither decoder could read the file.
    """
    p = Path(path)
    _check_file(p)
    if offset_s < 0:
        raise ValueError(f"offset_s={offset_s} must be >= 0")
    decoder = "soundfile"
    try:
        y, sr = _sf_read(p, offset_s, duration_s)
    except Exception as sf_exc:
        decoder = "pyav"
        try:
            y, sr = _av_read(p, offset_s, duration_s)
        except Exception as av_exc:
            raise AudioDecodeError(
                str(p),
                f"not readable as audio (soundfile: {_short(sf_exc, p)}; ffmpeg: {_short(av_exc, p)})",
            ) from av_exc
    y, nonfinite, over = repair(y)
    if mono:
        y = to_mono(y)
    if sample_rate is not None and sample_rate != sr:
        y = resample(y, orig_sr=sr, target_sr=sample_rate)
        sr = sample_rate
    return Decoded(y, sr, decoder, nonfinite, over)


def load(
    path: str | os.PathLike[str],
    *,
    sample_rate: int | None = None,
    mono: bool = True,
    offset_s: float = 0.0,
    duration_s: float | None = None,
) -> tuple[np.ndarray, int]:
    """Decode audio to ``float32`` ``(channels, samples)``; see :func:`decode`.

    Returns:
        ``(y, sample_rate)``.
    """
    d = decode(path, sample_rate=sample_rate, mono=mono, offset_s=offset_s, duration_s=duration_s)
    return d.y, d.sample_rate


def _raw_blocks(path: Path, block_frames: int) -> Iterator[tuple[np.ndarray, int]]:
    try:
        f = sf.SoundFile(str(path))
    except Exception:
        pending: list[np.ndarray] = []
        n = 0
        for block, sr, _ in _av_frames(path, 0.0):
            pending.append(block)
            n += block.shape[1]
            if n >= block_frames:
                yield np.concatenate(pending, axis=1), sr
                pending, n = [], 0
        if pending:
            yield np.concatenate(pending, axis=1), sr
        return
    with f:
        sr = int(f.samplerate)
        while True:
            y = f.read(frames=block_frames, dtype="float32", always_2d=True)
            if y.shape[0] == 0:
                break
            yield np.ascontiguousarray(y.T), sr


def stream(
    path: str | os.PathLike[str],
    *,
    sample_rate: int,
    block_s: float = 60.0,
    repairs: Repairs | None = None,
) -> Iterator[np.ndarray]:
    """Decode a long file block by block as mono ``float32`` at ``sample_rate``.

    Memory stays flat whatever the file's length: blocks of about ``block_s`` seconds are decoded,
    mixed to mono and resampled with a streaming soxr resampler (sample-aligned with a one-shot
    resample of the whole file). Samples are repaired as :func:`decode` does; pass ``repairs`` (a
    :class:`Repairs`) to learn how many were, e.g. to report the file once it is done.

    Yields:
        1-D arrays of samples; concatenated, they are the whole file.

    Raises:
        AudioDecodeError: the file cannot be opened or breaks off mid-way (with the path).
    """
    p = Path(path)
    _check_file(p)
    resampler: soxr.ResampleStream | None = None
    src_rate = 0
    try:
        try:
            src_rate = info(p).sample_rate
        except AudioDecodeError:
            raise
        block_frames = max(1024, int(block_s * src_rate))
        blocks = _raw_blocks(p, block_frames)
        if src_rate != sample_rate:
            resampler = soxr.ResampleStream(src_rate, sample_rate, 1, dtype="float32", quality="HQ")
        for block, _ in blocks:
            block, nonfinite, over = repair(block)
            if repairs is not None:
                repairs.nonfinite += nonfinite
                repairs.over_full_scale += over
            mono = to_mono(block)[0]
            if resampler is not None:
                out = resampler.resample_chunk(mono, last=False)
                if out.size:
                    yield out
            else:
                yield mono
        if resampler is not None:
            tail = resampler.resample_chunk(np.zeros(0, np.float32), last=True)
            if tail.size:
                yield tail
    except AudioDecodeError:
        raise
    except Exception as exc:
        raise AudioDecodeError(str(p), f"decoding failed: {_short(exc, p)}") from exc
