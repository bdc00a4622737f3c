"""Reviewed detections → catalog rows, for retraining (``chirpkit ingest --reviews DIR``).

Each reviewed detection window becomes one row over its recording:

* accepted → the detected label (a confirmed example);
* relabelled → the label the reviewer gave (a corrected example; a background label makes it a
  hard negative);
* rejected → ``background_label`` (default ``noise``): a hard negative, a window the model took
  for a call that is not one.

Rows carry ``group`` = the recording's group, so a split never puts windows of one recording on
both sides: a recording the base catalog already holds keeps its group there (and its split,
when the base has one); any other recording is its own group (or follows ``group_by``) and, in a
split base, goes to ``train`` — a whole group, so nothing leaks. The rows keep ``annotation =
review:<verdict>:<item id>``, the ``score`` and the ``reviewer``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pandas as pd

from chirpkit.audio import info
from chirpkit.data.catalog import (
    CORE_COLUMNS,
    META_COLUMNS,
    group_rule,
    read_catalog,
    validate_catalog,
    write_catalog,
)
from chirpkit.errors import AudioDecodeError, DataError
from chirpkit.review.db import ReviewDB, check_label
from chirpkit.review.items import load_detect_folder, resolve_recording
from chirpkit.utils.io import write_csv

__all__ = ["ingest_reviews", "reviews_to_rows"]

log = logging.getLogger("chirpkit")


def reviews_to_rows(
    folder: str | os.PathLike[str],
    *,
    background_label: str = "noise",
    audio_dir: str | os.PathLike[str] | None = None,
) -> tuple[pd.DataFrame, list[dict[str, str]]]:
    """The reviewed windows of a detections folder as catalog rows (without ``group``), and the
    reviews skipped because their recording cannot be read (``source``, ``reason``)."""
    det = load_detect_folder(folder, audio_dir=audio_dir)
    background_label = check_label(background_label, "background_label")
    cur = ReviewDB(det.db_path, create=False).current()
    if cur.empty:
        raise DataError(
            f"no reviews in {det.db_path}: review the detections first (chirpkit review {folder})"
        )
    skipped: list[dict[str, str]] = []
    records = []
    infos: dict[str, object] = {}
    for r in cur.to_dict("records"):
        path = det.paths.get(str(r["file"]))
        if path is None and str(r["file"]) not in det.paths:  # a review of a row no longer in the table
            path = resolve_recording(str(r["file"]), det.root, Path(audio_dir) if audio_dir else None)
        if path is None:
            skipped.append({"source": str(r["file"]), "reason": "recording not found"})
            continue
        key = str(path)
        if key not in infos:
            try:
                infos[key] = info(path)
            except AudioDecodeError as exc:
                infos[key] = exc.reason
        meta = infos[key]
        if isinstance(meta, str):
            skipped.append({"source": key, "reason": meta})
            continue
        label = str(r["final_label"]) if pd.notna(r["final_label"]) else background_label
        records.append(
            {
                "source": key,
                "start_s": float(r["start_s"]),
                "end_s": float(r["end_s"]),
                "label": label,
                "labels": [label],
                **{k: v for k, v in meta.to_dict().items() if k in META_COLUMNS},  # type: ignore[attr-defined]
                "annotation": f"review:{r['verdict']}:{r['item']}",
                "score": float(r["score"]),
                "reviewer": r["reviewer"],
            }
        )
    return pd.DataFrame(records), skipped


def ingest_reviews(
    folder: str | os.PathLike[str],
    *,
    merge_with: str | os.PathLike[str] | pd.DataFrame | None = None,
    out: str | os.PathLike[str] | None = None,
    group_by: str | None = None,
    background_label: str = "noise",
    audio_dir: str | os.PathLike[str] | None = None,
) -> pd.DataFrame:
    """A catalog of reviewed detections, merged with an existing catalog.

    Args:
        folder: a ``detect`` output folder with ``reviews.db``.
        merge_with: the catalog to add the rows to (a path or a frame); without it the catalog
            holds the reviewed windows only.
        out: where to write the catalog (Parquet + CSV view; ``.skipped.csv`` lists reviews whose
            recording could not be read).
        group_by: group rule for recordings the base does not hold (``file``, the default, or
            ``folder`` / ``regex:PATTERN``, see :func:`chirpkit.data.catalog.group_rule`).
        background_label: the label of rejected detections (hard negatives).
        audio_dir: where to look for recordings named by relative paths.

    Raises:
        DataError: no reviews, no readable recording, or a catalog with one class only.
    """
    rows, skipped = reviews_to_rows(folder, background_label=background_label, audio_dir=audio_dir)
    if rows.empty:
        raise DataError(f"none of the reviewed recordings of {folder} can be read: {skipped[:3]}")
    base = None
    if merge_with is not None:
        base = merge_with if isinstance(merge_with, pd.DataFrame) else read_catalog(merge_with)
        base = validate_catalog(base, where="the catalog to merge with")
    known = dict(zip(base["source"], base["group"], strict=True)) if base is not None else {}
    rule = group_rule(group_by or "file")
    rows["group"] = [known.get(s) or rule(Path(s)) for s in rows["source"]]
    if base is not None and "split" in base.columns:
        split_of = base.drop_duplicates("group").set_index("group")["split"]
        rows["split"] = rows["group"].map(split_of).fillna("train")
        new = rows.loc[~rows["group"].isin(split_of.index), "group"].nunique()
        if new:
            log.info("ingest --reviews: %d recording(s) new to the catalog go to the train split", new)
        if "fold" in base.columns:
            fold_of = base.drop_duplicates("group").set_index("group")["fold"]
            folds = sorted(f for f in base["fold"].dropna().unique() if f >= 0)
            fresh = sorted(set(rows["group"]) - set(fold_of.index))
            extra = {g: folds[i % len(folds)] for i, g in enumerate(fresh)} if folds else {}
            rows["fold"] = rows["group"].map(lambda g: fold_of.get(g, extra.get(g, -1)))
    cat = pd.concat([base, rows], ignore_index=True) if base is not None else rows
    cols = [*CORE_COLUMNS, *META_COLUMNS]
    cat = validate_catalog(
        cat[cols + [c for c in cat.columns if c not in cols]], where=f"reviews of {folder}"
    )
    if cat["label"].nunique() < 2:
        raise DataError(
            f"the reviews of {folder} give one class only ({cat['label'].iloc[0]!r}); merge them with a "
            "catalog (merge_with=..., --merge-with) or review both right and wrong detections"
        )
    counts = rows["annotation"].str.split(":").str[1].value_counts()
    log.info(
        "ingest --reviews: %d reviewed window(s) (%s) from %d recording(s)%s; skipped %d",
        len(rows),
        ", ".join(f"{k} {v}" for k, v in counts.items()),
        rows["source"].nunique(),
        f", merged with {len(base)} row(s)" if base is not None else "",
        len(skipped),
    )
    if out is not None:
        path = write_catalog(cat, out)
        rep = path.with_suffix(".skipped.csv")
        if skipped:
            write_csv(rep, pd.DataFrame(skipped, columns=["source", "reason"]), index=False)
        elif rep.exists():
            rep.unlink()
    cat.attrs["skipped"] = skipped
    return cat
