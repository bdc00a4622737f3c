from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf

from chirpkit.audio import decode, info, load, resample, stream, to_mono
from chirpkit.errors import AudioDecodeError
from tests.conftest import broken_flac, tone, write


def _write_m4a(path: Path, y: np.ndarray, sr: int) -> Path:
    """AAC in an MP4 container: libsndfile cannot read it, FFmpeg can."""
    with av.open(str(path), "w") as c:
        st = c.add_stream("aac", rate=sr)
        st.layout = "mono"
        frame = av.AudioFrame.from_ndarray(y[None, :].astype(np.float32), format="fltp", layout="mono")
        frame.sample_rate = sr
        for packet in st.encode(frame):
            c.mux(packet)
        for packet in st.encode(None):
            c.mux(packet)
    return path


@pytest.mark.parametrize(
    "fmt,subtype", [("WAV", "PCM_16"), ("FLAC", "PCM_24"), ("OGG", "VORBIS"), ("MP3", None)]
)
def test_formats_decode_with_soundfile(tmp_path: Path, fmt: str, subtype: str | None) -> None:
    sr = 22050
    y = tone(1000, 1.0, sr)
    p = write(tmp_path / f"x.{fmt.lower()}", y, sr, format=fmt, subtype=subtype)
    i = info(p)
    assert i.sample_rate == sr and i.channels == 1 and i.decoder == "soundfile"
    assert i.duration_s == pytest.approx(1.0, abs=0.1)
    d = decode(p)
    assert d.y.shape[0] == 1 and d.y.dtype == np.float32 and d.decoder == "soundfile"
    if fmt in ("WAV", "FLAC"):
        np.testing.assert_allclose(d.y[0], y, atol=1e-3)
        assert i.bit_depth == (16 if fmt == "WAV" else 24)
    else:
        assert i.bit_depth is None


def test_m4a_falls_back_to_ffmpeg(tmp_path: Path) -> None:
    sr = 16000
    p = _write_m4a(tmp_path / "x.m4a", tone(1000, 1.0, sr), sr)
    with pytest.raises(Exception):  # noqa: B017 - libsndfile really cannot read it
        sf.info(str(p))
    i = info(p)
    assert i.decoder == "pyav" and i.codec == "aac" and i.sample_rate == sr
    d = decode(p, sample_rate=8000)
    assert d.decoder == "pyav" and d.sample_rate == 8000
    assert d.y.shape[1] == pytest.approx(8000, abs=1100)  # AAC priming/padding
    spec = np.abs(np.fft.rfft(d.y[0]))
    assert np.fft.rfftfreq(d.y.shape[1], 1 / 8000)[spec.argmax()] == pytest.approx(1000, abs=10)


def test_partial_reads_are_sample_exact(tmp_path: Path) -> None:
    sr = 8000
    y = np.arange(sr * 3, dtype=np.float32) / (sr * 3)
    p = write(tmp_path / "ramp.wav", y, sr, subtype="FLOAT")
    seg, rate = load(p, offset_s=1.25, duration_s=0.5)
    assert rate == sr
    np.testing.assert_array_equal(seg[0], y[10000:14000])


def test_partial_read_through_ffmpeg_matches_full_decode(tmp_path: Path) -> None:
    sr = 16000
    rng = np.random.default_rng(0)
    p = _write_m4a(tmp_path / "n.m4a", (0.3 * rng.standard_normal(sr * 4)).astype(np.float32), sr)
    full = decode(p).y[0]
    part = decode(p, offset_s=2.0, duration_s=1.0).y[0]
    assert part.size == sr
    np.testing.assert_allclose(part, full[2 * sr : 3 * sr], atol=1e-4)


def test_stereo_is_mixed_to_mono(tmp_path: Path) -> None:
    sr = 8000
    left, right = tone(500, 1, sr, 0.4), np.zeros(sr, np.float32)
    p = write(tmp_path / "st.wav", np.stack([left, right], axis=1), sr, subtype="FLOAT")
    y, _ = load(p)
    assert y.shape == (1, sr)
    np.testing.assert_allclose(y[0], left / 2, atol=1e-6)
    y2, _ = load(p, mono=False)
    assert y2.shape == (2, sr)
    assert to_mono(y2).shape == (1, sr)


def test_resample_keeps_frequency_and_length() -> None:
    y = tone(1000, 1.0, 44100)[None]
    out = resample(y, orig_sr=44100, target_sr=32000)
    assert out.shape == (1, 32000)
    spec = np.abs(np.fft.rfft(out[0]))
    assert np.fft.rfftfreq(32000, 1 / 32000)[spec.argmax()] == pytest.approx(1000, abs=1)
    with pytest.raises(ValueError, match="positive"):
        resample(y, orig_sr=0, target_sr=16000)


def test_stream_equals_one_shot_decode(tmp_path: Path) -> None:
    sr = 44100
    rng = np.random.default_rng(1)
    y = (0.2 * rng.standard_normal(sr * 5)).astype(np.float32)
    p = write(tmp_path / "long.flac", y, sr)
    whole = decode(p, sample_rate=32000).y[0]
    streamed = np.concatenate(list(stream(p, sample_rate=32000, block_s=0.7)))
    assert streamed.size == whole.size
    np.testing.assert_allclose(streamed, whole, atol=2e-4)


@pytest.mark.parametrize(
    "content,reason", [(b"", "empty file"), (b"hello, not audio" * 10, "not readable as audio")]
)
def test_bad_files_raise_with_path(tmp_path: Path, content: bytes, reason: str) -> None:
    p = tmp_path / "bad.wav"
    p.write_bytes(content)
    with pytest.raises(AudioDecodeError, match=reason) as exc:
        decode(p)
    assert exc.value.path == str(p)
    assert isinstance(exc.value, ValueError)
    with pytest.raises(AudioDecodeError):
        info(p)


def test_missing_file_is_a_decode_error(tmp_path: Path) -> None:
    with pytest.raises(AudioDecodeError, match="does not exist"):
        info(tmp_path / "nope.wav")


def test_a_flac_libsndfile_cannot_decode_falls_back_to_ffmpeg(tmp_path: Path) -> None:
    p, y = broken_flac(tmp_path / "broken.flac")
    assert info(p).decoder == "soundfile"  # the header is fine ...
    with pytest.raises(Exception):  # noqa: B017 - ... but libsndfile fails on the damaged frames
        sf.read(str(p))
    d = decode(p)
    assert d.decoder == "pyav" and d.sample_rate == 16000
    assert abs(d.y.shape[1] - y.size) <= 4608  # at most the damaged frame is lost
    np.testing.assert_allclose(d.y[0, :16000], y[:16000], atol=1e-4)  # before the damage: exact
