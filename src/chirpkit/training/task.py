"""The one Lightning task every model family trains through: a network + loss, metrics, optimiser.

The network comes from the spec (:func:`chirpkit.models.build_network`), and how batches reach it
from the model's input (:mod:`chirpkit.models.inputs`): a spectrogram CNN, a timm backbone and a head on
cached embeddings differ in nothing else. A network may offer three hooks: ``init_from_spec(spec)``,
called once on a fresh network (a head copies a pretrained classifier's rows),
``regularization()``, a penalty added to the training loss (that head's pull towards them), and
``select_on_validation(logits_on_val)``, which :func:`chirpkit.training.loop.train` calls once after
training with the validation windows (a fusion head chooses its weight there).

Targets travel as probability rows: one-hot (single-label; mixup mixes them) or multi-hot
(``train.loss: bce``, multi-label). The best epoch is chosen on validation macro F1 (ties to the
lower validation loss); a loss that becomes NaN or infinite stops training with an error rather
than producing a model of non-finite weights.
"""

from __future__ import annotations

import math
from typing import Any

from chirpkit.utils.compat import ensure_torchvision_importable

ensure_torchvision_importable()  # before Lightning/torchmetrics import torchvision (chirpkit.utils.compat)

import lightning.pytorch as L  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402
from torchmetrics import MeanMetric  # noqa: E402
from torchmetrics.classification import MulticlassF1Score, MultilabelF1Score  # noqa: E402

from chirpkit.config import AugmentConfig, TrainConfig  # noqa: E402
from chirpkit.errors import RunError  # noqa: E402
from chirpkit.models import ModelSpec, build_network  # noqa: E402
from chirpkit.models.inputs import ModelInput, model_input  # noqa: E402
from chirpkit.training.losses import ClassificationLoss  # noqa: E402

__all__ = ["ClassifierTask", "optimizer_and_schedule"]


