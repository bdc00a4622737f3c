"""Torch datasets over a prepared store (imports torch; kept apart from the light data modules)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from chirpkit.data.store import Store

__all__ = ["WindowDataset", "split_positions"]


def split_positions(store: Store, split: str | None) -> np.ndarray:
    """Positions (rows of ``store.index``) of the windows in ``split`` (all when ``None``)."""
    if split is None:
        return np.arange(len(store.index))
    if "split" not in store.index.columns:
        return np.zeros(0, dtype=np.int64)
    return np.flatnonzero(store.index["split"].to_numpy() == split)


class WindowDataset(Dataset[tuple[torch.Tensor, int]]):
    """``(waveform (window_samples,) float32, class index)`` for windows of a store.

    The stored margin is cropped away symmetrically: evaluation and detection see exactly the
    window; training-time shifts (augmentation) read into the margin instead.
    """

    def __init__(self, store: Store, positions: np.ndarray, class_names: Sequence[str]) -> None:
        self.store = store
        self.positions = np.asarray(positions, dtype=np.int64)
        lookup = {c: i for i, c in enumerate(class_names)}
        labels = store.index["label"].to_numpy()[self.positions]
        self.targets = np.array([lookup.get(lab, -1) for lab in labels], dtype=np.int64)
        self.margin = store.margin_samples
        self.window = store.window_samples

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        seg = self.store.read(int(self.positions[i]))
        y = seg[self.margin : self.margin + self.window]
        return torch.from_numpy(np.ascontiguousarray(y)), int(self.targets[i])
