"""Detection events: merging windows, writing Raven/Audacity tables, scoring against annotations.

* :func:`merge_events` — consecutive or overlapping windows of the same label (per file) become
  one event ``file, start_s, end_s, label, max_score, mean_score, windows``.
* :func:`write_raven` / :func:`write_audacity` — one table per recording, loadable in Raven Pro /
  Audacity next to the recording.
* :func:`score_detections` — event-level precision, recall and F1 per class against an annotation
  table (every format of :mod:`chirpkit.data.annotations`), with optimal one-to-one matching
  (:func:`optimal_matching`: the most pairs, as sed_eval's event-based metrics, then the best total
  IoU) under a time rule: ``overlap`` (detection overlaps the annotation widened by
  ``tolerance_s``), ``onset`` (|detection start − annotation start| ≤ ``tolerance_s``),
  ``onset-offset`` (DCASE: onset within the collar, offset within max(collar, half the length)) or
  ``iou`` (intersection over union ≥ ``min_iou``; a point annotation, which has no IoU, matches
  a detection that holds it).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from chirpkit._options import takes_options
from chirpkit.data.options import ANNOTATION_TABLE, SourceOptions
from chirpkit.detection.score_inputs import read_annotation_tables, read_detections, scanned_recordings
from chirpkit.errors import (
    ConfigError,
    RunError,
)
from chirpkit.utils.io import atomic_path, write_csv

__all__ = [
    "EVENT_COLUMNS",
    "RULES",
    "check_match_settings",
    "event_table",
    "match_counts",
    "merge_events",
    "optimal_matching",
    "prepare_scoring",
    "prf",
    "score_detections",
    "write_audacity",
    "write_raven",
]

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
        write_csv(path, t, sep="\t", index=False)
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


RULES = ("overlap", "onset", "onset-offset", "iou")


def _pairs(
    d_s: np.ndarray,
    d_e: np.ndarray,
    a_s: np.ndarray,
    a_e: np.ndarray,
    *,
    rule: str,
    tolerance_s: float,
    min_iou: float,
    offset_share: float = 0.5,
    chunk: int = 2048,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every (detection, annotation) pair that matches under ``rule``, with a quality in [0, 1].

    Quality (the tie-break among equally large matchings): IoU for ``overlap`` and ``iou``,
    ``1 / (1 + |Δonset| [+ |Δoffset|])`` for the onset rules. Computed in chunks of detections, so
    memory stays flat on long recordings.

    Returns:
        ``(detection index, annotation index, quality)`` arrays.
    """
    out_d, out_a, out_q = [], [], []
    a_s_, a_e_ = a_s[None, :], a_e[None, :]
    for lo in range(0, len(d_s), chunk):
        ds, de = d_s[lo : lo + chunk, None], d_e[lo : lo + chunk, None]
        inter = np.clip(np.minimum(de, a_e_) - np.maximum(ds, a_s_), 0.0, None)
        union = np.maximum(de, a_e_) - np.minimum(ds, a_s_)
        iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
        d_on = np.abs(ds - a_s_)
        if rule == "onset":
            hit, quality = d_on <= tolerance_s, 1.0 / (1.0 + d_on)
        elif rule == "onset-offset":  # DCASE / sed_eval: offset within max(collar, share of length)
            d_off = np.abs(de - a_e_)
            hit = (d_on <= tolerance_s) & (d_off <= np.maximum(tolerance_s, offset_share * (a_e_ - a_s_)))
            quality = 1.0 / (1.0 + d_on + d_off)
        elif rule == "iou":  # a point annotation has no IoU: it matches a detection holding it
            point = (a_e_ - a_s_) <= 0
            held = point & (ds <= a_s_) & (de >= a_s_)
            hit, quality = ((union > 0) & (iou >= min_iou) & ~point) | held, np.where(point, 0.5, iou)
        else:  # overlap with the annotation widened by the tolerance
            hit, quality = (ds <= a_e_ + tolerance_s) & (de >= a_s_ - tolerance_s), iou
        di, ai = np.nonzero(hit)
        out_d.append(di + lo)
        out_a.append(ai)
        out_q.append(quality[di, ai])
    if not out_d:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
    return np.concatenate(out_d), np.concatenate(out_a), np.concatenate(out_q)


