"""What every dataset shares: the :class:`Split` it returns, its :class:`DatasetSpec`, errors, helpers.

A dataset is one file in this package declaring ``SPEC = DatasetSpec(...)``: how to find its files
(``locate``, which also fetches them when allowed), how to read one split (``read``), and which
options change its content (``content``, with their defaults: exactly these enter the feature-cache
key, so adding any other keyword to a reader never changes a key).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vgcore.errors import UserError

SPLITS: tuple[str, ...] = ("train", "test")


class DataNotFoundError(UserError, FileNotFoundError):
    """The dataset is not on disk and could not be fetched. The message says how to get it."""


class DataIntegrityError(UserError, ValueError):
    """A dataset file exists but is corrupt: wrong checksum, truncated archive, bad header."""


def canonical_split(split: str) -> str:
    """``"train"`` or ``"test"``; ``"val"`` (Tiny-ImageNet's word) is our test split everywhere."""
    if split == "val":
        split = "test"
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return split


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset: how to find it, read a split of it, and which options define its content.

    ``read(location, split, **content)`` returns a :class:`Split`; ``location`` is what
    ``locate(root, download)`` returned (None for sets generated in memory or named by an option,
    which have no ``locate``). ``content`` maps each content option to its default. ``coarse``: its
    splits carry superclass labels (``Split.coarse_labels``), which the evaluation then uses. ``pin``
    (optional, for a dataset that is a user's file): given the options a config names, returns them
    with what identifies the content added (the file's digest), after checking it; a config records
    the pinned options, so a changed file is a changed config. ``pictures``: its samples are images a
    reader can look at (False for generated vectors and users' feature files): galleries show them, and
    a 2-D picture of its classes is drawn.
    """

    name: str
    read: Callable[..., Split]
    locate: Callable[[Path, bool], Any] | None = None
    content: Mapping[str, Any] = field(default_factory=dict)
    coarse: bool = False
    pin: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    pictures: bool = True

    def options(self, **options: Any) -> dict[str, Any]:
        """The content options with defaults filled in, sorted by name; ValueError for an unknown one."""
        unknown = sorted(set(options) - set(self.content))
        if unknown:
            takes = ", ".join(self.content) or "no content options"
            raise ValueError(f"unknown option(s) {unknown} for dataset {self.name!r}; it takes: {takes} "
                             "(and download=True|False)")
        return {k: options.get(k, default) for k, default in sorted(self.content.items())}


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


def not_found(
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


def contiguous(
    raw: Sequence[int] | np.ndarray, names_by_raw: dict[int, str]
) -> tuple[torch.Tensor, list[str]]:
    """Map raw class ids to ``0..C-1`` in increasing raw-id order."""
    raw = np.asarray(raw, dtype=np.int64)
    ids = sorted(set(raw.tolist()))
    index = {r: i for i, r in enumerate(ids)}
    labels = torch.tensor([index[r] for r in raw.tolist()], dtype=torch.int64)
    return labels, [names_by_raw[r] for r in ids]


def half_split(class_ids: Sequence[int], split: str) -> set[int]:
    """Zero-shot protocol: the first half of the class ids (in order) train, the rest test."""
    ids = sorted(set(class_ids))
    half = len(ids) // 2
    return set(ids[:half] if split == "train" else ids[half:])
