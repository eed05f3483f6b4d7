"""Names of every extension point, and where each one lives. Imports nothing heavy (no torch).

Each entry maps a public name to ``"module:attribute"``. Adding a loss, a dataset or a backbone is
one new file plus one line here; ``tests/test_registry.py`` checks that every line resolves and
that every implementation in the packages is registered.

    >>> registry.names("loss")[:7]               # the paper's seven, then the named variants and the baseline
    ('contrastive', 'triplet', 'npair', 'infonce', 'arcface', 'scl', 'ccl')
    >>> registry.load("loss", "triplet")          # imports vgcore.losses.triplet (and torch)
    <class 'vgcore.losses.triplet.TripletLoss'>
"""

from __future__ import annotations

import importlib
from typing import Any

from vgcore.errors import UserError

LOSSES: dict[str, str] = {
    "contrastive": "vgcore.losses.contrastive:ContrastiveLoss",
    "triplet": "vgcore.losses.triplet:TripletLoss",
    "npair": "vgcore.losses.npair:NPairLoss",
    "infonce": "vgcore.losses.infonce:InfoNCELoss",
    "arcface": "vgcore.losses.arcface:ArcFaceLoss",
    "scl": "vgcore.losses.scl:SupConLoss",
    "ccl": "vgcore.losses.ccl:CenterContrastiveLoss",
    "npair_all": "vgcore.losses.npair:NPairAllPairsLoss",
    "triplet_semihard": "vgcore.losses.triplet:TripletSemiHardLoss",
    "triplet_facenet": "vgcore.losses.triplet:TripletFaceNetLoss",
    "ccl_ema": "vgcore.losses.ccl:CenterContrastiveEMALoss",
    "npair_groups": "vgcore.losses.npair:NPairGroupsLoss",
    "multisimilarity": "vgcore.losses.multisimilarity:MultiSimilarityLoss",
}
"""Loss name -> its ``nn.Module`` class (``vgcore.losses``): the paper's seven in its order, then the
named variants, then the baselines."""

VARIANTS: dict[str, str] = {"npair_all": "npair", "triplet_semihard": "triplet", "triplet_facenet": "triplet",
                            "ccl_ema": "ccl", "npair_groups": "npair"}
"""Variant name -> the paper's loss it is a variant of (run beside it; see PROTOCOL.md "Losses")."""

BASELINES: tuple[str, ...] = ("multisimilarity",)
"""Losses that are neither the paper's nor a variant of one: the fair comparison's tuned baseline,
pytorch-metric-learning's Multi-Similarity loss (PROTOCOL.md, "Fair comparison", "Equal tuning")."""

PAPER_LOSSES: tuple[str, ...] = tuple(name for name in LOSSES if name not in VARIANTS and name not in BASELINES)
"""The seven losses of the paper."""

DATASETS: dict[str, str] = {
    "cifar10": "vgcore.data.cifar10:SPEC",
    "fashionmnist": "vgcore.data.fashionmnist:SPEC",
    "cars196": "vgcore.data.cars196:SPEC",
    "cub200": "vgcore.data.cub200:SPEC",
    "tinyimagenet": "vgcore.data.tinyimagenet:SPEC",
    "digits": "vgcore.data.digits:SPEC",
    "synthetic": "vgcore.data.synthetic:SPEC",
    "synthetic_super": "vgcore.data.synthetic_super:SPEC",
    "custom": "vgcore.data.custom:SPEC",
}
"""Dataset name -> its :class:`vgcore.data.base.DatasetSpec` (the paper's five, three embedded sets, your file)."""

BACKBONES: dict[str, str] = {
    "vit_b_32": "vgcore.features.vit:SPEC",
    "efficientnet_lite0": "vgcore.features.efficientnet:SPEC",
    "pixels": "vgcore.features.pixels:SPEC",
}
"""Backbone name -> its :class:`vgcore.features.backbone.BackboneEntry`."""

_KINDS: dict[str, dict[str, str]] = {"loss": LOSSES, "dataset": DATASETS, "backbone": BACKBONES}


class UnknownNameError(UserError, ValueError):
    """A name that no registry holds; the message lists the valid ones."""


def names(kind: str) -> tuple[str, ...]:
    """Registered names of one kind (``"loss"``, ``"dataset"`` or ``"backbone"``), in order."""
    return tuple(_table(kind))


def check(kind: str, name: Any) -> str:
    """``name`` if it is registered, else :class:`UnknownNameError` naming the valid choices."""
    table = _table(kind)
    if name not in table:
        raise UnknownNameError(f"unknown {kind} {name!r}; choose one of: {', '.join(table)}")
    return name


def load(kind: str, name: str) -> Any:
    """The object behind ``name`` (imports its module on first use)."""
    module, _, attribute = _table(kind)[check(kind, name)].partition(":")
    return getattr(importlib.import_module(module), attribute)


def _table(kind: str) -> dict[str, str]:
    try:
        return _KINDS[kind]
    except KeyError:
        raise ValueError(f"unknown registry {kind!r}; one of: {', '.join(_KINDS)}") from None
