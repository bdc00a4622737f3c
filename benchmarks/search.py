"""Search by example: index build speed, query time and recall at a million windows, and precision on
real recordings.

    python benchmarks/search.py [--data ../shared/data] [--out bench-out/search] [--windows 1000000]

1. **Build speed** (one run): ``chirpkit.index`` over the 11 Screaming Piha MP3s (584 s, 16–44.1 kHz)
   against *embed alone* — the same windows decoded with :func:`chirpkit.detection.sliding_windows`
   and embedded by BirdNET in batches of 32, nothing stored — measured in the same run. The ratio
   is the cost of the index's machinery (planning, parts, SQLite, the graph).
2. **Query time and recall** over ``--windows`` synthetic 1,024-d windows (BirdNET's dimension),
   stored through the index's own writer and graph: vectors of a 32-d latent space mapped
   through a random ReLU layer (an embedding's rank is far below its width; ``--latent`` sets it).
   50 queries (stored windows plus noise): the time of one query through the approximate graph
   (median of 50, re-ranking included), of the exact scan (mean, 50 queries in one scan), and
   recall@100 of the approximate search against the exact one. The synthetic index is kept in
   ``--out`` and reused by a later run (which then reports no build times).
3. **Precision on real calls**: ``screaming-piha`` indexed at hop 1.5 s; one annotated call as
   the query (the first of ScreamingPiha2, a 44.1 kHz file); precision at 10, 50 and 100 of the
   results (one per call, the query's own window left out) against the manual annotations: a
   window counts when it overlaps an annotated call by min(0.5 s, the call's length). The chance
   level is the share of all indexed windows that hold a call.
4. **The loop on real calls**: those 100 results reviewed by the annotations (a result holding a
   call accepted, the others rejected), ``train_head`` on their embeddings, then the archive scored
   from the index (``detect_in_index``) and, for the time, from the audio (``detect``); window AP
   and ROC-AUC on the windows nobody reviewed, against the similarity to the query alone.

Skips part 1 and 3 (exit 0) when the data folder is absent.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def _embed_alone(files: list[Path]) -> tuple[int, float]:
    from chirpkit.detection.units import sliding_windows
    from chirpkit.models.embeddings import embedder

    model = embedder("birdnet-v2.4")
    t0 = time.perf_counter()
    n = 0
    for f in files:
        batch: list[np.ndarray] = []
        for _, w in sliding_windows(f, sample_rate=48000, window_s=3.0, hop_s=1.5):
            batch.append(w)
            if len(batch) == 32:
                model.embed(np.stack(batch))
                n, batch = n + 32, []
        if batch:
            model.embed(np.stack(batch))
            n += len(batch)
    return n, time.perf_counter() - t0


def build_speed(piha: Path, out: Path) -> dict[str, float]:
    import chirpkit

    files = sorted((piha / "TESTmp3").glob("*.mp3"))
    windows, bare = _embed_alone(files)
    t0 = time.perf_counter()
    res = chirpkit.index(files, out=out / "piha.idx", progress=False)
    wall = time.perf_counter() - t0
    assert res.windows == windows, (res.windows, windows)
    return {
        "windows": windows,
        "audio_s": round(res.audio_s, 1),
        "embed_alone_s": round(bare, 2),
        "index_s": round(wall, 2),
        "ratio": round(wall / bare, 3),
    }


def synthetic_index(out: Path, n: int, latent: int, seed: int) -> tuple[float | None, float | None]:
    """Writes the index (or reuses one a previous run left: then no build times)."""
    from chirpkit.similarity.db import EmbeddingIndex

    rng = np.random.default_rng(seed)
    w = rng.standard_normal((latent, 1024)).astype(np.float32)
    settings = {"model": "birdnet-v2.4", "dim": 1024, "sample_rate": 48000, "window_s": 3.0, "hop_s": 1.5}
    t0 = time.perf_counter()
    reused = (out / "ann.usearch").is_file()
    with EmbeddingIndex.create(out, settings) as db:
        per_file = 10_000
        for f in range(len(db) // per_file, n // per_file):
            z = rng.standard_normal((per_file, latent)).astype(np.float32)
            x = np.maximum(z @ w, 0) + 0.05 * np.abs(rng.standard_normal((per_file, 1024), dtype=np.float32))
            db.add_file(
                f"/synthetic/{f:05d}.wav", f"k{f}", np.arange(per_file) * 1.5, x, per_file * 1.5, 48000
            )
        write_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        db.update_graph(progress=True)
        graph_s = time.perf_counter() - t0
    return (None, None) if reused else (write_s, graph_s)


def query_time_and_recall(out: Path, n: int, latent: int, seed: int) -> dict[str, float]:
    from chirpkit.similarity.db import EmbeddingIndex

    db_path = out / f"synthetic-{n}-{latent}.idx"
    write_s, graph_s = synthetic_index(db_path, n, latent, seed)
    rng = np.random.default_rng(seed + 1)
    with EmbeddingIndex.open(db_path) as db:
        assert len(db) >= n, len(db)
        q = db.vectors(rng.choice(len(db), 50, replace=False))
        q = q + 0.02 * rng.standard_normal(q.shape).astype(np.float32)
        db.search(q[:1], k=100, exact=False)  # opens the graph (memory-mapped)
        times, approx = [], []
        for row in q:
            t0 = time.perf_counter()
            approx.append(db.search(row[None], k=100, exact=False).ids[0])
            times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        exact = db.search(q, k=100, exact=True).ids
        exact_s = (time.perf_counter() - t0) / len(q)
    recall = float(np.mean([len(set(a) & set(e)) / 100 for a, e in zip(approx, exact, strict=True)]))
    return {
        "windows": n,
        "latent_dim": latent,
        "write_s": None if write_s is None else round(write_s, 1),
        "graph_build_s": None if graph_s is None else round(graph_s, 1),
        "approximate_query_s_median": round(float(np.median(times)), 4),
        "approximate_query_s_max": round(float(np.max(times)), 4),
        "exact_query_s_mean_batched": round(exact_s, 4),
        "recall_at_100": round(recall, 4),
    }


def _holds_call(found: pd.DataFrame, calls: pd.DataFrame) -> np.ndarray:
    out = np.zeros(len(found), bool)
    for i, (f, s, e) in enumerate(zip(found["stem"], found["start_s"], found["end_s"], strict=True)):
        c = calls[calls["stem"] == f]
        overlap = np.minimum(e, c["end_s"]) - np.maximum(s, c["start_s"])
        out[i] = bool((overlap >= np.minimum(0.5, c["end_s"] - c["start_s"])).any())
    return out


def piha_precision(piha: Path, out: Path) -> dict[str, float]:
    import chirpkit
    from chirpkit.similarity.db import EmbeddingIndex
    from chirpkit.similarity.query import Query

    table = pd.read_csv(piha / "ScreamingPiha_Manual_Labels.csv")
    calls = pd.DataFrame(
        {
            "stem": table["IN FILE"].map(lambda f: Path(str(f)).stem),
            "start_s": table["OFFSET"].astype(float),
            "end_s": table["OFFSET"].astype(float) + table["DURATION"].astype(float),
        }
    )
    first = calls[calls["stem"] == "ScreamingPiha2"].sort_values("start_s").iloc[0]
    query_file = piha / "TESTmp3" / "ScreamingPiha2.mp3"
    res = chirpkit.search(
        out / "piha.idx",
        [Query(path=str(query_file), start_s=first["start_s"], end_s=first["end_s"], label="piha")],
        top=101,
        out=out / "piha-hits",
    )
    found = res.table.assign(stem=res.table["file"].map(lambda f: Path(f).stem))
    own = (
        (found["stem"] == "ScreamingPiha2")
        & (found["start_s"] <= first["start_s"])
        & (found["end_s"] >= first["end_s"])
    )
    found = found[~own].head(100)
    hit = _holds_call(found, calls)
    with EmbeddingIndex.open(out / "piha.idx") as db:
        every = db.windows(np.arange(len(db)))
        x = db.vectors(np.arange(len(db)))
    every = every.assign(stem=every["file"].map(lambda f: Path(f).stem))
    chance = float(_holds_call(every, calls).mean())
    # the real embeddings' effective dimension (participation ratio of the covariance spectrum)
    ev = np.clip(np.linalg.eigvalsh(np.cov(x.T)), 0, None)
    return {
        "calls": len(calls),
        "windows": len(every),
        "query": f"ScreamingPiha2 {first['start_s']:.2f}-{first['end_s']:.2f} s",
        "precision_at_10": round(float(hit[:10].mean()), 3),
        "precision_at_50": round(float(hit[:50].mean()), 3),
        "precision_at_100": round(float(hit[:100].mean()), 3),
        "chance": round(chance, 3),
        "embedding_participation_ratio": round(float(ev.sum() ** 2 / (ev**2).sum()), 1),
    }


def piha_loop(piha: Path, out: Path) -> dict[str, float]:
    """The loop on real calls: the 100 results of the one-call query reviewed (the manual
    annotations play the reviewer: a result that holds a call is accepted, the others rejected),
    a head trained on their embeddings (``train_head``), the archive scored from the index
    (``detect_in_index``) and, for the time, from the audio (``detect``). Window AP and ROC-AUC on
    the windows nobody reviewed, against the cosine similarity to the query as the baseline."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    import chirpkit
    from chirpkit.config import DetectConfig
    from chirpkit.similarity.db import EmbeddingIndex

    table = pd.read_csv(piha / "ScreamingPiha_Manual_Labels.csv")
    calls = pd.DataFrame(
        {
            "stem": table["IN FILE"].map(lambda f: Path(str(f)).stem),
            "start_s": table["OFFSET"].astype(float),
            "end_s": table["OFFSET"].astype(float) + table["DURATION"].astype(float),
        }
    )
    hits = pd.read_csv(out / "piha-hits" / "detections.csv")
    hits = hits.assign(stem=hits["file"].map(lambda f: Path(f).stem))
    reviewed = hits.assign(label=np.where(_holds_call(hits, calls), "piha", "noise"))
    rows = reviewed.rename(columns={"file": "source"})[["source", "start_s", "end_s", "label"]]
    head = chirpkit.train_head(out / "piha.idx", rows, out=out / "piha-head")
    t0 = time.perf_counter()
    scored = chirpkit.detect_in_index(
        out / "piha-head", out / "piha.idx", out=out / "piha-det-index", min_score=0.0
    )
    index_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    chirpkit.detect(
        out / "piha-head",
        sorted((piha / "TESTmp3").glob("*.mp3")),
        out=out / "piha-det-audio",
        config=DetectConfig(min_score=0.0, hop_s=1.5),
        progress=False,
        resume=False,
    )
    audio_s = time.perf_counter() - t0
    with EmbeddingIndex.open(out / "piha.idx") as db:
        every = db.windows(np.arange(len(db)))
        x = db.vectors(every["id"])
    every = every.assign(stem=every["file"].map(lambda f: Path(f).stem))
    truth = _holds_call(every, calls)
    key = list(zip(every["file"], every["start_s"].round(3), strict=True))
    seen = set(zip(hits["file"], hits["start_s"].round(3), strict=True))
    fresh = np.array([k not in seen for k in key])
    head_score = scored.set_index(["file", scored["start_s"].round(3)])["score"].reindex(key).to_numpy()
    q = x[np.argmax([k == (hits["file"].iloc[0], round(hits["start_s"].iloc[0], 3)) for k in key])]
    cos = (x / np.linalg.norm(x, axis=1, keepdims=True)) @ (q / np.linalg.norm(q))
    return {
        "reviewed": len(hits),
        "accepted": int((reviewed["label"] == "piha").sum()),
        "unreviewed_windows": int(fresh.sum()),
        "head_window_ap": round(float(average_precision_score(truth[fresh], head_score[fresh])), 3),
        "head_window_roc_auc": round(float(roc_auc_score(truth[fresh], head_score[fresh])), 3),
        "similarity_window_ap": round(float(average_precision_score(truth[fresh], cos[fresh])), 3),
        "similarity_window_roc_auc": round(float(roc_auc_score(truth[fresh], cos[fresh])), 3),
        "detect_from_index_s": round(index_s, 2),
        "detect_from_audio_s": round(audio_s, 2),
        "positives": head.positives,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--out", type=Path, default=Path("bench-out/search"))
    ap.add_argument("--windows", type=int, default=1_000_000)
    ap.add_argument("--latent", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip", action="append", default=[], choices=["build", "scale", "piha"])
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="chirpkit: %(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    piha = args.data / "screaming-piha"
    results: dict[str, object] = {}
    if piha.is_dir() and "build" not in args.skip:
        results["build_speed"] = build_speed(piha, args.out)
        print("build speed:", json.dumps(results["build_speed"]), flush=True)
    if piha.is_dir() and "piha" not in args.skip:
        if not (args.out / "piha.idx").is_dir():
            import chirpkit

            chirpkit.index(
                sorted((piha / "TESTmp3").glob("*.mp3")), out=args.out / "piha.idx", progress=False
            )
        results["piha"] = piha_precision(piha, args.out)
        print("piha:", json.dumps(results["piha"]), flush=True)
        results["piha_loop"] = piha_loop(piha, args.out)
        print("piha loop:", json.dumps(results["piha_loop"]), flush=True)
    if "scale" not in args.skip:
        results["scale"] = query_time_and_recall(args.out, args.windows, args.latent, args.seed)
        print("scale:", json.dumps(results["scale"]), flush=True)
    (args.out / "search.json").write_text(json.dumps(results, indent=2))
    if not piha.is_dir():
        print(f"skipped the real-data parts: {piha} not found")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
