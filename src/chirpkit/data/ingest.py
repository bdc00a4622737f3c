"""Ingest: turn a folder of class sub-folders or a label CSV into a catalog.

Every file is probed (header only); files that cannot be read are skipped with one line each in a
skip report (``<catalog>.skipped.csv``: source, reason) instead of stopping the job.

Rows of a label CSV are checked like annotation tables (see :mod:`chirpkit.data.annotated`), and
each problem is a row of the anomaly report (``<catalog>.anomalies.csv``): ``bad_time``
(unparseable or infinite time: dropped), ``reversed_time`` (start after end: swapped),
``negative_time`` (start clipped to 0; a span that ends before 0 is dropped), ``past_end`` (starts
after the file ends: dropped), ``ends_past_end`` (clipped), ``duplicate`` (the same file, span and
labels again: dropped) and ``conflicting_labels`` (the same file and span with other labels:
merged into the first row, whose label stays the training target and whose ``labels`` lists all).
"""

from __future__ import annotations

import io
import logging
import os
import re
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from chirpkit._options import takes_options
from chirpkit.audio import AudioInfo, info
from chirpkit.data.catalog import (
    CORE_COLUMNS,
    LABEL_SEP,
    META_COLUMNS,
    group_rule,
    validate_catalog,
    write_catalog,
)
from chirpkit.data.options import IngestOptions
from chirpkit.data.reviews import ingest_reviews
from chirpkit.errors import AudioDecodeError, DataError
from chirpkit.utils.io import existing_path, read_text_table
from chirpkit.utils.threads import thread_map

__all__ = ["group_rule", "ingest", "read_label_table"]

log = logging.getLogger("chirpkit")

_PATH_COLS = ("path", "file", "filename", "filepath", "source", "audio", "file_path")
_LABEL_COLS = ("label", "labels", "class", "category", "species", "target_name")
_GROUP_COLS = ("group", "recording", "site", "speaker", "src_file")
_IGNORED_NAMES = {".DS_Store", "Thumbs.db", "desktop.ini"}


def _pick(columns: Iterable[str], names: Sequence[str]) -> str | None:
    lower = {c.lower().strip(): c for c in columns}
    for n in names:
        if n in lower:
            return lower[n]
    return None


_SEPARATORS = (",", ";", "\t", "|")
_TIME_TOL_S = 0.05  # a span may end this far past the file's end (header rounding) unreported
_DECIMAL_COMMA = re.compile(r"^-?\d+,\d+$")


def _separator(header: str) -> str:
    """The separator of a table: the one its header line uses most (Excel writes `;` in many locales)."""
    counts = {d: header.count(d) for d in _SEPARATORS}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


