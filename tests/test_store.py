from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from chirpkit.config import AudioConfig
from chirpkit.data.store import Store, prepare, window_starts
from chirpkit.errors import RunError
from tests.conftest import tone, write


@pytest.mark.parametrize(
    "start,end,expected",
    [
        (
            0.0,
            7.0,
            [0.0, 3.0, 4.0],
        ),  # 7 s clip, 3 s windows: ceil(7/3) = 3, the last aligned to the end
        (0.0, 9.0, [0.0, 3.0, 6.0]),
        (0.0, 1.0, [-1.0]),  # short clip: one window centred on it (zero-padded)
        (10.0, 10.0, [8.5]),  # point annotation: centred
        (2.0, 5.0, [2.0]),
    ],
)
def test_window_starts(start: float, end: float, expected: list[float]) -> None:
    np.testing.assert_allclose(window_starts(start, end, window_s=3.0, hop_s=3.0), expected)


def test_window_starts_with_overlap_and_bad_input() -> None:
    assert len(window_starts(0, 10, window_s=3, hop_s=1.5)) == 6  # 0,1.5,...,6 then 7
    with pytest.raises(ValueError, match="before"):
        window_starts(5, 1, window_s=3, hop_s=3)


def _catalog(rows: list[tuple[Path, float, float, str]]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "source": str(p),
                "start_s": a,
                "end_s": b,
                "label": lab,
                "group": p.stem,
                "duration_s": b,
            }
            for p, a, b, lab in rows
        ]
    )


def test_windows_hold_the_right_audio(tmp_path: Path) -> None:
    sr = 8000
    y = np.zeros(sr * 7, np.float32)
    y[int(5.0 * sr) : int(5.5 * sr)] = tone(1000, 0.5, sr)  # a call at 5.0-5.5 s
    long = write(tmp_path / "long.wav", y, sr, subtype="FLOAT")
    short = write(tmp_path / "short.wav", tone(2000, 1.0, 16000), 16000)
    cat = _catalog([(long, 0.0, 7.0, "a"), (short, 0.0, 1.0, "b")])
    st = prepare(
        cat,
        out=tmp_path / "store",
        config=AudioConfig(sample_rate=sr, window_s=3.0, dtype="float32", margin_s=0.0),
        progress=False,
    )
    assert len(st) == 4 and st.window_samples == 3 * sr
    idx = st.index
    assert idx["start_s"].tolist() == [0.0, 3.0, 4.0, -1.0]
    w = [st.read(i) for i in range(4)]
    assert np.abs(w[0]).max() == 0  # 0-3 s: silence
    np.testing.assert_allclose(w[1][2 * sr : int(2.5 * sr)], y[5 * sr : int(5.5 * sr)], atol=1e-6)
    # short clip resampled 16k -> 8k and centred: zeros 1 s, tone 1 s, zeros 1 s
    assert np.abs(w[3][: sr - 50]).max() < 1e-3 and np.abs(w[3][-sr + 50 :]).max() < 1e-3
    assert np.abs(w[3][sr + 100 : 2 * sr - 100]).max() > 0.4


def test_margin_is_real_audio(tmp_path: Path) -> None:
    sr = 8000
    y = np.linspace(-0.5, 0.5, sr * 10).astype(np.float32)
    p = write(tmp_path / "r.wav", y, sr, subtype="FLOAT")
    st = prepare(
        _catalog([(p, 4.0, 5.0, "a"), (p, 0.0, 0.0, "b")]),
        out=tmp_path / "s",
        config=AudioConfig(sample_rate=sr, window_s=2.0, margin_s=0.5, dtype="float32"),
        progress=False,
    )
    seg = st.read(0)
    assert seg.size == int(3.0 * sr)  # window + two margins
    np.testing.assert_allclose(seg, y[int(3.0 * sr) : int(6.0 * sr)], atol=1e-5)  # window 3.5-5.5 s ± 0.5
    seg_b = st.read(1)  # point at 0 s: window -1..1 s, margin from -1.5 s: zeros before the file starts
    assert np.all(seg_b[: int(1.5 * sr)] == 0) and np.all(seg_b[int(1.5 * sr) + 10 :] != 0)


