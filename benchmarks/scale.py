"""Scale-out throughput: hours of audio per wall hour for plain `detect` and for the Dask engine
with 1 and 2 worker processes on this machine, and the engine's overhead.

    flock /tmp/chirpkit-heavy.lock python benchmarks/scale.py [--out bench-out/scale] [--minutes 120]
    (CHIRPKIT_DATA=/path/to/shared/data when ../shared/data is not beside the checkout)

* Recordings: real field audio from ../shared/data (the same sources as detect_speed.py), decoded
  and written as 10-minute FLAC files at 44.1 kHz (``--minutes`` in all). Files are cut into
  5-minute work units (``detect.shard_s=300``) so that 2 workers have work to share.
* Model: the default ``small_cnn`` at 32 kHz with the default features and hop (1.5 s); its
  weights do not change the speed.
* Contenders, each from a fresh output folder, one after the other:
  - ``detect`` (engine local: 2 decode threads, torch on all cores) — the baseline;
  - ``detect --engine dask --workers 1`` and ``--workers 2`` (a local cluster of worker
    processes, started by the call; torch threads = cores / workers).
* For the Dask runs the wall time is split into the cluster's start (until the client is
  connected) and the rest, which includes each worker importing torch and loading the model once.
  "Steady" throughput leaves the cluster start out: it is what a long job sees.
* Throughput = hours of audio / wall hours (= the real-time factor). Overhead = the Dask run's
  wall time / plain detect's, at the same number of cores.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import detect_speed
from detect_speed import SR, default_model, real_audio_sources

# ../shared/data beside the checkout; CHIRPKIT_DATA points elsewhere (e.g. from a git worktree)
DATA = detect_speed.DATA = Path(os.environ.get("CHIRPKIT_DATA", detect_speed.DATA))


def build_files(out: Path, minutes: float) -> tuple[list[Path], float]:
    import soundfile as sf

    from chirpkit.audio import decode

    audio = np.concatenate([decode(f, sample_rate=SR).y[0] for f in real_audio_sources()])
    need = int(minutes * 60 * SR)
    while audio.size < need:
        audio = np.concatenate([audio, audio])
    audio = audio[:need]
    files, per = [], int(10 * 60 * SR)
    for i in range(0, need, per):
        p = out / f"rec_{i // per:02d}.flac"
        if not p.is_file():
            sf.write(p, audio[i : i + per], SR)
        files.append(p)
    return files, need / SR


def run(model: Path, files: list[Path], out: Path, engine: str, workers: int) -> dict[str, float | None]:
    from chirpkit.config import DetectConfig
    from chirpkit.detection.job import detect

    cfg = DetectConfig(workers=workers, shard_s=300.0)
    t = time.perf_counter()
    detect(model, files, out=out, config=cfg, engine=engine, resume=False, progress=False)
    wall = time.perf_counter() - t
    summary = json.loads((out / "detect_summary.json").read_text())
    return {
        "wall_s": wall,
        "cluster_start_s": summary.get("cluster_start_seconds"),
        "units": summary["units"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="bench-out/scale")
    ap.add_argument("--minutes", type=float, default=120.0)
    args = ap.parse_args()
    if not DATA.is_dir():
        print(f"skipped: {DATA} not found (real recordings are needed)")
        return
    out = Path(args.out)
    (out / "audio").mkdir(parents=True, exist_ok=True)
    files, seconds = build_files(out / "audio", args.minutes)
    model = default_model(out)
    hours = seconds / 3600
    cores = os.cpu_count() or 1
    rows: dict[str, dict[str, float | None]] = {}
    run(model, files[:1], out / "warmup", "local", 2)  # page cache, imports
    rows["detect (local, 2 threads)"] = run(model, files, out / "plain", "local", 2)
    rows["detect --engine dask --workers 1"] = run(model, files, out / "dask1", "dask", 1)
    rows["detect --engine dask --workers 2"] = run(model, files, out / "dask2", "dask", 2)
    base = rows["detect (local, 2 threads)"]["wall_s"] or 1.0
    units = rows["detect (local, 2 threads)"]["units"]
    print(f"{hours:.2f} h of audio in {len(files)} files ({units} work units), {cores} cores\n")
    print("| contender | wall s | cluster start s | audio h / wall h | steady (no start) | vs plain detect |")
    print("|---|---|---|---|---|---|")
    report = {"audio_hours": hours, "files": len(files), "cores": cores, "runs": {}}
    for name, r in rows.items():
        wall = float(r["wall_s"] or 0)
        start = float(r["cluster_start_s"] or 0)
        rate = hours / (wall / 3600)
        steady = hours / ((wall - start) / 3600)
        print(f"| {name} | {wall:.1f} | {start:.1f} | {rate:,.0f} | {steady:,.0f} | {wall / base:.2f}× |")
        report["runs"][name] = {
            **r,
            "audio_h_per_wall_h": rate,
            "steady_audio_h_per_wall_h": steady,
            "vs_plain": wall / base,
        }  # type: ignore[index]
    (out / "scale.json").write_text(json.dumps(report, indent=2))
    print(f"\n→ {out / 'scale.json'}")


if __name__ == "__main__":
    main()
