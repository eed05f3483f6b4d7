# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 06 · Claims: which of the paper's claims do our runs support?
#
# [![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/OWNER/vgcore/blob/main/notebooks/06_claims.ipynb)
# [![Launch on Binder](https://mybinder.org/badge_logo.svg)](https://mybinder.org/v2/gh/OWNER/vgcore/main?urlpath=lab/tree/notebooks/06_claims.ipynb)
#
# Each claim (`vgcore.report.claims.CLAIMS`) names a group of losses, the rest, a metric and a
# direction, and is a claim about the **whole group**: every member against every member of the
# rest. For each (group member, rest member) pair the per-seed differences are paired by seed (all
# losses of a seed share data order and initialisation) and get a 95% Student-t interval [lo, hi]
# (positive favours the claim), read against the metric's **smallest effect of interest** δ
# (`SMALLEST_EFFECT`: one point of Recall@1, 5% of a variance, one grid interval of a step count...):
#
# | the pair's interval | verdict |
# | --- | --- |
# | inside (−δ, +δ) | negligible (an equivalence test) |
# | lo > δ | supported |
# | lo > 0 | significant, size uncertain |
# | hi < −δ | contradicted |
# | hi < 0 | contradicted, size uncertain |
# | otherwise | inconclusive |
#
# The group takes its weakest pair's verdict (contradicted < contradicted, size uncertain <
# negligible < inconclusive < significant, size uncertain < supported), and the table shows that
# pair, its interval and its δ in the metric's units. A gap inside the seed spread, one seed, or a
# metric constant across losses is inconclusive. Two claims whose metrics coincide on a dataset are
# one test ("same test as"). The tables are descriptive: 95% intervals per claim, no correction
# across claims, datasets or protocols.
#
# A claim is checked on a dataset only where every loss it names learned: it must beat the untrained
# head's test Recall@1 by more than the seed spread (the gate table). PROTOCOL.md "Claims" gives each
# claim's metric, why it was chosen, each δ with its reason, and the companion reported beside.
#
# A tuned profile (`fair`: PROTOCOL.md, "Fair comparison") judges the same claims with the same
# rules on runs tuned per loss and trained to convergence, with the grouped N-pair (`npair_groups`)
# in the claims' N-pair place; a claim naming a loss with a run that reached its budget is "not
# judged: unconverged" there. Its last section sets each verdict beside the paper-protocol builds'.

# %% cellView="form" jupyter={"source_hidden": true} tags=["setup"]
# @title Setup (on Colab: install vgcore and the demo runs; elsewhere: work from the repository root)
# On Colab this clones the repository, installs vgcore with pip and restores the committed demo runs
# (figures/demo/results.tar.gz) under results/; anywhere else it installs nothing. Either way the
# kernel then works from the repository root, where results/, figures/, cache/ and data/ live.
import os
import subprocess
import sys
from pathlib import Path

