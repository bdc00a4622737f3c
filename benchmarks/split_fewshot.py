"""How many classes ``split`` leaves out of a split or fold on few-shot catalogs.

    python benchmarks/split_fewshot.py [--data ../shared/data] [--seeds 10]

Catalogs (one group per recording unless said):

* ``synthetic-82``: 82 classes with 2–5 recordings each (1–3 rows per recording), seeded;
* ``synthetic-82-ml``: the same plus 15 soundscape recordings that each hold 2–4 of the classes;
* ``xc10-recording``: ``xc-westcoast10`` (10 species × 10 recordings), group = recording id;
* ``xc10-recordist``: the same, group = recordist (3–10 groups per species).

Each is split with ``split.min_count=2`` and ``split.folds`` 0 (train/val/test) and 3, over
``--seeds`` split seeds. Printed per catalog and setting, mean over seeds: classes missing from
test, val and train; classes with at least 3 groups missing any split ("≥3 miss"); classes with
at least K + 1 groups missing a fold. Run it on another checkout (``PYTHONPATH=…/src``) to compare
versions; it uses only ``chirpkit.split`` and ``SplitConfig``.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from chirpkit.config import SplitConfig
from chirpkit.data.split import split

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def synthetic(n_classes: int = 82, soundscapes: int = 0, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for c in range(n_classes):
        for r in range(int(rng.integers(2, 6))):
            rows += [{"label": f"sp{c:02d}", "group": f"sp{c:02d}-r{r}"}] * int(rng.integers(1, 4))
    for s in range(soundscapes):
        for c in rng.choice(n_classes, size=int(rng.integers(2, 5)), replace=False):
            rows.append({"label": f"sp{c:02d}", "group": f"soundscape{s}"})
    df = pd.DataFrame(rows)
    df["source"] = "/x/" + df["group"] + ".wav"
    df["start_s"] = np.arange(len(df), dtype=float)
    df["end_s"] = df["start_s"] + 3.0
    return df


def xc10(data: Path, group: str) -> pd.DataFrame:
    table = pd.read_csv(data / "xc-westcoast10" / "labels.csv")
    return pd.DataFrame(
        {
            "source": [str(data / "xc-westcoast10" / p) for p in table["path"]],
            "start_s": 0.0,
            "end_s": 6.0,
            "label": table["label"],
            "group": table[group].astype(str),
        }
    )


def misses(df: pd.DataFrame, out: pd.DataFrame, folds: int) -> dict[str, int]:
    n_groups = df.groupby("label")["group"].nunique()
    present = pd.crosstab(out["label"], out["split"]) > 0
    res = {s: int((~present[s]).sum()) if s in present else len(present) for s in ("test", "val", "train")}
    rich = n_groups.index[n_groups >= 3]
    res["≥3 miss"] = int((~present.loc[rich, ["train", "val", "test"]].all(axis=1)).sum())
    if folds:
        in_fold = pd.crosstab(out["label"], out["fold"]).drop(columns=-1, errors="ignore") > 0
        rich = n_groups.index[n_groups >= folds + 1]
        res["≥K+1 miss a fold"] = int(
            (~in_fold.reindex(columns=range(folds), fill_value=False).loc[rich]).any(axis=1).sum()
        )
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--seeds", type=int, default=10)
    args = ap.parse_args()
    logging.getLogger("chirpkit").setLevel(logging.ERROR)
    catalogs = {"synthetic-82": synthetic(), "synthetic-82-ml": synthetic(soundscapes=15)}
    if (args.data / "xc-westcoast10").is_dir():
        catalogs["xc10-recording"] = xc10(args.data, "group")
        catalogs["xc10-recordist"] = xc10(args.data, "recordist")
    else:
        print(f"({args.data / 'xc-westcoast10'} absent: synthetic catalogs only)")
    print(f"{'catalog':16} {'folds':>5} {'classes':>7}  classes missing (mean over {args.seeds} seeds)")
    for name, df in catalogs.items():
        for folds in (0, 3):
            total: dict[str, int] = {}
            for seed in range(args.seeds):
                out = split(df, config=SplitConfig(min_count=2, folds=folds, seed=seed))
                for k, v in misses(df, out, folds).items():
                    total[k] = total.get(k, 0) + v
            line = "  ".join(f"{k} {v / args.seeds:.1f}" for k, v in total.items())
            print(f"{name:16} {folds:>5} {df['label'].nunique():>7}  {line}")


if __name__ == "__main__":
    main()
