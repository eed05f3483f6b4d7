"""The paper profile's head training + evaluation for one seed: fused groups against one run per process.

The shape of the `paper` profile without its data: random class-structured 768-d features (the
ViT-B/32 class token's width) with the five datasets' real train/test sizes and class counts, 7
losses, batch 512, Adam, the profile's evaluation schedule (every epoch: VARIANCE and Recall@K on
the test split and a 2,000-sample training subset; MAP@R, R-precision and NMI at the final epoch),
diagnostics on. Two paths, in the same invocation, each job in its own process:

* fused (now): one process per dataset trains its 7 losses on one batch stream
  (`vgcore.train.fit`; on a GPU the 7-learner step is one CUDA graph);
* current (before): one process per dataset x loss, eager steps, and the full evaluation every
  epoch with NMI from scikit-learn's KMeans on the CPU, as the code did before the fused loop.

``--shape demo`` times the demo profile's shape instead (FashionMNIST's 20,000/5,000 subsets at
EfficientNet-Lite0's 1280-d, the synthetic fine-grained set, 5 epochs, lr 1e-3). Both paths run the
same epochs (``--scale`` x the profile's). Each job reports its training time, each evaluation
and its overhead (process start, imports, feature loading); the totals are printed as measured and
projected to the profile's 100 epochs (overhead + epochs x per-epoch cost + the final evaluation):
the current path is too slow to run 100 epochs in a benchmark. The fused/current ratio is printed
for both.

    python benchmarks/bench_paper.py                                 # CPU: 1 epoch at the real sizes (~25 min)
    python benchmarks/bench_paper.py --size-scale 0.2                # CPU: a fifth of every split (minutes)
    python benchmarks/bench_paper.py --device cuda --scale 1 --current-scale 0.02   # one GPU: all 100 epochs
    python benchmarks/bench_paper.py --shape demo                    # the demo's training stage (5 epochs)
Writes bench_paper[_demo][_cuda].csv to --out (benchmarks/out/).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

OUT = Path(__file__).resolve().parent / "out"
ROOT = Path(__file__).resolve().parents[1]

# profile -> (epochs, lr, {dataset: (train samples, test samples, train classes, test classes, width)});
# the zero-shot sets have other classes in test. paper: ViT-B/32's 768-d class token; demo:
# FashionMNIST through EfficientNet-Lite0 (1280-d) on its 20,000/5,000 subsets and the synthetic set.
SHAPES = {
    "paper": (100, 1e-4, {
        "cifar10": (50_000, 10_000, 10, 10, 768),
        "fashionmnist": (60_000, 10_000, 10, 10, 768),
        "cars196": (8_054, 8_131, 98, 98, 768),
        "cub200": (5_864, 5_924, 100, 100, 768),
        "tinyimagenet": (100_000, 10_000, 200, 200, 768),
    }),
    "demo": (5, 1e-3, {
        "fashionmnist": (20_000, 5_000, 10, 10, 1280),
        "synthetic": (3_000, 3_000, 50, 50, 64),
    }),
}


# ------------------------------------------------------------------------------------------ worker


def _features(path: Path, n: int, classes: int, width: int, seed: int):
    """Class-structured random features (unit-variance noise around N(0, I) class means), saved once."""
    import torch

    if not path.exists():
        g = torch.Generator().manual_seed(seed)
        y = torch.arange(n) % classes
        y = y[torch.randperm(n, generator=g)]
        x = torch.randn(classes, width, generator=g)[y] + 2.0 * torch.randn(n, width, generator=g)
        torch.save({"X": x, "y": y}, path)
    data = torch.load(path, mmap=True)
    return data["X"], data["y"]


def _legacy_nmi(z, labels, seed: int) -> float:
    """NMI as the code computed it before (scikit-learn KMeans on the CPU, float64, k = number of classes);
    stands in for `vgcore.metrics.retrieval._nmi`, so it takes the same arguments."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import normalized_mutual_info_score
    from torch import unique
    from torch.nn.functional import normalize

    x = normalize(z.detach().float(), dim=1).cpu().numpy().astype("float64")
    clusters = KMeans(n_clusters=len(unique(labels)), n_init=1, random_state=seed).fit_predict(x)
    return float(normalized_mutual_info_score(labels.cpu().numpy(), clusters))


