"""Annotation tables: read point/box CSVs, Raven selection tables and Audacity label tracks.

Every reader returns the same frame, one row per annotation:

==============  =================================================================
column          meaning
==============  =================================================================
file            the audio file as the table names it (a name or a relative path)
start_s         start (s); for a point annotation start_s == end_s
end_s           end (s)
label           the class ("" when the table leaves it empty: reported, then dropped)
low_freq_hz     lower frequency of the box, if the table has one
high_freq_hz    upper frequency of the box, if the table has one
group           a group column of the table, if mapped
row             line number in the table (for messages)
table           the table's path
==============  =================================================================

Formats (``format="auto"`` detects them from the header):

* ``points`` — the published Kenya soundscape format: ``Filename, Start Time (s), End Time (s),
  Species eBird Code``; start = end means a point annotation.
* ``raven`` — Raven selection tables (tab-separated ``Begin Time (s)``, ``End Time (s)``,
  ``Low Freq (Hz)``, ``High Freq (Hz)``, a label column); a selection shown in several views
  (spectrogram + waveform rows) is kept once; ``Begin File``/``Begin Path`` (+ ``File Offset (s)``)
  name the file when present, else the table's own name does (``X.Table.1.selections.txt`` → X).
* ``audacity`` — Audacity label tracks: ``start<TAB>end<TAB>label`` lines, each optionally followed
  by a ``\\<TAB>low<TAB>high`` frequency line; the file is the track's name (``x.txt`` → x).
* ``kaleidoscope`` — ``IN FILE, OFFSET, DURATION, MANUAL ID`` (Kaleidoscope / PyHa exports).
* ``csv`` — any CSV; columns are found by common names or given with ``columns={"file": ...,
  "start": ..., "end": ... | "duration": ..., "label": ..., "low_freq": ..., "high_freq": ...,
  "group": ...}``.
"""

from __future__ import annotations

import csv
import io
import os
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from chirpkit.data.options import ANNOTATION_FORMATS
from chirpkit.errors import AnnotationError
from chirpkit.utils.io import read_text_table

__all__ = ["ANNOTATION_FORMATS", "detect_format", "read_annotations"]

COLUMNS = ["file", "start_s", "end_s", "label", "low_freq_hz", "high_freq_hz", "group", "row", "table"]

_NAMES: dict[str, tuple[str, ...]] = {
    "file": (
        "filename",
        "file",
        "path",
        "source",
        "begin file",
        "begin path",
        "in file",
        "audio",
        "recording",
    ),
    "start": ("start time (s)", "begin time (s)", "start_s", "start", "begin", "onset", "offset", "t_start"),
    "end": ("end time (s)", "end_s", "end", "stop", "offset_end", "t_end"),
    "duration": ("duration", "duration_s", "delta time (s)"),
    "label": (
        "species ebird code",
        "species",
        "label",
        "class",
        "annotation",
        "manual id",
        "category",
        "code",
        "ebird",
    ),
    "low_freq": ("low freq (hz)", "low_freq_hz", "low_freq", "fmin", "min_frequency", "low"),
    "high_freq": ("high freq (hz)", "high_freq_hz", "high_freq", "fmax", "max_frequency", "high"),
    "group": ("group", "site", "recorder", "location", "deployment"),
}


def _find(columns: list[str], key: str, mapping: Mapping[str, str] | None) -> str | None:
    if mapping and key in mapping:
        if mapping[key] not in columns:
            raise AnnotationError(
                f"column {mapping[key]!r} (mapped to {key!r}) is not in the table; it has {columns}"
            )
        return mapping[key]
    lower = {c.strip().lower(): c for c in columns}
    for name in _NAMES[key]:
        if name in lower:
            return lower[name]
    return None


def _numbers(table: pd.DataFrame, col: str | None) -> np.ndarray:
    """Seconds or Hz of a column; blank, text and infinite values are NaN (reported as bad times)."""
    if col is None:
        return np.full(len(table), np.nan)
    values = pd.to_numeric(table[col].astype(str).str.strip(), errors="coerce")  # "" -> NaN
    out = np.array(values, dtype=float)
    out[~np.isfinite(out)] = np.nan
    return out


def _text(path: Path) -> str:
    return read_text_table(path, "annotation table", AnnotationError)


def _first_line(text: str) -> str:
    return next((line for line in text.split("\n") if line.strip()), "")


def _table(text: str, path: Path, sep: str) -> pd.DataFrame:
    try:
        return pd.read_csv(io.StringIO(text), sep=sep, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, ValueError) as exc:
        raise AnnotationError(f"cannot read annotation table {path}: {str(exc).strip()[:300]}") from exc


def detect_format(path: str | os.PathLike[str]) -> str:
    """Guess a table's format from its first non-empty line."""
    return _detect(_text(Path(path)))


