"""``chirpkit score-detections``: the measures the field compares detectors with.

From a detections table (``detections.csv`` or ``events.csv`` of :func:`chirpkit.detect`), the
annotations, and — for the threshold-free measures — the dense score matrix that ``detect
--formats scores`` writes (``scores.parquet``: every class for every window):

* **window level** (BirdCLEF, BirdSet): per-class average precision and ROC-AUC over the windows
  of the score matrix, their macro means (classes without a positive window, or without a
  negative one, are skipped and listed), top-1. A window is positive for a class when an
  annotation of that class overlaps it by at least ``min(min_overlap_s, the annotation's
  length)``, a point annotation when it falls inside the window.
* **events** at IoU >= ``min_iou`` with one-to-one optimal matching (DCASE task 5: 0.3), and
  collar-based (DCASE / ``sed_eval``'s event-based F1: onset within ``collar_s``, offset within
  ``max(collar_s, half the event)``), computed by ``sed_eval`` when it is installed.
* **PSDS** (DCASE task 4, ``sed_scores_eval``: threshold-free, exact) in both DCASE scenarios,
  with the PSD-ROC curve, when a score matrix is given.
* **false positives per hour** on background-only recordings: the detections on recordings that
  have no annotation (or on the ``background`` list), per hour of their audio.
* **thresholds** per class at a target precision, chosen on the score matrix's windows.
* 95 % **confidence intervals** by a seeded bootstrap over recordings.

:func:`detection_report` computes (a :class:`DetectionReport`); :meth:`DetectionReport.write`
writes ``per_class.csv``, ``summary.json``, ``thresholds.csv`` and the PNGs.
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from chirpkit._options import takes_options
from chirpkit.data.options import ANNOTATION_TABLE, SourceOptions
from chirpkit.detection.events import check_match_settings, event_table, match_counts, prepare_scoring
from chirpkit.errors import ConfigError, DataError, MissingPathError
from chirpkit.evaluation.thresholds import choose_thresholds
from chirpkit.metrics import bootstrap_ci, ranking_scores, threshold_free
from chirpkit.utils.io import output_dir, write_csv, write_json

__all__ = [
    "PSDS_SCENARIOS",
    "DetectionReport",
    "detection_report",
    "read_score_matrix",
    "window_truth",
]

log = logging.getLogger("chirpkit")

#: DCASE 2021-2024 task 4's two operating points (``sed_scores_eval.intersection_based.psds``).
PSDS_SCENARIOS: dict[str, dict[str, float | None]] = {
    "psds1": {"dtc_threshold": 0.7, "gtc_threshold": 0.7, "cttc_threshold": None, "alpha_ct": 0.0},
    "psds2": {"dtc_threshold": 0.1, "gtc_threshold": 0.1, "cttc_threshold": 0.3, "alpha_ct": 0.5},
}
_KEY = ["file", "start_s", "end_s"]


def _stem(f: Any) -> str:
    return Path(str(f)).stem


# --- the score matrix ----------------------------------------------------------------------------


def read_score_matrix(scores: pd.DataFrame | str | os.PathLike[str]) -> pd.DataFrame:
    """The dense score matrix: ``file, start_s, end_s`` and one float column per class.

    Raises:
        MissingPathError: the file does not exist.
        DataError: it cannot be read, lacks the key columns, has no class column, or holds
            scores that are not finite numbers.
    """
    where = "score matrix"
    if isinstance(scores, pd.DataFrame):
        table = scores.copy()
    else:
        p = Path(scores)
        where = f"score matrix {p}"
        if not p.is_file():
            raise MissingPathError(
                f"score matrix not found: {p} (detect writes scores.parquet with --formats scores)"
            )
        try:
            table = pd.read_parquet(p) if p.suffix == ".parquet" else pd.read_csv(p)
        except Exception as exc:
            raise DataError(f"cannot read {where}: {exc}") from exc
    missing = [c for c in _KEY if c not in table.columns]
    if missing:
        raise DataError(f"{where} lacks column(s) {missing}; it has {list(table.columns)[:8]}")
    classes = [c for c in table.columns if c not in _KEY]
    if not classes:
        raise DataError(f"{where} has no class columns besides {_KEY}")
    values = table[classes].apply(pd.to_numeric, errors="coerce").to_numpy(np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise DataError(
            f"{where} row {i}: score of {classes[j]!r} is {table[classes[j]].iloc[i]!r}, not a finite number"
        )
    table[classes] = values
    return table.sort_values(_KEY, ignore_index=True)


def window_truth(
    windows: pd.DataFrame, annotations: pd.DataFrame, classes: Sequence[str], *, min_overlap_s: float
) -> np.ndarray:
    """``(windows, classes)`` booleans: a window is positive for a class when an annotation of the
    class overlaps it by ``>= min(min_overlap_s, annotation length)`` (and by more than nothing),
    or, for a point annotation, when the point lies inside the window."""
    lookup = {c: i for i, c in enumerate(classes)}
    truth = np.zeros((len(windows), len(classes)), dtype=bool)
    stems = windows["file"].map(_stem).to_numpy()
    w_s, w_e = windows["start_s"].to_numpy(float), windows["end_s"].to_numpy(float)
    by_stem = {s: np.flatnonzero(stems == s) for s in np.unique(stems)}
    for (stem, label), a in annotations.groupby(["_stem", "label"], sort=False):
        rows, c = by_stem.get(str(stem)), lookup.get(str(label))
        if rows is None or c is None:
            continue
        a_s, a_e = a["start_s"].to_numpy(float)[None, :], a["end_s"].to_numpy(float)[None, :]
        ws, we = w_s[rows, None], w_e[rows, None]
        inter = np.minimum(we, a_e) - np.maximum(ws, a_s)
        length = a_e - a_s
        point = (length <= 0) & (a_s >= ws) & (a_s <= we)
        hit = ((inter > 0) & (inter >= np.minimum(min_overlap_s, length) - 1e-9)) | point
        truth[rows, c] |= hit.any(axis=1)
    return truth


# --- library measures ----------------------------------------------------------------------------


def _sed_scores_eval() -> Any:
    """``sed_scores_eval``, made to accept pandas 3's read-only arrays.

    Its 0.0.4 release (the newest on PyPI) hands ``DataFrame.to_numpy()`` to a Cython function
    that needs a writable buffer; pandas 3 returns read-only views, so every curve fails with
    "buffer source array is read-only". Upstream fixed it after the release (fgnt/sed_scores_eval
    #17); until then the arrays are copied on the way in.
    """
    try:
        import sed_scores_eval
        from sed_scores_eval.base_modules import statistics
    except ImportError as exc:
        raise ConfigError(
            "PSDS needs sed_scores_eval: pip install 'chirpkit[eval]' (or sed_scores_eval)"
        ) from exc
    original = statistics.onset_offset_curves
    if not getattr(original, "_chirpkit_writable", False):

        def onset_offset_curves(scores: Any, timestamps: Any, change_point_candidates: Any = None) -> Any:
            cps = None if change_point_candidates is None else np.array(change_point_candidates, float)
            return original(np.array(scores, dtype=float), np.array(timestamps, dtype=float), cps)

        onset_offset_curves._chirpkit_writable = True  # type: ignore[attr-defined]
        statistics.onset_offset_curves = onset_offset_curves
    return sed_scores_eval


def _frames(matrix: pd.DataFrame, classes: Sequence[str]) -> dict[str, pd.DataFrame]:
    """Score matrix → ``sed_scores_eval`` frames per recording: contiguous, non-overlapping. Each
    window becomes the stretch around its centre, cut half-way to its neighbours' centres (windows
    overlap when the hop is shorter than the window)."""
    from sed_scores_eval.base_modules.scores import create_score_dataframe

    out: dict[str, pd.DataFrame] = {}
    for stem, g in matrix.assign(_stem=matrix["file"].map(_stem)).groupby("_stem", sort=True):
        centres = ((g["start_s"] + g["end_s"]) / 2).to_numpy(float)
        cuts = (centres[:-1] + centres[1:]) / 2
        edges = np.round(np.r_[max(0.0, float(g["start_s"].min())), cuts, float(g["end_s"].max())], 6)
        out[str(stem)] = create_score_dataframe(g[list(classes)].to_numpy(np.float64), edges, list(classes))
    return out


def _ground_truth(ann: pd.DataFrame, stems: Sequence[str]) -> dict[str, list[tuple[float, float, str]]]:
    """Annotations per recording as ``(onset, offset, label)``, overlapping events of one class
    merged (``sed_scores_eval`` refuses overlapping ones); a point annotation gets 10 ms."""
    gt: dict[str, list[tuple[float, float, str]]] = {s: [] for s in stems}
    for (stem, label), a in ann[ann["_stem"].isin(list(stems))].groupby(["_stem", "label"], sort=True):
        s = a["start_s"].to_numpy(float)
        e = np.maximum(a["end_s"].to_numpy(float), s + 0.01)
        order = np.argsort(s)
        cur_s, cur_e = s[order[0]], e[order[0]]
        for i in order[1:]:
            if s[i] <= cur_e:
                cur_e = max(cur_e, e[i])
            else:
                gt[str(stem)].append((float(cur_s), float(cur_e), str(label)))
                cur_s, cur_e = s[i], e[i]
        gt[str(stem)].append((float(cur_s), float(cur_e), str(label)))
    return gt


def _psds(
    frames: dict[str, pd.DataFrame], gt: dict[str, Any], durations: dict[str, float], max_efpr: float
) -> tuple[dict[str, float], dict[str, Any]]:
    sse = _sed_scores_eval()
    values: dict[str, float] = {}
    curves: dict[str, Any] = {}
    one_class = len({lab for events in gt.values() for _, _, lab in events}) < 2
    for name, params in PSDS_SCENARIOS.items():
        if one_class:  # cross-triggers need a second class
            params = {**params, "cttc_threshold": None, "alpha_ct": 0.0}
        value, _, (etpr, efpr), _ = sse.intersection_based.psds(
            frames, gt, durations, alpha_st=1.0, unit_of_time="hour", max_efpr=max_efpr, **params
        )
        values[name] = float(value)
        curves[name] = (np.asarray(etpr), np.asarray(efpr))
    return values, curves


def _collar_f1(
    det: pd.DataFrame, ann: pd.DataFrame, classes: Sequence[str], collar_s: float
) -> dict[str, Any]:
    """DCASE's collar-based event F1 by ``sed_eval`` (onset within the collar, offset within
    ``max(collar, half the event)``, optimal matching); ``None`` when sed_eval is missing."""
    try:
        with warnings.catch_warnings():  # dcase_util imports pkg_resources, deprecated by setuptools
            warnings.simplefilter("ignore")
            import sed_eval
    except Exception:  # sed_eval pulls dcase_util, which needs setuptools' pkg_resources
        log.warning("score-detections: sed_eval is not importable; the collar event F1 is left out")
        return {"source": None}
    metric = sed_eval.sound_event.EventBasedMetrics(
        event_label_list=list(classes), t_collar=collar_s, percentage_of_length=0.5
    )

    def events(t: pd.DataFrame, stem: str) -> list[dict[str, Any]]:
        return [
            {"filename": stem, "event_onset": s, "event_offset": e, "event_label": lab}
            for s, e, lab in zip(t["start_s"], t["end_s"], t["label"], strict=True)
        ]

    for stem in sorted(set(ann["_stem"]) | set(det["_stem"])):
        metric.evaluate(
            reference_event_list=events(ann[ann["_stem"] == stem], stem),
            estimated_event_list=events(det[det["_stem"] == stem], stem),
        )
    overall = metric.results_overall_metrics()["f_measure"]
    macro = metric.results_class_wise_average_metrics()["f_measure"]
    per_class = metric.results_class_wise_metrics()
    return {
        "source": f"sed_eval {getattr(sed_eval, '__version__', '')}".strip(),
        "micro_f1": float(overall["f_measure"]),
        "macro_f1": float(macro["f_measure"]),
        "per_class": {c: float(per_class[c]["f_measure"]["f_measure"]) for c in classes},
    }


# --- the report ----------------------------------------------------------------------------------


@dataclass
class DetectionReport:
    """What :func:`detection_report` measured; :meth:`write` puts it on disk."""

    per_class: pd.DataFrame
    summary: dict[str, Any]
    thresholds: pd.DataFrame | None = None
    window_truth: np.ndarray | None = None
    window_scores: np.ndarray | None = None
    psd_roc: dict[str, Any] = field(default_factory=dict)
    #: the event table under the caller's own matching rule (``rule``, ``tolerance_s``,
    #: ``matching``): what :func:`~chirpkit.detection.events.score_detections` returns
    rule_table: pd.DataFrame | None = None

    def write(self, out: str | os.PathLike[str]) -> list[Path]:
        """``per_class.csv``, ``summary.json``, ``thresholds.csv`` (with a score matrix),
        ``pr_curves.png`` and ``psd_roc.png`` into the folder ``out``, each atomically."""
        from chirpkit.utils.plots import save_pr_curves, save_psd_roc

        root = output_dir(out, "score-detections report folder")
        written = [root / "per_class.csv", root / "summary.json"]
        write_csv(written[0], self.per_class, index=False, float_format="%.4f")
        write_json(written[1], self.summary)
        if self.thresholds is not None:
            written.append(root / "thresholds.csv")
            write_csv(written[-1], self.thresholds, index=False, float_format="%.4f")
        if self.window_truth is not None and self.window_scores is not None:
            names = self.per_class.loc[self.per_class["class"] != "all", "class"].tolist()
            w = self.summary["window"]
            written.append(
                save_pr_curves(
                    self.window_truth,
                    self.window_scores,
                    names,
                    root / "pr_curves.png",
                    title=f"windows: macro AP {w['cmap']:.3f}, macro ROC-AUC {w['macro_roc_auc']:.3f}",
                )
            )
        if self.psd_roc:
            written.append(
                save_psd_roc(self.psd_roc, self.summary["psds"], root / "psd_roc.png", unit="hour")
            )
        return written

    def text(self) -> str:
        """The summary as a few lines for a terminal."""
        s = self.summary
        ev = s["events"]
        lines = [
            f"recordings scored: {s['recordings']}   annotations: {s['annotations']}   "
            f"detections: {s['detections']}",
            f"events (IoU >= {ev['min_iou']}, one-to-one): precision {_num(ev['precision'])}  "
            f"recall {_num(ev['recall'])}  F1 {ev['f1']:.3f}{_ci(s, 'event_f1')}   "
            f"macro F1 {ev['macro_f1']:.3f}",
        ]
        col = s["collar"]
        if col.get("micro_f1") is not None:
            lines.append(
                f"events (collar {col['collar_s']} s, {col['source']}): F1 {col['micro_f1']:.3f}  "
                f"macro F1 {col['macro_f1']:.3f}"
            )
        if "window" in s:
            w = s["window"]
            lines.append(
                f"windows ({w['windows']}): macro AP {w['cmap']:.3f}{_ci(s, 'window_cmap')}  macro ROC-AUC "
                f"{w['macro_roc_auc']:.3f}{_ci(s, 'window_macro_roc_auc')}  top-1 {w['top1']:.3f}"
                + (
                    f"  (AP skips {len(w['skipped_ap'])} class(es) without positives)"
                    if w["skipped_ap"]
                    else ""
                )
            )
        if s.get("psds"):
            lines.append("PSDS: " + "  ".join(f"{k} {v:.3f}" for k, v in s["psds"].items()))
        fp = s["false_positives"]
        if fp["hours"]:
            lines.append(
                f"false positives on {fp['recordings']} background recording(s) ({fp['hours']:.2f} h): "
                f"{fp['detections']} → {fp['per_hour']:.1f} per hour"
            )
        else:
            lines.append("false positives per hour: no background-only recording (give --background)")
        return "\n".join(lines)


def _num(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def _ci(summary: Mapping[str, Any], key: str) -> str:
    ci = summary.get("ci", {}).get(key)
    return f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""


def _durations(matrix: pd.DataFrame | None, files: Mapping[str, str]) -> dict[str, float]:
    """Seconds per recording stem: from the score matrix, else by probing the file."""
    from chirpkit.audio import info

    out: dict[str, float] = {}
    if matrix is not None:
        ends = matrix.assign(_stem=matrix["file"].map(_stem)).groupby("_stem")["end_s"].max()
        out.update({str(k): float(v) for k, v in ends.items()})
    for stem, f in files.items():
        if stem in out:
            continue
        try:
            out[stem] = float(info(f).duration_s)
        except Exception as exc:  # a recording that is gone counts nowhere, and says so
            log.warning(
                "score-detections: cannot read the duration of %s (%s); its hours are not counted", f, exc
            )
    return out


@takes_options(SourceOptions, include=ANNOTATION_TABLE)
def detection_report(
    detections: pd.DataFrame | str | os.PathLike[str],
    annotations: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | pd.DataFrame,
    *,
    scores: pd.DataFrame | str | os.PathLike[str] | None = None,
    min_iou: float = 0.3,
    collar_s: float = 0.2,
    min_overlap_s: float = 0.5,
    background: Sequence[str | os.PathLike[str]] | None = None,
    target_precision: float = 0.9,
    max_efpr: float = 100.0,
    n_boot: int = 1000,
    seed: int = 0,
    rule: str = "overlap",
    tolerance_s: float = 0.5,
    matching: str = "one-to-one",
    format: str = "auto",
    label_column: str | None = None,
    columns: Mapping[str, str] | None = None,
    label_map: Mapping[str, str] | None = None,
    recordings: Sequence[str | os.PathLike[str]] | None = None,
    out: str | os.PathLike[str] | None = None,
) -> DetectionReport:
    """Score detections the way the field does; see the module docstring for each measure.

    Args:
        detections: a detections or events table (``file, start_s, end_s, label[, score]``).
        annotations: annotation table(s) in any supported format, or a frame as
            :func:`chirpkit.data.annotations.read_annotations` returns.
        scores: the dense score matrix (``scores.parquet`` from ``detect --formats scores``):
            window AP / ROC-AUC, PSDS and thresholds need it.
        min_iou: IoU for the event F1 (DCASE task 5: 0.3).
        collar_s: the collar of the collar-based event F1 (DCASE: 0.2 s).
        min_overlap_s: a window is positive for a class when an annotation overlaps it by at
            least this (or by its whole length when shorter).
        background: recordings that hold no target sound; default: the scanned recordings without
            any annotation.
        target_precision: the per-class thresholds reach this window precision.
        max_efpr: PSDS's largest false-positive rate (per hour) of the area.
        n_boot: bootstrap draws (over recordings) for the 95 % intervals; 0 skips them.
        seed: the bootstrap's seed.
        rule, tolerance_s, matching: a further event table under this matching rule
            (``rule_table``, as :func:`~chirpkit.detection.events.score_detections`), from the
            same reading of the inputs.
        {options}
        label_map: rename annotation labels to model labels (``{"PIHA": "bird"}``).
        recordings: the recordings that were scanned (default: the ``manifest.csv`` beside the
            detections, else the score matrix's, else every annotated recording).
        out: a folder to write the report to (:meth:`DetectionReport.write`).

    Returns:
        The report: ``per_class`` (one row per class and ``all``), ``summary`` (every figure and
        its interval), ``thresholds``.
    """
    _check_report_settings(
        min_iou=min_iou,
        rule=rule,
        tolerance_s=tolerance_s,
        matching=matching,
        collar_s=collar_s,
        min_overlap_s=min_overlap_s,
        target_precision=target_precision,
        n_boot=n_boot,
        max_efpr=max_efpr,
    )
    matrix = read_score_matrix(scores) if scores is not None else None
    if recordings is None and matrix is not None:
        recordings = sorted(set(matrix["file"].astype(str)))
    det, ann, scanned = prepare_scoring(
        detections,
        annotations,
        format=format,
        label_column=label_column,
        columns=columns,
        label_map=label_map,
        recordings=recordings,
    )
    stems = sorted(scanned if scanned is not None else set(ann["_stem"]) | set(det["_stem"]))
    files = dict(zip(det["_stem"], det["file"].astype(str), strict=True))
    if matrix is not None:
        files.update({_stem(f): str(f) for f in matrix["file"].unique()})
        model_classes = [c for c in matrix.columns if c not in _KEY]
    else:
        model_classes = []
    classes = sorted(set(det["label"]) | set(ann["label"]) | set(model_classes))

    counts = match_counts(det, ann, rule="iou", tolerance_s=0.0, min_iou=min_iou)
    per_class = event_table(counts, classes)
    summary = _event_summary(per_class, det, ann, classes, stems, min_iou, collar_s)
    bg = {_stem(b) for b in background} if background is not None else set(stems) - set(ann["_stem"])
    summary["false_positives"] = _false_positives(
        per_class, det, matrix, files, bg, given=background is not None
    )
    rule_counts = match_counts(
        det, ann, rule=rule, tolerance_s=tolerance_s, min_iou=min_iou, matching=matching
    )
    report = DetectionReport(per_class=per_class, summary=summary, rule_table=event_table(rule_counts))
    if matrix is not None:
        _window_measures(report, matrix, ann, model_classes, min_overlap_s, target_precision)
        _psds_measures(report, matrix, ann, model_classes, max_efpr)
    if n_boot:
        summary["ci"] = _intervals(report, counts, matrix, ann, stems, n_boot, seed)
        summary["ci_settings"] = {"level": 0.95, "n_boot": n_boot, "seed": seed, "over": "recordings"}
    if out is not None:
        report.write(out)
    return report


def _check_report_settings(
    *,
    min_iou: float,
    rule: str,
    tolerance_s: float,
    matching: str,
    collar_s: float,
    min_overlap_s: float,
    target_precision: float,
    n_boot: int,
    max_efpr: float,
) -> None:
    """Refuse settings no measure can use, before anything is read."""
    check_match_settings("iou", 0.0, min_iou, "one-to-one")
    check_match_settings(rule, tolerance_s, min_iou, matching)
    for name, value in (("collar_s", collar_s), ("min_overlap_s", min_overlap_s)):
        if not (math.isfinite(value) and value >= 0):
            raise ConfigError(f"{name}={value} must be a finite number of seconds >= 0")
    if not 0 < target_precision <= 1:
        raise ConfigError(f"target_precision={target_precision} must be in (0, 1]")
    if n_boot < 0:
        raise ConfigError(f"n_boot={n_boot} must be >= 0")
    if not max_efpr > 0:
        raise ConfigError(f"max_efpr={max_efpr} must be > 0")


def _event_summary(
    per_class: pd.DataFrame,
    det: pd.DataFrame,
    ann: pd.DataFrame,
    classes: list[str],
    stems: list[str],
    min_iou: float,
    collar_s: float,
) -> dict[str, Any]:
    """The summary's counts, event F1 at IoU and collar-based F1 (its per-class figures go into
    ``per_class`` as ``f1_collar``)."""
    collar = _collar_f1(det, ann, classes, collar_s) | {"collar_s": collar_s}
    if collar.get("per_class"):
        per_class["f1_collar"] = per_class["class"].map(collar["per_class"] | {"all": collar["micro_f1"]})
    events_all = per_class.iloc[-1]  # the "all" row
    annotated = per_class["annotations"] > 0
    return {
        "recordings": len(stems),
        "annotations": len(ann),
        "detections": len(det),
        "events": {
            "rule": f"IoU >= {min_iou}, one-to-one optimal matching (DCASE task 5)",
            "min_iou": min_iou,
            "precision": _nan_none(float(events_all["precision"])),
            "recall": _nan_none(float(events_all["recall"])),
            "f1": float(events_all["f1"]),
            # over the classes with annotations (a class never annotated has no recall to average)
            "macro_f1": float(per_class.loc[(per_class["class"] != "all") & annotated, "f1"].mean())
            if annotated.any()
            else 0.0,
        },
        "collar": {k: v for k, v in collar.items() if k != "per_class"},
    }


def _false_positives(
    per_class: pd.DataFrame,
    det: pd.DataFrame,
    matrix: pd.DataFrame | None,
    files: dict[str, str],
    bg: set[str],
    *,
    given: bool,
) -> dict[str, Any]:
    """False positives per hour on the background recordings ``bg`` (stems): the summary's
    figures, and ``fp_per_hour`` per class in ``per_class``."""
    durations = _durations(matrix, {s: files[s] for s in bg if s in files})
    hours = sum(durations.get(s, 0.0) for s in bg) / 3600
    fp_det = det[det["_stem"].isin(bg)]
    fp_by_class = fp_det.groupby("label").size()
    per_class["fp_per_hour"] = per_class["class"].map(
        lambda c: (int(fp_by_class.get(c, 0)) if c != "all" else len(fp_det)) / hours if hours else math.nan
    )
    return {
        "rule": "detections on the given background recordings"
        if given
        else "detections on recordings without annotations",
        "recordings": len(bg),
        "hours": round(hours, 4),
        "detections": len(fp_det),
        "per_hour": len(fp_det) / hours if hours else None,
    }


def _psds_measures(
    report: DetectionReport,
    matrix: pd.DataFrame,
    ann: pd.DataFrame,
    model_classes: list[str],
    max_efpr: float,
) -> None:
    """PSDS over the classes with ground truth (sed_scores_eval refuses the others), into
    ``report.summary`` and ``report.psd_roc``."""
    annotated = [c for c in model_classes if (ann["label"] == c).any()]
    if not annotated:
        return
    frames = _frames(matrix, annotated)
    gt = _ground_truth(ann[ann["label"].isin(annotated)], list(frames))
    durs = {s: float(f["offset"].max()) for s, f in frames.items()}
    report.summary["psds"], report.psd_roc = _psds(frames, gt, durs, max_efpr)
    report.summary["psds_settings"] = {
        "unit_of_time": "hour",
        "max_efpr": max_efpr,
        "alpha_st": 1.0,
        "classes_without_annotations": sorted(set(model_classes) - set(annotated)),
        "cross_triggers": len(annotated) >= 2,  # psds2's alpha_ct needs two classes
        **PSDS_SCENARIOS,
    }


def _nan_none(v: float) -> float | None:
    return None if v != v else float(v)


def _window_measures(
    report: DetectionReport,
    matrix: pd.DataFrame,
    ann: pd.DataFrame,
    classes: list[str],
    min_overlap_s: float,
    target_precision: float,
) -> None:
    truth = window_truth(matrix[_KEY], ann, classes, min_overlap_s=min_overlap_s)
    values = matrix[classes].to_numpy(np.float64)
    r = ranking_scores(truth, values, classes)
    report.window_truth, report.window_scores = truth, values
    ap = dict(zip(classes, r["ap"], strict=True))
    auc = dict(zip(classes, r["roc_auc"], strict=True))
    pc = report.per_class
    pc["window_ap"] = pc["class"].map(ap)
    pc["window_roc_auc"] = pc["class"].map(auc)
    pc.loc[pc["class"] == "all", ["window_ap", "window_roc_auc"]] = [r["cmap"], r["macro_roc_auc"]]
    positives = dict(zip(classes, truth.sum(axis=0).tolist(), strict=True))
    pc["window_positives"] = pc["class"].map(positives | {"all": int(truth.sum())})
    report.summary["window"] = {
        "rule": f"a window is positive for a class when an annotation of it overlaps the window by "
        f">= min({min_overlap_s} s, its length); a point annotation inside the window",
        "windows": len(values),
        **threshold_free(r),
        **{k: r[k] for k in ("classes_scored_ap", "classes_scored_roc_auc")},
        "skipped_ap": r["skipped_ap"],
        "skipped_roc_auc": r["skipped_roc_auc"],
    }
    table = choose_thresholds(values, truth, classes, f"precision={target_precision}")
    report.thresholds = table.rename(columns={"precision": "window_precision", "recall": "window_recall"})
    report.summary["thresholds"] = {
        "target_precision": target_precision,
        "reachable": int(table["reachable"].sum()),
    }


def _intervals(
    report: DetectionReport,
    counts: pd.DataFrame,
    matrix: pd.DataFrame | None,
    ann: pd.DataFrame,
    stems: Sequence[str],
    n_boot: int,
    seed: int,
) -> dict[str, list[float]]:
    """95 % intervals of the headline figures, by one bootstrap over recordings."""
    code = {s: i for i, s in enumerate(stems)}
    groups = np.arange(len(stems))
    c = counts[counts["stem"].isin(list(code))]
    c_code = c["stem"].map(code).to_numpy()
    n_ann, n_det = c["annotations"].to_numpy(float), c["detections"].to_numpy(float)
    a_hit, d_hit = c["ann_hit"].to_numpy(float), c["det_hit"].to_numpy(float)
    truth, values = report.window_truth, report.window_scores
    w_code = None
    if matrix is not None and truth is not None and values is not None:
        w_code = matrix["file"].map(_stem).map(code).to_numpy()

    def statistic(weights: np.ndarray) -> dict[str, float]:
        w = weights  # one weight per recording
        out: dict[str, float] = {}
        ww = w[c_code]
        na, nd, ah, dh = (ww * n_ann).sum(), (ww * n_det).sum(), (ww * a_hit).sum(), (ww * d_hit).sum()
        p = dh / nd if nd else math.nan
        r = ah / na if na else math.nan
        # a draw without any annotated recording has no recall: nan, left out of the interval
        out["event_f1"] = math.nan if not na else (2 * p * r / (p + r) if ah and dh else 0.0)
        if w_code is not None and truth is not None and values is not None:
            rs = ranking_scores(truth, values, sample_weight=w[w_code], exact=False)
            out["window_cmap"], out["window_macro_roc_auc"] = rs["cmap"], rs["macro_roc_auc"]
        return out

    return bootstrap_ci(statistic, groups, n_boot=n_boot, seed=seed)
