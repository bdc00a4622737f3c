"""Ingest: turn a folder of class sub-folders or a label CSV into a catalog.

Every file is probed (header only); files that cannot be read are skipped with one line each in a
skip report (``<catalog>.skipped.csv``: source, reason) instead of stopping the job.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from chirpkit._util import atomic_path, existing_path
from chirpkit.audio import AudioInfo, info
from chirpkit.data.catalog import (
    CORE_COLUMNS,
    LABEL_SEP,
    META_COLUMNS,
    group_rule,
    validate_catalog,
    write_catalog,
)
from chirpkit.data.reviews import ingest_reviews
from chirpkit.errors import AudioDecodeError, DataError

__all__ = ["group_rule", "ingest", "read_label_table"]

log = logging.getLogger("chirpkit")

_PATH_COLS = ("path", "file", "filename", "filepath", "source", "audio", "file_path")
_LABEL_COLS = ("label", "labels", "class", "category", "species", "target_name")
_GROUP_COLS = ("group", "recording", "site", "speaker", "src_file")
_IGNORED_NAMES = {".DS_Store", "Thumbs.db", "desktop.ini"}


def _pick(columns: Iterable[str], names: Sequence[str]) -> str | None:
    lower = {c.lower().strip(): c for c in columns}
    for n in names:
        if n in lower:
            return lower[n]
    return None


def read_label_table(path: Path, audio_dir: Path | None = None) -> pd.DataFrame:
    """Read a label CSV ``path,label[,group][,start_s,end_s]`` (header names are flexible).

    Returns a frame with ``source`` (resolved against ``audio_dir`` or the CSV's folder),
    ``label``, ``labels`` and, when present, ``group``, ``start_s``, ``end_s`` and ``row``
    (the line number in the CSV, for messages).
    """
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False, sep=None, engine="python")
    except Exception as exc:
        raise DataError(f"cannot read label table {path}: {exc}") from exc
    if table.empty:
        raise DataError(f"label table {path} has no rows")
    path_col = _pick(table.columns, _PATH_COLS)
    label_col = _pick(table.columns, _LABEL_COLS)
    if path_col is None or label_col is None:
        raise DataError(
            f"label table {path} needs a file column (one of {list(_PATH_COLS)}) and a label column "
            f"(one of {list(_LABEL_COLS)}); it has {list(table.columns)}"
        )
    base = audio_dir if audio_dir is not None else path.parent
    rows = pd.DataFrame({"row": table.index + 2})  # 1-based, after the header line
    rows["source"] = [str((base / p.strip()).resolve()) if p.strip() else "" for p in table[path_col]]
    labels = [[s.strip() for s in v.split(LABEL_SEP) if s.strip()] for v in table[label_col]]
    bad = [int(r) for r, labs in zip(rows["row"], labels, strict=True) if not labs]
    if bad:
        raise DataError(f"label table {path}: empty label on line(s) {bad[:10]}; every file needs a label")
    nopath = [int(r) for r, s in zip(rows["row"], rows["source"], strict=True) if not s]
    if nopath:
        raise DataError(f"label table {path}: empty file name on line(s) {nopath[:10]}")
    rows["labels"] = labels
    rows["label"] = [labs[0] for labs in labels]
    group_col = _pick(table.columns, _GROUP_COLS)
    if group_col is not None:
        rows["group"] = table[group_col].str.strip().to_numpy()
    for name, cands in (("start_s", ("start_s", "start", "offset")), ("end_s", ("end_s", "end"))):
        col = _pick(table.columns, cands)
        if col is not None:
            try:
                rows[name] = pd.to_numeric(table[col]).astype(float).to_numpy()
            except ValueError as exc:
                raise DataError(f"label table {path}: column '{col}' must hold seconds: {exc}") from exc
    return rows


def _scan_folder(root: Path) -> tuple[pd.DataFrame, list[dict[str, str]]]:
    classes = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    skipped: list[dict[str, str]] = []
    for f in sorted(root.iterdir()):
        if f.is_file() and f.name not in _IGNORED_NAMES and not f.name.startswith("."):
            skipped.append({"source": str(f), "reason": "not inside a class sub-folder"})
    records = []
    for cdir in classes:
        for f in sorted(cdir.rglob("*")):
            if not f.is_file() or f.name in _IGNORED_NAMES or f.name.startswith("."):
                continue
            records.append({"source": str(f.resolve()), "label": cdir.name, "labels": [cdir.name]})
    return pd.DataFrame(records, columns=["source", "label", "labels"]), skipped


def _probe_all(sources: Sequence[str], workers: int, progress: bool) -> dict[str, AudioInfo | str]:
    def probe(src: str) -> AudioInfo | str:
        try:
            i = info(src)
        except AudioDecodeError as exc:
            return exc.reason
        if i.frames <= 0 or i.duration_s <= 0:
            return "no audio samples (0 frames)"
        return i

    unique = list(dict.fromkeys(sources))
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = list(
            tqdm(
                pool.map(probe, unique),
                total=len(unique),
                desc="probe",
                unit="file",
                disable=not progress,
            )
        )
    return dict(zip(unique, results, strict=True))


def _check_classes(rows: pd.DataFrame, classes: Sequence[str], root: Path) -> None:
    known = set(classes)
    lines = rows["row"].tolist() if "row" in rows.columns else [None] * len(rows)
    unknown = [
        f"line {line}: {lab!r}" if line is not None else f"{Path(source).parent.name}/: {lab!r}"
        for line, source, labs in zip(lines, rows["source"], rows["labels"], strict=True)
        for lab in labs
        if lab not in known
    ]
    if unknown:
        raise DataError(
            f"{len(unknown)} label(s) in {root} are not among the known classes "
            f"({'; '.join(unknown[:10])}); known classes: {sorted(known)}. "
            "Fix the labels or add the class to `classes`."
        )


def _write_report(df: pd.DataFrame, path: Path, what: str) -> None:
    if len(df):
        with atomic_path(path) as tmp:
            df.to_csv(tmp, index=False)
        log.info("%s: %s", what, path)
    elif path.exists():
        path.unlink()


def ingest(
    src: str | os.PathLike[str] | None = None,
    *,
    out: str | os.PathLike[str] | None = None,
    group_by: str | None = None,
    classes: Sequence[str] | None = None,
    audio_dir: str | os.PathLike[str] | None = None,
    annotations: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None = None,
    format: str = "auto",
    label_column: str | None = None,
    columns: Mapping[str, str] | None = None,
    window_s: float = 3.0,
    hop_s: float | None = None,
    background: int = 0,
    background_label: str = "noise",
    seed: int = 0,
    workers: int = 8,
    progress: bool = True,
    reviews: str | os.PathLike[str] | None = None,
    merge_with: str | os.PathLike[str] | pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Build a catalog from a folder of class sub-folders, a label CSV, or annotation tables.

    Args:
        src: ``data/`` holding ``data/<class>/*.wav|flac|mp3|ogg|...``, or a CSV with columns
            ``path,label[,group][,start_s,end_s]`` (paths relative to the CSV or ``audio_dir``;
            several labels joined by ``;``). Leave out when ``annotations`` is given.
        out: where to write the catalog (Parquet + CSV view + ``.skipped.csv`` +
            ``.anomalies.csv``); optional.
        group_by: ``file`` (default), ``folder`` or ``regex:PATTERN`` (see :func:`group_rule`);
            a ``group`` column in the CSV/table is used when no rule is given.
        classes: the expected class names. A label outside them is an error in a label CSV, and
            a reported, dropped annotation in an annotation table.
        audio_dir: folder that relative paths (CSV) or file names (annotation tables) refer to.
        annotations: one or more annotation tables (point/box CSV, Raven, Audacity,
            Kaleidoscope; see :mod:`chirpkit.data.annotations`) over recordings in ``audio_dir``:
            the catalog then holds one row per window (see :mod:`chirpkit.data.annotated`).
        format, label_column, columns: how to read the annotation tables (``format="auto"``
            detects it; ``columns`` maps ``file/start/end/duration/label/low_freq/high_freq/group``
            to a generic CSV's column names).
        window_s, hop_s: window length and hop for annotation windows (use ``audio.window_s``).
        background: number of background windows to sample away from all annotations, labelled
            ``background_label``.
        seed: seed for background sampling.
        workers: threads that probe files.
        progress: show a progress bar.
        reviews, merge_with: a ``detect`` folder with ``reviews.db`` instead of a source: its
            reviewed windows (accepted → the label, relabelled → the right label, rejected →
            ``background_label``) added to the catalog ``merge_with``; see
            :func:`chirpkit.data.reviews.ingest_reviews`.

    Returns:
        The catalog. ``catalog.attrs["skipped"]`` lists skipped files (``source``, ``reason``),
        ``catalog.attrs["anomalies"]`` the annotation anomalies.

    Raises:
        MissingPathError: ``src``, ``audio_dir`` or a table does not exist.
        DataError: no usable audio, one class only, a label outside ``classes``, bad CSV.
    """
    if reviews is not None:  # reviewed detections → labelled windows and hard negatives
        if src is not None or annotations is not None:
            raise DataError("reviews are merged into an existing catalog: give merge_with=, not a source")
        return ingest_reviews(
            reviews,
            merge_with=merge_with,
            out=out,
            group_by=group_by,
            background_label=background_label,
            audio_dir=audio_dir,
        )
    skipped: list[dict[str, str]] = []
    anomalies = pd.DataFrame()

    def probe(paths: Sequence[str]) -> dict[str, AudioInfo | str]:
        return _probe_all(paths, workers, progress)

    if annotations is not None:
        from chirpkit.data.annotated import annotation_windows

        if audio_dir is None:
            raise DataError("annotation tables need audio_dir (--audio-dir): the folder of the recordings")
        tables = [annotations] if isinstance(annotations, (str, os.PathLike)) else list(annotations)
        root = existing_path(audio_dir, "audio folder")
        rows, anomalies, probed = annotation_windows(
            tables,
            audio_dir=root,
            probe=probe,
            window_s=window_s,
            hop_s=hop_s,
            format=format,
            label_column=label_column,
            columns=columns,
            classes=classes,
            background=background,
            background_label=background_label,
            seed=seed,
        )
        skipped = [{"source": k, "reason": v} for k, v in probed.items() if isinstance(v, str)]
        infos = [i for i in (probed[s] for s in rows["source"]) if isinstance(i, AudioInfo)]
        rule_root = root
        if group_by is None and rows["table_group"].notna().all():
            rows["group"] = rows["table_group"].astype(str)
        src_desc = f"annotations {[str(t) for t in tables]}"
    else:
        if src is None:
            raise DataError("give a source: a folder of class sub-folders, a label CSV, or annotations=...")
        root = existing_path(src, "ingest source")
        src_desc = str(root)
        if root.is_dir():
            rows, skipped = _scan_folder(root)
            if rows.empty:
                raise DataError(
                    f"no files found in class sub-folders of {root}; expected {root}/<class>/<file>.wav "
                    "(one sub-folder per class), or pass a label CSV"
                )
            rule_root = root
        elif root.suffix.lower() in (".csv", ".tsv", ".txt"):
            rows = read_label_table(root, Path(audio_dir) if audio_dir is not None else None)
            rule_root = Path(audio_dir) if audio_dir is not None else root.parent
        else:
            raise DataError(
                f"cannot ingest {root}: give a folder with one sub-folder per class, or a label CSV "
                "(path,label[,group]); for annotation tables use annotations=... (--annotations)"
            )
        if classes is not None:
            _check_classes(rows, classes, root)
        probed = probe(rows["source"].tolist())
        keep: list[int] = []
        infos = []
        for i, src_path in enumerate(rows["source"]):
            res = probed[src_path]
            if isinstance(res, str):
                line = f" (line {int(rows['row'].iloc[i])})" if "row" in rows.columns else ""
                skipped.append({"source": src_path, "reason": res + line})
            else:
                keep.append(i)
                infos.append(res)
        rows = rows.iloc[keep].reset_index(drop=True)
        if rows.empty:
            raise DataError(
                f"none of the {len(probed)} file(s) from {root} could be read as audio; "
                f"first reasons: {[s['reason'] for s in skipped[:3]]}"
            )

    meta = pd.DataFrame([i.to_dict() for i in infos]).drop(columns=["path", "frames"])
    rows = pd.concat([rows.reset_index(drop=True), meta], axis=1)
    if "start_s" not in rows.columns:
        rows["start_s"] = 0.0
    if "end_s" not in rows.columns:
        rows["end_s"] = rows["duration_s"]
    rows["start_s"] = rows["start_s"].fillna(0.0)
    rows["end_s"] = rows["end_s"].fillna(rows["duration_s"])

    if group_by is not None or "group" not in rows.columns:
        rule = group_rule(group_by or "file", rule_root)
        groups = {s: rule(Path(s)) for s in rows["source"].unique()}
        rows["group"] = rows["source"].map(groups)

    n_classes = rows["label"].nunique()
    if n_classes < 2:
        if annotations is not None:
            hint = "; add background windows (background=N, --background N) to learn call vs noise"
        elif root.is_dir():
            hint = f"; {root} looks like a single class folder — point ingest at its parent"
        else:
            hint = ""
        raise DataError(
            f"only one class ({rows['label'].iloc[0]!r}) in {src_desc}: a classifier needs at least two "
            f"(add a background/'noise' class or more classes){hint}"
        )
    cols = [*CORE_COLUMNS, *META_COLUMNS]
    extra = [
        c for c in ("ann_start_s", "ann_end_s", "low_freq_hz", "high_freq_hz", "annotation") if c in rows
    ]
    catalog = validate_catalog(rows[cols + extra], where=f"ingest of {src_desc}")
    skipped_df = pd.DataFrame(skipped, columns=["source", "reason"])
    catalog.attrs["skipped"] = skipped_df.to_dict("records")
    catalog.attrs["anomalies"] = anomalies.to_dict("records")
    log.info(
        "ingested %d example(s) from %d file(s), %d class(es), %d group(s); skipped %d file(s)%s",
        len(catalog),
        catalog["source"].nunique(),
        n_classes,
        catalog["group"].nunique(),
        len(skipped_df),
        f"; {len(anomalies)} annotation anomal{'y' if len(anomalies) == 1 else 'ies'}"
        if len(anomalies)
        else "",
    )
    if len(anomalies):
        for kind, n in anomalies["kind"].value_counts().items():
            log.warning("annotation anomaly %s: %d", kind, n)
    n_ffmpeg = int((catalog.drop_duplicates("source")["decoder"] == "pyav").sum())
    if n_ffmpeg:
        log.info("%d file(s) read through the FFmpeg (PyAV) fallback: libsndfile could not", n_ffmpeg)
    if out is not None:
        path = write_catalog(catalog, out)
        _write_report(skipped_df, path.with_suffix(".skipped.csv"), "skip report")
        _write_report(anomalies, path.with_suffix(".anomalies.csv"), "anomaly report")
        log.info("catalog: %s", path)
    for s in skipped[:20]:
        log.warning("skipped %s: %s", s["source"], s["reason"])
    if len(skipped) > 20:
        log.warning("... and %d more skipped file(s)", len(skipped) - 20)
    return catalog
