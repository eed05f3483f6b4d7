"""The paper's claims as tests over seeds, each verdict measured against a smallest effect of interest.

A claim names a group of losses, the rest it is compared with, a summary metric and a direction.
For one (group member g, rest member r) pair the evidence is the per-seed paired difference
``d_s = sign * (m_g,s - m_r,s)`` (sign +1 when higher is the claimed direction: a positive
difference favours the claim), paired by seed because all losses of a seed share data order and
initialisation, over every seed both ran (5 or more in the demo), and its two-sided 95% Student-t
interval ``[lo, hi] = mean(d) +- t_{0.975, n-1} sd(d) / sqrt(n)``.

Smallest effect of interest (:data:`SMALLEST_EFFECT`): per metric a ``delta`` in the metric's own
units, absolute ("abs", e.g. one point of Recall@1) or relative to the rest member's mean ("rel",
e.g. 5% of a variance), each with its reason; ``delta_units`` is a pair's delta in the metric's units.

Decision table of one pair (:func:`decide`), the first line that applies:

1. ``-delta < lo`` and ``hi < delta``: **negligible** (an equivalence test: the 95% interval inside
   +-delta is two one-sided tests at 2.5% each);
2. ``lo > delta``: **supported**;
3. ``lo > 0``: **significant, size uncertain**;
4. ``hi < -delta``: **contradicted**;
5. ``hi < 0``: **contradicted, size uncertain**;
6. otherwise: **inconclusive**.

Group rule (the all-members rule, :func:`combine`): every group member against every rest member;
the group's verdict is the weakest pair's on the order :data:`ORDER`, contradicted < contradicted,
size uncertain < negligible < inconclusive < significant, size uncertain < supported; the reported
closest pair is the pair that sets it (ties: the smallest lower bound). A member's own verdict
(:func:`member_verdicts`) combines its pairs by the same rule; the members whose verdict is weaker
than the best member's break the group claim (:func:`breaking_members`).

Forced inconclusive: fewer than 2 shared seeds (no interval), a metric undefined for some loss, or a
metric constant across the losses of the dataset (:func:`is_constant`: a saturated ratio says
nothing about the losses).

Companion: a claim may name a companion metric (scale-coupled, scale-dependent, or another
definition of the same thing) with its reason; its verdict is reported beside, and the note says
when it differs.

Two rows, one test (:func:`same_tests`): on a dataset, a claim whose metric is an earlier claim's
metric, or has ``|Spearman rho| >= 0.95`` with it over all runs (losses x seeds) of the dataset, is
flagged in ``same_test_as``; the earlier claim in :data:`CLAIMS` order keeps its row clean.

Gate (:func:`learned_gate`): a claim is checked on a dataset only where every loss it names learned
(final test Recall@1 above the untrained head's by more than the seed spread).

The tables are descriptive (:data:`DESCRIPTIVE_NOTE`). PROTOCOL.md "Claims" gives the rules and the
reason for each threshold.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from vgcore.registry import PAPER_LOSSES, VARIANTS
from vgcore.report.outputs import DESCRIPTIVE_NOTE  # the caption every claims table carries

FINE_GRAINED = ("cars196", "cub200", "synthetic")
"""Datasets the fine-grained retrieval claim is checked on (synthetic: many fine classes in few superclasses)."""
SUPERCLASS_ONLY = ("synthetic_super",)
"""Datasets whose heads are trained on superclass labels only: where oversimplification can show."""

SUPPORTED = "supported"
SIGNIFICANT = "significant, size uncertain"
NEGLIGIBLE = "negligible"
INCONCLUSIVE = "inconclusive"
CONTRADICTED_UNCERTAIN = "contradicted, size uncertain"
CONTRADICTED = "contradicted"
ORDER = (CONTRADICTED, CONTRADICTED_UNCERTAIN, NEGLIGIBLE, INCONCLUSIVE, SIGNIFICANT, SUPPORTED)
"""The verdicts from weakest to strongest support: a group takes its weakest pair's."""
RANK = {v: i for i, v in enumerate(ORDER)}

LEVEL = 0.95
"""Confidence level of every interval."""
CONSTANT_RTOL = 1e-3
"""A metric whose loss means span less than this share of their magnitude is constant across losses."""
SAME_TEST_RHO = 0.95
"""Two claims' metrics with |Spearman rho| at least this over a dataset's runs are one test."""
SAME_TEST_MIN_RUNS = 6
"""Fewer runs with both metrics than this: no rank correlation is computed (3 points give rho = +-1 by chance)."""

