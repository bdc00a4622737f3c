"""detect under interruptions, a full disk and bad inputs: a real SIGINT/SIGTERM to a running
`chirpkit detect` process, a disk that fills mid-run (the decode threads must not hang), and a
corpus of bad inputs, each asserting its outcome (works, skip-and-report, or a clear error) and
that no partial output is left."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from chirpkit.config import DetectConfig
from chirpkit.detection.job import detect
from chirpkit.errors import ChirpkitError, DataError, MissingPathError, OutputError, RunError
from tests.conftest import TINY_SR, broken_flac, read_csv, tone, write
from tests.scale_helpers import make_hp_model

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_hp_model(tmp_path_factory.mktemp("m") / "model.pt")


def noise(seconds: float, sr: int = TINY_SR, seed: int = 0) -> np.ndarray:
    y = 0.05 * np.random.default_rng(seed).standard_normal(int(seconds * sr))
    call = y[sr // 2 : sr]
    call += tone(2500, 0.5, sr)[: call.size]
    return y.astype(np.float32)


def leftovers(out: Path) -> list[Path]:
    """Temporary files of atomic writes that a stopped job left behind."""
    return [p for p in out.rglob("*") if ".tmp-" in p.name]


# --- interrupts --------------------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_stops_detect_within_seconds_and_the_rerun_resumes(
    sig: signal.Signals, model: Path, tmp_path: Path
) -> None:
    audio = tmp_path / "audio"
    for i in range(10):
        write(audio / f"r{i:02d}.wav", noise(8, seed=i), TINY_SR)
    out = tmp_path / "det"
    cmd = [sys.executable, "-m", "chirpkit.cli", "detect", str(model), str(audio), "--out", str(out)]
    cmd += ["--hop-s", "0.1", "--workers", "1", "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 120
    while not list((out / ".parts").glob("*.parquet")):  # wait until the first unit is done
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "detect never finished a unit"
        time.sleep(0.02)
    sent = time.monotonic()
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert time.monotonic() - sent < 10, "detect took too long to stop"
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    parts = list((out / ".parts").glob("*.parquet"))
    assert 1 <= len(parts) < 10, err  # stopped mid-run
    for p in parts:  # every part written is complete
        assert len(pd.read_parquet(p)) > 0
    assert not leftovers(out) and not (out / "detections.csv").exists()
    so_far = read_csv(out / "manifest.csv")  # how far it got (the signal may fall between a
    # part's rename and its manifest line: the part is what counts)
    assert len(parts) - 1 <= (so_far["status"] == "done").sum() <= len(parts), (so_far, err)
    if sig == signal.SIGTERM:  # (once is enough:) the same command resumes where it stopped
        detect(model, [audio], out=out, config=DetectConfig(hop_s=0.1, workers=1), progress=False)
        summary = json.loads((out / "detect_summary.json").read_text())
        assert summary["reused"] == len(parts) and summary["processed"] == 10 - len(parts)
        assert summary["failed"] == 0 and summary["units"] == 10


def test_a_full_disk_stops_detect_with_a_clear_error_and_never_hangs(
    model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import chirpkit.detection.plan as dp

    audio = tmp_path / "audio"
    for i in range(6):
        write(audio / f"r{i}.wav", noise(4, seed=i), TINY_SR)
    out = tmp_path / "det"
    real, writes = dp.pq.write_table, {"n": 0}

    def disk_fills(table: Any, where: Any, **kw: Any) -> None:
        writes["n"] += 1
        if writes["n"] >= 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(where))
        real(table, where, **kw)

    monkeypatch.setattr(dp.pq, "write_table", disk_fills)
    # tiny batches and 2 decode threads: the threads fill their queues and wait on the consumer,
    # which is where detect used to hang (a blocking put of the end marker)
    cfg = DetectConfig(hop_s=0.1, batch_size=2, workers=2)
    outcome: dict[str, BaseException] = {}

    def run() -> None:
        try:
            detect(model, [audio], out=out, config=cfg, progress=False)
        except BaseException as exc:
            outcome["exc"] = exc

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(60)
    assert not worker.is_alive(), "detect hung on a full disk"
    exc = outcome["exc"]
    assert isinstance(exc, OutputError) and exc.errno == errno.ENOSPC
    assert "No space left on device" in str(exc) and "run the same command again" in str(exc)
    assert not [t for t in threading.enumerate() if t.name.startswith("chirpkit-decode")]
    # the output side failed: no input is blamed, nothing half-written
    assert not (out / "errors.csv").exists() and not list((out / ".parts").glob("*.failed.json"))
    assert not leftovers(out) and not (out / "detections.csv").exists()
    monkeypatch.setattr(dp.pq, "write_table", real)
    detect(model, [audio], out=out, config=cfg, progress=False)  # space freed: the same command resumes
    summary = json.loads((out / "detect_summary.json").read_text())
    assert summary["reused"] == 1 and summary["processed"] == 5 and summary["failed"] == 0


def test_nonfinite_audio_never_gives_nan_scores(model: Path, tmp_path: Path) -> None:
    y = noise(6)
    bad = y.copy()
    bad[TINY_SR : TINY_SR + 100] = np.nan
    bad[3 * TINY_SR] = np.inf
    bad[3 * TINY_SR + 7] = -np.inf
    loud = y.copy()
    loud[4 * TINY_SR : 4 * TINY_SR + 50] = 3e38  # float WAV far above full scale
    files = [
        write(tmp_path / "nan.wav", bad, TINY_SR, subtype="FLOAT"),
        write(tmp_path / "loud.wav", loud, TINY_SR, subtype="FLOAT"),
    ]
    fixed = y.copy()
    fixed[~np.isfinite(bad)] = 0  # the repair's known answer
    ref = write(tmp_path / "ref" / "nan.wav", fixed, TINY_SR, subtype="FLOAT")
    cfg = DetectConfig(hop_s=0.5, min_score=0.0)
    table = detect(model, files, out=tmp_path / "d", config=cfg, progress=False)
    on_disk = pd.read_csv(tmp_path / "d" / "detections.csv")
    assert (
        np.isfinite(on_disk["score"]).all()
        and np.isfinite(pd.read_csv(tmp_path / "d" / "events.csv")["max_score"]).all()
    )
    summary = json.loads((tmp_path / "d" / "detect_summary.json").read_text())
    assert summary["samples_repaired"] == {
        str(files[0]): {"nonfinite": 102, "over_full_scale": 0},
        str(files[1]): {"nonfinite": 0, "over_full_scale": 50},
    }
    expect = detect(model, [ref], out=tmp_path / "r", config=cfg, progress=False)
    got = table[table["file"] == str(files[0])]
    np.testing.assert_allclose(got["score"].to_numpy(), expect["score"].to_numpy(), atol=1e-6)


# --- the bad-input corpus ----------------------------------------------------------------------

Setup = Callable[[Path, Path], tuple[Any, list[Any], dict[str, Any]]]


def _audio(root: Path) -> Path:
    return write(root / "good" / "ok.wav", noise(3), TINY_SR)


def _listing(root: Path, lines: list[str], name: str = "list.txt", **kw: Any) -> str:
    p = root / name
    p.write_text("\n".join(lines) + "\n", **kw)
    return f"@{p}"


def _empty_dir(root: Path) -> Path:
    (root / "empty").mkdir()
    return root / "empty"


def _no_audio_dir(root: Path) -> Path:
    d = root / "docs"
    d.mkdir()
    (d / "notes.txt").write_text("x")
    (d / "labels.csv").write_text("a,b\n")
    return d


def _model_file(root: Path, name: str, data: bytes) -> Path:
    p = root / "badmodel" / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    return p


def _torch_file(root: Path) -> Path:
    import torch

    p = root / "badmodel" / "model.pt"
    p.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"weights": [1, 2, 3]}, p)
    return p


# name: (setup(tmp, model) -> (run, inputs, detect kwargs), error class, message pattern)
ERRORS: dict[str, tuple[Setup, type[Exception], str]] = {
    "no inputs": (lambda t, m: (m, [], {}), DataError, "no audio files"),
    "empty folder": (lambda t, m: (m, [_empty_dir(t)], {}), DataError, "no audio files"),
    "folder without audio": (lambda t, m: (m, [_no_audio_dir(t)], {}), DataError, "audio file endings"),
    "missing input": (lambda t, m: (m, [t / "nope.wav"], {}), MissingPathError, "not found"),
    "glob matching nothing": (lambda t, m: (m, [str(t / "*.flac")], {}), MissingPathError, "no file matches"),
    "missing @list": (lambda t, m: (m, [f"@{t / 'nope.txt'}"], {}), MissingPathError, "file list not found"),
    "@list of comments only": (lambda t, m: (m, [_listing(t, ["# nothing", ""])], {}), DataError, "no audio"),
    "@list of missing files": (
        lambda t, m: (m, [_listing(t, ["gone.wav", "also_gone.flac"])], {}),
        DataError,
        "gone.wav: does not exist",
    ),
    "model path missing": (lambda t, m: (t / "nope" / "model.pt", [_audio(t)], {}), RunError, "no model at"),
    "run folder without model.pt": (lambda t, m: (_empty_dir(t), [_audio(t)], {}), RunError, "no model at"),
    "random bytes as model.pt": (
        lambda t, m: (_model_file(t, "model.pt", os.urandom(4000)), [_audio(t)], {}),
        RunError,
        "cannot be read as a chirpkit model",
    ),
    "truncated model.pt": (
        lambda t, m: (_model_file(t, "model.pt", m.read_bytes()[: m.stat().st_size // 2]), [_audio(t)], {}),
        RunError,
        "cannot be read as a chirpkit model",
    ),
    "a torch file that is no chirpkit model": (
        lambda t, m: (_torch_file(t), [_audio(t)], {}),
        RunError,
        "not a chirpkit model",
    ),
    "an audio file as the model": (
        lambda t, m: (_audio(t), [_audio(t)], {}),
        RunError,
        "cannot be read as a chirpkit model",
    ),
    "unknown engine": (lambda t, m: (m, [_audio(t)], {"engine": "spark"}), ChirpkitError, "must be one of"),
    "shard out of range": (lambda t, m: (m, [_audio(t)], {"shard": "4/4"}), ChirpkitError, "I/N"),
    "shard not I/N": (lambda t, m: (m, [_audio(t)], {"shard": "first"}), ChirpkitError, "I/N"),
    "shard with dask": (
        lambda t, m: (m, [_audio(t)], {"shard": "0/2", "engine": "dask"}),
        ChirpkitError,
        "does not combine",
    ),
    "shard with fresh": (
        lambda t, m: (m, [_audio(t)], {"shard": "0/2", "resume": False}),
        ChirpkitError,
        "--fresh",
    ),
    "negative retries": (lambda t, m: (m, [_audio(t)], {"retries": -1}), ChirpkitError, "retries"),
}


@pytest.mark.parametrize("case", list(ERRORS), ids=list(ERRORS))
def test_bad_input_is_a_clear_error_and_writes_nothing(case: str, model: Path, tmp_path: Path) -> None:
    setup, error, pattern = ERRORS[case]
    run, inputs, kw = setup(tmp_path, model)
    out = tmp_path / "det"
    with pytest.raises(error, match=pattern):
        detect(run, inputs, out=out, progress=False, **kw)
    assert not out.exists()


def _bytes(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _mono_header_only(root: Path) -> Path:
    p = root / "in" / "header_only.wav"
    p.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(p), np.zeros(0, np.float32), TINY_SR)
    return p


def _dangling(root: Path) -> Path:
    p = root / "in" / "gone.wav"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.symlink_to(root / "nowhere.wav")
    return p


# name: (make the bad file in tmp/in -> its path or the input to give, reason pattern in errors.csv)
SKIPS: dict[str, tuple[Callable[[Path], Any], str]] = {
    "0-byte wav": (lambda t: _bytes(t / "in" / "empty.wav", b""), "empty file"),
    "wav header without samples": (_mono_header_only, "no audio samples"),
    "text saved as .wav": (
        lambda t: _bytes(t / "in" / "text.wav", b"not audio\n" * 20),
        "not readable as audio",
    ),
    "random bytes as .flac": (
        lambda t: _bytes(t / "in" / "noise.flac", os.urandom(3000)),
        "not readable as audio|no audio samples",
    ),
    "dangling link in a folder": (_dangling, "broken link"),
}


@pytest.mark.parametrize("case", list(SKIPS), ids=list(SKIPS))
def test_a_bad_file_in_the_batch_is_skipped_and_reported(case: str, model: Path, tmp_path: Path) -> None:
    make, pattern = SKIPS[case]
    bad = make(tmp_path)
    good = write(tmp_path / "in" / "ok.wav", noise(3), TINY_SR)
    out = tmp_path / "det"
    table = detect(model, [tmp_path / "in"], out=out, config=DetectConfig(min_score=0.0), progress=False)
    errors = read_csv(out / "errors.csv")
    assert errors["file"].tolist() == [str(bad)] and errors["reason"].str.contains(pattern).all(), errors
    assert set(table["file"]) == {str(good)} and (out / "events.csv").is_file() and not leftovers(out)


def test_a_file_list_with_missing_entries_is_skip_and_report(model: Path, tmp_path: Path) -> None:
    good = _audio(tmp_path)
    listing = _listing(tmp_path, ["\ufeff# recordings", str(good), "missing.wav", ""], encoding="utf-8")
    (tmp_path / "list.txt").write_bytes((tmp_path / "list.txt").read_bytes().replace(b"\n", b"\r\n"))
    table = detect(model, [listing], out=tmp_path / "d", config=DetectConfig(min_score=0.0), progress=False)
    errors = read_csv(tmp_path / "d" / "errors.csv")
    assert errors["reason"].tolist() == [f"does not exist (listed in {tmp_path / 'list.txt'}, line 3)"]
    assert set(table["file"]) == {str(good)}


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda t: write(t / "x.wav", noise(3), TINY_SR, subtype="PCM_24"), id="24-bit"),
        pytest.param(
            lambda t: write(t / "x.wav", np.stack([noise(3), noise(3, seed=1)], 1), TINY_SR), id="stereo"
        ),
        pytest.param(
            lambda t: write(t / "x.wav", noise(3, sr=8000), 8000, subtype="PCM_U8"), id="8-bit at 8 kHz"
        ),
        pytest.param(lambda t: write(t / "x.flac", noise(3, sr=96000), 96000), id="96 kHz"),
        pytest.param(lambda t: broken_flac(t / "x.flac", seconds=6)[0], id="FLAC with a damaged frame"),
        pytest.param(lambda t: write(t / "x.mp3", noise(3), TINY_SR, format="MP3"), id="mp3"),
        pytest.param(lambda t: write(t / "x.wav", noise(0.3), TINY_SR), id="shorter than a window"),
    ],
)
def test_unusual_but_valid_audio_works(make: Callable[[Path], Path], model: Path, tmp_path: Path) -> None:
    p = make(tmp_path)
    table = detect(model, [p, p], out=tmp_path / "d", config=DetectConfig(min_score=0.0), progress=False)
    summary = json.loads((tmp_path / "d" / "detect_summary.json").read_text())
    assert summary["failed"] == 0 and summary["units"] == 1 and len(table) >= 1  # the duplicate input: once
    assert np.isfinite(table["score"]).all()


def test_output_that_cannot_be_written_is_a_clear_error(model: Path, tmp_path: Path) -> None:
    audio = _audio(tmp_path)
    a_file = tmp_path / "taken.txt"
    a_file.write_text("keep me")
    with pytest.raises(OutputError, match="is a file"):
        detect(model, [audio], out=a_file, progress=False)
    assert a_file.read_text() == "keep me"
    with pytest.raises(OutputError, match="cannot write"):
        detect(model, [audio], out=a_file / "det", progress=False)
    assert a_file.read_text() == "keep me"


CLI_ERRORS = {
    "hop 0": ["--hop-s", "0"],
    "negative hop": ["--hop-s", "-1"],
    "hop nan": ["--hop-s", "nan"],
    "hop inf": ["--hop-s", "inf"],
    "batch 0": ["--batch-size", "0"],
    "workers 0": ["--workers", "0"],
    "top-k 0": ["--top-k", "0"],
    "min-score above 1": ["--min-score", "1.5"],
    "shard length 0": ["--shard-s", "0"],
    "shard 2/2": ["--shard", "2/2"],
    "unknown config key": ["--set", "detect.hop=1"],
}


@pytest.mark.parametrize("case", list(CLI_ERRORS), ids=list(CLI_ERRORS))
def test_bad_detect_flags_exit_2_with_a_message(
    case: str, model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from chirpkit.cli import main

    out = tmp_path / "det"
    rc = main(["detect", str(model), str(_audio(tmp_path)), "--out", str(out), *CLI_ERRORS[case]])
    err = capsys.readouterr().err
    assert rc == 2 and "chirpkit detect: error:" in err and "Traceback" not in err, err
    assert not out.exists()


def test_merge_of_a_folder_that_is_no_detect_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from chirpkit.cli import main

    assert main(["merge", str(tmp_path / "nowhere")]) == 2
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "plan.json").write_text("{not json")
    assert main(["merge", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert "not the output folder of `chirpkit detect`" in err and "damaged" in err


def test_an_unreachable_scheduler_is_a_clear_error(model: Path, tmp_path: Path) -> None:
    dask = pytest.importorskip("dask")
    pytest.importorskip("distributed")
    with (
        dask.config.set({"distributed.comm.timeouts.connect": "1s"}),
        pytest.raises(RunError, match="cannot reach"),
    ):
        detect(model, [_audio(tmp_path)], out=tmp_path / "d", engine="dask", scheduler="tcp://127.0.0.1:9")
