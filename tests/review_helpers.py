"""A hand-made ``detect`` output folder with known truth, for the review tests.

Two 20 s recordings with 1 s tones (``low`` 800 Hz, ``high`` 5 kHz) at known times; detection
windows of 1 s every 0.5 s whose scores are higher where the window holds a tone of its label, so
a reviewer that knows the truth accepts high scores more often than low ones (a calibration with
a known direction). A third recording exists on disk but is not in the manifest, and one
detection row names it: the review must never read it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from tests.conftest import TINY_SR, tone, write

CALLS = {
    "rec_a.wav": [(2.0, "low"), (7.0, "high"), (12.0, "low"), (16.0, "high")],
    "rec_b.wav": [(3.0, "high"), (9.0, "low"), (14.0, "low")],
}
FREQ = {"low": 800.0, "high": 5000.0}


def truth(file: str, start_s: float, end_s: float, label: str) -> bool:
    """Whether the window overlaps a call of ``label`` by at least 0.25 s."""
    return any(
        lab == label and min(end_s, t + 1.0) - max(start_s, t) >= 0.25 for t, lab in CALLS[Path(file).name]
    )


def make_detect_folder(root: Path, *, seed: int = 0) -> Path:
    """``root/audio/*.wav`` and ``root/det/`` as ``chirpkit detect`` writes it; returns ``root/det``."""
    rng = np.random.default_rng(seed)
    for name, calls in CALLS.items():
        y = 0.01 * rng.standard_normal(TINY_SR * 20).astype(np.float32)
        for t, lab in calls:
            y[int(t * TINY_SR) : int((t + 1) * TINY_SR)] += tone(FREQ[lab], 1.0, TINY_SR, amp=0.4)
        write(root / "audio" / name, y, TINY_SR)
    write(root / "audio" / "private.wav", np.zeros(TINY_SR, np.float32), TINY_SR)
    rows = []
    for name in CALLS:
        f = str(root / "audio" / name)
        for start in np.arange(0.0, 19.01, 0.5):
            for label in ("low", "high"):
                right = truth(f, start, start + 1.0, label)
                score = float(np.clip(rng.normal(0.9 if right else 0.62, 0.06 if right else 0.1), 0.0, 1.0))
                if score >= 0.5:
                    rows.append((f, float(start), float(start + 1.0), label, round(score, 4)))
    rows.append((str(root / "audio" / "private.wav"), 0.0, 1.0, "low", 0.99))
    det = root / "det"
    det.mkdir(parents=True)
    pd.DataFrame(rows, columns=["file", "start_s", "end_s", "label", "score"]).to_csv(
        det / "detections.csv", index=False
    )
    pd.DataFrame(
        [{"file": str(root / "audio" / n), "status": "done", "part": f"p{i}"} for i, n in enumerate(CALLS)]
    ).to_csv(det / "manifest.csv", index=False)
    (det / "detect_summary.json").write_text(
        json.dumps({"model": str(root / "no-such-run"), "min_score": 0.5})
    )
    return det
