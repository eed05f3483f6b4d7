"""What every loss shares: the output type, the batch it compares, input checks, the two base classes.

A loss is an ``nn.Module`` called as pytorch-metric-learning's losses are,
``loss_fn(embeddings, labels, indices_tuple=None, ref_emb=None, ref_labels=None)``, and returns the
scalar loss tensor to call ``.backward()`` on. The full :class:`LossOutput` of that call (per-sample
terms and counts, detached) is kept as ``loss_fn.last`` for the diagnostics. :class:`MetricLoss`
checks the inputs, builds the :class:`Batch` and calls ``_compute``; :class:`ProxyLoss` adds one
learnable (or running) vector per class.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vgcore.losses.pairwise import label_masks

REDUCTIONS = ("mean", "nonzero_mean")


@dataclass(frozen=True)
class LossOutput:
    """What every loss computes; ``loss_fn.last`` holds the one of its last call (detached).

    Attributes:
        loss: 0-d tensor, the scalar to backpropagate (what the call returns).
        per_sample: [B], each anchor's own loss term (see each loss for its exact meaning);
            ``per_sample > 0`` means "this sample takes part in the update".
        n_terms: 0-d int64, number of valid tuples (pairs, triplets, positive pairs, samples).
        n_active_terms: 0-d int64, those tuples whose loss term is non-zero.
        has_positives: 0-d bool, False when the batch had no usable positive pair; the loss is then
            a zero that still backpropagates (contrastive excepted: its negative pairs still count,
            see :class:`ContrastiveLoss`).
    """

    loss: Tensor
    per_sample: Tensor
    n_terms: Tensor
    n_active_terms: Tensor
    has_positives: Tensor

    def detach(self) -> LossOutput:
        """The same output with ``loss`` and ``per_sample`` cut from the graph (what ``last`` keeps)."""
        return LossOutput(self.loss.detach(), self.per_sample.detach(), self.n_terms, self.n_active_terms,
                          self.has_positives)


@dataclass(frozen=True)
class Batch:
    """What one call compares: each anchor (a row of ``embeddings``) against a reference set.

    ``ref_emb`` is None when the batch is its own reference (then ``(i, i)`` is never a pair) and
    ``ref_labels`` is then ``labels``. ``indices_tuple`` is None (every pair or triplet the labels
    allow) or a miner's output, as in pytorch-metric-learning: pairs ``(a1, p, a2, n)`` or
    triplets ``(a, p, n)``, indices of anchors into ``embeddings`` and of the others into the
    reference set.
    """

    embeddings: Tensor
    labels: Tensor
    ref_emb: Tensor | None = None
    ref_labels: Tensor | None = None
    indices_tuple: tuple[Tensor, ...] | None = None

    @property
    def n_ref(self) -> int:
        return self.labels.shape[0] if self.ref_emb is None else self.ref_emb.shape[0]

    @property
    def triplets(self) -> tuple[Tensor, Tensor, Tensor] | None:
        """The miner's triplets ``(a, p, n)``, or None when none were given."""
        return self.indices_tuple if self.indices_tuple is not None and len(self.indices_tuple) == 3 else None

    def masks(self) -> tuple[Tensor, Tensor]:
        """Positive and negative pair masks [B, M] (bool).

        Without a miner: every anchor-reference pair of equal (positive) or different (negative)
        labels, the diagonal excluded when the batch is its own reference. With a miner's tuple:
        exactly its pairs (triplets give their anchor-positive and anchor-negative pairs); a pair
        listed more than once counts once.
        """
        if self.indices_tuple is None:
            if self.ref_emb is None:
                return label_masks(self.labels)
            same = self.labels.unsqueeze(1) == self.ref_labels.unsqueeze(0)
            return same, ~same
        a1, p, a2, n = as_pairs(self.indices_tuple)
        shape = (self.labels.shape[0], self.n_ref)
        true = torch.ones((), dtype=torch.bool, device=self.labels.device)
        pos = torch.zeros(shape, dtype=torch.bool, device=self.labels.device).index_put_((a1, p), true)
        neg = torch.zeros(shape, dtype=torch.bool, device=self.labels.device).index_put_((a2, n), true)
        return pos, neg

    def sample_weights(self, dtype: torch.dtype) -> Tensor | None:
        """Per-anchor weights from the miner's tuple, pytorch-metric-learning's rule for losses on
        single samples (``convert_to_weights``): how often each sample appears in the tuple, over the
        largest count (1 for every sample when the tuple is empty). None without a tuple."""
        if self.indices_tuple is None:
            return None
        b = self.labels.shape[0]
        listed = torch.cat([t.reshape(-1) for t in self.indices_tuple])
        counts = torch.zeros(b, dtype=dtype, device=self.labels.device)
        counts.index_add_(0, listed, torch.ones_like(listed, dtype=dtype))
        top = counts.max() if b else counts.new_zeros(())
        return torch.where(top > 0, counts / top.clamp_min(1), 1.0)


