"""Training throughput per loss with all diagnostics on, against the same step with them off.

The step is the real one (`vgcore.train.train_step`): Linear(in, 128) head, L2 normalisation, loss,
backward, Adam, and with diagnostics the GREEDINESS measures read off the same backward. Both
variants run interleaved in the same process on the same batches, so the ratio is fair under load.

    python benchmarks/bench_train.py [--batch 512] [--in-dim 1280] [--steps 30] [--losses triplet scl]
    python benchmarks/bench_train.py --device cuda    # ms/step on a GPU (timed to a final sync)
Writes bench_train[_cuda].csv to --out (benchmarks/out/).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd
import torch

from vgcore.config import RunConfig
from vgcore.losses import LOSSES
from vgcore.train import make_learner, train_step

OUT = Path(__file__).resolve().parent / "out"


def time_steps(learner, xs, ys, diagnostics: bool) -> float:
    """Seconds per step over the given batches (stats stacked once at the end, as the run loop does)."""
    start = time.perf_counter()
    stats = [train_step([learner], x, y, diagnostics=diagnostics)[0] for x, y in zip(xs, ys, strict=True)]
    torch.stack(stats).cpu()  # waits for the device: the timing covers the work, not its launch
    return (time.perf_counter() - start) / len(xs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--in-dim", type=int, default=1280, help="feature size (1280: EfficientNet-Lite0)")
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--losses", nargs="+", default=list(LOSSES))
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--out", type=Path, default=OUT, help="folder of the CSV")
    args = parser.parse_args()
    torch.set_num_threads(2)
    device = torch.device(args.device)
    g = torch.Generator().manual_seed(0)
    xs = [torch.randn(args.batch, args.in_dim, generator=g).to(device) for _ in range(args.steps)]
    ys = [torch.randint(0, args.classes, (args.batch,), generator=g).to(device) for _ in range(args.steps)]
    rows = []
    for loss in args.losses:
        config = RunConfig(loss=loss, batch_size=args.batch)
        learners = {d: make_learner(config, args.in_dim, args.classes, device) for d in (False, True)}
        for d in (False, True):  # warm-up
            time_steps(learners[d], xs[:3], ys[:3], d)
        best = {False: float("inf"), True: float("inf")}
        for _ in range(args.repeats):  # interleaved, best of repeats
            for d in (False, True):
                best[d] = min(best[d], time_steps(learners[d], xs, ys, d))
        rows.append({"loss": loss, "device": args.device, "steps_per_s_off": 1 / best[False],
                     "steps_per_s_on": 1 / best[True], "ms_per_step_off": 1e3 * best[False],
                     "ms_per_step_on": 1e3 * best[True], "diagnostics_overhead": best[True] / best[False] - 1})
        print(f"{loss:12s} off {1 / best[False]:8.1f} steps/s ({1e3 * best[False]:6.2f} ms)   "
              f"on {1 / best[True]:8.1f} steps/s ({1e3 * best[True]:6.2f} ms)   "
              f"overhead {100 * rows[-1]['diagnostics_overhead']:+.1f}%", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"bench_train{'' if device.type == 'cpu' else '_' + device.type}.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    print(f"wrote {path} (batch {args.batch}, in_dim {args.in_dim}, {torch.get_num_threads()} threads)")


if __name__ == "__main__":
    main()
