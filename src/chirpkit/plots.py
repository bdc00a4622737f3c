"""PNG plots (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from chirpkit._util import atomic_path

__all__ = ["save_confusion_matrix", "save_split_counts"]


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
