"""Evaluation of a head: embed each split and compute VARIANCE and retrieval on it.

Everything runs on the device that holds the embeddings (the training device). ``full=False`` is
the per-epoch evaluation behind the curves: VARIANCE and Recall@K. ``full=True`` adds what is
reported only at the end of a run (MAP@R and R-precision, which rank up to the largest class size,
and NMI, which runs k-means); the loop asks for it where `RunConfig.full_eval_at` says.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from vgcore.metrics.hierarchy import superclass_metrics
from vgcore.metrics.retrieval import DEFAULT_KS, retrieval_metrics
from vgcore.metrics.variance import class_geometry, intra_var, variance

KMEANS_SEED = 0
"""The seed of NMI's k-means, the same for every run (PROTOCOL.md, "Retrieval metrics")."""
NUMERICS_VERSION = 1
"""Bumped by hand when VARIANCE, retrieval or the superclass metrics change their numbers on the
same embeddings (vgcore.identity)."""


@torch.no_grad()
def embed(head: nn.Module, x: Tensor, batch_size: int = 8192) -> Tensor:
    """The head's embeddings of every row of `x`, in batches, with the head in eval mode."""
    was_training = head.training
    head.eval()
    z = torch.cat([head(x[i : i + batch_size]) for i in range(0, x.shape[0], batch_size)])
    head.train(was_training)
    return z


def evaluate(z: Tensor, y: Tensor, coarse: Tensor | None = None, *, full: bool = True,
             nmi: bool = True) -> dict[str, float]:
    """VARIANCE, Recall@K and superclass metrics of embeddings `z` with labels `y` (and superclass
    labels `coarse`, where the dataset has them; NaN otherwise); with `full`, MAP@R, R-precision and
    NMI too (NaN without; NMI also NaN with ``nmi=False``, which skips its k-means)."""
    return {**variance(z, y),
            **retrieval_metrics(z, y, ks=DEFAULT_KS, nmi=full and nmi, map_at_r=full, seed=KMEANS_SEED),
            **superclass_metrics(z, y, coarse)}


def progress_metrics(z: Tensor, y: Tensor, coarse: Tensor | None = None) -> dict[str, float]:
    """What the log-spaced progress steps read (:func:`vgcore.metrics.convergence.progress_grid`):
    Recall@1 (the convergence yardstick) and ``intra_var`` (the early compaction), as :func:`evaluate`
    computes them; the other columns of those rows stay empty (NaN). ``coarse`` is ignored."""
    return {"recall@1": retrieval_metrics(z, y, ks=(1,), nmi=False, map_at_r=False)["recall@1"],
            "intra_var": intra_var(class_geometry(z, y))}


def stopping_metrics(z: Tensor, y: Tensor, coarse: Tensor | None = None) -> dict[str, float]:
    """What early stopping reads after every epoch on the validation split (``RunConfig.patience``):
    MAP@R (the stopping score) and Recall@1, as :func:`evaluate` computes them; no k-means.
    ``coarse`` is ignored."""
    out = retrieval_metrics(z, y, ks=(1,), nmi=False, map_at_r=True)
    return {"map@r": out["map@r"], "recall@1": out["recall@1"]}


def evaluate_splits(head: nn.Module, splits: dict[str, tuple[Tensor, Tensor, Tensor | None]], *,
                    full: bool = True, nmi: bool = True, metrics=None) -> dict[str, dict[str, float]]:
    """``{split: metrics}`` of the head's embeddings of each ``(x, y, coarse)``, in the order given;
    ``metrics(z, y, coarse)`` (default :func:`evaluate` with ``full`` and ``nmi``) computes them."""
    if metrics is None:
        return {name: evaluate(embed(head, x), y, coarse, full=full, nmi=nmi) for name, (x, y, coarse) in splits.items()}
    return {name: metrics(embed(head, x), y, coarse) for name, (x, y, coarse) in splits.items()}
