"""Retrieval metrics: PML's AccuracyCalculator as oracle, hand-checked ties, chunking, bad input."""

import math
import re
import sys

import pytest
import torch

from vgcore.metrics.neighbours import ranked_neighbours
from vgcore.metrics.retrieval import (
    RETRIEVAL_KEYS,
    exact_knn,
    faiss_available,
    retrieval_keys,
    retrieval_metrics,
)

from _ci import DEV_EXTRA, require

# --------------------------------------------------------------------------------------------------
# PML oracle
# --------------------------------------------------------------------------------------------------


def _pml(z, y, reference=None, reference_labels=None):
    from pytorch_metric_learning.distances import CosineSimilarity
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
    from pytorch_metric_learning.utils.inference import CustomKNN

    calc = AccuracyCalculator(
        include=("precision_at_1", "mean_average_precision_at_r", "r_precision"),
        k="max_bin_count",
        knn_func=CustomKNN(CosineSimilarity()),
    )
    # reference=None: the query set is its own reference (self excluded); else a separate gallery
    return calc.get_accuracy(z, y, reference, reference_labels, ref_includes_query=False)


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


def _separated_case():
    """A clustered case in which no query has two neighbours within 1e-5 in cosine similarity (checked
    in float64 by :func:`_min_similarity_gap`): float32 products summed in any order (torch's BLAS,
    faiss's, another CPU's) rank the neighbours the same, so two backends can be compared exactly."""
    g = torch.Generator().manual_seed(11)
    sizes = torch.tensor([2, 3, 5, 8, 13, 21])
    y = torch.arange(6).repeat_interleave(sizes)
    y = y[torch.randperm(len(y), generator=g)]
    centers = torch.randn(6, 12, generator=g) * 2.0
    return centers[y] + torch.randn(len(y), 12, generator=g), y


def _min_similarity_gap(z):
    """The smallest gap between two consecutive cosine similarities of one query (float64)."""
    zn = torch.nn.functional.normalize(z.double(), dim=1)
    sims = (zn @ zn.T).fill_diagonal_(-math.inf).sort(dim=1, descending=True).values[:, :-1]
    return float((sims[:, :-1] - sims[:, 1:]).min())


@pytest.mark.parametrize("case", [_random_case, _clustered_case])
def test_matches_pml_accuracy_calculator(case):
    require("pytorch_metric_learning", DEV_EXTRA)
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


def _tied_case():
    """30 rows drawn from 4 directions (large groups of exactly equal similarities); two equal rows
    near the first direction (their nearest neighbour is unique, a tie block follows); three equal
    rows between two directions (their two nearest neighbours tie, the third is lower)."""
    g = torch.Generator().manual_seed(2)
    z = torch.eye(4)[torch.randint(0, 4, (30,), generator=g)]
    near = torch.tensor([[1.0, 0.1, 0.0, 0.0]])
    mid = torch.tensor([[0.0, 0.0, 1.0, 1.0]])
    return torch.cat([z[:12], near, mid, z[12:20], mid, z[20:], near, mid])


def _topk_ties_last_index_first(x, k, dim=-1, largest=True, sorted=True):
    """torch.topk that returns equal values highest index first: a tie order other than the CPU's."""
    assert dim in (1, -1) and largest and sorted
    flipped = torch.argsort(x.flip(1), dim=1, descending=True, stable=True)[:, :k]
    idx = x.shape[1] - 1 - flipped
    return torch.return_types.topk((x.gather(1, idx), idx))


@pytest.mark.parametrize("k", [1, 2, 3, 10, 34])
@pytest.mark.parametrize("chunk_size", [1, 7, None])
@pytest.mark.parametrize("topk", ["torch", "ties_last_index_first"])
def test_exact_knn_ties_straddling_the_kth_place(k, chunk_size, topk, monkeypatch):
    """Ties are ordered by index whatever order torch.topk returns them in (it is unspecified)."""
    z = _tied_case()
    expect = _bruteforce_knn(z, k)
    if topk != "torch":
        monkeypatch.setattr(torch, "topk", _topk_ties_last_index_first)
    _, idx = exact_knn(z, k, chunk_size=chunk_size)
    assert torch.equal(idx, expect)


def test_exact_knn_on_continuous_data_matches_bruteforce():
    torch.manual_seed(3)
    z = torch.randn(40, 5)
    vals, idx = exact_knn(z, 6, chunk_size=9)
    assert torch.equal(idx, _bruteforce_knn(z, 6))
    assert bool((vals[:, 1:] <= vals[:, :-1]).all())


# --------------------------------------------------------------------------------------------------
# chunking, backends, lone queries, NMI
# --------------------------------------------------------------------------------------------------


