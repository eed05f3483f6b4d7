"""vgcore.losses against hand-enumerated references and structural properties.

Every reference below lists its tuples with plain Python loops on a tiny float64 batch, using
only per-pair scalar arithmetic (no vgcore.losses.pairwise), so it shares no code with the losses.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import re

import pytest
import torch
import torch.nn.functional as F

from vgcore.losses import LOSSES, LossOutput, loss_hyperparameters, make_loss
from vgcore.registry import BASELINES

F64 = torch.float64
CHECKED = (*LOSSES, *BASELINES)  # the paper's seven and the fair comparison's baseline

LAYOUTS = {
    "pairs_and_singleton": [0, 0, 1, 1, 2, 2, 2, 3],
    "unsorted": [2, 0, 1, 0, 2, 1, 1, 0, 3],
    "two_classes": [1, 0, 1, 1, 0, 0, 1],
}
SEEDS = (0, 1)
NUM_CLASSES = 4
DIM = 5
# The documented defaults (PROTOCOL.md "Losses"), written out here: a reference never reads a
# hyperparameter from the object under test, so changing a default fails these tests.
PAIR_SOFTMAX_DEFAULTS = {
    "infonce": {"temperature": 0.1, "normalize": True},
    "npair": {"temperature": 1.0, "normalize": False},
    "npair_all": {"temperature": 1.0, "normalize": False},
}
MULTISIMILARITY_DEFAULTS = {"alpha": 2.0, "beta": 50.0, "base": 0.5}


def batch(layout: str, seed: int, dim: int = DIM):
    gen = torch.Generator().manual_seed(seed)
    labels = torch.tensor(LAYOUTS[layout])
    z = torch.randn(len(labels), dim, generator=gen, dtype=F64) * 0.6
    return z.requires_grad_(True), labels


def build(name: str, seed: int = 0, **hp):
    torch.manual_seed(seed)
    return make_loss(name, num_classes=NUM_CLASSES, embedding_dim=DIM, **hp).double()


def run(loss_fn, *args, **kwargs) -> LossOutput:
    """Call a loss the way a training loop does and return its ``last`` output with the live loss
    (the returned tensor, which carries the graph) in place of the detached one."""
    loss = loss_fn(*args, **kwargs)
    torch.testing.assert_close(loss.detach(), loss_fn.last.loss, rtol=0, atol=0, equal_nan=True)
    return dataclasses.replace(loss_fn.last, loss=loss)


def grad_of(value: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    (g,) = torch.autograd.grad(value, z, retain_graph=True, allow_unused=True)
    return torch.zeros_like(z) if g is None else g


def close(a, b, tol=1e-9):
    torch.testing.assert_close(torch.as_tensor(a), torch.as_tensor(b), rtol=tol, atol=tol)


# ---------------------------------------------------------------- hand references (loops)


def dist(z, i, j, squared=False, normalize=False):
    a, b = (F.normalize(z[i], dim=0), F.normalize(z[j], dim=0)) if normalize else (z[i], z[j])
    d2 = ((a - b) ** 2).sum()
    return d2 if squared else d2.sqrt()


def cos(a, b):
    return (a * b).sum() / (a.norm() * b.norm())


def ref_contrastive(z, y, margin=1.0, pos_margin=0.0, squared=True, normalize=False):
    terms = {}
    for i, j in itertools.permutations(range(len(y)), 2):
        d = dist(z, i, j, normalize=normalize)
        if y[i] == y[j]:
            t = max(d - pos_margin, torch.zeros((), dtype=F64))
        else:
            t = max(margin - d, torch.zeros((), dtype=F64))
        terms[i, j] = 0.5 * t**2 if squared else t
    return terms


def ref_triplet(z, y, margin=0.2, squared=True, normalize=True):
    terms = {}
    n = len(y)
    for a, p, q in itertools.product(range(n), repeat=3):
        if a != p and y[a] == y[p] and y[a] != y[q]:
            dap = dist(z, a, p, squared, normalize)
            daq = dist(z, a, q, squared, normalize)
            terms[a, p, q] = torch.clamp(dap - daq + margin, min=0)
    return terms


def ref_pair_softmax(z, y, temperature, normalize):
    """term(a, p) = -log(e^{s_ap} / (e^{s_ap} + sum_n e^{s_an})): InfoNCE / N-pair ('all')."""
    n = len(y)

    def s(i, j):
        v = cos(z[i], z[j]) if normalize else (z[i] * z[j]).sum()
        return v / temperature

    terms = {}
    for a, p in itertools.permutations(range(n), 2):
        if y[a] == y[p]:
            num = torch.exp(s(a, p))
            den = num + sum(
                (torch.exp(s(a, q)) for q in range(n) if y[q] != y[a]), torch.zeros((), dtype=F64)
            )
            terms[a, p] = -torch.log(num / den)
    return terms


def ref_npair_one_per_class(z, y, normalize=False, temperature=1.0):
    """Sohn's N-pair as PML builds it: first two samples of each class form its pair."""
    first, second = {}, {}
    for i, c in enumerate(y):
        if c not in first:
            first[c] = i
        elif c not in second:
            second[c] = i
    classes = [c for c in first if c in second]

    def s(i, j):
        return (cos(z[i], z[j]) if normalize else (z[i] * z[j]).sum()) / temperature

    terms = {}
    for c in classes:
        a = first[c]
        logits = torch.stack([s(a, second[k]) for k in classes])
        terms[a] = torch.logsumexp(logits, 0) - s(a, second[c])
    return terms


def ref_scl(z, y, temperature=0.1):
    n = len(y)
    per = {}
    for i in range(n):
        positives = [p for p in range(n) if p != i and y[p] == y[i]]
        if not positives:
            continue
        den = sum(torch.exp(cos(z[i], z[a]) / temperature) for a in range(n) if a != i)
        per[i] = {p: -torch.log(torch.exp(cos(z[i], z[p]) / temperature) / den) for p in positives}
    return per


def ref_arcface(z, y, weight, scale=64.0, margin=0.5):
    out = []
    for i in range(len(y)):
        logits = []
        for j in range(weight.shape[0]):
            c = cos(z[i], weight[j])
            if j == y[i]:
                theta = torch.acos(c)
                c = (
                    torch.cos(theta + margin)
                    if theta <= math.pi - margin
                    else c - margin * math.sin(margin)
                )
            logits.append(scale * c)
        logits = torch.stack(logits)
        out.append(-torch.log(torch.exp(logits[y[i]]) / torch.exp(logits).sum()))
    return out


def ref_ccl(z, y, centers, temperature=0.1, margin=0.2, center_weight=1.0):
    out = []
    for i in range(len(y)):
        cs = [cos(z[i], centers[j]) for j in range(centers.shape[0])]
        num = torch.exp((cs[y[i]] - margin) / temperature)
        den = num + sum(torch.exp(cs[j] / temperature) for j in range(len(cs)) if j != y[i])
        out.append(-torch.log(num / den) + center_weight * (1 - cs[y[i]]))
    return out


def ref_multisimilarity(z, y, alpha=2.0, beta=50.0, base=0.5):
    """Each anchor's (1/alpha) log(1 + sum_p e^{-alpha (S_ip - base)}) + (1/beta) log(1 + sum_n
    e^{beta (S_in - base)}) on cosines, an empty sum being 0; and every pair's summand."""
    per, summands = [], []
    for i in range(len(y)):
        pos = [torch.exp(-alpha * (cos(z[i], z[j]) - base)) for j in range(len(y)) if j != i and y[j] == y[i]]
        neg = [torch.exp(beta * (cos(z[i], z[j]) - base)) for j in range(len(y)) if y[j] != y[i]]
        zero = torch.zeros((), dtype=F64)
        per.append(torch.log1p(sum(pos, zero)) / alpha + torch.log1p(sum(neg, zero)) / beta)
        summands += pos + neg
    return torch.stack(per), summands


def per_anchor_mean(terms: dict, n: int) -> torch.Tensor:
    rows = []
    for a in range(n):
        mine = [t for k, t in terms.items() if k[0] == a]
        rows.append(torch.stack(mine).mean() if mine else torch.zeros((), dtype=F64))
    return torch.stack(rows)


def check(out: LossOutput, z, loss, per_sample, n_terms, n_active, tol=1e-9):
    close(out.loss, loss, tol)
    close(out.per_sample, per_sample, tol)
    assert int(out.n_terms) == n_terms
    assert int(out.n_active_terms) == n_active
    close(grad_of(out.loss, z), grad_of(loss, z), tol)


