"""The model registry: one way in (:func:`create_model`), as in timm.

Every registered model maps its input (``ModelEntry.input``: a spectrogram batch
``(batch, in_chans, n_bins, frames)`` for all but the embedding heads) to logits
``(batch, num_classes)`` and has ``forward_features`` (feature map) and ``forward_head``
(pooling + classifier, ``pre_logits=True`` for embeddings) plus ``num_features``.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from chirpkit.errors import ConfigError

__all__ = ["create_model", "list_models", "model_info", "register_model"]


@dataclass(frozen=True)
class ModelEntry:
    name: str
    fn: Callable[..., nn.Module]
    description: str
    input: str = "spectrogram"


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(
    name: str, *, description: str = "", input: str = "spectrogram"
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator that registers a model factory ``fn(num_classes, in_chans, **kwargs)``.

    ``input`` says what the model takes when it is not a spectrogram batch."""

    def wrap(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        doc = description or (fn.__doc__ or "").strip().split("\n")[0]
        _REGISTRY[name] = ModelEntry(name, fn, doc, input)
        return fn

    return wrap


def list_models(pattern: str | None = None) -> list[str]:
    """Names of registered models, optionally filtered by a shell-style pattern."""
    names = sorted(_REGISTRY)
    return [n for n in names if pattern is None or fnmatch.fnmatch(n, pattern)]


def model_info(name: str) -> ModelEntry:
    if name.startswith("timm/"):
        from chirpkit.models.timm_models import create_timm

        timm_name = name[len("timm/") :]
        return ModelEntry(name, lambda **kw: create_timm(timm_name, **kw), f"timm {timm_name}")
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(
            f"unknown model {name!r}; registered models: {', '.join(list_models())} "
            "(and any timm model as timm/<name>)"
        ) from None


def create_model(name: str, *, num_classes: int, in_chans: int = 1, **kwargs: Any) -> nn.Module:
    """Build a registered model.

    Raises:
        ConfigError: unknown name (the message lists the registered ones) or bad keyword.
    """
    entry = model_info(name)
    if num_classes < 1:
        raise ConfigError(f"num_classes={num_classes} must be >= 1")
    if kwargs.get("pretrained") and not (name.startswith("timm/") or "timm" in entry.description):
        raise ConfigError(
            f"model {name!r} has no pretrained weights; set model.pretrained=false or pick a timm model"
        )
    if not kwargs.get("pretrained"):
        kwargs.pop("pretrained", None)
        kwargs.pop("pretrained_file", None)
    try:
        return entry.fn(num_classes=num_classes, in_chans=in_chans, **kwargs)
    except TypeError as exc:
        raise ConfigError(f"model {name!r}: {exc} (check model.params in the config)") from exc
