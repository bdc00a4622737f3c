"""Augmentations: identity at p=0, known answers for each transform, seeding, margins, the config
blocks (and the flat keys of earlier versions), and the seeded stream pinned to a reference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from chirpkit.augment import (
    TRANSFORMS,
    Augmenter,
    Context,
    Gain,
    TimeShift,
    Transform,
    colored_noise_batch,
    mix_at_snr,
    read_shifted,
    warp_pitch,
)
from chirpkit.config import AugmentConfig, GainConfig, TimeShiftConfig
from chirpkit.errors import ConfigError
from tests.conftest import tone, write

SR, WIN, MARGIN = 16000, 16000, 8000


def _aug(seed: int = 0, margin: int = MARGIN, **blocks: dict[str, object]) -> Augmenter:
    """Every augmentation off but the blocks given, e.g. ``gain={"p": 1.0, "min_db": -6}``."""
    cfg = AugmentConfig.model_validate({**AugmentConfig().off().model_dump(), **blocks})
    return Augmenter(cfg, sample_rate=SR, window_samples=WIN, margin_samples=margin, seed=seed)


def _segments(n: int = 4) -> torch.Tensor:
    rng = np.random.default_rng(0)
    return torch.from_numpy(0.1 * rng.standard_normal((n, WIN + 2 * MARGIN)).astype(np.float32))


def test_p0_is_the_identity_everywhere() -> None:
    a = _aug()
    assert not a.active
    seg = _segments()
    x = a.read(seg)
    assert torch.equal(x, seg[:, MARGIN : MARGIN + WIN])  # centre crop, exactly
    assert torch.equal(a.waveform(x), x)
    power = torch.rand(4, 257, 101)
    assert torch.equal(a.power(power), power)
    spec = torch.randn(4, 1, 64, 101)
    assert torch.equal(a.spectrogram(spec), spec)
    target = torch.eye(4)
    x2, t2 = a.mixup(x, target)
    assert torch.equal(x2, x) and torch.equal(t2, target)


def test_time_shift_reads_real_audio_from_the_margin() -> None:
    ramp = torch.arange(WIN + 2 * MARGIN, dtype=torch.float32)[None].repeat(64, 1) + 1.0  # never 0
    a = _aug(time_shift={"p": 1.0, "max_fraction": 0.3})  # 0.3 * WIN = 4800 <= MARGIN
    out = a.read(ramp)
    assert out.shape == (64, WIN) and bool((out > 0).all())  # no zeros pulled in
    shifts = out[:, 0] - (MARGIN + 1)
    assert shifts.abs().max() <= 0.3 * WIN and shifts.std() > 500  # shifted, within range
    np.testing.assert_allclose(np.diff(out.numpy(), axis=1), 1.0, atol=1e-3)  # contiguous read
    small = _aug(margin=1000, time_shift={"p": 1.0})
    ramp_small = torch.arange(WIN + 2000, dtype=torch.float32)[None].repeat(64, 1) + 1.0
    assert bool((small.read(ramp_small) > 0).all())  # shift limited by a small margin: still no zeros
    # the slicing fast path (whole-sample shifts) reads exactly what the interpolating reader reads
    seg = torch.randn(16, WIN + 2 * MARGIN)
    fast = _aug(seed=3, time_shift={"p": 1.0, "max_fraction": 0.3}).read(seg)
    shifts = _aug(seed=3, time_shift={"p": 1.0, "max_fraction": 0.3}).read(ramp[:16])[:, 0] - (MARGIN + 1)
    assert shifts.abs().min() < shifts.abs().max()
    torch.testing.assert_close(fast, read_shifted(seg, WIN, shifts, torch.ones(16)), rtol=0, atol=1e-6)


def test_speed_changes_pitch_by_the_rate() -> None:
    seg = torch.from_numpy(tone(1000, (WIN + 2 * MARGIN) / SR, SR))[None].repeat(2, 1)
    out = read_shifted(seg, WIN, torch.zeros(2), torch.tensor([1.0, 1.2]))
    spec = torch.fft.rfft(out, dim=1).abs()
    peaks = spec.argmax(dim=1).float() * SR / WIN
    assert peaks[0].item() == pytest.approx(1000, abs=2) and peaks[1].item() == pytest.approx(1200, abs=2)


def test_gain_and_snr_are_what_was_asked() -> None:
    x = torch.from_numpy(tone(1000, 1.0, SR))[None].repeat(256, 1)
    out = _aug(gain={"p": 1.0, "min_db": -12, "max_db": 12}).waveform(x)
    db = 20 * torch.log10(out.pow(2).mean(1).sqrt() / x.pow(2).mean(1).sqrt())
    assert db.min() >= -12.01 and db.max() <= 12.01 and db.std() > 4
    gen = torch.Generator().manual_seed(0)
    noise = colored_noise_batch(8, SR, torch.full((8,), 1.0), generator=gen, device=torch.device("cpu"))
    mixed = mix_at_snr(x[:8], noise, torch.full((8,), 10.0))
    added = mixed - x[:8]
    snr = 10 * torch.log10(x[:8].pow(2).mean(1) / added.pow(2).mean(1))
    np.testing.assert_allclose(snr.numpy(), 10.0, atol=1e-3)


@pytest.mark.parametrize("exponent", [1.0, 2.0])
def test_colored_noise_slope(exponent: float) -> None:
    gen = torch.Generator().manual_seed(1)
    n = colored_noise_batch(4, 2**15, torch.full((4,), exponent), generator=gen, device=torch.device("cpu"))
    spec = (torch.fft.rfft(n, dim=1).abs() ** 2).mean(0)[1:].numpy()
    f = np.fft.rfftfreq(2**15)[1:]
    assert np.polyfit(np.log(f), np.log(spec), 1)[0] == pytest.approx(-exponent, abs=0.1)


def test_pitch_warp_moves_a_tone_by_the_semitones() -> None:
    from chirpkit.features import Spectrogram

    frontend = Spectrogram(sample_rate=SR, n_fft=1024, hop_length=256, win_length=None)
    x = torch.from_numpy(tone(2000, 1.0, SR))[None].repeat(3, 1)
    power = frontend.power(x)
    warped = warp_pitch(power, torch.tensor([0.0, 4.0, -4.0]))
    peak_hz = warped.mean(-1).argmax(-1).float() * SR / 1024
    expected = 2000 * 2 ** (torch.tensor([0.0, 4.0, -4.0]) / 12)
    np.testing.assert_allclose(peak_hz.numpy(), expected.numpy(), rtol=0.02)
    # total power kept approximately (a tone a few bins wide is resampled): within 10 %
    np.testing.assert_allclose(warped.sum((1, 2)).numpy(), power.sum((1, 2)).numpy(), rtol=0.1)


def test_masks_cover_at_most_the_configured_bins() -> None:
    spec = torch.ones(32, 1, 64, 101)
    a = _aug(freq_mask={"p": 1.0, "max_bins": 10}, time_mask={"p": 1.0, "max_frames": 7})
    out = a.spectrogram(spec)
    zero_rows = (out[:, 0] == 0).all(dim=2).sum(dim=1)
    zero_cols = (out[:, 0] == 0).all(dim=1).sum(dim=1)
    assert zero_rows.max() <= 10 and zero_cols.max() <= 7 and zero_rows.sum() > 0 and zero_cols.sum() > 0


def test_mixup_mixes_labels_with_the_waveforms() -> None:
    x = torch.eye(8)
    target = torch.eye(8)
    mx, mt = _aug(mixup={"p": 1.0, "alpha": 0.4}).mixup(x, target)
    np.testing.assert_allclose(mt.sum(1).numpy(), 1.0, atol=1e-6)
    assert torch.allclose(mx, mt)  # x == target here, so they must be mixed identically
    assert bool((mt.diagonal() >= 0.5).all())  # each example keeps the larger share


def test_seeded_and_reproducible() -> None:
    seg = _segments(16)
    kw = {k: {"p": 0.5} for k in ("time_shift", "gain", "noise", "freq_mask")}
    a, b, c = _aug(7, **kw), _aug(7, **kw), _aug(8, **kw)
    xa, xb, xc = a.waveform(a.read(seg)), b.waveform(b.read(seg)), c.waveform(c.read(seg))
    assert torch.equal(xa, xb) and not torch.equal(xa, xc)


def test_recorded_background_noise_from_a_folder(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    write(tmp_path / "noise" / "wind.flac", (0.2 * rng.standard_normal(SR * 3)).astype(np.float32), SR)
    a = _aug(background={"p": 1.0, "dir": str(tmp_path / "noise"), "min_snr_db": 5, "max_snr_db": 5})
    x = torch.from_numpy(tone(1000, 1.0, SR))[None].repeat(4, 1)
    added = a.waveform(x) - x
    snr = 10 * torch.log10(x.pow(2).mean(1) / added.pow(2).mean(1))
    np.testing.assert_allclose(snr.numpy(), 5.0, atol=0.01)
    with pytest.raises(ConfigError, match=r"background\.dir"):
        _aug(background={"p": 0.5})


@pytest.mark.parametrize(
    "name,kw",
    [
        ("time_shift", {"time_shift": {"p": 1.0}}),
        ("speed", {"speed": {"p": 1.0}}),
        ("gain", {"gain": {"p": 1.0}}),
        ("noise", {"noise": {"p": 1.0}}),
        ("pitch", {"pitch": {"p": 1.0}}),
        ("pitch_waveform", {"pitch": {"p": 1.0, "mode": "waveform"}}),
        ("stretch", {"stretch": {"p": 1.0}}),
        ("mixup", {"mixup": {"p": 1.0}}),
        ("freq_mask", {"freq_mask": {"p": 1.0}}),
        ("time_mask", {"time_mask": {"p": 1.0}}),
    ],
)
def test_contract_every_augmentation_through_the_model(name: str, kw: dict[str, dict[str, object]]) -> None:
    from chirpkit.config import FeatureConfig
    from chirpkit.models import ClassifierNet, ModelSpec

    net = ClassifierNet(
        ModelSpec(
            "small_cnn",
            ["a", "b", "c"],
            SR,
            1.0,
            FeatureConfig(n_mels=32).model_dump(),
            {"channels": [8, 16]},
        )
    )
    a = _aug(**kw)
    x = a.waveform(a.read(_segments()))
    target = torch.nn.functional.one_hot(torch.tensor([0, 1, 2, 0]), 3).float()
    x, target = a.mixup(x, target)
    logits = net.forward_train(x, a)
    assert x.shape == (4, WIN) and x.dtype == torch.float32 and torch.isfinite(x).all()
    assert logits.shape == (4, 3) and torch.isfinite(logits).all()
    loss = torch.nn.functional.cross_entropy(logits, target)
    loss.backward()
    assert all(p.grad is not None for p in net.backbone.parameters())


def _inputs(stage: str, rng: np.random.Generator) -> torch.Tensor:
    """A batch of 4 for a stage (see chirpkit.augment.base for the shapes)."""
    shape = {
        "read": (4, WIN + 2 * MARGIN),
        "waveform": (4, WIN),
        "mixup": (4, WIN),
        "power": (4, 257, 63),
        "spectrogram": (4, 1, 64, 101),
    }[stage]
    x = rng.standard_normal(shape).astype(np.float32)
    return torch.from_numpy(np.abs(x) if stage == "power" else 0.1 * x)


@pytest.mark.parametrize("cls", TRANSFORMS, ids=lambda c: c.__name__)
def test_contract_every_registered_transform(cls: type[Transform], tmp_path: Path) -> None:
    """Shape, dtype, finite; p=0 is the identity; ``apply`` is deterministic given the drawn
    parameters; the same seed draws the same parameters."""
    write(
        tmp_path / "noise" / "n.wav",
        (0.1 * np.random.default_rng(0).standard_normal(SR)).astype(np.float32),
        SR,
    )
    context = Context(SR, WIN, MARGIN)

    def make(p: float) -> Transform:
        block = getattr(AugmentConfig(), cls.name).model_copy(update={"p": p})
        if cls.name == "background":
            block = block.model_copy(update={"dir": str(tmp_path / "noise")})
        if not cls.applies(block):  # the pitch block: the other mode
            block = block.model_copy(update={"mode": "waveform"})
        assert cls.applies(block)
        return cls(block, context)

    x = _inputs(cls.stage, np.random.default_rng(1))
    expected = x[:, MARGIN : MARGIN + WIN] if cls.stage == "read" else x
    assert torch.equal(make(0.0)(x, torch.Generator().manual_seed(0)), expected)
    t = make(1.0)
    params = t.draw(x, torch.Generator().manual_seed(0))
    out = t.apply(x, params)
    assert out.shape == expected.shape and out.dtype == torch.float32 and bool(torch.isfinite(out).all())
    assert not torch.equal(out, expected)
    assert torch.equal(t.apply(x, params), out)
    assert torch.equal(t(x, torch.Generator().manual_seed(0)), out)


def test_a_pipeline_composes_any_transforms() -> None:
    context = Context(SR, WIN, MARGIN)
    shift = TimeShift(TimeShiftConfig(p=1.0), context)
    gains = [Gain(GainConfig(p=1.0, min_db=-6, max_db=-6), context) for _ in range(2)]
    a = Augmenter(
        AugmentConfig(),
        sample_rate=SR,
        window_samples=WIN,
        margin_samples=MARGIN,
        seed=0,
        transforms=[shift, *gains],
    )
    seg = _segments()
    y = a.read(seg)
    x = a.waveform(y)
    assert x.shape == (4, WIN) and not torch.equal(y, seg[:, MARGIN : MARGIN + WIN])  # shifted
    db = 20 * torch.log10(x.pow(2).mean(1).sqrt() / y.pow(2).mean(1).sqrt())
    np.testing.assert_allclose(db.numpy(), -12.0, atol=1e-4)  # the two gains add up
    assert a.active and "TimeShift" in repr(a)


def test_config_blocks_and_the_earlier_flat_keys(tmp_path: Path) -> None:
    from chirpkit.config import load_config
    from chirpkit.training.tuning import DEFAULT_SPACE

    new = load_config(
        overrides=["augment.noise.p=0.5", "augment.noise.min_snr_db=5", "augment.pitch.mode=waveform"]
    )
    old = load_config(
        overrides=["augment.noise_p=0.5", "augment.min_snr_db=5", "augment.pitch_mode=waveform"]
    )
    assert new == old and new.augment.noise.max_snr_db == 30.0  # the rest of the block kept
    (tmp_path / "old.yaml").write_text("augment: {mixup_p: 0.4, mixup_alpha: 0.2, max_freq_bins: 20}\n")
    (tmp_path / "new.yaml").write_text(
        "augment:\n  mixup: {p: 0.4, alpha: 0.2}\n  freq_mask: {max_bins: 20}\n"
    )
    assert load_config(tmp_path / "old.yaml") == load_config(tmp_path / "new.yaml")
    # the order given decides, whatever the form: file, then overrides, on a base config
    both = load_config(tmp_path / "old.yaml", ["augment.mixup.p=0.1"], base=new)
    assert both.augment.mixup.p == 0.1 and both.augment.mixup.alpha == 0.2 and both.augment.noise.p == 0.5
    assert (
        load_config(base=both, overrides={"augment.mixup.p": 0.3, "augment.mixup_p": 0.2}).augment.mixup.p
        == 0.2
    )
    # a run's hparams from an earlier version: a flat dict
    flat = {"time_shift_p": 0.2, "max_shift_fraction": 0.1, "gain_p": 0.0, "time_masks": 3}
    cfg = AugmentConfig.model_validate(flat)
    assert (cfg.time_shift.p, cfg.time_shift.max_fraction, cfg.gain.p, cfg.time_mask.masks) == (
        0.2,
        0.1,
        0.0,
        3,
    )
    assert AugmentConfig.model_validate(cfg.model_dump()) == cfg
    assert AugmentConfig().enabled() == ["time_shift", "gain", "noise", "freq_mask", "time_mask"]
    assert AugmentConfig().off().enabled() == [] and AugmentConfig().off().noise.min_snr_db == 3.0
    for key, space in DEFAULT_SPACE.items():  # every key of the default tune space is valid
        load_config(overrides={key: space[0] if isinstance(space, list) else space["low"]})
    with pytest.raises(
        ConfigError,
        match=r"augment\.noise_P'\. Did you mean 'noise_p'\?.*Valid keys in 'augment': background, ",
    ):
        load_config(overrides=["augment.noise_P=1"])
    with pytest.raises(ConfigError, match=r"Valid keys in 'augment.gain': max_db, min_db, p"):
        load_config(overrides=["augment.gain.snr=1"])
    with pytest.raises(ConfigError, match=r"augment\.gain: .*min_db=20\.0 must be <= max_db=12\.0"):
        load_config(overrides=["augment.min_gain_db=20"])
    with pytest.raises(ConfigError, match=r"augment\.noise\.p: .*less than or equal to 1"):
        load_config(overrides=["augment.noise_p=2"])


def test_augment_preview_png(tmp_path: Path) -> None:
    from chirpkit.augment.preview import augment_preview
    from chirpkit.config import load_config

    p = write(tmp_path / "call.wav", tone(3000, 4.0, SR) * 0.5, SR)
    cfg = load_config(overrides={"audio.sample_rate": SR, "audio.window_s": 1.0, "features.n_mels": 32})
    out = augment_preview(p, out=tmp_path / "grid.png", config=cfg)
    assert out.read_bytes()[:4] == b"\x89PNG"


def _burst(freq: float, seconds: float, on: tuple[float, float]) -> torch.Tensor:
    y = np.zeros(int(seconds * SR), np.float32)
    a, b = int(on[0] * SR), int(on[1] * SR)
    y[a:b] = tone(freq, (b - a) / SR, SR) * np.hanning(b - a)
    return torch.from_numpy(y)


def _peak_hz(y: torch.Tensor) -> float:
    spec = torch.fft.rfft(y).abs()
    return float(spec.argmax()) * SR / y.shape[-1]


def _span_s(y: torch.Tensor) -> tuple[float, float]:
    env = y.abs().numpy()
    on = np.flatnonzero(env > 0.5 * env.max())
    return on[0] / SR, on[-1] / SR


def test_phase_vocoder_matches_librosa_in_float64() -> None:
    import librosa

    from chirpkit.augment import phase_vocoder

    y = _burst(2000, 2.0, (0.5, 1.5)).numpy() + 0.01 * np.random.default_rng(0).standard_normal(2 * SR)
    stft = librosa.stft(y.astype(np.float32), n_fft=1024, hop_length=256)
    for rate in (0.8, 1.25):
        ref = librosa.phase_vocoder(stft.astype(np.complex128), rate=rate, hop_length=256)
        ours = phase_vocoder(torch.from_numpy(stft), rate, 256).numpy()
        np.testing.assert_allclose(ours, ref, atol=1e-4 * np.abs(ref).max())


def test_time_stretch_changes_tempo_not_pitch() -> None:
    from chirpkit.augment import time_stretch

    y = _burst(2000, 2.0, (0.5, 1.5))
    for rate in (0.8, 1.25):
        out = time_stretch(y, rate)
        assert out.shape[-1] == round(y.shape[-1] / rate)
        assert _peak_hz(out) == pytest.approx(2000, abs=2 * SR / out.shape[-1])
        a, b = _span_s(out)
        c, d = _span_s(y)
        assert (b - a) == pytest.approx((d - c) / rate, rel=0.05)


@pytest.mark.parametrize("semitones", [-4.0, 3.0])
def test_waveform_pitch_shift_changes_pitch_not_tempo(semitones: float) -> None:
    from chirpkit.augment import pitch_shift

    y = _burst(2000, 2.0, (0.5, 1.5))
    out = pitch_shift(y, semitones)
    assert out.shape == y.shape
    assert _peak_hz(out) == pytest.approx(2000 * 2 ** (semitones / 12), rel=0.01)
    a, b = _span_s(out)
    c, d = _span_s(y)
    assert a == pytest.approx(c, abs=0.03) and b == pytest.approx(d, abs=0.03)  # same time, same length


def test_augmenter_stretch_and_waveform_pitch() -> None:
    seg = _burst(2000, (WIN + 2 * MARGIN) / SR, (0.75, 1.25))[None].repeat(8, 1)  # centred, 0.5 s
    stretched = _aug(stretch={"p": 1.0, "min_rate": 0.8, "max_rate": 0.8}).read(seg)
    c, d = _span_s(seg[0])
    for x in stretched:  # 0.8x the tempo: the call lasts 1 / 0.8 as long, at the same pitch
        a, b = _span_s(x)
        assert (b - a) == pytest.approx((d - c) / 0.8, rel=0.05)
        assert _peak_hz(x) == pytest.approx(2000, abs=3)
    shifted = _aug(pitch={"p": 1.0, "max_semitones": 4.0, "mode": "waveform"}).read(seg)
    peaks = np.array([_peak_hz(x) for x in shifted])
    assert peaks.min() >= 2000 * 2 ** (-4 / 12) - 3 and peaks.max() <= 2000 * 2 ** (4 / 12) + 3
    assert peaks.std() > 50  # a different shift per example
    for x in shifted:  # the call stays where it was, as long as it was
        a, b = _span_s(x)
        c, d = _span_s(seg[0, MARGIN : MARGIN + WIN])
        assert a == pytest.approx(c, abs=0.03) and b == pytest.approx(d, abs=0.03)
    power = torch.rand(2, 257, 11)  # waveform mode leaves the spectrogram stage alone
    assert torch.equal(_aug(pitch={"p": 1.0, "mode": "waveform"}).power(power), power)


# -- the random stream, pinned -------------------------------------------------------------------
# Batches of the whole pipeline (read, waveform, mixup, power, spectrogram) for a seed, for the
# default config and for every transform on (both pitch modes), as the single-class Augmenter gave
# them before augmentations became separate transforms (tests/data/augment_reference.npz; on the
# machine that wrote it the new pipeline matched bit for bit). Subsampled to keep the file small;
# compared to float32 rounding so that another CPU's FFT does not fail it, while any change in the
# order or number of random draws does. Rewrite (only after an intended change of the draws):
# CHIRPKIT_UPDATE_SNAPSHOTS=1 pytest tests/test_augment.py -k reference
REFERENCE = Path(__file__).parent / "data" / "augment_reference.npz"


def _reference_batches(noise_dir: Path) -> dict[str, np.ndarray]:
    from chirpkit.config import FeatureConfig, load_config
    from chirpkit.features import build_frontend

    sr, win, margin, b = 8000, 4000, 1000, 6
    write(
        noise_dir / "n.wav", (0.1 * np.random.default_rng(9).standard_normal(sr * 3)).astype(np.float32), sr
    )
    every = {
        **{f"{k}_p": 0.7 for k in ("time_shift", "speed", "gain", "noise", "background", "stretch")},
        **{f"{k}_p": 0.7 for k in ("pitch", "mixup", "freq_mask", "time_mask")},
        **{"background_dir": str(noise_dir), "freq_masks": 2, "time_masks": 2},
    }
    cases = {
        "default": {},
        "all_spectrogram_pitch": every,
        "all_waveform_pitch": {**every, "pitch_mode": "waveform"},
    }
    frontend = build_frontend(FeatureConfig(n_fft=512, hop_length=160, n_mels=32), sr)
    segs = torch.from_numpy(
        (0.1 * np.random.default_rng(0).standard_normal((2, b, win + 2 * margin))).astype(np.float32)
    )
    segs[:, :, 3000:3400] += torch.from_numpy(np.sin(np.arange(400) * 0.7).astype(np.float32))
    out = {}
    for name, kw in cases.items():
        cfg = load_config(overrides={f"augment.{k}": v for k, v in kw.items()}).augment  # the old flat keys
        aug = Augmenter(cfg, sample_rate=sr, window_samples=win, margin_samples=margin, seed=5)
        for i in range(2):
            x = aug.waveform(aug.read(segs[i]))
            x, target = aug.mixup(x, torch.eye(3)[torch.arange(b) % 3])
            spec = aug.spectrogram(frontend(x, aug.power))
            out[f"{name}/{i}/x"] = x[:, ::40].numpy()
            out[f"{name}/{i}/target"] = target.numpy()
            out[f"{name}/{i}/spec"] = spec[:, 0, ::2, ::2].detach().numpy()
    return out


def test_random_stream_matches_the_reference(tmp_path: Path) -> None:
    import os

    got = _reference_batches(tmp_path / "noise")
    if os.environ.get("CHIRPKIT_UPDATE_SNAPSHOTS"):
        np.savez_compressed(REFERENCE, **got)
    want = dict(np.load(REFERENCE))
    assert sorted(got) == sorted(want)
    for key, ref in want.items():
        np.testing.assert_allclose(got[key], ref, rtol=1e-5, atol=1e-5, err_msg=key)
