"""One typed, validated configuration for every stage.

A config is a YAML file with one section per stage (``audio``, ``features``, ``model``, ``train``,
``augment``, ``split``, ``detect``); any key left out takes its default. Command-line overrides
use dotted keys, e.g. ``--set train.epochs=5 --set features.n_mels=128``. An unknown key is an
error that lists the valid keys of its section.
"""

from __future__ import annotations

import difflib
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from chirpkit.errors import ConfigError

__all__ = [
    "ACCELERATORS",
    "PRECISIONS",
    "AudioConfig",
    "AugmentConfig",
    "Config",
    "DetectConfig",
    "FeatureConfig",
    "ModelConfig",
    "SplitConfig",
    "TrainConfig",
    "check_accelerator",
    "load_config",
]

#: ``train.precision`` values: Lightning's (``lightning.fabric.connector._PRECISION_INPUT``) + auto
PRECISIONS = (
    "auto",
    "transformer-engine",
    "transformer-engine-float16",
    "16-true",
    "16-mixed",
    "bf16-true",
    "bf16-mixed",
    "32-true",
    "64-true",
    "64",
    "32",
    "16",
    "bf16",
)
#: ``train.accelerator`` values Lightning knows (``gpu`` is its alias of ``cuda``)
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps", "tpu")


class _Section(BaseModel):
    # allow_inf_nan=False: every float setting must be a finite number (inf/nan are rejected)
    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False, allow_inf_nan=False)


class AudioConfig(_Section):
    """How ``prepare`` turns recordings into fixed windows (these settings shape the store)."""

    sample_rate: int = Field(32000, gt=0, description="target sample rate in Hz (audio is resampled)")
    window_s: float = Field(3.0, gt=0, le=600, description="window (clip) length in seconds")
    window_hop_s: float | None = Field(
        None,
        gt=0,
        description="hop between windows cut from long clips (prepare) and over long annotation boxes "
        "(ingest); default = window_s",
    )
    margin_s: float = Field(
        0.5, ge=0, le=60, description="real audio kept on both sides of each window (room for time shifts)"
    )
    dtype: Literal["int16", "float16", "float32"] = Field("int16", description="sample type on disk")
    highpass_hz: float | None = Field(None, gt=0, description="Butterworth high-pass cutoff; None = off")
    highpass_order: int = Field(
        4, ge=1, le=12, description="order of the high-pass filter (steeper when higher)"
    )
    denoise: Literal["off", "stationary", "nonstationary"] = Field(
        "off", description="spectral-gating noise reduction (noisereduce)"
    )
    denoise_strength: float = Field(1.0, gt=0, le=1, description="noisereduce prop_decrease")
    normalize: Literal["off", "peak", "rms"] = Field("off", description="per-window level normalisation")
    normalize_db: float | None = Field(None, le=0, description="target dBFS; default -1 (peak) / -20 (rms)")
    workers: int = Field(
        0,
        ge=0,
        description="decode threads, 0 = one per CPU core (max 8); prepare on Dask: the processes of "
        "a local cluster, 0 = one per CPU core",
    )

    @field_validator("denoise", "normalize", mode="before")
    @classmethod
    def _yaml_off(cls, value: Any) -> Any:
        # YAML 1.1 reads a bare `off` as False: `denoise: off` in a config file means "off"
        return "off" if value is False else value

    @model_validator(mode="after")
    def _check_audio(self) -> AudioConfig:
        if self.highpass_hz is not None and self.highpass_hz >= self.sample_rate / 2:
            raise ValueError(
                f"highpass_hz={self.highpass_hz} must be below the Nyquist frequency "
                f"{self.sample_rate / 2} Hz"
            )
        return self

    def shaping(self) -> dict[str, Any]:
        """The settings that change stored samples (``workers`` does not)."""
        return self.model_dump(exclude={"workers"})

    @property
    def hop_s(self) -> float:
        return self.window_hop_s if self.window_hop_s is not None else self.window_s


