"""Classification and ranking scores shared by evaluate, score-detections, cross-validation,
baselines and zero-shot.

Threshold-free measures are the ones the field compares models with: per-class average precision
and its macro mean over classes with positives (cmAP: BirdSet, Perch), macro ROC-AUC over classes
with positives and negatives (BirdCLEF 2024-2026), and top-1 accuracy. Classes that cannot be
scored are skipped and listed. Confidence intervals come from a seeded bootstrap over groups
(recordings, sites): a recording is drawn whole, because windows of one recording are not
independent.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, average_precision_score, f1_score, roc_auc_score

__all__ = [
    "bootstrap_ci",
    "curve_scores",
    "headline",
    "multilabel_scores",
    "one_hot",
    "ranking_scores",
    "scores",
    "threshold_free",
]


def scores(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    num_classes: int | None = None,
    *,
    sample_weight: np.ndarray | None = None,
) -> dict[str, float]:
    """Macro F1 (over classes present in ``y_true``), weighted F1 and accuracy."""
    labels = np.unique(y_true if sample_weight is None else y_true[sample_weight > 0])
    kw: dict[str, Any] = {"labels": labels, "zero_division": 0, "sample_weight": sample_weight}
    return {
        "macro_f1": float(f1_score(y_true, y_pred, average="macro", **kw)),
        "weighted_f1": float(f1_score(y_true, y_pred, average="weighted", **kw)),
        "accuracy": float(accuracy_score(y_true, y_pred, sample_weight=sample_weight)),
    }


def multilabel_scores(y_true: np.ndarray, scores_: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """Macro/weighted F1 at ``threshold`` over classes present, subset accuracy and mAP."""
    present = y_true.any(axis=0)
    y_pred = scores_ >= threshold
    return {
        "macro_f1": float(f1_score(y_true[:, present], y_pred[:, present], average="macro", zero_division=0)),
        "weighted_f1": float(
            f1_score(y_true[:, present], y_pred[:, present], average="weighted", zero_division=0)
        ),
        "accuracy": float((y_true == y_pred).all(axis=1).mean()),  # subset accuracy
        "map": float(average_precision_score(y_true[:, present], scores_[:, present], average="macro")),
    }


def one_hot(y: np.ndarray, num_classes: int) -> np.ndarray:
    """Class indices ``(n,)`` → a boolean indicator matrix ``(n, num_classes)``; a multi-hot matrix
    passes through."""
    y = np.asarray(y)
    if y.ndim == 2:
        return y.astype(bool)
    out = np.zeros((len(y), num_classes), dtype=bool)
    out[np.arange(len(y)), y.astype(np.int64)] = True
    return out


def curve_scores(
    y_true: np.ndarray, score: np.ndarray, sample_weight: np.ndarray | None = None
) -> tuple[float, float]:
    """``(average precision, ROC-AUC)`` of one class, by one sort: the same numbers as
    :func:`sklearn.metrics.average_precision_score` and :func:`~sklearn.metrics.roc_auc_score`
    (ties handled as they do; tested to 1e-9), fast enough to run a thousand times in a bootstrap.

    ``nan`` where the class has no positive (both) or no negative (ROC-AUC).
    """
    y = np.asarray(y_true, dtype=bool)
    w = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    order = np.argsort(-np.asarray(score, dtype=np.float64), kind="mergesort")
    s, y, w = np.asarray(score, dtype=np.float64)[order], y[order], w[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # the end of each run of tied scores
    tp = np.cumsum(w * y)[last]
    fp = np.cumsum(w * ~y)[last]
    pos, neg = (tp[-1], fp[-1]) if len(last) else (0.0, 0.0)
    if pos <= 0:
        return float("nan"), float("nan")
    recall = tp / pos
    precision = tp / np.maximum(tp + fp, np.finfo(float).tiny)
    ap = float(np.sum(np.diff(np.r_[0.0, recall]) * precision))
    if neg <= 0:
        return ap, float("nan")
    fpr = np.r_[0.0, fp / neg]
    tpr = np.r_[0.0, recall]
    return ap, float(np.trapezoid(tpr, fpr))


def ranking_scores(
    y_true: np.ndarray,
    scores_: np.ndarray,
    class_names: Sequence[str] | None = None,
    *,
    sample_weight: np.ndarray | None = None,
    exact: bool = True,
) -> dict[str, Any]:
    """Threshold-free scores of ``(n, classes)`` scores against class indices ``(n,)`` or a
    multi-hot ``(n, classes)`` matrix.

    Returns ``cmap`` (mean AP over classes with a positive), ``macro_roc_auc`` (mean ROC-AUC over
    classes with a positive and a negative), ``top1`` (share of the rows with a true class whose
    best-scored class is a true one), the per-class ``ap`` and ``roc_auc`` lists (``nan``: not
    scorable), and the classes each macro mean skipped. ``exact`` computes the per-class figures
    with scikit-learn; otherwise with :func:`curve_scores` (the same numbers, faster: for
    bootstraps).
    """
    k = scores_.shape[1]
    names = list(class_names) if class_names is not None else [str(i) for i in range(k)]
    truth = one_hot(y_true, k)
    w = sample_weight
    aps, aucs = np.full(k, np.nan), np.full(k, np.nan)
    live = np.ones(len(truth), dtype=bool) if w is None else w > 0
    for c in range(k):
        y = truth[live, c]
        if not y.any():
            continue
        if exact:
            wc = None if w is None else w[live]
            aps[c] = average_precision_score(y, scores_[live, c], sample_weight=wc)
            if not y.all():
                aucs[c] = roc_auc_score(y, scores_[live, c], sample_weight=wc)
        else:
            aps[c], aucs[c] = curve_scores(y, scores_[live, c], None if w is None else w[live])
    # top-1 over the rows that have a true class (background windows have none)
    labelled = truth.any(axis=1) & live
    best = scores_[labelled].argmax(axis=1)
    hit = truth[labelled][np.arange(len(best)), best].astype(np.float64)
    wl = None if w is None else w[labelled]
    top1 = float(np.average(hit, weights=wl)) if len(hit) else float("nan")
    return {
        "cmap": float(np.nanmean(aps)) if np.isfinite(aps).any() else float("nan"),
        "macro_roc_auc": float(np.nanmean(aucs)) if np.isfinite(aucs).any() else float("nan"),
        "top1": top1,
        "classes_scored_ap": int(np.isfinite(aps).sum()),
        "classes_scored_roc_auc": int(np.isfinite(aucs).sum()),
        "skipped_ap": [names[c] for c in range(k) if not np.isfinite(aps[c])],
        "skipped_roc_auc": [names[c] for c in range(k) if not np.isfinite(aucs[c])],
        "ap": aps.tolist(),
        "roc_auc": aucs.tolist(),
    }


THRESHOLD_FREE = ("cmap", "macro_roc_auc", "top1")


def threshold_free(ranking: Mapping[str, Any]) -> dict[str, float]:
    """The headline figures of a :func:`ranking_scores` result: ``cmap``, ``macro_roc_auc``, ``top1``."""
    return {k: ranking[k] for k in THRESHOLD_FREE}


def headline(y_true: np.ndarray, scores_: np.ndarray) -> dict[str, float]:
    """``macro_f1``, ``weighted_f1``, ``accuracy`` (argmax) and the threshold-free ``cmap``,
    ``macro_roc_auc`` and ``top1`` of single-label class indices ``(n,)`` against scores
    ``(n, classes)`` (probabilities or logits: the threshold-free ones only use the ranking)."""
    return scores(y_true, scores_.argmax(axis=1)) | threshold_free(ranking_scores(y_true, scores_))


def bootstrap_ci(
    statistic: Callable[[np.ndarray], Mapping[str, float]],
    groups: np.ndarray,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, list[float]]:
    """Percentile confidence intervals by a bootstrap over groups.

    Each of ``n_boot`` draws takes as many groups as there are, with replacement (a group drawn
    twice counts twice), and calls ``statistic(weights)`` with one weight per row (how often its
    group was drawn). Rows of one recording move together, so the interval reflects how much the
    figures would change with other recordings, not other windows of the same ones.

    Returns:
        ``{name: [low, high]}`` for every finite figure ``statistic`` returns (nan draws skipped).
    """
    if n_boot < 1:
        raise ValueError(f"n_boot={n_boot} must be >= 1")
    if not 0 < level < 1:
        raise ValueError(f"level={level} must be in (0, 1)")
    codes = np.unique(np.asarray(groups).astype(str), return_inverse=True)[1]
    n_groups = int(codes.max()) + 1 if len(codes) else 0
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {}
    for _ in range(n_boot):
        counts = np.bincount(rng.integers(0, n_groups, n_groups), minlength=n_groups)
        for name, value in statistic(counts[codes].astype(np.float64)).items():
            draws.setdefault(name, []).append(float(value))
    lo, hi = (1 - level) / 2 * 100, (1 + level) / 2 * 100
    out: dict[str, list[float]] = {}
    for name, values in draws.items():
        v = np.asarray(values)
        v = v[np.isfinite(v)]
        if len(v):
            out[name] = [float(np.percentile(v, lo)), float(np.percentile(v, hi))]
    return out
