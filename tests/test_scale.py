"""Scale-out of detect: time shards equal one pass (a high-pass model), a real local Dask cluster
of 2 worker processes gives the same detections (and survives a worker killed mid-run), job-array
shards in any order, twice or killed give the same tables, and fsspec inputs."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from chirpkit.config import DetectConfig
from chirpkit.detection.job import detect, merge
from chirpkit.errors import ConfigError, RunError
from tests.conftest import read_csv
from tests.scale_helpers import assert_same_detections, make_hp_model, make_recordings

CFG = DetectConfig(hop_s=0.25, min_score=0.0, shard_s=5.0, formats=["csv", "raven", "audacity"])


def _summary(out: Path) -> dict[str, object]:
    return json.loads((out / "detect_summary.json").read_text())  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def hp_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_hp_model(tmp_path_factory.mktemp("hp") / "model.pt")


@pytest.fixture(scope="module")
def recordings(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_recordings(tmp_path_factory.mktemp("rec") / "audio")


@pytest.fixture(scope="module")
def reference(hp_model: Path, recordings: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One process, every file whole (no time shards)."""
    out = tmp_path_factory.mktemp("ref") / "det"
    detect(hp_model, [recordings], out=out, config=CFG.model_copy(update={"shard_s": None}), progress=False)
    return out


