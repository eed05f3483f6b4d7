"""Training a projection head on frozen features, with per-step GREEDINESS and per-epoch VARIANCE.

The step is: batch -> head -> z (L2-normalised) -> loss(z, y) -> one backward -> greediness read
off that same backward (dL/dz is kept with ``retain_grad``; parameter gradients are read before
the optimiser step) -> optimiser step. Per-step numbers stay on the device and are copied to the
host every ``sync_every`` steps, which is also when a non-finite loss is detected.

A `Learner` is one (head, loss, optimiser) triple; the step takes a list of them so that several
losses can be trained on the identical batch stream (a paired comparison). `run` trains one.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

import vgcore
from vgcore import results
from vgcore.backbones import features
from vgcore.config import RunConfig
from vgcore.data import check_available
from vgcore.diagnostics import (
    GREEDINESS_KEYS,
    convergence_epoch,
    greediness,
    recall_convergence_epoch,
    variance,
)
from vgcore.losses import make_loss
from vgcore.retrieval import retrieval_metrics

STAT_KEYS = ("train_loss", *GREEDINESS_KEYS)
"""What one step records, in order (STEP_COLUMNS less step and epoch)."""


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or infinite; the message names the step and the last finite values."""


class ProjectionHead(nn.Module):
    """Linear(in, out) (or a one-hidden-layer ReLU MLP) followed by L2 normalisation: ||z||_2 = 1."""

    def __init__(self, in_dim: int, out_dim: int, kind: str = "linear", hidden: int = 512):
        super().__init__()
        if kind == "linear":
            self.net = nn.Linear(in_dim, out_dim)
        else:
            self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, out_dim))

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(self.net(x), dim=1)


@dataclass
class Learner:
    """One (head, loss, optimiser) triple trained on the batch stream."""

    head: ProjectionHead
    loss_fn: nn.Module
    optimizer: torch.optim.Optimizer


@dataclass
class RunResult:
    path: Path
    summary: dict
    steps: pd.DataFrame
    epochs: pd.DataFrame


def make_learner(config: RunConfig, in_dim: int, num_classes: int, device: torch.device) -> Learner:
    """Head and loss initialised from ``config.seed``; one Adam over head and loss parameters."""
    torch.manual_seed(config.seed)
    head = ProjectionHead(in_dim, config.embedding_dim, config.head, config.head_hidden).to(device)
    # The loss's per-step input validation is a host sync; training checks the features once instead
    # and catches a non-finite loss every `sync_every` steps.
    loss_fn = make_loss(config.loss, num_classes=num_classes, embedding_dim=config.embedding_dim,
                        **{"check_inputs": False, **config.loss_params}).to(device)
    params = [*head.parameters(), *loss_fn.parameters()]
    optimizer = torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    return Learner(head, loss_fn, optimizer)


def batch_indices(labels: Tensor, config: RunConfig, generator: torch.Generator) -> Iterator[Tensor]:
    """One epoch of index batches of exactly ``batch_size`` (the incomplete last batch is dropped).

    random: a fresh permutation per epoch. pk: batch_size / K classes drawn without replacement,
    K = samples_per_class indices drawn per class with replacement; as many batches as `random` gives.
    """
    n = labels.numel()
    n_batches = n // config.batch_size
    if n_batches == 0:
        raise ValueError(f"batch_size {config.batch_size} exceeds the {n} training samples; lower batch_size")
    if config.sampler == "random":
        perm = torch.randperm(n, generator=generator, device=labels.device)
        yield from perm[: n_batches * config.batch_size].view(n_batches, config.batch_size)
        return
    order = torch.argsort(labels, stable=True)
    counts = torch.bincount(labels)
    starts = torch.cumsum(counts, 0) - counts
    present = torch.nonzero(counts).squeeze(1)
    p = config.batch_size // config.samples_per_class
    if p > present.numel():
        raise ValueError(f"sampler 'pk' needs {p} classes per batch but the data has {present.numel()}; "
                         f"raise samples_per_class or lower batch_size")
    for _ in range(n_batches):
        classes = present[torch.randperm(present.numel(), generator=generator, device=labels.device)[:p]]
        classes = classes.repeat_interleave(config.samples_per_class)
        offsets = (torch.rand(classes.numel(), generator=generator, device=labels.device) * counts[classes]).long()
        yield order[starts[classes] + offsets]


