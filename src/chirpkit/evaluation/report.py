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
from dataclasses import dataclass
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

__all__ = ["EvaluationReport", "evaluate", "evaluation_report", "scores"]

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


def _multilabel_report(
    spec: Any, st: Store, idx: pd.DataFrame, probs: np.ndarray, lookup: dict[str, int], split: str
) -> EvaluationReport:
    """Multi-label scores: F1 at 0.5 per class (macro over classes present), subset accuracy and
    mean average precision, per example (window scores averaged) and per window. When every example
    holds exactly one label (clips of one species scored by per-species sigmoids), also the
    single-label figures of the highest score (``argmax_macro_f1``, ``argmax_accuracy``): the
    decision a softmax model or a zero-shot classifier is scored by, so the two compare."""
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
    if len(y_true) and (y_true.sum(axis=1) == 1).all():
        argmax = scores(y_true.argmax(axis=1), row_scores.argmax(axis=1))
        metrics["argmax_macro_f1"] = argmax["macro_f1"]
        metrics["argmax_accuracy"] = argmax["accuracy"]
    y_pred = row_scores >= 0.5
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, zero_division=0)
    per_class = pd.DataFrame({"class": names, "precision": p, "recall": r, "f1": f, "support": s})
    return EvaluationReport(
        split, metrics, names, per_class, y_true, y_pred, row_scores, first, win_true, True
    )


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


@dataclass
class EvaluationReport:
    """What :func:`evaluation_report` computed; :meth:`write` puts it on disk.

    Attributes:
        split: the split scored.
        metrics: the figures (``metrics.json``).
        class_names: the model's classes.
        per_class: precision, recall, F1, support, AP and ROC-AUC per class.
        y_true, y_pred: per example: class indices, or multi-hot rows (multi-label, at 0.5).
        scores: per example: the mean of its windows' class scores ``(examples, classes)``.
        examples: one row per example (catalog row) with its ``source`` and ``group``.
        window_true: per window: class indices or multi-hot rows.
        multilabel: whether the model is multi-label.
    """

    split: str
    metrics: dict[str, Any]
    class_names: np.ndarray
    per_class: pd.DataFrame
    y_true: np.ndarray
    y_pred: np.ndarray
    scores: np.ndarray
    examples: pd.DataFrame
    window_true: np.ndarray
    multilabel: bool

    def text(self) -> str:
        """``report.txt``: the headline figures, their intervals and the per-class table."""
        m, n, w = self.metrics, len(self.y_true), len(self.window_true)
        if self.multilabel:
            return (
                f"split: {self.split}   examples: {n}   windows: {w}   (multi-label, threshold 0.5)\n"
                f"macro F1: {m['macro_f1']:.4f}   weighted F1: {m['weighted_f1']:.4f}   "
                f"subset accuracy: {m['accuracy']:.4f}   mAP: {m['map']:.4f}   "
                f"macro ROC-AUC: {m['macro_roc_auc']:.4f}\n"
                + (
                    f"one label per example, the highest score: macro F1 {m['argmax_macro_f1']:.4f}   "
                    f"accuracy {m['argmax_accuracy']:.4f}\n"
                    if "argmax_macro_f1" in m
                    else ""
                )
                + f"{_ci_line(m)}\n"
                + self.per_class.to_string(index=False, float_format=lambda v: f"{v:.4f}")
                + "\n"
            )
        present = np.unique(np.concatenate([self.y_true, self.y_pred]))
        table = classification_report(
            self.y_true,
            self.y_pred,
            labels=present,
            target_names=self.class_names[present].tolist(),
            digits=4,
            zero_division=0,
        )
        return (
            f"split: {self.split}   examples: {n}   windows: {w}\n"
            f"macro F1: {m['macro_f1']:.4f}   weighted F1: {m['weighted_f1']:.4f}   "
            f"accuracy: {m['accuracy']:.4f}\nmacro AP: {m['cmap']:.4f}   macro ROC-AUC: "
            f"{m['macro_roc_auc']:.4f}   top-1: {m['top1']:.4f}\n{_ci_line(m)}\n{table}"
        )

    def write(self, out: str | os.PathLike[str]) -> Path:
        """``metrics.json``, ``per_class.csv``, ``report.txt``, ``pr_curves.png``,
        ``predictions.csv``, ``pred_labels.npy`` / ``true_labels.npy`` and, single-label,
        ``confusion_matrix.csv`` / ``.png``, each written atomically into ``out``."""
        out_dir = Path(out)
        out_dir.mkdir(parents=True, exist_ok=True)
        names, k = self.class_names, len(self.class_names)
        write_csv(out_dir / "per_class.csv", self.per_class, index=False, float_format="%.4f")
        write_text(out_dir / "report.txt", self.text())
        truth = self.y_true if self.multilabel else np.eye(k, dtype=bool)[self.y_true]
        save_pr_curves(
            truth,
            self.scores,
            list(names),
            out_dir / "pr_curves.png",
            title=_pr_title(self.split, self.metrics),
        )
        if self.multilabel:
            labels = (self.y_pred, self.y_true)
            preds = pd.DataFrame(
                {
                    "source": self.examples["source"].to_numpy(),
                    "true": [";".join(names[t]) for t in self.y_true],
                    "pred": [";".join(names[q]) for q in self.y_pred],
                }
            )
            write_csv(out_dir / "predictions.csv", preds, index=False)
        else:
            cm = confusion_matrix(self.y_true, self.y_pred, labels=np.arange(k))
            write_csv(out_dir / "confusion_matrix.csv", pd.DataFrame(cm, index=names, columns=names))
            save_confusion_matrix(
                cm,
                list(names),
                out_dir / "confusion_matrix.png",
                title=f"{self.split}: macro F1 {self.metrics['macro_f1']:.3f} (n={len(self.y_true)})",
            )
            labels = (names[self.y_pred], names[self.y_true])
            preds = pd.DataFrame(
                {
                    "source": self.examples["source"].to_numpy(),
                    "true": names[self.y_true],
                    "pred": names[self.y_pred],
                    "score": self.scores.max(axis=1),
                }
            )
            write_csv(out_dir / "predictions.csv", preds, index=False, float_format="%.4f")
        for fname, arr in zip(("pred_labels.npy", "true_labels.npy"), labels, strict=True):
            with atomic_path(out_dir / fname) as tmp, open(tmp, "wb") as fh:
                np.save(fh, arr)
        write_json(out_dir / "metrics.json", self.metrics)
        return out_dir


