"""``chirpkit train-head``: a classifier trained on the index's own embeddings of labelled windows.

The last step of search by example ("agile modelling"): the windows a reviewer confirmed
(``ingest --reviews`` of a search folder, or any catalog over indexed recordings) are looked up in
the index — no audio is decoded and no embedding computed again — and a linear head
(on BirdNET embeddings, per-class sigmoids, so it can say "none of these") is trained on them. Rows
labelled ``background_label`` (rejected results) are negatives, as are ``negatives`` windows drawn
at random from the archive away from every positive (most of an archive holds none of the target
calls; the few that do add little label noise). The result is an ordinary run folder:
``chirpkit detect RUN ARCHIVE`` runs it over the archive, ``evaluate``/``export`` take it as any run.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from chirpkit.errors import ConfigError, DataError
from chirpkit.similarity.db import EmbeddingIndex
from chirpkit.utils.io import write_csv, write_json

__all__ = ["HeadResult", "labelled_windows", "train_head"]

log = logging.getLogger("chirpkit")


@dataclass
class HeadResult:
    """What :func:`train_head` made: the run folder and what it was trained on."""

    run: Path
    classes: list[str]
    positives: dict[str, int]  #: index windows per class
    negatives: int  #: background windows (rejected + random)
    missing: int  #: labelled rows with no index window (their recording is not indexed)
    train_loss: float

    def to_dict(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in self.__dict__.items()}


def _read_labels(
    labels: str | os.PathLike[str] | pd.DataFrame, background_label: str
) -> tuple[pd.DataFrame, Path]:
    """Catalog-like rows ``source, start_s, end_s, label`` and the folder relative sources start from."""
    if isinstance(labels, pd.DataFrame):
        return labels, Path.cwd()
    p = Path(labels)
    if p.is_dir():
        from chirpkit.data.reviews import reviews_to_rows

        rows, skipped = reviews_to_rows(p, background_label=background_label)
        if skipped:
            log.warning("train-head: %d review(s) skipped (recording not found)", len(skipped))
        return rows, p
    from chirpkit.data.catalog import read_catalog

    return read_catalog(p), p.parent


def labelled_windows(
    db: EmbeddingIndex, rows: pd.DataFrame, *, root: Path | None = None
) -> tuple[pd.DataFrame, int]:
    """Index windows of labelled rows: ``id, label`` (one row per window and label), and the
    number of rows whose recording is not in the index.

    A window belongs to a row when they overlap by more than half the shorter of the two (a point
    annotation: when the window holds it), so a row that is itself an index window (a reviewed
    search result) gives that window, not its neighbours half a window away."""
    missing = [c for c in ("source", "start_s", "end_s") if c not in rows.columns]
    if missing or not ({"label", "labels"} & set(rows.columns)):
        raise DataError(
            f"labelled rows need source, start_s, end_s and label(s); they lack {missing or 'label'}"
        )
    root = root if root is not None else Path.cwd()
    out: list[tuple[int, str]] = []
    lost = 0
    by_file: dict[str, pd.DataFrame] = {}
    for r in rows.to_dict("records"):
        src = Path(str(r["source"]))
        path = (
            str((src if src.is_absolute() else (root / src)).resolve()) if "://" not in str(src) else str(src)
        )
        if path not in by_file:
            by_file[path] = db.file_windows(path)
        wins = by_file[path]
        if wins.empty:
            lost += 1
            continue
        s, e = float(r["start_s"]), float(r["end_s"])
        overlap = np.minimum(wins["start_s"] + db.window_s, e) - np.maximum(wins["start_s"], s)
        need = 0.5 * min(db.window_s, e - s) if e > s else 0.0
        hit = wins["id"][(overlap > need + 1e-6) if e > s else overlap >= 0]
        labels = r.get("labels")
        names = (
            list(labels) if isinstance(labels, (list, tuple, np.ndarray)) and len(labels) else [r["label"]]
        )
        for i in hit:
            out += [(int(i), str(n)) for n in names]
    found = pd.DataFrame(out, columns=["id", "label"]).drop_duplicates()
    return found, lost


def train_head(
    index: str | os.PathLike[str] | EmbeddingIndex,
    labels: str | os.PathLike[str] | pd.DataFrame,
    *,
    out: str | os.PathLike[str],
    background_label: str = "noise",
    negatives: int = 200,
    epochs: int = 300,
    lr: float = 1e-3,
    weight_decay: float = 1e-3,
    seed: int = 0,
) -> HeadResult:
    """Train a linear head on the index's embeddings of labelled windows; write a run folder.

    Args:
        index: an index folder or an open :class:`EmbeddingIndex`.
        labels: a catalog (``ingest --reviews`` of a search folder, or any catalog over indexed
            recordings), a reviewed ``search``/``detect`` folder (its ``reviews.db``), or a
            DataFrame with ``source, start_s, end_s, label``.
        out: the run folder (``model.pt``, ``data.json``, ``train_head.json``, ``windows.csv``).
        background_label: rows with this label are negatives, not a class.
        negatives: windows drawn at random from the archive (away from positives) as negatives.
        epochs, lr, weight_decay, seed: full-batch AdamW on the weighted binary cross-entropy.

    Raises:
        DataError: no labelled window found in the index, or no class besides the background.
    """

    if negatives < 0 or epochs < 1 or lr <= 0:
        raise ConfigError(f"negatives={negatives} >= 0, epochs={epochs} >= 1 and lr={lr} > 0 are needed")
    db = index if isinstance(index, EmbeddingIndex) else EmbeddingIndex.open(index)
    try:
        return _train_head(db, labels, out, background_label, negatives, epochs, lr, weight_decay, seed)
    finally:
        if not isinstance(index, EmbeddingIndex):
            db.close()


def _train_head(
    db: EmbeddingIndex,
    labels: str | os.PathLike[str] | pd.DataFrame,
    out: str | os.PathLike[str],
    background_label: str,
    negatives: int,
    epochs: int,
    lr: float,
    weight_decay: float,
    seed: int,
) -> HeadResult:
    import torch

    from chirpkit.config import FeatureConfig
    from chirpkit.models import ModelSpec, save_model
    from chirpkit.models._registry import create_model
    from chirpkit.models.heads import linear_head_name

    try:
        head_name = linear_head_name(db.model)
    except ValueError as exc:
        raise ConfigError(f"train-head: {exc}") from exc
    rows, root = _read_labels(labels, background_label)
    bg = background_label
    found, lost = labelled_windows(db, rows, root=root)
    if lost:
        log.warning("train-head: %d labelled row(s) name recordings the index does not hold; left out", lost)
    classes = sorted(set(found["label"]) - {bg})
    if not classes:
        raise DataError(
            f"no labelled window of a class in the index {db.root} ({lost} row(s) outside it): confirm some "
            "search results in `chirpkit review`, or index the labelled recordings"
        )
    pos = found[found["label"] != bg]
    ids = np.array(sorted(set(found["id"])), dtype=np.int64)
    # random archive windows, away from every positive (and its neighbours), as negatives
    reach = int(np.ceil(db.window_s / float(db.settings["hop_s"])))  # ids of overlapping windows
    near = {int(i) + d for i in pos["id"] for d in range(-reach, reach + 1)}
    extra = db.random_ids(negatives, seed=seed, exclude=near | set(ids.tolist()))
    all_ids = np.concatenate([ids, extra])
    y = np.zeros((len(all_ids), len(classes)), np.float32)
    where = {int(i): k for k, i in enumerate(all_ids)}
    col = {c: j for j, c in enumerate(classes)}
    for i, lab in zip(pos["id"], pos["label"], strict=True):
        y[where[int(i)], col[lab]] = 1.0
    x = db.vectors(all_ids)

    torch.manual_seed(seed)
    net = create_model(head_name, num_classes=len(classes))
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    n_pos = yt.sum(0)
    pos_weight = ((len(yt) - n_pos) / n_pos.clamp(min=1)).clamp(max=100.0)
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=pos_weight)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    net.train()
    for _ in range(epochs):
        opt.zero_grad()
        loss = loss_fn(net(xt), yt)
        loss.backward()
        opt.step()
        sched.step()
    net.eval()
    with torch.no_grad():
        final = float(loss_fn(net(xt), yt))

    spec = ModelSpec(
        head_name,
        classes,
        int(db.settings["sample_rate"]),
        db.window_s,
        FeatureConfig().model_dump(),
        task="multilabel",
    )
    run = Path(out)
    run.mkdir(parents=True, exist_ok=True)
    save_model(run / "model.pt", net, spec)
    windows = db.windows(all_ids).assign(
        label=[";".join(c for c, v in zip(classes, row, strict=True) if v) or "(negative)" for row in y]
    )
    write_csv(run / "windows.csv", windows, index=False)
    counts = {c: int(v) for c, v in zip(classes, y.sum(0), strict=True)}
    write_json(run / "data.json", {"classes": classes, "index": str(db.root.resolve()), "windows": counts})
    result = HeadResult(run, classes, counts, int((y.sum(1) == 0).sum()), lost, round(final, 5))
    write_json(
        run / "train_head.json",
        {
            **result.to_dict(),
            "settings": {
                "negatives": negatives,
                "epochs": epochs,
                "lr": lr,
                "weight_decay": weight_decay,
                "seed": seed,
            },
        },
    )
    log.info(
        "train-head: %s trained on %s positive window(s) and %d negative(s): %s",
        ", ".join(classes),
        "/".join(str(v) for v in counts.values()),
        result.negatives,
        run,
    )
    return result
