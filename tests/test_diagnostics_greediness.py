"""GREEDINESS measures: hand-enumerated counts, gradients from the same backward, thresholds.

Tiny losses returning a duck-typed LossOutput live here, so that hand-worked gradients do not
depend on vgcore.losses; the counts test runs vgcore's own losses against plain loops.
"""

import itertools
import math
import re
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from vgcore.losses import make_loss
from vgcore.metrics import (
    GRAD_THRESHOLD,
    GRAD_THRESHOLD_SWEEP,
    GREEDINESS_KEYS,
    convergence_epoch,
    grad_active_sweep,
    greediness,
    recall_convergence_epoch,
)
from vgcore.metrics.greediness import _masked_quantiles

# --------------------------------------------------------------------------------------------------
# tiny reference losses (mean over anchors of each anchor's mean over its tuples)
# --------------------------------------------------------------------------------------------------


def _out(per_sample, n_terms, n_active, has_pos):
    return SimpleNamespace(
        loss=per_sample.mean(),
        per_sample=per_sample,
        n_terms=torch.tensor(n_terms, dtype=torch.int64),
        n_active_terms=torch.tensor(n_active, dtype=torch.int64),
        has_positives=torch.tensor(has_pos),
    )


def batch_all_triplet(z, y, margin=0.5):
    """B^3 batch-all triplet on plain distances; counts stay on z's device (no host sync)."""
    d = torch.cdist(z, z)
    same = y[:, None] == y[None, :]
    pos = same & ~torch.eye(len(y), dtype=torch.bool, device=z.device)
    valid = pos[:, :, None] & ~same[:, None, :]  # [a, p, n]
    terms = (d[:, :, None] - d[:, None, :] + margin).clamp(min=0) * valid
    per_sample = terms.sum((1, 2)) / valid.sum((1, 2)).clamp(min=1)
    return SimpleNamespace(loss=per_sample.mean(), per_sample=per_sample, n_terms=valid.sum(),
                           n_active_terms=((terms > 0) & valid).sum(), has_positives=pos.any())


def contrastive(z, y, pos_margin=0.0, neg_margin=1.0):
    d = torch.cdist(z, z)
    same = y[:, None] == y[None, :]
    offdiag = ~torch.eye(len(y), dtype=torch.bool)
    terms = torch.where(same, (d - pos_margin).clamp(min=0), (neg_margin - d).clamp(min=0))
    terms = terms * offdiag
    per_sample = terms.sum(1) / offdiag.sum(1)
    return _out(
        per_sample, int(offdiag.sum()), int((terms > 0).sum()), bool((same & offdiag).any())
    )


def enumerate_triplets(z, y, margin=0.5):
    """Plain loops over every (a, p, n): returns (n_terms, n_active, active anchors)."""
    n_terms = n_active = 0
    active = set()
    for a, p, n in itertools.product(range(len(y)), repeat=3):
        if a == p or y[a] != y[p] or y[a] == y[n]:
            continue
        n_terms += 1
        if float((z[a] - z[p]).norm() - (z[a] - z[n]).norm()) + margin > 0:
            n_active += 1
            active.add(a)
    return n_terms, n_active, active


def enumerate_pairs(z, y, neg_margin=1.0):
    n_terms = n_active = 0
    active = set()
    for a, b in itertools.permutations(range(len(y)), 2):
        n_terms += 1
        dist = float((z[a] - z[b]).norm())
        loss = dist if y[a] == y[b] else max(0.0, neg_margin - dist)
        if loss > 0:
            n_active += 1
            active.add(a)
    return n_terms, n_active, active


# --------------------------------------------------------------------------------------------------
# hand-worked example: four points on a line, batch-all triplet with margin 0.5
# --------------------------------------------------------------------------------------------------


def _line_batch():
    z = torch.tensor([[0.0, 0.0], [0.1, 0.0], [1.0, 0.0], [3.0, 0.0]], requires_grad=True)
    y = torch.tensor([0, 0, 1, 1])
    return z, y


