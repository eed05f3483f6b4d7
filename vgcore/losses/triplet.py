"""Triplet loss (Schroff, Kalenichenko, Philbin 2015), batch-all."""

from __future__ import annotations

import torch
import torch.nn.functional as F

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
    batch_all_triplet_sums,
    distance_matrix,
    facenet_negatives,
)


class TripletLoss(MetricLoss):
    """Triplet loss (Schroff, Kalenichenko, Philbin 2015, FaceNet Eq. 2), batch-all by default.

    Over every valid triplet (a, p, n) of the batch (label a = label p != label n, a != p):
    ``L = [d(a, p) - d(a, n) + margin]_+`` where ``d`` is the squared Euclidean distance between
    embeddings on the unit hypersphere (``squared=True``, ``normalize=True``: FaceNet's setting).
    Computed exactly without the B^3 tensor (:func:`vgcore.losses.pairwise.batch_all_triplet_sums`).

    Args:
        margin: alpha, in units of ``d`` (default 0.2, FaceNet's value for squared distances).
        squared: use squared Euclidean distances (default True, FaceNet); False gives plain
            Euclidean distances as in PML's TripletMarginLoss.
        normalize: L2-normalise embeddings inside the loss (default True, FaceNet's ||f|| = 1).
        reduction: "nonzero_mean" (default) divides the hinge sum by the number of non-zero
            triplets (PML's AvgNonZeroReducer; FaceNet trains on the triplets that violate the
            margin); "mean" divides by the number of valid triplets, zeros included (the sum over
            all triplets up to a constant, which dilutes the update as more triplets are satisfied).
        mining: "all" (default, batch-all) or "semihard": for each anchor-positive pair, every
            negative with ``d(a, p) < d(a, n) < d(a, p) + margin`` (PML's TripletMarginMiner
            "semihard"; FaceNet's one negative per pair is :class:`TripletFaceNetLoss`).
        check_inputs: validate inputs (syncs).

    With a miner's triplets ``(a, p, n)`` (``indices_tuple``) exactly those count (``mining`` is then
    the miner's business); with its pairs, every (a, p, n) whose (a, p) and (a, n) it lists; with
    ``ref_emb``, positives and negatives come from the reference set.

    ``per_sample[a]`` is the hinge sum over the (mined) triplets anchored at a divided by a's valid
    triplets (0 if none). ``n_terms`` counts valid triplets, ``n_active_terms`` those (mined and)
    with a positive hinge. ``has_positives`` is False when no valid triplet exists.
    """

    def __init__(
        self,
        margin: float = 0.2,
        squared: bool = True,
        normalize: bool = True,
        reduction: str = "nonzero_mean",
        mining: str = "all",
        check_inputs: bool = True,
    ) -> None:
        super().__init__(check_inputs)
        check_nonnegative("margin", margin)
        check_choice("reduction", reduction, REDUCTIONS)
        check_choice("mining", mining, ("all", "semihard"))
        self.margin = float(margin)
        self.squared = squared
        self.normalize = normalize
        self.reduction = reduction
        self.mining = mining

    def _compute(self, batch: Batch) -> LossOutput:
        dist = distance_matrix(batch.embeddings, normalize=self.normalize, squared=self.squared, ref=batch.ref_emb)
        if batch.triplets is not None:
            return self._given_triplets(dist, batch)
        pos, neg = batch.masks()
        hinge, active = batch_all_triplet_sums(dist, pos, neg, self.margin, semihard=self.mining == "semihard")
        triplets_per_anchor = count_true(pos, dim=1) * count_true(neg, dim=1)
        n_terms = triplets_per_anchor.sum()
        n_active = active.sum()
        total = hinge.sum()
        loss = safe_div(total, n_terms if self.reduction == "mean" else n_active)
        per_sample = hinge.sum(dim=1) / triplets_per_anchor.clamp_min(1).to(hinge.dtype)
        return LossOutput(
            loss=loss,
            per_sample=per_sample,
            n_terms=n_terms,
            n_active_terms=n_active,
            has_positives=n_terms > 0,
        )

    def _given_triplets(self, dist, batch: Batch) -> LossOutput:
        """A miner's triplets (a, p, n), each counted as often as it is listed."""
        a, p, n = batch.triplets
        hinge = F.relu(dist[a, p] - dist[a, n] + self.margin)
        n_terms = torch.full((), a.shape[0], dtype=torch.int64, device=dist.device)
        n_active = count_true(hinge > 0)
        loss = safe_div(hinge.sum(), n_terms if self.reduction == "mean" else n_active)
        b = dist.shape[0]
        sums = hinge.new_zeros(b).index_add(0, a, hinge)
        counts = hinge.new_zeros(b).index_add(0, a, torch.ones_like(hinge))
        return LossOutput(loss=loss, per_sample=sums / counts.clamp_min(1), n_terms=n_terms,
                          n_active_terms=n_active, has_positives=n_terms > 0)


