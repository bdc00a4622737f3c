"""Screaming Piha detection scores: fit on 8 recordings, detect on the 3 held out, score-detections.

    python benchmarks/piha_score.py [--data ../shared/data] [--out bench-out/piha_score] [--seed 0]

* held out: ScreamingPiha4, 5 and 8 (47 calls, 112 s); ``fit`` on the other eight from the
  annotation table (``--annotations``, 200 background windows, defaults otherwise);
* ``detect --hop-s 1`` over the held-out MP3s;
* ``score_detections`` on ``events.csv`` and ``detections.csv`` with ``--tolerance-s 0.5``, one-to-one
  (optimal) and ``any`` matching. The greedy one-to-one matching score-detections used before
  (best score first, first matching annotation in table order) is computed on the same files in
  the same run, as the baseline.
* the field's measures (:func:`chirpkit.detection_report`, ``score-detections --scores``): window
  AP / ROC-AUC, event F1 at IoU 0.3 and with a 0.2 s collar, PSDS, thresholds at precision 0.9,
  95 % intervals over recordings; and false positives per hour on bird-free audio that never
  holds a Screaming Piha: ``soundscape24h-maad`` (96 × 10 s of a temperate recorder over 24 h),
  detected with the same settings and scored as background recordings; the same for BirdNET
  V2.4 itself (``detect birdnet``, its Screaming Piha scores), the zero-shot baseline.

Skips (exit 0) when the data folder is absent. The fit is reused when ``OUT/run/model.pt`` exists.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import pandas as pd

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
HELD_OUT = ["ScreamingPiha4", "ScreamingPiha5", "ScreamingPiha8"]
PIHA = "Lipaugus vociferans_Screaming Piha"


def greedy_tp(det: pd.DataFrame, ann: pd.DataFrame, tolerance_s: float) -> int:
    """The previous one-to-one rule: detections by score, each takes the first free annotation."""
    tp = 0
    score = "max_score" if "max_score" in det else "score"
    for stem, d in det.groupby("_stem"):
        a = ann[ann["_stem"] == stem]
        free = np.ones(len(a), dtype=bool)
        for ds, de in d.sort_values(score, ascending=False)[["start_s", "end_s"]].to_numpy():
            hit = (
                free
                & (ds <= a["end_s"].to_numpy() + tolerance_s)
                & (de >= a["start_s"].to_numpy() - tolerance_s)
            )
            if hit.any():
                free[np.flatnonzero(hit)[0]] = False
                tp += 1
    return tp


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--out", type=Path, default=Path("bench-out/piha_score"))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    piha = args.data / "screaming-piha"
    if not piha.is_dir():
        print(f"skipped: {piha} not found")
        return 0
    import chirpkit
    from chirpkit.config import DetectConfig, load_config
    from chirpkit.detection.events import score_detections

    logging.basicConfig(level=logging.WARNING, format="chirpkit: %(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    table = pd.read_csv(piha / "ScreamingPiha_Manual_Labels.csv")
    stem = table["IN FILE"].map(lambda f: Path(str(f)).stem)
    train_table, test_table = args.out / "train_labels.csv", args.out / "test_labels.csv"
    table[~stem.isin(HELD_OUT)].to_csv(train_table, index=False)
    table[stem.isin(HELD_OUT)].to_csv(test_table, index=False)
    run = args.out / "run"
    if not (run / "model.pt").is_file():
        cfg = load_config(overrides=[f"train.seed={args.seed}", f"split.seed={args.seed}"])
        chirpkit.fit(
            out=run,
            config=cfg,
            annotations=train_table,
            audio_dir=piha / "TESTmp3",
            background=200,
            progress=False,
        )
    det_dir = args.out / "detect"
    background = sorted((args.data / "soundscape24h-maad" / "data" / "indices").glob("*.flac"))
    chirpkit.detect(
        run,
        [str(piha / "TESTmp3" / f"{s}.mp3") for s in HELD_OUT] + [str(b) for b in background],
        out=det_dir,
        config=DetectConfig(hop_s=1.0, formats=["csv", "scores"]),
        progress=False,
    )
    ann = pd.read_csv(test_table)
    truth = pd.DataFrame(
        {
            "_stem": ann["IN FILE"].map(lambda f: Path(str(f)).stem),
            "start_s": ann["OFFSET"],
            "end_s": ann["OFFSET"] + ann["DURATION"],
        }
    )
    print(f"{len(truth)} calls on {truth['_stem'].nunique()} held-out recordings")
    print(f"{'scored':28} {'matching':18} {'precision':>9} {'recall':>7} {'F1':>6}")
    for name in ("events.csv", "detections.csv"):
        det = pd.read_csv(det_dir / name)
        for matching in ("one-to-one", "any"):
            row = score_detections(det_dir / name, test_table, tolerance_s=0.5, matching=matching)
            r = row.set_index("class").loc["all"]
            label = f"{name} ({len(det)} rows)"
            print(f"{label:28} {matching:18} {r['precision']:9.3f} {r['recall']:7.3f} {r['f1']:6.3f}")
        tp = greedy_tp(det.assign(_stem=det["file"].map(lambda f: Path(str(f)).stem)), truth, 0.5)
        p, rec = tp / len(det), tp / len(truth)
        f1 = 2 * p * rec / (p + rec) if tp else 0.0
        print(f"{'':28} {'greedy (before)':18} {p:9.3f} {rec:7.3f} {f1:6.3f}")
    # BirdNET itself on the same recordings, its Screaming Piha scores only (no training)
    birdnet_dir = args.out / "detect-birdnet"
    chirpkit.detect(
        "birdnet",
        [str(piha / "TESTmp3" / f"{s}.mp3") for s in HELD_OUT] + [str(b) for b in background],
        out=birdnet_dir,
        config=DetectConfig(hop_s=1.0, formats=["csv", "scores"]),
        species=["Lipaugus vociferans"],
        progress=False,
    )
    print(f"\nthe field's measures ({len(background)} soundscape snippets without pihas as background):")
    runs = [("trained (fit)", det_dir, None), ("BirdNET zero-shot", birdnet_dir, {"bird": PIHA})]
    for title, folder, label_map in runs:
        for name in ("detections.csv", "events.csv"):
            report = chirpkit.detection_report(
                folder / name,
                test_table,
                scores=folder / "scores.parquet",
                background=[str(b) for b in background],
                label_map=label_map,
                seed=args.seed,
                out=args.out / f"report-{folder.name}-{name.removesuffix('.csv')}",
            )
            print(f"-- {title}, {name}\n{report.text()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
