"""The synthetic set with superclass labels only in training, for the "oversimplification" claim."""

from __future__ import annotations

import dataclasses
import functools

from vgcore.data import synthetic
from vgcore.data.base import DatasetSpec, Split


@functools.wraps(synthetic.read, assigned=())  # the same content options (inspect.signature follows __wrapped__)
def read(location: None, split: str, **content) -> Split:
    """``synthetic`` with the same options and features, labelled by superclass in the train split.

    Train: ``labels = coarse_labels`` = superclass (a head sees superclass labels only). Test: as
    ``synthetic``, ``labels`` = fine class and ``coarse_labels`` = superclass, so the evaluation's
    ``fine_recall@1_within_super`` measures how much fine structure survives inside each superclass.
    """
    fine = dataclasses.replace(synthetic.read(location, split, **content), dataset="synthetic_super")
    if split != "train":
        return fine
    supers = list(dict.fromkeys(name.split("/")[0] for name in fine.class_names))  # "super00/fine01" -> "super00"
    return dataclasses.replace(fine, labels=fine.coarse_labels, class_names=supers)


SPEC = DatasetSpec("synthetic_super", read=read, content=synthetic.SPEC.content, coarse=True, pictures=False)