# ---------------------------------------------------------------- references, every loss


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(
    "hp", [{}, {"squared": False, "normalize": True, "margin": 0.8, "pos_margin": 0.1}]
)
def test_contrastive_reference(layout, seed, hp):
    z, y = batch(layout, seed)
    yl = y.tolist()
    terms = ref_contrastive(z, yl, **hp)
    values = torch.stack(list(terms.values()))
    out = run(build("contrastive", **hp), z, y)
    check(
        out, z, values.mean(), per_anchor_mean(terms, len(yl)), len(terms), int((values > 0).sum())
    )
    # PML-style reduction: mean of non-zero positive terms + mean of non-zero negative terms
    out = run(build("contrastive", reduction="nonzero_mean", **hp), z, y)
    pos = [t for (i, j), t in terms.items() if yl[i] == yl[j] and t > 0]
    neg = [t for (i, j), t in terms.items() if yl[i] != yl[j] and t > 0]
    expect = sum(pos) / max(len(pos), 1) + sum(neg) / max(len(neg), 1)
    close(out.loss, expect)
    close(grad_of(out.loss, z), grad_of(expect, z))


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("hp", [{}, {"squared": False, "margin": 0.3, "normalize": False}])
def test_triplet_reference(layout, seed, hp):
    z, y = batch(layout, seed)
    terms = ref_triplet(z, y.tolist(), **hp)
    values = torch.stack(list(terms.values()))
    out = run(build("triplet", reduction="mean", **hp), z, y)
    n_active = int((values > 0).sum())
    check(out, z, values.mean(), per_anchor_mean(terms, len(y)), len(terms), n_active)
    for loss_fn in (build("triplet", reduction="nonzero_mean", **hp), build("triplet", **hp)):  # the default
        out = run(loss_fn, z, y)
        expect = values.sum() / n_active
        close(out.loss, expect)
        close(grad_of(out.loss, z), grad_of(expect, z))


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(
    "name,hp",
    [
        ("infonce", {}),
        ("infonce", {"temperature": 0.5}),
        ("npair", {"pairs": "all"}),
        ("npair_all", {"normalize": True}),
    ],
)
def test_pair_softmax_reference(layout, seed, name, hp):
    z, y = batch(layout, seed)
    reference_hp = {k: v for k, v in hp.items() if k != "pairs"}  # the reference is the all-pairs form
    terms = ref_pair_softmax(z, y.tolist(), **{**PAIR_SOFTMAX_DEFAULTS[name], **reference_hp})
    values = torch.stack(list(terms.values()))
    out = run(build(name, **hp), z, y)
    check(
        out, z, values.mean(), per_anchor_mean(terms, len(y)), len(terms), int((values > 0).sum())
    )


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("hp", [{}, {"normalize": True}, {"temperature": 0.5}])
def test_npair_one_per_class_reference(layout, seed, hp):
    z, y = batch(layout, seed)
    terms = ref_npair_one_per_class(z, y.tolist(), **hp)
    per_sample = torch.stack([terms.get(i, torch.zeros((), dtype=F64)) for i in range(len(y))])
    out = run(build("npair", pairs="one_per_class", **hp), z, y)
    values = torch.stack(list(terms.values()))
    check(out, z, values.mean(), per_sample, len(terms), int((values > 0).sum()))


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("hp", [{}, {"temperature": 0.7}])
def test_scl_reference(layout, seed, hp):
    z, y = batch(layout, seed)
    per = ref_scl(z, y.tolist(), **hp)
    anchor_loss = {i: torch.stack(list(t.values())).mean() for i, t in per.items()}
    per_sample = torch.stack(
        [anchor_loss.get(i, torch.zeros((), dtype=F64)) for i in range(len(y))]
    )
    all_terms = torch.stack([t for d in per.values() for t in d.values()])
    out = run(build("scl", **hp), z, y)
    loss = torch.stack(list(anchor_loss.values())).mean()
    check(out, z, loss, per_sample, len(all_terms), int((all_terms > 0).sum()))


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("hp", [{}, {"scale": 8.0, "margin": 0.3}])
def test_arcface_reference(layout, seed, hp):
    z, y = batch(layout, seed)
    loss_fn = build("arcface", seed=seed, **hp)
    per = torch.stack(ref_arcface(z, y.tolist(), loss_fn.weight, **hp))
    out = run(loss_fn, z, y)
    check(out, z, per.mean(), per, len(y), int((per > 0).sum()))
    (g_ours,) = torch.autograd.grad(out.loss, loss_fn.weight, retain_graph=True)
    (g_ref,) = torch.autograd.grad(per.mean(), loss_fn.weight)
    close(g_ours, g_ref)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("hp", [{}, {"alpha": 1.0, "beta": 20.0, "base": 0.3}, {"alpha": 4.0, "beta": 80.0, "base": 0.8}])
def test_multisimilarity_reference(layout, seed, hp):
    z, y = batch(layout, seed)
    per, summands = ref_multisimilarity(z, y.tolist(), **{**MULTISIMILARITY_DEFAULTS, **hp})
    out = run(build("multisimilarity", **hp), z, y)
    # the mean over all B anchors, one without positives included with its negative part
    check(out, z, per.mean(), per, len(summands), sum(int(t > 0) for t in summands))
    assert bool(out.has_positives)


def test_multisimilarity_anchor_without_positives_keeps_its_negative_part():
    z, y = batch("pairs_and_singleton", 1)  # class 3 has one sample
    lonely = y.tolist().index(3)
    per, _ = ref_multisimilarity(z, y.tolist())
    out = run(build("multisimilarity"), z, y)
    close(out.per_sample, per)
    zero = torch.zeros((), dtype=F64)
    negative_part = torch.log1p(sum((torch.exp(50.0 * (cos(z[lonely], z[j]) - 0.5)) for j in range(len(y)) if j != lonely),
                                    zero)) / 50.0
    close(out.per_sample[lonely], negative_part, 1e-12)
    assert float(out.per_sample[lonely]) > 0.0
    close(out.loss, out.per_sample.sum() / len(y), 1e-12)  # the lonely anchor counts in the mean
    (g,) = torch.autograd.grad(out.loss, z)
    assert bool(g[lonely].abs().sum() > 0)


def test_multisimilarity_on_the_smallest_batches():
    """Two samples of one class: one positive pair each way, no negative; of two classes: one
    negative pair each way. The reference by hand, with the defaults written out."""
    z = torch.randn(2, DIM, generator=torch.Generator().manual_seed(9), dtype=F64).requires_grad_(True)
    c = cos(z[0], z[1])
    for labels, expect, positives in (([0, 0], torch.log1p(torch.exp(-2.0 * (c - 0.5))) / 2.0, True),
                                      ([0, 1], torch.log1p(torch.exp(50.0 * (c - 0.5))) / 50.0, False)):
        out = run(build("multisimilarity"), z, torch.tensor(labels))
        check(out, z, expect, torch.stack([expect, expect]), 2, 2, 1e-12)
        assert bool(out.has_positives) == positives


def test_multisimilarity_summands_that_underflow_are_not_active():
    # negatives at cosine -1: e^{50 (-1 - 0.5)} = e^-75 is not 0 in float64, e^{-800 * 1.5} is
    y = torch.tensor([0, 0, 1, 1])
    z = torch.tensor([[1.0, 0.0], [1.0, 0.0], [-1.0, 0.0], [-1.0, 0.0]], dtype=F64)
    out = run(build("multisimilarity"), z, y)
    assert int(out.n_terms) == 12 and int(out.n_active_terms) == 12
    out = run(build("multisimilarity", beta=800.0), z, y)
    assert int(out.n_terms) == 12 and int(out.n_active_terms) == 4  # the four positive pairs
    close(out.per_sample, torch.full((4,), math.log1p(math.exp(-2.0 * 0.5)) / 2.0, dtype=F64), 1e-15)


def test_arcface_fallback_branch_beyond_pi_minus_margin():
    """theta_y > pi - m takes the monotone branch cos(theta) - m sin(m)."""
    loss_fn = build("arcface", scale=2.0, margin=0.5)
    with torch.no_grad():
        loss_fn.weight.copy_(torch.eye(NUM_CLASSES, DIM))
    z = torch.tensor(
        [[-1.0, 0.05, 0.0, 0.0, 0.0], [0.9, 0.1, 0.2, 0.0, 0.0]], dtype=F64, requires_grad=True
    )
    y = torch.tensor([0, 0])
    per = torch.stack(ref_arcface(z, y.tolist(), loss_fn.weight, scale=2.0, margin=0.5))
    check(run(loss_fn, z, y), z, per.mean(), per, 2, 2)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("hp", [{}, {"temperature": 0.5, "margin": 0.2, "center_weight": 0.3}])
