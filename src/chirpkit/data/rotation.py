"""Label-aware group assignment for classes with few groups (the few-shot part of ``split``).

Stratified group folds need many groups per class; with a handful of recordings per species they
leave classes out of test or train at random. Here every class gets its groups dealt out in turn:

* a class with one group goes to train, with two to train and test, with three or more to train,
  test and val (then more by the split fractions);
* with ``K`` folds (fold 0 = val) the non-test groups of a class go round the folds, starting at a
  train fold that rotates from class to class, so a class with ``K + 1`` groups is in every fold
  and the folds stay balanced.

Groups are *slots*: ``-1`` is test; without folds ``0`` is val and ``1`` train; with ``K`` folds
``0 .. K-1`` are the folds. A group can only be in one slot, so multi-label groups (a soundscape
holding several species) are dealt greedily, rarest class first: a group goes where its rarest
class most needs it, ties broken by what its other classes need. A repair pass then moves single
groups to fill a gap without opening another one. :func:`coverage_gaps` says which classes are
still missing from a split or fold, and why.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Layout", "assign", "coverage_gaps", "needs"]

TEST = -1


@dataclass(frozen=True)
class Layout:
    """Which slots exist: test (``test_fraction > 0``), val, train, or ``folds`` folds."""

    test_fraction: float
    val_fraction: float
    folds: int

    @property
    def has_test(self) -> bool:
        return self.test_fraction > 0

    @property
    def has_val(self) -> bool:
        return self.val_fraction > 0 or self.folds >= 2

    @property
    def slots(self) -> list[int]:
        rest = list(range(self.folds)) if self.folds >= 2 else ([0] if self.has_val else []) + [1]
        return ([TEST] if self.has_test else []) + rest

    @property
    def train_slots(self) -> list[int]:
        return list(range(1, self.folds)) if self.folds >= 2 else [1]

    def split_of(self, slot: int) -> str:
        return "test" if slot == TEST else "val" if slot == 0 else "train"

    def slot_name(self, slot: int) -> str:
        return self.split_of(slot) if self.folds < 2 or slot == TEST else f"fold{slot}"


def _test_quota(n: int, layout: Layout) -> int:
    if not layout.has_test or n < 2:
        return 0
    q = max(1, round(n * layout.test_fraction))
    return min(q, n - 2) if n >= 3 and layout.has_val else min(q, n - 1)


def needs(n: int, layout: Layout, offset: int) -> tuple[dict[int, int], list[int], list[set[int]]]:
    """What a class with ``n`` groups should get.

    Returns:
        ``targets`` (groups per slot, summing to ``n``), ``order`` (the slots in the order the class
        should fill them, rotated by ``offset`` among the train folds) and ``required`` (sets of
        slots of which each must hold at least one of its groups: train; test from 2 groups; val
        from 3 (2 without a test split); every fold once the non-test groups are at least ``K``).
    """
    train = layout.train_slots
    first_train = train[offset % len(train)]
    others = [s for s in layout.slots if s not in (TEST, 0, first_train)]
    others = sorted(others, key=lambda s: (s - first_train) % max(1, layout.folds))
    order = [first_train] + ([TEST] if layout.has_test else []) + ([0] if layout.has_val else []) + others
    required = [set(train)] + ([{TEST}] if layout.has_test else []) + ([{0}] if layout.has_val else [])
    required = required[: max(1, min(n, len(required)))]
    q_test = _test_quota(n, layout)
    targets = dict.fromkeys(layout.slots, 0)
    targets[TEST] = q_test if layout.has_test else 0
    if not layout.has_test:
        targets.pop(TEST)
    m = n - q_test
    if layout.folds >= 2:
        cycle = [first_train, 0, *others]
        for i in range(m):
            targets[cycle[i % len(cycle)]] += 1
        if m >= layout.folds:
            required += [{f} for f in range(layout.folds) if {f} not in required]
    elif m > 0:
        q_val = 0
        if layout.has_val and (n >= 3 or not layout.has_test) and m >= 2:
            q_val = min(m - 1, max(1, round(n * layout.val_fraction)))
        targets[1] = m - q_val
        if layout.has_val:
            targets[0] = q_val
    return targets, order, required


def _unmet(counts: np.ndarray, required: Sequence[set[int]], col: Mapping[int, int]) -> list[int]:
    """Indices of the ``required`` slot sets that hold none of the class's groups."""
    return [i for i, r in enumerate(required) if not any(counts[col[s]] for s in r)]


_Plan = tuple[dict[int, int], list[int], list[set[int]]]


