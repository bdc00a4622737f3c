"""The ``chirpkit`` command: one verb per public function.

Each verb is declared once, in :data:`VERBS` (name, command, help, whether it reads settings and
shows progress), with its arguments in an ``_args_*`` function beside its ``cmd_*`` command;
:func:`build_parser` builds argparse from that table, and ``tests/test_cli.py`` checks that every
flag a verb accepts is read by its command. Imports of torch/Lightning happen inside the verbs, so
``chirpkit --help`` answers at once.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args, get_origin

from chirpkit._options import add_options, options_from_args
from chirpkit._version import __version__
from chirpkit.data.options import ANNOTATION_TABLE, IngestOptions, SourceOptions

if TYPE_CHECKING:
    from chirpkit.config import Config

log = logging.getLogger("chirpkit")

EPILOG = """\
Typical use:
  chirpkit demo                                   synthetic birds → trained model → detections
  chirpkit fit data/ --out runs/first             folder of class sub-folders → model + report
  chirpkit detect runs/first recordings/ --out detections/

Step by step:
  chirpkit ingest data/ --out catalog.parquet     (or a CSV: path,label[,group])
  chirpkit ingest --annotations annotations.csv --audio-dir recordings/ --out catalog.parquet
  chirpkit split catalog.parquet
  chirpkit prepare catalog.parquet --out store/
  chirpkit train store/ --out runs/first
  chirpkit evaluate runs/first --split test

Search by example:
  chirpkit index recordings/ --out archive.idx    embed every window once (grows with new files)
  chirpkit search archive.idx --query call.wav --start-s 1.2 --end-s 2.0 --out hits/
  chirpkit review hits/ --strategy score          confirm or reject the nearest windows
  chirpkit ingest --reviews hits/ --out hits.parquet
  chirpkit train-head archive.idx hits.parquet --out runs/head   a head on the index's embeddings
  chirpkit detect runs/head --index archive.idx --out found/      the archive, from the index

The review loop:
  chirpkit review detections/                     check detections in the browser → detections/reviews.db
  chirpkit calibrate detections/ --precision 0.9  per-class thresholds from the reviews
  chirpkit ingest --reviews detections/ --merge-with runs/first/catalog.parquet --out more.parquet

