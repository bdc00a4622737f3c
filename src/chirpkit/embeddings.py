"""Pretrained bird-model embeddings as a backbone, and BirdNET's own scores as a zero-shot baseline.

* ``birdnet_linear`` / ``birdnet_mlp`` (``chirpkit train --model birdnet_linear``): every store
  window is embedded once with BirdNET V2.4 (1,024-d; cached in ``store/embeddings/``), then a
  linear or one-hidden-layer head is trained on them with class-weighted cross-entropy, AdamW and
  the epoch with the best validation macro F1 kept. Few labels suffice: the embedding already
  separates most sounds. Windows are resampled to 48 kHz; a window longer than BirdNET's 3 s is
  covered by 3 s crops whose embeddings are averaged, a shorter one is zero-padded (centred).
* :func:`zero_shot`: BirdNET's species logits restricted to the dataset's classes (matched by
  Latin name, common name or full BirdNET label, or through a mapping CSV / an eBird taxonomy
  CSV), scored like ``evaluate``.

BirdNET is CC BY-NC-SA 4.0: models and scores built on it inherit the non-commercial terms.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from chirpkit._util import atomic_path, environment, stable_hash, write_json, write_text
from chirpkit.audio import resample
from chirpkit.config import Config
from chirpkit.data.dataset import split_positions
from chirpkit.data.store import Store
from chirpkit.errors import DataError
from chirpkit.models.birdnet import BIRDNET_SAMPLE_RATE, BIRDNET_WINDOW_SAMPLES, BirdNET
from chirpkit.models.heads import EMBEDDING_DIM, EMBEDDING_MODELS, EmbeddingHead

__all__ = [
    "EMBEDDING_MODELS",
    "EmbeddingHead",
    "birdnet_input",
    "embedding_cache",
    "train_embedding_head",
    "zero_shot",
]

log = logging.getLogger("chirpkit")


def birdnet_input(windows: np.ndarray, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
    """``(n, samples)`` windows → ``(m, 144000)`` BirdNET crops at 48 kHz and the window of each crop."""
    x = resample(
        np.ascontiguousarray(windows, dtype=np.float32), orig_sr=sample_rate, target_sr=BIRDNET_SAMPLE_RATE
    )
    n, length = x.shape
    w = BIRDNET_WINDOW_SAMPLES
    if length <= w:
        out = np.zeros((n, w), np.float32)
        left = (w - length) // 2
        out[:, left : left + length] = x
        return out, np.arange(n)
    k = int(np.ceil(length / w))
    starts = np.linspace(0, length - w, k).round().astype(int)
    crops = np.stack([x[:, s : s + w] for s in starts], axis=1).reshape(n * k, w)
    return crops, np.repeat(np.arange(n), k)


def _embed(bn: BirdNET, windows: np.ndarray, sample_rate: int) -> np.ndarray:
    crops, owner = birdnet_input(windows, sample_rate)
    emb = bn.embed(crops)
    out = np.zeros((len(windows), emb.shape[1]), np.float32)
    np.add.at(out, owner, emb)
    return (out / np.bincount(owner, minlength=len(windows))[:, None]).astype(np.float32)


def embedding_cache(store: Store, *, batch_size: int = 32, progress: bool = True) -> np.ndarray:
    """BirdNET embeddings of every store window (centre crops), computed once: ``(windows, 1024)``."""
    key = stable_hash(
        {
            "store": store.meta["catalog_fingerprint"],
            "audio": store.meta["audio"],
            "windows": len(store),
            "model": "birdnet-v2.4",
        },
        length=20,
    )
    path = store.root / "embeddings" / f"birdnet-{key}.npy"
    if path.is_file():
        return np.load(path, mmap_mode="r")
    path.parent.mkdir(parents=True, exist_ok=True)
    bn = BirdNET()
    m, w = store.margin_samples, store.window_samples
    with atomic_path(path) as tmp:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=(len(store), EMBEDDING_DIM))
        for lo in tqdm(
            range(0, len(store), batch_size), desc="BirdNET embeddings", unit="batch", disable=not progress
        ):
            pos = np.arange(lo, min(lo + batch_size, len(store)))
            out[lo : lo + len(pos)] = _embed(bn, store.read_many(pos)[:, m : m + w], store.sample_rate)
        out.flush()
        del out
    return np.load(path, mmap_mode="r")


def _macro_f1(y: np.ndarray, pred: np.ndarray) -> float:
    from sklearn.metrics import f1_score

    return float(f1_score(y, pred, labels=np.unique(y), average="macro", zero_division=0))


def train_embedding_head(
    store: Store, *, out: str | os.PathLike[str], config: Config, progress: bool = True
) -> dict[str, Any]:
    """Train a head on cached BirdNET embeddings (called by :func:`chirpkit.train` for
    ``model.name`` in :data:`EMBEDDING_MODELS`); writes the usual run folder."""
    from chirpkit.models.spec import ModelSpec, save_head
    from chirpkit.training import class_weights

    cfg = config
    classes = store.classes
    lookup = {c: i for i, c in enumerate(classes)}
    tr, va = split_positions(store, "train"), split_positions(store, "val")
    labels = store.index["label"].map(lookup).to_numpy()
    emb = embedding_cache(store, progress=progress)
    x_tr, y_tr = torch.from_numpy(np.asarray(emb[tr], np.float32)), torch.from_numpy(labels[tr])
    x_va, y_va = torch.from_numpy(np.asarray(emb[va], np.float32)), labels[va]
    torch.manual_seed(cfg.train.seed)
    hidden = EMBEDDING_MODELS[cfg.model.name]
    head = EmbeddingHead(len(classes), hidden=hidden, dropout=cfg.model.dropout)
    weights = class_weights(labels[tr], len(classes)) if cfg.train.class_weights == "balanced" else None
    loss_fn = nn.CrossEntropyLoss(weight=weights, label_smoothing=cfg.train.label_smoothing)
    opt = torch.optim.AdamW(head.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    epochs = max(50, cfg.train.epochs * 5)  # a head on 1,024 numbers: cheap epochs, more of them
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    gen = torch.Generator().manual_seed(cfg.train.seed)
    best: tuple[float, float] = (-1.0, 0.0)
    best_state: dict[str, torch.Tensor] = {}
    history = []
    t0 = time.perf_counter()
    for epoch in range(epochs):
        head.train()
        for idx in torch.randperm(len(x_tr), generator=gen).split(cfg.train.batch_size):
            opt.zero_grad()
            loss = loss_fn(head(x_tr[idx]), y_tr[idx])
            loss.backward()
            opt.step()
        sched.step()
        head.eval()
        with torch.no_grad():
            logits = head(x_va) if len(va) else head(x_tr)
            truth = y_va if len(va) else labels[tr]
            val_loss = float(nn.functional.cross_entropy(logits, torch.from_numpy(truth)))
            f1 = _macro_f1(truth, logits.argmax(1).numpy())
        history.append({"epoch": epoch, "val_macro_f1": f1, "val_loss": val_loss})
        if (f1, -val_loss) > (best[0], -best[1]):
            best = (f1, val_loss)
            best_state = {k: v.clone() for k, v in head.state_dict().items()}
            best_epoch = epoch
    head.load_state_dict(best_state)
    run = Path(out)
    run.mkdir(parents=True, exist_ok=True)
    spec = ModelSpec(
        architecture=cfg.model.name,
        class_names=classes,
        sample_rate=store.sample_rate,
        window_s=store.audio.window_s,
        features={},
        model_params={"hidden": hidden, "dropout": cfg.model.dropout, "embedding": "birdnet-v2.4"},
        background_labels=[b for b in cfg.detect.background_labels if b in classes],
    )
    save_head(run / "model.pt", head, spec)
    write_text(run / "config.yaml", cfg.to_yaml())
    write_json(run / "environment.json", environment({"embedding": "BirdNET V2.4 (CC BY-NC-SA 4.0)"}))
    write_json(
        run / "data.json",
        {
            "store": str(store.root.resolve()),
            "classes": classes,
            "catalog_fingerprint": store.meta["catalog_fingerprint"],
            "windows": {"train": len(tr), "val": len(va)},
        },
    )
    (run / "logs").mkdir(exist_ok=True)
    with atomic_path(run / "logs" / "metrics.csv") as tmp:
        pd.DataFrame(history).to_csv(tmp, index=False)
    summary = {
        "best_epoch": best_epoch,
        "best_val_macro_f1": best[0],
        "best_val_loss": best[1],
        "epochs_run": epochs,
        "train_windows": len(tr),
        "val_windows": len(va),
        "seconds": round(time.perf_counter() - t0, 2),
        "device": "cpu (BirdNET on LiteRT)",
    }
    write_json(run / "train_summary.json", summary)
    log.info(
        "trained %s head on BirdNET embeddings: best val macro F1 %.4f (epoch %d)",
        cfg.model.name,
        best[0],
        best_epoch,
    )
    return summary


def head_predictor_fn(head: EmbeddingHead, sample_rate: int) -> Any:
    bn = BirdNET()

    @torch.inference_mode()
    def run(x: np.ndarray) -> np.ndarray:
        logits = head(torch.from_numpy(_embed(bn, x, sample_rate)))
        return torch.softmax(logits, dim=1).numpy()

    return run


def _birdnet_names(label: str) -> set[str]:
    latin, _, common = label.partition("_")
    return {
        label.lower(),
        latin.lower(),
        common.lower(),
        latin.lower().replace(" ", "_"),
        common.lower().replace(" ", "_"),
    }


def _class_map(
    classes: list[str], bn_labels: list[str], label_map: Mapping[str, str] | str | os.PathLike[str] | None
) -> dict[str, int]:
    """Dataset class → BirdNET label index."""
    by_name: dict[str, int] = {}
    for i, lab in enumerate(bn_labels):
        for key in _birdnet_names(lab):
            by_name.setdefault(key, i)
    mapping: dict[str, str] = {}
    if isinstance(label_map, Mapping):
        mapping = dict(label_map)
    elif label_map is not None:
        table = pd.read_csv(label_map, dtype=str, keep_default_na=False)
        cols = {c.lower(): c for c in table.columns}
        if "species_code" in cols and "sci_name" in cols:  # an eBird taxonomy
            mapping = dict(zip(table[cols["species_code"]], table[cols["sci_name"]], strict=True))
        elif len(table.columns) >= 2:
            mapping = dict(zip(table.iloc[:, 0], table.iloc[:, 1], strict=True))
        else:
            raise DataError(
                f"label map {label_map} needs two columns (class, BirdNET name) or an eBird taxonomy"
            )
    out = {}
    for c in classes:
        name = mapping.get(c, c).lower()
        for key in (name, name.replace("_", " "), name.replace(" ", "_")):
            if key in by_name:
                out[c] = by_name[key]
                break
    return out


def zero_shot(
    store: Store | str | os.PathLike[str],
    *,
    split: str = "test",
    label_map: Mapping[str, str] | str | os.PathLike[str] | None = None,
    out: str | os.PathLike[str] | None = None,
    batch_size: int = 32,
    progress: bool = True,
) -> dict[str, Any]:
    """BirdNET V2.4's species scores, restricted to the dataset's classes, scored on ``split``.

    Only windows whose class maps to a BirdNET species are scored (the others, e.g. ``noise``,
    are counted and listed). Scores are per example (window logits averaged).
    """
    from chirpkit.evaluation import scores

    st = store if isinstance(store, Store) else Store(store)
    bn = BirdNET()
    cmap = _class_map(st.classes, bn.labels, label_map)
    if not cmap:
        raise DataError(
            f"none of the classes {st.classes[:8]} matches a BirdNET V2.4 species; give label_map= a CSV "
            "(class, BirdNET Latin or common name) or an eBird taxonomy CSV (SPECIES_CODE, SCI_NAME)"
        )
    pos = split_positions(st, split)
    pos = pos[st.index["label"].iloc[pos].isin(list(cmap)).to_numpy()]
    if len(pos) == 0:
        raise DataError(f"no '{split}' windows of a mapped class in {st.root}")
    mapped = list(cmap)
    cols = np.array([cmap[c] for c in mapped])
    m, w = st.margin_samples, st.window_samples
    logits = []
    for lo in tqdm(
        range(0, len(pos), batch_size), desc="BirdNET zero-shot", unit="batch", disable=not progress
    ):
        crops, owner = birdnet_input(st.read_many(pos[lo : lo + batch_size])[:, m : m + w], st.sample_rate)
        z = bn.logits(crops)[:, cols]
        agg = np.zeros((owner.max() + 1, len(cols)), np.float32)
        np.add.at(agg, owner, z)
        logits.append((agg / np.bincount(owner)[:, None]).astype(np.float32))
    z = np.concatenate(logits)
    idx = st.index.iloc[pos].reset_index(drop=True)
    rows = pd.DataFrame(z).groupby(idx["row"].to_numpy(), sort=True).mean()
    lookup = {c: i for i, c in enumerate(mapped)}
    y_true = idx.groupby("row", sort=True).first()["label"].map(lookup).to_numpy()
    y_pred = rows.to_numpy().argmax(1)
    res: dict[str, Any] = {
        "split": split,
        "model": "BirdNET V2.4 zero-shot",
        **scores(y_true, y_pred, len(mapped)),
        "n_examples": len(y_true),
        "classes_mapped": {c: bn.labels[i] for c, i in cmap.items()},
        "classes_unmapped": sorted(set(st.classes) - set(cmap)),
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
