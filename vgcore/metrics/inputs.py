"""Input handling shared by the metrics: embeddings ``z`` [N, D] float and labels ``y`` [N] int.

:func:`as_embeddings` takes them as users hold them (NumPy arrays, lists, torch tensors on any
device) and returns torch tensors with ``y`` on ``z``'s device; :func:`check_embeddings` names
what is wrong with them.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def as_embeddings(z, y, *, names: tuple[str, str] = ("z", "y")) -> tuple[Tensor, Tensor]:
    """``(z, y)`` as checked torch tensors: z floating [N, D], y int64 [N] on z's device.

    Accepts NumPy arrays (any float dtype for z, any integer dtype for y), nested lists and torch
    tensors on any device; ``z`` stays on its device (a NumPy array becomes a CPU tensor). Raises
    ``ValueError`` naming the problem (see :func:`check_embeddings`).
    """
    z, y = _as_tensor(z, names[0]), _as_tensor(y, names[1])
    check_embeddings(z, y, names=names)
    return z, y.to(device=z.device, dtype=torch.int64)


def _as_tensor(x, name: str) -> Tensor:
    if isinstance(x, Tensor):
        return x
    try:
        array = np.asarray(x)
    except Exception as err:  # ragged lists and the like
        raise ValueError(f"{name} must be an array or a tensor: {err}") from None
    if array.dtype.kind in "OUS":
        raise ValueError(f"{name} must hold numbers, got a {array.dtype} array; map class names to integers "
                         f"first, e.g. np.unique({name}, return_inverse=True)[1]")
    return torch.from_numpy(np.ascontiguousarray(array))


def check_embeddings(z: Tensor, y: Tensor, *, names: tuple[str, str] = ("z", "y")) -> None:
    """Raise a ValueError naming the problem unless z is finite float [N, D] and y integer [N], N, D > 0."""
    zn, yn = names
    if not isinstance(z, Tensor) or not isinstance(y, Tensor):
        raise ValueError(f"{zn} and {yn} must be torch tensors (as_embeddings converts NumPy arrays)")
    if z.ndim != 2:
        raise ValueError(f"{zn} must be 2-D [N, D], got shape {tuple(z.shape)}")
    if y.ndim != 1:
        raise ValueError(f"{yn} must be 1-D [N], got shape {tuple(y.shape)}")
    if z.shape[0] == 0 or z.shape[1] == 0:
        raise ValueError(f"{zn} is empty (shape {tuple(z.shape)})")
    if z.shape[0] != y.shape[0]:
        raise ValueError(f"{zn} has {z.shape[0]} rows but {yn} has {y.shape[0]} labels")
    if not z.is_floating_point():
        raise ValueError(f"{zn} must be a floating-point tensor, got {z.dtype}")
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise ValueError(f"{yn} must hold integer class labels, got {y.dtype}")
    if not bool(torch.isfinite(z).all()):
        raise ValueError(f"{zn} contains NaN or infinite values")
