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


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n_groups=st.integers(3, 30),
    n_classes=st.integers(2, 6),
    rows=st.integers(1, 12),
    seed=st.integers(0, 10_000),
    val=st.sampled_from([0.0, 0.1, 0.2]),
    test=st.sampled_from([0.1, 0.15, 0.3]),
)
def test_property_zero_group_overlap(
    n_groups: int, n_classes: int, rows: int, seed: int, val: float, test: float
) -> None:
    df = catalog(n_groups, n_classes, rows, seed)
    if df["label"].nunique() < 2:
        return
    out = split(df, config=SplitConfig(seed=seed, val_fraction=val, test_fraction=test))
    assert len(out) == len(df)
    assert (out.groupby("group")["split"].nunique() == 1).all()
    assert (out["split"] == "test").any() and (out["split"] == "train").any()
    assert ((out["split"] == "val").any()) == (val > 0)


def test_too_few_groups_and_single_class_are_clear_errors() -> None:
    with pytest.raises(DataError, match="2 group\\(s\\) but train/val/test need 3"):
        split(catalog(2, 3, 5, 0))
    one = catalog(6, 1, 4, 0)
    with pytest.raises(DataError, match="single-class"):
        split(one)


def test_leak_check_catches_a_crossing_group() -> None:
    df = pd.DataFrame({"group": ["a", "a", "b"], "split": ["train", "test", "val"]})
    with pytest.raises(RunError, match="group leakage"):
        check_no_group_leak(df)
