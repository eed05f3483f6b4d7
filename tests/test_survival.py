"""Which claims survive the fair comparison: the rule table by hand, the N-pair swap, the unconverged flag."""

import itertools

import pandas as pd
import pytest

from vgcore.report import claims as C
from vgcore.report import survival as S


def test_the_fate_of_a_claim_follows_the_protocol_rule_for_every_pair_of_verdicts():
    verdicts = [*C.ORDER, C.NOT_CHECKED, S.NOT_JUDGED_UNCONVERGED]
    positive = {C.SUPPORTED, C.SIGNIFICANT}
    against = {C.NEGLIGIBLE, C.CONTRADICTED, C.CONTRADICTED_UNCERTAIN}
    for paper, fair in itertools.product(verdicts, verdicts):
        expected = ("survives" if paper in positive and fair in positive
                    else "does not survive" if fair in against else "undecided")
        assert S.survives(paper, fair) == expected, (paper, fair)
    # the cases a reader asks about, spelled out
    assert S.survives(C.SUPPORTED, C.SIGNIFICANT) == S.SURVIVES
    assert S.survives(C.SUPPORTED, C.NEGLIGIBLE) == S.DOES_NOT_SURVIVE
    assert S.survives(C.INCONCLUSIVE, C.SUPPORTED) == S.UNDECIDED  # never held under the paper's protocol
    assert S.survives(C.SUPPORTED, S.NOT_JUDGED_UNCONVERGED) == S.UNDECIDED


def test_survival_reads_the_side_by_side_table():
    a = pd.DataFrame({"claim": ["x", "y", "z"], "dataset": "d", "verdict": [C.SUPPORTED, C.SUPPORTED, C.SIGNIFICANT]})
    b = pd.DataFrame({"claim": ["x", "y"], "dataset": "d", "verdict": [C.SIGNIFICANT, C.CONTRADICTED]})
    table = S.survival(C.compare_verdicts(a, b, ("demo", "fair")), "demo").set_index("claim")
    assert table["survival"].to_dict() == {"x": S.SURVIVES, "y": S.DOES_NOT_SURVIVE, "z": S.UNDECIDED}


def test_the_fair_claims_name_the_grouped_npair_and_change_nothing_else():
    fair = S.fair_claims()
    assert len(fair) == len(C.CLAIMS)
    for old, new in zip(C.CLAIMS, fair, strict=True):
        assert "npair" not in new.group + new.rest
        assert new.group == tuple("npair_groups" if n == "npair" else n for n in old.group)
        assert new.rest == tuple("npair_groups" if n == "npair" else n for n in old.rest)
        assert (new.key, new.metric, new.higher, new.datasets) == (old.key, old.metric, old.higher, old.datasets)
    assert any("npair" in c.group + c.rest for c in C.CLAIMS)  # the swap is not vacuous


def test_a_claim_naming_a_loss_with_an_unconverged_run_is_not_judged_there():
    claims = [C.Claim("a", "a", "recall@1", ("triplet",), ("scl",), True, "w"),
              C.Claim("b", "b", "recall@1", ("infonce",), ("scl",), True, "w")]
    summary = pd.DataFrame({"dataset": ["d", "d", "d", "e"], "loss": ["triplet", "scl", "infonce", "infonce"],
                            "converged": [False, True, True, False]})
    verdicts = pd.DataFrame({"claim": ["a", "b", "b"], "dataset": ["d", "d", "e"],
                             "verdict": [C.SUPPORTED, C.SUPPORTED, C.NEGLIGIBLE], "note": ["", "", ""]})
    out = S.mark_unconverged(verdicts, summary, claims)
    assert out["verdict"].tolist() == [S.NOT_JUDGED_UNCONVERGED, C.SUPPORTED, S.NOT_JUDGED_UNCONVERGED]
    assert "triplet" in out.loc[0, "note"] and "infonce" in out.loc[2, "note"]
    assert verdicts["verdict"].tolist()[0] == C.SUPPORTED  # the input is left as it was
    # runs with a fixed number of epochs carry no convergence flag: nothing is marked
    assert S.mark_unconverged(verdicts, summary.drop(columns="converged"), claims).equals(verdicts)


