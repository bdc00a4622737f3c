"""Detection work units: the plan of a detect job, the parts its units leave, and the merge of
the parts into the final tables.

A *work unit* is a file, or a time shard of a long file: the windows ``first`` … ``stop - 1`` of
the file's window grid (window ``k`` starts at ``k × hop``); the last unit of a file also holds
the window aligned to its end. Units are planned deterministically from the sources, the model
and the settings, so every process of a job computes the same plan; ``plan.json`` in the output
folder records it. Each unit leaves either ``.parts/<key>.parquet`` (the best labels of each of its
windows, written atomically) or ``.parts/<key>.failed.json`` (the reason); a rerun skips units
that have a part. :func:`merge` turns the parts into ``detections.csv``, ``events.csv``, Raven and
Audacity tables, ``errors.csv``, ``manifest.csv`` and ``detect_summary.json``; because events are
merged over whole files after the parts are joined, an event that crosses a shard boundary comes
out as one.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Collection, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from chirpkit.detection.events import merge_events, write_audacity, write_raven
from chirpkit.errors import AudioDecodeError, RunError
from chirpkit.sources import Probe, identity, is_url, probe
from chirpkit.utils.engine import output_guard
from chirpkit.utils.io import atomic_path, read_json, stable_hash, write_csv, write_json

__all__ = ["DETECTION_COLUMNS", "MANIFEST_COLUMNS", "WorkUnit", "merge", "plan_units"]

log = logging.getLogger("chirpkit")

DETECTION_COLUMNS = ["file", "start_s", "end_s", "label", "score"]
MANIFEST_COLUMNS = ["file", "start_s", "end_s", "status", "part"]
_META = b"chirpkit"


@dataclass(frozen=True)
class WorkUnit:
    """Windows ``first`` … ``stop - 1`` of ``file`` (``stop`` None: to the end of the file)."""

    file: str
    first: int
    stop: int | None
    key: str
    start_s: float
    end_s: float | None  #: None when the file's length is unknown
    audio_s: float  #: planned seconds of audio (0 when unknown)
    weight: float  #: for balancing shards: audio_s, or a guess from the file size

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> WorkUnit:
        return cls(**d)


def _source_facts(source: str) -> tuple[dict[str, Any] | None, Probe | None, str | None]:
    try:
        ident = identity(source)
    except OSError as exc:
        return None, None, f"cannot read: {exc.strerror or exc}"
    try:
        return ident, probe(source), None
    except AudioDecodeError as exc:
        return ident, None, exc.reason
    except OSError as exc:
        return ident, None, f"cannot read: {exc.strerror or exc}"


def plan_units(
    sources: Sequence[str],
    *,
    model_identity: str,
    sample_rate: int,
    window_s: float,
    hop_s: float,
    block_s: float,
    shard_s: float | None,
) -> tuple[list[WorkUnit], list[dict[str, str]]]:
    """Cut ``sources`` into work units, deterministically.

    A file is cut into time shards of about ``shard_s`` seconds (a whole number of hops) when it
    is longer than 1.5 × ``shard_s`` and its format allows sample-exact seeks (WAV, FLAC, AIFF,
    ...); ``shard_s=None`` keeps every file whole. Headers are read on threads (remote sources).

    Returns:
        ``(units, problems)``; problems are ``{"file", "reason"}`` rows for sources that cannot
        be reached (skip and report).
    """
    w, h = round(window_s * sample_rate), max(1, round(hop_s * sample_rate))
    with ThreadPoolExecutor(max_workers=8) as pool:
        facts = list(pool.map(_source_facts, sources))
    units: list[WorkUnit] = []
    problems: list[dict[str, str]] = []
    for source, (ident, pr, problem) in zip(sources, facts, strict=True):
        if ident is None:
            problems.append({"file": source, "reason": problem or "cannot read"})
            continue
        base = {
            "model": model_identity,
            "file": source if is_url(source) else str(Path(source).resolve()),
            **ident,
            "hop": h,
            "block_s": block_s,
        }
        duration = pr.duration_s if pr is not None and pr.frames > 0 else 0.0
        weight = duration or ident["size"] / 32000.0
        bounds: list[tuple[int, int | None]] = [(0, None)]
        if pr is not None and pr.exact and shard_s is not None and duration > 1.5 * shard_s:
            total = pr.frames * sample_rate // pr.sample_rate - 1  # never more than the decoded length
            n_windows = (total - w) // h + 1
            per_unit = max(1, int(shard_s * sample_rate) // h)
            n_units = max(1, math.ceil(n_windows / per_unit))
            bounds = [(j * per_unit, (j + 1) * per_unit if j < n_units - 1 else None) for j in range(n_units)]
        for first, stop in bounds:
            start_s = first * h / sample_rate
            end_s = stop * h / sample_rate if stop is not None else (duration or None)
            span = (end_s - start_s) if end_s is not None else 0.0
            units.append(
                WorkUnit(
                    file=source,
                    first=first,
                    stop=stop,
                    key=stable_hash({**base, "first": first, "stop": stop}, length=24),
                    start_s=round(start_s, 6),
                    end_s=None if end_s is None else round(end_s, 6),
                    audio_s=round(span, 3),
                    weight=span if span > 0 else weight,
                )
            )
    return units, problems


# --- the plan file --------------------------------------------------------------------------------


def plan_fingerprint(units: Sequence[WorkUnit], settings: dict[str, Any]) -> str:
    return stable_hash({"units": [u.key for u in units], "settings": settings}, length=16)


def write_plan(
    out_dir: Path,
    units: Sequence[WorkUnit],
    problems: Sequence[dict[str, str]],
    settings: dict[str, Any],
    *,
    strict: bool,
) -> None:
    """Write ``plan.json``; with ``strict`` (shards of a job array), an existing plan must be the
    same one (same inputs and settings), else :class:`RunError`."""
    fingerprint = plan_fingerprint(units, settings)
    path = out_dir / "plan.json"
    if strict and path.is_file():
        existing = read_json(path)
        if existing.get("fingerprint") == fingerprint:
            return
        raise RunError(
            f"{out_dir} holds the plan of another detect job (other inputs, model or settings; "
            f"plan {existing.get('fingerprint')} vs {fingerprint}): every shard of a job array must "
            "be given the same command; use another --out for another job"
        )
    with output_guard(out_dir):
        write_json(
            path,
            {
                "format": 1,
                "fingerprint": fingerprint,
                "settings": settings,
                "problems": list(problems),
                "units": [u.to_dict() for u in units],
            },
        )


def read_plan(out_dir: Path) -> tuple[list[WorkUnit], list[dict[str, str]], dict[str, Any]]:
    path = out_dir / "plan.json"
    if not path.is_file():
        raise RunError(f"{out_dir} has no plan.json: it is not the output folder of `chirpkit detect`")
    try:
        data = read_json(path)
        return [WorkUnit.from_dict(u) for u in data["units"]], data["problems"], data["settings"]
    except (ValueError, KeyError, TypeError) as exc:
        raise RunError(f"{path} is damaged ({exc}); run detect again with --fresh") from exc


# --- parts ----------------------------------------------------------------------------------------


def part_path(out_dir: Path, unit: WorkUnit) -> Path:
    return out_dir / ".parts" / f"{unit.key}.parquet"


def failed_path(out_dir: Path, unit: WorkUnit) -> Path:
    return out_dir / ".parts" / f"{unit.key}.failed.json"


def write_part(out_dir: Path, unit: WorkUnit, cands: pd.DataFrame, stats: dict[str, Any]) -> None:
    """The unit's candidates, atomically, with its stats in the Parquet metadata; clears an
    earlier failure. Raises :class:`~chirpkit.errors.OutputError` when it cannot be written."""
    table = pa.Table.from_pandas(cands, preserve_index=False)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), _META: json.dumps(stats)})
    with output_guard(out_dir):
        with atomic_path(part_path(out_dir, unit)) as tmp:
            pq.write_table(table, tmp)
        failed_path(out_dir, unit).unlink(missing_ok=True)


def write_failure(out_dir: Path, unit: WorkUnit, reason: str, attempts: int) -> None:
    with output_guard(out_dir):
        write_json(
            failed_path(out_dir, unit),
            {
                "file": unit.file,
                "start_s": unit.start_s,
                "end_s": unit.end_s,
                "reason": reason,
                "attempts": attempts,
            },
        )


def read_part(path: Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    table = pq.read_table(path)
    meta = (table.schema.metadata or {}).get(_META)
    return table.to_pandas(), json.loads(meta) if meta else {}


def part_top(path: Path) -> int:
    """How many labels per window a part keeps (from its metadata alone; 0 when unknown)."""
    meta = (pq.read_schema(path).metadata or {}).get(_META)
    return int(json.loads(meta).get("stored_top", 0)) if meta else 0


class Results:
    """Which units have a part or a failure, from one listing of ``.parts/`` (one call, not two
    per unit: tens of thousands of units on a network file system)."""

    def __init__(self, out_dir: Path) -> None:
        folder = out_dir / ".parts"
        names = {p.name for p in folder.iterdir()} if folder.is_dir() else set()
        self.parts = {n.removesuffix(".parquet") for n in names if n.endswith(".parquet")}
        self.failed = {n.removesuffix(".failed.json") for n in names if n.endswith(".failed.json")}

    def finished(self, unit: WorkUnit) -> bool:
        return unit.key in self.parts or unit.key in self.failed


# --- selection and merge -------------------------------------------------------------------------


def select(cands: pd.DataFrame, settings: dict[str, Any]) -> pd.DataFrame:
    """Window candidates → detections: among the top-k, not background, at or above the class
    threshold (or ``min_score``)."""
    keep = (cands["rank"] < settings["top_k"]) & ~cands["label"].isin(settings["background"])
    thresholds = settings.get("thresholds")
    if thresholds:
        limit = cands["label"].map(thresholds).fillna(settings["min_score"])
    else:
        limit = pd.Series(settings["min_score"], index=cands.index)
    return cands[keep & (cands["score"] >= limit)]


def merge(
    out: str | os.PathLike[str],
    *,
    partial: bool = False,
    reused: Collection[str] = (),
    run_info: dict[str, Any] | None = None,
) -> pd.DataFrame:
    """Write the final tables of a detect output folder from its parts (``chirpkit merge DIR``).

    Runs of ``detect`` do this themselves when their last unit is done; after a job array
    (``--shard I/N``) the last shard to finish does it, or run it by hand.

    Args:
        out: the output folder (it holds ``plan.json`` and ``.parts/``).
        partial: write the tables from the units done so far instead of refusing while units
            have no result yet.

    Returns:
        The window detections.

    Raises:
        RunError: no plan, or units still without a result (and not ``partial``).
    """
    out_dir = Path(out)
    units, problems, settings = read_plan(out_dir)
    results = Results(out_dir)
    missing = [u for u in units if not results.finished(u)]
    if missing and not partial:
        shards = settings.get("shards")
        hint = (
            f"run the shards that have not finished (of {shards}) again, then merge"
            if shards
            else "run the same detect command again to finish them"
        )
        raise RunError(
            f"{len(missing)} of {len(units)} work unit(s) in {out_dir} have no result yet "
            f"(e.g. {missing[0].file} from {missing[0].start_s} s): {hint}; or merge --partial"
        )
    dense = _DenseScores(out_dir, settings) if "scores" in settings["formats"] else None
    got = _Gathered(errors=[dict(p) for p in problems])
    for u in units:
        got.add(out_dir, u, results, settings, reused, dense)
    table = (
        pd.concat(got.tables, ignore_index=True) if got.tables else pd.DataFrame(columns=DETECTION_COLUMNS)
    )
    events = merge_events(table, gap_s=settings["merge_gap_s"])
    with output_guard(out_dir):
        if dense is not None:
            dense.close()
        _write_tables(out_dir, table, events, got.errors, got.manifest, settings)
        summary: dict[str, Any] = {
            "files": len({u.file for u in units}) + len(problems),
            "units": len(units),
            "failed": len(got.errors),
            "missing": len(missing),
            "detections": len(table),
            "events": len(events),
            "audio_seconds": round(got.audio_s, 2),
            "compute_seconds": round(got.compute_s, 2),
            "samples_repaired": got.repaired,
            "windows_dropped_nonfinite": got.dropped,
            "decoded_past_damage_from_s": got.damaged,
            "hop_s": settings["hop_s"],
            "shard_s": settings["shard_s"],
            "min_score": settings["min_score"],
            "thresholds": "per class" if settings.get("thresholds") else "min_score",
            "top_k": settings["top_k"],
            "model": settings["model"],
            "model_kind": settings["model_kind"],
            **(run_info or {}),
        }
        write_json(out_dir / "detect_summary.json", summary)
    got.log_repairs()
    return table


@dataclass
class _Gathered:
    """What :func:`merge` reads from the units' parts: window tables, manifest lines, errors,
    and what decoding repaired, dropped or found damaged (per file)."""

    errors: list[dict[str, Any]]
    tables: list[pd.DataFrame] = field(default_factory=list)
    manifest: list[dict[str, Any]] = field(default_factory=list)
    audio_s: float = 0.0
    compute_s: float = 0.0
    repaired: dict[str, dict[str, int]] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)
    damaged: dict[str, float] = field(default_factory=dict)

    def add(
        self,
        out_dir: Path,
        u: WorkUnit,
        results: Results,
        settings: dict[str, Any],
        reused: Collection[str],
        dense: _DenseScores | None,
    ) -> None:
        """Take in one unit: its part when done, its failure when failed, else a missing line."""
        row = {"file": u.file, "start_s": u.start_s, "end_s": u.end_s, "part": ""}
        if u.key not in results.parts:
            if u.key in results.failed:
                fail = read_json(failed_path(out_dir, u))
                where = f" (from {u.start_s:g} s)" if u.first > 0 or u.stop is not None else ""
                self.errors.append({"file": u.file, "reason": f"{fail['reason']}{where}"})
            self.manifest.append({**row, "status": "failed" if u.key in results.failed else "missing"})
            return
        self.manifest.append({**row, "status": "reused" if u.key in reused else "done", "part": u.key})
        cands, stats = read_part(part_path(out_dir, u))
        self.tables.append(select(cands, settings).assign(file=u.file)[DETECTION_COLUMNS])
        if dense is not None:
            dense.add(u, cands)
        self.audio_s += stats.get("audio_s", 0.0)
        self.compute_s += stats.get("seconds", 0.0)
        for kind in ("nonfinite", "over_full_scale"):
            if stats.get(kind):
                counts = self.repaired.setdefault(u.file, {"nonfinite": 0, "over_full_scale": 0})
                counts[kind] += int(stats[kind])
        if stats.get("damaged_at_s") is not None:
            self.damaged.setdefault(u.file, stats["damaged_at_s"])
        if stats.get("dropped"):
            self.dropped[u.file] = self.dropped.get(u.file, 0) + int(stats["dropped"])

    def log_repairs(self) -> None:
        """Say, per file, what decoding repaired, found damaged or left out."""
        for f, n in self.repaired.items():
            log.warning(
                "%s: %d NaN/infinite sample(s) set to 0, %d beyond full scale (kept), before detection",
                f,
                n["nonfinite"],
                n["over_full_scale"],
            )
        for f, at in self.damaged.items():
            log.warning("%s: libsndfile stopped at a damaged frame near %g s; FFmpeg decoded the rest", f, at)
        for f, windows in self.dropped.items():
            log.warning("%s: %d window(s) whose scores were not finite left out", f, windows)


class _DenseScores:
    """``scores.parquet``: every class's score for every window (``file, start_s, end_s`` and one
    float16 column per class), written part by part so memory stays flat, and renamed into place
    when complete."""

    def __init__(self, out_dir: Path, settings: dict[str, Any]) -> None:
        self.path = out_dir / "scores.parquet"
        self.tmp = out_dir / ".parts" / "scores.parquet.tmp"
        self.classes: list[str] = list(settings.get("classes") or [])
        self.writer: pq.ParquetWriter | None = None

    def add(self, unit: WorkUnit, cands: pd.DataFrame) -> None:
        wide = cands.pivot_table(index=["start_s", "end_s"], columns="label", values="score", aggfunc="max")
        if not self.classes:  # a plan written before the class names were recorded
            self.classes = sorted(map(str, wide.columns))
        wide = wide.reindex(columns=self.classes)
        if wide.isna().to_numpy().any():
            raise RunError(
                f"the part of {unit.file} from {unit.start_s:g} s keeps only the best labels of each window, "
                "not every class: run detect again with the same output and --formats scores (it redoes "
                "those units)"
            )
        frame = wide.astype(np.float16).reset_index()
        frame.insert(0, "file", unit.file)
        table = pa.Table.from_pandas(frame, preserve_index=False)
        if self.writer is None:
            with output_guard(self.path.parent):
                self.writer = pq.ParquetWriter(self.tmp, table.schema)
        self.writer.write_table(table)

    def close(self) -> None:
        if self.writer is None:  # no part: an empty matrix with the right columns
            frame = pd.DataFrame(columns=["file", "start_s", "end_s", *self.classes])
            frame[self.classes] = frame[self.classes].astype(np.float16)
            with atomic_path(self.path) as tmp:
                frame.to_parquet(tmp, index=False)
            return
        self.writer.close()
        self.tmp.replace(self.path)


def _write_tables(
    out_dir: Path,
    table: pd.DataFrame,
    events: pd.DataFrame,
    errors: list[dict[str, str]],
    manifest: Iterable[dict[str, Any]],
    settings: dict[str, Any],
) -> None:
    formats = settings["formats"]
    write_csv(out_dir / "detections.csv", table, index=False, float_format="%.4f")
    if "parquet" in formats:
        with atomic_path(out_dir / "detections.parquet") as tmp:
            table.to_parquet(tmp, index=False)
    write_csv(out_dir / "events.csv", events, index=False, float_format="%.4f")
    if "raven" in formats:
        write_raven(events, out_dir / "raven", high_freq_hz=settings["sample_rate"] / 2)
    if "audacity" in formats:
        write_audacity(events, out_dir / "audacity")
    write_csv(out_dir / "manifest.csv", pd.DataFrame(list(manifest), columns=MANIFEST_COLUMNS), index=False)
    err_path = out_dir / "errors.csv"
    if errors:
        write_csv(err_path, pd.DataFrame(errors, columns=["file", "reason"]), index=False)
    elif err_path.exists():
        err_path.unlink()


def finite_rows(probs: np.ndarray) -> np.ndarray:
    """A mask of the windows whose scores are all finite."""
    return np.isfinite(probs).all(axis=1)
