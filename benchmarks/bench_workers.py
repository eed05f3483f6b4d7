"""The fair tuning's group of trials in one process at every core's threads (how `tune` ran before
`-j`) against the same group cut into one chunk per worker process at one thread each (`tune -j`,
vgcore.pool), on features of FashionMNIST's shape.

The features are a Gaussian mixture written as a user's ``.npz`` (the real loading path) and tuned
with the fair protocol on a user's file (vgcore.your_features: P x K batches, a validation split,
every loss's 8 trials fused), for a fixed number of epochs (patience = epochs: no trial stops early,
so both variants train the same number of steps). Both variants run in the same process, one after
the other, on the same file.

    python benchmarks/bench_workers.py [--rows 22000] [--dim 1280] [--epochs 2] [--jobs all]
Writes bench_workers.csv to --out (benchmarks/out/).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from vgcore import pool, your_features
from vgcore.config import get_profile
from vgcore.train import tune

OUT = Path(__file__).resolve().parent / "out"


def mixture(path: Path, rows: int, dim: int, classes: int) -> Path:
    """A features file of `rows` draws from `classes` Gaussians in `dim` dimensions."""
    g = np.random.default_rng(0)
    labels = np.arange(rows) % classes
    means = g.normal(size=(classes, dim)).astype(np.float32)
    np.savez(path, features=means[labels] + 2 * g.normal(size=(rows, dim)).astype(np.float32), labels=labels)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=22000, help="rows of the features file (train and test halves)")
    parser.add_argument("--dim", type=int, default=1280, help="feature size (1280: EfficientNet-Lite0)")
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--losses", nargs="+", default=None, help="default: the fair profile's nine")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--jobs", default="all", help="worker processes of the second variant")
    parser.add_argument("--out", type=Path, default=OUT, help="folder of the CSV")
    args = parser.parse_args()
    jobs, cores = pool.parse_jobs(args.jobs), pool.available_cores()
    profile = get_profile(your_features.PROFILE)
    losses = args.losses or list(profile.losses)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        features = mixture(tmp / "features.npz", args.rows, args.dim, args.classes)
        settings = {**your_features.cell(features), "epochs": args.epochs, "patience": args.epochs}
        rows, scores = [], {}
        for name, n, threads in (("one process", 1, cores), ("workers", jobs, 1)):
            start = time.perf_counter()
            frame = tune.tune(profile, tmp / name, datasets=["custom"], losses=losses, cache_dir=tmp / "cache",
                              progress=False, overrides=settings, jobs=n, threads=threads)
            seconds = time.perf_counter() - start
            if frame["map@r"].isna().any():
                raise SystemExit(f"{name}: {int(frame['map@r'].isna().sum())} trials have no score")
            scores[name] = frame["map@r"].to_numpy()
            rows.append({"variant": name, "jobs": n, "threads": threads, "heads": len(frame), "epochs": args.epochs,
                         "seconds": seconds})
    table = pd.DataFrame(rows)
    table["speedup"] = table["seconds"].iloc[0] / table["seconds"]
    # the two variants differ in threads: a reduction split over threads may sum in another order
    table["max_abs_map@r_diff"] = [0.0, float(np.max(np.abs(np.subtract(*scores.values()))))]
    print(table.to_string(index=False))
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "bench_workers.csv"
    table.to_csv(path, index=False)
    print(f"wrote {path} ({len(frame)} heads, {args.rows} x {args.dim} features, {cores} cores)")


if __name__ == "__main__":
    main()
