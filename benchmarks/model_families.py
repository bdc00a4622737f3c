"""Macro F1 of each model family under grouped cross-validation, on real data.

    python benchmarks/model_families.py [--datasets fsdd esc50] [--families sklearn small_cnn timm birdnet]

* FSDD (spoken digits): leave-one-speaker-out, 6 folds (group = speaker).
* ESC-50 (414 clips, 50 classes): 5 folds grouped by ``src_file``.

Families: scikit-learn (logistic regression on MFCC statistics; and on BirdNET embeddings), the
default small CNN, a timm backbone trained from scratch (efficientnet_b0: no weights can be
downloaded here), a linear head on BirdNET V2.4 embeddings, and the prior head (BirdNET's own
classifier for classes it knows, e.g. ESC-50's ``dog``; the others learn rows of their own), and
score fusion (BirdNET's zero-shot scores + a linear head; the weight stays at 0.5 since the last
epoch's checkpoint is scored, with nothing chosen on the held-out fold).
Every score is the held-out fold's macro F1 with nothing selected on it (the networks' last
epoch), mean ± std over folds.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from real_data_fit import DATA, esc50_labels, fsdd_labels

AUDIO = {
    "fsdd": [
        "audio.sample_rate=8000",
        "audio.window_s=1.0",
        "features.n_fft=256",
        "features.hop_length=80",
        "features.n_mels=40",
        "features.fmin_hz=50",
    ],
    "esc50": ["audio.window_s=5.0"],
}
FOLDS = {"fsdd": 6, "esc50": 5}
EPOCHS = {
    ("fsdd", "small_cnn"): 20,
    ("fsdd", "timm"): 12,
    ("esc50", "small_cnn"): 30,
    ("esc50", "timm"): 30,
    # the embedding heads: cheap epochs, more of them (chirpkit 0.1's head loop ran 150)
    ("fsdd", "birdnet"): 150,
    ("esc50", "birdnet"): 150,
    ("fsdd", "birdnet_prior"): 150,
    ("esc50", "birdnet_prior"): 150,
    ("fsdd", "birdnet_fusion"): 150,
    ("esc50", "birdnet_fusion"): 150,
}
#: model settings per family besides model.name (the heads: no dropout; the prior head's pull)
PARAMS = {fam: {"model.dropout": 0.0} for fam in ("birdnet", "birdnet_prior", "birdnet_fusion")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", nargs="+", default=["fsdd", "esc50"])
    ap.add_argument(
        "--families",
        nargs="+",
        default=["sklearn", "birdnet", "birdnet_prior", "birdnet_fusion", "small_cnn", "timm"],
    )
    ap.add_argument("--timm-model", default="efficientnet_b0")
    ap.add_argument("--out", default="bench-out/model_families")
    ap.add_argument("--fresh", action="store_true", help="ignore results.json of an earlier run")
    args = ap.parse_args()
    if not DATA.is_dir():
        print(f"skipped: {DATA} not found")
        return 0
    from chirpkit.config import SplitConfig, load_config
    from chirpkit.data.ingest import ingest
    from chirpkit.data.split import split
    from chirpkit.data.store import prepare
    from chirpkit.training.baselines import baseline
    from chirpkit.training.tuning import cross_validate

    logging.basicConfig(level=logging.INFO, format="chirpkit: %(message)s")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() and not args.fresh else {}
    for ds in args.datasets:
        labels = {"fsdd": fsdd_labels, "esc50": esc50_labels}[ds](out)
        base = load_config(overrides=AUDIO[ds])
        cat = ingest(labels, progress=False)
        cat = split(cat, config=SplitConfig(folds=FOLDS[ds], test_fraction=0.0, min_count=0, seed=0))
        store = prepare(cat, out=out / ds / "store", config=base.audio, progress=False)
        for fam in args.families:
            key = f"{ds}/{fam}"
            if key in results:
                continue
            t0 = time.perf_counter()
            if fam == "sklearn":
                r = baseline(store, model="logreg", features="mfcc", progress=False)
                res = {
                    "model": "logistic regression on MFCC mean+std",
                    "mean": r["cv_mean"],
                    "std": r["cv_std"],
                    "folds": r["cv_macro_f1"],
                }
                try:
                    rb = baseline(store, model="logreg", features="birdnet", progress=False)
                    results[f"{ds}/sklearn_birdnet"] = {
                        "model": "logistic regression on BirdNET embeddings",
                        "mean": rb["cv_mean"],
                        "std": rb["cv_std"],
                        "folds": rb["cv_macro_f1"],
                    }
                except Exception as exc:  # BirdNET not installed
                    logging.warning("BirdNET features skipped: %s", exc)
            else:
                model = {
                    "small_cnn": "small_cnn",
                    "timm": args.timm_model,
                    "birdnet": "birdnet_linear",
                    "birdnet_prior": "birdnet_prior",
                    "birdnet_fusion": "birdnet_fusion",
                }[fam]
                cfg = load_config(
                    base=base,
                    overrides={"model.name": model, "train.epochs": EPOCHS[(ds, fam)], **PARAMS.get(fam, {})},
                )
                r = cross_validate(store, config=cfg, out=out / ds / fam)
                res = {
                    "model": model,
                    "epochs": EPOCHS[(ds, fam)],
                    "mean": r["last_mean"],
                    "std": r["last_std"],
                    "folds": r["last_macro_f1"],
                    "best_epoch_mean": r["mean"],
                }
            res["seconds"] = round(time.perf_counter() - t0, 1)
            results[key] = res
            results_path.write_text(json.dumps(results, indent=2))
    print(f"\n{'dataset / family':28} {'macro F1 (mean ± std over folds)':34} {'model'}")
    for key, r in results.items():
        took = f"  ({r['seconds']} s)" if "seconds" in r else ""
        print(f"{key:28} {r['mean']:.3f} ± {r['std']:.3f}{'':22} {r['model']}{took}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
