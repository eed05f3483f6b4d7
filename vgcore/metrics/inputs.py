"""Input checks shared by the metrics: embeddings ``z`` [N, D] float and labels ``y`` [N] int."""

from __future__ import annotations

import torch
from torch import Tensor


def check_embeddings(z: Tensor, y: Tensor) -> None:
    """Raise a ValueError naming the problem unless z is finite float [N, D] and y integer [N], N, D > 0."""
    if not isinstance(z, Tensor) or not isinstance(y, Tensor):
        raise ValueError("z and y must be torch tensors")
    if z.ndim != 2:
        raise ValueError(f"z must be 2-D [N, D], got shape {tuple(z.shape)}")
    if y.ndim != 1:
        raise ValueError(f"y must be 1-D [N], got shape {tuple(y.shape)}")
    if z.shape[0] == 0 or z.shape[1] == 0:
        raise ValueError(f"z is empty (shape {tuple(z.shape)})")
    if z.shape[0] != y.shape[0]:
        raise ValueError(f"z has {z.shape[0]} rows but y has {y.shape[0]} labels")
    if not z.is_floating_point():
        raise ValueError(f"z must be a floating-point tensor, got {z.dtype}")
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise ValueError(f"y must hold integer class labels, got {y.dtype}")
    if not bool(torch.isfinite(z).all()):
        raise ValueError("z contains NaN or infinite values")
