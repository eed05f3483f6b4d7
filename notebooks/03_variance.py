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
# # 03 · VARIANCE: how each loss shapes the embedding space
#
# [![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/OWNER/vgcore/blob/main/notebooks/03_variance.ipynb)
# [![Launch on Binder](https://mybinder.org/badge_logo.svg)](https://mybinder.org/v2/gh/OWNER/vgcore/main?urlpath=lab/tree/notebooks/03_variance.ipynb)
#
# Collects every complete run of the profile (`vgcore.results.collect`) and compares the final
# test embeddings of the seven losses:
#
# - **intra-class variance**: mean squared distance of a sample to its class centroid (how much
#   within-class diversity a loss keeps);
# - **inter-class variance**: spread of the class centroids; **centroid distances** (mean, and their
#   coefficient of variation CV: how *evenly* the classes are spaced);
# - **margin**: per sample, distance to the nearest other centroid minus distance to its own.
#
# Every number is a mean over seeds with its standard deviation; definitions in PROTOCOL.md.

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

from vgcore.metrics import pair_similarities
from vgcore.report import plots, space_plots
from vgcore.report.analysis import VARIANCE_TABLE, mean_std_table
from vgcore.report.outputs import (
    Outputs,
    class_names,
    collect_profile,
    describe_runs,
    lowest_seed_runs,
    picture_datasets,
)

summary = collect_profile(results_root, profile, "summary", variant=variant)  # fails naming valid profiles, or if nothing ran
epochs = collect_profile(results_root, profile, "epochs", variant=variant)
out = Outputs("03_variance", Path(figures_root) / profile, profile, runs=summary)  # captions name these runs
plots.use_style()
print(describe_runs(summary))

# %% [markdown]
# ## The VARIANCE table
#
# Final test-split embeddings, mean ± std over seeds. Reading it: a loss with **higher intra-class
# variance** keeps more within-class diversity (the paper: Triplet, SCL); **lower** means it
# compacts classes (Contrastive, InfoNCE). A high **centroid-distance CV** means uneven spacing
# (the paper: N-pair).

# %%
table = mean_std_table(summary, VARIANCE_TABLE)
out.table(table, "03_variance")
table

# %% tags=["nbval-check-output"]
print(f"{len(table)} rows (dataset x loss); columns: {', '.join(table.columns)}")

# %% [markdown]
# ## Variance and spacing per loss
#
# Dot: seed mean, bar: ± 1 std over seeds, faint dots: single seeds. The axes span the data, so
# small differences between losses show; a metric that is the same for every loss is noted, not drawn.

# %%
fig = plots.metric_dots(summary, ["intra_var", "inter_var", "centroid_dist_cv"], width="page")
out.figure(fig, "03_variance_bars")
fig

# %% [markdown]
# ## Intra-class variance over training
#
# Epoch 0 is the untrained head (a random projection of the frozen features). Losses that compact
# quickly drop early; losses that keep diversity stay higher.

# %%
fig = plots.metric_over_epochs(epochs, "intra_var", width="page")
out.figure(fig, "03_intra_var_over_epochs")
fig

# %% [markdown]
# ## Separation against evenness
#
# Mean centroid distance (x: how far apart classes are on average) against the CV of the
# centroid distances (y: how unevenly). Large x with large y is the paper's N-pair pattern: a large
# mean separation reached by pushing some classes far apart and leaving others close.

# %%
fig = plots.scatter_means(summary, "centroid_dist_mean", "centroid_dist_cv", width="column")
out.figure(fig, "03_separation_vs_spacing")
fig

# %% [markdown]
# ## The embeddings themselves
#
# 2-D PCA of the final test embeddings of the lowest seed, one panel per loss (each its own PCA; the
# axes say how much of the variance each component explains), for the datasets whose samples are
# pictures (a profile of generated sets only: its first). Colour and marker = class (the colour-blind palette, and a marker so that two colours a
# reader confuses still differ); at most ten classes. PCA keeps distances comparable: tight blobs are
# low intra-class variance. The synthetic sets are left out: their fine classes overlap in every 2-D
# projection (Recall@1 about 0.5), so a scatter of them shows noise; the pair similarities below
# show their spread instead.

# %%
runs = lowest_seed_runs(summary, results_root, profile, variant)
emb = {d: {loss: (*run["embeddings"], run["coarse"]) for loss, run in runs[d].items()} for d in picture_datasets(runs)}
fig = plots.embedding_projections(emb, {d: class_names(profile, d) for d in emb}, width="page")
out.figure(fig, "03_embeddings_pca")
fig

# %% [markdown]
# ## Positive and negative pairs
#
# The direct picture of VARIANCE: for each loss, the cosine similarities of pairs of test samples of the
# same class (above its line) and of different classes (below), among 1000 test samples of the lowest
# seed. How far down the positives reach is the intra-class spread a loss keeps; the gap between the two
# is its margin; where they overlap, a query can retrieve another class first.

# %%
sims = {d: {loss: pair_similarities(*run["embeddings"], max_rows=1000) for loss, run in by_loss.items()}
        for d, by_loss in runs.items()}
fig = space_plots.similarity_distributions(sims, f"lowest seed ({summary.seed.min()}); all pairs among 1000 "
                                                 "test samples drawn with seed 0", width="page")
out.figure(fig, "03_similarity_distributions")
fig

# %% tags=["nbval-check-output"]
print(out.finish())
