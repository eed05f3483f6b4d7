"""vgcore.report.gallery: the queries, the eval rows behind a run's embeddings, and the drawn gallery."""

from __future__ import annotations

import gzip
import hashlib

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from vgcore.data import fashionmnist
from vgcore.metrics.neighbours import ranked_neighbours
from vgcore.report import gallery, plots
from vgcore.train import fixed_subset, fixed_subset_index

from _formats import make_fmnist

LOSSES = ("triplet", "contrastive", "scl")  # drawn in registry order: contrastive, triplet, scl


@pytest.fixture(autouse=True)
def _style():
    plots.use_style()
    yield
    plt.close("all")


def tiles(fig) -> dict[str, plt.Axes]:
    """gid ("query/<row>" or "<loss>/<query row>/<rank>") -> the tile's axes."""
    return {ax.get_gid(): ax for ax in fig.axes if ax.get_gid()}


def frame(ax) -> str:
    """The state of a tile's frame ("query", "wrong", "near"), "right" when it has none."""
    labels = [p.get_label() for p in ax.patches if p.get_label() in gallery.FRAMES]
    assert len(labels) <= 1 and not any(s.get_visible() for s in ax.spines.values())
    return labels[0] if labels else gallery.RIGHT


def clustered(y, spread, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(len(y), 8)) * spread + np.eye(8)[np.asarray(y) % 8]


# --- queries ---------------------------------------------------------------------------------------


def test_random_queries_are_fixed_one_per_class_and_skip_classes_without_a_partner():
    y = np.array([2, 0, 0, 1, 2, 0, 3, 2, 1, 0])  # class 3 has a single row
    q = gallery.gallery_queries(y, seed=0)
    assert np.array_equal(q, gallery.gallery_queries(y, seed=0))
    assert y[q].tolist() == [0, 1, 2]
    two = gallery.gallery_queries(y, per_class=2, seed=0)
    assert y[two].tolist() == [0, 0, 1, 1, 2, 2] and len(set(two.tolist())) == 6
    draws = {tuple(gallery.gallery_queries(y, seed=s)) for s in range(20)}
    assert len(draws) > 1  # the seed draws


def test_disagreement_picks_the_queries_whose_precision_differs_most_across_losses():
    n, k = 6, 4
    agree = np.ones((n, k), bool)
    a, b, c = agree.copy(), agree.copy(), agree.copy()
    b[4] = False  # query 4: 1, 0, 1 -> the largest spread
    c[1, :2] = False  # query 1: 1, 1, 0.5
    c[2, :2] = False  # query 2: the same spread as 1 (tie: the lower row first)
    relevant = {"triplet": a, "scl": torch.as_tensor(b), "contrastive": c}
    assert gallery.disagreement_queries(relevant, n=3).tolist() == [4, 1, 2]
    assert gallery.disagreement_queries(relevant, n=2, exclude=[4]).tolist() == [1, 2]
    assert gallery.disagreement_queries(relevant, n=10).tolist() == [4, 1, 2]  # the agreeing ones left out


# --- the figure ------------------------------------------------------------------------------------


def test_each_neighbour_shows_its_own_image_framed_iff_it_is_of_another_class():
    y = np.repeat(np.arange(4), 6)
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(len(y), 1, 12, 12), dtype=np.uint8)
    ranked = {loss: ranked_neighbours(clustered(y, 0.3 + i), y, 3) for i, loss in enumerate(LOSSES)}
    queries = gallery.gallery_queries(y)
    fig = gallery.retrieval_gallery(queries, ranked, y, images=images, k=3, width="page")
    drawn = tiles(fig)
    assert len(drawn) == len(queries) * (1 + 3 * len(LOSSES))
    wrong = 0
    for q in queries:
        ax = drawn[f"query/{q}"]
        assert np.array_equal(ax.images[0].get_array(), images[q, 0]) and frame(ax) == gallery.QUERY
        for loss in LOSSES:
            for j in range(3):
                item = int(ranked[loss].indices[q, j])
                ax = drawn[f"{loss}/{q}/{j}"]
                assert np.array_equal(ax.images[0].get_array(), images[item, 0])
                assert frame(ax) == (gallery.RIGHT if y[item] == y[q] else gallery.WRONG)
                wrong += y[item] != y[q]
    assert wrong > 0  # the noisiest loss retrieves wrong items: the check above saw both cases
    # blocks in registry order, left to right, each under its name
    lefts = [drawn[f"{loss}/{queries[0]}/0"].get_position().x0 for loss in ("contrastive", "triplet", "scl")]
    assert lefts == sorted(lefts)
    assert {t.get_text() for t in fig.texts} >= {"query", *LOSSES}


