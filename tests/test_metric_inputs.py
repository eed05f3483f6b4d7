"""The metrics take inputs as users hold them: NumPy arrays, lists, any integer labels, tensors on any
device (`vgcore.metrics.as_embeddings`); the results are those of the equivalent CPU tensors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vgcore.metrics import as_embeddings, variance


def _case():
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 6, (200,), generator=g)
    return torch.randn(6, 8, generator=g)[y] + 0.5 * torch.randn(200, 8, generator=g), y


def _same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert (math.isnan(a[key]) and math.isnan(b[key])) or a[key] == pytest.approx(b[key], rel=1e-12), key


@pytest.mark.parametrize("label_dtype", [np.int8, np.uint8, np.int32, np.int64])
def test_variance_of_numpy_arrays_equals_that_of_tensors(label_dtype):
    z, y = _case()
    _same(variance(z.numpy(), y.numpy().astype(label_dtype)), variance(z, y))
    _same(variance(z.numpy().tolist(), y.tolist()), variance(z, y))


def test_as_embeddings_converts_and_names_problems():
    z, y = as_embeddings(np.zeros((3, 2), dtype=np.float16), np.array([0, 1, 0], dtype=np.uint8))
    assert z.dtype == torch.float16 and y.dtype == torch.int64
    with pytest.raises(ValueError, match="z has 3 rows but y has 2 labels"):
        as_embeddings(np.zeros((3, 2)), [0, 1])
    with pytest.raises(ValueError, match="return_inverse"):
        as_embeddings(np.zeros((2, 2)), np.array(["a", "b"]))
    with pytest.raises(ValueError, match="NaN"):
        as_embeddings(np.array([[0.0, np.nan], [1.0, 1.0]]), [0, 1])
    with pytest.raises(ValueError, match="floating-point"):
        as_embeddings(np.zeros((2, 2), dtype=np.int64), [0, 1])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_variance_on_cuda_with_labels_on_the_cpu():
    z, y = _case()
    out = variance(z.double().cuda(), y)
    ref = variance(z.double(), y)
    for key in ref:
        assert out[key] == pytest.approx(ref[key], rel=1e-9, abs=1e-12), key
