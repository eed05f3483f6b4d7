"""The body N-pair and InfoNCE share: one softmax per ordered positive pair."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from vgcore.losses.base import (
    Batch,
    LossOutput,
    MetricLoss,
    check_positive,
    count_true,
    safe_div,
)
from vgcore.losses.pairwise import (
    masked_logsumexp,
    pointwise,
    similarity_matrix,
)

# softplus(x) returns x above this threshold; log1p(exp(-40)) is below float64 resolution at 40.
SOFTPLUS_EXACT = 40.0



class PairSoftmaxLoss(MetricLoss):
    """Shared body of N-pair and InfoNCE: one softmax per ordered positive pair (a, p).

    ``term(a, p) = -log( e^{s_ap} / (e^{s_ap} + sum_{n: y_n != y_a} e^{s_an}) )
                 = log(1 + sum_n e^{s_an - s_ap})``, with ``s = similarity / temperature``.
    The loss is the mean over positive pairs; ``per_sample[a]`` the mean over a's positive pairs.
    With a miner's pairs (``indices_tuple``) the positive pairs are its ``(a1, p)`` and the
    negatives of anchor a its ``(a, n)``; with ``ref_emb`` both come from the reference set.
    """

    def __init__(self, temperature: float, normalize: bool, check_inputs: bool) -> None:
        super().__init__(check_inputs)
        check_positive("temperature", temperature)
        self.temperature = float(temperature)
        self.normalize = normalize

    def _logits(self, batch: Batch) -> Tensor:
        return similarity_matrix(batch.embeddings, self.normalize, scale=1.0 / self.temperature, ref=batch.ref_emb)

    def _all_pairs(self, batch: Batch) -> LossOutput:
        pos, neg = batch.masks()
        logits = self._logits(batch)
        # term(a, p) = softplus(x) with x = lse_neg(a) - s_ap; an anchor without negatives has
        # lse = -inf, so its terms are exactly 0 with a zero gradient.
        x = masked_logsumexp(logits, neg).unsqueeze(1) - logits
        with torch.no_grad():
            value = torch.where(pos, F.softplus(x, threshold=SOFTPLUS_EXACT), 0.0)
            slope = torch.where(pos, torch.sigmoid(x), 0.0)
        term = pointwise(x, value, slope)
        n_terms = count_true(pos)
        return LossOutput(
            loss=safe_div(term.sum(), n_terms),
            per_sample=safe_div(term.sum(dim=1), count_true(pos, dim=1)),
            n_terms=n_terms,
            n_active_terms=count_true(value > 0),
            has_positives=n_terms > 0,
        )
