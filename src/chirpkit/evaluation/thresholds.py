"""Per-class detection thresholds chosen on validation windows (one class against the rest).

Rules: ``precision=P`` (the lowest threshold whose precision reaches P, i.e. the most recall at
that precision), ``recall=R`` (the highest threshold whose recall reaches R) or ``f1`` (the
threshold with the best F1). A class whose target cannot be reached gets a threshold above 1
(never detected) and ``reachable: false``; a class without validation windows gets none.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import precision_recall_curve

from chirpkit.errors import ConfigError
from chirpkit.utils.io import read_json, write_csv, write_json

__all__ = ["choose_thresholds", "load_thresholds", "parse_rule", "save_thresholds"]


def parse_rule(rule: str) -> tuple[str, float | None]:
    """``"precision=0.9"`` → ``("precision", 0.9)``; ``"f1"`` → ``("f1", None)``."""
    text = rule.strip().lower()
    if text == "f1":
        return "f1", None
    name, _, value = text.partition("=")
    if name not in ("precision", "recall") or not value:
        raise ConfigError(f"threshold rule {rule!r} must be precision=P, recall=R (0 < P, R <= 1) or f1")
    try:
        target = float(value)
    except ValueError as exc:
        raise ConfigError(f"threshold rule {rule!r}: {value!r} is not a number") from exc
    if not 0 < target <= 1:
        raise ConfigError(f"threshold rule {rule!r}: the target must be in (0, 1]")
    return name, target


def choose_thresholds(
    probs: np.ndarray, y_true: np.ndarray, class_names: Sequence[str], rule: str
) -> pd.DataFrame:
    """One threshold per class: ``class, threshold, precision, recall, support, reachable``.

    ``y_true`` holds class indices ``(n,)`` or multi-hot rows ``(n, classes)``."""
    kind, parsed = parse_rule(rule)
    target = parsed if parsed is not None else 0.0
    rows: list[dict[str, Any]] = []
    multi = np.ndim(y_true) == 2  # multi-hot rows (multi-label)
    for c, name in enumerate(class_names):
        truth = y_true[:, c] > 0 if multi else y_true == c
        if not truth.any():
            rows.append(
                {
                    "class": name,
                    "threshold": math.nan,
                    "precision": math.nan,
                    "recall": math.nan,
                    "support": 0,
                    "reachable": False,
                }
            )
            continue
        prec, rec, thr = precision_recall_curve(truth, probs[:, c])
        prec, rec = prec[:-1], rec[:-1]  # aligned with thr (ascending)
        if kind == "precision":
            ok = np.flatnonzero(prec >= target - 1e-12)
            i = int(ok[np.argmax(rec[ok])]) if len(ok) else -1
        elif kind == "recall":
            ok = np.flatnonzero(rec >= target - 1e-12)
            i = int(ok[np.argmax(thr[ok])]) if len(ok) else -1
        else:
            f1 = np.where(prec + rec > 0, 2 * prec * rec / np.maximum(prec + rec, 1e-12), 0.0)
            i = int(np.argmax(f1))
        if i < 0:
            rows.append(
                {
                    "class": name,
                    "threshold": 1.01,
                    "precision": math.nan,
                    "recall": 0.0,
                    "support": int(truth.sum()),
                    "reachable": False,
                }
            )
        else:
            rows.append(
                {
                    "class": name,
                    "threshold": float(thr[i]),
                    "precision": float(prec[i]),
                    "recall": float(rec[i]),
                    "support": int(truth.sum()),
                    "reachable": True,
                }
            )
    return pd.DataFrame(rows)


def save_thresholds(table: pd.DataFrame, run: str | os.PathLike[str], *, rule: str, split: str) -> Path:
    """``RUN/thresholds.json`` (what detect reads) and ``RUN/thresholds.csv``."""
    root = Path(run)
    write_csv(root / "thresholds.csv", table, index=False, float_format="%.4f")
    data = {
        "rule": rule,
        "split": split,
        "classes": {
            r["class"]: {
                k: (None if isinstance(v, float) and math.isnan(v) else v)
                for k, v in r.items()
                if k != "class"
            }
            for r in table.to_dict("records")
        },
    }
    return write_json(root / "thresholds.json", data)


def load_thresholds(run: str | os.PathLike[str]) -> dict[str, float] | None:
    """Per-class thresholds saved with a run (``None`` if it has none); classes without one are left out."""
    p = Path(run)
    path = (p if p.is_dir() else p.parent) / "thresholds.json"
    if not path.is_file():
        return None
    data = read_json(path)
    return {c: float(v["threshold"]) for c, v in data["classes"].items() if v.get("threshold") is not None}