_FRACTION = "a fraction of queries: one point"
_SPREAD = "a variance, distance or margin: 5% of the rest member's mean"
_SHARE = "a share of samples or loss terms: two points"
_UPDATE = "a per-sample update size: 10% of the rest member's mean"
SMALLEST_EFFECT: dict[str, tuple[float, str, str]] = {
    "recall@1": (0.01, "abs", _FRACTION),
    "map@r": (0.01, "abs", _FRACTION),
    "fine_recall@1_within_super": (0.01, "abs", _FRACTION),
    "intra_var": (0.05, "rel", _SPREAD),
    "early_intra_var": (0.05, "rel", _SPREAD),
    "margin_rel_mean": (0.05, "rel", _SPREAD),
    "margin_mean": (0.05, "rel", _SPREAD),
    "dir_centroid_dist_mean": (0.05, "rel", _SPREAD),
    "dir_centroid_dist_cv": (0.05, "rel", _SPREAD),
    "centroid_dist_mean": (0.05, "rel", _SPREAD),
    "centroid_dist_cv": (0.05, "rel", _SPREAD),
    "centroid_norm_mean": (0.05, "rel", _SPREAD),
    "val_convergence_step": (0.42, "rel", "a step count on a log grid of ratio sqrt(2): one grid interval "
                                          "(sqrt(2) - 1 = 0.414, rounded up), at least one evaluation interval"),
    "tuple_active_ratio_mean": (0.02, "abs", _SHARE),
    "grad_active_ratio_mean": (0.02, "abs", _SHARE),
    "grad_effective_share_mean": (0.02, "abs", _SHARE),
    "adam_step_norm_mean_mean": (0.10, "rel", _UPDATE),
    "emb_grad_norm_mean_mean": (0.10, "rel", _UPDATE),
}
"""Metric -> (delta, kind "abs" or "rel", reason): the smallest effect of interest in the metric's units
("rel": a share of the pair's rest member's mean). Every claim's metric and companion has one."""


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

    ``companion``: a second metric checked and reported beside, for the reason ``companion_why``
    (e.g. the scale-coupled raw version of a scale-free metric). ``datasets``: the only datasets the
    claim is checked on (None: every dataset). ``source``: "paper" for the paper's words, "ours" for
    a measure this project adds.
    """

    key: str
    text: str
    metric: str
    group: tuple[str, ...]
    rest: tuple[str, ...]
    higher: bool
    why: str
    companion: str | None = None
    companion_why: str = ""
    datasets: tuple[str, ...] | None = None
    source: str = "paper"


CT_IN = ("contrastive", "infonce")
TR_SCL = ("triplet", "scl")
_SCALE_COUPLED = "scale-coupled: moves with the centroid norm when a class spreads"
_RAW_GRAD = ("scale-dependent: the raw tangential per-sample gradient norm follows each loss's temperature, "
             "scale and reduction")
_ADAM_STEP = ("each sample's share of Adam's actual step, ||(1 - beta1) G_i / (sqrt(v_hat) + eps)||, its mean "
              "weighted by itself over the batch (a moving sample's typical size, no threshold): free of the "
              "loss's scale")

CLAIMS: tuple[Claim, ...] = (
    Claim("triplet_scl_keep_variance", "Triplet/SCL keep more intra-class variance than Contrastive/InfoNCE",
          "intra_var", TR_SCL, CT_IN, higher=True,
          why="the claim is about spread itself; on the unit sphere it is 1 - ||mu_c||^2, so it moves with "
              "the centroid norm (centroid_norm_mean)"),
    Claim("triplet_scl_clearer_margins", "Triplet/SCL have clearer margins than every other loss",
          "margin_rel_mean", TR_SCL, _others(*TR_SCL), higher=True,
          why="the margin in units of the class radius is free of the centroid norm; the raw margin shrinks "
              "whenever a class spreads", companion="margin_mean", companion_why=_SCALE_COUPLED),
    Claim("triplet_scl_win_fine_grained", "Triplet/SCL win top-1 retrieval on fine-grained sets",
          "recall@1", TR_SCL, _others(*TR_SCL), higher=True, why="the paper's retrieval metric",
          datasets=FINE_GRAINED),
    Claim("contrastive_infonce_compact", "Contrastive/InfoNCE compact embeddings more than Triplet/SCL",
          "intra_var", CT_IN, TR_SCL, higher=False, why="compaction is lower intra-class variance"),
    Claim("contrastive_infonce_fast", "Contrastive/InfoNCE converge faster than Triplet/SCL",
          "val_convergence_step", CT_IN, TR_SCL, higher=False,
          why="first step of a log-spaced grid (ratio sqrt(2)) at which the normalised validation progress "
              "(R_t - R_0) / (R_final - R_0) of Recall@1 reached 0.9: one yardstick for every loss"),
    Claim("contrastive_infonce_compact_fast", "Contrastive/InfoNCE compact faster than Triplet/SCL",
          "early_intra_var", CT_IN, TR_SCL, higher=False,
          why="intra-class variance of the training probe at a fixed early step; the losses of a seed share "
              "their initialisation, so it compares directly (lower: compacted faster)"),
    Claim("contrastive_infonce_many_updates", "Contrastive/InfoNCE spread each update over more samples",
          "grad_effective_share_mean", CT_IN, TR_SCL, higher=True,
          why="Kish's effective share of the tangential per-sample gradient norms (threshold-free)",
          source="ours"),
    Claim("contrastive_infonce_small_updates", "Contrastive/InfoNCE make smaller per-sample updates",
          "adam_step_norm_mean_mean", CT_IN, TR_SCL, higher=False, why=_ADAM_STEP,
          companion="emb_grad_norm_mean_mean", companion_why=_RAW_GRAD),
    Claim("contrastive_infonce_active", "Contrastive/InfoNCE keep more samples active (the abstract's active ratio)",
          "tuple_active_ratio_mean", CT_IN, TR_SCL, higher=True,
          why="the predecessor paper's definition: share of loss terms that are positive",
          companion="grad_active_ratio_mean",
          companion_why="gradient-based: share of samples with B * ||tangential dL/dz_i|| > 1e-3"),
    Claim("contrastive_infonce_oversimplify", "Contrastive/InfoNCE oversimplify class structure (less fine "
          "structure kept inside a superclass than Triplet/SCL)", "fine_recall@1_within_super", CT_IN, TR_SCL,
          higher=False, why="fine-class Recall@1 among the members of the query's superclass, on heads trained "
                            "on superclass labels only (heads trained on fine labels cannot show it)",
          datasets=SUPERCLASS_ONLY),
    Claim("triplet_fewer_updates", "Triplet updates through fewer samples than every other loss",
          "grad_effective_share_mean", ("triplet",), _others("triplet"), higher=False,
          why="Kish's effective share of the tangential per-sample gradient norms", source="ours"),
    Claim("triplet_stronger_updates", "Triplet's per-sample updates are stronger than every other loss's",
          "adam_step_norm_mean_mean", ("triplet",), _others("triplet"), higher=True, why=_ADAM_STEP,
          companion="emb_grad_norm_mean_mean", companion_why=_RAW_GRAD),
    Claim("npair_large_separation", "N-pair reaches the largest separation between classes",
          "dir_centroid_dist_mean", ("npair",), _others("npair"), higher=True,
          why="distances of the centroid directions are free of the centroid norm",
          companion="centroid_dist_mean", companion_why=_SCALE_COUPLED),
    Claim("npair_uneven_spacing", "N-pair spaces its classes the most unevenly",
          "dir_centroid_dist_cv", ("npair",), _others("npair"), higher=True,
          why="CV of the distances of the centroid directions",
          companion="centroid_dist_cv", companion_why=_SCALE_COUPLED),
)

_RESULT = ("verdict", "closest_pair", "diff", "ci_low", "ci_high", "delta", "delta_kind", "delta_units", "ref_mean",
           "n_seeds", "note")
VERDICT_COLUMNS = ("claim", "text", "dataset", "metric", *_RESULT[:-1], "companion", "companion_verdict",
                   "same_test_as", "same_test_rho", "note")
"""Columns of :func:`check_claims`'s table."""
MEMBER_COLUMNS = ("claim", "text", "dataset", "metric", "member", *_RESULT[:-1], "breaks_claim", "note")
"""Columns of :func:`member_verdicts`'s table."""


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