def _bruteforce_metrics(z, y, ks):
    """recall@k, MAP@R and R-precision as PROTOCOL.md defines them, by plain loops in float64."""
    n = len(y)
    ranking = _bruteforce_knn(z, n - 1).tolist()
    labels = y.tolist()
    out = {f"recall@{k}": 0.0 for k in ks} | {"map@r": 0.0, "r_precision": 0.0}
    queries = 0
    for i in range(n):
        r = labels.count(labels[i]) - 1
        if r == 0:
            continue
        queries += 1
        same = [labels[j] == labels[i] for j in ranking[i]]
        for k in ks:
            out[f"recall@{k}"] += float(any(same[:k]))
        out["r_precision"] += sum(same[:r]) / r
        out["map@r"] += sum(sum(same[: j + 1]) / (j + 1) for j in range(r) if same[j]) / r
    return {key: value / queries for key, value in out.items()} | {"n_queries": float(queries)}


@pytest.mark.parametrize(
    "case,ks",
    [
        ("clustered", (1, 2, 4, 8)),
        ("clustered", (1,)),
        ("pairs", (1, 2)),  # R = 1: most partners lie beyond the k_max = 2 neighbours searched
        ("partner_last", (8,)),  # k beyond N - 1; query 0's partner is its last neighbour
    ],
)
def test_metrics_equal_the_definitions_by_hand(case, ks):
    g = torch.Generator().manual_seed(7)
    if case == "clustered":
        z, y = _clustered_case()
    elif case == "pairs":
        y = torch.arange(12) // 2
        z = torch.randn(12, 3, generator=g, dtype=torch.float64)
    else:
        y = torch.tensor([0, 1, 1, 0])
        z = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.8, 0.2], [-1.0, 0.0]], dtype=torch.float64)
    out = retrieval_metrics(z, y, ks=ks, nmi=False)
    for key, value in _bruteforce_metrics(z, y, ks).items():
        assert out[key] == pytest.approx(value, rel=1e-13, abs=1e-13), key
    if case == "partner_last":
        assert out["recall@8"] == 1.0


def test_smallest_inputs_and_low_precision_embeddings():
    one_feature = retrieval_metrics(torch.tensor([[1.0], [2.0], [-1.0], [-3.0]]), torch.tensor([0, 0, 1, 1]), nmi=False)
    assert one_feature["recall@1"] == 1.0 and one_feature["map@r"] == 1.0
    two = retrieval_metrics(torch.randn(2, 3), torch.tensor([0, 1]), nmi=False)
    assert two["n_queries"] == 0.0 and two["n_excluded_queries"] == 2.0
    # float16 embeddings (as stored in embeddings.npz) give the numbers of their float32 values
    z, y = _clustered_case()
    half = z.half()
    assert retrieval_metrics(half, y, nmi=False) == retrieval_metrics(half.float(), y, nmi=False)


def test_auto_chunk_holds_about_64_mib_of_similarities():
    from vgcore.metrics.retrieval import _auto_chunk

    assert _auto_chunk(100_000) == 167  # PROTOCOL.md: 167 queries at N = 100,000
    assert _auto_chunk(10) == 10 and _auto_chunk(20_000_000) == 1
    assert all(isinstance(_auto_chunk(n), int) for n in (10, 100_000, 20_000_000))


def test_chunk_size_does_not_change_results():
    z, y = _clustered_case()
    ref = retrieval_metrics(z, y, nmi=False)
    ref.pop("nmi")
    for chunk in (1, 13, 1000):
        out = retrieval_metrics(z, y, nmi=False, chunk_size=chunk)
        out.pop("nmi")
        assert out == ref  # exact: per-query values are summed in one fixed order


@pytest.mark.parametrize("case", ["random", "ties"])
def test_faiss_backend_gives_same_results(case):
    require("faiss", f"faiss-cpu is in the dev extra: {DEV_EXTRA}")
    if case == "random":
        z, y = _separated_case()  # exact agreement needs neighbours that rounding cannot reorder
        assert _min_similarity_gap(z) > 1e-5
    else:
        g = torch.Generator().manual_seed(4)
        z = torch.eye(4)[torch.randint(0, 4, (50,), generator=g)]
        y = torch.randint(0, 3, (50,), generator=g)
    a = retrieval_metrics(z, y, nmi=False, backend="torch", chunk_size=16)
    b = retrieval_metrics(z, y, nmi=False, backend="faiss", chunk_size=16)
    a.pop("nmi"), b.pop("nmi")
    assert a == b
    assert torch.equal(exact_knn(z, 5, backend="faiss")[1], exact_knn(z, 5)[1])
    # every other item as a neighbour: faiss returns all N, there is no (k+1)-th score to compare
    k = len(z) - 1
    (sims, idx), (sims_torch, idx_torch) = exact_knn(z, k, backend="faiss", chunk_size=16), exact_knn(z, k)
    assert torch.equal(idx, idx_torch)
    torch.testing.assert_close(sims, sims_torch)  # faiss's own inner products: rounding only