VGCORE_GIT = "https://github.com/OWNER/vgcore"  # pyproject.toml [project.urls]; `make repo URL=...` changes it
if "google.colab" in sys.modules:
    repo = Path("/content/vgcore-repo")
    if not repo.is_dir():
        subprocess.run(["git", "clone", "--depth=1", VGCORE_GIT, str(repo)], check=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", f"{repo}[notebooks,offline]"], check=True)
    os.chdir(repo)
    if Path("figures/demo/results.tar.gz").is_file():  # the analysis notebooks start from these runs
        subprocess.run([sys.executable, "-m", "vgcore", "snapshot", "restore", "figures/demo/results.tar.gz"],
                       check=True)
elif Path.cwd().name == "notebooks" and (Path.cwd().parent / "pyproject.toml").is_file():
    os.chdir("..")  # JupyterLab and Binder start the kernel in notebooks/

# %% tags=["parameters"]
profile = "demo"  # smoke | demo | paper_schedule | fair | paper
results_root = "results"  # where the training runs are
figures_root = "results/figures"  # figures go to <figures_root>/<profile>/, tables to .../tables/ (the build: figures/)
variant = None  # None: the profile's own runs; a tag: that variant's (a build with overrides)
compare_root = "figures"  # where the tables of the profiles this one is compared with are (the committed ones)

# %%
from pathlib import Path

import pandas as pd
from IPython.display import display

from vgcore.config import get_profile
from vgcore.report import plots
from vgcore.report.claims import (
    CLAIMS,
    DESCRIPTIVE_NOTE,
    ORDER,
    claims_tables,
    format_claims,
    format_members,
)
from vgcore.report.outputs import Outputs, collect_profile, describe_runs
from vgcore.report.survival import convergence_table, fair_claims_tables, paper_tables, tuned_table

summary = collect_profile(results_root, profile, "summary", variant=variant)  # fails naming valid profiles, or if nothing ran
epochs = collect_profile(results_root, profile, "epochs", variant=variant)
out = Outputs("06_claims", Path(figures_root) / profile, profile, runs=summary)
plots.use_style()
print(describe_runs(summary))

# %% [markdown]
# ## Did the heads learn?
#
# Final test Recall@1 minus the untrained head's (epoch 0), paired by seed, with its 95% interval.
# A loss that fails this gate on a dataset keeps out of that dataset the claims that name it.

# %%
prof = get_profile(profile)
if prof.tuned:  # the fair comparison: its verdicts beside the paper-protocol builds' (last section)
    tables = fair_claims_tables(summary, epochs, paper_tables(compare_root))
else:
    compare_csv = Path(compare_root) / str(prof.compare_with) / "tables" / "06_claims.csv"
    compare = pd.read_csv(compare_csv) if prof.compare_with and compare_csv.is_file() else None
    tables = claims_tables(summary, epochs, compare, names=(profile, prof.compare_with or "no comparison profile"))
out.table(tables["gate"].round(4), "06_gate")
tables["gate"].style.format(precision=3).hide(axis="index")

# %% [markdown]
# ## Verdicts

# %%
claims = tables["claims"]
table = format_claims(claims)
out.table(table, "06_claims")
print(DESCRIPTIVE_NOTE)
table.style.hide(axis="index")  # every claim in full

# %% tags=["nbval-check-output"]
print(f"{len(claims)} checks of {claims['claim'].nunique()} of the {len(CLAIMS)} claims on "
      f"{claims['dataset'].nunique()} dataset(s)")

# %% [markdown]
# ## Verdicts at a glance
#
# Each claim's closest pair: the 95% interval of its paired difference over seeds, in units of the
# rest member's mean (right of zero favours the claim), with ±δ as grey ticks. Green supported
# (light: significant, size uncertain), purple negligible, grey inconclusive, orange contradicted
# (light: size uncertain).

# %%
fig = plots.claims_intervals(claims, width="page")
out.figure(fig, "06_claims")
fig

# %%
for verdict in reversed(ORDER):
    print(f"{verdict}: {int((claims['verdict'] == verdict).sum())} of {len(claims)}")

# %% [markdown]
# ## Which member breaks a group claim?
#
# Each member of a claim's group against the whole rest (its pairs combined by the same
# weakest-pair rule). The group's verdict is its weakest member's; "breaks claim" marks the members
# whose verdict is weaker than the best member's.

# %%
members = format_members(tables["members"])
out.table(members, "06_claims_members")
members.style.hide(axis="index")

# %% [markdown]
# ## Variants and schedules
#
# Which verdicts change when N-pair is run in its all-pairs form (`npair_all`) or Triplet with
# semi-hard negatives (`triplet_semihard`) (in the fair build: Sohn's one-group N-pair in the grouped
# one's place), and, for a profile with a comparison profile, which verdicts differ between the two
# (e.g. the demo's short schedule against the paper's).

# %%
out.table(tables["variants"], "06_variants")
display(tables["variants"].style.hide(axis="index"))
if "schedules" in tables:
    out.table(tables["schedules"], "06_schedules")
    display(tables["schedules"].style.hide(axis="index"))

# %% [markdown]
# ## The fair comparison (a tuned profile only)
#
# Each claim's verdict under the paper's protocol (the demo and paper-schedule builds) beside its
# fair verdict: it **survives** when both are positive (supported, or significant with size
# uncertain), it **does not survive** when the fair verdict is negligible or contradicted, and it is
# **undecided** otherwise. Then the setting equal tuning chose for each loss, and how every run
# stopped (a run stopped by the budget is unconverged).

# %%
if prof.tuned:
    out.table(tables["survival"], "06_survival")
    fig = plots.survival_grid(tables["survival"], width="page")
    out.figure(fig, "06_survival")
    display(fig)
    out.table(tuned_table(prof, summary["dataset"].unique(), summary["loss"].unique()), "06_tuned")
    stops = convergence_table(summary)
    out.table(stops, "06_convergence")
    print(tables["survival"]["survival"].value_counts().to_string())
    print(f"{int((~stops['converged'].astype(bool)).sum())} of {len(stops)} runs unconverged (stopped by the budget)")

# %% tags=["nbval-check-output"]
print(out.finish())
