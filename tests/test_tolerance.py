"""vgcore.report.tolerance: what a rebuild on another machine may change, and a rebuild held to it.

The first tests pin the rule on hand-made cells and tables; the last retrains part of the committed
demo on this machine and holds it to the committed snapshot within the same tolerance, so a CPU
that computes the demo differently (or a change that moves a number) fails here, not in a reader's
rebuild.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from vgcore.report.tolerance import (
    RTOL,
    compare_table,
    compare_tables,
    fragile,
    numbers_agree,
    tolerance,
)

ROOT = Path(__file__).resolve().parents[1]


def test_tolerance_is_relative_with_a_floor_of_five_last_digits():
    assert tolerance("0.384") == pytest.approx(0.005)  # 1 % of 0.384 is below 5 units of 0.001
    assert tolerance("0.684") == pytest.approx(0.00684)
    assert tolerance("98.400") == pytest.approx(0.984)  # 1 % of the value
    assert tolerance("-0.0402") == pytest.approx(5e-4)
    assert tolerance("12") == 5.0


@pytest.mark.parametrize("a,b,agree", [
    ("0.684 ± 0.002", "0.681 ± 0.006", True),  # the AVX-512 Xeon's NMI against the committed one
    ("0.684 ± 0.002", "0.676 ± 0.002", False),  # 0.008 > 1 % of 0.684
    ("0.384 ± 0.002", "0.378 ± 0.002", False),  # 0.006 > 5 units of 0.001
    ("98.400 ± 13.164", "99.300 ± 13.100", True),
    ("98.400 ± 13.164", "99.500 ± 13.164", False),  # 1.1 > 1 % of 99.5
    ("-0.0402 [-0.0413, -0.0392]", "-0.0400 [-0.0411, -0.0390]", True),
    ("-0.0402 [-0.0413, -0.0392]", "-0.0402 [-0.0413 -0.0392]", False),  # other text around the numbers
    ("nan", "nan", True),
    ("nan", "0.000", False),
    ("contradicted", "supported", False),
])
def test_numbers_agree_within_their_tolerance(a, b, agree):
    assert numbers_agree(a, b) is agree
    assert numbers_agree(b, a) is agree  # symmetric


def test_an_interval_ending_within_tolerance_of_zero_is_fragile():
    assert fragile(pd.Series({"difference [95% CI]": "0.0100 [-0.0004, 0.0204]"}))
    assert fragile(pd.Series({"variant_ci": "0.0100 [0.0003, 0.0204]"}))
    assert not fragile(pd.Series({"difference [95% CI]": "0.0100 [0.0006, 0.0204]"}))
    assert not fragile(pd.Series({"loss": "triplet"}))


def test_an_interval_ending_within_tolerance_of_the_smallest_effect_is_fragile():
    """A claims verdict also turns at +-delta (vgcore.report.claims.decide): an end that close is fragile."""
    row = {"difference [95% CI]": "0.0300 [0.0102, 0.0500]", "smallest effect": "0.01"}
    assert fragile(pd.Series(row))  # 0.0102 is within 5e-4 of delta = 0.01
    assert fragile(pd.Series({**row, "difference [95% CI]": "-0.0300 [-0.0500, -0.0098]"}))  # of -delta
    assert not fragile(pd.Series({**row, "difference [95% CI]": "0.0300 [0.0120, 0.0500]"}))
    assert fragile(pd.Series({"variant_ci": "0.3000 [0.0521, 0.5000]", "variant_smallest_effect": "0.0525 (5% of ccl)"}))
    assert not fragile(pd.Series({"variant_ci": "0.3000 [0.0621, 0.5000]", "variant_smallest_effect": "0.0525 (5% of ccl)"}))


def _table(path, rows):
    pd.DataFrame(rows, columns=["claim", "verdict", "difference [95% CI]"]).to_csv(path, index=False)
    return path


def test_compare_table_names_each_cell_beyond_tolerance(tmp_path):
    committed = _table(tmp_path / "a.csv", [["x", "supported", "0.0500 [0.0400, 0.0600]"],
                                            ["y", "inconclusive", "0.0100 [-0.0003, 0.0203]"]])
    assert compare_table(committed, committed) == []
    near = _table(tmp_path / "b.csv", [["x", "supported", "0.0502 [0.0401, 0.0603]"],
                                       ["y", "supported", "0.0104 [0.0001, 0.0207]"]])  # y is fragile
    assert compare_table(committed, near) == []
    far = _table(tmp_path / "c.csv", [["x", "contradicted", "0.0500 [0.0400, 0.0700]"],
                                      ["y", "inconclusive", "0.0100 [-0.0003, 0.0203]"]])
    problems = compare_table(committed, far)
    assert len(problems) == 2 and all(p.startswith("a.csv row 1, ") for p in problems)
    assert "verdict" in problems[0] and "'contradicted'" in problems[0]


def test_compare_tables_says_which_table_was_not_rebuilt(tmp_path):
    (tmp_path / "committed").mkdir()
    (tmp_path / "rebuilt").mkdir()
    _table(tmp_path / "committed" / "06_claims.csv", [["x", "supported", "0.0500 [0.0400, 0.0600]"]])
    assert compare_tables(tmp_path / "committed", tmp_path / "rebuilt") == ["06_claims.csv: not rebuilt"]


@pytest.mark.slow
def test_a_rebuild_of_demo_runs_agrees_with_the_committed_snapshot_within_tolerance(tmp_path):
    """Seed 0 of the demo's synthetic set for three losses, trained here as `make demo` trains them
    (one fused group), against the same runs in figures/demo/results.tar.gz: same identity, and every
    final metric, GREEDINESS mean and convergence step within RTOL (and 1e-4 absolute near 0)."""
    from vgcore import results, snapshot, train
    from vgcore.config import get_profile

    snapshot.restore(ROOT / "figures" / "demo" / "results.tar.gz", tmp_path / "committed")
    configs = [get_profile("demo").config("synthetic", loss, 0) for loss in ("contrastive", "triplet", "scl")]
    out = train.sweep(configs, tmp_path / "rebuilt", cache_dir=tmp_path / "cache", progress=False)
    assert not out.failures
    moved = []
    for config, path in zip(configs, out.paths, strict=True):
        mine = results.read_summary(path)
        committed = results.check_run(tmp_path / "committed" / path.relative_to(tmp_path / "rebuilt"))
        assert mine["config_hash"] == committed["config_hash"], "the snapshot is not of the code's own config"
        for part in ("final", "greediness_mean", "convergence"):
            for key, value in committed[part].items():
                a, b = float(value), float(mine[part][key])
                if not (math.isnan(a) and math.isnan(b)) and abs(a - b) > max(RTOL * max(abs(a), abs(b)), 1e-4):
                    moved.append(f"{config.loss} {part}.{key}: committed {a:.6g}, rebuilt {b:.6g}")
    assert not moved, "; ".join(moved)
