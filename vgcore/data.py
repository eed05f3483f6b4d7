"""Dataset registry: the paper's five image datasets plus two embedded offline sets.

``load_dataset(name, root, split)`` returns a :class:`Split`: integer labels (contiguous
``0..C-1`` within the split), class names, and the images, which are either held in memory
(FashionMNIST, CIFAR-10, digits; ``uint8 [N, C, H, W]``), listed as files and opened in batches
(Cars196, CUB-200-2011, Tiny-ImageNet), or already feature vectors (``synthetic``;
``float32 [N, D]``).

Data root: the ``root`` argument, else ``$VGCORE_DATA``, else ``./data``. Each dataset lives
in ``<root>/<name>/`` (the layouts torchvision and the official archives use directly under
``<root>`` are accepted too). The split protocol of every dataset is in PROTOCOL.md,
section "Datasets and splits".

Real datasets are downloaded (with checksum verification) when missing, except Stanford Cars,
whose official host is gone: there, the error says exactly where to put the files. When data is
missing and cannot be fetched, :class:`DataNotFoundError` names the dataset, where it looked and
every way to get it. A corrupt or truncated archive raises :class:`DataIntegrityError`;
extraction happens in a temporary folder that is renamed into place, so nothing is ever left
half-extracted.
"""

from __future__ import annotations

import gzip
import hashlib
import inspect
import math
import os
import pickle
import shutil
import struct
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .io import atomic_open, file_md5

__all__ = [
    "ARCHIVES",
    "DATASETS",
    "DataIntegrityError",
    "DataNotFoundError",
    "Remote",
    "Split",
    "check_available",
    "dataset_options",
    "default_root",
    "load_dataset",
]

DATASETS: tuple[str, ...] = (
    "cifar10",
    "fashionmnist",
    "cars196",
    "cub200",
    "tinyimagenet",
    "digits",
    "synthetic",
)
SPLITS: tuple[str, ...] = ("train", "test")

# Options that change how data is obtained, not what it is (left out of feature-cache keys).
NON_CONTENT_OPTIONS = frozenset({"download"})


class DataNotFoundError(FileNotFoundError):
    """The dataset is not on disk and could not be fetched. The message says how to get it."""


class DataIntegrityError(ValueError):
    """A dataset file exists but is corrupt: wrong checksum, truncated archive, bad header."""


@dataclass(frozen=True)
class Remote:
    """One downloadable file: where it lives, its name on disk and its published MD5."""

    url: str
    filename: str
    md5: str | None


# Official sources. Tests point these at small local archives (file:// URLs).
ARCHIVES: dict[str, Remote] = {
    "cifar10": Remote(
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        "cifar-10-python.tar.gz",
        "c58f30108f718f92721af3b95e74349a",
    ),
    "cub200": Remote(
        "https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz",
        "CUB_200_2011.tgz",
        "97eceeb196236b17998738112f37df78",
    ),
    "tinyimagenet": Remote(
        "http://cs231n.stanford.edu/tiny-imagenet-200.zip",
        "tiny-imagenet-200.zip",
        "90528d7ca1a48142e341f4ef8d21d0de",
    ),
}

