"""The paper's claims as tests over seeds: supported, contradicted or inconclusive.

A claim names a group of losses, the rest it is compared with, a summary metric and a direction.
It is a claim about the group, checked with the all-members rule: **every** member of the group
must beat **every** member of the rest. For one (group member g, rest member r) pair the evidence is
the per-seed paired difference ``d_s = sign * (m_g,s - m_r,s)`` (sign +1 when higher is the claimed
direction), paired by seed because all losses of a seed share data order and initialisation, and
its two-sided 95% Student-t interval ``mean(d) +- t_{0.975, n-1} sd(d) / sqrt(n)``. Then

- **supported**: every pair's interval lies above 0 (an intersection-union test: each pair at level
  0.05, no multiplicity correction needed for "all pairs");
- **contradicted**: some pair's interval lies below 0 (a rest member beats a group member beyond
  the seed spread);
- **inconclusive**: neither, or fewer than 2 shared seeds, or a metric constant across the losses
  of that dataset (a saturated ratio says nothing about the losses).

The interval reported with a verdict is the "worst" pair's (the smallest lower bound): the closest
call. A claim checked on a scale-free metric names its scale-coupled companion and reports the
companion's verdict beside it, so a reader sees when "more variance", "smaller margin" and "smaller
separation" are one effect (PROTOCOL.md "Claims").

Datasets enter the claims only when every loss learned (:func:`learned_gate`): its final test
Recall@1 beats the untrained head's by more than the seed spread.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from vgcore.registry import PAPER_LOSSES, VARIANTS

FINE_GRAINED = ("cars196", "cub200", "synthetic")
"""Datasets the fine-grained claims are checked on (synthetic: many fine classes in few superclasses)."""

SUPPORTED, CONTRADICTED, INCONCLUSIVE = "supported", "contradicted", "inconclusive"
LEVEL = 0.95
"""Confidence level of every interval."""
CONSTANT_RTOL = 1e-3
"""A metric whose loss means span less than this share of their magnitude is constant across losses."""


def is_constant(values, rtol: float = CONSTANT_RTOL) -> bool:
    """True when the finite `values` (e.g. the loss means of a metric) span at most `rtol` of their
    largest magnitude: a saturated or fixed metric that says nothing about the losses. Fewer than two
    finite values are not called constant."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if len(v) < 2:
        return False
    return float(v.max() - v.min()) <= rtol * max(float(np.abs(v).max()), 1e-12)


def _others(*group: str) -> tuple[str, ...]:
    return tuple(x for x in PAPER_LOSSES if x not in group)


@dataclass(frozen=True)
class Claim:
    """One claim: ``group`` beats ``rest`` on ``metric`` (``higher`` or lower), for the reason ``why``.

    ``coupled``: a scale-coupled companion metric checked and reported beside (see the module
    docstring). ``source``: "paper" for the paper's words, "ours" for a measure this project adds.
    """

    key: str
    text: str
    metric: str
    group: tuple[str, ...]
    rest: tuple[str, ...]
    higher: bool
    why: str
    coupled: str | None = None
    fine_grained_only: bool = False
    source: str = "paper"


CT_IN = ("contrastive", "infonce")
TR_SCL = ("triplet", "scl")

