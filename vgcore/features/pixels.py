"""``pixels``: the flattened input, standardised per feature with the train split's mean and std.

For tests, for the 8x8 digits and for feature vectors (``synthetic``, or a user's own features).
"""

from __future__ import annotations

import torch

from vgcore.data import Split
from vgcore.features.backbone import Backbone, BackboneSpec


def spec() -> BackboneSpec:
    """The pixels backbone takes no options."""
    return BackboneSpec("pixels", "none", None, None, standardise="per-feature mean/std of the train split")


def _pixels(split: Split) -> torch.Tensor:
    if split.images is None:
        raise ValueError(
            f"the pixels backbone needs in-memory data of one size; {split.dataset} is a set of image "
            "files: use efficientnet_lite0 or vit_b_32"
        )
    x = split.images.reshape(len(split), -1)
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()


def standardise(split: Split, train: Split) -> torch.Tensor:
    """``split``'s flattened inputs (pixels scaled to [0, 1]) standardised with ``train``'s per-feature mean and std."""
    ref = _pixels(train)
    mean = ref.mean(0)
    std = ref.std(0)
    std = torch.where(std > 1e-6, std, torch.ones_like(std))  # constant pixels stay 0
    x = ref if split is train else _pixels(split)
    return ((x - mean) / std).contiguous()


SPEC = Backbone("pixels", spec)
