from __future__ import annotations

import librosa
import numpy as np
import pytest
import torch

from chirpkit.config import FeatureConfig
from chirpkit.features import LogMel, build_frontend, mel_filterbank
from tests.conftest import tone


def test_3khz_tone_peaks_in_the_right_mel_bin() -> None:
    sr, n_mels = 32000, 64
    m = LogMel(sample_rate=sr, n_mels=n_mels, fmin_hz=50)
    S = m(torch.from_numpy(tone(3000, 1.0, sr)))[0, 0].numpy()
    centres = librosa.mel_frequencies(n_mels + 2, fmin=50, fmax=sr / 2)[1:-1]
    expected = int(np.argmin(np.abs(centres - 3000)))
    peak = int(S.mean(axis=1).argmax())
    assert abs(peak - expected) <= 1
    assert S.mean(axis=1)[peak] - np.median(S.mean(axis=1)) > 40  # dB above the rest


@pytest.mark.parametrize(
    "n_fft,hop,win,n_mels", [(1024, 320, None, 64), (512, 128, 400, 40), (2048, 512, None, 128)]
)
def test_logmel_matches_librosa(n_fft: int, hop: int, win: int | None, n_mels: int) -> None:
    sr = 22050
    y = np.random.default_rng(0).standard_normal(sr).astype(np.float32) * 0.1
    ours = LogMel(sample_rate=sr, n_fft=n_fft, hop_length=hop, win_length=win, n_mels=n_mels, fmin_hz=0)(
        torch.from_numpy(y)
    )[0, 0].numpy()
    ref = librosa.power_to_db(
        librosa.feature.melspectrogram(
            y=y,
            sr=sr,
            n_fft=n_fft,
            hop_length=hop,
            win_length=win,
            n_mels=n_mels,
            power=2.0,
            pad_mode="constant",
        ),
        ref=1.0,
        amin=1e-10,
        top_db=None,
    )
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, atol=2e-3)  # dB


def test_batched_shapes_and_frames() -> None:
    m = build_frontend(FeatureConfig(n_mels=32, hop_length=160, n_fft=512), 16000)
    x = torch.zeros(4, 16000)
    out = m(x)
    assert out.shape == (4, 1, 32, 16000 // 160 + 1)
    assert torch.isfinite(out).all()  # silence is clamped, not -inf


def test_filterbank_rejects_fmax_above_nyquist() -> None:
    with pytest.raises(ValueError, match="Nyquist"):
        mel_filterbank(sample_rate=16000, n_fft=512, n_mels=32, fmax_hz=9000)


def _noise_and_tone(sr: int) -> np.ndarray:
    y = np.random.default_rng(0).standard_normal(sr * 2).astype(np.float32) * 0.1
    y[5000:9000] += tone(2000, 4000 / sr, sr)
    return y


def test_mfcc_matches_librosa() -> None:
    from chirpkit.features import MFCC

    sr = 22050
    y = _noise_and_tone(sr)
    ours = MFCC(sample_rate=sr, n_fft=1024, hop_length=256, n_mels=40, fmin_hz=0, n_mfcc=13)(
        torch.from_numpy(y)
    )
    mel_db = librosa.power_to_db(
        librosa.feature.melspectrogram(
            y=y, sr=sr, n_fft=1024, hop_length=256, n_mels=40, pad_mode="constant"
        ),
        top_db=None,
    )
    np.testing.assert_allclose(ours[0, 0].numpy(), librosa.feature.mfcc(S=mel_db, n_mfcc=13), atol=1e-3)


def test_pcen_matches_librosa_from_a_steady_state() -> None:
    import scipy.signal

    from chirpkit.features import PCEN

    sr, hop = 22050, 256
    y = _noise_and_tone(sr)
    ours = PCEN(sample_rate=sr, n_fft=1024, hop_length=hop, n_mels=40, fmin_hz=0)(torch.from_numpy(y))[0, 0]
    mel = librosa.feature.melspectrogram(
        y=y, sr=sr, n_fft=1024, hop_length=hop, n_mels=40, pad_mode="constant"
    )
    mel = mel * 2.0**31
    t = 0.4 * sr / hop
    b = (np.sqrt(1 + 4 * t**2) - 1) / (2 * t**2)
    zi = scipy.signal.lfilter_zi([b], [1, b - 1]) * mel[:, :1]
    np.testing.assert_allclose(ours.numpy(), librosa.pcen(mel, sr=sr, hop_length=hop, zi=zi), atol=1e-4)


def test_stft_db_matches_librosa() -> None:
    from chirpkit.features import Spectrogram

    sr = 16000
    y = _noise_and_tone(sr)
    ours = Spectrogram(sample_rate=sr, n_fft=512, hop_length=128, win_length=400)(torch.from_numpy(y))[0, 0]
    ref = librosa.power_to_db(
        np.abs(librosa.stft(y, n_fft=512, hop_length=128, win_length=400, pad_mode="constant")) ** 2,
        top_db=None,
    )
    np.testing.assert_allclose(ours.numpy(), ref, atol=5e-3, rtol=1e-4)  # float32 at -80 dB bins


def test_stft_power_and_magnitude_scales() -> None:
    from chirpkit.features import build_frontend

    sr = 16000
    y = torch.from_numpy(_noise_and_tone(sr))
    ref = np.abs(librosa.stft(y.numpy(), n_fft=512, hop_length=128, pad_mode="constant"))
    feats = {"kind": "stft", "n_fft": 512, "hop_length": 128}
    power = build_frontend(FeatureConfig(**feats, stft_scale="power"), sr)(y)[0, 0].numpy()
    mag = build_frontend(FeatureConfig(**feats, stft_scale="magnitude"), sr)(y)[0, 0].numpy()
    np.testing.assert_allclose(mag, ref, rtol=1e-3, atol=1e-3 * ref.max())
    np.testing.assert_allclose(power, ref**2, rtol=1e-3, atol=1e-3 * (ref**2).max())


def test_pcen_settings_reach_the_front_end() -> None:
    from chirpkit.features import PCEN, build_frontend

    cfg = FeatureConfig(
        kind="pcen", pcen_gain=0.8, pcen_bias=10.0, pcen_power=0.25, pcen_time_constant_s=0.06
    )
    fe = build_frontend(cfg, 16000)
    assert isinstance(fe, PCEN)
    assert fe.params == {"time_constant_s": 0.06, "gain": 0.8, "bias": 10.0, "power": 0.25}
    y = torch.from_numpy(_noise_and_tone(16000))
    default = build_frontend(FeatureConfig(kind="pcen"), 16000)(y)
    assert not torch.allclose(fe(y), default)


@pytest.mark.parametrize("kind,bins", [("logmel", 32), ("stft", 257), ("mfcc", 20), ("pcen", 32)])
def test_every_feature_kind_feeds_the_model(kind: str, bins: int) -> None:
    from chirpkit.models import ClassifierNet, ModelSpec

    feats = FeatureConfig(kind=kind, n_mels=32, n_fft=512, hop_length=160)  # type: ignore[arg-type]
    net = ClassifierNet(
        ModelSpec("small_cnn", ["a", "b"], 16000, 1.0, feats.model_dump(), {"channels": [8, 16]})
    )
    assert net.frontend.n_bins == bins
    x = torch.randn(3, 16000) * 0.1
    assert net.features(x).shape == (3, 1, bins, 101)
    out = net(x)
    assert out.shape == (3, 2) and torch.isfinite(out).all()
