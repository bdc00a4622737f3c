"""``chirpkit distill``: a fast student learns a teacher's scores, on labelled and unlabelled audio.

The BirdCLEF winners' recipe, on chirpkit's one training path (:func:`chirpkit.train` with
``train.teacher``):

1. **Distil**: the student (any registered model; by default the config's, e.g. ``small_cnn``)
   trains on the store's labelled windows and on every window of the unlabelled recordings, with
   the loss ``(1 − α) · labels + α · teacher`` (α = ``train.distill_weight``; unlabelled windows
   have the teacher's soft targets only).
2. **Fine-tune** on the labels alone, starting from the distilled weights (``model.init_from``).
3. **Self-training** (``rounds > 1``): the fine-tuned student becomes the teacher of the next round
   (its scores on the unlabelled audio are the next round's pseudo-labels). With
   ``train.pseudo_labels: [low, high]`` the targets on unlabelled windows are hard labels, windows
   the teacher is unsure of are left out, and labelled windows train on their own labels: classic
   pseudo-labelling, e.g. of a ``birdnet_prior`` head on the soundscapes it is to be deployed on
   (student = the teacher's recipe, ``finetune_epochs=0``).

The teacher is any trained run whose classes include the store's: typically a ``birdnet_prior``
head (``recipes/birds-fewshot.yaml``), which is accurate but runs BirdNET for every window; the
student is a small CNN that runs many times faster and exports to ONNX.

Layout of ``OUT``: ``unlabelled/`` (the unlabelled store), ``round1/distilled``,
``round1/student``, … and, at the top level, the final student's run folder (``model.pt``,
``distill_summary.json``), which ``evaluate``, ``detect`` and ``export`` take like any run.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from chirpkit.config import Config, load_config
from chirpkit.data.store import Store, prepare
from chirpkit.data.unlabelled import unlabelled_catalog
from chirpkit.errors import ConfigError
from chirpkit.training.loop import train
from chirpkit.utils.io import write_json

__all__ = ["distill"]

log = logging.getLogger("chirpkit")


def distill(
    store: Store | str | os.PathLike[str],
    *,
    out: str | os.PathLike[str],
    teacher: str | os.PathLike[str],
    unlabelled: Sequence[str | os.PathLike[str]] = (),
    config: Config | None = None,
    rounds: int = 1,
    finetune_epochs: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Distil ``teacher`` into the config's model, fine-tune it on the labels, repeat ``rounds`` times.

    Args:
        store: the labelled store (with a split), as for :func:`chirpkit.train`.
        out: the student's run folder (see the module docstring).
        teacher: a run folder or model file that knows every class of the store.
        unlabelled: recordings without labels (files, folders, globs, ``@list.txt``), windowed with
            the store's audio settings; the teacher's scores are their targets.
        config: the student's config (``model.name``, ``train.*``; ``train.distill_weight`` and
            ``train.distill_temperature`` shape the loss).
        rounds: distil + fine-tune cycles; from the second on, the last student is the teacher.
        finetune_epochs: epochs of the fine-tuning on labels (default: half of ``train.epochs``);
            0: none, the distilled model is the round's student (self-training with
            ``train.pseudo_labels``, where the labelled windows already train on their labels).

    Returns:
        ``{"run", "rounds": [each round's summaries], "unlabelled_windows"}`` (also
        ``OUT/distill_summary.json``).
    """
    if rounds < 1:
        raise ConfigError(f"rounds={rounds} must be >= 1")
    cfg = config or Config()
    st = store if isinstance(store, Store) else Store(store)
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    stores: list[str] = []
    if unlabelled:
        cat = unlabelled_catalog(unlabelled)
        u = prepare(cat, out=root / "unlabelled", config=st.audio, progress=progress)
        stores.append(str(u.root))
        log.info("distill: %d unlabelled window(s) from %d file(s)", len(u), cat["source"].nunique())
    epochs_ft = max(1, cfg.train.epochs // 2) if finetune_epochs is None else finetune_epochs
    if epochs_ft < 0:
        raise ConfigError(f"finetune_epochs={finetune_epochs} must be >= 0 (0: no fine-tuning)")
    current = str(teacher)
    summaries = []
    for r in range(1, rounds + 1):
        here = root / f"round{r}"
        distilled = load_config(base=cfg, overrides={"train.teacher": current, "train.unlabelled": stores})
        s1 = train(st, out=here / "distilled", config=distilled, progress=progress)
        if epochs_ft == 0:  # self-training: the distilled model is the round's student
            summaries.append({"round": r, "teacher": current, "distilled": s1, "student": s1})
            current = str(here / "distilled")
            continue
        tuned = load_config(
            base=cfg,
            overrides={
                "model.init_from": str(here / "distilled"),
                "train.epochs": epochs_ft,
                "train.lr": cfg.train.lr / 3,  # fine-tuning: a gentler step from a trained start
                "train.warmup_epochs": 0,
            },
        )
        s2 = train(st, out=here / "student", config=tuned, progress=progress)
        summaries.append({"round": r, "teacher": current, "distilled": s1, "student": s2})
        current = str(here / "student")
    final = Path(current)
    for name in (
        "model.pt",
        "config.yaml",
        "environment.json",
        "data.json",
        "train_summary.json",
        "run.json",
    ):
        shutil.copy2(final / name, root / name)
    summary = {
        "run": str(root),
        "teacher": str(teacher),
        "rounds": summaries,
        "unlabelled_windows": len(Store(stores[0])) if stores else 0,
        "final_student": str(final),
    }
    write_json(root / "distill_summary.json", summary)
    log.info("distill: student after %d round(s) → %s", rounds, root / "model.pt")
    return summary
