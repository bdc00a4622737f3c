"""The prepared store: every window decoded once, resampled, cut and memory-mapped.

Layout of a store folder::

    store/
      store.json        settings that shaped the windows, catalog fingerprint, counts, decoders
      index.parquet     one row per window: row, source, start_s, end_s, label(s), group, split,
                        part, part_row, part_offset (+ index.csv, a view)
      skipped.csv       files that could not be decoded (source, reason), if any
      parts/<key>.npy   the audio of one source file that its windows cover, 1-D, int16/float16/float32

A part's key hashes the file's identity (path, size, modification time), the window spans taken
from it and the settings that shape samples, so a second ``prepare`` with the same catalog and
settings decodes nothing, an interrupted one resumes where it stopped, and a changed setting or an
edited file rebuilds only the parts it touches. Every file is written to a temporary name and
renamed.

Windows: a catalog row ``[start_s, end_s]`` no longer than ``window_s`` gives one window centred on
it (a point annotation, a short clip — padded with zeros where the file has no audio); a longer
row gives windows every ``window_hop_s`` plus one aligned to its end, so ``ceil(L / window_s)``
windows for the default hop. Each window carries ``margin_s`` of real audio on both sides.

Windows are stored once (version 2): a part holds the file's audio under its windows, the
overlapping spans merged into segments laid end to end, and a window is a view ``(part_offset,
segment_samples)`` into it, so a short hop costs no disk and no decode. With per-window level
normalisation (``audio.normalize``) every window has its own samples and is stored on its own.
Version 1 stores (every window stored whole) are still read; ``prepare`` rebuilds them.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shutil
import time
from collections import Counter, OrderedDict
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from chirpkit._version import __version__
from chirpkit.conditioning import steps_from_config, steps_to_dicts
from chirpkit.config import AudioConfig
from chirpkit.data.catalog import LABEL_SEP, catalog_fingerprint, read_catalog, validate_catalog
from chirpkit.data.parts import build_part, is_lossless, part_ok, release_scratch
from chirpkit.errors import DataError, OutputError, RunError
from chirpkit.utils.env import trim_heap
from chirpkit.utils.io import (
    atomic_paths,
    existing_path,
    human_size,
    is_output_failure,
    output_dir,
    output_error,
    read_json,
    stable_hash,
)
from chirpkit.utils.threads import thread_map

__all__ = ["STORE_VERSION", "Store", "prepare", "window_starts"]

log = logging.getLogger("chirpkit")

#: how the log names each kind of note in ``anomalies.csv``
_NOTE_WORDS = {
    "nonfinite_samples": "NaN or infinite samples set to 0",
    "over_full_scale": "samples beyond full scale, stored as they are",
    "scaled_to_full_scale": "samples beyond full scale (as decoded, or after resampling), windows stored "
    "scaled to fit",
    "shorter_than_catalog": "audio shorter than the catalog says",
}

STORE_VERSION = 2
#: store versions :class:`Store` reads (1: a part is ``(windows, segment_samples)``, one row each)
READABLE_VERSIONS = (1, 2)
_EPS = 1e-6


def window_starts(start_s: float, end_s: float, *, window_s: float, hop_s: float) -> np.ndarray:
    """Start times (s) of the windows that cover ``[start_s, end_s]``.

    A span no longer than ``window_s`` gets one window centred on it; a longer span gets one
    every ``hop_s`` from ``start_s`` plus one ending exactly at ``end_s`` if the last regular window
    stops short of it.
    """
    if window_s <= 0 or hop_s <= 0:
        raise ValueError(f"window_s={window_s} and hop_s={hop_s} must be positive")
    length = end_s - start_s
    if length < -_EPS:
        raise ValueError(f"end_s={end_s} is before start_s={start_s}")
    if length <= window_s + _EPS:
        return np.array([start_s + (length - window_s) / 2.0])
    starts = start_s + np.arange(0.0, length - window_s + _EPS, hop_s)
    if starts[-1] + window_s < end_s - _EPS:
        starts = np.append(starts, end_s - window_s)
    return starts


def _from_disk(a: np.ndarray) -> np.ndarray:
    if a.dtype == np.int16:
        return a.astype(np.float32) / 32767.0
    return a.astype(np.float32)


def _read_index(path: Path) -> pd.DataFrame:
    """A store's window index, read lean: it is the one thing in memory that grows with the store.

    Arrow's buffers come from the system allocator and are freed column by column as pandas takes
    them; strings pass through categories, so each distinct path, part, label or group is one
    object that its rows share; the C heap is then handed back (``malloc_trim``). At 71,520
    windows this keeps 14 MB instead of 54 (``benchmarks/memory.py``)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    pool = pa.default_memory_pool()
    pa.set_memory_pool(pa.system_memory_pool())  # mimalloc keeps what it freed
    try:
        table = pq.read_table(path, use_threads=False)
        index = table.to_pandas(self_destruct=True, split_blocks=True, strings_to_categorical=True)
        del table
    finally:
        pa.set_memory_pool(pool)
    for col in index.columns:
        if isinstance(index[col].dtype, pd.CategoricalDtype):
            index[col] = index[col].astype(object)
    index["labels"] = [list(v) for v in index["labels"]]
    trim_heap()
    return index


