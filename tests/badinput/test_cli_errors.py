"""``chirpkit`` never shows a traceback for bad input: one line that says what, where and the fix,
exit 2; output failures exit 1; unexpected errors say to rerun with --debug; --debug shows the
traceback."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from chirpkit.cli import main
from tests.badinput import good
from tests.conftest import replace_command


@pytest.fixture
def files(tmp_path: Path) -> Path:
    good(tmp_path / "data" / "a", "a.wav")
    good(tmp_path / "data" / "b", "b.wav", 900)
    (tmp_path / "empty.csv").write_bytes(b"")
    (tmp_path / "bom.csv").write_bytes(b"\xef\xbb\xbfpath;label\r\ndata/a/a.wav;a\r\ndata/b/b.wav;b\r\n")
    (tmp_path / "table.txt").write_bytes(b"")
    (tmp_path / "cfg.yaml").write_text("- a list\n")
    cat = pd.DataFrame(
        {
            "source": [str(tmp_path / "data/a/a.wav")],
            "start_s": [float("nan")],
            "end_s": [1.0],
            "label": ["a"],
            "group": ["g"],
        }
    )
    cat.to_parquet(tmp_path / "nan.parquet")
    cat.iloc[:0].to_parquet(tmp_path / "empty.parquet")
    return tmp_path


BAD = {
    "empty_label_csv": (["ingest", "{d}/empty.csv", "--out", "{d}/c.parquet"], "is empty (0 bytes)"),
    "empty_annotation_table": (
        ["ingest", "--annotations", "{d}/table.txt", "--audio-dir", "{d}/data", "--out", "{d}/c.parquet"],
        "annotation table {d}/table.txt is empty",
    ),
    "config_is_a_list": (
        ["ingest", "{d}/data", "--out", "{d}/c.parquet", "--config", "{d}/cfg.yaml"],
        "must be a mapping",
    ),
    "window_inf": (["prepare", "{d}/nan.parquet", "--out", "{d}/s", "--window-s", "inf"], "finite number"),
    "nan_span": (["prepare", "{d}/nan.parquet", "--out", "{d}/s"], "row(s) 0 have no finite span"),
    "inspect_empty_catalog": (["inspect", "{d}/empty.parquet", "--out", "{d}/r"], "has no rows"),
    "split_empty_catalog": (["split", "{d}/empty.parquet"], "cannot split an empty catalog"),
    "n_mfcc_above_n_mels": (
        [
            "prepare",
            "{d}/nan.parquet",
            "--out",
            "{d}/s",
            "--set",
            "features.kind=mfcc",
            "--set",
            "features.n_mfcc=99",
        ],
        "n_mfcc=99",
    ),
    "missing_catalog": (["split", "{d}/nope.parquet"], "catalog not found"),
}


@pytest.mark.parametrize("kind", sorted(BAD))
def test_bad_input_is_one_line_and_exit_2(kind: str, files: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv, text = BAD[kind]
    quiet = [] if argv[0] == "split" else ["--no-progress"]  # split shows no progress: no such flag
    assert main([a.format(d=files) for a in argv] + quiet) == 2
    err = capsys.readouterr().err
    message = err[err.index(f"chirpkit {argv[0]}: error: ") :]  # after any log lines, to the end
    assert text.format(d=files) in message, err
    assert "Traceback" not in err


def test_bom_crlf_semicolon_csv_just_works(files: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ingest", str(files / "bom.csv"), "--out", str(files / "c.parquet"), "--no-progress"]) == 0
    assert "2 example(s), 2 class(es)" in capsys.readouterr().out


def test_debug_shows_the_traceback_anywhere_on_the_line(
    files: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for argv in (
        ["--debug", "split", str(files / "empty.parquet")],
        ["split", str(files / "empty.parquet"), "--debug"],
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "Traceback (most recent call last)" in err and "cannot split an empty catalog" in err


def test_unexpected_errors_say_to_rerun_with_debug(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def boom(args: object) -> None:
        raise TypeError("unsupported operand")

    replace_command(monkeypatch, "models", boom)
    assert main(["models"]) == 1
    err = capsys.readouterr().err
    assert (
        "unexpected error: TypeError: unsupported operand; rerun with --debug" in err
        and "Traceback" not in err
    )


def test_interrupt_in_process_and_handlers_restored(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)

    def stop(args: object) -> None:
        raise KeyboardInterrupt

    replace_command(monkeypatch, "models", stop)
    assert main(["models"]) == 130
    assert "interrupted" in capsys.readouterr().err
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


def test_a_real_command_line_without_traceback(files: Path) -> None:
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "chirpkit.cli",
            "prepare",
            str(files / "nan.parquet"),
            "--out",
            str(files / "s"),
        ],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 2 and "Traceback" not in res.stderr and "no finite span" in res.stderr
