"""``chirpkit search``: the windows of an index nearest to example calls, as a review queue.

A query is a stretch of a recording (a clip, or ``start_s``–``end_s`` of a longer file) or the
training windows of one class of a prepared store. A stretch up to one window long is embedded in
one window centred on it; a longer one in windows every half window, whose embeddings are averaged
(a prototype). Several queries rank each window by its best similarity to any of them
(``combine="max"``: finds windows like any example) or by its similarity to their mean
(``"mean"``: the class prototype).

Results of one query that overlap a better result in the same file by at least half a window are
dropped (``distinct=True``), so one call fills one slot. The table is written like ``detect``'s
(``detections.csv``: ``file, start_s, end_s, label, score`` + ``rank``, ``query``, ``id``), with a
``detect_summary.json``, so ``chirpkit review OUT --strategy score`` opens the results as a queue in
similarity order (``--strategy stratified``: stratified by similarity, for active learning), and
``ingest --reviews OUT`` turns the reviews into training data.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from chirpkit.audio import load
from chirpkit.errors import AudioDecodeError, ConfigError, DataError
from chirpkit.similarity.db import EmbeddingIndex, unit_rows
from chirpkit.utils.engine import output_guard
from chirpkit.utils.io import write_csv, write_json

__all__ = ["Query", "SearchResult", "query_embeddings", "search"]

log = logging.getLogger("chirpkit")

RESULT_COLUMNS = ["file", "start_s", "end_s", "label", "score", "rank", "query", "id"]
COMBINE = ("max", "mean")


@dataclass(frozen=True)
class Query:
    """An example: ``path`` (an audio file) with an optional span, or ``label`` of a store's class."""

    path: str | None = None
    start_s: float | None = None
    end_s: float | None = None
    store: str | None = None
    label: str | None = None

    @property
    def name(self) -> str:
        if self.store is not None:
            return str(self.label)
        if self.start_s is None and self.end_s is None:
            return Path(str(self.path)).name
        start = 0.0 if self.start_s is None else self.start_s
        span = f"@{start:g}s-end" if self.end_s is None else f"@{start:g}-{self.end_s:g}s"
        return f"{Path(str(self.path)).name}{span}"


@dataclass
class SearchResult:
    """Ranked windows (``table``: :data:`RESULT_COLUMNS`), one block per label, best first."""

    table: pd.DataFrame
    queries: list[dict[str, Any]]
    method: str
    settings: dict[str, Any] = field(default_factory=dict)

    def write(self, out: str | os.PathLike[str]) -> Path:
        """``detections.csv`` and ``detect_summary.json`` in ``out`` (both atomic)."""
        root = Path(out)
        with output_guard(root):
            root.mkdir(parents=True, exist_ok=True)
            write_csv(root / "detections.csv", self.table[RESULT_COLUMNS], index=False)
            write_json(
                root / "detect_summary.json",
                {
                    "kind": "search",
                    "model": None,
                    "index": self.settings.get("index"),
                    "queries": self.queries,
                    "method": self.method,
                    "min_score": float(self.table["score"].min()) if len(self.table) else 0.0,
                    "settings": self.settings,
                    "paths": {"cwd": str(Path.cwd()), "out": str(root.resolve())},
                },
            )
        return root


def _span_windows(y: np.ndarray, rate: int, window_s: float, start_s: float, end_s: float) -> np.ndarray:
    """Windows ``(n, window samples)`` covering ``start_s``–``end_s`` of ``y``: one centred on a
    short span, every half window over a long one; zero-padded past the ends of the file."""
    w = round(window_s * rate)
    length = end_s - start_s
    if length <= window_s:
        starts = [(start_s + end_s) / 2 - window_s / 2]
    else:
        n = int(np.ceil((length - window_s) / (window_s / 2))) + 1
        starts = list(np.linspace(start_s, end_s - window_s, n))
    out = np.zeros((len(starts), w), np.float32)
    for i, s in enumerate(starts):
        a = round(s * rate)
        lo, hi = max(0, a), min(y.size, a + w)
        if hi > lo:
            out[i, lo - a : hi - a] = y[lo:hi]
    return out


