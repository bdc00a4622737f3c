"""Event matching in score_detections: optimal one-to-one, checked against sed_eval (DCASE)."""

from __future__ import annotations

import importlib.util
import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import maximum_bipartite_matching

from chirpkit.detection.events import _pairs, optimal_matching, score_detections

SED_DATA = Path(__file__).parent / "data" / "sed_eval"


def events(rows: list[tuple[float, float]], label: str = "a", file: str = "r1.wav") -> pd.DataFrame:
    return pd.DataFrame(
        {"file": file, "start_s": [r[0] for r in rows], "end_s": [r[1] for r in rows], "label": label}
    )


def test_matching_does_not_depend_on_row_order_or_scores() -> None:
    # the best-scored detection (1.25) is within the collar of both calls; greedy matching in table
    # order gave it to the call at 1.5 and left the call at 1.0 unmatched (1 pair); optimal: 2
    ann = events([(1.5, 2.0), (1.0, 2.0)])
    det = events([(1.25, 2.0), (1.75, 2.0)]).assign(score=[0.9, 0.8])
    seen = set()
    for perm_d, perm_a in itertools.product(itertools.permutations(range(2)), repeat=2):
        d, a = det.iloc[list(perm_d)], ann.iloc[list(perm_a)]
        row = score_detections(d, a, rule="onset", tolerance_s=0.25).set_index("class").loc["a"]
        seen.add((row["tp"], row["fp"], row["fn"]))
    assert seen == {(2, 0, 0)}


def test_ties_go_to_the_better_overlap() -> None:
    # two detections, two calls, every pair overlaps: both matchings have 2 pairs, the one that
    # pairs each detection with the call it covers best wins
    d_s, d_e = np.array([0.0, 5.0]), np.array([4.0, 9.0])
    a_s, a_e = np.array([5.5, 0.5]), np.array([8.5, 3.5])
    di, ai, q = _pairs(d_s, d_e, a_s, a_e, rule="overlap", tolerance_s=2.0, min_iou=0.3)
    assert len(di) == 4
    assert optimal_matching(2, 2, di, ai, q) == [(0, 1), (1, 0)]


def test_onset_offset_rule_is_dcase_s() -> None:
    ann = events([(10.0, 14.0)])  # 4 s long: offset tolerance max(0.2, 2.0) = 2 s
    ok = events([(10.1, 12.5)])
    late = events([(10.3, 14.0)])
    short = events([(10.0, 11.5)])
    tp = lambda d: score_detections(d, ann, rule="onset-offset", tolerance_s=0.2).iloc[0]["tp"]  # noqa: E731
    assert [tp(ok), tp(late), tp(short)] == [1, 0, 0]


@settings(max_examples=150, deadline=None)
@given(
    n_det=st.integers(0, 9),
    n_ann=st.integers(0, 9),
    seed=st.integers(0, 10_000),
    rule=st.sampled_from(["overlap", "onset", "onset-offset", "iou"]),
)
def test_property_optimal_matching_is_a_maximum_matching(
    n_det: int, n_ann: int, seed: int, rule: str
) -> None:
    rng = np.random.default_rng(seed)
    d_s, a_s = rng.uniform(0, 12, n_det), rng.uniform(0, 12, n_ann)
    d_e, a_e = d_s + rng.uniform(0.1, 3, n_det), a_s + rng.uniform(0, 2, n_ann)
    di, ai, q = _pairs(d_s, d_e, a_s, a_e, rule=rule, tolerance_s=0.5, min_iou=0.2, chunk=3)
    pairs = optimal_matching(n_det, n_ann, di, ai, q)
    hits = set(zip(di.tolist(), ai.tolist(), strict=True))
    assert set(pairs) <= hits
    assert len({d for d, _ in pairs}) == len(pairs) == len({a for _, a in pairs})  # one to one
    graph = csr_matrix((np.ones(len(di)), (di, ai)), shape=(n_det, n_ann))
    size = int((maximum_bipartite_matching(graph, perm_type="column") >= 0).sum()) if len(di) else 0
    assert len(pairs) == size  # as many pairs as Hopcroft-Karp finds
    if n_det <= 5 and n_ann <= 5 and len(di):  # and no maximum matching has a better total quality
        quality = dict(zip(zip(di.tolist(), ai.tolist(), strict=True), q.tolist(), strict=True))
        best = max(
            sum(quality[p] for p in combo)
            for combo in itertools.combinations(sorted(hits), size)
            if len({d for d, _ in combo}) == size == len({a for _, a in combo})
        )
        assert sum(quality[p] for p in pairs) == pytest.approx(best)