def test_faiss_backend_missing_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)  # `import faiss` now fails, installed or not
    assert not faiss_available()
    z, y = _random_case()
    with pytest.raises(ValueError, match=r"^backend='faiss' requested but faiss is not installed$"):
        retrieval_metrics(z, y, backend="faiss")


def test_lone_queries_are_excluded_and_counted():
    z = torch.tensor([[1.0, 0], [0.9, 0.1], [0, 1], [0.1, 0.9], [0.5, 0.5]])
    y = torch.tensor([0, 0, 1, 1, 2])
    out = retrieval_metrics(z, y, nmi=False)
    assert out["n_queries"] == 4 and out["n_excluded_queries"] == 1
    assert out["recall@1"] == 1.0 and out["map@r"] == 1.0 and out["r_precision"] == 1.0
    all_lone = retrieval_metrics(z[:3], torch.tensor([0, 1, 2]), nmi=False)
    assert all_lone["n_queries"] == 0 and all_lone["n_excluded_queries"] == 3
    assert tuple(all_lone) == RETRIEVAL_KEYS
    assert all(math.isnan(all_lone[key]) for key in RETRIEVAL_KEYS if key not in ("n_queries", "n_excluded_queries"))
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


def test_nmi_is_the_documented_kmeans_recipe():
    """k-means (k = number of classes, one seeded start) of the L2-normalised rows, then NMI: on
    separated clusters the partition of scikit-learn's KMeans(n_clusters=C, n_init=1) and its NMI."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import normalized_mutual_info_score

    from vgcore.metrics.clustering import kmeans, nmi

    g = torch.Generator().manual_seed(6)
    z = torch.randn(300, 6, generator=g)  # no cluster structure: the value depends on the seeded start
    y = torch.randint(0, 7, (300,), generator=g) + 3  # labels need not start at 0
    x = torch.nn.functional.normalize(z.double(), dim=1)
    for seed in (0, 5):
        expect = nmi(y - 3, kmeans(x, 7, seed=seed).labels)
        assert retrieval_metrics(z.double(), y, seed=seed)["nmi"] == pytest.approx(expect, abs=1e-12)
    assert retrieval_metrics(z.double(), y)["nmi"] == retrieval_metrics(z.double(), y, seed=0)["nmi"]  # the default
    centers = torch.nn.functional.normalize(torch.randn(7, 6, generator=g), dim=1) * 10
    sep = centers[y - 3] + 0.1 * torch.randn(300, 6, generator=g)  # well separated on the sphere
    clusters = KMeans(n_clusters=7, n_init=1, random_state=0).fit_predict(
        torch.nn.functional.normalize(sep.double(), dim=1).numpy())
    assert retrieval_metrics(sep, y)["nmi"] == pytest.approx(normalized_mutual_info_score(y.numpy(), clusters), abs=1e-9)


def test_exact_knn_dtypes_smallest_input_and_bad_input():
    z = torch.tensor([[1.0], [2.0], [-1.0]], dtype=torch.float64)  # one feature: cosine is +-1
    sims, idx = exact_knn(z, 2)
    assert sims.dtype == torch.float64 and idx.dtype == torch.int64
    assert idx.tolist() == [[1, 2], [0, 2], [0, 1]] and sims.tolist() == [[1, -1], [1, -1], [-1, -1]]
    assert exact_knn(z[:2], 1)[1].tolist() == [[1], [0]]  # two rows: each is the other's neighbour
    for bad in (torch.zeros(3), torch.zeros(1, 4), torch.zeros(2, 2, 2)):
        with pytest.raises(ValueError, match=r"^z must be 2-D with at least 2 rows \(1 with a gallery\)$"):
            exact_knn(bad, 1)
    for k in (0, 3, 5):
        with pytest.raises(ValueError, match=rf"^k must be in \[1, 2\], got {k}$"):
            exact_knn(z, k)


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


# --------------------------------------------------------------------------------------------------
# inputs as users hold them: separate query and gallery sets, NumPy arrays, ks
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1])
def test_query_and_gallery_match_pml_with_ref_embeddings(seed):
    """In-Shop style: queries search a separate gallery; a query class absent from the gallery is excluded."""
    require("pytorch_metric_learning", DEV_EXTRA)
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(8, 12, generator=g) * 1.5
    qy, gy = torch.randint(0, 8, (150,), generator=g), torch.randint(0, 7, (230,), generator=g)
    q, gal = centers[qy] + torch.randn(150, 12, generator=g), centers[gy] + torch.randn(230, 12, generator=g)
    ref = _pml(q, qy, gal, gy)
    out = retrieval_metrics(q, qy, gallery=gal, gallery_labels=gy, nmi=False, chunk_size=37)
    assert out["recall@1"] == pytest.approx(ref["precision_at_1"], abs=1e-6)
    assert out["map@r"] == pytest.approx(ref["mean_average_precision_at_r"], abs=1e-6)
    assert out["r_precision"] == pytest.approx(ref["r_precision"], abs=1e-6)
    assert out["n_excluded_queries"] == int((qy == 7).sum()) and out["n_queries"] == int((qy != 7).sum())
    _, idx = exact_knn(q, 5, gallery=gal)
    sims = torch.nn.functional.normalize(q.double(), dim=1) @ torch.nn.functional.normalize(gal.double(), dim=1).T
    assert torch.equal(idx, sims.argsort(dim=1, descending=True, stable=True)[:, :5])


def test_self_exclusion_only_when_the_gallery_is_the_query_set():
    z, y = _clustered_case()
    loo = retrieval_metrics(z, y, nmi=False)
    assert retrieval_metrics(z, y, gallery=z, gallery_labels=y, nmi=False) == loo  # the same set
    copy = retrieval_metrics(z, y, gallery=z.clone(), gallery_labels=y.clone(), nmi=False)
    assert copy["recall@1"] == 1.0 and copy["n_excluded_queries"] == 0  # a copy is searched whole: itself first


def test_numpy_arrays_and_any_integer_labels_give_the_tensor_results():
    z, y = _random_case()
    ref = retrieval_metrics(z, y)
    assert retrieval_metrics(z.numpy(), y.numpy().astype("int32")) == ref
    assert retrieval_metrics(z.double().numpy().tolist(), y.tolist()) == pytest.approx(ref, abs=1e-6)
    _, idx = exact_knn(z.numpy(), 3)
    assert torch.equal(idx, exact_knn(z, 3)[1])


@pytest.mark.parametrize("ks", [(1.5,), (True,), ("1",), (1, 0)])
def test_ks_must_be_positive_integers(ks):
    z, y = _random_case()
    with pytest.raises(ValueError, match="ks must be positive integers"):
        retrieval_metrics(z, y, ks=ks, nmi=False)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"gallery": torch.randn(5, 3)}, "gallery needs its labels"),
        ({"gallery_labels": torch.arange(5)}, "without a gallery"),
        ({"gallery": torch.randn(5, 2), "gallery_labels": torch.arange(5)}, "dimension"),
        ({"gallery": torch.randn(5, 3), "gallery_labels": torch.arange(4)}, "gallery has 5 rows"),
        ({"gallery": torch.randn(5, 3), "gallery_labels": torch.arange(5) * 1.0}, "gallery_labels must hold integer"),
    ],
)
def test_bad_gallery_is_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        retrieval_metrics(torch.randn(4, 3), torch.tensor([0, 1, 0, 1]), nmi=False, **kwargs)


def test_class_names_are_coded_as_integers():
    """Class names, as the CLI takes them (tests/test_metric_inputs.py has the other metrics)."""
    z = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    assert retrieval_metrics(z, ["cat", "dog", "cat", "dog"]) == retrieval_metrics(z, [0, 1, 0, 1])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_embeddings_on_cuda_with_labels_on_the_cpu():
    z, y = _clustered_case()
    ref = retrieval_metrics(z.double(), y, nmi=False)
    out = retrieval_metrics(z.double().cuda(), y, nmi=False)
    assert out == pytest.approx(ref, abs=1e-9, nan_ok=True)
    gal = retrieval_metrics(z.cuda(), y.cuda(), gallery=z[:50].numpy(), gallery_labels=y[:50].numpy(), nmi=False)
    assert gal == pytest.approx(retrieval_metrics(z, y, gallery=z[:50], gallery_labels=y[:50], nmi=False),
                                abs=1e-6, nan_ok=True)


def test_faiss_backend_with_a_gallery_gives_same_results():
    require("faiss", f"faiss-cpu is in the dev extra: {DEV_EXTRA}")
    g = torch.Generator().manual_seed(6)
    z = torch.eye(4)[torch.randint(0, 4, (40,), generator=g)]  # ties everywhere
    gal = torch.eye(4)[torch.randint(0, 4, (30,), generator=g)]
    y, gy = torch.randint(0, 3, (40,), generator=g), torch.randint(0, 3, (30,), generator=g)
    a = retrieval_metrics(z, y, gallery=gal, gallery_labels=gy, nmi=False, chunk_size=16)
    b = retrieval_metrics(z, y, gallery=gal, gallery_labels=gy, nmi=False, chunk_size=16, backend="faiss")
    assert a == b
    assert torch.equal(exact_knn(z, 5, gallery=gal, backend="faiss")[1], exact_knn(z, 5, gallery=gal)[1])


def test_superclass_metrics_by_hand():
    from vgcore.metrics import superclass_metrics

    # angles (degrees) on the unit circle; each sample's nearest other sample is the closest angle
    angles = torch.tensor([0.0, 10.0, 25.0, 90.0, 100.0, 130.0, 200.0, 215.0])
    z = torch.stack([torch.cos(torch.deg2rad(angles)), torch.sin(torch.deg2rad(angles))], dim=1)
    y = torch.tensor([0, 0, 1, 2, 3, 3, 4, 5])
    s = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2])
    # nearest: 0->1, 1->0 (10 < 15), 2->1, 3->4, 4->3 (10 < 30), 5->4, 6->7, 7->6
    # fine hits: 0, 1, 5; the 5 misses (2, 3, 4, 6, 7) all stay in their superclass
    out = superclass_metrics(z, y, s)
    assert out["superclass_recall@1"] == 1.0
    assert out["fine_errors_in_superclass"] == 1.0
    s_mixed = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])  # now 2->1 and 3->4 cross superclasses
    out = superclass_metrics(z.numpy(), y.numpy(), s_mixed.numpy())
    assert out["superclass_recall@1"] == pytest.approx(5 / 8)  # 0, 1, 5, 6, 7
    assert out["fine_errors_in_superclass"] == pytest.approx(2 / 5)  # of 2, 3, 4, 6, 7: 6 and 7
    assert math.isnan(superclass_metrics(z[:2], y[:2], s[:2])["fine_errors_in_superclass"])


@pytest.mark.parametrize(
    "z, y, kwargs, message",
    [
        (torch.randn(1, 3), torch.tensor([0]), {}, "need at least 2 embeddings for leave-one-out retrieval"),
        (torch.randn(4, 3), torch.zeros(4, dtype=torch.long), {}, "retrieval metrics need at least 2 classes"),
        (torch.randn(4, 3), torch.tensor([0, 1, 0, 1]), {"ks": ()}, "ks must be positive integers (e.g. ks=(1, 2, 4, 8)), got ()"),
        (torch.randn(4, 3), torch.tensor([0, 1, 0, 1]), {"ks": (2, 0)}, "ks must be positive integers (e.g. ks=(1, 2, 4, 8)), got (2, 0)"),
        (torch.randn(4, 3), torch.tensor([0, 1, 0, 1]), {"chunk_size": 0}, "chunk_size must be >= 1"),
        (torch.randn(4, 3), torch.tensor([0, 1, 0, 1]), {"backend": "annoy"},
         "unknown backend 'annoy'; use 'torch' or 'faiss'"),
    ],
)
def test_bad_input_messages(z, y, kwargs, message):
    with pytest.raises(ValueError, match="^" + re.escape(message) + "$"):
        retrieval_metrics(z, y, nmi=False, **kwargs)
@pytest.mark.parametrize("case", [_random_case, _clustered_case])
def test_recall_only_gives_the_same_recalls_and_skips_map_at_r(case):
    """map_at_r=False ranks only max(ks) neighbours: same Recall@K, MAP@R and R-precision NaN."""
    z, y = case()
    full = retrieval_metrics(z, y, nmi=False, chunk_size=37)
    light = retrieval_metrics(z, y, nmi=False, map_at_r=False, chunk_size=37)
    assert {k: light[k] for k in light if k.startswith("recall@")} == {k: full[k] for k in full if k.startswith("recall@")}
    assert math.isnan(light["map@r"]) and math.isnan(light["r_precision"]) and not math.isnan(full["map@r"])
    assert light["n_queries"] == full["n_queries"]


# --------------------------------------------------------------------------------------------------
# OpenMetricLearning's precision@k and map@k (opt-in: precision_ks, map_ks)
# --------------------------------------------------------------------------------------------------


def _oml_by_hand(rankings, labels, gallery_labels, ks):
    """precision@k and map@k of OML 3.1/4.0 by plain loops over each query's ranked gallery labels.

    precision@k = (relevant among the first k) / min(k, R); map@k = sum over the relevant ranks i <= k
    of precision@i (relevant among the first i, over i), over the relevant items among the first k
    (0 without one). k beyond the gallery is read as its size; queries with R = 0 are left out."""
    out = {f"precision@{k}": 0.0 for k in ks} | {f"map@{k}": 0.0 for k in ks}
    queries = 0
    for i, ranking in enumerate(rankings):
        r = sum(g == labels[i] for g in gallery_labels) - (1 if gallery_labels is labels else 0)
        if r == 0:
            continue
        queries += 1
        same = [gallery_labels[j] == labels[i] for j in ranking]
        for asked in ks:
            k = min(asked, len(same))
            hits = sum(same[:k])
            out[f"precision@{asked}"] += hits / min(k, r)
            precisions = [sum(same[: j + 1]) / (j + 1) for j in range(k) if same[j]]
            out[f"map@{asked}"] += sum(precisions) / hits if hits else 0.0
    return {key: value / queries for key, value in out.items()}


def test_precision_and_map_at_k_of_the_tie_case_by_hand():
    """OML's precision@k = hits@k / min(k, R) and map@k = (1 / hits@k) * sum_{relevant i <= k} hits@i / i."""
    z = torch.tensor([[1.0, 0], [1, 0], [1, 0], [0, 1], [0, 1], [0, 1]])
    y = torch.tensor([0, 1, 0, 1, 0, 1])  # R = 2 for every query
    # same-class indicators along the rankings of test_tiny_case_with_ties_by_hand:
    #   q0 0 1 0 1 0   q1 0 0 1 0 1   q2 1 0 0 1 0   q3 0 1 0 1 0   q4 0 0 1 0 1   q5 1 0 0 1 0
    out = retrieval_metrics(z, y, ks=(1,), precision_ks=(2, 4, 8), map_ks=(2, 4, 8), nmi=False)
    assert out["precision@2"] == pytest.approx(1 / 3)  # (1/2 + 0 + 1/2 + 1/2 + 0 + 1/2) / 6
    assert out["map@2"] == pytest.approx(1 / 2)  # (1/2 + 0 + 1 + 1/2 + 0 + 1) / 6
    assert out["precision@4"] == pytest.approx(5 / 6)  # (1 + 1/2 + 1 + 1 + 1/2 + 1) / 6
    # q1: (1/3) / 1 (dividing by min(k, R) = 2 instead, as OML 2.x did, would give 1/6)
    assert out["map@4"] == pytest.approx(19 / 36)  # (1/2 + 1/3 + 3/4 + 1/2 + 1/3 + 3/4) / 6
    # k = 8 > N - 1 = 5 is read as 5: both relevant items are always among the 5
    assert out["precision@8"] == 1.0
    assert out["map@8"] == pytest.approx(97 / 180)  # (1/2 + 11/30 + 3/4) / 3


