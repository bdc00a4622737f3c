"""Calibrate per-class thresholds from reviews: P(correct | score) by logistic regression.

For each class, the reviewed detections give pairs (score, correct). A logistic regression of
correct on the score — the model BirdNET-Analyzer's review tab fits, with the score on the logit
scale as Wood & Kahl (2024) fit it — turns any score into the probability that a detection with
that score is right: P(correct | s) = 1 / (1 + exp(-(a + b · logit(s)))). The fit is scikit-learn's
on the standardised logit with a weak penalty (``C=100``) that only keeps a perfectly separated
class finite; BirdNET's tab uses ``C=55`` on the raw score, which on scores bunched near 1 shrinks
the slope so much that a class whose reviews are all right above 0.87 is "never 90 % right".

Over *every* detection of the class — a reviewed one counts as right or wrong as its verdict
says, any other with its fitted probability — this gives the expected precision of the detections
kept by a threshold ``t`` (the mean over the detections scoring at least ``t``) and the expected
share of the correct detections that ``t`` keeps (recall relative to what detect found at its
``min_score``):

* ``precision=P``: the lowest threshold whose expected precision reaches P (the most detections
  at that precision);
* ``recall=R``: the highest threshold that keeps at least the share R of correct detections.

The CSV also gives, BirdNET-style, the score at which P(correct | score) itself reaches the target
(``score_at_target``). A class is fitted only with at least ``min_reviews`` reviews including at
least two right and two wrong detections, and only when a higher score means a likelier correct
detection; otherwise it is reported with its status and no threshold (``detect`` then keeps
``min_score`` for it) — never guessed.
"""

from __future__ import annotations

import logging
import math
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from chirpkit.errors import ConfigError, DataError

__all__ = ["Calibration", "CorrectnessFit", "calibrate", "calibration", "fit_correctness"]

log = logging.getLogger("chirpkit")

_C = 100.0  # on the standardised logit: weak, it only bounds the slope of separable reviews
_EPS = 1e-6


def _logit(scores: np.ndarray) -> np.ndarray:
    s = np.clip(np.asarray(scores, dtype=float), _EPS, 1 - _EPS)
    return np.asarray(np.log(s / (1 - s)))


@dataclass(frozen=True)
class CorrectnessFit:
    """P(correct | score) = 1 / (1 + exp(-(intercept + coef · logit(score))))."""

    intercept: float
    coef: float

    def predict(self, scores: np.ndarray) -> np.ndarray:
        z = self.intercept + self.coef * _logit(scores)
        return np.asarray(1.0 / (1.0 + np.exp(-z)))

    def score_at(self, p: float) -> float:
        """The score at which P(correct | score) = p (inf when the fit never gets there)."""
        if self.coef <= 0:
            return math.inf
        z = (math.log(p / (1 - p)) - self.intercept) / self.coef
        return 1.0 / (1.0 + math.exp(-z))


def fit_correctness(scores: np.ndarray, correct: np.ndarray, *, min_each: int = 2) -> CorrectnessFit | None:
    """Logistic regression of ``correct`` (bool) on ``logit(scores)``; None without ``min_each`` of
    each outcome."""
    from sklearn.linear_model import LogisticRegression

    correct = np.asarray(correct, dtype=bool)
    if len(scores) == 0 or correct.sum() < min_each or (~correct).sum() < min_each:
        return None
    x = _logit(scores)
    mu, sd = float(x.mean()), float(x.std()) or 1.0
    model = LogisticRegression(C=_C)
    model.fit(((x - mu) / sd).reshape(-1, 1), correct.astype(int))
    coef = float(model.coef_[0, 0]) / sd
    return CorrectnessFit(float(model.intercept_[0]) - coef * mu, coef)


