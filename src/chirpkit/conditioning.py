"""Audio conditioning: named, serialisable steps applied in ``prepare`` and, identically, in
``detect``.

Three steps, each off unless configured (``audio.*`` in the config):

* ``highpass`` — Butterworth high-pass (``highpass_hz``, ``highpass_order``), causal (``sosfilt``)
  so that a stream filtered block by block, carrying the filter state, equals the file filtered
  at once; removes hum, wind and handling noise below the calls.
* ``denoise`` — spectral gating with the ``noisereduce`` library, ``stationary`` (one noise
  profile per segment) or ``nonstationary`` (a running profile), ``denoise_strength`` =
  ``prop_decrease``. Applied to each decoded file or segment in ``prepare`` and to each block
  (60 s by default) in ``detect``: the noise profile is estimated from the audio at hand.
* ``normalize`` — per window: ``peak`` or ``rms`` level set to ``normalize_db`` dBFS (default
  −1 dBFS peak, −20 dBFS RMS), measured on the window itself (not its margins).

The steps a model was trained with travel in its spec (``ModelSpec.conditioning``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import numpy as np
from scipy.signal import butter, sosfilt, sosfilt_zi

__all__ = [
    "Conditioner",
    "Denoise",
    "HighPass",
    "Normalize",
    "steps_from_config",
    "steps_from_dicts",
    "steps_to_dicts",
]


@dataclass
class HighPass:
    name: ClassVar[str] = "highpass"
    cutoff_hz: float
    order: int = 4

    def sos(self, sample_rate: int) -> np.ndarray:
        if not 0 < self.cutoff_hz < sample_rate / 2:
            raise ValueError(
                f"highpass cutoff_hz={self.cutoff_hz} must be between 0 and {sample_rate / 2} Hz"
            )
        return np.asarray(butter(self.order, self.cutoff_hz, btype="highpass", fs=sample_rate, output="sos"))

    def apply(
        self, y: np.ndarray, sample_rate: int, state: np.ndarray | None = None
    ) -> tuple[np.ndarray, Any]:
        sos = self.sos(sample_rate)
        zi = state if state is not None else sosfilt_zi(sos) * (y[0] if y.size else 0.0)
        out, zf = sosfilt(sos, y, zi=zi)
        return out.astype(np.float32), zf


@dataclass
class Denoise:
    name: ClassVar[str] = "denoise"
    mode: str = "stationary"
    strength: float = 1.0

    def apply(self, y: np.ndarray, sample_rate: int, state: Any = None) -> tuple[np.ndarray, Any]:
        import noisereduce

        if y.size < 2048:
            return y, None
        out = noisereduce.reduce_noise(
            y=y, sr=sample_rate, stationary=self.mode == "stationary", prop_decrease=self.strength
        )
        return np.asarray(out, dtype=np.float32), None


@dataclass
class Normalize:
    name: ClassVar[str] = "normalize"
    mode: str = "peak"
    target_db: float = -1.0

    def gain(self, window: np.ndarray) -> float:
        level = float(np.abs(window).max()) if self.mode == "peak" else float(np.sqrt(np.mean(window**2)))
        if level <= 1e-8:
            return 1.0
        return float(10 ** (self.target_db / 20) / level)


Step = HighPass | Denoise | Normalize
_BY_NAME: dict[str, type[HighPass] | type[Denoise] | type[Normalize]] = {
    "highpass": HighPass,
    "denoise": Denoise,
    "normalize": Normalize,
}


def steps_from_config(audio: Any) -> list[Step]:
    """The steps an :class:`~chirpkit.config.AudioConfig` turns on, in order."""
    steps: list[Step] = []
    if audio.highpass_hz is not None:
        steps.append(HighPass(audio.highpass_hz, audio.highpass_order))
    if audio.denoise != "off":
        steps.append(Denoise(audio.denoise, audio.denoise_strength))
    if audio.normalize != "off":
        default = -1.0 if audio.normalize == "peak" else -20.0
        steps.append(
            Normalize(audio.normalize, audio.normalize_db if audio.normalize_db is not None else default)
        )
    return steps


def steps_to_dicts(steps: list[Step]) -> list[dict[str, Any]]:
    return [{"name": s.name, **asdict(s)} for s in steps]


def steps_from_dicts(items: list[dict[str, Any]]) -> list[Step]:
    steps: list[Step] = []
    for item in items:
        kind = _BY_NAME.get(str(item.get("name")))
        if kind is None:
            raise ValueError(f"unknown conditioning step {item.get('name')!r}; known: {sorted(_BY_NAME)}")
        steps.append(kind(**{k: v for k, v in item.items() if k != "name"}))
    return steps


class Conditioner:
    """Applies the file-level steps to audio (a whole file, a segment, or a stream of blocks) and
    the window-level step to windows.

    ``block(y)`` keeps the high-pass state between calls, so feeding a file block by block gives
    the same samples as ``block(whole_file)`` (noise reduction, estimated per block, aside).
    """

    def __init__(self, steps: list[Step], sample_rate: int) -> None:
        self.sample_rate = sample_rate
        self.file_steps = [s for s in steps if not isinstance(s, Normalize)]
        norm = [s for s in steps if isinstance(s, Normalize)]
        self.normalize: Normalize | None = norm[0] if norm else None
        self._state: list[Any] = [None] * len(self.file_steps)

    def __bool__(self) -> bool:
        return bool(self.file_steps) or self.normalize is not None

    def reset(self) -> None:
        self._state = [None] * len(self.file_steps)

    def block(self, y: np.ndarray) -> np.ndarray:
        for i, step in enumerate(self.file_steps):
            y, self._state[i] = step.apply(y, self.sample_rate, self._state[i])
        return y

    def window(self, segment: np.ndarray, core: slice = slice(None)) -> np.ndarray:
        """Scale ``segment`` so that its ``core`` part (the window without margins) meets the
        normalisation target."""
        if self.normalize is None:
            return segment
        return (segment * self.normalize.gain(segment[core])).astype(np.float32)