def test_second_run_does_nothing_and_a_killed_run_resumes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sr = 8000
    files = [write(tmp_path / f"f{i}.wav", tone(300 * (i + 1), 2.0, sr), sr) for i in range(5)]
    cat = _catalog([(f, 0.0, 2.0, "ab"[i % 2]) for i, f in enumerate(files)])
    cfg = AudioConfig(sample_rate=sr, window_s=1.0)
    out = tmp_path / "store"
    st = prepare(cat, out=out, config=cfg, progress=False)
    parts = sorted(out.glob("parts/*.npy"))
    assert len(parts) == 5 and len(st) == 10
    mtimes = [p.stat().st_mtime_ns for p in parts]
    caplog.clear()
    prepare(cat, out=out, config=cfg, progress=False)
    assert "up to date" in caplog.text
    assert [p.stat().st_mtime_ns for p in parts] == mtimes

    # simulate a kill: index never written, one part missing
    (out / "index.parquet").unlink()
    parts[2].unlink()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="chirpkit"):
        st2 = prepare(cat, out=out, config=cfg, progress=False)
    assert "4 of 5 file(s) already prepared, 1 to go" in caplog.text
    assert len(st2) == 10 and parts[2].is_file()
    assert [p.stat().st_mtime_ns for i, p in enumerate(parts) if i != 2] == [
        m for i, m in enumerate(mtimes) if i != 2
    ]

    # a changed setting rebuilds; the old parts stay as a cache for the old setting
    prepare(cat, out=out, config=AudioConfig(sample_rate=4000, window_s=1.0), progress=False)
    assert len(list(out.glob("parts/*.npy"))) == 10
    assert not list(out.rglob("*.tmp-*"))


def test_undecodable_file_is_skipped_and_reported(tmp_path: Path) -> None:
    good = write(tmp_path / "good.wav", tone(500, 1.0, 8000), 8000)
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF....garbage")
    st = prepare(
        _catalog([(good, 0, 1, "a"), (bad, 0, 1, "b")]),
        out=tmp_path / "s",
        config=AudioConfig(sample_rate=8000, window_s=1.0),
        progress=False,
    )
    assert len(st) == 1
    report = pd.read_csv(tmp_path / "s" / "skipped.csv")
    assert report["source"].tolist() == [str(bad)] and "not readable" in report["reason"].iloc[0]


@pytest.mark.parametrize("dtype,atol", [("int16", 1 / 32767), ("float16", 1e-3), ("float32", 1e-7)])
def test_storage_dtype_roundtrip(tmp_path: Path, dtype: str, atol: float) -> None:
    y = tone(700, 1.0, 8000, amp=0.9)
    y[:800] *= 1e-3  # a quiet stretch: float16 keeps its relative precision, int16 its absolute
    p = write(tmp_path / "t.wav", y, 8000, subtype="FLOAT")
    st = prepare(
        _catalog([(p, 0, 1, "a")]),
        out=tmp_path / "s",
        config=AudioConfig(sample_rate=8000, window_s=1.0, margin_s=0.0, dtype=dtype),  # type: ignore[arg-type]
        progress=False,
    )
    assert np.load(next((tmp_path / "s").glob("parts/*.npy"))).dtype == np.dtype(dtype)
    got = st.read(0)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, y, atol=atol)
    if dtype == "float16":
        np.testing.assert_allclose(got[:800], y[:800], rtol=1e-3, atol=1e-7)


def test_incomplete_store_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "s").mkdir()
    with pytest.raises(RunError, match="not a complete prepared store"):
        Store(tmp_path / "s")


def test_open_memory_maps_are_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # one part per clip, and each open map holds a file descriptor: 3,000 FSDD clips once ran a
    # cross-validation out of descriptors
    sr = 8000
    rows = [
        (write(tmp_path / f"c{i}.wav", tone(500 + 100 * i, 1.0, sr), sr), 0.0, 1.0, "ab"[i % 2])
        for i in range(12)
    ]
    st = prepare(
        _catalog(rows),
        out=tmp_path / "store",
        config=AudioConfig(sample_rate=sr, window_s=1.0, margin_s=0.0),
        progress=False,
    )
    monkeypatch.setattr(Store, "max_open_parts", 3)
    first = [st.read(i) for i in range(len(st))]
    again = [st.read(i) for i in reversed(range(len(st)))][::-1]
    assert len(st._mmaps) == 3
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[0], first[1])


def _disk_samples(root: Path) -> int:
    return sum(np.load(p, mmap_mode="r").size for p in (root / "parts").glob("*.npy"))


def test_windows_are_stored_once_whatever_the_hop(tmp_path: Path) -> None:
    sr = 8000
    y = np.linspace(-0.9, 0.9, sr * 30).astype(np.float32)  # every sample tells where it is
    p = write(tmp_path / "ramp.wav", y, sr, subtype="FLOAT")
    sizes = {}
    for hop in (3.0, 1.0, 0.5):
        cfg = AudioConfig(sample_rate=sr, window_s=3.0, window_hop_s=hop, margin_s=0.5, dtype="float32")
        st = prepare(_catalog([(p, 0.0, 30.0, "a")]), out=tmp_path / f"h{hop}", config=cfg, progress=False)
        assert len(st) == {3.0: 10, 1.0: 28, 0.5: 55}[hop]
        sizes[hop] = _disk_samples(st.root)
        for i in range(len(st)):  # each window is the file's audio at its place, margins included
            first = round((float(st.index["start_s"][i]) - 0.5) * sr)
            want = np.zeros(4 * sr, np.float32)
            lo, hi = max(first, 0), min(first + 4 * sr, y.size)
            want[lo - first : hi - first] = y[lo:hi]
            np.testing.assert_allclose(st.read(i), want, atol=1e-6)
        np.testing.assert_array_equal(
            st.read_many(np.arange(len(st))), np.stack([st.read(i) for i in range(len(st))])
        )
    # the file once, with its two margins: the hop costs nothing on disk
    assert sizes[3.0] == sizes[1.0] == sizes[0.5] == 31 * sr


