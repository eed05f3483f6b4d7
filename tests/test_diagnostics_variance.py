"""VARIANCE measures: closed forms, hand-computed layouts, brute-force references, bad input."""

import math
import re

import pytest
import torch

from vgcore.metrics import (
    GREEDINESS_KEYS,
    LABELS,
    RETRIEVAL_KEYS,
    VARIANCE_KEYS,
    check_embeddings,
    label,
    spectral_decay_from_singular_values,
    variance,
)


def _line(points_by_class):
    """1-D points (as [N, 2] with a zero second coordinate) and labels from {label: [x, ...]}."""
    xs, ys = [], []
    for cls, pts in points_by_class.items():
        xs += pts
        ys += [cls] * len(pts)
    z = torch.tensor([[x, 0.0] for x in xs], dtype=torch.float64)
    return z, torch.tensor(ys)


def test_keys_and_types():
    torch.manual_seed(0)
    out = variance(torch.randn(50, 4), torch.arange(50) % 5)
    assert tuple(out) == VARIANCE_KEYS
    assert all(isinstance(v, float) for v in out.values())


def test_every_metric_key_has_its_label_and_a_mean_shares_it():
    keys = [*VARIANCE_KEYS, *GREEDINESS_KEYS, *RETRIEVAL_KEYS, "loss_convergence_epoch", "train_loss"]
    for key in keys:
        assert label(key) == LABELS[key] and label(key) != key
        assert label(f"{key}_mean") == LABELS[key]  # a per-run mean, as in the summary table
    assert label("no_such_key") == "no_such_key"  # no label: the key itself
    assert label("no_such_key_mean") == "no_such_key_mean"
    assert label("_mean") == "_mean"


def test_gaussian_closed_form():
    # C classes at known means, isotropic sigma in D dims
    g = torch.Generator().manual_seed(1)
    c, d, n, sigma = 5, 16, 2000, 0.3
    means = torch.randn(c, d, generator=g, dtype=torch.float64) * 2.0
    y = torch.arange(c).repeat_interleave(n)
    z = means[y] + sigma * torch.randn(c * n, d, generator=g, dtype=torch.float64)
    out = variance(z.float(), y)
    # E[intra_var] = D sigma^2 (n - 1) / n; sampling sd ~ 0.4 % here
    assert out["intra_var"] == pytest.approx(d * sigma**2 * (n - 1) / n, rel=0.03)
    iu = torch.triu_indices(c, c, 1)
    true_sq = (means[iu[0]] - means[iu[1]]).pow(2).sum(1)
    # centroid noise adds 2 D sigma^2 / n in expectation
    assert out["inter_var"] == pytest.approx(float(true_sq.mean()) + 2 * d * sigma**2 / n, rel=0.01)
    assert out["centroid_dist_mean"] == pytest.approx(float(true_sq.sqrt().mean()), rel=0.01)
    assert out["centroid_dist_min"] == pytest.approx(float(true_sq.sqrt().min()), rel=0.02)
    assert out["n_singleton_classes"] == 0.0


def test_regular_simplex_has_zero_cv():
    # centroids at the standard basis vectors (a regular simplex), samples symmetric around them
    c = 6
    eye = torch.eye(c, dtype=torch.float64)
    offs = torch.zeros(c, dtype=torch.float64)
    offs[0] = 0.05
    z = torch.cat([eye + offs, eye - offs])
    y = torch.cat([torch.arange(c), torch.arange(c)])
    out = variance(z, y)
    assert out["centroid_dist_cv"] == pytest.approx(0.0, abs=1e-12)
    assert out["centroid_dist_std"] == pytest.approx(0.0, abs=1e-12)
    assert out["centroid_dist_mean"] == pytest.approx(math.sqrt(2.0), abs=1e-12)
    assert out["centroid_dist_min"] == pytest.approx(math.sqrt(2.0), abs=1e-12)
    assert out["inter_var"] == pytest.approx(2.0, abs=1e-12)
    assert out["intra_var"] == pytest.approx(0.05**2, abs=1e-12)


