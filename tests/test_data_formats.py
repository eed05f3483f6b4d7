"""Small archives in the exact official on-disk formats, loaded through the real code paths.

CIFAR-10 python batches, the CUB_200_2011 folder, the tiny-imagenet-200 layout, both Stanford
Cars layouts; downloads (file:// URLs), checksum failures and truncated archives.
"""

from __future__ import annotations

import importlib
import os
import pickle
import re
import shlex
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from vgcore import data
from vgcore.data import DataIntegrityError, DataNotFoundError, Remote

from _formats import (
    CARS_NAMES,
    CIFAR_NAMES,
    CUB_CLASSES,
    leftovers,
    make_cars_annos,
    make_cars_devkit,
    make_cifar,
    make_cub,
    make_tiny,
    md5,
    tgz,
    zip_folder,
)

# ------------------------------------------------------------------ CIFAR-10


def trust_cifar(monkeypatch, folder: Path) -> None:
    """Take the miniature in `folder` for the official files: their MD5s become the expected ones."""
    monkeypatch.setattr(importlib.import_module("vgcore.data.cifar10"), "MD5",
                        {p.name: md5(p) for p in folder.iterdir()})


def test_cifar10_folder(tmp_path, monkeypatch):
    folder = make_cifar(tmp_path / "cifar10")
    trust_cifar(monkeypatch, folder)
    tr = data.load_dataset("cifar10", tmp_path, "train", download=False)
    te = data.load_dataset("cifar10", tmp_path, "test", download=False)
    assert tr.images.shape == (15, 3, 32, 32) and te.images.shape == (3, 3, 32, 32)
    assert tr.class_names == CIFAR_NAMES
    with open(folder / "data_batch_1", "rb") as fh:
        first = pickle.load(fh)
    assert torch.equal(tr.images[0], torch.from_numpy(first["data"][0].reshape(3, 32, 32)))
    assert tr.labels[:3].tolist() == first["labels"]


def test_cifar10_torchvision_layout_at_root(tmp_path):
    make_cifar(tmp_path)  # <root>/cifar-10-batches-py, where torchvision keeps it
    data.check_available("cifar10", tmp_path, download=False)


def test_cifar10_download_verify_extract(tmp_path, monkeypatch):
    server = tmp_path / "server"
    folder = make_cifar(server)
    trust_cifar(monkeypatch, folder)
    archive = tgz(folder, server / "cifar-10-python.tar.gz")
    monkeypatch.setattr(
        importlib.import_module("vgcore.data.cifar10"), "REMOTE", Remote(archive.as_uri(), archive.name, md5(archive))
    )
    root = tmp_path / "root"
    data.check_available("cifar10", root)
    assert leftovers(root / "cifar10") == ["cifar-10-batches-py", "cifar-10-python.tar.gz"]
    assert len(data.load_dataset("cifar10", root, "test")) == 3


def test_cifar10_offline_error(tmp_path, monkeypatch):
    missing = (tmp_path / "nowhere" / "cifar-10-python.tar.gz").as_uri()
    monkeypatch.setattr(
        importlib.import_module("vgcore.data.cifar10"), "REMOTE", Remote(missing, "cifar-10-python.tar.gz", "0" * 32)
    )
    with pytest.raises(DataNotFoundError) as err:
        data.check_available("cifar10", tmp_path / "root")
    msg = str(err.value)
    assert "cifar10" in msg and str(tmp_path / "root" / "cifar10") in msg
    assert "Download failed" in msg and "cifar-10-batches-py" in msg
    assert leftovers(tmp_path / "root" / "cifar10") == []


class _Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):  # what a crafted pickle does: call a function while it is loaded
        return (os.system, (f"touch {self.marker}",))


def test_cifar10_batches_cannot_run_code(tmp_path, monkeypatch):
    """Issue 18.6: the batches were read with the unrestricted pickle.load, so a crafted data_batch_1 in
    the data root ran arbitrary code when the dataset was loaded."""
    folder = make_cifar(tmp_path / "cifar10")
    marker = tmp_path / "pwned"
    with open(folder / "test_batch", "wb") as fh:
        pickle.dump({"data": _Payload(marker), "labels": [0]}, fh, protocol=2)
    trust_cifar(monkeypatch, folder)  # even with a matching checksum, the unpickler refuses it
    with pytest.raises(DataIntegrityError, match=r"refused to load (posix|os)\.system"):
        data.load_dataset("cifar10", tmp_path, "test", download=False)
    assert not marker.exists(), "the pickle ran code"


