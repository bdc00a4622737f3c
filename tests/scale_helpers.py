"""Fixtures for the scale-out and detect-robustness tests: an untrained small CNN whose spec holds
a causal high-pass (so a time shard must bring the filter state to what one pass gives), and
recordings with a DC offset and mains hum (which make that state matter)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from tests.conftest import TINY_SR, tone, write

HP_CLASSES = ["low", "mid", "high", "noise"]


def make_hp_model(path: Path, *, cutoff_hz: float = 300.0, seed: int = 0) -> Path:
    import torch

    from chirpkit.models import ClassifierNet, ModelSpec, save_model

    torch.manual_seed(seed)
    spec = ModelSpec(
        "small_cnn",
        HP_CLASSES,
        TINY_SR,
        1.0,
        {"kind": "logmel", "n_fft": 512, "hop_length": 160, "n_mels": 32, "fmin_hz": 50.0},
        {"channels": [8, 16, 32]},
        conditioning=[{"name": "highpass", "cutoff_hz": cutoff_hz, "order": 4}],
    )
    return save_model(path, ClassifierNet(spec).eval())


def hummed(seconds: float, sr: int, calls: list[tuple[float, float]], seed: int = 0) -> np.ndarray:
    """Noise + 0.3 DC offset + 60 Hz hum, with 1 s tones ``(time_s, freq_hz)``."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    y = 0.3 + 0.2 * np.sin(2 * np.pi * 60 * t) + 0.02 * rng.standard_normal(t.size)
    for at, f in calls:
        i = int(at * sr)
        y[i : i + sr] += tone(f, 1.0, sr, amp=0.4)
    return y.astype(np.float32)


def make_recordings(root: Path) -> Path:
    """A 40 s float WAV at 22.05 kHz (resampled to 16 kHz), a 12 s FLAC, a file shorter than a
    window, and a corrupt file."""
    write(
        root / "a.wav",
        hummed(40, 22050, [(3, 800), (11, 2500), (19.7, 5000), (30, 800)]),
        22050,
        subtype="FLOAT",
    )
    write(root / "b.flac", 0.5 * hummed(12, TINY_SR, [(4.5, 2500)], seed=1), TINY_SR)
    write(root / "c_short.wav", hummed(0.6, TINY_SR, [], seed=2), TINY_SR)
    (root / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" + bytes(200))
    return root


def assert_same_detections(got: pd.DataFrame, ref: pd.DataFrame, atol: float = 1e-4) -> None:
    """Same rows (file, start, end, label) in the same order, scores within ``atol``."""
    assert len(got) == len(ref) > 0
    keys = ["file", "start_s", "end_s", "label"]
    pd.testing.assert_frame_equal(
        got[keys].reset_index(drop=True), ref[keys].reset_index(drop=True), check_dtype=False, atol=1e-6
    )
    np.testing.assert_allclose(got["score"].to_numpy(float), ref["score"].to_numpy(float), atol=atol)
