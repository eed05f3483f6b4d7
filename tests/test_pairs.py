"""Pair similarities and per-class Recall@k against hand-enumerated loops on tiny exact cases."""

import itertools

import numpy as np
import pytest

from vgcore.metrics import pair_similarities, per_class_recall
from vgcore.metrics.pairs import row_sample

# unit axis vectors and their negatives: every cosine is exactly 1, 0 or -1 (no rounding to depend on)
AXES = np.array([[1, 0, 0], [0, 1, 0], [-1, 0, 0], [0, 0, 2], [0, -3, 0], [5, 0, 0]], dtype=np.float32)


def test_pair_similarities_are_the_cosines_of_every_pair_split_by_label():
    y = np.array([0, 0, 1, 1, 0, 1])
    pos, neg = pair_similarities(AXES, y, max_rows=None)
    want_pos, want_neg = [], []
    for i, j in itertools.combinations(range(len(y)), 2):
        a, b = AXES[i], AXES[j]
        cos = float(a @ b) / float(np.sqrt(a @ a) * np.sqrt(b @ b))
        (want_pos if y[i] == y[j] else want_neg).append(cos)
    assert pos.tolist() == want_pos  # exact: every cosine is 1, 0 or -1
    assert neg.tolist() == want_neg
    assert len(pos) + len(neg) == 15


def test_pair_similarities_take_class_names_and_keep_the_sampled_rows_only():
    y = np.array(["a", "a", "b", "b", "a", "b"])
    pos, neg = pair_similarities(AXES, y, max_rows=4, seed=3)
    rows = row_sample(6, 4, seed=3)
    kept = y[rows]
    n_pos = sum(kept[i] == kept[j] for i, j in itertools.combinations(range(4), 2))
    assert (len(pos), len(neg)) == (n_pos, 6 - n_pos)


def test_row_sample_is_fixed_by_its_seed_sorted_and_distinct():
    a, b = row_sample(1000, 50, seed=0), row_sample(1000, 50, seed=0)
    assert np.array_equal(a, b) and len(set(a.tolist())) == 50 and np.all(np.diff(a) > 0)
    assert not np.array_equal(a, row_sample(1000, 50, seed=1))
    assert np.array_equal(row_sample(7, None), np.arange(7)) and np.array_equal(row_sample(7, 9), np.arange(7))
    with pytest.raises(ValueError, match="at least 2"):
        row_sample(10, 1)


def test_per_class_recall_matches_a_hand_loop_over_the_nearest_neighbour():
    # points on a line at distinct integer positions: nearest neighbours are unambiguous
    x = np.array([0, 1, 3, 10, 11, 30, 31, 50, 52, 90], dtype=np.float64)
    y = np.array([0, 0, 1, 1, 1, 2, 0, 2, 2, 3])
    z = np.stack([np.cos(x / 100), np.sin(x / 100)], axis=1)  # on the unit circle: cosine order = distance order
    got = per_class_recall(z, y, k=1)
    want: dict[int, list[bool]] = {}
    for i in range(len(x)):
        if (y == y[i]).sum() < 2:
            continue  # a class without a partner has no query to count
        d = np.abs(x - x[i]).astype(float)
        d[i] = np.inf
        want.setdefault(int(y[i]), []).append(bool(y[np.argmin(d)] == y[i]))
    assert got == {c: float(np.mean(v)) for c, v in sorted(want.items())}
    assert 3 not in got  # a singleton class is left out
    assert got[0] == pytest.approx(2 / 3)  # 0 and 1 find each other; 31 finds 30 (class 2)
