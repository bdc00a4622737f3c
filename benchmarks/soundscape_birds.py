"""Bird detectors where users deploy them: long soundscapes with several species and real
background, and bird-free files. BirdNET zero-shot against the ``birds-fewshot`` recipe, scored
with the field's measures (``chirpkit.detection_report``).

    python benchmarks/soundscape_birds.py [--draws 3] [--files 20] [--bird-free 4] [--train 5]
        [--recipe recipes/birds-fewshot.yaml] [--out bench-out/soundscape_birds]

For each seeded draw:

* ``--train`` recordings of each of the 10 ``xc-westcoast10`` species train the recipe (``prepare`` +
  ``train``); the other recordings of each species are never seen in training, and only they are
  mixed into the soundscapes;
* ``--files`` soundscapes of 60 s at 48 kHz: a bed of six 10 s snippets of ``soundscape24h-maad``
  (one temperate recorder over 24 h: wind, insects, dawn chorus of other species, night; half of the
  snippets, by the draw's seed, the other half is training background) with four
  ESC-50 clips of non-animal sounds (rain, wind, thunderstorm, sea waves, fire, engines, trains,
  aircraft, chainsaws) laid over it at random; 2-5 held-out clips of different species at random,
  non-overlapping times, at -5 to +15 dB against the bed's RMS; each clip is annotated as a box
  over its whole extent (the clips hold song for much of their 6 s, not all of it);
* ``--bird-free`` more files of bed alone: no target species (the beds may hold birds of other
  species — that is what a deployment meets);
* contenders: BirdNET zero-shot (``detect birdnet`` over the 10 species); the recipe as it is
  (``recipe``); with per-species sigmoids (``recipe+bce``: ``train.loss=bce``, so a window can score
  low for every species); and with background windows as ``noise`` (``recipe+bce+background``: the
  other half of the ``soundscape24h-maad`` snippets, never used in a test bed);
* every model detects with 3 s windows every 1.5 s (``detect --hop-s 1.5 --format scores``,
  ``min_score`` 0.5), and ``detection_report`` scores the windows: macro AP and ROC-AUC over the 10
  species (threshold-free), event F1 at IoU 0.3, PSDS 1 / 2, false positives per hour on the
  bird-free files.

Skips (exit 0) when ``../shared/data`` lacks one of its folders. Results: ``OUT/results.csv`` and a
table of means ± std over draws on stdout.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("CHIRPKIT_DATA", ROOT.parent / "shared" / "data"))
SR = 48000
FILE_S = 60.0
NOISE = (
    "rain",
    "wind",
    "thunderstorm",
    "sea_waves",
    "crackling_fire",
    "engine",
    "train",
    "airplane",
    "helicopter",
    "chainsaw",
)
MEASURES = ("window_cmap", "window_macro_roc_auc", "event_f1", "psds1", "psds2", "fp_per_hour")
#: what each trained contender changes in the recipe: the loss (``bce``: per-species sigmoids that
#: can all be low, "no bird"), and background windows from other recordings labelled ``noise``
CONTENDERS: dict[str, tuple[dict[str, object], bool]] = {
    "recipe": ({}, False),
    "recipe+bce": ({"train.loss": "bce"}, False),
    "recipe+bce+background": ({"train.loss": "bce"}, True),
}


def _load(path: Path) -> np.ndarray:
    from chirpkit.audio import load

    y, _ = load(path, sample_rate=SR)
    return y[0]


def _rms(y: np.ndarray) -> float:
    return float(np.sqrt(np.mean(y.astype(np.float64) ** 2)) + 1e-12)


def _bed(rng: np.random.Generator, maad: list[Path], noise: list[Path]) -> np.ndarray:
    n = int(FILE_S * SR)
    parts = [_load(p) for p in rng.choice(maad, size=6, replace=False)]
    bed = np.concatenate(
        [p[: n // 6] if len(p) >= n // 6 else np.pad(p, (0, n // 6 - len(p))) for p in parts]
    )
    bed = np.pad(bed, (0, n - len(bed)))
    for p in rng.choice(noise, size=4, replace=False):
        clip = _load(p)
        at = int(rng.integers(0, n - len(clip)))
        gain = _rms(bed) / _rms(clip) * rng.uniform(0.5, 2.0)
        bed[at : at + len(clip)] += gain * clip
    return bed


def maad_halves(seed: int) -> tuple[list[Path], list[Path]]:
    """The ``soundscape24h-maad`` snippets split in two by the draw's seed: background for
    training, and beds for the test soundscapes (no snippet in both)."""
    maad = sorted((DATA / "soundscape24h-maad" / "data" / "indices").glob("*.flac"))
    order = np.random.default_rng(seed + 10_000).permutation(len(maad))
    half = len(maad) // 2
    return [maad[i] for i in order[:half]], [maad[i] for i in order[half:]]


def soundscapes(
    out: Path, test: pd.DataFrame, maad: list[Path], seed: int, n_files: int, n_free: int
) -> tuple[list[Path], Path, list[Path]]:
    """Write the soundscapes and their annotation table; ``(files, annotations, bird-free files)``."""
    import soundfile as sf

    rng = np.random.default_rng(seed)
    meta = pd.read_csv(DATA / "esc50-partial" / "meta" / "esc50.csv")
    meta = meta[meta["category"].isin(NOISE)]
    audio = DATA / "esc50-partial" / "audio"
    noise = [audio / f.replace(".wav", ".flac") for f in meta["filename"]]
    noise = [p for p in noise if p.is_file()]
    out.mkdir(parents=True, exist_ok=True)
    rows, files, free = [], [], []
    by_species = dict(list(test.groupby("label")))
    for i in range(n_files + n_free):
        y = _bed(rng, maad, noise)
        name = out / (f"scape{i:02d}.flac" if i < n_files else f"free{i - n_files:02d}.flac")
        if i < n_files:
            species = rng.choice(sorted(by_species), size=int(rng.integers(2, 6)), replace=False)
            slots = rng.permutation(int(FILE_S // 8))[: len(species)]  # 8 s slots: no overlap
            bed_rms = _rms(y)
            for s, slot in zip(species, slots, strict=True):
                clip_path = Path(rng.choice(by_species[s]["source"].to_numpy()))
                clip = _load(clip_path)[: int(7.5 * SR)]
                at = int(slot * 8 * SR + rng.integers(0, int(0.4 * SR)))
                snr_db = rng.uniform(-5, 15)
                y[at : at + len(clip)] += clip * bed_rms / _rms(clip) * 10 ** (snr_db / 20)
                rows.append((name.name, at / SR, (at + len(clip)) / SR, s, round(snr_db, 1)))
            files.append(name)
        else:
            free.append(name)
        peak = float(np.max(np.abs(y)))
        sf.write(name, (y / peak * 0.9 if peak > 0.9 else y).astype(np.float32), SR, subtype="PCM_16")
    table = out / "annotations.csv"
    pd.DataFrame(rows, columns=["file", "start_s", "end_s", "label", "snr_db"]).to_csv(table, index=False)
    return files + free, table, free


def background_catalog(files: list[Path]) -> pd.DataFrame:
    """Catalog rows (the columns ``ingest`` writes) for whole recordings labelled ``noise``."""
    from chirpkit.audio import info

    rows = []
    for p in files:
        facts = info(p).to_dict()
        facts.pop("path")
        facts.pop("frames")
        rows.append(
            {"source": str(p), "start_s": 0.0, "end_s": facts["duration_s"], "label": "noise"}
            | {"labels": ["noise"], "group": p.stem, "split": "train", **facts}
        )
    return pd.DataFrame(rows)


def measures(report: object) -> dict[str, float]:
    s = report.summary  # type: ignore[attr-defined]
    psds = s.get("psds", {})
    return {
        "window_cmap": s["window"]["cmap"],
        "window_macro_roc_auc": s["window"]["macro_roc_auc"],
        "event_f1": s["events"]["f1"],
        "psds1": psds.get("psds1", float("nan")),
        "psds2": psds.get("psds2", float("nan")),
        "fp_per_hour": s["false_positives"]["per_hour"],
    }


def one_draw(seed: int, args: argparse.Namespace) -> list[dict[str, object]]:
    import chirpkit
    from chirpkit.config import DetectConfig, load_config
    from chirpkit.data.ingest import ingest

    work = args.out / f"draw{seed}"
    labels = pd.read_csv(DATA / "xc-westcoast10" / "labels.csv")
    cat = ingest(DATA / "xc-westcoast10" / "labels.csv", progress=False)
    rng = np.random.default_rng(seed)
    train_groups: set[str] = set()
    for _, g in cat.groupby("label"):
        groups = sorted(g["group"].astype(str).unique())
        train_groups |= set(rng.choice(groups, size=args.train, replace=False).tolist())
    is_train = cat["group"].astype(str).isin(train_groups)
    background, beds = maad_halves(seed)
    files, table, free = soundscapes(work / "audio", cat[~is_train], beds, seed, args.files, args.bird_free)
    species = sorted(labels["label"].unique())
    train_cat = cat[is_train].assign(split="train")
    noise_cat = background_catalog(background)
    models: list[tuple[str, object, dict[str, object]]] = [("zero-shot", "birdnet", {"species": species})]
    train_s: dict[str, float] = {}
    for name in args.contenders:
        if name == "zero-shot":
            continue
        overrides, with_background = CONTENDERS[name]
        cfg = load_config(args.recipe, {"train.seed": seed, **overrides})
        both = pd.concat([train_cat, noise_cat], ignore_index=True) if with_background else train_cat
        store_dir = work / ("store-background" if with_background else "store")
        store = chirpkit.prepare(both, out=store_dir, config=cfg.audio, progress=False)
        t0 = time.perf_counter()
        chirpkit.train(store, out=work / name, config=cfg, progress=False)
        train_s[name] = round(time.perf_counter() - t0, 1)
        models.append((name, work / name, {}))
    detect_cfg = DetectConfig(hop_s=1.5, formats=["csv", "scores"])
    rows = []
    for name, model, kw in models:
        if name not in args.contenders:
            continue
        det = work / f"det-{name}"
        t0 = time.perf_counter()
        chirpkit.detect(model, files, out=det, config=detect_cfg, progress=False, **kw)
        seconds = time.perf_counter() - t0
        # BirdNET names its classes Latin_Common; the annotations use the Latin name
        names = pd.read_parquet(det / "scores.parquet").columns[3:]
        label_map = {n.split("_")[0]: n for n in names if "_" in n}
        report = chirpkit.detection_report(
            det / "detections.csv",
            table,
            scores=det / "scores.parquet",
            background=[str(f) for f in free],
            label_map=label_map,
            n_boot=0,
            out=det / "report",
        )
        rows.append(
            {"seed": seed, "model": name, **measures(report), "detect_s": round(seconds, 1)}
            | {"train_s": train_s.get(name)}
        )
        print(f"draw {seed} {name:24} " + "  ".join(f"{k} {rows[-1][k]:.3f}" for k in MEASURES), flush=True)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--draws", type=int, default=3)
    ap.add_argument("--files", type=int, default=20, help="soundscapes with birds per draw")
    ap.add_argument("--bird-free", type=int, default=4, help="bird-free soundscapes per draw")
    ap.add_argument("--train", type=int, default=5, help="training recordings per species")
    ap.add_argument("--recipe", type=Path, default=ROOT / "recipes" / "birds-fewshot.yaml")
    ap.add_argument(
        "--contenders", nargs="+", default=["zero-shot", *CONTENDERS], choices=["zero-shot", *CONTENDERS]
    )
    ap.add_argument("--out", type=Path, default=ROOT / "bench-out" / "soundscape_birds")
    args = ap.parse_args()
    need = ("xc-westcoast10", "soundscape24h-maad", "esc50-partial")
    if not all((DATA / n).is_dir() for n in need):
        print(f"skipped: {DATA} lacks one of {need}")
        return 0
    logging.basicConfig(level=logging.WARNING, format="chirpkit: %(message)s")
    rows = [r for seed in range(args.draws) for r in one_draw(seed, args)]
    table = pd.DataFrame(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out / "results.csv", index=False, float_format="%.4f")
    agg = table.groupby("model", sort=False)[list(MEASURES)].agg(["mean", "std"])
    print(
        f"\nmean ± std over {args.draws} draw(s), {args.files} soundscapes + {args.bird_free} bird-free each:"
    )
    for model, r in agg.iterrows():
        print(f"{model:24} " + "  ".join(f"{m} {r[(m, 'mean')]:.3f} ± {r[(m, 'std')]:.3f}" for m in MEASURES))
    return 0


if __name__ == "__main__":
    sys.exit(main())
