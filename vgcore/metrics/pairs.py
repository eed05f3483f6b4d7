"""Pair similarities: the cosine similarity of same-class (positive) and different-class (negative) pairs.

The direct picture of VARIANCE: positives spread low is a wide class, positives and negatives that
overlap are where retrieval fails, and the gap between them is the margin a loss keeps. Cosine
similarity is in [-1, 1] (1: same direction).

    pos, neg = pair_similarities(z, y, max_rows=1000)
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from vgcore.metrics.inputs import as_embeddings

__all__ = ["pair_similarities", "row_sample"]


def row_sample(n: int, max_rows: int | None, seed: int = 0) -> np.ndarray:
    """Rows kept for the pair picture: all `n` rows, or `max_rows` of them drawn without replacement
    with NumPy's generator seeded `seed` (not a run's seed: every loss sees the same rows), sorted."""
    if max_rows is None or max_rows >= n:
        return np.arange(n)
    if max_rows < 2:
        raise ValueError(f"max_rows must be at least 2 (a pair), got {max_rows}")
    return np.sort(np.random.default_rng(seed).choice(n, size=max_rows, replace=False))


def pair_similarities(z, y, max_rows: int | None = 1000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(positive, negative)``: the cosine similarities of every pair ``i < j`` of the rows of `z` [N, D]
    (labels `y` [N]) kept by :func:`row_sample`, split by whether the pair shares a label; float64
    arrays in the pairs' row-major order. A zero row has similarity 0 to every other."""
    z, y = as_embeddings(z, y)
    keep = torch.from_numpy(row_sample(len(y), max_rows, seed)).to(z.device)
    z, y = z[keep].double(), y[keep]
    zn = z / z.norm(dim=1, keepdim=True).clamp_min(torch.finfo(torch.float64).tiny)
    i, j = torch.triu_indices(len(y), len(y), offset=1, device=z.device)
    sims: Tensor = (zn @ zn.T)[i, j]
    same = y[i] == y[j]
    return sims[same].cpu().numpy(), sims[~same].cpu().numpy()
