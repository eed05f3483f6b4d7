"""Training runs from start to finish: features -> heads -> per-step log -> per-epoch evaluation -> files.

One loop, :func:`fit`, trains a *group* of runs that share a batch stream: the same data, seed,
sampler and schedule, each run with its own head, loss and optimiser (the paired design: every loss
sees the identical batches). Each learner's arithmetic is its own, so a run trained in a group
equals the same run trained alone (bit for bit on the CPU; ``tests/test_fused.py``); fusing only
saves the per-run cost of a process, the feature loading and, on a GPU, kernel launches (the group's
step is captured in one CUDA graph, :mod:`vgcore.train.graph`).

Every setting is checked and each untrained head evaluated before anything is written; each run is
then built in a staging folder under its run's lock and swapped in only when complete, and a run
that fails leaves its partial logs and ``failure.json`` without touching a complete run.

- :func:`fit`: the loop, on features given as tensors; writes each run's directory (:mod:`vgcore.results`).
- :func:`run_group`: the features (and superclass labels) of the group's dataset, then :func:`fit`.
- :func:`run`: one config, i.e. :func:`run_group` of one.
- :func:`sweep`: every config whose run directory is not current, fused per :func:`vgcore.config.group_key`;
  failures are recorded and the sweep goes on.
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch
from torch import Tensor
from tqdm import tqdm

from vgcore import provenance, results
from vgcore.config import check_group, group_key
from vgcore.data import check_available, dataset_spec, load_dataset
from vgcore.device import resolve_device
from vgcore.errors import UserError
from vgcore.features import features
from vgcore.metrics.convergence import (
    convergence_epoch,
    convergence_step,
    covered_fraction,
    progress_grid,
    progress_step,
    recall_convergence_epoch,
)
from vgcore.metrics.greediness import GREEDINESS_KEYS
from vgcore.train.evaluate import embed, evaluate_splits, progress_metrics, stopping_metrics
from vgcore.train.graph import EagerStep, GraphStep, graph_safe
from vgcore.train.learner import make_learner
from vgcore.train.probes import PROBE_FRACTIONS, probe_batches, probe_epochs, probe_reading
from vgcore.train.samplers import (
    NoPositivePairsWarning,
    batch_indices,
    check_sampler,
    fixed_subset,
    split_off,
)
from vgcore.train.steplog import Divergence, StepLog
from vgcore.train.stopping import EarlyStopping

VALIDATION = "validation"
"""The epochs.csv split of the per-epoch stopping reading (MAP@R and Recall@1, ``patience`` > 0)."""


class TrainingDivergedError(UserError, RuntimeError):
    """The loss became NaN or infinite, or the embeddings left the unit sphere; the message names
    the step and the last finite values. `failures` maps each diverged run's directory to its message."""

    def __init__(self, message: str, failures: dict[Path, str] | None = None):
        super().__init__(message)
        self.failures = failures or {}


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


def load_coarse_labels(config, split: str, data_root=None) -> Tensor | None:
    """Superclass labels of one split, aligned with its features; None for a dataset without them."""
    if not dataset_spec(config.dataset).coarse:
        return None
    return load_dataset(config.dataset, data_root, split, **config.dataset_options).coarse_labels


def recall_postfix(losses: Sequence[str], recalls: Sequence[float]) -> str:
    """The progress bar's note: each loss's Recall@1 on the evaluation split, named when several train."""
    if len(losses) == 1:
        return f"R@1 {recalls[0]:.3f}"
    return "R@1 " + " · ".join(f"{loss} {r:.3f}" for loss, r in zip(losses, recalls, strict=True))


