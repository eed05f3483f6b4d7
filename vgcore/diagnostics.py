"""VARIANCE and GREEDINESS diagnostics (pure functions on tensors).

VARIANCE (:func:`variance`) describes the geometry of a set of embeddings with labels: how spread each
class is, how far apart and how evenly spaced the class centroids are, per-sample margins, and Roth et
al.'s (2020) density and spectral decay. It runs in O(N*D + N*C + C^2*D + N*D^2) time and O(N + C*D +
C^2 + D^2 + chunk*max(C, D)) extra memory (no N x N matrix), with float64 accumulation.

GREEDINESS (:func:`greediness`) describes one training step from quantities the step already has: the
loss output (duck-typed ``LossOutput``: ``per_sample``, ``n_terms``, ``n_active_terms``,
``has_positives``), the gradient of the loss with respect to its input embeddings ``z`` from the same
backward pass, and the ``.grad`` of the head's and the loss's parameters. It returns 0-d detached
tensors and never synchronises with the host, so a training loop can log from device buffers.

Every definition and default is stated in PROTOCOL.md ("Diagnostics: VARIANCE", "Diagnostics:
GREEDINESS").
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "VARIANCE_KEYS",
    "GREEDINESS_KEYS",
    "GRAD_THRESHOLD",
    "GRAD_THRESHOLD_SWEEP",
    "check_embeddings",
    "variance",
    "greediness",
    "grad_active_sweep",
    "convergence_epoch",
    "recall_convergence_epoch",
    "spectral_decay_from_singular_values",
]

#: Keys returned by :func:`variance`, in order (column names in epochs.csv).
VARIANCE_KEYS: tuple[str, ...] = (
    "n_samples",
    "n_classes",
    "n_singleton_classes",
    "intra_var",
    "inter_var",
    "centroid_dist_mean",
    "centroid_dist_std",
    "centroid_dist_cv",
    "centroid_dist_min",
    "centroid_dist_max",
    "margin_mean",
    "margin_neg_share",
    "density",
    "spectral_decay",
)

#: Keys returned by :func:`greediness`, in order (column names in steps.csv).
GREEDINESS_KEYS: tuple[str, ...] = (
    "active_ratio",
    "grad_active_ratio",
    "grad_effective_share",
    "tuple_active_ratio",
    "n_terms",
    "n_active_terms",
    "has_positives",
    "grad_norm",
    "loss_grad_norm",
    "emb_grad_norm_mean",
    "emb_grad_norm_p50",
    "emb_grad_norm_p90",
)

#: Default threshold tau of the grad-active rule ``B * ||dL/dz_i|| > tau`` (see PROTOCOL.md).
GRAD_THRESHOLD: float = 1e-3

#: Thresholds for the sensitivity sweep of the grad-active rule (log-spaced, 1e-6 .. 1).
GRAD_THRESHOLD_SWEEP: tuple[float, ...] = tuple(10.0**e for e in range(-6, 1))

_CHUNK = 8192
_SPECTRUM_FLOOR = 1e-12


# ==================================================================================================
# VARIANCE
# ==================================================================================================


def check_embeddings(z: Tensor, y: Tensor) -> None:
    """Raise a ValueError naming the problem unless z is finite float [N, D] and y integer [N], N, D > 0."""
    if not isinstance(z, Tensor) or not isinstance(y, Tensor):
        raise ValueError("z and y must be torch tensors")
    if z.ndim != 2:
        raise ValueError(f"z must be 2-D [N, D], got shape {tuple(z.shape)}")
    if y.ndim != 1:
        raise ValueError(f"y must be 1-D [N], got shape {tuple(y.shape)}")
    if z.shape[0] == 0 or z.shape[1] == 0:
        raise ValueError(f"z is empty (shape {tuple(z.shape)})")
    if z.shape[0] != y.shape[0]:
        raise ValueError(f"z has {z.shape[0]} rows but y has {y.shape[0]} labels")
    if not z.is_floating_point():
        raise ValueError(f"z must be a floating-point tensor, got {z.dtype}")
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise ValueError(f"y must hold integer class labels, got {y.dtype}")
    if not bool(torch.isfinite(z).all()):
        raise ValueError("z contains NaN or infinite values")


def _pair_sq_dists(a: Tensor, b: Tensor) -> Tensor:
    """Squared Euclidean distances between rows of a [n, D] and b [m, D] (float64, clamped >= 0)."""
    d = (a * a).sum(1, keepdim=True) + (b * b).sum(1).unsqueeze(0) - 2.0 * (a @ b.T)
    return d.clamp_(min=0.0)


@torch.no_grad()
def variance(
    z: Tensor,
    y: Tensor,
    *,
    spectral_skip: int = 0,
    chunk_size: int = _CHUNK,
) -> dict[str, float]:
    """VARIANCE measures of embeddings ``z`` [N, D] with integer labels ``y`` [N].

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
    check_embeddings(z, y)
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
    dev = z.device
    f64 = torch.float64
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

    # intra-class variance over classes with >= 2 samples
    class_sq = torch.zeros(c, dtype=f64, device=dev).index_add_(0, inv, own_sq) / cnt
    intra_var = class_sq[multi].mean()

    # centroid pairs
    iu = torch.triu_indices(c, c, offset=1, device=dev)
    cd_sq = _pair_sq_dists(mu, mu)[iu[0], iu[1]]
    cd = cd_sq.sqrt()
    inter_var = cd_sq.mean()
    cd_mean = cd.mean()
    cd_std = cd.std(unbiased=False)
    cd_cv = cd_std / cd_mean if bool(cd_mean > 0) else torch.tensor(math.nan)

    # margins over samples of classes with >= 2 samples
    in_multi = multi[inv]
    m = margin[in_multi]

    # density (Roth et al. 2020): cosine distances, linear-time within-class form
    sq_norm_unit = (unit_sums * unit_sums).sum(1)
    pair_cnt = cnt * (cnt - 1)
    # mean_{i != j in c} (1 - u_i.u_j) = 1 - (||sum u||^2 - n_c) / (n_c (n_c - 1)); zero rows give u=0
    n_nonzero = torch.zeros(c, dtype=f64, device=dev).index_add_(
        0, inv, (z.norm(dim=1) > 0).to(f64)
    )
    intra_cos = 1.0 - (sq_norm_unit - n_nonzero)[multi] / pair_cnt[multi]
    mu_dir = torch.nn.functional.normalize(mu, dim=1)
    inter_cos = 1.0 - (mu_dir @ mu_dir.T)[iu[0], iu[1]]
    density = intra_cos.mean() / inter_cos.mean().clamp(min=1e-8)

    # spectral decay (Roth et al. 2020) from the Gram matrix
    spectral = _spectral_decay_from_gram(gram, min(n, d), spectral_skip)

    return {
        "n_samples": float(n),
        "n_classes": float(c),
        "n_singleton_classes": float((~multi).sum()),
        "intra_var": float(intra_var),
        "inter_var": float(inter_var),
        "centroid_dist_mean": float(cd_mean),
        "centroid_dist_std": float(cd_std),
        "centroid_dist_cv": float(cd_cv),
        "centroid_dist_min": float(cd.min()),
        "centroid_dist_max": float(cd.max()),
        "margin_mean": float(m.mean()),
        "margin_neg_share": float((m < 0).to(f64).mean()),
        "density": float(density),
        "spectral_decay": float(spectral),
    }


