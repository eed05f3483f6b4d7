"""The claims as tests over seeds (vgcore.report.claims) on hand-made seed tables."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest

from vgcore.registry import PAPER_LOSSES
from vgcore.report.claims import (
    CLAIMS,
    DESCRIPTIVE_NOTE,
    FINE_GRAINED,
    ORDER,
    SMALLEST_EFFECT,
    Claim,
    breaking_members,
    check_claims,
    claims_tables,
    combine,
    compare_groups,
    compare_verdicts,
    decide,
    format_claims,
    format_members,
    is_constant,
    learned_datasets,
    learned_gate,
    learned_losses,
    member_verdicts,
    metrics_coincide,
    paired_interval,
    same_tests,
    variant_table,
)


def table(values: dict[str, list[float]], metric="m", dataset="d", seeds=None) -> pd.DataFrame:
    rows = []
    for loss, vals in values.items():
        for i, v in enumerate(vals):
            rows.append({"dataset": dataset, "loss": loss, "seed": (seeds or {}).get(loss, range(len(vals)))[i],
                         metric: v})
    return pd.DataFrame(rows)


def test_paired_interval_is_the_student_t_interval_by_hand():
    a, b = [1.0, 2.0, 4.0], [0.5, 1.0, 2.0]  # differences 0.5, 1.0, 2.0
    mean, low, high, n = paired_interval(a, b)
    sd = math.sqrt(((0.5 - 7 / 6) ** 2 + (1 - 7 / 6) ** 2 + (2 - 7 / 6) ** 2) / 2)
    half = 4.302652729911275 * sd / math.sqrt(3)  # t_{0.975, 2}
    assert (mean, n) == (pytest.approx(7 / 6), 3)
    assert low == pytest.approx(7 / 6 - half) and high == pytest.approx(7 / 6 + half)
    assert all(math.isnan(v) for v in paired_interval([1.0], [0.0])[1:3])  # one pair: no interval
    assert paired_interval([], [])[3] == 0


def _verdict(values, group=("g1", "g2"), rest=("r1", "r2"), higher=True, effect=(0.1, "abs")):
    return compare_groups(table(values), "m", group, rest, higher, effect)


def test_a_clear_gap_is_supported_and_its_reverse_contradicted():
    up = {"g1": [2.0, 2.1, 2.2], "g2": [2.5, 2.4, 2.6], "r1": [1.0, 1.1, 0.9], "r2": [0.5, 0.6, 0.4]}
    out = _verdict(up)
    assert out["verdict"] == "supported" and out["ci_low"] > 0.1 and out["n_seeds"] == 3
    assert out["closest_pair"] == "g1 vs r1"  # the closest call
    assert (out["delta"], out["delta_kind"], out["delta_units"]) == (0.1, "abs", 0.1)
    assert _verdict(up, higher=False)["verdict"] == "contradicted"


def test_lower_is_better_claims_flip_the_sign():
    down = {"g1": [0.1, 0.2, 0.1], "g2": [0.2, 0.1, 0.2], "r1": [1.0, 1.1, 0.9], "r2": [0.8, 0.9, 0.7]}
    out = _verdict(down, higher=False)
    assert out["verdict"] == "supported" and out["diff"] > 0  # positive favours the claim


def test_a_group_with_one_losing_member_does_not_pass():
    """The all-members rule: the best of the group beating the best of the rest is not enough."""
    values = {"g1": [3.0, 3.1, 3.2], "g2": [0.2, 0.3, 0.25], "r1": [1.0, 1.1, 0.9], "r2": [0.5, 0.6, 0.4]}
    out = _verdict(values)
    assert out["verdict"] == "contradicted" and out["closest_pair"] == "g2 vs r1"


def test_a_gap_inside_the_seed_spread_is_inconclusive():
    values = {"g1": [1.0, 1.3, 0.8], "g2": [1.2, 0.9, 1.1], "r1": [1.1, 1.0, 0.95], "r2": [0.5, 0.6, 0.4]}
    assert _verdict(values)["verdict"] == "inconclusive"


def test_an_interval_touching_zero_is_not_support():
    """g2 equals r2 on every seed (zero-width interval at 0): not above 0, so not supported; inside
    +-delta it is a negligible difference. An interval from 0 to beyond delta is inconclusive."""
    values = {"g1": [3.0, 3.1, 3.2], "g2": [1.0, 2.0, 1.5], "r1": [0.1, 0.2, 0.3], "r2": [1.0, 2.0, 1.5]}
    out = _verdict(values)
    assert out["verdict"] == "negligible" and out["closest_pair"] == "g2 vs r2" and out["ci_low"] == 0.0
    assert decide(0.0, 0.5, 0.1) == "inconclusive" and decide(-0.5, 0.0, 0.1) == "inconclusive"


def test_a_constant_metric_says_nothing():
    values = {"g1": [1.0, 1.0], "g2": [1.0, 0.99999], "r1": [1.0, 1.0], "r2": [0.99999, 1.0]}
    out = _verdict(values)
    assert out["verdict"] == "inconclusive" and "constant across losses" in out["note"]


def test_a_metric_undefined_for_one_loss_is_inconclusive():
    values = {"g1": [2.0, 2.1, 2.2], "g2": [math.nan] * 3, "r1": [1.0, 1.1, 0.9], "r2": [0.5, 0.6, 0.4]}
    out = _verdict(values)
    assert out["verdict"] == "inconclusive" and out["note"] == "the metric is undefined here"
    assert out["closest_pair"] is None and out["n_seeds"] == 0 and math.isnan(out["diff"])


def test_the_constant_threshold_is_a_tenth_of_a_percent_of_the_magnitude():
    """Loss means 0.2% apart are a difference to test, 0.05% apart a constant (PROTOCOL.md: "span less
    than 0.1% of their magnitude")."""
    assert not is_constant([1.0, 1.002, 1.001])
    assert is_constant([1.0, 1.0005, 1.0002])
    assert not is_constant([-50.0, -50.1])  # relative to the largest magnitude, whatever the sign
    assert is_constant([-50.0, -50.025])
    noise = [0.0, 1e-5, -1e-5]  # shared by every loss of a seed: a tight paired interval
    gap = {"g1": 1.003, "g2": 1.0035, "r1": 1.0, "r2": 1.0005}  # 0.3% between the extremes
    out = _verdict({loss: [v + e for e in noise] for loss, v in gap.items()}, effect=(1e-4, "abs"))
    assert out["verdict"] == "supported" and out["note"] == ""
    small = {"g1": 1.0004, "g2": 1.00045, "r1": 1.0, "r2": 1.00005}  # 0.045%
    out = _verdict({loss: [v + e for e in noise] for loss, v in small.items()}, effect=(1e-4, "abs"))
    assert out["verdict"] == "inconclusive" and "constant across losses" in out["note"]


def test_seeds_are_paired_and_the_shared_count_reported():
    """r1 ran seeds 0-3, the others 0-1: only shared seeds pair, and the smallest count is reported."""
    values = {"g1": [2.0, 2.1], "g2": [2.2, 2.3], "r1": [1.0, 1.1, 9.0, 9.0], "r2": [0.5, 0.6]}
    out = compare_groups(table(values, seeds={"r1": [0, 1, 2, 3]}), "m", ("g1", "g2"), ("r1", "r2"), True,
                         (0.1, "abs"))
    assert out["verdict"] == "supported" and out["n_seeds"] == 2  # seeds 2 and 3 of r1 have no partner
    one = {"g1": [2.0], "g2": [2.2], "r1": [1.0], "r2": [0.5]}
    single = _verdict(one)
    assert single["verdict"] == "inconclusive" and "fewer than 2" in single["note"] and single["n_seeds"] == 1


EFFECTS = {"free": (0.1, "abs", "test"), "raw": (0.1, "abs", "test"), "m": (0.1, "abs", "test")}


def test_check_claims_reports_the_companion_metric_beside_the_scale_free_one():
    claim = Claim("c", "g wins", "free", ("g",), ("r",), higher=True, why="", companion="raw",
                  companion_why="scale-coupled: moves with the centroid norm")
    frame = table({"g": [2.0, 2.1, 2.2], "r": [1.0, 1.1, 1.0]}, "free")
    frame["raw"] = [0.5, 0.6, 0.55, 1.0, 1.1, 1.0]  # the raw metric says the opposite
    out = check_claims(frame, [claim], effects=EFFECTS).iloc[0]
    assert out["verdict"] == "supported" and out["companion_verdict"] == "contradicted"
    assert out["companion"] == "raw" and "on the scale-coupled raw: contradicted" in out["note"]
    bare = dataclasses.replace(claim, companion_why="")
    assert "on the companion raw: contradicted" in check_claims(frame, [bare], effects=EFFECTS).iloc[0]["note"]


def test_fine_grained_claims_skip_coarse_datasets_and_missing_losses_skip_the_claim():
    claim = [c for c in CLAIMS if c.datasets == FINE_GRAINED]
    assert [c.key for c in claim] == ["triplet_scl_win_fine_grained"]
    values = {x: [0.5, 0.6] for x in PAPER_LOSSES}
    frame = pd.concat([table(values, "recall@1", d) for d in ("cifar10", "cub200")])
    assert list(check_claims(frame, claim)["dataset"]) == ["cub200"]
    subset = table({"triplet": [0.5, 0.6], "scl": [0.4, 0.5]}, "recall@1", "cub200")
    assert check_claims(subset).empty  # no claim has both sides


def test_format_claims_on_an_empty_selection_has_its_columns():
    """The subset build (--losses triplet scl) left no claim with both sides: no KeyError."""
    out = format_claims(check_claims(table({"triplet": [0.5], "scl": [0.4]}, "intra_var")))
    assert out.empty and "verdict" in out.columns and "difference [95% CI]" in out.columns


def test_format_claims_shows_the_interval_in_words():
    frame = table({"triplet": [0.5, 0.6, 0.55], "scl": [0.6, 0.7, 0.65], "contrastive": [0.2, 0.25, 0.2],
                   "infonce": [0.3, 0.3, 0.35]}, "intra_var")
    keep = [c for c in CLAIMS if c.key == "triplet_scl_keep_variance"]
    row = format_claims(check_claims(frame, keep)).iloc[0]
    assert row["verdict"] == "supported" and row["closest pair"] == "triplet vs infonce"
    assert row["difference [95% CI]"].startswith("+0.233 [")  # (0.2 + 0.3 + 0.2) / 3
    assert row["smallest effect"] == "0.0158 (5% of infonce)"  # 5% of infonce's mean (0.3 + 0.3 + 0.35) / 3


def _epochs(untrained: float, final: dict[str, list[float]], dataset="d") -> pd.DataFrame:
    rows = []
    for loss, finals in final.items():
        for seed, f in enumerate(finals):
            rows += [{"dataset": dataset, "loss": loss, "seed": seed, "split": "test", "epoch": 0,
                      "recall@1": untrained + 0.01 * seed},
                     {"dataset": dataset, "loss": loss, "seed": seed, "split": "test", "epoch": 5, "recall@1": f},
                     {"dataset": dataset, "loss": loss, "seed": seed, "split": "train_subset", "epoch": 5,
                      "recall@1": 1.0}]
    return pd.DataFrame(rows)


def test_the_gate_excludes_a_dataset_where_training_does_not_help():
    good = _epochs(0.2, {x: [0.6, 0.62, 0.61] for x in PAPER_LOSSES}, "good")
    flat = {x: [0.6, 0.62, 0.61] for x in PAPER_LOSSES}
    flat["npair"] = [0.19, 0.22, 0.21]  # one loss barely moves off the untrained head
    bad = _epochs(0.2, flat, "bad")
    gate = learned_gate(pd.concat([good, bad]))
    assert learned_datasets(gate) == ["good"]
    row = gate.set_index(["dataset", "loss"]).loc[("bad", "npair")]
    assert not row["learned"] and row["untrained"] == pytest.approx(0.21)


def test_the_superclass_only_set_is_gated_on_what_its_heads_were_trained_to_retrieve():
    """synthetic_super's heads learn superclasses; fine Recall@1 (what its claim measures) may fall
    while they do. The gate reads superclass_recall@1 there, recall@1 elsewhere."""
    rows = []
    for dataset in ("synthetic", "synthetic_super"):
        for seed in range(3):
            for epoch, fine, sup in ((0, 0.30 + 0.01 * seed, 0.5), (5, 0.20 + 0.01 * seed, 0.9 + 0.01 * seed)):
                rows.append({"dataset": dataset, "loss": "triplet", "seed": seed, "split": "test", "epoch": epoch,
                             "recall@1": fine, "superclass_recall@1": sup})
    gate = learned_gate(pd.DataFrame(rows)).set_index("dataset")
    assert gate.loc["synthetic_super", "metric"] == "superclass_recall@1" and gate.loc["synthetic_super", "learned"]
    assert gate.loc["synthetic", "metric"] == "recall@1" and not gate.loc["synthetic", "learned"]


def test_the_gate_decides_on_the_intervals_lower_bound_not_the_mean_gain():
    """npair gains on average (+0.083) but one seed lost 0.10: the 95% interval of the gain reaches
    below 0, so npair has not shown that it learned and its dataset draws no claim."""
    finals = {x: [0.6, 0.62, 0.61] for x in PAPER_LOSSES}
    finals["npair"] = [0.50, 0.11, 0.27]  # untrained 0.20, 0.21, 0.22: gains 0.30, -0.10, 0.05
    gate = learned_gate(_epochs(0.2, finals, "noisy"))
    row = gate.set_index("loss").loc["npair"]
    gains = [0.30, -0.10, 0.05]
    mean = sum(gains) / 3
    sd = math.sqrt(sum((g - mean) ** 2 for g in gains) / 2)
    low = mean - 4.302652729911275 * sd / math.sqrt(3)  # t_{0.975, 2}
    assert row["diff"] == pytest.approx(mean) and mean > 0
    assert row["ci_low"] == pytest.approx(low) and low < 0
    assert not row["learned"], "a positive mean gain whose interval reaches below 0 passed the gate"
    assert gate.loc[gate["loss"] != "npair", "learned"].all()
    assert learned_datasets(gate) == []


def test_claims_tables_checks_a_claim_where_every_loss_it_names_learned_and_compares_schedules():
    """npair did not learn on "bad": the claims that name npair are not checked there, the others are."""
    flat = {x: [0.6, 0.62, 0.61] for x in PAPER_LOSSES}
    flat["npair"] = [0.19, 0.22, 0.21]
    epochs = pd.concat([_epochs(0.2, {x: [0.6, 0.62, 0.61] for x in PAPER_LOSSES}, "good"), _epochs(0.2, flat, "bad")])
    values = {"triplet": [0.5, 0.6, 0.55], "scl": [0.6, 0.7, 0.65], "contrastive": [0.2, 0.25, 0.2],
              "infonce": [0.3, 0.3, 0.35], "npair": [0.1, 0.1, 0.12], "arcface": [0.2, 0.21, 0.2],
              "ccl": [0.3, 0.2, 0.3]}
    summary = pd.concat([table(values, "intra_var", d) for d in ("good", "bad")], ignore_index=True)
    summary["margin_rel_mean"] = summary["intra_var"]  # a claim against every other loss, npair among them
    text = next(c.text for c in CLAIMS if c.key == "triplet_scl_keep_variance")
    other = pd.DataFrame({"claim": [text], "dataset": ["good"], "verdict": ["contradicted"]})  # format_claims' table
    out = claims_tables(summary, epochs, other, ("demo", "paper"))
    assert sorted(out) == ["claims", "gate", "members", "schedules", "variants"]
    assert len(out["gate"]) == 2 * len(PAPER_LOSSES) and out["gate"]["learned"].sum() == 2 * len(PAPER_LOSSES) - 1
    assert learned_losses(out["gate"])["bad"] == set(PAPER_LOSSES) - {"npair"}
    checked = set(zip(out["claims"]["claim"], out["claims"]["dataset"], strict=True))
    assert ("triplet_scl_keep_variance", "bad") in checked, "a claim that does not name npair is checked on bad"
    assert ("triplet_scl_clearer_margins", "good") in checked
    assert ("triplet_scl_clearer_margins", "bad") not in checked, "a claim naming npair is not checked on bad"
    claims = out["claims"].set_index(["claim", "dataset"])
    assert claims.loc[("triplet_scl_keep_variance", "good"), "verdict"] == "supported"
    assert set(zip(out["members"]["claim"], out["members"]["dataset"], strict=True)) == checked
    assert list(out["variants"].columns[:5]) == ["claim", "dataset", "variant", "default_verdict", "variant_verdict"]
    row = out["schedules"].set_index(["claim", "dataset"]).loc[(text, "good")]
    assert row["demo"] == "supported" and row["paper"] == "contradicted" and row["changed"]
    assert claims_tables(summary, epochs)["schedules"].empty


def test_variant_table_shows_a_verdict_that_changes_with_the_variant():
    base = {x: [1.0, 1.0, 1.0] for x in PAPER_LOSSES}
    values = {**base, "npair": [2.0, 2.1, 2.2], "npair_all": [0.5, 0.6, 0.5]}
    values = {k: [v + 0.01 * i for i, v in enumerate(vs)] for k, vs in values.items()}
    frame = table(values, "dir_centroid_dist_mean")
    claims = [c for c in CLAIMS if c.key == "npair_large_separation"]
    default = check_claims(frame, claims)
    assert default.iloc[0]["verdict"] == "supported"
    out = variant_table(frame, default)
    row = out.set_index("claim").loc["npair_large_separation"]
    assert row["variant"] == "npair -> npair_all" and row["variant_verdict"] == "contradicted" and row["changed"]


def test_compare_verdicts_marks_changes_between_two_tables():
    a = pd.DataFrame({"claim": ["x", "y"], "dataset": ["d", "d"], "verdict": ["supported", "inconclusive"]})
    b = pd.DataFrame({"claim": ["x", "y"], "dataset": ["d", "d"], "verdict": ["supported", "contradicted"]})
    out = compare_verdicts(a, b, ("demo", "paper_schedule")).set_index("claim")
    assert list(out["changed"]) == [False, True] and out.loc["y", "paper_schedule"] == "contradicted"


def test_compare_verdicts_a_check_only_one_profile_made_is_not_a_change():
    """A dataset one profile gated out (or never ran) has no verdict there: "not checked", never "changed"."""
    a = pd.DataFrame({"claim": ["x"], "dataset": ["synthetic"], "verdict": ["contradicted"]})
    b = pd.DataFrame({"claim": ["x", "x"], "dataset": ["synthetic", "fashionmnist"],
                      "verdict": ["supported", "supported"]})
    out = compare_verdicts(a, b, ("demo", "paper_schedule")).set_index("dataset")
    assert out.loc["fashionmnist", "demo"] == "not checked" and not out.loc["fashionmnist", "changed"]
    assert out.loc["synthetic", "changed"]


def test_every_claim_names_its_metric_and_reason_and_only_known_losses():
    from vgcore.registry import names

    for c in CLAIMS:
        assert c.metric and c.why and c.source in ("paper", "ours")
        assert not c.companion or c.companion_why, f"{c.key}: a companion says why it is there"
        assert set(c.group) | set(c.rest) <= set(names("loss")) and not set(c.group) & set(c.rest)
    assert np.all([c.key for c in CLAIMS])


SEVEN = ("contrastive", "triplet", "npair", "infonce", "arcface", "scl", "ccl")
CT_IN, TR_SCL = ("contrastive", "infonce"), ("triplet", "scl")
PAPER_CLAIMS = {
    # key: (metric, group, rest (None: every other loss), higher is the claimed direction), the
    # direction read off the claim's words (README and PROTOCOL.md "Claims")
    "triplet_scl_keep_variance": ("intra_var", TR_SCL, CT_IN, True),  # keep *more* variance
    "triplet_scl_clearer_margins": ("margin_rel_mean", TR_SCL, None, True),  # *clearer*: wider margins
    "triplet_scl_win_fine_grained": ("recall@1", TR_SCL, None, True),  # *win* top-1 retrieval
    "contrastive_infonce_compact": ("intra_var", CT_IN, TR_SCL, False),  # *compact* more: less variance
    "contrastive_infonce_fast": ("val_convergence_step", CT_IN, TR_SCL, False),  # *faster*: fewer steps
    "contrastive_infonce_compact_fast": ("early_intra_var", CT_IN, TR_SCL, False),  # less variance early on
    "contrastive_infonce_many_updates": ("grad_effective_share_mean", CT_IN, TR_SCL, True),  # *more* samples
    "contrastive_infonce_small_updates": ("adam_step_norm_mean_mean", CT_IN, TR_SCL, False),  # *smaller*
    "contrastive_infonce_active": ("tuple_active_ratio_mean", CT_IN, TR_SCL, True),  # *more* samples active
    "contrastive_infonce_oversimplify": ("fine_recall@1_within_super", CT_IN, TR_SCL, False),  # *less* kept
    "triplet_fewer_updates": ("grad_effective_share_mean", ("triplet",), None, False),  # *fewer* samples
    "triplet_stronger_updates": ("adam_step_norm_mean_mean", ("triplet",), None, True),  # *stronger*
    "npair_large_separation": ("dir_centroid_dist_mean", ("npair",), None, True),  # the *largest*
    "npair_uneven_spacing": ("dir_centroid_dist_cv", ("npair",), None, True),  # the *most* unevenly
}


def test_each_claim_compares_the_papers_groups_in_the_papers_direction():
    assert [c.key for c in CLAIMS] == list(PAPER_CLAIMS)
    for c in CLAIMS:
        metric, group, rest, higher = PAPER_CLAIMS[c.key]
        rest = rest or tuple(x for x in SEVEN if x not in group)
        assert (c.metric, set(c.group), set(c.rest), c.higher) == (metric, set(group), set(rest), higher), c.key


def _clear_gap(metrics, group, rest, higher, dataset="cub200") -> pd.DataFrame:
    """3 seeds of the seven losses: every group member at least 0.8 better than every rest member in
    the direction `higher`, the losses in neither in between."""
    rows = []
    for i, loss in enumerate(SEVEN):
        level = 2.0 + 0.1 * i if loss in group else 1.0 - 0.1 * i if loss in rest else 1.5
        if not higher:
            level = 3.0 - level
        for seed in range(3):
            value = level + 0.03 * ((i + seed) % 3 - 1)  # a seed spread, not the same for every loss
            rows.append({"dataset": dataset, "loss": loss, "seed": seed, **dict.fromkeys(metrics, value)})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("key", list(PAPER_CLAIMS))
def test_each_claim_is_supported_by_a_clear_gap_its_way_and_contradicted_by_the_mirror(key):
    """The seed table follows the paper's direction (PAPER_CLAIMS), not the claim's own field."""
    claim = next(c for c in CLAIMS if c.key == key)
    metric, group, rest, higher = PAPER_CLAIMS[key]
    rest = rest or tuple(x for x in SEVEN if x not in group)
    metrics = [metric] + ([claim.companion] if claim.companion else [])
    dataset = claim.datasets[0] if claim.datasets else "cub200"
    for direction, verdict in ((higher, "supported"), (not higher, "contradicted")):
        out = check_claims(_clear_gap(metrics, group, rest, direction, dataset), [claim])
        assert list(out["verdict"]) == [verdict], (key, direction)
        if claim.companion:  # the companion is judged in the same direction
            assert list(out["companion_verdict"]) == [verdict], (key, direction)


def test_protocol_states_every_claim_with_its_metric():
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "PROTOCOL.md").read_text()
    section = text[text.index("\n## Claims\n"):]
    section = section[:section.index("\n## ", 5)]
    for c in CLAIMS:
        assert f"`{c.key}`" in section and f"`{c.metric}`" in section, c.key


