"""Every registered model, the losses, the sampler, the sanity check and multi-label training."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from chirpkit.errors import ConfigError, RunError
from chirpkit.models import create_model, list_models, model_info
from chirpkit.models.timm_models import timm_available
from chirpkit.training.losses import ClassificationLoss
from tests.conftest import tiny_config


@pytest.mark.parametrize("name", list_models())
def test_contract_every_registered_model(name: str) -> None:
    spectrogram = model_info(name).input == "spectrogram"
    if spectrogram and name not in ("small_cnn", "deep_cnn") and not timm_available():
        pytest.skip("timm not installed")
    torch.manual_seed(0)
    model = create_model(name, num_classes=3, dropout=0.0)
    x = torch.randn(4, 1, 32, 64) if spectrogram else torch.randn(4, 1024)  # embedding heads
    y = torch.tensor([0, 1, 2, 0])
    out = model(x)
    assert out.shape == (4, 3) and out.dtype == torch.float32 and torch.isfinite(out).all()
    assert model.forward_head(model.forward_features(x), pre_logits=True).shape[0] == 4
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()  # training-mode losses: eval mode would also measure how far BN statistics have moved
    losses = []
    for _ in range(6):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_unknown_model_and_pretrained_without_weights() -> None:
    with pytest.raises(ConfigError, match=r"unknown model 'nope'.*small_cnn"):
        create_model("nope", num_classes=2)
    with pytest.raises(ConfigError, match="has no pretrained weights"):
        create_model("small_cnn", num_classes=2, pretrained=True)


def test_pretrained_offline_fails_fast_with_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    if not timm_available():
        pytest.skip("timm not installed")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RunError, match=r"model\.pretrained_file=PATH"):
        create_model("resnet18", num_classes=2, pretrained=True)


def test_an_embedding_head_is_not_built_as_a_waveform_network() -> None:
    from chirpkit.config import FeatureConfig
    from chirpkit.models import ClassifierNet, ModelSpec
    from chirpkit.models.profile import profile

    spec = ModelSpec("birdnet_linear", ["a", "b"], 16000, 1.0, FeatureConfig().model_dump(), {})
    with pytest.raises(ConfigError, match=r"takes embeddings, not a spectrogram"):
        ClassifierNet(spec)
    with pytest.raises(ConfigError, match="export or profile"):
        profile("birdnet_mlp", config=tiny_config(), batch_size=2, steps=1)


def test_pretrained_weights_from_a_local_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Offline, ImageNet weights come from a file: RGB stem filters summed into one channel, the
    body loaded as is, a fresh classifier for our classes."""
    if not timm_available():
        pytest.skip("timm not installed")
    import timm
    from safetensors.torch import save_file

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    torch.manual_seed(0)
    imagenet = timm.create_model("convnext_atto", num_classes=1000)  # stands in for the hub's weights
    weights = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in imagenet.state_dict().items()}, str(weights))
    model = create_model("convnext_atto", num_classes=5, pretrained=True, pretrained_file=str(weights))
    src, got = imagenet.state_dict(), model.state_dict()
    torch.testing.assert_close(got["stem.0.weight"], src["stem.0.weight"].sum(dim=1, keepdim=True))
    torch.testing.assert_close(
        got["stages.2.blocks.0.mlp.fc1.weight"], src["stages.2.blocks.0.mlp.fc1.weight"]
    )
    assert got["head.fc.weight"].shape == (5, 320)


def test_losses_known_answers() -> None:
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0]])
    target = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    ce = torch.nn.functional.cross_entropy(logits, target.argmax(1))
    assert ClassificationLoss("ce")(logits, target).item() == pytest.approx(ce.item())
    assert ClassificationLoss("focal", focal_gamma=0.0)(logits, target).item() == pytest.approx(ce.item())
    assert (
        ClassificationLoss("focal", focal_gamma=2.0)(logits, target).item() < ce.item()
    )  # easy examples count less
    smooth = torch.nn.functional.cross_entropy(logits, target.argmax(1), label_smoothing=0.1)
    assert ClassificationLoss("ce", label_smoothing=0.1)(logits, target).item() == pytest.approx(
        smooth.item()
    )
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, target)
    assert ClassificationLoss("bce")(logits, target).item() == pytest.approx(bce.item())
    w = torch.tensor([1.0, 1.0, 5.0])
    assert ClassificationLoss("ce", weight=w)(logits, target).item() == pytest.approx(
        torch.nn.functional.cross_entropy(logits, target.argmax(1), weight=w).item()
    )