class FeatureConfig(_Section):
    """Spectrogram front-end computed on batches (CPU or GPU) inside the model."""

    kind: Literal["logmel", "stft", "mfcc", "pcen"] = Field(
        "logmel", description="front-end: log-mel, STFT, MFCC or PCEN (per-channel energy normalisation)"
    )
    n_fft: int = Field(1024, gt=0, description="FFT length in samples (frequency resolution)")
    hop_length: int = Field(
        640,
        gt=0,
        description="samples between frames (640 = 20 ms at 32 kHz; the measured results in docs/measured.md "
        "compare hops)",
    )
    win_length: int | None = Field(None, gt=0, description="analysis window in samples; default n_fft")
    n_mels: int = Field(64, gt=0, description="mel bands (kind: logmel, mfcc, pcen)")
    fmin_hz: float = Field(50.0, ge=0, description="lowest frequency of the mel bands")
    fmax_hz: float | None = Field(None, gt=0, description="default: sample_rate / 2")
    n_mfcc: int = Field(20, gt=0, description="coefficients kept (kind: mfcc)")
    stft_scale: Literal["db", "power", "magnitude"] = Field(
        "db", description="kind: stft; power in dB, power, or magnitude (|STFT|)"
    )
    pcen_time_constant_s: float = Field(0.4, gt=0, description="PCEN smoother time constant (kind: pcen)")
    pcen_gain: float = Field(
        0.98, ge=0, le=1, description="PCEN gain: how much the smoothed energy divides out"
    )
    pcen_bias: float = Field(2.0, gt=0, description="PCEN bias")
    pcen_power: float = Field(0.5, gt=0, le=1, description="PCEN root compression exponent")
    floor: Literal["none", "median"] = Field(
        "none",
        description="'median' subtracts each bin's median over time, per example: removes a "
        "recording's stationary background (level, noise colour), which helps transient calls in "
        "varying noise; it also removes stationary sounds (engines, rain, drones), so keep 'none' "
        "for those",
    )

    @model_validator(mode="after")
    def _check(self) -> FeatureConfig:
        if self.win_length is not None and self.win_length > self.n_fft:
            raise ValueError(f"win_length={self.win_length} must be <= n_fft={self.n_fft}")
        if self.fmax_hz is not None and self.fmax_hz <= self.fmin_hz:
            raise ValueError(f"fmax_hz={self.fmax_hz} must be greater than fmin_hz={self.fmin_hz}")
        if self.kind == "mfcc" and self.n_mfcc > self.n_mels:
            raise ValueError(
                f"n_mfcc={self.n_mfcc} must be <= n_mels={self.n_mels} (MFCCs are taken from the mel bands): "
                "lower features.n_mfcc or raise features.n_mels"
            )
        return self


class ModelConfig(_Section):
    """Which registered model to build (``chirpkit.models.list_models()``) and its options."""

    name: str = Field("small_cnn", description="registered model (chirpkit.list_models()) or timm/<name>")
    pretrained: bool = Field(False, description="start from ImageNet weights (timm models)")
    pretrained_file: str | None = Field(None, description="local weights file for pretrained (offline)")
    dropout: float = Field(0.3, ge=0, lt=1, description="dropout before the classifier layer")
    params: dict[str, Any] = Field(default_factory=dict, description="extra model keyword arguments")
    init_from: str | None = Field(
        None,
        description="warm start: a run folder or model.pt of the same model.name; its weights are "
        "copied, output rows class by class (new classes start fresh)",
    )
    embedding_views: int = Field(
        1,
        ge=1,
        le=9,
        description="embedding models: embeddings per window, the centre and time shifts of "
        "embedding_shift_s into the stored margin; training draws one per window and epoch",
    )
    embedding_shift_s: float = Field(0.5, gt=0, description="time shift between embedding views")


