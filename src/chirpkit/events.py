"""Detection events: merging windows, writing Raven/Audacity tables, scoring against annotations.

* :func:`merge_events` — consecutive or overlapping windows of the same label (per file) become
  one event ``file, start_s, end_s, label, max_score, mean_score, windows``.
* :func:`write_raven` / :func:`write_audacity` — one table per recording, loadable in Raven Pro /
  Audacity next to the recording.
* :func:`score_detections` — event-level precision, recall and F1 per class against an annotation
  table (every format of :mod:`chirpkit.data.annotations`), with greedy one-to-one matching by
  score under a time rule: ``overlap`` (detection overlaps the annotation widened by
  ``tolerance_s``), ``onset`` (|detection start − annotation start| ≤ ``tolerance_s``) or ``iou``
  (intersection over union ≥ ``min_iou``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from chirpkit._util import atomic_path

__all__ = ["EVENT_COLUMNS", "merge_events", "score_detections", "write_audacity", "write_raven"]

log = logging.getLogger("chirpkit")

EVENT_COLUMNS = ["file", "start_s", "end_s", "label", "max_score", "mean_score", "windows"]


def merge_events(detections: pd.DataFrame, *, gap_s: float = 0.0) -> pd.DataFrame:
    """Merge windows of the same file and label that overlap or are at most ``gap_s`` apart."""
    if detections.empty:
        return pd.DataFrame(columns=EVENT_COLUMNS)
    out: list[dict[str, Any]] = []
    for (f, lab), g in detections.sort_values(["file", "label", "start_s"]).groupby(
        ["file", "label"], sort=False
    ):
        starts, ends, scores = g["start_s"].to_numpy(), g["end_s"].to_numpy(), g["score"].to_numpy()
        # a new event wherever a window starts more than gap_s after every earlier one has ended
        new = np.r_[True, starts[1:] > np.maximum.accumulate(ends)[:-1] + gap_s]
        for idx in np.split(np.arange(len(starts)), np.flatnonzero(new)[1:]):
            out.append(
                {
                    "file": f,
                    "start_s": starts[idx[0]],
                    "end_s": ends[idx].max(),
                    "label": lab,
                    "max_score": scores[idx].max(),
                    "mean_score": float(scores[idx].mean()),
                    "windows": len(idx),
                }
            )
    return pd.DataFrame(out, columns=EVENT_COLUMNS).sort_values(
        ["file", "start_s", "label"], ignore_index=True
    )


def _table_name(file: str, suffix: str) -> str:
    return f"{Path(file).stem}{suffix}"


def write_raven(events: pd.DataFrame, folder: str | os.PathLike[str], *, high_freq_hz: float) -> list[Path]:
    """One Raven selection table per recording: ``<stem>.chirpkit.selections.txt``."""
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    score_col = "max_score" if "max_score" in events else "score"
    for f, g in events.groupby("file", sort=True):
        t = pd.DataFrame(
            {
                "Selection": np.arange(1, len(g) + 1),
                "View": "Spectrogram 1",
                "Channel": 1,
                "Begin Time (s)": g["start_s"].round(4).to_numpy(),
                "End Time (s)": g["end_s"].round(4).to_numpy(),
                "Low Freq (Hz)": 0.0,
                "High Freq (Hz)": high_freq_hz,
                "Species": g["label"].to_numpy(),
                "Score": g[score_col].round(4).to_numpy(),
                "Begin File": Path(str(f)).name,
            }
        )
        path = root / _table_name(str(f), ".chirpkit.selections.txt")
        with atomic_path(path) as tmp:
            t.to_csv(tmp, sep="\t", index=False)
        paths.append(path)
    return paths


def write_audacity(events: pd.DataFrame, folder: str | os.PathLike[str]) -> list[Path]:
    """One Audacity label track per recording: ``<stem>.labels.txt`` (``start⇥end⇥label score``)."""
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    score_col = "max_score" if "max_score" in events else "score"
    for f, g in events.groupby("file", sort=True):
        lines = [
            f"{s:.4f}\t{e:.4f}\t{lab} {sc:.3f}"
            for s, e, lab, sc in zip(g["start_s"], g["end_s"], g["label"], g[score_col], strict=True)
        ]
        path = root / _table_name(str(f), ".labels.txt")
        with atomic_path(path) as tmp:
            tmp.write_text("\n".join(lines) + ("\n" if lines else ""))
        paths.append(path)
    return paths


def _matches(d_s: float, d_e: float, a_s: float, a_e: float, rule: str, tol: float, min_iou: float) -> bool:
    if rule == "onset":
        return abs(d_s - a_s) <= tol
    if rule == "iou":
        inter = max(0.0, min(d_e, a_e) - max(d_s, a_s))
        union = max(d_e, a_e) - min(d_s, a_s)
        return union > 0 and inter / union >= min_iou
    return d_s <= a_e + tol and d_e >= a_s - tol  # overlap


def score_detections(
    detections: pd.DataFrame | str | os.PathLike[str],
    annotations: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | pd.DataFrame,
    *,
    rule: str = "overlap",
    tolerance_s: float = 0.5,
    min_iou: float = 0.3,
    matching: str = "one-to-one",
    format: str = "auto",
    label_column: str | None = None,
    columns: Mapping[str, str] | None = None,
    label_map: Mapping[str, str] | None = None,
    recordings: Sequence[str | os.PathLike[str]] | None = None,
    out: str | os.PathLike[str] | None = None,
) -> pd.DataFrame:
    """Event-level precision / recall / F1 per class (and ``all``) against annotations.

    Files are matched by stem (``x.wav`` annotations score detections on ``x.mp3``). Each
    annotation can be matched by one detection and vice versa, best scores first. Only the
    recordings that were scanned count: ``recordings``, else the finished files of the
    ``manifest.csv`` beside a detections file from :func:`chirpkit.detect`, else every
    annotated recording (annotations of recordings left out are logged, not counted as misses).

    Args:
        detections: a detections or events table (``file, start_s, end_s, label`` + a score).
        annotations: annotation table(s) in any supported format, or a frame with the columns of
            :func:`chirpkit.data.annotations.read_annotations`.
        rule: ``overlap`` (default), ``onset`` or ``iou``.
        matching: ``one-to-one`` (default; DCASE-style event scores) or ``any``: recall is the share
            of annotations that any detection matches, precision the share of detections that
            match any annotation; for dense calling, where one merged event spans several calls
            or several overlapping windows cover one call.
        label_map: rename annotation labels to model labels (e.g. ``{"PIHA": "bird"}``).
        out: CSV to write the table to.

    Returns:
        One row per class: ``class, annotations, detections, tp, fp, fn, precision, recall, f1``.
    """
    from chirpkit.data.annotations import read_annotations

    if rule not in ("overlap", "onset", "iou"):
        raise ValueError(f"rule={rule!r} must be overlap, onset or iou")
    if matching not in ("one-to-one", "any"):
        raise ValueError(f"matching={matching!r} must be one-to-one or any")
    det = pd.read_csv(detections) if not isinstance(detections, pd.DataFrame) else detections.copy()
    if isinstance(annotations, pd.DataFrame):
        ann = annotations.copy()
    else:
        tables = [annotations] if isinstance(annotations, (str, os.PathLike)) else list(annotations)
        ann = pd.concat(
            [read_annotations(t, format=format, label_column=label_column, columns=columns) for t in tables],
            ignore_index=True,
        )
    ann = ann[ann["label"].astype(str).str.strip() != ""]
    if label_map:
        ann["label"] = ann["label"].map(lambda v: label_map.get(v, v))
    score_col = "max_score" if "max_score" in det else "score"
    det["_stem"] = det["file"].map(lambda f: Path(str(f)).stem)
    ann["_stem"] = ann["file"].map(lambda f: Path(str(f)).stem)
    if recordings is None and not isinstance(detections, pd.DataFrame):
        manifest = Path(detections).parent / "manifest.csv"
        if manifest.is_file():
            done = pd.read_csv(manifest)
            recordings = done.loc[done["status"].isin(["done", "reused"]), "file"].astype(str).tolist()
    if recordings is not None:
        scanned = {Path(str(f)).stem for f in recordings}
        outside = ~ann["_stem"].isin(scanned)
        if outside.any():
            log.info(
                "score-detections: %d annotation(s) on %d recording(s) that were not scanned left out",
                int(outside.sum()),
                ann.loc[outside, "_stem"].nunique(),
            )
        ann = ann[~outside]
        det = det[det["_stem"].isin(scanned)]
    ann_lo = np.minimum(ann["start_s"], ann["end_s"])
    ann_hi = np.maximum(ann["start_s"], ann["end_s"])
    ann = ann.assign(start_s=ann_lo, end_s=ann_hi)
    classes = sorted(set(det["label"]) | set(ann["label"]))
    rows = []
    for c in classes:
        n_det = n_ann = ann_hit = det_hit = 0
        for stem in sorted(set(det["_stem"]) | set(ann["_stem"])):
            d = det[(det["label"] == c) & (det["_stem"] == stem)].sort_values(score_col, ascending=False)
            a = ann[(ann["label"] == c) & (ann["_stem"] == stem)]
            n_det += len(d)
            n_ann += len(a)
            a_s, a_e = a["start_s"].to_numpy(), a["end_s"].to_numpy()
            if matching == "any":  # an annotation is found if any detection matches it, and vice versa
                hits = np.array(
                    [
                        [_matches(ds, de, a_s[j], a_e[j], rule, tolerance_s, min_iou) for j in range(len(a))]
                        for ds, de in zip(d["start_s"], d["end_s"], strict=True)
                    ],
                    dtype=bool,
                ).reshape(len(d), len(a))
                ann_hit += int(hits.any(axis=0).sum())
                det_hit += int(hits.any(axis=1).sum())
                continue
            free = np.ones(len(a), dtype=bool)
            for ds, de in zip(d["start_s"], d["end_s"], strict=True):
                for j in np.flatnonzero(free):
                    if _matches(ds, de, a_s[j], a_e[j], rule, tolerance_s, min_iou):
                        free[j] = False
                        ann_hit += 1
                        det_hit += 1
                        break
        rows.append(_prf(c, n_ann, n_det, ann_hit, det_hit))
    rows.append(
        _prf(
            "all",
            sum(r["annotations"] for r in rows),
            sum(r["detections"] for r in rows),
            sum(r["tp"] for r in rows),
            sum(r["detections"] - r["fp"] for r in rows),
        )
    )
    table = pd.DataFrame(rows)
    if out is not None:
        with atomic_path(out) as tmp:
            table.to_csv(tmp, index=False, float_format="%.4f")
    return table


def _prf(c: str, n_ann: int, n_det: int, ann_hit: int, det_hit: int) -> dict[str, Any]:
    """``tp``: annotations found; ``fp``: detections that match nothing; ``fn``: annotations missed
    (one-to-one matching: annotations found = detections that match)."""
    p = det_hit / n_det if n_det else float("nan")
    r = ann_hit / n_ann if n_ann else float("nan")
    f = 2 * p * r / (p + r) if ann_hit and det_hit else 0.0
    return {
        "class": c,
        "annotations": n_ann,
        "detections": n_det,
        "tp": ann_hit,
        "fp": n_det - det_hit,
        "fn": n_ann - ann_hit,
        "precision": p,
        "recall": r,
        "f1": f,
    }
