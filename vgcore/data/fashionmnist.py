"""FashionMNIST (Xiao et al. 2017): IDX files from the data root, the Debian package or the official mirror."""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
import urllib.error
import zlib
from pathlib import Path

import numpy as np
import torch

from vgcore.data.base import (
    DataIntegrityError,
    DatasetSpec,
    Split,
    not_found,
)
from vgcore.data.fetch import fetch_file

MIRRORS: tuple[str, ...] = (
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
)
# MD5 of the official .gz files (the Debian package recompresses them, so its .gz differ).
FILES: dict[str, tuple[tuple[str, str], tuple[str, str]]] = {
    "train": (
        ("train-images-idx3-ubyte", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
        ("train-labels-idx1-ubyte", "25c81989df183df01b3e8a0aad5dffbe"),
    ),
    "test": (
        ("t10k-images-idx3-ubyte", "bef4ecab320f06d8554ea6380940ec79"),
        ("t10k-labels-idx1-ubyte", "bb300cfdad3c16e7a12a480ee83cd310"),
    ),
}
RAW_MD5: dict[str, str] = {
    "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
    "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
    "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
    "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
}
"""MD5 of the official files' content (the IDX bytes inside the official .gz): checked on every read,
whether the file is the official .gz, recompressed (Debian) or uncompressed (torchvision's raw/)."""
# Debian/Ubuntu package `dataset-fashion-mnist`.
SYSTEM_DIRS: tuple[Path, ...] = (Path("/usr/share/datasets/fashion-mnist"),)
CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip



_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | os.PathLike, md5: str | None = None) -> np.ndarray:
    """Read an IDX file (``.gz`` or raw) into a numpy array; DataIntegrityError if malformed or, when
    `md5` is given, if the MD5 of its (decompressed) content differs."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError, zlib.error) as e:
        raise DataIntegrityError(
            f"{path}: cannot read ({type(e).__name__}: {e}); the file is truncated or corrupt"
        ) from e
    if md5 is not None and (got := hashlib.md5(raw, usedforsecurity=False).hexdigest()) != md5:
        raise DataIntegrityError(
            f"{path}: its content has MD5 {got}, not the official {md5}: the file is corrupt or is not the "
            "official FashionMNIST. Delete it (the next run looks in the other places, or downloads it)."
        )
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DataIntegrityError(f"{path}: not an IDX file (bad magic number)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataIntegrityError(f"{path}: truncated IDX header")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise DataIntegrityError(
            f"{path}: IDX header says shape {shape} ({expected} bytes) but the file holds {len(raw) - header}"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)


def _idx_file(folder: Path, stem: str) -> Path | None:
    for cand in (folder / stem, folder / f"{stem}.gz"):
        if cand.is_file():
            return cand
    return None


def _fmnist_dirs(root: Path) -> list[Path]:
    return [root / "fashionmnist", root / "FashionMNIST" / "raw", root, *SYSTEM_DIRS]


def _fmnist_complete(folder: Path) -> bool:
    return all(_idx_file(folder, stem) for pair in FILES.values() for stem, _ in pair)


_FMNIST_WAYS = (
    "put the four IDX files ({train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]) in <root>/fashionmnist/ "
    "(torchvision's <root>/FashionMNIST/raw/ is read too)",
    "install the Debian/Ubuntu package: sudo apt-get install dataset-fashion-mnist "
    "(files go to /usr/share/datasets/fashion-mnist/)",
    "connect to the internet and run again with download=True (the default): the files are fetched "
    f"from {MIRRORS[0]} and checked against their MD5",
)


def locate(root: Path, download: bool) -> Path:
    dirs = _fmnist_dirs(root)
    for d in dirs:
        if _fmnist_complete(d):
            return d
    if not download:
        raise not_found("fashionmnist", root, dirs, _FMNIST_WAYS, cause="download=False")
    dest = root / "fashionmnist"
    errors = []
    for mirror in MIRRORS:
        try:
            for pair in FILES.values():
                for stem, md5 in pair:
                    if not (dest / f"{stem}.gz").is_file():
                        fetch_file(f"{mirror}{stem}.gz", dest / f"{stem}.gz", md5)
            return dest
        except (urllib.error.URLError, OSError, TimeoutError) as e:
            errors.append(f"{mirror}: {e}")
    raise not_found("fashionmnist", root, dirs, _FMNIST_WAYS, cause="; ".join(errors))


def read(folder: Path, split: str) -> Split:
    (img_stem, _), (lab_stem, _) = FILES[split]
    images = read_idx(_idx_file(folder, img_stem), RAW_MD5[img_stem])
    labels = read_idx(_idx_file(folder, lab_stem), RAW_MD5[lab_stem])
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DataIntegrityError(
            f"{folder}: images {images.shape} and labels {labels.shape} do not match"
        )
    if labels.size and labels.max() >= len(CLASSES):
        raise DataIntegrityError(f"{folder}: label {labels.max()} out of range")
    return Split(
        "fashionmnist",
        split,
        labels=torch.from_numpy(labels.astype(np.int64)),
        class_names=list(CLASSES),
        images=torch.from_numpy(images.copy()).unsqueeze(1),
        options={"source": str(folder)},
    )


# --------------------------------------------------------------------------------------------


SPEC = DatasetSpec("fashionmnist", read=read, locate=locate)
