"""vgcore.train.probes: the fixed probe batches, a GREEDINESS reading without a step, the probe epochs."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from vgcore import registry
from vgcore.config import RunConfig
from vgcore.metrics.greediness import GREEDINESS_KEYS
from vgcore.train.learner import STAT_KEYS, make_learner, train_step
from vgcore.train.probes import (
    PROBE_FRACTIONS,
    PROBE_KEYS,
    PROBE_SEED,
    probe_batches,
    probe_epochs,
    probe_reading,
)
from vgcore.train.samplers import pk_shape

N, DIM, CLASSES, B = 64, 16, 8, 16  # pk_shape(8, 16) = (4, 4): fewer classes per batch than the data has
LOSSES = registry.names("loss")


def _data(seed=0):
    gen = torch.Generator().manual_seed(seed)
    y = torch.arange(N)[torch.randperm(N, generator=gen)] % CLASSES  # 8 rows per class, shuffled
    x = torch.randn(CLASSES, DIM, generator=gen)[y] + torch.randn(N, DIM, generator=gen)
    return x, y


def _learner(loss, seed=0):
    config = RunConfig(loss=loss, seed=seed, embedding_dim=8, lr=1e-2, batch_size=B)
    return make_learner(config, DIM, CLASSES, torch.device("cpu"))


def _trained(loss, steps=3):
    """A learner after a few steps: Adam has state, the parameters hold the last step's gradients."""
    x, y = _data()
    learner = _learner(loss)
    gen = torch.Generator().manual_seed(3)
    for _ in range(steps):
        idx = torch.randperm(N, generator=gen)[:B]
        train_step([learner], x[idx], y[idx])
    return learner


def _same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


def _state(learner):
    """Everything a reading must leave as it was, cloned."""
    opt = learner.optimizer.state_dict()
    return {
        "head": {k: v.clone() for k, v in learner.head.state_dict().items()},
        "loss": {k: v.clone() for k, v in learner.loss_fn.state_dict().items()},
        "opt_state": {i: {k: v.clone() if torch.is_tensor(v) else v for k, v in s.items()}
                      for i, s in opt["state"].items()},
        "opt_groups": copy.deepcopy(opt["param_groups"]),
        "grads": [None if p.grad is None else p.grad.clone()
                  for p in (*learner.head.parameters(), *learner.loss_fn.parameters())],
        "modes": [m.training for m in (*learner.head.modules(), *learner.loss_fn.modules())],
        "last": learner.loss_fn.last,
        "rng": torch.get_rng_state(),
    }


def _assert_same_state(before, after):
    for part in ("head", "loss"):
        assert before[part].keys() == after[part].keys()
        for k in before[part]:
            assert torch.equal(before[part][k], after[part][k]), f"{part}.{k} changed"
    assert before["opt_state"].keys() == after["opt_state"].keys()
    for i, s in before["opt_state"].items():
        for k, v in s.items():
            assert torch.equal(v, after["opt_state"][i][k]) if torch.is_tensor(v) else v == after["opt_state"][i][k]
    assert before["opt_groups"] == after["opt_groups"]
    assert len(before["grads"]) == len(after["grads"])
    for g0, g1 in zip(before["grads"], after["grads"], strict=True):
        assert (g0 is None and g1 is None) or torch.equal(g0, g1)
    assert before["modes"] == after["modes"]
    assert before["last"] is after["last"]
    assert torch.equal(before["rng"], after["rng"])


# --- probe_batches -------------------------------------------------------------------------------


def test_the_probe_batches_depend_on_labels_batch_size_and_seed_only():
    _, y = _data()
    torch.manual_seed(0)
    first = probe_batches(y, B)
    torch.manual_seed(12345)
    torch.rand(100)
    rng = torch.get_rng_state()
    second = probe_batches(y, B)
    assert torch.equal(rng, torch.get_rng_state())  # the global random state is not drawn from
    assert first.keys() == second.keys() == {"random", "pk"}
    for key in first:
        assert first[key].dtype == torch.int64
        assert torch.equal(first[key], second[key])
    assert all(torch.equal(first[k], probe_batches(y, B, seed=PROBE_SEED)[k]) for k in first)
    other = probe_batches(y, B, seed=8)
    assert not torch.equal(first["random"], other["random"]) and not torch.equal(first["pk"], other["pk"])
    assert PROBE_SEED == 7