def test_ccl_reference(layout, seed, hp):
    z, y = batch(layout, seed)
    loss_fn = build("ccl", seed=seed, **hp)
    per = torch.stack(ref_ccl(z, y.tolist(), loss_fn.centers, **hp))
    out = run(loss_fn, z, y)
    check(out, z, per.mean(), per, len(y), int((per > 0).sum()))
    (g_ours,) = torch.autograd.grad(out.loss, loss_fn.centers, retain_graph=True)
    (g_ref,) = torch.autograd.grad(per.mean(), loss_fn.centers)
    close(g_ours, g_ref)


def test_ccl_parameters_and_ema_update():
    grad_mode = build("ccl")
    assert [p.shape for p in grad_mode.parameters()] == [(NUM_CLASSES, DIM)]
    ema = build("ccl", center_update="ema", momentum=0.75)
    assert list(ema.parameters()) == []
    before = ema.centers.clone()
    z, y = batch("pairs_and_singleton", 0)
    expected = before.clone()
    for c in range(NUM_CLASSES):
        members = [F.normalize(z[i].detach(), dim=0) for i in range(len(y)) if y[i] == c]
        if members:
            mean = torch.stack(members).mean(0)
            expected[c] = F.normalize(0.75 * before[c] + 0.25 * mean, dim=0)
    out = run(ema, z, y)
    # the loss used the centers from before the update
    close(out.loss, torch.stack(ref_ccl(z, y.tolist(), before)).mean())
    close(ema.centers, expected)
    out.loss.backward()  # the in-place update did not corrupt the graph
    ema.eval()
    after = ema.centers.clone()
    run(ema, z, y)
    close(ema.centers, after)  # no update in eval mode
    # a class absent from the batch keeps its center
    ema.train()
    ema(z[:2], y[:2])
    close(ema.centers[1:], after[1:])


@pytest.mark.parametrize("name,labels", [("contrastive", [0, 1]), ("contrastive", [0, 0]), ("triplet", [1, 0, 1])])
def test_smallest_batches_against_the_references(name, labels):
    # two samples: one pair per anchor; [1, 0, 1]: one triplet per anchor. Margins large enough
    # that every term is active.
    y = torch.tensor(labels)
    z = torch.randn(len(y), DIM, generator=torch.Generator().manual_seed(9), dtype=F64).requires_grad_(True)
    ref, margin = (ref_contrastive, 10.0) if name == "contrastive" else (ref_triplet, 5.0)
    terms = ref(z, labels, margin=margin)
    values = torch.stack(list(terms.values()))
    assert bool((values > 0).all())
    out = run(build(name, margin=margin), z, y)
    check(out, z, values.mean(), per_anchor_mean(terms, len(labels)), len(terms), len(terms))


def test_arcface_at_theta_exactly_pi_minus_margin_keeps_the_margin_form():
    """theta_y = pi - m exactly: the target logit is s cos(theta_y + m) = -s, not the fallback."""
    m, s = 0.5, 2.0
    loss_fn = build("arcface", scale=s, margin=m)
    with torch.no_grad():
        loss_fn.weight.copy_(torch.eye(NUM_CLASSES, DIM))
    z = torch.tensor([[-math.cos(m), math.sin(m), 0.0, 0.0, 0.0]], dtype=F64)
    assert float(F.normalize(z, dim=1)[0, 0]) == -math.cos(m)  # exactly on the boundary
    logits = torch.tensor([-s, s * math.sin(m), 0.0, 0.0], dtype=F64)
    expect = torch.logsumexp(logits, 0) - logits[0]
    close(run(loss_fn, z, torch.tensor([0])).per_sample, expect.unsqueeze(0), 1e-12)


def test_proxy_losses_on_a_perfectly_separated_batch_and_a_single_sample():
    # each sample on its own class vector: ArcFace's CE underflows to exactly 0 (scale 64)
    loss_fn = build("arcface")
    with torch.no_grad():
        loss_fn.weight.copy_(torch.eye(NUM_CLASSES, DIM))
    y = torch.tensor([0, 1, 2, 3, 1])
    out = run(loss_fn, F.one_hot(y, DIM).to(F64), y)
    assert float(out.loss.detach()) == 0.0 and int(out.n_terms) == 5 and int(out.n_active_terms) == 0
    for name in ("arcface", "ccl"):
        one = run(build(name), torch.randn(1, DIM, dtype=F64), torch.tensor([2]))
        assert int(one.n_terms) == 1 and bool(one.has_positives)


@pytest.mark.parametrize("name", ["arcface", "ccl"])
def test_proxy_loss_in_float32_takes_float64_embeddings(name):
    loss_fn = make_loss(name, num_classes=1, embedding_dim=1)  # the smallest sizes are valid
    z = torch.tensor([[0.5], [2.0]], dtype=F64, requires_grad=True)
    out = run(loss_fn, z, torch.tensor([0, 0]))
    assert out.loss.dtype == F64
    out.loss.backward()
    assert z.grad.dtype == F64


def test_npair_softplus_is_exact_beyond_the_usual_threshold():
    # one positive pair and one negative on raw dot products: term = log(1 + e^x), x = 25
    z = torch.tensor([[5.0, 0.0], [0.0, 1.0], [5.0, 0.0]], dtype=F64)
    out = run(build("npair", pairs="all"), z, torch.tensor([0, 0, 1]))
    # anchor 0: x = 25 - 0; anchor 1: x = 0 - 0 (its negative is orthogonal)
    expect = [25.0 + math.log1p(math.exp(-25.0)), math.log(2.0)]
    assert float(out.per_sample[0]) == pytest.approx(expect[0], rel=1e-15)
    assert float(out.per_sample[1]) == pytest.approx(expect[1], rel=1e-15)


# ---------------------------------------------------------------- batch-all triplet: fast == B^3


def naive_triplet(z, y, margin, squared, normalize=True):
    """The B^3 form. Distances from coordinate differences (no Gram matrix, no cdist), so a tie
    d(a, n) = d(a, p) + margin built from exact coordinates stays an exact tie; relu'(0) = 0."""
    zn = F.normalize(z, dim=1) if normalize else z
    d2 = ((zn[:, None, :] - zn[None, :, :]) ** 2).sum(-1)
    eye = torch.eye(len(y), dtype=torch.bool)
    # the diagonal is never used; keep sqrt's infinite slope at 0 out of the backward
    d = d2 if squared else torch.where(eye, 0.0, torch.where(eye, 1.0, d2).sqrt())
    same = y[:, None] == y[None, :]
    valid = (same & ~eye)[:, :, None] & ~same[:, None, :]
    hinge = torch.where(valid, F.relu(d[:, :, None] - d[:, None, :] + margin), 0.0)
    n = valid.sum()
    per = hinge.sum((1, 2)) / valid.sum((1, 2)).clamp_min(1)
    ties = int((valid & (d[:, None, :] == d[:, :, None] + margin)).sum())
    return hinge.sum() / n, per, n, (hinge > 0).sum(), ties


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("squared", [True, False])
def test_triplet_sort_prefix_sum_equals_naive_cube(seed, squared):
    gen = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 5, (40,), generator=gen)
    z = torch.randn(40, 6, generator=gen, dtype=F64).requires_grad_(True)
    margin = 0.4
    loss, per, n, n_active, _ = naive_triplet(z, y, margin, squared)
    out = run(build("triplet", margin=margin, squared=squared, reduction="mean"), z, y)
    close(out.loss, loss, 1e-12)
    close(out.per_sample, per, 1e-12)
    assert int(out.n_terms) == int(n) and int(out.n_active_terms) == int(n_active)
    close(grad_of(out.loss, z), grad_of(loss, z), 1e-12)


# Points +-e_i: every squared distance is exactly 0, 2 or 4, so with margin 2 many negatives lie
# exactly at d(a, p) + margin. Such a triplet has a zero hinge: it is not active and gives no gradient
# (the naive form's relu'(0) = 0).
TIE_Z = [[1, 0, 0, 0], [1, 0, 0, 0], [0, 1, 0, 0], [-1, 0, 0, 0], [0, 0, 1, 0], [0, -1, 0, 0],
         [0, 0, 0, 1], [0, 0, -1, 0], [0, 1, 0, 0], [0, 0, 0, -1]]