class Store:
    """Read access to a prepared store (memory-mapped parts, opened lazily).

    ``read(i)`` returns window ``i`` with its margins as ``float32`` of shape ``(segment_samples,)``.

    Each open memory map holds a file descriptor, and a clip dataset has one part per file, so at
    most :attr:`max_open_parts` maps stay open per store object, holding at most
    :attr:`max_mapped_bytes` of part files (least recently used closed first, and its pages leave
    the process's resident set: reading a whole store keeps it flat); reopening a part costs about
    0.2 ms.
    """

    max_open_parts: int = 256
    max_mapped_bytes: int = 512 << 20

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = existing_path(root, "prepared store")
        meta_path = self.root / "store.json"
        if not meta_path.is_file() or not (self.root / "index.parquet").is_file():
            raise RunError(
                f"{self.root} is not a complete prepared store (no store.json/index.parquet); "
                "run `chirpkit prepare CATALOG --out STORE` (it resumes if it was interrupted)"
            )
        fix = f"re-run `chirpkit prepare CATALOG --out {self.root}` (finished parts are reused)"
        meta = _read_meta(meta_path)
        if meta is None:
            raise RunError(f"{meta_path} is damaged (not a JSON store description); {fix}")
        self.meta: dict[str, Any] = meta
        if self.meta.get("version") not in READABLE_VERSIONS:
            raise RunError(
                f"store {self.root} has version {self.meta.get('version')}, this chirpkit reads "
                f"{list(READABLE_VERSIONS)}; {fix}"
            )
        lacking = [k for k in ("audio", "classes", "window_samples", "margin_samples") if k not in self.meta]
        if lacking:
            raise RunError(f"{meta_path} lacks {lacking}; {fix}")
        #: whether parts hold one row per window (version 1) instead of audio that windows view
        self.rows_stored = self.meta["version"] == 1
        where = "part_row" if self.rows_stored else "part_offset"
        try:
            self.index = _read_index(self.root / "index.parquet")
            self._part_of = self.index["part"].to_numpy()
            self._at = self.index[where].to_numpy(np.int64)
        except Exception as exc:
            raise RunError(
                f"cannot read the index of store {self.root} ({type(exc).__name__}: {str(exc)[:160]}); {fix}"
            ) from exc
        self._mmaps: OrderedDict[str, np.ndarray] = OrderedDict()
        self._mapped = 0

    @property
    def audio(self) -> AudioConfig:
        return AudioConfig.model_validate(self.meta["audio"])

    @property
    def sample_rate(self) -> int:
        return int(self.meta["audio"]["sample_rate"])

    @property
    def window_samples(self) -> int:
        return int(self.meta["window_samples"])

    @property
    def margin_samples(self) -> int:
        return int(self.meta["margin_samples"])

    @property
    def segment_samples(self) -> int:
        """Samples of a window with its margins: what :meth:`read` returns."""
        return self.window_samples + 2 * self.margin_samples

    @property
    def classes(self) -> list[str]:
        return list(self.meta["classes"])

    def __len__(self) -> int:
        return len(self.index)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_mmaps"] = OrderedDict()  # memory maps are reopened in each worker
        state["_mapped"] = 0
        return state

    def _part(self, rel: str) -> np.ndarray:
        arr = self._mmaps.get(rel)
        if arr is None:
            seg = self.segment_samples
            try:
                arr = np.load(self.root / rel, mmap_mode="r", allow_pickle=False)
                if self.rows_stored and (arr.ndim != 2 or arr.shape[1] != seg):
                    raise ValueError(f"shape {arr.shape}, expected (windows, {seg})")
                if not self.rows_stored and arr.ndim != 1:
                    raise ValueError(f"shape {arr.shape}, expected (samples,)")
            except Exception as exc:
                raise RunError(
                    f"store {self.root}: part {rel} is missing or damaged ({type(exc).__name__}: "
                    f"{str(exc)[:160]}); re-run `chirpkit prepare CATALOG --out {self.root}`: it rebuilds "
                    "missing and damaged parts"
                ) from exc
            self._mmaps[rel] = arr
            self._mapped += arr.nbytes
            while len(self._mmaps) > 1 and (
                len(self._mmaps) > self.max_open_parts or self._mapped > self.max_mapped_bytes
            ):
                # its map (and descriptor) closes once unreferenced
                self._mapped -= self._mmaps.popitem(last=False)[1].nbytes
        else:
            self._mmaps.move_to_end(rel)
        return arr

    def _window(self, part: str, at: int) -> np.ndarray:
        """The stored samples of a window: row ``at`` (version 1) or the view from offset ``at``."""
        arr = self._part(part)
        if self.rows_stored:
            if 0 <= at < arr.shape[0]:
                return arr[at]
        elif at >= 0 and at + self.segment_samples <= arr.shape[0]:
            return arr[at : at + self.segment_samples]
        has, where = ("window(s)", "row") if self.rows_stored else ("samples", "samples from offset")
        raise RunError(
            f"store {self.root}: part {part} has {arr.shape[0]} {has}, the index wants {where} {at}; "
            f"re-run `chirpkit prepare CATALOG --out {self.root}`"
        )

    def read(self, i: int) -> np.ndarray:
        """Window ``i`` (a position in :attr:`index`) with margins, as ``float32``."""
        return _from_disk(self._window(self._part_of[i], int(self._at[i])))

    def read_many(self, positions: np.ndarray) -> np.ndarray:
        """Windows at ``positions`` stacked as ``(n, segment_samples)`` ``float32``."""
        parts = self._part_of[positions]
        at = self._at[positions]
        out = np.empty((len(positions), self.segment_samples), np.float32)
        full = np.float32(32767.0)
        for j, (p, a) in enumerate(zip(parts, at, strict=True)):
            w = self._window(p, int(a))
            if w.dtype == np.int16:
                np.divide(w, full, out=out[j])  # as _from_disk, without a temporary
            else:
                out[j] = w
        return out


