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



def convergence_step(loss_by_step: Sequence[float] | Tensor, fraction: float = 0.9, window: int | None = None) -> int:
    """Index of the first step at which the smoothed training loss has covered ``fraction`` of its change.

    The per-step loss is smoothed with a trailing mean over ``window`` steps (default: 5% of the
    steps, at least 1), then :func:`convergence_epoch`'s rule applies to the smoothed series, so the
    answer has step resolution instead of saturating at whole epochs.
    """
    vals = _as_series(loss_by_step, "loss_by_step")
    w = max(1, round(len(vals) / 20)) if window is None else int(window)
    if w < 1:
        raise ValueError("window must be >= 1")
    csum = [0.0]
    for v in vals:
        csum.append(csum[-1] + v)
    smooth = [(csum[i + 1] - csum[max(0, i + 1 - w)]) / (i + 1 - max(0, i + 1 - w)) for i in range(len(vals))]
    return convergence_epoch(smooth, fraction)


def covered_fraction(first: float, at: float, last: float) -> float:
    """``(first - at) / (first - last)``: the share of a curve's total decrease done by one point.

    NaN when the curve did not decrease overall (its total change is not positive), where the
    share has no meaning.
    """
    total = first - last
    if not (math.isfinite(total) and total > 1e-12 * max(abs(first), 1e-12)):
        return math.nan
    return (first - at) / total


def progress_grid(n_steps: int, ratio: float, *extra: int) -> list[int]:
    """The steps at which a run's progress is read: 0, ``round(ratio^k)`` for k = 0, 1, ... up to
    ``n_steps``, the ``extra`` steps that fall inside, and ``n_steps`` itself; sorted, distinct."""
    if ratio <= 1:
        raise ValueError("ratio must be > 1")
    steps, k = {0, n_steps}, 0
    while round(ratio**k) <= n_steps:
        steps.add(round(ratio**k))
        k += 1
    steps.update(e for e in extra if 0 <= e <= n_steps)
    return sorted(steps)


def progress_step(steps: Sequence[int], values: Sequence[float] | Tensor, fraction: float = 0.9) -> float:
    """First of ``steps`` at which the normalised progress ``(R_t - R_0) / (R_final - R_0)`` of a
    validation curve (``values`` at ``steps``, the first at step 0, the last at the end) reached
    ``fraction``: one yardstick for every loss, free of where each starts and ends. NaN when the
    curve did not rise overall (there is no progress to measure)."""
    vals = _as_series(values, "values")
    if len(vals) != len(steps):
        raise ValueError(f"{len(steps)} steps but {len(vals)} values")
    if not 0.0 <= fraction <= 1.0:
        raise ValueError("fraction must be in [0, 1]")
    total = vals[-1] - vals[0]
    if not total > 0:
        return math.nan
    for s, v in zip(steps, vals, strict=True):
        if (v - vals[0]) / total >= fraction - 1e-12:
            return float(s)
    return float(steps[-1])  # unreachable: the last step always qualifies


LABELS: dict[str, str] = {
    "loss_convergence_epoch": "90% loss convergence [epochs]",
    "recall_convergence_epoch": "95% of final Recall@1 reached [epochs]",
    "loss_convergence_step": "90% loss convergence [training steps]",
    "compaction_epoch1": "compaction done in epoch 1 [fraction]",
    "untrained_recall@1": "Recall@1 of the untrained head [fraction of queries]",
    "val_convergence_step": "90% of the validation Recall@1 gain reached [training steps, log-spaced grid]",
    "early_intra_var": "intra-class variance of the training probe at the early step [squared distance]",
}
