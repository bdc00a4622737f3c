"""Bad input to score-detections: each kind works, or is a clear error naming the file, line and
value; no case leaves a partial output behind."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from chirpkit.cli import main
from chirpkit.detection.events import score_detections
from chirpkit.errors import AnnotationError, ConfigError, DataError, MissingPathError

DET_HEAD = "file,start_s,end_s,label,score\n"
DET = DET_HEAD + "r1.wav,0,3,a,0.9\nr1.wav,10,13,a,0.8\n"
ANN_HEAD = "Filename,Start Time (s),End Time (s),Species eBird Code\n"
ANN = ANN_HEAD + "r1.wav,1,2,a\nr1.wav,30,31,a\n"
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR garbage \xff\xfe"
MISSING, FOLDER = object(), object()

# (id, detections, annotation table, keyword arguments, expected)
# expected: (error class, regex on the message) or a dict of figures of the `all` row
CASES: list[tuple[str, Any, Any, dict[str, Any], Any]] = [
    # detections
    ("det-missing", MISSING, ANN, {}, (MissingPathError, r"detections file not found: .*det\.csv")),
    ("det-folder", FOLDER, ANN, {}, (DataError, r"is a folder; give the detections\.csv")),
    ("det-empty", "", ANN, {}, (DataError, r"det\.csv is empty \(0 bytes\)")),
    ("det-header-only", DET_HEAD, ANN, {}, {"detections": 0, "tp": 0, "fn": 2}),
    ("det-wrong-columns", "a,b,c\n1,2,3\n", ANN, {}, (DataError, r"lacks column\(s\) \['file', 'start_s'")),
    ("det-is-annotations", ANN, ANN, {}, (DataError, r"detections first, then the annotation")),
    ("det-text-time", DET + "r1.wav,zero,3,a,0.9\n", ANN, {}, (DataError, r"line 4: start_s = 'zero'")),
    (
        "det-empty-time",
        DET_HEAD + "r1.wav,0,3,a,0.9\nr1.wav,,3,a,0.9\n",
        ANN,
        {},
        (DataError, r"line 3: start_s = ''"),
    ),
    ("det-nan-time", DET_HEAD + "r1.wav,nan,3,a,0.9\n", ANN, {}, (DataError, r"line 2: start_s = 'nan'")),
    ("det-inf-time", DET_HEAD + "r1.wav,0,inf,a,0.9\n", ANN, {}, (DataError, r"line 2: end_s = 'inf'")),
    (
        "det-end-first",
        DET_HEAD + "r1.wav,5,3,a,0.9\n",
        ANN,
        {},
        (DataError, r"line 2: end_s 3.0 is before start_s 5.0"),
    ),
    ("det-no-label", DET_HEAD + "r1.wav,0,3,,0.9\n", ANN, {}, (DataError, r"line 2: empty label")),
    ("det-no-file", DET_HEAD + ",0,3,a,0.9\n", ANN, {}, (DataError, r"line 2: empty file")),
    ("det-nan-score", DET_HEAD + "r1.wav,0,3,a,nan\n", ANN, {}, (DataError, r"line 2: score = 'nan'")),
    ("det-binary", PNG, ANN, {}, (DataError, r"det\.csv")),
    (
        "det-ragged",
        DET + "r1.wav,0,3,a,0.9,7,8\n",
        ANN,
        {},
        (DataError, r"det\.csv .*line 4"),
    ),
    (
        "det-ragged-first",
        DET_HEAD + "r1.wav,0,3,a,0.9,7\n",
        ANN,
        {},
        (DataError, r"line 2: more fields than the header"),
    ),
    (
        "det-no-score",
        "file,start_s,end_s,label\nr1.wav,0,3,a\n",
        ANN,
        {},
        {"detections": 1, "tp": 1, "fn": 1},
    ),
    ("det-bom-crlf", "\ufeff" + DET.replace("\n", "\r\n"), ANN, {}, {"detections": 2, "tp": 1, "fp": 1}),
    # annotation tables
    ("ann-missing", DET, MISSING, {}, (MissingPathError, r"annotation table not found")),
    ("ann-folder", DET, FOLDER, {}, (AnnotationError, r"is a folder")),
    ("ann-empty", DET, "", {}, (AnnotationError, r"ann\.csv is empty \(0 bytes\)")),
    ("ann-header-only", DET, ANN_HEAD, {}, {"annotations": 0, "fp": 2}),
    ("ann-wrong-columns", DET, "foo,bar\n1,2\n", {}, (AnnotationError, r"cannot find the file, start")),
    (
        "ann-text-time",
        DET,
        ANN_HEAD + "r1.wav,x,2,a\n",
        {},
        (AnnotationError, r"ann\.csv line 2: start time is not"),
    ),
    (
        "ann-empty-time",
        DET,
        ANN + "r1.wav,4,,a\n",
        {},
        (AnnotationError, r"ann\.csv line 4: end time is not"),
    ),
    (
        "ann-inf-time",
        DET,
        ANN_HEAD + "r1.wav,1,inf,a\n",
        {},
        (AnnotationError, r"line 2: end time is not a finite"),
    ),
    ("ann-binary", DET, PNG, {}, (AnnotationError, r"ann\.csv")),
    ("ann-json", DET, '{"calls": [1, 2]}', {}, (AnnotationError, r"ann\.csv: cannot find the file")),
    ("ann-csv-as-raven", DET, ANN, {"format": "raven"}, (AnnotationError, r"Raven table .*lacks column")),
    (
        "ann-csv-as-audacity",
        DET,
        ANN,
        {"format": "audacity"},
        (AnnotationError, r"Audacity label track .*line 1"),
    ),
    ("ann-unknown-format", DET, ANN, {"format": "praat"}, (AnnotationError, r"unknown annotation format")),
    (
        "ann-raven-no-end",
        DET,
        "Selection\tView\tBegin Time (s)\tSpecies\n1\tSpectrogram 1\t1.0\ta\n",
        {"format": "raven"},
        (AnnotationError, r"lacks column 'End Time \(s\)'"),
    ),
    (
        "ann-audacity-bad-freq",
        DET,
        "1.0\t2.0\ta\n\\\tlow\thigh\n",
        {"format": "audacity"},
        # a frequency line that is not numeric is ignored (the reader lists it in its anomalies):
        # frequencies play no part in scoring; the label is on the track's recording, "ann"
        {"annotations": 1, "detections": 2, "tp": 0, "fn": 1},
    ),
    (
        "ann-ragged",
        DET,
        ANN_HEAD + "r1.wav,1,2,a,5,6,7\n",
        {},
        (AnnotationError, r"cannot read annotation table"),
    ),
    ("ann-end-first", DET, ANN_HEAD + "r1.wav,2,1,a\n", {}, {"annotations": 1, "tp": 1}),  # swapped, warned
    ("ann-no-label", DET, ANN + "r1.wav,5,6,\n", {}, {"annotations": 2, "tp": 1}),  # left out, warned
    # options
    ("opt-rule", DET, ANN, {"rule": "center"}, (ConfigError, r"rule='center' must be one of")),
    ("opt-matching", DET, ANN, {"matching": "many"}, (ConfigError, r"matching='many'")),
    ("opt-negative-tolerance", DET, ANN, {"tolerance_s": -1.0}, (ConfigError, r"tolerance_s=-1.0")),
    ("opt-nan-tolerance", DET, ANN, {"tolerance_s": float("nan")}, (ConfigError, r"tolerance_s=nan")),
    ("opt-min-iou", DET, ANN, {"rule": "iou", "min_iou": 0.0}, (ConfigError, r"min_iou=0.0 must be in")),
]


def _write(path: Path, content: Any) -> Path:
    if content is MISSING:
        return path
    if content is FOLDER:
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8", newline="")
    return path


def _leftovers(root: Path, out: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and (p == out or p.name.startswith(f".{out.name}.tmp"))]


@pytest.mark.parametrize("case,det,ann,kwargs,expected", CASES, ids=[c[0] for c in CASES])
def test_bad_input(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    case: str,
    det: Any,
    ann: Any,
    kwargs: dict[str, Any],
    expected: Any,
) -> None:
    d = _write(tmp_path / "det.csv", det)
    a = _write(tmp_path / "ann.csv", ann)
    out = tmp_path / "scores" / "score.csv"
    if isinstance(expected, tuple):
        error, pattern = expected
        with pytest.raises(error, match=pattern):
            score_detections(d, a, out=out, **kwargs)
        assert _leftovers(tmp_path, out) == []  # nothing half-written
        return
    with caplog.at_level(logging.WARNING, logger="chirpkit"):
        table = score_detections(d, a, out=out, **kwargs)
    row = table.set_index("class").loc["all"]
    assert {k: int(row[k]) for k in expected} == expected
    assert pd.read_csv(out)["class"].tolist() == table["class"].tolist()  # complete output
    if case in ("ann-end-first", "ann-no-label"):
        assert "ann.csv line 2" in caplog.text or "ann.csv line 4" in caplog.text


def test_a_broken_manifest_beside_the_detections_is_named(tmp_path: Path) -> None:
    run = tmp_path / "detect-out"
    run.mkdir()
    _write(run / "detections.csv", DET)
    _write(run / "manifest.csv", "what,ever\n1,2\n")
    with pytest.raises(DataError, match=r"manifest\.csv lacks the file/status columns"):
        score_detections(run / "detections.csv", _write(tmp_path / "ann.csv", ANN))


def test_an_output_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "scores").mkdir()
    with pytest.raises(ConfigError, match="is a folder"):
        score_detections(
            _write(tmp_path / "d.csv", DET), _write(tmp_path / "a.csv", ANN), out=tmp_path / "scores"
        )


@pytest.mark.parametrize(
    "det,ann,extra,message",
    [
        ("", ANN, [], "is empty (0 bytes)"),
        (DET_HEAD + "r1.wav,zero,3,a,0.9\n", ANN, [], "line 2: start_s = 'zero'"),
        (DET, "foo,bar\n1,2\n", [], "cannot find the file, start"),
        (DET, ANN, ["--label-map", "PIHA"], "--label-map 'PIHA' must look like"),
        (MISSING, ANN, [], "detections file not found"),
    ],
)
def test_cli_says_what_and_where_without_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], det: Any, ann: Any, extra: list[str], message: str
) -> None:
    d = _write(tmp_path / "det.csv", det)
    a = _write(tmp_path / "ann.csv", ann)
    out = tmp_path / "score.csv"
    assert main(["score-detections", str(d), str(a), "--out", str(out), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("chirpkit score-detections: error:") and message in err
    assert "Traceback" not in err and not out.exists()