TIE_Y = [0, 0, 0, 1, 1, 2, 2, 3, 0, 3]
# Euclidean (non-squared) distances need ties that no square root can round away: vertices of the
# 24-cell (+-e_i and (+-1/2, ..., +-1/2)) have cosines 0, +-1/2, +-1, so the distances between them are
# 1, sqrt 2, sqrt 3 and 2. sqrt(1) and sqrt(4) are exact under any sqrt with an error below one unit
# in the last place, and every coordinate, norm and dot product here is a small dyadic number, exact
# in any summation order: d(a, p) = 1 and d(a, n) = 2 tie exactly at margin 1 on every CPU. (The
# former margin 2 - sqrt(2) relied on torch's float64 sqrt(2) being correctly rounded, which it is
# not on every CPU.) No duplicate rows: a zero distance has no gradient in the naive sqrt.
H = 0.5
TIE_Z_UNIT = [[1, 0, 0, 0], [H, H, H, H], [-1, 0, 0, 0], [-H, -H, -H, -H],
              [0, 1, 0, 0], [H, H, -H, -H], [0, -1, 0, 0], [-H, -H, H, H]]
TIE_Y_UNIT = [0, 0, 1, 1, 2, 2, 3, 3]


@pytest.mark.parametrize(
    "hp",
    [
        {"margin": 2.0},  # squared: d_ap 2 -> d_an 4, d_ap 0 -> d_an 2
        {"margin": 2.0, "reduction": "mean"},  # zeros included (the default averages over non-zero triplets)
        {"margin": 2.0, "normalize": False},
        {"margin": 1.0, "squared": False},  # on TIE_Z_UNIT: d_ap 1 -> d_an 2
        {"margin": 1.0, "squared": False, "reduction": "mean"},
    ],
)
def test_triplet_exact_ties_are_inactive_as_in_the_naive_cube(hp):
    squared, normalize = hp.get("squared", True), hp.get("normalize", True)
    rows, labels, least = (TIE_Z, TIE_Y, 10) if squared else (TIE_Z_UNIT, TIE_Y_UNIT, 8)
    y = torch.tensor(labels)
    # scaled rows: normalisation must map them back to the exact layout (norms are powers of two)
    z = (torch.tensor(rows, dtype=F64) * (4.0 if normalize else 1.0)).requires_grad_(True)
    loss, per, n, n_active, ties = naive_triplet(z, y, hp["margin"], squared, normalize)
    # the premise holds by construction (exact arithmetic above); checked so a changed layout cannot
    # silently stop testing ties
    assert ties >= least, "the batch must hold exact ties for this test to mean anything"
    if hp.get("reduction", "nonzero_mean") == "nonzero_mean":  # the default averages over non-zero triplets
        loss = loss * n / n_active
    out = run(build("triplet", **hp), z, y)
    assert int(out.n_terms) == int(n)
    assert int(out.n_active_terms) == int(n_active)
    close(out.loss, loss, 1e-12)
    close(out.per_sample, per, 1e-12)
    close(grad_of(out.loss, z), grad_of(loss, z), 1e-12)


# ---------------------------------------------------------------- properties of every loss


def all_losses():
    return [(n, {}) for n in CHECKED] + [("npair", {"pairs": "one_per_class"}), ("npair_groups", {})]


@pytest.mark.parametrize("name", CHECKED)
def test_gradcheck(name):
    gen = torch.Generator().manual_seed(3)
    y = torch.tensor([0, 1, 0, 2, 1, 0])
    z = torch.randn(6, DIM, generator=gen, dtype=F64).requires_grad_(True)
    loss_fn = build(name, seed=3)
    assert torch.autograd.gradcheck(lambda e: run(loss_fn, e, y).loss, (z,), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", CHECKED)
def test_permutation_invariance(name):
    z, y = batch("unsorted", 4)
    # Sohn's one-pair-per-class N-pair picks its pairs by batch order (documented); its all-pairs form does not
    loss_fn = build(name, **({"pairs": "all"} if name == "npair" else {}))
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(1))
    a, b = run(loss_fn, z, y), run(loss_fn, z[perm], y[perm])
    close(a.loss, b.loss, 1e-12)
    close(a.per_sample[perm], b.per_sample, 1e-12)
    assert int(a.n_terms) == int(b.n_terms) and int(a.n_active_terms) == int(b.n_active_terms)


@pytest.mark.parametrize("name", ["contrastive", "triplet"])
def test_perfectly_separated_gives_zero_loss_and_no_active_terms(name):
    y = torch.tensor([0, 0, 1, 1, 1, 2, 2])
    z = (5.0 * F.one_hot(y, DIM).to(torch.float64)).requires_grad_(True)
    if name == "contrastive":
        z = (F.one_hot(y, DIM).to(torch.float64)).requires_grad_(True)  # distance sqrt(2) > 1
    out = run(build(name), z, y)
    assert float(out.loss.detach()) == 0.0
    assert int(out.n_active_terms) == 0 and int(out.n_terms) > 0
    assert not bool((out.per_sample > 0).any())
    out.loss.backward()
    assert torch.equal(z.grad, torch.zeros_like(z))


@pytest.mark.parametrize("hp", [{"pairs": "all"}, {}])  # the default is one pair per class
def test_npair_terms_that_underflow_to_zero_are_not_active(hp):
    # raw dot products 10^4 apart: every softmax term is exactly 0 in float64
    y = torch.tensor([0, 0, 1, 1, 2])
    out = run(build("npair", **hp), 100.0 * F.one_hot(y, DIM).to(F64), y)
    assert float(out.loss) == 0.0 and int(out.n_terms) > 0 and int(out.n_active_terms) == 0
    assert bool(out.has_positives)
    # a single positive pair (one ordered pair each way; one anchor for one_per_class) is enough
    y = torch.tensor([0, 0, 1, 2])
    out = run(build("npair", **hp), torch.randn(4, DIM, generator=torch.Generator().manual_seed(0), dtype=F64), y)
    assert int(out.n_terms) == (2 if hp else 1) and bool(out.has_positives)


@pytest.mark.parametrize("name,hp", all_losses())
def test_no_positive_pair_is_a_zero_that_backpropagates(name, hp):
    z, _ = batch("pairs_and_singleton", 0)
    # all labels distinct (proxy losses: labels repeat, but every class proxy is a positive)
    y = torch.arange(len(z)) % NUM_CLASSES if name in ("arcface", "ccl") else torch.arange(len(z))
    out = run(build(name, **hp), z, y)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    assert torch.isfinite(z.grad).all()
    if name in ("arcface", "ccl"):
        assert bool(out.has_positives)  # every sample's class proxy is its positive
        return
    assert not bool(out.has_positives)
    if name in ("contrastive", "multisimilarity"):  # negative pairs still count (documented)
        assert int(out.n_terms) == len(y) * (len(y) - 1)
        if name == "multisimilarity":  # every anchor's negative part, averaged over the batch
            per, _ = ref_multisimilarity(z.detach(), y.tolist())
            close(out.loss.detach(), per.mean())
            assert float(out.loss.detach()) > 0.0 and bool((z.grad != 0).any())
        return
    assert float(out.loss.detach()) == 0.0 and int(out.n_terms) == 0
    assert out.loss.requires_grad and torch.equal(z.grad, torch.zeros_like(z))


@pytest.mark.parametrize("name", CHECKED)
@pytest.mark.parametrize("labels", [[0], [1, 1, 1, 1]])
def test_degenerate_batches(name, labels):
    """One sample; one class only (no negatives): finite, backpropagates."""
    y = torch.tensor(labels)
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(len(y), DIM, generator=gen, dtype=F64).requires_grad_(True)
    out = run(build(name), z, y)
    out.loss.backward()
    assert torch.isfinite(out.loss) and torch.isfinite(z.grad).all()


@pytest.mark.parametrize("name,hp", all_losses())
def test_output_types_and_determinism(name, hp):
    z, y = batch("unsorted", 2)
    loss_fn = build(name, **hp)
    a, b = run(loss_fn, z, y), run(loss_fn, z, y)
    assert isinstance(a, LossOutput)
    assert a.loss.shape == () and a.per_sample.shape == (len(y),)
    assert a.n_terms.shape == () and a.n_terms.dtype == torch.int64
    assert a.n_active_terms.dtype == torch.int64 and a.has_positives.dtype == torch.bool
    for f in ("loss", "per_sample", "n_terms", "n_active_terms", "has_positives"):
        assert torch.equal(getattr(a, f), getattr(b, f))
    with pytest.raises(AttributeError):
        a.loss = a.loss  # frozen


