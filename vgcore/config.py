"""Run configuration and the named profiles (smoke, demo, paper_schedule, paper, custom).

A `RunConfig` says everything one training run needs; a `Profile` is a sweep: which datasets (each
with its backbone and options), which losses and which seeds, on top of shared settings. Every key
and every categorical value is validated, and a bad one is rejected with the list of valid choices.
Validation builds nothing: the loss, dataset and backbone options are bound to the signatures the
registry points at (importing those modules on first use), so no random number is drawn. The one
file it reads is a user's features file (dataset ``custom``), checked and pinned by its digest.

This module imports no torch: ``python -m vgcore --help`` and the Snakefile start fast.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any

from vgcore import registry

LOSSES = registry.PAPER_LOSSES
DEMO_VARIANTS = ("npair_all", "triplet_semihard", "triplet_facenet", "ccl_ema")
"""The named variants the demo trains beside the seven (its committed build); a variant registered
later (``npair_groups``) runs on request (``python -m vgcore run --loss npair_groups``), not in the demo."""
HEADS = ("linear", "mlp")  # vgcore.train.head.ProjectionHead
SAMPLERS = ("random", "pk", "pk_distinct")  # vgcore.train.samplers.batch_indices
DEVICES = ("cpu", "cuda", "auto")  # vgcore.device.resolve_device
EVAL_SPLITS = ("test", "train", "validation")
"""vgcore.data.base.SPLITS, and ``validation``: the rows held out of the training split (a tuning
trial's evaluation: the test split is never read, and no k-means runs)."""
VAL_SPLITS = ("rows", "classes")  # vgcore.train.samplers.split_off
CELL_KEYS = ("profile", "dataset", "loss", "seed")
"""What a run is a cell of; chosen with --profile/--dataset/--loss/--seed, never as key=value overrides."""


@dataclass
class RunConfig:
    """One training run: a projection head trained with one loss on frozen features.

    Defaults are the paper's where it states them (Adam, lr 1e-4, batch 512, 128-d L2-normalised
    output); the rest are ours and are listed in PROTOCOL.md ("Training").
    """

    profile: str = "smoke"
    dataset: str = "synthetic"
    backbone: str = "pixels"
    loss: str = "contrastive"
    seed: int = 0
    epochs: int = 100
    batch_size: int = 512
    lr: float = 1e-4
    weight_decay: float = 0.0
    embedding_dim: int = 128
    head: str = "linear"
    head_hidden: int = 512
    sampler: str = "random"
    samples_per_class: int = 4
    eval_every: int = 1
    full_eval_every: int = 0
    eval_train_size: int = 2000
    eval_split: str = "test"
    train_size: int | None = None
    eval_size: int | None = None
    val_size: int = 0
    val_split: str = "rows"
    data_seed: int | None = None
    patience: int = 0
    min_delta: float = 0.001
    probes: bool = False
    progress_evals: bool = True
    progress_ratio: float = 2**0.5
    early_step: int = 16
    grad_threshold: float | None = None
    diagnostics: bool = True
    sync_every: int = 50
    device: str = "cpu"
    loss_params: dict[str, Any] = field(default_factory=dict)
    dataset_options: dict[str, Any] = field(default_factory=dict)
    backbone_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for kind in ("loss", "dataset", "backbone"):
            registry.check(kind, getattr(self, kind))
        _check_choice("head", self.head, HEADS)
        _check_choice("sampler", self.sampler, SAMPLERS)
        _check_choice("device", self.device, DEVICES)
        _check_choice("profile", self.profile, tuple(PROFILES))
        for name in ("epochs", "batch_size", "embedding_dim", "head_hidden", "samples_per_class",
                     "eval_every", "eval_train_size", "sync_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ("train_size", "eval_size"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 2):
                raise ValueError(f"{name} must be None (all samples) or an integer >= 2, got {value!r}")
        if not isinstance(self.val_size, int) or isinstance(self.val_size, bool) or self.val_size < 0:
            raise ValueError(f"val_size must be 0 (no validation split: progress is read on the eval split) or a "
                             f"positive number of training samples to hold out, got {self.val_size!r}")
        if self.data_seed is not None and (not isinstance(self.data_seed, int) or isinstance(self.data_seed, bool)
                                           or self.data_seed < 0):
            raise ValueError(f"data_seed must be None (the fixed subsets every run shares) or a non-negative "
                             f"integer (draw the training subset and validation rows with it), got {self.data_seed!r}")
        if not isinstance(self.patience, int) or isinstance(self.patience, bool) or self.patience < 0:
            raise ValueError(f"patience must be 0 (train all epochs) or a positive number of epochs without a "
                             f"validation MAP@R gain, got {self.patience!r}")
        _check_choice("val_split", self.val_split, VAL_SPLITS)
        if self.val_split == "classes" and self.val_size:
            raise ValueError(f"val_split 'classes' holds out whole classes (every 4th training class), not "
                             f"val_size rows: set val_size=0 (got {self.val_size})")
        if self.patience and not self.has_validation:
            raise ValueError("patience stops a run on its validation MAP@R, which needs a validation split: set "
                             "val_size (e.g. val_size=2000) or val_split=classes, or patience=0")
        if self.eval_split == "validation" and not self.has_validation:
            raise ValueError("eval_split 'validation' evaluates the rows held out of the training split: set "
                             "val_size (e.g. val_size=2000) or val_split=classes")
        if not _is_real(self.min_delta) or not self.min_delta >= 0:
            raise ValueError(f"min_delta must be a number >= 0 (the MAP@R gain that counts as an improvement, "
                             f"e.g. 0.001), got {self.min_delta!r}")
        if not _is_real(self.progress_ratio) or not self.progress_ratio > 1:
            raise ValueError(f"progress_ratio must be a number > 1 (the ratio of the log-spaced progress steps, "
                             f"e.g. 1.414), got {self.progress_ratio!r}")
        if not isinstance(self.early_step, int) or isinstance(self.early_step, bool) or self.early_step < 1:
            raise ValueError(f"early_step must be a positive integer (a training step), got {self.early_step!r}")
        if not isinstance(self.full_eval_every, int) or isinstance(self.full_eval_every, bool) or self.full_eval_every < 0:
            raise ValueError(f"full_eval_every must be 0 (MAP@R, R-precision and NMI at the final epoch only) or a "
                             f"positive number of epochs, got {self.full_eval_every!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")
        if not _is_real(self.lr) or not self.lr > 0:
            raise ValueError(f"lr must be a positive number (e.g. lr=1e-3), got {self.lr!r}")
        if not _is_real(self.weight_decay) or not self.weight_decay >= 0:
            raise ValueError(f"weight_decay must be a number >= 0 (e.g. weight_decay=1e-4), got {self.weight_decay!r}")
        if self.grad_threshold is not None and (not _is_real(self.grad_threshold) or not self.grad_threshold >= 0):
            raise ValueError(f"grad_threshold must be None (the default) or a number >= 0, got {self.grad_threshold!r}")
        if not isinstance(self.progress_evals, bool):
            raise ValueError(f"progress_evals must be true or false (progress_evals=false), got {self.progress_evals!r}")
        if not isinstance(self.probes, bool):
            raise ValueError(f"probes must be true or false (probes=true), got {self.probes!r}")
        if not isinstance(self.diagnostics, bool):  # "no" or 0 is not a boolean: say so rather than guess
            raise ValueError(f"diagnostics must be true or false (diagnostics=false), got {self.diagnostics!r}")
        _check_choice("eval_split", self.eval_split, EVAL_SPLITS)
        if self.sampler != "random" and self.batch_size % self.samples_per_class:
            raise ValueError(
                f"sampler {self.sampler!r} needs batch_size divisible by samples_per_class; got "
                f"batch_size={self.batch_size}, samples_per_class={self.samples_per_class}"
            )
        for name in ("loss_params", "dataset_options", "backbone_options"):
            if not isinstance(getattr(self, name), dict):
                raise ValueError(f"{name} must be a dict of keyword arguments, got {getattr(self, name)!r}")
        # unknown options are rejected now, with the accepted ones, not after feature extraction; a
        # dataset that is a user's file is checked now too, and its content digest recorded
        _check_options(self)

    @property
    def has_validation(self) -> bool:
        """Whether the run holds a validation split out of its training split (``val_size`` rows, or
        whole classes with ``val_split="classes"``)."""
        return self.val_size > 0 or self.val_split == "classes"

    def to_dict(self) -> dict[str, Any]:
        """Every field, except a field of :data:`LATER_FIELDS` at its default (see there)."""
        return {k: v for k, v in dataclasses.asdict(self).items()
                if not (k in LATER_FIELDS and _canonical(v) == _canonical(LATER_FIELDS[k]))}

    def full_eval_at(self, epoch: int) -> bool:
        """Whether evaluation after `epoch` computes the full retrieval set (MAP@R, R-precision, NMI)
        besides VARIANCE and Recall@K: at the final epoch, and every `full_eval_every` epochs if set."""
        return epoch == self.epochs or (self.full_eval_every > 0 and epoch % self.full_eval_every == 0)

    def resolved(self) -> dict[str, Any]:
        """What the code decides for this config: defaults filled in, numerics versions (vgcore.identity)."""
        from vgcore.identity import resolved

        return resolved(self.to_dict())

    def config_hash(self) -> str:
        """The run's identity: :func:`identity_hash` of every field and of :meth:`resolved`."""
        return identity_hash(self.to_dict())

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RunConfig:
        _check_keys(values)
        return cls(**values)


LATER_FIELDS: dict[str, Any] = {"data_seed": None, "patience": 0, "min_delta": 0.001, "probes": False,
                                "val_split": "rows", "progress_evals": True}
"""Fields added after runs were committed, with the default that reproduces what those runs did
(fixed data draws, a fixed number of epochs). :meth:`RunConfig.to_dict` leaves such a field out
while it holds that default, so a run made before the field existed keeps its config, its
``config_hash`` and its group: adding an option retrains nothing that does not use it
(``tests/test_identity.py`` holds the committed runs' hashes). A field joins this table in the
commit that adds it, with its default, and never leaves it."""


def identity_hash(values: dict[str, Any]) -> str:
    """sha256 (first 16 hex digits) of the canonical JSON of a run config `values` (``to_dict()``)
    and of its resolved identity (:func:`vgcore.identity.resolved`): a run's ``config_hash``, also
    recomputed for a recorded config to tell whether the run is still current."""
    from vgcore.identity import resolved

    canonical = json.dumps({"config": values, "resolved": resolved(values)}, sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Profile:
    """A named sweep: datasets (each with its own overrides) x losses x seeds on shared settings."""

    name: str
    description: str
    datasets: dict[str, dict[str, Any]]
    losses: tuple[str, ...] = LOSSES
    seeds: tuple[int, ...] = (0, 1, 2)
    settings: dict[str, Any] = field(default_factory=dict)
    compare_with: str | None = None
    """Another profile whose claim verdicts the claims notebook sets beside this one's (e.g. two schedules)."""
    redraw_data: bool = False
    """Replication over the data, not only the initialisation: each seed's run sets ``data_seed`` to
    its seed (its own training subset and validation rows) and, for a dataset drawn from a seed (the
    synthetic sets' ``seed`` content option), draws the dataset with it too (PROTOCOL.md, Fair
    comparison, "Data and replication"); a user's file keeps its train/test split (its ``seed`` option
    splits it), so every seed's run is tested on the same rows."""

    tuned: bool = False
    """Whether each loss's learning rate and key constant come from the profile's tuning
    (:func:`tuned_path`, written by :mod:`vgcore.train.tune`); a cell not yet tuned gets the
    profile's own settings (:meth:`is_tuned` tells which)."""

    def tuned_settings(self, dataset: str, loss: str) -> dict[str, Any]:
        """The tuned ``lr`` and ``loss_params`` of one cell (empty when the profile is not tuned or
        the cell not yet)."""
        if not self.tuned:
            return {}
        entry = read_tuned(self.name).get(dataset, {}).get(loss)
        return {} if entry is None else {"lr": entry["lr"], "loss_params": dict(entry["loss_params"])}

    def is_tuned(self, dataset: str, loss: str) -> bool:
        """Whether the cell's settings come from a finished tuning (always True for an untuned profile)."""
        return not self.tuned or bool(self.tuned_settings(dataset, loss))

    def _seeded(self, values: dict[str, Any], dataset: str, seed: int) -> dict[str, Any]:
        """`values` with the data draws of `seed` when the profile redraws the data per seed."""
        if not self.redraw_data:
            return values
        from vgcore.data import dataset_spec

        values["data_seed"] = seed
        spec = dataset_spec(dataset)
        if "seed" in spec.content and spec.pin is None:  # a user's file (pin): its seed splits it, draws nothing
            values["dataset_options"] = {**values.get("dataset_options", {}), "seed": seed}
        return values

    def cell(self, dataset: str, loss: str, seed: int, /) -> dict[str, Any]:
        """The settings of one cell as the profile gives them, RunConfig's defaults filled in, not
        validated (a profile whose datasets need an option, such as ``custom``'s file, has no complete
        config of its own)."""
        _check_choice("dataset", dataset, tuple(self.datasets), what=f"dataset of profile {self.name!r}")
        defaults = {f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
                    for f in dataclasses.fields(RunConfig) if f.name not in LATER_FIELDS}
        values = {**defaults, **copy.deepcopy({**self.settings, **self.datasets[dataset],
                                                **self.tuned_settings(dataset, loss)}),
                  "profile": self.name, "dataset": dataset, "loss": loss, "seed": seed}
        return self._seeded(values, dataset, seed)

    def config(self, dataset: str, loss: str, seed: int, /, **overrides: Any) -> RunConfig:
        """The RunConfig of one cell of the sweep, with `overrides` applied last."""
        _check_not_cell_keys(overrides)
        _check_choice("dataset", dataset, tuple(self.datasets), what=f"dataset of profile {self.name!r}")
        values: dict[str, Any] = copy.deepcopy({**self.settings, **self.datasets[dataset],
                                                **self.tuned_settings(dataset, loss)})
        values.update(profile=self.name, dataset=dataset, loss=loss, seed=seed)
        values = self._seeded(values, dataset, seed)
        for key, value in overrides.items():
            if isinstance(value, dict) and isinstance(values.get(key), dict):
                values[key] = {**values[key], **value}  # dotted overrides add to a dict field
            else:
                values[key] = value
        return RunConfig.from_dict(values)

    def configs(self, **overrides: Any) -> list[RunConfig]:
        """Every run of the sweep, in a fixed order (dataset, loss, seed)."""
        return [self.config(d, loss, s, **overrides) for d in self.datasets for loss in self.losses for s in self.seeds]


def tuned_path(profile: str):
    """Where a tuned profile's chosen settings live: ``vgcore/tuned/<profile>.json`` (package data,
    committed; ``{dataset: {loss: {"lr", "loss_params", ...}}}``), or ``$VGCORE_TUNED/<profile>.json``
    when that variable names a directory (a build of its own, e.g. the tests' smoke-scale fair build)."""
    import os
    from pathlib import Path

    root = os.environ.get("VGCORE_TUNED")
    return (Path(root) if root else Path(__file__).parent / "tuned") / f"{profile}.json"


def read_tuned(profile: str) -> dict[str, Any]:
    """The tuned settings file of `profile` (:func:`tuned_path`) as a dict; empty when there is none."""
    path = tuned_path(profile)
    return json.loads(path.read_text()) if path.exists() else {}


_DEMO_SYNTHETIC: dict[str, Any] = {
    "backbone": "pixels",
    # noise 0.6 and a 32-d nuisance subspace (typical norm 2.0): raw Recall@1 on the unseen test
    # classes is about 0.2 and a head that learns to suppress the nuisance reaches 0.5-0.7 in 30
    # epochs, so every loss learns and none solves the set (PROTOCOL.md)
    "dataset_options": {"n_superclasses": 10, "n_fine_per_super": 10, "n_per_class": 60, "dim": 64,
                        "noise": 0.6, "nuisance_dim": 32, "nuisance_scale": 2.0},
    "epochs": 30,
    "eval_every": 5,
    "val_size": 500,
}
"""The demo's synthetic settings, shared by ``synthetic`` and ``synthetic_super`` (copied per cell)."""

FAIR_LOSSES: tuple[str, ...] = (*LOSSES, "npair_groups", "multisimilarity")
"""The fair comparison's losses: the paper's seven, the grouped N-pair and the tuned baseline."""
_FAIR_SETTINGS: dict[str, Any] = {"epochs": 40, "sampler": "pk_distinct", "val_size": 2000, "patience": 5,
                                  "min_delta": 0.001, "eval_every": 5, "lr": 1e-3, "probes": True}
"""The fair comparison's shared settings (PROTOCOL.md, Fair comparison), for its datasets and for a user's file."""

PROFILES: dict[str, Profile] = {
    "smoke": Profile(
        name="smoke",
        description="seconds: a tiny synthetic set through `pixels`, for tests and nbval",
        datasets={
            "synthetic": {
                "backbone": "pixels",
                "dataset_options": {"n_superclasses": 3, "n_fine_per_super": 4, "n_per_class": 16, "dim": 16,
                                    "fine_spread": 0.5, "noise": 0.6},
            },
        },
        seeds=(0,),
        settings={"epochs": 3, "batch_size": 32, "lr": 1e-2, "eval_train_size": 64},
    ),
    "demo": Profile(
        name="demo",
        description=(
            "minutes, offline and real: FashionMNIST through pretrained EfficientNet-Lite0, plus a "
            "synthetic fine-grained set (many fine classes in few superclasses, a shared nuisance subspace); "
            "the same set with superclass-only training labels; the seven losses and four named variants, 5 seeds"
        ),
        datasets={
            "fashionmnist": {"backbone": "efficientnet_lite0", "backbone_options": {"resolution": 48},
                             "train_size": 20000, "eval_size": 5000, "val_size": 2000},
            "synthetic": _DEMO_SYNTHETIC,
            # the same set, heads trained on the 10 superclass labels only: how much fine structure
            # inside a superclass a loss keeps when nothing tells it the fine classes (PROTOCOL.md)
            "synthetic_super": _DEMO_SYNTHETIC,
        },
        losses=(*LOSSES, *DEMO_VARIANTS),
        seeds=(0, 1, 2, 3, 4),
        settings={"epochs": 5, "batch_size": 512, "lr": 1e-3},
    ),
    "paper_schedule": Profile(
        name="paper_schedule",
        description=(
            "the paper's optimisation protocol offline: Adam lr 1e-4, batch 512, 100 epochs, on the demo's "
            "FashionMNIST features (EfficientNet-Lite0, 20k/5k subsets, 2k validation), the seven losses, 5 seeds"
        ),
        datasets={
            "fashionmnist": {"backbone": "efficientnet_lite0", "backbone_options": {"resolution": 48},
                             "train_size": 20000, "eval_size": 5000, "val_size": 2000},
        },
        seeds=(0, 1, 2, 3, 4),
        settings={"epochs": 100, "batch_size": 512, "lr": 1e-4, "eval_every": 10},
        compare_with="demo",
    ),
    "fair": Profile(
        name="fair",
        description=(
            "the fair comparison beside the paper's protocol (PROTOCOL.md, Fair comparison): class-balanced "
            "P x K batches for every loss, the learning rate and one key constant tuned per loss on validation "
            "MAP@R, trained to convergence (patience 5, budget 40 epochs, 80 on the synthetic set), data drawn "
            "anew per seed; the demo's FashionMNIST and synthetic sets, the seven losses, grouped N-pair and the tuned Multi-Similarity baseline, 5 seeds"
        ),
        datasets={
            # P x K = pk_shape(C, 256) of the classes trained on: FashionMNIST's 10, 24 each (240 a batch); the
            # synthetic set's test classes are unseen, so its validation holds out every 4th of its 50 training
            # classes (class-disjoint) and 37 remain, 6 each (222 a batch)
            "fashionmnist": {"backbone": "efficientnet_lite0", "backbone_options": {"resolution": 48},
                             "train_size": 20000, "eval_size": 5000, "batch_size": 240, "samples_per_class": 24},
            # 80 epochs: at 40, 4 of 5 tuned InfoNCE runs reached the budget unconverged (PROTOCOL.md, Changes)
            "synthetic": {"backbone": "pixels", "dataset_options": _DEMO_SYNTHETIC["dataset_options"],
                          "val_size": 0, "val_split": "classes", "batch_size": 222, "samples_per_class": 6,
                          "epochs": 80},
        },
        losses=FAIR_LOSSES,
        seeds=(0, 1, 2, 3, 4),
        settings=_FAIR_SETTINGS,
        compare_with="demo",
        redraw_data=True,
        tuned=True,
    ),
    "fair_custom": Profile(
        name="fair_custom",
        description=("the fair protocol on your own features: `tune --features my.npz`, then `sweep --features my.npz "
                     "--profile fair` (P x K and the validation split from the file's classes, vgcore.your_features)"),
        # the file, its P x K and its validation split come with each config (vgcore.your_features.cell); the
        # tuned settings of a file live beside its results, keyed by its digest (vgcore.your_features.tuned_path)
        datasets={"custom": {"backbone": "pixels"}},
        losses=FAIR_LOSSES,
        seeds=(0, 1, 2, 3, 4),
        settings=_FAIR_SETTINGS,
        redraw_data=True,
    ),
    "paper": Profile(
        name="paper",
        description="the paper's setup: frozen ViT-B/32 on the five datasets, 100 epochs, batch 512, Adam 1e-4",
        datasets={
            name: {"backbone": "vit_b_32"}
            for name in ("cifar10", "fashionmnist", "cars196", "cub200", "tinyimagenet")
        },
        seeds=(0, 1, 2),
        settings={"epochs": 100, "batch_size": 512, "lr": 1e-4, "device": "auto"},
    ),
    "custom": Profile(
        name="custom",
        description=("your own features: a .npz of feature vectors and labels through the seven losses "
                     "(`python -m vgcore sweep --features my.npz`)"),
        datasets={"custom": {"backbone": "pixels"}},
        seeds=(0, 1, 2),
        # a starting point for feature files of 1,000s to 100,000s of rows on a CPU: evaluation (all of
        # the test split) every 5 epochs, not every epoch
        settings={"epochs": 20, "batch_size": 256, "lr": 1e-3, "eval_every": 5},
    ),
    "smoke_fair": Profile(
        name="smoke_fair",
        description=("seconds: the fair protocol (equal tuning, P x K batches, early stopping, probes) on a small "
                     "synthetic set, for tests"),
        datasets={
            # the smoke set with an 8-d nuisance subspace: raw Recall@1 about 0.40 and most heads gain 0.1-0.2
            # (measured 2026-12-03), so heads pass the learned gate and claims get judged
            "synthetic": {
                "backbone": "pixels",
                "dataset_options": {"n_superclasses": 3, "n_fine_per_super": 4, "n_per_class": 16, "dim": 16,
                                    "fine_spread": 0.5, "noise": 0.6, "nuisance_dim": 8, "nuisance_scale": 2.0},
            },
        },
        losses=(*LOSSES, "npair_groups", "multisimilarity"),
        seeds=(0, 1, 2),  # three: with two, a 95 % interval is too wide for any head to pass the learned gate
        settings={"epochs": 4, "batch_size": 24, "samples_per_class": 4, "sampler": "pk_distinct", "val_size": 24,
                  "patience": 2, "lr": 1e-2, "eval_train_size": 64, "probes": True},
        redraw_data=True,
        tuned=True,
    ),
}


PER_LEARNER_KEYS: tuple[str, ...] = ("loss", "loss_params", "lr", "weight_decay", "embedding_dim", "head",
                                     "head_hidden")
"""What may differ between the runs of one fused group (`vgcore.train.run_group`): each run's own
head, loss and optimiser. Every other key (data, seed, sampler, schedule, device) defines the batch
stream and evaluation the group shares."""


def group_key(config: RunConfig) -> str:
    """The canonical JSON of the keys a fused group shares: runs with equal keys can train together."""
    shared = {k: v for k, v in config.to_dict().items() if k not in PER_LEARNER_KEYS}
    return json.dumps(shared, sort_keys=True, default=str)


def check_group(configs: list[RunConfig]) -> None:
    """ValueError naming the first shared key in which two configs of a would-be group differ."""
    first = configs[0].to_dict()
    for config in configs[1:]:
        other = config.to_dict()
        for key in first:
            if key not in PER_LEARNER_KEYS and first[key] != other[key]:
                raise ValueError(
                    f"configs {configs[0].loss!r} and {config.loss!r} differ in {key} ({first[key]!r} vs {other[key]!r}): "
                    f"fused runs share the data, seed, sampler and schedule (only {', '.join(PER_LEARNER_KEYS)} may "
                    f"differ); run them in separate groups")


def get_profile(name: str) -> Profile:
    _check_choice("profile", name, tuple(PROFILES))
    return PROFILES[name]


def parse_value(raw: str) -> Any:
    """A command-line value: JSON where it parses (numbers, true/false, lists, dicts), else the string."""
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """Parse `key=value` strings (values as JSON where they parse, else strings).

    Dotted keys set one entry of a dict field: `loss_params.margin=0.2`.
    """
    flat: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"override {item!r} is not of the form key=value (e.g. epochs=3)")
        flat[key] = parse_value(raw)
    overrides = nest(flat)
    _check_keys(overrides)
    _check_not_cell_keys(overrides)
    return overrides


ABSENT = "<absent>"
"""How :func:`flat_diff` reports an entry that only the reference has."""


def flat_diff(values: dict[str, Any], reference: dict[str, Any]) -> dict[str, Any]:
    """The entries of `values` that differ from `reference`, as dotted override keys.

    Dict fields are compared entry by entry (``loss_params.margin``), as the command line sets them;
    an entry that `reference` has and `values` lacks is reported as :data:`ABSENT`.
    """
    diff: dict[str, Any] = {}
    for key in sorted(set(values) | set(reference)):
        a, b = values.get(key, ABSENT), reference.get(key, ABSENT)
        if isinstance(a, dict) and isinstance(b, dict):
            diff.update({f"{key}.{k}": v for k, v in flat_diff(a, b).items()})
        elif _canonical(a) != _canonical(b):
            diff[key] = a
    return diff


def nest(flat: dict[str, Any]) -> dict[str, Any]:
    """Dotted keys back to nested dicts: ``{"loss_params.margin": 0.3}`` -> ``{"loss_params": {"margin": 0.3}}``."""
    return set_dotted({}, flat)


def set_dotted(base: dict[str, Any], flat: dict[str, Any]) -> dict[str, Any]:
    """A copy of `base` (its dict values copied one level deep) with the dotted keys of `flat` set,
    without validation: ``set_dotted({"loss_params": {"a": 1}}, {"loss_params.b": 2})`` ->
    ``{"loss_params": {"a": 1, "b": 2}}``."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in base.items()}
    for key, value in flat.items():
        head, dot, sub = key.partition(".")
        if dot:
            out.setdefault(head, {})[sub] = value
        else:
            out[key] = value
    return out


def describe_diff(diff: dict[str, Any], reference: dict[str, Any] | None = None, *, there: str = "profile") -> str:
    """``epochs=40 (profile: 3), lr=0.1 (profile: 0.01)``: a diff in one line, for error messages."""
    if not diff:
        return "no differing keys"
    flat_ref = _flatten(reference or {})
    parts = []
    for key, value in diff.items():
        shown = f"{key}={json.dumps(value, default=str)}" if value != ABSENT else f"{key} unset"
        if reference is not None:
            shown += f" ({there}: {json.dumps(flat_ref.get(key, ABSENT), default=str)})"
        parts.append(shown)
    return ", ".join(parts)


def _flatten(values: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            out.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            out[key] = value
    return out


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _is_real(value: Any) -> bool:
    """An int or a float (not a bool, not a string), and finite."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _check_not_cell_keys(overrides: dict[str, Any]) -> None:
    fixed = [k for k in CELL_KEYS if k in overrides]
    if fixed:
        how = {"profile": "--profile", "dataset": "--dataset (sweep: --datasets)", "loss": "--loss (sweep: --losses)",
               "seed": "--seed (sweep: --seeds)"}
        raise ValueError(f"{', '.join(fixed)} cannot be set as an override (key=value): choose "
                         + ", ".join(f"{k} with {how[k]}" for k in fixed))


def _check_keys(values: dict[str, Any]) -> None:
    valid = [f.name for f in dataclasses.fields(RunConfig)]
    unknown = sorted(set(values) - set(valid))
    if unknown:
        raise ValueError(f"unknown config key(s) {unknown}; valid keys: {', '.join(valid)}")


def _check_options(config: RunConfig) -> None:
    """Check the loss, dataset and backbone options against what each accepts (ValueError naming them)."""
    from vgcore.data import content_options, pin_options
    from vgcore.losses import loss_hyperparameters

    loss_hyperparameters(config.loss, **config.loss_params)
    content_options(config.dataset, **config.dataset_options)
    registry.load("backbone", config.backbone).check_options(config.backbone_options)
    config.dataset_options = pin_options(config.dataset, config.dataset_options)


def _check_choice(name: str, value: Any, choices: tuple[str, ...], what: str | None = None) -> None:
    if value not in choices:
        raise ValueError(f"unknown {what or name} {value!r}; choose one of: {', '.join(choices)}")