def test_hand_worked_triplet_example():
    z, y = _line_batch()
    out = batch_all_triplet(z, y)
    out.loss.backward()
    # only anchor 2 (x=1, positive x=3) violates the margin, against both negatives
    assert int(out.n_terms) == 8 and int(out.n_active_terms) == 2
    g = greediness(out, z.grad, head_params=[])
    assert float(g["active_ratio"]) == 0.25
    assert float(g["tuple_active_ratio"]) == 0.25
    # L = (1/4)(1/2)[(d23 - d20 + .5) + (d23 - d21 + .5)]: all four points get a gradient
    expected = torch.tensor([[0.125, 0.0], [0.125, 0.0], [-0.5, 0.0], [0.25, 0.0]])
    torch.testing.assert_close(z.grad, expected)
    assert float(g["grad_active_ratio"]) == 1.0
    # norms 1/8, 1/8, 1/2, 1/4: (sum)^2 / (B sum of squares) = 1 / (4 * 11/32) = 8/11
    assert float(g["grad_effective_share"]) == pytest.approx(8 / 11)
    assert float(g["emb_grad_norm_mean"]) == pytest.approx(0.25)
    assert float(g["emb_grad_norm_p50"]) == pytest.approx(0.1875)
    assert float(g["emb_grad_norm_p90"]) == pytest.approx(0.25 + 0.7 * 0.25)
    # B * ||g_i|| = 0.5, 0.5, 2, 1: a threshold of 0.75 keeps two samples
    g2 = greediness(out, z.grad, head_params=[], grad_threshold=0.75)
    assert float(g2["grad_active_ratio"]) == 0.5
    assert float(g2["emb_grad_norm_mean"]) == pytest.approx(0.375)
    # the rule is strict: B * ||g_i|| exactly at the threshold is not active
    for thr, share in ((0.5, 0.5), (1.0, 0.25), (2.0, 0.0)):
        assert float(greediness(out, z.grad, head_params=[], grad_threshold=thr)["grad_active_ratio"]) == share
    assert grad_active_sweep(z.grad, [0.5, 1.0, 2.0]).tolist() == [0.5, 0.25, 0.0]
    # relative rule, ||g_i|| / max_j ||g_j|| = 1/4, 1/4, 1, 1/2
    assert grad_active_sweep(z.grad, [0.25, 0.5, 1.0], relative=True).tolist() == [0.5, 0.25, 0.0]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_counts_equal_hand_enumeration(seed):
    """vgcore's triplet and contrastive losses, read by greediness, against plain loops."""
    torch.manual_seed(seed)
    y = torch.tensor([0, 0, 0, 1, 1, 2, 2, 3])
    z = torch.nn.functional.normalize(torch.randn(8, 3, dtype=torch.float64), dim=1)
    losses = (
        # plain Euclidean distances, as the loops below
        (make_loss("triplet", margin=0.5, squared=False, normalize=False), enumerate_triplets),
        (make_loss("contrastive", margin=1.0), enumerate_pairs),
    )
    for loss_fn, enum in losses:
        zz = z.clone().requires_grad_(True)
        loss_fn(zz, y).backward()
        g = greediness(loss_fn.last, zz.grad, head_params=[])
        n_terms, n_active, active = enum(z, y)
        assert 0 < n_active < n_terms, "the batch must hold active and inactive terms"
        assert int(g["n_terms"]) == n_terms
        assert int(g["n_active_terms"]) == n_active
        assert float(g["tuple_active_ratio"]) == pytest.approx(n_active / n_terms)
        assert float(g["active_ratio"]) == pytest.approx(len(active) / len(y))
        assert bool(g["has_positives"])