def test_uneven_layout_by_hand():
    # centroids at 0, 1 and 3 on a line; each class has points at centroid +- 0.1
    z, y = _line({0: [-0.1, 0.1], 1: [0.9, 1.1], 2: [2.9, 3.1]})
    out = variance(z, y)
    # centroid distances 1, 3, 2: mean 2, population std sqrt(2/3)
    assert out["centroid_dist_mean"] == pytest.approx(2.0, abs=1e-12)
    assert out["centroid_dist_std"] == pytest.approx(math.sqrt(2 / 3), abs=1e-12)
    assert out["centroid_dist_cv"] == pytest.approx(math.sqrt(2 / 3) / 2, abs=1e-12)
    assert out["centroid_dist_min"] == pytest.approx(1.0, abs=1e-12)
    assert out["centroid_dist_max"] == pytest.approx(3.0, abs=1e-12)
    assert out["inter_var"] == pytest.approx((1 + 9 + 4) / 3, abs=1e-12)
    assert out["intra_var"] == pytest.approx(0.01, abs=1e-12)
    # margins (nearest other centroid minus own, 0.1 each): 1.0, 0.8 | 0.8, 1.0 | 1.8, 2.0
    assert out["margin_mean"] == pytest.approx(7.4 / 6, abs=1e-12)
    assert out["margin_neg_share"] == 0.0


def test_negative_margin_by_hand():
    # class 0 at 0, 0.1, 2.0 (centroid 0.7); class 1 at 1.0, 1.2 (centroid 1.1)
    z, y = _line({0: [0.0, 0.1, 2.0], 1: [1.0, 1.2]})
    out = variance(z, y)
    margins = [
        1.1 - 0.7,  # x=0.0: other 1.1, own 0.7
        1.0 - 0.6,  # x=0.1
        0.9 - 1.3,  # x=2.0: closer to class 1's centroid
        0.3 - 0.1,  # x=1.0: other 0.7, own 0.1
        0.5 - 0.1,  # x=1.2
    ]
    assert out["margin_mean"] == pytest.approx(sum(margins) / 5, abs=1e-12)
    assert out["margin_neg_share"] == pytest.approx(1 / 5, abs=1e-12)
    intra0 = (0.7**2 + 0.6**2 + 1.3**2) / 3
    intra1 = (0.1**2 + 0.1**2) / 2
    assert out["intra_var"] == pytest.approx((intra0 + intra1) / 2, abs=1e-12)


def test_a_zero_margin_is_not_a_negative_one():
    # class 0 at -1, 1 (centroid 0); class 1 at 1.5, 2.5 (centroid 2): x = 1 lies exactly halfway
    z, y = _line({0: [-1.0, 1.0], 1: [1.5, 2.5]})
    out = variance(z, y)
    # margins: x=-1: 3 - 1, x=1: 1 - 1 (a tie, not closer to the other centroid), x=1.5: 1.5 - 0.5,
    # x=2.5: 2.5 - 0.5
    assert out["margin_mean"] == pytest.approx((2 + 0 + 1 + 2) / 4, abs=1e-12)
    assert out["margin_neg_share"] == 0.0
    # moved past halfway, it counts: x = 1.25 is 0.75 from class 1's centroid, 1.125 from its own
    z, y = _line({0: [-1.0, 1.25], 1: [1.5, 2.5]})
    assert variance(z, y)["margin_neg_share"] == 0.25


def test_singleton_class_is_left_out_of_spread_but_kept_as_centroid():
    z, y = _line({0: [-0.1, 0.1], 1: [0.9, 1.1]})
    base = variance(z, y)
    z2 = torch.cat([z, torch.tensor([[5.0, 0.0]], dtype=torch.float64)])
    y2 = torch.cat([y, torch.tensor([7])])
    out = variance(z2, y2)
    assert out["n_singleton_classes"] == 1.0
    assert out["n_classes"] == 3.0
    assert out["intra_var"] == pytest.approx(base["intra_var"], abs=1e-12)
    assert out["margin_mean"] == pytest.approx(base["margin_mean"], abs=1e-12)
    assert out["inter_var"] == pytest.approx((1 + 25 + 16) / 3, abs=1e-12)


