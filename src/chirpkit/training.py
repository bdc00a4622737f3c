"""Training with Lightning: weighted cross-entropy, AdamW, warm-up + cosine schedule, best
checkpoint by validation macro F1, resumable.

A run folder holds::

    runs/NAME/
      config.yaml         the resolved config (audio settings taken from the store)
      environment.json    Python, platform, library versions, devices
      data.json           store path, catalog fingerprint, classes, windows per split and class
      model.pt            best model: spec + weights (all that evaluate/detect/export need)
      checkpoints/        best.ckpt, last.ckpt (Lightning; used by --resume)
      logs/metrics.csv    per-epoch losses and validation macro F1
      train_summary.json  best epoch, its val macro F1 and loss, epochs run, wall time
"""

from __future__ import annotations

import ctypes
import logging
import math
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from chirpkit._compat import ensure_torchvision_importable

ensure_torchvision_importable()  # before Lightning/torchmetrics import torchvision (see chirpkit._compat)

import lightning.pytorch as L
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger
from torch import nn
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassF1Score, MultilabelF1Score

from chirpkit._util import atomic_path, environment, write_json, write_text
from chirpkit.augment import Augmenter
from chirpkit.conditioning import steps_from_config, steps_to_dicts
from chirpkit.config import AugmentConfig, Config, TrainConfig, load_config
from chirpkit.data.dataset import FeatureDataset, WindowDataset, feature_cache, split_positions
from chirpkit.data.store import Store
from chirpkit.errors import ConfigError, DataError, RunError
from chirpkit.losses import ClassificationLoss
from chirpkit.models import ClassifierNet, ModelSpec, save_model

__all__ = ["ClassifierTask", "class_weights", "train"]

log = logging.getLogger("chirpkit")


def class_weights(targets: np.ndarray, num_classes: int) -> torch.Tensor:
    """Balanced weights ``n / (k * count_c)`` (classes absent from ``targets`` count as 1)."""
    counts = np.bincount(targets, minlength=num_classes).astype(np.float64)
    w = len(targets) / (num_classes * np.maximum(counts, 1.0))
    return torch.tensor(w, dtype=torch.float32)


