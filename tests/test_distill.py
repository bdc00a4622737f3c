"""Distillation: a student learns a teacher's scores on labelled and unlabelled audio."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from chirpkit.errors import ConfigError
from chirpkit.training.loop import train
from tests.conftest import TINY_CLASSES, TINY_SR, tiny_config, tone, write


def _store(tiny_run: Path) -> str:
    return str(json.loads((tiny_run / "data.json").read_text())["store"])


@pytest.fixture(scope="module")
def soundscapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Unlabelled recordings: 4 s of each class's tone after another, in light noise."""
    root = tmp_path_factory.mktemp("unlabelled")
    rng = np.random.default_rng(7)
    for i in range(3):
        parts = [tone(f * rng.uniform(0.95, 1.05), 1.0, TINY_SR, amp=0.4) for f in TINY_CLASSES.values()]
        y = np.concatenate(parts) + 0.01 * rng.standard_normal(3 * TINY_SR).astype(np.float32)
        write(root / f"scape{i}.wav", y, TINY_SR)
    (root / "notes.txt").write_text("not audio")
    return root


def test_a_student_learns_from_the_teacher_alone(tiny_run: Path, soundscapes: Path, tmp_path: Path) -> None:
    from chirpkit.evaluation.report import evaluate
    from chirpkit.training.distill import distill

    # distill_weight 1: the labels play no part in the distillation step; only the teacher's scores
    cfg = tiny_config(**{"train.distill_weight": 1.0, "train.epochs": 20, "augment.mixup.p": 0.0})
    res = distill(
        _store(tiny_run), out=tmp_path / "student", teacher=tiny_run, unlabelled=[soundscapes], config=cfg
    )
    first = res["rounds"][0]["distilled"]
    assert first["teacher"] == str(tiny_run) and first["unlabelled_windows"] == res["unlabelled_windows"] >= 9
    distilled = evaluate(tmp_path / "student" / "round1" / "distilled", split="test", progress=False)
    assert distilled["macro_f1"] >= 0.8
    final = evaluate(tmp_path / "student", split="test", progress=False)
    assert final["macro_f1"] >= 0.8
    assert (tmp_path / "student" / "distill_summary.json").is_file()


def test_distillation_needs_a_teacher_that_knows_every_class(tiny_run: Path, tmp_path: Path) -> None:
    import shutil

    from chirpkit.models import read_model_file, save_model
    from chirpkit.models.network import load_network

    net, spec = load_network(read_model_file(tiny_run))
    spec.class_names = ["high", "low", "other"]  # knows no "mid"
    partial = tmp_path / "partial"
    shutil.copytree(tiny_run, partial, ignore=shutil.ignore_patterns("store", "checkpoints"))
    save_model(partial / "model.pt", net, spec)
    with pytest.raises(ConfigError, match=r"does not know the class\(es\) \['mid'\]"):
        train(_store(tiny_run), out=tmp_path / "s", config=tiny_config(**{"train.teacher": str(partial)}))
    with pytest.raises(ConfigError, match="needs a teacher"):
        train(_store(tiny_run), out=tmp_path / "s", config=tiny_config(**{"train.unlabelled": ["x"]}))
    with pytest.raises(ConfigError, match="mixup"):
        cfg = tiny_config(**{"train.teacher": str(tiny_run), "augment.mixup.p": 0.5})
        train(_store(tiny_run), out=tmp_path / "s", config=cfg)
    assert not (tmp_path / "s").exists()


def test_pseudo_labels_are_hard_and_leave_out_what_the_teacher_is_unsure_of() -> None:
    from chirpkit.training.loop import pseudo_labels

    probs = np.array([[0.9, 0.02], [0.3, 0.01], [0.01, 0.05], [0.6, 0.7]], dtype=np.float32)
    kept, target = pseudo_labels(probs, (0.1, 0.5), multilabel=True)
    # window 1 has a class between 0.1 and 0.5: left out; window 2 is "no class" (all absent)
    assert kept.tolist() == [True, False, True, True]
    assert target.tolist() == [[1, 0], [0, 0], [1, 1]]
    softmax = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]], dtype=np.float32)
    kept, target = pseudo_labels(softmax, (0.1, 0.8), multilabel=False)
    assert kept.tolist() == [True, True, False] and target.tolist() == [[1, 0], [0, 1]]


def test_self_training_with_pseudo_labels(tiny_run: Path, soundscapes: Path, tmp_path: Path) -> None:
    """train.pseudo_labels with finetune_epochs=0: each round's student is the model trained on the
    labels and the teacher's confident hard labels; the unsure windows are not trained on."""
    from chirpkit.evaluation.report import evaluate
    from chirpkit.training.distill import distill

    cfg = tiny_config(
        **{
            "train.pseudo_labels": [0.1, 0.6],
            "train.epochs": 15,
            "augment.mixup.p": 0.0,
            "train.distill_weight": 0.5,
        }
    )
    res = distill(
        _store(tiny_run),
        out=tmp_path / "self",
        teacher=tiny_run,
        unlabelled=[soundscapes],
        config=cfg,
        rounds=2,
        finetune_epochs=0,
    )
    assert [r["student"] is r["distilled"] for r in res["rounds"]] == [True, True]
    assert res["rounds"][1]["teacher"] == str(tmp_path / "self" / "round1" / "distilled")
    assert not (tmp_path / "self" / "round1" / "student").exists()
    used = res["rounds"][0]["distilled"]["unlabelled_windows"]
    assert 0 < used <= res["unlabelled_windows"]
    assert evaluate(tmp_path / "self", split="test", progress=False)["macro_f1"] >= 0.8
    with pytest.raises(ConfigError, match="finetune_epochs"):
        distill(_store(tiny_run), out=tmp_path / "bad", teacher=tiny_run, config=cfg, finetune_epochs=-1)


def test_pseudo_label_thresholds_are_checked() -> None:
    from chirpkit.config import load_config

    for bad in ([0.5], [0.6, 0.2], [0.1, 1.5]):
        with pytest.raises(ConfigError, match="pseudo_labels"):
            load_config(overrides={"train.pseudo_labels": bad})
