"""The equal tuning's search space and pick rule (vgcore.tuning) against PROTOCOL.md's rules.

The axes are read back from PROTOCOL.md's "what is tuned" row, the mapping is checked at its ends
and midpoints with the formula written out here, the Sobol points for the properties the protocol
relies on (the same for every loss, balanced, fixed by the seed), and `pick` on hand-made scores.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import re

import numpy as np
import pandas as pd
import pytest
import torch

from vgcore import registry, tuning
from vgcore.config import RunConfig
from vgcore.losses import make_loss
from vgcore.tuning import LR_AXIS, SEARCH_SPACE, Axis, pick, sobol_points, trials

from _ci import DEV_EXTRA, require
from _smoke_build import ROOT

REL = 1e-12
ALL_AXES = [LR_AXIS, *SEARCH_SPACE.values()]


def equal_tuning_row(rule: str) -> str:
    text = (ROOT / "PROTOCOL.md").read_text()
    section = text.split("### Equal tuning", 1)[1].split("\n### ", 1)[0]
    return next(line for line in section.splitlines() if line.startswith(f"| {rule} |"))


def protocol_axes() -> dict[str, tuple[str, bool, float, float]]:
    """PROTOCOL's "what is tuned" row as {loss or "lr": (param, log, low, high)}."""
    row = equal_tuning_row("what is tuned")
    ranges = r"(log-uniform|uniform)(?: in)? \[([^,\]]+), ([^\]]+)\]"
    found = {}
    lr = re.search(r"learning rate \([^)]*?" + ranges, row)
    found["lr"] = ("lr", lr.group(1) == "log-uniform", float(lr.group(2)), float(lr.group(3)))
    for names, param, inside in re.findall(r"([A-Za-z][\w\-, ']*?) `(\w+)`[^(`]*\(([^)]*)\)", row):
        kind, low, high = re.search(ranges, inside).groups()
        for name in re.split(r", | and ", names):
            key = tuning.BASELINE if "baseline" in name else name.lower().replace("-", "")
            found[key] = (param, kind == "log-uniform", float(low), float(high))
    return found


def on_axis(u: float, low: float, high: float, log: bool) -> float:
    """PROTOCOL's scales written out: low + u (high - low), or the same on log(low), log(high)."""
    if log:
        return math.exp(math.log(low) + u * (math.log(high) - math.log(low)))
    return low + u * (high - low)


def test_the_axes_are_protocols_what_is_tuned_row():
    written = protocol_axes()
    assert set(written) == {"lr", *registry.PAPER_LOSSES, tuning.BASELINE}, written
    assert (LR_AXIS.param, LR_AXIS.log, LR_AXIS.low, LR_AXIS.high) == written.pop("lr")
    for loss, (param, log, low, high) in written.items():
        axis = SEARCH_SPACE[loss]
        assert (axis.param, axis.log, axis.low, axis.high) == (param, log, low, high), loss


def test_every_registered_loss_and_the_baseline_have_an_axis_and_a_variant_its_losss():
    assert set(SEARCH_SPACE) == {*registry.LOSSES, tuning.BASELINE}
    for variant, loss in registry.VARIANTS.items():
        assert SEARCH_SPACE[variant] == SEARCH_SPACE[loss], variant


def test_each_constant_is_a_parameter_of_its_loss_and_every_trial_builds_it():
    for loss in registry.LOSSES:
        param = SEARCH_SPACE[loss].param
        assert param in inspect.signature(registry.load("loss", loss)).parameters, (loss, param)
        for trial in trials(loss):
            module = make_loss(loss, num_classes=4, embedding_dim=8, **trial["loss_params"])
            assert getattr(module, param) == pytest.approx(trial["loss_params"][param], rel=REL)
    assert LR_AXIS.param in {f.name for f in dataclasses.fields(RunConfig)}
    assert "loss_params" in {f.name for f in dataclasses.fields(RunConfig)}


def test_the_baselines_base_is_a_parameter_of_pmls_multisimilarity_loss():
    losses = require("pytorch_metric_learning.losses", DEV_EXTRA)
    axis = SEARCH_SPACE[tuning.BASELINE]
    assert axis.param in inspect.signature(losses.MultiSimilarityLoss).parameters
    for trial in trials(tuning.BASELINE):
        assert losses.MultiSimilarityLoss(**trial["loss_params"]).base == trial["loss_params"]["base"]


