"""Stanford Cars (Cars196; Krause et al. 2013), zero-shot split, from either local layout."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from vgcore.data.base import (
    DataIntegrityError,
    DatasetSpec,
    Split,
    contiguous,
    half_split,
    not_found,
)

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


def locate(root: Path, download: bool = False) -> tuple[str, Path]:
    """The layout found (``"annos"`` or ``"devkit"``) and its folder; nothing is downloaded (the host is gone)."""
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
    raise not_found("cars196", root, _cars_bases(root), _CARS_WAYS)


def _mat_names(arr: Any) -> list[str]:
    return [str(np.asarray(x).squeeze()) for x in np.atleast_1d(arr)]


def read(location: tuple[str, Path], split: str) -> Split:
    from scipy.io import loadmat

    layout, base = location
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
    keep = half_split(names_by_id, split)
    chosen = sorted((e for e in entries if e[1] in keep), key=lambda e: str(e[0]))
    labels, names = contiguous([c for _, c in chosen], names_by_id)
    return Split(
        "cars196",
        split,
        labels=labels,
        class_names=names,
        paths=[p for p, _ in chosen],
        options={"source": str(base), "layout": layout},
    )



SPEC = DatasetSpec("cars196", read=read, locate=locate)
