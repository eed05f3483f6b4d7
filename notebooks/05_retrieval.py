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
profile = "demo"  # smoke | demo | paper
results_root = "results"  # where the training runs are
figures_root = "results/figures"  # figures go to <figures_root>/<profile>/, tables to .../tables/ (the build: figures/)
variant = None  # None: the profile's own runs; a tag: that variant's (a build with overrides)

# %%
from pathlib import Path

from vgcore.registry import VARIANTS
from vgcore.report import gallery, plots, space_plots
from vgcore.report.analysis import RETRIEVAL_TABLE, mean_std_table, per_class_recall_frame
from vgcore.report.outputs import (
    Outputs,
    class_names,
    collect_profile,
    describe_runs,
    lowest_seed_runs,
    run_embeddings,
)

summary = collect_profile(results_root, profile, "summary", variant=variant)  # fails naming valid profiles, or if nothing ran
epochs = collect_profile(results_root, profile, "epochs", variant=variant)
steps = collect_profile(results_root, profile, "steps", variant=variant)
out = Outputs("05_retrieval", Path(figures_root) / profile, profile, runs=summary)  # captions name these runs
plots.use_style()
print(describe_runs(summary))

# %% [markdown]
# ## The main table

# %%
table = mean_std_table(summary, RETRIEVAL_TABLE)
out.table(table, "05_retrieval")
table

# %% tags=["nbval-check-output"]
print(f"{len(table)} rows (dataset x loss); columns: {', '.join(table.columns)}")

# %% [markdown]
# Recall@1 and MAP@R per loss (dot: seed mean, bar: ± 1 std over seeds). The axes span the data: the
# differences between losses are a few points of Recall@1, which bars from zero would hide.

# %%
fig = plots.metric_dots(summary, ["recall@1", "map@r"], width="column")
out.figure(fig, "05_retrieval_bars")
fig

# %% [markdown]
# ## Which classes each loss retrieves
#
# Recall@1 of each class's test queries, per loss (mean over seeds). The averages above hide that the
# losses differ most on the hard classes (on FashionMNIST: shirt against T-shirt, pullover and coat).

# %%
per_class = per_class_recall_frame(run_embeddings(summary, results_root, profile, variant))
mean = per_class.groupby(["dataset", "loss", "class"], as_index=False)["recall"].mean()
fig = space_plots.per_class_recall_map(mean, {d: class_names(profile, d) for d in mean.dataset.unique()},
                                       f"mean over {summary.seed.nunique()} seeds", width="page")
out.figure(fig, "05_per_class_recall")
fig

# %% [markdown]
# ## What each loss retrieves
#
# The same test queries for every loss of the paper (its named variants are left out: their base loss
# stands for them), lowest seed: one random query per class (drawn with a fixed seed, so the picture is
# not only the striking cases), then the queries on which the losses' precision@4 differs most. Right of
# each query (black frame), each loss's four nearest test samples, nearest first; a wrong class is
# framed in vermillion. The first dataset whose samples are pictures gets its pictures.

# %%
pictured, stand_in = gallery.gallery_datasets(sorted(summary.dataset.unique()))
paper_losses = [x for x in summary.loss.unique() if x not in VARIANTS]
runs = lowest_seed_runs(summary, results_root, profile, variant, losses=paper_losses)
fig = gallery.dataset_gallery(runs[pictured], "random", width="page")
out.figure(fig, "05_gallery")
fig

# %% [markdown]
# The queries on which the losses disagree most (the spread of their precision@4 across losses): where
# one loss retrieves the query's class and another does not.

# %%
fig = gallery.dataset_gallery(runs[pictured], "disagreement", width="page")
out.figure(fig, "05_gallery_disagreement")
fig

# %% [markdown]
# A dataset without pictures (the synthetic sets) gets tiles in their place: each marked with its class
# (and superclass, `s<k>`), coloured by superclass; a wrong class in the query's superclass (a near miss)
# is framed dashed orange, one in another superclass solid vermillion.

# %%
fig = gallery.dataset_gallery(runs[stand_in], "random", width="page") if stand_in else \
    gallery.no_stand_in(sorted(summary.dataset.unique()), width="page")
out.figure(fig, "05_gallery_stand_in")
fig

# %% [markdown]
# ## Recall@1 over training
#
# How fast each loss reaches its final retrieval quality (epoch 0: the untrained head).

# %%
fig = plots.metric_over_epochs(epochs, "recall@1", width="page")
out.figure(fig, "05_recall_over_epochs")
fig

# %% [markdown]
# ## How fast each loss learns, on one yardstick
#
# Normalised validation progress (R_t - R_0) / (R_final - R_0) of Recall@1 on held-out rows, at
# log-spaced training steps: 0 is the untrained head, 1 the final one, for every loss alike (each
# loss's own training-loss curve would measure its constants instead). `val_convergence_step` is
# where a run crosses 0.9.

# %%
fig = plots.validation_progress(epochs, width="page")
out.figure(fig, "05_validation_progress")
fig

# %% [markdown]
# ## The training curves side by side
#
# Every loss's training loss on one scale, (L_t - L_min) / (L_0 - L_min): each run's first value is 1 and
# its lowest 0, so losses of different scale and offset compare (InfoNCE's floor is log N, a margin
# loss's is 0). Below, the validation Recall@1 of the same runs: a loss that falls fast is not always
# one that retrieves well early.

# %%
fig = plots.training_curves(steps, epochs, width="page")
out.figure(fig, "05_training_curves")
fig

# %% [markdown]
# ## The efficiency-granularity trade-off
#
# x: convergence speed as a share of the run's training steps (`val_convergence_step`, steps until 90% of
# the validation Recall@1 gain, over the run's last step; left = faster, 1 = the end of training, alike on
# every dataset). An open marker is a loss with a seed that reached the mark only at its last step: still
# rising when training stopped, so its x is the run's length, not a speed. Steps are read on the
# log-spaced evaluation grid, so a mean between two grid points mixes seeds that crossed at different
# points (the two "steps" of a loss whose seeds split). y: intra-class variance (granularity kept) and
# Recall@1. One column per dataset: each has its own y scales. The paper's reading: Contrastive and
# InfoNCE sit left and low (fast compaction), Triplet and SCL further right and higher in variance,
# and they win Recall@1 on fine-grained sets. `06_claims` tests each of these readings.

# %%
fig = plots.tradeoff(summary, epochs, width="page")
out.figure(fig, "05_tradeoff")
fig

# %% tags=["nbval-check-output"]
print(out.finish())
