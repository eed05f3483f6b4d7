"""Training runs from start to finish: features -> heads -> per-step log -> per-epoch evaluation -> files.

One loop, :func:`fit`, trains a *group* of runs that share a batch stream: the same data, seed,
sampler and schedule, each run with its own head, loss and optimiser (the paired design: every loss
sees the identical batches). Each learner's arithmetic is its own, so a run trained in a group
equals the same run trained alone (bit for bit on the CPU; ``tests/test_fused.py``); fusing only
saves the per-run cost of a process, the feature loading and, on a GPU, kernel launches (the group's
step is captured in one CUDA graph, :mod:`vgcore.train.graph`).

- :func:`fit`: the loop, on features given as tensors; writes each run's directory (:mod:`vgcore.results`).
- :func:`run_group`: the features of the group's dataset (cached), then :func:`fit`.
- :func:`run`: one config, i.e. :func:`run_group` of one.
- :func:`sweep`: every config whose run directory is not complete, fused per :func:`vgcore.config.group_key`.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import Tensor
from tqdm import tqdm

import vgcore
from vgcore import results
from vgcore.config import check_group, group_key
from vgcore.data import check_available
from vgcore.device import resolve_device
from vgcore.errors import UserError
from vgcore.features import features
from vgcore.io import atomic_write_json
from vgcore.metrics.convergence import convergence_epoch, recall_convergence_epoch
from vgcore.metrics.greediness import GREEDINESS_KEYS
from vgcore.train.evaluate import embed, evaluate_splits
from vgcore.train.graph import EagerStep, GraphStep, graph_safe
from vgcore.train.learner import make_learner
from vgcore.train.samplers import batch_indices, fixed_subset
from vgcore.train.steplog import NonFiniteLoss, StepLog


class TrainingDivergedError(UserError, RuntimeError):
    """The loss became NaN or infinite; the message names the step and the last finite values."""


@dataclass
class RunResult:
    path: Path
    summary: dict
    steps: pd.DataFrame
    epochs: pd.DataFrame


def load_features(config, split: str, data_root=None, cache_dir=None, progress: bool = True):
    """The frozen features ``(X, y)`` of one split of the config's dataset (cached)."""
    return features(config.backbone, config.dataset, split, data_root, cache_dir, progress=progress,
                    backbone_options=config.backbone_options, dataset_options=config.dataset_options)


def run(config, out_dir, *, data_root=None, cache_dir=None, progress: bool = True,
        cuda_graph: bool | None = None) -> RunResult:
    """Train one head with one loss; write the run directory (see `vgcore.results`); return it."""
    return run_group([config], [out_dir], data_root=data_root, cache_dir=cache_dir, progress=progress,
                     cuda_graph=cuda_graph)[0]


def run_group(configs: Sequence, out_dirs: Sequence, *, data_root=None, cache_dir=None, progress: bool = True,
              cuda_graph: bool | None = None) -> list[RunResult]:
    """Train several runs that share a batch stream in one pass (see :func:`fit`); load their features first."""
    configs, out_dirs = _check_runs(configs, out_dirs)
    config = configs[0]
    check_available(config.dataset, data_root, download=config.dataset_options.get("download", True))
    train_data = load_features(config, "train", data_root, cache_dir, progress)
    eval_data = load_features(config, config.eval_split, data_root, cache_dir, progress)
    return fit(configs, out_dirs, train_data, eval_data, progress=progress, cuda_graph=cuda_graph)


