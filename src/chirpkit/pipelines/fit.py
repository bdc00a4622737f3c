"""``fit``: ingest → split → prepare → train → evaluate in one call, for the common case."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from chirpkit._options import takes_options
from chirpkit.config import Config
from chirpkit.data.catalog import read_catalog, write_catalog
from chirpkit.data.ingest import ingest
from chirpkit.data.options import SourceOptions
from chirpkit.data.split import split
from chirpkit.data.store import prepare

__all__ = ["fit"]

log = logging.getLogger("chirpkit")


@takes_options(SourceOptions)
def fit(
    src: str | os.PathLike[str] | pd.DataFrame | None = None,
    *,
    out: str | os.PathLike[str],
    config: Config | None = None,
    store: str | os.PathLike[str] | None = None,
    group_by: str | None = None,
    annotations: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None = None,
    audio_dir: str | os.PathLike[str] | None = None,
    format: str = "auto",
    label_column: str | None = None,
    columns: Mapping[str, str] | None = None,
    background: int | None = None,
    background_audio: Sequence[str | os.PathLike[str]] | None = None,
    background_label: str = "noise",
    resume: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Train and evaluate a classifier from a folder of class sub-folders, a label CSV, a catalog,
    or annotation tables over long recordings (``annotations`` + ``audio_dir``).

    Writes into ``out``: ``catalog.parquet`` (with its split and counts), the run files of
    :func:`chirpkit.train` and the test report of :func:`chirpkit.evaluate` (``metrics.json``).
    The store goes to ``store`` (default ``out/store``); point several runs at one store to share
    decoded audio. Windows of annotation tables take ``config.audio.window_s``.

    Args:
        {options}

    Returns:
        ``{"run", "catalog", "store", "train", "metrics"}``.
    """
    from chirpkit.evaluation.report import evaluate
    from chirpkit.training.loop import train

    cfg = config or Config()
    run = Path(out)
    run.mkdir(parents=True, exist_ok=True)
    cat_path = run / "catalog.parquet"
    if isinstance(src, pd.DataFrame):
        catalog = src
    elif src is not None and str(src).endswith((".parquet", ".pq")):
        catalog = read_catalog(src)
    else:

        def read(n_background: int) -> pd.DataFrame:
            return ingest(
                src,
                out=cat_path,
                group_by=group_by,
                annotations=annotations,
                audio_dir=audio_dir,
                format=format,
                label_column=label_column,
                columns=columns,
                window_s=cfg.audio.window_s,
                hop_s=cfg.audio.window_hop_s,
                background=n_background,
                background_audio=background_audio,
                background_label=background_label,
                seed=cfg.split.seed,
                progress=progress,
            )

        catalog = read(background or 0)
        if annotations is not None and background is None and catalog["label"].nunique() == 1:
            n = len(catalog)
            log.warning(
                "the annotation tables hold one class (%r): adding %d background window(s) labelled %r, "
                "away from every annotation, so that the model learns call vs background "
                "(set background=N / --background N to choose how many)",
                catalog["label"].iloc[0],
                n,
                background_label,
            )
            catalog = read(n)
    if "split" not in catalog.columns:
        catalog = split(catalog, out=cat_path, config=cfg.split)
    else:
        write_catalog(catalog, cat_path)
    store_dir = Path(store) if store is not None else run / "store"
    st = prepare(catalog, out=store_dir, config=cfg.audio, progress=progress)
    summary = train(st, out=run, config=cfg, resume=resume, progress=progress)
    has_test = "split" in st.index.columns and (st.index["split"] == "test").any()
    metrics = evaluate(run, split="test" if has_test else "val", progress=progress)
    if not has_test:
        log.warning("no test split: the reported metrics are on the validation split")
    return {
        "run": str(run),
        "catalog": str(cat_path),
        "store": str(store_dir),
        "train": summary,
        "metrics": metrics,
    }
