"""CIFAR-10 (Krizhevsky 2009): the official python pickled batches."""

from __future__ import annotations

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

_CIFAR_FOLDER = "cifar-10-batches-py"
_CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
_CIFAR_TEST = ("test_batch",)


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
