"""Datasets: the paper's five image datasets, three embedded offline sets and your own file, loaded by name.

``load_dataset(name, root, split)`` returns a :class:`Split`: integer labels (contiguous
``0..C-1`` within the split), class names, and the images, which are either held in memory
(FashionMNIST, CIFAR-10, digits; ``uint8 [N, C, H, W]``), listed as files and opened in batches
(Cars196, CUB-200-2011, Tiny-ImageNet), or already feature vectors (``synthetic`` and
``synthetic_super``, its train split labelled by superclass; ``float32 [N, D]``), as is ``custom``: your own features and labels from a ``.npz`` file
(:mod:`vgcore.data.custom`).

Data root: the ``root`` argument, else ``$VGCORE_DATA``, else ``./data``. Each dataset lives
in ``<root>/<name>/`` (the layouts torchvision and the official archives use directly under
``<root>`` are accepted too). The split protocol of every dataset is in PROTOCOL.md,
section "Datasets and splits".

Real datasets are downloaded (with checksum verification) when missing, except Stanford Cars,
whose official host is gone: there, the error says exactly where to put the files. When data is
missing and cannot be fetched, :class:`DataNotFoundError` names the dataset, where it looked and
every way to get it. A corrupt or truncated archive raises :class:`DataIntegrityError`.

One file per dataset, each declaring a :class:`DatasetSpec`; names are registered in
:mod:`vgcore.registry`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from vgcore import registry
from vgcore.data.base import (
    SPLITS,
    DataIntegrityError,
    DataNotFoundError,
    DatasetSpec,
    Split,
    canonical_split,
)
from vgcore.data.fetch import Remote

__all__ = [
    "DATASETS",
    "SPLITS",
    "DataIntegrityError",
    "DataNotFoundError",
    "DatasetSpec",
    "Remote",
    "Split",
    "canonical_split",
    "check_available",
    "content_options",
    "dataset_spec",
    "default_root",
    "has_pictures",
    "load_dataset",
    "pin_options",
]

DATASETS: tuple[str, ...] = registry.names("dataset")


def default_root() -> Path:
    """``$VGCORE_DATA`` if set, else ``./data``."""
    return Path(os.environ.get("VGCORE_DATA") or "data").expanduser()


def dataset_spec(name: str) -> DatasetSpec:
    """The :class:`DatasetSpec` of a registered dataset."""
    return registry.load("dataset", name)


def content_options(name: str, **options: Any) -> dict[str, Any]:
    """The options that define a dataset's content, defaults filled in (the feature-cache key).

    ``download`` is accepted and left out; any other undeclared option raises ``ValueError``.
    """
    options.pop("download", None)
    return dataset_spec(name).options(**options)


def pin_options(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """The options a config records for dataset ``name``: unchanged, except for a dataset that is a
    user's file (a spec with ``pin``), whose file is checked and its content digest added."""
    spec = dataset_spec(name)
    return dict(options) if spec.pin is None else spec.pin(dict(options))


def has_pictures(name: str) -> bool:
    """Whether dataset ``name``'s samples are images a reader can look at (its spec's ``pictures``)."""
    return dataset_spec(name).pictures


def load_dataset(name: str, root: str | os.PathLike | None = None, split: str = "train", *,
                 download: bool = True, **options: Any) -> Split:
    """Load one split of a registered dataset (downloading it first when allowed and needed).

    ``options`` are the dataset's content options (see :func:`content_options`).
    """
    spec = dataset_spec(name)
    split = canonical_split(split)
    content = spec.options(**options)
    location = spec.locate(_root(root), download) if spec.locate else None
    return spec.read(location, split, **content)


def check_available(name: str, root: str | os.PathLike | None = None, *, download: bool = True) -> None:
    """Make sure ``name`` can be loaded, without loading it; raise DataNotFoundError if not.

    Cheap when the data is on disk (only file existence is checked). When it is missing and
    ``download`` is allowed (the default), this is the step that fetches and extracts it.
    """
    spec = dataset_spec(name)
    if spec.locate:
        spec.locate(_root(root), download)


def _root(root: str | os.PathLike | None) -> Path:
    return Path(root).expanduser() if root is not None else default_root()
