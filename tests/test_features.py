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
