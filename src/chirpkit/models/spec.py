"""The model spec that travels with every checkpoint and export, and the model file format.

A saved model (``model.pt``) is a plain dict — ``{"format", "spec", "state_dict"}`` — that
``torch.load(weights_only=True)`` reads; the spec alone rebuilds the whole preprocessing
(sample rate, window, feature front-end or embedding model) and the architecture, so
``evaluate``, ``detect`` and ``export`` need nothing else (:func:`chirpkit.models.load_model`).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from chirpkit._version import __version__
from chirpkit.config import FeatureConfig
from chirpkit.errors import RunError
from chirpkit.utils.io import atomic_path

__all__ = ["MODEL_FORMAT", "ModelSpec", "read_model_file", "save_model"]

MODEL_FORMAT = "chirpkit-model/1"


@dataclass
class ModelSpec:
    """Everything needed to rebuild a model and feed it the right input."""

    architecture: str
    class_names: list[str]
    sample_rate: int
    window_s: float
    features: dict[str, Any]
    model_params: dict[str, Any] = field(default_factory=dict)
    background_labels: list[str] = field(default_factory=list)
    conditioning: list[dict[str, Any]] = field(default_factory=list)
    task: str = "multiclass"
    chirpkit_version: str = __version__

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def window_samples(self) -> int:
        return round(self.window_s * self.sample_rate)

    def feature_config(self) -> FeatureConfig:
        return FeatureConfig.model_validate(self.features)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSpec:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


def save_model(path: str | os.PathLike[str], net: nn.Module, spec: ModelSpec | None = None) -> Path:
    """Save ``{"format", "spec", "state_dict"}`` atomically (readable with ``weights_only=True``).

    ``spec`` defaults to ``net.spec`` (a :class:`chirpkit.models.ClassifierNet` carries its own)."""
    spec = spec if spec is not None else net.spec  # type: ignore[assignment]
    assert isinstance(spec, ModelSpec)
    state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
    with atomic_path(path) as tmp:
        torch.save({"format": MODEL_FORMAT, "spec": spec.to_dict(), "state_dict": state}, tmp)
    return Path(path)


def read_model_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``{"format", "spec", "state_dict"}`` dict of a ``model.pt`` (or a run folder's).

    Raises:
        RunError: no model there (a run that did not finish says so), or the file is not a
            readable chirpkit model (truncated, other bytes, another format).
    """
    p = Path(path)
    if p.is_dir():
        p = p / "model.pt"
    status = p.parent / "run.json"
    if not p.is_file() and p.name == "model.pt" and status.is_file():
        raise RunError(
            f"run {p.parent} has no model.pt: its training did not finish (see {status}); "
            f"continue it with `chirpkit train STORE --out {p.parent} --resume`"
        )
    if not p.is_file():
        raise RunError(
            f"no model at {p}; give a run folder made by `chirpkit train`/`fit` (it holds model.pt) "
            "or the model file itself"
        )
    try:
        blob = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch.load fails in many ways on bytes that are not its own
        raise RunError(
            f"{p} cannot be read as a chirpkit model (truncated or not a model file: "
            f"{type(exc).__name__}: {str(exc)[:160]}); retrain, or copy the file again"
        ) from exc
    if not isinstance(blob, dict) or blob.get("format") != MODEL_FORMAT:
        raise RunError(f"{p} is not a chirpkit model file (format {MODEL_FORMAT})")
    if not isinstance(blob.get("spec"), dict) or not isinstance(blob.get("state_dict"), dict):
        raise RunError(f"{p} is a damaged chirpkit model file (no spec or weights); retrain it")
    return blob
