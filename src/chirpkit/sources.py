"""Where audio comes from: local paths and fsspec URLs (``s3://``, ``gs://``, ``memory://``,
``file://``), listed, identified and streamed from any sample onwards.

A *source* is a string: a local path, or a URL that fsspec reads (the filesystem's package must be
installed, e.g. ``s3fs`` for ``s3://``; nothing here imports fsspec unless a URL is given). Remote
files are decoded from file-like objects, so workers need no shared disk.

:class:`AudioSpan` streams one source as mono ``float32`` blocks at a target rate, starting at an
output sample that lies on the resampling grid of the whole file, so that the samples it yields
(after a short warm-up, see :data:`RESAMPLE_WARMUP_S`) equal those of a pass over the whole file:
the basis of time shards that give the same result as one pass. Non-finite samples (NaN, inf) are
set to 0 on the way, samples beyond full scale kept, and both counted (the rule of
``chirpkit.audio``'s decoders, so a store and a detection run see the same audio).
"""

from __future__ import annotations

import glob
import io
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import soxr

from chirpkit.audio import is_audio_path, to_mono
from chirpkit.errors import AudioDecodeError, DataError, MissingPathError

__all__ = [
    "RESAMPLE_WARMUP_S",
    "AudioSpan",
    "Probe",
    "identity",
    "is_url",
    "probe",
    "resolve_sources",
]

#: Output samples before a span's first needed sample that are decoded and dropped: soxr's HQ
#: filter reaches < 0.01 s; the rest is margin.
RESAMPLE_WARMUP_S = 0.25

#: libsndfile formats whose frame count is exact and whose seeks are sample-exact: the only ones
#: cut into time shards (anything else is processed as one work unit per file).
_EXACT_FORMATS = frozenset({"WAV", "WAVEX", "FLAC", "AIFF", "W64", "RF64", "CAF", "AU"})


def is_url(source: str) -> bool:
    return "://" in source


def _fs(url: str) -> tuple[Any, str]:
    try:
        from fsspec.core import url_to_fs
    except ImportError as exc:  # pragma: no cover - fsspec comes with lightning and dask
        raise DataError(f"{url}: reading URLs needs fsspec: pip install 'chirpkit[dask]'") from exc
    try:
        return url_to_fs(url)
    except (ImportError, ValueError) as exc:
        raise DataError(
            f"{url}: no filesystem for this URL ({exc}); install its fsspec package (s3fs for s3://, "
            "gcsfs for gs://)"
        ) from exc


def _url(fs: Any, path: str) -> str:
    return str(fs.unstrip_protocol(path))


def resolve_sources(inputs: Sequence[str | os.PathLike[str]]) -> tuple[list[str], list[dict[str, str]]]:
    """Expand files, folders (recursively, audio files only), glob patterns, URLs and ``@list.txt``
    (one path or URL per line) into a de-duplicated list of sources, in the order given.

    Returns:
        ``(sources, problems)``: problems are entries of a list file that do not exist and
        dangling links in folders, as ``{"file", "reason"}`` rows (skip and report).

    Raises:
        MissingPathError: an input that is neither an existing path nor a matching pattern, or a
            missing list file.
    """
    found: list[str] = []
    problems: list[dict[str, str]] = []
    for item in inputs:
        text = str(item)
        if text.startswith("@"):
            listing = Path(text[1:])
            if not listing.is_file():
                raise MissingPathError(f"file list not found: {listing} (give @FILE with one path per line)")
            for n, raw in enumerate(listing.read_text(encoding="utf-8-sig").splitlines(), 1):
                line = raw.strip()
                if not line or line.startswith("#"):
                    continue
                if is_url(line):
                    found.append(line)
                    continue
                p = Path(line) if Path(line).is_absolute() else listing.parent / line
                if p.is_file():
                    found.append(str(p))
                else:
                    what = "is a folder" if p.is_dir() else "does not exist"
                    problems.append({"file": str(p), "reason": f"{what} (listed in {listing}, line {n})"})
        elif is_url(text):
            found += _resolve_url(text)
        else:
            found += _resolve_local(text, problems)
    return list(dict.fromkeys(found)), problems


def _resolve_local(text: str, problems: list[dict[str, str]]) -> list[str]:
    p = Path(text)
    if p.is_dir():
        out = []
        for f in sorted(p.rglob("*")):
            if not is_audio_path(f):
                continue
            if f.is_file():
                out.append(str(f))
            elif f.is_symlink() and not f.exists():
                problems.append({"file": str(f), "reason": f"broken link (points to {f.readlink()})"})
        return out
    if p.exists():
        return [str(p)]
    if any(ch in text for ch in "*?["):
        matches = sorted(Path(m) for m in glob.glob(text, recursive=True))  # noqa: PTH207
        if not matches:
            raise MissingPathError(f"no file matches {text!r}")
        return [str(m) for m in matches if m.is_file()]
    raise MissingPathError(f"audio input not found: {p} (a file, folder, glob pattern, URL or @list.txt)")


