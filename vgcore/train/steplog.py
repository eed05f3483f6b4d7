"""The per-step log of a run: statistics kept on the device, copied to the host in blocks.

Each step appends one vector of :data:`~vgcore.train.learner.STAT_KEYS` and
:data:`~vgcore.train.learner.CHECK_KEYS` (device tensors, no sync); every ``sync_every`` steps (and
at the end of each epoch) the pending vectors are copied to the host in one transfer, which is also
when divergence is detected: a non-finite loss, or a failed check (embeddings off the unit sphere).
Columns are read by name.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from vgcore.train.learner import CHECK_KEYS, STAT_KEYS

COLUMNS = ("step", "epoch", *STAT_KEYS)
_INTEGER = ("step", "epoch", "n_terms", "n_active_terms")
_CHECKS = {"unit_embeddings": "the head's outputs left the unit sphere (their norm overflowed to inf, or "
                              "became NaN or zero), so every embedding is 0 or NaN"}


class Divergence(Exception):
    """Raised by :meth:`StepLog.flush` at the first step whose loss is NaN or infinite, or whose checks
    failed; `what` says which, in words."""

    def __init__(self, step: int, epoch: int, what: str):
        super().__init__(f"{what} at step {step} (epoch {epoch})")
        self.step, self.epoch, self.what = step, epoch, what


class StepLog:
    """Rows of :data:`COLUMNS`, one per step; ``append`` is sync-free, ``flush`` copies to the host.

    ``stop_on_nonfinite``: ``flush`` raises :class:`Divergence` at the first non-finite loss or failed
    check and drops the rows from there (a training run); False keeps every row (a monitor that only
    watches).
    """

    def __init__(self, sync_every: int, stop_on_nonfinite: bool = True):
        self.sync_every = sync_every
        self.stop_on_nonfinite = stop_on_nonfinite
        self._pending: list[Tensor] = []
        self._pending_epochs: list[int] = []
        self._blocks: list[np.ndarray] = []
        self.n_steps = 0  # steps appended so far, flushed or not

    def append(self, epoch: int, stats: Tensor) -> None:
        """Record one step's STAT_KEYS + CHECK_KEYS vector; copies to the host once ``sync_every`` are pending."""
        self._pending.append(stats)
        self._pending_epochs.append(epoch)
        self.n_steps += 1
        if len(self._pending) == self.sync_every:
            self.flush()

    def flush(self) -> None:
        """Copy the pending steps to the host; raise Divergence (keeping the rows before it) at the first
        step whose loss is not finite or whose checks failed."""
        if not self._pending:
            return
        block = torch.stack(self._pending).cpu().double().numpy()
        first = self.n_steps - len(block)
        rows = np.column_stack([np.arange(first, self.n_steps), self._pending_epochs, block])
        self._pending.clear()
        self._pending_epochs.clear()
        rows, checks = rows[:, : len(COLUMNS)], rows[:, len(COLUMNS):]
        loss = rows[:, COLUMNS.index("train_loss")]
        failed = checks != 1
        bad = (np.flatnonzero(~np.isfinite(loss) | failed.any(axis=1)) if self.stop_on_nonfinite
               else np.empty(0, dtype=int))
        self._blocks.append(rows[: bad[0] if bad.size else None])
        if bad.size:
            i = bad[0]
            what = (f"the loss became {loss[i]}" if not np.isfinite(loss[i]) else
                    "; ".join(_CHECKS[k] for k, f in zip(CHECK_KEYS, failed[i], strict=True) if f))
            raise Divergence(int(rows[i, 0]), int(rows[i, 1]), what)

    def frame(self) -> pd.DataFrame:
        """The flushed rows as a DataFrame with typed columns (ints, the has_positives bool).

        A column with missing values (NaN: a loss that does not report its terms) gets pandas'
        nullable type (``Int64``, ``boolean``) instead, so unknown stays unknown.
        """
        data = np.concatenate(self._blocks) if self._blocks else np.empty((0, len(COLUMNS)))
        frame = pd.DataFrame(data, columns=list(COLUMNS))
        for col, dtype, nullable in [*((c, np.int64, "Int64") for c in _INTEGER), ("has_positives", bool, "boolean")]:
            frame[col] = frame[col].astype(nullable if frame[col].isna().any() else dtype)
        return frame

    def epoch_mean(self, column: str, epoch: int) -> float:
        """Mean of ``column`` over the flushed steps of ``epoch``."""
        data = np.concatenate(self._blocks) if self._blocks else np.empty((0, len(COLUMNS)))
        rows = data[data[:, COLUMNS.index("epoch")] == epoch]
        return float(rows[:, COLUMNS.index(column)].mean())
