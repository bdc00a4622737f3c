"""A single-species detector's annotation table (the common case): ingest builds the catalog with a
warning, and ``fit`` adds background windows by itself and says so."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from chirpkit.pipelines.fit import fit
from tests.conftest import tiny_config


def test_fit_adds_background_windows_for_a_single_class(
    soundscapes: Path, caplog: pytest.LogCaptureFixture
) -> None:
    table = soundscapes / "piha.csv"
    table.write_text(
        "Filename,Start Time (s),End Time (s),Species eBird Code\n"
        + "".join(
            f"{name},{t},{t},piha\n"
            for name in ("siteA_day1.flac", "siteB_day1.flac")
            for t in (2.2, 5.2, 10.2, 15.2)
        )
    )
    cfg = tiny_config(
        **{
            "split.min_count": 0,
            "split.val_fraction": 0.0,
            "split.test_fraction": 0.3,
            "audio.window_s": 1.0,
            "train.epochs": 1,
        }
    )
    res = fit(
        None,
        annotations=table,
        audio_dir=soundscapes / "audio",
        out=soundscapes / "run",
        config=cfg,
        progress=False,
    )
    cat = pd.read_parquet(res["catalog"])
    assert sorted(cat["label"].unique()) == ["noise", "piha"]
    assert (cat["label"] == "noise").sum() == (cat["label"] == "piha").sum() == 8
    assert "adding 8 background window(s) labelled 'noise'" in caplog.text
    assert (soundscapes / "run" / "model.pt").is_file()
