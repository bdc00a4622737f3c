"""Bird detectors where users deploy them: long soundscapes with several species and real
background, and bird-free files. BirdNET zero-shot against the ``birds-fewshot`` recipe, scored
with the field's measures (``chirpkit.detection_report``).

    python benchmarks/soundscape_birds.py [--draws 3] [--files 20] [--bird-free 4] [--train 5]
        [--recipe recipes/birds-fewshot.yaml] [--rounds 2] [--out bench-out/soundscape_birds]

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
  (``recipe``: ``birds-fewshot``, a softmax head whose pull is chosen out of fold); with
  per-species sigmoids (``recipe+bce``: ``train.loss=bce``, so a window can score low for every
  species); and with background windows as ``noise`` (``recipe+bce+background``: the other half
  of the ``soundscape24h-maad`` snippets, never used in a test bed); then that with the residual
  on the raw embedding (``+raw``: ``model.params.norm=none``); and with a background that holds
  calls of the species (``background-with-calls``: every third snippet carries a call of a
  training recording, as a user's own recordings would), without and with BirdNET filtering it
  (``+filter``: ``train.background_filter=0.5``); and ``birds-soundscape``, that recipe as it is
  (the other contenders change ``--recipe``); ``birds-soundscape+self-training``: that run, then
  ``--rounds`` rounds of self-training on the test files themselves, unlabelled, as a user would
  on the recordings to analyse (``distill`` with the same recipe as the student,
  ``train.pseudo_labels: [0.1, 0.5]``, no fine-tuning), each round scored (``… r1``, ``… r2``);
* every model detects with 3 s windows every 1.5 s (``detect --hop-s 1.5 --format scores``,
  ``min_score`` 0.5), and ``detection_report`` scores them: macro AP and ROC-AUC of the windows over
  the 10 species (threshold-free), event F1 at IoU 0.3 of ``events.csv`` (neighbouring windows of
  one label merged, as a user reads them), PSDS 1 / 2, false positives (events) per hour on the
  bird-free files at score 0.5 and at 0.1 (``fp_per_hour_0.1``, from the score matrix as ``detect
  --min-score 0.1`` would select them);
* and false positives per hour on 11.6 minutes of recordings from elsewhere that hold none of the
  species (``fp_per_hour_elsewhere`` at 0.5, ``_0.1`` at 0.1; ``--no-elsewhere`` skips them): the
  Screaming Piha recordings (Neotropical forest, other birds), a Mt Kenya soundscape
  (``kenya-dekut``), a toad chorus and ruffed grouse drumming (``opensoundscape-samples``).

Skips (exit 0) when ``../shared/data`` lacks one of its folders. Results: ``OUT/results.csv``, a
table of means ± std over draws on stdout, and each model's gains over zero-shot draw by draw
(``OUT/paired_gains.csv``: the mean and std of the paired differences, and how many draws are
better, level or worse).
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
SELF_TRAINING = "birds-soundscape+self-training"
MEASURES = (
    "window_cmap",
    "window_macro_roc_auc",
    "event_f1",
    "psds1",
    "psds2",
    "fp_per_hour",
    "fp_per_hour_0.1",
    "fp_per_hour_elsewhere",
    "fp_per_hour_elsewhere_0.1",
)
#: recordings from elsewhere that hold none of the 10 species: other birds (the Screaming Piha's
#: Neotropical forest, a Mt Kenya soundscape), a toad chorus and ruffed grouse drumming
ELSEWHERE = (
    "screaming-piha/TESTmp3/*.mp3",
    "kenya-dekut/data/wav-22kHz/*.wav",
    "opensoundscape-samples/tests/audio/great_plains_toad.wav",
    "opensoundscape-samples/tests/audio/rugr_drum.wav",
)
#: the low score at which false positives on bird-free files are counted too (BirdNET-Analyzer's
#: default minimum confidence): at 0.5 every model may stay silent on them
LOW_SCORE = 0.1
#: what each trained contender changes in the recipe: the loss (``bce``: per-species sigmoids that
#: can all be low, "no bird"), and background windows from other recordings labelled ``noise``
CONTENDERS: dict[str, tuple[dict[str, object], str | None]] = {
    "recipe": ({}, None),
    "recipe+bce": ({"train.loss": "bce"}, None),
    "recipe+bce+background": ({"train.loss": "bce"}, "clean"),
    # the pull and the epochs chosen on out-of-fold log loss over the training recordings, and
    # BirdNET's row kept for the species it beats there (train.prior_folds)
    # the residual on the raw embedding: BirdNET's own layer fine-tuned, pulled towards it
    "recipe+bce+background+raw": ({"train.loss": "bce", "model.params.norm": "none"}, "clean"),
    # a user's own recordings hold their species now and then: a third of the background snippets
    # carry a call of a training recording, still labelled noise; then BirdNET as the filter
    "recipe+bce+background-with-calls": ({"train.loss": "bce"}, "calls"),
    "recipe+bce+background-with-calls+filter": (
        {"train.loss": "bce", "train.background_filter": 0.5},
        "calls",
    ),
    # recipes/birds-soundscape.yaml as it is (bce, norm none, prior_folds, background_filter)
    "birds-soundscape": ({"recipe": "birds-soundscape.yaml"}, "clean"),
    # that, then self-training on the soundscapes it is deployed on (no labels): each round a
    # head of the same recipe trains on the labelled windows plus the previous model's confident
    # hard labels on every window of the test files (train.pseudo_labels); scored per round
    SELF_TRAINING: ({"recipe": "birds-soundscape.yaml", "train.pseudo_labels": [0.1, 0.5]}, "clean"),
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


def with_calls(out: Path, files: list[Path], train: pd.DataFrame, seed: int) -> list[Path]:
    """Copies of the background snippets, every third with a 6 s call of a training recording of a
    random species mixed in at -5 to +15 dB (the user never annotated it: still background)."""
    import soundfile as sf

    rng = np.random.default_rng(seed + 20_000)
    out.mkdir(parents=True, exist_ok=True)
    sources = train["source"].to_numpy()
    written = []
    for i, p in enumerate(files):
        y = _load(p)
        if i % 3 == 0:
            call = _load(Path(rng.choice(sources)))[: len(y)]
            at = int(rng.integers(0, len(y) - len(call) + 1))
            snr_db = rng.uniform(-5, 15)
            y[at : at + len(call)] += call * _rms(y) / _rms(call) * 10 ** (snr_db / 20)
        peak = float(np.max(np.abs(y)))
        name = out / p.name
        sf.write(name, (y / peak * 0.9 if peak > 0.9 else y).astype(np.float32), SR, subtype="PCM_16")
        written.append(name)
    return written


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


def false_events_per_hour(scores: Path, free: list[Path], min_score: float, background: list[str]) -> float:
    """Events per hour that ``detect`` would write on the bird-free files at ``min_score``: each
    window's top class when it is not a background class and scores at least ``min_score``,
    neighbouring windows of one label merged (``detect``'s ``top_k`` 1 and ``merge_events``)."""
    from chirpkit.audio import info
    from chirpkit.detection.events import merge_events

    m = pd.read_parquet(scores)
    m = m[m["file"].map(lambda f: Path(f).name).isin({p.name for p in free})]
    classes = list(m.columns[3:])
    probs = m[classes].to_numpy(np.float32)
    top = probs.argmax(axis=1)
    label = np.asarray(classes)[top]
    keep = (probs[np.arange(len(m)), top] >= min_score) & ~np.isin(label, background)
    windows = m.loc[keep, ["file", "start_s", "end_s"]].assign(label=label[keep], score=probs[keep].max(1))
    hours = sum(info(p).duration_s for p in free) / 3600
    return len(merge_events(windows)) / hours


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


def self_training(
    store: object, work: Path, files: list[Path], cfg: object, rounds: int
) -> list[tuple[str, object, dict[str, object]]]:
    """The ``birds-soundscape`` run of this draw (trained here when it is not a contender), then
    ``rounds`` of self-training on every test file (``distill`` with the same recipe as the
    student, ``finetune_epochs=0``); each round's model, to be scored."""
    import chirpkit

    teacher = work / "birds-soundscape"
    if not (teacher / "model.pt").is_file():  # pseudo_labels play no part without a teacher
        chirpkit.train(store, out=teacher, config=cfg, progress=False)
    out = work / "self-training"
    chirpkit.distill(
        store,
        out=out,
        teacher=teacher,
        unlabelled=files,
        config=cfg,
        rounds=rounds,
        finetune_epochs=0,
        progress=False,
    )
    return [(f"{SELF_TRAINING} r{r}", out / f"round{r}" / "distilled", {}) for r in range(1, rounds + 1)]


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
    kinds = {CONTENDERS[n][1] for n in args.contenders if n in CONTENDERS}
    noise_cats = {"clean": background_catalog(background)} if "clean" in kinds else {}
    if "calls" in kinds:
        noise_cats["calls"] = background_catalog(
            with_calls(work / "background-calls", background, train_cat, seed)
        )
    models: list[tuple[str, object, dict[str, object]]] = [("zero-shot", "birdnet", {"species": species})]
    train_s: dict[str, float] = {}
    for name in args.contenders:
        if name == "zero-shot":
            continue
        overrides, background_kind = CONTENDERS[name]
        recipe = ROOT / "recipes" / str(overrides["recipe"]) if "recipe" in overrides else args.recipe
        overrides = {k: v for k, v in overrides.items() if k != "recipe"}
        cfg = load_config(recipe, {"train.seed": seed, **overrides})
        both = (
            pd.concat([train_cat, noise_cats[background_kind]], ignore_index=True)
            if background_kind
            else train_cat
        )
        store_dir = work / ("store" if background_kind is None else f"store-background-{background_kind}")
        store = chirpkit.prepare(both, out=store_dir, config=cfg.audio, progress=False)
        t0 = time.perf_counter()
        if name == SELF_TRAINING:
            models += self_training(store, work, files, cfg, args.rounds)
            train_s[name] = round(time.perf_counter() - t0, 1)
            continue
        chirpkit.train(store, out=work / name, config=cfg, progress=False)
        train_s[name] = round(time.perf_counter() - t0, 1)
        models.append((name, work / name, {}))
    detect_cfg = DetectConfig(hop_s=1.5, formats=["csv", "scores"])
    elsewhere = [] if args.no_elsewhere else sorted(f for g in ELSEWHERE for f in DATA.glob(g))
    rows = []
    for name, model, kw in models:
        det = work / f"det-{name}"
        t0 = time.perf_counter()
        chirpkit.detect(model, files, out=det, config=detect_cfg, progress=False, **kw)
        seconds = time.perf_counter() - t0
        # BirdNET names its classes Latin_Common; the annotations use the Latin name
        names = pd.read_parquet(det / "scores.parquet").columns[3:]
        label_map = {n.split("_")[0]: n for n in names if "_" in n}
        # events (neighbouring windows of one label merged), as a user reads them: scored
        # window by window, a 6 s call covered by three windows would count two false positives
        report = chirpkit.detection_report(
            det / "events.csv",
            table,
            scores=det / "scores.parquet",
            background=[str(f) for f in free],
            label_map=label_map,
            n_boot=0,
            out=det / "report",
        )
        low = false_events_per_hour(det / "scores.parquet", free, LOW_SCORE, ["noise"])
        far: dict[str, float] = {}
        if elsewhere:
            chirpkit.detect(
                model, elsewhere, out=work / f"elsewhere-{name}", config=detect_cfg, progress=False, **kw
            )
            far = {
                f"fp_per_hour_elsewhere{suffix}": false_events_per_hour(
                    work / f"elsewhere-{name}" / "scores.parquet", elsewhere, at, ["noise"]
                )
                for suffix, at in (("", 0.5), ("_0.1", LOW_SCORE))
            }
        rows.append(
            {"seed": seed, "model": name, **measures(report), "fp_per_hour_0.1": low, **far}
            | {"detect_s": round(seconds, 1)}
            | {"train_s": train_s.get(name.split(" ")[0])}
        )
        print(
            f"draw {seed} {name:34} "
            + "  ".join(f"{k} {rows[-1][k]:.3f}" for k in MEASURES if k in rows[-1]),
            flush=True,
        )
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--draws", type=int, default=3)
    ap.add_argument("--files", type=int, default=20, help="soundscapes with birds per draw")
    ap.add_argument("--bird-free", type=int, default=4, help="bird-free soundscapes per draw")
    ap.add_argument("--train", type=int, default=5, help="training recordings per species")
    ap.add_argument("--rounds", type=int, default=2, help="self-training rounds")
    ap.add_argument("--recipe", type=Path, default=ROOT / "recipes" / "birds-fewshot.yaml")
    ap.add_argument(
        "--contenders", nargs="+", default=["zero-shot", *CONTENDERS], choices=["zero-shot", *CONTENDERS]
    )
    ap.add_argument("--out", type=Path, default=ROOT / "bench-out" / "soundscape_birds")
    ap.add_argument(
        "--no-elsewhere", action="store_true", help="skip the false positives on recordings from elsewhere"
    )
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
    measured = [m for m in MEASURES if m in table]
    agg = table.groupby("model", sort=False)[measured].agg(["mean", "std"])
    print(
        f"\nmean ± std over {args.draws} draw(s), {args.files} soundscapes + {args.bird_free} bird-free each:"
    )
    for model, r in agg.iterrows():
        print(f"{model:34} " + "  ".join(f"{m} {r[(m, 'mean')]:.3f} ± {r[(m, 'std')]:.3f}" for m in measured))
    gains = paired_gains(table)
    if len(gains):
        gains.to_csv(args.out / "paired_gains.csv", index=False, float_format="%.4f")
        print(
            "\nagainst zero-shot, draw by draw (model - zero-shot; false positives: zero-shot - model, "
            "so more is better everywhere): mean ± std of the paired gains, draws better / level / worse"
        )
        for model, g in gains.groupby("model", sort=False):
            print(
                f"{model:34} "
                + "  ".join(
                    f"{r.measure} {r.mean:+.3f} ± {r.std:.3f} ({r.better}/{r.level}/{r.worse})"
                    for r in g.itertuples(index=False)
                )
            )
    return 0


def paired_gains(table: pd.DataFrame) -> pd.DataFrame:
    """Each model's gain over zero-shot in the same draw, per measure: mean and std over draws of
    the paired differences (the draws share test files, so their spread is the gain's own, not the
    spread of the files' difficulty between draws), and how many draws are better, level, worse.
    False positives per hour count as gains when they fall."""
    if "zero-shot" not in set(table["model"]):
        return pd.DataFrame()
    base = table[table["model"] == "zero-shot"].set_index("seed")
    rows = []
    for model, g in table[table["model"] != "zero-shot"].groupby("model", sort=False):
        g = g.set_index("seed")
        for m in MEASURES:
            if m not in g or m not in base:
                continue
            sign = -1.0 if m.startswith("fp_per_hour") else 1.0
            d = (sign * (g[m] - base[m].reindex(g.index))).dropna()
            if d.empty:
                continue
            rows.append(
                {
                    "model": model,
                    "measure": m,
                    "mean": float(d.mean()),
                    "std": float(d.std(ddof=1)) if len(d) > 1 else float("nan"),
                    "better": int((d > 1e-9).sum()),
                    "level": int((d.abs() <= 1e-9).sum()),
                    "worse": int((d < -1e-9).sum()),
                }
            )
    return pd.DataFrame(rows)


if __name__ == "__main__":
    sys.exit(main())
