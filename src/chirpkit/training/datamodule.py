"""The data side of training: a store's train/val windows as a Lightning data module.

What a batch holds (waveform windows, cached features or cached embeddings) is the model input's
business (:mod:`chirpkit.models.inputs`); this module picks the windows, their targets, the sampler and the
loaders. For distillation, training items also carry a teacher's class probabilities
(:class:`SoftTargets`), and windows of unlabelled audio join the labelled ones.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from chirpkit.utils.compat import ensure_torchvision_importable

ensure_torchvision_importable()  # before Lightning imports torchvision (see chirpkit.utils.compat)

import lightning.pytorch as L  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.utils.data import ConcatDataset, DataLoader, Dataset, WeightedRandomSampler  # noqa: E402

from chirpkit.config import TrainConfig  # noqa: E402
from chirpkit.data.dataset import split_positions, targets_of  # noqa: E402
from chirpkit.data.store import Store  # noqa: E402
from chirpkit.models.inputs import ModelInput  # noqa: E402

__all__ = ["SoftTargets", "StoreDataModule", "class_weights", "num_workers"]


@dataclass
class SoftTargets:
    """A teacher's class probabilities for distillation: ``train`` rows follow the store's train
    positions; each ``unlabelled`` entry is ``(store, positions, probabilities)``."""

    train: np.ndarray
    unlabelled: list[tuple[Store, np.ndarray, np.ndarray]] = field(default_factory=list)


class _WithTeacher(Dataset[tuple[Any, ...]]):
    """``(x, target, teacher probabilities, labelled)`` items; unlabelled items have target −1
    (or an all-zero row, multi-label) and ``labelled = False``."""

    def __init__(self, base: Dataset[tuple[torch.Tensor, Any]], soft: np.ndarray, labelled: bool) -> None:
        self.base = base
        self.soft = np.asarray(soft, dtype=np.float32)
        self.labelled = labelled

    def __len__(self) -> int:
        return len(self.soft)

    def __getitem__(self, i: int) -> tuple[Any, ...]:
        x, target = self.base[i]
        return x, target, torch.from_numpy(self.soft[i]), self.labelled


def class_weights(targets: np.ndarray, num_classes: int) -> list[float]:
    """Balanced weights ``n / (k * count_c)`` from class indices ``(n,)`` (absent classes count as
    1), or per label from multi-hot rows ``(n, k)``: ``n / (k * positives_c)``."""
    if targets.ndim == 2:
        counts = targets.sum(axis=0).astype(np.float64)
    else:
        counts = np.bincount(targets[targets >= 0], minlength=num_classes).astype(np.float64)
    return (len(targets) / (num_classes * np.maximum(counts, 1.0))).tolist()


def num_workers(setting: int | str) -> int:
    """``train.num_workers``: ``auto`` leaves two cores to the main process (at most 4 workers)."""
    if setting == "auto":
        cpus = os.cpu_count() or 1
        return min(4, max(0, cpus - 2))
    return int(setting)


class StoreDataModule(L.LightningDataModule):
    """Train and val windows of ``store`` for a model input; targets from ``class_names``."""

    def __init__(
        self,
        store: Store,
        model_input: ModelInput,
        class_names: list[str],
        config: TrainConfig,
        *,
        multilabel: bool = False,
        progress: bool = True,
        soft: SoftTargets | None = None,
    ) -> None:
        super().__init__()
        self.store = store
        self.soft = soft
        self.multilabel = multilabel
        self.input = model_input
        self.cfg = config
        self.train_pos = split_positions(store, "train")
        self.val_pos = split_positions(store, "val")
        self.train_targets = targets_of(store, self.train_pos, class_names, multilabel=multilabel)
        self.val_targets = targets_of(store, self.val_pos, class_names, multilabel=multilabel)
        self.num_classes = len(class_names)
        self.progress = progress
        self._gen = torch.Generator().manual_seed(config.seed)

    def setup(self, stage: str | None = None) -> None:
        self.input.cache(self.store, progress=self.progress)
        for st, _, _ in self.soft.unlabelled if self.soft is not None else []:
            self.input.cache(st, progress=self.progress)

    def class_weights(self) -> list[float] | None:
        if self.cfg.class_weights != "balanced":
            return None
        return class_weights(self.train_targets, self.num_classes)

    def _loader_kw(self) -> dict[str, Any]:
        workers = num_workers(self.cfg.num_workers)
        return {
            "num_workers": workers,
            "persistent_workers": workers > 0,
            "pin_memory": torch.cuda.is_available(),
        }

    def _train_dataset(self) -> tuple[Dataset[Any], np.ndarray]:
        """The training items, and the class index of each (−1 where unknown: unlabelled audio)."""
        ds: Dataset[Any] = self.input.dataset(self.store, self.train_pos, self.train_targets, training=True)
        t = self.train_targets if self.train_targets.ndim == 1 else self.train_targets.argmax(1)
        if self.soft is None:
            return ds, t
        parts: list[Dataset[Any]] = [_WithTeacher(ds, self.soft.train, labelled=True)]
        index = [t]
        for st, pos, probs in self.soft.unlabelled:
            none = (
                np.zeros((len(pos), self.num_classes), np.float32)
                if self.multilabel
                else np.full(len(pos), -1, np.int64)
            )
            parts.append(
                _WithTeacher(self.input.dataset(st, pos, none, training=True), probs, labelled=False)
            )
            index.append(np.full(len(pos), -1, np.int64))
        return ConcatDataset(parts), np.concatenate(index)

    def train_dataloader(self) -> DataLoader[Any]:
        ds, t = self._train_dataset()
        sampler = None
        if self.cfg.sampler == "weighted":  # count(label)^-power per window: 0.5 = square-root balancing
            counts = np.bincount(t[t >= 0], minlength=self.num_classes)
            per_window = np.maximum(counts[np.maximum(t, 0)], 1.0) ** -self.cfg.sampler_power
            per_window[t < 0] = per_window[t >= 0].mean() if (t >= 0).any() else 1.0  # unlabelled audio
            sampler = WeightedRandomSampler(
                per_window.tolist(), num_samples=len(t), replacement=True, generator=self._gen
            )
        return DataLoader(
            ds,
            batch_size=self.cfg.batch_size,
            shuffle=sampler is None,
            sampler=sampler,
            generator=self._gen,
            drop_last=len(t) > self.cfg.batch_size,
            **self._loader_kw(),
        )

    def val_dataloader(self) -> Any:
        if not len(self.val_pos):
            return []
        ds = self.input.dataset(self.store, self.val_pos, self.val_targets, training=False)
        return DataLoader(ds, batch_size=self.cfg.batch_size * 2, shuffle=False, **self._loader_kw())
