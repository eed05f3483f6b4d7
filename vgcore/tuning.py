"""The equal tuning of the fair comparison: what it searches and how it picks (issue 25).

Every rule here is PROTOCOL.md's, "Fair comparison: the rules, fixed before the build", "Equal
tuning"; this module only implements them and decides nothing of its own. For every loss the search
covers the Adam learning rate (:data:`LR_AXIS`) and one key constant (:data:`SEARCH_SPACE`), at the
same :data:`N_POINTS` scrambled Sobol points (:func:`sobol_points`, seed :data:`SOBOL_SEED`):
dimension 1 is the learning rate, dimension 2 the constant. Each trial is scored by its validation
MAP@R, mean over the :data:`TUNING_SEEDS`, and :func:`pick` chooses the winner.

    >>> grid = trials("arcface")                 # 8 settings: {"lr": ..., "loss_params": {"scale": ...}}
    >>> pick({i: [0.5, 0.5] for i in range(len(grid))}, grid) == min(range(8), key=lambda i: grid[i]["lr"])
    True

Imports torch only inside :func:`sobol_points`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from vgcore import registry


@dataclass(frozen=True)
class Axis:
    """One searched quantity: the loss constructor's (or RunConfig's) parameter ``param`` over
    [``low``, ``high``], log-uniform when ``log`` else uniform."""

    param: str
    low: float
    high: float
    log: bool

    def __post_init__(self) -> None:
        if not self.low < self.high or (self.log and not self.low > 0):
            raise ValueError(f"axis {self.param!r}: need low < high (and low > 0 on a log axis), "
                             f"got [{self.low}, {self.high}]")

    def value(self, u: float) -> float:
        """The point ``u`` in [0, 1] on this axis: ``low + u (high - low)``, or on a log axis
        ``exp(log(low) + u (log(high) - log(low)))`` (u = 0.5 is then the geometric mean)."""
        u = float(u)
        if not 0.0 <= u <= 1.0:
            raise ValueError(f"a search point lies in [0, 1], got {u!r} for {self.param!r}")
        if self.log:
            lo, hi = math.log(self.low), math.log(self.high)
            return math.exp(lo + u * (hi - lo))
        return self.low + u * (self.high - self.low)

    def position(self, value: float) -> float:
        """Where ``value`` lies on this axis, the inverse of :meth:`value`: 0 at ``low``, 1 at ``high``
        (on a log axis, in the logarithm)."""
        if self.log:
            return (math.log(value) - math.log(self.low)) / (math.log(self.high) - math.log(self.low))
        return (value - self.low) / (self.high - self.low)


EDGE = 0.05
"""A chosen value within this share of its axis's length from either end lies "at the edge" of the
search: the best setting may lie outside the range, and the tuned table says so."""


LR_AXIS = Axis("lr", 1e-4, 3e-2, log=True)
"""The learning rate (Adam), tuned per loss: log-uniform in [1e-4, 3e-2] (PROTOCOL.md, Equal tuning)."""

BASELINE = "multisimilarity"
"""The tuned baseline: the Multi-Similarity loss, pytorch-metric-learning's ``MultiSimilarityLoss``
function, registered as vgcore's ``multisimilarity`` (``registry.BASELINES``; not one of the paper's
losses, not a variant)."""

_PAPER_AXES: dict[str, Axis] = {
    "contrastive": Axis("margin", 0.2, 1.6, log=False),
    "triplet": Axis("margin", 0.02, 0.5, log=False),
    "npair": Axis("temperature", 0.05, 1.0, log=True),
    "infonce": Axis("temperature", 0.02, 0.5, log=True),
    "arcface": Axis("scale", 8.0, 64.0, log=True),
    "scl": Axis("temperature", 0.02, 0.5, log=True),
    "ccl": Axis("temperature", 0.02, 0.5, log=True),
}

SEARCH_SPACE: dict[str, Axis] = {
    **_PAPER_AXES,
    **{variant: _PAPER_AXES[loss] for variant, loss in registry.VARIANTS.items()},
    BASELINE: Axis("base", 0.3, 0.8, log=False),
}
"""Loss name -> the axis of its one key constant, PROTOCOL.md's "what is tuned" row: contrastive
``margin`` uniform [0.2, 1.6]; triplet ``margin`` uniform [0.02, 0.5]; N-pair ``temperature``
log-uniform [0.05, 1.0]; InfoNCE, SCL and CCL ``temperature`` log-uniform [0.02, 0.5]; ArcFace
``scale`` log-uniform [8, 64] (its margin stays 0.5); the baseline's ``base`` uniform [0.3, 0.8].

