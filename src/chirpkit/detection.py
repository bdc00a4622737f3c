"""Detection: slide a trained model's window over long recordings and write detection tables.

Each file is decoded in blocks on worker threads (memory stays flat whatever its length; the
model's conditioning steps are applied on the way), resampled to the model's rate and cut into
windows every ``hop_s`` (plus one aligned to the end of the file); the windows are scored in
batches on the model's device. Per file, the best few labels of every window are kept in a part
file, so a re-run skips finished files (resume) and a changed threshold or top-k needs no new
inference. A window label becomes a detection when it is not a background class and reaches its
class threshold (``RUN/thresholds.json``) or ``min_score``. Consecutive windows of one label merge
into events. A file that cannot be decoded goes to ``errors.csv`` and the run goes on.
"""

from __future__ import annotations

import csv
import glob
import logging
import os
import queue
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from chirpkit._util import atomic_path, stable_hash, write_json
from chirpkit.audio import is_audio_path, stream
from chirpkit.conditioning import Conditioner, steps_from_dicts
from chirpkit.config import DetectConfig
from chirpkit.errors import AudioDecodeError, DataError, MissingPathError
from chirpkit.events import merge_events, write_audacity, write_raven
from chirpkit.models import ModelSpec
from chirpkit.predict import Predictor, load_predictor
from chirpkit.thresholds import load_thresholds

__all__ = ["DETECTION_COLUMNS", "detect", "resolve_inputs", "sliding_windows"]

log = logging.getLogger("chirpkit")

DETECTION_COLUMNS = ["file", "start_s", "end_s", "label", "score"]
MANIFEST_COLUMNS = ["file", "status", "part"]


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


_STORED_TOP = 5  # candidates kept per window in the resume parts, so thresholds can change later


def _produce(
    path: Path,
    spec: ModelSpec,
    hop_s: float,
    batch_size: int,
    block_s: float,
    q: queue.Queue[Any],
    stop: threading.Event,
) -> None:
    """Decode ``path`` into batches of windows on a worker thread; end with ``None`` (or an error)."""
    try:
        cond = Conditioner(steps_from_dicts(spec.conditioning), spec.sample_rate)
        windows = sliding_windows(
            path,
            sample_rate=spec.sample_rate,
            window_s=spec.window_s,
            hop_s=hop_s,
            block_s=block_s,
            conditioner=cond,
        )
        for item in _batched(windows, batch_size):
            while not stop.is_set():
                try:
                    q.put(item, timeout=0.2)
                    break
                except queue.Full:
                    continue
            if stop.is_set():
                return
        q.put(None)
    except Exception as exc:  # handed to the consumer, which records the file as failed
        q.put(exc)


def _part_key(predictor: Predictor, path: Path, hop_s: float, block_s: float) -> str:
    st = path.stat()
    return stable_hash(
        {
            "model": predictor.identity,
            "file": str(path.resolve()),
            "size": st.st_size,
            "mtime_ns": st.st_mtime_ns,
            "hop_s": hop_s,
            "block_s": block_s,
        },
        length=24,
    )


def _candidates(starts: list[float], probs: np.ndarray, window_s: float, names: np.ndarray) -> pd.DataFrame:
    k = min(_STORED_TOP, probs.shape[1])
    top = np.argsort(-probs, axis=1)[:, :k]
    st = np.repeat(np.asarray(starts), k)
    lab = top.ravel()
    return pd.DataFrame(
        {
            "start_s": st,
            "end_s": st + window_s,
            "rank": np.tile(np.arange(k), len(starts)),
            "label": names[lab],
            "score": probs[np.repeat(np.arange(len(starts)), k), lab],
        }
    )


def _select(
    cands: pd.DataFrame, cfg: DetectConfig, thresholds: dict[str, float] | None, background: set[str]
) -> pd.DataFrame:
    keep = (cands["rank"] < cfg.top_k) & ~cands["label"].isin(background)
    if thresholds is not None:
        limit = cands["label"].map(thresholds).fillna(cfg.min_score)
    else:
        limit = pd.Series(cfg.min_score, index=cands.index)
    return cands[keep & (cands["score"] >= limit)]