@pytest.mark.parametrize("name", CHECKED)
def test_float32_input_with_default_module(name):
    """The head gives float32, L2-normalised embeddings; modules are built in float32."""
    z = F.normalize(torch.randn(16, 8, dtype=torch.float32), dim=1).requires_grad_(True)
    y = torch.arange(16) % 4
    out = run(make_loss(name, num_classes=4, embedding_dim=8), z, y)
    out.loss.backward()
    assert out.loss.dtype == torch.float32 and torch.isfinite(z.grad).all()


# ---------------------------------------------------------------- bad input


# PROTOCOL.md "Losses", each loss's "Defaults", written out: changing a default fails here.
DOCUMENTED_DEFAULTS = {
    "contrastive": {"margin": 1.0, "pos_margin": 0.0, "squared": True, "normalize": False, "reduction": "mean"},
    "triplet": {"margin": 0.2, "squared": True, "normalize": True, "reduction": "nonzero_mean", "mining": "all"},
    "npair": {"pairs": "one_per_class", "temperature": 1.0, "normalize": False},
    "infonce": {"temperature": 0.1, "normalize": True},
    "arcface": {"scale": 64.0, "margin": 0.5},
    "scl": {"temperature": 0.1, "normalize": True},
    "ccl": {"temperature": 0.1, "margin": 0.2, "center_weight": 1.0, "center_update": "gradient", "momentum": 0.9},
    "multisimilarity": MULTISIMILARITY_DEFAULTS,
}


@pytest.mark.parametrize("name", CHECKED)
def test_loss_hyperparameters_are_the_documented_defaults(name):
    assert set(DOCUMENTED_DEFAULTS) == set(CHECKED)
    expect = DOCUMENTED_DEFAULTS[name] | {"check_inputs": True}  # sizes of proxy losses are not hyperparameters
    assert loss_hyperparameters(name) == expect
    key = next(iter(expect))
    changed = {"reduction": "mean", "pairs": "all"}.get(key, 0.25)
    assert loss_hyperparameters(name, **{key: changed}) == expect | {key: changed}


def test_unknown_name_lists_valid_ones():
    with pytest.raises(ValueError, match="contrastive, triplet, npair, infonce, arcface, scl, ccl"):
        make_loss("softtriple")


def test_unknown_hyperparameter():
    with pytest.raises(ValueError, match="temperature"):
        make_loss("infonce", temprature=0.1)


@pytest.mark.parametrize("name", ["arcface", "ccl"])
def test_proxy_losses_need_sizes(name):
    with pytest.raises(ValueError, match="num_classes and embedding_dim"):
        make_loss(name)
    with pytest.raises(ValueError, match="num_classes and embedding_dim"):
        make_loss(name, num_classes=3)


@pytest.mark.parametrize(
    "z,y,match",
    [
        (torch.randn(4), torch.arange(4), "2-D"),
        (torch.randn(4, 3, 1), torch.arange(4), "2-D"),
        (torch.randn(4, DIM), torch.arange(3), "length batch"),
        (torch.randn(4, DIM), torch.zeros(4, 1, dtype=torch.long), "length batch"),
        (torch.randn(4, DIM), torch.zeros(4), "integer"),
        (torch.tensor([[float("nan")] * DIM] * 4), torch.arange(4), "NaN or inf"),
        (torch.tensor([[float("inf")] * DIM] * 4), torch.arange(4), "NaN or inf"),
        (torch.randint(0, 3, (4, DIM)), torch.arange(4), "floating point"),
    ],
)
@pytest.mark.parametrize("name", ["triplet", "arcface"])
def test_bad_input_raises_value_error(z, y, match, name):
    with pytest.raises(ValueError, match=match):
        run(build(name), z, y)


@pytest.mark.parametrize(
    "z,y,message",
    [
        (torch.randn(4, DIM, 1), torch.arange(4), "embeddings must be 2-D [batch, dim], got shape (4, 5, 1); "
         "flatten extra dimensions with embeddings.flatten(1)"),
        (torch.randint(0, 3, (4, DIM)), torch.arange(4), "embeddings must be floating point, got torch.int64; "
         "call embeddings.float()"),
        (torch.randn(4, DIM), torch.arange(3), "labels must be 1-D with one label per embeddings row: got labels "
         "shape (3,) for embeddings shape (4, 5); pass labels.view(-1) of length batch"),
        (torch.randn(4, DIM), torch.tensor([True, False, True, False]), "labels must be an integer tensor, got "
         "torch.bool; call labels.long()"),
        (torch.full((4, DIM), math.nan), torch.arange(4), "embeddings contain NaN or inf; check the model output "
         "(learning rate, division by a zero norm) before the loss"),
    ],
)
def test_bad_input_messages_name_the_fix(z, y, message):
    with pytest.raises(ValueError, match="^" + re.escape(message) + "$"):
        build("scl")(z, y)


def test_proxy_loss_label_range_message_and_edge_batches():
    message = ("labels must lie in [0, num_classes=4), got values in [4, 4]; remap labels to 0..num_classes-1 "
               "or build the loss with a larger num_classes")
    with pytest.raises(ValueError, match="^" + re.escape(message) + "$"):
        build("arcface")(torch.randn(1, DIM, dtype=F64), torch.tensor([4]))  # one sample is checked too
    empty = run(build("arcface"), torch.zeros(0, DIM, dtype=F64), torch.zeros(0, dtype=torch.long))
    assert int(empty.n_terms) == 0 and not bool(empty.has_positives)


@pytest.mark.parametrize("name", ["contrastive", "ccl"])
def test_embeddings_must_be_a_tensor_and_labels_may_be_a_list(name):
    with pytest.raises(ValueError, match="^embeddings must be a torch.Tensor \\(the output of your model\\), got list$"):
        build(name)(torch.randn(2, DIM).tolist(), torch.tensor([0, 1]))
    z = torch.randn(2, DIM, dtype=F64)
    close(build(name)(z, [0, 1]), build(name)(z, torch.tensor([0, 1])), 0.0)  # labels as users hold them


@pytest.mark.parametrize("name", ["arcface", "ccl"])
@pytest.mark.parametrize("bad", [-1, NUM_CLASSES])
def test_label_out_of_range(name, bad):
    y = torch.tensor([0, 1, bad])
    with pytest.raises(ValueError, match=r"\[0, num_classes=4\)"):
        build(name)(torch.randn(3, DIM), y)


def test_wrong_embedding_dim_for_proxy():
    with pytest.raises(ValueError, match="embedding_dim=7"):
        build("ccl")(torch.randn(3, 7), torch.tensor([0, 1, 2]))


def test_check_inputs_off_skips_validation():
    z = torch.tensor([[float("nan"), 0.0], [1.0, 0.0]])
    out = run(make_loss("contrastive", check_inputs=False), z, torch.tensor([0, 0]))
    assert torch.isnan(out.loss)
    loss_fn = make_loss("contrastive")
    loss_fn.check_inputs = False
    assert torch.isnan(run(loss_fn, z, torch.tensor([0, 0])).loss)


BAD_HYPERPARAMETERS = [
    # loss, hyperparameter, bad values, the start of the message that names it
    ("contrastive", "margin", [-0.1, math.inf, "1"], "margin must be a non-negative finite number"),
    ("contrastive", "pos_margin", [-0.1], "pos_margin must be a non-negative finite number"),
    ("contrastive", "reduction", ["sum"], "reduction must be one of"),
    ("triplet", "margin", [-1, math.nan], "margin must be a non-negative finite number"),
    ("triplet", "reduction", ["sum"], "reduction must be one of"),
    ("npair", "pairs", ["some"], "pairs must be one of"),
    ("npair", "temperature", [0, -1.0, math.inf], "temperature must be a positive finite number"),
    ("infonce", "temperature", [0, "0.1"], "temperature must be a positive finite number"),
    ("scl", "temperature", [0, -0.1], "temperature must be a positive finite number"),
    ("arcface", "scale", [0, -64.0], "scale must be a positive finite number"),
    ("arcface", "margin", [-0.1, math.pi / 2, 28.6], "margin is in radians and must lie in [0, pi/2)"),
    ("ccl", "temperature", [0], "temperature must be a positive finite number"),
    ("ccl", "margin", [-0.1], "margin must be a non-negative finite number"),
    ("ccl", "center_weight", [-1.0], "center_weight must be a non-negative finite number"),
    ("ccl", "center_update", ["wen"], "center_update must be one of"),
    ("ccl", "momentum", [1.0, -0.1, "0.5"], "momentum must lie in [0, 1)"),
    ("multisimilarity", "alpha", [0, -2.0, math.inf], "alpha must be a positive finite number"),
    ("multisimilarity", "beta", [0, math.nan, "50"], "beta must be a positive finite number"),
    ("multisimilarity", "base", [math.nan, math.inf, "0.5", True], "base must be a finite number"),
]


