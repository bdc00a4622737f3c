"""``chirpkit train``: one path for every model family.

:func:`train` checks the store, builds the spec and the task
(:class:`chirpkit.training.task.ClassifierTask`: the network and how it is fed come from the model's
registry entry), the data module (:class:`chirpkit.training.datamodule.StoreDataModule`) and the
trainer (:func:`chirpkit.training.trainer.build_trainer`), fits, and writes the run folder
(:class:`chirpkit.training.runs.RunFolder`). Everything that can fail on bad
settings (an unknown model, bad model parameters, an unavailable accelerator, a missing
checkpoint) fails before the run folder is touched.
"""

from __future__ import annotations

import copy
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from chirpkit.conditioning import steps_from_config, steps_to_dicts
from chirpkit.config import Config, check_accelerator, load_config
from chirpkit.data.dataset import split_positions, targets_of
from chirpkit.data.store import Store
from chirpkit.errors import ConfigError, DataError, RunError
from chirpkit.models import ModelSpec, build_network, warm_start
from chirpkit.models.inputs import ModelInput
from chirpkit.models.predict import load_predictor
from chirpkit.training.datamodule import SoftTargets, StoreDataModule, class_weights
from chirpkit.training.losses import ClassificationLoss
from chirpkit.training.runs import RunFolder
from chirpkit.training.task import ClassifierTask
from chirpkit.training.trainer import build_trainer, training_process
from chirpkit.utils.io import write_csv

if TYPE_CHECKING:
    from chirpkit.training.prior_cv import PriorChoice

__all__ = ["checkpoint_network", "model_spec", "sanity_check", "teacher_targets", "train"]

log = logging.getLogger("chirpkit")


def model_spec(config: Config, store: Store) -> ModelSpec:
    """The spec of a model trained with ``config`` on ``store`` (classes and audio from the store)."""
    audio = store.audio
    classes = store.classes
    return ModelSpec(
        architecture=config.model.name,
        class_names=classes,
        sample_rate=audio.sample_rate,
        window_s=audio.window_s,
        features=config.features.model_dump(),
        model_params={"dropout": config.model.dropout, **config.model.params},
        background_labels=[b for b in config.detect.background_labels if b in classes],
        conditioning=steps_to_dicts(steps_from_config(audio)),
        task="multilabel" if config.train.loss == "bce" else "multiclass",
    )


def _check_store(st: Store) -> None:
    if "split" not in st.index.columns:
        raise DataError(
            f"store {st.root} has no split column: run `chirpkit split CATALOG` and then "
            "`chirpkit prepare` again (decoded audio is reused, only the index is rewritten)"
        )
    if len(st.classes) < 2:
        raise DataError(
            f"store {st.root} holds a single class ({st.classes}); a classifier needs two or more "
            "(for a single-species detector, add background windows: chirpkit ingest --background N)"
        )
    tr = split_positions(st, "train")
    if len(tr) == 0:
        raise DataError(f"store {st.root} has no 'train' windows; check the split fractions")
    missing = sorted(set(st.classes) - set(st.index["label"].to_numpy()[tr]))
    if missing:
        log.warning("classes with no training windows (they cannot be learned): %s", missing)


def sanity_check(
    task: ClassifierTask, store: Store, config: Config, *, steps: int = 150, batch_size: int = 16
) -> dict[str, Any]:
    """Overfit one small batch of training windows (no augmentation): the loss must fall to a
    tenth of its start and, single-label, every window be classified right.

    A model that cannot memorise 16 windows has a bug upstream: labels that do not match the
    audio, silent or clipped windows, features that flatten everything, or a learning rate far off.

    Raises:
        RunError: it did not get there within ``steps`` steps.
    """
    spec = task.spec
    torch.manual_seed(config.train.seed)
    rng = np.random.default_rng(config.train.seed)
    train_pos = split_positions(store, "train")
    pick = np.sort(rng.choice(train_pos, size=min(batch_size, len(train_pos)), replace=False))
    targets = targets_of(store, pick, spec.class_names, multilabel=spec.task == "multilabel")
    task.input.cache(store, progress=False)
    items = [task.input.dataset(store, pick, targets, training=False)[i] for i in range(len(pick))]
    x = torch.stack([it[0] for it in items])
    target = task._target(torch.as_tensor(np.asarray(targets)))
    net = task.net
    loss_fn = ClassificationLoss(
        config.train.loss, weight=task.loss_fn.weight, focal_gamma=config.train.focal_gamma
    )
    opt = torch.optim.AdamW(net.parameters(), lr=config.train.lr, weight_decay=0.0)
    net.train()
    first = last = float("nan")
    reached = False
    for step in range(steps):
        opt.zero_grad()
        logits = task.input.eval_logits(net, x)
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


