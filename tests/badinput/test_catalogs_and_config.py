"""Broken catalogs (to inspect, split, prepare) and broken configs: clear errors that name the row,
key or value, never a traceback; nothing half-written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from chirpkit.config import check_accelerator, load_config
from chirpkit.data.catalog import read_catalog
from chirpkit.data.report import inspect
from chirpkit.data.split import split
from chirpkit.data.store import prepare
from chirpkit.errors import ConfigError, DataError
from tests.badinput import good, leftovers


def _catalog(tmp_path: Path, n: int = 4) -> pd.DataFrame:
    rows = []
    for i in range(n):
        src = good(tmp_path / "audio", f"f{i}.wav", 300 + 200 * i)
        rows.append(
            {
                "source": str(src),
                "start_s": 0.0,
                "end_s": 2.0,
                "label": "ab"[i % 2],
                "group": f"g{i}",
                "duration_s": 2.0,
            }
        )
    return pd.DataFrame(rows)


def _break(kind: str, cat: pd.DataFrame, path: Path) -> Path:
    """Write the catalog ``cat`` broken as ``kind``; return the catalog path."""
    if kind == "nan_span":
        cat.loc[1, "end_s"] = np.nan
    elif kind == "inf_span":
        cat.loc[2, "start_s"] = np.inf
    elif kind == "reversed_span":
        cat.loc[0, ["start_s", "end_s"]] = [2.0, 1.0]
    elif kind == "missing_columns":
        cat = cat.drop(columns=["group"])
    elif kind == "empty":
        cat = cat.iloc[:0]
    elif kind == "text_time":
        cat["start_s"] = cat["start_s"].astype(object)
        cat.loc[3, "start_s"] = "soon"
    elif kind == "zero_bytes_csv":
        path = path.with_suffix(".csv")
        path.write_bytes(b"")
        return path
    elif kind == "not_parquet":
        path.write_bytes(b"PAR1 but not really" * 10)
        return path
    elif kind == "folder":
        path.mkdir()
        return path
    if kind == "text_time":
        path = path.with_suffix(".csv")
        cat.to_csv(path, index=False)
    else:
        cat.to_parquet(path, index=False)
    return path


CATALOG_KINDS = {
    "nan_span": "row(s) 1 have no finite span",
    "inf_span": "row(s) 2 have no finite span",
    "reversed_span": "row(s) 0 end before they start",
    "missing_columns": "lacks column(s) ['group']",
    "text_time": "row(s) 3 hold 'soon'",
    "zero_bytes_csv": "is empty",
    "not_parquet": "cannot read catalog",
    "folder": "is a folder",
}


@pytest.mark.parametrize("verb", ["inspect", "split", "prepare"])
@pytest.mark.parametrize("kind", sorted(CATALOG_KINDS))
def test_broken_catalog(kind: str, verb: str, tmp_path: Path) -> None:
    path = _break(kind, _catalog(tmp_path), tmp_path / "catalog.parquet")
    out = tmp_path / "out"
    with pytest.raises(DataError) as err:
        if verb == "inspect":
            inspect(path, out=out, audio=False, progress=False)
        elif verb == "split":
            split(path, out=tmp_path / "split.parquet")
        else:
            prepare(path, out=out, progress=False)
    assert CATALOG_KINDS[kind] in str(err.value) and str(path) in str(err.value)
    assert not (tmp_path / "split.parquet").exists() and not leftovers(tmp_path)


@pytest.mark.parametrize("verb", ["inspect", "split", "prepare"])
def test_empty_catalog(verb: str, tmp_path: Path) -> None:
    path = _break("empty", _catalog(tmp_path), tmp_path / "catalog.parquet")
    with pytest.raises(DataError, match=r"empty catalog|no rows"):
        if verb == "inspect":
            inspect(path, out=tmp_path / "report", progress=False)
        elif verb == "split":
            split(path)
        else:
            prepare(path, out=tmp_path / "store", progress=False)
    assert read_catalog(path).empty


# ---- config ----------------------------------------------------------------------------------

CONFIG_KINDS: dict[str, tuple[list[str], str]] = {
    "window_inf": (["audio.window_s=.inf"], "audio.window_s: Input should be a finite number"),
    "margin_inf": (["audio.margin_s=inf"], "audio.margin_s: Input should be a finite number"),
    "hop_nan": (["audio.window_hop_s=nan"], "audio.window_hop_s: Input should be a finite number"),
    "lr_inf": (["train.lr=inf"], "train.lr: Input should be a finite number"),
    "gain_minus_inf": (["augment.gain.min_db=-.inf"], "augment.gain.min_db: Input should be a finite number"),
    "detect_block_nan": (["detect.block_s=.nan"], "detect.block_s: Input should be a finite number"),
    "negative_window": (["audio.window_s=-3"], "audio.window_s: Input should be greater than 0"),
    "window_of_a_day": (
        ["audio.window_s=86400"],
        "audio.window_s: Input should be less than or equal to 600",
    ),
    "margin_of_an_hour": (
        ["audio.margin_s=3600"],
        "audio.margin_s: Input should be less than or equal to 60",
    ),
    "n_mfcc_above_n_mels": (["features.kind=mfcc", "features.n_mfcc=80"], "n_mfcc=80 must be <= n_mels=64"),
    "fmax_above_nyquist": (
        ["audio.sample_rate=16000", "features.fmax_hz=12000"],
        "above the Nyquist frequency 8000",
    ),
    "fmin_above_nyquist": (
        ["audio.sample_rate=8000", "features.fmin_hz=5000"],
        "fmin_hz=5000.0 must be below",
    ),
    "bad_precision": (["train.precision=half"], "precision 'half' is not valid"),
    "precision_typo": (["train.precision=16-mixd"], "did you mean '16-mixed'"),
    "unknown_accelerator": (["train.accelerator=xpu"], "accelerator 'xpu' is not known"),
    "wrong_type": (["train.epochs=many"], "train.epochs: Input should be a valid integer"),
    "unknown_key": (["train.epoch=3"], "Did you mean 'epochs'"),
    "no_value": (["train.epochs"], "must look like section.key=value"),
}


@pytest.mark.parametrize("kind", sorted(CONFIG_KINDS))
def test_bad_config_value(kind: str) -> None:
    overrides, text = CONFIG_KINDS[kind]
    with pytest.raises(ConfigError) as err:
        load_config(overrides=overrides)
    assert text in str(err.value)


CONFIG_FILES: dict[str, tuple[bytes, str | None]] = {
    "empty_file": (b"", None),
    "comments_only": (b"# nothing yet\n", None),
    "empty_section": (b"audio:\ntrain:\n  epochs: 3\n", None),
    "precision_as_number": (b"train:\n  precision: 16\n", None),
    "bom": (b"\xef\xbb\xbftrain:\n  epochs: 3\n", None),
    "yaml_list": (b"- audio\n- train\n", "must be a mapping of sections"),
    "yaml_scalar": (b"just text\n", "must be a mapping of sections"),
    "section_not_mapping": (b"audio: 5\n", "config section 'audio' must be a mapping"),
    "bad_yaml": (b"train: {epochs: 3\n", "is not valid YAML"),
    "not_utf8": (b"train:\n  seed: \xff\xfe\n", "is not UTF-8"),
    "non_finite_in_file": (b"audio:\n  window_s: .inf\n", "finite number"),
}


@pytest.mark.parametrize("kind", sorted(CONFIG_FILES))
def test_config_file(kind: str, tmp_path: Path) -> None:
    content, text = CONFIG_FILES[kind]
    path = tmp_path / "config.yaml"
    path.write_bytes(content)
    if text is None:
        cfg = load_config(path)
        if kind == "precision_as_number":
            assert cfg.train.precision == "16"
        return
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert text in str(err.value)


def test_config_path_that_is_a_folder_or_missing(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a folder"):
        load_config(tmp_path)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_gpu_without_a_gpu_names_the_setting_and_the_fix() -> None:
    import torch

    check_accelerator("cpu")
    check_accelerator("auto")
    if torch.cuda.is_available():
        check_accelerator("gpu")
        return
    for name in ("gpu", "cuda"):
        with pytest.raises(
            ConfigError,
            match=rf"train.accelerator='{name}' but torch sees no CUDA GPU.*train.accelerator=cpu",
        ):
            check_accelerator(name)
