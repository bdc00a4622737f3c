from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import soundfile as sf

from chirpkit.pipelines.demo import make_demo_data, score_calls
from chirpkit.synth import CALL_TYPES, colored_noise, make_call


def test_demo_data_layout_and_known_calls(tmp_path: Path) -> None:
    d = make_demo_data(
        tmp_path,
        recordings_per_class=2,
        clips_per_recording=2,
        soundscapes=1,
        soundscape_s=20,
        progress=False,
    )
    labels = pd.read_csv(d["labels"])
    assert set(labels["label"]) == {*CALL_TYPES, "noise"} and len(labels) == 7 * 4
    assert labels.groupby("label")["group"].nunique().eq(2).all()
    info = sf.info(str(tmp_path / labels["path"].iloc[0]))
    assert info.samplerate == 32000 and info.duration == pytest.approx(3.0)
    calls = d["calls"]
    assert len(calls) >= 2 and (calls["end_s"] > calls["start_s"]).all() and calls["end_s"].max() < 20
    scape_calls = pd.read_csv(d["soundscapes"][0].with_suffix(".calls.csv"))
    assert len(scape_calls) == len(calls)


def test_call_types_and_noise_colour(rng) -> None:  # type: ignore[no-untyped-def]
    import numpy as np

    for kind in CALL_TYPES:
        y = make_call(kind, rng, sample_rate=32000)
        assert 0.1 < y.size / 32000 < 2.0 and np.abs(y).max() == pytest.approx(1.0, abs=1e-5)
    n = 2**16
    for exponent in (1.0, 2.0):
        spec = np.abs(np.fft.rfft(colored_noise(n, rng, exponent=exponent))) ** 2
        f = np.fft.rfftfreq(n)[1:]
        slope = np.polyfit(np.log(f), np.log(spec[1:] + 1e-12), 1)[0]
        assert slope == pytest.approx(-exponent, abs=0.15)


def test_score_calls() -> None:
    calls = pd.DataFrame(
        {"file": ["a", "a"], "start_s": [1.0, 10.0], "end_s": [1.5, 10.5], "label": ["x", "y"]}
    )
    det = pd.DataFrame(
        {
            "file": ["a", "a", "a"],
            "start_s": [0.0, 9.0, 20.0],
            "end_s": [3.0, 12.0, 23.0],
            "label": ["x", "x", "y"],
            "score": [0.9, 0.9, 0.9],
        }
    )
    s = score_calls(det, calls)
    assert s["recall"] == 0.5 and s["window_precision"] == pytest.approx(1 / 3)


@pytest.mark.slow
def test_full_demo_meets_its_numbers(tmp_path: Path) -> None:
    from chirpkit.pipelines.demo import demo

    s = demo(tmp_path / "demo", progress=False)
    assert s["macro_f1"] >= 0.9 and s["detection_recall"] >= 0.8
