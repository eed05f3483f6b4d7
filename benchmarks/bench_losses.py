"""Training-step throughput of vgcore's losses against the pytorch-metric-learning loss computing the same function.

One step = Linear(768 -> 128) head, L2-normalise, loss, backward, Adam step, on a fixed batch of
512 random features with an m-per-class label layout (default 128 classes x 4 samples). Each row
pairs our loss with the PML loss of PROTOCOL.md's mapping: before anything is timed, both are
called on the benchmark's batch (the seeded head's embeddings) and must give the same value and
the same gradient at the head, else the run stops. Our steps and PML's are interleaved in the
same process and rates come from median step times, so the ratio (ours / PML; above 1: ours is
faster) holds on a loaded machine; absolute figures do not.

Rows: the paper's seven losses at their defaults (npair: Sohn's one pair per class, PML's
NPairsLoss), npair_all (every positive pair: NTXentLoss(temperature=1.0)) and contrastive=pml (our
contrastive configured as PML's ContrastiveLoss()); contrastive at its defaults and ccl have no
PML equivalent.

Why npair is slower than NPairsLoss on the CPU: ours builds Sohn's P x P problem (P classes)
inside the B x B similarity matrix with masks, so that no shape depends on the labels (no host
sync; a CUDA graph can capture the step), where NPairsLoss first gathers the P anchors and
positives (`nonzero`, a sync) and works on P x P. At 4 samples per class the B x B matrix has 16x
the entries: the B x B matmuls (forward and backward) and the softmax's exp are most of our time
(torch.profiler, batch 512), the label indexing most of PML's; our label side is one sort. Computing
only the P x P problem would need data-dependent shapes (a sync, no capture) or, at a static
B/2 x B/2, sums in another order, so other numbers (PROTOCOL.md, "Benchmark" of "Losses").

    python benchmarks/bench_losses.py            # full run (PML's NTXent takes a few s a step)
    python benchmarks/bench_losses.py --quick    # sanity run, few steps
    python benchmarks/bench_losses.py --device cuda   # on a GPU (each step ends with a sync)
Writes bench_losses.csv (bench_losses_cuda.csv with --device cuda) to --out (benchmarks/out/).
"""

from __future__ import annotations

import argparse
import csv
import math
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from vgcore.losses import LOSSES, make_loss  # noqa: E402

OUT = Path(__file__).resolve().parent / "out"
FEATURE_DIM, EMBED_DIM = 768, 128

ROWS = {  # row -> (our loss, its hyperparameters)
    **{name: (name, {}) for name in LOSSES},
    "npair_all": ("npair_all", {}),
    "contrastive=pml": ("contrastive", dict(squared=False, normalize=True, reduction="nonzero_mean")),
}


def pml_equivalent(row: str, ours):
    """The PML loss computing row ``row``'s function on L2-normalised embeddings (PROTOCOL.md's
    mapping) and its label, or (None, why not)."""
    try:
        from pytorch_metric_learning import distances, losses, reducers
    except ImportError:
        return None, "pytorch-metric-learning not installed"
    table = {
        "contrastive=pml": (losses.ContrastiveLoss, "ContrastiveLoss()"),
        "triplet": (
            lambda: losses.TripletMarginLoss(
                margin=0.2, distance=distances.LpDistance(power=2), reducer=reducers.AvgNonZeroReducer()
            ),
            "TripletMarginLoss(0.2, LpDistance(power=2), AvgNonZeroReducer)",
        ),
        "npair": (losses.NPairsLoss, "NPairsLoss()"),
        "npair_all": (lambda: losses.NTXentLoss(temperature=1.0), "NTXentLoss(1.0)"),
        "infonce": (lambda: losses.NTXentLoss(temperature=0.1), "NTXentLoss(0.1)"),
        "arcface": (lambda: _arcface_like(losses, ours), "ArcFaceLoss(margin=28.65, scale=64)"),
        "scl": (lambda: losses.SupConLoss(temperature=0.1), "SupConLoss(0.1)"),
    }
    if row not in table:
        return None, "-"
    factory, label = table[row]
    return factory(), label


def _arcface_like(losses, ours):
    """PML's ArcFaceLoss with our ArcFace's margin, scale and class weights (W is our weight transposed)."""
    pml = losses.ArcFaceLoss(*ours.weight.shape, margin=math.degrees(ours.margin), scale=ours.scale)
    with torch.no_grad():
        pml.W.copy_(ours.weight.T)
    return pml


def seeded_head(device) -> torch.nn.Linear:
    torch.manual_seed(0)
    return torch.nn.Linear(FEATURE_DIM, EMBED_DIM).to(device)


def check_same_function(row: str, ours, pml, label: str, features, labels) -> None:
    """Both losses on the benchmark's batch: the same value, and the same gradient at the head's
    output through the step's L2 normalisation; else AssertionError (nothing timed)."""
    with torch.no_grad():
        out = seeded_head(features.device)(features)
    values, grads = [], []
    for loss_fn in (ours, pml.to(features.device)):
        leaf = out.clone().requires_grad_()
        value = loss_fn(F.normalize(leaf, dim=1), labels)
        value.backward()
        values.append(value.detach())
        grads.append(leaf.grad)
        loss_fn.zero_grad(set_to_none=True)

    def msg(what):
        return lambda m: f"{row}: ours and {label} differ in {what} on the benchmark's batch:\n{m}"

    torch.testing.assert_close(values[0], values[1], rtol=1e-4, atol=1e-6, msg=msg("value"))
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-3, atol=1e-6, msg=msg("gradient"))


