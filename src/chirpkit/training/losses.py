"""Training losses on probability targets ``(batch, classes)`` (one-hot, mixed by mixup, or
multi-hot for multi-label), with optional class weights and label smoothing.

* ``ce`` — cross-entropy over a softmax (single-label); with class weights, the weighted mean
  PyTorch uses for class-index targets (``Σ w·loss / Σ w`` over the batch's targets).
* ``focal`` — focal loss (Lin et al. 2017) over a softmax: ``-Σ w_c (1 - p_c)^γ y_c log p_c``;
  down-weights easy examples, for strong imbalance.
* ``bce`` — binary cross-entropy per class over sigmoids (multi-label: a window may hold several
  species).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["ClassificationLoss"]


class ClassificationLoss(nn.Module):
    weight: torch.Tensor | None

    def __init__(
        self,
        kind: str = "ce",
        *,
        weight: torch.Tensor | None = None,
        label_smoothing: float = 0.0,
        focal_gamma: float = 2.0,
    ) -> None:
        super().__init__()
        if kind not in ("ce", "focal", "bce"):
            raise ValueError(f"loss {kind!r} must be ce, focal or bce")
        self.kind = kind
        self.smoothing = label_smoothing
        self.gamma = focal_gamma
        self.register_buffer("weight", weight, persistent=False)

    @property
    def multilabel(self) -> bool:
        return self.kind == "bce"

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = target.to(logits.dtype)
        k = logits.shape[1]
        if self.kind == "bce":
            if self.smoothing:
                target = target * (1 - self.smoothing) + self.smoothing / 2
            return F.binary_cross_entropy_with_logits(logits, target, weight=self.weight)
        if self.smoothing:
            target = target * (1 - self.smoothing) + self.smoothing / k
        logp = F.log_softmax(logits, dim=1)
        per_class = -target * logp
        if self.kind == "focal":
            per_class = per_class * (1 - logp.exp()) ** self.gamma
        if self.weight is None:
            return per_class.sum(dim=1).mean()
        # a weighted mean, as PyTorch's cross-entropy with class indices: the batch's target
        # weights normalise it, so class weights change emphasis, not the loss scale
        w = self.weight.to(logits.dtype)
        return (per_class * w).sum() / (target * w).sum().clamp_min(1e-12)
