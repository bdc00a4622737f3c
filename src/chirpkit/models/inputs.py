"""How each model family is fed: from a store to training batches, and from waveforms to logits.

A model's registry entry declares what it takes (``model_info(name).input``); this module turns
that declaration into the few things that differ between families, so that one task
(:class:`chirpkit.training.task.ClassifierTask`), one run writer and one predictor factory serve them all:

* :class:`WaveformInput` — spectrogram models. Batches are store windows (with their margins
  while training, for time shifts); augmentation and the feature front-end run inside the step, on
  the training device. With ``cached_features`` the front-end output is computed once per window
  (:func:`chirpkit.data.dataset.feature_cache`) and only spectrogram-stage augmentation applies.
* :class:`EmbeddingInput` — heads on a pretrained model's embedding. Batches are cached
  embeddings (:mod:`chirpkit.models.embeddings`); with several views per window, training draws one at
  random (an embedding-level time-shift augmentation) and evaluation uses the centre view. At
  prediction time the embedding model runs first.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from chirpkit.augment import Augmenter
from chirpkit.config import AugmentConfig
from chirpkit.data.dataset import FeatureDataset, WindowDataset, feature_cache
from chirpkit.data.store import Store
from chirpkit.features import build_frontend
from chirpkit.models import ClassifierNet, ModelSpec, model_info
from chirpkit.models.embeddings import SCORE_BLOCK, EmbeddingCache, embed_windows, embedder, gather

__all__ = ["EmbeddingDataset", "EmbeddingInput", "ModelInput", "WaveformInput", "model_input"]

LogitsFn = Callable[[np.ndarray], np.ndarray]


class ModelInput:
    """What a model family needs besides its network (see the module docstring)."""

    #: ``spectrogram`` or ``embedding``
    kind = ""
    #: whether the trained network maps waveforms to logits by itself (ONNX/TorchScript export)
    exportable = False

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec

    def cache(self, store: Store, *, progress: bool) -> None:
        """Compute (or reuse) what the datasets read besides the store (cached features or
        embeddings); call it before :meth:`dataset`."""

    def dataset(
        self, store: Store, positions: np.ndarray, targets: np.ndarray, *, training: bool
    ) -> Dataset[tuple[torch.Tensor, Any]]:
        raise NotImplementedError

    def augmenter(self, config: AugmentConfig, seed: int) -> Augmenter | None:
        return None

    def train_logits(
        self, net: nn.Module, x: torch.Tensor, target: torch.Tensor, augmenter: Augmenter | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return net(x), target

    def eval_logits(self, net: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return net(x)

    def logits_fn(self, net: nn.Module, device: torch.device) -> LogitsFn:
        """``waveforms (n, window_samples) float32 → logits (n, classes)`` for prediction."""
        raise NotImplementedError

    def store_logits(
        self,
        net: nn.Module,
        store: Store,
        positions: np.ndarray,
        *,
        device: torch.device,
        batch_size: int = 64,
        progress: bool = False,
    ) -> np.ndarray:
        """Logits ``(len(positions), classes)`` of store windows (margins cropped)."""
        fn = self.logits_fn(net, device)
        m, w = store.margin_samples, store.window_samples
        batches = [
            fn(store.read_many(positions[i : i + batch_size])[:, m : m + w])
            for i in tqdm(range(0, len(positions), batch_size), desc="predict", disable=not progress)
        ]
        return np.concatenate(batches) if batches else np.zeros((0, self.spec.num_classes), np.float32)


class WaveformInput(ModelInput):
    """Spectrogram models: waveform windows in, front-end inside the network."""

    kind = "spectrogram"
    exportable = True

    def __init__(self, spec: ModelSpec, *, margin_samples: int = 0, cached_features: bool = False) -> None:
        super().__init__(spec)
        self.margin_samples = margin_samples
        self.cached_features = cached_features
        self._features: dict[Path, np.ndarray] = {}

    def dataset(
        self, store: Store, positions: np.ndarray, targets: np.ndarray, *, training: bool
    ) -> Dataset[tuple[torch.Tensor, Any]]:
        if self.cached_features:
            if store.root not in self._features:
                raise RuntimeError("WaveformInput.cache(store) must run before cached datasets are built")
            return FeatureDataset(self._features[store.root], positions, targets)
        return WindowDataset(store, positions, targets=targets, with_margin=training)

    def cache(self, store: Store, *, progress: bool) -> None:
        """The front-end output of every store window, with ``cached_features``."""
        if self.cached_features and store.root not in self._features:
            feats = self.spec.feature_config()
            self._features[store.root] = feature_cache(
                store,
                build_frontend(feats, store.sample_rate),
                {"features": feats.model_dump(), "sample_rate": store.sample_rate},
                progress=progress,
            )

    def augmenter(self, config: AugmentConfig, seed: int) -> Augmenter | None:
        return Augmenter(
            config,
            sample_rate=self.spec.sample_rate,
            window_samples=self.spec.window_samples,
            margin_samples=self.margin_samples,
            seed=seed,
        )

    def train_logits(
        self, net: nn.Module, x: torch.Tensor, target: torch.Tensor, augmenter: Augmenter | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        assert isinstance(net, ClassifierNet)
        if self.cached_features:  # batches are front-end output: only the spectrogram stage applies
            return net.forward_spectrogram(x, augmenter), target
        if augmenter is None:  # a bare training step outside fit(): centre crop, no augmentation
            m = self.margin_samples
            return net(x[:, m : x.shape[1] - m]), target
        x = augmenter.waveform(augmenter.read(x))
        x, target = augmenter.mixup(x, target)
        return net.forward_train(x, augmenter), target

    def eval_logits(self, net: nn.Module, x: torch.Tensor) -> torch.Tensor:
        assert isinstance(net, ClassifierNet)
        return net.forward_spectrogram(x) if self.cached_features else net(x)

    def logits_fn(self, net: nn.Module, device: torch.device) -> LogitsFn:
        assert isinstance(net, ClassifierNet)
        net = net.optimize_for_inference().to(device)

        @torch.inference_mode()
        def run(x: np.ndarray) -> np.ndarray:
            return net(torch.from_numpy(x).to(device, non_blocking=True)).float().cpu().numpy()

        return run


class EmbeddingDataset(Dataset[tuple[torch.Tensor, Any]]):
    """``(embedding (dim,) float32, target)`` from cached embeddings ``(windows, views, dim)``;
    with ``random_view`` one view is drawn per item (torch's seeded generator), else the centre."""

    def __init__(
        self, embeddings: np.ndarray, positions: np.ndarray, targets: np.ndarray, *, random_view: bool
    ) -> None:
        self.embeddings = embeddings
        self.positions = np.asarray(positions, dtype=np.int64)
        self.targets = np.asarray(targets)
        self.random_view = random_view and embeddings.shape[1] > 1

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, Any]:
        view = int(torch.randint(self.embeddings.shape[1], (1,))) if self.random_view else 0
        x = torch.from_numpy(
            np.array(self.embeddings[self.positions[i], view], np.float32)
        )  # a copy: maps are read-only
        t = self.targets[i]
        return x, (torch.from_numpy(t) if np.ndim(t) else int(t))