def teacher_targets(
    teacher: str | os.PathLike[str],
    store: Store,
    spec: ModelSpec,
    positions: np.ndarray,
    unlabelled: list[Store],
    *,
    pseudo: Sequence[float] = (),
    device: str = "auto",
    progress: bool = True,
) -> SoftTargets:
    """A teacher model's probabilities of the student's classes on the training windows and on
    every window of the unlabelled stores (soft targets for distillation).

    With ``pseudo = (low, high)`` (self-training, ``train.pseudo_labels``) the targets are hard
    instead: the training windows keep their own labels, and an unlabelled window's class is
    present where the teacher scores it at ``high`` or more and absent below ``low``; a window
    with a score in between is left out (a single-label student: windows whose top class scores
    ``high`` or more, one-hot).

    Raises:
        ConfigError: the teacher does not know every class of the store, or reads windows of
            another sample rate or length.
    """
    pred = load_predictor(teacher, device=device)
    names = pred.spec.class_names
    missing = [c for c in spec.class_names if c not in names]
    if missing:
        raise ConfigError(
            f"train.teacher={teacher} does not know the class(es) {missing}; a teacher must score every "
            f"class of the store (it knows {names[:10]})"
        )
    for st in (store, *unlabelled):
        same = st.sample_rate == pred.spec.sample_rate and st.window_samples == pred.spec.window_samples
        if pred.kind != "embedding" and not same:  # an embedding model resamples store windows itself
            raise ConfigError(
                f"train.teacher={teacher} reads {pred.spec.window_s} s windows at {pred.spec.sample_rate} Hz "
                f"but store {st.root} holds {st.audio.window_s} s at {st.sample_rate} Hz; prepare the "
                "store with the teacher's audio settings"
            )
    cols = [names.index(c) for c in spec.class_names]

    def probs(st: Store, pos: np.ndarray) -> np.ndarray:
        p = pred.on_store(st, pos, progress=progress, desc="teacher")[:, cols]
        if spec.task != "multilabel":  # the teacher's probabilities over the student's classes
            p = p / np.maximum(p.sum(axis=1, keepdims=True), 1e-12)
        return p.astype(np.float32)

    everything = [np.arange(len(u)) for u in unlabelled]
    if not pseudo:
        return SoftTargets(
            train=probs(store, positions),
            unlabelled=[(u, pos, probs(u, pos)) for u, pos in zip(unlabelled, everything, strict=True)],
        )
    multilabel = spec.task == "multilabel"
    own = targets_of(store, positions, spec.class_names, multilabel=multilabel)
    if not multilabel:  # one-hot; a label outside the classes (-1) keeps the teacher's scores
        known = own >= 0
        one_hot = np.zeros((len(own), spec.num_classes), np.float32)
        one_hot[known] = np.eye(spec.num_classes, dtype=np.float32)[own[known]]
        if not known.all():
            one_hot[~known] = probs(store, positions[~known])
        own = one_hot
    hard = []
    for u, pos in zip(unlabelled, everything, strict=True):
        kept, target = pseudo_labels(probs(u, pos), pseudo, multilabel=multilabel)
        hard.append((u, pos[kept], target))
        counts = target.sum(axis=0).astype(int)
        log.info(
            "pseudo-labels on %s: %d of %d window(s) kept (%s); present: %s",
            u.root,
            int(kept.sum()),
            len(pos),
            f"scores below {pseudo[0]:g} or at least {pseudo[1]:g}",
            ", ".join(f"{c} {n}" for c, n in zip(spec.class_names, counts, strict=True) if n) or "none",
        )
    return SoftTargets(train=own.astype(np.float32), unlabelled=hard)


