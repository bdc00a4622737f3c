"""Batched inference shared by evaluate and detect (no Lightning needed at prediction time)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import torch

from chirpkit.models import ClassifierNet

__all__ = ["pick_device", "predict_proba"]


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
    """Class probabilities ``(n, num_classes)`` for each batch of waveforms ``(n, samples)``."""
    dev = device or next(net.parameters()).device
    net = net.to(dev).eval()
    for batch in batches:
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(dev, non_blocking=True)
        probs = torch.softmax(net(x).float(), dim=1)
        yield probs.cpu().numpy()