def run(config, out_dir, *, data_root=None, cache_dir=None, progress: bool = True, skip_current: bool = False,
        lock_timeout: float | None = None, cuda_graph: bool | None = None) -> RunResult:
    """Train one head with one loss; write the run directory `out_dir` (see `vgcore.results`); return it.

    ``skip_current=True``: a run already current at `out_dir` (checked under its lock) is loaded
    instead of retrained. The rest as in :func:`fit`.
    """
    return run_group([config], [out_dir], data_root=data_root, cache_dir=cache_dir, progress=progress,
                     skip_current=skip_current, lock_timeout=lock_timeout, cuda_graph=cuda_graph)[0]


def run_group(configs: Sequence, out_dirs: Sequence, *, data_root=None, cache_dir=None, progress: bool = True,
              skip_current: bool = False, lock_timeout: float | None = None,
              cuda_graph: bool | None = None) -> list[RunResult]:
    """Train several runs that share a batch stream in one pass (see :func:`fit`); load their
    features and superclass labels first."""
    configs, out_dirs = _check_runs(configs, out_dirs)
    config = configs[0]
    check_available(config.dataset, data_root, download=config.dataset_options.get("download", True))
    train_data = (*load_features(config, "train", data_root, cache_dir, progress),
                  load_coarse_labels(config, "train", data_root))
    eval_data = None if config.eval_split == "validation" else (  # the held-out rows: the test split is not read
        *load_features(config, config.eval_split, data_root, cache_dir, progress),
        load_coarse_labels(config, config.eval_split, data_root))
    return fit(configs, out_dirs, train_data, eval_data, progress=progress, skip_current=skip_current,
               lock_timeout=lock_timeout, cuda_graph=cuda_graph)


