"""The review items of a ``detect`` output folder: one per row of ``detections.csv``.

An item is addressed by a short id, a digest of ``(file, start_s, end_s, label)``, so the ids stay
the same when the folder is served again or the table is rewritten by a resumed ``detect``. The
recordings an item may read are the files of the detect run: those its ``manifest.csv`` lists as
done (rows naming any other file are dropped with a warning), resolved once when the folder is
loaded. Requests name ids, never paths, so nothing else on the disk can be reached.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from chirpkit.errors import DataError
from chirpkit.utils.io import existing_path, read_json

__all__ = [
    "ID_PATTERN",
    "DetectFolder",
    "item_id",
    "load_detect_folder",
    "read_run_classes",
    "resolve_recording",
]

log = logging.getLogger("chirpkit")

ID_PATTERN = re.compile(r"^[0-9a-f]{12}$")
_REQUIRED = ("file", "start_s", "end_s", "label", "score")


def item_id(file: str, start_s: float, end_s: float, label: str) -> str:
    """The id of a detection: 12 hex digits of a digest of its file, span (to 0.1 ms) and label."""
    key = f"{file}\t{float(start_s):.4f}\t{float(end_s):.4f}\t{label}"
    return hashlib.sha256(key.encode()).hexdigest()[:12]


@dataclass
class DetectFolder:
    """A loaded ``detect`` output folder.

    Attributes:
        root: the folder (``reviews.db`` is kept here).
        items: one row per detection, indexed by ``id``: ``file`` (as in the table), ``name`` (the
            file's name), ``start_s``, ``end_s``, ``label``, ``score``.
        paths: ``file`` → the resolved recording, or None where it cannot be found.
        run: the model run that made the detections (``detect_summary.json`` or ``--run``).
        classes: the run's class names (empty when the run cannot be read).
        background: the run's background classes (never detections; the label of hard negatives).
        min_score: the detect run's ``min_score`` (no detection scores lower).
        sample_rate: the model's sample rate (it hears up to half of it), when the run says.
    """

    root: Path
    items: pd.DataFrame
    paths: dict[str, Path | None]
    run: Path | None = None
    classes: list[str] = field(default_factory=list)
    background: list[str] = field(default_factory=list)
    min_score: float = 0.0
    sample_rate: int | None = None

    @property
    def db_path(self) -> Path:
        return self.root / "reviews.db"

    def item(self, id: str) -> dict[str, Any] | None:
        """One item as a dict (with ``id``), or None for an unknown or malformed id."""
        if not isinstance(id, str) or not ID_PATTERN.match(id) or id not in self.items.index:
            return None
        row = self.items.loc[id]
        return {"id": id, **{str(k): _plain(v) for k, v in row.items()}}

    def recording(self, id: str) -> Path | None:
        """The recording of item ``id`` (only ever a file of this detect run)."""
        it = self.item(id)
        return None if it is None else self.paths.get(str(it["file"]))

    def label_choices(self) -> list[str]:
        """Labels a reviewer may pick: the run's classes (background included), then detected labels."""
        seen = dict.fromkeys([*self.classes, *self.background, *sorted(self.items["label"].unique())])
        return list(seen)


def _plain(v: Any) -> Any:
    return v.item() if hasattr(v, "item") else v


def read_run_classes(run: str | os.PathLike[str] | None) -> tuple[list[str], list[str], int | None]:
    """``(classes, background classes, sample rate)`` of a run folder, from ``data.json`` and
    ``config.yaml``.

    Reads no model weights (no torch). Returns empty lists and None when the run is missing or has
    neither file.
    """
    if run is None:
        return [], [], None
    p = Path(run)
    root = p if p.is_dir() else p.parent
    classes: list[str] = []
    background: list[str] = []
    rate: int | None = None
    if (root / "data.json").is_file():
        classes = [str(c) for c in read_json(root / "data.json").get("classes", [])]
    if (root / "config.yaml").is_file():
        try:
            cfg = yaml.safe_load((root / "config.yaml").read_text()) or {}
            background = [str(b) for b in (cfg.get("detect") or {}).get("background_labels", [])]
            rate = int((cfg.get("audio") or {}).get("sample_rate") or 0) or None
        except (yaml.YAMLError, TypeError, ValueError):
            background = []
    if classes:
        background = [b for b in background if b in classes]
    return classes, background, rate


def resolve_recording(
    file: str, root: Path, audio_dir: Path | None, paths: dict[str, str] | None = None
) -> Path | None:
    """Where the recording a detection table names is.

    Tried in turn: the path as written (absolute, or from the current folder); from the folder
    ``detect`` ran in (``paths["cwd"]`` of ``detect_summary.json``); at the same place relative to
    the detections folder as when it was written (``paths["out"]``: the recordings and the
    detections were moved together); from the detections folder's parent; then ``audio_dir`` (by
    path, then by name)."""
    p = Path(file)
    candidates = [p] if p.is_absolute() else [Path.cwd() / p]
    paths = paths or {}
    if paths.get("cwd") and paths.get("out"):
        where = p if p.is_absolute() else Path(paths["cwd"]) / p
        if not p.is_absolute():
            candidates.append(where)
        # the recording's place relative to the detections folder when they were written
        candidates.append(root / os.path.relpath(where, paths["out"]))
    if not p.is_absolute():
        candidates.append(root.parent / p)
    if audio_dir is not None:
        candidates += [audio_dir / p, audio_dir / p.name] if not p.is_absolute() else [audio_dir / p.name]
    for c in candidates:
        if c.is_file():
            return c.resolve()
    return None


def load_detect_folder(
    folder: str | os.PathLike[str],
    *,
    run: str | os.PathLike[str] | None = None,
    audio_dir: str | os.PathLike[str] | None = None,
) -> DetectFolder:
    """Load a ``detect`` output folder for review.

    Args:
        folder: the folder ``chirpkit detect --out`` wrote (``detections.csv``, ``manifest.csv``,
            ``detect_summary.json``).
        run: the model run (default: ``model`` in ``detect_summary.json``); its class names are
            offered when relabelling.
        audio_dir: where to look for recordings whose path in the table is relative and not found
            from the current folder (by relative path, then by name).

    Raises:
        MissingPathError: the folder does not exist.
        DataError: it holds no ``detections.csv``, or the table lacks columns.
    """
    root = existing_path(folder, "detections folder").resolve()
    table_path = root / "detections.csv"
    table = _read_detections(table_path)
    summary = read_json(root / "detect_summary.json") if (root / "detect_summary.json").is_file() else {}
    table = _scanned_only(table, root / "manifest.csv", table_path)
    run_path = Path(run) if run is not None else (Path(summary["model"]) if summary.get("model") else None)
    if run_path is not None and not run_path.exists():
        log.warning(
            "review: the model run %s does not exist here; relabel choices are the detected labels", run_path
        )
        run_path = None
    classes, background, rate = read_run_classes(run_path)

    table = table.assign(
        id=[
            item_id(f, s, e, lab)
            for f, s, e, lab in zip(
                table["file"], table["start_s"], table["end_s"], table["label"], strict=True
            )
        ]
    )
    dup = table["id"].duplicated()
    if dup.any():
        log.warning("review: %d repeated detection row(s) in %s kept once", int(dup.sum()), table_path)
        table = table[~dup]
    table["name"] = [Path(f).name for f in table["file"]]
    items = table.set_index("id")[["file", "name", "start_s", "end_s", "label", "score"]]

    a_dir = Path(audio_dir).expanduser().resolve() if audio_dir is not None else None
    recorded = summary.get("paths") if isinstance(summary.get("paths"), dict) else None
    paths = {f: resolve_recording(f, root, a_dir, recorded) for f in items["file"].unique()}
    lost = [f for f, p in paths.items() if p is None]
    if lost:
        log.warning(
            "review: %d recording(s) not found (e.g. %s): their items show no spectrogram or audio; "
            "pass audio_dir (--audio-dir) where they are",
            len(lost),
            lost[0],
        )
    return DetectFolder(
        root=root,
        items=items,
        paths=paths,
        run=run_path,
        classes=classes,
        background=background,
        min_score=float(summary.get("min_score", 0.0) or 0.0),
        sample_rate=rate,
    )


def _read_detections(table_path: Path) -> pd.DataFrame:
    """``detections.csv`` with its columns checked and typed (the line of a bad number named)."""
    if not table_path.is_file():
        raise DataError(
            f"{table_path.parent} has no detections.csv: point at a folder written by `chirpkit detect --out`"
        )
    try:
        table = pd.read_csv(
            table_path, keep_default_na=False, na_values=[""], dtype={"file": str, "label": str}
        )
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read {table_path}: {exc}") from exc
    missing = [c for c in _REQUIRED if c not in table.columns]
    if missing:
        raise DataError(f"{table_path} lacks column(s) {missing}; detect writes {list(_REQUIRED)}")
    for col in ("start_s", "end_s", "score"):
        bad = pd.to_numeric(table[col], errors="coerce").isna()
        if bad.any():
            line = int(bad.to_numpy().nonzero()[0][0]) + 2
            raise DataError(
                f"{table_path} line {line}: column '{col}' holds {table[col].iloc[line - 2]!r}, not a number"
            )
        table[col] = pd.to_numeric(table[col]).astype(float)
    table["label"] = table["label"].astype(str)
    table["file"] = table["file"].astype(str)
    return table


def _scanned_only(table: pd.DataFrame, manifest_path: Path, table_path: Path) -> pd.DataFrame:
    """The rows of files the detect run scanned (its manifest says done or reused); all rows when
    there is no manifest."""
    if not manifest_path.is_file():
        return table
    manifest = pd.read_csv(manifest_path, dtype=str, keep_default_na=False)
    done = set(manifest.loc[manifest["status"].isin(["done", "reused"]), "file"])
    outside = ~table["file"].isin(done)
    if outside.any():
        log.warning(
            "review: %d detection(s) in %s name file(s) this detect run did not scan (e.g. %s); left out",
            int(outside.sum()),
            table_path,
            table.loc[outside, "file"].iloc[0],
        )
        table = table[~outside]
    return table