class TrainConfig(_Section):
    epochs: int = Field(30, gt=0, description="training epochs (train.patience may stop sooner)")
    batch_size: int = Field(32, gt=0, description="training windows per batch")
    lr: float = Field(1e-3, gt=0, description="peak learning rate (AdamW, warm-up then cosine decay)")
    weight_decay: float = Field(1e-2, ge=0, description="AdamW's decoupled weight decay")
    warmup_epochs: float = Field(1.0, ge=0, description="linear warm-up before the cosine decay")
    class_weights: Literal["balanced", "none"] = Field(
        "balanced", description="balanced: loss weights inversely proportional to class counts"
    )
    loss: Literal["ce", "focal", "bce"] = Field(
        "ce", description="ce (softmax), focal (softmax, hard examples), bce (sigmoid per class: multi-label)"
    )
    focal_gamma: float = Field(2.0, ge=0, description="focal loss focusing parameter (loss: focal)")
    label_smoothing: float = Field(
        0.0, ge=0, lt=1, description="share of each target spread over the other classes"
    )
    sampler: Literal["none", "weighted"] = Field(
        "none",
        description="weighted: WeightedRandomSampler with per-window weight count(label)^-sampler_power",
    )
    sampler_power: float = Field(
        0.5, ge=0, le=1, description="0.5 = square-root balancing, 1 = full balancing"
    )
    grad_clip: float | None = Field(None, gt=0, description="clip the gradient norm to this value")
    tensorboard: bool = Field(
        True, description="TensorBoard logs in RUN/tb (needs tensorboard or tensorboardX)"
    )
    seed: int = Field(0, description="seed of the weights, the batch order and the augmentations")
    num_workers: int | Literal["auto"] = Field(
        "auto", description="DataLoader worker processes; auto picks from the CPU count"
    )
    accelerator: str = Field("auto", description="'auto', 'cpu', 'gpu' (= 'cuda'), 'mps', 'tpu'")
    devices: int | str = Field("auto", description="Lightning's devices: a count, a list like '0,1', or auto")
    precision: str = Field(
        "auto",
        description="'auto' = bf16-mixed (16-mixed without bf16) on CUDA, 32-true elsewhere; or any of "
        "Lightning's: 32-true, 16-mixed, bf16-mixed, 16-true, bf16-true, 64-true",
    )
    patience: int | None = Field(None, gt=0, description="early stopping on val macro F1 (epochs)")
    deterministic: bool = Field(False, description="deterministic kernels (reproducible, slower on GPU)")
    cache_features: bool = Field(
        False,
        description="compute the front-end once per store window and train on it (needs every "
        "augmentation but the frequency and time masks off)",
    )
    retain_cpu_memory: bool = Field(
        True,
        description="CPU training on Linux/glibc: keep freed blocks in the heap (mallopt) instead of "
        "unmapping them: faster steps for more peak memory (figures in docs/measured.md)",
    )
    teacher: str | None = Field(
        None,
        description="distillation: a run folder or model file whose scores on every training window "
        "are soft targets (any model family; it must know every class of the store)",
    )
    distill_weight: float = Field(
        0.5, ge=0, le=1, description="share of the loss on the teacher's soft targets (the rest on labels)"
    )
    distill_temperature: float = Field(2.0, gt=0, description="softens teacher and student scores")
    unlabelled: list[str] = Field(
        default_factory=list,
        description="prepared stores of unlabelled audio, trained on the teacher's soft targets only "
        "(chirpkit distill prepares them from folders of recordings)",
    )
    pseudo_labels: list[float] = Field(
        default_factory=list,
        description="self-training: [low, high] turns the teacher's scores on unlabelled windows into "
        "hard labels (a class scored at high or more is present, below low absent; a window with a "
        "score between is left out) and labelled windows keep their own labels; empty: the "
        "teacher's soft targets everywhere",
    )
    prior_folds: int = Field(
        0,
        ge=0,
        description="heads that start as BirdNET (birdnet_prior): grouped folds over the training "
        "recordings that choose the pull (train.prior_l2) and the epochs (train.prior_epochs) by "
        "out-of-fold log loss, and keep BirdNET's row for each class whose out-of-fold scores do not "
        "beat it; 0: off",
    )
    prior_l2: list[float] = Field(
        default_factory=lambda: [1e-3, 1e-2, 1e-1, 1.0],
        min_length=1,
        description="pulls towards BirdNET (model.params.l2) that train.prior_folds tries",
    )
    prior_epochs: list[int] = Field(
        default_factory=list,
        description="epoch counts that train.prior_folds tries; empty: train.epochs alone",
    )
    prior_margin: float = Field(
        0.0,
        ge=0,
        description="train.prior_folds keeps BirdNET's row for a class unless the trained row beats "
        "it by this many standard errors (over recordings) of the out-of-fold gain in log loss; "
        "0: any gain replaces it",
    )
    background_filter: float = Field(
        1.0,
        ge=0,
        le=1,
        description="heads that start as BirdNET: background windows (detect.background_labels) on "
        "which BirdNET scores one of the run's species at least this much are left out of training, "
        "since they may hold that species (listed in background_dropped.csv); 1: keep them all",
    )

    @field_validator("pseudo_labels")
    @classmethod
    def _check_pseudo_labels(cls, value: list[float]) -> list[float]:
        if value and not (len(value) == 2 and 0 <= value[0] <= value[1] <= 1):
            raise ValueError(f"pseudo_labels={value}: give [low, high] with 0 <= low <= high <= 1, or []")
        return value

    @field_validator("prior_folds")
    @classmethod
    def _check_prior_folds(cls, value: int) -> int:
        if value == 1:
            raise ValueError("prior_folds=1 leaves nothing to train on: use 0 (off) or at least 2")
        return value

    @field_validator("prior_l2")
    @classmethod
    def _check_prior_l2(cls, value: list[float]) -> list[float]:
        bad = [v for v in value if not (v >= 0 and math.isfinite(v))]
        if bad:
            raise ValueError(f"prior_l2 {bad} must be finite numbers >= 0")
        return value

    @field_validator("prior_epochs")
    @classmethod
    def _check_prior_epochs(cls, value: list[int]) -> list[int]:
        bad = [v for v in value if v < 1]
        if bad:
            raise ValueError(f"prior_epochs {bad} must be at least 1")
        return value

    @field_validator("precision", mode="before")
    @classmethod
    def _precision_text(cls, value: Any) -> Any:
        # YAML reads `precision: 16` as a number; Lightning takes "16" as well
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @field_validator("precision")
    @classmethod
    def _check_precision(cls, value: str) -> str:
        if value not in PRECISIONS:
            close = difflib.get_close_matches(value, PRECISIONS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"precision {value!r} is not valid{hint}; use one of {', '.join(PRECISIONS)}")
        return value

    @field_validator("accelerator")
    @classmethod
    def _check_accelerator_name(cls, value: str) -> str:
        if value.lower() not in ACCELERATORS:
            raise ValueError(f"accelerator {value!r} is not known; use one of {', '.join(ACCELERATORS)}")
        return value.lower()