def _resolve_url(url: str) -> list[str]:
    fs, path = _fs(url)
    if any(ch in path for ch in "*?["):
        matches = sorted(m for m in fs.glob(path) if fs.isfile(m))
        if not matches:
            raise MissingPathError(f"no file matches {url!r}")
        return [_url(fs, m) for m in matches]
    if fs.isdir(path):
        return [_url(fs, m) for m in sorted(fs.find(path)) if is_audio_path(m)]
    if fs.isfile(path):
        return [url]
    raise MissingPathError(f"audio input not found: {url}")


def identity(source: str) -> dict[str, Any]:
    """What makes a source's content: ``{"size", "version"}`` (mtime, ETag or generation).

    Raises:
        OSError: the source cannot be reached.
    """
    if not is_url(source):
        st = Path(source).stat()
        return {"size": st.st_size, "version": st.st_mtime_ns}
    fs, path = _fs(source)
    info = fs.info(path)
    version = next(
        (
            str(info[k])
            for k in ("ETag", "etag", "generation", "md5Hash", "mtime", "LastModified", "created")
            if info.get(k)
        ),
        "",
    )
    return {"size": int(info.get("size") or 0), "version": version}


def _open(source: str) -> Any:
    """A path string libsndfile opens natively, or an fsspec file object for a URL."""
    if not is_url(source):
        p = Path(source)
        if not p.exists():
            raise AudioDecodeError(source, "file does not exist")
        if p.is_dir():
            raise AudioDecodeError(source, "is a folder, not a file")
        if p.stat().st_size == 0:
            raise AudioDecodeError(source, "empty file (0 bytes)")
        return source
    fs, path = _fs(source)
    if not fs.exists(path):
        raise AudioDecodeError(source, "does not exist")
    if "memory" in fs.protocol:
        # fsspec's memory filesystem hands every reader the same file object (one position):
        # give each reader its own copy, as real filesystems give each its own handle
        return io.BytesIO(fs.cat_file(path))
    return fs.open(path, "rb")


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:200]


@dataclass(frozen=True)
class Probe:
    """A source's header facts: ``frames`` and ``sample_rate`` at the source's own rate;
    ``exact`` when the frame count and seeks are sample-exact (time shards allowed)."""

    frames: int
    sample_rate: int
    exact: bool

    @property
    def duration_s(self) -> float:
        return self.frames / self.sample_rate if self.sample_rate else 0.0


def probe(source: str) -> Probe:
    """Read a source's header (libsndfile; anything else counts as not exact, duration unknown).

    Raises:
        AudioDecodeError: the source is missing or empty.
    """
    handle = _open(source)
    try:
        with sf.SoundFile(handle) as f:
            return Probe(int(f.frames), int(f.samplerate), f.format in _EXACT_FORMATS)
    except (RuntimeError, sf.LibsndfileError, TypeError):
        return Probe(0, 0, False)
    finally:
        if not isinstance(handle, str):
            handle.close()