def test_images_may_be_a_callable_giving_height_width_channels():
    y = np.repeat(np.arange(3), 3)
    rgb = np.random.default_rng(0).integers(0, 256, size=(len(y), 5, 5, 3), dtype=np.uint8)
    ranked = {"triplet": ranked_neighbours(clustered(y, 0.1), y, 2)}
    fig = gallery.retrieval_gallery([0], ranked, y, images=lambda row: rgb[row], k=2, width="column")
    item = int(ranked["triplet"].indices[0, 1])
    assert np.array_equal(tiles(fig)["triplet/0/1"].images[0].get_array(), rgb[item])


def test_stand_in_tiles_name_class_and_superclass_and_frame_a_near_miss_apart():
    y = np.array([0, 0, 1, 2, 2, 3])
    coarse = np.array([0, 0, 0, 1, 1, 1])
    # query 0's neighbours: 2 (class 1, same superclass), 3 (class 2, other superclass), 1 (right)
    indices = np.array([[2, 3, 1]] * len(y))
    relevant = y[indices] == y[:, None]
    fig = gallery.retrieval_gallery([0], {"scl": (indices, relevant)}, y, coarse=coarse, k=3)
    drawn = tiles(fig)
    assert [t.get_text() for t in drawn["query/0"].texts] == ["0\ns0"]
    assert [drawn[f"scl/0/{j}"].texts[0].get_text() for j in range(3)] == ["1\ns0", "2\ns1", "0\ns0"]
    assert [frame(drawn[f"scl/0/{j}"]) for j in range(3)] == [gallery.NEAR, gallery.WRONG, gallery.RIGHT]
    assert not any(ax.images for ax in drawn.values())
    near, wrong = (next(p for p in drawn[f"scl/0/{j}"].patches if p.get_label() in gallery.FRAMES) for j in (0, 1))
    assert near.get_linestyle() != wrong.get_linestyle() and near.get_edgecolor() != wrong.get_edgecolor()
    legend = " ".join(t.get_text() for t in fig.legends[0].get_texts())
    assert "same superclass" in legend and "wrong superclass" in legend


@pytest.mark.parametrize("width", ["column", "page"])
def test_seven_losses_keep_tiles_recognisable_wrapping_blocks_at_column_width(width):
    y = np.repeat(np.arange(5), 4)
    losses = plots.LOSSES[:7]
    ranked = {loss: ranked_neighbours(clustered(y, 0.5, seed=i), y, 4) for i, loss in enumerate(losses)}
    fig = gallery.retrieval_gallery(gallery.gallery_queries(y), ranked, y, width=width)
    sides = {round(ax.get_position().width * fig.get_figwidth(), 3) for ax in fig.axes}
    assert len(sides) == 1 and min(sides) >= gallery.TILE_MIN
    assert all(0 <= ax.get_position().x0 and ax.get_position().x1 <= 1 for ax in fig.axes)
    lines = sum(t.get_text() == "query" for t in fig.texts)
    assert lines == (1 if width == "page" else 3)
    assert {t.get_text() for t in fig.texts} == {"query", *losses}  # each loss named once
    if width == "page":
        assert 0.2 <= min(sides) <= 0.23
    assert fig.get_figheight() < plots.PAGE_HEIGHT