def test_emb_grad_from_same_backward_equals_autograd_grad():
    torch.manual_seed(7)
    head = torch.nn.Linear(6, 3)
    centers = torch.nn.Parameter(torch.randn(4, 3))  # a loss with its own parameters
    x = torch.randn(10, 6)
    y = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3, 0, 1])

    def step():
        z = torch.nn.functional.normalize(head(x), dim=1)
        out = contrastive(z, y, neg_margin=1.2)
        loss = out.loss + 0.1 * (z - centers[y]).pow(2).sum(1).mean()
        return z, out, loss

    # reference: torch.autograd.grad on a separate graph
    z_ref, _, loss_ref = step()
    (ref,) = torch.autograd.grad(loss_ref, z_ref)

    # the training-loop way: retain_grad on z, one backward that also fills the parameter grads
    head.zero_grad()
    centers.grad = None
    z, out, loss = step()
    z.retain_grad()
    loss.backward()
    torch.testing.assert_close(z.grad, ref, rtol=0, atol=0)
    g = greediness(out, z.grad, head.parameters(), [centers])
    # the per-sample values, by hand from the reference gradient (numpy, float64)
    norms = np.linalg.norm(ref.double().numpy(), axis=1)
    moving = norms[10 * norms > GRAD_THRESHOLD]
    assert float(g["grad_active_ratio"]) == pytest.approx(len(moving) / 10)
    assert float(g["grad_effective_share"]) == pytest.approx(norms.sum() ** 2 / (10 * (norms**2).sum()), rel=1e-5)
    assert float(g["emb_grad_norm_mean"]) == pytest.approx(moving.mean(), rel=1e-5)
    assert float(g["emb_grad_norm_p50"]) == pytest.approx(np.quantile(moving, 0.5), rel=1e-5)
    assert float(g["emb_grad_norm_p90"]) == pytest.approx(np.quantile(moving, 0.9), rel=1e-5)
    head_norm = torch.cat([p.grad.flatten() for p in head.parameters()]).norm()
    assert float(g["grad_norm"]) == pytest.approx(float(head_norm), rel=1e-6)
    assert float(g["loss_grad_norm"]) == pytest.approx(float(centers.grad.norm()), rel=1e-6)
    assert float(greediness(out, z.grad, head.parameters())["loss_grad_norm"]) == 0.0


def test_outputs_are_detached_0d_tensors():
    z, y = _line_batch()
    out = batch_all_triplet(z, y)
    out.loss.backward()
    g = greediness(out, z.grad, head_params=[])
    assert tuple(g) == GREEDINESS_KEYS
    for v in g.values():
        assert isinstance(v, torch.Tensor) and v.ndim == 0 and not v.requires_grad
    assert g["n_terms"].dtype == torch.int64 and g["has_positives"].dtype == torch.bool


def test_ratios_and_norms_have_the_gradient_dtype():
    z, y = _line_batch()
    out = batch_all_triplet(z.double(), y)
    head = torch.nn.Linear(2, 2)  # float32 parameters with gradients
    head(z.detach()).sum().backward()
    (emb_grad,) = torch.autograd.grad(out.loss, z)
    for params in ([], head.parameters()):
        g = greediness(out, emb_grad.double(), params, [])
        for key in GREEDINESS_KEYS:
            if key not in ("n_terms", "n_active_terms", "has_positives"):
                assert g[key].dtype == torch.float64, key


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_greediness_does_not_synchronise_with_the_host():
    z, y = _line_batch()
    z = z.detach().cuda().requires_grad_(True)
    out = batch_all_triplet(z, y.cuda())
    out.loss.backward()
    head = torch.nn.Linear(2, 2).cuda()
    head(z.detach()).sum().backward()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        g = greediness(out, z.grad, head.parameters())
        sweep = grad_active_sweep(z.grad)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert float(g["active_ratio"]) == 0.25 and sweep.is_cuda


def test_grad_active_rule_is_batch_size_invariant():
    # per-sample loss that depends only on z_i: ||dL/dz_i|| = ||dl_i/dz_i|| / B
    torch.manual_seed(8)
    z = torch.randn(16, 4)
    c = torch.randn(16, 4) * 0.01
    c[:8] = z[:8]  # half the samples sit exactly on their target

    def grads(zz, cc):
        zz = zz.clone().requires_grad_(True)
        per = (zz - cc).pow(2).sum(1)
        per.mean().backward()
        return _out(per.detach(), len(per), int((per > 0).sum()), True), zz.grad

    o1, g1 = grads(z, c)
    o2, g2 = grads(torch.cat([z, z, z]), torch.cat([c, c, c]))
    for thr in (1e-6, 1e-3, 1.0, 10.0):
        r1 = greediness(o1, g1, [], grad_threshold=thr)["grad_active_ratio"]
        r2 = greediness(o2, g2, [], grad_threshold=thr)["grad_active_ratio"]
        assert float(r1) == pytest.approx(float(r2))
    assert float(greediness(o1, g1, [])["grad_active_ratio"]) == 0.5