class AudioSpan:
    """Mono ``float32`` blocks of a source at ``sample_rate``, from output sample ``first`` on.

    ``first`` is where the caller needs samples from; the span starts a little earlier, at
    :attr:`start` (an output sample on the whole file's resampling grid, at least
    :data:`RESAMPLE_WARMUP_S` before ``first`` unless that is the file's start). Samples from
    ``first`` on equal a whole-file pass to float rounding. Iterate once.

    Attributes:
        start: the output sample index of the first sample yielded.
        nonfinite: NaN/±inf samples (before mixing to mono) set to 0 so far.
        over_full_scale: samples beyond full scale (±1) so far (kept as they are).
        damaged_at_s: where libsndfile stopped at a damaged frame and FFmpeg took over (else None).
    """

    def __init__(self, source: str, *, sample_rate: int, first: int = 0, block_s: float = 60.0) -> None:
        self.source = source
        self.sample_rate = sample_rate
        self.first = max(0, first)
        self.block_s = block_s
        self.start = 0
        self.nonfinite = 0
        self.over_full_scale = 0
        self.damaged_at_s: float | None = None
        self._pos = 0

    def __iter__(self) -> Iterator[np.ndarray]:
        try:
            yield from self._blocks()
        except AudioDecodeError:
            raise
        except Exception as exc:
            raise AudioDecodeError(self.source, f"decoding failed: {_short(exc)}") from exc

    def _blocks(self) -> Iterator[np.ndarray]:
        handle = _open(self.source)
        try:
            try:
                f = sf.SoundFile(handle)
            except Exception as sf_exc:
                if self.first > 0:
                    raise AudioDecodeError(
                        self.source, "cannot seek in this format (not readable by libsndfile)"
                    ) from sf_exc
                if not isinstance(handle, str):
                    handle.seek(0)
                yield from self._resampled(_av_blocks(handle, self.block_s, sf_exc), None)
                return
            with f:
                yield from self._resampled(self._sf_then_av(f), int(f.samplerate))
        finally:
            if not isinstance(handle, str):
                handle.close()

    def _sf_then_av(self, f: sf.SoundFile) -> Iterator[tuple[np.ndarray, int]]:
        """libsndfile's blocks; where it stops at a damaged frame (FLACs from the field), FFmpeg
        decodes past it, from the same sample on (:attr:`damaged_at_s` says where)."""
        self._pos = 0
        try:
            yield from _sf_blocks(f, self)
        except RuntimeError as exc:  # soundfile.LibsndfileError
            rate = int(f.samplerate)
            self.damaged_at_s = round(self._pos / rate, 3)
            handle = _open(self.source)
            try:
                skip = self._pos
                for block, r in _av_blocks(handle, self.block_s, exc):
                    if skip >= block.shape[1]:
                        skip -= block.shape[1]
                        continue
                    yield block[:, skip:], r
                    skip = 0
            finally:
                if not isinstance(handle, str):
                    handle.close()

    def _repair(self, y: np.ndarray) -> np.ndarray:
        """NaN/±inf → 0 before mixing, samples beyond ±1 kept (the rule ``prepare`` applies too,
        so a store and a detection run see the same audio); both counted."""
        lo, hi = (float(y.min()), float(y.max())) if y.size else (0.0, 0.0)
        if lo >= -1.0 and hi <= 1.0:  # False for NaN too
            return y
        y = np.array(y, dtype=np.float32, copy=True)
        bad = ~np.isfinite(y)
        self.nonfinite += int(bad.sum())
        y[bad] = 0.0
        self.over_full_scale += int(np.count_nonzero(np.abs(y) > 1.0))
        return y

    def _aligned_start(self, src_rate: int) -> int:
        """The source frame to read from: on the resampling grid, a warm-up before ``first``."""
        g = math.gcd(src_rate, self.sample_rate)
        period_in, period_out = src_rate // g, self.sample_rate // g
        want = self.first - round(RESAMPLE_WARMUP_S * self.sample_rate)
        k = max(0, want // period_out)
        self.start = k * period_out
        return k * period_in

    def _resampled(
        self, blocks: Iterator[tuple[np.ndarray, int]], src_rate: int | None
    ) -> Iterator[np.ndarray]:
        resampler: soxr.ResampleStream | None = None
        for block, rate in blocks:
            block = self._repair(block)
            mono = np.ascontiguousarray(to_mono(block)[0], dtype=np.float32)
            if rate != self.sample_rate and resampler is None:
                resampler = soxr.ResampleStream(rate, self.sample_rate, 1, dtype="float32", quality="HQ")
            out = resampler.resample_chunk(mono, last=False) if resampler is not None else mono
            if out.size:
                yield out
        if resampler is not None:
            tail = resampler.resample_chunk(np.zeros(0, np.float32), last=True)
            if tail.size:
                yield tail


def _sf_blocks(f: sf.SoundFile, span: AudioSpan) -> Iterator[tuple[np.ndarray, int]]:
    rate = int(f.samplerate)
    frame = span._aligned_start(rate)
    if frame > 0:
        if frame >= f.frames:
            return
        f.seek(frame)
    span._pos = frame
    block_frames = max(1024, int(span.block_s * rate))
    while True:
        y = f.read(frames=block_frames, dtype="float32", always_2d=True)
        if y.shape[0] == 0:
            return
        span._pos += y.shape[0]
        yield np.ascontiguousarray(y.T), rate


def _av_blocks(handle: Any, block_s: float, sf_exc: Exception) -> Iterator[tuple[np.ndarray, int]]:
    """FFmpeg (PyAV) decode of a whole source, for what libsndfile cannot read."""
    import av

    try:
        container = av.open(handle)
        if not container.streams.audio:
            container.close()
            raise ValueError("no audio stream")
    except Exception as av_exc:
        name = handle if isinstance(handle, str) else getattr(handle, "path", "source")
        raise AudioDecodeError(
            str(name), f"not readable as audio (soundfile: {_short(sf_exc)}; ffmpeg: {_short(av_exc)})"
        ) from av_exc
    with container:
        st = container.streams.audio[0]
        resampler = av.AudioResampler(format="fltp")
        pending: list[np.ndarray] = []
        n, rate = 0, 0
        frames = (out for frame in container.decode(st) for out in resampler.resample(frame))
        for out in _chain(frames, resampler):
            rate = int(out.sample_rate)
            pending.append(out.to_ndarray().astype(np.float32, copy=False))
            n += pending[-1].shape[1]
            if n >= block_s * rate:
                yield np.concatenate(pending, axis=1), rate
                pending, n = [], 0
        if pending:
            yield np.concatenate(pending, axis=1), rate


def _chain(frames: Iterator[Any], resampler: Any) -> Iterator[Any]:
    yield from frames
    yield from resampler.resample(None)
