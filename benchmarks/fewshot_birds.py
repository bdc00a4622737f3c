"""Few-shot birds: trained heads vs BirdNET's zero-shot scores, on ../shared/data/xc-westcoast10.

    python benchmarks/fewshot_birds.py [--k 1 2 3 5] [--draws 5] [--group recording|recordist]
        [--custom 0] [--contenders zero-shot logreg prototype birdnet_linear birdnet_prior]

10 North American species × 10 xeno-canto recordings (6 s clips). For each k and seeded draw, k
recordings (or recordists, with ``--group recordist``) per species train and every other recording
of the species is the test set; every contender is scored on the same test clips (macro F1 per
clip, window scores averaged), in the same run:

* ``zero-shot``: BirdNET V2.4's own scores restricted to the 10 species (``chirpkit zero-shot``);
* ``logreg``: logistic regression on the BirdNET embedding, C chosen by grouped CV
  (``chirpkit baseline --model logreg --features birdnet``);
* ``prototype``: nearest class mean by cosine (``chirpkit baseline --model prototype``);
* ``birdnet_linear``, ``birdnet_prior`` and ``birdnet_fusion``: heads trained by ``chirpkit train``
  with ``recipes/birds-fewshot.yaml`` (``--set model.name=...``); the draws have no validation
  recordings, so the fusion weight stays at its default 0.5;
* ``student``: a small CNN distilled from that draw's ``birdnet_prior`` run with
  ``recipes/birds-student.yaml`` (``chirpkit distill``), on the training clips and the unlabelled
  recordings of ``soundscape24h-maad``, ``kenya-dekut`` and ``opensoundscape-samples``; its
  real-time factor is measured against the prior head's (BirdNET + head) on 10 minutes of those
  recordings, in the same run.

``--custom N`` renames N species to codes BirdNET cannot match (``custom_0``...), so the heads
must learn them from the recordings alone ("classes BirdNET does not know"); zero-shot scores only
the species it knows then. The store is prepared with the recipe's audio settings and embedded
once (the embedding cache is shared by every draw and contender). Results go to
``OUT/results.json`` (a rerun skips what is there), a table on stdout and ``OUT/learning_curve.png``.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("CHIRPKIT_DATA", ROOT.parent / "shared" / "data")) / "xc-westcoast10"
CONTENDERS = (
    "zero-shot",
    "logreg",
    "prototype",
    "birdnet_linear",
    "birdnet_prior",
    "birdnet_fusion",
    "student",
)
#: unlabelled recordings for the student (none of them is a test recording)
UNLABELLED = ("soundscape24h-maad", "kenya-dekut", "opensoundscape-samples")


def catalog(group: str, custom: int) -> pd.DataFrame:
    from chirpkit.data.ingest import ingest

    labels = pd.read_csv(DATA / "labels.csv")
    cat = ingest(DATA / "labels.csv", progress=False)
    if group == "recordist":
        by_path = {
            str((DATA / p).resolve()): r for p, r in zip(labels["path"], labels["recordist"], strict=True)
        }
        cat["group"] = cat["source"].map(lambda s: by_path[str(Path(s).resolve())])
    renamed = {c: f"custom_{i}" for i, c in enumerate(sorted(cat["label"].unique())[:custom])}
    cat["label"] = cat["label"].map(lambda c: renamed.get(c, c))
    cat["labels"] = [[renamed.get(c, c) for c in v] for v in cat["labels"]]
    cat["split"] = "train"
    return cat


def draw_split(store: object, k: int, seed: int) -> object | None:
    """A view of the store: k groups per class train, the class's other groups test."""
    st = copy.copy(store)
    idx = store.index  # type: ignore[attr-defined]
    rng = np.random.default_rng(seed)
    train_groups: set[str] = set()
    for _, g in idx.groupby("label"):
        groups = sorted(g["group"].astype(str).unique())
        if len(groups) <= k:
            return None  # a class with no test group left
        train_groups |= set(rng.choice(groups, size=k, replace=False).tolist())
    st.index = idx.assign(split=np.where(idx["group"].astype(str).isin(train_groups), "train", "test"))
    return st