def _spectral_decay_from_gram(gram: Tensor, rank_cap: int, skip: int) -> Tensor:
    # A D x D problem: on the CPU one thread is ~1000x faster than two here (measured with torch
    # 2.14: 1 ms against 0.77 s for D=128 on clustered embeddings; thread start-up pathology).
    threads = torch.get_num_threads()
    if gram.device.type == "cpu":
        torch.set_num_threads(1)
    try:
        eig = torch.linalg.eigvalsh(gram)  # ascending, float64
    finally:
        torch.set_num_threads(threads)
    s = eig.clamp(min=0.0).sqrt().flip(0)[:rank_cap]
    return spectral_decay_from_singular_values(s, skip=skip)


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


# ==================================================================================================
# GREEDINESS
# ==================================================================================================


def _grad_norm(params: Iterable[Any], like: Tensor) -> Tensor:
    """L2 norm of every ``.grad`` of ``params`` jointly (0 when none has one), in ``like``'s dtype and device.

    One fused norm per tensor (``torch.nn.utils.get_total_norm``), no squared copy of the gradients.
    """
    grads = [p.grad.detach() for p in params if getattr(p, "grad", None) is not None]
    if not grads:
        return torch.zeros((), dtype=like.dtype, device=like.device)
    return torch.nn.utils.get_total_norm(grads).to(device=like.device, dtype=like.dtype)