def smallest_effect(metric: str, effects: dict[str, tuple[float, str, str]] | None = None) -> tuple[float, str]:
    """``(delta, kind)`` of `metric` in :data:`SMALLEST_EFFECT` (or `effects`); a metric without one raises."""
    effects = SMALLEST_EFFECT if effects is None else effects
    if metric not in effects:
        raise KeyError(f"no smallest effect of interest for {metric!r}: add it to vgcore.report.claims.SMALLEST_EFFECT "
                       "with its reason")
    delta, kind, _ = effects[metric]
    if kind not in ("abs", "rel"):
        raise ValueError(f"{metric}: the kind of a smallest effect is 'abs' or 'rel', not {kind!r}")
    return float(delta), kind


def effect_in_units(delta: float, kind: str, ref_mean: float) -> float:
    """The smallest effect in the metric's units: ``delta`` itself ("abs") or ``delta * |ref_mean|`` ("rel",
    ``ref_mean`` the pair's rest member's mean over seeds)."""
    return float(delta) if kind == "abs" else float(delta) * abs(float(ref_mean))


def decide(low: float, high: float, delta: float) -> str:
    """One pair's verdict from its 95% interval ``[low, high]`` (positive favours the claim) and the
    smallest effect ``delta`` (> 0, in the metric's units), the first rule that applies: inside
    ``(-delta, delta)`` negligible; ``low > delta`` supported; ``low > 0`` significant, size uncertain;
    ``high < -delta`` contradicted; ``high < 0`` contradicted, size uncertain; else inconclusive.
    A NaN end gives inconclusive."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return INCONCLUSIVE
    if -delta < low and high < delta:
        return NEGLIGIBLE
    if low > delta:
        return SUPPORTED
    if low > 0:
        return SIGNIFICANT
    if high < -delta:
        return CONTRADICTED
    if high < 0:
        return CONTRADICTED_UNCERTAIN
    return INCONCLUSIVE


def combine(pairs: Sequence[dict]) -> dict:
    """The weakest pair (each a dict with ``verdict`` and ``ci_low``) on :data:`ORDER`; ties: the smallest
    lower bound (NaN last). Its verdict is the group's (the all-members rule)."""
    return min(pairs, key=lambda p: (RANK[p["verdict"]], p["ci_low"] if math.isfinite(p["ci_low"]) else math.inf))


