"""The model registry: one way in (:func:`create_model`), as in timm.

Every registered model maps its input to logits ``(batch, num_classes)`` and has
``forward_features`` (feature map) and ``forward_head`` (pooling + classifier, ``pre_logits=True``
for embeddings) plus ``num_features``. What it takes is declared once, in its entry:

* ``input="spectrogram"``: a spectrogram batch ``(batch, in_chans, n_bins, frames)``; chirpkit puts
  the feature front-end in front of it (:class:`chirpkit.models.ClassifierNet`), so the trained
  network maps waveforms to logits;
* ``input="embedding"``: an embedding batch ``(batch, dim)`` of a pretrained model named by
  ``embedding`` (e.g. ``"birdnet-v2.4"``), computed once per window and cached.

Nothing outside this module needs a model's name to know how to feed, train or load it.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from torch import nn

from chirpkit.errors import ConfigError

__all__ = ["ModelEntry", "create_model", "list_models", "model_info", "register_model", "register_prefix"]

InputKind = Literal["spectrogram", "embedding"]


@dataclass(frozen=True)
class ModelEntry:
    name: str
    fn: Callable[..., nn.Module]
    description: str
    input: InputKind = "spectrogram"
    embedding: str | None = None  #: the pretrained embedding model, for ``input="embedding"``
    pretrained: bool = False  #: whether ``pretrained=True`` (ImageNet weights) is supported


_REGISTRY: dict[str, ModelEntry] = {}
_PREFIXES: dict[str, Callable[[str], ModelEntry]] = {}


def register_model(
    name: str,
    *,
    description: str = "",
    input: InputKind = "spectrogram",
    embedding: str | None = None,
    pretrained: bool = False,
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator that registers a model factory ``fn(num_classes, in_chans, **kwargs)``."""
    if input == "embedding" and not embedding:
        raise ValueError(f"model {name!r} takes embeddings: name the embedding model (embedding=...)")

    def wrap(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        doc = description or (fn.__doc__ or "").strip().split("\n")[0]
        _REGISTRY[name] = ModelEntry(name, fn, doc, input, embedding, pretrained)
        return fn

    return wrap


def register_prefix(prefix: str, entry_for: Callable[[str], ModelEntry]) -> None:
    """Let a family answer for every name ``prefix<rest>`` (e.g. ``timm/<any timm model>``)."""
    _PREFIXES[prefix] = entry_for


def list_models(pattern: str | None = None) -> list[str]:
    """Names of registered models, optionally filtered by a shell-style pattern."""
    names = sorted(_REGISTRY)
    return [n for n in names if pattern is None or fnmatch.fnmatch(n, pattern)]


def model_info(name: str) -> ModelEntry:
    """The registry entry of ``name``.

    Raises:
        ConfigError: unknown name (the message lists the registered ones).
    """
    for prefix, entry_for in _PREFIXES.items():
        if name.startswith(prefix) and len(name) > len(prefix):
            return entry_for(name)
    try:
        return _REGISTRY[name]
    except KeyError:
        extra = "".join(f" (and {p}<name>)" for p in _PREFIXES)
        raise ConfigError(
            f"unknown model {name!r}; registered models: {', '.join(list_models())}{extra}"
        ) from None


def create_model(name: str, *, num_classes: int, in_chans: int = 1, **kwargs: Any) -> nn.Module:
    """Build a registered model.

    Raises:
        ConfigError: unknown name (the message lists the registered ones) or bad keyword.
    """
    entry = model_info(name)
    if num_classes < 1:
        raise ConfigError(f"num_classes={num_classes} must be >= 1")
    if kwargs.get("pretrained") and not entry.pretrained:
        raise ConfigError(
            f"model {name!r} has no pretrained weights; set model.pretrained=false or pick a timm model"
        )
    if not kwargs.get("pretrained"):
        kwargs.pop("pretrained", None)
        kwargs.pop("pretrained_file", None)
    try:
        return entry.fn(num_classes=num_classes, in_chans=in_chans, **kwargs)
    except (TypeError, ValueError) as exc:  # an unknown or a bad parameter
        raise ConfigError(f"model {name!r}: {exc} (check model.params in the config)") from exc
