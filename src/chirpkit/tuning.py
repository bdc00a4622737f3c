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
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from chirpkit._util import atomic_path, write_json, write_text
from chirpkit.config import Config, load_config
from chirpkit.data.store import Store
from chirpkit.errors import ConfigError, DataError

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


def cross_validate(
    store: Store | str | os.PathLike[str],
    *,
    config: Config | None = None,
    out: str | os.PathLike[str] | None = None,
    folds: Sequence[int] | None = None,
    progress: bool = False,
    keep_runs: bool = False,
) -> dict[str, Any]:
    """Train once per fold; return ``{"folds", "macro_f1", "mean", "std", "last_macro_f1", "last_mean",
    "last_std"}`` (also written to ``OUT/cv.json`` when ``out`` is given; ``OUT/foldK`` are the runs).

    ``macro_f1`` is each fold's best epoch — what model selection (and :func:`tune`) compares, but
    chosen on the fold it reports, so slightly optimistic; ``last_macro_f1`` is the final epoch's
    score on the held-out fold, the unbiased estimate to report.
    """
    from chirpkit.training import train

    config = config if config is not None else load_config()
    st = store if isinstance(store, Store) else Store(store)
    ids = list(folds) if folds is not None else _folds(st)
    root = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="chirpkit-cv-"))
    scores, last = [], []
    for f in ids:
        run = root / f"fold{f}"
        s = train(fold_view(st, f), out=run, config=config, progress=progress)
        scores.append(float(s["best_val_macro_f1"]))
        logged = pd.read_csv(run / "logs" / "metrics.csv").dropna(subset=["val_macro_f1"])
        last.append(float(logged["val_macro_f1"].iloc[-1]))
        if not keep_runs:
            shutil.rmtree(run / "checkpoints", ignore_errors=True)
    if out is None:
        shutil.rmtree(root, ignore_errors=True)
    res = {
        "folds": ids,
        "macro_f1": scores,
        "mean": float(np.mean(scores)),
        "std": float(np.std(scores)),
        "last_macro_f1": last,
        "last_mean": float(np.mean(last)),
        "last_std": float(np.std(last)),
    }
    log.info(
        "cross-validation over %d fold(s): macro F1 %.4f ± %.4f (last epoch), %.4f ± %.4f (best epoch)",
        len(ids),
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
    from chirpkit.plots import _save, plt

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
    from chirpkit.training import train

    cfg = config or Config()
    st = store if isinstance(store, Store) else Store(store)
    ids = list(folds) if folds is not None else _folds(st)
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    space = dict(space or DEFAULT_SPACE)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name="chirpkit",
        storage=f"sqlite:///{root / 'study.db'}",
        load_if_exists=True,
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=3),
    )
    extra = {"train.epochs": epochs} if epochs else {}

    def objective(trial: Any) -> float:
        params = _suggest(trial, space)
        trial_cfg = load_config(base=cfg, overrides={**params, **extra})
        scores: list[float] = []
        with tempfile.TemporaryDirectory(prefix="chirpkit-trial-") as tmp:
            for step, f in enumerate(ids):
                s = train(fold_view(st, f), out=Path(tmp) / f"fold{f}", config=trial_cfg, progress=progress)
                scores.append(float(s["best_val_macro_f1"]))
                trial.report(float(np.mean(scores)), step)
                if trial.should_prune():
                    raise optuna.TrialPruned()
        trial.set_user_attr("fold_macro_f1", scores)
        log.info("trial %d: CV macro F1 %.4f  %s", trial.number, float(np.mean(scores)), params)
        return float(np.mean(scores))

    finished = len([t for t in study.trials if t.state.is_finished()])
    if finished < trials:
        study.optimize(objective, n_trials=trials - finished, timeout=timeout_s, gc_after_trial=True)
    table = study.trials_dataframe()
    table["state"] = table["state"].astype(str)
    with atomic_path(root / "trials.csv") as tmp:
        table.to_csv(tmp, index=False)
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
        "folds": ids,
        "storage": str(root / "study.db"),
    }
    if final:
        from chirpkit.evaluation import evaluate

        view = copy.copy(st)
        view.index = st.index.assign(split=np.where(st.index["split"] == "test", "test", "train"))
        train(view, out=root / "final", config=best_cfg, progress=progress)
        if (view.index["split"] == "test").any():
            summary["final_test"] = {
                k: v
                for k, v in evaluate(root / "final", progress=progress).items()
                if k in ("macro_f1", "weighted_f1", "accuracy", "n_examples")
            }
    write_json(root / "tune_summary.json", summary)
    log.info(
        "tune: best CV macro F1 %.4f (trial %d of %d, %d pruned); %s",
        best.value,
        best.number,
        len(study.trials),
        summary["pruned"],
        root / "best_config.yaml",
    )
    return summary
