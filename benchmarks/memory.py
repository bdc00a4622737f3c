"""Peak memory of each stage on synthetic stores of 1, 5 and 20 hours, and the store's size on disk
per hour of audio at window hops of 3, 1 and 0.5 s.

    python benchmarks/memory.py [--hours 1 5 20] [--hops 3 1 0.5] [--out bench-out/memory]
                                [--embedder stand-in|birdnet] [--keep]

**Disk.** Twenty minutes of 48 kHz audio is prepared at each hop with the ``birds-fewshot``
settings (3 s windows, 0.5 s margins, int16); the store's bytes are set against the decoded
audio's (int16 at 48 kHz) and against what the version-1 layout (every window stored whole with
its margins) takes for the same windows.

**Memory.** For each size, 5-minute recordings of four BirdNET species' names (noise with a tone
per class) are split by recording (70/15/15; a third each at 1 h) and run through the
``chirpkit`` verbs a user runs, each in a fresh process: ``prepare`` and ``embed`` with
``--config recipes/birds-fewshot.yaml``
(hop 1 s, three embedding views), ``train`` with the recipe (birdnet_prior head, out-of-fold
choice of the prior included; epochs cut to keep the run short: memory does not depend on
them), ``evaluate`` and ``detect`` over the test recordings. A thread samples the process's
``/proc/self/status`` every 2 ms: the peak of the resident set (``VmHWM``, the kernel's own
figure), and the peak of its anonymous part (``RssAnon``: the process's own memory).
The rest of the resident set is file pages of memory-mapped store parts and embeddings: the page
cache, shared, and dropped by the kernel when memory is short. Targets: anonymous memory flat
across sizes (20 h within 1.2x of 1 h).

The embedding model is a stand-in by default (``--embedder stand-in``: BirdNET's input and output
shapes, the standard deviation of 1,024 slices of each 3 s crop), so that 20 hours embed in
minutes on a laptop; its memory per call is constant, as BirdNET's is (``embed_memory.py``
measures BirdNET's). ``--embedder birdnet`` runs the real model (hours of CPU for 20 h).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "birds-fewshot.yaml"
SPECIES = ["Turdus merula", "Erithacus rubecula", "Parus major", "Fringilla coelebs"]
SR = 48000

_CHILD = r"""
import json, os, sys, threading, time
os.environ["CHIRPKIT_CACHE"] = sys.argv[2]
peaks = {"rss_anon_mb": 0.0}
stop = threading.Event()

def status():
    out = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            k, _, v = line.partition(":")
            if k in ("VmHWM", "RssAnon", "RssShmem"):
                out[k] = int(v.split()[0]) / 1024
    return out

def sample():
    while not stop.is_set():
        s = status()
        peaks["rss_anon_mb"] = max(peaks["rss_anon_mb"], s["RssAnon"] + s.get("RssShmem", 0.0))
        time.sleep(0.002)

threading.Thread(target=sample, daemon=True).start()
if sys.argv[3] == "stand-in":
    import numpy as np
    import chirpkit.models.embeddings as emb
    from chirpkit.models.heads import BIRDNET_EMBEDDING

    class StandIn:
        def embed(self, crops):
            x = np.asarray(crops, np.float32)[:, : 1024 * 140].reshape(len(crops), 1024, 140)
            return x.std(axis=2).astype(np.float32)

    emb._EMBEDDERS[BIRDNET_EMBEDDING] = StandIn
from chirpkit.cli import main
t0 = time.perf_counter()
rc = main(json.loads(sys.argv[1]))
seconds = time.perf_counter() - t0
stop.set()
s = status()
print("MEMORY " + json.dumps({"rc": rc, "seconds": round(seconds, 1), "peak_rss_mb": round(s["VmHWM"]),
      "peak_anon_mb": round(max(peaks["rss_anon_mb"], s["RssAnon"] + s.get("RssShmem", 0.0)))}))
"""


def _stage(argv: list[str], cache: Path, embedder: str) -> dict[str, float]:
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, json.dumps(argv), str(cache), embedder],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("MEMORY ")]
    if proc.returncode or not line or json.loads(line[-1][7:])["rc"]:
        raise SystemExit(f"chirpkit {' '.join(argv)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return json.loads(line[-1][7:])


def _recordings(folder: Path, hours: float, minutes: float, seed: int) -> list[tuple[Path, str]]:
    """``hours`` of ``minutes``-long int16 WAVs at 48 kHz: noise with the class's tone every few seconds."""
    import soundfile as sf

    folder.mkdir(parents=True, exist_ok=True)
    n = max(4, round(hours * 60 / minutes))
    rng = np.random.default_rng(seed)
    out = []
    t = np.arange(int(2.0 * SR)) / SR
    for i in range(n):
        label = SPECIES[i % len(SPECIES)]
        path = folder / f"rec{i:04d}.wav"
        if not path.is_file():
            y = (0.02 * rng.standard_normal(int(minutes * 60 * SR))).astype(np.float32)
            call = (0.2 * np.sin(2 * np.pi * (1500 + 800 * (i % 4)) * t)).astype(np.float32)
            for start in range(0, len(y) - len(call), 5 * SR):
                y[start : start + len(call)] += call
            sf.write(path, y, SR, subtype="PCM_16")
        out.append((path, label))
    return out