def _integer_case(seed=8, n=30):
    """Rows of the 4-D identity (cosines exactly 0 or 1: ties everywhere) with random labels."""
    g = torch.Generator().manual_seed(seed)
    return torch.eye(4)[torch.randint(0, 4, (n,), generator=g)], torch.randint(0, 3, (n,), generator=g)


@pytest.mark.parametrize("case", ["integer", "integer_gallery", "clustered"])
def test_precision_and_map_at_k_equal_a_loop_over_the_rankings(case):
    ks = (1, 3, 5, 40)
    if case == "clustered":
        z, y = _clustered_case()
    else:
        z, y = _integer_case()
    if case == "integer_gallery":
        gal, gy = _integer_case(seed=9, n=25)
        gy[gy == 2] = 3  # class 2 has no gallery item: its queries are left out
        out = retrieval_metrics(z, y, gallery=gal, gallery_labels=gy, precision_ks=ks, map_ks=ks, nmi=False)
        sims = torch.nn.functional.normalize(z.double(), dim=1) @ torch.nn.functional.normalize(gal.double(), dim=1).T
        rankings = sims.argsort(dim=1, descending=True, stable=True).tolist()  # ties: lower index first
        expect = _oml_by_hand(rankings, y.tolist(), gy.tolist(), ks)
    else:
        out = retrieval_metrics(z, y, precision_ks=ks, map_ks=ks, nmi=False, chunk_size=7)
        labels = y.tolist()
        expect = _oml_by_hand(_bruteforce_knn(z, len(z) - 1).tolist(), labels, labels, ks)
    for key, value in expect.items():
        assert out[key] == pytest.approx(value, rel=1e-12, abs=1e-15), key


