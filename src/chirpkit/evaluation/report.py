"""Evaluate a trained run on a split of its store: macro F1 first.

Writes to ``RUN/eval-<split>/``: ``metrics.json`` (``macro_f1``, ``weighted_f1``, ``accuracy``, …),
``per_class.csv``, ``report.txt``, ``confusion_matrix.png`` (+ ``.csv``), ``pr_curves.png``,
``pred_labels.npy`` / ``true_labels.npy`` (class names), ``predictions.csv``; for the test split,
``RUN/metrics.json`` too. Scores are per example (catalog row): the class probabilities of an
example's windows are averaged; window-level scores are reported beside them.

Beside the F1 figures, the threshold-free ones the field compares models with
(:func:`chirpkit.metrics.ranking_scores`): ``cmap`` (macro average precision), ``macro_roc_auc``
(classes without positives skipped, and listed) and ``top1``; and 95 % intervals of the headline
figures (``ci``) by a seeded bootstrap over the examples' groups (recordings).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import classification_report, confusion_matrix, f1_score, precision_recall_fscore_support

from chirpkit.data.dataset import split_positions
from chirpkit.data.store import Store
from chirpkit.errors import ConfigError, DataError, RunError
from chirpkit.metrics import bootstrap_ci, multilabel_scores, ranking_scores, scores, threshold_free
from chirpkit.models.predict import Predictor, load_predictor
from chirpkit.utils.io import atomic_path, read_json, write_csv, write_json, write_text
from chirpkit.utils.plots import save_confusion_matrix, save_pr_curves

__all__ = ["evaluate", "scores"]

log = logging.getLogger("chirpkit")


def _open_store(run: Path, store: Store | str | os.PathLike[str] | None) -> Store:
    if isinstance(store, Store):
        return store
    if store is not None:
        return Store(store)
    data = run / "data.json"
    if not data.is_file():
        raise RunError(f"{run} has no data.json; pass the store explicitly (store=...)")
    path = read_json(data)["store"]
    if not Path(path).is_dir():
        raise RunError(
            f"the store this run was trained on ({path}) is gone; pass store=... (chirpkit prepare)"
        )
    return Store(path)


def _window_probs(
    net: Predictor, st: Store, pos: np.ndarray, batch_size: int, dev: Any, progress: bool, desc: str
) -> np.ndarray:
    return net.on_store(st, pos, batch_size=batch_size, progress=progress, desc=desc)


def _thresholds(
    net: Any,
    st: Store,
    rule: str,
    lookup: dict[str, int],
    batch_size: int,
    dev: Any,
    progress: bool,
    run_dir: Path,
    split: str,
    probs: np.ndarray,
    win_true: np.ndarray,
) -> dict[str, Any]:
    """Choose per-class thresholds on the validation windows; report them on ``split`` too."""
    from chirpkit.evaluation.thresholds import choose_thresholds, save_thresholds

    names = net.spec.class_names
    val = split_positions(st, "val")
    val = val[st.index["label"].iloc[val].isin(list(lookup)).to_numpy()]
    if len(val) == 0:
        raise DataError(f"store {st.root} has no validation windows to choose thresholds on")
    v_probs = (
        probs
        if split == "val"
        else _window_probs(net, st, val, batch_size, dev, progress, "thresholds (val)")
    )
    if split == "val":
        v_true = win_true
    elif np.ndim(win_true) == 2:
        v_true = _multi_hot(st.index["labels"].iloc[val].to_numpy(), lookup)
    else:
        v_true = st.index["label"].iloc[val].map(lookup).to_numpy()
    table = choose_thresholds(v_probs, v_true, names, rule)
    save_thresholds(table, run_dir, rule=rule, split="val")
    out: dict[str, Any] = {"rule": rule}
    for c, r in zip(range(len(names)), table.to_dict("records"), strict=True):
        t = r["threshold"]
        on_split = {}
        if t == t:  # not nan: precision/recall reached on the evaluated split
            hit = probs[:, c] >= t
            truth = win_true[:, c] if np.ndim(win_true) == 2 else win_true == c
            on_split = {
                f"{split}_precision": float((hit & truth).sum() / hit.sum()) if hit.any() else None,
                f"{split}_recall": float((hit & truth).sum() / truth.sum()) if truth.any() else None,
            }
        out[r["class"]] = {
            "threshold": None if t != t else t,
            "val_precision": r["precision"],
            "val_recall": r["recall"],
            "reachable": r["reachable"],
            **on_split,
        }
    log.info("thresholds (%s, chosen on val): %s", rule, run_dir / "thresholds.json")
    return out


def _multi_hot(labels: Any, lookup: dict[str, int]) -> np.ndarray:
    out = np.zeros((len(labels), len(lookup)), dtype=bool)
    for i, labs in enumerate(labels):
        for lab in labs:
            if lab in lookup:
                out[i, lookup[lab]] = True
    return out


def _evaluate_multilabel(
    net: Any,
    st: Store,
    idx: pd.DataFrame,
    probs: np.ndarray,
    lookup: dict[str, int],
    split: str,
    out_dir: Path,
    run_dir: Path,
    headline: bool,
    thresholds: str | None,
    batch_size: int,
    dev: Any,
    progress: bool,
    n_boot: int,
    seed: int,
) -> dict[str, Any]:
    """Multi-label scores: F1 at 0.5 per class (macro over classes present), subset accuracy and
    mean average precision, per example (window scores averaged) and per window."""

    spec = net.spec
    names = np.array(spec.class_names)
    win_true = _multi_hot(idx["labels"].to_numpy(), lookup)
    rows_of = idx["row"].to_numpy()
    row_scores = pd.DataFrame(probs).groupby(rows_of, sort=True).mean().to_numpy()
    first = idx.groupby("row", sort=True).first()
    y_true = _multi_hot(first["labels"].to_numpy(), lookup)
    metrics: dict[str, Any] = {
        "split": split,
        "level": "example",
        "task": "multilabel",
        "threshold": 0.5,
        **multilabel_scores(y_true, row_scores),
        "n_examples": len(y_true),
        "n_windows": len(win_true),
        "window": multilabel_scores(win_true, probs) | threshold_free(ranking_scores(win_true, probs)),
        "classes_evaluated": int(y_true.any(axis=0).sum()),
        "model": spec.architecture,
        "store": str(st.root),
    }
    if thresholds is not None:
        metrics["thresholds"] = _thresholds(
            net, st, thresholds, lookup, batch_size, dev, progress, run_dir, split, probs, win_true
        )
    ranking, curves = _ranking(y_true, row_scores, names, _groups(first), n_boot, seed, multi=True)
    metrics.update(ranking)
    out_dir.mkdir(parents=True, exist_ok=True)
    y_pred = row_scores >= 0.5
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, zero_division=0)
    per_class = pd.DataFrame({"class": names, "precision": p, "recall": r, "f1": f, "support": s})
    per_class = pd.concat([per_class, curves], axis=1)
    write_csv(out_dir / "per_class.csv", per_class, index=False, float_format="%.4f")
    write_text(
        out_dir / "report.txt",
        f"split: {split}   examples: {len(y_true)}   windows: {len(win_true)}   "
        "(multi-label, threshold 0.5)\n"
        f"macro F1: {metrics['macro_f1']:.4f}   weighted F1: {metrics['weighted_f1']:.4f}   "
        f"subset accuracy: {metrics['accuracy']:.4f}   mAP: {metrics['map']:.4f}   "
        f"macro ROC-AUC: {metrics['macro_roc_auc']:.4f}\n{_ci_line(metrics)}\n"
        + per_class.to_string(index=False, float_format=lambda v: f"{v:.4f}")
        + "\n",
    )
    save_pr_curves(
        y_true, row_scores, list(names), out_dir / "pr_curves.png", title=_pr_title(split, metrics)
    )
    for fname, arr in (("pred_labels.npy", y_pred), ("true_labels.npy", y_true)):
        with atomic_path(out_dir / fname) as tmp, open(tmp, "wb") as fh:
            np.save(fh, arr)
    preds = pd.DataFrame(
        {
            "source": first["source"].to_numpy(),
            "true": [";".join(names[t]) for t in y_true],
            "pred": [";".join(names[q]) for q in y_pred],
        }
    )
    write_csv(out_dir / "predictions.csv", preds, index=False)
    write_json(out_dir / "metrics.json", metrics)
    if split == "test" and headline:
        write_json(run_dir / "metrics.json", metrics)
    log.info(
        "%s (multi-label): macro F1 %.4f, mAP %.4f over %d example(s); report: %s",
        split,
        metrics["macro_f1"],
        metrics["map"],
        len(y_true),
        out_dir,
    )
    return metrics


def _ranking(
    y_true: np.ndarray, probs: np.ndarray, names: Any, groups: np.ndarray, n_boot: int, seed: int, multi: bool
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Threshold-free scores, their intervals over groups, and per-class AP / ROC-AUC."""
    r = ranking_scores(y_true, probs, list(names))
    out: dict[str, Any] = threshold_free(r)
    out["skipped_roc_auc"] = r["skipped_roc_auc"]
    out["skipped_ap"] = r["skipped_ap"]
    if n_boot:

        def statistic(w: np.ndarray) -> dict[str, float]:
            rs = ranking_scores(y_true, probs, sample_weight=w, exact=False)
            return {"macro_f1": _macro_f1(y_true, probs, w, multi), "cmap": rs["cmap"]} | {
                "macro_roc_auc": rs["macro_roc_auc"]
            }

        out["ci"] = bootstrap_ci(statistic, groups, n_boot=n_boot, seed=seed)
        out["ci_settings"] = {"level": 0.95, "n_boot": n_boot, "seed": seed, "over": "groups"}
    per_class = pd.DataFrame({"ap": r["ap"], "roc_auc": r["roc_auc"]})
    return out, per_class


