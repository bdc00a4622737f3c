"""Out-of-fold choices for a head that starts as a pretrained classifier (``birdnet_prior``), so
that training never ends below that classifier on recordings it did not see.

``train.prior_folds: K`` (``recipes/birds-fewshot.yaml``, ``birds-soundscape.yaml``): before the
real training, the training windows are dealt into K folds by group (recording: every group in
one fold, each class's groups spread over the folds, :func:`chirpkit.data.split.assign_folds`).
For every candidate — each pull ``model.params.l2`` of ``train.prior_l2`` and each epoch count of
``train.prior_epochs`` — the head trains K times on the other folds, as ``train`` trains it
(AdamW with warm-up and cosine decay, the run's loss, class weights, batch size and embedding
views), and scores the held-out fold. Every training window is so scored once, by a model that
never saw its recording.

* **Per class**, each candidate's row is compared with BirdNET's own row in the same fold's head
  (the residual left out: ``s · (x Wᵀ + b)``, ``s`` the head's common scale of BirdNET's scores)
  on those out-of-fold windows by the class's binary log loss (of the sigmoid, or of the softmax
  for single-label runs; a proper score, so calibration counts as well as ranking; positives and
  negatives weigh half each). A class
  BirdNET knows keeps BirdNET's row (``keep_prior`` in the head) unless the trained row beats it
  (by default with any gain; ``train.prior_margin: m`` asks for m standard errors of the gain,
  clustered by recording, m = 1 being the one-standard-error rule of cross-validation): a class
  whose only recording is held out, or whose recordings BirdNET already scores well, stays as
  BirdNET scores it.
* **The candidate** whose out-of-fold macro log loss over the target classes is lowest, with those
  rows kept, is chosen; ties go to the stronger pull, then the fewer epochs. Background classes
  (``detect.background_labels``, e.g. ``noise``) are not targets: their loss would outweigh every
  species' (BirdNET's own ``Noise`` row scores a recorder's background far from 1).

``train`` then trains once on every training window with the chosen pull and epoch count, sets
the kept rows, and writes ``prior_cv.csv`` (per class: out-of-fold log loss and average precision
of BirdNET and of the trained head, their gain, whether BirdNET's row is kept) and
``prior_cv_candidates.csv`` to the run folder; ``train_summary.json`` holds the choice.

``train.background_filter: t`` (:func:`background_to_drop`) uses the same prior as a teacher for
the background windows (``noise``, from ``ingest --background-audio``: a user's own recordings
that are meant to hold none of the species): a window on which BirdNET scores one of the run's
species at ``t`` or more may well hold it, so it is left out of training rather than taught as
"no bird" (``background_dropped.csv`` lists them, to listen to).
"""

from __future__ import annotations

import copy
import itertools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.nn import functional as F

from chirpkit.config import TrainConfig
from chirpkit.data.split import assign_folds
from chirpkit.errors import ConfigError
from chirpkit.metrics import ranking_scores
from chirpkit.models.embeddings import SCORE_BLOCK, gather
from chirpkit.models.heads import PriorHead
from chirpkit.training.losses import ClassificationLoss
from chirpkit.training.task import optimizer_and_schedule
from chirpkit.utils.io import write_csv

__all__ = ["PriorChoice", "background_to_drop", "choose_prior", "fit_head"]

log = logging.getLogger("chirpkit")


@dataclass
class PriorChoice:
    """What the folds chose, and the per-class evidence for it."""

    folds: int
    l2: float
    epochs: int
    keep_prior: list[str]  #: classes that keep BirdNET's row
    per_class: pd.DataFrame  #: out-of-fold figures per class (``prior_cv.csv``)
    candidates: pd.DataFrame  #: out-of-fold macro log loss per candidate (``prior_cv_candidates.csv``)

    def summary(self) -> dict[str, Any]:
        known = self.per_class[self.per_class["known"] & self.per_class["target"]]
        return {
            "folds": self.folds,
            "l2": self.l2,
            "epochs": self.epochs,
            "keep_prior": self.keep_prior,
            "oof_macro_log_loss": {
                "prior": _mean(known["oof_log_loss_prior"]),
                "model": _mean(known["oof_log_loss_model"]),
            },
            "oof_macro_ap": {"prior": _mean(known["oof_ap_prior"]), "model": _mean(known["oof_ap_model"])},
        }

    def write(self, run: str | Path) -> None:
        write_csv(Path(run) / "prior_cv.csv", self.per_class, index=False, float_format="%.5f")
        write_csv(Path(run) / "prior_cv_candidates.csv", self.candidates, index=False, float_format="%.5f")


