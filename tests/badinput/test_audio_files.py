"""Bad audio files through ingest (class folders) and prepare: each kind works, or is skipped and
reported with its reason; repaired samples are reported and never reach the store as NaN."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from chirpkit.audio import Repairs, decode, stream
from chirpkit.config import AudioConfig
from chirpkit.data.ingest import ingest
from chirpkit.data.store import prepare
from tests.badinput import AUDIO_KINDS, SR, as_nobody, good, leftovers


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """Two class folders: good files in both, one file of every bad kind in ``a``; ingested and
    prepared once (the assertions below are per kind)."""
    root = tmp_path_factory.mktemp("badaudio")
    data = root / "data"
    for i in range(2):
        good(data / "a", f"good_a{i}.wav", 300 + 100 * i)
        good(data / "b", f"good_b{i}.wav", 2000 + 100 * i)
    made = {kind: maker(data / "a") for kind, (maker, _, _) in AUDIO_KINDS.items()}
    good(made["folder_named_wav"], "inside.wav", 350)  # a real file inside the folder named .wav
    cat = ingest(data, out=root / "catalog.parquet", progress=False)
    skipped = pd.read_csv(root / "catalog.skipped.csv")
    cfg = AudioConfig(sample_rate=SR, window_s=1.0, margin_s=0.25, workers=2)
    store = prepare(cat, out=root / "store", config=cfg, progress=False)
    notes = pd.read_csv(root / "store" / "anomalies.csv")
    return {"root": root, "made": made, "cat": cat, "skipped": skipped, "store": store, "notes": notes}


@pytest.mark.parametrize("kind", sorted(AUDIO_KINDS))
def test_audio_kind(kind: str, dataset: dict[str, object]) -> None:
    _, outcome, reason = AUDIO_KINDS[kind]
    path = dataset["made"][kind]  # type: ignore[index]
    cat: pd.DataFrame = dataset["cat"]  # type: ignore[assignment]
    skipped: pd.DataFrame = dataset["skipped"]  # type: ignore[assignment]
    notes: pd.DataFrame = dataset["notes"]  # type: ignore[assignment]
    in_catalog = cat["source"].isin([str(Path(path).resolve()), str(path)]).any()
    skip_row = skipped[skipped["source"].isin([str(path), str(Path(path).resolve())])]
    if outcome == "skipped":
        assert not in_catalog
        assert len(skip_row) == 1, f"{kind} not in the skip report"
        assert reason in skip_row["reason"].iloc[0]
    elif outcome == "ignored":  # not a file: neither an example nor a skip
        assert not in_catalog and skip_row.empty
    else:
        assert in_catalog and skip_row.empty
        src = cat.loc[cat["source"].isin([str(Path(path).resolve())]), "source"].iloc[0]
        kinds = set(notes.loc[notes["source"] == src, "kind"])
        if reason:
            assert reason in kinds, f"{kind}: expected a {reason} report line, got {kinds}"
        else:
            assert not kinds


def test_the_store_holds_only_finite_samples_within_full_scale(dataset: dict[str, object]) -> None:
    store = dataset["store"]
    windows = store.read_many(np.arange(len(store)))  # type: ignore[attr-defined]
    assert np.isfinite(windows).all() and np.abs(windows).max() <= 1.0
    assert not leftovers(dataset["root"])  # type: ignore[arg-type]
    # the file inside the folder named .wav is an example
    assert dataset["cat"]["source"].str.endswith("takes.wav/inside.wav").any()  # type: ignore[index]


def test_decode_and_stream_repair_the_same_samples(tmp_path: Path) -> None:
    from tests.badinput import nan_samples

    p = nan_samples(tmp_path)
    d = decode(p, sample_rate=SR)
    assert (d.nonfinite, d.over_full_scale) == (102, 0) and np.isfinite(d.y).all()
    reps = Repairs()
    streamed = np.concatenate(list(stream(p, sample_rate=SR, block_s=0.5, repairs=reps)))
    assert (reps.nonfinite, reps.over_full_scale) == (102, 0)
    np.testing.assert_allclose(streamed, d.y[0], atol=1e-6)
    assert "102 NaN/infinite" in reps.describe()


@pytest.mark.skipif(not as_nobody(), reason="root reads every file: permissions cannot be tested")
def test_unreadable_file_is_skipped(tmp_path: Path) -> None:  # pragma: no cover - needs non-root
    for c in ("a", "b"):
        good(tmp_path / "d" / c, f"{c}.wav")
    locked = good(tmp_path / "d" / "a", "locked.wav")
    locked.chmod(0)
    ingest(tmp_path / "d", out=tmp_path / "c.parquet", progress=False)
    skipped = pd.read_csv(tmp_path / "c.skipped.csv")
    assert "permission denied" in skipped.loc[skipped["source"].str.endswith("locked.wav"), "reason"].iloc[0]


@pytest.mark.parametrize("dtype", ["int16", "float32"])
def test_float_audio_beyond_full_scale_is_kept_or_scaled_never_clipped(tmp_path: Path, dtype: str) -> None:
    """A float WAV at four times full scale (RMS 2.83): decoding and streaming keep its samples;
    a float32 store keeps its level, an int16 store scales the whole file to fit and says so —
    the waveform keeps its shape either way (clipping made RMS 0.94 of a square-ish wave)."""
    import soundfile as sf

    t = np.arange(SR * 2) / SR
    y = (4.0 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    src = tmp_path / "loud.wav"
    sf.write(src, y, SR, subtype="FLOAT")
    d = decode(src)
    assert d.over_full_scale > 0 and np.sqrt(np.mean(d.y**2)) == pytest.approx(2.83, abs=0.01)
    reps = Repairs()
    streamed = np.concatenate(list(stream(src, sample_rate=SR, repairs=reps)))
    assert reps.over_full_scale == d.over_full_scale and np.abs(streamed).max() > 3.9
    row = {"source": str(src), "start_s": 0.0, "end_s": 1.0, "label": "a", "labels": ["a"], "group": "g"}
    cat = pd.DataFrame([row, {**row, "start_s": 1.0, "end_s": 2.0}]).assign(split="train")
    store = prepare(
        cat,
        out=tmp_path / "store",
        config=AudioConfig(sample_rate=SR, window_s=1.0, dtype=dtype),
        progress=False,
    )
    m, w = store.margin_samples, store.window_samples
    stored = store.read(0)[m : m + w]
    rms = float(np.sqrt(np.mean(stored**2)))
    notes = pd.read_csv(store.root / "anomalies.csv")
    if dtype == "float32":
        assert rms == pytest.approx(2.83, abs=0.01)
        assert "over_full_scale" in set(notes["kind"])
    else:
        assert rms == pytest.approx(2.83 / 4, abs=0.01) and np.abs(stored).max() <= 1.0
        assert "scaled_to_full_scale" in set(notes["kind"])
    # the shape is the sine's, not a clipped one: its crest factor stays sqrt(2)
    assert np.abs(stored).max() / rms == pytest.approx(np.sqrt(2), abs=0.02)


def test_a_clipped_integer_file_that_overshoots_after_resampling_is_named_as_such(tmp_path: Path) -> None:
    """An int16 file cannot pass full scale as decoded; clipped at the source, it does once
    resampled (band-limited interpolation overshoots). The store scales it and the note says why."""
    import soundfile as sf

    t = np.arange(44100) / 44100
    y = np.clip(3.0 * np.sin(2 * np.pi * 1000 * t), -1.0, 1.0)  # clipped at the source
    src = tmp_path / "clipped.wav"
    sf.write(src, y, 44100, subtype="PCM_16")
    row = {"source": str(src), "start_s": 0.0, "end_s": 1.0, "label": "a", "labels": ["a"], "group": "g"}
    cat = pd.DataFrame([row, {**row, "label": "b", "labels": ["b"]}]).assign(split="train")
    store = prepare(
        cat, out=tmp_path / "store", config=AudioConfig(sample_rate=32000, window_s=1.0), progress=False
    )
    notes = pd.read_csv(store.root / "anomalies.csv")
    detail = notes.loc[notes["kind"] == "scaled_to_full_scale", "detail"].iloc[0]
    assert "after resampling" in detail and np.abs(store.read(0)).max() <= 1.0


def test_int16_store_with_per_window_normalisation_scales_loud_margins(tmp_path: Path) -> None:
    """Peak normalisation sets the core of a window to -1 dBFS; a louder margin must not be clipped
    (nor make the file fail): the part's normalised windows are scaled by their common peak."""
    import soundfile as sf

    t = np.arange(SR * 3) / SR
    y = (0.1 * np.sin(2 * np.pi * 440 * t) * np.where(t < 2.0, 1.0, 8.0)).astype(np.float32)
    src = tmp_path / "ramp.wav"
    sf.write(src, y, SR, subtype="FLOAT")
    row = {"source": str(src), "start_s": 1.0, "end_s": 2.0, "label": "a", "labels": ["a"], "group": "g"}
    cat = pd.DataFrame([row, {**row, "label": "b", "labels": ["b"]}]).assign(split="train")
    cfg = AudioConfig(sample_rate=SR, window_s=1.0, margin_s=0.5, normalize="peak")
    store = prepare(cat, out=tmp_path / "store", config=cfg, progress=False)
    segment = store.read(0)
    assert np.abs(segment).max() <= 1.0 and len(store) == 2
    notes = pd.read_csv(store.root / "anomalies.csv")
    assert "scaled_to_full_scale" in set(notes["kind"])
    m, w = store.margin_samples, store.window_samples
    loud = segment[m + w :]  # the margin after the core, 8 times louder in the file
    assert np.abs(loud).max() / np.abs(segment[m : m + w]).max() == pytest.approx(8.0, rel=0.05)
