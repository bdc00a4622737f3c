"""``chirpkit augment-preview``: one window, its spectrogram, and each augmentation applied alone."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch

from chirpkit.augment import Augmenter
from chirpkit.config import Config
from chirpkit.errors import DataError

__all__ = ["augment_preview"]

log = logging.getLogger("chirpkit")

_SHOWN = {  # augment block -> panel title
    "time_shift": "time shift",
    "speed": "speed",
    "stretch": "time stretch",
    "gain": "gain",
    "noise": "pink/brown noise",
    "background": "background noise",
    "pitch": "pitch shift",  # in the configured pitch.mode
    "mixup": "mixup",
    "freq_mask": "frequency mask",
    "time_mask": "time mask",
}


def _segments(source: Path, cfg: Config) -> tuple[np.ndarray, int, int, int]:
    """Two segments ``(2, window + 2·margin)`` (the second is the mixup partner), rate, window, margin."""
    if source.is_dir():
        from chirpkit.data.store import Store

        st = Store(source)
        pos = (
            np.flatnonzero(st.index["split"].to_numpy() == "train")
            if "split" in st.index
            else np.arange(len(st))
        )
        if len(pos) == 0:
            pos = np.arange(len(st))
        pick = pos[:2] if len(pos) > 1 else np.array([pos[0], pos[0]])
        return st.read_many(pick), st.sample_rate, st.window_samples, st.margin_samples
    from chirpkit.audio import decode

    sr = cfg.audio.sample_rate
    win, margin = round(cfg.audio.window_s * sr), round(cfg.audio.margin_s * sr)
    y = decode(source, sample_rate=sr).y[0]
    n = win + 2 * margin
    if y.size < n:  # short clip: centred, padded on both sides (as prepare does)
        left = (n - y.size) // 2
        y = np.pad(y, (left, n - y.size - left))
    start = (y.size - n) // 2  # the middle of the file
    first = y[start : start + n]
    second = y[:n] if start > 0 else first[::-1]
    return np.stack([first, second]).astype(np.float32), sr, win, margin


def augment_preview(
    source: str | os.PathLike[str],
    *,
    out: str | os.PathLike[str],
    config: Config | None = None,
    seed: int = 0,
) -> Path:
    """Write a PNG grid: the window's features, then each enabled augmentation applied alone (p=1).

    Args:
        source: a prepared store (its first training window) or an audio file (its first window).
        out: the PNG to write.
        config: features (``features``) and augmentation ranges (``augment``) to show.
    """
    import matplotlib.pyplot as plt

    from chirpkit.features import build_frontend
    from chirpkit.utils.plots import _save

    cfg = config or Config()
    src = Path(source)
    if not src.exists():
        raise DataError(f"augment-preview source not found: {src}")
    segs, sr, win, margin = _segments(src, cfg)
    frontend = build_frontend(cfg.features, sr)
    x = torch.from_numpy(segs)
    base = cfg.augment.off()
    panels = [("original", frontend(x[:1, margin : margin + win])[0, 0])]
    for name, title in _SHOWN.items():
        if name == "background" and not cfg.augment.background.dir:
            continue
        one = base.model_copy(update={name: getattr(base, name).model_copy(update={"p": 1.0})})
        aug = Augmenter(one, sample_rate=sr, window_samples=win, margin_samples=margin, seed=seed)
        w = aug.waveform(aug.read(x))
        if name == "mixup":
            w, _ = aug.mixup(w, torch.eye(2))
        feats = frontend(w, aug.power)
        if name in ("freq_mask", "time_mask"):
            feats = aug.spectrogram(feats - feats.amin()) + feats.amin()  # show masks at the floor
        panels.append((title, feats[0, 0]))
    cols = 3
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 2.8 * rows), squeeze=False)
    lo = float(min(p.min() for _, p in panels))
    hi = float(max(p.max() for _, p in panels))
    for ax, (title, spec) in zip(axes.flat, panels, strict=False):
        ax.imshow(
            spec.detach().numpy(), origin="lower", aspect="auto", cmap="magma", vmin=max(lo, hi - 90), vmax=hi
        )
        ax.set_title(title, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.suptitle(f"augmentations ({cfg.features.kind}, {win / sr:.1f} s at {sr} Hz)", fontsize=11)
    path = _save(fig, out)
    log.info("augmentation preview: %s", path)
    return path
