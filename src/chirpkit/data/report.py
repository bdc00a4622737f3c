"""``chirpkit inspect``: the dataset report (HTML + markdown + PNG plots + CSV tables).

Sections: overview; class balance (log scale, rare-class threshold, top-1% / bottom-10% figures);
examples per recording and per group; durations; sample rates / channels / bit depth / codecs /
decoders; unreadable files and FFmpeg fallbacks; annotation anomalies; per-class frequency range
(dominant frequency, 5th–95th percentile, and the band holding 98% of calls); noise floor per
recording; overlapping calls by class pair; duplicate and leakage audit (identical or
near-identical audio across files or groups and, given a split, any group, file or duplicate that
crosses splits).

Compute, then render: each ``_section`` function is pure statistics, returning a :class:`Section`
(its sentences, tables, CSVs, the plots to draw and its part of the summary); :func:`_render`
alone writes files: the PNGs, the CSVs, ``index.html`` and ``report.md`` from the jinja2 templates
in ``chirpkit/templates`` (HTML autoescaped: file names and labels are user text), and
``summary.json``.
"""

from __future__ import annotations

import functools
import itertools
import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
import pandas as pd
from markupsafe import Markup

from chirpkit.data.audit import FileAudit, audit_files, near_duplicates
from chirpkit.data.catalog import read_catalog, validate_catalog
from chirpkit.errors import DataError
from chirpkit.utils import plots
from chirpkit.utils.io import output_dir, write_csv, write_json, write_text

__all__ = ["inspect"]

log = logging.getLogger("chirpkit")


@dataclass
class Plot:
    caption: str
    file: str  # the PNG's name in the report folder
    draw: Callable[[Path], object]  # writes the PNG at the path it is given


def _plot(caption: str, file: str, save: Callable[..., object], data: Any, **options: Any) -> Plot:
    """A plot to draw later: ``save(data, path, **options)``, one of :mod:`chirpkit.utils.plots`."""
    return Plot(caption, file, functools.partial(save, data, **options))


@dataclass
class Section:
    title: str
    text: list[str] = field(default_factory=list)
    tables: list[tuple[str, pd.DataFrame]] = field(default_factory=list)  # shown: (caption, table)
    plots: list[Plot] = field(default_factory=list)
    csv: dict[str, pd.DataFrame] = field(default_factory=dict)  # written: file name -> table
    summary: dict[str, Any] = field(default_factory=dict)  # this section's keys of summary.json


def _md_table(df: pd.DataFrame, max_rows: int = 40) -> str:
    d = df.head(max_rows)
    cols = [str(c) for c in d.columns]

    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return "" if math.isnan(v) else f"{v:.4g}"
        return str(v).replace("|", "\\|")

    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in d.itertuples(index=False)]
    if len(df) > max_rows:
        lines.append(f"\n… {len(df) - max_rows} more rows in the CSV")
    return "\n".join(lines)


def _html_table(df: pd.DataFrame) -> Markup:
    # pandas escapes the cells and headers itself (escape=True)
    return Markup(df.head(200).to_html(index=False, na_rep="", border=0, float_format=lambda v: f"{v:.4g}"))


_TEMPLATES = jinja2.Environment(
    loader=jinja2.PackageLoader("chirpkit", "templates"),
    autoescape=jinja2.select_autoescape(enabled_extensions=("html.j2",), default=False),
    trim_blocks=True,
    lstrip_blocks=True,
    undefined=jinja2.StrictUndefined,
)
_TEMPLATES.filters.update(md_table=_md_table, html_table=_html_table)


def _render(root: Path, title: str, sections: list[Section], summary: dict[str, Any]) -> None:
    """Write the report: every section's PNGs and CSVs, ``index.html``, ``report.md``, ``summary.json``."""
    for s in sections:
        for p in s.plots:
            p.draw(root / p.file)
        for name, df in s.csv.items():
            write_csv(root / name, df, index=False)
    for template, name in (("report.html.j2", "index.html"), ("report.md.j2", "report.md")):
        write_text(root / name, _TEMPLATES.get_template(template).render(title=title, sections=sections))
    write_json(root / "summary.json", summary)


