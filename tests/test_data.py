"""Dataset registry, embedded sets (synthetic, synthetic_super, digits) and FashionMNIST's three sources."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from vgcore import data
from vgcore.data import DataIntegrityError, DataNotFoundError, fashionmnist

from _ci import unavailable
from _formats import make_fmnist, write_idx

# ------------------------------------------------------------------ registry and Split


def test_registry_names():
    assert data.DATASETS == (
        "cifar10",
        "fashionmnist",
        "cars196",
        "cub200",
        "tinyimagenet",
        "digits",
        "synthetic",
        "synthetic_super",
        "custom",
    )
    with pytest.raises(ValueError, match="unknown dataset"):
        data.load_dataset("imagenet")
    with pytest.raises(ValueError, match="split"):
        data.load_dataset("synthetic", split="validation")


def test_data_not_found_is_file_not_found():
    assert issubclass(DataNotFoundError, FileNotFoundError)


def test_default_root_env(monkeypatch, tmp_path):
    monkeypatch.setenv("VGCORE_DATA", str(tmp_path))
    assert data.default_root() == tmp_path
    monkeypatch.delenv("VGCORE_DATA")
    assert data.default_root() == Path("data")


def test_split_batches_subset_get():
    s = data.load_dataset(
        "synthetic", split="train", n_superclasses=2, n_fine_per_super=2, n_per_class=5
    )
    assert len(s) == 2 * 1 * 5 and s.kind == "vectors"
    got = list(s.batches(4))
    assert [len(y) for _, y in got] == [4, 4, 2]
    assert torch.equal(torch.cat([x for x, _ in got]), s.images)
    sub = s.subset([0, 9])
    assert len(sub) == 2 and torch.equal(sub.labels, s.labels[[0, 9]])
    assert torch.equal(sub.coarse_labels, s.coarse_labels[[0, 9]])
    assert torch.equal(s.get([1, 2]), s.images[1:3])
    assert "synthetic" in repr(s)


# ------------------------------------------------------------------ synthetic


def test_synthetic_disjoint_default():
    tr = data.load_dataset("synthetic", split="train")
    te = data.load_dataset("synthetic", split="test")
    opts = data.content_options("synthetic")
    S, F, n, d = opts["n_superclasses"], opts["n_fine_per_super"], opts["n_per_class"], opts["dim"]
    assert opts["class_split"] == "disjoint"
    assert tr.images.shape == (S * (F - F // 2) * n, d) and tr.images.dtype == torch.float32
    assert te.images.shape == (S * (F // 2) * n, d)
    assert set(tr.class_names).isdisjoint(te.class_names)
    for s in (tr, te):  # labels contiguous, superclasses all present
        assert s.labels.dtype == torch.int64
        assert torch.equal(s.labels.unique(), torch.arange(s.num_classes))
        assert torch.equal(s.coarse_labels.unique(), torch.arange(S))
        assert (s.labels.bincount() == n).all()


def test_synthetic_shared_and_seeds():
    kw = dict(n_superclasses=3, n_fine_per_super=4, n_per_class=6, dim=5, class_split="shared")
    tr = data.load_dataset("synthetic", split="train", **kw)
    te = data.load_dataset("synthetic", split="test", **kw)
    assert tr.class_names == te.class_names and tr.num_classes == 12
    assert not torch.equal(tr.images, te.images)  # different samples
    again = data.load_dataset("synthetic", split="train", **kw)
    assert torch.equal(tr.images, again.images)  # seeded
    other = data.load_dataset("synthetic", split="train", seed=1, **kw)
    assert not torch.equal(tr.images, other.images)
    # class means of train and test agree (same centres): nearest-centroid classifies well
    centres = torch.stack([tr.images[tr.labels == c].mean(0) for c in range(12)])
    pred = torch.cdist(te.images, centres).argmin(1)
    assert (pred == te.labels).float().mean() > 0.8


def test_synthetic_granularity_controls_difficulty():
    def fine_acc(fine_spread):
        kw = dict(
            n_superclasses=4, n_fine_per_super=4, n_per_class=30, dim=16, class_split="shared"
        )
        tr = data.load_dataset("synthetic", split="train", fine_spread=fine_spread, **kw)
        te = data.load_dataset("synthetic", split="test", fine_spread=fine_spread, **kw)
        centres = torch.stack([tr.images[tr.labels == c].mean(0) for c in range(tr.num_classes)])
        return (torch.cdist(te.images, centres).argmin(1) == te.labels).float().mean().item()

    assert fine_acc(0.05) < fine_acc(1.0)


@pytest.mark.parametrize("class_split", ["disjoint", "shared"])
def test_synthetic_super_trains_on_superclasses_and_tests_on_fine_classes(class_split):
    """The train split is labelled by superclass only; the test split is synthetic's (fine labels, superclass
    coarse labels); the features are synthetic's under the same options."""
    kw = dict(n_superclasses=3, n_fine_per_super=4, n_per_class=2, dim=5, nuisance_dim=2, nuisance_scale=1.0,
              class_split=class_split, seed=3)
    assert data.content_options("synthetic_super", **kw) == data.content_options("synthetic", **kw)
    assert data.dataset_spec("synthetic_super").coarse
    fine_tr, fine_te = (data.load_dataset("synthetic", split=s, **kw) for s in ("train", "test"))
    tr, te = (data.load_dataset("synthetic_super", split=s, **kw) for s in ("train", "test"))
    assert torch.equal(tr.images, fine_tr.images) and torch.equal(te.images, fine_te.images)
    assert torch.equal(tr.labels, fine_tr.coarse_labels) and torch.equal(tr.coarse_labels, fine_tr.coarse_labels)
    fine_per_super = 2 if class_split == "disjoint" else 4  # train classes; the test split has as many
    assert tr.class_names == ["super00", "super01", "super02"]
    assert tr.labels.tolist() == [s for s in range(3) for _ in range(fine_per_super * 2)]  # 2 per fine class
    assert torch.equal(te.labels, fine_te.labels) and torch.equal(te.coarse_labels, fine_te.coarse_labels)
    assert te.class_names == fine_te.class_names and te.num_classes == 3 * fine_per_super
    assert (tr.dataset, te.dataset) == ("synthetic_super", "synthetic_super")


