"""The run folder: one writer for every model family.

A run folder holds::

    runs/NAME/
      run.json            status (running / complete / failed / interrupted), times, error
      config.yaml         the resolved config (audio settings taken from the store)
      environment.json    Python, platform, library versions, devices
      data.json           store path, catalog fingerprint, classes, windows per split and class
      model.pt            the best model: spec + weights (all that evaluate/detect/export need)
      checkpoints/        best.ckpt, last.ckpt (Lightning; used by --resume)
      logs/metrics.csv    per-epoch losses and validation macro F1
      train_summary.json  best epoch, its val macro F1 and loss, epochs run, wall time

``model.pt`` is written last, so a folder without it is a run that did not finish, and
``run.json`` says why; ``evaluate`` and ``detect`` refuse it with that reason.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from pathlib import Path
from typing import Any

from torch import nn

from chirpkit.config import Config
from chirpkit.data.store import Store
from chirpkit.models import ModelSpec, save_model
from chirpkit.utils.env import environment
from chirpkit.utils.io import read_json, write_json, write_text

__all__ = ["RunFolder"]

log = logging.getLogger("chirpkit")

# an earlier run's results; its per-class thresholds would otherwise be applied to the new model
_RESULTS = ("model.pt", "train_summary.json", "metrics.json", "thresholds.json", "thresholds.csv")


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


class RunFolder:
    """Writes a run folder; see the module docstring for its layout."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    @property
    def status(self) -> dict[str, Any]:
        p = self.path / "run.json"
        return read_json(p) if p.is_file() else {}

    def start(self, config: Config, store: Store, data: dict[str, Any], *, resume: bool) -> None:
        """Write the config, environment and data summary; mark the run as running.

        A fresh run in a folder that holds an earlier one removes that run's results first, so
        that the folder never mixes two runs."""
        self.path.mkdir(parents=True, exist_ok=True)
        if not resume:
            stale = [n for n in _RESULTS if (self.path / n).exists()]
            if stale:
                log.warning("replacing the earlier run in %s (%s)", self.path, ", ".join(stale))
            for name in stale:
                (self.path / name).unlink()
            # an earlier run's checkpoints would be taken up by a later --resume
            for ckpt in (self.path / "checkpoints").glob("*.ckpt"):
                ckpt.unlink()
        write_json(self.path / "run.json", {"status": "running", "started": _now(), "resumed": resume})
        write_text(self.path / "config.yaml", config.to_yaml())
        write_json(self.path / "environment.json", environment())
        write_json(
            self.path / "data.json",
            {"store": str(store.root.resolve()), "catalog_fingerprint": store.meta["catalog_fingerprint"]}
            | data,
        )

    def finish(self, net: nn.Module, spec: ModelSpec, summary: dict[str, Any]) -> None:
        """Write the model and the summary; mark the run complete."""
        save_model(self.path / "model.pt", net, spec)
        write_json(self.path / "train_summary.json", summary)
        write_json(self.path / "run.json", self.status | {"status": "complete", "finished": _now()})

    def fail(self, status: str, reason: str) -> None:
        """Mark the run ``failed`` or ``interrupted`` (checkpoints stay for ``--resume``)."""
        write_json(
            self.path / "run.json", self.status | {"status": status, "finished": _now(), "reason": reason}
        )