class _Transform(_Section):
    """One augmentation's block: ``p`` is its per-example probability; ``min_x <= max_x``."""

    p: float = Field(0.0, ge=0, le=1, description="per-example probability")

    @model_validator(mode="after")
    def _ranges(self) -> _Transform:
        fields = type(self).model_fields
        for lo in [f for f in fields if f.startswith("min_")]:
            hi = "max_" + lo[4:]
            if hi in fields and getattr(self, lo) > getattr(self, hi):
                raise ValueError(f"{lo}={getattr(self, lo)} must be <= {hi}={getattr(self, hi)}")
        return self


class TimeShiftConfig(_Transform):
    """Move the window by up to ±``max_fraction`` of its length, within the stored margin."""

    p: float = Field(0.5, ge=0, le=1, description="per-example probability")
    max_fraction: float = Field(0.3, ge=0, le=1, description="of the window; limited by audio.margin_s")


class SpeedConfig(_Transform):
    """Play faster or slower by resampling: tempo and pitch change together."""

    min_rate: float = Field(0.8, gt=0, description="< 1 slower and lower, > 1 faster and higher")
    max_rate: float = Field(1.2, gt=0, description="fastest rate (1 = unchanged)")


class GainConfig(_Transform):
    p: float = Field(0.5, ge=0, le=1, description="per-example probability")
    min_db: float = Field(-12.0, description="lowest gain in dB")
    max_db: float = Field(12.0, description="highest gain in dB")


class NoiseConfig(_Transform):
    """Pink-to-brown noise (power ∝ 1/f^exponent) at a signal-to-noise ratio."""

    p: float = Field(0.3, ge=0, le=1, description="per-example probability")
    min_snr_db: float = Field(3.0, description="lowest signal-to-noise ratio in dB")
    max_snr_db: float = Field(30.0, description="highest signal-to-noise ratio in dB")
    min_exponent: float = Field(1.0, ge=0, le=3, description="1 = pink")
    max_exponent: float = Field(2.0, ge=0, le=3, description="2 = brown")


class BackgroundConfig(_Transform):
    """Recorded noise from a folder of audio (preloaded once) at a signal-to-noise ratio."""

    dir: str | None = Field(None, description="folder of noise recordings (searched recursively)")
    minutes: float = Field(20.0, gt=0, description="at most this much noise is preloaded")
    min_snr_db: float = Field(0.0, description="lowest call-to-background ratio in dB")
    max_snr_db: float = Field(20.0, description="highest call-to-background ratio in dB")


class StretchConfig(_Transform):
    """Time-stretch by a phase vocoder: tempo changes, pitch does not."""

    min_rate: float = Field(0.8, gt=0, description="< 1 slower (longer), > 1 faster")
    max_rate: float = Field(1.2, gt=0, description="fastest rate (1 = unchanged)")


