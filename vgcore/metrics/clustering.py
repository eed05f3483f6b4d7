"""Seeded k-means and normalised mutual information in torch, on the embeddings' own device.

NMI of a retrieval evaluation clusters the embeddings with k-means (k = number of classes) and
compares the clusters with the labels. Both run here on whatever device holds the embeddings (a GPU
during GPU training), with no scikit-learn round trip through host memory:

* :func:`kmeans`: Lloyd's algorithm from a greedy k-means++ start (Arthur & Vassilvitskii 2007, with
  ``2 + ln k`` candidate centres per step as scikit-learn's default ``KMeans(init="k-means++")``),
  one initialisation, stopped when the assignment no longer changes or the centres move less than
  ``tol`` x the mean per-feature variance (scikit-learn's rule), at most ``max_iter`` iterations.
  Every random draw comes from a generator seeded with ``seed``, so a result is reproducible on a
  given device.
* :func:`nmi`: NMI with the arithmetic normalisation, 2 I(U; V) / (H(U) + H(V)) (scikit-learn's
  ``normalized_mutual_info_score`` default), from the contingency table.

Definitions are stated in PROTOCOL.md ("Retrieval metrics").
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["KMeansResult", "kmeans", "nmi"]


@dataclass(frozen=True)
class KMeansResult:
    labels: Tensor  # [N] int64 cluster of each row
    centers: Tensor  # [k, D]
    inertia: float  # sum of squared distances to the assigned centre
    n_iter: int  # Lloyd iterations run


def _sq_dists(x: Tensor, x_sq: Tensor, c: Tensor) -> Tensor:
    """Squared Euclidean distances [N, k] between rows of x and rows of c (clamped at 0)."""
    return (x_sq.unsqueeze(1) - 2.0 * (x @ c.T) + (c * c).sum(1).unsqueeze(0)).clamp_(min=0.0)


def _kmeans_pp(x: Tensor, x_sq: Tensor, k: int, generator: torch.Generator) -> Tensor:
    """Greedy k-means++: each new centre is the best (lowest potential) of ``2 + ln k`` candidates
    drawn with probability proportional to the squared distance to the nearest chosen centre."""
    n = x.shape[0]
    trials = 2 + int(math.log(k))
    first = torch.randint(n, (1,), generator=generator, device=x.device)
    centers = x.new_empty(k, x.shape[1])
    centers[0] = x[first[0]]
    closest = _sq_dists(x, x_sq, centers[:1]).squeeze(1)  # [N]
    for i in range(1, k):
        # all points at distance 0 from the chosen centres (duplicates): draw uniformly
        weights = torch.where(closest.sum() > 0, closest, torch.ones_like(closest))
        cand = torch.multinomial(weights, trials, replacement=True, generator=generator)
        d_cand = torch.minimum(closest.unsqueeze(0), _sq_dists(x, x_sq, x[cand]).T)  # [trials, N]
        best = d_cand.sum(1).argmin()
        centers[i] = x[cand[best]]
        closest = d_cand[best]
    return centers


@torch.no_grad()
def kmeans(x: Tensor, k: int, *, seed: int = 0, max_iter: int = 300, tol: float = 1e-4) -> KMeansResult:
    """k-means of the rows of ``x`` [N, D] into ``k`` clusters (greedy k-means++ start, Lloyd).

    Runs on ``x``'s device in ``x``'s floating dtype. An empty cluster (rare) is re-seeded with the
    point farthest from its centre, as scikit-learn does.
    """
    if x.ndim != 2 or not x.is_floating_point():
        raise ValueError(f"x must be a 2-D floating-point tensor, got {x.dtype} of shape {tuple(x.shape)}")
    n = x.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"k must be between 1 and the number of rows ({n}), got {k}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError("x contains NaN or infinite values")
    generator = torch.Generator(device=x.device).manual_seed(int(seed))
    x_sq = (x * x).sum(1)
    threshold = tol * float(x.var(dim=0, unbiased=False).mean()) if n > 1 else 0.0
    centers = _kmeans_pp(x, x_sq, k, generator)
    labels = _sq_dists(x, x_sq, centers).argmin(1)
    n_iter = 0
    for n_iter in range(1, max_iter + 1):  # noqa: B007 (n_iter is reported)
        sums = torch.zeros_like(centers).index_add_(0, labels, x)
        counts = torch.bincount(labels, minlength=k)
        new = sums / counts.clamp(min=1).unsqueeze(1).to(x.dtype)
        empty = counts == 0
        if bool(empty.any()):
            far = _sq_dists(x, x_sq, centers).gather(1, labels.unsqueeze(1)).squeeze(1)
            order = far.argsort(descending=True)
            empty_ids = empty.nonzero().squeeze(1)
            new[empty_ids] = x[order[: empty_ids.numel()]]
        shift = float(((new - centers) ** 2).sum())
        centers = new
        new_labels = _sq_dists(x, x_sq, centers).argmin(1)
        unchanged = bool((new_labels == labels).all())
        labels = new_labels
        if unchanged or shift <= threshold:
            break
    inertia = float(_sq_dists(x, x_sq, centers).gather(1, labels.unsqueeze(1)).sum())
    return KMeansResult(labels, centers, inertia, n_iter)


def nmi(labels_true: Tensor, labels_pred: Tensor) -> float:
    """Normalised mutual information (arithmetic mean of the entropies), on the labels' device.

    1.0 for identical partitions up to renaming; 1.0 when both are a single cluster (as
    scikit-learn); 0.0 when exactly one of them is.
    """
    if labels_true.ndim != 1 or labels_true.shape != labels_pred.shape:
        raise ValueError(f"labels must be two 1-D tensors of one length, got shapes "
                         f"{tuple(labels_true.shape)} and {tuple(labels_pred.shape)}")
    n = labels_true.numel()
    if n == 0:
        raise ValueError("labels are empty")
    _, u = torch.unique(labels_true, return_inverse=True)
    _, v = torch.unique(labels_pred.to(labels_true.device), return_inverse=True)
    nu, nv = int(u.max()) + 1, int(v.max()) + 1
    if nu == nv == 1:
        return 1.0
    if nu == 1 or nv == 1:
        return 0.0
    table = torch.bincount(u * nv + v, minlength=nu * nv).view(nu, nv).to(torch.float64)
    p = table / n
    pu, pv = p.sum(1), p.sum(0)
    nz = p > 0
    mi = (p[nz] * (p[nz].log() - (pu.unsqueeze(1) * pv.unsqueeze(0))[nz].log())).sum()
    h_u = -(pu * pu.log()).sum()
    h_v = -(pv * pv.log()).sum()
    return float((2.0 * mi / (h_u + h_v)).clamp(0.0, 1.0))