def test_time_shards_equal_one_pass_with_a_highpass_model(
    hp_model: Path, recordings: Path, reference: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sharded = detect(hp_model, [recordings], out=tmp_path / "s", config=CFG, progress=False)
    assert _summary(reference)["units"] == 4  # one per file
    assert _summary(tmp_path / "s")["units"] == 8 + 3 + 1 + 1  # 40 s → 8 shards, 12 s → 3, short, corrupt
    assert_same_detections(sharded, read_csv(reference / "detections.csv"), atol=1e-4)
    events, ref_events = read_csv(tmp_path / "s" / "events.csv"), read_csv(reference / "events.csv")
    pd.testing.assert_frame_equal(
        events.drop(columns=["mean_score", "max_score"]), ref_events.drop(columns=["mean_score", "max_score"])
    )
    assert ((events["start_s"] < 5) & (events["end_s"] > 5)).any()  # an event across a shard boundary is one
    assert read_csv(tmp_path / "s" / "errors.csv")["file"].str.endswith("corrupt.wav").tolist() == [True]
    manifest = read_csv(tmp_path / "s" / "manifest.csv")
    assert (manifest["status"] == "done").sum() == 12 and (manifest["status"] == "failed").sum() == 1

    # the warm-up is what makes it so: without it, a shard's high-pass (and resampler) starts cold
    import chirpkit.detection.units as dr
    import chirpkit.sources as so

    monkeypatch.setattr(dr, "_warmup_samples", lambda conditioner: 0)
    monkeypatch.setattr(so, "RESAMPLE_WARMUP_S", 0.0)
    cold = detect(hp_model, [recordings], out=tmp_path / "cold", config=CFG, progress=False)
    assert np.abs(cold["score"].to_numpy() - sharded["score"].to_numpy()).max() > 1e-4


def test_job_array_shards_any_order_twice_or_killed_give_the_same_tables(
    hp_model: Path, recordings: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import chirpkit.detection.units as dr
    from chirpkit.cli import main

    one = tmp_path / "one"
    detect(hp_model, [recordings], out=one, config=CFG, progress=False)
    arr = tmp_path / "arr"
    real, calls = dr._candidates, {"n": 0}

    def killed_at_second_unit(*a: object, **k: object) -> pd.DataFrame:
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*a, **k)  # type: ignore[arg-type]

    monkeypatch.setattr(dr, "_candidates", killed_at_second_unit)
    with pytest.raises(KeyboardInterrupt):
        detect(hp_model, [recordings], out=arr, config=CFG, shard="1/3", progress=False)
    monkeypatch.setattr(dr, "_candidates", real)
    for shard in ("2/3", "1/3"):  # out of order; 1/3 again after its kill
        detect(hp_model, [recordings], out=arr, config=CFG, shard=shard, progress=False)
        assert not (arr / "detections.csv").exists()  # not complete: nothing merged yet
    with pytest.raises(RunError, match="no result yet"):
        merge(arr)
    detect(hp_model, [recordings], out=arr, config=CFG, shard="0/3", progress=False)  # the last one merges
    tables = [
        "detections.csv",
        "events.csv",
        "errors.csv",
        "raven/a.chirpkit.selections.txt",
        "audacity/a.labels.txt",
    ]
    for name in tables:
        assert (arr / name).read_bytes() == (one / name).read_bytes(), name
    detect(hp_model, [recordings], out=arr, config=CFG, shard="2/3", progress=False)  # twice: all reused
    assert _summary(arr)["processed"] == 1  # only the failed unit (corrupt.wav) is tried again
    (arr / "detections.csv").unlink()
    assert main(["--quiet", "merge", str(arr)]) == 0
    for name in tables:
        assert (arr / name).read_bytes() == (one / name).read_bytes(), name
    # every shard must be given the same command
    with pytest.raises(RunError, match="another detect job"):
        detect(hp_model, [recordings], out=arr, config=CFG.model_copy(update={"hop_s": 0.5}), shard="0/3")
    with pytest.raises(ConfigError, match="I/N"):
        detect(hp_model, [recordings], out=arr, config=CFG, shard="3/3")


def test_fsspec_inputs_read_through_file_objects(
    hp_model: Path, recordings: Path, reference: Path, tmp_path: Path
) -> None:
    fsspec = pytest.importorskip("fsspec")
    fs = fsspec.filesystem("memory")
    for name in ("a.wav", "b.flac"):
        fs.pipe(f"/bucket/site1/{name}", (recordings / name).read_bytes())
    fs.pipe("/bucket/site1/readme.txt", b"not audio")
    got = detect(hp_model, ["memory://bucket/site1/"], out=tmp_path / "m", config=CFG, progress=False)
    assert sorted(got["file"].unique()) == ["memory:///bucket/site1/a.wav", "memory:///bucket/site1/b.flac"]
    ref = read_csv(reference / "detections.csv")
    ref = ref[~ref["file"].str.endswith("c_short.wav")]
    assert_same_detections(
        got.assign(file=got["file"].str.rsplit("/", n=1).str[-1]),
        ref.assign(file=ref["file"].str.rsplit("/", n=1).str[-1]),
    )
    assert _summary(tmp_path / "m")["units"] == 8 + 3  # remote WAV/FLAC are time-sharded too


# --- a real Dask cluster ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster() -> object:
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address="127.0.0.1:0"
    ) as c:
        yield c


def test_dask_cluster_gives_the_same_detections_and_loads_the_model_once_per_worker(
    cluster: object, hp_model: Path, recordings: Path, reference: Path, tmp_path: Path
) -> None:
    urls = [f"file://{recordings / n}" for n in ("a.wav", "b.flac", "c_short.wav", "corrupt.wav")]
    local = detect(hp_model, urls, out=tmp_path / "local", config=CFG, progress=False)
    on_dask = detect(
        hp_model,
        urls,
        out=tmp_path / "dask",
        config=CFG,
        engine="dask",
        scheduler=cluster.scheduler_address,
        progress=False,  # type: ignore[attr-defined]
    )
    assert_same_detections(on_dask, local)
    assert (tmp_path / "dask" / "detections.csv").read_bytes() == (
        tmp_path / "local" / "detections.csv"
    ).read_bytes()
    summary = _summary(tmp_path / "dask")
    assert summary["engine"] == "dask" and summary["processed"] == 13
    loads = summary["model_loads_per_worker"]
    assert isinstance(loads, dict) and len(loads) == 2 and set(loads.values()) == {1}
    errors = read_csv(tmp_path / "dask" / "errors.csv")
    assert errors["file"].tolist() == [urls[3]]  # the corrupt file: recorded once, not retried
    again = detect(
        hp_model,
        urls,
        out=tmp_path / "dask",
        config=CFG,
        engine="dask",
        scheduler=cluster.scheduler_address,
        progress=False,
    )  # type: ignore[attr-defined]
    assert _summary(tmp_path / "dask")["reused"] == 12 and len(again) == len(on_dask)


