"""`make fair` at smoke scale: the equal tuning, then the notebook build of a tuned profile.

The `smoke_fair` profile is the `fair` protocol (tuning, P x K batches of distinct rows, early
stopping, probe readings, data drawn per seed) on the smoke set; its tuned settings go to a
directory of the test's own (`VGCORE_TUNED`), never to the committed `vgcore/tuned/`.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest

from vgcore import tuning
from vgcore.config import get_profile
from vgcore.report import outputs
from vgcore.report.survival import PAPER_PROTOCOLS, SURVIVAL_COLUMNS, TUNED_COLUMNS, fair_claims

from _smoke_build import ROOT, env

PROFILE = "smoke_fair"


@pytest.fixture(scope="module")
def fair_build(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fair")
    environ = env(VGCORE_CACHE=str(tmp / "cache"), VGCORE_TUNED=str(tmp / "tuned"))
    for command in (["tune", "--profile", PROFILE, "--results", str(tmp / "results"), "--quiet"],
                    ["figures", "--profile", PROFILE, "-j", "2", "--results", str(tmp / "results"),
                     "--figures", str(tmp / "figures")]):
        proc = subprocess.run([sys.executable, "-m", "vgcore", *command], cwd=ROOT, env=environ, capture_output=True,
                              text=True, timeout=1200)
        assert proc.returncode == 0, f"{command[0]} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return tmp


def test_the_tuning_chooses_a_setting_per_loss_from_its_own_trials_and_the_build_uses_it(fair_build):
    profile = get_profile(PROFILE)
    stored = json.loads((fair_build / "tuned" / f"{PROFILE}.json").read_text())
    assert set(stored["synthetic"]) == set(profile.losses)
    for loss, entry in stored["synthetic"].items():
        trial = tuning.trials(loss)[entry["trial"]]
        assert (entry["lr"], entry["loss_params"]) == (trial["lr"], trial["loss_params"])
        for seed in profile.seeds:  # the reporting runs were trained with the chosen setting
            summary = json.loads((fair_build / "results" / PROFILE / "synthetic" / loss / f"seed{seed}" /
                                  "summary.json").read_text())
            assert summary["config"]["lr"] == entry["lr"] and summary["config"]["loss_params"] == entry["loss_params"]
            assert summary["config"]["sampler"] == "pk_distinct" and summary["config"]["data_seed"] == seed
            assert "stopping" in summary and summary["probes"]
    assert not (ROOT / "vgcore" / "tuned" / f"{PROFILE}.json").exists()


def test_the_fair_build_writes_its_own_tables_and_figures(fair_build):
    fig = fair_build / "figures" / PROFILE
    expected = set(outputs.analysis_files(fig, profile=PROFILE))
    written = {p for p in fig.rglob("*") if p.is_file()}
    assert expected <= written, sorted(map(str, expected - written))
    assert not (fig / "tables" / "06_schedules.csv").exists()
    tuned = pd.read_csv(fig / "tables" / "06_tuned.csv")
    assert list(tuned.columns) == list(TUNED_COLUMNS) and len(tuned) == len(get_profile(PROFILE).losses)
    stops = pd.read_csv(fig / "tables" / "06_convergence.csv")
    assert len(stops) == len(get_profile(PROFILE).losses) * len(get_profile(PROFILE).seeds)
    assert set(stops["stopped_by"]) <= {"patience", "budget"}
    survival = pd.read_csv(fig / "tables" / "06_survival.csv")
    assert list(survival.columns) == list(SURVIVAL_COLUMNS)
    assert set(survival["protocol"]) <= set(PAPER_PROTOCOLS) and len(survival)
    judged = pd.read_csv(fig / "tables" / "06_claims.csv")
    assert judged["verdict"].ne("not checked").any(), "the smoke set must let heads learn, or no claim is judged"
    probes = pd.read_csv(fig / "tables" / "04_probes.csv")
    assert set(probes["batch"]) == {"random", "pk"} and set(probes["fraction"]) == {0.0, 0.25, 0.5, 0.75, 1.0}


def test_the_sensitivity_build_moves_one_constant_and_judges_every_fair_verdict_again(fair_build):
    environ = env(VGCORE_CACHE=str(fair_build / "cache"), VGCORE_TUNED=str(fair_build / "tuned"))
    proc = subprocess.run([sys.executable, "-m", "vgcore", "sensitivity", "--profile", PROFILE, "--losses", "triplet",
                           "--results", str(fair_build / "results"), "--figures", str(fair_build / "figures"),
                           "--quiet"], cwd=ROOT, env=environ, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    variants = fair_build / "results" / PROFILE / "variants"
    for point, value in enumerate(tuning.sensitivity_values("triplet")):
        for seed in get_profile(PROFILE).seeds:  # the sensitivity seeds 0-2
            run = variants / tuning.sensitivity_tag("triplet", point) / "synthetic" / "triplet" / f"seed{seed}"
            assert json.loads((run / "summary.json").read_text())["config"]["loss_params"] == {"margin": value}
    out = fair_build / "figures" / "sensitivity" / PROFILE
    table = pd.read_csv(out / "tables" / "sensitivity.csv")
    assert set(table["loss"]) == {"triplet"} and set(table["point"]) == set(range(5))
    named = {c.key for c in fair_claims() if "triplet" in c.group + c.rest}
    assert set(table["claim"]) <= named and len(table)
    share = pd.read_csv(out / "tables" / "stability.csv")
    assert (share["values"] == 5).all() and share["share_holds"].between(0, 1).all()
    assert (out / "stability.png").stat().st_size > 1000
    assert "python -m vgcore sensitivity" in (out / "tables" / "stability.md").read_text()