def test_an_axis_maps_0_and_1_to_its_ends_and_the_middle_to_the_mean_of_its_scale():
    for axis in ALL_AXES:
        assert axis.value(0.0) == pytest.approx(axis.low, rel=REL)
        assert axis.value(1.0) == pytest.approx(axis.high, rel=REL)
        below_one = 1.0 - 2.0**-53
        assert axis.value(below_one) == pytest.approx(on_axis(below_one, axis.low, axis.high, axis.log), rel=REL)
        assert axis.value(below_one) == pytest.approx(axis.high, rel=1e-14)
        middle = math.sqrt(axis.low * axis.high) if axis.log else (axis.low + axis.high) / 2
        assert axis.value(0.5) == pytest.approx(middle, rel=REL)
        assert axis.value(0.25) == pytest.approx(on_axis(0.25, axis.low, axis.high, axis.log), rel=REL)
    # log and linear differ inside the range: the geometric mean lies below the arithmetic one
    assert Axis("x", 1.0, 100.0, log=True).value(0.5) == pytest.approx(10.0, rel=REL)
    assert Axis("x", 1.0, 100.0, log=False).value(0.5) == pytest.approx(50.5, rel=REL)
    for u in (-0.01, 1.01, math.nan):
        with pytest.raises(ValueError, match=r"\[0, 1\]"):
            LR_AXIS.value(u)
    with pytest.raises(ValueError, match="low < high"):
        Axis("x", 0.0, 1.0, log=True)


def test_a_trial_is_its_sobol_point_on_the_two_axes():
    points = sobol_points()
    for loss, axis in SEARCH_SPACE.items():
        got = trials(loss)
        assert len(got) == tuning.N_POINTS
        for (u_lr, u_c), trial in zip(points, got, strict=True):
            assert set(trial) == {"lr", "loss_params"} and set(trial["loss_params"]) == {axis.param}
            assert trial["lr"] == pytest.approx(on_axis(u_lr, LR_AXIS.low, LR_AXIS.high, True), rel=REL)
            value = trial["loss_params"][axis.param]
            assert value == pytest.approx(on_axis(u_c, axis.low, axis.high, axis.log), rel=REL)
            assert axis.low <= value < axis.high and LR_AXIS.low <= trial["lr"] < LR_AXIS.high


def test_every_loss_gets_the_same_points():
    lrs = {loss: [t["lr"] for t in trials(loss)] for loss in SEARCH_SPACE}
    first = next(iter(lrs.values()))
    assert all(column == first for column in lrs.values())  # identical, not only close
    for loss, axis in SEARCH_SPACE.items():  # the constant's position on its own scale, back to [0, 1)
        values = np.array([t["loss_params"][axis.param] for t in trials(loss)])
        u = (np.log(values / axis.low) / math.log(axis.high / axis.low) if axis.log
             else (values - axis.low) / (axis.high - axis.low))
        np.testing.assert_allclose(u, sobol_points()[:, 1], rtol=0, atol=1e-12, err_msg=loss)


