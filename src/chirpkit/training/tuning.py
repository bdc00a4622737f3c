"""Grouped cross-validation and ``chirpkit tune`` (Optuna).

* :func:`cross_validate` trains once per fold of the store's ``fold`` column (``chirpkit split
  --set split.folds=K``): fold *k* is the validation set, the other folds train, the test split
  stays out. The score is each fold's best validation macro F1.
* :func:`tune` searches learning rate, weight decay, batch size, model, augmentation strengths
  and mel settings with Optuna's TPE sampler; every trial is cross-validated over the folds,
  and trials whose running mean falls below the median of earlier trials at the same fold are
  pruned (``MedianPruner``). The study lives in ``OUT/study.db`` (SQLite), so running the same
  command again resumes it. Outputs: ``best_config.yaml``, ``trials.csv``, ``tune.png`` and
  ``tune_summary.json``; with ``final=True`` the best config is retrained on every non-test
  window (``OUT/final``) and evaluated on the test split.

The search space is a mapping of dotted config keys to ``[choices...]`` (categorical) or
``{"low": a, "high": b, "log": bool}`` (float, or int when both bounds are ints); see
:data:`DEFAULT_SPACE`.
"""

from __future__ import annotations

import copy
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from chirpkit.config import Config, load_config
from chirpkit.data.store import Store
from chirpkit.errors import ConfigError, DataError, RunError
from chirpkit.metrics import multilabel_scores, scores
from chirpkit.models.predict import Predictor
from chirpkit.training.loop import checkpoint_network, train
from chirpkit.utils.io import write_csv, write_json, write_text
from chirpkit.utils.plots import save_confusion_matrix
from chirpkit.utils.threads import check_stop

__all__ = ["DEFAULT_SPACE", "cross_validate", "fold_view", "tune"]

log = logging.getLogger("chirpkit")

DEFAULT_SPACE: dict[str, Any] = {
    "train.lr": {"low": 1e-4, "high": 3e-3, "log": True},
    "train.weight_decay": {"low": 1e-5, "high": 1e-1, "log": True},
    "train.batch_size": [16, 32, 64],
    "model.name": ["small_cnn", "deep_cnn"],
    "augment.noise.p": {"low": 0.0, "high": 0.6},
    "augment.gain.p": {"low": 0.0, "high": 0.8},
    "augment.freq_mask.p": {"low": 0.0, "high": 0.8},
    "augment.time_mask.p": {"low": 0.0, "high": 0.8},
    "augment.mixup.p": {"low": 0.0, "high": 0.5},
    "augment.noise.min_snr_db": {"low": 0.0, "high": 15.0},
    "augment.freq_mask.max_bins": [5, 10, 20],
    "augment.time_mask.max_frames": [5, 10, 20],
    "features.n_mels": [32, 64, 96, 128],
    "features.hop_length": [160, 320, 640],
}


def fold_view(store: Store, fold: int) -> Store:
    """The store with ``split`` rewritten for one fold: that fold validates, the others train,
    test stays test (no decoding; the parts are shared)."""
    if "fold" not in store.index.columns:
        raise DataError(
            f"store {store.root} has no fold column: run `chirpkit split CATALOG --set split.folds=5` and "
            "`chirpkit prepare` again (decoded audio is reused)"
        )
    view = copy.copy(store)
    split = store.index["split"].to_numpy()
    folds = store.index["fold"].to_numpy()
    view.index = store.index.assign(
        split=np.where(split == "test", "test", np.where(folds == fold, "val", "train"))
    )
    return view


def _folds(store: Store) -> list[int]:
    if "fold" not in store.index.columns:
        fold_view(store, 0)  # raises the explanatory error
    return sorted(int(f) for f in store.index["fold"].unique() if f >= 0)


