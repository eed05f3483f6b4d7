"""Differential tests: vgcore.losses against pytorch-metric-learning (PML) as an oracle.

For the six losses PML has, our loss configured as PROTOCOL.md's "PML mapping" must give the same
value and the same gradients (embeddings and, for ArcFace, class weights) to rtol 1e-5 in float64,
on several random batches and label layouts.
"""

from __future__ import annotations

import math

import pytest
import torch

from vgcore.losses import make_loss

from _ci import DEV_EXTRA, require

pml_losses = require("pytorch_metric_learning.losses", DEV_EXTRA)
pml_distances = require("pytorch_metric_learning.distances", DEV_EXTRA)
pml_reducers = require("pytorch_metric_learning.reducers", DEV_EXTRA)

F64 = torch.float64
TOL = {"rtol": 1e-5, "atol": 1e-8}

# Label layouts: m-per-class (balanced), long-tailed with singletons, unsorted random.
LAYOUTS = {
    "m_per_class": lambda g: torch.arange(24) // 4,
    "long_tail": lambda g: torch.tensor([0] * 9 + [1] * 5 + [2] * 3 + [3, 3, 4, 5, 6]),
    "random": lambda g: torch.randint(0, 5, (30,), generator=g),
}
SEEDS = (0, 1, 2)


def batch(layout, seed, dim=8, normalized=False):
    gen = torch.Generator().manual_seed(seed)
    labels = LAYOUTS[layout](gen)
    z = torch.randn(len(labels), dim, generator=gen, dtype=F64)
    if normalized:
        z = torch.nn.functional.normalize(z, dim=1)
    return z, labels


def compare(ours_fn, pml_fn, z, labels, extra_params=()):
    """Same value and same gradient w.r.t. the embeddings (and paired extra parameters)."""
    za = z.clone().requires_grad_(True)
    zb = z.clone().requires_grad_(True)
    a = ours_fn(za, labels).loss
    b = pml_fn(zb, labels)
    torch.testing.assert_close(a, b, **TOL)
    ours_params = [p for p, _ in extra_params]
    pml_params = [q for _, q in extra_params]
    grads_a = torch.autograd.grad(a, [za, *ours_params])
    grads_b = torch.autograd.grad(b, [zb, *pml_params])
    for (ga, gb), transpose in zip(
        zip(grads_a, grads_b, strict=True), [False] + [True] * len(extra_params), strict=True
    ):
        torch.testing.assert_close(ga, gb.T if transpose else gb, **TOL)
    return a


CASES = {
    # ours (hyperparameters)                            PML equivalent
    "contrastive_pml_default": (
        ("contrastive", dict(squared=False, normalize=True, reduction="nonzero_mean")),
        lambda: pml_losses.ContrastiveLoss(),
    ),
    "contrastive_margins": (
        (
            "contrastive",
            dict(
                squared=False, normalize=True, reduction="nonzero_mean", margin=0.9, pos_margin=0.3
            ),
        ),
        lambda: pml_losses.ContrastiveLoss(pos_margin=0.3, neg_margin=0.9),
    ),
    "triplet_pml_default": (
        ("triplet", dict(squared=False, margin=0.05, reduction="nonzero_mean")),
        lambda: pml_losses.TripletMarginLoss(),
    ),
    "triplet_our_default": (
        ("triplet", dict()),  # FaceNet: squared distances, margin 0.2, mean over all triplets
        lambda: pml_losses.TripletMarginLoss(
            margin=0.2,
            distance=pml_distances.LpDistance(power=2),
            reducer=pml_reducers.MeanReducer(),
        ),
    ),
    "triplet_plain_mean": (
        ("triplet", dict(squared=False, margin=0.3)),
        lambda: pml_losses.TripletMarginLoss(margin=0.3, reducer=pml_reducers.MeanReducer()),
    ),
    "npair": (
        ("npair", dict(pairs="one_per_class", normalize=True)),
        lambda: pml_losses.NPairsLoss(),
    ),
    "npair_raw_dot": (
        ("npair", dict(pairs="one_per_class")),
        lambda: pml_losses.NPairsLoss(
            distance=pml_distances.DotProductSimilarity(normalize_embeddings=False)
        ),
    ),
    "infonce_our_default": (("infonce", dict()), lambda: pml_losses.NTXentLoss(temperature=0.1)),
    "infonce_pml_default": (
        ("infonce", dict(temperature=0.07)),
        lambda: pml_losses.NTXentLoss(),
    ),
    "npair_all_is_ntxent_t1": (
        ("npair", dict(normalize=True)),  # documented: "all" pairs == NT-Xent at T = 1
        lambda: pml_losses.NTXentLoss(temperature=1.0),
    ),
    "scl": (("scl", dict()), lambda: pml_losses.SupConLoss()),
    "scl_t05": (("scl", dict(temperature=0.5)), lambda: pml_losses.SupConLoss(temperature=0.5)),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("seed", SEEDS)
def test_pair_losses_match_pml(case, layout, seed):
    (name, hp), pml_factory = CASES[case]
    z, labels = batch(layout, seed)
    ours = make_loss(name, **hp)
    theirs = pml_factory()
    compare(ours, theirs, z, labels)
    # also on unit-norm input, what the head produces
    z, labels = batch(layout, seed + 100, normalized=True)
    compare(ours, theirs, z, labels)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("scale,margin", [(64.0, 0.5), (16.0, 0.2)])
def test_arcface_matches_pml(layout, seed, scale, margin):
    z, labels = batch(layout, seed)
    num_classes = int(labels.max()) + 2  # one class never seen in the batch
    torch.manual_seed(seed)
    ours = make_loss("arcface", num_classes, z.shape[1], scale=scale, margin=margin).double()
    theirs = pml_losses.ArcFaceLoss(
        num_classes, z.shape[1], margin=math.degrees(margin), scale=scale
    ).double()
    with torch.no_grad():
        theirs.W.copy_(ours.weight.T)
    compare(ours, theirs, z, labels, extra_params=[(ours.weight, theirs.W)])


def test_pml_zero_cases_agree():
    """Batches where PML returns its zero loss: ours is zero too (one exception, documented)."""
    z = torch.randn(5, 4, dtype=F64)
    distinct = torch.arange(5)
    for name, pml in [
        ("triplet", pml_losses.TripletMarginLoss()),
        ("infonce", pml_losses.NTXentLoss()),
        ("scl", pml_losses.SupConLoss()),
        ("npair", pml_losses.NPairsLoss()),
    ]:
        assert float(make_loss(name)(z, distinct).loss) == 0.0 == float(pml(z, distinct))
    # SCL on a single-class batch: Khosla's formula is defined (no negatives needed), PML returns 0
    one_class = torch.zeros(5, dtype=torch.long)
    assert float(pml_losses.SupConLoss()(z, one_class)) == 0.0
    assert float(make_loss("scl")(z, one_class).loss) > 0.0
