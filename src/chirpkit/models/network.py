"""One way to build and load any model family's network from its spec.

:func:`build_network` looks at the registry entry of ``spec.architecture``: a spectrogram model gets
the feature front-end in front of it (:class:`ClassifierNet`, waveforms → logits); an embedding
model is the head itself (embeddings → logits). :func:`load_model` reads a ``model.pt`` and does the
same, so every family is saved and loaded the same way.
"""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from chirpkit.errors import RunError
from chirpkit.models._registry import create_model, model_info
from chirpkit.models.classifier import ClassifierNet
from chirpkit.models.spec import ModelSpec, read_model_file

__all__ = ["build_network", "load_model", "load_network", "warm_start"]


def build_network(
    spec: ModelSpec, *, pretrained: bool = False, pretrained_file: str | None = None
) -> nn.Module:
    """The trainable network of ``spec``: :class:`ClassifierNet` (waveforms → logits) for a
    spectrogram model, the head (embeddings ``(batch, dim)`` → logits) for an embedding model."""
    if model_info(spec.architecture).input == "spectrogram":
        return ClassifierNet(spec, pretrained=pretrained, pretrained_file=pretrained_file)
    # specs written by chirpkit 0.1 also carried the embedding name among the model parameters
    params = {k: v for k, v in spec.model_params.items() if k != "embedding"}
    return create_model(spec.architecture, num_classes=spec.num_classes, **params)


def load_network(blob: dict[str, Any]) -> tuple[nn.Module, ModelSpec]:
    """``(network in eval mode, spec)`` from the dict of :func:`read_model_file`."""
    spec = ModelSpec.from_dict(blob["spec"])
    if "norm.weight" in blob["state_dict"] and model_info(spec.architecture).input == "embedding":
        # an embedding head saved by chirpkit 0.1, whose input norm was a layer norm
        spec.model_params.setdefault("norm", "layer")
    net = build_network(spec)
    try:
        net.load_state_dict(blob["state_dict"])
    except RuntimeError as exc:
        raise RunError(
            f"the weights in this model file do not fit its spec ({spec.architecture}, "
            f"{spec.num_classes} classes): {str(exc).splitlines()[0][:200]}"
        ) from exc
    return net.eval(), spec


def load_model(
    path: str | os.PathLike[str], *, map_location: str | torch.device = "cpu", optimize: bool = False
) -> nn.Module:
    """Load a saved model (a ``model.pt`` or the run folder that holds it), in eval mode.

    A spectrogram model comes back as a :class:`ClassifierNet` (waveforms ``(batch, samples)`` →
    logits), an embedding head as itself (embeddings → logits); the spec is ``net.spec`` or, for a
    head, the file's. ``optimize=True`` applies :meth:`ClassifierNet.optimize_for_inference`.
    """
    net, _ = load_network(read_model_file(path))
    net = net.to(map_location)
    if optimize and isinstance(net, ClassifierNet):
        net.optimize_for_inference()
    return net


def warm_start(net: nn.Module, spec: ModelSpec, source: str | os.PathLike[str]) -> dict[str, Any]:
    """Start ``net`` from the weights of another saved model of the same architecture.

    Tensors of equal shape are copied. Output layers, whose first dimension is the number of
    classes, are copied row by row for the classes both models know; rows of new classes keep
    their fresh initialisation. So a model can be retrained with more classes (e.g. reviewed
    detections of a new call type) without starting over.

    Returns:
        ``{"source", "copied", "class_rows", "new_classes", "skipped"}``.

    Raises:
        RunError: another architecture, or nothing fits.
    """
    blob = read_model_file(source)
    old = ModelSpec.from_dict(blob["spec"])
    if old.architecture != spec.architecture:
        raise RunError(
            f"model.init_from={source}: its architecture is {old.architecture!r}, this run's is "
            f"{spec.architecture!r}; warm starts need the same model.name"
        )
    rows = {c: i for i, c in enumerate(old.class_names)}
    pairs = [(i, rows[c]) for i, c in enumerate(spec.class_names) if c in rows]
    new_idx = torch.tensor([i for i, _ in pairs], dtype=torch.long)
    old_idx = torch.tensor([j for _, j in pairs], dtype=torch.long)
    state = net.state_dict()
    # the tensors whose shape follows the number of classes: those of a probe with one more class
    probe = build_network(replace(spec, class_names=[*spec.class_names, "\0probe"])).state_dict()
    per_class = {n for n, v in probe.items() if n in state and v.shape != state[n].shape}
    # what the network sets up itself (a head's copy of BirdNET's rows for *this* run's classes)
    keep = set(getattr(net, "warm_start_keep", ()))
    copied, class_rows, skipped = [], [], []
    for name, value in blob["state_dict"].items():
        mine = state.get(name)
        if mine is None or name in keep:
            skipped.append(name)
        elif name in per_class and mine.shape[1:] == value.shape[1:] and value.shape[0] == old.num_classes:
            mine = mine.clone()
            mine[new_idx] = value[old_idx].to(mine.dtype)
            state[name] = mine
            class_rows.append(name)
        elif mine.shape == value.shape and name not in per_class:
            state[name] = value.to(mine.dtype)
            copied.append(name)
        else:
            skipped.append(name)
    if not copied and not class_rows:
        raise RunError(f"model.init_from={source}: no weight fits this model; train from scratch")
    net.load_state_dict(state)
    return {
        "source": str(source),
        "copied": len(copied),
        "class_rows": class_rows,
        "new_classes": [c for c in spec.class_names if c not in rows],
        "skipped": skipped,
    }
