"""The catalog: one table for every kind of dataset.

One row per example:

=============  ==========================================================================
column         meaning
=============  ==========================================================================
source         absolute path of the audio file
start_s        start of the example in the file (s)
end_s          end of the example in the file (s); a point annotation has start_s == end_s
label          the example's own class (the single-label training target)
labels         every class present in the example (list; ``;``-joined in the CSV view)
group          what must never be split across train/val/test (recording, site, day, speaker)
duration_s     duration of the whole file (s)
sample_rate    the file's sample rate (Hz)
channels       the file's channel count
codec          e.g. pcm_16, flac, mp3, vorbis, aac
container      e.g. wav, flac, mp3, ogg
bit_depth      bits per sample (lossless audio), else empty
decoder        soundfile, or pyav when libsndfile could not read the file
split          train / val / test (after ``split``)
=============  ==========================================================================

It is stored as Parquet with a CSV view beside it (same name, ``.csv``).
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from chirpkit.errors import DataError
from chirpkit.utils.io import atomic_paths, existing_path

__all__ = [
    "CORE_COLUMNS",
    "LABEL_SEP",
    "catalog_fingerprint",
    "class_counts",
    "group_rule",
    "read_catalog",
    "validate_catalog",
    "write_catalog",
]

CORE_COLUMNS = ("source", "start_s", "end_s", "label", "labels", "group")
META_COLUMNS = (
    "duration_s",
    "sample_rate",
    "channels",
    "codec",
    "container",
    "bit_depth",
    "decoder",
)
LABEL_SEP = ";"
SPLITS = ("train", "val", "test")


def _labels_to_list(value: object) -> list[str]:
    if isinstance(value, str):
        return [s for s in (x.strip() for x in value.split(LABEL_SEP)) if s]
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return []
    return [str(v) for v in value]  # type: ignore[attr-defined]


def _rows(index: list[int], limit: int = 10) -> str:
    return ", ".join(str(i) for i in index[:limit]) + (
        f" … ({len(index)} in all)" if len(index) > limit else ""
    )


def validate_catalog(df: pd.DataFrame, where: str = "catalog") -> pd.DataFrame:
    """Check the core columns and normalise types; return the (copied) catalog.

    Raises:
        DataError: a core column is missing, a label is empty, a time is not a finite number of
            seconds, or a row ends before it starts (rows are numbered from 0, as in the
            catalog's CSV view after its header).
    """
    if not isinstance(df, pd.DataFrame):
        raise DataError(f"{where} must be a table (pandas DataFrame), got {type(df).__name__}")
    missing = [c for c in CORE_COLUMNS if c not in df.columns and c != "labels"]
    if missing:
        raise DataError(
            f"{where} lacks column(s) {missing}; a catalog needs {list(CORE_COLUMNS)} "
            "(create one with `chirpkit ingest`)"
        )
    out = df.copy()
    out["source"] = out["source"].astype(str)
    out["label"] = out["label"].astype(str)
    out["group"] = out["group"].astype(str)
    for col in ("start_s", "end_s"):
        values = pd.to_numeric(out[col], errors="coerce")
        bad = out.index[values.isna() & out[col].notna()].tolist()
        if bad:
            raise DataError(
                f"{where}: column '{col}' must hold numbers of seconds; row(s) {_rows(bad)} hold "
                f"{out[col].loc[bad[0]]!r}"
            )
        out[col] = values.astype(float)
    times = out[["start_s", "end_s"]].to_numpy(float)
    nonfinite = out.index[~np.isfinite(times).all(axis=1)].tolist()
    if nonfinite:
        r = out.loc[nonfinite[0]]
        raise DataError(
            f"{where}: row(s) {_rows(nonfinite)} have no finite span (row {nonfinite[0]}: "
            f"start_s={r['start_s']}, end_s={r['end_s']}, source {r['source']}); every example needs "
            "start_s and end_s in seconds (a whole file is 0 to its duration): fix the rows or re-run ingest"
        )
    reversed_ = out.index[times[:, 1] < times[:, 0]].tolist()
    if reversed_:
        r = out.loc[reversed_[0]]
        raise DataError(
            f"{where}: row(s) {_rows(reversed_)} end before they start (row {reversed_[0]}: "
            f"start_s={r['start_s']}, end_s={r['end_s']}, source {r['source']}); swap or fix the times"
        )
    if "labels" not in out.columns:
        out["labels"] = [[lab] for lab in out["label"]]
    else:
        out["labels"] = [
            _labels_to_list(v) or [lab] for v, lab in zip(out["labels"], out["label"], strict=True)
        ]
    empty = out.index[out["label"].str.strip().isin(["", "nan", "None"])].tolist()
    if empty:
        raise DataError(f"{where}: {len(empty)} row(s) have an empty label (rows {empty[:10]})")
    return out.reset_index(drop=True)


def read_catalog(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a catalog written by :func:`write_catalog` (Parquet, or its CSV view).

    Raises:
        MissingPathError: no such file.
        DataError: the file is not a catalog (unreadable, empty, missing columns, bad values).
    """
    p = existing_path(path, "catalog")
    if p.is_dir():
        raise DataError(f"catalog {p} is a folder; give the catalog file (catalog.parquet from ingest)")
    if p.suffix.lower() == ".csv":
        try:
            df = pd.read_csv(p, keep_default_na=False, na_values=[""])
        except pd.errors.EmptyDataError as exc:
            raise DataError(f"catalog {p} is empty: re-run `chirpkit ingest` to write it") from exc
        except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
            raise DataError(f"cannot read catalog {p} as CSV: {str(exc).strip()[:200]}") from exc
    else:
        try:
            df = pd.read_parquet(p)
        except Exception as exc:
            raise DataError(
                f"cannot read catalog {p} as Parquet ({type(exc).__name__}: {str(exc).strip()[:160]}); "
                "it is damaged or not a catalog: re-run `chirpkit ingest`, or read its CSV view"
            ) from exc
    return validate_catalog(df, where=f"catalog {p}")


def write_catalog(
    df: pd.DataFrame,
    path: str | os.PathLike[str],
    *,
    reports: Mapping[str, pd.DataFrame | None] | None = None,
) -> Path:
    """Write the catalog as Parquet with a CSV view beside it, all or nothing.

    ``path`` is the Parquet file (another ending becomes ``.parquet``), or an existing folder to
    write ``catalog.parquet`` into.

    Args:
        reports: side tables written in the same commit, by suffix (e.g. ``{".skipped.csv": df}``);
            an empty or ``None`` table removes an old file of that name.

    Every file is written to a temporary name first and renamed only when all are written, so a
    full disk or an interrupt leaves the old catalog (or none), never a mix.
    """
    p = Path(path)
    if p.is_dir():  # `--out runs/x/`: the catalog goes inside the folder
        p = p / "catalog.parquet"
    elif p.suffix.lower() not in (".parquet", ".pq"):
        p = p.with_suffix(".parquet")
    out = validate_catalog(df)
    view = out.copy()
    view["labels"] = [LABEL_SEP.join(v) for v in view["labels"]]
    side = {p.with_suffix(suffix): t for suffix, t in (reports or {}).items()}
    present = {q: t for q, t in side.items() if t is not None and len(t)}
    targets = [p, p.with_suffix(".csv"), *present]
    with atomic_paths(targets) as tmps:
        out.to_parquet(tmps[0], index=False)
        view.to_csv(tmps[1], index=False)
        for tmp, table in zip(tmps[2:], present.values(), strict=True):
            table.to_csv(tmp, index=False)
    for q in side:
        if q not in present and q.exists():
            q.unlink()
    return p


def catalog_fingerprint(df: pd.DataFrame) -> str:
    """A digest of the rows that shape training (sources, spans, labels, groups, split)."""
    cols = [c for c in (*CORE_COLUMNS, "split") if c in df.columns]
    view = df[cols].copy()
    if "labels" in view.columns:
        view["labels"] = [LABEL_SEP.join(v) for v in view["labels"]]
    return hashlib.sha256(view.to_csv(index=False).encode()).hexdigest()[:16]


def class_counts(df: pd.DataFrame, by: str = "split") -> pd.DataFrame:
    """Examples per class (rows) and per value of ``by`` (columns), with a ``total`` column."""
    if by not in df.columns:
        counts = df.groupby("label").size().to_frame("total")
        return counts.sort_index()
    table = pd.crosstab(df["label"], df[by])
    order = [s for s in SPLITS if s in table.columns] + [c for c in table.columns if c not in SPLITS]
    table = table[order]
    table["total"] = table.sum(axis=1)
    table.columns.name = None
    return table.sort_index()


def group_rule(rule: str, root: Path | None = None) -> Callable[[Path], str]:
    """Return a function ``path -> group`` for a rule.

    Rules: ``file`` (the file itself), ``folder`` (the file's parent folder), or
    ``regex:PATTERN`` searched in the path relative to ``root`` (the first capture group, or the
    whole match) — e.g. ``regex:^\\d+_([a-z]+)_`` takes the speaker out of ``3_theo_12.wav``.
    """

    def rel(p: Path) -> str:
        if root is not None:
            try:
                return p.relative_to(root).as_posix()
            except ValueError:
                pass
        return p.as_posix()

    if rule == "file":
        return lambda p: rel(p)
    if rule == "folder":
        return lambda p: rel(p.parent)
    if rule.startswith("regex:"):
        try:
            pattern = re.compile(rule[len("regex:") :])
        except re.error as exc:
            raise DataError(f"group rule {rule!r} is not a valid regular expression: {exc}") from exc

        def by_regex(p: Path) -> str:
            text = rel(p)
            m = pattern.search(text) or pattern.search(p.name)
            if m is None:
                raise DataError(
                    f"group rule {rule!r} does not match {text!r}; fix the pattern or use "
                    "group_by='file' / 'folder'"
                )
            return m.group(1) if m.groups() else m.group(0)

        return by_regex
    raise DataError(f"unknown group rule {rule!r}; use 'file', 'folder' or 'regex:PATTERN'")
