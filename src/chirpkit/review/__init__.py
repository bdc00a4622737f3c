"""The review loop: check detections on a local web page, calibrate thresholds, retrain.

``chirpkit review DIR`` serves a page over a ``detect`` output folder (spectrogram and sound of
each detection, keyboard verdicts) and keeps every verdict in ``DIR/reviews.db`` (SQLite);
``chirpkit calibrate DIR`` turns the verdicts into per-class thresholds; ``chirpkit ingest
--reviews DIR`` turns them into training rows.

* :mod:`chirpkit.review.items` — the detections of a folder as items with stable ids
* :mod:`chirpkit.review.db` — the reviews database
* :mod:`chirpkit.review.queue` — review order: ``stratified``, ``uncertainty``, ``random``, ``score``
* :mod:`chirpkit.review.render` — spectrogram PNG and WAV of a clip
* :mod:`chirpkit.review.server` / :mod:`chirpkit.review.serve` — the web app (needs
  ``pip install 'chirpkit[review]'``: Starlette and uvicorn)
* :mod:`chirpkit.review.calibrate` — P(correct | score) and thresholds
* :mod:`chirpkit.review.export` — reviews as CSV and Raven tables
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from chirpkit.review.calibrate import calibrate
    from chirpkit.review.db import ReviewDB
    from chirpkit.review.export import export_reviews
    from chirpkit.review.items import DetectFolder, load_detect_folder
    from chirpkit.review.queue import STRATEGIES, review_queue
    from chirpkit.review.serve import running, serve
    from chirpkit.review.server import create_app

__all__ = [
    "STRATEGIES",
    "DetectFolder",
    "ReviewDB",
    "calibrate",
    "create_app",
    "export_reviews",
    "load_detect_folder",
    "review_queue",
    "running",
    "serve",
]

_LAZY = {
    "calibrate": "chirpkit.review.calibrate",
    "ReviewDB": "chirpkit.review.db",
    "export_reviews": "chirpkit.review.export",
    "DetectFolder": "chirpkit.review.items",
    "load_detect_folder": "chirpkit.review.items",
    "STRATEGIES": "chirpkit.review.queue",
    "review_queue": "chirpkit.review.queue",
    "running": "chirpkit.review.serve",
    "serve": "chirpkit.review.serve",
    "create_app": "chirpkit.review.server",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'chirpkit.review' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