class PitchConfig(_Transform):
    """Pitch shift by up to ±``max_semitones``, tempo unchanged."""

    max_semitones: float = Field(4.0, ge=0, le=12, description="largest shift, up or down, in semitones")
    mode: Literal["spectrogram", "waveform"] = Field(
        "spectrogram",
        description="spectrogram: warp the frequency axis (cheap); waveform: phase-vocoder time-stretch "
        "then resample, as librosa's pitch_shift (about 11 ms per 3 s window at 32 kHz on a CPU core)",
    )


class MixupConfig(_Transform):
    """Mix an example with a random partner of the batch; labels are mixed alike."""

    alpha: float = Field(0.4, gt=0, description="Beta(alpha, alpha) mixing weights")


class FreqMaskConfig(_Transform):
    p: float = Field(0.5, ge=0, le=1, description="per-example probability")
    max_bins: int = Field(10, ge=0, description="widest mask, in frequency bins")
    masks: int = Field(1, ge=0, description="masks per chosen example")


class TimeMaskConfig(_Transform):
    p: float = Field(0.5, ge=0, le=1, description="per-example probability")
    max_frames: int = Field(10, ge=0, description="widest mask, in frames")
    masks: int = Field(1, ge=0, description="masks per chosen example")


class AugmentConfig(_Section):
    """Training-time augmentations (``chirpkit.augment``): one block per transform, each with its
    per-example probability ``p`` (0 = off) and ranges with units.

    The flat keys of earlier versions (``noise_p``, ``min_snr_db``, ``pitch_mode``, ...) are
    still accepted, in files, ``--set`` overrides and tune spaces: :data:`LEGACY_KEYS` maps them
    to their block. Keys apply in the order given, so a later one wins.
    """

    time_shift: TimeShiftConfig = Field(
        default_factory=TimeShiftConfig, description="move the window within the stored margin"
    )
    speed: SpeedConfig = Field(
        default_factory=SpeedConfig, description="play faster or slower (pitch moves too)"
    )
    stretch: StretchConfig = Field(default_factory=StretchConfig, description="time-stretch, pitch kept")
    pitch: PitchConfig = Field(
        default_factory=PitchConfig, description="pitch shift in semitones, length kept"
    )
    gain: GainConfig = Field(default_factory=GainConfig, description="random gain in dB")
    noise: NoiseConfig = Field(default_factory=NoiseConfig, description="coloured noise at a random SNR")
    background: BackgroundConfig = Field(
        default_factory=BackgroundConfig, description="recorded background audio mixed in at a random SNR"
    )
    mixup: MixupConfig = Field(default_factory=MixupConfig, description="mix two examples and their targets")
    freq_mask: FreqMaskConfig = Field(
        default_factory=FreqMaskConfig, description="SpecAugment frequency masks"
    )
    time_mask: TimeMaskConfig = Field(default_factory=TimeMaskConfig, description="SpecAugment time masks")

    # fmt: off
    LEGACY_KEYS: ClassVar[dict[str, tuple[str, str]]] = {
        **{f"{block}_p": (block, "p") for block in (
            "time_shift", "speed", "stretch", "pitch", "gain", "noise", "background", "mixup", "freq_mask",
            "time_mask")},
        "max_shift_fraction": ("time_shift", "max_fraction"),
        "min_speed": ("speed", "min_rate"), "max_speed": ("speed", "max_rate"),
        "min_stretch": ("stretch", "min_rate"), "max_stretch": ("stretch", "max_rate"),
        "max_semitones": ("pitch", "max_semitones"), "pitch_mode": ("pitch", "mode"),
        "min_gain_db": ("gain", "min_db"), "max_gain_db": ("gain", "max_db"),
        "min_snr_db": ("noise", "min_snr_db"), "max_snr_db": ("noise", "max_snr_db"),
        "min_noise_exponent": ("noise", "min_exponent"), "max_noise_exponent": ("noise", "max_exponent"),
        "background_dir": ("background", "dir"), "background_minutes": ("background", "minutes"),
        "min_background_snr_db": ("background", "min_snr_db"),
        "max_background_snr_db": ("background", "max_snr_db"),
        "mixup_alpha": ("mixup", "alpha"),
        "max_freq_bins": ("freq_mask", "max_bins"), "freq_masks": ("freq_mask", "masks"),
        "max_time_frames": ("time_mask", "max_frames"), "time_masks": ("time_mask", "masks"),
    }
    # fmt: on

    @model_validator(mode="before")
    @classmethod
    def _blocks(cls, data: Any) -> Any:
        """Translate the flat keys into their blocks; blocks given in part are merged, in order."""
        if not isinstance(data, dict):
            return data
        out: dict[str, Any] = {}
        for key, value in data.items():
            if key in cls.LEGACY_KEYS:
                block, name = cls.LEGACY_KEYS[key]
                value = {name: value}
            else:
                block = key
            if isinstance(value, BaseModel):
                value = value.model_dump()
            if isinstance(value, dict) and isinstance(out.get(block), dict):
                value = {**out[block], **value}
            out[block] = value
        return out

    def enabled(self) -> list[str]:
        """The blocks whose ``p`` is above 0, e.g. ``["time_shift", "gain"]``."""
        return [name for name in type(self).model_fields if getattr(self, name).p > 0]

    def off(self) -> AugmentConfig:
        """The same ranges with every probability set to 0."""
        return self.model_copy(
            update={
                name: getattr(self, name).model_copy(update={"p": 0.0}) for name in type(self).model_fields
            }
        )


