"""A training run from start to finish: features -> head -> per-step log -> per-epoch evaluation -> files.

``run`` trains one config into its run directory (see :mod:`vgcore.results`): every setting is
checked and the untrained head evaluated before anything is written, the run is built in a staging
folder under the run's lock and swapped in only when complete, and a run that fails leaves its
partial logs and ``failure.json`` without touching a complete run. ``sweep`` runs every config whose
directory is not current, records the failures and goes on.
"""

from __future__ import annotations

import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch
from tqdm import tqdm

from vgcore import provenance, results
from vgcore.data import check_available, dataset_spec, load_dataset
from vgcore.device import resolve_device
from vgcore.errors import UserError
from vgcore.features import features
from vgcore.metrics.convergence import (
    convergence_epoch,
    convergence_step,
    covered_fraction,
    recall_convergence_epoch,
)
from vgcore.metrics.greediness import GREEDINESS_KEYS
from vgcore.train.evaluate import embed, evaluate_splits
from vgcore.train.learner import make_learner, train_step
from vgcore.train.samplers import NoPositivePairsWarning, batch_indices, check_sampler, fixed_subset
from vgcore.train.steplog import Divergence, StepLog


class TrainingDivergedError(UserError, RuntimeError):
    """The loss became NaN or infinite, or the embeddings left the unit sphere; the message names
    the step and the last finite values."""


@dataclass
class RunResult:
    path: Path
    summary: dict
    steps: pd.DataFrame
    epochs: pd.DataFrame


@dataclass
class SweepResult:
    """The run directories of a sweep, in the order of its configs, and the runs that failed."""

    paths: list[Path]
    failures: dict[Path, str] = field(default_factory=dict)


def load_features(config, split: str, data_root=None, cache_dir=None, progress: bool = True):
    """The frozen features ``(X, y)`` of one split of the config's dataset (cached)."""
    return features(config.backbone, config.dataset, split, data_root, cache_dir, progress=progress,
                    backbone_options=config.backbone_options, dataset_options=config.dataset_options)


def load_coarse_labels(config, split: str, data_root=None) -> torch.Tensor | None:
    """Superclass labels of one split, aligned with its features; None for a dataset without them."""
    if not dataset_spec(config.dataset).coarse:
        return None
    return load_dataset(config.dataset, data_root, split, **config.dataset_options).coarse_labels