def pseudo_labels(
    probs: np.ndarray, thresholds: Sequence[float], *, multilabel: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Hard labels from a teacher's probabilities ``(windows, classes)``: ``(kept mask, targets of
    the kept windows)``. Multi-label: present at ``high`` or more, absent below ``low``, windows
    with any class in between left out. Single-label: windows whose top class scores ``high`` or
    more, one-hot."""
    low, high = thresholds
    if multilabel:
        kept = np.asarray(((probs >= high) | (probs < low)).all(axis=1))
        return kept, (probs[kept] >= high).astype(np.float32)
    kept = np.asarray(probs.max(axis=1) >= high)
    return kept, np.eye(probs.shape[1], dtype=np.float32)[probs[kept].argmax(axis=1)]


def _data_summary(st: Store, dm: StoreDataModule, weights: list[float] | None) -> dict[str, Any]:
    counts = st.index.groupby(["label", "split"]).size().unstack(fill_value=0)
    return {
        "classes": st.classes,
        "windows": {s: int((st.index["split"] == s).sum()) for s in ("train", "val", "test")},
        "windows_per_class": {lab: {k: int(v) for k, v in r.items()} for lab, r in counts.iterrows()},
        "class_weights": weights,
    }


def checkpoint_network(path: str | os.PathLike[str]) -> tuple[nn.Module, ModelSpec, dict[str, Any]]:
    """``(network in eval mode, spec, checkpoint)`` from a Lightning checkpoint of a chirpkit run
    (``checkpoints/best.ckpt`` or ``last.ckpt``); no pretrained weights are downloaded."""
    try:
        blob = torch.load(path, map_location="cpu", weights_only=False)
        spec = ModelSpec.from_dict(blob["hyper_parameters"]["spec"])
    except Exception as exc:
        raise RunError(f"{path} is not a readable chirpkit checkpoint ({exc}); train again") from exc
    net = build_network(spec)
    net.load_state_dict({k[4:]: v for k, v in blob["state_dict"].items() if k.startswith("net.")})
    return net.eval(), spec, blob


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
        out: the run folder (see :mod:`chirpkit.training.runs`).
        config: features, model and train sections are used; audio comes from the store.
        resume: continue from ``out/checkpoints/last.ckpt`` (with none yet, start over, with a notice).
        sanity: only check that the model can overfit one training batch (see
            :func:`sanity_check`); raises :class:`RunError` if it cannot. Writes nothing.
        progress: show Lightning's progress bar.

    Returns:
        The training summary (also in ``train_summary.json``).

    Raises:
        DataError: no split column, no training windows, or fewer than two classes.
        ConfigError: an unknown model, bad model parameters, an accelerator this machine lacks.
        RunError: training diverged (non-finite loss or weights).
        KeyboardInterrupt: Ctrl-C or SIGTERM; the run is marked interrupted and ``--resume`` continues it.
    """
    cfg = config or Config()
    st = store if isinstance(store, Store) else Store(store)
    run = Path(out)
    _check_store(st)
    cfg = load_config(base=cfg, overrides={"audio": st.audio.model_dump()})
    check_accelerator(cfg.train.accelerator)
    if cfg.train.cache_features:
        _check_cacheable(cfg)
    prep = _before_training(cfg, st, sanity=sanity, progress=progress)
    cfg, st, spec = prep.cfg, prep.store, prep.spec
    task, started_from = _build_task(cfg, st, spec, prep.weights)
    if sanity:
        return sanity_check(task, st, cfg)
    soft = None
    if cfg.train.teacher:
        if cfg.augment.mixup.p > 0:
            raise ConfigError("distillation (train.teacher) does not mix items: set augment.mixup.p=0")
        unlabelled = [Store(u) for u in cfg.train.unlabelled]
        soft = teacher_targets(
            cfg.train.teacher,
            st,
            spec,
            split_positions(st, "train"),
            unlabelled,
            pseudo=cfg.train.pseudo_labels,
            progress=progress,
        )
    elif cfg.train.unlabelled:
        raise ConfigError("train.unlabelled needs a teacher (train.teacher) to give its windows targets")
    dm = StoreDataModule(
        st, task.input, spec.class_names, cfg.train, multilabel=prep.multilabel, progress=progress, soft=soft
    )
    last = run / "checkpoints" / "last.ckpt"
    if resume and not last.is_file():
        log.warning("nothing to resume in %s (no checkpoint was written yet): training from the start", run)
        resume = False
    folder = RunFolder(run)
    folder.start(cfg, st, _data_summary(st, dm, prep.weights) | {"init_from": started_from}, resume=resume)
    fitted = _fit(task, dm, cfg, folder, resume=resume, progress=progress)
    trainer = fitted.trainer
    net, chosen = _choose_network(fitted, task, dm, folder, prep.prior_choice, spec)
    summary = {
        **_fit_summary(fitted, task, dm),
        "teacher": str(cfg.train.teacher) if cfg.train.teacher else None,
        "unlabelled_windows": sum(len(u[1]) for u in soft.unlabelled) if soft is not None else 0,
        "prior_cv": prep.prior_choice.summary() if prep.prior_choice is not None else None,
        "background_filter": _dropped_summary(prep.dropped, cfg.train.background_filter),
        **chosen,
    }
    if trainer.global_rank == 0:
        if prep.prior_choice is not None:
            prep.prior_choice.write(run)
        if prep.dropped is not None:
            write_csv(run / "background_dropped.csv", prep.dropped, index=False, float_format="%.4f")
        folder.finish(net, spec, summary)
    trainer.strategy.barrier("chirpkit-model-written")  # other ranks go on to read model.pt
    best_f1 = summary["best_val_macro_f1"]
    log.info(
        "trained %s in %.1f s; best val macro F1 %s; model: %s",
        spec.architecture,
        fitted.wall,
        f"{best_f1:.4f}" if best_f1 is not None else "n/a",
        run / "model.pt",
    )
    return summary


