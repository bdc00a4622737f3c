"""One protocol for every model family: layering, the run folder, failures, interrupts, warm starts."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from chirpkit.config import FeatureConfig
from chirpkit.errors import ConfigError, RunError
from chirpkit.models import ModelSpec, build_network, model_info, save_model, warm_start
from chirpkit.training.loop import train
from tests.conftest import tiny_config

ROOT = Path(__file__).resolve().parents[1]

# layers, lowest first: a module may import its own layer and those below, never above
LAYERS = [
    {"errors", "_version", "utils", "_options", "config"},
    # review.db and review.items are the reviews' storage format, which ingest
    # reads like any data
    {"audio", "conditioning", "data", "synth", "metrics", "sources"}
    | {"detection.events", "detection.score_inputs", "evaluation.thresholds", "training.losses"}
    | {"models.taxonomy", "review.db", "review.items"},
    {"features", "augment", "models", "models.embeddings"},
    {"models.inputs", "training.task", "training.datamodule", "training.prior_cv"},
    {"training.trainer", "training.runs", "training.loop", "models.predict"},
    # verbs that live in a lower folder (export and profile read a model, preview a store)
    {"models.export", "models.profile", "augment.preview"},
]


def _layer(module: str) -> int:
    parts = module.split(".")[1:]
    for depth in (2, 1):  # the most specific entry first: "review.db" before "review"
        name = ".".join(parts[:depth])
        for i, names in enumerate(LAYERS):
            if len(parts) >= depth and name in names:
                return i
    return len(LAYERS)  # the verbs: everything else


def _script(name: str) -> types.ModuleType:
    """A module of ``scripts/`` (not a package), loaded from its file."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _graph() -> dict[str, dict[str, str]]:
    mod = _script("import_graph")
    g: dict[str, dict[str, str]] = mod.graph(ROOT / "src" / "chirpkit")
    assert mod.cycles(g) == [], "import cycles (function-level imports count too)"
    return g


def test_imports_have_no_cycles_and_run_downward() -> None:
    upward = [
        f"{m} -> {d}"
        for m, deps in _graph().items()
        for d in deps
        if m != "chirpkit" and _layer(d) > _layer(m)
    ]
    assert upward == []


def test_stage_folders_import_one_way() -> None:
    """At folder level (data, models, training, detection, ...) no two folders import each other."""
    edges = {
        (m.split(".")[1], d.split(".")[1])
        for m, deps in _graph().items()
        for d in deps
        if m.count(".") >= 1 and d.count(".") >= 1 and m.split(".")[1] != d.split(".")[1]
    }
    assert sorted(f"{a} <-> {b}" for a, b in edges if (b, a) in edges and a < b) == []


def test_no_public_function_passes_80_lines_of_code() -> None:
    """Verbs compute in small private phases, then write (``scripts/function_lengths.py``)."""
    mod = _script("function_lengths")
    rows = mod.lengths(ROOT / "src" / "chirpkit")
    assert any(r.where == "data.store:prepare" for r in rows)  # it walked the package
    assert [f"{r.where}: {r.code}" for r in rows if r.public and r.code > 80] == []


def test_nothing_outside_the_registry_branches_on_a_model_name() -> None:
    names = ("birdnet_linear", "birdnet_mlp", "EMBEDDING_MODELS")
    offenders = []
    for path in (ROOT / "src" / "chirpkit").rglob("*.py"):
        if "models" in path.parts:
            continue
        text = path.read_text()
        offenders += [f"{path.name}: {n}" for n in names if n in text]
    assert offenders == []


def _spec(arch: str, classes: list[str]) -> ModelSpec:
    params = {"channels": [8, 16]} if model_info(arch).input == "spectrogram" else {}
    return ModelSpec(arch, classes, 16000, 1.0, FeatureConfig(n_mels=16, n_fft=256).model_dump(), params)


