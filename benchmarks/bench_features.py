"""Feature-extraction throughput per backbone and input resolution, and the full FashionMNIST run.

    PYTHONPATH=. python benchmarks/bench_features.py                      # images/s table
    PYTHONPATH=. python benchmarks/bench_features.py --resolutions 64 96 --n 512
    PYTHONPATH=. python benchmarks/bench_features.py --full 64           # all 70,000 images
    PYTHONPATH=. python benchmarks/bench_features.py --quality 32 64 96  # kNN accuracy per resolution

Throughput is the whole pipeline of ``features()`` (uint8 images -> resize -> normalise ->
frozen network -> pooled features) on the first ``--n`` test images of ``--dataset``, after one
warm-up batch. ``vit_b_32`` is timed with random weights when its ImageNet weights are not in
the torch hub cache (same architecture, same cost). ``--full R`` runs ``features()`` for the
train and test splits at resolution R into a fresh cache directory, then times a cached load.
``--quality`` reports 5-NN accuracy (cosine) on a random train/test subset (``--quality-n``), to weigh speed against
feature quality. The load average is printed: on a shared machine other processes change the
numbers. Results also go to ``bench_features.json`` in ``--out`` (``benchmarks/out/``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from vgcore import data as D
from vgcore import features as B
from vgcore.features import vit
from vgcore.features.extraction import extract


def _load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def throughput(
    backbone: str, resolution: int | None, split: D.Split, device: str, batch_size: int
) -> dict:
    weights = None
    if backbone == "vit_b_32":
        ckpt = Path(torch.hub.get_dir()) / "checkpoints" / Path(vit.VIT_B_32_URL).name
        weights = None if ckpt.is_file() else "random"
    spec = B.backbone_spec(backbone, resolution=resolution, weights=weights)
    t0 = time.perf_counter()
    model = B.build_backbone(spec, device)
    build_s = time.perf_counter() - t0
    extract(model, spec, split.subset(range(min(16, len(split)))), device=device, progress=False)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    extract(model, spec, split, device=device, batch_size=batch_size, progress=False)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    s = time.perf_counter() - t0
    return {
        "backbone": backbone,
        "weights": spec.weights,
        "resolution": spec.preprocess.resolution,
        "n": len(split),
        "seconds": round(s, 3),
        "images_per_s": round(len(split) / s, 1),
        "build_s": round(build_s, 2),
        "load_avg_after": _load(),
    }


def full_run(dataset: str, resolution: int, device: str, batch_size: int, cache_dir: Path) -> dict:
    out = {"dataset": dataset, "backbone": "efficientnet_lite0", "resolution": resolution}
    total = 0.0
    n = 0
    for split in ("train", "test"):
        t0 = time.perf_counter()
        X, y = B.features(
            "efficientnet_lite0", dataset, split, cache_dir=cache_dir, backbone_options={"resolution": resolution},
            device=device, batch_size=batch_size, progress=True, recompute=True,
        )  # fmt: skip
        s = time.perf_counter() - t0
        total += s
        n += len(y)
        out[f"{split}_seconds"] = round(s, 1)
        out[f"{split}_shape"] = list(X.shape)
    out["total_seconds"] = round(total, 1)
    out["images"] = n
    out["images_per_s"] = round(n / total, 1)
    loads = []
    for _ in range(3):
        t0 = time.perf_counter()
        X, y = B.features(
            "efficientnet_lite0", dataset, "train", cache_dir=cache_dir, backbone_options={"resolution": resolution}
        )
        _ = float(X.sum())  # touch every page: a fully materialised load
        loads.append(time.perf_counter() - t0)
    out["cached_load_train_s"] = [round(t, 3) for t in loads]
    out["load_avg_after"] = _load()
    return out


def quality(dataset: str, resolution: int, device: str, n_train: int, n_test: int) -> dict:
    spec = B.backbone_spec("efficientnet_lite0", resolution=resolution)
    model = B.build_backbone(spec, device)
    feats = {}
    for split, n in (("train", n_train), ("test", n_test)):
        s = D.load_dataset(dataset, split=split)
        g = torch.Generator().manual_seed(0)
        s = s.subset(torch.randperm(len(s), generator=g)[:n].tolist())
        feats[split] = (extract(model, spec, s, device=device, progress=False), s.labels)
    (Xtr, ytr), (Xte, yte) = feats["train"], feats["test"]
    Xtr = torch.nn.functional.normalize(Xtr, dim=1)
    Xte = torch.nn.functional.normalize(Xte, dim=1)
    idx = (Xte @ Xtr.T).topk(5, dim=1).indices
    pred = torch.mode(ytr[idx], dim=1).values
    return {
        "resolution": resolution,
        "knn5_accuracy": round((pred == yte).float().mean().item(), 4),
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--dataset", default="fashionmnist")
    ap.add_argument("--backbones", nargs="+", default=["efficientnet_lite0", "vit_b_32"])
    ap.add_argument("--resolutions", nargs="+", type=int, default=[32, 64, 96, 128, 224])
    ap.add_argument("--n", type=int, default=256, help="images per throughput measurement")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--full", type=int, metavar="RES", help="extract the whole dataset at RES")
    ap.add_argument(
        "--quality", nargs="*", type=int, metavar="RES", help="kNN accuracy per resolution"
    )
    ap.add_argument(
        "--quality-n", nargs=2, type=int, default=[6000, 2000], metavar=("TRAIN", "TEST")
    )
    ap.add_argument("--skip-throughput", action="store_true")
    ap.add_argument("--cache-dir", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "out", help="folder of the JSON")
    args = ap.parse_args()

    info = {
        "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": args.device,
        "torch": torch.__version__,
        "load_avg_before": _load(),
    }
    print(json.dumps(info))
    results: dict = {"info": info, "throughput": [], "quality": [], "full": None}
    if not args.skip_throughput:
        split = D.load_dataset(args.dataset, split="test").subset(range(args.n))
        print(f"{'backbone':<20}{'weights':<10}{'res':>5}{'img/s':>9}{'n':>6}  load avg")
        for bb in args.backbones:
            for r in [224] if bb == "vit_b_32" else args.resolutions:
                row = throughput(bb, r, split, args.device, args.batch_size)
                results["throughput"].append(row)
                w = "random" if row["weights"] == "random" else "imagenet"
                print(
                    f"{bb:<20}{w:<10}{r:>5}{row['images_per_s']:>9}{row['n']:>6}  {row['load_avg_after']}",
                    flush=True,
                )
    for r in args.quality or []:
        row = quality(args.dataset, r, args.device, *args.quality_n)
        results["quality"].append(row)
        print(f"quality res {r}: 5-NN accuracy {row['knn5_accuracy']}", flush=True)
    if args.full:
        with tempfile.TemporaryDirectory() as tmp:
            cache = args.cache_dir or Path(tmp)
            results["full"] = full_run(args.dataset, args.full, args.device, args.batch_size, cache)
        print(json.dumps(results["full"]))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_features.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