def test_loss_galleries_ranks_each_loss_and_refuses_runs_of_other_rows():
    y = np.repeat(np.arange(4), 5)
    coarse = y // 2
    runs = {loss: {"embeddings": (clustered(y, 0.4 + i).astype(np.float32), y), "coarse": coarse}
            for i, loss in enumerate(LOSSES)}
    g = gallery.loss_galleries(runs, k=3, n_disagree=3)
    assert list(g.ranked) == ["contrastive", "triplet", "scl"] and g.ranked["scl"].indices.shape == (len(y), 3)
    assert y[g.queries].tolist() == [0, 1, 2, 3] and not set(g.disagreements) & set(g.queries)
    assert np.array_equal(g.y, y) and np.array_equal(g.coarse, coarse)
    runs["scl"] = {"embeddings": (runs["scl"]["embeddings"][0], y[::-1]), "coarse": coarse}
    with pytest.raises(ValueError, match="'scl' embed different rows"):
        gallery.loss_galleries(runs)


# --- the rows behind a run's embeddings -------------------------------------------------------------


def test_fixed_subset_index_is_the_rows_fixed_subset_keeps():
    x, y = torch.arange(50.0).unsqueeze(1), torch.arange(50) % 4
    keep = fixed_subset_index(50, 20)
    assert torch.equal(fixed_subset(x, y, 20)[0][:, 0].long(), keep)
    assert fixed_subset_index(50, None) is None and fixed_subset_index(50, 50) is None


@pytest.fixture
def fmnist_root(tmp_path, monkeypatch):
    """A 30-image FashionMNIST test split in the official IDX files, taken for the official ones."""
    folder = tmp_path / "fashionmnist"
    make_fmnist(folder, n_train=10, n_test=30)
    digests = {}
    for stem in fashionmnist.RAW_MD5:
        digests[stem] = hashlib.md5(gzip.decompress((folder / f"{stem}.gz").read_bytes())).hexdigest()
    monkeypatch.setattr(fashionmnist, "RAW_MD5", digests)
    monkeypatch.setattr(fashionmnist, "SYSTEM_DIRS", (tmp_path / "no-system",))
    return tmp_path


def test_eval_rows_are_the_runs_rows_of_the_split_on_disk(fmnist_root):
    config = {"dataset": "fashionmnist", "eval_split": "test", "eval_size": 12, "dataset_options": {}}
    full = fashionmnist.SPEC.read(fashionmnist.SPEC.locate(fmnist_root, False), "test")
    _, y_run = fixed_subset(full.images, full.labels, 12)
    rows = gallery.eval_rows(config, fmnist_root, labels=y_run.numpy())
    assert len(rows) == 12 and torch.equal(rows.labels, y_run)
    assert torch.equal(rows.images, full.images[fixed_subset_index(30, 12)])
    changed = y_run.numpy().copy()
    changed[5] = (changed[5] + 1) % 10
    with pytest.raises(ValueError, match=r"differ from the run's stored labels in 1 of 12 rows \(first: row 5"):
        gallery.eval_rows(config, fmnist_root, labels=changed)
    with pytest.raises(ValueError, match="12 rows"):
        gallery.eval_rows(dict(config, eval_size=None), fmnist_root, labels=y_run.numpy())


def test_eval_rows_of_a_set_of_vectors_is_none():
    from vgcore.config import RunConfig

    assert gallery.eval_rows(RunConfig(dataset="synthetic")) is None


def test_given_images_are_cut_to_the_rows_a_run_embeds_and_a_wrong_count_is_refused(tmp_path):
    from vgcore.report.gallery import given_images

    pictures = np.arange(30 * 2 * 2, dtype=np.uint8).reshape(30, 2, 2)  # image i holds 4i..4i+3: its row is readable
    np.save(tmp_path / "images.npy", pictures)
    keep = fixed_subset_index(30, 12).numpy()
    got = given_images(tmp_path / "images.npy", 12, 12)
    assert np.array_equal(got, pictures[keep])
    assert np.array_equal(given_images(tmp_path / "images.npy", None, 30), pictures)
    with pytest.raises(ValueError, match="30 images for the 29 test samples"):
        given_images(tmp_path / "images.npy", None, 29)