Verbs that read settings take --config FILE.yaml and --set section.key=value (e.g. --set
train.epochs=5); `chirpkit VERB --help` shows which.
"""


def _config(args: argparse.Namespace, extra: dict[str, Any] | None = None) -> Config:
    """The config of ``--config`` and ``--set``, then the config flags given (their dest is the
    key: see :func:`_config_flags`), then ``extra``."""
    from chirpkit.config import load_config

    overrides = list(args.set or [])
    flags = {key: value for key, value in vars(args).items() if "." in key}
    for key, value in {**flags, **(extra or {})}.items():
        if value is not None:
            overrides.append(f"{key}={json.dumps(value) if not isinstance(value, str) else value}")
    return load_config(args.config, overrides)


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


def _args_ingest(p: argparse.ArgumentParser) -> None:
    p.add_argument("src", nargs="?", help="folder with one sub-folder per class, or a CSV path,label[,group]")
    p.add_argument(
        "--out", required=True, help="catalog to write (.parquet; a .csv view is written beside it)"
    )
    add_options(p, IngestOptions)
    _config_flags(p, {"audio.window_s": "--window-s"})


def cmd_ingest(args: argparse.Namespace) -> None:
    from chirpkit.data.ingest import ingest

    if args.reviews and (args.src or args.annotations):
        from chirpkit.errors import DataError

        raise DataError(
            "--reviews adds reviewed detections to an existing catalog: build it first "
            "(chirpkit ingest ... --out base.parquet), then --reviews DIR --merge-with base.parquet"
        )
    cfg = _config(args)
    cat = ingest(
        args.src,
        out=args.out,
        window_s=cfg.audio.window_s,
        hop_s=cfg.audio.window_hop_s,
        progress=not args.no_progress,
        **options_from_args(IngestOptions, args),
    )
    n_classes, n_groups = cat["label"].nunique(), cat["group"].nunique()
    if args.reviews:
        n_rev = int(cat["annotation"].astype(str).str.startswith("review:").sum())
        print(f"{len(cat)} example(s) ({n_rev} from reviews), {n_classes} class(es) → {args.out}")
    else:
        print(f"{len(cat)} example(s), {n_classes} class(es), {n_groups} group(s) → {args.out}")


def _args_review(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "folder", help="output folder of `chirpkit detect` (reviews are kept in FOLDER/reviews.db)"
    )
    p.add_argument("--run", help="model run that made the detections (default: from detect_summary.json)")
    p.add_argument("--port", type=int, default=8765, help="port (default 8765)")
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1: this machine only); any other needs --token",
    )
    p.add_argument(
        "--token", help="secret every request must carry (required with a --host other than loopback)"
    )
    p.add_argument("--no-browser", action="store_true", help="do not open the page in a browser")
    p.add_argument(
        "--strategy",
        default="stratified",
        choices=["stratified", "uncertainty", "random", "score"],
        help="what to review next: stratified (per class, across score bins: for thresholds, the default), "
        "uncertainty (P(correct) nearest 0.5 first: hard examples for retraining), random (unbiased "
        "precision), score (highest first)",
    )
    p.add_argument("--bins", type=int, default=10, help="score bins per class (stratified; default 10)")
    p.add_argument("--per-bin", type=int, help="detections drawn per bin (stratified; default all)")
    p.add_argument("--seed", type=int, default=0, help="seed of the draws")
    p.add_argument("--reviewer", help="reviewer name stored with each verdict (the page can change it)")
    p.add_argument(
        "--context-s", type=float, default=1.5, help="seconds of context either side (default 1.5)"
    )
    p.add_argument(
        "--max-freq-hz", type=float, help="top of the spectrograms (default: half the model's sample rate)"
    )
    p.add_argument("--audio-dir", help="where to find recordings whose paths in the table are relative")
    p.add_argument("--export", metavar="CSV", help="write the reviews to CSV (and Raven tables) and exit")
    p.add_argument("--raven", help="with --export: folder for Raven tables of right detections")
    p.add_argument("--history", action="store_true", help="with --export: every verdict, not only the latest")


def cmd_review(args: argparse.Namespace) -> None:
    if args.export:
        from chirpkit.review.export import export_reviews

        table = export_reviews(args.folder, args.export, raven=args.raven, history=args.history)
        print(f"{len(table)} review(s) → {args.export}")
        return
    from chirpkit.review.serve import serve

    serve(
        args.folder,
        host=args.host,
        port=args.port,
        token=args.token,
        open_browser=not args.no_browser,
        run=args.run,
        audio_dir=args.audio_dir,
        strategy=args.strategy,
        bins=args.bins,
        per_bin=args.per_bin,
        seed=args.seed,
        reviewer=args.reviewer or "",
        context_s=args.context_s,
        max_freq_hz=args.max_freq_hz,
    )


def _args_calibrate(p: argparse.ArgumentParser) -> None:
    p.add_argument("folder", help="output folder of `chirpkit detect` with reviews (reviews.db)")
    target = p.add_mutually_exclusive_group()
    target.add_argument("--precision", type=float, help="target precision (default 0.9)")
    target.add_argument("--recall", type=float, help="target share of the correct detections kept")
    p.add_argument(
        "--min-reviews",
        type=int,
        default=20,
        help="fewest reviews to fit a class (default 20; 2 right, 2 wrong)",
    )
    p.add_argument("--out", help="folder for thresholds.json/.csv and the PNGs (default FOLDER/calibration)")
    p.add_argument(
        "--apply",
        action="store_true",
        help="also write thresholds.json into the model run, so the next detect uses them",
    )
    p.add_argument("--run", help="model run (default: the one named in detect_summary.json)")


def cmd_calibrate(args: argparse.Namespace) -> None:
    from chirpkit.review.calibrate import calibrate

    table = calibrate(
        args.folder,
        precision=args.precision,
        recall=args.recall,
        min_reviews=args.min_reviews,
        out=args.out,
        apply=args.apply,
        run=args.run,
    )
    cols = ["class", "threshold", "precision", "recall", "reviews", "correct", "detections", "kept", "status"]
    print(table[cols].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    out = Path(args.out) if args.out else Path(args.folder) / "calibration"
    print(f"thresholds → {out / 'thresholds.json'} (+ thresholds.csv, reliability_<class>.png)")


def _args_inspect(p: argparse.ArgumentParser) -> None:
    p.add_argument("catalog", help="catalog (from ingest; after split for the leakage audit)")
    p.add_argument("--out", required=True, help="report folder (index.html, report.md, PNGs, CSVs)")
    _config_flags(p, {"split.min_count": "--min-count"})
    p.add_argument(
        "--no-audio", action="store_true", help="skip the audio scan (frequencies, noise, duplicates)"
    )
    p.add_argument(
        "--max-per-class", type=int, default=200, help="examples measured per class (frequency range)"
    )
    p.add_argument(
        "--duplicate-threshold",
        type=float,
        default=0.98,
        help="fingerprint similarity from which two examples count as near-identical",
    )


def cmd_inspect(args: argparse.Namespace) -> None:
    from chirpkit.data.report import inspect

    cfg = _config(args)
    summary = inspect(
        args.catalog,
        out=args.out,
        min_count=cfg.split.min_count,
        audio=not args.no_audio,
        max_per_class=args.max_per_class,
        duplicate_threshold=args.duplicate_threshold,
        progress=not args.no_progress,
    )
    print(f"report: {Path(args.out) / 'index.html'}")
    _print_json({k: v for k, v in summary.items() if not isinstance(v, dict | list)})


def _args_augment_preview(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", help="a prepared store (first training window) or an audio file")
    p.add_argument("--out", default="augment_preview.png", help="PNG to write")
    p.add_argument("--seed", type=int, default=0)


def cmd_augment_preview(args: argparse.Namespace) -> None:
    from chirpkit.augment.preview import augment_preview

    path = augment_preview(args.source, out=args.out, config=_config(args), seed=args.seed)
    print(f"preview: {path}")


def _args_split(p: argparse.ArgumentParser) -> None:
    p.add_argument("catalog", help="catalog from ingest")
    p.add_argument("--out", help="where to write the split catalog (default: overwrite the input)")
    _config_flags(
        p,
        {
            "split.val_fraction": "--val",
            "split.test_fraction": "--test",
            "split.strategy": "--strategy",
            "split.min_count": "--min-count",
            "split.folds": "--folds",
            "split.few_groups": "--few-groups",
            "split.seed": "--seed",
        },
    )


def cmd_split(args: argparse.Namespace) -> None:
    from chirpkit.data.split import split

    cfg = _config(args)
    out = args.out or args.catalog
    df = split(args.catalog, out=out, config=cfg.split)
    counts = df["split"].value_counts()
    line = " ".join(f"{s}={counts.get(s, 0)}" for s in ("train", "val", "test"))
    if "fold" in df and cfg.split.folds:
        line += f" in {cfg.split.folds} folds"
    print(f"{line} → {out}")


def _args_prepare(p: argparse.ArgumentParser) -> None:
    p.add_argument("catalog", help="catalog (after split)")
    p.add_argument("--out", required=True, help="store folder (reused as a cache)")
    _config_flags(
        p,
        {"audio.sample_rate": "--sample-rate", "audio.window_s": "--window-s", "audio.workers": "--workers"},
    )
    p.add_argument(
        "--engine",
        choices=["local", "dask"],
        default="local",
        help="dask: one task per file on a Dask cluster (the store must be on a shared disk)",
    )
    p.add_argument(
        "--scheduler", metavar="ADDRESS", help="with --engine dask: tcp://HOST:8786 (default: local)"
    )


def cmd_prepare(args: argparse.Namespace) -> None:
    from chirpkit.data.store import prepare

    cfg = _config(args)
    store = prepare(
        args.catalog,
        out=args.out,
        config=cfg.audio,
        progress=not args.no_progress,
        engine=args.engine,
        scheduler=args.scheduler,
    )
    print(f"{len(store)} window(s) of {cfg.audio.window_s} s at {cfg.audio.sample_rate} Hz → {args.out}")


def _args_train(p: argparse.ArgumentParser) -> None:
    p.add_argument("store", help="prepared store")
    p.add_argument("--out", required=True, help="run folder")
    _train_flags(p, resume=True, sanity=True)


def cmd_train(args: argparse.Namespace) -> None:
    from chirpkit.training.loop import train

    cfg = _config(args)
    summary = train(
        args.store,
        out=args.out,
        config=cfg,
        resume=args.resume,
        sanity=args.sanity,
        progress=not args.no_progress,
    )
    _print_json(summary)


def _args_cross_validate(p: argparse.ArgumentParser) -> None:
    p.add_argument("store", help="prepared store whose catalog was split with split.folds=K")
    p.add_argument("--out", required=True, help="folder for the fold runs and cv.json")
    _train_flags(p)


def cmd_cv(args: argparse.Namespace) -> None:
    from chirpkit.training.tuning import cross_validate

    cfg = _config(args)
    res = cross_validate(args.store, config=cfg, out=args.out, progress=not args.no_progress, keep_runs=True)
    _print_json(res)


def _args_embed(p: argparse.ArgumentParser) -> None:
    p.add_argument("store", help="prepared store")
    p.add_argument(
        "--engine", choices=["local", "dask"], default="local", help="where to run (default local)"
    )
    p.add_argument("--scheduler", help="Dask scheduler address tcp://HOST:8786 (default: a local cluster)")
    p.add_argument("--workers", type=int, default=2, help="processes of a local Dask cluster (default 2)")


def cmd_embed(args: argparse.Namespace) -> None:
    from chirpkit.models.embeddings import embed

    cfg = _config(args)
    res = embed(
        args.store,
        views=cfg.model.embedding_views,
        shift_s=cfg.model.embedding_shift_s,
        engine=args.engine,
        scheduler=args.scheduler,
        workers=args.workers,
        progress=not args.no_progress,
    )
    print(
        f"{res['windows']} window(s) × {res['views']} view(s): {res['computed']} part file(s) embedded, "
        f"{res['cached']} already cached"
    )


def _args_index(p: argparse.ArgumentParser) -> None:
    p.add_argument("audio", nargs="+", help="files, folders, glob patterns, URLs or @list.txt")
    p.add_argument("--out", required=True, help="index folder (made, or grown with new files)")
    p.add_argument("--hop-s", type=float, help="seconds between windows (default half a window: 1.5)")
    p.add_argument("--batch-size", type=int, default=32, help="windows per model call (default 32)")
    p.add_argument(
        "--workers", type=int, default=2, help="decode threads, or processes of a local Dask cluster"
    )
    p.add_argument(
        "--engine", choices=["local", "dask"], default="local", help="where to run (default local)"
    )
    p.add_argument("--scheduler", help="Dask scheduler address tcp://HOST:8786 (default: a local cluster)")


def cmd_index(args: argparse.Namespace) -> None:
    from chirpkit.similarity.build import index

    res = index(
        args.audio,
        out=args.out,
        hop_s=args.hop_s,
        batch_size=args.batch_size,
        workers=args.workers,
        engine=args.engine,
        scheduler=args.scheduler,
        progress=not args.no_progress,
    )
    _print_json({k: v for k, v in res.to_dict().items() if k != "failed"} | {"failed": len(res.failed)})


def _queries(args: argparse.Namespace) -> list[Any]:
    from chirpkit.errors import ConfigError
    from chirpkit.similarity.query import Query

    if (args.start_s is not None or args.end_s is not None) and len(args.query or []) != 1:
        raise ConfigError("--start-s/--end-s give the span of one --query clip; for several, cut clips")
    queries = [
        Query(path=q, start_s=args.start_s, end_s=args.end_s, label=args.label) for q in args.query or []
    ]
    if args.query_class:
        if not args.store:
            raise ConfigError(
                "--class LABEL takes the training windows of a prepared store: add --store STORE"
            )
        queries += [Query(store=args.store, label=c) for c in args.query_class]
    if not queries:
        raise ConfigError(
            "give --query CLIP (with --start-s/--end-s for a span) or --store STORE --class LABEL"
        )
    return queries


def _args_search(p: argparse.ArgumentParser) -> None:
    p.add_argument("index", help="index folder (chirpkit index)")
    p.add_argument("--query", action="append", metavar="CLIP", help="an example recording (repeatable)")
    p.add_argument("--start-s", type=float, help="start of the call in the --query recording")
    p.add_argument("--end-s", type=float, help="end of the call in the --query recording")
    p.add_argument("--label", help="name of the --query results (default: the clip's file name)")
    p.add_argument("--store", help="prepared store whose --class windows are queries")
    p.add_argument(
        "--class",
        dest="query_class",
        action="append",
        metavar="LABEL",
        help="a class of --store (repeatable)",
    )
    p.add_argument("--top", type=int, default=100, help="windows per query label (default 100)")
    p.add_argument(
        "--combine",
        choices=["max", "mean"],
        default="max",
        help="several examples: best similarity to any (max, default) or to their mean",
    )
    p.add_argument(
        "--exact",
        choices=["auto", "yes", "no"],
        default="auto",
        help="scan every window (yes), the approximate graph (no), or exact up to 200,000 windows (auto)",
    )
    p.add_argument(
        "--all-windows",
        action="store_true",
        help="keep windows overlapping a better result by half a window (default: one per call)",
    )
    p.add_argument(
        "--allow-lower-rate", action="store_true", help="search with a query sampled below the archive"
    )
    p.add_argument("--out", required=True, help="folder for detections.csv (open it with chirpkit review)")


def cmd_search(args: argparse.Namespace) -> None:
    from chirpkit.similarity.query import search

    exact: bool | str = "auto" if args.exact == "auto" else args.exact == "yes"
    res = search(
        args.index,
        _queries(args),
        top=args.top,
        combine=args.combine,
        exact=exact,
        distinct=not args.all_windows,
        allow_lower_rate=args.allow_lower_rate,
        out=args.out,
        progress=not args.no_progress,
    )
    print(res.table.head(10).to_string(index=False))
    print(
        f"{len(res.table)} window(s) ({res.method} search over {res.settings['windows']} windows) → "
        f"{args.out}/detections.csv; review them: chirpkit review {args.out} --strategy score"
    )


def _args_train_head(p: argparse.ArgumentParser) -> None:
    p.add_argument("index", help="index folder (chirpkit index)")
    p.add_argument(
        "labels", help="catalog (ingest --reviews of a search folder), or a reviewed search/detect folder"
    )
    p.add_argument("--out", required=True, help="run folder (model.pt: chirpkit detect RUN AUDIO)")
    p.add_argument(
        "--background-label", default="noise", help="label of negatives (rejected results; default noise)"
    )
    p.add_argument(
        "--negatives", type=int, default=200, help="random archive windows used as negatives (default 200)"
    )
    p.add_argument("--epochs", type=int, default=300, help="full-batch AdamW steps (default 300)")
    p.add_argument("--seed", type=int, default=0)


def cmd_train_head(args: argparse.Namespace) -> None:
    from chirpkit.similarity.head import train_head

    res = train_head(
        args.index,
        args.labels,
        out=args.out,
        background_label=args.background_label,
        negatives=args.negatives,
        epochs=args.epochs,
        seed=args.seed,
    )
    _print_json(res.to_dict())


def _args_distill(p: argparse.ArgumentParser) -> None:
    p.add_argument("store", help="prepared store (after split) with the labelled windows")
    p.add_argument("--out", required=True, help="the student's run folder")
    p.add_argument("--teacher", required=True, help="run folder or model file that knows every class")
    p.add_argument(
        "--unlabelled",
        nargs="+",
        metavar="AUDIO",
        help="recordings without labels: files, folders, @list.txt",
    )
    p.add_argument(
        "--rounds", type=int, default=1, help="distil + fine-tune cycles (self-training, default 1)"
    )
    p.add_argument(
        "--finetune-epochs",
        type=int,
        help="epochs on the labels after distilling (default half; 0: none, for self-training)",
    )
    _train_flags(p)


def cmd_distill(args: argparse.Namespace) -> None:
    from chirpkit.training.distill import distill

    cfg = _config(args)
    res = distill(
        args.store,
        out=args.out,
        teacher=args.teacher,
        unlabelled=args.unlabelled or (),
        config=cfg,
        rounds=args.rounds,
        finetune_epochs=args.finetune_epochs,
        progress=not args.no_progress,
    )
    last = res["rounds"][-1]["student"]
    print(
        f"student after {len(res['rounds'])} round(s): best val macro F1 {last['best_val_macro_f1']}; "
        f"{res['unlabelled_windows']} unlabelled window(s) → {res['run']}"
    )


def _args_tune(p: argparse.ArgumentParser) -> None:
    p.add_argument("store", help="prepared store whose catalog was split with split.folds=K")
    p.add_argument(
        "--out", required=True, help="study folder (study.db, best_config.yaml, trials.csv, tune.png)"
    )
    p.add_argument("--trials", type=int, default=20, help="trials in the study in all (default 20)")
    p.add_argument("--timeout-s", type=float, help="stop starting trials after this many seconds")
    p.add_argument("--epochs", type=int, help="epochs per fold and trial (default train.epochs)")
    p.add_argument("--space", help="YAML search space: key: [choices] or {low, high, log}")
    p.add_argument("--final", action="store_true", help="retrain the best config on all non-test data")
    p.add_argument("--seed", type=int, default=0)


def cmd_tune(args: argparse.Namespace) -> None:
    import yaml

    from chirpkit.training.tuning import tune

    cfg = _config(args)
    space = yaml.safe_load(Path(args.space).read_text()) if args.space else None
    res = tune(
        args.store,
        out=args.out,
        config=cfg,
        trials=args.trials,
        timeout_s=args.timeout_s,
        space=space,
        epochs=args.epochs,
        final=args.final,
        seed=args.seed,
        progress=not args.no_progress,
    )
    _print_json(res)


def _args_baseline(p: argparse.ArgumentParser) -> None:
    p.add_argument("store", help="prepared store (after split)")
    p.add_argument("--model", default="logreg", choices=["knn", "tree", "logreg", "mlp", "prototype"])
    p.add_argument("--features", default="mfcc", choices=["mfcc", "logmel", "birdnet"])
    p.add_argument("--folds", type=int, default=5, help="GroupKFold folds when the split has no fold column")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="folder for baseline_<model>_<features>.json")


def cmd_baseline(args: argparse.Namespace) -> None:
    from chirpkit.training.baselines import baseline

    res = baseline(
        args.store,
        model=args.model,
        features=args.features,
        folds=args.folds,
        seed=args.seed,
        out=args.out,
        progress=not args.no_progress,
    )
    _print_json(res)


def _args_zero_shot(p: argparse.ArgumentParser) -> None:
    p.add_argument("store", help="prepared store")
    p.add_argument("--split", default="test")
    p.add_argument("--label-map", help="CSV class,BirdNET name (Latin or common) or an eBird taxonomy CSV")
    p.add_argument("--out", help="folder for zero_shot_<split>.json")


def cmd_zero_shot(args: argparse.Namespace) -> None:
    from chirpkit.evaluation.zeroshot import zero_shot

    res = zero_shot(
        args.store, split=args.split, label_map=args.label_map, out=args.out, progress=not args.no_progress
    )
    _print_json({k: v for k, v in res.items() if k != "classes_mapped"})


def _args_profile(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", nargs="?", default="small_cnn", help="registered model name or a run folder")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true", help="also print the full result as JSON")


def cmd_profile(args: argparse.Namespace) -> None:
    from chirpkit.models.profile import profile

    res = profile(args.model, config=_config(args), batch_size=args.batch_size, device=args.device)
    mb = 1024**2
    m, e = res["measured"], res["estimate"]
    print(f"{res['model']}  ({res['input']}, batch {res['batch_size']}, {res['device']})")
    print(f"  parameters ............ {res['params']:,}")
    print(
        f"  GFLOPs per window ..... {res['gflops_per_window']:.3f} inference, "
        f"{res['training_step_gflops_per_window']:.3f} training step"
    )
    print(
        f"  throughput ............ {m['inference_windows_per_s']:.0f} windows/s inference, "
        f"{m['train_windows_per_s']:.0f} windows/s training"
    )
    print(
        f"  training step memory .. measured {m['train_step_peak_bytes'] / mb:.0f} MB; estimate "
        f"{e['train_total_bytes'] / mb:.0f} MB = weights {e['weights_bytes'] / mb:.1f} + grads "
        f"{e['gradients_bytes'] / mb:.1f} + AdamW states {e['optimizer_bytes'] / mb:.1f} + activations "
        f"{e['activations_bytes'] / mb:.0f}"
    )
    print(
        f"  inference memory ...... measured {m['inference_peak_bytes'] / mb:.0f} MB; estimate "
        f"{e['inference_total_bytes'] / mb:.0f} MB (weights + every activation at once)"
    )
    if args.json:
        _print_json(res)


def cmd_models(args: argparse.Namespace) -> None:
    from chirpkit.models import list_models, model_info

    for name in list_models():
        info = model_info(name)
        takes = "" if info.input == "spectrogram" else f" (input: {info.input})"
        print(f"{name:22} {info.description}{takes}")
    print(f"{'timm/<name>':22} any timm model (pip install 'chirpkit[timm]')")


def _args_evaluate(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="run folder")
    p.add_argument("--split", default="test", help="split to score (default test)")
    p.add_argument("--store", help="store to read (default: the one the run was trained on)")
    p.add_argument("--out", help="report folder (default RUN/eval-SPLIT)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument(
        "--thresholds",
        metavar="RULE",
        help="also choose one threshold per class on the val split: precision=0.9, recall=0.8 or "
        "f1 (saved as RUN/thresholds.json; detect applies it)",
    )
    p.add_argument(
        "--n-boot",
        type=int,
        default=1000,
        help="bootstrap draws over groups (recordings) for the 95%% intervals (default 1000; 0: none)",
    )
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")


def cmd_evaluate(args: argparse.Namespace) -> None:
    from chirpkit.evaluation.report import evaluate

    metrics = evaluate(
        args.run,
        split=args.split,
        store=args.store,
        out=args.out,
        device=args.device,
        thresholds=args.thresholds,
        n_boot=args.n_boot,
        seed=args.seed,
        progress=not args.no_progress,
    )
    keys = (
        "split",
        "macro_f1",
        "weighted_f1",
        "accuracy",
        "cmap",
        "macro_roc_auc",
        "top1",
        "ci",
        "n_examples",
    )
    _print_json({k: metrics[k] for k in keys if k in metrics})


def _detect_index(args: argparse.Namespace, cfg: Config) -> None:
    from chirpkit.errors import ConfigError
    from chirpkit.similarity.classify import detect_in_index

    species = args.species or args.lat is not None or args.lon is not None or args.week != -1
    audio_only = {
        "AUDIO": bool(args.audio),
        "--engine dask": args.engine != "local",
        "--scheduler": bool(args.scheduler),
        "--shard": args.shard is not None,
        "--device": args.device != "auto",
        "--fresh": args.fresh,
        "--retries": args.retries != 2,
        "--species/--lat/--lon/--week": species,
        "--format parquet/scores": bool({"parquet", "scores"} & set(args.format or [])),
        **{
            flag: getattr(args, key, None) is not None
            for key, flag in {
                "detect.hop_s": "--hop-s (the index's hop holds)",
                "detect.top_k": "--top-k",
                "detect.batch_size": "--batch-size",
                "detect.workers": "--workers",
                "detect.shard_s": "--shard-s",
            }.items()
        },
    }
    given = [flag for flag, on in audio_only.items() if on]
    if given:
        raise ConfigError(f"--index scores the index's embeddings, so {', '.join(given)} do(es) not apply")
    table = detect_in_index(
        args.run,
        args.index,
        out=args.out,
        min_score=cfg.detect.min_score,
        thresholds=cfg.detect.thresholds,
        merge_gap_s=cfg.detect.merge_gap_s,
        formats=cfg.detect.formats,
        progress=not args.no_progress,
    )
    print(f"{len(table)} detection(s) → {Path(args.out) / 'detections.csv'} (events: events.csv)")


def _args_detect(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "run",
        help="run folder, model.pt, an export (model.onnx, model.ts), or birdnet (BirdNET V2.4's own "
        "scores, no training)",
    )
    p.add_argument("audio", nargs="*", help="files, folders, glob patterns or @list.txt")
    p.add_argument(
        "--index",
        metavar="DB",
        help="score the windows of an index (chirpkit index) instead of audio: a head on its embeddings "
        "(train-head), no decoding",
    )
    p.add_argument("--out", required=True, help="output folder (detections.csv, events.csv, ...)")
    _config_flags(
        p,
        {
            "detect.hop_s": "--hop-s",
            "detect.min_score": "--min-score",
            "detect.thresholds": "--thresholds",
            "detect.top_k": "--top-k",
            "detect.batch_size": "--batch-size",
            "detect.workers": "--workers",
            "detect.shard_s": "--shard-s",
        },
    )
    p.add_argument(
        "--format",
        action="append",
        choices=["csv", "parquet", "raven", "audacity", "scores"],
        help="extra outputs (repeatable): parquet table, Raven selection tables, Audacity labels, "
        "scores (scores.parquet: every class for every window, for score-detections --scores)",
    )
    p.add_argument("--fresh", action="store_true", help="ignore results of an earlier run in --out")
    p.add_argument(
        "--device", default="auto", help="auto, cpu, cuda, cuda:1, ... (dask: cuda = one GPU per worker)"
    )
    p.add_argument(
        "--species", help="birdnet only: species list file (one a line: Latin_Common, Latin or common name)"
    )
    p.add_argument("--lat", type=float, help="birdnet only: latitude for BirdNET's location filter")
    p.add_argument("--lon", type=float, help="birdnet only: longitude for BirdNET's location filter")
    p.add_argument(
        "--week",
        type=int,
        default=-1,
        help="birdnet only: week of the year 1-48 (four a month) for the location filter; -1: all year",
    )
    p.add_argument(
        "--engine",
        choices=["local", "dask"],
        default="local",
        help="local: this process (default); dask: a Dask cluster (pip install 'chirpkit[dask]')",
    )
    p.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="with --engine dask: a running scheduler, tcp://HOST:8786 (default: start a local cluster "
        "of --workers processes)",
    )
    p.add_argument(
        "--shard",
        metavar="I/N",
        help="run only shard I of N (0-based) into the shared --out, e.g. a Slurm array: "
        "--shard $SLURM_ARRAY_TASK_ID/N; the last shard to finish writes the tables",
    )
    p.add_argument(
        "--retries", type=int, default=2, help="further attempts of a failing work unit (default 2)"
    )


def cmd_detect(args: argparse.Namespace) -> None:
    from chirpkit.detection.job import detect
    from chirpkit.errors import ConfigError

    cfg = _config(args, {"detect.formats": args.format})
    if args.index:
        _detect_index(args, cfg)
        return
    if not args.audio:
        raise ConfigError("give the recordings to scan (files, folders, globs, @list.txt), or --index DB")
    table = detect(
        args.run,
        args.audio,
        out=args.out,
        config=cfg.detect,
        device=args.device,
        resume=not args.fresh,
        progress=not args.no_progress,
        engine=args.engine,
        scheduler=args.scheduler,
        shard=args.shard,
        retries=args.retries,
        species=args.species,
        lat=args.lat,
        lon=args.lon,
        week=args.week,
    )
    if args.shard is not None and not (Path(args.out) / "detections.csv").is_file():
        print(f"shard {args.shard}: {len(table)} detection(s) in its parts; the last shard writes the tables")
    else:
        print(f"{len(table)} detection(s) → {Path(args.out) / 'detections.csv'} (events: events.csv)")


def _args_merge(p: argparse.ArgumentParser) -> None:
    p.add_argument("out", help="the --out folder of detect (after --shard I/N runs)")
    p.add_argument(
        "--partial",
        action="store_true",
        help="write tables from the units done so far, even if some are missing",
    )


def cmd_merge(args: argparse.Namespace) -> None:
    from chirpkit.detection.job import merge

    table = merge(args.out, partial=args.partial)
    print(f"{len(table)} detection(s) → {Path(args.out) / 'detections.csv'} (events: events.csv)")


def _args_export(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="run folder")
    p.add_argument("--format", default="onnx", choices=["onnx", "torchscript"])
    p.add_argument("--out", help="output file (default RUN/model.onnx or RUN/model.ts)")


def cmd_export(args: argparse.Namespace) -> None:
    from chirpkit.models.export import export

    info = export(args.run, format=args.format, out=args.out)
    print(f"{info['format']} → {info['path']} (max |Δ probability| vs PyTorch {info['max_abs_diff']:.2g})")


def _args_score_detections(p: argparse.ArgumentParser) -> None:
    p.add_argument("detections", help="detections.csv or events.csv from detect")
    p.add_argument("annotations", nargs="+", help="annotation table(s): points/box CSV, Raven, Audacity, ...")
    p.add_argument(
        "--rule",
        default="overlap",
        choices=["overlap", "onset", "onset-offset", "iou"],
        help="match rule (default overlap: detection overlaps the widened annotation; onset: start "
        "within the tolerance; onset-offset: DCASE's rule, start within the tolerance and end within "
        "max(tolerance, half the annotation); iou: IoU >= --min-iou)",
    )
    p.add_argument(
        "--tolerance-s",
        type=float,
        default=0.5,
        help="time tolerance (the DCASE collar) for overlap/onset/onset-offset (default 0.5)",
    )
    p.add_argument(
        "--min-iou",
        type=float,
        default=0.3,
        help="IoU of the summary's event F1 (DCASE task 5) and of --rule iou (default 0.3)",
    )
    p.add_argument(
        "--matching",
        default="one-to-one",
        choices=["one-to-one", "any"],
        help="one-to-one (default; optimal, as sed_eval's event-based metrics) or any: an annotation is "
        "found if any detection matches it, and a detection is right if it matches any annotation "
        "(dense calling, merged events)",
    )
    add_options(p, SourceOptions, ANNOTATION_TABLE)
    p.add_argument("--label-map", help="rename annotation labels: PIHA=bird,WOTH=wood_thrush")
    p.add_argument("--out", help="CSV to write the table of --rule to")
    p.add_argument(
        "--report", help="folder for the field's measures: per_class.csv, summary.json, thresholds.csv, PNGs"
    )
    p.add_argument(
        "--scores",
        help="score matrix (scores.parquet from detect --format scores): window AP / ROC-AUC, PSDS, "
        "thresholds",
    )
    p.add_argument(
        "--background",
        nargs="+",
        help="recordings with no target sound, for false positives per hour (default: the scanned "
        "recordings without annotations)",
    )
    p.add_argument(
        "--collar-s", type=float, default=0.2, help="collar of the collar-based event F1 (DCASE: 0.2)"
    )
    p.add_argument(
        "--min-overlap-s",
        type=float,
        default=0.5,
        help="a window is positive for a class when an annotation overlaps it by this much (or by "
        "its whole length when shorter; default 0.5)",
    )
    p.add_argument(
        "--target-precision",
        type=float,
        default=0.9,
        help="per-class thresholds reach this window precision (default 0.9)",
    )
    p.add_argument(
        "--max-efpr", type=float, default=100.0, help="PSDS: largest false positives per hour (default 100)"
    )
    p.add_argument(
        "--n-boot",
        type=int,
        default=1000,
        help="bootstrap draws over recordings for the 95%% intervals (default 1000; 0: none)",
    )
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")


def cmd_score(args: argparse.Namespace) -> None:
    from chirpkit.detection.scoring import detection_report
    from chirpkit.errors import ConfigError, RunError
    from chirpkit.utils.io import write_csv

    label_map = None
    if args.label_map:
        pairs = [item.split("=", 1) for item in args.label_map.split(",") if item.strip()]
        if any(len(p) != 2 or not p[0].strip() for p in pairs):
            raise ConfigError(f"--label-map {args.label_map!r} must look like PIHA=bird,WOTH=wood_thrush")
        label_map = {k.strip(): v.strip() for k, v in pairs}
    if args.out and Path(args.out).is_dir():
        raise ConfigError(f"out={args.out} is a folder; give a CSV file name")
    source = options_from_args(SourceOptions, args, ANNOTATION_TABLE)
    report = detection_report(
        args.detections,
        args.annotations,
        scores=args.scores,
        min_iou=args.min_iou,
        collar_s=args.collar_s,
        min_overlap_s=args.min_overlap_s,
        background=args.background,
        target_precision=args.target_precision,
        max_efpr=args.max_efpr,
        n_boot=args.n_boot,
        seed=args.seed,
        rule=args.rule,
        tolerance_s=args.tolerance_s,
        matching=args.matching,
        label_map=label_map,
        out=args.report,
        **source,
    )
    table = report.rule_table
    assert table is not None
    if args.out:
        try:
            write_csv(args.out, table, index=False, float_format="%.4f")
        except OSError as exc:
            raise RunError(f"cannot write {args.out}: {exc}") from exc
    print(report.text())
    print(f"\nevents matched by --rule {args.rule} (--matching {args.matching}):")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    if args.report:
        print(f"\nreport (per_class.csv, summary.json, PNGs): {args.report}")


def _args_fit(p: argparse.ArgumentParser) -> None:
    p.add_argument("src", nargs="?", help="folder of class sub-folders, label CSV, or catalog .parquet")
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--store", help="store folder (default RUN/store); share one between runs")
    add_options(p, SourceOptions)
    _config_flags(p, {"audio.window_s": "--window-s"})
    _train_flags(p, resume=True)


def cmd_fit(args: argparse.Namespace) -> None:
    from chirpkit.pipelines.fit import fit

    result = fit(
        args.src,
        out=args.out,
        config=_config(args),
        store=args.store,
        resume=args.resume,
        progress=not args.no_progress,
        **options_from_args(SourceOptions, args),
    )
    m = result["metrics"]
    print(
        f"{m['split']}: macro F1 {m['macro_f1']:.4f}  weighted F1 {m['weighted_f1']:.4f}  "
        f"accuracy {m['accuracy']:.4f}  ({m['n_examples']} examples)"
    )
    print(f"run folder: {result['run']}")


def _args_demo(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="chirpkit-demo", help="output folder (default ./chirpkit-demo)")
    p.add_argument("--seed", type=int, default=0, help="seed for data, split and training")
    p.add_argument("--epochs", type=int, help="training epochs (default 12)")


def cmd_demo(args: argparse.Namespace) -> None:
    from chirpkit.config import load_config
    from chirpkit.pipelines.demo import demo, demo_config

    overrides = list(args.set or []) + ([f"train.epochs={args.epochs}"] if args.epochs else [])
    cfg = load_config(args.config, overrides, base=demo_config(args.seed))
    s = demo(args.out, seed=args.seed, config=cfg, progress=not args.no_progress)
    print()
    print("chirpkit demo finished")
    print(
        f"  test macro F1 .......... {s['macro_f1']:.3f}   (weighted F1 {s['weighted_f1']:.3f}, "
        f"accuracy {s['accuracy']:.3f})"
    )
    print(
        f"  detection recall ....... {s['detection_recall']:.3f}   ({s['calls_found']}/{s['calls']} "
        f"known calls in 2 soundscapes; {s['window_precision']:.3f} of detection windows on a call)"
    )
    print(f"  synthetic data ......... {s['data']}")
    print(f"  run (model, logs) ...... {s['run']}")
    print(f"  test report ............ {s['report']}  (metrics.json, report.txt, confusion_matrix.png)")
    print(f"  detections ............. {s['detections']}")


def _common(p: argparse.ArgumentParser, *, config: bool = True, progress: bool = True) -> None:
    """The flags a verb shares: ``--config``/``--set`` where it reads settings, ``--no-progress``
    where it shows progress (``tests/test_cli.py`` checks that every flag a verb takes is used)."""
    if progress:
        p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    if not config:
        return
    p.add_argument(
        "--config",
        metavar="FILE",
        help="YAML config (sections: audio, features, model, augment, train, split, detect)",
    )
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set train.epochs=5 (repeatable)",
    )


def _config_flags(p: argparse.ArgumentParser, flags: Mapping[str, str]) -> None:
    """Flags that set config keys, e.g. ``{"train.epochs": "--epochs"}``: the key's description
    is the help, its type the flag's; the dest is the key, which :func:`_config` applies."""
    from chirpkit.config import Config

    for key, flag in flags.items():
        section, name = key.split(".")
        field = Config.model_fields[section].annotation.model_fields[name]  # type: ignore[union-attr]
        kind = field.annotation
        if get_origin(kind) is Literal:
            extra: dict[str, Any] = {"choices": get_args(kind)}
        else:
            number = next((t for t in (*get_args(kind), kind) if t in (int, float)), None)
            extra = {"metavar": flag[2:].upper().replace("-", "_"), "type": number}
        default = "" if field.default is None else f", default {field.default}"
        p.add_argument(flag, dest=key, help=f"{field.description} [{key}{default}]", **extra)