@pytest.mark.parametrize("flag", [[True, None], [True, float("nan")]])
def test_a_run_without_a_flag_is_not_taken_for_unconverged(flag):
    summary = pd.DataFrame({"dataset": ["d", "d"], "loss": ["triplet", "scl"], "converged": flag})
    assert S.unconverged_losses(summary) == {}


def _runs(values: dict[str, list[float]], metric: str, dataset: str) -> pd.DataFrame:
    return pd.DataFrame([{"dataset": dataset, "loss": loss, "seed": s, metric: v, "converged": True}
                         for loss, vals in values.items() for s, v in enumerate(vals)])


def _learned(losses, dataset):
    """An epochs table in which every loss learned (final test Recall@1 well above the untrained head's)."""
    return pd.DataFrame([{"dataset": dataset, "loss": loss, "seed": s, "split": split, "epoch": e, "recall@1": r}
                         for loss in losses for s in range(3)
                         for split, e, r in (("test", 0, 0.2 + 0.01 * s), ("test", 5, 0.6 + 0.01 * s),
                                             ("train_subset", 5, 1.0))])


def test_the_fair_tables_judge_the_grouped_npair_flag_unconverged_runs_and_say_what_survives():
    claim = next(c for c in C.CLAIMS if c.key == "npair_large_separation")
    metric = claim.metric
    losses = [*C.PAPER_LOSSES, "npair_groups"]
    base = {x: [1.0, 1.01, 1.02] for x in losses}
    # the grouped N-pair separates classes far more than the rest; Sohn's one-group reading does not
    good = _runs({**base, "npair_groups": [2.0, 2.1, 2.2], "npair": [0.5, 0.6, 0.5]}, metric, "good")
    slow = _runs({**base, "npair_groups": [2.0, 2.1, 2.2], "npair": [0.5, 0.6, 0.5]}, metric, "slow")
    slow.loc[(slow["loss"] == "npair_groups") & (slow["seed"] == 1), "converged"] = False
    summary = pd.concat([good, slow], ignore_index=True)
    epochs = pd.concat([_learned(summary["loss"].unique(), d) for d in ("good", "slow")], ignore_index=True)
    paper = pd.DataFrame({"claim": [claim.text, claim.text], "dataset": ["good", "slow"],
                          "verdict": [C.SUPPORTED, C.SUPPORTED]})
    out = S.fair_claims_tables(summary, epochs, {"demo": paper})
    verdicts = out["claims"].set_index(["claim", "dataset"])["verdict"]
    assert verdicts[("npair_large_separation", "good")] == C.SUPPORTED
    assert verdicts[("npair_large_separation", "slow")] == S.NOT_JUDGED_UNCONVERGED
    survival = out["survival"].set_index(["dataset", "protocol"])
    assert survival.loc[("good", "demo"), "survival"] == S.SURVIVES
    assert survival.loc[("slow", "demo"), "survival"] == S.UNDECIDED
    assert list(out["survival"].columns) == list(S.SURVIVAL_COLUMNS)
    row = out["variants"].set_index(["claim", "dataset"]).loc[("npair_large_separation", "good")]
    assert row["variant"] == "npair_groups -> npair" and row["variant_verdict"] == C.CONTRADICTED
    assert S.fair_claims_tables(summary, epochs)["survival"].empty
    # a dataset only one side ran is not set beside the other: no row of the paper's "other" or of the
    # fair "slow" against a paper build that never ran it
    other = pd.DataFrame({"claim": [claim.text, claim.text], "dataset": ["good", "other"],
                          "verdict": [C.SUPPORTED, C.SUPPORTED]})
    rows = S.fair_claims_tables(summary, epochs, {"demo": paper, "paper_schedule": other})["survival"]
    assert sorted(zip(rows["dataset"], rows["protocol"], strict=True)) == [
        ("good", "demo"), ("good", "paper_schedule"), ("slow", "demo")]