@pytest.mark.parametrize("scale", [1.0, 1e-12, 1e12])
def test_grad_effective_share_closed_forms(scale):
    """Kish's effective share: k equal movers of B give k/B, whatever the gradient scale."""
    b, d = 8, 3
    out = SimpleNamespace(per_sample=torch.ones(b), n_terms=torch.tensor(1),
                          n_active_terms=torch.tensor(1), has_positives=torch.tensor(True))
    for k in range(b + 1):
        grad = torch.zeros(b, d)
        grad[:k, 0] = scale
        share = float(greediness(out, grad, [])["grad_effective_share"])
        assert share == pytest.approx(k / b, rel=1e-6)
    # unequal movers: norms 1, 2, 3 and five zeros -> 36 / (8 * 14)
    grad = torch.zeros(b, d)
    grad[0, 0], grad[1, 1], grad[2, 2] = scale, 2 * scale, 3 * scale
    assert float(greediness(out, grad, [])["grad_effective_share"]) == pytest.approx(36 / 112, rel=1e-6)
    # duplicating the batch leaves the share unchanged
    out2 = SimpleNamespace(**{**vars(out), "per_sample": torch.ones(2 * b)})
    share2 = greediness(out2, torch.cat([grad, grad]), [])["grad_effective_share"]
    assert float(share2) == pytest.approx(36 / 112, rel=1e-6)


def test_grad_active_sweep():
    torch.manual_seed(9)
    grad = torch.randn(32, 8) * torch.logspace(-8, 0, 32).unsqueeze(1)
    sweep = grad_active_sweep(grad)
    assert sweep.shape == (len(GRAD_THRESHOLD_SWEEP),)
    assert bool((sweep[1:] <= sweep[:-1]).all())
    i = GRAD_THRESHOLD_SWEEP.index(GRAD_THRESHOLD)
    out = _out(torch.ones(32), 1, 1, True)
    assert float(sweep[i]) == float(greediness(out, grad, [])["grad_active_ratio"])
    rel = grad_active_sweep(grad, [0.0, 0.5, 1.0], relative=True)
    norms = grad.norm(dim=1)
    assert float(rel[0]) == 1.0 and float(rel[2]) == 0.0
    assert float(rel[1]) == pytest.approx(float((norms > 0.5 * norms.max()).float().mean()))


@pytest.mark.parametrize("q", [0.0, 0.1, 0.5, 0.9, 1.0])
def test_masked_quantile_matches_torch_quantile(q):
    torch.manual_seed(10)
    v = torch.rand(37)
    m = torch.rand(37) > 0.4
    (got, median) = _masked_quantiles(v, m, (q, 0.5))
    assert float(got) == pytest.approx(float(torch.quantile(v[m], q)))
    assert float(median) == pytest.approx(float(torch.quantile(v[m], 0.5)))
    assert math.isnan(float(_masked_quantiles(v, torch.zeros(37, dtype=torch.bool), (q,))[0]))
    # float64 all the way: the interpolation position is not rounded to float32
    v64 = torch.rand(37, generator=torch.Generator().manual_seed(10), dtype=torch.float64) * 1e3
    (got,) = _masked_quantiles(v64, m, (q,))
    assert float(got) == pytest.approx(float(torch.quantile(v64[m], q)), rel=1e-14)
    # one active value is every quantile of it
    one = torch.zeros(37, dtype=torch.bool)
    one[5] = True
    assert [float(x) for x in _masked_quantiles(v, one, (q, 0.5))] == [float(v[5])] * 2


