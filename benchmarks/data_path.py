"""Data-path benchmark: ratios measured in one run, on real compressed recordings.

    python benchmarks/data_path.py [--out bench-out/data_path] [--long-minutes 10] [--threads 2]
                                   [--pairs 9] [--data ../shared/data]

Inputs (from ../shared/data; skipped when absent): the ESC-50 FLAC clips (5 s each) and the
Screaming Piha MP3s (7–134 s), plus two generated long FLAC recordings with 120 sparse point
annotations each (the partial-read case). One catalog of 3 s windows at 32 kHz covers them all.

Measured, each with the same number of threads:

1. **decode-only** — every file decoded whole (soundfile, FFmpeg fallback): the floor any
   pipeline pays once;
2. **prepare** — ``chirpkit.prepare`` from scratch (decode, resample, cut, write the store);
   target ≤ 1.5× decode-only;
2b. **prepare vs its floor on the ESC-50 FLACs** — ``prepare`` against decode + resample of the
   same files, both with ``--threads`` threads, in ``--pairs`` interleaved pairs (each after the
   previous store is deleted and the disk synced): the median of the paired wall-clock ratios and
   of the CPU-time ratios; target ≤ 1.3. Pairs, because the other processes of a shared machine
   make single timings swing by ±30 %;
3. **librosa epoch** — what most scripts do every epoch: ``librosa.load(path, sr, offset,
   duration)`` + ``librosa.feature.melspectrogram`` per window;
4. **store epoch** — one epoch of feeding the same windows from the store: DataLoader over the
   memory-mapped parts + batched log-mel; target ≥ 10× faster than (3);
5. **training data-path share** — a default training epoch split into time spent getting and
   augmenting batches vs the model's forward/backward/step; target ≤ 10 %.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def cpu_times() -> tuple[float, float]:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime, r.ru_stime


def make_long_files(out: Path, minutes: float, seed: int = 0) -> list[tuple[Path, list[float]]]:
    import soundfile as sf

    from chirpkit.synth import CALL_TYPES, colored_noise, make_call, mix_at_snr

    rng = np.random.default_rng(seed)
    files = []
    for i in range(2):
        sr = 44100
        y = colored_noise(int(minutes * 60 * sr), rng, exponent=1.5) * 0.02
        times = sorted(rng.uniform(2, minutes * 60 - 2, size=120).tolist())
        for t in times:
            call = make_call(str(rng.choice(list(CALL_TYPES))), rng, sample_rate=sr)
            mix_at_snr(y, call, int(t * sr), 10.0)
        p = out / f"long_{i}.flac"
        sf.write(p, y, sr)
        files.append((p, times))
    return files


def build_catalog(long_files: list[tuple[Path, list[float]]]) -> pd.DataFrame:
    from chirpkit.audio import info

    rows = []
    esc = sorted((DATA / "esc50-partial" / "audio").glob("*.flac"))
    piha = sorted((DATA / "screaming-piha" / "TESTmp3").glob("*.mp3"))
    for f in esc + piha:
        i = info(f)
        rows.append(
            {
                "source": str(f),
                "start_s": 0.0,
                "end_s": i.duration_s,
                "label": f.parent.name,
                "group": f.stem,
                "duration_s": i.duration_s,
            }
        )
    for f, times in long_files:
        d = info(f).duration_s
        rows += [
            {"source": str(f), "start_s": t, "end_s": t, "label": "call", "group": f.stem, "duration_s": d}
            for t in times
        ]
    df = pd.DataFrame(rows)
    df["label"] = np.where(np.arange(len(df)) % 2 == 0, "a", "b")  # two classes, so training runs
    df["split"] = "train"
    return df


def decode_only(sources: list[str], threads: int, sample_rate: int | None = None) -> float:
    from chirpkit.audio import decode

    t = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda s: decode(s, sample_rate=sample_rate).y.shape, sources))
    return time.perf_counter() - t


def prepare_vs_floor(files: list[Path], out: Path, threads: int, pairs: int) -> dict[str, Any]:
    """``prepare`` vs decode + resample (32 kHz) of ``files`` at ``threads`` threads, ``pairs`` times
    interleaved: medians of the paired ratios (wall clock and CPU time of this process)."""
    from chirpkit.audio import info
    from chirpkit.config import AudioConfig
    from chirpkit.data.store import prepare

    rows = []
    for i, f in enumerate(files):
        d = info(f).duration_s
        rows.append(
            {
                "source": str(f),
                "start_s": 0.0,
                "end_s": d,
                "label": "ab"[i % 2],
                "group": f.stem,
                "duration_s": d,
            }
        )
    cat = pd.DataFrame(rows)
    audio = AudioConfig(workers=threads)
    store = out / "esc_store"

    def timed(fn: Any) -> tuple[float, float]:
        u0, s0 = cpu_times()
        t = time.perf_counter()
        fn()
        u1, s1 = cpu_times()
        return time.perf_counter() - t, (u1 - u0) + (s1 - s0)

    sources = [str(f) for f in files]
    decode_only(sources, threads, sample_rate=32000)  # warm-up: page cache, imports, allocator
    floor, prep = [], []
    for _ in range(pairs):
        shutil.rmtree(store, ignore_errors=True)
        os.sync()  # the deleted store's write-back must not land in the next timing
        floor.append(timed(lambda: decode_only(sources, threads, sample_rate=32000)))
        prep.append(timed(lambda: prepare(cat, out=store, config=audio, progress=False)))
    shutil.rmtree(store, ignore_errors=True)
    return {
        "files": len(files),
        "pairs": pairs,
        "floor_wall_s": [round(x[0], 3) for x in floor],
        "prepare_wall_s": [round(x[0], 3) for x in prep],
        "floor_cpu_s": [round(x[1], 3) for x in floor],
        "prepare_cpu_s": [round(x[1], 3) for x in prep],
        "median_wall_ratio": round(
            statistics.median(p[0] / f[0] for f, p in zip(floor, prep, strict=True)), 3
        ),
        "median_cpu_ratio": round(
            statistics.median(p[1] / f[1] for f, p in zip(floor, prep, strict=True)), 3
        ),
        "median_floor_wall_s": round(statistics.median(x[0] for x in floor), 3),
        "median_prepare_wall_s": round(statistics.median(x[0] for x in prep), 3),
    }


def cached_epoch(store_dir: Path, batch_size: int) -> tuple[float, float]:
    """(seconds to build the log-mel cache once, seconds of one epoch fed from it)."""
    import torch
    from torch.utils.data import DataLoader

    from chirpkit.config import Config
    from chirpkit.data.dataset import FeatureDataset, feature_cache
    from chirpkit.data.store import Store
    from chirpkit.features import build_frontend

    st = Store(store_dir)
    cfg = Config()
    t = time.perf_counter()
    feats = feature_cache(
        st,
        build_frontend(cfg.features, st.sample_rate),
        {"features": cfg.features.model_dump(), "sample_rate": st.sample_rate},
        progress=False,
    )
    t_build = time.perf_counter() - t
    ds = FeatureDataset(feats, np.arange(len(st)), np.zeros(len(st), dtype=np.int64))
    t = time.perf_counter()
    with torch.inference_mode():
        for _ in DataLoader(ds, batch_size=batch_size, shuffle=True):
            pass
    return t_build, time.perf_counter() - t


def librosa_epoch(index: pd.DataFrame, sr: int, window_s: float) -> float:
    import librosa

    t = time.perf_counter()
    for r in index.itertuples():
        y, _ = librosa.load(r.source, sr=sr, offset=max(0.0, r.start_s), duration=window_s)
        librosa.feature.melspectrogram(y=y, sr=sr, n_fft=1024, hop_length=320, n_mels=64)
    return time.perf_counter() - t


def store_epoch(store_dir: Path, batch_size: int, features: bool = True) -> float:
    import torch
    from torch.utils.data import DataLoader

    from chirpkit.data.dataset import WindowDataset
    from chirpkit.data.store import Store
    from chirpkit.features import LogMel

    st = Store(store_dir)
    ds = WindowDataset(st, np.arange(len(st)), st.classes)
    frontend = LogMel(sample_rate=st.sample_rate)
    t = time.perf_counter()
    with torch.inference_mode():
        for x, _ in DataLoader(ds, batch_size=batch_size, shuffle=True):
            if features:
                frontend(x)
    return time.perf_counter() - t


def training_share(store_dir: Path, batch_size: int, steps: int) -> dict[str, float]:
    """Data path (load + augment) vs model (features + forward + backward + step) over ``steps``."""

    from chirpkit.config import Config
    from chirpkit.training.trainer import training_process

    cfg = Config()
    with training_process(cfg.train):  # glibc settings as chirpkit.train uses for CPU training
        return _training_share(store_dir, batch_size, steps, cfg)


def _training_share(store_dir: Path, batch_size: int, steps: int, cfg: Any) -> dict[str, float]:
    import torch
    from torch.utils.data import DataLoader

    from chirpkit.augment import Augmenter
    from chirpkit.data.dataset import WindowDataset
    from chirpkit.data.store import Store
    from chirpkit.models import ClassifierNet, ModelSpec

    st = Store(store_dir)
    ds = WindowDataset(st, np.arange(len(st)), st.classes, with_margin=True)
    spec = ModelSpec(
        "small_cnn",
        st.classes,
        st.sample_rate,
        st.audio.window_s,
        cfg.features.model_dump(),
        {"dropout": 0.3},
    )
    net = ClassifierNet(spec).train()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    aug = Augmenter(
        cfg.augment,
        sample_rate=st.sample_rate,
        window_samples=st.window_samples,
        margin_samples=st.margin_samples,
        seed=0,
    )
    loader = iter(DataLoader(ds, batch_size=batch_size, shuffle=True, drop_last=True))
    data_s = model_s = 0.0
    u0, s0 = cpu_times()
    for i in range(steps + 2):
        t0 = time.perf_counter()
        try:
            segments, y = next(loader)
        except StopIteration:
            loader = iter(DataLoader(ds, batch_size=batch_size, shuffle=True, drop_last=True))
            segments, y = next(loader)
        x = aug.waveform(aug.read(segments))
        target = torch.nn.functional.one_hot(y, spec.num_classes).float()
        x, target = aug.mixup(x, target)
        t1 = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(net.forward_train(x, aug), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        t2 = time.perf_counter()
        if i >= 2:  # warm-up steps excluded
            data_s += t1 - t0
            model_s += t2 - t1
    u1, s1 = cpu_times()
    return {
        "data_s": data_s,
        "model_s": model_s,
        "share": data_s / (data_s + model_s),
        "user_s": u1 - u0,
        "sys_s": s1 - s0,
        "steps": steps,
        "batch_size": batch_size,
    }


def main() -> int:
    global DATA
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="bench-out/data_path")
    ap.add_argument("--long-minutes", type=float, default=10.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--train-steps", type=int, default=30)
    ap.add_argument("--pairs", type=int, default=9, help="interleaved prepare/floor pairs on ESC-50")
    ap.add_argument("--data", type=Path, default=DATA, help="the shared data folder")
    ap.add_argument("--only-prepare", action="store_true", help="only the ESC-50 prepare-vs-floor pairs")
    args = ap.parse_args()
    DATA = args.data
    if not DATA.is_dir():
        print(f"skipped: {DATA} not found (benchmark data is not shipped with chirpkit)")
        return 0
    import torch

    from chirpkit.config import AudioConfig
    from chirpkit.data.store import prepare

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    esc = sorted((DATA / "esc50-partial" / "audio").glob("*.flac"))
    vs_floor = prepare_vs_floor(esc, out, args.threads, args.pairs)
    print(
        f"ESC-50, {vs_floor['files']} FLACs, {args.threads} threads, {args.pairs} interleaved pairs: "
        f"prepare {vs_floor['median_prepare_wall_s']:.3f} s vs decode + resample "
        f"{vs_floor['median_floor_wall_s']:.3f} s (medians); median paired ratio "
        f"{vs_floor['median_wall_ratio']:.2f} wall, {vs_floor['median_cpu_ratio']:.2f} CPU time "
        "(target <= 1.3)"
    )
    if args.only_prepare:
        (out / "results.json").write_text(json.dumps({"prepare_vs_floor": vs_floor}, indent=2))
        return 0
    long_files = make_long_files(out, args.long_minutes)
    cat = build_catalog(long_files)
    sources = sorted(cat["source"].unique())
    hours = sum(cat.drop_duplicates("source")["duration_s"]) / 3600
    print(f"{len(sources)} files ({hours:.2f} h of audio), {len(cat)} catalog rows")

    decode_only(sources[:5], args.threads)  # warm the page cache for every contender alike
    t_decode = decode_only(sources, args.threads)
    t_decode_rs = decode_only(sources, args.threads, sample_rate=32000)
    audio = AudioConfig(workers=args.threads)
    t0 = time.perf_counter()
    st = prepare(cat, out=out / "store", config=audio, progress=False)
    t_prepare = time.perf_counter() - t0
    t0 = time.perf_counter()
    prepare(cat, out=out / "store", config=audio, progress=False)
    t_again = time.perf_counter() - t0

    index = st.index
    sample = index.sample(n=min(300, len(index)), random_state=0)
    t_librosa = librosa_epoch(sample, audio.sample_rate, audio.window_s) * len(index) / len(sample)
    t_store = store_epoch(out / "store", 32)
    t_feed = store_epoch(out / "store", 32, features=False)
    t_cache_build, t_cached = cached_epoch(out / "store", 32)
    share = training_share(out / "store", 32, args.train_steps)

    results = {
        "files": len(sources),
        "audio_hours": round(hours, 3),
        "windows": len(index),
        "threads": args.threads,
        "decode_only_s": round(t_decode, 2),
        "decode_resample_s": round(t_decode_rs, 2),
        "prepare_s": round(t_prepare, 2),
        "prepare_vs_decode": round(t_prepare / t_decode, 2),
        "prepare_vs_decode_resample": round(t_prepare / t_decode_rs, 2),
        "prepare_again_s": round(t_again, 3),
        "librosa_epoch_s": round(t_librosa, 2),
        "store_epoch_s": round(t_store, 2),
        "store_speedup": round(t_librosa / t_store, 1),
        "store_feed_only_s": round(t_feed, 2),
        "feed_only_speedup": round(t_librosa / t_feed, 1),
        "cache_build_s": round(t_cache_build, 2),
        "cached_epoch_s": round(t_cached, 3),
        "cached_speedup": round(t_librosa / t_cached, 1),
        "train_data_share": round(share["share"], 4),
        "train_detail": share,
        "prepare_vs_floor": vs_floor,
    }
    (out / "results.json").write_text(json.dumps(results, indent=2))
    rows = [
        ("decode-only (whole files)", t_decode, "the floor: reading the files"),
        ("decode + resample to 32 kHz", t_decode_rs, "the floor at the configured rate"),
        (
            "prepare (from scratch)",
            t_prepare,
            f"{t_prepare / t_decode:.2f}x decode-only (target <= 1.5), "
            f"{t_prepare / t_decode_rs:.2f}x decode + resample",
        ),
        ("prepare again", t_again, "nothing to do"),
        (
            "librosa-style epoch",
            t_librosa,
            f"load + melspectrogram per window ({len(sample)} of {len(index)} timed, scaled)",
        ),
        ("store epoch + CPU log-mel", t_store, f"{t_librosa / t_store:.1f}x faster (target >= 10)"),
        (
            "store epoch, feed only",
            t_feed,
            f"{t_librosa / t_feed:.1f}x faster (features then run in the model, "
            "on the GPU when there is one)",
        ),
        ("log-mel cache, built once", t_cache_build, "train.cache_features"),
        ("epoch from the log-mel cache", t_cached, f"{t_librosa / t_cached:.0f}x faster"),
    ]
    for name, secs, note in rows:
        print(f"{name:30} {secs:8.3f} s   {note}")
    print(
        f"training: data path {share['data_s']:.2f} s vs model {share['model_s']:.2f} s over "
        f"{share['steps']} steps -> {100 * share['share']:.1f}% of the step time (target <= 10%); "
        f"CPU user {share['user_s']:.1f} s, sys {share['sys_s']:.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
