"""Heads on pretrained embeddings (BirdNET V2.4, 1,024-d): ``birdnet_linear``, ``birdnet_mlp``,
``birdnet_prior`` (BirdNET's own classifier + a learned residual) and ``birdnet_fusion`` (BirdNET's
scores and a trained head's, mixed by a weight chosen on validation).

They are registered like every other model, with ``input="embedding"``: they take an embedding
batch ``(batch, 1024)`` instead of a spectrogram. Training one (``chirpkit train --model
birdnet_linear``) embeds the store's windows once (:mod:`chirpkit.models.embeddings`) and trains the head
through the same task as every other model.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from chirpkit.models._registry import register_model

__all__ = [
    "BIRDNET_EMBEDDING",
    "EMBEDDING_DIM",
    "EmbeddingHead",
    "FusionHead",
    "PriorHead",
    "linear_head_name",
]

log = logging.getLogger("chirpkit")

EMBEDDING_DIM = 1024
BIRDNET_EMBEDDING = "birdnet-v2.4"


class EmbeddingHead(nn.Module):
    """``(batch, 1024)`` embeddings → logits: linear, or one hidden ReLU layer with dropout.

    The input is standardised per feature (``norm="standard"``: a batch norm without affine terms
    whose running mean and variance average every training batch, i.e. the training set's
    statistics, as scikit-learn's ``StandardScaler`` before a logistic regression) — or normalised
    per example (``norm="layer"``, a layer norm, as chirpkit 0.1's heads did).
    """

    def __init__(
        self,
        num_classes: int,
        *,
        hidden: int = 0,
        dropout: float = 0.3,
        dim: int = EMBEDDING_DIM,
        norm: str = "standard",
    ) -> None:
        super().__init__()
        self.num_features = hidden or dim
        if norm not in ("standard", "layer"):
            raise ValueError(f"norm={norm!r} must be 'standard' or 'layer'")
        self.norm = (
            nn.BatchNorm1d(dim, affine=False, momentum=None) if norm == "standard" else nn.LayerNorm(dim)
        )
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
    def make(
        num_classes: int,
        in_chans: int = 1,
        dropout: float = 0.3,
        hidden: int = hidden,
        norm: str = "standard",
    ) -> nn.Module:
        return EmbeddingHead(num_classes, hidden=hidden, dropout=dropout, norm=norm)

    return make


for _name, _hidden in (("birdnet_linear", 0), ("birdnet_mlp", 256)):
    _head = "linear head" if not _hidden else f"MLP head ({_hidden} hidden)"
    register_model(
        _name,
        description=f"{_head} on BirdNET V2.4 embeddings (pip install 'chirpkit[birdnet]')",
        input="embedding",
        embedding=BIRDNET_EMBEDDING,
    )(_factory(_hidden))


#: the registered linear head over each embedding model's vectors
_LINEAR_HEADS = {BIRDNET_EMBEDDING: "birdnet_linear"}


def linear_head_name(embedding: str) -> str:
    """The registered linear head (``(batch, dim)`` → logits) on ``embedding``'s vectors."""
    if embedding not in _LINEAR_HEADS:
        raise ValueError(
            f"no linear head is registered for {embedding!r} embeddings; known: {sorted(_LINEAR_HEADS)}"
        )
    return _LINEAR_HEADS[embedding]


class _BirdNETRows(nn.Module):
    """BirdNET V2.4's dense-layer rows for the dataset's classes that name a BirdNET species
    (zero rows, ``known`` False, for the others), copied by ``init_from_spec``. A warm start
    (``model.init_from``) leaves them as this run's classes and ``label_map`` give them."""

    warm_start_keep: tuple[str, ...] = ("prior_weight", "prior_bias", "known")

    def __init__(self, num_classes: int, dim: int, label_map: dict[str, str] | str | None) -> None:
        super().__init__()
        self.label_map = label_map
        self.prior_weight: torch.Tensor
        self.prior_bias: torch.Tensor
        self.known: torch.Tensor
        self.register_buffer("prior_weight", torch.zeros(num_classes, dim))
        self.register_buffer("prior_bias", torch.zeros(num_classes))
        self.register_buffer("known", torch.zeros(num_classes, dtype=torch.bool))

    def init_from_spec(self, spec: Any) -> None:
        """Copy BirdNET's classifier rows of the classes that name a BirdNET species (through
        :mod:`chirpkit.models.taxonomy`: names, synonyms, ``label_map``); the others start from zero."""
        from chirpkit.models.birdnet import birdnet_classifier, birdnet_labels
        from chirpkit.models.taxonomy import match_classes

        match = match_classes(spec.class_names, birdnet_labels(), self.label_map)
        weight, bias = birdnet_classifier()
        with torch.no_grad():
            for i, c in enumerate(spec.class_names):
                j = match.mapping.get(c)
                if j is not None:
                    self.prior_weight[i] = torch.from_numpy(weight[j])
                    self.prior_bias[i] = float(bias[j])
                    self.known[i] = True
        log.info(
            "%s: %d of %d class(es) take BirdNET's classifier rows%s",
            spec.architecture,
            len(match.mapping),
            len(spec.class_names),
            f"; new: {match.describe_unmatched()}" if match.unmatched else "",
        )

    def prior(self, x: torch.Tensor) -> torch.Tensor:
        """BirdNET's own logits of the known classes (0 for new ones)."""
        return x @ self.prior_weight.T + self.prior_bias


class PriorHead(_BirdNETRows):
    """BirdNET's own classifier for the classes it knows, plus a learned residual.

    ``logits = s · (x @ Wᵀ + b) + (z @ Vᵀ + d)``: ``W, b`` are BirdNET V2.4's dense-layer rows of
    the dataset's classes (zero rows for classes BirdNET does not know), ``s`` a learned weight of
    BirdNET's own scores (1 at the start), ``z`` the standardised embedding and ``V, d`` a residual
    that starts at zero. So with no training the head *is* BirdNET's zero-shot classifier over the
    dataset's classes; training moves it only where the data says so, held back by an L2 pull of
    ``V`` towards zero (``l2`` for known classes, ``l2_new`` for new ones, which have no prior).

    ``norm="none"`` feeds the residual the raw embedding instead, so that the head is BirdNET's own
    dense layer fine-tuned with a pull towards its pretrained weights (L2-SP, Li et al. 2018):
    ``(s·W + V) x + (s·b + d)``. Standardising first scales up directions in which the training
    windows hardly vary, and sounds unlike any training window (rain, engines) reach large
    residual scores along them: measured in ``benchmarks/soundscape_birds.py``.

    ``keep_prior`` (a buffer, all false at the start) marks classes whose output is BirdNET's own
    row without the residual, ``s · (x Wᵀ + b)`` (``s`` is shared by every class, so kept and trained
    rows stay on one scale for a softmax): ``train.prior_folds`` sets it for the classes whose
    out-of-fold scores did not beat it (:mod:`chirpkit.training.prior_cv`).
    """

    warm_start_keep = (*_BirdNETRows.warm_start_keep, "keep_prior")

    def __init__(
        self,
        num_classes: int,
        *,
        dim: int = EMBEDDING_DIM,
        dropout: float = 0.0,
        l2: float = 1e-2,
        l2_new: float = 1e-4,
        learn_prior_weight: bool = True,
        norm: str = "standard",
        label_map: dict[str, str] | str | None = None,
    ) -> None:
        super().__init__(num_classes, dim, label_map)
        self.num_features = dim
        self.l2, self.l2_new = _in_range("l2", l2, 0, math.inf), _in_range("l2_new", l2_new, 0, math.inf)
        self.prior_scale = nn.Parameter(torch.ones(()), requires_grad=learn_prior_weight)
        if norm not in ("standard", "none"):
            raise ValueError(f"norm={norm!r} must be 'standard' or 'none'")
        # standard: the residual sees standardised features (as EmbeddingHead); BirdNET's rows the raw ones
        self.norm: nn.Module = (
            nn.BatchNorm1d(dim, affine=False, momentum=None) if norm == "standard" else nn.Identity()
        )
        self.dropout = nn.Dropout(dropout)
        self.residual = nn.Linear(dim, num_classes)
        nn.init.zeros_(self.residual.weight)
        nn.init.zeros_(self.residual.bias)
        self.keep_prior: torch.Tensor
        self.register_buffer("keep_prior", torch.zeros(num_classes, dtype=torch.bool))

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        # models saved before keep_prior existed: no class keeps BirdNET's row
        state_dict.setdefault(prefix + "keep_prior", torch.zeros_like(self.keep_prior))
        super()._load_from_state_dict(state_dict, prefix, *args)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if pre_logits:
            return x
        residual = self.residual(self.dropout(self.norm(x)))
        return self.prior_scale * self.prior(x) + residual.masked_fill(self.keep_prior, 0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(x)

    def regularization(self) -> torch.Tensor:
        """The L2 pull towards BirdNET's classifier, added to the training loss."""
        w2 = self.residual.weight.pow(2).sum(dim=1)
        return self.l2 * w2[self.known].sum() + self.l2_new * w2[~self.known].sum()


def _in_range(name: str, value: Any, low: float, high: float) -> float:
    """``value`` as a float in ``[low, high]``; ``ValueError`` naming the parameter otherwise."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        x = math.nan
    if not low <= x <= high:
        raise ValueError(f"{name}={value!r} must be a number in [{low:g}, {high:g}]")
    return x


#: fusion weights tried on the validation windows
FUSION_GRID = tuple(i / 10 for i in range(11))


class FusionHead(_BirdNETRows):
    """Late fusion of BirdNET's zero-shot scores and a trained linear head's, per class.

    Single-label: ``w · log σ(birdnet_c(x)) + (1 − w) · log softmax(head(x))_c`` for the classes
    BirdNET knows and ``log softmax(head(x))_c`` for the others, i.e. both models as
    log-probabilities (BirdNET's are per-species sigmoids), so known and new classes compare on
    one scale. Multi-label (both models sigmoid): ``w · birdnet_c(x) + (1 − w) · head_c(x)`` on the
    logits. ``w = 1`` ranks the known classes as zero-shot does; ``w = 0`` is the head.

    The head trains alone: in training mode the forward pass is the head's. Validation during
    training (the best epoch, early stopping) scores the fused output at the starting weight
    (``model.params.weight``, 0.5). After training ``select_on_validation`` tries ``w`` in 0,
    0.1, …, 1 on the validation windows and keeps the best macro F1 (ties: the lower
    cross-entropy); without validation windows ``w`` stays at the starting weight.
    """

    warm_start_keep = (*_BirdNETRows.warm_start_keep, "fusion_weight", "multilabel")

    def __init__(
        self,
        num_classes: int,
        *,
        dim: int = EMBEDDING_DIM,
        dropout: float = 0.0,
        weight: float = 0.5,
        label_map: dict[str, str] | str | None = None,
    ) -> None:
        super().__init__(num_classes, dim, label_map)
        self.num_features = dim
        self.head = EmbeddingHead(num_classes, dropout=dropout, dim=dim)
        self.fusion_weight: torch.Tensor
        self.multilabel: torch.Tensor
        self.register_buffer("fusion_weight", torch.tensor(_in_range("weight", weight, 0, 1)))
        self.register_buffer("multilabel", torch.tensor(False))

    def init_from_spec(self, spec: Any) -> None:
        self.multilabel.fill_(spec.task == "multilabel")
        super().init_from_spec(spec)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if pre_logits:
            return x
        head = self.head(x)
        if self.training:
            return head
        prior = self.prior(x).to(head.dtype)
        # single-label: both as log-probabilities (torch.where: no host sync on a GPU)
        head = torch.where(self.multilabel, head, torch.log_softmax(head, dim=1))
        prior = torch.where(self.multilabel, prior, nn.functional.logsigmoid(prior))
        w = self.fusion_weight.to(head.dtype) * self.known.to(head.dtype)
        return w * prior + (1 - w) * head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(x)

    def select_on_validation(
        self, logits_on_val: Callable[[], tuple[torch.Tensor, torch.Tensor]]
    ) -> dict[str, Any]:
        """Choose the fusion weight on validation; ``logits_on_val()`` runs the validation windows
        through this network (in eval mode) and returns ``(logits, targets)``. The output is
        linear in ``w``, so two passes (``w`` = 0 and 1) give every weight of the grid."""
        start = float(self.fusion_weight)
        if not bool(self.known.any()):
            self.fusion_weight.fill_(0.0)
            return {"fusion_weight": 0.0, "note": "no class is a BirdNET species: the head alone"}
        self.fusion_weight.fill_(0.0)
        head, y = logits_on_val()
        self.fusion_weight.fill_(1.0)
        prior, _ = logits_on_val()
        scores = {w: _val_scores(w * prior + (1 - w) * head, y) for w in FUSION_GRID}
        best = max(FUSION_GRID, key=lambda w: (scores[w][0], -scores[w][1]))
        self.fusion_weight.fill_(best)
        log.info(
            "birdnet_fusion: weight of BirdNET's scores %.1f (validation macro F1 %.4f; %.4f at %.1f)",
            best,
            scores[best][0],
            scores[min(FUSION_GRID, key=lambda w: abs(w - start))][0],
            start,
        )
        return {
            "fusion_weight": best,
            "val_macro_f1_selected": round(scores[best][0], 4),
            "val_macro_f1_by_weight": {f"{w:.1f}": round(scores[w][0], 4) for w in FUSION_GRID},
        }


def _val_scores(logits: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """``(macro F1 over the classes present, as evaluate computes it; unweighted cross-entropy)``
    for single-label targets (indices) or multi-label ones (0/1 rows, threshold 0.5)."""
    from chirpkit.metrics import multilabel_scores, scores

    logits = logits.float()
    if y.ndim == 2:
        f1 = multilabel_scores(y.int().numpy(), torch.sigmoid(logits).numpy())["macro_f1"]
        return f1, float(nn.functional.binary_cross_entropy_with_logits(logits, y.float()))
    f1 = scores(y.numpy(), logits.argmax(1).numpy())["macro_f1"]
    return f1, float(nn.functional.cross_entropy(logits, y.long()))


@register_model(
    "birdnet_prior",
    description="BirdNET V2.4's own classifier + a residual learned from your data (zero-shot "
    "with no data; new classes get new rows)",
    input="embedding",
    embedding=BIRDNET_EMBEDDING,
)
def birdnet_prior(num_classes: int, in_chans: int = 1, dropout: float = 0.0, **kwargs: Any) -> nn.Module:
    return PriorHead(num_classes, dropout=dropout, **kwargs)


@register_model(
    "birdnet_fusion",
    description="late fusion of BirdNET V2.4's zero-shot scores and a linear head trained on your "
    "data, their weight chosen on validation (new classes: the head alone)",
    input="embedding",
    embedding=BIRDNET_EMBEDDING,
)
def birdnet_fusion(num_classes: int, in_chans: int = 1, dropout: float = 0.0, **kwargs: Any) -> nn.Module:
    return FusionHead(num_classes, dropout=dropout, **kwargs)
