"""benchmarks/mutation_sample.py's draw and mutation_report.py's interval (PROTOCOL.md, Mutation testing)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from _ci import DEV_EXTRA, require

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
require("mutmut", f"mutmut is in the dev extra: {DEV_EXTRA}")
from mutation_report import wilson  # noqa: E402
from mutation_sample import TOP_LEVEL, draw, package  # noqa: E402


def test_wilson_interval_matches_the_textbook_values():
    assert wilson(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)  # z^2 / (n + z^2)
    assert wilson(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert wilson(10, 10) == pytest.approx((0.7225, 1.0), abs=1e-4)


def test_the_draw_is_seeded_and_in_proportion_to_each_packages_mutants():
    names = {"vgcore/losses/a.py": [f"l{i}" for i in range(60)], "vgcore/train/b.py": [f"t{i}" for i in range(30)],
             "vgcore/io.py": [f"i{i}" for i in range(10)]}
    sample = draw(names, 20, seed=3)
    assert {p: len(v) for p, v in sample.items()} == {"losses": 12, "train": 6, TOP_LEVEL: 2}
    assert sample == draw(names, 20, seed=3) and sample != draw(names, 20, seed=4)
    assert set(sample["losses"]) <= set(names["vgcore/losses/a.py"])
    assert package("vgcore/report/claims.py") == "report" and package("vgcore/snapshot.py") == TOP_LEVEL
