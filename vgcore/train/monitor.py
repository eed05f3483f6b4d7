"""GREEDINESS of any loss inside any training loop, read off the backward the loop already does.

:class:`GreedinessMonitor` wraps a loss callable (a vgcore loss, a pytorch-metric-learning loss,
your own function ``f(embeddings, labels, ...) -> scalar``). Each call hooks the embeddings it is
given and the model's parameters (one ``torch.autograd.graph.register_multi_grad_hook``); when your
``loss.backward()`` has computed their gradients, the hook computes the step's
:func:`vgcore.metrics.greediness` and appends it, with the loss, to a :class:`~vgcore.train.StepLog`:
the same columns as a run's ``steps.csv``. Nothing is recomputed and nothing waits for the device
(the log copies to the host every ``sync_every`` steps)::

    monitor = GreedinessMonitor(loss_func, model.parameters())
    for x, y in loader:
        optimizer.zero_grad()
        embeddings = model(x)
        loss = monitor(embeddings, y, miner(embeddings, y))   # = loss_func(embeddings, y, indices_tuple)
        loss.backward()
        optimizer.step()
    steps = monitor.frame()

Per-sample gradients are the tangential parts (:func:`vgcore.metrics.greediness.tangential`):
what turns each embedding's direction, the only part a cosine retrieval or an L2-normalising
head sees. The loss-term keys (``active_ratio``, ``tuple_active_ratio``, ``n_terms``,
``n_active_terms``, ``has_positives``) come from a vgcore loss's ``last`` output and are NaN for
a loss that returns only its value; ``frame()`` leaves out such always-NaN columns
(``frame(all_columns=True)`` keeps them: the full steps.csv schema).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from types import SimpleNamespace
from typing import Any

import pandas as pd
import torch
from torch import Tensor, nn

from vgcore.losses.base import LossOutput
from vgcore.metrics.greediness import GRAD_THRESHOLD, GREEDINESS_KEYS, greediness, tangential
from vgcore.train.steplog import StepLog


class GreedinessMonitor:
    """Wraps ``loss_fn``; logs GREEDINESS for every call whose loss is backpropagated.

    Args:
        loss_fn: called as ``loss_fn(embeddings, labels, *args, **kwargs)``; returns the scalar loss.
        parameters: the model's parameters (their gradient norm is ``grad_norm``).
        loss_parameters: the loss's own (ArcFace weights, centres): default ``loss_fn.parameters()``
            when it is an ``nn.Module``; their gradient norm is ``loss_grad_norm``.
        grad_threshold: the grad-active rule's tau (PROTOCOL.md, "Diagnostics: GREEDINESS").
        project: ``"tangential"`` (default) or ``None`` (the raw per-sample gradients dL/dz_i).
        sync_every: steps kept on the device between copies to the host.

    ``epoch``: set it to number the rows (default 0). ``last``: the GREEDINESS dict of the latest
    backward (0-d device tensors). ``frame()``: every step so far, in the steps.csv schema less
    the columns that are NaN in every row (``frame(all_columns=True)``: all of them).
    Call ``close()`` (or use it as a context manager) to remove a hook left by a call whose loss
    was never backpropagated.
    """

    def __init__(self, loss_fn: Callable[..., Tensor], parameters: Iterable[Tensor],
                 loss_parameters: Iterable[Tensor] | None = None, *, grad_threshold: float = GRAD_THRESHOLD,
                 project: str | None = "tangential", sync_every: int = 50) -> None:
        if project not in ("tangential", None):
            raise ValueError(f"project must be 'tangential' or None, got {project!r}")
        if loss_parameters is None:
            loss_parameters = loss_fn.parameters() if isinstance(loss_fn, nn.Module) else ()
        self.loss_fn = loss_fn
        self.parameters = [p for p in parameters if p.requires_grad]
        self.loss_parameters = [p for p in loss_parameters if p.requires_grad]
        self.grad_threshold = grad_threshold
        self.project = project
        self.epoch = 0
        self.log = StepLog(sync_every, stop_on_nonfinite=False)
        self.last: dict[str, Tensor] | None = None
        self._handle = None

    def __call__(self, embeddings: Tensor, labels: Any = None, *args: Any, **kwargs: Any) -> Tensor:
        loss = self.loss_fn(embeddings, labels, *args, **kwargs)
        if torch.is_grad_enabled() and isinstance(embeddings, Tensor) and embeddings.requires_grad \
                and isinstance(loss, Tensor) and loss.requires_grad:
            self._watch(embeddings, loss)
        return loss

    def _watch(self, embeddings: Tensor, loss: Tensor) -> None:
        self.close()  # a hook whose backward never came
        out = getattr(self.loss_fn, "last", None)
        out = out if isinstance(out, LossOutput) else None  # a vgcore loss: its per-sample terms
        z, value, epoch = embeddings.detach(), loss.detach(), self.epoch
        n_head = len(self.parameters)
        done = []

        def on_backward(grads) -> None:
            if done or grads[0] is None:  # a second backward of the same graph; not through the embeddings
                return
            done.append(True)
            emb_grad = tangential(grads[0], z) if self.project == "tangential" else grads[0]
            stats = greediness(out, emb_grad, _as_params(grads[1:1 + n_head]), _as_params(grads[1 + n_head:]),
                               grad_threshold=self.grad_threshold)
            self.last = stats
            self.log.append(epoch, torch.stack([value, *(stats[k].to(value.dtype) for k in GREEDINESS_KEYS)]))

        self._handle = torch.autograd.graph.register_multi_grad_hook(
            [embeddings, *self.parameters, *self.loss_parameters], on_backward, mode="all")

    def frame(self, all_columns: bool = False) -> pd.DataFrame:
        """Every logged step: columns ``step``, ``epoch``, ``train_loss`` and the GREEDINESS keys.

        A GREEDINESS key that is NaN in every row (a PML loss's terms; ``adam_step_norm_mean``,
        since the monitor does not see the optimiser) is left out unless ``all_columns``; the first
        three columns always stay, and a frame with no row keeps every column.
        """
        self.log.flush()
        frame = self.log.frame()
        if all_columns or frame.empty:
            return frame
        empty = [c for c in GREEDINESS_KEYS if frame[c].isna().all()]
        return frame.drop(columns=empty)

    def close(self) -> None:
        """Remove the pending hook, if any."""
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def __enter__(self) -> GreedinessMonitor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _as_params(grads) -> list[SimpleNamespace]:
    """The gradients the hook caught, shaped as what :func:`greediness` reads (objects with ``.grad``)."""
    return [SimpleNamespace(grad=g) for g in grads]