def test_a_worker_killed_mid_run_is_survived(
    cluster: object, hp_model: Path, recordings: Path, tmp_path: Path
) -> None:
    from distributed import Client, WorkerPlugin

    marker = tmp_path / "killed"

    class KillOnce(WorkerPlugin):  # defined here so that it travels to the workers by value
        def transition(self, key: object, start: str, finish: str, **kw: object) -> None:
            if finish == "executing" and "chirpkit-" in str(key) and not marker.exists():
                marker.write_text(str(os.getpid()))
                os.kill(os.getpid(), signal.SIGKILL)

    local = detect(hp_model, [recordings], out=tmp_path / "local", config=CFG, progress=False)
    with Client(cluster) as client:
        client.register_plugin(KillOnce(), name="kill-once")
        try:
            got = detect(
                hp_model,
                [recordings],
                out=tmp_path / "dask",
                config=CFG,
                engine="dask",
                scheduler=client,
                progress=False,
            )
        finally:
            client.unregister_worker_plugin("kill-once")
        client.wait_for_workers(2, timeout=60)
    assert marker.exists()  # a worker really was killed while running a unit
    assert_same_detections(got, local)
    assert _summary(tmp_path / "dask")["failed"] == 1  # only corrupt.wav


def test_cli_dask_local_cluster_and_shards(
    hp_model: Path, recordings: Path, reference: Path, tmp_path: Path
) -> None:
    pytest.importorskip("distributed")
    from chirpkit.cli import main

    args = [
        "detect",
        str(hp_model),
        str(recordings),
        "--hop-s",
        "0.25",
        "--min-score",
        "0",
        "--no-progress",
    ]
    assert (
        main(
            [
                *args,
                "--out",
                str(tmp_path / "d"),
                "--engine",
                "dask",
                "--workers",
                "2",
                "--set",
                "detect.shard_s=5",
            ]
        )
        == 0
    )
    assert len(_summary(tmp_path / "d")["model_loads_per_worker"]) == 2  # type: ignore[arg-type]
    assert_same_detections(
        read_csv(tmp_path / "d" / "detections.csv"), read_csv(reference / "detections.csv")
    )
    for i in (1, 0):
        assert main([*args, "--out", str(tmp_path / "s"), "--shard", f"{i}/2"]) == 0
    assert_same_detections(
        read_csv(tmp_path / "s" / "detections.csv"), read_csv(reference / "detections.csv")
    )


def test_prepare_on_dask_writes_the_same_store(cluster: object, tiny_folder: Path, tmp_path: Path) -> None:
    from chirpkit.data.ingest import ingest
    from chirpkit.data.store import prepare
    from tests.conftest import tiny_config

    cat = ingest(tiny_folder, out=tmp_path / "catalog.parquet", progress=False)
    audio = tiny_config().audio
    here = prepare(cat, out=tmp_path / "local", config=audio, progress=False)
    there = prepare(
        cat,
        out=tmp_path / "dask",
        config=audio,
        progress=False,
        engine="dask",
        scheduler=cluster.scheduler_address,  # type: ignore[attr-defined]
    )
    assert len(there) == len(here) == 36
    pd.testing.assert_frame_equal(there.index, here.index)
    for part in here.index["part"].unique():
        assert (tmp_path / "dask" / part).read_bytes() == (tmp_path / "local" / part).read_bytes()