def _detect(text: str) -> str:
    first = _first_line(text)
    low = first.lower()
    if "\t" in first and "begin time (s)" in low:
        return "raven"
    if first.startswith("\\\t"):  # an Audacity frequency line (a track that starts oddly)
        return "audacity"
    fields = first.split("\t")
    if len(fields) >= 2 and all(re.fullmatch(r"-?\d+(\.\d*)?([eE][-+]?\d+)?", f.strip()) for f in fields[:2]):
        return "audacity"
    if "in file" in low and "offset" in low and "duration" in low:
        return "kaleidoscope"
    if "start time (s)" in low and "end time (s)" in low:
        return "points"
    return "csv"


def _frame(
    table_path: Path,
    files: object,
    start: np.ndarray,
    end: np.ndarray,
    labels: object,
    rows: object,
    low: np.ndarray | None = None,
    high: np.ndarray | None = None,
    group: object = None,
) -> pd.DataFrame:
    n = len(start)
    return pd.DataFrame(
        {
            "file": files,
            "start_s": start,
            "end_s": end,
            "label": labels,
            "low_freq_hz": low if low is not None else np.full(n, np.nan),
            "high_freq_hz": high if high is not None else np.full(n, np.nan),
            "group": group if group is not None else [None] * n,
            "row": rows,
            "table": str(table_path),
        }
    )[COLUMNS]


def _stem_of_table(path: Path) -> str:
    name = path.name
    m = re.match(r"(.+?)\.Table\.\d+\.selections\.txt$", name, flags=re.IGNORECASE)
    return m.group(1) if m else path.stem


def _read_raven(path: Path, text: str, label_column: str | None) -> pd.DataFrame:
    table = _table(text, path, "\t")
    cols = list(table.columns)
    for need in ("Begin Time (s)", "End Time (s)"):
        if need not in cols:
            raise AnnotationError(f"Raven table {path} lacks column {need!r}; it has {cols}")
    rows = table.index.to_numpy() + 2
    if "Selection" in cols:  # one selection shown in several views: keep its first row
        keep = ~table["Selection"].duplicated()
        table, rows = table[keep.to_numpy()], rows[keep.to_numpy()]
    if label_column is not None:
        if label_column not in cols:
            raise AnnotationError(
                f"label column {label_column!r} is not in Raven table {path}; it has {cols}"
            )
        lab_col: str | None = label_column
    else:
        lab_col = next(
            (c for c in ("Species", "Annotation", "Label", "Class", "label", "species", "Code") if c in cols),
            None,
        )
        if lab_col is None:
            raise AnnotationError(
                f"Raven table {path}: no label column found (tried Species, Annotation, Label, Class); "
                f"name it with label_column=... (--label-column). Columns: {cols}"
            )
    begin, end = _numbers(table, "Begin Time (s)"), _numbers(table, "End Time (s)")
    file_col = next((c for c in ("Begin File", "Begin Path") if c in cols), None)
    if file_col is not None:
        files = [Path(v).name if file_col == "Begin Path" else v for v in table[file_col]]
        if "File Offset (s)" in cols:  # times relative to the file rather than the session
            offset = _numbers(table, "File Offset (s)")
            end = offset + (end - begin)
            begin = offset
    else:
        files = [_stem_of_table(path)] * len(table)
    low = _numbers(table, "Low Freq (Hz)") if "Low Freq (Hz)" in cols else None
    high = _numbers(table, "High Freq (Hz)") if "High Freq (Hz)" in cols else None
    labels = table[lab_col].astype(str).str.strip().to_numpy()
    return _frame(path, files, begin, end, labels, rows, low, high)


def _read_audacity(path: Path, text: str) -> pd.DataFrame:
    """Label lines ``start<TAB>end[<TAB>label]``; a ``\\<TAB>low<TAB>high`` line adds the frequency
    box of the label above it. Times that are not numbers give NaN (reported and dropped by ingest);
    a frequency line that is not numeric is ignored and listed in ``attrs["anomalies"]``."""
    records: list[dict[str, object]] = []
    notes: list[dict[str, object]] = []
    for lineno, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if fields[0].strip() == "\\":  # frequency line of the previous label
            low = _float(fields[1]) if len(fields) > 1 else None
            high = _float(fields[2]) if len(fields) > 2 else None
            if not records or low is None or high is None:
                notes.append(
                    {
                        "table": str(path),
                        "row": lineno,
                        "file": path.stem,
                        "kind": "bad_frequency",
                        "detail": f"frequency line {line.strip()[:60]!r}"
                        + ("" if records else " before any label"),
                        "action": "ignored",
                    }
                )
                continue
            records[-1]["low"], records[-1]["high"] = low, high
            continue
        if len(fields) < 2:
            raise AnnotationError(
                f"Audacity label track {path}, line {lineno}: expected start<TAB>end<TAB>label, "
                f"got {line.strip()[:60]!r}"
            )
        start, end = _float(fields[0]), _float(fields[1])
        label = fields[2].strip() if len(fields) > 2 else ""
        records.append(
            {
                "start": np.nan if start is None else start,
                "end": np.nan if end is None else end,
                "label": label,
                "row": lineno,
                "low": np.nan,
                "high": np.nan,
            }
        )
    if not records:
        raise AnnotationError(f"Audacity label track {path} holds no labels")
    r = pd.DataFrame(records)
    df = _frame(
        path,
        [path.stem] * len(r),
        r["start"].to_numpy(float),
        r["end"].to_numpy(float),
        r["label"].to_numpy(),
        r["row"].to_numpy(),
        r["low"].to_numpy(float),
        r["high"].to_numpy(float),
    )
    df.attrs["anomalies"] = notes
    return df


