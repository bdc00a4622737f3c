"""Shared fixtures: seeded rng, synthetic audio with known answers, a tiny dataset and config."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from chirpkit.config import Config, load_config

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

TINY_SR = 16000


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


def tone(freq_hz: float, seconds: float, sr: int, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (amp * np.sin(2 * np.pi * freq_hz * t)).astype(np.float32)


def replace_command(monkeypatch: pytest.MonkeyPatch, verb: str, run: object) -> None:
    """Make the command line run ``run(args)`` for ``verb`` (its entry in ``chirpkit.cli.VERBS``)."""
    import dataclasses

    import chirpkit.cli as cli

    verbs = tuple(dataclasses.replace(v, run=run) if v.name == verb else v for v in cli.VERBS)
    assert verbs != cli.VERBS, f"no verb {verb!r}"
    monkeypatch.setattr(cli, "VERBS", verbs)


def write(path: Path, y: np.ndarray, sr: int, **kw: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), y, sr, **kw)
    return path


# class -> tone frequency; three classes that a tiny CNN separates in a few steps
TINY_CLASSES = {"low": 800.0, "mid": 2500.0, "high": 5000.0}


def make_class_folder(
    root: Path, *, groups: int = 4, clips: int = 3, seconds: float = 1.0, seed: int = 0
) -> Path:
    """``root/<class>/<class>-g<G>-<K>.wav``: a tone per class in light noise; the group is in the name."""
    rng = np.random.default_rng(seed)
    for label, f in TINY_CLASSES.items():
        for g in range(groups):
            for k in range(clips):
                y = tone(f * rng.uniform(0.95, 1.05), seconds, TINY_SR, amp=rng.uniform(0.2, 0.6))
                y += 0.01 * rng.standard_normal(y.size).astype(np.float32)
                write(root / label / f"{label}-g{g}-{k}.wav", y, TINY_SR)
    return root


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_class_folder(tmp_path_factory.mktemp("tiny") / "data")


def tiny_config(**overrides: object) -> Config:
    base = {
        "audio.sample_rate": TINY_SR,
        "audio.window_s": 1.0,
        "features.n_mels": 32,
        "features.n_fft": 512,
        "features.hop_length": 160,
        "model.params": {"channels": [8, 16, 32]},
        "train.epochs": 40,
        "train.batch_size": 4,
        "train.lr": 3e-3,
        "train.num_workers": 0,
        "train.accelerator": "cpu",
        "split.val_fraction": 0.25,
        "split.test_fraction": 0.25,
    }
    base.update(overrides)
    return load_config(overrides=base)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, tiny_folder: Path) -> Path:
    """A trained run (fit on the tiny folder), shared by the evaluate/detect tests."""
    from chirpkit.pipelines.fit import fit

    out = tmp_path_factory.mktemp("run") / "run"
    fit(tiny_folder, out=out, config=tiny_config(), group_by="regex:-(g\\d+)-", progress=False)
    return out


@pytest.fixture(autouse=True, scope="session")
def _chirpkit_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Caches shared across stores (embeddings) go to a temporary folder, not ~/.cache."""
    import os

    os.environ["CHIRPKIT_CACHE"] = str(tmp_path_factory.mktemp("chirpkit-cache"))


@pytest.fixture(autouse=True)
def _chirpkit_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="chirpkit")


def read_csv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, keep_default_na=False)


@pytest.fixture
def soundscapes(tmp_path: Path) -> Path:
    """Two 20 s recordings (16 kHz) with tones at known times, and a Kenya-style table with anomalies."""
    sr = 16000
    rng = np.random.default_rng(0)
    for name, calls in (
        ("siteA_day1.flac", [(2.0, 1000), (10.0, 3000), (15.0, 1000)]),
        ("siteB_day1.flac", [(5.0, 3000), (12.0, 1000)]),
    ):
        y = 0.01 * rng.standard_normal(sr * 20).astype(np.float32)
        for t, f in calls:
            y[int(t * sr) : int((t + 0.4) * sr)] += tone(f, 0.4, sr)
        write(tmp_path / "audio" / name, y, sr)
    (tmp_path / "audio" / "broken.flac").write_bytes(b"fLaC not really")
    (tmp_path / "annotations.csv").write_text(
        "Filename,Start Time (s),End Time (s),Species eBird Code\n"
        "siteA_day1.flac,2.2,2.2,lowbird\n"  # point
        "siteA_day1.flac,10.2,10.2,highbird\n"
        "siteA_day1.flac,15.2,15.2,lowbird\n"
        "siteA_day1.flac,11.0,11.0,lowbird\n"  # inside the highbird window: multi-label
        "siteB_day1.flac,5.2,5.2,highbird\n"
        "siteB_day1.flac,12.2,12.2,lowbird\n"
        "siteB_day1.flac,12.2,12.2,lowbird\n"  # duplicate
        "siteB_day1.flac,25.0,25.0,lowbird\n"  # past the end (20 s)
        "siteB_day1.flac,-0.5,-0.5,highbird\n"  # negative
        "siteB_day1.flac,9.0,6.0,highbird\n"  # reversed, and a box in a point table
        "siteA_day1.flac,17.0,,lowbird\n"  # bad time
        "siteA_day1.flac,18.0,18.0,\n"  # empty label
        "missing.flac,1.0,1.0,lowbird\n"  # no such file
        "broken.flac,1.0,1.0,lowbird\n"  # unreadable
    )
    return tmp_path


def broken_flac(path: Path, seconds: float = 5.0, sr: int = 16000, seed: int = 0) -> tuple[Path, np.ndarray]:
    """A FLAC with 200 corrupted bytes mid-stream: the header reads, libsndfile fails on the audio,
    FFmpeg skips the damaged frame and decodes the rest (the broken-FLAC case of field datasets)."""
    rng = np.random.default_rng(seed)
    y = np.clip(0.3 * rng.standard_normal(int(seconds * sr)), -0.99, 0.99).astype(np.float32)
    write(path, y, sr, format="FLAC")
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 200] = bytes(b ^ 0xFF for b in data[mid : mid + 200])
    path.write_bytes(bytes(data))
    return path, y