@dataclass
class _Prepared:
    """What training starts from: the config with the out-of-fold choices applied, the store (less
    filtered background windows), the model spec and the class weights."""

    cfg: Config
    store: Store
    spec: ModelSpec
    multilabel: bool
    weights: list[float] | None
    dropped: pd.DataFrame | None = None
    prior_choice: PriorChoice | None = None


def _before_training(cfg: Config, st: Store, *, sanity: bool, progress: bool) -> _Prepared:
    """The background filter and the out-of-fold choice of a prior head's pull, then the spec."""
    spec = model_spec(cfg, st)
    multilabel = spec.task == "multilabel"

    def weights_of(store: Store) -> list[float] | None:
        if cfg.train.class_weights != "balanced":
            return None
        targets = targets_of(store, split_positions(store, "train"), spec.class_names, multilabel=multilabel)
        return class_weights(targets, spec.num_classes)

    prep = _Prepared(cfg, st, spec, multilabel, weights_of(st))
    if sanity or not (cfg.train.prior_folds or cfg.train.background_filter < 1):
        return prep
    setting = "train.prior_folds" if cfg.train.prior_folds else "train.background_filter"
    start_net, embeddings = _prior_start(cfg, st, spec, setting, progress=progress)
    if cfg.train.background_filter < 1:
        prep.store, prep.dropped = _filter_background(
            start_net, embeddings, st, spec, cfg.train.background_filter
        )
        prep.weights = weights_of(prep.store)
    if cfg.train.prior_folds:
        # the pull and the epochs chosen out of fold; the run then trains with them
        choice = _choose_prior(start_net, embeddings, cfg, prep.store, spec, prep.weights, progress=progress)
        params = {**cfg.model.params, "l2": choice.l2}
        prep.cfg = load_config(base=cfg, overrides={"model.params": params, "train.epochs": choice.epochs})
        prep.spec = model_spec(prep.cfg, prep.store)
        prep.prior_choice = choice
    return prep