def _roth_density_bruteforce(z, y):
    zn = torch.nn.functional.normalize(z.double(), dim=1)
    intra = []
    mus = []
    for c in torch.unique(y):
        zc = zn[y == c]
        mus.append(z.double()[y == c].mean(0))
        n = len(zc)
        if n < 2:
            continue
        cos_d = 1 - zc @ zc.T
        intra.append(float((cos_d.sum() - cos_d.diagonal().sum()) / (n * (n - 1))))
    mu = torch.nn.functional.normalize(torch.stack(mus), dim=1)
    cd = 1 - mu @ mu.T
    k = len(mu)
    inter = float((cd.sum() - cd.diagonal().sum()) / (k * (k - 1)))
    return sum(intra) / len(intra) / inter


def test_density_matches_bruteforce_pairwise_definition():
    torch.manual_seed(3)
    y = torch.randint(0, 7, (120,))
    z = torch.randn(7, 8)[y] + 0.7 * torch.randn(120, 8)
    y[0] = 50  # one singleton class
    out = variance(z, y)
    assert out["density"] == pytest.approx(_roth_density_bruteforce(z, y), rel=1e-9)


def _spectral_reference(z, skip=0):
    s = torch.linalg.svdvals(z.double())[skip:]
    p = s / s.sum()
    u = torch.full_like(p, 1.0 / len(p))
    return float((u * (u / p).log()).sum())


@pytest.mark.parametrize("shape", [(200, 16), (10, 32)])
def test_spectral_decay_matches_svd_reference(shape):
    torch.manual_seed(4)
    z = torch.randn(*shape) @ torch.diag(torch.linspace(0.2, 3.0, shape[1]))
    y = torch.arange(shape[0]) % 3
    assert variance(z, y)["spectral_decay"] == pytest.approx(_spectral_reference(z), rel=1e-7)
    assert variance(z, y, spectral_skip=1)["spectral_decay"] == pytest.approx(
        _spectral_reference(z, 1), rel=1e-7
    )


def test_spectral_decay_flat_spectrum_is_zero_and_rank_deficit_is_finite():
    z = torch.eye(8, dtype=torch.float64) * 3.0
    y = torch.arange(8) % 2
    assert variance(z, y)["spectral_decay"] == pytest.approx(0.0, abs=1e-12)
    s = torch.tensor([2.0, 1.0, 0.0])
    assert math.isfinite(float(spectral_decay_from_singular_values(s)))


def test_rank_deficient_embeddings_have_no_spectral_decay_and_report_their_rank():
    """A rank floor is an artefact of the setup (fewer input than output dimensions), not a result."""
    torch.manual_seed(7)
    z = torch.nn.functional.normalize(torch.randn(100, 6, dtype=torch.float64) @ torch.randn(6, 16, dtype=torch.float64))
    y = torch.arange(100) % 4
    out = variance(z, y)
    assert out["embedding_rank"] == 6.0
    assert math.isnan(out["spectral_decay"])
    full = variance(torch.randn(100, 16, dtype=torch.float64), y)
    assert full["embedding_rank"] == 16.0 and math.isfinite(full["spectral_decay"])
    # spectral_skip drops the leading values only: a zero in the tail is still rank deficiency
    assert math.isnan(variance(z, y, spectral_skip=2)["spectral_decay"])


def test_scale_free_metrics_on_a_hand_layout():
    """Two classes on a line, centroids at -2 and +2, each point 1 away from its centroid."""
    z, y = _line({0: [-3.0, -1.0], 1: [1.0, 3.0]})
    out = variance(z, y)
    # margins: the inner points have 3 - 1 = 2, the outer points 5 - 1 = 4; radius 1
    assert out["margin_mean"] == pytest.approx(3.0)
    assert out["margin_rel_mean"] == pytest.approx(3.0)
    assert out["centroid_norm_mean"] == pytest.approx(2.0)
    assert out["dir_centroid_dist_mean"] == pytest.approx(2.0)  # opposite unit directions
    assert out["dir_centroid_dist_cv"] == pytest.approx(0.0)
    # spread each class twice as wide around the same centroids: the raw margin shrinks by the
    # spread, the relative one by the ratio to the radius; the directions do not move
    z2, y2 = _line({0: [-4.0, 0.0], 1: [0.0, 4.0]})
    wide = variance(z2, y2)
    assert wide["margin_mean"] == pytest.approx(2.0) and wide["margin_rel_mean"] == pytest.approx(1.0)
    assert wide["dir_centroid_dist_mean"] == pytest.approx(out["dir_centroid_dist_mean"])