def _mean(values: pd.Series) -> float | None:
    v = values.dropna()
    return round(float(v.mean()), 5) if len(v) else None


def fit_head(
    net: nn.Module,
    embeddings: np.ndarray,
    targets: np.ndarray,
    cfg: TrainConfig,
    loss_fn: ClassificationLoss,
    *,
    epochs: int,
    seed: int,
    rows: np.ndarray | None = None,
) -> nn.Module:
    """Train an embedding head in place as ``train`` does, without Lightning (for the folds: a
    few seconds each): ``embeddings (N, views, dim)`` (a memory map will do: each batch is read
    from it) at positions ``rows`` (default: all), with one view drawn per item and epoch,
    ``targets (len(rows), classes)`` probability rows, batches of ``cfg.batch_size`` (the last
    short one dropped when there is more than one batch), the network's ``regularization()`` added."""
    gen = torch.Generator().manual_seed(seed)
    rows = np.arange(len(embeddings)) if rows is None else np.asarray(rows, dtype=np.int64)
    y_all = torch.from_numpy(np.ascontiguousarray(targets, np.float32))
    n, bs, views = len(rows), cfg.batch_size, embeddings.shape[1]
    per_epoch = n // bs if n > bs else 1
    opt, sched = optimizer_and_schedule(
        net.parameters(), cfg.model_copy(update={"epochs": epochs}), per_epoch * epochs
    )
    reg = getattr(net, "regularization", None)
    net.train()
    for _ in range(epochs):
        order = torch.randperm(n, generator=gen)
        for b in range(per_epoch):
            idx = order[b * bs : (b + 1) * bs]
            view = torch.randint(views, (len(idx),), generator=gen)
            x = torch.from_numpy(gather(embeddings, rows[idx.numpy()], view.numpy()))
            loss = loss_fn(net(x), y_all[idx])
            if callable(reg):
                loss = loss + reg()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
            opt.step()
            sched.step()
    return net.eval()


def _centre_logits(fn: Any, embeddings: np.ndarray, rows: np.ndarray) -> torch.Tensor:
    """``fn`` (a head, or its prior) on the centre view of ``embeddings`` at ``rows``, a block at
    a time (memory stays put whatever the number of windows)."""
    out = []
    with torch.inference_mode():
        for i in range(0, len(rows), SCORE_BLOCK):
            out.append(fn(torch.from_numpy(gather(embeddings, rows[i : i + SCORE_BLOCK]))).float())
    return torch.cat(out) if out else torch.zeros(0)


def _probs(logits: torch.Tensor, multilabel: bool) -> torch.Tensor:
    return torch.sigmoid(logits) if multilabel else torch.softmax(logits, dim=1)


def _window_losses(logits: torch.Tensor, targets: torch.Tensor, multilabel: bool) -> torch.Tensor:
    """Each window's binary log loss of each class's probability (sigmoid, or softmax for
    single-label), ``(windows, classes)``."""
    if multilabel:
        return F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p = _probs(logits, False).clamp(1e-7, 1 - 1e-7)
    return -(targets * p.log() + (1 - targets) * (1 - p).log())


def _balance_weights(targets: torch.Tensor) -> torch.Tensor:
    """Per window and class, the weight that makes positives and negatives count half each."""
    pos = targets > 0.5
    n_pos, n_neg = pos.sum(dim=0).clamp_min(1), (~pos).sum(dim=0).clamp_min(1)
    return torch.where(pos, 0.5 / n_pos, 0.5 / n_neg)


def _class_log_loss(logits: torch.Tensor, targets: torch.Tensor, multilabel: bool) -> np.ndarray:
    """Balanced binary log loss of each class's probability: the mean over its positive windows and
    the mean over its negatives, averaged, so that a row which scores everything lower does not win
    on the many negatives alone."""
    loss = _window_losses(logits, targets, multilabel)
    return (loss * _balance_weights(targets)).sum(dim=0).numpy()