@pytest.mark.parametrize("name,param,values,message", BAD_HYPERPARAMETERS)
def test_bad_hyperparameters_are_named(name, param, values, message):
    for value in values:
        with pytest.raises(ValueError, match="^" + re.escape(message)):
            make_loss(name, num_classes=3, embedding_dim=4, **{param: value})


@pytest.mark.parametrize(
    "name,hp",
    [("contrastive", {"margin": 0, "pos_margin": 0}), ("triplet", {"margin": 0}), ("arcface", {"margin": 0}),
     ("arcface", {"margin": 1.5}),  # just below pi/2
     ("ccl", {"margin": 0, "center_weight": 0, "center_update": "ema", "momentum": 0}),
     ("multisimilarity", {"base": -1.0}), ("multisimilarity", {"alpha": 1e-3, "beta": 1e-3, "base": 0})],
)
def test_hyperparameters_at_the_lower_bound_are_accepted(name, hp):
    z, y = batch("pairs_and_singleton", 0)
    out = run(make_loss(name, num_classes=NUM_CLASSES, embedding_dim=DIM, **hp).double(), z, y)
    assert torch.isfinite(out.loss)


@pytest.mark.parametrize("name", ["arcface", "ccl"])
@pytest.mark.parametrize("bad", [0, -3, 2.0, True])
def test_proxy_sizes_must_be_positive_ints(name, bad):
    for key, other in (("num_classes", "embedding_dim"), ("embedding_dim", "num_classes")):
        with pytest.raises(ValueError, match=f"^{key} must be a positive int, got {bad!r}$"):
            make_loss(name, **{key: bad, other: 4})


@pytest.mark.parametrize("name", CHECKED)
def test_every_loss_checks_its_input_by_default(name):
    z = torch.randn(4, DIM, dtype=F64)
    z[1, 2] = math.nan
    with pytest.raises(ValueError, match="^embeddings contain NaN or inf"):
        build(name)(z, torch.tensor([0, 0, 1, 1]))


@pytest.mark.parametrize("update", ["gradient", "ema"])
def test_ccl_centers_start_as_unit_vectors(update):
    centers = build("ccl", center_update=update).centers
    close(centers.detach().norm(dim=1), torch.ones(NUM_CLASSES, dtype=F64), 1e-6)  # drawn in float32


def test_scl_term_that_underflows_to_zero_is_not_active():
    # one positive at cosine 1, negatives at -1, T = 0.001: p(positive) is exactly 1 in float64
    y = torch.tensor([0, 0, 1, 1])
    z = torch.tensor([[1.0, 0.0], [1.0, 0.0], [-1.0, 0.0], [-1.0, 0.0]], dtype=F64)
    out = run(build("scl", temperature=0.001), z, y)
    assert float(out.loss) == 0.0 and int(out.n_terms) == 4 and int(out.n_active_terms) == 0


def naive_semihard_triplet(z, y, margin):
    zn = F.normalize(z, dim=1)
    d = torch.cdist(zn, zn) ** 2
    same = y[:, None] == y[None, :]
    valid = (same & ~torch.eye(len(y), dtype=torch.bool))[:, :, None] & ~same[:, None, :]
    ap, an = d[:, :, None], d[:, None, :]
    semihard = valid & (an > ap) & (an < ap + margin)
    hinge = torch.where(semihard, ap - an + margin, 0.0)
    return hinge.sum() / semihard.sum(), semihard.sum()


@pytest.mark.parametrize("seed", range(4))
def test_semihard_triplet_equals_naive_cube(seed):
    gen = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 5, (40,), generator=gen)
    z = torch.randn(40, 6, generator=gen, dtype=F64).requires_grad_(True)
    loss, n_semihard = naive_semihard_triplet(z, y, 0.4)
    for loss_fn in (build("triplet", margin=0.4, mining="semihard"), build("triplet_semihard", margin=0.4)):
        out = run(loss_fn, z, y)
        close(out.loss, loss, 1e-12)
        assert int(out.n_active_terms) == int(n_semihard) > 0
        close(grad_of(out.loss, z), grad_of(loss, z), 1e-12)


# ---------------------------------------------------------------- the front door (PML-shaped calls)


@pytest.mark.parametrize("name", CHECKED)
def test_returns_the_loss_tensor_and_keeps_the_detached_output_as_last(name):
    z, y = batch("unsorted", 0)
    loss_fn = build(name)
    assert loss_fn.last is None
    loss = loss_fn(z, y)
    assert isinstance(loss, torch.Tensor) and loss.shape == () and loss.requires_grad
    last = loss_fn.last
    assert isinstance(last, LossOutput) and not last.loss.requires_grad and not last.per_sample.requires_grad
    assert torch.equal(last.loss, loss.detach()) and last.per_sample.shape == (len(y),)
    loss.backward()  # what a PML loop does
    assert torch.isfinite(z.grad).all()


@pytest.mark.parametrize("name", CHECKED)
@pytest.mark.parametrize("dtype", [torch.int8, torch.uint8, torch.int32, torch.int64])
def test_any_integer_label_dtype_gives_the_same_loss(name, dtype):
    z, y = batch("unsorted", 1)
    loss_fn = build(name)
    expected = loss_fn(z, y).detach()
    assert torch.equal(loss_fn(z, y.to(dtype)).detach(), expected)
    assert torch.equal(loss_fn(z, y.numpy()).detach(), expected)  # NumPy labels as well


@pytest.mark.parametrize("name", CHECKED)
def test_empty_batch_is_a_zero_that_backpropagates(name):
    z = torch.zeros(0, DIM, dtype=F64, requires_grad=True)
    out = run(build(name), z, torch.zeros(0, dtype=torch.long))
    assert float(out.loss.detach()) == 0.0 and out.loss.requires_grad
    assert int(out.n_terms) == 0 and int(out.n_active_terms) == 0 and out.per_sample.shape == (0,)
    out.loss.backward()
    assert z.grad.shape == (0, DIM)


@pytest.mark.parametrize("name", ["arcface", "ccl"])
def test_proxy_losses_reject_a_reference_set(name):
    z, y = batch("unsorted", 0)
    with pytest.raises(ValueError, match="ref_emb is not supported"):
        build(name)(z, y, ref_emb=z.detach().clone(), ref_labels=y)
    build(name)(z, y, ref_emb=z, ref_labels=y)  # the batch itself as its reference is the plain call


def test_one_pair_per_class_n_pair_rejects_a_reference_set():
    z, y = batch("unsorted", 0)
    with pytest.raises(ValueError, match="pairs='all'"):
        build("npair", pairs="one_per_class")(z, y, ref_emb=z.detach().clone(), ref_labels=y)


def test_ref_emb_pairs_each_anchor_with_every_reference():
    """Contrastive against a reference set, by hand: every (anchor, reference) pair counts, no diagonal."""
    z, y = batch("unsorted", 0)
    ref, ref_y = batch("two_classes", 1)
    out = run(build("contrastive"), z, y, ref_emb=ref, ref_labels=ref_y)
    both = torch.cat([z, ref])
    terms = torch.zeros(len(y), len(ref_y), dtype=F64)
    for i, j in itertools.product(range(len(y)), range(len(ref_y))):
        d = dist(both, i, len(z) + j)
        terms[i, j] = 0.5 * d**2 if y[i] == ref_y[j] else 0.5 * torch.clamp(1.0 - d, min=0) ** 2
    close(out.loss, terms.mean())
    close(out.per_sample, terms.mean(dim=1))
    close(grad_of(out.loss, z), grad_of(terms.mean(), z))
    assert int(out.n_terms) == len(y) * len(ref_y)


@pytest.mark.parametrize(
    "indices,match",
    [
        ((torch.tensor([0]), torch.tensor([3])), "pairs \\(a1, p, a2, n\\) or triplets"),
        ((torch.tensor([0.0]), torch.tensor([3]), torch.tensor([1])), "integer tensors"),
        ((torch.tensor([0, 1]), torch.tensor([3]), torch.tensor([1])), "equal lengths"),
        ((torch.tensor([0]), torch.tensor([3]), torch.tensor([0]), torch.tensor([99])), "negative indices"),
        ((torch.tensor([0]), torch.tensor([2]), torch.tensor([0]), torch.tensor([1])), "positive pair joins two different"),
        ((torch.tensor([0]), torch.tensor([3]), torch.tensor([0]), torch.tensor([7])), "negative pair joins two equal"),
    ],
)
def test_bad_indices_tuple_is_named(indices, match):
    z, y = batch("unsorted", 0)  # labels 2, 0, 1, 0, 2, 1, 1, 0, 3
    y = torch.tensor([2, 0, 1, 2, 2, 1, 1, 2, 3])
    with pytest.raises(ValueError, match=match):
        build("contrastive")(z, y, indices)