def _side_report(catalog_path: Path | None, cat: pd.DataFrame, suffix: str, attr: str) -> pd.DataFrame:
    if catalog_path is not None and catalog_path.with_suffix(suffix).is_file():
        return pd.read_csv(catalog_path.with_suffix(suffix))
    return pd.DataFrame(cat.attrs.get(attr, []))


def _balance(cat: pd.DataFrame, min_count: int) -> Section:
    counts = cat["label"].value_counts()
    n = len(counts)
    k1, k10 = max(1, math.ceil(0.01 * n)), max(1, math.ceil(0.10 * n))
    top1, bottom10 = int(counts.iloc[k1 - 1]), int(counts.iloc[-k10])
    rare = counts[counts < min_count]
    table = counts.rename_axis("class").reset_index(name="examples")
    return Section(
        "Class balance",
        [
            f"{n} classes; examples per class from {counts.iloc[-1]} to {counts.iloc[0]} "
            f"(imbalance {counts.iloc[0] / max(1, counts.iloc[-1]):.0f}×, median {int(counts.median())}).",
            f"The top 1% of classes ({k1}) have at least {top1} examples each; "
            f"the bottom 10% ({k10}) have at most {bottom10}.",
            f"{len(rare)} class(es) have fewer than min_count = {min_count} examples and would be excluded "
            f"by split: {', '.join(map(str, rare.index[:30]))}{' …' if len(rare) > 30 else ''}"
            if len(rare)
            else f"Every class has at least min_count = {min_count} examples.",
        ],
        [("examples per class", table)],
        [
            _plot(
                "examples per class (log scale)",
                "class_counts.png",
                plots.save_class_counts,
                counts,
                min_count=min_count,
            )
        ],
        {"class_counts.csv": table},
        {
            "class_balance": {
                "classes": n,
                "max": int(counts.iloc[0]),
                "min": int(counts.iloc[-1]),
                "top1pct_at_least": top1,
                "bottom10pct_at_most": bottom10,
                "below_min_count": rare.index.tolist(),
            }
        },
    )


def _recordings(cat: pd.DataFrame, files: pd.DataFrame) -> list[Section]:
    per_rec = cat.groupby("source").size()
    per_group = cat.groupby("group").size()
    rec = cat.groupby("source").agg(examples=("label", "size"), classes=("label", "nunique"))
    rec = rec.rename_axis("recording").reset_index()
    grp = (
        cat.groupby("group").agg(examples=("source", "size"), recordings=("source", "nunique")).reset_index()
    )
    groups_per_class = cat.groupby("label")["group"].nunique().sort_values()
    spans = (cat["end_s"] - cat["start_s"]).to_numpy(float)
    box = (cat["ann_end_s"] - cat["ann_start_s"]).to_numpy(float) if "ann_end_s" in cat else spans
    d = files["duration_s"]
    single = ", ".join(map(str, groups_per_class.index[groups_per_class == 1][:20]))
    return [
        Section(
            "Examples per recording and per group",
            [
                f"{len(per_rec)} recordings: {per_rec.min()}–{per_rec.max()} examples each "
                f"(median {per_rec.median():g}); "
                f"{len(per_group)} groups: {per_group.min()}–{per_group.max()} "
                f"(median {per_group.median():g}).",
                f"Groups per class: {groups_per_class.min()}–{groups_per_class.max()}; classes in a single "
                f"group (cannot be in train and test without leakage): {single or 'none'}.",
            ],
            [
                ("per recording", rec.sort_values("examples", ascending=False)),
                ("per group", grp.sort_values("examples", ascending=False)),
            ],
            [
                _plot(
                    f"examples per {what}",
                    f"per_{what}.png",
                    plots.save_bars,
                    counts,
                    title=f"examples per {what}",
                    xlabel="examples",
                )
                for what, counts in (
                    ("recording", per_rec.rename(lambda s: Path(s).name)),
                    ("group", per_group),
                )
            ],
            {"per_recording.csv": rec, "per_group.csv": grp},
        ),
        Section(
            "Durations",
            [
                f"Recordings: {d.sum() / 3600:.2f} h in all, {d.min():.2f}–{d.max():.2f} s each "
                f"(median {d.median():.2f} s).",
                f"Examples: {np.nanmin(box):.2f}–{np.nanmax(box):.2f} s (median {np.nanmedian(box):.2f} s; "
                f"{int((box < 1e-6).sum())} point annotations).",
            ],
            plots=[
                _plot(
                    "recording durations",
                    "durations.png",
                    plots.save_histogram,
                    d.to_numpy(float),
                    title="recording durations",
                    xlabel="seconds",
                    log=True,
                ),
                _plot(
                    "example durations",
                    "example_durations.png",
                    plots.save_histogram,
                    box,
                    title="example (annotation) durations",
                    xlabel="seconds",
                ),
            ],
        ),
    ]