def test_synthetic_bad_options():
    with pytest.raises(ValueError):
        data.load_dataset("synthetic", n_fine_per_super=1)
    with pytest.raises(ValueError):
        data.load_dataset("synthetic", class_split="random")
    with pytest.raises(ValueError, match=r"unknown option\(s\) \[.n_classes.\] for dataset .synthetic.; it takes: n_superclasses, n_fine_per_super"):
        data.content_options("synthetic", n_classes=3)


def test_dataset_options_fill_defaults_and_drop_download():
    assert data.content_options("synthetic", dim=8)["dim"] == 8
    assert data.content_options("synthetic") == data.content_options("synthetic", n_superclasses=8)
    assert data.content_options("cifar10", download=False) == {}


# ------------------------------------------------------------------ digits


def test_digits_shared_split():
    tr = data.load_dataset("digits", split="train")
    te = data.load_dataset("digits", split="test")
    assert len(tr) + len(te) == 1797
    assert tr.images.dtype == torch.uint8 and tr.images.shape[1:] == (1, 8, 8)
    assert int(tr.images.max()) == 255 and int(tr.images.min()) == 0
    assert tr.class_names == te.class_names == [str(i) for i in range(10)]
    ratio = te.labels.bincount().float() / (tr.labels.bincount() + te.labels.bincount()).float()
    assert ((ratio - 0.5).abs() < 0.02).all()  # stratified


def test_digits_disjoint_split():
    tr = data.load_dataset("digits", split="train", class_split="disjoint")
    te = data.load_dataset("digits", split="test", class_split="disjoint")
    assert tr.class_names == ["0", "1", "2", "3", "4"]
    assert te.class_names == ["5", "6", "7", "8", "9"]
    assert torch.equal(te.labels.unique(), torch.arange(5))


# ------------------------------------------------------------------ IDX / FashionMNIST


def trust_fmnist(monkeypatch, folder: Path) -> None:
    """Take the miniature in `folder` for the official files: its contents' MD5s become the expected ones."""
    digests = {}
    for stem in fashionmnist.RAW_MD5:
        path = next(p for p in (folder / stem, folder / f"{stem}.gz") if p.exists())
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        digests[stem] = hashlib.md5(raw).hexdigest()
    monkeypatch.setattr(fashionmnist, "RAW_MD5", digests)