# --- smallest effects, the decision table, members, two rows one test -------------------------------------------


def test_every_claims_metric_and_companion_has_a_smallest_effect_above_the_cross_cpu_tolerance():
    """delta must exceed what a rebuild on another CPU may move a table value by (vgcore/report/tolerance.py):
    a relative delta RTOL, an absolute one the tolerance of any fraction below 1 printed to 3 decimals
    (a fraction of 1.000, a saturated metric, has a tolerance of 0.01 = one point)."""
    from vgcore.report.tolerance import RTOL, tolerance

    for c in CLAIMS:
        for metric in filter(None, (c.metric, c.companion)):
            assert metric in SMALLEST_EFFECT, f"{c.key}: {metric} has no smallest effect of interest"
    fraction_tolerance = max(tolerance(f"{v:.3f}") for v in np.linspace(0.0, 0.999, 1000))
    for metric, (delta, kind, reason) in SMALLEST_EFFECT.items():
        assert kind in ("abs", "rel") and reason, metric
        assert delta > (RTOL if kind == "rel" else fraction_tolerance), metric


def test_the_smallest_effects_are_the_protocols():
    """One point of a fraction of queries, 5% of a spread, one sqrt(2) grid interval of a step count,
    two points of a share, 10% of a per-sample update size."""
    expected = {"recall@1": (0.01, "abs"), "map@r": (0.01, "abs"), "fine_recall@1_within_super": (0.01, "abs"),
                "intra_var": (0.05, "rel"), "early_intra_var": (0.05, "rel"), "margin_rel_mean": (0.05, "rel"),
                "dir_centroid_dist_mean": (0.05, "rel"), "dir_centroid_dist_cv": (0.05, "rel"),
                "centroid_dist_mean": (0.05, "rel"), "val_convergence_step": (0.42, "rel"),
                "tuple_active_ratio_mean": (0.02, "abs"), "grad_active_ratio_mean": (0.02, "abs"),
                "grad_effective_share_mean": (0.02, "abs"), "adam_step_norm_mean_mean": (0.10, "rel"),
                "emb_grad_norm_mean_mean": (0.10, "rel")}
    for metric, effect in expected.items():
        assert SMALLEST_EFFECT[metric][:2] == effect, metric
    assert math.sqrt(2) - 1 < SMALLEST_EFFECT["val_convergence_step"][0] < 0.5  # one grid interval, not two


