"""Pure functions on tensors: VARIANCE, GREEDINESS, retrieval and convergence.

- :mod:`~vgcore.metrics.variance`: the geometry of labelled embeddings (one function per metric).
- :mod:`~vgcore.metrics.greediness`: how a training step spreads its update, from its own backward.
- :mod:`~vgcore.metrics.retrieval`: Recall@K, MAP@R, R-precision, NMI with an exact chunked kNN.
- :mod:`~vgcore.metrics.neighbours`: each query's ranked neighbours and which are relevant; per-class Recall@k.
- :mod:`~vgcore.metrics.pairs`: the cosine similarities of positive and negative pairs.
- :mod:`~vgcore.metrics.hierarchy`: fine-class structure kept inside each superclass.
- :mod:`~vgcore.metrics.convergence`: when a curve has covered most of its change.

Each module declares ``LABELS`` (key -> human label with its unit in brackets, "name [unit]");
:data:`LABELS` is their union, the one label table the reports and figures use. Units: ``dist.`` is a
Euclidean distance in the embedding space (the heads' embeddings lie on the unit sphere, radius 1),
``fraction`` a share in [0, 1], ``L2`` the Euclidean norm of a gradient, ``loss units`` each loss's
own scale.
"""

from __future__ import annotations

from vgcore.metrics import convergence as _convergence
from vgcore.metrics import greediness as _greediness
from vgcore.metrics import hierarchy as _hierarchy
from vgcore.metrics import retrieval as _retrieval
from vgcore.metrics import variance as _variance
from vgcore.metrics.convergence import convergence_epoch, recall_convergence_epoch
from vgcore.metrics.greediness import (
    GRAD_THRESHOLD,
    GRAD_THRESHOLD_SWEEP,
    GREEDINESS_KEYS,
    grad_active_sweep,
    greediness,
    tangential,
)
from vgcore.metrics.hierarchy import HIERARCHY_KEYS, superclass_metrics
from vgcore.metrics.inputs import as_embeddings, check_embeddings, encode_labels
from vgcore.metrics.neighbours import RankedNeighbours, per_class_recall, ranked_neighbours
from vgcore.metrics.pairs import pair_similarities
from vgcore.metrics.retrieval import (
    DEFAULT_KS,
    RETRIEVAL_KEYS,
    exact_knn,
    retrieval_keys,
    retrieval_metrics,
)
from vgcore.metrics.variance import VARIANCE_KEYS, spectral_decay_from_singular_values, variance

__all__ = [
    "DEFAULT_KS",
    "GRAD_THRESHOLD",
    "GRAD_THRESHOLD_SWEEP",
    "GREEDINESS_KEYS",
    "HIERARCHY_KEYS",
    "LABELS",
    "RETRIEVAL_KEYS",
    "RankedNeighbours",
    "SHARE_UNITS",
    "VARIANCE_KEYS",
    "as_embeddings",
    "check_embeddings",
    "convergence_epoch",
    "encode_labels",
    "exact_knn",
    "grad_active_sweep",
    "greediness",
    "is_share",
    "label",
    "pair_similarities",
    "per_class_recall",
    "ranked_neighbours",
    "recall_convergence_epoch",
    "retrieval_keys",
    "retrieval_metrics",
    "spectral_decay_from_singular_values",
    "superclass_metrics",
    "tangential",
    "variance",
]

LABELS: dict[str, str] = {
    **_variance.LABELS, **_greediness.LABELS, **_retrieval.LABELS, **_hierarchy.LABELS, **_convergence.LABELS,
    "train_loss": "training loss [loss units]",
    "wall_time_s": "wall time [s]",
    "steps_per_s": "training speed [steps/s]",
}


SHARE_UNITS = ("fraction", "fraction of batch", "fraction of queries", "fraction of samples", "fraction of tuples",
               "fraction of errors")
"""The units of :data:`LABELS` whose metrics are shares in [0, 1]. Not ``fraction of lr``: a step in
units of the learning rate, which exceeds 1."""


def is_share(key: str) -> bool:
    """Whether the metric `key` is a share in [0, 1]: its unit in :func:`label` is one of :data:`SHARE_UNITS`."""
    text = label(key)
    return text.endswith("]") and text.rsplit(" [", 1)[-1][:-1] in SHARE_UNITS


def label(key: str, unit: bool = True) -> str:
    """The human label of a metric key, "name [unit]" (without the unit: ``unit=False``); a per-run
    mean (``<key>_mean``) is labelled as its key; an unknown key is returned as it is."""
    text = LABELS.get(key)
    if text is None and key.endswith("_mean"):
        text = LABELS.get(key[: -len("_mean")])
    if text is None:
        return key
    return text if unit else text.rsplit(" [", 1)[0]
