"""The field's measures: window AP / ROC-AUC / top-1 with bootstrap intervals (evaluate and
score-detections), event F1 at IoU and with a collar, PSDS, false positives per hour, thresholds
at a target precision, and the dense score matrix of detect. Known answers first, then agreement
with scikit-learn, sed_eval and sed_scores_eval on the same inputs."""

from __future__ import annotations

import importlib.util
import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from chirpkit.detection.events import score_detections
from chirpkit.detection.scoring import detection_report, read_score_matrix, window_truth
from chirpkit.errors import ConfigError, DataError
from chirpkit.metrics import bootstrap_ci, curve_scores, ranking_scores
from tests.conftest import tone, write

HAS_SSE = importlib.util.find_spec("sed_scores_eval") is not None


def _sed_eval_ok() -> bool:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import sed_eval  # noqa: F401
    except Exception:
        return False
    return True


# --- window measures: known answers and scikit-learn -----------------------------------------------


def test_ranking_known_answers(rng: np.random.Generator) -> None:
    y = rng.integers(0, 3, 400)
    perfect = np.eye(3)[y] * 0.9 + 0.05
    r = ranking_scores(y, perfect, ["a", "b", "c"])
    assert r["cmap"] == 1.0 and r["macro_roc_auc"] == 1.0 and r["top1"] == 1.0
    # constant scores: AP = prevalence, ROC-AUC 0.5
    flat = np.full((400, 3), 0.5)
    r = ranking_scores(y, flat)
    prevalence = np.bincount(y, minlength=3) / len(y)
    assert r["ap"] == pytest.approx(prevalence.tolist(), abs=1e-12)
    assert r["macro_roc_auc"] == pytest.approx(0.5, abs=1e-12)
    # shuffled scores: AP near prevalence, ROC-AUC near 0.5
    shuffled = rng.random((20000, 2))
    yb = rng.random((20000, 2)) < [0.1, 0.3]
    r = ranking_scores(yb, shuffled)
    assert r["ap"] == pytest.approx([0.1, 0.3], abs=0.02)
    assert r["macro_roc_auc"] == pytest.approx(0.5, abs=0.02)


def test_classes_without_positives_are_skipped_and_named() -> None:
    y = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 0]], dtype=bool)
    s = np.array([[0.9, 0.2, 0.1], [0.1, 0.8, 0.3], [0.7, 0.6, 0.2], [0.2, 0.1, 0.9]])
    r = ranking_scores(y, s, ["a", "b", "never"])
    assert r["skipped_ap"] == ["never"] and r["skipped_roc_auc"] == ["never"]
    assert r["classes_scored_ap"] == 2 and np.isnan(r["ap"][2])
    assert r["top1"] == 1.0  # the unlabelled last row does not count


def test_fast_curves_equal_scikit_learn_with_ties_and_weights(rng: np.random.Generator) -> None:
    for _ in range(30):
        n = int(rng.integers(5, 300))
        y = rng.random(n) < rng.uniform(0.05, 0.9)
        if not y.any() or y.all():
            continue
        s = np.round(rng.random(n), int(rng.integers(1, 3)))  # many ties
        w = rng.integers(0, 4, n).astype(float)
        if not (w[y] > 0).any() or not (w[~y] > 0).any():
            continue
        ap, auc = curve_scores(y, s, w)
        assert ap == pytest.approx(average_precision_score(y, s, sample_weight=w), abs=1e-9)
        assert auc == pytest.approx(roc_auc_score(y, s, sample_weight=w), abs=1e-9)


def test_bootstrap_is_seeded_and_draws_whole_groups(rng: np.random.Generator) -> None:
    groups = np.repeat(np.arange(10), 20)
    seen: list[np.ndarray] = []

    def stat(w: np.ndarray) -> dict[str, float]:
        seen.append(w)
        return {"mean": float(np.average(np.arange(len(w)), weights=w))}

    a = bootstrap_ci(stat, groups, n_boot=50, seed=3)
    b = bootstrap_ci(
        lambda w: {"mean": float(np.average(np.arange(len(w)), weights=w))}, groups, n_boot=50, seed=3
    )
    assert a == b and a["mean"][0] < a["mean"][1]
    for w in seen:  # rows of one group always share one weight
        assert (w.reshape(10, 20) == w.reshape(10, 20)[:, :1]).all()
    assert sum(w.reshape(10, 20)[:, 0].sum() for w in seen[:1]) == 10
    with pytest.raises(ValueError, match="n_boot=0"):
        bootstrap_ci(stat, groups, n_boot=0)


