"""``chirpkit demo``: synthesise a bird-like dataset, fit a classifier, detect calls in soundscapes.

The data: six call types (up-sweep, down-sweep, trill, two-note whistle, harmonic stack, buzz)
plus a ``noise`` class, each call with random pitch, duration and level, placed at a random time in
3 s clips of pink-to-brown noise at 0–15 dB SNR. Every class has several "recordings" (groups),
each with its own noise colour, noise level and pitch offset, so a leakage-free split matters.
Two 60 s soundscapes hold calls at known times, for detection recall.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import soundfile as sf
from tqdm.auto import tqdm

from chirpkit.config import Config, load_config
from chirpkit.synth import CALL_TYPES, colored_noise, make_call, mix_at_snr
from chirpkit.utils.io import atomic_path, write_csv, write_json

__all__ = ["demo", "demo_config", "make_demo_data", "score_calls"]

log = logging.getLogger("chirpkit")

SNR_DB = (0.0, 15.0)


def _recording_noise(rng: np.random.Generator, n: int, exponent: float, level: float) -> np.ndarray:
    return colored_noise(n, rng, exponent=exponent) * level


def _write(path: Path, y: np.ndarray, sr: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    peak = float(np.abs(y).max())
    if peak > 0.99:
        y = y * (0.99 / peak)
    with atomic_path(path) as tmp:
        sf.write(str(tmp), y, sr, format=path.suffix[1:].upper(), subtype="PCM_16")


def make_demo_data(
    out: str | os.PathLike[str],
    *,
    seed: int = 0,
    recordings_per_class: int = 10,
    clips_per_recording: int = 6,
    sample_rate: int = 32000,
    clip_s: float = 3.0,
    soundscapes: int = 2,
    soundscape_s: float = 60.0,
    progress: bool = True,
) -> dict[str, Any]:
    """Write the demo dataset under ``out``.

    Layout: ``clips/<class>/<class>-recNN-KK.flac`` with ``labels.csv`` (path,label,group) and
    ``soundscapes/soundscape_N.wav`` with ``soundscape_N.calls.csv`` (start_s,end_s,label).

    Returns:
        ``{"labels": path, "soundscapes": [paths], "calls": DataFrame of every soundscape call}``.
    """
    root = Path(out)
    rng = np.random.default_rng(seed)
    n = int(clip_s * sample_rate)
    classes = [*CALL_TYPES, "noise"]
    rows = []
    total = len(classes) * recordings_per_class * clips_per_recording
    bar = tqdm(total=total, desc="synthesise", unit="clip", disable=not progress)
    for label in classes:
        for rec in range(recordings_per_class):
            group = f"{label}-rec{rec:02d}"
            exponent, level = rng.uniform(0.8, 2.0), 10 ** rng.uniform(-2.3, -1.3)
            pitch = rng.uniform(0.9, 1.1)
            for k in range(clips_per_recording):
                y = _recording_noise(rng, n, exponent, level)
                if label != "noise":
                    call = make_call(label, rng, sample_rate=sample_rate, pitch=pitch)[: n - 1]
                    offset = int(rng.integers(0, max(1, n - call.size)))
                    mix_at_snr(y, call, offset, rng.uniform(*SNR_DB))
                rel = Path("clips") / label / f"{group}-{k:02d}.flac"
                _write(root / rel, y, sample_rate)
                rows.append({"path": rel.as_posix(), "label": label, "group": group})
                bar.update()
    bar.close()
    labels = root / "labels.csv"
    write_csv(labels, pd.DataFrame(rows), index=False)

    scapes, calls = [], []
    m = int(soundscape_s * sample_rate)
    for s in range(soundscapes):
        y = _recording_noise(rng, m, rng.uniform(0.8, 2.0), 10 ** rng.uniform(-2.3, -1.3))
        t = rng.uniform(1.0, 4.0)
        path = root / "soundscapes" / f"soundscape_{s + 1}.wav"
        these = []
        while True:
            kind = str(rng.choice(list(CALL_TYPES)))
            call = make_call(kind, rng, sample_rate=sample_rate, pitch=rng.uniform(0.9, 1.1))
            start = int(t * sample_rate)
            if start + call.size >= m - sample_rate:
                break
            mix_at_snr(y, call, start, rng.uniform(*SNR_DB))
            these.append(
                {
                    "file": str(path),
                    "start_s": round(start / sample_rate, 4),
                    "end_s": round((start + call.size) / sample_rate, 4),
                    "label": kind,
                }
            )
            t += call.size / sample_rate + rng.uniform(2.0, 5.0)
        _write(path, y, sample_rate)
        write_csv(path.with_suffix(".calls.csv"), pd.DataFrame(these).drop(columns="file"), index=False)
        scapes.append(path)
        calls += these
    return {"labels": labels, "soundscapes": scapes, "calls": pd.DataFrame(calls)}


def score_calls(detections: pd.DataFrame, calls: pd.DataFrame) -> dict[str, float]:
    """Recall of known calls (a call is found when a detection of its label overlaps it) and the
    share of detection windows that overlap a call of their label."""
    found = 0
    for c in calls.itertuples():
        d = detections[(detections["file"] == c.file) & (detections["label"] == c.label)]
        found += bool(((d["start_s"] < c.end_s) & (d["end_s"] > c.start_s)).any())
    hits = 0
    for det in detections.itertuples():
        cs = calls[(calls["file"] == det.file) & (calls["label"] == det.label)]
        hits += bool(((cs["start_s"] < det.end_s) & (cs["end_s"] > det.start_s)).any())
    return {
        "calls": len(calls),
        "calls_found": found,
        "recall": found / len(calls) if len(calls) else float("nan"),
        "detections": len(detections),
        "window_precision": hits / len(detections) if len(detections) else float("nan"),
    }


def demo_config(seed: int = 0) -> Config:
    """The demo's settings: library defaults, plus noise-floor removal (the calls are transient and
    every recording has its own background), 12 epochs, seeds and a half-second detection hop."""
    return load_config(
        overrides={
            "features.floor": "median",
            "train.epochs": 12,
            "train.seed": seed,
            "split.seed": seed,
            "detect.hop_s": 0.5,
        }
    )


def demo(
    out: str | os.PathLike[str] = "chirpkit-demo",
    *,
    seed: int = 0,
    config: Config | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Synthesise the demo data, ``fit`` a classifier, ``detect`` in the soundscapes, and report.

    Returns:
        ``{"macro_f1", "detection_recall", "window_precision", "run", "detections", ...}``; the same
        is written to ``out/demo_summary.json``.
    """
    from chirpkit.detection.job import detect
    from chirpkit.pipelines.fit import fit

    root = Path(out)
    cfg = config if config is not None else demo_config(seed)
    data = make_demo_data(root / "data", seed=seed, progress=progress)
    result = fit(data["labels"], out=root / "run", config=cfg, progress=progress)
    detections = detect(
        root / "run",
        data["soundscapes"],
        out=root / "detections",
        config=cfg.detect,
        progress=progress,
    )
    calls = data["calls"]
    det = score_calls(detections, calls)
    summary = {
        "macro_f1": result["metrics"]["macro_f1"],
        "weighted_f1": result["metrics"]["weighted_f1"],
        "accuracy": result["metrics"]["accuracy"],
        "detection_recall": det["recall"],
        "window_precision": det["window_precision"],
        "calls": det["calls"],
        "calls_found": det["calls_found"],
        "data": str(root / "data"),
        "run": str(root / "run"),
        "report": str(root / "run" / "eval-test"),
        "detections": str(root / "detections" / "detections.csv"),
    }
    write_json(root / "demo_summary.json", summary)
    return summary