class SplitConfig(_Section):
    """Leakage-free splits (see :func:`chirpkit.split` for the strategy)."""

    strategy: Literal["stratified-group"] = Field(
        "stratified-group",
        description="stratified-group: nested StratifiedGroupKFold on classes with many groups; the "
        "groups of classes with few are dealt out in turn (train, then test, then val)",
    )
    val_fraction: float = Field(
        0.15,
        ge=0,
        lt=1,
        description="about this share of the examples goes to val (with split.folds, val is fold 0)",
    )
    test_fraction: float = Field(
        0.15, ge=0, lt=1, description="about this share of the examples goes to test"
    )
    min_count: int = Field(10, ge=0, description="classes with fewer examples are excluded (0 keeps all)")
    folds: int = Field(
        0,
        ge=0,
        description="K >= 2 adds a 'fold' column for K-fold cross-validation; a class with few groups "
        "gets one group per fold in turn, so with K + 1 groups it is in every fold",
    )
    few_groups: int = Field(
        0,
        ge=0,
        description="classes with fewer groups are dealt out group by group (train, test, val, folds "
        "in turn) instead of by stratified folds; 0 = auto (the groups the stratified folds need)",
    )
    seed: int = Field(0, description="seed of the split")

    @model_validator(mode="after")
    def _check(self) -> SplitConfig:
        if self.folds == 1:
            raise ValueError("folds=1 is not cross-validation: use 0 (no folds) or K >= 2")
        if self.val_fraction + self.test_fraction >= 1:
            raise ValueError(
                f"val_fraction + test_fraction = {self.val_fraction + self.test_fraction} must be < 1"
            )
        return self


DetectFormat = Literal["csv", "parquet", "raven", "audacity", "scores"]


def _csv_only() -> list[DetectFormat]:
    return ["csv"]


class DetectConfig(_Section):
    """Detection over long recordings (``chirpkit detect``)."""

    hop_s: float | None = Field(
        None, gt=0, allow_inf_nan=False, description="hop between windows; default = window / 2"
    )
    min_score: float = Field(
        0.5, ge=0, le=1, description="lowest score kept when no per-class thresholds apply"
    )
    thresholds: Literal["auto", "none"] = Field(
        "auto",
        description="auto: the run's thresholds.json (chirpkit evaluate --thresholds or calibrate "
        "--apply) when present; none: min_score for every class",
    )
    top_k: int = Field(1, ge=1, description="labels kept per window (each still needs its threshold)")
    batch_size: int = Field(32, gt=0, description="windows per model call; memory grows with it")
    background_labels: list[str] = Field(
        default_factory=lambda: ["noise"],
        description="classes never written as detections (those set when training travel with the model)",
    )
    formats: list[DetectFormat] = Field(
        default_factory=_csv_only,
        description="outputs besides detections.csv and events.csv (always written): parquet, raven, "
        "audacity, scores (scores.parquet: every class's score for every window, float16, for "
        "score-detections' threshold-free measures)",
    )
    merge_gap_s: float = Field(
        0.0,
        ge=0,
        allow_inf_nan=False,
        description="windows of one label at most this far apart form one event",
    )
    workers: int = Field(
        2,
        ge=1,
        description="engine local: work units decoded ahead of the model, in threads; engine dask: "
        "worker processes of the local cluster",
    )
    block_s: float = Field(
        60.0,
        gt=0,
        allow_inf_nan=False,
        description="decode block length; memory stays flat whatever the file length",
    )
    shard_s: float | None = Field(
        1800.0,
        gt=0,
        allow_inf_nan=False,
        description="files longer than 1.5 × this are cut into time shards (work units) of this "
        "length where their format seeks exactly (WAV, FLAC, AIFF, ...), with results identical to "
        "one pass; null keeps every file whole",
    )


