"""Ingest long recordings with annotation tables: one catalog row per training window.

* A point annotation gives one window of ``window_s`` centred on it; a box no longer than a window
  is centred too; a longer box gives windows every ``hop_s`` covering it. Windows are shifted inside
  the recording where it is long enough, so a call near the start is not padded with zeros.
* A window carries the labels of every other annotation it holds (a point inside it, or a box with
  at least half of its length — or half a window — inside it): ``labels`` is the multi-label view,
  ``label`` the annotation's own class (the single-label training target).
* Optional background windows (``background``) are sampled away from every annotation (a guard of
  half a second) as ``background_label`` (default ``noise``).
* Anomalies never stop the job; each becomes a row of the anomaly report (``<catalog>.anomalies.csv``:
  table, row, file, kind, detail, action): ``missing_audio``, ``unreadable_audio``, ``empty_label``,
  ``bad_time``, ``reversed_time`` (swapped), ``negative_time`` (clipped), ``past_end`` (dropped),
  ``ends_past_end`` (clipped), ``nonzero_duration_in_point_table`` (kept as a box),
  ``unknown_label`` (dropped), ``duplicate`` (dropped), ``audio_matched_by_stem`` (the table names
  ``x.wav``, only ``x.mp3`` exists: used), ``bad_frequency`` (an Audacity frequency line that is
  not numeric: ignored). File-level problems (missing, unreadable, matched by
  stem) get one line per file with the number of annotations concerned.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from chirpkit.audio import AudioInfo, is_audio_path
from chirpkit.data.annotations import read_annotations
from chirpkit.data.store import window_starts
from chirpkit.errors import DataError, MissingPathError

__all__ = ["ANOMALY_COLUMNS", "annotation_windows"]

log = logging.getLogger("chirpkit")

ANOMALY_COLUMNS = ["table", "row", "file", "kind", "detail", "action"]
_TIME_TOL_S = 0.05  # annotations may end this far past the decoded end (header rounding)
_GUARD_S = 0.5  # background windows stay this far from any annotation


class _AudioIndex:
    """Finds the audio file an annotation names, by path, by name, then by stem."""

    def __init__(self, root: Path) -> None:
        self.root = root
        # broken symbolic links are indexed too: the probe then reports them instead of "missing"
        files = sorted(f for f in root.rglob("*") if (f.is_file() or f.is_symlink()) and is_audio_path(f))
        files = [f for f in files if not f.is_dir()]
        self.by_rel = {f.relative_to(root).as_posix(): f for f in files}
        self.by_name: dict[str, list[Path]] = {}
        self.by_stem: dict[str, list[Path]] = {}
        for f in files:
            self.by_name.setdefault(f.name, []).append(f)
            self.by_stem.setdefault(f.stem, []).append(f)

    def find(self, name: str) -> tuple[Path | None, bool]:
        """``(path, matched_by_stem)``; ``path`` is None when nothing fits."""
        p = Path(name)
        if p.is_absolute() and (p.is_file() or p.is_symlink()):
            return p, False
        rel = p.as_posix().lstrip("./")
        if rel in self.by_rel:
            return self.by_rel[rel], False
        if (self.root / p).is_file():
            return (self.root / p).resolve(), False
        if p.name in self.by_name:
            return self.by_name[p.name][0], False
        named_audio = p.suffix.lower() in (".wav", ".flac", ".mp3", ".ogg", ".m4a", ".aiff", ".aif")
        stem = p.stem if named_audio else p.name
        if stem in self.by_stem:
            # a table that names "x.wav" where only "x.mp3" exists is worth a report line; a name
            # without an audio ending (Raven/Audacity tables named after the recording) is not
            return self.by_stem[stem][0], named_audio
        return None, False


def _anomaly(table: str, row: Any, file: str, kind: str, detail: str, action: str) -> dict[str, Any]:
    return {"table": table, "row": row, "file": file, "kind": kind, "detail": detail, "action": action}


def _clean(
    ann: pd.DataFrame,
    infos: Mapping[str, AudioInfo | str],
    index: _AudioIndex,
    classes: set[str] | None,
    point_tables: set[str],
) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """Resolve files and fix or drop anomalous annotations; return the kept ones and the report."""
    report: list[dict[str, Any]] = []
    per_file: dict[tuple[str, str, str], dict[str, Any]] = {}  # file-level problems: one line per file

    def file_problem(table: str, row: int, name: str, kind: str, detail: str, action: str) -> None:
        entry = per_file.setdefault((table, name, kind), _anomaly(table, row, name, kind, detail, action))
        entry["count"] = entry.get("count", 0) + 1

    keep: list[dict[str, Any]] = []
    seen: set[tuple[str, float, float, str]] = set()
    for r in ann.to_dict("records"):
        table, row, name = str(r["table"]), int(r["row"]), str(r["file"])
        path, by_stem = index.find(name)
        if path is None:
            report.append(
                _anomaly(table, row, name, "missing_audio", f"no audio file for {name!r}", "dropped")
            )
            continue
        res = infos.get(str(path))
        if res is None or isinstance(res, str):
            file_problem(table, row, name, "unreadable_audio", str(res), "dropped")
            continue
        if by_stem:
            file_problem(table, row, name, "audio_matched_by_stem", f"used {path.name}", "kept")
        label = str(r["label"]).strip()
        if not label or label.lower() in ("nan", "none"):
            report.append(_anomaly(table, row, name, "empty_label", "no label", "dropped"))
            continue
        if classes is not None and label not in classes:
            report.append(
                _anomaly(table, row, name, "unknown_label", f"{label!r} not in the known classes", "dropped")
            )
            continue
        start, end = float(r["start_s"]), float(r["end_s"])
        if not (np.isfinite(start) and np.isfinite(end)):
            report.append(
                _anomaly(table, row, name, "bad_time", f"start={r['start_s']} end={r['end_s']}", "dropped")
            )
            continue
        if end < start:
            report.append(
                _anomaly(table, row, name, "reversed_time", f"start={start} > end={end}", "swapped")
            )
            start, end = end, start
        if start < 0:
            report.append(_anomaly(table, row, name, "negative_time", f"start={start}", "clipped to 0"))
            start, end = 0.0, max(end, 0.0)
        dur = res.duration_s
        if start >= dur:
            report.append(
                _anomaly(
                    table, row, name, "past_end", f"start={start:.3f} s, file lasts {dur:.3f} s", "dropped"
                )
            )
            continue
        if end > dur + _TIME_TOL_S:
            report.append(
                _anomaly(
                    table, row, name, "ends_past_end", f"end={end:.3f} s, file lasts {dur:.3f} s", "clipped"
                )
            )
            end = dur
        end = min(end, dur)
        if table in point_tables and end - start > 1e-9:
            report.append(
                _anomaly(
                    table,
                    row,
                    name,
                    "nonzero_duration_in_point_table",
                    f"{end - start:.3f} s in a point table",
                    "kept as a box",
                )
            )
        key = (str(path), round(start, 3), round(end, 3), label)
        if key in seen:
            report.append(
                _anomaly(table, row, name, "duplicate", f"{label} at {start:.3f}-{end:.3f} s", "dropped")
            )
            continue
        seen.add(key)
        keep.append(
            {
                "source": str(path),
                "ann_start_s": start,
                "ann_end_s": end,
                "label": label,
                "low_freq_hz": r["low_freq_hz"],
                "high_freq_hz": r["high_freq_hz"],
                "table_group": r["group"],
                "annotation": f"{Path(table).name}:{row}",
            }
        )
    for entry in per_file.values():
        n = entry.pop("count")
        entry["detail"] += f" ({n} annotation{'s' if n > 1 else ''}, from line {entry['row']})"
        report.append(entry)
    return pd.DataFrame(keep), report


def _windows_for_file(
    rows: pd.DataFrame, duration: float, window_s: float, hop_s: float
) -> list[dict[str, Any]]:
    starts_a = rows["ann_start_s"].to_numpy(float)
    ends_a = rows["ann_end_s"].to_numpy(float)
    labels_a = rows["label"].to_numpy()
    lens = ends_a - starts_a
    out: list[dict[str, Any]] = []
    latest = max(0.0, duration - window_s)
    records: list[dict[str, Any]] = rows.to_dict("records")  # type: ignore[assignment]
    for i, r in enumerate(records):
        for ws in window_starts(starts_a[i], ends_a[i], window_s=window_s, hop_s=hop_s):
            ws = float(min(max(ws, 0.0), latest)) if duration >= window_s else float(ws)
            we = ws + window_s
            inside = np.minimum(ends_a, we) - np.maximum(starts_a, ws)
            point = lens <= 1e-9
            holds = np.where(
                point, (starts_a >= ws) & (starts_a <= we), inside >= 0.5 * np.minimum(lens, window_s)
            )
            others = [str(x) for x in dict.fromkeys(labels_a[holds]) if x != r["label"]]
            out.append({**r, "start_s": round(ws, 6), "end_s": round(we, 6), "labels": [r["label"], *others]})
    return out


def _background(
    per_file: dict[str, tuple[pd.DataFrame, float]], n_total: int, window_s: float, label: str, seed: int
) -> list[dict[str, Any]]:
    """``n_total`` windows away from all annotations, spread over files by their free time."""
    rng = np.random.default_rng(seed)
    candidates: list[tuple[str, float]] = []
    for src, (rows, duration) in per_file.items():
        busy = sorted(zip(rows["ann_start_s"] - _GUARD_S, rows["ann_end_s"] + _GUARD_S, strict=True))
        t = 0.0
        for a, b in [*busy, (duration, duration)]:
            free_end = min(a, duration)
            k = int((free_end - t) // window_s)
            candidates += [(src, t + j * window_s) for j in range(max(0, k))]
            t = max(t, b)
    if not candidates:
        log.warning(
            "no room for background windows: every stretch of audio is within %.1f s of an annotation",
            _GUARD_S,
        )
        return []
    pick = rng.choice(len(candidates), size=min(n_total, len(candidates)), replace=False)
    if n_total > len(candidates):
        log.warning(
            "only %d background window(s) fit away from the annotations (asked for %d)",
            len(candidates),
            n_total,
        )
    return [
        {
            "source": candidates[i][0],
            "start_s": round(candidates[i][1], 6),
            "end_s": round(candidates[i][1] + window_s, 6),
            "label": label,
            "labels": [label],
            "ann_start_s": np.nan,
            "ann_end_s": np.nan,
            "low_freq_hz": np.nan,
            "high_freq_hz": np.nan,
            "table_group": None,
            "annotation": "background",
        }
        for i in sorted(pick)
    ]


def annotation_windows(
    tables: Sequence[str | os.PathLike[str]],
    *,
    audio_dir: str | os.PathLike[str],
    probe: Any,
    window_s: float = 3.0,
    hop_s: float | None = None,
    format: str = "auto",
    label_column: str | None = None,
    columns: Mapping[str, str] | None = None,
    classes: Sequence[str] | None = None,
    background: int = 0,
    background_label: str = "noise",
    seed: int = 0,
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, AudioInfo | str]]:
    """Read annotation tables and cut windows; used by :func:`chirpkit.ingest`.

    Args:
        probe: ``probe(paths) -> {path: AudioInfo | reason}`` (the ingest prober).

    Returns:
        ``(windows, anomalies, probed)``: window rows without recording facts or groups yet.
    """
    root = Path(audio_dir)
    if not root.is_dir():
        raise MissingPathError(f"audio folder not found: {root}")
    frames = []
    point_tables: set[str] = set()
    notes: list[dict[str, Any]] = []
    for t in tables:
        df = read_annotations(t, format=format, label_column=label_column, columns=columns)
        notes += df.attrs.get("anomalies", [])
        log.info(
            "read %d annotation(s) from %s (%s%s)",
            len(df),
            t,
            df.attrs["format"],
            ", point table" if df.attrs["point_table"] else "",
        )
        if df.attrs["point_table"]:
            point_tables.add(str(Path(t)))
        frames.append(df)
    ann = pd.concat(frames, ignore_index=True)
    if ann.empty:
        raise DataError(f"the annotation table(s) {list(map(str, tables))} hold no annotations")
    index = _AudioIndex(root)
    wanted = sorted({str(p) for p in (index.find(str(f))[0] for f in ann["file"].unique()) if p is not None})
    probed: dict[str, AudioInfo | str] = probe(wanted)
    kept, report = _clean(ann, probed, index, set(classes) if classes is not None else None, point_tables)
    report = notes + report
    if kept.empty:
        first = pd.DataFrame(report).head(3).to_dict("records") if report else []
        raise DataError(
            f"no usable annotation left after checks (first problems: {first}); "
            f"check --audio-dir {root} and the table's columns"
        )
    hop = hop_s if hop_s is not None else window_s
    rows: list[dict[str, Any]] = []
    per_file: dict[str, tuple[pd.DataFrame, float]] = {}
    for src, group in kept.groupby("source", sort=True):
        info = probed[str(src)]
        assert isinstance(info, AudioInfo)
        per_file[str(src)] = (group, info.duration_s)
        rows += _windows_for_file(group.reset_index(drop=True), info.duration_s, window_s, hop)
    if background > 0:
        rows += _background(per_file, background, window_s, background_label, seed)
    windows = pd.DataFrame(rows)
    anomalies = pd.DataFrame(report, columns=ANOMALY_COLUMNS)
    return windows, anomalies, probed
