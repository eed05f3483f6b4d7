"""GreedinessMonitor: GREEDINESS of any loss from the backward of the user's own loop.

Oracle: `vgcore.metrics.greediness` on the equivalent vgcore loss (PROTOCOL.md's PML mapping), with
dL/dz from `retain_grad` projected by `tangential`, on an identical copy of the model and batch.
"""

from __future__ import annotations

import copy
import math

import pandas as pd
import pytest
import torch

from vgcore.losses import make_loss
from vgcore.metrics import GREEDINESS_KEYS, greediness, tangential
from vgcore.results import STEP_COLUMNS
from vgcore.train import GreedinessMonitor

from _ci import DEV_EXTRA, require

pml_losses = require("pytorch_metric_learning.losses", DEV_EXTRA)
pml_miners = require("pytorch_metric_learning.miners", DEV_EXTRA)

F64 = torch.float64
LOSS_TERM_KEYS = ("active_ratio", "tuple_active_ratio", "n_terms", "n_active_terms", "has_positives")
OPTIMISER_KEYS = ("adam_step_norm_mean",)  # the monitor does not see the optimiser: NaN
GRADIENT_KEYS = tuple(k for k in GREEDINESS_KEYS if k not in LOSS_TERM_KEYS + OPTIMISER_KEYS)

EQUIVALENT = {  # PML loss -> the vgcore loss computing the same function (tests/test_losses_pml.py)
    "ntxent": (lambda: pml_losses.NTXentLoss(temperature=0.1), ("infonce", {})),
    "triplet": (lambda: pml_losses.TripletMarginLoss(), ("triplet", dict(squared=False, margin=0.05,
                                                                          reduction="nonzero_mean"))),
    "contrastive": (lambda: pml_losses.ContrastiveLoss(), ("contrastive", dict(squared=False, normalize=True,
                                                                                reduction="nonzero_mean"))),
    "supcon": (lambda: pml_losses.SupConLoss(), ("scl", {})),
}


def setup(seed=0, n=32):
    gen = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 5, (n,), generator=gen)
    x = torch.randn(n, 12, generator=gen, dtype=F64)
    torch.manual_seed(seed)
    return torch.nn.Linear(12, 8).double(), x, y


def reference(model, loss_fn, x, y, *args, project=True):
    """The training-loop way (retain_grad, one backward, greediness) on a copy of the model."""
    model = copy.deepcopy(model)
    z = model(x)
    z.retain_grad()
    loss_fn(z, y, *args).backward()
    grad = tangential(z.grad, z) if project else z.grad
    return greediness(loss_fn.last, grad, model.parameters(), loss_fn.parameters())


def monitored(model, loss_fn, x, y, *args, **kwargs):
    model = copy.deepcopy(model)
    monitor = GreedinessMonitor(loss_fn, model.parameters(), **kwargs)
    monitor(model(x), y, *args).backward()
    return monitor


@pytest.mark.parametrize("case", EQUIVALENT)
@pytest.mark.parametrize("mine", [False, True])
def test_monitor_on_a_pml_loss_equals_greediness_of_the_equivalent_vgcore_loss(case, mine):
    pml_factory, (name, hp) = EQUIVALENT[case]
    model, x, y = setup(1)
    args = (pml_miners.MultiSimilarityMiner(epsilon=0.1)(model(x), y),) if mine else ()
    row = monitored(model, pml_factory(), x, y, *args).frame(all_columns=True).iloc[0]
    ref = reference(model, make_loss(name, **hp), x, y, *args)
    for key in GRADIENT_KEYS:
        assert float(row[key]) == pytest.approx(float(ref[key]), rel=1e-9, abs=1e-15), key
    for key in LOSS_TERM_KEYS + OPTIMISER_KEYS:  # a PML loss does not report its terms
        assert pd.isna(row[key]), key


def test_monitor_sees_the_loss_parameters_of_a_proxy_loss():
    model, x, y = setup(2)
    torch.manual_seed(0)
    ours = make_loss("arcface", 5, 8).double()
    theirs = pml_losses.ArcFaceLoss(5, 8, margin=math.degrees(0.5), scale=64.0).double()
    with torch.no_grad():
        theirs.W.copy_(ours.weight.T)
    row = monitored(model, theirs, x, y).frame().iloc[0]
    ref = reference(model, ours, x, y)
    assert float(row["loss_grad_norm"]) > 0
    for key in GRADIENT_KEYS:
        assert float(row[key]) == pytest.approx(float(ref[key]), rel=1e-9), key


@pytest.mark.parametrize("name", ["contrastive", "npair", "ccl"])
def test_monitor_on_a_vgcore_loss_fills_every_key(name):
    model, x, y = setup(3)
    torch.manual_seed(0)
    loss_fn = make_loss(name, num_classes=5, embedding_dim=8).double()
    monitor = monitored(model, copy.deepcopy(loss_fn), x, y)
    ref = reference(model, copy.deepcopy(loss_fn), x, y)
    for key in GREEDINESS_KEYS:
        torch.testing.assert_close(monitor.last[key], ref[key], rtol=1e-9, atol=1e-15, equal_nan=True)
    # without the projection: the raw dL/dz the training step logs
    raw = monitored(model, copy.deepcopy(loss_fn), x, y, project=None)
    ref_raw = reference(model, copy.deepcopy(loss_fn), x, y, project=False)
    for key in GREEDINESS_KEYS:
        torch.testing.assert_close(raw.last[key], ref_raw[key], rtol=1e-9, atol=1e-15, equal_nan=True)
    # contrastive and npair on raw distances / dot products: their dL/dz has a radial part
    if name in ("contrastive", "npair"):
        assert float(raw.last["emb_grad_norm_mean"]) > float(monitor.last["emb_grad_norm_mean"])