def _build_task(
    cfg: Config, st: Store, spec: ModelSpec, weights: list[float] | None
) -> tuple[ClassifierTask, dict[str, Any] | None]:
    """The Lightning task, warm-started from ``model.init_from`` when it is set."""
    task = ClassifierTask(
        spec.to_dict(),
        cfg.train.model_dump(),
        weights,
        cfg.augment.model_dump(),
        margin_samples=st.margin_samples,
        cached_features=cfg.train.cache_features,
        embedding_views=cfg.model.embedding_views,
        embedding_shift_s=cfg.model.embedding_shift_s,
        pretrained=cfg.model.pretrained,
        pretrained_file=cfg.model.pretrained_file,
    )
    started_from = None
    if cfg.model.init_from:
        started_from = warm_start(task.net, spec, cfg.model.init_from)
        log.info(
            "warm start from %s: %d tensor(s) copied, output rows of %d class(es); new classes: %s",
            cfg.model.init_from,
            started_from["copied"],
            spec.num_classes - len(started_from["new_classes"]),
            started_from["new_classes"] or "none",
        )
    return task, started_from


@dataclass
class _Fitted:
    """Lightning's fit, done: the trainer, its best-checkpoint callback, the network as training
    started (a candidate; ``None`` without validation or on resume) and the wall time."""

    trainer: Any
    best_cb: Any
    initial: dict[str, torch.Tensor] | None
    wall: float
    validate: bool