def test_no_active_samples_gives_nan_statistics_and_zero_ratios():
    out = _out(torch.zeros(4), 0, 0, False)
    g = greediness(out, torch.zeros(4, 3), [])
    assert float(g["active_ratio"]) == 0.0 and float(g["grad_active_ratio"]) == 0.0
    # a zero gradient is not "above" a zero threshold, nor a zero loss "active"
    assert float(greediness(out, torch.zeros(4, 3), [], grad_threshold=0.0)["grad_active_ratio"]) == 0.0
    assert grad_active_sweep(torch.zeros(4, 3), [0.0]).tolist() == [0.0]
    assert float(g["grad_effective_share"]) == 0.0
    assert math.isnan(float(g["tuple_active_ratio"]))
    assert math.isnan(float(g["emb_grad_norm_mean"]))
    assert math.isnan(float(g["emb_grad_norm_p90"]))


def test_grad_active_sweep_bad_input():
    for bad in (torch.zeros(4), torch.zeros(0, 3), torch.zeros(2, 3, 1)):
        message = f"emb_grad must be [B, D] with B > 0, got {tuple(bad.shape)}"
        with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
            grad_active_sweep(bad)
    assert grad_active_sweep(torch.ones(1, 3), [0.5]).tolist() == [1.0]  # one sample is a batch


def test_greediness_bad_input():
    out = _out(torch.ones(4), 1, 1, True)
    with pytest.raises(ValueError, match="rows"):
        greediness(out, torch.zeros(5, 3), [])
    with pytest.raises(ValueError, match="empty"):
        greediness(_out(torch.ones(0), 0, 0, False), torch.zeros(0, 3), [])
    with pytest.raises(ValueError, match="retain_grad"):
        greediness(out, None, [])
    with pytest.raises(ValueError, match=r"\[B, D\]"):
        greediness(out, torch.zeros(4), [])


# --------------------------------------------------------------------------------------------------
# convergence helpers
# --------------------------------------------------------------------------------------------------


def test_convergence_epoch():
    # total fall 9; 90 % -> loss <= 1.9 first at index 3
    assert convergence_epoch([10.0, 5.0, 2.0, 1.5, 1.0]) == 3
    assert convergence_epoch([10.0, 5.0, 1.9, 1.5, 1.0]) == 2  # exactly 90 %
    assert convergence_epoch([3.0, 3.0, 3.0]) == 0
    assert convergence_epoch([1.0, 2.0, 3.0], fraction=0.5) == 1  # works for increasing series
    assert convergence_epoch(torch.tensor([4.0, 1.0])) == 1
    assert convergence_epoch([4.0, 1.0], fraction=0.0) == 0


def test_convergence_fraction_bounds_are_inclusive():
    assert convergence_epoch([10.0, 5.0, 2.0, 1.0], fraction=1.0) == 3
    assert recall_convergence_epoch([0.2, 0.5, 0.8], fraction=1.0) == 2
    assert recall_convergence_epoch([0.2, 0.5, 0.8], fraction=0.0) == 0


def test_recall_convergence_epoch():
    assert recall_convergence_epoch([0.1, 0.5, 0.78, 0.8]) == 2  # 0.95 * 0.8 = 0.76
    assert recall_convergence_epoch([0.1, 0.9, 0.5, 0.8]) == 1  # first time, not last time
    assert recall_convergence_epoch([0.0, 0.0]) == 0
    # the target is a share of the final value, not of the best or the one before it
    assert recall_convergence_epoch([0.5, 0.7, 1.0, 0.6]) == 1  # 0.95 * 0.6 = 0.57
    # 0.9 * 0.8 rounds to 0.7200000000000001: a relative tolerance lets 0.72 count
    assert recall_convergence_epoch([0.0, 0.0, 0.72, 0.8], fraction=0.9) == 2


@pytest.mark.parametrize("fn,name", [(convergence_epoch, "loss_by_epoch"),
                                     (recall_convergence_epoch, "recall_by_epoch")])
def test_convergence_bad_input(fn, name):
    with pytest.raises(ValueError, match=f"^{name} is empty$"):
        fn([])
    with pytest.raises(ValueError, match=f"^{name} contains NaN or infinite values$"):
        fn([1.0, float("nan")])
    for bad in (1.5, -0.1):
        with pytest.raises(ValueError, match=r"^fraction must be in \[0, 1\]$"):
            fn([1.0, 0.5], fraction=bad)


# --------------------------------------------------------------------------------------------------
# tangential per-sample gradients
# --------------------------------------------------------------------------------------------------


