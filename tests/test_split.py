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
from tests.conftest import SHARED_DATA


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


# ---- few groups per class: the rotation ---------------------------------------------------------


def fewshot_catalog(groups_per_class: list[int], shared: list[list[int]], rows: int = 2) -> pd.DataFrame:
    """Class ``c<i>`` in ``groups_per_class[i]`` single-label recordings, plus one multi-label
    recording per entry of ``shared`` holding those classes (a soundscape)."""
    recs = [[i] for i, n in enumerate(groups_per_class) for _ in range(n)] + shared
    out = [
        {"source": f"/x/r{r}.wav", "start_s": float(k), "end_s": k + 1.0, "label": f"c{c}", "group": f"r{r}"}
        for r, held in enumerate(recs)
        for c in held
        for k in range(rows)
    ]
    return pd.DataFrame(out)


def _own_and_total_groups(df: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    per_group = df.groupby("group")["label"].nunique()
    single = df[df["group"].map(per_group) == 1]
    own = single.groupby("label")["group"].nunique().reindex(df["label"].unique(), fill_value=0)
    return own, df.groupby("label")["group"].nunique()


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    groups_per_class=st.lists(st.integers(1, 5), min_size=2, max_size=14),
    shared_draw=st.lists(st.lists(st.integers(0, 13), min_size=2, max_size=4, unique=True), max_size=5),
    seed=st.integers(0, 10_000),
    folds=st.sampled_from([0, 3]),
    fractions=st.sampled_from([(0.15, 0.15), (0.2, 0.2), (0.3, 0.3), (0.0, 0.2)]),
)
def test_property_fewshot_every_class_where_its_groups_allow(
    groups_per_class: list[int],
    shared_draw: list[list[int]],
    seed: int,
    folds: int,
    fractions: tuple[float, float],
) -> None:
    n = len(groups_per_class)
    shared = [sorted({c % n for c in s}) for s in shared_draw]
    shared = [s for s in shared if len(s) >= 2]
    df = fewshot_catalog(groups_per_class, shared)
    val, test = fractions
    cfg = SplitConfig(min_count=0, val_fraction=val, test_fraction=test, folds=folds, seed=seed)
    try:
        out = split(df, config=cfg)
    except DataError as exc:
        assert "no group may be in two splits" in str(exc) and df["group"].nunique() < 3
        return
    check_no_group_leak(out)
    assert (out.groupby("group")["split"].nunique() == 1).all()
    if folds:
        assert (out.groupby("group")["fold"].nunique() == 1).all()
        assert ((out["fold"] == -1) == (out["split"] == "test")).all()
        assert ((out["fold"] == 0) == (out["split"] == "val")).all()
    present = (
        pd.crosstab(out["label"], out["split"]).reindex(columns=["train", "val", "test"], fill_value=0) > 0
    )
    own, total = _own_and_total_groups(df)
    splits = [s for s, on in (("train", True), ("test", test > 0), ("val", val > 0 or folds > 0)) if on]
    for c in present.index:
        # the guarantee: as many single-label groups as needed ⇒ present; shared groups only add
        need = splits[: min(len(splits), max(1, int(own[c])))]
        assert present.loc[c, need].all(), (c, own[c], present.loc[c].to_dict())
        if not shared:  # single-label catalogs: exactly by the group count
            need = splits[: min(len(splits), int(total[c]))]
            assert present.loc[c, need].all()
    if folds:
        in_fold = pd.crosstab(out["label"], out["fold"]).reindex(columns=range(folds), fill_value=0) > 0
        for c in in_fold.index:
            if own[c] >= folds + (test > 0):
                assert in_fold.loc[c].all(), (c, own[c], in_fold.loc[c].to_dict())
    assert split(df, config=cfg)["split"].tolist() == out["split"].tolist()  # seeded


def test_fewshot_82_species_issue_case() -> None:
    """The measured failure: 82 species with 2–5 recordings, min_count=2, 3 folds."""
    rng = np.random.default_rng(0)
    counts = rng.integers(2, 6, size=82).tolist()
    df = fewshot_catalog(counts, [])
    out = split(df, config=SplitConfig(min_count=2, folds=3, seed=0))
    present = pd.crosstab(out["label"], out["split"]) > 0
    assert present["train"].all() and present["test"].all()
    n = df.groupby("label")["group"].nunique()
    assert present.loc[n.index[n >= 3], "val"].all()
    assert not present.loc[n.index[n == 2], "val"].any()  # two groups: train + test only