def test_relative_margin_divides_by_the_rms_radius_per_sample():
    """Points at different distances from their centroid: the RMS radius differs from the mean
    distance, and the mean of the per-sample ratios from the ratio of the means."""
    # class 0 at -2, 0.5, 1.5 (centroid 0, distances 2, 0.5, 1.5); class 1 at 9, 11 (centroid 10)
    z, y = _line({0: [-2.0, 0.5, 1.5], 1: [9.0, 11.0]})
    out = variance(z, y)
    r0 = math.sqrt((4.0 + 0.25 + 2.25) / 3)  # RMS radius; the mean distance would be 4/3
    r1 = 1.0
    # margins: x=-2: 12 - 2, x=0.5: 9.5 - 0.5, x=1.5: 8.5 - 1.5 | x=9: 9 - 1, x=11: 11 - 1
    expect = (10 / r0 + 9 / r0 + 7 / r0 + 8 / r1 + 10 / r1) / 5
    assert out["margin_mean"] == pytest.approx((10 + 9 + 7 + 8 + 10) / 5, abs=1e-12)
    assert out["margin_rel_mean"] == pytest.approx(expect, abs=1e-12)


def test_direction_only_separation_ignores_centroid_norms():
    """Shrinking every centroid towards the origin (more spread on the sphere) lowers the raw centroid
    distances but not the distances of the centroid directions."""
    torch.manual_seed(8)
    directions = torch.nn.functional.normalize(torch.randn(5, 8, dtype=torch.float64))
    y = torch.arange(5).repeat_interleave(2)
    noise = torch.randn(10, 8, dtype=torch.float64) * 1e-3
    tight = variance(directions[y] + noise, y)
    loose = variance(0.5 * directions[y] + noise, y)
    assert loose["centroid_dist_mean"] == pytest.approx(0.5 * tight["centroid_dist_mean"], rel=1e-2)
    assert loose["dir_centroid_dist_mean"] == pytest.approx(tight["dir_centroid_dist_mean"], rel=1e-2)
    assert loose["centroid_norm_mean"] == pytest.approx(0.5 * tight["centroid_norm_mean"], rel=1e-2)


def test_the_rank_threshold_follows_the_largest_singular_value():
    """One direction 1000 times stronger than the other: the zero threshold is relative to the largest
    eigenvalue, so the weak direction still counts and the six others do not."""
    g = torch.Generator().manual_seed(11)
    basis = torch.linalg.qr(torch.randn(8, 2, generator=g, dtype=torch.float64))[0].T
    z = torch.randn(40, 2, generator=g, dtype=torch.float64) * torch.tensor([1000.0, 1.0], dtype=torch.float64) @ basis
    out = variance(z, torch.arange(40) % 4)
    assert out["embedding_rank"] == 2.0 and math.isnan(out["spectral_decay"])
    top = torch.linalg.svdvals(z)[:2]  # the floored value for direct use, by hand
    p = [float(v) for v in top / top.sum()] + [1e-12] * 6
    expect = sum(math.log((1 / 8) / q) for q in p) / 8
    padded = torch.cat([top, torch.zeros(6, dtype=torch.float64)])
    assert float(spectral_decay_from_singular_values(padded)) == pytest.approx(expect, rel=1e-9)


def test_spectral_decay_from_singular_values_by_hand():
    # s = 2, 1, 1: p = 1/2, 1/4, 1/4 against u = 1/3
    expect = (math.log(2 / 3) + 2 * math.log(4 / 3)) / 3
    for dtype in (torch.float64, torch.float32):  # computed in float64 whatever comes in
        s = torch.tensor([2.0, 1.0, 1.0], dtype=dtype)
        assert float(spectral_decay_from_singular_values(s)) == pytest.approx(expect, rel=1e-14)
    s = torch.tensor([5.0, 2.0, 1.0, 1.0])
    assert float(spectral_decay_from_singular_values(s, skip=1)) == pytest.approx(expect, rel=1e-14)
    assert float(spectral_decay_from_singular_values(torch.tensor([0.5, 0.25]))) > 0  # sum below 1
    assert float(spectral_decay_from_singular_values(torch.tensor([3.0]))) == 0.0  # one value is flat
    with pytest.raises(ValueError, match="^no singular values left after spectral_skip$"):
        spectral_decay_from_singular_values(s, skip=4)
    with pytest.raises(ValueError, match="^all singular values are zero$"):
        spectral_decay_from_singular_values(torch.zeros(3))


