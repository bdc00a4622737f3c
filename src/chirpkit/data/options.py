"""How ``ingest`` reads its sources, declared once: :func:`chirpkit.ingest` and :func:`chirpkit.fit`
take these options as keyword arguments (checked against these fields, documented from them), and
the command line's ``ingest``, ``fit`` and ``score-detections`` flags are built from them."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from chirpkit._options import option
from chirpkit.errors import ConfigError

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["ANNOTATION_FORMATS", "ANNOTATION_TABLE", "IngestOptions", "SourceOptions"]

ANNOTATION_FORMATS = ("auto", "points", "raven", "audacity", "kaleidoscope", "csv")
#: the options that say how to read an annotation table (score-detections takes these too)
ANNOTATION_TABLE = ("format", "label_column", "columns")


def _columns(text: str) -> dict[str, str] | None:
    pairs = [item.split("=", 1) for item in text.split(",") if item.strip()]
    if any(len(p) != 2 for p in pairs):
        raise ConfigError(
            f"--columns {text!r} must look like file=Filename,start=Begin,end=End,label=Species"
        )
    return {k.strip(): v.strip() for k, v in pairs} or None


def _classes(text: str) -> list[str] | None:
    if not text:
        return None
    names = Path(text).read_text().splitlines() if Path(text).is_file() else text.split(",")
    return [c.strip() for c in names if c.strip()]


@dataclass(frozen=True)
class SourceOptions:
    """The options :func:`chirpkit.ingest` and :func:`chirpkit.fit` share."""

    group_by: str | None = field(
        default=None,
        metadata=option(
            "what stays together in one split: file (default), folder, or regex:PATTERN (its first "
            "group, searched in the path relative to the source); a group column of the label CSV or "
            "annotation table is used when no rule is given"
        ),
    )
    annotations: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None = field(
        default=None,
        metadata=option(
            "annotation table(s) over the long recordings in {audio_dir}, instead of a source: "
            "point/box CSV, Raven selection table, Audacity labels, Kaleidoscope CSV; the catalog "
            "then holds one row per window",
            nargs="+",
            metavar="TABLE",
        ),
    )
    audio_dir: str | os.PathLike[str] | None = field(
        default=None,
        metadata=option(
            "folder of the recordings (annotation tables) or of the relative paths of a label CSV"
        ),
    )
    format: str = field(
        default="auto",
        metadata=option("annotation table format (default auto: detected)", choices=ANNOTATION_FORMATS),
    )
    label_column: str | None = field(
        default=None,
        metadata=option(
            "annotation table column holding the class (default: found by name, e.g. Species, Annotation)"
        ),
    )
    columns: Mapping[str, str] | None = field(
        default=None,
        metadata=option(
            "column names of a generic CSV: file=NAME,start=NAME,end=NAME (or duration=NAME),"
            "label=NAME[,low_freq=NAME,high_freq=NAME,group=NAME]",
            parse=_columns,
        ),
    )
    background: int | None = field(
        default=None,
        metadata=option(
            "sample N background windows at least 0.5 s away from every annotation, labelled "
            "{background_label} (default none; fit adds as many as call windows when the tables hold "
            "a single class, and 0 refuses that)",
            type=int,
            metavar="N",
        ),
    )
    background_audio: Sequence[str | os.PathLike[str]] | None = field(
        default=None,
        metadata=option(
            "recordings that hold none of the classes (files, folders, glob patterns): every one "
            "becomes a {background_label} example, negatives from your own sites (e.g. soundscapes "
            "without your species)",
            nargs="+",
            metavar="AUDIO",
        ),
    )
    background_label: str = field(
        default="noise",
        metadata=option("label of background windows and rejected reviews (default noise)"),
    )


@dataclass(frozen=True)
class IngestOptions(SourceOptions):
    """:class:`SourceOptions` and the options only ``ingest`` takes."""

    classes: Sequence[str] | None = field(
        default=None,
        metadata=option(
            "the expected classes (on the command line: comma-separated, or a file with one per "
            "line); a label outside them is an error in a label CSV, and a reported, dropped "
            "annotation in a table",
            parse=_classes,
        ),
    )
    seed: int = field(default=0, metadata=option("seed for background sampling (default 0)", type=int))
    reviews: str | os.PathLike[str] | None = field(
        default=None,
        metadata=option(
            "instead of a source, a detect folder reviewed with `chirpkit review` (reviews.db): "
            "accepted detections become labelled windows, rejected ones hard negatives "
            "({background_label}), relabelled ones the right label",
            metavar="DETECTIONS_DIR",
        ),
    )
    merge_with: str | os.PathLike[str] | pd.DataFrame | None = field(
        default=None,
        metadata=option(
            "with {reviews}: the catalog the reviewed windows are added to (groups and splits kept)",
            flags=("--merge-with", "--catalog"),
            metavar="CATALOG",
        ),
    )