def _by_seed(frame: pd.DataFrame, loss: str, metric: str) -> pd.Series:
    return frame.loc[frame["loss"] == loss].set_index("seed")[metric]


def _pairs(frame: pd.DataFrame, metric: str, group: Sequence[str], rest: Sequence[str], higher: bool,
           effect: tuple[float, str]) -> tuple[list[dict], str]:
    """Every (g, r) pair's interval, delta and verdict, and a note when the verdict is forced for all."""
    sign = 1.0 if higher else -1.0
    means = frame.groupby("loss")[metric].mean()
    values = means[list(group) + list(rest)].to_numpy(dtype=float)
    forced = ("the metric is undefined here" if not np.isfinite(values).all() else
              f"constant across losses ({values.min():.4g} to {values.max():.4g}): says nothing"
              if is_constant(values) else "")
    delta, kind = effect
    pairs = []
    for g in group:
        for r in rest:
            if forced == "the metric is undefined here":
                mean, low, high, n = math.nan, math.nan, math.nan, 0
            else:
                a, b = _by_seed(frame, g, metric), _by_seed(frame, r, metric)
                shared = a.index.intersection(b.index)
                mean, low, high, n = paired_interval(sign * a[shared], sign * b[shared])
            units = effect_in_units(delta, kind, means[r])
            pairs.append({"member": g, "closest_pair": f"{g} vs {r}", "diff": mean, "ci_low": low, "ci_high": high,
                          "delta": delta, "delta_kind": kind, "delta_units": units, "ref_mean": float(means[r]),
                          "n_seeds": n, "verdict": INCONCLUSIVE if forced else decide(low, high, units)})
    if forced:
        return pairs, forced
    if min(p["n_seeds"] for p in pairs) < 2:
        return [{**p, "verdict": INCONCLUSIVE} for p in pairs], "fewer than 2 shared seeds: no interval"
    return pairs, ""


def _result(pairs: list[dict], note: str) -> dict:
    """The group's (or one member's) row from its pairs: the weakest pair, the smallest seed count."""
    n_min = min(p["n_seeds"] for p in pairs)
    if note == "the metric is undefined here":
        closest = {**pairs[0], "closest_pair": None}
    elif note:  # constant or too few seeds: the closest call by the mean difference
        closest = min(pairs, key=lambda p: p["diff"] if math.isfinite(p["diff"]) else math.inf)
    else:
        closest = combine(pairs)
    return {**{k: closest[k] for k in _RESULT if k in closest}, "verdict": closest["verdict"], "n_seeds": n_min,
            "note": note}


def _present(frame: pd.DataFrame, group: Iterable[str], rest: Iterable[str]) -> tuple[list[str], list[str]] | None:
    present = set(frame["loss"])
    group = [g for g in group if g in present]
    rest = [r for r in rest if r in present]
    return (group, rest) if group and rest else None


def compare_groups(frame: pd.DataFrame, metric: str, group: Iterable[str], rest: Iterable[str], higher: bool,
                   effect: tuple[float, str] | None = None) -> dict:
    """The all-members test of ``group`` against ``rest`` on one dataset's rows (see the module docstring).

    ``effect``: ``(delta, kind)``, default :func:`smallest_effect` of ``metric``. Returns ``verdict``
    (None when a side has no run or the metric is NaN for every loss), the closest pair and its
    interval (positive favours the claim), its delta, the smallest number of shared seeds, and a
    ``note`` when the verdict is forced.
    """
    sides = _present(frame, group, rest)
    if sides is None or frame.loc[frame["loss"].isin(sides[0] + sides[1]), metric].isna().all():
        return {"verdict": None}  # e.g. superclass structure on a dataset without superclasses
    pairs, note = _pairs(frame, metric, *sides, higher, effect or smallest_effect(metric))
    return _result(pairs, note)


