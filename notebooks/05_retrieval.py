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
# # 05 · Retrieval: the main table, and the efficiency-granularity trade-off
#
# [![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/OWNER/vgcore/blob/main/notebooks/05_retrieval.ipynb)
# [![Launch on Binder](https://mybinder.org/badge_logo.svg)](https://mybinder.org/v2/gh/OWNER/vgcore/main?urlpath=lab/tree/notebooks/05_retrieval.ipynb)
#
# Retrieval on the test split with the final embeddings: every test sample queries all others
# (cosine similarity, exact kNN). **Recall@K**: share of queries with at least one same-class sample
# among the K nearest; **MAP@R**: mean average precision over the R nearest, R = the number of
# same-class samples (Musgrave et al. 2020). The paper's main table is Recall@1/2/4/8 and MAP@R per
# loss x dataset; here as mean ± std over seeds.

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
from vgcore.report.analysis import RETRIEVAL_TABLE, mean_std_table
from vgcore.report.outputs import Outputs, collect_profile

summary = collect_profile(results_root, profile, "summary")  # fails naming valid profiles, or if nothing ran
epochs = collect_profile(results_root, profile, "epochs")
out = Outputs("05_retrieval", Path(figures_root) / profile, profile, runs=summary)  # captions name these runs
plots.use_style()
print(f"{len(summary)} runs: datasets {sorted(summary.dataset.unique())}")

# %% [markdown]
# ## The main table

# %%
table = mean_std_table(summary, RETRIEVAL_TABLE)
out.table(table, "05_retrieval")
table

# %%
# NBVAL_CHECK_OUTPUT
print(list(table.columns))

# %%
fig = plots.metric_bars(summary, ["recall@1", "map@r"])
out.figure(fig, "05_retrieval_bars")
fig

# %% [markdown]
# ## Recall@1 over training
#
# How fast each loss reaches its final retrieval quality (epoch 0: the untrained head).

# %%
fig = plots.metric_over_epochs(epochs, "recall@1")
out.figure(fig, "05_recall_over_epochs")
fig

# %% [markdown]
# ## The efficiency-granularity trade-off
#
# x: convergence speed (steps until the smoothed training loss has made 90% of its decrease; left =
# faster). y: intra-class variance (granularity kept) and Recall@1. The paper's reading: Contrastive
# and InfoNCE sit left and low (fast compaction), Triplet and SCL further right and higher in
# variance, and they win Recall@1 on fine-grained sets. `06_claims` tests each of these readings.

# %%
fig = plots.tradeoff(summary)
out.figure(fig, "05_tradeoff")
fig

# %%
# NBVAL_CHECK_OUTPUT
print("missing outputs:", out.missing())
