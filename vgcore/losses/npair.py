"""Multi-class N-pair loss (Sohn 2016)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from vgcore.losses.base import (
    Batch,
    LossOutput,
    as_pairs,
    check_choice,
    count_true,
    safe_div,
)
from vgcore.losses.pair_softmax import PairSoftmaxLoss
from vgcore.losses.pairwise import (
    masked_logsumexp,
    similarity_matrix,
    within_class_rank,
)


class NPairLoss(PairSoftmaxLoss):
    """Multi-class N-pair loss (Sohn 2016, Eq. 6 without the embedding L2 penalty).

    ``term(a, p) = log(1 + sum_{n} exp(f_a . f_n - f_a . f_p))`` on raw dot products.

    Args:
        pairs: "one_per_class" (default) is Sohn's construction, exactly as PML's NPairsLoss
            builds it: per class with >= 2 samples, anchor = its first sample in batch order,
            positive = its second; the negatives of an anchor are the positives of the other
            classes; the loss is the mean over the selected anchors (depends on batch order).
            "groups" (the variant ``npair_groups``) reads a class-balanced P x K batch as K/2
            disjoint N-pair groups: each class's samples, in batch order, form the consecutive pairs
            (1st, 2nd), (3rd, 4th), ...; group g holds the g-th pair of every class that has one, and
            inside a group Sohn's construction applies unchanged (anchor = first of a pair, positive =
            second, negatives = the positives of the other classes *in the same group*)::

                L = 1/|A| sum_g sum_{(a, p) in g} log(1 + sum_{(a', p') in g, p' != p} exp(f_a . f_p' - f_a . f_p))

            with A all anchors of all groups. Every sample of a class with an even count gets a
            gradient; the last sample of a class with an odd count is in no pair and gets none (nor
            does a class of one). With K = 2 (any class of at most 3) there is one group: exactly
            "one_per_class". A group that holds one class only has an anchor without negatives, a
            term log(1 + 0) = 0 (counted, not active); on a P x K batch every group holds P classes.
            "all" uses every ordered positive pair (a, p) of the batch, with every sample of
            another class as a negative (the variant ``npair_all``): on normalised embeddings it
            is InfoNCE at temperature 1.
        temperature: divides the dot products (default 1.0: none, as in the paper).
        normalize: L2-normalise embeddings inside the loss (default False, the paper's raw dot
            product; PML's default DotProductSimilarity normalises).
        check_inputs: validate inputs (syncs).

    With a miner's ``indices_tuple``: "all" uses its pairs (see :class:`PairSoftmaxLoss`);
    "one_per_class" the first positive pair it lists for each anchor label, as PML's NPairsLoss;
    "groups" takes none. ``ref_emb`` only with "all".

    ``per_sample[a]``: mean term over a's positive pairs ("all"), or its single term if a is a
    selected anchor and 0 otherwise ("one_per_class", "groups": on a P x K batch with even K, half
    the batch). ``n_terms``: positive pairs (or selected anchors, of all groups); ``n_active_terms``:
    those with a non-zero term, i.e. almost all of them (a softmax term vanishes only in
    floating-point underflow, or in a group without negatives).
    """

    def __init__(
        self,
        pairs: str = "one_per_class",
        temperature: float = 1.0,
        normalize: bool = False,
        check_inputs: bool = True,
    ) -> None:
        super().__init__(temperature, normalize, check_inputs)
        check_choice("pairs", pairs, ("all", "one_per_class", "groups"))
        self.pairs = pairs

    def _compute(self, batch: Batch) -> LossOutput:
        if self.pairs == "all":
            return self._all_pairs(batch)
        if batch.ref_emb is not None:
            raise ValueError(f"NPairLoss(pairs={self.pairs!r}) builds its pairs within the batch and takes no "
                             "ref_emb; use pairs='all' to compare with a reference set")
        if self.pairs == "groups":
            if batch.indices_tuple is not None:
                raise ValueError("NPairLoss(pairs='groups') builds its pairs from the batch order and takes no "
                                 "indices_tuple; use pairs='all' (or 'one_per_class') with a miner")
            return self._pairs_in_batch_order(batch, groups=True)
        return self._one_pair_per_class(batch)

    def _one_pair_per_class(self, batch: Batch) -> LossOutput:
        """Sohn's P x P problem: row k is the anchor of class k, column k its positive."""
        if batch.indices_tuple is None:
            return self._pairs_in_batch_order(batch, groups=False)
        # the miner's first positive pair of each anchor label, in label order (as PML's NPairsLoss;
        # this path syncs: the number of pairs sets the shapes)
        labels = batch.labels
        a1, p, _, _ = as_pairs(batch.indices_tuple)
        first = torch.isin(torch.arange(len(a1), device=labels.device), _first_of_each(labels[a1]))
        anchor, second = a1[first], p[first]
        order = torch.argsort(labels[anchor])
        anchor, second = anchor[order], second[order]
        z = F.normalize(batch.embeddings, dim=1) if self.normalize else batch.embeddings
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

    def _pairs_in_batch_order(self, batch: Batch, groups: bool) -> LossOutput:
        """Sohn's P x P problem, one per group, on B x B masks (static shapes, no host sync: a CUDA
        graph can capture it).

        A pair is a sample and the next sample of its class in batch order: Sohn's one group
        (``groups=False``) takes each class's first two samples; ``groups=True`` every class's
        (1st, 2nd), (3rd, 4th), ..., group g = the pairs of within-class rank 2g and 2g + 1. The
        candidates of an anchor are the second samples of its group (its own is its positive):
        ``term(a) = logsumexp_{j second, same group} s_aj - s_a,next(a)``, the cross-entropy of row a
        of its group's P x P logits with its own class as target.
        """
        rank, following = within_class_rank(batch.labels)
        if groups:
            first, second = rank % 2 == 0, rank % 2 == 1
        else:
            first, second = rank == 0, rank == 1
        anchor = first & (following >= 0)  # [B]: the rows (an odd last sample of a class is in no pair)
        logits = similarity_matrix(batch.embeddings, self.normalize, scale=1.0 / self.temperature)
        columns = second.unsqueeze(0)  # [1, B]: the columns (the positives) of the P x P problems
        if groups:
            group = torch.div(rank, 2, rounding_mode="floor")
            columns = columns & (group.unsqueeze(0) == group.unsqueeze(1))  # [B, B]: the anchor's own group
        lse = masked_logsumexp(logits, columns.expand_as(logits))
        positive = logits.gather(1, following.clamp(min=0).unsqueeze(1)).squeeze(1)  # s_a,next(a)
        term = torch.where(anchor, lse - positive, 0.0)
        n_terms = count_true(anchor)
        return LossOutput(
            loss=safe_div(term.sum(), n_terms),
            per_sample=term,
            n_terms=n_terms,
            n_active_terms=count_true(anchor & (term > 0)),
            has_positives=n_terms > 0,
        )


def _first_of_each(values: Tensor) -> Tensor:
    """Position of the first occurrence of each distinct value in ``values`` (syncs: sizes depend on data)."""
    _, inverse = torch.unique(values, return_inverse=True)
    positions = torch.arange(len(values), device=values.device)
    first = torch.full((int(inverse.max()) + 1 if len(values) else 0,), len(values), device=values.device)
    return first.scatter_reduce(0, inverse, positions, reduce="amin")


class NPairAllPairsLoss(NPairLoss):
    """:class:`NPairLoss` over every positive pair (``pairs="all"``), a named variant.

    On L2-normalised embeddings this equals InfoNCE / NT-Xent at temperature 1: it compares the
    temperature, not Sohn's construction, which is why it is not the default.
    """

    def __init__(
        self,
        pairs: str = "all",
        temperature: float = 1.0,
        normalize: bool = False,
        check_inputs: bool = True,
    ) -> None:
        super().__init__(pairs, temperature, normalize, check_inputs)


class NPairGroupsLoss(NPairLoss):
    """:class:`NPairLoss` in K/2 disjoint groups (``pairs="groups"``), a named variant.

    Sohn's one pair per class gives a gradient to 2 samples per class of a batch (20 of 512 with 10
    classes); on a P x K batch this reads the batch as K/2 of Sohn's N-pair problems, so that every
    sample of a class with an even count gets one, and with K = 2 it is Sohn's construction exactly.
    """

    def __init__(
        self,
        pairs: str = "groups",
        temperature: float = 1.0,
        normalize: bool = False,
        check_inputs: bool = True,
    ) -> None:
        super().__init__(pairs, temperature, normalize, check_inputs)
