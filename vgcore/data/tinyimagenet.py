"""Tiny-ImageNet-200: the train images and the labelled val split (our test split)."""

from __future__ import annotations

from pathlib import Path

from vgcore.data.base import (
    DataIntegrityError,
    DatasetSpec,
    Split,
    contiguous,
)
from vgcore.data.fetch import Remote, archive_dataset

REMOTE = Remote(
    "http://cs231n.stanford.edu/tiny-imagenet-200.zip",
    "tiny-imagenet-200.zip",
    "90528d7ca1a48142e341f4ef8d21d0de",
)
_TINY_FOLDER = "tiny-imagenet-200"


def _tiny_complete(folder: Path) -> bool:
    return (
        (folder / "wnids.txt").is_file()
        and (folder / "train").is_dir()
        and (folder / "val" / "val_annotations.txt").is_file()
    )


def locate(root: Path, download: bool) -> Path:
    return archive_dataset("tinyimagenet", root, REMOTE, _TINY_FOLDER, _tiny_complete, download,
                           "wnids.txt, words.txt, train/, val/val_annotations.txt")


def read(folder: Path, split: str) -> Split:
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
    labels, class_names = contiguous(raw, names)
    return Split(
        "tinyimagenet",
        split,
        labels=labels,
        class_names=class_names,
        paths=paths,
        options={"source": str(folder)},
    )



SPEC = DatasetSpec("tinyimagenet", read=read, locate=locate)