def _formats(files: pd.DataFrame, skipped: pd.DataFrame, late_fallbacks: int) -> list[Section]:
    def show(v: Any) -> str:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return "n/a (lossy)"
        return str(int(v)) if isinstance(v, float) and v.is_integer() else str(v)

    tables = [
        (
            col.replace("_", " "),
            files[col].astype(object).map(show).value_counts().rename_axis(col).reset_index(name="files"),
        )
        for col in ("sample_rate", "channels", "bit_depth", "codec", "container", "decoder")
        if col in files
    ]
    cols = ["source", "sample_rate", "channels", "bit_depth", "codec", "container", "decoder", "duration_s"]
    pyav = int((files["decoder"] == "pyav").sum()) if "decoder" in files else 0
    late = f" ({late_fallbacks} of them have a header libsndfile reads but audio it cannot decode)."
    text = [
        f"{pyav} of {len(files)} file(s) needed the FFmpeg (PyAV) fallback because libsndfile could not read "
        f"them{late if late_fallbacks else '.'}"
        if pyav
        else f"All {len(files)} readable file(s) decode with libsndfile (no FFmpeg fallback).",
        f"{len(skipped)} file(s) could not be read at all and were skipped."
        if len(skipped)
        else "No unreadable files were reported at ingest.",
    ]
    return [
        Section("Sample rates, channels, bit depth, codecs", [], tables, csv={"files.csv": files[cols]}),
        Section(
            "Unreadable files and decoder fallbacks",
            text,
            [("unreadable files", skipped)] if len(skipped) else [],
        ),
    ]


def _anomalies(anom: pd.DataFrame) -> Section:
    if anom.empty:
        return Section("Annotation anomalies", ["No annotation anomalies were reported at ingest."])
    kinds = anom.groupby(["kind", "action"]).size().rename("count").reset_index()
    return Section(
        "Annotation anomalies",
        [f"{len(anom)} anomal{'y' if len(anom) == 1 else 'ies'} (none stopped the ingest)."],
        [("by kind", kinds), ("all", anom)],
    )


def _frequency(cat: pd.DataFrame, audits: list[FileAudit]) -> list[Section]:
    dom = pd.Series({r: hz for a in audits for r, hz in a.dominant_hz.items()}, dtype=float).dropna()
    if not len(dom):
        return []
    df = pd.DataFrame({"hz": dom, "label": cat.loc[dom.index, "label"]})
    rng = df.groupby("label")["hz"].describe(percentiles=[0.05, 0.5, 0.95])
    table = rng[["count", "5%", "50%", "95%"]].set_axis(["n", "p5_hz", "p50_hz", "p95_hz"], axis=1)
    table = table.astype({"n": int}).rename_axis("class").reset_index()
    if "low_freq_hz" in cat and cat["low_freq_hz"].notna().any():
        boxes = cat.groupby("label")[["low_freq_hz", "high_freq_hz"]].median()
        table = table.join(
            boxes.rename(columns={"low_freq_hz": "box_low_hz", "high_freq_hz": "box_high_hz"}), on="class"
        )
    band = (float(np.percentile(dom, 1)), float(np.percentile(dom, 99)))
    return [
        Section(
            "Frequency range per class",
            [
                f"98% of the {len(dom)} measured examples have their dominant frequency between "
                f"{band[0]:.1f} Hz and {band[1]:.1f} Hz (1st–99th percentile): a high-pass below "
                f"{band[0]:.0f} Hz and a mel range up to {band[1]:.0f} Hz keep almost every call.",
                "Dominant frequency: per frame, the bin that stands out most from the recording's "
                "background spectrum; the median over the most salient half of the "
                "frames of the annotation box (±0.5 s around a point, the clip otherwise). At most "
                "max_per_class examples per class are measured.",
            ],
            [("dominant frequency per class (Hz)", table)],
            [
                _plot(
                    "spectral range per class",
                    "frequency_ranges.png",
                    plots.save_frequency_ranges,
                    table.set_index("class"),
                    band=band,
                )
            ],
            {"frequency_ranges.csv": table},
            {"frequency_band_98pct_hz": [round(band[0], 1), round(band[1], 1)]},
        )
    ]