def test_missing_labels_are_named():
    z, _ = batch("unsorted", 0)
    with pytest.raises(ValueError, match="labels are required"):
        build("triplet")(z)


def test_sample_weights_are_each_samples_count_in_the_tuple_over_the_largest():
    from vgcore.losses.base import Batch

    emb, labels = torch.zeros(5, 2), torch.tensor([0, 0, 1, 1, 2])
    t = torch.tensor
    once = Batch(emb, labels, indices_tuple=(t([0]), t([1]), t([2])))
    assert once.sample_weights(torch.float32).tolist() == [1.0, 1.0, 1.0, 0.0, 0.0]
    twice = Batch(emb, labels, indices_tuple=(t([0, 0]), t([1, 1]), t([2, 3])))
    assert twice.sample_weights(torch.float32).tolist() == [1.0, 1.0, 0.5, 0.5, 0.0]
    empty = Batch(emb, labels, indices_tuple=(t([], dtype=torch.long),) * 3)
    assert empty.sample_weights(torch.float32).tolist() == [1.0] * 5


# ---------------------------------------------------------------- FaceNet's semi-hard (TF-Addons' reading)


def ref_triplet_facenet(z, y, margin=0.2, squared=True, normalize=True):
    """One negative per positive pair (a, p): the closest negative strictly farther than d(a, p), else the
    farthest negative (TF-Addons' triplet_semihard_loss). Pairs whose anchor has no negative are left out."""
    terms = {}
    for a, p in itertools.permutations(range(len(y)), 2):
        if y[a] != y[p]:
            continue
        dap = dist(z, a, p, squared, normalize)
        negs = [dist(z, a, q, squared, normalize) for q in range(len(y)) if y[q] != y[a]]
        if not negs:
            continue
        farther = [d for d in negs if d > dap]
        dan = min(farther) if farther else max(negs)
        terms[a, p] = torch.clamp(dap - dan + margin, min=0)
    return terms


def check_facenet(out, z, terms, n, tol=1e-9, grad=True):
    values = torch.stack(list(terms.values()))
    close(out.loss, values.mean(), tol)  # over ALL positive pairs, zeros included
    close(out.per_sample, per_anchor_mean(terms, n), tol)
    assert int(out.n_terms) == len(terms) and int(out.n_active_terms) == int((values > 0).sum())
    assert bool(out.has_positives)
    if grad:
        close(grad_of(out.loss, z), grad_of(values.mean(), z), tol)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("hp", [{}, {"squared": False, "margin": 0.3, "normalize": False}, {"margin": 1.0}])
def test_triplet_facenet_reference(layout, seed, hp):
    z, y = batch(layout, seed)
    terms = ref_triplet_facenet(z, y.tolist(), **hp)
    check_facenet(run(build("triplet_facenet", **hp), z, y), z, terms, len(y))


# Squared distances on these unit vectors are exactly 0, 2 or 4. Anchor 0: its positive 1 is antipodal
# (d = 4) and no negative is farther (all at 2): the farthest negative is taken. Anchor 2: positives at
# d = 2, three negatives at exactly 2 (not farther) and one at 4 (taken: hinge 2 - 4 + m = 0, where
# ">=" would give m). Anchor 3: two negatives tie at 4 for the closest farther one.
FACENET_TIE_Z = [[1, 0, 0, 0], [-1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, -1, 0, 0], [0, 0, -1, 0],
                 [0, 0, 0, 1]]
FACENET_TIE_Y = [0, 0, 0, 1, 1, 2, 2]


@pytest.mark.parametrize("normalize", [True, False])
def test_triplet_facenet_ties_and_no_farther_negative(normalize):
    y = torch.tensor(FACENET_TIE_Y)
    z = (torch.tensor(FACENET_TIE_Z, dtype=F64) * (4.0 if normalize else 1.0)).requires_grad_(True)
    terms = ref_triplet_facenet(z, FACENET_TIE_Y, normalize=normalize)
    # the premises, written out: the antipodal pair falls back to the farthest negative, the tie is not farther
    assert float(terms[0, 1].detach()) == pytest.approx(4 - 2 + 0.2) and float(terms[2, 0].detach()) == 0.0
    out = run(build("triplet_facenet", normalize=normalize), z, y)
    # tied negatives share a value, not the gradient (which of them is taken is a choice): values only
    check_facenet(out, z, terms, len(y), tol=1e-12, grad=False)


def test_triplet_facenet_is_not_triplet_semihard():
    """PML's semi-hard keeps every semi-hard negative of a pair and averages over the active triplets;
    FaceNet (TF-Addons) takes one negative per pair and averages over every pair."""
    z, y = batch("unsorted", 0)
    semihard, facenet = run(build("triplet_semihard"), z, y), run(build("triplet_facenet"), z, y)
    assert abs(float(semihard.loss.detach()) - float(facenet.loss.detach())) > 1e-3
    assert int(facenet.n_terms) == len(ref_triplet_facenet(z, y.tolist())) != int(semihard.n_terms)


def test_triplet_facenet_edge_batches():
    gen = torch.Generator().manual_seed(0)
    for labels in ([], [0], [1, 1, 1], [0, 1, 2]):  # empty; one sample; no negative; no positive
        y = torch.tensor(labels, dtype=torch.long)
        z = torch.randn(len(y), DIM, generator=gen, dtype=F64).requires_grad_(True)
        out = run(build("triplet_facenet"), z, y)
        assert float(out.loss.detach()) == 0.0 and int(out.n_terms) == 0 and not bool(out.has_positives)
        out.loss.backward()
        assert z.grad is not None and torch.equal(z.grad, torch.zeros_like(z))
    z, y = batch("unsorted", 3)
    assert torch.autograd.gradcheck(lambda e: run(build("triplet_facenet"), e, y).loss, (z,), eps=1e-6, atol=1e-6)


# ---------------------------------------------------------------- CCL's centres: gradient (ccl) and moving average (ccl_ema)


def test_ccl_ema_moves_its_centres_by_the_moving_average_and_learns_none_by_gradient():
    loss_fn = build("ccl_ema")
    assert loss_fn.center_update == "ema" and loss_fn.momentum == 0.9  # the documented defaults
    assert list(loss_fn.parameters()) == [] and not loss_fn.centers.requires_grad
    assert "centers" in dict(loss_fn.named_buffers())
    z, y = batch("unsorted", 1)  # classes 0..3, class 3 once
    for _ in range(2):  # the second step starts from the moved centres
        before = loss_fn.centers.clone()
        expected = before.clone()
        for c in range(NUM_CLASSES):
            members = [F.normalize(z[i].detach(), dim=0) for i in range(len(y)) if int(y[i]) == c]
            if members:
                moved = 0.9 * before[c] + 0.1 * sum(members) / len(members)
                expected[c] = moved / moved.norm()
        out = run(loss_fn, z, y)
        close(out.loss, torch.stack(ref_ccl(z, y.tolist(), before)).mean())  # computed with the old centres
        close(loss_fn.centers, expected)
        out.loss.backward()
        assert loss_fn.centers.grad is None and not loss_fn.centers.requires_grad


def test_ccl_centres_stay_learned_by_gradient():
    loss_fn = build("ccl")
    assert loss_fn.center_update == "gradient"
    assert isinstance(loss_fn.centers, torch.nn.Parameter) and list(loss_fn.parameters()) == [loss_fn.centers]
    before = loss_fn.centers.detach().clone()
    z, y = batch("unsorted", 1)
    out = run(loss_fn, z, y)
    assert torch.equal(loss_fn.centers.detach(), before)  # the forward does not move them
    out.loss.backward()
    (expect,) = torch.autograd.grad(torch.stack(ref_ccl(z, y.tolist(), loss_fn.centers)).mean(), loss_fn.centers)
    close(loss_fn.centers.grad, expect)
    assert float(loss_fn.centers.grad.abs().sum()) > 0


# ---------------------------------------------------------------- Sohn's N-pair in K/2 groups (npair_groups)

# 3 classes x K = 4 in shuffled order; and uneven: class 0 has 5 samples (two pairs, its 5th is left
# out), class 1 has 3 (one pair, its 3rd left out), class 2 has 2, class 3 has 1 (no pair). Group 1 of
# the uneven layout holds class 0's second pair alone: an N-pair term without negatives, log(1 + 0) = 0.
GROUP_LAYOUTS = {
    "pk_shuffled": [2, 0, 1, 0, 2, 1, 1, 0, 2, 0, 1, 2],
    "uneven": [0, 1, 0, 0, 2, 1, 0, 1, 2, 0, 3],
}


