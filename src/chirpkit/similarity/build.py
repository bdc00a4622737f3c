"""``chirpkit index``: embeddings of every window of a recording archive, into an index folder.

Files are decoded on threads ahead of the embedding model (the same streaming windows as
``detect``: a file of any length is read block by block), here or on a Dask cluster, where each
worker loads the model once. The index grows: a file already indexed with the same content and
settings is skipped, a changed one is embedded again and replaces its windows, new files are
added. A file that cannot be decoded is skipped, listed in ``failures`` and reported; a later run
tries it again. Ctrl-C stops within seconds with every finished file kept.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from chirpkit.config import DetectConfig
from chirpkit.detection.plan import WorkUnit, plan_units
from chirpkit.errors import ConfigError, DataError
from chirpkit.models.birdnet import BIRDNET_SAMPLE_RATE
from chirpkit.models.heads import BIRDNET_EMBEDDING, EMBEDDING_DIM
from chirpkit.models.predict import Predictor
from chirpkit.models.spec import ModelSpec
from chirpkit.similarity.db import EmbeddingIndex
from chirpkit.sources import is_url, probe, resolve_sources
from chirpkit.utils.engine import interruptible, map_on_dask, worker_cached
from chirpkit.utils.io import write_csv

__all__ = ["IndexResult", "index", "window_embedder"]

log = logging.getLogger("chirpkit")

#: embedding models an index can hold: name → (sample rate, window seconds, dimension)
INDEX_MODELS = {BIRDNET_EMBEDDING: (BIRDNET_SAMPLE_RATE, 3.0, EMBEDDING_DIM)}


@dataclass
class IndexResult:
    """What one ``index`` run did."""

    root: Path
    files: int  #: files in the index now
    windows: int  #: windows in the index now
    embedded: int  #: files embedded by this run
    skipped: int  #: files already in the index, unchanged
    failed: list[dict[str, str]]  #: ``{"file", "reason"}`` of files that could not be indexed
    graph_added: int  #: window ids added to the approximate graph
    audio_s: float  #: seconds of audio embedded by this run
    wall_s: float

    def to_dict(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in self.__dict__.items()}


def window_embedder(model: str = BIRDNET_EMBEDDING) -> Predictor:
    """A predictor-shaped embedder: ``windows (n, samples) at its spec's rate → (n, dim)``."""
    if model not in INDEX_MODELS:
        raise ConfigError(f"model={model!r}: an index holds embeddings of {sorted(INDEX_MODELS)}")
    from chirpkit.models.embeddings import embed_windows, embedder

    rate, window_s, dim = INDEX_MODELS[model]
    net = embedder(model)
    spec = ModelSpec(model, [f"e{i}" for i in range(dim)], rate, window_s, {}, task="multilabel")
    return Predictor(spec, lambda x: embed_windows(net, x, rate), "embedding", model)


def _settings(model: str, hop_s: float | None) -> dict[str, Any]:
    if model not in INDEX_MODELS:
        raise ConfigError(f"model={model!r}: an index holds embeddings of {sorted(INDEX_MODELS)}")
    rate, window_s, dim = INDEX_MODELS[model]
    hop = window_s / 2 if hop_s is None else float(hop_s)
    if not 0 < hop <= window_s:
        raise ConfigError(f"hop_s={hop_s} must be > 0 and at most the window ({window_s} s)")
    return {"model": model, "dim": dim, "sample_rate": rate, "window_s": window_s, "hop_s": hop}


