"""Differential tests: vgcore.losses against pytorch-metric-learning (PML) as an oracle.

For the six losses PML has, and the fair comparison's baseline (`multisimilarity`, PML's
MultiSimilarityLoss), our loss configured as PROTOCOL.md's "PML mapping" must give the same value and
the same gradients (embeddings and, for ArcFace, class weights) to rtol 1e-5 in float64, on several
random batches and label layouts.
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
pml_miners = require("pytorch_metric_learning.miners", DEV_EXTRA)

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


def _mined(loss, miner):
    """A PML loss computed on the triplets its miner selects, called like a loss."""
    return lambda z, labels: loss(z, labels, miner(z, labels))


def compare(ours_fn, pml_fn, z, labels, extra_params=()):
    """Same value and same gradient w.r.t. the embeddings (and paired extra parameters)."""
    za = z.clone().requires_grad_(True)
    zb = z.clone().requires_grad_(True)
    a = ours_fn(za, labels)
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
        ("triplet", dict()),  # FaceNet: squared distances, margin 0.2; PML's non-zero average
        lambda: pml_losses.TripletMarginLoss(
            margin=0.2,
            distance=pml_distances.LpDistance(power=2),
            reducer=pml_reducers.AvgNonZeroReducer(),
        ),
    ),
    "triplet_mean_over_all": (
        ("triplet", dict(reduction="mean")),  # zeros included
        lambda: pml_losses.TripletMarginLoss(
            margin=0.2,
            distance=pml_distances.LpDistance(power=2),
            reducer=pml_reducers.MeanReducer(),
        ),
    ),
    "triplet_semihard_variant": (
        ("triplet_semihard", dict()),  # FaceNet's semi-hard negatives: PML's semihard miner
        lambda: _mined(
            pml_losses.TripletMarginLoss(margin=0.2, distance=pml_distances.LpDistance(power=2)),
            pml_miners.TripletMarginMiner(margin=0.2, type_of_triplets="semihard",
                                          distance=pml_distances.LpDistance(power=2)),
        ),
    ),
    "triplet_semihard_plain": (
        ("triplet", dict(mining="semihard", squared=False, margin=0.3)),
        lambda: _mined(
            pml_losses.TripletMarginLoss(margin=0.3),
            pml_miners.TripletMarginMiner(margin=0.3, type_of_triplets="semihard"),
        ),
    ),
    "triplet_plain_mean": (
        ("triplet", dict(squared=False, margin=0.3, reduction="mean")),
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
        ("npair_all", dict(normalize=True)),  # documented: "all" pairs == NT-Xent at T = 1
        lambda: pml_losses.NTXentLoss(temperature=1.0),
    ),
    "scl": (("scl", dict()), lambda: pml_losses.SupConLoss()),
    "scl_t05": (("scl", dict(temperature=0.5)), lambda: pml_losses.SupConLoss(temperature=0.5)),
    # the baseline at PML's defaults and at the two ends of the tuned range of base (vgcore.tuning)
    "multisimilarity": (("multisimilarity", dict()), lambda: pml_losses.MultiSimilarityLoss()),
    "multisimilarity_low": (
        ("multisimilarity", dict(alpha=1.0, beta=20.0, base=0.3)),
        lambda: pml_losses.MultiSimilarityLoss(alpha=1.0, beta=20.0, base=0.3),
    ),
    "multisimilarity_high": (
        ("multisimilarity", dict(alpha=4.0, beta=80.0, base=0.8)),
        lambda: pml_losses.MultiSimilarityLoss(alpha=4.0, beta=80.0, base=0.8),
    ),
}
MULTISIMILARITY = [c for c in CASES if c.startswith("multisimilarity")]


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
        assert float(make_loss(name)(z, distinct)) == 0.0 == float(pml(z, distinct))
    # SCL on a single-class batch: Khosla's formula is defined (no negatives needed), PML returns 0
    one_class = torch.zeros(5, dtype=torch.long)
    assert float(pml_losses.SupConLoss()(z, one_class)) == 0.0
    assert float(make_loss("scl")(z, one_class)) > 0.0


@pytest.mark.parametrize("case", MULTISIMILARITY)
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("labels", [
    [0, 0, 1, 2, 3, 3, 3, 4, 5, 6, 1, 7],  # singletons: anchors without a positive, beside ones with
    list(range(10)),  # no positive pair in the batch: every anchor keeps its negative part only
    [2] * 6,  # one class: positive parts only
])
def test_multisimilarity_matches_pml_where_anchors_lack_positives(case, seed, labels):
    """PML's MultiSimilarityLoss keeps an anchor without positives in its mean with its negative part
    (an empty log-sum-exp is 0, MeanReducer over all B anchors); so does ours, also when no anchor has
    a positive (has_positives False, a non-zero loss: the documented exception, as contrastive's)."""
    (name, hp), pml_factory = CASES[case]
    gen = torch.Generator().manual_seed(seed)
    y = torch.tensor(labels)
    z = torch.randn(len(y), 8, generator=gen, dtype=F64)
    ours = make_loss(name, **hp)
    loss = compare(ours, pml_factory(), z, y)
    lonely = (y.unsqueeze(0) == y.unsqueeze(1)).sum(dim=1) == 1
    assert bool(ours.last.has_positives) == (not bool(lonely.all()))
    assert float(loss.detach()) > 0.0 and bool((ours.last.per_sample[lonely] > 0).all())


def test_multisimilarity_departs_from_pml_only_where_pml_sees_at_most_one_pair_of_each_kind():
    """PML's pair losses return 0 when every list of the pair tuple holds at most one pair; the
    Multi-Similarity formula is still defined there and ours computes it (PROTOCOL.md, "Losses")."""
    z = torch.randn(4, 8, generator=torch.Generator().manual_seed(0), dtype=F64)
    y = torch.tensor([0, 0, 1, 1])
    one_each = (torch.tensor([0]), torch.tensor([1]), torch.tensor([0]), torch.tensor([2]))
    assert float(pml_losses.MultiSimilarityLoss()(z, y, one_each)) == 0.0
    ours = make_loss("multisimilarity")
    assert float(ours(z, y, one_each)) > 0.0 and int(ours.last.n_terms) == 2
    two_positives = (torch.tensor([0, 1]), torch.tensor([1, 0]), torch.tensor([0]), torch.tensor([2]))
    torch.testing.assert_close(ours(z, y, two_positives), pml_losses.MultiSimilarityLoss()(z, y, two_positives),
                               **TOL)


# ---------------------------------------------------------------- drop-in: miners, ref_emb, a PML loop

lmu = require("pytorch_metric_learning.utils.loss_and_miner_utils", DEV_EXTRA)

MINERS = {
    "pair_margin": lambda: pml_miners.PairMarginMiner(pos_margin=0.5, neg_margin=0.9),
    "multi_similarity": lambda: pml_miners.MultiSimilarityMiner(epsilon=0.1),
    "triplet_margin": lambda: pml_miners.TripletMarginMiner(margin=0.2, type_of_triplets="all"),
}
# PML's pair losses count a pair as often as the tuple lists it, and triplets list each (a, p) once per
# negative; ours count a listed pair once (PROTOCOL.md "Losses"): for these, PML gets the unique pairs.
COUNTS_PAIRS_ONCE = {"contrastive_pml_default", "contrastive_margins", "infonce_our_default", "infonce_pml_default",
                     "npair_all_is_ntxent_t1"}


def unique_pairs(triplets):
    a, p, n = triplets
    pos, neg = torch.unique(torch.stack([a, p]), dim=1), torch.unique(torch.stack([a, n]), dim=1)
    return pos[0], pos[1], neg[0], neg[1]


def compare_call(ours, theirs, args_ours, args_theirs, wrt):
    """Value and gradients w.r.t. each tensor in `wrt` ((ours, theirs) pairs; PML's class weights are
    our weights transposed) agree."""
    a, b = ours(*args_ours), theirs(*args_theirs)
    torch.testing.assert_close(a, b, **TOL)
    for ga, gb in zip(torch.autograd.grad(a, [x for x, _ in wrt]), torch.autograd.grad(b, [y for _, y in wrt]),
                      strict=True):
        torch.testing.assert_close(ga, gb.T if ga.shape != gb.shape else gb, **TOL)
    return a


# cases whose PML side mines its own triplets (the semi-hard variant): no second miner, no reference set
SELF_MINED = {"triplet_semihard_variant", "triplet_semihard_plain"}


@pytest.mark.parametrize("miner", MINERS)
@pytest.mark.parametrize("case", [c for c in CASES if c not in SELF_MINED])
@pytest.mark.parametrize("seed", SEEDS)
def test_with_a_pml_miner_matches_pml(case, miner, seed):
    (name, hp), pml_factory = CASES[case]
    z, labels = batch("random", seed, normalized=True)
    mined = MINERS[miner]()(z, labels)
    ours, theirs = make_loss(name, **hp), pml_factory()
    theirs_tuple = unique_pairs(mined) if len(mined) == 3 and case in COUNTS_PAIRS_ONCE else mined
    za, zb = z.clone().requires_grad_(True), z.clone().requires_grad_(True)
    a, b = ours(za, labels, mined), theirs(zb, labels, theirs_tuple)
    if name == "scl" and miner == "pair_margin":
        # an anchor whose mined pairs are all positive has L_i = 0: ours averages over anchors with a
        # positive (Khosla), PML over anchors with a non-zero term (PROTOCOL.md "Losses")
        per = ours.last.per_sample
        with_positive = torch.zeros(len(labels), dtype=torch.bool).index_fill_(0, mined[0], True)
        torch.testing.assert_close(a.detach(), per.sum() / with_positive.sum(), **TOL)
        torch.testing.assert_close(b.detach(), per.sum() / (per > 0).sum(), **TOL)
        return
    torch.testing.assert_close(a, b, **TOL)
    torch.testing.assert_close(torch.autograd.grad(a, za)[0], torch.autograd.grad(b, zb)[0], **TOL)


@pytest.mark.parametrize("case", [c for c in CASES if CASES[c][0][1].get("pairs") != "one_per_class"
                                  and c not in SELF_MINED])
@pytest.mark.parametrize("seed", SEEDS)
def test_with_ref_emb_matches_pml(case, seed):
    """Anchors from the batch, positives and negatives from a reference set (a memory bank, a second view)."""
    (name, hp), pml_factory = CASES[case]
    z, labels = batch("random", seed, normalized=True)
    ref, ref_labels = batch("m_per_class", seed + 10, normalized=True)
    za, zb, ra, rb = (t.clone().requires_grad_(True) for t in (z, z, ref, ref))
    compare_call(make_loss(name, **hp), pml_factory(), (za, labels, None, ra, ref_labels),
                 (zb, labels, None, rb, ref_labels), [(za, zb), (ra, rb)])


@pytest.mark.parametrize("miner", MINERS)
def test_arcface_weights_mined_samples_like_pml(miner):
    z, labels = batch("random", 0, normalized=True)
    mined = MINERS[miner]()(z, labels)
    torch.manual_seed(0)
    ours = make_loss("arcface", 5, z.shape[1]).double()
    theirs = pml_losses.ArcFaceLoss(5, z.shape[1], margin=math.degrees(0.5), scale=64.0).double()
    with torch.no_grad():
        theirs.W.copy_(ours.weight.T)
    za, zb = z.clone().requires_grad_(True), z.clone().requires_grad_(True)
    compare_call(ours, theirs, (za, labels, mined), (zb, labels, mined), [(za, zb), (ours.weight, theirs.W)])


@pytest.mark.parametrize("name", ["contrastive", "triplet", "npair", "infonce", "scl", "multisimilarity"])
def test_every_pair_as_a_tuple_changes_nothing(name):
    """A miner that returns every pair gives the value of no miner, to rounding."""
    z, labels = batch("long_tail", 0, normalized=True)
    loss_fn = make_loss(name)
    plain, all_pairs = loss_fn(z, labels), loss_fn(z, labels, lmu.get_all_pairs_indices(labels))
    torch.testing.assert_close(all_pairs, plain, rtol=1e-12, atol=1e-12)


def test_a_vgcore_loss_drops_into_a_pml_training_loop():
    """The PML loop (miner -> loss(emb, labels, indices_tuple) -> backward -> step) trains the same
    model with our triplet loss as with PML's TripletMarginLoss configured alike."""
    gen = torch.Generator().manual_seed(0)
    labels_all = torch.randint(0, 6, (96,), generator=gen)
    x_all = torch.randn(6, 12, generator=gen, dtype=F64)[labels_all] + torch.randn(96, 12, generator=gen, dtype=F64)

    def train(loss_func):
        torch.manual_seed(0)
        model = torch.nn.Linear(12, 8).double()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
        miner = pml_miners.MultiSimilarityMiner(epsilon=0.1)
        losses = []
        for step in range(6):
            x, y = x_all[step * 16:(step + 1) * 16], labels_all[step * 16:(step + 1) * 16]
            optimizer.zero_grad()
            embeddings = model(x)
            indices_tuple = miner(embeddings, y)
            loss = loss_func(embeddings, y, indices_tuple)
            loss.backward()
            optimizer.step()
            losses.append(loss.detach())
        return torch.stack(losses), model.weight.detach()

    ours = make_loss("triplet", squared=False, margin=0.05, reduction="nonzero_mean")
    ours_losses, ours_weight = train(ours)
    pml_losses_, pml_weight = train(pml_losses.TripletMarginLoss())
    torch.testing.assert_close(ours_losses, pml_losses_, **TOL)
    torch.testing.assert_close(ours_weight, pml_weight, **TOL)
    assert int(ours.last.n_terms) > 0 and ours.last.per_sample.shape == (16,)  # the diagnostics' view


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("seed", SEEDS)
def test_npair_default_is_sohns_construction_as_pml_builds_it(layout, seed):
    """The default `npair` (one pair per class, raw dot products) behind the head's L2 normalisation
    equals PML's NPairsLoss (which normalises inside), in value and in the gradient that reaches the
    head's output."""
    z, labels = batch(layout, seed + 200)
    ours = make_loss("npair")
    compare(lambda x, y: ours(torch.nn.functional.normalize(x, dim=1), y), pml_losses.NPairsLoss(), z, labels)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("normalize", [True, False])
def test_npair_groups_with_two_per_class_is_pmls_npairs_loss(seed, normalize):
    """With K = 2 samples per class (shuffled), `npair_groups` has one group, Sohn's: it equals PML's
    NPairsLoss as the default `npair` does (normalize=True inside; raw dot products behind the head's
    normalisation)."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randperm(12, generator=gen) % 6
    z = torch.randn(12, 8, generator=gen, dtype=F64)
    if normalize:
        compare(make_loss("npair_groups", normalize=True), pml_losses.NPairsLoss(), z, labels)
    else:
        ours = make_loss("npair_groups")
        compare(lambda x, y: ours(torch.nn.functional.normalize(x, dim=1), y), pml_losses.NPairsLoss(), z, labels)
