"""One (head, loss, optimiser) learner and the training step that serves several of them per batch.

The step is: batch -> head -> z (L2-normalised) -> loss(z, y) (its terms in ``loss_fn.last``) -> one
backward -> GREEDINESS read off that same backward (dL/dz is kept with ``retain_grad`` and its part
tangent to the sphere at z is measured; parameter gradients are read before the optimiser step) ->
optimiser step -> each sample's share of that step, from Adam's updated state
(:mod:`vgcore.metrics.adam_step`). ``train_step`` takes a list of learners so that several losses
can be trained on the identical batch stream (a paired comparison). Everything before the optimiser
step is :func:`forward_backward`, which :func:`vgcore.train.probes.probe_reading` shares to read the
same quantities on a fixed batch without a step.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor, nn

from vgcore.losses import make_loss
from vgcore.metrics.adam_step import step_share
from vgcore.metrics.greediness import GREEDINESS_KEYS, greediness
from vgcore.train.head import ProjectionHead

STAT_KEYS = ("train_loss", *GREEDINESS_KEYS)
"""What one step records per learner, in order (the step log's columns after step and epoch)."""
CHECK_KEYS = ("unit_embeddings",)
"""What one step checks per learner, after STAT_KEYS in its vector: read by the step log at each
flush (a 0 stops the run there), not written to steps.csv. ``unit_embeddings``: every embedding of
the batch has norm 1 within UNIT_TOLERANCE; a head output that overflowed (its norm is inf, so
normalising gives 0), became NaN or is exactly zero fails it while the loss may stay finite."""
UNIT_TOLERANCE = 1e-3
NUMERICS_VERSION = 3
"""Bumped by hand when the step (optimiser, GREEDINESS reading) changes its numbers (vgcore.identity)."""


@dataclass
class Learner:
    """One (head, loss, optimiser) triple trained on the batch stream."""

    head: ProjectionHead
    loss_fn: nn.Module
    optimizer: torch.optim.Optimizer


def make_learner(config, in_dim: int, num_classes: int, device: torch.device) -> Learner:
    """Head and loss initialised from ``config.seed``; one Adam over head and loss parameters.

    The result depends on ``config`` and ``device`` only: learners built for one fused group are
    the learners of the same runs trained alone.

    The initial weights are drawn from the CPU generator seeded with ``config.seed`` inside
    ``torch.random.fork_rng``, so the process's global random state is left as it was.
    """
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(config.seed)
        head = ProjectionHead(in_dim, config.embedding_dim, config.head, config.head_hidden)
        # The loss's per-step input validation is a host sync; training checks the features once
        # instead and catches a non-finite loss every `sync_every` steps.
        loss_fn = make_loss(config.loss, num_classes=num_classes, embedding_dim=config.embedding_dim,
                            **{"check_inputs": False, **config.loss_params})
    head, loss_fn = head.to(device), loss_fn.to(device)
    params = [*head.parameters(), *loss_fn.parameters()]
    # On a GPU, Adam keeps its step count on the device (capturable), so that the same optimiser
    # runs eagerly or inside a CUDA graph (vgcore.train.graph) with the same arithmetic.
    optimizer = torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay,
                                 capturable=device.type == "cuda")
    return Learner(head, loss_fn, optimizer)


class StepReading(NamedTuple):
    """What one forward + backward of a learner on a batch gives (:func:`forward_backward`)."""

    loss: Tensor
    """The scalar loss (still attached to its graph)."""
    stats: dict[str, Tensor]
    """GREEDINESS_KEYS -> 0-d tensors; ``adam_step_norm_mean`` NaN (it needs the optimiser's step)."""
    unit: Tensor
    """0-d bool: every embedding of the batch has norm 1 within UNIT_TOLERANCE (CHECK_KEYS)."""
    trace: list | None
    """The head's ``(layer, input, output)`` list (outputs holding their gradients), None without diagnostics."""


def forward_backward(learner: Learner, x: Tensor, y: Tensor, *, diagnostics: bool = True,
                     grad_threshold: float | None = None) -> StepReading:
    """The part of a training step before the optimiser: head -> z -> loss -> one backward -> GREEDINESS.

    Shared by :func:`train_step` (which steps the optimiser after it) and
    :func:`vgcore.train.probes.probe_reading` (which does not). The backward *accumulates* into the
    parameters' ``.grad``: the caller clears them first (``optimizer.zero_grad(set_to_none=True)``).
    The GREEDINESS keys are read from this backward (dL/dz kept with ``retain_grad``, its part
    tangent to the sphere at z; parameter gradients before any step). Without ``diagnostics`` only
    the loss's own counts are read (the gradient keys NaN).
    """
    trace: list | None = [] if diagnostics else None
    z = learner.head(x, trace)
    z.retain_grad()
    loss = learner.loss_fn(z, y)
    out = learner.loss_fn.last  # per-sample terms and counts of this call
    loss.backward()
    if diagnostics:
        kwargs = {} if grad_threshold is None else {"grad_threshold": grad_threshold}
        g = greediness(out, z.grad, learner.head.parameters(), learner.loss_fn.parameters(), z=z, **kwargs)
    else:  # the loss's own counts only
        nan = torch.full((), float("nan"), device=x.device)
        g = {k: getattr(out, k, nan) for k in GREEDINESS_KEYS}
    unit = (torch.linalg.vector_norm(z.detach(), dim=1) - 1).abs().amax() <= UNIT_TOLERANCE  # NaN: False
    return StepReading(loss, g, unit, trace)


def train_step(learners: Sequence[Learner], x: Tensor, y: Tensor, *, diagnostics: bool = True,
               grad_threshold: float | None = None) -> list[Tensor]:
    """One optimiser step per learner on the same batch; returns each learner's STAT_KEYS + CHECK_KEYS vector.

    Per learner: ``zero_grad``, :func:`forward_backward` (the loss and GREEDINESS of this batch),
    ``optimizer.step()``, then ``adam_step_norm_mean`` from Adam's updated state.
    """
    stats = []
    for learner in learners:
        learner.optimizer.zero_grad(set_to_none=True)
        loss, g, unit, trace = forward_backward(learner, x, y, diagnostics=diagnostics,
                                                grad_threshold=grad_threshold)
        learner.optimizer.step()
        if diagnostics:  # each sample's share of the step just taken, read from Adam's updated state
            g["adam_step_norm_mean"] = step_share(trace, learner.optimizer)
        row = [loss.detach()] + [g[k].detach().to(loss.dtype) for k in GREEDINESS_KEYS]
        row.append(unit.to(loss.dtype))
        stats.append(torch.stack(row))
    return stats