FASHIONMNIST_MIRRORS: tuple[str, ...] = (
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
)
# MD5 of the official .gz files (the Debian package recompresses them, so its .gz differ).
FASHIONMNIST_FILES: dict[str, tuple[tuple[str, str], tuple[str, str]]] = {
    "train": (
        ("train-images-idx3-ubyte", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
        ("train-labels-idx1-ubyte", "25c81989df183df01b3e8a0aad5dffbe"),
    ),
    "test": (
        ("t10k-images-idx3-ubyte", "bef4ecab320f06d8554ea6380940ec79"),
        ("t10k-labels-idx1-ubyte", "bb300cfdad3c16e7a12a480ee83cd310"),
    ),
}
# Debian/Ubuntu package `dataset-fashion-mnist`.
FASHIONMNIST_SYSTEM_DIRS: tuple[Path, ...] = (Path("/usr/share/datasets/fashion-mnist"),)
FASHIONMNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip

DOWNLOAD_TIMEOUT_S = 60.0


# --------------------------------------------------------------------------------------------
# The split object
# --------------------------------------------------------------------------------------------


@dataclass
class Split:
    """One split of one dataset.

    Exactly one of ``images`` (a tensor: ``uint8 [N, C, H, W]`` pixels or ``float32 [N, D]``
    vectors) and ``paths`` (image files, opened lazily) is set. ``labels`` are ``int64 [N]`` in
    ``0..len(class_names)-1``; ``coarse_labels`` (synthetic only) give each sample's superclass.
    """

    dataset: str
    split: str
    labels: torch.Tensor
    class_names: list[str]
    images: torch.Tensor | None = None
    paths: list[Path] | None = None
    options: dict[str, Any] = field(default_factory=dict)
    coarse_labels: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if (self.images is None) == (self.paths is None):
            raise ValueError("a Split holds either in-memory images or file paths")
        n = len(self.images) if self.images is not None else len(self.paths)
        if self.labels.dtype != torch.int64 or self.labels.shape != (n,):
            raise ValueError(
                f"labels must be int64 [{n}], got {self.labels.dtype} {tuple(self.labels.shape)}"
            )

    def __len__(self) -> int:
        return len(self.labels)

    def __repr__(self) -> str:
        return (
            f"Split({self.dataset!r}, {self.split!r}, n={len(self)}, classes={self.num_classes}, "
            f"kind={self.kind!r}{', shape=' + str(tuple(self.images.shape[1:])) if self.images is not None else ''})"
        )

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def kind(self) -> str:
        """``"pixels"`` (uint8 images in memory), ``"files"`` (lazy) or ``"vectors"``."""
        if self.paths is not None:
            return "files"
        return "pixels" if self.images.dtype == torch.uint8 else "vectors"

    def get(self, index: Sequence[int] | slice) -> torch.Tensor | list:
        """Images at ``index``: a tensor slice, or a list of RGB ``PIL.Image`` for file splits."""
        if self.images is not None:
            if isinstance(index, slice):
                return self.images[index]
            return self.images[torch.as_tensor(index, dtype=torch.long)]
        from PIL import Image

        chosen = self.paths[index] if isinstance(index, slice) else [self.paths[i] for i in index]
        out = []
        for p in chosen:
            with Image.open(p) as im:
                out.append(im.convert("RGB"))
        return out

    def batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor | list, torch.Tensor]]:
        """Yield ``(images, labels)`` in order, ``batch_size`` at a time."""
        for start in range(0, len(self), batch_size):
            sl = slice(start, min(start + batch_size, len(self)))
            yield self.get(sl), self.labels[sl]

    def subset(self, index: Sequence[int] | slice) -> Split:
        """A new Split with the chosen samples (labels and class names kept as they are)."""
        if isinstance(index, slice):
            index = range(len(self))[index]
        idx = torch.as_tensor(list(index), dtype=torch.long)
        return Split(
            dataset=self.dataset,
            split=self.split,
            labels=self.labels[idx],
            class_names=list(self.class_names),
            images=None if self.images is None else self.images[idx],
            paths=None if self.paths is None else [self.paths[i] for i in idx.tolist()],
            options=dict(self.options, subset=len(idx)),
            coarse_labels=None if self.coarse_labels is None else self.coarse_labels[idx],
        )


# --------------------------------------------------------------------------------------------
# Public entry points
# --------------------------------------------------------------------------------------------


def default_root() -> Path:
    """``$VGCORE_DATA`` if set, else ``./data``."""
    return Path(os.environ.get("VGCORE_DATA") or "data").expanduser()


def _root(root: str | os.PathLike | None) -> Path:
    return Path(root).expanduser() if root is not None else default_root()


def _spec(name: str) -> _DatasetSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}") from None


def _check_split(split: str) -> str:
    if split == "val":  # Tiny-ImageNet users say val; it is our test split everywhere.
        split = "test"
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return split


def load_dataset(
    name: str, root: str | os.PathLike | None = None, split: str = "train", **options: Any
) -> Split:
    """Load one split of a registered dataset (downloading it first when allowed and needed).

    ``options`` are dataset specific (see :func:`dataset_options`); every real dataset accepts
    ``download=True|False``.
    """
    spec = _spec(name)
    split = _check_split(split)
    return spec.load(_root(root), split, **options)


def check_available(name: str, root: str | os.PathLike | None = None, **options: Any) -> None:
    """Make sure ``name`` can be loaded, without loading it; raise DataNotFoundError if not.

    Cheap when the data is on disk (only file existence is checked). When it is missing and
    ``download`` is allowed (the default), this is the step that fetches and extracts it.
    """
    spec = _spec(name)
    spec.check(_root(root), **{k: v for k, v in options.items() if k in NON_CONTENT_OPTIONS})