# --- score-detections ----------------------------------------------------------------------------


def _scene(rng: np.random.Generator) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Three 60 s recordings (3 s windows, hop 1.5 s), calls of a and b in two, none in bg."""
    rows = [
        {
            "file": f"{f}.wav",
            "start_s": k * 1.5,
            "end_s": k * 1.5 + 3,
            "a": 0.3 * rng.random(),
            "b": 0.3 * rng.random(),
        }
        for f in ("r1", "r2", "bg")
        for k in range(39)
    ]
    m = pd.DataFrame(rows)
    ann = pd.DataFrame(
        [("r1.wav", 10, 11, "a"), ("r1.wav", 30, 31.5, "b"), ("r2.wav", 5, 6, "a"), ("r2.wav", 44, 44, "b")],
        columns=["file", "start_s", "end_s", "label"],
    )
    for f, s, e, lab in ann.itertuples(index=False):
        inside = (m["start_s"] <= s) & (m["end_s"] >= s) if s == e else (m["start_s"] < e) & (m["end_s"] > s)
        hit = (m["file"] == f) & inside
        m.loc[hit, lab] = 0.9
    return m, ann


def _detections(m: pd.DataFrame, threshold: float) -> pd.DataFrame:
    long = m.melt(id_vars=["file", "start_s", "end_s"], var_name="label", value_name="score")
    return long[long["score"] >= threshold].reset_index(drop=True)


def test_window_truth_rule() -> None:
    windows = pd.DataFrame({"file": ["x.wav"] * 3, "start_s": [0.0, 1.5, 3.0], "end_s": [3.0, 4.5, 6.0]})
    ann = pd.DataFrame({"_stem": ["x", "x"], "label": ["a", "b"], "start_s": [2.8, 4.0], "end_s": [3.4, 4.0]})
    t = window_truth(windows, ann, ["a", "b"], min_overlap_s=0.5)
    # a (0.6 s): windows overlapping it by >= 0.5 s; b (a point at 4.0 s): windows holding it
    assert t[:, 0].tolist() == [False, True, False] and t[:, 1].tolist() == [False, True, True]
    t = window_truth(windows, ann, ["a", "b"], min_overlap_s=0.1)
    assert t[:, 0].tolist() == [True, True, True]


def test_detection_report_known_answers(rng: np.random.Generator, tmp_path: Path) -> None:
    m, ann = _scene(rng)
    det = pd.concat(
        [
            _detections(m, 0.5),
            pd.DataFrame([{"file": "bg.wav", "start_s": 3.0, "end_s": 6.0, "label": "a", "score": 0.7}]),
        ]
    )
    rep = detection_report(det, ann, scores=m, n_boot=100, out=tmp_path / "rep")
    s = rep.summary
    assert s["window"]["cmap"] == 1.0 and s["window"]["macro_roc_auc"] == 1.0 and s["window"]["top1"] == 1.0
    assert s["recordings"] == 3 and s["annotations"] == 4
    # one false detection on bg.wav (60 s long by the score matrix): 60 per hour
    assert s["false_positives"]["recordings"] == 1 and s["false_positives"]["per_hour"] == pytest.approx(60.0)
    # the 3 s windows that overlap a 1 s call: IoU 1/3 >= 0.3 for the window that holds it
    pc = rep.per_class.set_index("class")
    assert pc.loc["all", "tp"] == 4 and pc.loc["all", "recall"] == 1.0
    assert pc.loc["a", "fp_per_hour"] == pytest.approx(60.0) and pc.loc["b", "fp_per_hour"] == 0.0
    assert set(s["ci"]) >= {"event_f1", "window_cmap", "window_macro_roc_auc"}
    if HAS_SSE:  # the point annotation (10 ms to sed_scores_eval) fails the detection criterion
        assert 0 < s["psds"]["psds2"] < 1.0 and (tmp_path / "rep" / "psd_roc.png").is_file()
    thresholds = pd.read_csv(tmp_path / "rep" / "thresholds.csv")
    assert thresholds["reachable"].all() and (thresholds["window_precision"] >= 0.9).all()
    for name in ("per_class.csv", "summary.json", "pr_curves.png"):
        assert (tmp_path / "rep" / name).is_file(), name
    assert json.loads((tmp_path / "rep" / "summary.json").read_text())["window"]["windows"] == len(m)
    # the same report without the matrix: events and false positives only; bg.wav has no duration
    own = score_detections(det, ann, rule="onset", tolerance_s=0.5)
    by_rule = detection_report(det, ann, n_boot=0, rule="onset", tolerance_s=0.5).rule_table
    pd.testing.assert_frame_equal(by_rule, own)  # one reading of the inputs serves both tables
    bare = detection_report(det, ann, n_boot=0, background=["bg.wav"])
    assert "window" not in bare.summary and bare.summary["events"]["f1"] == s["events"]["f1"]


def test_detection_report_bad_input(rng: np.random.Generator, tmp_path: Path) -> None:
    m, ann = _scene(rng)
    det = _detections(m, 0.5)
    with pytest.raises(ConfigError, match="min_iou=0"):
        detection_report(det, ann, min_iou=0)
    with pytest.raises(ConfigError, match="target_precision=2"):
        detection_report(det, ann, target_precision=2)
    bad = m.copy()
    bad.loc[3, "a"] = np.nan
    with pytest.raises(DataError, match="row 3: score of 'a'"):
        read_score_matrix(bad)
    with pytest.raises(DataError, match=r"lacks column\(s\) \['end_s'\]"):
        read_score_matrix(m.drop(columns="end_s"))
    with pytest.raises(FileNotFoundError, match="--formats scores"):
        read_score_matrix(tmp_path / "none.parquet")


@pytest.mark.skipif(not _sed_eval_ok(), reason="sed_eval not importable")
def test_collar_f1_is_sed_evals_and_equals_chirpkits_matching(rng: np.random.Generator) -> None:
    m, ann = _scene(rng)
    ann = ann.assign(end_s=ann["start_s"] + 3.0)  # boxes as long as the windows
    det = _detections(m, 0.5)
    rep = detection_report(det, ann, n_boot=0, collar_s=0.5)
    assert rep.summary["collar"]["source"].startswith("sed_eval")
    own = score_detections(det, ann, rule="onset-offset", tolerance_s=0.5).set_index("class")
    assert rep.summary["collar"]["micro_f1"] == pytest.approx(own.loc["all", "f1"], abs=1e-6)


@pytest.mark.skipif(not HAS_SSE, reason="sed_scores_eval not installed")
def test_optimal_matching_agrees_with_sed_scores_eval(rng: np.random.Generator) -> None:
    """sed_scores_eval's collar-based F1 of thresholded frames = chirpkit's onset-offset rule on the
    same events (one-to-one optimal matching)."""
    from chirpkit.detection.scoring import _frames, _ground_truth, _sed_scores_eval

    sse = _sed_scores_eval()
    m, ann = _scene(rng)
    ann = ann.assign(end_s=ann["start_s"] + rng.uniform(0.5, 4.0, len(ann)), _stem=ann["file"].str[:-4])
    m[["a", "b"]] += 0.3 * rng.random((len(m), 2))
    frames = _frames(m, ["a", "b"])
    gt = _ground_truth(ann, list(frames))
    for threshold in (0.35, 0.5, 0.8):
        f, *_ = sse.collar_based.fscore(
            frames, gt, threshold, onset_collar=0.5, offset_collar=0.5, offset_collar_rate=0.5
        )
        events = sse.io.scores_to_event_list(frames, threshold)
        det = pd.DataFrame(
            [(f"{stem}.wav", on, off, lab) for stem, evs in events.items() for on, off, lab in evs],
            columns=["file", "start_s", "end_s", "label"],
        )
        truth = pd.DataFrame(
            [(f"{stem}.wav", on, off, lab) for stem, evs in gt.items() for on, off, lab in evs],
            columns=["file", "start_s", "end_s", "label"],
        )
        own = score_detections(
            det, truth, rule="onset-offset", tolerance_s=0.5, recordings=[f"{s}.wav" for s in frames]
        ).set_index("class")
        for c in ("a", "b"):
            assert own.loc[c, "f1"] == pytest.approx(f[c], abs=1e-6), (threshold, c)


@pytest.mark.skipif(not HAS_SSE, reason="sed_scores_eval not installed")
def test_psds_of_a_perfect_frame_detector_is_one() -> None:
    # windows = events exactly (hop = window): scenario 1's strict intersections are met too
    rows = []
    for k in range(20):
        rows.append(
            {
                "file": "x.wav",
                "start_s": 2.0 * k,
                "end_s": 2.0 * k + 2,
                "a": float(k in (3, 9)),
                "b": float(k == 14),
            }
        )
    m = pd.DataFrame(rows)
    ann = pd.DataFrame(
        [("x.wav", 6, 8, "a"), ("x.wav", 18, 20, "a"), ("x.wav", 28, 30, "b")],
        columns=["file", "start_s", "end_s", "label"],
    )
    rep = detection_report(_detections(m, 0.5), ann, scores=m, n_boot=0)
    assert rep.summary["psds"]["psds1"] == pytest.approx(1.0) and rep.summary["psds"][
        "psds2"
    ] == pytest.approx(1.0)
    assert rep.summary["events"]["f1"] == 1.0


# --- detect writes the dense matrix; evaluate reports the ranking measures -----------------------------


def test_detect_score_matrix_and_cli_report(
    tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from chirpkit.cli import main
    from chirpkit.config import DetectConfig
    from chirpkit.detection.job import detect

    sr = 16000
    y = (0.005 * np.random.default_rng(0).standard_normal(sr * 10)).astype(np.float32)
    y[2 * sr : 3 * sr] += tone(5000, 1.0, sr)
    rec = write(tmp_path / "rec.wav", y, sr)
    quiet = write(
        tmp_path / "quiet.wav",
        (0.005 * np.random.default_rng(1).standard_normal(sr * 10)).astype(np.float32),
        sr,
    )
    out = tmp_path / "det"
    table = detect(
        tiny_run,
        [rec, quiet],
        out=out,
        config=DetectConfig(hop_s=0.5, formats=["csv", "scores"]),
        progress=False,
    )
    mat = pd.read_parquet(out / "scores.parquet")
    classes = [c for c in mat.columns if c not in ("file", "start_s", "end_s")]
    assert classes == ["high", "low", "mid"] and all(mat[c].dtype == np.float16 for c in classes)
    assert (
        len(mat) == json.loads((out / "detect_summary.json").read_text())["windows"]
        if False
        else len(mat) > 30
    )
    # every detection is a cell of the matrix at or above the threshold
    merged = table.merge(mat.melt(id_vars=["file", "start_s", "end_s"], var_name="label", value_name="m"))
    assert len(merged) == len(table) and np.allclose(merged["score"], merged["m"], atol=2e-3)
    ann = tmp_path / "ann.csv"
    ann.write_text("Filename,Start Time (s),End Time (s),Species eBird Code\nrec.wav,2,3,high\n")
    argv = [
        "score-detections",
        str(out / "detections.csv"),
        str(ann),
        "--scores",
        str(out / "scores.parquet"),
    ]
    assert main([*argv, "--report", str(tmp_path / "rep"), "--n-boot", "50"]) == 0
    printed = capsys.readouterr().out
    assert "macro AP" in printed and "false positives on 1 background recording" in printed
    summary = json.loads((tmp_path / "rep" / "summary.json").read_text())
    assert summary["window"]["windows"] == len(mat) and summary["window"]["skipped_ap"] == ["low", "mid"]
    # a rerun asking for the matrix redoes parts that kept only the best labels
    again = tmp_path / "det2"
    detect(tiny_run, [rec], out=again, config=DetectConfig(hop_s=0.5), progress=False)
    assert not (again / "scores.parquet").exists()
    detect(tiny_run, [rec], out=again, config=DetectConfig(hop_s=0.5, formats=["scores"]), progress=False)
    assert pd.read_parquet(again / "scores.parquet")[classes].notna().all().all()


def test_evaluate_reports_ranking_measures_with_intervals(tiny_run: Path, tmp_path: Path) -> None:
    from chirpkit.evaluation.report import evaluate

    m = evaluate(tiny_run, split="val", out=tmp_path / "ev", n_boot=200, progress=False)
    for key in ("cmap", "macro_roc_auc", "top1"):
        assert 0 <= m[key] <= 1 and 0 <= m["window"][key] <= 1
    assert m["top1"] == pytest.approx(m["accuracy"])  # single-label: top-1 is accuracy
    lo, hi = m["ci"]["macro_f1"]
    assert lo <= m["macro_f1"] <= hi
    per_class = pd.read_csv(tmp_path / "ev" / "per_class.csv")
    assert {"ap", "roc_auc"} <= set(per_class.columns)
    assert (tmp_path / "ev" / "pr_curves.png").read_bytes()[:4] == b"\x89PNG"
    again = evaluate(tiny_run, split="val", out=tmp_path / "ev2", n_boot=200, progress=False)
    assert again["ci"] == m["ci"]  # seeded


def test_evaluation_is_computed_then_written(tiny_run: Path, tmp_path: Path) -> None:
    """evaluation_report computes and writes nothing; its write() gives evaluate's files, equal."""
    from chirpkit.evaluation.report import evaluate, evaluation_report

    before = sorted(p.name for p in tiny_run.iterdir())
    report = evaluation_report(tiny_run, split="val", n_boot=50, progress=False)
    assert sorted(p.name for p in tiny_run.iterdir()) == before and not (tmp_path / "a").exists()
    assert report.metrics["macro_f1"] == pytest.approx(
        float(report.per_class["f1"][report.per_class["support"] > 0].mean())
    )
    report.write(tmp_path / "a")
    evaluate(tiny_run, split="val", out=tmp_path / "b", n_boot=50, progress=False)
    written = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert written == sorted(p.name for p in (tmp_path / "b").iterdir())
    assert {"metrics.json", "report.txt", "confusion_matrix.png", "predictions.csv"} <= set(written)
    for name in ("metrics.json", "report.txt", "per_class.csv", "predictions.csv", "confusion_matrix.csv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_single_label_examples_under_a_multilabel_model_report_the_argmax() -> None:
    """Clips of one species each, scored by per-species sigmoids: F1 at 0.5 counts a clip whose
    best score is 0.4 as a miss; the argmax figures (what softmax and zero-shot models are scored
    by) count it as found, so the two kinds of model compare."""
    from types import SimpleNamespace

    from chirpkit.evaluation.report import _multilabel_report

    spec = SimpleNamespace(class_names=["a", "b", "c"], architecture="head")
    idx = pd.DataFrame({"row": [0, 1, 2, 3], "labels": [["a"], ["b"], ["c"], ["a"]]})
    probs = np.array([[0.4, 0.1, 0.1], [0.2, 0.9, 0.1], [0.1, 0.3, 0.45], [0.8, 0.1, 0.1]])
    lookup = {"a": 0, "b": 1, "c": 2}
    m = _multilabel_report(spec, SimpleNamespace(root=Path()), idx, probs, lookup, "test").metrics
    assert m["argmax_macro_f1"] == pytest.approx(1.0) and m["argmax_accuracy"] == pytest.approx(1.0)
    assert m["macro_f1"] == pytest.approx((2 / 3 + 1 + 0) / 3)  # c is never >= 0.5; a half found
    two = idx.assign(labels=[["a", "b"], ["b"], ["c"], ["a"]])
    assert (
        "argmax_macro_f1"
        not in _multilabel_report(spec, SimpleNamespace(root=Path()), two, probs, lookup, "test").metrics
    )