def realtime_factors(student: Path, teacher: Path, work: Path) -> dict[str, float]:
    """``detect`` real-time factors of the student and of the teacher on the same 10 minutes."""
    from chirpkit.config import DetectConfig
    from chirpkit.detection.job import detect

    files = sorted((DATA.parent / "soundscape24h-maad" / "data").rglob("*.flac"))[:60]
    out = {}
    for name, run in (("student", student), ("teacher", teacher)):
        detect(run, files, out=work / f"detect-{name}", config=DetectConfig(hop_s=3.0), progress=False)
        summary = json.loads((work / f"detect-{name}" / "detect_summary.json").read_text())
        out[f"{name}_rtf"] = float(summary["realtime_factor"])
    out["speed_ratio"] = out["student_rtf"] / out["teacher_rtf"]
    return out


def _measures(m: dict[str, object]) -> dict[str, object]:
    """The figures every contender reports: macro F1 and the threshold-free macro AP / ROC-AUC.

    Every test clip holds one species, so macro F1 is that of the highest score for every model: a
    multi-label run (``train.loss: bce``) reports it as ``argmax_macro_f1`` beside its F1 at 0.5
    (kept as ``macro_f1_at_0.5``), which would otherwise be compared with zero-shot's argmax."""
    out = {k: m.get(k) for k in ("macro_f1", "cmap", "macro_roc_auc")}
    if "argmax_macro_f1" in m:
        out["macro_f1_at_0.5"], out["macro_f1"] = m["macro_f1"], m["argmax_macro_f1"]
    return out


def run_contender(name: str, view: object, recipe: Path, work: Path) -> dict[str, object]:
    from chirpkit.config import load_config
    from chirpkit.evaluation.report import evaluate
    from chirpkit.evaluation.zeroshot import zero_shot
    from chirpkit.training.baselines import baseline
    from chirpkit.training.loop import train

    t0 = time.perf_counter()
    if name == "zero-shot":
        r = zero_shot(view, split="test", progress=False)  # type: ignore[arg-type]
        res = {**_measures(r), "classes": len(r["classes_mapped"])}
    elif name in ("logreg", "prototype"):
        r = baseline(view, model=name, features="birdnet", progress=False)  # type: ignore[arg-type]
        res = {**_measures(r["test"]), "C": r.get("C")}
    elif name == "student":
        from chirpkit.training.distill import distill

        teacher = work / "teacher"
        train(view, out=teacher, config=load_config(recipe), progress=False)  # type: ignore[arg-type]
        student_cfg = load_config(recipe.parent / "birds-student.yaml")
        unlabelled = [DATA.parent / d for d in UNLABELLED if (DATA.parent / d).is_dir()]
        distill(
            view,
            out=work / "student",
            teacher=teacher,
            unlabelled=unlabelled,
            config=student_cfg,
            progress=False,
        )  # type: ignore[arg-type]
        m = evaluate(work / "student", split="test", store=view, progress=False)  # type: ignore[arg-type]
        res = {**_measures(m), **realtime_factors(work / "student", teacher, work)}
    else:
        over: dict[str, object] = {"model.name": name}
        if name != "birdnet_prior":  # the recipe's parameters are the prior head's
            over["model.params"] = {}
        cfg = load_config(recipe, over)
        run = work / name
        train(view, out=run, config=cfg, progress=False)  # type: ignore[arg-type]
        m = evaluate(run, split="test", store=view, progress=False)  # type: ignore[arg-type]
        per_class = pd.read_csv(run / "eval-test" / "per_class.csv")
        new = per_class[per_class["class"].str.startswith("custom_")]
        res = {**_measures(m), "new_classes_f1": float(new["f1"].mean()) if len(new) else None}
    res["seconds"] = round(time.perf_counter() - t0, 1)
    return res


