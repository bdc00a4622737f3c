"""``chirpkit inspect``: the dataset report (HTML + markdown + PNG plots + CSV tables).

Sections: overview; class balance (log scale, rare-class threshold, top-1% / bottom-10% figures);
examples per recording and per group; durations; sample rates / channels / bit depth / codecs /
decoders; unreadable files and FFmpeg fallbacks; annotation anomalies; per-class frequency range
(dominant frequency, 5th–95th percentile, and the band holding 98% of calls); noise floor per
recording; overlapping calls by class pair; duplicate and leakage audit (identical or
near-identical audio across files or groups and, given a split, any group, file or duplicate that
crosses splits).
"""

from __future__ import annotations

import html
import itertools
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from chirpkit import plots
from chirpkit._util import atomic_path, output_dir, write_json, write_text
from chirpkit.data.audit import FileAudit, audit_files, near_duplicates
from chirpkit.data.catalog import read_catalog, validate_catalog
from chirpkit.errors import DataError

__all__ = ["inspect"]

log = logging.getLogger("chirpkit")


@dataclass
class Section:
    title: str
    text: list[str] = field(default_factory=list)
    tables: list[tuple[str, pd.DataFrame]] = field(default_factory=list)
    images: list[tuple[str, str]] = field(default_factory=list)


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


def _render(sections: list[Section], title: str) -> tuple[str, str]:
    md = [f"# {title}\n"]
    body = [f"<h1>{html.escape(title)}</h1>", "<nav><ol>"]
    body += [f'<li><a href="#s{i}">{html.escape(s.title)}</a></li>' for i, s in enumerate(sections)]
    body.append("</ol></nav>")
    for i, s in enumerate(sections):
        md.append(f"## {s.title}\n")
        body.append(f'<section id="s{i}"><h2>{html.escape(s.title)}</h2>')
        for t in s.text:
            md.append(t + "\n")
            body.append(f"<p>{html.escape(t)}</p>")
        for cap, img in s.images:
            md.append(f"![{cap}]({img})\n")
            body.append(
                f'<figure><img src="{html.escape(img)}" alt="{html.escape(cap)}">'
                f"<figcaption>{html.escape(cap)}</figcaption></figure>"
            )
        for cap, df in s.tables:
            md.append(f"**{cap}**\n\n{_md_table(df)}\n")
            body.append(
                f"<h3>{html.escape(cap)}</h3>"
                + df.head(200).to_html(index=False, na_rep="", border=0, float_format=lambda v: f"{v:.4g}")
            )
        body.append("</section>")
    style = (
        "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
        "table{border-collapse:collapse;font-size:13px;margin:.5em 0 1.5em}"
        "td,th{border-bottom:1px solid #ddd;padding:3px 8px;text-align:left}th{background:#f4f4f4}"
        "img{max-width:100%;border:1px solid #eee}figcaption{font-size:12px;color:#666}"
        "section{margin-bottom:2.5em}"
    )
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n"
    )
    return page, "\n".join(md)


def _save_csv(df: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)


def _side_report(catalog_path: Path | None, cat: pd.DataFrame, suffix: str, attr: str) -> pd.DataFrame:
    if catalog_path is not None and catalog_path.with_suffix(suffix).is_file():
        return pd.read_csv(catalog_path.with_suffix(suffix))
    return pd.DataFrame(cat.attrs.get(attr, []))


def _balance(cat: pd.DataFrame, out: Path, min_count: int, summary: dict[str, Any]) -> Section:
    counts = cat["label"].value_counts()
    n = len(counts)
    k1, k10 = max(1, math.ceil(0.01 * n)), max(1, math.ceil(0.10 * n))
    top1, bottom10 = int(counts.iloc[k1 - 1]), int(counts.iloc[-k10])
    rare = counts[counts < min_count]
    summary["class_balance"] = {
        "classes": n,
        "max": int(counts.iloc[0]),
        "min": int(counts.iloc[-1]),
        "top1pct_at_least": top1,
        "bottom10pct_at_most": bottom10,
        "below_min_count": rare.index.tolist(),
    }
    plots.save_class_counts(counts, out / "class_counts.png", min_count=min_count)
    table = counts.rename_axis("class").reset_index(name="examples")
    _save_csv(table, out / "class_counts.csv")
    return Section(
        "Class balance",
        [
            f"{n} classes; examples per class from {counts.iloc[-1]} to {counts.iloc[0]} "
            f"(imbalance {counts.iloc[0] / max(1, counts.iloc[-1]):.0f}×, median {int(counts.median())}).",
            f"The top 1% of classes ({k1}) have at least {top1} examples each; "
            f"the bottom 10% ({k10}) have at "
            f"most {bottom10}.",
            f"{len(rare)} class(es) have fewer than min_count = {min_count} examples "
            "and would be excluded by "
            f"split: {', '.join(map(str, rare.index[:30]))}{' …' if len(rare) > 30 else ''}"
            if len(rare)
            else f"Every class has at least min_count = {min_count} examples.",
        ],
        [("examples per class", table)],
        [("examples per class (log scale)", "class_counts.png")],
    )