def _fold_predictions(run: Path, view: Store, fold: int, names: list[str]) -> pd.DataFrame:
    """Per-example probabilities of the fold's held-out examples, from its last epoch (nothing
    on the fold chose those weights)."""
    net, spec, _ = checkpoint_network(run / "checkpoints" / "last.ckpt")
    pos = np.flatnonzero(view.index["split"].to_numpy() == "val")
    probs = Predictor.from_network(net, spec).on_store(view, pos)
    idx = view.index.iloc[pos].reset_index(drop=True)
    by_row = pd.DataFrame(probs, columns=spec.class_names).groupby(idx["row"].to_numpy(), sort=True).mean()
    first = idx.groupby("row", sort=True).first()
    out = by_row.reindex(columns=names, fill_value=0.0)
    out.insert(0, "fold", fold)
    out.insert(0, "labels", [";".join(v) for v in first["labels"]])
    out.insert(0, "true", first["label"].to_numpy())
    out.insert(0, "source", first["source"].to_numpy())
    out.index.name = "row"
    return out


def _pooled(oof: pd.DataFrame, names: list[str], root: Path | None, multilabel: bool) -> dict[str, Any]:
    """One macro F1 and per-class figures over every example predicted out of fold."""
    lookup = {c: i for i, c in enumerate(names)}
    if multilabel:  # every label of an example, scores thresholded at 0.5
        truth = np.zeros((len(oof), len(names)), dtype=bool)
        for i, labs in enumerate(oof["labels"]):
            for lab in labs.split(";"):
                if lab in lookup:
                    truth[i, lookup[lab]] = True
        res = {**multilabel_scores(truth, oof[names].to_numpy()), "n_examples": len(oof)}
        if root is not None:
            write_csv(root / "oof_predictions.csv", oof, float_format="%.5f")
        return res
    known = oof["true"].isin(names).to_numpy()
    y_true = oof.loc[known, "true"].map(lookup).to_numpy()
    y_pred = oof.loc[known, names].to_numpy().argmax(1)
    res = {**scores(y_true, y_pred, len(names)), "n_examples": int(known.sum())}
    p, r, f, sup = precision_recall_fscore_support(
        y_true, y_pred, labels=np.arange(len(names)), zero_division=0
    )
    per_class = pd.DataFrame({"class": names, "precision": p, "recall": r, "f1": f, "support": sup})
    if root is not None:
        table = oof.assign(pred=np.array(names)[oof[names].to_numpy().argmax(1)])
        write_csv(root / "oof_predictions.csv", table, float_format="%.5f")
        write_csv(root / "oof_per_class.csv", per_class, index=False, float_format="%.4f")
        save_confusion_matrix(
            confusion_matrix(y_true, y_pred, labels=np.arange(len(names))),
            names,
            root / "oof_confusion_matrix.png",
            title=f"out-of-fold: macro F1 {res['macro_f1']:.3f} (n={res['n_examples']})",
        )
    return {**res, "per_class": per_class.to_dict("records")}


def cross_validate(
    store: Store | str | os.PathLike[str],
    *,
    config: Config | None = None,
    out: str | os.PathLike[str] | None = None,
    folds: Sequence[int] | None = None,
    progress: bool = False,
    keep_runs: bool = False,
) -> dict[str, Any]:
    """Train once per fold; every non-test example is then predicted once, by the model whose
    training never saw its group (the fold's last epoch).

    Returns ``{"folds", "macro_f1", "mean", "std", "last_macro_f1", "last_mean", "last_std",
    "oof"}``, also written to ``OUT/cv.json`` when ``out`` is given (``OUT/foldK`` are the runs;
    ``OUT/oof_predictions.csv``, ``oof_per_class.csv`` and ``oof_confusion_matrix.png`` the pooled
    out-of-fold predictions).

    ``macro_f1`` is each fold's best epoch — what model selection (and :func:`tune`) compares, but
    chosen on the fold it reports, so slightly optimistic; ``last_macro_f1`` is the final epoch's
    score on the held-out fold, and ``oof`` one macro F1 (with per-class figures) over all
    held-out examples pooled: the unbiased estimates to report.
    """
    config = config if config is not None else load_config()
    st = store if isinstance(store, Store) else Store(store)
    ids = list(folds) if folds is not None else _folds(st)
    root = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="chirpkit-cv-"))
    scores_, last, oof = [], [], []
    try:
        for f in ids:
            run = root / f"fold{f}"
            view = fold_view(st, f)
            s = train(view, out=run, config=config, progress=progress)
            scores_.append(float(s["best_val_macro_f1"]))
            logged = pd.read_csv(run / "logs" / "metrics.csv").dropna(subset=["val_macro_f1"])
            last.append(float(logged["val_macro_f1"].iloc[-1]))
            oof.append(_fold_predictions(run, view, f, st.classes))
            if not keep_runs:
                shutil.rmtree(run / "checkpoints", ignore_errors=True)
        pooled = _pooled(
            pd.concat(oof), st.classes, root if out is not None else None, config.train.loss == "bce"
        )
    finally:
        if out is None:
            shutil.rmtree(root, ignore_errors=True)
    res = {
        "folds": ids,
        "macro_f1": scores_,
        "mean": float(np.mean(scores_)),
        "std": float(np.std(scores_)),
        "last_macro_f1": last,
        "last_mean": float(np.mean(last)),
        "last_std": float(np.std(last)),
        "oof": pooled,
    }
    log.info(
        "cross-validation over %d fold(s): out-of-fold macro F1 %.4f over %d example(s); per fold "
        "%.4f ± %.4f (last epoch), %.4f ± %.4f (best epoch)",
        len(ids),
        pooled["macro_f1"],
        pooled["n_examples"],
        res["last_mean"],
        res["last_std"],
        res["mean"],
        res["std"],
    )
    if out is not None:
        write_json(root / "cv.json", res)
    return res