def train_step(learners: Sequence[Learner], x: Tensor, y: Tensor, *, diagnostics: bool = True,
               grad_threshold: float | None = None) -> list[Tensor]:
    """One optimiser step per learner on the same batch; returns each learner's STAT_KEYS vector."""
    stats = []
    for learner in learners:
        z = learner.head(x)
        z.retain_grad()
        out = learner.loss_fn(z, y)
        learner.optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        if diagnostics:
            kwargs = {} if grad_threshold is None else {"grad_threshold": grad_threshold}
            g = greediness(out, z.grad, learner.head.parameters(), learner.loss_fn.parameters(), **kwargs)
        else:  # the loss's own counts only
            nan = torch.full((), float("nan"), device=x.device)
            g = {k: getattr(out, k, nan) for k in GREEDINESS_KEYS}
        row = [out.loss.detach()] + [g[k].detach().to(out.loss.dtype) for k in GREEDINESS_KEYS]
        learner.optimizer.step()
        stats.append(torch.stack(row))
    return stats


@torch.no_grad()
def embed(head: nn.Module, x: Tensor, batch_size: int = 8192) -> Tensor:
    """The head's embeddings of every row of `x`, in batches, with the head in eval mode."""
    was_training = head.training
    head.eval()
    z = torch.cat([head(x[i : i + batch_size]) for i in range(0, x.shape[0], batch_size)])
    head.train(was_training)
    return z


def evaluate(z: Tensor, y: Tensor) -> dict[str, float]:
    """VARIANCE and retrieval metrics of embeddings `z` with labels `y`."""
    return {**variance(z, y), **retrieval_metrics(z, y, ks=results.DEFAULT_KS)}


def fixed_subset(x: Tensor, y: Tensor, size: int | None) -> tuple[Tensor, Tensor]:
    """`size` rows drawn without replacement with a fixed seed (0), in their original order.

    The draw does not depend on the run's seed, so every loss and seed sees the same data.
    """
    if size is None or size >= len(y):
        return x, y
    keep = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))[:size].sort().values
    return x[keep], y[keep]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but no CUDA device is available; use device=cpu or auto")
    return torch.device(name)


def load_features(config: RunConfig, split: str, data_root=None, cache_dir=None, progress: bool = True):
    return features(config.backbone, config.dataset, split, root=data_root, cache_dir=cache_dir,
                    progress=progress, **config.backbone_options, **config.dataset_options)


def run(config: RunConfig, out_dir, *, data_root=None, cache_dir=None, progress: bool = True) -> RunResult:
    """Train one head with one loss; write the run directory (see `vgcore.results`); return it."""
    t_start = time.perf_counter()
    check_available(config.dataset, data_root)
    device = resolve_device(config.device)
    x_train, y_train = fixed_subset(*load_features(config, "train", data_root, cache_dir, progress), config.train_size)
    x_eval, y_eval = fixed_subset(*load_features(config, config.eval_split, data_root, cache_dir, progress),
                                  config.eval_size)
    x_train, y_train, x_eval, y_eval = (t.to(device) for t in (x_train, y_train, x_eval, y_eval))
    for split, x in (("train", x_train), (config.eval_split, x_eval)):
        if not torch.isfinite(x).all():
            raise ValueError(f"the {config.backbone} features of {config.dataset}/{split} contain NaN or inf; "
                             f"delete the feature cache and recompute them")
    path = results.start_run(out_dir, config)

    learner = make_learner(config, x_train.shape[1], int(y_train.max()) + 1, device)
    generator = torch.Generator(device=device).manual_seed(config.seed)
    subset = torch.randperm(y_train.numel(), generator=generator, device=device)[: config.eval_train_size]
    splits = {config.eval_split: (x_eval, y_eval), "train_subset": (x_train[subset], y_train[subset])}

    step_rows: list[np.ndarray] = []
    epoch_rows: list[dict] = []

    def evaluate_epoch(epoch: int, train_loss: float) -> None:
        for split, (x, y) in splits.items():
            epoch_rows.append({"epoch": epoch, "split": split, "train_loss": train_loss, **evaluate(embed(learner.head, x), y)})

    def flush(pending: list[Tensor], first_step: int, epoch: int) -> None:
        """Copy pending step stats to the host; stop on the first non-finite loss."""
        block = torch.stack(pending).cpu().double().numpy()
        steps = np.arange(first_step, first_step + len(block))
        bad = np.flatnonzero(~np.isfinite(block[:, 0]))
        step_rows.append(np.column_stack([steps, np.full(len(block), epoch), block])[: bad[0] if bad.size else None])
        pending.clear()
        if bad.size:
            _fail(path, config, step_rows, epoch_rows, int(steps[bad[0]]), epoch, float(block[bad[0], 0]))

    evaluate_epoch(0, float("nan"))
    t_train, step = 0.0, 0
    bar = tqdm(range(1, config.epochs + 1), desc=f"{config.dataset}/{config.loss}/seed{config.seed}",
               disable=not progress, leave=False)
    for epoch in bar:
        t0 = time.perf_counter()
        pending: list[Tensor] = []
        first = step
        for idx in batch_indices(y_train, config, generator):
            pending.append(train_step([learner], x_train[idx], y_train[idx], diagnostics=config.diagnostics,
                                      grad_threshold=config.grad_threshold)[0])
            step += 1
            if len(pending) == config.sync_every:
                flush(pending, first, epoch)
                first = step
        if pending:
            flush(pending, first, epoch)
        t_train += time.perf_counter() - t0
        epoch_losses = [r[:, 2] for r in step_rows if r.size and r[0, 1] == epoch]
        train_loss = float(np.concatenate(epoch_losses).mean())
        if epoch % config.eval_every == 0 or epoch == config.epochs:
            evaluate_epoch(epoch, train_loss)
            bar.set_postfix(loss=f"{train_loss:.4f}", r1=f"{epoch_rows[-2]['recall@1']:.3f}")

    steps_df = _steps_frame(step_rows)
    epochs_df = pd.DataFrame(epoch_rows)
    results.write_tables(path, steps_df, epochs_df)
    z_final = embed(learner.head, x_eval)
    results.write_embeddings(path, z_final.cpu().numpy(), y_eval.cpu().numpy())
    summary = _summary(config, steps_df, epochs_df, time.perf_counter() - t_start, t_train)
    results.write_json(path / "summary.json", summary)
    return RunResult(path, summary, steps_df, epochs_df)