@pytest.fixture
def no_system_fmnist(monkeypatch, tmp_path):
    monkeypatch.setattr(fashionmnist, "SYSTEM_DIRS", (tmp_path / "no-debian",))
    monkeypatch.setattr(fashionmnist, "MIRRORS", ((tmp_path / "no-mirror").as_uri() + "/",))


def test_fmnist_from_root_first(tmp_path, monkeypatch):
    sysdir = tmp_path / "debian"
    make_fmnist(sysdir, fill=7)
    make_fmnist(tmp_path / "root" / "fashionmnist", fill=3)
    trust_fmnist(monkeypatch, tmp_path / "root" / "fashionmnist")
    monkeypatch.setattr(fashionmnist, "SYSTEM_DIRS", (sysdir,))
    s = data.load_dataset("fashionmnist", tmp_path / "root", "train")
    assert len(s) == 6 and s.images.shape == (6, 1, 28, 28) and s.images.dtype == torch.uint8
    assert int(s.images[0, 0, 0, 0]) == 3  # the root's copy wins over the system one
    assert s.class_names[0] == "T-shirt/top" and len(s.class_names) == 10
    assert len(data.load_dataset("fashionmnist", tmp_path / "root", "test")) == 4


def test_fmnist_torchvision_layout_uncompressed(tmp_path, no_system_fmnist, monkeypatch):
    make_fmnist(tmp_path / "FashionMNIST" / "raw", gz=False)
    trust_fmnist(monkeypatch, tmp_path / "FashionMNIST" / "raw")
    data.check_available("fashionmnist", tmp_path)
    assert len(data.load_dataset("fashionmnist", tmp_path, "test")) == 4


def test_fmnist_system_fallback(tmp_path, monkeypatch):
    make_fmnist(tmp_path / "debian", fill=7)
    trust_fmnist(monkeypatch, tmp_path / "debian")
    monkeypatch.setattr(fashionmnist, "SYSTEM_DIRS", (tmp_path / "debian",))
    s = data.load_dataset("fashionmnist", tmp_path / "empty-root", "train", download=False)
    assert int(s.images[0, 0, 0, 0]) == 7


def test_fmnist_files_are_checked_against_the_official_checksums(tmp_path, no_system_fmnist):
    """Issue 18.6: a FashionMNIST file with valid gzip but the wrong content was accepted (the MD5 was
    checked only on download)."""
    make_fmnist(tmp_path / "fashionmnist")  # a valid IDX file, not the official content
    with pytest.raises(DataIntegrityError, match=r"t10k-images-idx3-ubyte.gz: its content has MD5 [0-9a-f]{32}, "
                       r"not the official 8181f5470baa50b63fa0f6fddb340f0a"):
        data.load_dataset("fashionmnist", tmp_path, "test", download=False)


def _debian_fmnist(name: str) -> Path:
    """A file of Debian's dataset-fashion-mnist; without it skip, or fail under CI (.ci/run installs it)."""
    path = fashionmnist.SYSTEM_DIRS[0] / name
    if not path.is_file():
        unavailable(f"the Debian package dataset-fashion-mnist is not installed ({path} is missing)",
                    "make data; .ci/run installs it")
    return path


def test_the_debian_package_files_pass_the_official_content_checksums():
    # recompressed, so their .gz MD5 differs from the official one; their content is the official one
    labels = fashionmnist.read_idx(_debian_fmnist("t10k-labels-idx1-ubyte.gz"),
                                   fashionmnist.RAW_MD5["t10k-labels-idx1-ubyte"])
    assert labels.shape == (10000,)


def test_fmnist_download(tmp_path, monkeypatch):
    server = tmp_path / "server"
    make_fmnist(server, fill=5)
    trust_fmnist(monkeypatch, server)
    files = {}
    for split, pair in fashionmnist.FILES.items():
        files[split] = tuple(
            (stem, hashlib.md5((server / f"{stem}.gz").read_bytes()).hexdigest())
            for stem, _ in pair
        )
    monkeypatch.setattr(fashionmnist, "FILES", files)
    monkeypatch.setattr(fashionmnist, "SYSTEM_DIRS", ())
    monkeypatch.setattr(fashionmnist, "MIRRORS", (server.as_uri() + "/",))
    root = tmp_path / "root"
    data.check_available("fashionmnist", root)
    assert sorted(p.name for p in (root / "fashionmnist").iterdir()) == sorted(
        f"{stem}.gz" for pair in files.values() for stem, _ in pair
    )
    assert int(data.load_dataset("fashionmnist", root, "train").images[0, 0, 0, 0]) == 5


