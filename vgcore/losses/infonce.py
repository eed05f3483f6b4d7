"""Supervised InfoNCE / NT-Xent (Oord et al. 2018; Chen et al. 2020)."""

from __future__ import annotations

from vgcore.losses.base import (
    Batch,
    LossOutput,
)
from vgcore.losses.pair_softmax import PairSoftmaxLoss


class InfoNCELoss(PairSoftmaxLoss):
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

    def _compute(self, batch: Batch) -> LossOutput:
        return self._all_pairs(batch)

