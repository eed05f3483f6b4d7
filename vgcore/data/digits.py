"""sklearn's bundled 8x8 digits: a tiny real image set that needs no download."""

from __future__ import annotations

import numpy as np
import torch

from vgcore.data.base import (
    DatasetSpec,
    Split,
    contiguous,
    half_split,
)


def read(location: None, split: str, *, class_split: str, test_fraction: float, seed: int) -> Split:
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
        keep = half_split(range(10), split)
        chosen = np.flatnonzero(np.isin(target, sorted(keep)))
    else:
        raise ValueError(f"class_split must be 'shared' or 'disjoint', got {class_split!r}")
    labels, names = contiguous(target[chosen], {i: str(i) for i in range(10)})
    return Split(
        "digits",
        split,
        labels=labels,
        class_names=names,
        images=torch.from_numpy(images[chosen]).unsqueeze(1),
        options={"class_split": class_split, "test_fraction": test_fraction, "seed": seed},
    )


SPEC = DatasetSpec("digits", read=read, content={"class_split": "shared", "test_fraction": 0.5, "seed": 0})