def ref_npair_groups(z, y, normalize=False, temperature=1.0):
    """Sohn's N-pair on disjoint groups, enumerated: each class's samples in batch order form the pairs
    (1st, 2nd), (3rd, 4th), ...; group g holds the g-th pair of every class that has one; inside a group,
    anchor = first of a pair, positive = second, negatives = the other classes' positives of the group:
    term(a) = log(1 + sum_n exp(s_an - s_ap)) (Sohn 2016, Eq. 6). Returns {anchor: term}."""
    members = {}
    for i, c in enumerate(y):
        members.setdefault(c, []).append(i)
    groups = {}
    for idx in members.values():
        for g in range(len(idx) // 2):
            groups.setdefault(g, []).append((idx[2 * g], idx[2 * g + 1]))

    def s(i, j):
        return (cos(z[i], z[j]) if normalize else (z[i] * z[j]).sum()) / temperature

    terms = {}
    for pairs in groups.values():
        for a, p in pairs:
            others = sum((torch.exp(s(a, n) - s(a, p)) for _, n in pairs if n != p), torch.zeros((), dtype=F64))
            terms[a] = torch.log1p(others)
    return terms


def group_batch(layout, seed):
    gen = torch.Generator().manual_seed(seed)
    y = torch.tensor(GROUP_LAYOUTS[layout])
    return (torch.randn(len(y), DIM, generator=gen, dtype=F64) * 0.6).requires_grad_(True), y


@pytest.mark.parametrize("layout", GROUP_LAYOUTS)
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("hp", [{}, {"normalize": True}, {"temperature": 0.5}])
def test_npair_groups_reference(layout, seed, hp):
    """(a) Loss, per_sample, counts and gradient equal the hand-enumerated groups, as the variant
    `npair_groups` and as `npair` with pairs="groups"."""
    z, y = group_batch(layout, seed)
    terms = ref_npair_groups(z, y.tolist(), **hp)
    values = torch.stack(list(terms.values()))
    per_sample = torch.stack([terms.get(i, torch.zeros((), dtype=F64)) for i in range(len(y))])
    for loss_fn in (build("npair_groups", **hp), build("npair", pairs="groups", **hp)):
        out = run(loss_fn, z, y)
        check(out, z, values.mean(), per_sample, len(terms), int((values > 0).sum()))
    # the uneven layout's lone group: counted as a term, not active
    assert len(terms) == {"pk_shuffled": 6, "uneven": 4}[layout]
    assert int((values > 0).sum()) == {"pk_shuffled": 6, "uneven": 3}[layout]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("hp", [{}, {"normalize": True}, {"temperature": 0.5}])
@pytest.mark.parametrize("labels", [
    [3, 0, 2, 1, 0, 3, 1, 2],  # K = 2, shuffled: exactly Sohn's one group
    [0, 0, 1, 1, 2, 2, 2, 3],  # at most 3 per class: the 3rd sample is left out by both
])
def test_npair_groups_with_two_per_class_is_sohns_one_pair_per_class(seed, hp, labels):
    """(b) With K = 2 (or any class of at most 3) there is one group, Sohn's: bitwise the same
    loss, per_sample, counts and gradient as pairs="one_per_class"."""
    gen = torch.Generator().manual_seed(seed)
    y = torch.tensor(labels)
    z = torch.randn(len(y), DIM, generator=gen, dtype=F64).requires_grad_(True)
    groups = run(build("npair_groups", **hp), z, y)
    sohn = run(build("npair", pairs="one_per_class", **hp), z, y)
    for field in ("loss", "per_sample", "n_terms", "n_active_terms", "has_positives"):
        assert torch.equal(getattr(groups, field).detach(), getattr(sohn, field).detach()), field
    assert torch.equal(grad_of(groups.loss, z), grad_of(sohn.loss, z))


def pk_batch(p, k, seed, n_classes=10, per_class=20):
    """One batch of the training `pk` sampler (P classes, K samples each, in its order) and random
    float64 embeddings for it."""
    from types import SimpleNamespace

    from vgcore.train.samplers import batch_indices

    data_labels = torch.arange(n_classes * per_class) % n_classes
    config = SimpleNamespace(batch_size=p * k, sampler="pk", samples_per_class=k)
    idx = next(batch_indices(data_labels, config, torch.Generator().manual_seed(seed)))
    y = data_labels[idx]
    z = torch.randn(len(y), DIM, generator=torch.Generator().manual_seed(seed), dtype=F64).requires_grad_(True)
    return z, y


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("k", [4, 5, 6])
def test_npair_groups_give_every_paired_sample_a_gradient(seed, k):
    """(c) On a P x K batch of the pk sampler, every sample that is in a pair gets a gradient: all
    P * K for an even K, all but each class's last sample for an odd K; Sohn's one pair per class
    reaches 2 per class."""
    p = 5
    z, y = pk_batch(p, k, seed)
    assert sorted(torch.bincount(y, minlength=10).tolist()) == [0] * (10 - p) + [k] * p
    moved = {}
    for pairs in ("groups", "one_per_class"):
        g = grad_of(run(build("npair", pairs=pairs), z, y).loss, z)
        moved[pairs] = (g != 0).any(dim=1)
    assert int(moved["groups"].sum()) == p * (k - k % 2)
    assert int(moved["one_per_class"].sum()) == 2 * p
    # which ones: the odd sample left out is its class's last in batch order
    rank = torch.tensor([y[:i].tolist().count(c) for i, c in enumerate(y.tolist())])
    assert torch.equal(moved["groups"], rank < k - k % 2)
    assert torch.equal(moved["one_per_class"], rank < 2)


@pytest.mark.parametrize("k", [2, 4, 5])
def test_npair_groups_counts_are_the_groups_anchors(k):
    """(d) LossOutput on a P x K batch: n_terms = the anchors of all groups (P * floor(K / 2)), all
    active (every group has P classes), per_sample > 0 exactly at the anchors (the 1st, 3rd, ... sample
    of each class), so GREEDINESS reads active_ratio = floor(K / 2) / K and tuple_active_ratio = 1."""
    from vgcore.metrics.greediness import greediness

    p = 5
    z, y = pk_batch(p, k, 0)
    out = run(build("npair_groups"), z, y)
    rank = torch.tensor([y[:i].tolist().count(c) for i, c in enumerate(y.tolist())])
    anchors = (rank % 2 == 0) & (rank < k - k % 2)
    assert int(out.n_terms) == p * (k // 2) == int(out.n_active_terms) and bool(out.has_positives)
    assert torch.equal(out.per_sample > 0, anchors)
    close(out.loss, out.per_sample.sum() / (p * (k // 2)))
    seen = greediness(out, grad_of(out.loss, z), head_params=[])
    assert float(seen["active_ratio"]) == pytest.approx((k // 2) / k, rel=1e-12)
    assert float(seen["tuple_active_ratio"]) == 1.0
    assert int(seen["n_terms"]) == p * (k // 2) and int(seen["n_active_terms"]) == p * (k // 2)


def test_npair_groups_edge_batches_and_what_it_refuses():
    """No positive pair, an empty batch, one class only: a finite zero or a finite loss that
    backpropagates; a reference set or a miner's pairs are refused (the groups come from batch order)."""
    # labels, (n_terms, n_active_terms): one class of 5 is two groups of one class each, both terms
    # exactly 0 (no negatives), its 5th sample left out
    for labels, counts in (([0, 1, 2, 3], (0, 0)), ([], (0, 0)), ([0, 0, 0, 0, 0], (2, 0))):
        y = torch.tensor(labels, dtype=torch.long)
        z = torch.randn(len(y), DIM, generator=torch.Generator().manual_seed(0), dtype=F64).requires_grad_(True)
        out = run(build("npair_groups"), z, y)
        out.loss.backward()
        assert torch.isfinite(out.loss) and torch.isfinite(z.grad).all()
        assert (int(out.n_terms), int(out.n_active_terms)) == counts and bool(out.has_positives) == (counts[0] > 0)
    z, y = group_batch("pk_shuffled", 0)
    with pytest.raises(ValueError, match="pairs='all'"):
        build("npair_groups")(z, y, ref_emb=z.detach().clone(), ref_labels=y)
    with pytest.raises(ValueError, match="pairs='all'"):
        build("npair_groups")(z, y, (torch.tensor([0]), torch.tensor([4]), torch.tensor([0]), torch.tensor([1])))