@pytest.mark.parametrize("n", [8, 16, 32])
def test_the_points_are_distinct_in_the_unit_square_and_balanced(n):
    points = sobol_points(n)
    assert points.shape == (n, 2) and points.dtype == np.float64
    assert ((points >= 0) & (points < 1)).all()
    assert len({tuple(p) for p in points.tolist()}) == n
    for dim in range(2):  # exactly one point in each 1/n of each dimension
        assert sorted(np.floor(points[:, dim] * n).astype(int).tolist()) == list(range(n)), dim
    for rows in (1, 2, 4, 8):  # and in each box of area 1/n of the square (a (0, m, 2)-net)
        cells = np.floor(points * [rows, n // rows]).astype(int)
        assert len({tuple(c) for c in cells.tolist()}) == n, rows


def test_a_random_sample_is_not_balanced_so_the_check_can_fail():
    points = np.random.default_rng(0).random((8, 2))
    assert any(sorted(np.floor(points[:, d] * 8).astype(int).tolist()) != list(range(8)) for d in range(2))


def test_the_seed_fixes_the_points():
    assert np.array_equal(sobol_points(seed=0), sobol_points(seed=0))
    assert np.array_equal(sobol_points(), sobol_points(tuning.N_POINTS, tuning.SOBOL_SEED))
    assert tuning.SOBOL_SEED == 0  # PROTOCOL: "a scrambled 2-D Sobol sequence (seed 0)"
    for seed in (0, 5):  # the seed is torch's scramble seed, so the points can be redrawn outside vgcore
        engine = torch.quasirandom.SobolEngine(2, scramble=True, seed=seed)
        assert sobol_points(seed=seed).tolist() == engine.draw(8, dtype=torch.float64).tolist()
    other = sobol_points(seed=1)
    assert not np.isin(other, sobol_points(seed=0)).any()
    assert trials("triplet", seed=1) != trials("triplet")
    assert sobol_points(4).tolist() == sobol_points(8)[:4].tolist()  # a prefix of one sequence


@pytest.mark.parametrize("n", [0, 3, 6, 12, -8, 8.0, True])
def test_a_number_of_points_that_is_not_a_power_of_two_is_refused(n):
    with pytest.raises(ValueError, match="power of two.*balanced"):
        sobol_points(n)


def test_an_unknown_loss_names_the_tunable_ones():
    with pytest.raises(ValueError, match="'softmax'.*tunable: contrastive, triplet,.*multisimilarity"):
        trials("softmax")


def test_the_constants_follow_protocol():
    # the rule as first committed (two seeds), and its change under "Changes" to the one the code uses
    assert re.search(r"\| tuning seeds \| 100 and 101, disjoint", (ROOT / "PROTOCOL.md").read_text())
    assert tuning.TUNING_SEEDS == tuple(int(s) for s in re.search(
        r"\| tuning seeds \| 100 and 101; [^|]*\| (\d+) only;", (ROOT / "PROTOCOL.md").read_text()).groups())
    assert not set(tuning.TUNING_SEEDS) & set(range(5))  # disjoint from the reporting seeds 0-4
    assert f"the same {tuning.N_POINTS} points for every loss" in equal_tuning_row("search points")
    assert f"equal to {tuning.SCORE_DECIMALS} decimals" in equal_tuning_row("score")


# pick: hand-made trials whose learning rates are known, in an order unlike their index
LRS = [3e-3, 1e-4, 2e-2, 5e-4]
GRID = [{"lr": lr, "loss_params": {"margin": 0.1}} for lr in LRS]


def test_pick_takes_the_highest_mean_over_the_seeds_not_the_best_seed():
    scores = {0: [0.90, 0.10], 1: [0.55, 0.56], 2: [0.60, 0.40], 3: [0.30, 0.31]}
    assert pick(scores, GRID) == 1  # means 0.5, 0.555, 0.5, 0.305


def test_pick_breaks_a_tie_to_four_decimals_towards_the_smaller_learning_rate():
    # trials 0 and 3 both mean 0.6123 to 4 decimals; 0 is higher by 3e-5, 3 has the smaller lr (5e-4 < 3e-3)
    tied = {0: [0.61234, 0.61234], 1: [0.5, 0.5], 2: [0.1, 0.1], 3: [0.61231, 0.61231]}
    assert pick(tied, GRID) == 3
    tied[1] = [0.61232, 0.61232]
    assert pick(tied, GRID) == 1  # lr 1e-4, the smallest of the three tied
    apart = {0: [0.6125, 0.6125], 1: [0.6123, 0.6123], 2: [0.1, 0.1], 3: [0.1, 0.1]}
    assert pick(apart, GRID) == 0  # 0.6125 vs 0.6123 differ at the 4th decimal: no tie, the higher wins
    same_lr = [{"lr": 1e-3, "loss_params": {}}] * 3
    assert pick({0: [0.2], 1: [0.7], 2: [0.7]}, same_lr) == 1  # then the lower index


def test_pick_lets_a_diverged_trial_lose():
    scores = {0: [math.nan, 0.99], 1: [0.2, 0.2], 2: [0.3, math.nan], 3: [0.1, 0.1]}
    assert pick(scores, GRID) == 1  # a NaN on one seed sinks the trial, however good the other seed
    scores = {0: [math.nan, math.nan], 1: [math.nan, 0.1], 2: [math.nan, 0.9], 3: [0.0, 0.0]}
    assert pick(scores, GRID) == 3  # a MAP@R of 0 still beats NaN
    with pytest.raises(ValueError, match="every trial scored NaN"):
        pick({i: [math.nan, math.nan] for i in range(4)}, GRID)


def test_pick_reads_a_long_frame_as_the_mapping():
    scores = {0: [0.61234, 0.61234], 1: [0.5, math.nan], 2: [0.1, 0.1], 3: [0.61231, 0.61231]}
    frame = pd.DataFrame([{"trial": t, "seed": s, "map@r": v} for t, values in scores.items()
                          for s, v in zip((100, 101), values, strict=True)]).sample(frac=1, random_state=0)
    assert pick(frame, GRID) == pick(scores, GRID) == 3
    with pytest.raises(ValueError, match="'trial' and 'map@r'"):
        pick(frame.rename(columns={"map@r": "recall@1"}), GRID)


def test_pick_refuses_scores_that_do_not_cover_the_trials_evenly():
    with pytest.raises(ValueError, match="cover exactly trials 0..3"):
        pick({0: [0.1, 0.1], 1: [0.2, 0.2], 2: [0.3, 0.3]}, GRID)
    with pytest.raises(ValueError, match="same number"):
        pick({0: [0.1, 0.1], 1: [0.2], 2: [0.3, 0.3], 3: [0.4, 0.4]}, GRID)
    with pytest.raises(ValueError, match="same number"):
        pick({i: [] for i in range(4)}, GRID)
