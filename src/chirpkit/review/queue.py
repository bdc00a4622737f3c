"""What the reviewer sees next: the review queue and its strategies.

* ``stratified`` (the default): per class, the detections are cut into ``bins`` equal score bins
  between the class's lowest and highest score, and up to ``per_bin`` are drawn from each (seeded);
  the queue takes the first of every bin of every class, then the second, ... So even a short
  session covers the whole score range of every class, which is what calibration needs: a fit of
  P(correct | score) on a sample drawn by score is unbiased, and the thresholds land in the right
  place. Use it to set thresholds.
* ``uncertainty``: the items whose correctness is least certain first — those whose fitted
  P(correct | score) (logistic fit on the class's reviews so far; the model's own score until a
  class has two reviews of each outcome) is closest to 0.5. It re-fits after every review. Use it
  to find the most useful hard examples for retraining with the fewest reviews.
* ``random``: a seeded shuffle of all detections. Use it to estimate the precision of the
  detections as they are (each detection equally likely to be checked).
* ``score``: every detection, highest score first. Use it to confirm presence quickly (the surest
  detections per recording first) or to walk the detections in order.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from chirpkit.errors import DataError
from chirpkit.review.calibrate import fit_correctness

__all__ = ["STRATEGIES", "review_queue"]

STRATEGIES = ("stratified", "uncertainty", "random", "score")


def _stratified(items: pd.DataFrame, bins: int, per_bin: int | None, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    parts = []
    for c, lab in enumerate(sorted(items["label"].unique())):
        g = items[items["label"] == lab]
        lo, hi = float(g["score"].min()), float(g["score"].max())
        edges = np.linspace(lo, hi, bins + 1) if hi > lo else np.array([lo, hi + 1e-9])
        b = np.clip(np.searchsorted(edges, g["score"].to_numpy(), side="right") - 1, 0, len(edges) - 2)
        g = g.assign(_bin=b, _class=c, _draw=rng.permutation(len(g)))
        g = g.sort_values(["_bin", "_draw"])
        g["_rank"] = g.groupby("_bin").cumcount()
        if per_bin is not None:
            g = g[g["_rank"] < per_bin]
        parts.append(g)
    out = pd.concat(parts) if parts else items.assign(_rank=0, _bin=0, _class=0)
    # round robin: every bin of every class once, then again; high-score bins first in each round
    return out.sort_values(["_rank", "_bin", "_class"], ascending=[True, False, True]).drop(
        columns=["_bin", "_class", "_draw", "_rank"], errors="ignore"
    )


def _uncertainty(items: pd.DataFrame, reviews: pd.DataFrame, seed: int) -> pd.DataFrame:
    p = items["score"].astype(float).copy()
    for lab in items["label"].unique():
        mask = items["label"] == lab
        done = reviews[reviews["detected_label"] == lab]
        fit = fit_correctness(done["score"].to_numpy(float), done["correct"].to_numpy(bool), min_each=2)
        if fit is not None:
            p[mask] = fit.predict(items.loc[mask, "score"].to_numpy(float))
    tie = np.random.default_rng(seed).random(len(items))
    return (
        items.assign(_u=(p - 0.5).abs().to_numpy(), _t=tie)
        .sort_values(["_u", "_t"])
        .drop(columns=["_u", "_t"])
    )


def review_queue(
    items: pd.DataFrame,
    reviews: pd.DataFrame,
    *,
    strategy: str = "stratified",
    label: str | None = None,
    name: str | None = None,
    min_score: float | None = None,
    max_score: float | None = None,
    reviewed: bool | None = None,
    bins: int = 10,
    per_bin: int | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """The items in review order under ``strategy``, after the filters.

    Args:
        items: the detections (:attr:`DetectFolder.items`, indexed by id).
        reviews: :meth:`ReviewDB.current` (indexed by id, with ``correct``).
        strategy: ``stratified``, ``uncertainty``, ``random`` or ``score`` (see the module doc).
        label, name: keep one detected class / one recording (by file name).
        min_score, max_score: keep scores in this range.
        reviewed: True keeps reviewed items, False the rest, None both.
        bins, per_bin: score bins per class and items drawn per bin (``stratified``; None = all).
        seed: seeds the draws.

    Returns:
        The ordered items, with ``verdict`` and ``new_label`` (a relabel's label) columns (None
        where not reviewed).
    """
    if strategy not in STRATEGIES:
        raise DataError(f"strategy {strategy!r} must be one of {list(STRATEGIES)}")
    if bins < 1 or (per_bin is not None and per_bin < 1):
        raise DataError(f"bins={bins} and per_bin={per_bin} must be positive")
    sel = items
    if label is not None:
        sel = sel[sel["label"] == label]
    if name is not None:
        sel = sel[sel["name"] == name]
    if min_score is not None:
        sel = sel[sel["score"] >= min_score]
    if max_score is not None:
        sel = sel[sel["score"] <= max_score]
    if strategy == "stratified":
        sel = _stratified(sel, bins, per_bin, seed)
    elif strategy == "uncertainty":
        sel = _uncertainty(sel, reviews, seed)
    elif strategy == "random":
        sel = sel.iloc[np.random.default_rng(seed).permutation(len(sel))]
    else:
        sel = sel.sort_values(["score", "file", "start_s"], ascending=[False, True, True], kind="stable")
    verdict = dict(zip(reviews.index, reviews["verdict"], strict=True)) if len(reviews) else {}
    new_label = dict(zip(reviews.index, reviews["label"], strict=True)) if len(reviews) else {}
    sel = sel.assign(
        verdict=pd.Series([verdict.get(i) for i in sel.index], index=sel.index, dtype=object),
        new_label=pd.Series([new_label.get(i) for i in sel.index], index=sel.index, dtype=object),
    )
    for col in ("verdict", "new_label"):  # a review without a label may come back as NaN
        sel[col] = sel[col].where(sel[col].notna(), None)
    if reviewed is not None:
        sel = sel[sel["verdict"].notna() == reviewed]
    return sel
