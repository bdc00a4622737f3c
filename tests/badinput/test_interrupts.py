"""Ctrl-C (SIGINT) and SIGTERM sent for real to ``chirpkit prepare`` and ``chirpkit ingest`` running
in a subprocess: the command stops within seconds with exit status 130 and no traceback; finished
parts stay, nothing half-written is left; a re-run resumes and gives exactly what an uninterrupted
run gives."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from chirpkit.config import AudioConfig
from chirpkit.data.catalog import write_catalog
from chirpkit.data.store import Store, prepare
from tests.badinput import encoded, leftovers
from tests.badinput import signal as tone

N_FILES = 30
SR = 16000
# spectral gating makes each file cost ~50 ms, so the run lasts seconds and can be interrupted
CFG = AudioConfig(sample_rate=SR, window_s=1.0, margin_s=0.25, denoise="stationary", workers=2)
SETS = ["--set", f"audio.sample_rate={SR}", "--set", "audio.window_s=1.0", "--set", "audio.margin_s=0.25"]
SETS += ["--set", "audio.denoise=stationary", "--workers", "2"]


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("interrupt")
    rng = np.random.default_rng(0)
    rows = []
    for i in range(N_FILES):
        y = tone(4.0, 300 + 40 * i, SR) + 0.05 * rng.standard_normal(4 * SR).astype(np.float32)
        src = root / "audio" / "ab"[i % 2] / f"f{i:02d}.wav"
        src.parent.mkdir(parents=True, exist_ok=True)
        src.write_bytes(encoded(y, "WAV", sr=SR))
        rows.append(
            {"source": str(src), "start_s": 0.0, "end_s": 4.0, "label": "ab"[i % 2], "group": f"g{i}"}
        )
    return write_catalog(pd.DataFrame(rows), root / "catalog.parquet")


@pytest.fixture(scope="module")
def reference(catalog: Path) -> Path:
    """The store of an uninterrupted run."""
    prepare(catalog, out=catalog.parent / "reference", config=CFG, progress=False)
    return catalog.parent / "reference"


def _interrupt(argv: list[str], ready: callable, sig: int) -> tuple[int, str, float]:  # type: ignore[valid-type]
    """Start ``chirpkit ARGV``, wait until ``ready()``, send ``sig``; (status, stderr, seconds to stop)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "chirpkit.cli", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not ready():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"the command ended before it could be interrupted: {proc.communicate()}")
        time.sleep(0.02)
    sent = time.monotonic()
    proc.send_signal(sig)
    try:
        _, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("the command did not stop within 30 s of the signal")
    return proc.returncode, err, time.monotonic() - sent


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_prepare_stops_on_a_signal_and_resumes(
    sig: int, catalog: Path, reference: Path, tmp_path: Path
) -> None:
    store = tmp_path / "store"

    def some_parts() -> bool:
        return (store / "parts").is_dir() and sum(1 for _ in (store / "parts").rglob("*.npy")) >= 3

    status, err, seconds = _interrupt(
        ["prepare", str(catalog), "--out", str(store), "--no-progress", *SETS], some_parts, sig
    )
    assert status == 130 and "interrupted" in err and "Traceback" not in err, err
    assert seconds < 5, f"took {seconds:.1f} s to stop"
    done = sorted(store.rglob("*.npy"))
    assert 3 <= len(done) < N_FILES
    assert not (store / "store.json").exists() and not (store / "index.parquet").exists()
    assert not leftovers(store)
    stamps = {p: p.stat().st_mtime_ns for p in done}
    resumed = prepare(catalog, out=store, config=CFG, progress=False)
    fresh = Store(reference)
    pd.testing.assert_frame_equal(resumed.index, fresh.index)
    everything = np.arange(len(fresh))
    np.testing.assert_array_equal(resumed.read_many(everything), fresh.read_many(everything))
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())  # finished parts kept, not rebuilt


def test_ingest_stops_on_sigint(catalog: Path, tmp_path: Path) -> None:
    # a folder of many files probed one by one (one thread, so that the probe lasts)
    data = catalog.parent / "audio"
    out = tmp_path / "cat.parquet"
    started = tmp_path / "started"

    def running() -> bool:
        return started.exists()

    code = (
        "import sys, time; from pathlib import Path; import chirpkit.audio as a; real = a.info\n"
        "def slow(p):\n    Path(sys.argv[1]).touch(); time.sleep(0.05); return real(p)\n"
        "import chirpkit.data.ingest as ing; ing.info = slow\n"
        "from chirpkit.cli import main; sys.exit(main(sys.argv[2:]))\n"
    )
    argv = [str(started), "ingest", str(data), "--out", str(out), "--no-progress"]
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 60
    while not running() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert time.monotonic() - sent < 5
    assert not out.exists() and not leftovers(tmp_path)
