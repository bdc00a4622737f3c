"""Annotation tables (points CSV, Raven, Audacity, Kaleidoscope, generic CSV) of every bad kind:
each works with anomaly rows, or fails with an AnnotationError/DataError that names the table."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from chirpkit.data.annotations import read_annotations
from chirpkit.data.ingest import ingest
from chirpkit.errors import AnnotationError, DataError, MissingPathError
from tests.badinput import encoded, leftovers, signal

RAVEN = "Selection\tView\tChannel\tBegin Time (s)\tEnd Time (s)\tLow Freq (Hz)\tHigh Freq (Hz)\tSpecies\n"
POINTS = "Filename,Start Time (s),End Time (s),Species eBird Code\n"

# kind -> (table file name, content, expected anomaly kinds)
WORKS: dict[str, tuple[str, bytes, set[str]]] = {
    "raven_bad_numbers": (
        "rec.Table.1.selections.txt",
        (
            RAVEN
            + "1\tSpectrogram 1\t1\t1.0\t1.5\t500\t900\towl\n2\tSpectrogram 1\t1\tabc\t2.5\t500\t900\tfrog\n"
            "3\tSpectrogram 1\t1\t3.0\t3.5\t500\t900\tfrog\n"
        ).encode(),
        {"bad_time"},
    ),
    "raven_windows_1252": (
        "rec.Table.1.selections.txt",
        (
            RAVEN
            + "1\tSpectrogram 1\t1\t1.0\t1.5\t500\t900\tGrünling\n2\tSpectrogram 1\t1\t3.0\t3.5\t5\t9\tfrog\n"
        ).encode("cp1252"),
        set(),
    ),
    "audacity_bad_frequency_line": (
        "rec.txt",
        b"1.0\t1.5\towl\n\\\tlow\thigh\n3.0\t3.5\tfrog\n\\\t500\t900\n",
        {"bad_frequency"},
    ),
    "audacity_bad_time": ("rec.txt", b"1.0\t1.5\towl\nx\t2\tfrog\n3.0\t3.5\tfrog\n", {"bad_time"}),
    "audacity_crlf_bom": ("rec.txt", b"\xef\xbb\xbf1.0\t1.5\towl\r\n3.0\t3.5\tfrog\r\n", set()),
    "points_with_nan": (
        "points.csv",
        (
            POINTS + "rec.wav,1.2,1.2,owl\nrec.wav,nan,nan,frog\nrec.wav,3.2,3.2,frog\nrec.wav,inf,inf,owl\n"
        ).encode(),
        {"bad_time"},
    ),
    "points_semicolon_bom": (
        "points.csv",
        b"\xef\xbb\xbf" + (POINTS + "rec.wav,1.2,1.2,owl\nrec.wav,3.2,3.2,frog\n").replace(",", ";").encode(),
        set(),
    ),
    "points_reversed_negative_past_end": (
        "points.csv",
        (
            POINTS + "rec.wav,1.2,1.2,owl\nrec.wav,3.5,3.0,frog\nrec.wav,-1,-1,owl\nrec.wav,50,50,frog\n"
        ).encode(),
        {"reversed_time", "negative_time", "past_end", "nonzero_duration_in_point_table"},
    ),
    "kaleidoscope_empty_label": (
        "ks.csv",
        b"IN FILE,OFFSET,DURATION,MANUAL ID\nrec.wav,1.0,0.5,owl\nrec.wav,2.0,0.5,\nrec.wav,3.0,0.5,frog\n",
        {"empty_label"},
    ),
    "names_a_broken_link": (
        "points.csv",
        (POINTS + "rec.wav,1.2,1.2,owl\nrec.wav,3.2,3.2,frog\nlinked.wav,1.0,1.0,owl\n").encode(),
        {"unreadable_audio"},
    ),
}

FAILS: dict[str, tuple[str, bytes, type[Exception], str]] = {
    "zero_bytes_csv": ("points.csv", b"", AnnotationError, "is empty (0 bytes)"),
    "zero_bytes_raven": ("rec.Table.1.selections.txt", b"", AnnotationError, "is empty (0 bytes)"),
    "raven_header_only": ("rec.Table.1.selections.txt", RAVEN.encode(), DataError, "hold no annotations"),
    "raven_without_times": (
        "rec.Table.1.selections.txt",
        b"Selection\tSpecies\n1\towl\n",
        AnnotationError,
        "cannot find",
    ),
    "csv_wrong_columns": ("points.csv", b"a,b,c\n1,2,3\n", AnnotationError, "cannot find"),
    "binary_table": ("points.csv", bytes(range(256)) * 8, AnnotationError, "not a text table"),
    "audacity_frequency_lines_only": ("rec.txt", b"\\\t1\t2\n", AnnotationError, "holds no labels"),
    "every_row_unusable": (
        "points.csv",
        (POINTS + "rec.wav,x,y,owl\n").encode(),
        DataError,
        "no usable annotation",
    ),
}


@pytest.fixture
def recordings(tmp_path: Path) -> Path:
    (tmp_path / "audio").mkdir()
    (tmp_path / "audio" / "rec.wav").write_bytes(encoded(signal(5.0), "WAV"))
    (tmp_path / "audio" / "linked.wav").symlink_to(tmp_path / "audio" / "deleted.wav")
    return tmp_path


@pytest.mark.parametrize("kind", sorted(WORKS))
def test_annotation_table_that_works(kind: str, recordings: Path) -> None:
    name, content, expected = WORKS[kind]
    table = recordings / name
    table.write_bytes(content)
    out = recordings / "cat.parquet"
    cat = ingest(annotations=table, audio_dir=recordings / "audio", window_s=1.0, out=out, progress=False)
    assert len(cat) >= 1 and out.is_file()
    report = recordings / "cat.anomalies.csv"
    kinds = set(pd.read_csv(report)["kind"]) if report.exists() else set()
    assert kinds == expected
    if kind == "names_a_broken_link":
        detail = pd.read_csv(report)["detail"].iloc[0]
        assert "broken symbolic link" in detail
    assert not leftovers(recordings)


@pytest.mark.parametrize("kind", sorted(FAILS))
def test_annotation_table_that_fails_clearly(kind: str, recordings: Path) -> None:
    name, content, error, text = FAILS[kind]
    table = recordings / name
    table.write_bytes(content)
    out = recordings / "cat.parquet"
    with pytest.raises(error) as err:
        ingest(annotations=table, audio_dir=recordings / "audio", out=out, progress=False)
    assert text in str(err.value)
    assert not out.exists() and not leftovers(recordings)


def test_single_species_table_reads_and_a_missing_table_is_named(recordings: Path) -> None:
    table = recordings / "piha.csv"
    table.write_text(POINTS + "rec.wav,1.2,1.2,piha\nrec.wav,3.2,3.2,piha\n")
    assert read_annotations(table)["label"].unique().tolist() == ["piha"]
    with pytest.raises(MissingPathError, match="annotation table not found"):
        read_annotations(recordings / "nope.csv")
    with pytest.raises(AnnotationError, match="is a folder"):
        read_annotations(recordings / "audio")
