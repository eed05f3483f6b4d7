"""The per-step log of a run: statistics kept on the device, copied to the host in blocks.

Each step appends one vector of :data:`~vgcore.train.learner.STAT_KEYS` (device tensors, no sync);
every ``sync_every`` steps (and at the end of each epoch) the pending vectors are copied to the
host in one transfer, which is also when a non-finite loss is detected. Columns are read by name.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from vgcore.train.learner import STAT_KEYS

COLUMNS = ("step", "epoch", *STAT_KEYS)
_INTEGER = ("step", "epoch", "n_terms", "n_active_terms")


class NonFiniteLoss(Exception):
    """Raised by :meth:`StepLog.flush` at the first step whose loss is NaN or infinite (unless the log
    keeps such steps: ``stop_on_nonfinite=False``)."""

    def __init__(self, step: int, epoch: int, value: float):
        super().__init__(f"loss {value} at step {step} (epoch {epoch})")
        self.step, self.epoch, self.value = step, epoch, value


class StepLog:
    """Rows of :data:`COLUMNS`, one per step; ``append`` is sync-free, ``flush`` copies to the host.

    ``stop_on_nonfinite``: ``flush`` raises :class:`NonFiniteLoss` at the first non-finite loss and
    drops the rows from there (a training run); False keeps every row (a monitor that only watches).
    """

    def __init__(self, sync_every: int, stop_on_nonfinite: bool = True):
        self.sync_every = sync_every
        self.stop_on_nonfinite = stop_on_nonfinite
        self._pending: list[Tensor] = []
        self._pending_epochs: list[int] = []
        self._blocks: list[np.ndarray] = []
        self.n_steps = 0  # steps appended so far, flushed or not

    def append(self, epoch: int, stats: Tensor) -> None:
        """Record one step's STAT_KEYS vector; copies to the host once ``sync_every`` are pending."""
        self._pending.append(stats)
        self._pending_epochs.append(epoch)
        self.n_steps += 1
        if len(self._pending) == self.sync_every:
            self.flush()

    def flush(self) -> None:
        """Copy the pending steps to the host; raise NonFiniteLoss (keeping the rows before it) on a
        non-finite loss."""
        if not self._pending:
            return
        block = torch.stack(self._pending).cpu().double().numpy()
        first = self.n_steps - len(block)
        rows = np.column_stack([np.arange(first, self.n_steps), self._pending_epochs, block])
        self._pending.clear()
        self._pending_epochs.clear()
        loss = rows[:, COLUMNS.index("train_loss")]
        bad = np.flatnonzero(~np.isfinite(loss)) if self.stop_on_nonfinite else np.empty(0, dtype=int)
        self._blocks.append(rows[: bad[0] if bad.size else None])
        if bad.size:
            row = rows[bad[0]]
            raise NonFiniteLoss(int(row[0]), int(row[1]), float(loss[bad[0]]))

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
