"""Benchmark: chunked exact-kNN retrieval metrics (and VARIANCE) on 100,000 x 128 embeddings.

    python benchmarks/bench_retrieval.py            # full size (a few minutes on 2 cores)
    python benchmarks/bench_retrieval.py --quick    # 20,000 x 128, for a smoke run

Every measurement runs in a fresh subprocess so that its peak resident memory (ru_maxrss) is its
own; the figure reported is the peak minus the RSS just before the call (the embeddings and the
imports are in the baseline). Ratios compare measurements of the same run, on the same machine:

* chunked vs. naive (one full N_sub x N_sub similarity matrix) on a subset both can hold;
* vgcore vs. pytorch-metric-learning's AccuracyCalculator (CustomKNN, cosine) on that subset;
* faiss backend vs. torch backend, when faiss is installed.

Writes bench_retrieval.csv to --out (benchmarks/out/) and prints a table.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "out"


def _data(n: int, d: int, classes: int, seed: int = 0):
    import torch

    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % classes
    y = y[torch.randperm(n, generator=g)]
    centers = torch.randn(classes, d, generator=g)
    z = centers[y] + 1.5 * torch.randn(n, d, generator=g)  # overlapping clusters: recall@1 < 1
    return z, y


def _rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _current_rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return float(line.split()[1]) / 1024.0
    return float("nan")


def _naive_metrics(z, y):
    """Reference implementation with the full N x N similarity matrix (ties not handled)."""
    import torch
    import torch.nn.functional as F

    zn = F.normalize(z, dim=1)
    sims = zn @ zn.T
    sims.fill_diagonal_(-float("inf"))
    counts = torch.bincount(y)
    r = counts[y] - 1
    k = int(r.max())
    idx = torch.topk(sims, k, dim=1).indices
    match = y[idx] == y.unsqueeze(1)
    return float(match[:, 0].double().mean())


def _pml_metrics(z, y):
    from pytorch_metric_learning.distances import CosineSimilarity
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
    from pytorch_metric_learning.utils.inference import CustomKNN

    calc = AccuracyCalculator(
        include=("precision_at_1", "mean_average_precision_at_r", "r_precision"),
        k="max_bin_count",
        knn_func=CustomKNN(CosineSimilarity(), batch_size=256),
    )
    return calc.get_accuracy(z, y)


def worker(task: str, n: int, d: int, classes: int, chunk: int | None) -> dict:
    import torch

    sys.path.insert(0, str(ROOT))
    from vgcore.metrics import retrieval_metrics, variance

    z, y = _data(n, d, classes)
    base = _current_rss_mb()
    t0 = time.perf_counter()
    if task == "retrieval_torch":
        res = retrieval_metrics(z, y, nmi=False, chunk_size=chunk)
    elif task == "retrieval_faiss":
        res = retrieval_metrics(z, y, nmi=False, chunk_size=chunk, backend="faiss")
    elif task == "nmi":
        from vgcore.metrics.retrieval import _nmi

        res = {"nmi": _nmi(z, y, 0)}
    elif task == "variance":
        res = variance(z, y)
    elif task == "naive_full_matrix":
        res = {"recall@1": _naive_metrics(z, y)}
    elif task == "pml_accuracy_calculator":
        res = {k: float(v) for k, v in _pml_metrics(z, y).items()}
    else:
        raise ValueError(task)
    wall = time.perf_counter() - t0
    return {
        "task": task,
        "n": n,
        "d": d,
        "classes": classes,
        "chunk_size": chunk if chunk is not None else "auto",
        "threads": torch.get_num_threads(),
        "wall_s": round(wall, 3),
        "peak_mb_over_baseline": round(_rss_mb() - base, 1),
        "result": json.dumps({k: round(float(v), 6) for k, v in res.items()}),
    }


def run(task, n, d, classes, chunk=None):
    cmd = [sys.executable, __file__, "--worker", task, "--n", str(n), "--d", str(d)]
    cmd += ["--classes", str(classes)]
    if chunk is not None:
        cmd += ["--chunk", str(chunk)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
    if proc.returncode != 0:
        print(proc.stderr, file=sys.stderr)
        raise SystemExit(f"{task} failed")
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    print(
        f"{row['task']:<25} n={row['n']:>6} chunk={row['chunk_size']!s:>5} "
        f"wall={row['wall_s']:>8.2f}s peak+={row['peak_mb_over_baseline']:>8.1f} MB  {row['result']}",
        flush=True,
    )
    return row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--worker")
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--d", type=int, default=128)
    ap.add_argument("--classes", type=int, default=100)
    ap.add_argument("--chunk", type=int, default=None)
    ap.add_argument("--n-sub", type=int, default=10_000, help="subset size for the ratios")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--skip-nmi", action="store_true")
    ap.add_argument("--faiss-full", action="store_true", help="also time faiss at full size")
    ap.add_argument("--out", type=Path, default=OUT, help="folder of the CSV")
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.n, args.d, args.classes, args.chunk)))
        return

    n = 20_000 if args.quick else args.n
    n_sub, d, c = min(args.n_sub, n), args.d, args.classes
    c_sub = max(2, c * n_sub // n)
    rows = []
    rows.append(run("retrieval_torch", n, d, c))
    rows.append(run("variance", n, d, c))
    if not args.skip_nmi:
        rows.append(run("nmi", n, d, c))
    # ratios on a subset the naive method can hold (same class size as the full run)
    sub = {t: run(t, n_sub, d, c_sub) for t in ("retrieval_torch", "naive_full_matrix")}
    try:
        import pytorch_metric_learning  # noqa: F401

        sub["pml_accuracy_calculator"] = run("pml_accuracy_calculator", n_sub, d, c_sub)
    except ImportError:
        pass
    try:
        import faiss  # noqa: F401

        sub["retrieval_faiss"] = run("retrieval_faiss", n_sub, d, c_sub)
        if args.faiss_full:
            rows.append(run("retrieval_faiss", n, d, c))
    except ImportError:
        pass
    rows += list(sub.values())
    ref = sub["retrieval_torch"]
    for row in sub.values():
        row["wall_ratio_vs_chunked_subset"] = round(row["wall_s"] / ref["wall_s"], 3)
        row["peak_ratio_vs_chunked_subset"] = round(
            row["peak_mb_over_baseline"] / max(ref["peak_mb_over_baseline"], 1e-9), 3
        )
    full_nxn_gb = n * n * 4 / 2**30
    print(f"a full {n} x {n} float32 similarity matrix would take {full_nxn_gb:.1f} GiB")

    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "bench_retrieval.csv"
    fields = sorted(
        {k for r in rows for k in r}, key=lambda k: list(rows[0]).index(k) if k in rows[0] else 100
    )
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
