"""Training to convergence: stop a run when its validation score stops improving, keep its best head.

PROTOCOL.md, Fair comparison, "Training to convergence": after every epoch the head's validation
MAP@R is read; an epoch improves on the best so far when its score exceeds it by more than
``min_delta`` (NaN never improves). The run stops after ``patience`` epochs in a row without an
improvement, or at its budget (``epochs``), and reports the head of its best epoch. A run stopped by
the budget is ``unconverged``: it might still have improved.

The untrained head (epoch 0) is the first candidate, so a head that never improves on it reports
the untrained head, and says so (``best_epoch`` 0).
"""

from __future__ import annotations

import copy
import math

from torch import nn

STOPPED_BY = ("patience", "budget")


class EarlyStopping:
    """The stopping rule of one run; :meth:`update` after every epoch, :meth:`restore` at the end."""

    def __init__(self, patience: int, min_delta: float):
        if patience < 1:
            raise ValueError(f"patience must be a positive number of epochs, got {patience!r}")
        if not min_delta >= 0:
            raise ValueError(f"min_delta must be >= 0, got {min_delta!r}")
        self.patience, self.min_delta = patience, min_delta
        self.best_score, self.best_epoch, self.waited = -math.inf, None, 0
        self._best_state: dict | None = None

    def update(self, epoch: int, score: float, head: nn.Module) -> bool:
        """Read the head after `epoch` with validation `score`; True when the run should stop now.

        An improvement (``score > best + min_delta``) keeps a copy of the head's weights (on the
        CPU) and resets the count of epochs without one."""
        if not math.isnan(score) and score > self.best_score + self.min_delta:
            self.best_score, self.best_epoch, self.waited = float(score), epoch, 0
            self._best_state = {k: v.detach().to("cpu", copy=True) for k, v in head.state_dict().items()}
        else:
            self.waited += 1
        return self.waited >= self.patience

    def restore(self, head: nn.Module) -> None:
        """Load the best epoch's weights into `head` (the head then is the run's reported checkpoint)."""
        if self._best_state is None:
            raise RuntimeError("no epoch was read (update was never called with a finite score): nothing to restore")
        head.load_state_dict(copy.deepcopy(self._best_state))

    def record(self, stop_epoch: int, stopped_by: str) -> dict:
        """What summary.json keeps of the stop: the rule, the best and the last epoch, and whether
        the run converged (stopped by patience, not by the budget)."""
        if stopped_by not in STOPPED_BY:
            raise ValueError(f"stopped_by must be one of {STOPPED_BY}, got {stopped_by!r}")
        return {"patience": self.patience, "min_delta": self.min_delta, "best_epoch": self.best_epoch,
                "best_val_map@r": self.best_score, "stop_epoch": stop_epoch, "stopped_by": stopped_by,
                "converged": stopped_by == "patience"}
