"""Pairwise machinery shared by every loss in :mod:`vgcore.losses` (B x B matrices of one batch).

Everything here works on the full B x B matrix of one batch, is vectorised (no Python loop over
anchors), never calls ``.item()`` and never branches in Python on tensor values, so that a training
step stays free of host syncs. Gradients are safe everywhere: masked-out entries (the diagonal,
coincident points, empty rows) receive an exact zero gradient, never NaN.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

__all__ = [
    "label_masks",
    "same_label",
    "eye_mask",
    "similarity_matrix",
    "gram",
    "distance_matrix",
    "masked_logsumexp",
    "pointwise",
    "safe_sqrt",
    "batch_all_triplet_sums",
    "sorted_negatives",
    "facenet_negatives",
    "within_class_rank",
]


def label_masks(labels: Tensor) -> tuple[Tensor, Tensor]:
    """Positive and negative pair masks, both [B, B] bool.

    ``pos[i, j]`` is True when ``labels[i] == labels[j]`` and ``i != j`` (the diagonal is never a
    pair); ``neg[i, j]`` is True when the labels differ. Pairs are ordered: (i, j) and (j, i) are two
    entries, as in pytorch-metric-learning's ``get_all_pairs_indices``.
    """
    same = same_label(labels)
    return same & ~eye_mask(labels), ~same


def same_label(labels: Tensor) -> Tensor:
    """``labels[i] == labels[j]`` as [B, B] bool, diagonal included."""
    return labels.unsqueeze(0) == labels.unsqueeze(1)


def eye_mask(labels: Tensor) -> Tensor:
    """The [B, B] bool identity on the labels' device."""
    return torch.eye(labels.shape[0], dtype=torch.bool, device=labels.device)


class _Gram(torch.autograd.Function):
    """``z @ z.T`` whose backward is one matmul, ``(g + g.T) @ z``, instead of autograd's two."""

    @staticmethod
    def forward(ctx, z: Tensor) -> Tensor:
        ctx.save_for_backward(z)
        return z @ z.T

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        (z,) = ctx.saved_tensors
        return (grad + grad.T) @ z


def gram(z: Tensor) -> Tensor:
    """Gram matrix ``z @ z.T`` [B, B] with a single-matmul backward."""
    return _Gram.apply(z)


def similarity_matrix(embeddings: Tensor, normalize: bool, scale: float = 1.0, ref: Tensor | None = None) -> Tensor:
    """Dot-product similarity ``scale * z_i . r_j`` [B, M]; cosine similarity when ``normalize``.

    ``ref`` None: the batch against itself (``r = z``, [B, B]), as a Gram matrix whose scale (e.g.
    an inverse temperature) multiplies the [B, D] embeddings by ``sqrt(scale)`` before the product
    rather than the [B, B] result, which saves a B x B pass each way. ``ref`` [M, D]: the batch
    against a reference set (a memory bank, another view).
    """
    z = F.normalize(embeddings, dim=1) if normalize else embeddings
    if ref is None:
        return gram(z if scale == 1.0 else z * math.sqrt(scale))
    r = F.normalize(ref, dim=1) if normalize else ref
    return (z if scale == 1.0 else z * scale) @ r.T