class _Call:
    """Pickles as a call of `func` on `args`: what a crafted batch asks the unpickler to run."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return (self.func, self.args)


def _crafted(name: str, marker: Path, tmp_path: Path) -> _Call:
    """A payload reaching `name` whose run creates `marker`."""
    if name == "numpy.load":  # a pickle file loaded by numpy with allow_pickle: an unrestricted load
        inner = tmp_path / "inner.pkl"
        inner.write_bytes(pickle.dumps(_Call(os.system, f"touch {shlex.quote(str(marker))}")))
        return _Call(np.load, str(inner), None, True)
    if name == "os.system":
        return _Call(os.system, f"touch {shlex.quote(str(marker))}")
    if name == "builtins.eval":
        return _Call(eval, f"open({str(marker)!r}, 'w').close()")
    return _Call(subprocess.Popen, ["touch", str(marker)])


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
@pytest.mark.parametrize(("name", "refused"), [
    ("numpy.load", r"numpy\.load"), ("os.system", r"(posix|nt|os)\.system"),
    ("builtins.eval", r"(builtins|__builtin__)\.eval"), ("subprocess.Popen", r"(subprocess|commands)\.Popen"),
])
def test_cifar10_batches_refuse_every_global_outside_the_format(tmp_path, monkeypatch, name, refused, protocol):
    """Protocol 2 is the official batches' (Python 2 names: __builtin__, commands), the highest one a
    crafted file may use as well."""
    folder = make_cifar(tmp_path / "cifar10")
    marker = tmp_path / "pwned"
    with open(folder / "test_batch", "wb") as fh:
        pickle.dump({"data": _crafted(name, marker, tmp_path), "labels": [0]}, fh, protocol=protocol)
    trust_cifar(monkeypatch, folder)
    with pytest.raises(DataIntegrityError) as err:
        data.load_dataset("cifar10", tmp_path, "test", download=False)
    assert not marker.exists(), f"the pickle ran code through {name}"
    assert re.search(rf"test_batch: cannot unpickle \(UnpicklingError: refused to load {refused}:", str(err.value))


def test_cifar10_unpickler_admits_exactly_what_the_batches_need():
    """A numpy array (its reconstruction under numpy 1 and 2 names, ndarray, dtype) and _codecs.encode
    (bytes in protocol-2 pickles written by Python 3): anything more is a way to run code."""
    from vgcore.data.cifar10 import _ALLOWED

    assert _ALLOWED == {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                        ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}


def test_cifar10_files_are_checked_against_the_official_checksums(tmp_path):
    make_cifar(tmp_path / "cifar10")  # a well-formed miniature, not the official files
    with pytest.raises(DataIntegrityError, match=r"batches.meta: MD5 [0-9a-f]{32}, not the official "
                       r"5ff9c542aee3614f3951f8cda6e48888"):
        data.load_dataset("cifar10", tmp_path, "test", download=False)


def test_cifar10_truncated_batch(tmp_path, monkeypatch):
    folder = make_cifar(tmp_path / "cifar10")
    trust_cifar(monkeypatch, folder)
    (folder / "test_batch").write_bytes((folder / "test_batch").read_bytes()[:100])
    with pytest.raises(DataIntegrityError, match="truncated or corrupt"):
        data.load_dataset("cifar10", tmp_path, "test", download=False)


# ------------------------------------------------------------------ CUB-200-2011


def test_cub200_folder_zero_shot_split(tmp_path):
    make_cub(tmp_path / "cub200")
    tr = data.load_dataset("cub200", tmp_path, "train", download=False)
    te = data.load_dataset("cub200", tmp_path, "test", download=False)
    assert tr.class_names == CUB_CLASSES[:2] and te.class_names == CUB_CLASSES[2:]
    assert tr.labels.tolist() == [0, 0, 1, 1] and te.labels.tolist() == [0, 0, 1, 1]
    assert tr.paths is not None and all(p.is_file() for p in tr.paths)
    assert "003.Sooty_Albatross" in str(te.paths[0])
    imgs = te.get([0, 1])  # lazily opened, RGB
    assert len(imgs) == 2 and imgs[0].mode == "RGB" and imgs[0].size == (6, 5)


@pytest.fixture
def cub_server(tmp_path, monkeypatch):
    server = tmp_path / "server"
    folder = make_cub(server)
    archive = tgz(folder, server / "CUB_200_2011.tgz", extra={"attributes.txt": b"1 has_bill\n"})
    monkeypatch.setattr(
        importlib.import_module("vgcore.data.cub200"), "REMOTE", Remote(archive.as_uri(), archive.name, md5(archive))
    )
    return archive


def test_cub200_download_verify_extract(tmp_path, cub_server):
    root = tmp_path / "root"
    data.check_available("cub200", root)
    assert leftovers(root / "cub200") == ["CUB_200_2011", "CUB_200_2011.tgz"]
    assert len(data.load_dataset("cub200", root, "test")) == 4


def test_cub200_local_archive(tmp_path, cub_server):
    root = tmp_path / "root"
    (root / "cub200").mkdir(parents=True)
    (root / "cub200" / cub_server.name).write_bytes(cub_server.read_bytes())
    assert len(data.load_dataset("cub200", root, "train", download=False)) == 4


def test_cub200_checksum_mismatch(tmp_path, cub_server, monkeypatch):
    monkeypatch.setattr(
        importlib.import_module("vgcore.data.cub200"), "REMOTE", Remote(cub_server.as_uri(), cub_server.name, "0" * 32)
    )
    root = tmp_path / "root"
    (root / "cub200").mkdir(parents=True)
    (root / "cub200" / cub_server.name).write_bytes(cub_server.read_bytes())
    with pytest.raises(DataIntegrityError, match="checksum mismatch") as err:
        data.check_available("cub200", root)
    assert "delete it" in str(err.value)
    assert leftovers(root / "cub200") == [cub_server.name]  # nothing extracted


def test_cub200_download_checksum_mismatch_keeps_nothing(tmp_path, cub_server, monkeypatch):
    monkeypatch.setattr(
        importlib.import_module("vgcore.data.cub200"), "REMOTE", Remote(cub_server.as_uri(), cub_server.name, "0" * 32)
    )
    with pytest.raises(DataIntegrityError, match="MD5"):
        data.check_available("cub200", tmp_path / "root")
    assert leftovers(tmp_path / "root" / "cub200") == []


def test_cub200_truncated_archive_leaves_nothing(tmp_path, cub_server, monkeypatch):
    root = tmp_path / "root"
    (root / "cub200").mkdir(parents=True)
    cut = root / "cub200" / cub_server.name
    cut.write_bytes(cub_server.read_bytes()[: cub_server.stat().st_size // 2])
    # with the official checksum the truncated file is caught before extraction ...
    with pytest.raises(DataIntegrityError, match="checksum mismatch"):
        data.check_available("cub200", root)
    # ... and if its checksum matched, extraction fails cleanly, all or nothing
    monkeypatch.setattr(
        importlib.import_module("vgcore.data.cub200"), "REMOTE", Remote(cub_server.as_uri(), cut.name, md5(cut)))
    with pytest.raises(DataIntegrityError, match="truncated or corrupt"):
        data.check_available("cub200", root)
    assert leftovers(root / "cub200") == [cut.name]  # no CUB_200_2011/, no .extract-* temp dir


def test_cub200_not_found(tmp_path):
    with pytest.raises(DataNotFoundError) as err:
        data.check_available("cub200", tmp_path, download=False)
    assert "CUB_200_2011.tgz" in str(err.value) and "data.caltech.edu" in str(err.value)


# ------------------------------------------------------------------ Tiny-ImageNet


def test_tinyimagenet_folder(tmp_path):
    make_tiny(tmp_path / "tinyimagenet")
    tr = data.load_dataset("tinyimagenet", tmp_path, "train", download=False)
    te = data.load_dataset("tinyimagenet", tmp_path, "val", download=False)  # val == test
    assert te.split == "test"
    assert (
        tr.class_names == te.class_names == ["goldfish, Carassius auratus", "Egyptian cat", "reel"]
    )
    assert tr.labels.tolist() == [0, 0, 1, 1, 2, 2]
    # val_annotations: val_0 -> n02124075 (Egyptian cat, label 1), val_1 -> n01443537 (0)
    assert te.labels[:3].tolist() == [1, 0, 2] and te.paths[0].name == "val_0.JPEG"
    x, y = next(te.batches(4))
    assert len(x) == 4 and x[0].size == (8, 8)


def test_tinyimagenet_zip_download_and_truncation(tmp_path, monkeypatch):
    server = tmp_path / "server"
    archive = zip_folder(make_tiny(server), server / "tiny-imagenet-200.zip")
    monkeypatch.setattr(
        importlib.import_module("vgcore.data.tinyimagenet"), "REMOTE", Remote(archive.as_uri(), archive.name, md5(archive))
    )
    root = tmp_path / "root"
    data.check_available("tinyimagenet", root)
    assert len(data.load_dataset("tinyimagenet", root, "test")) == 6
    # a truncated zip whose checksum is (wrongly) accepted: clean error, nothing extracted
    root2 = tmp_path / "root2"
    (root2 / "tinyimagenet").mkdir(parents=True)
    cut = root2 / "tinyimagenet" / archive.name
    cut.write_bytes(archive.read_bytes()[:-200])
    monkeypatch.setattr(
        importlib.import_module("vgcore.data.tinyimagenet"), "REMOTE", Remote(archive.as_uri(), archive.name, md5(cut))
    )
    with pytest.raises(DataIntegrityError, match="truncated or corrupt"):
        data.check_available("tinyimagenet", root2)
    assert leftovers(root2 / "tinyimagenet") == [archive.name]


def test_tinyimagenet_bad_annotation(tmp_path):
    folder = make_tiny(tmp_path / "tinyimagenet")
    with open(folder / "val" / "val_annotations.txt", "a") as fh:
        fh.write("val_99.JPEG\tn99999999\t0\t0\t1\t1\n")
    with pytest.raises(DataIntegrityError, match="val_annotations"):
        data.load_dataset("tinyimagenet", tmp_path, "test", download=False)


# ------------------------------------------------------------------ Stanford Cars


def _check_cars(root: Path, n_per_split: int, layout: str) -> None:
    tr = data.load_dataset("cars196", root, "train")
    te = data.load_dataset("cars196", root, "test")
    assert tr.class_names == CARS_NAMES[:2] and te.class_names == CARS_NAMES[2:]
    assert len(tr) == len(te) == n_per_split
    assert torch.equal(tr.labels.unique(), torch.arange(2))
    assert all(p.is_file() for p in tr.paths + te.paths)
    assert tr.options["layout"] == layout


def test_cars196_annos_layout(tmp_path):
    make_cars_annos(tmp_path / "cars196")
    _check_cars(tmp_path, 4, "annos")  # all 16 images (both official halves) split by class


def test_cars196_devkit_layout(tmp_path):
    make_cars_devkit(tmp_path / "cars196")
    _check_cars(tmp_path, 8, "devkit")  # official train and test images merged, then split


def test_cars196_torchvision_and_kaggle_layouts(tmp_path):
    make_cars_devkit(tmp_path / "stanford_cars", nested=True, test_mat_in_devkit=True)
    _check_cars(tmp_path, 8, "devkit")


def test_cars196_not_found_says_where(tmp_path):
    (tmp_path / "cars196" / "devkit").mkdir(parents=True)  # incomplete
    with pytest.raises(DataNotFoundError) as err:
        data.check_available("cars196", tmp_path)
    msg = str(err.value)
    for needle in ("cars_annos.mat", "car_ims", "cars_meta.mat", "cars_train_annos.mat",
                   "cars_test_annos_withlabels.mat", str(tmp_path / "cars196"), "#7545"):  # fmt: skip
        assert needle in msg