def _clip_embedding(db: EmbeddingIndex, q: Query, embedder: Any, allow_lower_rate: bool) -> np.ndarray:
    from chirpkit.audio import info

    path = Path(str(q.path))
    if not path.is_file():
        raise DataError(f"query {path}: no such audio file")
    try:
        facts = info(path)
    except AudioDecodeError as exc:
        raise DataError(f"query {path}: cannot be decoded ({exc.reason})") from exc
    _check_rate(db, facts.sample_rate, f"query {path}", allow_lower_rate)
    start = 0.0 if q.start_s is None else float(q.start_s)
    end = facts.duration_s if q.end_s is None else float(q.end_s)
    if not 0 <= start < end or start >= facts.duration_s:
        raise DataError(
            f"query {path}: span {start:g}-{end:g} s is empty or outside the file ({facts.duration_s:.2f} s)"
        )
    rate = int(db.settings["sample_rate"])
    end = min(end, facts.duration_s)
    # decode the span and a window either side, not the whole (possibly hours-long) recording
    offset = max(0.0, start - db.window_s)
    y, _ = load(path, sample_rate=rate, offset_s=offset, duration_s=end - offset + db.window_s)
    windows = _span_windows(y[0], rate, db.window_s, start - offset, end - offset)
    emb = unit_rows(np.asarray(embedder(windows), np.float32))  # each window counts alike
    return np.asarray(emb.mean(axis=0, keepdims=True), np.float32)


def _check_rate(db: EmbeddingIndex, rate: int, what: str, allow_lower_rate: bool) -> None:
    lowest = db.lowest_rate()
    if lowest is not None and rate < lowest and not allow_lower_rate:
        raise DataError(
            f"{what} is sampled at {rate} Hz, below every recording of the index (lowest {lowest} Hz): "
            f"it lacks the band above {rate // 2} Hz that the index's windows hear, so similarities "
            "would be biased; use a recording at the archive's rate (or allow_lower_rate / "
            "--allow-lower-rate to search anyway)"
        )


def _class_embeddings(db: EmbeddingIndex, q: Query, allow_lower_rate: bool, progress: bool) -> np.ndarray:
    from chirpkit.data.store import Store
    from chirpkit.models.embeddings import EmbeddingCache

    store = Store(str(q.store))
    _check_rate(db, store.sample_rate, f"store {store.root}", allow_lower_rate)
    rows = np.flatnonzero([q.label in labels for labels in store.index["labels"]])
    if not len(rows):
        raise DataError(
            f"store {store.root} has no window of class {q.label!r}; its classes: {store.classes[:20]}"
        )
    try:
        cache = EmbeddingCache(store, model=db.model)
    except ConfigError as exc:
        raise DataError(
            f"the index holds {db.model} embeddings, which a store query cannot give: {exc}"
        ) from exc
    return np.asarray(cache.load(progress=progress)[rows, 0], np.float32)


def query_embeddings(
    db: EmbeddingIndex,
    queries: Sequence[Query],
    *,
    allow_lower_rate: bool = False,
    progress: bool = False,
) -> dict[str, np.ndarray]:
    """``label → (examples, dim)`` query embeddings in the index's embedding space."""
    from chirpkit.similarity.build import window_embedder

    embedder: Any = None
    out: dict[str, list[np.ndarray]] = {}
    for q in queries:
        if (q.path is None) == (q.store is None):
            raise ConfigError("a query is an audio file (path) or a store's class (store + label), not both")
        if q.store is not None:
            out.setdefault(str(q.label), []).append(_class_embeddings(db, q, allow_lower_rate, progress))
            continue
        if embedder is None:
            embedder = window_embedder(db.model)
        label = q.label or Path(str(q.path)).stem
        out.setdefault(label, []).append(_clip_embedding(db, q, embedder, allow_lower_rate))
    return {k: np.concatenate(v) for k, v in out.items()}


def _distinct(found: pd.DataFrame, window_s: float, overlap: float) -> pd.DataFrame:
    """Drop windows overlapping a better one of the same file by ``overlap`` of a window or more."""
    keep: list[int] = []
    kept: dict[str, list[float]] = {}
    for i, (f, s) in enumerate(zip(found["file"], found["start_s"], strict=True)):
        starts = kept.setdefault(f, [])
        if all(window_s - abs(s - t) < overlap * window_s for t in starts):
            starts.append(s)
            keep.append(i)
    return found.iloc[keep]


