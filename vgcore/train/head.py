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

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(self.net(x), dim=1)