def test_scaling_behaviour_input_not_normalised():
    torch.manual_seed(5)
    y = torch.arange(60) % 4
    z = torch.randn(60, 6, dtype=torch.float64)
    a, b = variance(z, y), variance(3.0 * z, y)
    for key in ("intra_var", "inter_var"):
        assert b[key] == pytest.approx(9.0 * a[key], rel=1e-9)
    for key in ("centroid_dist_mean", "centroid_dist_min", "margin_mean", "centroid_norm_mean"):
        assert b[key] == pytest.approx(3.0 * a[key], rel=1e-9)
    for key in ("centroid_dist_cv", "density", "spectral_decay", "margin_neg_share", "margin_rel_mean",
                "dir_centroid_dist_mean", "dir_centroid_dist_cv"):
        assert b[key] == pytest.approx(a[key], rel=1e-9, abs=1e-12)


def test_chunking_does_not_change_results():
    torch.manual_seed(6)
    y = torch.randint(0, 9, (257,))
    z = torch.randn(257, 5)
    a, b = variance(z, y), variance(z, y, chunk_size=10)
    for key in VARIANCE_KEYS:
        assert b[key] == pytest.approx(a[key], rel=1e-10, abs=1e-12)


@pytest.mark.parametrize(
    "z, y, match",
    [
        (torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), "empty"),
        (torch.zeros(5, 0), torch.zeros(5, dtype=torch.long), "empty"),
        (torch.randn(5, 3), torch.zeros(4, dtype=torch.long), "labels"),
        (torch.randn(6, 3), torch.zeros(6, dtype=torch.long), "2 classes"),
        (torch.randn(3, 3), torch.arange(3), "2 or more samples"),
        (torch.tensor([[0.0, float("nan")], [1.0, 1.0]]), torch.tensor([0, 1]), "NaN"),
        (torch.randn(4, 3), torch.tensor([0.0, 1.0, 0.0, 1.0]), "integer"),
        (torch.randn(4), torch.tensor([0, 1, 0, 1]), "2-D"),
    ],
)
def test_bad_input_raises_value_error(z, y, match):
    with pytest.raises(ValueError, match=match):
        variance(z, y)


@pytest.mark.parametrize(
    "z, y, message",
    [
        ([[0.0, 1.0], [1.0, 0.0]], torch.tensor([0, 1]), "z and y must be torch tensors (as_embeddings converts NumPy arrays)"),
        (torch.eye(2), [0, 1], "z and y must be torch tensors (as_embeddings converts NumPy arrays)"),
        (torch.zeros(2, 2, 1), torch.tensor([0, 1]), "z must be 2-D [N, D], got shape (2, 2, 1)"),
        (torch.eye(2), torch.tensor([[0, 1]]), "y must be 1-D [N], got shape (1, 2)"),
        (torch.zeros(2, 0), torch.tensor([0, 1]), "z is empty (shape (2, 0))"),
        (torch.eye(3)[:, :2], torch.tensor([0, 1]), "z has 3 rows but y has 2 labels"),
        (torch.eye(3, 5)[:, :4], torch.tensor([0, 1, 0]), None),  # 3 rows, 4 columns: fine
        (torch.eye(2, dtype=torch.int64), torch.tensor([0, 1]), "z must be a floating-point tensor, got torch.int64"),
        (torch.eye(2), torch.tensor([0.0, 1.0]), "y must hold integer class labels, got torch.float32"),
        (torch.eye(2), torch.tensor([True, False]), "y must hold integer class labels, got torch.bool"),
        (torch.tensor([[0.0, math.inf], [1.0, 0.0]]), torch.tensor([0, 1]), "z contains NaN or infinite values"),
    ],
)
def test_check_embeddings_names_the_problem(z, y, message):
    """The input check shared by variance and retrieval (vgcore.metrics.check_embeddings)."""
    if message is None:
        check_embeddings(z, y)
        return
    with pytest.raises(ValueError, match="^" + re.escape(message) + "$"):
        check_embeddings(z, y)