def test_sparse_windows_are_stored_apart_and_normalised_windows_each_whole(tmp_path: Path) -> None:
    sr = 8000
    y = (0.1 * np.random.default_rng(0).standard_normal(sr * 60)).astype(np.float32)
    p = write(tmp_path / "long.wav", y, sr, subtype="FLOAT")
    points = [(p, t, t, "a") for t in (5.0, 5.5, 30.0, 50.0)]  # two overlapping windows, two apart
    cfg = AudioConfig(sample_rate=sr, window_s=2.0, margin_s=0.25, dtype="float32")
    st = prepare(_catalog(points), out=tmp_path / "s", config=cfg, progress=False)
    assert _disk_samples(st.root) == round(2.5 * sr) * 3 + round(0.5 * sr)  # 5 and 5.5 share a segment
    np.testing.assert_allclose(st.read(1), y[round(4.25 * sr) : round(6.75 * sr)], atol=1e-6)
    np.testing.assert_allclose(st.read(3), y[round(48.75 * sr) : round(51.25 * sr)], atol=1e-6)
    norm = prepare(
        _catalog(points),
        out=tmp_path / "n",
        config=cfg.model_copy(update={"normalize": "peak"}),
        progress=False,
    )
    assert _disk_samples(norm.root) == 4 * round(2.5 * sr)  # each window normalised on its own
    for i in range(4):
        core = norm.read(i)[round(0.25 * sr) : round(2.25 * sr)]
        assert np.abs(core).max() == pytest.approx(10 ** (-1 / 20), rel=1e-3)


def test_a_version_one_store_is_read_then_rebuilt(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import json

    sr = 8000
    files = [write(tmp_path / f"f{i}.wav", tone(300 * (i + 1), 2.0, sr), sr) for i in range(2)]
    cat = _catalog([(f, 0.0, 2.0, "ab"[i]) for i, f in enumerate(files)])
    cfg = AudioConfig(sample_rate=sr, window_s=1.0, margin_s=0.25)
    out = tmp_path / "store"
    st = prepare(cat, out=out, config=cfg, progress=False)
    windows = st.read_many(np.arange(len(st)))
    # rewrite it as chirpkit wrote stores before windows were views: one (windows, samples) part
    # per file, rows addressed by part_row
    idx = st.index.drop(columns="part_offset")
    for part, rows in idx.groupby("part").indices.items():
        ordered = np.asarray(rows)[np.argsort(idx["part_row"].to_numpy()[rows])]
        (out / str(part)).unlink()
        np.save(out / f"{part}-v1.npy", np.rint(windows[ordered] * 32767).astype(np.int16))
    idx["part"] = idx["part"] + "-v1.npy"
    idx.to_parquet(out / "index.parquet", index=False)
    meta = json.loads((out / "store.json").read_text())
    (out / "store.json").write_text(json.dumps({**meta, "version": 1}))
    old = Store(out)
    assert old.rows_stored
    np.testing.assert_allclose(old.read_many(np.arange(len(old))), windows, atol=1e-4)
    old_parts = sorted(out.glob("parts/*.npy"))
    new = prepare(cat, out=out, config=cfg, progress=False)
    assert "version 1" in caplog.text and "rebuilding it as version 2" in caplog.text
    assert not new.rows_stored and new.meta["version"] == 2
    assert old_parts and not any(p.is_file() for p in old_parts)
    np.testing.assert_allclose(new.read_many(np.arange(len(new))), windows, atol=1e-4)


def test_reading_a_whole_store_keeps_few_parts_mapped(tmp_path: Path) -> None:
    sr = 8000
    files = [write(tmp_path / f"f{i}.wav", tone(200 + 50 * i, 3.0, sr), sr) for i in range(6)]
    cat = _catalog([(f, 0.0, 3.0, "ab"[i % 2]) for i, f in enumerate(files)])
    st = prepare(cat, out=tmp_path / "s", config=AudioConfig(sample_rate=sr, window_s=1.0), progress=False)
    want = st.read_many(np.arange(len(st)))
    part_bytes = np.load(st.root / st.index["part"].iloc[0], mmap_mode="r").nbytes
    st = Store(st.root)
    st.max_mapped_bytes = 2 * part_bytes  # two parts' worth: the least recently used is unmapped
    mapped = []
    for i in range(len(st)):
        np.testing.assert_array_equal(st.read(i), want[i])
        mapped.append(len(st._mmaps))
    assert max(mapped) == 2 and st._mapped == 2 * part_bytes
