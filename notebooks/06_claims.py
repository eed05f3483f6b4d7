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
# # 06 · Claims: does each claim of the paper hold on our runs?
#
# [![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/OWNER/vgcore/blob/main/notebooks/06_claims.ipynb)
# [![Launch on Binder](https://mybinder.org/badge_logo.svg)](https://mybinder.org/v2/gh/OWNER/vgcore/main?urlpath=lab/tree/notebooks/06_claims.ipynb)
#
# Each claim is a comparison of seed means of one summary metric (`vgcore.report.analysis.CLAIMS`): the best
# loss of the claim's group against the best of the rest. It **holds** on a dataset when the group's
# best beats the rest's best in the claimed direction. Means are reported with their seed standard
# deviations, so a reader can see whether the gap exceeds the spread over seeds; with one seed
# (smoke) there is no spread. Fine-grained claims are checked only on fine-grained sets
# (`vgcore.report.analysis.FINE_GRAINED`).

# %%
# Setup. On Colab: fetch vgcore, install it (with its small offline extras) and restore the committed
# demo results; anywhere else this cell installs nothing. Then work from the repository root, as
# `make demo` does: results/, figures/, cache/ and data/ are relative to it.
import os
import subprocess
import sys
from pathlib import Path

VGCORE_GIT = "https://github.com/OWNER/vgcore"
if "google.colab" in sys.modules:
    repo = Path("/content/vgcore-repo")
    if not repo.is_dir():
        subprocess.run(["git", "clone", "--depth=1", VGCORE_GIT, str(repo)], check=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", f"{repo}[offline]"], check=True)
    os.chdir(repo)
    if Path("figures/demo/results.tar.gz").is_file():  # the analysis notebooks start from these runs
        subprocess.run([sys.executable, "-m", "vgcore", "snapshot", "restore", "figures/demo/results.tar.gz"], check=True)
elif Path.cwd().name == "notebooks" and (Path.cwd().parent / "pyproject.toml").is_file():
    os.chdir("..")  # JupyterLab and Binder start the kernel in notebooks/

# %% tags=["parameters"]
profile = "demo"  # smoke | demo | paper
results_root = "results"  # where the training runs are
figures_root = "figures"  # figures go to <figures_root>/<profile>/, tables to <figures_root>/<profile>/tables/

# %%
from pathlib import Path

from vgcore.report import plots
from vgcore.report.analysis import CLAIMS, check_claims, format_claims
from vgcore.report.outputs import Outputs, collect_profile

summary = collect_profile(results_root, profile, "summary")  # fails naming valid profiles, or if nothing ran
out = Outputs("06_claims", Path(figures_root) / profile, profile)
plots.use_style()
print(f"{len(summary)} runs: datasets {sorted(summary.dataset.unique())}, seeds {sorted(summary.seed.unique())}")

# %%
claims = check_claims(summary)
table = format_claims(claims)
out.table(table, "06_claims")
table

# %%
# NBVAL_CHECK_OUTPUT
print(f"{len(claims)} checks of {claims['claim'].nunique()} of the {len(CLAIMS)} claims on {claims['dataset'].nunique()} dataset(s)")

# %% [markdown]
# ## Verdicts at a glance
#
# Green: holds; red: does not. Each cell shows the claim group's best seed mean against the best of
# the rest.

# %%
fig = plots.claims_grid(claims)
out.figure(fig, "06_claims")
fig

# %%
verdict = claims.groupby("claim")["holds"].agg(["sum", "count"])
for key, row in verdict.iterrows():
    print(f"{key}: holds on {row['sum']} of {row['count']} dataset(s)")

# %%
# NBVAL_CHECK_OUTPUT
print("missing outputs:", out.missing())