@pytest.mark.parametrize(("low", "high", "verdict"), [
    (-0.05, 0.05, "negligible"), (0.0, 0.09, "negligible"), (-0.099, 0.099, "negligible"),
    (0.11, 0.5, "supported"), (0.1, 0.5, "significant, size uncertain"), (0.01, 0.5, "significant, size uncertain"),
    (0.01, 0.05, "negligible"),  # above 0 and inside +-delta: the equivalence comes first
    (-0.5, -0.11, "contradicted"), (-0.5, -0.1, "contradicted, size uncertain"),
    (-0.5, -0.01, "contradicted, size uncertain"), (-0.05, 0.2, "inconclusive"), (-0.2, 0.2, "inconclusive"),
    (math.nan, math.nan, "inconclusive"),
])
def test_the_decision_table_of_one_pair(low, high, verdict):
    """delta = 0.1: the rows of the module docstring, the first that applies, strict at +-delta and 0."""
    assert decide(low, high, 0.1) == verdict


def five_seeds(diffs: dict[str, list[float]], base=(1.0, 1.2, 0.9, 1.1, 1.05)) -> pd.DataFrame:
    """Rest member r at `base`; each group member at base + its per-seed difference."""
    return table({"r": list(base), **{g: [b + d for b, d in zip(base, ds, strict=True)] for g, ds in diffs.items()}})


