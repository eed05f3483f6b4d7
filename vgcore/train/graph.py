"""How the training loop runs one step of a group of learners: eagerly, or replayed from a CUDA graph.

Both steppers take the batch's indices into the device-resident training features and return one
:data:`~vgcore.train.learner.STAT_KEYS` vector per learner; both run
:func:`~vgcore.train.learner.train_step`, so there is one step and two ways of launching it.

* :class:`EagerStep`: calls ``train_step`` on the learners still training (CPU, or a GPU without graphs).
* :class:`GraphStep` (CUDA): the first ``warmup`` steps run eagerly on a side stream (they are real
  training steps; they also create Adam's state and the kernels' workspaces), then the whole
  multi-learner step (batch gather, heads, losses, backward, GREEDINESS, Adam) is captured once in a
  CUDA graph and every later step is one copy of the batch indices and one replay. The step is
  launch-bound on a GPU (PROTOCOL.md, "Training"), so this removes most of its cost. Shapes are
  static (every batch has ``batch_size`` rows) and nothing in the step synchronises with the host.
  A learner whose loss cannot be captured (``graph_safe`` False, or a loss checking its inputs,
  which syncs) makes the group run eagerly; every loss of the profiles can be captured.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from vgcore.train.learner import Learner, train_step


def graph_safe(learners: Sequence[Learner]) -> bool:
    """True when every learner's step can be captured in a CUDA graph (no host sync, static shapes)."""
    return all(getattr(lrn.loss_fn, "graph_safe", True) and not getattr(lrn.loss_fn, "check_inputs", False)
               for lrn in learners)


class EagerStep:
    """``step(idx)`` trains the active learners on ``x[idx], y[idx]``; returns {learner index: stats}."""

    uses_graph = False

    def __init__(self, learners: Sequence[Learner], x: Tensor, y: Tensor, *, diagnostics: bool,
                 grad_threshold: float | None):
        self.learners, self.x, self.y = list(learners), x, y
        self.kwargs = {"diagnostics": diagnostics, "grad_threshold": grad_threshold}
        self.active = list(range(len(self.learners)))

    def drop(self, i: int) -> None:
        """Stop training learner ``i`` (its run failed); the others are unaffected."""
        self.active.remove(i)

    def __call__(self, idx: Tensor) -> dict[int, Tensor]:
        stats = train_step([self.learners[i] for i in self.active], self.x[idx], self.y[idx], **self.kwargs)
        return dict(zip(self.active, stats, strict=True))


class GraphStep(EagerStep):
    """The same step captured once in a CUDA graph after ``warmup`` eager steps, then replayed.

    A dropped learner stays in the graph (its arithmetic is isolated from the others'), its
    statistics are no longer returned.
    """

    uses_graph = True

    def __init__(self, learners: Sequence[Learner], x: Tensor, y: Tensor, *, batch_size: int, diagnostics: bool,
                 grad_threshold: float | None, warmup: int = 3):
        if x.device.type != "cuda":
            raise ValueError(f"CUDA graphs need the features on a CUDA device, not {x.device}")
        if not graph_safe(learners):
            raise ValueError("a loss of this group cannot be captured in a CUDA graph (it synchronises with the "
                             "host or has data-dependent shapes); train it eagerly (cuda_graph=False)")
        super().__init__(learners, x, y, diagnostics=diagnostics, grad_threshold=grad_threshold)
        self.idx = torch.zeros(batch_size, dtype=torch.long, device=x.device)  # the graph's static input
        self.warmup = warmup
        self.graph: torch.cuda.CUDAGraph | None = None
        self.out: Tensor | None = None  # the graph's static output: [learners, STAT_KEYS]
        self.side = torch.cuda.Stream(device=x.device)

    def _step(self) -> Tensor:
        x, y = self.x.index_select(0, self.idx), self.y.index_select(0, self.idx)
        return torch.stack(train_step(self.learners, x, y, **self.kwargs))

    def __call__(self, idx: Tensor) -> dict[int, Tensor]:
        self.idx.copy_(idx)
        if self.graph is None and self.warmup > 0:
            self.warmup -= 1
            self.side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(self.side):
                stats = self._step()
            torch.cuda.current_stream().wait_stream(self.side)
        else:
            if self.graph is None:
                self._capture()
            self.graph.replay()
            stats = self.out.clone()  # the next replay overwrites the static output
        return {i: stats[i] for i in self.active}

    def _capture(self) -> None:
        for learner in self.learners:  # gradients are then allocated in the graph's memory pool
            learner.optimizer.zero_grad(set_to_none=True)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.out = self._step()
