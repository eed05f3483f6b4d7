"""VARIANCE: the geometry of a set of embeddings with labels.

How spread each class is, how far apart and how evenly spaced the class centroids are, per-sample
margins, and Roth et al.'s (2020) density and spectral decay. :func:`variance` computes the shared
quantities once (:class:`ClassGeometry`: two passes over the data, O(N*D + N*C + C^2*D + N*D^2)
time and O(N + C*D + C^2 + D^2 + chunk*max(C, D)) extra memory, no N x N matrix, float64
accumulation); each metric is then a few lines on that geometry, registered in :data:`METRICS`.
Adding a metric is one function and one line there (its key becomes an ``epochs.csv`` column).

Definitions are stated in PROTOCOL.md ("Diagnostics: VARIANCE").
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from vgcore.metrics.inputs import as_embeddings

_CHUNK = 8192
_SPECTRUM_FLOOR = 1e-12


@dataclass(frozen=True)
class ClassGeometry:
    """What every VARIANCE metric is computed from (float64 tensors on the embeddings' device).

    ``counts`` [C] samples per class, ``multi`` [C] classes with >= 2 samples, ``mu`` [C, D]
    centroids, ``unit_sums`` [C, D] sums of the L2-normalised samples, ``n_nonzero`` [C] non-zero
    samples, ``gram`` [D, D] = z^T z, ``own_sq`` [N] squared distance of each sample to its own
    centroid, ``margin`` [N] distance to the nearest other centroid minus distance to the own one,
    ``inverse`` [N] class index of each sample, ``pair_sq`` squared centroid distances over all
    unordered class pairs.
    """

    n: int
    d: int
    counts: Tensor
    multi: Tensor
    mu: Tensor
    unit_sums: Tensor
    n_nonzero: Tensor
    gram: Tensor
    own_sq: Tensor
    margin: Tensor
    inverse: Tensor
    pair_sq: Tensor
    spectral_skip: int = 0

    @property
    def pair_dist(self) -> Tensor:
        """Euclidean centroid distances over all unordered class pairs."""
        return self.pair_sq.sqrt()

    @property
    def sample_margins(self) -> Tensor:
        """Per-sample margins of the samples in classes with >= 2 samples."""
        return self.margin[self.multi[self.inverse]]


def _pair_sq_dists(a: Tensor, b: Tensor) -> Tensor:
    """Squared Euclidean distances between rows of a [n, D] and b [m, D] (float64, clamped >= 0)."""
    d = (a * a).sum(1, keepdim=True) + (b * b).sum(1).unsqueeze(0) - 2.0 * (a @ b.T)
    return d.clamp_(min=0.0)


@torch.no_grad()
def class_geometry(z: Tensor, y: Tensor, *, spectral_skip: int = 0, chunk_size: int = _CHUNK) -> ClassGeometry:
    """The :class:`ClassGeometry` of embeddings ``z`` [N, D] with labels ``y`` [N] (integers or class names; two passes)."""
    z, y = as_embeddings(z, y)  # NumPy arrays and tensors on any device
    if spectral_skip < 0:
        raise ValueError("spectral_skip must be >= 0")
    if chunk_size < 1:
        raise ValueError("chunk_size must be >= 1")
    n, d = z.shape
    z = z.detach()
    y = y.to(z.device)
    _, inv, counts = torch.unique(y, return_inverse=True, return_counts=True)
    c = counts.numel()
    if c < 2:
        raise ValueError("variance needs at least 2 classes")
    multi = counts >= 2
    if not bool(multi.any()):
        raise ValueError("variance needs at least one class with 2 or more samples")
    dev, f64 = z.device, torch.float64
    # keep the [chunk, C] distance block and the [chunk, D] float64 copy at about 32 MiB
    chunk_size = max(1, min(chunk_size, 4_194_304 // max(c, d)))

    # pass 1: class sums, sums of unit vectors, Gram matrix (all float64)
    sums = torch.zeros(c, d, dtype=f64, device=dev)
    unit_sums = torch.zeros(c, d, dtype=f64, device=dev)
    gram = torch.zeros(d, d, dtype=f64, device=dev)
    for s in range(0, n, chunk_size):
        zc = z[s : s + chunk_size].to(f64)
        ic = inv[s : s + chunk_size]
        sums.index_add_(0, ic, zc)
        unit_sums.index_add_(0, ic, torch.nn.functional.normalize(zc, dim=1))
        gram += zc.T @ zc
    cnt = counts.to(f64)
    mu = sums / cnt.unsqueeze(1)

    # pass 2: per-sample distance to own and nearest other centroid
    own_sq = torch.empty(n, dtype=f64, device=dev)
    margin = torch.empty(n, dtype=f64, device=dev)
    for s in range(0, n, chunk_size):
        zc = z[s : s + chunk_size].to(f64)
        ic = inv[s : s + chunk_size]
        dist = _pair_sq_dists(zc, mu)  # [chunk, C]
        own = (zc - mu[ic]).pow(2).sum(1)  # direct form: exact for the own-centroid term
        dist.scatter_(1, ic.unsqueeze(1), math.inf)
        own_sq[s : s + chunk_size] = own
        margin[s : s + chunk_size] = dist.min(1).values.sqrt() - own.sqrt()

    iu = torch.triu_indices(c, c, offset=1, device=dev)
    n_nonzero = torch.zeros(c, dtype=f64, device=dev).index_add_(0, inv, (z.norm(dim=1) > 0).to(f64))
    return ClassGeometry(n=n, d=d, counts=cnt, multi=multi, mu=mu, unit_sums=unit_sums, n_nonzero=n_nonzero,
                         gram=gram, own_sq=own_sq, margin=margin, inverse=inv,
                         pair_sq=_pair_sq_dists(mu, mu)[iu[0], iu[1]], spectral_skip=spectral_skip)


# --------------------------------------------------------------------------------------------------
# the metrics, one small function each
# --------------------------------------------------------------------------------------------------


def intra_var(g: ClassGeometry) -> float:
    """Mean over classes with >= 2 samples of the mean squared distance to the class centroid (1/n_c)."""
    class_sq = torch.zeros_like(g.counts).index_add_(0, g.inverse, g.own_sq) / g.counts
    return float(class_sq[g.multi].mean())


def inter_var(g: ClassGeometry) -> float:
    """Mean over all unordered class pairs of the squared centroid distance."""
    return float(g.pair_sq.mean())


def centroid_dist_cv(g: ClassGeometry) -> float:
    """Population std / mean of the centroid distances (NaN when every centroid coincides)."""
    cd = g.pair_dist
    mean = cd.mean()
    return float(cd.std(unbiased=False) / mean) if bool(mean > 0) else math.nan


def centroid_norm_mean(g: ClassGeometry) -> float:
    """Mean centroid norm ||mu_c|| over classes: the radial statistic.

    For unit-norm embeddings a class's intra-class variance is ``1 - ||mu_c||^2`` and centroid
    distances scale with ``||mu_c||``: spreading a class (more variance) shortens its centroid, so
    raw separation and raw margins shrink with it. This number shows that coupling.
    """
    return float(g.mu.norm(dim=1).mean())


def _direction_distances(g: ClassGeometry) -> Tensor:
    mu_dir = torch.nn.functional.normalize(g.mu, dim=1)
    c = mu_dir.shape[0]
    iu = torch.triu_indices(c, c, offset=1, device=mu_dir.device)
    return _pair_sq_dists(mu_dir, mu_dir)[iu[0], iu[1]].sqrt()


def dir_centroid_dist_mean(g: ClassGeometry) -> float:
    """Mean distance between L2-normalised centroids: separation of class directions, free of ||mu_c||."""
    return float(_direction_distances(g).mean())


def dir_centroid_dist_cv(g: ClassGeometry) -> float:
    """CV (population std / mean) of the distances between L2-normalised centroids."""
    cd = _direction_distances(g)
    mean = cd.mean()
    return float(cd.std(unbiased=False) / mean) if bool(mean > 0) else math.nan


def margin_rel_mean(g: ClassGeometry) -> float:
    """Mean per-sample margin divided by the RMS radius of the sample's class (scale-free).

    ``m_i / r_{y_i}`` with ``r_c = sqrt(mean_{i in c} ||z_i - mu_c||^2)``, over samples of classes
    with >= 2 samples and a non-zero radius: how many class radii the nearest other centroid lies
    beyond the own one. Unchanged when every embedding is scaled by the same factor.
    """
    radius = (torch.zeros_like(g.counts).index_add_(0, g.inverse, g.own_sq) / g.counts).sqrt()
    keep = g.multi[g.inverse] & (radius[g.inverse] > 0)
    if not bool(keep.any()):
        return math.nan
    return float((g.margin[keep] / radius[g.inverse][keep]).mean())


def numerical_rank(g: ClassGeometry) -> int:
    """Rank of the embedding matrix: eigenvalues of z^T z above its rounding level (numpy's rule)."""
    return int((_gram_eigenvalues(g) > 0).sum())


def _gram_eigenvalues(g: ClassGeometry) -> np.ndarray:
    """Eigenvalues of z^T z, ascending, with those at or below its rounding level set to exactly 0."""
    # a D x D eigenproblem in numpy: no torch thread settings touched (torch's threaded eigvalsh is
    # pathologically slow on 2 CPU threads for D = 128)
    eig = np.linalg.eigvalsh(g.gram.cpu().numpy())
    eig[eig <= eig[-1] * max(g.gram.shape) * np.finfo(np.float64).eps] = 0.0
    return eig


def density(g: ClassGeometry) -> float:
    """Roth et al.'s pi_ratio: mean within-class cosine distance over mean cosine distance of class means.

    The within-class mean uses the linear-time form ``1 - (||sum u||^2 - n_c) / (n_c (n_c - 1))``
    (u the unit vectors; zero rows give u = 0).
    """
    sq_norm_unit = (g.unit_sums * g.unit_sums).sum(1)
    pair_cnt = g.counts * (g.counts - 1)
    intra_cos = 1.0 - (sq_norm_unit - g.n_nonzero)[g.multi] / pair_cnt[g.multi]
    c = g.mu.shape[0]
    iu = torch.triu_indices(c, c, offset=1, device=g.mu.device)
    mu_dir = torch.nn.functional.normalize(g.mu, dim=1)
    inter_cos = 1.0 - (mu_dir @ mu_dir.T)[iu[0], iu[1]]
    return float(intra_cos.mean() / inter_cos.mean().clamp(min=1e-8))


def spectral_decay(g: ClassGeometry) -> float:
    """Roth et al.'s rho: KL(U || S) of the normalised singular values of z (from the Gram matrix).

    NaN when z is rank-deficient (rank < min(N, D)): the zero singular values would only measure
    the 1e-12 floor of :func:`spectral_decay_from_singular_values`, an artefact of the setup (e.g. a
    head whose input has fewer dimensions than its output), not of the loss.
    """
    eig = _gram_eigenvalues(g)
    s = torch.from_numpy(eig).sqrt().flip(0)[: min(g.n, g.d)]
    if bool((s[g.spectral_skip :] == 0).any()):
        return math.nan
    return float(spectral_decay_from_singular_values(s, skip=g.spectral_skip))


def spectral_decay_from_singular_values(s: Tensor, *, skip: int = 0) -> Tensor:
    """KL(U || s / sum(s)) over singular values ``s`` (descending) after dropping the first ``skip``.

    Normalised values below 1e-12 are floored there so that rank-deficient embeddings give a large
    finite value instead of infinity.
    """
    s = s.to(torch.float64)[skip:]
    if s.numel() < 1:
        raise ValueError("no singular values left after spectral_skip")
    total = s.sum()
    if not bool(total > 0):
        raise ValueError("all singular values are zero")
    p = (s / total).clamp(min=_SPECTRUM_FLOOR)
    k = s.numel()
    return (math.log(1.0 / k) - p.log()).sum() / k


@dataclass(frozen=True)
class Metric:
    """One VARIANCE metric: its label (with units) and how it is computed from the geometry.

    ``table``: shown in the VARIANCE table of the reports (counts are not).
    """

    label: str
    compute: Callable[[ClassGeometry], float]
    table: bool = True


METRICS: dict[str, Metric] = {
    "n_samples": Metric("samples [count]", lambda g: float(g.n), table=False),
    "n_classes": Metric("classes [count]", lambda g: float(g.counts.numel()), table=False),
    "n_singleton_classes": Metric("single-sample classes [count]", lambda g: float((~g.multi).sum()), table=False),
    "intra_var": Metric("intra-class variance [dist.²]", intra_var),
    "inter_var": Metric("inter-class variance [dist.²]", inter_var),
    "centroid_dist_mean": Metric("mean centroid distance [dist.]", lambda g: float(g.pair_dist.mean())),
    "centroid_dist_std": Metric("centroid-distance std [dist.]", lambda g: float(g.pair_dist.std(unbiased=False)),
                                table=False),
    "centroid_dist_cv": Metric("centroid-distance CV (unevenness) [std/mean]", centroid_dist_cv),
    "centroid_dist_min": Metric("smallest centroid distance [dist.]", lambda g: float(g.pair_dist.min())),
    "centroid_dist_max": Metric("largest centroid distance [dist.]", lambda g: float(g.pair_dist.max()), table=False),
    "margin_mean": Metric("mean per-sample margin [dist.]", lambda g: float(g.sample_margins.mean())),
    "margin_neg_share": Metric("share of negative margins [fraction of samples]",
                               lambda g: float((g.sample_margins < 0).to(torch.float64).mean())),
    "density": Metric("embedding density (Roth et al.) [ratio]", density),
    "spectral_decay": Metric("spectral decay (Roth et al.) [nats]", spectral_decay),
    "centroid_norm_mean": Metric("mean centroid norm ||mu_c|| [dist.]", centroid_norm_mean),
    "dir_centroid_dist_mean": Metric("mean distance of centroid directions [dist.]", dir_centroid_dist_mean),
    "dir_centroid_dist_cv": Metric("CV of centroid-direction distances [std/mean]", dir_centroid_dist_cv),
    "margin_rel_mean": Metric("mean margin / class radius [radii]", margin_rel_mean),
    "embedding_rank": Metric("numerical rank of the embeddings [dimensions]", lambda g: float(numerical_rank(g)), table=False),
}
"""Every VARIANCE metric by key, in column order (``epochs.csv``)."""

VARIANCE_KEYS: tuple[str, ...] = tuple(METRICS)
"""Keys returned by :func:`variance`, in order (column names in epochs.csv)."""

LABELS: dict[str, str] = {key: m.label for key, m in METRICS.items()}


def variance(z: Tensor, y: Tensor, *, spectral_skip: int = 0, chunk_size: int = _CHUNK) -> dict[str, float]:
    """VARIANCE measures of embeddings ``z`` [N, D] with labels ``y`` [N] (integers or class names).

    ``z`` is used as given (not normalised; only ``density`` looks at directions, as Roth et al.
    define it). Keys (:data:`VARIANCE_KEYS`):

    * ``intra_var``: mean over classes with >= 2 samples of the mean squared Euclidean distance of
      the class's points to the class centroid (1/n_c, not 1/(n_c - 1)).
    * ``inter_var``: mean over all unordered class pairs of the squared centroid distance.
    * ``centroid_dist_{mean,std,cv,min,max}``: statistics of the Euclidean (not squared) distances
      between centroids over all unordered pairs; std is the population std, cv = std / mean.
    * ``margin_mean`` / ``margin_neg_share``: per-sample margin ``m_i = min_{c != y_i} ||z_i - mu_c||
      - ||z_i - mu_{y_i}||`` (Euclidean, centroids include z_i), averaged over samples of classes
      with >= 2 samples; share of those samples with ``m_i < 0``.
    * ``density``: Roth et al. (2020) ``pi_ratio``: mean over classes with >= 2 samples of the mean
      pairwise cosine distance within the class, divided by the mean cosine distance between the
      L2-normalised class means over all class pairs.
    * ``spectral_decay``: Roth et al. (2020) ``rho``: KL(U || S), S the singular values of ``z``
      (uncentred, the min(N, D) largest, the first ``spectral_skip`` dropped) divided by their sum,
      U uniform over the same count. 0 for a perfectly flat spectrum, larger for faster decay.
    * ``n_samples``, ``n_classes``, ``n_singleton_classes``.

    Single-sample classes have no within-class spread: they are left out of ``intra_var``, the
    intra term of ``density`` and the margins, and kept as centroids for everything else.
    Raises ``ValueError`` for empty or mismatched input, NaN/inf, fewer than 2 classes, or no class
    with at least 2 samples.
    """
    geometry = class_geometry(z, y, spectral_skip=spectral_skip, chunk_size=chunk_size)
    return {key: metric.compute(geometry) for key, metric in METRICS.items()}
