"""The equal tuning of the fair comparison, run: every trial of every loss, scored and picked.

The rules are :mod:`vgcore.tuning`'s (PROTOCOL.md, Fair comparison, "Equal tuning"). For each dataset
and tuning seed, every trial of every loss (:func:`vgcore.tuning.trials`: the same Sobol points for
each loss) trains in one fused group on one batch stream, to its own stop (``patience``); a trial's
score is its best validation MAP@R (``summary["stopping"]``). :func:`picks` chooses each loss's
setting with :func:`vgcore.tuning.pick`; :func:`write_tuned` records it where the profile reads it
(:meth:`vgcore.config.Profile.tuned_settings`).

Trial runs live apart from a profile's own runs, under ``<root>/<profile>-tuning/<dataset>/<loss>/
trial<k>/seed<s>``, so that :func:`vgcore.results.collect` never mixes them in; an interrupted tuning
resumes without retraining a finished trial, and a trial the profile has changed since is retrained
(the old one kept beside it as ``seed<s>.stale-<hash>``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from vgcore import config as config_module
from vgcore import pool, results, tuning
from vgcore.config import Profile, RunConfig
from vgcore.device import resolve_device
from vgcore.io import atomic_write_json
from vgcore.train.loop import SweepResult, TrainingDivergedError, run_group, sweep

SCORE_COLUMNS = ("dataset", "loss", "trial", "seed", "lr", "param", "value", "map@r", "stopped_by", "stop_epoch")


def trial_configs(profile: Profile, dataset: str, loss: str, seed: int, **overrides) -> list[RunConfig]:
    """One config per trial of `loss` (:func:`vgcore.tuning.trials`), the profile's cell otherwise
    (with `overrides`: a user's file and what its classes decide, :func:`vgcore.your_features.cell`),
    evaluated on its validation split only (``eval_split="validation"``: the test split is never
    read, no k-means runs), without GREEDINESS diagnostics, probe readings or the log-spaced progress
    evaluations: a trial is only scored (none of them changes a number of the training,
    ``tests/test_train.py``)."""
    return [profile.config(dataset, loss, seed, **overrides, lr=t["lr"], loss_params=t["loss_params"], probes=False,
                           eval_split="validation", diagnostics=False, progress_evals=False)
            for t in tuning.trials(loss)]


def trial_dir(root, config: RunConfig, trial: int) -> Path:
    """``<root>/<profile>-tuning/<dataset>/<loss>/trial<k>/seed<s>``; the dataset folder of a user's
    file is ``<dataset>-<its digest>``, so that the trials of two files never displace each other."""
    sha = config.dataset_options.get("sha256")
    folder = config.dataset if sha is None else f"{config.dataset}-{sha}"
    return Path(root) / f"{config.profile}-tuning" / folder / config.loss / f"trial{trial}" / f"seed{config.seed}"


def tune(profile: Profile, root, *, datasets: Sequence[str] | None = None, losses: Sequence[str] | None = None,
         seeds: Sequence[int] = tuning.TUNING_SEEDS, data_root=None, cache_dir=None,
         progress: bool = True, overrides: dict | None = None, jobs: int = 1,
         threads: int = tuning.TUNING_THREADS) -> pd.DataFrame:
    """Train every trial not yet current, fused per dataset x tuning seed; return :func:`scores`.
    ``overrides`` apply to every trial (a user's file: :func:`vgcore.your_features.cell`).

    ``jobs`` > 1 (on the CPU): each group's trials are cut into ``jobs`` chunks (:func:`vgcore.pool.split`)
    trained in ``jobs`` worker processes; each trial trains at ``threads`` CPU threads wherever it runs,
    so its numbers do not depend on ``jobs`` or on the machine's cores (:data:`vgcore.tuning.TUNING_THREADS`).

    Every config must stop on its validation split (``patience`` > 0): a trial is scored at its
    best checkpoint. A trial that diverges scores NaN (it loses to every scored trial)."""
    datasets = list(datasets or profile.datasets)
    losses = list(losses or profile.losses)
    overrides = overrides or {}
    groups = []
    for dataset in datasets:
        if not profile.config(dataset, losses[0], seeds[0], **overrides).patience:
            raise ValueError(f"profile {profile.name!r} trains {dataset} for a fixed number of epochs (patience 0): a "
                             "trial is scored at its best validation checkpoint, so tuning needs patience > 0 and a "
                             "validation split")
        for seed in seeds:
            groups.append([(c, k) for loss in losses
                           for k, c in enumerate(trial_configs(profile, dataset, loss, seed, **overrides))])
    if any(resolve_device(c.device).type == "cuda" for configs in groups for c, _ in configs):
        jobs = 1  # on a GPU the fused group's one CUDA graph is the parallelism
    options = {"data_root": data_root, "cache_dir": cache_dir, "progress": progress}
    tasks = []
    for configs in groups:
        todo = [(c, k) for c, k in configs if not results.is_current(trial_dir(root, c, k), c.config_hash())]
        for c, k in todo:
            _set_aside(trial_dir(root, c, k))
        tasks += [([c for c, _ in chunk], [trial_dir(root, c, k) for c, k in chunk], options)
                  for chunk in pool.split(todo, jobs) if chunk]
    pool.run_tasks(train_trials, tasks, jobs, threads=threads, desc="tuning", progress=progress)
    return scores(profile, root, datasets=datasets, losses=losses, seeds=seeds, overrides=overrides)


def train_trials(configs: Sequence[RunConfig], out_dirs: Sequence[Path], options: dict) -> None:
    """:func:`run_group` of trials; a trial that diverges is left without a summary (it scores NaN)."""
    try:
        run_group(configs, out_dirs, skip_current=True, **options)
    except TrainingDivergedError:
        pass  # the diverged trials have no summary; the others were written


def _set_aside(path: Path) -> None:
    """A complete trial of another config at `path` (the profile changed since it ran) is renamed to
    ``<path>.stale-<its hash>`` beside it, so that its trial is retrained there and nothing is lost."""
    summary = results.read_summary(path) if path.is_dir() else None
    if summary is not None:
        path.rename(path.with_name(f"{path.name}.stale-{summary['config_hash'][:12]}"))


def scores(profile: Profile, root, *, datasets: Sequence[str] | None = None, losses: Sequence[str] | None = None,
           seeds: Sequence[int] = tuning.TUNING_SEEDS, overrides: dict | None = None) -> pd.DataFrame:
    """One row per dataset x loss x trial x tuning seed (:data:`SCORE_COLUMNS`): the trial's setting
    and its best validation MAP@R; NaN where the trial has no current run (diverged or not trained)."""
    rows = []
    for dataset in datasets or profile.datasets:
        for loss in losses or profile.losses:
            param = tuning.SEARCH_SPACE[loss].param
            for seed in seeds:
                for k, config in enumerate(trial_configs(profile, dataset, loss, seed, **(overrides or {}))):
                    path = trial_dir(root, config, k)
                    stop = {}
                    if results.is_current(path, config.config_hash()):
                        stop = results.read_summary(path).get("stopping", {})
                    rows.append({"dataset": dataset, "loss": loss, "trial": k, "seed": seed, "lr": config.lr,
                                 "param": param, "value": config.loss_params[param],
                                 "map@r": stop.get("best_val_map@r", float("nan")),
                                 "stopped_by": stop.get("stopped_by"), "stop_epoch": stop.get("stop_epoch")})
    return pd.DataFrame(rows, columns=list(SCORE_COLUMNS))


def picks(frame: pd.DataFrame) -> dict[str, dict[str, dict]]:
    """``{dataset: {loss: {"lr", "loss_params", "trial", "val_map@r", "unconverged"}}}``: each loss's
    winning trial (:func:`vgcore.tuning.pick`), its mean validation MAP@R over the tuning seeds and
    how many of its tuning runs reached the budget."""
    out: dict[str, dict[str, dict]] = {}
    for (dataset, loss), group in frame.groupby(["dataset", "loss"], sort=False):
        grid = tuning.trials(loss)
        best = tuning.pick(group[["trial", "map@r"]], grid)
        chosen = group[group["trial"] == best]
        out.setdefault(dataset, {})[loss] = {
            "lr": grid[best]["lr"], "loss_params": grid[best]["loss_params"], "trial": best,
            "val_map@r": float(chosen["map@r"].mean()), "unconverged": int((chosen["stopped_by"] == "budget").sum())}
    return out


def write_tuned(profile: Profile, chosen: dict[str, dict[str, dict]], path=None) -> Path:
    """Merge `chosen` (:func:`picks`) into the profile's tuned settings file (atomically); its path."""
    path = Path(path) if path is not None else config_module.tuned_path(profile.name)
    current = json.loads(path.read_text()) if path.exists() else {}
    for dataset, losses in chosen.items():
        current.setdefault(dataset, {}).update(losses)
    atomic_write_json(path, current)
    return path


def sensitivity_configs(profile: Profile, *, datasets: Sequence[str] | None = None,
                        losses: Sequence[str] | None = None,
                        seeds: Sequence[int] = tuning.SENSITIVITY_SEEDS) -> list[tuple[str, RunConfig]]:
    """``(tag, config)`` of every run of the sensitivity build (PROTOCOL.md, Fair comparison,
    "Sensitivity"): each loss's key constant at :func:`vgcore.tuning.sensitivity_values`, everything
    else the profile's (its tuned learning rate), on ``seeds``; the tag names the variant folder
    (:func:`vgcore.tuning.sensitivity_tag`)."""
    out = []
    for dataset in datasets or profile.datasets:
        for loss in losses or profile.losses:
            param = tuning.SEARCH_SPACE[loss].param
            for k, value in enumerate(tuning.sensitivity_values(loss)):
                for seed in seeds:
                    config = profile.config(dataset, loss, seed, loss_params={param: value})
                    out.append((tuning.sensitivity_tag(loss, k), config))
    return out


def sensitivity(profile: Profile, root, *, datasets: Sequence[str] | None = None, losses: Sequence[str] | None = None,
                seeds: Sequence[int] = tuning.SENSITIVITY_SEEDS, data_root=None, cache_dir=None,
                progress: bool = True) -> SweepResult:
    """Train every sensitivity run not yet current (each loss's values of a dataset x seed fused), as
    variants of the profile (``<root>/<profile>/variants/<tag>/``); a value equal to the tuned one is
    the profile's own run and is not trained twice."""
    pairs = sensitivity_configs(profile, datasets=datasets, losses=losses, seeds=seeds)
    return sweep([c for _, c in pairs], root, tag=[t for t, _ in pairs], data_root=data_root, cache_dir=cache_dir,
                 progress=progress)
