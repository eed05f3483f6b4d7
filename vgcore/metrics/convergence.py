"""Convergence of a training curve: the epoch (or step) at which it has covered most of its change."""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor


def _as_series(values: Sequence[float] | Tensor, name: str) -> list[float]:
    if isinstance(values, Tensor):
        values = values.detach().cpu().flatten().tolist()
    vals = [float(v) for v in values]
    if len(vals) == 0:
        raise ValueError(f"{name} is empty")
    if not all(math.isfinite(v) for v in vals):
        raise ValueError(f"{name} contains NaN or infinite values")
    return vals


def convergence_epoch(loss_by_epoch: Sequence[float] | Tensor, fraction: float = 0.9) -> int:
    """Index of the first epoch at which the loss has covered ``fraction`` of its total change.

    With ``L`` the series, the answer is the smallest ``e`` with
    ``(L[0] - L[e]) >= fraction * (L[0] - L[-1])`` (for a decreasing loss: it has fallen 90% of the
    way from its first to its final value). The index is 0-based into the series; 0 when the loss
    did not change. Raises ``ValueError`` for an empty or non-finite series or ``fraction``
    outside [0, 1].
    """
    vals = _as_series(loss_by_epoch, "loss_by_epoch")
    if not 0.0 <= fraction <= 1.0:
        raise ValueError("fraction must be in [0, 1]")
    total = vals[0] - vals[-1]
    if total == 0.0:
        return 0
    for e, v in enumerate(vals):
        if (vals[0] - v) / total >= fraction - 1e-12:
            return e
    return len(vals) - 1  # unreachable: the last epoch always qualifies


def recall_convergence_epoch(
    recall_by_epoch: Sequence[float] | Tensor, fraction: float = 0.95
) -> int:
    """Index of the first epoch whose Recall@1 is at least ``fraction`` times its final value.

    0-based into the series. Raises ``ValueError`` for an empty or non-finite series or
    ``fraction`` outside [0, 1].
    """
    vals = _as_series(recall_by_epoch, "recall_by_epoch")
    if not 0.0 <= fraction <= 1.0:
        raise ValueError("fraction must be in [0, 1]")
    target = fraction * vals[-1]
    tol = 1e-12 * abs(vals[-1])
    for e, v in enumerate(vals):
        if v >= target - tol:
            return e
    return len(vals) - 1



LABELS: dict[str, str] = {
    "loss_convergence_epoch": "epochs to 90% loss convergence",
    "recall_convergence_epoch": "epochs to 95% of final Recall@1",
}
