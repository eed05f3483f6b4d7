"""CUB-200-2011 (Wah et al. 2011), zero-shot split: the first 100 classes train, the rest test."""

from __future__ import annotations

from pathlib import Path

from vgcore.data.base import (
    DataIntegrityError,
    DatasetSpec,
    Split,
    contiguous,
    half_split,
)
from vgcore.data.fetch import Remote, archive_dataset

REMOTE = Remote(
    "https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz",
    "CUB_200_2011.tgz",
    "97eceeb196236b17998738112f37df78",
)
_CUB_FOLDER = "CUB_200_2011"
_CUB_FILES = ("images.txt", "classes.txt", "image_class_labels.txt")


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


def locate(root: Path, download: bool) -> Path:
    return archive_dataset("cub200", root, REMOTE, _CUB_FOLDER, _cub_complete, download,
                           "images/, images.txt, classes.txt, image_class_labels.txt")


def read(folder: Path, split: str) -> Split:
    paths = {int(i): p for i, p in _read_table(folder / "images.txt", 2)}
    classes = {int(i): name.split(".", 1)[-1] for i, name in _read_table(folder / "classes.txt", 2)}
    img_class = {int(i): int(c) for i, c in _read_table(folder / "image_class_labels.txt", 2)}
    keep = half_split(classes, split)
    ids = sorted(i for i, c in img_class.items() if c in keep)
    labels, names = contiguous([img_class[i] for i in ids], classes)
    return Split(
        "cub200",
        split,
        labels=labels,
        class_names=names,
        paths=[folder / "images" / paths[i] for i in ids],
        options={"source": str(folder)},
    )



SPEC = DatasetSpec("cub200", read=read, locate=locate)