def _masked_quantiles(values: Tensor, mask: Tensor, qs: Sequence[float]) -> list[Tensor]:
    """Linear-interpolation quantiles ``qs`` of ``values[mask]`` (one sort, no host sync); NaN if mask is empty."""
    n = values.numel()
    srt = torch.sort(values.masked_fill(~mask, math.inf)).values
    n_act = torch.count_nonzero(mask)
    last = (n_act - 1).clamp(min=0).to(values.dtype)
    out = []
    for q in qs:
        pos = last * q
        lo = pos.floor().long().clamp(0, n - 1)
        hi = pos.ceil().long().clamp(0, n - 1)
        v_lo = srt.gather(0, lo.view(1)).squeeze(0)  # gather, not srt[lo]: no host sync
        v_hi = srt.gather(0, hi.view(1)).squeeze(0)
        # v_hi - v_lo is finite whenever hi is within the active block
        res = torch.where(hi == lo, v_lo, v_lo + (v_hi - v_lo) * (pos - pos.floor()))
        out.append(torch.where(n_act > 0, res, math.nan))
    return out


def grad_active_sweep(
    emb_grad: Tensor,
    thresholds: Sequence[float] = GRAD_THRESHOLD_SWEEP,
    *,
    relative: bool = False,
) -> Tensor:
    """Share of samples that are grad-active, for each threshold (1-D tensor, same order).

    Default rule (``relative=False``): ``B * ||dL/dz_i|| > tau``. With ``relative=True`` the rule is
    ``||dL/dz_i|| > tau * max_j ||dL/dz_j||`` (a scale-free alternative shown in the sweep).
    No host sync.
    """
    if emb_grad.ndim != 2 or emb_grad.shape[0] == 0:
        raise ValueError(f"emb_grad must be [B, D] with B > 0, got {tuple(emb_grad.shape)}")
    g = emb_grad.detach().norm(dim=1)
    if relative:
        score = g / g.max().clamp(min=torch.finfo(g.dtype).tiny)
    else:
        score = g * g.shape[0]
    # one comparison per Python-float threshold: a thresholds tensor built on the host would be a
    # synchronising host-to-device copy on a GPU
    return torch.stack([(score > float(t)).to(g.dtype).mean() for t in thresholds])


@torch.no_grad()
def greediness(
    out: Any,
    emb_grad: Tensor,
    head_params: Iterable[Any],
    loss_params: Iterable[Any] = (),
    *,
    grad_threshold: float = GRAD_THRESHOLD,
) -> dict[str, Tensor]:
    """GREEDINESS measures of one training step, from its own backward pass.

    ``out``: the loss output (uses ``per_sample`` [B], ``n_terms``, ``n_active_terms``,
    ``has_positives``). ``emb_grad``: dL/dz [B, D] for the loss input ``z`` (capture it with
    ``z.retain_grad()`` before ``backward()`` and read ``z.grad``). ``head_params`` /
    ``loss_params``: parameters whose ``.grad`` is read (``None`` grads are skipped).

    Keys (:data:`GREEDINESS_KEYS`), all 0-d detached tensors on ``emb_grad``'s device:

    * ``active_ratio``: share of anchors with ``per_sample > 0``.
    * ``grad_active_ratio``: share of samples with ``B * ||dL/dz_i|| > grad_threshold``.
    * ``grad_effective_share``: Kish's effective sample size of the per-sample gradient norms over
      B, ``(sum_i g_i)^2 / (B sum_i g_i^2)`` with ``g_i = ||dL/dz_i||``: 1 when every sample moves
      equally, k/B when k samples move equally and the rest not at all, 0 when nothing moves.
      Threshold-free, so it still ranks losses whose every sample has some gradient.
    * ``tuple_active_ratio``: ``n_active_terms / n_terms`` (NaN when ``n_terms == 0``).
    * ``n_terms``, ``n_active_terms`` (int64) and ``has_positives`` (bool), passed through.
    * ``grad_norm``: L2 norm of the gradient over all ``head_params``; ``loss_grad_norm``: same over
      ``loss_params`` (0 when there are none or none has a gradient).
    * ``emb_grad_norm_mean`` / ``_p50`` / ``_p90``: mean and quantiles (linear interpolation) of
      ``||dL/dz_i||`` over grad-active samples (NaN when none is active).
    """
    per_sample = out.per_sample.detach()
    if emb_grad is None:
        raise ValueError("emb_grad is None: call z.retain_grad() before backward() and pass z.grad")
    if emb_grad.ndim != 2:
        raise ValueError(f"emb_grad must be [B, D], got shape {tuple(emb_grad.shape)}")
    b = emb_grad.shape[0]
    if b == 0:
        raise ValueError("empty batch")
    if per_sample.ndim != 1 or per_sample.shape[0] != b:
        raise ValueError(
            f"per_sample has shape {tuple(per_sample.shape)} but emb_grad has {b} rows"
        )
    if not grad_threshold >= 0:
        raise ValueError("grad_threshold must be >= 0")
    g = emb_grad.detach().norm(dim=1)
    fdt = g.dtype
    dev = g.device
    active = torch.count_nonzero(per_sample > 0).to(fdt) / b
    grad_mask = g * b > grad_threshold
    n_act = torch.count_nonzero(grad_mask)
    n_terms = torch.as_tensor(out.n_terms, device=dev).detach().to(torch.int64)
    n_active = torch.as_tensor(out.n_active_terms, device=dev).detach().to(torch.int64)
    tuple_ratio = torch.where(n_terms > 0, n_active.to(fdt) / n_terms.clamp(min=1).to(fdt), math.nan)
    mean = g.where(grad_mask, 0.0).sum() / n_act.to(fdt)
    # scaled by the largest norm, so tiny gradients cannot underflow when squared
    r = g / g.max().clamp(min=torch.finfo(fdt).tiny)
    r_sq = r.square().sum()
    effective = torch.where(r_sq > 0, r.sum().square() / (b * r_sq.clamp(min=1.0)), 0.0)
    p50, p90 = _masked_quantiles(g, grad_mask, (0.5, 0.9))
    return {
        "active_ratio": active,
        "grad_active_ratio": n_act.to(fdt) / b,
        "grad_effective_share": effective,
        "tuple_active_ratio": tuple_ratio,
        "n_terms": n_terms,
        "n_active_terms": n_active,
        "has_positives": torch.as_tensor(out.has_positives, device=dev).detach().to(torch.bool),
        "grad_norm": _grad_norm(head_params, g),
        "loss_grad_norm": _grad_norm(loss_params, g),
        "emb_grad_norm_mean": mean,
        "emb_grad_norm_p50": p50,
        "emb_grad_norm_p90": p90,
    }