def _members(frame: pd.DataFrame, metric: str, group: Iterable[str], rest: Iterable[str], higher: bool,
             effect: tuple[float, str]) -> list[dict]:
    """One row per group member: its pairs with every rest member combined by the weakest-pair rule."""
    sides = _present(frame, group, rest)
    if sides is None or frame.loc[frame["loss"].isin(sides[0] + sides[1]), metric].isna().all():
        return []
    pairs, note = _pairs(frame, metric, *sides, higher, effect)
    return [{"member": g, **_result([p for p in pairs if p["member"] == g], note)} for g in sides[0]]


def learned_losses(gate: pd.DataFrame) -> dict[str, set[str]]:
    """Dataset -> the losses that learned there (:func:`learned_gate`'s ``learned``)."""
    return {d: set(g.loc[g["learned"].astype(bool), "loss"]) for d, g in gate.groupby("dataset")}


def claim_applies(claim: Claim, dataset: str, frame: pd.DataFrame,
                  learned: dict[str, set[str]] | None = None) -> bool:
    """Whether ``claim`` is checked on ``dataset`` (whose runs are ``frame``): the dataset is one of the
    claim's, and (given ``learned``, :func:`learned_losses`) every loss the claim names that ran there
    learned. A loss that did not learn keeps out only the claims that name it."""
    if claim.datasets is not None and dataset not in claim.datasets:
        return False
    if learned is None:
        return True
    named = (set(claim.group) | set(claim.rest)) & set(frame["loss"])
    return named <= learned.get(dataset, set())


def _checks(summary: pd.DataFrame, claims: Sequence[Claim], datasets: Iterable[str] | None,
            learned: dict[str, set[str]] | None) -> Iterator[tuple[Claim, str, pd.DataFrame]]:
    chosen = set(summary["dataset"]) if datasets is None else set(datasets)
    groups = dict(tuple(summary.groupby("dataset", sort=True))) if not summary.empty else {}
    for claim in claims:
        if claim.metric not in summary.columns:
            continue
        for dataset, frame in groups.items():
            if dataset in chosen and claim_applies(claim, dataset, frame, learned):
                yield claim, dataset, frame


def check_claims(summary: pd.DataFrame, claims: Sequence[Claim] = CLAIMS, datasets: Iterable[str] | None = None,
                 learned: dict[str, set[str]] | None = None,
                 effects: dict[str, tuple[float, str, str]] | None = None) -> pd.DataFrame:
    """Each claim on each dataset (those in ``datasets``; default all): one row of :data:`VERDICT_COLUMNS`.

    A claim is skipped on a dataset where its metric is missing from the table, that is not one of
    the claim's ``datasets``, where a loss it names did not learn (given ``learned``:
    :func:`learned_losses`), or where the group or the rest has no run. ``effects``: the smallest
    effects (default :data:`SMALLEST_EFFECT`). Claims that are one test are flagged (:func:`same_tests`).
    """
    rows = []
    for claim, dataset, frame in _checks(summary, claims, datasets, learned):
        result = compare_groups(frame, claim.metric, claim.group, claim.rest, claim.higher,
                                smallest_effect(claim.metric, effects))
        if result["verdict"] is None:
            continue
        companion = None
        if claim.companion and claim.companion in frame.columns:
            companion = compare_groups(frame, claim.companion, claim.group, claim.rest, claim.higher,
                                       smallest_effect(claim.companion, effects))["verdict"]
        note = result["note"]
        if companion and companion != result["verdict"]:
            reason = claim.companion_why.split(":")[0] if claim.companion_why else "companion"
            note = (note + "; " if note else "") + f"on the {reason} {claim.companion}: {companion}"
        rows.append({"claim": claim.key, "text": claim.text, "dataset": dataset, "metric": claim.metric, **result,
                     "companion": claim.companion, "companion_verdict": companion, "same_test_as": None,
                     "same_test_rho": math.nan, "note": note})
    table = pd.DataFrame(rows, columns=list(VERDICT_COLUMNS))
    return _flag_same_tests(table, summary, claims)


