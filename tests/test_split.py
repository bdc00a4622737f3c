from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chirpkit.config import SplitConfig
from chirpkit.data.split import check_no_group_leak, split
from chirpkit.errors import DataError, RunError


def catalog(n_groups: int, n_classes: int, rows_per_group: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for g in range(n_groups):
        labels = rng.integers(0, n_classes, size=rows_per_group)
        for i, lab in enumerate(labels):
            rows.append(
                {
                    "source": f"/x/g{g}.wav",
                    "start_s": float(i),
                    "end_s": float(i) + 1,
                    "label": f"c{lab}",
                    "group": f"g{g}",
                }
            )
    return pd.DataFrame(rows)


def test_no_group_in_two_splits_and_files_written(tmp_path: Path) -> None:
    df = split(catalog(20, 4, 10, 0), out=tmp_path / "s.parquet")
    assert set(df["split"]) == {"train", "val", "test"}
    assert (df.groupby("group")["split"].nunique() == 1).all()
    counts = pd.read_csv(tmp_path / "s.split_counts.csv")
    assert list(counts.columns) == ["label", "train", "val", "test", "total"]
    assert counts["total"].sum() == len(df)
    summary = json.loads((tmp_path / "s.split_counts.json").read_text())
    assert sum(summary["rows"].values()) == len(df) and summary["seed"] == 0
    assert (tmp_path / "s.split_counts.png").read_bytes()[:4] == b"\x89PNG"


def test_seeded_and_deterministic() -> None:
    df = catalog(15, 3, 8, 1)
    a = split(df, config=SplitConfig(seed=3))["split"].tolist()
    b = split(df, config=SplitConfig(seed=3))["split"].tolist()
    c = split(df, config=SplitConfig(seed=4))["split"].tolist()
    assert a == b
    assert a != c


def test_every_class_in_every_split_when_groups_allow() -> None:
    # 8 groups per class, one class per group: every split can and must get every class
    rows = [
        {"source": f"/{c}{g}.wav", "start_s": 0.0, "end_s": 1.0, "label": c, "group": f"{c}{g}"}
        for c in "abcdef"
        for g in range(8)
        for _ in range(3)
    ]
    df = split(pd.DataFrame(rows))
    assert (pd.crosstab(df["label"], df["split"]) > 0).all().all()


def test_rare_classes_excluded_and_problematic_groups_split_by_group(tmp_path: Path) -> None:
    rows = []
    for g in range(12):  # common classes: spread over 12 recordings
        rows += [{"label": c, "group": f"r{g}"} for c in ("a", "b") for _ in range(5)]
    rows += [{"label": "rare", "group": "r0"} for _ in range(3)]  # 3 < min_count: excluded
    rows += [{"label": "few_groups", "group": g} for g in ("r1", "r2") for _ in range(8)]  # 2 groups < 3
    df = pd.DataFrame(rows).assign(source=lambda d: "/x/" + d["group"] + ".wav", start_s=0.0, end_s=1.0)
    out = split(df, out=tmp_path / "c.parquet", config=SplitConfig(min_count=10))
    assert (out.loc[out["label"] == "rare", "split"] == "excluded").all()
    assert (out.loc[out["label"] != "rare", "split"] != "excluded").all()
    summary = json.loads((tmp_path / "c.split_counts.json").read_text())
    assert summary["excluded_classes"] == ["rare"]
    assert summary["problematic_classes"] == ["few_groups"]
    assert summary["problematic_groups"] == ["r1", "r2"]
    assert summary["rows"]["excluded"] == 3
    check_no_group_leak(out)
    # the stratifiable groups still give every common class to every split
    common = out[out["label"].isin(["a", "b"])]
    assert (pd.crosstab(common["label"], common["split"]) > 0).all().all()


def test_folds_cover_non_test_groups_once(tmp_path: Path) -> None:
    df = split(catalog(30, 3, 6, 2), out=tmp_path / "f.parquet", config=SplitConfig(folds=4, min_count=0))
    test = df["split"] == "test"
    assert (df.loc[test, "fold"] == -1).all()
    assert set(df.loc[~test, "fold"]) == {0, 1, 2, 3}
    assert (df.loc[df["fold"] == 0, "split"] == "val").all()
    assert (df[~test].groupby("group")["fold"].nunique() == 1).all()
    counts = pd.read_csv(tmp_path / "f.split_counts.csv")
    assert [c for c in counts.columns if c.startswith("fold")] == ["fold0", "fold1", "fold2", "fold3"]
    summary = json.loads((tmp_path / "f.split_counts.json").read_text())
    assert sorted(summary["per_fold"]) == ["0", "1", "2", "3"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n_groups=st.integers(3, 30),
    n_classes=st.integers(2, 8),
    rows=st.integers(1, 15),
    seed=st.integers(0, 10_000),
    val=st.sampled_from([0.0, 0.1, 0.2]),
    test=st.sampled_from([0.1, 0.15, 0.3]),
    min_count=st.sampled_from([0, 5, 10]),
    folds=st.sampled_from([0, 3, 5]),
)
def test_property_zero_group_overlap(
    n_groups: int, n_classes: int, rows: int, seed: int, val: float, test: float, min_count: int, folds: int
) -> None:
    df = catalog(n_groups, n_classes, rows, seed)
    cfg = SplitConfig(seed=seed, val_fraction=val, test_fraction=test, min_count=min_count, folds=folds)
    sizes = df["label"].value_counts()
    try:
        out = split(df, config=cfg)
    except DataError as exc:  # only the two documented refusals
        assert "classifier needs two" in str(exc) or "no group may be in two splits" in str(exc)
        assert (sizes >= min_count).sum() < 2 or df.loc[
            df["label"].isin(sizes.index[sizes >= min_count]), "group"
        ].nunique() < 3
        return
    assert len(out) == len(df)
    excluded = set(sizes.index[sizes < min_count])
    assert set(out.loc[out["split"] == "excluded", "label"]) == excluded
    kept = out[out["split"] != "excluded"]
    assert (kept.groupby("group")["split"].nunique() == 1).all()  # no group in two splits
    assert set(kept["split"]) <= {"train", "val", "test"}
    if folds:
        assert (kept[kept["split"] != "test"].groupby("group")["fold"].nunique() == 1).all()
        assert ((kept["fold"] == -1) == (kept["split"] == "test")).all()
    assert split(df, config=cfg)["split"].tolist() == out["split"].tolist()  # deterministic


def test_too_few_groups_and_single_class_are_clear_errors() -> None:
    with pytest.raises(DataError, match="2 group\\(s\\) but train/val/test need 3"):
        split(catalog(2, 3, 5, 0), config=SplitConfig(min_count=0))
    with pytest.raises(DataError, match="classifier needs two"):
        split(catalog(6, 1, 4, 0))


def test_leak_check_catches_a_crossing_group() -> None:
    df = pd.DataFrame({"group": ["a", "a", "b"], "split": ["train", "test", "val"]})
    with pytest.raises(RunError, match="group leakage"):
        check_no_group_leak(df)
