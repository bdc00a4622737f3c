"""The dataset report (inspect) on generated soundscapes with known answers."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from chirpkit.config import SplitConfig
from chirpkit.data.audit import dominant_frequency, fingerprint
from chirpkit.data.ingest import ingest
from chirpkit.data.report import inspect
from chirpkit.data.split import split
from chirpkit.synth import colored_noise
from tests.conftest import broken_flac, tone, write


def test_dominant_frequency_ignores_rumble_when_given_the_background() -> None:
    sr, rng = 32000, np.random.default_rng(0)
    # a generator hum at 120 Hz, ten times the call's amplitude, over brown noise
    rumble = tone(120, 6.0, sr, amp=0.2) + colored_noise(sr * 6, rng, exponent=2.0) * 0.05
    call = rumble[sr : 2 * sr].copy()
    call += tone(3000, 1.0, sr, amp=0.02)
    from chirpkit.data.audit import background_spectrum

    assert dominant_frequency(call, sr) < 500  # the loudest bin is the hum
    assert dominant_frequency(
        call, sr, background=background_spectrum(rumble[3 * sr :], sr)
    ) == pytest.approx(3000, rel=0.02)


def test_fingerprint_matches_copies_not_different_calls() -> None:
    sr, rng = 16000, np.random.default_rng(1)
    y = np.zeros(sr * 3, np.float32)
    y[4000:12000] = tone(2000, 0.5, sr) * np.hanning(8000)
    y += 0.001 * rng.standard_normal(y.size).astype(np.float32)
    exact, p = fingerprint(y, sr)
    assert p is not None
    louder_padded = np.concatenate([np.zeros(3000, np.float32), 0.5 * y])  # gain + extra leading silence
    assert float(p @ fingerprint(louder_padded, sr)[1]) > 0.99
    assert fingerprint(y.copy(), sr)[0] == exact
    other = np.zeros_like(y)
    other[2000:10000] = tone(4000, 0.5, sr) * np.hanning(8000)
    assert float(p @ fingerprint(other, sr)[1]) < 0.9
    assert fingerprint(np.zeros(sr, np.float32), sr)[1] is None


# -- the report's outputs, pinned ------------------------------------------------------------------
# Every file name, the summary, the markdown, the HTML's structure and text, and every CSV, as the
# report wrote them on these fixtures (tests/data/report/*.json); floats compared to 1e-4 relative
# and written with their decimals masked in texts, so that a last-bit change in an FFT does not
# fail, while any changed word, section, table, column, count or key does.
# After an intended change of the report: CHIRPKIT_UPDATE_SNAPSHOTS=1 pytest tests/test_report.py
SNAPSHOTS = Path(__file__).parent / "data" / "report"
_FLOAT = re.compile(r"-?\d+\.\d+(?:e[+-]?\d+)?")


class _Tokens(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tokens: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tokens.append(f"<{tag} " + " ".join(f"{k}={v}" for k, v in sorted(attrs)) + ">")

    def handle_endtag(self, tag: str) -> None:
        self.tokens.append(f"</{tag}>")

    def handle_data(self, data: str) -> None:
        if data.strip():
            self.tokens.append(" ".join(data.split()))


def _outputs(out: Path, tmp_root: Path) -> dict[str, Any]:
    def clean(text: str) -> str:
        return re.sub(re.escape(str(tmp_root)) + r"/[^/\s,\"']*", "<tmp>", text)

    parser = _Tokens()
    parser.feed(clean((out / "index.html").read_text()))
    return {
        "files": sorted(p.name for p in out.iterdir()),
        "summary": json.loads(clean((out / "summary.json").read_text())),
        "markdown": _FLOAT.sub("<f>", clean((out / "report.md").read_text())),
        "html": [_FLOAT.sub("<f>", t) for t in parser.tokens],
        "csv": {p.name: clean(p.read_text()) for p in sorted(out.glob("*.csv"))},
    }


def _approx(value: Any) -> Any:
    if isinstance(value, float):
        return pytest.approx(value, rel=1e-4, abs=1e-9)
    if isinstance(value, dict):
        return {k: _approx(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_approx(v) for v in value]
    return value


def assert_outputs_pinned(name: str, out: Path, tmp_root: Path) -> None:
    got = _outputs(out, tmp_root)
    path = SNAPSHOTS / f"{name}.json"
    if os.environ.get("CHIRPKIT_UPDATE_SNAPSHOTS"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(got, indent=1, ensure_ascii=False) + "\n")
    want = json.loads(path.read_text())
    assert got["files"] == want["files"]
    assert got["summary"] == _approx(want["summary"])
    assert got["markdown"] == want["markdown"]
    assert got["html"] == want["html"]
    assert sorted(got["csv"]) == sorted(want["csv"])
    for csv, text in want["csv"].items():
        a, b = pd.read_csv(io.StringIO(got["csv"][csv])), pd.read_csv(io.StringIO(text))
        pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-4, obj=csv)


@pytest.fixture
def report_catalog(soundscapes: Path) -> Path:
    audio = soundscapes / "audio"
    y, sr = sf.read(audio / "siteA_day1.flac", dtype="float32")
    noisy = y + 0.05 * np.random.default_rng(3).standard_normal(y.size).astype(np.float32)
    sf.write(audio / "siteE_noisy.flac", noisy, sr)
    table = pd.read_csv(soundscapes / "annotations.csv")
    extra = table[table["Filename"] == "siteA_day1.flac"].assign(Filename="siteE_noisy.flac")
    pd.concat([table, extra]).to_csv(soundscapes / "annotations.csv", index=False)
    out = soundscapes / "catalog.parquet"
    ingest(
        annotations=soundscapes / "annotations.csv",
        audio_dir=audio,
        out=out,
        background=4,
        group_by="regex:^(site[A-E])_",
        progress=False,
    )
    split(out, out=out, config=SplitConfig(min_count=0, val_fraction=0.0, test_fraction=0.3, seed=2))
    return out


def test_inspect_writes_every_section(
    report_catalog: Path, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    out = tmp_path / "report"
    s = inspect(report_catalog, out=out, min_count=10, progress=False)
    for name in (
        "index.html",
        "report.md",
        "summary.json",
        "class_counts.png",
        "per_recording.png",
        "per_group.png",
        "durations.png",
        "frequency_ranges.png",
        "noise_floor.png",
        "overlaps.png",
        "frequency_ranges.csv",
        "noise_floor.csv",
        "files.csv",
        "class_counts.csv",
        "overlaps.csv",
    ):
        assert (out / name).is_file(), name
    page = (out / "index.html").read_text()
    for title in (
        "Class balance",
        "Examples per recording and per group",
        "Durations",
        "Sample rates",
        "Unreadable files and decoder fallbacks",
        "Annotation anomalies",
        "Frequency range per class",
        "Noise floor per recording",
        "Overlapping calls",
        "Duplicates and leakage",
    ):
        assert title in page, title
    assert json.loads((out / "summary.json").read_text()) == json.loads(json.dumps(s))
    freq = pd.read_csv(out / "frequency_ranges.csv").set_index("class")
    assert freq.loc["lowbird", "p50_hz"] == pytest.approx(1000, rel=0.05)
    assert freq.loc["highbird", "p50_hz"] == pytest.approx(3000, rel=0.05)
    assert "noise" not in freq.index  # background windows are not calls
    lo, hi = s["frequency_band_98pct_hz"]
    assert lo <= 1050 and hi >= 2950  # the band holds both call types
    nf = (
        pd.read_csv(out / "noise_floor.csv")
        .set_index("recording")["noise_floor_db"]
        .rename(lambda p: Path(p).name)
    )
    assert nf["siteE_noisy.flac"] > nf["siteA_day1.flac"] + 10
    assert s["unreadable_files"] == 1 and s["anomalies"] >= 9
    assert s["class_balance"]["below_min_count"]  # every class here is rare
    overlaps = pd.read_csv(out / "overlaps.csv")
    assert ((overlaps["class"] == "highbird") & (overlaps["other"] == "lowbird")).any()
    assert s["leakage"]["groups_across_splits"] == 0 and s["leakage"]["files_across_splits"] == 0
    assert_outputs_pinned("every_section", out, tmp_path_factory.getbasetemp())


def test_duplicate_and_leakage_audit(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Copies (exact, Vorbis re-encode) are found across groups and splits; independent calls of the
    same types at the same times are not."""
    from chirpkit.synth import make_call, mix_at_snr

    sr, audio = 22050, tmp_path / "audio"
    audio.mkdir()
    rows = []
    for site, seed in (("siteA", 1), ("siteB", 2), ("siteF", 3), ("siteG", 4)):
        rng = np.random.default_rng(seed)
        y = colored_noise(sr * 30, rng, exponent=1.0) * 0.01
        for k, t in enumerate((3.0, 9.0, 15.0, 21.0)):
            kind = ("up_sweep", "trill")[k % 2]
            call = make_call(kind, rng, sample_rate=sr, pitch=rng.uniform(0.9, 1.1))
            mix_at_snr(y, call, int(t * sr), 15.0)
            rows.append(
                {
                    "Filename": f"{site}.flac",
                    "Start Time (s)": t + 0.2,
                    "End Time (s)": t + 0.2,
                    "Species eBird Code": kind,
                }
            )
        sf.write(audio / f"{site}.flac", y, sr)
    shutil.copy(audio / "siteA.flac", audio / "siteC.flac")
    a, _ = sf.read(audio / "siteA.flac", dtype="float32")
    sf.write(audio / "siteD.ogg", a, sr)
    a_rows = [r for r in rows if r["Filename"] == "siteA.flac"]
    rows += [{**r, "Filename": "siteC.flac"} for r in a_rows] + [
        {**r, "Filename": "siteD.ogg"} for r in a_rows
    ]
    pd.DataFrame(rows).to_csv(tmp_path / "ann.csv", index=False)
    cat = ingest(annotations=tmp_path / "ann.csv", audio_dir=audio, progress=False)
    cat = split(cat, config=SplitConfig(min_count=0, val_fraction=0.0, test_fraction=0.4, seed=0))
    s = inspect(cat, out=tmp_path / "r", progress=False)
    dup = pd.read_csv(tmp_path / "r" / "duplicates.csv")
    pairs = {frozenset((a, b)) for a, b in zip(dup["file_a"], dup["file_b"], strict=True)}
    assert pairs == {
        frozenset(p)
        for p in (("siteA.flac", "siteC.flac"), ("siteA.flac", "siteD.ogg"), ("siteC.flac", "siteD.ogg"))
    }
    assert s["duplicates"]["exact"] == 4  # the four windows of the bit-identical copy
    assert s["leakage"]["duplicates_across_splits"] == int((dup["split_a"] != dup["split_b"]).sum())
    assert_outputs_pinned("duplicates", tmp_path / "r", tmp_path_factory.getbasetemp())


