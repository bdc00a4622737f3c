from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from chirpkit.conditioning import (
    Conditioner,
    Denoise,
    HighPass,
    Normalize,
    steps_from_config,
    steps_from_dicts,
)
from chirpkit.config import AudioConfig, load_config
from chirpkit.data.store import prepare
from chirpkit.detection.job import sliding_windows
from chirpkit.errors import ConfigError
from tests.conftest import tone, write


def _db(x: np.ndarray) -> float:
    return 10 * np.log10(np.mean(x**2) + 1e-20)


def test_highpass_removes_hum_keeps_call_and_streams_exactly() -> None:
    sr = 16000
    hum, call = tone(50, 4.0, sr, 0.5), tone(2000, 4.0, sr, 0.1)
    hp = Conditioner([HighPass(150, 4)], sr)
    whole = hp.block(hum + call)
    core = slice(sr, 3 * sr)  # after the filter's start-up
    # 4th order, 1.6 octaves below the cutoff: about 24 dB/octave x 1.6 = 38 dB
    assert _db(Conditioner([HighPass(150, 4)], sr).block(hum)[core]) < _db(hum) - 35
    assert abs(_db(whole[core]) - _db(call[core])) < 0.5
    hp.reset()
    blocks = np.concatenate([hp.block(b) for b in np.array_split(hum + call, 7)])
    np.testing.assert_allclose(blocks, whole, atol=1e-6)  # state carried across blocks


def test_normalize_peak_and_rms() -> None:
    y = tone(1000, 1.0, 8000, amp=0.05)
    peak = Conditioner([Normalize("peak", -1.0)], 8000).window(y)
    assert 20 * np.log10(np.abs(peak).max()) == pytest.approx(-1.0, abs=0.01)
    rms = Conditioner([Normalize("rms", -20.0)], 8000).window(y)
    assert 20 * np.log10(np.sqrt(np.mean(rms**2))) == pytest.approx(-20.0, abs=0.01)
    seg = np.concatenate([np.full(100, 0.9, np.float32), y, np.full(100, 0.9, np.float32)])
    out = Conditioner([Normalize("peak", -6.0)], 8000).window(seg, slice(100, 100 + y.size))
    assert 20 * np.log10(np.abs(out[100:-100]).max()) == pytest.approx(-6.0, abs=0.01)  # margins ignored
    assert np.all(Conditioner([Normalize()], 8000).window(np.zeros(10, np.float32)) == 0)


@pytest.mark.parametrize("mode", ["stationary", "nonstationary"])
def test_denoise_lowers_background_and_keeps_the_call(mode: str) -> None:
    sr, rng = 16000, np.random.default_rng(0)
    noise = 0.05 * rng.standard_normal(sr * 6).astype(np.float32)
    y = noise.copy()
    y[2 * sr : 3 * sr] += tone(3000, 1.0, sr, 0.3)
    out = Conditioner([Denoise(mode, 1.0)], sr).block(y)  # type: ignore[arg-type]
    assert _db(out[4 * sr :]) < _db(noise[4 * sr :]) - 6
    assert _db(out[2 * sr + 2000 : 3 * sr - 2000]) > _db(out[4 * sr :]) + 20


def test_steps_round_trip_and_config_validation() -> None:
    cfg = load_config(
        overrides={"audio.highpass_hz": 200, "audio.denoise": "nonstationary", "audio.normalize": "rms"}
    )
    steps = steps_from_config(cfg.audio)
    assert [s.name for s in steps] == ["highpass", "denoise", "normalize"]
    assert steps[2].target_db == -20.0
    from chirpkit.conditioning import steps_to_dicts

    assert steps_from_dicts(steps_to_dicts(steps)) == steps
    assert steps_from_config(AudioConfig()) == []
    with pytest.raises(ConfigError, match="below the Nyquist"):
        load_config(overrides={"audio.sample_rate": 16000, "audio.highpass_hz": 9000})
    with pytest.raises(ValueError, match="unknown conditioning step"):
        steps_from_dicts([{"name": "reverb"}])


def test_prepare_and_detect_condition_windows_the_same_way(tmp_path: Path) -> None:
    sr = 16000
    rng = np.random.default_rng(1)
    y = 0.02 * rng.standard_normal(sr * 12).astype(np.float32) + tone(60, 12.0, sr, 0.3)
    y[5 * sr : 6 * sr] += tone(2500, 1.0, sr, 0.2)
    p = write(tmp_path / "long.wav", y, sr, subtype="FLOAT")
    audio = AudioConfig(
        sample_rate=sr, window_s=2.0, dtype="float32", highpass_hz=150, normalize="peak", margin_s=0.0
    )
    cat = pd.DataFrame(
        {
            "source": [str(p)],
            "start_s": [4.5],
            "end_s": [6.5],
            "label": ["a"],
            "group": ["g"],
            "duration_s": [12.0],
        }
    )
    stored = prepare(cat, out=tmp_path / "s", config=audio, progress=False).read(0)
    assert 20 * np.log10(np.abs(stored).max()) == pytest.approx(-1.0, abs=0.01)
    cond = Conditioner(steps_from_config(audio), sr)
    windows = dict(sliding_windows(p, sample_rate=sr, window_s=2.0, hop_s=0.5, conditioner=cond))
    np.testing.assert_allclose(windows[4.5], stored, atol=2e-3)  # same steps, same window

    def hum_share(x: np.ndarray) -> float:  # power at 60 Hz over total power
        spec = np.abs(np.fft.rfft(x)) ** 2
        f = np.fft.rfftfreq(x.size, 1 / sr)
        return float(spec[(f > 55) & (f < 65)].sum() / spec.sum())

    assert hum_share(stored) < 0.01 * hum_share(y[int(4.5 * sr) : int(6.5 * sr)])  # hum gone
