"""Your embeddings and your features against the seven losses: what ``python -m vgcore diagnose`` and
notebook ``07_your_data`` show.

- :func:`diagnose`: VARIANCE, retrieval and (where given) superclass structure of embeddings you
  trained yourself (a ``.npz`` as :mod:`vgcore.data.custom` reads it), beside the seven losses'
  values on the same features when their runs (``python -m vgcore sweep --features F.npz``) exist.
- :func:`custom_runs`: the runs of profile ``custom`` on one features file that pass their check,
  each with its configuration (what names its row), and why the others were left out;
  :func:`configs_for` and :func:`collect_configs`: the runs notebook ``07_your_data`` trains and reads.
- :func:`what_this_means`: the claims checked on those runs, and the choice they suggest, in words.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass

import numpy as np
import pandas as pd

DIAGNOSE_METRICS = ("intra_var", "inter_var", "centroid_dist_mean", "centroid_dist_cv", "margin_mean", "density",
                    "recall@1", "map@r", "r_precision")
"""The columns of the comparison (VARIANCE and retrieval), then the superclass ones where given."""

YOURS = "your embeddings"


@dataclass
class Diagnosis:
    """The comparison table (``YOURS`` first, then one row per loss and configuration: seed mean ± std) and notes."""

    table: pd.DataFrame
    metrics: dict[str, float]
    evaluated: str
    n_runs: int
    notes: list[str]

    def __str__(self) -> str:
        lines = [f"embeddings evaluated on {self.evaluated}", "", self.table.to_markdown(index=False), ""]
        return "\n".join(lines + self.notes)


def custom_runs(results_root: str | os.PathLike, features: str | os.PathLike,
                labels_path=None) -> tuple[pd.DataFrame, list[str]]:
    """The ``summary`` table (the columns of :func:`vgcore.results.collect`) of the runs on the features
    file ``features`` (matched by its content digest, in whichever variant folder they live: every run
    on a user's file differs from its profile by its path): profile ``custom``'s, and the fair
    protocol's (profile ``fair_custom``) at the settings the file's current tuning chose
    (:func:`vgcore.your_features.tuned`), that pass :func:`vgcore.results.check_run`; with ``path`` and
    ``configuration`` (:func:`_configurations`; a fair run's starts with ``fair``, and says how many
    of its loss's runs reached the budget unconverged) columns; and, for each other run on the file,
    why it was left out."""
    from pathlib import Path

    from vgcore import results, your_features
    from vgcore.data.custom import load_file

    sha256 = load_file(features, labels_path).sha256
    tuned = your_features.tuned(results_root, sha256)
    paths, left_out = [], []
    for profile in ("custom", your_features.PROFILE):
        for path in sorted(p.parent for p in (Path(results_root) / profile).glob("**/seed*/summary.json")):
            if _features_digest(path) != sha256:
                continue
            try:
                results.check_run(path)
            except (results.RunIntegrityError, results.StaleRunError) as err:
                left_out.append(str(err))
                continue
            if profile == your_features.PROFILE and not _at_tuned(path, tuned):
                left_out.append(f"{path}: trained at settings the file's tuning no longer chooses "
                                f"({your_features.tuned_path(results_root)}); `python -m vgcore sweep --features "
                                f"{features} --profile fair` trains the current ones")
                continue
            paths.append(path)
    if not paths:
        return results.runs_frame([], "summary").assign(path=[], configuration=[]), left_out
    configs = [json.loads((p / "config.json").read_text()) for p in paths]
    frame = results.runs_frame(paths, "summary").assign(path=paths)
    fair = np.array([c["profile"] == your_features.PROFILE for c in configs])
    labels = np.empty(len(paths), dtype=object)
    if (~fair).any():
        labels[~fair] = _configurations([c for c, f in zip(configs, fair, strict=True) if not f])
    if fair.any():  # the tuned settings differ per loss by design: not a configuration of their own
        own = _configurations([c for c, f in zip(configs, fair, strict=True) if f], ignore=("lr", "loss_params."))
        labels[fair] = [f"fair, {o}" if o else "fair" for o in own]
    frame = frame.assign(configuration=labels)
    if "converged" in frame.columns and fair.any():
        for (_, label), group in frame[fair].groupby(["loss", "configuration"]):
            stuck = int((group["converged"] == False).sum())  # noqa: E712 (a column of bools and NaN)
            if stuck:
                frame.loc[group.index, "configuration"] = f"{label}, {stuck}/{len(group)} unconverged"
    return frame, left_out


def _at_tuned(run, tuned: dict[str, dict]) -> bool:
    """Whether a fair run's learning rate and constants are those its file's tuning chose for its loss."""
    config = json.loads((run / "config.json").read_text())
    entry = tuned.get(config["loss"])
    return entry is not None and config["lr"] == entry["lr"] and all(
        config["loss_params"].get(k) == v for k, v in entry["loss_params"].items())


def _features_digest(run) -> str | None:
    """The digest of the features file the run's config.json names (None when it cannot be read)."""
    try:
        return json.loads((run / "config.json").read_text())["dataset_options"].get("sha256")
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _configurations(configs: list[dict], ignore: tuple[str, ...] = ()) -> list[str]:
    """How each config differs from the others: its overrides that not all of them share
    (``epochs=40``), in words; ``""`` where it has none. Keys starting with a prefix in `ignore` are
    not counted."""
    from vgcore.config import describe_diff
    from vgcore.results import overrides_of

    overrides = [{k: v for k, v in overrides_of(c).items() if not k.startswith(ignore)}
                 for c in configs]
    shared = {k for k, v in overrides[0].items() if all(k in o and o[k] == v for o in overrides)}
    return [describe_diff(own) if (own := {k: v for k, v in o.items() if k not in shared}) else "" for o in overrides]


def configs_for(features: str | os.PathLike, losses="all", seeds=None, labels_path=None, **settings) -> list:
    """The ``custom`` profile's RunConfigs (loss x seed) on a features file, with config overrides ``settings``.

    ``losses``: ``"all"`` or a list of loss names; ``seeds``: a list (default the profile's). The file
    is checked here, before anything trains.
    """
    from vgcore.config import get_profile
    from vgcore.workflow import selection

    profile = get_profile("custom")
    _, chosen, seeds = selection(profile, None, None if losses == "all" else losses, seeds)
    files = {"path": str(features), **({"labels_path": str(labels_path)} if labels_path else {})}
    options = {**settings.pop("dataset_options", {}), **files}
    return [profile.config("custom", loss, seed, dataset_options=options, **settings)
            for loss in chosen for seed in seeds]


def collect_configs(results_root: str | os.PathLike, configs, table: str = "summary") -> pd.DataFrame:
    """The complete runs of exactly these configs (wherever their config puts them: a run on a user's
    file lives in a variant folder) as one table of :func:`vgcore.results.runs_frame`, with a ``path``
    column."""
    from vgcore import results

    paths = [results.run_dir(results_root, c) for c in configs]
    done = [p for p, c in zip(paths, configs, strict=True) if results.is_current(p, c.config_hash())]
    if not done:
        raise ValueError(f"none of these {len(configs)} runs is complete under {results_root!r}: train them first "
                         "(vgcore.train.sweep(configs, results_root))")
    frame = results.runs_frame(done, table)
    if table == "summary":
        return frame.assign(path=done)
    return frame


def diagnose(embeddings: str | os.PathLike, *, labels_path=None, features: str | os.PathLike | None = None,
             features_labels=None, results_root: str | os.PathLike = "results", nmi: bool = False) -> Diagnosis:
    """VARIANCE, retrieval and superclass structure of ``embeddings`` (a features-style ``.npz``: your
    model's output for your samples, with ``labels`` and optionally ``superclasses`` and ``split``),
    beside the seven losses trained on ``features`` (the file given to ``sweep --features``).

    Which rows are evaluated: the file's own ``split`` test rows if it has one; else, when it holds
    the same samples as ``features`` (same count and labels) and runs exist, the runs' test split,
    so both sides are measured on the same samples; else every row.
    """
    from vgcore.data.custom import heldout_mask, load_file
    from vgcore.metrics import retrieval_metrics, superclass_metrics, variance

    emb = load_file(embeddings, labels_path)
    feat = None if features is None else load_file(features, features_labels)
    runs, left_out = (pd.DataFrame(), []) if feat is None else custom_runs(results_root, feat.path, features_labels)
    notes = [f"left out: {reason}" for reason in left_out]
    rows, evaluated = np.ones(len(emb), dtype=bool), f"all {len(emb)} rows of {emb.path.name}"
    aligned = feat is not None and len(feat) == len(emb) and np.array_equal(
        np.array(feat.class_names)[feat.labels], np.array(emb.class_names)[emb.labels])
    if emb.is_test is not None:
        rows, evaluated = emb.is_test, f"the {int(emb.is_test.sum())} test rows of {emb.path.name} (its 'split')"
    elif aligned and not runs.empty:
        options = json.loads((runs["path"][0] / "config.json").read_text())["dataset_options"]
        rows = heldout_mask(feat, options.get("class_split", "shared"), options.get("test_fraction", 0.5),
                            options.get("seed", 0))
        evaluated = f"the {int(rows.sum())} test rows of {feat.path.name}, as the seven losses' runs"
    elif not runs.empty:
        notes.append(f"note: {emb.path.name} does not hold the same samples as {feat.path.name} (count and labels), "
                     "so it is evaluated on all its rows and the runs on their test split")
    superclasses = emb.superclasses if emb.superclasses is not None else (
        feat.superclasses if aligned and feat.superclasses is not None else None)
    z, y = emb.features[rows], emb.labels[rows]
    mine = {**variance(z, y), **retrieval_metrics(z, y, nmi=nmi)}
    columns = list(DIAGNOSE_METRICS) + (["nmi"] if nmi else [])
    if superclasses is not None:
        mine.update(superclass_metrics(z, y, superclasses[rows]))
        columns += ["superclass_recall@1", "fine_errors_in_superclass"]
    table = pd.DataFrame([{"embeddings": YOURS, **{k: _fmt(mine[k]) for k in columns}}])
    if feat is not None and runs.empty:
        notes.append(f"no complete runs of the seven losses on {feat.path.name} under {results_root}/; train them "
                     f"with `python -m vgcore sweep --features {feat.path}` to see where yours stand")
    if not runs.empty:
        runs = _with_superclass_metrics(runs, feat, columns) if superclasses is not None else runs
        rows = _loss_rows(runs, [c for c in columns if c in runs.columns])
        table = pd.concat([table, rows.drop(columns="seeds")], ignore_index=True)
        seeds = ", ".join(f"{name}: {n} seed{'s' if n > 1 else ''}" for name, n in zip(rows["embeddings"], rows["seeds"],
                                                                                         strict=True))
        notes.append(f"losses: seed mean ± std, one row per loss and configuration ({seeds}), of the runs on "
                     f"{feat.path.name} that pass their check (profile custom; 'fair': the fair protocol at the file's "
                     "tuned settings, each run at its best validation checkpoint; their test split)")
    return Diagnosis(table, mine, evaluated, len(runs), notes)


def _fmt(value: float) -> str:
    return "nan" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


def _loss_rows(runs: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """One row per loss and configuration: ``embeddings`` (the loss, and the configuration where there is
    one), the columns' seed mean ± std and ``seeds`` (how many runs)."""
    from vgcore.report.analysis import aggregate, mean_std_table

    by = ("loss", "configuration")
    table = mean_std_table(runs, columns, by)
    names = [f"{loss} ({config})" if config else loss for loss, config in zip(table["loss"], table["configuration"],
                                                                                strict=True)]
    seeds = aggregate(runs, ["seed"], by)[("seed", "n")].to_numpy()
    return table.assign(embeddings=names, seeds=seeds)[["embeddings", *columns, "seeds"]]


def _with_superclass_metrics(runs: pd.DataFrame, feat, columns: list[str]) -> pd.DataFrame:
    """Each run's superclass metrics on its saved test embeddings (when they align with the file's test rows)."""
    from vgcore.data.custom import heldout_mask
    from vgcore.metrics import superclass_metrics
    from vgcore.results import load_run

    missing = [c for c in columns if c not in runs.columns or runs[c].isna().any()]
    if feat is None or feat.superclasses is None or not missing:
        return runs  # training recorded them (its evaluation had the superclasses)
    values = []
    for path in runs["path"]:
        run = load_run(path)
        options = run["config"]["dataset_options"]
        test = heldout_mask(feat, options.get("class_split", "shared"), options.get("test_fraction", 0.5),
                            options.get("seed", 0))
        z, y = run.get("embeddings", (None, None))
        if z is None or len(z) != int(test.sum()):
            values.append({})  # a subset was evaluated (eval_size): no alignment with the file's rows
            continue
        values.append(superclass_metrics(z, y, feat.superclasses[test]))
    extra = pd.DataFrame(values, index=runs.index)
    return runs.assign(**{c: (runs[c].fillna(extra[c]) if c in runs.columns else extra[c])
                          for c in missing if c in extra.columns})


def what_this_means(summary: pd.DataFrame, claims: pd.DataFrame) -> str:
    """Markdown: each of the paper's claims checked on these runs (:func:`vgcore.report.claims.check_claims`:
    supported, contradicted or inconclusive, with the closest pair's 95% interval over seeds), then
    which loss to reach for, by what the runs measured."""
    from vgcore.report.claims import format_claims

    lines = ["**The paper's claims on your data**", ""]
    for _, row in format_claims(claims).iterrows():
        pair, diff = row["closest pair"], row["difference [95% CI]"]
        interval = f" ({pair}: {diff}, {row['seeds']} seeds)" if pair else ""
        note = f"; {row['note']}" if row["note"] else ""
        lines.append(f"- {row['verdict']}: {row['claim']}{interval}{note}")
    if claims.empty:
        lines.append("- no claim could be checked (each needs both of its loss groups among the runs)")
    means = summary.groupby("loss")[["intra_var", "recall@1", "val_convergence_step",
                                     "centroid_dist_cv"]].mean()
    lines += ["", "**What to reach for**", "",
              f"- most within-class diversity kept (highest intra-class variance): **{means['intra_var'].idxmax()}**; "
              f"most compact classes: **{means['intra_var'].idxmin()}**",
              f"- best top-1 retrieval: **{means['recall@1'].idxmax()}** "
              f"(Recall@1 {means['recall@1'].max():.3f}, lowest {means['recall@1'].min():.3f})",
              f"- fastest convergence (steps to 90% of the Recall@1 gain on held-out data): "
              f"**{means['val_convergence_step'].idxmin() if means['val_convergence_step'].notna().any() else 'none rose'}**",
              f"- most evenly spaced classes (lowest centroid-distance CV): **{means['centroid_dist_cv'].idxmin()}**",
              "", "The paper's guidance reads: Triplet/SCL when within-class diversity matters (fine-grained "
              "retrieval), Contrastive/InfoNCE for fast compaction. Where the lines above disagree with it, your "
              "data says otherwise; an inconclusive verdict needs more seeds (or a larger gap)."]
    return "\n".join(lines)
