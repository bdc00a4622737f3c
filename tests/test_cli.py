"""The command line: fast help, every verb end to end in-process, clear errors."""

from __future__ import annotations

import dataclasses
import importlib
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import chirpkit
from chirpkit.cli import main
from tests.conftest import tone, write


def test_help_is_fast_and_does_not_import_torch() -> None:
    code = (
        "import time,sys; t=time.perf_counter(); from chirpkit.cli import build_parser; build_parser(); "
        "print(time.perf_counter()-t, 'torch' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert float(out[0]) < 0.5 and out[1] == "False"
    t = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "chirpkit.cli", "--help"], capture_output=True, text=True)
    assert res.returncode == 0 and "ingest" in res.stdout and "detect" in res.stdout
    assert time.perf_counter() - t < 3.0  # includes interpreter start-up


def test_public_api_is_pinned() -> None:
    assert chirpkit.__all__ == [
        "Config",
        "EmbeddingIndex",
        "Query",
        "Store",
        "__version__",
        "augment_preview",
        "baseline",
        "calibrate",
        "create_model",
        "cross_validate",
        "demo",
        "detect",
        "detect_in_index",
        "detection_report",
        "distill",
        "evaluate",
        "evaluation_report",
        "export",
        "export_reviews",
        "fit",
        "index",
        "ingest",
        "ingest_reviews",
        "inspect",
        "list_models",
        "load_config",
        "load_model",
        "merge",
        "prepare",
        "profile",
        "read_catalog",
        "score_detections",
        "search",
        "serve_review",
        "split",
        "train",
        "train_head",
        "tune",
        "write_catalog",
        "zero_shot",
    ]
    for name in chirpkit.__all__:
        assert getattr(chirpkit, name) is not None
    for module in (
        "chirpkit.training.loop",
        "chirpkit.evaluation.report",
        "chirpkit.detection.job",
        "chirpkit.models.export",
        "chirpkit.detection.events",
        "chirpkit.augment.preview",
        "chirpkit.data.report",
        "chirpkit.training.baselines",
        "chirpkit.models.embeddings",
        "chirpkit.models.profile",
        "chirpkit.training.tuning",
    ):
        importlib.import_module(module)  # importing a module must not shadow a function of the API
    for name in (
        "train",
        "evaluate",
        "detect",
        "export",
        "score_detections",
        "augment_preview",
        "inspect",
        "split",
        "baseline",
        "zero_shot",
        "profile",
        "cross_validate",
        "tune",
    ):
        assert callable(getattr(chirpkit, name)), name


def _opts(*extra: str, progress: bool = True) -> list[str]:
    """``--set`` overrides of a tiny config, and ``--no-progress`` for verbs that show progress."""
    sets = [
        "audio.sample_rate=16000",
        "audio.window_s=1.0",
        "features.n_mels=32",
        "features.n_fft=512",
        "features.hop_length=160",
        "model.params={channels: [8, 16, 32]}",
        "train.batch_size=4",
        "train.num_workers=0",
        "split.val_fraction=0.25",
        "split.test_fraction=0.25",
    ]
    return [*(x for s in sets for x in ("--set", s)), *(["--no-progress"] if progress else []), *extra]


