"""Superclass structure (vgcore.metrics.hierarchy) against a brute-force loop and closed layouts."""

from __future__ import annotations

import math

import pytest
import torch

from vgcore.metrics import superclass_metrics


def _bruteforce(z, y, coarse):
    zn = torch.nn.functional.normalize(z.double(), dim=1)
    fine_hits = fine_q = super_hits = 0
    n = len(y)
    for i in range(n):
        best, best_j, best_w, best_wj = -math.inf, None, -math.inf, None
        for j in range(n):
            if j == i:
                continue
            s = float(zn[i] @ zn[j])
            if s > best:
                best, best_j = s, j
            if coarse[j] == coarse[i] and s > best_w:
                best_w, best_wj = s, j
        super_hits += int(coarse[best_j] == coarse[i])
        if any(y[j] == y[i] for j in range(n) if j != i):
            fine_q += 1
            fine_hits += int(y[best_wj] == y[i])
    return {"fine_recall@1_within_super": fine_hits / fine_q, "superclass_recall@1": super_hits / n}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_a_brute_force_loop(seed):
    g = torch.Generator().manual_seed(seed)
    coarse = torch.arange(3).repeat_interleave(12)
    y = coarse * 3 + torch.arange(36) % 3
    z = torch.randn(3, 6, generator=g)[coarse] + 0.7 * torch.randn(9, 6, generator=g)[y] + 0.5 * torch.randn(36, 6, generator=g)
    y[5] = 100  # a lone fine class: no query of it, still a neighbour
    got = superclass_metrics(z, y, coarse, chunk_size=7)
    want = _bruteforce(z, y.tolist(), coarse.tolist())
    for key in want:
        assert got[key] == pytest.approx(want[key]), key


def test_collapsed_fine_classes_score_at_chance_and_separated_ones_at_one():
    coarse = torch.tensor([0] * 8 + [1] * 8)
    y = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7])
    centres = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])
    # fine classes of a superclass at distinct angles close to the superclass direction
    angle = (y % 4).double() * 0.1 + coarse.double() * math.pi
    apart = torch.stack([angle.cos(), angle.sin()], dim=1) + 1e-4 * torch.arange(16).double().unsqueeze(1)
    assert superclass_metrics(apart, y, coarse)["fine_recall@1_within_super"] == 1.0
    assert superclass_metrics(apart, y, coarse)["superclass_recall@1"] == 1.0
    # every member of a superclass on the same point: ties go to the lowest index, which is of the
    # query's own fine class only for the queries of the superclass's first fine class
    collapsed = centres[coarse].double()
    out = superclass_metrics(collapsed, y, coarse)
    assert out["fine_recall@1_within_super"] == pytest.approx(4 / 16)


def test_no_superclasses_gives_nan_and_bad_shapes_are_named():
    z, y = torch.randn(6, 3), torch.arange(6) % 2
    assert all(math.isnan(v) for v in superclass_metrics(z, y, None).values())
    with pytest.raises(ValueError, match="coarse labels"):
        superclass_metrics(z, y, torch.zeros(5, dtype=torch.long))
