"""Supervised contrastive loss (Khosla et al. 2020)."""

from __future__ import annotations

import torch

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
    similarity_matrix,
)


class SupConLoss(MetricLoss):
    """Supervised contrastive loss (Khosla et al. 2020, Eq. 2, L^sup_out).

    For anchor i with positives P(i) (same label, != i) and all others A(i) = {j != i}:
    ``L_i = -1/|P(i)| sum_{p in P(i)} log( e^{cos_ip / T} / sum_{a in A(i)} e^{cos_ia / T} )``.
    The loss is the mean of L_i over anchors with at least one positive. With a miner's
    ``indices_tuple``, P(i) and A(i) are its pairs anchored at i (PML's SupConLoss reads them so);
    with ``ref_emb`` they come from the reference set.

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
        check_positive("temperature", temperature)
        self.temperature = float(temperature)
        self.normalize = normalize

    def _compute(self, batch: Batch) -> LossOutput:
        pos, neg = batch.masks()
        logits = similarity_matrix(batch.embeddings, self.normalize, scale=1.0 / self.temperature, ref=batch.ref_emb)
        lse_all = masked_logsumexp(logits, pos | neg)
        n_pos = count_true(pos, dim=1)
        pos_logits = torch.where(pos, logits, 0.0)
        per_sample = torch.where(n_pos > 0, lse_all - safe_div(pos_logits.sum(dim=1), n_pos), 0.0)
        anchors = n_pos > 0
        return LossOutput(
            loss=safe_div(per_sample.sum(), count_true(anchors)),
            per_sample=per_sample,
            n_terms=count_true(pos),
            n_active_terms=count_true(pos & (logits < lse_all.unsqueeze(1))),
            has_positives=anchors.any(),
        )