def test_the_random_probe_is_b_distinct_rows_in_drawn_order():
    _, y = _data()
    random = probe_batches(y, B)["random"]
    assert random.shape == (B,) and random.unique().numel() == B
    assert random.min() >= 0 and random.max() < N
    # the first B of the generator's permutation, not sorted
    assert torch.equal(random, torch.randperm(N, generator=torch.Generator().manual_seed(PROBE_SEED))[:B])
    assert not torch.equal(random, random.sort().values)
    assert probe_batches(y, N)["random"].sort().values.tolist() == list(range(N))  # B = all rows: each once


@pytest.mark.parametrize(("n_classes", "batch_size"), [(8, 16), (8, 32), (4, 32), (2, 8)])
def test_the_pk_probe_holds_p_classes_of_k_distinct_rows_in_blocks(n_classes, batch_size):
    gen = torch.Generator().manual_seed(1)
    y = (torch.arange(N) % n_classes)[torch.randperm(N, generator=gen)]
    p, k = pk_shape(n_classes, batch_size)
    pk = probe_batches(y, batch_size)["pk"]
    assert pk.shape == (p * k,) and pk.unique().numel() == p * k  # distinct rows
    blocks = y[pk].view(p, k)
    assert (blocks == blocks[:, :1]).all()  # K rows of one class per block
    assert blocks[:, 0].unique().numel() == p  # P distinct classes


def test_the_pk_probe_draws_its_classes_and_rows_at_random():
    """Over seeds, every row of the data turns up (not the first K rows of the first P classes)."""
    _, y = _data()
    seen = torch.cat([probe_batches(y, B, seed=s)["pk"] for s in range(40)])
    assert seen.unique().numel() == N
    firsts = {tuple(y[probe_batches(y, B, seed=s)["pk"]].view(4, 4)[:, 0].tolist()) for s in range(10)}
    assert len(firsts) > 1  # the drawn classes (and their order) change with the seed


def test_the_probe_batches_are_indices_into_labels_on_their_device_and_any_integer_dtype():
    _, y = _data()
    want = probe_batches(y, B)
    got = probe_batches(y.to(torch.int32), B)
    assert all(torch.equal(want[k], got[k]) and got[k].device == y.device for k in want)


def test_probe_batches_refuse_bad_input_naming_the_fix():
    _, y = _data()
    with pytest.raises(ValueError, match="batch_size 65 exceeds the 64 training rows"):
        probe_batches(y, N + 1)
    short = y.clone()
    short[(y == 3).nonzero().squeeze(1)[1:]] = 5  # class 3 keeps one row
    with pytest.raises(ValueError, match=r"class 3 has 1 training rows, fewer than K = 4.*drop the short classes"):
        probe_batches(short, B)
    with pytest.raises(ValueError, match="at least 2 classes"):
        probe_batches(torch.zeros(N, dtype=torch.int64), B)
    with pytest.raises(ValueError, match="1-D integer"):
        probe_batches(y.float(), B)
    with pytest.raises(ValueError, match="positive integer"):
        probe_batches(y, 0)


# --- probe_reading -------------------------------------------------------------------------------


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("batch", ["random", "pk"])
def test_a_reading_is_the_training_steps_record_of_that_batch_without_the_step(loss, batch):
    """The reading equals, bit for bit, what train_step records for the same batch on an identical
    copy of the learner; the learner read is left exactly as it was, so training it afterwards
    gives what training an unread copy gives."""
    x, y = _data()
    idx = probe_batches(y, B)[batch]
    learner = _trained(loss)
    twin, unread = copy.deepcopy(learner), copy.deepcopy(learner)
    before = _state(learner)
    reading = probe_reading(learner, x[idx], y[idx])
    _assert_same_state(before, _state(learner))

    assert tuple(reading) == PROBE_KEYS == ("loss", *GREEDINESS_KEYS)
    assert all(isinstance(v, float) for v in reading.values())
    row = dict(zip(STAT_KEYS, train_step([twin], x[idx], y[idx])[0].tolist(), strict=False))
    assert reading["loss"] == row["train_loss"] and math.isfinite(reading["loss"])
    for key in GREEDINESS_KEYS:
        if key != "adam_step_norm_mean":
            assert _same(reading[key], row[key]), (key, reading[key], row[key])
    assert math.isnan(reading["adam_step_norm_mean"]) and math.isfinite(row["adam_step_norm_mean"])
    assert reading["grad_norm"] > 0
    if loss in ("arcface", "ccl"):  # learned class vectors: their gradient is read too
        assert reading["loss_grad_norm"] > 0

    after = train_step([learner], x[idx], y[idx])[0]
    assert torch.equal(after, train_step([unread], x[idx], y[idx])[0])
    for p, q in zip(learner.head.parameters(), unread.head.parameters(), strict=True):
        assert torch.equal(p, q)