def _recordings(cat: pd.DataFrame, files: pd.DataFrame, out: Path) -> list[Section]:
    per_rec = cat.groupby("source").size()
    per_group = cat.groupby("group").size()
    plots.save_bars(
        per_rec.rename(lambda s: Path(s).name),
        out / "per_recording.png",
        title="examples per recording",
        xlabel="examples",
    )
    plots.save_bars(per_group, out / "per_group.png", title="examples per group", xlabel="examples")
    rec = pd.DataFrame(
        {
            "recording": per_rec.index,
            "examples": per_rec.to_numpy(),
            "classes": cat.groupby("source")["label"].nunique().to_numpy(),
        }
    )
    _save_csv(rec, out / "per_recording.csv")
    grp = pd.DataFrame(
        {
            "group": per_group.index,
            "examples": per_group.to_numpy(),
            "recordings": cat.groupby("group")["source"].nunique().to_numpy(),
        }
    )
    _save_csv(grp, out / "per_group.csv")
    groups_per_class = cat.groupby("label")["group"].nunique().sort_values()
    plots.save_histogram(
        files["duration_s"].to_numpy(float),
        out / "durations.png",
        title="recording durations",
        xlabel="seconds",
        log=True,
    )
    spans = (cat["end_s"] - cat["start_s"]).to_numpy(float)
    box = (cat["ann_end_s"] - cat["ann_start_s"]).to_numpy(float) if "ann_end_s" in cat else spans
    plots.save_histogram(
        box, out / "example_durations.png", title="example (annotation) durations", xlabel="seconds"
    )
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
            [("examples per recording", "per_recording.png"), ("examples per group", "per_group.png")],
        ),
        Section(
            "Durations",
            [
                f"Recordings: {d.sum() / 3600:.2f} h in all, {d.min():.2f}–{d.max():.2f} s each "
                f"(median {d.median():.2f} s).",
                f"Examples: {np.nanmin(box):.2f}–{np.nanmax(box):.2f} s (median {np.nanmedian(box):.2f} s; "
                f"{int((box < 1e-6).sum())} point annotations).",
            ],
            [],
            [("recording durations", "durations.png"), ("example durations", "example_durations.png")],
        ),
    ]


def _formats(files: pd.DataFrame, skipped: pd.DataFrame, out: Path, late_fallbacks: int = 0) -> list[Section]:
    tables = []

    def show(v: Any) -> str:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return "n/a (lossy)"
        return str(int(v)) if isinstance(v, float) and v.is_integer() else str(v)

    for col in ("sample_rate", "channels", "bit_depth", "codec", "container", "decoder"):
        if col in files:
            t = files[col].astype(object).map(show).value_counts()
            tables.append((col.replace("_", " "), t.rename_axis(col).reset_index(name="files")))
    fmt = files[
        ["source", "sample_rate", "channels", "bit_depth", "codec", "container", "decoder", "duration_s"]
    ]
    _save_csv(fmt, out / "files.csv")
    pyav = int((files["decoder"] == "pyav").sum()) if "decoder" in files else 0
    text = [
        f"{pyav} of {len(files)} file(s) needed the FFmpeg (PyAV) fallback because libsndfile could not read "
        "them"
        + (
            f" ({late_fallbacks} of them have a header libsndfile reads but audio it cannot decode)."
            if late_fallbacks
            else "."
        )
        if pyav
        else f"All {len(files)} readable file(s) decode with libsndfile (no FFmpeg fallback).",
        f"{len(skipped)} file(s) could not be read at all and were skipped."
        if len(skipped)
        else "No unreadable files were reported at ingest.",
    ]
    sec2 = Section(
        "Unreadable files and decoder fallbacks",
        text,
        [("unreadable files", skipped)] if len(skipped) else [],
    )
    return [Section("Sample rates, channels, bit depth, codecs", [], tables), sec2]


def _anomalies(anom: pd.DataFrame) -> Section:
    if anom.empty:
        return Section("Annotation anomalies", ["No annotation anomalies were reported at ingest."])
    kinds = anom.groupby(["kind", "action"]).size().rename("count").reset_index()
    return Section(
        "Annotation anomalies",
        [f"{len(anom)} anomal{'y' if len(anom) == 1 else 'ies'} (none stopped the ingest)."],
        [("by kind", kinds), ("all", anom)],
    )


