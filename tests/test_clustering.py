"""vgcore.metrics.clustering: the torch k-means and NMI behind retrieval's ``nmi``, against scikit-learn."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.cluster import KMeans
from sklearn.metrics import normalized_mutual_info_score

from vgcore.metrics import retrieval_metrics
from vgcore.metrics.clustering import _kmeans_pp, kmeans, nmi


def blobs(n_per: int, k: int, dim: int, spread: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """k Gaussian blobs around random unit directions, L2-normalised, labels in a shuffled order."""
    g = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(k, dim, generator=g), dim=1)
    y = torch.arange(k).repeat_interleave(n_per)
    y = y[torch.randperm(len(y), generator=g)]
    z = F.normalize(centres[y] + spread / math.sqrt(dim) * torch.randn(len(y), dim, generator=g), dim=1)
    return z, y


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """True when a and b group the points identically (cluster ids may differ)."""
    pairs = set(zip(a.tolist(), b.tolist(), strict=True))
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


@pytest.mark.parametrize(("k", "dim", "seed"), [(3, 2, 0), (10, 16, 1), (25, 64, 2)])
def test_kmeans_finds_the_same_partition_as_sklearn_on_separated_clusters(k, dim, seed):
    z, y = blobs(40, k, dim, spread=0.05, seed=seed)
    ours = kmeans(z, k, seed=seed)
    ref = KMeans(n_clusters=k, n_init=1, random_state=seed).fit(z.double().numpy())
    assert same_partition(ours.labels.numpy(), ref.labels_)
    assert same_partition(ours.labels.numpy(), y.numpy())  # and it is the true one
    assert ours.inertia == pytest.approx(ref.inertia_, rel=1e-4)
    # the centres are the cluster means
    for c in range(k):
        np.testing.assert_allclose(ours.centers[c].numpy(), z[ours.labels == c].mean(0).numpy(), atol=1e-6)


def test_kmeans_is_seeded_and_converges_to_a_lloyd_fixed_point():
    z, _ = blobs(50, 8, 32, spread=1.5, seed=3)  # overlapping: the start matters
    a, b = kmeans(z, 8, seed=7), kmeans(z, 8, seed=7)
    assert torch.equal(a.labels, b.labels) and a.inertia == b.inertia
    assert a.n_iter < 300
    # fixed point: every point is assigned to its nearest centre
    d = torch.cdist(z, a.centers)
    assert torch.equal(d.argmin(1), a.labels)
    results = {tuple(kmeans(z, 8, seed=s).labels.tolist()) for s in range(6)}
    assert len(results) > 1, "different seeds should reach different starts on overlapping clusters"


def test_kmeans_quality_is_that_of_sklearns_single_start():
    """Overlapping clusters: over several seeds our mean inertia is within 2% of scikit-learn's."""
    z, _ = blobs(60, 12, 32, spread=1.2, seed=5)
    ours = np.mean([kmeans(z, 12, seed=s).inertia for s in range(5)])
    ref = np.mean([KMeans(12, n_init=1, random_state=s).fit(z.double().numpy()).inertia_ for s in range(5)])
    assert ours <= 1.02 * ref


def test_kmeans_handles_duplicates_and_k_equal_n():
    z = torch.tensor([[1.0, 0.0]] * 5 + [[0.0, 1.0]] * 5)
    out = kmeans(z, 2, seed=0)
    assert same_partition(out.labels.numpy(), np.array([0] * 5 + [1] * 5))
    three = kmeans(z, 3, seed=0)  # more clusters than distinct points: every point still assigned
    assert three.labels.shape == (10,) and three.inertia == pytest.approx(0.0, abs=1e-9)
    assert kmeans(z[:4], 4, seed=0).labels.shape == (4,)