def as_pairs(indices_tuple: Sequence[Tensor]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    if len(indices_tuple) == 4:
        return tuple(indices_tuple)
    a, p, n = indices_tuple
    return a, p, a, n


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
    _check_structure(embeddings, labels, embedding_dim)
    _check_values(embeddings, labels, num_classes)


def _check_structure(embeddings: Tensor, labels, embedding_dim: int | None = None, what: str = "embeddings") -> None:
    """Shapes and dtypes only (no host sync)."""
    if not isinstance(embeddings, Tensor):
        raise ValueError(f"{what} must be a torch.Tensor (the output of your model), got {type(embeddings).__name__}")
    if labels is None:
        raise ValueError(f"labels are required: one integer class label per row of {what}")
    if not isinstance(labels, Tensor):
        raise ValueError(f"labels must be a torch.Tensor, got {type(labels).__name__}; "
                         "convert them with torch.as_tensor(labels)")
    if embeddings.dim() != 2:
        raise ValueError(
            f"{what} must be 2-D [batch, dim], got shape {tuple(embeddings.shape)}; "
            f"flatten extra dimensions with {what}.flatten(1)"
        )
    if not embeddings.is_floating_point():
        raise ValueError(
            f"{what} must be floating point, got {embeddings.dtype}; call {what}.float()"
        )
    if labels.dim() != 1 or labels.shape[0] != embeddings.shape[0]:
        raise ValueError(
            f"labels must be 1-D with one label per {what} row: got labels shape "
            f"{tuple(labels.shape)} for {what} shape {tuple(embeddings.shape)}; "
            "pass labels.view(-1) of length batch"
        )
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(
            f"labels must be an integer tensor, got {labels.dtype}; call labels.long()"
        )
    if embedding_dim is not None and embeddings.shape[1] != embedding_dim:
        raise ValueError(
            f"{what} have dimension {embeddings.shape[1]} but the loss was built with "
            f"embedding_dim={embedding_dim}; rebuild it with make_loss(..., "
            f"embedding_dim={embeddings.shape[1]})"
        )


def _check_values(embeddings: Tensor, labels: Tensor, num_classes: int | None = None,
                  what: str = "embeddings") -> None:
    """NaN/inf and the label range (host syncs)."""
    if not bool(torch.isfinite(embeddings).all()):
        raise ValueError(
            f"{what} contain NaN or inf; check the model output (learning rate, "
            "division by a zero norm) before the loss"
        )
    if num_classes is not None and labels.numel() > 0:
        low, high = int(labels.min()), int(labels.max())
        if low < 0 or high >= num_classes:
            raise ValueError(
                f"labels must lie in [0, num_classes={num_classes}), got values in [{low}, {high}]; "
                "remap labels to 0..num_classes-1 or build the loss with a larger num_classes"
            )


def _check_indices_tuple(indices_tuple) -> tuple[Tensor, ...]:
    """A miner's output: 4 (pairs) or 3 (triplets) 1-D integer tensors of matching lengths (no sync)."""
    if not isinstance(indices_tuple, tuple | list) or len(indices_tuple) not in (3, 4):
        raise ValueError("indices_tuple must be a miner's output: pairs (a1, p, a2, n) or triplets (a, p, n), "
                         f"got {type(indices_tuple).__name__} of length {len(indices_tuple) if hasattr(indices_tuple, '__len__') else '?'}")
    for t in indices_tuple:
        if not isinstance(t, Tensor) or t.dim() != 1 or t.is_floating_point() or t.dtype == torch.bool:
            raise ValueError("indices_tuple must hold 1-D integer tensors of indices (as a miner returns them)")
    lengths = [len(t) for t in indices_tuple]
    if len(lengths) == 3 and len(set(lengths)) != 1:
        raise ValueError(f"triplets (a, p, n) must have equal lengths, got {lengths}")
    if len(lengths) == 4 and (lengths[0] != lengths[1] or lengths[2] != lengths[3]):
        raise ValueError(f"pairs (a1, p, a2, n) need len(a1) == len(p) and len(a2) == len(n), got {lengths}")
    return tuple(indices_tuple)


def _check_tuple_values(batch: Batch) -> None:
    """Indices in range and each listed pair of the right kind (host syncs)."""
    a1, p, a2, n = as_pairs(batch.indices_tuple)
    b, m = batch.labels.shape[0], batch.n_ref
    for name, idx, size, where in (("anchor", a1, b, "embeddings"), ("anchor", a2, b, "embeddings"),
                                   ("positive", p, m, "the reference set"), ("negative", n, m, "the reference set")):
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= size):
            raise ValueError(f"indices_tuple: {name} indices must lie in [0, {size}) ({where}), got "
                             f"[{int(idx.min())}, {int(idx.max())}]; mine on the same batch you pass to the loss")
    ref_labels = batch.labels if batch.ref_emb is None else batch.ref_labels
    if bool((batch.labels[a1] != ref_labels[p]).any()):
        raise ValueError("indices_tuple: a positive pair joins two different labels; mine with the labels you pass")
    if bool((batch.labels[a2] == ref_labels[n]).any()):
        raise ValueError("indices_tuple: a negative pair joins two equal labels; mine with the labels you pass")
    if batch.ref_emb is None and bool((a1 == p).any()):
        raise ValueError("indices_tuple: a positive pair joins a sample with itself")