def sweep(configs: Sequence[RunConfig], root, *, data_root=None, cache_dir=None, progress: bool = True) -> list[Path]:
    """Run every config whose run directory is not complete with the same config hash; skip the rest."""
    paths = []
    for config in tqdm(configs, desc="sweep", disable=not progress):
        path = results.run_dir(root, config)
        if not results.is_complete(path, config.config_hash()):
            run(config, path, data_root=data_root, cache_dir=cache_dir, progress=progress)
        paths.append(path)
    return paths


def _steps_frame(step_rows: list[np.ndarray]) -> pd.DataFrame:
    columns = ["step", "epoch", *STAT_KEYS]
    frame = pd.DataFrame(np.concatenate(step_rows) if step_rows else np.empty((0, len(columns))), columns=columns)
    for col in ("step", "epoch", "n_terms", "n_active_terms"):
        frame[col] = frame[col].astype(np.int64)
    frame["has_positives"] = frame["has_positives"].astype(bool)
    return frame


def _fail(path, config, step_rows, epoch_rows, step: int, epoch: int, value: float):
    """Write the partial logs and failure.json (no summary.json: the run stays incomplete), then raise."""
    steps_df = _steps_frame(step_rows)
    results.write_tables(path, steps_df, pd.DataFrame(epoch_rows))
    last = steps_df.iloc[-1].to_dict() if len(steps_df) else {}
    last_txt = ", ".join(f"{k}={last[k]:.6g}" for k in ("train_loss", "grad_norm") if k in last) or "none (first step)"
    message = (f"loss {config.loss!r} became {value} at step {step} (epoch {epoch}) on {config.dataset!r} "
               f"(seed {config.seed}); last finite values: {last_txt}. The partial logs are in {path}. "
               f"Try a lower lr (now {config.lr}) or check the features for NaN.")
    results.write_json(path / "failure.json", {"error": message, "step": step, "epoch": epoch, "last": last})
    raise TrainingDivergedError(message)


def _summary(config: RunConfig, steps: pd.DataFrame, epochs: pd.DataFrame, wall: float, t_train: float) -> dict:
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
        "wall_time_s": wall,
        "steps_per_s": len(steps) / t_train if t_train > 0 else float("nan"),
        "versions": {"vgcore": vgcore.__version__, "torch": torch.__version__, "numpy": np.__version__,
                     "python": platform.python_version()},
    }