def run(config, out_dir, *, data_root=None, cache_dir=None, progress: bool = True, skip_current: bool = False,
        lock_timeout: float | None = None) -> RunResult:
    """Train one head with one loss; write the run directory `out_dir` (see `vgcore.results`); return it.

    Nothing is written before the data, the features, the learner (optimiser settings), the sampler
    (batch size against the data) and an evaluation of the untrained head have all succeeded. The
    run is then trained under `out_dir`'s lock (another writer is waited for, or after
    `lock_timeout` seconds named in a LockBusyError) in a staging folder that replaces `out_dir`
    only when complete. ``skip_current=True``: a run already current at `out_dir` (checked under the
    lock) is loaded instead of retrained.
    """
    t_start = time.perf_counter()
    out_dir = Path(out_dir)
    check_available(config.dataset, data_root, download=config.dataset_options.get("download", True))
    device = resolve_device(config.device)
    x_train, y_train, c_train = fixed_subset(*load_features(config, "train", data_root, cache_dir, progress),
                                             config.train_size, load_coarse_labels(config, "train", data_root))
    x_eval, y_eval, c_eval = fixed_subset(*load_features(config, config.eval_split, data_root, cache_dir, progress),
                                          config.eval_size, load_coarse_labels(config, config.eval_split, data_root))
    x_train, y_train, x_eval, y_eval = (t.to(device) for t in (x_train, y_train, x_eval, y_eval))
    for split, x in (("train", x_train), (config.eval_split, x_eval)):
        if not torch.isfinite(x).all():
            raise ValueError(f"the {config.backbone} features of {config.dataset}/{split} contain NaN or inf; "
                             f"delete the feature cache and recompute them")
    learner = make_learner(config, x_train.shape[1], int(y_train.max()) + 1, device)  # checks the optimiser's settings
    check_sampler(y_train, config)

    generator = torch.Generator(device=device).manual_seed(config.seed)
    subset = torch.randperm(y_train.numel(), generator=generator, device=device)[: config.eval_train_size]
    splits = {config.eval_split: (x_eval, y_eval, c_eval),
              "train_subset": (x_train[subset], y_train[subset], None if c_train is None else c_train[subset.cpu()])}
    try:  # epoch 0, the untrained head: an eval split too small to evaluate fails here, before any write
        epoch_rows = _epoch_rows(0, float("nan"), evaluate_splits(learner.head, splits))
    except ValueError as err:
        raise ValueError(f"cannot evaluate {config.dataset}/{config.eval_split} (eval_size={config.eval_size}, "
                         f"eval_train_size={config.eval_train_size}): {err}") from None

    with results.run_lock(out_dir, timeout=lock_timeout, log=lambda m: print(m, file=sys.stderr, flush=True)):
        if skip_current and results.is_current(out_dir, config.config_hash()):
            return load_result(out_dir)
        staging = results.start_run(out_dir, config)
        log = StepLog(config.sync_every)
        epoch = 0
        try:
            bar = tqdm(range(1, config.epochs + 1), desc=f"{config.dataset}/{config.loss}/seed{config.seed}",
                       disable=not progress, leave=False)
            t_train = 0.0
            for epoch in bar:
                t0 = time.perf_counter()
                for idx in batch_indices(y_train, config, generator):
                    stats = train_step([learner], x_train[idx], y_train[idx], diagnostics=config.diagnostics,
                                       grad_threshold=config.grad_threshold)
                    log.append(epoch, stats[0])
                log.flush()
                t_train += time.perf_counter() - t0
                train_loss = log.epoch_mean("train_loss", epoch)
                if epoch == 1 or epoch % config.eval_every == 0 or epoch == config.epochs:
                    metrics = evaluate_splits(learner.head, splits)
                    epoch_rows += _epoch_rows(epoch, train_loss, metrics)
                    bar.set_postfix(loss=f"{train_loss:.4f}", r1=f"{metrics[config.eval_split]['recall@1']:.3f}")

            steps_df, epochs_df = log.frame(), pd.DataFrame(epoch_rows)
            results.write_tables(staging, steps_df, epochs_df)
            z_final = embed(learner.head, x_eval)
            results.write_embeddings(staging, z_final.cpu().numpy(), y_eval.cpu().numpy(),
                                     None if c_eval is None else c_eval.numpy())
            summary = _summary(config, steps_df, epochs_df, time.perf_counter() - t_start, t_train)
        except Divergence as bad:
            _fail(staging, out_dir, config, log, epoch_rows, bad)
        except Exception as err:  # recorded beside the run, then raised as it is
            where = results.keep_failed(staging, out_dir, {
                "error": f"{type(err).__name__}: {err}", "epoch": epoch, "steps_done": log.n_steps})
            err.add_note(f"{config.dataset}/{config.loss}/seed{config.seed} failed in epoch {epoch}; "
                         f"partial logs and failure.json are in {where}")
            raise
        path = results.finish_run(staging, out_dir, summary)
    if summary["n_steps"] and summary["batches_without_positives"] == summary["n_steps"]:
        warnings.warn(NoPositivePairsWarning(
            f"{path}: no batch held a positive pair, so the {config.loss} head barely trained (if at all); "
            "raise batch_size or samples_per_class"), stacklevel=2)
    return RunResult(path, summary, steps_df, epochs_df)


def load_result(path) -> RunResult:
    """A complete run directory as a RunResult (files checked against its summary)."""
    record = results.load_run(path)
    return RunResult(Path(path), record["summary"], record["steps"], record["epochs"])