def _overlaps(cat: pd.DataFrame, out: Path, summary: dict[str, Any]) -> Section:
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
    summary["overlap_share"] = round(share, 4)
    if not pairs:
        return Section(
            "Overlapping calls",
            [f"No example shares its window with another annotation ({len(calls)} examples)."],
        )
    p = pd.DataFrame(pairs, columns=["class", "other"]).value_counts().rename("windows").reset_index()
    _save_csv(p, out / "overlaps.csv")
    top = p.groupby("class")["windows"].sum().sort_values(ascending=False).index[:30]
    matrix = (
        pd.crosstab(
            pd.Categorical(p["class"]), pd.Categorical(p["other"]), values=p["windows"], aggfunc="sum"
        )
        .reindex(index=top, columns=top)
        .fillna(0)
    )
    plots.save_heatmap(matrix, out / "overlaps.png", title="windows holding another class (top classes)")
    return Section(
        "Overlapping calls",
        [
            f"{with_other} of {len(calls)} examples ({100 * share:.1f}%) share their window "
            "with at least one other "
            "annotation; the table counts windows by (annotated class, other class).",
        ],
        [("overlaps by class pair", p)],
        [("overlaps between the most involved classes", "overlaps.png")],
    )


def _audio_sections(
    cat: pd.DataFrame, audits: list[FileAudit], out: Path, threshold: float, summary: dict[str, Any]
) -> tuple[list[Section], pd.DataFrame]:
    errors = [(a.source, a.error) for a in audits if a.error]
    dom = pd.Series({r: hz for a in audits for r, hz in a.dominant_hz.items()}, dtype=float).dropna()
    sections = []
    if len(dom):
        df = pd.DataFrame({"hz": dom, "label": cat.loc[dom.index, "label"]})
        rng = df.groupby("label")["hz"].describe(percentiles=[0.05, 0.5, 0.95])
        table = pd.DataFrame(
            {
                "class": rng.index,
                "n": rng["count"].astype(int),
                "p5_hz": rng["5%"],
                "p50_hz": rng["50%"],
                "p95_hz": rng["95%"],
            }
        )
        if "low_freq_hz" in cat and cat["low_freq_hz"].notna().any():
            boxes = cat.groupby("label")[["low_freq_hz", "high_freq_hz"]].median()
            table = table.join(
                boxes.rename(columns={"low_freq_hz": "box_low_hz", "high_freq_hz": "box_high_hz"}), on="class"
            )
        band = (float(np.percentile(dom, 1)), float(np.percentile(dom, 99)))
        summary["frequency_band_98pct_hz"] = [round(band[0], 1), round(band[1], 1)]
        _save_csv(table, out / "frequency_ranges.csv")
        plots.save_frequency_ranges(table.set_index("class"), out / "frequency_ranges.png", band=band)
        sections.append(
            Section(
                "Frequency range per class",
                [
                    f"98% of the {len(dom)} measured examples have their dominant frequency between "
                    f"{band[0]:.1f} Hz and {band[1]:.1f} Hz (1st–99th percentile): a high-pass below "
                    f"{band[0]:.0f} Hz and a mel range up to "
                    f"{band[1]:.0f} Hz keep almost every call.",
                    "Dominant frequency: per frame, the bin that stands out most from the recording's "
                    "background spectrum; the median over the most salient half of the "
                    "frames of the annotation box (±0.5 s around a point, the clip otherwise). At most "
                    "max_per_class examples per class are measured.",
                ],
                [("dominant frequency per class (Hz)", table)],
                [("spectral range per class", "frequency_ranges.png")],
            )
        )
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
    if len(nf):
        _save_csv(nf, out / "noise_floor.csv")
        series = nf.set_index("recording")["noise_floor_db"].rename(lambda s: Path(s).name)
        if len(series) <= 80:
            plots.save_bars(
                series - series.min(),
                out / "noise_floor.png",
                top=80,
                xlabel="dB above the quietest",
                title="noise floor per recording",
            )
        else:
            plots.save_histogram(
                series.to_numpy(),
                out / "noise_floor.png",
                title="noise floor per recording",
                xlabel="dBFS (10th percentile of 50 ms frame levels)",
            )
        summary["noise_floor_db"] = {
            "min": round(float(series.min()), 1),
            "max": round(float(series.max()), 1),
        }
        sections.append(
            Section(
                "Noise floor per recording",
                [
                    f"Noise floor (10th percentile of 50 ms frame levels) from {series.min():.1f} to "
                    f"{series.max():.1f} dBFS across {len(series)} recordings: a spread of "
                    f"{series.max() - series.min():.1f} dB. A wide spread means the background differs "
                    "between recordings (sites, dates): normalise, denoise or augment with noise."
                ],
                [("noise floor (dBFS)", nf.sort_values("noise_floor_db"))],
                [("noise floor", "noise_floor.png")],
            )
        )
    if errors:
        sections.append(
            Section(
                "Files the audio scan could not read",
                [f"{len(errors)} file(s)"],
                [("errors", pd.DataFrame(errors, columns=["file", "reason"]))],
            )
        )
    # duplicates: exact (same samples) and near (same time-frequency pattern), across different files
    exact = pd.Series({r: h for a in audits for r, h in a.exact.items()}, dtype=object)
    rows_exact = []
    for _, idx in exact.groupby(exact).groups.items():
        ids = list(idx)
        for a, b in itertools.pairwise(ids):
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
    dup = pd.DataFrame(
        rows_exact + [(a, b, s, "near") for a, b, s in near if (a, b) not in exact_pairs],
        columns=["row_a", "row_b", "similarity", "kind"],
    )
    summary["duplicates"] = {
        "exact": len(rows_exact),
        "near": int((dup["kind"] == "near").sum()) if len(dup) else 0,
    }
    return sections, dup