T4 = 2.7764451051977987  # t_{0.975, 4}: five seeds


def _interval(d):
    mean, sd = np.mean(d), np.std(d, ddof=1)
    return mean - T4 * sd / math.sqrt(5), mean + T4 * sd / math.sqrt(5)


@pytest.mark.parametrize(("diffs", "verdict"), [
    ([0.20, 0.22, 0.18, 0.21, 0.19], "supported"),           # [0.18, 0.22]: above delta
    ([0.03, 0.12, 0.05, 0.10, 0.08], "significant, size uncertain"),  # [0.03, 0.12]: above 0, across delta
    ([0.03, 0.00, 0.04, 0.02, 0.01], "negligible"),          # [0.0004, 0.04]: above 0 but inside +-0.1
    ([-0.20, -0.22, -0.18, -0.21, -0.19], "contradicted"),
    ([-0.03, -0.12, -0.05, -0.10, -0.08], "contradicted, size uncertain"),
    ([0.30, -0.20, 0.10, 0.25, -0.15], "inconclusive"),
])
def test_one_pairs_verdict_on_five_seeds_follows_its_interval_by_hand(diffs, verdict):
    out = compare_groups(five_seeds({"g": diffs}), "m", ("g",), ("r",), True, (0.1, "abs"))
    low, high = _interval(diffs)
    assert (out["ci_low"], out["ci_high"]) == (pytest.approx(low), pytest.approx(high))
    assert out["verdict"] == decide(low, high, 0.1) == verdict and out["n_seeds"] == 5


