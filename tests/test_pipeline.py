"""End to end through the Python API on a tiny generated dataset (one shared trained run)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from chirpkit.config import DetectConfig
from chirpkit.detection.job import detect, resolve_inputs, sliding_windows
from chirpkit.errors import DataError, MissingPathError
from chirpkit.evaluation.report import evaluate
from chirpkit.models import load_model
from chirpkit.training.loop import train
from tests.conftest import TINY_CLASSES, TINY_SR, tiny_config, tone, write


def test_fit_writes_a_complete_run(tiny_run: Path) -> None:
    for name in (
        "config.yaml",
        "environment.json",
        "data.json",
        "model.pt",
        "train_summary.json",
        "metrics.json",
        "catalog.parquet",
        "catalog.split_counts.csv",
        "catalog.split_counts.json",
        "checkpoints/best.ckpt",
        "checkpoints/last.ckpt",
        "logs/metrics.csv",
    ):
        assert (tiny_run / name).is_file(), name
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    assert {"macro_f1", "weighted_f1", "accuracy"} <= set(metrics)
    assert metrics["macro_f1"] >= 0.9  # three pure tones: easy
    env = json.loads((tiny_run / "environment.json").read_text())
    assert "torch" in env["packages"] and env["python"]
    data = json.loads((tiny_run / "data.json").read_text())
    assert data["classes"] == sorted(TINY_CLASSES)


def test_model_spec_travels_with_the_model(tiny_run: Path) -> None:
    net = load_model(tiny_run)
    spec = net.spec
    assert spec.class_names == sorted(TINY_CLASSES)
    assert spec.sample_rate == TINY_SR and spec.window_s == 1.0 and spec.features["n_mels"] == 32
    assert spec.chirpkit_version
    blob = torch.load(tiny_run / "model.pt", weights_only=True)  # plain data: safe to load
    assert blob["spec"]["architecture"] == "small_cnn"
    probs = torch.softmax(net(torch.from_numpy(tone(5000, 1.0, TINY_SR))[None]), 1)
    assert spec.class_names[int(probs.argmax())] == "high"


def test_evaluate_outputs(tiny_run: Path) -> None:
    m = evaluate(tiny_run, split="val", progress=False)
    out = tiny_run / "eval-val"
    for name in (
        "metrics.json",
        "per_class.csv",
        "report.txt",
        "confusion_matrix.png",
        "confusion_matrix.csv",
        "pred_labels.npy",
        "true_labels.npy",
        "predictions.csv",
    ):
        assert (out / name).is_file(), name
    assert (out / "confusion_matrix.png").read_bytes()[:4] == b"\x89PNG"
    pred, true = np.load(out / "pred_labels.npy"), np.load(out / "true_labels.npy")
    assert pred.shape == true.shape and set(true) <= set(TINY_CLASSES)
    assert m["accuracy"] == pytest.approx(float((pred == true).mean()))
    per_class = pd.read_csv(out / "per_class.csv")
    assert list(per_class["class"]) == sorted(TINY_CLASSES)
    with pytest.raises(DataError, match="no 'nope' windows"):
        evaluate(tiny_run, split="nope", progress=False)


def test_detect_finds_calls_at_known_times(tiny_run: Path, tmp_path: Path) -> None:
    sr = 22050  # not the model's rate: detect resamples
    y = (0.005 * np.random.default_rng(0).standard_normal(sr * 12)).astype(np.float32)
    calls = [(2.0, "low", 800), (6.0, "high", 5000), (9.5, "mid", 2500)]
    for t, _, f in calls:
        y[int(t * sr) : int((t + 1.0) * sr)] += tone(f, 1.0, sr)
    long = write(tmp_path / "scape.wav", y, sr)
    bad = tmp_path / "corrupt.wav"
    bad.write_bytes(b"RIFF garbage")
    table = detect(
        tiny_run,
        [long, bad],
        out=tmp_path / "det",
        config=DetectConfig(hop_s=0.25, min_score=0.6),
        progress=False,
    )
    assert list(table.columns) == ["file", "start_s", "end_s", "label", "score"]
    for t, label, _ in calls:
        hits = table[(table["label"] == label) & (table["start_s"] <= t + 0.5) & (table["end_s"] >= t + 0.5)]
        assert len(hits), f"no {label} detection around {t} s"
    errors = pd.read_csv(tmp_path / "det" / "errors.csv")
    assert errors["file"].tolist() == [str(bad)]
    on_disk = pd.read_csv(tmp_path / "det" / "detections.csv")
    assert len(on_disk) == len(table)
    summary = json.loads((tmp_path / "det" / "detect_summary.json").read_text())
    assert summary["files"] == 2 and summary["failed"] == 1


def test_sliding_windows_cover_the_file(tmp_path: Path) -> None:
    sr = 8000
    y = np.arange(int(7.3 * sr), dtype=np.float32) / (10 * sr)
    p = write(tmp_path / "ramp.wav", y, sr, subtype="FLOAT")
    wins = list(sliding_windows(p, sample_rate=sr, window_s=2.0, hop_s=1.5, block_s=0.3))
    starts = [s for s, _ in wins]
    assert starts == pytest.approx([0.0, 1.5, 3.0, 4.5, 5.3])
    np.testing.assert_allclose(wins[-1][1], y[-2 * sr :], atol=1e-6)
    np.testing.assert_allclose(wins[1][1], y[int(1.5 * sr) : int(3.5 * sr)], atol=1e-6)
    short = write(tmp_path / "s.wav", y[:sr], sr, subtype="FLOAT")
    ((s0, w0),) = list(sliding_windows(short, sample_rate=sr, window_s=2.0, hop_s=1.0))
    assert s0 == 0.0 and w0.size == 2 * sr and np.all(w0[sr:] == 0)


def test_resolve_inputs(tmp_path: Path) -> None:
    a = write(tmp_path / "x" / "a.wav", tone(500, 0.1, 8000), 8000)
    b = write(tmp_path / "x" / "sub" / "b.flac", tone(500, 0.1, 8000), 8000)
    (tmp_path / "x" / "notes.txt").write_text("hi")
    lst = tmp_path / "list.txt"
    lst.write_text(f"{a}\n# comment\n\n")
    assert resolve_inputs([tmp_path / "x"]) == [a, b]
    assert resolve_inputs([str(tmp_path / "x" / "**" / "*.flac")]) == [b]
    assert resolve_inputs([f"@{lst}", a]) == [a]
    with pytest.raises(MissingPathError):
        resolve_inputs([tmp_path / "nope.wav"])


def test_train_needs_a_split_and_resume_without_a_checkpoint_starts_over(
    tmp_path: Path, tiny_run: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from chirpkit.data.store import prepare

    store = json.loads((tiny_run / "data.json").read_text())["store"]
    s = train(
        store, out=tmp_path / "fresh", config=tiny_config(**{"train.epochs": 1}), resume=True, progress=False
    )
    assert s["epochs_run"] == 1 and (tmp_path / "fresh" / "model.pt").is_file()
    assert "nothing to resume" in caplog.text
    unsplit = pd.read_parquet(tiny_run / "catalog.parquet").drop(columns="split")
    st = prepare(unsplit, out=tmp_path / "s2", config=tiny_config().audio, progress=False)
    with pytest.raises(DataError, match="no split column"):
        train(st, out=tmp_path / "r2", config=tiny_config(), progress=False)


def test_resume_continues_from_last_checkpoint(tiny_run: Path, tmp_path: Path) -> None:
    import shutil

    run = tmp_path / "resumed"
    shutil.copytree(tiny_run, run)
    done = int(pd.read_csv(run / "logs" / "metrics.csv")["epoch"].max()) + 1
    store = json.loads((tiny_run / "data.json").read_text())["store"]
    summary = train(
        store,
        out=run,
        config=tiny_config(**{"train.epochs": done + 2}),
        resume=True,
        progress=False,
    )
    assert summary["epochs_run"] == done + 2
    log = pd.read_csv(run / "logs" / "metrics.csv")
    assert sorted(log["epoch"].unique()) == list(range(done + 2))  # history kept, two epochs added


def test_cached_features_train_and_are_reused(tiny_run: Path, tmp_path: Path) -> None:
    from chirpkit.errors import ConfigError

    store = json.loads((tiny_run / "data.json").read_text())["store"]
    off = {f"augment.{k}": 0.0 for k in ("time_shift_p", "gain_p", "noise_p")}
    cfg = tiny_config(**{"train.cache_features": True, "train.epochs": 30, **off})
    s = train(store, out=tmp_path / "cached", config=cfg, progress=False)
    caches = list((Path(store) / "features").glob("*.npy"))
    assert len(caches) == 1 and s["best_val_macro_f1"] >= 0.9
    mtime = caches[0].stat().st_mtime_ns
    train(
        store,
        out=tmp_path / "cached2",
        config=tiny_config(**{"train.cache_features": True, "train.epochs": 1, **off}),
        progress=False,
    )
    assert caches[0].stat().st_mtime_ns == mtime  # computed once, reused
    m = evaluate(tmp_path / "cached", split="test", progress=False)  # the saved model takes waveforms
    assert m["macro_f1"] >= 0.9
    with pytest.raises(ConfigError, match="cache_features needs the waveform"):
        train(store, out=tmp_path / "x", config=tiny_config(**{"train.cache_features": True}), progress=False)


def test_early_stopping_on_a_validation_f1_plateau(tiny_run: Path, tmp_path: Path) -> None:
    store = json.loads((tiny_run / "data.json").read_text())["store"]
    s = train(store, out=tmp_path / "es", config=tiny_config(**{"train.patience": 2}), progress=False)
    log = pd.read_csv(tmp_path / "es" / "logs" / "metrics.csv").dropna(subset=["val_macro_f1"])
    f1 = log.groupby("epoch")["val_macro_f1"].max().to_numpy()
    best = int(np.argmax(f1 >= f1.max() - 1e-4))  # first epoch at the plateau
    assert s["epochs_run"] < 40  # stopped before train.epochs
    assert len(f1) == best + 3  # the best epoch, then `patience` epochs without a gain