def _catalog(recs: list[tuple[Path, str]], minutes: float, path: Path) -> Path:
    import pandas as pd

    # by round of one recording per species: the first three rounds train/val/test, then 14/3/3 in 20
    splits = np.array(
        ["train", "val", "test"] + ["train"] * 11 + ["val", "test", "train", "val", "test", "train"]
    )
    rows = [
        {
            "source": str(p),
            "start_s": 0.0,
            "end_s": minutes * 60,
            "label": lab,
            "labels": [lab],
            "group": p.stem,
            "duration_s": minutes * 60,
            "split": splits[(i // len(SPECIES)) % len(splits)],
        }
        for i, (p, lab) in enumerate(recs)
    ]
    pd.DataFrame(rows).to_parquet(path, index=False)
    return path


def disk_per_hour(out: Path, hops: list[float]) -> list[dict[str, float]]:
    from chirpkit.config import load_config
    from chirpkit.data.store import prepare

    recs = _recordings(out / "disk-audio", 0.25, 5.0, seed=1)
    cat = _catalog(recs, 5.0, out / "disk-catalog.parquet")
    audio = load_config(RECIPE).audio
    rows = []
    for hop in hops:
        st = prepare(
            cat,
            out=out / f"disk-store-hop{hop}",
            config=audio.model_copy(update={"window_hop_s": hop}),
            progress=False,
        )
        stored = sum(p.stat().st_size for p in (st.root / "parts").glob("*.npy"))
        hours = len(recs) * 5.0 / 60
        decoded = hours * 3600 * SR * 2
        v1 = len(st) * st.segment_samples * 2
        rows.append(
            {
                "hop_s": hop,
                "windows_per_hour": round(len(st) / hours),
                "store_gb_per_hour": round(stored / hours / 1e9, 3),
                "decoded_gb_per_hour": round(decoded / hours / 1e9, 3),
                "ratio_to_decoded": round(stored / decoded, 3),
                "version1_ratio_to_decoded": round(v1 / decoded, 3),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    return rows


def memory_at(hours: float, out: Path, embedder: str, keep: bool) -> dict[str, object]:
    minutes = 5.0
    work = out / f"{hours:g}h"
    recs = _recordings(work / "audio", hours, minutes, seed=0)
    cat = _catalog(recs, minutes, work / "catalog.parquet")
    store, run, det, cache = work / "store", work / "run", work / "detect", work / "cache"
    cfg = ["--config", str(RECIPE)]
    fast = ["--set", "train.epochs=2", "--set", "train.prior_l2=[0.01]", "--set", "train.prior_epochs=[1]"]
    import pandas as pd

    tests = pd.read_parquet(cat).query("split == 'test'")["source"].tolist()
    stages = {
        "prepare": ["prepare", str(cat), "--out", str(store), *cfg, "--no-progress"],
        "embed": ["embed", str(store), *cfg, "--no-progress"],
        "train": ["train", str(store), "--out", str(run), *cfg, *fast, "--no-progress"],
        "evaluate": ["evaluate", str(run), "--no-progress"],
        "detect": ["detect", str(run), *tests, "--out", str(det), "--no-progress"],
    }
    res: dict[str, object] = {"hours": hours, "files": len(recs)}
    for name, argv in stages.items():
        res[name] = _stage(argv, cache, embedder)
        print(json.dumps({"hours": hours, "stage": name, **res[name]}), flush=True)  # type: ignore[dict-item]
    res["windows"] = len(pd.read_parquet(store / "index.parquet", columns=["part"]))
    res["test_hours"] = round(len(tests) * minutes / 60, 2)
    if not keep:
        shutil.rmtree(work)
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hours", type=float, nargs="+", default=[1.0, 5.0, 20.0])
    ap.add_argument("--hops", type=float, nargs="+", default=[3.0, 1.0, 0.5])
    ap.add_argument("--out", type=Path, default=Path("bench-out/memory"))
    ap.add_argument("--embedder", choices=["stand-in", "birdnet"], default="stand-in")
    ap.add_argument("--keep", action="store_true", help="keep the synthetic audio and stores")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    disk = disk_per_hour(args.out, args.hops)
    sizes = [memory_at(h, args.out, args.embedder, args.keep) for h in args.hours]
    stages = ["prepare", "embed", "train", "evaluate", "detect"]
    print("\nstore on disk per hour of audio (48 kHz int16 decoded: 0.346 GB/h)")
    print(f"{'hop s':>6} {'windows/h':>10} {'GB/h':>7} {'x decoded':>10} {'version 1 x':>12}")
    for r in disk:
        print(
            f"{r['hop_s']:>6g} {r['windows_per_hour']:>10} {r['store_gb_per_hour']:>7.3f} "
            f"{r['ratio_to_decoded']:>10.2f} {r['version1_ratio_to_decoded']:>12.2f}"
        )
    print("\npeak memory, MB: anonymous (the process's own) / resident (with mapped file pages), seconds")
    print(f"{'hours':>6} {'windows':>8} " + " ".join(f"{s:>22}" for s in stages))
    for r in sizes:
        cells = [
            f"{r[s]['peak_anon_mb']:>6} / {r[s]['peak_rss_mb']:>6} {r[s]['seconds']:>6.0f}s"  # type: ignore[index]
            for s in stages
        ]
        print(f"{r['hours']:>6g} {r['windows']:>8} " + " ".join(f"{c:>22}" for c in cells))
    if len(sizes) > 1:
        first, last = sizes[0], sizes[-1]
        ratios = {s: round(last[s]["peak_anon_mb"] / first[s]["peak_anon_mb"], 2) for s in stages}  # type: ignore[index]
        print(f"\nanonymous peak, {last['hours']:g} h / {first['hours']:g} h: {ratios}")
    (args.out / "memory.json").write_text(json.dumps({"disk": disk, "sizes": sizes}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