def assign(
    group_classes: Mapping[str, Sequence[str]],
    layout: Layout,
    *,
    seed: int,
    fixed: Mapping[str, int] | None = None,
) -> dict[str, int]:
    """Slot per group, rarest class first.

    Args:
        group_classes: every group and the classes it holds.
        layout: the slots.
        seed: shuffles ties and rotates the classes' starting folds.
        fixed: slots already decided (the stratified part): counted, not placed again; the repair
            pass may still move one of them to close a gap.

    Returns:
        ``group → slot`` for every group of ``group_classes``.
    """
    rng = np.random.default_rng(seed)
    out = dict(fixed or {})
    n_groups: dict[str, int] = {}
    for held in group_classes.values():
        for c in set(held):
            n_groups[c] = n_groups.get(c, 0) + 1
    # starting train folds rotate over the classes in order of rarity, so that classes with the
    # same number of groups spread evenly over the folds
    shuffled = [sorted(n_groups)[i] for i in rng.permutation(len(n_groups))]
    offset = {c: i for i, c in enumerate(sorted(shuffled, key=lambda c: n_groups[c]))}
    classes = sorted(n_groups)
    col = {s: i for i, s in enumerate(layout.slots)}
    plan = {c: needs(n_groups[c], layout, offset[c]) for c in classes}
    counts = {c: np.zeros(len(col), dtype=np.int64) for c in classes}
    for g, slot in out.items():
        for c in set(group_classes[g]):
            counts[c][col[slot]] += 1

    free = [g for g in group_classes if g not in out]
    tie = rng.permutation(len(free))
    ranked = sorted(
        range(len(free)),
        key=lambda i: (
            min(n_groups[c] for c in group_classes[free[i]]),
            -len(set(group_classes[free[i]])),
            tie[i],
        ),
    )
    for i in ranked:
        g = free[i]
        held = sorted(set(group_classes[g]), key=lambda c: (n_groups[c], c))
        rarest, others = held[0], held[1:]
        targets, order, required = plan[rarest]
        gaps = [required[j] for j in _unmet(counts[rarest], required, col)]
        other_gaps = [plan[c][2][j] for c in others for j in _unmet(counts[c], plan[c][2], col)]

        keys = [
            (
                sum(s in r for r in gaps),
                targets.get(s, 0) - int(counts[rarest][col[s]]),
                sum(s in r for r in other_gaps),
                sum(plan[c][0].get(s, 0) - int(counts[c][col[s]]) for c in others),
                -order.index(s),
            )
            for s in layout.slots
        ]
        best = layout.slots[max(range(len(keys)), key=keys.__getitem__)]
        out[g] = best
        for c in held:
            counts[c][col[best]] += 1
    _repair(out, group_classes, plan, counts, col)
    return out


def _repair(
    out: dict[str, int],
    group_classes: Mapping[str, Sequence[str]],
    plan: Mapping[str, _Plan],
    counts: dict[str, np.ndarray],
    col: Mapping[int, int],
) -> None:
    """Move single groups to close coverage gaps; a move may not open another gap.

    Each move closes at least one gap and opens none, so the loop ends.
    """
    by_class: dict[str, list[str]] = {}
    for g in sorted(out):
        for c in sorted(set(group_classes[g])):
            by_class.setdefault(c, []).append(g)
    changed = True
    while changed:
        changed = False
        for c in sorted(by_class):
            for j in _unmet(counts[c], plan[c][2], col):
                gap = plan[c][2][j]
                move = _find_move(c, gap, out, by_class[c], group_classes, plan, counts, col)
                if move is None:
                    continue
                g, to = move
                for d in set(group_classes[g]):
                    counts[d][col[out[g]]] -= 1
                    counts[d][col[to]] += 1
                out[g] = to
                changed = True
                break


def _find_move(
    c: str,
    gap: set[int],
    out: Mapping[str, int],
    groups: Sequence[str],
    group_classes: Mapping[str, Sequence[str]],
    plan: Mapping[str, _Plan],
    counts: dict[str, np.ndarray],
    col: Mapping[int, int],
) -> tuple[str, int] | None:
    """A group of ``c`` and a slot in ``gap`` to move it to that leaves no class a new gap."""
    order = plan[c][1]
    for g in groups:
        src = out[g]
        if src in gap:
            continue
        for to in sorted(gap, key=order.index):
            ok = True
            for d in set(group_classes[g]):
                after = counts[d].copy()
                after[col[src]] -= 1
                after[col[to]] += 1
                if not set(_unmet(after, plan[d][2], col)) <= set(_unmet(counts[d], plan[d][2], col)):
                    ok = False
                    break
            if ok:
                return g, to
    return None


def coverage_gaps(
    assignment: Mapping[str, int],
    group_classes: Mapping[str, Sequence[str]],
    layout: Layout,
) -> dict[str, dict[str, object]]:
    """Classes that are not in every split (and fold), with the reason.

    Returns:
        ``class → {"groups": n, "missing": [split or fold names], "reason": text}``.
    """
    col = {s: i for i, s in enumerate(layout.slots)}
    counts: dict[str, np.ndarray] = {}
    partners: dict[str, set[str]] = {}
    for g, slot in assignment.items():
        held = set(group_classes[g])
        for c in held:
            counts.setdefault(c, np.zeros(len(col), dtype=np.int64))[col[slot]] += 1
            partners.setdefault(c, set()).update(held - {c})
    out: dict[str, dict[str, object]] = {}
    for c in sorted(counts):
        n = int(counts[c].sum())
        present = [s for s in layout.slots if counts[c][col[s]]]
        if layout.folds >= 2:
            missing = [layout.slot_name(s) for s in layout.slots if s not in present]
        else:
            have = {layout.split_of(s) for s in present}
            missing = [layout.split_of(s) for s in layout.slots if layout.split_of(s) not in have]
        if not missing:
            continue
        _, _, required = needs(n, layout, 0)
        unmet = [required[j] for j in _unmet(counts[c], required, col)]
        unmet_names = ["train" if len(r) > 1 else layout.slot_name(next(iter(r))) for r in unmet]
        reasons = []
        if unmet_names:
            shared = sorted(partners[c])
            if shared:
                more = " …" if len(shared) > 5 else ""
                reasons.append(
                    f"not in {', '.join(unmet_names)}: its {n} group(s) also hold "
                    f"{', '.join(shared[:5])}{more}, and no placement serves all of them"
                )
            else:
                reasons.append(f"not in {', '.join(unmet_names)}: the stratified split left it out")
        if len(missing) > len(unmet_names):
            room = (
                f"{layout.folds} folds" + (" + test" if layout.has_test else "")
                if layout.folds >= 2
                else (f"{len(layout.slots)} splits")
            )
            reasons.append(f"only {n} group(s) for {room}")
        out[c] = {"groups": n, "missing": missing, "reason": "; ".join(reasons)}
    return out