def _seconds(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """``(seconds, bad)``: blank cells are NaN (not bad); text or non-finite numbers are bad.
    A decimal comma (``1,5`` from a `;`-separated export) reads as ``1.5``."""
    text = values.astype(str).str.strip()
    text = text.where(~text.str.match(_DECIMAL_COMMA), text.str.replace(",", ".", regex=False))
    num = np.array(pd.to_numeric(text.where(text != ""), errors="coerce"), dtype=float)
    bad = (text != "").to_numpy() & ~np.isfinite(num)
    num[bad] = np.nan
    return num, bad


def _anomaly(table: str, row: Any, file: str, kind: str, detail: str, action: str) -> dict[str, Any]:
    return {"table": table, "row": row, "file": file, "kind": kind, "detail": detail, "action": action}


def read_label_table(path: Path, audio_dir: Path | None = None) -> pd.DataFrame:
    """Read a label CSV ``path,label[,group][,start_s,end_s]`` (header names are flexible).

    Any separator among ``,`` ``;`` tab ``|``, a byte-order mark (Excel's "CSV UTF-8"), CRLF line
    ends and Windows-1252 text are all read. Blank lines are skipped.

    Returns a frame with ``source`` (resolved against ``audio_dir`` or the CSV's folder; a broken
    symbolic link keeps its own path, so that the skip report names it), ``file`` (as written),
    ``label``, ``labels`` and, when present, ``group``, ``start_s``, ``end_s`` (NaN where blank),
    and ``row`` (the line number in the CSV, for messages). ``frame.attrs["anomalies"]`` lists
    rows dropped for unparseable times.

    Raises:
        MissingPathError: the CSV does not exist.
        DataError: the CSV is empty, not text, has no file or label column, or a row has no file
            name or no label (the message names the lines).
    """
    text = read_text_table(path, "label table")
    header = text.lstrip("\n").split("\n", 1)[0]
    try:
        table = pd.read_csv(
            io.StringIO(text),
            sep=_separator(header),
            dtype=str,
            keep_default_na=False,
            skip_blank_lines=False,
        )
    except (pd.errors.ParserError, ValueError) as exc:
        raise DataError(f"cannot read label table {path}: {str(exc).strip()[:300]}") from exc
    lines = table.index.to_numpy() + 2 + (len(text) - len(text.lstrip("\n")))  # 1-based, after the header
    blank = (table.apply(lambda c: c.str.strip()) == "").all(axis=1).to_numpy()
    table, lines = table[~blank].reset_index(drop=True), lines[~blank]
    if table.empty:
        raise DataError(
            f"label table {path} has a header ({header[:80]!r}) but no rows; add one line per file"
        )
    path_col = _pick(table.columns, _PATH_COLS)
    label_col = _pick(table.columns, _LABEL_COLS)
    if path_col is None or label_col is None:
        raise DataError(
            f"label table {path} needs a file column (one of {list(_PATH_COLS)}) and a label column "
            f"(one of {list(_LABEL_COLS)}); it has {list(table.columns)}"
        )
    base = audio_dir if audio_dir is not None else path.parent
    rows = pd.DataFrame({"row": lines})
    files = [p.strip() for p in table[path_col]]
    labels = [[s.strip() for s in v.split(LABEL_SEP) if s.strip()] for v in table[label_col]]
    bad = [int(r) for r, labs in zip(rows["row"], labels, strict=True) if not labs]
    if bad:
        raise DataError(f"label table {path}: empty label on line(s) {bad[:10]}; every file needs a label")
    nopath = [int(r) for r, f in zip(rows["row"], files, strict=True) if not f]
    if nopath:
        raise DataError(f"label table {path}: empty file name on line(s) {nopath[:10]}")

    def resolve(name: str) -> str:
        cand = base / name
        if cand.is_symlink() and not cand.exists():  # keep a broken link's own path for the report
            return str(Path(os.path.abspath(cand)))  # noqa: PTH100 (absolute, links not followed)
        return str(cand.resolve())

    rows["source"] = [resolve(f) for f in files]
    rows["file"] = files
    rows["labels"] = labels
    rows["label"] = [labs[0] for labs in labels]
    group_col = _pick(table.columns, _GROUP_COLS)
    if group_col is not None:
        rows["group"] = table[group_col].str.strip().to_numpy()
    anomalies: list[dict[str, Any]] = []
    bad_time = np.zeros(len(rows), dtype=bool)
    for name, cands in (("start_s", ("start_s", "start", "offset")), ("end_s", ("end_s", "end"))):
        col = _pick(table.columns, cands)
        if col is None:
            continue
        values, bad_rows = _seconds(table[col])
        rows[name] = values
        for i in np.flatnonzero(bad_rows & ~bad_time):
            anomalies.append(
                _anomaly(
                    str(path), int(lines[i]), files[i], "bad_time", f"{col}={table[col].iloc[i]!r}", "dropped"
                )
            )
        bad_time |= bad_rows
    rows = rows[~bad_time].reset_index(drop=True)
    rows.attrs["anomalies"] = anomalies
    return rows


def _check_spans(rows: pd.DataFrame, table: str) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """Fix or drop out-of-range spans, duplicates and conflicting labels of label-CSV rows.

    ``rows`` hold ``start_s``/``end_s`` (NaN = the file's start/end) and ``duration_s``; returns the
    rows with finite spans and the anomaly report (see the module docstring).
    """
    report: list[dict[str, Any]] = []
    dur = rows["duration_s"].to_numpy(float)
    given_s = rows["start_s"].to_numpy(float) if "start_s" in rows else np.full(len(rows), np.nan)
    given_e = rows["end_s"].to_numpy(float) if "end_s" in rows else np.full(len(rows), np.nan)
    start = np.where(np.isnan(given_s), 0.0, given_s)
    end = np.where(np.isnan(given_e), dur, given_e)
    keep = np.ones(len(rows), dtype=bool)
    lines = rows["row"].to_numpy()
    names = rows["file"].to_numpy() if "file" in rows else rows["source"].to_numpy()

    def note(i: int, kind: str, detail: str, action: str) -> None:
        report.append(_anomaly(table, int(lines[i]), str(names[i]), kind, detail, action))

    flagged = np.flatnonzero(
        ((~np.isnan(given_s)) & (~np.isnan(given_e)) & (given_e < given_s))
        | (start < 0)
        | (end < 0)
        | (start >= dur)
        | (end > dur + _TIME_TOL_S)
    ).tolist()
    for i in flagged:
        s, e, d = float(start[i]), float(end[i]), float(dur[i])
        if not np.isnan(given_s[i]) and not np.isnan(given_e[i]) and e < s:
            note(i, "reversed_time", f"start={s} > end={e}", "swapped")
            s, e = e, s
        if e < 0:
            note(i, "negative_time", f"span {s}-{e} s ends before the file starts", "dropped")
            keep[i] = False
            continue
        if s < 0:
            note(i, "negative_time", f"start={s}", "clipped to 0")
            s = 0.0
        if s >= d:
            note(i, "past_end", f"start={s:.3f} s, file lasts {d:.3f} s", "dropped")
            keep[i] = False
            continue
        if e > d + _TIME_TOL_S:
            note(i, "ends_past_end", f"end={e:.3f} s, file lasts {d:.3f} s", "clipped")
        start[i], end[i] = s, min(e, d)
    rows = rows.assign(start_s=start, end_s=np.minimum(end, np.maximum(dur, start)))
    # the same file and span twice: a duplicate (dropped) or a conflict (labels merged)
    first: dict[tuple[str, float, float], int] = {}
    merged_labels: dict[int, list[str]] = {}
    all_labels = rows["labels"].tolist()
    for i, key in enumerate(
        zip(
            rows["source"],
            np.round(rows["start_s"].to_numpy(), 3),
            np.round(rows["end_s"].to_numpy(), 3),
            strict=True,
        )
    ):
        if not keep[i]:
            continue
        j = first.setdefault(key, i)
        if j == i:
            continue
        keep[i] = False
        held = merged_labels.setdefault(j, list(all_labels[j]))
        new = [lab for lab in all_labels[i] if lab not in held]
        if not new and set(all_labels[i]) == set(all_labels[j]):
            note(i, "duplicate", f"same file, span and labels as line {int(lines[j])}", "dropped")
        else:
            held += new
            note(
                i,
                "conflicting_labels",
                f"{LABEL_SEP.join(all_labels[i])!r} for the span that line {int(lines[j])} labels "
                f"{LABEL_SEP.join(all_labels[j])!r}",
                f"merged into line {int(lines[j])} (labels {LABEL_SEP.join(held)})",
            )
    if merged_labels:
        labels_col = list(all_labels)
        for j, labs in merged_labels.items():
            labels_col[j] = labs
        rows = rows.assign(labels=labels_col)
    return rows[keep].reset_index(drop=True), report


def _broken_link(f: Path) -> str | None:
    if f.is_symlink() and not f.exists():
        return f"broken symbolic link (it points to {f.readlink()})"
    return None


def _scan_folder(root: Path) -> tuple[pd.DataFrame, list[dict[str, str]]]:
    classes = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    skipped: list[dict[str, str]] = []
    for f in sorted(root.iterdir()):
        if f.name in _IGNORED_NAMES or f.name.startswith("."):
            continue
        if (reason := _broken_link(f)) is not None:
            skipped.append({"source": str(f), "reason": reason})
        elif f.is_file():
            skipped.append({"source": str(f), "reason": "not inside a class sub-folder"})
    records = []
    for cdir in classes:
        for f in sorted(cdir.rglob("*")):
            if f.name in _IGNORED_NAMES or f.name.startswith("."):
                continue
            if (reason := _broken_link(f)) is not None:
                skipped.append({"source": str(f), "reason": reason})
            elif f.is_file():
                records.append({"source": str(f.resolve()), "label": cdir.name, "labels": [cdir.name]})
    return pd.DataFrame(records, columns=["source", "label", "labels"]), skipped


def _probe_all(sources: Sequence[str], workers: int, progress: bool) -> dict[str, AudioInfo | str]:
    def probe(src: str) -> AudioInfo | str:
        try:
            i = info(src)
        except AudioDecodeError as exc:
            return exc.reason
        if i.channels <= 0:
            return "no audio channels (the header says 0)"
        if i.frames <= 0 or i.duration_s <= 0:
            return "no audio samples (0 frames)"
        return i

    unique = list(dict.fromkeys(sources))
    results: Generator[AudioInfo | str, None, None] = thread_map(probe, unique, max(1, workers), ahead=8)
    try:
        probed = list(tqdm(results, total=len(unique), desc="probe", unit="file", disable=not progress))
    finally:
        results.close()  # on an interrupt: cancel what is queued, wait only for running probes
    return dict(zip(unique, probed, strict=True))


def _check_classes(rows: pd.DataFrame, classes: Sequence[str], root: Path) -> None:
    known = set(classes)
    lines = rows["row"].tolist() if "row" in rows.columns else [None] * len(rows)
    unknown = [
        f"line {line}: {lab!r}" if line is not None else f"{Path(source).parent.name}/: {lab!r}"
        for line, source, labs in zip(lines, rows["source"], rows["labels"], strict=True)
        for lab in labs
        if lab not in known
    ]
    if unknown:
        raise DataError(
            f"{len(unknown)} label(s) in {root} are not among the known classes "
            f"({'; '.join(unknown[:10])}); known classes: {sorted(known)}. "
            "Fix the labels or add the class to `classes`."
        )


def _background_rows(
    inputs: Sequence[str | os.PathLike[str]],
    label: str,
    probe: Any,
) -> tuple[pd.DataFrame, list[dict[str, str]]]:
    """Catalog rows for recordings without any class: the whole file, ``label``, its own group."""
    from chirpkit.sources import resolve_sources

    sources, problems = resolve_sources(inputs)
    skipped = [{"source": p["file"], "reason": p["reason"]} for p in problems]
    if not sources:
        raise DataError(f"no audio files found in background audio {[str(i) for i in inputs]}")
    rows = []
    for src_path, res in probe(sources).items():
        if isinstance(res, str):
            skipped.append({"source": src_path, "reason": res})
            continue
        facts = res.to_dict()
        rows.append(
            {
                "source": src_path,
                "label": label,
                "labels": [label],
                "group": f"background:{Path(src_path).stem}",
            }
            | {"start_s": 0.0, "end_s": facts["duration_s"]}
            | {k: v for k, v in facts.items() if k not in ("path", "frames")}
        )
    if not rows:
        raise DataError(
            f"none of the {len(sources)} background file(s) could be read as audio; first reasons: "
            f"{[s['reason'] for s in skipped[:3]]}"
        )
    log.info("%d background recording(s) labelled %r", len(rows), label)
    return pd.DataFrame(rows), skipped


@dataclass
class _Ingested:
    """What a source gave: its rows (one per example, with the probe's facts of each file in
    ``infos``), the files skipped, the anomalies, the folder that group rules start from, and how
    to name the source in messages."""

    rows: pd.DataFrame
    infos: list[AudioInfo]
    skipped: list[dict[str, str]]
    anomalies: pd.DataFrame
    rule_root: Path
    desc: str
    root: Path
    annotated: bool = False


def _annotated_rows(
    annotations: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    audio_dir: str | os.PathLike[str] | None,
    probe: Callable[[Sequence[str]], dict[str, AudioInfo | str]],
    group_by: str | None,
    **windows: Any,
) -> _Ingested:
    """Rows from annotation tables over the recordings in ``audio_dir`` (``windows``: the window,
    column and class settings of :func:`chirpkit.data.annotated.annotation_windows`)."""
    from chirpkit.data.annotated import annotation_windows

    if audio_dir is None:
        raise DataError("annotation tables need audio_dir (--audio-dir): the folder of the recordings")
    tables = [annotations] if isinstance(annotations, (str, os.PathLike)) else list(annotations)
    root = existing_path(audio_dir, "audio folder")
    rows, anomalies, probed = annotation_windows(tables, audio_dir=root, probe=probe, **windows)
    if group_by is None and rows["table_group"].notna().all():
        rows["group"] = rows["table_group"].astype(str)
    return _Ingested(
        rows=rows,
        infos=[i for i in (probed[s] for s in rows["source"]) if isinstance(i, AudioInfo)],
        skipped=[{"source": k, "reason": v} for k, v in probed.items() if isinstance(v, str)],
        anomalies=anomalies,
        rule_root=root,
        desc=f"annotations {[str(t) for t in tables]}",
        root=root,
        annotated=True,
    )


def _source_rows(
    src: str | os.PathLike[str] | None,
    *,
    audio_dir: str | os.PathLike[str] | None,
    classes: Sequence[str] | None,
    probe: Callable[[Sequence[str]], dict[str, AudioInfo | str]],
) -> _Ingested:
    """Rows from a folder of class sub-folders or a label CSV, the unreadable files skipped."""
    from chirpkit.data.annotated import ANOMALY_COLUMNS

    if src is None:
        raise DataError("give a source: a folder of class sub-folders, a label CSV, or annotations=...")
    root = existing_path(src, "ingest source")
    anomalies = pd.DataFrame(columns=ANOMALY_COLUMNS)
    if root.is_dir():
        rows, skipped = _scan_folder(root)
        if rows.empty:
            raise DataError(
                f"no files found in class sub-folders of {root}; expected {root}/<class>/<file>.wav "
                "(one sub-folder per class), or pass a label CSV"
            )
        rule_root = root
    elif root.suffix.lower() in (".csv", ".tsv", ".txt"):
        rows, skipped = read_label_table(root, Path(audio_dir) if audio_dir is not None else None), []
        anomalies = pd.DataFrame(rows.attrs.pop("anomalies", []), columns=ANOMALY_COLUMNS)
        rule_root = Path(audio_dir) if audio_dir is not None else root.parent
        if rows.empty:
            raise DataError(
                f"no row of label table {root} has usable times; first problems: "
                f"{anomalies.head(3).to_dict('records')}"
            )
    else:
        raise DataError(
            f"cannot ingest {root}: give a folder with one sub-folder per class, or a label CSV "
            "(path,label[,group]); for annotation tables use annotations=... (--annotations)"
        )
    if classes is not None:
        _check_classes(rows, classes, root)
    probed = probe(rows["source"].tolist())
    keep: list[int] = []
    infos = []
    for i, src_path in enumerate(rows["source"]):
        res = probed[src_path]
        if isinstance(res, str):
            line = f" (line {int(rows['row'].iloc[i])})" if "row" in rows.columns else ""
            skipped.append({"source": src_path, "reason": res + line})
        else:
            keep.append(i)
            infos.append(res)
    if not keep:
        raise DataError(
            f"none of the {len(probed)} file(s) from {root} could be read as audio; "
            f"first reasons: {[s['reason'] for s in skipped[:3]]}"
        )
    return _Ingested(
        rows.iloc[keep].reset_index(drop=True), infos, skipped, anomalies, rule_root, str(root), root
    )


def _complete_rows(got: _Ingested, *, group_by: str | None) -> pd.DataFrame:
    """The rows with each file's facts, a label table's spans checked, times filled in and groups
    assigned (``got.anomalies`` gains the span problems)."""
    from chirpkit.data.annotated import ANOMALY_COLUMNS

    meta = pd.DataFrame([i.to_dict() for i in got.infos]).drop(columns=["path", "frames"])
    rows = pd.concat([got.rows.reset_index(drop=True), meta], axis=1)
    if not got.annotated and "row" in rows.columns:  # a label CSV: check spans, duplicates
        rows, span_report = _check_spans(rows, str(got.root))
        if span_report:
            got.anomalies = pd.concat(
                [got.anomalies, pd.DataFrame(span_report, columns=ANOMALY_COLUMNS)], ignore_index=True
            )
        if rows.empty:
            raise DataError(
                f"no usable row left in {got.root} after the span checks; first problems: "
                f"{got.anomalies.head(3).to_dict('records')}"
            )
    if "start_s" not in rows.columns:
        rows["start_s"] = 0.0
    if "end_s" not in rows.columns:
        rows["end_s"] = rows["duration_s"]
    rows["start_s"] = rows["start_s"].fillna(0.0)
    rows["end_s"] = rows["end_s"].fillna(rows["duration_s"])
    if group_by is not None or "group" not in rows.columns:
        rule = group_rule(group_by or "file", got.rule_root)
        groups = {s: rule(Path(s)) for s in rows["source"].unique()}
        rows["group"] = rows["source"].map(groups)
    return rows


def _check_two_classes(rows: pd.DataFrame, got: _Ingested) -> None:
    """A classifier needs two classes: an error for folders and label tables, a warning for
    annotation tables (a single-species detector can be inspected; training adds background)."""
    if rows["label"].nunique() >= 2:
        return
    if got.annotated:
        log.warning(
            "only one class (%r) in %s: the catalog can be inspected, but training needs a second "
            "class: add background windows (background=N, --background N; `fit` adds them itself)",
            rows["label"].iloc[0],
            got.desc,
        )
        return
    hint = (
        f"; {got.root} looks like a single class folder — point ingest at its parent"
        if got.root.is_dir()
        else ""
    )
    raise DataError(
        f"only one class ({rows['label'].iloc[0]!r}) in {got.desc}: a classifier needs at least two "
        f"(add a background/'noise' class or more classes){hint}"
    )


def _log_ingest(catalog: pd.DataFrame, skipped: pd.DataFrame, got: _Ingested) -> None:
    anomalies = got.anomalies
    log.info(
        "ingested %d example(s) from %d file(s), %d class(es), %d group(s); skipped %d file(s)%s",
        len(catalog),
        catalog["source"].nunique(),
        catalog["label"].nunique(),
        catalog["group"].nunique(),
        len(skipped),
        f"; {len(anomalies)} annotation anomal{'y' if len(anomalies) == 1 else 'ies'}"
        if len(anomalies)
        else "",
    )
    if len(anomalies):
        for kind, n in anomalies["kind"].value_counts().items():
            log.warning("%s anomaly %s: %d", "annotation" if got.annotated else "label table", kind, n)
    n_ffmpeg = int((catalog.drop_duplicates("source")["decoder"] == "pyav").sum())
    if n_ffmpeg:
        log.info("%d file(s) read through the FFmpeg (PyAV) fallback: libsndfile could not", n_ffmpeg)


@takes_options(IngestOptions)
def ingest(
    src: str | os.PathLike[str] | None = None,
    *,
    out: str | os.PathLike[str] | None = None,
    group_by: str | None = None,
    annotations: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None = None,
    audio_dir: str | os.PathLike[str] | None = None,
    format: str = "auto",
    label_column: str | None = None,
    columns: Mapping[str, str] | None = None,
    background: int | None = None,
    background_audio: Sequence[str | os.PathLike[str]] | None = None,
    background_label: str = "noise",
    classes: Sequence[str] | None = None,
    seed: int = 0,
    reviews: str | os.PathLike[str] | None = None,
    merge_with: str | os.PathLike[str] | pd.DataFrame | None = None,
    window_s: float = 3.0,
    hop_s: float | None = None,
    workers: int = 8,
    progress: bool = True,
) -> pd.DataFrame:
    """Build a catalog from a folder of class sub-folders, a label CSV, or annotation tables.

    Annotation tables give one row per window (see :mod:`chirpkit.data.annotated`); a table with
    a single class is ingested with a warning (it can be inspected, not trained on). Reviewed
    detections go through :func:`chirpkit.data.reviews.ingest_reviews`.

    Args:
        src: ``data/`` holding ``data/<class>/*.wav|flac|mp3|ogg|...``, or a CSV with columns
            ``path,label[,group][,start_s,end_s]`` (paths relative to the CSV or ``audio_dir``;
            several labels joined by ``;``). Leave out when ``annotations`` is given.
        out: where to write the catalog (Parquet + CSV view + ``.skipped.csv`` +
            ``.anomalies.csv``, all or nothing); optional.
        {options}
        window_s, hop_s: window length and hop for annotation windows (use ``audio.window_s``).
        workers: threads that probe files.
        progress: show a progress bar.

    Returns:
        The catalog. ``catalog.attrs["skipped"]`` lists skipped files (``source``, ``reason``),
        ``catalog.attrs["anomalies"]`` the annotation anomalies.

    Raises:
        MissingPathError: ``src``, ``audio_dir`` or a table does not exist.
        DataError: no usable audio, one class only (class folders and label CSVs), a label outside
            ``classes``, bad CSV.
        OutputError: the catalog cannot be written (disk full, permission denied); nothing is.
    """
    if reviews is not None:  # reviewed detections → labelled windows and hard negatives
        if src is not None or annotations is not None:
            raise DataError("reviews are merged into an existing catalog: give merge_with=, not a source")
        return ingest_reviews(
            reviews,
            merge_with=merge_with,
            out=out,
            group_by=group_by,
            background_label=background_label,
            audio_dir=audio_dir,
        )

    def probe(paths: Sequence[str]) -> dict[str, AudioInfo | str]:
        return _probe_all(paths, workers, progress)

    if annotations is not None:
        got = _annotated_rows(
            annotations,
            audio_dir=audio_dir,
            probe=probe,
            group_by=group_by,
            window_s=window_s,
            hop_s=hop_s,
            format=format,
            label_column=label_column,
            columns=columns,
            classes=classes,
            background=background or 0,
            background_label=background_label,
            seed=seed,
        )
    else:
        got = _source_rows(src, audio_dir=audio_dir, classes=classes, probe=probe)
    rows = _complete_rows(got, group_by=group_by)
    if background_audio:
        extra_rows, extra_skipped = _background_rows(background_audio, background_label, probe)
        rows = pd.concat([rows, extra_rows], ignore_index=True)
        got.skipped += extra_skipped
    _check_two_classes(rows, got)
    extra = [
        c for c in ("ann_start_s", "ann_end_s", "low_freq_hz", "high_freq_hz", "annotation") if c in rows
    ]
    catalog = validate_catalog(rows[[*CORE_COLUMNS, *META_COLUMNS, *extra]], where=f"ingest of {got.desc}")
    skipped_df = pd.DataFrame(got.skipped, columns=["source", "reason"])
    catalog.attrs["skipped"] = skipped_df.to_dict("records")
    catalog.attrs["anomalies"] = got.anomalies.to_dict("records")
    _log_ingest(catalog, skipped_df, got)
    _write_ingest(catalog, out, skipped_df, got)
    return catalog


def _write_ingest(
    catalog: pd.DataFrame, out: str | os.PathLike[str] | None, skipped_df: pd.DataFrame, got: _Ingested
) -> None:
    """Write the catalog with its skip and anomaly reports (all or nothing) when ``out`` is given;
    then name the files skipped."""
    if out is not None:
        path = write_catalog(
            catalog, out, reports={".skipped.csv": skipped_df, ".anomalies.csv": got.anomalies}
        )
        for what, table, suffix in (
            ("skip", skipped_df, ".skipped.csv"),
            ("anomaly", got.anomalies, ".anomalies.csv"),
        ):
            if len(table):
                log.info("%s report: %s", what, path.with_suffix(suffix))
        log.info("catalog: %s", path)
    for item in got.skipped[:20]:
        log.warning("skipped %s: %s", item["source"], item["reason"])
    if len(got.skipped) > 20:
        log.warning("... and %d more skipped file(s)", len(got.skipped) - 20)