CLAIMS: tuple[Claim, ...] = (
    Claim("triplet_scl_keep_variance", "Triplet/SCL keep more intra-class variance than Contrastive/InfoNCE",
          "intra_var", TR_SCL, CT_IN, higher=True,
          why="the claim is about spread itself; on the unit sphere it is 1 - ||mu_c||^2, so it moves with "
              "the centroid norm (centroid_norm_mean)"),
    Claim("triplet_scl_clearer_margins", "Triplet/SCL have clearer margins than every other loss",
          "margin_rel_mean", TR_SCL, _others(*TR_SCL), higher=True,
          why="the margin in units of the class radius is free of the centroid norm; the raw margin shrinks "
              "whenever a class spreads", coupled="margin_mean"),
    Claim("triplet_scl_win_fine_grained", "Triplet/SCL win top-1 retrieval on fine-grained sets",
          "recall@1", TR_SCL, _others(*TR_SCL), higher=True, why="the paper's retrieval metric",
          fine_grained_only=True),
    Claim("contrastive_infonce_compact", "Contrastive/InfoNCE compact embeddings more than Triplet/SCL",
          "intra_var", CT_IN, TR_SCL, higher=False, why="compaction is lower intra-class variance"),
    Claim("contrastive_infonce_fast", "Contrastive/InfoNCE converge faster than Triplet/SCL",
          "loss_convergence_step", CT_IN, TR_SCL, higher=False,
          why="steps until the smoothed training loss covered 90% of its change (step resolution)"),
    Claim("contrastive_infonce_compact_fast", "Contrastive/InfoNCE compact faster than Triplet/SCL",
          "compaction_epoch1", CT_IN, TR_SCL, higher=True,
          why="share of its own change in training-subset intra-class variance done in the first epoch"),
    Claim("contrastive_infonce_many_updates", "Contrastive/InfoNCE spread each update over more samples",
          "grad_effective_share_mean", CT_IN, TR_SCL, higher=True,
          why="Kish's effective share of the tangential per-sample gradient norms (threshold-free)",
          source="ours"),
    Claim("contrastive_infonce_small_updates", "Contrastive/InfoNCE make smaller per-sample updates",
          "emb_grad_norm_mean_mean", CT_IN, TR_SCL, higher=False,
          why="mean tangential per-sample gradient norm over the grad-active samples"),
    Claim("contrastive_infonce_active", "Contrastive/InfoNCE keep more samples active (the abstract's active ratio)",
          "grad_active_ratio_mean", CT_IN, TR_SCL, higher=True,
          why="share of samples with B * ||tangential dL/dz_i|| > 1e-3"),
    Claim("contrastive_infonce_oversimplify", "Contrastive/InfoNCE oversimplify class structure (less fine "
          "structure kept inside a superclass than Triplet/SCL)", "fine_recall@1_within_super", CT_IN, TR_SCL,
          higher=False, why="fine-class Recall@1 among the members of the query's superclass"),
    Claim("triplet_fewer_updates", "Triplet updates through fewer samples than every other loss",
          "grad_effective_share_mean", ("triplet",), _others("triplet"), higher=False,
          why="Kish's effective share of the tangential per-sample gradient norms", source="ours"),
    Claim("triplet_stronger_updates", "Triplet's per-sample updates are stronger than every other loss's",
          "emb_grad_norm_mean_mean", ("triplet",), _others("triplet"), higher=True,
          why="mean tangential per-sample gradient norm over the grad-active samples"),
    Claim("npair_large_separation", "N-pair reaches the largest separation between classes",
          "dir_centroid_dist_mean", ("npair",), _others("npair"), higher=True,
          why="distances of the centroid directions are free of the centroid norm", coupled="centroid_dist_mean"),
    Claim("npair_uneven_spacing", "N-pair spaces its classes the most unevenly",
          "dir_centroid_dist_cv", ("npair",), _others("npair"), higher=True,
          why="CV of the distances of the centroid directions", coupled="centroid_dist_cv"),
)

VERDICT_COLUMNS = ("claim", "text", "dataset", "metric", "verdict", "worst_pair", "diff", "ci_low", "ci_high",
                   "ref_mean", "n_seeds", "coupled", "coupled_verdict", "note")


def paired_interval(a: Sequence[float], b: Sequence[float], level: float = LEVEL) -> tuple[float, float, float, int]:
    """Mean of the paired differences ``a - b`` and its two-sided Student-t interval; NaN below 2 pairs.

    Returns ``(mean, low, high, n)``. A zero standard deviation gives a zero-width interval.
    """
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    d = d[np.isfinite(d)]
    n = len(d)
    if n == 0:
        return math.nan, math.nan, math.nan, 0
    mean = float(d.mean())
    if n < 2:
        return mean, math.nan, math.nan, n
    half = float(stats.t.ppf(0.5 + level / 2, n - 1) * d.std(ddof=1) / math.sqrt(n))
    return mean, mean - half, mean + half, n