# --- a profile's galleries (notebook 05) ------------------------------------------------------------


def test_the_gallery_datasets_are_the_first_with_pictures_and_the_first_without():
    from vgcore.report.outputs import picture_datasets

    assert gallery.gallery_datasets(["fashionmnist", "synthetic", "synthetic_super"]) == ("fashionmnist", "synthetic")
    assert gallery.gallery_datasets(["synthetic_super", "cifar10"]) == ("cifar10", "synthetic_super")
    assert gallery.gallery_datasets(["fashionmnist"]) == ("fashionmnist", None)
    assert gallery.gallery_datasets(["synthetic"]) == ("synthetic", "synthetic")  # smoke: only generated sets
    assert picture_datasets(["synthetic", "fashionmnist", "cub200"]) == ["fashionmnist", "cub200"]
    assert picture_datasets(["synthetic", "synthetic_super"]) == ["synthetic"]


def _runs(dataset, y, coarse=None, spreads=(0.4, 1.0, 1.6), eval_size=None):
    config = {"dataset": dataset, "seed": 3, "eval_split": "test", "eval_size": eval_size, "dataset_options": {}}
    return {loss: {"config": config, "embeddings": (clustered(y, s, seed=i).astype(np.float32), y), "coarse": coarse}
            for i, (loss, s) in enumerate(zip(LOSSES, spreads, strict=True))}


def test_a_dataset_gallery_of_a_set_of_vectors_draws_stand_ins_for_the_random_and_the_disputed_queries():
    y = np.repeat(np.arange(12), 4)
    coarse = y // 3
    runs = _runs("synthetic", y, coarse)
    fig = gallery.dataset_gallery(runs, "random")
    queries = sorted(int(gid.split("/")[1]) for gid in tiles(fig) if gid.startswith("query/"))
    assert sorted(np.unique(y[queries]).tolist()) == list(range(gallery.QUERY_CLASSES)), "the first ten classes"
    assert not any(ax.images for ax in tiles(fig).values()), "vectors: stand-in tiles, no pictures"
    title = fig.legends[0].get_title().get_text()
    assert "synthetic, seed 3: one random test query for each of 10 classes" in title
    g = gallery.loss_galleries(runs)
    fig = gallery.dataset_gallery(runs, "disagreement")
    shown = sorted(int(gid.split("/")[1]) for gid in tiles(fig) if gid.startswith("query/"))
    assert shown == sorted(g.disagreements.tolist()) and len(shown) > 0
    with pytest.raises(ValueError, match="'random' or 'disagreement'"):
        gallery.dataset_gallery(runs, "hardest")


def test_a_dataset_gallery_whose_losses_all_agree_is_a_note_and_one_without_its_images_says_so(tmp_path, monkeypatch):
    y = np.repeat(np.arange(4), 6)
    same = _runs("synthetic", y, spreads=(0.05, 0.05, 0.05))
    for run in same.values():  # every loss the same embeddings: no query tells them apart
        run["embeddings"] = same["contrastive"]["embeddings"]
    fig = gallery.dataset_gallery(same, "disagreement")
    assert not tiles(fig) and "every loss retrieves alike" in fig.get_suptitle()
    monkeypatch.setattr(fashionmnist, "SYSTEM_DIRS", (tmp_path / "no-system",))  # nor the Debian package's copy
    fig = gallery.dataset_gallery(_runs("fashionmnist", y), "random", data_root=tmp_path)  # no FashionMNIST there
    assert not any(ax.images for ax in tiles(fig).values())
    assert "images are not on disk" in fig.legends[0].get_title().get_text()
    note = gallery.no_stand_in(["fashionmnist", "cub200"])
    assert "(fashionmnist, cub200) has pictures" in note.get_suptitle()
