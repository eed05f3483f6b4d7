"""A small features file as a user would save it, shared by the custom-data, notebook and README tests."""

from __future__ import annotations

import numpy as np


def write_small_features(path, seed: int = 0) -> None:
    """A small fine-grained features file as a user would save it: string labels, superclasses."""

    rng = np.random.default_rng(seed)
    supers = rng.normal(size=(3, 8))
    fine = supers[:, None] + 0.5 * rng.normal(size=(3, 4, 8))
    x = np.concatenate([fine[s, f] + 0.6 * rng.normal(size=(12, 8)) for s in range(3) for f in range(4)])
    labels = np.repeat([f"class{s}{f}" for s in range(3) for f in range(4)], 12)
    np.savez(path, features=x.astype(np.float32), labels=labels, superclasses=np.repeat(np.arange(3), 48))
