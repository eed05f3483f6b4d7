"""Contrastive loss (Hadsell, Chopra, LeCun 2006)."""

from __future__ import annotations

import torch
from torch import Tensor

from vgcore.losses.base import (
    REDUCTIONS,
    Batch,
    LossOutput,
    MetricLoss,
    check_choice,
    check_nonnegative,
    count_true,
    safe_div,
)
from vgcore.losses.pairwise import (
    distance_matrix,
    pointwise,
)


class ContrastiveLoss(MetricLoss):
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

    ``per_sample[i]`` is the mean term over the pairs anchored at i (the B-1 others without a miner).
    ``n_terms`` counts ordered pairs, ``n_active_terms`` those with a non-zero term. With a miner's
    ``indices_tuple`` only its pairs count; with ``ref_emb`` each anchor pairs with every reference. A batch with no positive pair still has
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
        check_nonnegative("margin", margin)
        check_nonnegative("pos_margin", pos_margin)
        check_choice("reduction", reduction, REDUCTIONS)
        self.margin = float(margin)
        self.pos_margin = float(pos_margin)
        self.squared = squared
        self.normalize = normalize
        self.reduction = reduction

    def _compute(self, batch: Batch) -> LossOutput:
        pos, neg = batch.masks()
        valid = pos | neg
        d2 = distance_matrix(batch.embeddings, normalize=self.normalize, squared=True, ref=batch.ref_emb)
        term = pointwise(d2, *self._terms(d2.detach(), pos, valid))
        half = 0.5 if self.squared else 1.0
        n_terms = count_true(valid)
        active = term > 0
        if self.reduction == "mean":
            loss = half * safe_div(term.sum(), n_terms)
        else:
            pos_sum = torch.where(pos, term, 0.0).sum()
            loss = safe_div(pos_sum, count_true(pos & active))
            loss = loss + safe_div(term.sum() - pos_sum, count_true(active & neg))
            loss = half * loss
        return LossOutput(
            loss=loss,
            per_sample=half * term.sum(dim=1) / count_true(valid, dim=1).clamp_min(1),
            n_terms=n_terms,
            n_active_terms=count_true(active),
            has_positives=pos.any(),
        )

    @torch.no_grad()
    def _terms(self, d2: Tensor, pos: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
        """Each pair's term as a function of the squared distance ``d2``, and its slope in ``d2``.

        The hinge is ``h = [d - pos_margin]_+`` on a positive pair and ``[margin - d]_+`` on a
        negative one (0 off the ``valid`` pairs), so ``dh/dd2 = +-1 / (2d)`` where it is active.
        The slope is 0 where ``d = 0`` (the diagonal, coincident points), where the gradient of
        ``d`` is undefined.
        """
        dist = d2.sqrt()
        inv = torch.where(dist > 0, dist.reciprocal(), 0.0).masked_fill_(~valid, 0.0)
        hinge = torch.where(pos, dist - self.pos_margin, self.margin - dist).clamp_min_(0.0)
        hinge.masked_fill_(~valid, 0.0)
        inv.mul_(torch.where(pos, 1.0, -1.0))  # the sign of dh/dd
        if self.squared:  # d/dd2 h^2 = 2 h dh/dd2 = +-h / d
            value = hinge.square()
            return value, inv.mul_(hinge)
        return hinge, inv.mul_(0.5).masked_fill_(hinge == 0, 0.0)