def test_map_at_k_over_the_whole_ranking_is_pmls_mean_average_precision():
    """PML's mean_average_precision divides by R, OML's map@k by the relevant items among the first k:
    the same number when k reaches the end of the ranking (k = N - 1). precision@1 is PML's precision_at_1."""
    require("pytorch_metric_learning", DEV_EXTRA)
    from pytorch_metric_learning.distances import CosineSimilarity
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
    from pytorch_metric_learning.utils.inference import CustomKNN

    for z, y in (_random_case(), _clustered_case()):
        n = len(y)
        calc = AccuracyCalculator(include=("precision_at_1", "mean_average_precision"), k=n - 1,
                                  knn_func=CustomKNN(CosineSimilarity()))
        ref = calc.get_accuracy(z, y, None, None, ref_includes_query=False)
        out = retrieval_metrics(z, y, precision_ks=(1,), map_ks=(n - 1,), nmi=False)
        assert out[f"map@{n - 1}"] == pytest.approx(ref["mean_average_precision"], abs=1e-6)
        assert out["precision@1"] == pytest.approx(ref["precision_at_1"], abs=1e-6)


def test_precision_and_map_at_k_are_opt_in_and_leave_the_default_keys_alone():
    z, y = _clustered_case()
    default = retrieval_metrics(z, y, nmi=False)
    assert tuple(default) == RETRIEVAL_KEYS  # the results schema: unchanged unless asked
    out = retrieval_metrics(z, y, precision_ks=(1, 5), map_ks=(10,), nmi=False)
    assert tuple(out) == retrieval_keys(precision_ks=(1, 5), map_ks=(10,))
    assert tuple(out) == (*RETRIEVAL_KEYS[:4], "precision@1", "precision@5", "map@10", *RETRIEVAL_KEYS[4:])
    assert {k: out[k] for k in default} == default
    light = retrieval_metrics(z, y, precision_ks=(1, 5), map_ks=(10,), nmi=False, map_at_r=False)
    assert {k: light[k] for k in ("precision@1", "precision@5", "map@10")} == \
        {k: out[k] for k in ("precision@1", "precision@5", "map@10")}
    lone = retrieval_metrics(z[:3], torch.tensor([0, 1, 2]), precision_ks=(1,), map_ks=(2,), nmi=False)
    assert math.isnan(lone["precision@1"]) and math.isnan(lone["map@2"])
    for bad in ((0,), (1.5,), (True,)):
        with pytest.raises(ValueError, match=r"^precision_ks must be positive integers"):
            retrieval_metrics(z, y, precision_ks=bad, nmi=False)
        with pytest.raises(ValueError, match=r"^map_ks must be positive integers"):
            retrieval_metrics(z, y, map_ks=bad, nmi=False)


