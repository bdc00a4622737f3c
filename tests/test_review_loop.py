"""calibrate (known logistic answers, too few reviews, apply), export, ingest --reviews (groups,
splits, labels) and the CLI verbs of the review loop."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from chirpkit.cli import main
from chirpkit.data.catalog import read_catalog
from chirpkit.data.reviews import ingest_reviews
from chirpkit.errors import ConfigError, DataError
from chirpkit.evaluation.thresholds import load_thresholds
from chirpkit.review.calibrate import _choose, calibrate, fit_correctness
from chirpkit.review.db import ReviewDB
from chirpkit.review.export import export_reviews
from chirpkit.review.items import load_detect_folder
from tests.review_helpers import make_detect_folder, truth


@pytest.fixture
def det(tmp_path: Path) -> Path:
    return make_detect_folder(tmp_path)


def review_all(det: Path, *, limit: int | None = None) -> pd.DataFrame:
    folder = load_detect_folder(det)
    db = ReviewDB(folder.db_path)
    for id_, r in list(folder.items.iterrows())[:limit]:
        ok = truth(r["file"], r["start_s"], r["end_s"], r["label"])
        db.add({"id": id_, **r.to_dict()}, "accept" if ok else "reject", reviewer="t")
    return folder.items


def test_the_logistic_fit_recovers_a_known_curve() -> None:
    rng = np.random.default_rng(0)
    s = rng.uniform(0.05, 0.999, 20000)
    logit = np.log(s / (1 - s))
    correct = rng.random(s.size) < 1 / (1 + np.exp(-(-2 + 1.5 * logit)))
    fit = fit_correctness(s, correct)
    assert fit is not None
    assert fit.intercept == pytest.approx(-2, abs=0.1) and fit.coef == pytest.approx(1.5, abs=0.1)
    z = (math.log(9) + 2) / 1.5  # P(correct) = 0.9 there
    assert fit.score_at(0.9) == pytest.approx(1 / (1 + math.exp(-z)), abs=0.01)
    assert fit.predict(np.array([fit.score_at(0.9)]))[0] == pytest.approx(0.9)
    assert fit_correctness(s[:10], np.ones(10, bool)) is None  # one outcome only: no fit
    sep = fit_correctness(np.r_[np.full(20, 0.6), np.full(20, 0.95)], np.r_[np.zeros(20), np.ones(20)] > 0)
    assert sep is not None and sep.predict(np.array([0.95]))[0] > 0.95  # separable: finite and sharp


def test_threshold_choice_has_known_answers() -> None:
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    p = np.array([1.0, 1.0, 0.7, 0.1])  # expected precision at each cut: 1, 1, 0.9, 0.7
    assert _choose(scores, p, "precision", 0.9)[:2] == pytest.approx((0.7, 0.9))
    assert _choose(scores, p, "precision", 0.95)[0] == 0.8
    thr, _, rec, kept = _choose(scores, p, "recall", 0.7)  # total 2.8: 2/2.8 = 0.71 at 0.8
    assert (thr, kept) == (0.8, 2) and rec == pytest.approx(2 / 2.8)
    assert _choose(scores, p * 0.5, "precision", 0.9)[0] == 1.01  # unreachable


def test_calibrate_writes_thresholds_detect_reads(det: Path) -> None:
    review_all(det)
    table = calibrate(det, precision=0.9, min_reviews=10)
    out = det / "calibration"
    assert set(table["class"]) == {"high", "low"}
    assert (table["status"] == "ok").all() and (table["coef"] > 0).all()
    thresholds = load_thresholds(out)  # the reader detect uses
    assert thresholds is not None and set(thresholds) == {"high", "low"}
    for r in table.to_dict("records"):
        assert 0.5 <= r["threshold"] <= 1.0 and r["precision"] >= 0.9 - 1e-9
        assert r["threshold"] == thresholds[r["class"]]
        assert r["reviewed_precision"] == pytest.approx(r["precision"])  # all reviewed: the verdicts count
    assert (out / "reliability_high.png").read_bytes()[:4] == b"\x89PNG"
    assert pd.read_csv(out / "thresholds.csv").shape[0] == 2
    assert json.loads((out / "thresholds.json").read_text())["rule"] == "precision=0.9"
    recall = calibrate(det, recall=0.99, min_reviews=10, plots=False).set_index("class")
    assert (recall["recall"] >= 0.99 - 1e-9).all()
    assert (recall["threshold"] <= table.set_index("class")["threshold"]).all()  # more recall: lower
    assert (recall["kept"] >= table.set_index("class")["kept"]).all()


def test_a_stratified_sample_estimates_the_precision_of_all_detections(det: Path) -> None:
    from chirpkit.review.queue import review_queue

    folder = load_detect_folder(det)
    db = ReviewDB(folder.db_path)
    sample = review_queue(folder.items, db.current(), strategy="stratified", bins=5, per_bin=6, seed=0)
    for id_, r in sample.iterrows():  # 30 of ~70 per class
        ok = truth(r["file"], r["start_s"], r["end_s"], r["label"])
        db.add({"id": id_, **r.to_dict()}, "accept" if ok else "reject")
    table = calibrate(det, precision=0.8, min_reviews=10, plots=False)
    for r in table.to_dict("records"):
        cls = folder.items[folder.items["label"] == r["class"]]
        kept = cls[cls["score"] >= r["threshold"]]
        right = [truth(k["file"], k["start_s"], k["end_s"], k["label"]) for k in kept.to_dict("records")]
        assert r["kept"] == len(kept) and len(kept) < len(cls)
        assert abs(r["precision"] - float(np.mean(right))) < 0.15, (r, np.mean(right))


def test_too_few_reviews_are_reported_not_guessed(det: Path, caplog: pytest.LogCaptureFixture) -> None:
    items = load_detect_folder(det).items
    db = ReviewDB(det / "reviews.db")
    for id_, r in items[items["label"] == "low"].head(8).iterrows():
        db.add({"id": id_, **r.to_dict()}, "accept")
    table = calibrate(det, min_reviews=20).set_index("class")
    assert "too few reviews (8 < 20)" in table.loc["low", "status"]
    assert math.isnan(table.loc["low", "threshold"]) and math.isnan(table.loc["high", "threshold"])
    assert load_thresholds(det / "calibration") == {}  # nothing guessed for detect
    assert "too few reviews" in caplog.text
    table = calibrate(det, min_reviews=8).set_index("class")
    assert table.loc["low", "status"].startswith("needs two right and two wrong")


def test_calibrate_errors_and_apply(det: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="reviews"):
        calibrate(det)
    review_all(det)
    with pytest.raises(ConfigError, match="not both"):
        calibrate(det, precision=0.9, recall=0.9)
    with pytest.raises(ConfigError):
        calibrate(det, precision=1.5)
    with pytest.raises(DataError, match="run"):
        calibrate(det, apply=True, min_reviews=10)  # detect_summary names a run that is not here
    run = tmp_path / "run"
    run.mkdir()
    (run / "thresholds.json").write_text('{"rule": "f1", "split": "val", "classes": {}}')
    calibrate(det, apply=True, run=run, min_reviews=10, plots=False)
    assert set(load_thresholds(run) or {}) == {"high", "low"}
    assert json.loads((run / "thresholds.before-calibrate.json").read_text())["rule"] == "f1"


def test_export_csv_and_raven(det: Path, tmp_path: Path) -> None:
    items = review_all(det, limit=30)
    db = ReviewDB(det / "reviews.db")
    first = items.index[0]
    db.add({"id": first, **items.iloc[0].to_dict()}, "relabel", label="buzz")
    table = export_reviews(det, tmp_path / "out" / "reviews.csv")
    csv = pd.read_csv(tmp_path / "out" / "reviews.csv", keep_default_na=False)
    assert len(csv) == len(table) == 30
    assert csv.set_index("id").loc[first, "label"] == "buzz"
    assert (csv.loc[csv["verdict"] == "reject", "label"] == "").all()
    raven = sorted((tmp_path / "out" / "raven-accepted").glob("*.selections.txt"))
    right = csv[csv["verdict"] != "reject"]
    assert sum(len(pd.read_csv(p, sep="\t")) for p in raven) == len(right)
    hist = export_reviews(det, tmp_path / "hist.csv", history=True)
    assert len(hist) == 31


def test_reviews_become_catalog_rows_that_keep_groups_and_splits(det: Path, tmp_path: Path) -> None:
    items = review_all(det)
    db = ReviewDB(det / "reviews.db")
    id_, r = next(iter(items.iterrows()))
    db.add({"id": id_, **r.to_dict()}, "relabel", label="buzz")
    audio = det.parent / "audio"
    base = pd.DataFrame(
        {
            "source": [str(audio / "rec_a.wav"), str(audio / "other.wav")],
            "start_s": [0.0, 0.0],
            "end_s": [1.0, 1.0],
            "label": ["low", "high"],
            "group": ["siteA", "siteB"],
            "split": ["test", "train"],
        }
    )
    cat = ingest_reviews(det, merge_with=base, out=tmp_path / "merged.parquet", background_label="noise")
    rev = cat[cat["annotation"].astype(str).str.startswith("review:")]
    assert len(rev) == len(items) and len(cat) == len(items) + 2
    a = rev[rev["source"].str.endswith("rec_a.wav")]
    b = rev[rev["source"].str.endswith("rec_b.wav")]
    assert set(a["group"]) == {"siteA"} and set(a["split"]) == {"test"}  # the base's group and split
    assert b["group"].nunique() == 1 and set(b["split"]) == {"train"}  # a new recording: its own group
    assert not set(b["group"]) & set(base["group"])
    verdict = rev["annotation"].str.split(":").str[1]
    assert set(rev.loc[verdict == "reject", "label"]) == {"noise"}
    assert (rev.loc[verdict == "accept", "label"].isin(["low", "high"])).all()
    assert rev.loc[rev["annotation"].str.endswith(id_), "label"].item() == "buzz"
    assert (rev["sample_rate"] == 16000).all() and (rev["duration_s"] == 20).all()
    back = read_catalog(tmp_path / "merged.parquet")
    assert len(back) == len(cat) and (tmp_path / "merged.csv").is_file()


def test_reviews_alone_and_their_errors(det: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no reviews"):
        ingest_reviews(det)
    items = load_detect_folder(det).items
    db = ReviewDB(det / "reviews.db")
    one = items[items["label"] == "low"].head(3)
    for id_, r in one.iterrows():
        db.add({"id": id_, **r.to_dict()}, "accept")
    with pytest.raises(DataError, match="one class only"):
        ingest_reviews(det)
    id_, r = next(iter(items[items["label"] == "high"].iterrows()))
    db.add({"id": id_, **r.to_dict()}, "reject")
    cat = ingest_reviews(det, group_by="folder")
    assert sorted(cat["label"]) == ["low", "low", "low", "noise"] and cat["group"].nunique() == 1


def test_cli_calibrate_export_and_ingest_reviews(
    det: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    review_all(det)
    assert main(["calibrate", str(det), "--precision", "0.85", "--min-reviews", "10"]) == 0
    assert "thresholds →" in capsys.readouterr().out and (det / "calibration" / "thresholds.json").is_file()
    with pytest.raises(SystemExit):  # argparse: one target only
        main(["calibrate", str(det), "--precision", "0.9", "--recall", "0.5"])
    capsys.readouterr()
    assert main(["review", str(det), "--export", str(tmp_path / "r.csv")]) == 0
    assert "review(s) →" in capsys.readouterr().out and (tmp_path / "r.csv").is_file()
    out = tmp_path / "cat.parquet"
    assert main(["ingest", "--reviews", str(det), "--out", str(out)]) == 0
    assert "from reviews" in capsys.readouterr().out and read_catalog(out)["label"].nunique() == 3
    assert main(["ingest", "somewhere/", "--reviews", str(det), "--out", str(out)]) == 2
    assert "--merge-with" in capsys.readouterr().err
    assert main(["calibrate", str(tmp_path / "nope")]) == 2


def test_cli_review_refuses_an_open_host_without_token_and_a_busy_port(
    det: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import socket

    assert main(["review", str(det), "--host", "0.0.0.0", "--no-browser"]) == 2
    assert "--token" in capsys.readouterr().err
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert main(["review", str(det), "--port", str(port), "--no-browser"]) == 2
        assert "pick another --port" in capsys.readouterr().err


def test_help_lists_the_loop_without_importing_the_web_stack() -> None:
    import subprocess
    import sys

    code = (
        "import sys; from chirpkit.cli import build_parser; p = build_parser(); "
        "h = p.format_help(); print('review' in h and 'calibrate' in h, "
        "any(m in sys.modules for m in ('starlette', 'uvicorn', 'torch', 'sklearn')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["True", "False"]


def test_cli_review_serves_the_folder(det: Path) -> None:
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    pytest.importorskip("uvicorn")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "chirpkit.cli", "review", str(det), "--port", str(port), "--no-browser"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/session", timeout=5) as r:
                    session = json.loads(r.read())
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, (
                    proc.stdout.read() if proc.stdout else ""
                )
                time.sleep(0.2)
        assert session["detections"] > 100 and session["strategy"] == "stratified"
    finally:
        proc.terminate()
        out = proc.communicate(timeout=20)[0]
    assert f"open http://127.0.0.1:{port}/" in out


def test_the_loop_on_a_real_detect_folder(tiny_run: Path, tmp_path: Path) -> None:
    """detect (a trained tiny model) → review over the API → calibrate → ingest --reviews → prepare."""
    pytest.importorskip("starlette")
    from starlette.testclient import TestClient

    from chirpkit.config import DetectConfig
    from chirpkit.data.store import prepare
    from chirpkit.detection.job import detect
    from chirpkit.review.server import create_app
    from tests.conftest import TINY_SR, tiny_config, tone, write

    rng = np.random.default_rng(0)
    y = 0.01 * rng.standard_normal(TINY_SR * 12).astype(np.float32)
    calls = [(1.0, "low", 800.0), (4.0, "high", 5000.0), (8.0, "mid", 2500.0)]
    for t, _, f in calls:
        y[int(t * TINY_SR) : int((t + 1) * TINY_SR)] += tone(f, 1.0, TINY_SR, amp=0.4)
    rec = write(tmp_path / "scape.wav", y, TINY_SR)
    out = tmp_path / "det"
    detect(tiny_run, [rec], out=out, config=DetectConfig(hop_s=0.5, min_score=0.2, top_k=2), progress=False)

    client = TestClient(create_app(out, token="t"), base_url="http://127.0.0.1")
    session = client.get("/api/session").json()
    assert session["run"] == str(tiny_run) and set(session["label_choices"]) >= {"low", "mid", "high"}
    items = client.get("/api/items", params={"limit": 1000}).json()["items"]
    assert len(items) >= 6
    for it in items:
        right = any(lab == it["label"] and it["start_s"] < t + 1 and it["end_s"] > t for t, lab, _ in calls)
        r = client.post(
            "/api/reviews",
            json={"id": it["id"], "verdict": "accept" if right else "reject"},
            headers={"X-Chirpkit-Token": "t"},
        )
        assert r.status_code == 201
    calibrate(out, min_reviews=4, plots=False)  # runs on real detect output; thresholds where the data allow
    merged = ingest_reviews(out, merge_with=tiny_run / "catalog.parquet")
    rev = merged[merged["annotation"].astype(str).str.startswith("review:")]
    assert len(rev) == len(items) and set(rev["split"]) == {"train"}  # a new recording: train, whole
    assert (rev["source"] == str(rec.resolve())).all() and rev["group"].nunique() == 1
    store = prepare(merged, out=tmp_path / "store", config=tiny_config().audio, progress=False)
    windows = store.index[store.index["source"] == str(rec.resolve())]
    assert len(windows) == len(rev)  # one 1 s window per reviewed detection


def test_recordings_are_found_from_any_folder_and_after_a_move(
    tiny_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """detect run with relative paths records where it ran: review finds the recordings from
    another folder, and after the recordings and the detections were moved together."""
    import shutil

    from chirpkit.config import DetectConfig
    from chirpkit.detection.job import detect
    from chirpkit.review.items import load_detect_folder
    from tests.conftest import tone, write

    project = tmp_path / "project"
    sr = 16000
    y = (0.005 * np.random.default_rng(0).standard_normal(sr * 6)).astype(np.float32)
    y[2 * sr : 3 * sr] += tone(5000, 1.0, sr)
    write(project / "audio" / "site1.wav", y, sr)
    monkeypatch.chdir(project)
    detect(tiny_run, ["audio/site1.wav"], out="out/det", config=DetectConfig(min_score=0.0), progress=False)
    assert (pd.read_csv(project / "out" / "det" / "detections.csv")["file"] == "audio/site1.wav").all()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    det = load_detect_folder(project / "out" / "det")
    assert det.paths["audio/site1.wav"] == (project / "audio" / "site1.wav").resolve()
    moved = tmp_path / "moved"
    shutil.move(str(project), moved)
    det = load_detect_folder(moved / "out" / "det")
    assert det.paths["audio/site1.wav"] == (moved / "audio" / "site1.wav").resolve()


def test_calibration_is_computed_then_written(det: Path, tmp_path: Path) -> None:
    """calibration() writes nothing; write() gives calibrate's files, the same thresholds."""
    from chirpkit.review.calibrate import calibration

    review_all(det)
    before = sorted(p.name for p in det.iterdir())
    result = calibration(det, precision=0.9, min_reviews=10)
    assert sorted(p.name for p in det.iterdir()) == before
    result.write(tmp_path / "a")
    table = calibrate(det, precision=0.9, min_reviews=10, out=tmp_path / "b")
    pd.testing.assert_frame_equal(result.table, table)
    for name in ("thresholds.json", "thresholds.csv", "reliability_high.png"):
        assert (tmp_path / "a" / name).is_file() and (tmp_path / "b" / name).is_file()
    assert (
        json.loads((tmp_path / "a" / "thresholds.json").read_text())["classes"]
        == json.loads((tmp_path / "b" / "thresholds.json").read_text())["classes"]
    )