class Config(_Section):
    """The whole configuration; each verb reads the sections it needs."""

    audio: AudioConfig = Field(default_factory=AudioConfig, description="decoding and windows (prepare)")
    features: FeatureConfig = Field(default_factory=FeatureConfig, description="the spectrogram front-end")
    model: ModelConfig = Field(default_factory=ModelConfig, description="the network and its inputs")
    train: TrainConfig = Field(default_factory=TrainConfig, description="the training loop")
    augment: AugmentConfig = Field(
        default_factory=AugmentConfig, description="augmentations of training batches"
    )
    split: SplitConfig = Field(default_factory=SplitConfig, description="train/val/test and folds")
    detect: DetectConfig = Field(default_factory=DetectConfig, description="sliding-window detection")

    @model_validator(mode="after")
    def _check_across_sections(self) -> Config:
        nyquist = self.audio.sample_rate / 2
        f = self.features
        if f.fmax_hz is not None and f.fmax_hz > nyquist:
            raise ValueError(
                f"features.fmax_hz={f.fmax_hz} is above the Nyquist frequency {nyquist:g} Hz of "
                f"audio.sample_rate={self.audio.sample_rate}: lower features.fmax_hz (or leave it unset "
                "for sample_rate / 2), or raise audio.sample_rate"
            )
        if f.fmin_hz >= nyquist:
            raise ValueError(
                f"features.fmin_hz={f.fmin_hz} must be below the Nyquist frequency {nyquist:g} Hz of "
                f"audio.sample_rate={self.audio.sample_rate}"
            )
        return self

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def check_accelerator(name: str, *, key: str = "train.accelerator") -> None:
    """Raise :class:`ConfigError` when the accelerator ``name`` is not available on this machine.

    ``gpu``/``cuda`` need a CUDA device that torch can see, ``mps`` Apple's Metal backend, ``tpu``
    torch_xla; ``auto`` and ``cpu`` always work. Imports torch: call it where training starts.
    """
    import torch

    value = str(name).lower()
    if value in ("gpu", "cuda") and not torch.cuda.is_available():
        build = "a CPU-only torch build" if torch.version.cuda is None else f"CUDA {torch.version.cuda} build"
        raise ConfigError(
            f"{key}={name!r} but torch sees no CUDA GPU on this machine (torch {torch.__version__}, "
            f"{build}); set {key}=cpu, or {key}=auto to use a GPU only where there is one"
        )
    if value == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError(
            f"{key}={name!r} but Apple's MPS backend is not available here; set {key}=cpu or auto"
        )
    if value == "tpu":
        import importlib.util

        if importlib.util.find_spec("torch_xla") is None:
            raise ConfigError(
                f"{key}={name!r} needs torch_xla, which is not installed; set {key}=cpu or auto"
            )


