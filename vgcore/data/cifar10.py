"""CIFAR-10 (Krizhevsky 2009): the official python pickled batches.

The batches are pickles, and an unrestricted ``pickle.load`` runs whatever a crafted file asks for.
Each file is therefore checked against its official MD5 before it is read, and read with an
unpickler that admits only what the official files contain (dicts, lists, strings, numbers and the
numpy array reconstruction); anything else, a function call above all, is refused before it runs.
"""

from __future__ import annotations

import hashlib
import io
import pickle
from pathlib import Path

import numpy as np
import torch

from vgcore.data.base import (
    DataIntegrityError,
    DatasetSpec,
    Split,
)
from vgcore.data.fetch import Remote, archive_dataset

REMOTE = Remote(
    "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    "cifar-10-python.tar.gz",
    "c58f30108f718f92721af3b95e74349a",
)

MD5: dict[str, str] = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
    "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
}
"""MD5 of each file of the official archive (the values torchvision's CIFAR10 checks too)."""

_CIFAR_FOLDER = "cifar-10-batches-py"
_CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
_CIFAR_TEST = ("test_batch",)


def _cifar_complete(folder: Path) -> bool:
    return all((folder / f).is_file() for f in (*_CIFAR_TRAIN, *_CIFAR_TEST, "batches.meta"))


_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
}
"""The only globals the official batches refer to: a numpy array and its dtype (and ``_codecs.encode``,
which Python 3 uses for bytes in protocol-2 pickles, so batches re-pickled by Python 3 load too)."""


class _BatchUnpickler(pickle.Unpickler):
    """Admits only :data:`_ALLOWED`; any other global (a function to call, a class to build) is refused."""

    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(
                f"refused to load {module}.{name}: the official CIFAR-10 batches hold only dicts, lists, "
                "strings, numbers and numpy arrays")
        if module == "_codecs":
            import _codecs

            return _codecs.encode
        if name != "_reconstruct":
            return getattr(np, name)
        try:  # numpy 2 moved numpy.core to numpy._core
            from numpy._core.multiarray import _reconstruct
        except ImportError:  # pragma: no cover (numpy 1)
            from numpy.core.multiarray import _reconstruct
        return _reconstruct


def _unpickle(path: Path) -> dict:
    data = path.read_bytes()
    expected = MD5.get(path.name)
    if expected is not None and (got := hashlib.md5(data, usedforsecurity=False).hexdigest()) != expected:
        raise DataIntegrityError(
            f"{path}: MD5 {got}, not the official {expected}: the file is truncated or corrupt, or is not the "
            "official CIFAR-10. Delete the folder and run again (the archive is downloaded and checked)."
        )
    try:
        return _BatchUnpickler(io.BytesIO(data), encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as e:
        raise DataIntegrityError(
            f"{path}: cannot unpickle ({type(e).__name__}: {e}); truncated, corrupt or not a CIFAR-10 batch"
        ) from e


def locate(root: Path, download: bool) -> Path:
    return archive_dataset("cifar10", root, REMOTE, _CIFAR_FOLDER, _cifar_complete, download,
                           "data_batch_1..5, test_batch, batches.meta; torchvision keeps it in <root>/")


def read(folder: Path, split: str) -> Split:
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



SPEC = DatasetSpec("cifar10", read=read, locate=locate)
