"""PNG plots (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from chirpkit.utils.io import atomic_path

__all__ = [
    "save_bars",
    "save_class_counts",
    "save_confusion_matrix",
    "save_frequency_ranges",
    "save_heatmap",
    "save_histogram",
    "save_pr_curves",
    "save_psd_roc",
    "save_split_counts",
]


def _save(fig: plt.Figure, path: str | os.PathLike[str]) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    return Path(path)


def save_confusion_matrix(
    cm: np.ndarray, class_names: Sequence[str], path: str | os.PathLike[str], *, title: str = ""
) -> Path:
    """Row-normalised confusion matrix (recall per true class), with counts when it fits."""
    k = len(class_names)
    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros_like(cm, dtype=float), where=rows > 0)
    size = min(40.0, max(5.0, 0.45 * k + 2))
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(
        range(k),
        labels=class_names,
        rotation=90 if k > 8 else 45,
        ha="center" if k > 8 else "right",
    )
    ax.set_yticks(range(k), labels=class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or "confusion matrix (rows normalised; numbers are counts)")
    if k <= 30:
        for i in range(k):
            for j in range(k):
                if cm[i, j]:
                    ax.text(
                        j,
                        i,
                        str(int(cm[i, j])),
                        ha="center",
                        va="center",
                        fontsize=8,
                        color="white" if norm[i, j] > 0.5 else "black",
                    )
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    return _save(fig, path)


def save_split_counts(counts: pd.DataFrame, path: str | os.PathLike[str], *, title: str = "") -> Path:
    """Horizontal grouped bars: examples per class (rows) and split (columns), log scale when the
    counts span more than two decades."""
    cols = [c for c in counts.columns if c != "total"]
    order = counts.sort_values("total" if "total" in counts else cols[0], ascending=True)
    k = len(order)
    fig, ax = plt.subplots(figsize=(8, min(60.0, max(3.0, 0.22 * k * max(1, len(cols)) / 2 + 1.5))))
    height = 0.8 / max(1, len(cols))
    y = np.arange(k)
    colours = {"train": "#4c72b0", "val": "#dd8452", "test": "#55a868"}
    for i, c in enumerate(cols):
        ax.barh(
            y + (i - (len(cols) - 1) / 2) * height,
            order[c].to_numpy(),
            height=height,
            label=str(c),
            color=colours.get(str(c)),
        )
    ax.set_yticks(y, labels=[str(s) for s in order.index], fontsize=7 if k > 40 else 9)
    positive = order[cols].to_numpy()
    positive = positive[positive > 0]
    if positive.size and positive.max() / positive.min() > 100:
        ax.set_xscale("log")
    ax.set_xlabel("examples")
    ax.set_title(title or "examples per class and split")
    ax.legend(loc="lower right")
    ax.margins(y=0.005)
    return _save(fig, path)


def save_class_counts(counts: pd.Series, path: str | os.PathLike[str], *, min_count: int = 0) -> Path:
    """Examples per class, most frequent first, log scale, with the rare-class threshold."""
    k = len(counts)
    fig, ax = plt.subplots(figsize=(min(40.0, max(6.0, 0.12 * k + 3)), 4.5))
    ax.bar(np.arange(k), counts.to_numpy(), color="#4c72b0", width=0.85)
    ax.set_yscale("log")
    if min_count > 0:
        ax.axhline(min_count, color="#c44e52", ls="--", lw=1, label=f"min_count = {min_count}")
        ax.legend()
    if k <= 80:
        ax.set_xticks(np.arange(k), labels=[str(c) for c in counts.index], rotation=90, fontsize=7)
    else:
        ax.set_xlabel(f"{k} classes, most frequent first")
    ax.set_ylabel("examples (log)")
    ax.set_title("class balance")
    ax.margins(x=0.005)
    return _save(fig, path)


def save_bars(
    values: pd.Series, path: str | os.PathLike[str], *, title: str, xlabel: str, top: int = 60
) -> Path:
    """Horizontal bars of the ``top`` largest values (e.g. annotations per recording)."""
    v = values.sort_values(ascending=False).head(top)[::-1]
    fig, ax = plt.subplots(figsize=(8, max(2.5, 0.2 * len(v) + 1)))
    ax.barh(np.arange(len(v)), v.to_numpy(), color="#55a868")
    ax.set_yticks(np.arange(len(v)), labels=[str(s)[-40:] for s in v.index], fontsize=7)
    ax.set_xlabel(xlabel)
    ax.set_title(title + (f" (top {top} of {len(values)})" if len(values) > top else ""))
    return _save(fig, path)


def save_histogram(
    values: np.ndarray, path: str | os.PathLike[str], *, title: str, xlabel: str, log: bool = False
) -> Path:
    fig, ax = plt.subplots(figsize=(7, 3.5))
    v = values[np.isfinite(values)]
    bins: Any = 40
    if log and v.size and v.min() > 0:
        bins = np.geomspace(v.min(), v.max() * 1.001 + 1e-9, 40)
        ax.set_xscale("log")
    ax.hist(v, bins=bins, color="#8172b2")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("count")
    ax.set_title(title)
    return _save(fig, path)


def save_frequency_ranges(
    table: pd.DataFrame, path: str | os.PathLike[str], *, band: tuple[float, float]
) -> Path:
    """Per-class 5th–95th percentile of the dominant frequency (line) and median (dot)."""
    t = table.sort_values("p50_hz")
    k = len(t)
    fig, ax = plt.subplots(figsize=(8, min(40.0, max(3.0, 0.22 * k + 1.5))))
    y = np.arange(k)
    ax.hlines(y, t["p5_hz"], t["p95_hz"], color="#4c72b0", lw=3)
    ax.plot(t["p50_hz"], y, "o", color="#c44e52", ms=4)
    ax.axvspan(*band, color="grey", alpha=0.12, label=f"98% of calls: {band[0]:.0f}–{band[1]:.0f} Hz")
    ax.set_yticks(y, labels=[str(s) for s in t.index], fontsize=7 if k > 40 else 9)
    ax.set_xscale("log")
    ax.set_xlabel("dominant frequency (Hz): 5th–95th percentile, dot = median")
    ax.set_title("spectral range per class")
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, path)


def save_heatmap(matrix: pd.DataFrame, path: str | os.PathLike[str], *, title: str) -> Path:
    k = len(matrix)
    fig, ax = plt.subplots(figsize=(min(30.0, 0.35 * k + 3), min(30.0, 0.35 * k + 2.5)))
    im = ax.imshow(matrix.to_numpy(), cmap="magma_r")
    ax.set_xticks(range(k), labels=[str(c) for c in matrix.columns], rotation=90, fontsize=7)
    ax.set_yticks(range(k), labels=[str(c) for c in matrix.index], fontsize=7)
    ax.set_xlabel("other class in the window")
    ax.set_ylabel("annotated class")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    return _save(fig, path)


def save_pr_curves(
    y_true: np.ndarray,
    scores: np.ndarray,
    class_names: Sequence[str],
    path: str | os.PathLike[str],
    *,
    title: str = "",
    top: int = 12,
) -> Path:
    """Precision-recall curves: the micro-average over every class (black) and the ``top`` classes
    with the most positives, each labelled with its average precision."""
    from sklearn.metrics import average_precision_score, precision_recall_curve

    truth = np.asarray(y_true, dtype=bool)
    fig, ax = plt.subplots(figsize=(7, 5.5))
    if truth.any():
        p, r, _ = precision_recall_curve(truth.ravel(), scores.ravel())
        ap = average_precision_score(truth.ravel(), scores.ravel())
        ax.plot(r, p, color="black", lw=2, label=f"micro-average (AP {ap:.3f})")
    support = truth.sum(axis=0)
    for c in [c for c in np.argsort(-support, kind="stable")[:top] if support[c]]:
        p, r, _ = precision_recall_curve(truth[:, c], scores[:, c])
        ap = average_precision_score(truth[:, c], scores[:, c])
        ax.plot(r, p, lw=1, alpha=0.8, label=f"{str(class_names[c])[:28]} (AP {ap:.2f}, n={support[c]})")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title(title or "precision-recall")
    ax.legend(loc="lower left", fontsize=7)
    return _save(fig, path)


def save_psd_roc(
    curves: dict[str, tuple[np.ndarray, np.ndarray]],
    values: dict[str, float],
    path: str | os.PathLike[str],
    *,
    unit: str = "hour",
) -> Path:
    """PSD-ROC curves (effective TP rate against effective false positives per ``unit``), one per
    scenario, each labelled with its PSDS."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, (etpr, efpr) in curves.items():
        ax.step(efpr, etpr, where="post", label=f"{name}: PSDS {values.get(name, float('nan')):.3f}")
    ax.set_xlabel(f"effective false positives per {unit}")
    ax.set_ylabel("effective true-positive rate")
    ax.set_ylim(0, 1.02)
    ax.set_title("PSD-ROC (sed_scores_eval)")
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, path)
