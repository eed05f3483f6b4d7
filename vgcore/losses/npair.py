"""Multi-class N-pair loss (Sohn 2016)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from vgcore.losses.base import (
    LossOutput,
    check_choice,
    count_true,
    safe_div,
)
from vgcore.losses.pair_softmax import PairSoftmaxLoss
from vgcore.losses.pairwise import (
    within_class_rank,
)


class NPairLoss(PairSoftmaxLoss):
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
        check_choice("pairs", pairs, ("all", "one_per_class"))
        self.pairs = pairs
        self.graph_safe = pairs == "all"  # one_per_class: nonzero() sets the shapes

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
            loss=safe_div(term.sum(), n_terms),
            per_sample=term.new_zeros(labels.shape[0]).index_put((anchor,), term),
            n_terms=n_terms,
            n_active_terms=count_true(term > 0),
            has_positives=n_terms > 0,
        )

