"""Label CSVs of every kind a spreadsheet or a script produces: each one works (perhaps with
anomaly rows), or raises a DataError that names the file and the line; no partial catalog."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from chirpkit.data.ingest import ingest
from chirpkit.errors import DataError, MissingPathError
from tests.badinput import good, leftovers

HEADER = "path,label,start_s,end_s\n"
GOOD_ROWS = "a.wav,owl,0,1\nb.wav,frog,0,1\n"

# kind -> (file content as bytes, expected anomaly kinds or None for a clean ingest)
WORKS: dict[str, tuple[bytes, set[str]]] = {
    "utf8_bom": (b"\xef\xbb\xbf" + (HEADER + GOOD_ROWS).encode(), set()),
    "bom_crlf_semicolon": (
        b"\xef\xbb\xbf" + (HEADER + GOOD_ROWS).replace(",", ";").replace("\n", "\r\n").encode(),
        set(),
    ),
    "tab_separated": ((HEADER + GOOD_ROWS).replace(",", "\t").encode(), set()),
    "pipe_separated": ((HEADER + GOOD_ROWS).replace(",", "|").encode(), set()),
    "old_mac_cr_line_ends": ((HEADER + GOOD_ROWS).replace("\n", "\r").encode(), set()),
    "utf16_excel_unicode_text": ((HEADER + GOOD_ROWS).replace(",", "\t").encode("utf-16"), set()),
    "windows_1252_label": ((HEADER + "a.wav,Grünspecht,0,1\nb.wav,frog,0,1\n").encode("cp1252"), set()),
    "decimal_comma": (b"path;label;start_s;end_s\na.wav;owl;0,5;1,5\nb.wav;frog;0;1\n", set()),
    "blank_lines": ((HEADER + "\na.wav,owl,0,1\n\n\nb.wav,frog,0,1\n\n").encode(), set()),
    "quoted_fields": (b'path,label,start_s,end_s\n"a.wav","owl, the barn kind",0,1\nb.wav,frog,0,1\n', set()),
    "spaces_around_values": (b"path , label\n a.wav , owl \n b.wav , frog \n", set()),
    "blank_times_mean_whole_file": ((HEADER + "a.wav,owl,,\nb.wav,frog,,\n").encode(), set()),
    "paths_outside_the_csv_folder": (b"path,label\n../outside/c.wav,owl\nb.wav,frog\n", set()),
    "duplicate_rows": ((HEADER + GOOD_ROWS + "a.wav,owl,0,1\n").encode(), {"duplicate"}),
    "conflicting_labels": ((HEADER + GOOD_ROWS + "a.wav,frog,0,1\n").encode(), {"conflicting_labels"}),
    "start_after_end": ((HEADER + "a.wav,owl,1.5,0.5\nb.wav,frog,0,1\n").encode(), {"reversed_time"}),
    "negative_start": ((HEADER + "a.wav,owl,-1,1\nb.wav,frog,0,1\n").encode(), {"negative_time"}),
    "span_before_zero": ((HEADER + GOOD_ROWS + "a.wav,owl,-3,-1\n").encode(), {"negative_time"}),
    "starts_past_the_end": ((HEADER + GOOD_ROWS + "a.wav,owl,9,10\n").encode(), {"past_end"}),
    "ends_past_the_end": ((HEADER + "a.wav,owl,1,7\nb.wav,frog,0,1\n").encode(), {"ends_past_end"}),
    "non_numeric_time": ((HEADER + GOOD_ROWS + "a.wav,owl,0:01,2\n").encode(), {"bad_time"}),
    "infinite_and_nan_times": (
        (HEADER + GOOD_ROWS + "a.wav,owl,inf,2\nb.wav,frog,0,nan\n").encode(),
        {"bad_time"},
    ),
}

# kind -> (content, text the DataError must hold)
FAILS: dict[str, tuple[bytes, str]] = {
    "zero_bytes": (b"", "is empty (0 bytes)"),
    "whitespace_only": (b"\n\n  \r\n", "is empty"),
    "header_only": (HEADER.encode(), "no rows"),
    "missing_columns": (b"x,y\na.wav,owl\n", "needs a file column"),
    "binary_garbage": (bytes(range(256)) * 4, "not a text table"),
    "ragged_rows": (b"path,label\na.wav,owl\nb.wav,frog,extra,more\n", "line 3"),
    "empty_label": (b"path,label\na.wav,\nb.wav,frog\n", "empty label on line(s) [2]"),
    "empty_file_name": (b"path,label\n,owl\nb.wav,frog\n", "empty file name on line(s) [2]"),
    "every_time_unparseable": ((HEADER + "a.wav,owl,x,y\nb.wav,frog,z,w\n").encode(), "usable times"),
    "single_class": (b"path,label\na.wav,owl\nb.wav,owl\n", "only one class ('owl')"),
}


@pytest.fixture
def audio(tmp_path: Path) -> Path:
    good(tmp_path, "a.wav", 500)
    good(tmp_path, "b.wav", 1500)
    good(tmp_path.parent / f"{tmp_path.name}-outside", "c.wav", 900)
    return tmp_path


@pytest.mark.parametrize("kind", sorted(WORKS))
def test_label_table_that_works(kind: str, audio: Path, caplog: pytest.LogCaptureFixture) -> None:
    content, expected = WORKS[kind]
    if kind == "paths_outside_the_csv_folder":
        content = content.replace(b"../outside/", f"../{audio.name}-outside/".encode())
    csv = audio / "labels.csv"
    csv.write_bytes(content)
    out = audio / "cat.parquet"
    cat = ingest(csv, out=out, progress=False)
    assert len(cat) >= 2 and cat["label"].nunique() == 2
    anomalies = audio / "cat.anomalies.csv"
    kinds = set(pd.read_csv(anomalies)["kind"]) if anomalies.exists() else set()
    assert kinds == expected
    assert not leftovers(audio)
    if kind == "windows_1252_label":
        assert "Grünspecht" in set(cat["label"]) and "not UTF-8" in caplog.text
    if kind == "decimal_comma":
        assert cat.loc[cat["label"] == "owl", ["start_s", "end_s"]].iloc[0].tolist() == [0.5, 1.5]
    if kind == "conflicting_labels":  # one example, both labels, the first one the target
        owl = cat[cat["source"].str.endswith("a.wav")]
        assert (
            len(owl) == 1 and owl["label"].iloc[0] == "owl" and list(owl["labels"].iloc[0]) == ["owl", "frog"]
        )
    if kind == "blank_lines":  # line numbers in reports still count the blank lines
        assert cat["label"].tolist() == ["owl", "frog"]


def test_line_numbers_count_blank_lines(audio: Path) -> None:
    csv = audio / "labels.csv"
    csv.write_text(HEADER + "\n\na.wav,owl,0,1\nb.wav,frog,0,1\n\na.wav,owl,x,1\n")
    ingest(csv, out=audio / "cat.parquet", progress=False)
    report = pd.read_csv(audio / "cat.anomalies.csv")
    assert report[["row", "kind", "detail"]].values.tolist() == [[7, "bad_time", "start_s='x'"]]


def test_missing_and_linked_files_are_skipped_with_their_line(audio: Path) -> None:
    (audio / "gone.wav").symlink_to(audio / "never.wav")
    csv = audio / "labels.csv"
    csv.write_text("path,label\na.wav,owl\nb.wav,frog\nmissing.wav,owl\ngone.wav,frog\n")
    ingest(csv, out=audio / "cat.parquet", progress=False)
    skipped = pd.read_csv(audio / "cat.skipped.csv")
    reasons = dict(zip([Path(s).name for s in skipped["source"]], skipped["reason"], strict=True))
    assert reasons["missing.wav"] == "file does not exist (line 4)"
    assert reasons["gone.wav"].startswith("broken symbolic link") and reasons["gone.wav"].endswith("(line 5)")


@pytest.mark.parametrize("kind", sorted(FAILS))
def test_label_table_that_fails_clearly(kind: str, audio: Path) -> None:
    content, text = FAILS[kind]
    csv = audio / "labels.csv"
    csv.write_bytes(content)
    out = audio / "cat.parquet"
    with pytest.raises(DataError) as err:
        ingest(csv, out=out, progress=False)
    assert text in str(err.value)
    assert str(csv) in str(err.value) or kind == "single_class"
    assert not out.exists() and not out.with_suffix(".csv").exists() and not leftovers(audio)


def test_missing_label_table(tmp_path: Path) -> None:
    with pytest.raises(MissingPathError, match="not found"):
        ingest(tmp_path / "nope.csv", progress=False)