def test_a_relative_delta_is_a_share_of_the_rest_members_mean():
    """5% of r's mean 1.05 is 0.0525: a difference of 0.08 +- 0.01 is supported, of 0.05 it is not."""
    out = compare_groups(five_seeds({"g": [0.08, 0.09, 0.07, 0.08, 0.08]}), "m", ("g",), ("r",), True, (0.05, "rel"))
    assert out["delta_units"] == pytest.approx(0.0525) and out["ref_mean"] == pytest.approx(1.05)
    assert out["verdict"] == "supported"
    out = compare_groups(five_seeds({"g": [0.05, 0.06, 0.04, 0.05, 0.05]}), "m", ("g",), ("r",), True, (0.05, "rel"))
    assert out["verdict"] == "significant, size uncertain"


def test_the_group_takes_its_weakest_pairs_verdict_and_names_that_pair():
    """The order contradicted < contradicted, size uncertain < negligible < inconclusive < significant,
    size uncertain < supported; ties go to the smallest lower bound."""
    assert ORDER == ("contradicted", "contradicted, size uncertain", "negligible", "inconclusive",
                     "significant, size uncertain", "supported")
    pairs = [{"verdict": v, "ci_low": lo, "name": n} for v, lo, n in
             [("supported", 0.5, "a"), ("inconclusive", -0.2, "b"), ("negligible", -0.05, "c"),
              ("significant, size uncertain", 0.01, "d")]]
    assert combine(pairs)["name"] == "c"  # negligible is weaker than inconclusive
    ties = [{"verdict": "supported", "ci_low": lo, "name": n} for lo, n in [(0.4, "a"), (0.2, "b"), (0.3, "c")]]
    assert combine(ties)["name"] == "b"
    frame = five_seeds({"g1": [0.20, 0.22, 0.18, 0.21, 0.19], "g2": [0.01, -0.02, 0.02, 0.00, -0.01]})
    out = compare_groups(frame, "m", ("g1", "g2"), ("r",), True, (0.1, "abs"))
    assert out["verdict"] == "negligible" and out["closest_pair"] == "g2 vs r"


