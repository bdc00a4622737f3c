"""Classical baselines (scikit-learn) on pooled features, with grouped cross-validation.

Features per window (centre crop): ``mfcc`` (20 MFCCs, mean and standard deviation over time: 40
numbers), ``logmel`` (64 log-mel bands, mean and standard deviation: 128) or ``birdnet`` (the
1,024-d BirdNET V2.4 embedding). Models: ``knn`` (5 neighbours), ``tree`` (decision tree),
``logreg`` (logistic regression) and ``mlp`` (one hidden layer of 256, early stopping), each after
standardisation; class-balanced where scikit-learn allows it; logistic regression chooses its
regularisation ``C`` from :data:`LOGREG_C` by the grouped cross-validation below. ``prototype`` is
nearest-class-mean probing: cosine similarity to each class's mean L2-normalised feature.

Cross-validation runs over the train and val windows, grouped: the store's ``fold`` column
(``split.folds``) when there is one, else ``GroupKFold`` over groups. The model is then refit on
them and scored on the test split (per example, window probabilities averaged), like ``evaluate``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from chirpkit.config import FeatureConfig
from chirpkit.data.store import Store
from chirpkit.errors import ConfigError, DataError
from chirpkit.utils.io import write_json

__all__ = ["BASELINE_FEATURES", "BASELINE_MODELS", "baseline", "pooled_features"]

log = logging.getLogger("chirpkit")

BASELINE_MODELS = ("knn", "tree", "logreg", "mlp", "prototype")
#: the inverse regularisation strengths logistic regression chooses from, by grouped CV
LOGREG_C = (0.001, 0.01, 0.1, 1.0, 10.0)


class Prototype:
    """Nearest class mean by cosine similarity (prototype probing): each class is the mean of its
    L2-normalised training rows; scores are a softmax over the similarities (scikit-learn API)."""

    def __init__(self, temperature: float = 0.05) -> None:
        self.temperature = temperature

    def fit(self, x: np.ndarray, y: np.ndarray) -> Prototype:
        xn = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        self.classes_ = np.unique(y)
        means = np.stack([xn[y == c].mean(axis=0) for c in self.classes_])
        self.means_ = means / np.maximum(np.linalg.norm(means, axis=1, keepdims=True), 1e-12)
        return self

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        xn = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        z = xn @ self.means_.T / self.temperature
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return np.asarray(e / e.sum(axis=1, keepdims=True))

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.classes_[self.predict_proba(x).argmax(axis=1)])


BASELINE_FEATURES = ("mfcc", "logmel", "birdnet")


def pooled_features(store: Store, kind: str, *, batch_size: int = 64, progress: bool = True) -> np.ndarray:
    """``(windows, dims)`` pooled features of every store window."""
    if kind == "birdnet":
        from chirpkit.models.embeddings import embedding_cache

        return np.asarray(embedding_cache(store, progress=progress), dtype=np.float32)
    from chirpkit.features import build_frontend

    feats = FeatureConfig(kind="mfcc" if kind == "mfcc" else "logmel", n_mels=64, n_mfcc=20)
    frontend = build_frontend(feats, store.sample_rate)
    m, w = store.margin_samples, store.window_samples
    out = []
    with torch.inference_mode():
        for lo in range(0, len(store), batch_size):
            pos = np.arange(lo, min(lo + batch_size, len(store)))
            s = frontend(torch.from_numpy(store.read_many(pos)[:, m : m + w]))[:, 0]  # (n, bins, frames)
            out.append(torch.cat([s.mean(-1), s.std(-1)], dim=1).numpy())
    return np.concatenate(out)


def _model(name: str, seed: int, c: float = 1.0) -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.tree import DecisionTreeClassifier

    models = {
        "knn": lambda: KNeighborsClassifier(n_neighbors=5),
        "tree": lambda: DecisionTreeClassifier(class_weight="balanced", random_state=seed),
        "logreg": lambda: LogisticRegression(class_weight="balanced", max_iter=3000, C=c),
        "mlp": lambda: MLPClassifier(
            hidden_layer_sizes=(256,), early_stopping=True, max_iter=500, random_state=seed
        ),
    }
    if name == "prototype":
        return Prototype()
    if name not in models:
        raise ConfigError(f"unknown baseline model {name!r}; use one of {BASELINE_MODELS}")
    return make_pipeline(StandardScaler(), models[name]())


def _example_scores(clf: Any, x: np.ndarray, idx: pd.DataFrame, lookup: dict[str, int]) -> dict[str, float]:
    from chirpkit.metrics import headline

    probs = np.zeros((len(x), len(lookup)))
    probs[:, [lookup[c] for c in clf.classes_]] = clf.predict_proba(x)
    rows = pd.DataFrame(probs).groupby(idx["row"].to_numpy(), sort=True).mean()
    y_true = idx.groupby("row", sort=True).first()["label"].map(lookup).to_numpy()
    return headline(y_true, rows.to_numpy())


def baseline(
    store: Store | str | os.PathLike[str],
    *,
    model: str = "logreg",
    features: str = "mfcc",
    folds: int = 5,
    seed: int = 0,
    out: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Grouped cross-validated macro F1 of a scikit-learn baseline, and its test scores.

    Returns:
        ``{"model", "features", "cv_macro_f1": [per fold], "cv_mean", "test": {...}}`` (also written
        to ``OUT/baseline_<model>_<features>.json``).
    """
    from sklearn.model_selection import GroupKFold

    if features not in BASELINE_FEATURES:
        raise ConfigError(f"unknown baseline features {features!r}; use one of {BASELINE_FEATURES}")
    st = store if isinstance(store, Store) else Store(store)
    if "split" not in st.index.columns:
        raise DataError(f"store {st.root} has no split column; run chirpkit split and prepare first")
    x_all = pooled_features(st, features, progress=progress)
    lookup = {c: i for i, c in enumerate(st.classes)}
    dev_mask = st.index["split"].isin(["train", "val"]).to_numpy()
    dev = np.flatnonzero(dev_mask)
    idx = st.index.iloc[dev].reset_index(drop=True)
    y = idx["label"].to_numpy()
    if "fold" in idx.columns and (idx["fold"] >= 0).all():
        fold_ids = idx["fold"].to_numpy()
        splits = [(np.flatnonzero(fold_ids != f), np.flatnonzero(fold_ids == f)) for f in np.unique(fold_ids)]
        how = "the split's folds"
    else:
        n = min(folds, idx["group"].nunique())
        splits = list(GroupKFold(n_splits=n).split(np.zeros(len(y)), y, idx["group"].to_numpy()))
        how = f"GroupKFold({n}) over groups"
    # logistic regression chooses its regularisation by the same grouped CV; the others have one
    grid = LOGREG_C if model == "logreg" else (1.0,)
    by_c: dict[float, list[float]] = {}
    for c in grid:
        by_c[c] = []
        for tr, va in splits:
            clf = _model(model, seed, c).fit(x_all[dev[tr]], y[tr])
            by_c[c].append(_example_scores(clf, x_all[dev[va]], idx.iloc[va], lookup)["macro_f1"])
    best_c = max(grid, key=lambda c: (np.mean(by_c[c]), -abs(np.log10(c))))  # ties: nearest to C=1
    cv = by_c[best_c]
    result: dict[str, Any] = {
        "model": model,
        "features": features,
        "cv": how,
        "cv_macro_f1": cv,
        "cv_mean": float(np.mean(cv)),
        "cv_std": float(np.std(cv)),
    }
    if model == "logreg":
        result["C"] = best_c
        result["cv_mean_by_C"] = {str(c): float(np.mean(v)) for c, v in by_c.items()}
    test = np.flatnonzero(st.index["split"].to_numpy() == "test")
    if len(test):
        clf = _model(model, seed, best_c).fit(x_all[dev], y)
        result["test"] = _example_scores(clf, x_all[test], st.index.iloc[test].reset_index(drop=True), lookup)
    if out is not None:
        write_json(Path(out) / f"baseline_{model}_{features}.json", result)
    log.info(
        "baseline %s on %s: CV macro F1 %.4f ± %.4f (%s)%s",
        model,
        features,
        result["cv_mean"],
        result["cv_std"],
        how,
        f"; test {result['test']['macro_f1']:.4f}" if "test" in result else "",
    )
    return result
