"""A synthetic fine-grained set: Gaussian fine classes nested in superclasses (feature vectors)."""

from __future__ import annotations

import math

import numpy as np
import torch

from vgcore.data.base import (
    DatasetSpec,
    Split,
)


def read(
    location: None,
    split: str,
    *,
    n_superclasses: int,
    n_fine_per_super: int,
    n_per_class: int,
    dim: int,
    super_spread: float,
    fine_spread: float,
    noise: float,
    nuisance_dim: int,
    nuisance_scale: float,
    class_split: str,
    seed: int,
) -> Split:
    """Gaussian clusters with two levels of granularity; the "images" are feature vectors.

    Superclass centres ``mu_s ~ N(0, super_spread^2 / dim I)``, fine-class centres
    ``mu_sf = mu_s + N(0, fine_spread^2 / dim I)``, samples ``x = mu_sf + N(0, noise^2 / dim I)``:
    the three spreads are the typical norms of the three offsets, whatever ``dim``. A small
    ``fine_spread / noise`` makes the fine classes hard to tell apart (fine-grained), a large
    ``super_spread / fine_spread`` makes the superclasses obvious.

    ``nuisance_dim`` > 0 adds noise of typical norm ``nuisance_scale`` in a fixed random subspace of
    that many dimensions, the same subspace for every class (``x += N(0, nuisance_scale^2 /
    nuisance_dim P)``, P the projector onto it): like a nuisance factor of real images (pose,
    lighting) it hides the classes from raw nearest neighbours, and a head that learns to suppress
    it on the training classes helps on unseen test classes too, so the losses have something to
    learn under the disjoint split. With ``nuisance_dim=0`` (default) no extra number is drawn.

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
    if not 0 <= nuisance_dim <= dim or nuisance_scale < 0:
        raise ValueError(f"nuisance_dim must lie in [0, dim={dim}] and nuisance_scale be >= 0, "
                         f"got {nuisance_dim} and {nuisance_scale}")
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
    x = np.concatenate(xs)
    if nuisance_dim > 0:  # own streams: the draws above are those of nuisance_dim=0
        basis = np.linalg.qr(np.random.default_rng([seed, 3]).normal(size=(dim, nuisance_dim)))[0]
        coef = np.random.default_rng([seed, 4 if split == "train" else 5]).normal(
            0.0, nuisance_scale / math.sqrt(nuisance_dim), size=(len(x), nuisance_dim))
        x = x + coef @ basis.T
    return Split(
        "synthetic",
        split,
        labels=torch.tensor(fine_lab, dtype=torch.int64),
        class_names=names,
        images=torch.from_numpy(x.astype(np.float32)),
        coarse_labels=torch.tensor(super_lab, dtype=torch.int64),
        options={
            "n_superclasses": S, "n_fine_per_super": F, "n_per_class": n_per_class, "dim": dim,
            "super_spread": super_spread, "fine_spread": fine_spread, "noise": noise,
            "nuisance_dim": nuisance_dim, "nuisance_scale": nuisance_scale, "class_split": class_split, "seed": seed,
        },
    )  # fmt: skip


SPEC = DatasetSpec("synthetic", read=read, content={
    "n_superclasses": 8, "n_fine_per_super": 8, "n_per_class": 40, "dim": 32, "super_spread": 1.0,
    "fine_spread": 0.35, "noise": 0.25, "nuisance_dim": 0, "nuisance_scale": 0.0, "class_split": "disjoint",
    "seed": 0,
}, coarse=True, pictures=False)  # fmt: skip
