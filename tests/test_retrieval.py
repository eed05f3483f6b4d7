"""Retrieval metrics: PML's AccuracyCalculator as oracle, hand-checked ties, chunking, bad input."""

import math

import pytest
import torch

from vgcore.metrics.retrieval import (
    RETRIEVAL_KEYS,
    exact_knn,
    faiss_available,
    retrieval_keys,
    retrieval_metrics,
)

# --------------------------------------------------------------------------------------------------
# PML oracle
# --------------------------------------------------------------------------------------------------


def _pml(z, y):
    from pytorch_metric_learning.distances import CosineSimilarity
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
    from pytorch_metric_learning.utils.inference import CustomKNN

    calc = AccuracyCalculator(
        include=("precision_at_1", "mean_average_precision_at_r", "r_precision"),
        k="max_bin_count",
        knn_func=CustomKNN(CosineSimilarity()),
    )
    return calc.get_accuracy(z, y)  # reference=None: the query set is its own reference


def _random_case():
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 10, (300,), generator=g)
    y[0] = 99  # a singleton class: one excluded query
    return torch.randn(300, 16, generator=g), y


def _clustered_case():
    g = torch.Generator().manual_seed(1)
    sizes = torch.tensor([2, 3, 5, 8, 13, 21, 34, 55])
    y = torch.arange(8).repeat_interleave(sizes)
    y = y[torch.randperm(len(y), generator=g)]
    centers = torch.randn(8, 12, generator=g) * 2.0
    return centers[y] + torch.randn(len(y), 12, generator=g), y


@pytest.mark.parametrize("case", [_random_case, _clustered_case])
def test_matches_pml_accuracy_calculator(case):
    pytest.importorskip("pytorch_metric_learning")
    z, y = case()
    ref = _pml(z, y)
    out = retrieval_metrics(z, y, nmi=False)
    assert out["recall@1"] == pytest.approx(ref["precision_at_1"], abs=1e-6)
    assert out["map@r"] == pytest.approx(ref["mean_average_precision_at_r"], abs=1e-6)
    assert out["r_precision"] == pytest.approx(ref["r_precision"], abs=1e-6)
    n_lone = int((torch.unique(y, return_counts=True)[1] == 1).sum())
    assert out["n_excluded_queries"] == n_lone
    assert out["n_queries"] == len(y) - n_lone


# --------------------------------------------------------------------------------------------------
# hand-checked ties
# --------------------------------------------------------------------------------------------------


def test_tiny_case_with_ties_by_hand():
    # three items at (1, 0) and three at (0, 1): every similarity is 1 or 0, ties everywhere
    z = torch.tensor([[1.0, 0], [1, 0], [1, 0], [0, 1], [0, 1], [0, 1]])
    y = torch.tensor([0, 1, 0, 1, 0, 1])
    # rankings with ties broken by the lower index:
    #   q0: 1 2 3 4 5 -> labels 1 0 1 0 1 (R=2)   q1: 0 2 3 4 5 -> 0 0 1 0 1
    #   q2: 0 1 3 4 5 -> 0 1 1 0 1             q3: 4 5 0 1 2 -> 0 1 0 1 0
    #   q4: 3 5 0 1 2 -> 1 1 0 1 0             q5: 3 4 0 1 2 -> 1 0 0 1 0
    out = retrieval_metrics(z, y, ks=(1, 2, 4, 8), nmi=False)
    assert out["recall@1"] == pytest.approx(2 / 6)  # q2, q5
    assert out["recall@2"] == pytest.approx(4 / 6)  # + q0, q3
    assert out["recall@4"] == pytest.approx(1.0)  # q1, q4 hit at rank 3
    assert out["recall@8"] == pytest.approx(1.0)  # k beyond N - 1
    assert out["r_precision"] == pytest.approx((0.5 + 0 + 0.5 + 0.5 + 0 + 0.5) / 6)
    assert out["map@r"] == pytest.approx((0.25 + 0 + 0.5 + 0.25 + 0 + 0.5) / 6)
    _, idx = exact_knn(z, 5)
    assert idx.tolist() == [
        [1, 2, 3, 4, 5],
        [0, 2, 3, 4, 5],
        [0, 1, 3, 4, 5],
        [4, 5, 0, 1, 2],
        [3, 5, 0, 1, 2],
        [3, 4, 0, 1, 2],
    ]


def _bruteforce_knn(z, k):
    zn = torch.nn.functional.normalize(z.double(), dim=1)
    sims = zn @ zn.T
    n = len(z)
    rows = []
    for i in range(n):
        order = sorted((j for j in range(n) if j != i), key=lambda j: (-float(sims[i, j]), j))
        rows.append(order[:k])
    return torch.tensor(rows)


@pytest.mark.parametrize("k", [1, 3, 10, 29])
@pytest.mark.parametrize("chunk_size", [1, 7, None])
def test_exact_knn_ties_straddling_the_kth_place(k, chunk_size):
    # 30 rows drawn from 4 directions: large groups of exactly equal similarities
    g = torch.Generator().manual_seed(2)
    z = torch.eye(4)[torch.randint(0, 4, (30,), generator=g)]
    _, idx = exact_knn(z, k, chunk_size=chunk_size)
    assert torch.equal(idx, _bruteforce_knn(z, k))


def test_exact_knn_on_continuous_data_matches_bruteforce():
    torch.manual_seed(3)
    z = torch.randn(40, 5)
    vals, idx = exact_knn(z, 6, chunk_size=9)
    assert torch.equal(idx, _bruteforce_knn(z, 6))
    assert bool((vals[:, 1:] <= vals[:, :-1]).all())