def _keep_embeddings(starts: np.ndarray, emb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.asarray(starts, np.float64), np.asarray(emb, np.float16)


def _embed_units(
    units: Sequence[WorkUnit], embedder: Predictor, hop_s: float, cfg: DetectConfig, on_result: Any
) -> None:
    from chirpkit.detection.units import run_units

    run_units(units, embedder, hop_s, cfg, threads=cfg.workers, on_result=on_result, collect=_keep_embeddings)


def _dask_embed(unit: dict[str, Any], model: str, hop_s: float, cfg: DetectConfig) -> dict[str, Any]:
    """One file on a Dask worker (the model loaded once per worker process)."""
    embedder = worker_cached(("index-embedder", model), lambda: window_embedder(model))
    out: list[dict[str, Any]] = []
    _embed_units(
        [WorkUnit.from_dict(unit)],
        embedder,
        hop_s,
        cfg.model_copy(update={"workers": 1}),
        lambda u, r: out.append(r),
    )
    if out[0].get("transient"):
        raise RuntimeError(out[0]["failure"])
    return out[0]


def index(
    inputs: Sequence[str | os.PathLike[str]],
    *,
    out: str | os.PathLike[str],
    model: str = BIRDNET_EMBEDDING,
    hop_s: float | None = None,
    batch_size: int = 32,
    workers: int = 2,
    engine: str = "local",
    scheduler: Any = None,
    progress: bool = True,
) -> IndexResult:
    """Embed every window of ``inputs`` into the index folder ``out`` (made, or grown).

    Args:
        inputs: files, folders (recursive), glob patterns, URLs or ``@list.txt``, as ``detect``.
        out: the index folder (see :mod:`chirpkit.similarity.db`); an existing one must have
            been built with the same model and hop.
        model: the embedding model (``birdnet-v2.4``: BirdNET V2.4, 1,024-d, 3 s at 48 kHz).
        hop_s: seconds between window starts (default half a window); a shorter hop finds calls
            that straddle windows at the cost of more windows.
        batch_size: windows per model call.
        workers: decode threads (local) or worker processes of a local Dask cluster.
        engine: ``local`` or ``dask`` (``scheduler``: None for a local cluster, an address, a
            cluster object or a client).

    Returns:
        An :class:`IndexResult`; files that failed are also written to ``out/failures.csv``.

    Raises:
        DataError: no audio among ``inputs``.
        ConfigError: an unknown model, a bad hop, or an index built with other settings.
    """
    if engine not in ("local", "dask"):
        raise ConfigError(f"engine={engine!r} must be 'local' or 'dask'")
    if workers < 1 or batch_size < 1:
        raise ConfigError(f"workers={workers} and batch_size={batch_size} must be >= 1")
    settings = _settings(model, hop_s)
    try:  # before any embedding work, not after it
        import usearch  # noqa: F401
    except ImportError as exc:
        raise ConfigError("the index's search graph needs usearch: pip install 'chirpkit[search]'") from exc
    t0 = time.perf_counter()
    units, failed = _index_units(inputs, model, settings)
    cfg = DetectConfig(batch_size=batch_size, workers=workers)
    with EmbeddingIndex.create(out, settings) as db:
        for f in failed:  # unreachable before any decoding: listed with the rest
            db.add_failure(f["file"], "", f["reason"], 1)
        done = db.done_keys()
        todo = [u for u in units if u.key not in done]
        skipped = len(units) - len(todo)
        if skipped:
            log.info("index: %d of %d file(s) already indexed, %d to embed", skipped, len(units), len(todo))
        bar = tqdm(total=len(todo), desc=f"index ({engine})", unit="file", disable=not progress)
        recorder = _Recorder(db, bar, failed)
        with interruptible():
            try:
                if engine == "dask":
                    results = map_on_dask(
                        _dask_embed_item,
                        [(u.to_dict(), model, settings["hop_s"], cfg) for u in todo],
                        key=lambda item: str(item[0]["key"]),
                        on_error=lambda item, exc: {
                            "failure": f"failed on the cluster: {type(exc).__name__}: {exc}",
                            "key": item[0]["key"],
                        },
                        scheduler=scheduler,
                        workers=workers,
                    )
                    by_key = {u.key: u for u in todo}
                    for res in results:
                        recorder(by_key[res.pop("key")], res)
                elif todo:
                    _embed_units(todo, window_embedder(model), settings["hop_s"], cfg, recorder)
            finally:
                bar.close()
        graph_added = db.update_graph(progress=progress)
        write_csv(Path(out) / "failures.csv", db.failures(), index=False)
        result = IndexResult(
            root=Path(out),
            files=len(db.files()),
            windows=len(db),
            embedded=recorder.embedded,
            skipped=skipped,
            failed=failed,
            graph_added=graph_added,
            audio_s=round(recorder.audio_s, 3),
            wall_s=round(time.perf_counter() - t0, 3),
        )
    log.info(
        "index: %d file(s) embedded, %d skipped as indexed, %d failed; %s holds %d window(s) of %d file(s)",
        result.embedded,
        skipped,
        len(failed),
        out,
        result.windows,
        result.files,
    )
    return result


def _index_units(
    inputs: Sequence[str | os.PathLike[str]], model: str, settings: dict[str, Any]
) -> tuple[list[WorkUnit], list[dict[str, str]]]:
    """One work unit per recording of ``inputs`` (local paths made absolute, so the index finds
    them from anywhere), and the inputs that cannot be read (``file``, ``reason``)."""
    sources, problems = resolve_sources(inputs)
    if not sources:
        raise DataError(f"no audio files found in {[str(i) for i in inputs]}")
    sources = [s if is_url(s) else str(Path(s).resolve()) for s in sources]
    units, unreachable = plan_units(
        sources,
        model_identity=model,
        sample_rate=settings["sample_rate"],
        window_s=settings["window_s"],
        hop_s=settings["hop_s"],
        block_s=60.0,
        shard_s=None,
    )
    return units, [{"file": p["file"], "reason": p["reason"]} for p in [*problems, *unreachable]]


class _Recorder:
    """Writes each embedded recording (or its failure) into the index as it arrives, and counts."""

    def __init__(self, db: EmbeddingIndex, bar: Any, failed: list[dict[str, str]]) -> None:
        self.db, self.bar, self.failed = db, bar, failed
        self.audio_s = 0.0
        self.embedded = 0

    def __call__(self, unit: WorkUnit, result: dict[str, Any]) -> None:
        if "cands" in result and not len(result["cands"][0]):
            result = {"failure": "no window with finite embeddings"}
        if "cands" in result:
            starts, emb = result["cands"]
            self.db.add_file(
                unit.file, unit.key, starts, emb, result["stats"]["audio_s"], _native_rate(unit.file)
            )
            self.audio_s += result["stats"]["audio_s"]
            self.embedded += 1
        else:
            self.db.add_failure(unit.file, unit.key, result["failure"], 1)
            self.failed.append({"file": unit.file, "reason": result["failure"]})
            log.warning("index: skipped %s: %s", unit.file, result["failure"])
        self.bar.update()


def _native_rate(source: str) -> int | None:
    try:
        return probe(source).sample_rate
    except Exception:  # the rate is a fact for query checks; the embeddings are already made
        return None


def _dask_embed_item(item: tuple[dict[str, Any], str, float, DetectConfig]) -> dict[str, Any]:
    unit, model, hop_s, cfg = item
    return {**_dask_embed(unit, model, hop_s, cfg), "key": unit["key"]}