def test_fold_rotation_leaves_one_group_per_class_out(tmp_path: Path) -> None:
    # 4 groups per class, K = 3: one test group, then one group in each fold, for every class
    df = fewshot_catalog([4] * 6 + [3] * 12, [])
    out = split(df, out=tmp_path / "r.parquet", config=SplitConfig(min_count=0, folds=3, seed=5))
    per = out.groupby(["label", "fold"])["group"].nunique().unstack(fill_value=0)
    four = [f"c{i}" for i in range(6)]
    assert (per.loc[four, [-1, 0, 1, 2]] == 1).all().all()
    # 3 groups: test, val (fold 0) and one train fold; the train fold rotates over the classes
    three = [f"c{i}" for i in range(6, 18)]
    assert (per.loc[three, [-1, 0]] == 1).all().all()
    assert per.loc[three, [1, 2]].sum().tolist() == [6, 6]
    summary = json.loads((tmp_path / "r.split_counts.json").read_text())
    assert set(summary["coverage_gaps"]) == set(three)  # each misses one fold, for want of groups
    assert summary["coverage_gaps"]["c6"]["reason"] == "only 3 group(s) for 3 folds + test"


def test_shared_groups_conflict_is_reported(tmp_path: Path) -> None:
    # a: 3 groups, two shared with b (2 groups), one with c (1 group, so train): a cannot reach val
    rows = [("g1", "a"), ("g1", "b"), ("g2", "a"), ("g2", "b"), ("g3", "a"), ("g3", "c")]
    rows += [(f"d{i}", "d") for i in range(6)]
    df = pd.DataFrame(rows, columns=["group", "label"]).assign(
        source=lambda d: "/x/" + d["group"] + ".wav", start_s=0.0, end_s=1.0
    )
    out = split(df, out=tmp_path / "m.parquet", config=SplitConfig(min_count=0))
    check_no_group_leak(out)
    assert set(out.loc[out["label"] == "b", "split"]) == {"train", "test"}
    assert set(out.loc[out["label"] == "c", "split"]) == {"train"}
    gaps = json.loads((tmp_path / "m.split_counts.json").read_text())["coverage_gaps"]
    assert gaps["a"]["missing"] == ["val"]
    assert gaps["a"]["reason"].startswith("not in val: its 3 group(s) also hold b, c")
    assert gaps["b"] == {"groups": 2, "missing": ["val"], "reason": "only 2 group(s) for 3 splits"}
    assert "d" not in gaps


def test_few_groups_threshold_and_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from chirpkit.cli import main
    from chirpkit.data.catalog import write_catalog
    from chirpkit.data.split import few_groups_threshold

    assert few_groups_threshold(SplitConfig()) == 6  # 1/0.15 test folds; 5 val folds + 1
    assert few_groups_threshold(SplitConfig(folds=5, test_fraction=0.0)) == 5
    assert few_groups_threshold(SplitConfig(folds=3)) == 6
    assert few_groups_threshold(SplitConfig(few_groups=2)) == 2
    cat = write_catalog(fewshot_catalog([2, 3, 4, 5] * 3, []), tmp_path / "cat.parquet")
    assert (
        main(["split", str(cat), "--folds", "3", "--min-count", "2", "--few-groups", "0", "--seed", "1"]) == 0
    )
    out = pd.read_parquet(cat)
    assert set(out["fold"]) == {-1, 0, 1, 2}
    assert (pd.crosstab(out["label"], out["split"])[["train", "test"]] > 0).all().all()
    assert "in 3 folds" in capsys.readouterr().out


@pytest.mark.skipif(not (SHARED_DATA / "xc-westcoast10").is_dir(), reason="../shared/data not present")
@pytest.mark.parametrize("group_column", ["group", "recordist"])
def test_xc_westcoast10_every_species_everywhere(group_column: str) -> None:
    # 10 species x 10 recordings; by recordist a species has 3-7 groups, most shared with others
    table = pd.read_csv(SHARED_DATA / "xc-westcoast10" / "labels.csv")
    df = pd.DataFrame(
        {"source": table["path"], "start_s": 0.0, "end_s": 6.0, "label": table["label"]}
    ).assign(group=table[group_column].astype(str))
    for folds in (0, 3):
        out = split(df, config=SplitConfig(min_count=2, folds=folds, seed=0))
        check_no_group_leak(out)
        assert (pd.crosstab(out["label"], out["split"])[["train", "val", "test"]] > 0).all().all()
