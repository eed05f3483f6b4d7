"""Per-query ranked results: each query's first k gallery items, how similar, and whether relevant.

What the averages of :mod:`vgcore.metrics.retrieval` hide: which queries fail and what they
retrieve instead. The ranking is :func:`~vgcore.metrics.retrieval.exact_knn`'s (descending
similarity, ties by the lower index, leave-one-out without a gallery), so it is the one behind
``retrieval_metrics``. Relevant = same label as the query.

    r = ranked_neighbours(z, labels, 5, gallery=g, gallery_labels=g_labels)
    wrong_first = (~r.relevant[:, 0] & (r.n_relevant > 0)).nonzero().squeeze(1)
    r.indices[wrong_first], r.similarities[wrong_first]   # what those queries found instead
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from vgcore.metrics.inputs import as_embeddings
from vgcore.metrics.retrieval import _check_distance, _check_inputs, exact_knn

__all__ = ["RankedNeighbours", "per_class_recall", "ranked_neighbours"]


class RankedNeighbours(NamedTuple):
    """Tensors on the queries' device; row i is query i, column j its (j+1)-th neighbour."""

    indices: Tensor
    """[N, k] int64: rows of the gallery (of ``z`` itself, leave-one-out)."""
    similarities: Tensor
    """[N, k]: cosine similarity [-1, 1], or with ``"squared_l2"`` minus the squared distance."""
    relevant: Tensor
    """[N, k] bool: the neighbour has the query's label."""
    n_relevant: Tensor
    """[N] int64: R_i, the gallery items with the query's label (the query itself not counted);
    queries with 0 are the ones ``retrieval_metrics`` excludes."""


def ranked_neighbours(
    z,
    y,
    k: int,
    *,
    gallery=None,
    gallery_labels=None,
    distance: str = "cosine",
    chunk_size: int | None = None,
    backend: str = "torch",
) -> RankedNeighbours:
    """The first ``k`` neighbours of every query ``z`` [N, D] with labels ``y`` [N] (integers or
    class names), in the whole ``gallery`` [M, D] with ``gallery_labels`` [M], or without a gallery
    among the other queries. ``k`` in [1, M] ([1, N - 1] leave-one-out). Arguments as
    :func:`~vgcore.metrics.retrieval.retrieval_metrics`; NumPy arrays are accepted.
    """
    _check_distance(distance)
    z, y, g, gy = _check_inputs(z, y, gallery, gallery_labels)
    same = g is None
    sims, idx = exact_knn(z, k, gallery=g, chunk_size=chunk_size, backend=backend, distance=distance)
    y = y.to(idx.device)
    ref = y if same else gy.to(idx.device)
    relevant = ref[idx] == y.unsqueeze(1)
    n = y.shape[0]
    classes, inverse = torch.unique(y if same else torch.cat([y, ref]), return_inverse=True)
    in_gallery = torch.bincount(inverse if same else inverse[n:], minlength=classes.numel())
    n_relevant = in_gallery[inverse[:n]] - (1 if same else 0)
    return RankedNeighbours(idx, sims, relevant, n_relevant)


def per_class_recall(z, y, k: int = 1, *, chunk_size: int | None = None) -> dict[int, float]:
    """Recall@k of each class's queries: the share of its queries with a same-class item among their
    ``k`` nearest (leave-one-out, :func:`ranked_neighbours`' ranking), keyed by label in sorted order
    (class names by their ``encode_labels`` codes). Queries of a class with no other member are
    excluded, as in ``retrieval_metrics``; a class with none left is left out."""
    z, y = as_embeddings(z, y)
    r = ranked_neighbours(z, y, k, chunk_size=chunk_size)
    hit = r.relevant.any(dim=1)
    counted = r.n_relevant > 0
    y = y.to(hit.device)
    return {int(c): float(hit[counted & (y == c)].double().mean()) for c in torch.unique(y[counted]).tolist()}