def _choose(scores: np.ndarray, p: np.ndarray, kind: str, target: float) -> tuple[float, float, float, int]:
    """``(threshold, expected precision, expected recall, kept)``; threshold 1.01 if unreachable."""
    order = np.argsort(-scores, kind="stable")
    s, q = scores[order], p[order]
    cum = np.cumsum(q)
    total = cum[-1]
    # candidate thresholds: each distinct score; keeping every detection scoring >= s[i]
    last = np.r_[np.flatnonzero(s[1:] != s[:-1]), len(s) - 1]
    kept = last + 1
    prec = cum[last] / kept
    rec = cum[last] / total if total > 0 else np.zeros(len(last))
    if kind == "precision":
        ok = np.flatnonzero(prec >= target - 1e-12)
        i = int(ok.max()) if len(ok) else -1  # the lowest threshold: the most detections kept
    else:
        ok = np.flatnonzero(rec >= target - 1e-12)
        i = int(ok.min()) if len(ok) else -1  # the highest threshold that still keeps share R
    if i < 0:
        return 1.01, math.nan, 0.0, 0
    return float(s[last[i]]), float(prec[i]), float(rec[i]), int(kept[i])


def _safe(name: str) -> str:
    return re.sub(r"[^\w.-]+", "_", name).strip("_") or "class"


