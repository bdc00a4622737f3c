"""Torch datasets over a prepared store (imports torch; kept apart from the light data modules)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from chirpkit.data.store import Store

__all__ = ["FeatureDataset", "WindowDataset", "feature_cache", "split_positions", "targets_of"]


def split_positions(store: Store, split: str | None) -> np.ndarray:
    """Positions (rows of ``store.index``) of the windows in ``split`` (all when ``None``)."""
    if split is None:
        return np.arange(len(store.index))
    if "split" not in store.index.columns:
        return np.zeros(0, dtype=np.int64)
    return np.flatnonzero(store.index["split"].to_numpy() == split)


def targets_of(
    store: Store, positions: np.ndarray, class_names: Sequence[str], *, multilabel: bool
) -> np.ndarray:
    """Targets of the windows at ``positions``: class indices ``(n,)`` int64 (−1 for a label not in
    ``class_names``), or with ``multilabel`` multi-hot rows ``(n, classes)`` float32 from ``labels``."""
    pos = np.asarray(positions, dtype=np.int64)
    lookup = {c: i for i, c in enumerate(class_names)}
    if not multilabel:
        labels = store.index["label"].to_numpy()[pos]
        return np.array([lookup.get(lab, -1) for lab in labels], dtype=np.int64)
    hot = np.zeros((len(pos), len(class_names)), dtype=np.float32)
    for row, labs in enumerate(store.index["labels"].to_numpy()[pos]):
        for lab in labs:
            if lab in lookup:
                hot[row, lookup[lab]] = 1.0
    return hot


class WindowDataset(Dataset[tuple[torch.Tensor, Any]]):
    """``(waveform (window_samples,) float32, target)`` for windows of a store; the target is a
    class index, or a multi-hot ``(classes,)`` row (``targets`` from :func:`targets_of`; by default
    the class indices of ``class_names``).

    The stored margin is cropped away symmetrically: evaluation and detection see exactly the
    window. With ``with_margin=True`` (training) the whole segment is returned, so that time
    shifts and speed changes (:meth:`chirpkit.augment.Augmenter.read`) use real audio.
    """

    def __init__(
        self,
        store: Store,
        positions: np.ndarray,
        class_names: Sequence[str] | None = None,
        *,
        targets: np.ndarray | None = None,
        with_margin: bool = False,
    ) -> None:
        self.store = store
        self.with_margin = with_margin
        self.positions = np.asarray(positions, dtype=np.int64)
        if targets is None:
            targets = targets_of(store, self.positions, class_names or store.classes, multilabel=False)
        self.targets = np.asarray(targets)
        self.margin = store.margin_samples
        self.window = store.window_samples

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, Any]:
        seg = self.store.read(int(self.positions[i]))
        y = seg if self.with_margin else seg[self.margin : self.margin + self.window]
        t = self.targets[i]
        return torch.from_numpy(np.ascontiguousarray(y)), (torch.from_numpy(t) if np.ndim(t) else int(t))


class FeatureDataset(Dataset[tuple[torch.Tensor, Any]]):
    """``(front-end output (1, bins, frames) float32, target)`` from a feature cache; ``targets``
    are class indices or multi-hot rows."""

    def __init__(self, features: np.ndarray, positions: np.ndarray, targets: np.ndarray) -> None:
        self.features = features
        self.positions = np.asarray(positions, dtype=np.int64)
        self.targets = np.asarray(targets)

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, Any]:
        x = np.asarray(self.features[int(self.positions[i])], dtype=np.float32)
        t = self.targets[i]
        return torch.from_numpy(x), (torch.from_numpy(t) if np.ndim(t) else int(t))


def feature_cache(
    store: Store,
    frontend: torch.nn.Module,
    settings: dict[str, object],
    *,
    batch_size: int = 64,
    progress: bool = True,
) -> np.ndarray:
    """Front-end output for every window of ``store`` (centre crops), computed once and kept in
    ``store/features/<key>.npy`` (float16, memory-mapped); ``settings`` (the feature config and
    sample rate) are part of the key, so a changed setting computes a new cache."""
    from tqdm.auto import tqdm

    from chirpkit.utils.io import atomic_path, stable_hash

    key = stable_hash(
        {
            "store": store.meta["catalog_fingerprint"],
            "audio": store.meta["audio"],
            "windows": len(store),
            "features": settings,
        },
        length=20,
    )
    path = store.root / "features" / f"{key}.npy"
    if path.is_file():
        return np.load(path, mmap_mode="r")
    path.parent.mkdir(parents=True, exist_ok=True)
    m, w = store.margin_samples, store.window_samples
    first = frontend(torch.from_numpy(store.read_many(np.array([0]))[:, m : m + w]))
    shape = (len(store), *first.shape[1:])
    with atomic_path(path) as tmp:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=shape)
        with torch.inference_mode():
            for lo in tqdm(
                range(0, len(store), batch_size), desc="cache features", unit="batch", disable=not progress
            ):
                pos = np.arange(lo, min(lo + batch_size, len(store)))
                out[lo : lo + len(pos)] = frontend(
                    torch.from_numpy(store.read_many(pos)[:, m : m + w])
                ).numpy()
        out.flush()
        del out
    return np.load(path, mmap_mode="r")