def _leakage(cat: pd.DataFrame, dup: pd.DataFrame | None, out: Path, summary: dict[str, Any]) -> Section:
    text, tables = [], []
    if dup is not None and len(dup):
        d = dup.copy()
        for side in ("a", "b"):
            r = d[f"row_{side}"]
            d[f"file_{side}"] = cat.loc[r, "source"].map(lambda s: Path(s).name).to_numpy()
            d[f"group_{side}"] = cat.loc[r, "group"].to_numpy()
            d[f"start_{side}"] = cat.loc[r, "start_s"].to_numpy()
            if "split" in cat:
                d[f"split_{side}"] = cat.loc[r, "split"].to_numpy()
        cross_group = d[d["group_a"] != d["group_b"]]
        text.append(
            f"{len(d)} duplicate pair(s) of examples from different files ({(d['kind'] == 'exact').sum()} "
            f"exact, {(d['kind'] == 'near').sum()} near-identical); "
            f"{len(cross_group)} of them across groups, "
            "which a grouped split cannot keep together."
        )
        _save_csv(d, out / "duplicates.csv")
        tables.append(("duplicate pairs", d))
    else:
        text.append("No identical or near-identical audio across different files.")
    if "split" in cat:
        kept = cat[cat["split"] != "excluded"]
        g = kept.groupby("group")["split"].nunique()
        f = kept.groupby("source")["split"].nunique()
        n_dup_cross = int((d["split_a"] != d["split_b"]).sum()) if dup is not None and len(dup) else 0
        summary["leakage"] = {
            "groups_across_splits": int((g > 1).sum()),
            "files_across_splits": int((f > 1).sum()),
            "duplicates_across_splits": n_dup_cross,
        }
        text.append(
            f"Split audit: {(g > 1).sum()} group(s) and {(f > 1).sum()} file(s) appear in more than one "
            f"split; {n_dup_cross} duplicate pair(s) cross splits."
        )
        if (f > 1).any():
            tables.append(
                ("files in several splits", f[f > 1].rename("splits").rename_axis("file").reset_index())
            )
        if n_dup_cross:
            tables.append(("duplicates across splits", d[d["split_a"] != d["split_b"]]))
    else:
        text.append("The catalog has no split yet: run `chirpkit split` and inspect again to audit leakage.")
    return Section("Duplicates and leakage", text, tables)


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
    sections = [
        Section(
            "Overview",
            [
                f"{len(cat)} examples from {len(files)} recordings ({summary['hours']:.2f} h), "
                f"{summary['classes']} classes, {summary['groups']} groups.",
            ],
        )
    ]
    sections.append(_balance(cat, root, min_count, summary))
    sections += _recordings(cat, files, root)
    sections += _formats(files, skipped, root, late_fallbacks)
    sections.append(_anomalies(anomalies))
    dup = None
    if audits is not None:
        audio_secs, dup = _audio_sections(cat, audits, root, duplicate_threshold, summary)
        sections += audio_secs
    sections.append(_overlaps(cat, root, summary))
    sections.append(_leakage(cat, dup, root, summary))
    page, md = _render(sections, f"chirpkit dataset report: {path.name if path else 'catalog'}")
    write_text(root / "index.html", page)
    write_text(root / "report.md", md)
    write_json(root / "summary.json", summary)
    log.info("dataset report: %s (%d sections)", root / "index.html", len(sections))
    return summary
