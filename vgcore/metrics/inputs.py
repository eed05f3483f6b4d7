"""Input handling shared by the metrics: embeddings ``z`` [N, D] float and labels ``y`` [N] int.

:func:`as_embeddings` takes them as users hold them (NumPy arrays, lists, torch tensors on any
device; labels may be class names) and returns torch tensors with ``y`` on ``z``'s device;
:func:`encode_labels` turns class names into integer codes; :func:`check_embeddings` names what is
wrong with them.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def as_embeddings(z, y, *, names: tuple[str, str] = ("z", "y")) -> tuple[Tensor, Tensor]:
    """``(z, y)`` as checked torch tensors: z floating [N, D], y int64 [N] on z's device.

    Accepts NumPy arrays (any float dtype for z, any integer dtype for y), nested lists and torch
    tensors on any device; ``z`` stays on its device (a NumPy array becomes a CPU tensor). Labels
    that are class names (strings, other hashable values) become their :func:`encode_labels` codes.
    Raises ``ValueError`` naming the problem (see :func:`check_embeddings`).
    """
    (y,) = encode_labels(y)
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
        raise ValueError(f"{name} must hold numbers, got a {array.dtype} array")
    return torch.from_numpy(np.ascontiguousarray(array))


def encode_labels(*labels):
    """``labels`` with class names replaced by int64 codes 0..C-1 shared by all of them.

    Numbers (tensors, integer arrays, lists of ints) and ``None`` come back as given (the metrics
    check them). If any argument holds strings, bytes or other hashable values, all are coded
    together, so a name has one code in a query set and its gallery: in ``np.unique``'s sorted order,
    or in order of first appearance where the values do not sort (``None`` beside strings). Codes
    are NumPy arrays of each argument's shape. Metrics do not depend on which code a class gets.
    """
    arrays = [_maybe_array(y) for y in labels]
    if not any(a is not None and a.dtype.kind in "OUS" for a in arrays):
        return labels
    parts = [y.cpu().numpy() if isinstance(y, Tensor) else a for y, a in zip(labels, arrays, strict=True)]
    if any(p is None and y is not None for p, y in zip(parts, labels, strict=True)):
        raise ValueError("labels must be arrays, lists or tensors of one label per row")
    flat = np.concatenate([p.ravel().astype(object) for p in parts if p is not None])  # no str/int coercion
    try:
        codes = np.unique(flat, return_inverse=True)[1].reshape(-1)
    except TypeError:  # values that do not sort: codes by first appearance
        seen: dict = {}
        try:
            codes = np.array([seen.setdefault(v, len(seen)) for v in flat], dtype=np.int64)
        except TypeError as err:
            raise ValueError(f"labels must be integers or hashable class names: {err}") from None
    out, start = [], 0
    for p in parts:
        if p is None:
            out.append(None)
            continue
        out.append(codes[start:start + p.size].astype(np.int64).reshape(p.shape))
        start += p.size
    return tuple(out)


def _maybe_array(y) -> np.ndarray | None:
    """``y`` as a NumPy array, or None for a tensor, None, or what NumPy cannot take (checked later)."""
    if y is None or isinstance(y, Tensor):
        return None
    try:
        return np.asarray(y)
    except Exception:  # ragged lists and the like: as_embeddings names the problem
        return None


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
