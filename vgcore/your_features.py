"""The fair comparison on your own features file (PROTOCOL.md, Fair comparison, "Paper scale and your
own features").

``python -m vgcore tune --features F`` tunes every loss on the file the way the fair build tunes its
datasets (the same search points, validation MAP@R, patience, one fused group per tuning seed);
``python -m vgcore sweep --features F --profile fair`` then trains the reporting runs with the
settings it chose, under profile ``fair_custom``; ``diagnose --features F`` sets them beside your
embeddings.

- :func:`cell`: what the file's classes decide: the P x K batch (:func:`vgcore.train.samplers.pk_shape`
  of the classes trained on) and the validation split (class-disjoint, every 4th training class, when
  the file's test classes are unseen and it trains at least 8; else :func:`validation_rows` rows);
- :func:`tuned_path`: where a tuning's choice lives, ``<results>/fair_custom-tuning/tuned.json``,
  keyed by the file's content digest (another file, or the same file changed, is not tuned);
- :func:`configs`: the reporting runs of the file with its tuned settings.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from vgcore.errors import UserError

PROFILE = "fair_custom"
"""The profile of every fair run on a user's file (its runs and trials live apart from ``fair``'s)."""
VALIDATION_ROWS = 2000
VALIDATION_FRACTION = 0.2
"""A row-disjoint validation split holds out ``min(2000, 20 %)`` of the training rows: the fair
build's 2,000 where the file is large, a fifth of a small file (PROTOCOL.md)."""
PK_BATCH = 256
"""The P x K batch holds at most 256 rows (the fair build's B) and at most half the training rows
(two batches an epoch); K is at most half the smallest class's training rows (even: the class's
validation rows are drawn per seed) and at least :data:`MIN_PER_CLASS`."""
MIN_PER_CLASS = 2


class NotTunedError(UserError):
    """The fair protocol on a file whose tuning has not run (or ran on other content)."""


def validation_rows(n_train: int) -> int:
    """Rows held out of `n_train` training rows for validation: ``min(2000, floor(0.2 n))``."""
    return min(VALIDATION_ROWS, int(n_train * VALIDATION_FRACTION))