def fit(configs: Sequence, out_dirs: Sequence, train_data: tuple, eval_data: tuple, *, progress: bool = True,
        skip_current: bool = False, lock_timeout: float | None = None,
        cuda_graph: bool | None = None) -> list[RunResult]:
    """The training loop of a group of runs on the given features; writes and returns each run.

    ``configs`` may differ only in :data:`vgcore.config.PER_LEARNER_KEYS` (loss, its parameters,
    lr, head); ``train_data`` and ``eval_data`` are the full ``(X, y)`` or ``(X, y, coarse)`` of the
    train and eval split (the config's ``val_size`` validation rows are held out of the train split,
    then its ``train_size``/``eval_size`` subsets are drawn here).

    Nothing is written before the features, the learners (optimiser settings), the sampler (batch
    size against the data) and an evaluation of each untrained head have all succeeded. The runs
    are then trained under their directories' locks (another writer is waited for, or after
    `lock_timeout` seconds named in a LockBusyError), each in a staging folder that replaces its
    directory only when complete; ``skip_current``: a run already current (checked under its lock)
    is loaded instead. ``cuda_graph``: None = on a CUDA device when every loss can be captured,
    True = required, False = eager. If a run diverges, it stops with its failure record and the
    others go on; TrainingDivergedError is raised once the others are written.
    """
    t_start = time.perf_counter()
    configs, out_dirs = _check_runs(configs, out_dirs)
    config = configs[0]  # what the group shares
    device = resolve_device(config.device)
    x_all, y_all, c_all = _triple(train_data)
    (x_train, y_train, c_train), held = split_off(x_all, y_all, config.val_size, c_all, data_seed=config.data_seed,
                                                  by_class=config.val_split == "classes")
    x_train, y_train, c_train = fixed_subset(x_train, y_train, config.train_size, c_train, data_seed=config.data_seed)
    x_eval, y_eval, c_eval = held if config.eval_split == "validation" else _triple(eval_data)
    x_eval, y_eval, c_eval = fixed_subset(x_eval, y_eval, config.eval_size, c_eval)
    x_train, y_train, x_eval, y_eval = (t.to(device) for t in (x_train, y_train, x_eval, y_eval))
    for split, x in (("train", x_train), (config.eval_split, x_eval)):
        if not torch.isfinite(x).all():
            raise ValueError(f"the {config.backbone} features of {config.dataset}/{split} contain NaN or inf; "
                             f"delete the feature cache and recompute them")
    num_classes = int(y_train.max()) + 1
    learners = [make_learner(c, x_train.shape[1], num_classes, device) for c in configs]  # checks the optimisers
    check_sampler(y_train, config)
    use_graph = _use_graph(cuda_graph, device, learners)

    generator = torch.Generator(device=device).manual_seed(config.seed)
    subset = torch.randperm(y_train.numel(), generator=generator, device=device)[: config.eval_train_size]
    splits = {config.eval_split: (x_eval, y_eval, c_eval),
              "train_subset": (x_train[subset], y_train[subset], None if c_train is None else c_train[subset.cpu()])}
    progress_splits = _progress_splits(config, splits, held, device)
    stop_split = ({VALIDATION: (held[0].to(device), held[1].to(device), held[2])} if config.patience else None)
    probes = ({name: (x_train[idx], y_train[idx]) for name, idx in probe_batches(y_train, config.batch_size).items()}
              if config.probes else None)
    t_eval = time.perf_counter()
    try:  # step 0, the untrained heads: an eval split too small to evaluate fails here, before any write
        epoch_rows = [_epoch_rows(0, 0, float("nan"), m) + _epoch_rows(0, 0, float("nan"), p)
                      for m, p in zip(_evaluate(learners, range(len(learners)), splits, config.full_eval_at(0),
                                                nmi=config.eval_split != "validation"),
                                      _evaluate(learners, range(len(learners)), progress_splits, False, progress_metrics), strict=True)]
    except ValueError as err:
        raise ValueError(f"cannot evaluate {config.dataset}/{config.eval_split} (eval_size={config.eval_size}, "
                         f"eval_train_size={config.eval_train_size}): {err}") from None
    t_eval = time.perf_counter() - t_eval

    with ExitStack() as locks:
        for i in sorted(range(len(out_dirs)), key=lambda i: os.path.abspath(out_dirs[i])):  # one order: no deadlock
            locks.enter_context(results.run_lock(out_dirs[i], timeout=lock_timeout,
                                                 log=lambda m: print(m, file=sys.stderr, flush=True)))
        done = {i: load_result(out_dirs[i]) for i in range(len(configs))
                if skip_current and results.is_current(out_dirs[i], configs[i].config_hash())}
        training = [i for i in range(len(configs)) if i not in done]
        if training:
            try:
                trained = _train(configs, out_dirs, learners, training, x_train, y_train, x_eval, y_eval, c_eval,
                                 splits, progress_splits, stop_split, probes, epoch_rows, generator, use_graph,
                                 progress, t_start, t_eval)
            except KeyboardInterrupt:  # stopped by the user: clean up now what a killed writer leaves (locks held)
                for i in training:
                    results.recover(out_dirs[i])
                raise
            done.update(trained)
    out = [done[i] for i in sorted(done)]
    for res in out:
        s = res.summary
        if s["n_steps"] and s["batches_without_positives"] == s["n_steps"]:
            warnings.warn(NoPositivePairsWarning(
                f"{res.path}: no batch held a positive pair, so the {s['config']['loss']} head barely trained "
                "(if at all); raise batch_size or samples_per_class"), stacklevel=2)
    return out