def worker(args: argparse.Namespace) -> None:
    """One job: the fused group of a dataset, or one (dataset, loss) run the current way."""
    t_enter = time.time()
    import torch

    from vgcore.config import RunConfig
    from vgcore.train import fit, loop

    torch.set_num_threads(args.threads)
    _, lr, shapes = SHAPES[args.shape]
    n_train, n_test, c_train, c_test, width = _scaled(shapes[args.dataset], args.size_scale)
    t0 = time.perf_counter()
    train = _features(Path(args.cache) / f"{args.dataset}_train.pt", n_train, c_train, width, 0)
    test = _features(Path(args.cache) / f"{args.dataset}_test.pt", n_test, c_test, width, 1)
    t_load = time.perf_counter() - t0
    evals: list[tuple[bool, float]] = []
    real_evaluate = loop._evaluate

    def timed_evaluate(learners, active, splits, full, metrics=None, nmi=True):
        if args.device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = real_evaluate(learners, active, splits, full, metrics, nmi=nmi)
        evals.append((full, time.perf_counter() - start))  # the progress steps' evaluations count as partial
        return out

    loop._evaluate = timed_evaluate
    current = args.path == "current"
    if current:  # the code before: NMI from scikit-learn, every metric at every evaluated epoch
        from vgcore.metrics import retrieval

        retrieval._nmi = _legacy_nmi
    losses = [args.loss] if current else args.losses
    configs = [RunConfig(profile=args.shape, dataset=args.dataset, backbone="pixels", loss=loss, seed=0,
                         epochs=args.epochs, batch_size=512, lr=lr, device=args.device,
                         full_eval_every=1 if current else 0) for loss in losses]
    out_dirs = [Path(args.runs) / args.path / args.dataset / loss for loss in losses]
    t0 = time.perf_counter()
    results = fit(configs, out_dirs, train, test, progress=False, cuda_graph=False if current else None)
    t_fit = time.perf_counter() - t0
    s = results[0].summary
    t_train = s["n_steps"] / s["steps_per_s"]
    print(json.dumps({"path": args.path, "dataset": args.dataset, "losses": losses, "epochs": args.epochs,
                      "start_to_worker": t_enter - args.t_launch, "load": t_load, "fit": t_fit, "train": t_train,
                      "evals": evals, "graph": s["cuda_graph"], "n_steps": s["n_steps"]}))


def _scaled(shape, size_scale: float):
    n_train, n_test, c_train, c_test, width = shape
    return (max(2 * c_train, 512, round(n_train * size_scale)), max(2 * c_test, round(n_test * size_scale)),
            c_train, c_test, width)


# ------------------------------------------------------------------------------------------ parent


def launch(args, path: str, dataset: str, loss: str | None, epochs: int, tmp: Path) -> dict:
    cmd = [sys.executable, __file__, "--worker", "--shape", args.shape, "--path", path, "--dataset", dataset,
           "--epochs", str(epochs),
           "--device", args.device, "--threads", str(args.threads), "--size-scale", str(args.size_scale),
           "--cache", str(tmp / "features"), "--runs", str(tmp / "runs"), "--t-launch", repr(time.time()),
           "--losses", *args.losses]
    if loss:
        cmd += ["--loss", loss]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise RuntimeError(f"{path} job {dataset}/{loss} failed:\n{proc.stderr[-3000:]}")
    job = json.loads(proc.stdout.strip().splitlines()[-1])
    job["wall"] = wall
    return job


