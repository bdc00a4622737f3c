"""Detection: slide a trained model's window over long recordings and write a detection table.

Each file is decoded in blocks (memory stays flat whatever its length), resampled to the model's
rate, cut into windows every ``hop_s`` (plus one aligned to the end of the file), scored in
batches, and every window whose best class is not a background class and scores at least
``min_score`` becomes a row ``file, start_s, end_s, label, score``. A file that cannot be decoded
is listed in ``errors.csv`` and the run goes on.
"""

from __future__ import annotations

import glob
import logging
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from chirpkit._util import atomic_path, write_json
from chirpkit.audio import is_audio_path, stream
from chirpkit.conditioning import Conditioner, steps_from_dicts
from chirpkit.config import DetectConfig
from chirpkit.errors import AudioDecodeError, DataError, MissingPathError
from chirpkit.models import load_model
from chirpkit.predict import pick_device, predict_proba

__all__ = ["DETECTION_COLUMNS", "detect", "resolve_inputs", "sliding_windows"]

log = logging.getLogger("chirpkit")

DETECTION_COLUMNS = ["file", "start_s", "end_s", "label", "score"]


def resolve_inputs(inputs: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """Expand files, folders (recursively, audio files only), glob patterns and ``@list.txt``
    (one path per line) into a sorted, de-duplicated list of files.

    Raises:
        MissingPathError: an input that is neither an existing path nor a matching pattern.
    """
    found: list[Path] = []
    for item in inputs:
        text = str(item)
        if text.startswith("@"):
            listing = Path(text[1:])
            if not listing.is_file():
                raise MissingPathError(f"file list not found: {listing}")
            lines = [ln.strip() for ln in listing.read_text().splitlines()]
            found += [
                Path(ln) if Path(ln).is_absolute() else listing.parent / ln
                for ln in lines
                if ln and not ln.startswith("#")
            ]
            continue
        p = Path(text)
        if p.is_dir():
            found += sorted(f for f in p.rglob("*") if f.is_file() and is_audio_path(f))
        elif p.exists():
            found.append(p)
        elif any(ch in text for ch in "*?["):
            matches = sorted(Path(m) for m in glob.glob(text, recursive=True))  # noqa: PTH207
            if not matches:
                raise MissingPathError(f"no file matches {text!r}")
            found += [m for m in matches if m.is_file()]
        else:
            raise MissingPathError(f"audio input not found: {p}")
    return list(dict.fromkeys(found))


def sliding_windows(
    path: str | os.PathLike[str],
    *,
    sample_rate: int,
    window_s: float,
    hop_s: float,
    block_s: float = 60.0,
    conditioner: Conditioner | None = None,
) -> Iterator[tuple[float, np.ndarray]]:
    """Yield ``(start_s, window (window_samples,) float32)`` over a file, streaming it.

    Windows start every ``hop_s``; if the last one stops short of the end of the file, one more
    ends exactly at the end; a file shorter than a window gives one zero-padded window. A
    ``conditioner`` (the model's conditioning steps) filters each block and normalises each window.
    """
    if conditioner is not None:
        conditioner.reset()
    for start, window in _raw_windows(path, sample_rate, window_s, hop_s, block_s, conditioner):
        yield start, conditioner.window(window) if conditioner is not None else window


def _raw_windows(
    path: str | os.PathLike[str],
    sample_rate: int,
    window_s: float,
    hop_s: float,
    block_s: float,
    conditioner: Conditioner | None,
) -> Iterator[tuple[float, np.ndarray]]:
    w = round(window_s * sample_rate)
    h = max(1, round(hop_s * sample_rate))
    buf = np.zeros(0, np.float32)
    buf_start = 0  # absolute sample index of buf[0]
    next_start = 0
    total = 0
    last_end = 0
    for raw in stream(path, sample_rate=sample_rate, block_s=block_s):
        chunk = conditioner.block(raw) if conditioner is not None and conditioner.file_steps else raw
        buf = np.concatenate([buf, chunk]) if buf.size else chunk
        total += chunk.size
        while next_start + w <= total:
            a = next_start - buf_start
            yield next_start / sample_rate, buf[a : a + w].copy()
            last_end = next_start + w
            next_start += h
        keep_from = max(buf_start, min(next_start, total - w))
        buf = buf[keep_from - buf_start :]
        buf_start = keep_from
    if total == 0:
        return
    if last_end == 0:  # shorter than one window: pad
        out = np.zeros(w, np.float32)
        out[: buf.size] = buf[:w]
        yield 0.0, out
    elif last_end < total:
        a = total - w - buf_start
        yield (total - w) / sample_rate, buf[a : a + w].copy()


def _batched(
    windows: Iterator[tuple[float, np.ndarray]], size: int
) -> Iterator[tuple[list[float], np.ndarray]]:
    """Group ``(start_s, window)`` pairs into ``(starts, (n, samples) array)`` batches."""
    starts: list[float] = []
    batch: list[np.ndarray] = []
    for start, window in windows:
        starts.append(start)
        batch.append(window)
        if len(batch) == size:
            yield starts, np.stack(batch)
            starts, batch = [], []
    if batch:
        yield starts, np.stack(batch)


def detect(
    run: str | os.PathLike[str],
    inputs: Sequence[str | os.PathLike[str]],
    *,
    out: str | os.PathLike[str],
    config: DetectConfig | None = None,
    device: str = "auto",
    progress: bool = True,
) -> pd.DataFrame:
    """Run a trained model over recordings and write ``OUT/detections.csv``.

    Args:
        run: a run folder (or its ``model.pt``).
        inputs: files, folders, glob patterns or ``@list.txt``.
        out: output folder: ``detections.csv``, ``errors.csv`` (if any), ``detect_summary.json``.
        config: hop, minimum score, batch size, background classes
            (:class:`chirpkit.config.DetectConfig`; ``hop_s=None`` means half a window).
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:1``, ...

    Returns:
        The detections (columns ``file, start_s, end_s, label, score``).
    """
    cfg = config or DetectConfig()
    net = load_model(run)
    spec = net.spec
    files = resolve_inputs(inputs)
    if not files:
        raise DataError(f"no audio files found in {list(map(str, inputs))}")
    hop_s = cfg.hop_s if cfg.hop_s is not None else spec.window_s / 2
    dev = pick_device(device)
    net.to(dev)
    names = np.array(spec.class_names)
    conditioner = Conditioner(steps_from_dicts(spec.conditioning), spec.sample_rate)
    background = np.isin(names, list(cfg.background_labels) + list(spec.background_labels))
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)

    rows: list[pd.DataFrame] = []
    errors: list[dict[str, str]] = []
    audio_s = 0.0
    t0 = time.perf_counter()
    bar = tqdm(files, desc="detect", unit="file", disable=not progress)
    for f in bar:
        starts: list[float] = []
        probs: list[np.ndarray] = []
        windows = sliding_windows(
            f, sample_rate=spec.sample_rate, window_s=spec.window_s, hop_s=hop_s, conditioner=conditioner
        )
        try:
            for batch_starts, batch in _batched(windows, cfg.batch_size):
                starts.extend(batch_starts)
                probs.extend(predict_proba(net, [batch], device=dev))
        except AudioDecodeError as exc:
            errors.append({"file": str(f), "reason": exc.reason})
            log.warning("skipped %s: %s", f, exc.reason)
            continue
        if not starts:
            errors.append({"file": str(f), "reason": "no audio samples"})
            continue
        p = np.concatenate(probs)
        best = p.argmax(axis=1)
        score = p[np.arange(len(best)), best]
        keep = (score >= cfg.min_score) & ~background[best]
        st = np.asarray(starts)
        audio_s += st[-1] + spec.window_s if len(st) else 0.0
        rows.append(
            pd.DataFrame(
                {
                    "file": str(f),
                    "start_s": st[keep],
                    "end_s": st[keep] + spec.window_s,
                    "label": names[best[keep]],
                    "score": score[keep],
                }
            )
        )
    wall = time.perf_counter() - t0
    table = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=DETECTION_COLUMNS)
    with atomic_path(out_dir / "detections.csv") as tmp:
        table.to_csv(tmp, index=False, float_format="%.4f")
    err_path = out_dir / "errors.csv"
    if errors:
        with atomic_path(err_path) as tmp:
            pd.DataFrame(errors, columns=["file", "reason"]).to_csv(tmp, index=False)
    elif err_path.exists():
        err_path.unlink()
    summary: dict[str, Any] = {
        "files": len(files),
        "failed": len(errors),
        "detections": len(table),
        "audio_seconds": round(audio_s, 2),
        "wall_seconds": round(wall, 3),
        "realtime_factor": round(audio_s / wall, 1) if wall > 0 else None,
        "hop_s": hop_s,
        "min_score": cfg.min_score,
        "device": str(dev),
        "model": str(run),
    }
    write_json(out_dir / "detect_summary.json", summary)
    log.info(
        "detect: %d detection(s) in %d file(s) (%.0f s of audio, %.1f s, %s× real time); %d failed; %s",
        len(table),
        len(files) - len(errors),
        audio_s,
        wall,
        summary["realtime_factor"],
        len(errors),
        out_dir / "detections.csv",
    )
    return table