def test_the_member_table_names_the_member_that_breaks_a_group_claim():
    """g1 beats both rest members beyond delta, g2 only by a negligible amount: the group claim is
    negligible, set by g2; g2 breaks it."""
    base = (1.0, 1.2, 0.9, 1.1, 1.05)
    values = {"r1": list(base), "r2": [b - 0.01 for b in base],
              "g1": [b + d for b, d in zip(base, [0.20, 0.22, 0.18, 0.21, 0.19], strict=True)],
              "g2": [b + d for b, d in zip(base, [0.01, -0.02, 0.02, 0.00, -0.01], strict=True)]}
    frame = table(values)
    claim = Claim("c", "g1/g2 beat r1/r2", "m", ("g1", "g2"), ("r1", "r2"), higher=True, why="test")
    group = check_claims(frame, [claim], effects=EFFECTS).iloc[0]
    members = member_verdicts(frame, [claim], effects=EFFECTS).set_index("member")
    assert list(members["verdict"]) == ["supported", "negligible"]
    assert members.loc["g1", "closest_pair"] == "g1 vs r1" and members.loc["g2", "closest_pair"] == "g2 vs r1"
    assert group["verdict"] == members["verdict"].map(ORDER.index).pipe(lambda r: ORDER[r.min()])
    assert group["closest_pair"] == "g2 vs r1"
    assert breaking_members(member_verdicts(frame, [claim], effects=EFFECTS), "c", "d") == ["g2"]
    assert list(members["breaks_claim"]) == [False, True]
    shown = format_members(member_verdicts(frame, [claim], effects=EFFECTS))
    assert list(shown["breaks claim"]) == [False, True] and shown.attrs["caption"] == DESCRIPTIVE_NOTE
    same = table({"r": [1.0, 1.1, 1.2], "g1": [2.0, 2.1, 2.2], "g2": [2.0, 2.2, 2.1]})
    both = member_verdicts(same, [dataclasses.replace(claim, rest=("r",))], effects=EFFECTS)
    assert breaking_members(both) == [] and not both["breaks_claim"].any()