def fit(configs: Sequence, out_dirs: Sequence, train_data: tuple[Tensor, Tensor], eval_data: tuple[Tensor, Tensor], *,
        progress: bool = True, cuda_graph: bool | None = None) -> list[RunResult]:
    """The training loop of a group of runs on the given features; writes and returns each run.

    ``configs`` may differ only in :data:`vgcore.config.PER_LEARNER_KEYS` (loss, its parameters,
    lr, head); ``train_data`` and ``eval_data`` are the full ``(X, y)`` of the train and eval split
    (the config's ``train_size``/``eval_size`` subsets are drawn here). ``cuda_graph``: None = on a
    CUDA device when every loss can be captured, True = required, False = eager. If a run's loss
    becomes non-finite, that run stops with its failure record and the others go on; the error is
    raised once the others are written.
    """
    t_start = time.perf_counter()
    configs, out_dirs = _check_runs(configs, out_dirs)
    config = configs[0]  # what the group shares
    device = resolve_device(config.device)
    x_train, y_train = fixed_subset(*train_data, config.train_size)
    x_eval, y_eval = fixed_subset(*eval_data, config.eval_size)
    x_train, y_train, x_eval, y_eval = (t.to(device) for t in (x_train, y_train, x_eval, y_eval))
    for split, x in (("train", x_train), (config.eval_split, x_eval)):
        if not torch.isfinite(x).all():
            raise ValueError(f"the {config.backbone} features of {config.dataset}/{split} contain NaN or inf; "
                             f"delete the feature cache and recompute them")
    num_classes = int(y_train.max()) + 1
    learners = [make_learner(c, x_train.shape[1], num_classes, device) for c in configs]
    use_graph = _use_graph(cuda_graph, device, learners)
    paths = [results.start_run(d, c) for d, c in zip(out_dirs, configs, strict=True)]

    generator = torch.Generator(device=device).manual_seed(config.seed)
    subset = torch.randperm(y_train.numel(), generator=generator, device=device)[: config.eval_train_size]
    splits = {config.eval_split: (x_eval, y_eval), "train_subset": (x_train[subset], y_train[subset])}
    kwargs = {"diagnostics": config.diagnostics, "grad_threshold": config.grad_threshold}
    step = (GraphStep(learners, x_train, y_train, batch_size=config.batch_size, **kwargs) if use_graph
            else EagerStep(learners, x_train, y_train, **kwargs))
    logs = [StepLog(config.sync_every) for _ in configs]
    failures: dict[int, str] = {}

    def fail(i: int, bad: NonFiniteLoss) -> None:
        failures[i] = _fail(paths[i], configs[i], logs[i], epoch_rows[i], bad)
        step.drop(i)

    t_eval = time.perf_counter()
    epoch_rows = [_epoch_rows(0, float("nan"), m) for m in _evaluate(learners, step.active, splits, config.full_eval_at(0))]
    t_eval = time.perf_counter() - t_eval
    what = configs[0].loss if len(configs) == 1 else f"{len(configs)} losses"
    bar = tqdm(range(1, config.epochs + 1), desc=f"{config.dataset}/{what}/seed{config.seed}", disable=not progress,
               leave=False)
    t_train = 0.0
    for epoch in bar:
        t0 = time.perf_counter()
        for idx in batch_indices(y_train, config, generator):
            for i, stats in step(idx).items():
                try:
                    logs[i].append(epoch, stats)
                except NonFiniteLoss as bad:
                    fail(i, bad)
        for i in list(step.active):
            try:
                logs[i].flush()
            except NonFiniteLoss as bad:
                fail(i, bad)
        t_train += time.perf_counter() - t0
        if not step.active:
            break
        if epoch % config.eval_every == 0 or epoch == config.epochs:
            t0 = time.perf_counter()
            metrics = _evaluate(learners, step.active, splits, config.full_eval_at(epoch))
            t_eval += time.perf_counter() - t0
            for i, m in zip(step.active, metrics, strict=True):
                epoch_rows[i] += _epoch_rows(epoch, logs[i].epoch_mean("train_loss", epoch), m)
            bar.set_postfix(r1=" ".join(f"{m[config.eval_split]['recall@1']:.3f}" for m in metrics))

    out = []
    timing = {"wall": time.perf_counter() - t_start, "train": t_train, "eval": t_eval, "size": len(configs),
              "graph": use_graph}
    for i in step.active:
        steps_df, epochs_df = logs[i].frame(), pd.DataFrame(epoch_rows[i])
        results.write_tables(paths[i], steps_df, epochs_df)
        results.write_embeddings(paths[i], embed(learners[i].head, x_eval).cpu().numpy(), y_eval.cpu().numpy())
        summary = _summary(configs[i], steps_df, epochs_df, timing)
        atomic_write_json(paths[i] / "summary.json", summary)
        out.append(RunResult(paths[i], summary, steps_df, epochs_df))
    if failures:
        raise TrainingDivergedError("\n".join(failures[i] for i in sorted(failures)))
    return out


def sweep(configs: Sequence, root, *, data_root=None, cache_dir=None, progress: bool = True,
          cuda_graph: bool | None = None) -> list[Path]:
    """Run every config whose run directory is not complete with the same config hash; skip the rest.

    Configs that share a batch stream (:func:`vgcore.config.group_key`: same dataset, seed, schedule)
    train together in one :func:`run_group`, in the order their first config appears.
    """
    paths = [results.run_dir(root, c) for c in configs]
    groups: dict[str, list[int]] = {}
    for i, (config, path) in enumerate(zip(configs, paths, strict=True)):
        if not results.is_complete(path, config.config_hash()):
            groups.setdefault(group_key(config), []).append(i)
    for members in tqdm(groups.values(), desc="sweep", disable=not progress):
        run_group([configs[i] for i in members], [paths[i] for i in members], data_root=data_root,
                  cache_dir=cache_dir, progress=progress, cuda_graph=cuda_graph)
    return paths


