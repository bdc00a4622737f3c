from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from chirpkit.data.catalog import catalog_fingerprint, read_catalog
from chirpkit.data.ingest import group_rule, ingest
from chirpkit.errors import DataError, MissingPathError
from tests.conftest import TINY_SR, make_class_folder, tone, write


def test_folder_ingest_builds_the_catalog(tiny_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "catalog.parquet"
    cat = ingest(tiny_folder, out=out, progress=False)
    assert len(cat) == 3 * 4 * 3
    assert set(cat["label"]) == {"low", "mid", "high"}
    for col in (
        "source",
        "start_s",
        "end_s",
        "label",
        "labels",
        "group",
        "duration_s",
        "sample_rate",
        "channels",
        "codec",
        "container",
        "bit_depth",
        "decoder",
    ):
        assert col in cat.columns
    assert (cat["start_s"] == 0).all() and cat["end_s"].tolist() == pytest.approx(cat["duration_s"].tolist())
    assert (cat["sample_rate"] == TINY_SR).all() and (cat["codec"] == "pcm_16").all()
    assert cat["group"].nunique() == len(cat)  # default: one group per file
    assert out.is_file() and out.with_suffix(".csv").is_file()
    back = read_catalog(out)
    assert catalog_fingerprint(back) == catalog_fingerprint(cat)
    assert back["labels"].iloc[0] == [back["label"].iloc[0]]


def test_group_rules(tiny_folder: Path) -> None:
    cat = ingest(tiny_folder, group_by="regex:-(g\\d+)-", progress=False)
    assert sorted(cat["group"].unique()) == ["g0", "g1", "g2", "g3"]
    assert group_rule("folder", Path("/d"))(Path("/d/a/b.wav")) == "a"
    with pytest.raises(DataError, match="does not match"):
        group_rule("regex:^zz(\\d)", Path("/d"))(Path("/d/a/b.wav"))
    with pytest.raises(DataError, match="not a valid regular expression"):
        group_rule("regex:(", None)
    with pytest.raises(DataError, match="unknown group rule"):
        group_rule("site", None)


def test_bad_files_are_skipped_and_reported(tmp_path: Path) -> None:
    root = make_class_folder(tmp_path / "d", groups=1, clips=2)
    (root / "low" / "empty.wav").write_bytes(b"")
    (root / "mid" / "notes.txt").write_text("not audio")
    (root / "stray.wav").write_bytes(b"x")
    out = tmp_path / "cat.parquet"
    cat = ingest(root, out=out, progress=False)
    assert len(cat) == 6
    report = pd.read_csv(tmp_path / "cat.skipped.csv")
    reasons = dict(zip([Path(s).name for s in report["source"]], report["reason"], strict=True))
    assert "empty file" in reasons["empty.wav"]
    assert "not readable as audio" in reasons["notes.txt"]
    assert "not inside a class sub-folder" in reasons["stray.wav"]
    assert len(cat.attrs["skipped"]) == 3


def test_label_csv_with_groups_spans_and_missing_files(tmp_path: Path) -> None:
    sr = 8000
    for name, f in (("a.wav", 500), ("b.wav", 1500), ("c.flac", 3000)):
        write(tmp_path / "audio" / name, tone(f, 4.0, sr), sr)
    csv = tmp_path / "labels.csv"
    csv.write_text(
        "path,label,group,start_s,end_s\n"
        "audio/a.wav,frog,site1,0.5,2.5\n"
        "audio/b.wav,toad;frog,site2,,\n"
        "audio/c.flac,toad,site1,1,3\n"
        "audio/missing.wav,frog,site3,,\n"
    )
    cat = ingest(csv, out=tmp_path / "c.parquet", progress=False)
    assert len(cat) == 3
    b = cat[cat["source"].str.endswith("b.wav")].iloc[0]
    assert b["label"] == "toad" and list(b["labels"]) == ["toad", "frog"] and b["group"] == "site2"
    assert b["end_s"] == pytest.approx(4.0)
    a = cat[cat["source"].str.endswith("a.wav")].iloc[0]
    assert (a["start_s"], a["end_s"]) == (0.5, 2.5)
    skipped = pd.read_csv(tmp_path / "c.skipped.csv")
    assert "missing.wav" in skipped["source"].iloc[0] and "line 5" in skipped["reason"].iloc[0]


def test_unknown_class_names_line_and_value(tmp_path: Path) -> None:
    write(tmp_path / "a.wav", tone(500, 1, 8000), 8000)
    write(tmp_path / "b.wav", tone(900, 1, 8000), 8000)
    csv = tmp_path / "l.csv"
    csv.write_text("file,label\na.wav,drone\nb.wav,kar\n")
    with pytest.raises(DataError, match=r"line 3: 'kar'.*known classes: \['car', 'drone'\]"):
        ingest(csv, classes=["drone", "car"], progress=False)


@pytest.mark.parametrize(
    "setup,match",
    [
        ("empty_dir", "no files found in class sub-folders"),
        ("one_class", "only one class.*point ingest at its parent"),
        ("empty_label", "empty label on line"),
        ("no_columns", "needs a file column"),
    ],
)
def test_clear_errors(tmp_path: Path, setup: str, match: str) -> None:
    if setup == "empty_dir":
        src = tmp_path / "empty"
        src.mkdir()
    elif setup == "one_class":
        src = tmp_path / "d"
        write(src / "drone" / "x.wav", tone(500, 1, 8000), 8000)
    else:
        write(tmp_path / "a.wav", tone(500, 1, 8000), 8000)
        src = tmp_path / "l.csv"
        src.write_text("path,label\na.wav,\n" if setup == "empty_label" else "x,y\na.wav,b\n")
    with pytest.raises(DataError, match=match):
        ingest(src, progress=False)


def test_missing_source_path(tmp_path: Path) -> None:
    with pytest.raises(MissingPathError, match="ingest source not found"):
        ingest(tmp_path / "nowhere", progress=False)


def test_background_audio_becomes_noise_examples(tiny_folder: Path, tmp_path: Path) -> None:
    """Recordings without any class (a folder, recursively) are whole-file background examples,
    each its own group; an unreadable one is skipped and reported."""
    from chirpkit.cli import main

    rng = np.random.default_rng(0)
    for i in range(3):
        write(
            tmp_path / "site" / "night" / f"bg{i}.wav",
            0.01 * rng.standard_normal(TINY_SR * 4).astype(np.float32),
            TINY_SR,
        )
    (tmp_path / "site" / "broken.wav").write_bytes(b"RIFF nonsense")
    cat = ingest(tiny_folder, background_audio=[tmp_path / "site"], progress=False)
    noise = cat[cat["label"] == "noise"]
    assert len(noise) == 3 and (noise["end_s"] == 4.0).all() and noise["group"].nunique() == 3
    assert noise["labels"].map(list).tolist() == [["noise"]] * 3
    assert "broken.wav" in " ".join(s["source"] for s in cat.attrs["skipped"])
    out = tmp_path / "cat.parquet"
    argv = ["ingest", str(tiny_folder), "--background-audio", str(tmp_path / "site"), "--out", str(out)]
    assert main([*argv, "--background-label", "quiet", "--no-progress"]) == 0
    assert (pd.read_parquet(out)["label"] == "quiet").sum() == 3
    with pytest.raises(FileNotFoundError):
        ingest(tiny_folder, background_audio=[tmp_path / "nowhere"], progress=False)
