"""GREEDINESS: how one training step spreads its update over the batch, from its own backward pass.

:func:`greediness` reads quantities the step already has: the loss output (duck-typed
``LossOutput``: ``per_sample``, ``n_terms``, ``n_active_terms``, ``has_positives``), the gradient of
the loss with respect to its input embeddings ``z`` from the same backward pass, and the ``.grad``
of the head's and the loss's parameters. It returns 0-d detached tensors and never synchronises
with the host, so a training loop can log from device buffers.

Definitions and defaults are stated in PROTOCOL.md ("Diagnostics: GREEDINESS").
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor

from vgcore.metrics.adam_step import mover_mean

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
    "adam_step_norm_mean",
)

#: Default threshold tau of the grad-active rule ``B * ||dL/dz_i|| > tau`` (see PROTOCOL.md).
GRAD_THRESHOLD: float = 1e-3

#: Thresholds for the sensitivity sweep of the grad-active rule (log-spaced, 1e-6 .. 1).
GRAD_THRESHOLD_SWEEP: tuple[float, ...] = tuple(10.0**e for e in range(-6, 1))

LABELS: dict[str, str] = {
    "active_ratio": "active ratio (loss terms) [fraction of batch]",
    "grad_active_ratio": "active ratio (embedding gradients) [fraction of batch]",
    "grad_effective_share": "effective share of moving samples [fraction of batch]",
    "tuple_active_ratio": "active ratio (tuples) [fraction of tuples]",
    "n_terms": "loss terms per batch [count]",
    "n_active_terms": "non-zero loss terms per batch [count]",
    "has_positives": "batch has a positive pair [0/1]",
    "grad_norm": "gradient norm (parameters) [L2]",
    "loss_grad_norm": "gradient norm (loss parameters) [L2]",
    "emb_grad_norm_mean": "mean per-sample gradient norm (tangential, scale-dependent) [L2]",
    "emb_grad_norm_p50": "median per-sample gradient norm (tangential) [L2]",
    "emb_grad_norm_p90": "90th-percentile per-sample gradient norm (tangential) [L2]",
    "adam_step_norm_mean": "per-sample share of Adam's step (scale-free) [fraction of lr]",
}


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


def tangential(emb_grad: Tensor, z: Tensor) -> Tensor:
    """Each row of ``emb_grad`` projected onto the tangent space of the unit sphere at ``z``.

    ``g - (g . u) u`` with ``u = z / ||z||`` (a zero row of ``z`` leaves its gradient as it is):
    the part of dL/dz that turns the embedding's direction, which is all that passes through an
    L2 normalisation and all a cosine retrieval sees. No host sync.
    """
    if emb_grad.shape != z.shape:
        raise ValueError(f"emb_grad {tuple(emb_grad.shape)} and z {tuple(z.shape)} must have the same shape")
    u = torch.nn.functional.normalize(z.detach().to(emb_grad.dtype), dim=1)
    return emb_grad - (emb_grad * u).sum(dim=1, keepdim=True) * u


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
    z: Tensor | None = None,
    grad_threshold: float = GRAD_THRESHOLD,
    step_norms: Tensor | None = None,
) -> dict[str, Tensor]:
    """GREEDINESS measures of one training step, from its own backward pass.

    ``out``: the loss output (uses ``per_sample`` [B], ``n_terms``, ``n_active_terms``,
    ``has_positives``): a vgcore loss's ``loss_fn.last``, or None for a loss that returns only its
    value (a pytorch-metric-learning loss, your own function): the five keys read from it are then
    NaN. ``emb_grad``: dL/dz [B, D] for the loss input ``z`` (capture it with
    ``z.retain_grad()`` before ``backward()`` and read ``z.grad``). ``head_params`` /
    ``loss_params``: parameters whose ``.grad`` is read (``None`` grads are skipped). ``z``: the
    embeddings themselves; when given, every per-sample gradient below is its :func:`tangential`
    part (what the training loop passes: the per-sample norms then compare across losses).

    Keys (:data:`GREEDINESS_KEYS`), all 0-d detached tensors on ``emb_grad``'s device:

    * ``active_ratio``: share of anchors with ``per_sample > 0``.
    * ``grad_active_ratio``: share of samples with ``B * ||dL/dz_i|| > grad_threshold``.
    * ``grad_effective_share``: Kish's effective sample size of the per-sample gradient norms over
      B, ``(sum_i g_i)^2 / (B sum_i g_i^2)`` with ``g_i = ||dL/dz_i||``: 1 when every sample moves
      equally, k/B when k samples move equally and the rest not at all, 0 when nothing moves.
      Threshold-free, so it still ranks losses whose every sample has some gradient.
    * ``tuple_active_ratio``: ``n_active_terms / n_terms`` (NaN when ``n_terms == 0``).
    * ``n_terms``, ``n_active_terms`` (int64) and ``has_positives`` (bool), passed through
      (float NaN, like the other loss-term keys, when ``out`` is None).
    * ``grad_norm``: L2 norm of the gradient over all ``head_params``; ``loss_grad_norm``: same over
      ``loss_params`` (0 when there are none or none has a gradient).
    * ``emb_grad_norm_mean`` / ``_p50`` / ``_p90``: mean and quantiles (linear interpolation) of
      ``||dL/dz_i||`` over grad-active samples (NaN when none is active). These follow the loss's
      scale (its temperature, scale and reduction): compare them across losses with care.
    * ``adam_step_norm_mean``: :func:`~vgcore.metrics.adam_step.mover_mean` of ``step_norms``, each
      sample's share of the optimiser's step (:func:`~vgcore.metrics.adam_step.adam_step_norms`,
      free of the loss's scale); NaN when ``step_norms`` is None (the training step sets it once
      Adam has stepped, NaN at the first step: :func:`~vgcore.metrics.adam_step.step_share`).
    """
    if emb_grad is None:
        raise ValueError("emb_grad is None: call z.retain_grad() before backward() and pass z.grad")
    if emb_grad.ndim != 2:
        raise ValueError(f"emb_grad must be [B, D], got shape {tuple(emb_grad.shape)}")
    b = emb_grad.shape[0]
    if b == 0:
        raise ValueError("empty batch")
    per_sample = None if out is None else out.per_sample.detach()
    if per_sample is not None and (per_sample.ndim != 1 or per_sample.shape[0] != b):
        raise ValueError(
            f"per_sample has shape {tuple(per_sample.shape)} but emb_grad has {b} rows"
        )
    if not grad_threshold >= 0:
        raise ValueError("grad_threshold must be >= 0")
    g = (emb_grad.detach() if z is None else tangential(emb_grad, z)).norm(dim=1)
    fdt = g.dtype
    dev = g.device
    if out is None:  # the loss's own terms and counts are unknown
        active = tuple_ratio = n_terms = n_active = has_positives = torch.full((), math.nan, dtype=fdt, device=dev)
    else:
        active = torch.count_nonzero(per_sample > 0).to(fdt) / b
        n_terms = torch.as_tensor(out.n_terms, device=dev).detach().to(torch.int64)
        n_active = torch.as_tensor(out.n_active_terms, device=dev).detach().to(torch.int64)
        tuple_ratio = torch.where(n_terms > 0, n_active.to(fdt) / n_terms.clamp(min=1).to(fdt), math.nan)
        has_positives = torch.as_tensor(out.has_positives, device=dev).detach().to(torch.bool)
    grad_mask = g * b > grad_threshold
    n_act = torch.count_nonzero(grad_mask)
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
        "has_positives": has_positives,
        "grad_norm": _grad_norm(head_params, g),
        "loss_grad_norm": _grad_norm(loss_params, g),
        "emb_grad_norm_mean": mean,
        "emb_grad_norm_p50": p50,
        "emb_grad_norm_p90": p90,
        "adam_step_norm_mean": (torch.full((), math.nan, dtype=fdt, device=dev) if step_norms is None
                                else mover_mean(step_norms.detach().to(fdt))),
    }


