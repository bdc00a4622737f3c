"""Reading and checking the inputs of :func:`chirpkit.detection.events.score_detections`.

Every malformed input is a :class:`~chirpkit.errors.ChirpkitError` that names the file, the line
and the value: a missing, empty, unreadable or ragged detections file, missing columns, times that
are not finite numbers, an end before its start, an empty label or file; an annotation table that
is empty, unreadable in the format given, or has a time that is not a number. Annotations that end
before they start are swapped, and unlabelled ones left out, with a warning.
"""

from __future__ import annotations

import csv
import logging
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from chirpkit.errors import AnnotationError, ChirpkitError, DataError, MissingPathError

__all__ = ["read_annotation_tables", "read_detections", "scanned_recordings"]

log = logging.getLogger("chirpkit")


def _ragged_line(path: Path) -> int:
    """The first line of a CSV with more fields than its header."""
    with path.open(encoding="utf-8-sig", newline="") as fh:
        rows = csv.reader(fh)
        width = len(next(rows, []))
        for row in rows:
            if len(row) > width:
                return rows.line_num
    return 0


def _where(path: str | None, i: int) -> str:
    return f"detections file {path} line {i + 2}" if path else f"detections row {i}"


def read_detections(detections: pd.DataFrame | str | os.PathLike[str]) -> tuple[pd.DataFrame, str | None]:
    """The detections table, checked: columns, finite times with end >= start, labels, scores."""
    path: str | None = None
    if isinstance(detections, pd.DataFrame):
        table = detections.copy()
    else:
        p = Path(detections)
        path = str(p)
        if not p.exists():
            raise MissingPathError(
                f"detections file not found: {p} (give detections.csv or events.csv from detect)"
            )
        if p.is_dir():
            raise DataError(f"{p} is a folder; give the detections.csv or events.csv that detect wrote in it")
        if p.stat().st_size == 0:
            raise DataError(f"detections file {p} is empty (0 bytes); expected {DET_HELP}")
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", pd.errors.ParserWarning)
                table = pd.read_csv(
                    p, dtype=str, keep_default_na=False, encoding="utf-8-sig", index_col=False
                )
        except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
            raise DataError(f"cannot read detections file {p} as CSV ({exc}); expected {DET_HELP}") from exc
        if any(issubclass(w.category, pd.errors.ParserWarning) for w in caught):
            raise DataError(
                f"detections file {p} line {_ragged_line(p)}: more fields than the header; fix the row"
            )
    table.columns = [str(c).strip() for c in table.columns]
    missing = [c for c in ("file", "start_s", "end_s", "label") if c not in table.columns]
    if missing:
        where = f"detections file {path}" if path else "detections"
        raise DataError(
            f"{where} lacks column(s) {missing}; it has {list(table.columns)[:12]}; expected {DET_HELP}"
        )
    table = table.reset_index(drop=True)
    for col in ("start_s", "end_s", *(c for c in ("max_score", "score") if c in table.columns)):
        raw = table[col]
        values = pd.to_numeric(raw.astype(str).str.strip() if raw.dtype == object else raw, errors="coerce")
        bad = np.flatnonzero(~np.isfinite(values.to_numpy(dtype=float)))
        if len(bad):
            i = int(bad[0])
            raise DataError(
                f"{_where(path, i)}: {col} = {raw.iloc[i]!r} is not a finite number"
                f"{f' ({len(bad)} such rows)' if len(bad) > 1 else ''}; fix or remove the row"
            )
        table[col] = values.astype(float)
    back = np.flatnonzero((table["end_s"] < table["start_s"]).to_numpy())
    if len(back):
        i = int(back[0])
        raise DataError(
            f"{_where(path, i)}: end_s {table['end_s'].iloc[i]} is before start_s {table['start_s'].iloc[i]}"
        )
    for col in ("file", "label"):
        table[col] = table[col].astype(str).str.strip()
        empty = np.flatnonzero((table[col] == "").to_numpy())
        if len(empty):
            raise DataError(f"{_where(path, int(empty[0]))}: empty {col}; every detection needs a {col}")
    return table, path