class ClassifierTask(L.LightningModule):
    """The Lightning task: a :class:`ClassifierNet` + loss, metrics and optimiser.

    Targets travel as probability rows: one-hot (single-label; mixup mixes them) or multi-hot
    (``train.loss: bce``, multi-label).
    """

    def __init__(
        self,
        spec: dict[str, Any],
        train: dict[str, Any],
        weights: list[float] | None = None,
        augment: dict[str, Any] | None = None,
        margin_samples: int = 0,
        cached_features: bool = False,
        pretrained: bool = False,
        pretrained_file: str | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = ClassifierNet(
            ModelSpec.from_dict(spec), pretrained=pretrained, pretrained_file=pretrained_file
        )
        self.cfg = TrainConfig.model_validate(train)
        # no augment section: no augmentation (ranges kept, every probability 0)
        self.aug_cfg = AugmentConfig.model_validate(augment or {})
        if augment is None:
            self.aug_cfg = self.aug_cfg.off()
        self.margin_samples = margin_samples
        self.cached_features = cached_features
        self.augmenter: Augmenter | None = None
        k = self.net.spec.num_classes
        self.loss_fn = ClassificationLoss(
            self.cfg.loss,
            weight=torch.tensor(weights) if weights is not None else None,
            label_smoothing=self.cfg.label_smoothing,
            focal_gamma=self.cfg.focal_gamma,
        )
        self.multilabel = self.loss_fn.multilabel
        self.val_f1: Any = (
            MultilabelF1Score(num_labels=k, average="macro")
            if self.multilabel
            else MulticlassF1Score(num_classes=k, average="macro")
        )
        self.val_loss = MeanMetric()
        self.last_val: dict[str, float] = {}

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        return self.net(waveform)

    def _target(self, y: torch.Tensor) -> torch.Tensor:
        if y.ndim == 2:  # multi-hot already
            return y.float()
        return nn.functional.one_hot(y, self.net.spec.num_classes).float()

    def on_fit_start(self) -> None:
        spec = self.net.spec
        self.augmenter = Augmenter(
            self.aug_cfg,
            sample_rate=spec.sample_rate,
            window_samples=spec.window_samples,
            margin_samples=self.margin_samples,
            seed=self.cfg.seed + 1000 * self.global_rank,
        )

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        segments, y = batch
        target = self._target(y)
        aug = self.augmenter
        if self.cached_features:  # batches are front-end output: only the spectrogram stage applies
            logits = self.net.forward_spectrogram(segments, aug)
        elif aug is None:  # a bare training step outside fit(): centre crop, no augmentation
            m = self.margin_samples
            logits = self.net(segments[:, m : segments.shape[1] - m])
        else:
            x = aug.waveform(aug.read(segments))
            x, target = aug.mixup(x, target)
            logits = self.net.forward_train(x, aug)
        loss = self.loss_fn(logits, target)
        self.log("train_loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(y))
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        logits = self.net.forward_spectrogram(x) if self.cached_features else self.net(x)
        self.val_loss.update(self.loss_fn(logits, self._target(y)), weight=len(y))
        if self.multilabel:
            self.val_f1.update(torch.sigmoid(logits), y.int())
        else:
            self.val_f1.update(logits.argmax(dim=1), y)

    def on_validation_epoch_end(self) -> None:
        f1, loss = self.val_f1.compute(), self.val_loss.compute()
        self.log("val_macro_f1", f1, prog_bar=True)
        self.log("val_loss", loss)
        # checkpoint selection: macro F1, ties (frequent with small validation sets) broken by
        # the lower validation loss; the loss term is < 1e-6 and never outweighs a real F1 gap
        self.log("val_selection", f1 - 1e-6 * loss / (1 + loss))
        self.last_val = {
            "epoch": int(self.current_epoch),
            "macro_f1": float(f1),
            "loss": float(loss),
        }
        self.val_f1.reset()
        self.val_loss.reset()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["chirpkit_val"] = dict(self.last_val)

    def configure_optimizers(self) -> Any:
        opt = torch.optim.AdamW(self.parameters(), lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        per_epoch = max(1, total // max(1, self.cfg.epochs))
        warmup = min(total - 1, int(self.cfg.warmup_epochs * per_epoch))

        def lr_at(step: int) -> float:
            if step < warmup:
                return (step + 1) / (warmup + 1)
            progress = (step - warmup) / max(1, total - warmup)
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def _num_workers(setting: int | str) -> int:
    if setting == "auto":
        cpus = os.cpu_count() or 1
        return min(4, max(0, cpus - 2))
    return int(setting)


def _precision(setting: str, accelerator: str) -> str:
    if setting != "auto":
        return setting
    if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "32-true"


def _retain_cpu_memory() -> bool:
    """Make glibc keep freed memory in the heap (process-wide; Linux/glibc only).

    By default glibc serves blocks above 32 MB (a CNN's activations and gradients) with mmap and
    unmaps them when freed, so every training step page-faults ~1 GB of fresh, zeroed pages: on
    this project's 2-core machine 35 % of the CPU time went to the kernel. With mmap disabled for
    malloc and a high trim threshold, freed blocks are reused: 1.6x faster steps, peak RSS ~1.5x.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_max = -1, -4
        return bool(libc.mallopt(m_mmap_max, 0)) and bool(libc.mallopt(m_trim_threshold, 1 << 30))
    except (OSError, AttributeError):  # not glibc (musl, ...)
        return False


def _loggers(run: Path, tensorboard: bool) -> list[Any]:
    loggers: list[Any] = [CSVLogger(save_dir=str(run), name="logs", version="")]
    if tensorboard:
        import importlib.util

        if importlib.util.find_spec("tensorboard") or importlib.util.find_spec("tensorboardX"):
            from lightning.pytorch.loggers import TensorBoardLogger

            loggers.append(
                TensorBoardLogger(save_dir=str(run), name="tb", version="", default_hp_metric=False)
            )
        else:
            log.info("TensorBoard logs skipped: install tensorboard or tensorboardX (train.tensorboard)")
    return loggers


def sanity_check(
    spec: ModelSpec,
    windows: WindowDataset,
    cfg: Config,
    weights: list[float] | None,
    *,
    steps: int = 150,
    batch_size: int = 16,
) -> dict[str, Any]:
    """Overfit one small batch of training windows (no augmentation, no dropout effects checked):
    the loss must fall to a tenth of its start and, single-label, every window be classified right.

    A model that cannot memorise 16 windows has a bug upstream: labels that do not match the
    audio, silent or clipped windows, features that flatten everything, or a learning rate far off.

    Raises:
        RunError: it did not get there within ``steps`` steps.
    """
    torch.manual_seed(cfg.train.seed)
    rng = np.random.default_rng(cfg.train.seed)
    pick = rng.choice(len(windows), size=min(batch_size, len(windows)), replace=False)
    items = [windows[int(i)] for i in pick]
    m = windows.margin
    x = torch.stack([seg[m : m + windows.window] for seg, _ in items])
    ys = [t for _, t in items]
    target = (
        torch.stack(ys).float()
        if isinstance(ys[0], torch.Tensor)
        else nn.functional.one_hot(torch.tensor(ys), spec.num_classes).float()
    )
    net = ClassifierNet(spec, pretrained=cfg.model.pretrained, pretrained_file=cfg.model.pretrained_file)
    loss_fn = ClassificationLoss(
        cfg.train.loss, weight=torch.tensor(weights) if weights else None, focal_gamma=cfg.train.focal_gamma
    )
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.train.lr, weight_decay=0.0)
    net.train()
    first = last = float("nan")
    reached = False
    for step in range(steps):
        opt.zero_grad()
        logits = net(x)
        loss = loss_fn(logits, target)
        loss.backward()
        opt.step()
        last = float(loss.detach())
        if step == 0:
            first = last
        with torch.no_grad():
            right = (
                ((torch.sigmoid(logits) > 0.5) == (target > 0.5)).all(1)
                if loss_fn.multilabel
                else (logits.argmax(1) == target.argmax(1))
            )
        if last <= 0.1 * first and bool(right.all()):
            reached = True
            break
    result = {
        "sanity": "passed" if reached else "failed",
        "windows": len(x),
        "steps": step + 1,
        "loss_first": round(first, 4),
        "loss_last": round(last, 4),
    }
    if not reached:
        raise RunError(
            f"sanity check failed: {spec.architecture} could not overfit one batch of {len(x)} training "
            f"windows in {steps} steps (loss {first:.3f} → {last:.3f}). Check that the labels match the "
            "audio, that windows are not silent or clipped (chirpkit inspect), the features and train.lr"
        )
    log.info(
        "sanity check passed: %d windows memorised in %d steps (loss %.3f → %.3f)",
        len(x),
        step + 1,
        first,
        last,
    )
    return result


def _quiet_lightning() -> None:
    for name in (
        "lightning.pytorch.utilities.rank_zero",
        "lightning.pytorch.accelerators.cuda",
        "lightning.fabric",
    ):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*LitLogger.*")
    warnings.filterwarnings("ignore", message=".*treespec, LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*Experiment logs directory.*")
    warnings.filterwarnings("ignore", message=".*Checkpoint directory.*exists and is not empty.*")
    warnings.filterwarnings("ignore", message=".*The dirpath has changed from.*")
    warnings.filterwarnings("ignore", message=".*but have no `val_dataloader`.*")
    warnings.filterwarnings("ignore", message=".*litlogger.*")


def train(
    store: str | os.PathLike[str] | Store,
    *,
    out: str | os.PathLike[str],
    config: Config | None = None,
    resume: bool = False,
    sanity: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Train a classifier on the ``train`` windows of a store, choosing the best epoch on ``val``.

    Args:
        store: a prepared store (``chirpkit prepare``) whose catalog had a ``split`` column.
        out: the run folder (see the module docstring for its layout).
        config: features, model and train sections are used; audio comes from the store.
        resume: continue from ``out/checkpoints/last.ckpt``.
        sanity: only check that the model can overfit one training batch (see
            :func:`sanity_check`); raises :class:`RunError` if it cannot.
        progress: show Lightning's progress bar.

    Returns:
        The training summary (also in ``train_summary.json``).

    Raises:
        DataError: no split column, no training windows, or fewer than two classes.
        RunError: ``resume`` without a ``last.ckpt``.
    """
    cfg = config or Config()
    st = store if isinstance(store, Store) else Store(store)
    run = Path(out)
    if "split" not in st.index.columns:
        raise DataError(
            f"store {st.root} has no split column: run `chirpkit split CATALOG` and then "
            "`chirpkit prepare` again (decoded audio is reused, only the index is rewritten)"
        )
    classes = st.classes
    if len(classes) < 2:
        raise DataError(f"store {st.root} holds a single class ({classes}); a classifier needs two or more")
    tr_pos, va_pos = split_positions(st, "train"), split_positions(st, "val")
    if len(tr_pos) == 0:
        raise DataError(f"store {st.root} has no 'train' windows; check the split fractions")
    missing = sorted(set(classes) - set(st.index["label"].to_numpy()[tr_pos]))
    if missing:
        log.warning("classes with no training windows (they cannot be learned): %s", missing)

    audio = st.audio
    cfg = load_config(base=cfg, overrides={"audio": audio.model_dump()})
    from chirpkit.embeddings import EMBEDDING_MODELS

    if cfg.model.name in EMBEDDING_MODELS:
        from chirpkit.embeddings import train_embedding_head

        return train_embedding_head(st, out=run, config=cfg, progress=progress)
    spec = ModelSpec(
        architecture=cfg.model.name,
        class_names=classes,
        sample_rate=audio.sample_rate,
        window_s=audio.window_s,
        features=cfg.features.model_dump(),
        model_params={"dropout": cfg.model.dropout, **cfg.model.params},
        background_labels=[b for b in cfg.detect.background_labels if b in classes],
        conditioning=steps_to_dicts(steps_from_config(audio)),
        task="multilabel" if cfg.train.loss == "bce" else "multiclass",
    )
    multilabel = spec.task == "multilabel"
    train_windows = WindowDataset(st, tr_pos, classes, with_margin=True, multilabel=multilabel)
    val_windows = WindowDataset(st, va_pos, classes, multilabel=multilabel)
    weights = None
    if cfg.train.class_weights == "balanced":
        if train_windows.multi_hot is not None:  # per label: n / (k * positives)
            pos = train_windows.multi_hot.sum(axis=0)
            weights = (len(train_windows) / (len(classes) * np.maximum(pos, 1.0))).tolist()
        else:
            weights = class_weights(train_windows.targets, len(classes)).tolist()
    if sanity:
        return sanity_check(spec, train_windows, cfg, weights)
    train_ds: Dataset[tuple[torch.Tensor, Any]] = train_windows
    val_ds: Dataset[tuple[torch.Tensor, Any]] = val_windows
    if cfg.train.cache_features:
        on = [f"augment.{k}.p" for k in cfg.augment.enabled() if k not in ("freq_mask", "time_mask")]
        if on:
            raise ConfigError(
                f"train.cache_features needs the waveform and pitch augmentations off: set {on} to 0 "
                "(frequency and time masks still apply)"
            )
        from chirpkit.features import build_frontend

        feats = feature_cache(
            st,
            build_frontend(cfg.features, st.sample_rate),
            {"features": cfg.features.model_dump(), "sample_rate": st.sample_rate},
            progress=progress,
        )
        tr_t = train_windows.multi_hot if train_windows.multi_hot is not None else train_windows.targets
        va_t = val_windows.multi_hot if val_windows.multi_hot is not None else val_windows.targets
        train_ds = FeatureDataset(feats, tr_pos, tr_t)
        val_ds = FeatureDataset(feats, va_pos, va_t)

    run.mkdir(parents=True, exist_ok=True)
    write_text(run / "config.yaml", cfg.to_yaml())
    write_json(run / "environment.json", environment())
    counts = st.index.groupby(["label", "split"]).size().unstack(fill_value=0)
    write_json(
        run / "data.json",
        {
            "store": str(st.root.resolve()),
            "catalog_fingerprint": st.meta["catalog_fingerprint"],
            "classes": classes,
            "windows": {s: int((st.index["split"] == s).sum()) for s in ("train", "val", "test")},
            "windows_per_class": {lab: {k: int(v) for k, v in r.items()} for lab, r in counts.iterrows()},
            "class_weights": weights,
        },
    )

    _quiet_lightning()
    on_cpu = cfg.train.accelerator == "cpu" or (
        cfg.train.accelerator == "auto" and not torch.cuda.is_available()
    )
    if cfg.train.retain_cpu_memory and on_cpu and _retain_cpu_memory():
        log.debug("glibc: freed memory kept in the heap for CPU training (train.retain_cpu_memory)")
    L.seed_everything(cfg.train.seed, workers=True, verbose=False)
    workers = _num_workers(cfg.train.num_workers)
    gen = torch.Generator().manual_seed(cfg.train.seed)
    dl_kw: dict[str, Any] = {
        "num_workers": workers,
        "persistent_workers": workers > 0,
        "pin_memory": torch.cuda.is_available(),
    }
    sampler = None
    if cfg.train.sampler == "weighted":  # count(label)^-power per window: 0.5 = square-root balancing
        label_counts = np.bincount(train_windows.targets[train_windows.targets >= 0], minlength=len(classes))
        per_window = (
            np.maximum(label_counts[np.maximum(train_windows.targets, 0)], 1.0) ** -cfg.train.sampler_power
        )
        sampler = WeightedRandomSampler(
            per_window.tolist(), num_samples=len(train_windows), replacement=True, generator=gen
        )
    train_dl = DataLoader(
        train_ds,
        batch_size=cfg.train.batch_size,
        shuffle=sampler is None,
        sampler=sampler,
        generator=gen,
        drop_last=len(train_windows) > cfg.train.batch_size,
        **dl_kw,
    )
    val_dl = (
        DataLoader(val_ds, batch_size=cfg.train.batch_size * 2, shuffle=False, **dl_kw)
        if len(val_windows)
        else None
    )
    if val_dl is None:
        log.warning("no validation windows: the last epoch is kept as the model")

    task = ClassifierTask(
        spec.to_dict(),
        cfg.train.model_dump(),
        weights,
        cfg.augment.model_dump(),
        st.margin_samples,
        cfg.train.cache_features,
        cfg.model.pretrained,
        cfg.model.pretrained_file,
    )
    ckpt_dir = run / "checkpoints"
    monitor = "val_selection" if val_dl is not None else None
    best_cb = ModelCheckpoint(
        dirpath=ckpt_dir,
        filename="best",
        monitor=monitor,
        mode="max",
        save_last=True,
        enable_version_counter=False,
    )
    callbacks: list[L.Callback] = [best_cb]
    if progress:
        callbacks.append(TQDMProgressBar(leave=True))
    if cfg.train.patience and val_dl is not None:
        # on macro F1 itself: the selection score's loss tie-break would count every loss decrease
        # as progress and never stop a run whose F1 has plateaued
        callbacks.append(
            EarlyStopping(monitor="val_macro_f1", mode="max", patience=cfg.train.patience, min_delta=1e-4)
        )
    trainer = L.Trainer(
        max_epochs=cfg.train.epochs,
        accelerator=cfg.train.accelerator,
        devices=cfg.train.devices,
        precision=_precision(cfg.train.precision, cfg.train.accelerator),  # type: ignore[arg-type]
        deterministic=cfg.train.deterministic,
        callbacks=callbacks,
        logger=_loggers(run, cfg.train.tensorboard),
        gradient_clip_val=cfg.train.grad_clip,
        enable_progress_bar=progress,
        enable_model_summary=False,
        log_every_n_steps=max(1, min(10, len(train_dl))),
        num_sanity_val_steps=0,
        default_root_dir=str(run),
    )
    ckpt_path = None
    log_csv = run / "logs" / "metrics.csv"
    history = None
    if resume:
        last = ckpt_dir / "last.ckpt"
        if not last.is_file():
            raise RunError(f"cannot resume: {last} does not exist (train without --resume first)")
        ckpt_path = str(last)
        if log_csv.is_file():  # Lightning's CSV logger starts a new file: keep the earlier epochs
            history = pd.read_csv(log_csv)
    t0 = time.perf_counter()
    trainer.fit(task, train_dataloaders=train_dl, val_dataloaders=val_dl, ckpt_path=ckpt_path)
    wall = time.perf_counter() - t0
    if history is not None and trainer.global_rank == 0:
        new = pd.read_csv(log_csv) if log_csv.is_file() else history.iloc[:0]
        first_new = new["epoch"].min() if len(new) else np.inf
        merged = pd.concat([history[history["epoch"] < first_new], new], ignore_index=True)
        with atomic_path(log_csv) as tmp:
            merged.to_csv(tmp, index=False)

    best_path = best_cb.best_model_path or best_cb.last_model_path
    blob = torch.load(best_path, map_location="cpu", weights_only=False)
    best_val = blob.get("chirpkit_val", {})
    if trainer.global_rank == 0:  # the weights come from the checkpoint: no pretrained download here
        best = ClassifierNet(spec)
        best.load_state_dict({k[4:]: v for k, v in blob["state_dict"].items() if k.startswith("net.")})
        save_model(run / "model.pt", best)
    best_f1 = best_val.get("macro_f1")
    summary = {
        "best_checkpoint": str(Path(best_path).name) if best_path else None,
        "best_epoch": best_val.get("epoch", blob.get("epoch")),
        "best_val_macro_f1": best_f1,
        "best_val_loss": best_val.get("loss"),
        "epochs_run": int(trainer.current_epoch),
        "train_windows": len(train_windows),
        "val_windows": len(val_windows),
        "seconds": round(wall, 2),
        "device": str(trainer.strategy.root_device),
        "precision": str(trainer.precision),
    }
    write_json(run / "train_summary.json", summary)
    log.info(
        "trained %s in %.1f s; best val macro F1 %s; model: %s",
        spec.architecture,
        wall,
        f"{best_f1:.4f}" if best_f1 is not None else "n/a",
        run / "model.pt",
    )
    return summary