def _by_seed(frame: pd.DataFrame, loss: str, metric: str) -> pd.Series:
    return frame.loc[frame["loss"] == loss].set_index("seed")[metric]


def compare_groups(frame: pd.DataFrame, metric: str, group: Iterable[str], rest: Iterable[str],
                   higher: bool) -> dict:
    """The all-members test of ``group`` against ``rest`` on one dataset's rows (see the module docstring).

    Returns ``verdict``, the worst pair and its interval (in the claimed direction: positive favours
    the claim), the smallest number of shared seeds, and a ``note`` when the verdict is forced.
    """
    sign = 1.0 if higher else -1.0
    present = set(frame["loss"])
    group = [g for g in group if g in present]
    rest = [r for r in rest if r in present]
    if not group or not rest:
        return {"verdict": None}
    means = frame.groupby("loss")[metric].mean()
    values = means[group + rest].to_numpy(dtype=float)
    if np.isnan(values).all():  # e.g. superclass structure on a dataset without superclasses
        return {"verdict": None}
    if not np.isfinite(values).all():
        return _row(INCONCLUSIVE, None, math.nan, math.nan, math.nan, math.nan, 0, "the metric is undefined here")
    if is_constant(values):
        return _row(INCONCLUSIVE, None, math.nan, math.nan, math.nan, math.nan, 0,
                    f"constant across losses ({values.min():.4g} to {values.max():.4g}): says nothing")
    pairs = []
    for g in group:
        for r in rest:
            a, b = _by_seed(frame, g, metric), _by_seed(frame, r, metric)
            shared = a.index.intersection(b.index)
            mean, low, high, n = paired_interval(sign * a[shared], sign * b[shared])
            pairs.append((f"{g} vs {r}", mean, low, high, float(means[r]), n))
    n_min = min(p[5] for p in pairs)
    if n_min < 2:
        worst = min(pairs, key=lambda p: p[1])
        return _row(INCONCLUSIVE, *worst[:5], n_min, "fewer than 2 shared seeds: no interval")
    worst = min(pairs, key=lambda p: p[2])
    if any(p[3] < 0 for p in pairs):
        verdict = CONTRADICTED
        worst = min(pairs, key=lambda p: p[3])  # the pair that contradicts most clearly
    elif all(p[2] > 0 for p in pairs):
        verdict = SUPPORTED
    else:
        verdict = INCONCLUSIVE
    return _row(verdict, *worst[:5], n_min, "")


def _row(verdict, pair, mean, low, high, ref, n, note) -> dict:
    """One verdict; ``ref`` is the mean of the pair's rest member (the scale of the difference)."""
    return {"verdict": verdict, "worst_pair": pair, "diff": mean, "ci_low": low, "ci_high": high,
            "ref_mean": ref, "n_seeds": n, "note": note}


def check_claims(summary: pd.DataFrame, claims: Sequence[Claim] = CLAIMS, fine_grained=FINE_GRAINED,
                 datasets: Iterable[str] | None = None) -> pd.DataFrame:
    """Each claim on each dataset (those in ``datasets``; default all): one row of :data:`VERDICT_COLUMNS`.

    A claim is skipped on a dataset where its metric is missing from the table, where it is
    fine-grained only and the dataset is not, or where the group or the rest has no run.
    """
    rows = []
    chosen = set(summary["dataset"]) if datasets is None else set(datasets)
    for claim in claims:
        if claim.metric not in summary.columns:
            continue
        for dataset, frame in summary.groupby("dataset", sort=True):
            if dataset not in chosen or (claim.fine_grained_only and dataset not in fine_grained):
                continue
            result = compare_groups(frame, claim.metric, claim.group, claim.rest, claim.higher)
            if result["verdict"] is None:
                continue
            coupled = (compare_groups(frame, claim.coupled, claim.group, claim.rest, claim.higher)["verdict"]
                       if claim.coupled and claim.coupled in frame.columns else None)
            note = result["note"]
            if coupled and coupled != result["verdict"]:
                note = (note + "; " if note else "") + f"on the scale-coupled {claim.coupled}: {coupled}"
            rows.append({"claim": claim.key, "text": claim.text, "dataset": dataset, "metric": claim.metric,
                         **result, "coupled": claim.coupled, "coupled_verdict": coupled, "note": note})
    return pd.DataFrame(rows, columns=list(VERDICT_COLUMNS))


