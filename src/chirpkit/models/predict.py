"""Batched inference shared by evaluate and detect (no Lightning needed at prediction time).

A *predictor* turns waveforms ``(n, window_samples)`` into class probabilities ``(n, classes)``
and carries the model spec. :func:`load_predictor` is the one factory: a run folder / ``model.pt``
of any model family (the network from the spec, fed as its registry entry declares: see
:mod:`chirpkit.models.inputs`), a TorchScript file (``*.ts``) or an ONNX file (``*.onnx``, through
onnxruntime); the two exports written by ``chirpkit export`` carry the spec inside them.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from chirpkit.data.store import Store
from chirpkit.errors import ConfigError, RunError
from chirpkit.models import ClassifierNet, ModelSpec, load_network, read_model_file
from chirpkit.models.inputs import model_input

__all__ = ["Predictor", "load_predictor", "pick_device", "predict_proba"]


def pick_device(device: str | torch.device | None = "auto") -> torch.device:
    """``auto`` → CUDA if available, else Apple MPS if available, else CPU."""
    if device is None or device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(device)


@torch.inference_mode()
def predict_proba(
    net: ClassifierNet, batches: Iterable[np.ndarray], *, device: torch.device | None = None
) -> Iterator[np.ndarray]:
    """Class scores ``(n, num_classes)`` for each batch of waveforms ``(n, samples)``: softmax
    probabilities, or per-class sigmoids for a multi-label model (``spec.task``)."""
    dev = device or next(net.parameters()).device
    net = net.to(dev).eval()
    multilabel = net.spec.task == "multilabel"
    for batch in batches:
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(dev, non_blocking=True)
        logits = net(x).float()
        probs = torch.sigmoid(logits) if multilabel else torch.softmax(logits, dim=1)
        yield probs.cpu().numpy()


class Predictor:
    """Callable ``waveforms (n, samples) float32 → probabilities (n, classes)`` with a ``spec``.

    :meth:`on_store` scores windows of a prepared store; a head on embeddings reads the store's
    embedding cache there instead of running the embedding model again."""

    def __init__(self, spec: ModelSpec, fn: Any, kind: str, identity: str, store_logits: Any = None) -> None:
        self.spec = spec
        self._fn = fn
        self._store_logits = store_logits
        self.kind = kind  #: the model's input ("spectrogram" or "embedding"), "torchscript" or "onnx"
        self.identity = identity  #: a digest of the model file (resume keys)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return np.asarray(self._fn(np.ascontiguousarray(batch, dtype=np.float32)))

    def on_store(
        self,
        store: Store,
        positions: np.ndarray,
        *,
        batch_size: int = 64,
        progress: bool = False,
        desc: str = "",
    ) -> np.ndarray:
        """Probabilities ``(len(positions), classes)`` of store windows (margins cropped)."""
        if self._store_logits is not None:
            return np.asarray(_activation(self.spec)(self._store_logits(store, positions, progress)))
        m, w = store.margin_samples, store.window_samples
        batches = (
            self(store.read_many(positions[i : i + batch_size])[:, m : m + w])
            for i in range(0, len(positions), batch_size)
        )
        n = -(-len(positions) // batch_size)
        out = list(tqdm(batches, total=n, desc=desc or "predict", unit="batch", disable=not progress))
        return np.concatenate(out) if out else np.zeros((0, self.spec.num_classes), np.float32)

    @classmethod
    def from_network(
        cls, net: torch.nn.Module, spec: ModelSpec, *, device: str = "auto", identity: str = ""
    ) -> Predictor:
        """A predictor over an in-memory network of any family."""
        dev = pick_device(device)
        inp = model_input(spec)
        logits = inp.logits_fn(net, dev)
        act = _activation(spec)
        return cls(
            spec,
            lambda x: act(logits(x)),
            inp.kind,
            identity,
            lambda store, pos, progress: inp.store_logits(net, store, pos, device=dev, progress=progress),
        )


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _sigmoid(logits: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(logits, -80.0, 80.0)))  # no overflow warning far from 0


def _activation(spec: ModelSpec) -> Any:
    return _sigmoid if spec.task == "multilabel" else _softmax


def load_predictor(
    model: str | os.PathLike[str], *, device: str = "auto", species: list[str] | None = None
) -> Predictor:
    """A predictor from a run folder, ``model.pt``, a TorchScript ``.ts`` or an ONNX ``.onnx``
    file, or BirdNET V2.4 itself (``"birdnet"``: its own scores for ``species``, BirdNET labels,
    default all; see :mod:`chirpkit.models.birdnet_species`)."""
    from chirpkit.models.birdnet_species import BIRDNET_MODEL_NAMES, birdnet_scorer

    p = Path(model)
    if str(model).lower() in BIRDNET_MODEL_NAMES and not p.exists():
        spec, scores, identity = birdnet_scorer(species=species)
        return Predictor(spec, scores, "birdnet", identity)
    if species is not None:
        raise ConfigError(
            f"a species list or location chooses among BirdNET's species (model 'birdnet'); {model} "
            "detects the classes it was trained on"
        )
    if p.is_dir():
        p = p / "model.pt"
    if p.suffix == ".onnx":
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise RunError(
                "running an ONNX model needs onnxruntime: pip install 'chirpkit[export]' (or onnxruntime)"
            ) from exc
        if not p.is_file():
            raise RunError(f"no ONNX model at {p}")
        sess = ort.InferenceSession(str(p), providers=ort.get_available_providers())
        meta = sess.get_modelmeta().custom_metadata_map
        if "chirpkit_spec" not in meta:
            raise RunError(f"{p} carries no chirpkit spec (export it with `chirpkit export`)")
        spec = ModelSpec.from_dict(json.loads(meta["chirpkit_spec"]))
        name = sess.get_inputs()[0].name
        act = _activation(spec)
        return Predictor(spec, lambda x: act(sess.run(None, {name: x})[0]), "onnx", _digest(p))
    dev = pick_device(device)
    if p.suffix == ".ts":
        if not p.is_file():
            raise RunError(f"no TorchScript model at {p}")
        extra = {"spec.json": ""}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript is deprecated in torch 2.13
            ts = torch.jit.load(str(p), map_location=dev, _extra_files=extra)
        spec = ModelSpec.from_dict(json.loads(extra["spec.json"]))

        act = _activation(spec)

        @torch.inference_mode()
        def run_ts(x: np.ndarray) -> np.ndarray:
            return np.asarray(act(ts(torch.from_numpy(x).to(dev)).float().cpu().numpy()))

        return Predictor(spec, run_ts, "torchscript", _digest(p))
    net, spec = load_network(read_model_file(p))
    return Predictor.from_network(net, spec, device=device, identity=_digest(p))