def _macro_f1(y_true: np.ndarray, probs: np.ndarray, w: np.ndarray, multi: bool) -> float:
    """Macro F1 with rows weighted by ``w``: argmax, or multi-label at 0.5 over classes present."""
    if not multi:
        return scores(y_true, probs.argmax(axis=1), sample_weight=w)["macro_f1"]
    keep = w > 0
    yt, yp = y_true[keep], probs[keep] >= 0.5
    present = yt.any(axis=0)
    kw: dict[str, Any] = {"average": "macro", "zero_division": 0, "sample_weight": w[keep]}
    return float(f1_score(yt[:, present], yp[:, present], **kw))


def _ci_line(metrics: dict[str, Any]) -> str:
    ci = metrics.get("ci") or {}
    parts = [f"{name} [{lo:.4f}, {hi:.4f}]" for name, (lo, hi) in ci.items()]
    return f"95 % intervals (bootstrap over groups): {', '.join(parts)}\n" if parts else ""


def _pr_title(split: str, metrics: dict[str, Any]) -> str:
    return f"{split}: macro AP {metrics['cmap']:.3f}, macro ROC-AUC {metrics['macro_roc_auc']:.3f}"


def _groups(first: pd.DataFrame) -> np.ndarray:
    """The group of each example (recording / site), or the example itself when none is stored."""
    if "group" in first.columns:
        return first["group"].astype(str).to_numpy()
    return np.asarray(first.index.astype(str))


