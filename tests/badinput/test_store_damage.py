"""A damaged prepared store: reading it gives a RunError that names the piece and the fix, and
``prepare`` repairs it (rebuilding only what is damaged) to exactly what a fresh run gives."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from chirpkit.config import AudioConfig
from chirpkit.data.store import Store, prepare
from chirpkit.errors import OutputError, RunError
from tests.badinput import SR, good, leftovers

CFG = AudioConfig(sample_rate=SR, window_s=1.0, margin_s=0.25, workers=1)


@pytest.fixture
def built(tmp_path: Path) -> tuple[pd.DataFrame, Path, Store]:
    rows = []
    for i in range(4):
        src = good(tmp_path / "audio", f"f{i}.wav", 300 + 200 * i)
        rows.append(
            {"source": str(src), "start_s": 0.0, "end_s": 2.0, "label": "ab"[i % 2], "group": f"g{i}"}
        )
    cat = pd.DataFrame(rows)
    store = prepare(cat, out=tmp_path / "store", config=CFG, progress=False)
    return cat, tmp_path / "store", store


def _damage(kind: str, root: Path, store: Store) -> str:
    """Damage the store as ``kind``; return the name of the damaged piece."""
    part = root / store.index["part"].iloc[0]
    if kind == "missing_part":
        part.unlink()
    elif kind == "truncated_part":
        part.write_bytes(part.read_bytes()[:-1000])
    elif kind == "not_npy_part":
        part.write_bytes(np.random.default_rng(0).bytes(part.stat().st_size))
    elif kind == "wrong_shape_part":
        np.save(part, np.zeros((2, 7), np.int16))
    elif kind == "corrupt_index":
        (root / "index.parquet").write_bytes(b"not parquet at all")
        return "index"
    elif kind == "corrupt_store_json":
        (root / "store.json").write_text("{ truncated")
        return "store.json"
    elif kind == "store_json_is_a_list":
        (root / "store.json").write_text("[1, 2]")
        return "store.json"
    return str(store.index["part"].iloc[0])


KINDS = [
    "missing_part",
    "truncated_part",
    "not_npy_part",
    "wrong_shape_part",
    "corrupt_index",
    "corrupt_store_json",
    "store_json_is_a_list",
]


@pytest.mark.parametrize("kind", KINDS)
def test_damaged_store_is_named_and_repaired(kind: str, built: tuple[pd.DataFrame, Path, Store]) -> None:
    cat, root, store = built
    before = store.read_many(np.arange(len(store)))
    piece = _damage(kind, root, store)
    with pytest.raises(RunError) as err:
        Store(root).read_many(np.arange(len(store)))
    assert piece in str(err.value) and "chirpkit prepare" in str(err.value)
    repaired = prepare(cat, out=root, config=CFG, progress=False)  # rebuilds what is damaged
    np.testing.assert_array_equal(repaired.read_many(np.arange(len(repaired))), before)
    assert not leftovers(root)


def test_only_the_damaged_part_is_rebuilt(built: tuple[pd.DataFrame, Path, Store]) -> None:
    cat, root, store = built
    parts = sorted({root / p for p in store.index["part"]})
    stamps = {p: p.stat().st_mtime_ns for p in parts}
    parts[0].write_bytes(parts[0].read_bytes()[:100])
    prepare(cat, out=root, config=CFG, progress=False)
    changed = [p for p in parts if p.stat().st_mtime_ns != stamps[p]]
    assert changed == [parts[0]]


def test_an_edited_source_is_rebuilt_even_with_the_same_catalog(
    built: tuple[pd.DataFrame, Path, Store],
) -> None:
    cat, root, _ = built
    src = Path(cat["source"].iloc[1])
    good(src.parent, src.name, 3000)  # a new take, same name
    st = prepare(cat, out=root, config=CFG, progress=False)
    pos = np.flatnonzero(st.index["source"] == str(src))
    fresh = prepare(cat, out=root.parent / "fresh", config=CFG, progress=False)
    np.testing.assert_array_equal(st.read_many(pos), fresh.read_many(pos))


def test_a_source_cut_short_after_ingest_is_reported(built: tuple[pd.DataFrame, Path, Store]) -> None:
    cat, root, _ = built
    src = Path(cat["source"].iloc[2])
    good(src.parent, src.name, 900)
    import soundfile as sf

    y, sr = sf.read(src)
    sf.write(src, y[: len(y) // 3], sr)  # the recording lost two thirds after ingest
    cat = cat.assign(duration_s=2.0)
    prepare(cat, out=root, config=CFG, progress=False)
    notes = pd.read_csv(root / "anomalies.csv")
    row = notes[notes["source"] == str(src)]
    assert row["kind"].tolist() == ["shorter_than_catalog"] and "re-run ingest" in row["detail"].iloc[0]


def test_out_is_a_file(built: tuple[pd.DataFrame, Path, Store], tmp_path: Path) -> None:
    cat, _, _ = built
    target = tmp_path / "store.txt"
    target.write_text("x")
    with pytest.raises(OutputError, match="is a file, not a folder"):
        prepare(cat, out=target, config=CFG, progress=False)


def test_a_part_too_big_for_memory_is_skipped(
    built: tuple[pd.DataFrame, Path, Store], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import chirpkit.data.parts as parts
    from tests.badinput import encoded, signal

    cat, _, _ = built
    long = tmp_path / "long.wav"
    long.write_bytes(encoded(signal(10.0), "WAV"))
    cat = pd.concat([cat, cat.iloc[[0]].assign(source=str(long), end_s=10.0)], ignore_index=True)
    # a 2 s row gives 2 windows of 1.5 s over 2.5 s of audio (40 kB); the 10 s row 10 windows
    # over 10.5 s (168 kB: windows overlap by their margins, stored once)
    monkeypatch.setattr(parts, "max_part_bytes", lambda: 100_000)
    prepare(cat, out=tmp_path / "s", config=CFG, progress=False)
    skipped = pd.read_csv(tmp_path / "s" / "skipped.csv")
    assert skipped["source"].tolist() == [str(long)]
    assert "10 window(s) would take 168.0 kB in memory, more than 100.0 kB" in skipped["reason"].iloc[0]


def test_outputs_get_the_usual_file_mode(built: tuple[pd.DataFrame, Path, Store]) -> None:
    import os

    _, root, store = built
    mask = os.umask(0o022)
    os.umask(mask)
    for path in (root / "store.json", root / "index.parquet", root / store.index["part"].iloc[0]):
        assert path.stat().st_mode & 0o777 == 0o666 & ~mask, path
