"""Detection over generated long recordings with known call times; events, formats, resume,
thresholds, scoring and exports."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from chirpkit.config import DetectConfig
from chirpkit.data.annotations import read_annotations
from chirpkit.detection.events import merge_events, score_detections
from chirpkit.detection.job import detect
from tests.conftest import TINY_SR, tone, write

CALLS = [(2.0, "low", 800), (6.0, "high", 5000), (9.5, "mid", 2500), (14.0, "low", 800)]


def _scape(path: Path, calls: list[tuple[float, str, int]], seconds: float = 18.0, sr: int = 22050) -> Path:
    y = (0.01 * np.random.default_rng(0).standard_normal(int(sr * seconds))).astype(np.float32)
    for t, _, f in calls:
        y[int(t * sr) : int((t + 1.0) * sr)] += tone(f, 1.0, sr, amp=0.4)
    return write(path, y, sr)


@pytest.fixture
def scapes(tmp_path: Path) -> list[Path]:
    a = _scape(tmp_path / "audio" / "scape_a.wav", CALLS)
    b = _scape(tmp_path / "audio" / "scape_b.flac", [(4.0, "mid", 2500)], seconds=9.0)
    bad = tmp_path / "audio" / "corrupt.wav"
    bad.write_bytes(b"RIFF not audio at all")
    return [a, b, bad]


def test_detections_events_and_formats(tiny_run: Path, scapes: list[Path], tmp_path: Path) -> None:
    cfg = DetectConfig(hop_s=0.25, min_score=0.6, formats=["csv", "parquet", "raven", "audacity"])
    table = detect(tiny_run, [tmp_path / "audio"], out=tmp_path / "det", config=cfg, progress=False)
    out = tmp_path / "det"
    assert list(table.columns) == ["file", "start_s", "end_s", "label", "score"]
    events = pd.read_csv(out / "events.csv")
    a_events = events[events["file"].str.endswith("scape_a.wav")]
    for t, label, _ in CALLS:  # every known call lies inside one event of its label
        hit = a_events[
            (a_events["label"] == label) & (a_events["start_s"] <= t + 0.5) & (a_events["end_s"] >= t + 0.5)
        ]
        assert len(hit) == 1, (t, label)
    assert (events["max_score"] >= events["mean_score"]).all() and (events["windows"] >= 1).all()
    assert len(pd.read_parquet(out / "detections.parquet")) == len(table)
    assert pd.read_csv(out / "errors.csv")["file"].str.endswith("corrupt.wav").all()
    raven = read_annotations(
        out / "raven" / "scape_a.chirpkit.selections.txt"
    )  # our own reader reads it back
    assert (
        raven.attrs["format"] == "raven"
        and len(raven) == len(a_events)
        and set(raven["file"]) == {"scape_a.wav"}
    )
    aud = read_annotations(out / "audacity" / "scape_a.labels.txt")
    assert aud.attrs["format"] == "audacity" and len(aud) == len(a_events)
    manifest = pd.read_csv(out / "manifest.csv")
    assert sorted(manifest["status"]) == ["done", "done", "failed"]


def test_a_killed_run_resumes_without_duplicates(
    tiny_run: Path, scapes: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import chirpkit.detection.units as det_mod

    cfg = DetectConfig(hop_s=0.5, min_score=0.6)
    full = detect(tiny_run, scapes[:2], out=tmp_path / "ref", config=cfg, progress=False)
    calls = {"n": 0}
    real = det_mod._candidates

    def dies_on_second_file(*args: object, **kw: object) -> pd.DataFrame:
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # the job is killed while the second file is being written
        return real(*args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(det_mod, "_candidates", dies_on_second_file)
    with pytest.raises(KeyboardInterrupt):
        detect(tiny_run, scapes[:2], out=tmp_path / "det", config=cfg, progress=False)
    assert not (tmp_path / "det" / "detections.csv").exists()  # nothing half-written
    so_far = pd.read_csv(tmp_path / "det" / "manifest.csv")  # how far the killed run got
    assert so_far[["file", "status"]].values.tolist() == [[str(scapes[0]), "done"]]
    monkeypatch.setattr(det_mod, "_candidates", real)
    again = detect(tiny_run, scapes[:2], out=tmp_path / "det", config=cfg, progress=False)
    summary = json.loads((tmp_path / "det" / "detect_summary.json").read_text())
    assert summary["reused"] == 1 and summary["processed"] == 1
    pd.testing.assert_frame_equal(again.reset_index(drop=True), full.reset_index(drop=True))
    assert not again.duplicated().any()
    # a new threshold needs no new inference: every file is reused
    stricter = detect(
        tiny_run,
        scapes[:2],
        out=tmp_path / "det",
        config=DetectConfig(hop_s=0.5, min_score=0.95),
        progress=False,
    )
    assert json.loads((tmp_path / "det" / "detect_summary.json").read_text())["processed"] == 0
    assert len(stricter) <= len(again) and (stricter["score"] >= 0.95).all()


def test_thresholds_from_evaluate_are_applied(tiny_run: Path, scapes: list[Path], tmp_path: Path) -> None:
    import shutil

    from chirpkit.evaluation.report import evaluate

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("checkpoints"))
    m = evaluate(run, split="test", thresholds="precision=0.9", progress=False)
    saved = json.loads((run / "thresholds.json").read_text())
    assert saved["rule"] == "precision=0.9" and set(saved["classes"]) == {"high", "low", "mid"}
    assert saved["split"] == "val"
    assert all(v["precision"] is None or v["precision"] >= 0.9 for v in saved["classes"].values())
    assert "thresholds" in m and (run / "thresholds.csv").is_file()
    detect(run, scapes[:1], out=tmp_path / "det", config=DetectConfig(hop_s=0.5), progress=False)
    assert json.loads((tmp_path / "det" / "detect_summary.json").read_text())["thresholds"] == "per class"
    detect(
        run,
        scapes[:1],
        out=tmp_path / "det2",
        config=DetectConfig(hop_s=0.5, thresholds="none"),
        progress=False,
    )
    assert json.loads((tmp_path / "det2" / "detect_summary.json").read_text())["thresholds"] == "min_score"


def test_choose_thresholds_known_answers() -> None:
    from chirpkit.evaluation.thresholds import choose_thresholds

    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.4, 0.3, 0.2, 0.1])
    probs = np.stack([scores, 1 - scores], axis=1)
    y = np.array([0, 0, 1, 0, 0, 1, 1, 1])  # class 0 at 0.9, 0.8, 0.6, 0.4
    t = choose_thresholds(probs, y, ["a", "b"], "precision=1.0").set_index("class")
    assert t.loc["a", "threshold"] == pytest.approx(0.8) and t.loc["a", "recall"] == pytest.approx(0.5)
    t = choose_thresholds(probs, y, ["a", "b"], "recall=1.0").set_index("class")
    assert t.loc["a", "threshold"] == pytest.approx(0.4) and t.loc["a", "precision"] == pytest.approx(4 / 5)
    t = choose_thresholds(probs, np.zeros(8, dtype=int), ["a", "b"], "f1").set_index("class")
    assert t.loc["b", "support"] == 0 and not t.loc["b", "reachable"]


def test_merge_and_score_known_answers(tmp_path: Path) -> None:
    det = pd.DataFrame(
        {
            "file": ["/x/r1.mp3"] * 5,
            "start_s": [0.0, 1.5, 3.0, 10.0, 20.0],
            "end_s": [3.0, 4.5, 6.0, 13.0, 23.0],
            "label": ["a", "a", "a", "a", "b"],
            "score": [0.6, 0.9, 0.7, 0.8, 0.9],
        }
    )
    ev = merge_events(det)
    assert ev[["start_s", "end_s", "label", "windows"]].values.tolist() == [
        [0.0, 6.0, "a", 3],
        [10.0, 13.0, "a", 1],
        [20.0, 23.0, "b", 1],
    ]
    assert ev.iloc[0]["max_score"] == 0.9 and ev.iloc[0]["mean_score"] == pytest.approx(0.7333, abs=1e-3)
    ann = tmp_path / "ann.csv"  # boxes on r1.wav (stem match with r1.mp3); one a missed at 30 s
    ann.write_text(
        "Filename,Start Time (s),End Time (s),Species eBird Code\n"
        "r1.wav,2.0,2.5,a\nr1.wav,12.8,13.5,a\nr1.wav,30.0,31.0,a\nr1.wav,21.0,21.0,b\n"
    )
    s = score_detections(ev, ann, rule="overlap", tolerance_s=0.5).set_index("class")
    assert s.loc["a", ["tp", "fp", "fn"]].tolist() == [2, 0, 1]
    assert s.loc["all", "precision"] == 1.0 and s.loc["all", "recall"] == pytest.approx(3 / 4)
    s = score_detections(ev, ann, rule="onset", tolerance_s=0.5).set_index("class")
    assert s.loc["a", "tp"] == 0  # no event starts within 0.5 s of an annotation start
    s = score_detections(ev, ann, rule="iou", min_iou=0.07).set_index("class")
    assert (
        s.loc["a", "tp"] == 1
    )  # IoU([0, 6], [2, 2.5]) = 0.083 passes, IoU([10, 13], [12.8, 13.5]) = 0.057 not
    assert s.loc["b", "tp"] == 1  # a point annotation has no IoU: it matches the event that holds it


def test_score_any_matching_and_only_scanned_recordings(tmp_path: Path) -> None:
    # one merged event over three dense calls, and two windows on one call
    det = pd.DataFrame(
        {
            "file": ["/x/r1.flac", "/x/r1.flac", "/x/r1.flac"],
            "start_s": [0.0, 20.0, 21.0],
            "end_s": [9.0, 23.0, 24.0],
            "label": ["a", "a", "a"],
            "score": [0.9, 0.8, 0.7],
        }
    )
    ann = tmp_path / "ann.csv"
    ann.write_text(
        "Filename,Start Time (s),End Time (s),Species eBird Code\n"
        "r1.wav,1,2,a\nr1.wav,4,5,a\nr1.wav,7,8,a\nr1.wav,22,22.5,a\nr2.wav,1,2,a\n"
    )
    one = score_detections(det, ann, tolerance_s=0.0, recordings=["r1.flac"]).set_index("class")
    assert one.loc["a", ["annotations", "tp", "fp", "fn"]].tolist() == [4, 2, 1, 2]
    anym = score_detections(det, ann, tolerance_s=0.0, matching="any", recordings=["r1.flac"])
    assert anym.set_index("class").loc["a", ["tp", "fp", "fn", "precision", "recall"]].tolist() == [
        4,
        0,
        0,
        1.0,
        1.0,
    ]
    # a detect output folder: its manifest says which recordings were scanned (r2 was not)
    (tmp_path / "d").mkdir()
    det.to_csv(tmp_path / "d" / "detections.csv", index=False)
    pd.DataFrame({"file": ["/x/r1.flac"], "status": ["done"], "part": ["k"]}).to_csv(
        tmp_path / "d" / "manifest.csv", index=False
    )
    scoped = score_detections(tmp_path / "d" / "detections.csv", ann, tolerance_s=0.0).set_index("class")
    assert scoped.loc["a", "annotations"] == 4
    assert score_detections(det, ann, tolerance_s=0.0).set_index("class").loc["a", "annotations"] == 5
    with pytest.raises(ValueError, match="matching"):
        score_detections(det, ann, matching="many")


@pytest.mark.parametrize("fmt,suffix", [("onnx", ".onnx"), ("torchscript", ".ts")])
def test_export_matches_pytorch_and_detects_the_same(
    tiny_run: Path, scapes: list[Path], tmp_path: Path, fmt: str, suffix: str
) -> None:
    pytest.importorskip("onnxruntime")
    from chirpkit.models.export import export

    info = export(tiny_run, format=fmt, out=tmp_path / f"model{suffix}")
    assert info["max_abs_diff"] < 1e-4 and Path(info["path"]).is_file()
    cfg = DetectConfig(hop_s=0.5, min_score=0.6)
    ref = detect(tiny_run, scapes[:1], out=tmp_path / "ref", config=cfg, progress=False)
    got = detect(tmp_path / f"model{suffix}", scapes[:1], out=tmp_path / "got", config=cfg, progress=False)
    assert got[["start_s", "label"]].values.tolist() == ref[["start_s", "label"]].values.tolist()
    np.testing.assert_allclose(got["score"], ref["score"], atol=1e-4)


def test_sample_rate_mismatch_is_resampled(tiny_run: Path, tmp_path: Path) -> None:
    p = _scape(tmp_path / "hi.wav", [(1.0, "high", 5000)], seconds=4.0, sr=48000)
    t = detect(
        tiny_run, [p], out=tmp_path / "d", config=DetectConfig(hop_s=0.5, min_score=0.6), progress=False
    )
    assert TINY_SR != 48000 and (t["label"] == "high").any()