def _rank(
    db: EmbeddingIndex, q: np.ndarray, *, top: int, combine: str, exact: bool | str, distinct: bool
) -> tuple[pd.DataFrame, str]:
    """``id, score`` of the ``top`` best windows for one label's examples ``q``."""
    # enough candidates that dropping the neighbours of each call still leaves ``top``
    per_call = 1 + 2 * int(np.ceil(db.window_s / float(db.settings["hop_s"])))
    k = min(max(len(db), 1), top * per_call if distinct else top)
    if combine == "mean":  # the mean direction: every example counts alike, whatever its norm
        q = unit_rows(q)
    vectors = q.mean(axis=0, keepdims=True) if combine == "mean" else q
    hits = db.search(vectors, k=k, exact=exact)
    ids, scores = hits.ids.ravel(), hits.scores.ravel()
    ok = ids >= 0
    best = (
        pd.DataFrame({"id": ids[ok], "score": scores[ok]})
        .sort_values(["score", "id"], ascending=[False, True])
        .drop_duplicates("id")
    )
    found = db.windows(best["id"].to_numpy()).merge(best, on="id")
    found = found.sort_values(["score", "id"], ascending=[False, True], kind="stable")
    if distinct:
        found = _distinct(found, db.window_s, 0.5)
    return found.head(top), hits.method


def search(
    index: str | os.PathLike[str] | EmbeddingIndex,
    queries: Sequence[Query],
    *,
    top: int = 100,
    combine: str = "max",
    exact: bool | str = "auto",
    distinct: bool = True,
    allow_lower_rate: bool = False,
    out: str | os.PathLike[str] | None = None,
    progress: bool = False,
) -> SearchResult:
    """The ``top`` windows of the index most similar to the queries, per query label.

    Args:
        index: an index folder (``chirpkit index``) or an open :class:`EmbeddingIndex`.
        queries: :class:`Query` objects; queries with the same ``label`` (a clip's label defaults
            to its file name) are combined.
        top: windows returned per label.
        combine: ``max`` (best similarity to any example) or ``mean`` (similarity to the mean).
        exact: ``auto`` (exact up to 200,000 windows, then the approximate graph re-ranked),
            True or False.
        distinct: drop results overlapping a better one of the same file by half a window or more.
        allow_lower_rate: search with a query sampled below every recording of the index.
        out: write ``detections.csv`` and ``detect_summary.json`` here (for ``review``).

    Raises:
        DataError: a query that cannot be read, lies outside its file, has a lower sample rate
            than the archive, or comes from another embedding model.
        ConfigError: no query, a bad ``top`` or ``combine``.
    """
    if not queries:
        raise ConfigError("give at least one query (an audio file, or a store and a class)")
    if combine not in COMBINE:
        raise ConfigError(f"combine={combine!r} must be one of {list(COMBINE)}")
    if top < 1:
        raise ConfigError(f"top={top} must be >= 1")
    t0 = time.perf_counter()
    db = index if isinstance(index, EmbeddingIndex) else EmbeddingIndex.open(index)
    try:
        if not len(db):
            raise DataError(f"the index {db.root} holds no window yet: run `chirpkit index` first")
        vectors = query_embeddings(db, queries, allow_lower_rate=allow_lower_rate, progress=progress)
        tables, method = [], "exact"
        for label, q in vectors.items():
            found, method = _rank(db, q, top=top, combine=combine, exact=exact, distinct=distinct)
            tables.append(found.assign(label=label, rank=np.arange(1, len(found) + 1), query=label))
        table = pd.concat(tables, ignore_index=True)[RESULT_COLUMNS]
        result = SearchResult(
            table=table,
            queries=[{**q.__dict__, "name": q.name} for q in queries],
            method=method,
            settings={
                "index": str(db.root.resolve()),
                "model": db.model,
                "windows": len(db),
                "top": top,
                "combine": combine,
                "distinct": distinct,
                "seconds": round(time.perf_counter() - t0, 3),
            },
        )
    finally:
        if not isinstance(index, EmbeddingIndex):
            db.close()
    if out is not None:
        result.write(out)
    return result