def evaluate(
    run: str | os.PathLike[str],
    *,
    split: str = "test",
    store: Store | str | os.PathLike[str] | None = None,
    out: str | os.PathLike[str] | None = None,
    batch_size: int = 64,
    device: str = "auto",
    thresholds: str | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Score the run's model on ``split`` of its store (or another store with the same classes).

    With ``thresholds`` (``"precision=0.9"``, ``"recall=0.8"`` or ``"f1"``), one detection
    threshold per class is also chosen on the validation windows and saved as
    ``RUN/thresholds.json`` (``chirpkit detect`` applies it by default), with the precision and
    recall it reaches on val and on ``split``.

    ``n_boot`` bootstrap draws over the examples' groups (recordings; ``seed``) give the 95 %
    intervals of macro F1, macro AP and macro ROC-AUC (``metrics["ci"]``); 0 skips them.

    Returns:
        The metrics (also written to ``metrics.json``).

    Raises:
        RunError: the run has no model, or the store's audio settings differ from the model's.
        DataError: the split has no windows.
    """
    run_dir = Path(run)
    net = load_predictor(run_dir, device=device)
    spec = net.spec
    st = _open_store(run_dir, store)
    if st.sample_rate != spec.sample_rate or st.window_samples != spec.window_samples:
        raise RunError(
            f"store {st.root} was prepared at {st.sample_rate} Hz / {st.audio.window_s} s windows but "
            f"the model expects {spec.sample_rate} Hz / {spec.window_s} s; prepare the catalog with "
            "the model's settings"
        )
    pos = split_positions(st, split)
    if len(pos) == 0:
        raise DataError(f"store {st.root} has no '{split}' windows to evaluate")
    lookup = {c: i for i, c in enumerate(spec.class_names)}
    idx = st.index.iloc[pos].reset_index(drop=True)
    unknown = sorted(set(idx["label"]) - set(lookup))
    if unknown:
        log.warning(
            "%d label(s) in the %s split are unknown to the model and are left out: %s",
            len(unknown),
            split,
            unknown[:10],
        )
        keep = idx["label"].isin(list(lookup)).to_numpy()
        pos, idx = pos[keep], idx[keep].reset_index(drop=True)

    dev = device
    probs = _window_probs(net, st, pos, batch_size, dev, progress, f"evaluate {split}")
    k = spec.num_classes
    out_dir = Path(out) if out is not None else run_dir / f"eval-{split}"
    if spec.task == "multilabel":
        return _evaluate_multilabel(
            net,
            st,
            idx,
            probs,
            lookup,
            split,
            out_dir,
            run_dir,
            out is None,
            thresholds,
            batch_size,
            dev,
            progress,
            n_boot,
            seed,
        )
    if n_boot < 0:
        raise ConfigError(f"n_boot={n_boot} must be >= 0")
    win_true = idx["label"].map(lookup).to_numpy()
    win_pred = probs.argmax(axis=1)

    # per example: average the probabilities of its windows
    by_row = pd.DataFrame(probs).groupby(idx["row"].to_numpy(), sort=True).mean()
    rows = idx.groupby("row", sort=True).first()
    y_true = rows["label"].map(lookup).to_numpy()
    row_probs = by_row.to_numpy()
    y_pred = row_probs.argmax(axis=1)

    metrics: dict[str, Any] = {
        "split": split,
        "level": "example",
        **scores(y_true, y_pred, k),
        "n_examples": len(y_true),
        "n_windows": len(win_true),
        "window": scores(win_true, win_pred, k) | threshold_free(ranking_scores(win_true, probs)),
        "classes_evaluated": len(np.unique(y_true)),
        "model": spec.architecture,
        "store": str(st.root),
    }
    if thresholds is not None:
        metrics["thresholds"] = _thresholds(
            net, st, thresholds, lookup, batch_size, dev, progress, run_dir, split, probs, win_true
        )
    names = np.array(spec.class_names)
    ranking, curves = _ranking(y_true, row_probs, names, _groups(rows), n_boot, seed, multi=False)
    metrics.update(ranking)
    out_dir.mkdir(parents=True, exist_ok=True)
    present = np.unique(np.concatenate([y_true, y_pred]))
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=np.arange(k), zero_division=0)
    per_class = pd.DataFrame({"class": names, "precision": p, "recall": r, "f1": f, "support": s})
    per_class = pd.concat([per_class, curves], axis=1)
    write_csv(out_dir / "per_class.csv", per_class, index=False, float_format="%.4f")
    report = classification_report(
        y_true,
        y_pred,
        labels=present,
        target_names=names[present].tolist(),
        digits=4,
        zero_division=0,
    )
    write_text(
        out_dir / "report.txt",
        f"split: {split}   examples: {len(y_true)}   windows: {len(win_true)}\n"
        f"macro F1: {metrics['macro_f1']:.4f}   weighted F1: {metrics['weighted_f1']:.4f}   "
        f"accuracy: {metrics['accuracy']:.4f}\nmacro AP: {metrics['cmap']:.4f}   macro ROC-AUC: "
        f"{metrics['macro_roc_auc']:.4f}   top-1: {metrics['top1']:.4f}\n{_ci_line(metrics)}\n{report}",
    )
    cm = confusion_matrix(y_true, y_pred, labels=np.arange(k))
    write_csv(out_dir / "confusion_matrix.csv", pd.DataFrame(cm, index=names, columns=names))
    save_confusion_matrix(
        cm,
        spec.class_names,
        out_dir / "confusion_matrix.png",
        title=f"{split}: macro F1 {metrics['macro_f1']:.3f} (n={len(y_true)})",
    )
    save_pr_curves(
        np.eye(k, dtype=bool)[y_true],
        row_probs,
        list(names),
        out_dir / "pr_curves.png",
        title=_pr_title(split, metrics),
    )
    for fname, arr in (("pred_labels.npy", names[y_pred]), ("true_labels.npy", names[y_true])):
        with atomic_path(out_dir / fname) as tmp, open(tmp, "wb") as fh:
            np.save(fh, arr)
    preds = pd.DataFrame(
        {
            "source": rows["source"].to_numpy(),
            "true": names[y_true],
            "pred": names[y_pred],
            "score": row_probs.max(axis=1),
        }
    )
    write_csv(out_dir / "predictions.csv", preds, index=False, float_format="%.4f")
    write_json(out_dir / "metrics.json", metrics)
    if split == "test" and out is None:
        write_json(run_dir / "metrics.json", metrics)
    log.info(
        "%s: macro F1 %.4f, weighted F1 %.4f, accuracy %.4f over %d example(s); report: %s",
        split,
        metrics["macro_f1"],
        metrics["weighted_f1"],
        metrics["accuracy"],
        len(y_true),
        out_dir,
    )
    return metrics
