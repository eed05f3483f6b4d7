"""Miniature copies of the datasets in their exact official on-disk formats, for tests.

Used by tests/test_data_formats.py and tests/test_data.py (each format, its loader and its errors)
and by tests/test_paper_build.py (the whole paper DAG offline): CIFAR-10 python batches, the
FashionMNIST IDX files, the CUB_200_2011 folder, both Stanford Cars layouts, the tiny-imagenet-200
layout, and the archives they are distributed as; and a ``sitecustomize.py`` by which a test's
subprocesses take the miniatures for the official files (``trust_miniatures``).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import pickle
import struct
import tarfile
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def write_image(path: Path, seed: int, size=(6, 5), fmt=None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.random.default_rng(seed).integers(0, 256, size=(size[1], size[0], 3)).astype(np.uint8)
    Image.fromarray(arr).save(
        path, format=fmt or ("JPEG" if path.suffix.lower() != ".png" else "PNG")
    )


def tgz(folder: Path, archive: Path, extra: dict[str, bytes] | None = None) -> Path:
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(folder, arcname=folder.name)
        for name, content in (extra or {}).items():
            p = archive.parent / name
            p.write_bytes(content)
            tf.add(p, arcname=name)
    return archive


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


CIFAR_NAMES = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
]


def make_cifar(parent: Path, n=3) -> Path:
    folder = parent / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    files = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for k, name in enumerate(files):
        batch = {
            "batch_label": f"batch {k}",
            "labels": [(k + j) % 10 for j in range(n)],
            "data": rng.integers(0, 256, size=(n, 3072)).astype(np.uint8),
            "filenames": [f"img_{k}_{j}.png" for j in range(n)],
        }
        with open(folder / name, "wb") as fh:
            pickle.dump(batch, fh, protocol=2)
    with open(folder / "batches.meta", "wb") as fh:
        pickle.dump({"label_names": CIFAR_NAMES, "num_cases_per_batch": n, "num_vis": 3072}, fh)
    return folder


CUB_CLASSES = ["Black_footed_Albatross", "Laysan_Albatross", "Sooty_Albatross", "Groove_billed_Ani"]


def make_cub(parent: Path, per_class=2) -> Path:
    folder = parent / "CUB_200_2011"
    images, classes, labels, split = [], [], [], []
    img_id = 0
    for c, name in enumerate(CUB_CLASSES, 1):
        cdir = f"{c:03d}.{name}"
        classes.append(f"{c} {cdir}")
        for k in range(per_class):
            img_id += 1
            rel = f"{cdir}/{name}_{k:04d}_{100 + img_id}.jpg"
            write_image(folder / "images" / rel, img_id)
            images.append(f"{img_id} {rel}")
            labels.append(f"{img_id} {c}")
            split.append(f"{img_id} {k % 2}")
    for fname, lines in (
        ("images.txt", images),
        ("classes.txt", classes),
        ("image_class_labels.txt", labels),
        ("train_test_split.txt", split),
    ):
        (folder / fname).write_text("\n".join(lines) + "\n")
    (folder / "README").write_text("CUB-200-2011 (test copy)\n")
    return folder


TINY_WNIDS = ["n02124075", "n01443537", "n04067472"]  # wnids.txt is not sorted
TINY_WORDS = {
    "n01443537": "goldfish, Carassius auratus",
    "n02124075": "Egyptian cat",
    "n04067472": "reel",
    "n00001740": "entity",  # words.txt covers all of WordNet, not only the 200
}


def make_tiny(parent: Path, per_class=2, val_per_class=2) -> Path:
    folder = parent / "tiny-imagenet-200"
    folder.mkdir(parents=True)
    (folder / "wnids.txt").write_text("\n".join(TINY_WNIDS) + "\n")
    (folder / "words.txt").write_text("".join(f"{w}\t{t}\n" for w, t in TINY_WORDS.items()))
    seed = 0
    for w in TINY_WNIDS:
        boxes = []
        for k in range(per_class):
            seed += 1
            write_image(
                folder / "train" / w / "images" / f"{w}_{k}.JPEG", seed, size=(8, 8), fmt="JPEG"
            )
            boxes.append(f"{w}_{k}.JPEG\t0\t0\t7\t7")
        (folder / "train" / w / f"{w}_boxes.txt").write_text("\n".join(boxes) + "\n")
    ann = []
    for i in range(val_per_class * len(TINY_WNIDS)):
        w = TINY_WNIDS[i % len(TINY_WNIDS)]
        write_image(folder / "val" / "images" / f"val_{i}.JPEG", 100 + i, size=(8, 8), fmt="JPEG")
        ann.append(f"val_{i}.JPEG\t{w}\t0\t1\t6\t7")
    (folder / "val" / "val_annotations.txt").write_text("\n".join(ann) + "\n")
    write_image(folder / "test" / "images" / "test_0.JPEG", 999, size=(8, 8), fmt="JPEG")
    return folder


def zip_folder(folder: Path, archive: Path) -> Path:
    with zipfile.ZipFile(archive, "w") as zf:
        for p in sorted(folder.rglob("*")):
            zf.write(p, p.relative_to(folder.parent).as_posix())
    return archive


CARS_NAMES = [
    "AM General Hummer SUV 2000",
    "Acura RL Sedan 2012",
    "Acura TL Sedan 2012",
    "Acura TL Type-S 2008",
]


def _struct_array(rows: list[dict]) -> np.ndarray:
    fields = list(rows[0])
    arr = np.empty((1, len(rows)), dtype=[(f, "O") for f in fields])
    for i, row in enumerate(rows):
        for f in fields:
            v = row[f]
            arr[0, i][f] = np.array([v]) if isinstance(v, str) else np.array([[v]], dtype=np.uint16)
    return arr


def _cell(strings: list[str]) -> np.ndarray:
    out = np.empty((1, len(strings)), dtype=object)
    for i, s in enumerate(strings):
        out[0, i] = np.array([s])
    return out


def make_cars_annos(base: Path, per_class=2) -> Path:
    """Layout A: cars_annos.mat + car_ims/ (16,185 images in the real set)."""
    from scipy.io import savemat

    rows, k = [], 0
    for c in range(1, len(CARS_NAMES) + 1):
        for j in range(per_class):
            k += 1
            write_image(base / "car_ims" / f"{k:06d}.jpg", k)
            rows.append(
                dict(
                    relative_im_path=f"car_ims/{k:06d}.jpg",
                    bbox_x1=1, bbox_y1=1, bbox_x2=5, bbox_y2=4,
                    **{"class": c, "test": j % 2},
                )
            )  # fmt: skip
    savemat(
        base / "cars_annos.mat",
        {"annotations": _struct_array(rows), "class_names": _cell(CARS_NAMES)},
    )
    return base


def make_cars_devkit(base: Path, per_class=2, nested=False, test_mat_in_devkit=False) -> Path:
    """Layout B: devkit/ + cars_train/ + cars_test/ + cars_test_annos_withlabels.mat."""
    from scipy.io import savemat

    (base / "devkit").mkdir(parents=True)
    savemat(base / "devkit" / "cars_meta.mat", {"class_names": _cell(CARS_NAMES)})
    for part in ("train", "test"):
        rows = []
        img_dir = base / f"cars_{part}"
        if nested:
            img_dir = img_dir / f"cars_{part}"
        for c in range(1, len(CARS_NAMES) + 1):
            for j in range(per_class):
                fname = f"{len(rows) + 1:05d}.jpg"
                write_image(img_dir / fname, 10 * c + j + (500 if part == "test" else 0))
                rows.append(
                    dict(bbox_x1=1, bbox_y1=1, bbox_x2=5, bbox_y2=4, **{"class": c}, fname=fname)
                )
        mat = {"annotations": _struct_array(rows)}
        if part == "train":
            savemat(base / "devkit" / "cars_train_annos.mat", mat)
        else:
            where = base / "devkit" if test_mat_in_devkit else base
            savemat(where / "cars_test_annos_withlabels.mat", mat)
    return base


def write_idx(path: Path, arr: np.ndarray, gz: bool = True) -> Path:
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    payload = (
        bytes([0, 0, 0x08, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        path = path.with_name(path.name + ".gz")
        with gzip.open(path, "wb") as fh:
            fh.write(payload)
    else:
        path.write_bytes(payload)
    return path


def make_fmnist(folder: Path, n_train=6, n_test=4, fill=0, gz=True) -> None:
    rng = np.random.default_rng(fill)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        imgs = rng.integers(0, 256, size=(n, 28, 28)).astype(np.uint8)
        imgs[:, 0, 0] = fill  # marks which copy was read
        write_idx(folder / f"{prefix}-images-idx3-ubyte", imgs, gz)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10, gz)


def make_paper_datasets(root: Path, images: int = 2) -> Path:
    """The five datasets of the paper profile under ``root`` (the layout ``VGCORE_DATA`` points at),
    each split with ``images`` samples per class and at least two classes (Cars196 and CUB-200-2011
    get four classes, so that their zero-shot split keeps two per side)."""
    make_cifar(root / "cifar10", n=10 * images)  # each batch holds every class `images` times
    make_fmnist(root / "fashionmnist", n_train=10 * images, n_test=10 * images)
    make_cars_annos(root / "cars196", per_class=2 * images)  # official halves merged, then split by class
    make_cub(root / "cub200", per_class=images)
    make_tiny(root / "tinyimagenet", per_class=images, val_per_class=images)
    return root


_TRUST_HOOK = '''"""Written by tests/_formats.py: the miniature datasets of a test stand for the official files."""
import importlib.machinery
import json
import sys

_TABLES = json.loads({tables!r})  # {{module: {{attribute: {{key: md5}}}}}}


class _TrustMiniatures(importlib.machinery.PathFinder):
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name not in _TABLES:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path, target)
        execute = spec.loader.exec_module

        def exec_module(module):
            execute(module)
            for attribute, table in _TABLES[name].items():
                setattr(module, attribute, table)

        spec.loader.exec_module = exec_module
        return spec


sys.meta_path.insert(0, _TrustMiniatures)
'''


def trust_miniatures(root: Path, folder: Path) -> Path:
    """`folder`, holding a ``sitecustomize.py`` by which every Python process started with `folder`
    first on ``PYTHONPATH`` takes the miniature FashionMNIST and CIFAR-10 of :func:`make_paper_datasets`
    under `root` for the official files: when vgcore's readers are imported, their tables of official
    MD5s are replaced by the miniatures'. For the build's own processes, which monkeypatch cannot reach."""
    from vgcore.data import fashionmnist

    fmnist = {}
    for stem in fashionmnist.RAW_MD5:
        path = next(p for p in (root / "fashionmnist" / stem, root / "fashionmnist" / f"{stem}.gz") if p.exists())
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        fmnist[stem] = hashlib.md5(raw).hexdigest()
    cifar = {p.name: md5(p) for p in (root / "cifar10" / "cifar-10-batches-py").iterdir()}
    tables = {"vgcore.data.fashionmnist": {"RAW_MD5": fmnist}, "vgcore.data.cifar10": {"MD5": cifar}}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(_TRUST_HOOK.format(tables=json.dumps(tables)))
    return folder
