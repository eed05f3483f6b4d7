"""GREEDINESS on probe batches (PROTOCOL.md, "Fair comparison: GREEDINESS on probe batches").

Once runs stop at different epochs, the training batches differ in what each loss sees; two fixed
batches per dataset and seed, the same for every loss, compare the losses on the same samples:

- :func:`probe_batches`: one random batch of B training rows and one class-balanced P x K batch
  (P, K from :func:`~vgcore.train.samplers.pk_shape`), drawn with :data:`PROBE_SEED` from a
  generator of their own;
- :func:`probe_reading`: every GREEDINESS quantity of a (head, loss) on such a batch, computed by
  the training step's own forward + backward (:func:`~vgcore.train.learner.forward_backward`) but
  with no optimiser step, leaving the head, the loss's state, the optimiser, the parameters'
  gradients and the global random state as they were;
- :func:`probe_epochs`: the epochs at which a run is read, :data:`PROBE_FRACTIONS` of its own stop.

Nothing here is called by the training loop yet.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from vgcore.metrics.greediness import GREEDINESS_KEYS
from vgcore.train.learner import Learner, forward_backward
from vgcore.train.samplers import pk_shape

PROBE_SEED = 7
"""Seed of the probe batches' generator (PROTOCOL.md: "drawn from the training subset with seed 7")."""

PROBE_FRACTIONS: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
"""Shares of a run's own training (its stop epoch) at which it is read; 0 is the untrained head."""

PROBE_KEYS: tuple[str, ...] = ("loss", *GREEDINESS_KEYS)
"""The keys of :func:`probe_reading`, in order (``loss`` is the step log's ``train_loss``)."""


def probe_batches(labels: Tensor, batch_size: int, seed: int = PROBE_SEED) -> dict[str, Tensor]:
    """The two probe batches of a training set: ``{"random": [B], "pk": [P K]}`` int64 indices into ``labels``.

    ``labels``: the training rows' class labels (1-D, integers >= 0; absent label values are allowed).
    Both batches come from one ``torch.Generator`` on the CPU seeded with ``seed``, the random batch
    drawn first, so they depend on ``labels``, ``batch_size`` and ``seed`` only (not on the global
    random state, nor on the device; they are returned on ``labels``' device).

    * ``random``: B = ``batch_size`` distinct rows, drawn without replacement (the first B of a
      random permutation of the rows), in drawn order: not sorted, as a training batch of the
      ``random`` sampler.
    * ``pk``: ``(P, K) = pk_shape(C, B)``, C the number of classes present: P distinct classes drawn
      without replacement, then K distinct rows of each drawn without replacement; laid out as the
      ``pk`` sampler lays out a batch, in blocks of K rows per class, the classes in drawn order and
      the rows of a class in drawn order (not sorted: N-pair reads pairs in batch order). P K <= B.

    Raises ValueError when B exceeds the rows, when there are fewer than 2 classes, or when a class
    has fewer than K rows (checked over every class present, not only the drawn ones, so that
    whether a probe can be built does not depend on the draw).
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if labels.ndim != 1 or labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(f"labels must be a 1-D integer tensor, got {labels.dtype} of shape {tuple(labels.shape)}")
    device = labels.device
    labels = labels.detach().to("cpu", torch.int64)
    n = labels.numel()
    if batch_size > n:
        raise ValueError(f"batch_size {batch_size} exceeds the {n} training rows; lower batch_size")
    if n and int(labels.min()) < 0:
        raise ValueError("labels must be >= 0")
    gen = torch.Generator().manual_seed(seed)
    random = torch.randperm(n, generator=gen)[:batch_size]

    counts = torch.bincount(labels)
    present = torch.nonzero(counts).squeeze(1)
    p, k = pk_shape(present.numel(), batch_size)
    short = present[counts[present] < k]
    if short.numel():
        c = int(short[0])
        raise ValueError(
            f"class {c} has {int(counts[c])} training rows, fewer than K = {k} (pk_shape({present.numel()}, "
            f"{batch_size}) = ({p}, {k}); {short.numel()} class(es) short: {short.tolist()[:10]}); the P x K "
            f"probe needs K distinct rows of every class: drop the short classes from the training rows, "
            f"or lower batch_size where that lowers K (K = 2 floor(B / 2P))")
    order = torch.argsort(labels, stable=True)
    starts = torch.cumsum(counts, 0) - counts
    classes = present[torch.randperm(present.numel(), generator=gen)[:p]]
    rows = [order[starts[c] + torch.randperm(int(counts[c]), generator=gen)[:k]] for c in classes.tolist()]
    return {"random": random.to(device), "pk": torch.cat(rows).to(device)}


def _parameters(learner: Learner) -> list[Tensor]:
    """Every parameter the reading's backward could reach or the optimiser holds, once each."""
    params = [*learner.head.parameters(), *learner.loss_fn.parameters(),
              *(p for group in learner.optimizer.param_groups for p in group["params"])]
    return list({id(p): p for p in params}.values())