def _gain_se(diff: torch.Tensor, targets: torch.Tensor, groups: np.ndarray) -> np.ndarray:
    """Standard error of each class's balanced mean of ``diff`` (windows × classes), clustered by
    group: windows of one recording are not independent, so the spread is that of the recordings'
    summed contributions (the sandwich estimator, with the small-sample factor G / (G − 1))."""
    w = _balance_weights(targets)
    pos = targets > 0.5
    mean_pos = (diff * w * pos).sum(dim=0) / (w * pos).sum(dim=0).clamp_min(1e-12)
    mean_neg = (diff * w * ~pos).sum(dim=0) / (w * ~pos).sum(dim=0).clamp_min(1e-12)
    r = (w * (diff - torch.where(pos, mean_pos, mean_neg))).double().numpy()
    codes = np.unique(np.asarray(groups).astype(str), return_inverse=True)[1]
    n_groups = int(codes.max()) + 1 if len(codes) else 0
    per_group = np.zeros((n_groups, r.shape[1]))
    np.add.at(per_group, codes, r)
    factor = n_groups / (n_groups - 1) if n_groups > 1 else 1.0
    return np.sqrt(factor * (per_group**2).sum(axis=0))


def _with_prior_rows(
    model: torch.Tensor,
    prior: torch.Tensor,
    targets: torch.Tensor,
    known: np.ndarray,
    multilabel: bool,
    groups: np.ndarray,
    margin: float,
) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """The candidate's out-of-fold logits with BirdNET's row (``prior``: the same heads' scaled
    BirdNET scores) put back for every known class whose trained row does not beat it by
    ``margin`` standard errors of the gain in log loss; ``(logits, kept mask, [gains, standard
    errors])``."""
    base = _window_losses(model, targets, multilabel)
    diff = torch.zeros_like(base)
    for c in np.flatnonzero(known):
        swapped = model.clone()
        swapped[:, c] = prior[:, c]
        diff[:, c] = _window_losses(swapped, targets, multilabel)[:, c] - base[:, c]
    gain = (diff * _balance_weights(targets)).sum(dim=0).numpy()
    se = _gain_se(diff, targets, groups)
    keep = known & (gain <= margin * se)
    out = model.clone()
    out[:, keep] = prior[:, keep]
    return out, keep, np.stack([gain, se])


def choose_prior(
    net: nn.Module,
    embeddings: np.ndarray,
    targets: np.ndarray,
    groups: np.ndarray,
    class_names: Sequence[str],
    cfg: TrainConfig,
    loss_fn: ClassificationLoss,
    *,
    background: Sequence[str] = (),
    progress: bool = False,
    rows: np.ndarray | None = None,
) -> PriorChoice:
    """Choose the pull and the epochs of a prior head by grouped K-fold out-of-fold log loss, and
    the classes that keep the prior's row (see the module docstring).

    Args:
        net: the head as it starts (its ``prior`` rows set, ``keep_prior`` all false).
        embeddings: ``(N, views, dim)`` embeddings (a memory map will do: read a batch at a time).
        targets: ``(n, classes)`` probability rows (one-hot or multi-hot) of the training windows.
        groups: the group (recording) of each window.
        class_names: the classes, in target order.
        cfg: the train section (``prior_folds``, ``prior_l2``, ``prior_epochs``, optimiser settings).
        loss_fn: the run's loss (class weights included).
        background: classes left out of the candidates' score (still trained, and still compared
            with the prior's row).
        rows: the training windows' positions in ``embeddings`` (default: all ``N``, then ``n = N``).

    Raises:
        ConfigError: fewer than two groups to deal into folds, or a network without a prior.
    """
    from tqdm.auto import tqdm

    net = _prior_head(net)
    fold = _folds(targets, groups, cfg)
    k = cfg.prior_folds
    multilabel = loss_fn.multilabel
    y = torch.from_numpy(np.ascontiguousarray(targets, np.float32))
    at = np.arange(len(embeddings)) if rows is None else np.asarray(rows, dtype=np.int64)
    start = copy.deepcopy(net).eval()
    prior_logits = _centre_logits(start, embeddings, at)
    known = net.known.cpu().numpy().astype(bool)
    epochs_grid = list(cfg.prior_epochs) or [cfg.epochs]
    grid = list(itertools.product(sorted(cfg.prior_l2, reverse=True), sorted(epochs_grid)))
    folds = [f for f in range(k) if (fold == f).any() and (fold != f).any()]
    target = np.array([c not in set(background) for c in class_names])
    target = target if target.any() else np.ones(len(class_names), dtype=bool)
    bar = tqdm(total=len(grid) * len(folds), desc="prior folds", disable=not progress, leave=False)
    try:
        candidates, (l2, epochs, final, keep, gain_se) = _search_grid(
            grid,
            start,
            embeddings,
            at,
            targets,
            y,
            prior_logits,
            fold,
            folds,
            cfg,
            loss_fn,
            known,
            groups,
            target,
            bar,
        )
    finally:
        bar.close()
    per_class = _per_class(class_names, known, y, prior_logits, final, keep, groups, multilabel)
    per_class.insert(2, "target", target)
    # the keep rule: the trained row's gain in log loss over BirdNET's row as kept, and its error
    per_class["trained_row_gain"] = np.where(known, gain_se[0], np.nan)
    per_class["trained_row_gain_se"] = np.where(known, gain_se[1], np.nan)
    choice = PriorChoice(
        folds=len(folds),
        l2=l2,
        epochs=epochs,
        keep_prior=[c for c, kp in zip(class_names, keep, strict=True) if kp],
        per_class=per_class,
        candidates=pd.DataFrame(candidates),
    )
    kept = choice.keep_prior
    log.info(
        "prior folds (%d): pull l2=%g, %d epochs; %d of %d known class(es) keep BirdNET's row%s",
        len(folds),
        l2,
        epochs,
        len(kept),
        int(known.sum()),
        f" ({', '.join(kept[:8])}{'…' if len(kept) > 8 else ''})" if kept else "",
    )
    return choice


