"""Failures of the output side, for real: a full disk (a small tmpfs), a read-only file system, a
folder that refuses writes (``chattr +i``, which binds root too), an output path that is a file.

The job stops with an OutputError naming the path (CLI: one line, exit 1, no traceback); nothing
is recorded as a bad input file, nothing half-written is left, and a re-run once the disk has room
finishes the job with exactly what an uninterrupted run gives. These tests need root (mount,
chattr) and skip cleanly elsewhere.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from chirpkit.cli import main
from chirpkit.config import AudioConfig
from chirpkit.data.catalog import write_catalog
from chirpkit.data.ingest import ingest
from chirpkit.data.store import prepare
from chirpkit.errors import OutputError
from tests.badinput import SR, good, leftovers

CFG = AudioConfig(sample_rate=SR, window_s=1.0, margin_s=0.25, workers=2)


def _run(*cmd: str) -> bool:
    if shutil.which(cmd[0]) is None:
        return False
    return subprocess.run(cmd, capture_output=True, check=False).returncode == 0


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MB tmpfs (skips where mounting is not permitted)."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if not _run("mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)):
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        yield mnt
    finally:
        _run("umount", "-l", str(mnt))


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    """30 files whose store (about 1.4 MB) does not fit the 1 MB disk."""
    rows = []
    for i in range(30):
        src = good(tmp_path / "audio" / "ab"[i % 2], f"f{i:02d}.wav", 200 + 97 * i)
        rows.append(
            {"source": str(src), "start_s": 0.0, "end_s": 2.0, "label": "ab"[i % 2], "group": f"g{i}"}
        )
    return write_catalog(pd.DataFrame(rows), tmp_path / "catalog.parquet")


def test_prepare_refuses_a_store_that_cannot_fit(disk: Path, dataset: Path) -> None:
    with pytest.raises(
        OutputError, match=r"the store needs 1\.\d MB more and the disk holding .* has 1\.0 MB free"
    ):
        prepare(dataset, out=disk / "store", config=CFG, progress=False)
    assert not any((disk / "store").rglob("*.npy"))


def test_prepare_on_a_full_disk_stops_and_resumes(
    disk: Path,
    dataset: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the up-front size check aside (a disk can also fill up while prepare runs), the disk fills
    # up half-way through
    import chirpkit.data.store as store_module

    monkeypatch.setattr(store_module, "_check_room", lambda root, todo: None)
    out = disk / "store"
    with pytest.raises(OutputError, match=r"No space left on device.*free some space"):
        prepare(dataset, out=out, config=CFG, progress=False)
    # nothing recorded as a bad file, no index that a later run could take as complete
    for name in ("skipped.csv", "index.parquet", "store.json", "index.csv"):
        assert not (out / name).exists(), name
    assert not leftovers(disk)
    # the command line says the same in one line, exit 1
    argv = ["prepare", str(dataset), "--out", str(out), "--no-progress", "--set", f"audio.sample_rate={SR}"]
    argv += ["--set", "audio.window_s=1.0", "--set", "audio.margin_s=0.25"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "cannot write" in err and "No space left on device" in err and "Traceback" not in err
    # room again: the re-run finishes, and equals an uninterrupted run
    assert _run("mount", "-o", "remount,size=16m", str(disk))
    store = prepare(dataset, out=out, config=CFG, progress=False)
    reference = prepare(dataset, out=tmp_path / "reference", config=CFG, progress=False)
    pd.testing.assert_frame_equal(store.index, reference.index)
    np.testing.assert_array_equal(
        store.read_many(np.arange(len(store))), reference.read_many(np.arange(len(store)))
    )
    assert not (out / "skipped.csv").exists() and not leftovers(disk)


def test_ingest_on_a_full_disk_writes_nothing(
    disk: Path, dataset: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fd = os.open(disk / "filler", os.O_CREAT | os.O_WRONLY)
    with contextlib.suppress(OSError):  # fill the disk up
        while True:
            os.write(fd, b"\0" * 4096)
    os.close(fd)
    out = disk / "catalog.parquet"
    with pytest.raises(OutputError, match="No space left on device"):
        ingest(dataset.parent / "audio", out=out, progress=False)
    assert not out.exists() and not out.with_suffix(".csv").exists() and not leftovers(disk)
    assert main(["ingest", str(dataset.parent / "audio"), "--out", str(out), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "No space left on device" in err and "Traceback" not in err


def test_read_only_file_system(disk: Path, dataset: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run("mount", "-o", "remount,ro", str(disk))
    with pytest.raises(OutputError, match="read-only"):
        prepare(dataset, out=disk / "store", config=CFG, progress=False)
    assert main(["inspect", str(dataset), "--out", str(disk / "report"), "--no-audio", "--no-progress"]) == 1
    assert "Read-only file system" in capsys.readouterr().err


def test_folder_that_refuses_writes(
    dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    if not _run("chattr", "+i", str(locked)):
        pytest.skip("chattr +i is not available here")
    try:
        with pytest.raises(OutputError, match=r"Operation not permitted.*choose a folder you can write to"):
            prepare(dataset, out=locked / "store", config=CFG, progress=False)
        with pytest.raises(OutputError, match="Operation not permitted"):
            ingest(dataset.parent / "audio", out=locked / "c.parquet", progress=False)
        assert (
            main(["split", str(dataset), "--out", str(locked / "s.parquet"), "--set", "split.min_count=1"])
            == 1
        )
        assert "cannot write" in capsys.readouterr().err
    finally:
        _run("chattr", "-i", str(locked))
    assert not any(locked.iterdir())


def test_output_paths_that_are_files_or_folders(
    dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    for argv in (
        ["prepare", str(dataset), "--out", str(a_file)],
        ["inspect", str(dataset), "--out", str(a_file), "--no-audio"],
        ["ingest", str(dataset.parent / "audio"), "--out", str(a_file / "c.parquet")],
    ):
        assert main([*argv, "--no-progress"]) == 1, argv
        err = capsys.readouterr().err
        last = err.strip().splitlines()[-1]
        assert last.startswith(f"chirpkit {argv[0]}: error: ") and (
            "cannot write" in last or "is a file" in last
        )
        assert "Traceback" not in err
    assert a_file.read_text() == "x"
    # an existing folder as the catalog's --out: the catalog goes inside it
    assert (
        main(["ingest", str(dataset.parent / "audio"), "--out", str(tmp_path / "audio"), "--no-progress"])
        == 0
    )
    assert (tmp_path / "audio" / "catalog.parquet").is_file()