def probe_reading(learner: Learner, x: Tensor, y: Tensor, *, grad_threshold: float | None = None) -> dict[str, float]:
    """Every GREEDINESS quantity of ``learner`` on the batch ``(x, y)``, without an optimiser step.

    Returns :data:`PROBE_KEYS` -> float: ``loss`` (the scalar loss, the step log's ``train_loss``) and
    the :data:`~vgcore.metrics.greediness.GREEDINESS_KEYS` (definitions and units: PROTOCOL.md,
    "Diagnostics: GREEDINESS"; counts as floats, ``has_positives`` 0.0/1.0). They are computed by
    :func:`~vgcore.train.learner.forward_backward`, the very function :func:`~vgcore.train.learner.train_step`
    runs before its optimiser step, so they equal what ``train_step`` would record for this batch on
    this learner (the same ``greediness`` call on the same ``z.grad``, tangential per-sample
    gradients, parameter gradient norms of this one backward). ``grad_threshold`` as in ``train_step``.

    ``adam_step_norm_mean`` is NaN: it is each sample's share of an optimiser step, read from Adam's
    state after the step (:func:`~vgcore.metrics.adam_step.step_share`); a reading takes no step, and
    a step taken on a copy would read a second moment made of the run's own batch history plus the
    probe's gradient (and be NaN anyway at the untrained head, Adam's first step). The other keys
    need no step.

    What is left as it was (tested bit for bit): the head's and the loss's parameters and buffers (the
    head and the loss run in eval mode for the reading, so CCL-EMA does not move its centres; every
    module's train/eval flag is restored afterwards), each parameter's ``.grad`` (set aside, cleared
    for the reading's backward, put back: a tensor, or None), the optimiser's state (never touched),
    ``loss_fn.last``, and the global random state (the reading runs inside ``torch.random.fork_rng``).
    The reading runs with gradients enabled even under ``torch.no_grad()``. One host sync (the floats).
    The head must be a :class:`~vgcore.train.head.ProjectionHead` (or take ``head(x, trace)``); a
    head whose forward depends on its mode (dropout, batch norm) is read in eval mode.
    """
    head, loss_fn = learner.head, learner.loss_fn
    params = _parameters(learner)
    grads = [p.grad for p in params]
    modes = [(m, m.training) for m in (*head.modules(), *loss_fn.modules())]
    had_last, last = hasattr(loss_fn, "last"), getattr(loss_fn, "last", None)
    devices = [x.device] if x.device.type == "cuda" else []
    try:
        for p in params:
            p.grad = None
        head.eval()
        loss_fn.eval()
        with torch.random.fork_rng(devices=devices), torch.enable_grad():
            loss, stats, _, _ = forward_backward(learner, x, y, diagnostics=True, grad_threshold=grad_threshold)
            values = torch.stack([loss.detach(), *(stats[key].detach().to(loss.dtype) for key in GREEDINESS_KEYS)])
    finally:
        for p, g in zip(params, grads, strict=True):
            p.grad = g
        for m, training in modes:
            m.training = training
        if had_last:
            loss_fn.last = last
    out = dict(zip(PROBE_KEYS, values.tolist(), strict=True))
    out["adam_step_norm_mean"] = math.nan  # no optimiser step (docstring)
    return out


def probe_epochs(stop_epoch: int, fractions: Sequence[float] = PROBE_FRACTIONS) -> list[int]:
    """The epochs at which a run that trained ``stop_epoch`` epochs is read: one per fraction, in order.

    Epoch e is the head after e epochs of training (0: the untrained head); the epoch for fraction f
    is ``round(f * stop_epoch)`` rounded half up, ``floor(f * stop_epoch + 1/2)`` (Python's
    ``round`` would round 2.5 to 2 but 3.5 to 4). Duplicates are kept, so the list stays aligned
    with ``fractions`` (``stop_epoch`` 1 gives [0, 0, 1, 1, 1]): a caller reads each distinct epoch
    once and gives that reading to every fraction that maps to it.
    """
    if isinstance(stop_epoch, bool) or not isinstance(stop_epoch, int) or stop_epoch < 0:
        raise ValueError(f"stop_epoch must be an integer >= 0, got {stop_epoch!r}")
    for f in fractions:
        if not (isinstance(f, int | float) and 0 <= f <= 1):
            raise ValueError(f"fractions must lie in [0, 1], got {f!r}")
    return [math.floor(f * stop_epoch + 0.5) for f in fractions]
