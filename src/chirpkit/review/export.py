"""Reviews out of ``reviews.db``: a CSV of the current verdicts (or the whole history) and Raven
selection tables of the detections that were right (accepted, or relabelled: with the right label)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pandas as pd

from chirpkit.audio import info
from chirpkit.detection.events import write_raven
from chirpkit.errors import AudioDecodeError
from chirpkit.review.db import REVIEW_COLUMNS, ReviewDB
from chirpkit.review.items import load_detect_folder
from chirpkit.utils.io import write_csv

__all__ = ["EXPORT_COLUMNS", "export_reviews"]

log = logging.getLogger("chirpkit")

#: the current reviews' columns, ``item`` named ``id`` as in the JSON API (``seq`` is internal)
EXPORT_COLUMNS = ["id", *[c for c in REVIEW_COLUMNS if c not in ("seq", "item")]]


def export_reviews(
    folder: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    raven: str | os.PathLike[str] | None = None,
    history: bool = False,
) -> pd.DataFrame:
    """Write the reviews of a detections folder to a CSV (and Raven tables).

    Args:
        folder: a ``detect`` output folder with ``reviews.db``.
        out: the CSV: ``id, file, start_s, end_s, detected_label, score, verdict, label, reviewer,
            time``, where ``label`` is the window's real label (the detected one when accepted,
            the corrected one when relabelled, empty when rejected).
        raven: folder for one Raven selection table per recording of the accepted and
            relabelled detections (default ``raven-accepted/`` beside ``out``).
        history: every verdict ever given (``seq`` order, ``clear`` included) instead of the
            current ones.

    Returns:
        The exported table.
    """
    det = load_detect_folder(folder)
    db = ReviewDB(det.db_path, create=False)
    if history:
        table = db.history().rename(columns={"item": "id"})
    else:
        cur = db.current()
        table = cur.assign(label=cur["final_label"]).rename(columns={"item": "id"})[EXPORT_COLUMNS]
        table = table.reset_index(drop=True)
    out_path = Path(out)
    write_csv(out_path, table, index=False, float_format="%.4f")
    right = db.current()
    right = right[right["final_label"].notna()]
    raven_dir = Path(raven) if raven is not None else out_path.parent / "raven-accepted"
    for f, g in right.groupby("file"):
        path = det.paths.get(str(f))
        try:
            high = info(path).sample_rate / 2 if path is not None else 24000.0
        except AudioDecodeError:
            high = 24000.0
        events = g.assign(label=g["final_label"])[["file", "start_s", "end_s", "label", "score"]]
        write_raven(events.sort_values("start_s"), raven_dir, high_freq_hz=high)
    log.info(
        "export: %d review(s) → %s; Raven tables of %d right detection(s) → %s",
        len(table),
        out_path,
        len(right),
        raven_dir,
    )
    return table
