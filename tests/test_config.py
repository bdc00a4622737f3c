from __future__ import annotations

from pathlib import Path

import pytest

from chirpkit.config import Config, load_config
from chirpkit.errors import ConfigError


def test_defaults_are_valid_and_round_trip(tmp_path: Path) -> None:
    cfg = load_config()
    assert cfg.audio.sample_rate == 32000 and cfg.audio.window_s == 3.0
    p = tmp_path / "c.yaml"
    p.write_text(cfg.to_yaml())
    assert load_config(p) == cfg


def test_file_then_overrides(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("train:\n  epochs: 7\n  lr: 0.01\nfeatures:\n  n_mels: 128\n")
    cfg = load_config(p, ["train.epochs=3", "model.params={channels: [8, 16]}"])
    assert cfg.train.epochs == 3 and cfg.train.lr == 0.01 and cfg.features.n_mels == 128
    assert cfg.model.params == {"channels": [8, 16]}
    assert load_config(overrides={"split.seed": 5}).split.seed == 5


def test_unknown_key_lists_valid_keys(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"unknown config key 'train.epoch'.*Did you mean 'epochs'.*batch_size"
    ):
        load_config(overrides=["train.epoch=3"])
    p = tmp_path / "c.yaml"
    p.write_text("trian:\n  epochs: 2\n")
    with pytest.raises(ConfigError, match=r"'trian'.*Did you mean 'train'.*audio"):
        load_config(p)


@pytest.mark.parametrize(
    "override,match",
    [
        ("train.epochs=-1", r"train.epochs.*greater than 0.*-1"),
        ("audio.dtype=int8", r"audio.dtype"),
        ("split.val_fraction=0.9", r"must be < 1"),
        ("features.win_length=4096", r"win_length=4096 must be <= n_fft"),
        ("train.epochs", r"section.key=value"),
    ],
)
def test_bad_values_name_key_and_value(override: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_config(overrides=[override])


def test_bad_yaml_and_missing_file(tmp_path: Path) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(p)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "none.yaml")
    assert isinstance(ConfigError("x"), ValueError)


def test_audio_shaping_excludes_workers() -> None:
    a = Config().audio
    assert "workers" not in a.shaping() and a.hop_s == a.window_s


@pytest.mark.parametrize(
    "cuda, bf16, accelerator, expected",
    [
        (True, True, "auto", "bf16-mixed"),
        (True, False, "gpu", "16-mixed"),
        (True, True, "cpu", "32-true"),
        (False, False, "auto", "32-true"),
    ],
)
def test_precision_auto_is_what_its_description_says(
    monkeypatch: pytest.MonkeyPatch, cuda: bool, bf16: bool, accelerator: str, expected: str
) -> None:
    import torch

    from chirpkit.config import TrainConfig
    from chirpkit.training.trainer import resolve_precision

    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: bf16)
    assert resolve_precision("auto", accelerator) == expected
    description = TrainConfig.model_fields["precision"].description or ""
    assert description.startswith("'auto' = bf16-mixed (16-mixed without bf16) on CUDA, 32-true elsewhere")


def test_yaml_bare_off_means_off(tmp_path: Path) -> None:
    # YAML 1.1 reads `off` as False; the documented spelling must still work, in a file and in --set
    path = tmp_path / "c.yaml"
    path.write_text("audio: {denoise: off, normalize: off}\n")
    cfg = load_config(path, ["audio.normalize=off"])
    assert (cfg.audio.denoise, cfg.audio.normalize) == ("off", "off")
    with pytest.raises(ConfigError, match="denoise"):
        load_config(overrides=["audio.denoise=on"])


def test_every_recipe_is_a_valid_config_of_a_registered_model() -> None:
    from chirpkit.config import load_config
    from chirpkit.models import create_model

    recipes = sorted((Path(__file__).resolve().parents[1] / "recipes").glob("*.yaml"))
    assert {p.stem for p in recipes} >= {"birds-fewshot", "birds-custom", "birds-student", "any-sound"}
    for path in recipes:
        cfg = load_config(path)  # an unknown key or a bad value raises
        # the model and its parameters (a free dict in the config) build: a misspelt one raises
        create_model(cfg.model.name, num_classes=3, dropout=cfg.model.dropout, **cfg.model.params)
        assert path.read_text().startswith(f"# {path.stem}:"), path  # each says what it is for


def test_every_setting_is_described_without_figures() -> None:
    """`--help` and the docs show these descriptions: each setting has one, and none carries a
    measured figure (figures go stale; they live in docs/measured.md)."""
    import re

    from pydantic import BaseModel

    from chirpkit.config import Config

    missing, figures = [], []

    def walk(cls: type[BaseModel], prefix: str) -> None:
        for name, field in cls.model_fields.items():
            text = field.description or ""
            if not text:
                missing.append(prefix + name)
            if re.search(r"F1 \d|\d(\.\d+)?\s*[x×] (faster|cheaper|slower)|\d\.\d{2,}", text):
                figures.append(f"{prefix}{name}: {text}")
            if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
                walk(field.annotation, f"{prefix}{name}.")

    walk(Config, "")
    assert missing == []
    assert figures == []
