"""``custom``: your own precomputed features (or embeddings) and labels, from one file.

The file is a ``.npz`` written with ``np.savez(path, features=X, labels=y)``:

- ``features``: [N, D] floating-point feature vectors (required);
- ``labels``: [N] class labels, integers or strings (required);
- ``superclasses``: [N] each sample's superclass, integers or strings (optional);
- ``split``: [N] ``"train"`` / ``"test"`` per sample (optional: your own split; without it the
  split comes from the ``class_split`` option).

A ``.npy`` file holds the features alone; its labels then come from ``labels_path`` (a ``.npy``
of [N] labels). Every problem with a file (missing, truncated, no labels, a wrong key, mismatched
lengths, one class, NaN rows, a bad split, an array too large) is a :class:`FeatureFileError`
naming the file, the key and the fix, raised when a config names the file (:func:`pin`), before
anything is trained.

Each array's size (shape x dtype) is read from its header before it is loaded: one over
``$VGCORE_MAX_ARRAY_GB`` gigabytes (default :data:`MAX_ARRAY_GB`) is refused, naming the key and
its size.
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vgcore.data.base import DatasetSpec, Split
from vgcore.errors import UserError

FEATURES, LABELS, SUPERCLASSES, SPLIT = "features", "labels", "superclasses", "split"
KEYS = (FEATURES, LABELS, SUPERCLASSES, SPLIT)
CLASS_SPLITS = ("shared", "disjoint")
MAX_ARRAY_GB = 8.0
"""The largest array of a features file loaded, in GB (1e9 bytes), unless ``$VGCORE_MAX_ARRAY_GB`` says otherwise."""


class FeatureFileError(UserError, ValueError):
    """A features file that cannot be used; the message names the file, the key and the fix."""


@dataclass(frozen=True)
class FeatureFile:
    """The checked content of a features file (NumPy arrays, file order).

    ``labels`` and ``superclasses`` are mapped to ``0..C-1`` in sorted order of the original values,
    which ``class_names`` / ``superclass_names`` keep; ``is_test`` is the file's own split (None when
    it has none). ``sha256`` covers the file (and the labels file, if separate).
    """

    path: Path
    features: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    superclasses: np.ndarray | None
    superclass_names: list[str] | None
    is_test: np.ndarray | None
    sha256: str

    def __len__(self) -> int:
        return len(self.labels)


def load_file(path: str | os.PathLike, labels_path: str | os.PathLike | None = None) -> FeatureFile:
    """Read and check a features file (cached per path, size, modification time and array limit)."""
    path = _existing(path, "features file")
    labels_path = None if labels_path is None else _existing(labels_path, "labels file")
    stamp = [(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in (path, labels_path) if p is not None]
    return _load(tuple(stamp), _max_array_bytes())


def _max_array_bytes() -> int:
    """The limit on one array, in bytes: ``$VGCORE_MAX_ARRAY_GB`` or :data:`MAX_ARRAY_GB` gigabytes."""
    value = os.environ.get("VGCORE_MAX_ARRAY_GB", str(MAX_ARRAY_GB))
    try:
        limit = float(value)
    except ValueError:
        limit = float("nan")
    if not limit > 0:
        raise FeatureFileError(f"VGCORE_MAX_ARRAY_GB={value!r} is not a number of GB above 0; set it to the largest "
                               f"array to load, e.g. VGCORE_MAX_ARRAY_GB=16 (default {MAX_ARRAY_GB:g})")
    return int(limit * 1e9)


@functools.lru_cache(maxsize=8)
def _load(stamp: tuple, max_bytes: int) -> FeatureFile:
    path = Path(stamp[0][0])
    labels_path = Path(stamp[1][0]) if len(stamp) > 1 else None
    arrays = _arrays(path, labels_path, max_bytes)
    name = path.name
    x = arrays[FEATURES]
    if x.ndim != 2 or x.dtype.kind not in "fiu" or x.shape[0] == 0 or x.shape[1] == 0:
        raise FeatureFileError(f"{name}: '{FEATURES}' must be a non-empty 2-D numeric array [samples, dims], got "
                               f"{x.dtype} of shape {x.shape}; save X.reshape(len(X), -1).astype('float32')")
    x = x.astype(np.float32, copy=False)
    bad = np.flatnonzero(~np.isfinite(x).all(axis=1))
    if bad.size:
        raise FeatureFileError(f"{name}: '{FEATURES}' has {bad.size} row(s) with NaN or inf (first: row {bad[0]}); "
                               "drop or fix those rows (and their labels) and save the file again")
    n = x.shape[0]
    labels, class_names = _codes(arrays[LABELS], LABELS, name, n)
    if len(class_names) < 2:
        raise FeatureFileError(f"{name}: '{LABELS}' holds a single class ({class_names[0]!r}); metric learning "
                               "compares classes: give at least 2")
    superclasses = superclass_names = None
    if SUPERCLASSES in arrays:
        superclasses, superclass_names = _codes(arrays[SUPERCLASSES], SUPERCLASSES, name, n)
        mixed = [c for c in range(len(class_names)) if len(np.unique(superclasses[labels == c])) > 1]
        if mixed:
            raise FeatureFileError(f"{name}: class {class_names[mixed[0]]!r} has samples in several "
                                   f"'{SUPERCLASSES}'; each class belongs to one superclass")
    is_test = None
    if SPLIT in arrays:
        split = np.asarray(arrays[SPLIT]).astype(str)
        if split.shape != (n,) or not np.isin(split, ("train", "test")).all():
            found = sorted(set(np.unique(split).tolist()) - {"train", "test"})[:3]
            raise FeatureFileError(f"{name}: '{SPLIT}' must give 'train' or 'test' for each of the {n} samples "
                                   f"(found shape {split.shape}, other values {found}); save split=np.where(is_test, "
                                   "'test', 'train')")
        is_test = split == "test"
    return FeatureFile(path, x, labels, class_names, superclasses, superclass_names, is_test, _digest(path, labels_path))


def _existing(path: str | os.PathLike, what: str) -> Path:
    if path is None or str(path) == "":
        raise FeatureFileError("no features file given: pass --features my.npz (or dataset_options.path=my.npz); "
                               "write it with np.savez('my.npz', features=X, labels=y)")
    p = Path(path).expanduser().resolve()
    if not p.is_file():
        raise FeatureFileError(f"{what} {path} not found (looked at {p}); give the path of an existing .npz or .npy")
    if p.suffix not in (".npz", ".npy"):
        raise FeatureFileError(f"{what} {p.name} is not a .npz or .npy file; save it with np.savez(...) or np.save(...)")
    return p


def _arrays(path: Path, labels_path: Path | None, max_bytes: int) -> dict[str, np.ndarray]:
    name = path.name
    try:
        _check_sizes(path, FEATURES, max_bytes)
        if labels_path is not None:
            _check_sizes(labels_path, LABELS, max_bytes)
        if path.suffix == ".npy":
            arrays = {FEATURES: np.load(path, allow_pickle=False)}
            if labels_path is None:
                raise FeatureFileError(f"{name} holds the features alone and no labels were given: pass the labels "
                                       "file as labels_path (--labels labels.npy), or save one .npz with "
                                       "np.savez('my.npz', features=X, labels=y)")
        else:
            with np.load(path, allow_pickle=False) as npz:
                arrays = {key: npz[key] for key in npz.files}
            if labels_path is not None:
                raise FeatureFileError(f"{name} is a .npz: its labels are its '{LABELS}' array; drop labels_path")
            unknown = sorted(set(arrays) - set(KEYS))
            for key in (FEATURES, LABELS):
                if key not in arrays:
                    raise FeatureFileError(
                        f"{name} has no array '{key}' (it has: {', '.join(map(repr, sorted(arrays))) or 'none'}); "
                        f"save the file as np.savez('{name}', features=X, labels=y[, superclasses=..., split=...])")
            if unknown:
                raise FeatureFileError(f"{name} has array(s) {unknown} that vgcore does not read; it reads "
                                       f"{', '.join(KEYS)}: rename or drop the others")
        if labels_path is not None:
            arrays[LABELS] = np.load(labels_path, allow_pickle=False)
    except FeatureFileError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as err:
        raise FeatureFileError(f"{name} could not be read as a NumPy file ({err}): it is truncated or corrupt, or not "
                               "written by NumPy; write it again with np.savez or np.save (object arrays are not "
                               "read: store numbers or strings)") from None
    except MemoryError:
        raise FeatureFileError(f"{name} does not fit in memory; save fewer rows or dimensions (or float16 features), "
                               "or load it on a machine with more memory") from None
    return arrays


def _check_sizes(path: Path, key: str, max_bytes: int) -> None:
    """Refuse an array of the file at `path` (a .npy: the array `key`) whose header says it takes more
    than `max_bytes`, before it is loaded."""
    if path.suffix == ".npy":
        with open(path, "rb") as fh:
            headers = {key: _header(fh)}
    else:
        with zipfile.ZipFile(path) as z:
            headers = {}
            for info in z.infolist():
                with z.open(info) as fh:
                    headers[info.filename.removesuffix(".npy")] = _header(fh)
    for key, header in headers.items():
        if header is None:
            continue  # not an array: np.load refuses it
        shape, dtype = header
        size = math.prod(shape) * dtype.itemsize
        if size > max_bytes:
            raise FeatureFileError(
                f"{path.name}: '{key}' is {' x '.join(map(str, shape))} {dtype} ({_size(size)}), over the limit of "
                f"{_size(max_bytes)}: save fewer rows or dimensions, or raise the limit with VGCORE_MAX_ARRAY_GB="
                f"{math.ceil(size / 1e7) / 100:g} (if this machine has the memory)")


def _header(fh) -> tuple[tuple[int, ...], np.dtype] | None:
    """The shape and dtype a .npy header gives (the array is not read); None when `fh` holds no .npy."""
    magic = fh.read(8)
    if magic[:6] != np.lib.format.MAGIC_PREFIX:
        return None
    read = np.lib.format.read_array_header_1_0 if magic[6] == 1 else np.lib.format.read_array_header_2_0
    shape, _, dtype = read(fh)
    return shape, dtype


def _size(n: float) -> str:
    """Bytes in words: 4.61 kB, 8 GB, 4 TB."""
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{int(n)} bytes"


def _codes(values: np.ndarray, key: str, name: str, n: int) -> tuple[np.ndarray, list[str]]:
    """Integer or string values mapped to 0..C-1 in sorted order, with the original values as names."""
    values = np.asarray(values)
    if values.ndim != 1 or values.shape[0] != n:
        raise FeatureFileError(f"{name}: '{key}' has shape {values.shape} but '{FEATURES}' has {n} rows; give one "
                               f"{key[:-1]} per row")
    if values.dtype.kind == "f" and np.all(np.isfinite(values)) and np.all(values == np.round(values)):
        values = values.astype(np.int64)  # whole numbers stored as floats
    if values.dtype.kind not in "iuUSb":
        raise FeatureFileError(f"{name}: '{key}' must hold integers or strings, got {values.dtype}; save "
                               f"{key}.astype(int) or the class names")
    uniques, codes = np.unique(values, return_inverse=True)
    return codes.astype(np.int64), [str(u) for u in uniques.tolist()]


def _digest(*paths: Path | None) -> str:
    h = hashlib.sha256()
    for p in paths:
        if p is not None:
            with open(p, "rb") as fh:
                while block := fh.read(1 << 20):
                    h.update(block)
    return h.hexdigest()[:16]


def heldout_mask(file: FeatureFile, class_split: str, test_fraction: float, seed: int) -> np.ndarray:
    """Which samples are test: the file's own ``split`` if it has one, else

    ``"shared"``: every class in both splits, ``test_fraction`` of each class's samples (rounded)
    drawn for test with ``seed``; ``"disjoint"`` (zero-shot, like Cars196/CUB): the first half of
    the classes (sorted) train, the rest test.
    """
    if class_split not in CLASS_SPLITS:
        raise ValueError(f"class_split must be one of {CLASS_SPLITS}, got {class_split!r}")
    if not (isinstance(test_fraction, int | float) and 0 < test_fraction < 1):
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction!r}")
    if file.is_test is not None:
        return file.is_test
    if class_split == "disjoint":
        return file.labels >= (len(file.class_names) // 2)
    rng = np.random.default_rng(seed)
    test = np.zeros(len(file), dtype=bool)
    for c in range(len(file.class_names)):
        idx = np.flatnonzero(file.labels == c)
        test[rng.choice(idx, size=int(round(test_fraction * len(idx))), replace=False)] = True
    return test


def _check_split(file: FeatureFile, test: np.ndarray, how: str) -> None:
    for split, rows in (("train", ~test), ("test", test)):
        counts = np.bincount(file.labels[rows], minlength=len(file.class_names))
        if (counts > 0).sum() < 2 or counts.max() < 2:
            raise FeatureFileError(
                f"{file.path.name}: the {split} split ({how}) has {int(rows.sum())} samples in "
                f"{int((counts > 0).sum())} class(es); each split needs 2 classes and a class with 2 samples: "
                "add samples, or change the split (its 'split' array, or class_split / test_fraction)")


def read(location: None, split: str, *, path: str | None, sha256: str | None, labels_path: str | None,
         class_split: str, test_fraction: float, seed: int) -> Split:
    """One split of the file: its feature vectors as in-memory ``float32 [N, D]`` "images" (the
    ``pixels`` backbone standardises them), contiguous labels, superclasses as ``coarse_labels``."""
    file = load_file(path, labels_path)
    if sha256 is not None and sha256 != file.sha256:
        raise FeatureFileError(f"{file.path.name} changed since this config was made (sha256 {sha256}, now "
                               f"{file.sha256}); make the config again (--features {file.path}) to use the new content")
    test = heldout_mask(file, class_split, test_fraction, seed)
    rows = np.flatnonzero(test if split == "test" else ~test)
    present = np.unique(file.labels[rows])
    remap = np.full(len(file.class_names), -1, dtype=np.int64)
    remap[present] = np.arange(len(present))
    return Split(
        "custom",
        split,
        labels=torch.from_numpy(remap[file.labels[rows]]),
        class_names=[file.class_names[c] for c in present],
        images=torch.from_numpy(np.ascontiguousarray(file.features[rows])),
        coarse_labels=None if file.superclasses is None else torch.from_numpy(file.superclasses[rows]),
        options={"path": str(file.path), "sha256": file.sha256, "labels_path": labels_path,
                 "class_split": class_split, "test_fraction": test_fraction, "seed": seed},
    )


def pin(options: dict) -> dict:
    """The options with the file made absolute and its content pinned (``sha256``), after checking
    the file and both splits: what a config records, so a changed file gives a new config hash
    (its runs rerun) and a new feature-cache key."""
    content = {**SPEC.content, **options}
    file = load_file(content["path"], content["labels_path"])
    if options.get("sha256") not in (None, file.sha256):
        raise FeatureFileError(f"{file.path.name} changed since this config was made (sha256 {options['sha256']}, "
                               f"now {file.sha256}); drop dataset_options.sha256 to use the new content")
    how = "the file's 'split'" if file.is_test is not None else f"class_split={content['class_split']!r}"
    _check_split(file, heldout_mask(file, content["class_split"], content["test_fraction"], content["seed"]), how)
    pinned = {**options, "path": str(file.path), "sha256": file.sha256}
    if content["labels_path"] is not None:
        pinned["labels_path"] = str(Path(content["labels_path"]).expanduser().resolve())
    return pinned


SPEC = DatasetSpec("custom", read=read, pin=pin, pictures=False, content={
    "path": None, "sha256": None, "labels_path": None, "class_split": "shared", "test_fraction": 0.5, "seed": 0,
})  # fmt: skip