class ClassifierTask(L.LightningModule):
    """Network + loss, validation macro F1, AdamW with warm-up and cosine decay.

    Args:
        spec: the model spec (as a dict, so Lightning saves it in checkpoints).
        train: the ``train`` config section.
        weights: per-class loss weights, or ``None``.
        augment: the ``augment`` section; ``None`` turns augmentation off.
        margin_samples: the store's margin (spectrogram models read time shifts from it).
        cached_features: train a spectrogram model on cached front-end output.
        embedding_views, embedding_shift_s: views per window for embedding models, and the time
            shift between them (:mod:`chirpkit.models.embeddings`).
        pretrained, pretrained_file: ImageNet weights for timm backbones.
    """

    def __init__(
        self,
        spec: dict[str, Any],
        train: dict[str, Any],
        weights: list[float] | None = None,
        augment: dict[str, Any] | None = None,
        margin_samples: int = 0,
        cached_features: bool = False,
        embedding_views: int = 1,
        embedding_shift_s: float = 0.5,
        pretrained: bool = False,
        pretrained_file: str | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.spec = ModelSpec.from_dict(spec)
        self.net = build_network(self.spec, pretrained=pretrained, pretrained_file=pretrained_file)
        init = getattr(self.net, "init_from_spec", None)
        if callable(init):  # e.g. a head that starts from a pretrained model's own classifier
            init(self.spec)
        reg = getattr(self.net, "regularization", None)
        self._regularization = reg if callable(reg) else None
        self.input: ModelInput = model_input(
            self.spec,
            margin_samples=margin_samples,
            cached_features=cached_features,
            views=embedding_views,
            shift_s=embedding_shift_s,
        )
        self.cfg = TrainConfig.model_validate(train)
        # no augment section: no augmentation (ranges kept, every probability 0)
        self.aug_cfg = AugmentConfig.model_validate(augment or {})
        if augment is None:
            self.aug_cfg = self.aug_cfg.off()
        self.augmenter: Any = None
        k = self.spec.num_classes
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.input.eval_logits(self.net, x)

    def _target(self, y: torch.Tensor) -> torch.Tensor:
        if y.ndim == 2:  # multi-hot already
            return y.float()
        # −1 marks an item without a label (unlabelled audio in distillation): an all-zero row
        return nn.functional.one_hot(y.clamp_min(0), self.spec.num_classes).float() * (y >= 0)[:, None]

    def _distill_loss(
        self, logits: torch.Tensor, y: torch.Tensor, soft: torch.Tensor, labelled: torch.Tensor
    ) -> torch.Tensor:
        """``(1 − α) · label loss (labelled items) + α · soft-target loss (all items)``: the KL
        divergence at temperature T (× T², Hinton et al.) for single-label models, binary
        cross-entropy on the teacher's probabilities for multi-label ones."""
        alpha, temp = self.cfg.distill_weight, self.cfg.distill_temperature
        soft = soft.to(logits.dtype)
        if self.multilabel:
            soft_loss = nn.functional.binary_cross_entropy_with_logits(logits, soft)
        else:
            teacher = torch.softmax(torch.log(soft.clamp_min(1e-8)) / temp, dim=1)
            student = torch.log_softmax(logits / temp, dim=1)
            soft_loss = nn.functional.kl_div(student, teacher, reduction="batchmean") * temp**2
        lab = labelled.bool()
        label_loss = self.loss_fn(logits[lab], self._target(y[lab])) if lab.any() else logits.sum() * 0
        return (1 - alpha) * label_loss + alpha * soft_loss

    def on_fit_start(self) -> None:
        self.augmenter = self.input.augmenter(self.aug_cfg, seed=self.cfg.seed + 1000 * self.global_rank)

    def training_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> torch.Tensor:
        if len(batch) == 4:  # distillation: a teacher's probabilities, and which items have labels
            x, y, soft, labelled = batch
            logits, _ = self.input.train_logits(self.net, x, self._target(y), self.augmenter)
            loss = self._distill_loss(logits, y, soft, labelled)
        else:
            x, y = batch
            logits, target = self.input.train_logits(self.net, x, self._target(y), self.augmenter)
            loss = self.loss_fn(logits, target)
        if self._regularization is not None:  # e.g. a head's pull towards a pretrained classifier
            loss = loss + self._regularization()
        if not torch.isfinite(loss):
            raise RunError(
                f"the training loss became {float(loss.detach())} at epoch {self.current_epoch}, step "
                f"{self.global_step}: training stopped. Lower train.lr (now {self.cfg.lr:g}), set "
                "train.grad_clip (e.g. 1.0), or check the inputs (chirpkit inspect)"
            )
        self.log("train_loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(y))
        return loss

    def on_train_epoch_end(self) -> None:
        bad = [n for n, p in self.net.named_parameters() if not torch.isfinite(p).all()]
        if bad:
            raise RunError(
                f"{len(bad)} weight tensor(s) became non-finite after epoch {self.current_epoch} "
                f"(first: {bad[0]}): training stopped. Lower train.lr (now {self.cfg.lr:g}) or set "
                "train.grad_clip"
            )

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        logits = self.input.eval_logits(self.net, x)
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
        self.last_val = {"epoch": int(self.current_epoch), "macro_f1": float(f1), "loss": float(loss)}
        self.val_f1.reset()
        self.val_loss.reset()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["chirpkit_val"] = dict(self.last_val)

    def configure_optimizers(self) -> Any:
        opt, sched = optimizer_and_schedule(
            self.parameters(), self.cfg, int(self.trainer.estimated_stepping_batches)
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def optimizer_and_schedule(
    params: Any, cfg: TrainConfig, total_steps: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW at ``cfg.lr`` and its per-step schedule: linear warm-up over ``cfg.warmup_epochs``,
    then a cosine decay to zero at ``total_steps``."""
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    total = max(1, total_steps)
    per_epoch = max(1, total // max(1, cfg.epochs))
    warmup = min(total - 1, int(cfg.warmup_epochs * per_epoch))

    def lr_at(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