class TripletSemiHardLoss(TripletLoss):
    """:class:`TripletLoss` with ``mining="semihard"``, a named variant: PML's reading of FaceNet's
    semi-hard negatives (``TripletMarginMiner(type_of_triplets="semihard")``).

    For every positive pair (a, p), EVERY negative n with ``d(a, p) < d(a, n) < d(a, p) + margin`` makes
    a triplet; the hinge sum over them is divided by the number with a positive hinge (the default
    ``reduction="nonzero_mean"``). FaceNet's one negative per pair is :class:`TripletFaceNetLoss`.
    """

    def __init__(
        self,
        margin: float = 0.2,
        squared: bool = True,
        normalize: bool = True,
        reduction: str = "nonzero_mean",
        mining: str = "semihard",
        check_inputs: bool = True,
    ) -> None:
        super().__init__(margin, squared, normalize, reduction, mining, check_inputs)


class TripletFaceNetLoss(TripletLoss):
    """FaceNet's semi-hard triplet loss as TensorFlow Addons' ``triplet_semihard_loss`` computes it, a
    named variant: ONE negative per positive pair (a, p) (a != p, same label),

        n*(a, p) = argmin {d(a, n) : d(a, n) > d(a, p)}, or argmax_n d(a, n) if no negative is farther
        L = (1 / #pairs) sum_{(a, p)} [d(a, p) - d(a, n*) + margin]_+      (zeros included)

    (:func:`vgcore.losses.pairwise.facenet_negatives`). ``d``, ``margin``, ``squared``, ``normalize``
    as :class:`TripletLoss` (TF-Addons' own defaults are Euclidean distance and margin 1.0).

    ``per_sample[a]``: mean hinge over a's positive pairs; ``n_terms``: positive pairs whose anchor
    has a negative (TF-Addons counts a pair without any negative too; its loss is then undefined);
    ``n_active_terms``: those with a positive hinge. A miner's ``indices_tuple`` restricts the pairs
    (its triplets give their (a, p) and (a, n) pairs), ``ref_emb`` gives the candidates.
    """

    def __init__(
        self,
        margin: float = 0.2,
        squared: bool = True,
        normalize: bool = True,
        check_inputs: bool = True,
    ) -> None:
        super().__init__(margin, squared, normalize, reduction="mean", check_inputs=check_inputs)
        self.mining = "facenet"

    def _compute(self, batch: Batch) -> LossOutput:
        dist = distance_matrix(batch.embeddings, normalize=self.normalize, squared=self.squared, ref=batch.ref_emb)
        pos, neg = batch.masks()
        d_an, valid = facenet_negatives(dist, pos, neg)
        hinge = torch.where(valid, F.relu(dist - d_an + self.margin), 0.0)
        n_terms = count_true(valid)
        pairs_per_anchor = count_true(valid, dim=1)
        return LossOutput(
            loss=safe_div(hinge.sum(), n_terms),
            per_sample=hinge.sum(dim=1) / pairs_per_anchor.clamp_min(1).to(hinge.dtype),
            n_terms=n_terms,
            n_active_terms=count_true(hinge > 0),
            has_positives=n_terms > 0,
        )
