"""Benchmark: cost of logging GREEDINESS every step, relative to the step it describes.

    python benchmarks/bench_diagnostics.py [--batch 512] [--dim 128] [--repeats 50]

Times, in the same process and on the same tensors: (a) a training step of a linear head
(768 -> 128, L2-normalised) with a pairwise contrastive loss, forward + backward; (b) `greediness` on
that step's outputs; (c) `grad_active_sweep` over the default thresholds; (d) the same step with its
loss called through `GreedinessMonitor` (hooks on the embeddings and the head's parameters compute
`greediness` during the backward). Reports medians and the ratios to (a). Writes
bench_diagnostics.csv to --out (benchmarks/out/).
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vgcore.metrics import grad_active_sweep, greediness  # noqa: E402
from vgcore.train import GreedinessMonitor  # noqa: E402


def contrastive(z, y, neg_margin=0.5):
    d = torch.cdist(z, z)
    same = y[:, None] == y[None, :]
    off = ~torch.eye(len(y), dtype=torch.bool, device=z.device)
    terms = torch.where(same, d, (neg_margin - d).clamp(min=0)) * off
    per_sample = terms.sum(1) / off.sum(1)
    return SimpleNamespace(
        loss=per_sample.mean(),
        per_sample=per_sample,
        n_terms=off.sum(),
        n_active_terms=((terms > 0) & off).sum(),
        has_positives=(same & off).any(),
    )


def _median_ms(fn, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out", help="folder of the CSV")
    args = ap.parse_args()
    torch.manual_seed(0)
    head = torch.nn.Linear(768, args.dim)
    x = torch.randn(args.batch, 768)
    y = torch.randint(0, 16, (args.batch,))
    state = {}

    def step():
        head.zero_grad(set_to_none=True)
        z = torch.nn.functional.normalize(head(x), dim=1)
        z.retain_grad()
        out = contrastive(z, y)
        out.loss.backward()
        state["out"], state["z"] = out, z

    step()
    step_ms = _median_ms(step, args.repeats)
    g_ms = _median_ms(
        lambda: greediness(state["out"], state["z"].grad, head.parameters()), args.repeats
    )
    s_ms = _median_ms(lambda: grad_active_sweep(state["z"].grad), args.repeats)
    monitor = GreedinessMonitor(lambda z, labels: contrastive(z, labels).loss, head.parameters(),
                                sync_every=args.repeats + 1)

    def monitored_step():
        head.zero_grad(set_to_none=True)
        z = torch.nn.functional.normalize(head(x), dim=1)
        monitor(z, y).backward()

    monitored_step()
    m_ms = _median_ms(monitored_step, args.repeats)
    rows = [
        {"what": "step (forward+backward)", "median_ms": round(step_ms, 3), "ratio_to_step": 1.0},
        {
            "what": "greediness",
            "median_ms": round(g_ms, 3),
            "ratio_to_step": round(g_ms / step_ms, 4),
        },
        {
            "what": "grad_active_sweep",
            "median_ms": round(s_ms, 3),
            "ratio_to_step": round(s_ms / step_ms, 4),
        },
        {
            "what": "step through GreedinessMonitor",
            "median_ms": round(m_ms, 3),
            "ratio_to_step": round(m_ms / step_ms, 4),
        },
    ]
    for r in rows:
        print(f"{r['what']:<31} {r['median_ms']:>9.3f} ms  x{r['ratio_to_step']}")
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "bench_diagnostics.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["what", "median_ms", "ratio_to_step"])
        w.writeheader()
        w.writerows(rows)
    print(f"batch={args.batch} dim={args.dim} threads={torch.get_num_threads()}")


if __name__ == "__main__":
    main()