def _plot(
    path: Path,
    cls: str,
    scores: np.ndarray,
    correct: np.ndarray,
    row: dict[str, Any],
    fit: CorrectnessFit | None,
    all_scores: np.ndarray,
    expected: np.ndarray | None,
) -> None:
    from matplotlib.figure import Figure

    from chirpkit.utils.io import atomic_path

    fig = Figure(figsize=(7, 4.2), dpi=110)
    ax = fig.add_subplot(111)
    lo = float(min(all_scores.min(), scores.min() if len(scores) else 1.0))
    edges = np.linspace(lo, 1.0, 11)
    idx = np.clip(np.searchsorted(edges, scores, side="right") - 1, 0, 9)
    for b in range(10):
        m = idx == b
        n = int(m.sum())
        if not n:
            continue
        k = int(correct[m].sum())
        share = k / n
        z = 1.96  # Wilson interval
        den = 1 + z * z / n
        mid = (share + z * z / (2 * n)) / den
        half = z * math.sqrt(share * (1 - share) / n + z * z / (4 * n * n)) / den
        x = (edges[b] + edges[b + 1]) / 2
        ax.errorbar(
            x,
            share,
            yerr=[[max(0.0, share - (mid - half))], [max(0.0, mid + half - share)]],
            fmt="o",
            color="black",
            ms=4,
            capsize=2,
        )
        ax.annotate(str(n), (x, share), textcoords="offset points", xytext=(4, 4), fontsize=7)
    rng = np.random.default_rng(0)
    ax.scatter(
        scores,
        correct + rng.uniform(-0.03, 0.03, len(scores)),
        s=6,
        alpha=0.4,
        color="tab:blue",
        label="reviews (1 = correct)",
    )
    if fit is not None:
        xs = np.linspace(lo, 1.0, 200)
        ax.plot(xs, fit.predict(xs), color="tab:red", label="P(correct | score), logistic fit")
    if expected is not None:
        order = np.argsort(-all_scores, kind="stable")
        cum = np.cumsum(expected[order]) / np.arange(1, len(order) + 1)
        ax.plot(all_scores[order], cum, color="tab:orange", ls="--", label="expected precision at threshold")
    thr = row.get("threshold")
    if thr is not None and not (isinstance(thr, float) and math.isnan(thr)) and thr <= 1.0:
        ax.axvline(thr, color="tab:green", ls=":", label=f"threshold {thr:.3f}")
    ax.set_xlim(lo - 0.01, 1.01)
    ax.set_ylim(-0.08, 1.08)
    ax.set_xlabel("detection score")
    ax.set_ylabel("share correct")
    ax.set_title(f"{cls}: {row['reviews']} reviews, {row['correct']} correct — {row['status']}", fontsize=10)
    ax.legend(loc="lower right", fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")


@dataclass
class Calibration:
    """What :func:`calibration` computed from the reviews; :meth:`write` and :meth:`apply` put it
    on disk.

    Attributes:
        rule: the target, e.g. ``precision=0.9``.
        table: one row per class (see :func:`calibrate`).
        curves: per class, what its reliability plot shows: ``(reviewed scores, their verdicts,
            the fit or None, every detection's score, P(correct) of each or None)``.
        run: the model run that made the detections (None when unknown).
        folder: the detections folder the reviews belong to.
    """

    rule: str
    table: pd.DataFrame
    curves: dict[str, tuple[np.ndarray, np.ndarray, Any, np.ndarray, np.ndarray | None]]
    run: Path | None
    folder: Path

    def write(self, out: str | os.PathLike[str], *, plots: bool = True) -> Path:
        """``thresholds.json`` (the format ``detect`` reads), ``thresholds.csv`` and, with
        ``plots``, ``reliability_<class>.png`` in ``out``."""
        from chirpkit.evaluation.thresholds import save_thresholds

        out_dir = Path(out)
        out_dir.mkdir(parents=True, exist_ok=True)
        if plots:
            for record in self.table.to_dict("records"):
                row = {str(k): v for k, v in record.items()}
                s, ok, fit, all_scores, p = self.curves[row["class"]]
                _plot(
                    out_dir / f"reliability_{_safe(row['class'])}.png",
                    row["class"],
                    s,
                    ok,
                    row,
                    fit,
                    all_scores,
                    p,
                )
        save_thresholds(self.table, out_dir, rule=self.rule, split="reviews")
        return out_dir

    def apply(self, run: str | os.PathLike[str] | None = None) -> Path:
        """Write the thresholds into the model run (``run``, default the one that made the
        detections), so the next ``detect`` with it uses them; a ``thresholds.json`` already there
        is kept as ``thresholds.before-calibrate.json``."""
        from chirpkit.evaluation.thresholds import save_thresholds

        target_run = Path(run) if run is not None else self.run
        if target_run is None:
            raise DataError(
                "apply: the model run is unknown (detect_summary.json names none that exists here); "
                "pass run=... (--run)"
            )
        root = target_run if target_run.is_dir() else target_run.parent
        for name in ("thresholds.json", "thresholds.csv"):
            if (root / name).is_file():
                shutil.copy2(root / name, root / name.replace("thresholds", "thresholds.before-calibrate"))
        save_thresholds(self.table, root, rule=self.rule, split="reviews")
        return root


def _class_row(
    cls: str, rv: pd.DataFrame, cls_items: pd.DataFrame, kind: str, target: float, rule: str, min_reviews: int
) -> tuple[dict[str, Any], tuple[np.ndarray, np.ndarray, Any, np.ndarray, np.ndarray | None]]:
    s, ok = rv["score"].to_numpy(float), rv["correct"].to_numpy(bool)
    all_scores = cls_items["score"].to_numpy(float)
    known = rv["correct"].reindex(cls_items.index)  # the verdict where there is one
    if not len(all_scores):
        all_scores, known = s, rv["correct"]
    row: dict[str, Any] = {
        "class": cls,
        "threshold": math.nan,
        "precision": math.nan,
        "recall": math.nan,
        "support": int(ok.sum()),
        "reachable": False,
        "status": "ok",
        "reviews": len(rv),
        "correct": int(ok.sum()),
        "detections": len(all_scores),
        "kept": math.nan,
        "intercept": math.nan,
        "coef": math.nan,
        "score_at_target": math.nan,
        "reviewed_precision": float(ok.mean()) if len(ok) else math.nan,
    }
    fit = fit_correctness(s, ok) if len(rv) >= min_reviews else None
    p: np.ndarray | None = None
    if len(rv) < min_reviews:
        row["status"] = f"too few reviews ({len(rv)} < {min_reviews})"
    elif fit is None:
        row["status"] = f"needs two right and two wrong ({int(ok.sum())} right, {int((~ok).sum())} wrong)"
    else:
        row.update(intercept=fit.intercept, coef=fit.coef)
        if fit.coef <= 0:
            row["status"] = "score does not predict correctness (slope <= 0)"
        else:
            p = np.where(known.notna(), known.astype(float), fit.predict(all_scores))
            thr, prec, rec, kept = _choose(all_scores, p, kind, target)
            row.update(threshold=thr, precision=prec, recall=rec, kept=kept, reachable=thr <= 1.0)
            if thr > 1.0:
                row["status"] = f"{rule} not reachable"
            if kind == "precision":
                row["score_at_target"] = fit.score_at(target)
            above = s >= thr
            row["reviewed_precision"] = float(ok[above].mean()) if above.any() else math.nan
    return row, (s, ok, fit, all_scores, p)


def calibration(
    folder: str | os.PathLike[str],
    *,
    precision: float | None = None,
    recall: float | None = None,
    min_reviews: int = 20,
    run: str | os.PathLike[str] | None = None,
) -> Calibration:
    """The thresholds of :func:`calibrate`, computed from the reviews, nothing written."""
    from chirpkit.review.db import ReviewDB
    from chirpkit.review.items import load_detect_folder

    if precision is not None and recall is not None:
        raise ConfigError("give either precision or recall (--precision or --recall), not both")
    kind, target = ("recall", recall) if recall is not None else ("precision", precision or 0.9)
    if not 0 < target <= 1:
        raise ConfigError(f"{kind}={target} must be in (0, 1]")
    if min_reviews < 4:
        raise ConfigError(f"min_reviews={min_reviews} must be at least 4 (two right and two wrong)")
    det = load_detect_folder(folder, run=run)
    reviews = ReviewDB(det.db_path, create=False).current()
    if reviews.empty:
        raise DataError(
            f"no reviews in {det.db_path}: review some detections first (chirpkit review {folder})"
        )
    rule = f"{kind}={target:g}"
    rows, curves = [], {}
    for cls in sorted(set(det.items["label"]) | set(reviews["detected_label"])):
        rv = reviews[reviews["detected_label"] == cls]
        row, curves[cls] = _class_row(
            cls, rv, det.items[det.items["label"] == cls], kind, target, rule, min_reviews
        )
        rows.append(row)
    return Calibration(rule, pd.DataFrame(rows), curves, Path(run) if run is not None else det.run, det.root)


def calibrate(
    folder: str | os.PathLike[str],
    *,
    precision: float | None = None,
    recall: float | None = None,
    min_reviews: int = 20,
    out: str | os.PathLike[str] | None = None,
    apply: bool = False,
    run: str | os.PathLike[str] | None = None,
    plots: bool = True,
) -> pd.DataFrame:
    """Per-class thresholds for a target precision (default 0.9) or recall, from the reviews.

    Args:
        folder: a ``detect`` output folder with ``reviews.db`` (``chirpkit review``).
        precision, recall: the target (one of them; default ``precision=0.9``).
        min_reviews: fewest reviews of a class to fit it (plus two right and two wrong).
        out: where to write ``thresholds.json`` (the format ``detect`` reads), ``thresholds.csv``
            and ``reliability_<class>.png`` (default ``folder/calibration``).
        apply: also write the thresholds into the model run (``run``, default the one that made
            the detections), so the next ``detect`` with it uses them; a ``thresholds.json``
            already there is kept as ``thresholds.before-calibrate.json``.
        plots: write the reliability PNGs.

    The thresholds are computed by :func:`calibration`, then written by
    :meth:`Calibration.write` (and :meth:`Calibration.apply`).

    Returns:
        One row per class: ``class, threshold, precision, recall, support, reachable, status,
        reviews, correct, detections, kept, intercept, coef, score_at_target,
        reviewed_precision`` (``precision``/``recall`` are the expected values at the threshold;
        ``reviewed_precision`` is the share right among reviewed detections at or above it).

    Raises:
        ConfigError: both or neither target valid, or out of (0, 1].
        DataError: no reviews.
    """
    result = calibration(folder, precision=precision, recall=recall, min_reviews=min_reviews, run=run)
    out_dir = result.write(Path(out) if out is not None else result.folder / "calibration", plots=plots)
    table = result.table
    fitted = table[table["reachable"]]
    log.info(
        "calibrate (%s): %d class(es) with a threshold, %d without → %s",
        result.rule,
        len(fitted),
        len(table) - len(fitted),
        out_dir / "thresholds.json",
    )
    for r in table.to_dict("records"):
        if r["status"] != "ok":
            log.warning("calibrate: %s: %s", r["class"], r["status"])
    if apply:
        root = result.apply(run)
        log.info("calibrate: thresholds written into the run %s (detect uses them from now on)", root)
    return table