class _SafeSqrt(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        out = torch.sqrt(x.clamp_min(0.0))
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        (out,) = ctx.saved_tensors
        return torch.where(out > 0, grad / (2.0 * out), 0.0)


def safe_sqrt(x: Tensor) -> Tensor:
    """``sqrt(max(x, 0))`` whose gradient is 0 (not inf or NaN) where ``x <= 0``; NaN stays NaN."""
    return _SafeSqrt.apply(x)


class _Pointwise(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, value: Tensor, derivative: Tensor) -> Tensor:
        ctx.save_for_backward(derivative)
        return value

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:
        (derivative,) = ctx.saved_tensors
        return grad * derivative, None, None


def pointwise(x: Tensor, value: Tensor, derivative: Tensor) -> Tensor:
    """``f(x)`` elementwise, given ``value = f(x)`` and ``derivative = f'(x)`` computed without grad.

    A loss evaluates its per-entry terms and their derivatives in one no-grad pass over the
    B x B matrix; autograd then keeps one saved tensor (``derivative``) and the backward is a single
    multiplication, instead of one saved intermediate and one backward pass per elementwise op.
    First-order only.
    """
    return _Pointwise.apply(x, value, derivative)


class _SquaredDistances(torch.autograd.Function):
    """``max(|z_i|^2 + |z_j|^2 - 2 z_i . z_j, 0)`` with a one-matmul backward.

    With ``S = G + G.T`` (G the incoming gradient, zeroed where the clamp was active) the gradient
    of ``sum G * D`` is ``2 (rowsum(S) * z - S @ z)``: one matmul and two B x B passes, instead
    of autograd's chain through the clamp, the subtraction, the broadcast sum and the Gram matrix.
    """

    @staticmethod
    def forward(ctx, z: Tensor) -> Tensor:
        sq_norm = (z * z).sum(dim=1)
        d2 = torch.addmm(sq_norm.unsqueeze(0) + sq_norm.unsqueeze(1), z, z.T, alpha=-2.0)
        d2 = d2.clamp_min_(0.0)
        ctx.save_for_backward(z, d2)
        return d2

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> Tensor:
        z, d2 = ctx.saved_tensors
        # clamp_min passes the gradient where its input was >= 0; a clamped entry is exactly 0
        # after the clamp, and so is a true zero distance: both get 0 (every loss masks them).
        sym = torch.where(d2 > 0, grad, 0.0)
        sym = sym + sym.T
        return torch.addmm(sym.sum(dim=1, keepdim=True) * z, sym, z, alpha=-1.0).mul_(2.0)


def distance_matrix(embeddings: Tensor, normalize: bool, squared: bool = False, ref: Tensor | None = None) -> Tensor:
    """Euclidean distance ``||z_i - r_j||_2`` [B, M] (its square when ``squared``); ``r = z`` when
    ``ref`` is None.

    Computed from the Gram matrix, ``|z_i|^2 + |r_j|^2 - 2 z_i . r_j`` clamped at 0, so it is one
    matmul forward and one backward; the diagonal of the batch against itself is only 0 up to
    rounding (every loss masks it out), and a zero distance has a zero gradient. When ``normalize``
    the rows are L2-normalised first (distances then lie in [0, 2]).
    """
    z = F.normalize(embeddings, dim=1) if normalize else embeddings
    if ref is None:
        d2 = _SquaredDistances.apply(z)
    else:
        r = F.normalize(ref, dim=1) if normalize else ref
        d2 = torch.addmm((z * z).sum(dim=1, keepdim=True) + (r * r).sum(dim=1), z, r.T, alpha=-2.0).clamp_min(0.0)
    return d2 if squared else safe_sqrt(d2)


class _MaskedLogSumExp(torch.autograd.Function):
    """Row-wise log-sum-exp over the entries of a mask; backward ``grad * softmax``.

    Saves only the masked softmax (one B x B tensor) instead of autograd's chain of intermediates.
    """

    @staticmethod
    def forward(ctx, x: Tensor, mask: Tensor) -> Tensor:
        if x.shape[1] == 0:  # nothing to sum over (an empty batch or reference set): every row is -inf
            ctx.save_for_backward(x.new_zeros(x.shape))
            return x.new_full(x.shape[:1], float("-inf"))
        prob = x.masked_fill(~mask, float("-inf"))
        shift = prob.amax(dim=1, keepdim=True)
        shift = torch.where(torch.isfinite(shift), shift, 0.0)
        prob = prob.sub_(shift).exp_()
        # a non-empty row has total >= 1 (its max contributes exp(0)); an empty row has total 0
        total = prob.sum(dim=1, keepdim=True)
        nonempty = total > 0
        safe_total = torch.where(nonempty, total, 1.0)
        lse = torch.where(nonempty, torch.log(safe_total) + shift, float("-inf"))
        ctx.save_for_backward(prob.div_(safe_total))
        return lse.squeeze(1)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        (prob,) = ctx.saved_tensors
        return prob * grad.unsqueeze(1), None


def masked_logsumexp(x: Tensor, mask: Tensor) -> Tensor:
    """``log(sum_{j: mask[i, j]} exp(x[i, j]))`` for each row i of a 2-D ``x``; ``-inf`` if empty.

    Shifted by the maximum over the masked entries only, so no term underflows however far the
    masked-out entries lie (e.g. a small temperature). The gradient is the softmax over the masked
    entries (0 elsewhere); unlike ``torch.logsumexp`` on a row of ``-inf``, an empty row gets a
    zero gradient, not NaN, so a batch without negatives (or positives) still backpropagates.
    First-order only (the backward is not itself differentiable).
    """
    return _MaskedLogSumExp.apply(x, mask)


def within_class_rank(labels: Tensor) -> tuple[Tensor, Tensor]:
    """For each sample, how many earlier samples (lower batch index) share its label, and the batch
    index of the next sample of its class in batch order (-1 for the class's last): both [B] int64.

    Sohn's N-pair reads its pairs from these (an anchor and its next sample). One stable sort of the labels, O(B log B), instead of B x B label masks;
    static shapes, no sync.
    """
    n = labels.shape[0]
    sorted_labels, order = torch.sort(labels, stable=True)  # each class a run, in batch order
    start = torch.searchsorted(sorted_labels, sorted_labels)  # where each sample's run begins
    position = torch.arange(n, device=labels.device)
    after = (position + 1).clamp(max=max(n - 1, 0))
    has_next = (position + 1 < n) & (sorted_labels[after] == sorted_labels)
    rank = torch.empty_like(position).scatter_(0, order, position - start)
    following = torch.empty_like(position).scatter_(0, order, torch.where(has_next, order[after], -1))
    return rank, following


def sorted_negatives(dist: Tensor, neg: Tensor) -> Tensor:
    """Each row's negative distances in increasing order, ``inf`` after them: [B, M].

    A stable sort, so tied negatives keep their batch order; differentiable in ``dist``.
    """
    return torch.sort(dist.masked_fill(~neg, float("inf")), dim=1, stable=True).values


def facenet_negatives(dist: Tensor, pos: Tensor, neg: Tensor) -> tuple[Tensor, Tensor]:
    """FaceNet's one semi-hard negative per anchor-positive pair, as TF-Addons' ``triplet_semihard_loss``
    picks it: ``(D, valid)``, both [B, M].

        D[a, p] = min {dist[a, n] : n in neg(a), dist[a, n] > dist[a, p]}
                  or, if no negative is farther than dist[a, p], max {dist[a, n] : n in neg(a)}

    ``valid = pos & (a has a negative)``; ``D`` is 0 elsewhere. One stable sort per anchor and a
    ``searchsorted`` (``side="right"``: a negative at exactly dist[a, p] is not farther); the
    gradient reaches the chosen negative's distance only (among tied negatives, the first in
    batch order for the min, the last for the max). O(B^2 log B), no sync.
    """
    sorted_neg = sorted_negatives(dist, neg)
    n_neg = torch.count_nonzero(neg, dim=1).unsqueeze(1)
    farther = torch.searchsorted(sorted_neg.detach(), dist.detach().contiguous(), side="right")
    index = torch.where(farther < n_neg, farther, (n_neg - 1).clamp_min(0))
    valid = pos & (n_neg > 0)
    return torch.where(valid, sorted_neg.gather(1, index), 0.0), valid


def batch_all_triplet_sums(
    dist: Tensor, pos: Tensor, neg: Tensor, margin: float, semihard: bool = False
) -> tuple[Tensor, Tensor]:
    """Exact batch-all triplet hinge sums without the B x B x B tensor.

    For anchor ``a`` and positive ``p`` this returns

        H[a, p] = sum_{n in neg(a)} max(0, dist[a, p] + margin - dist[a, n])
        K[a, p] = #{n in neg(a) : dist[a, n] < dist[a, p] + margin}   (active triplets)

    Each anchor's negative distances are sorted once; with prefix sums S, and
    ``k = searchsorted(sorted, t)`` for the threshold ``t = dist[a, p] + margin``, the sum of the
    positive hinges is ``k * t - S[k]``. Entries outside ``pos`` are 0. Autograd flows through
    ``t`` (weight ``k``) and through the gathered prefix sums (the sorted distances), which is the
    exact gradient of the naive form. Cost O(B^2 log B) time and O(B^2) memory.

    ``semihard=True`` keeps only the semi-hard negatives, ``dist[a, p] < dist[a, n] < dist[a, p] +
    margin`` (FaceNet section 3.2; PML's TripletMarginMiner "semihard"): with ``j`` the count of
    negatives at or below ``dist[a, p]``, the sums run over the sorted negatives ``j .. k - 1``.
    """
    batch = dist.shape[0]
    sorted_neg = sorted_negatives(dist, neg)
    finite = torch.isfinite(sorted_neg)
    prefix = torch.cumsum(torch.where(finite, sorted_neg, 0.0), dim=1)
    prefix = torch.cat([prefix.new_zeros(batch, 1), prefix], dim=1)
    threshold = dist + margin
    # side="left": count of negatives strictly below the threshold (a tie has a zero hinge).
    count = torch.searchsorted(sorted_neg.detach(), threshold.detach(), side="left")
    count = torch.where(pos, count, 0)
    if not semihard:
        hinge = count.to(dist.dtype) * threshold - prefix.gather(1, count)
        return torch.where(pos, hinge, 0.0), count
    # side="right": negatives at or below d(a, p) are not semi-hard
    easy_end = torch.searchsorted(sorted_neg.detach(), dist.detach(), side="right")
    start = torch.where(pos, torch.minimum(easy_end, count), 0)
    hinge = (count - start).to(dist.dtype) * threshold - (prefix.gather(1, count) - prefix.gather(1, start))
    return torch.where(pos, hinge, 0.0), count - start