def test_tangential_by_hand():
    g = torch.tensor([[1.0, 1.0], [2.0, -1.0], [0.5, 0.5]])
    z = torch.tensor([[3.0, 0.0], [0.0, 0.5], [0.0, 0.0]])
    # u = (1, 0): keep the second coordinate; u = (0, 1): keep the first; z = 0: unchanged
    assert torch.equal(tangential(g, z), torch.tensor([[0.0, 1.0], [2.0, 0.0], [0.5, 0.5]]))
    with pytest.raises(ValueError, match="same shape"):
        tangential(g, z[:2])


def test_steps_frame_is_the_steps_schema_and_counts_backwards_only():
    model, x, y = setup(4, n=16)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with GreedinessMonitor(pml_losses.TripletMarginLoss(), model.parameters(), sync_every=2) as monitor:
        for epoch in range(2):
            monitor.epoch = epoch
            for _ in range(3):
                optimizer.zero_grad()
                monitor(model(x), y).backward()
                optimizer.step()
        monitor(model(x), y)  # a validation loss with gradients on, never backpropagated: no row
        with torch.no_grad():
            monitor(model(x), y)  # no gradients: no hook, no row
        loss = monitor(model(x), y)
        loss.backward(retain_graph=True)
        loss.backward()  # the same graph twice: one step
    frame = monitor.frame(all_columns=True)
    assert tuple(frame.columns) == STEP_COLUMNS
    assert frame["step"].tolist() == list(range(7)) and frame["epoch"].tolist() == [0, 0, 0, 1, 1, 1, 1]
    assert (frame["grad_norm"] > 0).all() and frame["train_loss"].notna().all()
    assert monitor._handle is None  # the context manager removed the last hook


def test_frame_leaves_out_the_columns_a_pml_loss_never_fills():
    """A PML loss reports no terms and the monitor sees no optimiser: those columns are NaN in every
    row, so frame() leaves them out; frame(all_columns=True) keeps the steps.csv schema."""
    model, x, y = setup(7, n=16)
    monitor = GreedinessMonitor(pml_losses.TripletMarginLoss(), model.parameters())
    for _ in range(3):
        monitor(model(x), y).backward()
    full = monitor.frame(all_columns=True)
    assert tuple(full.columns) == STEP_COLUMNS
    empty = [c for c in full.columns if full[c].isna().all()]
    assert set(empty) == set(LOSS_TERM_KEYS + OPTIMISER_KEYS)
    frame = monitor.frame()
    assert tuple(frame.columns) == tuple(c for c in STEP_COLUMNS if c not in empty)
    pd.testing.assert_frame_equal(frame, full.drop(columns=empty))
    # a vgcore loss fills its terms: only the optimiser's column goes
    vg = GreedinessMonitor(make_loss("triplet"), model.parameters())
    vg(model(x), y).backward()
    assert tuple(vg.frame().columns) == tuple(c for c in STEP_COLUMNS if c not in OPTIMISER_KEYS)
    # the step, the epoch and the loss stay even when NaN; nothing logged yet: every column
    nan_loss = GreedinessMonitor(lambda z, labels: z.sum() * float("nan"), model.parameters(), sync_every=1)
    assert tuple(nan_loss.frame().columns) == STEP_COLUMNS
    nan_loss(model(x), y).backward()
    assert tuple(nan_loss.frame().columns)[:3] == ("step", "epoch", "train_loss")


def test_a_nan_loss_is_logged_not_raised():
    model, x, y = setup(5, n=8)
    monitor = GreedinessMonitor(lambda z, labels: z.sum() * float("nan"), model.parameters(), sync_every=1)
    monitor(model(x), y).backward()
    assert math.isnan(monitor.frame()["train_loss"].iloc[0])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_monitored_step_does_not_synchronise_with_the_host():
    model, x, y = setup(6, n=64)
    model, x, y = model.float().cuda(), x.float().cuda(), y.cuda()
    loss_fn = make_loss("triplet", check_inputs=False).cuda()
    monitor = GreedinessMonitor(loss_fn, model.parameters(), sync_every=1000)
    monitor(model(x), y).backward()  # warm-up
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            model.zero_grad()
            monitor(model(x), y).backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert len(monitor.frame()) == 4


def test_protocol_says_the_training_step_logs_tangential_gradients_as_it_does():
    """PROTOCOL.md once said the training step logged raw gradients; it passes z, so they are tangential."""
    import inspect
    from pathlib import Path

    from vgcore.train import learner

    # the step's GREEDINESS reading is learner.forward_backward's, which train_step runs
    assert "forward_backward(" in inspect.getsource(learner.train_step)
    assert "z=z" in inspect.getsource(learner.forward_backward)  # greediness gets the embeddings: tangential parts
    text = (Path(__file__).resolve().parents[1] / "PROTOCOL.md").read_text()
    section = text[text.index("## Diagnostics: GREEDINESS"):text.index("## Retrieval metrics")]
    flat = " ".join(section.split())
    assert "still logs the raw ones" not in flat
    assert "as are those the training step (`vgcore.train.learner.train_step`) logs" in flat
