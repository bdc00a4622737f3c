"""Building one part of a prepared store: decode a source file, lay out the audio under its
windows (merged segments, see :func:`chirpkit.data.store._segments`), write it.

Runs in worker threads of :func:`chirpkit.data.store.prepare`. The input side and the output side
fail differently: a file that cannot be decoded is a skip (reported, the job goes on); a part that
cannot be written raises :class:`~chirpkit.errors.OutputError`, which stops the job.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

import numpy as np

from chirpkit.audio import decode, resample
from chirpkit.conditioning import Conditioner, steps_from_dicts
from chirpkit.errors import AudioDecodeError
from chirpkit.utils.io import FILE_MODE, human_size, output_error

__all__ = ["build_part", "is_lossless", "part_ok", "release_scratch"]

# Long files whose windows cover less than this share are read span by span instead of whole.
_PARTIAL_READ_SHARE = 0.5
_PARTIAL_READ_MIN_S = 120.0
_EDGE_S = 0.05  # extra audio read around partial spans so the resampler has context


def _to_disk(y: np.ndarray, dtype: str, out: np.ndarray | None = None) -> np.ndarray:
    """Samples as stored: int16 (×32767, rounded, clipped), float16 or float32.

    ``y`` (float32, owned by the caller and not used afterwards) is scaled in place; ``out``, when
    given, receives the int16 samples (a reused buffer).
    """
    if dtype == "int16":
        np.multiply(y, 32767.0, out=y)
        np.rint(y, out=y)
        np.clip(y, -32768, 32767, out=y)
        if out is None:
            return y.astype(np.int16)
        np.copyto(out, y, casting="unsafe")
        return out
    return y.astype(dtype, copy=False)


_SCRATCH = threading.local()


def _scratch(name: str, n: int, dtype: np.dtype[Any] | str) -> np.ndarray:
    """``n`` elements of a buffer that this thread reuses from file to file.

    A fresh array of a few hundred kB per file costs page faults on every file (a large
    allocation is mapped anew and zero-filled by the kernel; in a virtual machine that costs about
    as much as writing the part); a reused buffer stays mapped. Worker threads end with their
    pool, and their buffers with them; :func:`release_scratch` frees the calling thread's.
    """
    buf = getattr(_SCRATCH, name, None)
    if buf is None or buf.size < n or buf.dtype != np.dtype(dtype):
        buf = np.empty(n, dtype)
        setattr(_SCRATCH, name, buf)
    return buf[:n]


def release_scratch() -> None:
    """Free the calling thread's reused buffers (prepare runs files in the caller's thread when
    it uses one worker)."""
    _SCRATCH.__dict__.clear()


def _place(dst: np.ndarray, y: np.ndarray, first: int) -> None:
    """Copy samples ``[first, first + len(dst))`` of ``y`` into the zero-filled row ``dst``."""
    n = dst.shape[0]
    lo, hi = max(first, 0), min(first + n, y.shape[0])
    if hi > lo:
        dst[lo - first : hi - first] = y[lo:hi]


def _npy_header(samples: int, dtype: str) -> bytes:
    """The header ``np.save`` writes before a part of ``samples`` samples."""
    key = (samples, dtype)
    header = _NPY_HEADERS.get(key)
    if header is None:
        buf = io.BytesIO()
        info = {
            "descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
            "fortran_order": False,
            "shape": (samples,),
        }
        np.lib.format.write_array_header_1_0(buf, info)
        header = _NPY_HEADERS[key] = buf.getvalue()
    return header


_NPY_HEADERS: dict[tuple[int, str], bytes] = {}


def part_ok(task: dict[str, Any]) -> bool:
    """Whether the task's part is there whole: the exact header and size ``np.save`` gives, so a
    missing, truncated or foreign file is rebuilt."""
    samples, dtype = task["part_samples"], task["dtype"]
    header = _npy_header(samples, dtype)
    try:
        with open(task["part_path"], "rb") as fh:
            if fh.read(len(header)) != header:
                return False
            size = fh.seek(0, io.SEEK_END)
    except OSError:
        return False
    return size == len(header) + samples * np.dtype(dtype).itemsize


def _write_part(path: Path, part: np.ndarray) -> None:
    """Write ``part`` as ``path`` atomically; any failure is an :class:`OutputError`."""
    try:
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
        except FileNotFoundError:  # the part's sub-folder is made by the first part that needs it
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    except OSError as exc:
        raise output_error(exc, path) from exc
    try:
        os.fchmod(fd, FILE_MODE)
        with open(fd, "wb") as fh:
            np.lib.format.write_array(fh, part, allow_pickle=False)
        Path(tmp).replace(path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            Path(tmp).unlink()
        if isinstance(exc, OSError):
            raise output_error(exc, path) from exc
        raise


_LOSSLESS = ("pcm", "flac", "alac", "wavpack", "ape", "tta", "float", "double")
_LOSSY_ENDINGS = (".mp3", ".ogg", ".oga", ".opus", ".m4a", ".aac", ".wma", ".webm", ".mp4")


def is_lossless(codec: str, source: str) -> bool:
    """Whether a file's header duration is exact (lossless codecs count samples); the file
    ending decides when the catalog has no codec."""
    if codec and codec not in ("nan", "None"):
        return codec.lower().startswith(_LOSSLESS)
    return not source.lower().endswith(_LOSSY_ENDINGS)


def max_part_bytes() -> int:
    """The largest part built in memory: a quarter of the machine's RAM (at least 256 MB)."""
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        ram = 8 << 30
    return max(256 << 20, ram // 4)


class _TooLoudError(Exception):
    """The stored samples would exceed int16's full scale at this gain; ``gain`` fits them."""

    def __init__(self, gain: float) -> None:
        super().__init__(f"scale by {gain:.4g}")
        self.gain = gain


def _peak(y: np.ndarray) -> float:
    return max(float(y.max()), -float(y.min())) if y.size else 0.0  # two reductions, no |y| copy


def _cut(task: dict[str, Any], gain: float = 1.0) -> tuple[np.ndarray, str, list[tuple[str, str]]]:
    """Decode one source file and lay out the audio under its windows: ``(part, decoder, notes)``.

    ``part`` is 1-D: the task's segments (``[first, length, offset]`` in samples of the file at the
    store's rate) end to end, zero where the file has no audio. ``notes`` are ``(kind, detail)``
    for the anomaly report: repaired samples, samples beyond full scale, and audio that ends before
    the catalog says the file does (the file changed after ingest; windows past its end are
    zero-padded).

    Samples beyond full scale are stored as they are on float16/float32; int16 holds ±1 only, so
    there the whole file is scaled, never clipped: by ``gain`` (raises :class:`_TooLoudError` with
    the gain that fits the loudest read, after all reads: :func:`build_part` cuts once more with
    it) or, with per-window normalisation (every segment one window), the normalised windows by
    their common peak.
    """
    source: str = task["source"]
    sr: int = task["sample_rate"]
    seg = task["segment_samples"]
    margin_s: float = task["margin_s"]
    segments: list[list[int]] = task["segments"]
    total: int = task["part_samples"]
    cond = Conditioner(steps_from_dicts(task["conditioning"]), sr)
    core = slice(round(margin_s * sr), round(margin_s * sr) + task["window_samples"])
    duration = float(task["duration_s"])
    known = duration < 1e11
    # a lossless header counts its samples; a lossy one (MP3 without a Xing header) estimates
    slack = max(0.1, 0.01 * duration) if task.get("exact_duration", True) else max(0.5, 0.05 * duration)
    lo_s = max(0.0, min(f for f, _, _ in segments) / sr) if segments else 0.0
    hi_s = max(f + n for f, n, _ in segments) / sr if segments else 0.0
    # without per-window normalisation, convert each decoded signal to the disk type once and
    # lay it out from there
    per_window = cond.normalize is not None
    part_bytes = total * np.dtype(np.float32 if per_window else task["dtype"]).itemsize
    if part_bytes > max_part_bytes():
        raise ValueError(
            f"its {len(task['starts'])} window(s) would take {human_size(part_bytes)} in memory, more "
            f"than {human_size(max_part_bytes())}: split the catalog row into shorter spans, or raise "
            "audio.window_hop_s"
        )
    if per_window:
        part = np.zeros(total, dtype=np.float32)
    else:
        part = _scratch("part", total, task["dtype"])
        part.fill(0)
    repaired = [0, 0]
    loudest = [0.0]  # the loudest sample of every read, after the gain (int16 only)
    short_at: list[float] = []
    decoder = ["soundfile"]

    def read(offset: float, length: float, *, only: bool = False) -> np.ndarray:
        """One decoded span at the store's rate, conditioned, as stored; ``only``: the file's one
        read, so a level beyond int16's full scale sets the file's gain here, with no second pass."""
        nonlocal gain
        d = decode(source, offset_s=offset, duration_s=length)
        decoder[0] = d.decoder
        repaired[0] += d.nonfinite
        repaired[1] += d.over_full_scale
        got_end = offset + d.y.shape[1] / d.sample_rate
        want_end = min(offset + length, duration)
        if known and got_end < want_end - slack:
            short_at.append(got_end)
        y = resample(d.y, orig_sr=d.sample_rate, target_sr=sr)[0]
        if cond.file_steps:
            cond.reset()
            y = cond.block(y)
        if per_window:  # normalised per window: the level is settled after that
            return y
        if only and gain == 1.0 and task["dtype"] == "int16" and (peak := _peak(y)) > 1.0:
            gain = 1.0 / peak * (1 - 1e-6)
        if gain != 1.0:
            y *= gain
        if task["dtype"] == "int16":
            loudest[0] = max(loudest[0], _peak(y))
        return _to_disk(
            y, task["dtype"], _scratch("samples", y.size, "int16") if task["dtype"] == "int16" else None
        )

    if duration > _PARTIAL_READ_MIN_S and total / sr < _PARTIAL_READ_SHARE * duration:
        # sparse windows in a long file: read each segment's span, not the whole file
        for first, n, at in segments:
            a = max(0.0, first / sr - _EDGE_S)
            _place(part[at : at + n], read(a, n / sr + 2 * _EDGE_S), first - round(a * sr))
    else:
        # the catalog's duration only chooses the strategy: headers (mp3) can be wrong, so
        # the read is bounded by the windows and decode stops at the real end of the file
        lo_read = max(0.0, lo_s - _EDGE_S)
        y = read(lo_read, max(0.0, hi_s - lo_read) + _EDGE_S, only=True)
        shift = round(lo_read * sr)
        for first, n, at in segments:
            _place(part[at : at + n], y, first - shift)
    if per_window:
        windows = part.reshape(-1, seg)  # one segment per window, in window order
        for i in range(len(windows)):
            windows[i] = cond.window(windows[i], core)
        peak = _peak(part) if task["dtype"] == "int16" else 0.0
        if peak > 1.0:  # the margins may be louder than the core
            gain = 1.0 / peak
            part *= gain
        part = _to_disk(part, task["dtype"])
    elif loudest[0] > 1.0:  # some read did not fit int16: cut again, every read at the same gain
        raise _TooLoudError(gain / loudest[0])
    notes: list[tuple[str, str]] = []
    if repaired[0]:
        notes.append(("nonfinite_samples", f"{repaired[0]} NaN/infinite sample(s) set to 0"))
    if repaired[1] and gain == 1.0:
        notes.append(("over_full_scale", f"{repaired[1]} sample(s) beyond full scale, stored as they are"))
    if gain != 1.0:
        # a file decoded within full scale goes past it through resampling or conditioning: the
        # band-limited interpolation of audio at full scale (often clipped at the source) overshoots
        why = (
            ""
            if repaired[1]
            else " after resampling or conditioning (the decoded samples are within full scale: "
            "audio at full scale, often clipped at the source, overshoots when it is interpolated)"
        )
        notes.append(
            (
                "scaled_to_full_scale",
                f"samples reach {1 / gain:.3g}× full scale{why}: the file's windows are stored scaled "
                f"by {gain:.4g} to fit int16 (not clipped; audio.dtype float16/float32 keeps the level)",
            )
        )
    if short_at:
        notes.append(
            (
                "shorter_than_catalog",
                f"the audio ends at {min(short_at):.2f} s but the catalog says the file lasts "
                f"{duration:.2f} s (the file is cut short, or changed after ingest); windows past "
                "the end are zero-padded: re-run ingest to update the catalog",
            )
        )
    return part, decoder[0], notes


def build_part(task: dict[str, Any]) -> dict[str, Any]:
    """Decode one source file and write the audio under its windows as one part (runs in a worker
    thread).

    A file that cannot be decoded is a skip (``ok`` False with the reason); a part that cannot be
    written raises :class:`OutputError`, which stops the job: the output side failing is never
    the input file's fault.
    """
    try:
        try:
            part, decoder, notes = _cut(task)
        except _TooLoudError as loud:  # the gain comes from the loudest of all reads: one more pass
            part, decoder, notes = _cut(task, loud.gain * (1 - 1e-6))
    except AudioDecodeError as exc:
        return {"key": task["key"], "ok": False, "reason": exc.reason}
    except Exception as exc:  # one bad file must not stop the job
        return {"key": task["key"], "ok": False, "reason": f"{type(exc).__name__}: {exc}"}
    _write_part(Path(task["part_path"]), part)
    return {"key": task["key"], "ok": True, "decoder": decoder, "n": len(task["starts"]), "notes": notes}
