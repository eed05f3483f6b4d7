"""Which samples a run trains and evaluates on: batch samplers and the fixed subsets."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor


def batch_indices(labels: Tensor, config, generator: torch.Generator) -> Iterator[Tensor]:
    """One epoch of index batches of exactly ``batch_size`` (the incomplete last batch is dropped).

    random: a fresh permutation per epoch. pk: batch_size / K classes drawn without replacement,
    K = samples_per_class indices drawn per class with replacement; as many batches as `random` gives.
    """
    n = labels.numel()
    n_batches = n // config.batch_size
    if n_batches == 0:
        raise ValueError(f"batch_size {config.batch_size} exceeds the {n} training samples; lower batch_size")
    if config.sampler == "random":
        perm = torch.randperm(n, generator=generator, device=labels.device)
        yield from perm[: n_batches * config.batch_size].view(n_batches, config.batch_size)
        return
    order = torch.argsort(labels, stable=True)
    counts = torch.bincount(labels)
    starts = torch.cumsum(counts, 0) - counts
    present = torch.nonzero(counts).squeeze(1)
    p = config.batch_size // config.samples_per_class
    if p > present.numel():
        raise ValueError(f"sampler 'pk' needs {p} classes per batch but the data has {present.numel()}; "
                         f"raise samples_per_class or lower batch_size")
    for _ in range(n_batches):
        classes = present[torch.randperm(present.numel(), generator=generator, device=labels.device)[:p]]
        classes = classes.repeat_interleave(config.samples_per_class)
        offsets = (torch.rand(classes.numel(), generator=generator, device=labels.device) * counts[classes]).long()
        yield order[starts[classes] + offsets]


def fixed_subset(x: Tensor, y: Tensor, size: int | None, *more: Tensor | None) -> tuple[Tensor | None, ...]:
    """`size` rows of `x`, `y` (and of each of `more`, None passed through) drawn without replacement
    with a fixed seed (0), in their original order.

    The draw does not depend on the run's seed, so every loss and seed sees the same data.
    """
    if size is None or size >= len(y):
        return (x, y, *more)
    keep = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))[:size].sort().values
    return tuple(None if t is None else t[keep] for t in (x, y, *more))
