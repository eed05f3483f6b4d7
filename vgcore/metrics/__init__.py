"""Pure functions on tensors: VARIANCE, GREEDINESS, retrieval and convergence.

- :mod:`~vgcore.metrics.variance`: the geometry of labelled embeddings (one function per metric).
- :mod:`~vgcore.metrics.greediness`: how a training step spreads its update, from its own backward.
- :mod:`~vgcore.metrics.retrieval`: Recall@K, MAP@R, R-precision, NMI with an exact chunked kNN.
- :mod:`~vgcore.metrics.hierarchy`: fine-class structure kept inside each superclass.
- :mod:`~vgcore.metrics.convergence`: when a curve has covered most of its change.

Each module declares ``LABELS`` (key -> human label); :data:`LABELS` is their union, the one label
table the reports and figures use.
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
from vgcore.metrics.inputs import as_embeddings, check_embeddings
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
    "VARIANCE_KEYS",
    "as_embeddings",
    "check_embeddings",
    "convergence_epoch",
    "exact_knn",
    "grad_active_sweep",
    "greediness",
    "label",
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
    "train_loss": "training loss",
}


def label(key: str) -> str:
    """The human label of a metric key; a per-run mean (``<key>_mean``) is labelled as its key."""
    if key in LABELS:
        return LABELS[key]
    if key.endswith("_mean") and key[: -len("_mean")] in LABELS:
        return LABELS[key[: -len("_mean")]]
    return key