def optimal_matching(
    n_det: int, n_ann: int, det: np.ndarray, ann: np.ndarray, quality: np.ndarray
) -> list[tuple[int, int]]:
    """A one-to-one matching with the most pairs, and among those the highest total quality.

    ``linear_sum_assignment`` on weights ``K + quality`` (``K`` larger than any sum of qualities,
    so one more pair always wins), solved per connected component of the match graph: events far
    apart in time never compete, so the problems stay small on long recordings.

    Returns:
        the matched ``(detection, annotation)`` index pairs, sorted.
    """
    from scipy.optimize import linear_sum_assignment
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    if len(det) == 0:
        return []
    n = n_det + n_ann
    graph = coo_matrix((np.ones(len(det)), (det, n_det + ann)), shape=(n, n))
    _, comp = connected_components(graph, directed=False)
    edge_comp = comp[det]
    order = np.argsort(edge_comp, kind="stable")
    bounds = np.flatnonzero(np.diff(edge_comp[order])) + 1
    pairs: list[tuple[int, int]] = []
    for edges in np.split(order, bounds):
        rows, r_idx = np.unique(det[edges], return_inverse=True)
        cols, c_idx = np.unique(ann[edges], return_inverse=True)
        if len(edges) == 1:
            pairs.append((int(rows[0]), int(cols[0])))
            continue
        big = min(len(rows), len(cols)) + 1.0
        weight = np.zeros((len(rows), len(cols)))
        weight[r_idx, c_idx] = big + quality[edges]
        for r, c in zip(*linear_sum_assignment(weight, maximize=True), strict=True):
            if weight[r, c] > 0:
                pairs.append((int(rows[r]), int(cols[c])))
    return sorted(pairs)


