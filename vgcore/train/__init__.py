"""Training a projection head on frozen features, with per-step GREEDINESS and per-epoch VARIANCE.

- :mod:`~vgcore.train.head`: the projection head; :mod:`~vgcore.train.learner`: a (head, loss,
  optimiser) learner and the step that serves several of them per batch;
- :mod:`~vgcore.train.samplers`: batch samplers and fixed subsets; :mod:`~vgcore.train.steplog`:
  the named per-step log; :mod:`~vgcore.train.evaluate`: ``{split: metrics}`` of a head;
- :mod:`~vgcore.train.graph`: the step launched eagerly or replayed from one CUDA graph;
- :mod:`~vgcore.train.loop`: ``fit`` (the one loop: a group of runs on one batch stream), ``run_group``
  (load the features, then ``fit``), ``run`` (one config -> one run directory) and ``sweep``;
- :mod:`~vgcore.train.monitor`: :class:`GreedinessMonitor`, the same per-step log for any loss in
  your own training loop;
- :mod:`~vgcore.train.probes`: the fixed probe batches of the fair comparison and a GREEDINESS
  reading on them without an optimiser step.
"""

from __future__ import annotations

from vgcore.train.evaluate import embed, evaluate, evaluate_splits
from vgcore.train.head import ProjectionHead
from vgcore.train.learner import STAT_KEYS, Learner, make_learner, train_step
from vgcore.train.loop import (
    RunResult,
    SweepResult,
    TrainingDivergedError,
    fit,
    load_features,
    load_result,
    run,
    run_group,
    sweep,
)
from vgcore.train.monitor import GreedinessMonitor
from vgcore.train.probes import (
    PROBE_FRACTIONS,
    PROBE_SEED,
    probe_batches,
    probe_epochs,
    probe_reading,
)
from vgcore.train.samplers import (
    NoPositivePairsWarning,
    batch_indices,
    check_sampler,
    fixed_subset,
    fixed_subset_index,
    pk_shape,
)
from vgcore.train.steplog import StepLog

__all__ = [
    "PROBE_FRACTIONS",
    "PROBE_SEED",
    "STAT_KEYS",
    "GreedinessMonitor",
    "Learner",
    "NoPositivePairsWarning",
    "ProjectionHead",
    "RunResult",
    "StepLog",
    "SweepResult",
    "TrainingDivergedError",
    "batch_indices",
    "check_sampler",
    "embed",
    "evaluate",
    "evaluate_splits",
    "fit",
    "fixed_subset",
    "fixed_subset_index",
    "pk_shape",
    "load_features",
    "load_result",
    "make_learner",
    "probe_batches",
    "probe_epochs",
    "probe_reading",
    "run",
    "run_group",
    "sweep",
    "train_step",
]