def test_quick_report_without_audio(
    tiny_folder: Path, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    cat = ingest(tiny_folder, progress=False)
    s = inspect(cat, out=tmp_path / "r", audio=False, progress=False)
    assert s["classes"] == 3 and "frequency_band_98pct_hz" not in s
    assert "no split yet" in (tmp_path / "r" / "report.md").read_text()
    assert_outputs_pinned("quick", tmp_path / "r", tmp_path_factory.getbasetemp())


def test_inspect_counts_flacs_that_need_ffmpeg_at_decode_time(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    broken_flac(tmp_path / "data" / "bird" / "a.flac", seed=1)
    broken_flac(tmp_path / "data" / "noise" / "b.flac", seed=2)
    sf.write(str(tmp_path / "data" / "noise" / "c.flac"), tone(500, 5.0, 16000), 16000)
    cat = ingest(tmp_path / "data", progress=False)
    assert (cat.drop_duplicates("source")["decoder"] == "soundfile").all()  # headers all read
    summary = inspect(cat, out=tmp_path / "r", min_count=1, progress=False)
    assert summary["ffmpeg_fallbacks"] == 2 and summary["ffmpeg_fallbacks_at_decode"] == 2
    assert "2 of 3 file(s) needed the FFmpeg (PyAV) fallback" in (tmp_path / "r" / "report.md").read_text()
    files = pd.read_csv(tmp_path / "r" / "files.csv")
    assert sorted(files.loc[files["decoder"] == "pyav", "source"].map(lambda s: Path(s).name)) == [
        "a.flac",
        "b.flac",
    ]
    assert_outputs_pinned("ffmpeg_fallbacks", tmp_path / "r", tmp_path_factory.getbasetemp())


def test_html_escapes_labels_and_file_names(tmp_path: Path) -> None:
    evil = "<img src=x onerror=alert(1)>"
    y = tone(1000, 1.0, 16000)
    for label in (evil, "plain"):
        for k in range(2):
            write(tmp_path / "data" / label / f"{evil}{k}.wav", y, 16000)
    cat = ingest(tmp_path / "data", progress=False)
    inspect(cat, out=tmp_path / "r", min_count=10, audio=False, progress=False)  # rare: named in the text
    page = (tmp_path / "r" / "index.html").read_text()
    assert evil not in page and "&lt;img src=x onerror=alert(1)&gt;" in page
    assert evil in (tmp_path / "r" / "report.md").read_text()  # markdown is text: written as is