# --------------------------------------------------------------------------------------------------
# distance="squared_l2": raw embeddings ranked by ascending squared Euclidean distance
# --------------------------------------------------------------------------------------------------


def _untied_integer_points(seed, n, dim=3):
    """Small-integer points whose squared distances from each query to the others are all different:
    every product and sum is exact in float32, so the ranking cannot depend on rounding."""
    g = torch.Generator().manual_seed(seed)
    while True:
        z = torch.randint(-40, 41, (n, dim), generator=g)  # squared norms <= 4800: exact in float32
        rows = z.tolist()
        d = [[sum((a - b) ** 2 for a, b in zip(p, q, strict=True)) for q in rows] for p in rows]
        if all(len(set(r[:i] + r[i + 1:])) == n - 1 for i, r in enumerate(d)):
            return z.float(), d


def _l2_rankings(d, exclude_self):
    """Each row's other columns by ascending squared distance (ties cannot occur: see above)."""
    return [sorted((j for j in range(len(row)) if not (exclude_self and j == i)), key=lambda j: row[j])
            for i, row in enumerate(d)]


def test_squared_l2_knn_equals_a_bruteforce_loop_on_exact_integers():
    z, d = _untied_integer_points(12, 14)
    ranking = _l2_rankings(d, exclude_self=True)
    sims, idx = exact_knn(z, 13, distance="squared_l2", chunk_size=5)
    assert idx.tolist() == ranking
    assert sims.tolist() == [[-d[i][j] for j in row] for i, row in enumerate(ranking)]  # similarity = -distance
    assert not torch.equal(idx, exact_knn(z, 13)[1])  # the raw points rank otherwise than their directions
    # a separate gallery: every gallery point is a candidate
    q, g = z[:5], z[5:]
    sims, idx = exact_knn(q, 9, gallery=g, distance="squared_l2")
    assert idx.tolist() == [sorted(range(9), key=lambda j: d[i][5 + j]) for i in range(5)]


