"""``chirpkit detect RUN --index DB``: a head on embeddings scored over an index, no audio decoded.

The last step of search by example, and a fast one: a head trained on the index's embedding model
(``train-head``, or ``train`` with a ``birdnet_*`` head) scores the embeddings the index already
holds, a block at a time, so an archive is classified in seconds instead of the hours that
decoding and embedding it again would take. The tables are ``detect``'s (``detections.csv`` window
rows, ``events.csv`` merged windows, Raven / Audacity with ``formats``, ``detect_summary.json``),
so ``review``, ``calibrate`` and ``score-detections`` take them as they take any detect folder.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from chirpkit.detection.events import merge_events, write_audacity, write_raven
from chirpkit.detection.plan import DETECTION_COLUMNS
from chirpkit.errors import ConfigError
from chirpkit.similarity.db import EmbeddingIndex
from chirpkit.utils.engine import output_guard
from chirpkit.utils.io import write_csv, write_json

__all__ = ["detect_in_index"]

log = logging.getLogger("chirpkit")

_BLOCK = 65_536


def _score_windows(
    db: EmbeddingIndex, files: pd.DataFrame, net: Any, spec: Any, cut: np.ndarray, progress: bool
) -> pd.DataFrame:
    """Window rows ``file, start_s, end_s, label, score`` whose score reaches its class's cut,
    scored a block of embeddings at a time (background classes left out)."""
    import torch

    by_first = dict(zip(files["first_id"], files["path"], strict=True))
    multilabel = spec.task == "multilabel"
    names = np.asarray(spec.class_names, dtype=object)
    rows: list[pd.DataFrame] = []
    parts = tqdm(db.iter_parts(), total=len(files), desc="detect (index)", unit="file", disable=not progress)
    with torch.inference_mode():
        for first, part in parts:
            starts = db.file_windows(by_first[first])["start_s"].to_numpy()
            for a in range(0, len(part), _BLOCK):
                logits = net.eval()(torch.from_numpy(np.asarray(part[a : a + _BLOCK], np.float32))).float()
                p = (torch.sigmoid(logits) if multilabel else torch.softmax(logits, dim=1)).numpy()
                w, c = np.nonzero(p >= cut)
                s = starts[a + w]
                rows.append(
                    pd.DataFrame(
                        {
                            "file": by_first[first],
                            "start_s": s,
                            "end_s": s + db.window_s,
                            "label": names[c],
                            "score": p[w, c],
                        }
                    )
                )
    table = (pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=DETECTION_COLUMNS))[
        DETECTION_COLUMNS
    ]
    return table[~table["label"].isin(spec.background_labels)].sort_values(
        ["file", "start_s", "label"], ignore_index=True
    )


def detect_in_index(
    run: str | os.PathLike[str],
    index: str | os.PathLike[str] | EmbeddingIndex,
    *,
    out: str | os.PathLike[str],
    min_score: float = 0.5,
    thresholds: str = "auto",
    merge_gap_s: float = 0.0,
    formats: Sequence[str] = ("csv",),
    progress: bool = True,
) -> pd.DataFrame:
    """Score every window of an index with a head on its embeddings; write detect's tables.

    Args:
        run: a run folder or ``model.pt`` of a head on the index's embedding model.
        index: an index folder (``chirpkit index``) or an open :class:`EmbeddingIndex`.
        out: the folder for ``detections.csv``, ``events.csv``, ``detect_summary.json`` (+ Raven /
            Audacity tables with ``formats``).
        min_score: a window label becomes a detection at this score (classes without a
            threshold of their own).
        thresholds: ``auto`` (the run's ``thresholds.json`` from ``calibrate --apply``, where
            present) or ``none``.
        merge_gap_s: windows of one label at most this far apart merge into one event.

    Returns:
        The window detections (``file, start_s, end_s, label, score``).

    Raises:
        ConfigError: the run is not a head on the index's embedding model (it needs audio: run
            ``detect RUN AUDIO``).
    """

    from chirpkit.evaluation.thresholds import load_thresholds
    from chirpkit.models import load_network, read_model_file
    from chirpkit.models._registry import model_info

    t0 = time.perf_counter()
    net, spec = load_network(read_model_file(run))
    db = index if isinstance(index, EmbeddingIndex) else EmbeddingIndex.open(index)
    try:
        entry = model_info(spec.architecture)
        if entry.input != "embedding" or entry.embedding != db.model:
            raise ConfigError(
                f"{run} is a {spec.architecture} model, not a head on the index's {db.model} embeddings: "
                "score recordings with `chirpkit detect RUN AUDIO`"
            )
        per_class = load_thresholds(run) if thresholds == "auto" else None
        cut = np.array([(per_class or {}).get(c, min_score) for c in spec.class_names], np.float32)
        files = db.files()
        table = _score_windows(db, files, net, spec, cut, progress)
        events = merge_events(table, gap_s=merge_gap_s)
        root = Path(out)
        summary: dict[str, Any] = {
            "kind": "index",
            "model": str(run),
            "index": str(db.root.resolve()),
            "files": len(files),
            "windows": len(db),
            "audio_seconds": round(float(files["audio_s"].sum()), 2),
            "detections": len(table),
            "events": len(events),
            "min_score": min_score,
            "thresholds": "per class" if per_class else "min_score",
            "hop_s": db.settings["hop_s"],
            "wall_seconds": round(time.perf_counter() - t0, 3),
            "paths": {"cwd": str(Path.cwd()), "out": str(root.resolve())},
        }
        with output_guard(root):
            root.mkdir(parents=True, exist_ok=True)
            write_csv(root / "detections.csv", table, index=False, float_format="%.4f")
            write_csv(root / "events.csv", events, index=False, float_format="%.4f")
            if "raven" in formats:
                write_raven(events, root / "raven", high_freq_hz=spec.sample_rate / 2)
            if "audacity" in formats:
                write_audacity(events, root / "audacity")
            write_json(root / "detect_summary.json", summary)
    finally:
        if not isinstance(index, EmbeddingIndex):
            db.close()
    log.info(
        "detect (index): %d detection(s) in %d window(s) of %d file(s), %.1f s; %s",
        len(table),
        summary["windows"],
        summary["files"],
        summary["wall_seconds"],
        root,
    )
    return table
