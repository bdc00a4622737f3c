"""chirpkit: turn labelled recordings into audio classifiers, and run them over new recordings.

The public functions mirror the command-line verbs::

    import chirpkit
    catalog = chirpkit.ingest("data/", out="catalog.parquet")
    catalog = chirpkit.split(catalog, out="catalog.parquet")
    store = chirpkit.prepare(catalog, out="store/")
    chirpkit.train(store, out="runs/first")
    chirpkit.evaluate("runs/first")
    chirpkit.detect("runs/first", ["long_recording.flac"], out="detections/")

Heavy modules (torch, Lightning) load on first use, so ``import chirpkit`` stays fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from chirpkit._version import __version__

if TYPE_CHECKING:
    from chirpkit.augment.preview import augment_preview
    from chirpkit.config import Config, load_config
    from chirpkit.data.catalog import read_catalog, write_catalog
    from chirpkit.data.ingest import ingest
    from chirpkit.data.report import inspect
    from chirpkit.data.reviews import ingest_reviews
    from chirpkit.data.split import split
    from chirpkit.data.store import Store, prepare
    from chirpkit.detection.events import score_detections
    from chirpkit.detection.job import detect, merge
    from chirpkit.detection.scoring import detection_report
    from chirpkit.evaluation.report import evaluate, evaluation_report
    from chirpkit.evaluation.zeroshot import zero_shot
    from chirpkit.models import create_model, list_models, load_model
    from chirpkit.models.export import export
    from chirpkit.models.profile import profile
    from chirpkit.pipelines.demo import demo
    from chirpkit.pipelines.fit import fit
    from chirpkit.review.calibrate import calibrate
    from chirpkit.review.export import export_reviews
    from chirpkit.review.serve import serve_review
    from chirpkit.similarity.build import index
    from chirpkit.similarity.classify import detect_in_index
    from chirpkit.similarity.db import EmbeddingIndex
    from chirpkit.similarity.head import train_head
    from chirpkit.similarity.query import Query, search
    from chirpkit.training.baselines import baseline
    from chirpkit.training.distill import distill
    from chirpkit.training.loop import train
    from chirpkit.training.tuning import cross_validate, tune

__all__ = [
    "Config",
    "EmbeddingIndex",
    "Query",
    "Store",
    "__version__",
    "augment_preview",
    "baseline",
    "calibrate",
    "create_model",
    "cross_validate",
    "demo",
    "detect",
    "detect_in_index",
    "detection_report",
    "distill",
    "evaluate",
    "evaluation_report",
    "export",
    "export_reviews",
    "fit",
    "index",
    "ingest",
    "ingest_reviews",
    "inspect",
    "list_models",
    "load_config",
    "load_model",
    "merge",
    "prepare",
    "profile",
    "read_catalog",
    "score_detections",
    "search",
    "serve_review",
    "split",
    "train",
    "train_head",
    "tune",
    "write_catalog",
    "zero_shot",
]

_LAZY = {
    "Config": "chirpkit.config",
    "load_config": "chirpkit.config",
    "read_catalog": "chirpkit.data.catalog",
    "write_catalog": "chirpkit.data.catalog",
    "ingest": "chirpkit.data.ingest",
    "inspect": "chirpkit.data.report",
    "split": "chirpkit.data.split",
    "Store": "chirpkit.data.store",
    "prepare": "chirpkit.data.store",
    "demo": "chirpkit.pipelines.demo",
    "distill": "chirpkit.training.distill",
    "detect": "chirpkit.detection.job",
    "merge": "chirpkit.detection.job",
    "evaluate": "chirpkit.evaluation.report",
    "evaluation_report": "chirpkit.evaluation.report",
    "export": "chirpkit.models.export",
    "score_detections": "chirpkit.detection.events",
    "detection_report": "chirpkit.detection.scoring",
    "create_model": "chirpkit.models",
    "list_models": "chirpkit.models",
    "load_model": "chirpkit.models",
    "fit": "chirpkit.pipelines.fit",
    "augment_preview": "chirpkit.augment.preview",
    "train": "chirpkit.training.loop",
    "baseline": "chirpkit.training.baselines",
    "zero_shot": "chirpkit.evaluation.zeroshot",
    "profile": "chirpkit.models.profile",
    "cross_validate": "chirpkit.training.tuning",
    "tune": "chirpkit.training.tuning",
    "calibrate": "chirpkit.review.calibrate",
    "export_reviews": "chirpkit.review.export",
    "serve_review": "chirpkit.review.serve",
    "ingest_reviews": "chirpkit.data.reviews",
    "index": "chirpkit.similarity.build",
    "detect_in_index": "chirpkit.similarity.classify",
    "EmbeddingIndex": "chirpkit.similarity.db",
    "Query": "chirpkit.similarity.query",
    "search": "chirpkit.similarity.query",
    "train_head": "chirpkit.similarity.head",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'chirpkit' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
