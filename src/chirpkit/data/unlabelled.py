"""Catalogs of unlabelled recordings (soundscapes), for distillation and self-training.

Each readable file becomes one catalog row spanning the whole file, with the label
:data:`UNLABELLED` and split ``unlabelled``; ``prepare`` then cuts it into windows every
``audio.window_hop_s``. Files that cannot be read are skipped and reported, as ingest does.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import pandas as pd

from chirpkit.audio import info
from chirpkit.data.catalog import validate_catalog
from chirpkit.errors import AudioDecodeError, DataError
from chirpkit.sources import resolve_sources

__all__ = ["UNLABELLED", "unlabelled_catalog"]

log = logging.getLogger("chirpkit")

UNLABELLED = "unlabelled"


def unlabelled_catalog(
    inputs: Sequence[str | os.PathLike[str]], *, max_files: int | None = None
) -> pd.DataFrame:
    """One row per readable audio file among ``inputs`` (files, folders, globs, ``@list.txt``).

    Raises:
        DataError: no input file could be read.
    """
    sources, problems = resolve_sources(inputs)
    rows, skipped = [], [(p["file"], p["reason"]) for p in problems]
    for src in sources[:max_files] if max_files else sources:
        if "://" in src:
            skipped.append((src, "URLs are read by detect only; copy the file locally"))
            continue
        try:
            meta = info(src)
        except AudioDecodeError as exc:
            skipped.append((src, exc.reason))
            continue
        if meta.duration_s <= 0:
            skipped.append((src, "no audio samples"))
            continue
        rows.append(
            {
                "source": str(src),
                "start_s": 0.0,
                "end_s": meta.duration_s,
                "label": UNLABELLED,
                "labels": [UNLABELLED],
                "group": str(src),
                "split": "unlabelled",
                **{k: v for k, v in meta.to_dict().items() if k != "path"},
            }
        )
    for src, reason in skipped[:20]:
        log.warning("unlabelled audio: skipped %s: %s", src, reason)
    if not rows:
        raise DataError(
            f"no readable audio among {list(map(str, inputs))[:5]} ({len(skipped)} skipped); give folders "
            "or files of recordings"
        )
    return validate_catalog(pd.DataFrame(rows))
