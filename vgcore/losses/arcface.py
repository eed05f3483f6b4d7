"""ArcFace, additive angular margin loss (Deng et al. 2019)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vgcore.losses.base import (
    Batch,
    LossOutput,
    ProxyLoss,
    check_positive,
)
from vgcore.losses.pairwise import (
    safe_sqrt,
)


class ArcFaceLoss(ProxyLoss):
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
    with a non-zero term. A miner's ``indices_tuple`` weights the samples as PML's ArcFaceLoss does
    (:class:`ProxyLoss`). ``loss.parameters()`` yields ``weight``: give it to the optimizer.
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
        check_positive("scale", scale)
        if not (isinstance(margin, int | float) and 0 <= margin < math.pi / 2):
            raise ValueError(f"margin is in radians and must lie in [0, pi/2), got {margin!r}")
        self.scale = float(scale)
        self.margin = float(margin)
        self.weight = nn.Parameter(torch.randn(num_classes, embedding_dim))

    @property
    def proxies(self) -> Tensor:
        return self.weight

    def _compute(self, batch: Batch) -> LossOutput:
        labels = batch.labels
        cos = self._cosines(batch.embeddings, self.weight)
        cos_y = cos.gather(1, labels.unsqueeze(1))
        sin_y = safe_sqrt(1.0 - cos_y.square())  # zero gradient at |cos| = 1
        with_margin = cos_y * math.cos(self.margin) - sin_y * math.sin(self.margin)
        fallback = cos_y - self.margin * math.sin(self.margin)
        # theta_y <= pi - m  <=>  cos_y >= cos(pi - m) = -cos(m)
        target = torch.where(cos_y >= -math.cos(self.margin), with_margin, fallback)
        logits = self.scale * cos.scatter(1, labels.unsqueeze(1), target)
        return self._softmax_output(F.cross_entropy(logits, labels, reduction="none"),
                                    batch.sample_weights(logits.dtype))