def _check_runs(configs: Sequence, out_dirs: Sequence) -> tuple[list, list[Path]]:
    configs, out_dirs = list(configs), [Path(d) for d in out_dirs]
    if not configs or len(out_dirs) != len(configs):
        raise ValueError(f"give one output directory per config: got {len(configs)} configs and "
                         f"{len(out_dirs)} directories")
    if len({os.path.abspath(d) for d in out_dirs}) != len(out_dirs):
        raise ValueError("two runs of the group would write the same output directory; give each its own")
    check_group(configs)
    return configs, out_dirs


def _use_graph(cuda_graph: bool | None, device: torch.device, learners) -> bool:
    if cuda_graph is False:
        return False
    possible = device.type == "cuda" and graph_safe(learners)
    if cuda_graph and not possible:
        why = "the device is not CUDA" if device.type != "cuda" else "a loss of the group cannot be captured"
        raise ValueError(f"cuda_graph=True but {why}; use cuda_graph=None (automatic) or False")
    return possible


def _evaluate(learners, active: Sequence[int], splits, full: bool) -> list[dict[str, dict[str, float]]]:
    """``{split: metrics}`` of each active learner's head (evaluation never touches the batch stream)."""
    return [evaluate_splits(learners[i].head, splits, full=full) for i in active]


def _epoch_rows(epoch: int, train_loss: float, metrics: dict[str, dict[str, float]]) -> list[dict]:
    return [{"epoch": epoch, "split": split, "train_loss": train_loss, **values} for split, values in metrics.items()]


def _fail(path, config, log: StepLog, epoch_rows: list[dict], bad: NonFiniteLoss) -> str:
    """Write the partial logs and failure.json (no summary.json: the run stays incomplete); return
    the message the loop raises once the rest of the group is written."""
    steps_df = log.frame()
    results.write_tables(path, steps_df, pd.DataFrame(epoch_rows))
    last = steps_df.iloc[-1].to_dict() if len(steps_df) else {}
    last_txt = ", ".join(f"{k}={last[k]:.6g}" for k in ("train_loss", "grad_norm") if k in last) or "none (first step)"
    message = (f"loss {config.loss!r} became {bad.value} at step {bad.step} (epoch {bad.epoch}) on {config.dataset!r} "
               f"(seed {config.seed}); last finite values: {last_txt}. The partial logs are in {path}. "
               f"Try a lower lr (now {config.lr}) or check the features for NaN.")
    atomic_write_json(path / "failure.json", {"error": message, "step": bad.step, "epoch": bad.epoch, "last": last})
    return message


def _summary(config, steps: pd.DataFrame, epochs: pd.DataFrame, timing: dict) -> dict:
    test = epochs[epochs["split"] == config.eval_split].sort_values("epoch")
    loss_by_epoch = steps.groupby("epoch")["train_loss"].mean()
    final = test.iloc[-1].drop(["epoch", "split"]).to_dict()
    greedy = steps[[*GREEDINESS_KEYS]].mean().to_dict() if len(steps) else {}
    return {
        "status": "complete",
        "config": config.to_dict(),
        "config_hash": config.config_hash(),
        "schema_version": results.SCHEMA_VERSION,
        "final": final,
        "convergence": {
            "loss_convergence_epoch": int(loss_by_epoch.index[convergence_epoch(loss_by_epoch.to_numpy())]),
            "recall_convergence_epoch": int(test["epoch"].iloc[recall_convergence_epoch(test["recall@1"])]),
        },
        "greediness_mean": {f"{k}_mean": v for k, v in greedy.items()},
        "batches_without_positives": int((~steps["has_positives"]).sum()),
        "n_steps": len(steps),
        # timings are the group's: a fused group trains `group_size` runs in one pass
        "wall_time_s": timing["wall"],
        "eval_time_s": timing["eval"],
        "steps_per_s": len(steps) / timing["train"] if timing["train"] > 0 else float("nan"),
        "group_size": timing["size"],
        "cuda_graph": timing["graph"],
        "versions": {"vgcore": vgcore.__version__, "torch": torch.__version__, "numpy": np.__version__,
                     "python": platform.python_version()},
    }