def greedy_kmeans_pp(x: np.ndarray, k: int, generator: torch.Generator) -> list[int]:
    """Greedy k-means++ (Arthur & Vassilvitskii; scikit-learn's init), written out: a uniform first
    centre, then per step 2 + floor(ln k) candidates drawn with probability proportional to the squared
    distance to the nearest chosen centre, keeping the one that lowers the potential most (the first on
    a tie). Returns the chosen rows; the draws come from `generator` in the same order as the code's."""
    trials = 2 + math.floor(math.log(k))
    chosen = [int(torch.randint(len(x), (1,), generator=generator)[0])]
    closest = ((x - x[chosen[0]]) ** 2).sum(1)
    for _ in range(1, k):
        weights = torch.from_numpy(closest.astype(np.float64))
        cands = torch.multinomial(weights, trials, replacement=True, generator=generator).tolist()
        potentials = [np.minimum(closest, ((x - x[c]) ** 2).sum(1)) for c in cands]
        best = min(range(trials), key=lambda t: potentials[t].sum())
        chosen.append(cands[best])
        closest = potentials[best]
    return chosen


@pytest.mark.parametrize(("k", "seed"), [(2, 0), (3, 1), (8, 2), (20, 3)])
def test_kmeans_pp_start_is_greedy_with_2_plus_ln_k_candidates(k, seed):
    """The start against the written-out greedy seeding with the same random draws. Integer coordinates
    make every squared distance and potential exact in float64 (whatever the summation order), so the
    sampling weights are the same bits on both sides."""
    x = np.random.default_rng(seed).integers(-20, 21, size=(60, 3))
    want = greedy_kmeans_pp(x, k, torch.Generator().manual_seed(seed))
    xt = torch.from_numpy(x).to(torch.float64)
    got = _kmeans_pp(xt, (xt * xt).sum(1), k, torch.Generator().manual_seed(seed))
    assert torch.equal(got, xt[want])


@pytest.mark.parametrize("seed", range(4))
def test_nmi_equals_sklearn(seed):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 1 + seed * 3, size=200)
    b = np.where(rng.random(200) < 0.5, a, rng.integers(0, 7, size=200))
    assert nmi(torch.from_numpy(a), torch.from_numpy(b)) == pytest.approx(normalized_mutual_info_score(a, b), abs=1e-12)


def test_nmi_edge_cases_match_sklearn():
    one = np.zeros(10, dtype=np.int64)
    two = np.arange(10) % 2
    for a, b in ((one, one), (one, two), (two, one), (two, two), (two, 1 - two)):
        assert nmi(torch.from_numpy(a), torch.from_numpy(b)) == pytest.approx(normalized_mutual_info_score(a, b))


def test_retrieval_nmi_is_sklearns_definition_on_separated_clusters():
    z, y = blobs(30, 6, 16, spread=0.1, seed=4)
    ours = retrieval_metrics(z, y)["nmi"]
    clusters = KMeans(n_clusters=6, n_init=1, random_state=0).fit_predict(F.normalize(z, dim=1).double().numpy())
    assert ours == pytest.approx(normalized_mutual_info_score(y.numpy(), clusters), abs=1e-9) == pytest.approx(1.0)


def test_retrieval_nmi_is_as_good_as_sklearns_on_overlapping_clusters():
    """Where k-means has several local optima the two single starts differ run by run (different
    random draws); over seeds they reach the same NMI on average."""
    z, y = blobs(100, 10, 32, spread=1.5, seed=0)
    ours = np.mean([retrieval_metrics(z, y, map_at_r=False, seed=s)["nmi"] for s in range(10)])
    ref = np.mean([normalized_mutual_info_score(
        y.numpy(), KMeans(n_clusters=10, n_init=1, random_state=s).fit_predict(z.double().numpy()))
        for s in range(10)])
    assert ours == pytest.approx(ref, abs=0.03)


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="k must be between 1 and the number of rows"):
        kmeans(torch.randn(5, 2), 6)
    with pytest.raises(ValueError, match="2-D floating-point"):
        kmeans(torch.arange(6).view(3, 2), 2)
    with pytest.raises(ValueError, match="NaN"):
        kmeans(torch.tensor([[0.0, float("nan")], [1.0, 1.0]]), 1)
    with pytest.raises(ValueError, match="1-D tensors of one length"):
        nmi(torch.zeros(3, dtype=torch.long), torch.zeros(4, dtype=torch.long))