def test_a_reading_of_ccl_ema_leaves_its_centres_where_the_training_step_moves_them():
    x, y = _data()
    idx = probe_batches(y, B)["pk"]
    learner = _trained("ccl_ema")
    assert learner.loss_fn.training and not list(learner.loss_fn.parameters())
    centres = learner.loss_fn.centers.clone()
    probe_reading(learner, x[idx], y[idx])
    assert torch.equal(learner.loss_fn.centers, centres) and learner.loss_fn.training
    train_step([learner], x[idx], y[idx])
    assert not torch.equal(learner.loss_fn.centers, centres)  # what the reading must not do


def test_a_reading_of_an_untrained_learner_matches_the_first_step():
    """Epoch 0: no gradients yet (None stays None), no Adam state (stays empty)."""
    x, y = _data()
    idx = probe_batches(y, B)["random"]
    learner = _learner("triplet")
    twin = copy.deepcopy(learner)
    before = _state(learner)
    assert all(g is None for g in before["grads"]) and not before["opt_state"]
    reading = probe_reading(learner, x[idx], y[idx])
    _assert_same_state(before, _state(learner))
    row = train_step([twin], x[idx], y[idx])[0].tolist()
    for key, value in zip(STAT_KEYS, row, strict=False):
        assert _same(reading["loss" if key == "train_loss" else key], value), key


def test_a_reading_takes_the_grad_threshold_and_works_under_no_grad_and_eval_mode():
    x, y = _data()
    idx = probe_batches(y, B)["random"]
    learner = _trained("infonce")
    twin = copy.deepcopy(learner)
    default = probe_reading(learner, x[idx], y[idx])
    assert default["grad_active_ratio"] == 1.0
    tau = B * default["emb_grad_norm_p50"]  # about half the samples above it
    learner.head.eval()
    with torch.no_grad():
        reading = probe_reading(learner, x[idx], y[idx], grad_threshold=tau)
    assert not learner.head.training and learner.loss_fn.training  # each module's own flag restored
    row = dict(zip(STAT_KEYS, train_step([twin], x[idx], y[idx], grad_threshold=tau)[0].tolist(), strict=False))
    assert 0 < reading["grad_active_ratio"] == row["grad_active_ratio"] < 1
    assert reading["emb_grad_norm_mean"] == row["emb_grad_norm_mean"] > default["emb_grad_norm_mean"]


def test_a_failed_reading_still_restores_the_learner(monkeypatch):
    x, y = _data()
    learner = _trained("ccl_ema")
    learner.head.eval()
    before = _state(learner)
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        probe_reading(learner, x[:B, :3], y[:B])  # wrong feature width: fails in the head
    _assert_same_state(before, _state(learner))

    def fail(*args, **kwargs):
        raise FloatingPointError("after the backward")

    monkeypatch.setattr("vgcore.train.learner.greediness", fail)
    with pytest.raises(FloatingPointError):
        probe_reading(learner, x[:B], y[:B])  # fails with the reading's gradients on the parameters
    _assert_same_state(before, _state(learner))


# --- probe_epochs --------------------------------------------------------------------------------


@pytest.mark.parametrize(("stop", "want"), [
    (40, [0, 10, 20, 30, 40]),
    (10, [0, 3, 5, 8, 10]),  # 2.5 -> 3 (half up; Python's round gives 2)
    (6, [0, 2, 3, 5, 6]),  # 1.5 -> 2, 4.5 -> 5 (round gives 4)
    (5, [0, 1, 3, 4, 5]),  # 1.25 -> 1, 2.5 -> 3, 3.75 -> 4
    (2, [0, 1, 1, 2, 2]),  # duplicates kept, aligned with the fractions
    (1, [0, 0, 1, 1, 1]),
    (0, [0, 0, 0, 0, 0]),
])
def test_probe_epochs_by_hand(stop, want):
    assert probe_epochs(stop) == want
    assert probe_epochs(stop, PROBE_FRACTIONS) == want


def test_probe_epochs_take_other_fractions_and_refuse_bad_input():
    assert PROBE_FRACTIONS == (0.0, 0.25, 0.5, 0.75, 1.0)
    assert probe_epochs(9, (1.0, 0.5, 1 / 3)) == [9, 5, 3]  # in the given order; 4.5 -> 5
    assert probe_epochs(7, ()) == []
    for bad in (-1, 2.0, True):
        with pytest.raises(ValueError, match="stop_epoch"):
            probe_epochs(bad)
    with pytest.raises(ValueError, match="fractions"):
        probe_epochs(4, (0.5, 1.5))
