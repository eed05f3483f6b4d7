"""Superclass structure: how much fine-class structure an embedding keeps inside each superclass.

For datasets with two levels of labels (the synthetic set's superclasses; a user's own coarse
labels), a loss that "oversimplifies class structure" maps the fine classes of one superclass onto
each other. ``fine_recall@1_within_super`` asks, for each query, whether its nearest neighbour among
the *other members of its superclass* is of its own fine class: chance level when the fine classes
inside a superclass are collapsed, 1 when they stay apart. ``super_recall@1`` is Recall@1 on the
superclass labels. Cosine similarity, leave-one-out, ties broken by the lower index (as in
:mod:`vgcore.metrics.retrieval`); a query with no other item of its fine class is left out.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from vgcore.metrics.inputs import check_embeddings

HIERARCHY_KEYS: tuple[str, ...] = ("fine_recall@1_within_super", "super_recall@1")

LABELS: dict[str, str] = {
    "fine_recall@1_within_super": "fine-class Recall@1 within the superclass [fraction of queries]",
    "super_recall@1": "superclass Recall@1 [fraction of queries]",
}


@torch.no_grad()
def superclass_metrics(z: Tensor, y: Tensor, coarse: Tensor | None, *, chunk_size: int = 4096) -> dict[str, float]:
    """:data:`HIERARCHY_KEYS` for embeddings ``z`` [N, D], fine labels ``y`` [N] and superclass labels
    ``coarse`` [N]; every value NaN when ``coarse`` is None (a dataset without superclasses)."""
    if coarse is None:
        return dict.fromkeys(HIERARCHY_KEYS, math.nan)
    check_embeddings(z, y)
    coarse = coarse.to(y.device)
    if coarse.shape != y.shape:
        raise ValueError(f"coarse labels have shape {tuple(coarse.shape)}, fine labels {tuple(y.shape)}")
    zn = F.normalize(z.detach().float() if z.dtype not in (torch.float32, torch.float64) else z.detach(), dim=1)
    n = zn.shape[0]
    fine_hits = fine_queries = super_hits = 0
    for start in range(0, n, chunk_size):
        stop = min(n, start + chunk_size)
        sims = zn[start:stop] @ zn.T
        rows = torch.arange(stop - start, device=zn.device)
        sims[rows, rows + start] = -math.inf  # never retrieve yourself
        nearest = sims.argmax(dim=1)  # first maximum: ties go to the lower index
        super_hits += int((coarse[nearest] == coarse[start:stop]).sum())
        same_super = coarse.unsqueeze(0) == coarse[start:stop].unsqueeze(1)
        within = sims.masked_fill(~same_super, -math.inf).argmax(dim=1)
        own_fine = (y.unsqueeze(0) == y[start:stop].unsqueeze(1))
        own_fine[rows, rows + start] = False
        has_mate = own_fine.any(dim=1)
        fine_hits += int(((y[within] == y[start:stop]) & has_mate).sum())
        fine_queries += int(has_mate.sum())
    return {
        "fine_recall@1_within_super": fine_hits / fine_queries if fine_queries else math.nan,
        "super_recall@1": super_hits / n,
    }