@takes_options(SourceOptions, include=ANNOTATION_TABLE)
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

    Files are matched by stem (``x.wav`` annotations score detections on ``x.mp3``). One-to-one
    matching is optimal, as in sed_eval's event-based metrics: the most (detection, annotation)
    pairs, then the highest total IoU (or onset closeness); it does not depend on the order or
    the scores of the rows. Only the recordings that were scanned count: ``recordings``, else
    the finished files of the ``manifest.csv`` beside a detections file from
    :func:`chirpkit.detect`, else every annotated recording (annotations of recordings left out
    are logged, not counted as misses).

    Args:
        detections: a detections or events table (``file, start_s, end_s, label``; a score is
            optional and not used for matching).
        annotations: annotation table(s) in any supported format, or a frame with the columns of
            :func:`chirpkit.data.annotations.read_annotations`.
        rule: ``overlap`` (default: the detection overlaps the annotation widened by
            ``tolerance_s``), ``onset`` (``|Δonset| <= tolerance_s``), ``onset-offset`` (DCASE's
            event-based rule: onset within the collar ``tolerance_s`` and offset within
            ``max(tolerance_s, half the annotation's length)``) or ``iou`` (``>= min_iou``).
        matching: ``one-to-one`` (default; DCASE/sed_eval event-based scores) or ``any``: recall
            is the share of annotations that any detection matches, precision the share of
            detections that match any annotation; for dense calling, where one merged event spans
            several calls or several overlapping windows cover one call.
        {options}
        label_map: rename annotation labels to model labels (e.g. ``{"PIHA": "bird"}``).
        out: CSV to write the table to (atomically; nothing is written when the inputs are bad).

    Returns:
        One row per class: ``class, annotations, detections, tp, fp, fn, precision, recall, f1``.

    Raises:
        MissingPathError: a detections file or annotation table does not exist.
        DataError: a detections table is empty, unreadable, lacks columns or has a bad row.
        AnnotationError: an annotation table cannot be read or has a bad row.
        ConfigError: an unknown rule or matching, or a negative tolerance.
    """
    check_match_settings(rule, tolerance_s, min_iou, matching)
    if out is not None and Path(out).is_dir():
        raise ConfigError(f"out={out} is a folder; give a CSV file name")
    det, ann, _ = prepare_scoring(
        detections,
        annotations,
        format=format,
        label_column=label_column,
        columns=columns,
        label_map=label_map,
        recordings=recordings,
    )
    counts = match_counts(det, ann, rule=rule, tolerance_s=tolerance_s, min_iou=min_iou, matching=matching)
    table = event_table(counts)
    if out is not None:
        try:
            write_csv(out, table, index=False, float_format="%.4f")
        except OSError as exc:
            raise RunError(f"cannot write {out}: {exc}") from exc
    return table


def check_match_settings(rule: str, tolerance_s: float, min_iou: float, matching: str) -> None:
    """Raise :class:`~chirpkit.errors.ConfigError` for an unknown rule or matching, a negative or
    non-finite tolerance, or an IoU outside (0, 1]."""
    if rule not in RULES:
        raise ConfigError(f"rule={rule!r} must be one of {', '.join(RULES)}")
    if matching not in ("one-to-one", "any"):
        raise ConfigError(f"matching={matching!r} must be one-to-one or any")
    if not (np.isfinite(tolerance_s) and tolerance_s >= 0):
        raise ConfigError(f"tolerance_s={tolerance_s} must be a finite number of seconds >= 0")
    if not (0 < min_iou <= 1):
        raise ConfigError(f"min_iou={min_iou} must be in (0, 1]")


def prepare_scoring(
    detections: pd.DataFrame | str | os.PathLike[str],
    annotations: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | pd.DataFrame,
    *,
    format: str = "auto",
    label_column: str | None = None,
    columns: Mapping[str, str] | None = None,
    label_map: Mapping[str, str] | None = None,
    recordings: Sequence[str | os.PathLike[str]] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, set[str] | None]:
    """Read and check detections and annotations, keep the recordings that were scanned.

    Returns:
        ``(detections, annotations, scanned stems or None)``; both tables gain ``_stem`` (the
        file name without folder and suffix), annotations are ordered (start <= end).
    """
    det, det_path = read_detections(detections)
    ann = read_annotation_tables(annotations, format=format, label_column=label_column, columns=columns)
    if label_map:
        ann["label"] = ann["label"].map(lambda v: label_map.get(v, v))
    det["_stem"] = det["file"].map(lambda f: Path(str(f)).stem)
    ann["_stem"] = ann["file"].map(lambda f: Path(str(f)).stem)
    if recordings is None:
        recordings = scanned_recordings(det_path)
    scanned: set[str] | None = None
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
    if det.empty or ann.empty:
        log.warning("score-detections: %d detection(s), %d annotation(s) to score", len(det), len(ann))
    ann = ann.assign(
        start_s=np.minimum(ann["start_s"], ann["end_s"]), end_s=np.maximum(ann["start_s"], ann["end_s"])
    )
    return det, ann, scanned


def match_counts(
    det: pd.DataFrame,
    ann: pd.DataFrame,
    *,
    rule: str,
    tolerance_s: float,
    min_iou: float,
    matching: str = "one-to-one",
) -> pd.DataFrame:
    """Matches per class and recording: ``class, stem, annotations, detections, ann_hit, det_hit``
    (annotations found, detections that match; equal under one-to-one matching). Tables as
    :func:`prepare_scoring` returns them."""
    det_groups = dict(list(det.groupby(["label", "_stem"], sort=False)))
    ann_groups = dict(list(ann.groupby(["label", "_stem"], sort=False)))
    rows = []
    for key in sorted(set(det_groups) | set(ann_groups)):
        d, a = det_groups.get(key), ann_groups.get(key)
        n_d, n_a = (0 if d is None else len(d)), (0 if a is None else len(a))
        ann_hit = det_hit = 0
        if d is not None and a is not None:
            di, ai, q = _pairs(
                d["start_s"].to_numpy(float),
                d["end_s"].to_numpy(float),
                a["start_s"].to_numpy(float),
                a["end_s"].to_numpy(float),
                rule=rule,
                tolerance_s=tolerance_s,
                min_iou=min_iou,
            )
            if matching == "any":  # an annotation is found if any detection matches it, and vice versa
                ann_hit, det_hit = len(np.unique(ai)), len(np.unique(di))
            else:
                ann_hit = det_hit = len(optimal_matching(n_d, n_a, di, ai, q))
        rows.append(
            {"class": key[0], "stem": key[1], "annotations": n_a, "detections": n_d}
            | {"ann_hit": ann_hit, "det_hit": det_hit}
        )
    return pd.DataFrame(rows, columns=["class", "stem", "annotations", "detections", "ann_hit", "det_hit"])


def event_table(counts: pd.DataFrame, classes: Sequence[str] | None = None) -> pd.DataFrame:
    """Per-class precision / recall / F1 (and ``all``) from :func:`match_counts`; ``classes``
    (default: those in ``counts``, sorted) sets the rows, a class without matches counting zero."""
    by = counts.groupby("class", sort=True)[["annotations", "detections", "ann_hit", "det_hit"]].sum()
    names = sorted(map(str, by.index)) if classes is None else list(classes)
    values = by.reindex(names, fill_value=0).to_numpy(np.int64)
    rows = [prf(c, *(int(v) for v in values[i])) for i, c in enumerate(names)]
    rows.append(prf("all", *(int(v) for v in values.sum(axis=0))))
    return pd.DataFrame(rows)


def prf(c: str, n_ann: int, n_det: int, ann_hit: int, det_hit: int) -> dict[str, Any]:
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
