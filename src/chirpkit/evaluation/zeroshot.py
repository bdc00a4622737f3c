"""BirdNET V2.4's own species scores on a store's windows: the zero-shot baseline.

BirdNET's logits are a dense layer over its 1,024-d embedding, so they are computed from the
embedding cache (:mod:`chirpkit.models.embeddings`) with the weights read from the model file: a store
embedded once gives zero-shot scores, trained heads and prior heads without running BirdNET again.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from chirpkit.data.dataset import split_positions
from chirpkit.data.store import Store
from chirpkit.errors import DataError
from chirpkit.metrics import headline
from chirpkit.models.birdnet import birdnet_classifier, birdnet_labels
from chirpkit.models.embeddings import SCORE_BLOCK, embedding_cache, gather
from chirpkit.models.taxonomy import match_classes
from chirpkit.utils.io import write_json

__all__ = ["zero_shot"]

log = logging.getLogger("chirpkit")


def zero_shot(
    store: Store | str | os.PathLike[str],
    *,
    split: str = "test",
    label_map: Mapping[str, str] | str | os.PathLike[str] | None = None,
    out: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """BirdNET V2.4's species scores, restricted to the dataset's classes, scored on ``split``.

    Only windows whose class maps to a BirdNET species are scored (the others, e.g. ``noise``,
    are counted and listed). Scores are per example (window logits averaged).
    """
    st = store if isinstance(store, Store) else Store(store)
    labels = birdnet_labels()
    match = match_classes(st.classes, labels, label_map)
    cmap = match.mapping
    if not cmap:
        raise DataError(
            f"none of the classes matches a BirdNET V2.4 species: {match.describe_unmatched()}. Give "
            "label_map= a CSV (class, BirdNET Latin or common name) or an eBird taxonomy CSV "
            "(SPECIES_CODE, SCI_NAME)"
        )
    if match.unmatched:
        log.info("zero-shot: classes with no BirdNET species: %s", match.describe_unmatched())
    pos = split_positions(st, split)
    pos = pos[st.index["label"].iloc[pos].isin(list(cmap)).to_numpy()]
    if len(pos) == 0:
        raise DataError(f"no '{split}' windows of a mapped class in {st.root}")
    mapped = list(cmap)
    weights, bias = birdnet_classifier()
    cols = np.array([cmap[c] for c in mapped])
    emb = embedding_cache(st, progress=progress)
    w, b = weights[cols].T, bias[cols]
    z = np.concatenate(
        [gather(emb, pos[i : i + SCORE_BLOCK]) @ w + b for i in range(0, len(pos), SCORE_BLOCK)]
    )
    idx = st.index.iloc[pos].reset_index(drop=True)
    rows = pd.DataFrame(z).groupby(idx["row"].to_numpy(), sort=True).mean()
    lookup = {c: i for i, c in enumerate(mapped)}
    y_true = idx.groupby("row", sort=True).first()["label"].map(lookup).to_numpy()
    res: dict[str, Any] = {
        "split": split,
        "model": "BirdNET V2.4 zero-shot",
        **headline(y_true, rows.to_numpy()),
        "n_examples": len(y_true),
        "classes_mapped": match.names,
        "matched_via": match.via,
        "classes_unmapped": sorted(match.unmatched),
        "suggestions": match.unmatched,
    }
    if out is not None:
        write_json(Path(out) / f"zero_shot_{split}.json", res)
    log.info(
        "BirdNET zero-shot on %s: macro F1 %.4f over %d example(s) of %d mapped class(es); unmapped: %s",
        split,
        res["macro_f1"],
        len(y_true),
        len(mapped),
        res["classes_unmapped"][:10],
    )
    return res