def dataset_options(name: str, **options: Any) -> dict[str, Any]:
    """The options that define a dataset's content, defaults filled in (for cache keys).

    Raises TypeError for an option the dataset does not take.
    """
    sig = inspect.signature(_spec(name).load)
    bound = sig.bind(Path("."), "train", **options)
    bound.apply_defaults()
    out = {k: v for k, v in bound.arguments.items() if k not in ("root", "split")}
    return {k: out[k] for k in sorted(out) if k not in NON_CONTENT_OPTIONS}


@dataclass(frozen=True)
class _DatasetSpec:
    load: Callable[..., Split]
    check: Callable[..., None]


# --------------------------------------------------------------------------------------------
# Errors, downloads, checksums, extraction
# --------------------------------------------------------------------------------------------


def _not_found(
    name: str,
    root: Path,
    looked: Sequence[Path | str],
    ways: Sequence[str],
    cause: str | None = None,
) -> DataNotFoundError:
    lines = [
        f"dataset {name!r} not found (data root {root}; set it with root=... or $VGCORE_DATA)."
    ]
    lines.append("Looked in:")
    lines += [f"  - {p}" for p in looked]
    if cause:
        lines.append(f"Download failed: {cause}")
    lines.append("Ways to get it:")
    lines += [f"  {i}. {w.replace('<root>', str(root))}" for i, w in enumerate(ways, 1)]
    return DataNotFoundError("\n".join(lines))


def _download(url: str, dest: Path, md5: str | None) -> Path:
    """Fetch ``url`` to ``dest`` atomically, verifying ``md5``. Network errors propagate as OSError."""
    from tqdm import tqdm

    dest.parent.mkdir(parents=True, exist_ok=True)
    req = urllib.request.Request(url, headers={"User-Agent": "vgcore (python urllib)"})
    with (
        urllib.request.urlopen(req, timeout=DOWNLOAD_TIMEOUT_S) as resp,
        atomic_open(dest, "wb") as fh,
    ):
        digest = hashlib.md5(usedforsecurity=False)
        length = getattr(resp, "length", None)  # absent for file:// URLs
        total = length if isinstance(length, int) else None
        with tqdm(
            total=total, unit="B", unit_scale=True, desc=f"download {dest.name}", leave=False
        ) as bar:
            while chunk := resp.read(1 << 20):
                fh.write(chunk)
                digest.update(chunk)
                bar.update(len(chunk))
        if md5 is not None and digest.hexdigest() != md5:
            raise DataIntegrityError(
                f"downloaded {url} but its MD5 is {digest.hexdigest()}, expected {md5}; nothing was kept. "
                "The server sent something else (an error page, or a changed file): try again later "
                "or download it by hand and check it."
            )
    return dest


def _verify(path: Path, md5: str | None, url: str) -> None:
    if md5 is None:
        return
    got = file_md5(path)
    if got != md5:
        raise DataIntegrityError(
            f"checksum mismatch for {path}: MD5 {got}, expected {md5}. The file is incomplete or "
            f"corrupt: delete it and run again (it will be downloaded from {url}), or fetch it again by hand."
        )


def _unpack(archive: Path, into: Path) -> None:
    name = archive.name.lower()
    if name.endswith(".zip"):
        with zipfile.ZipFile(archive) as zf:
            for member in zf.namelist():  # refuse absolute paths and ..
                target = (into / member).resolve()
                if not target.is_relative_to(into.resolve()):
                    raise DataIntegrityError(f"{archive}: unsafe member path {member!r}")
            zf.extractall(into)
    else:
        with tarfile.open(archive, "r:*") as tf:
            tf.extractall(into, filter="data")