def make_step(loss_fn, features, labels):
    """A closure running one full training step; the head is seeded so both sides match."""
    head = seeded_head(features.device)
    loss_fn.to(features.device)
    opt = torch.optim.Adam(list(head.parameters()) + list(loss_fn.parameters()), lr=1e-4)

    def step():
        opt.zero_grad(set_to_none=True)
        z = F.normalize(head(features), dim=1)
        loss = loss_fn(z, labels)  # ours and PML's alike return the scalar loss
        loss.backward()
        opt.step()
        if features.is_cuda:  # a step ends when the GPU has finished it
            torch.cuda.synchronize()

    return step


def timed(step) -> float:
    start = time.perf_counter()
    step()
    return time.perf_counter() - start


def compare_steps(ours, pml, min_rounds, max_rounds, budget_s, warmup, pml_every=1, pml_max=None):
    """Interleave our steps with PML's so both see the same machine load.

    Returns (our step times, PML step times). PML runs every ``pml_every``-th round, at most
    ``pml_max`` times (its NTXent takes seconds per step).
    """
    for _ in range(warmup):
        ours()
        if pml is not None:
            pml()
    ours_t, pml_t = [], []
    start = time.perf_counter()
    rounds = 0
    while rounds < min_rounds or (rounds < max_rounds and time.perf_counter() - start < budget_s):
        ours_t.append(timed(ours))
        if (
            pml is not None
            and rounds % pml_every == 0
            and (pml_max is None or len(pml_t) < pml_max)
        ):
            pml_t.append(timed(pml))
        rounds += 1
    return ours_t, pml_t


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()


def rate(times) -> float:
    """Steps per second from the median step time (robust to load spikes)."""
    return 1.0 / statistics.median(times) if times else float("nan")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few steps: a sanity run")
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--per-class", type=int, default=4, help="samples per class in a batch")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--rows", nargs="*", default=list(ROWS), choices=list(ROWS))
    parser.add_argument("--out", type=Path, default=OUT, help="folder of the CSV (default benchmarks/out)")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    features = torch.randn(args.batch, FEATURE_DIM, generator=gen)
    num_classes = math.ceil(args.batch / args.per_class)
    labels = torch.arange(args.batch) // args.per_class
    labels = labels[torch.randperm(args.batch, generator=gen)]
    features, labels = features.to(args.device), labels.to(args.device)
    # (min rounds, max rounds, time budget in s, warmup rounds)
    cfg = (5, 20, 1.0, 1) if args.quick else (30, 300, 6.0, 3)
    slow_pml = dict(pml_every=10, pml_max=1 if args.quick else 3)  # PML NTXent: seconds a step
    rows = []
    print(
        f"batch {args.batch}, {num_classes} classes x {args.per_class}, {args.threads} threads, "
        f"torch {torch.__version__}, {device_name(features.device)}"
    )
    header = f"{'loss':<16} {'ours steps/s':>13} {'PML steps/s':>12} {'ratio':>9}  PML loss"
    print(header)
    print("-" * len(header))
    for row in args.rows:
        name, hp = ROWS[row]
        ours = make_loss(
            name, num_classes=num_classes, embedding_dim=EMBED_DIM, check_inputs=False, **hp
        ).to(features.device)
        pml, pml_label = pml_equivalent(row, ours)
        if pml is not None:
            check_same_function(row, ours, pml, pml_label, features, labels)
        ours_step = make_step(ours, features, labels)
        pml_step = None if pml is None else make_step(pml, features, labels)
        extra = slow_pml if pml_label.startswith("NTXentLoss") and not features.is_cuda else {}
        ours_t, pml_t = compare_steps(ours_step, pml_step, *cfg, **extra)
        ours_sps, ours_n = rate(ours_t), len(ours_t)
        pml_sps, pml_n = rate(pml_t), len(pml_t)
        ratio = ours_sps / pml_sps if pml is not None else float("nan")
        print(f"{row:<16} {ours_sps:>13.1f} {pml_sps:>12.2f} {ratio:>8.2f}x  {pml_label}")
        sys.stdout.flush()
        rows.append(
            dict(
                loss=row,
                ours_steps_per_s=round(ours_sps, 3),
                ours_steps_timed=ours_n,
                pml_loss=pml_label,
                pml_steps_per_s=round(pml_sps, 4),
                pml_steps_timed=pml_n,
                ratio=round(ratio, 2),
                batch=args.batch,
                num_classes=num_classes,
                threads=args.threads,
                device=device_name(features.device),
                torch=torch.__version__,
                quick=args.quick,
            )
        )
    path = args.out / f"bench_losses{'' if features.device.type == 'cpu' else '_' + features.device.type}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