def _train(configs, out_dirs, learners, training, x_train, y_train, x_eval, y_eval, c_eval, splits, progress_splits,
           stop_split, probes, epoch_rows, generator, use_graph, progress, t_start, t_eval) -> dict[int, RunResult]:
    """Train the learners `training` (indices into the group) into staging folders; return their results.

    Besides each evaluated epoch's `splits`, the `progress_splits` are evaluated at the steps of
    :func:`progress_grid` (log-spaced), mid-epoch where they fall. With early stopping
    (``patience``; `stop_split` the validation split) every head is read on `stop_split` after every
    epoch (:mod:`vgcore.train.stopping`); a head that stops is written then, as its best epoch's
    head, and leaves the batch stream; the others go on. With ``probes`` (``{name: (x, y)}``, the
    fixed probe batches of :mod:`vgcore.train.probes`) every head is read on each probe batch before
    training and after every epoch, without a step; a run keeps the readings at
    :data:`~vgcore.train.probes.PROBE_FRACTIONS` of its own training (summary ``"probes"``)."""
    config = configs[0]
    n_steps = config.epochs * (y_train.numel() // config.batch_size)
    grid = set(progress_grid(n_steps, config.progress_ratio, config.early_step)) - {0} if progress_splits else set()
    kwargs = {"diagnostics": config.diagnostics, "grad_threshold": config.grad_threshold}
    chosen = [learners[i] for i in training]
    step = (GraphStep(chosen, x_train, y_train, batch_size=config.batch_size, **kwargs) if use_graph
            else EagerStep(chosen, x_train, y_train, **kwargs))  # step indices j -> group index training[j]
    staging = {i: results.start_run(out_dirs[i], configs[i]) for i in training}
    logs = {i: StepLog(config.sync_every) for i in training}
    failures: dict[Path, str] = {}

    def fail(j: int, bad: Divergence) -> None:
        i = training[j]
        where, message = _fail(staging[i], out_dirs[i], configs[i], logs[i], epoch_rows[i], bad)
        failures[where] = message
        step.drop(j)

    def flush_all() -> None:
        """Copy every active learner's pending steps to the host; a learner that diverged stops there."""
        for j in list(step.active):
            try:
                logs[training[j]].flush()
            except Divergence as bad:
                fail(j, bad)

    nmi = config.eval_split != "validation"  # a tuning trial runs no k-means
    stoppers = {i: EarlyStopping(config.patience, config.min_delta) for i in training} if stop_split else {}
    out: dict[int, RunResult] = {}

    def read_validation(epoch: int) -> list[int]:
        """Each active head's stopping score after `epoch` (logged as the ``validation`` split);
        the step indices j of the heads that stop now."""
        active = [training[j] for j in step.active]
        stop = []
        for j, i, m in zip(list(step.active), active, _evaluate(learners, active, stop_split, False, stopping_metrics),
                           strict=True):
            epoch_rows[i] += _epoch_rows(epoch, n_done, float("nan"), m)
            if stoppers[i].update(epoch, m[VALIDATION]["map@r"], learners[i].head):
                stop.append(j)
        return stop

    readings: dict[int, dict[int, dict]] = {i: {} for i in training}

    def read_probes(epoch: int) -> None:
        for i in (training[j] for j in step.active):
            readings[i][epoch] = {name: probe_reading(learners[i], x, y, grad_threshold=config.grad_threshold)
                                  for name, (x, y) in probes.items()}

    def probe_record(i: int, epoch: int) -> list[dict]:
        return [{"batch": name, "fraction": f, "epoch": e, **readings[i][e][name]}
                for f, e in zip(PROBE_FRACTIONS, probe_epochs(epoch), strict=True) for name in probes]

    def finish(j: int, epoch: int, stopped_by: str | None) -> None:
        """Write learner j's run (its best head when it stops early) and take it off the batch stream."""
        i = training[j]
        final = None
        stopping = None
        if i in stoppers:
            stoppers[i].restore(learners[i].head)
            final = _evaluate(learners, [i], splits, True, nmi=nmi)[0][config.eval_split]
            stopping = stoppers[i].record(epoch, stopped_by)
        steps_df, epochs_df = logs[i].frame(), pd.DataFrame(epoch_rows[i])
        results.write_tables(staging[i], steps_df, epochs_df)
        results.write_embeddings(staging[i], embed(learners[i].head, x_eval).cpu().numpy(), y_eval.cpu().numpy(),
                                 None if c_eval is None else c_eval.numpy())
        timing = {"wall": time.perf_counter() - t_start, "train": t_train, "eval": t_eval, "size": len(training),
                  "graph": use_graph}
        summary = _summary(configs[i], steps_df, epochs_df, timing, final=final, stopping=stopping,
                           probes=probe_record(i, epoch) if probes else None)
        path = results.finish_run(staging[i], out_dirs[i], summary)
        step.drop(j)
        out[i] = RunResult(path, summary, steps_df, epochs_df)

    epoch, t_train, n_done = 0, 0.0, 0
    if stoppers:
        read_validation(0)  # the untrained head is the first candidate
    if probes:
        read_probes(0)
    what = configs[training[0]].loss if len(training) == 1 else f"{len(training)} losses"
    try:
        bar = tqdm(range(1, config.epochs + 1), desc=f"{config.dataset}/{what}/seed{config.seed}",
                   disable=not progress, leave=False)
        for epoch in bar:
            t0 = time.perf_counter()
            for idx in batch_indices(y_train, config, generator):
                for j, stats in step(idx).items():
                    try:
                        logs[training[j]].append(epoch, stats)
                    except Divergence as bad:
                        fail(j, bad)
                n_done += 1
                if n_done in grid:
                    t1 = time.perf_counter()
                    flush_all()  # a head that diverged stops here, before it is evaluated
                    active = [training[j] for j in step.active]
                    for i, m in zip(active, _evaluate(learners, active, progress_splits, False, progress_metrics), strict=True):
                        epoch_rows[i] += _epoch_rows(epoch, n_done, float("nan"), m)
                    t0 += time.perf_counter() - t1  # evaluation time is not training time
                    t_eval += time.perf_counter() - t1
            flush_all()
            t_train += time.perf_counter() - t0
            if not step.active:
                break
            if epoch == 1 or epoch % config.eval_every == 0 or epoch == config.epochs:
                t0 = time.perf_counter()
                active = [training[j] for j in step.active]
                metrics = _evaluate(learners, active, splits, config.full_eval_at(epoch), nmi=nmi)
                t_eval += time.perf_counter() - t0
                for i, m in zip(active, metrics, strict=True):
                    epoch_rows[i] += _epoch_rows(epoch, n_done, logs[i].epoch_mean("train_loss", epoch), m)
                bar.set_postfix_str(recall_postfix([configs[i].loss for i in active],
                                                   [m[config.eval_split]["recall@1"] for m in metrics]))
            if probes:
                t0 = time.perf_counter()
                read_probes(epoch)
                t_eval += time.perf_counter() - t0
            if stoppers:
                t0 = time.perf_counter()
                stopped = read_validation(epoch)
                t_eval += time.perf_counter() - t0
                for j in stopped:
                    finish(j, epoch, "patience")
                if not step.active:
                    break

        for j in list(step.active):
            finish(j, epoch, "budget" if stoppers else None)
    except Exception as err:  # every run still open is recorded beside its directory, then raised as it is
        for j in list(step.active):
            i = training[j]
            where = results.keep_failed(staging[i], out_dirs[i], {
                "error": f"{type(err).__name__}: {err}", "epoch": epoch, "steps_done": logs[i].n_steps})
            err.add_note(f"{configs[i].dataset}/{configs[i].loss}/seed{configs[i].seed} failed in epoch {epoch}; "
                         f"partial logs and failure.json are in {where}")
        raise
    if failures:
        raise TrainingDivergedError("\n".join(failures.values()), failures)
    return out


def load_result(path) -> RunResult:
    """A complete run directory as a RunResult (files checked against its summary)."""
    record = results.load_run(path)
    return RunResult(Path(path), record["summary"], record["steps"], record["epochs"])


def sweep(configs: Sequence, root, *, tag: str | Sequence[str | None] | None = None, data_root=None,
          cache_dir=None, progress: bool = True, cuda_graph: bool | None = None) -> SweepResult:
    """Run every config whose run directory (:func:`vgcore.results.run_dir`) is not current.

    ``tag``: the variant folder's name for every config that differs from its profile, or one tag
    per config (a list as long as ``configs``: e.g. one variant per value of a constant, still fused).

    Each config's variant is checked first (a tag reused with other settings stops the sweep before
    any training). Configs that share a batch stream (:func:`vgcore.config.group_key`: same dataset,
    seed, schedule) train together in one :func:`run_group`, in the order their first config
    appears; the results equal those of the runs trained one by one. A run that fails (diverges, or
    anything else) is recorded in its directory and in the result's `failures` (an error outside
    the loop fails its whole group), and the sweep goes on; KeyboardInterrupt stops it.
    """
    tags = list(tag) if isinstance(tag, list | tuple) else [tag] * len(configs)
    if len(tags) != len(configs):
        raise ValueError(f"give one tag, or one per config: got {len(tags)} tags for {len(configs)} configs")
    paths = [results.run_dir(root, config, t) for config, t in zip(configs, tags, strict=True)]
    for config, t in zip(configs, tags, strict=True):
        results.check_variant(root, config, t)
    out = SweepResult(paths)
    groups: dict[str, list[int]] = {}
    for i, (config, path) in enumerate(zip(configs, paths, strict=True)):
        if not results.is_current(path, config.config_hash()):
            groups.setdefault(group_key(config), []).append(i)
    for members in tqdm(list(groups.values()), desc="sweep", disable=not progress):
        try:
            run_group([configs[i] for i in members], [paths[i] for i in members], data_root=data_root,
                      cache_dir=cache_dir, progress=progress, skip_current=True, cuda_graph=cuda_graph)
        except TrainingDivergedError as err:
            out.failures.update({Path(p): m for p, m in err.failures.items()} or
                                {paths[i]: f"{type(err).__name__}: {err}" for i in members})
        except Exception as err:
            out.failures.update({paths[i]: f"{type(err).__name__}: {err}" for i in members})
    return out


def _triple(data: tuple) -> tuple:
    """``(X, y)`` or ``(X, y, coarse)`` as ``(X, y, coarse or None)``."""
    if len(data) not in (2, 3):
        raise ValueError(f"features must be (X, y) or (X, y, coarse), got a tuple of {len(data)}")
    return (*data, None) if len(data) == 2 else tuple(data)


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


def _evaluate(learners, active, splits, full: bool, metrics=None, nmi: bool = True) -> list[dict[str, dict[str, float]]]:
    """``{split: metrics}`` of each active learner's head (evaluation never touches the batch stream)."""
    return [evaluate_splits(learners[i].head, splits, full=full, nmi=nmi, metrics=metrics) for i in active]


def _epoch_rows(epoch: int, step: int, train_loss: float, metrics: dict[str, dict[str, float]]) -> list[dict]:
    return [{"epoch": epoch, "step": step, "split": split, "train_loss": train_loss, **values}
            for split, values in metrics.items()]


def _progress_splits(config, splits: dict, held: tuple | None, device) -> dict:
    """What is evaluated at the progress steps: the validation split held out of the training split
    (``val_size`` > 0; the eval split otherwise), and the training probe (its intra-class variance at
    ``early_step``); nothing without ``progress_evals`` (a tuning trial: its convergence keys NaN)."""
    if not config.progress_evals:
        return {}
    if held is None:
        first = {results.PROGRESS + config.eval_split: splits[config.eval_split]}
    else:
        x_val, y_val, c_val = held
        first = {results.PROGRESS + "validation": (x_val.to(device), y_val.to(device), c_val)}
    return {**first, results.PROGRESS + "train_subset": splits["train_subset"]}


def _fail(staging, out_dir, config, log: StepLog, epoch_rows: list[dict], bad: Divergence) -> tuple[Path, str]:
    """Keep the partial logs and failure.json (no summary.json: the run stays incomplete); return
    where they are and the message raised once the rest of the group is written."""
    steps_df = log.frame()
    results.write_tables(staging, steps_df, pd.DataFrame(epoch_rows))
    last = steps_df.iloc[-1].to_dict() if len(steps_df) else {}
    last_txt = ", ".join(f"{k}={last[k]:.6g}" for k in ("train_loss", "grad_norm") if k in last) or "none (first step)"
    head = (f"{config.loss!r} on {config.dataset!r} (seed {config.seed}) diverged at step {bad.step} "
            f"(epoch {bad.epoch}): {bad.what}; last finite values: {last_txt}.")
    where = results.keep_failed(staging, out_dir, {"error": head, "step": bad.step, "epoch": bad.epoch,
                                                   "what": bad.what, "last": last})
    return where, (f"{head} The partial logs are in {where}. Try a lower lr (now {config.lr}) "
                   "or check the features for NaN.")


def _summary(config, steps: pd.DataFrame, epochs: pd.DataFrame, timing: dict, *, final: dict | None = None,
             stopping: dict | None = None, probes: list[dict] | None = None) -> dict:
    """The run's summary.json. ``final``: the reported test metrics when they are not the last
    evaluated epoch's (early stopping reports its best head); ``stopping``: its record
    (:meth:`vgcore.train.stopping.EarlyStopping.record`), kept under ``"stopping"``; ``probes``: the
    probe readings kept (``"probes"``: one record per probe batch and fraction)."""
    test = epochs[epochs["split"] == config.eval_split].sort_values("epoch")
    val = epochs[epochs["split"] == results.PROGRESS + ("validation" if config.has_validation else config.eval_split)
                 ].sort_values("step")
    early = epochs[(epochs["split"] == results.PROGRESS + "train_subset") & (epochs["step"] == config.early_step)]
    probe = epochs[epochs["split"] == "train_subset"].set_index("epoch")["intra_var"]
    loss_by_epoch = steps.groupby("epoch")["train_loss"].mean()
    if final is None:
        final = test.iloc[-1].drop(["epoch", "step", "split"]).to_dict()
    greedy = steps[[*GREEDINESS_KEYS]].mean().to_dict() if len(steps) else {}
    return {
        "status": "complete",
        "config": config.to_dict(),
        "config_hash": config.config_hash(),
        "resolved": config.resolved(),  # what the hash covers besides the config (vgcore.identity)
        "overrides": _overrides(config),
        "schema_version": results.SCHEMA_VERSION,
        "final": final,
        "convergence": {
            "loss_convergence_epoch": int(loss_by_epoch.index[convergence_epoch(loss_by_epoch.to_numpy())]),
            "recall_convergence_epoch": int(test["epoch"].iloc[recall_convergence_epoch(test["recall@1"])]),
            "loss_convergence_step": int(steps["step"].iloc[convergence_step(steps["train_loss"].to_numpy())]),
            "compaction_epoch1": covered_fraction(probe.loc[0], probe.loc[1], probe.iloc[-1]),
            "val_convergence_step": progress_step(val["step"].tolist(), val["recall@1"]) if len(val) else float("nan"),
            "early_intra_var": float(early["intra_var"].iloc[0]) if len(early) else float("nan"),
        },
        "untrained": {"untrained_recall@1": float(test.iloc[0]["recall@1"])},
        "greediness_mean": {f"{k}_mean": v for k, v in greedy.items()},
        **({"stopping": stopping} if stopping is not None else {}),
        **({"probes": probes} if probes is not None else {}),
        "batches_without_positives": int((~steps["has_positives"]).sum()),
        "n_steps": len(steps),
        # timings are the group's: a fused group trains `group_size` runs in one pass
        "wall_time_s": timing["wall"],
        "eval_time_s": timing["eval"],
        "steps_per_s": len(steps) / timing["train"] if timing["train"] > 0 else float("nan"),
        "group_size": timing["size"],
        "cuda_graph": timing["graph"],
        **provenance.record(),  # "versions" of every package that can change a number, "git" commit and dirty flag
    }


def _overrides(config) -> dict | None:
    """How the config differs from its profile's (None when its dataset is not in the profile)."""
    try:
        return results.overrides_of(config)
    except ValueError:
        return None
