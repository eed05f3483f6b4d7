"""Multi-Similarity loss (Wang et al. 2019): the fair comparison's tuned baseline, not a paper loss."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from vgcore.losses.base import (
    Batch,
    LossOutput,
    MetricLoss,
    check_positive,
    count_true,
)
from vgcore.losses.pair_softmax import SOFTPLUS_EXACT
from vgcore.losses.pairwise import (
    masked_logsumexp,
    similarity_matrix,
)


class MultiSimilarityLoss(MetricLoss):
    """Multi-Similarity loss (Wang, Han, Huang, Dong, Scott, CVPR 2019, "Multi-Similarity Loss with
    General Pair Weighting", Eq. 13), the weighting part without the paper's hard-pair mining.

    With ``S_ij`` the cosine similarity of the L2-normalised embeddings, ``P_i`` anchor i's
    positives (same label, ``j != i``) and ``N_i`` its negatives, each anchor's term is

        L_i = 1/alpha log(1 + sum_{p in P_i} e^{-alpha (S_ip - base)})
            + 1/beta  log(1 + sum_{n in N_i} e^{ beta (S_in - base)})

    and the loss is the mean of ``L_i`` over all B anchors (the paper's 1/m; PML's MeanReducer). A
    part whose set is empty is 0, so an anchor without positives keeps its negative part and an
    anchor with neither counts as 0 in the mean. With a miner's ``indices_tuple`` (e.g. PML's
    ``MultiSimilarityMiner``, the paper's mining step) ``P_i`` and ``N_i`` are its pairs anchored
    at i; with ``ref_emb`` they come from the reference set.

    Args:
        alpha: scale of the positive part (default 2.0).
        beta: scale of the negative part (default 50.0).
        base: the similarity threshold lambda both parts are measured from (default 0.5).
        check_inputs: validate inputs (syncs).

    The defaults are those of pytorch-metric-learning 2.9.0's ``MultiSimilarityLoss(alpha=2,
    beta=50, base=0.5)`` (which PML says it adapted from the authors' code); this class computes the
    same function (tested against it). Always normalises (cosine similarity, PML's
    ``CosineSimilarity``). Issue 25's fair comparison tunes ``base`` (``vgcore.tuning``).

    ``per_sample[i]`` = L_i (0 for an anchor with no pair; positive otherwise except in
    floating-point underflow). ``n_terms``: the pairs the loss weighs (positive and negative pairs,
    one summand each); ``n_active_terms``: those whose summand ``e^{...}`` is non-zero (all of them
    but for underflow, as for the softmax losses). ``has_positives``: the batch has a positive pair.
    Like contrastive's, the negative part is defined without positives: a batch without a positive
    pair gives ``has_positives = False`` and still the mean of the negative parts, not a zero.
    """

    def __init__(
        self, alpha: float = 2.0, beta: float = 50.0, base: float = 0.5, check_inputs: bool = True
    ) -> None:
        super().__init__(check_inputs)
        check_positive("alpha", alpha)
        check_positive("beta", beta)
        if not (isinstance(base, int | float) and not isinstance(base, bool) and math.isfinite(base)):
            raise ValueError(f"base must be a finite number, got {base!r}")
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.base = float(base)

    def _compute(self, batch: Batch) -> LossOutput:
        pos, neg = batch.masks()
        sim = similarity_matrix(batch.embeddings, normalize=True, ref=batch.ref_emb)
        # log(1 + sum_j e^{x_ij}) = softplus(lse_j x_ij); the constant shift by base comes out of the
        # log-sum-exp. An empty row has lse = -inf: its part is exactly 0 with a zero gradient.
        pos_logits, neg_logits = sim * -self.alpha, sim * self.beta
        pos_lse = masked_logsumexp(pos_logits, pos) + self.alpha * self.base
        neg_lse = masked_logsumexp(neg_logits, neg) - self.beta * self.base
        per_sample = (F.softplus(pos_lse, threshold=SOFTPLUS_EXACT) / self.alpha
                      + F.softplus(neg_lse, threshold=SOFTPLUS_EXACT) / self.beta)
        with torch.no_grad():
            exponent = torch.where(pos, pos_logits + self.alpha * self.base, neg_logits - self.beta * self.base)
            active = (pos | neg) & (exponent.exp_() > 0)
        return LossOutput(
            loss=per_sample.sum() / max(per_sample.shape[0], 1),
            per_sample=per_sample,
            n_terms=count_true(pos | neg),
            n_active_terms=count_true(active),
            has_positives=pos.any(),
        )