def _file_identity(path: str) -> dict[str, Any]:
    try:
        st = Path(path).stat()
    except OSError:
        return {"path": path, "missing": True}
    return {"path": path, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _read_meta(path: Path) -> dict[str, Any] | None:
    """``store.json``, or None when it is missing or damaged."""
    try:
        meta = read_json(path)
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def _canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def _part_key(audio_json: str, ident: dict[str, Any], starts: list[float]) -> str:
    """``stable_hash({"v", "file", "audio", "starts"}, length=24)``, with the settings serialised
    once per run instead of once per file (the same text, so the same key)."""
    blob = (
        f'{{"audio":{audio_json},"file":{_canonical_json(ident)},"starts":{_canonical_json(starts)},'
        f'"v":{STORE_VERSION}}}'
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def _segments(firsts: np.ndarray, seg: int, *, apart: bool) -> tuple[list[list[int]], np.ndarray]:
    """Lay a file's windows (first samples ``firsts``, ``seg`` samples each) into a part.

    Returns ``([first, length, offset] per segment, each window's offset in the part)``: the
    windows' spans, overlapping or touching ones merged into one segment, laid end to end. With
    ``apart`` every window is a segment of its own, in window order.
    """
    n = len(firsts)
    if apart or n == 0:
        offsets = np.arange(n, dtype=np.int64) * seg
        return [[int(f), seg, int(o)] for f, o in zip(firsts, offsets, strict=True)], offsets
    order = np.argsort(firsts, kind="stable")
    f = firsts[order]
    new = np.r_[True, f[1:] > f[:-1] + seg]
    seg_id = np.cumsum(new) - 1
    seg_first = f[new]
    seg_len = f[np.r_[new[1:], True]] + seg - seg_first
    seg_dst = np.r_[0, np.cumsum(seg_len)[:-1]]
    offsets = np.empty(n, dtype=np.int64)
    offsets[order] = seg_dst[seg_id] + (f - seg_first[seg_id])
    segments = [[int(a), int(b), int(c)] for a, b, c in zip(seg_first, seg_len, seg_dst, strict=True)]
    return segments, offsets


def _plan(
    df: pd.DataFrame, cfg: AudioConfig, root: Path, steps: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], pd.DataFrame]:
    """One task per source file (all its windows: one part) and the window plan, in catalog order."""
    sr = cfg.sample_rate
    win, margin = round(cfg.window_s * sr), round(cfg.margin_s * sr)
    seg = win + 2 * margin
    apart = cfg.normalize != "off"  # per-window normalisation gives each window its own samples
    audio_json = _canonical_json(cfg.shaping())
    codes, uniques = pd.factorize(df["source"], sort=False)
    order = np.argsort(codes, kind="stable")
    groups = np.split(order, np.flatnonzero(np.diff(codes[order])) + 1) if len(order) else []
    starts_a, ends_a = df["start_s"].to_numpy(float), df["end_s"].to_numpy(float)
    dur_a = df["duration_s"].to_numpy(float) if "duration_s" in df.columns else np.full(len(df), np.nan)
    codec_a = df["codec"].astype(str).to_numpy() if "codec" in df.columns else np.full(len(df), "")
    labels_a = df.index.to_numpy()
    tasks: list[dict[str, Any]] = []
    cols: dict[str, list[Any]] = {
        "row": [],
        "start_s": [],
        "part": [],
        "part_row": [],
        "part_offset": [],
        "key": [],
    }
    for g in groups:
        src = str(uniques[codes[g[0]]])
        starts: list[float] = []
        owners: list[int] = []
        for i in g.tolist():
            s = window_starts(float(starts_a[i]), float(ends_a[i]), window_s=cfg.window_s, hop_s=cfg.hop_s)
            starts.extend(round(x, 6) for x in s.tolist())
            owners.extend([int(labels_a[i])] * len(s))
        firsts = np.array([round((x - margin / sr) * sr) for x in starts], dtype=np.int64)
        segments, offsets = _segments(firsts, seg, apart=apart)
        key = _part_key(audio_json, _file_identity(src), starts)
        rel = f"parts/{key}.npy"
        d = dur_a[g[0]]
        tasks.append(
            {
                "key": key,
                "source": src,
                "starts": starts,
                "segments": segments,
                "part_samples": sum(x[1] for x in segments),
                "sample_rate": sr,
                "segment_samples": seg,
                "window_samples": win,
                "margin_s": margin / sr,
                "conditioning": steps,
                "dtype": cfg.dtype,
                "part_path": str(root / rel),
                "part": rel,
                "duration_s": float(d) if np.isfinite(d) else 1e12,
                "exact_duration": is_lossless(str(codec_a[g[0]]), src),
            }
        )
        cols["row"] += owners
        cols["start_s"] += starts
        cols["part"] += [rel] * len(starts)
        cols["part_row"] += list(range(len(starts)))
        cols["part_offset"] += offsets.tolist()
        cols["key"] += [key] * len(starts)
    plan = pd.DataFrame(cols)
    plan.insert(2, "end_s", plan["start_s"] + cfg.window_s)
    return tasks, plan


def _version_one_parts(root: Path, old: dict[str, Any] | None) -> list[str]:
    """The parts of a version-1 store at ``root`` (every window stored whole, margins and all):
    they are rebuilt as version 2, and removed once the new index is written."""
    if old is None or old.get("version") != 1:
        return []
    try:
        parts = sorted(set(pd.read_parquet(root / "index.parquet", columns=["part"])["part"]))
    except Exception:  # no index: nothing to name; the old parts stay as files nobody reads
        parts = []
    log.warning(
        "store %s was written by an older chirpkit (version 1: every window stored whole, so a "
        "short hop stored each second several times); rebuilding it as version 2 (windows stored "
        "once): its %d old part(s) are removed when the new index is written",
        root,
        len(parts),
    )
    return parts


def _failed_on_dask(task: dict[str, Any], exc: BaseException) -> dict[str, Any]:
    """A part whose Dask task failed for good: a skip, unless the output side failed (stop)."""
    if is_output_failure(exc):
        raise output_error(exc, task["part_path"]) from exc
    return {"key": task["key"], "ok": False, "reason": f"{type(exc).__name__}: {exc}"}


def _check_room(root: Path, todo: list[dict[str, Any]]) -> None:
    """Stop before starting when the parts to write cannot fit on the disk holding ``root``."""
    need = sum(t["part_samples"] * np.dtype(t["dtype"]).itemsize for t in todo)
    try:
        free = shutil.disk_usage(root).free
    except OSError:
        return
    if need > free:
        raise OutputError(
            str(root),
            f"the store needs {human_size(need)} more and the disk holding {root} has "
            f"{human_size(free)} free: "
            "free some space or choose another --out (check audio.window_s and audio.window_hop_s too: "
            "a long window or a short hop multiplies the size)",
            errno.ENOSPC,
        )


def _old_notes(root: Path, reused: set[str]) -> pd.DataFrame:
    """Anomaly rows of earlier runs for parts this run reuses."""
    try:
        old = pd.read_csv(root / "anomalies.csv", dtype=str, keep_default_na=False)
        return old[old["part"].isin(reused)][list(_NOTE_COLUMNS)]
    except Exception:  # none yet, or damaged: the parts' notes are then lost, not the parts
        return pd.DataFrame(columns=list(_NOTE_COLUMNS))


_NOTE_COLUMNS = ("source", "kind", "detail", "part")


def prepare(
    catalog: pd.DataFrame | str | os.PathLike[str],
    *,
    out: str | os.PathLike[str],
    config: AudioConfig | None = None,
    progress: bool = True,
    engine: str = "local",
    scheduler: Any = None,
) -> Store:
    """Decode, mix to mono, resample and cut every catalog row into windows, once.

    Args:
        catalog: a catalog frame or path (``chirpkit ingest``/``split``).
        out: the store folder (created; reused across runs as a cache).
        config: :class:`chirpkit.config.AudioConfig` (rate, window, hop, margin, dtype, workers).
        progress: show a progress bar.
        engine: ``local`` (decode threads here) or ``dask``: one task per file on a Dask cluster
            (a local one of ``config.workers`` processes, or ``scheduler``: an address, cluster or
            client); the workers write the parts, so the store must be on a disk they share.

    Returns:
        The :class:`Store`. Files that fail to decode are skipped and listed in ``skipped.csv``;
        files whose samples were repaired (NaN/infinite set to 0, beyond full scale clipped) or
        whose audio ends before the catalog says are listed in ``anomalies.csv``.

    Raises:
        DataError: the catalog is empty or no file could be decoded.
        OutputError: a part or the index cannot be written (disk full, permission denied): the
            job stops, finished parts are kept and a re-run goes on from there.
        KeyboardInterrupt: on Ctrl-C/SIGTERM, after the files being decoded are written; queued
            files are dropped, and a re-run resumes.
    """
    cfg = config or AudioConfig()
    df = read_catalog(catalog) if not isinstance(catalog, pd.DataFrame) else validate_catalog(catalog)
    if "split" in df.columns:  # classes excluded by split (too rare) are not decoded
        df = df[df["split"] != "excluded"]
    if df.empty:
        raise DataError("cannot prepare an empty catalog")
    root = output_dir(out, "store folder")
    tasks, plan = _plan(df, cfg, root, steps_to_dicts(steps_from_config(cfg)))
    stamp = {
        "catalog_fingerprint": catalog_fingerprint(df),
        "audio": cfg.shaping(),
        "plan": stable_hash(sorted(t["key"] for t in tasks), length=24),
    }
    meta_path = root / "store.json"
    old = _read_meta(meta_path) if meta_path.is_file() else None
    if meta_path.is_file() and old is None:
        log.warning("store %s: store.json is damaged; the index is rebuilt (finished parts are reused)", root)
    done = {t["key"] for t in tasks if part_ok(t)} if (root / "parts").is_dir() else set()
    stale = _version_one_parts(root, old)
    current = _up_to_date(root, old, stamp, tasks, done)
    if current is not None:
        return current

    todo = [t for t in tasks if t["key"] not in done]
    if done:
        log.info(
            "store %s: %d of %d file(s) already prepared, %d to go", root, len(done), len(tasks), len(todo)
        )
    _check_room(root, todo)
    t0 = time.perf_counter()
    results = _build_parts(todo, cfg, engine=engine, scheduler=scheduler, progress=progress)
    outcome = _outcome(df, cfg, root, tasks, plan, results, done, stamp)
    outcome.meta["seconds_this_run"] = round(time.perf_counter() - t0, 3)
    _write_store(root, outcome, stale)
    _log_prepared(root, outcome, len(done))
    return Store(root)


def _up_to_date(
    root: Path, old: dict[str, Any] | None, stamp: dict[str, Any], tasks: list[dict[str, Any]], done: set[str]
) -> Store | None:
    """The store at ``root`` when it already holds this catalog with these settings, every part
    of its index finished; None when anything is to be done."""
    if (
        old is None
        or old.get("version") != STORE_VERSION
        or any(old.get(k) != v for k, v in stamp.items())
        or not (root / "index.parquet").is_file()
    ):
        return None
    try:
        store = Store(root)
        current = set(store.index["part"].unique())
    except RunError:
        return None
    by_part = {t["part"]: t["key"] for t in tasks}
    if not all(by_part.get(p) in done for p in current):
        return None
    log.info("store %s is up to date (%d windows): nothing to do", root, len(store))
    return store


def _build_parts(
    todo: list[dict[str, Any]], cfg: AudioConfig, *, engine: str, scheduler: Any, progress: bool
) -> list[dict[str, Any]]:
    """Decode and write the parts of ``todo`` (threads here, or tasks on Dask); one result each.

    On an interrupt or a write failure what is queued is dropped and what is written kept."""
    results: list[dict[str, Any]] = []
    bar = tqdm(total=len(todo), desc="prepare", unit="file", disable=not progress or not todo)
    running: Generator[dict[str, Any], None, None]
    if engine != "local" and todo:
        from chirpkit.utils.engine import map_on_dask

        running = map_on_dask(
            build_part,
            todo,
            key=lambda t: t["key"],
            on_error=_failed_on_dask,
            engine=engine,
            scheduler=scheduler,
            workers=max(1, cfg.workers or os.cpu_count() or 1),
        )
    else:
        # threads, not processes: libsndfile, FFmpeg and soxr release the GIL (measured 2.1x on 2
        # cores, better than spawned processes), and nothing re-imports the caller's __main__
        n_workers = min(cfg.workers or min(os.cpu_count() or 1, 8), len(todo))
        running = thread_map(build_part, todo, n_workers)
    try:
        for res in running:
            results.append(res)
            bar.update()
    finally:
        running.close()
        bar.close()
        release_scratch()
    return results


@dataclass
class _Prepared:
    """What a prepare run computed, before anything is written: the window index, the files
    skipped, the anomaly notes (earlier runs' for reused parts first) and store.json's fields."""

    index: pd.DataFrame
    skipped: pd.DataFrame
    notes: pd.DataFrame
    new_notes: pd.DataFrame
    meta: dict[str, Any]
    decoded: int


def _outcome(
    df: pd.DataFrame,
    cfg: AudioConfig,
    root: Path,
    tasks: list[dict[str, Any]],
    plan: pd.DataFrame,
    results: list[dict[str, Any]],
    done: set[str],
    stamp: dict[str, Any],
) -> _Prepared:
    """The index, skips and notes of a run whose parts are ``results`` (plus ``done``, reused);
    ``stamp`` (catalog fingerprint, audio settings, plan) goes into store.json."""
    failed = {r["key"]: r["reason"] for r in results if not r["ok"]}
    by_key = {t["key"]: t for t in tasks}
    skipped = pd.DataFrame(
        [{"source": by_key[k]["source"], "reason": reason} for k, reason in failed.items()],
        columns=["source", "reason"],
    )
    new_notes = pd.DataFrame(
        [
            {
                "source": by_key[r["key"]]["source"],
                "kind": kind,
                "detail": detail,
                "part": by_key[r["key"]]["part"],
            }
            for r in results
            if r["ok"]
            for kind, detail in r["notes"]
        ],
        columns=list(_NOTE_COLUMNS),
    )
    notes = pd.concat([_old_notes(root, {by_key[k]["part"] for k in done}), new_notes], ignore_index=True)
    plan = plan[~plan["key"].isin(failed)].sort_values(["row", "start_s"], kind="stable")
    if plan.empty:
        raise DataError(
            f"no window could be prepared: all {len(tasks)} file(s) failed to decode; first reasons: "
            f"{skipped['reason'].head(3).tolist()}"
        )
    keep_cols = [c for c in ("source", "label", "labels", "group", "split", "fold") if c in df.columns]
    index = plan.drop(columns="key").join(df[keep_cols], on="row")
    index.insert(0, "window", np.arange(len(index)))
    index = index.reset_index(drop=True)
    sr = cfg.sample_rate
    meta = {
        "version": STORE_VERSION,
        "chirpkit_version": __version__,
        **stamp,
        "classes": sorted(index["label"].unique().tolist()),
        "n_windows": len(index),
        "n_files": int(index["source"].nunique()),
        "window_samples": round(cfg.window_s * sr),
        "margin_samples": round(cfg.margin_s * sr),
        "skipped_files": len(skipped),
        "anomalies": len(notes),
        "decoders_this_run": dict(Counter(r.get("decoder", "?") for r in results if r["ok"])),
    }
    return _Prepared(index, skipped, notes, new_notes, meta, len(results) - len(failed))


def _write_store(root: Path, run: _Prepared, stale: list[str]) -> None:
    """Write the index, its CSV view, skipped.csv, anomalies.csv and store.json, all at once (an
    index never names parts that a failed write left out); then drop a version-1 store's parts."""
    view = run.index.assign(labels=[LABEL_SEP.join(v) for v in run.index["labels"]])
    sides = {"skipped.csv": run.skipped, "anomalies.csv": run.notes}
    present = [name for name, table in sides.items() if len(table)]
    with atomic_paths(
        [root / "index.parquet", root / "index.csv", *(root / n for n in present), root / "store.json"]
    ) as tmps:
        run.index.to_parquet(tmps[0], index=False)
        view.to_csv(tmps[1], index=False)
        for tmp, name in zip(tmps[2:-1], present, strict=True):
            sides[name].to_csv(tmp, index=False)
        tmps[-1].write_text(json.dumps(run.meta, indent=2) + "\n")
    for name, table in sides.items():
        if not len(table):
            (root / name).unlink(missing_ok=True)
    for rel in set(stale) - set(run.index["part"]):
        (root / rel).unlink(missing_ok=True)


def _log_prepared(root: Path, run: _Prepared, reused: int) -> None:
    """Say what the run skipped, repaired and made."""
    for src_name, reason in run.skipped.head(20).itertuples(index=False):
        log.warning("skipped %s: %s", src_name, reason)
    if len(run.skipped):
        log.warning(
            "skipped %d file(s) that could not be decoded (see %s)", len(run.skipped), root / "skipped.csv"
        )
    for kind, n in run.new_notes["kind"].value_counts().items():
        what = _NOTE_WORDS.get(str(kind), str(kind).replace("_", " "))
        log.warning("%d file(s): %s (see %s)", n, what, root / "anomalies.csv")
    log.info(
        "store %s: %d windows from %d file(s) (%d decoded now, %d reused, %d skipped)",
        root,
        len(run.index),
        run.index["source"].nunique(),
        run.decoded,
        reused,
        len(run.skipped),
    )