def cell(features: str | os.PathLike, labels_path: str | os.PathLike | None = None,
         **options: Any) -> dict[str, Any]:
    """The config overrides of the fair protocol on the file: its ``dataset_options`` (`options`:
    ``class_split``, ``test_fraction``, ``seed``), ``val_split``/``val_size`` and the P x K batch
    (``batch_size`` = P K, ``samples_per_class`` = K) of the classes left to train on: P, K =
    ``pk_shape(C, min(256, rows / 2))``, K then capped at 2 floor(m / 4), m the smallest class's
    training rows (:data:`PK_BATCH`)."""
    from vgcore.data.custom import SPEC, heldout_mask, load_file
    from vgcore.train.samplers import VALIDATION_CLASS_STRIDE, pk_shape

    file = load_file(features, labels_path)
    content = SPEC.options(**{k: v for k, v in options.items() if k not in ("path", "labels_path", "sha256")})
    test = heldout_mask(file, content["class_split"], content["test_fraction"], content["seed"])
    trained = np.unique(file.labels[~test])
    unseen = not np.isin(np.unique(file.labels[test]), trained).any()
    counts = np.bincount(file.labels[~test])[trained]
    if unseen and trained.size >= 2 * VALIDATION_CLASS_STRIDE:  # tuned on unseen classes, as it is tested
        split = {"val_split": "classes", "val_size": 0}
        counts = np.delete(counts, np.arange(0, trained.size, VALIDATION_CLASS_STRIDE))
        rows = int(counts.sum())
    else:
        split = {"val_split": "rows", "val_size": validation_rows(int(counts.sum()))}
        rows = int(counts.sum()) - split["val_size"]
    if counts.min() < 2 * MIN_PER_CLASS:
        raise UserError(f"{Path(features).name}: a class has {int(counts.min())} training rows; the fair protocol's "
                        f"P x K batches draw K >= {MIN_PER_CLASS} distinct rows of a class and keep K at most half its "
                        f"rows, so every class needs {2 * MIN_PER_CLASS}: add rows, or use the custom profile "
                        "(drop --profile fair)")
    p, k = pk_shape(counts.size, min(PK_BATCH, rows // 2))
    k = min(k, 2 * (int(counts.min()) // 4))  # even, at most half the smallest class
    files = {"path": str(features), **({"labels_path": str(labels_path)} if labels_path else {})}
    return {"dataset_options": {**options, **files}, **split, "batch_size": p * k, "samples_per_class": k}


def _settings(features, labels_path, overrides: dict[str, Any] | None) -> dict[str, Any]:
    """:func:`cell` with `overrides` on top (their ``dataset_options`` passed to it)."""
    overrides = dict(overrides or {})
    return {**cell(features, labels_path, **overrides.pop("dataset_options", {})), **overrides}


def digest(features: str | os.PathLike, labels_path: str | os.PathLike | None = None) -> str:
    """The file's content digest (:class:`vgcore.data.custom.FeatureFile` ``sha256``): the tuning's key."""
    from vgcore.data.custom import load_file

    return load_file(features, labels_path).sha256


def tuned_path(results_root: str | os.PathLike) -> Path:
    """``<results>/fair_custom-tuning/tuned.json``: ``{digest: {loss: {"lr", "loss_params", ...}}}``."""
    return Path(results_root) / f"{PROFILE}-tuning" / "tuned.json"


def tuned(results_root: str | os.PathLike, sha256: str) -> dict[str, dict]:
    """The tuned entries (loss -> entry) of the file with digest `sha256`; empty when it has none."""
    path = tuned_path(results_root)
    return json.loads(path.read_text()).get(sha256, {}) if path.exists() else {}


def configs(features: str | os.PathLike, results_root: str | os.PathLike, *, labels_path=None,
            losses=None, seeds=None, overrides: dict[str, Any] | None = None) -> list:
    """The reporting runs (loss x seed, profile ``fair_custom``) of the file at its tuned settings.

    NotTunedError naming the command when a loss has no tuned entry for the file's content."""
    from vgcore.config import get_profile

    profile = get_profile(PROFILE)
    settings = _settings(features, labels_path, overrides)
    sha = digest(features, labels_path)
    chosen = tuned(results_root, sha)
    losses = list(losses or profile.losses)
    missing = [loss for loss in losses if loss not in chosen]
    if missing:
        raise NotTunedError(
            f"{Path(features).name} (sha256 {sha}) has no fair tuning for {', '.join(missing)} in "
            f"{tuned_path(results_root)}: run "
            f"`python -m vgcore tune --features {features}{f' --labels {labels_path}' if labels_path else ''} "
            f"--results {results_root}` first (it trains {len(profile.losses)} losses x 8 trials)")
    out = []
    for loss in losses:
        entry = {"lr": chosen[loss]["lr"], "loss_params": dict(chosen[loss]["loss_params"])}
        for seed in seeds or profile.seeds:
            out.append(profile.config("custom", loss, int(seed), **{**entry, **settings}))  # --set wins
    return out


def tune(features: str | os.PathLike, results_root: str | os.PathLike, *, labels_path=None, losses=None,
         seeds=None, overrides: dict[str, Any] | None = None, data_root=None, cache_dir=None,
         progress: bool = True, jobs: int = 1) -> dict[str, dict]:
    """The fair tuning on the file (:func:`vgcore.train.tune.tune`, profile ``fair_custom``, trials under
    ``<results>/fair_custom-tuning/custom-<digest>/``); its choice, loss -> entry, is merged into
    :func:`tuned_path` under the file's digest and returned."""
    from vgcore import tuning
    from vgcore.config import get_profile
    from vgcore.train import tune as tune_module

    profile = get_profile(PROFILE)
    settings = _settings(features, labels_path, overrides)
    frame = tune_module.tune(profile, results_root, datasets=["custom"], losses=losses or profile.losses,
                             seeds=tuple(seeds or tuning.TUNING_SEEDS), data_root=data_root, cache_dir=cache_dir,
                             progress=progress, overrides=settings, jobs=jobs)
    chosen = tune_module.picks(frame)["custom"]
    tune_module.write_tuned(profile, {digest(features, labels_path): chosen}, tuned_path(results_root))
    return chosen
