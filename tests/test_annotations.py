"""Annotation tables (points/boxes CSV, Raven, Audacity, Kaleidoscope, generic) and their ingest."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from chirpkit.data.annotations import detect_format, read_annotations
from chirpkit.data.ingest import ingest
from chirpkit.errors import AnnotationError, DataError
from tests.conftest import SHARED_DATA

RAVEN = """Selection\tView\tChannel\tBegin Time (s)\tEnd Time (s)\tLow Freq (Hz)\tHigh Freq (Hz)\tSpecies
1\tSpectrogram 1\t1\t1.0\t2.5\t1000\t3000\tWOTH
1\tWaveform 1\t1\t1.0\t2.5\t1000\t3000\tWOTH
2\tSpectrogram 1\t1\t4.0\t4.5\t3000\t6000\tEATO
3\tSpectrogram 1\t1\t6.0\t6.2\t1200\t2000\t
"""


def test_points_csv_kenya_format(tmp_path: Path) -> None:
    p = tmp_path / "annotations.csv"
    p.write_text(
        "Filename,Start Time (s),End Time (s),Species Ebird Code\n"
        "rec1.flac,10.5,10.5,hadibi1\nrec1.flac,20.0,20.0,rbsrob1\nrec2.flac,3.0,3.4,hadibi1\n"
    )
    assert detect_format(p) == "points"
    df = read_annotations(p)
    assert df.attrs["point_table"] is True and len(df) == 3
    assert df["label"].tolist() == ["hadibi1", "rbsrob1", "hadibi1"]
    assert df["row"].tolist() == [2, 3, 4] and df["start_s"].iloc[0] == df["end_s"].iloc[0] == 10.5


def test_raven_views_are_kept_once(tmp_path: Path) -> None:
    p = tmp_path / "site3_dawn.Table.1.selections.txt"
    p.write_text(RAVEN)
    assert detect_format(p) == "raven"
    df = read_annotations(p)
    assert len(df) == 3  # selection 1 shown in two views
    assert set(df["file"]) == {"site3_dawn"}  # named after the table
    assert df["low_freq_hz"].tolist() == [1000, 3000, 1200]
    assert df["label"].tolist() == ["WOTH", "EATO", ""]
    with pytest.raises(AnnotationError, match="label column 'Call' is not in Raven table"):
        read_annotations(p, label_column="Call")


def test_raven_begin_file_and_file_offset(tmp_path: Path) -> None:
    p = tmp_path / "session.txt"
    p.write_text(
        "Selection\tView\tBegin Time (s)\tEnd Time (s)\tBegin File\tFile Offset (s)\tAnnotation\n"
        "1\tSpectrogram 1\t65.0\t66.0\tb.wav\t5.0\tfrog\n"
    )
    df = read_annotations(p)
    assert df.iloc[0][["file", "start_s", "end_s", "label"]].tolist() == ["b.wav", 5.0, 6.0, "frog"]


def test_audacity_with_frequency_lines(tmp_path: Path) -> None:
    p = tmp_path / "dawn.txt"
    p.write_text("0.1\t0.4\tSP\n\\\t6441.0\t12296.5\n0.5\t3.0\tCRER\n1.2\t1.5\tSP\n")
    assert detect_format(p) == "audacity"
    df = read_annotations(p)
    assert len(df) == 3 and set(df["file"]) == {"dawn"}
    assert df["low_freq_hz"].iloc[0] == 6441.0 and np.isnan(df["low_freq_hz"].iloc[1])


def test_kaleidoscope_and_generic_mapping(tmp_path: Path) -> None:
    k = tmp_path / "labels.csv"
    k.write_text(
        "FOLDER,IN FILE,CLIP LENGTH,CHANNEL,OFFSET,DURATION,SAMPLE RATE,MANUAL ID\n"
        "./TEST/,a.wav,30,0,1.5,2.0,16000,bird\n"
    )
    df = read_annotations(k)
    assert df.attrs["format"] == "kaleidoscope"
    assert df.iloc[0][["file", "start_s", "end_s", "label"]].tolist() == ["TEST/a.wav", 1.5, 3.5, "bird"]
    g = tmp_path / "mine.csv"
    g.write_text("wav;t0;len;who\nx.wav;2;0.5;owl\n")
    df = read_annotations(g, columns={"file": "wav", "start": "t0", "duration": "len", "label": "who"})
    assert df.iloc[0][["file", "start_s", "end_s", "label"]].tolist() == ["x.wav", 2.0, 2.5, "owl"]
    with pytest.raises(AnnotationError, match="cannot find the file, start, label"):
        read_annotations(g)
    with pytest.raises(AnnotationError, match="unknown column mapping key"):
        read_annotations(g, columns={"filename": "wav"})


def test_ingest_annotations_windows_and_anomalies(soundscapes: Path) -> None:
    out = soundscapes / "catalog.parquet"
    cat = ingest(
        annotations=soundscapes / "annotations.csv",
        audio_dir=soundscapes / "audio",
        out=out,
        window_s=3.0,
        group_by="regex:^(site[AB])_",
        progress=False,
    )
    anomalies = pd.read_csv(soundscapes / "catalog.anomalies.csv")
    kinds = dict(zip(anomalies["kind"], anomalies["action"], strict=True))
    assert kinds == {
        "duplicate": "dropped",
        "past_end": "dropped",
        "negative_time": "clipped to 0",
        "reversed_time": "swapped",
        "nonzero_duration_in_point_table": "kept as a box",
        "bad_time": "dropped",
        "empty_label": "dropped",
        "missing_audio": "dropped",
        "unreadable_audio": "dropped",
    }
    assert anomalies.loc[anomalies["kind"] == "past_end", "row"].item() == 9  # the table's line
    skipped = pd.read_csv(soundscapes / "catalog.skipped.csv")
    assert skipped["source"].str.endswith("broken.flac").all()
    assert len(cat) == 8 and set(cat["group"]) == {"siteA", "siteB"}
    a = cat[cat["source"].str.endswith("siteA_day1.flac")].sort_values("ann_start_s")
    np.testing.assert_allclose(a["start_s"], [0.7, 8.7, 9.5, 13.7])  # 3 s windows centred on points
    np.testing.assert_allclose(a["end_s"] - a["start_s"], 3.0)
    high = a[a["label"] == "highbird"].iloc[0]
    assert list(high["labels"]) == ["highbird", "lowbird"]  # the 11.0 s point sits in its window
    neg = cat[(cat["label"] == "highbird") & (cat["ann_start_s"] == 0.0)].iloc[0]
    assert neg["start_s"] == 0.0  # shifted inside the recording, not padded
    box = cat[cat["ann_end_s"] - cat["ann_start_s"] > 1].iloc[0]
    assert (box["ann_start_s"], box["ann_end_s"]) == (6.0, 9.0)
    assert len(cat.attrs["anomalies"]) == len(anomalies)


def test_background_windows_stay_away_from_calls(soundscapes: Path) -> None:
    cat = ingest(
        annotations=soundscapes / "annotations.csv",
        audio_dir=soundscapes / "audio",
        window_s=2.0,
        background=6,
        seed=1,
        progress=False,
    )
    bg = cat[cat["label"] == "noise"]
    assert len(bg) == 6
    calls = cat[cat["label"] != "noise"]
    for b in bg.itertuples():
        same = calls[calls["source"] == b.source]
        assert not ((same["ann_start_s"] < b.end_s + 0.5) & (same["ann_end_s"] > b.start_s - 0.5)).any()
    again = ingest(
        annotations=soundscapes / "annotations.csv",
        audio_dir=soundscapes / "audio",
        window_s=2.0,
        background=6,
        seed=1,
        progress=False,
    )
    assert again["start_s"].tolist() == cat["start_s"].tolist()  # seeded


def test_single_class_table_is_ingested_with_a_warning(
    soundscapes: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # a single-species detector's table: the catalog is built (it can be inspected), with a warning
    # that suggests background windows; split, which needs two classes, refuses it
    from chirpkit.data.split import split

    p = soundscapes / "one.csv"
    p.write_text("Filename,Start Time (s),End Time (s),Species eBird Code\nsiteA_day1.flac,2.2,2.2,lowbird\n")
    cat = ingest(
        annotations=p, audio_dir=soundscapes / "audio", out=soundscapes / "one.parquet", progress=False
    )
    assert cat["label"].unique().tolist() == ["lowbird"] and (soundscapes / "one.parquet").is_file()
    assert "only one class ('lowbird')" in caplog.text and "background windows" in caplog.text
    with pytest.raises(DataError, match="a classifier needs two"):
        split(cat)
    with pytest.raises(DataError, match="audio_dir"):
        ingest(annotations=p, progress=False)


def test_fit_from_an_annotation_table(soundscapes: Path) -> None:
    from chirpkit.pipelines.fit import fit
    from tests.conftest import tiny_config

    res = fit(
        None,
        annotations=soundscapes / "annotations.csv",
        audio_dir=soundscapes / "audio",
        background=6,
        out=soundscapes / "run",
        config=tiny_config(
            **{
                "split.min_count": 0,
                "split.val_fraction": 0.0,
                "split.test_fraction": 0.3,
                "audio.window_s": 1.0,
                "train.epochs": 2,
            }
        ),
        group_by="regex:^(site[AB])_",
        progress=False,
    )
    assert (soundscapes / "run" / "model.pt").is_file()
    assert res["metrics"]["split"] == "test"


realdata = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="../shared/data not present")


@realdata
def test_real_raven_table() -> None:
    p = next((SHARED_DATA / "opensoundscape-samples" / "tests" / "raven_annots").glob("*.txt"))
    df = read_annotations(p)
    assert df.attrs["format"] == "raven" and len(df) == 10
    assert set(df["label"]) == {"WOTH", "EATO", "LOWA", ""}
    assert set(df["file"]) == {"MSD-0003_20180427_2minstart00"}


@realdata
def test_real_audacity_track_and_piha_boxes() -> None:
    df = read_annotations(SHARED_DATA / "soundscape24h-maad" / "data" / "spinetail.txt")
    assert len(df) == 18 and df["label"].value_counts().to_dict() == {"SP": 14, "CRER": 4}
    assert df["high_freq_hz"].notna().all()
    cat = ingest(
        annotations=SHARED_DATA / "screaming-piha" / "ScreamingPiha_Manual_Labels.csv",
        audio_dir=SHARED_DATA / "screaming-piha",
        background=20,
        progress=False,
    )
    assert (cat["label"] == "bird").sum() >= 254 and cat["source"].nunique() == 11
    assert {"mp3", "pcm_16"} <= set(cat["codec"])


def test_unknown_labels_boxes_past_the_end_and_stem_matches_are_reported(soundscapes: Path) -> None:
    table = soundscapes / "boxes.csv"
    table.write_text(
        "Filename,Start Time (s),End Time (s),Species eBird Code\n"
        "siteA_day1.wav,2.0,2.6,lowbird\n"  # the audio is siteA_day1.flac: matched by stem
        "siteA_day1.flac,18.0,23.0,highbird\n"  # a box running 3 s past the end (20 s)
        "siteB_day1.flac,5.0,5.5,owl\n"  # not among the known classes
    )
    cat = ingest(
        annotations=table,
        audio_dir=soundscapes / "audio",
        classes=["lowbird", "highbird"],
        window_s=3.0,
        progress=False,
    )
    anomalies = pd.DataFrame(cat.attrs["anomalies"]).set_index("kind")
    assert anomalies.loc["audio_matched_by_stem", "action"] == "kept"
    assert anomalies.loc["audio_matched_by_stem", "detail"].startswith("used siteA_day1.flac")
    assert (
        anomalies.loc["ends_past_end", "action"] == "clipped" and anomalies.loc["ends_past_end", "row"] == 3
    )
    assert anomalies.loc["unknown_label", "action"] == "dropped"
    assert "'owl'" in anomalies.loc["unknown_label", "detail"]
    assert sorted(cat["label"]) == ["highbird", "lowbird"]
    assert cat.loc[cat["label"] == "highbird", "ann_end_s"].item() == pytest.approx(20.0)
    assert (cat["end_s"] <= 20.0 + 1e-6).all()  # the window stays inside the recording