def learned_gate(epochs: pd.DataFrame, split: str = "test", metric: str = "recall@1") -> pd.DataFrame:
    """Did every loss learn? Per (dataset, loss): the final ``metric`` minus the untrained head's (epoch 0),
    paired by seed, with its interval; ``learned`` when the interval lies above 0.

    One row per (dataset, loss) with ``untrained``, ``final`` (seed means), ``diff``, ``ci_low``,
    ``ci_high``, ``n_seeds`` and ``learned``.
    """
    frame = epochs.loc[epochs["split"] == split]
    rows = []
    for (dataset, loss), runs in frame.groupby(["dataset", "loss"], sort=True):
        last = runs.loc[runs.groupby("seed")["epoch"].idxmax()].set_index("seed")[metric]
        first = runs.loc[runs["epoch"] == 0].set_index("seed")[metric]
        shared = last.index.intersection(first.index)
        mean, low, high, n = paired_interval(last[shared], first[shared])
        rows.append({"dataset": dataset, "loss": loss, "untrained": float(first.mean()), "final": float(last.mean()),
                     "diff": mean, "ci_low": low, "ci_high": high, "n_seeds": n,
                     "learned": bool(n >= 2 and low > 0)})
    return pd.DataFrame(rows, columns=["dataset", "loss", "untrained", "final", "diff", "ci_low", "ci_high",
                                       "n_seeds", "learned"])


def learned_datasets(gate: pd.DataFrame, losses: Iterable[str] = PAPER_LOSSES) -> list[str]:
    """Datasets on which every one of ``losses`` (present there) learned."""
    losses = set(losses)
    rows = gate.loc[gate["loss"].isin(losses)]
    return sorted(d for d, g in rows.groupby("dataset") if bool(g["learned"].all()))


def variant_claims(claims: Sequence[Claim] = CLAIMS, variants: dict[str, str] = VARIANTS) -> list[tuple[str, Claim]]:
    """``(variant, claim)`` for each claim that names a loss with a variant, the variant in its place."""
    return [(variant, dataclasses.replace(c, group=_swap(c.group, base, variant), rest=_swap(c.rest, base, variant)))
            for variant, base in variants.items() for c in claims if base in c.group or base in c.rest]


def _swap(names: tuple[str, ...], old: str, new: str) -> tuple[str, ...]:
    return tuple(new if x == old else x for x in names)


def variant_table(summary: pd.DataFrame, default: pd.DataFrame, datasets: Iterable[str] | None = None) -> pd.DataFrame:
    """Which verdicts change when a loss is replaced by its named variant (e.g. ``npair_all`` for ``npair``).

    ``default`` is :func:`check_claims`'s table for the same summary; rows for every (claim, dataset,
    variant) whose variant runs exist, with both verdicts and ``changed``.
    """
    rows = []
    present = set(summary["loss"])
    for variant, claim in variant_claims():
        if variant not in present:
            continue
        checked = check_claims(summary, [claim], datasets=datasets)
        for _, row in checked.iterrows():
            base = default.loc[(default["claim"] == row["claim"]) & (default["dataset"] == row["dataset"]), "verdict"]
            if base.empty:
                continue
            rows.append({"claim": row["claim"], "dataset": row["dataset"], "variant": f"{VARIANTS[variant]} -> {variant}",
                         "default_verdict": base.iloc[0], "variant_verdict": row["verdict"],
                         "changed": base.iloc[0] != row["verdict"], "variant_worst_pair": row["worst_pair"],
                         "variant_ci": _interval_text(row)})
    return pd.DataFrame(rows, columns=["claim", "dataset", "variant", "default_verdict", "variant_verdict",
                                       "changed", "variant_worst_pair", "variant_ci"])


