"""Pretrained bird-model embeddings of store windows, computed once and cached by content.

Every store window is embedded with BirdNET V2.4 (1,024-d): the window is resampled to 48 kHz; a
window longer than BirdNET's 3 s is covered by 3 s crops whose embeddings are averaged, a shorter
one is zero-padded (centred). With ``views > 1`` each window is also embedded at time shifts of
``±shift_s`` (read from the stored margin): training draws one view at random per epoch, an
embedding-level augmentation; evaluation uses the centre view.

The cache (:class:`EmbeddingCache`) holds one file per store *part* (the windows of one source
file) and view, keyed by the part's sample content, the store's window geometry, the embedding
model and the view's time shift. A re-split, another store of the same windows or another run
reuses it; a changed setting or an edited file recomputes only what it touches (a part's key is
kept with its file's size, modification time and inode, so unchanged parts are not read again).
It lives in ``$CHIRPKIT_CACHE/embeddings`` (default ``~/.cache/chirpkit/embeddings``); every file
is written atomically, so an interrupted run loses at most the part in progress.

BirdNET is CC BY-NC-SA 4.0: models and scores built on it inherit the non-commercial terms.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import io
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from chirpkit.audio import resample
from chirpkit.data.store import Store
from chirpkit.errors import ConfigError, RunError
from chirpkit.models.birdnet import BIRDNET_SAMPLE_RATE, BIRDNET_WINDOW_SAMPLES, BirdNET
from chirpkit.models.heads import BIRDNET_EMBEDDING, EMBEDDING_DIM
from chirpkit.utils.engine import map_on_dask, worker_cached
from chirpkit.utils.io import atomic_path, read_json, stable_hash, write_json

__all__ = [
    "EmbeddingCache",
    "PartJob",
    "birdnet_input",
    "cache_root",
    "embed",
    "embed_windows",
    "embedder",
    "embedding_cache",
]

log = logging.getLogger("chirpkit")

_EMBEDDERS = {BIRDNET_EMBEDDING: BirdNET}
#: windows per embedding-model call when a store part is embedded: BirdNET on LiteRT holds its
#: activations for the whole batch (a 298-window part at once peaked at 7.3 GB resident; 16 at a
#: time, 0.97 GB, as fast)
EMBED_BATCH = 16


def embedder(model: str) -> Any:
    """A loaded embedding model (``.embed(crops) -> (n, dim)``) by name."""
    if model not in _EMBEDDERS:
        raise ConfigError(f"unknown embedding model {model!r}; known: {sorted(_EMBEDDERS)}")
    return _EMBEDDERS[model]()


def cache_root() -> Path:
    """``$CHIRPKIT_CACHE`` or ``$XDG_CACHE_HOME/chirpkit`` (``~/.cache/chirpkit``)."""
    env = os.environ.get("CHIRPKIT_CACHE")
    if env:
        return Path(env).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "chirpkit"


def birdnet_input(windows: np.ndarray, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
    """``(n, samples)`` windows → ``(m, 144000)`` BirdNET crops at 48 kHz and the window of each crop."""
    x = resample(
        np.ascontiguousarray(windows, dtype=np.float32), orig_sr=sample_rate, target_sr=BIRDNET_SAMPLE_RATE
    )
    n, length = x.shape
    w = BIRDNET_WINDOW_SAMPLES
    if length <= w:
        out = np.zeros((n, w), np.float32)
        left = (w - length) // 2
        out[:, left : left + length] = x
        return out, np.arange(n)
    k = int(np.ceil(length / w))
    starts = np.linspace(0, length - w, k).round().astype(int)
    crops = np.stack([x[:, s : s + w] for s in starts], axis=1).reshape(n * k, w)
    return crops, np.repeat(np.arange(n), k)


def embed_windows(embedder: Any, windows: np.ndarray, sample_rate: int) -> np.ndarray:
    """``(n, samples)`` windows → ``(n, dim)`` embeddings (crops of long windows averaged)."""
    crops, owner = birdnet_input(windows, sample_rate)
    emb = embedder.embed(crops)
    out = np.zeros((len(windows), emb.shape[1]), np.float32)
    np.add.at(out, owner, emb)
    return out / np.bincount(owner, minlength=len(windows))[:, None].astype(np.float32)


@dataclass(frozen=True)
class PartJob:
    """The embeddings of one store part at one time shift: what one cache file holds."""

    part: str  #: the part's path relative to the store
    rows: np.ndarray  #: store positions of the part's windows, in part-row order
    offset: int  #: time shift in samples (0 = the window itself)
    path: Path  #: the cache file


class EmbeddingCache:
    """Embeddings ``(windows, views, dim)`` float32 of a store's windows, cached per part and view.

    Args:
        store: a prepared store.
        model: the embedding model (``birdnet-v2.4``).
        views: embeddings per window: the centre, then pairs shifted by ``-k·shift_s`` / ``+k·shift_s``.
        shift_s: the time shift between views; limited by the store's margin.
        root: the cache folder (default :func:`cache_root` ``/ "embeddings"``).
    """

    def __init__(
        self,
        store: Store,
        *,
        model: str = BIRDNET_EMBEDDING,
        views: int = 1,
        shift_s: float = 0.5,
        root: str | os.PathLike[str] | None = None,
    ) -> None:
        if model not in _EMBEDDERS:
            raise ConfigError(f"unknown embedding model {model!r}; known: {sorted(_EMBEDDERS)}")
        if views < 1:
            raise ConfigError(f"views={views} must be >= 1")
        self.store = store
        self.model = model
        margin = store.margin_samples
        side = views // 2  # the largest shift is side * step, inside the margin
        step = min(round(shift_s * store.sample_rate), margin // side) if side else 0
        if views > 1 and step <= 0:
            raise ConfigError(
                f"{views} embedding views need a stored margin (audio.margin_s > 0) to shift into; "
                f"store {store.root} has margin {store.audio.margin_s} s"
            )
        shifts = [sign * k * step for k in range(1, side + 1) for sign in (-1, 1)]
        self.offsets = [0, *shifts[: views - 1]]
        self.root = Path(root) if root is not None else cache_root() / "embeddings"
        self._setting = stable_hash(
            {"model": model, "sample_rate": store.sample_rate, "window": store.window_samples},
            length=16,
        )
        self._embedder: Any = None

    @property
    def views(self) -> int:
        return len(self.offsets)

    def _content_key(self, part: str, offsets: np.ndarray | None) -> str:
        """A hash of the part's samples and of where its windows sit in it (``offsets``, in part-row
        order; None for a version-1 store, whose rows are the windows)."""
        h = hashlib.blake2b(digest_size=16)
        with (self.store.root / part).open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                h.update(chunk)
        h.update(str(self.store.margin_samples).encode())  # where the window sits in a stored row
        if offsets is not None:  # windows are views: the same audio holds other windows at another hop
            h.update(offsets.astype(np.int64).tobytes())
        return h.hexdigest()

    def _keys_path(self) -> Path:
        return self.root / "part-keys" / f"{stable_hash(str(self.store.root.resolve()))}.json"

    def _part_keys(self, layout: dict[str, np.ndarray | None]) -> dict[str, str]:
        """:meth:`_content_key` of each part in ``layout`` (part -> its windows' offsets), reading a
        part's bytes only when it is new or changed: the keys of a store are kept in the cache
        (``part-keys/<store>.json``) with each part file's size, modification time and inode, and
        the layout they were computed for (a 20 h store's parts are 7 GB to read)."""
        path = self._keys_path()
        try:
            known = read_json(path)
            known = known if isinstance(known, dict) else {}
        except (OSError, ValueError):
            known = {}
        kept: dict[str, list[Any]] = {}
        for part, offsets in layout.items():
            try:
                st = (self.store.root / part).stat()
                where = hashlib.blake2b(str(self.store.margin_samples).encode(), digest_size=16)
                if offsets is not None:
                    where.update(offsets.astype(np.int64).tobytes())
                ident = [st.st_size, st.st_mtime_ns, st.st_ino, where.hexdigest()]
                entry = known.get(part)
                if not (isinstance(entry, list) and entry[:4] == ident and len(entry) == 5):
                    entry = [*ident, self._content_key(part, offsets)]
            except OSError as exc:
                raise RunError(
                    f"store part {self.store.root / part} cannot be read ({exc.strerror or exc}); "
                    "run `chirpkit prepare` again to rebuild it"
                ) from exc
            kept[part] = entry
        if kept != known:
            try:
                write_json(path, kept)
            except OSError as exc:  # a read-only cache still embeds: it hashes again next time
                log.debug("could not save the part keys to %s: %s", path, exc)
        return {part: str(entry[4]) for part, entry in kept.items()}

    def jobs(self) -> list[PartJob]:
        """One job per store part and view, with the cache file it writes (done or not)."""
        idx = self.store.index
        part_row = idx["part_row"].to_numpy()
        at = None if self.store.rows_stored else idx["part_offset"].to_numpy(np.int64)
        orders = {
            str(part): np.asarray(rows)[np.argsort(part_row[rows], kind="stable")]
            for part, rows in idx.groupby("part", sort=True).indices.items()
        }
        keys = self._part_keys({p: None if at is None else at[o] for p, o in orders.items()})
        out = []
        for part, order in orders.items():
            key = keys[part]
            for off in self.offsets:
                path = self.root / self._setting / f"shift{off:+d}" / key[:2] / f"{key}.npy"
                out.append(PartJob(part, order, off, path))
        return out

    def compute(self, job: PartJob) -> None:
        """Embed one part's windows at one shift and write its cache file (atomically)."""
        if self._embedder is None:
            self._embedder = embedder(self.model)
        st = self.store
        m, w = st.margin_samples + job.offset, st.window_samples
        # a batch at a time: a part holds every window of a file (thousands for a long recording),
        # and the model's activations for all of them at once took gigabytes
        emb = np.zeros((len(job.rows), EMBEDDING_DIM), np.float32)
        for i in range(0, len(job.rows), EMBED_BATCH):
            rows = job.rows[i : i + EMBED_BATCH]
            emb[i : i + len(rows)] = embed_windows(
                self._embedder, st.read_many(rows)[:, m : m + w], st.sample_rate
            )
        with atomic_path(job.path) as tmp, open(tmp, "wb") as fh:
            np.save(fh, emb)

    def fill(
        self,
        *,
        engine: str = "local",
        scheduler: Any = None,
        workers: int = 2,
        progress: bool = True,
        jobs: list[PartJob] | None = None,
    ) -> dict[str, int]:
        """Compute every part file not cached yet, here (``engine="local"``) or as one task per
        part on a Dask cluster (``engine="dask"``: a local cluster of ``workers`` processes, or
        ``scheduler``, see :func:`chirpkit.utils.engine.dask_client`); each worker loads the embedding
        model once. Returns ``{"parts", "cached", "computed"}``.

        Raises:
            RunError: parts that could not be embedded (each listed), after the others are done.
        """
        jobs = self.jobs() if jobs is None else jobs
        todo = [j for j in jobs if not j.path.is_file()]
        if todo:
            log.info(
                "embeddings (%s): %d of %d part file(s) cached, %d to compute",
                self.model,
                len(jobs) - len(todo),
                len(jobs),
                len(todo),
            )
        bar = tqdm(
            total=sum(len(j.rows) for j in todo), desc="embeddings", unit="window", disable=not progress
        )
        failed: list[str] = []
        if engine == "local" or not todo:
            for job in todo:
                self.compute(job)
                bar.update(len(job.rows))
        else:
            shipped = copy.copy(self)
            shipped._embedder = None  # the model itself does not travel: each worker loads it once
            results = map_on_dask(
                functools.partial(_compute_on_worker, shipped),
                todo,
                key=lambda j: str(j.path),
                on_error=lambda j, exc: (j, f"{type(exc).__name__}: {exc}"),
                engine=engine,
                scheduler=scheduler,
                workers=workers,
            )
            for job, error in results:
                bar.update(len(job.rows))
                if error:
                    failed.append(f"{job.part} (shift {job.offset}): {error}")
        bar.close()
        if failed:
            raise RunError(f"{len(failed)} store part(s) could not be embedded: {'; '.join(failed[:5])}")
        return {"parts": len(jobs), "cached": len(jobs) - len(todo), "computed": len(todo)}

    def load(self, *, progress: bool = True) -> np.ndarray:
        """``(windows, views, dim)`` float32 for every store window, computing what is not cached
        yet: a read-only memory map, so memory does not grow with the store.

        The part files are gathered once into one file per store layout
        (``<cache>/<setting>/stores/<key>.npy``, laid out ``(views, windows, dim)`` and keyed by the
        part files it gathers and where their windows sit), written with plain file writes part by
        part, and reused by every later load of the same store.
        """
        jobs = self.jobs()
        self.fill(progress=progress, jobs=jobs)
        key = hashlib.blake2b(digest_size=16)
        key.update(f"{len(self.store)},{self.views}".encode())
        for job in jobs:
            key.update(f"{job.path.relative_to(self.root)}\0".encode())
            key.update(job.rows.astype(np.int64).tobytes())
        path = self.root / self._setting / "stores" / f"{key.hexdigest()}.npy"
        shape = (self.views, len(self.store), EMBEDDING_DIM)
        try:
            mm = np.load(path, mmap_mode="r")
            if mm.shape == shape and mm.dtype == np.float32:
                return mm.transpose(1, 0, 2)
        except (OSError, ValueError):
            pass  # not gathered yet, or damaged: gather it
        self._gather(jobs, path, shape)
        return np.load(path, mmap_mode="r").transpose(1, 0, 2)

    def _gather(self, jobs: list[PartJob], path: Path, shape: tuple[int, int, int]) -> None:
        """Write the part files into one ``(views, windows, dim)`` file at ``path`` (atomically),
        one run of consecutive windows per write: nothing but a part's embeddings in memory."""
        view_of = {off: v for v, off in enumerate(self.offsets)}
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(
            header,
            {
                "descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)),
                "fortran_order": False,
                "shape": shape,
            },
        )
        start = len(header.getvalue())
        row_bytes = EMBEDDING_DIM * 4
        written = np.zeros((shape[0], shape[1]), dtype=bool)
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            fh.write(header.getvalue())
            fh.truncate(start + shape[0] * shape[1] * row_bytes)
            fd = fh.fileno()
            for job in jobs:
                try:
                    part = np.load(job.path)
                    if part.shape != (len(job.rows), EMBEDDING_DIM):
                        raise ValueError(f"shape {part.shape}, expected {(len(job.rows), EMBEDDING_DIM)}")
                except (OSError, ValueError) as exc:  # a damaged cache file: compute it again
                    log.warning("embedding cache file %s is unreadable (%s); recomputing it", job.path, exc)
                    self.compute(job)
                    part = np.load(job.path)
                v = view_of[job.offset]
                order = np.argsort(job.rows, kind="stable")
                rows, part = job.rows[order], np.ascontiguousarray(part[order], np.float32)
                breaks = np.flatnonzero(np.diff(rows) != 1) + 1
                for lo, hi in zip(np.r_[0, breaks], np.r_[breaks, len(rows)], strict=True):
                    os.pwrite(fd, part[lo:hi].tobytes(), start + (v * shape[1] + int(rows[lo])) * row_bytes)
                written[v, rows] = True
        if not written.all():
            path.unlink(missing_ok=True)
            raise RunError(
                f"the embedding cache of {self.store.root} misses {int((~written).sum())} window(s): "
                "its index names windows no part holds; re-run `chirpkit prepare`"
            )


def gather(embeddings: np.ndarray, rows: np.ndarray, views: np.ndarray | int = 0) -> np.ndarray:
    """``embeddings[rows, views]`` (``embeddings[rows]`` when it has no view axis) as an in-memory
    ``(len(rows), dim)`` float32 array, read in row order (a memory map from
    :meth:`EmbeddingCache.load` is read forwards, not all over the file)."""
    rows = np.asarray(rows, dtype=np.int64)
    order = np.argsort(rows, kind="stable")
    out = np.empty((len(rows), embeddings.shape[-1]), np.float32)
    if embeddings.ndim == 2:
        out[order] = embeddings[rows[order]]
    else:
        v = np.broadcast_to(np.asarray(views, dtype=np.int64), rows.shape)
        out[order] = embeddings[rows[order], v[order]]
    return out


#: windows per block when a head scores stored embeddings (bounded memory, whatever the store)
SCORE_BLOCK = 1024


def _compute_on_worker(cache: EmbeddingCache, job: PartJob) -> tuple[PartJob, str]:
    """One part on a Dask worker, with the worker's copy of the embedding model."""
    cache._embedder = worker_cached(("embedder", cache.model), lambda: embedder(cache.model))
    cache.compute(job)
    return job, ""


def embedding_cache(
    store: Store, *, model: str = BIRDNET_EMBEDDING, views: int = 1, progress: bool = True
) -> np.ndarray:
    """Embeddings of every store window: ``(windows, dim)`` for one view, else ``(windows, views, dim)``,
    as a read-only memory map (see :meth:`EmbeddingCache.load`; ``np.array(...)`` for a copy in memory)."""
    emb = EmbeddingCache(store, model=model, views=views).load(progress=progress)
    return emb[:, 0] if views == 1 else emb


def embed(
    store: Store | str | os.PathLike[str],
    *,
    model: str = BIRDNET_EMBEDDING,
    views: int = 1,
    shift_s: float = 0.5,
    engine: str = "local",
    scheduler: Any = None,
    workers: int = 2,
    progress: bool = True,
) -> dict[str, Any]:
    """Fill the embedding cache of a store (``chirpkit embed``), here or on a Dask cluster, so
    that training heads, zero-shot scores and baselines on it run BirdNET no more.

    Returns:
        ``{"store", "model", "views", "parts", "cached", "computed", "windows"}``.
    """
    st = store if isinstance(store, Store) else Store(store)
    cache = EmbeddingCache(st, model=model, views=views, shift_s=shift_s)
    done = cache.fill(engine=engine, scheduler=scheduler, workers=workers, progress=progress)
    return {"store": str(st.root), "model": model, "views": cache.views, "windows": len(st), **done}