def test_verbs_step_by_step(tiny_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cat = tmp_path / "catalog.parquet"
    assert (
        main(
            [
                "ingest",
                str(tiny_folder),
                "--out",
                str(cat),
                "--group-by",
                "regex:-(g\\d+)-",
                "--no-progress",
            ]
        )
        == 0
    )
    assert main(["split", str(cat), *_opts(progress=False)]) == 0
    assert "split" in pd.read_parquet(cat).columns
    assert main(["prepare", str(cat), "--out", str(tmp_path / "store"), *_opts()]) == 0
    assert (
        main(
            [
                "train",
                str(tmp_path / "store"),
                "--out",
                str(tmp_path / "run"),
                "--epochs",
                "30",
                "--lr",
                "3e-3",
                *_opts(),
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "run"), "--split", "test", "--no-progress"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert set(printed) >= {"macro_f1", "weighted_f1", "accuracy"}
    y = tone(2500, 5.0, 16000) + 0.01 * np.random.default_rng(0).standard_normal(80000).astype(np.float32)
    long = write(tmp_path / "long.wav", y, 16000)  # light noise, as in the training clips
    assert (
        main(
            [
                "detect",
                str(tmp_path / "run"),
                str(long),
                "--out",
                str(tmp_path / "det"),
                "--min-score",
                "0",
                "--no-progress",
            ]
        )
        == 0
    )
    det = pd.read_csv(tmp_path / "det" / "detections.csv")
    assert len(det) == 9  # 5 s, 1 s windows, 0.5 s hop
    assert (det["label"] == "mid").mean() > 0.5


def test_fit_verb(tiny_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(
            [
                "fit",
                str(tiny_folder),
                "--out",
                str(tmp_path / "r"),
                "--group-by",
                "regex:-(g\\d+)-",
                "--epochs",
                "1",
                *_opts(),
            ]
        )
        == 0
    )
    assert "macro F1" in capsys.readouterr().out
    assert (tmp_path / "r" / "metrics.json").is_file()


@pytest.mark.parametrize(
    "argv,match",
    [
        (
            ["ingest", "/no/such/folder", "--out", "x.parquet"],
            "ingest source not found: /no/such/folder",
        ),
        (["split", "/no/cat.parquet"], "catalog not found"),
        (["train", "/no/store", "--out", "r"], "prepared store not found"),
        (["evaluate", "/tmp"], "no model at /tmp/model.pt"),
        (
            ["prepare", "c.parquet", "--out", "s", "--set", "audio.windw_s=2"],
            "Did you mean 'window_s'",
        ),
    ],
)
def test_errors_exit_2_with_a_message(
    argv: list[str], match: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    assert match in capsys.readouterr().err


def test_single_class_csv_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path / "a.wav", tone(500, 1, 8000), 8000)
    (tmp_path / "l.csv").write_text("path,label\na.wav,owl\n")
    assert (
        main(
            [
                "ingest",
                str(tmp_path / "l.csv"),
                "--out",
                str(tmp_path / "c.parquet"),
                "--no-progress",
            ]
        )
        == 2
    )
    assert "only one class ('owl')" in capsys.readouterr().err
    assert not (tmp_path / "c.parquet").exists()


def test_readme_commands_are_what_ci_runs() -> None:
    root = Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text()
    blocks = [b.split("```", 1)[0].strip() for b in readme.split("```bash\n")[1:3]]
    setup, tests = blocks
    ci = (root / ".ci" / "run").read_text()
    assert setup.endswith("chirpkit demo") and setup.removesuffix(".venv/bin/chirpkit demo") in ci
    assert tests in ci.splitlines()


def test_configuration_page_shows_the_defaults() -> None:
    import yaml

    from chirpkit.config import Config

    page = (Path(__file__).resolve().parents[1] / "docs" / "configuration.md").read_text()
    block = page.split("```yaml\naudio:", 1)[1].split("```", 1)[0]
    shown = yaml.safe_load("audio:" + block)
    defaults = Config().model_dump()
    assert {k: sorted(v) for k, v in shown.items()} == {k: sorted(v) for k, v in defaults.items()}
    assert Config.model_validate(shown).model_dump() == defaults


def test_the_other_verbs_from_the_command_line(
    tiny_folder: Path, tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """split with folds, inspect, cross-validate, baseline, tune, profile, models, augment-preview,
    export, detect with the export, score-detections: each verb's wrapper, in-process."""
    cat = tmp_path / "catalog.parquet"
    assert (
        main(
            ["ingest", str(tiny_folder), "--out", str(cat), "--group-by", "regex:-(g\\d+)-", "--no-progress"]
        )
        == 0
    )
    argv = ["split", str(cat), "--strategy", "stratified-group", "--folds", "3", "--min-count", "0"]
    assert main([*argv, *_opts(progress=False)]) == 0
    assert "in 3 folds" in capsys.readouterr().out
    split_cat = pd.read_parquet(cat)
    assert sorted(split_cat["fold"].unique()) == [-1, 0, 1, 2]
    assert (split_cat.groupby("group")["fold"].nunique() == 1).all()

    assert (
        main(
            ["inspect", str(cat), "--out", str(tmp_path / "report"), "--max-per-class", "3", "--no-progress"]
        )
        == 0
    )
    assert (tmp_path / "report" / "index.html").is_file()

    store = tmp_path / "store"
    assert main(["prepare", str(cat), "--out", str(store), *_opts()]) == 0
    assert main(["cross-validate", str(store), "--out", str(tmp_path / "cv"), "--epochs", "1", *_opts()]) == 0
    cv = json.loads((tmp_path / "cv" / "cv.json").read_text())
    assert cv["folds"] == [0, 1, 2]

    assert (
        main(["baseline", str(store), "--model", "logreg", "--out", str(tmp_path / "b"), "--no-progress"])
        == 0
    )
    assert json.loads((tmp_path / "b" / "baseline_logreg_mfcc.json").read_text())["test"]["macro_f1"] >= 0.7

    if importlib.util.find_spec("optuna") is not None:
        space = tmp_path / "space.yaml"
        space.write_text("train.lr: {low: 0.001, high: 0.005, log: true}\n")
        argv = ["tune", str(store), "--out", str(tmp_path / "t"), "--trials", "1", "--epochs", "1"]
        assert main([*argv, "--space", str(space), *_opts()]) == 0
        assert (tmp_path / "t" / "best_config.yaml").is_file()

    capsys.readouterr()
    assert main(["profile", "small_cnn", "--batch-size", "2", *_opts(progress=False)]) == 0
    assert "parameters" in capsys.readouterr().out
    assert main(["models"]) == 0
    listed = capsys.readouterr().out
    assert "small_cnn" in listed and "birdnet_linear" in listed
    png = tmp_path / "preview.png"
    assert main(["augment-preview", str(store), "--out", str(png), *_opts(progress=False)]) == 0
    assert png.read_bytes()[:4] == b"\x89PNG"

    # a 6 s recording with a "high" call at 1-2 s and a "low" call at 4-5 s, and its annotations
    sr = 16000
    y = 0.01 * np.random.default_rng(1).standard_normal(6 * sr).astype(np.float32)
    y[sr : 2 * sr] += tone(5000, 1.0, sr)
    y[4 * sr : 5 * sr] += tone(800, 1.0, sr)
    rec = write(tmp_path / "rec.wav", y, sr)
    ann = tmp_path / "rec.csv"
    ann.write_text(
        "Filename,Start Time (s),End Time (s),Species eBird Code\nrec.wav,1,2,high\nrec.wav,4,5,low\n"
    )
    model = str(tiny_run)
    if importlib.util.find_spec("onnxruntime") is not None:
        assert main(["export", str(tiny_run), "--format", "onnx", "--out", str(tmp_path / "m.onnx")]) == 0
        model = str(tmp_path / "m.onnx")
    argv = ["detect", model, str(rec), "--out", str(tmp_path / "det"), "--hop-s", "0.5", "--min-score", "0.6"]
    assert main([*argv, "--no-progress"]) == 0
    capsys.readouterr()
    argv = [
        "score-detections",
        str(tmp_path / "det" / "events.csv"),
        str(ann),
        "--out",
        str(tmp_path / "s.csv"),
    ]
    assert main([*argv, "--matching", "any"]) == 0
    assert "recall" in capsys.readouterr().out
    scores = pd.read_csv(tmp_path / "s.csv").set_index("class")
    assert scores.loc["all", "recall"] == 1.0 and scores.loc["all", "annotations"] == 2


def test_flags_are_offered_only_by_verbs_that_use_them() -> None:
    from chirpkit.cli import build_parser

    parser = build_parser()
    parser.parse_args(["train", "s", "--out", "r", "--resume", "--sanity"])
    parser.parse_args(["fit", "d", "--out", "r", "--resume"])
    for argv in (
        ["fit", "d", "--out", "r", "--sanity"],
        ["cross-validate", "s", "--out", "r", "--resume"],
        ["distill", "s", "--out", "r", "--teacher", "t", "--sanity"],
    ):
        with pytest.raises(SystemExit):  # an unknown flag, not one accepted and ignored
            parser.parse_args(argv)


def _used_dests(
    fn: object, helpers: dict[str, str], option_classes: dict[str, type]
) -> tuple[set[str], bool]:
    """The ``args.X`` a command reads (following the cli helpers it calls), the dests of the option
    classes it reads with ``options_from_args``, and whether it reads the config flags."""
    import inspect
    import re

    seen: set[str] = set()
    todo = [inspect.getsource(fn)]  # type: ignore[arg-type]
    body = ""
    while todo:
        src = todo.pop()
        body += src
        for name in re.findall(r"\b(_[a-z_]+)\(", src):
            if name in helpers and name not in seen:
                seen.add(name)
                todo.append(helpers[name])
    used = set(re.findall(r"\bargs\.([a-z_]+)\b", body))
    for cls_name in re.findall(r"options_from_args\((\w+),\s*args", body):
        used |= {f.name for f in dataclasses.fields(option_classes[cls_name])}  # type: ignore[arg-type]
    return used, "_config(args" in body


def test_every_flag_a_verb_takes_is_used() -> None:
    """A verb accepts only the flags its command reads: config flags (``--config``, ``--set``, and
    the dotted config keys) only where it builds the config, ``--no-progress`` only where it shows
    progress, and every other flag's value reaches the command (directly or through the cli helpers
    and option classes it uses)."""
    import argparse
    import inspect

    from chirpkit import cli

    helpers = {
        n: inspect.getsource(f)
        for n, f in vars(cli).items()
        if inspect.isfunction(f) and f.__module__ == cli.__name__ and n.startswith("_")
    }
    option_classes = {
        n: c for n, c in vars(cli).items() if isinstance(c, type) and dataclasses.is_dataclass(c)
    }
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    unused = []
    for name, p in sub.choices.items():
        used, reads_config = _used_dests(p.get_default("fn"), helpers, option_classes)
        for action in p._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            config_flag = "." in action.dest or action.dest in ("config", "set")
            if (config_flag and not reads_config) or (not config_flag and action.dest not in used):
                unused.append(f"{name} {action.option_strings[0] if action.option_strings else action.dest}")
    assert unused == []