NOT_CHECKED = "not checked"
"""A claim a profile made no verdict on (its dataset failed the learned-heads gate, or was not run)."""


def compare_verdicts(a: pd.DataFrame, b: pd.DataFrame, names: tuple[str, str]) -> pd.DataFrame:
    """Verdicts of two claims tables (e.g. two training schedules) side by side, ``changed`` marked.
    A check only one table makes (its dataset failed the other's learned-heads gate, or was not run
    there) reads "not checked" on the other side and is not a change."""
    keys = ["claim", "dataset"]
    merged = a[[*keys, "verdict"]].merge(b[[*keys, "verdict"]], on=keys, how="outer", suffixes=("_a", "_b"))
    merged = merged.rename(columns={"verdict_a": names[0], "verdict_b": names[1]})
    both = merged[list(names)].notna().all(axis=1)
    merged[list(names)] = merged[list(names)].fillna(NOT_CHECKED)
    merged["changed"] = both & (merged[names[0]] != merged[names[1]])
    return merged


def _interval_text(row) -> str:
    if row["worst_pair"] is None or (isinstance(row["worst_pair"], float) and math.isnan(row["worst_pair"])):
        return ""
    if math.isnan(row["ci_low"]):
        return f"{row['diff']:+.3g}"
    return f"{row['diff']:+.3g} [{row['ci_low']:+.3g}, {row['ci_high']:+.3g}]"


def format_claims(claims: pd.DataFrame) -> pd.DataFrame:
    """:func:`check_claims`'s table for reading: the claim in words, its verdict, the closest pair with
    the 95% interval of its paired difference (positive favours the claim), and notes."""
    if claims.empty:
        return pd.DataFrame(columns=["claim", "dataset", "metric", "verdict", "closest pair", "difference [95% CI]",
                                     "seeds", "note"])
    return pd.DataFrame({
        "claim": claims["text"],
        "dataset": claims["dataset"],
        "metric": claims["metric"],
        "verdict": claims["verdict"],
        "closest pair": claims["worst_pair"].fillna(""),
        "difference [95% CI]": [_interval_text(r) for _, r in claims.iterrows()],
        "seeds": claims["n_seeds"],
        "note": claims["note"].fillna(""),
    })


def claims_tables(summary: pd.DataFrame, epochs: pd.DataFrame, compare: pd.DataFrame | None = None,
                  names: tuple[str, str] = ("this profile", "other")) -> dict[str, pd.DataFrame]:
    """Everything the claims notebook reports, from one profile's collected runs.

    - ``gate``: :func:`learned_gate` per dataset and loss; claims are drawn only from the datasets
      where every paper loss learned;
    - ``claims``: :func:`check_claims` on those datasets (raw, with intervals);
    - ``variants``: :func:`variant_table`;
    - ``schedules``: :func:`compare_verdicts` against ``compare`` (another profile's
      :func:`format_claims` table, e.g. another training schedule's), empty when there is none.
    """
    gate = learned_gate(epochs)
    learned = learned_datasets(gate)
    claims = check_claims(summary, datasets=learned)
    schedules = (compare_verdicts(format_claims(claims), compare, names) if compare is not None and not compare.empty
                 else pd.DataFrame(columns=["claim", "dataset", *names, "changed"]))
    return {"gate": gate, "claims": claims, "variants": variant_table(summary, claims, datasets=learned),
            "schedules": schedules}