def _suggest(trial: Any, space: Mapping[str, Any]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for key, dom in space.items():
        if isinstance(dom, list):
            params[key] = trial.suggest_categorical(key, dom)
        elif isinstance(dom, Mapping) and {"low", "high"} <= set(dom):
            lo, hi, use_log = dom["low"], dom["high"], bool(dom.get("log", False))
            if isinstance(lo, int) and isinstance(hi, int):
                params[key] = trial.suggest_int(key, lo, hi, log=use_log)
            else:
                params[key] = trial.suggest_float(key, float(lo), float(hi), log=use_log)
        else:
            raise ConfigError(
                f"search space entry {key!r}: use [choices] or {{low, high[, log]}}, got {dom!r}"
            )
    return params


def _plot(trials: pd.DataFrame, path: Path) -> None:
    from chirpkit.utils.plots import _save, plt

    done = trials[trials["state"] == "COMPLETE"]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.plot(done["number"], done["value"], "o", label="trial (mean CV macro F1)")
    if len(done):
        ax.plot(done["number"], done["value"].cummax(), "-", label="best so far")
    pruned = trials[trials["state"] == "PRUNED"]
    if len(pruned):
        ax.plot(pruned["number"], np.zeros(len(pruned)), "x", color="grey", label="pruned")
    ax.set_xlabel("trial")
    ax.set_ylabel("macro F1")
    ax.set_title("hyperparameter search")
    ax.legend(fontsize=8)
    _save(fig, path)


def tune(
    store: Store | str | os.PathLike[str],
    *,
    out: str | os.PathLike[str],
    config: Config | None = None,
    trials: int = 20,
    timeout_s: float | None = None,
    space: Mapping[str, Any] | None = None,
    epochs: int | None = None,
    folds: Sequence[int] | None = None,
    final: bool = False,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, Any]:
    """Optuna search with grouped k-fold CV; resumes from ``OUT/study.db``.

    Args:
        trials: trials to have in the study in all (a resumed study runs only the missing ones).
        timeout_s: stop starting new trials after this long.
        space: the search space (default :data:`DEFAULT_SPACE`).
        epochs: epochs per fold and trial (default: ``config.train.epochs``).
        folds: the folds each trial trains on (default: all of the split's folds).
        final: retrain the best config on all non-test windows and evaluate it on test.
    """
    try:
        import optuna
    except ImportError as exc:
        raise ConfigError("chirpkit tune needs Optuna: pip install 'chirpkit[tune]'") from exc
    cfg = config or Config()
    st = store if isinstance(store, Store) else Store(store)
    ids = list(folds) if folds is not None else _folds(st)
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    space = dict(space or DEFAULT_SPACE)
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # failed trials are logged below, without tracebacks
    study = optuna.create_study(
        study_name="chirpkit",
        storage=f"sqlite:///{root / 'study.db'}",
        load_if_exists=True,
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=3),
    )
    extra = {"train.epochs": epochs} if epochs else {}
    objective = _objective(st, cfg, space, extra, ids, progress=progress)
    # a failed trial (diverged, or interrupted by Ctrl-C) does not count: a resumed study runs it again
    counted = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    finished = len([t for t in study.trials if t.state in counted])
    if finished < trials:
        study.optimize(
            objective,
            n_trials=trials - finished,
            timeout=timeout_s,
            gc_after_trial=True,
            catch=(RunError,),  # a configuration that diverges is a failed trial, not a failed study
            callbacks=[lambda study, trial: check_stop()],  # a Ctrl-C lost in garbage collection
        )
    summary, best_cfg = _study_summary(study, root, cfg, extra, ids)
    if final and (scores := _final_run(st, root / "final", best_cfg, progress=progress)) is not None:
        summary["final_test"] = scores
    write_json(root / "tune_summary.json", summary)
    log.info(
        "tune: best CV macro F1 %.4f (trial %d of %d, %d pruned); %s",
        summary["best_cv_macro_f1"],
        summary["best_trial"],
        summary["trials"],
        summary["pruned"],
        root / "best_config.yaml",
    )
    return summary


