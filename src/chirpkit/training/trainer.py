"""The Lightning trainer chirpkit trains with, and the process settings a training run needs.

:func:`build_trainer` turns the ``train`` config section into a ``lightning.Trainer`` (precision,
devices, checkpoints, early stopping, loggers). :func:`training_process` is the one place where
training touches process-wide state — glibc's allocator, warning filters, Lightning's loggers and
its SIGINT handler — and it restores all of it when training ends.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import logging
import signal
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from chirpkit.utils.compat import ensure_torchvision_importable

ensure_torchvision_importable()  # before Lightning imports torchvision (see chirpkit.utils.compat)

import lightning.pytorch as L  # noqa: E402
import torch  # noqa: E402
from lightning.pytorch.callbacks import Checkpoint, EarlyStopping, ModelCheckpoint, TQDMProgressBar  # noqa: E402
from lightning.pytorch.loggers import CSVLogger  # noqa: E402

from chirpkit.config import TrainConfig  # noqa: E402
from chirpkit.utils.threads import check_stop  # noqa: E402

__all__ = [
    "EpochLines",
    "LastCheckpoint",
    "build_trainer",
    "on_cpu",
    "progress_callback",
    "resolve_precision",
    "training_process",
]

log = logging.getLogger("chirpkit")

# glibc mallopt parameters
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
_GLIBC_DEFAULTS = {_M_TRIM_THRESHOLD: 128 * 1024, _M_MMAP_MAX: 65536}
_QUIET = (
    ".*does not have many workers.*",
    ".*LitLogger.*",
    ".*litlogger.*",
    ".*treespec, LeafSpec.*",
    ".*Experiment logs directory.*",
    ".*Checkpoint directory.*exists and is not empty.*",
    ".*The dirpath has changed from.*",
    ".*but have no `val_dataloader`.*",
    ".*You defined a `validation_step` but have no `val_dataloader`.*",
    ".*Total length of .* across ranks is zero.*",
)


def on_cpu(cfg: TrainConfig) -> bool:
    return cfg.accelerator == "cpu" or (cfg.accelerator == "auto" and not torch.cuda.is_available())


def resolve_precision(setting: str, accelerator: str) -> str:
    """``auto`` → bf16-mixed (or 16-mixed) on CUDA, 32-true elsewhere."""
    if setting != "auto":
        return setting
    if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "32-true"


def _mallopt(settings: dict[int, int]) -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        return all(bool(libc.mallopt(k, v)) for k, v in settings.items())
    except (OSError, AttributeError):  # not glibc (musl, ...)
        return False


@contextlib.contextmanager
def training_process(cfg: TrainConfig) -> Iterator[None]:
    """Process settings for one training run, restored afterwards.

    * ``train.retain_cpu_memory`` (CPU training on Linux/glibc): by default glibc serves blocks
      above 32 MB (a CNN's activations and gradients) with mmap and unmaps them when freed, so
      every training step page-faults ~1 GB of fresh pages; on this project's 2-core machine 35 %
      of the CPU time went to the kernel. With mmap off for malloc and a high trim threshold,
      freed blocks are reused: 1.6x faster steps, peak RSS ~1.5x. glibc's defaults come back after.
    * Lightning's chatter (rank-zero info, its warnings about workers and folders) is silenced.
    * Lightning sets SIGINT to "ignore" when it handles a Ctrl-C; the caller's handler comes back.
    """
    retained = (
        cfg.retain_cpu_memory and on_cpu(cfg) and _mallopt({_M_MMAP_MAX: 0, _M_TRIM_THRESHOLD: 1 << 30})
    )
    if retained:
        log.debug("glibc: freed memory kept in the heap for CPU training (train.retain_cpu_memory)")
    loggers = (
        "lightning.pytorch.utilities.rank_zero",
        "lightning.pytorch.accelerators.cuda",
        "lightning.fabric",
    )
    levels = {name: logging.getLogger(name).level for name in loggers}
    sigint = signal.getsignal(signal.SIGINT)
    try:
        with warnings.catch_warnings():
            for pattern in _QUIET:
                warnings.filterwarnings("ignore", message=pattern)
            for name in loggers:
                logging.getLogger(name).setLevel(logging.WARNING)
            yield
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
        if sigint is not None:
            signal.signal(signal.SIGINT, sigint)
        if retained:
            _mallopt(_GLIBC_DEFAULTS)


class _StopOnRequest(L.Callback):
    """Stop at the next batch when a Ctrl-C was requested but its exception got lost (see
    :func:`chirpkit.utils.threads.request_stop`)."""

    def on_train_batch_end(self, *args: Any) -> None:
        check_stop()

    def on_validation_batch_end(self, *args: Any) -> None:
        check_stop()


class LastCheckpoint(Checkpoint):
    """``last.ckpt`` after every epoch, written atomically, for ``--resume``.

    Lightning's ``ModelCheckpoint(save_last=True)`` writes it only in an epoch that also saved a
    top-k checkpoint, so after a run whose last epochs did not improve, ``last.ckpt`` held an
    earlier epoch and a resume repeated them. A checkpoint callback runs after the others, so the
    best-checkpoint state it stores is the epoch's."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        # the whole training state (optimiser, loops, callbacks): --resume continues from it
        trainer.save_checkpoint(tmp, weights_only=False)
        if trainer.is_global_zero:
            tmp.replace(self.path)
        trainer.strategy.barrier("chirpkit-last-checkpoint")


class EpochLines(L.Callback):
    """Progress for logs that are not a terminal (a batch job's output file, CI): one line per
    epoch with the losses and validation macro F1, instead of a progress bar redrawn per step."""

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_rank != 0 or trainer.sanity_checking:
            return
        m = trainer.callback_metrics
        parts = [f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}"]
        for key, name in (
            ("train_loss", "train loss"),
            ("val_loss", "val loss"),
            ("val_macro_f1", "val macro F1"),
        ):
            if key in m:
                parts.append(f"{name} {float(m[key]):.4f}")
        log.info("%s", ", ".join(parts))


def progress_callback(progress: bool, *, stream: Any = None) -> L.Callback | None:
    """A progress bar on a terminal, one line per epoch elsewhere, nothing without progress."""
    if not progress:
        return None
    out = stream if stream is not None else sys.stderr
    return TQDMProgressBar(leave=True) if out.isatty() else EpochLines()


def _loggers(run: Path, tensorboard: bool) -> list[Any]:
    loggers: list[Any] = [CSVLogger(save_dir=str(run), name="logs", version="")]
    if tensorboard:
        if importlib.util.find_spec("tensorboard") or importlib.util.find_spec("tensorboardX"):
            from lightning.pytorch.loggers import TensorBoardLogger

            loggers.append(
                TensorBoardLogger(save_dir=str(run), name="tb", version="", default_hp_metric=False)
            )
        else:
            log.info("TensorBoard logs skipped: install tensorboard or tensorboardX (train.tensorboard)")
    return loggers


def build_trainer(
    cfg: TrainConfig, run: Path, *, validate: bool, progress: bool, steps_per_epoch: int
) -> tuple[L.Trainer, ModelCheckpoint]:
    """A trainer for ``cfg`` writing into ``run`` and its best/last checkpoint callback; seeds
    every generator with ``train.seed``.

    ``validate=False`` (no validation windows) keeps the last epoch as the model."""
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    best = ModelCheckpoint(
        dirpath=run / "checkpoints",
        filename="best",
        monitor="val_selection" if validate else None,
        mode="max",
        save_last=False,  # LastCheckpoint: Lightning's save_last only follows a new best
        enable_version_counter=False,
    )
    callbacks: list[L.Callback] = [best, LastCheckpoint(run / "checkpoints" / "last.ckpt"), _StopOnRequest()]
    shown = progress_callback(progress)
    if shown is not None:
        callbacks.append(shown)
    if cfg.patience and validate:
        # on macro F1 itself: the selection score's loss tie-break would count every loss decrease
        # as progress and never stop a run whose F1 has plateaued
        callbacks.append(
            EarlyStopping(monitor="val_macro_f1", mode="max", patience=cfg.patience, min_delta=1e-4)
        )
    trainer = L.Trainer(
        max_epochs=cfg.epochs,
        accelerator=cfg.accelerator,
        devices=cfg.devices,
        precision=resolve_precision(cfg.precision, cfg.accelerator),  # type: ignore[arg-type]
        deterministic=cfg.deterministic,
        callbacks=callbacks,
        logger=_loggers(run, cfg.tensorboard),
        gradient_clip_val=cfg.grad_clip,
        enable_progress_bar=isinstance(shown, TQDMProgressBar),
        enable_model_summary=False,
        log_every_n_steps=max(1, min(10, steps_per_epoch)),
        num_sanity_val_steps=0,
        limit_val_batches=None if validate else 0,
        default_root_dir=str(run),
    )
    return trainer, best