def test_squared_l2_metrics_equal_the_definitions_on_the_l2_ranking():
    z, d = _untied_integer_points(13, 16)
    g = torch.Generator().manual_seed(14)
    y = torch.randint(0, 3, (16,), generator=g)
    labels = y.tolist()
    ranking = _l2_rankings(d, exclude_self=True)
    out = retrieval_metrics(z, y, ks=(1, 2, 4), precision_ks=(3,), map_ks=(3,), nmi=False, distance="squared_l2")
    expect = _oml_by_hand(ranking, labels, labels, (3,))
    queries = [i for i in range(16) if labels.count(labels[i]) > 1]
    for k in (1, 2, 4):
        expect[f"recall@{k}"] = sum(any(labels[j] == labels[i] for j in ranking[i][:k]) for i in queries) / len(queries)
    ap = 0.0
    for i in queries:
        r = labels.count(labels[i]) - 1
        same = [labels[j] == labels[i] for j in ranking[i]]
        ap += sum(sum(same[: j + 1]) / (j + 1) for j in range(r) if same[j]) / r
    expect["map@r"] = ap / len(queries)
    for key, value in expect.items():
        assert out[key] == pytest.approx(value, rel=1e-12), key


def test_squared_l2_with_the_faiss_backend_gives_the_same_neighbours():
    require("faiss", f"faiss-cpu is in the dev extra: {DEV_EXTRA}")
    z, _ = _untied_integer_points(15, 20)
    a, b = exact_knn(z, 6, distance="squared_l2"), exact_knn(z, 6, distance="squared_l2", backend="faiss")
    assert torch.equal(a[1], b[1]) and torch.equal(a[0], b[0])
    a = exact_knn(z[:7], 6, gallery=z[7:], distance="squared_l2")
    b = exact_knn(z[:7], 6, gallery=z[7:], distance="squared_l2", backend="faiss")
    assert torch.equal(a[1], b[1])


