"""Evaluation of a head: embed each split and compute VARIANCE and retrieval on it."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from vgcore.metrics.hierarchy import superclass_metrics
from vgcore.metrics.retrieval import DEFAULT_KS, retrieval_metrics
from vgcore.metrics.variance import variance


@torch.no_grad()
def embed(head: nn.Module, x: Tensor, batch_size: int = 8192) -> Tensor:
    """The head's embeddings of every row of `x`, in batches, with the head in eval mode."""
    was_training = head.training
    head.eval()
    z = torch.cat([head(x[i : i + batch_size]) for i in range(0, x.shape[0], batch_size)])
    head.train(was_training)
    return z


def evaluate(z: Tensor, y: Tensor, coarse: Tensor | None = None) -> dict[str, float]:
    """VARIANCE, retrieval and superclass metrics of embeddings `z` with labels `y` (and superclass
    labels `coarse`, where the dataset has them; NaN otherwise)."""
    return {**variance(z, y), **retrieval_metrics(z, y, ks=DEFAULT_KS), **superclass_metrics(z, y, coarse)}


def evaluate_splits(head: nn.Module, splits: dict[str, tuple[Tensor, Tensor, Tensor | None]]) -> dict[str, dict[str, float]]:
    """``{split: metrics}`` of the head's embeddings of each ``(x, y, coarse)``, in the order given."""
    return {name: evaluate(embed(head, x), y, coarse) for name, (x, y, coarse) in splits.items()}