def _noise_floor(audits: list[FileAudit]) -> list[Section]:
    nf = pd.DataFrame(
        [
            {
                "recording": a.source,
                "noise_floor_db": a.noise_floor_db,
                "median_level_db": a.median_level_db,
                "digital_silence_share": round(a.digital_silence, 3),
            }
            for a in audits
            if not a.error
        ]
    )
    if not len(nf):
        return []
    series = nf.set_index("recording")["noise_floor_db"].rename(lambda s: Path(s).name)
    title = "noise floor per recording"
    plot = (
        _plot(
            "noise floor",
            "noise_floor.png",
            plots.save_bars,
            series - series.min(),
            top=80,
            xlabel="dB above the quietest",
            title=title,
        )
        if len(series) <= 80
        else _plot(
            "noise floor",
            "noise_floor.png",
            plots.save_histogram,
            series.to_numpy(),
            title=title,
            xlabel="dBFS (10th percentile of 50 ms frame levels)",
        )
    )
    return [
        Section(
            "Noise floor per recording",
            [
                f"Noise floor (10th percentile of 50 ms frame levels) from {series.min():.1f} to "
                f"{series.max():.1f} dBFS across {len(series)} recordings: a spread of "
                f"{series.max() - series.min():.1f} dB. A wide spread means the background differs "
                "between recordings (sites, dates): normalise, denoise or augment with noise."
            ],
            [("noise floor (dBFS)", nf.sort_values("noise_floor_db"))],
            [plot],
            {"noise_floor.csv": nf},
            {"noise_floor_db": {"min": round(float(series.min()), 1), "max": round(float(series.max()), 1)}},
        )
    ]


def _scan_errors(audits: list[FileAudit]) -> list[Section]:
    errors = [(a.source, a.error) for a in audits if a.error]
    if not errors:
        return []
    return [
        Section(
            "Files the audio scan could not read",
            [f"{len(errors)} file(s)"],
            [("errors", pd.DataFrame(errors, columns=["file", "reason"]))],
        )
    ]


def _duplicates(cat: pd.DataFrame, audits: list[FileAudit], threshold: float) -> pd.DataFrame:
    """Pairs of examples from different files: exact (same samples) and near (same
    time-frequency pattern); columns ``row_a, row_b, similarity, kind``."""
    exact = pd.Series({r: h for a in audits for r, h in a.exact.items()}, dtype=object)
    rows_exact = []
    for _, idx in exact.groupby(exact).groups.items():
        for a, b in itertools.pairwise(list(idx)):
            if str(cat.at[a, "source"]) != str(cat.at[b, "source"]):
                rows_exact.append((a, b, 1.0, "exact"))
    pats = [(r, p) for a in audits for r, p in a.pattern.items()]
    near: list[tuple[int, int, float]] = []
    if len(pats) > 1:
        rows_p = [r for r, _ in pats]
        near = near_duplicates(
            rows_p, np.stack([p for _, p in pats]), cat.loc[rows_p, "source"].tolist(), threshold=threshold
        )
    exact_pairs = {(a, b) for a, b, _, _ in rows_exact}
    return pd.DataFrame(
        rows_exact + [(a, b, s, "near") for a, b, s in near if (a, b) not in exact_pairs],
        columns=["row_a", "row_b", "similarity", "kind"],
    )