def _extract(archive: Path, dest_dir: Path, folder: str) -> Path:
    """Extract ``archive`` and move its top-level ``folder`` to ``dest_dir/folder``, all or nothing."""
    final = dest_dir / folder
    if final.exists():
        raise DataIntegrityError(
            f"{final} exists but is incomplete (a file that should be there is missing); "
            f"delete it and run again to re-extract {archive.name}"
        )
    dest_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".extract-{folder}.", dir=dest_dir))
    try:
        try:
            _unpack(archive, tmp)
        except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, OSError) as e:
            raise DataIntegrityError(
                f"could not extract {archive}: {type(e).__name__}: {e}. The archive is truncated or "
                "corrupt: delete it and run again. Nothing was extracted."
            ) from e
        if not (tmp / folder).is_dir():
            raise DataIntegrityError(f"{archive} does not contain the expected folder {folder}/")
        os.replace(tmp / folder, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _ensure_archive_dataset(
    name: str,
    root: Path,
    folder: str,
    is_complete: Callable[[Path], bool],
    ways: Sequence[str],
    download: bool,
) -> Path:
    """Find ``folder`` under ``root/name`` or ``root``; else extract a local or downloaded archive."""
    remote = ARCHIVES[name]
    base = root / name
    for cand in (base / folder, root / folder):
        if is_complete(cand):
            return cand
    looked = [base / folder, root / folder]
    for archive in (base / remote.filename, root / remote.filename):
        looked.append(archive)
        if archive.is_file():
            _verify(archive, remote.md5, remote.url)
            out = _extract(archive, base, folder)
            if not is_complete(out):
                raise DataIntegrityError(f"{archive} extracted to {out} but files are missing")
            return out
    if not download:
        raise _not_found(name, root, looked, ways, cause="download=False")
    archive = base / remote.filename
    try:
        _download(remote.url, archive, remote.md5)
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        raise _not_found(name, root, looked, ways, cause=f"{remote.url}: {e}") from e
    out = _extract(archive, base, folder)
    if not is_complete(out):
        raise DataIntegrityError(f"{archive} extracted to {out} but files are missing")
    return out


def _contiguous(
    raw: Sequence[int] | np.ndarray, names_by_raw: dict[int, str]
) -> tuple[torch.Tensor, list[str]]:
    """Map raw class ids to ``0..C-1`` in increasing raw-id order."""
    raw = np.asarray(raw, dtype=np.int64)
    ids = sorted(set(raw.tolist()))
    index = {r: i for i, r in enumerate(ids)}
    labels = torch.tensor([index[r] for r in raw.tolist()], dtype=torch.int64)
    return labels, [names_by_raw[r] for r in ids]


def _half_split(class_ids: Sequence[int], split: str) -> set[int]:
    """Zero-shot protocol: the first half of the class ids (in order) train, the rest test."""
    ids = sorted(set(class_ids))
    half = len(ids) // 2
    return set(ids[:half] if split == "train" else ids[half:])


# --------------------------------------------------------------------------------------------
# FashionMNIST (IDX files)
# --------------------------------------------------------------------------------------------

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (``.gz`` or raw) into a numpy array; DataIntegrityError if malformed."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError, zlib.error) as e:
        raise DataIntegrityError(
            f"{path}: cannot read ({type(e).__name__}: {e}); the file is truncated or corrupt"
        ) from e
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
    return [root / "fashionmnist", root / "FashionMNIST" / "raw", root, *FASHIONMNIST_SYSTEM_DIRS]


def _fmnist_complete(folder: Path) -> bool:
    return all(_idx_file(folder, stem) for pair in FASHIONMNIST_FILES.values() for stem, _ in pair)


_FMNIST_WAYS = (
    "put the four IDX files ({train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]) in <root>/fashionmnist/ "
    "(torchvision's <root>/FashionMNIST/raw/ is read too)",
    "install the Debian/Ubuntu package: sudo apt-get install dataset-fashion-mnist "
    "(files go to /usr/share/datasets/fashion-mnist/)",
    "connect to the internet and run again with download=True (the default): the files are fetched "
    f"from {FASHIONMNIST_MIRRORS[0]} and checked against their MD5",
)


def _fmnist_locate(root: Path, download: bool) -> Path:
    dirs = _fmnist_dirs(root)
    for d in dirs:
        if _fmnist_complete(d):
            return d
    if not download:
        raise _not_found("fashionmnist", root, dirs, _FMNIST_WAYS, cause="download=False")
    dest = root / "fashionmnist"
    errors = []
    for mirror in FASHIONMNIST_MIRRORS:
        try:
            for pair in FASHIONMNIST_FILES.values():
                for stem, md5 in pair:
                    if not (dest / f"{stem}.gz").is_file():
                        _download(f"{mirror}{stem}.gz", dest / f"{stem}.gz", md5)
            return dest
        except (urllib.error.URLError, OSError, TimeoutError) as e:
            errors.append(f"{mirror}: {e}")
    raise _not_found("fashionmnist", root, dirs, _FMNIST_WAYS, cause="; ".join(errors))


def _load_fashionmnist(root: Path, split: str, *, download: bool = True) -> Split:
    folder = _fmnist_locate(root, download)
    (img_stem, _), (lab_stem, _) = FASHIONMNIST_FILES[split]
    images = read_idx(_idx_file(folder, img_stem))
    labels = read_idx(_idx_file(folder, lab_stem))
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DataIntegrityError(
            f"{folder}: images {images.shape} and labels {labels.shape} do not match"
        )
    if labels.size and labels.max() >= len(FASHIONMNIST_CLASSES):
        raise DataIntegrityError(f"{folder}: label {labels.max()} out of range")
    return Split(
        "fashionmnist",
        split,
        labels=torch.from_numpy(labels.astype(np.int64)),
        class_names=list(FASHIONMNIST_CLASSES),
        images=torch.from_numpy(images.copy()).unsqueeze(1),
        options={"source": str(folder)},
    )


def _check_fashionmnist(root: Path, *, download: bool = True) -> None:
    _fmnist_locate(root, download)


# --------------------------------------------------------------------------------------------
# CIFAR-10 (python pickled batches)
# --------------------------------------------------------------------------------------------

_CIFAR_FOLDER = "cifar-10-batches-py"
_CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
_CIFAR_TEST = ("test_batch",)
_CIFAR_WAYS = (
    f"connect to the internet and run again with download=True (the default): {ARCHIVES['cifar10'].url} "
    "is fetched, checked (MD5) and extracted",
    f"download {ARCHIVES['cifar10'].filename} yourself and put it in <root>/cifar10/ (it is checked and extracted)",
    f"put the extracted {_CIFAR_FOLDER}/ folder in <root>/cifar10/ (or <root>/, where torchvision keeps it)",
)


def _cifar_complete(folder: Path) -> bool:
    return all((folder / f).is_file() for f in (*_CIFAR_TRAIN, *_CIFAR_TEST, "batches.meta"))


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as fh:
            return pickle.load(fh, encoding="latin1")
    except (pickle.UnpicklingError, EOFError, ValueError) as e:
        raise DataIntegrityError(
            f"{path}: cannot unpickle ({type(e).__name__}: {e}); truncated or corrupt"
        ) from e


def _load_cifar10(root: Path, split: str, *, download: bool = True) -> Split:
    folder = _ensure_archive_dataset(
        "cifar10", root, _CIFAR_FOLDER, _cifar_complete, _CIFAR_WAYS, download
    )
    names = list(_unpickle(folder / "batches.meta")["label_names"])
    data, labels = [], []
    for f in _CIFAR_TRAIN if split == "train" else _CIFAR_TEST:
        batch = _unpickle(folder / f)
        arr = np.asarray(batch["data"], dtype=np.uint8)
        if arr.ndim != 2 or arr.shape[1] != 3 * 32 * 32:
            raise DataIntegrityError(
                f"{folder / f}: data has shape {arr.shape}, expected [N, 3072]"
            )
        data.append(arr.reshape(-1, 3, 32, 32))
        labels.extend(batch["labels"])
    return Split(
        "cifar10",
        split,
        labels=torch.tensor(labels, dtype=torch.int64),
        class_names=names,
        images=torch.from_numpy(np.concatenate(data)),
        options={"source": str(folder)},
    )


def _check_cifar10(root: Path, *, download: bool = True) -> None:
    _ensure_archive_dataset("cifar10", root, _CIFAR_FOLDER, _cifar_complete, _CIFAR_WAYS, download)


# --------------------------------------------------------------------------------------------
# CUB-200-2011
# --------------------------------------------------------------------------------------------

_CUB_FOLDER = "CUB_200_2011"
_CUB_FILES = ("images.txt", "classes.txt", "image_class_labels.txt")
_CUB_WAYS = (
    f"connect to the internet and run again with download=True (the default): {ARCHIVES['cub200'].url} "
    "is fetched, checked (MD5) and extracted",
    f"download {ARCHIVES['cub200'].filename} yourself and put it in <root>/cub200/ (it is checked and extracted)",
    f"put the extracted {_CUB_FOLDER}/ folder (images/, images.txt, classes.txt, image_class_labels.txt) in <root>/cub200/",
)


def _cub_complete(folder: Path) -> bool:
    return all((folder / f).is_file() for f in _CUB_FILES) and (folder / "images").is_dir()


def _read_table(path: Path, ncols: int) -> list[list[str]]:
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split(maxsplit=ncols - 1)
        if len(parts) != ncols:
            raise DataIntegrityError(f"{path}:{n}: expected {ncols} fields, got {line!r}")
        rows.append(parts)
    return rows


def _load_cub200(root: Path, split: str, *, download: bool = True) -> Split:
    folder = _ensure_archive_dataset(
        "cub200", root, _CUB_FOLDER, _cub_complete, _CUB_WAYS, download
    )
    paths = {int(i): p for i, p in _read_table(folder / "images.txt", 2)}
    classes = {int(i): name.split(".", 1)[-1] for i, name in _read_table(folder / "classes.txt", 2)}
    img_class = {int(i): int(c) for i, c in _read_table(folder / "image_class_labels.txt", 2)}
    keep = _half_split(classes, split)
    ids = sorted(i for i, c in img_class.items() if c in keep)
    labels, names = _contiguous([img_class[i] for i in ids], classes)
    return Split(
        "cub200",
        split,
        labels=labels,
        class_names=names,
        paths=[folder / "images" / paths[i] for i in ids],
        options={"source": str(folder)},
    )


def _check_cub200(root: Path, *, download: bool = True) -> None:
    _ensure_archive_dataset("cub200", root, _CUB_FOLDER, _cub_complete, _CUB_WAYS, download)


# --------------------------------------------------------------------------------------------
# Tiny-ImageNet-200
# --------------------------------------------------------------------------------------------

_TINY_FOLDER = "tiny-imagenet-200"
_TINY_WAYS = (
    f"connect to the internet and run again with download=True (the default): {ARCHIVES['tinyimagenet'].url} "
    "is fetched, checked (MD5) and extracted",
    f"download {ARCHIVES['tinyimagenet'].filename} yourself and put it in <root>/tinyimagenet/ "
    "(it is checked and extracted)",
    f"put the extracted {_TINY_FOLDER}/ folder (wnids.txt, words.txt, train/, val/val_annotations.txt) "
    "in <root>/tinyimagenet/",
)


def _tiny_complete(folder: Path) -> bool:
    return (
        (folder / "wnids.txt").is_file()
        and (folder / "train").is_dir()
        and (folder / "val" / "val_annotations.txt").is_file()
    )


def _load_tinyimagenet(root: Path, split: str, *, download: bool = True) -> Split:
    folder = _ensure_archive_dataset(
        "tinyimagenet", root, _TINY_FOLDER, _tiny_complete, _TINY_WAYS, download
    )
    wnids = sorted({w.strip() for w in (folder / "wnids.txt").read_text().split() if w.strip()})
    words: dict[str, str] = {}
    if (folder / "words.txt").is_file():
        for line in (folder / "words.txt").read_text(encoding="utf-8").splitlines():
            wnid, _, text = line.partition("\t")
            words[wnid.strip()] = text.strip()
    index = {w: i for i, w in enumerate(wnids)}
    paths: list[Path] = []
    raw: list[int] = []
    if split == "train":
        for w in wnids:
            img_dir = folder / "train" / w / "images"
            if not img_dir.is_dir():
                raise DataIntegrityError(f"{img_dir} is missing (wnid {w} is listed in wnids.txt)")
            files = sorted(
                p for p in img_dir.iterdir() if p.suffix.lower() in (".jpeg", ".jpg", ".png")
            )
            paths += files
            raw += [index[w]] * len(files)
    else:
        for n, line in enumerate(
            (folder / "val" / "val_annotations.txt").read_text().splitlines(), 1
        ):
            if not line.strip():
                continue
            parts = line.split("\t")
            if len(parts) < 2 or parts[1] not in index:
                raise DataIntegrityError(f"{folder}/val/val_annotations.txt:{n}: bad line {line!r}")
            paths.append(folder / "val" / "images" / parts[0])
            raw.append(index[parts[1]])
    names = {i: words.get(w, w) for w, i in index.items()}
    labels, class_names = _contiguous(raw, names)
    return Split(
        "tinyimagenet",
        split,
        labels=labels,
        class_names=class_names,
        paths=paths,
        options={"source": str(folder)},
    )


def _check_tinyimagenet(root: Path, *, download: bool = True) -> None:
    _ensure_archive_dataset(
        "tinyimagenet", root, _TINY_FOLDER, _tiny_complete, _TINY_WAYS, download
    )


# --------------------------------------------------------------------------------------------
# Stanford Cars (Cars196): local layouts only, the official host is gone
# --------------------------------------------------------------------------------------------

_CARS_WAYS = (
    "Layout A (all-in-one annotation file, as used by most metric-learning code): "
    "<root>/cars196/cars_annos.mat and <root>/cars196/car_ims/000001.jpg ... 016185.jpg",
    "Layout B (devkit, as torchvision.datasets.StanfordCars expects): <root>/cars196/devkit/cars_meta.mat, "
    "<root>/cars196/devkit/cars_train_annos.mat, <root>/cars196/cars_test_annos_withlabels.mat "
    "(or in devkit/), <root>/cars196/cars_train/*.jpg and <root>/cars196/cars_test/*.jpg "
    "(Kaggle's nested cars_train/cars_train/ works too). <root>/stanford_cars/ (torchvision's folder) "
    "is read as well.",
    "The official URLs (ai.stanford.edu/~jkrause/car196/...) are offline, so nothing is downloaded: "
    "copies are on Kaggle ('stanford-cars-dataset') and in pytorch/vision issue #7545.",
)


def _cars_bases(root: Path) -> list[Path]:
    return [root / "cars196", root / "stanford_cars", root / "cars196" / "stanford_cars", root]


def _nested(folder: Path) -> Path:
    inner = folder / folder.name
    return inner if inner.is_dir() else folder


def _cars_layout(root: Path) -> tuple[str, Path]:
    for base in _cars_bases(root):
        if (base / "cars_annos.mat").is_file() and (base / "car_ims").is_dir():
            return "annos", base
        test_annos = [
            base / "cars_test_annos_withlabels.mat",
            base / "devkit" / "cars_test_annos_withlabels.mat",
        ]
        if (
            (base / "devkit" / "cars_meta.mat").is_file()
            and (base / "devkit" / "cars_train_annos.mat").is_file()
            and any(p.is_file() for p in test_annos)
            and (base / "cars_train").is_dir()
            and (base / "cars_test").is_dir()
        ):
            return "devkit", base
    raise _not_found("cars196", root, _cars_bases(root), _CARS_WAYS)


def _mat_names(arr: Any) -> list[str]:
    return [str(np.asarray(x).squeeze()) for x in np.atleast_1d(arr)]


def _load_cars196(root: Path, split: str, *, download: bool = True) -> Split:
    from scipy.io import loadmat

    layout, base = _cars_layout(root)
    entries: list[tuple[Path, int]] = []
    if layout == "annos":
        mat = loadmat(base / "cars_annos.mat", squeeze_me=True)
        class_names = _mat_names(mat["class_names"])
        for a in np.atleast_1d(mat["annotations"]):
            entries.append((base / str(a["relative_im_path"]), int(a["class"])))
    else:
        class_names = _mat_names(
            loadmat(base / "devkit" / "cars_meta.mat", squeeze_me=True)["class_names"]
        )
        test_mat = base / "cars_test_annos_withlabels.mat"
        if not test_mat.is_file():
            test_mat = base / "devkit" / "cars_test_annos_withlabels.mat"
        for mat_path, img_dir in (
            (base / "devkit" / "cars_train_annos.mat", _nested(base / "cars_train")),
            (test_mat, _nested(base / "cars_test")),
        ):
            for a in np.atleast_1d(loadmat(mat_path, squeeze_me=True)["annotations"]):
                entries.append((img_dir / str(a["fname"]), int(a["class"])))
    names_by_id = {i + 1: n for i, n in enumerate(class_names)}
    if any(c not in names_by_id for _, c in entries):
        raise DataIntegrityError(f"{base}: a class id is outside 1..{len(class_names)}")
    keep = _half_split(names_by_id, split)
    chosen = sorted((e for e in entries if e[1] in keep), key=lambda e: str(e[0]))
    labels, names = _contiguous([c for _, c in chosen], names_by_id)
    return Split(
        "cars196",
        split,
        labels=labels,
        class_names=names,
        paths=[p for p, _ in chosen],
        options={"source": str(base), "layout": layout},
    )


def _check_cars196(root: Path, *, download: bool = True) -> None:
    _cars_layout(root)


# --------------------------------------------------------------------------------------------
# Embedded sets: digits (sklearn) and synthetic
# --------------------------------------------------------------------------------------------


def _load_digits(
    root: Path,
    split: str,
    *,
    class_split: str = "shared",
    test_fraction: float = 0.5,
    seed: int = 0,
) -> Split:
    """sklearn's bundled 8x8 digits (1,797 images), rescaled from 0..16 to uint8 0..255.

    ``class_split="shared"``: all ten digits in both splits, a stratified random split with
    ``test_fraction`` of each class in test (``seed``). ``"disjoint"``: digits 0-4 train, 5-9 test.
    """
    from sklearn.datasets import load_digits

    d = load_digits()
    images = np.rint(d.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    target = d.target.astype(np.int64)
    if class_split == "shared":
        rng = np.random.default_rng(seed)
        test = np.zeros(len(target), dtype=bool)
        for c in np.unique(target):
            idx = np.flatnonzero(target == c)
            k = int(round(test_fraction * len(idx)))
            test[rng.choice(idx, size=k, replace=False)] = True
        chosen = np.flatnonzero(test if split == "test" else ~test)
    elif class_split == "disjoint":
        keep = _half_split(range(10), split)
        chosen = np.flatnonzero(np.isin(target, sorted(keep)))
    else:
        raise ValueError(f"class_split must be 'shared' or 'disjoint', got {class_split!r}")
    labels, names = _contiguous(target[chosen], {i: str(i) for i in range(10)})
    return Split(
        "digits",
        split,
        labels=labels,
        class_names=names,
        images=torch.from_numpy(images[chosen]).unsqueeze(1),
        options={"class_split": class_split, "test_fraction": test_fraction, "seed": seed},
    )


def _load_synthetic(
    root: Path,
    split: str,
    *,
    n_superclasses: int = 8,
    n_fine_per_super: int = 8,
    n_per_class: int = 40,
    dim: int = 32,
    super_spread: float = 1.0,
    fine_spread: float = 0.35,
    noise: float = 0.25,
    class_split: str = "disjoint",
    seed: int = 0,
) -> Split:
    """Gaussian clusters with two levels of granularity; the "images" are feature vectors.

    Superclass centres ``mu_s ~ N(0, super_spread^2 / dim I)``, fine-class centres
    ``mu_sf = mu_s + N(0, fine_spread^2 / dim I)``, samples ``x = mu_sf + N(0, noise^2 / dim I)``:
    the three spreads are the typical norms of the three offsets, whatever ``dim``. A small
    ``fine_spread / noise`` makes the fine classes hard to tell apart (fine-grained), a large
    ``super_spread / fine_spread`` makes the superclasses obvious.

    ``class_split="disjoint"`` (default, like the Cars196/CUB zero-shot protocol): within every
    superclass the first ``ceil(F/2)`` fine classes are train, the rest test. ``"shared"``: every
    class in both splits, independent samples. Centres depend only on ``seed``; samples on
    ``seed`` and the split.
    """
    S, F = int(n_superclasses), int(n_fine_per_super)
    if S < 1 or F < 1 or n_per_class < 1 or dim < 1:
        raise ValueError("n_superclasses, n_fine_per_super, n_per_class and dim must be >= 1")
    if class_split not in ("disjoint", "shared"):
        raise ValueError(f"class_split must be 'disjoint' or 'shared', got {class_split!r}")
    if class_split == "disjoint" and F < 2:
        raise ValueError("class_split='disjoint' needs n_fine_per_super >= 2")
    crng = np.random.default_rng([seed, 0])
    supers = crng.normal(0.0, super_spread / math.sqrt(dim), size=(S, dim))
    fine = supers[:, None, :] + crng.normal(0.0, fine_spread / math.sqrt(dim), size=(S, F, dim))
    n_train_fine = math.ceil(F / 2)
    if class_split == "shared":
        fine_ids = list(range(F))
    else:
        fine_ids = list(range(n_train_fine)) if split == "train" else list(range(n_train_fine, F))
    srng = np.random.default_rng([seed, 1 if split == "train" else 2])
    xs, fine_lab, super_lab, names = [], [], [], []
    for s in range(S):
        for f in fine_ids:
            c = len(names)
            names.append(f"super{s:02d}/fine{f:02d}")
            xs.append(
                fine[s, f] + srng.normal(0.0, noise / math.sqrt(dim), size=(n_per_class, dim))
            )
            fine_lab += [c] * n_per_class
            super_lab += [s] * n_per_class
    return Split(
        "synthetic",
        split,
        labels=torch.tensor(fine_lab, dtype=torch.int64),
        class_names=names,
        images=torch.from_numpy(np.concatenate(xs).astype(np.float32)),
        coarse_labels=torch.tensor(super_lab, dtype=torch.int64),
        options={
            "n_superclasses": S, "n_fine_per_super": F, "n_per_class": n_per_class, "dim": dim,
            "super_spread": super_spread, "fine_spread": fine_spread, "noise": noise,
            "class_split": class_split, "seed": seed,
        },
    )  # fmt: skip


def _check_embedded(root: Path, **_: Any) -> None:
    return None


_REGISTRY: dict[str, _DatasetSpec] = {
    "cifar10": _DatasetSpec(_load_cifar10, _check_cifar10),
    "fashionmnist": _DatasetSpec(_load_fashionmnist, _check_fashionmnist),
    "cars196": _DatasetSpec(_load_cars196, _check_cars196),
    "cub200": _DatasetSpec(_load_cub200, _check_cub200),
    "tinyimagenet": _DatasetSpec(_load_tinyimagenet, _check_tinyimagenet),
    "digits": _DatasetSpec(_load_digits, _check_embedded),
    "synthetic": _DatasetSpec(_load_synthetic, _check_embedded),
}
assert tuple(_REGISTRY) == DATASETS