def metrics_coincide(frame: pd.DataFrame, a: str, b: str) -> float:
    """Whether metrics ``a`` and ``b`` are one test on one dataset's runs: 1.0 for the same metric, else
    their Spearman rank correlation over the runs (losses x seeds) where both are finite; NaN below
    :data:`SAME_TEST_MIN_RUNS` runs or when one is constant. They coincide at ``|rho| >= SAME_TEST_RHO``."""
    if a == b:
        return 1.0
    if a not in frame.columns or b not in frame.columns:
        return math.nan
    both = frame[[a, b]].astype(float).replace([np.inf, -np.inf], np.nan).dropna()
    if len(both) < SAME_TEST_MIN_RUNS or both[a].nunique() < 2 or both[b].nunique() < 2:
        return math.nan
    return float(stats.spearmanr(both[a], both[b])[0])


def same_tests(summary: pd.DataFrame, checked: pd.DataFrame, claims: Sequence[Claim] = CLAIMS) -> pd.DataFrame:
    """Two rows, one test: for each row of ``checked`` (:func:`check_claims`), the earliest claim in
    ``claims`` order checked on the same dataset before it whose metric coincides with its own
    (:func:`metrics_coincide`), as ``claim``, ``dataset``, ``same_test_as``, ``same_test_rho``; rows
    that coincide with no earlier claim are left out."""
    order = {c.key: i for i, c in enumerate(claims)}
    rows = []
    for dataset, rows_of in checked.groupby("dataset", sort=True):
        frame = summary.loc[summary["dataset"] == dataset]
        ranked = sorted(rows_of[["claim", "metric"]].itertuples(index=False), key=lambda r: order.get(r.claim, 1e9))
        for i, later in enumerate(ranked):
            for earlier in ranked[:i]:
                rho = metrics_coincide(frame, earlier.metric, later.metric)
                if math.isfinite(rho) and abs(rho) >= SAME_TEST_RHO:
                    rows.append({"claim": later.claim, "dataset": dataset, "same_test_as": earlier.claim,
                                 "same_test_rho": rho})
                    break
    return pd.DataFrame(rows, columns=["claim", "dataset", "same_test_as", "same_test_rho"])


def _flag_same_tests(table: pd.DataFrame, summary: pd.DataFrame, claims: Sequence[Claim]) -> pd.DataFrame:
    for _, s in same_tests(summary, table, claims).iterrows():
        at = (table["claim"] == s["claim"]) & (table["dataset"] == s["dataset"])
        i = table.index[at][0]
        table.at[i, "same_test_as"], table.at[i, "same_test_rho"] = s["same_test_as"], s["same_test_rho"]
        flag = f"two rows, one test: coincides with {s['same_test_as']} (rho={s['same_test_rho']:+.2f})"
        table.at[i, "note"] = f"{table.at[i, 'note']}; {flag}" if table.at[i, "note"] else flag
    return table


def member_verdicts(summary: pd.DataFrame, claims: Sequence[Claim] = CLAIMS, datasets: Iterable[str] | None = None,
                    learned: dict[str, set[str]] | None = None,
                    effects: dict[str, tuple[float, str, str]] | None = None) -> pd.DataFrame:
    """Each member of each claim's group against the rest, per dataset (the checks of :func:`check_claims`):
    its pairs combined by the weakest-pair rule, one row of :data:`MEMBER_COLUMNS`; ``breaks_claim``
    marks the members :func:`breaking_members` names."""
    rows = []
    for claim, dataset, frame in _checks(summary, claims, datasets, learned):
        members = _members(frame, claim.metric, claim.group, claim.rest, claim.higher,
                           smallest_effect(claim.metric, effects))
        rows += [{"claim": claim.key, "text": claim.text, "dataset": dataset, "metric": claim.metric, **m}
                 for m in members]
    table = pd.DataFrame(rows, columns=[c for c in MEMBER_COLUMNS if c != "breaks_claim"])
    table.insert(len(MEMBER_COLUMNS) - 2, "breaks_claim", False)
    for _, rows_of in table.groupby(["claim", "dataset"], sort=False):
        table.loc[rows_of.index, "breaks_claim"] = rows_of["member"].isin(breaking_members(rows_of))
    return table


def breaking_members(members: pd.DataFrame, claim: str | None = None, dataset: str | None = None) -> list[str]:
    """The members that break a group claim: those whose own verdict (:func:`member_verdicts`) is weaker
    on :data:`ORDER` than the best member's. ``members`` is one (claim, dataset)'s rows, or the whole
    table with ``claim`` and ``dataset`` naming them. Empty when every member has the same verdict."""
    rows = members
    if claim is not None:
        rows = rows.loc[rows["claim"] == claim]
    if dataset is not None:
        rows = rows.loc[rows["dataset"] == dataset]
    if rows.empty:
        return []
    ranks = rows["verdict"].map(RANK)
    return list(rows.loc[ranks < ranks.max(), "member"])


