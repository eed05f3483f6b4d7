"""A run's identity: every value that decides its numbers, defaults filled in, and the numerics
version of each component of the code that produced them.

A :class:`~vgcore.config.RunConfig` names what a user chose; :func:`resolved` adds what the code
chose for them (a loss's default margin, the evaluation's Recall@K list and k-means seed, the
greediness threshold, the dataset's content options and the backbone's preprocessing with their
defaults) and a version per component that is bumped by hand when that component's code changes
its numbers without any of those values changing (a fixed bug). ``RunConfig.config_hash`` covers
the config *and* this record, and ``summary.json`` keeps both, so a changed default or a bumped
version makes every run made before it stale: ``sweep`` and the build retrain it, ``collect`` and
``snapshot restore`` refuse it, naming what changed. ``tests/test_identity.py`` keeps the versions
honest: it holds each component's numbers on a fixed input next to its version, and fails when the
numbers move and the version does not.

The versions live beside the code they describe: ``numerics_version`` on each loss class
(:class:`vgcore.losses.base.MetricLoss`), ``NUMERICS_VERSION`` in :mod:`vgcore.train.head`,
:mod:`vgcore.train.samplers`, :mod:`vgcore.train.learner` (the step and its GREEDINESS reading) and
:mod:`vgcore.train.evaluate` (VARIANCE, retrieval and superclass metrics).
"""

from __future__ import annotations

from importlib import import_module
from typing import Any


def resolved(values: dict[str, Any]) -> dict[str, Any]:
    """The resolved identity of the run config `values` (a ``RunConfig.to_dict()``), as plain JSON.

    ``loss``: its hyperparameters with defaults and its class's numerics version; ``dataset``: its
    content options with defaults; ``backbone``: the spec its options give (weights, preprocessing);
    ``head``, ``sampler``, ``step``, ``evaluation``: what their code fixes, and their versions.
    """
    from vgcore import registry
    from vgcore.data import content_options
    from vgcore.losses import loss_hyperparameters
    from vgcore.metrics.greediness import GRAD_THRESHOLD
    from vgcore.metrics.retrieval import DEFAULT_KS
    # modules, not the functions of the same name that vgcore.train exports
    evaluate, head, learner, samplers = (import_module(f"vgcore.train.{m}")
                                         for m in ("evaluate", "head", "learner", "samplers"))
    loss_cls = registry.load("loss", values["loss"])
    threshold = values.get("grad_threshold")
    return {
        "loss": {"class": loss_cls.__name__, "params": loss_hyperparameters(values["loss"], **values["loss_params"]),
                 "numerics": loss_cls.numerics_version},
        "dataset": content_options(values["dataset"], **values["dataset_options"]),
        "backbone": registry.load("backbone", values["backbone"]).spec(**values["backbone_options"]).key(),
        "head": {"numerics": head.NUMERICS_VERSION},
        "sampler": {"numerics": samplers.NUMERICS_VERSION},
        "step": {"numerics": learner.NUMERICS_VERSION, "optimizer": "Adam",
                 "grad_threshold": GRAD_THRESHOLD if threshold is None else threshold,
                 "unit_tolerance": learner.UNIT_TOLERANCE},
        "evaluation": {"numerics": evaluate.NUMERICS_VERSION, "recall_ks": list(DEFAULT_KS),
                       "kmeans_seed": evaluate.KMEANS_SEED},
    }


def differences(recorded: Any, current: Any, prefix: str = "") -> list[str]:
    """``["loss.params.margin: 0.2 -> 0.9", ...]``: where two resolved identities differ."""
    if isinstance(recorded, dict) and isinstance(current, dict):
        out: list[str] = []
        for key in sorted(set(recorded) | set(current)):
            out += differences(recorded.get(key, "<absent>"), current.get(key, "<absent>"), f"{prefix}{key}.")
        return out
    if _plain(recorded) != _plain(current):
        return [f"{prefix.rstrip('.')}: {recorded!r} -> {current!r}"]
    return []


def _plain(value: Any) -> Any:
    """Tuples as lists, so a record read back from JSON equals the one computed now."""
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value
