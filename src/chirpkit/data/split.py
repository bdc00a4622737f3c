"""Seeded, leakage-free splits for imbalanced data with recording groups.

The strategy (``stratified-group``) follows the practitioners' notes chirpkit was designed from,
with a label-aware rotation for classes that have few groups (the few-shot case):

1. classes with fewer than ``min_count`` examples are excluded (``split = "excluded"``, listed);
2. *few-group* (problematic) classes are those with fewer than ``split.few_groups`` distinct
   groups (auto: as many as the stratified folds need to reach every split reliably, see
   :func:`few_groups_threshold`);
3. groups are partitioned: *problematic* groups hold at least one example of a few-group class,
   *stratifiable* groups hold only well-behaved classes;
4. the stratifiable part is split with nested ``StratifiedGroupKFold`` (test, then val or folds);
5. the problematic part is dealt out class by class (:mod:`chirpkit.data.rotation`): one group
   → train, two → train + test, three or more → train + val + test; with ``K`` folds the non-test
   groups of each class go round the folds from a rotating start (leave one group per class out
   per fold); multi-label groups go where their rarest class needs them;
6. a repair pass moves single groups to close any remaining gap without opening another; the
   classes still missing from a split or fold are reported with the reason.

Splits are made over whole groups, so no group can be in two splits. With ``folds=K`` the
non-test groups also get a ``fold`` (0..K-1); ``val`` is then fold 0 and the test rows have
fold -1.
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

from chirpkit.config import SplitConfig
from chirpkit.data.catalog import SPLITS, class_counts, read_catalog, validate_catalog, write_catalog
from chirpkit.data.rotation import TEST, Layout, assign, coverage_gaps
from chirpkit.errors import DataError, RunError
from chirpkit.utils.io import write_csv, write_json

__all__ = [
    "assign_folds",
    "check_no_group_leak",
    "few_groups_threshold",
    "split",
    "split_summary",
    "write_split",
]

log = logging.getLogger("chirpkit")

EXCLUDED = "excluded"


def _folds(y: np.ndarray, groups: np.ndarray, k: int, seed: int) -> list[np.ndarray]:
    """The test indices of each of ``k`` group folds (stratified when possible)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "least populated class has N members"
        try:
            sgkf = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
            return [t for _, t in sgkf.split(np.zeros(len(y)), y, groups)]
        except ValueError:  # no class has k members: groups only
            pass
        gkf = GroupKFold(n_splits=k, shuffle=True, random_state=seed)
        return [t for _, t in gkf.split(np.zeros(len(y)), y, groups)]


def _pick_fold(
    y: np.ndarray, groups: np.ndarray, fraction: float, seed: int, *, tries: int = 8
) -> np.ndarray:
    """Boolean mask of one group fold holding about ``fraction`` of the rows.

    ``k = floor(1 / fraction)`` folds (at most the number of groups). Among the folds of ``tries``
    seeded shuffles, the one that misses the fewest classes wins, then the one whose class
    distribution is closest to the whole part's, then the one whose size is closest to the target.
    """
    mask = np.zeros(len(y), dtype=bool)
    n_groups = len(np.unique(groups))
    if n_groups < 2 or fraction <= 0:
        return mask
    k = int(min(max(2, int(1.0 / fraction + 1e-9)), n_groups))
    classes, y_idx = np.unique(y, return_inverse=True)
    overall = np.bincount(y_idx, minlength=len(classes)) / len(y)
    target = fraction * len(y)
    best_key: tuple[int, float, float] | None = None
    best = np.zeros(0, dtype=np.int64)
    for t in range(tries):
        for idx in _folds(y, groups, k, seed + 7919 * t):
            counts = np.bincount(y_idx[idx], minlength=len(classes))
            key = (
                int((counts == 0).sum()),
                float(np.abs(counts / max(1, len(idx)) - overall).sum()),
                abs(len(idx) - target) / len(y),
            )
            if best_key is None or key < best_key:
                best_key, best = key, idx
    mask[best] = True
    return mask