# ==================================================================================================
# convergence
# ==================================================================================================


def _as_series(values: Sequence[float] | Tensor, name: str) -> list[float]:
    if isinstance(values, Tensor):
        values = values.detach().cpu().flatten().tolist()
    vals = [float(v) for v in values]
    if len(vals) == 0:
        raise ValueError(f"{name} is empty")
    if not all(math.isfinite(v) for v in vals):
        raise ValueError(f"{name} contains NaN or infinite values")
    return vals


def convergence_epoch(loss_by_epoch: Sequence[float] | Tensor, fraction: float = 0.9) -> int:
    """Index of the first epoch at which the loss has covered ``fraction`` of its total change.

    With ``L`` the series, the answer is the smallest ``e`` with
    ``(L[0] - L[e]) >= fraction * (L[0] - L[-1])`` (for a decreasing loss: it has fallen 90% of the
    way from its first to its final value). The index is 0-based into the series; 0 when the loss
    did not change. Raises ``ValueError`` for an empty or non-finite series or ``fraction``
    outside [0, 1].
    """
    vals = _as_series(loss_by_epoch, "loss_by_epoch")
    if not 0.0 <= fraction <= 1.0:
        raise ValueError("fraction must be in [0, 1]")
    total = vals[0] - vals[-1]
    if total == 0.0:
        return 0
    for e, v in enumerate(vals):
        if (vals[0] - v) / total >= fraction - 1e-12:
            return e
    return len(vals) - 1  # unreachable: the last epoch always qualifies


def recall_convergence_epoch(
    recall_by_epoch: Sequence[float] | Tensor, fraction: float = 0.95
) -> int:
    """Index of the first epoch whose Recall@1 is at least ``fraction`` times its final value.

    0-based into the series. Raises ``ValueError`` for an empty or non-finite series or
    ``fraction`` outside [0, 1].
    """
    vals = _as_series(recall_by_epoch, "recall_by_epoch")
    if not 0.0 <= fraction <= 1.0:
        raise ValueError("fraction must be in [0, 1]")
    target = fraction * vals[-1]
    tol = 1e-12 * abs(vals[-1])
    for e, v in enumerate(vals):
        if v >= target - tol:
            return e
    return len(vals) - 1