DET_HELP = (
    "a CSV with columns file,start_s,end_s,label (+ score or max_score), as chirpkit detect writes; "
    "score-detections takes the detections first, then the annotation table(s)"
)


def read_annotation_tables(
    annotations: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | pd.DataFrame,
    *,
    format: str,
    label_column: str | None,
    columns: Mapping[str, str] | None,
) -> pd.DataFrame:
    """Annotations in the common frame, with finite times; unreadable tables are clear errors."""
    from chirpkit.data.annotations import read_annotations

    if isinstance(annotations, pd.DataFrame):
        ann = annotations.copy()
        missing = [c for c in ("file", "start_s", "end_s", "label") if c not in ann.columns]
        if missing:
            raise AnnotationError(f"annotations lack column(s) {missing}; they have {list(ann.columns)}")
    else:
        tables = [annotations] if isinstance(annotations, (str, os.PathLike)) else list(annotations)
        frames = []
        for t in tables:
            p = Path(t)
            if p.is_dir():
                raise AnnotationError(f"{p} is a folder; give the annotation table(s) in it")
            if p.is_file() and p.stat().st_size == 0:
                raise AnnotationError(f"annotation table {p} is empty (0 bytes)")
            try:
                frames.append(read_annotations(p, format=format, label_column=label_column, columns=columns))
            except ChirpkitError:
                raise
            except (
                ValueError,
                TypeError,
                KeyError,
                IndexError,
                csv.Error,
            ) as exc:  # a reader's parse failure
                raise AnnotationError(
                    f"cannot read annotation table {p} (format {format}): {exc}; give a points/box CSV, "
                    "a Raven selection table or an Audacity label track, or --format and --columns"
                ) from exc
        ann = pd.concat(frames, ignore_index=True)
    for col in ("start_s", "end_s"):
        values = pd.to_numeric(ann[col], errors="coerce").to_numpy(dtype=float)
        bad = np.flatnonzero(~np.isfinite(values))
        if len(bad):
            more = f"; {len(bad)} such rows" if len(bad) > 1 else ""
            first = np.zeros(len(ann), dtype=bool)
            first[bad[0]] = True
            raise AnnotationError(
                f"annotation table {_first(ann, first)}: {col.replace('_s', '')} time is not a finite "
                f"number of seconds (empty, text, NaN or inf){more}; fix or remove the row"
            )
        ann[col] = values
    back = (ann["end_s"] < ann["start_s"]).to_numpy()
    if back.any():
        log.warning(
            "score-detections: %d annotation(s) end before they start (first: %s); start and end swapped",
            int(back.sum()),
            _first(ann, back),
        )
    ann["label"] = ann["label"].astype(str)
    unlabelled = (ann["label"].str.strip() == "").to_numpy()
    if unlabelled.any():
        log.warning(
            "score-detections: %d annotation(s) without a label left out (first: %s)",
            int(unlabelled.sum()),
            _first(ann, unlabelled),
        )
    return ann[~unlabelled]


def _first(ann: pd.DataFrame, mask: np.ndarray) -> str:
    """Where the first masked annotation comes from: ``table line N`` (or its row number)."""
    i = int(np.flatnonzero(mask)[0])
    if {"table", "row"} <= set(ann.columns):
        return f"{ann['table'].iloc[i]} line {ann['row'].iloc[i]}"
    return f"row {i}"


def scanned_recordings(det_path: str | None) -> list[str] | None:
    """The recordings a ``detect`` output folder says were scanned (its ``manifest.csv``)."""
    if det_path is None:
        return None
    manifest = Path(det_path).parent / "manifest.csv"
    if not manifest.is_file():
        return None
    try:
        done = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"cannot read {manifest} ({exc}); pass recordings= or move the file aside") from exc
    if not {"file", "status"} <= set(done.columns):
        raise DataError(
            f"{manifest} lacks the file/status columns that detect writes; it has {list(done.columns)}"
        )
    return done.loc[done["status"].isin(["done", "reused"]), "file"].tolist()