A named variant (``registry.VARIANTS``: ``npair_groups``, ``npair_all``, ``triplet_semihard``,
``triplet_facenet``, ``ccl_ema``) is tuned on the axis of the paper loss it is a variant of: PROTOCOL
names the constant per loss, a variant is the same loss read on other pairs, tuples or centres (its
constructor takes the same constant), and the fair build reports ``npair_groups`` beside ``npair``
under the N-pair row ("Batches", "Sohn's N-pair")."""

N_POINTS = 8
"""Search points per loss (PROTOCOL.md, Equal tuning, "search points": 8, a power of two, keeps the
Sobol points balanced; 8 points x 8 losses fused fit the fair build's budget)."""

SOBOL_SEED = 0
"""The scramble seed of the one Sobol sequence every loss shares (PROTOCOL.md, "search points")."""

TUNING_SEEDS: tuple[int, ...] = (100,)
"""The seeds a trial is trained and scored on, disjoint from the reporting seeds 0-4 (PROTOCOL.md,
Fair comparison, "Data and replication": "tuning seeds")."""

TUNING_THREADS = 1
"""The CPU threads a trial trains at, in whichever worker process (``tune -j``): one, so that its
numbers do not depend on how many cores a machine has (a reduction split over threads sums in
another order: ArcFace's class-weight gradient does at 2 threads) and every core runs a worker
(PROTOCOL.md, Fair comparison, Changes)."""

SCORE_DECIMALS = 4
"""Mean validation MAP@R values equal to this many decimals tie (PROTOCOL.md, Equal tuning, "score")."""


def sobol_points(n: int = N_POINTS, seed: int = SOBOL_SEED) -> np.ndarray:
    """The first ``n`` points of a scrambled 2-D Sobol sequence (``torch.quasirandom.SobolEngine``,
    ``scramble=True``, ``seed``), float64, shape ``[n, 2]``, each coordinate in [0, 1). They do not
    depend on the loss. ``n`` must be a power of two: only then is a Sobol sample balanced (each
    dimension has exactly one point in each of its ``n`` equal intervals)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1 or n & (n - 1):
        raise ValueError(f"n must be a power of two (1, 2, 4, 8, ...) so that the Sobol points are "
                         f"balanced, got {n!r}")
    import torch

    engine = torch.quasirandom.SobolEngine(2, scramble=True, seed=seed)
    return engine.draw(n, dtype=torch.float64).numpy()


def trials(loss: str, n: int = N_POINTS, seed: int = SOBOL_SEED) -> list[dict[str, Any]]:
    """The search of one loss: one ``{"lr": ..., "loss_params": {param: value}}`` per Sobol point
    (:func:`sobol_points`), in the points' order; a trial's index in this list is its id in
    :func:`pick`. ``lr`` and ``loss_params`` are RunConfig's fields of the same names."""
    if loss not in SEARCH_SPACE:
        raise ValueError(f"no tuning axis for loss {loss!r}; tunable: {', '.join(SEARCH_SPACE)}")
    axis = SEARCH_SPACE[loss]
    return [{"lr": LR_AXIS.value(u_lr), "loss_params": {axis.param: axis.value(u_const)}}
            for u_lr, u_const in sobol_points(n, seed)]


def pick(scores: Mapping[int, Sequence[float]] | Any, trials: Sequence[Mapping[str, Any]]) -> int:
    """The index of the winning trial, by PROTOCOL.md's score rule.

    ``scores`` gives each trial's validation MAP@R (at its best checkpoint) on each tuning seed:
    either a mapping ``{trial index: [MAP@R on each tuning seed]}`` or a pandas
    DataFrame with one row per trial x seed and the columns ``trial`` and ``map@r``. Every trial of
    ``trials`` (the list :func:`trials` gave) must be scored, on the same number of seeds.

    The highest mean over the seeds wins; means equal to :data:`SCORE_DECIMALS` decimals tie, and a
    tie goes to the smaller learning rate (then to the lower index). A NaN score on any seed (a
    diverged trial) makes that trial's mean NaN, and it loses to every scored trial; when every
    trial is NaN there is no winner (ValueError).
    """
    if hasattr(scores, "groupby"):  # a pandas DataFrame
        missing = {"trial", "map@r"} - set(scores.columns)
        if missing:
            raise ValueError(f"a scores frame needs the columns 'trial' and 'map@r'; missing {sorted(missing)}")
        scores = {int(t): list(group["map@r"]) for t, group in scores.groupby("trial", sort=True)}
    scored = {int(t): [float(v) for v in values] for t, values in scores.items()}
    if set(scored) != set(range(len(trials))):
        raise ValueError(f"scores must cover exactly trials 0..{len(trials) - 1}; "
                         f"got {sorted(scored)}")
    counts = {len(values) for values in scored.values()}
    if len(counts) != 1 or 0 in counts:
        raise ValueError(f"every trial needs a score on each tuning seed, the same number each; "
                         f"got {sorted(counts)} scores per trial")
    means = {t: (math.nan if any(math.isnan(v) for v in values) else sum(values) / len(values))
             for t, values in scored.items()}
    finite = [t for t, m in means.items() if not math.isnan(m)]
    if not finite:
        raise ValueError("every trial scored NaN (diverged): no setting to pick")
    best = max(round(means[t], SCORE_DECIMALS) for t in finite)
    tied = [t for t in finite if round(means[t], SCORE_DECIMALS) == best]
    return min(tied, key=lambda t: (float(trials[t]["lr"]), t))


SENSITIVITY_POINTS: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
"""Where on its tuning axis each loss's key constant is set in the sensitivity build (PROTOCOL.md, Fair
comparison, "Sensitivity"): the two ends and three inner points, on the axis's own scale."""

SENSITIVITY_SEEDS: tuple[int, ...] = (0, 1, 2)
"""The reporting seeds the sensitivity build trains (PROTOCOL.md, "Sensitivity")."""


def sensitivity_values(loss: str) -> list[float]:
    """The values of `loss`'s key constant in the sensitivity build: :data:`SENSITIVITY_POINTS` on its
    axis (:data:`SEARCH_SPACE`; a log axis spaces them evenly in the logarithm)."""
    if loss not in SEARCH_SPACE:
        raise ValueError(f"no tuning axis for loss {loss!r}; tunable: {', '.join(SEARCH_SPACE)}")
    return [SEARCH_SPACE[loss].value(u) for u in SENSITIVITY_POINTS]


def sensitivity_tag(loss: str, point: int) -> str:
    """The variant folder of `loss`'s constant at its `point`-th sensitivity value: ``<loss>-<param>-k<point>``."""
    return f"{loss}-{SEARCH_SPACE[loss].param}-k{point}"


def at_edge(loss: str, setting: Mapping[str, Any]) -> list[str]:
    """The searched quantities (``lr``, the loss's constant) of a chosen `setting` (``{"lr", "loss_params"}``)
    that lie within :data:`EDGE` of either end of their axis."""
    axis = SEARCH_SPACE[loss]
    values = {LR_AXIS.param: (LR_AXIS, setting["lr"]), axis.param: (axis, setting["loss_params"][axis.param])}
    return [name for name, (ax, v) in values.items() if not EDGE <= ax.position(v) <= 1 - EDGE]