def _sed_eval_list(name: str) -> pd.DataFrame:
    """sed_eval's test event lists: ``onset offset label``, with a file (and scene) column before."""
    rows = []
    for line in (SED_DATA / f"{name}.txt").read_text().splitlines():
        f = line.split("\t")
        file, on, off, label = ("file.wav", *f) if len(f) == 3 else (f[0], *f[-3:])
        rows.append((file, float(on), float(off), label))
    return pd.DataFrame(rows, columns=["file", "start_s", "end_s", "label"])


# expected overall figures from sed_eval 0.2.1 EventBasedMetrics (optimal matching,
# percentage_of_length 0.5) on its own test lists, file by file
SED_EVAL_CASES = [
    ("office_snr0_med_v2", "onset", 0.2, 6, 0.17142857142857143, 0.2222222222222222, 0.1935483870967742),
    ("office_snr0_med_v2", "onset", 0.5, 9, 0.2571428571428571, 0.3333333333333333, 0.2903225806451613),
    (
        "office_snr0_med_v2",
        "onset-offset",
        0.2,
        5,
        0.14285714285714285,
        0.18518518518518517,
        0.16129032258064516,
    ),
    (
        "office_snr0_med_v2",
        "onset-offset",
        0.5,
        8,
        0.22857142857142856,
        0.2962962962962963,
        0.25806451612903225,
    ),
    ("office_snr0_high_v2", "onset", 0.2, 15, 0.19230769230769232, 0.22058823529411764, 0.20547945205479454),
    ("office_snr0_high_v2", "onset", 1.0, 27, 0.34615384615384615, 0.39705882352941174, 0.36986301369863006),
    (
        "office_snr0_high_v2",
        "onset-offset",
        0.2,
        8,
        0.10256410256410256,
        0.11764705882352941,
        0.1095890410958904,
    ),
    (
        "office_snr0_high_v2",
        "onset-offset",
        1.0,
        21,
        0.2692307692307692,
        0.3088235294117647,
        0.28767123287671237,
    ),
    ("street_fold1", "onset", 0.5, 3, 0.013761467889908258, 0.02112676056338028, 0.016666666666666666),
]


@pytest.mark.parametrize("case,rule,collar,tp,precision,recall,f1", SED_EVAL_CASES)
def test_matches_sed_eval_event_based_metrics(
    case: str, rule: str, collar: float, tp: int, precision: float, recall: float, f1: float
) -> None:
    ref_name, est_name = (
        ("street_fold1_reference", "street_fold1_detected")
        if case == "street_fold1"
        else (case, f"{case}_detected")
    )
    ref, est = _sed_eval_list(ref_name), _sed_eval_list(est_name)
    got = score_detections(est, ref, rule=rule, tolerance_s=collar).set_index("class").loc["all"]
    assert got["tp"] == tp
    assert got[["precision", "recall", "f1"]].tolist() == pytest.approx([precision, recall, f1], abs=1e-12)


def _sed_eval() -> object | None:
    try:
        if importlib.util.find_spec("sed_eval") is None:
            return None
        import sed_eval

        return sed_eval
    except Exception:  # sed_eval's dcase_util needs pkg_resources (setuptools < 81)
        return None


@pytest.mark.skipif(_sed_eval() is None, reason="sed_eval (and dcase_util) not importable")
def test_random_cases_against_live_sed_eval() -> None:
    import dcase_util
    import sed_eval

    rng = np.random.default_rng(0)
    for _ in range(60):
        n_ref, n_est = rng.integers(0, 10, size=2)
        ref = pd.DataFrame({"file": "f.wav", "start_s": rng.uniform(0, 10, n_ref).round(2), "label": "a"})
        est = pd.DataFrame({"file": "f.wav", "start_s": rng.uniform(0, 10, n_est).round(2), "label": "a"})
        ref["end_s"], est["end_s"] = (
            ref["start_s"] + 0.5,
            est["start_s"] + rng.uniform(0.1, 1, n_est).round(2),
        )
        for rule, offset in (("onset", False), ("onset-offset", True)):
            metric = sed_eval.sound_event.EventBasedMetrics(
                event_label_list=["a"], t_collar=0.5, evaluate_onset=True, evaluate_offset=offset
            )
            meta = [
                dcase_util.containers.MetaDataContainer(
                    [
                        {"filename": "f.wav", "event_label": "a", "onset": r.start_s, "offset": r.end_s}
                        for r in df.itertuples()
                    ]
                )
                for df in (ref, est)
            ]
            metric.evaluate(*meta)
            got = score_detections(est, ref, rule=rule, tolerance_s=0.5) if n_ref or n_est else None
            tp = 0 if got is None else int(got.set_index("class").loc["all", "tp"])
            assert tp == int(metric.class_wise["a"]["Ntp"])
