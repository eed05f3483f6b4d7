"""The trained part of the model: a projection head on frozen features, output on the unit sphere."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

NUMERICS_VERSION = 1
"""Bumped by hand when the head's initialisation or forward pass changes its numbers (vgcore.identity)."""


class ProjectionHead(nn.Module):
    """Linear(in, out) (or a one-hidden-layer ReLU MLP) followed by L2 normalisation: ||z||_2 = 1."""

    def __init__(self, in_dim: int, out_dim: int, kind: str = "linear", hidden: int = 512):
        super().__init__()
        if kind == "linear":
            self.net = nn.Linear(in_dim, out_dim)
        else:
            self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, out_dim))

    def forward(self, x: Tensor, trace: list | None = None) -> Tensor:
        """``normalize(net(x))``. ``trace``: a list that receives ``(layer, input, output)`` of every
        Linear layer, each output keeping its gradient after backward (``retain_grad``), from which
        the per-sample parameter gradients ``dL/doutput_i (x) input_i`` are read
        (:mod:`vgcore.metrics.adam_step`)."""
        if trace is None:
            return F.normalize(self.net(x), dim=1)
        h = x
        for layer in self.net if isinstance(self.net, nn.Sequential) else (self.net,):
            out = layer(h)
            if isinstance(layer, nn.Linear) and out.requires_grad:
                out.retain_grad()
                trace.append((layer, h, out))
            h = out
        return F.normalize(h, dim=1)
