"""Small CNN baselines on log-mel spectrograms (fast on CPU, no pretrained weights needed)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import nn

from chirpkit.models._registry import register_model

__all__ = ["SmallCNN"]


def _block(c_in: int, c_out: int, convs: int, separable: bool = False) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(convs):
        a = c_in if i == 0 else c_out
        if separable and a > 1:  # depthwise 3x3 then pointwise 1x1: ~8x fewer multiply-adds
            layers += [
                nn.Conv2d(a, a, kernel_size=3, padding=1, groups=a, bias=False),
                nn.BatchNorm2d(a),
                nn.ReLU(inplace=True),
                nn.Conv2d(a, c_out, kernel_size=1, bias=False),
            ]
        else:
            layers.append(nn.Conv2d(a, c_out, kernel_size=3, padding=1, bias=False))
        layers += [nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
    layers.append(nn.MaxPool2d(2, ceil_mode=True))
    return nn.Sequential(*layers)


class SmallCNN(nn.Module):
    """Conv blocks (3×3 conv → batch-norm → ReLU, × ``convs_per_block``, then 2×2 max-pool), then
    a head that keeps coarse pitch: the feature map is averaged into ``freq_bands`` frequency bands
    (adaptive, so any number of mel bins works), pooled over time (peak + mean), and classified.

    Averaging over all frequencies instead would make the network nearly blind to pitch, which
    is what tells many species apart.

    Input ``(batch, in_chans, n_bins, frames)``; output logits ``(batch, num_classes)``.
    """

    def __init__(
        self,
        num_classes: int,
        in_chans: int = 1,
        channels: Sequence[int] = (32, 64, 128, 256),
        convs_per_block: int = 1,
        freq_bands: int = 4,
        dropout: float = 0.3,
        separable: bool = False,
    ) -> None:
        super().__init__()
        chans = [in_chans, *channels]
        self.blocks = nn.Sequential(
            *[_block(a, b, convs_per_block, separable) for a, b in itertools.pairwise(chans)]
        )
        self.freq_pool = nn.AdaptiveAvgPool2d((freq_bands, None))
        self.num_features = int(channels[-1]) * freq_bands
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(self.num_features, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(batch, in_chans, bins, frames)`` → feature map ``(batch, C, bins', frames')``."""
        return self.blocks(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.freq_pool(x).flatten(1, 2)  # (batch, C * bands, frames')
        x = x.amax(dim=2) + x.mean(dim=2)  # over time: peak + average evidence
        if pre_logits:
            return x
        return self.fc(self.dropout(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


@register_model("small_cnn", description="4 conv blocks (32-64-128-256), ~0.4 M params; the fast default")
def small_cnn(num_classes: int, in_chans: int = 1, dropout: float = 0.3, **kwargs: object) -> SmallCNN:
    return SmallCNN(num_classes, in_chans, dropout=dropout, **kwargs)  # type: ignore[arg-type]


@register_model("deep_cnn", description="4 double-conv blocks (64-128-256-512), ~4.7 M params (CNN6/10-like)")
def deep_cnn(num_classes: int, in_chans: int = 1, dropout: float = 0.3, **kwargs: object) -> SmallCNN:
    kwargs.setdefault("channels", (64, 128, 256, 512))
    return SmallCNN(num_classes, in_chans, convs_per_block=2, dropout=dropout, **kwargs)  # type: ignore[arg-type]
