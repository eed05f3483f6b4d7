"""The losses on a GPU: same numbers as on the CPU, and no host synchronisation in a step.

Skipped without CUDA (CI has none); run on a GPU machine with ``pytest tests/test_losses_cuda.py``.
"""

from __future__ import annotations

import pytest
import torch

from vgcore.losses import LOSSES, make_loss
from vgcore.registry import BASELINES

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

NUM_CLASSES, DIM = 16, 8


def batch(dtype=torch.float64):
    gen = torch.Generator().manual_seed(0)
    labels = torch.randint(0, NUM_CLASSES, (64,), generator=gen)
    z = torch.nn.functional.normalize(torch.randn(64, DIM, generator=gen, dtype=dtype), dim=1)
    return z, labels


def build(name, **hp):
    torch.manual_seed(0)
    return make_loss(name, num_classes=NUM_CLASSES, embedding_dim=DIM, **hp).double()


@pytest.mark.parametrize("name", (*LOSSES, *BASELINES))
def test_cuda_matches_cpu(name):
    z, y = batch()
    outs, grads = [], []
    for device in ("cpu", "cuda"):
        loss_fn = build(name).to(device)
        x = z.to(device).detach().requires_grad_(True)
        loss = loss_fn(x, y.to(device))
        loss.backward()
        outs.append(loss_fn.last)
        grads.append(x.grad.cpu())
    cpu, gpu = outs
    for field in ("loss", "per_sample"):
        torch.testing.assert_close(
            getattr(gpu, field).detach().cpu(), getattr(cpu, field).detach(), rtol=1e-9, atol=1e-12
        )
    for field in ("n_terms", "n_active_terms", "has_positives"):
        assert torch.equal(getattr(gpu, field).cpu(), getattr(cpu, field))
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", (*LOSSES, *BASELINES))
def test_training_step_has_no_host_sync(name):
    """Forward and backward of every default loss (inputs unchecked) never wait for the GPU."""
    z, y = batch(torch.float32)
    loss_fn = make_loss(name, num_classes=NUM_CLASSES, embedding_dim=DIM, check_inputs=False).cuda()
    x, y = z.cuda().requires_grad_(True), y.cuda()
    loss_fn(x, y).backward()  # warm-up: lazy CUDA initialisation may sync once
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        loss = loss_fn(x, y)
        loss.backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(loss).item()


@pytest.mark.parametrize("name", ["contrastive", "triplet", "infonce", "scl", "arcface"])
def test_a_miners_tuple_and_cpu_labels_on_cuda(name):
    """Labels on the CPU are moved to the embeddings' device; a miner's pairs build their masks on
    the device without a host sync (inputs unchecked)."""
    z, y = batch(torch.float32)
    loss_fn = make_loss(name, num_classes=NUM_CLASSES, embedding_dim=DIM, check_inputs=False).cuda()
    x = z.cuda().requires_grad_(True)
    assert torch.equal(loss_fn(x, y), loss_fn(x, y.cuda()))
    yc = y.cuda()
    same = yc.unsqueeze(0) == yc.unsqueeze(1)
    a1, p = torch.nonzero(same & ~torch.eye(len(y), dtype=torch.bool, device="cuda"), as_tuple=True)
    a2, n = torch.nonzero(~same, as_tuple=True)
    pairs = (a1[::2], p[::2], a2[::3], n[::3])
    loss_fn(x, yc, pairs).backward()  # warm-up
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        loss = loss_fn(x, yc, pairs)
        loss.backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(loss).item()
