"""Which samples a run trains and evaluates on: batch samplers and the fixed subsets."""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import torch
from torch import Tensor

NUMERICS_VERSION = 1
"""Bumped by hand when a sampler draws other batches for the same seed (vgcore.identity)."""


class NoPositivePairsWarning(UserWarning):
    """Batches can hold no positive pair (then most losses do not train)."""


def batch_indices(labels: Tensor, config, generator: torch.Generator) -> Iterator[Tensor]:
    """One epoch of index batches of exactly ``batch_size`` (the incomplete last batch is dropped).

    random: a fresh permutation per epoch. pk: batch_size / K classes drawn without replacement,
    K = samples_per_class indices drawn per class with replacement; pk_distinct: the same, K distinct
    rows per class (without replacement, as pytorch-metric-learning's ``MPerClassSampler``; every class
    needs K rows); as many batches as `random` gives.
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
        raise ValueError(f"sampler {config.sampler!r} needs {p} classes per batch but the data has "
                         f"{present.numel()}; raise samples_per_class or lower batch_size")
    k = config.samples_per_class
    if config.sampler == "pk_distinct":
        small = present[counts[present] < k]
        if small.numel():
            c = int(small[0])
            raise ValueError(f"sampler 'pk_distinct' draws {k} distinct rows of a class but class {c} has "
                             f"{int(counts[c])} rows; lower samples_per_class to {int(counts[present].min())} "
                             f"or use sampler=pk (rows drawn with replacement)")
        slots = torch.arange(int(counts.max()), device=labels.device)
    for _ in range(n_batches):
        classes = present[torch.randperm(present.numel(), generator=generator, device=labels.device)[:p]]
        if config.sampler == "pk_distinct":  # K smallest of uniform keys over each class's rows: K distinct rows
            keys = torch.rand(p, slots.numel(), generator=generator, device=labels.device)
            offsets = keys.masked_fill(slots >= counts[classes, None], 2.0).argsort(dim=1)[:, :k].reshape(-1)
        classes = classes.repeat_interleave(k)
        if config.sampler == "pk":
            offsets = (torch.rand(classes.numel(), generator=generator, device=labels.device) * counts[classes]).long()
        yield order[starts[classes] + offsets]


def pk_shape(n_classes: int, batch_size: int = 256, per_class: int = 4) -> tuple[int, int]:
    """``(P, K)`` of the fair comparison's class-balanced batches (PROTOCOL.md, "Fair comparison:
    Batches"): P = min(C, B / per_class) classes, K = 2 floor(B / 2P) samples of each (even, so the
    grouped N-pair splits every class into K/2 pairs); the batch holds P K <= B samples. FashionMNIST's
    10 classes at B = 256: (10, 24); 64 or more classes: (64, 4)."""
    if n_classes < 2:
        raise ValueError(f"a P x K batch needs at least 2 classes (a negative), the data has {n_classes}")
    if per_class < 2 or batch_size < 2 * per_class:
        raise ValueError(f"batch_size {batch_size} holds fewer than 2 classes of {per_class}; raise batch_size")
    p = min(n_classes, batch_size // per_class)
    return p, 2 * (batch_size // (2 * p))


def check_sampler(labels: Tensor, config) -> None:
    """What the sampler would refuse, raised now (before a run writes anything): a batch size larger
    than the data, more classes per batch than the data has. Warns (NoPositivePairsWarning) when a
    batch can hold no positive pair: batch_size 1, pk with samples_per_class 1, or random batches no
    larger than the number of classes."""
    next(batch_indices(labels, config, torch.Generator(device=labels.device).manual_seed(0)))
    n_classes = int(torch.count_nonzero(torch.bincount(labels)))
    if config.batch_size < 2 or (config.sampler != "random" and config.samples_per_class < 2):
        warnings.warn(NoPositivePairsWarning(
            f"no batch can hold a positive pair (batch_size={config.batch_size}, sampler={config.sampler!r}, "
            f"samples_per_class={config.samples_per_class}): the losses that need one do not train"), stacklevel=3)
    elif config.sampler == "random" and config.batch_size <= n_classes:
        warnings.warn(NoPositivePairsWarning(
            f"batch_size {config.batch_size} is no larger than the {n_classes} classes: a batch can hold no "
            "positive pair (then most losses skip it); raise batch_size or use sampler=pk"), stacklevel=3)


def fixed_subset_index(n: int, size: int | None, data_seed: int | None = None) -> Tensor | None:
    """The rows :func:`fixed_subset` keeps of `n`: `size` of them drawn without replacement, sorted;
    None when it keeps all (`size` None or at least `n`). The draw's seed is 0 when `data_seed` is
    None (every run shares it), else :func:`draw_seed` of (`data_seed`, ``"subset"``)."""
    if size is None or size >= n:
        return None
    seed = 0 if data_seed is None else draw_seed(data_seed, "subset")
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:size].sort().values


def fixed_subset(x: Tensor, y: Tensor, size: int | None, *more: Tensor | None,
                 data_seed: int | None = None) -> tuple[Tensor | None, ...]:
    """`size` rows of `x`, `y` (and of each of `more`, None passed through) drawn without replacement,
    in their original order (:func:`fixed_subset_index`).

    With ``data_seed`` None the draw does not depend on the run's seed, so every loss and seed sees
    the same data; a run that redraws its data per seed passes its ``data_seed``.
    """
    keep = fixed_subset_index(len(y), size, data_seed)
    if keep is None:
        return (x, y, *more)
    return tuple(None if t is None else t[keep] for t in (x, y, *more))


_PURPOSES = ("subset", "validation")


def draw_seed(data_seed: int, purpose: str) -> int:
    """The torch seed of one data draw of a run with ``data_seed``: 63 bits of NumPy's
    ``SeedSequence([data_seed, k])``, k the index of `purpose` (``"subset"``: the training subset,
    ``"validation"``: the held-out rows), so the two draws of one seed are independent streams and
    no seed's draw is another seed's."""
    import numpy as np

    if purpose not in _PURPOSES:
        raise ValueError(f"unknown data draw {purpose!r}; one of {', '.join(_PURPOSES)}")
    state = np.random.SeedSequence([data_seed, _PURPOSES.index(purpose)]).generate_state(2, np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1]))


VALIDATION_SEED = 1
"""Seed of the validation draw: fixed, not the run's seed, and not the training subset's (0)."""


VALIDATION_CLASS_STRIDE = 4
"""A class-disjoint validation split holds out every 4th training class (PROTOCOL.md, Fair
comparison, "Data and replication"), so that a set whose test classes are unseen is tuned on
unseen classes too."""


def split_off(x: Tensor, y: Tensor, size: int, *more: Tensor | None, data_seed: int | None = None,
              by_class: bool = False) -> tuple[tuple, tuple]:
    """``(kept, held)``: rows of `x`, `y` (and of each of `more`) held out, and the rest; each part
    in its original order.

    Rows (``by_class`` False): `size` rows drawn without replacement, with :data:`VALIDATION_SEED`
    when ``data_seed`` is None (the draw does not depend on the run's seed), else with
    :func:`draw_seed` of (``data_seed``, ``"validation"``); ``size=0`` holds out nothing (``held``
    is None). Classes (``by_class`` True, `size` must be 0): every row of every
    :data:`VALIDATION_CLASS_STRIDE`-th class present, in sorted label order from the first."""
    if by_class:
        if size:
            raise ValueError(f"a class-disjoint split holds out whole classes, not {size} rows: pass size=0")
        classes = torch.unique(y)
        if classes.numel() < 2 * VALIDATION_CLASS_STRIDE:
            raise ValueError(f"a class-disjoint validation split needs at least {2 * VALIDATION_CLASS_STRIDE} "
                             f"training classes, the data has {classes.numel()}; use val_split=rows")
        mask = torch.isin(y, classes[::VALIDATION_CLASS_STRIDE])
        held, kept = torch.nonzero(mask).squeeze(1), torch.nonzero(~mask).squeeze(1)
    else:
        if size == 0:
            return (x, y, *more), None
        if size >= len(y) - 1:
            raise ValueError(f"val_size {size} leaves no training samples out of {len(y)}; lower val_size")
        seed = VALIDATION_SEED if data_seed is None else draw_seed(data_seed, "validation")
        order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
        held, kept = order[:size].sort().values, order[size:].sort().values
    return tuple(tuple(None if t is None else t[i] for t in (x, y, *more)) for i in (kept, held))