def _overlaps(cat: pd.DataFrame) -> Section:
    pairs: list[tuple[str, str]] = []
    calls = cat[cat["annotation"] != "background"] if "annotation" in cat else cat
    with_other = 0
    if {"ann_start_s", "ann_end_s", "annotation"} <= set(calls.columns):
        for _, f in calls.groupby("source"):
            s, e, lab = f["ann_start_s"].to_numpy(), f["ann_end_s"].to_numpy(), f["label"].to_numpy()
            ids = f["annotation"].to_numpy()
            for ws, we, own, aid in zip(f["start_s"], f["end_s"], lab, ids, strict=True):
                hit = (e >= ws) & (s <= we) & (ids != aid)
                others = lab[hit]
                with_other += bool(len(others))
                pairs += [(own, str(o)) for o in others]
    else:
        for labs in calls["labels"]:
            with_other += len(labs) > 1
            pairs += [(labs[0], str(o)) for o in labs[1:]]
    share = with_other / max(1, len(calls))
    summary = {"overlap_share": round(share, 4)}
    if not pairs:
        return Section(
            "Overlapping calls",
            [f"No example shares its window with another annotation ({len(calls)} examples)."],
            summary=summary,
        )
    p = pd.DataFrame(pairs, columns=["class", "other"]).value_counts().rename("windows").reset_index()
    top = p.groupby("class")["windows"].sum().sort_values(ascending=False).index[:30]
    matrix = (
        pd.crosstab(
            pd.Categorical(p["class"]), pd.Categorical(p["other"]), values=p["windows"], aggfunc="sum"
        )
        .reindex(index=top, columns=top)
        .fillna(0)
    )
    return Section(
        "Overlapping calls",
        [
            f"{with_other} of {len(calls)} examples ({100 * share:.1f}%) share their window with at least "
            "one other annotation; the table counts windows by (annotated class, other class).",
        ],
        [("overlaps by class pair", p)],
        [
            _plot(
                "overlaps between the most involved classes",
                "overlaps.png",
                plots.save_heatmap,
                matrix,
                title="windows holding another class (top classes)",
            )
        ],
        {"overlaps.csv": p},
        summary,
    )


def _leakage(cat: pd.DataFrame, dup: pd.DataFrame | None) -> Section:
    sec = Section("Duplicates and leakage")
    if dup is not None:  # the audio was scanned
        kinds = dup["kind"].value_counts()
        sec.summary["duplicates"] = {"exact": int(kinds.get("exact", 0)), "near": int(kinds.get("near", 0))}
    d = pd.DataFrame() if dup is None else dup.copy()
    if len(d):
        for side in ("a", "b"):
            r = d[f"row_{side}"]
            d[f"file_{side}"] = cat.loc[r, "source"].map(lambda s: Path(s).name).to_numpy()
            d[f"group_{side}"] = cat.loc[r, "group"].to_numpy()
            d[f"start_{side}"] = cat.loc[r, "start_s"].to_numpy()
            if "split" in cat:
                d[f"split_{side}"] = cat.loc[r, "split"].to_numpy()
        cross_group = d[d["group_a"] != d["group_b"]]
        sec.text.append(
            f"{len(d)} duplicate pair(s) of examples from different files ({(d['kind'] == 'exact').sum()} "
            f"exact, {(d['kind'] == 'near').sum()} near-identical); {len(cross_group)} of them across "
            "groups, which a grouped split cannot keep together."
        )
        sec.csv["duplicates.csv"] = d
        sec.tables.append(("duplicate pairs", d))
    else:
        sec.text.append("No identical or near-identical audio across different files.")
    if "split" not in cat:
        sec.text.append(
            "The catalog has no split yet: run `chirpkit split` and inspect again to audit leakage."
        )
        return sec
    kept = cat[cat["split"] != "excluded"]
    g = kept.groupby("group")["split"].nunique()
    f = kept.groupby("source")["split"].nunique()
    crossing = d[d["split_a"] != d["split_b"]] if len(d) else d
    n_dup_cross = len(crossing)
    sec.summary["leakage"] = {
        "groups_across_splits": int((g > 1).sum()),
        "files_across_splits": int((f > 1).sum()),
        "duplicates_across_splits": n_dup_cross,
    }
    sec.text.append(
        f"Split audit: {(g > 1).sum()} group(s) and {(f > 1).sum()} file(s) appear in more than one "
        f"split; {n_dup_cross} duplicate pair(s) cross splits."
    )
    if (f > 1).any():
        sec.tables.append(
            ("files in several splits", f[f > 1].rename("splits").rename_axis("file").reset_index())
        )
    if n_dup_cross:
        sec.tables.append(("duplicates across splits", crossing))
    return sec


