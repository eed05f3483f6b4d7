"""The seven metric-learning losses compared in the paper, built by name.

    >>> loss_fn = make_loss("triplet")
    >>> loss = loss_fn(embeddings, labels)       # embeddings [B, D] float, labels [B] int
    >>> loss.backward()
    >>> active_ratio = (loss_fn.last.per_sample > 0).float().mean()

A loss is called as pytorch-metric-learning's are, ``loss_fn(embeddings, labels, indices_tuple=None,
ref_emb=None, ref_labels=None)`` (a miner's pairs or triplets; a reference set), and returns the
scalar loss, so it drops into a PML training loop. The :class:`LossOutput` of the call (per-sample
terms and counts) is kept, detached, as ``loss_fn.last``. Its statistics are tensors on the embeddings' device:
the forward pass never calls ``.item()`` and never branches in Python on tensor values, so a
training step stays free of host syncs (ready for CUDA-graph capture). The one exception is input
validation (shapes, NaN/inf, label range), which must look at values: it is on by default and is
switched off with ``check_inputs=False`` (keyword of every loss and of :func:`make_loss`) or by
setting the ``check_inputs`` attribute of a loss module; a miner's ``indices_tuple`` may sync
(npair's one-pair-per-class mode sizes its problem from it).

One file per loss (``contrastive``, ``triplet``, ``npair``, ``infonce``, ``arcface``, ``scl``,
``ccl``, and ``multisimilarity``, the fair comparison's tuned baseline, which is not one of the
paper's losses), the shared B x B machinery in :mod:`vgcore.losses.pairwise`, the output type and
base classes in :mod:`vgcore.losses.base`; names are registered in :mod:`vgcore.registry`. Formulas,
defaults and their sources, and the mapping to pytorch-metric-learning (PML) are in PROTOCOL.md,
section "Losses".
"""

from __future__ import annotations

import inspect
from typing import Any

from torch import nn

from vgcore import registry
from vgcore.losses.arcface import ArcFaceLoss
from vgcore.losses.base import Batch, LossOutput, MetricLoss, ProxyLoss, validate_inputs
from vgcore.losses.ccl import CenterContrastiveEMALoss, CenterContrastiveLoss
from vgcore.losses.contrastive import ContrastiveLoss
from vgcore.losses.infonce import InfoNCELoss
from vgcore.losses.multisimilarity import MultiSimilarityLoss
from vgcore.losses.npair import NPairAllPairsLoss, NPairGroupsLoss, NPairLoss
from vgcore.losses.scl import SupConLoss
from vgcore.losses.triplet import TripletFaceNetLoss, TripletLoss, TripletSemiHardLoss

__all__ = [
    "LOSSES",
    "Batch",
    "LossOutput",
    "MetricLoss",
    "ProxyLoss",
    "make_loss",
    "loss_hyperparameters",
    "validate_inputs",
    "ContrastiveLoss",
    "TripletLoss",
    "NPairLoss",
    "InfoNCELoss",
    "ArcFaceLoss",
    "SupConLoss",
    "CenterContrastiveLoss",
    "NPairAllPairsLoss",
    "TripletSemiHardLoss",
    "TripletFaceNetLoss",
    "CenterContrastiveEMALoss",
    "NPairGroupsLoss",
    "MultiSimilarityLoss",
]

LOSSES: tuple[str, ...] = registry.PAPER_LOSSES
"""The paper's seven losses; ``registry.names("loss")`` adds the named variants and the baseline
(``registry.BASELINES``: ``multisimilarity``)."""

_SHAPE_ARGS = ("num_classes", "embedding_dim")


def loss_hyperparameters(name: str, **hparams: Any) -> dict[str, Any]:
    """The hyperparameters of loss ``name`` with defaults filled in, checked against its signature.

    Builds nothing (no parameter is initialised, no random number drawn). Raises ``ValueError``
    naming the accepted keywords for an unknown one.
    """
    cls = registry.load("loss", name)
    params = {p: v for p, v in inspect.signature(cls.__init__).parameters.items()
              if p != "self" and p not in _SHAPE_ARGS}
    unknown = sorted(set(hparams) - set(params))
    if unknown:
        raise ValueError(f"unknown hyperparameter(s) {unknown} for loss {name!r}; it accepts {list(params)}")
    return {p: hparams.get(p, v.default) for p, v in params.items()}


def make_loss(name: str, num_classes: int | None = None, embedding_dim: int | None = None, **hparams) -> nn.Module:
    """Build loss ``name`` (one of ``registry.names("loss")``: :data:`LOSSES`, the named variants,
    the baseline) with its documented defaults.

    ``num_classes`` and ``embedding_dim`` are required by the proxy losses (arcface, ccl) and
    ignored by the others, so a training loop may pass them for every loss. Any other keyword is a
    hyperparameter of that loss (see its class docstring and PROTOCOL.md); ``check_inputs=False``
    turns off input validation. The module is called as ``module(embeddings, labels)`` (plus
    PML's ``indices_tuple``, ``ref_emb``, ``ref_labels``), returns the scalar loss and keeps the
    :class:`LossOutput` of the call as ``module.last``.
    """
    loss_hyperparameters(name, **hparams)
    cls = registry.load("loss", name)
    if issubclass(cls, ProxyLoss):
        if num_classes is None or embedding_dim is None:
            raise ValueError(
                f"loss {name!r} learns one vector per class: pass num_classes and "
                f"embedding_dim, e.g. make_loss({name!r}, num_classes=10, embedding_dim=128)"
            )
        return cls(num_classes=num_classes, embedding_dim=embedding_dim, **hparams)
    return cls(**hparams)