class EmbeddingInput(ModelInput):
    """Heads on a pretrained model's embedding: cached embeddings in."""

    kind = "embedding"

    def __init__(self, spec: ModelSpec, *, embedding: str, views: int = 1, shift_s: float = 0.5) -> None:
        super().__init__(spec)
        self.embedding = embedding
        self.views = views
        self.shift_s = shift_s
        self._embeddings: dict[Path, np.ndarray] = {}

    def cache(self, store: Store, *, progress: bool) -> None:
        if store.root not in self._embeddings:
            cache = EmbeddingCache(store, model=self.embedding, views=self.views, shift_s=self.shift_s)
            self._embeddings[store.root] = cache.load(progress=progress)

    def embeddings(self, store: Store, *, progress: bool = False) -> np.ndarray:
        """``(windows, views, dim)`` for every window of ``store``, cached on first use."""
        self.cache(store, progress=progress)
        return self._embeddings[store.root]

    def dataset(
        self, store: Store, positions: np.ndarray, targets: np.ndarray, *, training: bool
    ) -> Dataset[tuple[torch.Tensor, Any]]:
        if store.root not in self._embeddings:
            raise RuntimeError("EmbeddingInput.cache(store) must run before its datasets are built")
        return EmbeddingDataset(self._embeddings[store.root], positions, targets, random_view=training)

    def logits_fn(self, net: nn.Module, device: torch.device) -> LogitsFn:
        model: list[Any] = []  # the embedding model loads on first use (scoring a store needs none)
        net = net.eval().to(device)
        sample_rate = self.spec.sample_rate

        @torch.inference_mode()
        def run(x: np.ndarray) -> np.ndarray:
            if not model:
                model.append(embedder(self.embedding))
            emb = torch.from_numpy(embed_windows(model[0], x, sample_rate)).to(device)
            return net(emb).float().cpu().numpy()

        return run

    def store_logits(
        self,
        net: nn.Module,
        store: Store,
        positions: np.ndarray,
        *,
        device: torch.device,
        batch_size: int = 64,
        progress: bool = False,
    ) -> np.ndarray:
        """From the store's embedding cache (centre view): the embedding model runs only for
        windows not cached yet."""
        emb = EmbeddingCache(store, model=self.embedding).load(progress=progress)
        net = net.eval().to(device)
        out = []
        with torch.inference_mode():  # a block at a time: memory stays put whatever the store
            for i in range(0, len(positions), SCORE_BLOCK):
                x = torch.from_numpy(gather(emb, positions[i : i + SCORE_BLOCK])).to(device)
                out.append(net(x).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.spec.num_classes), np.float32)


def model_input(
    spec: ModelSpec,
    *,
    margin_samples: int = 0,
    cached_features: bool = False,
    views: int = 1,
    shift_s: float = 0.5,
) -> ModelInput:
    """The :class:`ModelInput` that the registry entry of ``spec.architecture`` declares."""
    entry = model_info(spec.architecture)
    if entry.input == "embedding":
        assert entry.embedding is not None
        return EmbeddingInput(spec, embedding=entry.embedding, views=views, shift_s=shift_s)
    return WaveformInput(spec, margin_samples=margin_samples, cached_features=cached_features)