def _search_grid(
    grid: list[tuple[float, int]],
    start: PriorHead,
    embeddings: np.ndarray,
    at: np.ndarray,
    targets: np.ndarray,
    y: torch.Tensor,
    prior_logits: torch.Tensor,
    fold: np.ndarray,
    folds: list[int],
    cfg: TrainConfig,
    loss_fn: ClassificationLoss,
    known: np.ndarray,
    groups: np.ndarray,
    target: np.ndarray,
    bar: Any,
) -> tuple[list[dict[str, Any]], tuple[float, int, torch.Tensor, np.ndarray, np.ndarray]]:
    """The grid search of :func:`choose_prior`: every (pull, epochs) candidate's out-of-fold figures,
    and the best one's ``(l2, epochs, out-of-fold logits with the kept prior rows, keep, per-class
    gain and its standard error)``; ``y`` is ``targets`` as a tensor."""
    multilabel = loss_fn.multilabel
    candidates: list[dict[str, Any]] = []
    best = None
    for l2, epochs in grid:
        oof, oof_prior = _out_of_fold(
            start,
            embeddings,
            at,
            targets,
            prior_logits,
            fold,
            folds,
            cfg,
            loss_fn,
            l2=l2,
            epochs=epochs,
            bar=bar,
        )
        final, keep, gain_se = _with_prior_rows(
            oof, oof_prior, y, known, multilabel, groups, cfg.prior_margin
        )
        score = float(_class_log_loss(final, y, multilabel)[target].mean())
        candidates.append(
            {
                "l2": l2,
                "epochs": epochs,
                "oof_macro_log_loss": score,
                "oof_macro_log_loss_trained_rows": float(_class_log_loss(oof, y, multilabel)[target].mean()),
                "classes_keeping_prior": int(keep.sum()),
            }
        )
        # the grid runs from the strongest pull and the fewest epochs: only a lower loss replaces
        if best is None or score < best[0] - 1e-9:
            best = (score, l2, epochs, final, keep, gain_se)
    assert best is not None
    return candidates, best[1:]


def _prior_head(net: nn.Module) -> PriorHead:
    if not isinstance(net, PriorHead):
        raise ConfigError(
            f"train.prior_folds needs a head that starts from a pretrained classifier "
            f"(birdnet_prior); {type(net).__name__} has none"
        )
    return net


def _folds(targets: np.ndarray, groups: np.ndarray, cfg: TrainConfig) -> np.ndarray:
    """Each window's fold: groups dealt into ``cfg.prior_folds`` folds, stratified by first class."""
    k = cfg.prior_folds
    uniq = np.unique(groups)
    if len(uniq) < 2:
        raise ConfigError(f"train.prior_folds={k} needs at least two training groups; there is {len(uniq)}")
    first = np.asarray(targets).argmax(axis=1)
    return assign_folds(first, np.asarray(groups).astype(str), min(k, len(uniq)), cfg.seed)