def detect(
    run: str | os.PathLike[str],
    inputs: Sequence[str | os.PathLike[str]],
    *,
    out: str | os.PathLike[str],
    config: DetectConfig | None = None,
    device: str = "auto",
    resume: bool = True,
    progress: bool = True,
) -> pd.DataFrame:
    """Run a trained model over recordings and write detection tables to ``out``.

    Args:
        run: a run folder, ``model.pt``, or an export (``model.onnx`` / ``model.ts``).
        inputs: files, folders (recursive), glob patterns or ``@list.txt``.
        out: ``detections.csv`` (window rows ``file, start_s, end_s, label, score``; ``.parquet``
            too with ``formats``), ``events.csv`` (merged windows), ``raven/`` and ``audacity/``
            tables per recording (with ``formats``), ``errors.csv`` (files that failed, with the
            reason), ``manifest.csv`` and ``detect_summary.json``.
        config: :class:`chirpkit.config.DetectConfig` (hop, thresholds, top-k, formats, workers).
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:1``, ...
        resume: reuse the results of files finished by an earlier (possibly interrupted) run.

    Returns:
        The window detections.
    """
    cfg = config or DetectConfig()
    predictor = load_predictor(run, device=device)
    spec = predictor.spec
    files = resolve_inputs(inputs)
    if not files:
        raise DataError(f"no audio files found in {list(map(str, inputs))}")
    hop_s = cfg.hop_s if cfg.hop_s is not None else spec.window_s / 2
    names = np.array(spec.class_names)
    background = set(cfg.background_labels) | set(spec.background_labels)
    thresholds = load_thresholds(run) if cfg.thresholds == "auto" else None
    if thresholds:
        log.info(
            "per-class thresholds from %s (classes without one use min_score=%s)",
            Path(run) / "thresholds.json" if Path(run).is_dir() else "the run",
            cfg.min_score,
        )
    out_dir = Path(out)
    parts_dir = out_dir / ".parts"
    parts_dir.mkdir(parents=True, exist_ok=True)

    keys: dict[Path, str] = {}
    manifest: list[dict[str, Any]] = []
    errors: list[dict[str, str]] = []
    todo: list[Path] = []
    for f in files:
        try:
            keys[f] = _part_key(predictor, f, hop_s, cfg.block_s)
        except OSError as exc:
            errors.append({"file": str(f), "reason": f"cannot read: {exc.strerror or exc}"})
            continue
        if resume and (parts_dir / f"{keys[f]}.parquet").is_file():
            manifest.append({"file": str(f), "status": "reused", "part": keys[f]})
        else:
            todo.append(f)
    if len(todo) < len(keys):
        log.info(
            "detect: %d of %d file(s) already done in %s, %d to go",
            len(keys) - len(todo),
            len(keys),
            out_dir,
            len(todo),
        )

    audio_s = 0.0
    t0 = time.perf_counter()
    stop = threading.Event()
    queues: dict[Path, queue.Queue[Any]] = {}
    pool = ThreadPoolExecutor(max_workers=cfg.workers)

    def start(i: int) -> None:
        if i < len(todo):
            q: queue.Queue[Any] = queue.Queue(maxsize=2)
            queues[todo[i]] = q
            pool.submit(_produce, todo[i], spec, hop_s, cfg.batch_size, cfg.block_s, q, stop)

    # the manifest lists the reused files, then gains a line as each file finishes (flushed), so
    # a killed run says how far it got
    manifest_path = out_dir / "manifest.csv"
    with atomic_path(manifest_path) as tmp:
        pd.DataFrame(manifest, columns=MANIFEST_COLUMNS).to_csv(tmp, index=False)
    manifest_file = manifest_path.open("a", newline="", encoding="utf-8")
    manifest_rows = csv.writer(manifest_file)

    def finished(f: Path, status: str, part: str) -> None:
        manifest_rows.writerow([str(f), status, part])
        manifest_file.flush()

    for i in range(cfg.workers):
        start(i)
    bar = tqdm(total=len(todo), desc="detect", unit="file", disable=not progress)
    try:
        for i, f in enumerate(todo):
            q = queues.pop(f)
            starts: list[float] = []
            probs: list[np.ndarray] = []
            failure: str | None = None
            while True:
                item = q.get()
                if item is None:
                    break
                if isinstance(item, Exception):
                    failure = (
                        item.reason
                        if isinstance(item, AudioDecodeError)
                        else f"{type(item).__name__}: {item}"
                    )
                    break
                batch_starts, batch = item
                starts.extend(batch_starts)
                probs.append(predictor(batch))
            start(i + cfg.workers)
            bar.update()
            if failure is None and not starts:
                failure = "no audio samples"
            if failure is not None:
                errors.append({"file": str(f), "reason": failure})
                finished(f, "failed", "")
                log.warning("skipped %s: %s", f, failure)
                continue
            cands = _candidates(starts, np.concatenate(probs), spec.window_s, names)
            with atomic_path(parts_dir / f"{keys[f]}.parquet") as tmp:
                cands.to_parquet(tmp, index=False)
            audio_s += starts[-1] + spec.window_s
            finished(f, "done", keys[f])
            bar.set_postfix(
                audio_h=f"{audio_s / 3600:.2f}", rtf=f"{audio_s / max(1e-9, time.perf_counter() - t0):.0f}"
            )
    finally:
        stop.set()
        pool.shutdown(wait=True, cancel_futures=True)
        bar.close()
        manifest_file.close()
    wall = time.perf_counter() - t0

    tables = []
    for f in files:
        if f in keys and (parts_dir / f"{keys[f]}.parquet").is_file():
            cands = pd.read_parquet(parts_dir / f"{keys[f]}.parquet")
            sel = _select(cands, cfg, thresholds, background)
            tables.append(sel.assign(file=str(f))[DETECTION_COLUMNS])
    table = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=DETECTION_COLUMNS)
    events = merge_events(table, gap_s=cfg.merge_gap_s)
    _write_outputs(out_dir, table, events, errors, cfg, spec)
    summary: dict[str, Any] = {
        "files": len(files),
        "processed": len(todo),
        "reused": len(keys) - len(todo),
        "failed": len(errors),
        "detections": len(table),
        "events": len(events),
        "audio_seconds_processed": round(audio_s, 2),
        "wall_seconds": round(wall, 3),
        "realtime_factor": round(audio_s / wall, 1) if wall > 0 and audio_s > 0 else None,
        "hop_s": hop_s,
        "min_score": cfg.min_score,
        "thresholds": "per class" if thresholds else "min_score",
        "top_k": cfg.top_k,
        "device": str(device),
        "model": str(run),
        "model_kind": predictor.kind,
    }
    write_json(out_dir / "detect_summary.json", summary)
    log.info(
        "detect: %d detection(s), %d event(s) in %d file(s) (%.0f s of audio in %.1f s, %s× real time); "
        "%d failed; %s",
        len(table),
        len(events),
        len(files) - len(errors),
        audio_s,
        wall,
        summary["realtime_factor"],
        len(errors),
        out_dir,
    )
    return table


def _write_outputs(
    out_dir: Path,
    table: pd.DataFrame,
    events: pd.DataFrame,
    errors: list[dict[str, str]],
    cfg: DetectConfig,
    spec: ModelSpec,
) -> None:
    with atomic_path(out_dir / "detections.csv") as tmp:
        table.to_csv(tmp, index=False, float_format="%.4f")
    if "parquet" in cfg.formats:
        with atomic_path(out_dir / "detections.parquet") as tmp:
            table.to_parquet(tmp, index=False)
    with atomic_path(out_dir / "events.csv") as tmp:
        events.to_csv(tmp, index=False, float_format="%.4f")
    if "raven" in cfg.formats:
        write_raven(events, out_dir / "raven", high_freq_hz=spec.sample_rate / 2)
    if "audacity" in cfg.formats:
        write_audacity(events, out_dir / "audacity")
    err_path = out_dir / "errors.csv"
    if errors:
        with atomic_path(err_path) as tmp:
            pd.DataFrame(errors, columns=["file", "reason"]).to_csv(tmp, index=False)
    elif err_path.exists():
        err_path.unlink()