def _float(text: str) -> float | None:
    """A finite number, or None."""
    try:
        value = float(text.strip())
    except ValueError:
        return None
    return value if np.isfinite(value) else None


def _read_csv(
    path: Path, text: str, fmt: str, columns: Mapping[str, str] | None, label_column: str | None
) -> pd.DataFrame:
    try:
        dialect = csv.Sniffer().sniff(text[:4096], delimiters=",;\t")
        sep = dialect.delimiter
    except csv.Error:
        sep = ","
    table = _table(text, path, sep)
    cols = list(table.columns)
    mapping = dict(columns or {})
    if label_column is not None:
        mapping["label"] = label_column
    if fmt == "kaleidoscope":
        mapping.setdefault("file", "IN FILE")
        mapping.setdefault("start", "OFFSET")
        mapping.setdefault("duration", "DURATION")
        mapping.setdefault("label", "MANUAL ID")
    unknown = set(mapping) - set(_NAMES)
    if unknown:
        raise AnnotationError(f"unknown column mapping key(s) {sorted(unknown)}; valid: {sorted(_NAMES)}")
    file_col, start_col = _find(cols, "file", mapping), _find(cols, "start", mapping)
    end_col, dur_col = _find(cols, "end", mapping), _find(cols, "duration", mapping)
    label_col = _find(cols, "label", mapping)
    missing = [k for k, c in (("file", file_col), ("start", start_col), ("label", label_col)) if c is None]
    if end_col is None and dur_col is None:
        missing.append("end or duration")
    if missing:
        raise AnnotationError(
            f"annotation table {path}: cannot find the {', '.join(missing)} column(s) among {cols}; "
            "map them with columns={'file': ..., 'start': ..., 'end': ..., 'label': ...} "
            "(--columns file=NAME,start=NAME,end=NAME,label=NAME)"
        )
    start = _numbers(table, start_col)
    end = _numbers(table, end_col) if end_col is not None else start + _numbers(table, dur_col)
    low_col, high_col = _find(cols, "low_freq", mapping), _find(cols, "high_freq", mapping)
    group_col = _find(cols, "group", mapping)
    files = table[file_col].astype(str).str.strip().to_numpy()
    if fmt == "kaleidoscope" and "FOLDER" in cols:
        files = np.array(
            [
                str(Path(d.strip()) / f) if d.strip() else f
                for d, f in zip(table["FOLDER"], files, strict=True)
            ]
        )
    return _frame(
        path,
        files,
        start,
        end,
        table[label_col].astype(str).str.strip().to_numpy(),
        table.index.to_numpy() + 2,
        _numbers(table, low_col) if low_col else None,
        _numbers(table, high_col) if high_col else None,
        table[group_col].astype(str).to_numpy() if group_col else None,
    )


def read_annotations(
    path: str | os.PathLike[str],
    *,
    format: str = "auto",
    label_column: str | None = None,
    columns: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """Read an annotation table into the common frame (see the module docstring).

    ``df.attrs["format"]`` holds the format read and ``df.attrs["point_table"]`` whether most
    annotations are points (start == end), as in the Kenya soundscape tables.

    ``df.attrs["anomalies"]`` lists lines the reader ignored (anomaly report rows).

    Times that are not finite numbers are NaN (:func:`chirpkit.ingest` reports and drops them).

    Raises:
        MissingPathError: the table does not exist.
        AnnotationError: unknown format, an empty or binary file, missing columns, unparseable
            lines.
    """
    p = Path(path)
    if format not in ANNOTATION_FORMATS:
        raise AnnotationError(f"unknown annotation format {format!r}; use one of {ANNOTATION_FORMATS}")
    text = _text(p)
    fmt = _detect(text) if format == "auto" else format
    if fmt == "raven":
        df = _read_raven(p, text, label_column)
    elif fmt == "audacity":
        df = _read_audacity(p, text)
    else:
        df = _read_csv(p, text, fmt, columns, label_column)
    notes = df.attrs.get("anomalies", [])
    df = df.reset_index(drop=True)
    df.attrs["anomalies"] = notes
    points = np.isclose(df["start_s"], df["end_s"], atol=1e-9)
    df.attrs["format"] = fmt
    df.attrs["point_table"] = bool(points.mean() > 0.5) if len(df) else False
    return df
