"""Each sample's share of Adam's step (vgcore.metrics.adam_step), the validation progress yardstick
and the early intra-class variance (vgcore.metrics.convergence, the training loop)."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from vgcore import train
from vgcore.config import get_profile
from vgcore.losses import make_loss
from vgcore.metrics.adam_step import adam_step_norms, mover_mean
from vgcore.metrics.convergence import progress_grid, progress_step
from vgcore.train.head import ProjectionHead
from vgcore.train.learner import Learner, train_step
from vgcore.train.samplers import split_off


def _batch(seed=0, b=12, d_in=6, classes=3):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, d_in, generator=g, dtype=torch.float64), torch.arange(b) % classes


def _reference_norms(head, loss_fn, x, y, optimizer):
    """||c_i|| by autograd, one sample at a time: the loss with only row i's head output depending on
    the parameters (the others fixed at their values), so its parameter gradient is sample i's part."""
    params = list(head.parameters())
    with torch.no_grad():
        h_all = head.net(x)
    out = []
    for i in range(len(x)):
        h = torch.cat([h_all[:i], head.net(x[i : i + 1]), h_all[i + 1 :]])
        grads = torch.autograd.grad(loss_fn(nn.functional.normalize(h, dim=1), y), params)
        total = 0.0
        for p, g in zip(params, grads, strict=True):
            state, group = optimizer.state[p], optimizer.param_groups[0]
            beta1, beta2 = group["betas"]
            v_hat = state["exp_avg_sq"] / (1 - beta2 ** float(state["step"]))
            total += float((((1 - beta1) * g / (v_hat.sqrt() + group["eps"])) ** 2).sum())
        out.append(math.sqrt(total))
    return np.array(out)


@pytest.mark.parametrize("kind", ["linear", "mlp"])
@pytest.mark.parametrize("loss", ["contrastive", "triplet", "arcface"])
def test_adam_step_norms_match_per_sample_autograd(kind, loss):
    torch.manual_seed(0)
    x, y = _batch()
    head = ProjectionHead(6, 4, kind, hidden=5).double()
    loss_fn = make_loss(loss, num_classes=3, embedding_dim=4).double()
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    for step in range(3):  # Adam's state after a few steps, not only the first
        trace = []
        z = head(x, trace)
        opt.zero_grad()
        loss_fn(z, y).backward()
        opt.step()
        got = adam_step_norms(trace, opt).numpy()
        want = _reference_norms(head, loss_fn, x, y, opt) if step == 2 else None
    # the reference reads the parameters after the last step: recompute the traced norms at those
    # parameters by rerunning the same forward and backward without stepping
    trace = []
    z = head(x, trace)
    opt.zero_grad()
    loss_fn(z, y).backward()
    got = adam_step_norms(trace, opt).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-9)
    assert (got > 0).any()


def _scaled(loss_fn, factor):
    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = loss_fn

        @property
        def last(self):
            return self.inner.last

        def forward(self, z, y):
            return factor * self.inner(z, y)

    return Scaled()


@pytest.mark.parametrize("loss", ["contrastive", "infonce", "triplet"])
def test_a_loss_multiplied_by_a_constant_makes_the_same_per_sample_step(loss):
    """Scale-free: loss x 10^3 or x 10^-1 leaves each sample's share of Adam's step unchanged (up to
    Adam's eps = 1e-8 against sqrt(v_hat), here below 0.5 %), while the raw per-sample gradient norm
    moves with the factor."""
    x, y = _batch(1, b=24, d_in=8, classes=4)
    logged = {}
    for factor in (1.0, 1e3, 1e-1):
        torch.manual_seed(0)
        head = ProjectionHead(8, 5).double()
        loss_fn = _scaled(make_loss(loss, num_classes=4, embedding_dim=5, check_inputs=False).double(), factor)
        learner = Learner(head, loss_fn, torch.optim.Adam(head.parameters(), lr=1e-2))
        rows = [train_step([learner], x, y)[0] for _ in range(4)]
        from vgcore.train.learner import STAT_KEYS

        logged[factor] = {k: np.array([float(r[STAT_KEYS.index(k)]) for r in rows])
                          for k in ("adam_step_norm_mean", "emb_grad_norm_mean")}
    for factor in (1e3, 1e-1):
        np.testing.assert_allclose(logged[factor]["adam_step_norm_mean"], logged[1.0]["adam_step_norm_mean"],
                                   rtol=5e-3)
        ratio = logged[factor]["emb_grad_norm_mean"] / logged[1.0]["emb_grad_norm_mean"]
        assert np.all(np.abs(np.log10(ratio)) > 0.5)  # the raw norm follows the loss's scale


