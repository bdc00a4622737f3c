"""Training-time augmentations, batched in torch on the training device, seeded.

Small composable transforms on one base (:class:`Transform`, audiomentations style): each has
its config block in :class:`~chirpkit.config.AugmentConfig` with an explicit per-example
probability ``p`` and ranges with units in their names, and draws its random parameters
(``draw``, from a ``torch.Generator``) separately from applying them (``apply``). They run only
inside the training step (:class:`Augmenter` is owned by the training task, never by the model),
so evaluation, detection and export skip them by construction.

Stages, in order (see :mod:`chirpkit.augment.base` for the shapes):

1. **waveform** (:mod:`~chirpkit.augment.waveform`) — ``(batch, window + 2·margin)`` segments
   from the store → ``(batch, window)``: time shift, speed, time-stretch and waveform pitch
   shift, composed into one read; then gain, pink-to-brown noise and recorded background noise;
2. **mixup** (:mod:`~chirpkit.augment.mixup`) — waveforms and targets mixed alike;
3. **power** (:mod:`~chirpkit.augment.spectrogram`) — pitch shift by warping the frequency axis
   of the linear power spectrogram (``pitch.mode: spectrogram``, the default);
4. **spectrogram** — frequency and time masks on the normalised features.
"""

from chirpkit.augment.base import Context, Transform
from chirpkit.augment.functional import (
    colored_noise_batch,
    mix_at_snr,
    phase_vocoder,
    pitch_shift,
    read_shifted,
    read_window,
    time_stretch,
    warp_pitch,
)
from chirpkit.augment.mixup import Mixup
from chirpkit.augment.pipeline import TRANSFORMS, Augmenter, build_transforms
from chirpkit.augment.spectrogram import FreqMask, PitchWarp, TimeMask
from chirpkit.augment.waveform import Background, Gain, Noise, PitchShift, Speed, Stretch, TimeShift

__all__ = [
    "TRANSFORMS",
    "Augmenter",
    "Background",
    "Context",
    "FreqMask",
    "Gain",
    "Mixup",
    "Noise",
    "PitchShift",
    "PitchWarp",
    "Speed",
    "Stretch",
    "TimeMask",
    "TimeShift",
    "Transform",
    "build_transforms",
    "colored_noise_batch",
    "mix_at_snr",
    "phase_vocoder",
    "pitch_shift",
    "read_shifted",
    "read_window",
    "time_stretch",
    "warp_pitch",
]