def _check_keys(data: Any, model: type[BaseModel], where: str) -> None:
    """Reject unknown keys with a message that lists the valid ones (and a close match)."""
    if not isinstance(data, dict):
        if where.startswith("file "):
            raise ConfigError(
                f"config {where[5:]} must be a mapping of sections (audio:, train:, ...), "
                f"got a {type(data).__name__}: {str(data)[:80]!r}"
            )
        if where:
            raise ConfigError(f"config section '{where}' must be a mapping of keys, got {data!r}")
        raise ConfigError(f"a config must be a mapping of sections, got {type(data).__name__}")
    fields = model.model_fields
    legacy = getattr(model, "LEGACY_KEYS", {})  # earlier flat keys a section still accepts
    for key, value in data.items():
        dotted = f"{where}.{key}" if where else str(key)
        if key not in fields and key not in legacy:
            valid = sorted(fields)
            close = difflib.get_close_matches(str(key), [*valid, *legacy], n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            section = f"in '{where}'" if where else "at the top level"
            raise ConfigError(
                f"unknown config key '{dotted}'.{hint} Valid keys {section}: {', '.join(valid)}"
            )
        annotation = fields[key].annotation if key in fields else None
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            _check_keys(value, annotation, dotted)


def _parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ConfigError(f"override '{item}' must look like section.key=value, e.g. train.epochs=5")
    key, raw = item.split("=", 1)
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise ConfigError(f"override '{item}' has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"override '{item}': cannot parse value {raw!r}: {exc}") from exc
    return parts, value


def _leaves(
    data: dict[str, Any], model: type[BaseModel], prefix: tuple[str, ...] = ()
) -> Iterator[tuple[list[str], Any]]:
    """``(key path, value)`` of a checked mapping, down to the fields of sub-models (a partial
    section or augment block is merged key by key), earlier flat keys moved into their blocks."""
    legacy = getattr(model, "LEGACY_KEYS", {})
    for key, value in data.items():
        if key in legacy:
            yield [*prefix, *legacy[key]], value
            continue
        sub = model.model_fields[key].annotation
        if isinstance(value, dict) and isinstance(sub, type) and issubclass(sub, BaseModel):
            yield from _leaves(value, sub, (*prefix, key))
        else:
            yield [*prefix, key], value


def _canonical(parts: list[str]) -> list[str]:
    """An override's key path with an earlier flat key moved into its block
    (``augment.noise_p`` → ``augment.noise.p``), so that overrides apply in the order given."""
    section = Config.model_fields.get(parts[0])
    legacy = getattr(section.annotation, "LEGACY_KEYS", {}) if section is not None else {}
    return [parts[0], *legacy[parts[1]], *parts[2:]] if len(parts) > 1 and parts[1] in legacy else parts


def _merge(base: dict[str, Any], parts: list[str], value: Any) -> None:
    node = base
    for p in parts[:-1]:
        child = node.get(p)
        if not isinstance(child, dict):
            child = {}
            node[p] = child
        node = child
    node[parts[-1]] = value


def load_config(
    path: str | os.PathLike[str] | None = None,
    overrides: list[str] | dict[str, Any] | None = None,
    *,
    base: Config | dict[str, Any] | None = None,
) -> Config:
    """Build a validated :class:`Config` from defaults, an optional YAML file and overrides.

    Args:
        path: a YAML file with any subset of the sections.
        overrides: ``["train.epochs=5", ...]`` or ``{"train.epochs": 5}``; applied after the file.
        base: start from this config instead of the defaults.

    Raises:
        ConfigError: unreadable YAML, unknown keys (listing the valid ones), invalid values.
    """
    data: dict[str, Any] = {}
    if base is not None:
        data = base.model_dump(mode="json") if isinstance(base, Config) else dict(base)
    if path is not None:
        p = Path(path)
        if p.is_dir():
            raise ConfigError(f"config file {p} is a folder; give a YAML file")
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        try:
            text = p.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError as exc:
            raise ConfigError(
                f"config file {p} is not UTF-8 text (byte {exc.start}); save it as UTF-8 YAML"
            ) from exc
        except OSError as exc:
            raise ConfigError(f"cannot read config file {p}: {exc.strerror or exc}") from exc
        try:
            loaded = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {p} is not valid YAML: {exc}") from exc
        if isinstance(loaded, dict):  # `audio:` with every key commented out is an empty section
            loaded = {k: ({} if v is None else v) for k, v in loaded.items()}
        _check_keys(loaded, Config, f"file {p}" if not isinstance(loaded, dict) else "")
        for parts, v in _leaves(loaded, Config):
            _merge(data, parts, v)
    items: list[tuple[list[str], Any]] = []
    if isinstance(overrides, dict):
        items = [([p for p in k.split(".") if p], v) for k, v in overrides.items()]
    elif overrides:
        items = [_parse_override(o) for o in overrides]
    for parts, value in items:
        probe: dict[str, Any] = {}
        _merge(probe, parts, value)
        _check_keys(probe, Config, "")
        _merge(data, _canonical(parts), value)
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = ".".join(str(x) for x in err["loc"])
            msg = err["msg"].removeprefix("Value error, ")
            value = err.get("input")
            got = "" if isinstance(value, dict) else f" (got {value!r})"
            lines.append(f"  {loc or '<config>'}: {msg}{got}")
        raise ConfigError("invalid config:\n" + "\n".join(lines)) from exc
