"""Fit chirpkit on real recordings from ../shared/data and print the test macro F1.

    python benchmarks/real_data_fit.py [--datasets fsdd esc50] [--out bench-out] [--epochs N]
        [--config recipes/any-sound.yaml]

* fsdd  — Free Spoken Digit Dataset: 3,000 clips, 10 digits, 6 speakers; group = speaker, so the
          test speaker is never heard in training (1 speaker test, 1 val, 4 train).
* esc50 — 414 ESC-50 clips (50 classes, 8–12 each); group = ``src_file`` (the freesound recording
          a clip was cut from).

Each dataset's label CSV (path,label,group) is written to the output folder and ``chirpkit.fit``
runs on it; nothing from ../shared/data is copied. Skips (exit 0) when the data folder is absent.
With ``--config RECIPE`` the recipe is the base and the dataset's audio, features and split
settings below are applied over it (FSDD: 8 kHz, 1 s windows, its front-end; ESC-50: 5 s
windows); the recipe's model, augment and train sections and any audio key not named below (the
ESC-50 sample rate, margins, hops) stay the recipe's.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import pandas as pd

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

SETTINGS = {
    # 8 kHz speech, clips of 0.14-2.3 s (median 0.42 s): 1 s windows at the native rate
    "fsdd": [
        "audio.sample_rate=8000",
        "audio.window_s=1.0",
        "features.n_fft=256",
        "features.hop_length=80",
        "features.n_mels=40",
        "features.fmin_hz=50",
        "split.val_fraction=0.16",
        "split.test_fraction=0.16",
        "train.epochs=20",
        "train.batch_size=64",
    ],
    # 5 s environmental clips at 44.1 kHz: one 5 s window per clip at the default 32 kHz
    "esc50": ["audio.window_s=5.0", "split.min_count=0", "train.epochs=40", "train.batch_size=32"],
}


def fsdd_labels(out: Path) -> Path:
    rec = DATA / "fsdd" / "recordings"
    rows = [
        {"path": str(p), "label": p.stem.split("_")[0], "group": p.stem.split("_")[1]}
        for p in sorted(rec.glob("*.wav"))
    ]
    path = out / "fsdd_labels.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def esc50_labels(out: Path) -> Path:
    root = DATA / "esc50-partial"
    meta = pd.read_csv(root / "meta" / "esc50.csv")
    present = {p.stem: p for p in (root / "audio").iterdir()}
    meta = meta[meta["filename"].str.replace(".wav", "", regex=False).isin(present)]
    rows = pd.DataFrame(
        {
            "path": [str(present[f.replace(".wav", "")]) for f in meta["filename"]],
            "label": meta["category"].to_numpy(),
            "group": meta["src_file"].astype(str).to_numpy(),
        }
    )
    path = out / "esc50_labels.csv"
    rows.to_csv(path, index=False)
    return path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", nargs="+", default=["fsdd", "esc50"], choices=sorted(SETTINGS))
    ap.add_argument("--out", default="bench-out/real_data_fit")
    ap.add_argument("--epochs", type=int, help="override the per-dataset epochs")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--config", type=Path, help="a recipe: its model, augment and train sections")
    args = ap.parse_args()
    if not DATA.is_dir():
        print(f"skipped: {DATA} not found (benchmark data is not shipped with chirpkit)")
        return 0
    from chirpkit.config import load_config
    from chirpkit.pipelines.fit import fit

    logging.basicConfig(level=logging.INFO, format="chirpkit: %(message)s")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    for name in args.datasets:
        labels = {"fsdd": fsdd_labels, "esc50": esc50_labels}[name](out)
        settings = SETTINGS[name]
        if args.config:  # the data's own audio, features and split; the recipe's training
            settings = [o for o in settings if o.startswith(("audio.", "features.", "split."))]
        overrides = [*settings, f"train.seed={args.seed}", f"split.seed={args.seed}"]
        if args.epochs:
            overrides.append(f"train.epochs={args.epochs}")
        t0 = time.perf_counter()
        res = fit(labels, out=out / name, config=load_config(args.config, overrides), progress=False)
        m = res["metrics"]
        results[name] = {
            "macro_f1": round(m["macro_f1"], 4),
            "weighted_f1": round(m["weighted_f1"], 4),
            "accuracy": round(m["accuracy"], 4),
            "test_examples": m["n_examples"],
            "best_val_macro_f1": res["train"]["best_val_macro_f1"],
            "seconds": round(time.perf_counter() - t0, 1),
            "settings": overrides,
        }
    (out / "results.json").write_text(json.dumps(results, indent=2))
    print(f"\n{'dataset':8} {'macro F1':>9} {'weighted F1':>12} {'accuracy':>9} {'n test':>7} {'seconds':>8}")
    for name, r in results.items():
        print(
            f"{name:8} {r['macro_f1']:9.4f} {r['weighted_f1']:12.4f} {r['accuracy']:9.4f} "
            f"{r['test_examples']:7d} {r['seconds']:8.1f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