GATE_METRIC: dict[str, str] = {"synthetic_super": "superclass_recall@1"}
"""The gate's metric where it is not ``recall@1``: what the heads were trained to retrieve (the
superclass-only set's heads are told superclasses, and fine Recall@1 is what its claim measures)."""


def learned_gate(epochs: pd.DataFrame, split: str = "test", metric: str = "recall@1") -> pd.DataFrame:
    """Did each loss learn? Per (dataset, loss): the final ``metric`` (``GATE_METRIC`` for the datasets
    it names) minus the untrained head's (epoch 0), paired by seed, with its interval; ``learned``
    when the interval lies above 0.

    One row per (dataset, loss) with the ``metric``, ``untrained``, ``final`` (seed means), ``diff``,
    ``ci_low``, ``ci_high``, ``n_seeds`` and ``learned``.
    """
    frame = epochs.loc[epochs["split"] == split]
    rows = []
    for (dataset, loss), runs in frame.groupby(["dataset", "loss"], sort=True):
        metric_here = GATE_METRIC.get(dataset, metric)
        last = runs.loc[runs.groupby("seed")["epoch"].idxmax()].set_index("seed")[metric_here]
        first = runs.loc[runs["epoch"] == 0].set_index("seed")[metric_here]
        shared = last.index.intersection(first.index)
        mean, low, high, n = paired_interval(last[shared], first[shared])
        rows.append({"dataset": dataset, "loss": loss, "metric": metric_here, "untrained": float(first.mean()),
                     "final": float(last.mean()), "diff": mean, "ci_low": low, "ci_high": high, "n_seeds": n,
                     "learned": bool(n >= 2 and low > 0)})
    return pd.DataFrame(rows, columns=["dataset", "loss", "metric", "untrained", "final", "diff", "ci_low", "ci_high",
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


def variant_table(summary: pd.DataFrame, default: pd.DataFrame, datasets: Iterable[str] | None = None,
                  learned: dict[str, set[str]] | None = None, claims: Sequence[Claim] = CLAIMS,
                  variants: dict[str, str] = VARIANTS) -> pd.DataFrame:
    """Which verdicts change when a loss is replaced by its named variant (e.g. ``npair_all`` for ``npair``).

    ``default`` is :func:`check_claims`'s table of ``claims`` for the same summary; rows for every
    (claim, dataset, variant) whose variant runs exist, with both verdicts and ``changed``. ``learned``
    gates the variant's checks as :func:`check_claims` does (the variant must have learned too).
    ``variants``: variant -> the loss it replaces (default the registry's).
    """
    rows = []
    present = set(summary["loss"])
    for variant, claim in variant_claims(claims, variants):
        if variant not in present:
            continue
        checked = check_claims(summary, [claim], datasets=datasets, learned=learned)
        for _, row in checked.iterrows():
            base = default.loc[(default["claim"] == row["claim"]) & (default["dataset"] == row["dataset"]), "verdict"]
            if base.empty:
                continue
            rows.append({"claim": row["claim"], "dataset": row["dataset"], "variant": f"{variants[variant]} -> {variant}",
                         "default_verdict": base.iloc[0], "variant_verdict": row["verdict"],
                         "changed": base.iloc[0] != row["verdict"], "variant_closest_pair": row["closest_pair"],
                         "variant_ci": _interval_text(row), "variant_smallest_effect": _effect_text(row)})
    return pd.DataFrame(rows, columns=["claim", "dataset", "variant", "default_verdict", "variant_verdict",
                                       "changed", "variant_closest_pair", "variant_ci", "variant_smallest_effect"])


NOT_CHECKED = "not checked"
"""A claim a profile made no verdict on (a loss it names failed the learned-heads gate, or it was not run)."""


def compare_verdicts(a: pd.DataFrame, b: pd.DataFrame, names: tuple[str, str]) -> pd.DataFrame:
    """Verdicts of two claims tables (e.g. two training schedules) side by side, ``changed`` marked.
    A check only one table makes (a loss it names failed the other's learned-heads gate, or it was
    not run there) reads "not checked" on the other side and is not a change."""
    keys = ["claim", "dataset"]
    merged = a[[*keys, "verdict"]].merge(b[[*keys, "verdict"]], on=keys, how="outer", suffixes=("_a", "_b"))
    merged = merged.rename(columns={"verdict_a": names[0], "verdict_b": names[1]})
    both = merged[list(names)].notna().all(axis=1)
    merged[list(names)] = merged[list(names)].fillna(NOT_CHECKED)
    merged["changed"] = both & (merged[names[0]] != merged[names[1]])
    return merged


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _interval_text(row) -> str:
    if _missing(row["closest_pair"]):
        return ""
    if math.isnan(row["ci_low"]):
        return f"{row['diff']:+.3g}"
    return f"{row['diff']:+.3g} [{row['ci_low']:+.3g}, {row['ci_high']:+.3g}]"


def _effect_text(row) -> str:
    """The closest pair's smallest effect: "0.01" (absolute) or "0.0123 (5% of r)" (relative to the rest member r)."""
    if _missing(row.get("delta_units")) or _missing(row.get("closest_pair")):
        return ""
    units = f"{row['delta_units']:.3g}"
    if row["delta_kind"] == "rel":
        rest = str(row["closest_pair"]).split(" vs ")[-1]
        return f"{units} ({row['delta'] * 100:.3g}% of {rest})"
    return units


FORMAT_COLUMNS = ("claim", "dataset", "metric", "verdict", "closest pair", "difference [95% CI]", "smallest effect",
                  "seeds", "same test as", "note")
"""Columns of :func:`format_claims`'s table."""


def _readable(rows: pd.DataFrame, columns: Sequence[str], extra: dict) -> pd.DataFrame:
    """A verdict table in words: the claim's text, dataset, metric, verdict, closest pair, its interval and
    smallest effect, seeds, note, plus the ``extra`` columns (name -> raw column and how to show it), in
    ``columns`` order; ``attrs["caption"]`` is :data:`DESCRIPTIVE_NOTE`."""
    if rows.empty:
        table = pd.DataFrame(columns=list(columns))
    else:
        shown = {
            "claim": rows["text"], "dataset": rows["dataset"], "metric": rows["metric"], "verdict": rows["verdict"],
            "closest pair": rows["closest_pair"].fillna(""),
            "difference [95% CI]": [_interval_text(r) for _, r in rows.iterrows()],
            "smallest effect": [_effect_text(r) for _, r in rows.iterrows()],
            "seeds": rows["n_seeds"], "note": rows["note"].fillna(""),
            **{name: show(rows[raw]) for name, (raw, show) in extra.items()},
        }
        table = pd.DataFrame({name: shown[name] for name in columns})
    table.attrs["caption"] = DESCRIPTIVE_NOTE
    return table


def format_claims(claims: pd.DataFrame) -> pd.DataFrame:
    """:func:`check_claims`'s table for reading: the claim in words, its verdict, the closest pair with
    the 95% interval of its paired difference (positive favours the claim) beside its smallest effect
    (in the metric's units), the claim it is one test with, and notes. ``attrs["caption"]`` is
    :data:`DESCRIPTIVE_NOTE`."""
    return _readable(claims, FORMAT_COLUMNS, {"same test as": ("same_test_as", lambda col: col.fillna(""))})


MEMBER_FORMAT_COLUMNS = ("claim", "dataset", "metric", "member", "verdict", "closest pair", "difference [95% CI]",
                         "smallest effect", "seeds", "breaks claim", "note")
"""Columns of :func:`format_members`'s table."""


def format_members(members: pd.DataFrame) -> pd.DataFrame:
    """:func:`member_verdicts`'s table for reading, in the words of :func:`format_claims`."""
    return _readable(members, MEMBER_FORMAT_COLUMNS, {"member": ("member", lambda col: col),
                                                      "breaks claim": ("breaks_claim", lambda col: col.astype(bool))})


def claims_tables(summary: pd.DataFrame, epochs: pd.DataFrame, compare: pd.DataFrame | None = None,
                  names: tuple[str, str] = ("this profile", "other")) -> dict[str, pd.DataFrame]:
    """Everything the claims notebook reports, from one profile's collected runs.

    - ``gate``: :func:`learned_gate` per dataset and loss; a claim is checked on a dataset only where
      every loss it names learned;
    - ``claims``: :func:`check_claims` under that gate (raw, with intervals and smallest effects);
    - ``members``: :func:`member_verdicts` of the same checks (which member breaks a group claim);
    - ``variants``: :func:`variant_table`;
    - ``schedules``: :func:`compare_verdicts` against ``compare`` (another profile's
      :func:`format_claims` table, e.g. another training schedule's), empty when there is none.
    """
    gate = learned_gate(epochs)
    learned = learned_losses(gate)
    claims = check_claims(summary, learned=learned)
    schedules = (compare_verdicts(format_claims(claims), compare, names) if compare is not None and not compare.empty
                 else pd.DataFrame(columns=["claim", "dataset", *names, "changed"]))
    return {"gate": gate, "claims": claims, "members": member_verdicts(summary, learned=learned),
            "variants": variant_table(summary, claims, learned=learned), "schedules": schedules}
