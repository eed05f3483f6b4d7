"""The metrics take inputs as users hold them: NumPy arrays, lists, any integer labels, tensors on any
device (`vgcore.metrics.as_embeddings`); the results are those of the equivalent CPU tensors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vgcore.metrics import (
    as_embeddings,
    encode_labels,
    retrieval_metrics,
    superclass_metrics,
    variance,
)
from vgcore.train.evaluate import evaluate


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
    z, y = as_embeddings(np.zeros((3, 2)), np.array(["b", "a", "b"]))  # class names: their sorted codes
    assert y.tolist() == [1, 0, 1]
    with pytest.raises(ValueError, match="y must hold integer class labels"):
        as_embeddings(np.zeros((2, 2)), np.array([True, False]))
    with pytest.raises(ValueError, match="NaN"):
        as_embeddings(np.array([[0.0, np.nan], [1.0, 1.0]]), [0, 1])
    with pytest.raises(ValueError, match="floating-point"):
        as_embeddings(np.zeros((2, 2), dtype=np.int64), [0, 1])


def _names(codes, prefix="class "):
    return np.array([f"{prefix}{c}" for c in np.asarray(codes)])


def test_encode_labels_gives_joint_integer_codes():
    names = np.array(["dog", "cat", "dog", "emu"])
    (codes,) = encode_labels(names)
    assert codes.dtype == np.int64 and codes.tolist() == [1, 0, 1, 2]  # np.unique's sorted order
    queries, gallery = encode_labels(["b", "c"], np.array(["a", "b", "b"], dtype=object))
    assert queries.tolist() == [1, 2] and gallery.tolist() == [0, 1, 1]  # one code per name across both
    mixed = encode_labels(np.array(["x", None, 3, "x"], dtype=object))[0]  # values that do not sort
    assert mixed.tolist() == [0, 1, 2, 0]  # codes in order of first appearance
    y, none = torch.tensor([3, 1]), None
    assert encode_labels(y, none)[0] is y  # numbers are left as they are (checked downstream)
    unhashable = np.empty(2, dtype=object)
    unhashable[0], unhashable[1] = ["a"], {"b": 1}
    with pytest.raises(ValueError, match="^labels must be integers or hashable class names"):
        encode_labels(unhashable)


def test_string_labels_give_the_numbers_of_their_integer_codes():
    z, y = _case()
    names = _names(y)
    assert names.dtype.kind == "U"
    _same(variance(z, names), variance(z, y))
    _same(variance(z, names.tolist()), variance(z, y))
    _same(variance(z, names.astype(object)), variance(z, y))
    opt = dict(precision_ks=(1, 5), map_ks=(5,))
    _same(retrieval_metrics(z, names, **opt), retrieval_metrics(z, y, **opt))
    coarse = y // 3
    _same(superclass_metrics(z, names, _names(coarse, "super ")), superclass_metrics(z, y, coarse))
    _same(evaluate(z, names, _names(coarse, "super ")), evaluate(z, y, coarse))


def test_query_and_gallery_names_are_coded_together():
    """Names present in only one of the two sets must not shift the other's codes."""
    z, y = _case()
    qy, gy = y[:80].clone(), y[80:].clone()
    qy[qy == 5] = 6  # a query class the gallery lacks: excluded
    gy[gy == 0] = 7  # a gallery class no query has
    opt = dict(gallery=z[80:], nmi=False, precision_ks=(3,), map_ks=(3,))
    ref = retrieval_metrics(z[:80], qy, gallery_labels=gy, **opt)
    assert ref["n_excluded_queries"] > 0
    _same(retrieval_metrics(z[:80], _names(qy), gallery_labels=_names(gy).tolist(), **opt), ref)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_variance_on_cuda_with_labels_on_the_cpu():
    z, y = _case()
    out = variance(z.double().cuda(), y)
    ref = variance(z.double(), y)
    for key in ref:
        assert out[key] == pytest.approx(ref[key], rel=1e-9, abs=1e-12), key