def count_true(mask: Tensor, dim: int | None = None) -> Tensor:
    """Number of True entries (along ``dim``) as int64, without a host sync.

    ``count_nonzero`` rather than ``sum``: summing a B x B bool mask first copies it to int64.
    """
    return torch.count_nonzero(mask, dim=dim)


def safe_div(total: Tensor, count: Tensor) -> Tensor:
    """``total / max(count, 1)``: a mean over zero terms is a zero that keeps the graph."""
    return total / count.clamp_min(1).to(total.dtype)


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


def check_positive(name: str, value: float) -> None:
    if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")


def check_nonnegative(name: str, value: float) -> None:
    if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be a non-negative finite number, got {value!r}")


class MetricLoss(nn.Module):
    """The common front door, shaped like pytorch-metric-learning's losses.

    ``loss_fn(embeddings, labels, indices_tuple=None, ref_emb=None, ref_labels=None)`` returns the
    scalar loss; ``loss_fn.last`` is the :class:`LossOutput` of that call (detached), which
    :func:`vgcore.metrics.greediness` reads. ``labels`` may be any integer tensor (int8 to int64,
    on any device: they are moved to the embeddings' device as int64). ``indices_tuple`` is a
    miner's pairs or triplets; ``ref_emb``/``ref_labels`` a reference set the anchors are compared
    with (e.g. a memory bank), where the loss compares embeddings with embeddings.

    Shape and dtype checks always run (they cost no host sync); the value checks (NaN/inf, label
    range, the miner's indices) run when ``check_inputs`` is True and synchronise with the device.
    """

    takes_ref: bool = True
    """Whether the loss compares embeddings with embeddings (so that ``ref_emb`` has a meaning)."""

    graph_safe: bool = True
    """No host sync and no data-dependent shape in ``_compute`` (called as the training step calls
    it: embeddings and labels only): a training step with this loss can be captured in a CUDA graph
    (vgcore.train.graph). A loss that breaks this sets it False."""

    numerics_version: int = 1
    """Bumped by hand when this loss's code changes its numbers with no hyperparameter changed (a
    fixed bug): runs made before then are stale (vgcore.identity; tests/test_identity.py checks it)."""

    def __init__(self, check_inputs: bool = True) -> None:
        super().__init__()
        self.check_inputs = check_inputs
        self.last: LossOutput | None = None

    def forward(self, embeddings: Tensor, labels: Tensor | None = None, indices_tuple=None,
                ref_emb: Tensor | None = None, ref_labels: Tensor | None = None) -> Tensor:
        batch = self._batch(embeddings, labels, indices_tuple, ref_emb, ref_labels)
        out = self._compute(batch)
        self.last = out.detach()
        return out.loss

    def _batch(self, embeddings, labels, indices_tuple, ref_emb, ref_labels) -> Batch:
        dim = getattr(self, "embedding_dim", None)
        labels, ref_labels = (y if y is None or isinstance(y, Tensor) else torch.as_tensor(y)
                              for y in (labels, ref_labels))  # NumPy or list labels
        _check_structure(embeddings, labels, dim)
        if ref_emb is embeddings and (ref_labels is None or ref_labels is labels):
            ref_emb = ref_labels = None  # the batch as its own reference, as pytorch-metric-learning reads it
        if ref_emb is not None or ref_labels is not None:
            if ref_emb is None:
                raise ValueError("ref_labels were given without ref_emb: pass both, or neither")
            if not self.takes_ref:
                raise ValueError(f"ref_emb is not supported by {type(self).__name__}: it compares each embedding "
                                 "with its class vectors, not with other embeddings; call it without ref_emb")
            _check_structure(ref_emb, ref_labels, embeddings.shape[1], what="ref_emb")
            ref_labels = ref_labels.to(device=embeddings.device, dtype=torch.int64)
        if indices_tuple is not None:
            indices_tuple = tuple(t.to(device=embeddings.device, dtype=torch.int64)
                                  for t in _check_indices_tuple(indices_tuple))
        batch = Batch(embeddings, labels.to(device=embeddings.device, dtype=torch.int64), ref_emb, ref_labels,
                      indices_tuple)
        if self.check_inputs:
            _check_values(embeddings, batch.labels, getattr(self, "num_classes", None))
            if ref_emb is not None:
                _check_values(ref_emb, ref_labels, what="ref_emb")
            if indices_tuple is not None:
                _check_tuple_values(batch)
        return batch

    def _compute(self, batch: Batch) -> LossOutput:  # pragma: no cover
        raise NotImplementedError


