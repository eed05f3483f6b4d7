"""Superclass structure: how an embedding nests fine classes inside their superclasses.

For datasets with two levels of labels (the synthetic set's superclasses; a user's own coarse
labels). Leave-one-out, cosine similarity, ties broken by the lower index (as in
:mod:`vgcore.metrics.retrieval`):

* ``fine_recall@1_within_super``: for each query whose fine class has another member, is its
  nearest neighbour *among the other members of its superclass* of its own fine class? Chance
  level when the fine classes of a superclass are collapsed onto each other (a loss that
  "oversimplifies class structure"), 1 when they stay apart.
* ``superclass_recall@1``: share of samples whose nearest other sample shares their superclass.
* ``fine_errors_in_superclass``: of the samples whose nearest other sample has another fine class,
  the share whose neighbour is still in their superclass (NaN without such an error): near 1 the
  mistakes are between close relatives; near the chance level the coarse structure is lost.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from vgcore.metrics.inputs import as_embeddings

HIERARCHY_KEYS: tuple[str, ...] = ("fine_recall@1_within_super", "superclass_recall@1", "fine_errors_in_superclass")

LABELS: dict[str, str] = {
    "fine_recall@1_within_super": "fine-class Recall@1 within the superclass [fraction of queries]",
    "superclass_recall@1": "superclass Recall@1 [fraction of queries]",
    "fine_errors_in_superclass": "fine-class errors inside the superclass [fraction of errors]",
}


@torch.no_grad()
def superclass_metrics(z, y, coarse, *, chunk_size: int = 4096) -> dict[str, float]:
    """:data:`HIERARCHY_KEYS` for embeddings ``z`` [N, D], fine labels ``y`` [N] and superclass labels
    ``coarse`` [N] (tensors or NumPy arrays); every value NaN when ``coarse`` is None (a dataset
    without superclasses)."""
    if coarse is None:
        return dict.fromkeys(HIERARCHY_KEYS, math.nan)
    z, y = as_embeddings(z, y)
    _, coarse = as_embeddings(z, coarse, names=("z", "coarse labels"))
    zn = F.normalize(z.detach().float() if z.dtype not in (torch.float32, torch.float64) else z.detach(), dim=1)
    n = zn.shape[0]
    fine_hits = fine_queries = super_hits = errors = errors_inside = 0
    for start in range(0, n, chunk_size):
        stop = min(n, start + chunk_size)
        sims = zn[start:stop] @ zn.T
        rows = torch.arange(stop - start, device=zn.device)
        sims[rows, rows + start] = -math.inf  # never retrieve yourself
        nearest = sims.argmax(dim=1)  # first maximum: ties go to the lower index
        same_super = coarse[nearest] == coarse[start:stop]
        wrong = y[nearest] != y[start:stop]
        super_hits += int(same_super.sum())
        errors += int(wrong.sum())
        errors_inside += int((wrong & same_super).sum())
        in_super = coarse.unsqueeze(0) == coarse[start:stop].unsqueeze(1)
        within = sims.masked_fill(~in_super, -math.inf).argmax(dim=1)
        own_fine = y.unsqueeze(0) == y[start:stop].unsqueeze(1)
        own_fine[rows, rows + start] = False
        has_mate = own_fine.any(dim=1)
        fine_hits += int(((y[within] == y[start:stop]) & has_mate).sum())
        fine_queries += int(has_mate.sum())
    return {
        "fine_recall@1_within_super": fine_hits / fine_queries if fine_queries else math.nan,
        "superclass_recall@1": super_hits / n,
        "fine_errors_in_superclass": errors_inside / errors if errors else math.nan,
    }