def sweep(configs: Sequence, root, *, tag: str | None = None, data_root=None, cache_dir=None,
          progress: bool = True) -> SweepResult:
    """Run every config whose run directory (:func:`vgcore.results.run_dir`) is not current.

    Each config's variant is checked first (a tag reused with other settings stops the sweep before
    any training). A run that fails (diverges, or anything else) is recorded in its directory and
    in the result's `failures`, and the sweep goes on; KeyboardInterrupt stops it.
    """
    paths = [results.run_dir(root, config, tag) for config in configs]
    for config in configs:
        results.check_variant(root, config, tag)
    out = SweepResult(paths)
    for config, path in zip(tqdm(configs, desc="sweep", disable=not progress), paths, strict=True):
        if results.is_current(path, config.config_hash()):
            continue
        try:
            run(config, path, data_root=data_root, cache_dir=cache_dir, progress=progress, skip_current=True)
        except Exception as err:
            out.failures[path] = f"{type(err).__name__}: {err}"
    return out


def _epoch_rows(epoch: int, train_loss: float, metrics: dict[str, dict[str, float]]) -> list[dict]:
    return [{"epoch": epoch, "split": split, "train_loss": train_loss, **values} for split, values in metrics.items()]


def _fail(staging, out_dir, config, log: StepLog, epoch_rows: list[dict], bad: Divergence):
    """Keep the partial logs and failure.json (no summary.json: the run stays incomplete), then raise."""
    steps_df = log.frame()
    results.write_tables(staging, steps_df, pd.DataFrame(epoch_rows))
    last = steps_df.iloc[-1].to_dict() if len(steps_df) else {}
    last_txt = ", ".join(f"{k}={last[k]:.6g}" for k in ("train_loss", "grad_norm") if k in last) or "none (first step)"
    head = (f"{config.loss!r} on {config.dataset!r} (seed {config.seed}) diverged at step {bad.step} "
            f"(epoch {bad.epoch}): {bad.what}; last finite values: {last_txt}.")
    where = results.keep_failed(staging, out_dir, {"error": head, "step": bad.step, "epoch": bad.epoch,
                                                   "what": bad.what, "last": last})
    raise TrainingDivergedError(f"{head} The partial logs are in {where}. Try a lower lr (now {config.lr}) "
                                "or check the features for NaN.") from None


def _summary(config, steps: pd.DataFrame, epochs: pd.DataFrame, wall: float, t_train: float) -> dict:
    test = epochs[epochs["split"] == config.eval_split].sort_values("epoch")
    probe = epochs[epochs["split"] == "train_subset"].set_index("epoch")["intra_var"]
    loss_by_epoch = steps.groupby("epoch")["train_loss"].mean()
    final = test.iloc[-1].drop(["epoch", "split"]).to_dict()
    greedy = steps[[*GREEDINESS_KEYS]].mean().to_dict() if len(steps) else {}
    return {
        "status": "complete",
        "config": config.to_dict(),
        "config_hash": config.config_hash(),
        "overrides": _overrides(config),
        "schema_version": results.SCHEMA_VERSION,
        "final": final,
        "convergence": {
            "loss_convergence_epoch": int(loss_by_epoch.index[convergence_epoch(loss_by_epoch.to_numpy())]),
            "recall_convergence_epoch": int(test["epoch"].iloc[recall_convergence_epoch(test["recall@1"])]),
            "loss_convergence_step": int(steps["step"].iloc[convergence_step(steps["train_loss"].to_numpy())]),
            "compaction_epoch1": covered_fraction(probe.loc[0], probe.loc[1], probe.iloc[-1]),
        },
        "untrained": {"untrained_recall@1": float(test.iloc[0]["recall@1"])},
        "greediness_mean": {f"{k}_mean": v for k, v in greedy.items()},
        "batches_without_positives": int((~steps["has_positives"]).sum()),
        "n_steps": len(steps),
        "wall_time_s": wall,
        "steps_per_s": len(steps) / t_train if t_train > 0 else float("nan"),
        **provenance.record(),  # "versions" of every package that can change a number, "git" commit and dirty flag
    }


def _overrides(config) -> dict | None:
    """How the config differs from its profile's (None when its dataset is not in the profile)."""
    try:
        return results.overrides_of(config)
    except ValueError:
        return None
