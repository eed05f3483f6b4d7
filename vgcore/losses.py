"""The seven metric-learning losses compared in the paper, one registry and one output type.

    >>> loss_fn = make_loss("triplet")
    >>> out = loss_fn(embeddings, labels)        # embeddings [B, D] float, labels [B] int64
    >>> out.loss.backward()
    >>> active_ratio = (out.per_sample > 0).float().mean()

Every loss returns a :class:`LossOutput`. Its statistics are tensors on the embeddings' device:
the forward pass never calls ``.item()`` and never branches in Python on tensor values, so a
training step stays free of host syncs (ready for CUDA-graph capture). The one exception is input
validation (shapes, NaN/inf, label range), which must look at values: it is on by default and is
switched off with ``check_inputs=False`` (keyword of every loss and of :func:`make_loss`) or by
setting the ``check_inputs`` attribute of a loss module.

All losses are computed on the B x B matrix of one batch with the shared machinery of
:mod:`vgcore.pairwise`. Formulas, defaults and their sources, and the mapping to
pytorch-metric-learning (PML) are in PROTOCOL.md, section "Losses".
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vgcore.pairwise import (
    batch_all_triplet_sums,
    distance_matrix,
    eye_mask,
    label_masks,
    masked_logsumexp,
    pointwise,
    safe_sqrt,
    same_label,
    similarity_matrix,
    within_class_rank,
)

__all__ = [
    "LOSSES",
    "LossOutput",
    "make_loss",
    "validate_inputs",
    "ContrastiveLoss",
    "TripletLoss",
    "NPairLoss",
    "InfoNCELoss",
    "ArcFaceLoss",
    "SupConLoss",
    "CenterContrastiveLoss",
]

LOSSES: tuple[str, ...] = ("contrastive", "triplet", "npair", "infonce", "arcface", "scl", "ccl")

_REDUCTIONS = ("mean", "nonzero_mean")
# softplus(x) returns x above this threshold; log1p(exp(-40)) is below float64 resolution at 40.
_SOFTPLUS_EXACT = 40.0


@dataclass(frozen=True)
class LossOutput:
    """What every loss returns.

    loss:           0-d tensor, the scalar to backpropagate.
    per_sample:     [B], each anchor's own loss term (see each loss for its exact meaning);
                    ``per_sample > 0`` means "this sample takes part in the update".
    n_terms:        0-d int64, number of valid tuples (pairs, triplets, positive pairs, samples).
    n_active_terms: 0-d int64, those tuples whose loss term is non-zero.
    has_positives:  0-d bool, False when the batch had no usable positive pair; the loss is then
                    a zero that still backpropagates (contrastive excepted: its negative pairs
                    still count, see :class:`ContrastiveLoss`).
    """

    loss: Tensor
    per_sample: Tensor
    n_terms: Tensor
    n_active_terms: Tensor
    has_positives: Tensor


def validate_inputs(
    embeddings: Tensor,
    labels: Tensor,
    num_classes: int | None = None,
    embedding_dim: int | None = None,
) -> None:
    """Raise a ``ValueError`` that names the fix when a batch is malformed.

    Checks: embeddings a 2-D floating tensor, labels a 1-D integer tensor of the same length,
    all embeddings finite, and (proxy losses) the embedding width and ``0 <= label < num_classes``.
    The value checks synchronise with the device; pass ``check_inputs=False`` to a loss to skip them.
    """
    if not isinstance(embeddings, Tensor) or not isinstance(labels, Tensor):
        raise ValueError("embeddings and labels must be torch.Tensor objects")
    if embeddings.dim() != 2:
        raise ValueError(
            f"embeddings must be 2-D [batch, dim], got shape {tuple(embeddings.shape)}; "
            "flatten extra dimensions with embeddings.flatten(1)"
        )
    if not embeddings.is_floating_point():
        raise ValueError(
            f"embeddings must be floating point, got {embeddings.dtype}; call embeddings.float()"
        )
    if labels.dim() != 1 or labels.shape[0] != embeddings.shape[0]:
        raise ValueError(
            f"labels must be 1-D with one label per embedding row: got labels shape "
            f"{tuple(labels.shape)} for embeddings shape {tuple(embeddings.shape)}; "
            "pass labels.view(-1) of length batch"
        )
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(
            f"labels must be an integer tensor, got {labels.dtype}; call labels.long()"
        )
    if embedding_dim is not None and embeddings.shape[1] != embedding_dim:
        raise ValueError(
            f"embeddings have dimension {embeddings.shape[1]} but the loss was built with "
            f"embedding_dim={embedding_dim}; rebuild it with make_loss(..., "
            f"embedding_dim={embeddings.shape[1]})"
        )
    if not bool(torch.isfinite(embeddings).all()):
        raise ValueError(
            "embeddings contain NaN or inf; check the model output (learning rate, "
            "division by a zero norm) before the loss"
        )
    if num_classes is not None and labels.numel() > 0:
        low, high = int(labels.min()), int(labels.max())
        if low < 0 or high >= num_classes:
            raise ValueError(
                f"labels must lie in [0, num_classes={num_classes}), got values in [{low}, {high}]; "
                "remap labels to 0..num_classes-1 or build the loss with a larger num_classes"
            )


def _count(mask: Tensor, dim: int | None = None) -> Tensor:
    """Number of True entries (along ``dim``) as int64, without a host sync.

    ``count_nonzero`` rather than ``sum``: summing a B x B bool mask first copies it to int64.
    """
    return torch.count_nonzero(mask, dim=dim)


def _safe_div(total: Tensor, count: Tensor) -> Tensor:
    """``total / max(count, 1)``: a mean over zero terms is a zero that keeps the graph."""
    return total / count.clamp_min(1).to(total.dtype)


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


def _check_positive(name: str, value: float) -> None:
    if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")


def _check_nonnegative(name: str, value: float) -> None:
    if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be a non-negative finite number, got {value!r}")


class _MetricLoss(nn.Module):
    """Common front door: input validation, then ``_compute``."""

    def __init__(self, check_inputs: bool = True) -> None:
        super().__init__()
        self.check_inputs = check_inputs

    def _validate(self, embeddings: Tensor, labels: Tensor) -> None:
        validate_inputs(embeddings, labels)

    def forward(self, embeddings: Tensor, labels: Tensor) -> LossOutput:
        if self.check_inputs:
            self._validate(embeddings, labels)
        return self._compute(embeddings, labels)

    def _compute(self, embeddings: Tensor, labels: Tensor) -> LossOutput:  # pragma: no cover
        raise NotImplementedError


# --------------------------------------------------------------------------------------------
# Tuple losses (hinges on Euclidean distances)
# --------------------------------------------------------------------------------------------


class ContrastiveLoss(_MetricLoss):
    """Contrastive loss (Hadsell, Chopra, LeCun 2006) over all ordered pairs of the batch.

    With ``d`` the Euclidean distance, for a positive pair ``L = 1/2 [d - pos_margin]_+^2`` and for
    a negative pair ``L = 1/2 [margin - d]_+^2`` (``squared=True``, the paper's Eq. 4 with
    ``pos_margin = 0``). ``squared=False`` gives PML's un-squared hinges ``[d - pos_margin]_+`` and
    ``[margin - d]_+`` (no 1/2).

    Args:
        margin: negative-pair margin ``m`` in distance units (default 1.0, PML's ``neg_margin``;
            distances of unit vectors lie in [0, 2], a random pair in 128-d sits near sqrt(2)).
        pos_margin: positive-pair margin (default 0.0, the paper; PML's ``pos_margin``).
        squared: square the hinges and halve them (default True, the paper).
        normalize: L2-normalise embeddings inside the loss (default False: the paper uses the raw
            Euclidean distance; the head already normalises).
        reduction: "mean" (default) averages over all B(B-1) ordered pairs; "nonzero_mean" is
            PML's AvgNonZeroReducer: the mean of the non-zero positive-pair terms plus the mean of
            the non-zero negative-pair terms.
        check_inputs: validate inputs (syncs; see module docstring).

    ``per_sample[i]`` is the mean term over the B-1 pairs anchored at i. ``n_terms`` counts ordered
    pairs, ``n_active_terms`` those with a non-zero term. A batch with no positive pair still has
    its negative-pair terms (the loss is not forced to zero), ``has_positives`` is then False.
    """

    def __init__(
        self,
        margin: float = 1.0,
        pos_margin: float = 0.0,
        squared: bool = True,
        normalize: bool = False,
        reduction: str = "mean",
        check_inputs: bool = True,
    ) -> None:
        super().__init__(check_inputs)
        _check_nonnegative("margin", margin)
        _check_nonnegative("pos_margin", pos_margin)
        _check_choice("reduction", reduction, _REDUCTIONS)
        self.margin = float(margin)
        self.pos_margin = float(pos_margin)
        self.squared = squared
        self.normalize = normalize
        self.reduction = reduction

    def _compute(self, embeddings: Tensor, labels: Tensor) -> LossOutput:
        same, eye = same_label(labels), eye_mask(labels)
        d2 = distance_matrix(embeddings, normalize=self.normalize, squared=True)
        term = pointwise(d2, *self._terms(d2.detach(), same, eye))
        half = 0.5 if self.squared else 1.0
        batch = labels.shape[0]
        n_terms = torch.full((), batch * (batch - 1), dtype=torch.int64, device=labels.device)
        active = term > 0
        pos = same & ~eye
        if self.reduction == "mean":
            loss = half * _safe_div(term.sum(), n_terms)
        else:
            pos_sum = torch.where(pos, term, 0.0).sum()
            loss = _safe_div(pos_sum, _count(pos & active))
            loss = loss + _safe_div(term.sum() - pos_sum, _count(active & ~same))
            loss = half * loss
        return LossOutput(
            loss=loss,
            per_sample=half * term.sum(dim=1) / max(batch - 1, 1),
            n_terms=n_terms,
            n_active_terms=_count(active),
            has_positives=pos.any(),
        )

    @torch.no_grad()
    def _terms(self, d2: Tensor, same: Tensor, eye: Tensor) -> tuple[Tensor, Tensor]:
        """Each pair's term as a function of the squared distance ``d2``, and its slope in ``d2``.

        The hinge is ``h = [d - pos_margin]_+`` on a positive pair and ``[margin - d]_+`` on a
        negative one, so ``dh/dd2 = +-1 / (2d)`` where it is active. The slope is 0 where ``d = 0``
        (the diagonal, coincident points), where the gradient of ``d`` is undefined.
        """
        dist = d2.sqrt()
        inv = torch.where(dist > 0, dist.reciprocal(), 0.0).masked_fill_(eye, 0.0)
        hinge = torch.where(same, dist - self.pos_margin, self.margin - dist).clamp_min_(0.0)
        hinge.masked_fill_(eye, 0.0)
        inv.mul_(torch.where(same, 1.0, -1.0))  # the sign of dh/dd
        if self.squared:  # d/dd2 h^2 = 2 h dh/dd2 = +-h / d
            value = hinge.square()
            return value, inv.mul_(hinge)
        return hinge, inv.mul_(0.5).masked_fill_(hinge == 0, 0.0)


class TripletLoss(_MetricLoss):
    """Triplet loss (Schroff, Kalenichenko, Philbin 2015, FaceNet Eq. 2), batch-all, no mining.

    Over every valid triplet (a, p, n) of the batch (label a = label p != label n, a != p):
    ``L = [d(a, p) - d(a, n) + margin]_+`` where ``d`` is the squared Euclidean distance between
    embeddings on the unit hypersphere (``squared=True``, ``normalize=True``: FaceNet's setting).
    Computed exactly without the B^3 tensor (:func:`vgcore.pairwise.batch_all_triplet_sums`).

    Args:
        margin: alpha, in units of ``d`` (default 0.2, FaceNet's value for squared distances).
        squared: use squared Euclidean distances (default True, FaceNet); False gives plain
            Euclidean distances as in PML's TripletMarginLoss.
        normalize: L2-normalise embeddings inside the loss (default True, FaceNet's ||f|| = 1).
        reduction: "mean" (default) divides the hinge sum by the number of valid triplets (the
            paper's sum up to a constant); "nonzero_mean" divides by the number of non-zero
            triplets (PML's AvgNonZeroReducer).
        check_inputs: validate inputs (syncs).

    ``per_sample[a]`` is the mean hinge over the triplets anchored at a (0 if none).
    ``n_terms`` counts valid triplets, ``n_active_terms`` those with a positive hinge.
    ``has_positives`` is False when no valid triplet exists.
    """

    def __init__(
        self,
        margin: float = 0.2,
        squared: bool = True,
        normalize: bool = True,
        reduction: str = "mean",
        check_inputs: bool = True,
    ) -> None:
        super().__init__(check_inputs)
        _check_nonnegative("margin", margin)
        _check_choice("reduction", reduction, _REDUCTIONS)
        self.margin = float(margin)
        self.squared = squared
        self.normalize = normalize
        self.reduction = reduction

    def _compute(self, embeddings: Tensor, labels: Tensor) -> LossOutput:
        pos, neg = label_masks(labels)
        dist = distance_matrix(embeddings, normalize=self.normalize, squared=self.squared)
        hinge, active = batch_all_triplet_sums(dist, pos, neg, self.margin)
        triplets_per_anchor = _count(pos, dim=1) * _count(neg, dim=1)
        n_terms = triplets_per_anchor.sum()
        n_active = active.sum()
        total = hinge.sum()
        loss = _safe_div(total, n_terms if self.reduction == "mean" else n_active)
        per_sample = hinge.sum(dim=1) / triplets_per_anchor.clamp_min(1).to(hinge.dtype)
        return LossOutput(
            loss=loss,
            per_sample=per_sample,
            n_terms=n_terms,
            n_active_terms=n_active,
            has_positives=n_terms > 0,
        )


# --------------------------------------------------------------------------------------------
# Softmax losses on pairs
# --------------------------------------------------------------------------------------------


class _PairSoftmaxLoss(_MetricLoss):
    """Shared body of N-pair and InfoNCE: one softmax per ordered positive pair (a, p).

    ``term(a, p) = -log( e^{s_ap} / (e^{s_ap} + sum_{n: y_n != y_a} e^{s_an}) )
                 = log(1 + sum_n e^{s_an - s_ap})``, with ``s = similarity / temperature``.
    The loss is the mean over positive pairs; ``per_sample[a]`` the mean over a's positive pairs.
    """

    def __init__(self, temperature: float, normalize: bool, check_inputs: bool) -> None:
        super().__init__(check_inputs)
        _check_positive("temperature", temperature)
        self.temperature = float(temperature)
        self.normalize = normalize

    def _logits(self, embeddings: Tensor) -> Tensor:
        return similarity_matrix(embeddings, self.normalize, scale=1.0 / self.temperature)

    def _all_pairs(self, embeddings: Tensor, labels: Tensor) -> LossOutput:
        same, eye = same_label(labels), eye_mask(labels)
        logits = self._logits(embeddings)
        pos = same & ~eye
        # term(a, p) = softplus(x) with x = lse_neg(a) - s_ap; an anchor without negatives has
        # lse = -inf, so its terms are exactly 0 with a zero gradient.
        x = masked_logsumexp(logits, ~same).unsqueeze(1) - logits
        with torch.no_grad():
            value = torch.where(pos, F.softplus(x, threshold=_SOFTPLUS_EXACT), 0.0)
            slope = torch.where(pos, torch.sigmoid(x), 0.0)
        term = pointwise(x, value, slope)
        n_terms = _count(pos)
        return LossOutput(
            loss=_safe_div(term.sum(), n_terms),
            per_sample=_safe_div(term.sum(dim=1), _count(pos, dim=1)),
            n_terms=n_terms,
            n_active_terms=_count(value > 0),
            has_positives=n_terms > 0,
        )


class NPairLoss(_PairSoftmaxLoss):
    """Multi-class N-pair loss (Sohn 2016, Eq. 6 without the embedding L2 penalty).

    ``term(a, p) = log(1 + sum_{n} exp(f_a . f_n - f_a . f_p))`` on raw dot products.

    Args:
        pairs: "all" (default) uses every ordered positive pair (a, p) of the batch, with every
            sample of another class as a negative; it uses the whole batch and is invariant to
            batch order. "one_per_class" is Sohn's construction exactly as PML's NPairsLoss builds
            it: per class with >= 2 samples, anchor = its first sample in batch order, positive =
            its second; the negatives of an anchor are the positives of the other classes; the
            loss is the mean over the selected anchors (depends on batch order).
        temperature: divides the dot products (default 1.0: none, as in the paper).
        normalize: L2-normalise embeddings inside the loss (default False, the paper's raw dot
            product; PML's default DotProductSimilarity normalises).
        check_inputs: validate inputs (syncs).

    ``per_sample[a]``: mean term over a's positive pairs ("all"), or its single term if a is a
    selected anchor and 0 otherwise ("one_per_class"). ``n_terms``: positive pairs (or selected
    anchors); ``n_active_terms``: those with a non-zero term, i.e. almost all of them (a softmax
    term vanishes only in floating-point underflow).
    """

    def __init__(
        self,
        pairs: str = "all",
        temperature: float = 1.0,
        normalize: bool = False,
        check_inputs: bool = True,
    ) -> None:
        super().__init__(temperature, normalize, check_inputs)
        _check_choice("pairs", pairs, ("all", "one_per_class"))
        self.pairs = pairs

    def _compute(self, embeddings: Tensor, labels: Tensor) -> LossOutput:
        if self.pairs == "all":
            return self._all_pairs(embeddings, labels)
        return self._one_pair_per_class(embeddings, labels)

    def _one_pair_per_class(self, embeddings: Tensor, labels: Tensor) -> LossOutput:
        """Sohn's P x P problem: row k is the anchor of class k, column k its positive."""
        rank = within_class_rank(labels)
        # the first and the second sample of each class that has two, paired by sorting on label
        # (nonzero() is this mode's one host sync: the number of classes P sets the shapes)
        anchor = (rank == 0).nonzero().squeeze(1)
        second = (rank == 1).nonzero().squeeze(1)
        anchor = anchor[torch.isin(labels[anchor], labels[second])]
        anchor = anchor[torch.argsort(labels[anchor])]
        second = second[torch.argsort(labels[second])]
        z = F.normalize(embeddings, dim=1) if self.normalize else embeddings
        logits = (z[anchor] @ z[second].T) / self.temperature
        targets = torch.arange(anchor.shape[0], device=labels.device)
        term = F.cross_entropy(logits, targets, reduction="none")
        n_terms = torch.full((), anchor.shape[0], dtype=torch.int64, device=labels.device)
        return LossOutput(
            loss=_safe_div(term.sum(), n_terms),
            per_sample=term.new_zeros(labels.shape[0]).index_put((anchor,), term),
            n_terms=n_terms,
            n_active_terms=_count(term > 0),
            has_positives=n_terms > 0,
        )


class InfoNCELoss(_PairSoftmaxLoss):
    """Supervised InfoNCE / NT-Xent with labels (Oord et al. 2018; Chen et al. 2020, SimCLR).

    Every ordered positive pair (a, p) is one softmax term against all of a's negatives:
    ``term(a, p) = -log( e^{cos_ap / T} / (e^{cos_ap / T} + sum_{n: y_n != y_a} e^{cos_an / T}) )``.
    This is PML's NTXentLoss (mean over positive pairs), computed in O(B^2) memory.

    Args:
        temperature: T (default 0.1: SimCLR's best value with cosine similarity, and Khosla's,
            so InfoNCE and SCL differ only in structure; PML's default is 0.07).
        normalize: cosine similarity (default True, the definition; always normalises).
        check_inputs: validate inputs (syncs).

    ``per_sample[a]``: mean term over a's positive pairs (0 when a has none); positive whenever a
    has a positive and a negative. ``n_terms``: positive pairs; ``n_active_terms``: those with a
    non-zero term (almost all; see GREEDINESS in PROTOCOL.md for the gradient-based rule).
    """

    def __init__(
        self, temperature: float = 0.1, normalize: bool = True, check_inputs: bool = True
    ) -> None:
        super().__init__(temperature, normalize, check_inputs)

    def _compute(self, embeddings: Tensor, labels: Tensor) -> LossOutput:
        return self._all_pairs(embeddings, labels)


class SupConLoss(_MetricLoss):
    """Supervised contrastive loss (Khosla et al. 2020, Eq. 2, L^sup_out).

    For anchor i with positives P(i) (same label, != i) and all others A(i) = {j != i}:
    ``L_i = -1/|P(i)| sum_{p in P(i)} log( e^{cos_ip / T} / sum_{a in A(i)} e^{cos_ia / T} )``.
    The loss is the mean of L_i over anchors with at least one positive.

    Args:
        temperature: T (default 0.1, Khosla et al.; PML's SupConLoss default too).
        normalize: cosine similarity (default True, the paper normalises to the unit sphere).
        check_inputs: validate inputs (syncs).

    ``per_sample[i]`` = L_i (0 for an anchor without positives). ``n_terms``: positive pairs (one
    log-probability each); ``n_active_terms``: positive pairs with ``-log p > 0`` (all of them unless
    an anchor's only other sample is its positive).
    """

    def __init__(
        self, temperature: float = 0.1, normalize: bool = True, check_inputs: bool = True
    ) -> None:
        super().__init__(check_inputs)
        _check_positive("temperature", temperature)
        self.temperature = float(temperature)
        self.normalize = normalize

    def _compute(self, embeddings: Tensor, labels: Tensor) -> LossOutput:
        same, eye = same_label(labels), eye_mask(labels)
        logits = similarity_matrix(embeddings, self.normalize, scale=1.0 / self.temperature)
        lse_all = masked_logsumexp(logits, ~eye)
        pos = same & ~eye
        n_pos = _count(pos, dim=1)
        pos_logits = torch.where(pos, logits, 0.0)
        per_sample = torch.where(n_pos > 0, lse_all - _safe_div(pos_logits.sum(dim=1), n_pos), 0.0)
        anchors = n_pos > 0
        return LossOutput(
            loss=_safe_div(per_sample.sum(), _count(anchors)),
            per_sample=per_sample,
            n_terms=_count(pos),
            n_active_terms=_count(pos & (logits < lse_all.unsqueeze(1))),
            has_positives=anchors.any(),
        )


# --------------------------------------------------------------------------------------------
# Proxy losses (own their class weights / centers)
# --------------------------------------------------------------------------------------------


class _ProxyLoss(_MetricLoss):
    """A loss with one learnable (or running) vector per class, stored in ``self.proxies``."""

    def __init__(self, num_classes: int, embedding_dim: int, check_inputs: bool) -> None:
        super().__init__(check_inputs)
        for name, value in (("num_classes", num_classes), ("embedding_dim", embedding_dim)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        self.num_classes = num_classes
        self.embedding_dim = embedding_dim

    def _validate(self, embeddings: Tensor, labels: Tensor) -> None:
        validate_inputs(embeddings, labels, self.num_classes, self.embedding_dim)

    def _cosines(self, embeddings: Tensor, proxies: Tensor) -> Tensor:
        """Cosine between each embedding and each class proxy: [B, C]."""
        z = F.normalize(embeddings, dim=1)
        w = F.normalize(proxies.to(embeddings.dtype), dim=1)
        return z @ w.T

    @staticmethod
    def _softmax_output(per_sample: Tensor) -> LossOutput:
        n = per_sample.shape[0]
        n_terms = torch.full((), n, dtype=torch.int64, device=per_sample.device)
        return LossOutput(
            loss=_safe_div(per_sample.sum(), n_terms),
            per_sample=per_sample,
            n_terms=n_terms,
            n_active_terms=_count(per_sample > 0),
            has_positives=n_terms > 0,
        )


class ArcFaceLoss(_ProxyLoss):
    """ArcFace, additive angular margin loss (Deng et al. 2019, Eq. 3).

    With ``theta_j`` the angle between the L2-normalised embedding and the L2-normalised class
    weight ``W_j``: logits ``s cos(theta_y + m)`` for the true class and ``s cos(theta_j)`` for the
    others, then cross-entropy. Where ``theta_y > pi - m`` (cos(theta + m) would stop decreasing)
    the target logit is ``s (cos theta_y - m sin m)``, the rule of the authors' code and of PML.

    Args:
        num_classes, embedding_dim: shape of the learnable class weights ``weight`` [C, D]
            (initialised N(0, 1), as PML; only their direction matters).
        scale: s (default 64.0, Deng et al.).
        margin: m in radians (default 0.5, Deng et al.; PML's ``margin`` is in degrees: 28.6).
        check_inputs: validate inputs (syncs).

    Always normalises embeddings and weights. ``per_sample`` is each sample's cross-entropy,
    positive except in floating-point underflow; ``n_terms`` = B, ``n_active_terms`` = samples
    with a non-zero term. ``loss.parameters()`` yields ``weight``: give it to the optimizer.
    """

    def __init__(
        self,
        num_classes: int,
        embedding_dim: int,
        scale: float = 64.0,
        margin: float = 0.5,
        check_inputs: bool = True,
    ) -> None:
        super().__init__(num_classes, embedding_dim, check_inputs)
        _check_positive("scale", scale)
        if not (isinstance(margin, int | float) and 0 <= margin < math.pi / 2):
            raise ValueError(f"margin is in radians and must lie in [0, pi/2), got {margin!r}")
        self.scale = float(scale)
        self.margin = float(margin)
        self.weight = nn.Parameter(torch.randn(num_classes, embedding_dim))

    @property
    def proxies(self) -> Tensor:
        return self.weight

    def _compute(self, embeddings: Tensor, labels: Tensor) -> LossOutput:
        cos = self._cosines(embeddings, self.weight)
        cos_y = cos.gather(1, labels.unsqueeze(1))
        sin_y = safe_sqrt(1.0 - cos_y.square())  # zero gradient at |cos| = 1
        with_margin = cos_y * math.cos(self.margin) - sin_y * math.sin(self.margin)
        fallback = cos_y - self.margin * math.sin(self.margin)
        # theta_y <= pi - m  <=>  cos_y >= cos(pi - m) = -cos(m)
        target = torch.where(cos_y >= -math.cos(self.margin), with_margin, fallback)
        logits = self.scale * cos.scatter(1, labels.unsqueeze(1), target)
        return self._softmax_output(F.cross_entropy(logits, labels, reduction="none"))


class CenterContrastiveLoss(_ProxyLoss):
    """Center Contrastive Loss (Cai, Xiong, Tian 2023, arXiv 2308.00458), as we read it.

    A bank of class centers c_1..c_C. Each query x is compared by cosine with every center:
    a contrastive (softmax) term against all centers plus a center term pulling x to its own:

        L(x, y) = -log( e^{(cos_y - m)/T} / (e^{(cos_y - m)/T} + sum_{j != y} e^{cos_j / T}) )
                  + lambda * (1 - cos_y)

    where ``1 - cos_y = ||x^ - c^_y||^2 / 2`` on the unit sphere. See PROTOCOL.md for every
    ambiguity we resolved (the paper's full text was not available offline).

    Args:
        num_classes, embedding_dim: shape of the center bank ``centers`` [C, D].
        temperature: T of the contrastive term (default 0.1, as InfoNCE and SCL here).
        margin: additive cosine margin m on the true center (default 0.0).
        center_weight: lambda (default 1.0).
        center_update: "gradient" (default): ``centers`` is an ``nn.Parameter`` trained by the
            optimizer through ``loss.parameters()``. "ema": ``centers`` is a buffer; in training
            mode each forward, after computing the loss with the current centers, moves each
            center seen in the batch towards the mean of its normalised embeddings,
            ``c <- normalize(momentum * c + (1 - momentum) * mean)``, without gradient.
        momentum: EMA momentum for ``center_update="ema"`` (default 0.9).
        check_inputs: validate inputs (syncs).

    Always normalises embeddings and centers. ``per_sample``: each sample's L (positive almost
    always); ``n_terms`` = B; ``n_active_terms``: samples with a non-zero term.
    """

    def __init__(
        self,
        num_classes: int,
        embedding_dim: int,
        temperature: float = 0.1,
        margin: float = 0.0,
        center_weight: float = 1.0,
        center_update: str = "gradient",
        momentum: float = 0.9,
        check_inputs: bool = True,
    ) -> None:
        super().__init__(num_classes, embedding_dim, check_inputs)
        _check_positive("temperature", temperature)
        _check_nonnegative("margin", margin)
        _check_nonnegative("center_weight", center_weight)
        _check_choice("center_update", center_update, ("gradient", "ema"))
        if not (isinstance(momentum, int | float) and 0 <= momentum < 1):
            raise ValueError(f"momentum must lie in [0, 1), got {momentum!r}")
        self.temperature = float(temperature)
        self.margin = float(margin)
        self.center_weight = float(center_weight)
        self.center_update = center_update
        self.momentum = float(momentum)
        init = F.normalize(torch.randn(num_classes, embedding_dim), dim=1)
        if center_update == "gradient":
            self.centers = nn.Parameter(init)
        else:
            self.register_buffer("centers", init)

    @property
    def proxies(self) -> Tensor:
        return self.centers

    def _compute(self, embeddings: Tensor, labels: Tensor) -> LossOutput:
        ema = self.center_update == "ema"
        centers = self.centers.detach().clone() if ema else self.centers
        cos = self._cosines(embeddings, centers)
        target = labels.unsqueeze(1)
        logits = cos.scatter_add(1, target, torch.full_like(target, -self.margin, dtype=cos.dtype))
        contrastive = F.cross_entropy(logits / self.temperature, labels, reduction="none")
        pull = 1.0 - cos.gather(1, target).squeeze(1)
        out = self._softmax_output(contrastive + self.center_weight * pull)
        if ema and self.training:
            self.update_centers(embeddings, labels)
        return out

    @torch.no_grad()
    def update_centers(self, embeddings: Tensor, labels: Tensor) -> None:
        """EMA step of the center bank (``center_update="ema"``); sync-free."""
        z = F.normalize(embeddings.detach(), dim=1).to(self.centers.dtype)
        sums = torch.zeros_like(self.centers).index_add_(0, labels, z)
        counts = torch.zeros(self.num_classes, dtype=z.dtype, device=z.device)
        counts.index_add_(0, labels, torch.ones_like(labels, dtype=z.dtype))
        means = sums / counts.clamp_min(1).unsqueeze(1)
        moved = F.normalize(self.momentum * self.centers + (1 - self.momentum) * means, dim=1)
        self.centers.copy_(torch.where((counts > 0).unsqueeze(1), moved, self.centers))


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------

_REGISTRY: dict[str, type[_MetricLoss]] = {
    "contrastive": ContrastiveLoss,
    "triplet": TripletLoss,
    "npair": NPairLoss,
    "infonce": InfoNCELoss,
    "arcface": ArcFaceLoss,
    "scl": SupConLoss,
    "ccl": CenterContrastiveLoss,
}
_PROXY = ("arcface", "ccl")


def make_loss(
    name: str, num_classes: int | None = None, embedding_dim: int | None = None, **hparams
) -> nn.Module:
    """Build loss ``name`` (one of :data:`LOSSES`) with its documented defaults.

    ``num_classes`` and ``embedding_dim`` are required by the proxy losses (arcface, ccl) and
    ignored by the others, so a training loop may pass them for every loss. Any other keyword is a
    hyperparameter of that loss (see its class docstring and PROTOCOL.md); ``check_inputs=False``
    turns off input validation. The module is called as ``module(embeddings, labels)`` and returns
    a :class:`LossOutput`.
    """
    if name not in _REGISTRY:
        raise ValueError(f"unknown loss {name!r}; choose one of {', '.join(LOSSES)}")
    cls = _REGISTRY[name]
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    unknown = sorted(set(hparams) - set(accepted))
    if unknown:
        raise ValueError(
            f"unknown hyperparameter(s) {unknown} for loss {name!r}; it accepts "
            f"{[p for p in accepted if p not in ('num_classes', 'embedding_dim')]}"
        )
    if name in _PROXY:
        if num_classes is None or embedding_dim is None:
            raise ValueError(
                f"loss {name!r} learns one vector per class: pass num_classes and "
                f"embedding_dim, e.g. make_loss({name!r}, num_classes=10, embedding_dim=128)"
            )
        return cls(num_classes=num_classes, embedding_dim=embedding_dim, **hparams)
    return cls(**hparams)