def test_mover_mean_is_the_size_of_the_samples_that_move():
    assert float(mover_mean(torch.tensor([0.0, 3.0, 0.0, 3.0]))) == 3.0
    c = torch.tensor([1.0, 2.0, 4.0])
    assert float(mover_mean(c)) == pytest.approx(21 / 7)
    assert float(mover_mean(10 * c)) == pytest.approx(10 * 21 / 7)
    assert math.isnan(float(mover_mean(torch.zeros(3))))


def test_progress_grid_is_log_spaced_with_its_ends_and_the_early_step():
    assert progress_grid(20, 2.0) == [0, 1, 2, 4, 8, 16, 20]
    assert progress_grid(20, 2.0, 5, 99) == [0, 1, 2, 4, 5, 8, 16, 20]
    grid = progress_grid(4000, 2**0.5)
    ratios = np.diff(np.log(grid[2:-1]))
    assert np.all(ratios <= math.log(2**0.5) + 0.35) and len(grid) < 30
    with pytest.raises(ValueError):
        progress_grid(10, 1.0)


def test_progress_step_reads_normalised_progress_not_a_share_of_the_final_value():
    steps = [0, 1, 2, 4, 8]
    # starts at 0.80 of a final 0.90: a share of the final value would be met at step 0
    assert progress_step(steps, [0.80, 0.82, 0.85, 0.89, 0.90]) == 4.0
    assert progress_step(steps, [0.80, 0.82, 0.85, 0.89, 0.90], fraction=0.5) == 2.0
    assert progress_step(steps, [0.1, 0.5, 0.9, 0.95, 1.0]) == 4.0  # 0.95: (0.85 / 0.9) >= 0.9 at step 4
    assert progress_step(steps, [0.1, 0.5, 0.91, 0.95, 1.0]) == 2.0
    assert math.isnan(progress_step(steps, [0.5, 0.6, 0.4, 0.5, 0.5]))  # no gain: nothing to measure


def test_split_off_holds_out_a_fixed_draw_independent_of_the_run():
    x = torch.arange(20.0).view(10, 2)
    y = torch.arange(10)
    (xk, yk, ck), (xh, yh, ch) = split_off(x, y, 3, y + 100)
    assert len(yh) == 3 and len(yk) == 7 and sorted(torch.cat([yk, yh]).tolist()) == list(range(10))
    assert torch.equal(ck, yk + 100) and torch.equal(ch, yh + 100) and torch.equal(xh[:, 0], 2.0 * yh)
    assert yk.tolist() == sorted(yk.tolist())
    again = split_off(x, y, 3, None)[1]
    assert torch.equal(again[1], yh) and again[2] is None
    assert split_off(x, y, 0)[1] is None
    with pytest.raises(ValueError, match="val_size"):
        split_off(x, y, 9)