def test_forced_inconclusive_members_keep_the_reason():
    claim = Claim("c", "g beats r", "m", ("g1", "g2"), ("r",), higher=True, why="test")
    constant = member_verdicts(table({"g1": [1.0, 1.0], "g2": [1.0, 1.0], "r": [1.0, 1.0]}), [claim], effects=EFFECTS)
    assert set(constant["verdict"]) == {"inconclusive"} and constant["note"].str.contains("constant").all()
    one = member_verdicts(table({"g1": [2.0], "g2": [2.0], "r": [1.0]}), [claim], effects=EFFECTS)
    assert set(one["verdict"]) == {"inconclusive"} and one["note"].str.contains("fewer than 2").all()


def _recall_table(dataset="cub200", seeds=5, fine=lambda r: r - 0.2) -> pd.DataFrame:
    """Recall@1 rising by loss; fine-class Recall@1 within the superclass a monotone function of it."""
    rng = np.random.default_rng(0)
    rows = []
    for i, loss in enumerate(SEVEN):
        for s in range(seeds):
            r = 0.5 + 0.03 * i + 0.005 * rng.standard_normal()
            rows.append({"dataset": dataset, "loss": loss, "seed": s, "recall@1": r, "fine_recall@1_within_super":
                         fine(r), "intra_var": 0.3 + 0.01 * rng.standard_normal(), "other": rng.random()})
    return pd.DataFrame(rows)