def test_fmnist_download_bad_checksum_keeps_nothing(tmp_path, monkeypatch):
    server = tmp_path / "server"
    make_fmnist(server)
    monkeypatch.setattr(fashionmnist, "SYSTEM_DIRS", ())
    monkeypatch.setattr(fashionmnist, "MIRRORS", (server.as_uri() + "/",))
    with pytest.raises(DataIntegrityError, match="MD5"):
        data.check_available("fashionmnist", tmp_path / "root")
    assert list((tmp_path / "root" / "fashionmnist").iterdir()) == []


def test_fmnist_not_found_names_three_ways(tmp_path, no_system_fmnist):
    with pytest.raises(DataNotFoundError) as err:
        data.check_available("fashionmnist", tmp_path / "root")
    msg = str(err.value)
    assert "fashionmnist" in msg
    assert str(tmp_path / "root" / "fashionmnist") in msg  # where it looked
    assert "no-debian" in msg
    assert "apt-get install dataset-fashion-mnist" in msg
    assert "download=True" in msg and "1." in msg and "3." in msg


def test_fmnist_download_false(tmp_path, no_system_fmnist):
    with pytest.raises(DataNotFoundError, match="download=False"):
        data.load_dataset("fashionmnist", tmp_path, download=False)


def test_fmnist_real_debian_files(tmp_path):
    _debian_fmnist("t10k-images-idx3-ubyte.gz")
    data.check_available("fashionmnist", tmp_path)  # empty root: found via the system package
    s = data.load_dataset("fashionmnist", tmp_path, "test")
    assert s.images.shape == (10000, 1, 28, 28)
    assert (s.labels.bincount() == 1000).all()


# ------------------------------------------------------------------ IDX errors


def test_idx_roundtrip_and_errors(tmp_path):
    arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    p = write_idx(tmp_path / "a-idx3-ubyte", arr)
    assert np.array_equal(fashionmnist.read_idx(p), arr)
    truncated = tmp_path / "t.gz"
    truncated.write_bytes(p.read_bytes()[:-12])
    with pytest.raises(DataIntegrityError, match="truncated or corrupt"):
        fashionmnist.read_idx(truncated)
    short = write_idx(tmp_path / "s-idx3-ubyte", arr, gz=False)
    short.write_bytes(short.read_bytes()[:-1])
    with pytest.raises(DataIntegrityError, match="header says"):
        fashionmnist.read_idx(short)
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(DataIntegrityError, match="magic"):
        fashionmnist.read_idx(bad)


def test_synthetic_nuisance_hides_classes_in_a_shared_subspace_and_draws_nothing_when_off():
    kw = dict(n_superclasses=3, n_fine_per_super=2, n_per_class=20, dim=12)
    plain = data.load_dataset("synthetic", split="test", **kw)
    off = data.load_dataset("synthetic", split="test", nuisance_dim=0, nuisance_scale=5.0, **kw)
    assert torch.equal(plain.images, off.images)  # the option draws nothing when off
    on = data.load_dataset("synthetic", split="test", nuisance_dim=4, nuisance_scale=5.0, **kw)
    extra = (on.images - plain.images).double()
    assert torch.linalg.matrix_rank(extra, atol=1e-4).item() == 4  # one shared 4-d subspace (float32 data)
    assert extra.norm(dim=1).mean().item() == pytest.approx(5.0, rel=0.3)  # typical norm nuisance_scale
    with pytest.raises(ValueError, match="nuisance_dim"):
        data.load_dataset("synthetic", nuisance_dim=13, **kw)


@pytest.mark.parametrize("name", ["digits", "synthetic", "synthetic_super"])
def test_a_dataset_declares_pictures_exactly_when_its_split_holds_images(name):
    """The declared fact the galleries and the 2-D pictures read agrees with what the reader returns."""
    from vgcore.data import has_pictures

    assert has_pictures(name) == (data.load_dataset(name, split="test").kind != "vectors")
