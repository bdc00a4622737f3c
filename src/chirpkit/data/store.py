"""The prepared store: every window decoded once, resampled, cut and memory-mapped.

Layout of a store folder::

    store/
      store.json        settings that shaped the windows, catalog fingerprint, counts, decoders
      index.parquet     one row per window: row, source, start_s, end_s, label(s), group, split,
                        part, part_row (+ index.csv, a view)
      skipped.csv       files that could not be decoded (source, reason), if any
      parts/ab/<key>.npy  the windows of one source file, ``(n_windows, samples)``, int16/float16/float32

A part's key hashes the file's identity (path, size, modification time), the window spans taken
from it and the settings that shape samples, so a second ``prepare`` with the same catalog and
settings decodes nothing, an interrupted one resumes where it stopped, and a changed setting or an
edited file rebuilds only the parts it touches. Every file is written to a temporary name and
renamed.

Windows: a catalog row ``[start_s, end_s]`` no longer than ``window_s`` gives one window centred on
it (a point annotation, a short clip — padded with zeros where the file has no audio); a longer
row gives windows every ``window_hop_s`` plus one aligned to its end, so ``ceil(L / window_s)``
windows for the default hop. Each stored window carries ``margin_s`` of real audio on both sides.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter, OrderedDict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from chirpkit._util import atomic_path, existing_path, read_json, stable_hash, write_json
from chirpkit._version import __version__
from chirpkit.audio import decode, resample
from chirpkit.conditioning import Conditioner, steps_from_config, steps_from_dicts, steps_to_dicts
from chirpkit.config import AudioConfig
from chirpkit.data.catalog import LABEL_SEP, catalog_fingerprint, read_catalog, validate_catalog
from chirpkit.errors import AudioDecodeError, DataError, RunError

__all__ = ["STORE_VERSION", "Store", "prepare", "window_starts"]

log = logging.getLogger("chirpkit")

STORE_VERSION = 1
_EPS = 1e-6
# Long files whose windows cover less than this share are read span by span instead of whole.
_PARTIAL_READ_SHARE = 0.5
_PARTIAL_READ_MIN_S = 120.0
_EDGE_S = 0.05  # extra audio read around partial spans so the resampler has context


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


def _to_disk(y: np.ndarray, dtype: str) -> np.ndarray:
    """Samples as stored: int16 (×32767, rounded, clipped), float16 or float32."""
    if dtype == "int16":
        t = np.multiply(y, 32767.0, dtype=np.float32)
        np.rint(t, out=t)
        np.clip(t, -32768, 32767, out=t)
        return t.astype(np.int16)
    return y.astype(dtype, copy=False)


def _from_disk(a: np.ndarray) -> np.ndarray:
    if a.dtype == np.int16:
        return a.astype(np.float32) / 32767.0
    return a.astype(np.float32)


def _place(dst: np.ndarray, y: np.ndarray, first: int) -> None:
    """Copy samples ``[first, first + len(dst))`` of ``y`` into the zero-filled row ``dst``."""
    n = dst.shape[0]
    lo, hi = max(first, 0), min(first + n, y.shape[0])
    if hi > lo:
        dst[lo - first : hi - first] = y[lo:hi]


def _build_part(task: dict[str, Any]) -> dict[str, Any]:
    """Decode one source file and write all its windows as one part (runs in a worker thread)."""
    source: str = task["source"]
    sr: int = task["sample_rate"]
    seg = task["segment_samples"]
    margin_s: float = task["margin_s"]
    firsts = [round((s - margin_s) * sr) for s in task["starts"]]
    cond = Conditioner(steps_from_dicts(task["conditioning"]), sr)
    core = slice(round(margin_s * sr), round(margin_s * sr) + task["window_samples"])

    def conditioned(y: np.ndarray) -> np.ndarray:
        cond.reset()
        return cond.block(y) if cond.file_steps else y

    try:
        duration = float(task["duration_s"])
        lo_s = max(0.0, min(task["starts"]) - margin_s)
        hi_s = max(task["starts"]) - margin_s + seg / sr
        # without per-window normalisation, convert each decoded signal to the disk type once and
        # cut windows from it (windows with margins overlap: converting them would repeat work)
        per_window = cond.normalize is not None
        windows = np.zeros((len(firsts), seg), dtype=np.float32 if per_window else np.dtype(task["dtype"]))

        def finite(y: np.ndarray) -> np.ndarray:
            if not np.isfinite(y).all():
                raise AudioDecodeError(source, "decoded audio holds NaN or infinite samples")
            return y if per_window else _to_disk(y, task["dtype"])

        decoder = "soundfile"
        if duration > _PARTIAL_READ_MIN_S and len(firsts) * seg / sr < _PARTIAL_READ_SHARE * duration:
            # sparse windows in a long file: read each window's span, not the whole file
            for i, first in enumerate(firsts):
                a = max(0.0, first / sr - _EDGE_S)
                d = decode(source, offset_s=a, duration_s=seg / sr + 2 * _EDGE_S)
                decoder = d.decoder
                y = finite(conditioned(resample(d.y, orig_sr=d.sample_rate, target_sr=sr)[0]))
                _place(windows[i], y, first - round(a * sr))
        else:
            # the catalog's duration only chooses the strategy: headers (mp3) can be wrong, so
            # the read is bounded by the windows and decode stops at the real end of the file
            lo_read = max(0.0, lo_s - _EDGE_S)
            d = decode(source, offset_s=lo_read, duration_s=max(0.0, hi_s - lo_read) + _EDGE_S)
            decoder = d.decoder
            y = finite(conditioned(resample(d.y, orig_sr=d.sample_rate, target_sr=sr)[0]))
            shift = round(lo_read * sr)
            for i, first in enumerate(firsts):
                _place(windows[i], y, first - shift)
        if per_window:
            for i in range(len(windows)):
                windows[i] = cond.window(windows[i], core)
            windows = _to_disk(windows, task["dtype"])
        out = Path(task["part_path"])
        out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(out) as tmp, open(tmp, "wb") as fh:
            np.save(fh, windows)
        return {"key": task["key"], "ok": True, "decoder": decoder, "n": len(firsts)}
    except AudioDecodeError as exc:
        return {"key": task["key"], "ok": False, "reason": exc.reason}
    except Exception as exc:  # one bad file must not stop the job
        return {"key": task["key"], "ok": False, "reason": f"{type(exc).__name__}: {exc}"}


class Store:
    """Read access to a prepared store (memory-mapped parts, opened lazily).

    ``read(i)`` returns window ``i`` with its margins as ``float32`` of shape ``(segment_samples,)``.

    Each open memory map holds a file descriptor, and a clip dataset has one part per file, so at
    most :attr:`max_open_parts` maps stay open per store object (least recently used closed first);
    reopening a part costs microseconds.
    """

    max_open_parts: int = 256

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = existing_path(root, "prepared store")
        meta_path = self.root / "store.json"
        if not meta_path.is_file() or not (self.root / "index.parquet").is_file():
            raise RunError(
                f"{self.root} is not a complete prepared store (no store.json/index.parquet); "
                "run `chirpkit prepare CATALOG --out STORE` (it resumes if it was interrupted)"
            )
        self.meta: dict[str, Any] = read_json(meta_path)
        if self.meta.get("version") != STORE_VERSION:
            raise RunError(
                f"store {self.root} has version {self.meta.get('version')}, expected {STORE_VERSION}"
            )
        self.index = pd.read_parquet(self.root / "index.parquet")
        self.index["labels"] = [list(v) for v in self.index["labels"]]
        self._mmaps: OrderedDict[str, np.ndarray] = OrderedDict()
        self._part_of = self.index["part"].to_numpy()
        self._row_of = self.index["part_row"].to_numpy()

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
    def classes(self) -> list[str]:
        return list(self.meta["classes"])

    def __len__(self) -> int:
        return len(self.index)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_mmaps"] = OrderedDict()  # memory maps are reopened in each worker
        return state

    def _part(self, rel: str) -> np.ndarray:
        arr = self._mmaps.get(rel)
        if arr is None:
            arr = np.load(self.root / rel, mmap_mode="r")
            self._mmaps[rel] = arr
            while len(self._mmaps) > self.max_open_parts:
                self._mmaps.popitem(last=False)  # its map (and descriptor) closes once unreferenced
        else:
            self._mmaps.move_to_end(rel)
        return arr

    def read(self, i: int) -> np.ndarray:
        """Window ``i`` (a position in :attr:`index`) with margins, as ``float32``."""
        return _from_disk(np.asarray(self._part(self._part_of[i])[int(self._row_of[i])]))

    def read_many(self, positions: np.ndarray) -> np.ndarray:
        """Windows at ``positions`` stacked as ``(n, segment_samples)`` ``float32``."""
        parts = self._part_of[positions]
        rows = self._row_of[positions]
        out = np.empty((len(positions), self.window_samples + 2 * self.margin_samples), np.float32)
        for j, (p, r) in enumerate(zip(parts, rows, strict=True)):
            out[j] = _from_disk(np.asarray(self._part(p)[int(r)]))
        return out


def _file_identity(path: str) -> dict[str, Any]:
    st = Path(path).stat()
    return {"path": path, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


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
        The :class:`Store`. Files that fail to decode are skipped and listed in ``skipped.csv``.

    Raises:
        DataError: the catalog is empty or no file could be decoded.
    """
    cfg = config or AudioConfig()
    df = read_catalog(catalog) if not isinstance(catalog, pd.DataFrame) else validate_catalog(catalog)
    if "split" in df.columns:  # classes excluded by split (too rare) are not decoded
        df = df[df["split"] != "excluded"]
    if df.empty:
        raise DataError("cannot prepare an empty catalog")
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    sr = cfg.sample_rate
    win = round(cfg.window_s * sr)
    margin = round(cfg.margin_s * sr)
    fingerprint = catalog_fingerprint(df)
    shaping = cfg.shaping()
    steps = steps_to_dicts(steps_from_config(cfg))

    meta_path = root / "store.json"
    if meta_path.is_file() and (root / "index.parquet").is_file():
        old = read_json(meta_path)
        if (
            old.get("version") == STORE_VERSION
            and old.get("catalog_fingerprint") == fingerprint
            and old.get("audio") == shaping
        ):
            store = Store(root)
            if all((root / p).is_file() for p in store.index["part"].unique()):
                log.info("store %s is up to date (%d windows): nothing to do", root, len(store))
                return store

    # plan: windows per row, grouped into one part per source file
    duration = df["duration_s"] if "duration_s" in df.columns else pd.Series(np.nan, index=df.index)
    plan_rows: list[dict[str, Any]] = []
    tasks: dict[str, dict[str, Any]] = {}
    for src, rows in df.groupby("source", sort=False):
        starts: list[float] = []
        owners: list[int] = []
        for idx, r in rows.iterrows():
            s = window_starts(float(r["start_s"]), float(r["end_s"]), window_s=cfg.window_s, hop_s=cfg.hop_s)
            starts.extend(float(round(x, 6)) for x in s)
            owners.extend([int(idx)] * len(s))  # type: ignore[call-overload]
        src = str(src)
        try:
            ident = _file_identity(src)
        except OSError:
            ident = {"path": src, "missing": True}
        key = stable_hash({"v": STORE_VERSION, "file": ident, "audio": shaping, "starts": starts}, length=24)
        rel = f"parts/{key[:2]}/{key}.npy"
        file_dur = float(duration.loc[rows.index[0]]) if pd.notna(duration.loc[rows.index[0]]) else 1e12
        tasks[key] = {
            "key": key,
            "source": src,
            "starts": starts,
            "sample_rate": sr,
            "segment_samples": win + 2 * margin,
            "window_samples": win,
            "margin_s": margin / sr,
            "conditioning": steps,
            "dtype": cfg.dtype,
            "part_path": str(root / rel),
            "duration_s": file_dur,
        }
        for j, (owner, st) in enumerate(zip(owners, starts, strict=True)):
            plan_rows.append(
                {
                    "row": owner,
                    "start_s": st,
                    "end_s": st + cfg.window_s,
                    "part": rel,
                    "part_row": j,
                    "key": key,
                }
            )

    todo = [t for t in tasks.values() if not Path(t["part_path"]).is_file()]
    done_before = len(tasks) - len(todo)
    if done_before:
        log.info(
            "store %s: %d of %d file(s) already prepared, %d to go",
            root,
            done_before,
            len(tasks),
            len(todo),
        )
    results: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    n_workers = min(cfg.workers or min(os.cpu_count() or 1, 8), len(todo))
    bar = tqdm(total=len(todo), desc="prepare", unit="file", disable=not progress or not todo)
    if engine != "local" and todo:
        from chirpkit.engine import map_on_dask

        running = map_on_dask(
            _build_part,
            todo,
            key=lambda t: t["key"],
            on_error=lambda t, exc: {"key": t["key"], "ok": False, "reason": f"{type(exc).__name__}: {exc}"},
            engine=engine,
            scheduler=scheduler,
            workers=max(1, cfg.workers or os.cpu_count() or 1),
        )
        for res in running:
            results.append(res)
            bar.update()
    elif n_workers <= 1:
        for t in todo:
            results.append(_build_part(t))
            bar.update()
    else:
        # threads, not processes: libsndfile, FFmpeg and soxr release the GIL (measured 2.1x on 2
        # cores, better than spawned processes), and nothing re-imports the caller's __main__
        with ThreadPoolExecutor(max_workers=n_workers) as pool:
            for res in pool.map(_build_part, todo):
                results.append(res)
                bar.update()
    bar.close()

    failed = {r["key"]: r["reason"] for r in results if not r["ok"]}
    decoders = Counter(r.get("decoder", "?") for r in results if r["ok"])
    skipped = pd.DataFrame(
        [{"source": tasks[k]["source"], "reason": reason} for k, reason in failed.items()],
        columns=["source", "reason"],
    )
    skip_path = root / "skipped.csv"
    if len(skipped):
        with atomic_path(skip_path) as tmp:
            skipped.to_csv(tmp, index=False)
        for src_name, reason in skipped.head(20).itertuples(index=False):
            log.warning("skipped %s: %s", src_name, reason)
        log.warning("skipped %d file(s) that could not be decoded (see %s)", len(skipped), skip_path)
    elif skip_path.exists():
        skip_path.unlink()

    plan = pd.DataFrame(plan_rows)
    plan = plan[~plan["key"].isin(failed)].sort_values(["row", "start_s"], kind="stable")
    if plan.empty:
        raise DataError(
            f"no window could be prepared: all {len(tasks)} file(s) failed to decode (see {skip_path})"
        )
    keep_cols = [c for c in ("source", "label", "labels", "group", "split", "fold") if c in df.columns]
    index = plan.drop(columns="key").join(df[keep_cols], on="row")
    index.insert(0, "window", np.arange(len(index)))
    index = index.reset_index(drop=True)
    with atomic_path(root / "index.parquet") as tmp:
        index.to_parquet(tmp, index=False)
    view = index.assign(labels=[LABEL_SEP.join(v) for v in index["labels"]])
    with atomic_path(root / "index.csv") as tmp:
        view.to_csv(tmp, index=False)
    write_json(
        meta_path,
        {
            "version": STORE_VERSION,
            "chirpkit_version": __version__,
            "audio": shaping,
            "catalog_fingerprint": fingerprint,
            "classes": sorted(index["label"].unique().tolist()),
            "n_windows": len(index),
            "n_files": int(index["source"].nunique()),
            "window_samples": win,
            "margin_samples": margin,
            "skipped_files": len(skipped),
            "decoders_this_run": dict(decoders),
            "seconds_this_run": round(time.perf_counter() - t0, 3),
        },
    )
    log.info(
        "store %s: %d windows from %d file(s) (%d decoded now, %d reused, %d skipped)",
        root,
        len(index),
        index["source"].nunique(),
        len(results) - len(failed),
        done_before,
        len(skipped),
    )
    return Store(root)