def _train_flags(p: argparse.ArgumentParser, *, resume: bool = False, sanity: bool = False) -> None:
    _config_flags(
        p,
        {
            "train.epochs": "--epochs",
            "train.batch_size": "--batch-size",
            "train.lr": "--lr",
            "train.seed": "--seed",
            "model.name": "--model",
            "train.accelerator": "--accelerator",
        },
    )
    if resume:
        p.add_argument("--resume", action="store_true", help="continue from the run's last checkpoint")
    if sanity:
        p.add_argument(
            "--sanity",
            action="store_true",
            help="only check that the model can overfit one training batch (fails loudly if not)",
        )


@dataclass(frozen=True)
class Verb:
    """A command-line verb, declared once: :func:`build_parser` builds its parser from this."""

    name: str
    run: Callable[[argparse.Namespace], None]  #: the command, ``cmd_*``
    help: str
    arguments: Callable[[argparse.ArgumentParser], None]  #: adds the verb's own arguments
    config: bool = True  #: reads settings: ``--config``, ``--set`` (and its config-key flags)
    progress: bool = True  #: shows progress: ``--no-progress``


def _no_arguments(p: argparse.ArgumentParser) -> None:
    """A verb without arguments of its own."""


#: every verb, in the order ``chirpkit --help`` lists them
VERBS: tuple[Verb, ...] = (
    Verb(
        "ingest",
        cmd_ingest,
        "build a catalog from class sub-folders, a label CSV or annotation tables",
        _args_ingest,
    ),
    Verb(
        "inspect",
        cmd_inspect,
        "dataset report: balance, formats, anomalies, frequencies, noise, leakage",
        _args_inspect,
    ),
    Verb(
        "split",
        cmd_split,
        "assign train/val/test, stratified by label and grouped (no group leakage)",
        _args_split,
        progress=False,
    ),
    Verb(
        "prepare",
        cmd_prepare,
        "decode, resample and cut windows once into a memory-mapped store",
        _args_prepare,
    ),
    Verb("train", cmd_train, "train a classifier on a prepared store", _args_train),
    Verb(
        "evaluate",
        cmd_evaluate,
        "macro F1, macro AP, ROC-AUC with intervals, per-class report, confusion matrix, PR curves of a run",
        _args_evaluate,
        config=False,
    ),
    Verb("detect", cmd_detect, "slide a model over long recordings and write detection tables", _args_detect),
    Verb(
        "merge",
        cmd_merge,
        "write the tables of a detect output folder from its finished parts",
        _args_merge,
        config=False,
        progress=False,
    ),
    Verb(
        "score-detections",
        cmd_score,
        "score detections against annotations: event F1 (IoU, collar), window AP / ROC-AUC, PSDS, "
        "false positives per hour, thresholds, confidence intervals",
        _args_score_detections,
        config=False,
        progress=False,
    ),
    Verb(
        "review",
        cmd_review,
        "check detections on a local web page (spectrogram + sound, keyboard verdicts) → reviews.db",
        _args_review,
        config=False,
        progress=False,
    ),
    Verb(
        "calibrate",
        cmd_calibrate,
        "per-class thresholds from the reviews: P(correct | score) per class",
        _args_calibrate,
        config=False,
        progress=False,
    ),
    Verb(
        "export",
        cmd_export,
        "export a run's model (front-end included) to ONNX or TorchScript",
        _args_export,
        config=False,
        progress=False,
    ),
    Verb("fit", cmd_fit, "ingest → split → prepare → train → evaluate in one command", _args_fit),
    Verb(
        "cross-validate",
        cmd_cv,
        "grouped k-fold CV over the split's folds (split.folds=K)",
        _args_cross_validate,
    ),
    Verb(
        "embed",
        cmd_embed,
        "compute a store's BirdNET embeddings once (here or on a Dask cluster) for heads and zero-shot",
        _args_embed,
    ),
    Verb(
        "index",
        cmd_index,
        "embed every window of a recording archive into an index for search by example (grows, resumes)",
        _args_index,
        config=False,
    ),
    Verb(
        "search",
        cmd_search,
        "find the windows of an index most like example calls (a review queue)",
        _args_search,
        config=False,
    ),
    Verb(
        "train-head",
        cmd_train_head,
        "train a classifier on an index's embeddings of reviewed windows (no audio decoded again)",
        _args_train_head,
        config=False,
        progress=False,
    ),
    Verb(
        "distill",
        cmd_distill,
        "a fast student learns a teacher's scores on labelled and unlabelled audio, then the labels",
        _args_distill,
    ),
    Verb(
        "tune",
        cmd_tune,
        "Optuna search with grouped k-fold CV, median pruning, resumable (SQLite)",
        _args_tune,
    ),
    Verb(
        "baseline",
        cmd_baseline,
        "scikit-learn baseline on pooled features, grouped CV + test",
        _args_baseline,
        config=False,
    ),
    Verb(
        "zero-shot",
        cmd_zero_shot,
        "BirdNET V2.4 species scores restricted to the dataset's classes",
        _args_zero_shot,
        config=False,
    ),
    Verb(
        "profile",
        cmd_profile,
        "parameters, FLOPs, memory and throughput of a model, with the estimate",
        _args_profile,
        progress=False,
    ),
    Verb("models", cmd_models, "list the registered models", _no_arguments, config=False, progress=False),
    Verb(
        "augment-preview",
        cmd_augment_preview,
        "PNG grid: a window and each augmentation applied alone",
        _args_augment_preview,
        progress=False,
    ),
    Verb(
        "demo",
        cmd_demo,
        "synthesise bird-like calls, train, evaluate and detect (no data needed)",
        _args_demo,
    ),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chirpkit",
        description="Turn labelled recordings into audio classifiers and run them over new recordings.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"chirpkit {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    parser.add_argument(
        "--debug", action="store_true", help="print the traceback of an error (may also follow the verb)"
    )
    sub = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    for v in VERBS:
        p = sub.add_parser(v.name, help=v.help, description=v.help)
        p.set_defaults(fn=v.run)
        v.arguments(p)
        _common(p, config=v.config, progress=v.progress)
    return parser


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time (it may be replaced, e.g. by test capture)."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def _setup_logging(verbose: bool, quiet: bool) -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("chirpkit: %(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(level)


def _install_signal_handlers() -> Callable[[], None]:
    """SIGTERM (a scheduler's stop, `kill`) stops a verb the way Ctrl-C does (see
    :func:`chirpkit.utils.threads.request_stop`): outputs complete so far. A second signal while stopping
    exits at once. Returns a function that puts the previous handlers back."""
    from chirpkit.utils.threads import request_stop, reset_stop

    reset_stop()
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    count = [0]

    def handler(signum: int, frame: Any) -> None:
        count[0] += 1
        if count[0] > 1:
            os.write(2, b"chirpkit: interrupted again: exiting now\n")
            os._exit(128 + signum)
        request_stop(signum, frame)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    unraisable = sys.unraisablehook
    sys.unraisablehook = _unraisable

    def restore() -> None:
        for sig, old in previous.items():
            signal.signal(sig, old)
        sys.unraisablehook = unraisable

    return restore


def _report(verb: str, exc: BaseException, debug: bool) -> int:
    """Print one clear message for ``exc`` (the traceback only with --debug); the exit status."""
    from chirpkit.errors import ChirpkitError, OutputError
    from chirpkit.utils.io import is_output_failure, output_error

    if debug:
        traceback.print_exception(exc)
    if isinstance(exc, OutputError):
        print(f"chirpkit {verb}: error: {exc}", file=sys.stderr)
        return 1
    if not isinstance(exc, ChirpkitError) and is_output_failure(exc):  # not converted where raised
        path = getattr(exc, "filename", None) or "a file"
        print(f"chirpkit {verb}: error: {output_error(exc, path, 'access')}", file=sys.stderr)
        return 1
    if isinstance(exc, ChirpkitError):
        print(f"chirpkit {verb}: error: {exc}", file=sys.stderr)
        return 2
    if isinstance(exc, MemoryError):
        print(
            f"chirpkit {verb}: error: out of memory; lower the batch size or the number of workers",
            file=sys.stderr,
        )
        return 1
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    hint = "" if debug else "; rerun with --debug for the traceback"
    print(
        f"chirpkit {verb}: unexpected error: {type(exc).__name__}"
        f"{': ' + text[:300] if text else ''}{hint} (please report it if the input looks right)",
        file=sys.stderr,
    )
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``chirpkit`` command line; returns the exit status.

    Exit status: 0 done; 2 bad input or configuration (a :class:`~chirpkit.errors.ChirpkitError`:
    one message that says what, where and the fix); 1 an output that cannot be written (disk full,
    permission denied, read-only) or an unexpected error; 130 interrupted (Ctrl-C or SIGTERM;
    outputs written so far are complete, and a re-run resumes). ``--debug`` (anywhere on the line)
    also prints the traceback.
    """
    args_in = list(sys.argv[1:] if argv is None else argv)
    cut = args_in.index("--") if "--" in args_in else len(args_in)
    debug = "--debug" in args_in[:cut]
    if debug:
        args_in = [a for i, a in enumerate(args_in) if not (a == "--debug" and i < cut)]
    parser = build_parser()
    args = parser.parse_args(args_in)
    _setup_logging(args.verbose, args.quiet)
    restore = _install_signal_handlers()
    try:
        args.fn(args)
    except KeyboardInterrupt:
        if debug:
            traceback.print_exc()
        print(
            f"chirpkit {args.verb}: interrupted (outputs written so far are complete; re-run to resume)",
            file=sys.stderr,
        )
        return 130
    except BrokenPipeError:  # output piped into `head` and the like
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except Exception as exc:
        return _report(args.verb, exc, debug)
    finally:
        restore()
    return 0


def _unraisable(info: Any) -> None:
    """A Ctrl-C that lands in a finaliser cannot be raised there; the stop it requested is
    remembered (chirpkit.utils.threads.check_stop), so its 'Exception ignored' traceback is noise."""
    if not issubclass(info.exc_type, KeyboardInterrupt):
        sys.__unraisablehook__(info)


if __name__ == "__main__":
    sys.exit(main())