def _fit(
    task: ClassifierTask, dm: StoreDataModule, cfg: Config, folder: RunFolder, *, resume: bool, progress: bool
) -> _Fitted:
    """Run Lightning's fit (from ``last.ckpt`` on resume); a failure or an interrupt marks the run."""
    run = folder.path
    last = run / "checkpoints" / "last.ckpt"
    log_csv = run / "logs" / "metrics.csv"
    history = pd.read_csv(log_csv) if resume and log_csv.is_file() else None
    validate = len(dm.val_pos) > 0
    if not validate:
        log.warning("no validation windows: the last epoch is kept as the model")
    steps = max(1, len(dm.train_pos) // cfg.train.batch_size)
    # the network as it starts (a pretrained prior, a warm start) stays a candidate: training must
    # beat it on validation to replace it
    initial = (
        {k: v.detach().clone() for k, v in task.net.state_dict().items()} if validate and not resume else None
    )
    t0 = time.perf_counter()
    with training_process(cfg.train):
        trainer, best_cb = build_trainer(
            cfg.train, run, validate=validate, progress=progress, steps_per_epoch=steps
        )
        try:
            trainer.fit(task, datamodule=dm, ckpt_path=str(last) if resume else None)
        except (KeyboardInterrupt, SystemExit) as exc:
            if isinstance(exc, SystemExit) and not trainer.interrupted:
                raise
            folder.fail("interrupted", "stopped by Ctrl-C or SIGTERM")
            raise KeyboardInterrupt from None  # Lightning turns Ctrl-C into sys.exit(1)
        except BaseException as exc:
            folder.fail("failed", f"{type(exc).__name__}: {exc}")
            raise
    wall = time.perf_counter() - t0
    if history is not None and trainer.global_rank == 0:  # Lightning's CSV logger starts a new file
        new = pd.read_csv(log_csv) if log_csv.is_file() else history.iloc[:0]
        first_new = new["epoch"].min() if len(new) else np.inf
        merged = pd.concat([history[history["epoch"] < first_new], new], ignore_index=True)
        write_csv(log_csv, merged, index=False)
    return _Fitted(trainer, best_cb, initial, wall, validate)


def _choose_network(
    fitted: _Fitted,
    task: ClassifierTask,
    dm: StoreDataModule,
    folder: RunFolder,
    prior_choice: PriorChoice | None,
    spec: ModelSpec,
) -> tuple[nn.Module, dict[str, Any]]:
    """The network to save: the best checkpoint (the kept prior rows set), or the network as it
    started when that scores better on validation; then what it chooses on validation itself."""
    trainer = fitted.trainer
    last = folder.path / "checkpoints" / "last.ckpt"
    best_path = fitted.best_cb.best_model_path or str(last)
    net, _, blob = checkpoint_network(best_path)
    if prior_choice is not None:
        keep = torch.tensor([c in prior_choice.keep_prior for c in spec.class_names])
        net.get_buffer("keep_prior").copy_(keep)
    kept: dict[str, Any] = {"kept": "trained"}
    if fitted.initial is not None and trainer.global_rank == 0:
        net, kept = _keep_better(net, fitted.initial, task, dm)
    selected = None
    select = getattr(net, "select_on_validation", None)
    if callable(select) and fitted.validate and trainer.global_rank == 0:  # e.g. a score-fusion weight
        try:
            selected = select(lambda: _logits_on(net, task.input, dm.val_dataloader()))
        except KeyboardInterrupt:
            folder.fail("interrupted", "stopped by Ctrl-C or SIGTERM while choosing on validation")
            raise
        except BaseException as exc:
            folder.fail("failed", f"choosing on validation: {type(exc).__name__}: {exc}")
            raise
    best_val = blob.get("chirpkit_val", {})
    return net, {
        "best_checkpoint": Path(best_path).name if best_path else None,
        "best_epoch": best_val.get("epoch", blob.get("epoch")),
        "best_val_macro_f1": best_val.get("macro_f1"),
        "best_val_loss": best_val.get("loss"),
        "selected_on_val": selected,
        **kept,
    }


def _fit_summary(fitted: _Fitted, task: ClassifierTask, dm: StoreDataModule) -> dict[str, Any]:
    trainer = fitted.trainer
    return {
        "epochs_run": int(trainer.current_epoch),
        "train_windows": len(dm.train_pos),
        "val_windows": len(dm.val_pos),
        "seconds": round(fitted.wall, 2),
        "device": str(trainer.strategy.root_device),
        "precision": str(trainer.precision),
        "input": task.input.kind,
    }


def _prior_start(
    cfg: Config, st: Store, spec: ModelSpec, setting: str, *, progress: bool
) -> tuple[nn.Module, np.ndarray]:
    """The head as it starts and the embeddings ``(windows, views, dim)`` of every store window,
    for the settings that use the head's prior (``train.prior_folds``, ``train.background_filter``)."""
    from chirpkit.models import model_info
    from chirpkit.models.inputs import EmbeddingInput, model_input

    if model_info(spec.architecture).input != "embedding":
        raise ConfigError(
            f"{setting} needs a head that starts as BirdNET (model.name: birdnet_prior); "
            f"{spec.architecture} has no prior: leave {setting} at its default"
        )
    net = build_network(spec)
    init = getattr(net, "init_from_spec", None)
    if callable(init):
        init(spec)
    inp = model_input(spec, views=cfg.model.embedding_views, shift_s=cfg.model.embedding_shift_s)
    assert isinstance(inp, EmbeddingInput)
    return net, inp.embeddings(st, progress=progress)


def _filter_background(
    net: nn.Module, emb: np.ndarray, st: Store, spec: ModelSpec, threshold: float
) -> tuple[Store, pd.DataFrame]:
    """``train.background_filter``: a view of the store whose background training windows that
    the head's prior (``net``; ``emb``: every store window) scores as one of the species at
    ``threshold`` or more are excluded, and the table of those windows."""
    from chirpkit.data.split import EXCLUDED
    from chirpkit.training.prior_cv import background_to_drop

    idx = st.index
    pos = np.flatnonzero(
        (idx["split"] == "train").to_numpy() & idx["label"].isin(spec.background_labels).to_numpy()
    )
    table = background_to_drop(net, emb, spec.class_names, spec.background_labels, threshold, rows=pos)
    table["position"] = pos[table["position"].to_numpy(np.int64)]
    view = copy.copy(st)
    split = idx["split"].to_numpy(object).copy()
    split[table["position"].to_numpy(np.int64)] = EXCLUDED
    view.index = idx.assign(split=split)
    where = idx.loc[table["position"], ["source", "start_s", "end_s", "label"]].reset_index(drop=True)
    table = pd.concat([where, table.drop(columns="position")], axis=1)
    log.info(
        "background filter: %d of %d background training window(s) left out (BirdNET scores a species >= %g)",
        len(table),
        len(pos),
        threshold,
    )
    table.attrs["of"] = len(pos)
    return view, table


def _dropped_summary(table: pd.DataFrame | None, threshold: float) -> dict[str, Any] | None:
    if table is None:
        return None
    return {
        "threshold": threshold,
        "windows_dropped": len(table),
        "background_windows": table.attrs.get("of"),
        "by_species": {str(k): int(v) for k, v in table["species"].value_counts().items()},
    }


def _choose_prior(
    net: nn.Module,
    emb: np.ndarray,
    cfg: Config,
    st: Store,
    spec: ModelSpec,
    weights: list[float] | None,
    *,
    progress: bool,
) -> PriorChoice:
    """``train.prior_folds``: the pull, the epochs and the classes that keep BirdNET's row, chosen
    out of fold on the training windows (:mod:`chirpkit.training.prior_cv`); ``net`` is the head as
    it starts, ``emb`` the embeddings of every store window."""
    from chirpkit.training.prior_cv import choose_prior

    pos = split_positions(st, "train")
    multilabel = spec.task == "multilabel"
    y = targets_of(st, pos, spec.class_names, multilabel=multilabel)
    if not multilabel:  # (a label outside the classes, -1, trains nothing)
        pos, y = pos[y >= 0], y[y >= 0]
    targets = y if multilabel else np.eye(spec.num_classes, dtype=np.float32)[y]
    tc = cfg.train
    loss_fn = ClassificationLoss(
        tc.loss,
        weight=torch.tensor(weights, dtype=torch.float32) if weights is not None else None,
        label_smoothing=tc.label_smoothing,
        focal_gamma=tc.focal_gamma,
    )
    groups = st.index["group"].astype(str).to_numpy()[pos]
    return choose_prior(
        net,
        emb,
        targets,
        groups,
        spec.class_names,
        tc,
        loss_fn,
        background=spec.background_labels,
        progress=progress,
        rows=pos,
    )


def _val_scores(net: nn.Module, task: ClassifierTask, dm: StoreDataModule) -> tuple[float, float]:
    """``(macro F1, loss)`` over the validation windows, as the task computes them for checkpoint
    selection."""
    logits, targets = _logits_on(net, task.input, dm.val_dataloader())
    metric = task.val_f1.clone().cpu()
    metric.reset()
    if task.multilabel:
        metric.update(torch.sigmoid(logits), targets.int())
    else:
        metric.update(logits.argmax(dim=1), targets)
    with torch.inference_mode():
        loss = float(task.loss_fn.cpu()(logits, task._target(targets)))
    return float(metric.compute()), loss


def _keep_better(
    net: nn.Module, initial: dict[str, torch.Tensor], task: ClassifierTask, dm: StoreDataModule
) -> tuple[nn.Module, dict[str, Any]]:
    """The trained network, or the one training started from when that scores strictly better on
    validation by the checkpoints' own rule (macro F1, ties broken by the lower loss): a head that
    starts as BirdNET's zero-shot classifier never ends below it."""
    start = copy.deepcopy(net)
    start.load_state_dict(initial)
    (trained_f1, trained_loss), (start_f1, start_loss) = (
        _val_scores(net, task, dm),
        _val_scores(start, task, dm),
    )
    facts = {
        "val_macro_f1_trained": trained_f1,
        "val_macro_f1_untrained": start_f1,
        "val_loss_trained": trained_loss,
        "val_loss_untrained": start_loss,
    }
    if (start_f1, -start_loss) > (trained_f1, -trained_loss):
        log.warning(
            "the untrained network scores better on validation (macro F1 %.4f, loss %.4f, against "
            "%.4f, %.4f after training): it is kept as the model",
            start_f1,
            start_loss,
            trained_f1,
            trained_loss,
        )
        return start, {"kept": "untrained", **facts}
    return net, {"kept": "trained", **facts}


def _logits_on(net: nn.Module, model_input: ModelInput, batches: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logits, targets)`` of a network in eval mode over ``(x, y)`` batches (on the CPU)."""
    net.eval()
    logits, targets = [], []
    with torch.inference_mode():
        for x, y in batches:
            logits.append(model_input.eval_logits(net, x).float())
            targets.append(y)
    return torch.cat(logits), torch.cat(targets)


def _check_cacheable(cfg: Config) -> None:
    on = [f"augment.{k}.p" for k in cfg.augment.enabled() if k not in ("freq_mask", "time_mask")]
    if on:
        raise ConfigError(
            f"train.cache_features needs the waveform and pitch augmentations off: set {on} to 0 "
            "(frequency and time masks still apply)"
        )