def project(job: dict, epochs: int) -> dict:
    """The job's time at `epochs` epochs from its measured parts: overhead, training per epoch,
    evaluations (per-epoch ones and the final full one)."""
    evals = job["evals"]
    t_eval = sum(t for _, t in evals)
    overhead = job["wall"] - job["train"] - t_eval
    per_epoch_train = job["train"] / job["epochs"]
    light = [t for full, t in evals[:-1]]  # every evaluation but the final one
    per_eval = sum(light) / len(light) if light else evals[-1][1]
    total = overhead + epochs * per_epoch_train + epochs * per_eval + evals[-1][1]
    return {"total": total, "eval": epochs * per_eval + evals[-1][1], "train": epochs * per_epoch_train,
            "overhead": overhead}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--shape", default="paper", choices=tuple(SHAPES), help="the profile whose shape to time")
    parser.add_argument("--scale", type=float, default=None,
                        help="fraction of the profile's epochs, at least 1 (default: 1 epoch of paper, all of demo)")
    parser.add_argument("--current-scale", type=float, default=None,
                        help="epochs fraction for the current path (default: --scale); it is projected to 100")
    parser.add_argument("--size-scale", type=float, default=1.0, help="fraction of every split's samples")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads per job (jobs run one at a time)")
    parser.add_argument("--datasets", nargs="+", default=None, help="default: the profile's")
    parser.add_argument("--losses", nargs="+", default=None)
    parser.add_argument("--skip-current", action="store_true")
    parser.add_argument("--out", type=Path, default=OUT, help="folder of the CSV")
    # worker arguments
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    parser.add_argument("--dataset", help=argparse.SUPPRESS)
    parser.add_argument("--loss", help=argparse.SUPPRESS)
    parser.add_argument("--epochs", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--cache", help=argparse.SUPPRESS)
    parser.add_argument("--runs", help=argparse.SUPPRESS)
    parser.add_argument("--t-launch", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.losses is None:
        from vgcore.registry import names

        args.losses = list(names("loss"))
    if args.worker:
        worker(args)
        return

    profile_epochs, _, shapes = SHAPES[args.shape]
    args.datasets = args.datasets or list(shapes)
    scale = args.scale if args.scale is not None else (1 / profile_epochs if args.shape == "paper" else 1.0)
    epochs = max(1, round(profile_epochs * scale))
    current_epochs = max(1, round(profile_epochs * (args.current_scale or scale)))
    print(f"{args.shape} shape, one seed: {len(args.datasets)} datasets x {len(args.losses)} losses, batch 512, "
          f"device {args.device}, {args.threads} thread(s) per job; sizes x{args.size_scale}; fused {epochs} epochs, "
          f"current {current_epochs} epochs (projections to {profile_epochs})", flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-paper-") as tmp:
        tmp = Path(tmp)
        (tmp / "features").mkdir()
        for dataset in args.datasets:
            jobs = [("fused", launch(args, "fused", dataset, None, epochs, tmp))]
            if not args.skip_current:
                jobs += [("current", launch(args, "current", dataset, loss, current_epochs, tmp)) for loss in args.losses]
            for path, job in jobs:
                p = project(job, profile_epochs)
                rows.append({"path": path, "dataset": dataset, "runs": len(job["losses"]), "epochs": job["epochs"],
                             "wall_s": job["wall"], "train_s": job["train"], "eval_s": sum(t for _, t in job["evals"]),
                             "overhead_s": job["wall"] - job["train"] - sum(t for _, t in job["evals"]),
                             "cuda_graph": job["graph"], "projected_total_s": p["total"],
                             "projected_eval_s": p["eval"]})
            done = pd.DataFrame(rows)
            done = done[done["dataset"] == dataset].groupby("path")[["wall_s", "train_s", "eval_s"]].sum()
            print(f"  {dataset:13s} " + "   ".join(f"{path}: {r.wall_s:7.1f} s (train {r.train_s:6.1f}, eval {r.eval_s:6.1f})"
                                                    for path, r in done.iterrows()), flush=True)
    frame = pd.DataFrame(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    csv = args.out / f"bench_paper{'' if args.shape == 'paper' else '_' + args.shape}{'' if args.device == 'cpu' else '_' + args.device}.csv"
    frame.to_csv(csv, index=False)
    total = frame.groupby("path")[["wall_s", "train_s", "eval_s", "overhead_s", "projected_total_s",
                                   "projected_eval_s", "runs"]].sum()
    print(f"\n{'path':8s} {'runs':>4s} {'measured s':>11s} {'train':>8s} {'eval':>8s} {'overhead':>9s} {'eval %':>7s}   "
          f"{'projected to ' + str(profile_epochs) + ' epochs':>26s} {'eval %':>7s}")
    for path, r in total.iterrows():
        print(f"{path:8s} {int(r.runs):4d} {r.wall_s:11.1f} {r.train_s:8.1f} {r.eval_s:8.1f} {r.overhead_s:9.1f} "
              f"{100 * r.eval_s / r.wall_s:6.1f}%   {r.projected_total_s:24.1f} s {100 * r.projected_eval_s / r.projected_total_s:6.1f}%")
    if "current" in total.index:
        cur, fus = total.loc["current"], total.loc["fused"]
        same = "" if epochs == current_epochs else " (different epochs: see the projection)"
        print(f"\ncurrent / fused: measured {cur.wall_s / fus.wall_s:.2f}x{same}; projected to {profile_epochs} epochs "
              f"{cur.projected_total_s / fus.projected_total_s:.2f}x")
    print(f"fused, projected to the whole {args.shape} profile for one seed: {total.loc['fused'].projected_total_s:.0f} s "
          f"({total.loc['fused'].projected_total_s / 60:.1f} min); wrote {csv}")
    if not math.isfinite(total.loc["fused"].projected_total_s):
        sys.exit(1)


if __name__ == "__main__":
    main()