def _out_of_fold(
    start: PriorHead,
    embeddings: np.ndarray,
    rows: np.ndarray,
    targets: np.ndarray,
    prior_logits: torch.Tensor,
    fold: np.ndarray,
    folds: Sequence[int],
    cfg: TrainConfig,
    loss_fn: ClassificationLoss,
    *,
    l2: float,
    epochs: int,
    bar: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Out-of-fold logits of heads trained at one pull and number of epochs, and of BirdNET's rows
    as each fold's head outputs them kept: through that head's common scale (see
    :class:`~chirpkit.models.heads.PriorHead`). ``rows``: the windows' positions in
    ``embeddings``; ``prior_logits``: the untrained head's logits on their centre views."""
    oof = torch.zeros_like(prior_logits)
    oof_prior = torch.zeros_like(prior_logits)
    for f in folds:
        tr, te = fold != f, fold == f
        head = copy.deepcopy(start)
        head.l2 = l2
        torch.manual_seed(cfg.seed + f)
        fit_head(head, embeddings, targets[tr], cfg, loss_fn, epochs=epochs, seed=cfg.seed + f, rows=rows[tr])
        held = torch.from_numpy(te)
        oof[held] = _centre_logits(head, embeddings, rows[te])
        with torch.inference_mode():
            oof_prior[held] = float(head.prior_scale) * prior_logits[held]
        bar.update()
    return oof, oof_prior


def _per_class(
    class_names: Sequence[str],
    known: np.ndarray,
    y: torch.Tensor,
    prior: torch.Tensor,
    model: torch.Tensor,
    keep: np.ndarray,
    groups: np.ndarray,
    multilabel: bool,
) -> pd.DataFrame:
    """Per class: windows and groups with it, out-of-fold log loss and AP of BirdNET's row and of
    the final head (kept rows included), and the gains (AP up, log loss down)."""
    truth = y.numpy() > 0.5
    p_prior, p_model = _probs(prior, multilabel).numpy(), _probs(model, multilabel).numpy()
    ap_prior = ranking_scores(truth, p_prior, list(class_names))["ap"]
    ap_model = ranking_scores(truth, p_model, list(class_names))["ap"]
    loss_prior = _class_log_loss(prior, y, multilabel)
    loss_model = _class_log_loss(model, y, multilabel)
    g = np.asarray(groups).astype(str)
    table = pd.DataFrame(
        {
            "class": list(class_names),
            "known": known,
            "windows": truth.sum(axis=0),
            "groups": [len(np.unique(g[truth[:, c]])) for c in range(len(class_names))],
            "oof_log_loss_prior": np.where(known, loss_prior, np.nan),
            "oof_log_loss_model": loss_model,
            "oof_ap_prior": np.where(known, np.asarray(ap_prior, dtype=float), np.nan),
            "oof_ap_model": np.asarray(ap_model, dtype=float),
            "keeps_prior": keep,
        }
    )
    table["ap_gain"] = table["oof_ap_model"] - table["oof_ap_prior"]
    table["log_loss_gain"] = table["oof_log_loss_prior"] - table["oof_log_loss_model"]
    return table


def background_to_drop(
    net: nn.Module,
    embeddings: np.ndarray,
    class_names: Sequence[str],
    background: Sequence[str],
    threshold: float,
    *,
    rows: np.ndarray | None = None,
) -> pd.DataFrame:
    """The background windows a prior head's own rows (BirdNET zero-shot) score at ``threshold``
    or more for a target class: ``position`` (into ``embeddings``), ``species`` (the best-scored
    target) and ``score`` (its sigmoid), best first; ``position`` counts in ``rows`` when given.
    Classes BirdNET does not know have no prior and never make a window drop.

    Args:
        net: a prior head as it starts.
        embeddings: ``(N, views, dim)`` embeddings (the centre view is scored, a block at a time).
        rows: the background windows' positions in ``embeddings`` (default: all).
    """
    if not isinstance(net, PriorHead):
        raise ConfigError(
            "train.background_filter needs a head that starts as BirdNET (birdnet_prior); "
            f"{type(net).__name__} has no prior: set train.background_filter=1"
        )
    targets = np.array([c not in set(background) for c in class_names]) & net.known.cpu().numpy()
    rows = np.arange(len(embeddings)) if rows is None else np.asarray(rows, dtype=np.int64)
    if not len(rows) or not targets.any():
        return pd.DataFrame({"position": [], "species": [], "score": []})
    probs = torch.sigmoid(_centre_logits(net.prior, embeddings, rows)).numpy()[:, targets]
    best = probs.argmax(axis=1)
    score = probs[np.arange(len(probs)), best]
    hit = np.flatnonzero(score >= threshold)
    names = np.asarray(class_names)[targets]
    table = pd.DataFrame({"position": hit, "species": names[best[hit]], "score": score[hit]})
    return table.sort_values("score", ascending=False, ignore_index=True)
