"""Each sample's share of the optimiser's actual step: a per-sample update size free of the loss's scale.

For a Linear layer ``h_i = W a_i + b`` the batch gradient is a sum over samples,
``dL/dW = sum_i delta_i a_i^T`` and ``dL/db = sum_i delta_i`` with ``delta_i = dL/dh_i``, so sample
i's part of the gradient is ``G_i = (delta_i a_i^T, delta_i)``. Adam moves every parameter by
``lr * m_hat / (sqrt(v_hat) + eps)``, with ``m_t = beta1 m_{t-1} + (1 - beta1) g_t``; sample i's part
of this step's increment, preconditioned as Adam applies it, is

    c_i = (1 - beta1) G_i / (sqrt(v_hat_t) + eps),   v_hat_t = v_t / (1 - beta2^t)

(elementwise, over every Linear parameter of the head; ``v_t`` is Adam's second moment *after* this
step's update). Multiplying the loss by any constant multiplies ``G_i`` and ``sqrt(v_hat)`` alike, so
``||c_i||`` does not move (up to ``eps``): unlike ``||dL/dz_i||`` it does not follow a loss's
temperature, scale or reduction. Units: a fraction of Adam's per-coordinate step size (``lr``).

At Adam's first step ``v_hat_1 = g_1^2``, so each coordinate's share is ``(1 - beta1) |G_i| / |g|``: a
coordinate where the samples' parts nearly cancel gives a share set by what is left of the sum,
on a real batch its rounding (the demo's triplet run read 26.5 on one CPU and 50.8 on another,
against about 0.3 at every later step, where ``v_hat`` averages several steps' gradients).
:func:`step_share` is therefore NaN at the first step, and run summaries (a NaN-skipping mean)
start at the second.

:func:`adam_step_norms` returns ``||c_i||`` per sample; :func:`mover_mean` summarises them;
:func:`step_share` is what the training step logs.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def adam_step_norms(trace: list, optimizer: torch.optim.Optimizer) -> Tensor:
    """``||c_i||_2`` for every sample of the batch (see the module docstring), read after
    ``optimizer.step()`` from Adam's state; ``trace`` is the head's ``(layer, input, output)`` list
    (:meth:`~vgcore.train.head.ProjectionHead.forward`), whose outputs hold their gradients. No host sync."""
    groups = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    total = None
    for layer, a, h in trace:
        d2, a2 = h.grad.detach().square(), a.detach().square()
        for param in (layer.weight, layer.bias):
            if param is None:
                continue
            group, state = groups[id(param)], optimizer.state[param]
            beta1, beta2 = group["betas"]
            v = state["exp_avg_sq"]
            inv = ((v / (1 - beta2 ** state["step"].to(v.dtype))).sqrt() + group["eps"]).reciprocal().square()
            # sum over the parameter's entries of (delta_i a_i^T)^2 / s^2 (weight) or delta_i^2 / s^2 (bias)
            part = (1 - beta1) ** 2 * ((d2 @ inv * a2).sum(dim=1) if param is layer.weight else d2 @ inv)
            total = part if total is None else total + part
    if total is None:
        raise ValueError("the trace holds no Linear layer: call the head with trace=[] before backward")
    return total.sqrt()


def step_share(trace: list, optimizer: torch.optim.Optimizer) -> Tensor:
    """:func:`mover_mean` of :func:`adam_step_norms`, NaN at Adam's first step (see the module
    docstring: there it is a ratio set by cancellation, not a step size). No host sync."""
    share = mover_mean(adam_step_norms(trace, optimizer))
    step = optimizer.state[trace[0][0].weight]["step"].to(share.device)
    return torch.where(step > 1, share, torch.full_like(share, math.nan))


def mover_mean(c: Tensor) -> Tensor:
    """``sum_i c_i^2 / sum_i c_i``: the mean of ``c`` weighted by itself, the typical size of a sample
    that moves (k samples of size s and the rest 0 give s), threshold-free; NaN when nothing moves."""
    return c.square().sum() / c.sum()