def test_tangential_removes_the_radial_part_by_hand():
    from vgcore.metrics import tangential

    z = torch.tensor([[2.0, 0.0], [0.0, -1.0], [3.0, 4.0]], dtype=torch.float64)
    g = torch.tensor([[3.0, 4.0], [1.0, 5.0], [3.0, 4.0]], dtype=torch.float64)
    expected = torch.tensor([[0.0, 4.0], [1.0, 0.0], [0.0, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(tangential(g, z), expected)


def test_greediness_with_z_measures_tangential_norms():
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    g = torch.tensor([[3.0, 4.0], [0.0, 2.0]], dtype=torch.float64)  # second row purely radial
    out = SimpleNamespace(per_sample=torch.ones(2), n_terms=torch.tensor(2), n_active_terms=torch.tensor(2),
                          has_positives=torch.tensor(True))
    full = greediness(out, g, [])
    tang = greediness(out, g, [], z=z)
    assert float(full["emb_grad_norm_mean"]) == pytest.approx((5.0 + 2.0) / 2)
    assert float(tang["emb_grad_norm_mean"]) == pytest.approx(4.0)  # only the first moves tangentially
    assert float(tang["grad_active_ratio"]) == pytest.approx(0.5)
    assert float(tang["grad_effective_share"]) == pytest.approx(0.5)  # one of two samples moves
    with pytest.raises(ValueError, match="shape"):
        greediness(out, g, [], z=z[:1])


def test_losses_that_normalise_have_no_radial_gradient_and_raw_distance_losses_do():
    from vgcore.losses import make_loss
    from vgcore.metrics import tangential

    torch.manual_seed(3)
    z = torch.nn.functional.normalize(torch.randn(16, 8, dtype=torch.float64)).requires_grad_(True)
    y = torch.arange(16) % 4
    for name, radial in (("infonce", False), ("scl", False), ("contrastive", True)):
        z.grad = None
        make_loss(name)(z, y).backward()
        share = float(tangential(z.grad, z).norm() / z.grad.norm())
        if radial:
            assert share < 0.99, name
        else:
            assert share == pytest.approx(1.0, abs=1e-9), name


def test_convergence_step_smooths_and_has_step_resolution():
    from vgcore.metrics.convergence import convergence_step, covered_fraction

    steps = [10.0 - 9.0 * min(1.0, i / 40) for i in range(100)]  # linear fall to step 40, then flat
    assert convergence_step(steps, window=1) == 36  # first step with 90% of the fall covered
    noisy = [v + (0.5 if i % 2 else -0.5) for i, v in enumerate(steps)]
    assert convergence_step(noisy, window=2) == 37  # the 2-step mean removes the alternation
    assert convergence_step(steps) == convergence_step(steps, window=5)  # default: 5% of the steps
    assert covered_fraction(1.0, 0.4, 0.2) == pytest.approx(0.75)
    assert math.isnan(covered_fraction(1.0, 1.2, 1.5))  # no overall decrease: undefined


def test_convergence_step_does_not_smooth_a_run_of_fewer_than_30_steps():
    """5% of 10 steps rounds to a window of 1 (the step itself), of 40 steps to 2."""
    from vgcore.metrics.convergence import convergence_step

    assert convergence_step([10.0] * 5 + [1.0] * 5) == 5
    assert convergence_step([10.0] * 20 + [1.0] * 20) == 21  # the 2-step mean at step 20 is 5.5


def test_without_the_loss_output_the_loss_term_keys_are_nan():
    """A loss that returns only its value (greediness(None, ...)): the gradient keys are unchanged."""
    z, y = _line_batch()
    out = batch_all_triplet(z, y)
    out.loss.backward()
    full, blind = greediness(out, z.grad, head_params=[]), greediness(None, z.grad, head_params=[])
    assert tuple(blind) == GREEDINESS_KEYS
    for key in GREEDINESS_KEYS:
        if key in ("active_ratio", "tuple_active_ratio", "n_terms", "n_active_terms", "has_positives",
                   "adam_step_norm_mean"):  # the last: no optimiser's step given, with or without the output
            assert math.isnan(float(blind[key])), key
        else:
            assert torch.equal(blind[key], full[key]), key
