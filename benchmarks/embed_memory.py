"""Peak memory of embedding a store part with BirdNET, by windows per model call.

    python benchmarks/embed_memory.py [--minutes 5] [--batches 100000 16] [--out bench-out/embed_memory]

One synthetic recording of ``--minutes`` at 48 kHz is prepared into a store of 3 s windows every
1 s (one part: every window of the file). Each batch size embeds that part in a fresh process
(``EmbeddingCache.load()`` with ``chirpkit.models.embeddings.EMBED_BATCH`` set, an empty cache)
and reports the process's peak resident memory and the time. ``100000`` is the old behaviour
(a whole part in one call); 16 is the default. Peak memory should not depend on the part's length
at the default: rerun with a longer ``--minutes`` to see it stay put. Needs chirpkit[birdnet].
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

_CHILD = r"""
import json, os, resource, sys, time
os.environ["CHIRPKIT_CACHE"] = sys.argv[3]
import chirpkit.models.embeddings as emb
from chirpkit.data.store import Store
emb.EMBED_BATCH = int(sys.argv[2])
store = Store(sys.argv[1])
t0 = time.perf_counter()
emb.EmbeddingCache(store).load(progress=False)
seconds = round(time.perf_counter() - t0, 2)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
print(json.dumps({"batch": emb.EMBED_BATCH, "windows": len(store), "seconds": seconds, "peak_rss_mb": peak}))
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--batches", type=int, nargs="+", default=[100_000, 16])
    ap.add_argument("--out", type=Path, default=Path("bench-out/embed_memory"))
    args = ap.parse_args()
    import numpy as np
    import pandas as pd
    import soundfile as sf

    from chirpkit.config import AudioConfig
    from chirpkit.data.store import prepare

    args.out.mkdir(parents=True, exist_ok=True)
    wav = args.out / "long.wav"
    seconds = int(args.minutes * 60)
    rng = np.random.default_rng(0)
    sf.write(wav, (0.05 * rng.standard_normal(seconds * 48000)).astype(np.float32), 48000)
    row = {
        "source": str(wav),
        "start_s": 0.0,
        "end_s": float(seconds),
        "label": "a",
        "labels": ["a"],
        "group": "g",
    }
    store = prepare(
        pd.DataFrame([row]).assign(split="train"),
        out=args.out / f"store-{seconds}s",
        config=AudioConfig(sample_rate=48000, window_s=3.0, window_hop_s=1.0),
        progress=False,
    )
    results = []
    for batch in args.batches:
        cache = args.out / f"cache-{seconds}s-{batch}"
        subprocess.run(["rm", "-rf", str(cache)], check=True)
        done = subprocess.run(
            [sys.executable, "-c", _CHILD, str(store.root), str(batch), str(cache)],
            check=True,
            capture_output=True,
            text=True,
        )
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(json.dumps(results[-1]), flush=True)
    (args.out / "embed_memory.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