def inspect(
    catalog: pd.DataFrame | str | os.PathLike[str],
    *,
    out: str | os.PathLike[str],
    min_count: int = 10,
    audio: bool = True,
    max_per_class: int = 200,
    max_fingerprints: int = 20000,
    duplicate_threshold: float = 0.98,
    workers: int = 4,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Write the dataset report for a catalog to ``out`` (``index.html``, ``report.md``, PNGs, CSVs,
    ``summary.json``).

    Args:
        catalog: a catalog frame or path (the ``.skipped.csv`` / ``.anomalies.csv`` beside it are read).
        min_count: rare-class threshold marked on the class plot (``split.min_count``).
        audio: scan the audio (frequency ranges, noise floor, duplicates); ``False`` for a quick report.
        max_per_class: examples measured per class for the frequency range.
        max_fingerprints: examples fingerprinted for the duplicate audit (a seeded sample beyond).
        duplicate_threshold: cosine similarity of fingerprints from which two examples are near-identical.
            0.98 catches re-encoded (MP3, Vorbis), resampled or re-levelled copies of windows that
            hold a call (measured 1.000) and leaves different calls of a stereotyped species alone
            (at most 0.934 between Screaming Piha recordings). Not caught: copies shifted in time
            (e.g. by an MP3 decoder delay) and lossy copies of noise-only windows (0.92–0.95).

    Returns:
        The summary (also ``summary.json``).
    """
    path = None if isinstance(catalog, pd.DataFrame) else Path(catalog)
    cat = read_catalog(catalog) if path is not None else validate_catalog(catalog)  # type: ignore[arg-type]
    if isinstance(catalog, pd.DataFrame):
        cat.attrs.update(catalog.attrs)
    if cat.empty:
        raise DataError(
            f"catalog {path if path is not None else '(data frame)'} has no rows: nothing to inspect; "
            "re-run `chirpkit ingest` (its skip report says why files were left out)"
        )
    root = output_dir(out, "report folder")
    files = cat.drop_duplicates("source")
    skipped = _side_report(path, cat, ".skipped.csv", "skipped")
    anomalies = _side_report(path, cat, ".anomalies.csv", "anomalies")
    audits = None
    late_fallbacks = 0
    if audio:
        audits = audit_files(
            cat,
            max_per_class=max_per_class,
            max_fingerprints=max_fingerprints,
            seed=seed,
            workers=workers,
            progress=progress,
        )
        # a header libsndfile reads does not mean its audio decodes (broken FLAC frames): count
        # the files whose audio needed FFmpeg during the scan too
        late = files["source"].isin({a.source for a in audits if a.decoder == "pyav"})
        if "decoder" in files:
            late_fallbacks = int((late & (files["decoder"] != "pyav")).sum())
            files = files.assign(decoder=files["decoder"].mask(late, "pyav"))
    summary: dict[str, Any] = {
        "catalog": str(path) if path else None,
        "examples": len(cat),
        "recordings": len(files),
        "classes": int(cat["label"].nunique()),
        "groups": int(cat["group"].nunique()),
        "hours": round(float(files["duration_s"].sum()) / 3600, 3),
        "unreadable_files": len(skipped),
        "anomalies": len(anomalies),
        "ffmpeg_fallbacks": int((files["decoder"] == "pyav").sum()) if "decoder" in files else 0,
        "ffmpeg_fallbacks_at_decode": late_fallbacks,
    }
    overview = (
        f"{len(cat)} examples from {len(files)} recordings ({summary['hours']:.2f} h), "
        f"{summary['classes']} classes, {summary['groups']} groups."
    )
    sections = [
        Section("Overview", [overview]),
        _balance(cat, min_count),
        *_recordings(cat, files),
        *_formats(files, skipped, late_fallbacks),
        _anomalies(anomalies),
    ]
    dup = None
    if audits is not None:
        sections += _frequency(cat, audits) + _noise_floor(audits) + _scan_errors(audits)
        dup = _duplicates(cat, audits, duplicate_threshold)
    sections += [_overlaps(cat), _leakage(cat, dup)]
    for s in sections:
        summary.update(s.summary)
    _render(root, f"chirpkit dataset report: {path.name if path else 'catalog'}", sections, summary)
    log.info("dataset report: %s (%d sections)", root / "index.html", len(sections))
    return summary
