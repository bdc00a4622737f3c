"""Options declared once: ingest's and fit's keyword parameters, their docstrings and the command
line's flags all come from (or are checked against) one definition, and so cannot drift apart."""

from __future__ import annotations

import argparse
import dataclasses
import inspect
from pathlib import Path

import pandas as pd
import pytest

from chirpkit._options import takes_options
from chirpkit.cli import build_parser, main
from chirpkit.config import Config
from chirpkit.data.catalog import read_catalog
from chirpkit.data.ingest import ingest
from chirpkit.data.options import ANNOTATION_TABLE, IngestOptions, SourceOptions
from chirpkit.pipelines.fit import fit
from tests.conftest import replace_command

COMMON = {"config", "set", "no_progress"}


def _flags(verb: str) -> dict[str, argparse.Action]:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return {a.dest: a for a in sub.choices[verb]._actions if not isinstance(a, argparse._HelpAction)}


def _names(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def test_ingest_flags_are_the_option_fields() -> None:
    flags = _flags("ingest")
    assert set(flags) == _names(IngestOptions) | {"src", "out", "audio.window_s"} | COMMON
    doc = ingest.__doc__ or ""
    for f in dataclasses.fields(IngestOptions):
        assert flags[f.name].default == f.default
        assert f"\n        {f.name}: " in doc  # documented from the same definition
    assert "{" not in flags["background"].help and "--background-label" in flags["background"].help
    assert "``background_label``" in doc


def test_fit_and_score_detections_share_the_source_options() -> None:
    fit_flags, ingest_flags = _flags("fit"), _flags("ingest")
    assert _names(SourceOptions) <= set(fit_flags)
    for name in _names(SourceOptions):
        assert fit_flags[name].help == ingest_flags[name].help
        assert fit_flags[name].option_strings == ingest_flags[name].option_strings
    score = _flags("score-detections")
    assert [score[n].help for n in ANNOTATION_TABLE] == [ingest_flags[n].help for n in ANNOTATION_TABLE]


def test_keyword_parameters_agree_with_the_definition() -> None:
    # a new option must be added to the definition and to each function (a new keyword parameter
    # that is not an option must be added here)
    params = inspect.signature(ingest).parameters
    assert set(params) == _names(IngestOptions) | {"src", "out", "window_s", "hop_s", "workers", "progress"}
    params = inspect.signature(fit).parameters
    assert set(params) == _names(SourceOptions) | {"src", "out", "config", "store", "resume", "progress"}
    takes_options(IngestOptions)(ingest)  # annotations and defaults (also checked at import)
    takes_options(SourceOptions)(fit)

    def drifted(*, group_by: str | None = "file") -> None: ...

    with pytest.raises(TypeError, match=r"must take `\*, group_by: str \| None = None`"):
        takes_options(SourceOptions, include=["group_by"])(drifted)


def test_config_flags_use_the_config_descriptions() -> None:
    seen = 0
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for verb, parser in sub.choices.items():
        for action in parser._actions:
            if "." in action.dest:
                section, name = action.dest.split(".")
                info = type(getattr(Config(), section)).model_fields[name]
                assert info.description and action.help.startswith(info.description), (verb, action.dest)
                seen += 1
    assert seen > 20


def test_config_flags_override_the_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import chirpkit.cli as cli

    seen = {}
    replace_command(monkeypatch, "split", lambda args: seen.update(cfg=cli._config(args)))
    replace_command(monkeypatch, "train", lambda args: seen.update(cfg=cli._config(args)))
    yaml = tmp_path / "c.yaml"
    yaml.write_text("split: {val_fraction: 0.3, seed: 4}\ntrain: {epochs: 7}\n")
    main(["split", "c.parquet", "--config", str(yaml), "--val", "0.2", "--strategy", "stratified-group"])
    assert (seen["cfg"].split.val_fraction, seen["cfg"].split.seed) == (0.2, 4)
    main(["train", "s/", "--out", "r", "--set", "train.epochs=5", "--epochs", "3", "--model", "deep_cnn"])
    assert (seen["cfg"].train.epochs, seen["cfg"].model.name) == (3, "deep_cnn")


def test_command_line_and_python_give_the_same_catalog(
    tiny_folder: Path, soundscapes: Path, tmp_path: Path
) -> None:
    classes = tmp_path / "classes.txt"
    classes.write_text("low\nmid\nhigh\n")
    args = ["--group-by", r"regex:-(g\d+)-", "--classes", str(classes), "--no-progress"]
    assert main(["ingest", str(tiny_folder), "--out", str(tmp_path / "cli.parquet"), *args]) == 0
    py = tmp_path / "py.parquet"
    ingest(tiny_folder, out=py, group_by=r"regex:-(g\d+)-", classes=["low", "mid", "high"], progress=False)
    pd.testing.assert_frame_equal(read_catalog(tmp_path / "cli.parquet"), read_catalog(py))

    table = soundscapes / "generic.csv"
    table.write_text("wav,t0,t1,who\nsiteA_day1.flac,2.0,2.4,lowbird\nsiteB_day1.flac,5.0,5.4,highbird\n")
    options = {"format": "csv", "columns": {"file": "wav", "start": "t0", "end": "t1", "label": "who"}}
    cli = [
        *("ingest", "--annotations", str(table), "--audio-dir", str(soundscapes / "audio")),
        *("--format", "csv", "--columns", "file=wav,start=t0,end=t1,label=who", "--background", "3"),
        *("--seed", "2", "--window-s", "1", "--out", str(tmp_path / "ann.parquet"), "--no-progress"),
    ]
    assert main(cli) == 0
    python = ingest(
        annotations=table,
        out=py,
        audio_dir=soundscapes / "audio",
        background=3,
        seed=2,
        window_s=1.0,
        progress=False,
        **options,
    )
    assert (python["label"] == "noise").sum() == 3
    pd.testing.assert_frame_equal(read_catalog(tmp_path / "ann.parquet"), read_catalog(py))