class ProxyLoss(MetricLoss):
    """A loss with one learnable (or running) vector per class, stored in ``self.proxies``.

    It compares each embedding with the class vectors, so it takes no ``ref_emb``; a miner's
    ``indices_tuple`` weights each sample by how often the miner chose it (pytorch-metric-learning's
    rule for such losses, :meth:`Batch.sample_weights`).
    """

    takes_ref = False

    def __init__(self, num_classes: int, embedding_dim: int, check_inputs: bool) -> None:
        super().__init__(check_inputs)
        for name, value in (("num_classes", num_classes), ("embedding_dim", embedding_dim)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        self.num_classes = num_classes
        self.embedding_dim = embedding_dim

    def _cosines(self, embeddings: Tensor, proxies: Tensor) -> Tensor:
        """Cosine between each embedding and each class proxy: [B, C]."""
        z = F.normalize(embeddings, dim=1)
        w = F.normalize(proxies.to(embeddings.dtype), dim=1)
        return z @ w.T

    @staticmethod
    def _softmax_output(per_sample: Tensor, weights: Tensor | None = None) -> LossOutput:
        """Mean of the per-sample terms over the batch; with miner weights, of the weighted terms
        (``n_terms`` then counts the samples the miner chose)."""
        n = per_sample.shape[0]
        n_batch = torch.full((), n, dtype=torch.int64, device=per_sample.device)
        n_terms = n_batch if weights is None else count_true(weights > 0)
        if weights is not None:
            per_sample = per_sample * weights
        return LossOutput(
            loss=safe_div(per_sample.sum(), n_batch),
            per_sample=per_sample,
            n_terms=n_terms,
            n_active_terms=count_true(per_sample > 0),
            has_positives=n_terms > 0,
        )