def assign_folds(y: np.ndarray, groups: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Fold number (0..k-1) per row; every group in exactly one fold."""
    fold = np.zeros(len(y), dtype=np.int64)
    uniq = np.unique(groups)
    if len(uniq) < k:  # fewer groups than folds: one group per fold, some folds stay empty
        order = np.random.default_rng(seed).permutation(len(uniq))
        for f, gi in enumerate(order):
            fold[groups == uniq[gi]] = f % k
        return fold
    for f, idx in enumerate(_folds(y, groups, k, seed)):
        fold[idx] = f
    return fold


def _group_classes(kept: pd.DataFrame) -> dict[str, list[str]]:
    """Classes per group: every row's ``label`` and the kept classes among its ``labels``."""
    known = set(kept["label"])
    out: dict[str, set[str]] = {}
    for g, lab, labs in zip(kept["group"], kept["label"], kept["labels"], strict=True):
        out.setdefault(str(g), set()).update([lab, *(x for x in labs if x in known)])
    return {g: sorted(v) for g, v in out.items()}


def _stratified_slots(y: np.ndarray, groups: np.ndarray, part: np.ndarray, cfg: SplitConfig) -> np.ndarray:
    """Slot per row of ``part`` (-1 test; val 0 / train 1, or folds 0..K-1) by the notes' nested
    ``StratifiedGroupKFold``; rows outside ``part`` keep -2."""
    slot = np.full(len(y), -2, dtype=np.int64)
    idx = np.flatnonzero(part)
    if len(idx) == 0:
        return slot
    slot[idx] = 1
    rest = np.ones(len(idx), dtype=bool)
    if cfg.test_fraction > 0:
        test = _pick_fold(y[idx], groups[idx], cfg.test_fraction, cfg.seed)
        slot[idx[test]] = TEST
        rest = ~test
    ridx = idx[rest]
    if len(ridx) == 0:
        return slot
    if cfg.folds >= 2:
        slot[ridx] = assign_folds(y[ridx], groups[ridx], cfg.folds, cfg.seed + 1)
    elif cfg.val_fraction > 0:
        share = min(0.99, cfg.val_fraction / (1.0 - cfg.test_fraction))
        val = _pick_fold(y[ridx], groups[ridx], share, cfg.seed + 1)
        slot[ridx[val]] = 0
    return slot


def few_groups_threshold(config: SplitConfig) -> int:
    """Groups a class needs for the stratified part; classes with fewer are dealt by rotation.

    ``split.few_groups`` when set; else as many groups as the stratified pick of test needs folds
    (``floor(1 / test_fraction)``), and one more than the folds of val (``floor(1 / val share)``)
    or of cross-validation (``K``), and at least one per split.
    """
    cfg = config
    if cfg.few_groups:
        return cfg.few_groups
    has_test = cfg.test_fraction > 0
    k_test = max(2, int(1.0 / cfg.test_fraction + 1e-9)) if has_test else 0
    if cfg.folds >= 2:
        k_val = cfg.folds
    elif cfg.val_fraction > 0:
        k_val = max(2, int(1.0 / min(0.99, cfg.val_fraction / (1.0 - cfg.test_fraction)) + 1e-9))
    else:
        k_val = 1
    return max(k_test, k_val + has_test)


def check_no_group_leak(df: pd.DataFrame) -> None:
    """Raise :class:`RunError` if any group appears in more than one split (or fold)."""
    kept = df[df["split"] != EXCLUDED]
    per_group = kept.groupby("group")["split"].nunique()
    leaking = per_group[per_group > 1]
    if len(leaking):
        raise RunError(
            f"group leakage: {len(leaking)} group(s) in several splits, e.g. {list(leaking.index[:5])}"
        )
    if "fold" in kept.columns:
        per_group = kept.groupby("group")["fold"].nunique()
        if (per_group > 1).any():
            raise RunError(f"group leakage across folds: {list(per_group[per_group > 1].index[:5])}")


def split_summary(df: pd.DataFrame, config: SplitConfig, info: dict[str, Any]) -> dict[str, Any]:
    kept = df[df["split"] != EXCLUDED]
    counts = class_counts(kept, "split")
    present = [s for s in SPLITS if s in kept["split"].unique()]
    out: dict[str, Any] = {
        **config.model_dump(),
        **info,
        "rows": {s: int((df["split"] == s).sum()) for s in (*present, EXCLUDED)},
        "groups": {s: int(kept.loc[kept["split"] == s, "group"].nunique()) for s in present},
        "classes_missing": {
            s: sorted(counts.index[counts[s] == 0].tolist()) for s in present if s in counts.columns
        },
        "per_class": {lab: {k: int(v) for k, v in row.items()} for lab, row in counts.iterrows()},
    }
    if "fold" in kept.columns and (kept["fold"] >= 0).any():
        folds = kept[kept["fold"] >= 0]
        table = pd.crosstab(folds["label"], folds["fold"])
        out["per_fold"] = {str(f): {lab: int(n) for lab, n in table[f].items()} for f in table.columns}
        out["fold_groups"] = {str(f): int(g["group"].nunique()) for f, g in folds.groupby("fold")}
    return out


def _plot_counts(counts: pd.DataFrame, path: Path, title: str) -> None:
    from chirpkit.utils.plots import save_split_counts

    save_split_counts(counts, path, title=title)


def split(
    catalog: pd.DataFrame | str | os.PathLike[str],
    *,
    out: str | os.PathLike[str] | None = None,
    config: SplitConfig | None = None,
) -> pd.DataFrame:
    """Assign every row to ``train``, ``val``, ``test`` (or ``excluded``), leakage-free.

    See the module docstring for the strategy. Fractions are shares of whole groups, so they are
    approximate.

    Args:
        catalog: a catalog frame or path.
        out: where to write the split catalog (Parquet + CSV). Beside it:
            ``<name>.split_counts.csv`` (per class × split, and × fold), ``.json`` (the same, plus
            excluded and problematic classes, rows and groups per split, and ``coverage_gaps``:
            each class missing from a split or fold, with the reason) and ``.png`` (bar chart).
        config: :class:`chirpkit.config.SplitConfig`.

    Returns:
        The catalog with a ``split`` column (and ``fold`` with ``folds >= 2``).

    Raises:
        DataError: fewer than two classes left, or too few groups for the requested splits.
    """
    cfg = config or SplitConfig()
    df = read_catalog(catalog) if not isinstance(catalog, pd.DataFrame) else validate_catalog(catalog)
    if df.empty:
        raise DataError("cannot split an empty catalog")
    df = df.drop(columns=[c for c in ("split", "fold") if c in df.columns])

    # 1. rare classes out
    keep, excluded = _without_rare_classes(df, cfg)
    kept = df[keep]
    groups = kept["group"].to_numpy()
    y = kept["label"].to_numpy()
    # 2-3. few-group (problematic) classes and the group partition
    threshold, problematic, bad_groups = _few_group_classes(kept, cfg)
    in_bad = np.isin(groups, list(bad_groups))
    # 4. nested stratified split of the well-behaved part, as slots (-1 test, val 0 / train 1, folds)
    layout = Layout(cfg.test_fraction, cfg.val_fraction if cfg.folds < 2 else 0.0, cfg.folds)
    slot = _stratified_slots(y, groups, ~in_bad, cfg)
    fixed = {str(g): int(s) for g, s in zip(groups[~in_bad], slot[~in_bad], strict=True)}
    # 5-6. the few-group part by rotation, then repair over everything
    group_classes = _group_classes(kept)
    by_group = assign(group_classes, layout, seed=cfg.seed + 2, fixed=fixed)
    slot = np.array([by_group[str(g)] for g in groups], dtype=np.int64)
    gaps = coverage_gaps(by_group, group_classes, layout)

    df["split"] = EXCLUDED
    df.loc[keep, "split"] = [layout.split_of(int(s)) for s in slot]
    if cfg.folds >= 2:
        df["fold"] = -1
        df.loc[keep, "fold"] = slot
    check_no_group_leak(df)

    info = {
        "excluded_classes": excluded,
        "problematic_classes": problematic,
        "problematic_groups": sorted(map(str, bad_groups)),
        "few_groups_threshold": threshold,
        "coverage_gaps": gaps,
    }
    summary = split_summary(df, cfg, info)
    _log_split(summary, gaps)
    if out is not None:
        write_split(df, out, summary, seed=cfg.seed)
    return df


def _without_rare_classes(df: pd.DataFrame, cfg: SplitConfig) -> tuple[np.ndarray, list[str]]:
    """The rows of classes with at least ``split.min_count`` examples, and the classes left out.

    Raises:
        DataError: fewer than two classes left, or fewer groups than the splits need.
    """
    sizes = df["label"].value_counts()
    excluded = sorted(sizes.index[sizes < cfg.min_count].tolist())
    keep = ~df["label"].isin(excluded).to_numpy()
    if excluded:
        log.warning(
            "excluded %d class(es) with fewer than %d examples (split.min_count): %s",
            len(excluded),
            cfg.min_count,
            excluded[:20],
        )
    kept = df[keep]
    if kept["label"].nunique() < 2:
        left = kept["label"].unique().tolist()
        raise DataError(
            f"cannot split: {len(left)} class(es) left ({left}) after excluding classes with fewer than "
            f"{cfg.min_count} examples; a classifier needs two (lower split.min_count or add data)"
        )
    n_splits = 1 + (cfg.val_fraction > 0 or cfg.folds >= 2) + (cfg.test_fraction > 0)
    n_groups = kept["group"].nunique()
    if n_groups < n_splits:
        raise DataError(
            f"the catalog has {n_groups} group(s) but train/val/test need {n_splits}: no group may be "
            "in two splits. Add recordings, set split.val_fraction/test_fraction to 0, or use a finer "
            "group rule (ingest --group-by)"
        )
    return keep, excluded


def _few_group_classes(kept: pd.DataFrame, cfg: SplitConfig) -> tuple[int, list[str], set[Any]]:
    """Classes with fewer groups than ``split.few_groups`` needs (dealt out class by class), and
    their groups: ``(threshold, classes, groups)``."""
    threshold = few_groups_threshold(cfg)
    groups_per_class = kept.groupby("label")["group"].nunique()
    problematic = sorted(groups_per_class.index[groups_per_class < threshold].tolist())
    bad_groups = set(kept.loc[kept["label"].isin(problematic), "group"])
    if problematic:
        log.info(
            "%d class(es) with fewer than %d groups (split.few_groups): their %d group(s) are dealt "
            "out class by class: %s",
            len(problematic),
            threshold,
            len(bad_groups),
            problematic[:20],
        )
    return threshold, problematic, bad_groups


def _log_split(summary: dict[str, Any], gaps: dict[str, Any]) -> None:
    for s, missing in summary["classes_missing"].items():
        if missing:
            log.warning("split %s lacks %d class(es) (too few groups): %s", s, len(missing), missing[:10])
    conflicts = {c: g["reason"] for c, g in gaps.items() if "no placement" in str(g["reason"])}
    if conflicts:
        log.warning(
            "%d class(es) with enough groups could not be placed in every split (shared groups): %s",
            len(conflicts),
            dict(list(conflicts.items())[:5]),
        )
    log.info(
        "split: %s rows, %s groups",
        ", ".join(f"{k}={v}" for k, v in summary["rows"].items()),
        ", ".join(f"{k}={v}" for k, v in summary["groups"].items()),
    )


def write_split(
    df: pd.DataFrame, out: str | os.PathLike[str], summary: dict[str, Any], *, seed: int = 0
) -> Path:
    """Write a split catalog (Parquet + CSV) and beside it ``<name>.split_counts.csv`` (per class ×
    split, and × fold), ``.json`` (``summary``) and ``.png``; returns the catalog's path."""
    path = write_catalog(df, out)
    stem = path.with_suffix("")
    kept_df = df[df["split"] != EXCLUDED]
    counts = class_counts(kept_df, "split")
    if "fold" in kept_df.columns:
        per_fold = pd.crosstab(kept_df["label"], kept_df["fold"]).drop(columns=-1, errors="ignore")
        counts = counts.join(per_fold.rename(columns=lambda f: f"fold{f}"), how="left").fillna(0).astype(int)
    write_csv(Path(f"{stem}.split_counts.csv"), counts, index_label="label")
    write_json(f"{stem}.split_counts.json", summary)
    _plot_counts(
        class_counts(kept_df, "split"),
        Path(f"{stem}.split_counts.png"),
        title=f"examples per class and split (seed {seed})",
    )
    log.info("split catalog: %s (counts: %s.split_counts.csv/.json/.png)", path, stem)
    return path