def test_a_verdict_that_flips_at_one_value_of_a_constant_holds_at_the_others():
    from vgcore import tuning
    from vgcore.report import sensitivity as V

    claim = next(c for c in C.CLAIMS if c.key == "npair_large_separation")
    metric = claim.metric
    losses = [*C.PAPER_LOSSES, "npair_groups"]
    own = _runs({**{x: [1.0, 1.01, 1.02] for x in losses}, "npair_groups": [2.0, 2.1, 2.2]}, metric, "d")
    epochs = _learned(losses, "d")
    moved = {}
    for point in range(len(tuning.SENSITIVITY_POINTS)):
        level = 0.4 if point == 4 else 2.0  # at its largest temperature the grouped N-pair separates less
        moved[("npair_groups", point)] = (_runs({"npair_groups": [level, level + 0.1, level + 0.2]}, metric, "d"),
                                          _learned(["npair_groups"], "d"))
    table = V.sensitivity_verdicts(own, epochs, moved, claims=S.fair_claims([claim]))
    assert table["point"].tolist() == [0, 1, 2, 3, 4]
    assert (table["fair_verdict"] == C.SUPPORTED).all()
    assert table["holds"].tolist() == [True, True, True, True, False]
    assert table.loc[4, "verdict"] == C.CONTRADICTED
    assert table["value"].tolist() == tuning.sensitivity_values("npair_groups")
    share = V.stability(table).iloc[0]
    assert (share["share_holds"], share["values"], share["param"]) == (0.8, 5, "temperature")
    assert [V.verdict_class(v) for v in (C.SIGNIFICANT, C.NEGLIGIBLE, C.CONTRADICTED_UNCERTAIN, C.INCONCLUSIVE,
                                         S.NOT_JUDGED_UNCONVERGED)] == ["for", "negligible", "against", "open", "open"]


def test_the_sensitivity_values_span_each_axis_on_its_scale():
    from vgcore import tuning

    lin, log = tuning.sensitivity_values("contrastive"), tuning.sensitivity_values("arcface")
    assert lin[0] == 0.2 and lin[-1] == 1.6 and lin[2] == pytest.approx((0.2 + 1.6) / 2, rel=1e-12)
    assert log[0] == pytest.approx(8.0) and log[-1] == pytest.approx(64.0) and log[2] == pytest.approx((8.0 * 64.0) ** 0.5)
    assert tuning.sensitivity_tag("arcface", 3) == "arcface-scale-k3"


def test_the_tuned_table_lists_each_cells_chosen_setting_from_the_tuned_file(tmp_path, monkeypatch):
    import json
    import math

    from vgcore import config as config_module

    stored = {"synthetic": {"triplet": {"lr": 0.002, "loss_params": {"margin": 0.31}, "trial": 3, "val_map@r": 0.41,
                                        "unconverged": 1},
                            "scl": {"lr": 0.0005, "loss_params": {"temperature": 0.07}, "trial": 0, "val_map@r": 0.44,
                                    "unconverged": 0}}}
    monkeypatch.setattr(config_module, "tuned_path", lambda name: tmp_path / f"{name}.json")
    (tmp_path / "fair.json").write_text(json.dumps(stored))
    table = S.tuned_table(config_module.get_profile("fair"), datasets=["synthetic"], losses=["scl", "triplet"])
    assert list(table.columns) == list(S.TUNED_COLUMNS)
    assert table[["loss", "constant", "value", "trial"]].values.tolist() == [["scl", "temperature", 0.07, 0],
                                                                             ["triplet", "margin", 0.31, 3]]
    assert table["lr"].tolist() == [0.0005, 0.002] and table["unconverged trials"].tolist() == [0, 1]
    with pytest.raises(ValueError, match=r"synthetic/ccl.*not tuned.*make fair"):
        S.tuned_table(config_module.get_profile("fair"), datasets=["synthetic"], losses=["ccl"])
    assert not math.isnan(table["validation map@r"].iloc[0])
    # scl's temperature 0.07 and both learning rates lie inside their ranges; triplet's margin 0.31 too
    assert table["at range edge"].tolist() == ["", ""]
    stored["synthetic"]["scl"].update(lr=2.9e-2, loss_params={"temperature": 0.021})  # both near an end
    (tmp_path / "fair.json").write_text(json.dumps(stored))
    edge = S.tuned_table(config_module.get_profile("fair"), datasets=["synthetic"], losses=["scl"])
    assert edge["at range edge"].tolist() == ["lr, temperature"]