def test_weighted_sampler_balances(tiny_run: Path, tmp_path: Path) -> None:
    from torch.utils.data import WeightedRandomSampler

    counts = np.array([90, 10])
    targets = np.repeat([0, 1], counts)
    for power, share in ((1.0, 0.5), (0.5, 0.25)):  # share of the rare class drawn
        w = counts[targets].astype(float) ** -power
        draws = np.array(
            list(WeightedRandomSampler(w.tolist(), 20000, generator=torch.Generator().manual_seed(0)))
        )
        assert (targets[draws] == 1).mean() == pytest.approx(share, abs=0.02)
    from chirpkit.training.loop import train

    store = json.loads((tiny_run / "data.json").read_text())["store"]
    s = train(
        store,
        out=tmp_path / "w",
        config=tiny_config(**{"train.sampler": "weighted", "train.epochs": 2, "train.grad_clip": 1.0}),
        progress=False,
    )
    assert s["epochs_run"] == 2
    assert (tmp_path / "w" / "tb").is_dir()  # TensorBoard logs next to the CSV ones


def test_sanity_check_passes_and_fails_loudly(tiny_run: Path, tmp_path: Path) -> None:
    from chirpkit.data.store import Store
    from chirpkit.training.loop import train

    store = json.loads((tiny_run / "data.json").read_text())["store"]
    res = train(
        store, out=tmp_path / "s", config=tiny_config(**{"train.lr": 3e-3}), sanity=True, progress=False
    )
    assert res["sanity"] == "passed" and res["loss_last"] <= 0.1 * res["loss_first"]
    st = Store(store)
    silent = tmp_path / "silent"  # same store, every window zeroed: labels cannot be learned
    import shutil

    shutil.copytree(st.root, silent)
    for part in silent.glob("parts/*.npy"):
        a = np.load(part)
        np.save(part, np.zeros_like(a))
    with pytest.raises(RunError, match=r"sanity check failed.*could not overfit one batch"):
        train(
            silent, out=tmp_path / "s2", config=tiny_config(**{"train.lr": 3e-3}), sanity=True, progress=False
        )


def test_multilabel_training_evaluation_and_detection(tmp_path: Path) -> None:
    """Windows holding one or two tones; BCE learns both labels; evaluation reports mAP; detection
    gives both labels where both tones sound."""
    import pandas as pd

    from chirpkit.config import DetectConfig
    from chirpkit.detection.job import detect
    from chirpkit.pipelines.fit import fit
    from tests.conftest import TINY_SR, tone, write

    rng = np.random.default_rng(0)
    rows = []
    for g in range(6):
        for k, labs in enumerate((["low"], ["high"], ["low", "high"]) * 3):
            y = 0.01 * rng.standard_normal(TINY_SR).astype(np.float32)
            for lab in labs:
                y += tone(800 if lab == "low" else 5000, 1.0, TINY_SR, amp=rng.uniform(0.2, 0.4))
            p = write(tmp_path / "clips" / f"g{g}_{k}.wav", y, TINY_SR)
            rows.append({"path": str(p), "label": ";".join(labs), "group": f"g{g}"})
    pd.DataFrame(rows).to_csv(tmp_path / "labels.csv", index=False)
    cfg = tiny_config(
        **{
            "train.loss": "bce",
            "train.epochs": 25,
            "split.min_count": 0,
            "augment.noise_p": 0.0,
            "augment.gain_p": 0.0,
        }
    )
    res = fit(tmp_path / "labels.csv", out=tmp_path / "run", config=cfg, progress=False)
    m = res["metrics"]
    assert m["task"] == "multilabel" and m["map"] >= 0.9 and m["macro_f1"] >= 0.8
    both = np.zeros(TINY_SR * 3, np.float32)
    both[TINY_SR : 2 * TINY_SR] = tone(800, 1.0, TINY_SR, 0.3) + tone(5000, 1.0, TINY_SR, 0.3)
    both += 0.01 * rng.standard_normal(both.size).astype(np.float32)
    p = write(tmp_path / "both.wav", both, TINY_SR)
    t = detect(
        tmp_path / "run",
        [p],
        out=tmp_path / "det",
        config=DetectConfig(hop_s=1.0, top_k=2, min_score=0.5),
        progress=False,
    )
    at_1s = t[t["start_s"] == 1.0]
    assert set(at_1s["label"]) == {"low", "high"}


@pytest.mark.parametrize(
    ("name", "params", "says"),
    [
        ("birdnet_fusion", {"weight": 1.5}, "weight=1.5"),
        ("birdnet_fusion", {"weight": "half"}, "weight='half'"),
        ("birdnet_prior", {"l2": -0.1}, "l2=-0.1"),
        ("birdnet_prior", {"l2_new": float("nan")}, "l2_new=nan"),
        ("birdnet_prior", {"norm": "layer"}, "norm='layer'"),
    ],
)
def test_a_bad_head_parameter_is_a_config_error_that_names_it(name: str, params: dict, says: str) -> None:
    from chirpkit.models import create_model

    with pytest.raises(ConfigError, match=re.escape(says)):
        create_model(name, num_classes=3, **params)