@pytest.mark.parametrize("arch", ["small_cnn", "birdnet_linear"])
def test_warm_start_copies_weights_and_class_rows(arch: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    old_spec = _spec(arch, ["a", "b", "c"])
    old = build_network(old_spec)
    save_model(tmp_path / "old.pt", old, old_spec)
    new_spec = _spec(arch, ["c", "new", "a"])  # reordered, one class gone, one new
    torch.manual_seed(1)
    new = build_network(new_spec)
    fresh = {k: v.clone() for k, v in new.state_dict().items()}
    rep = warm_start(new, new_spec, tmp_path / "old.pt")
    assert rep["new_classes"] == ["new"] and rep["class_rows"] and rep["copied"]
    o, n = old.state_dict(), new.state_dict()
    for name in rep["class_rows"]:  # c ← row 2, a ← row 0, the new row keeps its initialisation
        assert torch.equal(n[name][0], o[name][2]) and torch.equal(n[name][2], o[name][0])
        assert torch.equal(n[name][1], fresh[name][1])
    for name, value in n.items():
        if name not in rep["class_rows"] and value.is_floating_point():
            assert torch.equal(value, o[name]), name
    with pytest.raises(RunError, match="architecture"):
        other = "birdnet_linear" if arch == "small_cnn" else "small_cnn"
        warm_start(build_network(_spec(other, ["a"])), _spec(other, ["a"]), tmp_path / "old.pt")


def _store(tiny_run: Path) -> str:
    return str(json.loads((tiny_run / "data.json").read_text())["store"])


@pytest.mark.parametrize(
    ("override", "error"),
    [({"model.name": "no_such_model"}, "unknown model"), ({"model.params": {"wings": 2}}, "wings")],
)
def test_a_failed_train_leaves_no_run_folder(
    tiny_run: Path, tmp_path: Path, override: dict[str, object], error: str
) -> None:
    with pytest.raises(ConfigError, match=error):
        train(_store(tiny_run), out=tmp_path / "run", config=tiny_config(**override), progress=False)
    assert not (tmp_path / "run").exists()


def test_divergence_stops_training_and_the_run_says_so(tiny_run: Path, tmp_path: Path) -> None:
    from chirpkit.models.predict import load_predictor

    run = tmp_path / "run"
    cfg = tiny_config(**{"train.lr": 1e30, "train.epochs": 3, "train.warmup_epochs": 0})
    with pytest.raises(RunError, match=r"became (nan|inf|-inf|non-finite)|non-finite"):
        train(_store(tiny_run), out=run, config=cfg, progress=False)
    assert json.loads((run / "run.json").read_text())["status"] == "failed"
    assert not (run / "model.pt").exists()
    with pytest.raises(RunError, match="did not finish"):
        load_predictor(run)


@pytest.mark.parametrize("damage", ["truncated", "random", "empty", "other_pickle"])
def test_a_damaged_model_file_is_a_clear_error(tiny_run: Path, tmp_path: Path, damage: str) -> None:
    from chirpkit.models.predict import load_predictor

    path = tmp_path / "model.pt"
    good = (tiny_run / "model.pt").read_bytes()
    data = {
        "truncated": good[: len(good) // 2],
        "random": np.random.default_rng(0).bytes(4096),
        "empty": b"",
    }.get(damage)
    if data is None:
        torch.save({"weights": torch.zeros(3)}, path)
    else:
        path.write_bytes(data)
    with pytest.raises(RunError, match=str(path)):
        load_predictor(path)


def _cli(*args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "chirpkit.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )


def _wait_for(path: Path, proc: subprocess.Popen[str], timeout_s: float = 120) -> None:
    t0 = time.monotonic()
    while not path.exists():
        assert proc.poll() is None, proc.communicate()[0]
        assert time.monotonic() - t0 < timeout_s, f"{path} never appeared"
        time.sleep(0.2)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_train_stops_on_a_signal_and_resumes(tiny_run: Path, tmp_path: Path, sig: signal.Signals) -> None:
    run = tmp_path / "run"
    config = tmp_path / "tiny.yaml"
    config.write_text(tiny_config(**{"train.epochs": 400}).to_yaml())
    proc = _cli("train", _store(tiny_run), "--out", str(run), "--config", str(config), "--no-progress")
    _wait_for(run / "checkpoints" / "last.ckpt", proc)
    time.sleep(0.5)
    t0 = time.monotonic()
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=30)
    assert time.monotonic() - t0 < 10, out
    assert proc.returncode == 130, out
    assert "interrupted" in out and "Traceback" not in out
    assert json.loads((run / "run.json").read_text())["status"] == "interrupted"
    assert not (run / "model.pt").exists()
    done = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["epoch"]
    s = train(
        _store(tiny_run),
        out=run,
        config=tiny_config(**{"train.epochs": done + 2}),
        resume=True,
        progress=False,
    )
    assert s["epochs_run"] == done + 2 and (run / "model.pt").is_file()
    assert json.loads((run / "run.json").read_text())["status"] == "complete"


def test_a_fresh_train_replaces_an_earlier_run(tiny_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (run / "checkpoints" / "last.ckpt").write_bytes(b"stale")  # must not survive into the new run
    train(_store(tiny_run), out=run, config=tiny_config(**{"train.epochs": 1}), progress=False)
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["epoch"] == 0  # one epoch
    assert json.loads((run / "train_summary.json").read_text())["epochs_run"] == 1


def test_tune_stops_on_ctrl_c_and_resumes(tiny_run: Path, tmp_path: Path) -> None:
    import sqlite3

    from chirpkit.config import SplitConfig
    from chirpkit.data.split import split
    from chirpkit.data.store import prepare
    from chirpkit.training.tuning import tune

    pytest.importorskip("optuna")
    cat = split(tiny_run / "catalog.parquet", config=SplitConfig(folds=2, test_fraction=0.25, min_count=0))
    store = prepare(cat, out=tmp_path / "store", config=tiny_config().audio, progress=False)
    config = tmp_path / "tiny.yaml"
    config.write_text(tiny_config().to_yaml())
    space = tmp_path / "space.yaml"
    space.write_text("train.lr: {low: 0.001, high: 0.005, log: true}\n")
    study = tmp_path / "study"
    args = ["--trials", "50", "--epochs", "2", "--space", str(space), "--config", str(config)]
    proc = _cli("tune", str(store.root), "--out", str(study), *args, "--no-progress")

    def complete() -> int:
        try:
            with sqlite3.connect(study / "study.db") as db:
                return int(db.execute("select count(*) from trials where state='COMPLETE'").fetchone()[0])
        except sqlite3.Error:
            return 0

    t0 = time.monotonic()
    while complete() < 1:
        assert proc.poll() is None, proc.communicate()[0]
        assert time.monotonic() - t0 < 180
        time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 130 and "Traceback" not in out, out
    done = complete()
    space_ = {"train.lr": {"low": 0.001, "high": 0.005, "log": True}}
    s = tune(store, out=study, config=tiny_config(), trials=done + 1, epochs=2, space=space_)
    assert s["completed"] == done + 1  # the interrupted trial did not count; one more ran


def test_training_never_ends_below_the_network_it_started_from(tiny_run: Path, tmp_path: Path) -> None:
    """The starting network (here a warm start from a good run; for birdnet_prior, BirdNET's own
    classifier) is a candidate: training on wrong labels cannot make the saved model worse on
    validation."""
    import copy

    from chirpkit.data.store import Store

    summary = json.loads((tiny_run / "train_summary.json").read_text())
    assert summary["kept"] == "trained"  # from random weights, training wins
    assert summary["val_macro_f1_trained"] >= summary["val_macro_f1_untrained"]
    st = Store(tiny_run / "store")
    wrong = copy.copy(st)
    idx = st.index.copy()
    rotate = {"low": "mid", "mid": "high", "high": "low"}
    is_train = idx["split"] == "train"
    idx.loc[is_train, "label"] = idx.loc[is_train, "label"].map(rotate)
    idx.loc[is_train, "labels"] = idx.loc[is_train, "labels"].map(lambda v: [rotate[c] for c in v])
    wrong.index = idx
    cfg = tiny_config(**{"model.init_from": str(tiny_run / "model.pt"), "train.epochs": 4, "train.lr": 1e-2})
    out = train(wrong, out=tmp_path / "run", config=cfg, progress=False)
    assert out["kept"] == "untrained"  # worse F1, or as good with a higher loss: wrong labels
    assert (out["val_macro_f1_untrained"], -out["val_loss_untrained"]) > (
        out["val_macro_f1_trained"],
        -out["val_loss_trained"],
    )
    from chirpkit.evaluation.report import evaluate

    m = evaluate(tmp_path / "run", split="val", store=st, n_boot=0, progress=False)
    assert m["window"]["macro_f1"] == pytest.approx(out["val_macro_f1_untrained"], abs=1e-6)


def test_progress_is_one_line_per_epoch_off_a_terminal(
    tiny_run: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import io

    from lightning.pytorch.callbacks import TQDMProgressBar

    from chirpkit.data.store import Store
    from chirpkit.training.trainer import EpochLines, progress_callback

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert isinstance(progress_callback(True, stream=Terminal()), TQDMProgressBar)
    assert isinstance(progress_callback(True, stream=io.StringIO()), EpochLines)
    assert progress_callback(False) is None
    train(
        Store(tiny_run / "store"),
        out=tmp_path / "r",
        config=tiny_config(**{"train.epochs": 2}),
        progress=True,
    )
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch ")]
    assert len(lines) == 2 and lines[1].startswith("epoch 2/2, train loss ") and "val macro F1" in lines[1]


def test_last_checkpoint_is_the_last_epoch_also_after_a_resume(tiny_folder: Path, tmp_path: Path) -> None:
    """last.ckpt holds the last epoch run, not the last one that improved (Lightning's save_last),
    so a resume continues from where training stopped and repeats no epoch."""
    from chirpkit.data.store import Store
    from chirpkit.pipelines.fit import fit

    run = tmp_path / "run"
    fit(
        tiny_folder,
        out=run,
        config=tiny_config(**{"train.epochs": 2}),
        group_by="regex:-(g\\d+)-",
        progress=False,
    )
    first = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert first["epoch"] == 1
    summary = train(
        Store(run / "store"), out=run, config=tiny_config(**{"train.epochs": 4}), resume=True, progress=False
    )
    last = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert (
        last["epoch"] == 3 and last["global_step"] == 2 * first["global_step"] and summary["epochs_run"] == 4
    )
    epochs = pd.read_csv(run / "logs" / "metrics.csv").dropna(subset=["val_macro_f1"])["epoch"].tolist()
    assert epochs == [0, 1, 2, 3]
    assert not list((run / "checkpoints").glob(".*.tmp"))
