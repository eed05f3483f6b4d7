"""What every loss shares: the output type, input validation, and the two base classes.

A loss is an ``nn.Module`` called as ``loss_fn(embeddings, labels)`` that returns a
:class:`LossOutput`. :class:`MetricLoss` validates the inputs (unless ``check_inputs=False``) and
calls ``_compute``; :class:`ProxyLoss` adds one learnable (or running) vector per class.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

REDUCTIONS = ("mean", "nonzero_mean")


@dataclass(frozen=True)
class LossOutput:
    """What every loss returns.

    loss:           0-d tensor, the scalar to backpropagate.
    per_sample:     [B], each anchor's own loss term (see each loss for its exact meaning);
                    ``per_sample > 0`` means "this sample takes part in the update".
    n_terms:        0-d int64, number of valid tuples (pairs, triplets, positive pairs, samples).
    n_active_terms: 0-d int64, those tuples whose loss term is non-zero.
    has_positives:  0-d bool, False when the batch had no usable positive pair; the loss is then
                    a zero that still backpropagates (contrastive excepted: its negative pairs
                    still count, see :class:`ContrastiveLoss`).
    """

    loss: Tensor
    per_sample: Tensor
    n_terms: Tensor
    n_active_terms: Tensor
    has_positives: Tensor


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
    if not isinstance(embeddings, Tensor) or not isinstance(labels, Tensor):
        raise ValueError("embeddings and labels must be torch.Tensor objects")
    if embeddings.dim() != 2:
        raise ValueError(
            f"embeddings must be 2-D [batch, dim], got shape {tuple(embeddings.shape)}; "
            "flatten extra dimensions with embeddings.flatten(1)"
        )
    if not embeddings.is_floating_point():
        raise ValueError(
            f"embeddings must be floating point, got {embeddings.dtype}; call embeddings.float()"
        )
    if labels.dim() != 1 or labels.shape[0] != embeddings.shape[0]:
        raise ValueError(
            f"labels must be 1-D with one label per embedding row: got labels shape "
            f"{tuple(labels.shape)} for embeddings shape {tuple(embeddings.shape)}; "
            "pass labels.view(-1) of length batch"
        )
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(
            f"labels must be an integer tensor, got {labels.dtype}; call labels.long()"
        )
    if embedding_dim is not None and embeddings.shape[1] != embedding_dim:
        raise ValueError(
            f"embeddings have dimension {embeddings.shape[1]} but the loss was built with "
            f"embedding_dim={embedding_dim}; rebuild it with make_loss(..., "
            f"embedding_dim={embeddings.shape[1]})"
        )
    if not bool(torch.isfinite(embeddings).all()):
        raise ValueError(
            "embeddings contain NaN or inf; check the model output (learning rate, "
            "division by a zero norm) before the loss"
        )
    if num_classes is not None and labels.numel() > 0:
        low, high = int(labels.min()), int(labels.max())
        if low < 0 or high >= num_classes:
            raise ValueError(
                f"labels must lie in [0, num_classes={num_classes}), got values in [{low}, {high}]; "
                "remap labels to 0..num_classes-1 or build the loss with a larger num_classes"
            )


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
    """Common front door: input validation, then ``_compute``."""

    graph_safe: bool = True
    """No host sync and no data-dependent shape in ``_compute``: a training step with this loss can
    be captured in a CUDA graph (vgcore.train.graph). A loss that breaks this sets it False."""

    def __init__(self, check_inputs: bool = True) -> None:
        super().__init__()
        self.check_inputs = check_inputs

    def _validate(self, embeddings: Tensor, labels: Tensor) -> None:
        validate_inputs(embeddings, labels)

    def forward(self, embeddings: Tensor, labels: Tensor) -> LossOutput:
        if self.check_inputs:
            self._validate(embeddings, labels)
        return self._compute(embeddings, labels)

    def _compute(self, embeddings: Tensor, labels: Tensor) -> LossOutput:  # pragma: no cover
        raise NotImplementedError



class ProxyLoss(MetricLoss):
    """A loss with one learnable (or running) vector per class, stored in ``self.proxies``."""

    def __init__(self, num_classes: int, embedding_dim: int, check_inputs: bool) -> None:
        super().__init__(check_inputs)
        for name, value in (("num_classes", num_classes), ("embedding_dim", embedding_dim)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        self.num_classes = num_classes
        self.embedding_dim = embedding_dim

    def _validate(self, embeddings: Tensor, labels: Tensor) -> None:
        validate_inputs(embeddings, labels, self.num_classes, self.embedding_dim)

    def _cosines(self, embeddings: Tensor, proxies: Tensor) -> Tensor:
        """Cosine between each embedding and each class proxy: [B, C]."""
        z = F.normalize(embeddings, dim=1)
        w = F.normalize(proxies.to(embeddings.dtype), dim=1)
        return z @ w.T

    @staticmethod
    def _softmax_output(per_sample: Tensor) -> LossOutput:
        n = per_sample.shape[0]
        n_terms = torch.full((), n, dtype=torch.int64, device=per_sample.device)
        return LossOutput(
            loss=safe_div(per_sample.sum(), n_terms),
            per_sample=per_sample,
            n_terms=n_terms,
            n_active_terms=count_true(per_sample > 0),
            has_positives=n_terms > 0,
        )

