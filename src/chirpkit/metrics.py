"""Classification scores shared by evaluate, cross-validation, baselines and zero-shot."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, average_precision_score, f1_score

__all__ = ["multilabel_scores", "scores"]


def scores(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int | None = None) -> dict[str, float]:
    """Macro F1 (over classes present in ``y_true``), weighted F1 and accuracy."""
    labels = np.unique(y_true)
    return {
        "macro_f1": float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        "weighted_f1": float(f1_score(y_true, y_pred, labels=labels, average="weighted", zero_division=0)),
        "accuracy": float(accuracy_score(y_true, y_pred)),
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
