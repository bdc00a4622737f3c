"""Seeded, leakage-free splits: stratified by label, grouped by ``group``.

No group ever appears in two splits: splits are made over groups, never over rows.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import GroupKFold, StratifiedGroupKFold

from chirpkit._util import atomic_path, write_json
from chirpkit.config import SplitConfig
from chirpkit.data.catalog import (
    SPLITS,
    class_counts,
    read_catalog,
    validate_catalog,
    write_catalog,
)
from chirpkit.errors import DataError, RunError

__all__ = ["check_no_group_leak", "split", "split_summary"]

log = logging.getLogger("chirpkit")


def _pick_fold(y: np.ndarray, groups: np.ndarray, fraction: float, seed: int, tries: int = 8) -> np.ndarray:
    """Boolean mask of one StratifiedGroupKFold fold holding about ``fraction`` of the rows.

    ``k = floor(1 / fraction)`` folds (at most the number of groups). Among the folds of ``tries``
    seeded shuffles, the one that misses the fewest classes wins, then the one whose class
    distribution is closest to the whole set's, then the one whose size is closest to the target.
    """
    n_groups = len(np.unique(groups))
    k = int(min(max(2, int(1.0 / fraction + 1e-9)), n_groups))
    classes, y_idx = np.unique(y, return_inverse=True)
    overall = np.bincount(y_idx, minlength=len(classes)) / len(y)
    target = fraction * len(y)
    best_key: tuple[int, float, float] | None = None
    best = np.zeros(0, dtype=np.int64)
    for t in range(tries):
        rs = seed + 7919 * t
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "least populated class has N members"
            try:
                sgkf = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=rs)
                folds = [test for _, test in sgkf.split(np.zeros(len(y)), y, groups)]
            except ValueError:  # no class has k members: stratification impossible, groups only
                gkf = GroupKFold(n_splits=k, shuffle=True, random_state=rs)
                folds = [test for _, test in gkf.split(np.zeros(len(y)), y, groups)]
        for idx in folds:
            counts = np.bincount(y_idx[idx], minlength=len(classes))
            key = (
                int((counts == 0).sum()),
                float(np.abs(counts / max(1, len(idx)) - overall).sum()),
                abs(len(idx) - target) / len(y),
            )
            if best_key is None or key < best_key:
                best_key, best = key, idx
    mask = np.zeros(len(y), dtype=bool)
    mask[best] = True
    return mask


def check_no_group_leak(df: pd.DataFrame) -> None:
    """Raise :class:`RunError` if any group appears in more than one split."""
    per_group = df.groupby("group")["split"].nunique()
    leaking = per_group[per_group > 1]
    if len(leaking):
        raise RunError(
            f"group leakage: {len(leaking)} group(s) in several splits, e.g. {list(leaking.index[:5])}"
        )


def split_summary(df: pd.DataFrame, config: SplitConfig) -> dict[str, Any]:
    counts = class_counts(df, "split")
    present = [s for s in SPLITS if s in df["split"].unique()]
    return {
        "strategy": config.strategy,
        "seed": config.seed,
        "val_fraction": config.val_fraction,
        "test_fraction": config.test_fraction,
        "rows": {s: int((df["split"] == s).sum()) for s in present},
        "groups": {s: int(df.loc[df["split"] == s, "group"].nunique()) for s in present},
        "classes_missing": {
            s: sorted(counts.index[counts[s] == 0].tolist()) for s in present if s in counts.columns
        },
        "per_class": {lab: {k: int(v) for k, v in row.items()} for lab, row in counts.iterrows()},
    }


def split(
    catalog: pd.DataFrame | str | os.PathLike[str],
    *,
    out: str | os.PathLike[str] | None = None,
    config: SplitConfig | None = None,
) -> pd.DataFrame:
    """Assign every row to ``train``, ``val`` or ``test``, grouped and stratified.

    Test groups are one fold of a shuffled, seeded ``StratifiedGroupKFold`` (k = floor(1 /
    test_fraction), at most the number of groups; the fold that covers the most classes is taken);
    validation groups are one fold of the same procedure over the remaining groups. Fractions are
    therefore approximate: they are shares of whole groups.

    Args:
        catalog: a catalog frame or path.
        out: where to write the split catalog (Parquet + CSV); the per-class counts are written
            beside it as ``<name>.split_counts.csv`` and ``.json``.
        config: fractions and seed (:class:`chirpkit.config.SplitConfig`).

    Returns:
        The catalog with a ``split`` column.

    Raises:
        DataError: fewer than two classes, or too few groups for the requested splits.
    """
    cfg = config or SplitConfig()
    df = read_catalog(catalog) if not isinstance(catalog, pd.DataFrame) else validate_catalog(catalog)
    if df.empty:
        raise DataError("cannot split an empty catalog")
    if df["label"].nunique() < 2:
        raise DataError(f"cannot split a single-class catalog (only {df['label'].iloc[0]!r}); add classes")
    groups = df["group"].to_numpy()
    y = pd.factorize(df["label"])[0]
    n_groups = len(np.unique(groups))
    needed = 1 + (cfg.val_fraction > 0) + (cfg.test_fraction > 0)
    if n_groups < needed:
        raise DataError(
            f"the catalog has {n_groups} group(s) but train/val/test need {needed}: no group may be "
            "in two splits. Add recordings, set split.val_fraction/test_fraction to 0, or use a finer "
            "group rule (ingest --group-by)"
        )
    split_col = np.full(len(df), "train", dtype=object)
    rest = np.ones(len(df), dtype=bool)
    if cfg.test_fraction > 0:
        test = _pick_fold(y, groups, cfg.test_fraction, cfg.seed)
        split_col[test] = "test"
        rest = ~test
    if cfg.val_fraction > 0:
        idx = np.flatnonzero(rest)
        val_share = cfg.val_fraction / (1.0 - cfg.test_fraction)
        val = _pick_fold(y[idx], groups[idx], val_share, cfg.seed + 1)
        split_col[idx[val]] = "val"
    df["split"] = split_col
    check_no_group_leak(df)

    summary = split_summary(df, cfg)
    for s, missing in summary["classes_missing"].items():
        if missing:
            log.warning("split %s lacks %d class(es) (too few groups): %s", s, len(missing), missing[:10])
    log.info(
        "split: %s rows, %s groups",
        ", ".join(f"{k}={v}" for k, v in summary["rows"].items()),
        ", ".join(f"{k}={v}" for k, v in summary["groups"].items()),
    )
    if out is not None:
        path = write_catalog(df, out)
        stem = path.with_suffix("")
        with atomic_path(Path(f"{stem}.split_counts.csv")) as tmp:
            class_counts(df, "split").to_csv(tmp, index_label="label")
        write_json(f"{stem}.split_counts.json", summary)
        log.info("split catalog: %s (counts: %s.split_counts.csv/.json)", path, stem)
    return df