def test_an_unknown_distance_names_the_choices():
    z, y = _integer_case()
    message = "^" + re.escape("unknown distance 'euclidean'; use 'cosine' or 'squared_l2'") + "$"
    with pytest.raises(ValueError, match=message):
        exact_knn(z, 2, distance="euclidean")
    with pytest.raises(ValueError, match=message):
        retrieval_metrics(z, y, distance="euclidean")


# --------------------------------------------------------------------------------------------------
# per-query ranked results: what to look at when a query fails
# --------------------------------------------------------------------------------------------------


def test_ranked_neighbours_of_the_tie_case_by_hand():
    z = torch.tensor([[1.0, 0], [1, 0], [1, 0], [0, 1], [0, 1], [0, 1]])
    y = torch.tensor([0, 1, 0, 1, 0, 1])
    r = ranked_neighbours(z, y, 3)
    assert r.indices.tolist() == [[1, 2, 3], [0, 2, 3], [0, 1, 3], [4, 5, 0], [3, 5, 0], [3, 4, 0]]
    assert r.similarities.tolist() == [[1.0, 1.0, 0.0]] * 6
    t, f = True, False
    assert r.relevant.tolist() == [[f, t, f], [f, f, t], [t, f, f], [f, t, f], [f, f, t], [t, f, f]]
    assert r.n_relevant.tolist() == [2] * 6
    failures = (~r.relevant[:, 0]).nonzero().squeeze(1)  # queries whose first neighbour is wrong
    assert failures.tolist() == [0, 1, 3, 4]


@pytest.mark.parametrize("distance", ["cosine", "squared_l2"])
def test_ranked_neighbours_agree_with_exact_knn_and_the_metrics(distance):
    z, y = _clustered_case()
    names = [f"class {int(c)}" for c in y]
    q, qy, gal, gy = z[:60], names[:60], z[60:], names[60:]
    r = ranked_neighbours(q, qy, 10, gallery=gal, gallery_labels=gy, distance=distance, chunk_size=7)
    sims, idx = exact_knn(q, 10, gallery=gal, distance=distance)
    # chunks of 7 queries are other matmul shapes than the whole: the BLAS may sum in another order
    assert torch.equal(r.indices, idx)
    torch.testing.assert_close(r.similarities, sims, rtol=1e-5, atol=1e-5)
    expect = [[gy[j] == qy[i] for j in row] for i, row in enumerate(idx.tolist())]
    assert r.relevant.tolist() == expect
    assert r.n_relevant.tolist() == [gy.count(label) for label in qy]
    out = retrieval_metrics(q, qy, gallery=gal, gallery_labels=gy, ks=(1, 10), precision_ks=(10,), nmi=False,
                            distance=distance)
    valid = r.n_relevant > 0
    assert out["recall@1"] == pytest.approx(float(r.relevant[valid, 0].double().mean()), abs=1e-12)
    assert out["recall@10"] == pytest.approx(float(r.relevant[valid].any(dim=1).double().mean()), abs=1e-12)
    precision = r.relevant[valid].sum(dim=1).double() / r.n_relevant[valid].clamp(max=10).double()
    assert out["precision@10"] == pytest.approx(float(precision.double().mean()), abs=1e-12)
    loo = ranked_neighbours(z, y, 4)  # leave-one-out: R excludes the query itself
    assert torch.equal(loo.indices, exact_knn(z, 4)[1])
    assert loo.n_relevant.tolist() == [int((y == c).sum()) - 1 for c in y]


def test_ranked_neighbours_bad_input():
    z, y = _integer_case()
    with pytest.raises(ValueError, match=r"^k must be in \[1, 29\], got 30$"):
        ranked_neighbours(z, y, 30)
    with pytest.raises(ValueError, match="unknown distance 'l1'"):
        ranked_neighbours(z, y, 3, distance="l1")
    with pytest.raises(ValueError, match="z has 30 rows but y has 29 labels"):
        ranked_neighbours(z, y[:29], 3)