def test_the_convergence_table_has_every_run_and_counts_the_unconverged():
    summary = pd.DataFrame({"dataset": ["d"] * 4, "loss": ["a", "a", "b", "b"], "seed": [1, 0, 0, 1],
                            "best_epoch": [7, 9, 40, 3], "stop_epoch": [12, 14, 40, 8],
                            "stopped_by": ["patience", "patience", "budget", "patience"],
                            "converged": [True, True, False, True], "best_val_map@r": [0.5, 0.6, 0.7, 0.4],
                            "recall@1": [0.1] * 4})
    table = S.convergence_table(summary)
    assert list(table.columns) == ["dataset", "loss", "seed", *S.STOP_COLUMNS]
    assert table[["loss", "seed"]].values.tolist() == [["a", 0], ["a", 1], ["b", 0], ["b", 1]]
    assert table.loc[table["converged"].eq(False), ["loss", "seed"]].values.tolist() == [["b", 0]]
    with pytest.raises(ValueError, match="trained to convergence"):
        S.convergence_table(summary.drop(columns=["stopped_by"]))


def test_the_paper_protocol_tables_are_read_from_the_committed_builds(tmp_path):
    for name in S.PAPER_PROTOCOLS[:1]:
        (tmp_path / name / "tables").mkdir(parents=True)
        pd.DataFrame({"claim": ["x"], "dataset": ["d"], "verdict": [C.SUPPORTED]}).to_csv(
            tmp_path / name / "tables" / "06_claims.csv", index=False)
    assert S.PAPER_PROTOCOLS == ("demo", "paper_schedule")
    with pytest.raises(FileNotFoundError, match=r"paper_schedule.*make figures PROFILE=paper_schedule"):
        S.paper_tables(tmp_path)
    (tmp_path / "paper_schedule" / "tables").mkdir(parents=True)
    pd.DataFrame({"claim": ["x"], "dataset": ["d"], "verdict": [C.NEGLIGIBLE]}).to_csv(
        tmp_path / "paper_schedule" / "tables" / "06_claims.csv", index=False)
    tables = S.paper_tables(tmp_path)
    assert list(tables) == ["demo", "paper_schedule"] and tables["paper_schedule"]["verdict"].tolist() == [C.NEGLIGIBLE]


def test_the_survival_summary_names_every_check_under_its_fate_with_the_protocols():
    table = pd.DataFrame({
        "claim": ["a", "a", "b", "c", "c"], "dataset": ["d", "d", "d", "e", "e"],
        "protocol": ["demo", "paper_schedule", "demo", "demo", "paper_schedule"],
        "paper_verdict": [C.SUPPORTED, C.SIGNIFICANT, C.SUPPORTED, C.INCONCLUSIVE, C.SUPPORTED],
        "fair_verdict": [C.SUPPORTED, C.SUPPORTED, C.NEGLIGIBLE, C.INCONCLUSIVE, C.INCONCLUSIVE],
        "changed": [False, True, True, False, True],
        "survival": [S.SURVIVES, S.SURVIVES, S.DOES_NOT_SURVIVE, S.UNDECIDED, S.UNDECIDED]})
    text = S.survival_summary(table)
    assert text.splitlines() == [
        "- **survives** (2 of 5 checks): `a` on d (demo, paper_schedule)",
        "- **does not survive** (1 of 5 checks): `b` on d (demo)",
        "- **undecided** (2 of 5 checks): `c` on e (demo, paper_schedule)"]
    assert "none" in S.survival_summary(table[table["survival"] != S.SURVIVES]).splitlines()[0]