def _single_label_report(
    spec: Any, st: Store, idx: pd.DataFrame, probs: np.ndarray, lookup: dict[str, int], split: str
) -> EvaluationReport:
    k = spec.num_classes
    win_true = idx["label"].map(lookup).to_numpy()
    win_pred = probs.argmax(axis=1)
    # per example: average the probabilities of its windows
    row_probs = pd.DataFrame(probs).groupby(idx["row"].to_numpy(), sort=True).mean().to_numpy()
    rows = idx.groupby("row", sort=True).first()
    y_true = rows["label"].map(lookup).to_numpy()
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
    names = np.array(spec.class_names)
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=np.arange(k), zero_division=0)
    per_class = pd.DataFrame({"class": names, "precision": p, "recall": r, "f1": f, "support": s})
    return EvaluationReport(
        split, metrics, names, per_class, y_true, y_pred, row_probs, rows, win_true, False
    )


def evaluation_report(
    run: str | os.PathLike[str],
    *,
    split: str = "test",
    store: Store | str | os.PathLike[str] | None = None,
    batch_size: int = 64,
    device: str = "auto",
    thresholds: str | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    progress: bool = True,
) -> EvaluationReport:
    """The figures of :func:`evaluate`, computed and returned, nothing written (but for
    ``RUN/thresholds.json`` when ``thresholds`` asks for them)."""
    if n_boot < 0:
        raise ConfigError(f"n_boot={n_boot} must be >= 0")
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
    probs = _window_probs(net, st, pos, batch_size, device, progress, f"evaluate {split}")
    multi = spec.task == "multilabel"
    report = (_multilabel_report if multi else _single_label_report)(spec, st, idx, probs, lookup, split)
    if thresholds is not None:
        report.metrics["thresholds"] = _thresholds(
            net,
            st,
            thresholds,
            lookup,
            batch_size,
            device,
            progress,
            run_dir,
            split,
            probs,
            report.window_true,
        )
    ranking, curves = _ranking(
        report.y_true, report.scores, report.class_names, _groups(report.examples), n_boot, seed, multi=multi
    )
    report.metrics.update(ranking)
    report.per_class = pd.concat([report.per_class, curves], axis=1)
    return report


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

    The figures are computed by :func:`evaluation_report`, then written by
    :meth:`EvaluationReport.write` to ``out`` (default ``RUN/eval-<split>``).

    Returns:
        The metrics (also written to ``metrics.json``).

    Raises:
        RunError: the run has no model, or the store's audio settings differ from the model's.
        DataError: the split has no windows.
    """
    report = evaluation_report(
        run,
        split=split,
        store=store,
        batch_size=batch_size,
        device=device,
        thresholds=thresholds,
        n_boot=n_boot,
        seed=seed,
        progress=progress,
    )
    out_dir = report.write(Path(out) if out is not None else Path(run) / f"eval-{split}")
    metrics = report.metrics
    if split == "test" and out is None:
        write_json(Path(run) / "metrics.json", metrics)
    if report.multilabel:
        log.info(
            "%s (multi-label): macro F1 %.4f, mAP %.4f over %d example(s); report: %s",
            split,
            metrics["macro_f1"],
            metrics["map"],
            len(report.y_true),
            out_dir,
        )
    else:
        log.info(
            "%s: macro F1 %.4f, weighted F1 %.4f, accuracy %.4f over %d example(s); report: %s",
            split,
            metrics["macro_f1"],
            metrics["weighted_f1"],
            metrics["accuracy"],
            len(report.y_true),
            out_dir,
        )
    return metrics
