"""vgcore.losses.pairwise's hand-written backwards against autograd on plain torch formulas."""

from __future__ import annotations

import math

import pytest
import torch

from vgcore.losses.pairwise import (
    distance_matrix,
    masked_logsumexp,
    pointwise,
    safe_sqrt,
    similarity_matrix,
    within_class_rank,
)

F64 = torch.float64


def rand(*shape, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=gen, dtype=F64)


def grad(value, x):
    (g,) = torch.autograd.grad(value, x, retain_graph=True)
    return g


@pytest.mark.parametrize("squared", [True, False])
@pytest.mark.parametrize("normalize", [True, False])
def test_distance_matrix_matches_cdist_values_and_gradients(squared, normalize):
    z = rand(9, 4).requires_grad_(True)
    w = rand(9, 9, seed=1)
    w.fill_diagonal_(0.0)  # cdist's gradient on the diagonal (zero distance) is not defined
    d = distance_matrix(z, normalize=normalize, squared=squared)
    x = torch.nn.functional.normalize(z, dim=1) if normalize else z
    ref = torch.cdist(x, x) ** (2 if squared else 1)
    torch.testing.assert_close(d.detach().clone().fill_diagonal_(0), ref.detach().fill_diagonal_(0))
    torch.testing.assert_close(grad((w * d).sum(), z), grad((w * ref).sum(), z))


def test_distance_matrix_gradcheck_and_zero_distance():
    z = rand(6, 3).requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda e: distance_matrix(e, normalize=False, squared=True), (z,)
    )
    twins = torch.cat([z[:3], z[:3]]).detach().requires_grad_(True)  # coincident points
    d = distance_matrix(twins, normalize=False)
    d.sum().backward()
    assert torch.isfinite(twins.grad).all()


def test_masked_logsumexp_matches_logsumexp_and_empty_rows_are_clean():
    x = (rand(5, 7) * 30).requires_grad_(True)  # wide range: the shift must avoid underflow
    mask = rand(5, 7, seed=2) > 0
    mask[3] = False  # an empty row
    w = rand(5, seed=3)
    lse = masked_logsumexp(x, mask)
    ref = torch.logsumexp(x.masked_fill(~mask, float("-inf")), dim=1)
    assert lse[3] == float("-inf")
    keep = torch.arange(5) != 3
    torch.testing.assert_close(lse[keep], ref[keep])
    g = grad((w[keep] * lse[keep]).sum(), x)
    g_ref = grad((w[keep] * ref[keep]).sum(), x)
    torch.testing.assert_close(g, g_ref)
    assert torch.equal(grad(lse[3], x), torch.zeros_like(x))  # torch.logsumexp: NaN here
    full = mask.clone()
    full[3] = True
    assert torch.autograd.gradcheck(lambda t: masked_logsumexp(t, full), ((x.detach() / 30).requires_grad_(True),))


def test_pointwise_gradient_is_value_times_derivative():
    x = rand(4, 4).requires_grad_(True)
    with torch.no_grad():
        value, slope = torch.nn.functional.softplus(x), torch.sigmoid(x)
    y = pointwise(x, value, slope)
    assert torch.equal(y, value)
    w = rand(4, 4, seed=5)
    torch.testing.assert_close(
        grad((w * y).sum(), x), grad((w * torch.nn.functional.softplus(x)).sum(), x)
    )


def test_similarity_matrix_scale_scales_the_gram_matrix():
    z = rand(6, 3).requires_grad_(True)
    s = similarity_matrix(z, normalize=True, scale=10.0)
    zn = torch.nn.functional.normalize(z, dim=1)
    ref = 10.0 * zn @ zn.T
    torch.testing.assert_close(s, ref)
    torch.testing.assert_close(grad(s.sum(), z), grad(ref.sum(), z))


def test_safe_sqrt_has_a_zero_gradient_at_and_below_zero():
    x = torch.tensor([4.0, 0.0, -1.0, 0.25], dtype=F64, requires_grad=True)
    out = safe_sqrt(x)
    assert out.tolist() == [2.0, 0.0, 0.0, 0.5]
    assert grad(out.sum(), x).tolist() == [0.25, 0.0, 0.0, 1.0]
    assert grad((3.0 * out).sum(), x).tolist() == [0.75, 0.0, 0.0, 3.0]  # scales the incoming gradient


def test_masked_logsumexp_shifts_each_row_by_its_own_maximum():
    # rows 1000 apart: a shared shift would underflow the second row to an empty (-inf) one
    x = torch.tensor([[0.0, 0.0, 5.0], [-1000.0, -1000.0, 7.0]], dtype=F64)
    mask = torch.tensor([[True, True, False], [True, True, False]])
    expect = torch.tensor([math.log(2.0), -1000.0 + math.log(2.0)], dtype=F64)
    torch.testing.assert_close(masked_logsumexp(x, mask), expect, rtol=1e-15, atol=0)


def test_default_distance_is_euclidean_and_default_scale_is_one():
    z = rand(5, 3)
    torch.testing.assert_close(distance_matrix(z, normalize=False).fill_diagonal_(0),
                               torch.cdist(z, z).fill_diagonal_(0))
    torch.testing.assert_close(similarity_matrix(z, normalize=False), z @ z.T)


@pytest.mark.parametrize("labels", [[], [7], [3, 3], [5, 1, 5, 5, 2, 1, 9, 5, 2], [0, 1, 2, 3], [4] * 6,
                                    torch.randint(0, 30, (200,), generator=torch.Generator().manual_seed(0)).tolist()])
def test_within_class_rank_and_next_sample_by_counting(labels):
    """Sohn's construction (npair) reads these: rank = earlier samples of the same label; next =
    the batch index of the next sample of the same label, -1 for the last of its class."""
    rank, following = within_class_rank(torch.tensor(labels, dtype=torch.int64))
    assert rank.tolist() == [labels[:i].count(c) for i, c in enumerate(labels)]
    assert following.tolist() == [labels.index(c, i + 1) if c in labels[i + 1:] else -1 for i, c in enumerate(labels)]