def plot(table: pd.DataFrame, path: Path, title: str) -> None:
    from chirpkit.utils.plots import _save, plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    for name, g in table.groupby("contender", sort=False):
        s = g.groupby("k")["macro_f1"].agg(["mean", "std"])
        ax.errorbar(s.index, s["mean"], yerr=s["std"].fillna(0), marker="o", capsize=3, label=name)
    ax.set_xticks(sorted(table["k"].unique()))
    ax.set_xlabel("training recordings per species (k)")
    ax.set_ylabel("test macro F1 (mean ± std over draws)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    _save(fig, path)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--k", nargs="+", type=int, default=[1, 2, 3, 5])
    ap.add_argument("--draws", type=int, default=5)
    ap.add_argument("--group", choices=["recording", "recordist"], default="recording")
    ap.add_argument("--custom", type=int, default=0, help="species renamed to codes BirdNET cannot match")
    ap.add_argument("--contenders", nargs="+", default=list(CONTENDERS), choices=CONTENDERS)
    ap.add_argument("--recipe", type=Path, default=ROOT / "recipes" / "birds-fewshot.yaml")
    ap.add_argument("--out", type=Path, default=ROOT / "bench-out" / "fewshot")
    ap.add_argument("--report-only", action="store_true", help="table and plot of what results.json holds")
    args = ap.parse_args()
    if not DATA.is_dir():
        print(f"skipped: {DATA} not found")
        return 0
    from chirpkit.config import load_config
    from chirpkit.data.store import prepare

    logging.basicConfig(level=logging.WARNING, format="chirpkit: %(message)s")
    tag = f"{args.group}-custom{args.custom}"
    out = args.out / tag
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    cfg = load_config(args.recipe)
    store = prepare(catalog(args.group, args.custom), out=out / "store", config=cfg.audio, progress=False)
    for k in [] if args.report_only else args.k:
        for draw in range(args.draws):
            view = draw_split(store, k, seed=1000 * k + draw)
            if view is None:
                print(f"k={k}: some species has only {k} {args.group}(s): no test left; skipped")
                break
            for name in args.contenders:
                key = f"{k}/{draw}/{name}"
                if key in results or (name == "zero-shot" and args.custom >= len(store.classes)):
                    continue  # (zero-shot knows none of the species when all are renamed)
                with tempfile.TemporaryDirectory(prefix="fewshot-") as tmp:
                    results[key] = {"k": k, "draw": draw, "contender": name} | run_contender(
                        name, view, args.recipe, Path(tmp)
                    )
                results_path.write_text(json.dumps(results, indent=2))
                print(f"k={k} draw={draw} {name:15} macro F1 {results[key]['macro_f1']:.3f}", flush=True)
    table = pd.DataFrame(results.values())
    table = table[table["k"].isin(args.k) & table["contender"].isin(args.contenders)]
    summary = table.groupby(["contender", "k"])["macro_f1"].agg(["mean", "std", "count"]).unstack("k")
    print(f"\ntest macro F1, mean ± std over draws ({args.group} groups, {args.custom} custom species)")
    for name in [c for c in args.contenders if c in summary.index]:
        cells = [
            f"{summary.loc[name, ('mean', k)]:.3f} ± {summary.loc[name, ('std', k)]:.3f}"
            for k in args.k
            if name in summary.index and ("mean", k) in summary.columns
        ]
        print(f"{name:16} " + "   ".join(f"k={k}: {c}" for k, c in zip(args.k, cells, strict=False)))
    for measure in ("cmap", "macro_roc_auc"):
        if measure not in table or table[measure].isna().all():
            continue  # results from before these measures were recorded
        m = table.groupby(["contender", "k"])[measure].agg(["mean", "std"]).round(3)
        print(f"\ntest {measure} (threshold-free), mean / std over draws:\n" + m.unstack("k").to_string())
    if "new_classes_f1" in table and args.custom:
        new = table.dropna(subset=["new_classes_f1"]).groupby(["contender", "k"])["new_classes_f1"].mean()
        print("F1 on the custom species only:\n" + new.round(3).to_string())
    plot(table, out / "learning_curve.png", f"xc-westcoast10, {args.group} groups, {args.custom} custom")
    return 0


if __name__ == "__main__":
    sys.exit(main())