def _objective(
    st: Store,
    cfg: Config,
    space: Mapping[str, Any],
    extra: Mapping[str, Any],
    ids: Sequence[int],
    *,
    progress: bool,
) -> Callable[[Any], float]:
    """Optuna's objective: a trial's mean validation macro F1 over the folds, reported after each
    fold so that the median pruner can stop it."""
    import optuna

    def objective(trial: Any) -> float:
        params = _suggest(trial, space)
        trial_cfg = load_config(base=cfg, overrides={**params, **extra})
        scores: list[float] = []
        with tempfile.TemporaryDirectory(prefix="chirpkit-trial-") as tmp:
            for step, f in enumerate(ids):
                check_stop()
                try:
                    s = train(
                        fold_view(st, f), out=Path(tmp) / f"fold{f}", config=trial_cfg, progress=progress
                    )
                except RunError as exc:
                    log.warning("trial %d failed: %s (%s)", trial.number, exc, params)
                    raise
                scores.append(float(s["best_val_macro_f1"]))
                trial.report(float(np.mean(scores)), step)
                if trial.should_prune():
                    raise optuna.TrialPruned()
        trial.set_user_attr("fold_macro_f1", scores)
        log.info("trial %d: CV macro F1 %.4f  %s", trial.number, float(np.mean(scores)), params)
        return float(np.mean(scores))

    return objective


def _study_summary(
    study: Any, root: Path, cfg: Config, extra: Mapping[str, Any], ids: Sequence[int]
) -> tuple[dict[str, Any], Config]:
    """Write ``trials.csv``, ``tune.png`` and ``best_config.yaml``; the summary and the best config.

    Raises:
        DataError: no trial completed.
    """
    import optuna

    table = study.trials_dataframe()
    table["state"] = table["state"].astype(str)
    write_csv(root / "trials.csv", table, index=False)
    _plot(table, root / "tune.png")
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        raise DataError("no trial completed; see the log, or run more trials")
    best = study.best_trial
    best_cfg = load_config(base=cfg, overrides={**best.params, **extra})
    write_text(root / "best_config.yaml", best_cfg.to_yaml())
    summary: dict[str, Any] = {
        "trials": len(study.trials),
        "completed": len(complete),
        "pruned": len([t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]),
        "best_trial": best.number,
        "best_cv_macro_f1": best.value,
        "best_params": best.params,
        "folds": list(ids),
        "storage": str(root / "study.db"),
    }
    return summary, best_cfg


def _final_run(st: Store, out: Path, best_cfg: Config, *, progress: bool) -> dict[str, Any] | None:
    """Retrain the best config on every non-test window; its test scores (``None`` without test)."""
    from chirpkit.evaluation.report import evaluate

    view = copy.copy(st)
    view.index = st.index.assign(split=np.where(st.index["split"] == "test", "test", "train"))
    train(view, out=out, config=best_cfg, progress=progress)
    if not (view.index["split"] == "test").any():
        return None
    keys = ("macro_f1", "weighted_f1", "accuracy", "n_examples")
    return {k: v for k, v in evaluate(out, progress=progress).items() if k in keys}