def test_a_run_reads_its_convergence_on_the_validation_split_and_its_early_variance(tmp_path):
    config = get_profile("smoke").config("synthetic", "contrastive", 0, epochs=8, val_size=48, early_step=4)
    result = train.run(config, tmp_path / "r", cache_dir=tmp_path / "cache", progress=False)
    epochs = result.epochs
    val = epochs[epochs["split"] == "progress/validation"].sort_values("step")
    n = len(result.steps)
    assert val["step"].tolist() == progress_grid(n, config.progress_ratio, config.early_step)
    conv = result.summary["convergence"]
    want = progress_step(val["step"].tolist(), val["recall@1"].tolist())
    assert (math.isnan(want) and math.isnan(conv["val_convergence_step"])) or conv["val_convergence_step"] == want
    probe = epochs[(epochs["split"] == "progress/train_subset") & (epochs["step"] == 4)]
    assert conv["early_intra_var"] == pytest.approx(float(probe["intra_var"].iloc[0]))
    # the validation rows are held out of training: 48 fewer training samples than without
    alone = train.run(get_profile("smoke").config("synthetic", "contrastive", 0, epochs=1), tmp_path / "b",
                      cache_dir=tmp_path / "cache", progress=False)
    per_epoch = len(result.steps) // 8
    assert per_epoch == (len(alone.steps) * config.batch_size - 48) // config.batch_size or per_epoch < len(alone.steps)
    assert isinstance(epochs, pd.DataFrame)


def test_greediness_summarises_given_step_norms_and_leaves_them_nan_otherwise():
    from vgcore.metrics.greediness import greediness

    z = torch.nn.functional.normalize(torch.randn(4, 3, generator=torch.Generator().manual_seed(0)), dim=1)
    grad = torch.randn(4, 3, generator=torch.Generator().manual_seed(1))
    c = torch.tensor([0.0, 2.0, 2.0, 0.0])
    assert float(greediness(None, grad, [], z=z, step_norms=c)["adam_step_norm_mean"]) == 2.0
    assert math.isnan(float(greediness(None, grad, [], z=z)["adam_step_norm_mean"]))


def test_at_adams_first_step_the_share_is_a_ratio_set_by_cancellation():
    """Why the first step is not read: there v_hat = g^2, so each coordinate's share is |G_i| / |g|
    and a coordinate where the samples' parts cancel gives a share set by what is left of the sum
    (on a real batch, rounding: the demo's triplet run read 26.5 on one CPU and 50.8 on another,
    about 0.3 at every later step). Two samples whose parts cancel exactly, then up to 2^-20 (exact in float32)."""
    for residue, want in ((0.0, 0.1 / 1e-8), (2.0**-20, 0.1 / (2.0**-20 + 1e-8))):
        layer = nn.Linear(1, 1)
        opt = torch.optim.Adam(layer.parameters(), lr=1e-3)
        a = torch.ones(2, 1, dtype=torch.float32)
        h = layer(a)
        h.retain_grad()
        (h[:, 0] * torch.tensor([1.0, -1.0 + residue])).sum().backward()
        opt.step()
        c = adam_step_norms([(layer, a, h)], opt)
        # weight and bias alike: |G_i| = 1 (about) over sqrt(v_hat) = residue
        assert float(c[0]) == pytest.approx(math.sqrt(2) * want, rel=1e-3)


def test_the_training_step_logs_no_share_at_adams_first_step_and_one_after():
    from vgcore.train.learner import STAT_KEYS

    x, y = _batch(3, b=24, d_in=8, classes=4)
    torch.manual_seed(0)
    head = ProjectionHead(8, 5).double()
    learner = Learner(head, make_loss("triplet", check_inputs=False).double(), torch.optim.Adam(head.parameters(), lr=1e-2))
    shares = [float(train_step([learner], x, y)[0][STAT_KEYS.index("adam_step_norm_mean")]) for _ in range(3)]
    assert math.isnan(shares[0]) and all(math.isfinite(s) and s > 0 for s in shares[1:])
    # the same learner read directly after its first step gives the ratio the log leaves out
    assert math.isfinite(float(mover_mean(adam_step_norms(*_one_traced_step(x, y)))))


def _one_traced_step(x, y):
    torch.manual_seed(0)
    head = ProjectionHead(8, 5).double()
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    trace = []
    z = head(x, trace)
    make_loss("triplet", check_inputs=False).double()(z, y).backward()
    opt.step()
    return trace, opt