# --------------------------------------------------------------------------------------------------
# chunking, backends, lone queries, NMI
# --------------------------------------------------------------------------------------------------


def test_chunk_size_does_not_change_results():
    z, y = _clustered_case()
    ref = retrieval_metrics(z, y, nmi=False)
    ref.pop("nmi")
    for chunk in (1, 13, 1000):
        out = retrieval_metrics(z, y, nmi=False, chunk_size=chunk)
        out.pop("nmi")
        assert out == ref  # exact: per-query values are summed in one fixed order


@pytest.mark.skipif(not faiss_available(), reason="faiss not installed")
@pytest.mark.parametrize("case", ["random", "ties"])
def test_faiss_backend_gives_same_results(case):
    if case == "random":
        z, y = _clustered_case()
    else:
        g = torch.Generator().manual_seed(4)
        z = torch.eye(4)[torch.randint(0, 4, (50,), generator=g)]
        y = torch.randint(0, 3, (50,), generator=g)
    a = retrieval_metrics(z, y, nmi=False, backend="torch", chunk_size=16)
    b = retrieval_metrics(z, y, nmi=False, backend="faiss", chunk_size=16)
    a.pop("nmi"), b.pop("nmi")
    assert a == b
    assert torch.equal(exact_knn(z, 5, backend="faiss")[1], exact_knn(z, 5)[1])


def test_faiss_backend_missing_is_a_clear_error():
    if faiss_available():
        pytest.skip("faiss installed")
    z, y = _random_case()
    with pytest.raises(ValueError, match="faiss"):
        retrieval_metrics(z, y, backend="faiss")


def test_lone_queries_are_excluded_and_counted():
    z = torch.tensor([[1.0, 0], [0.9, 0.1], [0, 1], [0.1, 0.9], [0.5, 0.5]])
    y = torch.tensor([0, 0, 1, 1, 2])
    out = retrieval_metrics(z, y, nmi=False)
    assert out["n_queries"] == 4 and out["n_excluded_queries"] == 1
    assert out["recall@1"] == 1.0 and out["map@r"] == 1.0 and out["r_precision"] == 1.0
    all_lone = retrieval_metrics(z[:3], torch.tensor([0, 1, 2]), nmi=False)
    assert all_lone["n_queries"] == 0 and all_lone["n_excluded_queries"] == 3
    assert math.isnan(all_lone["recall@1"]) and math.isnan(all_lone["map@r"])


def test_keys_and_nmi():
    g = torch.Generator().manual_seed(5)
    y = torch.arange(4).repeat_interleave(25)
    z = torch.eye(8)[:4][y] * 10 + 0.1 * torch.randn(100, 8, generator=g)
    out = retrieval_metrics(z, y, ks=(1, 5))
    assert tuple(out) == retrieval_keys((1, 5))
    assert out["nmi"] == pytest.approx(1.0)
    assert out["recall@1"] == 1.0 and out["map@r"] == 1.0
    assert math.isnan(retrieval_metrics(z, y, nmi=False)["nmi"])
    assert tuple(retrieval_metrics(z, y, nmi=False)) == RETRIEVAL_KEYS
    z2, y2 = _random_case()
    a, b = retrieval_metrics(z2, y2, seed=3), retrieval_metrics(z2, y2, seed=3)
    assert a["nmi"] == b["nmi"] and 0.0 <= a["nmi"] <= 1.0


@pytest.mark.parametrize(
    "z, y, kwargs, match",
    [
        (torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), {}, "empty"),
        (torch.randn(5, 3), torch.zeros(4, dtype=torch.long), {}, "labels"),
        (torch.randn(6, 3), torch.zeros(6, dtype=torch.long), {}, "2 classes"),
        (torch.tensor([[0.0, float("nan")], [1.0, 1.0]]), torch.tensor([0, 1]), {}, "NaN"),
        (torch.randn(4, 3), torch.tensor([0.0, 1.0, 0.0, 1.0]), {}, "integer"),
        (torch.randn(4, 3), torch.tensor([0, 1, 0, 1]), {"ks": (0,)}, "ks"),
        (torch.randn(4, 3), torch.tensor([0, 1, 0, 1]), {"backend": "annoy"}, "backend"),
        (torch.randn(4, 3), torch.tensor([0, 1, 0, 1]), {"chunk_size": 0}, "chunk_size"),
        (torch.randn(1, 3), torch.tensor([0]), {}, "at least 2"),
    ],
)
def test_bad_input_raises_value_error(z, y, kwargs, match):
    with pytest.raises(ValueError, match=match):
        retrieval_metrics(z, y, **kwargs)


@pytest.mark.parametrize("case", [_random_case, _clustered_case])
def test_recall_only_gives_the_same_recalls_and_skips_map_at_r(case):
    """map_at_r=False ranks only max(ks) neighbours: same Recall@K, MAP@R and R-precision NaN."""
    z, y = case()
    full = retrieval_metrics(z, y, nmi=False, chunk_size=37)
    light = retrieval_metrics(z, y, nmi=False, map_at_r=False, chunk_size=37)
    assert {k: light[k] for k in light if k.startswith("recall@")} == {k: full[k] for k in full if k.startswith("recall@")}
    assert math.isnan(light["map@r"]) and math.isnan(light["r_precision"]) and not math.isnan(full["map@r"])
    assert light["n_queries"] == full["n_queries"]