def test_two_rows_one_test_flags_the_later_claim_whose_metric_coincides():
    """recall@1 and fine_recall@1_within_super rank the runs alike (rho = 1): the later claim is flagged."""
    win = Claim("win", "a/b win top-1", "recall@1", ("ccl", "scl"), ("contrastive", "triplet"), higher=True, why="t")
    fine = Claim("fine", "a/b keep fine structure", "fine_recall@1_within_super", ("ccl", "scl"),
                 ("contrastive", "triplet"), higher=True, why="t")
    frame = _recall_table()
    assert metrics_coincide(frame, "recall@1", "fine_recall@1_within_super") == pytest.approx(1.0)
    out = check_claims(frame, [win, fine]).set_index("claim")
    assert pd.isna(out.loc["win", "same_test_as"]) and "two rows" not in out.loc["win", "note"]
    assert out.loc["fine", "same_test_as"] == "win" and out.loc["fine", "same_test_rho"] == pytest.approx(1.0)
    assert "two rows, one test: coincides with win (rho=+1.00)" in out.loc["fine", "note"]
    assert format_claims(check_claims(frame, [win, fine]))["same test as"].tolist() == ["", "win"]
    reverse = check_claims(frame, [fine, win]).set_index("claim")  # CLAIMS order decides which row is flagged
    assert reverse.loc["win", "same_test_as"] == "fine" and pd.isna(reverse.loc["fine", "same_test_as"])
    anti = _recall_table(fine=lambda r: 1.0 - r)  # |rho| counts: a mirror is the same test
    assert metrics_coincide(anti, "recall@1", "fine_recall@1_within_super") == pytest.approx(-1.0)
    assert list(same_tests(anti, check_claims(anti, [win, fine]), [win, fine])["same_test_as"]) == ["win"]
    assert math.isnan(metrics_coincide(frame, "recall@1", "intra_var")) is False
    assert abs(metrics_coincide(frame, "recall@1", "other")) < 0.95


def test_two_rows_one_test_flags_the_same_metric_and_not_an_unrelated_one():
    """keep variance and compact are both intra_var: compact (later in CLAIMS) is flagged; recall@1
    and an unrelated metric are not; on another dataset each row stands alone."""
    keep, compact = (next(c for c in CLAIMS if c.key == k) for k in
                     ("triplet_scl_keep_variance", "contrastive_infonce_compact"))
    unrelated = Claim("other", "o", "other", ("ccl",), ("npair",), higher=True, why="t")
    frame = _recall_table()
    out = check_claims(frame, [keep, compact, unrelated], effects={**SMALLEST_EFFECT, "other": (0.1, "abs", "t")})
    flags = dict(zip(out["claim"], out["same_test_as"], strict=True))
    assert flags["contrastive_infonce_compact"] == "triplet_scl_keep_variance"
    assert pd.isna(flags["triplet_scl_keep_variance"]) and pd.isna(flags["other"])
    assert "coincides with triplet_scl_keep_variance (rho=+1.00)" in out.set_index("claim").loc[
        "contrastive_infonce_compact", "note"]
    few = _recall_table(seeds=1).iloc[:5]  # five runs: too few for a rank correlation
    assert math.isnan(metrics_coincide(few, "recall@1", "fine_recall@1_within_super"))


def test_oversimplify_is_checked_only_on_the_superclass_trained_set():
    claim = next(c for c in CLAIMS if c.key == "contrastive_infonce_oversimplify")
    assert claim.datasets == ("synthetic_super",)
    frame = pd.concat([_recall_table(d) for d in ("synthetic", "cub200", "synthetic_super")], ignore_index=True)
    assert list(check_claims(frame, [claim])["dataset"]) == ["synthetic_super"]


def test_the_claims_tables_are_labelled_descriptive():
    from vgcore.report.outputs import ANALYSIS

    assert "no correction across claims, datasets or protocols" in DESCRIPTIVE_NOTE
    assert format_claims(check_claims(_recall_table())).attrs["caption"] == DESCRIPTIVE_NOTE
    captions = {item.name: item.caption for item in ANALYSIS["06_claims"] if item.kind == "table"}
    assert DESCRIPTIVE_NOTE in captions["06_claims"] and DESCRIPTIVE_NOTE in captions["06_claims_members"]


def test_the_claims_table_reports_each_closest_pairs_effect_beside_its_delta():
    out = check_claims(_clear_gap(["intra_var"], TR_SCL, CT_IN, True), [CLAIMS[0]]).iloc[0]
    rest = out["closest_pair"].split(" vs ")[1]
    ref = _clear_gap(["intra_var"], TR_SCL, CT_IN, True).groupby("loss")["intra_var"].mean()[rest]
    assert (out["delta"], out["delta_kind"]) == (0.05, "rel")
    assert out["delta_units"] == pytest.approx(0.05 * ref) and out["ci_low"] > out["delta_units"]
